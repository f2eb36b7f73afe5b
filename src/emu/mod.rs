//! Devices for tests and demos, behind the cargo feature `emulators` (on by default, off
//! in the gateway package): nothing here ships to a gateway that does not ask for it.
//!
//! - [`vcard`]: simgate's virtual card, a card image (devices/cards/*.toml) plugged into
//!   vpcd so the real pcscd sees it in a virtual reader.
//! - [`modem`]: a modem on a pty, driven by a devices/modems profile.
//! - [`pin`]: one model of a SIM's PIN1 and PUK1, for both.
//! - [`transcript`]: recorded modem sessions the emulator replays.
//! - [`rsp`]: the RSP crypto core (SGP.22) of the test SM-DP+ and the virtual eUICC.
//! - [`smdp`]: a test SM-DP+ speaking ES9+ over HTTPS (`simgate emulate smdp`).

pub mod messaging;
pub mod modem;
pub mod pin;
pub mod rsp;
pub mod smdp;
pub mod transcript;
pub mod vcard;
