//! Guided SIM swaps under way (MQTT.md, "Swap"), by swap command id: the one durable
//! workflow a platform `swap` command and `simgate swap` share. A swap's record is
//! written (flushed) before each step acts on the modem, so a kill -9 or a power cut at
//! any point leaves what is needed to resume or roll back at the next start
//! (src/daemon/swap.rs); it is deleted once the swap committed or rolled back, when the
//! command's own record (store::commands) holds the outcome.

use super::{Store, StoreError};
use crate::contract::{SwapStep, SwapTarget};
use serde::{Deserialize, Serialize};

const TREE: &str = "swaps";

/// One swap under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapRecord {
    /// The swap command's id.
    pub id: String,
    /// The modem port it runs on.
    pub port: String,
    /// The SIM being replaced, as recorded at `prepare`.
    pub old_iccid: String,
    /// The slot it sat in (counted from 1), when the modem has slots.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub old_slot: Option<u8>,
    pub target: SwapTarget,
    /// The step begun last (stored before it acts).
    pub step: SwapStep,
    /// The SIM detected in its place, once seen.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub new_iccid: Option<String>,
    /// Set when a step failed: that step and why; the swap is rolling back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failed: Option<(SwapStep, String)>,
    pub started_at: u64,
    /// A failed step keeps the new SIM or profile (no rollback): an `esim_download`
    /// with `rollback_on_failure: false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_on_failure: bool,
}

impl SwapRecord {
    /// The ICCIDs whose rows show Pending while this swap runs.
    pub fn pending_iccids(&self) -> Vec<&str> {
        let mut v = vec![self.old_iccid.as_str()];
        v.extend(self.new_iccid.as_deref().filter(|n| *n != self.old_iccid));
        v
    }

    /// Why a row is Pending while this swap runs (the row's `pending`).
    pub fn pending_reason(&self) -> String {
        match &self.target {
            SwapTarget::ToSlot(n) => format!("swap {} to slot {n} under way", self.id),
            SwapTarget::ExpectIccid(i) => format!("swap {} to SIM {i} under way", self.id),
            SwapTarget::ToProfile(i) => format!("swap {} to profile {i} under way", self.id),
        }
    }
}

impl Store {
    /// Store (flushed) a swap's record as it enters a step.
    pub fn put_swap(&self, rec: &SwapRecord) -> Result<(), StoreError> {
        self.put_json(TREE, &rec.id, rec)?;
        self.flush()
    }

    /// The swap ended (committed or rolled back): forget it (flushed).
    pub fn remove_swap(&self, id: &str) -> Result<(), StoreError> {
        self.tree(TREE)?.remove(id.as_bytes())?;
        self.flush()
    }

    pub fn get_swap(&self, id: &str) -> Result<Option<SwapRecord>, StoreError> {
        self.get_json(TREE, id)
    }

    /// Every swap under way (at most one per modem port).
    pub fn swaps(&self) -> Result<Vec<SwapRecord>, StoreError> {
        self.all_json(TREE)
    }

    /// The swap that involves `iccid`, old or new, if one is under way.
    pub fn swap_of(&self, iccid: &str) -> Result<Option<SwapRecord>, StoreError> {
        Ok(self
            .swaps()?
            .into_iter()
            .find(|s| s.pending_iccids().contains(&iccid)))
    }

    /// The swap under way on modem `port`, if one is (its SIM changes are the swap's
    /// to report).
    pub fn swap_on_port(&self, port: &str) -> Result<Option<SwapRecord>, StoreError> {
        Ok(self.swaps()?.into_iter().find(|s| s.port == port))
    }

    /// The `pending` reason of `iccid`'s row: set while a swap involving it is under way.
    pub fn swap_pending(&self, iccid: &str) -> Result<Option<String>, StoreError> {
        Ok(self.swap_of(iccid)?.map(|s| s.pending_reason()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swap_record_survives_reopening_and_is_found_by_either_sim_until_removed() {
        let dir = std::env::temp_dir().join(format!("simgate-swaps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rec = SwapRecord {
            id: "sw-1".into(),
            port: "/dev/ttyUSB2".into(),
            old_iccid: "8901260886258128535".into(),
            old_slot: Some(1),
            target: SwapTarget::ToSlot(2),
            step: SwapStep::Verify,
            new_iccid: Some("89314404000000000019".into()),
            failed: None,
            started_at: 1_795_702_000,
            keep_on_failure: false,
        };
        {
            let store = Store::open(&dir).unwrap();
            store.put_swap(&rec).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.swaps().unwrap(), vec![rec.clone()]);
        assert_eq!(
            store.swap_of("89314404000000000019").unwrap(),
            Some(rec.clone())
        );
        assert_eq!(store.swap_of("8988211000000430010").unwrap(), None);
        // What a record costs: reported as a figure (README.md, "Tests and
        // measurements").
        let bytes = serde_json::to_vec(&rec).unwrap().len();
        assert!(bytes < 512, "{bytes} bytes");
        store.remove_swap("sw-1").unwrap();
        assert_eq!(store.swaps().unwrap(), vec![]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
