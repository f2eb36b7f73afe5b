//! Local rules: the platform record's `rules`, evaluated on the gateway (MQTT.md,
//! "Rules"). Pure — rules, facts and the rules' state in; firings and the new state out —
//! so the daemon, `simgate rules test` and the unit tests run the same engine.
//!
//! A rule fires once per crossing: when its condition starts to hold, not on every
//! evaluation while it holds. Its `period` says when it may fire again: `crossing`
//! (default: once the condition stopped holding), `billing_cycle` (also at most once per
//! calendar month, UTC) or `permanent` (once, ever). Change triggers (`imei_changed`,
//! `sim_swapped`) fire on each new change; `date` fires once.

use crate::sim::{InSession, Status};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// What makes a rule fire.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// This month's data through simgate's own counters, MB, above.
    DataUsedAbove(f64),
    /// The local estimate of data left, MB, below.
    DataLeftBelow(f64),
    /// The local estimate of days left, below.
    DaysLeftBelow(f64),
    /// The SIM is in another device than when last seen (its modem's IMEI changed).
    ImeiChanged,
    /// Another SIM appeared where this one sat.
    SimSwapped,
    /// No data session for more than this many hours.
    NoSessionHoursAbove(f64),
    /// The platform's status word equals this one.
    StatusEquals(Status),
    /// The serving network's MCC is not one of these.
    CountryNotIn(Vec<String>),
    /// The clock reached this Unix time.
    DateAt(u64),
}

impl Trigger {
    fn word(&self) -> &'static str {
        match self {
            Trigger::DataUsedAbove(_) => "data_used_mb",
            Trigger::DataLeftBelow(_) => "data_left_mb",
            Trigger::DaysLeftBelow(_) => "days_left",
            Trigger::ImeiChanged => "imei_changed",
            Trigger::SimSwapped => "sim_swapped",
            Trigger::NoSessionHoursAbove(_) => "no_session_hours",
            Trigger::StatusEquals(_) => "status",
            Trigger::CountryNotIn(_) => "country",
            Trigger::DateAt(_) => "date",
        }
    }
}

/// What a firing does, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RuleAction {
    /// The standing suspension (data session down and kept down), the rule as reason.
    Suspend,
    Resume,
    /// Ask the platform for a top-up (a `refill_requested` event).
    Refill {
        #[serde(skip_serializing_if = "Option::is_none", default)]
        amount_mb: Option<f64>,
    },
    /// An event only.
    Notify,
}

/// One action of a firing and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ActionOutcome {
    #[serde(flatten)]
    pub action: RuleAction,
    /// `done`, `requested`, `not_applicable`, `capped`, `failed`; `None` until known.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

impl RuleAction {
    pub fn word(&self) -> &'static str {
        match self {
            RuleAction::Suspend => "suspend",
            RuleAction::Resume => "resume",
            RuleAction::Refill { .. } => "refill",
            RuleAction::Notify => "notify",
        }
    }
}

/// A stable fingerprint (FNV-1a, 64 bits) of some bytes: the same across restarts and
/// Rust releases (std's `DefaultHasher` promises neither).
pub fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// When a rule may fire again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Crossing,
    BillingCycle,
    Permanent,
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub trigger: Trigger,
    pub actions: Vec<RuleAction>,
    pub period: Period,
}

/// A rule refused, naming the rule and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {id}: {field}: {why}")]
pub struct RuleError {
    /// The rule's id, or `#N` (its position) when it has no readable id.
    pub id: String,
    pub field: String,
    pub why: String,
}

/// Parse a record's rules. Each bad rule is refused on its own, with its id and field;
/// the others stand.
pub fn parse(values: &[Value]) -> (Vec<Rule>, Vec<RuleError>) {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, v) in values.iter().enumerate() {
        match parse_one(i, v) {
            Ok(r) if !ids.insert(r.id.clone()) => errors.push(RuleError {
                id: r.id,
                field: "id".into(),
                why: "used by an earlier rule of this record".into(),
            }),
            Ok(r) => rules.push(r),
            Err(e) => errors.push(e),
        }
    }
    (rules, errors)
}

fn parse_one(index: usize, v: &Value) -> Result<Rule, RuleError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| crate::sim::valid_key(s))
        .map(str::to_string);
    let shown = id.clone().unwrap_or_else(|| format!("#{}", index + 1));
    let err = |field: &str, why: &str| RuleError {
        id: shown.clone(),
        field: field.into(),
        why: why.into(),
    };
    let Some(obj) = v.as_object() else {
        return Err(err("rule", "not a JSON object"));
    };
    let id = id.ok_or_else(|| err("id", "missing or not 1-64 of [A-Za-z0-9._-]"))?;
    const KNOWN: &[&str] = &[
        "id", "trigger", "above", "below", "equals", "not_in", "at", "action", "actions", "params",
        "period",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(err(k, "unknown key"));
    }
    let number = |key: &str| -> Result<f64, RuleError> {
        match obj.get(key) {
            None => Err(err(key, "missing threshold")),
            Some(n) => n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .ok_or_else(|| err(key, "not a non-negative number")),
        }
    };
    let trigger_word = obj
        .get("trigger")
        .and_then(Value::as_str)
        .ok_or_else(|| err("trigger", "missing or not a string"))?;
    let trigger = match trigger_word {
        "data_used_mb" => Trigger::DataUsedAbove(number("above")?),
        "data_left_mb" => Trigger::DataLeftBelow(number("below")?),
        "days_left" => Trigger::DaysLeftBelow(number("below")?),
        "imei_changed" => Trigger::ImeiChanged,
        "sim_swapped" => Trigger::SimSwapped,
        "no_session_hours" => Trigger::NoSessionHoursAbove(number("above")?),
        "status" => Trigger::StatusEquals(
            obj.get("equals")
                .and_then(Value::as_str)
                .and_then(Status::from_word)
                .ok_or_else(|| err("equals", "missing or not a platform status word"))?,
        ),
        "country" => {
            let list = obj
                .get("not_in")
                .and_then(Value::as_array)
                .ok_or_else(|| err("not_in", "missing or not a list of MCCs"))?;
            let mccs: Option<Vec<String>> = list
                .iter()
                .map(|m| {
                    m.as_str()
                        .filter(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
                        .map(str::to_string)
                })
                .collect();
            // E.212: a mobile country code is three digits.
            Trigger::CountryNotIn(
                mccs.ok_or_else(|| err("not_in", "each MCC must be three digits"))?,
            )
        }
        "date" => Trigger::DateAt(
            obj.get("at")
                .and_then(Value::as_u64)
                .ok_or_else(|| err("at", "missing or not Unix seconds"))?,
        ),
        other => return Err(err("trigger", &format!("unknown trigger \"{other}\""))),
    };
    let params = obj.get("params");
    let action = |word: &str, field: &str| -> Result<RuleAction, RuleError> {
        Ok(match word {
            "suspend" => RuleAction::Suspend,
            "resume" => RuleAction::Resume,
            "notify" => RuleAction::Notify,
            "refill" => RuleAction::Refill {
                amount_mb: match params.and_then(|p| p.get("amount_mb")) {
                    None => None,
                    Some(a) => Some(
                        a.as_f64()
                            .filter(|f| f.is_finite() && *f > 0.0)
                            .ok_or_else(|| err("params.amount_mb", "not a positive number"))?,
                    ),
                },
            },
            other => return Err(err(field, &format!("unknown action \"{other}\""))),
        })
    };
    let actions = match (obj.get("action"), obj.get("actions")) {
        (Some(a), None) => vec![action(
            a.as_str().ok_or_else(|| err("action", "not a string"))?,
            "action",
        )?],
        (None, Some(list)) => {
            let list = list
                .as_array()
                .filter(|l| !l.is_empty() && l.len() <= 4)
                .ok_or_else(|| err("actions", "not a list of 1 to 4 actions"))?;
            list.iter()
                .map(|a| {
                    action(
                        a.as_str().ok_or_else(|| err("actions", "not a string"))?,
                        "actions",
                    )
                })
                .collect::<Result<_, _>>()?
        }
        (Some(_), Some(_)) => return Err(err("actions", "give action or actions, not both")),
        (None, None) => return Err(err("action", "missing")),
    };
    let period = match obj.get("period").map(|p| p.as_str()) {
        None => Period::Crossing,
        Some(Some("crossing")) => Period::Crossing,
        Some(Some("billing_cycle")) => Period::BillingCycle,
        Some(Some("permanent")) => Period::Permanent,
        Some(_) => {
            return Err(err(
                "period",
                "not one of crossing, billing_cycle, permanent",
            ))
        }
    };
    Ok(Rule {
        id,
        trigger,
        actions,
        period,
    })
}

/// What simgate knows about a SIM when it evaluates its rules. `None`: not known (a
/// rule on an unknown fact neither fires nor re-arms).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// Unix seconds.
    #[serde(default)]
    pub now: u64,
    /// "YYYY-MM" (UTC) of `now`.
    #[serde(default)]
    pub month: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_used_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days_left: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub imei: Option<String>,
    /// The SIM now where this one sat, when another one replaced it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub replaced_by: Option<String>,
    #[serde(default)]
    pub in_session: InSession,
    /// Since when the SIM has had no data session (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub no_session_since: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<Status>,
    /// The serving network's MCC (not the home one: PAYGO prices follow the country).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mcc: Option<String>,
}

/// One rule's memory between evaluations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// The condition held at the last evaluation (the rule waits for it to stop).
    #[serde(default)]
    pub held: bool,
    /// Firings so far: the next firing's number is this plus one.
    #[serde(default)]
    pub fired: u64,
    /// The month of the last firing (`billing_cycle`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub month: Option<String>,
    /// The value a change trigger last saw (an IMEI, the replacing ICCID).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seen: Option<String>,
}

/// Every rule's state for one SIM, by rule id.
pub type State = BTreeMap<String, RuleState>;

/// A rule that fired: its deterministic id (`<iccid>.<rule>.<n>`: the same firing gets
/// the same id after a crash), the actions to take, and the facts that made it fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub id: String,
    pub rule: String,
    pub trigger: String,
    pub actions: Vec<RuleAction>,
    pub facts: Facts,
}

/// Evaluate `rules` for the SIM `iccid` over `facts`, updating `state`; the firings in
/// rule order. The state of a rule no longer in the record (refused for a while, or
/// removed) is kept: its firing count goes on, so a firing id is never given twice (it
/// is a refill request's idempotency key).
pub fn evaluate(iccid: &str, rules: &[Rule], state: &mut State, facts: &Facts) -> Vec<Firing> {
    let mut out = Vec::new();
    for rule in rules {
        let st = state.entry(rule.id.clone()).or_default();
        if fires(rule, st, facts) {
            st.fired += 1;
            st.month = Some(facts.month.clone());
            out.push(Firing {
                id: format!("{iccid}.{}.{}", rule.id, st.fired),
                rule: rule.id.clone(),
                trigger: rule.trigger.word().to_string(),
                actions: rule.actions.clone(),
                facts: facts.clone(),
            });
        }
    }
    out
}

/// Whether `rule` fires now; updates what it remembers either way.
fn fires(rule: &Rule, st: &mut RuleState, f: &Facts) -> bool {
    if rule.period == Period::Permanent && st.fired > 0 {
        return false;
    }
    // Change triggers: a new value, different from a known earlier one.
    let changed = |seen: &mut Option<String>, now: Option<&String>| -> bool {
        match now {
            None => false,
            Some(v) => {
                let was = seen.replace(v.clone());
                was.is_some_and(|w| &w != v)
            }
        }
    };
    let holds = match &rule.trigger {
        Trigger::ImeiChanged => return changed(&mut st.seen, f.imei.as_ref()),
        Trigger::SimSwapped => {
            // Each replacing SIM once; none known yet counts as a change too.
            return match &f.replaced_by {
                Some(new) if st.seen.as_ref() != Some(new) => {
                    st.seen = Some(new.clone());
                    true
                }
                _ => false,
            };
        }
        Trigger::DateAt(at) => {
            // Once, also after a clock jump past it.
            return f.now >= *at && st.fired == 0;
        }
        Trigger::DataUsedAbove(t) => f.data_used_mb.map(|v| v > *t),
        Trigger::DataLeftBelow(t) => f.data_left_mb.map(|v| v < *t),
        Trigger::DaysLeftBelow(t) => f.days_left.map(|v| v < *t),
        Trigger::NoSessionHoursAbove(h) => match f.in_session {
            InSession::Yes => Some(false),
            InSession::No => f
                .no_session_since
                .map(|since| f.now.saturating_sub(since) as f64 > h * 3600.0),
            InSession::NotApplicable => None,
        },
        Trigger::StatusEquals(s) => f.status.map(|v| v == *s),
        Trigger::CountryNotIn(list) => f.mcc.as_ref().map(|m| !list.contains(m)),
    };
    let Some(holds) = holds else {
        return false;
    };
    let crossing = holds && !st.held;
    st.held = holds;
    if !crossing {
        return false;
    }
    if rule.period == Period::BillingCycle && st.month.as_deref() == Some(f.month.as_str()) {
        // Not this month again; the crossing is not used up, so a condition that still
        // holds next month fires then.
        st.held = false;
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(v: Value) -> Vec<Rule> {
        let (r, e) = parse(v.as_array().unwrap());
        assert!(e.is_empty(), "{e:?}");
        r
    }

    fn at(now: u64, used: f64) -> Facts {
        Facts {
            now,
            month: crate::time::month_key(now),
            data_used_mb: Some(used),
            ..Facts::default()
        }
    }

    const NOV_30: u64 = 1_796_000_000; // 2026-11-30
    const DEC_02: u64 = 1_796_200_000; // 2026-12-02

    #[test]
    fn the_issues_examples_parse_as_written() {
        let r = rules(json!([
            {"id": "cap-5g", "trigger": "data_used_mb", "above": 5120, "action": "suspend"},
            {"id": "low", "trigger": "data_left_mb", "below": 50, "action": "refill", "params": {"amount_mb": 1024}},
            {"id": "imei", "trigger": "imei_changed", "action": "notify"}
        ]));
        assert_eq!(r[0].trigger, Trigger::DataUsedAbove(5120.0));
        assert_eq!(r[0].actions, [RuleAction::Suspend]);
        assert_eq!(
            r[1].actions,
            [RuleAction::Refill {
                amount_mb: Some(1024.0)
            }]
        );
        assert_eq!(r[2].trigger, Trigger::ImeiChanged);
        assert_eq!(r[2].period, Period::Crossing);
    }

    #[test]
    fn a_bad_rule_is_refused_by_id_and_field_and_the_others_stand() {
        let (r, e) = parse(&[
            json!({"id": "a", "trigger": "data_used_mb", "action": "suspend"}),
            json!({"id": "b", "trigger": "teleport", "action": "suspend"}),
            json!({"id": "c", "trigger": "days_left", "below": 3, "action": "explode"}),
            json!({"trigger": "imei_changed", "action": "notify"}),
            json!({"id": "d", "trigger": "country", "not_in": ["2620"], "action": "notify"}),
            json!({"id": "e", "trigger": "imei_changed", "action": "notify", "colour": 1}),
            json!({"id": "ok", "trigger": "imei_changed", "action": "notify"}),
        ]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].id, "ok");
        let said: Vec<String> = e.iter().map(ToString::to_string).collect();
        assert_eq!(
            said,
            [
                "rule a: above: missing threshold",
                "rule b: trigger: unknown trigger \"teleport\"",
                "rule c: action: unknown action \"explode\"",
                "rule #4: id: missing or not 1-64 of [A-Za-z0-9._-]",
                "rule d: not_in: each MCC must be three digits",
                "rule e: colour: unknown key",
            ]
        );
    }

    #[test]
    fn a_cap_fires_once_per_crossing_not_on_every_poll_and_again_next_month() {
        let r = rules(
            json!([{"id": "cap", "trigger": "data_used_mb", "above": 100, "action": "suspend"}]),
        );
        let mut st = State::new();
        assert!(evaluate("89", &r, &mut st, &at(NOV_30, 50.0)).is_empty());
        let f = evaluate("89", &r, &mut st, &at(NOV_30 + 60, 150.0));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "89.cap.1");
        assert_eq!(f[0].facts.data_used_mb, Some(150.0));
        assert!(evaluate("89", &r, &mut st, &at(NOV_30 + 120, 160.0)).is_empty());
        // A new month: the counter starts over, the rule re-arms, and fires on the next
        // crossing with the next id.
        assert!(evaluate("89", &r, &mut st, &at(DEC_02, 0.0)).is_empty());
        let f = evaluate("89", &r, &mut st, &at(DEC_02 + 60, 101.0));
        assert_eq!(f[0].id, "89.cap.2");
    }

    #[test]
    fn a_counter_reset_or_unknown_usage_neither_fires_nor_re_arms() {
        let r = rules(
            json!([{"id": "cap", "trigger": "data_used_mb", "above": 100, "action": "notify"}]),
        );
        let mut st = State::new();
        assert_eq!(evaluate("89", &r, &mut st, &at(NOV_30, 150.0)).len(), 1);
        // A modem reboot: the month's total is kept by the store, so usage stays; a
        // moment without usage facts changes nothing.
        let unknown = Facts {
            data_used_mb: None,
            ..at(NOV_30 + 60, 0.0)
        };
        assert!(evaluate("89", &r, &mut st, &unknown).is_empty());
        assert!(evaluate("89", &r, &mut st, &at(NOV_30 + 120, 151.0)).is_empty());
    }

    #[test]
    fn a_threshold_raised_mid_month_re_arms_and_one_lowered_fires() {
        let low = rules(
            json!([{"id": "cap", "trigger": "data_used_mb", "above": 100, "action": "notify"}]),
        );
        let high = rules(
            json!([{"id": "cap", "trigger": "data_used_mb", "above": 500, "action": "notify"}]),
        );
        let mut st = State::new();
        assert_eq!(evaluate("89", &low, &mut st, &at(NOV_30, 200.0)).len(), 1);
        assert!(evaluate("89", &high, &mut st, &at(NOV_30 + 1, 200.0)).is_empty());
        assert_eq!(
            evaluate("89", &high, &mut st, &at(NOV_30 + 2, 600.0)).len(),
            1
        );
        // Lowered under the usage: a crossing only if it had re-armed.
        let mut fresh = State::new();
        assert!(evaluate("89", &high, &mut fresh, &at(NOV_30, 200.0)).is_empty());
        assert_eq!(
            evaluate("89", &low, &mut fresh, &at(NOV_30 + 1, 200.0)).len(),
            1
        );
    }

    #[test]
    fn billing_cycle_and_permanent_periods_limit_refiring() {
        let r = rules(json!([
            {"id": "m", "trigger": "data_left_mb", "below": 50, "action": "refill", "period": "billing_cycle"},
            {"id": "p", "trigger": "data_left_mb", "below": 50, "action": "notify", "period": "permanent"}
        ]));
        let left = |now: u64, mb: f64| Facts {
            data_left_mb: Some(mb),
            ..at(now, 0.0)
        };
        let mut st = State::new();
        assert_eq!(evaluate("89", &r, &mut st, &left(NOV_30, 40.0)).len(), 2);
        // Refilled, then below again the same month: neither fires.
        assert!(evaluate("89", &r, &mut st, &left(NOV_30 + 10, 900.0)).is_empty());
        assert!(evaluate("89", &r, &mut st, &left(NOV_30 + 20, 10.0)).is_empty());
        // Next month the billing-cycle rule may fire again; the permanent one never.
        assert!(evaluate("89", &r, &mut st, &left(DEC_02, 900.0)).is_empty());
        let f = evaluate("89", &r, &mut st, &left(DEC_02 + 1, 10.0));
        assert_eq!(f.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(), ["m"]);
    }

    #[test]
    fn imei_change_and_sim_swap_fire_on_each_new_change() {
        let r = rules(json!([
            {"id": "imei", "trigger": "imei_changed", "action": "notify"},
            {"id": "swap", "trigger": "sim_swapped", "actions": ["notify", "suspend"]}
        ]));
        let with = |imei: &str, by: Option<&str>| Facts {
            imei: Some(imei.into()),
            replaced_by: by.map(String::from),
            ..at(NOV_30, 0.0)
        };
        let mut st = State::new();
        assert!(
            evaluate("89", &r, &mut st, &with("1", None)).is_empty(),
            "first sight"
        );
        assert!(evaluate("89", &r, &mut st, &with("1", None)).is_empty());
        let f = evaluate("89", &r, &mut st, &with("2", Some("8901")));
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].actions, [RuleAction::Notify, RuleAction::Suspend]);
        assert!(evaluate("89", &r, &mut st, &with("2", Some("8901"))).is_empty());
        assert_eq!(
            evaluate("89", &r, &mut st, &with("3", Some("8902"))).len(),
            2
        );
    }

    #[test]
    fn a_date_fires_once_also_after_a_clock_jump_past_it() {
        let r =
            rules(json!([{"id": "d", "trigger": "date", "at": NOV_30 + 100, "action": "notify"}]));
        let mut st = State::new();
        assert!(evaluate("89", &r, &mut st, &at(NOV_30, 0.0)).is_empty());
        assert_eq!(evaluate("89", &r, &mut st, &at(DEC_02, 0.0)).len(), 1);
        assert!(evaluate("89", &r, &mut st, &at(DEC_02 + 1, 0.0)).is_empty());
        // A clock set back before it does not fire it again.
        assert!(evaluate("89", &r, &mut st, &at(NOV_30, 0.0)).is_empty());
        assert!(evaluate("89", &r, &mut st, &at(DEC_02 + 2, 0.0)).is_empty());
    }

    #[test]
    fn country_status_and_no_session_triggers() {
        let r = rules(json!([
            {"id": "roam", "trigger": "country", "not_in": ["262", "228"], "action": "suspend"},
            {"id": "sus", "trigger": "status", "equals": "Suspended", "action": "notify"},
            {"id": "idle", "trigger": "no_session_hours", "above": 24, "action": "notify"}
        ]));
        let mut st = State::new();
        let home = Facts {
            mcc: Some("262".into()),
            status: Some(Status::Active),
            in_session: InSession::No,
            no_session_since: Some(NOV_30),
            ..at(NOV_30 + 3600, 0.0)
        };
        assert!(evaluate("89", &r, &mut st, &home).is_empty());
        let away = Facts {
            mcc: Some("310".into()),
            status: Some(Status::Suspended),
            now: NOV_30 + 25 * 3600,
            ..home.clone()
        };
        let fired: Vec<String> = evaluate("89", &r, &mut st, &away)
            .into_iter()
            .map(|f| f.rule)
            .collect();
        assert_eq!(fired, ["roam", "sus", "idle"]);
    }

    #[test]
    fn a_rule_removed_and_back_never_reuses_a_firing_id() {
        let r = rules(
            json!([{"id": "cap", "trigger": "data_used_mb", "above": 1, "action": "notify"}]),
        );
        let mut st = State::new();
        assert_eq!(
            evaluate("89", &r, &mut st, &at(NOV_30, 5.0))[0].id,
            "89.cap.1"
        );
        evaluate("89", &[], &mut st, &at(NOV_30, 0.0));
        evaluate("89", &r, &mut st, &at(NOV_30 + 1, 0.0));
        assert_eq!(
            evaluate("89", &r, &mut st, &at(NOV_30 + 2, 5.0))[0].id,
            "89.cap.2"
        );
    }

    #[test]
    fn a_billing_cycle_rule_still_holding_at_the_month_boundary_fires_in_the_new_month() {
        let r = rules(
            json!([{"id": "m", "trigger": "data_left_mb", "below": 50, "action": "notify", "period": "billing_cycle"}]),
        );
        let left = |now: u64, mb: f64| Facts {
            data_left_mb: Some(mb),
            ..at(now, 0.0)
        };
        let mut st = State::new();
        assert_eq!(evaluate("89", &r, &mut st, &left(NOV_30, 40.0)).len(), 1);
        evaluate("89", &r, &mut st, &left(NOV_30 + 1, 900.0));
        assert!(evaluate("89", &r, &mut st, &left(NOV_30 + 2, 10.0)).is_empty());
        assert!(evaluate("89", &r, &mut st, &left(NOV_30 + 3, 10.0)).is_empty());
        assert_eq!(evaluate("89", &r, &mut st, &left(DEC_02, 10.0)).len(), 1);
    }
}
