//! `simgate station`: a reader station for warehouse staff. SIMs are inserted one after
//! another into one or more readers; each read appears at once as a row, eSIMs with a QR
//! code, with loud warnings for a duplicate in this batch, a Luhn failure and an
//! unreadable card, and a running count.
//!
//! Every read is made durable before it is shown: appended to the CSV (fsync), stored,
//! then published — a crash loses nothing the person has already seen.

use crate::daemon::observed_from_read;
use crate::link::contract::SimState;
use crate::link::{Link, LinkSettings, Received};
use crate::reader::watch::{self, ReaderEvent};
use crate::reader::{self, CardRead, ReadSettings, ReaderError};
use crate::sim::{Batch, FormFactor, Observed, Status};
use crate::store::Store;
use serde::Serialize;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a station needs, resolved from flags and config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Reader names or patterns; empty: all readers.
    pub readers: Vec<String>,
    pub batch: Batch,
    /// Append every read to this CSV file.
    pub csv: Option<PathBuf>,
    /// One JSON object per read on stdout instead of the screen.
    pub json: bool,
    pub state_dir: PathBuf,
    pub broker: Option<LinkSettings>,
    pub read: ReadSettings,
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
    #[error("stdout: {0}")]
    Output(std::io::Error),
}

/// One read as the station reports it: the JSON line, the CSV row and the screen row.
#[derive(Debug, Clone, Serialize)]
pub struct StationRead {
    /// Running count of reads in this batch (unreadable cards included).
    pub n: u64,
    pub at: u64,
    pub reader: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_factor: Option<FormFactor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    /// An eUICC with no enabled profile.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub blank_esim: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spn: Option<String>,
    /// What the person must look at: duplicate, Luhn failure, unreadable card ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why the card could not be read (then there is no ICCID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When this SIM was last seen before, by any earlier run on this store (unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_since: Option<u64>,
    /// The eSIM's QR code payload: the EID (or ICCID) until the platform supplies an
    /// activation code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    #[serde(flatten)]
    pub batch: Batch,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apdus: Option<u32>,
    /// From the insertion event to the end of identification.
    pub ms: u64,
}

/// The batch so far: what was read, for duplicates and the count.
#[derive(Debug, Default)]
struct Tally {
    n: u64,
    /// Key (ICCID, or EID for a Blank eSIM) → the read number that first saw it.
    seen: HashMap<String, u64>,
    warned: u64,
}

/// A finished read coming back from its reader thread.
#[derive(Debug)]
struct Done {
    reader: String,
    /// The reader's insertion count when the read began: a card pulled before its read
    /// finished is shown, but not kept as present.
    generation: u64,
    started: Instant,
    result: Result<CardRead, ReaderError>,
}

/// Run the station until `cancel` fires. Returns the number of reads.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<u64, StationError> {
    let store = Store::open(&settings.state_dir)?;
    let (platform_tx, mut platform_rx) = mpsc::unbounded_channel::<Received>();
    let (link, link_task) = Link::start_if(
        settings.broker.as_ref(),
        &store,
        platform_tx,
        cancel.clone(),
    )?;
    // A station caches the platform's records (so rows carry them) and takes no
    // commands: those are for `simgate run`; acknowledged so the broker lets go.
    if let Some(l) = link.clone() {
        let store = store.clone();
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
    let mut csv = settings.csv.as_ref().map(Csv::open).transpose()?;
    let mut screen = Screen::new(settings.json);
    screen.header(&settings)?;

    let (reader_tx, mut reader_rx) = mpsc::channel::<ReaderEvent>(64);
    let watcher = {
        let patterns = settings.readers.clone();
        let cancel = cancel.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || watch::watch(patterns, reader_tx, cancel, rt))
    };
    let (done_tx, mut done_rx) = mpsc::channel::<Done>(64);
    let mut tally = Tally::default();
    // The key of the SIM now in each reader, to mark it absent when pulled.
    let mut present: HashMap<String, String> = HashMap::new();
    // Bumped on every insertion and removal, per reader.
    let mut generations: HashMap<String, u64> = HashMap::new();

    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(ev) = reader_rx.recv() => match ev {
                ReaderEvent::CardInserted { reader, .. } => {
                    let generation = {
                        let g = generations.entry(reader.clone()).or_default();
                        *g += 1;
                        *g
                    };
                    let tx = done_tx.clone();
                    let read = settings.read;
                    let started = Instant::now();
                    // One blocking thread per insertion: readers are served in parallel.
                    tokio::task::spawn_blocking(move || {
                        let result = std::ffi::CString::new(reader.clone())
                            .map_err(|_| ReaderError::UnknownReader {
                                name: reader.clone(),
                                available: vec![],
                            })
                            .and_then(|name| reader::read_card_timeout(&name, read));
                        let _ = tx.blocking_send(Done { reader, generation, started, result });
                    });
                }
                ReaderEvent::CardRemoved { reader } => {
                    *generations.entry(reader.clone()).or_default() += 1;
                    if let Some(key) = present.remove(&reader) {
                        if let Some(mut obs) = store.get_observed(&key)? {
                            obs.present = false;
                            obs.observed_at = crate::time::unix_now();
                            record(&store, link.as_ref(), &obs).await?;
                        }
                    }
                }
                ReaderEvent::ReaderAdded { reader } => screen.note(&format!("reader ready: {reader}"))?,
                ReaderEvent::ReaderRemoved { reader } => screen.note(&format!("reader gone: {reader}"))?,
                ReaderEvent::ServiceLost { error } => {
                    screen.note(&format!("PC/SC service lost ({error}); reconnecting"))?
                }
            },
            Some(done) = done_rx.recv() => {
                let still_in = generations.get(&done.reader) == Some(&done.generation);
                let (row, mut obs) = tally_read(&mut tally, &store, &settings.batch, done)?;
                if let Some(o) = obs.as_mut() {
                    o.present = still_in;
                }
                // Durable first (CSV, store), then shown, then published.
                if let Some(c) = csv.as_mut() {
                    c.append(&row)?;
                }
                if let Some(obs) = &obs {
                    store.put_observed(obs)?;
                    store.flush()?;
                    if still_in {
                        present.insert(row.reader.clone(), obs.iccid.clone());
                    }
                }
                screen.row(&row, &tally)?;
                if let (Some(obs), Some(link)) = (&obs, &link) {
                    let platform = store.get_platform(&obs.iccid)?;
                    link.publish_state(&SimState::merged(obs, platform.as_ref()))?;
                }
            }
        }
    }

    screen.summary(&tally)?;
    store.flush()?;
    let _ = tokio::time::timeout(Duration::from_secs(3), watcher).await;
    if let Some(t) = link_task {
        let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
    }
    Ok(tally.n)
}

async fn record(store: &Store, link: Option<&Link>, obs: &Observed) -> Result<(), StationError> {
    store.put_observed(obs)?;
    if let Some(link) = link {
        let platform = store.get_platform(&obs.iccid)?;
        link.publish_state(&SimState::merged(obs, platform.as_ref()))?;
    }
    Ok(())
}

/// Turn a finished read into the row to show and the observation to keep.
fn tally_read(
    tally: &mut Tally,
    store: &Store,
    batch: &Batch,
    done: Done,
) -> Result<(StationRead, Option<Observed>), StationError> {
    tally.n += 1;
    let ms = done.started.elapsed().as_millis() as u64;
    let mut row = StationRead {
        n: tally.n,
        at: crate::time::unix_now(),
        reader: done.reader,
        iccid: None,
        form_factor: None,
        eid: None,
        blank_esim: false,
        status: None,
        imsi: None,
        operator: None,
        spn: None,
        warnings: Vec::new(),
        error: None,
        known_since: None,
        qr: None,
        batch: batch.clone(),
        apdus: None,
        ms,
    };
    let read = match done.result {
        Ok(read) => read,
        Err(e) => {
            let why = match &e {
                ReaderError::Card {
                    source: crate::card::CardError::Removed | crate::card::CardError::Transport(_),
                    ..
                } => "card pulled or lost during the read: insert it again".to_string(),
                ReaderError::Card {
                    source: crate::card::CardError::Timeout(_),
                    ..
                } => "card does not answer (mute or broken): take it out".to_string(),
                _ => "card could not be read".to_string(),
            };
            row.warnings.push(format!("UNREADABLE: {why}"));
            row.error = Some(e.to_string());
            tally.warned += 1;
            return Ok((row, None));
        }
    };
    let mut obs = observed_from_read(&read);
    obs.batch = batch.clone();
    // Known from before this batch (a duplicate within it gets its own warning).
    if !tally.seen.contains_key(&obs.iccid) {
        row.known_since = store.get_observed(&obs.iccid)?.map(|prev| prev.observed_at);
    }
    row.iccid = read.identity.iccid.as_ref().map(|i| i.to_string());
    row.form_factor = obs.form_factor;
    row.eid = obs.eid.clone();
    row.blank_esim = obs.blank_esim;
    row.status = obs.local_status();
    row.imsi = obs.imsi.clone();
    row.operator = obs.operator.clone();
    row.spn = obs.spn.clone();
    row.apdus = Some(read.identity.apdus);
    if obs.form_factor == Some(FormFactor::Esim) {
        row.qr = obs.eid.clone().or_else(|| row.iccid.clone());
    }
    if let Some(first) = tally.seen.get(&obs.iccid) {
        row.warnings
            .push(format!("DUPLICATE: already read in this batch as #{first}"));
    } else {
        tally.seen.insert(obs.iccid.clone(), tally.n);
    }
    if !obs.iccid_luhn_ok {
        row.warnings
            .push("LUHN FAILURE: the ICCID's check digit is wrong (status Invalid)".into());
    }
    if let Some(p) = obs.problem.as_deref().filter(|_| obs.iccid_luhn_ok) {
        row.warnings.push(format!("INVALID: {p}"));
    }
    if !row.warnings.is_empty() {
        tally.warned += 1;
    }
    Ok((row, Some(obs)))
}

/// The CSV of the batch, appended durably row by row.
#[derive(Debug)]
struct Csv {
    path: String,
    file: std::fs::File,
}

const CSV_HEADER: &str =
    "n,time,reader,iccid,form_factor,eid,status,imsi,operator,labels,company,note,warnings\n";

impl Csv {
    fn open(path: &PathBuf) -> Result<Csv, StationError> {
        let shown = path.display().to_string();
        let err = |source| StationError::Csv {
            path: shown.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        if file.metadata().map_err(err)?.len() == 0 {
            file.write_all(CSV_HEADER.as_bytes()).map_err(err)?;
            file.sync_data().map_err(err)?;
        }
        Ok(Csv { path: shown, file })
    }

    fn append(&mut self, r: &StationRead) -> Result<(), StationError> {
        let status = r.status.map(status_word).unwrap_or_default();
        let form = form_text(r).unwrap_or_default();
        let fields = [
            r.n.to_string(),
            utc_text(r.at),
            r.reader.clone(),
            r.iccid.clone().unwrap_or_default(),
            form.to_string(),
            r.eid.clone().unwrap_or_default(),
            status.to_string(),
            r.imsi.clone().unwrap_or_default(),
            r.operator.clone().unwrap_or_default(),
            r.batch.labels.join(";"),
            r.batch.company.clone().unwrap_or_default(),
            r.batch.note.clone().unwrap_or_default(),
            r.warnings.join("; "),
        ];
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        let err = |source| StationError::Csv {
            path: self.path.clone(),
            source,
        };
        // One write per row, then fsync: a crash keeps every row already shown.
        self.file.write_all(line.as_bytes()).map_err(err)?;
        self.file.sync_data().map_err(err)
    }
}

/// Unix seconds as RFC 3339 UTC text, for the CSV and the screen.
fn utc_text(secs: u64) -> String {
    let (y, m, d) = crate::time::civil_from_unix(secs);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// RFC 4180: quote a field holding a comma, quote or line break; double inner quotes.
fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::NotAvailable => "Not available",
        Status::Pending => "Pending",
        Status::Blank => "Blank",
        Status::ActivationReady => "Activation ready",
        Status::Active => "Active",
        Status::Suspended => "Suspended",
        Status::Invalid => "Invalid",
    }
}

/// "physical", "esim", or "esim (blank)" for an eUICC with no enabled profile.
fn form_text(r: &StationRead) -> Option<&'static str> {
    match (r.form_factor?, r.blank_esim) {
        (FormFactor::Esim, true) => Some("esim (blank)"),
        (f, _) => Some(form_word(f)),
    }
}

fn form_word(f: FormFactor) -> &'static str {
    match f {
        FormFactor::Physical => "physical",
        FormFactor::Esim => "esim",
    }
}

/// The screen: rows appended as reads finish (no full redraw, so the history stays
/// scrollable and nothing shown is ever overwritten), or NDJSON with `--json`.
#[derive(Debug)]
struct Screen {
    json: bool,
    /// ANSI colours and the bell only on a terminal.
    ansi: bool,
    out: std::io::Stdout,
}

impl Screen {
    fn new(json: bool) -> Screen {
        let out = std::io::stdout();
        Screen {
            json,
            ansi: !json && out.is_terminal(),
            out,
        }
    }

    fn write(&mut self, text: &str) -> Result<(), StationError> {
        let mut lock = self.out.lock();
        lock.write_all(text.as_bytes())
            .and_then(|_| lock.flush())
            .map_err(StationError::Output)
    }

    fn header(&mut self, s: &Settings) -> Result<(), StationError> {
        if self.json {
            return Ok(());
        }
        let mut attrs = Vec::new();
        if !s.batch.labels.is_empty() {
            attrs.push(format!("labels: {}", s.batch.labels.join(", ")));
        }
        if let Some(c) = &s.batch.company {
            attrs.push(format!("company: {c}"));
        }
        if let Some(n) = &s.batch.note {
            attrs.push(format!("note: {n}"));
        }
        let readers = if s.readers.is_empty() {
            "all readers".to_string()
        } else {
            s.readers.join(", ")
        };
        let text = format!(
            "simgate station: {readers}{}{}\nInsert SIMs; each appears below. Ctrl-C ends the batch.\n\n",
            if attrs.is_empty() { "" } else { " | " },
            attrs.join(" | ")
        );
        self.write(&text)
    }

    fn note(&mut self, text: &str) -> Result<(), StationError> {
        if self.json {
            tracing::info!("{text}");
            return Ok(());
        }
        self.write(&format!("   {text}\n"))
    }

    fn row(&mut self, r: &StationRead, tally: &Tally) -> Result<(), StationError> {
        if self.json {
            let line = serde_json::to_string(r).map_err(|e| StationError::Output(e.into()))?;
            return self.write(&format!("{line}\n"));
        }
        let (bold, red, green, reset, bell) = if self.ansi {
            ("\x1b[1m", "\x1b[1;37;41m", "\x1b[32m", "\x1b[0m", "\x07")
        } else {
            ("", "", "", "", "")
        };
        let mut text = String::new();
        let status = r.status.map(status_word).unwrap_or("-");
        let form = form_text(r).unwrap_or("-");
        text.push_str(&format!(
            "{bold}#{:<3}{reset} {}  ICCID {}  {form}  EID {}  status {status}",
            r.n,
            r.reader,
            r.iccid.as_deref().unwrap_or("-"),
            r.eid.as_deref().unwrap_or("-"),
        ));
        if let Some(op) = &r.operator {
            text.push_str(&format!("  {op}"));
        }
        if let Some(t) = r.known_since {
            text.push_str(&format!("  (known, last seen {})", utc_text(t)));
        }
        text.push_str(&format!("  {} ms\n", r.ms));
        for w in &r.warnings {
            text.push_str(&format!("{red} !! {w} !! {reset}{bell}\n"));
        }
        if let Some(e) = &r.error {
            text.push_str(&format!("     {e}\n"));
        }
        if let Some(payload) = &r.qr {
            text.push_str(&qr_text(payload));
        }
        text.push_str(&format!(
            "{green}     count: {} read, {} unique SIMs, {} with warnings{reset}\n",
            tally.n,
            tally.seen.len(),
            tally.warned
        ));
        self.write(&text)
    }

    fn summary(&mut self, t: &Tally) -> Result<(), StationError> {
        if self.json {
            return Ok(());
        }
        self.write(&format!(
            "\nbatch done: {} read, {} unique SIMs, {} with warnings\n",
            t.n,
            t.seen.len(),
            t.warned
        ))
    }
}

/// A QR code of `payload` as Unicode half-blocks (two modules per character cell, so it
/// stays square in a terminal), with the quiet zone the standard asks for (ISO/IEC 18004
/// §9.1: four modules).
pub fn qr_text(payload: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::new(payload.as_bytes()) {
        Ok(code) => {
            let art = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            let mut out = String::new();
            for line in art.lines() {
                out.push_str("     ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("     QR: {payload}\n"));
            out
        }
        // A payload too long for any QR version: show it as text only.
        Err(e) => format!("     (no QR code: {e}) {payload}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_commas_and_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn qr_of_an_eid_renders_as_half_blocks() {
        let text = qr_text("89049032123451234512345678901235");
        assert!(text.contains('▀') || text.contains('▄'), "{text}");
        assert!(text.ends_with("QR: 89049032123451234512345678901235\n"));
    }
}
