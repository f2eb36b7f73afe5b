//! Local rules for `simgate run` (MQTT.md, "Rules"): facts gathered from the store, the
//! pure engine (src/rules.rs), each firing stored with the rule state before any effect
//! (store::rules), its actions applied on a task of their own, and the `rule_fired`
//! event once every outcome is known. Everything here works while the broker is
//! unreachable: events wait in the outbox.
//!
//! Effects are idempotent, so a firing found pending at start-up (simgate died mid-way)
//! is applied again rather than lost: a suspension is a standing order, a resume lifts
//! it, a refill request keeps its id (the platform's idempotency key), a notification is
//! the event itself.

use super::refill::{self, Asked};
use super::work::{self, ModemPorts, Port};
use super::{Ctx, DaemonError, Event};
use crate::agent::Recorder;
use crate::contract::{EventKind, RefusalCode};
use crate::modem::actions::Action as ModemAction;
use crate::rules::{self as engine, ActionOutcome, Facts, RuleAction};
use crate::sim::{InSession, Location};
use crate::store::rules::FiringRecord;

/// Evaluate the rules of `iccid` now; `replaced_by`: the SIM that just took its place.
pub(crate) fn evaluate(
    ctx: &Ctx,
    modems: &dyn ModemPorts,
    iccid: &str,
    replaced_by: Option<String>,
) -> Result<(), DaemonError> {
    let Some(record) = ctx.store.get_platform(iccid)? else {
        return Ok(());
    };
    if record.rules.is_empty() {
        let mut sim = ctx.store.sim_rules(iccid)?;
        if sim.refused.take().is_some() {
            ctx.store.put_sim_rules(iccid, &sim, &[])?;
        }
        return Ok(());
    }
    let Some(obs) = ctx.store.get_observed(iccid)? else {
        return Ok(());
    };
    let now = crate::time::unix_now();
    // A guided swap under way on the SIM's port is the platform's own doing, and may
    // still roll back: it is no `sim_swapped`.
    let replaced_by = match &obs.location {
        Location::Modem { port, .. } if ctx.store.swap_on_port(port)?.is_some() => None,
        _ => replaced_by,
    };
    let mut sim = ctx.store.sim_rules(iccid)?;
    let (rules, refused) = engine::parse(&record.rules);
    // A bad rule is said once per change of what is refused, naming rule and field.
    let fingerprint = (!refused.is_empty()).then(|| {
        let said: Vec<String> = refused.iter().map(ToString::to_string).collect();
        engine::fingerprint(said.join("\n").as_bytes())
    });
    if fingerprint != sim.refused {
        for e in &refused {
            tracing::warn!(%iccid, error = %e, "rule refused");
            ctx.rec.event(EventKind::Error {
                iccid: Some(iccid.to_string()),
                code: crate::contract::RefusalCode::InvalidField,
                reason: e.to_string(),
            })?;
        }
        sim.refused = fingerprint;
    }
    // No session since: kept here, the engine is pure.
    match obs.in_session {
        InSession::No if obs.present => {
            sim.no_session_since.get_or_insert(now);
        }
        _ => sim.no_session_since = None,
    }
    let month = crate::time::month_key(now);
    let estimate = ctx.store.estimate(iccid, &record, now)?;
    // The operator's figures (a balance query) count where they are newer than the
    // platform's base: a Prepaid SIM the platform cannot query has no other.
    let operator = ctx
        .store
        .operator_estimate(iccid)?
        .filter(|o| estimate.as_ref().is_none_or(|e| o.at > e.since));
    let facts = Facts {
        now,
        month: month.clone(),
        // Only a SIM in a modem has counters: a card in a reader has no usage facts.
        data_used_mb: matches!(obs.location, Location::Modem { .. })
            .then(|| ctx.store.month_usage(iccid, &month).map(|b| b.megabytes()))
            .transpose()?,
        data_left_mb: operator
            .as_ref()
            .and_then(|o| o.data_left_mb)
            .or_else(|| estimate.as_ref().and_then(|e| e.data_left_mb)),
        days_left: operator
            .as_ref()
            .and_then(|o| o.days_left)
            .or_else(|| estimate.as_ref().and_then(|e| e.days_left)),
        imei: obs.imei.clone(),
        replaced_by,
        in_session: obs.in_session,
        no_session_since: sim.no_session_since,
        status: record.status,
        // E.212: the MCC is the first three digits of the serving network's code.
        mcc: obs
            .mcc_mnc
            .as_ref()
            .and_then(|m| m.get(..3))
            .map(str::to_string),
    };
    let firings = engine::evaluate(iccid, &rules, &mut sim.rules, &facts);
    let records: Vec<FiringRecord> = firings
        .into_iter()
        .map(|f| FiringRecord {
            iccid: iccid.to_string(),
            actions: f
                .actions
                .iter()
                .map(|a| ActionOutcome {
                    action: a.clone(),
                    outcome: None,
                    reason: None,
                })
                .collect(),
            firing: f,
            done: false,
            at: now,
        })
        .collect();
    // State and firings together, before any effect.
    ctx.store.put_sim_rules(iccid, &sim, &records)?;
    for r in records {
        tracing::info!(%iccid, firing = %r.firing.id, rule = %r.firing.rule, "rule fired");
        apply(ctx, modems, r);
    }
    Ok(())
}

/// At start-up: firings a dead run stored but did not finish are applied again.
pub(crate) fn resume_pending(ctx: &Ctx, modems: &dyn ModemPorts) -> Result<(), DaemonError> {
    for r in ctx.store.pending_firings()? {
        tracing::warn!(firing = %r.firing.id, "firing left pending by an earlier run: applying it");
        apply(ctx, modems, r);
    }
    let forgotten = ctx.store.forget_firings(crate::time::unix_now())?;
    tracing::debug!(forgotten, "finished firings past their time forgotten");
    Ok(())
}

/// Where a firing's actions reach the SIM.
enum Target {
    Modem(Port),
    Reader,
    Gone,
}

/// Apply a firing's actions, in order, on a task of their own; the loop records the
/// outcome (`Event::FiringDone`).
fn apply(ctx: &Ctx, modems: &dyn ModemPorts, mut rec: FiringRecord) {
    let target = match ctx.store.get_observed(&rec.iccid) {
        Ok(Some(o)) => match &o.location {
            Location::Modem { port, .. } if o.present => Target::Modem(Port::of(modems, port)),
            Location::Reader { .. } if o.present => Target::Reader,
            _ => Target::Gone,
        },
        _ => Target::Gone,
    };
    let recorder = ctx.rec.clone();
    let tx = ctx.events.clone();
    tokio::spawn(async move {
        for i in 0..rec.actions.len() {
            if rec.actions[i].outcome.is_some() {
                continue; // done before a crash, and recorded
            }
            let (outcome, reason) = act(&recorder, &target, &rec, i).await;
            rec.actions[i].outcome = Some(outcome.to_string());
            rec.actions[i].reason = reason;
            // Each outcome stored as it is known: a crash later does not apply it again.
            if let Err(e) = recorder.store.put_firing(&rec) {
                tracing::error!(firing = %rec.firing.id, error = %e, "firing outcome not stored");
            }
        }
        let _ = tx.send(Event::FiringDone(Box::new(rec))).await;
    });
}

/// A rule's suspend or resume, through the same door as the platform's command
/// (`work::act_on_modem`: refused on a port ModemManager keeps, asked again while the
/// supervisor attaches — right after a start a firing resumed finds it attaching).
async fn hardware(target: &Target, action: ModemAction) -> (&'static str, Option<String>) {
    match target {
        Target::Modem(port) => match work::act_on_modem(port, action).await {
            Ok(_) => ("done", None),
            Err((RefusalCode::NotApplicable, why)) => ("not_applicable", Some(why)),
            Err((_, why)) => ("failed", Some(why)),
        },
        Target::Reader => (
            "not_applicable",
            Some("a card in a PC/SC reader has no data session".into()),
        ),
        Target::Gone => ("not_applicable", Some("the SIM is not hosted now".into())),
    }
}

async fn act(
    recorder: &Recorder,
    target: &Target,
    rec: &FiringRecord,
    i: usize,
) -> (&'static str, Option<String>) {
    let store = &recorder.store;
    match &rec.actions[i].action {
        RuleAction::Suspend => {
            let r = hardware(target, ModemAction::SuspendData).await;
            if r.0 == "done" {
                // The rule holds the session down (a refill lifts it), and the row says
                // so: `suspended_by` the rule, from now.
                let by = crate::contract::SuspendedBy {
                    command: None,
                    rule: Some(rec.firing.rule.clone()),
                    since: Some(crate::time::unix_now()),
                };
                if let Err(e) = store
                    .set_rule_hold(&rec.iccid, Some(&rec.firing.rule))
                    .and_then(|()| store.set_suspended_by(&rec.iccid, Some(&by)))
                {
                    return ("failed", Some(e.to_string()));
                }
            }
            r
        }
        RuleAction::Resume => {
            let r = hardware(target, ModemAction::ResumeData).await;
            if r.0 == "done" {
                if let Err(e) = store
                    .set_rule_hold(&rec.iccid, None)
                    .and_then(|()| store.set_suspended_by(&rec.iccid, None))
                {
                    return ("failed", Some(e.to_string()));
                }
            }
            r
        }
        RuleAction::Notify => ("done", None),
        RuleAction::Refill { amount_mb } => match refill::request(
            recorder,
            &rec.iccid,
            &rec.firing.id,
            *amount_mb,
            Some(&rec.firing.rule),
        ) {
            Ok(Asked::Requested) => ("requested", None),
            Ok(Asked::Capped(why)) => ("capped", Some(why)),
            Err(e) => ("failed", Some(e.to_string())),
        },
    }
}

/// A firing's actions are all done. Their outcomes are stored first (so a crash from
/// here on never applies them again), then the `rule_fired` event is queued, then the
/// firing is marked done: a crash before that reports it again at the next start, with
/// the same id (MQTT.md: drop a `rule_fired` id seen before).
pub(crate) fn on_done(ctx: &Ctx, mut rec: FiringRecord) -> Result<(), DaemonError> {
    ctx.store.put_firing(&rec)?;
    ctx.rec.event(EventKind::RuleFired {
        id: rec.firing.id.clone(),
        iccid: rec.iccid.clone(),
        rule: rec.firing.rule.clone(),
        trigger: rec.firing.trigger.clone(),
        facts: rec.firing.facts.clone(),
        actions: rec.actions.clone(),
    })?;
    rec.done = true;
    ctx.store.put_firing(&rec)?;
    // A suspension set or lifted is in the row (`suspended_by`): out again, also when
    // the session's change was published before the hold was written.
    let session = rec.actions.iter().any(|a| {
        matches!(a.action, RuleAction::Suspend | RuleAction::Resume)
            && a.outcome.as_deref() == Some("done")
    });
    if session {
        if let Some(obs) = ctx.store.get_observed(&rec.iccid)? {
            ctx.rec.publish_row(&obs)?;
        }
    }
    let actions: Vec<String> = rec
        .actions
        .iter()
        .map(|a| {
            format!(
                "{}: {}",
                a.action.word(),
                a.outcome.as_deref().unwrap_or("pending")
            )
        })
        .collect();
    tracing::info!(firing = %rec.firing.id, actions = %actions.join(", "), "firing done");
    Ok(())
}
