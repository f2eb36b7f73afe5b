//! The store's footprint on disk: bytes per queued outbox message, per rule firing, and
//! the store's size after many command ids. Prints figures; asserts nothing.
//!
//! `cargo bench --bench store --profile dev` (disk figures do not depend on the build).
//! MESSAGES=N sets the messages queued (default 20 000), IDS=N the command ids claimed
//! (default 100 000), FIRINGS=N the rule firings stored (default 5 000).
//!
//! Size on disk is what `du` would count for the state directory: the sum of the
//! allocated blocks of every file under it, after the store was flushed and closed.

use simgate::contract::{EventKind, EventMsg};
use simgate::sim::Location;
use simgate::store::commands::{Claim, CommandRecord, CommandState};
use simgate::store::outbox::Class;
use simgate::store::Store;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Allocated bytes of every file under `dir` (st_blocks are 512-byte units).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).expect("read state dir").flatten() {
        let md = e.metadata().expect("metadata");
        if md.is_dir() {
            total += du(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("simgate-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A typical event: a card inserted in a reader.
fn event(seq: u64) -> Vec<u8> {
    serde_json::to_vec(&EventMsg {
        v: 1,
        seq,
        ts: 1_795_702_078,
        kind: EventKind::Inserted {
            iccid: "8988211000000430010".into(),
            location: Location::Reader {
                reader: "Station Reader 00 00".into(),
            },
        },
    })
    .expect("encode")
}

fn outbox(n: u64) {
    let dir = tempdir("outbox");
    let store = Store::open(&dir).expect("store");
    let empty = du(&dir);
    let ob = store
        .outbox(simgate::store::outbox::Limits::messages(u64::MAX))
        .expect("outbox");
    let t = Instant::now();
    let mut payload_bytes = 0;
    for _ in 0..n {
        ob.push(
            Class::Event,
            "simgate/v1/gw-bench/events",
            false,
            None,
            |seq| {
                let p = event(seq);
                payload_bytes += p.len() as u64;
                p
            },
        )
        .expect("push");
    }
    let took = t.elapsed();
    drop((ob, store));
    let full = du(&dir);
    println!(
        "outbox: {n} events queued ({} B payload + 26 B topic each) in {took:.2?}; \
         store {empty} B empty, {full} B full: {} B on disk per queued message",
        payload_bytes / n.max(1),
        (full - empty) / n.max(1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `n` commands, one a second, each expiring `life` seconds after it arrives (with a
/// day-long life nothing expires during the run, so the cap decides).
fn command_ids(n: u64, life: u64) {
    let dir = tempdir("ids");
    let store = Store::open(&dir).expect("store");
    let empty = du(&dir);
    let t = Instant::now();
    let (mut stored, mut full) = (0u64, 0u64);
    let start = 1_795_702_078;
    for i in 0..n {
        let now = start + i;
        let rec = CommandRecord {
            id: format!("c-20261126-{i:06}"),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state: CommandState::Successful,
            code: None,
            reason: None,
            received_at: now,
            updated_at: now,
            keep_until: now + life,
            unreported: false,
            rows: None,
            profile: None,
        };
        match store.claim_command(&rec, now).expect("claim") {
            Claim::New => stored += 1,
            Claim::Full => full += 1,
            Claim::Known(_) => {}
        }
    }
    let took = t.elapsed();
    let held = store.all_commands().expect("commands").len();
    drop(store);
    let full_size = du(&dir);
    println!(
        "command ids: {n} claimed, one a second, each kept {life} s: {stored} stored, {full} \
         refused as too_many_commands, {held} held at the end, in {took:.2?}; store {empty} B \
         empty, {full_size} B after ({} B per id held)",
        (full_size - empty) / (held as u64).max(1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `n` rule firings (a data cap suspending), each stored with its SIM's rule state in one
/// transaction, then marked done with its outcome, as the daemon does.
fn firings(n: u64) {
    use simgate::rules::{ActionOutcome, Facts, Firing, RuleAction};
    use simgate::store::rules::{FiringRecord, SimRules};
    let dir = tempdir("firings");
    let store = Store::open(&dir).expect("store");
    let empty = du(&dir);
    let t = Instant::now();
    let mut state = SimRules::default();
    for i in 0..n {
        let iccid = format!("89012608862581{:05}", i % 1000);
        state.rules.entry("cap-5g".into()).or_default().fired = i + 1;
        let mut rec = FiringRecord {
            iccid: iccid.clone(),
            firing: Firing {
                id: format!("{iccid}.cap-5g.{}", i + 1),
                rule: "cap-5g".into(),
                trigger: "data_used_mb".into(),
                actions: vec![RuleAction::Suspend],
                facts: Facts {
                    now: 1_795_702_078 + i,
                    month: "2026-11".into(),
                    data_used_mb: Some(5121.4),
                    mcc: Some("204".into()),
                    ..Facts::default()
                },
            },
            actions: vec![ActionOutcome {
                action: RuleAction::Suspend,
                outcome: None,
                reason: None,
            }],
            done: false,
            at: 1_795_702_078 + i,
        };
        store
            .put_sim_rules(&iccid, &state, &[rec.clone()])
            .expect("firing");
        rec.actions[0].outcome = Some("done".into());
        rec.done = true;
        store.put_firing(&rec).expect("done");
    }
    let took = t.elapsed();
    drop(store);
    let full = du(&dir);
    println!(
        "firings: {n} stored and finished (1000 SIMs) in {took:.2?}; store {empty} B empty, \
         {full} B after: {} B on disk per firing",
        (full - empty) / n.max(1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    firings(env("FIRINGS", 5_000));
    outbox(env("MESSAGES", 20_000));
    command_ids(env("IDS", 100_000), 86_400);
    command_ids(env("IDS", 100_000), 300);
}
