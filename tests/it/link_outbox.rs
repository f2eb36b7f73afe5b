//! The link's outbox at its edges, driven through the library against a real
//! mosquitto: usage is batched per interval, and a full outbox sheds telemetry first,
//! then events, counts what it shed, and never sheds SIM states.

use crate::support;

use simgate::contract::{EventKind, RefusalCode, SimState, UsageSample};
use simgate::link::{Link, LinkSettings};
use simgate::sim::{InSession, Location, Observed};
use simgate::store::Store;
use std::time::Duration;
use support::{Broker, TempDir};
use tokio_util::sync::CancellationToken;

fn sample(iccid: &str, rx: u64) -> UsageSample {
    UsageSample {
        iccid: iccid.into(),
        month: "2026-11".into(),
        rx,
        tx: rx / 10,
        at: 1_795_702_990,
    }
}

fn state(iccid: &str, present: bool) -> SimState {
    let modem = Location::Modem {
        port: "/dev/ttyUSB2".into(),
        slot: None,
    };
    SimState::from_observed(&Observed {
        in_session: InSession::No,
        present,
        ..Observed::new(iccid, true, modem, 1)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_goes_out_as_one_batch_per_interval_with_the_latest_counters() {
    let broker = Broker::start();
    let mut sub = broker.subscribe("simgate/v1/gw-usage/usage");
    let dir = TempDir::new("state");
    let store = Store::open(dir.path()).unwrap();
    let mut s = LinkSettings::new(&broker.url(), "gw-usage");
    s.usage_interval = Duration::from_secs(1);
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let (link, task) = Link::start(&s, &store, tx, cancel.clone()).unwrap();
    link.report_usage(sample("8988211000000430010", 1000));
    link.report_usage(sample("8988211000000530082", 7));
    link.report_usage(sample("8988211000000430010", 5000));
    let (batch, mut sub) = tokio::task::spawn_blocking(move || {
        (
            sub.expect("a usage batch", |m| m.topic.ends_with("/usage")),
            sub,
        )
    })
    .await
    .unwrap();
    let sims = batch.payload["sims"].as_array().unwrap();
    assert_eq!(sims.len(), 2, "{}", batch.payload);
    let first = sims
        .iter()
        .find(|s| s["iccid"] == "8988211000000430010")
        .unwrap();
    assert_eq!(first["rx"], 5000, "the latest sample wins");

    // Counters that did not move are not sent again.
    link.report_usage(sample("8988211000000430010", 5000));
    link.report_usage(sample("8988211000000530082", 8));
    let batch = tokio::task::spawn_blocking(move || {
        sub.expect("the next usage batch", |m| m.topic.ends_with("/usage"))
    })
    .await
    .unwrap();
    let sims = batch.payload["sims"].as_array().unwrap();
    assert_eq!(sims.len(), 1, "{}", batch.payload);
    assert_eq!(sims[0]["iccid"], "8988211000000530082");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_sheds_telemetry_then_events_counts_it_and_keeps_every_state() {
    let dir = TempDir::new("state");
    let store = Store::open(dir.path()).unwrap();
    // The watcher's persistent session exists before the agent can ever connect, so
    // nothing the agent sends once the broker is back can slip past it (a subscriber
    // started after the broker would race the agent's reconnect).
    let port = support::free_port();
    let mut broker = Broker::start_on(port, "");
    let mut sub = broker.subscribe_with("simgate/v1/gw-cap/#", &["-c", "-i", "gw-cap-watcher"]);
    broker.stop_graceful();
    // No broker now: everything stays in the outbox.
    let mut s = LinkSettings::new(&format!("mqtt://127.0.0.1:{port}"), "gw-cap");
    s.outbox_cap = 100;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let (link, task) = Link::start(&s, &store, tx, cancel.clone()).unwrap();
    for i in 0..60u64 {
        link.report_usage(sample("8988211000000430010", i));
        link.flush_usage().unwrap();
    }
    for i in 0..60u64 {
        link.publish_event(EventKind::Error {
            iccid: None,
            code: RefusalCode::Failed,
            reason: format!("event {i}"),
        })
        .unwrap();
    }
    // 60 SIMs' states and the index naming them (one entry: each new SIM's index
    // replaces the queued one): they push out the 40 remaining usage batches, then 21
    // events.
    let iccids: Vec<String> = (0..60).map(|i| format!("89882110000004{i:05}")).collect();
    for iccid in &iccids {
        link.publish_state(&state(iccid, true)).unwrap();
    }
    // 181 entries at a cap of 100: usage first (60 while events and states arrived),
    // then the 21 oldest events; 39 events, 60 states, the index and the notice remain.
    assert_eq!(link.queued(), 101);
    // A state replacing its queued version takes its place: republishing every row into
    // the full outbox sheds nothing more (it once shed an event per row).
    for iccid in &iccids {
        link.publish_state(&state(iccid, true)).unwrap();
    }
    assert_eq!(link.queued(), 101);

    broker.restart();
    let seen = tokio::task::spawn_blocking(move || {
        // The notice is coalesced: updated where it stands while it is queued, so it
        // arrives before the last state, which was queued last.
        sub.expect("the last state", |m| {
            m.topic.ends_with("/sim/8988211000000400059/state")
        });
        sub.lines.seen.clone()
    })
    .await
    .unwrap();
    let count = |needle: &str| seen.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("/usage "), 0, "usage should have been shed first");
    assert_eq!(
        count("\"reason\":\"event "),
        39,
        "the 39 newest events remain"
    );
    for iccid in &iccids {
        assert_eq!(count(&format!("/sim/{iccid}/state ")), 1, "{iccid}'s state");
    }
    let notice = seen
        .iter()
        .find(|l| l.contains("outbox_shed"))
        .unwrap()
        .to_string();
    assert!(
        notice.contains("\"telemetry\":60") && notice.contains("\"events\":21"),
        "{notice}"
    );
    // The 21 shed events are the only gap in the events' numbers: 22 onwards arrive,
    // the notice among them, one by one.
    let seqs: Vec<u64> = seen
        .iter()
        .filter_map(|l| l.strip_prefix("0 simgate/v1/gw-cap/events "))
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, (22..=61).collect::<Vec<u64>>());
    cancel.cancel();
    task.await.unwrap();
    broker.stop();
}
