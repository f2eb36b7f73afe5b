//! The project's test rig: a private pcscd with one vpcd entry, simgate's virtual cards
//! plugged into it, a private mosquitto, and a subscriber — all real processes on free
//! loopback ports, so tests run in parallel without stepping on each other. Everything a
//! rig starts it stops on drop, also when the test fails.
//!
//! Missing system parts fail the test with the command that installs them.

#![allow(dead_code)] // The benches each use a different part of the rig.

pub mod browser;
pub mod cluster;
pub mod smdp;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const INSTALL_HINT: &str = "install the test stack with `make deps` \
    (apt-get install pkg-config libpcsclite-dev pcscd vsmartcard-vpcd mosquitto mosquitto-clients)";

/// vpcd's friendly name in the rig's reader.conf; pcscd appends " 00 00" / " 00 01".
pub const READER: &str = "Simgate Test PCD";
/// The name Debian's own vpcd entry (/etc/reader.conf.d/vpcd) gives, used without root.
pub const SYSTEM_READER: &str = "Virtual PCD";

/// The simgate binary under test.
pub fn simgate_bin() -> &'static str {
    env!("CARGO_BIN_EXE_simgate")
}

/// The repository root (card images, config examples).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "simgate-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir under the temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two consecutive free TCP ports (vpcd listens on PORT and PORT+1, on all interfaces).
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port < 65_000
            && TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("0.0.0.0", port + 1)).is_ok()
        {
            return port;
        }
    }
    panic!("no two consecutive free ports found");
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback")
        .port()
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(cmd).is_file()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn vpcd_driver() -> PathBuf {
    let candidates = [
        "/usr/lib/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/lib/x86_64-linux-gnu/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/lib/aarch64-linux-gnu/pcsc/drivers/serial/libifdvpcd.so",
        "/usr/local/lib/pcsc/drivers/serial/libifdvpcd.so",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("vpcd driver (libifdvpcd.so) not found: {INSTALL_HINT}"))
}

/// Wait for `cond`, checking every 20 ms, up to `limit`. Used only where the system
/// offers no notification (pcscd has no readiness signal outside systemd).
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a child's output, delivered through a channel by a reader thread, so a test
/// can await a line with a deadline.
#[derive(Debug)]
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(out: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining after the receiver is gone: a child whose pipe closes dies of
            // SIGPIPE on its next write (mosquitto logs every connection).
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line satisfying `pred`, waiting at most `limit`.
    pub fn expect(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "timed out after {limit:?} waiting for {what}; lines seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Lines that arrived so far, without waiting.
    pub fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.rx.try_recv() {
            self.seen.push(l.clone());
            out.push(l);
        }
        out
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}; {INSTALL_HINT}"));
        Proc {
            child,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM-like polite stop (SIGINT, as Ctrl-C), then wait for the exit.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), "INT");
        self.wait(Duration::from_secs(10))
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait for child") {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {limit:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// A private pcscd serving one vpcd entry (two readers) on free ports.
#[derive(Debug)]
pub struct Pcsc {
    proc: Option<Proc>,
    pub port: u16,
    pub sock: PathBuf,
    dir: TempDir,
    friendly: &'static str,
    /// Without root all tests share the system pcscd: this lock serialises them.
    _lock: Option<std::fs::File>,
}

impl Pcsc {
    /// Start a private pcscd (as root, in its own mount namespace so its
    /// /run/pcscd/pcscd.comm is private); without root, use the system pcscd with
    /// Debian's vpcd entry, one test at a time.
    pub fn start() -> Pcsc {
        assert!(which("pcscd"), "pcscd not found: {INSTALL_HINT}");
        let driver = vpcd_driver();
        if !is_root() {
            let lock =
                std::fs::File::create(std::env::temp_dir().join("simgate-system-pcscd.lock"))
                    .expect("create the system pcscd lock file");
            lock.lock().expect("lock the system pcscd for this test");
            let pcsc = Pcsc {
                proc: None,
                // Debian's /etc/reader.conf.d/vpcd: port 0x8C7B.
                port: 0x8C7B,
                sock: PathBuf::from("/run/pcscd/pcscd.comm"),
                dir: TempDir::new("pcsc"),
                friendly: SYSTEM_READER,
                _lock: Some(lock),
            };
            pcsc.await_readers();
            return pcsc;
        }
        assert!(
            which("unshare"),
            "unshare not found: apt-get install util-linux"
        );
        let dir = TempDir::new("pcsc");
        let run = dir.path().join("run");
        let conf = dir.path().join("conf.d");
        std::fs::create_dir_all(&run).expect("mkdir run");
        std::fs::create_dir_all(&conf).expect("mkdir conf.d");
        // /run/pcscd must exist as a mount point (TESTRIG.md).
        std::fs::create_dir_all("/run/pcscd").expect("mkdir /run/pcscd (needs root)");
        let port = free_port_pair();
        std::fs::write(
            conf.join("vpcd"),
            format!(
                "FRIENDLYNAME \"{READER}\"\nDEVICENAME /dev/null:{port}\nLIBPATH {}\nCHANNELID {port}\n",
                driver.display()
            ),
        )
        .expect("write reader.conf");
        let proc = Self::launch(dir.path());
        let pcsc = Pcsc {
            proc: Some(proc),
            port,
            sock: run.join("pcscd.comm"),
            dir,
            friendly: READER,
            _lock: None,
        };
        pcsc.await_readers();
        pcsc
    }

    /// Start pcscd on the rig's directory (run/ and conf.d/ under `dir`), in its own
    /// mount namespace.
    fn launch(dir: &Path) -> Proc {
        let script = format!(
            "mount --bind {} /run/pcscd && exec pcscd -f -c {}",
            dir.join("run").display(),
            dir.join("conf.d").display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pcscd.log"))
            .expect("pcscd log");
        Proc::spawn(
            "pcscd",
            Command::new("unshare")
                .args(["-m", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("dup log"))
                .stderr(log),
        )
    }

    /// Crash pcscd (SIGKILL) and start it again on the same directory and port, as a
    /// service manager would. Root only (the private pcscd). Cards inserted before are
    /// gone: vpcd's connections die with it.
    pub fn restart(&mut self) {
        self.stop();
        self.resume();
    }

    /// Crash pcscd (SIGKILL) and leave it down until `resume`. Root only.
    pub fn stop(&mut self) {
        let mut old = self
            .proc
            .take()
            .expect("stopping needs the rig's private pcscd (root)");
        old.kill9();
        // TESTRIG.md: a killed pcscd leaves its socket and pid file behind and refuses
        // to start while they exist.
        let run = self.dir.path().join("run");
        let _ = std::fs::remove_file(run.join("pcscd.comm"));
        let _ = std::fs::remove_file(run.join("pcscd.pid"));
    }

    /// Start pcscd again after `stop`, on the same directory and port.
    pub fn resume(&mut self) {
        self.proc = Some(Self::launch(self.dir.path()));
        self.await_readers();
    }

    /// The PC/SC name of reader `slot` (0 or 1).
    pub fn reader(&self, slot: u8) -> String {
        format!("{} 00 {slot:02}", self.friendly)
    }

    fn await_readers(&self) {
        let second = self.reader(1);
        wait_for(
            "pcscd to serve the vpcd readers",
            Duration::from_secs(15),
            || {
                self.sock.exists() && {
                    let out = self
                        .simgate()
                        .args(["readers", "--json"])
                        .output()
                        .expect("run simgate readers");
                    String::from_utf8_lossy(&out.stdout).contains(&second)
                }
            },
        );
    }

    /// A `simgate` command talking to this pcscd.
    pub fn simgate(&self) -> Command {
        let mut c = Command::new(simgate_bin());
        c.env("PCSCLITE_CSOCK_NAME", &self.sock)
            .env("RUST_LOG", "simgate=debug,info")
            .stdin(Stdio::null());
        c
    }

    /// Insert a virtual card from `image` (path relative to devices/cards/) into reader
    /// `slot` (0 or 1); returns once pcscd has powered it (the card asked for its ATR).
    pub fn insert(&self, slot: u8, image: &str) -> Card {
        self.insert_with(slot, image, &[])
    }

    /// A virtual card (devices/cards/`image`) connecting to the reader `slot` now,
    /// without waiting for pcscd to see it: the benches' clock starts here.
    pub fn connect_card(
        &self,
        slot: u8,
        image: &str,
        extra: &[&str],
        (out, err): (Stdio, Stdio),
    ) -> Proc {
        Proc::spawn(
            "simgate emulate card",
            self.simgate()
                .args(["emulate", "card", "--image"])
                .arg(repo().join("devices/cards").join(image))
                .args([
                    "--vpcd",
                    &format!("127.0.0.1:{}", self.port + u16::from(slot)),
                ])
                .args(extra)
                .stdout(out)
                .stderr(err),
        )
    }

    pub fn insert_with(&self, slot: u8, image: &str, extra: &[&str]) -> Card {
        let mut proc = self.connect_card(slot, image, extra, (Stdio::piped(), Stdio::inherit()));
        let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        lines.expect(
            "the virtual card to be powered by pcscd",
            Duration::from_secs(15),
            |l| l.contains("inserted at vpcd"),
        );
        // pcscd publishes the reader state a moment after the power-up that asked for the
        // ATR; a client connecting in between would see no card.
        let name = self.reader(slot);
        wait_for(
            "pcscd to report the card present",
            Duration::from_secs(10),
            || {
                let out = self
                    .simgate()
                    .args(["readers", "--json"])
                    .output()
                    .expect("run simgate readers");
                let list: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                list.as_array().is_some_and(|rs| {
                    rs.iter()
                        .any(|r| r["name"] == name.as_str() && r["card_present"] == true)
                })
            },
        );
        Card { proc, lines }
    }

    /// pcscd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pcscd.log")).unwrap_or_default()
    }
}

impl Drop for Pcsc {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
        }
    }
}

/// A virtual card in a reader. Dropping it pulls the card.
#[derive(Debug)]
pub struct Card {
    pub proc: Proc,
    pub lines: Lines,
}

impl Card {
    /// Pull the card (Ctrl-C to the emulator) and wait until it is out.
    pub fn remove(mut self) {
        let st = self.proc.interrupt();
        assert!(st.success(), "card emulator exited with {st}");
    }
}

/// Debian's RabbitMQ start script (the one /usr/sbin/rabbitmq-server wraps to switch to
/// the rabbitmq user).
const RABBITMQ_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// Which broker a [`Broker`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Mosquitto,
    /// RabbitMQ with its MQTT plugin (MQTT 3.1.1): the second broker, a clustering one
    /// (MQTT.md, "Brokers"). Debian's rabbitmq-server, a private node per Broker.
    RabbitMq,
}

/// A private broker on a free loopback port: mosquitto unless made with
/// [`Broker::rabbitmq`].
#[derive(Debug)]
pub struct Broker {
    proc: Proc,
    pub port: u16,
    pub dir: TempDir,
    extra: String,
    pub kind: BrokerKind,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("")
    }

    /// `extra` is appended to the generated mosquitto.conf.
    pub fn start_with(extra: &str) -> Broker {
        Self::start_on(free_port(), extra)
    }

    /// A broker on a given port (one a client was already told about).
    pub fn start_on(port: u16, extra: &str) -> Broker {
        assert!(which("mosquitto"), "mosquitto not found: {INSTALL_HINT}");
        let dir = TempDir::new("broker");
        let (proc, port) = Self::launch(&dir, port, extra);
        Broker {
            proc,
            port,
            dir,
            extra: extra.to_string(),
            kind: BrokerKind::Mosquitto,
        }
    }

    /// A private RabbitMQ node with the MQTT plugin on a free loopback port: anonymous
    /// clients allowed (the guest user, vhost `/`), no AMQP listener. `extra` is appended
    /// to its rabbitmq.conf.
    pub fn rabbitmq(extra: &str) -> Broker {
        assert!(
            Path::new(RABBITMQ_SERVER).is_file(),
            "RabbitMQ not found ({RABBITMQ_SERVER}): install it with `make test-deps` \
             (apt-get install rabbitmq-server)"
        );
        let dir = TempDir::new("rabbitmq");
        let port = free_port();
        let proc = Self::launch_rabbitmq(&dir, port, extra);
        Broker {
            proc,
            port,
            dir,
            extra: extra.to_string(),
            kind: BrokerKind::RabbitMq,
        }
    }

    fn launch_rabbitmq(dir: &TempDir, port: u16, extra: &str) -> Proc {
        let d = dir.path();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp = none\nmqtt.listeners.tcp.default = 127.0.0.1:{port}\n\
                 mqtt.allow_anonymous = true\nloopback_users = none\n{extra}\n"
            ),
        )
        .expect("write rabbitmq.conf");
        std::fs::write(d.join("enabled_plugins"), "[rabbitmq_mqtt].\n")
            .expect("write enabled_plugins");
        // The node's distribution port must be free too; the name keeps nodes apart.
        let dist = free_port();
        let mut proc = Proc::spawn(
            "rabbitmq-server",
            Command::new(RABBITMQ_SERVER)
                // The Erlang cookie goes to $HOME.
                .env("HOME", d)
                .env("RABBITMQ_NODENAME", format!("simgate-{port}@localhost"))
                .env("RABBITMQ_NODE_PORT", dist.to_string())
                .env("RABBITMQ_DIST_PORT", dist.to_string())
                .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
                .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
                .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
                .env("RABBITMQ_LOG_BASE", d.join("log"))
                .env("RABBITMQ_PID_FILE", d.join("pid"))
                .env("RABBITMQ_LOGS", "-")
                // The script then execs the Erlang VM instead of waiting on it as a
                // child: the process the test holds is the broker, and kill -9 is real.
                .env("RUNNING_UNDER_SYSTEMD", "true")
                .env_remove("NOTIFY_SOCKET")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        lines.expect(
            "RabbitMQ to open its MQTT listener",
            Duration::from_secs(90),
            |l| l.contains("started MQTT TCP listener"),
        );
        proc
    }

    fn launch(dir: &TempDir, port: u16, extra: &str) -> (Proc, u16) {
        // mosquitto drops root for user `mosquitto`: its persistence must be writable.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777));
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type all\npersistence true\npersistence_location {}/\n{extra}\n",
                dir.path().display()
            ),
        )
        .expect("write mosquitto.conf");
        let mut proc = Proc::spawn(
            "mosquitto",
            Command::new("mosquitto")
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut lines = Lines::new(proc.child.stderr.take().expect("piped stderr"));
        lines.expect(
            "mosquitto to open its listener",
            Duration::from_secs(10),
            |l| l.contains("running"),
        );
        (proc, port)
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's process id (its CPU time, in the fleet benchmark).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stop the broker (kill -9: an outage, not a clean shutdown).
    pub fn stop(&mut self) {
        self.proc.kill9();
    }

    /// Stop the broker politely (SIGTERM): it saves its persistence, so subscribers'
    /// persistent sessions and their queued messages survive the restart. For the agent
    /// this is the same outage as kill -9: its TCP connection drops.
    pub fn stop_graceful(&mut self) {
        signal(self.proc.pid(), "TERM");
        // RabbitMQ's orderly shutdown (queues, the Raft log of client ids) takes longer.
        let limit = match self.kind {
            BrokerKind::Mosquitto => 10,
            BrokerKind::RabbitMq => 60,
        };
        self.proc.wait(Duration::from_secs(limit));
    }

    /// Publish with mosquitto_pub (QoS 1); `args` adds options (payload: `-m`/`-f`).
    pub fn publish(&self, topic: &str, args: &[&str]) {
        publish_at(self.port, topic, args);
    }

    /// Stop it politely (its persistence saved: sessions, queued and retained
    /// messages) and start it again on the same port with that persistence: a broker
    /// that keeps its sessions across a restart. For the agent it is an outage.
    pub fn restart_graceful(&mut self) {
        self.stop_graceful();
        self.resume();
    }

    /// Start it again after a stop, on the same port with the same persistence.
    pub fn resume(&mut self) {
        self.proc = match self.kind {
            BrokerKind::Mosquitto => Self::launch(&self.dir, self.port, &self.extra).0,
            BrokerKind::RabbitMq => Self::launch_rabbitmq(&self.dir, self.port, &self.extra),
        };
    }

    /// Start it again on the same port with the same persistence.
    pub fn restart(&mut self) {
        self.proc.kill9();
        self.resume();
    }

    /// A subscriber printing `retain topic payload` per message; returns once the
    /// broker acknowledged the subscription.
    pub fn subscribe(&self, topic: &str) -> Sub {
        self.subscribe_with(topic, &[])
    }

    /// A subscriber with extra mosquitto_sub options: `-c -i ID` for a persistent
    /// session (it reconnects by itself and gets what was queued for it), TLS and
    /// credentials.
    pub fn subscribe_with(&self, topic: &str, extra: &[&str]) -> Sub {
        subscribe_at(self.port, topic, extra)
    }
}

/// Publish with mosquitto_pub (QoS 1) to the broker on loopback `port`.
pub fn publish_at(port: u16, topic: &str, args: &[&str]) {
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
        ])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run mosquitto_pub: {e}; {INSTALL_HINT}"));
    assert!(st.success(), "mosquitto_pub to {topic} failed: {st}");
}

/// [`Broker::subscribe_with`] on the broker at loopback `port` (a cluster's node).
pub fn subscribe_at(port: u16, topic: &str, extra: &[&str]) -> Sub {
    assert!(
        which("mosquitto_sub"),
        "mosquitto_sub not found: {INSTALL_HINT}"
    );
    let mut proc = Proc::spawn(
        "mosquitto_sub",
        // stdbuf: mosquitto_sub's stdout is block-buffered on a pipe.
        Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-q",
                "1",
                "-d",
                "-t",
                topic,
                "-F",
                "%r %t %p",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
    lines.expect("mosquitto_sub's SUBACK", Duration::from_secs(10), |l| {
        l.contains("SUBACK")
    });
    Sub { _proc: proc, lines }
}

/// One message seen by a subscriber.
#[derive(Debug, Clone)]
pub struct Msg {
    pub retained: bool,
    pub topic: String,
    pub payload: serde_json::Value,
}

#[derive(Debug)]
pub struct Sub {
    _proc: Proc,
    pub lines: Lines,
}

impl Sub {
    /// The next message (debug lines skipped) satisfying `pred`. The deadline only
    /// bounds a test that fails: a loaded 2-core CI machine has taken longer than 15 s
    /// to carry a card's read to the broker.
    pub fn expect(&mut self, what: &str, pred: impl FnMut(&Msg) -> bool) -> Msg {
        self.expect_within(what, Duration::from_secs(60), pred)
    }

    /// As `expect`, with its own deadline (a deadline, never a measured time).
    pub fn expect_within(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&Msg) -> bool,
    ) -> Msg {
        let mut found = None;
        self.lines
            .expect(what, limit, |line| match parse_msg(line) {
                Some(m) if pred(&m) => {
                    found = Some(m);
                    true
                }
                _ => false,
            });
        found.expect("expect returned on a matching line")
    }
}

/// One subscriber line (`retain topic payload`) as a message; None for its debug lines.
pub fn parse_msg(line: &str) -> Option<Msg> {
    if line.starts_with("Client ") || line.starts_with("Subscribed (mid") {
        return None; // mosquitto_sub -d debug output
    }
    let (retain, rest) = line.split_once(' ')?;
    let (topic, payload) = rest.split_once(' ')?;
    let msg = Msg {
        retained: retain == "1",
        topic: topic.to_string(),
        payload: serde_json::from_str(payload)
            .unwrap_or(serde_json::Value::String(payload.to_string())),
    };
    if let Err(e) = wire_schema::check(&msg.topic, &msg.payload) {
        panic!(
            "{} does not match the contract's schema (schema/, MQTT.md): {e}\n{}",
            msg.topic, msg.payload
        );
    }
    Some(msg)
}

/// Every message an agent publishes that a test's subscriber sees is validated against
/// the contract's JSON Schemas (src/schema.rs): the wire itself, not only the types,
/// keeps to what schema/ and MQTT.md promise.
mod wire_schema {
    use std::sync::OnceLock;

    struct Validator {
        schemas: boon::Schemas,
        index: Vec<(&'static str, boon::SchemaIndex)>,
    }

    fn validator() -> &'static Validator {
        static V: OnceLock<Validator> = OnceLock::new();
        V.get_or_init(|| {
            let mut schemas = boon::Schemas::new();
            let mut compiler = boon::Compiler::new();
            let mut index = Vec::new();
            for p in simgate::schema::PAYLOADS {
                let url = format!("https://simgate.invalid/schema/v1/{}.schema.json", p.name);
                let schema = simgate::schema::schema(p.name).expect("a schema per payload");
                compiler
                    .add_resource(&url, schema)
                    .expect("a schema resource");
                let i = compiler
                    .compile(&url, &mut schemas)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", p.name));
                index.push((p.name, i));
            }
            Validator { schemas, index }
        })
    }

    /// The agent's own topics (agent → platform) only: tests publish bad commands and
    /// records on purpose. A cleared retained message (empty) has no payload to check.
    pub(super) fn check(topic: &str, payload: &serde_json::Value) -> Result<(), String> {
        let Some(rest) = topic.strip_prefix("simgate/v1/") else {
            return Ok(());
        };
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        let name = match parts.as_slice() {
            ["health"] => "health",
            ["index"] => "index",
            ["events"] => "event",
            ["usage"] => "usage",
            ["sim", _, "state"] => "sim-state",
            ["cmd", _, "status"] => "command-status",
            _ => return Ok(()),
        };
        if payload.as_str() == Some("") {
            return Ok(());
        }
        let v = validator();
        let (_, i) = v.index.iter().find(|(n, _)| *n == name).expect("indexed");
        v.schemas
            .validate(payload, *i)
            .map_err(|e| format!("{e:#}"))
    }
}

/// Test PKI made with the `openssl` CLI: a CA, a server certificate for 127.0.0.1 and
/// client certificates, all PEM, readable by the `mosquitto` user.
#[derive(Debug)]
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new(clients: &[&str]) -> Pki {
        assert!(
            which("openssl"),
            "openssl not found: apt-get install openssl"
        );
        let dir = TempDir::new("pki");
        let d = dir.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // P-256 keys: quick to make, supported by rustls (ring) and mosquitto.
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=simgate test CA",
            ],
        ]
        .concat());
        let sign = |name: &str, cn: &str, ext: &str| {
            std::fs::write(d.join(format!("{name}.ext")), ext).expect("write ext");
            run(&[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={cn}"),
                ],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        };
        sign(
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        for c in clients {
            sign(c, c, "extendedKeyUsage=clientAuth\n");
        }
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(d).expect("read pki dir").flatten() {
            let _ = std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o644));
        }
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// mosquitto_sub/mosquitto_pub options for client `name`. `--insecure` skips only
    /// the host-name check of these test clients; simgate checks it for real.
    pub fn client_args(&self, name: &str) -> Vec<String> {
        vec![
            "--cafile".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path(&format!("{name}.pem")),
            "--key".into(),
            self.path(&format!("{name}.key")),
            "--insecure".into(),
        ]
    }
}

/// A mosquitto password file (`mosquitto_passwd -b`) with `users` (name, password).
pub fn password_file(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("passwd");
    for (i, (u, p)) in users.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let st = cmd
            .arg("-b")
            .arg(&file)
            .args([u, p])
            .status()
            .unwrap_or_else(|e| panic!("cannot run mosquitto_passwd: {e}; {INSTALL_HINT}"));
        assert!(st.success(), "mosquitto_passwd failed");
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644));
    file
}

/// `simgate emulate modem` as a process: a modem on a pty, steered through its stdin
/// (swap, remove, insert, reboot SECS, silent ... — devices/modems/README.md).
#[derive(Debug)]
pub struct Modem {
    pub proc: Proc,
    /// The pty path simgate opens, like /dev/ttyUSB2.
    pub port: String,
    pub lines: Lines,
}

impl Modem {
    /// Start an emulated modem of `profile`; returns once its pty exists.
    pub fn start(profile: &str) -> Modem {
        Self::start_with(profile, &[])
    }

    /// Like `start`, with more `emulate modem` arguments (e.g. `--link PATH`).
    pub fn start_with(profile: &str, extra: &[&str]) -> Modem {
        let mut proc = Proc::spawn(
            "simgate emulate modem",
            Command::new(simgate_bin())
                .args(["emulate", "modem", "--profile", profile])
                .args(extra)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let mut lines = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        let first = lines.expect("the emulator's pty path", Duration::from_secs(10), |l| {
            l.starts_with("/dev/")
        });
        let port = first
            .split_whitespace()
            .next()
            .expect("a path on the first line")
            .to_string();
        Modem { proc, port, lines }
    }

    /// Steer the emulator (one control line).
    pub fn control(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.proc.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to the emulator's stdin");
    }
}

/// The arguments of `simgate run` publishing to `broker` as `agent`; the state
/// directory follows (`.args(run_args(..)).arg(state)`), then any other flags.
pub fn run_args<'a>(broker: &'a str, agent: &'a str) -> [&'a str; 6] {
    [
        "run",
        "--broker",
        broker,
        "--agent-id",
        agent,
        "--state-dir",
    ]
}

/// `modem_agent` with a configuration: `toml` is written to `state/simgate.toml` and
/// given with `--config`.
pub fn modem_agent_with(
    broker: &str,
    agent: &str,
    state: &Path,
    port: &str,
    toml: &str,
) -> Command {
    let config = state.join("simgate.toml");
    std::fs::write(&config, toml).expect("write the test configuration");
    let mut cmd = modem_agent(broker, agent, state, port);
    cmd.arg("--config").arg(config);
    cmd
}

/// `simgate run` publishing to `broker` as `agent`, its store in `state`, supervising
/// the modem at `port`; stdin and stdout closed, the debug log on the test's stderr.
/// Callers add flags (`--config FILE`, global flags go after `run` too) or pipe stderr.
pub fn modem_agent(broker: &str, agent: &str, state: &Path, port: &str) -> Command {
    let mut cmd = Command::new(simgate_bin());
    cmd.args(run_args(broker, agent))
        .arg(state)
        .args(["--modem", port])
        .env("RUST_LOG", "simgate=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

/// Unix seconds now (for commands' `expires_at`).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs()
}

/// Publish a command payload to `agent`'s `cmd` topic (QoS 1).
pub fn send_command(broker: &Broker, agent: &str, payload: &serde_json::Value) {
    broker.publish(
        &format!("simgate/v1/{agent}/cmd"),
        &["-m", &payload.to_string()],
    );
}

/// The final status of command `id` of `agent` (skipping received/executing).
pub fn final_status(sub: &mut Sub, agent: &str, id: &str) -> Msg {
    let topic = format!("simgate/v1/{agent}/cmd/{id}/status");
    // A command's work (a modem action, a re-read, a swap's steps) may take a while on
    // a loaded 2-core machine: a generous deadline.
    sub.expect_within(
        &format!("the outcome of command {id}"),
        Duration::from_secs(60),
        |m| {
            m.topic == topic
                && (m.payload["status"] == "successful" || m.payload["status"] == "failed")
        },
    )
}
