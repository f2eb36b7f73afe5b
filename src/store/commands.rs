//! Platform commands seen by this agent, by command id: what makes a command take
//! effect exactly once. A command's record is written (and flushed) before its effect,
//! and its outcome before the outcome is reported; a redelivered or repeated id finds
//! its record here and is answered from it, never executed again.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

const TREE: &str = "commands";

/// Where a command stands, in thin-edge.io's lifecycle words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandState {
    Received,
    Executing,
    Successful,
    Failed,
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
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    pub received_at: u64,
    pub updated_at: u64,
}

impl Store {
    /// The record of command `id`, if it was ever seen.
    pub fn get_command(&self, id: &str) -> Result<Option<CommandRecord>, StoreError> {
        self.get_json(TREE, id)
    }

    /// Write a command's record and flush: after this returns, a crash cannot make the
    /// command run again.
    pub fn put_command(&self, rec: &CommandRecord) -> Result<(), StoreError> {
        self.put_json(TREE, &rec.id, rec)?;
        self.flush()
    }

    /// Every command record (for the start-up sweep).
    pub fn all_commands(&self) -> Result<Vec<CommandRecord>, StoreError> {
        self.all_json(TREE)
    }

    /// Forget a command's record (old ones, once the platform cannot resend them).
    pub fn remove_command(&self, id: &str) -> Result<(), StoreError> {
        self.tree(TREE)?.remove(id.as_bytes())?;
        Ok(())
    }

    /// Record command `id` as received unless it is known. Returns the existing record
    /// when it is (a duplicate), None when this is its first sighting. Atomic, so two
    /// deliveries racing each other cannot both be first.
    pub fn claim_command(&self, rec: &CommandRecord) -> Result<Option<CommandRecord>, StoreError> {
        let value = super::encode(TREE, rec)?;
        let tree = self.tree(TREE)?;
        match tree.compare_and_swap(rec.id.as_bytes(), None as Option<&[u8]>, Some(value))? {
            Ok(()) => {
                self.flush()?;
                Ok(None)
            }
            Err(_) => self.get_command(&rec.id),
        }
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
            reason: None,
            received_at: 1,
            updated_at: 1,
        };
        assert_eq!(st.claim_command(&rec).unwrap(), None);
        rec.state = CommandState::Successful;
        st.put_command(&rec).unwrap();
        let again = st.claim_command(&rec).unwrap().unwrap();
        assert_eq!(again.state, CommandState::Successful);
        drop(st);
        let _ = std::fs::remove_dir_all(dir);
    }
}
