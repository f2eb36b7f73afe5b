//! `simgate station`: a reader station for warehouse staff. SIMs are inserted one after
//! another into one or more readers; each read is reported at once, with warnings for a
//! duplicate in this batch, a Luhn failure and an unreadable card, and a running count.
//! The loop runs on the reader manager and recorder `simgate run` uses (src/agent); what
//! a person sees is the caller's [`Screen`] (src/cli/station.rs).
//!
//! Every read is made durable before it is shown: appended to the CSV (fsync), stored,
//! queued for the platform — a crash loses nothing the person has already seen.

pub mod codes;
mod csv;
pub mod provision;

use crate::agent::{FinishedRead, ReaderManager, RecordError, Recorder};
use crate::link::{LinkSettings, Received};
use crate::observe::CardReport;
use crate::reader::watch::ReaderEvent;
use crate::reader::{ReadSettings, ReaderError};
use crate::sim::{Batch, FormFactor, Observed};
use crate::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a station needs, resolved from flags and config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Reader names or patterns; empty: all readers.
    pub readers: Vec<String>,
    pub batch: Batch,
    /// Append every read to this CSV file.
    pub csv: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub broker: Option<LinkSettings>,
    pub read: ReadSettings,
    /// Serve the station page (src/http); None: no page.
    pub http: Option<crate::http::Settings>,
    /// `--disable-pin`: the batch's PIN, disabled on every card inserted.
    pub disable_pin: Option<crate::sim::Secret>,
    /// `--provision FILE`: a profile onto every Blank eUICC inserted (src/station/
    /// provision.rs); its results go to `plan.results`, not `csv`.
    pub provision: Option<provision::Plan>,
}

#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Link(#[from] crate::link::LinkError),
    #[error("{path}: {source}")]
    Csv {
        path: String,
        source: std::io::Error,
    },
    /// Its source is kept: a closed pipe (`| head`) ends the command quietly (src/cli/out.rs).
    #[error("stdout: {0}")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

impl From<RecordError> for StationError {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::Store(e) => StationError::Store(e),
            RecordError::Link(e) => StationError::Link(e),
        }
    }
}

/// Where the station shows what happens: a terminal, NDJSON, a web page.
pub trait Screen {
    /// Once, before the first read.
    fn header(&mut self, settings: &Settings) -> std::io::Result<()>;
    /// A reader or the PC/SC service came or went.
    fn note(&mut self, text: &str) -> std::io::Result<()>;
    /// A read, already durable, with the batch so far.
    fn row(&mut self, read: &CardReport, tally: &Tally) -> std::io::Result<()>;
    /// Once, when the batch ends.
    fn summary(&mut self, tally: &Tally) -> std::io::Result<()>;
    /// A card's provisioning, as it goes (`--provision`): the code given, the profile's
    /// preview, the package loading, the end in words. An end is already durable (store
    /// and results CSV) when shown.
    fn provision(&mut self, p: &crate::observe::ProvisionReport) -> std::io::Result<()>;
}

/// The batch so far: what was read, for duplicates and the count.
#[derive(Debug, Default)]
pub struct Tally {
    n: u64,
    /// Key (ICCID, or EID for a Blank eSIM) → the read number that first saw it.
    seen: HashMap<String, u64>,
    warned: u64,
}

impl Tally {
    /// Reads in this batch, unreadable cards included.
    pub fn reads(&self) -> u64 {
        self.n
    }

    /// Distinct SIMs read.
    pub fn unique(&self) -> usize {
        self.seen.len()
    }

    /// Reads that carried a warning.
    pub fn warned(&self) -> u64 {
        self.warned
    }
}

/// Run the station until `cancel` fires. Returns the number of reads.
pub async fn run(
    settings: Settings,
    screen: &mut dyn Screen,
    cancel: CancellationToken,
) -> Result<u64, StationError> {
    // However the loop ends, its tasks and watchers stop with it (as in daemon::run).
    let _stop_all = cancel.clone().drop_guard();
    let store = Store::open(&settings.state_dir)?;
    let (feed, http_task) = start_page(&settings, &store, &cancel).await?;
    let (rec, platform_rx, link_task) =
        crate::agent::start(store, settings.broker.as_ref(), feed.clone(), &cancel)?;
    cache_records(&rec, platform_rx);
    let csv = settings.csv.as_deref().map(csv::Csv::open).transpose()?;
    screen.header(&settings).map_err(StationError::Output)?;
    let (mut reader_rx, watcher) = crate::agent::watch_readers(settings.readers.clone(), &cancel);
    let (readers, mut reads) = ReaderManager::new(settings.readers.clone(), settings.read);
    let mut st = Station {
        settings: &settings,
        screen,
        feed,
        rec,
        readers,
        tally: Tally::default(),
        csv,
        prov: None,
        results: None,
    };
    let (mut prov_progress, mut prov_done) = st.start_provisioning()?;

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = reader_rx.recv() => st.on_reader(ev)?,
            Some(p) = next(&mut prov_progress) => st.show_provision(&p)?,
            Some(done) = next(&mut prov_done) => st.on_provisioned(done)?,
            Some(done) = reads.recv() => st.on_read(done).await?,
        }
    }

    st.screen.summary(&st.tally).map_err(StationError::Output)?;
    st.rec.store.flush()?;
    let _ = tokio::time::timeout(Duration::from_secs(3), watcher).await;
    for t in [link_task, http_task].into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    Ok(st.tally.n)
}

/// The station page, when asked for: read-only (a station takes no commands).
async fn start_page(
    settings: &Settings,
    store: &Store,
    cancel: &CancellationToken,
) -> Result<
    (
        Option<crate::http::Feed>,
        Option<tokio::task::JoinHandle<()>>,
    ),
    StationError,
> {
    let Some(h) = &settings.http else {
        return Ok((None, None));
    };
    let agent = settings.broker.as_ref().map_or("", |b| b.agent_id.as_str());
    let feed = crate::http::Feed::new("station", agent);
    feed.station(&settings.batch, &settings.readers, settings.csv.is_some());
    let page = crate::http::Page {
        feed: feed.clone(),
        store: store.clone(),
        token: None,
        act: None,
        csv: settings.csv.clone(),
        cancel: cancel.clone(),
        // A station is watched by the person at it, not by monitoring.
        probe: None,
    };
    let (_, task) = crate::http::start(h, page).await?;
    Ok((Some(feed), Some(task)))
}

/// A station caches the platform's records (so rows carry them) and takes no commands:
/// those are for `simgate run`; acknowledged so the broker lets go. A task of its own,
/// for as long as the link sends.
fn cache_records(rec: &Recorder, mut platform_rx: tokio::sync::mpsc::Receiver<Received>) {
    let Some(l) = rec.link.clone() else {
        return;
    };
    let (store, page) = (rec.store.clone(), rec.clone());
    tokio::spawn(async move {
        while let Some(msg) = platform_rx.recv().await {
            match msg {
                Received::PlatformRecord {
                    iccid,
                    record: Ok(rec),
                    ack,
                } => {
                    if let Err(e) = store.put_platform(&iccid, &rec.unwrap_or_default()) {
                        tracing::warn!(%iccid, error = %e, "platform record not cached");
                    } else if let Ok(Some(obs)) = store.get_observed(&iccid) {
                        // The page shows the record's fields (QR code included).
                        if let Err(e) = page.show(&obs) {
                            tracing::warn!(%iccid, error = %e, "row not shown on the page");
                        }
                    }
                    l.ack(ack);
                }
                Received::PlatformRecord { ack, .. } => l.ack(ack),
                Received::Command { ack, .. } => {
                    tracing::warn!("a command reached a station; stations take none");
                    l.ack(ack);
                }
            }
        }
    });
}

/// The loop's state: where reads go (CSV, store, page, screen) and the batch so far.
struct Station<'a> {
    settings: &'a Settings,
    screen: &'a mut dyn Screen,
    feed: Option<crate::http::Feed>,
    rec: Recorder,
    readers: ReaderManager,
    tally: Tally,
    csv: Option<csv::Csv>,
    /// `--provision`: the provisioner and its results CSV.
    prov: Option<provision::Provisioner>,
    results: Option<csv::Csv>,
}

/// The provisioner's channels: progress reports, and downloads finished.
type ProvisionChannels = (
    Option<tokio::sync::mpsc::UnboundedReceiver<crate::observe::ProvisionReport>>,
    Option<tokio::sync::mpsc::UnboundedReceiver<provision::Finished>>,
);

impl Station<'_> {
    /// `--provision`: the provisioner loaded, its results CSV opened, where it stands
    /// told; its channels for the loop (none without a plan).
    fn start_provisioning(&mut self) -> Result<ProvisionChannels, StationError> {
        let Some(plan) = &self.settings.provision else {
            return Ok((None, None));
        };
        let (p, progress, done) =
            provision::Provisioner::new(plan.clone(), self.rec.store.clone())?;
        self.results = Some(csv::Csv::open_results(p.results())?);
        self.note(&p.standing())?;
        self.prov = Some(p);
        Ok((Some(progress), Some(done)))
    }

    /// A line for the person, on the page and the screen.
    fn note(&mut self, text: &str) -> Result<(), StationError> {
        if let Some(f) = &self.feed {
            f.note(text);
        }
        self.screen.note(text).map_err(StationError::Output)
    }

    /// A card's provisioning as it goes, on the page and the screen.
    fn show_provision(&mut self, p: &crate::observe::ProvisionReport) -> Result<(), StationError> {
        if let Some(f) = &self.feed {
            f.provision(p);
        }
        self.screen.provision(p).map_err(StationError::Output)
    }

    /// A reader or the PC/SC service came or went: told, then the manager's.
    fn on_reader(&mut self, ev: ReaderEvent) -> Result<(), StationError> {
        let note = match &ev {
            ReaderEvent::ReaderAdded { reader } => Some(format!("reader ready: {reader}")),
            ReaderEvent::ReaderRemoved { reader } => Some(format!("reader gone: {reader}")),
            ReaderEvent::ServiceLost { error } => {
                Some(format!("PC/SC service lost ({error}); reconnecting"))
            }
            _ => None,
        };
        if let Some(n) = note {
            self.note(&n)?;
        }
        Ok(self.readers.on_event(&self.rec, ev)?)
    }

    /// A download ended: durable first (the store, then the results CSV), then shown.
    fn on_provisioned(&mut self, done: provision::Finished) -> Result<(), StationError> {
        let Some(prov) = self.prov.as_mut() else {
            return Ok(());
        };
        let (p, row) = prov.on_finished(done)?;
        if let Some(r) = self.results.as_mut() {
            r.append_result(&row)?;
        }
        self.show_provision(&p)
    }

    /// A card read finished: its PIN disabled (`--disable-pin`), tallied, made durable
    /// (CSV, store and outbox), shown, then handed to the provisioner (`--provision`).
    async fn on_read(&mut self, done: FinishedRead) -> Result<(), StationError> {
        let current = self.readers.is_current(&done);
        let to_provision = match (&self.prov, &done.result) {
            (Some(_), Ok(read)) if current => Some(read.clone()),
            _ => None,
        };
        let job = match (&self.settings.disable_pin, &done.result) {
            (Some(pin), Ok(read)) if current => {
                Some(disable_pin(&done.reader, read, pin.clone(), self.settings.read).await)
            }
            _ => None,
        };
        let (mut report, mut obs) =
            tally_read(&mut self.tally, &self.rec.store, &self.settings.batch, done)?;
        if let Some(job) = job {
            if let (Some(o), Some(lock)) = (obs.as_mut(), job.lock) {
                o.lock = Some(lock);
            }
            if let Some(c) = report.card.as_mut() {
                c.lock = job.lock.or(c.lock);
            }
            if let Some(w) = job.warning {
                if report.warnings.is_empty() {
                    self.tally.warned += 1;
                }
                report.warnings.push(w);
            }
            report.pin_disable = Some(job.result);
        }
        // Durable first (CSV, store and outbox), then shown.
        if let Some(c) = self.csv.as_mut() {
            c.append(&report)?;
        }
        if let Some(mut obs) = obs {
            // A card pulled before its read finished is shown, not kept present.
            obs.present = current;
            self.rec.record(&obs)?;
            self.rec.store.flush()?;
            if current {
                self.readers.holds(&report.reader, &obs.iccid);
            }
        }
        if let Some(f) = &self.feed {
            f.read(
                &report,
                crate::http::Tally {
                    reads: self.tally.n,
                    unique: self.tally.seen.len() as u64,
                    warned: self.tally.warned,
                },
            );
        }
        self.screen
            .row(&report, &self.tally)
            .map_err(StationError::Output)?;
        let (Some(p), Some(read)) = (self.prov.as_mut(), to_provision) else {
            return Ok(());
        };
        let (shown, row) = match p.on_read(&read)? {
            None => return Ok(()),
            Some(provision::Decision::Started(shown)) => (shown, None),
            Some(provision::Decision::Skipped(shown, row)) => (shown, Some(row)),
        };
        if let (Some(r), Some(row)) = (self.results.as_mut(), row) {
            r.append_result(&row)?;
        }
        self.show_provision(&shown)
    }
}

/// The next message of an optional channel; never, without one (a station that does not
/// provision).
async fn next<T>(rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What `--disable-pin` did with one card.
struct PinJob {
    /// For the CSV, the screen and the page.
    result: String,
    /// What the person must look at (the card keeps its PIN).
    warning: Option<String>,
    /// The card's lock after.
    lock: Option<crate::sim::Lock>,
}

/// Disable PIN1 on the card just read: its lock is read again and guarded (src/card/
/// pin_command.rs `on_card`): a card whose PIN is already off costs nothing, one with 1 attempt
/// left is skipped, loudly.
async fn disable_pin(
    reader: &str,
    read: &crate::reader::CardRead,
    pin: crate::sim::Secret,
    settings: ReadSettings,
) -> PinJob {
    use crate::card::pin::{PinFailure, PinRefusal};
    use crate::sim::{LockState, PinOp, PinRequest};
    let lock = read.identity.lock;
    let Some(iccid) = read.identity.iccid.as_ref().map(|i| i.to_string()) else {
        return PinJob {
            result: "skipped: no ICCID".into(),
            warning: None,
            lock,
        };
    };
    // A readable IMSI right after insertion (power-on) means PIN1 is off already.
    if lock.is_some_and(|l| l.state == LockState::Ready) {
        return PinJob {
            result: "already disabled".into(),
            warning: None,
            lock,
        };
    }
    // Never a guess: a card that does not tell its attempts (a GSM SIM) keeps its PIN.
    if lock.is_none_or(|l| l.pin_attempts.is_none()) {
        return PinJob {
            result: "skipped: attempts left unknown".into(),
            warning: Some(
                "PIN NOT DISABLED: the card does not tell its attempts left; skipped".into(),
            ),
            lock,
        };
    }
    let Ok(name) = std::ffi::CString::new(reader) else {
        return PinJob {
            result: "failed: reader name".into(),
            warning: Some("PIN NOT DISABLED: the reader's name is not a C string".into()),
            lock,
        };
    };
    let req = PinRequest {
        op: PinOp::Disable,
        first: pin,
        second: None,
        force: false,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        crate::reader::with_card(&name, settings.card_timeout.saturating_mul(2), move |t| {
            (
                crate::card::pin_command::on_card(t, Some(&iccid), &req),
                false,
            )
        })
    })
    .await;
    let failed = |why: String| PinJob {
        result: format!("failed: {why}"),
        warning: Some(format!("PIN NOT DISABLED: {why}")),
        lock,
    };
    match outcome {
        Ok(Ok(Ok((Ok(after), _)))) => PinJob {
            result: "disabled".into(),
            warning: None,
            lock: after,
        },
        Ok(Ok(Ok((Err(PinFailure::Guard(PinRefusal::LastPinAttempt { .. })), _)))) => PinJob {
            result: "skipped: 1 attempt left".into(),
            warning: Some(
                "PIN NOT DISABLED: 1 attempt left; skipped (the last attempt is never spent): set it aside"
                    .into(),
            ),
            lock,
        },
        Ok(Ok(Ok((Err(f), _)))) => failed(f.to_string()),
        Ok(Ok(Err(e))) => failed(e.to_string()),
        Ok(Err(e)) => failed(e.to_string()),
        Err(e) => failed(e.to_string()),
    }
}

/// Turn a finished read into the report to show and the observation to keep.
fn tally_read(
    tally: &mut Tally,
    store: &Store,
    batch: &Batch,
    done: FinishedRead,
) -> Result<(CardReport, Option<Observed>), StationError> {
    tally.n += 1;
    let mut report = CardReport::new(
        &done.reader,
        &done.result,
        done.at,
        done.took.as_millis() as u64,
    );
    report.n = Some(tally.n);
    report.batch = batch.clone();
    let read = match done.result {
        Ok(read) => read,
        Err(e) => {
            let why = match &e {
                ReaderError::Card {
                    source: crate::card::CardError::Removed | crate::card::CardError::Transport(_),
                    ..
                } => "card pulled or lost during the read: insert it again",
                ReaderError::Card {
                    source: crate::card::CardError::Timeout(_),
                    ..
                } => "card does not answer (mute or broken): take it out",
                _ => "card could not be read",
            };
            report.warnings.push(format!("UNREADABLE: {why}"));
            tally.warned += 1;
            return Ok((report, None));
        }
    };
    let mut obs = crate::observe::from_card(&read, done.at);
    obs.batch = batch.clone();
    // Known from before this batch (a duplicate within it gets its own warning).
    if !tally.seen.contains_key(&obs.iccid) {
        report.known_since = store.get_observed(&obs.iccid)?.map(|prev| prev.observed_at);
    }
    if obs.form_factor == Some(FormFactor::Esim) {
        report.qr = obs
            .eid
            .clone()
            .or_else(|| read.identity.iccid.as_ref().map(|i| i.to_string()));
    }
    if let Some(first) = tally.seen.get(&obs.iccid) {
        report
            .warnings
            .push(format!("DUPLICATE: already read in this batch as #{first}"));
    } else {
        tally.seen.insert(obs.iccid.clone(), tally.n);
    }
    if !obs.iccid_luhn_ok {
        report
            .warnings
            .push("LUHN FAILURE: the ICCID's check digit is wrong (status Invalid)".into());
    }
    if let Some(p) = obs.problem.as_deref().filter(|_| obs.iccid_luhn_ok) {
        report.warnings.push(format!("INVALID: {p}"));
    }
    if !report.warnings.is_empty() {
        tally.warned += 1;
    }
    Ok((report, Some(obs)))
}
