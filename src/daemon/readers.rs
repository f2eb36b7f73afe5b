//! The daemon's PC/SC side on the shared reader manager (src/agent/readers.rs): what a
//! finished card read means for `simgate run`.

use super::{Ctx, DaemonError};
use crate::agent::{FinishedRead, ReaderManager};
use crate::reader::{self, ReaderError};

/// A card read came back: a current one is recorded, a stale one dropped, a failed one
/// told to the platform (a card that cannot be read is news).
pub(crate) fn on_card_read(
    ctx: &Ctx,
    readers: &mut ReaderManager,
    done: FinishedRead,
) -> Result<(), DaemonError> {
    if !readers.is_current(&done) {
        tracing::debug!(reader = %done.reader, "stale card read dropped");
        return Ok(());
    }
    let reader = &done.reader;
    match &done.result {
        Ok(read) => {
            let obs = crate::observe::from_card(read, done.at);
            tracing::info!(%reader, iccid = %obs.iccid, luhn_ok = obs.iccid_luhn_ok, form_factor = obs.form_factor.map(|f| f.word()), apdus = read.identity.apdus, apdus_total = read.identity.apdus_total, "card identified");
            readers.holds(reader, &obs.iccid);
            ctx.rec.record(&obs)?;
        }
        Err(e) => {
            tracing::warn!(%reader, error = %e, "card could not be identified");
            ctx.rec.event(crate::contract::EventKind::Error {
                iccid: None,
                code: crate::contract::RefusalCode::Failed,
                reason: format!("{reader}: card could not be identified: {e}"),
            })?;
        }
    }
    Ok(())
}

/// Exact reader names (no `*`) must exist at start-up when pcscd is up: a typo fails at
/// once with the readers that do exist, instead of waiting forever. Patterns may match
/// later readers.
pub(crate) async fn check_exact_names(names: &[String]) -> Result<(), ReaderError> {
    let exact: Vec<String> = names.iter().filter(|n| !n.contains('*')).cloned().collect();
    if exact.is_empty() {
        return Ok(());
    }
    tokio::task::spawn_blocking(move || {
        let pcsc = match reader::establish() {
            Ok(p) => p,
            // pcscd may start after us (boot order, socket activation): the watcher
            // waits for it, and a misspelt name then simply never matches. Refusing to
            // start would need a restart once pcscd is up.
            Err(e @ ReaderError::NoService(_)) => {
                tracing::warn!(error = %e, readers = %exact.join(", "), "reader names not checked: pcscd is not up yet");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        for name in &exact {
            reader::resolve(&pcsc, name)?;
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| {
        Err(ReaderError::Pcsc {
            reader: "*".into(),
            source: panic_as_pcsc(e),
        })
    })
}

fn panic_as_pcsc(e: tokio::task::JoinError) -> pcsc::Error {
    tracing::error!(error = %e, "reader check thread failed");
    pcsc::Error::InternalError
}
