//! The command line: argument parsing and the commands' output. The binary's edge:
//! errors become messages and exit codes here and nowhere deeper.

use crate::config::{self, Config, LogFormat};
use crate::daemon;
use crate::link::LinkSettings;
use crate::reader::{self, CardRead, ReaderError};
use crate::vcard::{self, CardImage, VirtualCard};
use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "simgate",
    version,
    about = "SIMs in PC/SC readers and AT modems, in sync with a SIM-management platform over MQTT"
)]
pub struct Cli {
    /// Configuration file (see `simgate config template`).
    #[arg(long, global = true, env = "SIMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: auto, human or json.
    #[arg(long, global = true, env = "SIMGATE_LOG_FORMAT")]
    pub log_format: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List PC/SC readers and whether each holds a card.
    Readers {
        #[arg(long)]
        json: bool,
    },
    /// Identify the card in a reader, or in every reader holding one.
    Read {
        /// Exact reader name (see `simgate readers`).
        #[arg(long)]
        reader: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon: watch readers, keep the store and the platform in sync.
    Run(RunArgs),
    /// A reader station: every SIM inserted is identified and shown at once.
    Station(StationArgs),
    /// One modem: `simgate modem info --port PATH [--json]`.
    Modem(crate::modem::cli::ModemArgs),
    /// Find and identify modems.
    Modems(crate::modem::cli::ModemsArgs),
    /// Show, live, the SIM table an agent publishes on the broker.
    Watch {
        #[arg(long, env = "SIMGATE_BROKER")]
        broker: String,
        #[arg(long, env = "SIMGATE_AGENT_ID")]
        agent_id: String,
        #[command(flatten)]
        access: BrokerAccess,
        /// Print one table per change instead of redrawing the screen.
        #[arg(long)]
        plain: bool,
    },
    /// The platform's side, for demos and humans: send commands, set SIM records.
    #[command(subcommand)]
    Platform(PlatformCmd),
    /// Emulate devices for tests and demos.
    #[command(subcommand)]
    Emulate(Emulate),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Modem port to supervise: a serial device or tcp://host:port. Repeatable.
    #[arg(long = "modem", env = "SIMGATE_MODEMS", value_delimiter = ',')]
    pub modems: Vec<String>,
    /// Directory of modem profiles overriding the shipped ones.
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
}

/// The flags `run` and `station` share: who this agent is, where it keeps its store,
/// which broker and which readers.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Broker URL, mqtt://HOST:PORT or mqtts://HOST:PORT.
    #[arg(long, env = "SIMGATE_BROKER")]
    pub broker: Option<String>,
    /// This agent's id (MQTT client id and topic prefix).
    #[arg(long, env = "SIMGATE_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Directory of the durable store.
    #[arg(long, env = "SIMGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Reader: exact name or pattern with '*'. Repeatable; none: all readers.
    #[arg(long = "reader", env = "SIMGATE_READERS", value_delimiter = ',')]
    pub readers: Vec<String>,
}

impl AgentArgs {
    /// Flags and environment override the file.
    fn apply(self, cfg: &mut Config) {
        if let Some(b) = self.broker {
            cfg.broker.url = b;
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
    }
}

#[derive(Debug, Args)]
pub struct StationArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Label attached to every SIM of this batch. Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Company the batch is for.
    #[arg(long)]
    pub company: Option<String>,
    /// Note attached to every SIM of this batch.
    #[arg(long)]
    pub note: Option<String>,
    /// Append every read to this CSV file, durably, as it happens.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// One JSON object per read on stdout (NDJSON) instead of the screen.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Emulate {
    /// A modem on a pty, behaving like a profile's modem (see devices/modems/README.md).
    Modem(crate::modem::cli::EmulateModemArgs),
    /// A virtual card plugged into vpcd, answering from a card image.
    Card {
        /// Card image (TOML; see devices/cards/README.md).
        #[arg(long)]
        image: PathBuf,
        /// vpcd's address (the reader's TCP port).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Delay added to every APDU answer, in milliseconds (a real T=0 SIM costs
        /// several ms per APDU).
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

/// Credentials and TLS files of a platform-side tool (watch, platform).
#[derive(Debug, Args)]
pub struct BrokerAccess {
    #[arg(long)]
    pub username: Option<String>,
    /// Better given through the environment than on a command line.
    #[arg(long, env = "SIMGATE_PLATFORM_PASSWORD")]
    pub password: Option<String>,
    /// PEM CA bundle for mqtts:// (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with --client-key) for brokers that require one.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl From<BrokerAccess> for crate::link::ClientAccess {
    fn from(a: BrokerAccess) -> Self {
        crate::link::ClientAccess {
            username: a.username,
            password: a.password,
            ca_file: a.ca_file,
            client_cert: a.client_cert.zip(a.client_key),
        }
    }
}

#[derive(Debug, Args)]
pub struct PlatformConn {
    #[arg(long, env = "SIMGATE_BROKER")]
    pub broker: String,
    #[arg(long, env = "SIMGATE_AGENT_ID")]
    pub agent_id: String,
    #[command(flatten)]
    pub access: BrokerAccess,
}

#[derive(Debug, Subcommand)]
pub enum PlatformCmd {
    /// Send a command to an agent and print its lifecycle as it comes back (one JSON
    /// line per status). Exit status 0 when it succeeded, 1 when it failed.
    Send {
        #[command(flatten)]
        conn: PlatformConn,
        #[arg(long)]
        iccid: String,
        /// refresh, suspend, resume, set_record (refill, rules, swap: refused for now).
        #[arg(long)]
        action: String,
        /// Command id (the idempotency key); default: a fresh one.
        #[arg(long)]
        id: Option<String>,
        /// Parameters as JSON (for set_record: the platform record).
        #[arg(long)]
        params: Option<String>,
        /// Seconds until the command expires.
        #[arg(long, default_value_t = 300)]
        expires_in: u64,
        /// Seconds to wait for the final status.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Set a SIM's platform record (retained on sim/<iccid>/platform).
    Record {
        #[command(flatten)]
        conn: PlatformConn,
        #[arg(long)]
        iccid: String,
        /// The record as JSON, e.g. '{"status":"Active","plan":"IoT 1GB"}'.
        #[arg(long)]
        json: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print a commented configuration with every key and its default.
    Template,
    /// Validate a configuration file.
    Check { file: PathBuf },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Config errors are usage errors: exit 2, like clap's.
    let cfg = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("simgate: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let format = match cli.log_format.as_deref() {
        None => cfg.log.format,
        Some("auto") => LogFormat::Auto,
        Some("human") => LogFormat::Human,
        Some("json") => LogFormat::Json,
        Some(other) => {
            eprintln!("simgate: --log-format: \"{other}\" is not one of auto, human, json");
            return ExitCode::from(2);
        }
    };
    crate::logging::init(&cfg.log.level, format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("simgate: {}", report(&e));
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A mistake in what the user gave — an argument's value, or a file named by one —
/// rather than the work failing: exit 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Whether an error is the user's input (exit 2): a `UsageError`, or a configuration,
/// modem profile, card image or transcript file that does not load.
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<UsageError>()
            || c.is::<config::ConfigError>()
            || c.is::<crate::modem::profile::ProfileError>()
            || c.is::<crate::vcard::image::ImageError>()
            || c.is::<crate::modem::transcript::TranscriptError>()
            // Transparent: its own source is the profile error's cause, not the error.
            || matches!(
                c.downcast_ref::<daemon::DaemonError>(),
                Some(daemon::DaemonError::Profile(_))
            )
    })
}

/// An error and its causes on one line. Our error types already name their cause in
/// their message; a cause whose text is already there is not repeated.
pub fn report(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}

/// One cancellation token for the whole process: the first SIGINT/SIGTERM cancels it,
/// a second one exits at once.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot install the SIGTERM handler");
                    return;
                }
            };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("stopping (signal again to exit at once)");
                t.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
    token
}

async fn dispatch(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Readers { json } => readers(json).await,
        Command::Read { reader, json } => read(reader, json, &cfg).await,
        Command::Run(args) => run(args, cfg).await,
        Command::Station(args) => station(args, cfg).await,
        Command::Watch {
            broker,
            agent_id,
            access,
            plain,
        } => {
            crate::watch::run(&broker, &agent_id, &access.into(), plain, shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform(cmd) => platform(cmd).await,
        Command::Modem(args) => {
            args.run(shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Modems(args) => {
            args.run(shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulate(Emulate::Modem(args)) => {
            args.run(shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Emulate(Emulate::Card {
            image,
            vpcd,
            latency_ms,
        }) => emulate_card(image, vpcd, Duration::from_millis(latency_ms)).await,
        Command::Config(ConfigCmd::Template) => {
            print!("{}", config::TEMPLATE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCmd::Check { file }) => match Config::load(&file).and_then(|c| {
            // An override directory is part of the configuration: check its profiles
            // the same way `run` will load them.
            match c.modems.profile_dir.as_os_str().is_empty() {
                true => Ok(()),
                false => crate::modem::profile::Profiles::with_overrides(&c.modems.profile_dir)
                    .map(drop)
                    .map_err(|e| config::ConfigError::Invalid {
                        origin: file.display().to_string(),
                        key: "modems.profile_dir",
                        why: e.to_string(),
                    }),
            }
        }) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("simgate: {e}");
                Ok(ExitCode::from(2))
            }
        },
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("PC/SC worker thread failed")
}

async fn readers(json: bool) -> anyhow::Result<ExitCode> {
    let list = blocking(|| reader::establish().and_then(|ctx| reader::list(&ctx))).await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no PC/SC readers");
    } else {
        let width = list.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
        println!("{:width$}  CARD  ATR", "READER");
        for r in &list {
            let card = if r.mute {
                "mute"
            } else if r.card_present {
                "yes"
            } else {
                "no"
            };
            println!(
                "{:width$}  {card:4}  {}",
                r.name,
                r.atr.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `simgate read`.
#[derive(Debug, Serialize)]
pub(crate) struct ReadRow {
    reader: String,
    /// `None` for a Blank eSIM whose MF has no EF.ICCID.
    iccid: Option<String>,
    luhn_ok: bool,
    kind: crate::card::CardKind,
    form_factor: crate::sim::FormFactor,
    #[serde(skip_serializing_if = "Option::is_none")]
    eid: Option<String>,
    /// An eUICC with no enabled profile.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    blank_esim: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<crate::sim::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<String>,
    atr: String,
    /// APDUs the identification budget counts, and every APDU sent.
    apdus: u32,
    apdus_total: u32,
    /// Identification time: connect to disconnect, in this process.
    ms: u64,
}

impl ReadRow {
    fn new(r: &CardRead, ms: u64) -> Self {
        let obs = daemon::observed_from_read(r);
        ReadRow {
            reader: r.reader.clone(),
            iccid: r.identity.iccid.as_ref().map(|i| i.to_string()),
            luhn_ok: obs.iccid_luhn_ok,
            kind: r.identity.kind,
            form_factor: obs.form_factor.unwrap_or(crate::sim::FormFactor::Physical),
            status: obs.local_status(),
            blank_esim: obs.blank_esim,
            eid: obs.eid,
            problem: obs.problem,
            imsi: obs.imsi,
            spn: obs.spn,
            operator: obs.operator,
            atr: r.atr.clone(),
            apdus: r.identity.apdus,
            apdus_total: r.identity.apdus_total,
            ms,
        }
    }
}

/// Read every named reader at once, each on its own thread (reader::read_card_timeout).
fn read_all(
    names: Vec<std::ffi::CString>,
    settings: reader::ReadSettings,
) -> Vec<(Result<CardRead, ReaderError>, u64)> {
    let handles: Vec<_> = names
        .into_iter()
        .map(|n| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let r = reader::read_card_timeout(&n, settings);
                (r, started.elapsed().as_millis() as u64)
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| match h.join() {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::error!("a reader thread panicked");
                None
            }
        })
        .collect()
}

async fn read(only: Option<String>, json: bool, cfg: &Config) -> anyhow::Result<ExitCode> {
    let settings = reader::ReadSettings::from_config(&cfg.readers);
    let results: Vec<(Result<CardRead, ReaderError>, u64)> = blocking(move || {
        let ctx = reader::establish()?;
        let names = match &only {
            Some(name) => vec![reader::resolve(&ctx, name)?],
            None => reader::list(&ctx)?
                .into_iter()
                .filter(|r| r.card_present)
                .filter_map(|r| std::ffi::CString::new(r.name).ok())
                .collect(),
        };
        Ok::<_, ReaderError>(read_all(names, settings))
    })
    .await??;
    let mut rows = Vec::new();
    for (result, ms) in results {
        match result {
            Ok(read) => rows.push(ReadRow::new(&read, ms)),
            Err(e) => eprintln!("simgate: {e}"),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let width = rows
            .iter()
            .map(|r| r.reader.len())
            .max()
            .unwrap_or(6)
            .max(6);
        if !rows.is_empty() {
            println!(
                "{:width$}  {:20}  LUHN  KIND  FORM      {:32}  ATR",
                "READER", "ICCID", "EID"
            );
        }
        for r in &rows {
            let luhn = if r.luhn_ok { "ok" } else { "FAIL" };
            let kind = match r.kind {
                crate::card::CardKind::Uicc => "uicc",
                crate::card::CardKind::Gsm => "gsm",
            };
            let form = match r.form_factor {
                crate::sim::FormFactor::Physical => "physical",
                crate::sim::FormFactor::Esim => "esim",
            };
            println!(
                "{:width$}  {:20}  {luhn:4}  {kind:4}  {form:8}  {:32}  {}",
                r.reader,
                r.iccid.as_deref().unwrap_or("-"),
                r.eid.as_deref().unwrap_or("-"),
                r.atr
            );
        }
    }
    if rows.is_empty() {
        eprintln!("simgate: no card could be read");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(args: RunArgs, mut cfg: Config) -> anyhow::Result<ExitCode> {
    args.agent.apply(&mut cfg);
    if !args.modems.is_empty() {
        cfg.modems.ports = args.modems;
    }
    if let Some(d) = args.profile_dir {
        cfg.modems.profile_dir = d;
    }
    if let Err(e) = cfg.validate("command line") {
        eprintln!("simgate: {e}");
        return Ok(ExitCode::from(2));
    }
    if cfg.agent.id.is_empty() {
        eprintln!("simgate: agent.id: not set; give --agent-id, SIMGATE_AGENT_ID or agent.id in the config file");
        return Ok(ExitCode::from(2));
    }
    let broker = (!cfg.broker.url.is_empty()).then(|| link_settings(&cfg));
    let settings = daemon::Settings {
        agent_id: cfg.agent.id.clone(),
        state_dir: cfg.agent.state_dir.clone(),
        broker,
        readers: cfg.readers.names.clone(),
        read: reader::ReadSettings::from_config(&cfg.readers),
        modems: cfg.modems.ports.clone(),
        profile_dir: (!cfg.modems.profile_dir.as_os_str().is_empty())
            .then(|| cfg.modems.profile_dir.clone()),
        modem_poll: Duration::from_secs(cfg.modems.poll_secs),
        modem_netdevs: cfg.modems.netdevs.clone(),
    };
    daemon::run(settings, shutdown_token()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn platform(cmd: PlatformCmd) -> anyhow::Result<ExitCode> {
    let conn = |c: PlatformConn| crate::platform::Conn {
        broker: c.broker,
        agent_id: c.agent_id,
        access: c.access.into(),
    };
    match cmd {
        PlatformCmd::Send {
            conn: c,
            iccid,
            action,
            id,
            params,
            expires_in,
            wait,
        } => {
            let params = match params {
                Some(p) => serde_json::from_str(&p)
                    .map_err(|e| UsageError(format!("--params: not JSON: {e}")))?,
                None => serde_json::Value::Null,
            };
            // The platform tool checks what the agent would refuse, before connecting:
            // the ICCID and the id become topic levels, the action a word of the contract.
            if !crate::link::contract::valid_iccid(&iccid) {
                return Err(UsageError(format!("--iccid: \"{iccid}\" is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)")).into());
            }
            if let Some(id) = id
                .as_deref()
                .filter(|i| !crate::link::contract::valid_command_id(i))
            {
                return Err(UsageError(format!(
                    "--id: \"{id}\" must be 1 to 64 of letters, digits, '-', '_' and '.'"
                ))
                .into());
            }
            if crate::link::contract::Action::parse(&action).is_none() {
                return Err(UsageError(format!("--action: \"{action}\" is not one of refresh, suspend, resume, set_record, refill, rules, swap")).into());
            }
            let id = id.unwrap_or_else(|| {
                format!("cli-{}-{}", crate::time::unix_now(), std::process::id())
            });
            let msg = crate::link::contract::CommandMsg {
                v: crate::link::contract::SCHEMA_VERSION,
                id,
                iccid,
                action,
                params,
                expires_at: crate::time::unix_now() + expires_in,
            };
            let ok = crate::platform::send(&conn(c), &msg, Duration::from_secs(wait)).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PlatformCmd::Record {
            conn: c,
            iccid,
            json,
        } => {
            let record = serde_json::from_str(&json)
                .map_err(|e| UsageError(format!("--json: not a platform record: {e}")))?;
            crate::platform::set_record(&conn(c), &iccid, record).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The platform link's settings from the configuration (daemon and station alike).
fn link_settings(cfg: &Config) -> LinkSettings {
    LinkSettings {
        url: cfg.broker.url.clone(),
        agent_id: cfg.agent.id.clone(),
        keepalive: Duration::from_secs(cfg.broker.keepalive_secs),
        username: cfg.broker.username.clone(),
        password: cfg.broker.password.clone(),
        ca_file: non_empty(&cfg.broker.ca_file),
        client_cert: non_empty(&cfg.broker.client_cert).zip(non_empty(&cfg.broker.client_key)),
        outbox_cap: cfg.broker.outbox_max_messages,
        outbox_max_bytes: cfg.broker.outbox_max_bytes,
        window: cfg.broker.inflight_window,
        usage_interval: Duration::from_secs(cfg.broker.usage_interval_secs),
    }
}

/// A configured path, or None when the key was left empty.
fn non_empty(p: &std::path::Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_path_buf())
}

async fn station(args: StationArgs, mut cfg: Config) -> anyhow::Result<ExitCode> {
    args.agent.apply(&mut cfg);
    // Flags replace the config's batch attributes one by one.
    if !args.labels.is_empty() {
        cfg.station.labels = args.labels;
    }
    if let Some(c) = args.company {
        cfg.station.company = c;
    }
    if let Some(n) = args.note {
        cfg.station.note = n;
    }
    if let Err(e) = cfg.validate("command line") {
        eprintln!("simgate: {e}");
        return Ok(ExitCode::from(2));
    }
    if !cfg.broker.url.is_empty() && cfg.agent.id.is_empty() {
        eprintln!("simgate: agent.id: a station publishing to a broker needs --agent-id, SIMGATE_AGENT_ID or agent.id");
        return Ok(ExitCode::from(2));
    }
    let broker = (!cfg.broker.url.is_empty()).then(|| link_settings(&cfg));
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let settings = crate::station::Settings {
        readers: cfg.readers.names.clone(),
        batch: crate::sim::Batch {
            labels: cfg.station.labels.clone(),
            company: non_empty(cfg.station.company.clone()),
            note: non_empty(cfg.station.note.clone()),
        },
        csv: args.csv,
        json: args.json,
        state_dir: cfg.agent.state_dir.clone(),
        broker,
        read: reader::ReadSettings::from_config(&cfg.readers),
    };
    crate::station::run(settings, shutdown_token()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn emulate_card(image: PathBuf, vpcd: String, latency: Duration) -> anyhow::Result<ExitCode> {
    let image = CardImage::load(&image)?;
    let name = image.name.clone();
    let mut card = VirtualCard::new(image);
    let cancel = shutdown_token();
    let session = vcard::vpcd::Session { latency };
    let ended = vcard::vpcd::serve(&vpcd, &mut card, &session, &cancel, || {
        // Tests and the demo wait for this line: from now on pcscd shows the card.
        println!("card \"{name}\" inserted at vpcd {vpcd}");
    })
    .await?;
    match ended {
        vcard::vpcd::Ended::Removed => {
            println!("card removed ({} APDUs answered)", card.apdus());
            Ok(ExitCode::SUCCESS)
        }
        vcard::vpcd::Ended::Pulled => {
            println!("card pulled mid-exchange ({} APDUs seen)", card.apdus());
            Ok(ExitCode::SUCCESS)
        }
        vcard::vpcd::Ended::ReaderGone => {
            bail!("vpcd at {vpcd} closed the connection (pcscd stopped?)")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("card.toml: cannot read: {source}")]
    struct Named {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_named_is_not_repeated_and_a_new_one_is_added() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(Named { source: io() });
        assert_eq!(report(&e), "card.toml: cannot read: No such file");
        let e = anyhow::Error::new(io()).context("opening the port");
        assert_eq!(report(&e), "opening the port: No such file");
    }
}
