//! eUICC (eSIM) facts: the ISD-R AIDs to probe (data, devices/isdr_aids.toml), the ES10
//! commands the engine sends (GSMA SGP.22 §5.7), and the EID's check digits.

use serde::Deserialize;
use std::sync::OnceLock;

/// One ISD-R AID from devices/isdr_aids.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IsdrAid {
    pub name: String,
    /// Hex, 5 to 16 bytes (ISO/IEC 7816-4 §8.2.1.2).
    pub aid: String,
    /// Where the AID was seen.
    pub source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AidFile {
    aid: Vec<IsdrAid>,
}

/// The shipped list, in probe order.
const SHIPPED: &str = include_str!("../../devices/isdr_aids.toml");

/// Parse and validate an ISD-R AID list; the error names the entry.
pub fn parse_aids(text: &str) -> Result<Vec<IsdrAid>, String> {
    let file: AidFile = toml::from_str(text).map_err(|e| e.to_string())?;
    for (i, a) in file.aid.iter().enumerate() {
        let bytes = hex::decode(&a.aid).map_err(|e| format!("aid[{i}] ({}): {e}", a.name))?;
        if !(5..=16).contains(&bytes.len()) {
            return Err(format!(
                "aid[{i}] ({}): {} bytes; an AID has 5 to 16 (ISO/IEC 7816-4 §8.2.1.2)",
                a.name,
                bytes.len()
            ));
        }
    }
    if file.aid.is_empty() {
        return Err("no [[aid]] entries".into());
    }
    Ok(file.aid)
}

/// The shipped ISD-R AIDs, standard first.
pub fn shipped_aids() -> &'static [IsdrAid] {
    static AIDS: OnceLock<Vec<IsdrAid>> = OnceLock::new();
    // The file is compiled in and its validity pinned by a unit test: a parse failure
    // here is a build defect, not an input error.
    AIDS.get_or_init(|| parse_aids(SHIPPED).expect("devices/isdr_aids.toml is valid"))
}

/// ES10c GetEUICCData asking for the EID only (SGP.22 §5.7.20): GetEuiccDataRequest
/// [APPLICATION 62] (BF3E) { tagList [APPLICATION 28] (5C) = '5A' }.
pub const GET_EUICC_DATA_EID: [u8; 6] = [0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A];

/// STORE DATA carrying a whole ES10 request in one block (SGP.22 §5.7.2: CLA 80 plus
/// the logical channel, INS E2, P1 91 = last block + BER-TLV, P2 block number 00).
pub fn store_data_header(channel: u8) -> (u8, u8, u8, u8) {
    (0x80 | channel, 0xE2, 0x91, 0x00)
}

/// An EID as read, with its check-digit verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eid {
    digits: String,
    check_ok: bool,
}

impl Eid {
    /// From the 16 bytes of GetEUICCData's tag 5A (SGP.22 §5.7.20: the EID, 32 digits,
    /// one per nibble, not swapped).
    pub fn from_bytes(raw: &[u8]) -> Option<Eid> {
        if raw.len() != 16 {
            return None;
        }
        Some(Eid::from_digits(&hex::encode_upper(raw)))
    }

    pub fn from_digits(digits: &str) -> Eid {
        Eid {
            check_ok: eid_check_ok(digits),
            digits: digits.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.digits
    }

    /// The mod-97 check over all 32 digits (GSMA SGP.29 §2.2, ISO 7064 MOD 97-10).
    pub fn check_ok(&self) -> bool {
        self.check_ok
    }
}

/// GSMA SGP.29 §2.2: 32 decimal digits, the last two chosen so that the whole number
/// mod 97 is 1 (ISO 7064 MOD 97-10). Computed digit by digit: 32 digits exceed u64.
pub fn eid_check_ok(digits: &str) -> bool {
    if digits.len() != 32 {
        return false;
    }
    let mut rem = 0u32;
    for c in digits.chars() {
        let Some(d) = c.to_digit(10) else {
            return false;
        };
        rem = (rem * 10 + d) % 97;
    }
    rem == 1
}

/// What GetProfilesInfo says about the eUICC's profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profiles {
    /// One profile is enabled: the eSIM has a line.
    Enabled,
    /// No enabled profile (none installed, or all disabled): a Blank eSIM.
    NoneEnabled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_aids_parse_with_the_standard_first() {
        let aids = shipped_aids();
        assert_eq!(aids[0].aid, "A0000005591010FFFFFFFF8900000100");
        assert!(aids.len() > 1, "vendor AIDs are listed");
    }

    #[test]
    fn a_short_aid_is_refused_naming_it() {
        let err =
            parse_aids("[[aid]]\nname = \"x\"\naid = \"A000\"\nsource = \"s\"\n").unwrap_err();
        assert!(err.starts_with("aid[0] (x): 2 bytes"), "{err}");
    }

    #[test]
    fn eid_mod97_accepts_published_eids_and_rejects_a_changed_digit() {
        // tests/fixtures/card_vectors.jsonl (pySim test_euicc.py).
        assert!(eid_check_ok("89049032123451234512345678901235"));
        assert!(eid_check_ok("89086030202200000022000023022943"));
        assert!(!eid_check_ok("89049032123451234512345678901234"));
        assert!(!eid_check_ok("8904903212345123451234567890123"));
    }
}
