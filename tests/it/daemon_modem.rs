//! `simgate run --modem PORT`: a SIM in an (emulated) modem on a pty becomes a retained
//! state message; a SIM swap in the field moves "present" from the old ICCID to the new.

use crate::support;

use std::process::Stdio;
use support::{Broker, Modem, Proc, TempDir};

#[test]
fn run_reports_a_modem_sim_and_follows_a_swap() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-modem/sim/+/state");

    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent(&broker.url(), "gw-modem", state.path(), &port),
    );

    let first = "simgate/v1/gw-modem/sim/8901260886258128535/state";
    let m = sub.expect("the modem SIM's state", |m| m.topic == first);
    assert_eq!(m.payload["present"], true);
    assert_eq!(m.payload["location"]["kind"], "modem");
    assert_eq!(m.payload["location"]["port"], port.as_str());
    assert!(
        m.payload["imei"].is_string(),
        "the modem's IMEI is part of the SIM's row: {}",
        m.payload
    );
    assert!(m.payload["imsi"].is_string(), "{}", m.payload);
    assert!(
        ["yes", "no"].contains(&m.payload["in_session"].as_str().unwrap()),
        "{}",
        m.payload
    );
    assert_eq!(m.payload["form_factor"], "physical");

    // The technician swaps the SIM; the modem announces it by URC.
    emu.control("swap");
    let second = "simgate/v1/gw-modem/sim/89314404000000000019/state";
    let (mut old_gone, mut new_here) = (false, false);
    while !(old_gone && new_here) {
        let m = sub.expect("the swap reported", |m| {
            m.topic == first || m.topic == second
        });
        if m.topic == second {
            assert_eq!(m.payload["location"]["port"], port.as_str());
            new_here |= m.payload["present"] == true;
        } else {
            if m.payload["present"] == false {
                assert_eq!(
                    m.payload["in_session"], "no",
                    "a SIM out of its modem has no session"
                );
                old_gone = true;
            }
        }
    }
}

/// Guards a gateway's boot order: `simgate run --modem PORT` started before the modem's
/// USB port exists attaches when it appears, without a restart.
#[test]
fn run_attaches_a_modem_whose_port_appears_after_start() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    // Like /dev/serial/by-id/...: a stable name, absent until the modem enumerates.
    let port = state.path().join("ttyUSB-late");
    let mut sub = broker.subscribe("simgate/v1/gw-late-modem/sim/+/state");
    let mut run = Proc::spawn(
        "simgate run",
        std::process::Command::new(support::simgate_bin())
            .args(support::run_args(&broker.url(), "gw-late-modem"))
            .arg(state.path())
            .arg("--modem")
            .arg(&port)
            .env("RUST_LOG", "simgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = support::Lines::new(run.child.stderr.take().unwrap());
    log.expect(
        "run to find the port absent",
        std::time::Duration::from_secs(10),
        |l| l.contains("port not there yet"),
    );

    let _emu = Modem::start_with("quectel-ec2x", &["--link", &port.to_string_lossy()]);
    let m = sub.expect("the modem SIM's state", |m| {
        m.topic == "simgate/v1/gw-late-modem/sim/8901260886258128535/state"
    });
    assert_eq!(m.payload["present"], true);
    assert_eq!(m.payload["location"]["port"], &*port.to_string_lossy());
    assert!(run.child.try_wait().unwrap().is_none(), "run still running");
}

/// Regression: with stderr a closed pipe (its reader gone), the first log line made
/// tracing panic the thread that wrote it — the signal handler's "stopping" among
/// them — and `run` never stopped on SIGTERM/SIGINT.
#[test]
fn run_stops_on_a_signal_even_when_its_stderr_reader_is_gone() {
    use std::io::BufRead;
    let state = TempDir::new("state");
    let mut run = Proc::spawn(
        "simgate run",
        std::process::Command::new(support::simgate_bin())
            .args(["run", "--agent-id", "gw-pipe", "--state-dir"])
            .arg(state.path())
            .args(["--modem", "/nonexistent/ttyUSB9"])
            .env("RUST_LOG", "simgate=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = std::io::BufReader::new(run.child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("simgate running"), "{first}");
    drop(stderr);
    let status = run.interrupt();
    assert!(status.success(), "{status:?}");
}
