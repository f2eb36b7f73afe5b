//! `simgate run`: the daemon. A closed set of events drives one loop; everything that can
//! happen to the daemon is a variant of [`Event`], handled in one `match`. Each source of
//! events has its own sub-module (readers here; modems and platform commands beside it)
//! holding its state and its handlers.

mod changes;
mod commands;
mod modems;
mod readers;

use crate::link::contract::SimState;
use crate::link::{Link, LinkSettings, Received};
use crate::modem::supervisor::ModemEvent;
use crate::modem::{ProfileError, Profiles};
use crate::reader::watch::{self, ReaderEvent};
use crate::reader::{CardRead, ReaderError};
use crate::sim::Observed;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use readers::observed_from_read;

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

/// Everything that can happen to the daemon.
#[derive(Debug)]
pub(crate) enum Event {
    /// The PC/SC watcher saw something.
    Reader(ReaderEvent),
    /// A modem supervisor reported something.
    Modem(ModemEvent),
    /// A card read finished. `generation` ties it to the insertion it answers: a read
    /// finishing after its card left is stale and dropped.
    CardRead {
        reader: String,
        generation: u64,
        result: Box<Result<CardRead, ReaderError>>,
    },
    /// The platform sent a command or a SIM record.
    Platform(Received),
    /// A command's asynchronous work (a card re-read) finished.
    CommandDone { id: String, result: commands::Done },
}

/// What every handler may use: the store, the link, and a way to post events back into
/// the loop (for work finished on other threads).
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) store: Store,
    pub(crate) link: Option<Link>,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) read_settings: crate::reader::ReadSettings,
}

impl Ctx {
    /// Store an observation and publish what changed: the events it implies (inserted,
    /// removed, swapped, identity changed) and the SIM's state row with the cached
    /// platform record. The store comes first: what was shown is kept. An observation
    /// equal to the last one but for its time publishes nothing (bytes cost money).
    pub(crate) async fn record(&self, obs: &Observed) -> Result<(), DaemonError> {
        let prev = self.store.get_observed(&obs.iccid)?;
        self.store.put_observed(obs)?;
        if prev
            .as_ref()
            .is_some_and(|p| changes::same_but_time(p, obs))
        {
            return Ok(());
        }
        // A SIM arriving where another one was last seen present: that one was swapped
        // out without a removal being seen (a modem reporting a new ICCID in its slot).
        let mut replaced = Vec::new();
        if obs.present
            && prev
                .as_ref()
                .is_none_or(|p| !p.present || p.location != obs.location)
        {
            for mut other in self.store.all_observed()? {
                if other.iccid != obs.iccid && other.present && other.location == obs.location {
                    other.present = false;
                    other.observed_at = obs.observed_at;
                    self.store.put_observed(&other)?;
                    replaced.push(other);
                }
            }
        }
        if let Some(link) = &self.link {
            for old in &replaced {
                let platform = self.store.get_platform(&old.iccid)?;
                link.publish_state(&SimState::merged(old, platform.as_ref()))?;
            }
            for ev in changes::events(prev.as_ref(), obs, &replaced) {
                link.publish_event(ev)?;
            }
            let platform = self.store.get_platform(&obs.iccid)?;
            link.publish_state(&SimState::merged(obs, platform.as_ref()))?;
        }
        Ok(())
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

    let (platform_tx, mut platform_rx) = mpsc::unbounded_channel::<Received>();
    let (link, link_task) = Link::start_if(
        settings.broker.as_ref(),
        &store,
        platform_tx,
        cancel.clone(),
    )?;

    let (reader_tx, mut reader_rx) = mpsc::channel::<ReaderEvent>(64);
    let watcher = watch_readers.then(|| {
        let patterns = settings.readers.clone();
        let cancel = cancel.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || watch::watch(patterns, reader_tx, cancel, rt))
    });
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(64);
    let ctx = Ctx {
        store,
        link,
        events: events_tx,
        read_settings: settings.read,
    };
    let mut readers = readers::Readers::default();
    let mut commands = commands::Commands::default();
    // Command ids are kept until their command expires (a repeat after it is refused
    // as expired), at most MAX_COMMAND_IDS of them (store::commands).
    commands::Commands::recover(&ctx)?;
    let (modem_tx, mut modem_rx) = mpsc::channel::<ModemEvent>(64);
    let mut modems = modems::Modems::start(&settings, profiles, &ctx, &cancel, modem_tx);
    tracing::info!(agent = %settings.agent_id, state_dir = %settings.state_dir.display(), "simgate running");

    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = reader_rx.recv() => Event::Reader(ev),
            Some(ev) = modem_rx.recv() => Event::Modem(ev),
            Some(ev) = events_rx.recv() => ev,
            Some(msg) = platform_rx.recv() => Event::Platform(msg),
        };
        match event {
            Event::Reader(ev) => readers.on_reader_event(&ctx, ev).await?,
            Event::Modem(ev) => modems.on_event(&ctx, ev).await?,
            Event::CardRead {
                reader,
                generation,
                result,
            } => {
                readers
                    .on_card_read(&ctx, reader, generation, *result)
                    .await?
            }
            Event::Platform(msg) => commands.on_platform(&ctx, msg, &modems).await?,
            Event::CommandDone { id, result } => commands.on_done(&ctx, id, result).await?,
        }
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
