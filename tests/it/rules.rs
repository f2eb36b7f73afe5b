//! Local rules and refills on the real stack (issue 10): an emulated modem on a pty, a
//! private mosquitto that goes away and comes back, simgate killed with -9.

use crate::support;
use support::{final_status as outcome, unix_now as now};

use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Lines, Modem, Msg, Proc, TempDir};

const SIM: &str = "8901260886258128535";

fn record(broker: &Broker, agent: &str, rec: Value) {
    broker.publish(
        &format!("simgate/v1/{agent}/sim/{SIM}/platform"),
        &["-r", "-m", &rec.to_string()],
    );
}

fn command(broker: &Broker, agent: &str, id: &str, action: &str, params: Value) {
    let cmd =
        json!({"v":1,"id":id,"iccid":SIM,"action":action,"params":params,"expires_at":now() + 300});
    support::send_command(broker, agent, &cmd);
}

fn agent(broker: &Broker, agent: &str, state: &TempDir, port: &str) -> (Proc, Lines) {
    let mut run = Proc::spawn(
        "simgate run",
        support::modem_agent_with(
            &broker.url(),
            agent,
            state.path(),
            port,
            "[modems]\npoll_secs = 5\n",
        )
        .args(["--log-format", "json"])
        .stderr(Stdio::piped()),
    );
    let log = Lines::new(run.child.stderr.take().unwrap());
    (run, log)
}

fn is_event(m: &Msg, kind: &str) -> bool {
    m.topic.ends_with("/events") && m.payload["type"] == kind
}

// Guards local rules being cached and never evaluated, and a firing lost or repeated
// across an outage and a kill -9.
#[test]
fn a_data_cap_suspends_a_modem_sim_offline_and_its_firing_reaches_the_platform_once() {
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let mut sub = broker.subscribe_with("simgate/v1/gw-cap1/#", &["-c", "-i", "cap1-platform"]);
    let (mut run, mut log) = agent(&broker, "gw-cap1", &state, &emu.port);
    let row = format!("simgate/v1/gw-cap1/sim/{SIM}/state");
    sub.expect("the SIM's row", |m| {
        m.topic == row && m.payload["present"] == true
    });
    record(
        &broker,
        "gw-cap1",
        json!({"v":1,"status":"Active","rules":[
            {"id":"cap","trigger":"data_used_mb","above":1,"action":"suspend"},
            {"id":"bad","trigger":"data_used_mb","action":"suspend"}
        ]}),
    );
    let bad = sub.expect("the bad rule refused by name", |m| is_event(m, "error"));
    assert_eq!(bad.payload["reason"], "rule bad: above: missing threshold");

    // The broker goes away; the SIM uses data; the rule fires and suspends meanwhile.
    broker.stop_graceful();
    log.drain();
    emu.control("traffic 600000 600000");
    log.expect("the firing applied offline", Duration::from_secs(30), |l| {
        l.contains("firing done")
    });
    // A kill -9 after the firing, before the platform heard of it.
    run.kill9();
    broker.restart();
    let (_run, _log) = agent(&broker, "gw-cap1", &state, &emu.port);

    let fired = sub.expect("the firing after the outage", |m| is_event(m, "rule_fired"));
    assert_eq!(fired.payload["id"], format!("{SIM}.cap.1"));
    assert_eq!(fired.payload["rule"], "cap");
    assert_eq!(fired.payload["trigger"], "data_used_mb");
    assert!(fired.payload["facts"]["data_used_mb"].as_f64().unwrap() > 1.0);
    assert_eq!(
        fired.payload["actions"],
        json!([{"action":"suspend","outcome":"done"}])
    );
    let down = sub.expect("the SIM's session down", |m| {
        m.topic == row && m.payload["in_session"] == "no"
    });
    assert_eq!(down.payload["present"], true);
    // Not repeated: the next usage polls find the rule already fired. A refresh round
    // trip later, no second firing has arrived.
    command(&broker, "gw-cap1", "cap1-refresh", "refresh", Value::Null);
    outcome(&mut sub, "gw-cap1", "cap1-refresh");
    let firings: std::collections::BTreeSet<String> = sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("\"type\":\"rule_fired\""))
        .filter_map(|l| serde_json::from_str::<Value>(l.splitn(3, ' ').nth(2)?).ok())
        .map(|v| v["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(firings.len(), 1, "{firings:?}");
}

// Guards refill being refused as unsupported, and a refill moving the balance twice.
#[test]
fn a_low_balance_asks_for_a_refill_and_the_refill_applied_once_lifts_the_suspension() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let mut sub = broker.subscribe("simgate/v1/gw-low/#");
    let (mut run, _log) = agent(&broker, "gw-low", &state, &emu.port);
    let row = format!("simgate/v1/gw-low/sim/{SIM}/state");
    sub.expect("the SIM's row", |m| {
        m.topic == row && m.payload["present"] == true
    });
    record(
        &broker,
        "gw-low",
        json!({"v":1,"data_left_mb":10,"days_left":30,"rules":[
            {"id":"low","trigger":"data_left_mb","below":50,"actions":["suspend","refill"],
             "params":{"amount_mb":1024}}
        ]}),
    );
    let ask = sub.expect("the refill request", |m| is_event(m, "refill_requested"));
    let request = ask.payload["request_id"].as_str().unwrap().to_string();
    assert_eq!(request, format!("{SIM}.low.1"));
    assert_eq!(ask.payload["amount_mb"], 1024.0);
    let fired = sub.expect("the firing", |m| is_event(m, "rule_fired"));
    assert_eq!(
        fired.payload["actions"],
        json!([{"action":"suspend","outcome":"done"},
               {"action":"refill","amount_mb":1024.0,"outcome":"requested"}])
    );
    // Down, and saying which rule holds it (a refill lifts a rule's suspension).
    let row_down = sub.expect("the row, suspended by the rule", |m| {
        m.topic == row
            && m.payload["in_session"] == "no"
            && m.payload["suspended_by"]["rule"] == "low"
    });
    assert!(
        row_down.payload["estimate"]["data_left_mb"]
            .as_f64()
            .unwrap()
            <= 10.0
    );

    // The platform answers with the refill, twice (a retry), once more after a kill -9.
    let refill = json!({"amount_mb": 1024, "request_id": request});
    command(&broker, "gw-low", "refill-1", "refill", refill.clone());
    assert_eq!(
        outcome(&mut sub, "gw-low", "refill-1").payload["status"],
        "successful"
    );
    let up = sub.expect("the row, resumed and topped up", |m| {
        m.topic == row && m.payload["in_session"] == "yes"
    });
    let balance = up.payload["platform"]["data_left_mb"].as_f64().unwrap();
    let mut retained_now = broker.subscribe(&row);
    let now = retained_now.expect("the retained row after the refill", |m| m.topic == row);
    assert!(
        now.payload.get("suspended_by").is_none(),
        "the refill lifted the rule's suspension: {}",
        now.payload
    );
    assert!((1000.0..=1034.0).contains(&balance), "{}", up.payload);
    command(&broker, "gw-low", "refill-2", "refill", refill.clone());
    assert_eq!(
        outcome(&mut sub, "gw-low", "refill-2").payload["status"],
        "successful"
    );
    run.kill9();
    let (_run, _log) = agent(&broker, "gw-low", &state, &emu.port);
    command(&broker, "gw-low", "refill-3", "refill", refill);
    assert_eq!(
        outcome(&mut sub, "gw-low", "refill-3").payload["status"],
        "successful"
    );
    let mut late = broker.subscribe(&row);
    let retained = late.expect("the retained row", |m| m.topic == row);
    assert_eq!(
        retained.payload["platform"]["data_left_mb"]
            .as_f64()
            .unwrap(),
        balance,
        "the balance moved once"
    );

    // A refill without an amount is refused by name.
    command(
        &broker,
        "gw-low",
        "refill-bad",
        "refill",
        json!({"days": 3}),
    );
    let bad = outcome(&mut sub, "gw-low", "refill-bad");
    assert_eq!(bad.payload["status"], "failed");
    assert_eq!(bad.payload["code"], "invalid_field");
    assert!(bad.payload["reason"]
        .as_str()
        .unwrap()
        .contains("params.amount_mb"));
}

// Guards `simgate rules test`: the daemon's engine, dry, on files.
#[test]
fn rules_test_runs_the_engine_dry_and_names_a_bad_rule() {
    let dir = TempDir::new("rules");
    let rules = dir.path().join("rules.json");
    let facts = dir.path().join("facts.json");
    std::fs::write(
        &rules,
        r#"{"rules":[{"id":"cap-5g","trigger":"data_used_mb","above":5120,"action":"suspend"},
                    {"id":"oops","trigger":"days_left","action":"notify"}]}"#,
    )
    .unwrap();
    std::fs::write(
        &facts,
        r#"[{"data_used_mb":100},{"data_used_mb":6000},{"data_used_mb":6100}]"#,
    )
    .unwrap();
    let out = std::process::Command::new(support::simgate_bin())
        .args(["rules", "test"])
        .arg(&rules)
        .arg(&facts)
        .args(["--iccid", SIM])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let firings: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(firings.len(), 1, "once per crossing: {stdout}");
    assert_eq!(firings[0]["id"], format!("{SIM}.cap-5g.1"));
    assert_eq!(firings[0]["facts"]["data_used_mb"], 6000.0);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule oops: below: missing threshold"));
}

// Guards a person's refill request (`simgate refill`) and the auto-refill caps.
#[test]
fn a_person_asks_for_a_refill_through_the_daemon_within_the_daily_cap() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let mut sub = broker.subscribe("simgate/v1/gw-ask/#");
    let (_run, _log) = agent(&broker, "gw-ask", &state, &emu.port);
    let row = format!("simgate/v1/gw-ask/sim/{SIM}/state");
    sub.expect("the SIM's row", |m| {
        m.topic == row && m.payload["present"] == true
    });
    let refill = |mb: &str| {
        std::process::Command::new(support::simgate_bin())
            .args(["refill", "--broker", &broker.url(), "--agent-id", "gw-ask"])
            .args(["--iccid", SIM, "--mb", mb])
            .output()
            .unwrap()
    };
    let first = refill("500");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ask = sub.expect("the request", |m| is_event(m, "refill_requested"));
    assert_eq!(ask.payload["amount_mb"], 500.0);
    assert!(
        ask.payload.get("rule").is_none(),
        "a person asked: {}",
        ask.payload
    );
    assert!(ask.payload["request_id"]
        .as_str()
        .unwrap()
        .starts_with("refill-"));
    assert!(refill("500").status.success());
    // Two a day: the third is refused, saying why.
    let third = refill("500");
    assert_eq!(third.status.code(), Some(1));
    let said = String::from_utf8_lossy(&third.stdout);
    assert!(said.contains("2 refill requests today already"), "{said}");
    assert!(
        said.contains("request_refill: failed"),
        "in words by default: {said}"
    );
    // With --json: each status as the agent published it, one a line.
    let json = std::process::Command::new(support::simgate_bin())
        .args(["refill", "--broker", &broker.url(), "--agent-id", "gw-ask"])
        .args(["--iccid", SIM, "--mb", "500", "--json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().expect("a final status");
    assert_eq!(last["status"], "failed", "{last}");
    assert_eq!(last["action"], "request_refill", "{last}");
}
