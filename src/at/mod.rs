//! The AT protocol (ITU-T V.250, 3GPP TS 27.007): a pure streaming parser
//! ([`parser`]), checked command text ([`command`]) and a connection that owns the port
//! and the buffer ([`conn`]). Nothing here knows modem models; that is src/modem.

pub mod command;
pub mod conn;
pub mod holder;
pub mod parser;

pub use command::{quote, AtCommand, CommandError};
pub use conn::{
    connect, open, AtConnection, AtError, AtResult, Concat, Grouped, Port, Refusal, Reply, Stats,
};
pub use parser::{ErrorCode, Field, Final};
