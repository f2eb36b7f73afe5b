//! The simgate process under test: its binary, `simgate run`'s arguments for an agent,
//! commands sent to it and their final statuses.

use super::{Broker, Msg, Sub};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The simgate binary under test.
pub fn simgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_simgate")
}

/// The repository root (card images, config examples).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The arguments of `simgate run` publishing to `broker` as `agent`; the state
/// directory follows (`.args(run_args(..)).arg(state)`), then any other flags.
pub fn run_args<'a>(broker: &'a str, agent: &'a str) -> [&'a str; 6] {
    [
        "run",
        "--broker",
        broker,
        "--agent-id",
        agent,
        "--state-dir",
    ]
}

/// `modem_agent` with a configuration: `toml` is written to `state/simgate.toml` and
/// given with `--config`.
pub fn modem_agent_with(
    broker: &str,
    agent: &str,
    state: &Path,
    port: &str,
    toml: &str,
) -> Command {
    let config = state.join("simgate.toml");
    std::fs::write(&config, toml).expect("write the test configuration");
    let mut cmd = modem_agent(broker, agent, state, port);
    cmd.arg("--config").arg(config);
    cmd
}

/// `simgate run` publishing to `broker` as `agent`, its store in `state`, supervising
/// the modem at `port`; stdin and stdout closed, the debug log on the test's stderr.
/// Callers add flags (`--config FILE`, global flags go after `run` too) or pipe stderr.
pub fn modem_agent(broker: &str, agent: &str, state: &Path, port: &str) -> Command {
    let mut cmd = Command::new(simgate_bin());
    cmd.args(run_args(broker, agent))
        .arg(state)
        .args(["--modem", port])
        .env("RUST_LOG", "simgate=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// Unix seconds now (for commands' `expires_at`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// Publish a command payload to `agent`'s `cmd` topic (QoS 1).
pub fn send_command(broker: &Broker, agent: &str, payload: &serde_json::Value) {
    broker.publish(
        &format!("simgate/v1/{agent}/cmd"),
        &["-m", &payload.to_string()],
    );
}

/// The final status of command `id` of `agent` (skipping received/executing).
pub fn final_status(sub: &mut Sub, agent: &str, id: &str) -> Msg {
    let topic = format!("simgate/v1/{agent}/cmd/{id}/status");
    // A command's work (a modem action, a re-read, a swap's steps) may take a while on
    // a loaded 2-core machine: a generous deadline.
    sub.expect_within(
        &format!("the outcome of command {id}"),
        Duration::from_secs(60),
        |m| {
            m.topic == topic
                && (m.payload["status"] == "successful" || m.payload["status"] == "failed")
        },
    )
}
