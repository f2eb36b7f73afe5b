//! Subscriber data on a SIM: EF.IMSI, EF.SPN, and the home operator's name from the
//! IMSI's MCC+MNC (a small table kept as data, devices/operators.toml).

use serde::Deserialize;
use std::sync::OnceLock;

/// Decode EF.IMSI (3GPP TS 31.102 §4.2.2, TS 51.011 §10.3.2): byte 1 the number of bytes
/// that follow; then swapped-nibble BCD whose first nibble is the parity/type indicator,
/// padded with F. `None` when the file holds no IMSI (length 0 or FF, unprogrammed).
pub fn decode_imsi(raw: &[u8]) -> Option<String> {
    let (&len, rest) = raw.split_first()?;
    let len = usize::from(len);
    if len == 0 || len > 8 || rest.len() < len {
        return None;
    }
    // TS 23.003 §2.2: decimal digits only; a nibble A-E makes the file no IMSI.
    let digits: Option<String> = rest[..len]
        .iter()
        .flat_map(|b| [b & 0x0F, b >> 4])
        .skip(1)
        .take_while(|n| *n != 0xF)
        .map(|n| char::from_digit(u32::from(n), 10))
        .collect();
    // TS 23.003 §2.2: an IMSI has at most 15 digits, and a home network needs MCC+MNC.
    digits.filter(|d| (6..=15).contains(&d.len()))
}

/// Decode EF.SPN (TS 31.102 §4.2.12, TS 51.011 §10.3.11): byte 1 display condition, then
/// 16 bytes of name in the SMS default alphabet (TS 23.038 §6.2.1, unpacked) or UCS2
/// (TS 102 221 Annex A, first byte 80), padded with FF. `None` when empty.
pub fn decode_spn(raw: &[u8]) -> Option<String> {
    let name = raw.get(1..)?;
    let text: String = if name.first() == Some(&0x80) {
        let units: Vec<u16> = name[1..]
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .take_while(|u| *u != 0xFFFF)
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        name.iter()
            .take_while(|b| **b != 0xFF)
            .map(|b| gsm7_char(*b))
            .collect()
    };
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The GSM 7-bit default alphabet (TS 23.038 §6.2.1): ASCII where it agrees, the
/// characters that differ mapped explicitly, anything else shown as '?'.
fn gsm7_char(b: u8) -> char {
    match b {
        0x00 => '@',
        0x01 => '£',
        0x02 => '$',
        0x11 => '_',
        0x24 => '¤',
        0x40 => '¡',
        0x5B => 'Ä',
        0x5C => 'Ö',
        0x5D => 'Ñ',
        0x5E => 'Ü',
        0x5F => '§',
        0x60 => '¿',
        0x7B => 'ä',
        0x7C => 'ö',
        0x7D => 'ñ',
        0x7E => 'ü',
        0x7F => 'à',
        0x20..=0x7A => char::from(b),
        _ => '?',
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Operator {
    mcc_mnc: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorFile {
    operator: Vec<Operator>,
}

const SHIPPED: &str = include_str!("../../devices/operators.toml");

fn parse_operators(text: &str) -> Result<Vec<Operator>, String> {
    let file: OperatorFile = toml::from_str(text).map_err(|e| e.to_string())?;
    for (i, o) in file.operator.iter().enumerate() {
        // E.212: MCC 3 digits, MNC 2 or 3.
        if !(5..=6).contains(&o.mcc_mnc.len()) || !o.mcc_mnc.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "operator[{i}] ({}): mcc_mnc \"{}\" is not 5 or 6 digits",
                o.name, o.mcc_mnc
            ));
        }
    }
    Ok(file.operator)
}

fn operators() -> &'static [Operator] {
    static OPS: OnceLock<Vec<Operator>> = OnceLock::new();
    // Compiled in and pinned by a unit test: failure is a build defect.
    OPS.get_or_init(|| parse_operators(SHIPPED).expect("devices/operators.toml is valid"))
}

/// The home operator of an IMSI: (MCC+MNC, name). The MNC's length is not in the IMSI
/// (it is in EF.AD, one more read); the table's longest matching entry decides.
pub fn home_operator(imsi: &str) -> Option<(&'static str, &'static str)> {
    operators()
        .iter()
        .filter(|o| imsi.starts_with(&o.mcc_mnc))
        .max_by_key(|o| o.mcc_mnc.len())
        .map(|o| (o.mcc_mnc.as_str(), o.name.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(kind: &str) -> Vec<serde_json::Value> {
        include_str!("../../tests/fixtures/card_vectors.jsonl")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["kind"] == kind)
            .collect()
    }

    #[test]
    fn imsi_vectors_decode_to_their_published_digits() {
        let vs = vectors("imsi");
        assert!(!vs.is_empty());
        for v in vs {
            let raw = hex::decode(v["raw"].as_str().unwrap()).unwrap();
            // Vectors padded to EF.IMSI's 9 bytes and unpadded ones alike.
            assert_eq!(
                decode_imsi(&raw).as_deref(),
                Some(v["decoded"].as_str().unwrap()),
                "{}",
                v["source"]
            );
        }
    }

    #[test]
    fn spn_vector_decodes() {
        let v = &vectors("spn")[0];
        let raw = hex::decode(v["raw"].as_str().unwrap()).unwrap();
        assert_eq!(decode_spn(&raw).as_deref(), Some("GSM-R CH"));
        assert_eq!(decode_spn(&[0x00, 0xFF, 0xFF]), None);
    }

    #[test]
    fn ucs2_spn_decodes() {
        assert_eq!(
            decode_spn(&hex::decode("01800041004FFFFF").unwrap()).as_deref(),
            Some("AO")
        );
    }

    /// Regression (found by `make fuzz`, ef): a nibble A-E came out as '?' inside the
    /// IMSI reported to the platform.
    #[test]
    fn an_imsi_with_a_non_decimal_nibble_is_no_imsi() {
        assert_eq!(
            decode_imsi(&hex::decode("082926105B11608457").unwrap()),
            None
        );
        assert_eq!(
            decode_imsi(&hex::decode("0829261051116084F7").unwrap()).as_deref(),
            Some("26201151106487")
        );
    }

    #[test]
    fn unprogrammed_imsi_is_none() {
        assert_eq!(decode_imsi(&[0xFF; 9]), None);
        assert_eq!(decode_imsi(&[0x00; 9]), None);
    }

    #[test]
    fn operator_table_parses_and_matches_the_longest_prefix() {
        assert!(parse_operators(SHIPPED).is_ok());
        assert_eq!(
            home_operator("228062800000208"),
            Some(("22806", "SBB GSM-R"))
        );
        assert_eq!(
            home_operator("310260123456789"),
            Some(("310260", "T-Mobile US"))
        );
        assert_eq!(home_operator("999990000000000"), None);
    }
}
