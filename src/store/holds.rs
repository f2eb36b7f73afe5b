//! Standing orders on SIMs that must outlive simgate: a suspended SIM stays suspended
//! across restarts and power cuts until the platform resumes it (MQTT.md, "Commands";
//! a rule's suspension is lifted by a refill, MQTT.md "Refill").

use super::{Store, StoreError};

const TREE: &str = "suspended";
/// Who set each standing suspension, and since when (a `SuspendedBy` as JSON): written
/// by the command or rule that suspended, read only while the suspension stands.
const BY: &str = "suspended_by";

impl Store {
    /// Record (flushed) that `iccid`'s data session must be kept down, or no longer.
    pub fn set_suspended(&self, iccid: &str, suspended: bool) -> Result<(), StoreError> {
        let tree = self.tree(TREE)?;
        if suspended {
            tree.insert(iccid.as_bytes(), &[1u8][..])?;
        } else {
            tree.remove(iccid.as_bytes())?;
        }
        self.flush()
    }

    /// Record who suspended `iccid` (None: the suspension was lifted). Flushed.
    pub fn set_suspended_by(
        &self,
        iccid: &str,
        by: Option<&crate::contract::SuspendedBy>,
    ) -> Result<(), StoreError> {
        match by {
            Some(b) => self.put_json(BY, iccid, b)?,
            None => {
                self.tree(BY)?.remove(iccid.as_bytes())?;
            }
        }
        self.flush()
    }

    /// The standing suspension of `iccid` and who set it: None when none stands (the
    /// modem supervisor's record says whether one does; a suspension from before this
    /// record was kept is told with its origin unknown: `{}`).
    pub fn suspended_by(
        &self,
        iccid: &str,
    ) -> Result<Option<crate::contract::SuspendedBy>, StoreError> {
        if !self.tree(TREE)?.contains_key(iccid.as_bytes())? {
            return Ok(None);
        }
        Ok(Some(self.get_json(BY, iccid)?.unwrap_or(
            crate::contract::SuspendedBy {
                command: None,
                rule: None,
                since: None,
            },
        )))
    }

    /// Every ICCID whose data session must be kept down.
    pub fn suspended_iccids(&self) -> Result<Vec<String>, StoreError> {
        self.tree(TREE)?
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[test]
    fn a_suspension_is_kept_until_lifted_and_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("simgate-holds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(&dir).unwrap();
            store.set_suspended("8988211000000430010", true).unwrap();
            store.set_suspended("8988211000000530082", true).unwrap();
            store.set_suspended("8988211000000530082", false).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(
            store.suspended_iccids().unwrap(),
            vec!["8988211000000430010".to_string()]
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
