//! What a platform can rely on, against a real mosquitto: events are numbered 1, 2, 3 …
//! per agent across restarts (a gap is a loss), and a command's statuses never go
//! backwards, even when the outbox replays after acknowledgements were lost.

use crate::support;

use simgate::contract::{CommandStatus, CommandStatusWord, EventKind, RefusalCode};
use simgate::link::{Link, LinkSettings};
use simgate::sim::{Location, Observed};
use simgate::store::Store;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use support::{Broker, Sub, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn status(id: &str, status: CommandStatusWord) -> CommandStatus {
    CommandStatus {
        v: 1,
        id: id.into(),
        iccid: "8988211000000430010".into(),
        action: "refresh".into(),
        status,
        code: None,
        reason: None,
        rows: None,
        result: None,
        profile: None,
        ts: 1,
    }
}

fn error(i: u32) -> EventKind {
    EventKind::Error {
        iccid: None,
        code: RefusalCode::Failed,
        reason: format!("event {i}"),
    }
}

/// Wait (off the runtime's workers) for a message on a topic ending with `suffix` whose
/// payload contains `needle`.
async fn expect(sub: Sub, what: &'static str, suffix: String, needle: String) -> Sub {
    tokio::task::spawn_blocking(move || {
        let mut sub = sub;
        sub.expect(what, |m| {
            m.topic.ends_with(&suffix) && m.payload.to_string().contains(&needle)
        });
        sub
    })
    .await
    .unwrap()
}

/// Regression: event `seq` came from the outbox's shared id generator, so it jumped by
/// 1 000 000 at every restart and skipped the numbers of states and statuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_numbered_one_by_one_across_restarts_whatever_else_is_sent() {
    let broker = Broker::start();
    let mut sub = broker.subscribe("simgate/v1/gw-seq/#");
    let dir = TempDir::new("state");
    let mut n = 0;
    for run in 0..3 {
        let store = Store::open(dir.path()).unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
        let cancel = CancellationToken::new();
        let settings = LinkSettings::new(&broker.url(), "gw-seq");
        let (link, task) = Link::start(&settings, &store, tx, cancel.clone()).unwrap();
        for _ in 0..3 {
            n += 1;
            link.publish_event(error(n)).unwrap();
            let obs = Observed::new(
                &format!("89882110000004{run}{n:04}"),
                true,
                Location::Reader { reader: "R".into() },
                1,
            );
            link.publish_state(&simgate::contract::SimState::from_observed(&obs))
                .unwrap();
            link.publish_command_status(&status(&format!("c{n}"), CommandStatusWord::Received))
                .unwrap();
        }
        sub = expect(
            sub,
            "the run's last event",
            "/events".into(),
            format!("\"event {n}\""),
        )
        .await;
        cancel.cancel();
        task.await.unwrap();
    }
    let seqs: Vec<u64> = sub
        .lines
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("0 simgate/v1/gw-seq/events "))
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    // At least once: a replay after a restart repeats a seq, which the platform drops.
    let mut seen = std::collections::HashSet::new();
    let first: Vec<u64> = seqs.into_iter().filter(|s| seen.insert(*s)).collect();
    assert_eq!(first, (1..=9).collect::<Vec<u64>>());
}

/// A TCP relay between the link and the broker that can swallow everything the broker
/// sends (PUBACKs included) and cut every connection, as a flaky link does.
struct Relay {
    port: u16,
    mute: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl Relay {
    async fn start(broker: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mute = Arc::new(AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (m, c) = (mute.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((agent, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(("127.0.0.1", broker)).await else {
                    continue;
                };
                let (mut ar, mut aw) = agent.into_split();
                let (mut br, mut bw) = up.into_split();
                let mute = m.clone();
                let mut cut = c.subscribe();
                tokio::spawn(async move {
                    let mut a = [0u8; 16 * 1024];
                    let mut b = [0u8; 16 * 1024];
                    loop {
                        tokio::select! {
                            _ = cut.changed() => break,
                            r = ar.read(&mut a) => match r {
                                Ok(0) | Err(_) => break,
                                Ok(k) => if bw.write_all(&a[..k]).await.is_err() { break },
                            },
                            r = br.read(&mut b) => match r {
                                Ok(0) | Err(_) => break,
                                Ok(k) => {
                                    if !mute.load(Ordering::SeqCst)
                                        && aw.write_all(&b[..k]).await.is_err()
                                    {
                                        break;
                                    }
                                }
                            },
                        }
                    }
                });
            }
        });
        Relay { port, mute, cut }
    }
}

/// Regression: after a lost acknowledgement (or a kill -9 before the deletion reached
/// the disk) the outbox replayed every status of a command, so the platform received
/// `received` and `executing` again after `successful`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_sends_a_command_status_older_than_one_already_sent() {
    let broker = Broker::start();
    let relay = Relay::start(broker.port).await;
    let mut sub = broker.subscribe("simgate/v1/gw-order/cmd/+/status");
    let dir = TempDir::new("state");
    let store = Store::open(dir.path()).unwrap();
    let (tx, _rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let url = format!("mqtt://127.0.0.1:{}", relay.port);
    let (link, task) = Link::start(
        &LinkSettings::new(&url, "gw-order"),
        &store,
        tx,
        cancel.clone(),
    )
    .unwrap();
    link.publish_command_status(&status("m0", CommandStatusWord::Successful))
        .unwrap();
    sub = expect(
        sub,
        "the first marker",
        "/m0/status".into(),
        "successful".into(),
    )
    .await;

    // From here the broker's PUBACKs are lost: what the agent sends reaches the
    // platform, yet stays in its outbox.
    relay.mute.store(true, Ordering::SeqCst);
    for word in [
        CommandStatusWord::Received,
        CommandStatusWord::Executing,
        CommandStatusWord::Successful,
    ] {
        link.publish_command_status(&status("c1", word)).unwrap();
    }
    sub = expect(
        sub,
        "c1 successful",
        "/c1/status".into(),
        "successful".into(),
    )
    .await;
    // The connection drops; the agent reconnects and replays its outbox.
    relay.mute.store(false, Ordering::SeqCst);
    relay.cut.send_modify(|g| *g += 1);
    link.publish_command_status(&status("m1", CommandStatusWord::Successful))
        .unwrap();
    sub = expect(
        sub,
        "the last marker",
        "/m1/status".into(),
        "successful".into(),
    )
    .await;

    let c1: Vec<String> = sub
        .lines
        .seen
        .iter()
        .filter_map(|l| l.strip_prefix("0 simgate/v1/gw-order/cmd/c1/status "))
        .map(|p| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["status"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let first_final = c1.iter().position(|s| s == "successful").unwrap();
    assert!(
        c1[first_final..].iter().all(|s| s == "successful"),
        "a status older than `successful` came after it: {c1:?}"
    );
    cancel.cancel();
    task.await.unwrap();
}
