//! PC/SC readers: listing, reading a card, and watching for insertions and removals.
//!
//! PC/SC calls block, so everything here is synchronous and runs on blocking threads
//! (`tokio::task::spawn_blocking`), never on the runtime's workers. The card logic itself
//! is in src/card; this module only carries APDUs to and from pcscd.

pub mod watch;

use crate::card::{self, CardError, CardTransport, Identity};
use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};
use serde::Serialize;
use std::ffi::CString;

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

fn reader_names(ctx: &Context) -> Result<Vec<CString>, ReaderError> {
    match ctx.list_readers_owned() {
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
            Ok(resp) => Ok(resp.to_vec()),
            Err(pcsc::Error::RemovedCard | pcsc::Error::ResetCard | pcsc::Error::NoSmartcard) => {
                Err(CardError::Removed)
            }
            Err(e @ (pcsc::Error::UnresponsiveCard | pcsc::Error::Timeout)) => {
                Err(CardError::Transport(format!("card did not answer: {e}")))
            }
            Err(e) => Err(CardError::Transport(e.to_string())),
        }
    }
}

/// Identify the card in `reader` (exact PC/SC name).
pub fn read_card(ctx: &Context, reader: &CString) -> Result<CardRead, ReaderError> {
    let shown = reader.to_string_lossy().into_owned();
    let pcsc_err = |source| ReaderError::Pcsc {
        reader: shown.clone(),
        source,
    };
    let card = match ctx.connect(reader, ShareMode::Shared, Protocols::ANY) {
        Ok(c) => c,
        Err(pcsc::Error::NoSmartcard | pcsc::Error::RemovedCard) => {
            return Err(ReaderError::NoCard(shown))
        }
        Err(pcsc::Error::UnknownReader | pcsc::Error::ReaderUnavailable) => {
            return Err(ReaderError::UnknownReader {
                name: shown,
                available: Vec::new(),
            })
        }
        Err(e) => return Err(pcsc_err(e)),
    };
    let atr = card
        .status2_owned()
        .map(|s| hex::encode_upper(s.atr()))
        .map_err(pcsc_err)?;
    let identity = card::identify(PcscCard {
        card: &card,
        buf: vec![0; pcsc::MAX_BUFFER_SIZE],
    })
    .map_err(|source| ReaderError::Card {
        reader: shown.clone(),
        source,
    })?;
    // Leave the card as found: no reset, so another application's session is untouched.
    if let Err((_, e)) = card.disconnect(pcsc::Disposition::LeaveCard) {
        tracing::debug!(reader = %shown, error = %e, "disconnect after read");
    }
    Ok(CardRead {
        reader: shown,
        atr,
        identity,
    })
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
