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

use super::commands::ModemPorts;
use super::{Ctx, DaemonError, Event};
use crate::contract::EventKind;
use crate::link::Link;
use crate::modem::actions::Action as ModemAction;
use crate::modem::supervisor::ModemHandle;
use crate::rules::{self as engine, ActionOutcome, Facts, RuleAction};
use crate::sim::{InSession, Location};
use crate::store::rules::{FiringRecord, Ledger};
use crate::store::Store;

/// Auto-refill caps (MQTT.md, "Refill"): requests a SIM may make a day and a month, and
/// how many may go unanswered before simgate stops asking until a refill arrives.
pub(crate) const REFILLS_PER_DAY: usize = 2;
pub(crate) const REFILLS_PER_MONTH: usize = 10;
pub(crate) const REFILLS_UNANSWERED: u32 = 3;

/// The refill ledger is read, changed and written by firing tasks and by the loop (a
/// refill arriving): one at a time.
pub(crate) static LEDGER: std::sync::Mutex<()> = std::sync::Mutex::new(());

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
        Location::Modem { port, .. } if super::swap::on_port(&ctx.store, port)?.is_some() => None,
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
    let facts = Facts {
        now,
        month: month.clone(),
        // Only a SIM in a modem has counters: a card in a reader has no usage facts.
        data_used_mb: matches!(obs.location, Location::Modem { .. })
            .then(|| ctx.store.month_usage(iccid, &month).map(|b| b.megabytes()))
            .transpose()?,
        data_left_mb: estimate.as_ref().and_then(|e| e.data_left_mb),
        days_left: estimate.as_ref().and_then(|e| e.days_left),
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
    Modem(Option<ModemHandle>),
    Reader,
    Gone,
}

/// Apply a firing's actions, in order, on a task of their own; the loop records the
/// outcome (`Event::FiringDone`).
fn apply(ctx: &Ctx, modems: &dyn ModemPorts, mut rec: FiringRecord) {
    let target = match ctx.store.get_observed(&rec.iccid) {
        Ok(Some(o)) => match &o.location {
            Location::Modem { port, .. } if o.present => Target::Modem(modems.handle(port)),
            Location::Reader { .. } if o.present => Target::Reader,
            _ => Target::Gone,
        },
        _ => Target::Gone,
    };
    let store = ctx.store.clone();
    let link = ctx.link.clone();
    let tx = ctx.events.clone();
    tokio::spawn(async move {
        for i in 0..rec.actions.len() {
            if rec.actions[i].outcome.is_some() {
                continue; // done before a crash, and recorded
            }
            let (outcome, reason) = act(&store, link.as_ref(), &target, &rec, i).await;
            rec.actions[i].outcome = Some(outcome.to_string());
            rec.actions[i].reason = reason;
            // Each outcome stored as it is known: a crash later does not apply it again.
            if let Err(e) = store.put_firing(&rec) {
                tracing::error!(firing = %rec.firing.id, error = %e, "firing outcome not stored");
            }
        }
        let _ = tx.send(Event::FiringDone(Box::new(rec))).await;
    });
}

async fn act(
    store: &Store,
    link: Option<&Link>,
    target: &Target,
    rec: &FiringRecord,
    i: usize,
) -> (&'static str, Option<String>) {
    let hw = |a: ModemAction| async move {
        match target {
            // Right after a start (a firing resumed) the supervisor may still be
            // attaching: asked again for a while, as a swap does.
            Target::Modem(Some(h)) => match super::swap::attached(|| h.act(a)).await {
                Ok(Ok(_)) => ("done", None),
                Ok(Err(refusal)) => ("failed", Some(refusal.to_string())),
                Err(e) => ("failed", Some(e.to_string())),
            },
            Target::Modem(None) => ("failed", Some("modem engine not available".into())),
            Target::Reader => (
                "not_applicable",
                Some("a card in a PC/SC reader has no data session".into()),
            ),
            Target::Gone => ("not_applicable", Some("the SIM is not hosted now".into())),
        }
    };
    match &rec.actions[i].action {
        RuleAction::Suspend => {
            let r = hw(ModemAction::SuspendData).await;
            if r.0 == "done" {
                if let Err(e) = store.set_rule_hold(&rec.iccid, Some(&rec.firing.rule)) {
                    return ("failed", Some(e.to_string()));
                }
            }
            r
        }
        RuleAction::Resume => {
            let r = hw(ModemAction::ResumeData).await;
            if r.0 == "done" {
                if let Err(e) = store.set_rule_hold(&rec.iccid, None) {
                    return ("failed", Some(e.to_string()));
                }
            }
            r
        }
        RuleAction::Notify => ("done", None),
        RuleAction::Refill { amount_mb } => match request_refill(
            store,
            link,
            &rec.iccid,
            &rec.firing.id,
            *amount_mb,
            Some(&rec.firing.rule),
        ) {
            Ok(r) => r,
            Err(e) => ("failed", Some(e.to_string())),
        },
    }
}

/// A refill request, within the caps: by a rule (its id is the firing's) or by a person
/// (`simgate refill`: its id is the command's).
pub(crate) fn request_refill(
    store: &Store,
    link: Option<&Link>,
    iccid: &str,
    request_id: &str,
    amount_mb: Option<f64>,
    rule: Option<&str>,
) -> Result<(&'static str, Option<String>), DaemonError> {
    let now = crate::time::unix_now();
    // A poisoned lock only means another task panicked mid-update: the ledger on disk
    // is whole (each write is one), so carry on.
    let _one = LEDGER.lock().unwrap_or_else(|p| p.into_inner());
    let mut ledger: Ledger = store.refill_ledger(iccid)?;
    if ledger.ids.iter().any(|i| i == request_id) {
        // Made before (a firing resumed after a crash): said again under its id, which
        // the platform deduplicates; not counted again.
        if let Some(link) = link {
            link.publish_event(EventKind::RefillRequested {
                iccid: iccid.to_string(),
                request_id: request_id.to_string(),
                amount_mb,
                rule: rule.map(str::to_string),
            })?;
        }
        return Ok(("requested", None));
    }
    ledger.requests.retain(|t| t + 31 * 86_400 > now);
    let today = ledger.requests.iter().filter(|t| *t + 86_400 > now).count();
    let month = crate::time::month_key(now);
    let this_month = ledger
        .requests
        .iter()
        .filter(|t| crate::time::month_key(**t) == month)
        .count();
    let capped = if ledger.unanswered >= REFILLS_UNANSWERED {
        Some(format!(
            "{} refill requests went unanswered: auto-refill stopped until a refill arrives",
            ledger.unanswered
        ))
    } else if today >= REFILLS_PER_DAY {
        Some(format!("{REFILLS_PER_DAY} refill requests today already"))
    } else if this_month >= REFILLS_PER_MONTH {
        Some(format!(
            "{REFILLS_PER_MONTH} refill requests this month already"
        ))
    } else {
        None
    };
    if let Some(why) = capped {
        return Ok(("capped", Some(why)));
    }
    ledger.requests.push(now);
    ledger.unanswered += 1;
    ledger.ids.push(request_id.to_string());
    let keep = ledger.ids.len().saturating_sub(REFILLS_PER_MONTH * 2);
    ledger.ids.drain(..keep);
    store.put_refill_ledger(iccid, &ledger)?;
    if let Some(link) = link {
        link.publish_event(EventKind::RefillRequested {
            iccid: iccid.to_string(),
            request_id: request_id.to_string(),
            amount_mb,
            rule: rule.map(str::to_string),
        })?;
    }
    Ok(("requested", None))
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
