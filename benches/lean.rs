//! What a gateway pays for simgate, on the rig: the daemon's resident memory with two
//! readers and two modems (and where it goes: the binary's pages, heap, malloc arenas,
//! thread stacks, threads), `simgate read`'s peak (and, held at its exit by strace, where
//! it goes, mapping by mapping), `read` on a quiet machine against the same read with a
//! CPU hog on every core (wall time, and the context switches behind it), and `read`
//! against lpac's `chip info` on the same eUICC, run in pairs, with each one's context
//! switches.
//!
//!     cargo build --release --locked --no-default-features   # the gateway binary
//!     cargo bench --bench lean --profile dev                 # as root: pcscd + vpcd
//!     cargo bench --bench lean --profile dev -- daemon       # one section: read, lpac, daemon
//!     cargo bench --bench lean --profile dev -- order        # rewrite src/gateway.order
//!
//! The gateway build lays out the functions `read` runs, then those the daemon runs,
//! first and together (build.rs hands src/gateway.order to lld): the kernel maps a
//! binary's pages in blocks around each page touched (64 KiB, or the page cache's whole
//! large folio), so code scattered over the binary's 4.2 MiB was resident nearly whole.
//! The bench first says how many of the file's functions the binary has; when some are
//! missing (a change of rustc, of Cargo.lock, or of the code they run), `-- order`
//! rewrites the list from callgrind runs of `read` and the daemon (valgrind), then
//! rebuild and commit it.
//!
//! GATEWAY_BIN names the binary measured (default target/release/simgate, the gateway
//! build `make deb` packages); the virtual cards and modems come from this build's own
//! binary (the `emulators` feature). LPAC names lpac's binary (estkme-group/lpac, built
//! with `cmake -B build && cmake --build build`; default: `lpac` on PATH); without it
//! the lpac section says so and is skipped. Needs GNU time (/usr/bin/time, Debian's
//! `time`) for a finished process's peak RSS and context switches.
//!
//! The measured binary's pages are dropped from the page cache before each section
//! (`dd iflag=nocache`), so it starts as a gateway's daemon does after a boot, read from
//! disk, in folios as large as the disk's read-ahead allows (printed first: this rig's
//! 8 MiB against the usual 128 KiB maps more of what is touched). A binary just written (a build, a copy, a package install) sits in the page
//! cache in large folios that a process then maps whole: `simgate --version` peaked at
//! 5.4 MB right after a copy and at 4.5 MB once the file had been read back from disk.
//! The daemon runs with the environment systemd/simgate.service gives it (its
//! `Environment=` lines). The machine is shared: each section prints the load average
//! it ran under. Prints figures; asserts nothing about time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Broker, Modem, Pcsc, Proc, TempDir};

const RUNS: usize = 15;

/// Drop `bin`'s pages from the page cache (GNU dd: `iflag=nocache count=0` asks the
/// kernel to drop the whole file), so the next process reads it from disk.
fn evict(bin: &str) {
    let ok = Command::new("dd")
        .arg(format!("if={bin}"))
        .args(["iflag=nocache", "count=0", "status=none"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("(could not drop {bin} from the page cache: its pages may be mapped whole)");
    }
}

/// The `Environment=` settings of the packaged unit, which the daemon runs under.
fn unit_environment() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(support::repo().join("systemd/simgate.service"))
        .expect("systemd/simgate.service");
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(|v| v.split_whitespace())
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn gateway_bin() -> String {
    std::env::var("GATEWAY_BIN").unwrap_or_else(|_| {
        support::repo()
            .join("target/release/simgate")
            .to_string_lossy()
            .into_owned()
    })
}

/// The read-ahead (KiB) of the block device holding `path` (its queue's read_ahead_kb,
/// a partition's through its disk), if the system tells.
fn readahead_kb(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    // Linux's dev_t: the major number in bits 8-19 and 32-63, the minor in 0-7 and 20-31.
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let block = format!("/sys/dev/block/{major}:{minor}");
    ["queue/read_ahead_kb", "../queue/read_ahead_kb"]
        .iter()
        .find_map(|q| std::fs::read_to_string(format!("{block}/{q}")).ok())
        .and_then(|v| v.trim().parse().ok())
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
/// (voluntary, involuntary) and peak RSS, and the largest peak RSS.
fn reads(pcsc: &Pcsc, bin: &str) -> (u64, u64, u64, u64, u64) {
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
        median(runs.iter().map(|r| r.0).collect()),
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

/// Where `read`'s peak goes: the process held at its exit (strace delays its exit_group,
/// and strace, unlike a debugger, does not read the binary, which would fill the page
/// cache its own way), its mappings summed by what they map.
fn read_breakdown(pcsc: &Pcsc, bin: &str) {
    // exit_group's number: x86_64 231, aarch64 94 (the kernel's syscall tables).
    let exit_group = if cfg!(target_arch = "aarch64") {
        "94 "
    } else {
        "231 "
    };
    let mut tracer = Proc::spawn(
        "strace",
        Command::new("strace")
            .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=exit_group"])
            .args(["-e", "inject=exit_group:delay_enter=3000000"])
            .arg(bin)
            .args(["read", "--json", "--reader", &pcsc.reader(0)])
            .env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let tp = tracer.pid();
    let mut read_pid = None;
    // The kernel tells no one a process entered a system call: looked at every 5 ms.
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_pid.is_none() && Instant::now() < deadline {
        read_pid = std::fs::read_to_string(format!("/proc/{tp}/task/{tp}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/syscall"))
                    .is_ok_and(|s| s.starts_with(exit_group))
            });
        std::thread::sleep(Duration::from_millis(5));
    }
    let Some(pid) = read_pid else {
        println!("(no breakdown: read did not reach its exit under strace)");
        return;
    };
    let peak = status(pid, "VmHWM");
    let binary = std::fs::canonicalize(bin)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = std::collections::BTreeMap::<String, u64>::new();
    for m in mappings(pid) {
        let what = if m.name == binary && m.perms.contains('x') {
            "the binary's code".to_string()
        } else if m.name == binary {
            "the binary's data".to_string()
        } else if m.name.is_empty() {
            "anonymous (thread stacks, arenas)".to_string()
        } else {
            m.name.rsplit('/').next().unwrap_or_default().to_string()
        };
        *parts.entry(what).or_default() += m.rss;
    }
    let mut parts: Vec<(String, u64)> = parts.into_iter().filter(|p| p.1 > 0).collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.1));
    let parts: Vec<String> = parts.iter().map(|(w, kb)| format!("{w} {kb}")).collect();
    println!(
        "one run's peak {peak} KiB, by mapping (KiB): {}",
        parts.join(", ")
    );
    tracer.wait(Duration::from_secs(60));
}

fn read_under_load(pcsc: &Pcsc, bin: &str) {
    println!("\n`simgate read` of a USIM, 5 ms per APDU ({RUNS} runs: medians, and the largest peak RSS)");
    let _card = pcsc.insert_with(0, "usim.toml", &["--latency-ms", "5"]);
    println!(
        "{:24} {:>8} {:>8} {:>10} {:>12} {:>9}  load",
        "", "wall ms", "vol. cs", "invol. cs", "peak KiB", "largest"
    );
    let quiet = load();
    let (ms, vol, invol, peak, top) = reads(pcsc, bin);
    println!(
        "{:24} {ms:>8} {vol:>8} {invol:>10} {peak:>12} {top:>9}  {quiet}",
        "as the machine is"
    );
    let hog = Hog::start();
    let busy = load();
    let (hms, hvol, hinvol, hpeak, htop) = reads(pcsc, bin);
    drop(hog);
    println!(
        "{:24} {hms:>8} {hvol:>8} {hinvol:>10} {hpeak:>12} {htop:>9}  {busy}",
        "a CPU hog on every core"
    );
    println!(
        "under the hog / without: {:.2}x",
        hms as f64 / ms.max(1) as f64
    );
    if std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("strace").is_file()))
    {
        read_breakdown(pcsc, bin);
    } else {
        println!("(strace not found: no breakdown of read's peak; apt-get install strace)");
    }
}

/// lpac's binary: LPAC, else `lpac` on PATH.
fn lpac_bin() -> Option<String> {
    if let Ok(p) = std::env::var("LPAC") {
        return Some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("lpac"))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

/// One run's wall time.
fn wall(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the command");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// `simgate read` and `lpac chip info` of the same eUICC, in turn (pairs keep the ratio
/// meaningful while the machine's speed drifts): medians of each and of the pairs'
/// ratios, as the machine is and with a CPU hog on every core; then each one's context
/// switches (medians of CS_RUNS more runs under GNU time), the scheduler's wake-ups that
/// a hog makes expensive. lpac reads the EID, EUICCInfo2 and the configured addresses
/// (11 APDUs on this card); `read` the ICCID, EID, IMSI and the profiles (7, the
/// identification plan's budget: benches/cards.rs).
fn read_against_lpac(pcsc: &Pcsc, bin: &str) {
    const CS_RUNS: usize = 5;
    let Some(lpac) = lpac_bin() else {
        println!("\nlpac not found: set LPAC to its binary (estkme-group/lpac, cmake) to compare");
        return;
    };
    let reader = pcsc.reader(1);
    let _card = pcsc.insert_with(1, "euicc.toml", &["--latency-ms", "5"]);
    let ours = |c: &mut Command| {
        c.env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("RUST_LOG", "warn")
            .args(["read", "--json", "--reader", &reader]);
    };
    let theirs = |c: &mut Command| {
        c.env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("LPAC_APDU", "pcsc")
            .env("LPAC_APDU_PCSC_DRV_NAME", &reader)
            .args(["chip", "info"]);
    };
    // Voluntary and involuntary context switches: medians of CS_RUNS runs.
    let switches = |program: &str, args: &dyn Fn(&mut Command)| {
        let runs: Vec<(u64, u64)> = (0..CS_RUNS)
            .map(|_| {
                let mut c = time_cmd(program);
                args(&mut c);
                let (_, vol, invol, _) = timed(&mut c);
                (vol, invol)
            })
            .collect();
        (
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        )
    };
    let pairs = |label: &str| {
        let (mut a_us, mut b_us, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let load = load();
        for _ in 0..RUNS {
            let mut a = Command::new(bin);
            ours(&mut a);
            let a = wall(&mut a);
            let mut b = Command::new(&lpac);
            theirs(&mut b);
            let b = wall(&mut b);
            a_us.push(a.as_micros() as u64);
            b_us.push(b.as_micros() as u64);
            ratios.push((a.as_secs_f64() / b.as_secs_f64() * 1000.0) as u64);
        }
        let (a_vol, a_invol) = switches(bin, &ours);
        let (b_vol, b_invol) = switches(&lpac, &theirs);
        println!(
            "{label:24} {:>8.1} {:>8.1} {:>9.2} {:>11} {:>11}  {load}",
            median(a_us) as f64 / 1e3,
            median(b_us) as f64 / 1e3,
            median(ratios) as f64 / 1e3,
            format!("{a_vol}/{a_invol}"),
            format!("{b_vol}/{b_invol}"),
        );
    };
    println!(
        "\n`simgate read` against `lpac chip info`, the same eUICC at 5 ms per APDU ({RUNS} pairs, medians)"
    );
    println!(
        "{:24} {:>8} {:>8} {:>9} {:>11} {:>11}  load",
        "", "read ms", "lpac ms", "read/lpac", "read cs", "lpac cs"
    );
    evict(bin);
    pairs("as the machine is");
    let hog = Hog::start();
    pairs("a CPU hog on every core");
    drop(hog);
    println!("(cs: voluntary/involuntary context switches, medians of {CS_RUNS} runs)");
}

/// The daemon with two readers (a USIM, an eUICC) and two modems, once every SIM is
/// published and it has been idle a moment; DAEMON_RUNS starts (default 5), each on a
/// fresh state directory. One start's resident set moves by a few hundred KiB with
/// where the loader puts the binary (the kernel maps a file's cached pages around each
/// fault, in aligned blocks): the median is the figure.
fn daemon_memory(pcsc: &Pcsc, bin: &str) {
    let runs: usize = std::env::var("DAEMON_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let broker = Broker::start();
    let m1 = Modem::start("quectel-ec2x");
    let m2 = Modem::start_with("quectel-ec2x", &["--esim"]);
    let _usim = pcsc.insert(0, "usim.toml");
    let _euicc = pcsc.insert(1, "euicc.toml");
    let env = unit_environment();
    println!(
        "\n`simgate run`, gateway build, 2 readers + 2 modems, idle after its 4 SIMs are published"
    );
    if !env.is_empty() {
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("environment of systemd/simgate.service: {}", env.join(" "));
    }
    println!(
        "{:>4} {:>9} {:>9} {:>9} {:>11} {:>8}  load",
        "run", "VmRSS KiB", "anon", "file", "the binary", "threads"
    );
    let mut rss = Vec::new();
    for run_no in 0..runs {
        let state = TempDir::new("bench-lean");
        let agent = format!("gw-lean-{run_no}");
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
        let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/sim/+/state"));
        let mut run = Command::new(bin);
        run.envs(env.iter().map(|(k, v)| (k, v)))
            .env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("RUST_LOG", "warn")
            .arg("--config")
            .arg(&cfg)
            .args(support::run_args(&broker.url(), &agent))
            .arg(state.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        evict(bin);
        let mut daemon = Proc::spawn("simgate run (gateway build)", &mut run);
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
        let vmrss = status(pid, "VmRSS");
        rss.push(vmrss);
        println!(
            "{run_no:>4} {vmrss:>9} {:>9} {:>9} {:>11} {:>8}  {}",
            status(pid, "RssAnon"),
            status(pid, "RssFile"),
            rss_of_binary(pid, &binary),
            status(pid, "Threads"),
            load()
        );
        if run_no + 1 == runs {
            println!("the last run's largest mappings:");
            for (kb, what) in largest_mappings(pid, 8) {
                println!("  {kb:>6} KiB  {what}");
            }
            let a = anon_breakdown(pid);
            println!(
                "anonymous: main heap {} KiB, {} more malloc arenas {} KiB, {} thread stacks {} KiB (main {}), other {} KiB",
                a.heap, a.arenas.0, a.arenas.1, a.stacks.0, a.stacks.1, a.main_stack, a.other
            );
            println!("threads: {}", threads(pid));
            let size = std::fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
            println!("binary {binary}: {} KiB on disk", size / 1024);
        }
        daemon.interrupt();
    }
    println!(
        "VmRSS median of {runs}: {} KiB (from {} to {})",
        median(rss.clone()),
        rss.iter().min().unwrap_or(&0),
        rss.iter().max().unwrap_or(&0)
    );
}

/// One mapping of /proc/PID/smaps: size and resident KiB, permissions, name.
struct Mapping {
    size: u64,
    rss: u64,
    perms: String,
    name: String,
}

fn mappings(pid: u32) -> Vec<Mapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(kb) = line.strip_prefix("Rss:") {
            if let Some(m) = out.last_mut() {
                m.rss = kb
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
        } else if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let f: Vec<&str> = line.split_whitespace().collect();
            let size = first
                .split_once('-')
                .and_then(|(a, b)| {
                    Some(
                        (u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                            / 1024,
                    )
                })
                .unwrap_or(0);
            out.push(Mapping {
                size,
                rss: 0,
                perms: f.get(1).unwrap_or(&"").to_string(),
                name: f.get(5).unwrap_or(&"").to_string(),
            });
        }
    }
    out
}

/// Resident anonymous memory by kind (KiB): glibc's main heap, its other arenas (count,
/// KiB), thread stacks (count, KiB), the main thread's stack, the rest.
struct Anon {
    heap: u64,
    arenas: (u64, u64),
    stacks: (u64, u64),
    main_stack: u64,
    other: u64,
}

/// Told apart by shape: an arena is a read-write mapping followed by the unused rest
/// of its 64 MiB reservation (no access); a thread's stack (or its signal stack) is a
/// read-write mapping behind a one-page guard (no access).
fn anon_breakdown(pid: u32) -> Anon {
    let maps = mappings(pid);
    let mut a = Anon {
        heap: 0,
        arenas: (0, 0),
        stacks: (0, 0),
        main_stack: 0,
        other: 0,
    };
    for (i, m) in maps.iter().enumerate() {
        let none = |j: Option<usize>| {
            j.and_then(|j| maps.get(j))
                .is_some_and(|n| n.name.is_empty() && n.perms.starts_with("---"))
        };
        match m.name.as_str() {
            "[heap]" => a.heap += m.rss,
            "[stack]" => a.main_stack += m.rss,
            "" if m.perms.starts_with("rw") => {
                if none(Some(i + 1)) && maps[i + 1].size > 32 * 1024 {
                    a.arenas = (a.arenas.0 + 1, a.arenas.1 + m.rss);
                } else if none(i.checked_sub(1)) && maps[i - 1].size == 4 {
                    if m.rss > 0 {
                        a.stacks = (a.stacks.0 + 1, a.stacks.1 + m.rss);
                    }
                } else {
                    a.other += m.rss;
                }
            }
            _ => {}
        }
    }
    a
}

/// The process's threads by name, with counts.
fn threads(pid: u32) -> String {
    let mut names = std::collections::BTreeMap::<String, u32>::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // sled's pool numbers its threads: count them under one name.
        let name = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        *names.entry(name).or_default() += 1;
    }
    names
        .iter()
        .map(|(n, c)| format!("{n} x{c}"))
        .collect::<Vec<_>>()
        .join(", ")
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

/// The file build.rs hands the linker: the functions `read` runs, put first and together.
const LINK_ORDER: &str = "src/gateway.order";

/// Write [`LINK_ORDER`]: the functions of the gateway binary that `simgate readers`, `read`
/// of a USIM, of an eUICC and of both (a thread each) run, then those the daemon runs
/// besides (2 readers, 2 modems, until its 4 SIMs are published), as callgrind (valgrind)
/// sees them, by their symbol names. Only when asked (`-- order`): after a change of
/// rustc, of Cargo.lock or of the code they run; then rebuild and commit the file.
fn link_order(pcsc: &Pcsc, bin: &str) {
    let scratch = TempDir::new("bench-order");
    let object = std::path::Path::new(bin)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut n = 0;
    // One run under callgrind; the functions of the binary it saw run.
    let mut profiled = |cmd: &mut Command, done: &mut dyn FnMut(&mut Proc)| {
        n += 1;
        let profile = scratch.path().join(format!("callgrind.{n}"));
        let mut valgrind = Command::new("valgrind");
        valgrind
            .args(["--tool=callgrind", "--demangle=no"])
            .arg(format!("--callgrind-out-file={}", profile.display()))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("PCSCLITE_CSOCK_NAME", &pcsc.sock)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut run = Proc::spawn("valgrind (apt-get install valgrind)", &mut valgrind);
        done(&mut run);
        let text = std::fs::read_to_string(&profile).expect("callgrind's profile");
        executed(&text, &object)
    };
    let finished = |p: &mut Proc| {
        let st = p.wait(Duration::from_secs(300));
        assert!(st.success(), "{} failed", p.name);
    };
    let mut read = std::collections::BTreeSet::new();
    {
        let _usim = pcsc.insert_with(0, "usim.toml", &[]);
        let _euicc = pcsc.insert_with(1, "euicc.toml", &[]);
        let (r0, r1) = (pcsc.reader(0), pcsc.reader(1));
        let runs: [&[&str]; 4] = [
            &["readers"],
            &["read", "--json", "--reader", &r0],
            &["read", "--json", "--reader", &r1],
            &["read", "--json"],
        ];
        for args in runs {
            read.extend(profiled(Command::new(bin).args(args), &mut |p| finished(p)));
        }
    }
    let broker = Broker::start();
    let m1 = Modem::start("quectel-ec2x");
    let m2 = Modem::start_with("quectel-ec2x", &["--esim"]);
    let _usim = pcsc.insert(0, "usim.toml");
    let _euicc = pcsc.insert(1, "euicc.toml");
    let state = TempDir::new("bench-order-daemon");
    let cfg = state.path().join("simgate.toml");
    // Under valgrind the daemon runs many times slower: a card is given a minute.
    std::fs::write(
        &cfg,
        format!(
            "[readers]\nnames = [\"{}\", \"{}\"]\ncard_timeout_ms = 60000\n[modems]\nports = [\"{}\", \"{}\"]\n",
            pcsc.reader(0),
            pcsc.reader(1),
            m1.port,
            m2.port
        ),
    )
    .expect("config");
    let mut sub = broker.subscribe("simgate/v1/gw-order/sim/+/state");
    let daemon = profiled(
        Command::new(bin)
            .arg("--config")
            .arg(&cfg)
            .args(support::run_args(&broker.url(), "gw-order"))
            .arg(state.path()),
        &mut |p| {
            let mut seen = std::collections::BTreeSet::new();
            while seen.len() < 4 {
                let m =
                    sub.expect_within("the SIMs' state rows", Duration::from_secs(600), |_| true);
                seen.insert(m.topic);
            }
            p.interrupt();
        },
    );
    let mut file = String::from(
        "# The functions `simgate read` runs, then those the daemon runs besides, first and\n\
         # together in the gateway binary (build.rs: lld's --symbol-ordering-file). Written\n\
         # by `cargo bench --bench lean --profile dev -- order`; do not edit.\n",
    );
    for f in read.iter().chain(daemon.difference(&read)) {
        file.push_str(f);
        file.push('\n');
    }
    std::fs::write(support::repo().join(LINK_ORDER), file).expect("write the link order");
    println!(
        "\n{} functions `read` runs and {} more the daemon runs, of {bin}, written to {LINK_ORDER}",
        read.len(),
        daemon.difference(&read).count()
    );
}

/// The functions of `object` (a file name) that a callgrind profile saw run: `fn=` lines
/// under the current `ob=`, and `cfn=` lines (the functions called) under their `cob=`,
/// or the caller's object without one. Names and objects are compressed: `(id) name`
/// the first time, `(id)` after.
fn executed(profile: &str, object: &str) -> std::collections::BTreeSet<String> {
    let mut objects = std::collections::HashMap::new();
    let mut functions = std::collections::HashMap::new();
    let (mut ob, mut cob) = (String::new(), None::<String>);
    let mut seen = std::collections::BTreeSet::new();
    for line in profile.lines() {
        let Some((key, rest)) = line.split_once('=') else {
            continue;
        };
        if !matches!(key, "ob" | "cob" | "fn" | "cfn") {
            continue;
        }
        let Some((id, name)) = rest.strip_prefix('(').and_then(|r| r.split_once(')')) else {
            continue;
        };
        let table = if key.ends_with("ob") {
            &mut objects
        } else {
            &mut functions
        };
        if !name.trim().is_empty() {
            table.insert(id.to_string(), name.trim().to_string());
        }
        let Some(full) = table.get(id).cloned() else {
            continue;
        };
        let (owner, function) = match key {
            "ob" => {
                (ob, cob) = (full, None);
                continue;
            }
            "cob" => {
                cob = Some(full);
                continue;
            }
            "fn" => (ob.clone(), full),
            _ => (cob.take().unwrap_or_else(|| ob.clone()), full),
        };
        // A symbol's name, without the depth callgrind appends to a recursive call
        // (name'2); addresses (0x...) and its own "(below main)" are none.
        let function = function.split('\'').next().unwrap_or_default().to_string();
        let symbol = !function.starts_with("0x") && !function.contains(char::is_whitespace);
        if symbol && std::path::Path::new(&owner).ends_with(object) {
            seen.insert(function);
        }
    }
    seen
}

/// How many names of [`LINK_ORDER`] the binary has (`nm`): fewer than the file holds
/// means it is stale (`-- order` rewrites it).
fn link_order_coverage(bin: &str) {
    let Ok(text) = std::fs::read_to_string(support::repo().join(LINK_ORDER)) else {
        return;
    };
    let wanted: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let Ok(out) = Command::new("nm").arg(bin).output() else {
        return;
    };
    let symbols: std::collections::HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let found = wanted.iter().filter(|n| symbols.contains(**n)).count();
    println!(
        "link order: {found} of the {} functions of {LINK_ORDER} are in this binary{}",
        wanted.len(),
        if found < wanted.len() {
            " (rewrite it: -- order)"
        } else {
            ""
        }
    );
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
    println!(
        "measuring {bin} (its disk reads ahead {} KiB)",
        readahead_kb(&bin).map_or("?".to_string(), |kb| kb.to_string())
    );
    // Sections named on the command line (after `--`), else all of them.
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |s: &str| asked.is_empty() || asked.iter().any(|a| a == s);
    link_order_coverage(&bin);
    let pcsc = Pcsc::start();
    // Writes a file of the repository: only when named.
    if asked.iter().any(|a| a == "order") {
        link_order(&pcsc, &bin);
    }
    if wants("read") {
        evict(&bin);
        read_under_load(&pcsc, &bin);
    }
    if wants("lpac") {
        read_against_lpac(&pcsc, &bin);
    }
    if wants("daemon") {
        daemon_memory(&pcsc, &bin);
    }
}
