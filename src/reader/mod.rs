//! PC/SC readers: listing, reading a card, and watching for insertions and removals.
//!
//! PC/SC calls block, so everything here is synchronous and runs on blocking threads
//! (`tokio::task::spawn_blocking`), never on the runtime's workers. The card logic itself
//! is in src/card; this module only carries APDUs to and from pcscd.

pub mod watch;

use crate::card::{self, CardError, CardTransport, Identity};
use crate::config::VendorIsdrAids;
use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};
use serde::Serialize;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Reader failures, each naming what it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ReaderError {
    #[error("pcscd is not running or not reachable ({0}); start it with `systemctl start pcscd` (package pcscd)")]
    NoService(pcsc::Error),
    #[error("no reader named \"{name}\"; readers present: {}", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    UnknownReader {
        name: String,
        available: Vec<String>,
    },
    #[error("no card in reader \"{0}\"")]
    NoCard(String),
    #[error("reader \"{reader}\": {source}")]
    Card { reader: String, source: CardError },
    #[error("reader \"{reader}\": PC/SC: {source}")]
    Pcsc { reader: String, source: pcsc::Error },
}

/// A reader as `simgate readers` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub atr: Option<String>,
    /// The card did not answer reset (pcscd's MUTE state).
    pub mute: bool,
}

/// A card read in a reader.
#[derive(Debug, Clone)]
pub struct CardRead {
    pub reader: String,
    pub atr: String,
    pub identity: Identity,
}

/// Connect to pcscd. `PCSCLITE_CSOCK_NAME` in the environment selects a private pcscd.
pub fn establish() -> Result<Context, ReaderError> {
    Context::establish(Scope::User).map_err(ReaderError::NoService)
}

/// Room for every reader pcsc-lite serves: PCSCLITE_MAX_READERS_CONTEXTS (16) names of
/// at most MAX_READERNAME (128) bytes, and the list's final NUL (pcsclite.h).
const READER_LIST_BYTES: usize = 16 * 128 + 1;

fn reader_names(ctx: &Context) -> Result<Vec<CString>, ReaderError> {
    // One SCardListReaders into a buffer for the most readers pcsc-lite serves, not
    // two (the length, then the names): each is a round trip to pcscd, and a wake-up of
    // both sides on a loaded machine. A larger list (another PC/SC stack) asks twice.
    let mut buf = vec![0; READER_LIST_BYTES];
    let listed = match ctx.list_readers(&mut buf) {
        Ok(names) => Ok(names.map(ToOwned::to_owned).collect()),
        Err(pcsc::Error::InsufficientBuffer) => ctx.list_readers_owned(),
        Err(e) => Err(e),
    };
    match listed {
        Ok(names) => Ok(names),
        // pcsc-lite answers "no readers" with an error; to a user it is an empty list.
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e @ (pcsc::Error::NoService | pcsc::Error::ServiceStopped)) => {
            Err(ReaderError::NoService(e))
        }
        Err(source) => Err(ReaderError::Pcsc {
            reader: "*".into(),
            source,
        }),
    }
}

/// Every reader pcscd knows, with its card state.
pub fn list(ctx: &Context) -> Result<Vec<ReaderInfo>, ReaderError> {
    let names = reader_names(ctx)?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut states: Vec<ReaderState> = names
        .into_iter()
        .map(|n| ReaderState::new(n, State::UNAWARE))
        .collect();
    // With UNAWARE current states pcscd answers at once with the present state; the
    // timeout only guards against a wedged daemon.
    ctx.get_status_change(std::time::Duration::from_secs(5), &mut states)
        .map_err(|source| ReaderError::Pcsc {
            reader: "*".into(),
            source,
        })?;
    Ok(states
        .iter()
        .map(|s| {
            let st = s.event_state();
            let present = st.contains(State::PRESENT);
            ReaderInfo {
                name: s.name().to_string_lossy().into_owned(),
                card_present: present,
                atr: (present && !s.atr().is_empty()).then(|| hex::encode_upper(s.atr())),
                mute: st.contains(State::MUTE),
            }
        })
        .collect())
}

/// The card's ATR, from one SCardStatus: buffers sized for the reader's name (connected
/// to by that name) and the longest ATR (pcsc-lite's MAX_ATR_SIZE), where
/// `status2_owned` asks twice (the lengths, then the values), a round trip to pcscd each.
fn card_atr(card: &pcsc::Card, reader: &CString) -> Result<Vec<u8>, pcsc::Error> {
    let mut names = vec![0; reader.as_bytes_with_nul().len() + 1];
    let mut atr = [0; pcsc::MAX_ATR_SIZE];
    match card.status2(&mut names, &mut atr) {
        Ok(st) => Ok(st.atr().to_vec()),
        Err(pcsc::Error::InsufficientBuffer) => Ok(card.status2_owned()?.atr().to_vec()),
        Err(e) => Err(e),
    }
}

/// Resolve a reader name given by a user to the exact PC/SC name, with a clear error.
pub fn resolve(ctx: &Context, name: &str) -> Result<CString, ReaderError> {
    let names = reader_names(ctx)?;
    if let Some(found) = names.iter().find(|n| n.to_string_lossy() == name) {
        return Ok(found.clone());
    }
    Err(ReaderError::UnknownReader {
        name: name.to_string(),
        available: names
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect(),
    })
}

/// A connected PC/SC card as a [`CardTransport`].
struct PcscCard<'a> {
    card: &'a pcsc::Card,
    buf: Vec<u8>,
}

impl CardTransport for PcscCard<'_> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        match self.card.transmit(command, &mut self.buf) {
            // A card always ends its answer with SW1 SW2 (ISO/IEC 7816-3 §10.3.3); fewer
            // bytes is the reader losing the card mid-exchange (vpcd does this when the
            // card is pulled), not the card's answer.
            Ok(resp) if resp.len() < 2 => match self.card.status2_owned() {
                Err(pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard) => Err(CardError::Removed),
                _ => Err(CardError::Transport(format!(
                    "reader returned {} byte(s) without a status word",
                    resp.len()
                ))),
            },
            Ok(resp) => Ok(resp.to_vec()),
            // SCARD_E_PROTO_MISMATCH on a handle that worked: pcscd renegotiated the
            // protocol after someone else reset the card — the same remedy as a reset.
            Err(pcsc::Error::ResetCard | pcsc::Error::ProtoMismatch) => Err(CardError::Reset),
            Err(pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard) => Err(CardError::Removed),
            Err(e @ (pcsc::Error::UnresponsiveCard | pcsc::Error::Timeout)) => {
                Err(CardError::Transport(format!("card did not answer: {e}")))
            }
            Err(e) => Err(CardError::Transport(e.to_string())),
        }
    }
}

/// How a card read goes: the card timeout and what identification reads.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    /// A card (or reader) that has not finished identification by then is declared
    /// mute (`readers.card_timeout_ms`).
    pub card_timeout: std::time::Duration,
    /// Read IMSI and SPN too.
    pub subscriber: bool,
    /// When to probe vendor ISD-R AIDs (`readers.vendor_isdr_aids`).
    pub vendor_isdr_aids: VendorIsdrAids,
}

impl ReadSettings {
    /// From the `[readers]` configuration.
    pub fn from_config(cfg: &crate::config::Readers) -> ReadSettings {
        ReadSettings {
            card_timeout: std::time::Duration::from_millis(cfg.card_timeout_ms),
            subscriber: true,
            vendor_isdr_aids: cfg.vendor_isdr_aids,
        }
    }
}

/// A card read under way on a thread of its own, with its own PC/SC context
/// ([`start_read`]).
#[derive(Debug)]
pub struct PendingRead {
    shown: String,
    rx: std::sync::mpsc::Receiver<Result<CardRead, ReaderError>>,
    /// Set when the waiter gives up: the read's thread then lets the card alone.
    abandoned: Arc<AtomicBool>,
    started: std::time::Instant,
    timeout: std::time::Duration,
}

/// Start identifying the card in `reader` (exact PC/SC name); [`PendingRead::wait`]
/// gives up after the card timeout.
///
/// PC/SC has no per-call timeout and a mute card can hold SCardTransmit for as long as
/// the reader driver likes, so the read runs on its own thread; on timeout we stop
/// waiting and say so. That thread ends when the driver gives up or the card is pulled;
/// nothing else waits on it, so the reader and every other reader stay usable. The
/// caller waits on its own thread: one thread handed over per read, which is what keeps
/// a read's time off the scheduler on a loaded machine.
pub fn start_read(reader: &CString, settings: ReadSettings) -> PendingRead {
    let shown = reader.to_string_lossy().into_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = tx.clone();
    let name = reader.clone();
    let started = std::time::Instant::now();
    let abandoned = Arc::new(AtomicBool::new(false));
    let given_up = abandoned.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("card {shown}"))
        .spawn(move || {
            let result =
                establish().and_then(|ctx| read_card_until(&ctx, &name, &settings, &given_up));
            // The receiver is gone when we timed out: nobody wants the answer any more.
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        let _ = failed.send(Err(ReaderError::Card {
            reader: shown.clone(),
            source: CardError::Transport(format!("cannot start a reader thread: {e}")),
        }));
    }
    PendingRead {
        shown,
        rx,
        abandoned,
        started,
        timeout: settings.card_timeout,
    }
}

impl PendingRead {
    /// The read's result, or `CardError::Timeout` once the card timeout has passed since
    /// it started; and how long it took.
    pub fn wait(self) -> (Result<CardRead, ReaderError>, std::time::Duration) {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        let result = match self.rx.recv_timeout(left) {
            Ok(result) => result,
            Err(_) => {
                self.abandoned.store(true, Ordering::SeqCst);
                Err(ReaderError::Card {
                    reader: self.shown,
                    source: CardError::Timeout(self.timeout),
                })
            }
        };
        (result, self.started.elapsed())
    }
}

/// The one way a card is read off the async runtime: on a thread of its own (with the
/// card timeout of [`start_read`]), handing the result and how long it took to `done`.
/// Each read gets its own thread and PC/SC context, so readers are served in parallel
/// and a slow card never delays another reader.
pub fn spawn_read<F>(reader: String, settings: ReadSettings, done: F)
where
    F: FnOnce(Result<CardRead, ReaderError>, std::time::Duration) + Send + 'static,
{
    let work = move || match CString::new(reader.clone()) {
        Ok(name) => {
            let (result, took) = start_read(&name, settings).wait();
            crate::metrics::counters().card_read(result.is_ok(), took);
            done(result, took);
        }
        Err(_) => done(
            Err(ReaderError::UnknownReader {
                name: reader,
                available: vec![],
            }),
            std::time::Duration::ZERO,
        ),
    };
    if let Err(e) = std::thread::Builder::new()
        .name("card read".into())
        .spawn(work)
    {
        // No thread, no read: said loudly; the card is read again on its next insertion.
        tracing::error!(error = %e, "cannot start a card read thread");
    }
}

/// Identify the card in `reader` (exact PC/SC name). Blocking, with no timeout of its
/// own: see [`start_read`].
///
/// A card reset by another application under us (SCARD_W_RESET_CARD) or a removed card
/// that is back by the time we look is answered by reconnecting and reading again (twice at most).
pub fn read_card(
    ctx: &Context,
    reader: &CString,
    settings: &ReadSettings,
) -> Result<CardRead, ReaderError> {
    read_card_until(ctx, reader, settings, &AtomicBool::new(false))
}

/// [`read_card`] until `abandoned` is set (its waiter timed out): from then on the card,
/// or the one inserted in its place, is let alone — neither reconnected to nor reset, so
/// a stale read of a mute card pulled never touches the next card in that reader.
fn read_card_until(
    ctx: &Context,
    reader: &CString,
    settings: &ReadSettings,
    abandoned: &AtomicBool,
) -> Result<CardRead, ReaderError> {
    let shown = reader.to_string_lossy().into_owned();
    let pcsc_err = |source| ReaderError::Pcsc {
        reader: shown.clone(),
        source,
    };
    let mut card = match ctx.connect(reader, ShareMode::Shared, Protocols::ANY) {
        Ok(c) => c,
        Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
            return Err(ReaderError::NoCard(shown))
        }
        // A name given by a user is connected to as it is (no listing first): a wrong
        // one is answered here, with the readers present.
        Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
            let available = reader_names(ctx).unwrap_or_default();
            return Err(ReaderError::UnknownReader {
                name: shown,
                available: available
                    .iter()
                    .map(|n| n.to_string_lossy().into_owned())
                    .collect(),
            });
        }
        Err(e) => return Err(pcsc_err(e)),
    };
    let mut attempt = 0;
    let (atr, identity) = loop {
        attempt += 1;
        let result = card_atr(&card, reader)
            .map_err(|e| match e {
                pcsc::Error::ResetCard => CardError::Reset,
                pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard => CardError::Removed,
                e => CardError::Transport(e.to_string()),
            })
            .and_then(|atr_bytes| {
                let opts = card::Options {
                    vendor_aids: match settings.vendor_isdr_aids {
                        VendorIsdrAids::Atr => card::atr::declares_euicc(&atr_bytes),
                        VendorIsdrAids::Always => true,
                        VendorIsdrAids::Never => false,
                    },
                    subscriber: settings.subscriber,
                    ..card::Options::default()
                };
                let atr = hex::encode_upper(&atr_bytes);
                tracing::debug!(reader = %shown, %atr, attempt, "identifying the card");
                let id = card::identify(
                    PcscCard {
                        card: &card,
                        buf: vec![0; pcsc::MAX_BUFFER_SIZE],
                    },
                    &opts,
                )?;
                Ok((atr, id))
            });
        match result {
            Ok(done) => break done,
            // Twice at most: a reset can land while pcscd is still powering the card up
            // after another application's reset.
            Err(e @ (CardError::Reset | CardError::Removed))
                if attempt <= 2 && !abandoned.load(Ordering::SeqCst) =>
            {
                // TS 102 221 §8.2: after a reset the card is back at the MF; reconnecting
                // (SCardReconnect, leaving the card as it is) picks up the new session.
                tracing::info!(reader = %shown, error = %e, "reconnecting to the card");
                match card.reconnect(
                    ShareMode::Shared,
                    Protocols::ANY,
                    pcsc::Disposition::LeaveCard,
                ) {
                    Ok(()) => continue,
                    // Gone for good. Disconnect explicitly: the pcsc crate's drop would
                    // reset the (empty) slot.
                    Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
                        let _ = card.disconnect(pcsc::Disposition::LeaveCard);
                        return Err(ReaderError::Card {
                            reader: shown,
                            source: CardError::Removed,
                        });
                    }
                    Err(e) => {
                        let _ = card.disconnect(pcsc::Disposition::LeaveCard);
                        return Err(pcsc_err(e));
                    }
                }
            }
            Err(source) => {
                // A card that answered but failed identification may sit with a logical
                // channel open: reset it, so the next reader of this card starts from
                // the MF. A card gone or not answering is left alone: resetting it only
                // drives the reader driver through a power cycle of an empty slot, which
                // with vpcd swallowed the next card inserted.
                let disposition = match source {
                    CardError::Refused { .. } | CardError::Malformed { .. }
                        if !abandoned.load(Ordering::SeqCst) =>
                    {
                        pcsc::Disposition::ResetCard
                    }
                    _ => pcsc::Disposition::LeaveCard,
                };
                if let Err((_, e)) = card.disconnect(disposition) {
                    tracing::debug!(reader = %shown, error = %e, "disconnect after a failed read");
                }
                return Err(ReaderError::Card {
                    reader: shown,
                    source,
                });
            }
        }
    };
    // Identification leaves the ISD-R or ADF USIM selected on the basic channel (it
    // spends no APDU putting it back, card::identify): reset the card as we let it go.
    // After a reset the MF is current, no application is selected and every logical
    // channel is closed (TS 102 221 §8.2, §11.1.17) — the state the card was found in at
    // insertion, for no APDU on the wire. pcsc-lite moves no insertion counter for a
    // reset, so the watcher (reader::watch) sees no new card.
    let disposition = if abandoned.load(Ordering::SeqCst) {
        pcsc::Disposition::LeaveCard
    } else {
        pcsc::Disposition::ResetCard
    };
    if let Err((_, e)) = card.disconnect(disposition) {
        tracing::debug!(reader = %shown, error = %e, "disconnect after read");
    }
    Ok(CardRead {
        reader: shown,
        atr,
        identity,
    })
}

/// Run `f` on the card in `reader` (exact PC/SC name) inside a PC/SC transaction, so no
/// other application's APDUs interleave with a multi-step operation (an eSIM's profile
/// switch), giving up after `timeout` like [`start_read`]. `f` answers its result
/// and whether the card must be reset afterwards (an enabled profile takes over at the
/// next reset, SGP.22 §3.2.1); otherwise the card is left as it is.
pub fn with_card<R, F>(
    reader: &CString,
    timeout: std::time::Duration,
    f: F,
) -> Result<R, ReaderError>
where
    R: Send + 'static,
    F: FnOnce(&mut dyn CardTransport) -> (R, bool) + Send + 'static,
{
    let shown = reader.to_string_lossy().into_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    let name = reader.clone();
    let who = shown.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("card {shown}"))
        .spawn(move || {
            let result = establish().and_then(|ctx| {
                let pcsc_err = |source| ReaderError::Pcsc {
                    reader: who.clone(),
                    source,
                };
                let mut card = match ctx.connect(&name, ShareMode::Shared, Protocols::ANY) {
                    Ok(c) => c,
                    Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
                        return Err(ReaderError::NoCard(who.clone()))
                    }
                    Err(e) => return Err(pcsc_err(e)),
                };
                let (value, reset) = {
                    let tr = card.transaction().map_err(pcsc_err)?;
                    let mut t = PcscCard {
                        card: &tr,
                        buf: vec![0; pcsc::MAX_BUFFER_SIZE],
                    };
                    let out = f(&mut t);
                    if let Err((_, e)) = tr.end(pcsc::Disposition::LeaveCard) {
                        tracing::debug!(reader = %who, error = %e, "end of transaction");
                    }
                    out
                };
                let disposition = if reset {
                    pcsc::Disposition::ResetCard
                } else {
                    pcsc::Disposition::LeaveCard
                };
                if let Err((_, e)) = card.disconnect(disposition) {
                    tracing::debug!(reader = %who, error = %e, "disconnect");
                }
                Ok(value)
            });
            let _ = tx.send(result);
        });
    if let Err(e) = spawned {
        return Err(ReaderError::Card {
            reader: shown,
            source: CardError::Transport(format!("cannot start a reader thread: {e}")),
        });
    }
    match rx.recv_timeout(timeout) {
        Ok(result) => result,
        Err(_) => Err(ReaderError::Card {
            reader: shown,
            source: CardError::Timeout(timeout),
        }),
    }
}

/// Does a reader name match a configured name or pattern? `*` matches any run of
/// characters; everything else matches itself.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::name_matches;

    #[test]
    fn reader_patterns_match_whole_names() {
        assert!(name_matches("Virtual PCD 00 00", "Virtual PCD 00 00"));
        assert!(name_matches("Virtual PCD *", "Virtual PCD 00 01"));
        assert!(!name_matches("Virtual PCD", "Virtual PCD 00 00"));
        assert!(name_matches("*", ""));
    }
}
