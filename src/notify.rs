//! systemd's service notification protocol (sd_notify(3)), spoken directly: one datagram
//! of `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with '@'). No libsystemd: the protocol is a few lines,
//! and a process not started by systemd simply has no socket.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// A connection to the service manager, when there is one.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` names, or None when simgate was not started by a
    /// service manager expecting notifications (or the name is unusable: said once).
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        match Self::connect(&name.to_string_lossy()) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %name.to_string_lossy(), error = %e, "NOTIFY_SOCKET unusable: no readiness or watchdog notifications");
                None
            }
        }
    }

    /// A notifier for the socket `name` (sd_notify's syntax).
    pub fn connect(name: &str) -> io::Result<Notifier> {
        let addr = match name.strip_prefix('@') {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(abstract_name.as_bytes())?
            }
            None if name.starts_with('/') => SocketAddr::from_pathname(name)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name ('@...')",
                ))
            }
        };
        let sock = UnixDatagram::unbound()?;
        // A full socket buffer must never stall the daemon's loop: the message is
        // dropped instead (systemd reads its socket promptly; a lost ping is retried
        // at the next one, well inside the watchdog's timeout).
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Send one notification, e.g. "READY=1" or "WATCHDOG=1\nSTATUS=...".
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }

    /// [`Notifier::notify`], a failure logged rather than returned: nothing the daemon
    /// does depends on the manager having heard.
    pub fn tell(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::debug!(error = %e, "notification to the service manager not sent");
        }
    }
}

/// How often to feed the watchdog: half of `WATCHDOG_USEC` (sd_watchdog_enabled(3)'s
/// advice), when it is set for this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// A string that is safe as one `STATUS=` value: a newline would start another key.
pub fn status_value(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_path_socket_with_one_datagram() {
        let dir = std::env::temp_dir().join(format!("simgate-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=1 reader").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=1 reader");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn notifies_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("simgate-notify-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        Notifier::connect(&format!("@{name}"))
            .unwrap()
            .notify("WATCHDOG=1")
            .unwrap();
        let mut buf = [0u8; 16];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn refuses_a_relative_socket_name() {
        assert!(Notifier::connect("notify").is_err());
    }

    #[test]
    fn status_is_one_line() {
        assert_eq!(status_value("a\nb\rc"), "a b c");
    }
}
