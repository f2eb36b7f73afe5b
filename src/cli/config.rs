//! `simgate config template|check|path`.

use crate::config::{self, Config, ConfigError};
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the commented configuration: every key commented out with its default.
    Template,
    /// Validate a configuration file (default: --config, SIMGATE_CONFIG, or
    /// /etc/simgate/simgate.toml), then list every key with its value and where it
    /// comes from: the file (and line), an environment variable, a secret's own file,
    /// or the default.
    Check { file: Option<PathBuf> },
    /// Say which configuration file the other commands read, then its drop-ins
    /// (conf.d/*.toml beside it, in the order they apply).
    Path,
}

impl ConfigCmd {
    pub(super) fn run(self, given: Option<&Path>) -> ExitCode {
        match self {
            ConfigCmd::Template => {
                out!("{}", config::TEMPLATE);
                ExitCode::SUCCESS
            }
            ConfigCmd::Path => {
                match super::config_file(given) {
                    Some(f) => {
                        outln!("{}", f.display());
                        // Then its drop-ins, in the order they apply.
                        for d in config::drop_ins(&f).unwrap_or_default() {
                            outln!("{}", d.display());
                        }
                    }
                    None => outln!(
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

/// `config check`: "FILE: ok" (and each drop-in read), then every key with its value
/// and origin; or the error naming file, line and key (exit 2).
fn check_file(file: &Path) -> ExitCode {
    match check(file) {
        Ok(layers) => {
            outln!("{}: ok", file.display());
            for (name, _, _) in layers.files.iter().skip(1) {
                outln!("{name}: ok (drop-in)");
            }
            for line in origins(&layers, |k| std::env::var(k).ok()) {
                outln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simgate: {e}");
            ExitCode::from(2)
        }
    }
}

/// Load and validate a file and its drop-ins the way `run` will, override profiles
/// included.
fn check(file: &Path) -> Result<config::Layers, ConfigError> {
    let layers = config::Layers::read(file)?;
    let c = Config::from_layers(&layers)?;
    if !c.modems.pins_file.as_os_str().is_empty() {
        // Loaded as `run` will (mode, owner, entries); its values never shown.
        crate::pins::Pins::load(&c.modems.pins_file).map_err(|e| ConfigError::Invalid {
            origin: file.display().to_string(),
            key: "modems.pins_file",
            why: e.to_string(),
        })?;
    }
    if c.modems.profile_dir.as_os_str().is_empty() {
        return Ok(layers);
    }
    // An override directory is part of the configuration: check its profiles the same
    // way `run` will load them.
    crate::modem::profile::Profiles::with_overrides(&c.modems.profile_dir)
        .map(|_| layers)
        .map_err(|e| ConfigError::Invalid {
            origin: file.display().to_string(),
            key: "modems.profile_dir",
            why: e.to_string(),
        })
}

/// The environment variables that set a key for `run` and `station` (their flags'
/// `env`), by key.
const ENV_KEYS: &[(&str, &str)] = &[
    ("agent.id", "SIMGATE_AGENT_ID"),
    ("agent.state_dir", "SIMGATE_STATE_DIR"),
    ("broker.url", "SIMGATE_BROKER"),
    ("readers.names", "SIMGATE_READERS"),
    ("modems.ports", "SIMGATE_MODEMS"),
    ("http.listen", "SIMGATE_HTTP"),
    ("http.metrics", "SIMGATE_METRICS"),
    ("log.format", "SIMGATE_LOG_FORMAT"),
];

/// Keys whose values are never printed.
const SECRET_KEYS: &[(&str, &str)] = &[
    ("broker.password", "broker.password_file"),
    ("http.token", "http.token_file"),
];

/// One line per key of the template (every key there is): `key = value  origin`, the
/// origin being `FILE:LINE` (the file or drop-in that set it last), `env NAME`, the
/// secret's own file, or `default`. `env` looks a variable up (the process's
/// environment; a map in the tests).
fn origins(layers: &config::Layers, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let Ok(template) = config::template_keys().parse::<toml::Table>() else {
        return Vec::new();
    };
    let user = layers.merged();
    let mut out = Vec::new();
    for (section, keys) in &template {
        let Some(keys) = keys.as_table() else {
            continue;
        };
        for (key, default) in keys {
            let name = format!("{section}.{key}");
            let given = user.get(section).and_then(|s| s.get(key));
            let env_name = ENV_KEYS.iter().find(|(k, _)| *k == name).map(|(_, e)| *e);
            let from_env = env_name.and_then(|e| Some((e, env(e)?)));
            let (value, origin) = if let Some((e, v)) = from_env {
                (format!("{v:?}"), format!("env {e} (over the file)"))
            } else if let Some(v) = given {
                (v.to_string(), layers.origin_of(&name).unwrap_or_default())
            } else {
                (default.to_string(), "default".to_string())
            };
            let line = match SECRET_KEYS.iter().find(|(k, _)| *k == name) {
                Some((_, file_key)) => {
                    let (fs, fk) = file_key.split_once('.').unwrap_or_default();
                    let path = user
                        .get(fs)
                        .and_then(|s| s.get(fk))
                        .and_then(|v| v.as_str())
                        .filter(|p| !p.is_empty());
                    let set = given
                        .and_then(|v| v.as_str())
                        .is_some_and(|v| !v.is_empty());
                    match (set, path) {
                        (true, _) => format!("{name} = <secret>  {origin} (readable by whoever reads this file: better in {file_key})"),
                        (false, Some(p)) => format!(
                            "{name} = <secret>  {p} ({file_key}{})",
                            if std::fs::File::open(p).is_ok() { "" } else { "; not readable by this user: only run and station read it" }
                        ),
                        (false, None) => format!("{name} = <none>  {origin}"),
                    }
                }
                None => format!("{name} = {value}  {origin}"),
            };
            out.push(format!("  {line}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_check_says_where_each_value_came_from_and_never_prints_a_secret() {
        let text = "[agent]\nid = \"gw-1\"\n\n[broker]\nurl = \"mqtt://b:1883\"\npassword = \"hunter2hunter2\"\n";
        let drop_in = "[broker]\nkeepalive_secs = 60\n";
        let env = |k: &str| (k == "SIMGATE_STATE_DIR").then(|| "/srv/sg".to_string());
        let layers = config::Layers {
            files: vec![
                ("f.toml".into(), text.into(), text.parse().unwrap()),
                (
                    "conf.d/50-x.toml".into(),
                    drop_in.into(),
                    drop_in.parse().unwrap(),
                ),
            ],
        };
        let lines = origins(&layers, env);
        let find = |k: &str| {
            lines
                .iter()
                .find(|l| l.trim_start().starts_with(&format!("{k} = ")))
                .unwrap_or_else(|| panic!("no {k}: {lines:#?}"))
                .clone()
        };
        assert!(
            find("agent.id").ends_with("\"gw-1\"  f.toml:2"),
            "{}",
            find("agent.id")
        );
        assert!(find("broker.url").ends_with("f.toml:5"));
        assert!(find("agent.state_dir").contains("env SIMGATE_STATE_DIR"));
        assert!(find("broker.keepalive_secs").ends_with("60  conf.d/50-x.toml:2"));
        assert!(find("broker.inflight_window").ends_with("16  default"));
        let pw = find("broker.password");
        assert!(!pw.contains("hunter2"), "{pw}");
        assert!(pw.contains("better in broker.password_file"), "{pw}");
        assert!(lines.iter().all(|l| !l.contains("hunter2")));
    }
}
