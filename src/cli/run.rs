//! `simgate run` and the agent flags it shares with `simgate station`.

use super::shutdown_token;
use crate::config::Config;
use crate::daemon;
use crate::link::LinkSettings;
use crate::reader;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Modem port to supervise: a serial device or tcp://host:port. Repeatable.
    #[arg(long = "modem", env = "SIMGATE_MODEMS", value_delimiter = ',')]
    pub modems: Vec<String>,
    /// Directory of modem profiles overriding the shipped ones.
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Serve /health and /metrics (Prometheus) on the page's listener (--http).
    #[arg(long, env = "SIMGATE_METRICS")]
    pub metrics: bool,
}

/// The flags `run` and `station` share: who this agent is, where it keeps its store,
/// which broker and which readers.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT; several, comma-separated:
    /// the nodes of a cluster (broker.urls).
    #[arg(long, env = "SIMGATE_BROKER", value_delimiter = ',')]
    pub broker: Vec<String>,
    /// This agent's id (MQTT client id and topic prefix).
    #[arg(long, env = "SIMGATE_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Directory of the durable store.
    #[arg(long, env = "SIMGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Reader: exact name or pattern with '*'. Repeatable; none: all readers.
    #[arg(long = "reader", env = "SIMGATE_READERS", value_delimiter = ',')]
    pub readers: Vec<String>,
    /// Serve the station page here: PORT (on 127.0.0.1) or IP:PORT.
    #[arg(long = "http", env = "SIMGATE_HTTP", value_name = "ADDR")]
    pub http: Option<String>,
}

impl AgentArgs {
    /// Flags and environment override the file.
    pub(super) fn apply(self, cfg: &mut Config) {
        match self.broker.len() {
            0 => {}
            1 => {
                cfg.broker.url = self.broker.concat();
                cfg.broker.urls.clear();
            }
            _ => {
                cfg.broker.urls = self.broker;
                cfg.broker.url.clear();
            }
        }
        if let Some(a) = self.agent_id {
            cfg.agent.id = a;
        }
        if let Some(d) = self.state_dir {
            cfg.agent.state_dir = d;
        }
        if !self.readers.is_empty() {
            cfg.readers.names = self.readers;
        }
        if let Some(h) = self.http {
            cfg.http.listen = h;
        }
    }
}

/// The station page's settings, when the configuration asks for the page (validated).
pub(super) fn http_settings(cfg: &Config) -> Option<crate::http::Settings> {
    let addr = crate::config::parse_listen(&cfg.http.listen).ok()?;
    Some(crate::http::Settings {
        addr,
        token: (!cfg.http.token.is_empty()).then(|| cfg.http.token.clone()),
        metrics: cfg.http.metrics,
    })
}

impl RunArgs {
    /// Flags and environment over the file, as at start and at every reload.
    fn over(&self, cfg: &mut Config) {
        self.agent.clone().apply(cfg);
        if !self.modems.is_empty() {
            cfg.modems.ports = self.modems.clone();
        }
        if let Some(d) = &self.profile_dir {
            cfg.modems.profile_dir = d.clone();
        }
        cfg.http.metrics |= self.metrics;
    }
}

pub(super) async fn run(
    args: RunArgs,
    mut cfg: Config,
    file: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    args.over(&mut cfg);
    cfg.load_secrets()?;
    // A reload (SIGHUP) reads the same file and drop-ins with the same flags over them.
    let reload: daemon::reload::Load = {
        let args = args.clone();
        std::sync::Arc::new(move || {
            let mut cfg = match &file {
                Some(f) => Config::load(f)?,
                None => Config::default(),
            };
            args.over(&mut cfg);
            cfg.load_secrets()?;
            cfg.validate("command line")?;
            Ok(cfg)
        })
    };
    if let Err(e) = cfg.validate("command line") {
        eprintln!("simgate: {e}");
        return Ok(ExitCode::from(2));
    }
    if cfg.agent.id.is_empty() {
        eprintln!("simgate: agent.id: not set; give --agent-id, SIMGATE_AGENT_ID or agent.id in the config file");
        return Ok(ExitCode::from(2));
    }
    // A secrets file that does not load (mode, owner, content) stops the start: a
    // gateway that silently skips its PINs keeps its SIMs locked.
    let pins = match non_empty(&cfg.modems.pins_file) {
        Some(f) => Some(std::sync::Arc::new(
            crate::pins::Pins::load(&f)
                .map_err(|e| super::UsageError(format!("modems.pins_file: {e}")))?,
        )),
        None => None,
    };
    let broker = (!cfg.broker.endpoints().is_empty()).then(|| link_settings(&cfg));
    let settings = daemon::Settings {
        esim: cfg.esim.clone(),
        reload: Some(daemon::reload::Reloader::new(reload, cfg.clone())),
        agent_id: cfg.agent.id.clone(),
        state_dir: cfg.agent.state_dir.clone(),
        broker,
        readers: cfg.readers.names.clone(),
        // The one identification plan of every surface (card::identify), whose eUICC
        // profile list the state row carries (MQTT.md, SIM state).
        read: reader::ReadSettings::from_config(&cfg.readers),
        modems: cfg.modems.ports.clone(),
        profile_dir: (!cfg.modems.profile_dir.as_os_str().is_empty())
            .then(|| cfg.modems.profile_dir.clone()),
        modem_poll: Duration::from_secs(cfg.modems.poll_secs),
        modem_netdevs: cfg.modems.netdevs.clone(),
        modem_euicc_transport: cfg.modems.euicc_transport.clone(),
        swap: crate::daemon::SwapSettings {
            register: Duration::from_secs(cfg.modems.swap_register_secs),
            replace: Duration::from_secs(cfg.modems.swap_replace_secs),
        },
        modems_shared: cfg.modems.shared_with_modemmanager.clone(),
        pins,
        http: http_settings(&cfg),
    };
    daemon::run(settings, shutdown_token()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The platform link's settings from the configuration (daemon and station alike).
pub(super) fn link_settings(cfg: &Config) -> LinkSettings {
    LinkSettings {
        urls: cfg.broker.endpoints(),
        agent_id: cfg.agent.id.clone(),
        keepalive: Duration::from_secs(cfg.broker.keepalive_secs),
        username: cfg.broker.username.clone(),
        password: cfg.broker.password.clone(),
        ca_file: non_empty(&cfg.broker.ca_file),
        client_cert: non_empty(&cfg.broker.client_cert).zip(non_empty(&cfg.broker.client_key)),
        outbox_cap: cfg.broker.outbox_max_messages,
        outbox_max_bytes: cfg.broker.outbox_max_bytes,
        outbox_disk_reserve_percent: cfg.broker.outbox_disk_reserve_percent,
        window: cfg.broker.inflight_window,
        usage_interval: Duration::from_secs(cfg.broker.usage_interval_secs),
        reconnect_max: Duration::from_secs(cfg.broker.reconnect_max_secs),
        fleet_window: cfg.broker.fleet_window(),
    }
}

/// A configured path, or None when the key was left empty.
fn non_empty(p: &std::path::Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_path_buf())
}
