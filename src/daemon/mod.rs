//! `simgate run`: the daemon. A closed set of events drives one loop; everything that can
//! happen to the daemon is a variant of [`Event`], handled in one `match`. Each source of
//! events has its own sub-module (readers here; modems and platform commands beside it)
//! holding its state and its handlers.

mod commands;
mod modems;
mod readers;
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
    /// Spare AT ports of modems ModemManager keeps: suspend and resume are refused there.
    pub modems_shared: Vec<String>,
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
    CommandDone { id: String, result: commands::Done },
    /// Time to tell the service manager's watchdog the loop is alive.
    Watchdog,
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
            },
            store,
            link,
            events,
            read_settings,
        }
    }

    /// Store an observation and publish what changed (see `Recorder::record`).
    pub(crate) async fn record(&self, obs: &Observed) -> Result<(), DaemonError> {
        Ok(self.rec.record(obs)?)
    }
}

/// Run until `cancel` fires.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), DaemonError> {
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

    let (rec, mut platform_rx, link_task) =
        crate::agent::start(store, settings.broker.as_ref(), &cancel)?;
    // No watcher: a closed receiver, so its branch of the select is never taken.
    let (mut reader_rx, watcher) = match watch_readers {
        true => {
            let (rx, task) = crate::agent::watch_readers(settings.readers.clone(), &cancel);
            (rx, Some(task))
        }
        false => (mpsc::channel::<ReaderEvent>(1).1, None),
    };
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(64);
    let ctx = Ctx::new(rec.store, rec.link, events_tx, settings.read);
    let (mut readers, mut reads_rx) = ReaderManager::new(settings.readers.clone(), settings.read);
    let mut commands = commands::Commands::default();
    // Command ids are kept until their command expires (a repeat after it is refused
    // as expired), at most MAX_COMMAND_IDS of them (store::commands).
    commands::Commands::recover(&ctx)?;
    let (modem_tx, mut modem_rx) = mpsc::channel::<ModemEvent>(64);
    let mut modems = modems::Modems::start(&settings, profiles, &ctx, &cancel, modem_tx);
    let mut service = service::Service::new(watch_readers, &settings.modems);
    let mut watchdog = service.watchdog().map(tokio::time::interval);
    tracing::info!(agent = %settings.agent_id, state_dir = %settings.state_dir.display(), "simgate running");
    service.after_event(&ctx);

    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick(&mut watchdog) => Event::Watchdog,
            Some(ev) = reader_rx.recv() => Event::Reader(ev),
            Some(ev) = modem_rx.recv() => Event::Modem(ev),
            Some(ev) = events_rx.recv() => ev,
            Some(done) = reads_rx.recv() => Event::CardRead(Box::new(done)),
            Some(msg) = platform_rx.recv() => Event::Platform(msg),
        };
        match event {
            Event::Reader(ev) => {
                service.on_reader(&ev);
                readers.on_event(&ctx.rec, ev)?
            }
            Event::Modem(ev) => {
                service.on_modem(&ev);
                modems.on_event(&ctx, ev).await?
            }
            Event::CardRead(done) => readers::on_card_read(&ctx, &mut readers, *done)?,
            Event::Platform(msg) => commands.on_platform(&ctx, msg, &modems).await?,
            Event::CommandDone { id, result } => commands.on_done(&ctx, id, result).await?,
            Event::Watchdog => service.ping(&ctx),
        }
        service.after_event(&ctx);
    }

    tracing::info!("shutting down");
    ctx.store.flush()?;
    // The watcher wakes through SCardCancel; the link publishes offline then ends.
    if let Some(w) = watcher {
        let _ = tokio::time::timeout(Duration::from_secs(3), w).await;
    }
    modems.join().await;
    if let Some(t) = link_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    Ok(())
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
