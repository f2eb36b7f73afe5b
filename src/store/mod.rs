//! The durable store. sled 0.34 lives behind this module and nowhere else: other modules
//! see typed operations, never trees, keys or sled errors.
//!
//! One sled database per state directory; each concern owns a tree (a sub-module here).

pub mod sims;
pub mod usage;

use std::path::{Path, PathBuf};

/// Store failures, with the state directory they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {dir}: {source}")]
    Open { dir: PathBuf, source: sled::Error },
    #[error("store: {0}")]
    Db(#[from] sled::Error),
    #[error("store: corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
}

/// A handle on the store; cheap to clone (sled's handles are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
}

impl Store {
    /// Open (or create) the store in `dir`. Only one simgate may hold a state directory:
    /// a second one fails here with the directory named.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            dir: dir.to_path_buf(),
            source: e.into(),
        })?;
        let db = sled::Config::new()
            .path(dir.join("db"))
            // Small gateways: keep the page cache modest (default is 1 GiB).
            .cache_capacity(16 * 1024 * 1024)
            .open()
            .map_err(|source| StoreError::Open {
                dir: dir.to_path_buf(),
                source,
            })?;
        Ok(Store { db })
    }

    /// Make everything written so far durable (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }
}
