//! Cellular modems: families as data ([`profile`]), identification of the modem and its
//! SIM, usage, hardware actions, the supervisor that keeps a port attached, and the
//! emulator the tests and the demo drive.

pub mod actions;
pub mod cli;
pub mod emulator;
pub mod identify;
pub mod profile;
pub mod reply;
pub mod supervisor;
pub mod transcript;

pub use profile::{Profile, ProfileError, Profiles};
