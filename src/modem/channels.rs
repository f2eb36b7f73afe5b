//! The operator's channels as the supervisor runs them: received SMS taken from the
//! modem's storage into `sms` events, each deleted on the modem only once its event is
//! durable in the outbox (a kill in between gives the same event key again, queued
//! once: `Outbox::push_once`); a full storage emptied, an incomplete concatenated
//! message let go only then; and the prepaid balance asked of the operator when the
//! SIM's platform record allows it.

use super::identify::ModemInfo;
use super::profile::Profile;
use crate::at::conn::AtIo;
use crate::at::{AtConnection, AtError};
use crate::contract::{EventKind, RefusalCode, TopUpEvidence};
use crate::operators::Operators;
use std::sync::Arc;

/// Where the supervisor puts an event that must reach the platform once: queued
/// durably under a key (`Ok(Some(true))`), already queued before (`Ok(Some(false))`),
/// no platform link (`Ok(None)`: keep the message), or the store failed.
pub type SinkFn = dyn Fn(&str, EventKind) -> Result<Option<bool>, String> + Send + Sync;

#[derive(Clone)]
pub struct EventSink(pub Arc<SinkFn>);

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSink")
    }
}

/// What one intake did, for the log and the AT budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Intake {
    pub delivered: usize,
    pub deleted: usize,
    pub waiting: usize,
    pub at_lines: u64,
}

/// Take every received message from the modem: list (one line), each whole message
/// queued as an `sms` event, then its parts deleted (one line each).
pub async fn take_sms<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    operators: &Operators,
    info: &ModemInfo,
    sink: &EventSink,
) -> Result<Intake, AtError> {
    let Some(iccid) = info.sim.iccid.clone().filter(|_| info.sim.present) else {
        return Ok(Intake::default());
    };
    let start = conn.stats().commands;
    let listing = match super::sms::list(conn, profile).await? {
        Ok(l) => l,
        Err(refusal) => {
            tracing::debug!(%refusal, "no SMS listing from this modem");
            return Ok(Intake::default());
        }
    };
    let full = listing.full();
    let (messages, waiting) = crate::sms::reassemble(listing.received, full);
    let topup: Option<(String, crate::operators::TopUp)> = match info.sim.imsi.as_deref() {
        Some(i) => operators
            .for_imsi(i)
            .and_then(|o| o.topup.clone().map(|t| (o.name.clone(), t))),
        None => None,
    };
    let mut out = Intake {
        waiting: waiting.len(),
        ..Intake::default()
    };
    let mut events: Vec<(String, EventKind, Vec<u32>)> = messages
        .into_iter()
        .map(|m| {
            let evidence = topup.as_ref().and_then(|(name, t)| {
                t.matches(&m.sender, &m.text)
                    .map(|amount_mb| TopUpEvidence {
                        operator: name.clone(),
                        amount_mb,
                    })
            });
            let key = format!("sms/{}", m.key(&iccid));
            let ev = EventKind::Sms {
                iccid: iccid.clone(),
                key: key.clone(),
                from: m.sender,
                sent_at: m.sent_at,
                text: m.text,
                parts: (m.parts > 1).then_some(m.parts),
                missing_parts: m.missing,
                topup: evidence,
            };
            (key, ev, m.indexes)
        })
        .collect();
    // A PDU that does not decode is said once (with its bytes: nothing is lost) and
    // deleted like a message, or it would fill the storage for ever.
    for (index, pdu, why) in listing.undecodable {
        let key = format!(
            "sms-undecodable/{}",
            hex::encode(
                &ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{iccid}/{index}/{pdu}").as_bytes()
                )
                .as_ref()[..12]
            )
        );
        let ev = EventKind::Error {
            iccid: Some(iccid.clone()),
            code: RefusalCode::InvalidField,
            reason: format!("an SMS at index {index} does not decode ({why}); its PDU: {pdu}"),
        };
        events.push((key, ev, vec![index]));
    }
    for (key, ev, indexes) in events {
        match (sink.0)(&key, ev) {
            Ok(Some(queued)) => {
                if queued {
                    out.delivered += 1;
                }
            }
            Ok(None) => {
                tracing::debug!("no platform link: received SMS stay on the modem");
                break;
            }
            Err(e) => {
                tracing::error!(%iccid, error = %e, "cannot queue a received SMS; it stays on the modem");
                break;
            }
        }
        // A debug-build-only hook: die between queueing and deleting, as a power cut
        // would, for the test that shows the SMS still reaches the platform once.
        #[cfg(debug_assertions)]
        if std::env::var("SIMGATE_DEBUG_DIE_AFTER_SMS_QUEUED").is_ok() {
            tracing::warn!(%key, "SIMGATE_DEBUG_DIE_AFTER_SMS_QUEUED: dying before the delete");
            std::process::abort();
        }
        for i in indexes {
            match super::sms::delete(conn, profile, i).await? {
                Ok(()) => out.deleted += 1,
                Err(r) => {
                    tracing::warn!(%iccid, index = i, refusal = %r, "could not delete a delivered SMS")
                }
            }
        }
    }
    out.at_lines = conn.stats().commands - start;
    if out.delivered > 0 || out.deleted > 0 {
        tracing::info!(%iccid, delivered = out.delivered, deleted = out.deleted, waiting = out.waiting, at_lines = out.at_lines, "received SMS taken from the modem");
    }
    Ok(out)
}

/// Whether the SIM's balance may be asked now: a Prepaid SIM whose platform record
/// sets `operator_balance_hours`, that many hours after the last answer.
pub fn balance_due(
    record: Option<&crate::sim::PlatformRecord>,
    last: Option<u64>,
    now: u64,
) -> bool {
    let Some(r) = record else { return false };
    let (Some(crate::sim::SimType::Prepaid), Some(h)) = (r.sim_type, r.operator_balance_hours)
    else {
        return false;
    };
    h > 0 && last.is_none_or(|t| now.saturating_sub(t) >= u64::from(h) * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{PlatformRecord, SimType};

    #[test]
    fn balance_is_asked_only_as_the_record_allows() {
        let rec = |t, h| PlatformRecord {
            sim_type: Some(t),
            operator_balance_hours: h,
            ..PlatformRecord::default()
        };
        let now = 1_000_000;
        assert!(!balance_due(None, None, now));
        assert!(!balance_due(
            Some(&rec(SimType::Subscription, Some(6))),
            None,
            now
        ));
        assert!(!balance_due(Some(&rec(SimType::Prepaid, None)), None, now));
        assert!(!balance_due(
            Some(&rec(SimType::Prepaid, Some(0))),
            None,
            now
        ));
        assert!(balance_due(
            Some(&rec(SimType::Prepaid, Some(6))),
            None,
            now
        ));
        assert!(!balance_due(
            Some(&rec(SimType::Prepaid, Some(6))),
            Some(now - 3600),
            now
        ));
        assert!(balance_due(
            Some(&rec(SimType::Prepaid, Some(6))),
            Some(now - 6 * 3600),
            now
        ));
    }
}
