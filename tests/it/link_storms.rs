//! Storms on the platform link, against a real mosquitto: a command too large for the
//! connection is refused once and for good instead of breaking every reconnect, and two
//! agents sharing one client id are told so instead of taking each other over forever.

use crate::support;
use support::unix_now as now;

use serde_json::json;
use simgate::link::{Link, LinkSettings};
use simgate::store::Store;
use std::process::Stdio;
use support::{Broker, Pcsc, Proc, TempDir};
use tokio_util::sync::CancellationToken;

/// Regression: a command over rumqttc's 1 MiB packet limit (a broker without
/// `message_size_limit` redelivers it on every reconnect) kept the agent reconnecting
/// ~4×/s and never answering another command.
#[test]
fn a_command_over_the_packet_limit_is_refused_once_and_the_agent_keeps_answering() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-poison";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    sub.expect("agent online", |m| {
        m.topic.ends_with("/health") && m.payload["state"] == "online"
    });

    let poison = state.path().join("poison.json");
    let big = format!(
        r#"{{"v":1,"id":"big-1","iccid":"8988211000000430010","action":"refresh","expires_at":{},"pad":"{}"}}"#,
        now() + 300,
        "x".repeat(3 * 512 * 1024)
    );
    std::fs::write(&poison, big).unwrap();
    let cmd_topic = format!("simgate/v1/{agent}/cmd");
    broker.publish(&cmd_topic, &["-f", poison.to_str().unwrap()]);
    let refused = sub.expect("the poison's too_large error", |m| {
        m.topic.ends_with("/events")
            && m.payload["type"] == "error"
            && m.payload["code"] == "too_large"
    });
    assert!(
        refused.payload["reason"].as_str().unwrap().contains("1572"),
        "the reason gives the size: {}",
        refused.payload
    );

    // The agent answers the next command: the poison no longer blocks the session.
    let next = json!({"v":1,"id":"after-1","iccid":"8988211000000430010",
                      "action":"refresh","expires_at": now() + 300});
    broker.publish(&cmd_topic, &["-m", &next.to_string()]);
    let outcome = sub.expect("the next command's outcome", |m| {
        m.topic.ends_with("/cmd/after-1/status") && m.payload["status"] == "failed"
    });
    assert_eq!(outcome.payload["code"], "not_hosted");
    let too_large = sub
        .lines
        .seen
        .iter()
        .filter(|l| l.contains("\"too_large\""))
        .count();
    assert_eq!(too_large, 1, "refused once: {:#?}", sub.lines.seen);
}

/// Regression: two agents started with the same id (a cloned SD card) took each other
/// over ~2×/s forever, silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_with_one_client_id_are_told_so_by_an_error_event() {
    let broker = Broker::start();
    let mut sub = broker.subscribe("simgate/v1/gw-twin/events");
    let cancel = CancellationToken::new();
    let mut tasks = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = TempDir::new("state");
        let store = Store::open(dir.path()).unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
        let settings = LinkSettings::new(&broker.url(), "gw-twin");
        let (_link, task) = Link::start(&settings, &store, tx, cancel.clone()).unwrap();
        tasks.push((task, rx));
        dirs.push((dir, store));
    }
    let event = tokio::task::spawn_blocking(move || {
        sub.expect("a client_id_in_use error", |m| {
            m.payload["type"] == "error" && m.payload["code"] == "client_id_in_use"
        })
    })
    .await
    .unwrap();
    assert!(
        event.payload["reason"]
            .as_str()
            .unwrap()
            .contains("\"gw-twin\""),
        "{}",
        event.payload
    );
    cancel.cancel();
    for (t, _) in tasks {
        t.await.unwrap();
    }
}

/// Regression: every reconnect made the broker deliver the retained platform records
/// again, and each invalid one raised a fresh `error` event (300 bad records: 300
/// events per reconnect).
#[test]
fn an_invalid_retained_record_is_reported_once_per_change_not_per_reconnect() {
    let pcsc = Pcsc::start();
    let mut broker = Broker::start();
    let state = TempDir::new("state");
    let agent = "gw-rec";
    let record = |iccid: &str| format!("simgate/v1/{agent}/sim/{iccid}/platform");
    let bad = [
        "8988211000000430010",
        "8988211000000530082",
        "8988211000000630074",
    ];
    for iccid in bad {
        broker.publish(
            &record(iccid),
            &["-r", "-m", r#"{"v":1,"data_left_mb":-1}"#],
        );
    }
    // The platform: a persistent session, so it gets what is sent while the broker
    // restarts.
    let mut sub = broker.subscribe_with(
        &format!("simgate/v1/{agent}/#"),
        &["-c", "-i", "platform-rec"],
    );
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    let refused = |iccid: &'static str| {
        move |m: &support::Msg| {
            m.topic.ends_with("/events")
                && m.payload["type"] == "error"
                && m.payload["iccid"] == iccid
        }
    };
    for iccid in bad {
        sub.expect("a bad record's refusal", refused(iccid));
    }

    // A reconnect: the broker (its retained messages saved) delivers the records again.
    broker.stop_graceful();
    broker.restart();
    sub.expect("the agent online again", |m| {
        m.topic.ends_with("/health") && m.payload["state"] == "online"
    });
    // After the redelivery: one record changed (still bad) and a new bad one.
    broker.publish(&record(bad[0]), &["-r", "-m", r#"{"v":1,"days_left":-3}"#]);
    broker.publish(&record("8988211000000730066"), &["-r", "-m", r#"{"v":7}"#]);
    sub.expect("the changed record's refusal", refused(bad[0]));
    sub.expect("the new record's refusal", refused("8988211000000730066"));
    // Distinct events: delivery is at least once (a PUBACK lost in the broker's
    // shutdown means the same event, the same seq, again), as the contract says.
    let errors_for = |iccid: &str| {
        sub.lines
            .seen
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("0 simgate/v1/{agent}/events ")))
            .map(|p| serde_json::from_str::<serde_json::Value>(p).unwrap())
            .filter(|e| e["iccid"] == iccid)
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<std::collections::HashSet<u64>>()
            .len()
    };
    assert_eq!(
        errors_for(bad[0]),
        2,
        "reported once per change: {:#?}",
        sub.lines.seen
    );
    assert_eq!(
        errors_for(bad[1]),
        1,
        "reported once: {:#?}",
        sub.lines.seen
    );
    assert_eq!(
        errors_for(bad[2]),
        1,
        "reported once: {:#?}",
        sub.lines.seen
    );
}

/// The wait before the next attempt the agent's JSON log gives for the broker away
/// (`retry_secs`, said at WARN once, then at DEBUG: src/away.rs), in seconds.
fn retry_in(line: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let f = &v["fields"];
    if f["service"] != "the broker" {
        return None;
    }
    f["retry_secs"].as_f64()
}

/// Guards the reconnect regimes (src/link/reconnect.rs, `Reconnect`): while the broker is out of
/// reach the waits never exceed `broker.reconnect_max_secs` (a fleet is back within
/// about that after the broker returns), and an accepted connection makes the next
/// outage start with short waits again. Before, waits climbed to 60 s and a connection
/// reset them only after living 90 s, so two outages a minute apart left agents
/// minutes behind.
#[test]
fn outage_waits_stay_under_reconnect_max_and_start_short_after_a_connection() {
    let port = support::free_port();
    let state = TempDir::new("state");
    let config = state.path().join("simgate.toml");
    std::fs::write(&config, "[broker]\nreconnect_max_secs = 2\n").unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut run = Proc::spawn(
        "simgate run",
        std::process::Command::new(support::simgate_bin())
            .args(support::run_args(&url, "gw-outage"))
            .arg(state.path().join("store"))
            .arg("--config")
            .arg(&config)
            .env("PCSCLITE_CSOCK_NAME", state.path().join("no-pcscd"))
            .env("RUST_LOG", "simgate=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut log = support::Lines::new(run.child.stderr.take().unwrap());
    let waits = |n: usize, log: &mut support::Lines| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let l = log.expect(
                    "a failed connect",
                    std::time::Duration::from_secs(20),
                    |l| retry_in(l).is_some(),
                );
                retry_in(&l).unwrap()
            })
            .collect()
    };
    // No broker: 0.5 s doubling, capped at 2 s.
    let first = waits(6, &mut log);
    assert!(first.iter().all(|w| *w <= 2.0), "capped at 2 s: {first:?}");
    assert!(
        first[4..].iter().all(|w| *w >= 1.0),
        "at the cap, half of it at least: {first:?}"
    );

    let mut broker = Broker::start_on(port, "");
    log.expect("connected", std::time::Duration::from_secs(10), |l| {
        l.contains("connected to broker")
    });
    broker.stop();
    // The next outage starts over: the retry after the drop is short; the wait after
    // it found the broker gone is spread over half the ceiling (a fleet's retries
    // after a broker restart); then 0.5 s doubling again.
    let again = waits(3, &mut log);
    assert!(
        again[0] <= 0.5 && again[1] <= 1.0 && again[2] <= 1.0,
        "short again: {again:?}"
    );
}
