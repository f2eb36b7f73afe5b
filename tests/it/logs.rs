//! What the daemon's log says to the person reading the journal: a service away said
//! once, its return once; a second daemon on the same state directory named.

use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Broker, Lines, Proc, TempDir};

const WAIT: Duration = Duration::from_secs(30);

/// `simgate run` with its JSON log on a pipe.
fn agent(broker: &str, state: &TempDir, config: &str) -> (Proc, Lines) {
    let cfg = state.path().join("simgate.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut p = Proc::spawn(
        "simgate run",
        Command::new(support::simgate_bin())
            .arg("--config")
            .arg(&cfg)
            .args(support::run_args(broker, "gw-logs"))
            .arg(state.path())
            .args(["--log-format", "json"])
            .env("RUST_LOG", "simgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let err = p.child.stderr.take().unwrap();
    (p, Lines::new(err))
}

fn level(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["level"].as_str().map(String::from)
}

#[test]
fn a_broker_that_is_down_is_one_warning_its_retries_debug_its_return_one_info() {
    let port = support::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let state = TempDir::new("state");
    let (mut run, mut log) = agent(&url, &state, "[broker]\nreconnect_max_secs = 1\n");
    // Five retries seen, whatever their pace.
    for n in 0..5 {
        log.expect(&format!("retry {n}"), WAIT, |l| {
            l.contains("the broker still away")
        });
    }
    let warned: Vec<&String> = log
        .seen
        .iter()
        .filter(|l| level(l).as_deref() == Some("WARN") && l.contains("broker"))
        .collect();
    assert_eq!(warned.len(), 1, "one warning for the outage: {warned:#?}");
    let _broker = Broker::start_on(port, "");
    log.expect("the broker's return", WAIT, |l| {
        level(l).as_deref() == Some("INFO") && l.contains("the broker is back")
    });
    run.interrupt();
}

#[test]
fn a_second_daemon_on_the_same_state_directory_names_the_first_one() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let (mut first, mut log) = agent(&broker.url(), &state, "");
    log.expect("the first daemon running", WAIT, |l| {
        l.contains("simgate running")
    });
    let out = Command::new(support::simgate_bin())
        .args(support::run_args(&broker.url(), "gw-logs-2"))
        .arg(state.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    let want = format!(
        "another simgate (pid {}) is using {}",
        first.pid(),
        state.path().display()
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert!(!err.contains("could not acquire lock"), "{err}");
    first.interrupt();
}
