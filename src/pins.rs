//! The PIN secrets file: the configured PIN per ICCID (and an optional default) that
//! `simgate run` may enter, once per SIM per boot, into a modem's locked SIM.
//!
//! A file of its own (`modems.pins_file`), not the configuration: the configuration is
//! readable by whoever runs `simgate config check`, the PINs must not be. The file must be
//! owned by the user simgate runs as (or root) and not readable by group or others
//! (0600/0400): anything looser is refused naming the file and its mode. Its values
//! never appear in an error, a log line, an event or the store.
//!
//! ```toml
//! [pins]
//! "8901260886258128535" = "1234"
//! default = "0000"          # optional: any SIM without its own entry
//! ```

use crate::card::pin::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The PINs, by ICCID.
#[derive(Debug, Default)]
pub struct Pins {
    by_iccid: BTreeMap<String, Secret>,
    default: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum PinsError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file}: mode {mode:o} lets others read it; PINs need 0600 or 0400 (chmod 600 {file})"
    )]
    Open { file: PathBuf, mode: u32 },
    #[error("{file}: owned by uid {uid}, not by the user simgate runs as ({me}) or root")]
    Owner { file: PathBuf, uid: u32, me: u32 },
    #[error("{file}: {message}")]
    Invalid { file: PathBuf, message: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    pins: BTreeMap<String, String>,
}

impl Pins {
    /// Load and check the secrets file.
    pub fn load(file: &Path) -> Result<Pins, PinsError> {
        use std::os::unix::fs::MetadataExt;
        let io = |source| PinsError::Io {
            file: file.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(file).map_err(io)?;
        // Group and other: no bits at all (stat(2) st_mode).
        if meta.mode() & 0o077 != 0 {
            return Err(PinsError::Open {
                file: file.to_path_buf(),
                mode: meta.mode() & 0o777,
            });
        }
        // The effective user without libc: /proc/self belongs to it.
        let me = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0);
        if meta.uid() != me && meta.uid() != 0 {
            return Err(PinsError::Owner {
                file: file.to_path_buf(),
                uid: meta.uid(),
                me,
            });
        }
        let text = std::fs::read_to_string(file).map_err(io)?;
        Self::parse(&text).map_err(|message| PinsError::Invalid {
            file: file.to_path_buf(),
            message,
        })
    }

    /// Parse the file's text; an error names the key, never the value.
    pub fn parse(text: &str) -> Result<Pins, String> {
        // toml's own messages may quote the offending line (a PIN): say where only.
        let f: File = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => format!(
                "not a [pins] table of ICCID = \"PIN\" (line {})",
                text[..span.start].lines().count().max(1)
            ),
            None => "not a [pins] table of ICCID = \"PIN\"".to_string(),
        })?;
        let mut pins = Pins::default();
        for (key, value) in f.pins {
            let secret = Secret::pin(&value).map_err(|e| format!("pins.{key}: {e}"))?;
            if key == "default" {
                pins.default = Some(secret);
            } else if crate::contract::valid_iccid(&key) {
                pins.by_iccid.insert(key, secret);
            } else {
                return Err(format!(
                    "pins.{key}: not an ICCID (18 to 20 digits) nor \"default\""
                ));
            }
        }
        Ok(pins)
    }

    /// The PIN configured for this ICCID, else the default. Matched on the ICCID the
    /// SIM gave, so a PIN never reaches another SIM than the one it was written for.
    pub fn for_iccid(&self, iccid: &str) -> Option<&Secret> {
        self.by_iccid.get(iccid).or(self.default.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.by_iccid.is_empty() && self.default.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_matched_by_iccid_and_bad_entries_are_named_without_their_value() {
        let p = Pins::parse("[pins]\n\"8901260886258128535\" = \"1234\"\ndefault = \"0000\"\n")
            .unwrap();
        assert_eq!(p.for_iccid("8901260886258128535").unwrap().expose(), "1234");
        assert_eq!(
            p.for_iccid("89314404000000000019").unwrap().expose(),
            "0000"
        );
        let e = Pins::parse("[pins]\n\"8901260886258128535\" = \"98x7\"\n").unwrap_err();
        assert!(
            e.contains("pins.8901260886258128535") && !e.contains("98x7"),
            "{e}"
        );
        let e = Pins::parse("[pins]\nmine = \"9876\"\n").unwrap_err();
        assert!(e.contains("pins.mine") && !e.contains("9876"), "{e}");
        let e = Pins::parse("[pins]\n\"8901260886258128535\" = 9876x\n").unwrap_err();
        assert!(!e.contains("9876"), "{e}");
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let f = std::env::temp_dir().join(format!("simgate-pins-{}.toml", std::process::id()));
        std::fs::write(&f, "[pins]\ndefault = \"1234\"\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Pins::load(&f).unwrap_err().to_string();
        assert!(e.contains("644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Pins::load(&f).is_ok());
        let _ = std::fs::remove_file(&f);
    }
}
