//! What a gateway pays for simgate, on the rig: the daemon's resident memory with two
//! readers and two modems (and where it goes: the binary's pages, heap and stacks,
//! threads), `simgate read`'s peak, and `read` on a quiet machine against the same read
//! with a CPU hog on every core (wall time, and the context switches behind it).
//!
//!     cargo build --release --locked --no-default-features   # the gateway binary
//!     cargo bench --bench lean --profile dev                 # as root: pcscd + vpcd
//!
//! GATEWAY_BIN names the binary measured (default target/release/simgate, the gateway
//! build `make deb` packages); the virtual cards and modems come from this build's own
//! binary (the `emulators` feature). Needs GNU time (/usr/bin/time, Debian's `time`) for a
//! finished process's peak RSS and context switches. The machine is shared: each section
//! prints the load average it ran under. Prints figures; asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Broker, Modem, Pcsc, Proc, TempDir};

const RUNS: usize = 15;

fn gateway_bin() -> String {
    std::env::var("GATEWAY_BIN").unwrap_or_else(|_| {
        support::repo()
            .join("target/release/simgate")
            .to_string_lossy()
            .into_owned()
    })
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A /proc/PID/status field, in its unit (kB for memory).
fn status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident KiB of the mappings of the binary itself (its code and data pages).
fn rss_of_binary(pid: u32, binary: &str) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut total = 0;
    let mut ours = false;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            if ours {
                total += kb
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        } else if line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            // A mapping's header: "start-end perms offset dev inode path".
            ours = line.ends_with(binary);
        }
    }
    total
}

/// Peak RSS (KiB), voluntary and involuntary context switches, wall time of one run of
/// `cmd` under GNU time.
fn timed(cmd: &mut Command) -> (u64, u64, u64, Duration) {
    let out_file = std::env::temp_dir().join(format!("simgate-lean-{}", std::process::id()));
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run under /usr/bin/time");
    let wall = t.elapsed();
    let text = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    (f[0], f[1], f[2], wall)
}

fn time_cmd(bin: &str) -> Command {
    let out_file = std::env::temp_dir().join(format!("simgate-lean-{}", std::process::id()));
    let mut c = Command::new("/usr/bin/time");
    c.arg("-o").arg(out_file).args(["-f", "%M %w %c", bin]);
    c
}

fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    v[v.len() / 2]
}

/// `read` of the card in reader 0, RUNS times: medians of wall ms, context switches
/// (voluntary, involuntary) and the largest peak RSS.
fn reads(pcsc: &Pcsc, bin: &str) -> (u64, u64, u64, u64) {
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let mut c = time_cmd(bin);
        c.env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("RUST_LOG", "warn")
            .args(["read", "--json", "--reader", &pcsc.reader(0)]);
        runs.push(timed(&mut c));
    }
    (
        median(runs.iter().map(|r| r.3.as_millis() as u64).collect()),
        median(runs.iter().map(|r| r.1).collect()),
        median(runs.iter().map(|r| r.2).collect()),
        runs.iter().map(|r| r.0).max().unwrap_or(0),
    )
}

/// A busy loop on every core until dropped.
struct Hog(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl Hog {
    fn start() -> Hog {
        let stop = Arc::new(AtomicBool::new(false));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                    }
                })
            })
            .collect();
        Hog(stop, threads)
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

fn read_under_load(pcsc: &Pcsc, bin: &str) {
    println!("\n`simgate read` of a USIM, 5 ms per APDU (median of {RUNS}; peak RSS the largest)");
    let _card = pcsc.insert_with(0, "usim.toml", &["--latency-ms", "5"]);
    println!(
        "{:24} {:>8} {:>10} {:>12} {:>10}  load",
        "", "wall ms", "vol. cs", "invol. cs", "peak KiB"
    );
    let quiet = load();
    let (ms, vol, invol, peak) = reads(pcsc, bin);
    println!(
        "{:24} {ms:>8} {vol:>10} {invol:>12} {peak:>10}  {quiet}",
        "as the machine is"
    );
    let hog = Hog::start();
    let busy = load();
    let (hms, hvol, hinvol, hpeak) = reads(pcsc, bin);
    drop(hog);
    println!(
        "{:24} {hms:>8} {hvol:>10} {hinvol:>12} {hpeak:>10}  {busy}",
        "a CPU hog on every core"
    );
    println!(
        "under the hog / without: {:.2}x",
        hms as f64 / ms.max(1) as f64
    );
}

/// The daemon with two readers (a USIM, an eUICC) and two modems, once every SIM is
/// published and it has been idle a moment.
fn daemon_memory(pcsc: &Pcsc, bin: &str) {
    let broker = Broker::start();
    let state = TempDir::new("bench-lean");
    let m1 = Modem::start("quectel-ec2x");
    let m2 = Modem::start_with("quectel-ec2x", &["--esim"]);
    let cfg = state.path().join("simgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[readers]\nnames = [\"{}\", \"{}\"]\n[modems]\nports = [\"{}\", \"{}\"]\n",
            pcsc.reader(0),
            pcsc.reader(1),
            m1.port,
            m2.port
        ),
    )
    .expect("config");
    let _usim = pcsc.insert(0, "usim.toml");
    let _euicc = pcsc.insert(1, "euicc.toml");
    let mut sub = broker.subscribe("simgate/v1/gw-lean/sim/+/state");
    let mut run = Command::new(bin);
    run.env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(&cfg)
        .args(support::run_args(&broker.url(), "gw-lean"))
        .arg(state.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let daemon = Proc::spawn("simgate run (gateway build)", &mut run);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        let m = sub.expect_within("the SIMs' state rows", Duration::from_secs(60), |_| true);
        seen.insert(m.topic);
    }
    // Idle: the modems' first poll done, the reads' threads gone.
    std::thread::sleep(Duration::from_secs(10));
    let pid = daemon.pid();
    let binary = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "\n`simgate run`, gateway build, 2 readers + 2 modems, idle after {} SIMs published (load {})",
        seen.len(),
        load()
    );
    println!(
        "VmRSS {} KiB (VmHWM {}): RssAnon {} (heap, stacks), RssFile {} (of which the binary {}), threads {}",
        status(pid, "VmRSS"),
        status(pid, "VmHWM"),
        status(pid, "RssAnon"),
        status(pid, "RssFile"),
        rss_of_binary(pid, &binary),
        status(pid, "Threads"),
    );
    for (kb, what) in largest_mappings(pid, 8) {
        println!("  {kb:>6} KiB  {what}");
    }
    let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
    println!("binary {binary}: {} KiB on disk", size / 1024);
}

/// The largest resident mappings (KiB, permissions, name): where the bytes are.
fn largest_mappings(pid: u32, n: usize) -> Vec<(u64, String)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = Vec::new();
    let mut header = String::new();
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Rss:") {
            let kb = kb
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let f: Vec<&str> = header.split_whitespace().collect();
            let name = f
                .get(5)
                .map_or("[anon]", |v| v)
                .rsplit('/')
                .next()
                .unwrap_or("");
            let size = f
                .first()
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| {
                    Some(
                        (u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                            / 1024,
                    )
                })
                .unwrap_or(0);
            out.push((
                kb,
                format!("{} {name} (of {size} KiB)", f.get(1).unwrap_or(&"")),
            ));
        } else if line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        }) {
            header = line.to_string();
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse(m.0));
    out.truncate(n);
    out
}

fn main() {
    assert!(
        std::path::Path::new("/usr/bin/time").exists(),
        "GNU time not found: apt-get install time"
    );
    let bin = gateway_bin();
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin}: build it with `cargo build --release --locked --no-default-features` or set GATEWAY_BIN"
    );
    println!("measuring {bin}");
    let pcsc = Pcsc::start();
    read_under_load(&pcsc, &bin);
    daemon_memory(&pcsc, &bin);
}
