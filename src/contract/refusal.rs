//! An inbound message refused: its stable code and its reason, with what could be read
//! of it.

crate::sim::wire_words! {
    /// Why something was refused: stable codes a platform can switch on; `reason`
    /// carries the human text.
    pub enum RefusalCode {
        Malformed = "malformed",
        TooLarge = "too_large",
        InvalidField = "invalid_field",
        UnknownAction = "unknown_action",
        Unsupported = "unsupported",
        Expired = "expired",
        NotHosted = "not_hosted",
        NotApplicable = "not_applicable",
        Unavailable = "unavailable",
        Interrupted = "interrupted",
        Failed = "failed",
        /// A PIN or PUK command not attempted: its last attempt (or a PUK attempt whose
        /// count is unknown) would be spent; send it again with `force` to spend it.
        LastAttempt = "last_attempt",
        /// The agent remembers too many unexpired command ids to take another one
        /// (MQTT.md, "Exactly once"); nothing was done nor remembered.
        TooManyCommands = "too_many_commands",
        /// Not a refusal but an `error` event's code: the broker keeps closing the
        /// agent's fresh connections, most likely because another client uses its
        /// client id (MQTT.md, "Connection").
        ClientIdInUse = "client_id_in_use",
    }
}

/// An inbound message refused, with what could be read of it (to report on the
/// command's own status topic when its id was readable).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
    /// The command id, when it was present and valid.
    pub id: Option<String>,
    pub iccid: Option<String>,
    pub action: Option<String>,
    /// A fingerprint of the refused payload ([`payload_hash`]), so a retained record
    /// the broker redelivers on every reconnect is reported once per change.
    pub payload_hash: u64,
}

impl Refusal {
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            reason: reason.into(),
            id: None,
            iccid: None,
            action: None,
            payload_hash: 0,
        }
    }
}

/// FNV-1a, 64 bits (IETF draft-eastlake-fnv): stable across builds and versions, unlike
/// std's hasher, because the fingerprint of a refused record is kept in the store.
pub fn payload_hash(payload: &[u8]) -> u64 {
    payload.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
