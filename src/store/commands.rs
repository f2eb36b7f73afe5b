//! Platform commands seen by this agent, by command id: what makes a command take
//! effect exactly once. A command's record is written (and flushed) before its effect,
//! and its outcome before the outcome is reported; a redelivered or repeated id finds
//! its record here and is answered from it, never executed again.

use super::{Store, StoreError};
use crate::contract::RefusalCode;
use serde::{Deserialize, Serialize};

pub(super) const TREE: &str = "commands";
/// keep_until (u64 big-endian) + id → (): the ids in the order they may be forgotten.
const EXPIRY: &str = "commands_expiry";

/// At most this many command ids are remembered at once. Each costs about 840 bytes on
/// disk with its index entry (benches/store.rs: 8.4 MB after 100 000 ids, 10 000 held),
/// so the commands take some 10 MB at most; an id past the
/// cap is refused as `too_many_commands` and not remembered (MQTT.md, "Exactly once").
pub const MAX_COMMAND_IDS: u64 = 10_000;

/// How long a record written by a simgate that did not yet keep `keep_until` is kept
/// after its last update: the 90 days commands could then live.
const LEGACY_MEMORY_SECS: u64 = crate::contract::COMMAND_MEMORY_SECS;

crate::sim::wire_words! {
    /// Where a command stands, in thin-edge.io's lifecycle words (the store's and the
    /// log's: the same words as on the wire).
    pub enum CommandState {
        Received = "received",
        Executing = "executing",
        Successful = "successful",
        Failed = "failed",
    }
}

impl CommandState {
    pub fn is_final(self) -> bool {
        matches!(self, CommandState::Successful | CommandState::Failed)
    }
}

/// The stored record of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub iccid: String,
    pub action: String,
    pub state: CommandState,
    /// Why it failed, as a code (`Failed` only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub code: Option<RefusalCode>,
    /// Why it failed, for humans.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub received_at: u64,
    pub updated_at: u64,
    /// The id is remembered until then (Unix seconds): the command's `expires_at`,
    /// after which a repeat is refused as expired anyway. 0: a record from an older
    /// simgate, kept 90 days after its last update.
    #[serde(default)]
    pub keep_until: u64,
    /// A final outcome stored but not yet queued for the platform: set with the outcome,
    /// cleared once its report is in the outbox. A start finding it set reports the
    /// outcome then (the run before died in between). Absent: reported.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreported: bool,
    /// A finished `sync`: how many rows it published (its status's end marker, the
    /// same when a repeat is answered from this record).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rows: Option<u64>,
    /// An `esim_download`'s installed profile (ICCID), once it landed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub profile: Option<String>,
}

impl CommandRecord {
    fn forget_after(&self) -> u64 {
        match self.keep_until {
            0 => self.updated_at.saturating_add(LEGACY_MEMORY_SECS),
            t => t,
        }
    }
}

/// What claiming a command id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First sighting: the record is stored (flushed).
    New,
    /// Seen before: its record.
    Known(CommandRecord),
    /// [`MAX_COMMAND_IDS`] unexpired ids are held: nothing was stored.
    Full,
}

fn expiry_key(at: u64, id: &str) -> Vec<u8> {
    let mut k = at.to_be_bytes().to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

impl Store {
    /// The record of command `id`, if it is remembered.
    pub fn get_command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.get_json(TREE, id)
    }

    /// Write a command's record and flush: after this returns, a crash cannot make the
    /// command run again.
    pub fn put_command(&self, rec: &CommandRecord) -> Result<(), StoreError> {
        let new = self
            .tree(TREE)?
            .insert(rec.id.as_bytes(), super::encode(TREE, rec)?)?;
        self.tree(EXPIRY)?
            .insert(expiry_key(rec.forget_after(), &rec.id), &[])?;
        if new.is_none() {
            self.count_commands(1)?;
        }
        self.flush()
    }

    /// The outcome of command `id` is in the outbox now: clear its `unreported` mark
    /// (flushed; commands are rare). A crash before this reaches the disk costs one
    /// more report of the same outcome at the next start, never a missing one.
    pub fn mark_reported(&self, id: &str) -> Result<(), StoreError> {
        if let Some(mut rec) = self.get_command(id)? {
            if rec.unreported {
                rec.unreported = false;
                self.tree(TREE)?
                    .insert(id.as_bytes(), super::encode(TREE, &rec)?)?;
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Every command record (for the start-up sweep).
    pub fn all_commands(&self) -> Result<Vec<CommandRecord>, StoreError> {
        self.all_json(TREE)
    }

    /// Forget a command's record.
    pub fn remove_command(&self, id: &str) -> Result<(), StoreError> {
        if let Some(v) = self.tree(TREE)?.remove(id.as_bytes())? {
            let rec: CommandRecord = super::decode(TREE, id.as_bytes(), &v)?;
            self.tree(EXPIRY)?
                .remove(expiry_key(rec.forget_after(), id))?;
            self.count_commands(-1)?;
        }
        self.remove_command_result(id)
    }

    /// Record command `id` unless it is known; atomic, so two deliveries racing each
    /// other cannot both be first. Past [`MAX_COMMAND_IDS`] remembered ids, the ones
    /// whose time is up are forgotten first; if that frees nothing, the claim is
    /// refused (`Claim::Full`) and nothing is stored. A known id is always answered.
    pub fn claim_command(&self, rec: &CommandRecord, now: u64) -> Result<Claim, StoreError> {
        if let Some(known) = self.get_command(&rec.id)? {
            return Ok(Claim::Known(known));
        }
        if self.count_commands(0)? >= MAX_COMMAND_IDS {
            self.forget_commands(now)?;
            if self.count_commands(0)? >= MAX_COMMAND_IDS {
                return Ok(Claim::Full);
            }
        }
        let value = super::encode(TREE, rec)?;
        let tree = self.tree(TREE)?;
        match tree.compare_and_swap(rec.id.as_bytes(), None as Option<&[u8]>, Some(value))? {
            Ok(()) => {
                self.tree(EXPIRY)?
                    .insert(expiry_key(rec.forget_after(), &rec.id), &[])?;
                self.count_commands(1)?;
                self.flush()?;
                Ok(Claim::New)
            }
            Err(_) => Ok(self.get_command(&rec.id)?.map_or(Claim::New, Claim::Known)),
        }
    }

    /// Forget the finished commands whose time is up (`keep_until` before `now`).
    /// Unfinished ones stay until they finish. Returns how many were forgotten.
    pub fn forget_commands(&self, now: u64) -> Result<u64, StoreError> {
        let expiry = self.tree(EXPIRY)?;
        let mut forgotten = 0;
        for item in expiry.range(..now.to_be_bytes().to_vec()) {
            let (k, _) = item?;
            let id = String::from_utf8_lossy(&k[8.min(k.len())..]).into_owned();
            match self.get_command(&id)? {
                Some(rec) if !rec.state.is_final() => continue,
                Some(rec) if expiry_key(rec.forget_after(), &id) != k.as_ref() => {
                    // A stale index entry: the record is kept until another time.
                    expiry.remove(&k)?;
                }
                Some(_) => {
                    self.remove_command(&id)?;
                    forgotten += 1;
                }
                None => {
                    expiry.remove(&k)?;
                }
            }
        }
        Ok(forgotten)
    }

    /// The number of remembered command ids, moved by `delta`.
    fn count_commands(&self, delta: i64) -> Result<u64, StoreError> {
        let mut n = self.commands_len.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_add_signed(delta);
        Ok(*n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_claimed_once_and_a_second_claim_gets_the_record() {
        let dir = std::env::temp_dir().join(format!("simgate-cmds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let mut rec = CommandRecord {
            id: "c1".into(),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state: CommandState::Received,
            code: None,
            reason: None,
            received_at: 1,
            updated_at: 1,
            keep_until: 100,
            unreported: false,
            rows: None,
            profile: None,
        };
        assert_eq!(st.claim_command(&rec, 1).unwrap(), Claim::New);
        rec.state = CommandState::Successful;
        st.put_command(&rec).unwrap();
        let Claim::Known(again) = st.claim_command(&rec, 1).unwrap() else {
            panic!("claimed twice")
        };
        assert_eq!(again.state, CommandState::Successful);
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn rec(id: &str, state: CommandState, keep_until: u64) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state,
            code: None,
            reason: None,
            received_at: 1,
            updated_at: 1,
            keep_until,
            unreported: false,
            rows: None,
            profile: None,
        }
    }

    #[test]
    fn ids_are_capped_known_ones_still_answered_and_expired_ones_make_room() {
        let dir = std::env::temp_dir().join(format!("simgate-cmds-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let st = Store::open(&dir).unwrap();
        let now = 1_000;
        // Half the cap expires at 1 500, half at 5 000; an unfinished one at 1 200.
        for i in 0..MAX_COMMAND_IDS - 1 {
            let until = if i % 2 == 0 { 1_500 } else { 5_000 };
            let claim =
                st.claim_command(&rec(&format!("c{i}"), CommandState::Successful, until), now);
            assert_eq!(claim.unwrap(), Claim::New);
        }
        assert_eq!(
            st.claim_command(&rec("run", CommandState::Executing, 1_200), now)
                .unwrap(),
            Claim::New
        );
        // Full: a new id is refused and not stored; a known one is answered.
        assert_eq!(
            st.claim_command(&rec("new", CommandState::Received, 9_000), now)
                .unwrap(),
            Claim::Full
        );
        assert_eq!(st.get_command("new").unwrap(), None);
        assert!(matches!(
            st.claim_command(&rec("c1", CommandState::Received, 9_000), now).unwrap(),
            Claim::Known(r) if r.state == CommandState::Successful
        ));
        // Once the first half's time is up, they make room; the unfinished one stays.
        assert_eq!(
            st.claim_command(&rec("new", CommandState::Received, 9_000), 2_000)
                .unwrap(),
            Claim::New
        );
        assert_eq!(st.get_command("c0").unwrap(), None);
        assert!(st.get_command("c1").unwrap().is_some());
        assert!(
            st.get_command("run").unwrap().is_some(),
            "an unfinished command was forgotten"
        );
        drop(st);
        // The count survives a reopen.
        let st = Store::open(&dir).unwrap();
        assert_eq!(st.count_commands(0).unwrap(), MAX_COMMAND_IDS / 2 + 1);
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_legacy_record_without_keep_until_is_kept_ninety_days_after_its_update() {
        let r = rec("old", CommandState::Successful, 0);
        assert_eq!(r.forget_after(), 1 + 90 * 86_400);
        let old: CommandRecord = serde_json::from_str(
            r#"{"id":"o","iccid":"8988211000000430010","action":"refresh","state":"failed","reason":"not_hosted: x","received_at":5,"updated_at":5}"#,
        )
        .unwrap();
        assert_eq!((old.keep_until, old.code), (0, None));
    }
}
