//! Card logic: APDUs, status words, ICCID decoding and card identification.
//!
//! Everything here is pure and transport-generic: a card is anything implementing
//! [`CardTransport`]. PC/SC (src/reader) is one transport; unit tests use the virtual
//! card (src/emu/vcard) in memory. Nothing in this module does I/O of its own.

pub mod apdu;
pub mod atr;
pub mod es10;
pub mod es10b;
pub mod esim;
pub mod euicc;
pub mod iccid;
pub mod identify;
pub mod pin;
pub mod pin_command;
pub mod subscriber;
pub mod tlv;

pub use apdu::{Apdu, Response, StatusWord};
pub use iccid::Iccid;
pub use identify::{identify, Euicc, Identity, Options};

crate::sim::wire_words! {
    /// Which command set the card speaks.
    pub enum CardKind {
        /// A UICC (ETSI TS 102 221), CLA 00.
        Uicc = "uicc",
        /// A legacy GSM SIM (3GPP TS 51.011), CLA A0.
        Gsm = "gsm",
    }
}

/// Failures talking to a card. `Refused` is the card saying no (a status word); the other
/// variants are the link failing — retries are decided on these variants, never on text.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The card answered with an error status word to a command we needed.
    #[error("card refused {command}: status {sw}")]
    Refused {
        command: &'static str,
        sw: StatusWord,
    },
    /// The card's answer could not be understood.
    #[error("malformed answer to {command}: {detail}")]
    Malformed {
        command: &'static str,
        detail: String,
    },
    /// The card was removed during the exchange.
    #[error("card removed during the exchange")]
    Removed,
    /// Another application reset the card during the exchange: reconnect and retry.
    #[error("card reset by another application during the exchange")]
    Reset,
    /// The card did not answer in time.
    #[error("card did not answer within {0:?} (mute or broken card)")]
    Timeout(std::time::Duration),
    /// The transport itself failed (reader gone, pcscd gone ...).
    #[error("transport failed: {0}")]
    Transport(String),
}

/// One command APDU in, the raw response (data followed by SW1 SW2) out.
///
/// Implementations do no retries and no T=0 handling of their own: [`apdu::Channel`]
/// does that, once, for every transport.
pub trait CardTransport {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError>;
}

impl<T: CardTransport + ?Sized> CardTransport for &mut T {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        (**self).transmit(command)
    }
}
