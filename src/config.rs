//! Configuration: one schema, one commented template (config/simgate.toml, printed by
//! `simgate config template`), errors that name the file, the key and why.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The commented template, byte for byte the shipped config/simgate.toml: every key
/// commented out with its default (`#key = default`), so an unset key takes the
/// running simgate's default.
pub const TEMPLATE: &str = include_str!("../config/simgate.toml");

/// The template with every key set: each `#key = value` line uncommented (a key's line
/// starts with `#` and the key; prose comments start with `# `). Every key there is,
/// with its default.
pub fn template_keys() -> String {
    TEMPLATE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The keys a running daemon takes from a reload (SIGHUP, `systemctl reload simgate`)
/// without a restart: they are read afresh for each card read or guided swap. Any other
/// key changed is said in the log to need a restart.
pub const LIVE_KEYS: &[&str] = &[
    "readers.card_timeout_ms",
    "readers.vendor_isdr_aids",
    "modems.swap_register_secs",
    "modems.swap_replace_secs",
];

/// The keys ("section.key") whose values differ between two configurations.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let table = |c: &Config| match toml::Value::try_from(c) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let (old, new) = (table(old), table(new));
    let mut out = Vec::new();
    for (section, keys) in &new {
        let (Some(keys), before) = (keys.as_table(), old.get(section).and_then(|s| s.as_table()))
        else {
            continue;
        };
        for (key, value) in keys {
            if before.and_then(|b| b.get(key)) != Some(value) {
                out.push(format!("{section}.{key}"));
            }
        }
    }
    out
}

/// The directory of drop-ins beside a configuration file: `conf.d/` in its directory
/// (/etc/simgate/conf.d for /etc/simgate/simgate.toml).
pub fn drop_in_dir(file: &Path) -> PathBuf {
    file.parent()
        .map_or_else(|| PathBuf::from("conf.d"), |d| d.join("conf.d"))
}

/// The drop-ins of `file`: the `*.toml` files of its [`drop_in_dir`], in name order
/// (bytewise, as `ls` in the C locale: 10-a before 50-b before 90-z). No directory: none.
pub fn drop_ins(file: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = drop_in_dir(file);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                file: dir.display().to_string(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| ConfigError::Read {
                file: dir.display().to_string(),
                source,
            })?
            .path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."));
        if !hidden && path.extension().is_some_and(|x| x == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// A configuration's files in the order they apply: the main file, then its drop-ins.
/// Each is (its name as shown in messages, its text, its TOML table).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub files: Vec<(String, String, toml::Table)>,
}

impl Layers {
    /// Read `file` and its drop-ins, each checked on its own against the schema (an
    /// unknown key or a wrong type is named with its own file and line).
    pub fn read(file: &Path) -> Result<Layers, ConfigError> {
        let mut layers = Layers::default();
        for path in std::iter::once(file.to_path_buf()).chain(drop_ins(file)?) {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                file: name.clone(),
                source,
            })?;
            Config::parse(&text, &name)?;
            let table = text.parse::<toml::Table>().map_err(|e| {
                let (file, message) = crate::toml_error::toml_error_at(&e, &text, &name);
                ConfigError::Parse { file, message }
            })?;
            layers.files.push((name, text, table));
        }
        Ok(layers)
    }

    /// The files, section by section: a later file's key replaces an earlier one's
    /// (an array or an inline table whole, as systemd's drop-ins replace a setting).
    pub fn merged(&self) -> toml::Table {
        let mut out = toml::Table::new();
        for (_, _, table) in &self.files {
            for (section, keys) in table {
                match (out.get_mut(section), keys) {
                    (Some(toml::Value::Table(have)), toml::Value::Table(keys)) => {
                        have.extend(keys.clone());
                    }
                    _ => {
                        out.insert(section.clone(), keys.clone());
                    }
                }
            }
        }
        out
    }

    /// Where `key` ("section.name") was set last: `FILE:LINE`; None when no file sets it.
    pub fn origin_of(&self, key: &str) -> Option<String> {
        let (section, name) = key.split_once('.')?;
        self.files.iter().rev().find_map(|(file, text, table)| {
            table.get(section)?.get(name)?;
            Some(format!(
                "{file}:{}",
                line_of(text, section, name).unwrap_or(0)
            ))
        })
    }
}

/// The line (from 1) where `key` is set under `[section]` in a TOML text.
pub fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
        } else if current == section
            && t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(n + 1);
        }
    }
    None
}

/// Default bound on the outbox's queued bytes: 8 MiB, about 22 MB of sled files on
/// disk (benches/store.rs measures 2.6 bytes on disk per byte queued), room for some
/// 45 000 events — a small gateway's flash partition.
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 8 * 1024 * 1024;
const MIN_OUTBOX_MAX_BYTES: u64 = 256 * 1024;
/// Default disk reserve of the outbox: 5 % of the state directory's file system (at least
/// 2 MiB, `store::outbox::DISK_RESERVE_FLOOR`): 2.4 MiB of a 48 MiB partition.
pub const DEFAULT_DISK_RESERVE_PERCENT: u8 = 5;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: Agent,
    pub broker: Broker,
    pub readers: Readers,
    pub station: Station,
    pub modems: Modems,
    pub http: Http,
    pub esim: Esim,
    pub log: Log,
}

/// Profile downloads (src/rsp, `simgate esim download`): whom to trust.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Esim {
    /// The GSMA CI certificates an SM-DP+'s TLS certificate must chain to (SGP.22
    /// §2.6.6): a directory, one PEM or DER file per CI. Never the web's roots.
    pub ci_dir: PathBuf,
    /// Seconds an SM-DP+ gets to answer one ES9+ call.
    pub smdp_timeout_secs: u64,
}

impl Default for Esim {
    fn default() -> Self {
        Esim {
            ci_dir: PathBuf::from("/etc/simgate/ci"),
            smdp_timeout_secs: 30,
        }
    }
}

/// The station page (src/http): where it listens and the token its buttons need.
#[derive(Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Empty: no page. A bare port binds 127.0.0.1.
    pub listen: String,
    /// Empty: the page is read-only.
    pub token: String,
    /// A file holding the token alone, like `broker.password_file`.
    pub token_file: PathBuf,
    /// Serve `/health` and `/metrics` beside the page (`simgate run` only).
    pub metrics: bool,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("listen", &self.listen)
            .field("token", &(!self.token.is_empty()).then_some("<set>"))
            .field("token_file", &self.token_file)
            .field("metrics", &self.metrics)
            .finish()
    }
}

/// Shortest token accepted for the page's buttons.
pub const MIN_HTTP_TOKEN: usize = 16;

/// Where the page listens: a bare port is 127.0.0.1's (the page stays on this machine
/// unless asked otherwise), "localhost:PORT" too, else an IP address and port.
pub fn parse_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let local = |port: &str| {
        port.parse::<u16>()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)))
            .map_err(|_| format!("\"{s}\": the port must be 0-65535"))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return local(s);
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return local(port);
    }
    s.parse().map_err(|_| {
        format!(
            "\"{s}\" is not PORT, localhost:PORT or IP:PORT (e.g. 8080, 0.0.0.0:8080, [::1]:8080)"
        )
    })
}

/// Batch attributes for `simgate station`, attached to every SIM read; flags override.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Station {
    pub labels: Vec<String>,
    pub company: String,
    pub note: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Agent {
    pub id: String,
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    pub url: String,
    /// The nodes of a broker cluster (instead of `url`): each agent prefers one, by a
    /// hash of its id, and fails over along its own order (src/link/nodes.rs).
    pub urls: Vec<String>,
    pub keepalive_secs: u64,
    pub username: String,
    pub password: String,
    /// A file holding the password alone (mode 0640 root:simgate in the package), so
    /// the configuration itself can be readable by every user: commands that need no
    /// secret never read it. Read by [`Config::load_secrets`].
    pub password_file: PathBuf,
    pub ca_file: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub outbox_max_messages: u64,
    pub outbox_max_bytes: u64,
    pub outbox_disk_reserve_percent: u8,
    pub inflight_window: u16,
    pub usage_interval_secs: u64,
    pub reconnect_max_secs: u64,
    /// Agents sharing the broker (with `fleet_connects_per_s`): 0 = not set.
    pub fleet_size: u64,
    /// CONNECTs per second the broker accepts from the whole fleet: the first retry
    /// after a drop is spread over fleet_size / fleet_connects_per_s seconds.
    pub fleet_connects_per_s: u64,
}

impl Broker {
    /// The configured broker URLs: `urls`, or `url` alone; empty for a local-only run.
    pub fn endpoints(&self) -> Vec<String> {
        match (self.urls.is_empty(), self.url.is_empty()) {
            (false, _) => self.urls.clone(),
            (true, false) => vec![self.url.clone()],
            (true, true) => Vec::new(),
        }
    }

    /// The window over which a fleet's reconnect is spread: fleet_size /
    /// fleet_connects_per_s seconds (None when either is 0).
    pub fn fleet_window(&self) -> Option<std::time::Duration> {
        (self.fleet_size > 0 && self.fleet_connects_per_s > 0).then(|| {
            std::time::Duration::from_millis(
                self.fleet_size.saturating_mul(1000) / self.fleet_connects_per_s,
            )
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Readers {
    pub names: Vec<String>,
    pub card_timeout_ms: u64,
    pub vendor_isdr_aids: VendorIsdrAids,
}

/// When to probe the vendor ISD-R AIDs of devices/isdr_aids.toml (after the standard
/// one, which is always probed). Each costs one SELECT on every card that is no eUICC.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VendorIsdrAids {
    /// Only on a card whose ATR declares eUICC functions (TS 102 221 §6.3.3).
    Atr,
    /// On every UICC: finds removable eUICCs whose ATR says nothing, at a cost.
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Modems {
    pub ports: Vec<String>,
    pub profile_dir: PathBuf,
    pub poll_secs: u64,
    /// Port → network interface of its data bearer.
    pub netdevs: std::collections::BTreeMap<String, String>,
    /// A guided swap's verify step: how long the new SIM may take to register.
    pub swap_register_secs: u64,
    /// A guided physical swap: how long the technician may take to replace the SIM.
    pub swap_replace_secs: u64,
    /// Spare AT ports of modems whose data path ModemManager keeps.
    pub shared_with_modemmanager: Vec<String>,
    /// The PIN secrets file (src/pins.rs): PINs by ICCID a locked SIM may be given.
    pub pins_file: PathBuf,
    /// Port → the command that carries its eUICC's APDUs ("cgla" or "csim"), over the
    /// family's own choice in devices/modems.
    pub euicc_transport: std::collections::BTreeMap<String, crate::modem::profile::EuiccTransport>,
}

impl Default for Modems {
    fn default() -> Self {
        Modems {
            ports: Vec::new(),
            profile_dir: PathBuf::new(),
            poll_secs: 60,
            netdevs: std::collections::BTreeMap::new(),
            swap_register_secs: 120,
            swap_replace_secs: 600,
            shared_with_modemmanager: Vec::new(),
            pins_file: PathBuf::new(),
            euicc_transport: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
    pub format: LogFormat,
}

impl Default for Agent {
    fn default() -> Self {
        Agent {
            id: String::new(),
            state_dir: PathBuf::from("/var/lib/simgate"),
        }
    }
}

impl Default for Broker {
    fn default() -> Self {
        Broker {
            url: String::new(),
            urls: Vec::new(),
            keepalive_secs: 300,
            username: String::new(),
            password: String::new(),
            password_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_cert: PathBuf::new(),
            client_key: PathBuf::new(),
            outbox_max_messages: 100_000,
            outbox_max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            outbox_disk_reserve_percent: DEFAULT_DISK_RESERVE_PERCENT,
            inflight_window: 16,
            usage_interval_secs: 900,
            reconnect_max_secs: 10,
            fleet_size: 0,
            fleet_connects_per_s: 0,
        }
    }
}

impl Default for Readers {
    fn default() -> Self {
        Readers {
            names: Vec::new(),
            card_timeout_ms: 5000,
            vendor_isdr_aids: VendorIsdrAids::Atr,
        }
    }
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Auto,
        }
    }
}

/// A configuration that cannot be used. The message names the file, the key and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{origin}: {key}: {why}")]
    Invalid {
        origin: String,
        key: &'static str,
        why: String,
    },
}

/// A secret's file, read by the commands that need it (`run`, `station`), never by the
/// others: the configuration can be readable by every user while the secrets are not.
fn read_secret(key: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: format!("{} ({key})", path.display()),
        source,
    })?;
    // One line; a final newline (as `echo` writes) is not part of the secret.
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

impl Config {
    /// Read the secrets kept in files of their own (`broker.password_file`,
    /// `http.token_file`) into the configuration; a value given inline stays. An
    /// unreadable file is an error naming it.
    pub fn load_secrets(&mut self) -> Result<(), ConfigError> {
        if self.broker.password.is_empty() && !self.broker.password_file.as_os_str().is_empty() {
            self.broker.password = read_secret("broker.password_file", &self.broker.password_file)?;
        }
        if self.http.token.is_empty() && !self.http.token_file.as_os_str().is_empty() {
            self.http.token = read_secret("http.token_file", &self.http.token_file)?;
            self.validate("http.token_file")?;
        }
        Ok(())
    }

    /// Load and validate a configuration file and its drop-ins ([`drop_ins`]). A value
    /// that fails a check is named with the file and line that set it last.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::from_layers(&Layers::read(path)?)
    }

    /// The configuration the layers make, validated.
    pub fn from_layers(layers: &Layers) -> Result<Config, ConfigError> {
        let first = layers.files.first().map_or("", |(f, _, _)| f.as_str());
        let cfg: Config =
            toml::Value::Table(layers.merged())
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    file: first.to_string(),
                    message: e.message().trim_end().to_string(),
                })?;
        cfg.validate(first).map_err(|e| match e {
            ConfigError::Invalid { key, why, origin } => ConfigError::Invalid {
                origin: layers.origin_of(key).unwrap_or(origin),
                key,
                why,
            },
            e => e,
        })?;
        Ok(cfg)
    }

    /// Parse TOML text; `origin` names where it came from in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (file, message) = crate::toml_error::toml_error_at(&e, text, origin);
            ConfigError::Parse { file, message }
        })
    }

    /// Checks serde cannot express, section by section. `origin` is the file (or
    /// "command line").
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let sections = || -> Result<(), Bad> {
            if !self.agent.id.is_empty() {
                validate_agent_id(&self.agent.id).map_err(|why| ("agent.id", why))?;
            }
            self.broker.check()?;
            if self.readers.card_timeout_ms < 100 {
                return Err((
                    "readers.card_timeout_ms",
                    format!(
                        "{} ms is too short for any real card (minimum 100)",
                        self.readers.card_timeout_ms
                    ),
                ));
            }
            self.modems.check()?;
            self.http.check()
        };
        sections().map_err(|(key, why)| ConfigError::Invalid {
            origin: origin.to_string(),
            key,
            why,
        })
    }
}

/// A key that fails its check, and why.
type Bad = (&'static str, String);

impl Broker {
    fn check(&self) -> Result<(), Bad> {
        if !self.url.is_empty() {
            BrokerUrl::parse(&self.url).map_err(|why| ("broker.url", why))?;
        }
        if !self.urls.is_empty() && !self.url.is_empty() {
            return Err((
                "broker.urls",
                "give either broker.url (one broker) or broker.urls (the nodes of a cluster), not both".into(),
            ));
        }
        for u in &self.urls {
            BrokerUrl::parse(u).map_err(|why| ("broker.urls", why))?;
        }
        if (self.fleet_size == 0) != (self.fleet_connects_per_s == 0) {
            return Err((
                "broker.fleet_connects_per_s",
                "set both broker.fleet_size and broker.fleet_connects_per_s, or neither".into(),
            ));
        }
        if let Some(w) = self.fleet_window() {
            if w > MAX_FLEET_WINDOW {
                return Err((
                    "broker.fleet_size",
                    format!(
                        "{} agents at {} connects/s take {} s to come back, more than {} s: raise the quota",
                        self.fleet_size,
                        self.fleet_connects_per_s,
                        w.as_secs(),
                        MAX_FLEET_WINDOW.as_secs()
                    ),
                ));
            }
        }
        if !(5..=65_535).contains(&self.keepalive_secs) {
            return Err((
                "broker.keepalive_secs",
                format!("{} is outside 5..=65535 seconds", self.keepalive_secs),
            ));
        }
        self.check_outbox()?;
        if !(1..=1024).contains(&self.inflight_window) {
            return Err((
                "broker.inflight_window",
                format!("{} is outside 1..=1024", self.inflight_window),
            ));
        }
        if !(1..=3600).contains(&self.reconnect_max_secs) {
            return Err((
                "broker.reconnect_max_secs",
                format!(
                    "{} is outside 1..=3600 (seconds between connect attempts while the broker is unreachable)",
                    self.reconnect_max_secs
                ),
            ));
        }
        if self.usage_interval_secs == 0 {
            return Err((
                "broker.usage_interval_secs",
                "0 would send a batch per sample; give seconds (900 = 15 min)".into(),
            ));
        }
        if self.client_cert.as_os_str().is_empty() != self.client_key.as_os_str().is_empty() {
            return Err((
                "broker.client_cert",
                "client_cert and client_key go together".into(),
            ));
        }
        Ok(())
    }

    /// The outbox's bounds: room for one outage's state at least.
    fn check_outbox(&self) -> Result<(), Bad> {
        if self.outbox_max_messages < 100 {
            return Err((
                "broker.outbox_max_messages",
                format!(
                    "{} is too small to hold one outage's state (minimum 100)",
                    self.outbox_max_messages
                ),
            ));
        }
        if self.outbox_max_bytes < MIN_OUTBOX_MAX_BYTES {
            return Err((
                "broker.outbox_max_bytes",
                format!(
                    "{} is too small to hold one outage's state (minimum {MIN_OUTBOX_MAX_BYTES})",
                    self.outbox_max_bytes
                ),
            ));
        }
        if self.outbox_disk_reserve_percent > 50 {
            return Err((
                "broker.outbox_disk_reserve_percent",
                format!(
                    "{} is outside 0..=50 (percent of the state directory's file system)",
                    self.outbox_disk_reserve_percent
                ),
            ));
        }
        Ok(())
    }
}

impl Modems {
    fn check(&self) -> Result<(), Bad> {
        for (port, dev) in &self.netdevs {
            validate_netdev(dev).map_err(|why| ("modems.netdevs", format!("\"{port}\": {why}")))?;
        }
        for (key, v) in [
            ("modems.swap_register_secs", self.swap_register_secs),
            ("modems.swap_replace_secs", self.swap_replace_secs),
        ] {
            if !(1..=3_600).contains(&v) {
                return Err((key, format!("{v} is outside 1..=3600 seconds")));
            }
        }
        if !(5..=86_400).contains(&self.poll_secs) {
            return Err((
                "modems.poll_secs",
                format!("{} is outside 5..=86400 seconds", self.poll_secs),
            ));
        }
        Ok(())
    }
}

impl Http {
    fn check(&self) -> Result<(), Bad> {
        if !self.listen.is_empty() {
            parse_listen(&self.listen).map_err(|why| ("http.listen", why))?;
        }
        if self.metrics && self.listen.is_empty() {
            return Err((
                "http.metrics",
                "/health and /metrics are served by the page's server: set http.listen (or --http) too".into(),
            ));
        }
        if !self.token.is_empty()
            && (self.token.len() < MIN_HTTP_TOKEN
                || !self.token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err((
                "http.token",
                format!(
                    "must be at least {MIN_HTTP_TOKEN} printable characters without spaces (e.g. `openssl rand -hex 16`)"
                ),
            ));
        }
        Ok(())
    }
}

/// An agent id becomes an MQTT client id and a topic level: no wildcards, no separators.
pub fn validate_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 64 {
        return Err(format!("\"{id}\" must be 1 to 64 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "\"{id}\" contains {c:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A network interface name becomes a path under /sys/class/net: Linux's rules
/// (IFNAMSIZ 16 with the NUL; no '/', no whitespace, not "." or "..").
pub fn validate_netdev(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "\"{name}\" is not a network interface name (1-15 characters, no '/', ':' or spaces)"
        ))
    }
}

/// The longest reconnect window `fleet_size / fleet_connects_per_s` accepted: a single
/// agent whose connection drops may wait this long before its first retry.
pub const MAX_FLEET_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// The URL again (the printer of [`BrokerUrl::parse`]): an IPv6 literal in brackets.
impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        match self.host.contains(':') {
            true => write!(f, "{scheme}://[{}]:{}", self.host, self.port),
            false => write!(f, "{scheme}://{}:{}", self.host, self.port),
        }
    }
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else {
            return Err(format!("\"{url}\" must start with mqtt:// or mqtts://"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            // The colons of a bracketed IPv6 address without a port are not a port.
            Some((h, p)) if !rest.ends_with(']') => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("\"{p}\" in \"{url}\" is not a port number"))?,
            ),
            // IANA: 1883 for MQTT, 8883 for MQTT over TLS.
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() {
            return Err(format!("\"{url}\" has no host"));
        }
        // A host name (RFC 1123 §2.1: letters, digits, '-', '.'; '_' seen in the wild), an
        // IPv4 address, or an IPv6 address in brackets (RFC 3986 §3.2.2). Anything else
        // (a path, user info, a query, spaces) is a mistake to name here, not at connect.
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6)
                if !v6.is_empty()
                    && v6
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') =>
            {
                v6
            }
            _ if host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
            {
                host
            }
            _ => {
                return Err(format!(
                    "\"{url}\": \"{host}\" is not a host name or an IP address ([...] for IPv6)"
                ))
            }
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_string(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parses_to_the_defaults() {
        // As shipped (every key commented out), and with every key set as it says.
        assert_eq!(
            Config::parse(TEMPLATE, "template").unwrap(),
            Config::default()
        );
        let keys = template_keys();
        assert_eq!(Config::parse(&keys, "template").unwrap(), Config::default());
        // Every key is in it: each field of each section (serde would take a missing
        // one silently, as its default).
        let table: toml::Table = keys.parse().unwrap();
        let count: usize = table
            .values()
            .filter_map(|t| t.as_table())
            .map(|t| t.len())
            .sum();
        assert_eq!(
            count,
            TEMPLATE
                .lines()
                .filter(
                    |l| l.starts_with('#') && l[1..].starts_with(|c: char| c.is_ascii_lowercase())
                )
                .count()
        );
        assert!(count >= 40, "{count}");
    }

    #[test]
    fn drop_ins_apply_in_name_order_and_an_invalid_value_names_the_file_that_set_it() {
        let dir = std::env::temp_dir().join(format!("simgate-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let main = dir.join("simgate.toml");
        std::fs::write(
            &main,
            "[agent]\nid = \"gw-main\"\n[broker]\nkeepalive_secs = 60\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/50-site.toml"), "[agent]\nid = \"gw-50\"\n").unwrap();
        std::fs::write(
            dir.join("conf.d/10-base.toml"),
            "[agent]\nid = \"gw-10\"\n[modems]\nports = [\"/dev/a\", \"/dev/b\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("conf.d/70-one.toml"),
            "[modems]\nports = [\"/dev/c\"]\n",
        )
        .unwrap();
        std::fs::write(dir.join("conf.d/README"), "not toml").unwrap();
        let cfg = Config::load(&main).unwrap();
        assert_eq!(cfg.agent.id, "gw-50");
        assert_eq!(cfg.broker.keepalive_secs, 60);
        assert_eq!(cfg.modems.ports, ["/dev/c"], "an array is replaced whole");
        std::fs::write(
            dir.join("conf.d/80-bad.toml"),
            "[broker]\n\nkeepalive_secs = 1\n",
        )
        .unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        let bad = dir.join("conf.d/80-bad.toml");
        assert!(
            err.starts_with(&format!("{}:3: broker.keepalive_secs", bad.display())),
            "{err}"
        );
        std::fs::write(&bad, "[broker]\nkeepalive = 1\n").unwrap();
        let err = Config::load(&main).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:2: ", bad.display())), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changed_keys_are_named_by_section_and_key() {
        let old = Config::default();
        let mut new = old.clone();
        assert!(changed_keys(&old, &new).is_empty());
        new.readers.card_timeout_ms = 900;
        new.broker.keepalive_secs = 60;
        new.modems.ports = vec!["/dev/ttyUSB2".into()];
        assert_eq!(
            changed_keys(&old, &new),
            [
                "broker.keepalive_secs",
                "modems.ports",
                "readers.card_timeout_ms"
            ]
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("[broker]\nurl = \"mqtt://h\"\nkeepalive = 5\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.toml:3: "), "{err}");
        assert!(err.contains("keepalive"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::parse("[broker]\nkeepalive_secs = \"long\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("f.toml:2: ") && err.contains("keepalive_secs"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_name_the_key() {
        let mut c = Config::default();
        c.broker.url = "http://x".into();
        assert_eq!(
            c.validate("f").unwrap_err().to_string(),
            "f: broker.url: \"http://x\" must start with mqtt:// or mqtts://"
        );
        c.broker.url = String::new();
        c.agent.id = "a/b".into();
        assert!(c
            .validate("f")
            .unwrap_err()
            .to_string()
            .starts_with("f: agent.id:"));
    }

    #[test]
    fn a_cluster_is_urls_or_url_and_a_fleet_quota_needs_both_halves() {
        let c = Config::parse(
            "[broker]\nurls = [\"mqtt://n1:1883\", \"mqtt://n2\"]\nfleet_size = 100000\nfleet_connects_per_s = 300\n",
            "f.toml",
        )
        .unwrap();
        c.validate("f.toml").unwrap();
        assert_eq!(c.broker.endpoints().len(), 2);
        assert_eq!(
            c.broker.fleet_window(),
            Some(std::time::Duration::from_millis(333_333))
        );
        let mut both = c.clone();
        both.broker.url = "mqtt://n3".into();
        assert!(both
            .validate("f")
            .unwrap_err()
            .to_string()
            .starts_with("f: broker.urls: give either"));
        let mut bad = c.clone();
        bad.broker.urls.push("tcp://n3".into());
        assert!(bad
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("broker.urls: \"tcp://n3\""));
        let mut half = c.clone();
        half.broker.fleet_connects_per_s = 0;
        assert!(half
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("or neither"));
        let mut slow = c;
        slow.broker.fleet_connects_per_s = 1;
        assert!(slow
            .validate("f")
            .unwrap_err()
            .to_string()
            .contains("raise the quota"));
    }

    #[test]
    fn an_outbox_byte_bound_too_small_is_named_with_its_minimum() {
        let c = Config::parse("[broker]\noutbox_max_bytes = 1000\n", "f.toml").unwrap();
        assert_eq!(c.broker.outbox_max_bytes, 1000);
        assert_eq!(
            c.validate("f.toml").unwrap_err().to_string(),
            "f.toml: broker.outbox_max_bytes: 1000 is too small to hold one outage's state (minimum 262144)"
        );
    }

    #[test]
    fn a_netdev_that_would_leave_sys_class_net_is_refused() {
        let mut c = Config::default();
        c.modems
            .netdevs
            .insert("/dev/ttyUSB2".into(), "../../etc".into());
        let err = c.validate("f").unwrap_err().to_string();
        assert!(
            err.starts_with("f: modems.netdevs: \"/dev/ttyUSB2\""),
            "{err}"
        );
        c.modems
            .netdevs
            .insert("/dev/ttyUSB2".into(), "wwan0".into());
        assert!(c.validate("f").is_ok());
    }

    #[test]
    fn broker_urls_get_default_ports() {
        assert_eq!(BrokerUrl::parse("mqtts://b.example").unwrap().port, 8883);
        assert_eq!(
            BrokerUrl::parse("mqtt://127.0.0.1:1999").unwrap(),
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1999
            }
        );
    }

    #[test]
    fn the_page_listens_on_localhost_for_a_bare_port_and_a_short_token_is_refused() {
        use std::net::SocketAddr;
        assert_eq!(
            parse_listen("8080").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
        assert_eq!(
            parse_listen("localhost:81").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 81))
        );
        assert_eq!(
            parse_listen("0.0.0.0:8080").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 8080))
        );
        assert!(parse_listen("[::1]:8080").is_ok());
        assert!(parse_listen("99999").unwrap_err().contains("0-65535"));
        assert!(parse_listen("gateway:80").unwrap_err().contains("IP:PORT"));

        let mut cfg = Config::default();
        cfg.http.listen = "web".into();
        let e = cfg.validate("simgate.toml").unwrap_err().to_string();
        assert!(e.starts_with("simgate.toml: http.listen: \"web\""), "{e}");
        cfg.http.listen = "8080".into();
        cfg.http.token = "short".into();
        let e = cfg.validate("simgate.toml").unwrap_err().to_string();
        assert!(e.contains("http.token: must be at least 16"), "{e}");
        cfg.http.token = "0123456789abcdef".into();
        cfg.validate("simgate.toml").unwrap();
        assert!(
            !format!("{cfg:?}").contains("0123456789abcdef"),
            "the token never in a log"
        );
    }
}
