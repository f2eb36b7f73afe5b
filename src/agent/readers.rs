//! The reader manager shared by `simgate run` and `simgate station`: the watcher's
//! events in, card reads on their own threads, SIM presence out through the
//! [`Recorder`].
//!
//! Presence is reconciled with the store at every first look (`ReaderEvent::Looked`, at
//! start-up and after pcscd comes back): a stored SIM marked present in a watched reader
//! that holds no card now is reported removed, so a card pulled while simgate was not
//! running (or pcscd was away) does not stay present for good; a card still in its
//! reader is read again and, being the same, publishes nothing. A pcscd outage is told
//! once (an event when it is lost, one when it is back), not as a removal and an
//! insertion per card.

use super::{RecordError, Recorder};
use crate::contract::EventKind;
use crate::reader::watch::ReaderEvent;
use crate::reader::{self, name_matches, CardRead, ReadSettings, ReaderError};
use crate::sim::Location;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// A card read that finished, back from its thread.
#[derive(Debug)]
pub struct FinishedRead {
    pub reader: String,
    /// The reader's generation when the read began: a card pulled before its read
    /// finished makes the read stale.
    pub generation: u64,
    /// Unix seconds when the read finished.
    pub at: u64,
    /// From the insertion event to the end of identification.
    pub took: Duration,
    pub result: Result<CardRead, ReaderError>,
}

/// What the manager knows about one reader.
#[derive(Debug, Default)]
struct Slot {
    /// Bumped on every insertion and removal.
    generation: u64,
    /// The key (ICCID, or EID for a Blank eSIM) of the SIM now in it.
    key: Option<String>,
}

/// Every reader heard of, and whether pcscd is away.
#[derive(Debug)]
pub struct ReaderManager {
    slots: HashMap<String, Slot>,
    /// Reader names or patterns watched; empty: all readers.
    patterns: Vec<String>,
    read: ReadSettings,
    done: mpsc::Sender<FinishedRead>,
    /// Why pcscd was lost, while it is away (told once, then once more when back).
    outage: Option<String>,
}

impl ReaderManager {
    /// A manager for readers matching `patterns`; finished reads arrive on the returned
    /// receiver, to be handed back through [`ReaderManager::finished`].
    pub fn new(
        patterns: Vec<String>,
        read: ReadSettings,
    ) -> (ReaderManager, mpsc::Receiver<FinishedRead>) {
        let (done, rx) = mpsc::channel(64);
        let m = ReaderManager {
            slots: HashMap::new(),
            patterns,
            read,
            done,
            outage: None,
        };
        (m, rx)
    }

    /// What the next reads cover (a configuration reload); reads under way keep theirs.
    pub fn set_read_settings(&mut self, read: ReadSettings) {
        self.read = read;
    }

    fn watched(&self, reader: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| name_matches(p, reader))
    }

    /// Apply one watcher event: start a read, record a removal, reconcile a first look.
    pub fn on_event(&mut self, rec: &Recorder, ev: ReaderEvent) -> Result<(), RecordError> {
        let now = crate::time::unix_now();
        match ev {
            ReaderEvent::CardInserted { reader, atr } => {
                let slot = self.slots.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, %atr, "card inserted");
                let generation = slot.generation;
                let tx = self.done.clone();
                let name = reader.clone();
                reader::spawn_read(reader, self.read, move |result, took| {
                    // The receiver goes away only at shutdown: nobody wants the read then.
                    let _ = tx.blocking_send(FinishedRead {
                        reader: name,
                        generation,
                        at: crate::time::unix_now(),
                        took,
                        result,
                    });
                });
            }
            ReaderEvent::CardRemoved { reader } => {
                let slot = self.slots.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, "card removed");
                if let Some(key) = slot.key.take() {
                    rec.removed(&key, now)?;
                }
            }
            ReaderEvent::ReaderAdded { reader } => tracing::info!(%reader, "reader added"),
            ReaderEvent::ReaderRemoved { reader } => {
                tracing::info!(%reader, "reader removed");
                if let Some(key) = self.slots.remove(&reader).and_then(|s| s.key) {
                    rec.removed(&key, now)?;
                }
            }
            ReaderEvent::ServiceLost { error } => {
                tracing::warn!(%error, "PC/SC service lost");
                if self.outage.is_none() {
                    rec.event(EventKind::ReaderService {
                        up: false,
                        reason: Some(error.clone()),
                    })?;
                    self.outage = Some(error);
                }
            }
            ReaderEvent::Looked { with_card, .. } => {
                // Readers without a card now hold nothing, whatever was there before.
                for (reader, slot) in self.slots.iter_mut() {
                    if !with_card.contains(reader) {
                        slot.key = None;
                        // A read begun before the outage is stale now.
                        slot.generation += 1;
                    }
                }
                let here = |l: &Location| match l {
                    Location::Reader { reader } => {
                        self.watched(reader) && !with_card.contains(reader)
                    }
                    Location::Modem { .. } => false,
                };
                for gone in rec.present_where(here)? {
                    tracing::info!(iccid = %gone.iccid, location = %gone.location.label(), "not in its reader at the first look: removed");
                    rec.removed(&gone.iccid, now)?;
                }
                if let Some(error) = self.outage.take() {
                    tracing::info!(lost = %error, "PC/SC service back");
                    rec.event(EventKind::ReaderService {
                        up: true,
                        reason: None,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Whether a finished read is current: its reader's card has not moved since the
    /// read began. A stale read is not kept as present.
    pub fn is_current(&self, done: &FinishedRead) -> bool {
        self.slots
            .get(&done.reader)
            .is_some_and(|s| s.generation == done.generation)
    }

    /// The SIM keyed `key` is now in `reader` (after a current read was recorded).
    pub fn holds(&mut self, reader: &str, key: &str) {
        if let Some(slot) = self.slots.get_mut(reader) {
            slot.key = Some(key.to_string());
        }
    }
}
