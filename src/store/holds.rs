//! Standing orders on SIMs that must outlive simgate: a suspended SIM stays suspended
//! across restarts and power cuts until the platform resumes it (MQTT.md, "Commands";
//! a rule's suspension is lifted by a refill, MQTT.md "Refill").

use super::{Store, StoreError};

const TREE: &str = "suspended";

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
