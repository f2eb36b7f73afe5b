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

use crate::sim::{Location, Observed, PlatformRecord, Status};
use serde::{Deserialize, Serialize};

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

/// Topic builder for one agent.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

/// Any topic of one agent's subtree, as the platform side sees it (`Topics::outbound`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentTopic {
    Health,
    SimState { iccid: String },
    SimPlatform { iccid: String },
    Events,
    Usage,
    Command,
    CommandStatus { id: String },
    Index,
}

/// What an inbound topic is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A platform command (`cmd`).
    Command,
    /// The platform's record for a SIM (`sim/<iccid>/platform`).
    PlatformRecord { iccid: String },
}

impl Topics {
    /// `agent_id` must have passed `config::validate_agent_id` (no `/`, `+`, `#`).
    pub fn new(agent_id: &str) -> Topics {
        Topics {
            prefix: format!("simgate/v1/{agent_id}"),
        }
    }

    /// Everything of this agent, for subscribers such as `simgate watch`.
    pub fn all(&self) -> String {
        format!("{}/#", self.prefix)
    }

    /// Agent health: agent → platform, retained, QoS 1; the last will sets it offline.
    pub fn health(&self) -> String {
        format!("{}/health", self.prefix)
    }

    /// A SIM's state row: agent → platform, retained, QoS 1. `iccid` is validated digits.
    pub fn sim_state(&self, iccid: &str) -> String {
        format!("{}/sim/{iccid}/state", self.prefix)
    }

    /// The platform's record for a SIM: platform → agent, retained by the platform, QoS 1.
    pub fn sim_platform(&self, iccid: &str) -> String {
        format!("{}/sim/{iccid}/platform", self.prefix)
    }

    /// Filter the agent subscribes to for platform records.
    pub fn sim_platform_filter(&self) -> String {
        format!("{}/sim/+/platform", self.prefix)
    }

    /// The ICCIDs this agent keeps a row for: agent → platform, retained, QoS 1. For a
    /// platform on a broker that serves retained messages only to exact topics, or only
    /// on the node they were published on (MQTT.md, "Clusters").
    pub fn index(&self) -> String {
        format!("{}/index", self.prefix)
    }

    /// Events: agent → platform, QoS 1, not retained.
    pub fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    /// Usage telemetry batches: agent → platform, QoS 1, not retained.
    pub fn usage(&self) -> String {
        format!("{}/usage", self.prefix)
    }

    /// Commands: platform → agent, QoS 1, not retained (the broker queues them for the
    /// agent's persistent session while it is offline).
    pub fn commands(&self) -> String {
        format!("{}/cmd", self.prefix)
    }

    /// A command's lifecycle: agent → platform, QoS 1, not retained. `id` is validated.
    pub fn command_status(&self, id: &str) -> String {
        format!("{}/cmd/{id}/status", self.prefix)
    }

    /// Filter for every command status (platform side).
    pub fn command_status_filter(&self) -> String {
        format!("{}/cmd/+/status", self.prefix)
    }

    /// Classify any topic of this agent's subtree (platform side: `simgate watch`,
    /// `simgate platform`); None for a topic the contract does not define.
    pub fn outbound(&self, topic: &str) -> Option<AgentTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        Some(match parts.as_slice() {
            ["health"] => AgentTopic::Health,
            ["events"] => AgentTopic::Events,
            ["usage"] => AgentTopic::Usage,
            ["index"] => AgentTopic::Index,
            ["cmd"] => AgentTopic::Command,
            ["cmd", id, "status"] => AgentTopic::CommandStatus { id: id.to_string() },
            ["sim", iccid, "state"] => AgentTopic::SimState {
                iccid: iccid.to_string(),
            },
            ["sim", iccid, "platform"] => AgentTopic::SimPlatform {
                iccid: iccid.to_string(),
            },
            _ => return None,
        })
    }

    /// Classify a topic the agent received; None for anything it does not consume.
    pub fn inbound(&self, topic: &str) -> Option<Inbound> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        if rest == "cmd" {
            return Some(Inbound::Command);
        }
        let iccid = rest.strip_prefix("sim/")?.strip_suffix("/platform")?;
        Some(Inbound::PlatformRecord {
            iccid: iccid.to_string(),
        })
    }
}

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

crate::sim::wire_words! {
    /// Actions a command may ask for (MQTT.md, "Commands").
    pub enum Action {
        Refresh = "refresh",
        Suspend = "suspend",
        Resume = "resume",
        SetRecord = "set_record",
        Refill = "refill",
        Rules = "rules",
        Swap = "swap",
        /// A person at the gateway asks the platform for a top-up (`simgate refill`):
        /// a `refill_requested` event, within the auto-refill caps.
        RequestRefill = "request_refill",
        /// An eUICC's profiles (GSMA SGP.22 ES10c, MQTT.md "eSIM profiles"): list them
        /// again, enable, disable, delete one, set its nickname.
        EsimList = "esim_list",
        EsimEnable = "esim_enable",
        EsimDisable = "esim_disable",
        EsimDelete = "esim_delete",
        EsimNickname = "esim_nickname",
        /// The platform delivered an eSIM notification: remove it from the eUICC.
        EsimNotificationAck = "esim_notification_ack",
        /// Download a profile from an SM-DP+ onto the SIM's eUICC (GSMA SGP.22 §3.1.3),
        /// optionally enable it, verified as a swap (MQTT.md, "eSIM download").
        EsimDownload = "esim_download",
        /// PIN1 of the SIM (MQTT.md, "PIN and PUK"): enter, enable, disable, change it,
        /// or unblock it with the PUK.
        PinVerify = "pin_verify",
        PinEnable = "pin_enable",
        PinDisable = "pin_disable",
        PinChange = "pin_change",
        PinUnblock = "pin_unblock",
        /// A USSD exchange on the SIM's modem (MQTT.md, "USSD and SMS"): `code`, then
        /// the `answers` to the network's menus; the replies in the outcome's `result`.
        Ussd = "ussd",
        /// Send an SMS from the SIM's modem: `to`, `text` (PDU mode; long texts in
        /// concatenated parts).
        SmsSend = "sms_send",
        /// Publish every row again, then the command's `successful` status with the
        /// count (`rows`): a platform rebuilds its table from the agent, not from the
        /// broker's retained messages (MQTT.md, "Sync"). For the whole agent: `iccid`
        /// empty.
        Sync = "sync",
    }
}

impl Action {
    /// The PIN operation of a `pin_*` action.
    pub fn pin_op(self) -> Option<crate::sim::PinOp> {
        use crate::sim::PinOp;
        Some(match self {
            Action::PinVerify => PinOp::Verify,
            Action::PinEnable => PinOp::Enable,
            Action::PinDisable => PinOp::Disable,
            Action::PinChange => PinOp::Change,
            Action::PinUnblock => PinOp::Unblock,
            _ => return None,
        })
    }

    /// One of the `esim_*` actions.
    pub fn is_esim(self) -> bool {
        matches!(
            self,
            Action::EsimList
                | Action::EsimEnable
                | Action::EsimDisable
                | Action::EsimDelete
                | Action::EsimNickname
                | Action::EsimNotificationAck
        )
    }
}

/// What an `esim_enable`, `esim_disable`, `esim_delete` or `esim_nickname` command's
/// `params` name: `{"profile": ICCID}`, and for a nickname `"nickname"` (at most 64
/// bytes, SGP.22 profileNickname; empty clears it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EsimRequest {
    /// The profile's ICCID; empty for `esim_notification_ack`.
    pub profile: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub nickname: Option<String>,
    /// For `esim_notification_ack`: the notification's sequence number.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seq: Option<u32>,
}

/// Check an `esim_*` command's params; `None` for `esim_list`, which takes none.
pub fn parse_esim_params(
    action: Action,
    params: &serde_json::Value,
) -> Result<Option<EsimRequest>, Refusal> {
    let bad = |why: String| Refusal::new(RefusalCode::InvalidField, why);
    let empty = serde_json::Map::new();
    let obj = match params {
        serde_json::Value::Null => &empty,
        serde_json::Value::Object(o) => o,
        _ => return Err(bad("params: not an object".into())),
    };
    let allowed: &[&str] = match action {
        Action::EsimList => &[],
        Action::EsimNotificationAck => &["seq"],
        Action::EsimNickname => &["profile", "nickname"],
        _ => &["profile"],
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "params.{k}: unknown field ({} takes {})",
            action.word(),
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    if action == Action::EsimList {
        return Ok(None);
    }
    if action == Action::EsimNotificationAck {
        let seq = obj
            .get("seq")
            .and_then(|v| v.as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                bad("params.seq: missing, or not a notification's sequence number".into())
            })?;
        return Ok(Some(EsimRequest {
            profile: String::new(),
            nickname: None,
            seq: Some(seq),
        }));
    }
    let profile = match obj.get("profile").and_then(|v| v.as_str()) {
        Some(p) if valid_iccid(p) && p.len() <= 20 => p.to_string(),
        Some(p) => {
            return Err(bad(format!(
                "params.profile: {p} is not a profile's ICCID (18-20 digits, A-E allowed)"
            )))
        }
        None => return Err(bad("params.profile: missing (the profile's ICCID)".into())),
    };
    let nickname = match (action, obj.get("nickname")) {
        (Action::EsimNickname, Some(serde_json::Value::String(n))) if n.len() <= 64 => {
            Some(n.clone())
        }
        (Action::EsimNickname, Some(serde_json::Value::String(n))) => {
            return Err(bad(format!(
                "params.nickname: {} bytes, at most 64 (SGP.22 profileNickname)",
                n.len()
            )))
        }
        (Action::EsimNickname, _) => {
            return Err(bad("params.nickname: missing, or not a string".into()))
        }
        _ => None,
    };
    Ok(Some(EsimRequest {
        profile,
        nickname,
        seq: None,
    }))
}

/// A command as the platform sends it on `cmd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CommandMsg {
    pub v: u32,
    pub id: String,
    /// Empty (or absent) for `sync`, which covers the whole agent; left out when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub iccid: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// Unix seconds after which the command must not run.
    pub expires_at: u64,
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

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub id: String,
    pub iccid: String,
    pub action: Action,
    /// What the action takes, already validated (`parse_params`).
    pub params: Params,
    pub expires_at: u64,
}

/// A command's params once checked: one variant per shape of params an action takes
/// (MQTT.md, "Commands"), so an action's executor gets exactly what it needs. A new
/// action taking params adds its variant here and its arm in [`parse_params`].
#[derive(Debug, Clone, PartialEq)]
pub enum Params {
    /// `refresh`, `suspend`, `resume`, `rules`, `esim_list`, `sync`: none (any sent are
    /// ignored).
    None,
    /// `set_record`: the platform record.
    Record(PlatformRecord),
    /// `refill`: what to apply.
    Refill(Refill),
    /// `request_refill`: how much to ask for, if said.
    RequestRefill { amount_mb: Option<f64> },
    /// `swap`: where the new SIM comes from.
    Swap(SwapTarget),
    /// `esim_*` but `esim_list`: the profile (and nickname), or the notification.
    Esim(EsimRequest),
    /// `pin_*`: the operation and its secrets (never shown: `sim::Secret`). Boxed: the
    /// secrets would make every command much larger.
    Pin(Box<crate::sim::PinRequest>),
    /// `ussd`: the code and the answers to menus, each checked
    /// (`modem::ussd::check_code`, `check_answer`).
    Ussd { code: String, answers: Vec<String> },
    /// `sms_send`: the destination and the text.
    Sms { to: String, text: String },
    /// `esim_download`, and a `swap` with `download`: what to download (its codes never
    /// shown: `rsp::activation::Secret`). Boxed as `Pin`.
    Download(Box<DownloadRequest>),
}

/// Check `params` for `action`: the one place each action's params are read.
pub fn parse_params(action: Action, params: &serde_json::Value) -> Result<Params, Refusal> {
    if let Some(op) = action.pin_op() {
        return Ok(Params::Pin(Box::new(parse_pin_params(op, params)?)));
    }
    if action.is_esim() {
        return Ok(match parse_esim_params(action, params)? {
            Some(req) => Params::Esim(req),
            None => Params::None,
        });
    }
    Ok(match action {
        Action::EsimDownload => Params::Download(Box::new(parse_download_params(params, false)?)),
        // A swap with `download`: the same checks as any swap's params first (one
        // target, known fields), then the download's.
        Action::Swap if params.get("download").is_some() => {
            if let Err(r) = parse_swap_params(params) {
                if !r.reason.starts_with("params.download") {
                    return Err(r);
                }
            }
            Params::Download(Box::new(parse_download_params(params, true)?))
        }
        Action::Swap => Params::Swap(parse_swap_params(params)?),
        Action::SetRecord => {
            let rec: PlatformRecord = typed(params.clone(), "params.").map_err(|e| {
                Refusal::new(
                    RefusalCode::InvalidField,
                    format!("not a platform record: {e}"),
                )
            })?;
            check_record(&rec)?;
            Params::Record(rec)
        }
        Action::RequestRefill => parse_request_refill_params(params)?,
        Action::Ussd | Action::SmsSend => parse_messaging_params(action, params)?,
        Action::Refill => {
            let r: Refill = typed(params.clone(), "params.").map_err(|e| {
                Refusal::new(RefusalCode::InvalidField, format!("not a refill: {e}"))
            })?;
            check_refill(&r)?;
            Params::Refill(r)
        }
        _ => Params::None,
    })
}

/// The longest SMS text a `sms_send` takes: 10 concatenated parts of GSM 7-bit.
pub const MAX_SMS_TEXT: usize = 1530;

/// Check a `ussd` (`code`, optional `answers`) or `sms_send` (`to`, `text`) command's
/// params; a refusal names the field.
pub fn parse_messaging_params(
    action: Action,
    params: &serde_json::Value,
) -> Result<Params, Refusal> {
    let bad = |m: String| Refusal::new(RefusalCode::InvalidField, m);
    let known: &[&str] = if action == Action::Ussd {
        &["code", "answers"]
    } else {
        &["to", "text"]
    };
    if let Some(k) = params
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Err(bad(format!(
            "params.{k}: unknown field ({action} takes {})",
            known.join(", ")
        )));
    }
    let text = |k: &str| -> Result<String, Refusal> {
        params
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad(format!("params.{k}: missing, or not a string")))
    };
    if action == Action::Ussd {
        let code = text("code")?;
        crate::sms::ussd::check_code(&code).map_err(|e| bad(format!("params.code: {e}")))?;
        let answers = match params.get("answers") {
            None => Vec::new(),
            Some(a) => a
                .as_array()
                .filter(|a| a.len() <= 8)
                .ok_or_else(|| bad("params.answers: a list of at most 8 strings".into()))?
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let s = v
                        .as_str()
                        .ok_or_else(|| bad(format!("params.answers[{i}]: not a string")))?;
                    crate::modem::ussd::check_answer(s)
                        .map_err(|e| bad(format!("params.answers[{i}]: {e}")))?;
                    Ok(s.to_string())
                })
                .collect::<Result<_, Refusal>>()?,
        };
        return Ok(Params::Ussd { code, answers });
    }
    let to = text("to")?;
    crate::sms::pdu::check_number(&to).map_err(|e| bad(format!("params.to: {e}")))?;
    let body = text("text")?;
    let n = body.chars().count();
    if n == 0 || n > MAX_SMS_TEXT {
        return Err(bad(format!(
            "params.text: {n} characters; 1 to {MAX_SMS_TEXT}"
        )));
    }
    Ok(Params::Sms { to, text: body })
}

/// Check a `request_refill` command's params: only an optional amount, what to ask for.
pub fn parse_request_refill_params(params: &serde_json::Value) -> Result<Params, Refusal> {
    let bad = |m: &str| Refusal::new(RefusalCode::InvalidField, m);
    let amount_mb = match params.get("amount_mb") {
        None => None,
        Some(a) => Some(
            a.as_f64()
                .filter(|a| a.is_finite() && *a > 0.0 && *a <= 1e9)
                .ok_or_else(|| bad("params.amount_mb: not a positive number of MB"))?,
        ),
    };
    if let Some(k) = params
        .as_object()
        .and_then(|o| o.keys().find(|k| k.as_str() != "amount_mb"))
    {
        return Err(bad(&format!(
            "params.{k}: unknown field (request_refill takes amount_mb)"
        )));
    }
    Ok(Params::RequestRefill { amount_mb })
}

/// Check a `pin_*` command's params: `pin` (a PUK's `puk` for an unblock), `new_pin`
/// for a change and an unblock, optional `force`. A refusal names the field, never its
/// value: the value is a secret.
pub fn parse_pin_params(
    op: crate::sim::PinOp,
    params: &serde_json::Value,
) -> Result<crate::sim::PinRequest, Refusal> {
    use crate::sim::{PinOp, Secret};
    let bad = |m: String| Refusal::new(RefusalCode::InvalidField, m);
    let obj = params
        .as_object()
        .ok_or_else(|| bad("params: not an object".into()))?;
    let (first, second): (&str, Option<&str>) = match op {
        PinOp::Verify | PinOp::Enable | PinOp::Disable => ("pin", None),
        PinOp::Change => ("pin", Some("new_pin")),
        PinOp::Unblock => ("puk", Some("new_pin")),
    };
    if let Some(k) = obj
        .keys()
        .find(|k| ![first, "force"].contains(&k.as_str()) && Some(k.as_str()) != second)
    {
        return Err(bad(format!(
            "params.{k}: unknown field ({op} takes {first}{}, force)",
            second.map(|s| format!(", {s}")).unwrap_or_default()
        )));
    }
    let text = |k: &str| obj.get(k).and_then(|v| v.as_str());
    let secret = |k: &str| -> Result<Secret, Refusal> {
        let v = text(k).ok_or_else(|| bad(format!("params.{k}: missing, or not a string")))?;
        let r = if k == "puk" {
            Secret::puk(v)
        } else {
            Secret::pin(v)
        };
        r.map_err(|e| bad(format!("params.{k}: {e}")))
    };
    let force = match obj.get("force") {
        None => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(bad("params.force: not true or false".into())),
    };
    Ok(crate::sim::PinRequest {
        op,
        first: secret(first)?,
        second: second.map(secret).transpose()?,
        force,
    })
}

/// What a `swap` command's `params` ask for (MQTT.md, "Swap"): exactly one of
/// `{"to_slot": N}` (the modem's SIM slot N, counted from 1 as in the row's
/// `location.slot`) or `{"expect_iccid": "…"}` (the technician replaces the SIM by hand
/// and this is the ICCID that must appear).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapTarget {
    ToSlot(u8),
    ExpectIccid(String),
    /// An eUICC's installed profile (its ICCID) enabled in place of the enabled one.
    ToProfile(String),
}

/// The highest slot number a `to_slot` may name; the modem's profile bounds it further
/// (devices/modems `[slots] count`), checked when the swap runs.
pub const MAX_SWAP_SLOT: u64 = 8;

/// Check a swap command's `params` field by field; every refusal names the field. A
/// swap with `download` (an eSIM's new profile from an SM-DP+) is checked by
/// [`parse_download_params`] instead: it has no [`SwapTarget`] until the profile landed.
pub fn parse_swap_params(params: &serde_json::Value) -> Result<SwapTarget, Refusal> {
    let bad = |why: String| Refusal::new(RefusalCode::InvalidField, why);
    const TARGETS: &str = "to_slot, expect_iccid, to_profile or download";
    let obj = params
        .as_object()
        .ok_or_else(|| bad(format!("params: a swap needs an object with {TARGETS}")))?;
    if let Some(k) = obj.keys().find(|k| {
        !matches!(
            k.as_str(),
            "to_slot" | "expect_iccid" | "to_profile" | "download" | "confirmation_code"
        )
    }) {
        return Err(bad(format!(
            "params.{k}: unknown field (a swap takes {TARGETS})"
        )));
    }
    let given: Vec<&str> = ["to_slot", "expect_iccid", "to_profile", "download"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    match given[..] {
        [] => Err(bad(format!("params: missing {TARGETS}"))),
        [_] => Ok(()),
        _ => Err(bad(format!(
            "params: {} together (a swap is one of {TARGETS})",
            given.join(" and ")
        ))),
    }?;
    if obj.contains_key("confirmation_code") && !obj.contains_key("download") {
        return Err(bad(
            "params.confirmation_code: only with download (it confirms a profile download)".into(),
        ));
    }
    match (obj.get("to_slot"), obj.get("expect_iccid"), obj.get("to_profile")) {
        (Some(n), _, _) => match n.as_u64() {
            Some(n @ 1..=MAX_SWAP_SLOT) => Ok(SwapTarget::ToSlot(n as u8)),
            _ => Err(bad(format!(
                "params.to_slot: {n} is not a slot number 1-{MAX_SWAP_SLOT}"
            ))),
        },
        (_, Some(i), _) => match i.as_str().filter(|s| valid_iccid(s)) {
            Some(i) => Ok(SwapTarget::ExpectIccid(i.to_string())),
            None => Err(bad(format!(
                "params.expect_iccid: {i} is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)"
            ))),
        },
        (_, _, Some(i)) => match i.as_str().filter(|s| profile_iccid(s)) {
            Some(i) => Ok(SwapTarget::ToProfile(i.to_string())),
            None => Err(bad(format!(
                "params.to_profile: {i} is not a profile's ICCID (18-20 digits)"
            ))),
        },
        // `download`: the caller parses it (parse_download_params).
        _ => Err(bad("params.download: a download has no target until it landed".into())),
    }
}

/// A profile's ICCID as an eUICC lists it (SGP.22 §5.7.15 ProfileInfo iccid): 18-20
/// decimal digits.
fn profile_iccid(s: &str) -> bool {
    (18..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// What an `esim_download` command (or a `swap` with `download`) asks for (MQTT.md,
/// "eSIM download"). The activation code's matching ID and the confirmation code are
/// secrets (SGP.22 §4.1): held here as [`Secret`](crate::rsp::activation::Secret),
/// which never prints, and kept nowhere but in memory for the command's life.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadRequest {
    pub activation: crate::rsp::activation::ActivationCode,
    pub confirmation_code: Option<crate::rsp::activation::Secret>,
    /// Enable the new profile once installed, verified as a swap's verify step.
    pub enable: bool,
    pub nickname: Option<String>,
    /// With `enable`: when the new profile does not register with its data session up,
    /// enable the previous one again (verified). Without: leave the new one enabled.
    pub rollback_on_failure: bool,
}

/// Check an `esim_download`'s `params` (`activation_code`, optional
/// `confirmation_code`, `enable`, `nickname`, `rollback_on_failure`), or a swap's with
/// `download` (the code in `download`, optional `confirmation_code`; enable and roll
/// back implied). A refusal names the field, never a code's value.
pub fn parse_download_params(
    params: &serde_json::Value,
    swap: bool,
) -> Result<DownloadRequest, Refusal> {
    let bad = |m: String| Refusal::new(RefusalCode::InvalidField, m);
    let obj = params
        .as_object()
        .ok_or_else(|| bad("params: not an object".into()))?;
    let (code_field, allowed): (&str, &[&str]) = if swap {
        ("download", &["download", "confirmation_code"])
    } else {
        (
            "activation_code",
            &[
                "activation_code",
                "confirmation_code",
                "enable",
                "nickname",
                "rollback_on_failure",
            ],
        )
    };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "params.{k}: unknown field (takes {})",
            allowed.join(", ")
        )));
    }
    let code = obj
        .get(code_field)
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad(format!("params.{code_field}: missing, or not a string")))?;
    let activation = crate::rsp::activation::ActivationCode::parse(code)
        .map_err(|e| bad(format!("params.{code_field}: {e}")))?;
    let confirmation_code = match obj.get("confirmation_code") {
        None => None,
        Some(serde_json::Value::String(c)) if !c.is_empty() && c.len() <= 32 => {
            Some(crate::rsp::activation::Secret::new(c.clone()))
        }
        Some(_) => {
            return Err(bad(
                "params.confirmation_code: not a string of 1-32 characters".into(),
            ))
        }
    };
    if activation.confirmation_required && confirmation_code.is_none() {
        return Err(bad(format!(
            "params.confirmation_code: missing, and the {code_field} says the profile needs one"
        )));
    }
    let flag = |k: &str, default: bool| match obj.get(k) {
        None => Ok(default),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("params.{k}: not true or false"))),
    };
    let nickname = match obj.get("nickname") {
        None => None,
        Some(serde_json::Value::String(n)) if n.len() <= 64 => Some(n.clone()),
        Some(_) => {
            return Err(bad(
                "params.nickname: not a string of at most 64 bytes (SGP.22 profileNickname)".into(),
            ))
        }
    };
    Ok(DownloadRequest {
        activation,
        confirmation_code,
        enable: swap || flag("enable", false)?,
        nickname,
        rollback_on_failure: swap || flag("rollback_on_failure", true)?,
    })
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

/// A refill the platform applies (`refill` command `params`): a top-up of `amount_mb`
/// and/or the new `data_left_mb`, optionally the new `days` left, and the id of the
/// `refill_requested` it answers. At least one of `amount_mb` and `data_left_mb`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub amount_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<String>,
}

fn check_refill(r: &Refill) -> Result<(), Refusal> {
    let bad = |field: &str, why: &str| {
        Err(Refusal::new(
            RefusalCode::InvalidField,
            format!("params.{field}: {why}"),
        ))
    };
    if r.amount_mb.is_none() && r.data_left_mb.is_none() {
        return bad("amount_mb", "give amount_mb or data_left_mb");
    }
    if r.amount_mb
        .is_some_and(|a| !a.is_finite() || a <= 0.0 || a > 1e9)
    {
        return bad("amount_mb", "not a positive number of MB");
    }
    if r.data_left_mb
        .is_some_and(|d| !d.is_finite() || !(0.0..=1e9).contains(&d))
    {
        return bad("data_left_mb", "not a non-negative number of MB");
    }
    if r.days.is_some_and(|d| d > 36_600) {
        return bad("days", "more than 100 years");
    }
    // The request id was simgate's own firing id: the same shape as a command id.
    if r.request_id
        .as_deref()
        .is_some_and(|i| !valid_command_id(i))
    {
        return bad("request_id", "not 1-64 of [A-Za-z0-9._-]");
    }
    Ok(())
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

/// Parse and check a command payload. `now` is Unix seconds. Every failure says which
/// field and why; the id is kept when it was readable so the refusal can be reported on
/// the command's status topic.
pub fn parse_command(payload: &[u8], now: u64) -> Result<Command, Refusal> {
    if payload.len() > MAX_INBOUND_BYTES {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "payload of {} bytes exceeds {MAX_INBOUND_BYTES}",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Refusal::new(RefusalCode::Malformed, format!("not JSON: {e}")))?;
    // Read the id first, on its own, so even a command with bad fields gets its answer.
    let id = value
        .get("id")
        .and_then(|v| v.as_str())
        .filter(|s| valid_command_id(s))
        .map(String::from);
    let with_id = |mut r: Refusal| {
        r.id = id.clone();
        r.iccid = value
            .get("iccid")
            .and_then(|v| v.as_str())
            .filter(|s| valid_iccid(s))
            .map(String::from);
        r.action = value
            .get("action")
            .and_then(|v| v.as_str())
            .filter(|s| s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .map(String::from);
        r
    };
    if id.is_none() {
        return Err(with_id(Refusal::new(
            RefusalCode::InvalidField,
            "id: missing or not 1-64 of [A-Za-z0-9._-]",
        )));
    }
    let msg: CommandMsg = typed(value.clone(), "").map_err(|e| {
        with_id(Refusal::new(
            RefusalCode::Malformed,
            format!("not a v1 command: {e}"),
        ))
    })?;
    if msg.v != SCHEMA_VERSION {
        return Err(with_id(Refusal::new(
            RefusalCode::InvalidField,
            format!("v: schema version {} is not {SCHEMA_VERSION}", msg.v),
        )));
    }
    // `sync` is for the whole agent: no SIM named.
    let whole_agent = msg.action == Action::Sync.word();
    if whole_agent && !msg.iccid.is_empty() {
        return Err(with_id(Refusal::new(
            RefusalCode::InvalidField,
            "iccid: a sync covers every SIM of the agent; leave iccid empty",
        )));
    }
    if !whole_agent && !valid_iccid(&msg.iccid) {
        return Err(with_id(Refusal::new(
            RefusalCode::InvalidField,
            "iccid: not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)",
        )));
    }
    let Some(action) = Action::from_word(&msg.action) else {
        let words: Vec<&str> = Action::ALL.iter().map(|a| a.word()).collect();
        return Err(with_id(Refusal::new(
            RefusalCode::UnknownAction,
            format!("action: not one of {}", words.join(", ")),
        )));
    };
    if msg.expires_at <= now {
        return Err(with_id(Refusal::new(
            RefusalCode::Expired,
            format!("expired at {} (now {now})", msg.expires_at),
        )));
    }
    if msg.expires_at > now.saturating_add(COMMAND_MEMORY_SECS) {
        return Err(with_id(Refusal::new(
            RefusalCode::InvalidField,
            format!(
                "expires_at: more than {} days ahead",
                COMMAND_MEMORY_SECS / 86_400
            ),
        )));
    }
    let params = parse_params(action, &msg.params).map_err(with_id)?;
    Ok(Command {
        id: msg.id,
        iccid: msg.iccid,
        action,
        params,
        expires_at: msg.expires_at,
    })
}

/// A command from a local surface (the station page's buttons), which names neither
/// the schema version nor an expiry: given this version, `expires_at` and empty params
/// when it has none, then checked exactly as the platform's ([`parse_command`]).
pub fn parse_local_command(
    mut body: serde_json::Value,
    now: u64,
    expires_at: u64,
) -> Result<Command, Refusal> {
    if let Some(obj) = body.as_object_mut() {
        obj.insert("v".into(), SCHEMA_VERSION.into());
        obj.insert("expires_at".into(), expires_at.into());
        obj.entry("params")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    parse_command(body.to_string().as_bytes(), now)
}

/// A platform record message on `sim/<iccid>/platform`: `{"v":1, ...record fields}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PlatformMsg {
    pub v: u32,
    #[serde(flatten)]
    pub record: PlatformRecord,
}

/// Parse and check a platform record. An empty payload (a cleared retained message)
/// means the platform has no record: `Ok(None)`.
pub fn parse_platform_record(payload: &[u8]) -> Result<Option<PlatformRecord>, Refusal> {
    if payload.is_empty() {
        return Ok(None);
    }
    if payload.len() > MAX_INBOUND_BYTES {
        return Err(Refusal::new(
            RefusalCode::TooLarge,
            format!(
                "platform record of {} bytes exceeds {MAX_INBOUND_BYTES}",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Refusal::new(RefusalCode::Malformed, format!("not JSON: {e}")))?;
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let malformed = |e| {
        Refusal::new(
            RefusalCode::Malformed,
            format!("not a v1 platform record: {e}"),
        )
    };
    let version: Version = typed(value.clone(), "").map_err(malformed)?;
    if version.v != SCHEMA_VERSION {
        return Err(Refusal::new(
            RefusalCode::InvalidField,
            format!("v: schema version {} is not {SCHEMA_VERSION}", version.v),
        ));
    }
    // The record's own fields beside `v` (PlatformMsg's flattened shape); unknown
    // fields are ignored, as a newer platform may send more. A field that does not
    // read as its type (an unknown status word, a string for a number) fails the
    // field's rule: `invalid_field` naming it, as the same record in a `set_record`.
    let record: PlatformRecord = typed(value, "").map_err(|e| {
        Refusal::new(
            RefusalCode::InvalidField,
            format!("not a platform record: {e}"),
        )
    })?;
    check_record(&record)?;
    Ok(Some(record))
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

/// Bounds on a platform record's fields: what a SIMs page row can hold.
fn check_record(r: &PlatformRecord) -> Result<(), Refusal> {
    let bad = |field: &str, why: &str| {
        Err(Refusal::new(
            RefusalCode::InvalidField,
            format!("{field}: {why}"),
        ))
    };
    for (field, value, max) in [
        ("plan", &r.plan, 128),
        ("company", &r.company, 128),
        ("end_user", &r.end_user, 128),
        ("note", &r.note, 1024),
    ] {
        if let Some(v) = value {
            if v.chars().count() > max {
                return bad(field, &format!("longer than {max} characters"));
            }
            if v.chars().any(char::is_control) {
                return bad(field, "contains control characters");
            }
        }
    }
    if let Some(d) = r.data_left_mb {
        if !d.is_finite() || d < 0.0 {
            return bad("data_left_mb", "not a non-negative number");
        }
    }
    if r.operator_balance_hours.is_some_and(|h| h > 24 * 31) {
        return bad("operator_balance_hours", "more than a month (744 hours)");
    }
    if r.labels.len() > 32 {
        return bad("labels", "more than 32 labels");
    }
    if r.labels
        .iter()
        .any(|l| l.is_empty() || l.chars().count() > 64 || l.chars().any(char::is_control))
    {
        return bad("labels", "each label must be 1-64 printable characters");
    }
    if r.rules.len() > 32 {
        return bad("rules", "more than 32 rules");
    }
    if let Some(code) = &r.activation_code {
        check_activation_code(code).map_err(|why| {
            Refusal::new(RefusalCode::InvalidField, format!("activation_code: {why}"))
        })?;
    }
    Ok(())
}

/// An activation code as GSMA SGP.22 §4.1 writes it (the one parser: rsp::activation).
pub fn check_activation_code(code: &str) -> Result<(), String> {
    crate::rsp::activation::ActivationCode::parse(code).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    fn cmd(json: serde_json::Value) -> Result<Command, Refusal> {
        parse_command(&serde_json::to_vec(&json).unwrap(), NOW)
    }

    #[test]
    fn every_contract_word_is_its_serde_name() {
        crate::sim::check_wire_words(Action::ALL, Action::word);
        crate::sim::check_wire_words(CommandStatusWord::ALL, CommandStatusWord::word);
        crate::sim::check_wire_words(RefusalCode::ALL, RefusalCode::word);
        crate::sim::check_wire_words(SwapStep::ALL, SwapStep::word);
    }

    #[test]
    fn every_topic_the_builder_spells_is_classified_back() {
        let t = Topics::new("gw-1");
        let iccid = "8988211000000430010";
        assert_eq!(t.outbound(&t.health()), Some(AgentTopic::Health));
        assert_eq!(t.outbound(&t.events()), Some(AgentTopic::Events));
        assert_eq!(t.outbound(&t.usage()), Some(AgentTopic::Usage));
        assert_eq!(t.outbound(&t.commands()), Some(AgentTopic::Command));
        assert_eq!(
            t.outbound(&t.sim_state(iccid)),
            Some(AgentTopic::SimState {
                iccid: iccid.into()
            })
        );
        assert_eq!(
            t.outbound(&t.sim_platform(iccid)),
            Some(AgentTopic::SimPlatform {
                iccid: iccid.into()
            })
        );
        assert_eq!(
            t.outbound(&t.command_status("c-1")),
            Some(AgentTopic::CommandStatus { id: "c-1".into() })
        );
        // Another agent's topics, and topics the contract does not define, are not ours.
        assert_eq!(t.outbound(&Topics::new("gw-2").health()), None);
        assert_eq!(t.outbound("simgate/v1/gw-1/sim/x/other"), None);
        assert_eq!(t.outbound("simgate/v1/gw-10/health"), None);
    }

    #[test]
    fn a_well_formed_command_parses() {
        let c = cmd(
            serde_json::json!({"v":1,"id":"c-1","iccid":"8988211000000430010",
            "action":"suspend","expires_at": NOW + 60}),
        )
        .unwrap();
        assert_eq!(c.action, Action::Suspend);
        assert_eq!(c.id, "c-1");
    }

    #[test]
    fn a_sync_names_no_sim_and_a_sim_command_must() {
        let c = cmd(serde_json::json!({"v":1,"id":"s-1","action":"sync","expires_at": NOW + 60}))
            .unwrap();
        assert_eq!((c.action, c.iccid.as_str()), (Action::Sync, ""));
        let r = cmd(
            serde_json::json!({"v":1,"id":"s-2","iccid":"8988211000000430010",
            "action":"sync","expires_at": NOW + 60}),
        )
        .unwrap_err();
        assert_eq!(r.code, RefusalCode::InvalidField);
        assert!(r.reason.starts_with("iccid: a sync covers"), "{}", r.reason);
        let r =
            cmd(serde_json::json!({"v":1,"id":"s-3","action":"suspend","expires_at": NOW + 60}))
                .unwrap_err();
        assert!(r.reason.starts_with("iccid: not an ICCID"), "{}", r.reason);
    }

    #[test]
    fn refusals_carry_a_code_and_the_id_when_readable() {
        let base = serde_json::json!({"v":1,"id":"c-2","iccid":"8988211000000430010",
            "action":"suspend","expires_at": NOW + 60});
        let with = |k: &str, v: serde_json::Value| {
            let mut j = base.clone();
            j[k] = v;
            cmd(j).unwrap_err()
        };
        let r = with("expires_at", NOW.into());
        assert_eq!(
            (r.code, r.id.as_deref()),
            (RefusalCode::Expired, Some("c-2"))
        );
        assert_eq!(
            with("action", "dance".into()).code,
            RefusalCode::UnknownAction
        );
        assert_eq!(
            with("iccid", "8988211000000430x10".into()).code,
            RefusalCode::InvalidField
        );
        assert_eq!(with("iccid", "1/#".into()).code, RefusalCode::InvalidField);
        assert_eq!(
            with("iccid", "89882110000004300F".into()).code,
            RefusalCode::InvalidField
        );
        // As published: a hex-digit test ICCID, a Blank eSIM's EID.
        for key in ["898821100000043001A", "89049032123451234512345678901235"] {
            let mut j = base.clone();
            j["iccid"] = key.into();
            assert!(cmd(j).is_ok(), "{key}");
        }
        assert_eq!(with("v", 2.into()).code, RefusalCode::InvalidField);
        assert_eq!(
            with("expires_at", (NOW + COMMAND_MEMORY_SECS + 1).into()).code,
            RefusalCode::InvalidField
        );
        assert_eq!(
            with("expires_at", "soon".into()).code,
            RefusalCode::Malformed
        );
        let r = with("id", "a/b".into());
        assert_eq!((r.code, r.id), (RefusalCode::InvalidField, None));
        assert_eq!(
            parse_command(b"\xff\x00garbage", NOW).unwrap_err().code,
            RefusalCode::Malformed
        );
        let big = vec![b' '; MAX_INBOUND_BYTES + 1];
        assert_eq!(
            parse_command(&big, NOW).unwrap_err().code,
            RefusalCode::TooLarge
        );
    }

    #[test]
    fn set_record_params_are_checked_as_a_platform_record() {
        let ok = cmd(
            serde_json::json!({"v":1,"id":"c-3","iccid":"8988211000000430010",
            "action":"set_record","expires_at": NOW + 60,
            "params": {"status":"Active","plan":"IoT 1GB","labels":["fleet-a"]}}),
        )
        .unwrap();
        let Params::Record(rec) = ok.params else {
            panic!("not a record: {:?}", ok.params);
        };
        assert_eq!(rec.plan.as_deref(), Some("IoT 1GB"));
        let bad = cmd(
            serde_json::json!({"v":1,"id":"c-4","iccid":"8988211000000430010",
            "action":"set_record","expires_at": NOW + 60,
            "params": {"status":"Sleepy"}}),
        )
        .unwrap_err();
        assert_eq!(bad.code, RefusalCode::InvalidField);
    }

    #[test]
    fn platform_records_parse_and_bad_ones_are_refused() {
        let rec = parse_platform_record(
            br#"{"v":1,"status":"Suspended","sim_type":"PAYGO","data_left_mb":12.5,"days_left":3,"future_field":1}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(rec.status, Some(Status::Suspended));
        assert_eq!(parse_platform_record(b"").unwrap(), None);
        assert_eq!(
            parse_platform_record(br#"{"v":1,"data_left_mb":-1}"#)
                .unwrap_err()
                .code,
            RefusalCode::InvalidField
        );
        assert_eq!(
            parse_platform_record(br#"{"v":1,"note":"a\u0007b"}"#)
                .unwrap_err()
                .code,
            RefusalCode::InvalidField
        );
    }

    #[test]
    fn a_record_with_an_unknown_status_word_is_refused_invalid_field_naming_it() {
        let r = parse_platform_record(br#"{"v":1,"status":"Sleepy"}"#).unwrap_err();
        assert_eq!(r.code, RefusalCode::InvalidField);
        assert!(r.reason.contains("status: unknown variant"), "{}", r.reason);
        // Not JSON, or no readable version, stays malformed.
        assert_eq!(
            parse_platform_record(b"{").unwrap_err().code,
            RefusalCode::Malformed
        );
        assert_eq!(
            parse_platform_record(br#"{"status":"Active"}"#)
                .unwrap_err()
                .code,
            RefusalCode::Malformed
        );
    }

    #[test]
    fn inbound_topics_are_classified_and_foreign_ones_ignored() {
        let t = Topics::new("gw-1");
        assert_eq!(t.inbound("simgate/v1/gw-1/cmd"), Some(Inbound::Command));
        assert_eq!(
            t.inbound("simgate/v1/gw-1/sim/8988211000000430010/platform"),
            Some(Inbound::PlatformRecord {
                iccid: "8988211000000430010".into()
            })
        );
        assert_eq!(t.inbound("simgate/v1/gw-10/cmd"), None);
        assert_eq!(t.inbound("simgate/v1/gw-1/health"), None);
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

    #[test]
    fn download_params_are_checked_by_field_and_never_quote_a_code() {
        use serde_json::json;
        let ok = parse_download_params(
            &json!({"activation_code": "LPA:1$smdp.example$K2-SECRET", "enable": true}),
            false,
        )
        .unwrap();
        assert_eq!(ok.activation.smdp, "smdp.example");
        assert!(ok.enable && ok.rollback_on_failure && ok.nickname.is_none());
        assert!(!format!("{ok:?}").contains("K2-SECRET"), "{ok:?}");
        let bad = |p: serde_json::Value, swap| parse_download_params(&p, swap).unwrap_err().reason;
        assert!(bad(json!({}), false).starts_with("params.activation_code: missing"));
        assert!(bad(json!({"activation_code": "K2-SECRET"}), false)
            .starts_with("params.activation_code: must start with LPA:1$"));
        let cc = bad(
            json!({"activation_code": "LPA:1$smdp.example$K2-SECRET$$1"}),
            false,
        );
        assert!(cc.starts_with("params.confirmation_code: missing"), "{cc}");
        assert!(!cc.contains("K2-SECRET"));
        assert!(bad(
            json!({"activation_code": "LPA:1$a.example$X", "enable": "yes"}),
            false
        )
        .starts_with("params.enable: not true or false"));
        assert!(bad(
            json!({"activation_code": "LPA:1$a.example$X", "nickname": "n".repeat(65)}),
            false
        )
        .starts_with("params.nickname"));
        assert!(bad(
            json!({"activation_code": "LPA:1$a.example$X", "pin": "1"}),
            false
        )
        .starts_with("params.pin: unknown field"));
        // A swap's download enables and rolls back, and takes nothing else.
        let s = parse_download_params(&json!({"download": "LPA:1$a.example$X"}), true).unwrap();
        assert!(s.enable && s.rollback_on_failure);
        assert!(bad(
            json!({"download": "LPA:1$a.example$X", "enable": false}),
            true
        )
        .starts_with("params.enable: unknown field"));
    }

    #[test]
    fn a_swap_names_one_target_of_four_and_a_profile_by_its_iccid() {
        use serde_json::json;
        assert_eq!(
            parse_swap_params(&json!({"to_profile": "8900101000000000019"})).unwrap(),
            SwapTarget::ToProfile("8900101000000000019".into())
        );
        let bad = |p: serde_json::Value| parse_swap_params(&p).unwrap_err().reason;
        assert!(bad(json!({"to_profile": "89001"})).starts_with("params.to_profile"));
        assert!(
            bad(json!({"to_profile": "8900101000000000019", "to_slot": 2}))
                .starts_with("params: to_slot and to_profile together")
        );
        assert!(bad(json!({"to_slot": 2, "confirmation_code": "1"}))
            .starts_with("params.confirmation_code: only with download"));
        let cmd = |params: serde_json::Value| {
            json!({"v":1,"id":"s","iccid":"89883030000000000429","action":"swap",
                   "params":params,"expires_at":1_000u64})
            .to_string()
        };
        let c = parse_command(cmd(json!({"download": "LPA:1$a.example$X"})).as_bytes(), 1).unwrap();
        assert!(matches!(c.params, Params::Download(d) if d.enable));
        let r = parse_command(
            cmd(json!({"download": "LPA:1$a.example$X", "to_slot": 2})).as_bytes(),
            1,
        )
        .unwrap_err();
        assert!(
            r.reason
                .starts_with("params: to_slot and download together"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn esim_params_are_checked_per_action() {
        use serde_json::json;
        let ok = parse_esim_params(
            Action::EsimEnable,
            &json!({"profile":"8949440000000000024"}),
        );
        assert_eq!(ok.unwrap().unwrap().profile, "8949440000000000024");
        assert_eq!(
            parse_esim_params(Action::EsimList, &serde_json::Value::Null),
            Ok(None)
        );
        let bad = |a, p| parse_esim_params(a, &p).unwrap_err().reason;
        assert!(bad(Action::EsimDelete, json!({})).starts_with("params.profile: missing"));
        assert!(bad(Action::EsimDelete, json!({"profile":"12"})).contains("not a profile's ICCID"));
        // An EID is a SIM key, not a profile.
        assert!(bad(
            Action::EsimEnable,
            json!({"profile":"89049032123451234512345678901235"})
        )
        .contains("not a profile's ICCID"));
        assert!(bad(
            Action::EsimEnable,
            json!({"profile":"8949440000000000024","x":1})
        )
        .starts_with("params.x: unknown field"));
        let long = "n".repeat(65);
        assert!(bad(
            Action::EsimNickname,
            json!({"profile":"8949440000000000024","nickname":long})
        )
        .contains("at most 64"));
        assert!(bad(
            Action::EsimNickname,
            json!({"profile":"8949440000000000024"})
        )
        .contains("params.nickname: missing"));
        let ack = parse_esim_params(Action::EsimNotificationAck, &json!({"seq": 7}));
        assert_eq!(ack.unwrap().unwrap().seq, Some(7));
        assert!(bad(Action::EsimNotificationAck, json!({"seq": -1})).starts_with("params.seq"));
        assert!(bad(Action::EsimNotificationAck, json!({"profile": "x"}))
            .starts_with("params.profile: unknown"));
    }

    #[test]
    fn an_activation_code_is_checked_as_sgp22_writes_it_and_a_bad_one_refuses_the_record() {
        for ok in [
            "LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815",
            "LPA:1$smdp.example.com$",
            "LPA:1$rsp.example.net:8443$ABC$1.3.6.1.4.1.31746$1",
        ] {
            check_activation_code(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("smdp.example.com$ABC", "LPA:1$"),
            ("LPA:1$smdp.example.com", "matching ID"),
            ("LPA:1$$ABC", "not a host name"),
            ("LPA:1$smdp.example.com$AB C", "letters, digits"),
        ] {
            let e = check_activation_code(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let r = parse_platform_record(br#"{"v":1,"activation_code":"http://x"}"#).unwrap_err();
        assert_eq!(r.code, RefusalCode::InvalidField);
        assert!(r.reason.starts_with("activation_code: "), "{}", r.reason);
        let ok = parse_platform_record(
            br#"{"v":1,"activation_code":"LPA:1$smdp.example.com$04386-AGYFT"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            ok.activation_code.as_deref(),
            Some("LPA:1$smdp.example.com$04386-AGYFT")
        );
    }
}
