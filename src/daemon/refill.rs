//! Refills (MQTT.md, "Refill"): a top-up asked of the platform within the caps — by a
//! rule's `refill` action or a person's `request_refill` command — and a `refill`
//! command applied once per request id, lifting a rule's suspension. The ledger (the
//! requests made, how many went unanswered) is read and written inside the store's
//! transaction (`Store::update_refill_ledger`, `Store::apply_refill`): a firing's task
//! and the loop never interleave on it, with no lock of their own.

use super::work::{self, Done, Port};
use super::{Ctx, DaemonError};
use crate::agent::Recorder;
use crate::contract::{EventKind, Refill, RefusalCode};
use crate::modem::actions::Action as ModemAction;
use crate::store::rules::Ledger;
use crate::store::Store;

/// Auto-refill caps (MQTT.md, "Refill"): requests a SIM may make a day and a month, and
/// how many may go unanswered before simgate stops asking until a refill arrives.
pub(crate) const REFILLS_PER_DAY: usize = 2;
pub(crate) const REFILLS_PER_MONTH: usize = 10;
pub(crate) const REFILLS_UNANSWERED: u32 = 3;

/// What became of a refill request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Asked {
    /// Queued for the platform as a `refill_requested` event.
    Requested,
    /// Not made: a cap was reached (why, in words).
    Capped(String),
}

/// The ledger's decision on one request: made before (said again, not counted), over a
/// cap, or counted now. Pure: the store's transaction may run it more than once.
fn decide(ledger: &mut Ledger, request_id: &str, now: u64) -> Result<bool, String> {
    if ledger.ids.iter().any(|i| i == request_id) {
        return Ok(false);
    }
    ledger.requests.retain(|t| t + 31 * 86_400 > now);
    let today = ledger.requests.iter().filter(|t| *t + 86_400 > now).count();
    let month = crate::time::month_key(now);
    let this_month = ledger
        .requests
        .iter()
        .filter(|t| crate::time::month_key(**t) == month)
        .count();
    if ledger.unanswered >= REFILLS_UNANSWERED {
        return Err(format!(
            "{} refill requests went unanswered: auto-refill stopped until a refill arrives",
            ledger.unanswered
        ));
    }
    if today >= REFILLS_PER_DAY {
        return Err(format!("{REFILLS_PER_DAY} refill requests today already"));
    }
    if this_month >= REFILLS_PER_MONTH {
        return Err(format!(
            "{REFILLS_PER_MONTH} refill requests this month already"
        ));
    }
    ledger.requests.push(now);
    ledger.unanswered += 1;
    ledger.ids.push(request_id.to_string());
    let keep = ledger.ids.len().saturating_sub(REFILLS_PER_MONTH * 2);
    ledger.ids.drain(..keep);
    Ok(true)
}

/// A refill request, within the caps: by a rule (its id is the firing's) or by a person
/// (`simgate refill`: its id is the command's). A request made before (a firing resumed
/// after a crash) is said again under its id, which the platform deduplicates, and not
/// counted again.
pub(crate) fn request(
    rec: &Recorder,
    iccid: &str,
    request_id: &str,
    amount_mb: Option<f64>,
    rule: Option<&str>,
) -> Result<Asked, DaemonError> {
    let now = crate::time::unix_now();
    let decided = rec
        .store
        .update_refill_ledger(iccid, |l| decide(l, request_id, now))?;
    if let Err(why) = decided {
        return Ok(Asked::Capped(why));
    }
    rec.event(EventKind::RefillRequested {
        iccid: iccid.to_string(),
        request_id: request_id.to_string(),
        amount_mb,
        rule: rule.map(str::to_string),
    })?;
    Ok(Asked::Requested)
}

/// Apply a refill to the cached record: the balance moves once per request id (a
/// second command answering the same request changes nothing), the estimate counts
/// from now, the refill ledger learns its request was answered. Returns whether a
/// rule's suspension is to be lifted.
pub(crate) fn apply(ctx: &Ctx, id: &str, iccid: &str, r: &Refill) -> Result<bool, DaemonError> {
    let now = crate::time::unix_now();
    if let Some(req) = &r.request_id {
        if let Some(by) = ctx.store.refill_applied(req)? {
            return already(ctx, id, req, &by, iccid);
        }
    }
    let record = ctx.store.get_platform(iccid)?.unwrap_or_default();
    let left_now = ctx
        .store
        .estimate(iccid, &record, now)?
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
    // The estimate counts from now; then record, applied request and ledger at once.
    ctx.store.reset_estimate(iccid, now)?;
    if let Some(by) = ctx
        .store
        .apply_refill(iccid, &new, r.request_id.as_deref(), id)?
    {
        let req = r.request_id.as_deref().unwrap_or_default();
        return already(ctx, id, req, &by, iccid);
    }
    tracing::info!(%id, %iccid, before_mb = record.data_left_mb, after_mb = new.data_left_mb, "refill applied");
    if let Some(obs) = ctx.store.get_observed(iccid)? {
        ctx.rec.publish_row(&obs)?;
    }
    Ok(ctx.store.rule_hold(iccid)?.is_some())
}

/// A refill whose request was applied before: the balance moved then; a suspension
/// the first answer could not lift (the modem unreachable) is lifted now.
fn already(ctx: &Ctx, id: &str, req: &str, by: &str, iccid: &str) -> Result<bool, DaemonError> {
    tracing::info!(%id, request = %req, %by, "refill already applied");
    Ok(ctx.store.rule_hold(iccid)?.is_some())
}

/// A rule had suspended the SIM for its allowance: the session comes back up, verified
/// by the modem engine (as a resume command), and the hold is lifted.
pub(crate) async fn resume(port: Port, store: Store, iccid: String) -> Done {
    match work::act_on_modem(&port, ModemAction::ResumeData).await {
        Ok(_) => store
            .set_rule_hold(&iccid, None)
            .and_then(|()| store.set_suspended_by(&iccid, None))
            .map(|_| None)
            .map_err(|e| (RefusalCode::Failed, e.to_string())),
        Err((RefusalCode::Unavailable, why)) => Err((
            RefusalCode::Unavailable,
            format!("refill applied, but the modem is not reachable: {why}"),
        )),
        Err((code, why)) => Err((
            code,
            format!("refill applied, but the session did not come back: {why}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_once_and_the_caps_stop_the_next() {
        let mut l = Ledger::default();
        let now = 1_700_000_000;
        assert_eq!(decide(&mut l, "a", now), Ok(true));
        assert_eq!(
            decide(&mut l, "a", now),
            Ok(false),
            "made before: not counted"
        );
        assert_eq!(decide(&mut l, "b", now + 1), Ok(true));
        assert_eq!(
            decide(&mut l, "c", now + 2),
            Err(format!("{REFILLS_PER_DAY} refill requests today already"))
        );
        // A day later the day's cap is lifted, but three went unanswered... after one more.
        assert_eq!(decide(&mut l, "c", now + 86_400), Ok(true));
        assert!(decide(&mut l, "d", now + 2 * 86_400)
            .unwrap_err()
            .contains("went unanswered"));
    }
}
