//! The platform's record per ICCID, cached so the local view and the rules work offline.

use super::{Store, StoreError};
use crate::contract::payload_hash;
use crate::sim::PlatformRecord;

pub(super) const TREE: &str = "platform";
/// Per ICCID (as the topic named it), the fingerprint of the last record refused.
const REFUSED: &str = "platform_refused";
/// Refusals remembered at most. Anyone who may publish under the agent's prefix can
/// invent topics without end; past this many, the entry with the smallest key is
/// forgotten, and its record, if ever redelivered, is reported once more (at least
/// once, as MQTT.md's "Platform record" allows) — the store stays bounded.
const MAX_REFUSED: usize = 1024;
/// A topic segment longer than this is remembered by its fingerprint, not its bytes (a
/// topic level may be up to 64 KiB).
const MAX_KEY: usize = 32;

/// The refusal tree's key for `key`: itself when short (every valid ICCID or EID),
/// else `#` and its FNV-1a fingerprint in hex.
fn refused_key(key: &str) -> Vec<u8> {
    if key.len() <= MAX_KEY {
        key.as_bytes().to_vec()
    } else {
        format!("#{:016x}", payload_hash(key.as_bytes())).into_bytes()
    }
}
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
        Ok(self.tree(REFUSED)?.get(refused_key(key))?.as_deref() == Some(&hash.to_be_bytes()[..]))
    }

    /// Remember that the record for `key` with fingerprint `hash` was refused and its
    /// report queued (flushed: the next start must know it). Called only after the
    /// report is in the outbox, so a crash in between reports it again rather than never.
    pub fn note_refused_platform(&self, key: &str, hash: u64) -> Result<(), StoreError> {
        let tree = self.tree(REFUSED)?;
        let key = refused_key(key);
        if !tree.contains_key(&key)? && tree.len() >= MAX_REFUSED {
            tree.pop_min()?;
        }
        tree.insert(key, &hash.to_be_bytes())?;
        self.flush()
    }

    /// A valid record (or none) arrived for `key`: forget an earlier refusal, so the
    /// same bad record sent again is a change, reported again.
    pub fn clear_refused_platform(&self, key: &str) -> Result<(), StoreError> {
        self.tree(REFUSED)?.remove(refused_key(key))?;
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

    /// Regression: every distinct topic a publisher invented under the agent's prefix
    /// added an entry, for ever (the store grew without bound under a hostile or buggy
    /// publisher).
    #[test]
    fn refusals_of_invented_topics_are_bounded_and_long_topics_kept_by_fingerprint() {
        let dir = std::env::temp_dir().join(format!("simgate-refused-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        for i in 0..MAX_REFUSED + 200 {
            st.note_refused_platform(&format!("junk-{i}-{}", "x".repeat(i % 100)), 7)
                .unwrap();
        }
        let tree = st.tree(REFUSED).unwrap();
        assert_eq!(tree.len(), MAX_REFUSED);
        assert!(tree.iter().keys().all(|k| k.unwrap().len() <= MAX_KEY + 1));
        let long = "y".repeat(60_000);
        st.note_refused_platform(&long, 9).unwrap();
        assert!(
            st.refused_platform_known(&long, 9).unwrap(),
            "a long key is remembered"
        );
        assert_eq!(tree.len(), MAX_REFUSED);
        drop((tree, st));
        let _ = std::fs::remove_dir_all(dir);
    }
}
