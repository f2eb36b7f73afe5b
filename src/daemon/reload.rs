//! A reload (SIGHUP; `systemctl reload simgate`, the unit's `ExecReload=`): the
//! configuration read again the way `simgate run` read it at start (files, drop-ins,
//! then the same flags and environment over them), the keys of
//! `config::LIVE_KEYS` applied to what comes next (the next card read, the next guided
//! swap), every other key that changed named in the log as needing a restart. A
//! configuration that no longer loads is said and changes nothing.

use crate::config::{Config, ConfigError};
use std::sync::Arc;

/// How the configuration is read again: the CLI's loader, with its flags.
pub type Load = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// The configuration as the daemon runs it, and how to read it again.
#[derive(Clone)]
pub struct Reloader {
    pub(crate) load: Load,
    pub(crate) current: Config,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The configuration's own Debug keeps its secrets out.
        f.debug_struct("Reloader")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(load: Load, current: Config) -> Reloader {
        Reloader { load, current }
    }

    /// Read the configuration again; Some(the new one) when a live key changed (the
    /// caller applies it), None otherwise. Logs what was applied and what needs a
    /// restart.
    pub(crate) fn reload(&mut self) -> Option<Config> {
        let new = match (self.load)() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "configuration not reloaded: it does not load; the running one stays");
                return None;
            }
        };
        let changed = crate::config::changed_keys(&self.current, &new);
        let (live, restart): (Vec<&String>, Vec<&String>) = changed
            .iter()
            .partition(|k| crate::config::LIVE_KEYS.contains(&k.as_str()));
        if !restart.is_empty() {
            let keys: Vec<&str> = restart.iter().map(|k| k.as_str()).collect();
            tracing::warn!(keys = %keys.join(", "), "configuration reloaded: these keys changed and need a restart (systemctl restart simgate); the running values stay");
        }
        if live.is_empty() {
            tracing::info!("configuration reloaded: nothing to apply");
            return None;
        }
        let keys: Vec<&str> = live.iter().map(|k| k.as_str()).collect();
        tracing::info!(keys = %keys.join(", "), "configuration reloaded: applied");
        // Only the live keys move; the others keep what the daemon started with.
        let mut applied = self.current.clone();
        applied.readers.card_timeout_ms = new.readers.card_timeout_ms;
        applied.readers.vendor_isdr_aids = new.readers.vendor_isdr_aids;
        applied.modems.swap_register_secs = new.modems.swap_register_secs;
        applied.modems.swap_replace_secs = new.modems.swap_replace_secs;
        self.current = applied.clone();
        Some(applied)
    }
}
