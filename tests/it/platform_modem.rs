//! The platform link with a SIM in an (emulated) modem: suspend and resume go through
//! the modem engine and come back as outcomes; a SIM swap in the modem is a `swapped`
//! event; usage counters go up as telemetry batches.

use crate::support;

use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Lines, Modem, Msg, Proc, Sub, TempDir};

const FIRST: &str = "8901260886258128535";
const SECOND: &str = "89314404000000000019";

fn outcome(sub: &mut Sub, id: &str) -> Msg {
    let topic = format!("simgate/v1/gw-pm/cmd/{id}/status");
    sub.expect(&format!("the outcome of {id}"), |m| {
        m.topic == topic && (m.payload["status"] == "successful" || m.payload["status"] == "failed")
    })
}

fn send(broker: &Broker, id: &str, action: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cmd = json!({"v":1,"id":id,"iccid":FIRST,"action":action,"expires_at":now + 300});
    broker.publish("simgate/v1/gw-pm/cmd", &["-m", &cmd.to_string()]);
}

#[test]
fn a_modem_sim_is_suspended_and_resumed_by_command_and_its_swap_and_usage_are_reported() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-pm/#");
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-pm",
            state.path(),
            &port,
            // Short intervals: the test sees a usage batch and a counter sample quickly.
            "[broker]\nusage_interval_secs = 1\n\n[modems]\npoll_secs = 5\n",
        ),
    );
    sub.expect("the modem SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });

    send(&broker, "sus-1", "suspend");
    let m = outcome(&mut sub, "sus-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    send(&broker, "res-1", "resume");
    let m = outcome(&mut sub, "res-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
    // A refresh reads the SIM through its modem again, now.
    send(&broker, "ref-1", "refresh");
    let m = outcome(&mut sub, "ref-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);

    sub.expect("a usage batch with the modem SIM", |m| {
        m.topic.ends_with("/usage")
            && m.payload["sims"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["iccid"] == FIRST))
    });

    emu.control("swap");
    let m = sub.expect("the swap event", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "swapped"
    });
    assert_eq!(m.payload["iccid"], SECOND);
    assert_eq!(m.payload["replaced"], FIRST);
    assert_eq!(m.payload["location"]["port"], port.as_str());

    // The old SIM is gone from the modem: this agent no longer hosts it.
    send(&broker, "ref-2", "refresh");
    let m = outcome(&mut sub, "ref-2");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "not_hosted", "{}", m.payload);
}

#[test]
fn a_broker_outage_during_a_modem_swap_loses_nothing_and_keeps_order() {
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    // The platform keeps a persistent session, so what arrives while it reconnects
    // after the broker restart is queued for it.
    let mut sub = broker.subscribe_with("simgate/v1/gw-pm/#", &["-c", "-i", "platform-pm"]);
    let mut run = Proc::spawn(
        "simgate run",
        support::modem_agent(&broker.url(), "gw-pm", state.path(), &port)
            .args(["--log-format", "json"])
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(run.child.stderr.take().unwrap());
    sub.expect("the first SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });

    // A suspend before the outage...
    send(&broker, "out-sus-1", "suspend");
    assert_eq!(
        outcome(&mut sub, "out-sus-1").payload["status"],
        "successful"
    );

    broker.stop_graceful();
    log.drain();
    emu.control("swap");
    log.expect("the new SIM's row queued", Duration::from_secs(20), |l| {
        l.contains("\"queued\"") && l.contains(&format!("sim/{SECOND}/state"))
    });
    broker.restart();

    // The swap's pair comes last (after the new SIM's row); once here, all is.
    sub.expect("the swap after the outage", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "swapped"
    });
    assert!(
        sub.lines
            .seen
            .iter()
            .any(|l| l.contains(&format!("sim/{SECOND}/state")) && l.contains("\"present\":true")),
        "the new SIM's row did not arrive"
    );
    let events: Vec<(String, String)> = sub
        .lines
        .seen
        .iter()
        .filter_map(|l| {
            let payload: serde_json::Value = serde_json::from_str(l.splitn(3, ' ').nth(2)?).ok()?;
            (l.contains("/events ")).then(|| {
                (
                    payload["type"].as_str().unwrap_or("").to_string(),
                    payload["iccid"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect();
    let want = [
        ("removed".to_string(), FIRST.to_string()),
        ("inserted".to_string(), SECOND.to_string()),
        ("swapped".to_string(), SECOND.to_string()),
    ];
    let at: Vec<usize> = want
        .iter()
        .map(|w| {
            events
                .iter()
                .position(|e| e == w)
                .unwrap_or_else(|| panic!("{w:?} missing from {events:?}"))
        })
        .collect();
    assert!(
        at.windows(2).all(|w| w[0] < w[1]),
        "out of order: {events:?}"
    );

    // ...retried by a platform that did not see its outcome: answered, not run again.
    let mark = sub.lines.seen.len();
    send(&broker, "out-sus-1", "suspend");
    assert_eq!(
        outcome(&mut sub, "out-sus-1").payload["status"],
        "successful"
    );
    assert!(
        !sub.lines.seen[mark..]
            .iter()
            .any(|l| l.contains("cmd/out-sus-1/status") && l.contains("\"executing\"")),
        "the retried suspend ran again"
    );
    let _ = run.interrupt();
}

/// A family without a vendor data counter (the generic 3GPP profile) gets its usage from
/// the bearer's Linux network interface, named in `[modems] netdevs`. Here the bearer is
/// `lo`, which the broker's own traffic keeps moving.
#[test]
fn usage_comes_from_the_bearer_interface_when_the_modem_has_no_counter() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("generic-3gpp");
    let mut sub = broker.subscribe("simgate/v1/gw-pm/usage");
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-pm",
            state.path(),
            &emu.port,
            &format!(
            "[broker]\nusage_interval_secs = 1\n\n[modems]\npoll_secs = 5\nnetdevs = {{ \"{}\" = \"lo\" }}\n",
            emu.port
        ),
        ),
    );
    // The first sample only sets the baseline; the next ones count what moved since.
    let counted = |s: &serde_json::Value| {
        s["iccid"] == FIRST && s["rx"].as_u64().unwrap_or(0) + s["tx"].as_u64().unwrap_or(0) > 0
    };
    let m = sub.expect("a usage batch with bytes counted on the interface", |m| {
        m.payload["sims"]
            .as_array()
            .is_some_and(|s| s.iter().any(counted))
    });
    assert_eq!(m.payload["v"], 1);
}

/// A suspension is the platform's standing order: simgate restarted (a power cut, an
/// upgrade) while the modem brought the context back up by itself must bring it down
/// again, from what it stored — the platform does not have to ask twice.
#[test]
fn a_suspended_modem_sim_stays_suspended_across_a_restart_of_simgate() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let config = state.path().join("simgate.toml");
    std::fs::write(&config, "[modems]\npoll_secs = 5\n").unwrap();
    let mut sub = broker.subscribe("simgate/v1/gw-pm/#");
    let port = emu.port.clone();
    let run = || {
        Proc::spawn(
            "simgate run",
            support::modem_agent(&broker.url(), "gw-pm", state.path(), &port)
                .arg("--config")
                .arg(&config),
        )
    };
    let row = format!("sim/{FIRST}/state");
    let mut agent = run();
    sub.expect("the modem SIM's row, in session", |m| {
        m.topic.ends_with(&row) && m.payload["in_session"] == "yes"
    });
    send(&broker, "hold-1", "suspend");
    assert_eq!(outcome(&mut sub, "hold-1").payload["status"], "successful");
    assert!(agent.interrupt().success());
    sub.expect("the agent offline", |m| {
        m.topic.ends_with("/health") && m.payload["state"] == "offline"
    });

    // While simgate is down the modem reconnects on its own; simgate comes back.
    emu.control("connect");
    let _agent = run();
    sub.expect("the agent online again", |m| {
        m.topic.ends_with("/health") && m.payload["state"] == "online"
    });
    sub.expect("the SIM's session brought down again", |m| {
        m.topic.ends_with(&row) && m.payload["in_session"] == "no"
    });
}

/// Spare-port mode (ModemManager keeps the modem's data path, simgate has one spare AT
/// port): suspend and resume are refused with the reason, refresh still works.
#[test]
fn on_a_port_shared_with_modemmanager_suspend_is_refused_with_the_reason() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-pm/#");
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-pm",
            state.path(),
            &port,
            &format!("[modems]\nshared_with_modemmanager = [{port:?}]\n"),
        ),
    );
    sub.expect("the modem SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{FIRST}/state")) && m.payload["present"] == true
    });
    send(&broker, "mm-sus-1", "suspend");
    let m = outcome(&mut sub, "mm-sus-1");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "not_applicable", "{}", m.payload);
    assert!(
        m.payload["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ModemManager") && r.contains(port.as_str())),
        "{}",
        m.payload
    );
    send(&broker, "mm-ref-1", "refresh");
    let m = outcome(&mut sub, "mm-ref-1");
    assert_eq!(m.payload["status"], "successful", "{}", m.payload);
}

// Guards a rule's `suspend` going through on a port ModemManager keeps, where the
// platform's `suspend` command was refused: the two paths now share one door
// (src/daemon/work.rs `act_on_modem`) and one refusal.
#[test]
fn on_a_port_shared_with_modemmanager_a_rules_suspend_is_refused_like_the_commands() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-pm/#");
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-pm",
            state.path(),
            &port,
            &format!("[modems]\nshared_with_modemmanager = [{port:?}]\n"),
        ),
    );
    let row = format!("simgate/v1/gw-pm/sim/{FIRST}/state");
    sub.expect("the modem SIM's row", |m| {
        m.topic == row && m.payload["present"] == true
    });
    send(&broker, "mm-sus-2", "suspend");
    let refused = outcome(&mut sub, "mm-sus-2");
    assert_eq!(
        refused.payload["code"], "not_applicable",
        "{}",
        refused.payload
    );

    // A rule that fires at once: the balance is below its threshold.
    let rec = json!({"v":1,"data_left_mb":10,"rules":[
        {"id":"low","trigger":"data_left_mb","below":50,"action":"suspend"}
    ]});
    broker.publish(
        &format!("simgate/v1/gw-pm/sim/{FIRST}/platform"),
        &["-r", "-m", &rec.to_string()],
    );
    let fired = sub.expect("the firing", |m| {
        m.topic.ends_with("/events") && m.payload["type"] == "rule_fired"
    });
    assert_eq!(
        fired.payload["actions"],
        json!([{"action":"suspend","outcome":"not_applicable",
                "reason": refused.payload["reason"]}]),
        "{}",
        fired.payload
    );
    // The session is left to ModemManager: still up.
    send(&broker, "mm-ref-2", "refresh");
    assert_eq!(
        outcome(&mut sub, "mm-ref-2").payload["status"],
        "successful"
    );
    let mut late = broker.subscribe(&row);
    let retained = late.expect("the retained row", |m| m.topic == row);
    assert_eq!(
        retained.payload["in_session"], "yes",
        "{}",
        retained.payload
    );
}

/// Regression: after a successful `suspend`, the retained row said `in_session: yes`
/// until the next poll (up to a minute), and nothing in it said a suspension stood.
/// The row the command reports now comes before its `successful` status, with the
/// session down and `suspended_by` naming the command; a `resume` clears both, also
/// before its status. The poll is an hour here: only the command can fix the row.
#[test]
fn after_a_suspend_the_row_shows_the_session_down_and_who_suspended_before_the_command_succeeds() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let emu = Modem::start("quectel-ec2x");
    let mut sub = broker.subscribe("simgate/v1/gw-pm/#");
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-pm",
            state.path(),
            &emu.port,
            "[modems]\npoll_secs = 3600\n",
        ),
    );
    let row = format!("simgate/v1/gw-pm/sim/{FIRST}/state");
    sub.expect("the modem SIM's row, in session", |m| {
        m.topic == row && m.payload["present"] == true && m.payload["in_session"] == "yes"
    });
    // The last row published before the command's final status.
    let last_before = |sub: &mut Sub, id: &str| {
        let status = format!("simgate/v1/gw-pm/cmd/{id}/status");
        let mut last = None;
        let fin = sub.expect(&format!("the outcome of {id}"), |m| {
            if m.topic == row {
                last = Some(m.payload.clone());
            }
            m.topic == status
                && (m.payload["status"] == "successful" || m.payload["status"] == "failed")
        });
        assert_eq!(fin.payload["status"], "successful", "{}", fin.payload);
        last.unwrap_or_else(|| panic!("no row of {FIRST} before {id} succeeded"))
    };
    send(&broker, "sus-row", "suspend");
    let r = last_before(&mut sub, "sus-row");
    assert_eq!(r["in_session"], "no", "{r}");
    assert_eq!(r["suspended_by"]["command"], "sus-row", "{r}");
    assert!(
        r["suspended_by"]["since"].as_u64().is_some_and(|s| s > 0),
        "{r}"
    );
    assert!(r["suspended_by"].get("rule").is_none(), "{r}");

    send(&broker, "res-row", "resume");
    let r = last_before(&mut sub, "res-row");
    assert_eq!(r["in_session"], "yes", "{r}");
    assert!(
        r.get("suspended_by").is_none(),
        "the suspension is lifted: {r}"
    );
}
