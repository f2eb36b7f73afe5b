//! What the daemon tells its service manager (systemd, `Type=notify`): READY=1 once the
//! store is open and readers and modems had their first look, WATCHDOG=1 from the
//! daemon's own loop (an `Event::Watchdog` like any other, so a wedged loop stops feeding
//! it and systemd restarts the service), and STATUS= a line a person understands. The
//! same picture answers a monitoring's `/health` and `/metrics` (src/http, through
//! [`HealthProbe`]), read at each scrape.

use super::Ctx;
use crate::modem::supervisor::ModemEvent;
use crate::notify::{self, Notifier};
use crate::reader::watch::ReaderEvent;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the loop last knew, for the page's server to read at a scrape.
#[derive(Debug, Default, Clone)]
struct View {
    ready: bool,
    /// Readers seen, or None while pcscd is down; not set when readers are not watched.
    readers: Option<Option<usize>>,
    modems_up: usize,
    modems_configured: usize,
}

/// `/health` and `/metrics`'s view of the daemon: the loop's last picture, the link's
/// state and the outbox read live (a broker drop is no loop event).
#[derive(Debug)]
pub(crate) struct HealthProbe {
    view: Arc<Mutex<View>>,
    link: Option<crate::link::Link>,
}

impl crate::http::Probe for HealthProbe {
    fn health(&self) -> crate::metrics::Health {
        let v = self.view.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (broker, depth, oldest) = match &self.link {
            Some(l) => (
                match l.is_connected() {
                    true => "connected",
                    false => "not_connected",
                },
                l.queued(),
                l.oldest_queued_secs(),
            ),
            None => ("not_configured", 0, None),
        };
        crate::metrics::Health {
            ready: v.ready,
            broker,
            readers: v.readers.map(|r| r.unwrap_or(0)),
            pcscd: v.readers.map(|r| match r {
                Some(_) => "up",
                None => "down",
            }),
            modems: crate::metrics::Modems {
                up: v.modems_up,
                configured: v.modems_configured,
            },
            outbox: crate::metrics::OutboxHealth {
                depth,
                oldest_age_secs: oldest,
            },
        }
    }
}

#[derive(Debug)]
pub(crate) struct Service {
    notifier: Option<Notifier>,
    ready: bool,
    /// Readers are watched and their first look (`ReaderEvent::Looked`) has not come yet.
    readers_pending: bool,
    /// Configured modem ports without their first outcome (identified, or lost).
    modems_pending: BTreeSet<String>,
    watch_readers: bool,
    modem_ports: usize,
    readers: BTreeSet<String>,
    pcsc_down: bool,
    modems: BTreeSet<String>,
    last_status: String,
    view: Arc<Mutex<View>>,
    link: Option<crate::link::Link>,
    /// Debug builds only: stop the loop for good after this many watchdog pings once
    /// ready (`SIMGATE_DEBUG_WEDGE_AFTER_PINGS`), so a test can show that the pings come from
    /// the loop itself. Nothing real wedges the loop on demand: every await in it is
    /// bounded by design.
    #[cfg(debug_assertions)]
    wedge_after: Option<u64>,
    #[cfg(debug_assertions)]
    pings: u64,
}

impl Service {
    pub(crate) fn new(
        watch_readers: bool,
        modem_ports: &[String],
        link: Option<crate::link::Link>,
    ) -> Service {
        Service {
            notifier: Notifier::from_env(),
            ready: false,
            readers_pending: watch_readers,
            modems_pending: modem_ports.iter().cloned().collect(),
            watch_readers,
            modem_ports: modem_ports.len(),
            readers: BTreeSet::new(),
            pcsc_down: false,
            modems: BTreeSet::new(),
            last_status: String::new(),
            view: Arc::default(),
            link,
            #[cfg(debug_assertions)]
            wedge_after: std::env::var("SIMGATE_DEBUG_WEDGE_AFTER_PINGS")
                .ok()
                .and_then(|v| v.parse().ok()),
            #[cfg(debug_assertions)]
            pings: 0,
        }
    }

    /// What answers `/health` and `/metrics`.
    pub(crate) fn probe(&self) -> Arc<dyn crate::http::Probe> {
        Arc::new(HealthProbe {
            view: self.view.clone(),
            link: self.link.clone(),
        })
    }

    /// The watchdog's period (half of WATCHDOG_USEC), when the manager asked for pings.
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        self.notifier.as_ref().and(notify::watchdog_interval())
    }

    pub(crate) fn on_reader(&mut self, ev: &ReaderEvent) {
        match ev {
            ReaderEvent::Looked { readers, .. } => {
                self.readers_pending = false;
                self.pcsc_down = false;
                self.readers = readers.iter().cloned().collect();
            }
            ReaderEvent::ReaderAdded { reader } => {
                self.readers.insert(reader.clone());
            }
            ReaderEvent::ReaderRemoved { reader } => {
                self.readers.remove(reader);
            }
            ReaderEvent::ServiceLost { .. } => {
                // pcscd not there at start is a first look too: nothing to wait for.
                self.readers_pending = false;
                self.pcsc_down = true;
                self.readers.clear();
            }
            ReaderEvent::CardInserted { .. } | ReaderEvent::CardRemoved { .. } => {}
        }
    }

    pub(crate) fn on_modem(&mut self, ev: &ModemEvent) {
        match ev {
            ModemEvent::Identified(info) | ModemEvent::SimInserted { info, .. } => {
                self.modems_pending.remove(&info.port);
                self.modems.insert(info.port.clone());
            }
            ModemEvent::Lost { port, .. } | ModemEvent::Absent { port, .. } => {
                self.modems_pending.remove(port);
                self.modems.remove(port);
            }
            ModemEvent::SimRemoved { .. }
            | ModemEvent::SimUpdated(_)
            | ModemEvent::Usage { .. }
            | ModemEvent::Session { .. }
            | ModemEvent::Balance { .. } => {}
        }
    }

    /// After every event: READY=1 the first time nothing is pending, STATUS= when the
    /// line changed.
    pub(crate) fn after_event(&mut self, ctx: &Ctx) {
        let became_ready = !self.ready && !self.readers_pending && self.modems_pending.is_empty();
        self.ready |= became_ready;
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = View {
            ready: self.ready,
            readers: self
                .watch_readers
                .then(|| (!self.pcsc_down).then_some(self.readers.len())),
            modems_up: self.modems.len(),
            modems_configured: self.modem_ports,
        };
        let Some(n) = &self.notifier else { return };
        let status = self.status(ctx);
        if became_ready {
            tracing::info!(%status, "ready");
            n.tell(&format!("READY=1\nSTATUS={status}"));
            self.last_status = status;
        } else if self.ready && status != self.last_status {
            n.tell(&format!("STATUS={status}"));
            self.last_status = status;
        }
    }

    /// `Event::Watchdog`: the loop is alive.
    pub(crate) fn ping(&mut self, ctx: &Ctx) {
        let status = self.status(ctx);
        if let Some(n) = &self.notifier {
            n.tell(&format!("WATCHDOG=1\nSTATUS={status}"));
        }
        self.last_status = status;
        #[cfg(debug_assertions)]
        {
            self.pings += u64::from(self.ready);
            if self.wedge_after.is_some_and(|n| self.pings >= n) {
                tracing::warn!(
                    pings = self.pings,
                    "SIMGATE_DEBUG_WEDGE_AFTER_PINGS: wedging the loop"
                );
                // Blocks the loop's thread for good; the runtime's other tasks go on.
                loop {
                    std::thread::park();
                }
            }
        }
    }

    /// "2 readers, 1 modem, broker connected, 0 queued".
    fn status(&self, ctx: &Ctx) -> String {
        let mut parts = Vec::new();
        if self.watch_readers {
            parts.push(match self.pcsc_down {
                true => "PC/SC service down".to_string(),
                false => plural(self.readers.len(), "reader"),
            });
        }
        if self.modem_ports > 0 {
            let up = self.modems.len();
            parts.push(match up == self.modem_ports {
                true => plural(up, "modem"),
                false => format!("{up} of {}", plural(self.modem_ports, "modem")),
            });
        }
        match &ctx.link {
            Some(l) => {
                parts.push(
                    match l.is_connected() {
                        true => "broker connected",
                        false => "broker not connected",
                    }
                    .to_string(),
                );
                parts.push(format!("{} queued", l.queued()));
            }
            None => parts.push("no broker configured".to_string()),
        }
        notify::status_value(&parts.join(", "))
    }
}

fn plural(n: usize, word: &str) -> String {
    match n {
        1 => format!("1 {word}"),
        _ => format!("{n} {word}s"),
    }
}
