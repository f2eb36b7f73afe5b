//! Profile downloads under way for platform commands (MQTT.md, "eSIM download"), by
//! command id. Written (flushed) before the download starts and again, with the
//! transaction and the profile offered, before the bound package loads — the step a
//! kill -9 or a power cut can leave half done — so the next start reconciles the
//! eUICC with what the record says before it reports (src/daemon/esim_download.rs).
//! Removed when the command has its outcome. Never a matching ID or a confirmation
//! code (SGP.22 §4.1: secrets): those live in memory for the command's life only.

use super::{Store, StoreError};
use serde::{Deserialize, Serialize};

const TREE: &str = "downloads";

/// One download under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// The command's id.
    pub id: String,
    /// The SIM (its eUICC's enabled profile) the command named.
    pub iccid: String,
    /// The modem port it runs on.
    pub port: String,
    /// The SM-DP+ address (not a secret: the activation code's first field).
    pub smdp: String,
    /// Set before the package loads: the session's transaction (hex) and the ICCID the
    /// SM-DP+ offered, what a reconcile needs.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub transaction_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offered: Option<String>,
    /// The command asked to enable the new profile.
    #[serde(default)]
    pub enable: bool,
    pub started_at: u64,
}

impl Store {
    /// Store (flushed) a download's record.
    pub fn put_download(&self, rec: &DownloadRecord) -> Result<(), StoreError> {
        self.put_json(TREE, &rec.id, rec)?;
        self.flush()
    }

    /// The download ended (its command has its outcome): forget it (flushed).
    pub fn remove_download(&self, id: &str) -> Result<(), StoreError> {
        self.tree(TREE)?.remove(id.as_bytes())?;
        self.flush()
    }

    pub fn get_download(&self, id: &str) -> Result<Option<DownloadRecord>, StoreError> {
        self.get_json(TREE, id)
    }

    /// Every download under way.
    pub fn downloads(&self) -> Result<Vec<DownloadRecord>, StoreError> {
        self.all_json(TREE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_record_survives_reopening_holds_no_secret_and_is_small() {
        let dir = std::env::temp_dir().join(format!("simgate-downloads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rec = DownloadRecord {
            id: "dl-1".into(),
            iccid: "89883030000000000429".into(),
            port: "/dev/ttyUSB2".into(),
            smdp: "smdp.example.com".into(),
            transaction_id: Some("0123456789ABCDEF0123456789ABCDEF".into()),
            offered: Some("8900101000000000019".into()),
            enable: true,
            started_at: 1_795_702_000,
        };
        {
            let store = Store::open(&dir).unwrap();
            store.put_download(&rec).unwrap();
        }
        let store = Store::open(&dir).unwrap();
        assert_eq!(store.downloads().unwrap(), vec![rec.clone()]);
        assert_eq!(store.get_download("dl-1").unwrap(), Some(rec.clone()));
        // What a record costs on disk (before sled's own overhead): a figure.
        let bytes = serde_json::to_vec(&rec).unwrap().len();
        assert!(bytes < 320, "{bytes} bytes");
        store.remove_download("dl-1").unwrap();
        assert_eq!(store.downloads().unwrap(), vec![]);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
