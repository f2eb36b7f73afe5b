//! Card image format: a TOML file describing one card. Documented in
//! devices/cards/README.md; every shipped image is loaded by a test.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Which command set the virtual card speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// UICC: CLA 00, SFI addressing, select by path (ETSI TS 102 221).
    Uicc,
    /// Legacy GSM SIM: CLA A0 only, answers 9Fxx (3GPP TS 51.011).
    Gsm,
}

/// One card image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardImage {
    /// A human name shown in logs.
    pub name: String,
    pub kind: ImageKind,
    /// Answer-to-reset, hex.
    pub atr: String,
    /// Transparent EFs: path of file ids from the MF ("3F00/2FE2") → contents, hex.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

/// A card image that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl CardImage {
    pub fn load(path: &Path) -> Result<CardImage, ImageError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ImageError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ImageError::Invalid {
            path: shown,
            message,
        })
    }

    /// Parse and validate an image; the error names the field.
    pub fn parse(text: &str) -> Result<CardImage, String> {
        let image: CardImage = toml::from_str(text).map_err(|e| e.to_string())?;
        hex::decode(&image.atr).map_err(|e| format!("atr: not hex: {e}"))?;
        for (path, contents) in &image.files {
            parse_path(path).map_err(|e| format!("files.\"{path}\": {e}"))?;
            hex::decode(contents)
                .map_err(|e| format!("files.\"{path}\": contents not hex: {e}"))?;
        }
        Ok(image)
    }
}

/// "3F00/7F20/6F07" → [[3F,00],[7F,20],[6F,07]]; the first id must be the MF.
pub(crate) fn parse_path(path: &str) -> Result<Vec<[u8; 2]>, String> {
    let ids = path
        .split('/')
        .map(|part| {
            let bytes = hex::decode(part)
                .map_err(|_| format!("\"{part}\" is not a 4-hex-digit file id"))?;
            <[u8; 2]>::try_from(bytes.as_slice())
                .map_err(|_| format!("\"{part}\" is not a 4-hex-digit file id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.first() != Some(&[0x3F, 0x00]) {
        return Err("a path starts at the MF, 3F00".into());
    }
    Ok(ids)
}
