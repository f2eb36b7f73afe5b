//! The guided SIM swap (MQTT.md, "Swap"): one durable workflow for a platform `swap`
//! command and for `simgate swap`, which sends one.
//!
//! ```text
//! prepare ──► act ──► detect ──► verify ──► commit
//!    └─────────┴─────────┴──────────┴──────► rollback ──► failed {step, reason}
//! ```
//!
//! - prepare: the old SIM's identity (ICCID, slot) goes into the store (store::swaps),
//!   which makes the rows of both SIMs Pending (`mark`, applied at every recording);
//! - act: the family's slot switch (devices/modems `[slots] select`, verified by its
//!   query), the eUICC's profile switch (ES10c EnableProfile through +CGLA, verified by
//!   listing, then the family's refresh: SGP.22 §3.2.1) or, for a physical
//!   replacement, the technician is asked to replace the SIM;
//! - detect: a new ICCID in the modem, and the expected one when one was given;
//! - verify: the new SIM registers (within `modems.swap_register_secs`) and its data
//!   context comes up (TS 27.007 §10.1.10 +CGACT, within the profile's network timeout),
//!   through `work::act_on_modem` like every resume: on a port ModemManager keeps, the
//!   session is ModemManager's to bring up, so registration is all that is verified;
//! - commit: a `swapped` event old → new, both rows re-published, the old one not
//!   present; or rollback: the old slot (or profile) back, or the technician asked for
//!   the old SIM, verified the same way, and the command failed with the step and the
//!   reason. An `esim_download` with `rollback_on_failure: false` keeps the new profile
//!   enabled instead (`keep_on_failure`), and still fails with the step and reason.
//!
//! The record is stored before each step acts, so a kill -9 anywhere leaves it in the
//! store: at the next start `recover` commits a swap that reached commit and rolls back
//! every other one. Either way the record is removed at the end, so no run leaves both
//! SIMs Pending. Rows are only ever recorded by the daemon loop (`Event::SwapRows`),
//! the one writer of rows, so a row recorded from a modem event and one re-recorded for
//! the swap never race.

use super::work::{act_on_modem, attached, Done, Failure, ModemPorts, Port};
use super::{Ctx, DaemonError, Event};
use crate::agent::Recorder;
use crate::contract::{EventKind, RefusalCode, SwapStep, SwapTarget};
use crate::modem::actions::Action as ModemAction;
use crate::modem::identify::ModemInfo;
use crate::modem::supervisor::ModemHandle;
use crate::sim::{Location, Observed};
use crate::store::swaps::SwapRecord;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Per-step time limits (config `[modems] swap_register_secs`, `swap_replace_secs`).
#[derive(Debug, Clone, Copy)]
pub struct SwapSettings {
    /// verify: how long a SIM may take to register after the change.
    pub register: Duration,
    /// act/detect of a physical swap: how long the technician may take.
    pub replace: Duration,
}

impl Default for SwapSettings {
    fn default() -> Self {
        SwapSettings {
            register: Duration::from_secs(120),
            replace: Duration::from_secs(600),
        }
    }
}

/// How often a waiting step asks the modem again. A registration URC is not something
/// every firmware sends after a SIM change (nor the emulator), so the wait polls one
/// status line a second, bounded by the step's limit.
const POLL: Duration = Duration::from_secs(1);

/// Re-record rows so their Pending follows the swap record (the loop's side of
/// `Event::SwapRows`).
pub(crate) async fn rerecord(ctx: &Ctx, iccids: &[String]) -> Result<(), DaemonError> {
    for i in iccids {
        if let Some(obs) = ctx.store.get_observed(i)? {
            ctx.record(&obs).await?;
        }
    }
    Ok(())
}

/// The loop's side of a swap's end. The loop takes the modem events before the work
/// results (its select is biased), so every SIM change the swap caused was handled —
/// its `swapped` left to the swap — before the record goes here.
pub(crate) async fn ended(ctx: &Ctx, id: &str, rows: &[String]) -> Result<(), DaemonError> {
    ctx.store.remove_swap(id)?;
    rerecord(ctx, rows).await
}

/// prepare, in the loop: store the record (both rows Pending from now), then run the
/// rest on a task of its own; it ends with `Event::CommandDone` for `id`.
pub(crate) fn start(
    ctx: &Ctx,
    id: &str,
    old: &Observed,
    target: SwapTarget,
    port: Port,
) -> Result<Result<(), Failure>, DaemonError> {
    start_with(ctx, id, old, target, port, false)
}

/// [`start`], and whether a failed step keeps the new SIM or profile instead of
/// rolling back (an `esim_download`'s `rollback_on_failure: false`).
pub(crate) fn start_with(
    ctx: &Ctx,
    id: &str,
    old: &Observed,
    target: SwapTarget,
    modem: Port,
    keep_on_failure: bool,
) -> Result<Result<(), Failure>, DaemonError> {
    let Some(handle) = modem.handle.clone() else {
        return Ok(Err(super::work::no_engine(&modem.port)));
    };
    let Location::Modem { port, slot } = &old.location else {
        return Ok(Err((
            RefusalCode::NotApplicable,
            "the SIM is not in a modem".into(),
        )));
    };
    if let Some(other) = ctx.store.swap_on_port(port)? {
        return Ok(Err((
            RefusalCode::Unavailable,
            format!("swap {} is under way on {port}", other.id),
        )));
    }
    let rec = SwapRecord {
        id: id.to_string(),
        port: port.clone(),
        old_iccid: old.iccid.clone(),
        old_slot: *slot,
        target,
        step: SwapStep::Prepare,
        new_iccid: None,
        failed: None,
        started_at: crate::time::unix_now(),
        keep_on_failure,
    };
    ctx.store.put_swap(&rec)?;
    let run = Run::new(ctx, rec, handle, modem);
    run.said(
        SwapStep::Prepare,
        None,
        format!(
            "replacing {} at {}; both rows Pending",
            old.iccid,
            old.location.label()
        ),
    );
    tokio::spawn(async move {
        let _ = run
            .events
            .send(Event::SwapRows(vec![run.rec.old_iccid.clone()]))
            .await;
        run.said(SwapStep::Prepare, Some((true, 0.0)), "recorded".into());
        run.forward().await;
    });
    Ok(Ok(()))
}

/// At start-up, after the modem supervisors started: every swap a previous run left
/// unfinished is committed (it had reached commit) or rolled back. Returns the command
/// ids now running again, for the command book-keeping.
pub(crate) fn recover(ctx: &Ctx, modems: &dyn ModemPorts) -> Result<Vec<String>, DaemonError> {
    let mut ids = Vec::new();
    for rec in ctx.store.swaps()? {
        tracing::warn!(id = %rec.id, step = %rec.step, port = %rec.port, "swap left unfinished by the last run");
        ids.push(rec.id.clone());
        let modem = Port::of(modems, &rec.port);
        let Some(handle) = modem.handle.clone() else {
            // Nothing to drive: end it so the rows are no longer Pending.
            let rows: Vec<String> = rec.pending_iccids().iter().map(|s| s.to_string()).collect();
            let (events, id) = (ctx.events.clone(), rec.id.clone());
            let why = format!(
                "{}: simgate restarted during this step and {} is no longer supervised; nothing was rolled back",
                rec.step, rec.port
            );
            tokio::spawn(async move {
                let _ = events
                    .send(Event::SwapEnded {
                        id,
                        rows,
                        result: Err((RefusalCode::Failed, why)),
                    })
                    .await;
            });
            continue;
        };
        let run = Run::new(ctx, rec, handle, modem);
        tokio::spawn(async move {
            let _ = run
                .events
                .send(Event::SwapRows(
                    run.rec
                        .pending_iccids()
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                ))
                .await;
            if run.rec.step == SwapStep::Commit {
                run.commit().await;
            } else {
                let failed = run.rec.failed.clone().unwrap_or_else(|| {
                    (
                        run.rec.step,
                        "simgate restarted during this step (killed, or a power cut)".into(),
                    )
                });
                run.rollback(failed).await;
            }
        });
    }
    Ok(ids)
}

/// A failed step: which, and why.
type StepError = (SwapStep, String);

/// One swap's run, after prepare.
struct Run {
    /// The store, and the one door to the platform and the station page (which shows
    /// the steps live).
    recorder: Recorder,
    events: mpsc::Sender<Event>,
    /// The supervisor, for what the swap reads (status, the SIM, the eUICC).
    handle: ModemHandle,
    /// The same port as actions see it: slot switches and the data session go through
    /// `act_on_modem` (refused there on a port ModemManager keeps, retried while the
    /// supervisor attaches).
    port: Port,
    settings: SwapSettings,
    rec: SwapRecord,
    /// When the current step began.
    since: Instant,
}

impl Run {
    fn new(ctx: &Ctx, rec: SwapRecord, handle: ModemHandle, port: Port) -> Run {
        Run {
            recorder: ctx.rec.clone(),
            events: ctx.events.clone(),
            handle,
            port,
            settings: ctx.swap,
            rec,
            since: Instant::now(),
        }
    }

    /// A step event for the platform (and the technician's `simgate swap`), and the log.
    fn said(&self, step: SwapStep, end: Option<(bool, f64)>, detail: String) {
        tracing::info!(id = %self.rec.id, %step, ok = end.map(|e| e.0), secs = end.map(|e| e.1), %detail, "swap step");
        let ev = EventKind::SwapStep {
            id: self.rec.id.clone(),
            iccid: self.rec.old_iccid.clone(),
            step,
            ok: end.map(|e| e.0),
            new_iccid: self.rec.new_iccid.clone(),
            detail,
            secs: end.map(|e| (e.1 * 1000.0).round() / 1000.0),
        };
        if let Err(e) = self.recorder.event(ev) {
            tracing::error!(id = %self.rec.id, error = %e, "swap step not queued for the platform");
        }
    }

    /// Enter a step: stored (flushed) before it acts, then said.
    fn enter(&mut self, step: SwapStep, detail: String) -> Result<(), StepError> {
        self.since = Instant::now();
        self.rec.step = step;
        self.recorder
            .store
            .put_swap(&self.rec)
            .map_err(|e| (step, format!("store: {e}")))?;
        self.said(step, None, detail);
        Ok(())
    }

    async fn forward(mut self) {
        match self.steps().await {
            Ok(()) => self.commit().await,
            Err(failed) => self.rollback(failed).await,
        }
    }

    /// act → detect → verify; the first failure ends it.
    async fn steps(&mut self) -> Result<(), StepError> {
        let target = self.rec.target.clone();
        let port = self.rec.port.clone();
        let t = Instant::now();
        match &target {
            SwapTarget::ToSlot(n) => {
                self.enter(SwapStep::Act, format!("switching {port} to SIM slot {n}"))?;
                // The modem's read-back (e.g. "+QDSIM: 1") proves the switch; a person
                // reads the slot in words.
                let read_back = self.switch(*n).await.map_err(|e| (SwapStep::Act, e))?;
                tracing::debug!(id = %self.rec.id, %read_back, "slot switch read back");
                self.said(
                    SwapStep::Act,
                    Some((true, secs(t))),
                    format!("{port} switched to SIM slot {n} (read back)"),
                );
            }
            SwapTarget::ToProfile(iccid) => {
                self.enter(
                    SwapStep::Act,
                    format!("enabling profile {iccid} on the eUICC in {port}"),
                )?;
                self.enable_profile(iccid)
                    .await
                    .map_err(|e| (SwapStep::Act, e))?;
                self.said(
                    SwapStep::Act,
                    Some((true, secs(t))),
                    format!("profile {iccid} enabled (listed again), modem refreshed"),
                );
            }
            SwapTarget::ExpectIccid(want) => {
                self.enter(
                    SwapStep::Act,
                    format!(
                        "replace SIM {} in {port} with SIM {want} now",
                        self.rec.old_iccid
                    ),
                )?;
                self.said(
                    SwapStep::Act,
                    Some((true, secs(t))),
                    "technician asked".into(),
                );
            }
        }

        let t = Instant::now();
        self.enter(SwapStep::Detect, "reading the SIM in the modem".into())?;
        let new = self.detect().await.map_err(|e| (SwapStep::Detect, e))?;
        self.rec.new_iccid = Some(new.clone());
        self.recorder
            .store
            .put_swap(&self.rec)
            .map_err(|e| (SwapStep::Detect, format!("store: {e}")))?;
        let _ = self.events.send(Event::SwapRows(vec![new.clone()])).await;
        self.said(
            SwapStep::Detect,
            Some((true, secs(t))),
            format!("SIM {new} detected"),
        );

        let t = Instant::now();
        let then = match self.port.shared {
            true => "(its data session is ModemManager's)",
            false => "then its data session",
        };
        self.enter(
            SwapStep::Verify,
            format!(
                "waiting up to {} s for SIM {new} to register, {then}",
                self.settings.register.as_secs()
            ),
        )?;
        let done = self.verify(&new).await.map_err(|e| (SwapStep::Verify, e))?;
        self.said(SwapStep::Verify, Some((true, secs(t))), done);
        Ok(())
    }

    /// Switch slot (verified by the family's query); the supervisor reads the SIM again.
    async fn switch(&self, n: u8) -> Result<String, String> {
        act_on_modem(&self.port, ModemAction::SwitchSlot(n))
            .await
            .map(|outcome| outcome.verified)
            .map_err(|(_, why)| why)
    }

    /// Enable an installed profile of the modem's eUICC (SGP.22 §5.7.16 EnableProfile,
    /// verified by listing again; the family's refresh after it), the SIM then read again
    /// by the supervisor.
    async fn enable_profile(&self, iccid: &str) -> Result<(), String> {
        let id = crate::card::Iccid::from_digits(iccid).map_err(|e| e.to_string())?;
        let work = crate::card::esim::Work::Apply(crate::card::esim::Action::Enable {
            iccid: id,
            refresh: false,
        });
        match attached(|| self.handle.esim(work.clone())).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(why)) => Err(why),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The SIM the supervisor sees now (it read it after the switch, or on the hot-plug
    /// URC of a physical replacement).
    async fn detect(&self) -> Result<String, String> {
        let old = &self.rec.old_iccid;
        match &self.rec.target {
            SwapTarget::ToSlot(n) => {
                let info = attached(|| self.handle.status())
                    .await
                    .map_err(|e| e.to_string())?;
                match info.sim.iccid {
                    None => Err(format!("no SIM in slot {n} ({})", info.sim.state)),
                    Some(i) if i == *old => Err(format!("slot {n} holds the same SIM {old}")),
                    Some(i) => Ok(i),
                }
            }
            SwapTarget::ToProfile(want) => {
                let info = attached(|| self.handle.status())
                    .await
                    .map_err(|e| e.to_string())?;
                match info.sim.iccid {
                    Some(i) if i == *want => Ok(i),
                    Some(i) => Err(format!(
                        "the modem reads SIM {i} after the switch, not profile {want}"
                    )),
                    None => Err(format!(
                        "no SIM readable after the switch to profile {want} ({})",
                        info.sim.state
                    )),
                }
            }
            SwapTarget::ExpectIccid(want) => {
                let found = self
                    .wait_sim(self.settings.replace, |i| i.is_some_and(|i| i != old))
                    .await?;
                match found {
                    Some(i) if i == *want => Ok(i),
                    Some(i) => Err(format!("SIM {i} inserted, expected {want}")),
                    None => Err(format!(
                        "no new SIM within {} s",
                        self.settings.replace.as_secs()
                    )),
                }
            }
        }
    }

    /// Wait (bounded) until the modem's SIM satisfies `done`; the last one seen.
    async fn wait_sim(
        &self,
        limit: Duration,
        done: impl Fn(Option<&String>) -> bool,
    ) -> Result<Option<String>, String> {
        let deadline = Instant::now() + limit;
        loop {
            let info = attached(|| self.handle.refresh())
                .await
                .map_err(|e| e.to_string())?;
            if done(info.sim.iccid.as_ref()) || Instant::now() >= deadline {
                return Ok(info.sim.iccid);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Registered within the limit, then the data context up (read back).
    async fn verify(&self, iccid: &str) -> Result<String, String> {
        let deadline = Instant::now() + self.settings.register;
        let reg = loop {
            let info: Box<ModemInfo> = attached(|| self.handle.status())
                .await
                .map_err(|e| e.to_string())?;
            if info.sim.iccid.as_deref() != Some(iccid) {
                return Err(format!(
                    "the modem now holds {} instead of {iccid}",
                    info.sim.iccid.as_deref().unwrap_or("no SIM")
                ));
            }
            let r = info.sim.registration;
            if r.as_ref().is_some_and(|r| r.state.registered()) {
                break r;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "SIM {iccid} did not register within {} s (last: {})",
                    self.settings.register.as_secs(),
                    r.map(|r| format!("{} on {}", r.state, r.domain))
                        .unwrap_or_else(|| "no registration reply".into())
                ));
            }
            tokio::time::sleep(POLL).await;
        };
        let held = self
            .recorder
            .store
            .suspended_iccids()
            .map_err(|e| format!("store: {e}"))?
            .iter()
            .any(|s| s == iccid);
        let reg = reg
            .map(|r| format!("{} on {}", r.state, r.domain))
            .unwrap_or_default();
        if held {
            // A standing suspension (store::holds) stays in force: registered is all.
            return Ok(format!("registered ({reg}); data kept suspended"));
        }
        match act_on_modem(&self.port, ModemAction::ResumeData).await {
            Ok(o) => {
                // One status line more, so the row says the session is up now rather
                // than at the next poll.
                let _ = attached(|| self.handle.status()).await;
                Ok(format!("registered ({reg}), {}", o.verified))
            }
            // A port ModemManager keeps (modems.shared_with_modemmanager): the data
            // session is ModemManager's to bring up on the new SIM, and a +CGACT from
            // here would fight it; registered is all simgate verifies.
            Err((RefusalCode::NotApplicable, _)) if self.port.shared => Ok(format!(
                "registered ({reg}); data session left to ModemManager"
            )),
            Err((RefusalCode::Unavailable, why)) => Err(why),
            Err((_, why)) => Err(format!("registered ({reg}) but no data session: {why}")),
        }
    }

    async fn commit(mut self) {
        let t = Instant::now();
        let new = self.rec.new_iccid.clone().unwrap_or_default();
        if let Err((_, e)) =
            self.enter(SwapStep::Commit, format!("{} -> {new}", self.rec.old_iccid))
        {
            tracing::error!(id = %self.rec.id, error = %e, "swap commit not stored");
        }
        let location = Location::Modem {
            port: self.rec.port.clone(),
            slot: match self.rec.target {
                SwapTarget::ToSlot(n) => Some(n),
                SwapTarget::ExpectIccid(_) | SwapTarget::ToProfile(_) => self.rec.old_slot,
            },
        };
        if let Err(e) = self.recorder.event(EventKind::Swapped {
            iccid: new.clone(),
            replaced: self.rec.old_iccid.clone(),
            location,
        }) {
            tracing::error!(id = %self.rec.id, error = %e, "swapped event not queued");
        }
        self.said(
            SwapStep::Commit,
            Some((true, secs(t))),
            format!("{} retired, {new} in service", self.rec.old_iccid),
        );
        self.end(Ok(None)).await;
    }

    /// Undo what was done, verify the old SIM is back, and fail the command with the
    /// step that failed and why.
    async fn rollback(mut self, (step, why): StepError) {
        // The failed step's end, unless a previous run died in it (nothing to time).
        if self.rec.failed.is_none() {
            self.said(step, Some((false, secs(self.since))), why.clone());
        }
        let t = Instant::now();
        self.rec.failed = Some((step, why.clone()));
        let acted = step.index() >= SwapStep::Act.index();
        let old = self.rec.old_iccid.clone();
        let how = match (&self.rec.target, self.rec.old_slot) {
            (SwapTarget::ToSlot(_), Some(s)) => format!("switching back to slot {s}"),
            (SwapTarget::ToSlot(_), None) => "no slot to switch back to".into(),
            (SwapTarget::ExpectIccid(_), _) => {
                format!("put SIM {old} back in {} now", self.rec.port)
            }
            (SwapTarget::ToProfile(_), _) if self.rec.keep_on_failure => {
                "the new profile stays enabled (rollback_on_failure false)".into()
            }
            (SwapTarget::ToProfile(_), _) => format!("enabling profile {old} again"),
        };
        if let Err((_, e)) = self.enter(SwapStep::Rollback, format!("{step} failed: {why}; {how}"))
        {
            tracing::error!(id = %self.rec.id, error = %e, "swap rollback not stored");
        }
        let back = if self.rec.keep_on_failure {
            Ok("not rolled back, as asked".into())
        } else if acted {
            self.undo().await
        } else {
            Ok("nothing to undo".into())
        };
        let (ok, detail) = match &back {
            Ok(d) => (true, d.clone()),
            Err(e) => (false, e.clone()),
        };
        self.said(SwapStep::Rollback, Some((ok, secs(t))), detail.clone());
        let reason = match back {
            Ok(d) => format!("{step}: {why}; rolled back ({d})"),
            Err(e) => format!("{step}: {why}; rollback failed: {e}"),
        };
        self.end(Err((RefusalCode::Failed, reason))).await;
    }

    /// The old SIM back where it was, registered and its session up.
    async fn undo(&self) -> Result<String, String> {
        let old = &self.rec.old_iccid;
        match (&self.rec.target, self.rec.old_slot) {
            (SwapTarget::ToSlot(_), Some(s)) => {
                self.switch(s).await?;
            }
            (SwapTarget::ToSlot(_), None) => {}
            (SwapTarget::ToProfile(_), _) => {
                // Killed before the switch, or the switch did not take: the old profile
                // is still the enabled one, and enabling it again would be refused.
                let now = attached(|| self.handle.status())
                    .await
                    .map_err(|e| e.to_string())?;
                if now.sim.iccid.as_ref() != Some(old) {
                    self.enable_profile(old).await?;
                }
            }
            (SwapTarget::ExpectIccid(_), _) => {
                let found = self
                    .wait_sim(self.settings.replace, |i| i == Some(old))
                    .await?;
                if found.as_ref() != Some(old) {
                    return Err(format!(
                        "SIM {old} not put back within {} s",
                        self.settings.replace.as_secs()
                    ));
                }
            }
        }
        self.verify(old)
            .await
            .map(|v| format!("SIM {old} back: {v}"))
    }

    /// The loop ends it (`ended`): the record goes, the rows are no longer Pending,
    /// the command gets its outcome.
    async fn end(self, result: Done) {
        let rows = self
            .rec
            .pending_iccids()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let _ = self
            .events
            .send(Event::SwapEnded {
                id: self.rec.id.clone(),
                rows,
                result,
            })
            .await;
    }
}

fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
