//! PIN operations through a modem (TS 27.007 §8.3 +CPIN, §7.4 +CLCK="SC", §7.5
//! +CPWD="SC"), and the one automatic attempt: a configured PIN entered into a locked
//! SIM once per boot, never again once refused, never on the last attempt, only into
//! the SIM whose ICCID it was configured for (read again just before).

use super::identify::{self, SimInfo};
use super::profile::Profile;
use crate::at::conn::AtIo;
use crate::at::parser::cme;
use crate::at::{quote, AtCommand, AtConnection, AtError, Refusal};
use crate::card::pin::{PinFailure, PinOp, Secret};
use crate::sim::LockState;
use crate::store::pins::PinTry;
use crate::store::Store;

/// TS 27.007 §9.2.1: 16 incorrect password; 12 SIM PUK required (the last PIN
/// attempt just failed).
const CME_WRONG_PASSWORD: u16 = 16;
const CME_SIM_PUK_REQUIRED: u16 = 12;

/// The AT line of a PIN operation: `first` the PIN (the PUK of an unblock), `second`
/// the new PIN of a change or an unblock. Values go through `at::quote` only, and the
/// line is a secret one: shown as `AT+CPIN=***` wherever it is shown.
pub fn line(op: PinOp, first: &Secret, second: Option<&Secret>) -> Result<AtCommand, AtError> {
    let a = quote(first.expose());
    let b = second.map(|s| quote(s.expose())).unwrap_or_default();
    let text = match op {
        PinOp::Verify => format!("AT+CPIN={a}"),
        PinOp::Unblock => format!("AT+CPIN={a},{b}"),
        PinOp::Enable => format!("AT+CLCK=\"SC\",1,{a}"),
        PinOp::Disable => format!("AT+CLCK=\"SC\",0,{a}"),
        PinOp::Change => format!("AT+CPWD=\"SC\",{a},{b}"),
    };
    Ok(AtCommand::secret(&text)?)
}

/// Run one PIN operation; the modem's refusal (wrong PIN: +CME ERROR: 16) apart from
/// the link failing.
pub async fn run<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    op: PinOp,
    first: &Secret,
    second: Option<&Secret>,
) -> Result<Result<(), Refusal>, AtError> {
    let cmd = line(op, first, second)?;
    Ok(conn
        .command(&cmd, profile.timeouts.sim())
        .await?
        .map(|_| ()))
}

/// A whole PIN operation on the modem's SIM: the SIM read fresh (its ICCID must be
/// `iccid` when given — a PIN never reaches another SIM — its lock decides what
/// [`guard`](crate::card::pin::guard) allows), the line sent, the SIM read again.
/// Returns the outcome and the SIM as it is after.
pub async fn on_modem<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    iccid: Option<&str>,
    req: &crate::sim::PinRequest,
) -> Result<(Result<(), PinFailure>, SimInfo), AtError> {
    let before = identify::sim_info(conn, profile).await?;
    let here = before.iccid.clone().unwrap_or_default();
    if iccid.is_some_and(|i| i != here) || before.iccid.is_none() {
        return Ok((Err(PinFailure::OtherSim(here)), before));
    }
    if let Err(r) = crate::card::pin::guard(req.op, before.lock.as_ref(), req.force) {
        return Ok((Err(r.into()), before));
    }
    let sent = run(conn, profile, req.op, &req.first, req.second.as_ref()).await?;
    let after = identify::sim_info(conn, profile).await?;
    let result = match sent {
        Ok(()) => Ok(()),
        Err(r) if matches!(r.cme(), Some(CME_WRONG_PASSWORD | CME_SIM_PUK_REQUIRED)) => {
            let left = after.lock.and_then(|l| match req.op {
                PinOp::Unblock => l.puk_attempts,
                _ => l.pin_attempts,
            });
            Err(PinFailure::wrong(req.op, left))
        }
        Err(r) => Err(PinFailure::Refused {
            op: req.op,
            why: r.result.to_string(),
        }),
    };
    Ok((result, after))
}

/// The kernel's id of this boot: "once per boot" is per this id. Unknown (no /proc):
/// one attempt ever, until an explicit unlock clears the record.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// What the automatic attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Not attempted; why, for the log (never a PIN).
    Skipped(&'static str),
    /// The SIM took it.
    Entered,
    /// The SIM refused it: recorded, never tried again.
    Refused(String),
}

/// Enter the configured PIN into the locked SIM `sim`, if every rule allows.
pub async fn configured<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    sim: &SimInfo,
    pins: &crate::pins::Pins,
    store: &Store,
) -> Result<Attempt, AtError> {
    let (Some(lock), Some(iccid)) = (sim.lock, sim.iccid.as_deref()) else {
        return Ok(Attempt::Skipped("no lock state or no ICCID"));
    };
    if lock.state != LockState::PinRequired {
        return Ok(Attempt::Skipped("the SIM does not wait for its PIN"));
    }
    let Some(pin) = pins.for_iccid(iccid) else {
        return Ok(Attempt::Skipped("no PIN configured for this ICCID"));
    };
    // Never a guess: the attempts left must be known, and more than one (the last one
    // is the platform's or a person's to spend, with force).
    match lock.pin_attempts {
        None => return Ok(Attempt::Skipped("attempts left unknown")),
        Some(n) if n <= 1 => {
            return Ok(Attempt::Skipped(
                "1 attempt left: kept for pin_verify with force",
            ))
        }
        Some(_) => {}
    }
    let boot = boot_id();
    // An attempt that cannot be recorded is not made: unrecorded, it could be repeated.
    let unrecorded = |e: crate::store::StoreError| {
        tracing::error!(%iccid, error = %e, "cannot record a PIN attempt; not attempting");
        Attempt::Skipped("the store cannot record the attempt")
    };
    match store.pin_try(iccid) {
        Err(e) => return Ok(unrecorded(e)),
        Ok(Some(t)) if t.refused => {
            return Ok(Attempt::Skipped("refused before: never tried again"))
        }
        Ok(Some(t)) if t.boot == boot => return Ok(Attempt::Skipped("tried once this boot")),
        Ok(_) => {}
    }
    // The SIM may have been swapped since its ICCID was read: read it again, so the
    // PIN reaches only the SIM it was written for.
    let now = identify::iccid(conn, profile).await?.map(|i| i.to_string());
    if now.as_deref() != Some(iccid) {
        return Ok(Attempt::Skipped("another SIM now: not this one's PIN"));
    }
    let mut record = PinTry {
        boot,
        refused: false,
        at: crate::time::unix_now(),
    };
    if let Err(e) = store.set_pin_try(iccid, &record) {
        return Ok(unrecorded(e));
    }
    match run(conn, profile, PinOp::Verify, pin, None).await? {
        Ok(()) => Ok(Attempt::Entered),
        Err(r) if r.cme() == Some(cme::SIM_BUSY) => {
            // Still initialising (some firmwares say SIM PIN meanwhile): not an
            // attempt; the next read tries again.
            if let Err(e) = store.clear_pin_try(iccid) {
                // Kept as tried this boot: the safe side.
                tracing::error!(%iccid, error = %e, "cannot clear the PIN attempt record");
            }
            Ok(Attempt::Skipped("SIM busy: not tried"))
        }
        Err(r) => {
            record.refused = true;
            if let Err(e) = store.set_pin_try(iccid, &record) {
                // Recorded as tried this boot already; only "never again" is at risk.
                tracing::error!(%iccid, error = %e, "cannot record the PIN's refusal");
            }
            Ok(Attempt::Refused(r.result.to_string()))
        }
    }
}
