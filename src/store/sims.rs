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
}
