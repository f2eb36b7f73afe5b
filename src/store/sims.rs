//! Per-ICCID SIM observations: the last thing simgate saw of every SIM.

use super::{Store, StoreError};
use crate::sim::Observed;

const TREE: &str = "sims";

impl Store {
    /// Record the latest observation of a SIM (keyed by ICCID).
    pub fn put_observed(&self, obs: &Observed) -> Result<(), StoreError> {
        let value = serde_json::to_vec(obs).map_err(|e| StoreError::Corrupt {
            tree: TREE,
            detail: e.to_string(),
        })?;
        self.tree(TREE)?.insert(obs.iccid.as_bytes(), value)?;
        Ok(())
    }

    /// The latest observation of `iccid`, if any.
    pub fn get_observed(&self, iccid: &str) -> Result<Option<Observed>, StoreError> {
        match self.tree(TREE)?.get(iccid.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    tree: TREE,
                    detail: format!("{iccid}: {e}"),
                }),
        }
    }

    /// Every SIM ever observed, by ICCID order.
    pub fn all_observed(&self) -> Result<Vec<Observed>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(TREE)?.iter() {
            let (k, v) = item?;
            out.push(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                tree: TREE,
                detail: format!("{}: {e}", String::from_utf8_lossy(&k)),
            })?);
        }
        Ok(out)
    }
}
