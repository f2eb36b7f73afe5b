//! The operator's channels on the real stack (emulated modems on ptys, mosquitto): SMS
//! taken from the modem into `sms` events once across a kill -9, a full storage
//! emptied, the `ussd` and `sms_send` commands exactly once, a prepaid balance read by
//! USSD landing in the row as the operator's estimate, a UCS2 USSD reply decoded.
//!
//! The emulated SIM's IMSI is on the ITU-T E.212 test network 001-01, whose USSD
//! replies and top-up text are devices/operators/test-network.toml's.

use crate::support;

use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Modem, Msg, Proc, TempDir};

const SIM: &str = "8901260886258128535";
const IMSI: &str = "001010000000123";

fn modem(extra: &[&str]) -> Modem {
    let mut args = vec!["--imsi", IMSI];
    args.extend_from_slice(extra);
    Modem::start_with("generic-3gpp", &args)
}

fn agent(broker: &Broker, agent: &str, state: &TempDir, port: &str) -> std::process::Command {
    support::modem_agent_with(
        &broker.url(),
        agent,
        state.path(),
        port,
        "[modems]\npoll_secs = 5\n",
    )
}

fn is_sms(m: &Msg) -> bool {
    m.topic.ends_with("/events") && m.payload["type"] == "sms"
}

fn command(broker: &Broker, agent: &str, id: &str, action: &str, params: Value) {
    let cmd = json!({"v":1,"id":id,"iccid":SIM,"action":action,"params":params,
        "expires_at":support::unix_now() + 300});
    support::send_command(broker, agent, &cmd);
}

/// The emulator's storage count, asked on its stdin, until it is `n`.
fn await_stored(emu: &mut Modem, n: usize) {
    support::wait_for(
        &format!("{n} messages in the modem's storage"),
        Duration::from_secs(60),
        || {
            emu.control("sms-stored");
            let line = emu
                .lines
                .expect("the storage count", Duration::from_secs(10), |l| {
                    l.starts_with("sms-stored ")
                });
            line == format!("sms-stored {n}")
        },
    );
}

#[test]
fn a_concatenated_ucs2_sms_reaches_the_platform_once_across_a_kill_between_queue_and_delete() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = modem(&[]);
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-sms/#");
    // 105 Cyrillic characters: UCS2, two parts of at most 67 (TS 23.040 concatenation).
    let text = "Ваш баланс пополнен на 500 МБ. ".repeat(3) + "Спасибо!";
    emu.control(&format!("sms +79161234567 {text}"));
    await_stored(&mut emu, 2);

    // The first run dies right after the event is queued, before the modem deletes it.
    let mut first = Proc::spawn(
        "simgate run (dies after queueing)",
        agent(&broker, "gw-sms", &state, &port)
            .env("SIMGATE_DEBUG_DIE_AFTER_SMS_QUEUED", "1")
            .stderr(Stdio::null()),
    );
    let status = first.wait(Duration::from_secs(60));
    assert!(!status.success(), "the first run aborted: {status:?}");
    await_stored(&mut emu, 2);

    let _second = Proc::spawn("simgate run", &mut agent(&broker, "gw-sms", &state, &port));
    await_stored(&mut emu, 0);
    // A later message marks the end: whatever the runs published about the first is in.
    emu.control("sms TopUp Top-up of 1024 MB done");
    let mut seqs = HashSet::new();
    let mut keys = HashSet::new();
    let marker = sub.expect_within("the marker SMS", Duration::from_secs(60), |m| {
        if is_sms(m) && m.payload["text"] == text.as_str() {
            assert_eq!(m.payload["iccid"], SIM, "{}", m.payload);
            assert_eq!(m.payload["from"], "+79161234567", "{}", m.payload);
            assert_eq!(m.payload["parts"], 2, "{}", m.payload);
            // A redelivery of the same message (same seq) is the contract's
            // at-least-once; a second seq would be a second message.
            seqs.insert(m.payload["seq"].as_u64());
            keys.insert(m.payload["key"].to_string());
        }
        is_sms(m) && m.payload["from"] == "TopUp"
    });
    assert_eq!(seqs.len(), 1, "one sms event for the message: {seqs:?}");
    assert_eq!(keys.len(), 1);
    // The operator's top-up confirmation is told as such (devices/operators).
    assert_eq!(marker.payload["topup"]["operator"], "Test network");
    assert_eq!(marker.payload["topup"]["amount_mb"], 1024.0);
}

#[test]
fn a_full_sms_storage_is_emptied_and_what_the_network_held_follows() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    // Room for 3: the network holds the other 2 until space is made.
    let journal = state.path().join("modem.journal");
    let mut emu = modem(&[
        "--sms-capacity",
        "3",
        "--journal",
        journal.to_str().unwrap(),
    ]);
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-full/#");
    for i in 1..=5 {
        emu.control(&format!("sms +3161234567{i} message {i}"));
    }
    await_stored(&mut emu, 3);
    let _run = Proc::spawn("simgate run", &mut agent(&broker, "gw-full", &state, &port));
    let mut texts = HashSet::new();
    sub.expect_within("all five messages", Duration::from_secs(60), |m| {
        if is_sms(m) {
            texts.insert(m.payload["text"].as_str().unwrap_or_default().to_string());
        }
        texts.len() == 5
    });
    await_stored(&mut emu, 0);
    // The AT cost: a listing line per intake (at attach, then at each +CMTI of what
    // the network held), one delete per message.
    let lines = std::fs::read_to_string(&journal).unwrap();
    let deletes = lines.lines().filter(|l| l.starts_with("AT+CMGD=")).count();
    assert_eq!(deletes, 5, "{lines}");
    assert!(lines.lines().any(|l| l == "AT+CPMS?;+CMGL=4"), "{lines}");
}

/// A family whose firmware takes and gives USSD strings as packed GSM 7-bit hex
/// (devices/modems `[ussd] send = "packed-hex"`), from a user's profile directory: the
/// code goes packed, the packed reply is read back as text.
#[test]
fn a_packed_hex_ussd_family_is_spoken_to_in_its_own_shape() {
    let dir = TempDir::new("profiles");
    std::fs::write(
        dir.path().join("packed.toml"),
        r#"name = "packed-test"
family = "a firmware with packed USSD strings"
source = "test profile"
[match]
manufacturer = ["packedco"]
model = ["P1"]
[init]
commands = []
source = "none"
[iccid]
source = "TS 27.007 §8.18"
[registration]
command = "AT+CREG?;+CGREG?;+CEREG?;+CSQ"
source = "TS 27.007"
[session]
cid = 1
source = "TS 27.007"
[euicc]
access = "none"
source = "test"
[ussd]
send = "packed-hex"
source = "TS 23.038 §6.1.2.3 packing, as some firmwares want it"
[timeouts]
default_ms = 1000
sim_ms = 5000
network_ms = 30000
radio_ms = 30000
source = "test"
[emulator]
manufacturer = "PackedCo"
model = "P1"
revision = "1"
"#,
    )
    .unwrap();
    let journal = dir.path().join("journal");
    let pd = dir.path().to_str().unwrap();
    let emu = Modem::start_with(
        "packed-test",
        &[
            "--profile-dir",
            pd,
            "--imsi",
            IMSI,
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    let out = std::process::Command::new(support::simgate_bin())
        .args(["ussd", "--port", &emu.port, "--profile-dir", pd, "*100#"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Data left: 512.5 MB, valid for 12 days."
    );
    let lines = std::fs::read_to_string(&journal).unwrap();
    // "*100#" packed (TS 23.038 §6.1.2.1.1): AA 18 0C 36 02.
    assert!(
        lines.lines().any(|l| l == "AT+CUSD=1,\"AA180C3602\",15"),
        "{lines}"
    );
}

#[test]
fn ussd_and_sms_send_commands_run_once_with_the_reply_in_the_outcome() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let journal = state.path().join("modem.journal");
    let emu = modem(&["--journal", journal.to_str().unwrap()]);
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-ussd/#");
    let _run = Proc::spawn("simgate run", &mut agent(&broker, "gw-ussd", &state, &port));
    sub.expect("the modem SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{SIM}/state")) && m.payload["present"] == true
    });

    // A menu answered: two strings, two replies, in one command.
    command(
        &broker,
        "gw-ussd",
        "u-1",
        "ussd",
        json!({"code": "*102#", "answers": ["1"]}),
    );
    let m = support::final_status(&mut sub, "gw-ussd", "u-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    assert_eq!(
        m.payload["result"]["replies"],
        json!([
            "1 Balance\n2 Offers",
            "Data left: 512.5 MB, valid for 12 days."
        ])
    );
    assert_eq!(m.payload["result"]["ended"], "done");
    // A UCS2 reply (dcs 72), decoded.
    command(&broker, "gw-ussd", "u-2", "ussd", json!({"code": "*101#"}));
    let m = support::final_status(&mut sub, "gw-ussd", "u-2");
    assert_eq!(
        m.payload["result"]["replies"][0], "Остаток: 512,5 МБ, ещё 12 дн.",
        "{}",
        m.payload
    );
    // The network gives up: failed, by its name.
    command(&broker, "gw-ussd", "u-3", "ussd", json!({"code": "*103#"}));
    let m = support::final_status(&mut sub, "gw-ussd", "u-3");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert!(
        m.payload["reason"].as_str().unwrap().contains("+CUSD: 5"),
        "{}",
        m.payload
    );

    command(
        &broker,
        "gw-ussd",
        "s-1",
        "sms_send",
        json!({"to": "+31612345678", "text": "Hello"}),
    );
    let m = support::final_status(&mut sub, "gw-ussd", "s-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    assert_eq!(
        m.payload["result"]["references"].as_array().map(Vec::len),
        Some(1)
    );

    // Redelivered: answered from the record, with the same result, not run again.
    command(
        &broker,
        "gw-ussd",
        "u-1",
        "ussd",
        json!({"code": "*102#", "answers": ["1"]}),
    );
    let m = support::final_status(&mut sub, "gw-ussd", "u-1");
    assert_eq!(
        m.payload["result"]["replies"][1],
        "Data left: 512.5 MB, valid for 12 days."
    );
    command(
        &broker,
        "gw-ussd",
        "s-1",
        "sms_send",
        json!({"to": "+31612345678", "text": "Hello"}),
    );
    support::final_status(&mut sub, "gw-ussd", "s-1");
    let lines = std::fs::read_to_string(&journal).unwrap();
    let count = |p: &str| lines.lines().filter(|l| l.starts_with(p)).count();
    assert_eq!(count("AT+CUSD=1,\"*102#\""), 1, "{lines}");
    assert_eq!(count("AT+CMGS="), 1, "{lines}");
    assert_eq!(count("PDU "), 1, "{lines}");
}

#[test]
fn a_prepaid_balance_read_by_ussd_lands_in_the_row_beside_the_platforms_figures() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = modem(&[]);
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-bal/#");
    // The platform's record allows a balance query every 6 hours.
    broker.publish(
        &format!("simgate/v1/gw-bal/sim/{SIM}/platform"),
        &[
            "-r",
            "-m",
            &json!({"v":1,"sim_type":"Prepaid","data_left_mb":1000,"operator_balance_hours":6})
                .to_string(),
        ],
    );
    let _run = Proc::spawn("simgate run", &mut agent(&broker, "gw-bal", &state, &port));
    let m = sub.expect_within(
        "the row with the operator's estimate",
        Duration::from_secs(60),
        |m| {
            m.topic.ends_with(&format!("sim/{SIM}/state"))
                && m.payload["operator_estimate"].is_object()
        },
    );
    let e = &m.payload["operator_estimate"];
    assert_eq!(e["data_left_mb"], 512.5, "{}", m.payload);
    assert_eq!(e["days_left"], 12.0, "{}", m.payload);
    assert_eq!(e["source"], "operator");
    assert!(e["at"]
        .as_u64()
        .is_some_and(|t| t + 600 > support::unix_now()));
    // Beside the platform's figures, never over them.
    assert_eq!(
        m.payload["platform"]["data_left_mb"], 1000.0,
        "{}",
        m.payload
    );
}

#[test]
fn simgate_ussd_decodes_a_ucs2_reply_and_reads_a_balance() {
    let emu = modem(&[]);
    let out = std::process::Command::new(support::simgate_bin())
        .args(["ussd", "--port", &emu.port, "*101#"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Остаток: 512,5 МБ, ещё 12 дн."
    );
    let out = std::process::Command::new(support::simgate_bin())
        .args(["ussd", "--port", &emu.port, "--balance", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["data_left_mb"], 512.5, "{v}");
    assert_eq!(v["days_left"], 12.0, "{v}");
    // CSCS? and the +CUSD: the AT cost of a balance query, after identification.
    assert_eq!(v["at_lines"], 2, "{v}");
}
