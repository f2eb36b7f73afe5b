//! simgate's virtual card: a card image (devices/cards/*.toml) brought to life, plugged
//! into vpcd so real pcscd sees it in a virtual reader.
//!
//! `image` is the documented file format, `card` the pure APDU behaviour (no I/O, unit
//! tested in memory), `vpcd` the TCP client speaking vpcd's protocol.

pub mod card;
pub mod image;
pub mod vpcd;

pub use card::VirtualCard;
pub use image::CardImage;
