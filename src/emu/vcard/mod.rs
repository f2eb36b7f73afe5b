//! simgate's virtual card: a card image (devices/cards/*.toml) brought to life, plugged
//! into vpcd so real pcscd sees it in a virtual reader.
//!
//! `image` is the documented file format, `card` the pure APDU behaviour (no I/O, unit
//! tested in memory), `download` its eUICC's ES10b download side (SGP.22 §3.1.3, with
//! the crypto of src/emu/rsp), `vpcd` the TCP client speaking vpcd's protocol.

pub mod card;
pub mod download;
pub mod image;
pub mod vpcd;

pub use card::VirtualCard;
pub use download::EuiccPki;
pub use image::CardImage;

/// ICCID digits to EF.ICCID bytes (TS 102 221 §13.2: swapped nibbles, F-padded): the
/// printer of `card::Iccid::from_ef`.
pub fn iccid_to_ef(digits: &str) -> Vec<u8> {
    let mut nibbles: Vec<u8> = digits
        .chars()
        .filter_map(|c| c.to_digit(16).map(|d| d as u8))
        .collect();
    nibbles.resize(20, 0xF);
    nibbles.chunks(2).map(|p| p[1] << 4 | p[0]).collect()
}
