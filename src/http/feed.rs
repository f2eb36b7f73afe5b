//! The page's feed: what the daemon or the station tells the page, as it happens. One
//! message is serialized once and broadcast to every open page (a `tokio::sync::
//! broadcast` ring), so a hundred pages cost one serialization; a page that lags behind
//! the ring gets the whole picture again instead of the messages it missed, and a page
//! that goes away drops its receiver and leaves nothing behind.
//!
//! Besides the SIM rows (kept in the store, read at each snapshot), the feed keeps the
//! little the store does not: the station's batch and its recent reads, the commands and
//! swap steps of this run, the modems' signal and registration.

use crate::contract::{CommandStatus, EventKind, SimState};
use crate::observe::CardReport;
use crate::observe::{ProvisionReport, ProvisionResult, ProvisionStage};
use crate::sim::Batch;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// How many messages a page may fall behind before it is sent the snapshot again.
const RING: usize = 256;
/// Reads of a station's batch kept for a page that opens later (the count covers all).
pub const RECENT_READS: usize = 200;
/// Commands and swaps of this run kept for the page.
const RECENT_COMMANDS: usize = 50;
const RECENT_SWAPS: usize = 10;
const RECENT_NOTES: usize = 20;

/// The sending side, cheap to clone: the recorder, the daemon's command path, swaps and
/// the station's screen each hold one.
#[derive(Debug, Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: broadcast::Sender<Arc<str>>,
    recent: Mutex<Recent>,
}

/// What the store does not keep and a newly opened page needs.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Recent {
    /// `run` or `station`.
    pub mode: &'static str,
    pub agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub station: Option<StationView>,
    pub commands: VecDeque<CommandStatus>,
    pub swaps: VecDeque<SwapView>,
    pub modems: BTreeMap<String, ModemView>,
    pub notes: VecDeque<Note>,
}

/// A station's batch as the page shows it.
#[derive(Debug, Default, Clone, Serialize)]
pub struct StationView {
    pub batch: Batch,
    pub readers: Vec<String>,
    /// A CSV of the batch can be downloaded (/batch.csv).
    pub csv: bool,
    pub tally: Tally,
    /// The latest reads, newest last.
    pub reads: VecDeque<CardReport>,
    /// `--provision`: per reader, the steps of its current (or last) card so far.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub provisions: BTreeMap<String, Vec<ProvisionReport>>,
}

/// The batch's running count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub reads: u64,
    pub unique: u64,
    pub warned: u64,
}

/// A guided swap's steps so far (MQTT.md, "Swap").
#[derive(Debug, Clone, Serialize)]
pub struct SwapView {
    pub id: String,
    pub iccid: String,
    pub steps: Vec<EventKind>,
}

/// A modem's radio picture from its last identification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModemView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub ts: u64,
    pub text: String,
}

/// One message on the event stream (`event:` is its type; `data:` this, as JSON).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message<'a> {
    Row {
        row: &'a SimState,
        #[serde(skip_serializing_if = "Option::is_none")]
        this_month_mb: Option<f64>,
    },
    Read {
        read: &'a CardReport,
        tally: Tally,
    },
    Note {
        note: &'a Note,
    },
    Command {
        command: &'a CommandStatus,
    },
    SwapStep {
        swap: &'a SwapView,
    },
    Modem {
        port: &'a str,
        modem: &'a ModemView,
    },
    Provision {
        progress: &'a ProvisionReport,
    },
}

impl Feed {
    /// A feed for `mode` ("run" or "station") of agent `agent`.
    pub fn new(mode: &'static str, agent: &str) -> Feed {
        let (tx, _) = broadcast::channel(RING);
        Feed {
            inner: Arc::new(Inner {
                tx,
                recent: Mutex::new(Recent {
                    mode,
                    agent: agent.to_string(),
                    ..Recent::default()
                }),
            }),
        }
    }

    /// A page arrives: what it must know besides the rows, and the stream of what
    /// follows, taken under one lock so nothing falls between the two.
    pub fn subscribe(&self) -> (Recent, broadcast::Receiver<Arc<str>>) {
        let recent = self.lock();
        (recent.clone(), self.inner.tx.subscribe())
    }

    /// What the feed keeps, for a one-off look (`/state`): no stream.
    pub fn recent(&self) -> Recent {
        self.lock().clone()
    }

    /// Pages open now.
    pub fn pages(&self) -> usize {
        self.inner.tx.receiver_count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        // A panic elsewhere while holding it leaves plain data behind: keep going.
        self.inner.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sent while the lock is held, so a page subscribing sees each change either in
    /// its snapshot or on its stream. No page open: nothing is serialized at all.
    fn send(&self, _held: &Recent, msg: &Message<'_>) {
        if self.inner.tx.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(msg) {
            Ok(text) => {
                let _ = self.inner.tx.send(text.into());
            }
            Err(e) => tracing::error!(error = %e, "page message not serialized"),
        }
    }

    /// A SIM's row changed (as the platform gets it), with its usage this month.
    pub fn row(&self, row: &SimState, this_month_mb: Option<f64>) {
        let recent = self.lock();
        self.send(&recent, &Message::Row { row, this_month_mb });
    }

    /// A station starts its batch.
    pub fn station(&self, batch: &Batch, readers: &[String], csv: bool) {
        let mut recent = self.lock();
        recent.station = Some(StationView {
            batch: batch.clone(),
            readers: readers.to_vec(),
            csv,
            ..StationView::default()
        });
    }

    /// A station's read, already durable, with the batch's count.
    pub fn read(&self, read: &CardReport, tally: Tally) {
        let mut recent = self.lock();
        let station = recent.station.get_or_insert_with(StationView::default);
        station.tally = tally;
        station.reads.push_back(read.clone());
        if station.reads.len() > RECENT_READS {
            station.reads.pop_front();
        }
        self.send(&recent, &Message::Read { read, tally });
    }

    /// A reader or a service came or went.
    pub fn note(&self, text: &str) {
        let mut recent = self.lock();
        let note = Note {
            ts: crate::time::unix_now(),
            text: text.to_string(),
        };
        self.send(&recent, &Message::Note { note: &note });
        recent.notes.push_back(note);
        if recent.notes.len() > RECENT_NOTES {
            recent.notes.pop_front();
        }
    }

    /// A command's lifecycle (received, executing, then its outcome).
    pub fn command(&self, status: &CommandStatus) {
        let mut recent = self.lock();
        recent.commands.retain(|c| c.id != status.id);
        recent.commands.push_back(status.clone());
        if recent.commands.len() > RECENT_COMMANDS {
            recent.commands.pop_front();
        }
        self.send(&recent, &Message::Command { command: status });
    }

    /// An event for the platform; the page keeps a swap's steps.
    pub fn event(&self, ev: &EventKind) {
        let EventKind::SwapStep { id, iccid, .. } = ev else {
            return;
        };
        let mut recent = self.lock();
        let at = match recent.swaps.iter().position(|s| &s.id == id) {
            Some(i) => i,
            None => {
                recent.swaps.push_back(SwapView {
                    id: id.clone(),
                    iccid: iccid.clone(),
                    steps: Vec::new(),
                });
                if recent.swaps.len() > RECENT_SWAPS {
                    recent.swaps.pop_front();
                }
                recent.swaps.len() - 1
            }
        };
        recent.swaps[at].steps.push(ev.clone());
        let swap = recent.swaps[at].clone();
        self.send(&recent, &Message::SwapStep { swap: &swap });
    }

    /// A modem's signal and registration from its latest identification.
    pub fn modem(&self, port: &str, modem: ModemView) {
        let mut recent = self.lock();
        if recent.modems.get(port) == Some(&modem) {
            return;
        }
        self.send(
            &recent,
            &Message::Modem {
                port,
                modem: &modem,
            },
        );
        recent.modems.insert(port.to_string(), modem);
    }

    /// A card's provisioning step at a station (`--provision`): a new card (a code given,
    /// or turned away) starts its reader's steps afresh.
    pub fn provision(&self, p: &ProvisionReport) {
        let mut recent = self.lock();
        let station = recent.station.get_or_insert_with(StationView::default);
        let steps = station.provisions.entry(p.reader.clone()).or_default();
        let fresh = matches!(
            p.stage,
            ProvisionStage::Assigned { .. }
                | ProvisionStage::Done {
                    result: ProvisionResult::Skipped,
                    ..
                }
        );
        if fresh {
            steps.clear();
        }
        steps.push(p.clone());
        self.send(&recent, &Message::Provision { progress: p });
    }
}
