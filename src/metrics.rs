//! What a gateway's monitoring sees (`/health` and `/metrics` on the page's server,
//! src/http, when `[http] metrics` asks for them): counters bumped where things happen,
//! and the gauges the daemon knows, read at scrape time.
//!
//! The counters are one process-wide set, like any Prometheus client's default
//! registry: they are bumped deep in the layers (an AT timeout in src/at, a card read's
//! end in src/reader, a broker connection in src/link), where threading a handle through
//! every constructor would cost more than it says. A leaf module: it imports nothing of
//! the crate, and every layer may use it.
//!
//! The exposition is written by hand in the Prometheus text format 0.0.4 (a `# HELP` and
//! a `# TYPE` line per family, then `name{label="value"} number` lines; histograms as
//! cumulative `_bucket{le=...}` lines with `+Inf`, `_sum` and `_count`): some sixty lines,
//! no client crate on a small gateway.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the card read duration histogram: a USIM on a fast reader
/// reads in tens of milliseconds, a T=0 eUICC in a few hundred, a mute card ends at the
/// card timeout (5 s by default).
pub const READ_BUCKETS: [f64; 8] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The process's counters (see the module note). Every method is lock-free but
/// `command_finished`, which takes a short lock over a small map.
#[derive(Debug)]
pub struct Counters {
    reads_ok: AtomicU64,
    reads_failed: AtomicU64,
    /// Reads (both outcomes) per bucket of [`READ_BUCKETS`], not cumulative; the last
    /// slot counts those over every bound.
    read_buckets: [AtomicU64; READ_BUCKETS.len() + 1],
    read_micros: AtomicU64,
    at_timeouts: AtomicU64,
    broker_connects: AtomicU64,
    /// Final command outcomes by (outcome word, refusal code word or "").
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

static COUNTERS: Counters = Counters::new();

/// The process's counters.
pub fn counters() -> &'static Counters {
    &COUNTERS
}

impl Counters {
    pub const fn new() -> Counters {
        Counters {
            reads_ok: AtomicU64::new(0),
            reads_failed: AtomicU64::new(0),
            read_buckets: [const { AtomicU64::new(0) }; READ_BUCKETS.len() + 1],
            read_micros: AtomicU64::new(0),
            at_timeouts: AtomicU64::new(0),
            broker_connects: AtomicU64::new(0),
            commands: Mutex::new(BTreeMap::new()),
        }
    }

    /// A card read ended (src/reader's `spawn_read`, the one way a read is made).
    pub fn card_read(&self, ok: bool, took: Duration) {
        match ok {
            true => &self.reads_ok,
            false => &self.reads_failed,
        }
        .fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let slot = READ_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(READ_BUCKETS.len());
        self.read_buckets[slot].fetch_add(1, Relaxed);
        self.read_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// An AT command (or the synchronising marker) got no final result in time.
    pub fn at_timeout(&self) {
        self.at_timeouts.fetch_add(1, Relaxed);
    }

    /// The broker accepted a connection (CONNACK).
    pub fn broker_connected(&self) {
        self.broker_connects.fetch_add(1, Relaxed);
    }

    /// A command reached its final outcome and was reported (once per command id: a
    /// repeat answered from its record is not counted again).
    pub fn command_finished(&self, outcome: &'static str, code: Option<&'static str>) {
        let mut map = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((outcome, code.unwrap_or(""))).or_default() += 1;
    }
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new()
    }
}

/// What the daemon knows at the moment of a scrape.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Health {
    /// The daemon had its first look at readers and modems (systemd's READY=1).
    pub ready: bool,
    /// "connected", "not_connected" or "not_configured".
    pub broker: &'static str,
    /// Readers seen, when readers are watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readers: Option<usize>,
    /// "up" or "down", when readers are watched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pcscd: Option<&'static str>,
    pub modems: Modems,
    pub outbox: OutboxHealth,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Modems {
    /// Configured modem ports identified and answering now.
    pub up: usize,
    pub configured: usize,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct OutboxHealth {
    /// Messages waiting for the broker's acknowledgement.
    pub depth: u64,
    /// How long the oldest of them has waited (seconds); left out when none waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_age_secs: Option<u64>,
}

/// The content type of [`exposition`] (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text exposition of `c` and `h`.
pub fn exposition(c: &Counters, h: &Health) -> String {
    let mut out = String::with_capacity(2048);

    let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        &mut out,
        "simgate_ready",
        "1 once the daemon had its first look at readers and modems.",
        f64::from(u8::from(h.ready)),
    );
    gauge(
        &mut out,
        "simgate_broker_connected",
        "1 while the broker accepts the connection; 0 while it is away or none is configured.",
        f64::from(u8::from(h.broker == "connected")),
    );
    if let Some(n) = h.readers {
        gauge(
            &mut out,
            "simgate_readers",
            "PC/SC readers seen (0 while pcscd is down).",
            n as f64,
        );
    }
    gauge(
        &mut out,
        "simgate_modems_up",
        "Configured modem ports identified and answering.",
        h.modems.up as f64,
    );
    gauge(
        &mut out,
        "simgate_modems_configured",
        "Modem ports configured.",
        h.modems.configured as f64,
    );
    gauge(
        &mut out,
        "simgate_outbox_depth",
        "Messages for the platform waiting for the broker's acknowledgement.",
        h.outbox.depth as f64,
    );
    gauge(
        &mut out,
        "simgate_outbox_oldest_age_seconds",
        "How long the oldest waiting message has waited (0 when none waits).",
        h.outbox.oldest_age_secs.unwrap_or(0) as f64,
    );
    let counter = |out: &mut String, name: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let commands: Vec<(String, u64)> = {
        let map = c.commands.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|((outcome, code), n)| {
                let labels = match code.is_empty() {
                    true => format!("{{outcome=\"{outcome}\"}}"),
                    false => format!("{{outcome=\"{outcome}\",code=\"{code}\"}}"),
                };
                (labels, *n)
            })
            .collect()
    };
    counter(
        &mut out,
        "simgate_commands_total",
        "Commands (the platform's and the page's) by final outcome, with the refusal code of a failure.",
        &commands,
    );
    counter(
        &mut out,
        "simgate_card_reads_total",
        "Card identifications in PC/SC readers by result.",
        &[
            ("{result=\"ok\"}".into(), c.reads_ok.load(Relaxed)),
            ("{result=\"failed\"}".into(), c.reads_failed.load(Relaxed)),
        ],
    );
    let name = "simgate_card_read_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long a card identification took, from the reader's connect to its answer.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, slot) in c.read_buckets.iter().enumerate() {
        cumulative += slot.load(Relaxed);
        match READ_BUCKETS.get(i) {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let sum = c.read_micros.load(Relaxed) as f64 / 1e6;
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    counter(
        &mut out,
        "simgate_at_timeouts_total",
        "AT commands (or the synchronising marker) that got no final result in time.",
        &[(String::new(), c.at_timeouts.load(Relaxed))],
    );
    counter(
        &mut out,
        "simgate_broker_reconnects_total",
        "Connections the broker accepted after the first one.",
        &[(
            String::new(),
            c.broker_connects.load(Relaxed).saturating_sub(1),
        )],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_equal_to_count() {
        let c = Counters::new();
        c.card_read(true, Duration::from_millis(20));
        c.card_read(true, Duration::from_millis(300));
        c.card_read(false, Duration::from_secs(7));
        let text = exposition(&c, &Health::default());
        let h = "simgate_card_read_duration_seconds";
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.025\"}}")),
            Some("1")
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.25\"}}")),
            Some("1")
        );
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"0.5\"}}")),
            Some("2")
        );
        assert_eq!(sample(&text, &format!("{h}_bucket{{le=\"5\"}}")), Some("2"));
        assert_eq!(
            sample(&text, &format!("{h}_bucket{{le=\"+Inf\"}}")),
            Some("3")
        );
        assert_eq!(sample(&text, &format!("{h}_count")), Some("3"));
        assert_eq!(sample(&text, &format!("{h}_sum")), Some("7.32"));
        assert_eq!(
            sample(&text, "simgate_card_reads_total{result=\"ok\"}"),
            Some("2")
        );
        assert_eq!(
            sample(&text, "simgate_card_reads_total{result=\"failed\"}"),
            Some("1")
        );
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples_and_each_name_once() {
        let c = Counters::new();
        c.command_finished("successful", None);
        c.command_finished("failed", Some("unknown_sim"));
        c.command_finished("failed", Some("unknown_sim"));
        c.broker_connected();
        c.broker_connected();
        let h = Health {
            ready: true,
            broker: "connected",
            readers: Some(2),
            pcscd: Some("up"),
            modems: Modems {
                up: 1,
                configured: 1,
            },
            outbox: OutboxHealth {
                depth: 3,
                oldest_age_secs: Some(12),
            },
        };
        let text = exposition(&c, &h);
        let mut typed = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(typed.insert(name.clone()), "{name} typed twice:\n{text}");
                current = name;
            } else if !line.starts_with('#') {
                assert!(
                    line.starts_with(&current),
                    "{line} outside its family:\n{text}"
                );
            }
        }
        assert_eq!(
            sample(
                &text,
                "simgate_commands_total{outcome=\"failed\",code=\"unknown_sim\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(&text, "simgate_commands_total{outcome=\"successful\"}"),
            Some("1")
        );
        assert_eq!(sample(&text, "simgate_broker_reconnects_total"), Some("1"));
        assert_eq!(
            sample(&text, "simgate_outbox_oldest_age_seconds"),
            Some("12")
        );
        assert_eq!(sample(&text, "simgate_readers"), Some("2"));
        assert_eq!(sample(&text, "simgate_ready"), Some("1"));
    }
}
