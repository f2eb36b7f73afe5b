//! Doing a command: one function per [`Plan`] variant. Each either finishes at once
//! (`Step::Finished`) or hands its work to a task or a thread (`Step::Running`) that
//! ends with `Event::CommandDone` (src/daemon/work.rs `spawn`, `reread`). Every card
//! read goes through `reader::spawn_read`, with the card time-out; every data-session
//! action through `work::act_on_modem`; every event through the Recorder.

use super::super::refill::{self, Asked};
use super::super::work::{self, Done, Failure, ModemPorts, Port};
use super::super::{esim_download, rules, swap, Ctx, DaemonError};
use super::plan::Plan;
use super::Step;
use crate::agent::Recorder;
use crate::card::esim;
use crate::contract::{Command, EventKind, RefusalCode, SwapTarget};
use crate::modem::actions::Action as ModemAction;
use crate::modem::supervisor::ModemHandle;
use crate::reader::ReaderError;
use crate::sim::{Observed, PinRequest, PlatformRecord};
use crate::store::commands::CommandRecord;

/// Run `plan` for `cmd` (claimed, stored `executing`).
pub(super) fn execute(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    plan: Plan,
    rec: &mut CommandRecord,
) -> Result<Step, DaemonError> {
    let id = cmd.id.clone();
    match plan {
        Plan::Sync => sync(ctx, rec),
        Plan::SetRecord(r) => {
            set_record(ctx, &cmd.iccid, r)?;
            Ok(Step::Finished(Ok(())))
        }
        Plan::Refill { refill, port } => apply_refill(ctx, modems, cmd, &refill, port),
        Plan::EvaluateRules => {
            rules::evaluate(ctx, modems, &cmd.iccid, None)?;
            Ok(Step::Finished(Ok(())))
        }
        Plan::RequestRefill { amount_mb } => request_refill(ctx, cmd, amount_mb),
        Plan::ReadCard { reader } => Ok(read_card(ctx, id, reader, cmd.iccid.clone())),
        Plan::ModemAct { port, action } => modem_act(ctx, modems, cmd, &port, action),
        Plan::ModemReread { port } => Ok(modem_reread(ctx, modems, cmd, &port)),
        Plan::Esim { reader, work } => Ok(reader_esim(ctx, id, reader, work, &cmd.iccid)),
        Plan::ModemEsim { port, work } => Ok(modem_esim(ctx, modems, cmd, &port, work)),
        Plan::EsimDownload { port, req } => start_download(ctx, modems, cmd, &port, *req),
        Plan::Swap { port, target } => start_swap(ctx, modems, cmd, &port, target),
        Plan::ReaderPin { reader, req } => Ok(reader_pin(ctx, id, reader, &cmd.iccid, req)),
        Plan::ModemPin { port, req } => Ok(modem_pin(ctx, modems, cmd, &port, req)),
        Plan::ModemMessage { port, message } => {
            Ok(super::messaging::execute(ctx, modems, cmd, &port, message))
        }
        Plan::Refuse(why) => Ok(Step::Finished(Err(why))),
    }
}

/// `sync` (MQTT.md, "Sync"): every row queued again behind the `executing` status,
/// then the `successful` status with the count — the end marker, after every row in
/// the outbox's order.
fn sync(ctx: &Ctx, rec: &mut CommandRecord) -> Result<Step, DaemonError> {
    rec.rows = Some(match &ctx.link {
        Some(link) => link.sync_rows()?,
        None => 0,
    });
    Ok(Step::Finished(Ok(())))
}

/// Cache a platform record and republish the SIM's row when it changed. A record
/// with new data or days left is the new base of the local estimate.
pub(super) fn set_record(ctx: &Ctx, iccid: &str, rec: PlatformRecord) -> Result<(), DaemonError> {
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

/// A refill applied once per request id; a rule's suspension lifted on the SIM's
/// modem, verified like a resume command.
fn apply_refill(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    r: &crate::contract::Refill,
    port: Option<String>,
) -> Result<Step, DaemonError> {
    let lift = refill::apply(ctx, &cmd.id, &cmd.iccid, r)?;
    match port {
        Some(port) if lift => {
            let resume = refill::resume(
                Port::of(modems, &port),
                ctx.store.clone(),
                cmd.iccid.clone(),
            );
            work::spawn(&ctx.events, cmd.id.clone(), resume);
            Ok(Step::Running)
        }
        _ => Ok(Step::Finished(Ok(()))),
    }
}

/// A person's top-up request, within the auto-refill caps.
fn request_refill(ctx: &Ctx, cmd: &Command, amount_mb: Option<f64>) -> Result<Step, DaemonError> {
    Ok(Step::Finished(
        match refill::request(&ctx.rec, &cmd.iccid, &cmd.id, amount_mb, None)? {
            Asked::Requested => Ok(()),
            Asked::Capped(why) => Err((RefusalCode::Failed, format!("not requested: {why}"))),
        },
    ))
}

/// `refresh` of a card in a reader: read again (with the card time-out), the same SIM
/// expected there.
fn read_card(ctx: &Ctx, id: String, reader: String, want: String) -> Step {
    work::reread(&ctx.events, id, reader, ctx.read_settings, move |read| {
        let fail = |e: String| (RefusalCode::Failed, format!("re-read failed: {e}"));
        match read {
            Ok(obs) if obs.iccid == want => Ok(Some(obs)),
            Ok(obs) => Err(fail(format!(
                "the reader now holds another SIM ({})",
                obs.iccid
            ))),
            Err(e) => Err(fail(e.to_string())),
        }
    });
    Step::Running
}

/// Suspend or resume by the modem engine, verified (read back).
fn modem_act(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    action: ModemAction,
) -> Result<Step, DaemonError> {
    let port = Port::of(modems, port);
    if port.handle.is_none() {
        return Ok(Step::Finished(Err(work::no_engine(&port.port))));
    }
    // The platform's own suspend or resume takes over from a rule's: a later refill
    // must not resume a SIM the platform suspended.
    if work::touches_session(action) {
        ctx.store.set_rule_hold(&cmd.iccid, None)?;
    }
    let (id, iccid, store) = (cmd.id.clone(), cmd.iccid.clone(), ctx.store.clone());
    work::spawn(&ctx.events, cmd.id.clone(), async move {
        let outcome = work::act_on_modem(&port, action).await?;
        tracing::info!(%id, verified = %outcome.verified, "modem action done");
        // Who holds the session down, for the row's `suspended_by` (MQTT.md, "SIM
        // state"): this command, from now; a resume lifts it.
        let by = (action == ModemAction::SuspendData).then(|| crate::contract::SuspendedBy {
            command: Some(id.clone()),
            rule: None,
            since: Some(crate::time::unix_now()),
        });
        if work::touches_session(action) {
            store
                .set_suspended_by(&iccid, by.as_ref())
                .map_err(|e| (RefusalCode::Failed, format!("done, but not stored: {e}")))?;
        }
        Ok(session_reread(&port, &iccid).await)
    });
    Ok(Step::Running)
}

/// The SIM's state read again after a data-session action (the modem's one status
/// line), so the row recorded before the command is `successful` says what it did (no
/// `in_session: yes` left from before a suspend). None when the modem cannot tell now:
/// the supervisor's next poll then does, and the row as stored is published.
async fn session_reread(port: &Port, iccid: &str) -> Option<crate::sim::Observed> {
    let handle = port.handle.as_ref()?;
    match work::attached(|| handle.status()).await {
        Ok(info) => crate::observe::from_modem(&info, crate::time::unix_now())
            .filter(|obs| obs.iccid == iccid),
        Err(e) => {
            tracing::debug!(port = %port.port, error = %e, "no status after the action; the next poll tells");
            None
        }
    }
}

/// `refresh` of a SIM in a modem: its supervisor reads it again now.
fn modem_reread(ctx: &Ctx, modems: &dyn ModemPorts, cmd: &Command, port: &str) -> Step {
    let Some(handle) = modems.handle(port) else {
        return Step::Finished(Err(work::no_engine(port)));
    };
    let want = cmd.iccid.clone();
    work::spawn(&ctx.events, cmd.id.clone(), async move {
        let info = handle
            .refresh()
            .await
            .map_err(|e| (RefusalCode::Unavailable, format!("re-read failed: {e}")))?;
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
    });
    Step::Running
}

/// An eSIM operation on the card in `reader` (a PC/SC transaction, the card reset after
/// a verified switch so the new profile takes over), then the card read again with its
/// profile list: the row to record, whose ICCID is the enabled profile's — another one
/// after a switch, which the recorder reports as the swap it is (old → new, same reader).
fn reader_esim(ctx: &Ctx, id: String, reader: String, work: esim::Work, iccid: &str) -> Step {
    let (recorder, key, settings) = (ctx.rec.clone(), iccid.to_string(), ctx.read_settings);
    let switches = matches!(
        work,
        esim::Work::Apply(esim::Action::Enable { .. } | esim::Action::Disable { .. })
    );
    // An operation is several exchanges: four times one read's card time-out.
    let timeout = settings.card_timeout.saturating_mul(4);
    let name = reader.clone();
    let op = move || {
        let outcome = crate::reader::with_card(&c_name(&name)?, timeout, move |t| {
            let r = esim::Isdr::select_basic(t, crate::card::euicc::shipped_aids())
                .and_then(|i| esim::with_isdr(i, |i| esim::work_on(i, &work)).map(|(d, _, _)| d));
            let reset = switches && r.is_ok();
            (r, reset)
        })
        .map_err(|e| (RefusalCode::Failed, e.to_string()))?;
        match outcome {
            Ok(d) => {
                tracing::info!(reader = %name, apdus = d.apdus, pending = d.pending.len(), "eSIM operation verified");
                hand_over(&recorder, &key, &d);
                Ok(())
            }
            Err(e @ esim::EsimError::NoIsdr(_)) => Err((RefusalCode::NotApplicable, e.to_string())),
            Err(e) => Err((RefusalCode::Failed, e.to_string())),
        }
    };
    work::card_work_then_reread(&ctx.events, id, reader, settings, op, |read| {
        reread_after("the card could not be read again", read)
    });
    Step::Running
}

/// A reader's PC/SC name as the C string PC/SC takes.
fn c_name(reader: &str) -> Result<std::ffi::CString, Failure> {
    std::ffi::CString::new(reader).map_err(|_| {
        (
            RefusalCode::Failed,
            format!("reader name {reader:?} is not a C string"),
        )
    })
}

/// The row of a card read again after an operation that was done.
fn reread_after(what: &str, read: Result<Observed, ReaderError>) -> Done {
    read.map(Some)
        .map_err(|e| (RefusalCode::Failed, format!("done, but {what}: {e}")))
}

/// Hand the eUICC's pending notifications to the platform, each an event through the
/// outbox (durable, numbered); removed from the card only on the platform's
/// `esim_notification_ack`. Those that could not be retrieved are said in an `error`
/// event beside the command's outcome, which follows what the card did (MQTT.md).
fn hand_over(recorder: &Recorder, iccid: &str, done: &esim::WorkDone) {
    if let Some(problem) = &done.notification_problem {
        tracing::warn!(%iccid, %problem, "eSIM operation done; its notifications not all retrieved");
        let ev = EventKind::Error {
            iccid: Some(iccid.to_string()),
            code: RefusalCode::Failed,
            reason: format!("eSIM notifications: {problem}"),
        };
        if let Err(e) = recorder.event(ev) {
            tracing::warn!(error = %e, "eSIM notification problem not queued");
        }
    }
    for n in &done.pending {
        let ev = EventKind::EsimNotification {
            iccid: iccid.to_string(),
            number: n.meta.seq,
            operation: n.meta.event.word().to_string(),
            profile: n.meta.iccid.clone(),
            address: n.meta.address.clone(),
            notification: hex::encode_upper(&n.der),
        };
        if let Err(e) = recorder.event(ev) {
            tracing::warn!(error = %e, seq = n.meta.seq, "eSIM notification not queued");
        }
    }
}

/// How long a new profile may take to register after a switch through a modem.
const ESIM_REGISTER: std::time::Duration = std::time::Duration::from_secs(60);

/// An eSIM operation through a modem's supervisor.
fn modem_esim(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    work: esim::Work,
) -> Step {
    let Some(handle) = modems.handle(port) else {
        return Step::Finished(Err(work::no_engine(port)));
    };
    let (recorder, key) = (ctx.rec.clone(), cmd.iccid.clone());
    work::spawn(&ctx.events, cmd.id.clone(), async move {
        esim_through_modem(&handle, work, &recorder, &key).await
    });
    Step::Running
}

/// After a switch, the new profile's registration awaited (the supervisor has already
/// reported the SIM change, which the loop records as a swap before this result).
async fn esim_through_modem(
    handle: &ModemHandle,
    work: esim::Work,
    recorder: &Recorder,
    key: &str,
) -> Done {
    let switches = matches!(work, esim::Work::Apply(esim::Action::Enable { .. }));
    match handle.esim(work).await {
        Ok(Ok(done)) => hand_over(recorder, key, &done),
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

/// A guided SIM swap: prepared here (its record stored), run on a task of its own.
fn start_swap(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    target: SwapTarget,
) -> Result<Step, DaemonError> {
    let port = Port::of(modems, port);
    let (Some(_), Some(old)) = (&port.handle, ctx.store.get_observed(&cmd.iccid)?) else {
        return Ok(Step::Finished(Err(work::no_engine(&port.port))));
    };
    Ok(match swap::start(ctx, &cmd.id, &old, target, port)? {
        Ok(()) => Step::Running,
        Err(refusal) => Step::Finished(Err(refusal)),
    })
}

/// A profile download (src/daemon/esim_download.rs): its record stored, its work on a
/// task ending with `Event::DownloadDone`.
fn start_download(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    req: crate::contract::DownloadRequest,
) -> Result<Step, DaemonError> {
    let Some(handle) = modems.handle(port) else {
        return Ok(Step::Finished(Err(work::no_engine(port))));
    };
    Ok(
        match esim_download::start(ctx, &cmd.id, &cmd.iccid, port, req, handle)? {
            Ok(()) => Step::Running,
            Err(refusal) => Step::Finished(Err(refusal)),
        },
    )
}

/// A PIN operation's failure as the command's outcome: the last attempt kept is said
/// by its own code, so a platform can ask again with `force`.
pub(crate) fn pin_refusal(f: &crate::card::pin::PinFailure) -> Failure {
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

/// A PIN operation on the card in `reader`, then the card read again for its row.
fn reader_pin(ctx: &Ctx, id: String, reader: String, want: &str, req: PinRequest) -> Step {
    let settings = ctx.read_settings;
    let (name, iccid) = (reader.clone(), want.to_string());
    let op = move || {
        let outcome = crate::reader::with_card(
            &c_name(&name)?,
            settings.card_timeout.saturating_mul(2),
            move |t| {
                (
                    crate::card::pin_command::on_card(t, Some(&iccid), &req),
                    false,
                )
            },
        )
        .map_err(|e| (RefusalCode::Failed, e.to_string()))?
        .map_err(|e| (RefusalCode::Failed, e.to_string()))?;
        match outcome {
            (Err(f), _) => Err(pin_refusal(&f)),
            (Ok(_), _) => Ok(()),
        }
    };
    work::card_work_then_reread(&ctx.events, id, reader, settings, op, |read| {
        reread_after("the re-read failed", read)
    });
    Step::Running
}

/// A PIN operation on the SIM in a modem; the supervisor reads the SIM again after and
/// reports its row.
fn modem_pin(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    cmd: &Command,
    port: &str,
    req: PinRequest,
) -> Step {
    let Some(handle) = modems.handle(port) else {
        return Step::Finished(Err(work::no_engine(port)));
    };
    let want = cmd.iccid.clone();
    work::spawn(&ctx.events, cmd.id.clone(), async move {
        match handle.pin(&want, req).await {
            Ok(Ok(())) => Ok(None),
            Ok(Err(f)) => Err(pin_refusal(&f)),
            Err(e) => Err((RefusalCode::Unavailable, e.to_string())),
        }
    });
    Step::Running
}
