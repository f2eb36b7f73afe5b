//! Watching readers for cards coming and going, driven by pcscd's status-change events
//! (SCardGetStatusChange), never by polling.
//!
//! Runs on a blocking thread. Cancellation reaches the blocked call through
//! `Context::cancel` (SCardCancel), which pcsc-lite allows from another thread.

use super::{name_matches, ReaderError};
use crate::backoff::Backoff;
use pcsc::{Context, ReaderState, State, PNP_NOTIFICATION};
use std::collections::HashMap;
use std::ffi::CString;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A card is in `reader` (at start-up, or newly inserted). `atr` hex.
    CardInserted { reader: String, atr: String },
    /// The card left `reader`.
    CardRemoved { reader: String },
    /// A watched reader appeared.
    ReaderAdded { reader: String },
    /// A watched reader went away (unplugged, driver gone).
    ReaderRemoved { reader: String },
    /// pcscd is unreachable; the watcher keeps retrying. Cards are not reported removed
    /// for it: the next [`ReaderEvent::Looked`] tells what is there.
    ServiceLost { error: String },
    /// The first look of a PC/SC context is done (at start-up, and again once pcscd is
    /// back), after a grace for pcscd to find its readers and cards (`LOOK_GRACE`):
    /// `readers` are the watched readers there now, `with_card` those holding a card
    /// (each already reported as `CardInserted`).
    Looked {
        readers: Vec<String>,
        with_card: Vec<String>,
    },
}

/// How long a first look waits before it is final (`ReaderEvent::Looked`): pcscd and its
/// drivers enumerate readers and power up cards during the first moments after pcscd
/// (re)starts (vpcd, for one, polls a card's presence every 400 ms), and a card found in
/// that time was there all along, not inserted anew.
const LOOK_GRACE: Duration = Duration::from_secs(2);

/// Per-reader memory between two looks.
#[derive(Debug, Default)]
struct Seen {
    present: bool,
    /// pcsc-lite's event counter (upper 16 bits of dwEventState): it moves on every
    /// insertion and removal, so a remove-and-reinsert between two looks is not missed.
    count: u32,
}

/// What happened in a reader between two looks: (a card left, a card arrived). Both
/// when the card is present at both looks but the event counter moved by two or more:
/// it was swapped in between, and the removal is reported before the new card.
fn transition(before: &Seen, present: bool, count: u32) -> (bool, bool) {
    // pcsc-lite (src/eventhandler.c) bumps the counter on every removal and insertion
    // and wraps it past 0xFFFF to 0; clients see it as dwEventState >> 16. Compare in 16
    // bits, so the wrap-around is not taken for a swap.
    let moved = (count as u16).wrapping_sub(before.count as u16);
    let swapped = present && before.present && moved >= 2;
    (
        before.present && (!present || swapped),
        present && (!before.present || swapped),
    )
}

/// Watch readers matching `patterns` (all readers when empty) until `cancel` fires.
/// Blocking: call from `spawn_blocking`. Survives pcscd restarts by re-establishing the
/// context with backoff.
pub fn watch(
    patterns: Vec<String>,
    tx: mpsc::Sender<ReaderEvent>,
    cancel: CancellationToken,
    rt: tokio::runtime::Handle,
) {
    let mut backoff = Backoff::new(
        Duration::from_millis(250),
        Duration::from_secs(10),
        Duration::from_secs(30),
    );
    let mut seen: HashMap<String, Seen> = HashMap::new();
    // pcscd's absence said once at WARN, its retries at DEBUG (a modem-only gateway has
    // no pcscd at all, and must not fill its journal with it), its return at INFO.
    let mut away = crate::away::Away::new("PC/SC (pcscd)");
    while !cancel.is_cancelled() {
        match super::establish() {
            Ok(ctx) => {
                away.back();
                let since = std::time::Instant::now();
                // Wake the blocked status-change call when shutdown is asked for.
                let canceller = {
                    let ctx = ctx.clone();
                    let cancel = cancel.clone();
                    rt.spawn(async move {
                        cancel.cancelled().await;
                        let _ = ctx.cancel();
                    })
                };
                let result = watch_context(&ctx, &patterns, &tx, &cancel, &mut seen, &mut backoff);
                canceller.abort();
                backoff.ended_after(since.elapsed());
                match result {
                    Ok(()) => return,
                    Err(e) => {
                        // pcscd went (or its context broke): away until a context
                        // works again, said once.
                        away.failed(&e, std::time::Duration::ZERO);
                        let _ = tx.blocking_send(ReaderEvent::ServiceLost {
                            error: e.to_string(),
                        });
                        // Cards may change while pcscd is away: forget them silently;
                        // the next first look reports every card there as inserted,
                        // then `Looked`, and the manager reconciles (src/agent/readers.rs).
                        for s in seen.values_mut() {
                            s.present = false;
                        }
                    }
                }
            }
            Err(e) => {
                // Back off without blocking shutdown (below).
                let wait = backoff.next_wait();
                away.failed(&e, wait);
                block_until(&rt, &cancel, wait);
                continue;
            }
        }
        // Back off without blocking shutdown: wait for either the delay or cancellation.
        let wait = backoff.next_wait();
        tracing::debug!(retry_secs = wait.as_secs_f64(), "PC/SC context retry");
        block_until(&rt, &cancel, wait);
    }
}

/// Sleep `wait` on this blocking thread, or less when shutdown is asked for.
fn block_until(rt: &tokio::runtime::Handle, cancel: &CancellationToken, wait: std::time::Duration) {
    rt.block_on(async {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    });
}

fn watched(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| name_matches(p, name))
}

fn watch_context(
    ctx: &Context,
    patterns: &[String],
    tx: &mpsc::Sender<ReaderEvent>,
    cancel: &CancellationToken,
    seen: &mut HashMap<String, Seen>,
    backoff: &mut Backoff,
) -> Result<(), ReaderError> {
    let pcsc_err = |source| ReaderError::Pcsc {
        reader: "*".into(),
        source,
    };
    // The PnP pseudo-reader first, then the watched readers.
    let mut states = vec![ReaderState::new(PNP_NOTIFICATION(), State::UNAWARE)];
    let mut refresh = true;
    let mut look_due = Some(std::time::Instant::now() + LOOK_GRACE);
    loop {
        if refresh {
            refresh = false;
            let names: Vec<CString> = super::reader_names(ctx)?
                .into_iter()
                .filter(|n| watched(patterns, &n.to_string_lossy()))
                .collect();
            // pcscd is back and serving: the outage that made the backoff climb is
            // over. Waiting on past outages' wait would slow every card after the next
            // crash of a pcscd that crashes in a loop (5-12 s seen); a context that
            // fails before it serves keeps climbing.
            backoff.reset();
            // Readers gone since the last look.
            let now: Vec<String> = names
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            let gone: Vec<String> = seen.keys().filter(|k| !now.contains(k)).cloned().collect();
            for reader in gone {
                if seen.remove(&reader).is_some_and(|s| s.present) {
                    send(
                        tx,
                        ReaderEvent::CardRemoved {
                            reader: reader.clone(),
                        },
                    );
                }
                send(tx, ReaderEvent::ReaderRemoved { reader });
            }
            states.truncate(1);
            for name in names {
                let shown = name.to_string_lossy().into_owned();
                if !seen.contains_key(&shown) {
                    seen.insert(shown.clone(), Seen::default());
                    send(tx, ReaderEvent::ReaderAdded { reader: shown });
                }
                states.push(ReaderState::new(name, State::UNAWARE));
            }
        }
        // Block for the next change, or until the first look is due.
        let timeout = look_due.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        match ctx.get_status_change(timeout, &mut states) {
            Ok(()) => {}
            Err(pcsc::Error::Cancelled) if cancel.is_cancelled() => return Ok(()),
            Err(pcsc::Error::Timeout) => {}
            // A reader vanished under us: look again.
            Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
                refresh = true;
                continue;
            }
            Err(e) => return Err(pcsc_err(e)),
        }
        if cancel.is_cancelled() {
            return Ok(());
        }
        for state in states.iter_mut() {
            let ev = state.event_state();
            if !ev.contains(State::CHANGED) {
                continue;
            }
            let name = state.name().to_string_lossy().into_owned();
            if state.name() == PNP_NOTIFICATION()
                || ev.intersects(State::UNKNOWN | State::UNAVAILABLE)
            {
                refresh = true;
            } else if let Some(s) = seen.get_mut(&name) {
                let present = ev.contains(State::PRESENT) && !ev.contains(State::MUTE);
                let count = state.event_count();
                let (removed, inserted) = transition(s, present, count);
                if removed {
                    send(
                        tx,
                        ReaderEvent::CardRemoved {
                            reader: name.clone(),
                        },
                    );
                }
                if inserted {
                    send(
                        tx,
                        ReaderEvent::CardInserted {
                            reader: name.clone(),
                            atr: hex::encode_upper(state.atr()),
                        },
                    );
                }
                if ev.contains(State::MUTE) && !s.present {
                    tracing::warn!(reader = %name, "card in reader does not answer reset (mute)");
                }
                s.present = present;
                s.count = count;
            }
            state.sync_current_state();
        }
        if look_due.is_some_and(|d| std::time::Instant::now() >= d) {
            look_due = None;
            let mut readers: Vec<String> = seen.keys().cloned().collect();
            readers.sort();
            let with_card = readers
                .iter()
                .filter(|r| seen.get(*r).is_some_and(|s| s.present))
                .cloned()
                .collect();
            send(tx, ReaderEvent::Looked { readers, with_card });
        }
    }
}

fn send(tx: &mpsc::Sender<ReaderEvent>, ev: ReaderEvent) {
    // The receiver only goes away at shutdown; nothing to report then.
    let _ = tx.blocking_send(ev);
}

#[cfg(test)]
mod tests {
    use super::{transition, Seen};

    fn seen(present: bool, count: u32) -> Seen {
        Seen { present, count }
    }

    #[test]
    fn insertion_and_removal_are_reported_once() {
        assert_eq!(transition(&seen(false, 0), true, 1), (false, true));
        assert_eq!(transition(&seen(true, 1), false, 2), (true, false));
        assert_eq!(transition(&seen(false, 2), false, 2), (false, false));
    }

    #[test]
    fn a_card_swapped_between_two_looks_is_a_removal_then_an_insertion() {
        // Removed (count 4) and another inserted (count 5) while nobody looked.
        assert_eq!(transition(&seen(true, 3), true, 5), (true, true));
    }

    #[test]
    fn a_present_card_with_a_quiet_counter_is_no_event() {
        assert_eq!(transition(&seen(true, 3), true, 3), (false, false));
        // One step alone cannot be a removal and an insertion.
        assert_eq!(transition(&seen(true, 3), true, 4), (false, false));
    }

    #[test]
    fn the_16_bit_counter_wrapping_is_not_a_swap() {
        assert_eq!(transition(&seen(true, 0xFFFF), true, 0), (false, false));
        assert_eq!(transition(&seen(true, 0xFFFF), true, 1), (true, true));
    }
}
