//! BER-TLV (ISO/IEC 8825-1, as profiled by ISO/IEC 7816-4 §5.2 and used by the ES10
//! functions of GSMA SGP.22 §5.7). Pure: bytes in, borrowed TLVs out.
//!
//! Only what the card engine needs: tags of one to three bytes, definite lengths of up to
//! three bytes, and a walk over the objects of one level.

use nom::bytes::complete::take;
use nom::number::complete::u8 as byte;
use nom::IResult;
use nom::Parser;

/// One data object: its tag (the tag bytes as a big-endian number, e.g. `0xBF3E`) and
/// its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u32,
    pub value: &'a [u8],
}

/// Bytes that are not a sequence of BER-TLV objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not BER-TLV at byte {offset}")]
pub struct TlvError {
    pub offset: usize,
}

impl Tlv<'_> {
    /// ISO/IEC 8825-1 §8.1.2.5: bit 6 of the first tag byte marks a constructed object.
    pub fn is_constructed(&self) -> bool {
        let first = self.tag.to_be_bytes().into_iter().find(|b| *b != 0);
        first.is_some_and(|b| b & 0x20 != 0)
    }
}

fn tag(input: &[u8]) -> IResult<&[u8], u32> {
    let (mut rest, first) = byte(input)?;
    let mut tag = u32::from(first);
    // ISO/IEC 8825-1 §8.1.2.4: low five bits all set → the tag continues; in the next
    // bytes bit 8 says "another byte follows". Three bytes cover every tag of ISO 7816
    // and SGP.22.
    if first & 0x1F == 0x1F {
        for _ in 0..2 {
            let (r, b) = byte(rest)?;
            rest = r;
            tag = tag << 8 | u32::from(b);
            if b & 0x80 == 0 {
                return Ok((rest, tag));
            }
        }
        return Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::TooLarge,
        )));
    }
    Ok((rest, tag))
}

fn length(input: &[u8]) -> IResult<&[u8], usize> {
    let (rest, first) = byte(input)?;
    match first {
        // ISO/IEC 8825-1 §8.1.3.4: short form.
        0x00..=0x7F => Ok((rest, usize::from(first))),
        // §8.1.3.5: long form, 81 / 82 / 83 followed by 1-3 length bytes.
        0x81..=0x83 => {
            let (rest, bytes) = take(usize::from(first & 0x7F))(rest)?;
            Ok((
                rest,
                bytes.iter().fold(0usize, |n, b| n << 8 | usize::from(*b)),
            ))
        }
        // 80 (indefinite) is not allowed in ISO 7816 BER-TLV; longer lengths never occur.
        _ => Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::LengthValue,
        ))),
    }
}

fn tlv(input: &[u8]) -> IResult<&[u8], Tlv<'_>> {
    let (rest, (tag, len)) = (tag, length).parse(input)?;
    let (rest, value) = take(len)(rest)?;
    Ok((rest, Tlv { tag, value }))
}

/// Every object of one level of `data`. Padding bytes 00 and FF between objects (ISO/IEC
/// 7816-4 §5.2.2) are skipped.
pub fn parse(data: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    Ok(parse_whole(data)?.into_iter().map(|(t, _)| t).collect())
}

/// Every object of one level of `data`, each with its whole encoding (tag, length and
/// value): for relaying objects unchanged, as an LPA relays the bound profile package's
/// parts to the eUICC (SGP.22 §2.5.5).
pub fn parse_whole(data: &[u8]) -> Result<Vec<(Tlv<'_>, &[u8])>, TlvError> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&first, tail)) = rest.split_first() {
        if first == 0x00 || first == 0xFF {
            rest = tail;
            continue;
        }
        match tlv(rest) {
            Ok((r, t)) => {
                out.push((t, &rest[..rest.len() - r.len()]));
                rest = r;
            }
            Err(_) => {
                return Err(TlvError {
                    offset: data.len() - rest.len(),
                })
            }
        }
    }
    Ok(out)
}

/// Encode one object (the printer of [`parse`]): the tag's bytes without leading zero
/// bytes, the length in its shortest definite form (ISO/IEC 8825-1 §8.1.3: short form
/// up to 127, else 81/82/83 and one to three bytes), then the value.
pub fn encode(tag: u32, value: &[u8]) -> Vec<u8> {
    let tag_bytes = tag.to_be_bytes();
    let skip = tag_bytes.iter().take_while(|b| **b == 0).count().min(3);
    let mut out = tag_bytes[skip..].to_vec();
    let len = value.len();
    let len_bytes = (len as u32).to_be_bytes();
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, len_bytes[2], len_bytes[3]]),
        _ => out.extend_from_slice(&[0x83, len_bytes[1], len_bytes[2], len_bytes[3]]),
    }
    out.extend_from_slice(value);
    out
}

/// The value of the first object tagged `tag` on the top level of `data`.
pub fn find(data: &[u8], tag: u32) -> Result<Option<&[u8]>, TlvError> {
    Ok(parse(data)?
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value))
}

/// Follow a path of tags down through constructed objects: `find_path(d, &[0xBF3E,
/// 0x5A])` is the 5A inside the BF3E.
pub fn find_path<'a>(data: &'a [u8], path: &[u32]) -> Result<Option<&'a [u8]>, TlvError> {
    let mut here = data;
    for t in path {
        match find(here, *t)? {
            Some(v) => here = v,
            None => return Ok(None),
        }
    }
    Ok(Some(here))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_byte_tag_and_nested_objects_parse() {
        // GetEUICCData's answer shape (SGP.22 §5.7.20): BF3E { 5A <EID> }.
        let eid = hex::decode("89049032123451234512345678901235").unwrap();
        let mut data = vec![0xBF, 0x3E, 0x12, 0x5A, 0x10];
        data.extend_from_slice(&eid);
        assert_eq!(
            find_path(&data, &[0xBF3E, 0x5A]).unwrap(),
            Some(eid.as_slice())
        );
        let top = parse(&data).unwrap();
        assert!(top[0].is_constructed());
    }

    #[test]
    fn long_form_length_and_padding() {
        let mut data = vec![0xFF, 0x00, 0x61, 0x81, 0x80];
        data.extend(std::iter::repeat_n(0xAA, 0x80));
        let top = parse(&data).unwrap();
        assert_eq!((top.len(), top[0].tag, top[0].value.len()), (1, 0x61, 128));
    }

    #[test]
    fn truncated_value_is_an_error_with_its_offset() {
        assert_eq!(parse(&[0x5A, 0x05, 0x01]), Err(TlvError { offset: 0 }));
        assert_eq!(
            parse(&[0x80, 0x00, 0x5A, 0x05]),
            Err(TlvError { offset: 2 })
        );
    }

    #[test]
    fn efdir_record_vector_yields_the_usim_aid() {
        // tests/fixtures/card_vectors.jsonl: pySim's EF.DIR record (TS 102 221 §13.1).
        let rec = hex::decode("61294f10a0000000871002ffffffff890709000050055553696d31730ea00c80011781025f608203454150").unwrap();
        let aid = find_path(&rec, &[0x61, 0x4F]).unwrap().unwrap();
        assert_eq!(hex::encode_upper(aid), "A0000000871002FFFFFFFF8907090000");
    }
}
