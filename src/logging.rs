//! Tracing setup: RUST_LOG-style filtering; human output on a terminal; JSON on request
//! (or when stderr is neither a terminal nor the journal, and the format is "auto");
//! under systemd (stderr is the journal stream, `JOURNAL_STREAM`) the journal's native
//! protocol, so each line keeps its priority (`journalctl -p warning -u simgate`) and
//! its fields (`journalctl PORT=/dev/ttyUSB2`, ICCID=, READER=).

use crate::config::LogFormat;
use std::io::IsTerminal;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// journald's socket for the native protocol (systemd-journald.service(8)).
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Whether lines written to stderr may carry colour: a terminal, and neither NO_COLOR
/// nor CLICOLOR=0 nor TERM=dumb says otherwise (CLICOLOR_FORCE forces it;
/// https://no-color.org, https://bixense.com/clicolors; anstream decides).
pub fn colour_on_stderr() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// Where the log of a command that draws a screen goes while it does (`watch`,
/// `station` on a terminal): a file of its own, so no log line lands among the rows a
/// person reads. `$XDG_STATE_HOME/simgate/`, else `~/.local/state/simgate/`, else the
/// temporary directory.
pub fn screen_log_path(command: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("simgate");
    dir.join(format!("{command}.log"))
}

/// Install the global subscriber. Logs go to stderr (or the journal); stdout belongs
/// to command output. `RUST_LOG`, when set, wins over `level`. `screen`: the command
/// draws rows on this terminal, so its log goes to [`screen_log_path`] instead (said
/// once on stderr first).
pub fn init(level: &str, format: LogFormat, screen: Option<&str>) {
    let filter = filter(std::env::var("RUST_LOG").ok().as_deref(), level);
    if format == LogFormat::Auto && stderr_is_journal() {
        if let Ok(journal) = Journal::connect(Path::new(JOURNAL_SOCKET)) {
            // A second init (tests calling the CLI in-process) keeps the first one.
            let _ = tracing_subscriber::registry()
                .with(journal.with_filter(filter))
                .try_init();
            return;
        }
    }
    if let Some(command) = screen.filter(|_| std::io::stderr().is_terminal()) {
        let path = screen_log_path(command);
        let file = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
            });
        match file {
            Ok(file) => {
                eprintln!(
                    "simgate: the log goes to {} while the screen is shown",
                    path.display()
                );
                let builder = tracing_subscriber::fmt()
                    // The builder's own level (INFO by default) would cut what the
                    // filter lets through: the filter alone decides.
                    .with_max_level(LevelFilter::TRACE)
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .log_internal_errors(false);
                let _ = match format {
                    LogFormat::Json => builder.json().finish().with(filter).try_init(),
                    _ => builder.finish().with(filter).try_init(),
                };
                return;
            }
            // No place for a file: stderr as ever, rather than no log.
            Err(e) => eprintln!(
                "simgate: cannot write {}: {e}; the log stays on stderr",
                path.display()
            ),
        }
    }
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        // On a failed write (stderr a closed pipe) the default reports it with
        // `eprintln!`, which panics on that same stderr: whichever thread logged dies,
        // and `run` then hung on SIGTERM. A log line that cannot be written is dropped.
        .log_internal_errors(false);
    let _ = if json {
        builder.json().finish().with(filter).try_init()
    } else {
        builder
            .with_ansi(colour_on_stderr())
            .finish()
            .with(filter)
            .try_init()
    };
}

/// The log filter: `RUST_LOG` when it is set and parses, else the configured `level`,
/// else info. Both take comma-separated `target=level` directives and a bare default
/// level (`simgate=debug,warn`), matched on target prefixes: tracing-subscriber's
/// `Targets`. Its `EnvFilter` adds span and field filters that no one here uses, and
/// with them a regex engine: 388 KB (5%) of the gateway binary, 144 KiB of the daemon's
/// resident memory (benches/lean.rs).
fn filter(rust_log: Option<&str>, level: &str) -> Targets {
    rust_log
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// systemd connects a service's stderr to the journal and says so in `JOURNAL_STREAM`
/// ("DEV:INODE" of that stream, systemd.exec(5)); a child whose stderr was redirected
/// elsewhere inherits the variable but not the stream, hence the comparison.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    stream.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// A layer sending each event to journald as one datagram of the native protocol.
#[derive(Debug)]
pub struct Journal {
    sock: UnixDatagram,
}

impl Journal {
    /// Connect to the journal's native socket (`JOURNAL_SOCKET`, or another for tests).
    pub fn connect(path: &Path) -> std::io::Result<Journal> {
        let sock = UnixDatagram::unbound()?;
        sock.connect(path)?;
        Ok(Journal { sock })
    }
}

impl<S: Subscriber> Layer<S> for Journal {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let datagram = encode(*meta.level(), meta.target(), &fields);
        // A line the journal cannot take (gone, or a datagram over its limit) is
        // dropped: logging must never stop the daemon.
        let _ = self.sock.send(&datagram);
    }
}

/// An event's message and its other fields, in order.
#[derive(Debug, Default)]
pub struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name => self.rest.push((name.to_string(), value)),
        }
    }
}

/// syslog(3) priorities, as journald and `journalctl -p` use them.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A journal field name from a tracing one: upper case letters, digits and '_', not
/// starting with '_' (trusted fields) or a digit (systemd's journal-fields(7) rules).
fn field_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .collect();
    let trimmed = upper.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit());
    match trimmed.is_empty() {
        true => "FIELD".to_string(),
        false => trimmed.to_string(),
    }
}

/// One event in the journal's native protocol (systemd.journal-fields(7), "Native
/// Journal Protocol"): `NAME=value\n`, or for a value holding a newline `NAME\n`, its
/// length as 64-bit little-endian, the value, `\n`. MESSAGE carries the message and the
/// fields as `key=value` too, for `journalctl` without `-o verbose`.
pub fn encode(level: Level, target: &str, fields: &Fields) -> Vec<u8> {
    let mut message = fields.message.clone();
    for (k, v) in &fields.rest {
        message.push_str(&format!(" {k}={v}"));
    }
    let mut out = Vec::with_capacity(message.len() * 2 + 64);
    let mut put = |name: &str, value: &str| {
        if value.contains('\n') {
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        } else {
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
    };
    put("PRIORITY", &priority(level).to_string());
    put("SYSLOG_IDENTIFIER", "simgate");
    put("MESSAGE", &message);
    put("TARGET", target);
    for (k, v) in &fields.rest {
        let name = field_name(k);
        // Our own names never shadow the ones above.
        if !matches!(
            name.as_str(),
            "PRIORITY" | "SYSLOG_IDENTIFIER" | "MESSAGE" | "TARGET"
        ) {
            put(&name, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_directives_win_and_a_bad_or_empty_one_falls_back_to_the_configured_level() {
        let f = filter(Some("simgate::link=debug,warn"), "error");
        assert!(f.would_enable("simgate::link::nodes", &Level::DEBUG));
        assert!(!f.would_enable("simgate::reader", &Level::INFO));
        assert!(f.would_enable("rumqttc", &Level::WARN));
        for bad in [Some("simgate=loud"), Some(" "), None] {
            let f = filter(bad, "simgate=debug,error");
            assert!(f.would_enable("simgate::daemon", &Level::DEBUG), "{bad:?}");
            assert!(!f.would_enable("sled", &Level::WARN), "{bad:?}");
        }
        let f = filter(None, "simgate=loud");
        assert!(f.would_enable("simgate", &Level::INFO));
        assert!(!f.would_enable("simgate", &Level::DEBUG));
    }

    /// Parse a native-protocol datagram back into (name, value) pairs.
    fn decode(mut d: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while !d.is_empty() {
            let nl = d.iter().position(|&b| b == b'\n').unwrap();
            let line = &d[..nl];
            if let Some(eq) = line.iter().position(|&b| b == b'=') {
                out.push((
                    String::from_utf8(line[..eq].to_vec()).unwrap(),
                    String::from_utf8(line[eq + 1..].to_vec()).unwrap(),
                ));
                d = &d[nl + 1..];
            } else {
                let name = String::from_utf8(line.to_vec()).unwrap();
                let len = u64::from_le_bytes(d[nl + 1..nl + 9].try_into().unwrap()) as usize;
                let value = &d[nl + 9..nl + 9 + len];
                assert_eq!(d[nl + 9 + len], b'\n');
                out.push((name, String::from_utf8(value.to_vec()).unwrap()));
                d = &d[nl + 10 + len..];
            }
        }
        out
    }

    fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn field_names_follow_the_journals_rules() {
        assert_eq!(field_name("port"), "PORT");
        assert_eq!(field_name("at_commands"), "AT_COMMANDS");
        assert_eq!(field_name("_hidden"), "HIDDEN");
        assert_eq!(field_name("2x"), "X");
        assert_eq!(field_name("a.b-c"), "A_B_C");
        assert_eq!(field_name("__"), "FIELD");
    }

    #[test]
    fn a_multiline_value_is_length_prefixed() {
        let f = Fields {
            message: "one\ntwo".into(),
            rest: vec![],
        };
        let d = encode(Level::ERROR, "simgate::x", &f);
        let fields = decode(&d);
        assert_eq!(get(&fields, "MESSAGE"), Some("one\ntwo"));
        assert_eq!(get(&fields, "PRIORITY"), Some("3"));
        // The raw bytes: the name, a newline, the 8-byte little-endian length.
        let at = d.windows(8).position(|w| w == b"MESSAGE\n").unwrap();
        assert_eq!(&d[at + 8..at + 16], &7u64.to_le_bytes());
    }

    /// The layer's datagrams on a socket bound here, as journald would receive them:
    /// the priority from the level, the event's fields as journal fields.
    #[test]
    fn events_reach_the_socket_with_priority_and_fields() {
        let dir = std::env::temp_dir().join(format!("simgate-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let layer = Journal::connect(&path).unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                port = "/dev/ttyUSB2",
                error = "no answer",
                "modem lost; reattaching"
            );
            tracing::info!(
                iccid = "8901260886258128535",
                reader = "Simgate Test PCD 00 00",
                "card identified"
            );
        });
        let mut buf = vec![0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        let warn = decode(&buf[..n]);
        assert_eq!(get(&warn, "PRIORITY"), Some("4"));
        assert_eq!(get(&warn, "SYSLOG_IDENTIFIER"), Some("simgate"));
        assert_eq!(get(&warn, "PORT"), Some("/dev/ttyUSB2"));
        assert_eq!(get(&warn, "ERROR"), Some("no answer"));
        assert_eq!(
            get(&warn, "MESSAGE"),
            Some("modem lost; reattaching port=/dev/ttyUSB2 error=no answer")
        );
        let n = server.recv(&mut buf).unwrap();
        let info = decode(&buf[..n]);
        assert_eq!(get(&info, "PRIORITY"), Some("6"));
        assert_eq!(get(&info, "ICCID"), Some("8901260886258128535"));
        assert_eq!(get(&info, "READER"), Some("Simgate Test PCD 00 00"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
