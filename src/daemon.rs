//! `simgate run`: the daemon. A closed set of events drives one loop; everything that can
//! happen to the daemon is a variant of [`Event`], handled in one `match`.

use crate::link::contract::SimState;
use crate::link::{Link, LinkSettings};
use crate::reader::watch::{self, ReaderEvent};
use crate::reader::{self, CardRead, ReaderError};
use crate::sim::{FormFactor, InSession, Location, Observed};
use crate::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the daemon needs to run, resolved from flags, environment and config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub agent_id: String,
    pub state_dir: PathBuf,
    /// Empty: no platform link (local only).
    pub broker: Option<LinkSettings>,
    /// Reader names or patterns; empty: all readers.
    pub readers: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error(transparent)]
    Reader(#[from] ReaderError),
}

/// Everything that can happen to the daemon.
#[derive(Debug)]
enum Event {
    Reader(ReaderEvent),
    /// A card read finished. `generation` ties it to the insertion it answers: a read
    /// finishing after its card left is stale and dropped.
    CardRead {
        reader: String,
        generation: u64,
        result: Result<CardRead, ReaderError>,
    },
}

/// What the daemon knows about one reader.
#[derive(Debug, Default)]
struct ReaderSlot {
    /// Bumped on every insertion and removal.
    generation: u64,
    iccid: Option<String>,
}

/// Run until `cancel` fires.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), DaemonError> {
    let store = Store::open(&settings.state_dir)?;
    check_exact_readers(&settings.readers).await?;

    let (link, link_task) = match &settings.broker {
        Some(b) => {
            let (l, t) = Link::start(b, cancel.clone())?;
            (Some(l), Some(t))
        }
        None => (None, None),
    };

    let (reader_tx, mut reader_rx) = mpsc::channel::<ReaderEvent>(64);
    let watcher = {
        let patterns = settings.readers.clone();
        let cancel = cancel.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || watch::watch(patterns, reader_tx, cancel, rt))
    };
    let (read_tx, mut read_rx) = mpsc::channel::<Event>(64);
    let mut readers: HashMap<String, ReaderSlot> = HashMap::new();
    tracing::info!(agent = %settings.agent_id, state_dir = %settings.state_dir.display(), "simgate running");

    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = reader_rx.recv() => Event::Reader(ev),
            Some(ev) = read_rx.recv() => ev,
        };
        match event {
            Event::Reader(ReaderEvent::CardInserted { reader, atr }) => {
                let slot = readers.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, %atr, "card inserted");
                let generation = slot.generation;
                let tx = read_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = reader::establish().and_then(|ctx| {
                        let name = std::ffi::CString::new(reader.clone()).map_err(|_| {
                            ReaderError::UnknownReader {
                                name: reader.clone(),
                                available: vec![],
                            }
                        })?;
                        reader::read_card(&ctx, &name)
                    });
                    let _ = tx.blocking_send(Event::CardRead {
                        reader,
                        generation,
                        result,
                    });
                });
            }
            Event::Reader(ReaderEvent::CardRemoved { reader }) => {
                let slot = readers.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, "card removed");
                if let Some(iccid) = slot.iccid.take() {
                    if let Some(mut obs) = store.get_observed(&iccid)? {
                        obs.present = false;
                        obs.observed_at = crate::time::unix_now();
                        record(&store, link.as_ref(), &obs).await?;
                    }
                }
            }
            Event::Reader(ReaderEvent::ReaderAdded { reader }) => {
                tracing::info!(%reader, "reader added")
            }
            Event::Reader(ReaderEvent::ReaderRemoved { reader }) => {
                tracing::info!(%reader, "reader removed");
                readers.remove(&reader);
            }
            Event::Reader(ReaderEvent::ServiceLost { error }) => {
                tracing::warn!(%error, "PC/SC service lost")
            }
            Event::CardRead {
                reader,
                generation,
                result,
            } => {
                let Some(slot) = readers.get_mut(&reader) else {
                    continue;
                };
                if slot.generation != generation {
                    tracing::debug!(%reader, "stale card read dropped");
                    continue;
                }
                match result {
                    Ok(read) => {
                        let obs = observed_from_read(&read);
                        tracing::info!(%reader, iccid = %obs.iccid, luhn_ok = obs.iccid_luhn_ok, apdus = read.identity.apdus, "card identified");
                        slot.iccid = Some(obs.iccid.clone());
                        record(&store, link.as_ref(), &obs).await?;
                    }
                    Err(e) => tracing::warn!(%reader, error = %e, "card could not be identified"),
                }
            }
        }
    }

    tracing::info!("shutting down");
    store.flush()?;
    // The watcher wakes through SCardCancel; the link publishes offline then ends.
    let _ = tokio::time::timeout(Duration::from_secs(3), watcher).await;
    if let Some(t) = link_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    Ok(())
}

/// Exact reader names (no `*`) must exist at start-up: a typo fails at once with the
/// readers that do exist, instead of waiting forever. Patterns may match later readers.
async fn check_exact_readers(names: &[String]) -> Result<(), ReaderError> {
    let exact: Vec<String> = names.iter().filter(|n| !n.contains('*')).cloned().collect();
    if exact.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        let ctx = reader::establish()?;
        for name in &exact {
            reader::resolve(&ctx, name)?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(ReaderError::NoCard(format!("reader check panicked: {e}"))))
}

/// The observation a card read makes.
pub fn observed_from_read(read: &CardRead) -> Observed {
    let id = &read.identity;
    Observed {
        iccid: id.iccid.as_str().to_string(),
        iccid_luhn_ok: id.iccid.luhn_ok(),
        // A card answering the ICCID read is at least a physical SIM; eUICC detection
        // (ISD-R) refines this.
        form_factor: Some(FormFactor::Physical),
        eid: None,
        imsi: None,
        imei: None,
        operator: None,
        mcc_mnc: None,
        in_session: InSession::NotApplicable,
        atr: Some(read.atr.clone()),
        location: Location::Reader {
            reader: read.reader.clone(),
        },
        present: true,
        observed_at: crate::time::unix_now(),
        problem: (!id.iccid.luhn_ok()).then(|| "ICCID fails its Luhn check".to_string()),
    }
}

/// Store an observation and publish it. The store comes first: what was shown is kept.
async fn record(store: &Store, link: Option<&Link>, obs: &Observed) -> Result<(), DaemonError> {
    store.put_observed(obs)?;
    if let Some(link) = link {
        link.publish_state(&SimState::from_observed(obs)).await?;
    }
    Ok(())
}
