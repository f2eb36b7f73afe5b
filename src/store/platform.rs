//! The platform's record per ICCID, cached so the local view and the rules work offline.

use super::{Store, StoreError};
use crate::sim::PlatformRecord;

pub(super) const TREE: &str = "platform";
/// Per ICCID (as the topic named it), the fingerprint of the last record refused.
const REFUSED: &str = "platform_refused";
/// Per ICCID, the fingerprint of the last record received as the platform sent it.
const RECEIVED: &str = "platform_received";

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

    /// Note that a valid record with fingerprint `hash` arrived for `key`. Returns whether
    /// it is the one received last: a retained record redelivered on a reconnect is no
    /// news, and must not undo what simgate applied to its cached copy since (a refill).
    pub fn note_received_platform(&self, key: &str, hash: u64) -> Result<bool, StoreError> {
        let old = self
            .tree(RECEIVED)?
            .insert(key.as_bytes(), &hash.to_be_bytes())?;
        Ok(old.as_deref() == Some(&hash.to_be_bytes()[..]))
    }

    /// Whether the record published for `key` with fingerprint `hash` was refused and
    /// reported before: the broker redelivers a retained record on every connection
    /// (and to every start of the agent), and its refusal is reported once per change
    /// (MQTT.md, "Platform record").
    pub fn refused_platform_known(&self, key: &str, hash: u64) -> Result<bool, StoreError> {
        Ok(self.tree(REFUSED)?.get(key.as_bytes())?.as_deref() == Some(&hash.to_be_bytes()[..]))
    }

    /// Remember that the record for `key` with fingerprint `hash` was refused and its
    /// report queued (flushed: the next start must know it). Called only after the
    /// report is in the outbox, so a crash in between reports it again rather than never.
    pub fn note_refused_platform(&self, key: &str, hash: u64) -> Result<(), StoreError> {
        self.tree(REFUSED)?
            .insert(key.as_bytes(), &hash.to_be_bytes())?;
        self.flush()
    }

    /// A valid record (or none) arrived for `key`: forget an earlier refusal, so the
    /// same bad record sent again is a change, reported again.
    pub fn clear_refused_platform(&self, key: &str) -> Result<(), StoreError> {
        self.tree(REFUSED)?.remove(key.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_record_is_new_once_per_change_and_again_after_a_valid_one() {
        let dir = std::env::temp_dir().join(format!("simgate-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let k = "8988211000000430010";
        assert!(!st.refused_platform_known(k, 1).unwrap());
        st.note_refused_platform(k, 1).unwrap();
        assert!(st.refused_platform_known(k, 1).unwrap(), "redelivered");
        assert!(!st.refused_platform_known(k, 2).unwrap(), "changed");
        st.note_refused_platform(k, 2).unwrap();
        st.clear_refused_platform(k).unwrap();
        assert!(
            !st.refused_platform_known(k, 2).unwrap(),
            "after a valid one"
        );
        st.note_refused_platform(k, 2).unwrap();
        drop(st);
        let st = Store::open(&dir).unwrap();
        assert!(
            st.refused_platform_known(k, 2).unwrap(),
            "kept across restarts"
        );
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }
}
