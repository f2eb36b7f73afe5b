//! Logs under systemd: with stderr the journal stream (`JOURNAL_STREAM`), simgate speaks
//! journald's native protocol, so priorities and fields survive. The wire format itself
//! is tested against a socket bound in the test (src/logging.rs); this test needs the
//! real journald and journalctl, so it is ignored unless asked for — an ignored test is
//! reported as such, never counted as passed.

use crate::support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use support::{Proc, TempDir};

#[test]
#[ignore = "needs a running systemd-journald and journalctl: cargo test --test it journal -- --ignored"]
fn under_systemd_warnings_reach_the_journal_with_their_priority_and_fields() {
    let socket = std::path::Path::new(simgate::logging::JOURNAL_SOCKET);
    assert!(
        std::os::unix::net::UnixDatagram::unbound()
            .and_then(|s| s.connect(socket))
            .is_ok(),
        "no journald listening on {}: this test cannot run here",
        socket.display()
    );
    let dir = TempDir::new("journal");
    let port = format!("/dev/simgate-journal-test-{}", std::process::id());
    // The journal, followed from now on, filtered on the field simgate sets.
    let mut follow = Proc::spawn(
        "journalctl -f",
        Command::new("journalctl")
            .args(["-f", "-n", "0", "-o", "json", "--no-pager"])
            .arg(format!("PORT={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let lines = BufReader::new(follow.child.stdout.take().unwrap()).lines();
    // A bound, not a wait: if the entry never comes, stop following so the test fails.
    let follower = follow.pid();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        support::signal(follower, "KILL");
    });

    // stderr is a file standing for systemd's stream: JOURNAL_STREAM names its device
    // and inode, as systemd does.
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let _run = Proc::spawn(
        "simgate run",
        Command::new(support::simgate_bin())
            .args([
                "run",
                "--agent-id",
                "gw-journal",
                "--modem",
                &port,
                "--state-dir",
            ])
            .arg(dir.path().join("state"))
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .env("RUST_LOG", "simgate=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
    );

    let mut seen = None;
    for line in lines {
        let entry: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if entry["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.starts_with("cannot open the modem port"))
        {
            seen = Some(entry);
            break;
        }
    }
    let entry = seen.expect("the missing modem port in the journal");
    assert_eq!(entry["PRIORITY"], "4", "a warning: {entry}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "simgate", "{entry}");
    assert_eq!(entry["PORT"], port.as_str(), "{entry}");
    assert_eq!(
        std::fs::read_to_string(&stderr_path).unwrap(),
        "",
        "nothing went to the stream itself"
    );
}
