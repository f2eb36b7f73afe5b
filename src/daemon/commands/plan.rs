//! Deciding a command, apart from doing it: the action, its checked params and the
//! facts the claim gathered (where the SIM sits, whether it is an eSIM, whether its
//! modem port is ModemManager's) give one [`Plan`]. Pure: every refusal a command can
//! meet before its effect is decided here, and unit-tested here.

use super::super::work::{shared_refusal, Failure};
use crate::card::esim;
use crate::contract::{Action, Command, DownloadRequest, Params, Refill, RefusalCode, SwapTarget};
use crate::modem::actions::Action as ModemAction;
use crate::sim::{Location, Observed, PinRequest, PlatformRecord};

/// Where a SIM lives, which decides how an action reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Reader { reader: String },
    Modem { port: String, slot: Option<u8> },
}

impl Host {
    pub(crate) fn of(obs: &Observed) -> Host {
        match &obs.location {
            Location::Reader { reader } => Host::Reader {
                reader: reader.clone(),
            },
            Location::Modem { port, slot } => Host::Modem {
                port: port.clone(),
                slot: *slot,
            },
        }
    }
}

/// What a plan is decided on besides the command, gathered from the store and the
/// modem ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Where the SIM sits now; `None`: this agent does not host it (absent, unknown).
    pub(crate) host: Option<Host>,
    /// The SIM is an eSIM (an eUICC's enabled profile): it has profiles.
    pub(crate) esim: bool,
    /// Its modem port is a spare port of a modem ModemManager keeps.
    pub(crate) shared_with_modemmanager: bool,
}

/// What executing a command means: one variant per executor (src/daemon/commands/
/// execute.rs), or the refusal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Queue every row again, then the count (MQTT.md, "Sync").
    Sync,
    /// Cache a new platform record.
    SetRecord(PlatformRecord),
    /// Apply a refill to the cached balance (once per request id), lifting a rule's
    /// suspension on the SIM's modem `port` (none for a card in a reader).
    Refill {
        refill: Refill,
        port: Option<String>,
    },
    /// Evaluate the SIM's rules now.
    EvaluateRules,
    /// Ask the platform for a top-up, for a person (`simgate refill`).
    RequestRefill { amount_mb: Option<f64> },
    /// Re-read the card in a reader.
    ReadCard { reader: String },
    /// A hardware action by the modem engine's supervisor of `port`, verified (read
    /// back) before it answers.
    ModemAct { port: String, action: ModemAction },
    /// Read the SIM in the modem of `port` again now.
    ModemReread { port: String },
    /// An eSIM operation on the eUICC in `reader` (card::esim), then a re-read of the
    /// card with its profile list.
    Esim { reader: String, work: esim::Work },
    /// An eSIM operation on the eUICC in the modem of `port`, through its supervisor
    /// (+CCHO/+CGLA), the new profile verified registered after a switch.
    ModemEsim { port: String, work: esim::Work },
    /// A profile download onto the eUICC in the modem of `port`
    /// (src/daemon/esim_download.rs), then with `enable` a swap to the new profile.
    EsimDownload {
        port: String,
        req: Box<DownloadRequest>,
    },
    /// A guided SIM swap on the modem of `port` (src/daemon/swap.rs).
    Swap { port: String, target: SwapTarget },
    /// A PIN operation on the card in `reader` (src/card/pin.rs `on_card`), the card
    /// read again after.
    ReaderPin { reader: String, req: PinRequest },
    /// A PIN operation on the SIM in the modem of `port`, through its supervisor.
    ModemPin { port: String, req: PinRequest },
    /// A USSD exchange, or an SMS sent, through the supervisor of `port`
    /// (src/daemon/commands/messaging.rs).
    ModemMessage {
        port: String,
        message: super::messaging::Message,
    },
    /// Not done: why (the command fails with it before any effect).
    Refuse(Failure),
}

fn refuse(code: RefusalCode, reason: impl Into<String>) -> Plan {
    Plan::Refuse((code, reason.into()))
}

/// Params that do not fit the action: only a command built by hand (the contract's
/// parser gives every action its own), refused by name all the same.
fn missing(what: &str) -> Plan {
    refuse(RefusalCode::InvalidField, format!("params: missing {what}"))
}

/// Decide what `cmd` means given `facts`.
pub(crate) fn plan(cmd: &Command, facts: &Facts) -> Plan {
    // `sync` covers the whole agent: no SIM to host.
    if cmd.action == Action::Sync {
        return Plan::Sync;
    }
    // Only SIMs this agent hosts now: a command for anything else is refused.
    let Some(host) = &facts.host else {
        return refuse(
            RefusalCode::NotHosted,
            format!("SIM {} is not hosted by this agent", cmd.iccid),
        );
    };
    // A download and a profile switch need an eUICC as much as the esim_* actions.
    let needs_profiles = cmd.action.is_esim()
        || matches!(
            cmd.params,
            Params::Download(_) | Params::Swap(SwapTarget::ToProfile(_))
        );
    if needs_profiles && !facts.esim {
        return refuse(
            RefusalCode::NotApplicable,
            format!("SIM {} is not an eSIM: it has no profiles", cmd.iccid),
        );
    }
    match cmd.action {
        Action::Sync => Plan::Sync,
        Action::SetRecord => match &cmd.params {
            Params::Record(r) => Plan::SetRecord(r.clone()),
            _ => missing("platform record"),
        },
        Action::Refill => match &cmd.params {
            Params::Refill(r) => Plan::Refill {
                refill: r.clone(),
                port: match host {
                    Host::Modem { port, .. } => Some(port.clone()),
                    Host::Reader { .. } => None,
                },
            },
            _ => missing("refill"),
        },
        Action::Rules => Plan::EvaluateRules,
        Action::RequestRefill => Plan::RequestRefill {
            amount_mb: match &cmd.params {
                Params::RequestRefill { amount_mb } => *amount_mb,
                _ => None,
            },
        },
        Action::Refresh => match host {
            Host::Reader { reader } => Plan::ReadCard {
                reader: reader.clone(),
            },
            Host::Modem { port, .. } => Plan::ModemReread { port: port.clone() },
        },
        Action::Suspend | Action::Resume => session(cmd.action, host, facts),
        Action::Swap | Action::EsimDownload if matches!(cmd.params, Params::Download(_)) => {
            download(cmd, host)
        }
        Action::EsimDownload => missing("activation_code"),
        Action::Swap => swap(cmd, host),
        Action::EsimList
        | Action::EsimEnable
        | Action::EsimDisable
        | Action::EsimDelete
        | Action::EsimNickname
        | Action::EsimNotificationAck => match esim_work(cmd) {
            Err(why) => refuse(RefusalCode::InvalidField, why),
            Ok(work) => match host {
                Host::Reader { reader } => Plan::Esim {
                    reader: reader.clone(),
                    work,
                },
                Host::Modem { port, .. } => Plan::ModemEsim {
                    port: port.clone(),
                    work,
                },
            },
        },
        Action::PinVerify
        | Action::PinEnable
        | Action::PinDisable
        | Action::PinChange
        | Action::PinUnblock => match (&cmd.params, host) {
            (Params::Pin(req), Host::Reader { reader }) => Plan::ReaderPin {
                reader: reader.clone(),
                req: (**req).clone(),
            },
            (Params::Pin(req), Host::Modem { port, .. }) => Plan::ModemPin {
                port: port.clone(),
                req: (**req).clone(),
            },
            _ => missing("PIN"),
        },
        Action::Ussd | Action::SmsSend => super::messaging::plan(cmd, host),
    }
}

/// Suspend or resume: a modem's data session, simgate's to move unless ModemManager
/// keeps that modem.
fn session(action: Action, host: &Host, facts: &Facts) -> Plan {
    let Host::Modem { port, .. } = host else {
        return refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: it has no data session to suspend or resume",
        );
    };
    if facts.shared_with_modemmanager {
        return Plan::Refuse(shared_refusal(port));
    }
    let action = match action {
        Action::Suspend => ModemAction::SuspendData,
        _ => ModemAction::ResumeData,
    };
    Plan::ModemAct {
        port: port.clone(),
        action,
    }
}

/// `esim_download`, or a swap with `download` (src/daemon/esim_download.rs): through a
/// modem's supervisor; in a reader, `simgate esim download` is the way.
fn download(cmd: &Command, host: &Host) -> Plan {
    match (&cmd.params, host) {
        (_, Host::Reader { .. }) => refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: a platform download is for a modem's eUICC (in a reader: simgate esim download)",
        ),
        (Params::Download(req), Host::Modem { port, .. }) => Plan::EsimDownload {
            port: port.clone(),
            req: req.clone(),
        },
        _ => missing("activation_code"),
    }
}

/// A guided SIM swap (src/daemon/swap.rs): for a SIM in a modem only.
fn swap(cmd: &Command, host: &Host) -> Plan {
    let Host::Modem { port, slot } = host else {
        return refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: a guided swap is for a SIM in a modem",
        );
    };
    match (&cmd.params, slot) {
        (Params::Swap(SwapTarget::ToSlot(_)), None) => refuse(
            RefusalCode::NotApplicable,
            format!("params.to_slot: the modem at {port} reports no SIM slots"),
        ),
        (Params::Swap(SwapTarget::ToSlot(n)), Some(s)) if n == s => refuse(
            RefusalCode::InvalidField,
            format!("params.to_slot: the SIM already sits in slot {n}"),
        ),
        (Params::Swap(SwapTarget::ToProfile(p)), _) if *p == cmd.iccid => refuse(
            RefusalCode::InvalidField,
            format!("params.to_profile: profile {p} is the one enabled"),
        ),
        (Params::Swap(target), _) => Plan::Swap {
            port: port.clone(),
            target: target.clone(),
        },
        _ => missing("swap target"),
    }
}

/// The card engine's operation for an `esim_*` command (its params validated by the
/// contract). In a reader there is no device to REFRESH: refreshFlag false, the card
/// reset after a switch instead.
fn esim_work(cmd: &Command) -> Result<esim::Work, String> {
    if cmd.action == Action::EsimList {
        return Ok(esim::Work::List);
    }
    let Params::Esim(req) = &cmd.params else {
        return Err("params.profile: missing".to_string());
    };
    if let (Action::EsimNotificationAck, Some(seq)) = (cmd.action, req.seq) {
        return Ok(esim::Work::Remove(seq));
    }
    let iccid = crate::card::Iccid::from_digits(&req.profile)
        .map_err(|e| format!("params.profile: {e}"))?;
    Ok(esim::Work::Apply(match cmd.action {
        Action::EsimEnable => esim::Action::Enable {
            iccid,
            refresh: false,
        },
        Action::EsimDisable => esim::Action::Disable {
            iccid,
            refresh: false,
        },
        Action::EsimDelete => esim::Action::Delete { iccid },
        _ => esim::Action::Nickname {
            iccid,
            nickname: req.nickname.clone().unwrap_or_default(),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: Action) -> Command {
        Command {
            id: "c".into(),
            iccid: "8988211000000430010".into(),
            action,
            params: Params::None,
            expires_at: u64::MAX,
        }
    }

    fn at(host: Host) -> Facts {
        Facts {
            host: Some(host),
            esim: false,
            shared_with_modemmanager: false,
        }
    }

    fn reader() -> Facts {
        at(Host::Reader { reader: "R".into() })
    }

    fn modem(slot: Option<u8>) -> Facts {
        at(Host::Modem {
            port: "/dev/ttyUSB2".into(),
            slot,
        })
    }

    fn refusal(p: Plan) -> String {
        match p {
            Plan::Refuse((code, reason)) => format!("{code:?} {reason}"),
            p => panic!("not refused: {p:?}"),
        }
    }

    #[test]
    fn suspend_is_refused_for_a_reader_card_and_goes_to_the_modem_otherwise() {
        assert!(refusal(plan(&cmd(Action::Suspend), &reader())).starts_with("NotApplicable"));
        assert_eq!(
            plan(&cmd(Action::Resume), &modem(None)),
            Plan::ModemAct {
                port: "/dev/ttyUSB2".into(),
                action: ModemAction::ResumeData
            }
        );
        assert!(matches!(
            plan(&cmd(Action::Refresh), &modem(None)),
            Plan::ModemReread { .. }
        ));
        assert!(matches!(
            plan(&cmd(Action::Refresh), &reader()),
            Plan::ReadCard { .. }
        ));
    }

    #[test]
    fn suspend_and_resume_are_refused_on_a_port_modemmanager_keeps_and_refresh_is_not() {
        let shared = Facts {
            shared_with_modemmanager: true,
            ..modem(None)
        };
        for a in [Action::Suspend, Action::Resume] {
            let why = refusal(plan(&cmd(a), &shared));
            assert!(
                why.starts_with("NotApplicable /dev/ttyUSB2 is a spare port")
                    && why.contains("ModemManager"),
                "{why}"
            );
        }
        assert!(matches!(
            plan(&cmd(Action::Refresh), &shared),
            Plan::ModemReread { .. }
        ));
    }

    #[test]
    fn a_sim_not_hosted_is_refused_and_sync_needs_none() {
        let nowhere = Facts {
            host: None,
            esim: false,
            shared_with_modemmanager: false,
        };
        assert!(refusal(plan(&cmd(Action::Refresh), &nowhere))
            .starts_with("NotHosted SIM 8988211000000430010 is not hosted"));
        assert_eq!(plan(&cmd(Action::Sync), &nowhere), Plan::Sync);
    }

    #[test]
    fn refill_needs_its_params_and_rules_evaluate_wherever_the_sim_sits() {
        assert!(refusal(plan(&cmd(Action::Refill), &reader())).starts_with("InvalidField"));
        let refill = Refill {
            amount_mb: Some(1024.0),
            data_left_mb: None,
            days: None,
            request_id: None,
        };
        let r = Command {
            params: Params::Refill(refill.clone()),
            ..cmd(Action::Refill)
        };
        assert_eq!(
            plan(&r, &reader()),
            Plan::Refill {
                refill: refill.clone(),
                port: None
            }
        );
        assert_eq!(
            plan(&r, &modem(None)),
            Plan::Refill {
                refill,
                port: Some("/dev/ttyUSB2".into())
            }
        );
        assert_eq!(plan(&cmd(Action::Rules), &reader()), Plan::EvaluateRules);
        assert_eq!(
            plan(
                &Command {
                    params: Params::RequestRefill {
                        amount_mb: Some(5.0)
                    },
                    ..cmd(Action::RequestRefill)
                },
                &reader()
            ),
            Plan::RequestRefill {
                amount_mb: Some(5.0)
            }
        );
    }

    #[test]
    fn a_swap_goes_to_the_modem_and_is_refused_by_name_where_it_cannot_apply() {
        let swap = |t: SwapTarget| Command {
            params: Params::Swap(t),
            ..cmd(Action::Swap)
        };
        let to2 = SwapTarget::ToSlot(2);
        assert!(matches!(
            plan(&swap(to2.clone()), &modem(Some(1))),
            Plan::Swap {
                target: SwapTarget::ToSlot(2),
                ..
            }
        ));
        assert!(refusal(plan(&swap(to2.clone()), &modem(Some(2))))
            .starts_with("InvalidField params.to_slot"));
        assert!(refusal(plan(&swap(to2.clone()), &modem(None)))
            .starts_with("NotApplicable params.to_slot"));
        assert!(refusal(plan(&swap(to2), &reader())).starts_with("NotApplicable"));
        assert!(refusal(plan(&cmd(Action::Swap), &modem(None))).starts_with("InvalidField"));
        assert!(matches!(
            plan(
                &swap(SwapTarget::ExpectIccid("89314404000000000019".into())),
                &modem(None)
            ),
            Plan::Swap { .. }
        ));
    }

    #[test]
    fn esim_actions_need_an_esim_and_a_valid_profile_and_go_where_the_card_is() {
        let enable = |profile: &str| Command {
            params: Params::Esim(crate::contract::EsimRequest {
                profile: profile.into(),
                nickname: None,
                seq: None,
            }),
            ..cmd(Action::EsimEnable)
        };
        // Not an eSIM: said so before the params are looked at.
        assert!(refusal(plan(&enable("x"), &reader())).starts_with("NotApplicable SIM"));
        let esim = |f: Facts| Facts { esim: true, ..f };
        assert!(
            refusal(plan(&enable("x"), &esim(reader()))).starts_with("InvalidField params.profile")
        );
        assert!(refusal(plan(&cmd(Action::EsimDelete), &esim(reader())))
            .starts_with("InvalidField params.profile: missing"));
        assert!(matches!(
            plan(&enable("89310410106543789301"), &esim(reader())),
            Plan::Esim {
                work: esim::Work::Apply(esim::Action::Enable { .. }),
                ..
            }
        ));
        assert!(matches!(
            plan(&cmd(Action::EsimList), &esim(modem(None))),
            Plan::ModemEsim {
                work: esim::Work::List,
                ..
            }
        ));
        let ack = Command {
            params: Params::Esim(crate::contract::EsimRequest {
                profile: String::new(),
                nickname: None,
                seq: Some(7),
            }),
            ..cmd(Action::EsimNotificationAck)
        };
        assert!(matches!(
            plan(&ack, &esim(reader())),
            Plan::Esim {
                work: esim::Work::Remove(7),
                ..
            }
        ));
    }

    #[test]
    fn a_download_needs_an_esim_in_a_modem_and_a_profile_switch_another_profile() {
        let req = crate::contract::parse_download_params(
            &serde_json::json!({"activation_code": "LPA:1$smdp.example$X", "enable": true}),
            false,
        )
        .unwrap();
        let download = Command {
            params: Params::Download(Box::new(req)),
            ..cmd(Action::EsimDownload)
        };
        let esim = |f: Facts| Facts { esim: true, ..f };
        assert!(refusal(plan(&download, &modem(None))).starts_with("NotApplicable SIM"));
        assert!(refusal(plan(&download, &esim(reader())))
            .starts_with("NotApplicable the SIM is a card in a PC/SC reader"));
        assert!(matches!(
            plan(&download, &esim(modem(None))),
            Plan::EsimDownload { req, .. } if req.enable
        ));
        assert!(
            refusal(plan(&cmd(Action::EsimDownload), &esim(modem(None))))
                .starts_with("InvalidField params: missing activation_code")
        );
        // A swap with `download` is the same download.
        let swap_dl = Command {
            action: Action::Swap,
            ..download.clone()
        };
        assert!(matches!(
            plan(&swap_dl, &esim(modem(None))),
            Plan::EsimDownload { .. }
        ));
        let to = |p: &str| Command {
            params: Params::Swap(SwapTarget::ToProfile(p.into())),
            ..cmd(Action::Swap)
        };
        assert!(refusal(plan(&to("8900101000000000019"), &modem(None)))
            .starts_with("NotApplicable SIM"));
        assert!(
            refusal(plan(&to("8988211000000430010"), &esim(modem(None)))).starts_with(
                "InvalidField params.to_profile: profile 8988211000000430010 is the one enabled"
            )
        );
        assert!(matches!(
            plan(&to("8900101000000000019"), &esim(modem(None))),
            Plan::Swap {
                target: SwapTarget::ToProfile(_),
                ..
            }
        ));
    }

    #[test]
    fn pin_actions_need_their_params_and_go_where_the_sim_is() {
        assert!(refusal(plan(&cmd(Action::PinVerify), &reader()))
            .starts_with("InvalidField params: missing PIN"));
        let req = crate::contract::parse_pin_params(
            crate::sim::PinOp::Verify,
            &serde_json::json!({"pin": "1234"}),
        )
        .expect("a valid PIN request");
        let verify = Command {
            params: Params::Pin(Box::new(req)),
            ..cmd(Action::PinVerify)
        };
        assert!(matches!(plan(&verify, &reader()), Plan::ReaderPin { .. }));
        assert!(matches!(plan(&verify, &modem(None)), Plan::ModemPin { .. }));
    }
}
