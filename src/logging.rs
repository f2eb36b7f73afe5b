//! Tracing setup: RUST_LOG-style filtering, human output on a terminal, JSON on request
//! (or when stderr is not a terminal and the format is "auto", e.g. under systemd).

use crate::config::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Logs go to stderr; stdout belongs to command output.
/// `RUST_LOG`, when set, wins over `level`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Human => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // On a failed write (stderr a closed pipe) the default reports it with
        // `eprintln!`, which panics on that same stderr: whichever thread logged dies,
        // and `run` then hung on SIGTERM. A log line that cannot be written is dropped.
        .log_internal_errors(false);
    // A second init (tests calling the CLI in-process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}
