//! Per-ICCID SIM observations: the last thing simgate saw of every SIM.

use super::{Store, StoreError};
use crate::sim::Observed;

const TREE: &str = "sims";

impl Store {
    /// Record the latest observation of a SIM (keyed by ICCID).
    pub fn put_observed(&self, obs: &Observed) -> Result<(), StoreError> {
        self.put_json(TREE, &obs.iccid, obs)
    }

    /// The latest observation of `iccid`, if any.
    pub fn get_observed(&self, iccid: &str) -> Result<Option<Observed>, StoreError> {
        self.get_json(TREE, iccid)
    }

    /// Every SIM ever observed, by ICCID order.
    pub fn all_observed(&self) -> Result<Vec<Observed>, StoreError> {
        self.all_json(TREE)
    }
}
