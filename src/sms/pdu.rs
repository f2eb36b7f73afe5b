//! SMS PDUs as a modem hands them over in PDU mode (TS 27.005 §3.1: the service
//! centre address of TS 24.011 §8.2.5.1, then the TPDU of TS 23.040 §9.2): the
//! SMS-DELIVER read, and SMS-SUBMIT built, with the user data header's concatenation
//! elements (TS 23.040 §9.2.3.24.1, .8). Pure; every length checked, nothing panics on
//! a modem's bytes.

use super::gsm7;

/// Why a PDU could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PduError {
    #[error("PDU is not hex: {0}")]
    Hex(String),
    #[error("PDU ends inside {0}")]
    Short(&'static str),
    #[error("not an SMS-DELIVER (TP-MTI {0})")]
    NotDeliver(u8),
    #[error("text of {0} characters cannot be sent as SMS (at most 255 parts)")]
    TooLong(usize),
    #[error("destination {0:?}: only digits, with an optional leading +, 1 to 20 of them")]
    Number(String),
}

/// TS 23.038 §4: the alphabet a data coding scheme says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alphabet {
    Gsm7,
    Eight,
    Ucs2,
}

/// The alphabet of an SMS's TP-DCS (TS 23.038 §4, SMS data coding groups).
pub fn sms_alphabet(dcs: u8) -> Alphabet {
    match dcs >> 4 {
        // 00xx general data coding, 01xx the same marked for automatic deletion: bits
        // 3..2 the alphabet (11 reserved: default).
        0x0..=0x7 => match (dcs >> 2) & 0x03 {
            0x01 => Alphabet::Eight,
            0x02 => Alphabet::Ucs2,
            _ => Alphabet::Gsm7,
        },
        // 1100, 1101: message waiting, GSM 7-bit; 1110: message waiting, UCS2.
        0xC | 0xD => Alphabet::Gsm7,
        0xE => Alphabet::Ucs2,
        // 1111: data coding/message class, bit 2 the alphabet (0 default, 1 8-bit).
        0xF if dcs & 0x04 != 0 => Alphabet::Eight,
        _ => Alphabet::Gsm7,
    }
}

/// The alphabet of a USSD string's DCS (TS 23.038 §5, the CBS coding groups, which
/// USSD uses: TS 23.038 §5 "Cell Broadcast Data Coding Scheme" applies to USSD, TS
/// 22.090).
pub fn ussd_alphabet(dcs: u8) -> Alphabet {
    match dcs >> 4 {
        // 0000, 0010, 0011: a language, GSM 7-bit.
        0x0 | 0x2 | 0x3 => Alphabet::Gsm7,
        // 0001: 0000 GSM 7-bit with a language prefix, 0001 UCS2 with one.
        0x1 if dcs & 0x0F == 0x01 => Alphabet::Ucs2,
        0x1 => Alphabet::Gsm7,
        // 01xx: general data coding, bits 3..2 the alphabet.
        0x4..=0x7 => match (dcs >> 2) & 0x03 {
            0x01 => Alphabet::Eight,
            0x02 => Alphabet::Ucs2,
            _ => Alphabet::Gsm7,
        },
        // 1111: bit 2, 0 GSM 7-bit, 1 8-bit.
        0xF if dcs & 0x04 != 0 => Alphabet::Eight,
        _ => Alphabet::Gsm7,
    }
}

/// A concatenated message's part (TS 23.040 §9.2.3.24.1 8-bit, §9.2.3.24.8 16-bit
/// reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Part {
    pub reference: u16,
    pub total: u8,
    pub seq: u8,
}

/// An SMS-DELIVER (TS 23.040 §9.2.2.1), its text decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// TP-OA: digits with a leading + for an international number, or the
    /// alphanumeric sender (TS 23.040 §9.1.2.5, type of number 101).
    pub sender: String,
    /// TP-SCTS as Unix seconds (UTC), and the sender's zone offset in minutes.
    pub sent_at: i64,
    pub zone_minutes: i32,
    pub text: String,
    /// Some when the message is one part of a concatenated one.
    pub part: Option<Part>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, what: &'static str) -> Result<u8, PduError> {
        let v = *self.b.get(self.at).ok_or(PduError::Short(what))?;
        self.at += 1;
        Ok(v)
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PduError> {
        let end = self.at.checked_add(n).ok_or(PduError::Short(what))?;
        let s = self.b.get(self.at..end).ok_or(PduError::Short(what))?;
        self.at = end;
        Ok(s)
    }
}

/// Semi-octets, low nibble first (TS 23.040 §9.1.2.3), F filler dropped.
fn semi_octets(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for o in b {
        for n in [o & 0x0F, o >> 4] {
            match n {
                0..=9 => s.push(char::from(b'0' + n)),
                0xA => s.push('*'),
                0xB => s.push('#'),
                0xC..=0xE => s.push(char::from(b'a' + n - 0xC)),
                _ => {} // F: filler
            }
        }
    }
    s
}

/// A semi-octet pair read as a decimal number (TS 23.040 §9.2.3.11).
fn swapped(o: u8) -> i64 {
    i64::from(o & 0x0F) * 10 + i64::from(o >> 4)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian), for TP-SCTS.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// TP-SCTS (TS 23.040 §9.2.3.11): year, month, day, hour, minute, second, zone in
/// quarter hours (bit 3 of the octet: negative), each a swapped semi-octet pair.
fn timestamp(b: &[u8]) -> (i64, i32) {
    // Two digits (TS 23.040 §9.2.3.11): 90-99 are the last century's, as no SMS
    // centre stamped a message before 1990.
    let yy = swapped(b[0]);
    let year = if yy >= 90 { 1900 + yy } else { 2000 + yy };
    let (mo, d) = (swapped(b[1]).clamp(1, 12), swapped(b[2]).clamp(1, 31));
    let local = days_from_civil(year, mo, d) * 86_400
        + swapped(b[3]) * 3600
        + swapped(b[4]) * 60
        + swapped(b[5]);
    let z = b[6];
    let quarters = i32::from(z & 0x07) * 10 + i32::from(z >> 4);
    let zone = if z & 0x08 != 0 { -quarters } else { quarters } * 15;
    (local - i64::from(zone) * 60, zone)
}

/// Read an SMS-DELIVER as +CMGL/+CMGR give it in PDU mode (with the SMSC address in
/// front, TS 27.005 §3.1 <pdu>).
pub fn parse_deliver(hex_pdu: &str) -> Result<Deliver, PduError> {
    let bytes = hex::decode(hex_pdu.trim()).map_err(|e| PduError::Hex(e.to_string()))?;
    let mut r = Reader { b: &bytes, at: 0 };
    // TS 24.011 §8.2.5.1: the SMSC address, its length in octets (type included).
    let sca = r.u8("the SMSC address length")?;
    r.take(usize::from(sca), "the SMSC address")?;
    let first = r.u8("the first octet")?;
    let mti = first & 0x03;
    if mti != 0 {
        return Err(PduError::NotDeliver(mti));
    }
    let udhi = first & 0x40 != 0;
    // TP-OA (TS 23.040 §9.1.2.5): length in useful semi-octets, type, digits.
    let digits = r.u8("the sender's length")?;
    let toa = r.u8("the sender's type")?;
    let oa = r.take(usize::from(digits).div_ceil(2), "the sender")?;
    let sender = if (toa >> 4) & 0x07 == 0x05 {
        // Alphanumeric (type of number 101): GSM 7-bit packed, digits*4/7 septets.
        gsm7::decode(&gsm7::unpack(oa, usize::from(digits) * 4 / 7, 0))
    } else if (toa >> 4) & 0x07 == 0x01 {
        format!("+{}", semi_octets(oa))
    } else {
        semi_octets(oa)
    };
    let _pid = r.u8("TP-PID")?;
    let dcs = r.u8("TP-DCS")?;
    let (sent_at, zone_minutes) = timestamp(r.take(7, "TP-SCTS")?);
    let udl = usize::from(r.u8("TP-UDL")?);
    let ud = &bytes[r.at..];
    let alphabet = sms_alphabet(dcs);
    let (part, header) = if udhi {
        let udhl = usize::from(*ud.first().ok_or(PduError::Short("the UDH length"))?);
        let h = ud.get(1..1 + udhl).ok_or(PduError::Short("the UDH"))?;
        (concat_part(h), 1 + udhl)
    } else {
        (None, 0)
    };
    let text = match alphabet {
        Alphabet::Gsm7 => {
            // UDL counts septets, the header included (TS 23.040 §9.2.3.16); the text
            // starts at the next septet boundary after it.
            let header_septets = (header * 8).div_ceil(7);
            let fill = (header_septets * 7 - header * 8) as u8;
            let count = udl.saturating_sub(header_septets);
            let body = ud.get(header..).unwrap_or_default();
            gsm7::decode(&gsm7::unpack(body, count, fill))
        }
        Alphabet::Ucs2 => {
            let body = ud.get(header..udl.min(ud.len())).unwrap_or_default();
            gsm7::decode_ucs2(body)
        }
        Alphabet::Eight => {
            let body = ud.get(header..udl.min(ud.len())).unwrap_or_default();
            // 8-bit data has no text: shown as hex, so nothing is lost.
            hex::encode_upper(body)
        }
    };
    Ok(Deliver {
        sender,
        sent_at,
        zone_minutes,
        text,
        part,
    })
}

/// The concatenation element of a user data header, if any (TS 23.040 §9.2.3.24:
/// IEI, length, data, repeated).
fn concat_part(h: &[u8]) -> Option<Part> {
    let mut i = 0;
    while i + 2 <= h.len() {
        let (iei, len) = (h[i], usize::from(h[i + 1]));
        let data = h.get(i + 2..i + 2 + len)?;
        match (iei, data) {
            (0x00, [r, t, s]) => {
                return Some(Part {
                    reference: u16::from(*r),
                    total: *t,
                    seq: *s,
                })
            }
            (0x08, [r1, r2, t, s]) => {
                return Some(Part {
                    reference: u16::from_be_bytes([*r1, *r2]),
                    total: *t,
                    seq: *s,
                })
            }
            _ => {}
        }
        i += 2 + len;
    }
    None
}

/// One SMS-SUBMIT to send with +CMGS: the hex PDU (the SMSC left to the modem: a
/// zero-length address) and the TPDU length +CMGS wants (TS 27.005 §3.5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    pub pdu: String,
    pub tpdu_len: usize,
}

/// Check a destination number: digits, an optional leading +.
pub fn check_number(number: &str) -> Result<(), PduError> {
    let digits = number.strip_prefix('+').unwrap_or(number);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PduError::Number(number.to_string()));
    }
    Ok(())
}

/// The SMS-SUBMIT PDUs that carry `text` to `number`: one when it fits (160 GSM 7-bit
/// septets, 70 UCS2 characters), else concatenated parts of 153 septets / 67
/// characters with an 8-bit reference `reference` (TS 23.040 §9.2.3.24.1). GSM 7-bit
/// when every character is in the default alphabet, else UCS2. An escape pair or a
/// surrogate pair is never split across parts.
pub fn submit(number: &str, text: &str, reference: u8) -> Result<Vec<Submit>, PduError> {
    check_number(number)?;
    let chunks: Vec<(Alphabet, Vec<u8>)> = match gsm7::encode(text) {
        Some(_) => split(text, 160, 153, |c| gsm7::septets_of(c).unwrap_or_default())
            .into_iter()
            .map(|s| (Alphabet::Gsm7, s))
            .collect(),
        None => split(text, 140, 134, |c| {
            let mut b = [0u16; 2];
            c.encode_utf16(&mut b)
                .iter()
                .flat_map(|u| u.to_be_bytes())
                .collect()
        })
        .into_iter()
        .map(|s| (Alphabet::Ucs2, s))
        .collect(),
    };
    let total = chunks.len();
    if total > 255 {
        return Err(PduError::TooLong(text.chars().count()));
    }
    let intl = number.starts_with('+');
    let digits = number.trim_start_matches('+');
    let mut da = vec![digits.len() as u8, if intl { 0x91 } else { 0x81 }];
    let nibbles: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
    for p in nibbles.chunks(2) {
        da.push(p[0] | p.get(1).copied().unwrap_or(0x0F) << 4);
    }
    let mut out = Vec::with_capacity(total);
    for (i, (alphabet, units)) in chunks.into_iter().enumerate() {
        let concat = total > 1;
        // First octet: SMS-SUBMIT (01), TP-VPF relative (10, bits 4..3), TP-UDHI.
        let first = 0x01 | 0x10 | if concat { 0x40 } else { 0 };
        let mut t = vec![first, 0x00];
        t.extend_from_slice(&da);
        t.push(0x00); // TP-PID: plain SMS
        t.push(if alphabet == Alphabet::Ucs2 {
            0x08
        } else {
            0x00
        });
        // TP-VP relative (TS 23.040 §9.2.3.12.1): 167 = 12 h + 24 × 30 min = 24 h.
        t.push(0xA7);
        let udh: Vec<u8> = if concat {
            vec![0x05, 0x00, 0x03, reference, total as u8, (i + 1) as u8]
        } else {
            Vec::new()
        };
        match alphabet {
            Alphabet::Gsm7 => {
                let header_septets = (udh.len() * 8).div_ceil(7);
                let fill = (header_septets * 7 - udh.len() * 8) as u8;
                t.push((header_septets + units.len()) as u8);
                t.extend_from_slice(&udh);
                t.extend_from_slice(&gsm7::pack(&units, fill));
            }
            _ => {
                t.push((udh.len() + units.len()) as u8);
                t.extend_from_slice(&udh);
                t.extend_from_slice(&units);
            }
        }
        let tpdu_len = t.len();
        out.push(Submit {
            pdu: format!("00{}", hex::encode_upper(&t)),
            tpdu_len,
        });
    }
    Ok(out)
}

/// Split text into chunks of at most `single` units (one message) or `each` units
/// (parts of a concatenated one), never inside a character's units.
fn split(text: &str, single: usize, each: usize, units: impl Fn(char) -> Vec<u8>) -> Vec<Vec<u8>> {
    let per: Vec<Vec<u8>> = text.chars().map(units).collect();
    let all: usize = per.iter().map(Vec::len).sum();
    if all <= single {
        return vec![per.concat()];
    }
    let mut out = vec![Vec::new()];
    for u in per {
        // `out` is never empty: it starts with one chunk and only grows.
        let cur = out.last_mut().map_or(0, |c| c.len());
        if cur + u.len() > each {
            out.push(Vec::new());
        }
        if let Some(c) = out.last_mut() {
            c.extend_from_slice(&u);
        }
    }
    out
}

/// Build an SMS-DELIVER in PDU mode (for the modem emulator and tests): `sender`
/// international (+digits), national digits or a name, GSM 7-bit or UCS2 as the text needs,
/// `part` for a concatenated message's part, `sent_at` Unix seconds in UTC.
pub fn deliver(sender: &str, text: &str, sent_at: i64, part: Option<Part>) -> String {
    // SMSC +31653131313, made up (TS 24.011 §8.2.5.1: length, type, semi-octets).
    let mut p = vec![0x07, 0x91, 0x13, 0x56, 0x13, 0x31, 0x13, 0xF3];
    let udh: Vec<u8> = match part {
        Some(pt) => vec![0x05, 0x00, 0x03, pt.reference as u8, pt.total, pt.seq],
        None => vec![],
    };
    p.push(0x04 | if udh.is_empty() { 0 } else { 0x40 }); // SMS-DELIVER, TP-MMS
    let number = sender.strip_prefix('+').unwrap_or(sender);
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        let digits: Vec<u8> = number.bytes().map(|b| b - b'0').collect();
        p.push(digits.len() as u8);
        p.push(if sender.starts_with('+') { 0x91 } else { 0x81 });
        for d in digits.chunks(2) {
            p.push(d[0] | d.get(1).copied().unwrap_or(0x0F) << 4);
        }
    } else {
        // An alphanumeric sender (TS 23.040 §9.1.2.5, type of number 101): GSM 7-bit
        // packed, its length in semi-octets; at most 11 characters.
        let septets: Vec<u8> = sender
            .chars()
            .take(11)
            .flat_map(|c| gsm7::septets_of(c).unwrap_or(vec![0x3F]))
            .collect();
        let packed = gsm7::pack(&septets, 0);
        p.push((septets.len() * 7).div_ceil(4) as u8);
        p.push(0xD0);
        p.extend_from_slice(&packed);
    }
    p.push(0x00);
    let gsm = gsm7::encode(text);
    p.push(if gsm.is_some() { 0x00 } else { 0x08 });
    p.extend_from_slice(&scts(sent_at));
    match gsm {
        Some(septets) => {
            let header_septets = (udh.len() * 8).div_ceil(7);
            let fill = (header_septets * 7 - udh.len() * 8) as u8;
            p.push((header_septets + septets.len()) as u8);
            p.extend_from_slice(&udh);
            p.extend_from_slice(&gsm7::pack(&septets, fill));
        }
        None => {
            let body = gsm7::encode_ucs2(text);
            p.push((udh.len() + body.len()) as u8);
            p.extend_from_slice(&udh);
            p.extend_from_slice(&body);
        }
    }
    hex::encode_upper(p)
}

/// TP-SCTS of a UTC time, zone +00 (TS 23.040 §9.2.3.11).
fn scts(unix: i64) -> [u8; 7] {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (the inverse of days_from_civil).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let sw = |v: i64| -> u8 {
        let v = v.rem_euclid(100) as u8;
        ((v % 10) << 4) | (v / 10)
    };
    [
        sw(y),
        sw(m),
        sw(d),
        sw(secs / 3600),
        sw(secs / 60 % 60),
        sw(secs % 60),
        0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SMS-DELIVER example published with the GSM 03.40 PDU format tutorials
    /// (dreamfabric.com "SMS PDU", developershome.com): SMSC +27381000015, sender
    /// +27838890001, 1999-03-29 15:16:59 +02:00 (zone 80: 8 quarter hours), "hellohello".
    #[test]
    fn reads_the_published_deliver_example() {
        let d = parse_deliver(
            "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37",
        )
        .unwrap();
        assert_eq!(d.sender, "27838890001");
        assert_eq!(d.text, "hellohello");
        assert_eq!(d.zone_minutes, 120);
        // 1999-03-29 13:16:59 UTC.
        assert_eq!(d.sent_at, 922_713_419);
        assert_eq!(d.part, None);
    }

    #[test]
    fn international_sender_gets_a_plus() {
        let pdu = deliver("+31612345678", "Saldo: 12 MB", 1_700_000_000, None);
        let d = parse_deliver(&pdu).unwrap();
        assert_eq!(d.sender, "+31612345678");
        assert_eq!(d.text, "Saldo: 12 MB");
        assert_eq!(d.sent_at, 1_700_000_000);
    }

    #[test]
    fn alphanumeric_sender_round_trips() {
        for name in ["TopUp", "Vodafone", "MyOperator1"] {
            let d = parse_deliver(&deliver(name, "x", 0, None)).unwrap();
            assert_eq!(d.sender, name);
        }
    }

    #[test]
    fn alphanumeric_sender_is_unpacked() {
        // TP-OA "Vodafone": 8 septets = 7 octets = 14 semi-octets, type D0 (alphanumeric).
        let name = gsm7::pack(&gsm7::encode("Vodafone").unwrap(), 0);
        let mut p = vec![0x00, 0x04, 14, 0xD0];
        p.extend_from_slice(&name);
        p.extend_from_slice(&[0x00, 0x00, 0x42, 0x10, 0x62, 0x21, 0x43, 0x65, 0x00, 0x02]);
        p.extend_from_slice(&gsm7::pack(&gsm7::encode("ok").unwrap(), 0));
        let d = parse_deliver(&hex::encode(p)).unwrap();
        assert_eq!(d.sender, "Vodafone");
        assert_eq!(d.text, "ok");
    }

    #[test]
    fn ucs2_part_with_its_header() {
        let part = Part {
            reference: 42,
            total: 2,
            seq: 1,
        };
        let pdu = deliver("+79161234567", "Баланс: 100 МБ", 1_700_000_000, Some(part));
        let d = parse_deliver(&pdu).unwrap();
        assert_eq!(d.text, "Баланс: 100 МБ");
        assert_eq!(d.part, Some(part));
    }

    #[test]
    fn gsm7_part_after_its_header_keeps_its_first_character() {
        let part = Part {
            reference: 7,
            total: 3,
            seq: 3,
        };
        let d = parse_deliver(&deliver("12345", "Hello world", 0, Some(part))).unwrap();
        assert_eq!(d.text, "Hello world");
        assert_eq!(d.part, Some(part));
        assert_eq!(d.sender, "12345");
    }

    #[test]
    fn sixteen_bit_reference() {
        assert_eq!(
            concat_part(&[0x08, 0x04, 0x12, 0x34, 0x02, 0x01]),
            Some(Part {
                reference: 0x1234,
                total: 2,
                seq: 1
            })
        );
        // Another element first (TS 23.040 §9.2.3.24.4 port addressing), then 00.
        assert_eq!(
            concat_part(&[0x04, 0x02, 0x0B, 0x84, 0x00, 0x03, 0x09, 0x02, 0x02]).map(|p| p.seq),
            Some(2)
        );
        assert_eq!(concat_part(&[0x00, 0x03, 0x01]), None);
    }

    #[test]
    fn truncated_and_wrong_pdus_are_errors() {
        assert!(matches!(parse_deliver("zz"), Err(PduError::Hex(_))));
        assert!(matches!(parse_deliver("0791"), Err(PduError::Short(_))));
        // SMS-SUBMIT (MTI 01) is not what a received message is.
        assert!(matches!(
            parse_deliver("0001000B91"),
            Err(PduError::NotDeliver(1))
        ));
    }

    /// The SMS-SUBMIT of "hellohello" to +27838890001 (the tutorials' example),
    /// here with a relative validity period: first octet 11.
    #[test]
    fn submit_of_a_short_text() {
        let s = submit("+27838890001", "hellohello", 0).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].pdu, "0011000B917238880900F10000A70AE8329BFD4697D9EC37");
        assert_eq!(s[0].tpdu_len, s[0].pdu.len() / 2 - 1);
    }

    #[test]
    fn long_texts_are_split_and_read_back() {
        let text: String = "0123456789".repeat(20); // 200 septets: two parts
        let parts = submit("+4915112345678", &text, 9).unwrap();
        assert_eq!(parts.len(), 2);
        let ucs: String = "Ж".repeat(100); // 100 UCS2 characters: two parts of 67, 33
        assert_eq!(submit("0612345678", &ucs, 1).unwrap().len(), 2);
        // An escape pair is never split: 152 plain septets, then a euro sign (2), then
        // more: the first part holds 152 septets (153 would cut the pair).
        let edge = format!("{}€{}", "a".repeat(152), "x".repeat(10));
        let parts = submit("123", &edge, 1).unwrap();
        assert_eq!(parts.len(), 2);
        // UDL after the 7 header septets: 7 + 152.
        let t = hex::decode(&parts[0].pdu[2..]).unwrap();
        assert_eq!(t[9], 7 + 152);
    }

    #[test]
    fn bad_numbers_are_refused() {
        for n in ["", "+", "12a", "+1234567890123456789012", "1;AT"] {
            assert!(submit(n, "x", 0).is_err(), "{n}");
        }
    }

    #[test]
    fn alphabets_of_the_coding_groups() {
        assert_eq!(sms_alphabet(0x00), Alphabet::Gsm7);
        assert_eq!(sms_alphabet(0x08), Alphabet::Ucs2);
        assert_eq!(sms_alphabet(0x04), Alphabet::Eight);
        assert_eq!(sms_alphabet(0xF4), Alphabet::Eight);
        assert_eq!(ussd_alphabet(0x0F), Alphabet::Gsm7);
        assert_eq!(ussd_alphabet(0x48), Alphabet::Ucs2);
        assert_eq!(ussd_alphabet(0x11), Alphabet::Ucs2);
        assert_eq!(ussd_alphabet(0x44), Alphabet::Eight);
    }

    #[test]
    fn scts_round_trips() {
        for t in [951_782_400, 1_709_210_096, 1_230_768_000, 3_786_825_599] {
            let (back, zone) = timestamp(&scts(t));
            assert_eq!((back, zone), (t, 0), "{t}");
        }
    }
}
