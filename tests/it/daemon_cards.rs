//! `simgate run` with the card kinds of a reader station: the daemon shares the station's
//! identification engine and reader manager.

use crate::support;

use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Pcsc, Proc, TempDir};

#[test]
fn run_publishes_a_blank_esim_by_its_eid_and_survives_a_mute_card_in_the_other_reader() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let cfg = state.path().join("simgate.toml");
    std::fs::write(&cfg, "[readers]\ncard_timeout_ms = 1000\n").unwrap();
    let mut sub = broker.subscribe("simgate/v1/gw-cards/#");
    let mute = pcsc.insert(1, "mute.toml");
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .arg("--config")
            .arg(&cfg)
            .args(support::run_args(&broker.url(), "gw-cards"))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );

    // The mute card in reader 1 does not hold up reader 0.
    let _blank = pcsc.insert(0, "euicc-blank.toml");
    let topic = "simgate/v1/gw-cards/sim/89049032123451234512345678910062/state";
    let blank = sub.expect("the Blank eSIM's state", |m| m.topic == topic);
    assert_eq!(blank.payload["form_factor"], "esim");
    assert_eq!(blank.payload["blank_esim"], true);
    assert!(blank.payload["status"].is_null(), "{}", blank.payload);
    assert_eq!(blank.payload["eid"], "89049032123451234512345678910062");

    // Once the mute card is out, the same reader reads the next card.
    mute.remove();
    let _usim = pcsc.insert(1, "usim.toml");
    let usim = sub.expect("the USIM's state", |m| {
        m.topic == "simgate/v1/gw-cards/sim/8988211000000430010/state"
    });
    assert_eq!(usim.payload["form_factor"], "physical");
    assert_eq!(usim.payload["imsi"], "228062800000208");
    assert_eq!(usim.payload["spn"], "GSM-R CH");
}

/// Guards the boot order of a station: `simgate run` up before pcscd (socket
/// activation, a slow unit) finds the readers once pcscd starts, without a restart —
/// also when given an exact reader name (regression: it exited, "pcscd is not running").
#[test]
fn run_started_before_pcscd_finds_the_readers_once_pcscd_is_up() {
    let mut pcsc = Pcsc::start();
    pcsc.stop();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut sub = broker.subscribe("simgate/v1/gw-late/sim/+/state");
    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), "gw-late"))
            .arg(state.path())
            // An exact name cannot be checked while pcscd is down: not a reason to stop.
            .args(["--reader", &pcsc.reader(0)])
            .env("RUST_LOG", "simgate=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = support::Lines::new(run.child.stderr.take().unwrap());
    log.expect("run to find pcscd absent", Duration::from_secs(10), |l| {
        l.contains("PC/SC (pcscd) is away")
    });
    // Said once, not at every retry: a modem-only gateway has no pcscd at all.
    for _ in 0..2 {
        log.expect("a quiet retry", Duration::from_secs(10), |l| {
            l.contains("PC/SC (pcscd) still away")
        });
    }
    let warned = log
        .seen
        .iter()
        .filter(|l| l.contains("\"PC/SC (pcscd) is away"))
        .count();
    assert_eq!(warned, 1, "{:#?}", log.seen);

    pcsc.resume();
    let _usim = pcsc.insert(0, "usim.toml");
    let m = sub.expect("the USIM's state after pcscd came up", |m| {
        m.topic == "simgate/v1/gw-late/sim/8988211000000430010/state"
    });
    assert_eq!(m.payload["present"], true);
    assert!(run.child.try_wait().unwrap().is_none(), "run still running");
}

/// What a surface showed of a card: the fields one card must show the same everywhere.
fn facts(v: &serde_json::Value) -> [serde_json::Value; 5] {
    let blank = v["blank_esim"].as_bool().unwrap_or(false);
    [
        v["iccid"].clone(),
        v["eid"].clone(),
        blank.into(),
        v["imsi"].clone(),
        v["spn"].clone(),
    ]
}

/// Every readable image of devices/cards (mute and pulled cards give nothing to compare).
fn readable_images() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(support::repo().join("devices/cards"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            (name.ends_with(".toml") && name != "mute.toml" && name != "pulled.toml")
                .then_some(name)
        })
        .collect();
    names.sort();
    names
}

fn pull(pcsc: &Pcsc, card: support::Card) {
    card.remove();
    support::wait_for("the card gone", Duration::from_secs(10), || {
        let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["card_present"] == false
    });
}

/// Guards issue 24's "one card must read the same everywhere": `read`, `station` and
/// `run` identify every shipped image with one plan, so each shows the same ICCID, EID,
/// Blank-eSIM verdict, IMSI and SPN (the daemon used to list profiles where `read` did
/// not, and publish `blank_esim` where `read` said nothing of it).
#[test]
fn read_station_and_run_show_every_shipped_image_alike() {
    let pcsc = Pcsc::start();
    let images = readable_images();
    assert!(images.len() >= 11, "{images:?}");

    let mut by_read = Vec::new();
    for image in &images {
        let card = pcsc.insert(0, image);
        let out = pcsc.simgate().args(["read", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "{image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        by_read.push(facts(&rows[0]));
        pull(&pcsc, card);
    }

    let state = TempDir::new("state-station");
    let mut station = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .args(["station", "--json", "--state-dir"])
            .arg(state.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut lines = support::Lines::new(station.child.stdout.take().unwrap());
    for (image, read) in images.iter().zip(&by_read) {
        let card = pcsc.insert(0, image);
        let line = lines.expect(
            &format!("the station's read of {image}"),
            Duration::from_secs(30),
            |l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["reader"].is_string()),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(&facts(&v), read, "{image}: station against read");
        pull(&pcsc, card);
    }
    station.interrupt();

    let broker = Broker::start();
    let state = TempDir::new("state-run");
    let mut sub = broker.subscribe("simgate/v1/gw-alike/sim/+/state");
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), "gw-alike"))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    for (image, read) in images.iter().zip(&by_read) {
        let key = read[0].as_str().or(read[1].as_str()).unwrap().to_string();
        let card = pcsc.insert(0, image);
        let m = sub.expect_within(
            &format!("the state row of {image}"),
            Duration::from_secs(30),
            |m| m.topic.ends_with(&format!("/sim/{key}/state")) && m.payload["present"] == true,
        );
        // A Blank eSIM's row carries its EID where the ICCID goes (MQTT.md).
        let mut row = m.payload.clone();
        if row["iccid"] == row["eid"] {
            row["iccid"] = serde_json::Value::Null;
        }
        assert_eq!(&facts(&row), read, "{image}: run against read");
        pull(&pcsc, card);
    }
}
