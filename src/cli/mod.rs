//! The command line: argument parsing, dispatch, and exit codes. The binary's edge:
//! errors become messages and exit codes here and nowhere deeper; only this tree
//! formats for humans or prints JSON.

// First: its `out!` and `outln!` are every module's way to stdout.
#[macro_use]
mod out;

mod config;
#[cfg(feature = "emulators")]
mod emulate;
mod error;
mod esim;
mod generate;
mod messaging;
mod modem;
mod pin;
mod platform;
mod read;
mod rules;
mod run;
mod station;
mod swap;
mod watch;

pub use error::{report, UsageError};

use crate::config::{Config, LogFormat};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Log format (auto: the journal under systemd, human on a terminal, else json).
    #[arg(long, global = true, env = "SIMGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

// Not `#[command(defer = true)]` (each subcommand's arguments built only when it runs):
// it saved `read` 112 KiB of heap and 48 KiB of stack, but a deferred `Args` struct's doc
// comment then replaced the subcommand's description (`run --help`, the man pages), and
// the completions lost `help`'s nested subcommands.
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
    /// An eUICC's profiles: list, enable, disable, delete, nickname; its notifications.
    Esim(esim::EsimArgs),
    /// Run the daemon: watch readers, keep the store and the platform in sync.
    Run(run::RunArgs),
    /// A reader station: every SIM inserted is identified and shown at once.
    Station(station::StationArgs),
    /// One modem: `simgate modem info --port PATH [--json]`.
    Modem(modem::ModemArgs),
    /// Find and identify modems.
    Modems(modem::ModemsArgs),
    /// PIN1 of a SIM in a reader or a modem: verify, enable, disable, change, unblock
    /// (the PIN, PUK and new PIN read from stdin, one a line).
    Pin(pin::PinArgs),
    /// A USSD exchange through a modem (`simgate ussd --port P '*100#'`), or the SIM's
    /// prepaid balance asked of its operator (`--balance`).
    Ussd(messaging::UssdArgs),
    /// SMS through a modem: send one, list the stored ones.
    Sms(messaging::SmsArgs),
    /// Show, live, the SIM table an agent publishes on the broker.
    Watch {
        #[command(flatten)]
        conn: platform::PlatformConn,
        /// Print one table per change instead of redrawing the screen.
        #[arg(long)]
        plain: bool,
        /// Print the table once (every SIM in the agent's retained index) and exit.
        #[arg(long)]
        once: bool,
        /// With --once: the agent's health and rows as JSON, as the agent published them.
        #[arg(long, requires = "once")]
        json: bool,
    },
    /// The platform's side, for demos and humans: send commands, set SIM records.
    #[command(subcommand)]
    Platform(platform::PlatformCmd),
    /// A guided SIM swap on a modem, through the running daemon, each step shown live.
    Swap(swap::SwapArgs),
    /// Emulate devices for tests and demos.
    #[cfg(feature = "emulators")]
    #[command(subcommand)]
    Emulate(emulate::Emulate),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(config::ConfigCmd),
    /// Ask the platform for a top-up of a SIM, through the running daemon.
    Refill(platform::RefillArgs),
    /// Local rules: `simgate rules test RULES FACTS` runs them dry.
    #[command(subcommand)]
    Rules(rules::RulesCmd),
    /// The man page and shell completions (for packaging).
    #[command(subcommand, hide = true)]
    Generate(generate::Generate),
}

/// The configuration a gateway or station keeps (the package's conffile), read when no
/// other file is given.
pub const DEFAULT_CONFIG: &str = "/etc/simgate/simgate.toml";

/// The file the configuration comes from: `--config` (or SIMGATE_CONFIG), else
/// [`DEFAULT_CONFIG`] when it exists, else none (the defaults).
pub fn config_file(given: Option<&std::path::Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => {
            let default = std::path::Path::new(DEFAULT_CONFIG);
            default.exists().then(|| default.to_path_buf())
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `config` and `generate` need no configuration (`config check` loads its file
    // itself): a broken /etc/simgate/simgate.toml must not stop them.
    let needs_config = !matches!(cli.command, Command::Config(_) | Command::Generate(_));
    let file = config_file(cli.config.as_deref()).filter(|_| needs_config);
    // Config errors are usage errors: exit 2, like clap's.
    let cfg = match &file {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("simgate: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    let format = cli.log_format.unwrap_or(cfg.log.format);
    // A command drawing rows on this terminal keeps the log off them.
    let screen = match &cli.command {
        Command::Watch {
            plain: false,
            once: false,
            ..
        } if std::io::stdout().is_terminal() => Some("watch"),
        Command::Station(a) if !a.json && std::io::stdout().is_terminal() => Some("station"),
        _ => None,
    };
    crate::logging::init(&cfg.log.level, format, screen);
    // Which file was used, when asked: RUST_LOG=simgate=debug, or `simgate config path`.
    if needs_config {
        let used = file
            .as_ref()
            .map_or("none (defaults)".into(), |f| f.display().to_string());
        let drop_ins = file
            .as_deref()
            .and_then(|f| crate::config::drop_ins(f).ok())
            .unwrap_or_default();
        let drop_ins: Vec<String> = drop_ins.iter().map(|d| d.display().to_string()).collect();
        tracing::debug!(file = %used, drop_ins = %drop_ins.join(", "), "configuration");
    }
    dispatch(cli.command, cfg, cli.config)
}

/// A command's outcome as the process's exit status, its error said on stderr.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        // The reader of our stdout went away (`| head -1`): it wanted no more.
        Err(e) if out::is_broken_pipe(&e) => ExitCode::from(out::READER_GONE),
        Err(e) => {
            eprintln!("simgate: {}", report(&e));
            if error::is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Run a command. Those that await nothing run here, on this thread, with no async
/// runtime: `read` is done before a runtime would have been built (its I/O driver, timer
/// and signal pipe, and the code pages they touch: benches/lean.rs). The others run on
/// one ([`on_runtime`]).
fn dispatch(command: Command, cfg: Config, config: Option<PathBuf>) -> ExitCode {
    match command {
        Command::Readers { json } => exit_code(read::readers(json)),
        Command::Read { reader, json } => exit_code(read::read(reader, json, &cfg)),
        Command::Config(cmd) => cmd.run(config.as_deref()),
        Command::Rules(cmd) => exit_code(cmd.run()),
        Command::Generate(g) => exit_code(g.run()),
        command => on_runtime(command, cfg, config),
    }
}

/// Run an async command on a runtime built for it. Never inlined: its frame holds the
/// command's future, the largest of all of them, which the commands [`dispatch`] runs
/// without a runtime must not touch (a large frame's stack probes make all of it
/// resident).
#[inline(never)]
fn on_runtime(command: Command, cfg: Config, config: Option<PathBuf>) -> ExitCode {
    // A one-shot command runs on this thread alone (a current-thread runtime): its
    // time then depends on no worker being scheduled, which on a loaded machine costs a
    // time slice per hand-over, and it starts no worker threads it does not use. The
    // long-running ones get a multi-thread runtime ([`Command::needs_workers`]).
    let built = if command.needs_workers() {
        // Two workers at most: the daemon's work is I/O waits and a few messages a
        // minute; each more worker is a stack and a malloc arena on a small gateway.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores.min(2))
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("simgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = exit_code(runtime.block_on(run_async(command, cfg, config)));
    // Dropping a runtime waits for its blocking threads without end; one stuck in a
    // PC/SC call must not keep a finished (or failed) command from exiting, so that a
    // service manager can start it again (regression: tests/it/chaos.rs, a full disk).
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

impl Command {
    /// Long-running commands, and `esim` (modem::esim's block_in_place needs workers).
    fn needs_workers(&self) -> bool {
        match self {
            Command::Run(_)
            | Command::Station(_)
            | Command::Watch { .. }
            | Command::Esim(_)
            | Command::Modems(_) => true,
            #[cfg(feature = "emulators")]
            Command::Emulate(_) => true,
            _ => false,
        }
    }
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

async fn run_async(
    command: Command,
    cfg: Config,
    config: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    match command {
        // Run before any runtime is built ([`dispatch`]); the same handlers if reached.
        Command::Readers { .. }
        | Command::Read { .. }
        | Command::Config(_)
        | Command::Rules(_)
        | Command::Generate(_) => Ok(dispatch(command, cfg, config)),
        Command::Esim(args) => args.run(&cfg).await,
        Command::Run(args) => run::run(args, cfg, config_file(config.as_deref())).await,
        Command::Station(args) => station::station(args, cfg).await,
        Command::Watch {
            conn,
            plain,
            once,
            json,
        } => {
            let mode = match (once, json) {
                (true, true) => watch::Mode::OnceJson,
                (true, false) => watch::Mode::Once,
                (false, _) if plain => watch::Mode::Plain,
                (false, _) => watch::Mode::Live,
            };
            watch::run(conn, mode, shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Platform(cmd) => platform::platform(cmd).await,
        Command::Swap(args) => args.run().await,
        Command::Pin(args) => args.run(&cfg).await,
        Command::Ussd(args) => args.run().await,
        Command::Sms(args) => args.run().await,
        Command::Modem(args) => {
            args.run(shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Modems(args) => {
            args.run(shutdown_token()).await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "emulators")]
        Command::Emulate(e) => e.run(shutdown_token()).await,
        Command::Refill(args) => args.run().await,
    }
}
