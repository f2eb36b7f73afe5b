//! Durable data usage per ICCID and month, from raw modem counters.
//!
//! A modem counter is a running total that resets when the modem reboots, when someone
//! resets it, and that keeps counting across SIM swaps. The store keeps, per modem, the
//! last sample (its baseline: ICCID and totals) and adds each positive difference to the
//! month of the sample for that sample's ICCID. Baseline and total change in one sled
//! transaction, flushed before returning, so a power cut loses at most the sample in
//! flight and never counts one twice.
//!
//! Rules, in order:
//! - no baseline, or a baseline for another ICCID (a SIM swap, a first start): the
//!   sample becomes the baseline, nothing is added — bytes counted before simgate knew
//!   which SIM was in the modem are not attributed to anyone;
//! - `since_reset` (the caller saw the port vanish: a reboot or USB reset) or a counter
//!   below its baseline: the counter restarted from zero, so the whole sample is new;
//! - otherwise the difference is new.
//!
//! Bytes between two samples that straddle a month boundary go to the later month.

use super::{Store, StoreError};
use crate::time::month_key;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

const TREE: &str = "usage";

/// Bytes sent and received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bytes {
    pub sent: u64,
    pub received: u64,
}

impl Bytes {
    pub fn total(&self) -> u64 {
        self.sent + self.received
    }

    /// Megabytes (10^6 bytes, as operators bill), two decimals.
    pub fn megabytes(&self) -> f64 {
        (self.total() as f64 / 10_000.0).round() / 100.0
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Baseline {
    iccid: String,
    counter: Bytes,
}

fn baseline_key(modem: &str) -> Vec<u8> {
    format!("base/{modem}").into_bytes()
}

fn month_key_for(iccid: &str, month: &str) -> Vec<u8> {
    format!("month/{iccid}/{month}").into_bytes()
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { tree: TREE, detail }
}

impl Store {
    /// Account one counter sample of `modem` (a stable id: its IMEI or port) for the SIM
    /// `iccid`, taken at Unix time `at`. Returns the SIM's total for that month.
    pub fn record_usage(
        &self,
        modem: &str,
        iccid: &str,
        counter: Bytes,
        since_reset: bool,
        at: u64,
    ) -> Result<Bytes, StoreError> {
        let tree = self.tree(TREE)?;
        let bkey = baseline_key(modem);
        let mkey = month_key_for(iccid, &month_key(at));
        let result = tree.transaction(|t| {
            let abort = |e: String| ConflictableTransactionError::Abort(e);
            let base: Option<Baseline> = match t.get(&bkey)? {
                Some(v) => Some(serde_json::from_slice(&v).map_err(|e| abort(e.to_string()))?),
                None => None,
            };
            let mut month: Bytes = match t.get(&mkey)? {
                Some(v) => serde_json::from_slice(&v).map_err(|e| abort(e.to_string()))?,
                None => Bytes::default(),
            };
            let delta = match &base {
                Some(b) if b.iccid == iccid => {
                    let part = |now: u64, before: u64| {
                        if since_reset || now < before {
                            now
                        } else {
                            now - before
                        }
                    };
                    Bytes {
                        sent: part(counter.sent, b.counter.sent),
                        received: part(counter.received, b.counter.received),
                    }
                }
                _ => Bytes::default(),
            };
            month.sent += delta.sent;
            month.received += delta.received;
            let nb = Baseline {
                iccid: iccid.to_string(),
                counter,
            };
            t.insert(
                bkey.as_slice(),
                serde_json::to_vec(&nb).map_err(|e| abort(e.to_string()))?,
            )?;
            t.insert(
                mkey.as_slice(),
                serde_json::to_vec(&month).map_err(|e| abort(e.to_string()))?,
            )?;
            Ok(month)
        });
        let month = result.map_err(|e| match e {
            TransactionError::Abort(detail) => corrupt(detail),
            TransactionError::Storage(e) => StoreError::Db(e),
        })?;
        tree.flush()?;
        Ok(month)
    }

    /// The SIM's usage in `month` ("YYYY-MM").
    pub fn month_usage(&self, iccid: &str, month: &str) -> Result<Bytes, StoreError> {
        match self.tree(TREE)?.get(month_key_for(iccid, month))? {
            None => Ok(Bytes::default()),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| corrupt(format!("{iccid}/{month}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV: u64 = 1_795_000_000; // 2026-11-18
    const DEC: u64 = 1_796_083_200; // 2026-12-01T00:00:00Z

    fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "simgate-usage-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        (Store::open(&dir).unwrap(), dir)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn b(sent: u64, received: u64) -> Bytes {
        Bytes { sent, received }
    }

    #[test]
    fn growth_resets_swaps_and_months_are_accounted() {
        let (s, dir) = store();
        let a = "8901260886258128535";
        let other = "89314404000000000019";
        // First sample: a baseline only.
        assert_eq!(
            s.record_usage("m", a, b(100, 1000), false, NOV).unwrap(),
            b(0, 0)
        );
        assert_eq!(
            s.record_usage("m", a, b(150, 1500), false, NOV + 60)
                .unwrap(),
            b(50, 500)
        );
        // Counter reset (modem reboot): the new reading is all new.
        assert_eq!(
            s.record_usage("m", a, b(10, 20), false, NOV + 120).unwrap(),
            b(60, 520)
        );
        // SIM swap: the other SIM starts from its own baseline; A keeps its usage.
        assert_eq!(
            s.record_usage("m", other, b(30, 40), false, NOV + 180)
                .unwrap(),
            b(0, 0)
        );
        assert_eq!(
            s.record_usage("m", other, b(35, 45), false, NOV + 240)
                .unwrap(),
            b(5, 5)
        );
        assert_eq!(s.month_usage(a, "2026-11").unwrap(), b(60, 520));
        // Known reset (the port vanished) even though the counter grew past its baseline.
        assert_eq!(
            s.record_usage("m", other, b(100, 100), true, NOV + 300)
                .unwrap(),
            b(105, 105)
        );
        // Next month starts from zero for the same SIM.
        assert_eq!(
            s.record_usage("m", other, b(101, 102), false, DEC).unwrap(),
            b(1, 2)
        );
        assert_eq!(s.month_usage(other, "2026-11").unwrap(), b(105, 105));
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn totals_survive_a_restart() {
        let (s, dir) = store();
        s.record_usage("m", "x", b(0, 0), false, NOV).unwrap();
        s.record_usage("m", "x", b(1_000_000, 2_500_000), false, NOV + 60)
            .unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        let m = s.month_usage("x", "2026-11").unwrap();
        assert_eq!(m.megabytes(), 3.5);
        // The baseline survived too: the next sample adds only the difference.
        assert_eq!(
            s.record_usage("m", "x", b(1_000_000, 2_600_000), false, NOV + 120)
                .unwrap()
                .total(),
            3_600_000
        );
        drop(s);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
