//! A PIN operation on a whole card: the card identified first (its ICCID matched, a
//! PIN never reaching another SIM; its lock read), the one rule [`guard`] applied, the
//! command sent, the lock read again. Apart from src/card/pin.rs, whose lock state the
//! identification reads: the two would otherwise import each other.

use super::apdu::Channel;
use super::pin::{guard, lock_state, run, PinFailure, PinOp, PinOutcome};
use super::{CardError, CardTransport};
use crate::sim::{Lock, PinRequest};

/// A whole PIN operation on the card behind `transport`: its ICCID read and, when
/// `iccid` is given, matched (a PIN never reaches another SIM), its lock read,
/// [`guard`]ed, the command sent, and the lock read again (what the row shows after).
/// The outcome comes with the ICCID read.
pub fn on_card<T: CardTransport>(
    mut transport: T,
    iccid: Option<&str>,
    req: &PinRequest,
) -> Result<(Result<Option<Lock>, PinFailure>, String), CardError> {
    let opts = super::identify::Options {
        isdr_aids: &[],
        vendor_aids: false,
        subscriber: true,
    };
    let id = super::identify(&mut transport, &opts)?;
    let here = id.iccid.as_ref().map(|i| i.to_string()).unwrap_or_default();
    if iccid.is_some_and(|i| i != here) || id.iccid.is_none() {
        return Ok((Err(PinFailure::OtherSim(here)), String::new()));
    }
    if let Err(r) = guard(req.op, id.lock.as_ref(), req.force) {
        return Ok((Err(r.into()), here));
    }
    let mut ch = Channel::new(&mut transport);
    let outcome = run(&mut ch, id.kind, req.op, &req.first, req.second.as_ref())?;
    let mut after = lock_state(&mut ch, id.kind)?;
    match outcome {
        PinOutcome::Done => {
            if let Some(l) = after.as_mut() {
                // What the command itself proves about PIN1 (a VERIFY without data
                // cannot tell disabled from verified).
                l.pin_enabled = match req.op {
                    PinOp::Disable => Some(false),
                    PinOp::Enable | PinOp::Change => Some(true),
                    _ => l.pin_enabled,
                };
            }
            Ok((Ok(after), here))
        }
        PinOutcome::Wrong { attempts_left } => {
            Ok((Err(PinFailure::wrong(req.op, Some(attempts_left))), here))
        }
        PinOutcome::Blocked => Ok((Err(PinFailure::wrong(req.op, Some(0))), here)),
        PinOutcome::Refused(sw) => Ok((
            Err(PinFailure::Refused {
                op: req.op,
                why: format!("status {sw}"),
            }),
            here,
        )),
    }
}
