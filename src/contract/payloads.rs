//! What the agent publishes (MQTT.md): health, the index, a SIM's state row, events,
//! usage batches and a command's status, with the closed word lists they carry.

use super::{RefusalCode, SCHEMA_VERSION};
use crate::sim::{Location, Observed, PlatformRecord, Status};
use serde::{Deserialize, Serialize};

/// Agent health payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    pub v: u32,
    /// "online" or "offline".
    pub state: String,
    pub ts: u64,
    pub version: String,
    /// The broker node this agent is connected to (online only): the URL it connected
    /// to, one of `broker.urls` or an address of a name that resolves to several.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub broker: Option<String>,
}

impl Health {
    pub fn new(online: bool, ts: u64) -> Health {
        Health {
            v: SCHEMA_VERSION,
            state: if online { "online" } else { "offline" }.into(),
            ts,
            version: env!("CARGO_PKG_VERSION").into(),
            broker: None,
        }
    }
}

/// The retained index of an agent's rows (`index`): every ICCID it has a `state` row
/// for, present or not, sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimIndex {
    pub v: u32,
    pub ts: u64,
    pub iccids: Vec<String>,
}

/// A SIM's retained state message: the whole row of the platform's SIMs page as simgate
/// sees it — what it observed (`sim::Observed`, flattened: one struct, so a field added
/// to an observation reaches the platform without a copy here), the status to show, and
/// the platform's record it caches. Fields simgate does not know are left out (not null)
/// to keep payloads small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimState {
    pub v: u32,
    /// The status to show: simgate's own Pending/Invalid when it set one, else the
    /// platform's word, else absent.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
    #[serde(flatten)]
    pub sim: Observed,
    /// The platform's record as cached by this agent (absent: none received yet).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<PlatformRecord>,
    /// simgate's local estimate of data and days left, from the record and its own
    /// counters (absent when the record gives neither).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub estimate: Option<crate::sim::Estimate>,
    /// What the SIM's operator last said of its balance (a USSD balance query, MQTT.md
    /// "USSD and SMS"): beside the platform's figures, never over them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub operator_estimate: Option<OperatorEstimate>,
    /// A standing suspension (the SIM's data session kept down): who set it and since
    /// when. Absent when none stands.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub suspended_by: Option<SuspendedBy>,
}

/// Who suspended a SIM: a platform (or page) command, or a local rule, by its id; and
/// since when (Unix seconds). A `refill` lifts a rule's suspension, never a command's
/// (MQTT.md, "Refill").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SuspendedBy {
    /// The `suspend` command's id.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub command: Option<String>,
    /// The rule's id (its `suspend` action fired).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rule: Option<String>,
    /// Unix seconds; absent for a suspension an older simgate set (origin unknown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<u64>,
}

impl SimState {
    pub fn from_observed(obs: &Observed) -> SimState {
        Self::merged(obs, None)
    }

    /// The row: observation plus the cached platform record.
    pub fn merged(obs: &Observed, platform: Option<&PlatformRecord>) -> SimState {
        SimState {
            v: SCHEMA_VERSION,
            status: obs
                .local_status()
                .or_else(|| platform.and_then(|p| p.status)),
            sim: obs.clone(),
            platform: platform.cloned(),
            estimate: None,
            operator_estimate: None,
            suspended_by: None,
        }
    }
}

/// An event message. `seq` grows strictly per agent (also across restarts): a platform
/// that sees a `seq` twice (a replay after a lost acknowledgement) drops the second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventMsg {
    pub v: u32,
    pub seq: u64,
    pub ts: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A SIM appeared (card inserted, modem found its SIM).
    Inserted { iccid: String, location: Location },
    /// A SIM left.
    Removed { iccid: String, location: Location },
    /// A different SIM now sits where `replaced` was last seen.
    Swapped {
        iccid: String,
        replaced: String,
        location: Location,
    },
    /// An identity field of a present SIM changed (e.g. IMSI after a profile switch,
    /// IMEI when it moved to another modem).
    IdentityChanged {
        iccid: String,
        field: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        old: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        new: Option<String>,
    },
    /// Something went wrong that the platform should know (refused inbound message,
    /// unreadable card ...).
    Error {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        iccid: Option<String>,
        code: RefusalCode,
        reason: String,
    },
    /// A command reached its final state (also on the command's own status topic).
    Command {
        id: String,
        iccid: String,
        action: String,
        status: CommandStatusWord,
        /// Why it failed, as on the status topic (absent when it succeeded).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        code: Option<RefusalCode>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    /// The outbox was full and shed messages; totals since the store was created.
    OutboxShed { telemetry: u64, events: u64 },
    /// A local rule fired (MQTT.md, "Rules"): the firing's id (the same after a crash),
    /// the rule, what made it fire and each action with its outcome.
    RuleFired {
        id: String,
        iccid: String,
        rule: String,
        trigger: String,
        facts: crate::rules::Facts,
        actions: Vec<crate::rules::ActionOutcome>,
    },
    /// simgate asks the platform for a top-up. `request_id` is the idempotency key: the
    /// same need (one threshold crossing) keeps its id across retries and restarts.
    RefillRequested {
        iccid: String,
        request_id: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        amount_mb: Option<f64>,
        /// The rule that asked; absent when a person did (`simgate refill`).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        rule: Option<String>,
    },
    /// A notification pending on an eUICC for its SM-DP+ (GSMA SGP.22 §3.5), handed to
    /// the platform, which delivers it (ES9+ HandleNotification) and acknowledges it
    /// with an `esim_notification_ack` command; simgate removes it from the eUICC only
    /// then. Repeated after later operations until acknowledged: keyed by (`iccid`'s
    /// eUICC, `seq`).
    EsimNotification {
        iccid: String,
        /// The eUICC's sequence number (NotificationMetadata seqNumber); `number`, as
        /// the event's own `seq` is the agent's event number.
        number: u32,
        /// install, enable, disable or delete.
        operation: String,
        /// The profile it concerns.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        profile: Option<String>,
        /// The SM-DP+ to deliver it to (notificationAddress).
        address: String,
        /// The signed PendingNotification, DER, hex.
        notification: String,
    },
    /// The PC/SC service (pcscd) was lost (`up: false`, with the reason) or is back
    /// (`up: true`). Said once per outage: the cards that stayed in their readers are
    /// not reported removed and inserted again; those that left are reported removed.
    ReaderService {
        up: bool,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
    /// A step of a guided SIM swap (MQTT.md, "Swap") started (`ok` absent) or ended
    /// (`ok`, with `secs`); `iccid` is the SIM being replaced, `id` the swap command's.
    SwapStep {
        id: String,
        iccid: String,
        step: SwapStep,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        ok: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        new_iccid: Option<String>,
        detail: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        secs: Option<f64>,
    },
    /// An SMS the SIM received (MQTT.md, "USSD and SMS"): taken from the modem's
    /// storage and deleted there only once this event was queued; `key` is the same
    /// for the same message, also after a restart.
    Sms {
        iccid: String,
        key: String,
        /// The sender: `+` and digits, national digits, or a name.
        from: String,
        /// When the SMS centre stamped it (Unix seconds).
        sent_at: i64,
        text: String,
        /// Parts it came in, when more than one (TS 23.040 concatenation).
        #[serde(skip_serializing_if = "Option::is_none", default)]
        parts: Option<u8>,
        /// Parts that never arrived (given when a full storage made simgate take an
        /// incomplete message rather than wait).
        #[serde(skip_serializing_if = "Vec::is_empty", default)]
        missing_parts: Vec<u8>,
        /// The operator's top-up confirmation (devices/operators `[topup]`): the
        /// evidence of a refill, with the MB it names when it names them.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        topup: Option<TopUpEvidence>,
    },
    /// A step of an `esim_download` (MQTT.md, "eSIM download"), throttled: no event
    /// per package segment (`installing` at most at each quarter). `iccid` is the
    /// SIM whose eUICC downloads, `id` the command's; `profile` the offered, then
    /// installed, profile's ICCID. Never a matching ID or a confirmation code.
    EsimDownloadStep {
        id: String,
        iccid: String,
        step: DownloadStep,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        profile: Option<String>,
        /// `installing`: segments loaded, of how many.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        done: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        of: Option<u32>,
        detail: String,
    },
    /// The modem on `port` stopped answering or its port vanished (`up: false`, with
    /// the reason), or it answers again (`up: true`); `iccid`: the SIM it held.
    ModemService {
        port: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        iccid: Option<String>,
        up: bool,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        reason: Option<String>,
    },
}

impl EventKind {
    /// The SIM an event is about, if any (for per-SIM views).
    pub fn iccid(&self) -> Option<&str> {
        match self {
            EventKind::Inserted { iccid, .. }
            | EventKind::Removed { iccid, .. }
            | EventKind::Swapped { iccid, .. }
            | EventKind::IdentityChanged { iccid, .. }
            | EventKind::Command { iccid, .. }
            | EventKind::RuleFired { iccid, .. }
            | EventKind::SwapStep { iccid, .. }
            | EventKind::RefillRequested { iccid, .. }
            | EventKind::Sms { iccid, .. }
            | EventKind::EsimNotification { iccid, .. }
            | EventKind::EsimDownloadStep { iccid, .. } => Some(iccid),
            EventKind::Error { iccid, .. } | EventKind::ModemService { iccid, .. } => {
                iccid.as_deref()
            }
            EventKind::OutboxShed { .. } | EventKind::ReaderService { .. } => None,
        }
    }
}

/// An SMS recognised as the operator's top-up confirmation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TopUpEvidence {
    /// The operator (devices/operators `name`).
    pub operator: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount_mb: Option<f64>,
}

/// One SIM's counters in a usage batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UsageSample {
    pub iccid: String,
    /// The month the counters accumulate in, "YYYY-MM" (UTC).
    pub month: String,
    /// Bytes received and sent this month.
    pub rx: u64,
    pub tx: u64,
    /// When the counters were read (Unix seconds).
    pub at: u64,
}

/// A usage batch: the latest counters of every SIM that reported since the last batch.
/// Counters are cumulative per month, so a lost batch is made good by the next one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct UsageBatch {
    pub v: u32,
    pub seq: u64,
    pub ts: u64,
    pub sims: Vec<UsageSample>,
}

/// What the SIM's operator said about its balance, and when (MQTT.md, "SIM state":
/// `operator_estimate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperatorEstimate {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days_left: Option<f64>,
    /// Always `operator`: the figures are the operator's reply to a balance query.
    pub source: String,
    /// When the reply came (Unix seconds).
    pub at: u64,
}

crate::sim::wire_words! {
    /// The steps of an `esim_download` (MQTT.md, "eSIM download"), in order; with
    /// `enable` the swap's steps follow (`swap_step`, same command id).
    pub enum DownloadStep {
        /// The eUICC's challenge read; the SM-DP+ asked to authenticate.
        Challenge = "challenge",
        /// Both sides authenticated (SGP.22 §3.1.3.1).
        Authenticated = "authenticated",
        /// The profile the SM-DP+ offers (`profile`), accepted.
        Preview = "preview",
        /// The bound package arrived: `of` segments to load.
        Package = "package",
        /// Loading: `done` of `of` segments (at most one event per quarter).
        Installing = "installing",
        /// The eUICC installed `profile` (verified by listing).
        Installed = "installed",
        /// The installation result reached the SM-DP+, or stays on the card (why).
        Notification = "notification",
        /// After a restart: the interrupted download reconciled with the card.
        Reconciled = "reconciled",
        /// The download failed at the function named in `detail`, reconciled.
        Failed = "failed",
    }
}

crate::sim::wire_words! {
    /// The steps of a guided SIM swap, in order (MQTT.md, "Swap"); `rollback` only
    /// after a step failed.
    pub enum SwapStep {
        Prepare = "prepare",
        Act = "act",
        Detect = "detect",
        Verify = "verify",
        Commit = "commit",
        Rollback = "rollback",
    }
}

impl SwapStep {
    /// Ordered for the store's record: a later step is greater.
    pub fn index(self) -> usize {
        SwapStep::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

crate::sim::wire_words! {
    /// Lifecycle words (thin-edge.io's).
    pub enum CommandStatusWord {
        Received = "received",
        Executing = "executing",
        Successful = "successful",
        Failed = "failed",
    }
}

/// A command's lifecycle message on `cmd/<id>/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandStatus {
    pub v: u32,
    pub id: String,
    pub iccid: String,
    pub action: String,
    pub status: CommandStatusWord,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<RefusalCode>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// A `sync`'s end marker: how many rows it published before this status.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rows: Option<u64>,
    /// What a successful command found (a `ussd`'s replies, a `sms_send`'s parts).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<CommandResult>,
    /// An `esim_download`'s installed profile (ICCID), also when a later step failed:
    /// the profile stays on the eUICC.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<String>,
    pub ts: u64,
}

/// What a successful `ussd` or `sms_send` found (MQTT.md, "USSD and SMS").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandResult {
    /// `ussd`: the network's replies, one per string sent, decoded.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replies: Option<Vec<String>>,
    /// `ussd`: how the session ended: `done` (the network closed it), `cancelled` (it
    /// asked for more than `answers` gave), `network` (the network ended it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ended: Option<String>,
    /// `sms_send`: the parts sent, each with the network's message reference.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub references: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_word_is_its_serde_name() {
        crate::sim::check_wire_words(CommandStatusWord::ALL, CommandStatusWord::word);
        crate::sim::check_wire_words(SwapStep::ALL, SwapStep::word);
        crate::sim::check_wire_words(DownloadStep::ALL, DownloadStep::word);
    }

    #[test]
    fn events_serialise_flat_with_their_type() {
        let e = EventMsg {
            v: 1,
            seq: 7,
            ts: 1,
            kind: EventKind::Removed {
                iccid: "8988211000000430010".into(),
                location: Location::Reader {
                    reader: "R 00 00".into(),
                },
            },
        };
        let j = serde_json::to_value(&e).unwrap();
        assert_eq!(j["type"], "removed");
        assert_eq!(j["seq"], 7);
        assert_eq!(serde_json::from_value::<EventMsg>(j).unwrap(), e);
    }
}
