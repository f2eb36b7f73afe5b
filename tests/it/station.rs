//! `simgate station` and `simgate read` with every kind of card, through a real pcscd
//! with vpcd and simgate's virtual cards (devices/cards/).

use crate::support;

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Lines, Pcsc, Proc, TempDir};

/// A running station with its NDJSON output.
struct Station {
    proc: Proc,
    out: Lines,
}

impl Station {
    fn start(pcsc: &Pcsc, state: &TempDir, extra: &[&str]) -> Station {
        let mut proc = Proc::spawn(
            "simgate station",
            pcsc.simgate()
                .args(["station", "--json", "--state-dir"])
                .arg(state.path())
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        Station { proc, out }
    }

    /// The next read reported for `reader`.
    fn read_in(&mut self, reader: &str) -> Value {
        let line = self.out.expect(
            &format!("a read in {reader}"),
            Duration::from_secs(20),
            |l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["reader"] == reader),
        );
        serde_json::from_str(&line).expect("a JSON line")
    }
}

fn config_with_timeout(dir: &TempDir, ms: u64) -> std::path::PathBuf {
    let path = dir.path().join("simgate.toml");
    std::fs::write(&path, format!("[readers]\ncard_timeout_ms = {ms}\n")).unwrap();
    path
}

#[test]
fn station_reads_two_readers_at_once_with_batch_attributes_eid_and_qr_and_a_durable_csv() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let csv = state.path().join("batch.csv");
    let mut st = Station::start(
        &pcsc,
        &state,
        &[
            "--label",
            "lot-7",
            "--company",
            "ACME",
            "--note",
            "inbound",
            "--csv",
            csv.to_str().unwrap(),
        ],
    );
    let _usim = pcsc.insert(0, "usim.toml");
    let _esim = pcsc.insert(1, "euicc.toml");
    let usim = st.read_in(&pcsc.reader(0));
    let esim = st.read_in(&pcsc.reader(1));

    assert_eq!(usim["iccid"], "8988211000000430010");
    assert_eq!(usim["form_factor"], "physical");
    assert!(
        usim.get("eid").is_none() && usim.get("qr").is_none(),
        "{usim}"
    );
    assert_eq!(usim["labels"], serde_json::json!(["lot-7"]));
    assert_eq!(usim["company"], "ACME");
    assert_eq!(usim["note"], "inbound");

    assert_eq!(esim["form_factor"], "esim");
    assert_eq!(esim["eid"], "89049032123451234512345678901235");
    assert_eq!(esim["iccid"], "8949440000000000016");
    assert_eq!(esim["qr"], "89049032123451234512345678901235");
    assert_eq!(esim["operator"], "Telekom Deutschland");
    assert!(esim.get("warnings").is_none(), "{esim}");

    // Every read shown is already in the CSV, with the batch attributes.
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("n,time,reader,iccid"));
    assert!(
        text.contains("8949440000000000016,esim,89049032123451234512345678901235"),
        "{text}"
    );
    assert!(text.contains("lot-7,ACME,inbound"), "{text}");
    let st_exit = st.proc.interrupt();
    assert!(st_exit.success(), "station exited with {st_exit}");
}

#[test]
fn station_warns_loudly_on_a_duplicate_and_on_a_luhn_failure() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let mut st = Station::start(&pcsc, &state, &[]);
    let reader = pcsc.reader(0);

    let card = pcsc.insert(0, "usim.toml");
    let first = st.read_in(&reader);
    assert!(first.get("warnings").is_none(), "{first}");
    card.remove();
    let again = pcsc.insert(0, "usim.toml");
    let dup = st.read_in(&reader);
    assert_eq!(dup["n"], 2);
    assert!(
        dup["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("DUPLICATE: already read in this batch as #1"),
        "{dup}"
    );
    again.remove();

    let _bad = pcsc.insert(0, "usim-luhn-fail.toml");
    let bad = st.read_in(&reader);
    assert_eq!(
        bad["iccid"], "8988211000000430011",
        "reported as read, not fixed"
    );
    assert_eq!(bad["status"], "Invalid");
    assert!(
        bad["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("LUHN FAILURE"),
        "{bad}"
    );
}

#[test]
fn a_mute_card_times_out_with_a_clear_message_and_the_reader_stays_usable() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let cfg = config_with_timeout(&state, 1500);
    let mut st = Station::start(&pcsc, &state, &["--config", cfg.to_str().unwrap()]);
    let reader = pcsc.reader(0);

    let mute = pcsc.insert(0, "mute.toml");
    let row = st.read_in(&reader);
    assert!(
        row["warnings"][0]
            .as_str()
            .unwrap()
            .contains("card does not answer (mute or broken)"),
        "{row}"
    );
    assert!(
        row["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within 1.5s"),
        "{row}"
    );
    // The other reader is not held up by the mute card.
    let _other = pcsc.insert(1, "gsm-sim.toml");
    assert_eq!(st.read_in(&pcsc.reader(1))["iccid"], "8988211000000530082");

    mute.remove();
    let _good = pcsc.insert(0, "usim.toml");
    assert_eq!(st.read_in(&reader)["iccid"], "8988211000000430010");
}

#[test]
fn a_card_pulled_mid_read_is_reported_and_the_next_card_reads() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let reader = pcsc.reader(0);
    // In before the station starts: the rig waits for pcscd to show the card present,
    // which it would not if the station read (and so pulled) it first.
    let pulled = pcsc.insert(0, "pulled.toml");
    let mut st = Station::start(&pcsc, &state, &[]);
    let row = st.read_in(&reader);
    assert!(
        row["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("UNREADABLE: card pulled or lost during the read"),
        "{row}"
    );
    assert!(row.get("iccid").is_none(), "{row}");
    drop(pulled);
    support::wait_for(
        "pcscd to see the pulled card gone",
        Duration::from_secs(10),
        || {
            let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v[0]["card_present"] == false
        },
    );
    let _good = pcsc.insert(0, "usim.toml");
    assert_eq!(st.read_in(&reader)["iccid"], "8988211000000430010");
}

/// `simgate read --json` of one image in reader 0.
fn read_one(pcsc: &Pcsc, image: &str) -> Value {
    let card = pcsc.insert(0, image);
    let out = pcsc.simgate().args(["read", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    card.remove();
    support::wait_for("the card gone", Duration::from_secs(10), || {
        let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0]["card_present"] == false
    });
    rows[0].clone()
}

#[test]
fn every_euicc_variant_and_iccid_shape_identifies_through_pcscd() {
    let pcsc = Pcsc::start();

    let vendor = read_one(&pcsc, "euicc-vendor-aid.toml");
    assert_eq!(vendor["form_factor"], "esim");
    assert_eq!(vendor["eid"], "89086030202200000022000023022943");

    let no_channels = read_one(&pcsc, "euicc-no-channels.toml");
    assert_eq!(no_channels["form_factor"], "esim");
    assert_eq!(no_channels["eid"], "89044045116727494800000004479366");
    assert_eq!(no_channels["imsi"], "262011106487504");

    let blank = read_one(&pcsc, "euicc-blank.toml");
    assert_eq!(blank["form_factor"], "esim");
    assert_eq!(blank["blank_esim"], true);
    assert!(
        blank["status"].is_null(),
        "simgate sets only Pending and Invalid: {blank}"
    );
    assert!(blank["iccid"].is_null(), "{blank}");
    assert!(
        blank["luhn_ok"].is_null(),
        "no ICCID, no Luhn check to pass: {blank}"
    );
    assert_eq!(blank["eid"], "89049032123451234512345678910062");

    let t0 = read_one(&pcsc, "euicc-reader-t0.toml");
    assert_eq!(t0["eid"], "89049032123451234512345678901235");
    let passed = read_one(&pcsc, "euicc.toml");
    assert_eq!(passed["eid"], t0["eid"]);
    assert_eq!(
        passed["apdus"], 3,
        "SELECT ISD-R, GetEUICCData, GetProfilesInfo (the enabled profile's ICCID)"
    );
    assert_eq!(t0["apdus"], passed["apdus"]);

    let twenty = read_one(&pcsc, "usim-20digit.toml");
    assert_eq!(twenty["iccid"], "89882110000005300811");
    assert_eq!(twenty["luhn_ok"], true);
}

#[test]
fn station_publishes_each_read_with_its_batch_attributes() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut sub = broker.subscribe("simgate/v1/st-1/#");
    let mut st = Station::start(
        &pcsc,
        &state,
        &[
            "--broker",
            &broker.url(),
            "--agent-id",
            "st-1",
            "--label",
            "lot-9",
            "--company",
            "ACME",
        ],
    );
    let _esim = pcsc.insert(0, "euicc.toml");
    st.read_in(&pcsc.reader(0));
    let topic = "simgate/v1/st-1/sim/8949440000000000016/state";
    let msg = sub.expect("the eSIM's state", |m| m.topic == topic);
    assert_eq!(msg.payload["form_factor"], "esim");
    assert_eq!(msg.payload["eid"], "89049032123451234512345678901235");
    assert_eq!(msg.payload["labels"], serde_json::json!(["lot-9"]));
    assert_eq!(msg.payload["company"], "ACME");
    assert_eq!(msg.payload["present"], true);
}

#[test]
fn station_survives_pcscd_crashing_and_coming_back() {
    let mut pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let mut st = Station::start(&pcsc, &state, &[]);
    let card = pcsc.insert(0, "usim.toml");
    assert_eq!(st.read_in(&pcsc.reader(0))["iccid"], "8988211000000430010");

    // kill -9 and a fresh pcscd on the same socket: the station re-establishes its
    // PC/SC context on its own, without a restart.
    pcsc.restart();
    drop(card);
    let _again = pcsc.insert(1, "gsm-sim.toml");
    assert_eq!(st.read_in(&pcsc.reader(1))["iccid"], "8988211000000530082");
    assert!(
        st.proc.child.try_wait().unwrap().is_none(),
        "station still running"
    );
}
