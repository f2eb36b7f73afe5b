//! The durable store. sled 0.34 lives behind this module and nowhere else: other modules
//! see typed operations, never trees, keys or sled errors.
//!
//! One sled database per state directory; each concern owns a tree (a sub-module here).

pub mod commands;
pub mod downloads;
pub mod holds;
pub mod messaging;
pub mod outbox;
pub mod pins;
pub mod platform;
pub mod provision;
pub mod rules;
pub mod sims;
pub mod swaps;
pub mod usage;

use std::path::{Path, PathBuf};

/// Store failures, with the state directory they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state directory {dir}: {source}")]
    Open { dir: PathBuf, source: sled::Error },
    /// Another process holds the state directory (its lock file names it).
    #[error("another simgate ({holder}) is using {dir}: stop it first, or give this one a state directory of its own (--state-dir)")]
    InUse { dir: PathBuf, holder: String },
    #[error("store: {0}")]
    Db(#[from] sled::Error),
    #[error("store: corrupt record in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    /// The outbox is full and nothing older may make room for this message: it was not
    /// taken (see `Outbox::push_once`).
    #[error("outbox full: the message was not queued")]
    OutboxFull,
}

/// A handle on the store; cheap to clone (sled's handles are reference-counted).
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    /// The state directory (for its file system's free space).
    dir: PathBuf,
    /// Command ids remembered (see `commands`): counted at open (sled's `len` walks the
    /// tree), then kept up to date.
    commands_len: std::sync::Arc<std::sync::Mutex<u64>>,
    /// `simgate.lock` in the state directory, locked (flock) while this store is open,
    /// holding this process's id: a second simgate is told whose the directory is.
    _lock: std::sync::Arc<std::fs::File>,
}

/// Lock the state directory for this process: `simgate.lock`, flock'ed exclusively and
/// holding our pid. Taken before the database, whose own lock error (sled 0.34) is raw
/// text; a held lock is waited out for a second (a store of this same process closing:
/// see `Store::open`), then named with the holder's pid.
fn lock_dir(dir: &Path) -> Result<std::sync::Arc<std::fs::File>, StoreError> {
    use fs2::FileExt;
    use std::io::{Read, Seek, Write};
    let path = dir.join("simgate.lock");
    let io = |e: std::io::Error| StoreError::Open {
        dir: dir.to_path_buf(),
        source: sled::Error::Io(e),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut tries = 0;
    while let Err(e) = file.try_lock_exclusive() {
        if e.kind() != std::io::ErrorKind::WouldBlock && e.raw_os_error() != Some(11) {
            return Err(io(e));
        }
        if tries == 20 {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(StoreError::InUse {
                dir: dir.to_path_buf(),
                holder: if pid.is_empty() {
                    "its pid unknown".into()
                } else {
                    format!("pid {pid}")
                },
            });
        }
        tries += 1;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The pid is for the next one's message only: a full disk must not stop a start.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(std::sync::Arc::new(file))
}

impl Store {
    /// Open (or create) the store in `dir`. Only one simgate may hold a state directory:
    /// a second one fails here with the directory named.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            dir: dir.to_path_buf(),
            source: e.into(),
        })?;
        let lock = lock_dir(dir)?;
        let config = sled::Config::new()
            .path(dir.join("db"))
            // Small gateways: keep the page cache modest (default is 1 GiB).
            .cache_capacity(16 * 1024 * 1024);
        // A store closed a moment ago in this same process may still be held by sled's
        // flusher thread, which lets go of the file lock within one flush period
        // (500 ms): that one case is waited out, up to a second. sled 0.34 reports a held
        // lock only as text (`Config::try_lock`: "could not acquire lock"), so that text
        // is what is matched; a lock still held after the wait (another process) and
        // every other failure are errors.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if tries < 20 && e.to_string().contains("could not acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        dir: dir.to_path_buf(),
                        source,
                    })
                }
            }
        };
        let commands = db.open_tree(commands::TREE)?.len() as u64;
        Ok(Store {
            db,
            dir: dir.to_path_buf(),
            commands_len: std::sync::Arc::new(std::sync::Mutex::new(commands)),
            _lock: lock,
        })
    }

    /// Make everything written so far durable (fsync).
    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Every entry of every tree, as (tree, key, value): what a test compares before and
    /// after an operation that must change nothing (the daemon's property test).
    #[cfg(all(test, feature = "fuzzing"))]
    pub(crate) fn snapshot(&self) -> Vec<(String, String, Vec<u8>)> {
        let mut out = Vec::new();
        for name in self.db.tree_names() {
            let tree = self.db.open_tree(&name).unwrap();
            for entry in tree.iter() {
                let (k, v) = entry.unwrap();
                out.push((
                    String::from_utf8_lossy(&name).into_owned(),
                    String::from_utf8_lossy(&k).into_owned(),
                    v.to_vec(),
                ));
            }
        }
        out
    }

    fn tree(&self, name: &'static str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// Write `value` as JSON under `key` in `tree`.
    fn put_json<T: serde::Serialize>(
        &self,
        tree: &'static str,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(tree, value)?;
        self.tree(tree)?.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Read the JSON value under `key` in `tree`; a record that no longer decodes is
    /// reported with its tree and key, never skipped.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.tree(tree)?.get(key.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(tree, key.as_bytes(), &v).map(Some),
        }
    }

    /// Every JSON value of `tree`, in key order.
    fn all_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        self.tree(tree)?
            .iter()
            .map(|item| {
                let (k, v) = item?;
                decode(tree, &k, &v)
            })
            .collect()
    }
}

fn encode<T: serde::Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        tree,
        detail: e.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    v: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Corrupt {
        tree,
        detail: format!("{}: {e}", String::from_utf8_lossy(key)),
    })
}
