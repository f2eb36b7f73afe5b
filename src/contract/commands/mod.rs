//! A platform command (`cmd`, MQTT.md "Commands"): its envelope checked field by field
//! (id first, so even a bad command gets its answer), then its params by the action's
//! own parser (`params`).

pub(super) mod esim;
pub(super) mod params;

use super::{
    typed, valid_command_id, valid_iccid, Refusal, RefusalCode, COMMAND_MEMORY_SECS,
    MAX_INBOUND_BYTES, SCHEMA_VERSION,
};
use params::{parse_params, Params};
use serde::{Deserialize, Serialize};

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

/// A refusal for a field `action` does not take, naming those it does.
fn unknown_field(action: Action, key: &str, known: &[&str]) -> Refusal {
    Refusal::new(
        RefusalCode::InvalidField,
        format!(
            "params.{key}: unknown field ({action} takes {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const NOW: u64 = 1_790_000_000;

    #[test]
    fn every_action_is_its_serde_name() {
        crate::sim::check_wire_words(Action::ALL, Action::word);
    }

    pub(super) fn cmd(json: serde_json::Value) -> Result<Command, Refusal> {
        parse_command(&serde_json::to_vec(&json).unwrap(), NOW)
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
}
