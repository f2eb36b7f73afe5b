//! A provisioning station's cost (`simgate station --provision`): Blank eUICCs inserted
//! one after another into a reader (pcscd + vpcd, the virtual eUICC answering after 5 ms
//! per APDU, as a T=0 card in a real reader), each downloading a profile from the test
//! SM-DP+ on loopback. Printed per card: the wall time from the card's insertion to the
//! station's "OK — take it out" (read, code assigned and stored, download, verified,
//! stored as used, results CSV fsynced), the station's own figure (assignment to end),
//! then the store's bytes per provisioning record (key and value, after the batch).
//!
//!     cargo bench --bench station_provision --profile dev   # as root: private pcscd + vpcd
//!
//! Times are printed, never asserted: they depend on the machine.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{smdp, Lines, Pcsc, Proc, TempDir};

const CARDS: usize = 5;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let dir = TempDir::new("bench-provision");
    let pki = smdp::rsp_pki(
        &dir.path().join("pki"),
        &smdp::eid("890490321234512345123456784000"),
    );
    let server = smdp::Smdp::start(&pki, &smdp::shipped_profiles(), &[]);
    let pcsc = Pcsc::start();
    for (label, matching) in [
        ("small profile (558-byte package)", "SIMGATE-TEST-1"),
        ("24 KB profile", "SIMGATE-TEST-BIG"),
    ] {
        // The test SM-DP+ releases a matching ID any number of times: the codes differ
        // by their (ignored) OID field, so the station sees CARDS distinct codes.
        let codes = dir.path().join(format!("{matching}.csv"));
        let mut text = "activation_code\n".to_string();
        for k in 0..CARDS {
            text.push_str(&format!("{}$1.{k}\n", server.activation_code(matching)));
        }
        std::fs::write(&codes, text).unwrap();
        let state = dir.path().join(format!("state-{matching}"));
        let mut st = Proc::spawn(
            "simgate station --provision",
            pcsc.simgate()
                .env("RUST_LOG", "warn")
                .args(["station", "--json", "--state-dir"])
                .arg(&state)
                .arg("--provision")
                .arg(&codes)
                .arg("--ci-dir")
                .arg(&pki)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let mut out = Lines::new(st.child.stdout.take().unwrap());
        let (mut wall, mut own) = (Vec::new(), Vec::new());
        for k in 0..CARDS {
            let eid = smdp::eid(&format!("8904903212345123451234567841{k:02}"));
            let (image, keys) = smdp::blank_euicc(&pki, dir.path(), &eid);
            let started = Instant::now();
            let mut card = pcsc.connect_card(
                0,
                image.to_str().unwrap(),
                &["--pki", keys.to_str().unwrap(), "--latency-ms", "5"],
                (Stdio::null(), Stdio::null()),
            );
            let end = out.expect("the card's end", Duration::from_secs(120), |l| {
                l.contains("\"provision\":\"done\"")
            });
            wall.push(started.elapsed().as_millis() as u64);
            let v: serde_json::Value = serde_json::from_str(&end).unwrap();
            assert_eq!(v["result"], "ok", "{v}");
            own.push(v["ms"].as_u64().unwrap_or(0));
            let _ = card.interrupt();
            support::wait_for("the card gone", Duration::from_secs(10), || {
                let o = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
                let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                l.as_array()
                    .is_some_and(|rs| rs.iter().all(|r| r["card_present"] == false))
            });
        }
        st.interrupt();
        drop(st);
        let store = simgate::store::Store::open(&state).unwrap();
        let (n, bytes) = store.assignment_bytes().unwrap();
        println!(
            "{label:34} per card, insertion to OK: median {} ms (min {}, max {}); station's own (assignment to end): median {} ms; store: {n} records, {} bytes each",
            median(wall.clone()),
            wall.iter().min().unwrap(),
            wall.iter().max().unwrap(),
            median(own),
            bytes / n.max(1) as u64
        );
    }
}
