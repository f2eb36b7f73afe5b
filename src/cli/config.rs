//! `simgate config template|check`.

use crate::config::{self, Config, ConfigError};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print a commented configuration with every key and its default.
    Template,
    /// Validate a configuration file.
    Check { file: PathBuf },
}

impl ConfigCmd {
    pub(super) fn run(self) -> ExitCode {
        match self {
            ConfigCmd::Template => {
                print!("{}", config::TEMPLATE);
                ExitCode::SUCCESS
            }
            ConfigCmd::Check { file } => match check(&file) {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("simgate: {e}");
                    ExitCode::from(2)
                }
            },
        }
    }
}

/// Load and validate a file the way `run` will, override profiles included.
fn check(file: &Path) -> Result<(), ConfigError> {
    let c = Config::load(file)?;
    if c.modems.profile_dir.as_os_str().is_empty() {
        return Ok(());
    }
    // An override directory is part of the configuration: check its profiles the same
    // way `run` will load them.
    crate::modem::profile::Profiles::with_overrides(&c.modems.profile_dir)
        .map(drop)
        .map_err(|e| ConfigError::Invalid {
            origin: file.display().to_string(),
            key: "modems.profile_dir",
            why: e.to_string(),
        })
}
