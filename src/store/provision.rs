//! A provisioning station's assignments (`simgate station --provision`): which activation
//! code went to which eUICC, keyed by the code's digest (src/station/codes.rs: the code
//! itself holds the matching ID, a secret the store never keeps). An assignment is
//! written and flushed before its download starts and again before its package is
//! loaded, so a crash, a pulled card or a restart never hands one code to two cards: a
//! code is free only while no record names it.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

const TREE: &str = "provision";

/// One code's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The code's digest (the key).
    pub code: String,
    pub eid: String,
    pub state: AssignState,
    /// Unix seconds of the last change.
    pub at: u64,
}

/// Where a code stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AssignState {
    /// Given to the eUICC; its download has not loaded anything yet (no profile can have
    /// landed: SGP.22 §2.5.5, a profile comes only with the package).
    Assigned,
    /// Its package is being loaded: what the card holds is unknown until reconciled
    /// (rsp::download::reconcile_interrupted) with this transaction and ICCID.
    Loading {
        smdp: String,
        transaction_id: String,
        iccid: String,
    },
    /// Its profile is on the eUICC: the code is spent.
    Used { iccid: String },
    /// The SM-DP+ refused the code itself (an unknown or spent matching ID, a wrong
    /// confirmation code): not offered again.
    Refused { why: String },
}

impl Store {
    /// Store (flushed) a code's assignment.
    pub fn put_assignment(&self, a: &Assignment) -> Result<(), StoreError> {
        self.put_json(TREE, &a.code, a)?;
        self.flush()
    }

    /// The code is free again (its download did not land): forget it (flushed).
    pub fn release_assignment(&self, code: &str) -> Result<(), StoreError> {
        self.tree(TREE)?.remove(code.as_bytes())?;
        self.flush()
    }

    /// Every assignment, in key order.
    pub fn assignments(&self) -> Result<Vec<Assignment>, StoreError> {
        self.all_json(TREE)
    }

    /// The assignments' count and their bytes in the store (keys and values): the
    /// figure a station's operator sizes the state directory by.
    pub fn assignment_bytes(&self) -> Result<(usize, u64), StoreError> {
        let mut n = 0;
        let mut bytes = 0;
        for item in self.tree(TREE)?.iter() {
            let (k, v) = item?;
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok((n, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_survives_reopening_until_released() {
        let dir = std::env::temp_dir().join(format!("simgate-assign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Assignment {
            code: "00112233445566778899aabbccddeeff".into(),
            eid: "89049032123451234512345678910062".into(),
            state: AssignState::Loading {
                smdp: "127.0.0.1:8443".into(),
                transaction_id: "0A0B".into(),
                iccid: "8900101000000000019".into(),
            },
            at: 1,
        };
        {
            let store = Store::open(&dir).unwrap();
            store.put_assignment(&a).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.assignments().unwrap(), std::slice::from_ref(&a));
        assert_eq!(store.assignment_bytes().unwrap().0, 1);
        store.release_assignment(&a.code).unwrap();
        assert!(store.assignments().unwrap().is_empty());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
