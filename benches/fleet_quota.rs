//! A fleet's reconnect against a broker's CONNECT quota, simulated: 100,000 agents
//! (FLEET=N) each running the link's own reconnect policy (src/link/reconnect.rs,
//! `Reconnect`, one seed per agent), a broker that accepts at most 300 CONNECTs per
//! second (QUOTA=N; a token bucket holding one second's worth) and answers the rest
//! with a refusal (CONNACK "server unavailable", the turned-away regime). No sockets,
//! no sleeping: simulated time, so 100,000 agents take a second of CPU.
//!
//! Two events: the broker restarts (every agent drops; the broker is back OUTAGE=20
//! seconds later), and one node of three is lost (a third of the fleet drops; the
//! surviving nodes take them at once, under the same quota). Each runs three times: with
//! the defaults (no fleet setting), with `broker.fleet_size` = FLEET and
//! `broker.fleet_connects_per_s` = QUOTA, and with 80% of QUOTA. Printed: accepted and refused CONNECTs per
//! second over time, the busiest second, and the time until every agent is back.
//!
//! `cargo bench --bench fleet_quota` (or, with the debug build, `cargo test --bench
//! fleet_quota`). Asserts nothing: MQTT.md ("Clusters") carries the figures.

use simgate::link::reconnect::{Failure, Reconnect, DEFAULT_RECONNECT_MAX};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

fn main() {
    let fleet: usize = env_or("FLEET", 100_000);
    let quota: u64 = env_or("QUOTA", 300);
    let outage: u64 = env_or("OUTAGE", 20);
    let window = Duration::from_millis(fleet as u64 * 1000 / quota);
    // The setting a little under the quota (80%): the arrivals' fluctuation then
    // rarely meets the quota.
    let under = quota * 4 / 5;
    let window_under = Duration::from_millis(fleet as u64 * 1000 / under);
    println!(
        "fleet_quota: {fleet} agents, broker quota {quota} CONNECT/s (1 s burst), reconnect_max {} s",
        DEFAULT_RECONNECT_MAX.as_secs()
    );
    for (event, dropped, down) in [
        ("broker restart", fleet, outage * 1000),
        ("one node of three lost", fleet / 3, 0),
    ] {
        for (setting, w) in [
            ("defaults (no fleet setting)".to_string(), None),
            (
                format!(
                    "fleet_size {fleet}, fleet_connects_per_s {quota} (window {} s)",
                    window.as_secs()
                ),
                Some(window),
            ),
            (
                format!(
                    "fleet_size {fleet}, fleet_connects_per_s {under} (window {} s)",
                    window_under.as_secs()
                ),
                Some(window_under),
            ),
        ] {
            let r = simulate(dropped, quota, down, w);
            println!(
                "\n{event}, {dropped} agents dropped{}; {setting}:",
                match down {
                    0 => String::new(),
                    d => format!(", broker back after {} s", d / 1000),
                }
            );
            r.print();
        }
    }
}

/// What one simulated run saw.
struct Run {
    /// Per second since the drop: CONNECTs accepted, refused.
    accepted: Vec<u64>,
    refused: Vec<u64>,
    /// Attempts while the broker was down (TCP refused: no CONNECT, no quota).
    unreachable: u64,
    /// When the last agent was back (ms since the drop).
    all_back_ms: u64,
}

/// `n` agents, all connected for long, drop at t = 0; the broker is unreachable until
/// `down_ms`, then accepts `quota` CONNECTs a second.
fn simulate(n: usize, quota: u64, down_ms: u64, window: Option<Duration>) -> Run {
    let mut agents: Vec<Reconnect> = (0..n)
        .map(|i| {
            let mut r = Reconnect::with_seed(
                DEFAULT_RECONNECT_MAX,
                window,
                0x9e37_79b9_7f4a_7c15 ^ (i as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            );
            r.connected();
            r
        })
        .collect();
    // (time in ms, agent): the next attempts, earliest first.
    let mut next: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for (i, a) in agents.iter_mut().enumerate() {
        let w = a.wait(Some(Duration::from_secs(3600)), Failure::Unreachable);
        next.push(Reverse((w.as_millis() as u64, i)));
    }
    let mut run = Run {
        accepted: Vec::new(),
        refused: Vec::new(),
        unreachable: 0,
        all_back_ms: 0,
    };
    // Token bucket in thousandths of a token: `quota` per second, one second's burst.
    let cap = quota * 1000;
    let (mut tokens, mut last) = (cap, down_ms);
    let count = |v: &mut Vec<u64>, t: u64| {
        let s = (t / 1000) as usize;
        if v.len() <= s {
            v.resize(s + 1, 0);
        }
        v[s] += 1;
    };
    while let Some(Reverse((t, i))) = next.pop() {
        if t < down_ms {
            run.unreachable += 1;
            let w = agents[i].wait(None, Failure::Unreachable);
            next.push(Reverse((t + w.as_millis() as u64, i)));
            continue;
        }
        tokens = (tokens + (t - last) * quota).min(cap);
        last = t;
        if tokens >= 1000 {
            tokens -= 1000;
            agents[i].connected();
            count(&mut run.accepted, t);
            run.all_back_ms = t;
        } else {
            count(&mut run.refused, t);
            let w = agents[i].wait(None, Failure::TurnedAway);
            next.push(Reverse((t + w.as_millis().max(1) as u64, i)));
        }
    }
    let len = run.accepted.len().max(run.refused.len());
    run.accepted.resize(len, 0);
    run.refused.resize(len, 0);
    run
}

impl Run {
    fn print(&self) {
        let peak = self.accepted.iter().max().copied().unwrap_or(0);
        let refused: u64 = self.refused.iter().sum();
        println!(
            "  all back after {:.1} s; busiest second {peak} accepted; {refused} CONNECTs refused over quota; \
             {} attempts while the broker was away",
            self.all_back_ms as f64 / 1000.0,
            self.unreachable
        );
        // The curve, in 20 slices of the recovery: mean CONNECTs per second in each.
        let secs = self.accepted.len().max(1);
        let slice = secs.div_ceil(20).max(1);
        println!(
            "  {:>9}  {:>12}  {:>11}",
            "seconds", "accepted/s", "refused/s"
        );
        for start in (0..secs).step_by(slice) {
            let end = (start + slice).min(secs);
            let span = (end - start) as f64;
            let acc: u64 = self.accepted[start..end].iter().sum();
            let refd: u64 = self.refused[start..end].iter().sum();
            let bar = "#".repeat(((acc as f64 / span) / 20.0).round() as usize);
            println!(
                "  {:>4}-{:<4}  {:>12.0}  {:>11.0}  {bar}",
                start,
                end,
                acc as f64 / span,
                refd as f64 / span
            );
        }
    }
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
