//! A strict DER reader (ITU-T X.690 §10), just enough for X.509 certificates and the RSP
//! structures: one object at a time, with its raw encoding kept (a signature covers the
//! bytes as received, never a re-encoding).
//!
//! Unlike [`crate::card::tlv`] (ISO 7816 BER-TLV, which skips 00/FF padding between
//! objects), nothing is skipped here: a certificate with stray bytes is refused.

use super::RspError;

/// One DER object: its tag (the tag bytes as a big-endian number, e.g. `0x30`, `0xBF36`),
/// its value, and its whole encoding (tag, length and value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Der<'a> {
    pub tag: u32,
    pub value: &'a [u8],
    pub raw: &'a [u8],
}

fn malformed(what: &'static str) -> RspError {
    RspError::Malformed(what)
}

/// The first object of `input` and what follows it.
pub fn read(input: &[u8]) -> Result<(Der<'_>, &[u8]), RspError> {
    let mut at = 0usize;
    let next = |at: &mut usize| -> Result<u8, RspError> {
        let b = *input.get(*at).ok_or(malformed("DER object cut short"))?;
        *at += 1;
        Ok(b)
    };
    let first = next(&mut at)?;
    let mut tag = u32::from(first);
    // X.690 §8.1.2.4: low five bits all set → more tag bytes, bit 8 = another follows.
    // Three bytes cover X.509 and every tag of SGP.22's RSP module (e.g. BF8101 is not used).
    if first & 0x1F == 0x1F {
        loop {
            let b = next(&mut at)?;
            tag = tag << 8 | u32::from(b);
            if b & 0x80 == 0 {
                break;
            }
            if tag > 0xFF_FFFF {
                return Err(malformed("DER tag longer than three bytes"));
            }
        }
    }
    let l0 = next(&mut at)?;
    let len = match l0 {
        0x00..=0x7F => usize::from(l0),
        // X.690 §10.1: DER uses the definite form with the fewest bytes; 80 (indefinite)
        // is BER only. Three length bytes (16 MiB) bound anything we read.
        0x81..=0x83 => {
            let mut n = 0usize;
            for _ in 0..(l0 & 0x7F) {
                n = n << 8 | usize::from(next(&mut at)?);
            }
            n
        }
        _ => return Err(malformed("DER length form not supported")),
    };
    let end = at
        .checked_add(len)
        .filter(|e| *e <= input.len())
        .ok_or(malformed("DER value longer than its container"))?;
    Ok((
        Der {
            tag,
            value: &input[at..end],
            raw: &input[..end],
        },
        &input[end..],
    ))
}

/// Exactly one object filling `input`.
pub fn one(input: &[u8]) -> Result<Der<'_>, RspError> {
    let (d, rest) = read(input)?;
    if rest.is_empty() {
        Ok(d)
    } else {
        Err(malformed("bytes after a DER object"))
    }
}

/// Every object of one level of `input`.
pub fn all(mut input: &[u8]) -> Result<Vec<Der<'_>>, RspError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (d, rest) = read(input)?;
        out.push(d);
        input = rest;
    }
    Ok(out)
}

/// The object at the top of `input`, which must carry `tag`.
pub fn expect<'a>(
    input: &'a [u8],
    tag: u32,
    what: &'static str,
) -> Result<(Der<'a>, &'a [u8]), RspError> {
    let (d, rest) = read(input)?;
    if d.tag == tag {
        Ok((d, rest))
    } else {
        Err(malformed(what))
    }
}

/// Encode one object in DER: the tag's bytes, the shortest definite length, the value.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 6);
    push_header(&mut out, tag, value.len());
    out.extend_from_slice(value);
    out
}

/// The tag and length of an object of `len` value bytes (for the BPP's segments that are
/// sent as a header alone, SGP.22 §2.5.5).
pub fn header(tag: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(7);
    push_header(&mut out, tag, len);
    out
}

fn push_header(out: &mut Vec<u8>, tag: u32, len: usize) {
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes.iter().take_while(|b| **b == 0).count().min(3);
    out.extend_from_slice(&tag_bytes[skip..]);
    out.extend_from_slice(&length(len));
}

/// X.690 §8.1.3: the length octets of `len` in the shortest definite form.
pub fn length(len: usize) -> Vec<u8> {
    match len {
        0..=0x7F => vec![len as u8],
        0x80..=0xFF => vec![0x81, len as u8],
        0x100..=0xFFFF => vec![0x82, (len >> 8) as u8, len as u8],
        _ => vec![0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_long_tags_and_lengths_and_keeps_the_raw_encoding() {
        let body = vec![0xAB; 300];
        let bytes = encode(0xBF36, &body);
        assert_eq!(&bytes[..5], &[0xBF, 0x36, 0x82, 0x01, 0x2C]);
        let d = one(&bytes).unwrap();
        assert_eq!(d.tag, 0xBF36);
        assert_eq!(d.value, &body[..]);
        assert_eq!(d.raw, &bytes[..]);
    }

    #[test]
    fn refuses_cut_values_trailing_bytes_and_indefinite_lengths() {
        assert!(one(&[0x04, 0x03, 1, 2]).is_err());
        assert!(one(&[0x04, 0x01, 1, 2]).is_err());
        assert!(one(&[0x30, 0x80, 0, 0]).is_err());
        assert!(one(&[]).is_err());
    }
}
