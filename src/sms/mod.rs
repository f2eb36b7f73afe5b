//! SMS and USSD text as the 3GPP specifications encode it: the GSM 7-bit alphabet and
//! UCS2 (`gsm7`, TS 23.038), PDUs (`pdu`, TS 23.040 with TS 27.005's PDU mode), and
//! concatenated messages put back together (`concat`). Pure: no I/O, nothing that
//! panics on a modem's bytes (fuzzed: fuzz/fuzz_targets/sms_pdu.rs).

pub mod concat;
pub mod gsm7;
pub mod pdu;

pub use concat::{reassemble, Message, Stored};
pub use pdu::{parse_deliver, Deliver, Part, PduError};
