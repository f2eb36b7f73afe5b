//! `simgate config template|check|path`.

use crate::config::{self, Config, ConfigError};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print a commented configuration with every key and its default.
    Template,
    /// Validate a configuration file (default: --config, SIMGATE_CONFIG, or
    /// /etc/simgate/simgate.toml).
    Check { file: Option<PathBuf> },
    /// Say which configuration file the other commands read.
    Path,
}

impl ConfigCmd {
    pub(super) fn run(self, given: Option<&Path>) -> ExitCode {
        match self {
            ConfigCmd::Template => {
                print!("{}", config::TEMPLATE);
                ExitCode::SUCCESS
            }
            ConfigCmd::Path => {
                match super::config_file(given) {
                    Some(f) => println!("{}", f.display()),
                    None => println!(
                        "none: {} does not exist and no --config or SIMGATE_CONFIG was given; built-in defaults",
                        super::DEFAULT_CONFIG
                    ),
                }
                ExitCode::SUCCESS
            }
            ConfigCmd::Check { file } => {
                let Some(file) = file.or_else(|| super::config_file(given)) else {
                    eprintln!(
                        "simgate: config check: no file given and {} does not exist",
                        super::DEFAULT_CONFIG
                    );
                    return ExitCode::from(2);
                };
                check_file(&file)
            }
        }
    }
}

/// `config check`: "FILE: ok", or the error naming file, line and key (exit 2).
fn check_file(file: &Path) -> ExitCode {
    match check(file) {
        Ok(()) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// Load and validate a file the way `run` will, override profiles included.
fn check(file: &Path) -> Result<(), ConfigError> {
    let c = Config::load(file)?;
    if !c.modems.pins_file.as_os_str().is_empty() {
        // Loaded as `run` will (mode, owner, entries); its values never shown.
        crate::pins::Pins::load(&c.modems.pins_file).map_err(|e| ConfigError::Invalid {
            origin: file.display().to_string(),
            key: "modems.pins_file",
            why: e.to_string(),
        })?;
    }
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
