//! The store's footprint on disk: bytes per queued outbox message, and the store's size
//! after many command ids. Prints figures; asserts nothing.
//!
//! `cargo bench --bench store --profile dev` (disk figures do not depend on the build).
//! MESSAGES=N sets the messages queued (default 20 000), IDS=N the command ids claimed
//! (default 100 000).
//!
//! Size on disk is what `du` would count for the state directory: the sum of the
//! allocated blocks of every file under it, after the store was flushed and closed.

use simgate::link::contract::{EventKind, EventMsg};
use simgate::sim::Location;
use simgate::store::commands::{CommandRecord, CommandState};
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

fn command_ids(n: u64) {
    let dir = tempdir("ids");
    let store = Store::open(&dir).expect("store");
    let empty = du(&dir);
    let t = Instant::now();
    let mut stored = 0u64;
    for i in 0..n {
        let rec = CommandRecord {
            id: format!("c-20261126-{i:06}"),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state: CommandState::Successful,
            reason: None,
            received_at: 1_795_702_078,
            updated_at: 1_795_702_078,
        };
        if store.claim_command(&rec).expect("claim").is_none() {
            stored += 1;
        }
    }
    let took = t.elapsed();
    drop(store);
    let full = du(&dir);
    println!(
        "command ids: {n} claimed ({stored} stored) in {took:.2?}; store {empty} B empty, \
         {full} B after: {} B per id claimed",
        (full - empty) / n.max(1)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    outbox(env("MESSAGES", 20_000));
    command_ids(env("IDS", 100_000));
}
