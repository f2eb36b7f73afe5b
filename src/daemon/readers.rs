//! The daemon's PC/SC side: reader events in, card reads on blocking threads, SIM
//! observations out.

use super::{Ctx, DaemonError, Event};
use crate::reader::watch::ReaderEvent;
use crate::reader::{self, CardRead, ReaderError};
use crate::sim::{FormFactor, InSession, Location, Observed};
use std::collections::HashMap;

/// What the daemon knows about one reader.
#[derive(Debug, Default)]
struct Slot {
    /// Bumped on every insertion and removal.
    generation: u64,
    iccid: Option<String>,
}

/// Every reader the daemon has heard of.
#[derive(Debug, Default)]
pub(crate) struct Readers {
    slots: HashMap<String, Slot>,
}

impl Readers {
    pub(crate) async fn on_reader_event(
        &mut self,
        ctx: &Ctx,
        ev: ReaderEvent,
    ) -> Result<(), DaemonError> {
        match ev {
            ReaderEvent::CardInserted { reader, atr } => {
                let slot = self.slots.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, %atr, "card inserted");
                let generation = slot.generation;
                let tx = ctx.events.clone();
                // PC/SC blocks: read on a blocking thread, answer through the loop.
                tokio::task::spawn_blocking(move || {
                    let result = reader::establish().and_then(|pcsc| {
                        let name = std::ffi::CString::new(reader.clone()).map_err(|_| {
                            ReaderError::UnknownReader {
                                name: reader.clone(),
                                available: vec![],
                            }
                        })?;
                        reader::read_card(&pcsc, &name)
                    });
                    let _ = tx.blocking_send(Event::CardRead {
                        reader,
                        generation,
                        result,
                    });
                });
            }
            ReaderEvent::CardRemoved { reader } => {
                let slot = self.slots.entry(reader.clone()).or_default();
                slot.generation += 1;
                tracing::info!(%reader, "card removed");
                if let Some(iccid) = slot.iccid.take() {
                    if let Some(mut obs) = ctx.store.get_observed(&iccid)? {
                        obs.present = false;
                        obs.observed_at = crate::time::unix_now();
                        ctx.record(&obs).await?;
                    }
                }
            }
            ReaderEvent::ReaderAdded { reader } => tracing::info!(%reader, "reader added"),
            ReaderEvent::ReaderRemoved { reader } => {
                tracing::info!(%reader, "reader removed");
                self.slots.remove(&reader);
            }
            ReaderEvent::ServiceLost { error } => tracing::warn!(%error, "PC/SC service lost"),
        }
        Ok(())
    }

    pub(crate) async fn on_card_read(
        &mut self,
        ctx: &Ctx,
        reader: String,
        generation: u64,
        result: Result<CardRead, ReaderError>,
    ) -> Result<(), DaemonError> {
        let Some(slot) = self.slots.get_mut(&reader) else {
            return Ok(());
        };
        if slot.generation != generation {
            tracing::debug!(%reader, "stale card read dropped");
            return Ok(());
        }
        match result {
            Ok(read) => {
                let obs = observed_from_read(&read);
                tracing::info!(%reader, iccid = %obs.iccid, luhn_ok = obs.iccid_luhn_ok, apdus = read.identity.apdus, "card identified");
                slot.iccid = Some(obs.iccid.clone());
                ctx.record(&obs).await?;
            }
            Err(e) => tracing::warn!(%reader, error = %e, "card could not be identified"),
        }
        Ok(())
    }
}

/// Exact reader names (no `*`) must exist at start-up: a typo fails at once with the
/// readers that do exist, instead of waiting forever. Patterns may match later readers.
pub(crate) async fn check_exact_names(names: &[String]) -> Result<(), ReaderError> {
    let exact: Vec<String> = names.iter().filter(|n| !n.contains('*')).cloned().collect();
    if exact.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        let pcsc = reader::establish()?;
        for name in &exact {
            reader::resolve(&pcsc, name)?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| {
        Err(ReaderError::Pcsc {
            reader: "*".into(),
            source: panic_as_pcsc(e),
        })
    })
}

fn panic_as_pcsc(e: tokio::task::JoinError) -> pcsc::Error {
    tracing::error!(error = %e, "reader check thread failed");
    pcsc::Error::InternalError
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
