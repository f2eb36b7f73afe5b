//! `simgate esim`: an eUICC's profiles listed and changed through real pcscd + vpcd, the
//! virtual eUICC (devices/cards/euicc.toml) changing them as a real one does.

use crate::support;

use std::process::Output;
use support::Pcsc;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn esim(pcsc: &Pcsc, args: &[&str]) -> Output {
    pcsc.simgate().arg("esim").args(args).output().unwrap()
}

fn ok(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn state_of(list: &serde_json::Value, iccid: &str) -> serde_json::Value {
    list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["iccid"] == iccid)
        .map_or(serde_json::Value::Null, |p| p["state"].clone())
}

const FIRST: &str = "8949440000000000016";
const SECOND: &str = "8949440000000000024";

#[test]
fn profiles_are_listed_switched_named_and_deleted_through_pcscd() {
    let pcsc = Pcsc::start();
    let _card = pcsc.insert(0, "euicc.toml");

    let l = ok(&esim(&pcsc, &["list", "--json"]));
    assert_eq!(l["eid"], "89049032123451234512345678901235");
    assert_eq!(l["info"]["sgp22_version"], "2.2.2");
    assert_eq!(l["info"]["free_nvm"], 245760);
    assert_eq!(
        l["info"]["ci_pkids_verification"][0],
        "F54172BDF98A95D65CBEB88A38A1C11D800A85C3"
    );
    let p = &l["profiles"][0];
    assert_eq!(
        (
            &p["iccid"],
            &p["state"],
            &p["name"],
            &p["provider"],
            &p["class"]
        ),
        (
            &FIRST.into(),
            &"enabled".into(),
            &"Telekom IoT".into(),
            &"Telekom".into(),
            &"operational".into()
        )
    );
    assert_eq!(l["profiles"][1]["nickname"], "travel");
    assert_eq!(
        l["apdus"], 8,
        "SELECT, 3 ES10 requests with GET RESPONSE, SELECT MF"
    );

    // Enable the second: the first is disabled, the SIM's ICCID is the second's.
    let o = ok(&esim(&pcsc, &["enable", SECOND, "--json"]));
    assert_eq!(o["enabled_after"], SECOND);
    assert_eq!(
        o["enabled_before"], FIRST,
        "the profile the enable replaced"
    );
    assert_eq!(o["notifications"].as_array().unwrap().len(), 2);
    let l = ok(&esim(&pcsc, &["list", "--json"]));
    assert_eq!(
        (state_of(&l, FIRST), state_of(&l, SECOND)),
        ("disabled".into(), "enabled".into())
    );
    let read = ok(&pcsc.simgate().args(["read", "--json"]).output().unwrap());
    assert_eq!(read[0]["iccid"], SECOND, "{read}");

    // Deleting the enabled profile is refused with the reason, before anything is sent.
    let out = esim(&pcsc, &["delete", SECOND, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is enabled and cannot be deleted: disable it"),
        "{}",
        stderr(&out)
    );
    // Without a terminal and without --yes, nothing is deleted.
    let out = esim(&pcsc, &["delete", FIRST]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("confirm with --yes"),
        "{}",
        stderr(&out)
    );

    // A profile already in the state asked for: nothing to do, and no failure (exit
    // 0, as the README's exit codes say), the card's answer in words, never a status
    // word.
    let out = esim(&pcsc, &["disable", FIRST]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("DisableProfile refused: the profile is not enabled")
            && said.contains("nothing to do"),
        "{said}"
    );
    let o = ok(&esim(&pcsc, &["enable", SECOND, "--json"]));
    assert_eq!(o["done"], "nothing", "{o}");
    assert!(
        o["reason"].as_str().unwrap().contains("already enabled"),
        "{o}"
    );

    ok(&esim(&pcsc, &["nickname", SECOND, "abroad", "--json"]));
    let o = ok(&esim(&pcsc, &["delete", FIRST, "--yes", "--json"]));
    assert_eq!(o["profiles"].as_array().unwrap().len(), 1);
    let l = ok(&esim(&pcsc, &["list", "--json"]));
    assert_eq!(state_of(&l, FIRST), serde_json::Value::Null);
    assert_eq!(l["profiles"][0]["nickname"], "abroad");

    // Every operation left its notification: disable, enable, delete.
    let n = ok(&esim(&pcsc, &["notifications", "--json"]));
    let events: Vec<&str> = n
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["disable", "enable", "delete"]);
    assert_eq!(n[2]["iccid"], FIRST);
    assert_eq!(n[2]["address"], "smdp.telekom.example");
}

#[test]
fn bad_cards_give_clear_errors_and_stay_readable() {
    let pcsc = Pcsc::start();
    let _plain = pcsc.insert(0, "usim.toml");
    let _drops = pcsc.insert(1, "euicc-drops-channel.toml");

    let out = esim(&pcsc, &["list", "--reader", &pcsc.reader(0)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not an eUICC"), "{}", stderr(&out));

    let out = esim(&pcsc, &["list", "--reader", &pcsc.reader(1)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("dropped the channel mid-operation") && !err.contains("status 6"),
        "{err}"
    );
    // Left on its basic channel at the MF: the next read and listing work.
    let read = ok(&pcsc
        .simgate()
        .args(["read", "--json", "--reader", &pcsc.reader(1)])
        .output()
        .unwrap());
    assert_eq!(read[0]["iccid"], FIRST);
    ok(&esim(
        &pcsc,
        &["list", "--json", "--reader", &pcsc.reader(1)],
    ));

    // An ICCID argument that is no ICCID: a usage error naming it.
    let out = esim(&pcsc, &["enable", "12345", "--reader", &pcsc.reader(1)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ICCID \"12345\""), "{}", stderr(&out));
}

#[test]
fn a_malformed_es10_answer_is_named() {
    let pcsc = Pcsc::start();
    let _card = pcsc.insert(0, "euicc-malformed-es10.toml");
    let out = esim(&pcsc, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("malformed answer to GetEUICCData"),
        "{}",
        stderr(&out)
    );
    let read = ok(&pcsc.simgate().args(["read", "--json"]).output().unwrap());
    assert_eq!(read[0]["iccid"], FIRST);
}

/// The platform switches a reader's eUICC to its other profile through the exactly-once
/// command path: the state row carries the profile list, the switch is reported as the
/// swap it is (old ICCID → new, same reader), and the new row lists the new profile
/// enabled.
#[test]
fn the_platform_switches_profiles_and_sees_the_swap() {
    use std::process::Stdio;
    use support::{Broker, Proc, TempDir};
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-esim";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let _card = pcsc.insert(0, "euicc.toml");
    let first_topic = format!("simgate/v1/{agent}/sim/{FIRST}/state");
    let row = sub.expect("the eUICC's row", |m| {
        m.topic == first_topic && m.payload["present"] == true
    });
    let profiles = row.payload["esim_profiles"]
        .as_array()
        .expect("a profile list")
        .clone();
    assert_eq!(profiles.len(), 2, "{}", row.payload);
    assert_eq!(profiles[1]["provider"], "Roamer");

    // A bad profile ICCID is refused by the contract, before anything runs.
    let cmd = |id: &str, action: &str, params: serde_json::Value| {
        serde_json::json!({"v":1,"id":id,"iccid":FIRST,"action":action,
            "params":params,"expires_at":support::unix_now()+120})
    };
    support::send_command(
        &broker,
        agent,
        &cmd("e-0", "esim_enable", serde_json::json!({"profile":"123"})),
    );
    let st = support::final_status(&mut sub, agent, "e-0");
    assert_eq!(
        (&st.payload["status"], &st.payload["code"]),
        (&"failed".into(), &"invalid_field".into())
    );

    support::send_command(
        &broker,
        agent,
        &cmd("e-1", "esim_enable", serde_json::json!({"profile":SECOND})),
    );
    // The eUICC's pending notifications go to the platform, signed (SGP.22 §3.5).
    let note = sub.expect("the disable's notification", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "esim_notification"
    });
    assert_eq!(
        (
            &note.payload["operation"],
            &note.payload["profile"],
            &note.payload["address"]
        ),
        (
            &"disable".into(),
            &FIRST.into(),
            &"smdp.telekom.example".into()
        )
    );
    assert!(
        note.payload["notification"]
            .as_str()
            .unwrap()
            .starts_with("30"),
        "{}",
        note.payload
    );
    let seq = note.payload["number"].as_u64().unwrap();
    let swapped = sub.expect("the profile switch as a swap", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "swapped"
    });
    assert_eq!(
        (&swapped.payload["iccid"], &swapped.payload["replaced"]),
        (&SECOND.into(), &FIRST.into())
    );
    let second_topic = format!("simgate/v1/{agent}/sim/{SECOND}/state");
    let row = sub.expect("the new profile's row", |m| {
        m.topic == second_topic && m.payload["present"] == true
    });
    let enabled: Vec<&str> = row.payload["esim_profiles"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "enabled")
        .map(|p| p["iccid"].as_str().unwrap())
        .collect();
    assert_eq!(enabled, [SECOND]);
    let st = support::final_status(&mut sub, agent, "e-1");
    assert_eq!(st.payload["status"], "successful", "{}", st.payload);

    // The same command id again: answered from its record, not run twice.
    support::send_command(
        &broker,
        agent,
        &cmd("e-1", "esim_enable", serde_json::json!({"profile":SECOND})),
    );
    let again = support::final_status(&mut sub, agent, "e-1");
    assert_eq!(again.payload["status"], "successful");
    let l = ok(&esim(&pcsc, &["notifications", "--json"]));
    assert_eq!(l.as_array().unwrap().len(), 2, "one switch only: {l}");

    // The platform acknowledges the first: only then is it removed from the eUICC.
    let ack = serde_json::json!({"v":1,"id":"n-1","iccid":SECOND,"action":"esim_notification_ack",
        "params":{"seq":seq},"expires_at":support::unix_now()+120});
    support::send_command(&broker, agent, &ack);
    let st = support::final_status(&mut sub, agent, "n-1");
    assert_eq!(st.payload["status"], "successful", "{}", st.payload);
    let l = ok(&esim(&pcsc, &["notifications", "--json"]));
    let left: Vec<u64> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["seq"].as_u64().unwrap())
        .collect();
    assert!(left.len() == 1 && left[0] != seq, "{l}");
}

/// Regression: the eUICC switched profiles, then refused RetrieveNotificationsList
/// (BF2B), and the command was reported `failed` with the old row kept and no swap —
/// while MQTT.md says `failed` means the change did not verify. The outcome follows
/// what the card did (verified by listing): `successful`, the swap reported, and the
/// notifications' problem in an `error` event beside it, after the fallback through
/// ListNotification (BF28) named the ones left on the card.
#[test]
fn a_switch_whose_notifications_are_refused_is_successful_with_the_swap_and_the_problem_beside_it()
{
    use std::process::Stdio;
    use support::{Broker, Proc, TempDir};
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-esim-bf2b";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let _card = pcsc.insert(0, "euicc-refuses-bf2b.toml");
    let first_topic = format!("simgate/v1/{agent}/sim/{FIRST}/state");
    sub.expect("the eUICC's row", |m| {
        m.topic == first_topic && m.payload["present"] == true
    });
    support::send_command(
        &broker,
        agent,
        &serde_json::json!({"v":1,"id":"e-1","iccid":FIRST,"action":"esim_enable",
            "params":{"profile":SECOND},"expires_at":support::unix_now()+120}),
    );
    let st = support::final_status(&mut sub, agent, "e-1");
    assert_eq!(st.payload["status"], "successful", "{}", st.payload);
    let seen = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        sub.lines
            .seen
            .iter()
            .filter_map(|l| support::parse_msg(l))
            .any(|m| m.topic.ends_with("/events") && pred(&m.payload))
    };
    assert!(
        seen(&|e| e["type"] == "swapped" && e["iccid"] == SECOND && e["replaced"] == FIRST),
        "no swap reported: {:#?}",
        sub.lines.seen
    );
    assert!(
        seen(&|e| {
            e["type"] == "error"
                && e["iccid"] == FIRST
                && e["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("eSIM notifications") && r.contains("[1, 2]"))
        }),
        "no notification problem beside the outcome: {:#?}",
        sub.lines.seen
    );
    // The card says the same: the new profile enabled, the switch's two notifications
    // (a disable, an enable) still pending on it.
    let l = ok(&esim(&pcsc, &["list", "--json"]));
    assert_eq!(state_of(&l, SECOND), "enabled", "{l}");
    let n = ok(&esim(&pcsc, &["notifications", "--json"]));
    assert_eq!(n.as_array().map(Vec::len), Some(2), "{n}");
}

/// The same operations through an emulated modem's +CCHO/+CGLA: the listing, a switch
/// verified and followed by the family's radio cycle, after which the modem reports the
/// new profile's ICCID; AT lines counted.
#[test]
fn profiles_switch_through_a_modems_cgla() {
    let modem = support::Modem::start_with("quectel-ec2x", &["--esim"]);
    let esim = |args: &[&str]| {
        std::process::Command::new(support::simgate_bin())
            .arg("esim")
            .args(args)
            .args(["--port", &modem.port, "--json"])
            .env("RUST_LOG", "simgate=debug")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let l = ok(&esim(&["list"]));
    assert_eq!(l["eid"], "89049032123451234512345678901235");
    assert_eq!(l["profiles"].as_array().unwrap().len(), 2, "{l}");
    assert_eq!(l["profiles"][0]["state"], "enabled");
    let old = l["profiles"][0]["iccid"].as_str().unwrap().to_string();
    let new = l["profiles"][1]["iccid"].as_str().unwrap().to_string();
    // +CCHO, 3 ES10 requests (the family's +CGLA does GET RESPONSE), +CCHC.
    assert_eq!(l["at_lines"], 5, "{l}");

    let o = ok(&esim(&["enable", &new]));
    assert_eq!(o["enabled_after"], new.as_str());
    assert_eq!(o["enabled_before"], old.as_str());
    // +CCHO, GetProfilesInfo, EnableProfile, GetProfilesInfo, ListNotification, +CCHC,
    // +CFUN=0, +CFUN=1.
    assert_eq!(o["at_lines"], 8, "{o}");
    let info = ok(&std::process::Command::new(support::simgate_bin())
        .args(["modem", "info", "--port", &modem.port, "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap());
    assert_eq!(info["sim"]["iccid"], new.as_str(), "{info}");

    let out = esim(&["delete", &new, "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is enabled and cannot be deleted"));
    let n = ok(&esim(&["notifications"]));
    assert_eq!(n.as_array().unwrap().len(), 2, "{n}");
    let _ = old;
}

/// The platform switches the profile of an eUICC in a modem: through the supervisor's
/// +CCHO/+CGLA, the family's radio cycle, the SIM change followed as a swap, the new
/// profile registered before `successful`.
#[test]
fn the_platform_switches_a_modems_profile() {
    use support::{Broker, Proc, TempDir};
    let broker = Broker::start();
    let modem = support::Modem::start_with("quectel-ec2x", &["--esim"]);
    let state = TempDir::new("state");
    let agent = "gw-esim-modem";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent(&broker.url(), agent, state.path(), &modem.port),
    );
    let old = "89883030000000000429";
    let new = "89883030000000000437";
    sub.expect("the eSIM's row", |m| {
        m.topic == format!("simgate/v1/{agent}/sim/{old}/state") && m.payload["present"] == true
    });
    support::send_command(
        &broker,
        agent,
        &serde_json::json!({"v":1,"id":"m-1","iccid":old,"action":"esim_enable",
            "params":{"profile":new},"expires_at":support::unix_now()+120}),
    );
    let swapped = sub.expect("the switch as a swap", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "swapped"
    });
    assert_eq!(
        (&swapped.payload["iccid"], &swapped.payload["replaced"]),
        (&new.into(), &old.into())
    );
    let st = support::final_status(&mut sub, agent, "m-1");
    assert_eq!(st.payload["status"], "successful", "{}", st.payload);
}

/// Guards `modems.euicc_transport` in the daemon: a modem whose firmware refuses +CGLA
/// although its family has it is still seen as an eSIM and switched, through +CSIM,
/// once its port is set so.
#[test]
fn a_port_set_to_csim_is_read_and_switched_where_its_firmware_refuses_cgla() {
    use support::{Broker, Proc, TempDir};
    let broker = Broker::start();
    let modem = support::Modem::start_with("quectel-ec2x", &["--esim", "--refuse", "AT+CGLA"]);
    let state = TempDir::new("state");
    let agent = "gw-esim-csim";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            agent,
            state.path(),
            &modem.port,
            &format!("[modems.euicc_transport]\n\"{}\" = \"csim\"\n", modem.port),
        ),
    );
    let old = "89883030000000000429";
    let new = "89883030000000000437";
    let row = sub.expect("the eSIM's row", |m| {
        m.topic == format!("simgate/v1/{agent}/sim/{old}/state") && m.payload["present"] == true
    });
    assert_eq!(row.payload["form_factor"], "esim", "{}", row.payload);
    support::send_command(
        &broker,
        agent,
        &serde_json::json!({"v":1,"id":"c-1","iccid":old,"action":"esim_enable",
            "params":{"profile":new},"expires_at":support::unix_now()+120}),
    );
    let st = support::final_status(&mut sub, agent, "c-1");
    assert_eq!(st.payload["status"], "successful", "{}", st.payload);
}
