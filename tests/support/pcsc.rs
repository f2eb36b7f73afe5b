//! PC/SC: a private pcscd with one vpcd entry (two readers), and simgate's virtual cards
//! plugged into it.

use super::{
    free_port_pair, is_root, repo, simgate_bin, wait_for, which, Lines, Proc, TempDir, INSTALL_HINT,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// vpcd's friendly name in the rig's reader.conf; pcscd appends " 00 00" / " 00 01".
pub const READER: &str = "Simgate Test PCD";
/// The name Debian's own vpcd entry (/etc/reader.conf.d/vpcd) gives, used without root.
pub const SYSTEM_READER: &str = "Virtual PCD";

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
        self.await_card(slot, true);
        Card { proc, lines }
    }

    /// Pull `card` from reader `slot` and wait until pcscd has seen it go (pcscd polls
    /// vpcd: a card put back before that poll would look like the same card staying in).
    pub fn pull(&self, card: Card, slot: u8) {
        card.remove();
        self.await_card(slot, false);
    }

    /// Wait until pcscd reports reader `slot` with a card (`present`) or empty.
    fn await_card(&self, slot: u8, present: bool) {
        let name = self.reader(slot);
        wait_for(
            if present {
                "pcscd to report the card present"
            } else {
                "pcscd to report the reader empty"
            },
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
                        .any(|r| r["name"] == name.as_str() && r["card_present"] == present)
                })
            },
        );
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
