//! Who holds a serial port. simgate opens a modem port with an exclusive `flock`
//! (serialport's default), and so do other careful programs; the kernel's lock table,
//! /proc/locks (proc(5)), names the process holding it. That turns "Unable to acquire
//! exclusive lock on serial port" into "simgate's daemon, pid 1234, drives this port".

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A process holding a port's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (/proc/PID/comm), when readable.
    pub comm: Option<String>,
    /// Its command line, arguments joined by spaces, when readable.
    pub cmdline: Option<String>,
}

impl Holder {
    /// The process is a simgate daemon (`simgate run`).
    pub fn is_simgate_daemon(&self) -> bool {
        self.comm.as_deref() == Some("simgate")
            && self
                .cmdline
                .as_deref()
                .is_some_and(|c| c.split(' ').any(|a| a == "run"))
    }

    /// What a person should do about it, as one sentence.
    pub fn advice(&self) -> String {
        if self.is_simgate_daemon() {
            "it is simgate's daemon: use what it reports (`simgate watch`, or a `refresh` \
             command through the platform), or stop it first (`systemctl stop simgate`)"
                .to_string()
        } else {
            "stop that program first, or give simgate another of the modem's ports".to_string()
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.comm, &self.cmdline) {
            (_, Some(cmd)) => write!(f, "pid {} ({cmd})", self.pid),
            (Some(comm), None) => write!(f, "pid {} ({comm})", self.pid),
            (None, None) => write!(f, "pid {}", self.pid),
        }
    }
}

/// The process holding a lock on the device node `port` (symlinks followed), if the
/// lock table shows one.
pub fn holder(port: &str) -> Option<Holder> {
    let meta = std::fs::metadata(port).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let pid = locking_pid(&locks, meta.dev(), meta.ino())?;
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let comm = std::fs::read_to_string(proc_dir.join("comm"))
        .ok()
        .map(|c| c.trim_end().to_string());
    let cmdline = std::fs::read(proc_dir.join("cmdline")).ok().map(|raw| {
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    });
    Some(Holder { pid, comm, cmdline })
}

/// The pid holding a lock on the file (`dev`, `ino`) in /proc/locks' text. A line is
/// `N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE START END` (major and minor of the file
/// system in hex, the inode in decimal); lines with `->` are waiters, not holders.
pub fn locking_pid(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // The Linux dev_t encoding (glibc's gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    locks.lines().find_map(|line| {
        let mut words = line.split_whitespace().skip(1);
        if words.clone().next() == Some("->") {
            return None;
        }
        let words: Vec<&str> = words.by_ref().collect();
        let (pid, file) = (words.get(3)?, words.get(4)?);
        let mut parts = file.split(':');
        let (ma, mi, i) = (parts.next()?, parts.next()?, parts.next()?);
        let same = u64::from_str_radix(ma, 16).ok()? == major
            && u64::from_str_radix(mi, 16).ok()? == minor
            && i.parse::<u64>().ok()? == ino;
        same.then(|| pid.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /proc/locks' format: the first line as seen on this project's Debian 12 test
    /// machine, the others written for the test (a holder of inode 6 on 00:1a, a blocked
    /// waiter on it, a POSIX lock elsewhere).
    const LOCKS: &str = "\
1: FLOCK  ADVISORY  WRITE 4385 fe:00:10018883 0 EOF
2: FLOCK  ADVISORY  WRITE 5120 00:1a:6 0 EOF
2: -> FLOCK  ADVISORY  WRITE 5200 00:1a:6 0 EOF
3: POSIX  ADVISORY  WRITE 611 00:19:1042 0 EOF
";

    fn dev(major: u64, minor: u64) -> u64 {
        (major << 8) | minor
    }

    #[test]
    fn finds_the_holder_not_the_waiter() {
        assert_eq!(locking_pid(LOCKS, dev(0, 0x1a), 6), Some(5120));
    }

    #[test]
    fn a_file_nobody_locked_has_no_holder() {
        assert_eq!(locking_pid(LOCKS, dev(0, 0x1a), 7), None);
        assert_eq!(locking_pid(LOCKS, dev(0, 0x1b), 6), None);
    }

    #[test]
    fn hex_majors_and_large_inodes_match() {
        assert_eq!(locking_pid(LOCKS, dev(0xfe, 0), 10018883), Some(4385));
    }

    #[test]
    fn a_simgate_daemon_is_told_apart() {
        let h = Holder {
            pid: 7,
            comm: Some("simgate".into()),
            cmdline: Some("/usr/bin/simgate run".into()),
        };
        assert!(h.is_simgate_daemon());
        assert!(h.advice().contains("systemctl stop simgate"));
        let other = Holder {
            pid: 8,
            comm: Some("minicom".into()),
            cmdline: None,
        };
        assert!(!other.is_simgate_daemon());
        assert_eq!(other.to_string(), "pid 8 (minicom)");
    }
}
