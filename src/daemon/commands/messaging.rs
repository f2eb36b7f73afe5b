//! `ussd` and `sms_send` (MQTT.md, "USSD and SMS"): planned for a SIM in a modem only,
//! executed once through the modem's supervisor; a successful one's result (the USSD
//! replies, the SMS parts' references) kept with the command's id, so its status and
//! any repeat carry it.

use super::super::work::{self, ModemPorts};
use super::execute::Step;
use super::plan::{Host, Plan};
use crate::contract::{Command, CommandResult, Params, RefusalCode};
use crate::daemon::Ctx;
use crate::modem::ussd::{Ended, UssdFailure};

/// What to do on the modem.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    Ussd { code: String, answers: Vec<String> },
    Sms { to: String, text: String },
}

/// The plan of a `ussd` or `sms_send`: a modem's SIM only (a card in a reader has no
/// network).
pub(super) fn plan(cmd: &Command, host: &Host) -> Plan {
    let Host::Modem { port, .. } = host else {
        return Plan::Refuse((
            RefusalCode::NotApplicable,
            format!(
                "{}: the SIM is a card in a PC/SC reader: no network to reach",
                cmd.action
            ),
        ));
    };
    let message = match &cmd.params {
        Params::Ussd { code, answers } => Message::Ussd {
            code: code.clone(),
            answers: answers.clone(),
        },
        Params::Sms { to, text } => Message::Sms {
            to: to.clone(),
            text: text.clone(),
        },
        _ => {
            return Plan::Refuse((
                RefusalCode::InvalidField,
                "params: missing code or to/text".into(),
            ))
        }
    };
    Plan::ModemMessage {
        port: port.clone(),
        message,
    }
}

/// Run it on the supervisor's task; the result stored before the outcome.
pub(super) fn execute(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    message: Message,
) -> Step {
    let Some(handle) = modems.handle(port) else {
        return Step::Finished(Err(work::no_engine(port)));
    };
    let (store, id, iccid) = (ctx.store.clone(), cmd.id.clone(), cmd.iccid.clone());
    work::spawn(&ctx.events, cmd.id.clone(), async move {
        let result = match message {
            Message::Ussd { code, answers } => {
                match handle.ussd(&iccid, code.clone(), answers).await {
                    Ok(Ok(ex)) => CommandResult {
                        replies: Some(ex.replies),
                        ended: Some(
                            match ex.ended {
                                Ended::Done => "done",
                                Ended::Cancelled => "cancelled",
                                Ended::ByNetwork => "network",
                            }
                            .into(),
                        ),
                        ..CommandResult::default()
                    },
                    Ok(Err(f)) => {
                        let code = match f {
                            UssdFailure::Unsupported => RefusalCode::Unsupported,
                            UssdFailure::NoReply(_) | UssdFailure::NetworkTimeout => {
                                RefusalCode::Unavailable
                            }
                            _ => RefusalCode::Failed,
                        };
                        return Err((code, f.to_string()));
                    }
                    Err(e) => return Err((RefusalCode::Unavailable, e.to_string())),
                }
            }
            Message::Sms { to, text } => match handle.sms_send(&iccid, to, text).await {
                Ok(Ok(sent)) => CommandResult {
                    references: Some(sent.references),
                    ..CommandResult::default()
                },
                Ok(Err(f)) => return Err((RefusalCode::Failed, f.to_string())),
                Err(e) => return Err((RefusalCode::Unavailable, e.to_string())),
            },
        };
        store.set_command_result(&id, &result).map_err(|e| {
            (
                RefusalCode::Failed,
                format!("done, but its result could not be stored: {e}"),
            )
        })?;
        Ok(None)
    });
    Step::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{parse_messaging_params, Action};
    use serde_json::json;

    fn cmd(action: Action, params: Params) -> Command {
        Command {
            id: "c-1".into(),
            iccid: "8901260886258128535".into(),
            action,
            params,
            expires_at: 0,
        }
    }

    #[test]
    fn params_are_checked_by_field() {
        let ok = parse_messaging_params(Action::Ussd, &json!({"code": "*100#", "answers": ["1"]}));
        assert!(matches!(ok, Ok(Params::Ussd { .. })));
        for (action, params, field) in [
            (Action::Ussd, json!({}), "params.code"),
            (Action::Ussd, json!({"code": "AT+CFUN=0"}), "params.code"),
            (
                Action::Ussd,
                json!({"code": "*100#", "answers": ["1\""]}),
                "params.answers[0]",
            ),
            (Action::Ussd, json!({"code": "*100#", "x": 1}), "params.x"),
            (
                Action::SmsSend,
                json!({"to": "+31;6", "text": "hi"}),
                "params.to",
            ),
            (Action::SmsSend, json!({"to": "+316"}), "params.text"),
            (
                Action::SmsSend,
                json!({"to": "+316", "text": ""}),
                "params.text",
            ),
        ] {
            let e = parse_messaging_params(action, &params).unwrap_err();
            assert!(e.reason.starts_with(field), "{params}: {}", e.reason);
        }
    }

    #[test]
    fn a_card_in_a_reader_has_no_network() {
        let ussd = cmd(
            Action::Ussd,
            Params::Ussd {
                code: "*100#".into(),
                answers: vec![],
            },
        );
        let reader = Host::Reader { reader: "R".into() };
        assert!(matches!(
            plan(&ussd, &reader),
            Plan::Refuse((RefusalCode::NotApplicable, _))
        ));
        let modem = Host::Modem {
            port: "/dev/ttyUSB2".into(),
            slot: None,
        };
        assert!(matches!(plan(&ussd, &modem), Plan::ModemMessage { .. }));
    }
}
