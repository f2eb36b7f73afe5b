//! The platform's `esim_download` (MQTT.md, "eSIM download"), and a `swap` with
//! `download`: a profile from an SM-DP+ onto the eUICC of a modem's SIM (the LPA of
//! src/rsp/download.rs, its APDUs through the modem's supervisor: +CGLA or +CSIM), then
//! with `enable` the guided swap to the new profile (src/daemon/swap.rs: act = the
//! profile switch, detect, verify registration and data, commit or roll back).
//!
//! Exactly once like every command (src/daemon/commands.rs claims the id first). What
//! makes it exactly once across a kill -9 is the download's own record
//! (store::downloads), written before the download and again, with the transaction and
//! the offered profile, before the bound package loads: at the next start the card is
//! asked before anything is reported (`recover`) — the profile landed: reported
//! installed; it did not: reported `interrupted`. Nothing is downloaded again for the
//! same id; a redelivery is answered from the command's record.
//!
//! The matching ID and the confirmation code (SGP.22 §4.1) live in memory only, for
//! the command's life: the record holds the SM-DP+ address, the transaction and the
//! ICCID offered, and every text that leaves here (events, the outcome's reason, logs)
//! goes through [`Scrub`] first, since an SM-DP+'s refusal may quote what it was sent.

use super::work::{attached, Done, ModemPorts};
use super::{Ctx, DaemonError, Event};
use crate::card::es10b::{DeviceInfo, Preview};
use crate::card::esim;
use crate::contract::{DownloadRequest, DownloadStep, EventKind, RefusalCode, SwapTarget};
use crate::modem::supervisor::ModemHandle;
use crate::rsp::activation::Secret;
use crate::rsp::download::{self, Observer, Order, Step};
use crate::rsp::es9::Https;
use crate::store::downloads::DownloadRecord;
use crate::store::Store;
use std::time::Duration;

/// How a download's work ended, for the loop (`Event::DownloadDone`).
#[derive(Debug)]
pub(crate) struct Finished {
    /// The profile on the eUICC now (installed, or found landed by a reconcile).
    pub(crate) installed: Option<String>,
    /// The command's outcome when nothing follows; `Ok` with `enable` asked: the swap
    /// to `installed` follows.
    pub(crate) result: Done,
    /// The swap to the new profile follows (`enable`), rolling back unless `keep`.
    pub(crate) enable: Option<Enable>,
}

#[derive(Debug)]
pub(crate) struct Enable {
    /// Keep the new profile enabled when it fails to verify (`rollback_on_failure:
    /// false`).
    keep: bool,
}

/// Replaces the command's secrets in any text before it leaves (an SM-DP+'s
/// refusal may quote the matching ID it was sent).
#[derive(Debug, Clone)]
struct Scrub(Vec<Secret>);

impl Scrub {
    fn of(req: &DownloadRequest) -> Scrub {
        let mut v = vec![req.activation.matching_id.clone()];
        v.extend(req.confirmation_code.clone());
        v.retain(|s| !s.is_empty());
        Scrub(v)
    }

    fn text(&self, s: &str) -> String {
        self.0.iter().fold(s.to_string(), |acc, secret| {
            acc.replace(secret.expose(), "…")
        })
    }
}

/// Step events for the platform and the page: each step once, `installing` at most at
/// each quarter of the package (no event per segment: a gateway pays per byte).
struct Told {
    /// The one way events leave (src/agent/recorder.rs): the platform and the page.
    recorder: crate::agent::Recorder,
    store: Store,
    rec: DownloadRecord,
    scrub: Scrub,
    /// The last quarter of the package an `installing` event was sent for.
    quarter: u32,
}

impl Told {
    fn new(ctx: &Ctx, rec: DownloadRecord, scrub: Scrub) -> Told {
        Told {
            recorder: ctx.rec.clone(),
            store: ctx.store.clone(),
            rec,
            scrub,
            quarter: 0,
        }
    }

    fn event(
        &self,
        step: DownloadStep,
        profile: Option<&str>,
        of: Option<(u32, u32)>,
        detail: &str,
    ) {
        let detail = self.scrub.text(detail);
        tracing::info!(id = %self.rec.id, %step, profile, %detail, "eSIM download step");
        let ev = EventKind::EsimDownloadStep {
            id: self.rec.id.clone(),
            iccid: self.rec.iccid.clone(),
            step,
            profile: profile.map(str::to_string),
            done: of.map(|o| o.0),
            of: of.map(|o| o.1),
            detail,
        };
        if let Err(e) = self.recorder.event(ev) {
            tracing::warn!(id = %self.rec.id, error = %e, "eSIM download step not queued");
        }
    }
}

impl Observer for Told {
    fn step(&mut self, step: &Step) {
        match step {
            Step::Challenge { smdp } => self.event(
                DownloadStep::Challenge,
                None,
                None,
                &format!("eUICC challenge read; asking SM-DP+ {smdp}"),
            ),
            Step::ServerAuthenticated { transaction_id } => {
                self.rec.transaction_id = Some(transaction_id.clone());
                self.event(
                    DownloadStep::Authenticated,
                    None,
                    None,
                    &format!("SM-DP+ authenticated by the eUICC (transaction {transaction_id})"),
                )
            }
            Step::Preview { profile, .. } => {
                self.rec.offered = Some(profile.iccid.clone());
                self.event(
                    DownloadStep::Preview,
                    Some(&profile.iccid),
                    None,
                    &preview_words(profile),
                )
            }
            Step::Confirmed => {}
            Step::Package { segments, bytes } => {
                // Before the first segment loads: from here a kill can leave the
                // profile landed or not, which only the card can tell (`recover`).
                if let Err(e) = self.store.put_download(&self.rec) {
                    tracing::error!(id = %self.rec.id, error = %e, "download record not stored: a kill now would be reported interrupted without a reconcile");
                }
                self.event(
                    DownloadStep::Package,
                    self.rec.offered.clone().as_deref(),
                    Some((0, *segments as u32)),
                    &format!("bound profile package: {bytes} bytes in {segments} segments"),
                )
            }
            Step::Installing { done, of } => {
                let q = (done * 4 / (*of).max(1)) as u32;
                if q > self.quarter && *done < *of {
                    self.quarter = q;
                    self.event(
                        DownloadStep::Installing,
                        self.rec.offered.clone().as_deref(),
                        Some((*done as u32, *of as u32)),
                        &format!("{done} of {of} segments loaded"),
                    )
                }
            }
            Step::Installed { iccid, aid } => self.event(
                DownloadStep::Installed,
                Some(iccid),
                None,
                &format!("profile {iccid} installed (ISD-P {aid})"),
            ),
            Step::NotificationSent { seq } => self.event(
                DownloadStep::Notification,
                self.rec.offered.clone().as_deref(),
                None,
                &format!("installation result {seq} delivered to the SM-DP+"),
            ),
            Step::NotificationPending { seq, why } => self.event(
                DownloadStep::Notification,
                self.rec.offered.clone().as_deref(),
                None,
                &format!("installation result {seq} stays on the eUICC: {why}"),
            ),
        }
    }

    /// The platform asked for this download: the preview is told (event), not asked.
    fn confirm(&mut self, _: &Preview) -> bool {
        true
    }
}

fn preview_words(p: &Preview) -> String {
    format!(
        "profile offered: {} of {} ({})",
        p.name,
        p.provider,
        p.class.word()
    )
}

/// Whether `id` is a download this module finishes (its record is in the store): the
/// generic start-up recovery leaves it to [`recover`].
pub(crate) fn owns(store: &Store, id: &str) -> Result<bool, DaemonError> {
    Ok(store.get_download(id)?.is_some())
}

/// Start the download of command `id` on the eUICC of SIM `iccid` in the modem of
/// `port`: its record stored, then the work on a task of its own, which ends with
/// `Event::DownloadDone`. `Ok(Err(refusal))`: nothing was started.
pub(crate) fn start(
    ctx: &Ctx,
    id: &str,
    iccid: &str,
    port: &str,
    req: DownloadRequest,
    handle: ModemHandle,
) -> Result<Result<(), (RefusalCode, String)>, DaemonError> {
    if let Some(other) = ctx.store.downloads()?.into_iter().find(|d| d.port == port) {
        return Ok(Err((
            RefusalCode::Unavailable,
            format!("download {} is under way on {port}", other.id),
        )));
    }
    if let Some(other) = ctx.store.swap_on_port(port)? {
        return Ok(Err((
            RefusalCode::Unavailable,
            format!("swap {} is under way on {port}", other.id),
        )));
    }
    // SGP.22 §2.6.2: the SM-DP+ is trusted through the GSMA CI only ([esim] ci_dir).
    let tls = match crate::rsp::tls::client_config(&ctx.esim.ci_dir) {
        Ok(t) => t,
        Err(e) => return Ok(Err((RefusalCode::Unavailable, format!("esim.ci_dir: {e}")))),
    };
    let rec = DownloadRecord {
        id: id.to_string(),
        iccid: iccid.to_string(),
        port: port.to_string(),
        smdp: req.activation.smdp.clone(),
        transaction_id: None,
        offered: None,
        enable: req.enable,
        started_at: crate::time::unix_now(),
    };
    ctx.store.put_download(&rec)?;
    let scrub = Scrub::of(&req);
    let told = Told::new(ctx, rec, scrub.clone());
    let events = ctx.events.clone();
    let timeout = Duration::from_secs(ctx.esim.smdp_timeout_secs.max(1));
    let id = id.to_string();
    tokio::spawn(async move {
        let finished = run(handle, req, tls, timeout, told, &scrub).await;
        let _ = events.send(Event::DownloadDone { id, finished }).await;
    });
    Ok(Ok(()))
}

/// What the job on the card thread hands back.
type CardResult = (
    Result<download::Downloaded, Box<download::Failure>>,
    Option<Result<(), String>>,
);

async fn run(
    handle: ModemHandle,
    req: DownloadRequest,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
    mut told: Told,
    scrub: &Scrub,
) -> Finished {
    let failed = |code, why: String| Finished {
        installed: None,
        result: Err((code, scrub.text(&why))),
        enable: None,
    };
    // The modem's IMEI for the SM-DP+ (SGP.22 DeviceInfo); a supervisor still attaching
    // (simgate just started) is waited for.
    let imei = match attached(|| handle.status()).await {
        Ok(info) => info.imei.clone(),
        Err(e) => return failed(RefusalCode::Unavailable, format!("the modem: {e}")),
    };
    let order = Order {
        smdp: req.activation.smdp.clone(),
        matching_id: req.activation.matching_id.clone(),
        confirmation_code: req.confirmation_code.clone(),
        device: DeviceInfo::from_imei(imei.as_deref()),
        deliver_notification: true,
    };
    let nickname = req.nickname.clone();
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel::<CardResult>();
    let job = crate::modem::supervisor::IsdrJob(Box::new(move |isdr| {
        let mut server = match Https::new(&order.smdp, tls, rt, timeout) {
            Ok(s) => s,
            Err(e) => {
                let failure = download::Failure {
                    error: download::DownloadError::Install(format!(
                        "the activation code's SM-DP+ address: {e}"
                    )),
                    at: "initiateAuthentication",
                    transaction_id: None,
                    preview: None,
                    reconciled: Default::default(),
                };
                let _ = tx.send((Err(Box::new(failure)), None));
                return;
            }
        };
        let r = download::download(isdr, &mut server, &order, &mut told);
        if let Err(f) = &r {
            let landed = f.landed().map(|p| p.iccid.clone());
            told.event(
                DownloadStep::Failed,
                landed
                    .as_deref()
                    .or(f.preview.as_ref().map(|p| p.iccid.as_str())),
                None,
                &format!("{f}{}", reconciled_words(&f.reconciled)),
            );
        }
        let nick = match (&r, nickname) {
            (Ok(d), Some(n)) => Some(
                crate::card::Iccid::from_digits(&d.iccid)
                    .map_err(|e| e.to_string())
                    .and_then(|iccid| {
                        esim::apply_on(isdr, &esim::Action::Nickname { iccid, nickname: n })
                            .map(|_| ())
                            .map_err(|e| e.to_string())
                    }),
            ),
            _ => None,
        };
        let _ = tx.send((r, nick));
    }));
    match handle.on_isdr(job).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => return failed(RefusalCode::NotApplicable, why),
        Err(e) => return failed(RefusalCode::Unavailable, format!("the modem: {e}")),
    }
    let Ok((result, nick)) = rx.await else {
        return failed(
            RefusalCode::Failed,
            "the download's card work ended without a result".into(),
        );
    };
    match result {
        Ok(d) => {
            if let Some(why) = &d.reconciled_after {
                tracing::warn!(iccid = %d.iccid, why = %scrub.text(why), "the exchange failed at its end, but the profile is installed");
            }
            match nick {
                Some(Err(e)) => Finished {
                    installed: Some(d.iccid.clone()),
                    result: Err((
                        RefusalCode::Failed,
                        format!(
                            "profile {} installed, but its nickname was not set: {e}",
                            d.iccid
                        ),
                    )),
                    enable: None,
                },
                _ => Finished {
                    installed: Some(d.iccid),
                    result: Ok(None),
                    enable: req.enable.then_some(Enable {
                        keep: !req.rollback_on_failure,
                    }),
                },
            }
        }
        Err(f) => {
            let landed = f.landed().map(|p| p.iccid.clone());
            let code = if f.error.is_request_error() {
                RefusalCode::InvalidField
            } else {
                RefusalCode::Failed
            };
            Finished {
                installed: landed,
                result: Err((code, scrub.text(&f.to_string()))),
                enable: None,
            }
        }
    }
}

/// What a reconcile found, in words, for the `failed` step.
fn reconciled_words(r: &download::Reconciled) -> String {
    let mut parts = Vec::new();
    if let Some(c) = &r.card_cancel {
        parts.push(format!("eUICC session {c}"));
    }
    if let Some(c) = &r.server_cancel {
        parts.push(format!("SM-DP+ session {c}"));
    }
    match &r.profiles {
        Some(l) => parts.push(format!("{} profiles listed again", l.len())),
        None => parts.push("the eUICC could not be listed again".into()),
    }
    format!("; {}", parts.join(", "))
}

/// The loop's side of a download's end: the installed profile noted in the command's
/// record (its status names it, also when a later step fails), then either the swap to
/// it (`enable`) under the same command id — `None`: the swap finishes the command — or
/// the command's outcome, for the loop to finish it with. The download's record goes
/// once the swap's is stored (a kill in between finds both: the swap's recovery wins,
/// see `recover`).
pub(crate) fn done(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    id: &str,
    finished: Finished,
) -> Result<Option<Done>, DaemonError> {
    let rec = ctx.store.get_download(id)?;
    if let (Some(iccid), Some(mut cmd)) = (&finished.installed, ctx.store.get_command(id)?) {
        cmd.profile = Some(iccid.clone());
        ctx.store.put_command(&cmd)?;
    }
    let mut result = finished.result;
    if let (Ok(_), Some(enable), Some(new), Some(rec)) =
        (&result, &finished.enable, &finished.installed, &rec)
    {
        let old = ctx.store.get_observed(&rec.iccid)?;
        let port = super::work::Port::of(modems, &rec.port);
        result = match (old, port.handle.is_some()) {
            (Some(old), true) => {
                let target = SwapTarget::ToProfile(new.clone());
                match super::swap::start_with(ctx, id, &old, target, port, enable.keep)? {
                    Ok(()) => {
                        ctx.store.remove_download(id)?;
                        return Ok(None);
                    }
                    Err((code, why)) => {
                        Err((code, format!("profile {new} installed, not enabled: {why}")))
                    }
                }
            }
            _ => Err((
                RefusalCode::Unavailable,
                format!(
                    "profile {new} installed, not enabled: the modem at {} is no longer supervised",
                    rec.port
                ),
            )),
        };
    }
    ctx.store.remove_download(id)?;
    Ok(Some(result))
}

/// At start-up, after the modem supervisors started: each download a previous run left
/// under way is reconciled with its eUICC (SGP.22 §3.1.3: the session cancelled on the
/// card and, when the card signs that, on the SM-DP+; the profiles listed), and its
/// command finished from what the card says. Returns the ids now running again.
pub(crate) fn recover(ctx: &Ctx, modems: &dyn ModemPorts) -> Result<Vec<String>, DaemonError> {
    let mut ids = Vec::new();
    for rec in ctx.store.downloads()? {
        let cmd = ctx.store.get_command(&rec.id)?;
        // Killed after the outcome was stored, or after the swap took over: nothing
        // of the download's is left to settle.
        if cmd.as_ref().is_none_or(|c| c.state.is_final()) || ctx.store.get_swap(&rec.id)?.is_some()
        {
            ctx.store.remove_download(&rec.id)?;
            continue;
        }
        tracing::warn!(id = %rec.id, port = %rec.port, transaction = rec.transaction_id.as_deref(), "profile download left unfinished by the last run: reconciling with the eUICC");
        ids.push(rec.id.clone());
        let told = Told::new(ctx, rec.clone(), Scrub(Vec::new()));
        let events = ctx.events.clone();
        let handle = modems.handle(&rec.port);
        let tls = crate::rsp::tls::client_config(&ctx.esim.ci_dir).ok();
        let timeout = Duration::from_secs(ctx.esim.smdp_timeout_secs.max(1));
        tokio::spawn(async move {
            let finished = reconcile(handle, rec, tls, timeout, told).await;
            let _ = events
                .send(Event::DownloadDone {
                    id: finished.0,
                    finished: finished.1,
                })
                .await;
        });
    }
    Ok(ids)
}

const INTERRUPTED: &str = "simgate restarted during the download";

async fn reconcile(
    handle: Option<ModemHandle>,
    rec: DownloadRecord,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    timeout: Duration,
    told: Told,
) -> (String, Finished) {
    let id = rec.id.clone();
    let interrupted = |why: String| Finished {
        installed: None,
        result: Err((RefusalCode::Interrupted, format!("{INTERRUPTED}: {why}"))),
        enable: None,
    };
    let (Some(tid), Some(offered)) = (rec.transaction_id.clone(), rec.offered.clone()) else {
        // Before the package: no profile can have landed, and it was not repeated.
        told.event(
            DownloadStep::Reconciled,
            None,
            None,
            "interrupted before the profile package loaded: nothing installed",
        );
        return (
            id,
            interrupted(
                "before the profile package loaded; nothing installed, not repeated".into(),
            ),
        );
    };
    let Some(handle) = handle else {
        return (
            id,
            interrupted(format!(
                "{} is no longer supervised: whether profile {offered} landed is unknown",
                rec.port
            )),
        );
    };
    let Ok(tid_bytes) = hex::decode(&tid) else {
        return (
            id,
            interrupted(format!("its transaction id {tid} is not hex")),
        );
    };
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let smdp = rec.smdp.clone();
    let want = offered.clone();
    let job = crate::modem::supervisor::IsdrJob(Box::new(move |isdr| {
        let mut server = tls.and_then(|t| Https::new(&smdp, t, rt, timeout).ok());
        let r = download::reconcile_interrupted(
            isdr,
            server.as_mut().map(|s| s as &mut dyn crate::rsp::es9::Es9),
            &tid_bytes,
            &want,
        );
        let _ = tx.send(r);
    }));
    // Right after a start the supervisor is still attaching: waited for, so the job
    // (which runs at most once) is handed to an attached modem.
    let asked = match attached(|| handle.status()).await {
        Ok(_) => handle.on_isdr(job).await,
        Err(e) => Err(e),
    };
    let found = match asked {
        Ok(Ok(())) => rx.await.ok(),
        _ => None,
    };
    let Some(found) = found else {
        return (
            id,
            interrupted(format!(
                "the eUICC could not be asked whether profile {offered} landed ({})",
                match asked {
                    Ok(Err(why)) => why,
                    Err(e) => e.to_string(),
                    Ok(Ok(())) => "no answer".into(),
                }
            )),
        );
    };
    let said = format!(
        "transaction {tid}: profile {offered} {}{}",
        if found.landed {
            "is on the eUICC"
        } else {
            "is not on the eUICC"
        },
        reconciled_words(&found.reconciled)
    );
    told.event(DownloadStep::Reconciled, Some(&offered), None, &said);
    let finished = match (found.landed, rec.enable) {
        (true, false) => Finished {
            installed: Some(offered),
            result: Ok(None),
            enable: None,
        },
        (true, true) => Finished {
            installed: Some(offered.clone()),
            result: Err((
                RefusalCode::Interrupted,
                format!("{INTERRUPTED}: profile {offered} landed (found by listing), but was not enabled; not repeated"),
            )),
            enable: None,
        },
        (false, _) => interrupted(format!(
            "profile {offered} is not on the eUICC (listed again); not repeated"
        )),
    };
    (id, finished)
}
