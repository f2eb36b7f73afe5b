//! A fleet on one broker: N `simgate run` agents (default 100, FLEET=N) on a private
//! mosquitto, the broker restarted after outages of 2 s and 20 s (OUTAGES=2,20), and
//! what the platform would see: how long until every agent is online again, how many
//! connect at once, what each agent costs in memory and the broker in CPU. Prints
//! figures; asserts nothing about time.
//!
//! `cargo bench --bench fleet` (`FLEET=300`: raise `ulimit -n` first, each agent holds
//! a few descriptors and mosquitto one per agent). The clock for an agent stops when the platform side
//! receives its fresh `health` "online" (a live publish, not the retained copy), counted
//! from the moment the broker listens again. The broker is stopped with SIGTERM so it
//! keeps its sessions (a restart, as for an upgrade); agents see their connection drop
//! either way. The observer keeps a persistent session, so an agent that connects before
//! the observer does is still seen (its message waits in the observer's session; the
//! observer retries every 10 ms, which bounds the error).

#[path = "../tests/support/mod.rs"]
mod support;

use rumqttc::{Event, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{simgate_bin, Broker, Proc, TempDir};

/// One fresh "online" seen by the observer: the agent's index and when.
type Online = (usize, Instant);

fn main() {
    let n: usize = env_or("FLEET", 100);
    let outages: Vec<u64> = std::env::var("OUTAGES")
        .unwrap_or_else(|_| "2,20".into())
        .split(',')
        .map(|s| s.trim().parse().expect("OUTAGES: seconds, comma-separated"))
        .collect();
    let mut broker = Broker::start();
    let url = broker.url();
    let (tx, rx) = mpsc::channel::<Online>();
    observe(broker.port, tx);
    let work = TempDir::new("fleet");

    let started = Instant::now();
    let mut agents: Vec<Proc> = (0..n)
        .map(|i| {
            let state = work.path().join(format!("a{i}"));
            Proc::spawn(
                "simgate run",
                Command::new(simgate_bin())
                    .args(["run", "--broker", &url, "--agent-id", &agent_id(i)])
                    .arg("--state-dir")
                    .arg(&state)
                    // No pcscd for the fleet: each agent waits for it quietly.
                    .env("PCSCLITE_CSOCK_NAME", work.path().join("no-pcscd"))
                    .env("RUST_LOG", "error")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
        })
        .collect();
    let first = all_online(&rx, n, started, Duration::from_secs(120), "start");
    println!("fleet: {n} agents (simgate run, no devices) on one mosquitto");
    println!("  start: {}", first.summary());
    settle(&rx);

    let rss: Vec<u64> = agents.iter().map(|a| rss_kib(a.pid())).collect();
    let rss_mean = rss.iter().sum::<u64>() / rss.len() as u64;
    println!(
        "  RSS per agent: mean {} KiB, max {} KiB",
        rss_mean,
        rss.iter().max().unwrap_or(&0)
    );

    for secs in outages {
        broker.stop_graceful();
        std::thread::sleep(Duration::from_secs(secs)); // the outage itself
        broker.restart();
        let back = Instant::now();
        let cpu_at = cpu_ticks(broker.pid()).unwrap_or(0);
        let r = all_online(&rx, n, back, Duration::from_secs(180), "recovery");
        let cpu = cpu_ticks(broker.pid()).unwrap_or(cpu_at) - cpu_at;
        let span = r.max.max(Duration::from_millis(1));
        println!(
            "  outage {secs:>2} s: {}; broker CPU {:.2} s ({:.0}% of one core over the recovery)",
            r.summary(),
            cpu as f64 / ticks_per_sec(),
            100.0 * cpu as f64 / ticks_per_sec() / span.as_secs_f64()
        );
        settle(&rx);
    }
    for a in agents.iter_mut() {
        a.interrupt();
    }
}

fn agent_id(i: usize) -> String {
    format!("fleet-{i:04}")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

/// The platform side: a persistent session subscribed to every agent's health, retrying
/// every 10 ms while the broker is away; fresh "online" messages go to `tx`.
fn observe(port: u16, tx: mpsc::Sender<Online>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("observer runtime");
        rt.block_on(async move {
            let mut opts = MqttOptions::new("fleet-observer", "127.0.0.1", port);
            opts.set_clean_session(false);
            opts.set_keep_alive(Duration::from_secs(30));
            let (client, mut events) = rumqttc::AsyncClient::new(opts, 1024);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.try_subscribe("simgate/v1/+/health", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if !p.retain => {
                        let online =
                            std::str::from_utf8(&p.payload).is_ok_and(|s| s.contains("\"online\""));
                        let idx = p
                            .topic
                            .split('/')
                            .nth(2)
                            .and_then(|a| a.strip_prefix("fleet-"))
                            .and_then(|i| i.parse().ok());
                        if let (true, Some(i)) = (online, idx) {
                            let _ = tx.send((i, Instant::now()));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    });
}

/// When each of the fleet came online, relative to `from`.
struct Round {
    times: Vec<Duration>,
    max: Duration,
    /// The most agents online within any one second.
    peak_per_sec: usize,
}

impl Round {
    fn summary(&self) -> String {
        let pct = |p: f64| self.times[((self.times.len() - 1) as f64 * p).round() as usize];
        format!(
            "all {} online after {:.1} s (median {:.1} s, p90 {:.1} s); peak {} connects/s",
            self.times.len(),
            self.max.as_secs_f64(),
            pct(0.5).as_secs_f64(),
            pct(0.9).as_secs_f64(),
            self.peak_per_sec
        )
    }
}

/// Wait until every agent sent a fresh "online" (its first one counts).
fn all_online(
    rx: &mpsc::Receiver<Online>,
    n: usize,
    from: Instant,
    limit: Duration,
    what: &str,
) -> Round {
    let mut seen: HashMap<usize, Instant> = HashMap::new();
    let deadline = from + limit;
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, at)) if i < n => {
                seen.entry(i).or_insert(at);
            }
            Ok(_) => {}
            Err(_) => panic!(
                "{what}: only {} of {n} agents online after {limit:?}; missing e.g. {}",
                seen.len(),
                (0..n)
                    .find(|i| !seen.contains_key(i))
                    .map(agent_id)
                    .unwrap_or_default()
            ),
        }
    }
    let mut times: Vec<Duration> = seen
        .values()
        .map(|t| t.saturating_duration_since(from))
        .collect();
    times.sort();
    let peak_per_sec = times
        .iter()
        .enumerate()
        .map(|(k, t)| times[k..].partition_point(|u| *u < *t + Duration::from_secs(1)))
        .max()
        .unwrap_or(0);
    Round {
        max: *times.last().expect("n > 0"),
        times,
        peak_per_sec,
    }
}

/// Drain what is left of a round (repeated onlines) and let the fleet be quiet a moment.
fn settle(rx: &mpsc::Receiver<Online>) {
    std::thread::sleep(Duration::from_secs(1));
    while rx.try_recv().is_ok() {}
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks (proc(5)).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_sec() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux architecture simgate runs on.
    100.0
}
