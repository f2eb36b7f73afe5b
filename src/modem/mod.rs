//! Cellular modems behind AT ports.
//!
//! - [`profile`]: modem families as data (devices/modems/*.toml), one checked schema.
//! - [`reply`]: pure interpretation of TS 27.007 replies into typed values.
//! - [`identify`]: the full picture of a modem and its SIM in as few command lines as
//!   compound lines allow (budget ≤ 12), and the one-line steady-state status.
//! - [`actions`]: suspend/resume data, radio off/on, slot switch — each read back.
//! - [`pin`]: PIN operations in AT (+CPIN, +CLCK="SC", +CPWD), and the configured
//!   PIN's one attempt per boot.
//! - [`ussd`]: USSD sessions (+CUSD), replies decoded whatever shape the modem gives.
//! - [`sms`]: SMS in PDU mode: stored messages listed and deleted, messages sent.
//! - [`supervisor`]: one task per port; follows SIM swaps (URC or a cheap poll),
//!   samples usage into the store, applies actions, reattaches vanished or silent
//!   modems. Emits [`supervisor::ModemEvent`]s.
//!
//! The modem emulator for tests and demos lives in src/emu; the subcommands in src/cli.
//!
//! Invariants: nothing here builds command text from outside values except through
//! `at::quote` or numbers; nothing here knows sled (usage goes through `store::usage`);
//! model-specific facts live in devices/modems, not in code — the exceptions are the
//! emulator's imitation of vendor reply shapes and Quectel's `+CCHO:` prefix, both
//! tolerated by the parser for every family.

pub mod actions;
pub mod channels;
pub mod esim;
pub mod identify;
pub mod pin;
pub mod profile;
pub mod reply;
pub mod sms;
pub mod supervisor;
pub mod sysfs;
pub mod ussd;

pub use profile::{Profile, ProfileError, Profiles};
