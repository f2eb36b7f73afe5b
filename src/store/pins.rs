//! What simgate did with a configured PIN, per ICCID, so it is never tried twice in a
//! boot and never again once refused — also across restarts and power cuts (a wrong PIN
//! retried at every start would block the SIM in three). Never the PIN itself.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

const TREE: &str = "pin_tries";

/// The configured PIN's record for one SIM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinTry {
    /// The boot (the kernel's boot id) of the last attempt: one attempt per boot.
    pub boot: String,
    /// The SIM refused it: never tried again until a person or the platform unlocks
    /// the SIM (`pin_verify`), which clears this record.
    pub refused: bool,
    /// Unix seconds of the attempt.
    pub at: u64,
}

impl Store {
    /// The configured PIN's record for `iccid`.
    pub fn pin_try(&self, iccid: &str) -> Result<Option<PinTry>, StoreError> {
        self.get_json(TREE, iccid)
    }

    /// Record (flushed) an attempt before it is made, then its outcome: a crash in
    /// between counts as tried.
    pub fn set_pin_try(&self, iccid: &str, t: &PinTry) -> Result<(), StoreError> {
        self.put_json(TREE, iccid, t)?;
        self.flush()
    }

    /// Forget the record (the SIM was unlocked by an explicit command).
    pub fn clear_pin_try(&self, iccid: &str) -> Result<(), StoreError> {
        self.tree(TREE)?.remove(iccid.as_bytes())?;
        self.flush()
    }
}
