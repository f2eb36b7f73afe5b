//! The station page on the real rig: its weight, the time from a card's insertion to
//! its row drawn in a real browser (headless chromium), and what open pages cost the
//! station's process.
//!
//! `cargo bench --bench web` (root: private pcscd; chromium as `make deps` installs it).
//! Prints figures; asserts nothing about time. ROUNDS=N insert/remove cycles (default 10).
//!
//! - Weight: the bytes of the page, its CSS and its script as served, and gzip -9'd
//!   (simgate serves them uncompressed: a LAN page, no compression dependency).
//! - Insert → row: the clock starts when the virtual card connects to vpcd (as in
//!   benches/insert_to_broker.rs) and stops at the page's own Date.now() when it first
//!   draws the SIM's row present (`window.simgateSeen`, src/http/page/app.js); both
//!   clocks are this machine's.
//! - RSS: VmRSS of the station (/proc/PID/status) with no page, one browser page, then
//!   ten more event streams (what a page costs simgate: one SSE connection each), then
//!   after they closed.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::browser::{http, Browser};
use support::{Pcsc, Proc, TempDir};

const ICCID: &str = "8988211000000430010";

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn gzip_len(bytes: &[u8]) -> usize {
    let mut gz = Command::new("gzip")
        .args(["-9", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    gz.stdin.take().unwrap().write_all(bytes).unwrap();
    gz.wait_with_output().unwrap().stdout.len()
}

/// An event stream held open like a page's, its snapshot read.
fn stream(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&got).contains("\"type\":\"snapshot\"") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream closed");
        got.extend_from_slice(&buf[..n]);
    }
    s
}

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let pcsc = Pcsc::start();
    let state = TempDir::new("bench-web");
    let port = support::free_port();
    let mut station = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .env("RUST_LOG", "warn")
            .args(["station", "--json", "--state-dir"])
            .arg(state.path())
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    support::wait_for("the page", Duration::from_secs(20), || {
        http(port, "GET", "/", &[], None).is_ok_and(|(s, _)| s == 200)
    });
    let _ = &mut station;

    let (mut raw, mut gz) = (0, 0);
    for path in ["/", "/app.css", "/app.js"] {
        let (_, body) = http(port, "GET", path, &[], None).unwrap();
        let (r, g) = (body.len(), gzip_len(body.as_bytes()));
        println!("page weight {path:<9} {r:>6} bytes  ({g:>5} gzip -9)");
        raw += r;
        gz += g;
    }
    println!("page weight total     {raw:>6} bytes  ({gz:>5} gzip -9)");
    let rss0 = rss_kib(station.pid());

    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.until(
        "the live page",
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
    );
    let rss1 = rss_kib(station.pid());

    let mut ms = Vec::new();
    for _ in 0..rounds {
        browser.js(
            &format!("delete window.simgateSeen['{ICCID}'];"),
            serde_json::json!([]),
        );
        let t0 = now_ms();
        let mut card = pcsc.connect_card(0, "usim.toml", &[], (Stdio::null(), Stdio::null()));
        let seen = browser.until(
            "the row",
            &format!("window.simgateSeen['{ICCID}']"),
            Duration::from_secs(20),
        );
        ms.push(seen.as_f64().unwrap() - t0);
        card.kill9();
        browser.until(
            "the row absent",
            &format!("document.querySelector('tr[data-iccid=\"{ICCID}\"]').className === 'absent'"),
            Duration::from_secs(20),
        );
    }
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "insert -> row on page  n={:<3} min {:>6.1} ms  median {:>6.1} ms  p90 {:>6.1} ms  max {:>6.1} ms",
        ms.len(),
        ms[0],
        pick(0.5),
        pick(0.9),
        ms[ms.len() - 1]
    );

    let streams: Vec<TcpStream> = (0..10).map(|_| stream(port)).collect();
    let rss10 = rss_kib(station.pid());
    drop(streams);
    // The station notices the closed sockets at its next write: a change to send.
    let _card = pcsc.insert(0, "usim.toml");
    browser.until(
        "the row present",
        &format!("document.querySelector('tr[data-iccid=\"{ICCID}\"]').className === 'present'"),
        Duration::from_secs(20),
    );
    let (_, snap) = http(port, "GET", "/state", &[], None).unwrap();
    let pages: serde_json::Value = serde_json::from_str(&snap).unwrap();
    let rss_after = rss_kib(station.pid());
    println!(
        "station VmRSS  no page {rss0} KiB  1 browser page {rss1} KiB  +10 pages {rss10} KiB  after they closed {rss_after} KiB (pages open then: {})",
        pages["pages"]
    );
}
