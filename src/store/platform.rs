//! The platform's record per ICCID, cached so the local view and the rules work offline.

use super::{Store, StoreError};
use crate::sim::PlatformRecord;

const TREE: &str = "platform";

impl Store {
    /// Cache the platform's record for `iccid` (flushed: it is the platform's word).
    pub fn put_platform(&self, iccid: &str, rec: &PlatformRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt {
            tree: TREE,
            detail: e.to_string(),
        })?;
        self.tree(TREE)?.insert(iccid.as_bytes(), value)?;
        self.flush()
    }

    /// The cached platform record of `iccid`, if the platform ever sent one.
    pub fn get_platform(&self, iccid: &str) -> Result<Option<PlatformRecord>, StoreError> {
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
}
