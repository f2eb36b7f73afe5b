//! What a person sees on a terminal: simgate in a real pseudo-terminal of 80×24 (made by
//! util-linux `script`, as tmux or an SSH session would give one), its screen read back.

use crate::support;

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Broker, Lines, Proc, TempDir};

const WAIT: Duration = Duration::from_secs(20);

/// `args` run by simgate in an 80×24 pseudo-terminal; its screen's bytes as lines.
fn in_pty(args: &[&str], env: &[(&str, &str)]) -> (Proc, Lines) {
    let quoted: Vec<String> = std::iter::once(support::simgate_bin())
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c"])
        .arg(format!("stty cols 80 rows 24; exec {}", quoted.join(" ")))
        .arg("/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm-256color");
    let mut proc = Proc::spawn("simgate in a pty", &mut cmd);
    let out = proc.child.stdout.take().expect("piped stdout");
    (proc, Lines::new(out))
}

/// A mistyped agent id is said after a few seconds, with the agents that exist.
#[test]
fn watch_of_an_agent_never_seen_says_so_and_names_the_agents_seen() {
    let broker = Broker::start();
    broker.publish(
        "simgate/v1/gw-real/health",
        &[
            "-r",
            "-m",
            &json!({"v":1,"state":"online","ts":1,"version":"0.1.0"}).to_string(),
        ],
    );
    let state = TempDir::new("xdg");
    let xdg = state.path().to_str().unwrap();
    let (mut p, mut screen) = in_pty(
        &["watch", "--broker", &broker.url(), "--agent-id", "gw-uxx"],
        &[("XDG_STATE_HOME", xdg)],
    );
    let line = screen.expect("the notice", WAIT, |l| l.contains("no agent gw-uxx"));
    assert!(
        line.contains("no agent gw-uxx has been seen on this broker; agents seen: gw-real"),
        "{line}"
    );
    p.interrupt();
}

/// The SIM table at 80 columns: every line fits, no value is cut (30 days left reads
/// "~30", not "~3"), and no log line lands on the screen (it goes to a file, said once).
#[test]
fn watch_at_80_columns_fits_cuts_no_value_and_keeps_the_log_off_the_screen() {
    let broker = Broker::start();
    let agent = "gw-80";
    for (iccid, present) in [
        ("8988211000000430010", false),
        ("89314404000000000019", true),
    ] {
        let row = json!({"v":1,"iccid":iccid,"status":"Active","in_session":"yes",
            "form_factor":"physical","location":{"kind":"modem","port":"/dev/ttyUSB2","slot":1},
            "present":present,"observed_at":1,"operator":"Vodafone NL",
            "platform":{"status":"Active","plan":"IoT 1GB Europe","company":"ACME Logistics",
                        "end_user":"Truck 12","data_left_mb":512.5,"days_left":30,"sim_type":"Prepaid"},
            "estimate":{"data_left_mb":1042.5,"days_left":30.0,"since":1}});
        broker.publish(
            &format!("simgate/v1/{agent}/sim/{iccid}/state"),
            &["-r", "-m", &row.to_string()],
        );
    }
    let state = TempDir::new("xdg");
    let xdg = state.path().to_str().unwrap();
    let (mut p, mut screen) = in_pty(
        &["watch", "--broker", &broker.url(), "--agent-id", agent],
        &[("XDG_STATE_HOME", xdg), ("RUST_LOG", "simgate=debug")],
    );
    screen.expect("both rows", WAIT, |l| l.contains("SIMs: 2 (1 present)"));
    screen.expect("the table", WAIT, |l| l.contains("8988211000000430010"));
    p.interrupt();
    let _ = screen.drain();
    // What the screen showed, its control sequences taken out.
    let shown: Vec<String> = screen
        .seen
        .iter()
        .map(|l| strip_controls(l))
        .filter(|l| !l.trim().is_empty())
        .collect();
    // Said once, before the screen opens: where the log goes.
    assert!(
        shown[0].starts_with("simgate: the log goes to "),
        "{shown:#?}"
    );
    let shown = &shown[1..];
    for l in shown {
        assert!(l.chars().count() <= 80, "wider than 80: {l:?}\n{shown:#?}");
        assert!(
            !l.contains("DEBUG") && !l.contains(" INFO "),
            "a log line on the screen: {l:?}"
        );
    }
    let text = shown.join("\n");
    for whole in ["89314404000000000019", "~1042.5", "~30"] {
        assert!(
            text.split_whitespace().any(|w| w == whole),
            "{whole} cut:\n{text}"
        );
    }
    // Present SIMs first, in the last frame.
    let last = &text[text.rfind("SIMs: 2").unwrap()..];
    let first = last.find("89314404000000000019").unwrap();
    let gone = last.find("8988211000000430010").unwrap();
    assert!(first < gone, "present first:\n{last}");
    let log = state.path().join("simgate/watch.log");
    let logged = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(logged.contains("DEBUG"), "the log in its file: {logged}");
}

/// Colour only where wanted: NO_COLOR (https://no-color.org) and CLICOLOR=0 turn it
/// off on a terminal.
#[test]
fn log_lines_on_a_terminal_have_no_colour_under_no_color_or_clicolor_0() {
    let coloured = |extra: &[(&str, &str)]| {
        // `readers` logs which configuration it read (debug) and fails without pcscd:
        // a short run whose every line reached the terminal.
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c"])
            .arg(format!(
                "stty cols 80 rows 24; exec '{}' readers",
                support::simgate_bin()
            ))
            .arg("/dev/null")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm-256color")
            .env("RUST_LOG", "simgate=debug")
            .env("PCSCLITE_CSOCK_NAME", "/nonexistent/pcscd.comm")
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains("DEBUG"), "a log line: {text}");
        text.contains("\x1b[")
    };
    assert!(coloured(&[]), "a terminal gets colour by default");
    assert!(!coloured(&[("NO_COLOR", "1")]), "NO_COLOR");
    assert!(!coloured(&[("CLICOLOR", "0")]), "CLICOLOR=0");
}

/// A line with its ECMA-48 control sequences (CSI … final byte) and CRs removed.
fn strip_controls(l: &str) -> String {
    let mut out = String::new();
    let mut chars = l.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' | '\x07' => {}
            c => out.push(c),
        }
    }
    out
}

/// `watch --once` for a script: the agent's table once every SIM its retained index
/// names has its row, then exit; `--json` gives the health and the rows as the agent
/// published them, present SIMs first; an agent never seen is an error (exit 1) naming it.
#[test]
fn watch_once_prints_the_whole_table_once_as_text_or_json_and_exits() {
    let broker = Broker::start();
    let agent = "gw-once";
    let (gone, here) = ("8988211000000430010", "89314404000000000019");
    broker.publish(
        &format!("simgate/v1/{agent}/health"),
        &[
            "-r",
            "-m",
            &json!({"v":1,"state":"online","ts":1,"version":"0.1.0"}).to_string(),
        ],
    );
    for (iccid, present) in [(gone, false), (here, true)] {
        let row = json!({"v":1,"iccid":iccid,"status":"Active","in_session":"n/a",
            "form_factor":"physical","location":{"kind":"reader","reader":"R 00 00"},
            "present":present,"observed_at":1});
        broker.publish(
            &format!("simgate/v1/{agent}/sim/{iccid}/state"),
            &["-r", "-m", &row.to_string()],
        );
    }
    broker.publish(
        &format!("simgate/v1/{agent}/index"),
        &[
            "-r",
            "-m",
            &json!({"v":1,"ts":1,"iccids":[gone, here]}).to_string(),
        ],
    );
    let watch = |agent: &str, extra: &[&str]| {
        Command::new(support::simgate_bin())
            .args([
                "watch",
                "--broker",
                &broker.url(),
                "--agent-id",
                agent,
                "--once",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = watch(agent, &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["agent"], agent);
    assert_eq!(doc["health"]["state"], "online", "{doc}");
    let sims = doc["sims"].as_array().unwrap();
    assert_eq!(sims.len(), 2, "{doc}");
    assert_eq!(sims[0]["iccid"], here, "present first: {doc}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("null"),
        "{doc}"
    );

    let out = watch(agent, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(here) && table.contains(gone), "{table}");
    assert!(table.contains("SIMs: 2 (1 present)"), "{table}");

    let out = watch("gw-nobody", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no agent gw-nobody has been seen"), "{err}");
    assert!(out.stdout.is_empty());
}
