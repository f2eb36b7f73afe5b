//! Insert-to-broker latency on the real rig: a virtual card goes into a vpcd reader of
//! a private pcscd, and the clock stops when the SIM's retained state (present: true)
//! reaches a subscriber on a private mosquitto. Then the removal, likewise.
//!
//! `cargo bench --bench insert_to_broker` (root: private pcscd). Prints figures; asserts
//! nothing about time. ROUNDS=N sets the number of insert/remove cycles (default 20).

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Instant;
use support::{Broker, Pcsc, Proc, TempDir};

fn summary(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<22} n={:<3} min {:>7.1} ms  median {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms",
        ms.len(),
        ms[0],
        pick(0.5),
        pick(0.9),
        ms[ms.len() - 1]
    );
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("bench-state");
    let topic = "simgate/v1/bench/sim/8988211000000430010/state";
    let mut sub = broker.subscribe(topic);
    let _run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .env("RUST_LOG", "warn")
            .args(support::run_args(&broker.url(), "bench"))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let (mut inserted, mut removed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // The clock starts when the card connects to vpcd: the moment a person's card
        // touches the reader's contacts.
        let t0 = Instant::now();
        let mut card = pcsc.connect_card(0, "usim.toml", &[], (Stdio::null(), Stdio::null()));
        sub.expect("present", |m| m.payload["present"] == true);
        inserted.push(t0.elapsed().as_secs_f64() * 1e3);
        let t1 = Instant::now();
        card.interrupt();
        sub.expect("absent", |m| m.payload["present"] == false);
        removed.push(t1.elapsed().as_secs_f64() * 1e3);
    }
    summary("insert -> broker", inserted);
    summary("remove -> broker", removed);
}
