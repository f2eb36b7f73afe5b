//! `simgate run`: the daemon. A closed set of events drives one loop; everything that can
//! happen to the daemon is a variant of [`Event`], handled in one `match`. Each source of
//! events has its own sub-module (readers here; modems and platform commands beside it)
//! holding its state and its handlers.

pub(crate) mod commands;
mod esim_download;
mod modems;
mod readers;
mod refill;
pub mod reload;
mod rules;
mod swap;
pub(crate) mod work;

pub use swap::SwapSettings;
mod service;

use crate::agent::{FinishedRead, ReaderManager, RecordError, Recorder};
use crate::link::{Link, LinkSettings, Received};
use crate::modem::supervisor::ModemEvent;
use crate::modem::{ProfileError, Profiles};
use crate::reader::watch::ReaderEvent;
use crate::reader::ReaderError;
use crate::sim::Observed;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the daemon needs to run, resolved from flags, environment and config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub agent_id: String,
    pub state_dir: PathBuf,
    /// Empty: no platform link (local only).
    pub broker: Option<LinkSettings>,
    /// Reader names or patterns; empty: all readers.
    pub readers: Vec<String>,
    /// Card timeout and what a card read covers.
    pub read: crate::reader::ReadSettings,
    /// Modem ports (serial device paths or tcp://host:port); empty: no modems.
    pub modems: Vec<String>,
    /// A directory of modem profiles overriding and adding to the shipped ones.
    pub profile_dir: Option<PathBuf>,
    /// Steady-state modem poll.
    pub modem_poll: Duration,
    /// Port → network interface of its bearer, for interface usage counters.
    pub modem_netdevs: std::collections::BTreeMap<String, String>,
    /// Port → its eUICC transport, over the family's (`modems.euicc_transport`).
    pub modem_euicc_transport:
        std::collections::BTreeMap<String, crate::modem::profile::EuiccTransport>,
    /// Per-step limits of a guided SIM swap.
    pub swap: SwapSettings,
    /// Spare AT ports of modems ModemManager keeps: suspend and resume are refused there.
    pub modems_shared: Vec<String>,
    /// The PINs locked modem SIMs may be given once per boot (`modems.pins_file`).
    pub pins: Option<std::sync::Arc<crate::pins::Pins>>,
    /// Serve the station page (src/http); None: no page.
    pub http: Option<crate::http::Settings>,
    /// Profile downloads (`esim_download`): the CIs an SM-DP+ must chain to.
    pub esim: crate::config::Esim,
    /// Read the configuration again on SIGHUP; None: a SIGHUP is ignored (said).
    pub reload: Option<reload::Reloader>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error(transparent)]
    Reader(#[from] ReaderError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(std::io::Error),
}

impl From<RecordError> for DaemonError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => DaemonError::Store(e),
            RecordError::Link(e) => DaemonError::Link(e),
        }
    }
}

/// Everything that can happen to the daemon.
#[derive(Debug)]
pub(crate) enum Event {
    /// The PC/SC watcher saw something.
    Reader(ReaderEvent),
    /// A modem supervisor reported something.
    Modem(ModemEvent),
    /// A card read finished (stale when its card left before it did).
    CardRead(Box<FinishedRead>),
    /// The platform sent a command or a SIM record.
    Platform(Received),
    /// A command's asynchronous work (a card re-read) finished.
    CommandDone { id: String, result: work::Done },
    /// A rule firing's actions were applied (their outcomes inside).
    FiringDone(Box<crate::store::rules::FiringRecord>),
    /// A SIM swap changed which rows are Pending: record these rows again.
    SwapRows(Vec<String>),
    /// A SIM swap ended (committed or rolled back): forget it, record its rows again,
    /// finish its command.
    SwapEnded {
        id: String,
        rows: Vec<String>,
        result: work::Done,
    },
    /// A profile download's work ended (src/daemon/esim_download.rs): its command
    /// finishes, or the swap to the new profile starts.
    DownloadDone {
        id: String,
        finished: esim_download::Finished,
    },
    /// Time to tell the service manager's watchdog the loop is alive.
    Watchdog,
    /// Time to evaluate every present SIM's rules for the time-based triggers.
    RulesTick,
    /// SIGHUP: read the configuration again (src/daemon/reload.rs).
    Reload,
    /// A command from the station page's buttons (src/http): the platform's path.
    Web(crate::http::WebCommand),
}

/// What every handler may use: the store, the link, the recorder over both, and a way
/// to post events back into the loop (for work finished on other threads).
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) link: Option<Link>,
    pub(crate) rec: Recorder,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) read_settings: crate::reader::ReadSettings,
    pub(crate) swap: SwapSettings,
    pub(crate) esim: crate::config::Esim,
}

impl Ctx {
    pub(crate) fn new(
        store: Store,
        link: Option<Link>,
        events: mpsc::Sender<Event>,
        read_settings: crate::reader::ReadSettings,
    ) -> Ctx {
        Ctx {
            rec: Recorder {
                store: store.clone(),
                link: link.clone(),
                feed: None,
            },
            store,
            link,
            events,
            read_settings,
            swap: SwapSettings::default(),
            esim: crate::config::Esim::default(),
        }
    }

    /// Store an observation and publish what changed (see `Recorder::record`). Its
    /// Pending follows the store's swap records (src/daemon/swap.rs): every row recorded
    /// here says whether a swap involving it is under way.
    pub(crate) async fn record(&self, obs: &Observed) -> Result<(), DaemonError> {
        let pending = self.store.swap_pending(&obs.iccid)?;
        if pending == obs.pending {
            return Ok(self.rec.record(obs)?);
        }
        let mut obs = obs.clone();
        obs.pending = pending;
        Ok(self.rec.record(&obs)?)
    }
}

/// How often every present SIM's rules are evaluated for the time-based triggers.
const RULES_EVERY: Duration = Duration::from_secs(60);

/// The SIMs an event may change the facts of (and the SIM that replaced one), whose
/// rules are evaluated once it is handled.
fn touched(ev: &Event) -> Vec<(String, Option<String>)> {
    match ev {
        Event::Modem(ModemEvent::Usage { iccid, .. } | ModemEvent::Session { iccid, .. }) => {
            vec![(iccid.clone(), None)]
        }
        Event::Modem(ModemEvent::Identified(info)) => {
            info.sim.iccid.iter().map(|i| (i.clone(), None)).collect()
        }
        Event::Modem(ModemEvent::SimInserted { info, previous }) => {
            let mut out: Vec<_> = info.sim.iccid.iter().map(|i| (i.clone(), None)).collect();
            if let (Some(old), Some(new)) = (previous, &info.sim.iccid) {
                if old != new {
                    out.push((old.clone(), Some(new.clone())));
                }
            }
            out
        }
        Event::Platform(Received::PlatformRecord { iccid, .. }) => vec![(iccid.clone(), None)],
        Event::CardRead(done) => match &done.result {
            Ok(read) => read
                .identity
                .iccid
                .iter()
                .map(|i| (i.to_string(), None))
                .collect(),
            Err(_) => vec![],
        },
        _ => vec![],
    }
}

/// Run until `cancel` fires.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), DaemonError> {
    // However the loop ends — an error too (a full disk: tests/it/chaos.rs) — every task
    // and watcher it started is told to stop, so the process exits instead of waiting
    // on the PC/SC watcher's blocking thread.
    let _stop_all = cancel.clone().drop_guard();
    let store = Store::open(&settings.state_dir)?;
    // A modem-only gateway has no pcscd: readers are watched when some were named, or
    // when no modem was (a reader station).
    let watch_readers = !settings.readers.is_empty() || settings.modems.is_empty();
    if watch_readers {
        readers::check_exact_names(&settings.readers).await?;
    }
    let profiles = Arc::new(match &settings.profile_dir {
        Some(dir) => Profiles::with_overrides(dir)?,
        None => Profiles::shipped()?,
    });

    let feed = settings
        .http
        .as_ref()
        .map(|_| crate::http::Feed::new("run", &settings.agent_id));
    let (rec, mut platform_rx, link_task) =
        crate::agent::start(store, settings.broker.as_ref(), feed.clone(), &cancel)?;
    let service = service::Service::new(watch_readers, &settings.modems, rec.link.clone());
    let (mut web_rx, http_task) =
        start_page(&settings, feed, &rec.store, &service, &cancel).await?;
    // No watcher: a closed receiver, so its branch of the select is never taken.
    let (mut reader_rx, watcher) = match watch_readers {
        true => {
            let (rx, task) = crate::agent::watch_readers(settings.readers.clone(), &cancel);
            (rx, Some(task))
        }
        false => (mpsc::channel::<ReaderEvent>(1).1, None),
    };
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(64);
    let (modem_tx, mut modem_rx) = mpsc::channel::<ModemEvent>(64);
    let (mut daemon, mut reads_rx) = Daemon::start(
        &settings, rec, events_tx, profiles, service, &cancel, modem_tx,
    )?;
    // Time-based triggers (date, days left, hours without a session) need a clock tick;
    // the others are evaluated as their facts change.
    let mut rules_tick = tokio::time::interval(RULES_EVERY);
    rules_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog = daemon.service.watchdog().map(tokio::time::interval);
    // Installed before READY, so a reload never finds the default disposition
    // (SIGHUP's is to end the process).
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(DaemonError::Signal)?;
    tracing::info!(agent = %settings.agent_id, state_dir = %settings.state_dir.display(), "simgate running");
    daemon.service.after_event(&daemon.ctx);

    loop {
        // Biased: hardware events before the results of work that followed them (a
        // swap's end comes after the SIM changes it caused: src/daemon/swap.rs).
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick(&mut watchdog) => Event::Watchdog,
            Some(()) = hangup.recv() => Event::Reload,
            Some(ev) = reader_rx.recv() => Event::Reader(ev),
            Some(ev) = modem_rx.recv() => Event::Modem(ev),
            Some(ev) = events_rx.recv() => ev,
            Some(done) = reads_rx.recv() => Event::CardRead(Box::new(done)),
            Some(msg) = platform_rx.recv() => Event::Platform(msg),
            Some(cmd) = web_rx.recv() => Event::Web(cmd),
            _ = rules_tick.tick() => Event::RulesTick,
        };
        daemon.handle(event).await?;
    }

    tracing::info!("shutting down");
    daemon.ctx.store.flush()?;
    // The watcher wakes through SCardCancel; the link publishes offline then ends.
    if let Some(w) = watcher {
        let _ = tokio::time::timeout(Duration::from_secs(3), w).await;
    }
    daemon.modems.join().await;
    for t in [link_task, http_task].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    Ok(())
}

/// The station page, when asked for: its commands come into the loop through the
/// receiver; with `[http] metrics`, the service's view answers /health and /metrics.
/// No page: the receiver is closed, so the loop's branch for it is never taken.
async fn start_page(
    settings: &Settings,
    feed: Option<crate::http::Feed>,
    store: &Store,
    service: &service::Service,
    cancel: &CancellationToken,
) -> Result<
    (
        mpsc::Receiver<crate::http::WebCommand>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    DaemonError,
> {
    let (web_tx, web_rx) = mpsc::channel::<crate::http::WebCommand>(16);
    let (Some(h), Some(feed)) = (&settings.http, feed) else {
        return Ok((web_rx, None));
    };
    let page = crate::http::Page {
        feed,
        store: store.clone(),
        token: h.token.as_deref().map(Into::into),
        act: Some(web_tx),
        csv: None,
        cancel: cancel.clone(),
        probe: h.metrics.then(|| service.probe()),
    };
    let (_, task) = crate::http::start(h, page).await?;
    Ok((web_rx, Some(task)))
}

/// What the loop's handlers work on: the context, and each event source's state.
struct Daemon {
    ctx: Ctx,
    readers: ReaderManager,
    commands: commands::Commands,
    modems: modems::Modems,
    service: service::Service,
    reloader: Option<reload::Reloader>,
}

impl Daemon {
    /// The handlers' state, with what a previous run left unfinished taken up: commands
    /// under way, rules' pending effects, swaps, profile downloads. Also gives the
    /// receiver of the reader manager's finished reads.
    fn start(
        settings: &Settings,
        rec: Recorder,
        events: mpsc::Sender<Event>,
        profiles: Arc<Profiles>,
        service: service::Service,
        cancel: &CancellationToken,
        modem_tx: mpsc::Sender<ModemEvent>,
    ) -> Result<(Daemon, mpsc::Receiver<FinishedRead>), DaemonError> {
        let mut ctx = Ctx::new(rec.store, rec.link, events, settings.read);
        ctx.rec.feed = rec.feed;
        ctx.swap = settings.swap;
        ctx.esim = settings.esim.clone();
        let (readers, reads_rx) = ReaderManager::new(settings.readers.clone(), settings.read);
        let mut commands = commands::Commands::default();
        // Command ids are kept until their command expires (a repeat after it is refused
        // as expired), at most MAX_COMMAND_IDS of them (store::commands).
        commands::Commands::recover(&ctx)?;
        let modems = modems::Modems::start(settings, profiles, &ctx, cancel, modem_tx);
        rules::resume_pending(&ctx, &modems)?;
        // A swap a previous run left unfinished is committed or rolled back now (it never
        // stays Pending); its command finishes through the usual path.
        for id in swap::recover(&ctx, &modems)? {
            commands.adopt(id);
        }
        // A profile download a kill cut is settled from what its eUICC says.
        for id in esim_download::recover(&ctx, &modems)? {
            commands.adopt(id);
        }
        let daemon = Daemon {
            ctx,
            readers,
            commands,
            modems,
            service,
            reloader: settings.reload.clone(),
        };
        Ok((daemon, reads_rx))
    }

    /// The loop's one `match`: an event handled, then the rules of the SIMs it touched
    /// evaluated, then the service manager told.
    async fn handle(&mut self, event: Event) -> Result<(), DaemonError> {
        let Daemon {
            ctx,
            readers,
            commands,
            modems,
            service,
            ..
        } = self;
        let touched = touched(&event);
        match event {
            Event::Reader(ev) => {
                service.on_reader(&ev);
                readers.on_event(&ctx.rec, ev)?
            }
            Event::Modem(ev) => {
                service.on_modem(&ev);
                modems.on_event(ctx, ev).await?
            }
            Event::CardRead(done) => readers::on_card_read(ctx, readers, *done)?,
            Event::Platform(msg) => commands.on_platform(ctx, msg, modems).await?,
            Event::CommandDone { id, result } => {
                // A command that re-read a card in a reader (refresh, esim_*) may have
                // found another SIM key there (a profile switch): the reader manager
                // must know, so the card's removal later removes the right row.
                if let Ok(Some(obs)) = &result {
                    if let crate::sim::Location::Reader { reader } = &obs.location {
                        readers.holds(reader, &obs.iccid);
                    }
                }
                commands.on_done(ctx, id, result).await?
            }
            Event::Watchdog => service.ping(ctx),
            Event::RulesTick => {
                for obs in ctx.store.all_observed()?.into_iter().filter(|o| o.present) {
                    rules::evaluate(ctx, modems, &obs.iccid, None)?;
                }
            }
            Event::Reload => self.reload(),
            Event::SwapRows(iccids) => swap::rerecord(ctx, &iccids).await?,
            Event::SwapEnded { id, rows, result } => {
                // Rows first (no longer Pending), then the outcome: a platform seeing the
                // outcome sees the rows of the swap's end. A crash between the two reports
                // the command interrupted at the next start; the rows tell how it ended.
                swap::ended(ctx, &id, &rows).await?;
                commands.on_done(ctx, id, result).await?
            }
            Event::DownloadDone { id, finished } => {
                // Finished here unless the swap to the new profile took the command over.
                if let Some(result) = esim_download::done(ctx, modems, &id, finished)? {
                    commands.on_done(ctx, id, result).await?
                }
            }
            Event::FiringDone(rec) => rules::on_done(ctx, *rec)?,
            Event::Web(w) => {
                // The same claim, record and report as a platform command.
                let msg = Received::Command {
                    command: Ok(w.command),
                    ack: crate::link::AckToken::local(),
                };
                commands.on_platform(ctx, msg, modems).await?;
                let _ = w.claimed.send(());
            }
        }
        for (iccid, replaced_by) in touched {
            rules::evaluate(&self.ctx, &self.modems, &iccid, replaced_by)?;
        }
        self.service.after_event(&self.ctx);
        Ok(())
    }

    /// SIGHUP: the configuration read again; its live keys applied to the next read or
    /// swap (src/daemon/reload.rs names the others).
    fn reload(&mut self) {
        match self.reloader.as_mut().and_then(|r| r.reload()) {
            Some(cfg) => {
                self.ctx.read_settings = crate::reader::ReadSettings::from_config(&cfg.readers);
                self.readers.set_read_settings(self.ctx.read_settings);
                self.ctx.swap = SwapSettings {
                    register: Duration::from_secs(cfg.modems.swap_register_secs),
                    replace: Duration::from_secs(cfg.modems.swap_replace_secs),
                };
            }
            None if self.reloader.is_none() => {
                tracing::warn!("SIGHUP: no configuration to read again");
            }
            None => {}
        }
    }
}

/// The next watchdog tick, or never when the service manager wants none.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}
