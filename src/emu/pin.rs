//! One model of a SIM's PIN1 and PUK1 for both emulators: the virtual card answers it
//! in APDUs (TS 102 221 §11.1.9-§11.1.13), the emulated modem in AT (TS 27.007 §8.3,
//! §8.4, §8.5). Counters live as long as the SIM does: a reset or a power cycle only
//! forgets that PIN1 was verified (TS 102 221 §9.5.1).

use serde::Deserialize;

/// PIN1 and PUK1 of one SIM.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPin {
    /// PIN1, 4 to 8 digits.
    pub pin: String,
    /// Whether PIN1 must be verified before the subscriber's files and the network.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// PIN attempts left now (3 on a fresh SIM; 0: blocked, PUK needed).
    #[serde(default = "pin_tries")]
    pub attempts: u8,
    /// PUK1, 8 digits.
    #[serde(default = "default_puk")]
    pub puk: String,
    /// PUK attempts left now (10 on a fresh SIM; 0: the SIM is dead).
    #[serde(default = "puk_tries")]
    pub puk_attempts: u8,
    /// Verified since power-on.
    #[serde(skip)]
    pub verified: bool,
}

fn yes() -> bool {
    true
}

/// TS 102 221 §9.5.2 leaves the counts to the card; 3 and 10 are what SIMs ship with.
pub const PIN_TRIES: u8 = 3;
pub const PUK_TRIES: u8 = 10;

fn pin_tries() -> u8 {
    PIN_TRIES
}

fn puk_tries() -> u8 {
    PUK_TRIES
}

fn default_puk() -> String {
    "12345678".into()
}

/// Why a PIN operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinError {
    /// Wrong code; attempts left after this one.
    Wrong(u8),
    /// The key is blocked (no attempt left).
    Blocked,
    /// Not allowed in this state (disabling a disabled PIN ...).
    NotAllowed,
}

/// What the SIM needs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Nothing,
    Pin,
    Puk,
    /// PUK exhausted: dead for good.
    Dead,
}

impl SimPin {
    /// An enabled PIN1 with fresh counters.
    pub fn new(pin: &str) -> SimPin {
        SimPin {
            pin: pin.into(),
            enabled: true,
            attempts: PIN_TRIES,
            puk: default_puk(),
            puk_attempts: PUK_TRIES,
            verified: false,
        }
    }

    /// The checks an image or a command line gets; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        let digits = |s: &str, min: usize| {
            (min..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(&self.pin, 4) {
            return Err("pin.pin: 4 to 8 digits".into());
        }
        if !digits(&self.puk, 8) {
            return Err("pin.puk: 8 digits".into());
        }
        if self.attempts > PIN_TRIES || self.puk_attempts > PUK_TRIES {
            return Err(format!(
                "pin.attempts: at most {PIN_TRIES}, pin.puk_attempts: at most {PUK_TRIES}"
            ));
        }
        Ok(())
    }

    pub fn need(&self) -> Need {
        if self.puk_attempts == 0 {
            Need::Dead
        } else if self.attempts == 0 {
            Need::Puk
        } else if self.enabled && !self.verified {
            Need::Pin
        } else {
            Need::Nothing
        }
    }

    /// Power-on or reset: verification is forgotten, counters are not.
    pub fn power_cycle(&mut self) {
        self.verified = false;
    }

    /// Compare `code` with PIN1, counting a wrong one (TS 102 221 §11.1.9).
    fn check_pin(&mut self, code: &str) -> Result<(), PinError> {
        if self.attempts == 0 {
            return Err(PinError::Blocked);
        }
        if code != self.pin {
            self.attempts -= 1;
            self.verified = false;
            return Err(if self.attempts == 0 {
                PinError::Blocked
            } else {
                PinError::Wrong(self.attempts)
            });
        }
        self.attempts = PIN_TRIES;
        self.verified = true;
        Ok(())
    }

    pub fn verify(&mut self, code: &str) -> Result<(), PinError> {
        self.check_pin(code)
    }

    pub fn change(&mut self, old: &str, new: &str) -> Result<(), PinError> {
        if !self.enabled {
            return Err(PinError::NotAllowed);
        }
        self.check_pin(old)?;
        self.pin = new.into();
        Ok(())
    }

    pub fn set_enabled(&mut self, enabled: bool, code: &str) -> Result<(), PinError> {
        if self.enabled == enabled {
            return Err(PinError::NotAllowed);
        }
        self.check_pin(code)?;
        self.enabled = enabled;
        Ok(())
    }

    /// UNBLOCK PIN (TS 102 221 §11.1.13): the PUK resets PIN1 to `new` and its counter.
    pub fn unblock(&mut self, puk: &str, new: &str) -> Result<(), PinError> {
        if self.puk_attempts == 0 {
            return Err(PinError::Blocked);
        }
        if puk != self.puk {
            self.puk_attempts -= 1;
            return Err(if self.puk_attempts == 0 {
                PinError::Blocked
            } else {
                PinError::Wrong(self.puk_attempts)
            });
        }
        self.puk_attempts = PUK_TRIES;
        self.attempts = PIN_TRIES;
        self.pin = new.into();
        self.verified = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_survive_a_power_cycle_and_a_right_pin_restores_them() {
        let mut p = SimPin::new("1234");
        assert_eq!(p.need(), Need::Pin);
        assert_eq!(p.verify("0000"), Err(PinError::Wrong(2)));
        p.power_cycle();
        assert_eq!(p.attempts, 2);
        assert_eq!(p.verify("1234"), Ok(()));
        assert_eq!((p.attempts, p.need()), (3, Need::Nothing));
        p.power_cycle();
        assert_eq!(p.need(), Need::Pin);
    }

    #[test]
    fn three_wrong_pins_need_the_puk_and_ten_wrong_puks_kill_the_sim() {
        let mut p = SimPin::new("1234");
        p.verify("0").ok();
        p.verify("0").ok();
        assert_eq!(p.verify("0"), Err(PinError::Blocked));
        assert_eq!(p.need(), Need::Puk);
        assert_eq!(p.verify("1234"), Err(PinError::Blocked));
        assert_eq!(p.unblock("00000000", "4321"), Err(PinError::Wrong(9)));
        assert_eq!(p.unblock("12345678", "4321"), Ok(()));
        assert_eq!(p.need(), Need::Nothing);
        for _ in 0..9 {
            p.unblock("0", "1").ok();
        }
        assert_eq!(p.unblock("0", "1"), Err(PinError::Blocked));
        assert_eq!(p.need(), Need::Dead);
    }
}
