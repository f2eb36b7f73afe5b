//! The GSM 7-bit default alphabet and its packing (3GPP TS 23.038 §6.2.1, §6.1.2.1),
//! and UCS2 (§6.2.3, big-endian UTF-16 as every modem sends it). Pure.

/// TS 23.038 §6.2.1: the default alphabet, septet value → character. 0x1B is the
/// escape to the extension table (here as a space: it never stands alone in text).
const BASIC: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', ' ', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// TS 23.038 §6.2.1.1: the extension table (after 0x1B escape).
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0C}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// The escape septet to the extension table (TS 23.038 §6.2.1.1).
const ESC: u8 = 0x1B;

/// Septets → text. An escape followed by a septet outside the extension table is that
/// septet's basic character (TS 23.038 §6.2.1.1 note: "a space if not understood" is
/// for the escape alone; the basic character keeps more of the text).
pub fn decode(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut it = septets.iter().map(|s| s & 0x7F);
    while let Some(s) = it.next() {
        if s == ESC {
            if let Some(e) = it.next() {
                out.push(
                    EXTENSION
                        .iter()
                        .find(|(k, _)| *k == e)
                        .map_or(BASIC[usize::from(e)], |(_, c)| *c),
                );
            }
        } else {
            out.push(BASIC[usize::from(s)]);
        }
    }
    out
}

/// Text → septets; `None` when a character is not in the default alphabet or its
/// extension (the text then goes as UCS2).
pub fn encode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        out.extend_from_slice(&septets_of(c)?);
    }
    Some(out)
}

/// One character's septets: one, or the escape and one (TS 23.038 §6.2.1.1).
pub fn septets_of(c: char) -> Option<Vec<u8>> {
    // 0x1B stands in the table as a space but encodes none: the space is 0x20.
    if let Some(i) = (0u8..128).find(|&i| i != ESC && BASIC[usize::from(i)] == c) {
        return Some(vec![i]);
    }
    EXTENSION
        .iter()
        .find(|(_, e)| *e == c)
        .map(|(k, _)| vec![ESC, *k])
}

/// Pack septets into octets, LSB first (TS 23.038 §6.1.2.1.1), after `fill` zero bits
/// (0..=6: the padding that aligns text after a user data header to a septet boundary,
/// TS 23.040 §9.2.3.24).
pub fn pack(septets: &[u8], fill: u8) -> Vec<u8> {
    let bits = usize::from(fill) + septets.len() * 7;
    let mut out = vec![0u8; bits.div_ceil(8)];
    for (i, s) in septets.iter().enumerate() {
        let at = usize::from(fill) + i * 7;
        let v = u16::from(s & 0x7F) << (at % 8);
        out[at / 8] |= v as u8;
        if let Some(next) = out.get_mut(at / 8 + 1) {
            *next |= (v >> 8) as u8;
        }
    }
    out
}

/// Unpack `count` septets from octets after `fill` bits; fewer when the octets end
/// first (a truncated PDU gives what it holds, never a panic).
pub fn unpack(octets: &[u8], count: usize, fill: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = usize::from(fill) + i * 7;
        let Some(lo) = octets.get(at / 8) else { break };
        let hi = octets.get(at / 8 + 1).copied().unwrap_or(0);
        let v = (u16::from(*lo) | u16::from(hi) << 8) >> (at % 8);
        if at % 8 > 1 && octets.get(at / 8 + 1).is_none() {
            break; // the septet would need bits past the end
        }
        out.push((v & 0x7F) as u8);
    }
    out
}

/// Pack a USSD string (TS 23.038 §6.1.2.3.1): as SMS, but when the last octet would
/// end in 7 spare bits they hold a CR, so a receiver cannot take them for an `@`.
pub fn pack_ussd(septets: &[u8]) -> Vec<u8> {
    let mut s = septets.to_vec();
    if (s.len() * 7) % 8 == 1 {
        s.push(0x0D);
    }
    pack(&s, 0)
}

/// Unpack a USSD string: every septet the octets hold, less the padding of
/// §6.1.2.3.1 — the CR the spec puts in 7 spare bits, or the zero bits (an `@`) some
/// firmwares leave there instead.
pub fn unpack_ussd(octets: &[u8]) -> Vec<u8> {
    let mut s = unpack(octets, octets.len() * 8 / 7, 0);
    if (octets.len() * 8).is_multiple_of(7) && matches!(s.last(), Some(0x0D | 0x00)) {
        s.pop();
    }
    s
}

/// UCS2 (big-endian UTF-16, TS 23.038 §6.2.3) → text; an odd trailing octet or a lone
/// surrogate becomes U+FFFD, never an error: a message is shown as well as it can be.
pub fn decode_ucs2(octets: &[u8]) -> String {
    let units = octets
        .chunks_exact(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]));
    let mut text: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if octets.len() % 2 == 1 {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// Text → UCS2 octets (surrogate pairs for characters beyond the BMP, as UTF-16).
pub fn encode_ucs2(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TS 23.038 §6.1.2.1.1's packing worked through for "hellohello": the example
    /// published with the SMS-DELIVER PDU of src/sms/pdu.rs's tests.
    #[test]
    fn packs_hellohello_as_published() {
        let s = encode("hellohello").unwrap();
        let packed = pack(&s, 0);
        assert_eq!(hex::encode_upper(&packed), "E8329BFD4697D9EC37");
        assert_eq!(decode(&unpack(&packed, 10, 0)), "hellohello");
    }

    /// A USSD string as modems that take packed hex want it (`*100#`, TS 23.038 §6.1.2.3:
    /// USSD packing is the same as SMS's).
    #[test]
    fn packs_a_ussd_code() {
        let packed = pack(&encode("*100#").unwrap(), 0);
        assert_eq!(hex::encode_upper(&packed), "AA180C3602");
        assert_eq!(decode(&unpack(&packed, 5, 0)), "*100#");
    }

    /// TS 23.038 §6.1.2.3.1: 7 characters leave 7 spare bits, which carry a CR.
    #[test]
    fn ussd_padding_is_a_cr_and_is_dropped() {
        let s = encode("1234567").unwrap();
        let packed = pack_ussd(&s);
        assert_eq!(packed.len(), 7);
        assert_eq!(packed[6] >> 1, 0x0D);
        assert_eq!(decode(&unpack_ussd(&packed)), "1234567");
        // Zero padding, as some firmwares send it: no trailing '@'.
        assert_eq!(decode(&unpack_ussd(&pack(&s, 0))), "1234567");
        // A string that fills its octets exactly is all text.
        let eight = encode("12345678").unwrap();
        assert_eq!(decode(&unpack_ussd(&pack_ussd(&eight))), "12345678");
    }

    #[test]
    fn eight_septets_fill_seven_octets() {
        // 8 × 7 bits = 56 bits: the 8th septet sits in the top 7 bits of octet 7.
        let s = encode("12345678").unwrap();
        let packed = pack(&s, 0);
        assert_eq!(packed.len(), 7);
        assert_eq!(decode(&unpack(&packed, 8, 0)), "12345678");
    }

    #[test]
    fn extension_characters_take_an_escape() {
        let s = encode("€[x]").unwrap();
        assert_eq!(s, vec![0x1B, 0x65, 0x1B, 0x3C, 0x78, 0x1B, 0x3E]);
        assert_eq!(decode(&s), "€[x]");
    }

    #[test]
    fn fill_bits_shift_the_text() {
        // After a 6-octet UDH: 48 bits, one fill bit to reach 49 = 7 septets.
        let s = encode("Hi").unwrap();
        let packed = pack(&s, 1);
        assert_eq!(decode(&unpack(&packed, 2, 1)), "Hi");
    }

    #[test]
    fn space_is_0x20_not_the_escape() {
        assert_eq!(encode("a b").unwrap(), vec![0x61, 0x20, 0x62]);
    }

    #[test]
    fn characters_outside_the_alphabet_are_not_gsm7() {
        assert!(encode("Привет").is_none());
        assert!(encode("Grüße").is_some()); // ü and ß are in the basic table
    }

    #[test]
    fn ucs2_round_trip_with_a_surrogate_pair() {
        let t = "Баланс 5 € 😀";
        assert_eq!(decode_ucs2(&encode_ucs2(t)), t);
        // An odd octet: shown, not refused.
        assert_eq!(decode_ucs2(&[0x00, 0x41, 0x00]), "A\u{FFFD}");
    }

    #[test]
    fn unpack_of_a_short_buffer_stops() {
        assert_eq!(unpack(&[0xE8], 5, 0).len(), 1);
        assert!(unpack(&[], 5, 3).is_empty());
    }
}
