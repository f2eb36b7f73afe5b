//! What local rules and refills need to outlive simgate: each SIM's rule state and its
//! firings (stored together, in one transaction, before any effect), the refill ledger
//! (requests made, refills applied), and the base of the local estimates of data and
//! days left.

use super::{decode, encode, Store, StoreError};
use crate::rules::{ActionOutcome, Firing, State};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

const STATE: &str = "rule_state";
const FIRINGS: &str = "firings";
const LEDGER: &str = "refill_ledger";
const APPLIED: &str = "refills_applied";
const BASE: &str = "estimate_base";
const HOLD: &str = "rule_holds";

/// A finished firing is kept this long (its id answers a question about it), then
/// forgotten at start-up.
pub const FIRING_MEMORY_SECS: u64 = 35 * 86_400;

/// A SIM's rule memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimRules {
    #[serde(default)]
    pub rules: State,
    /// Since when the SIM has had no data session (`no_session_hours`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub no_session_since: Option<u64>,
    /// A fingerprint of the refused rules last reported (said once per change).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub refused: Option<u64>,
}

/// A firing as stored: pending until every action's outcome is known and reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringRecord {
    pub iccid: String,
    pub firing: Firing,
    pub actions: Vec<ActionOutcome>,
    pub done: bool,
    pub at: u64,
}

/// The refill requests of one SIM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// When each request of the last 31 days was made (Unix seconds).
    #[serde(default)]
    pub requests: Vec<u64>,
    /// Requests since the last refill arrived.
    #[serde(default)]
    pub unanswered: u32,
    /// The ids of the requests of the last 31 days: a request made again (a firing
    /// resumed after a crash) is sent again under its id, not counted twice.
    #[serde(default)]
    pub ids: Vec<String>,
}

/// Where the local estimate counts from: the platform's figures as of `at`, and this
/// SIM's usage counted by then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateBase {
    pub at: u64,
    /// "YYYY-MM" of `at`, and the bytes counted that month by then.
    pub month: String,
    pub counted: u64,
}

/// A ledger transaction's failure: the stored ledger unreadable, or the database's.
fn ledger_err(e: TransactionError<String>, iccid: &str) -> StoreError {
    match e {
        TransactionError::Abort(detail) => StoreError::Corrupt {
            tree: LEDGER,
            detail: format!("{iccid}: {detail}"),
        },
        TransactionError::Storage(e) => e.into(),
    }
}

fn tx_err(e: TransactionError<String>) -> StoreError {
    match e {
        TransactionError::Abort(detail) => StoreError::Corrupt {
            tree: FIRINGS,
            detail,
        },
        TransactionError::Storage(e) => e.into(),
    }
}

impl Store {
    pub fn sim_rules(&self, iccid: &str) -> Result<SimRules, StoreError> {
        Ok(self.get_json(STATE, iccid)?.unwrap_or_default())
    }

    /// Store a SIM's new rule state with the firings it produced, in one transaction,
    /// flushed: either both are on disk or neither (a crash never loses a firing whose
    /// state says it happened, nor repeats one whose record exists).
    pub fn put_sim_rules(
        &self,
        iccid: &str,
        state: &SimRules,
        firings: &[FiringRecord],
    ) -> Result<(), StoreError> {
        let st = self.tree(STATE)?;
        let fi = self.tree(FIRINGS)?;
        let state_bytes = encode(STATE, state)?;
        let records = firings
            .iter()
            .map(|f| Ok((f.firing.id.clone(), encode(FIRINGS, f)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        (&st, &fi)
            .transaction(|(st, fi)| {
                st.insert(iccid.as_bytes(), state_bytes.as_slice())?;
                for (id, bytes) in &records {
                    fi.insert(id.as_bytes(), bytes.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<String>>(())
            })
            .map_err(tx_err)?;
        self.flush()
    }

    /// Update a firing (its outcomes, done), flushed.
    pub fn put_firing(&self, f: &FiringRecord) -> Result<(), StoreError> {
        self.put_json(FIRINGS, &f.firing.id, f)?;
        self.flush()
    }

    /// Firings whose effects may not all have happened (a crash mid-firing).
    pub fn pending_firings(&self) -> Result<Vec<FiringRecord>, StoreError> {
        Ok(self
            .all_json::<FiringRecord>(FIRINGS)?
            .into_iter()
            .filter(|f| !f.done)
            .collect())
    }

    /// Forget finished firings older than [`FIRING_MEMORY_SECS`]. Returns how many.
    pub fn forget_firings(&self, now: u64) -> Result<usize, StoreError> {
        let tree = self.tree(FIRINGS)?;
        let mut n = 0;
        for item in tree.iter() {
            let (k, v) = item?;
            let f: FiringRecord = decode(FIRINGS, &k, &v)?;
            if f.done && f.at + FIRING_MEMORY_SECS < now {
                tree.remove(k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn refill_ledger(&self, iccid: &str) -> Result<Ledger, StoreError> {
        Ok(self.get_json(LEDGER, iccid)?.unwrap_or_default())
    }

    /// Read, change and write a SIM's refill ledger in one transaction, flushed: a
    /// firing's task asking for a refill and the loop applying one never interleave
    /// their reads and writes (sled runs `change` again on a conflict, so it must be
    /// pure). Written back only when `change` changed it; answers what `change` answered.
    pub fn update_refill_ledger<T>(
        &self,
        iccid: &str,
        change: impl Fn(&mut Ledger) -> T,
    ) -> Result<T, StoreError> {
        let le = self.tree(LEDGER)?;
        let out = le
            .transaction(|le| {
                let mut ledger: Ledger = match le.get(iccid.as_bytes())? {
                    Some(v) => decode(LEDGER, iccid.as_bytes(), &v)
                        .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?,
                    None => Ledger::default(),
                };
                let before = ledger.clone();
                let out = change(&mut ledger);
                if ledger != before {
                    let bytes = encode(LEDGER, &ledger)
                        .map_err(|e| ConflictableTransactionError::Abort(e.to_string()))?;
                    le.insert(iccid.as_bytes(), bytes)?;
                }
                Ok(out)
            })
            .map_err(|e| ledger_err(e, iccid))?;
        self.flush()?;
        Ok(out)
    }

    /// Apply a refill in one transaction, flushed: the SIM's new cached `record`, the
    /// request marked applied by `command` (when it names one), and the ledger, read
    /// inside the same transaction, told a refill arrived. A crash leaves all of it or
    /// none. A request already applied changes nothing: answers the command that did.
    pub fn apply_refill(
        &self,
        iccid: &str,
        record: &crate::sim::PlatformRecord,
        request_id: Option<&str>,
        command: &str,
    ) -> Result<Option<String>, StoreError> {
        let pl = self.tree(super::platform::TREE)?;
        let ap = self.tree(APPLIED)?;
        let le = self.tree(LEDGER)?;
        let rec_bytes = encode(super::platform::TREE, record)?;
        let cmd_bytes = encode(APPLIED, &command.to_string())?;
        let abort = |e: StoreError| ConflictableTransactionError::Abort(e.to_string());
        let before = (&pl, &ap, &le)
            .transaction(|(pl, ap, le)| {
                if let Some(r) = request_id {
                    if let Some(by) = ap.get(r.as_bytes())? {
                        return Ok(Some(
                            decode::<String>(APPLIED, r.as_bytes(), &by).map_err(abort)?,
                        ));
                    }
                }
                let mut ledger: Ledger = match le.get(iccid.as_bytes())? {
                    Some(v) => decode(LEDGER, iccid.as_bytes(), &v).map_err(abort)?,
                    None => Ledger::default(),
                };
                ledger.unanswered = 0;
                let ledger_bytes = encode(LEDGER, &ledger).map_err(abort)?;
                pl.insert(iccid.as_bytes(), rec_bytes.as_slice())?;
                if let Some(r) = request_id {
                    ap.insert(r.as_bytes(), cmd_bytes.as_slice())?;
                }
                le.insert(iccid.as_bytes(), ledger_bytes)?;
                Ok(None)
            })
            .map_err(|e| ledger_err(e, iccid))?;
        self.flush()?;
        Ok(before)
    }

    /// The command that applied refill request `request_id`, if one did.
    pub fn refill_applied(&self, request_id: &str) -> Result<Option<String>, StoreError> {
        self.get_json(APPLIED, request_id)
    }

    /// The rule whose `suspend` holds `iccid` down, if a rule did (a refill lifts it).
    pub fn rule_hold(&self, iccid: &str) -> Result<Option<String>, StoreError> {
        self.get_json(HOLD, iccid)
    }

    pub fn set_rule_hold(&self, iccid: &str, rule: Option<&str>) -> Result<(), StoreError> {
        match rule {
            Some(r) => self.put_json(HOLD, iccid, &r.to_string())?,
            None => {
                self.tree(HOLD)?.remove(iccid.as_bytes())?;
            }
        }
        self.flush()
    }

    pub fn estimate_base(&self, iccid: &str) -> Result<Option<EstimateBase>, StoreError> {
        self.get_json(BASE, iccid)
    }

    /// Count the local estimate of `iccid` from now: its usage counted so far this month
    /// is where the platform's figures stand.
    pub fn reset_estimate(&self, iccid: &str, now: u64) -> Result<(), StoreError> {
        let month = crate::time::month_key(now);
        let counted = self.month_usage(iccid, &month)?.total();
        self.put_json(
            BASE,
            iccid,
            &EstimateBase {
                at: now,
                month,
                counted,
            },
        )
    }

    /// The local estimate of `iccid`'s data and days left from its platform `record`;
    /// `None` when the record gives neither.
    pub fn estimate(
        &self,
        iccid: &str,
        record: &crate::sim::PlatformRecord,
        now: u64,
    ) -> Result<Option<crate::sim::Estimate>, StoreError> {
        if record.data_left_mb.is_none() && record.days_left.is_none() {
            return Ok(None);
        }
        let (since, used) = match self.estimate_base(iccid)? {
            Some(b) => (b.at, self.used_since_base(iccid, &b, now)?),
            None => (now, 0),
        };
        // MB of 10^6 bytes, as `this month (MB)` everywhere in simgate.
        let data_left_mb = record
            .data_left_mb
            .map(|d| ((d - used as f64 / 1e6).max(0.0) * 100.0).round() / 100.0);
        let days_left = record
            .days_left
            .map(|d| (f64::from(d) - (now.saturating_sub(since) / 86_400) as f64).max(0.0));
        Ok(Some(crate::sim::Estimate {
            data_left_mb,
            days_left,
            since,
        }))
    }

    /// Bytes this SIM used since its estimate base (this month and, across a month
    /// boundary, the rest of the base's month).
    pub fn used_since_base(
        &self,
        iccid: &str,
        base: &EstimateBase,
        now: u64,
    ) -> Result<u64, StoreError> {
        let month = crate::time::month_key(now);
        let in_base_month = self
            .month_usage(iccid, &base.month)?
            .total()
            .saturating_sub(base.counted);
        if month == base.month {
            return Ok(in_base_month);
        }
        // Every later month up to this one counts whole (a record older than a month).
        let mut total = in_base_month;
        let mut m = next_month(&base.month);
        while m.as_str() <= month.as_str() {
            total += self.month_usage(iccid, &m)?.total();
            m = next_month(&m);
        }
        Ok(total)
    }
}

/// The month key after "YYYY-MM" (one that does not parse ends the count: "9999-99").
fn next_month(m: &str) -> String {
    let parsed = m
        .split_once('-')
        .and_then(|(y, mo)| Some((y.parse::<u32>().ok()?, mo.parse::<u32>().ok()?)));
    match parsed {
        Some((y, 12)) => format!("{:04}-01", y + 1),
        Some((y, mo)) => format!("{y:04}-{:02}", mo + 1),
        None => "9999-99".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{ActionOutcome, Facts, RuleAction};

    fn firing(id: &str) -> FiringRecord {
        FiringRecord {
            iccid: "8988211000000430010".into(),
            firing: Firing {
                id: id.into(),
                rule: "cap".into(),
                trigger: "data_used_mb".into(),
                actions: vec![RuleAction::Suspend],
                facts: Facts::default(),
            },
            actions: vec![ActionOutcome {
                action: RuleAction::Suspend,
                outcome: None,
                reason: None,
            }],
            done: false,
            at: 1_000,
        }
    }

    #[test]
    fn months_follow_each_other_across_a_year() {
        assert_eq!(super::next_month("2026-11"), "2026-12");
        assert_eq!(super::next_month("2026-12"), "2027-01");
    }

    #[test]
    fn a_firing_is_stored_with_its_state_and_pending_until_done_then_forgotten() {
        let dir = std::env::temp_dir().join(format!("simgate-rules-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let mut state = SimRules::default();
        state.rules.entry("cap".into()).or_default().fired = 1;
        st.put_sim_rules("8988211000000430010", &state, &[firing("89.cap.1")])
            .unwrap();
        assert_eq!(st.sim_rules("8988211000000430010").unwrap(), state);
        let mut pending = st.pending_firings().unwrap();
        assert_eq!(pending.len(), 1);
        pending[0].done = true;
        st.put_firing(&pending[0]).unwrap();
        assert!(st.pending_firings().unwrap().is_empty());
        assert_eq!(st.forget_firings(1_000 + FIRING_MEMORY_SECS).unwrap(), 0);
        assert_eq!(st.forget_firings(1_001 + FIRING_MEMORY_SECS).unwrap(), 1);
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }
}
