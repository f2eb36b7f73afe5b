//! The platform's record per ICCID, cached so the local view and the rules work offline.

use super::{Store, StoreError};
use crate::sim::PlatformRecord;

const TREE: &str = "platform";

impl Store {
    /// Cache the platform's record for `iccid` (flushed: it is the platform's word).
    pub fn put_platform(&self, iccid: &str, rec: &PlatformRecord) -> Result<(), StoreError> {
        self.put_json(TREE, iccid, rec)?;
        self.flush()
    }

    /// The cached platform record of `iccid`, if the platform ever sent one.
    pub fn get_platform(&self, iccid: &str) -> Result<Option<PlatformRecord>, StoreError> {
        self.get_json(TREE, iccid)
    }
}
