//! PIN1 and its unblock key on a card (ETSI TS 102 221 §9.5, §11.1.9-§11.1.13; 3GPP TS
//! 51.011 §9.2.9-§9.2.13 on GSM SIMs): the lock state told without spending an attempt,
//! and the five PIN commands. Pure over a [`Channel`]; the policy that guards the last
//! attempt ([`guard`]) is shared with the modem side.

use super::apdu::{Apdu, Channel, StatusWord};
use super::{CardError, CardKind, CardTransport};
use crate::sim::{Lock, LockState};
pub use crate::sim::{PinOp, PinRequest, Secret, SecretError};

/// The 8-byte block of TS 102 221 §9.5.2: the digits in ASCII, padded with 'FF'.
fn block(s: &Secret) -> [u8; PIN_BLOCK] {
    let mut b = [0xFF; PIN_BLOCK];
    let d = s.expose().as_bytes();
    b[..d.len()].copy_from_slice(d);
    b
}

/// PIN1's key reference: '01' PIN Appl 1 (TS 102 221 §9.5.1, Table 9.3); CHV1 on a GSM
/// SIM (TS 51.011 §9.2.9).
const KEY_PIN1: u8 = 0x01;
/// A PIN travels as 8 bytes: its digits in ASCII, padded with 'FF' (TS 102 221 §9.5.2).
const PIN_BLOCK: usize = 8;

/// TS 102 221 §11.1.9-§11.1.13: VERIFY '20', CHANGE '24', DISABLE '26', ENABLE '28',
/// UNBLOCK '2C' (the same on a GSM SIM, TS 51.011 §9.2.9-§9.2.13).
fn ins(op: PinOp) -> u8 {
    match op {
        PinOp::Verify => 0x20,
        PinOp::Change => 0x24,
        PinOp::Disable => 0x26,
        PinOp::Enable => 0x28,
        PinOp::Unblock => 0x2C,
    }
}

fn command(op: PinOp) -> &'static str {
    match op {
        PinOp::Verify => "VERIFY PIN",
        PinOp::Change => "CHANGE PIN",
        PinOp::Disable => "DISABLE PIN",
        PinOp::Enable => "ENABLE PIN",
        PinOp::Unblock => "UNBLOCK PIN",
    }
}

/// Why a PIN operation is not attempted: the hardware's counter would be put at risk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinRefusal {
    /// One attempt is left: a wrong PIN now blocks the SIM (PUK needed).
    #[error("{op}: 1 PIN attempt left; not spent without force (a wrong PIN now blocks the SIM)")]
    LastPinAttempt { op: PinOp },
    /// One PUK attempt is left, or the count is unknown: a wrong PUK now kills the SIM.
    #[error("{op}: {why}; not spent without force (a wrong PUK kills the SIM for good)")]
    PukAtRisk { op: PinOp, why: &'static str },
    /// The SIM is in the wrong state for this operation.
    #[error("{op}: the SIM is {state}{hint}")]
    WrongState {
        op: PinOp,
        state: LockState,
        hint: &'static str,
    },
}

/// Whether `op` may be tried on a SIM whose lock is `lock` (`None`: unknown). Never the
/// last PIN attempt, never a PUK attempt whose count is unknown or the last, unless
/// `force` (the platform or the person asked for exactly that).
pub fn guard(op: PinOp, lock: Option<&Lock>, force: bool) -> Result<(), PinRefusal> {
    let state = lock.map(|l| l.state);
    if state == Some(LockState::Blocked) {
        return Err(PinRefusal::WrongState {
            op,
            state: LockState::Blocked,
            hint: ": the PUK is exhausted, the SIM cannot be unlocked",
        });
    }
    if op == PinOp::Unblock {
        let puk = lock.and_then(|l| l.puk_attempts);
        if force {
            return Ok(());
        }
        return match puk {
            None => Err(PinRefusal::PukAtRisk {
                op,
                why: "PUK attempts left unknown",
            }),
            Some(n) if n <= 1 => Err(PinRefusal::PukAtRisk {
                op,
                why: "1 PUK attempt left",
            }),
            Some(_) => Ok(()),
        };
    }
    if state == Some(LockState::PukRequired) {
        return Err(PinRefusal::WrongState {
            op,
            state: LockState::PukRequired,
            hint: ": only pin_unblock (PUK and a new PIN) unlocks it",
        });
    }
    if !force && lock.and_then(|l| l.pin_attempts) == Some(1) {
        return Err(PinRefusal::LastPinAttempt { op });
    }
    Ok(())
}

/// What the card said to a PIN operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// Done (9000).
    Done,
    /// Wrong PIN or PUK: 63CX with X attempts left (TS 102 221 §10.2.1.3).
    Wrong { attempts_left: u8 },
    /// The key is blocked (6983, or 63C0).
    Blocked,
    /// The card refused for another reason (e.g. 6984 disabling a disabled PIN is
    /// not allowed), with the status word.
    Refused(StatusWord),
}

fn class(kind: CardKind) -> u8 {
    // GSM SIMs answer CLA A0 only (TS 51.011 §9.2).
    match kind {
        CardKind::Uicc => 0x00,
        CardKind::Gsm => 0xA0,
    }
}

/// 63CX: X retries left (TS 102 221 §10.2.1.3).
fn retries(sw: StatusWord) -> Option<u8> {
    (sw.0 == 0x63 && sw.1 & 0xF0 == 0xC0).then_some(sw.1 & 0x0F)
}

/// 6983 authentication method blocked (TS 102 221 §10.2.1.5).
const BLOCKED: StatusWord = StatusWord(0x69, 0x83);

/// The lock state, spending no attempt: VERIFY PIN with no data answers 63CX when PIN1
/// must be verified, 9000 when not (disabled, or verified since power-on), 6983 when
/// blocked (TS 102 221 §11.1.9); then UNBLOCK PIN with no data tells the PUK's retries
/// the same way (§11.1.13). One APDU on a ready or PIN-locked card, two on a blocked
/// one. `None` on a GSM SIM, whose VERIFY CHV always carries a CHV (TS 51.011 §9.2.9).
pub fn lock_state<T: CardTransport>(
    ch: &mut Channel<T>,
    kind: CardKind,
) -> Result<Option<Lock>, CardError> {
    if kind == CardKind::Gsm {
        return Ok(None);
    }
    let verify = Apdu::new(class(kind), ins(PinOp::Verify), 0x00, KEY_PIN1);
    let sw = ch.send(&verify, "VERIFY PIN (status)")?.sw;
    if sw.is_ok() {
        return Ok(Some(Lock::ready()));
    }
    match retries(sw) {
        Some(n) if n > 0 => {
            return Ok(Some(Lock {
                state: LockState::PinRequired,
                pin_enabled: Some(true),
                pin_attempts: Some(n),
                puk_attempts: None,
            }))
        }
        Some(_) => {}
        None if sw == BLOCKED => {}
        // Anything else (6D00 from a card without PIN commands ...): unknown.
        None => return Ok(None),
    }
    let unblock = Apdu::new(class(kind), ins(PinOp::Unblock), 0x00, KEY_PIN1);
    let sw = ch.send(&unblock, "UNBLOCK PIN (status)")?.sw;
    let (state, puk) = match retries(sw) {
        Some(n) if n > 0 => (LockState::PukRequired, Some(n)),
        Some(_) => (LockState::Blocked, Some(0)),
        None if sw == BLOCKED => (LockState::Blocked, Some(0)),
        None => (LockState::PukRequired, None),
    };
    Ok(Some(Lock {
        state,
        pin_enabled: Some(true),
        pin_attempts: Some(0),
        puk_attempts: puk,
    }))
}

/// Run one PIN operation. `first` is the PIN (the PUK for an unblock); `second` the new
/// PIN of a change or an unblock. The caller checked [`guard`] first.
pub fn run<T: CardTransport>(
    ch: &mut Channel<T>,
    kind: CardKind,
    op: PinOp,
    first: &Secret,
    second: Option<&Secret>,
) -> Result<PinOutcome, CardError> {
    let mut data = block(first).to_vec();
    if let Some(s) = second {
        data.extend_from_slice(&block(s));
    }
    // UNBLOCK CHV on a GSM SIM names CHV1 as '00' (TS 51.011 §9.2.13).
    let key = if op == PinOp::Unblock && kind == CardKind::Gsm {
        0x00
    } else {
        KEY_PIN1
    };
    let apdu = Apdu::new(class(kind), ins(op), 0x00, key).with_data(&data);
    let sw = ch.send(&apdu, command(op))?.sw;
    Ok(if sw.is_ok() {
        PinOutcome::Done
    } else if sw == BLOCKED || retries(sw) == Some(0) {
        PinOutcome::Blocked
    } else if let Some(n) = retries(sw) {
        PinOutcome::Wrong { attempts_left: n }
    } else if kind == CardKind::Gsm && sw == StatusWord(0x98, 0x04) {
        // TS 51.011 §9.4.5: 9804 access condition not fulfilled / wrong CHV (no count).
        PinOutcome::Wrong { attempts_left: 0 }
    } else {
        PinOutcome::Refused(sw)
    })
}

/// Why a PIN operation was not made, or not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinFailure {
    /// The SIM in the reader or modem is not the one the command names.
    #[error("the SIM there now is {0}, not the one named: nothing sent")]
    OtherSim(String),
    /// Not attempted: the last attempt is at stake, or the SIM's state forbids it.
    #[error(transparent)]
    Guard(#[from] PinRefusal),
    /// The SIM said no: a wrong PIN or PUK, with the attempts left when told.
    #[error("{op}: wrong {what}{left}")]
    Wrong {
        op: PinOp,
        what: &'static str,
        left: String,
    },
    /// The SIM refused for another reason (not enabled, already disabled ...).
    #[error("{op}: refused by the SIM ({why})")]
    Refused { op: PinOp, why: String },
}

impl PinFailure {
    /// A wrong PIN or PUK, the attempts left said when known.
    pub fn wrong(op: PinOp, attempts_left: Option<u8>) -> PinFailure {
        PinFailure::Wrong {
            op,
            what: if op == PinOp::Unblock { "PUK" } else { "PIN" },
            left: attempts_left.map_or(String::new(), |n| format!(": {n} attempts left")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(state: LockState, pin: Option<u8>, puk: Option<u8>) -> Lock {
        Lock {
            state,
            pin_enabled: Some(true),
            pin_attempts: pin,
            puk_attempts: puk,
        }
    }

    #[test]
    fn a_secret_never_shows_its_digits() {
        let p = Secret::pin("1234").unwrap();
        assert_eq!(format!("{p} {p:?}"), "*** Secret(***)");
        assert_eq!(block(&p), [b'1', b'2', b'3', b'4', 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(Secret::pin("123").is_err());
        assert!(Secret::pin("12a4").is_err());
        assert!(Secret::pin("123456789").is_err());
        assert!(Secret::puk("1234567").is_err());
        assert!(Secret::puk("12345678").is_ok());
    }

    #[test]
    fn the_last_pin_attempt_is_spent_only_with_force() {
        let one = lock(LockState::PinRequired, Some(1), None);
        for op in [PinOp::Verify, PinOp::Disable, PinOp::Enable, PinOp::Change] {
            assert_eq!(
                guard(op, Some(&one), false),
                Err(PinRefusal::LastPinAttempt { op })
            );
            assert_eq!(guard(op, Some(&one), true), Ok(()));
        }
        let two = lock(LockState::PinRequired, Some(2), None);
        assert_eq!(guard(PinOp::Verify, Some(&two), false), Ok(()));
        // Unknown attempts (a family without a counter command) do not block a PIN.
        assert_eq!(guard(PinOp::Verify, None, false), Ok(()));
    }

    #[test]
    fn an_unblock_needs_a_known_puk_count_above_one_or_force() {
        let unknown = lock(LockState::PukRequired, Some(0), None);
        assert!(matches!(
            guard(PinOp::Unblock, Some(&unknown), false),
            Err(PinRefusal::PukAtRisk { .. })
        ));
        assert_eq!(guard(PinOp::Unblock, Some(&unknown), true), Ok(()));
        let last = lock(LockState::PukRequired, Some(0), Some(1));
        assert!(guard(PinOp::Unblock, Some(&last), false).is_err());
        let ten = lock(LockState::PukRequired, Some(0), Some(10));
        assert_eq!(guard(PinOp::Unblock, Some(&ten), false), Ok(()));
        // A PIN cannot unlock a PUK-locked SIM; nothing unlocks a dead one.
        assert!(matches!(
            guard(PinOp::Verify, Some(&ten), true),
            Err(PinRefusal::WrongState { .. })
        ));
        let dead = lock(LockState::Blocked, Some(0), Some(0));
        assert!(guard(PinOp::Unblock, Some(&dead), true).is_err());
    }
}
