//! ICCID decoding and checking.
//!
//! EF.ICCID (file 2FE2 under the MF, ETSI TS 102 221 §13.2) holds 10 bytes of BCD with
//! the nibbles of each byte swapped, padded with F. The number is 18-20 digits (ITU-T
//! E.118), the last a Luhn check digit.

use std::fmt;

/// A decoded ICCID and its Luhn verdict. The digits are kept exactly as read: a failing
/// check is reported, never "fixed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iccid {
    digits: String,
    luhn_ok: bool,
}

/// Why bytes are not an ICCID at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IccidError {
    #[error("EF.ICCID holds {0} digit(s); an ICCID has 18 to 20 (ITU-T E.118)")]
    Length(usize),
    #[error("filler F in the middle of the ICCID, at digit {0}")]
    InnerFiller(usize),
}

impl Iccid {
    /// Decode the raw contents of EF.ICCID (swapped-nibble BCD, F-padded).
    ///
    /// Nibbles A-E are kept as hex digits: some issuers' test and eSIM ICCIDs carry them,
    /// and a reader station must show what is on the card.
    pub fn from_ef(raw: &[u8]) -> Result<Iccid, IccidError> {
        let mut digits = String::with_capacity(raw.len() * 2);
        let mut ended = None;
        for (i, nibble) in raw.iter().flat_map(|b| [b & 0x0F, b >> 4]).enumerate() {
            match (nibble, ended) {
                (0xF, _) => ended = ended.or(Some(i)),
                (_, Some(_)) => return Err(IccidError::InnerFiller(i)),
                (n, None) => digits.push(
                    char::from_digit(u32::from(n), 16).map_or('?', |c| c.to_ascii_uppercase()),
                ),
            }
        }
        Self::from_digits(&digits)
    }

    /// Accept an ICCID already in text (a modem's +CCID answer, a command payload).
    pub fn from_digits(text: &str) -> Result<Iccid, IccidError> {
        let digits: String = text
            .trim()
            .trim_end_matches(['F', 'f'])
            .to_ascii_uppercase();
        // F is the filler (TS 102 221 §13.2): trailing ones are padding, one inside
        // ends the number early, as in `from_ef`.
        if let Some(at) = digits.find('F') {
            return Err(IccidError::InnerFiller(at));
        }
        if !(18..=20).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(IccidError::Length(digits.len()));
        }
        let luhn_ok = luhn_valid(&digits);
        Ok(Iccid { digits, luhn_ok })
    }

    pub fn as_str(&self) -> &str {
        &self.digits
    }

    /// The Luhn verdict over all digits (ITU-T E.118 §4.5, ISO/IEC 7812-1 Annex B).
    pub fn luhn_ok(&self) -> bool {
        self.luhn_ok
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.digits)
    }
}

/// Luhn check over a digit string, the last digit being the check digit. A string with a
/// non-decimal digit cannot pass.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, c) in digits.chars().rev().enumerate() {
        let Some(mut d) = c.to_digit(10) else {
            return false;
        };
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_known_good_and_rejects_a_changed_digit() {
        assert!(luhn_valid("8988211000000530082"));
        assert!(!luhn_valid("8988211000000530081"));
        assert!(!luhn_valid(""));
    }

    #[test]
    fn twenty_digit_iccid_without_filler_decodes() {
        let raw = hex::decode("98103254769810325476").unwrap();
        assert_eq!(
            Iccid::from_ef(&raw).unwrap().as_str(),
            "89012345678901234567"
        );
    }

    #[test]
    fn filler_inside_the_number_is_an_error() {
        let raw = hex::decode("98F83254769810325476").unwrap();
        assert_eq!(Iccid::from_ef(&raw), Err(IccidError::InnerFiller(4)));
    }

    #[test]
    fn too_short_is_an_error() {
        assert_eq!(
            Iccid::from_ef(&hex::decode("9810FFFFFFFFFFFFFFFF").unwrap()),
            Err(IccidError::Length(4))
        );
    }
}
