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
                let settings = ctx.read_settings;
                // PC/SC blocks: read on a blocking thread, answer through the loop. Each
                // insertion gets its own thread and PC/SC context, so readers are served
                // in parallel and a slow card never delays another reader.
                tokio::task::spawn_blocking(move || {
                    let result = std::ffi::CString::new(reader.clone())
                        .map_err(|_| ReaderError::UnknownReader {
                            name: reader.clone(),
                            available: vec![],
                        })
                        .and_then(|name| reader::read_card_timeout(&name, settings));
                    let _ = tx.blocking_send(Event::CardRead {
                        reader,
                        generation,
                        result: Box::new(result),
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
                tracing::info!(%reader, iccid = %obs.iccid, luhn_ok = obs.iccid_luhn_ok, form_factor = ?obs.form_factor, apdus = read.identity.apdus, "card identified");
                slot.iccid = Some(obs.iccid.clone());
                ctx.record(&obs).await?;
            }
            Err(e) => {
                tracing::warn!(%reader, error = %e, "card could not be identified");
                // The platform hears of it too: a card that cannot be read is news.
                if let Some(link) = &ctx.link {
                    link.publish_event(crate::link::contract::EventKind::Error {
                        iccid: None,
                        code: crate::link::contract::RefusalCode::Failed,
                        reason: format!("{reader}: card could not be identified: {e}"),
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Exact reader names (no `*`) must exist at start-up when pcscd is up: a typo fails at
/// once with the readers that do exist, instead of waiting forever. Patterns may match
/// later readers.
pub(crate) async fn check_exact_names(names: &[String]) -> Result<(), ReaderError> {
    let exact: Vec<String> = names.iter().filter(|n| !n.contains('*')).cloned().collect();
    if exact.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        let pcsc = match reader::establish() {
            Ok(p) => p,
            // pcscd may start after us (boot order, socket activation): the watcher
            // waits for it, and a misspelt name then simply never matches. Refusing to
            // start would need a restart once pcscd is up.
            Err(e @ ReaderError::NoService(_)) => {
                tracing::warn!(error = %e, readers = ?exact, "reader names not checked: pcscd is not up yet");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
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
///
/// Keyed by ICCID; a Blank eSIM whose MF has no EF.ICCID is keyed by its EID instead (32
/// digits, so it never collides with an ICCID's 18-20).
pub fn observed_from_read(read: &CardRead) -> Observed {
    let id = &read.identity;
    let eid = id
        .euicc
        .as_ref()
        .and_then(|e| e.eid.as_ref())
        .map(|e| e.as_str().to_string());
    let key = id
        .iccid
        .as_ref()
        .map(|i| i.as_str().to_string())
        .or_else(|| eid.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if id.iccid.as_ref().is_some_and(|i| !i.luhn_ok()) {
        problems.push("ICCID fails its Luhn check".to_string());
    }
    if let Some(e) = id.euicc.as_ref().and_then(|e| e.eid.as_ref()) {
        if !e.check_ok() {
            problems.push("EID fails its mod-97 check".to_string());
        }
    }
    if id.euicc.as_ref().is_some_and(|e| e.eid.is_none()) {
        problems.push("eUICC did not give its EID".to_string());
    }
    let operator = id
        .imsi
        .as_deref()
        .and_then(crate::card::subscriber::home_operator);
    Observed {
        iccid: key,
        // No ICCID to check (a Blank eSIM keyed by EID) is not a Luhn failure.
        iccid_luhn_ok: id.iccid.as_ref().is_none_or(|i| i.luhn_ok()),
        form_factor: Some(if id.euicc.is_some() {
            FormFactor::Esim
        } else {
            FormFactor::Physical
        }),
        eid,
        imsi: id.imsi.clone(),
        spn: id.spn.clone(),
        blank_esim: id.is_blank_esim(),
        imei: None,
        operator: operator.map(|(_, name)| name.to_string()),
        // The serving network's code: a card in a reader has none.
        mcc_mnc: None,
        in_session: InSession::NotApplicable,
        atr: Some(read.atr.clone()),
        location: Location::Reader {
            reader: read.reader.clone(),
        },
        present: true,
        observed_at: crate::time::unix_now(),
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        batch: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::euicc::{Eid, Profiles};
    use crate::card::{CardKind, Euicc, Iccid, Identity};
    use crate::sim::Status;

    fn read(iccid: Option<&str>, eid: &str, profiles: Profiles) -> CardRead {
        CardRead {
            reader: "R 00 00".into(),
            atr: "3B00".into(),
            identity: Identity {
                kind: CardKind::Uicc,
                iccid: iccid.map(|i| Iccid::from_digits(i).unwrap()),
                euicc: Some(Euicc {
                    isdr_aid: "A0000005591010FFFFFFFF8900000100".into(),
                    isdr_name: "GSMA standard ISD-R".into(),
                    eid: Some(Eid::from_digits(eid)),
                    profiles: Some(profiles),
                    basic_channel: false,
                }),
                imsi: Some("262011106487504".into()),
                spn: None,
                apdus: 4,
                apdus_subscriber: 0,
                apdus_total: 6,
            },
        }
    }

    #[test]
    fn an_eid_failing_mod97_makes_the_sim_invalid_with_the_reason() {
        // pySim's test_eid_verify_wrong vector (tests/fixtures/card_vectors.jsonl).
        let obs = observed_from_read(&read(
            Some("8949440000000000016"),
            "89049032123451234512345678901234",
            Profiles::Enabled,
        ));
        assert_eq!(obs.local_status(), Some(Status::Invalid));
        assert_eq!(obs.problem.as_deref(), Some("EID fails its mod-97 check"));
        assert_eq!(obs.form_factor, Some(FormFactor::Esim));
        assert_eq!(obs.operator.as_deref(), Some("Telekom Deutschland"));
    }

    #[test]
    fn a_blank_esim_without_iccid_is_keyed_by_its_eid_and_blank() {
        let obs = observed_from_read(&read(
            None,
            "89049032123451234512345678901235",
            Profiles::NoneEnabled,
        ));
        assert_eq!(obs.iccid, "89049032123451234512345678901235");
        assert!(obs.iccid_luhn_ok && obs.blank_esim);
        assert_eq!(
            obs.local_status(),
            None,
            "Blank is the platform's word, not simgate's"
        );
    }
}
