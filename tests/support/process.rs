//! Child processes of a test: killed on drop, their output awaited line by line with a
//! deadline, signalled.

use super::INSTALL_HINT;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

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
