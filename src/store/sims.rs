//! Per-ICCID SIM observations: the last thing simgate saw of every SIM.

use super::{Store, StoreError};
use crate::sim::Observed;
use serde::{Deserialize, Serialize};

const TREE: &str = "sims";
/// ICCID → [`Owed`]: observations stored whose row and events are not queued for the
/// platform yet. Written in one transaction with the observation, removed once they
/// are queued; a start finds what a crash in between left (agent::Recorder::recover).
const OWED: &str = "sims_owed";

/// What a stored observation still owes the platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owed {
    /// The observation before it, from which its events follow (agent::changes).
    pub prev: Option<Observed>,
    /// Only the row (a SIM marked absent because another took its place: the events
    /// are the newcomer's).
    #[serde(default)]
    pub row_only: bool,
}

impl Store {
    /// A SIM's row as the platform and the station page get it: the observation, the
    /// cached platform record and the local estimate. The one way a row is built.
    pub fn row(&self, obs: &Observed) -> Result<crate::contract::SimState, StoreError> {
        let platform = self.get_platform(&obs.iccid)?;
        let mut state = crate::contract::SimState::merged(obs, platform.as_ref());
        if let Some(p) = &platform {
            state.estimate = self.estimate(&obs.iccid, p, crate::time::unix_now())?;
        }
        state.suspended_by = self.suspended_by(&obs.iccid)?;
        state.operator_estimate = self.operator_estimate(&obs.iccid)?;
        Ok(state)
    }

    /// Record an observation together with what it owes the platform, atomically; an
    /// older debt of the same SIM is kept (its `prev` is where the events start).
    pub fn put_observed_owing(&self, obs: &Observed, owed: &Owed) -> Result<(), StoreError> {
        use sled::Transactional;
        let (sims, debts) = (self.tree(TREE)?, self.tree(OWED)?);
        let value = super::encode(TREE, obs)?;
        let debt = super::encode(OWED, owed)?;
        let key = obs.iccid.as_bytes();
        (&sims, &debts)
            .transaction(|(s, d)| {
                s.insert(key, value.as_slice())?;
                if d.get(key)?.is_none() {
                    d.insert(key, debt.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    tree: OWED,
                    detail: "transaction aborted".into(),
                },
            })
    }

    /// The row and events of `iccid` are in the outbox: its debt is paid. Not flushed
    /// by itself (the outbox's flush, or the next, takes it): lost to a crash, it costs
    /// the row and events once more at the next start, never their loss.
    pub fn paid(&self, iccid: &str) -> Result<(), StoreError> {
        self.tree(OWED)?.remove(iccid.as_bytes())?;
        Ok(())
    }

    /// Every debt left, by ICCID.
    pub fn owed(&self) -> Result<Vec<(String, Owed)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(OWED)?.iter() {
            let (k, v) = item?;
            let iccid = String::from_utf8_lossy(&k).into_owned();
            let owed: Owed = serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                tree: OWED,
                detail: format!("{iccid}: {e}"),
            })?;
            out.push((iccid, owed));
        }
        Ok(out)
    }

    /// Record the latest observation of a SIM (keyed by ICCID).
    pub fn put_observed(&self, obs: &Observed) -> Result<(), StoreError> {
        self.put_json(TREE, &obs.iccid, obs)
    }

    /// The latest observation of `iccid`, if any.
    pub fn get_observed(&self, iccid: &str) -> Result<Option<Observed>, StoreError> {
        Ok(self.get_json(TREE, iccid)?.map(upgrade))
    }

    /// Every SIM ever observed, by ICCID order.
    pub fn all_observed(&self) -> Result<Vec<Observed>, StoreError> {
        Ok(self.all_json(TREE)?.into_iter().map(upgrade).collect())
    }
}

/// A row written before the batch attributes went flat carries them nested.
fn upgrade(mut obs: Observed) -> Observed {
    if let Some(b) = obs.nested_batch.take() {
        if obs.batch.is_empty() {
            obs.batch = b;
        }
    }
    obs
}

#[cfg(test)]
mod tests {
    use crate::sim::Location;
    use crate::store::Store;

    #[test]
    fn a_row_stored_with_its_batch_nested_is_read_with_it() {
        let dir = std::env::temp_dir().join(format!("simgate-sims-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let old = r#"{"iccid":"8988211000000430010","iccid_luhn_ok":true,"in_session":"n/a","location":{"kind":"reader","reader":"R"},"present":true,"observed_at":1,"batch":{"labels":["lot-9"],"company":"ACME"}}"#;
        st.tree("sims")
            .unwrap()
            .insert("8988211000000430010", old.as_bytes())
            .unwrap();
        let obs = st.get_observed("8988211000000430010").unwrap().unwrap();
        assert_eq!(obs.batch.labels, ["lot-9"]);
        assert_eq!(obs.batch.company.as_deref(), Some("ACME"));
        assert_eq!(obs.location, Location::Reader { reader: "R".into() });
        // Written back flat.
        st.put_observed(&obs).unwrap();
        let again = st.get_observed("8988211000000430010").unwrap().unwrap();
        assert_eq!(again.batch, obs.batch);
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_debt_is_stored_with_its_observation_keeps_its_first_prev_and_is_paid_once() {
        use super::Owed;
        use crate::sim::Observed;
        let dir = std::env::temp_dir().join(format!("simgate-owed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let at = Location::Reader { reader: "R".into() };
        let first = Observed::new("8988211000000430010", true, at.clone(), 1);
        let gone = Observed {
            present: false,
            ..Observed::new("8988211000000430010", true, at, 2)
        };
        let owed = |prev: Option<&Observed>| Owed {
            prev: prev.cloned(),
            row_only: false,
        };
        st.put_observed_owing(&first, &owed(None)).unwrap();
        // Recorded again before the first debt was paid (a crash in between): the
        // events still start from the first one's `prev`.
        st.put_observed_owing(&gone, &owed(Some(&first))).unwrap();
        assert_eq!(st.get_observed(&first.iccid).unwrap().unwrap(), gone);
        assert_eq!(st.owed().unwrap(), vec![(first.iccid.clone(), owed(None))]);
        st.paid(&first.iccid).unwrap();
        assert!(st.owed().unwrap().is_empty());
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }
}
