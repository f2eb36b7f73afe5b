//! One task per modem port: attach, identify, follow the SIM (URCs, or a cheap periodic
//! check where the family has none), sample usage, apply actions, and reattach when the
//! port vanishes (USB reset, reboot) or the modem falls silent.
//!
//! Steady state costs one compound status line per poll, plus an ICCID check when the
//! family has no hot-plug URC: ≤ 2 command lines a minute at the default poll.
//!
//! By room: `lifecycle` (the task: open, attach, reattach with backoff), `handle`
//! (what a caller may ask, and how it is answered), `attached` (the attached state:
//! URCs, polls, the SIM followed, requests served, a suspension kept) and `usage`
//! (the status line's counter sample, accounted in the store).

mod attached;
mod handle;
mod lifecycle;
mod usage;

pub use handle::{
    EsimResult, IsdrJob, ModemError, ModemHandle, ModemIsdr, PinResult, SmsResult, UssdResult,
};
pub use lifecycle::spawn;

use super::identify::ModemInfo;
use super::profile::Profiles;
use crate::backoff::Backoff;
use crate::sim::InSession;
use crate::store::usage::Bytes;
use crate::store::Store;
use handle::Request;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Everything a supervisor reports. A closed set: the daemon handles them in one match.
#[derive(Debug, Clone)]
pub enum ModemEvent {
    /// The modem and its SIM (or its absence) after an attach.
    Identified(Box<ModemInfo>),
    /// A SIM appeared or replaced another; `previous` is the ICCID it replaced.
    SimInserted {
        info: Box<ModemInfo>,
        previous: Option<String>,
    },
    /// The same SIM with new facts: unlocked (its IMSI and operator now readable), or
    /// its lock state changed.
    SimUpdated(Box<ModemInfo>),
    /// The SIM left the modem.
    SimRemoved { port: String, iccid: String },
    /// A counter sample was accounted: the SIM's total this month.
    Usage {
        port: String,
        iccid: String,
        this_month: Bytes,
        in_session: InSession,
    },
    /// The SIM's data session went up or down (whether or not a counter exists).
    Session {
        port: String,
        iccid: String,
        in_session: InSession,
        reason: String,
    },
    /// The port is gone or the modem stopped answering; reattaching.
    Lost { port: String, error: String },
    /// The port was not there at the first attempt to open it (a modem not plugged in,
    /// or still booting); the supervisor waits for it. Told once.
    Absent { port: String, error: String },
    /// The operator answered a balance query: stored (`operator_estimate`), the row is
    /// due again.
    Balance { iccid: String },
}

/// Supervisor settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Steady-state poll (status line, and ICCID where the family has no hot-plug URC).
    pub poll: Duration,
    /// Linux network interface of the bearer (wwan0), for families without a vendor
    /// counter.
    pub netdev: Option<String>,
    /// How often to try reopening a vanished port.
    pub reopen_every: Duration,
    /// The PINs a locked SIM may be given, once per boot (`modems.pins_file`).
    pub pins: Option<Arc<crate::pins::Pins>>,
    /// Where received SMS go as `sms` events, once each (src/modem/channels.rs); none:
    /// messages stay on the modem.
    pub sms: Option<super::channels::EventSink>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll: Duration::from_secs(60),
            netdev: None,
            // A USB modem re-enumerates in 1-3 s; trying 4 times a second keeps the
            // reattach well within 5 s at negligible cost.
            reopen_every: Duration::from_millis(250),
            pins: None,
            sms: None,
        }
    }
}

struct Supervisor {
    port: String,
    profiles: Arc<Profiles>,
    store: Option<Store>,
    settings: Settings,
    events: mpsc::Sender<ModemEvent>,
    actions: mpsc::Receiver<Request>,
    /// SIMs whose data session is suspended: a standing order per ICCID, kept in the
    /// store, re-applied after a reattach, a restart of simgate, or the context coming
    /// back up on its own — and not carried over to another SIM put in the modem.
    suspended: HashSet<String>,
    /// The port vanished since the last counter sample: the counter restarted.
    since_reset: bool,
    /// Attach attempts that failed since the last identification.
    failures: u32,
    /// The port was opened at least once (an absence after that is a loss).
    opened: bool,
    /// [`ModemEvent::Absent`] was sent.
    told_absent: bool,
    /// Waits between reattach attempts.
    backoff: Backoff,
    /// When a balance query was last tried, per ICCID (failed ones included).
    balance_tried: std::collections::HashMap<String, u64>,
}

impl Supervisor {
    async fn emit(&self, e: ModemEvent) {
        // The daemon dropping its receiver means it is shutting down.
        let _ = self.events.send(e).await;
    }
}
