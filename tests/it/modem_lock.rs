//! A port the daemon drives: a second simgate on it is told who holds it (the kernel's
//! lock table, /proc/locks) and what to do instead, not serialport's "Unable to acquire
//! exclusive lock on serial port".

use crate::service_notify::ManagerSocket;
use crate::support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Lines, Modem, Proc, TempDir};

#[test]
fn modem_info_on_a_port_the_daemon_holds_names_the_daemon_and_what_to_do() {
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let sock = ManagerSocket::bind();
    let daemon = Proc::spawn(
        "simgate run",
        Command::new(support::simgate_bin())
            .args([
                "run",
                "--agent-id",
                "gw-lock",
                "--modem",
                &emu.port,
                "--state-dir",
            ])
            .arg(state.path())
            .env("NOTIFY_SOCKET", &sock.path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    // Ready: the modem was identified, so the daemon has the port open and locked.
    sock.expect("READY=1", |m| m.lines().any(|l| l == "READY=1"));

    let out = Command::new(support::simgate_bin())
        .args(["modem", "info", "--port", &emu.port])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&emu.port), "names the port: {err}");
    assert!(
        err.contains(&format!("in use by pid {} ", daemon.pid())),
        "names the holder: {err}"
    );
    assert!(err.contains("simgate's daemon"), "{err}");
    assert!(
        err.contains("systemctl stop simgate"),
        "says what to do: {err}"
    );
    assert!(!err.contains("Unable to acquire"), "{err}");

    // A second daemon on the same port: told once, with the holder, and it keeps
    // waiting for the port (it may be freed) rather than exiting.
    let state2 = TempDir::new("state");
    let mut second = Proc::spawn(
        "second simgate run",
        Command::new(support::simgate_bin())
            .args([
                "run",
                "--agent-id",
                "gw-lock-2",
                "--modem",
                &emu.port,
                "--state-dir",
            ])
            .arg(state2.path())
            .args(["--log-format", "human"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut lines = Lines::new(second.child.stderr.take().unwrap());
    let warned = lines.expect(
        "the second daemon's warning",
        Duration::from_secs(30),
        |l| l.contains("WARN") && l.contains("cannot open the modem port"),
    );
    assert!(
        warned.contains(&format!("in use by pid {} ", daemon.pid())) && warned.contains(&emu.port),
        "{warned}"
    );
    assert!(
        second.child.try_wait().unwrap().is_none(),
        "still waiting for the port"
    );
}
