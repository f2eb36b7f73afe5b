//! The params that name where a SIM or a profile comes from: an eUICC's profile
//! (`esim_*`), a profile to download (`esim_download`), a swap's target (`swap`).

use super::{unknown_field, Action};
use crate::contract::{valid_iccid, Refusal, RefusalCode};
use serde::{Deserialize, Serialize};

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
        return Err(unknown_field(action, k, allowed));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{parse_command, Params};

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
}
