//! simgate: identify SIMs in PC/SC readers and AT modems, and keep them in sync with a
//! SIM-management platform over MQTT.
//!
//! See ARCHITECTURE.md for the map of this crate.

// The lint wall. `unsafe` is denied: nothing here needs it (socket options go through
// socket2, PC/SC through the pcsc crate).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms, unused_must_use)]
#![warn(
    missing_debug_implementations,
    unreachable_pub,
    clippy::dbg_macro,
    clippy::todo,
    // stdout only through cli's `out!`/`outln!`, which end quietly on a closed pipe.
    clippy::print_stdout
)]

pub mod agent;
pub mod at;
pub mod away;
pub mod backoff;
pub mod card;
pub mod cli;
pub mod config;
pub mod contract;
pub mod daemon;
#[cfg(feature = "emulators")]
pub mod emu;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod link;
pub mod logging;
pub mod metrics;
pub mod modem;
pub mod notify;
pub mod observe;
pub mod operators;
pub mod pins;
pub mod reader;
pub mod rsp;
pub mod rules;
#[cfg(feature = "schema")]
pub mod schema;
pub mod sim;
pub mod sms;
pub mod station;
pub mod store;
pub mod time;
pub mod toml_error;
