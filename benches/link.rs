//! The platform link's costs, measured against a private mosquitto: bytes on the wire
//! for an idle gateway and for one SIM reporting usage, and how fast the outbox drains
//! after an outage. Prints figures; asserts nothing about time.
//!
//! `cargo bench --bench link` (add `--profile dev` for a quick, slower build). DRAIN=N
//! sets the backlog (default 10 000), WINDOW=N the publishes in flight (default 16).
//! The drains of 240 and 2 400 events are then set against `mosquitto_pub -l` sending
//! the same payloads at QoS 1, run in pairs (PAIRS=N, default 9) so that the ratio
//! holds while the shared machine's speed drifts: `cargo bench --bench link -- drain`
//! runs that part alone.
//!
//! Bytes are counted by a TCP relay between the link and mosquitto: every byte the
//! agent's socket sends or receives, i.e. MQTT bytes on the wire (TCP/IP and TLS
//! overheads are estimated, not counted). Per-day figures scale measured per-packet
//! costs by the configured intervals; the relay makes the short run exact.

#[path = "../tests/support/mod.rs"]
mod support;

use simgate::contract::{EventKind, UsageSample};
use simgate::link::{Link, LinkSettings};
use simgate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Broker, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Bytes through the relay: agent → broker, broker → agent.
#[derive(Default)]
struct Counters {
    up: AtomicU64,
    down: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.up.load(Ordering::Relaxed) + self.down.load(Ordering::Relaxed)
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: Arc<Counters>,
    up: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let k = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        if up {
            n.up.fetch_add(k as u64, Ordering::Relaxed);
        } else {
            n.down.fetch_add(k as u64, Ordering::Relaxed);
        }
        if to.write_all(&buf[..k]).await.is_err() {
            break;
        }
    }
}

/// A counting relay to the broker on `port`; returns the relay's port.
async fn relay(port: u16, n: Arc<Counters>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let lport = l.local_addr().expect("relay addr").port();
    tokio::spawn(async move {
        while let Ok((a, _)) = l.accept().await {
            let Ok(b) = TcpStream::connect(("127.0.0.1", port)).await else {
                continue;
            };
            let (ar, aw) = a.into_split();
            let (br, bw) = b.into_split();
            tokio::spawn(pipe(ar, bw, n.clone(), true));
            tokio::spawn(pipe(br, aw, n.clone(), false));
        }
    });
    lport
}

fn settings(url: String, agent: &str) -> LinkSettings {
    LinkSettings::new(&url, agent)
}

/// Wait for `f`, looking every 50 µs (a drain of 240 messages takes a few ms: the
/// runtime's 1 ms timer would be a quarter of it). Blocks this thread, which is not one
/// of the runtime's workers (`main`'s `block_on`): the link goes on meanwhile.
fn wait_closely(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Instant {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return Instant::now();
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// CPU time (ns) of this process's runtime workers, where the link's driver runs:
/// /proc/self/task/*/schedstat (its first field, time on a CPU), which a loaded machine
/// does not inflate as it does wall time.
fn workers_cpu_ns() -> u64 {
    std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("tokio-"))
        })
        .filter_map(|t| {
            std::fs::read_to_string(t.path().join("schedstat"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

async fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Bytes per keepalive exchange and per usage batch, and the connect cost.
/// With `tls`, over mqtts:// (TLS 1.3, server certificate checked, no client
/// certificate): the relay then counts TLS records, handshake included.
async fn bytes_on_the_wire(tls: bool) {
    let pki = support::Pki::new(&[]);
    let broker = if tls {
        Broker::start_with(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.path("ca.pem"),
            pki.path("server.pem"),
            pki.path("server.key")
        ))
    } else {
        Broker::start()
    };
    println!(
        "--- over {} ---",
        if tls { "mqtts:// (TLS)" } else { "mqtt://" }
    );
    let n = Arc::new(Counters::default());
    let port = relay(broker.port, n.clone()).await;
    let state = TempDir::new("bench-bytes");
    let store = Store::open(state.path()).expect("store");
    let (tx, _rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let ka = 2u64;
    let scheme = if tls { "mqtts" } else { "mqtt" };
    let mut s = settings(format!("{scheme}://127.0.0.1:{port}"), "gw-bytes");
    if tls {
        s.ca_file = Some(pki.path("ca.pem").into());
    }
    s.keepalive = Duration::from_secs(ka);
    // Far away: the idle phase must see pings only.
    s.usage_interval = Duration::from_secs(3600);
    let (link, task) = Link::start(&s, &store, tx, cancel.clone()).expect("link");

    // Connect: CONNECT/CONNACK, SUBSCRIBE/SUBACK, health online and its PUBACK.
    wait_until("the connection", Duration::from_secs(10), || n.total() > 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connect = n.total();

    // Idle: nothing but keepalive pings.
    let rounds = 5u64;
    let t0 = n.total();
    tokio::time::sleep(Duration::from_secs(ka * rounds)).await;
    let per_ping = (n.total() - t0) as f64 / rounds as f64;

    // One SIM's usage batch (the batching itself is the link's: report, then flush).
    let batches = 20u64;
    let t0 = n.total();
    for i in 0..batches {
        link.report_usage(UsageSample {
            iccid: "8988211000000430010".into(),
            month: "2026-11".into(),
            rx: 123_456_789 + i * 1_000_000,
            tx: 12_345_678 + i * 100_000,
            at: 1_795_702_990 + i * 900,
        });
        link.flush_usage().expect("queue usage");
        wait_until("the batch's PUBACK", Duration::from_secs(5), || {
            link.queued() == 0
        })
        .await;
    }
    let per_batch = (n.total() - t0) as f64 / batches as f64;
    cancel.cancel();
    let _ = task.await;

    let day = 86_400.0;
    let idle_day = per_ping * day / 300.0;
    let usage_day = per_batch * day / 900.0;
    println!("connect (CONNECT..SUBACK, health online + PUBACK): {connect} B");
    println!("one keepalive exchange (PINGREQ+PINGRESP):          {per_ping:.0} B");
    println!("one usage batch, one SIM (PUBLISH+PUBACK):          {per_batch:.0} B");
    println!(
        "idle gateway, keepalive 300 s:       {idle_day:>7.0} B/day on the socket (+ one connect, {connect} B, per reconnect)"
    );
    println!(
        "1 SIM, usage every 15 min (+ idle):  {:>7.0} B/day on the socket (usage alone {usage_day:.0} B/day)",
        idle_day + usage_day
    );
    // TCP/IP estimate: each MQTT packet travels in its own segment (52 B IPv4+TCP with
    // timestamps), and the peer's delayed ACK usually rides on the answer packet.
    let pkts_day = (2.0 * day / 300.0) + (2.0 * day / 900.0);
    let tls_note = if tls {
        ""
    } else {
        "; TLS adds its own (see the mqtts:// run)"
    };
    println!(
        "  with TCP/IPv4 headers (~52 B per packet, {pkts_day:.0} packets/day): ~{:.0} B/day{tls_note}",
        idle_day + usage_day + pkts_day * 52.0
    );
}

/// Cross-check with mosquitto's own counters: `$SYS/broker/bytes/{received,sent}` over
/// an idle window with only the agent connected, minus the exact size of the `$SYS`
/// messages the counter reader itself received (QoS 0 PUBLISH: 2 B of fixed header, 2 B
/// of topic length, the topic and the payload).
async fn sys_counters_cross_check() {
    let broker = Broker::start_with("sys_interval 1");
    let state = TempDir::new("bench-sys");
    let store = Store::open(state.path()).expect("store");
    let (tx, _rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let ka = 2u64;
    let mut s = settings(broker.url(), "gw-sys");
    s.keepalive = Duration::from_secs(ka);
    s.usage_interval = Duration::from_secs(3600);
    let (_link, task) = Link::start(&s, &store, tx, cancel.clone()).expect("link");

    let opts = simgate::link::client_options(
        &broker.url(),
        "bench-sys-reader".into(),
        &Default::default(),
    )
    .expect("options");
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
    client
        .subscribe("$SYS/broker/bytes/+", rumqttc::QoS::AtMostOnce)
        .await
        .expect("subscribe");
    // (counter value, reader bytes so far) at each `sent` update.
    let mut received = 0u64;
    let mut own = 0u64;
    let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
    let window = Duration::from_secs(ka * 6);
    let started = Instant::now();
    while started.elapsed() < window + Duration::from_secs(3) {
        let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_secs(3), el.poll()).await else {
            break;
        };
        if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = ev {
            own += 4 + p.topic.len() as u64 + p.payload.len() as u64;
            let v: u64 = String::from_utf8_lossy(&p.payload)
                .trim()
                .parse()
                .unwrap_or(0);
            if p.topic.ends_with("/received") {
                received = v;
            } else if received > 0 {
                samples.push((Instant::now(), received + v, own));
            }
        }
    }
    cancel.cancel();
    let _ = task.await;
    // Skip the first seconds (connects); compare two samples `window` apart at most.
    let Some(first) = samples
        .iter()
        .find(|s| s.0 >= started + Duration::from_secs(2))
    else {
        println!("$SYS cross-check: no counters received");
        return;
    };
    let last = samples.last().expect("at least the first sample");
    let secs = last.0.duration_since(first.0).as_secs_f64();
    // The reader's own SUBSCRIBE/CONNECT fall before `first`; its received $SYS
    // messages inside the window are subtracted exactly.
    let agent = (last.1 - first.1).saturating_sub(last.2 - first.2);
    println!(
        "$SYS cross-check: {agent} B in {secs:.1} s of idle with keepalive {ka} s = {:.1} B per keepalive exchange",
        agent as f64 / (secs / ka as f64)
    );
}

/// Queue `n` events with no broker, start the broker, time the drain (from the first
/// acknowledgement seen to the last, polled every millisecond).
async fn drain_after_outage(count: u64) -> (Duration, Duration, Vec<u8>) {
    let port = support::free_port();
    let state = TempDir::new("bench-drain");
    let store = Store::open(state.path()).expect("store");
    let (tx, _rx) = tokio::sync::mpsc::channel(simgate::link::INBOUND_QUEUE);
    let cancel = CancellationToken::new();
    let mut s = settings(format!("mqtt://127.0.0.1:{port}"), "gw-drain");
    s.keepalive = Duration::from_secs(60);
    if let Some(w) = std::env::var("WINDOW").ok().and_then(|v| v.parse().ok()) {
        s.window = w;
    }
    let (link, task) = Link::start(&s, &store, tx, cancel.clone()).expect("link");
    let t = Instant::now();
    for i in 0..count {
        link.publish_event(EventKind::Error {
            iccid: Some("8988211000000430010".into()),
            code: simgate::contract::RefusalCode::Failed,
            reason: format!("bench event {i}"),
        })
        .expect("queue");
    }
    let enqueue = t.elapsed();
    println!(
        "queued {count} events offline in {:.2} s ({:.0}/s, each flushed to disk)",
        enqueue.as_secs_f64(),
        count as f64 / enqueue.as_secs_f64()
    );
    // The first message as queued: mosquitto_pub gets the same payload.
    let sample = store
        .outbox(simgate::store::outbox::Limits::messages(u64::MAX))
        .and_then(|o| o.next_after(None))
        .expect("outbox readable")
        .map(|(_, e)| e.payload)
        .unwrap_or_default();
    let cpu = workers_cpu_ns();
    let _broker = Broker::start_on(port, "");
    let t = wait_closely("the drain to start", Duration::from_secs(120), || {
        link.queued() < count
    });
    let first = link.queued();
    let d = wait_closely("the drain to finish", Duration::from_secs(600), || {
        link.queued() == 0
    }) - t;
    println!(
        "drained {count} messages in {:.2} s: {:.0} messages/s acknowledged (window {})",
        d.as_secs_f64(),
        count as f64 / d.as_secs_f64(),
        s.window
    );
    cancel.cancel();
    let _ = task.await;
    // The messages acknowledged before the clock started are scaled in.
    // CPU from the broker's start to the last acknowledgement: connect included.
    let cpu = Duration::from_nanos(workers_cpu_ns().saturating_sub(cpu));
    (d.mul_f64(count as f64 / first.max(1) as f64), cpu, sample)
}

/// The same messages (count, size, QoS 1) through `mosquitto_pub -l` to `broker`: its
/// run time less that of a run with no line just before (process start, connect,
/// disconnect).
fn mosquitto_pub_drain(broker: &Broker, count: u64, payload: &[u8]) -> Duration {
    let payload = String::from_utf8_lossy(payload);
    let lines: String = (0..count).map(|_| format!("{payload}\n")).collect();
    let run = |input: &str| {
        let t = Instant::now();
        let mut child = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-q", "1", "-t", "simgate/v1/gw-pub/event", "-l"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("mosquitto_pub");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin
                .write_all(input.as_bytes())
                .expect("lines to mosquitto_pub");
        }
        assert!(child.wait().expect("mosquitto_pub").success());
        t.elapsed()
    };
    let empty = run("");
    run(&lines).saturating_sub(empty)
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The drain of `count` events against `mosquitto_pub -l`, in pairs: medians of each
/// side and of the pairs' ratios, and the CPU time the link's driver spent (from the
/// broker's start, connect included), which a loaded machine does not inflate.
async fn drain_against_mosquitto_pub(count: u64, pairs: usize) {
    let broker = Broker::start();
    let (mut ours, mut theirs, mut ratios, mut cpus) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..pairs {
        let (d, cpu, payload) = drain_after_outage(count).await;
        let m = mosquitto_pub_drain(&broker, count, &payload);
        ours.push(d.as_micros() as u64);
        theirs.push(m.as_micros() as u64);
        ratios.push((d.as_secs_f64() / m.as_secs_f64().max(1e-6) * 1000.0) as u64);
        cpus.push(cpu.as_micros() as u64);
    }
    let ms = |v: Vec<u64>| median(v) as f64 / 1e3;
    let cpu = ms(cpus);
    println!(
        "drain of {count}: simgate {:.1} ms, mosquitto_pub -l {:.1} ms: {:.2}x, the median of {pairs} pairs' ratios; the link's CPU {cpu:.1} ms ({:.1} us a message) (load {})",
        ms(ours),
        ms(theirs),
        ms(ratios),
        cpu * 1e3 / count as f64,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn main() {
    // Parts named on the command line (after `--`: bytes, drain), else both.
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| asked.is_empty() || asked.iter().any(|a| a == s);
    let pairs = std::env::var("PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        if wants("bytes") {
            bytes_on_the_wire(false).await;
            bytes_on_the_wire(true).await;
            sys_counters_cross_check().await;
        }
        if wants("drain") {
            let n = std::env::var("DRAIN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(10_000);
            let _ = drain_after_outage(n).await;
            // The figure: 240 events, against `mosquitto_pub -l` (QoS 1, its
            // default 20 in flight) sending the same count of lines of the same size.
            for count in [240, 2400] {
                drain_against_mosquitto_pub(count, pairs).await;
            }
        }
    });
}
