//! The MQTT contract, version 1: every topic string and payload shape lives here and
//! nowhere else. Documented for platform engineers in MQTT.md (beside the README); a
//! change here is a change there.
//!
//! Topics sit under a per-agent prefix `simgate/v1/<agent-id>/` so a broker ACL can
//! confine each agent to its own subtree (`pattern readwrite simgate/v1/%u/#`, with the
//! agent's authenticated user name = its agent id; see MQTT.md).
//!
//! Inbound payloads are untrusted: [`parse_command`] and [`parse_platform_record`] bound
//! their size, check every field, and answer a typed refusal instead of failing.

//!
//! By section: `topics`, what the agent publishes (`payloads`), what the platform
//! sends (`commands` and their params, `records`), and the `refusal` of a bad
//! inbound message. Their items are re-exported here: `contract::X` is the one path.

mod commands;
mod payloads;
mod records;
mod refusal;
mod topics;

pub use commands::esim::{
    parse_download_params, parse_esim_params, parse_swap_params, DownloadRequest, EsimRequest,
    SwapTarget, MAX_SWAP_SLOT,
};
pub use commands::params::{
    parse_messaging_params, parse_params, parse_pin_params, parse_request_refill_params, Params,
    Refill, MAX_SMS_TEXT,
};
pub use commands::{parse_command, parse_local_command, Action, Command, CommandMsg};
pub use payloads::{
    CommandResult, CommandStatus, CommandStatusWord, DownloadStep, EventKind, EventMsg, Health,
    OperatorEstimate, SimIndex, SimState, SuspendedBy, SwapStep, TopUpEvidence, UsageBatch,
    UsageSample,
};
pub use records::{check_activation_code, parse_platform_record, PlatformMsg};
pub use refusal::{payload_hash, Refusal, RefusalCode};
pub use topics::{AgentTopic, Inbound, Topics};

/// Payload schema version carried in every message as `"v"`.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest inbound payload accepted (commands and platform records). Bigger ones are
/// refused before parsing: a gateway has little memory and the platform has no reason
/// to send more.
pub const MAX_INBOUND_BYTES: usize = 8 * 1024;

/// How long an agent remembers a command id (and so answers a repeat from its record).
/// Commands may not expire later than this ahead: a repeat after it would be refused as
/// expired, never executed again.
pub const COMMAND_MEMORY_SECS: u64 = 90 * 86_400;

/// A SIM's key as simgate publishes it, and so as it may appear in a topic or payload:
/// an ICCID of 18 to 20 digits (ITU-T E.118; README.md, "The SIM record"), where issuers' test and eSIM
/// ICCIDs may carry the hex digits A-E as read from the card (never F, the filler); or,
/// for a Blank eSIM without an ICCID, its EID of 32 decimal digits (GSMA SGP.29).
/// Anything else never reaches a topic, the store or a modem.
pub fn valid_iccid(s: &str) -> bool {
    let iccid = (18..=20).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'E').contains(&b));
    let eid = s.len() == 32 && s.bytes().all(|b| b.is_ascii_digit());
    iccid || eid
}

/// A command id becomes a topic level: 1 to 64 of letters, digits, '-', '_', '.'.
pub fn valid_command_id(s: &str) -> bool {
    crate::sim::valid_key(s)
}

/// Deserialize `value` as `T`, an error naming the field's path first (`params.plan:
/// invalid type: boolean, expected a string`): serde's own message names the type, not
/// the field. `prefix` is where `value` sits in the payload ("params.").
fn typed<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (path.as_str(), prefix) {
            (".", "") => inner.to_string(),
            (".", p) => format!("{}: {inner}", p.trim_end_matches('.')),
            (path, p) => format!("{p}{path}: {inner}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_code_is_its_serde_name() {
        crate::sim::check_wire_words(RefusalCode::ALL, RefusalCode::word);
    }
}
