//! The guided SIM swap (MQTT.md, "Swap") on the real stack: an emulated dual-slot
//! Quectel modem on a pty, mosquitto, `simgate run`, and `simgate swap` or the
//! platform's `swap` command. A slot swap that succeeds; one whose new SIM never
//! registers and is rolled back; one interrupted by kill -9 and rolled back at the next
//! start; bad parameters refused by name. Both rows are Pending while a swap runs, and
//! never after it.

use crate::support;
use support::{final_status as outcome, unix_now as now};

use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{Broker, Modem, Msg, Proc, Sub, TempDir};

const FIRST: &str = "8901260886258128535";
const SECOND: &str = "89314404000000000019";

/// An agent on `port` with a swap register limit of `register` seconds; a long poll so
/// the AT commands counted during a swap are the swap's.
fn agent(broker: &Broker, agent: &str, state: &TempDir, port: &str, register: u64) -> Proc {
    agent_with(broker, agent, state, port, register, "")
}

/// As `agent`, with more lines of `[modems]`.
fn agent_with(
    broker: &Broker,
    agent: &str,
    state: &TempDir,
    port: &str,
    register: u64,
    modems: &str,
) -> Proc {
    let config = state.path().join("simgate.toml");
    std::fs::write(
        &config,
        format!("[modems]\npoll_secs = 3600\nswap_register_secs = {register}\n{modems}"),
    )
    .unwrap();
    Proc::spawn(
        "simgate run",
        support::modem_agent(&broker.url(), agent, state.path(), port)
            .arg("--config")
            .arg(&config),
    )
}

fn send(broker: &Broker, agent: &str, id: &str, params: serde_json::Value) {
    let cmd = json!({"v":1,"id":id,"iccid":FIRST,"action":"swap","params":params,"expires_at":now() + 300});
    support::send_command(broker, agent, &cmd);
}

/// The last row published for `iccid` among everything seen so far.
fn last_row(sub: &Sub, iccid: &str) -> serde_json::Value {
    let topic = format!("/sim/{iccid}/state ");
    sub.lines
        .seen
        .iter()
        .rev()
        .find(|l| l.contains(&topic))
        .and_then(|l| serde_json::from_str(l.splitn(3, ' ').nth(2)?).ok())
        .unwrap_or_else(|| panic!("no row for {iccid}"))
}

fn rows_pending(sub: &Sub, iccid: &str) -> bool {
    let topic = format!("/sim/{iccid}/state ");
    sub.lines
        .seen
        .iter()
        .any(|l| l.contains(&topic) && l.contains("\"status\":\"Pending\""))
}

/// The modem's command count so far (`count` on the emulator's stdin).
fn at_count(emu: &mut Modem) -> u64 {
    emu.control("count");
    let l = emu
        .lines
        .expect("the emulator's count", Duration::from_secs(5), |l| {
            l.starts_with("commands ")
        });
    l["commands ".len()..].trim().parse().unwrap()
}

/// Seconds per step, from the step events seen: the figures of the closing note.
fn step_secs(sub: &Sub, id: &str) -> Vec<(String, f64)> {
    sub.lines
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.splitn(3, ' ').nth(2)?).ok())
        .filter(|p| p["type"] == "swap_step" && p["id"] == id && p["secs"].is_number())
        .map(|p| {
            (
                p["step"].as_str().unwrap().to_string(),
                p["secs"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_slot_swap_through_simgate_swap_commits_old_to_new_and_bad_params_are_refused_by_name() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-sw/#");
    let _run = agent(&broker, "gw-sw", &state, &port, 10);
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });

    for (id, params, field) in [
        ("bad-0", json!({"to_slot": 0}), "params.to_slot"),
        ("bad-9", json!({"to_slot": 9}), "params.to_slot"),
        ("bad-s", json!({"to_slot": "2"}), "params.to_slot"),
        (
            "bad-both",
            json!({"to_slot": 2, "expect_iccid": SECOND}),
            "params",
        ),
        ("bad-none", json!({}), "params: missing"),
        ("bad-key", json!({"slot": 2}), "params.slot"),
        (
            "bad-iccid",
            json!({"expect_iccid": "12345"}),
            "params.expect_iccid",
        ),
        (
            "bad-same",
            json!({"to_slot": 1}),
            "params.to_slot: the SIM already sits in slot 1",
        ),
    ] {
        send(&broker, "gw-sw", id, params);
        let m = outcome(&mut sub, "gw-sw", id);
        assert_eq!(m.payload["status"], "failed", "{}", m.payload);
        assert_eq!(m.payload["code"], "invalid_field", "{}", m.payload);
        let reason = m.payload["reason"].as_str().unwrap();
        assert!(reason.starts_with(field), "{id}: {reason}");
    }
    assert!(!rows_pending(&sub, FIRST), "a refused swap set Pending");

    let before = at_count(&mut emu);
    let t = Instant::now();
    let out = Command::new(support::simgate_bin())
        .args(["swap", "--broker", &broker.url(), "--agent-id", "gw-sw"])
        .args([
            "--port",
            &port,
            "--to-slot",
            "2",
            "--id",
            "sw-ok",
            "--wait",
            "60",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let total = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "simgate swap failed: {text}");
    for step in ["prepare", "act", "detect", "verify", "commit"] {
        assert!(
            text.contains(&format!(": {step} done")),
            "step {step} not shown live: {text}"
        );
    }
    let m = outcome(&mut sub, "gw-sw", "sw-ok");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    let swapped: Vec<serde_json::Value> = sub
        .lines
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.splitn(3, ' ').nth(2)?).ok())
        .filter(|p| p["type"] == "swapped")
        .collect();
    assert_eq!(swapped.len(), 1, "one swapped event: {swapped:?}");
    assert_eq!(swapped[0]["iccid"], SECOND);
    assert_eq!(swapped[0]["replaced"], FIRST);
    assert_eq!(swapped[0]["location"]["slot"], 2);
    // Both rows were Pending during the swap, and are not once it committed.
    assert!(rows_pending(&sub, FIRST), "the old row was never Pending");
    assert!(rows_pending(&sub, SECOND), "the new row was never Pending");
    let old = last_row(&sub, FIRST);
    let new = last_row(&sub, SECOND);
    assert_eq!(old["present"], false, "{old}");
    assert!(
        old.get("pending").is_none() && old["status"] != "Pending",
        "{old}"
    );
    assert_eq!(new["present"], true, "{new}");
    assert_eq!(new["in_session"], "yes", "{new}");
    assert_eq!(new["location"]["slot"], 2, "{new}");
    assert!(
        new.get("pending").is_none() && new["status"] != "Pending",
        "{new}"
    );
    eprintln!(
        "figures: slot swap: {} AT command lines; steps {:?}; {:.2} s end to end with simgate swap",
        at_count(&mut emu) - before,
        step_secs(&sub, "sw-ok"),
        total.as_secs_f64()
    );
}

// Guards a swap's verify bringing the data session up itself (a +CGACT through the
// supervisor's handle) on a port ModemManager keeps, where a command's or a rule's
// resume is refused: the swap's resume now goes through the same door
// (src/daemon/work.rs `act_on_modem`), and the session is left to ModemManager.
#[test]
fn on_a_port_shared_with_modemmanager_a_slot_swap_commits_and_leaves_the_data_session_alone() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let journal = state.path().join("modem.journal");
    let emu = Modem::start_with(
        "quectel-ec2x",
        &["--journal", journal.to_str().expect("a UTF-8 temp path")],
    );
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-swmm/#");
    let shared = format!("shared_with_modemmanager = [{port:?}]\n");
    let _run = agent_with(&broker, "gw-swmm", &state, &port, 10, &shared);
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });
    send(&broker, "gw-swmm", "sw-mm", json!({"to_slot": 2}));
    let m = outcome(&mut sub, "gw-swmm", "sw-mm");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    let verify = sub
        .lines
        .seen
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.splitn(3, ' ').nth(2)?).ok())
        .find(|p| p["type"] == "swap_step" && p["step"] == "verify" && p["ok"] == true)
        .expect("the verify step's end");
    assert!(
        verify["detail"]
            .as_str()
            .is_some_and(|d| d.contains("data session left to ModemManager")),
        "{verify}"
    );
    let lines = std::fs::read_to_string(&journal).unwrap();
    let session: Vec<&str> = lines.lines().filter(|l| l.contains("+CGACT=")).collect();
    assert!(
        session.is_empty(),
        "simgate moved the data session ModemManager keeps: {session:?}"
    );
}

#[test]
fn a_new_sim_that_never_registers_is_rolled_back_to_the_old_slot() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    emu.control("slot 2 noreg");
    let mut sub = broker.subscribe("simgate/v1/gw-rb/#");
    let _run = agent(&broker, "gw-rb", &state, &port, 3);
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });
    let before = at_count(&mut emu);
    send(&broker, "gw-rb", "sw-rb", json!({"to_slot": 2}));
    let m = outcome(&mut sub, "gw-rb", "sw-rb");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "failed", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("verify: SIM {SECOND} did not register within 3 s")),
        "{reason}"
    );
    assert!(reason.contains("rolled back (SIM "), "{reason}");
    let swapped: Vec<&String> = sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("\"type\":\"swapped\""))
        .collect();
    assert!(
        swapped.is_empty(),
        "a rolled-back swap was reported swapped: {swapped:?}"
    );
    assert!(rows_pending(&sub, FIRST) && rows_pending(&sub, SECOND));
    let old = last_row(&sub, FIRST);
    let new = last_row(&sub, SECOND);
    assert_eq!(old["present"], true, "{old}");
    assert_eq!(old["in_session"], "yes", "{old}");
    assert_eq!(old["location"]["slot"], 1, "{old}");
    assert!(old["status"] != "Pending", "{old}");
    assert_eq!(new["present"], false, "{new}");
    assert!(new["status"] != "Pending", "{new}");
    eprintln!(
        "figures: rolled-back slot swap: {} AT command lines; steps {:?}",
        at_count(&mut emu) - before,
        step_secs(&sub, "sw-rb")
    );
}

#[test]
fn a_swap_killed_mid_verify_is_rolled_back_at_the_next_start_and_never_left_pending() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    emu.control("slot 2 noreg");
    let mut sub = broker.subscribe("simgate/v1/gw-k9/#");
    // A long limit: the kill lands while verify waits.
    let mut run = agent(&broker, "gw-k9", &state, &port, 600);
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });
    send(&broker, "gw-k9", "sw-k9", json!({"to_slot": 2}));
    sub.expect("verify under way", |m| {
        m.payload["type"] == "swap_step"
            && m.payload["step"] == "verify"
            && m.payload.get("ok").is_none()
    });
    for iccid in [FIRST, SECOND] {
        if !rows_pending(&sub, iccid) {
            sub.expect("both rows Pending", |m| {
                m.topic.ends_with(&format!("sim/{iccid}/state")) && m.payload["status"] == "Pending"
            });
        }
    }
    run.kill9();

    // The next start finds the swap's record and rolls it back.
    let _again = agent(&broker, "gw-k9", &state, &port, 3);
    let m = outcome(&mut sub, "gw-k9", "sw-k9");
    check_k9(&m, &sub);
}

fn check_k9(m: &Msg, sub: &Sub) {
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("verify: simgate restarted during this step"),
        "{reason}"
    );
    assert!(reason.contains("rolled back (SIM "), "{reason}");
    let old = last_row(sub, FIRST);
    let new = last_row(sub, SECOND);
    assert_eq!(old["present"], true, "{old}");
    assert_eq!(old["location"]["slot"], 1, "{old}");
    assert!(old["status"] != "Pending", "{old}");
    assert!(new["status"] != "Pending", "{new}");
    assert_eq!(new["present"], false, "{new}");
}

#[test]
fn a_physical_swap_waits_for_the_technician_rolls_back_a_wrong_sim_and_commits_the_expected_one() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-ph/#");
    let _run = agent(&broker, "gw-ph", &state, &port, 10);
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });
    let asked = |sub: &mut Sub, id: &str, step: &str| {
        let id = id.to_string();
        let step = step.to_string();
        sub.expect(&format!("{id}: the technician asked at {step}"), move |m| {
            m.payload["type"] == "swap_step"
                && m.payload["id"] == id.as_str()
                && m.payload["step"] == step.as_str()
                && m.payload.get("ok").is_none()
        });
    };

    // The wrong SIM goes in: detect fails, the old SIM is asked back and verified.
    send(&broker, "gw-ph", "ph-1", json!({"expect_iccid": SECOND}));
    asked(&mut sub, "ph-1", "act");
    emu.control("esim");
    asked(&mut sub, "ph-1", "rollback");
    emu.control("insert");
    let m = outcome(&mut sub, "gw-ph", "ph-1");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "detect: SIM 89883030000000000429 inserted, expected {SECOND}"
        )),
        "{reason}"
    );
    assert!(reason.contains("rolled back (SIM "), "{reason}");

    // The expected SIM: committed.
    let before = at_count(&mut emu);
    send(&broker, "gw-ph", "ph-2", json!({"expect_iccid": SECOND}));
    asked(&mut sub, "ph-2", "act");
    emu.control("swap");
    let m = outcome(&mut sub, "gw-ph", "ph-2");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    let swapped = sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("\"type\":\"swapped\""))
        .count();
    assert_eq!(swapped, 1, "one swapped event, for ph-2");
    let old = last_row(&sub, FIRST);
    let new = last_row(&sub, SECOND);
    assert_eq!(old["present"], false, "{old}");
    assert!(old["status"] != "Pending", "{old}");
    assert_eq!(new["present"], true, "{new}");
    assert!(new["status"] != "Pending", "{new}");
    eprintln!(
        "figures: physical swap: {} AT command lines (polling while the technician works); steps {:?}",
        at_count(&mut emu) - before,
        step_secs(&sub, "ph-2")
    );
}
