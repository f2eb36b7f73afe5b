//! `simgate run` under a service manager (`Type=notify`): readiness, the watchdog fed
//! from the daemon's loop, and the status line, against a real NOTIFY_SOCKET bound here
//! the way systemd binds its own.

use crate::support;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Modem, Proc, TempDir};

/// WATCHDOG_USEC for the tests: the daemon pings every half of it.
const WATCHDOG_USEC: u64 = 200_000;

pub(crate) struct ManagerSocket {
    sock: UnixDatagram,
    _dir: TempDir,
    pub(crate) path: std::path::PathBuf,
}

impl ManagerSocket {
    pub(crate) fn bind() -> ManagerSocket {
        let dir = TempDir::new("notify");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
        ManagerSocket {
            sock,
            _dir: dir,
            path,
        }
    }

    /// The next datagram, waiting at most `limit` (None: nothing came).
    fn next(&self, limit: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Datagrams until one satisfies `pred` (each failing one is skipped).
    pub(crate) fn expect(&self, what: &str, mut pred: impl FnMut(&str) -> bool) -> String {
        loop {
            let m = self
                .next(Duration::from_secs(30))
                .unwrap_or_else(|| panic!("no notification: {what}"));
            if pred(&m) {
                return m;
            }
        }
    }
}

fn status(m: &str) -> Option<&str> {
    m.lines().find_map(|l| l.strip_prefix("STATUS="))
}

fn daemon(
    sock: &ManagerSocket,
    broker: Option<&str>,
    state: &TempDir,
    port: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(support::simgate_bin());
    cmd.args([
        "run",
        "--agent-id",
        "gw-notify",
        "--modem",
        port,
        "--state-dir",
    ])
    .arg(state.path())
    .env("NOTIFY_SOCKET", &sock.path)
    .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
    .env("RUST_LOG", "simgate=debug")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    if let Some(b) = broker {
        cmd.args(["--broker", b]);
    }
    cmd
}

#[test]
fn ready_after_the_first_look_then_watchdog_pings_with_a_status_line() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let sock = ManagerSocket::bind();
    let _run = Proc::spawn(
        "simgate run",
        &mut daemon(&sock, Some(&broker.url()), &state, &emu.port),
    );

    // Watchdog pings may come before readiness (systemd may arm the watchdog at start).
    let ready = sock.expect("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // Ready means the modem had its first look: it is counted already.
    assert!(
        status(&ready).is_some_and(|s| s.starts_with("1 modem, broker ")),
        "{ready:?}"
    );
    for _ in 0..3 {
        sock.expect("WATCHDOG=1", |m| m.lines().any(|l| l == "WATCHDOG=1"));
    }
    let m = sock.expect("the broker connected in the status", |m| {
        status(m) == Some("1 modem, broker connected, 0 queued")
    });
    assert!(!m.contains("READY=1"), "READY=1 is sent once: {m:?}");
}

/// The watchdog is fed by the daemon's loop itself, not a side task: once the loop is
/// wedged (the debug-only SIMGATE_DEBUG_WEDGE_AFTER_PINGS hook blocks it after N pings
/// once ready,
/// while the runtime's other tasks, the modem supervisor among them, go on), no
/// WATCHDOG=1 comes. systemd's criterion is silence for WatchdogSec; here silence for ten
/// times the ping interval stands for it.
#[test]
fn a_wedged_loop_stops_feeding_the_watchdog() {
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let sock = ManagerSocket::bind();
    let mut run = Proc::spawn(
        "simgate run",
        daemon(&sock, None, &state, &emu.port).env("SIMGATE_DEBUG_WEDGE_AFTER_PINGS", "3"),
    );

    let ready = sock.expect("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    assert_eq!(
        status(&ready),
        Some("1 modem, no broker configured"),
        "{ready:?}"
    );
    let mut pings = 0;
    while pings < 3 {
        let m = sock.expect("WATCHDOG=1", |m| m.contains("WATCHDOG=1"));
        pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
    }
    let silence = Duration::from_micros(WATCHDOG_USEC / 2 * 10);
    while let Some(m) = sock.next(silence) {
        assert!(
            !m.contains("WATCHDOG=1"),
            "a wedged loop still fed the watchdog: {m:?}"
        );
    }
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the process lives on, wedged"
    );
    run.kill9();
}

/// Regression: a modem not plugged in at boot must not hold readiness back until
/// systemd's start timeout kills the service; its port is told absent and counted out.
#[test]
fn ready_with_a_configured_modem_port_that_is_not_there() {
    let state = TempDir::new("state");
    let sock = ManagerSocket::bind();
    let port = format!("/dev/simgate-absent-{}", std::process::id());
    let _run = Proc::spawn("simgate run", &mut daemon(&sock, None, &state, &port));
    let ready = sock.expect("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    assert_eq!(
        status(&ready),
        Some("0 of 1 modem, no broker configured"),
        "{ready:?}"
    );
}

/// `systemctl reload simgate` (SIGHUP): the configuration read again; a key that takes
/// effect without a restart is applied and named, one that needs a restart is named at
/// WARN, a file that no longer loads changes nothing — and the daemon keeps running
/// (SIGHUP's default disposition would have ended it).
#[test]
fn sighup_reloads_the_configuration_applying_live_keys_and_naming_the_others() {
    let dir = TempDir::new("reload");
    let cfg = dir.path().join("simgate.toml");
    std::fs::write(&cfg, "[readers]\ncard_timeout_ms = 5000\n").unwrap();
    std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    let state = dir.path().join("state");
    let mut run = Proc::spawn(
        "simgate run",
        std::process::Command::new(support::simgate_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["--log-format", "json", "run", "--agent-id", "gw-hup"])
            .arg("--state-dir")
            .arg(&state)
            // A modem-only gateway on a port that refuses: no pcscd, no broker needed.
            .args(["--modem", "tcp://127.0.0.1:9"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = support::Lines::new(run.child.stderr.take().unwrap());
    let wait = Duration::from_secs(20);
    log.expect("the daemon running", wait, |l| {
        l.contains("simgate running")
    });

    std::fs::write(
        dir.path().join("conf.d/50-site.toml"),
        "[readers]\ncard_timeout_ms = 900\n[broker]\nkeepalive_secs = 60\n",
    )
    .unwrap();
    support::signal(run.pid(), "HUP");
    let restart = log.expect("the key that needs a restart", wait, |l| {
        l.contains("need a restart")
    });
    assert!(
        restart.contains("broker.keepalive_secs") && restart.contains("WARN"),
        "{restart}"
    );
    assert!(!restart.contains("card_timeout_ms"), "{restart}");
    let applied = log.expect("the live key applied", wait, |l| {
        l.contains("configuration reloaded: applied")
    });
    assert!(applied.contains("readers.card_timeout_ms"), "{applied}");

    // A drop-in that no longer loads: said, nothing changed, still running.
    std::fs::write(
        dir.path().join("conf.d/60-bad.toml"),
        "[readers]\ncard_timeout = 1\n",
    )
    .unwrap();
    support::signal(run.pid(), "HUP");
    let bad = log.expect("the refusal", wait, |l| {
        l.contains("configuration not reloaded")
    });
    assert!(bad.contains("60-bad.toml:2"), "{bad}");
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the daemon"
    );
    let st = run.interrupt();
    assert!(st.success(), "{st}");
}
