//! Platform commands and records, taking effect exactly once.
//!
//! A command's id is claimed in the store (flushed) before anything else happens and
//! before the MQTT delivery is acknowledged; its outcome is stored before it is
//! reported. A redelivered or repeated id is answered from its record, never executed
//! again. A command whose record says it started but never finished (simgate died
//! mid-way) is reported failed as interrupted: its effect is unknown, so it is not
//! retried behind the platform's back.

use super::{Ctx, DaemonError, Event};
use crate::card::esim;
use crate::contract::{
    Action, Command, CommandStatus, CommandStatusWord, EventKind, Refusal, RefusalCode, SwapTarget,
    SCHEMA_VERSION,
};
use crate::link::Received;
use crate::modem::actions::{Action as ModemAction, ModemRefusal};
use crate::modem::supervisor::ModemHandle;
use crate::reader;
use crate::sim::{Location, Observed, PlatformRecord};
use crate::store::commands::{Claim, CommandRecord, CommandState, MAX_COMMAND_IDS};
use std::collections::HashSet;

/// What a command's asynchronous work ends with: a fresh observation to record (a
/// re-read card), or nothing new; or why it failed.
pub(crate) type Done = Result<Option<Observed>, (RefusalCode, String)>;

/// Where modem actions go: the daemon's modem supervisors, by port. A trait so the
/// executor does not depend on how supervisors are kept (and tests can have none).
pub(crate) trait ModemPorts {
    fn handle(&self, port: &str) -> Option<ModemHandle>;
    /// The port is a spare AT port of a modem ModemManager keeps
    /// (`[modems] shared_with_modemmanager`): its data session is not simgate's to
    /// bring down or up.
    fn shared_with_modemmanager(&self, _port: &str) -> bool {
        false
    }
}

/// Where a SIM lives, which decides how an action reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    Reader { reader: String },
    Modem { port: String, slot: Option<u8> },
}

impl Host {
    fn of(obs: &Observed) -> Host {
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

/// What executing a command means, decided from the action and the host alone.
/// What a command asks of a modem's supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModemWork {
    /// A hardware action, which the supervisor verifies (reads the state back) before
    /// answering.
    Act(ModemAction),
    /// Read the SIM again now.
    Reread,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Re-read the card in a reader (on a blocking thread).
    ReadCard {
        reader: String,
    },
    /// Cache a new platform record.
    SetRecord(PlatformRecord),
    /// Apply a refill to the cached balance (once per request id), lifting a rule's
    /// suspension.
    Refill(crate::contract::Refill),
    /// Evaluate the SIM's rules now.
    EvaluateRules,
    /// Ask the platform for a top-up, for a person (`simgate refill`).
    RequestRefill {
        amount_mb: Option<f64>,
    },
    /// Work for the modem engine's supervisor of `port`.
    Modem {
        work: ModemWork,
        port: String,
    },
    /// An eSIM operation on the eUICC in `reader` (card::esim), then a re-read of the
    /// card; `None`: only the re-read, with the profile list (`esim_list`).
    Esim {
        reader: String,
        work: esim::Work,
    },
    /// An eSIM operation on the eUICC in the modem of `port`, through its supervisor
    /// (+CCHO/+CGLA), the new profile verified registered after a switch.
    ModemEsim {
        port: String,
        work: esim::Work,
    },
    /// A profile download onto the eUICC in the modem of `port`
    /// (src/daemon/esim_download.rs), then with `enable` a swap to the new profile.
    EsimDownload {
        port: String,
        req: Box<crate::contract::DownloadRequest>,
    },
    /// A guided SIM swap on the modem of `port` (src/daemon/swap.rs).
    Swap {
        port: String,
        target: SwapTarget,
    },
    /// A PIN operation on the card in `reader` (src/card/pin.rs `on_card`), the card
    /// read again after.
    ReaderPin {
        reader: String,
        req: crate::sim::PinRequest,
    },
    /// A PIN operation on the SIM in the modem of `port`, through its supervisor.
    ModemPin {
        port: String,
        req: crate::sim::PinRequest,
    },
    Refuse {
        code: RefusalCode,
        reason: String,
    },
}

/// A PIN operation's failure as the command's outcome: the last attempt kept is said
/// by its own code, so a platform can ask again with `force`.
pub(crate) fn pin_refusal(f: &crate::card::pin::PinFailure) -> (RefusalCode, String) {
    use crate::card::pin::{PinFailure, PinRefusal};
    let code = match f {
        PinFailure::Guard(PinRefusal::LastPinAttempt { .. } | PinRefusal::PukAtRisk { .. }) => {
            RefusalCode::LastAttempt
        }
        PinFailure::Guard(PinRefusal::WrongState { .. }) => RefusalCode::NotApplicable,
        PinFailure::OtherSim(_) | PinFailure::Wrong { .. } | PinFailure::Refused { .. } => {
            RefusalCode::Failed
        }
    };
    (code, f.to_string())
}

pub(crate) fn plan(cmd: &Command, host: &Host) -> Plan {
    let refuse = |code, reason: &str| Plan::Refuse {
        code,
        reason: reason.to_string(),
    };
    match (cmd.action, host) {
        // `esim_download`, and a `swap` with `download`: through a modem's supervisor.
        (_, Host::Reader { .. }) if cmd.download.is_some() => refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: a platform download is for a modem's eUICC (in a reader: simgate esim download)",
        ),
        (_, Host::Modem { port, .. }) if cmd.download.is_some() => match &cmd.download {
            Some(req) => Plan::EsimDownload {
                port: port.clone(),
                req: req.clone(),
            },
            None => refuse(RefusalCode::InvalidField, "params: missing"),
        },
        (Action::EsimDownload, _) => refuse(RefusalCode::InvalidField, "params: missing"),
        (a, Host::Reader { reader }) if a.is_esim() => match esim_work(cmd) {
            Ok(work) => Plan::Esim {
                reader: reader.clone(),
                work,
            },
            Err(why) => refuse(RefusalCode::InvalidField, &why),
        },
        (a, Host::Modem { port, .. }) if a.is_esim() => match esim_work(cmd) {
            Ok(work) => Plan::ModemEsim {
                port: port.clone(),
                work,
            },
            Err(why) => refuse(RefusalCode::InvalidField, &why),
        },
        (a, host) if a.pin_op().is_some() => match (&cmd.pin, host) {
            (None, _) => refuse(RefusalCode::InvalidField, "params: missing PIN"),
            (Some(req), Host::Reader { reader }) => Plan::ReaderPin {
                reader: reader.clone(),
                req: (**req).clone(),
            },
            (Some(req), Host::Modem { port, .. }) => Plan::ModemPin {
                port: port.clone(),
                req: (**req).clone(),
            },
        },
        (Action::Refill, _) => match &cmd.refill {
            Some(r) => Plan::Refill(r.clone()),
            None => refuse(RefusalCode::InvalidField, "params: missing refill"),
        },
        (Action::Rules, _) => Plan::EvaluateRules,
        (Action::RequestRefill, _) => Plan::RequestRefill {
            amount_mb: cmd.refill.as_ref().and_then(|r| r.amount_mb),
        },
        // A guided SIM swap (src/daemon/swap.rs): for a SIM in a modem only.
        (Action::Swap, Host::Reader { .. }) => refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: a guided swap is for a SIM in a modem",
        ),
        (Action::Swap, Host::Modem { port, slot }) => match (&cmd.swap, slot) {
            (None, _) => refuse(RefusalCode::InvalidField, "params: missing swap target"),
            (Some(SwapTarget::ToSlot(_)), None) => refuse(
                RefusalCode::NotApplicable,
                &format!("params.to_slot: the modem at {port} reports no SIM slots"),
            ),
            (Some(SwapTarget::ToSlot(n)), Some(s)) if n == s => refuse(
                RefusalCode::InvalidField,
                &format!("params.to_slot: the SIM already sits in slot {n}"),
            ),
            (Some(SwapTarget::ToProfile(p)), _) if *p == cmd.iccid => refuse(
                RefusalCode::InvalidField,
                &format!("params.to_profile: profile {p} is the one enabled"),
            ),
            (Some(target), _) => Plan::Swap {
                port: port.clone(),
                target: target.clone(),
            },
        },
        (Action::SetRecord, _) => match &cmd.record {
            Some(r) => Plan::SetRecord((**r).clone()),
            None => refuse(RefusalCode::InvalidField, "params: missing platform record"),
        },
        (Action::Refresh, Host::Reader { reader }) => Plan::ReadCard {
            reader: reader.clone(),
        },
        (Action::Suspend | Action::Resume, Host::Reader { .. }) => refuse(
            RefusalCode::NotApplicable,
            "the SIM is a card in a PC/SC reader: it has no data session to suspend or resume",
        ),
        (Action::Refresh, Host::Modem { port, .. }) => Plan::Modem {
            work: ModemWork::Reread,
            port: port.clone(),
        },
        (Action::Suspend, Host::Modem { port, .. }) => Plan::Modem {
            work: ModemWork::Act(ModemAction::SuspendData),
            port: port.clone(),
        },
        (Action::Resume, Host::Modem { port, .. }) => Plan::Modem {
            work: ModemWork::Act(ModemAction::ResumeData),
            port: port.clone(),
        },
        // Every esim_* action is matched above, for either host.
        (_, _) => refuse(RefusalCode::UnknownAction, "action not handled"),
    }
}

/// The card engine's operation for an `esim_*` command (its params validated by the
/// contract). In a reader there is no device to REFRESH: refreshFlag false, the card
/// reset after a switch instead.
fn esim_work(cmd: &Command) -> Result<esim::Work, String> {
    if cmd.action == Action::EsimList {
        return Ok(esim::Work::List);
    }
    let req = cmd
        .esim
        .as_ref()
        .ok_or_else(|| "params.profile: missing".to_string())?;
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

/// Hand the eUICC's pending notifications to the platform, each an event through the
/// outbox (durable, numbered); removed from the card only on the platform's
/// `esim_notification_ack`. Those that could not be retrieved are said in an `error`
/// event beside the command's outcome, which follows what the card did (MQTT.md).
fn hand_over(link: Option<&crate::link::Link>, iccid: &str, done: &esim::WorkDone) {
    let Some(link) = link else {
        return;
    };
    if let Some(problem) = &done.notification_problem {
        tracing::warn!(%iccid, %problem, "eSIM operation done; its notifications not all retrieved");
        let ev = crate::contract::EventKind::Error {
            iccid: Some(iccid.to_string()),
            code: RefusalCode::Failed,
            reason: format!("eSIM notifications: {problem}"),
        };
        if let Err(e) = link.publish_event(ev) {
            tracing::warn!(error = %e, "eSIM notification problem not queued");
        }
    }
    for n in &done.pending {
        let ev = crate::contract::EventKind::EsimNotification {
            iccid: iccid.to_string(),
            number: n.meta.seq,
            operation: n.meta.event.word().to_string(),
            profile: n.meta.iccid.clone(),
            address: n.meta.address.clone(),
            notification: hex::encode_upper(&n.der),
        };
        if let Err(e) = link.publish_event(ev) {
            tracing::warn!(error = %e, seq = n.meta.seq, "eSIM notification not queued");
        }
    }
}

/// An eSIM operation on the card in `reader` (a PC/SC transaction, the card reset after
/// a verified switch so the new profile takes over), then the card read again with its
/// profile list: the row to record, whose ICCID is the enabled profile's — another one
/// after a switch, which the recorder reports as the swap it is (old → new, same reader).
/// Blocking: runs on its own thread.
/// A PIN operation on the card in `reader`, then the card read again for its row.
fn reader_pin(
    reader: &str,
    want: &str,
    req: crate::sim::PinRequest,
    settings: reader::ReadSettings,
) -> Done {
    let name = std::ffi::CString::new(reader.to_string()).map_err(|_| {
        (
            RefusalCode::Failed,
            format!("reader name {reader:?} is not a C string"),
        )
    })?;
    let iccid = want.to_string();
    let outcome = reader::with_card(&name, settings.card_timeout.saturating_mul(2), move |t| {
        (crate::card::pin::on_card(t, Some(&iccid), &req), false)
    })
    .map_err(|e| (RefusalCode::Failed, e.to_string()))?
    .map_err(|e| (RefusalCode::Failed, e.to_string()))?;
    if let (Err(f), _) = outcome {
        return Err(pin_refusal(&f));
    }
    let read = reader::establish()
        .and_then(|pcsc| reader::read_card(&pcsc, &name, &settings))
        .map_err(|e| {
            (
                RefusalCode::Failed,
                format!("done, but the re-read failed: {e}"),
            )
        })?;
    Ok(Some(crate::observe::from_card(
        &read,
        crate::time::unix_now(),
    )))
}

fn run_esim(
    reader: &str,
    work: esim::Work,
    settings: reader::ReadSettings,
    link: Option<&crate::link::Link>,
    key: &str,
) -> Done {
    let name = std::ffi::CString::new(reader.to_string()).map_err(|_| {
        (
            RefusalCode::Failed,
            format!("reader name {reader:?} is not a C string"),
        )
    })?;
    {
        let switches = matches!(
            work,
            esim::Work::Apply(esim::Action::Enable { .. } | esim::Action::Disable { .. })
        );
        // An operation is several exchanges: four times one read's card timeout.
        let timeout = settings.card_timeout.saturating_mul(4);
        let outcome = reader::with_card(&name, timeout, move |t| {
            let r = esim::Isdr::select_basic(t, crate::card::euicc::shipped_aids())
                .and_then(|i| esim::with_isdr(i, |i| esim::work_on(i, &work)).map(|(d, _, _)| d));
            let reset = switches && r.is_ok();
            (r, reset)
        })
        .map_err(|e| (RefusalCode::Failed, e.to_string()))?;
        match outcome {
            Ok(d) => {
                tracing::info!(%reader, apdus = d.apdus, pending = d.pending.len(), "eSIM operation verified");
                hand_over(link, key, &d);
            }
            Err(e @ esim::EsimError::NoIsdr(_)) => {
                return Err((RefusalCode::NotApplicable, e.to_string()))
            }
            Err(e) => return Err((RefusalCode::Failed, e.to_string())),
        }
    }
    let read = reader::establish()
        .and_then(|pcsc| reader::read_card(&pcsc, &name, &settings))
        .map_err(|e| {
            (
                RefusalCode::Failed,
                format!("done, but the card could not be read again: {e}"),
            )
        })?;
    Ok(Some(crate::observe::from_card(
        &read,
        crate::time::unix_now(),
    )))
}

/// How long a new profile may take to register after a switch through a modem.
const ESIM_REGISTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An eSIM operation through a modem's supervisor; after a switch, the new profile's
/// registration awaited (the supervisor has already reported the SIM change, which the
/// loop records as a swap before this result).
async fn modem_esim(
    handle: &ModemHandle,
    work: esim::Work,
    link: Option<&crate::link::Link>,
    key: &str,
) -> Done {
    let switches = matches!(work, esim::Work::Apply(esim::Action::Enable { .. }));
    match handle.esim(work).await {
        Ok(Ok(done)) => hand_over(link, key, &done),
        Ok(Err(why)) => return Err((RefusalCode::Failed, why)),
        Err(e) => return Err((RefusalCode::Unavailable, e.to_string())),
    }
    if !switches {
        return Ok(None);
    }
    let deadline = tokio::time::Instant::now() + ESIM_REGISTER;
    loop {
        match handle.status().await {
            Ok(info)
                if info
                    .sim
                    .registration
                    .as_ref()
                    .is_some_and(|r| r.state.registered()) =>
            {
                return Ok(None)
            }
            Ok(_) | Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err((
                    RefusalCode::Failed,
                    format!(
                        "the profile was switched, but the new one did not register within {} s",
                        ESIM_REGISTER.as_secs()
                    ),
                ))
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(500)).await,
        }
    }
}

/// How long the id of a command refused before its `expires_at` was read is remembered.
const REFUSAL_MEMORY_SECS: u64 = 86_400;

const INTERRUPTED: &str =
    "simgate restarted while the command was in progress; its effect is unknown and it was not repeated";

/// Commands in flight in this process (their async work not yet done).
#[derive(Debug, Default)]
pub(crate) struct Commands {
    running: HashSet<String>,
}

impl Commands {
    /// At start-up: a command left executing by a run that died has an unknown effect.
    /// Report it failed as interrupted (its delivery may have been acknowledged, so
    /// no redelivery would ever settle it). One left received whose time is up will
    /// never run: failed as expired. Then forget the finished ones whose time is up.
    pub(crate) fn recover(ctx: &Ctx) -> Result<(), DaemonError> {
        let now = crate::time::unix_now();
        for mut rec in ctx.store.all_commands()? {
            if ctx.store.get_swap(&rec.id)?.is_some()
                || super::esim_download::owns(&ctx.store, &rec.id)?
            {
                // A swap's or a download's record says where it stood:
                // swap::recover or esim_download::recover finishes it.
                continue;
            }
            let fail = match rec.state {
                CommandState::Executing => Some((RefusalCode::Interrupted, INTERRUPTED.into())),
                CommandState::Received if rec.keep_until != 0 && rec.keep_until <= now => Some((
                    RefusalCode::Expired,
                    format!("expired at {} before it ran", rec.keep_until),
                )),
                _ => None,
            };
            if let Some((code, reason)) = fail {
                rec.state = CommandState::Failed;
                rec.code = Some(code);
                rec.reason = Some(reason);
                rec.updated_at = now;
                tracing::warn!(id = %rec.id, ?code, "command failed at start-up");
                store_and_report(ctx, &mut rec)?;
            } else if rec.unreported {
                // The last run stored this outcome and died before queuing its report:
                // nobody would tell the platform otherwise (its delivery was
                // acknowledged, so the broker does not send the command again).
                tracing::warn!(id = %rec.id, state = %rec.state, "command outcome reported at start-up: the last run died before reporting it");
                report(ctx, &rec, true)?;
                ctx.store.mark_reported(&rec.id)?;
            }
        }
        let forgotten = ctx.store.forget_commands(now)?;
        tracing::debug!(forgotten, "command ids past their time forgotten");
        Ok(())
    }

    /// A command a previous run left running whose work goes on now (a SIM swap
    /// resumed or rolled back at start-up): its outcome arrives as `CommandDone`.
    pub(crate) fn adopt(&mut self, id: String) {
        self.running.insert(id);
    }

    pub(crate) async fn on_platform(
        &mut self,
        ctx: &Ctx,
        msg: Received,
        modems: &dyn ModemPorts,
    ) -> Result<(), DaemonError> {
        match msg {
            Received::Command { command, ack } => {
                match command {
                    Ok(cmd) => self.on_command(ctx, cmd, modems).await?,
                    Err(refusal) => self.on_refused(ctx, refusal)?,
                }
                // Acknowledged only now: the claim is on disk, a redelivery is answered
                // from it.
                if let Some(link) = &ctx.link {
                    link.ack(ack);
                }
            }
            Received::PlatformRecord { iccid, record, ack } => {
                match record {
                    Ok(rec) => {
                        ctx.store.clear_refused_platform(&iccid)?;
                        let rec = rec.unwrap_or_default();
                        if ctx
                            .store
                            .note_received_platform(&iccid, fingerprint(&rec))?
                        {
                            tracing::debug!(%iccid, "platform record redelivered unchanged");
                        } else {
                            self.set_record(ctx, &iccid, rec)?
                        }
                    }
                    // The same retained record refused again (a reconnect, a restart):
                    // said once.
                    Err(r) if ctx.store.refused_platform_known(&iccid, r.payload_hash)? => {
                        tracing::debug!(%iccid, reason = %r.reason, "platform record refused again");
                    }
                    Err(r) => {
                        tracing::warn!(%iccid, reason = %r.reason, "platform record refused");
                        if let Some(link) = &ctx.link {
                            link.publish_event(EventKind::Error {
                                iccid: crate::contract::valid_iccid(&iccid).then(|| iccid.clone()),
                                code: r.code,
                                reason: format!("platform record refused: {}", r.reason),
                            })?;
                        }
                        // Remembered once its report is queued: a kill in between
                        // reports it again at the next start, never not at all.
                        ctx.store.note_refused_platform(&iccid, r.payload_hash)?;
                    }
                }
                if let Some(link) = &ctx.link {
                    link.ack(ack);
                }
            }
        }
        Ok(())
    }

    /// Cache a platform record and republish the SIM's row when it changed. A record
    /// with new data or days left is the new base of the local estimate.
    fn set_record(&self, ctx: &Ctx, iccid: &str, rec: PlatformRecord) -> Result<(), DaemonError> {
        let old = ctx.store.get_platform(iccid)?;
        if old.as_ref() == Some(&rec) {
            return Ok(());
        }
        let figures =
            |r: Option<&PlatformRecord>| r.map(|r| (r.data_left_mb, r.days_left, r.updated_at));
        if figures(old.as_ref()) != figures(Some(&rec)) {
            ctx.store.reset_estimate(iccid, crate::time::unix_now())?;
        }
        ctx.store.put_platform(iccid, &rec)?;
        if let Some(obs) = ctx.store.get_observed(iccid)? {
            ctx.rec.publish_row(&obs)?;
        }
        Ok(())
    }

    /// An inbound command that failed its checks. With a readable id it gets a failed
    /// status on its own topic (recorded, so a redelivery gets the same answer);
    /// without one, an error event.
    fn on_refused(&mut self, ctx: &Ctx, r: Refusal) -> Result<(), DaemonError> {
        tracing::warn!(id = r.id.as_deref(), code = %r.code, reason = %r.reason, "command refused");
        let Some(id) = r.id.clone() else {
            if let Some(link) = &ctx.link {
                link.publish_event(EventKind::Error {
                    iccid: r.iccid.clone(),
                    code: r.code,
                    reason: format!("command refused: {}", r.reason),
                })?;
            }
            return Ok(());
        };
        let now = crate::time::unix_now();
        let mut rec = CommandRecord {
            id,
            iccid: r.iccid.clone().unwrap_or_default(),
            action: r.action.clone().unwrap_or_default(),
            state: CommandState::Failed,
            code: Some(r.code),
            reason: Some(r.reason.clone()),
            received_at: now,
            updated_at: now,
            // Refused before it could say when it expires: remembered a day, so its
            // redeliveries are answered from the record.
            keep_until: now + REFUSAL_MEMORY_SECS,
            unreported: false,
            rows: None,
            profile: None,
        };
        // Stored with its outcome, final from the start (see `store_and_report`).
        rec.unreported = true;
        match ctx.store.claim_command(&rec, now)? {
            Claim::New => {
                report(ctx, &rec, true)?;
                Ok(ctx.store.mark_reported(&rec.id)?)
            }
            Claim::Known(existing) => self.answer_duplicate(ctx, existing),
            Claim::Full => {
                too_many(&mut rec);
                report(ctx, &rec, true)
            }
        }
    }

    async fn on_command(
        &mut self,
        ctx: &Ctx,
        cmd: Command,
        modems: &dyn ModemPorts,
    ) -> Result<(), DaemonError> {
        let now = crate::time::unix_now();
        let mut rec = CommandRecord {
            id: cmd.id.clone(),
            iccid: cmd.iccid.clone(),
            action: cmd.action.word().to_string(),
            state: CommandState::Received,
            code: None,
            reason: None,
            received_at: now,
            updated_at: now,
            // After it, a repeat is refused as expired: never run twice.
            keep_until: cmd.expires_at,
            unreported: false,
            rows: None,
            profile: None,
        };
        match ctx.store.claim_command(&rec, now)? {
            Claim::New => {
                tracing::info!(id = %cmd.id, iccid = %cmd.iccid, action = cmd.action.word(), "command received");
                report(ctx, &rec, false)?;
            }
            // Not remembered, and nothing done: said so, once.
            Claim::Full => {
                tracing::warn!(id = %cmd.id, "too many command ids remembered: command refused");
                too_many(&mut rec);
                return report(ctx, &rec, true);
            }
            // Claimed by a run of simgate that died before it acknowledged the delivery
            // or started anything: no effect happened, so processing it now is its
            // first and only execution.
            Claim::Known(existing)
                if existing.state == CommandState::Received && !self.running.contains(&cmd.id) =>
            {
                tracing::info!(id = %cmd.id, "command redelivered before it ran: running it now");
                rec = existing;
                // The dead run may have died before saying so.
                report(ctx, &rec, false)?;
            }
            Claim::Known(existing) => return self.answer_duplicate(ctx, existing),
        }

        if cmd.action == Action::Sync {
            return self.sync(ctx, &mut rec);
        }
        // Only SIMs this agent hosts now: a command for anything else is refused.
        let host = match ctx.store.get_observed(&cmd.iccid)? {
            Some(obs) if obs.present => Host::of(&obs),
            _ => {
                return self.finish(
                    ctx,
                    &mut rec,
                    Err((
                        RefusalCode::NotHosted,
                        format!("SIM {} is not hosted by this agent", cmd.iccid),
                    )),
                );
            }
        };
        let mut plan = plan(&cmd, &host);
        let to_profile = matches!(cmd.swap, Some(SwapTarget::ToProfile(_)));
        if cmd.action.is_esim() || cmd.download.is_some() || to_profile {
            let esim = ctx
                .store
                .get_observed(&cmd.iccid)?
                .is_some_and(|o| o.form_factor == Some(crate::sim::FormFactor::Esim));
            if !esim {
                plan = Plan::Refuse {
                    code: RefusalCode::NotApplicable,
                    reason: format!("SIM {} is not an eSIM: it has no profiles", cmd.iccid),
                };
            }
        }
        if let Plan::Modem {
            work: ModemWork::Act(ModemAction::SuspendData | ModemAction::ResumeData),
            port,
        } = &plan
        {
            if modems.shared_with_modemmanager(port) {
                plan = Plan::Refuse {
                    code: RefusalCode::NotApplicable,
                    reason: format!(
                        "{port} is a spare port of a modem ModemManager keeps (modems.shared_with_modemmanager): \
                         ModemManager holds the data session up and would undo a +CGACT within seconds; \
                         suspend the line on the platform's side, or let simgate own the modem \
                         (/usr/share/simgate/udev/README.md)"
                    ),
                };
            }
        }
        if let Plan::Refuse { code, reason } = plan {
            return self.finish(ctx, &mut rec, Err((code, reason)));
        }
        // Executing is stored before the effect: if simgate dies now, a redelivery finds
        // it and reports the command interrupted instead of running it twice.
        rec.state = CommandState::Executing;
        rec.updated_at = crate::time::unix_now();
        ctx.store.put_command(&rec)?;
        report(ctx, &rec, false)?;
        match plan {
            Plan::SetRecord(r) => {
                self.set_record(ctx, &cmd.iccid, r)?;
                self.finish(ctx, &mut rec, Ok(()))
            }
            Plan::RequestRefill { amount_mb } => {
                let (outcome, why) = super::rules::request_refill(
                    &ctx.store,
                    ctx.link.as_ref(),
                    &cmd.iccid,
                    &cmd.id,
                    amount_mb,
                    None,
                )?;
                let result = match outcome {
                    "requested" => Ok(()),
                    _ => Err((
                        RefusalCode::Failed,
                        format!("not requested: {}", why.unwrap_or_else(|| outcome.into())),
                    )),
                };
                self.finish(ctx, &mut rec, result)
            }
            Plan::EvaluateRules => {
                super::rules::evaluate(ctx, modems, &cmd.iccid, None)?;
                self.finish(ctx, &mut rec, Ok(()))
            }
            Plan::Refill(r) => {
                let lift = self.apply_refill(ctx, &cmd, &r)?;
                match (lift, &host) {
                    // A rule had suspended it for its allowance: the session comes back
                    // up, verified by the modem engine (as a resume command).
                    (true, Host::Modem { port, .. }) => match modems.handle(port) {
                        Some(handle) => {
                            self.running.insert(cmd.id.clone());
                            let (tx, id, iccid) = (ctx.events.clone(), cmd.id.clone(), cmd.iccid.clone());
                            let store = ctx.store.clone();
                            tokio::spawn(async move {
                                let result = match handle.act(ModemAction::ResumeData).await {
                                    Ok(Ok(_)) => store
                                        .set_rule_hold(&iccid, None)
                                        .map(|_| None)
                                        .map_err(|e| (RefusalCode::Failed, e.to_string())),
                                    Ok(Err(refusal)) => Err((
                                        RefusalCode::Failed,
                                        format!("refill applied, but the session did not come back: {refusal}"),
                                    )),
                                    Err(e) => Err((
                                        RefusalCode::Unavailable,
                                        format!("refill applied, but the modem is not reachable: {e}"),
                                    )),
                                };
                                let _ = tx.send(Event::CommandDone { id, result }).await;
                            });
                            Ok(())
                        }
                        None => self.finish(
                            ctx,
                            &mut rec,
                            Err((
                                RefusalCode::Unavailable,
                                format!("refill applied, but the modem engine is not available for {port}"),
                            )),
                        ),
                    },
                    _ => self.finish(ctx, &mut rec, Ok(())),
                }
            }
            Plan::ReadCard { reader } => {
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let id = cmd.id.clone();
                let want = cmd.iccid.clone();
                let settings = ctx.read_settings;
                tokio::task::spawn_blocking(move || {
                    let result = std::ffi::CString::new(reader.clone())
                        .map_err(|_| format!("reader name {reader:?} is not a C string"))
                        .and_then(|name| {
                            reader::establish()
                                .and_then(|pcsc| reader::read_card(&pcsc, &name, &settings))
                                .map_err(|e| e.to_string())
                        })
                        .map(|read| crate::observe::from_card(&read, crate::time::unix_now()))
                        .and_then(|obs| {
                            if obs.iccid == want {
                                Ok(Some(obs))
                            } else {
                                Err(format!("the reader now holds another SIM ({})", obs.iccid))
                            }
                        })
                        .map_err(|e| (RefusalCode::Failed, format!("re-read failed: {e}")));
                    let _ = tx.blocking_send(Event::CommandDone { id, result });
                });
                Ok(())
            }
            Plan::Modem { work, port } => {
                let Some(handle) = modems.handle(&port) else {
                    return self.finish(ctx, &mut rec, Err(no_engine(&port)));
                };
                // The platform's own suspend or resume takes over from a rule's: a later
                // refill must not resume a SIM the platform suspended.
                if let ModemWork::Act(ModemAction::SuspendData | ModemAction::ResumeData) = work {
                    ctx.store.set_rule_hold(&cmd.iccid, None)?;
                }
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let (id, want) = (cmd.id.clone(), cmd.iccid.clone());
                // The loop goes on while the supervisor works.
                tokio::spawn(async move {
                    let result = match work {
                        ModemWork::Act(action) => match handle.act(action).await {
                            Ok(Ok(outcome)) => {
                                tracing::info!(%id, verified = %outcome.verified, "modem action done");
                                Ok(None)
                            }
                            Ok(Err(ModemRefusal::Unsupported(why))) => {
                                Err((RefusalCode::Unsupported, why))
                            }
                            Ok(Err(refusal)) => Err((RefusalCode::Failed, refusal.to_string())),
                            Err(e) => Err((RefusalCode::Unavailable, e.to_string())),
                        },
                        ModemWork::Reread => match handle.refresh().await {
                            Ok(info) => {
                                match crate::observe::from_modem(&info, crate::time::unix_now()) {
                                    Some(obs) if obs.iccid == want => Ok(Some(obs)),
                                    Some(obs) => Err((
                                        RefusalCode::Failed,
                                        format!("the modem now holds another SIM ({})", obs.iccid),
                                    )),
                                    None => Err((
                                        RefusalCode::Failed,
                                        format!("the modem holds no SIM now ({})", info.sim.state),
                                    )),
                                }
                            }
                            Err(e) => {
                                Err((RefusalCode::Unavailable, format!("re-read failed: {e}")))
                            }
                        },
                    };
                    let _ = tx.send(Event::CommandDone { id, result }).await;
                });
                Ok(())
            }
            Plan::Esim { reader, work } => {
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let id = cmd.id.clone();
                let settings = ctx.read_settings;
                let (link, key) = (ctx.link.clone(), cmd.iccid.clone());
                tokio::task::spawn_blocking(move || {
                    let result = run_esim(&reader, work, settings, link.as_ref(), &key);
                    let _ = tx.blocking_send(Event::CommandDone { id, result });
                });
                Ok(())
            }
            Plan::ModemEsim { port, work } => {
                let Some(handle) = modems.handle(&port) else {
                    return self.finish(ctx, &mut rec, Err(no_engine(&port)));
                };
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let id = cmd.id.clone();
                let (link, key) = (ctx.link.clone(), cmd.iccid.clone());
                tokio::spawn(async move {
                    let result = modem_esim(&handle, work, link.as_ref(), &key).await;
                    let _ = tx.send(Event::CommandDone { id, result }).await;
                });
                Ok(())
            }
            Plan::EsimDownload { port, req } => {
                let Some(handle) = modems.handle(&port) else {
                    return self.finish(ctx, &mut rec, Err(no_engine(&port)));
                };
                match super::esim_download::start(ctx, &cmd.id, &cmd.iccid, &port, *req, handle)? {
                    Ok(()) => {
                        self.running.insert(cmd.id.clone());
                        Ok(())
                    }
                    Err(refusal) => self.finish(ctx, &mut rec, Err(refusal)),
                }
            }
            Plan::Swap { port, target } => {
                let (Some(handle), Some(old)) =
                    (modems.handle(&port), ctx.store.get_observed(&cmd.iccid)?)
                else {
                    return self.finish(ctx, &mut rec, Err(no_engine(&port)));
                };
                match super::swap::start(ctx, &cmd.id, &old, target, handle)? {
                    Ok(()) => {
                        self.running.insert(cmd.id.clone());
                        Ok(())
                    }
                    Err(refusal) => self.finish(ctx, &mut rec, Err(refusal)),
                }
            }
            Plan::ReaderPin { reader, req } => {
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let (id, want) = (cmd.id.clone(), cmd.iccid.clone());
                let settings = ctx.read_settings;
                tokio::task::spawn_blocking(move || {
                    let result = reader_pin(&reader, &want, req, settings);
                    let _ = tx.blocking_send(Event::CommandDone { id, result });
                });
                Ok(())
            }
            Plan::ModemPin { port, req } => {
                let Some(handle) = modems.handle(&port) else {
                    return self.finish(ctx, &mut rec, Err(no_engine(&port)));
                };
                self.running.insert(cmd.id.clone());
                let tx = ctx.events.clone();
                let (id, want) = (cmd.id.clone(), cmd.iccid.clone());
                tokio::spawn(async move {
                    // The supervisor reads the SIM again after and reports its row.
                    let result = match handle.pin(&want, req).await {
                        Ok(Ok(())) => Ok(None),
                        Ok(Err(f)) => Err(pin_refusal(&f)),
                        Err(e) => Err((RefusalCode::Unavailable, e.to_string())),
                    };
                    let _ = tx.send(Event::CommandDone { id, result }).await;
                });
                Ok(())
            }
            Plan::Refuse { .. } => Ok(()),
        }
    }

    /// A command's asynchronous work (card re-read, modem action) finished.
    pub(crate) async fn on_done(
        &mut self,
        ctx: &Ctx,
        id: String,
        result: Done,
    ) -> Result<(), DaemonError> {
        self.running.remove(&id);
        let Some(mut rec) = ctx.store.get_command(&id)? else {
            return Ok(());
        };
        let outcome = match result {
            Ok(Some(obs)) => {
                ctx.record(&obs).await?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        self.finish(ctx, &mut rec, outcome)
    }

    /// `sync` (MQTT.md, "Sync"): every row queued again behind the `executing` status,
    /// then the `successful` status with the count — the end marker, after every row in
    /// the outbox's order. Exactly once like any command: a repeat is answered from the
    /// record, with the same count, and publishes nothing.
    fn sync(&mut self, ctx: &Ctx, rec: &mut CommandRecord) -> Result<(), DaemonError> {
        rec.state = CommandState::Executing;
        rec.updated_at = crate::time::unix_now();
        ctx.store.put_command(rec)?;
        report(ctx, rec, false)?;
        let rows = match &ctx.link {
            Some(link) => link.sync_rows()?,
            None => 0,
        };
        rec.rows = Some(rows);
        self.finish(ctx, rec, Ok(()))
    }

    fn finish(
        &mut self,
        ctx: &Ctx,
        rec: &mut CommandRecord,
        outcome: Result<(), (RefusalCode, String)>,
    ) -> Result<(), DaemonError> {
        match outcome {
            Ok(()) => {
                rec.state = CommandState::Successful;
                rec.code = None;
                rec.reason = None;
            }
            Err((code, reason)) => {
                rec.state = CommandState::Failed;
                rec.code = Some(code);
                rec.reason = Some(reason);
            }
        }
        rec.updated_at = crate::time::unix_now();
        tracing::info!(id = %rec.id, state = %rec.state, code = rec.code.map(|c| c.word()), reason = rec.reason.as_deref(), "command finished");
        store_and_report(ctx, rec)
    }

    /// Apply a refill to the cached record: the balance moves once per request id (a
    /// second command answering the same request changes nothing), the estimate counts
    /// from now, the refill ledger learns its request was answered. Returns whether a
    /// rule's suspension is to be lifted.
    fn apply_refill(
        &self,
        ctx: &Ctx,
        cmd: &Command,
        r: &crate::contract::Refill,
    ) -> Result<bool, DaemonError> {
        let now = crate::time::unix_now();
        let _one = super::rules::LEDGER
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(req) = &r.request_id {
            if let Some(by) = ctx.store.refill_applied(req)? {
                tracing::info!(id = %cmd.id, request = %req, %by, "refill already applied");
                // The balance moved then; a suspension the first answer could not lift
                // (the modem unreachable) is lifted now.
                return Ok(ctx.store.rule_hold(&cmd.iccid)?.is_some());
            }
        }
        let record = ctx.store.get_platform(&cmd.iccid)?.unwrap_or_default();
        let left_now = ctx
            .store
            .estimate(&cmd.iccid, &record, now)?
            .and_then(|e| e.data_left_mb)
            .or(record.data_left_mb)
            .unwrap_or(0.0);
        let mut new = record.clone();
        new.data_left_mb = Some(match (r.data_left_mb, r.amount_mb) {
            (Some(d), _) => d,
            (None, Some(a)) => left_now + a,
            (None, None) => left_now,
        });
        if let Some(d) = r.days {
            new.days_left = Some(d);
        }
        new.updated_at = Some(now);
        tracing::info!(id = %cmd.id, iccid = %cmd.iccid, before_mb = record.data_left_mb, after_mb = new.data_left_mb, "refill applied");
        // The estimate counts from now; then record, applied request and ledger at once.
        ctx.store.reset_estimate(&cmd.iccid, now)?;
        ctx.store
            .apply_refill(&cmd.iccid, &new, r.request_id.as_deref(), &cmd.id)?;
        if let Some(obs) = ctx.store.get_observed(&cmd.iccid)? {
            ctx.rec.publish_row(&obs)?;
        }
        Ok(ctx.store.rule_hold(&cmd.iccid)?.is_some())
    }

    /// A command id seen before: answer from its record.
    fn answer_duplicate(&mut self, ctx: &Ctx, mut rec: CommandRecord) -> Result<(), DaemonError> {
        tracing::info!(id = %rec.id, state = %rec.state, "duplicate command: answered from its record");
        if rec.state.is_final() || self.running.contains(&rec.id) {
            return report(ctx, &rec, false);
        }
        // Claimed by an earlier run of simgate that died before finishing.
        self.finish(
            ctx,
            &mut rec,
            Err((RefusalCode::Interrupted, INTERRUPTED.into())),
        )
    }
}

/// A stable fingerprint of a platform record as received (over its JSON, which serde
/// writes in field order): equal records, equal fingerprints, across restarts.
fn fingerprint(rec: &PlatformRecord) -> u64 {
    crate::rules::fingerprint(&serde_json::to_vec(rec).unwrap_or_default())
}

/// A command refused because [`MAX_COMMAND_IDS`] ids are remembered: nothing was
/// stored, so it is not answered from a record later.
fn too_many(rec: &mut CommandRecord) {
    rec.state = CommandState::Failed;
    rec.code = Some(RefusalCode::TooManyCommands);
    rec.reason = Some(format!(
        "this agent remembers {MAX_COMMAND_IDS} unexpired command ids; nothing was done, send it again later"
    ));
}

/// Store a final outcome, then report it (its status and its `command` event). Stored
/// first, so a crash in between never runs the command again; marked `unreported`
/// until the report is in the outbox, so such a crash is reported by the next start
/// (`Commands::recover`) instead of never: the command's delivery was acknowledged
/// long ago, no redelivery would ask again. (Found building the chaos suite's check
/// that every command gets an outcome: tests/it/chaos.rs.)
fn store_and_report(ctx: &Ctx, rec: &mut CommandRecord) -> Result<(), DaemonError> {
    rec.unreported = true;
    ctx.store.put_command(rec)?;
    // A debug-build-only hook: die here, as a power cut would, for the test that
    // shows the outcome still reaches the platform.
    #[cfg(debug_assertions)]
    if std::env::var("SIMGATE_DEBUG_DIE_AFTER_OUTCOME").is_ok_and(|id| id == rec.id) {
        tracing::warn!(id = %rec.id, "SIMGATE_DEBUG_DIE_AFTER_OUTCOME: dying before the report");
        std::process::abort();
    }
    report(ctx, rec, true)?;
    rec.unreported = false;
    Ok(ctx.store.mark_reported(&rec.id)?)
}

/// Publish a command's status; final ones also as a `command` event.
fn report(ctx: &Ctx, rec: &CommandRecord, as_event: bool) -> Result<(), DaemonError> {
    if ctx.link.is_none() && ctx.rec.feed.is_none() {
        return Ok(());
    }
    let status = match rec.state {
        CommandState::Received => CommandStatusWord::Received,
        CommandState::Executing => CommandStatusWord::Executing,
        CommandState::Successful => CommandStatusWord::Successful,
        CommandState::Failed => CommandStatusWord::Failed,
    };
    // To the platform and the page alike (the recorder: src/agent/recorder.rs).
    ctx.rec.command_status(
        &CommandStatus {
            v: SCHEMA_VERSION,
            id: rec.id.clone(),
            iccid: rec.iccid.clone(),
            action: rec.action.clone(),
            status,
            code: rec.code,
            reason: rec.reason.clone(),
            rows: rec.rows,
            profile: rec.profile.clone(),
            ts: crate::time::unix_now(),
        },
        as_event,
    )?;
    Ok(())
}

/// The refusal of a modem command whose port has no supervisor (the modem is gone or was
/// never configured): the same for every plan that needs one.
fn no_engine(port: &str) -> (RefusalCode, String) {
    (
        RefusalCode::Unavailable,
        format!("modem engine not available for {port}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: Action) -> Command {
        Command {
            id: "c".into(),
            iccid: "8988211000000430010".into(),
            action,
            record: None,
            refill: None,
            swap: None,
            esim: None,
            pin: None,
            download: None,
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn suspend_is_refused_for_a_reader_card_and_goes_to_the_modem_otherwise() {
        let reader = Host::Reader { reader: "R".into() };
        let modem = Host::Modem {
            port: "/dev/ttyUSB2".into(),
            slot: None,
        };
        assert!(matches!(
            plan(&cmd(Action::Suspend), &reader),
            Plan::Refuse {
                code: RefusalCode::NotApplicable,
                ..
            }
        ));
        assert!(matches!(
            plan(&cmd(Action::Resume), &modem),
            Plan::Modem {
                work: ModemWork::Act(ModemAction::ResumeData),
                ..
            }
        ));
        assert!(matches!(
            plan(&cmd(Action::Refresh), &modem),
            Plan::Modem {
                work: ModemWork::Reread,
                ..
            }
        ));
        assert!(matches!(
            plan(&cmd(Action::Refresh), &reader),
            Plan::ReadCard { .. }
        ));
    }

    #[test]
    fn refill_needs_its_params_and_rules_evaluate_wherever_the_sim_sits() {
        let reader = Host::Reader { reader: "R".into() };
        assert!(matches!(
            plan(&cmd(Action::Refill), &reader),
            Plan::Refuse {
                code: RefusalCode::InvalidField,
                ..
            }
        ));
        let mut r = cmd(Action::Refill);
        r.refill = Some(crate::contract::Refill {
            amount_mb: Some(1024.0),
            data_left_mb: None,
            days: None,
            request_id: None,
        });
        assert!(matches!(plan(&r, &reader), Plan::Refill(_)));
        assert_eq!(plan(&cmd(Action::Rules), &reader), Plan::EvaluateRules);
    }

    #[test]
    fn a_swap_goes_to_the_modem_and_is_refused_by_name_where_it_cannot_apply() {
        let modem = |slot| Host::Modem {
            port: "/dev/ttyUSB2".into(),
            slot,
        };
        let swap = |t: Option<SwapTarget>| Command {
            swap: t,
            ..cmd(Action::Swap)
        };
        let to2 = Some(SwapTarget::ToSlot(2));
        assert!(matches!(
            plan(&swap(to2.clone()), &modem(Some(1))),
            Plan::Swap {
                target: SwapTarget::ToSlot(2),
                ..
            }
        ));
        let reason = |p| match p {
            Plan::Refuse { code, reason } => format!("{code:?} {reason}"),
            p => panic!("not refused: {p:?}"),
        };
        assert!(reason(plan(&swap(to2.clone()), &modem(Some(2))))
            .starts_with("InvalidField params.to_slot"));
        assert!(reason(plan(&swap(to2.clone()), &modem(None)))
            .starts_with("NotApplicable params.to_slot"));
        assert!(
            reason(plan(&swap(to2), &Host::Reader { reader: "R".into() }))
                .starts_with("NotApplicable")
        );
        assert!(matches!(
            plan(
                &swap(Some(SwapTarget::ExpectIccid("89314404000000000019".into()))),
                &modem(None)
            ),
            Plan::Swap { .. }
        ));
    }

    struct NoModems;
    impl ModemPorts for NoModems {
        fn handle(&self, _: &str) -> Option<ModemHandle> {
            None
        }
    }

    fn ctx(tag: &str) -> (Ctx, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("simgate-cmd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (events, _rx) = tokio::sync::mpsc::channel(4);
        (
            Ctx::new(
                crate::store::Store::open(&dir).unwrap(),
                None,
                events,
                crate::reader::ReadSettings::from_config(&Default::default()),
            ),
            dir,
        )
    }

    fn record(id: &str, state: CommandState, updated_at: u64) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state,
            code: None,
            reason: None,
            received_at: updated_at,
            updated_at,
            keep_until: updated_at + 3_600,
            unreported: false,
            rows: None,
            profile: None,
        }
    }

    #[test]
    fn a_command_left_executing_by_a_dead_run_is_failed_as_interrupted_at_start_up() {
        let (ctx, dir) = ctx("recover");
        let now = crate::time::unix_now();
        ctx.store
            .put_command(&record("e", CommandState::Executing, now))
            .unwrap();
        ctx.store
            .put_command(&record("old", CommandState::Successful, 10))
            .unwrap();
        ctx.store
            .put_command(&record("r", CommandState::Received, now))
            .unwrap();
        // Finished, its report never queued (killed in between): reported now.
        let u = CommandRecord {
            unreported: true,
            rows: None,
            ..record("u", CommandState::Successful, now)
        };
        ctx.store.put_command(&u).unwrap();
        Commands::recover(&ctx).unwrap();
        let u = ctx.store.get_command("u").unwrap().unwrap();
        assert_eq!((u.state, u.unreported), (CommandState::Successful, false));
        let e = ctx.store.get_command("e").unwrap().unwrap();
        assert!(!e.unreported, "the interrupted outcome was reported");
        assert_eq!(e.state, CommandState::Failed);
        assert_eq!(e.code, Some(RefusalCode::Interrupted));
        assert_eq!(e.reason.as_deref(), Some(INTERRUPTED), "no code prefix");
        assert_eq!(
            ctx.store.get_command("old").unwrap(),
            None,
            "old record kept"
        );
        // Received: its delivery was never acknowledged; the redelivery runs it.
        assert_eq!(
            ctx.store.get_command("r").unwrap().unwrap().state,
            CommandState::Received
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_redelivered_command_that_never_started_runs_once() {
        let (ctx, dir) = ctx("resume");
        let now = crate::time::unix_now();
        ctx.store
            .put_command(&record("sr", CommandState::Received, now))
            .unwrap();
        let reader = Location::Reader {
            reader: "R 00 00".into(),
        };
        let obs = Observed::new("8988211000000430010", true, reader, now);
        ctx.store.put_observed(&obs).unwrap();
        let mut cmds = Commands::default();
        let cmd = Command {
            id: "sr".into(),
            iccid: obs.iccid.clone(),
            action: Action::SetRecord,
            record: Some(Box::new(PlatformRecord {
                plan: Some("IoT 1GB".into()),
                ..Default::default()
            })),
            refill: None,
            swap: None,
            esim: None,
            pin: None,
            download: None,
            expires_at: u64::MAX,
        };
        cmds.on_command(&ctx, cmd.clone(), &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_command("sr").unwrap().unwrap().state,
            CommandState::Successful
        );
        assert_eq!(
            ctx.store
                .get_platform(&obs.iccid)
                .unwrap()
                .unwrap()
                .plan
                .as_deref(),
            Some("IoT 1GB")
        );
        // And once more: answered from the record, the cached record untouched.
        ctx.store
            .put_platform(&obs.iccid, &PlatformRecord::default())
            .unwrap();
        cmds.on_command(&ctx, cmd, &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_platform(&obs.iccid).unwrap().unwrap().plan,
            None
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn past_the_cap_a_new_command_is_refused_unremembered_and_a_known_one_answered() {
        let (ctx, dir) = ctx("cap");
        let now = crate::time::unix_now();
        for i in 0..MAX_COMMAND_IDS {
            let claim = ctx.store.claim_command(
                &record(&format!("c{i}"), CommandState::Successful, now),
                now,
            );
            assert_eq!(claim.unwrap(), Claim::New);
        }
        let mut cmds = Commands::default();
        let mut c = cmd(Action::Refresh);
        c.id = "one-too-many".into();
        c.expires_at = now + 60;
        cmds.on_command(&ctx, c, &NoModems).await.unwrap();
        assert_eq!(ctx.store.get_command("one-too-many").unwrap(), None);
        // A repeat of a remembered id is still answered from its record (not refused).
        let mut known = cmd(Action::Refresh);
        known.id = "c7".into();
        cmds.on_command(&ctx, known, &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_command("c7").unwrap().unwrap().state,
            CommandState::Successful
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }
}
