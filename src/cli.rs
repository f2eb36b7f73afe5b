//! Command-line interface. (Minimal wiring of the modem subcommands on branch `modem`;
//! the lead's full `Command` enum replaces this on merge.)

use crate::modem::cli::{EmulateModemArgs, ModemArgs, ModemsArgs};

#[derive(Debug, clap::Parser)]
#[command(name = "simgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// One modem: `simgate modem info --port PATH [--json]`.
    Modem(ModemArgs),
    /// Find and identify modems.
    Modems(ModemsArgs),
    /// Emulators for tests and demos.
    Emulate(EmulateArgs),
}

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    #[command(subcommand)]
    pub what: Emulate,
}

#[derive(Debug, clap::Subcommand)]
pub enum Emulate {
    /// A modem on a pty: `simgate emulate modem --profile NAME`.
    Modem(EmulateModemArgs),
}
