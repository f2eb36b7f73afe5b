//! Modems: `simgate emulate modem` on a pty, steered through its stdin.

use super::{simgate_bin, Lines, Proc};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `simgate emulate modem` as a process: a modem on a pty, steered through its stdin
/// (swap, remove, insert, reboot SECS, silent ... — devices/modems/README.md).
#[derive(Debug)]
pub struct Modem {
    pub proc: Proc,
    /// The pty path simgate opens, like /dev/ttyUSB2.
    pub port: String,
    pub lines: Lines,
    /// The stable name given with `--link`, removed when the modem goes.
    link: Option<std::path::PathBuf>,
}

impl Drop for Modem {
    /// The modem unplugged: its stable name goes with it (as udev removes a by-id link),
    /// so an agent still following the name cannot reach the next pty given its number
    /// — another test's modem.
    fn drop(&mut self) {
        if let Some(link) = &self.link {
            let _ = std::fs::remove_file(link);
        }
    }
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
        let link = extra
            .iter()
            .position(|a| *a == "--link")
            .and_then(|i| extra.get(i + 1))
            .map(std::path::PathBuf::from);
        Modem {
            proc,
            port,
            lines,
            link,
        }
    }

    /// Steer the emulator (one control line).
    pub fn control(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.proc.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{line}").expect("write to the emulator's stdin");
    }
}
