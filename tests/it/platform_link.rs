//! The platform link against a real mosquitto: commands take effect once and every
//! refusal says why; a broker outage and a kill -9 while offline lose nothing; TLS with
//! client certificates, a password file and an ACL. The first three run against
//! RabbitMQ's MQTT plugin too (`rabbitmq::`), the second broker of MQTT.md's "Brokers".

use crate::support;
use support::{final_status as outcome, send_command as send, unix_now as now};

use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Lines, Msg, Pcsc, Pki, Proc, Sub, TempDir};

const USIM: &str = "8988211000000430010";
const GSM: &str = "8988211000000530082";

/// A running `simgate run` whose log can be awaited.
struct Agent {
    proc: Proc,
    log: Lines,
}

impl Agent {
    fn start(pcsc: &Pcsc, url: &str, id: &str, state: &Path, config: Option<&Path>) -> Agent {
        let mut cmd = pcsc.simgate();
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        cmd.args([
            "--log-format",
            "json",
            "run",
            "--agent-id",
            id,
            "--state-dir",
        ])
        .arg(state)
        .args(["--broker", url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut proc = Proc::spawn("simgate run", &mut cmd);
        let log = Lines::new(proc.child.stderr.take().expect("piped stderr"));
        Agent { proc, log }
    }

    /// Wait until the agent queued a message on a topic ending with `suffix`: from then
    /// on it survives kill -9.
    fn queued(&mut self, suffix: &str) {
        self.log.expect(
            &format!("a message queued for …{suffix}"),
            Duration::from_secs(20),
            |l| l.contains("\"queued\"") && l.contains(suffix),
        );
    }
}

fn command(id: &str, iccid: &str, action: &str) -> serde_json::Value {
    json!({"v": 1, "id": id, "iccid": iccid, "action": action,
           "expires_at": now() + 300})
}

#[test]
fn commands_take_effect_once_and_every_refusal_says_why() {
    commands_take_effect_once(Broker::start());
}

fn commands_take_effect_once(broker: Broker) {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let agent_id = "gw-cmd";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
    let _card = pcsc.insert(0, "usim.toml");
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
    let state_topic = format!("simgate/v1/{agent_id}/sim/{USIM}/state");
    sub.expect("the SIM's state", |m| {
        m.topic == state_topic && m.payload["present"] == true
    });

    // The platform tool: a refresh goes down, its lifecycle comes back in order.
    let out = pcsc
        .simgate()
        .args([
            "platform",
            "send",
            "--broker",
            &broker.url(),
            "--agent-id",
            agent_id,
        ])
        .args(["--iccid", USIM, "--action", "refresh", "--id", "r-1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "refresh failed: {stdout}");
    let words: Vec<String> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["status"].to_string())
        .collect();
    // In order, ending in success; a status the agent had not sent yet when a newer one
    // was queued is replaced by it (MQTT.md, "Durability": per-command coalescing), so
    // a loaded machine may show fewer than the three steps.
    let steps = ["\"received\"", "\"executing\"", "\"successful\""];
    let mut rest = steps.iter();
    assert!(
        words.last().map(String::as_str) == Some(steps[2])
            && words.iter().all(|w| rest.any(|s| s == w)),
        "{words:?}"
    );
    outcome(&mut sub, agent_id, "r-1");

    // The same command again (a redelivery, or the platform retrying): answered from
    // its record, not executed a second time.
    let mark = sub.lines.seen.len();
    send(&broker, agent_id, &command("r-1", USIM, "refresh"));
    let again = outcome(&mut sub, agent_id, "r-1");
    assert_eq!(again.payload["status"], "successful");
    let r1_topic = format!("simgate/v1/{agent_id}/cmd/r-1/status");
    let executing_again = sub.lines.seen[mark..]
        .iter()
        .filter(|l| l.contains(&r1_topic) && l.contains("\"executing\""))
        .count();
    assert_eq!(executing_again, 0, "a repeated command ran again");

    // Refusals, each with its code.
    let cases = [
        (command("s-1", USIM, "suspend"), "not_applicable"),
        (
            command("f-1", "8944000000000000001", "refresh"),
            "not_hosted",
        ),
        (command("u-1", USIM, "dance"), "unknown_action"),
        // Refill is supported now: without its params it is refused by name.
        (command("rf-1", USIM, "refill"), "invalid_field"),
        // A swap without its params (MQTT.md, "Swap"): refused by the field.
        (command("sw-1", USIM, "swap"), "invalid_field"),
        (command("bad-iccid", "89ab/#", "refresh"), "invalid_field"),
        (
            json!({"v":1,"id":"x-1","iccid":USIM,"action":"refresh","expires_at":1}),
            "expired",
        ),
        (
            json!({"v":1,"id":"sr-bad","iccid":USIM,"action":"set_record",
                   "expires_at": now() + 60, "params": {"status": "Sleepy"}}),
            "invalid_field",
        ),
    ];
    for (cmd, code) in &cases {
        send(&broker, agent_id, cmd);
        let id = cmd["id"].as_str().unwrap();
        let m = outcome(&mut sub, agent_id, id);
        assert_eq!(m.payload["status"], "failed", "{id}: {}", m.payload);
        assert_eq!(m.payload["code"], *code, "{id}: {}", m.payload);
        assert!(m.payload["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }

    // Garbage and an oversized payload: an error event each, and simgate carries on.
    let events = format!("simgate/v1/{agent_id}/events");
    broker.publish(&format!("simgate/v1/{agent_id}/cmd"), &["-m", "{not json"]);
    sub.expect("an error event for garbage", |m| {
        m.topic == events && m.payload["type"] == "error" && m.payload["code"] == "malformed"
    });
    let big = TempDir::new("big");
    let file = big.path().join("big.json");
    std::fs::write(
        &file,
        format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(9_000)),
    )
    .unwrap();
    broker.publish(
        &format!("simgate/v1/{agent_id}/cmd"),
        &["-f", file.to_str().unwrap()],
    );
    sub.expect("an error event for an oversized command", |m| {
        m.topic == events && m.payload["type"] == "error" && m.payload["code"] == "too_large"
    });

    // The platform record: a set_record command, then the retained record topic; both
    // end up in the SIM's state row.
    let set = json!({"v":1,"id":"sr-1","iccid":USIM,"action":"set_record",
                     "expires_at": now() + 60,
                     "params": {"status":"Active","plan":"IoT 1GB","labels":["fleet-a"]}});
    send(&broker, agent_id, &set);
    // The row is republished while the command executes, before its outcome.
    sub.expect("the row with the platform's plan", |m| {
        m.topic == state_topic && m.payload["platform"]["plan"] == "IoT 1GB"
    });
    assert_eq!(
        outcome(&mut sub, agent_id, "sr-1").payload["status"],
        "successful"
    );
    let out = pcsc
        .simgate()
        .args([
            "platform",
            "record",
            "--broker",
            &broker.url(),
            "--agent-id",
            agent_id,
        ])
        .args([
            "--iccid",
            USIM,
            "--json",
            r#"{"status":"Suspended","days_left":3}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = sub.expect("the row with the platform's status", |m| {
        m.topic == state_topic && m.payload["status"] == "Suspended"
    });
    assert_eq!(row.payload["platform"]["days_left"], 3);

    // After all that, a fresh command still runs: nothing stalled.
    send(&broker, agent_id, &command("r-2", USIM, "refresh"));
    assert_eq!(
        outcome(&mut sub, agent_id, "r-2").payload["status"],
        "successful"
    );
    assert!(
        agent.proc.child.try_wait().unwrap().is_none(),
        "simgate died"
    );
    let st = agent.proc.interrupt();
    assert!(st.success(), "simgate run exited with {st}");
}

/// Every message of a subscriber so far, parsed.
fn messages(sub: &Sub, topic_prefix: &str) -> Vec<(String, serde_json::Value)> {
    sub.lines
        .seen
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once(' ')?;
            let (t, p) = rest.split_once(' ')?;
            if !t.starts_with(topic_prefix) {
                return None;
            }
            Some((t.to_string(), serde_json::from_str(p).ok()?))
        })
        .collect()
}

#[test]
fn a_broker_outage_during_card_activity_loses_nothing_and_keeps_order() {
    an_outage_loses_nothing(Broker::start());
}

fn an_outage_loses_nothing(mut broker: Broker) {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let agent_id = "gw-out";
    let prefix = format!("simgate/v1/{agent_id}/");
    // The platform: a persistent session, so what arrives while it reconnects after the
    // broker restart is queued for it, not lost to the test.
    let mut sub = broker.subscribe_with(&format!("{prefix}#"), &["-c", "-i", "platform-out"]);
    let card = pcsc.insert(0, "usim.toml");
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
    // The row follows the event: once it is seen, nothing is left from before.
    sub.expect("USIM's row", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state")) && m.payload["present"] == true
    });

    broker.stop_graceful();
    agent.log.drain();
    // Card activity while the broker is away: USIM out, GSM SIM in the other reader,
    // USIM back in.
    card.remove();
    agent.queued(&format!("sim/{USIM}/state"));
    let gsm = pcsc.insert(1, "gsm-sim.toml");
    agent.queued(&format!("sim/{GSM}/state"));
    let usim = pcsc.insert(0, "usim.toml");
    agent.queued(&format!("sim/{USIM}/state"));
    broker.restart();

    // Everything arrives, per SIM in the order it happened. The broker's delivery to
    // the platform is at least once (a PUBACK lost in the broker's shutdown means a
    // redelivery), so the platform side drops repeated `seq`s, as the contract says.
    let usim_event = |ty: &'static str| {
        move |m: &Msg| {
            m.topic.ends_with("/events") && m.payload["type"] == ty && m.payload["iccid"] == USIM
        }
    };
    sub.expect("USIM's removal", usim_event("removed"));
    sub.expect("USIM's return", usim_event("inserted"));
    sub.expect("USIM's row after its return", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state")) && m.payload["present"] == true
    });
    assert!(
        messages(&sub, &format!("{prefix}sim/{GSM}/state"))
            .iter()
            .any(|(_, p)| p["present"] == true),
        "the GSM SIM's row did not arrive: {:#?}",
        sub.lines.seen
    );
    let mut events: Vec<serde_json::Value> = messages(&sub, &format!("{prefix}events"))
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut seen_seq = std::collections::HashSet::new();
    events.retain(|e| seen_seq.insert(e["seq"].as_u64().unwrap()));
    let of = |iccid: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["iccid"] == iccid)
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of(USIM), ["inserted", "removed", "inserted"], "{events:#?}");
    assert_eq!(of(GSM), ["inserted"], "{events:#?}");
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "events out of order: {seqs:?}"
    );
    drop((gsm, usim));
    let _ = agent.proc.interrupt();
}

#[test]
fn kill_9_while_offline_then_restart_delivers_everything_queued() {
    kill_9_while_offline(Broker::start());
}

fn kill_9_while_offline(mut broker: Broker) {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let agent_id = "gw-k9";
    let card = pcsc.insert(0, "usim.toml");
    // Subscribed before the agent starts: RabbitMQ gives retained rows only to
    // exact-topic subscriptions, so a row published before this wildcard subscription
    // would never arrive (MQTT.md "Brokers").
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
    sub.expect("USIM present", |m| {
        m.topic.ends_with("/state") && m.payload["present"] == true
    });
    drop(sub);
    broker.stop();
    agent.log.drain();
    card.remove();
    agent.queued("/events");
    agent.queued(&format!("sim/{USIM}/state"));
    let gsm = pcsc.insert(1, "gsm-sim.toml");
    agent.queued(&format!("sim/{GSM}/state"));
    agent.proc.kill9(); // power cut, with all of that still in the outbox

    broker.restart();
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
    // The GSM SIM's row is queued last (rows requeued for a broker that lost our
    // session go behind the events); once it is here, everything else is too.
    sub.expect("the GSM SIM's row", |m| {
        m.topic.ends_with(&format!("sim/{GSM}/state")) && m.payload["present"] == true
    });
    let seen = messages(&sub, &format!("simgate/v1/{agent_id}/"));
    let find = |what: &str, pred: &dyn Fn(&str, &serde_json::Value) -> bool| {
        seen.iter()
            .position(|(t, p)| pred(t, p))
            .unwrap_or_else(|| panic!("{what} did not arrive: {seen:#?}"))
    };
    let removed = find("the removal queued before the kill", &|t, p| {
        t.ends_with("/events") && p["type"] == "removed" && p["iccid"] == USIM
    });
    let absent = find("USIM's row: absent", &|t, p| {
        t.ends_with(&format!("sim/{USIM}/state")) && p["present"] == false
    });
    find("the GSM SIM's insertion queued before the kill", &|t, p| {
        t.ends_with("/events") && p["type"] == "inserted" && p["iccid"] == GSM
    });
    assert!(removed < absent, "per SIM, the event before the row");
    drop(gsm);
    let _ = agent.proc.interrupt();
}

#[test]
fn tls_with_client_certificates_a_password_file_and_an_acl_confining_the_agent() {
    let pcsc = Pcsc::start();
    let pki = Pki::new(&["gw-tls", "platform"]);
    let auth = TempDir::new("auth");
    let passwd = support::password_file(
        auth.path(),
        &[("gw-tls", "agent-secret"), ("platform", "platform-secret")],
    );
    // Each agent may touch only its own subtree (user name = agent id); the platform
    // user everything under simgate/v1.
    let acl = auth.path().join("acl");
    std::fs::write(
        &acl,
        "pattern readwrite simgate/v1/%u/#\n\nuser platform\ntopic readwrite simgate/v1/#\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&acl, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Broker::start_with(&format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\npassword_file {}\nacl_file {}\nallow_anonymous false\n",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server.key"),
        passwd.display(),
        acl.display()
    ));
    let platform: Vec<String> = [
        pki.client_args("platform"),
        vec![
            "-u".into(),
            "platform".into(),
            "-P".into(),
            "platform-secret".into(),
        ],
    ]
    .concat();
    let platform: Vec<&str> = platform.iter().map(String::as_str).collect();
    let agent_id = "gw-tls";
    let mut sub = broker.subscribe_with(&format!("simgate/v1/{agent_id}/#"), &platform);

    let state = TempDir::new("state");
    let config = state.path().join("simgate.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nusername = \"gw-tls\"\npassword = \"agent-secret\"\nca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
            pki.path("ca.pem"),
            pki.path("gw-tls.pem"),
            pki.path("gw-tls.key")
        ),
    )
    .unwrap();
    let _card = pcsc.insert(0, "usim.toml");
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let mut agent = Agent::start(&pcsc, &url, agent_id, state.path(), Some(&config));
    let health = sub.expect("agent online over TLS", |m| m.topic.ends_with("/health"));
    assert_eq!(health.payload["state"], "online");
    sub.expect("the SIM's row over TLS", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state")) && m.payload["present"] == true
    });

    // Commands come down through the ACL and their outcome goes back up; the platform
    // tool speaks TLS with its own client certificate and credentials.
    let out = pcsc
        .simgate()
        .args(["platform", "send", "--broker", &url, "--agent-id", agent_id])
        .args(["--iccid", USIM, "--action", "refresh", "--id", "tls-1"])
        .args(["--username", "platform", "--ca-file", &pki.path("ca.pem")])
        .args(["--client-cert", &pki.path("platform.pem")])
        .args(["--client-key", &pki.path("platform.key")])
        .env("SIMGATE_PLATFORM_PASSWORD", "platform-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        outcome(&mut sub, agent_id, "tls-1").payload["status"],
        "successful"
    );

    // The ACL confines: the agent's credentials cannot put a command into another
    // agent's subtree. mosquitto drops it silently, so a marker published afterwards
    // (into the agent's own subtree, acknowledged only after the first was handled)
    // shows the platform would have seen it by then.
    let mut all = broker.subscribe_with("simgate/v1/#", &platform);
    let agent_creds: Vec<String> = [
        pki.client_args("gw-tls"),
        vec![
            "-u".into(),
            "gw-tls".into(),
            "-P".into(),
            "agent-secret".into(),
        ],
    ]
    .concat();
    let mut args: Vec<&str> = agent_creds.iter().map(String::as_str).collect();
    let foreign = command("spy-1", USIM, "refresh").to_string();
    args.extend(["-m", &foreign]);
    broker.publish("simgate/v1/gw-other/cmd", &args);
    let mut args: Vec<&str> = agent_creds.iter().map(String::as_str).collect();
    args.extend(["-m", "{\"marker\":1}"]);
    broker.publish(&format!("simgate/v1/{agent_id}/marker"), &args);
    all.expect("the marker", |m| m.topic.ends_with("/marker"));
    assert!(
        !all.lines
            .seen
            .iter()
            .any(|l| l.contains("simgate/v1/gw-other/")),
        "the ACL let an agent write into another agent's subtree"
    );

    // Verification is real: an agent trusting another CA does not connect, and says why.
    let other = Pki::new(&[]);
    let state2 = TempDir::new("state");
    let config2 = state2.path().join("simgate.toml");
    std::fs::write(
        &config2,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&pki.path("ca.pem"), &other.path("ca.pem")),
    )
    .unwrap();
    let mut stranger = Agent::start(&pcsc, &url, "gw-stranger", state2.path(), Some(&config2));
    stranger.log.expect(
        "a certificate verification failure",
        Duration::from_secs(20),
        |l| l.contains("the broker is away") && l.to_lowercase().contains("certificate"),
    );
    let _ = stranger.proc.interrupt();

    let st = agent.proc.interrupt();
    assert!(st.success(), "simgate run exited with {st}");
}

#[test]
fn after_a_broker_restart_that_lost_every_session_the_agent_resubscribes_and_restores_its_rows() {
    let pcsc = Pcsc::start();
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let agent_id = "gw-resub";
    let _card = pcsc.insert(0, "usim.toml");
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
    agent.log.expect("connected", Duration::from_secs(20), |l| {
        l.contains("connected to broker")
    });
    // kill -9 and a fresh start: the broker forgot the agent's session and
    // subscriptions (nothing was saved).
    broker.restart();
    agent
        .log
        .expect("reconnected", Duration::from_secs(120), |l| {
            l.contains("connected to broker")
        });
    // The agent saw it had no session there, so it queued its retained rows again.
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
    let row = sub.expect("the SIM's row, retained again", |m| {
        m.topic.ends_with(&format!("sim/{USIM}/state"))
    });
    assert_eq!(row.payload["present"], true, "{row:?}");
    let mut late = broker.subscribe(&format!("simgate/v1/{agent_id}/sim/{USIM}/state"));
    assert!(late.expect("the retained row", |_| true).retained);
    // And it subscribed again: commands work.
    send(
        &broker,
        agent_id,
        &command("after-restart", USIM, "refresh"),
    );
    assert_eq!(
        outcome(&mut sub, agent_id, "after-restart").payload["status"],
        "successful"
    );
    let _ = agent.proc.interrupt();
}

#[test]
fn a_card_that_cannot_be_read_is_an_error_event() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let config = state.path().join("simgate.toml");
    // A mute card is declared so after 0.5 s.
    std::fs::write(&config, "[readers]\ncard_timeout_ms = 500\n").unwrap();
    let mut sub = broker.subscribe("simgate/v1/gw-err/events");
    let _agent = Agent::start(&pcsc, &broker.url(), "gw-err", state.path(), Some(&config));
    let _card = pcsc.insert(0, "mute.toml");
    let m = sub.expect("an error event for the mute card", |m| {
        m.payload["type"] == "error"
    });
    assert_eq!(m.payload["code"], "failed");
    assert!(
        m.payload["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&pcsc.reader(0))),
        "{}",
        m.payload
    );
}

/// The same promises on RabbitMQ (MQTT 3.1.1 plugin), a broker that clusters; what it
/// does differently is in MQTT.md, "Brokers", with its tests here.
mod rabbitmq {
    use super::*;

    #[test]
    fn commands_take_effect_once_and_every_refusal_says_why() {
        commands_take_effect_once(Broker::rabbitmq(""));
    }

    #[test]
    fn a_broker_outage_during_card_activity_loses_nothing_and_keeps_order() {
        an_outage_loses_nothing(Broker::rabbitmq(""));
    }

    #[test]
    fn kill_9_while_offline_then_restart_delivers_everything_queued() {
        kill_9_while_offline(Broker::rabbitmq(""));
    }

    /// Documents RabbitMQ's limitation (MQTT.md, "Brokers"): a retained message reaches
    /// a subscriber of its exact topic, never one of a filter with wildcards. So a late
    /// `simgate watch` (`simgate/v1/<agent>/#`) shows no rows until they change, and
    /// the agent's own `sim/+/platform` subscription gets no retained platform record;
    /// the platform delivers records through its persistent session instead. The test
    /// fails the day RabbitMQ delivers retained messages to wildcards (then MQTT.md
    /// must say so).
    #[test]
    fn retained_rows_reach_subscribers_of_the_exact_topic_only() {
        let pcsc = Pcsc::start();
        let broker = Broker::rabbitmq("");
        let state = TempDir::new("state");
        let agent_id = "gw-retain";
        let _card = pcsc.insert(0, "usim.toml");
        let mut live = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
        let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), None);
        let row = format!("simgate/v1/{agent_id}/sim/{USIM}/state");
        live.expect("the row, live", |m| {
            m.topic == row && m.payload["present"] == true
        });

        let mut exact = broker.subscribe(&row);
        let got = exact.expect("the retained row on its exact topic", |_| true);
        assert!(got.retained, "{got:?}");

        let mut wild = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
        let marker = format!("simgate/v1/{agent_id}/marker");
        broker.publish(&marker, &["-m", "{}"]);
        wild.expect("the marker published after subscribing", |m| {
            m.topic == marker
        });
        let retained: Vec<&String> = wild
            .lines
            .seen
            .iter()
            .filter(|l| l.starts_with("1 "))
            .collect();
        assert!(
            retained.is_empty(),
            "RabbitMQ now delivers retained messages to wildcard filters: {retained:?}"
        );
        let _ = agent.proc.interrupt();
    }
}

// Guards a `refresh` whose re-read of a mute card left the command `executing` until
// the reader driver gave up: the re-read now has the card time-out of every read.
#[test]
fn a_card_gone_mute_during_a_refresh_fails_the_command_within_the_card_timeout() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let config = state.path().join("simgate.toml");
    std::fs::write(&config, "[readers]\ncard_timeout_ms = 3000\n").unwrap();
    let agent_id = "gw-mute";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent_id}/#"));
    let mut agent = Agent::start(&pcsc, &broker.url(), agent_id, state.path(), Some(&config));
    let row = format!("simgate/v1/{agent_id}/sim/{USIM}/state");

    // How many APDUs one identification of this card takes, from the agent's own log.
    let card = pcsc.insert(0, "usim.toml");
    let seen = agent
        .log
        .expect("the card identified", Duration::from_secs(30), |l| {
            l.contains("card identified") && l.contains(USIM)
        });
    let apdus = serde_json::from_str::<serde_json::Value>(&seen).unwrap()["fields"]["apdus_total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no APDU count in {seen}"));
    sub.expect("the SIM's row", |m| {
        m.topic == row && m.payload["present"] == true
    });
    card.remove();
    sub.expect("the SIM removed", |m| {
        m.topic == row && m.payload["present"] == false
    });

    // The same card, mute once it has answered one identification.
    let image = state.path().join("usim-mute-after-read.toml");
    let usim = std::fs::read_to_string(support::repo().join("devices/cards/usim.toml")).unwrap();
    std::fs::write(&image, format!("{usim}\n[fault]\nmute_after = {apdus}\n")).unwrap();
    let _card = pcsc.insert(0, image.to_str().unwrap());
    sub.expect("the SIM's row again", |m| {
        m.topic == row && m.payload["present"] == true
    });
    send(&broker, agent_id, &command("mute-ref", USIM, "refresh"));
    let m = outcome(&mut sub, agent_id, "mute-ref");
    assert_eq!(m.payload["status"], "failed", "{}", m.payload);
    assert_eq!(m.payload["code"], "failed", "{}", m.payload);
    let reason = m.payload["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("re-read failed") && reason.contains("did not answer within 3s"),
        "{}",
        m.payload
    );
}
