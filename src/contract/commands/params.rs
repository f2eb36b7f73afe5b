//! Each action's params, checked by the action's own parser: [`parse_params`] is the one
//! table from an action to its parser and the [`Params`] variant it gives.

use super::esim::{parse_download_params, parse_esim_params, parse_swap_params};
use super::esim::{DownloadRequest, EsimRequest, SwapTarget};
use super::{unknown_field, Action};
use crate::contract::records::check_record;
use crate::contract::{typed, valid_command_id, Refusal, RefusalCode};
use crate::sim::PlatformRecord;
use serde::{Deserialize, Serialize};

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

/// Check `params` for `action`: the one table from an action to its parser, with no
/// catch-all arm, so a new action cannot compile before it names its parser here.
pub fn parse_params(action: Action, params: &serde_json::Value) -> Result<Params, Refusal> {
    use crate::sim::PinOp;
    let pin = |op| -> Result<Params, Refusal> {
        Ok(Params::Pin(Box::new(parse_pin_params(op, params)?)))
    };
    Ok(match action {
        Action::Refresh | Action::Suspend | Action::Resume | Action::Rules | Action::Sync => {
            Params::None
        }
        Action::SetRecord => Params::Record(parse_record_params(params)?),
        Action::Refill => Params::Refill(parse_refill_params(params)?),
        Action::RequestRefill => parse_request_refill_params(params)?,
        Action::Swap => parse_swap_or_download_params(params)?,
        Action::EsimList
        | Action::EsimEnable
        | Action::EsimDisable
        | Action::EsimDelete
        | Action::EsimNickname
        | Action::EsimNotificationAck => match parse_esim_params(action, params)? {
            Some(req) => Params::Esim(req),
            None => Params::None,
        },
        Action::EsimDownload => Params::Download(Box::new(parse_download_params(params, false)?)),
        Action::PinVerify => pin(PinOp::Verify)?,
        Action::PinEnable => pin(PinOp::Enable)?,
        Action::PinDisable => pin(PinOp::Disable)?,
        Action::PinChange => pin(PinOp::Change)?,
        Action::PinUnblock => pin(PinOp::Unblock)?,
        Action::Ussd | Action::SmsSend => parse_messaging_params(action, params)?,
    })
}

/// Check a `set_record` command's params: a platform record, bounded as one received
/// on its topic.
fn parse_record_params(params: &serde_json::Value) -> Result<PlatformRecord, Refusal> {
    let rec: PlatformRecord = typed(params.clone(), "params.").map_err(|e| {
        Refusal::new(
            RefusalCode::InvalidField,
            format!("not a platform record: {e}"),
        )
    })?;
    check_record(&rec)?;
    Ok(rec)
}

/// Check a `refill` command's params: what to apply ([`Refill`]).
fn parse_refill_params(params: &serde_json::Value) -> Result<Refill, Refusal> {
    let r: Refill = typed(params.clone(), "params.")
        .map_err(|e| Refusal::new(RefusalCode::InvalidField, format!("not a refill: {e}")))?;
    check_refill(&r)?;
    Ok(r)
}

/// Check a `swap` command's params: a target, or with `download` a profile to download
/// first — the same checks as any swap's params (one target, known fields), then the
/// download's.
fn parse_swap_or_download_params(params: &serde_json::Value) -> Result<Params, Refusal> {
    if params.get("download").is_none() {
        return Ok(Params::Swap(parse_swap_params(params)?));
    }
    if let Err(r) = parse_swap_params(params) {
        if !r.reason.starts_with("params.download") {
            return Err(r);
        }
    }
    Ok(Params::Download(Box::new(parse_download_params(
        params, true,
    )?)))
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
        return Err(unknown_field(action, k, known));
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
    const KNOWN: &[&str] = &["amount_mb"];
    if let Some(k) = params
        .as_object()
        .and_then(|o| o.keys().find(|k| !KNOWN.contains(&k.as_str())))
    {
        return Err(unknown_field(Action::RequestRefill, k, KNOWN));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::commands::tests::{cmd, NOW};

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
    fn an_unknown_param_is_refused_naming_what_the_action_takes() {
        use serde_json::json;
        for (action, params, takes) in [
            (
                Action::RequestRefill,
                json!({"x": 1}),
                "request_refill takes amount_mb",
            ),
            (
                Action::Ussd,
                json!({"code": "*100#", "x": 1}),
                "ussd takes code, answers",
            ),
            (Action::SmsSend, json!({"x": 1}), "sms_send takes to, text"),
            (Action::EsimList, json!({"x": 1}), "esim_list takes none"),
            (
                Action::EsimEnable,
                json!({"x": 1}),
                "esim_enable takes profile",
            ),
        ] {
            let r = parse_params(action, &params).unwrap_err();
            assert_eq!(r.code, RefusalCode::InvalidField);
            assert_eq!(r.reason, format!("params.x: unknown field ({takes})"));
        }
        assert_eq!(
            parse_params(Action::RequestRefill, &json!({"amount_mb": 500})),
            Ok(Params::RequestRefill {
                amount_mb: Some(500.0)
            })
        );
        let r = parse_params(Action::RequestRefill, &json!({"amount_mb": -1})).unwrap_err();
        assert!(r.reason.starts_with("params.amount_mb:"), "{}", r.reason);
    }
}
