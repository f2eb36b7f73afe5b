//! `simgate modem info --port <pty> --json` as a user runs it, against the emulator.

use simgate::emu::modem::{self as emulator, Options};
use simgate::modem::Profiles;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tokio_util::sync::CancellationToken;

fn simgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_simgate"))
}

async fn info_json(profile: &str, f: impl FnOnce(&mut Options)) -> serde_json::Value {
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get(profile).unwrap().clone());
    f(&mut opts);
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let port = emu.path().display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        simgate()
            .args(["modem", "info", "--port", &port, "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    cancel.cancel();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn modem_info_json_reports_modem_and_sim() {
    let v = info_json("telit-le910", |_| {}).await;
    assert_eq!(v["manufacturer"], "Telit");
    assert_eq!(v["model"], "LE910C1-EU");
    assert_eq!(v["imei"], "867698041234567");
    assert_eq!(v["sim"]["present"], true);
    assert_eq!(v["sim"]["iccid"], "8901260886258128535");
    assert_eq!(v["sim"]["imsi"], "20404001234567");
    assert_eq!(v["sim"]["mcc_mnc"], "20404");
    assert_eq!(v["sim"]["form_factor"], "physical");
    assert_eq!(v["sim"]["in_session"], "yes");
    assert_eq!(v["sim"]["registration"]["state"], "home");
    assert!(v["at_commands"].as_u64().unwrap() <= 12);
}

#[tokio::test]
async fn modem_info_json_says_sim_not_inserted() {
    let v = info_json("quectel-ec2x", |o| o.sim = None).await;
    assert_eq!(v["sim"]["present"], false);
    assert_eq!(v["sim"]["state"], "SIM not inserted");
    assert_eq!(v["sim"]["in_session"], "no");
    // What is not known is left out, never null (README, "Reports"), but the one the
    // README names: a modem's SIM's form_factor, null when the modem cannot tell.
    assert_eq!(nulls(&v, ""), ["/sim/form_factor"], "{v}");
    assert!(v["sim"].get("iccid").is_none(), "{v}");
}

/// The JSON pointers of every null in `v`.
fn nulls(v: &serde_json::Value, at: &str) -> Vec<String> {
    match v {
        serde_json::Value::Null => vec![at.to_string()],
        serde_json::Value::Object(m) => m
            .iter()
            .flat_map(|(k, v)| nulls(v, &format!("{at}/{k}")))
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .enumerate()
            .flat_map(|(i, v)| nulls(v, &format!("{at}/{i}")))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn emulate_modem_prints_a_port_that_modem_info_identifies() {
    let mut emu = simgate()
        .args(["emulate", "modem", "--profile", "ublox-sara-r5", "--esim"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(emu.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let out = simgate()
        .args(["modem", "info", "--port", first.trim(), "--json"])
        .output()
        .unwrap();
    emu.kill().unwrap();
    emu.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["profile"], "ublox-sara-r5");
    assert_eq!(v["sim"]["form_factor"], "esim");
    assert_eq!(v["sim"]["eid"], "89049032123451234512345678901235");
}

#[test]
fn a_bad_override_profile_is_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("simgate-cli-prof-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("mine.toml"), "name = \"x\"\nfoo = 1\n").unwrap();
    let out = simgate()
        .args(["modem", "info", "--port", "/nonexistent", "--profile-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mine.toml"), "{err}");
    assert!(err.contains("foo"), "{err}");
}

#[tokio::test]
async fn modems_lists_every_given_port_and_names_the_dead_one() {
    let profiles = Profiles::shipped().unwrap();
    let cancel = CancellationToken::new();
    let a = emulator::start(
        Options::new(profiles.get("quectel-ec2x").unwrap().clone()),
        cancel.clone(),
    )
    .unwrap();
    let mut silent = Options::new(profiles.get("telit-le910").unwrap().clone());
    silent.sim = None;
    let b = emulator::start(silent, cancel.clone()).unwrap();
    let (pa, pb) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        simgate()
            .args([
                "modems",
                "--json",
                "--timeout",
                "3",
                "--port",
                &pa,
                "--port",
                &pb,
                "--port",
                "/dev/simgate-no-such-port",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    cancel.cancel();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["model"], "EC25");
    assert_eq!(list[1]["sim"]["state"], "SIM not inserted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/simgate-no-such-port"), "{err}");
}
