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
    /// Files of the USIM application sit under "3F00/7FFF".
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Linear fixed EFs (EF.DIR ...): path → records, hex.
    #[serde(default)]
    pub records: BTreeMap<String, Vec<String>>,
    /// The USIM application (ADF "3F00/7FFF"), selectable by its AID or a prefix of it.
    #[serde(default)]
    pub usim: Option<UsimImage>,
    /// The eUICC side: present on an eSIM.
    #[serde(default)]
    pub euicc: Option<EuiccImage>,
    /// MANAGE CHANNEL supported (UICC). `false`: refused with 6881, as some cards do.
    #[serde(default = "yes")]
    pub logical_channels: bool,
    /// `true` (default): answer 61xx/9Fxx/6Cxx and wait for GET RESPONSE, as a T=0 card
    /// behind a reader that passes them through. `false`: answer the data at once, as a
    /// reader that runs the T=0 procedures itself.
    #[serde(default = "yes")]
    pub t0_procedures: bool,
    /// PIN1 and PUK1 (TS 102 221 §9.5): absent, the card has no PIN enabled and its
    /// VERIFY PIN without data answers 9000.
    #[serde(default)]
    pub pin: Option<crate::emu::pin::SimPin>,
    /// Broken-card behaviour for tests.
    #[serde(default)]
    pub fault: Fault,
}

fn yes() -> bool {
    true
}

/// The USIM application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsimImage {
    /// The full AID, hex (TS 101 220 Annex E: A0000000871002...).
    pub aid: String,
}

/// The eUICC: its ISD-R, EID and profiles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EuiccImage {
    /// The ISD-R's AID, hex (the standard one, or a vendor's).
    pub isdr_aid: String,
    /// 32 digits.
    pub eid: String,
    #[serde(default)]
    pub profiles: Vec<ProfileImage>,
    /// EUICCInfo2 svn: the SGP.22 version, "2.2.2".
    #[serde(default = "default_svn")]
    pub svn: String,
    /// EUICCInfo2 extCardResource: free non-volatile memory, bytes.
    #[serde(default = "default_free_nvm")]
    pub free_nvm: u32,
    /// EUICCInfo2 euiccCiPKIdListForVerification/ForSigning: CI key ids, hex.
    #[serde(default = "default_ci_pkids")]
    pub ci_pkids: Vec<String>,
    /// EuiccConfiguredAddresses defaultDpAddress (SGP.22 §5.7.3, ES10a): the SM-DP+ a
    /// download goes to when no activation code names one. None: not set.
    #[serde(default)]
    pub default_smdp: Option<String>,
    /// EuiccConfiguredAddresses rootDsAddress: the root SM-DS (SGP.22 §3.4: GSMA's).
    #[serde(default = "default_root_smds")]
    pub root_smds: String,
}

fn default_root_smds() -> String {
    "lpa.ds.gsma.com".into()
}

fn default_svn() -> String {
    "2.2.2".into()
}

fn default_free_nvm() -> u32 {
    245_760
}

/// The GSMA test CI's key id (SGP.26 test certificates, as lpac and pySim list it).
fn default_ci_pkids() -> Vec<String> {
    vec!["F54172BDF98A95D65CBEB88A38A1C11D800A85C3".into()]
}

/// One installed profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileImage {
    /// ICCID digits: EF.ICCID under the MF while this profile is enabled.
    pub iccid: String,
    pub enabled: bool,
    /// ProfileInfo profileName, serviceProviderName, profileNickname.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub nickname: Option<String>,
    /// test, provisioning or operational (default).
    #[serde(default = "default_class")]
    pub class: String,
    /// The SM-DP+ its notifications go to (NotificationMetadata notificationAddress).
    #[serde(default = "default_smdp")]
    pub smdp: String,
    /// The profile's own files (EF.IMSI, EF.SPN, ...), present while it is enabled: path
    /// → contents, hex, as in `[files]`.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

fn default_class() -> String {
    "operational".into()
}

fn default_smdp() -> String {
    "smdp.example.com".into()
}

/// Faults a broken card shows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Answer this many APDUs, then never answer again (a mute card; 0: mute at once).
    pub mute_after: Option<u64>,
    /// Answer this many APDUs, then drop the connection at the next one: the card
    /// pulled in the middle of a read.
    pub pull_after: Option<u64>,
    /// Answer this many APDUs, then deselect the ISD-R on every channel and close the
    /// logical channels, as a card that dropped the channel mid-operation.
    pub drop_channel_after: Option<u64>,
    /// Cut the last 3 bytes off every ES10 response: a malformed answer.
    #[serde(default)]
    pub truncate_es10: bool,
    /// Answer this many LoadBoundProfilePackage segments (SGP.22 §2.5.5), then never
    /// answer again: a card lost in the middle of an install.
    pub mute_after_segments: Option<u64>,
    /// Answer every RetrieveNotificationsList (BF2B) with notificationsListResultError
    /// undefinedError, as an eUICC that does not retrieve notifications this way.
    #[serde(default)]
    pub refuse_retrieve_notifications: bool,
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
        let image: CardImage = crate::toml_error::from_str(text)?;
        hex::decode(&image.atr).map_err(|e| format!("atr: not hex: {e}"))?;
        for (path, contents) in &image.files {
            parse_path(path).map_err(|e| format!("files.\"{path}\": {e}"))?;
            hex::decode(contents)
                .map_err(|e| format!("files.\"{path}\": contents not hex: {e}"))?;
        }
        for (path, records) in &image.records {
            parse_path(path).map_err(|e| format!("records.\"{path}\": {e}"))?;
            for (i, r) in records.iter().enumerate() {
                hex::decode(r).map_err(|e| format!("records.\"{path}\"[{i}]: not hex: {e}"))?;
            }
        }
        if let Some(p) = &image.pin {
            p.check()?;
        }
        if let Some(u) = &image.usim {
            hex::decode(&u.aid).map_err(|e| format!("usim.aid: not hex: {e}"))?;
        }
        if let Some(e) = &image.euicc {
            hex::decode(&e.isdr_aid).map_err(|e| format!("euicc.isdr_aid: not hex: {e}"))?;
            if e.eid.len() != 32 || !e.eid.chars().all(|c| c.is_ascii_digit()) {
                return Err(format!("euicc.eid: \"{}\" is not 32 digits", e.eid));
            }
            for (i, p) in e.profiles.iter().enumerate() {
                if !(18..=20).contains(&p.iccid.len())
                    || !p.iccid.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(format!("euicc.profiles[{i}].iccid: 18 to 20 digits"));
                }
                if !["test", "provisioning", "operational"].contains(&p.class.as_str()) {
                    return Err(format!(
                        "euicc.profiles[{i}].class: \"{}\" is not test, provisioning or operational",
                        p.class
                    ));
                }
                for (path, contents) in &p.files {
                    parse_path(path)
                        .map_err(|e| format!("euicc.profiles[{i}].files.\"{path}\": {e}"))?;
                    hex::decode(contents).map_err(|e| {
                        format!("euicc.profiles[{i}].files.\"{path}\": contents not hex: {e}")
                    })?;
                }
            }
            if e.profiles.iter().filter(|p| p.enabled).count() > 1 {
                return Err("euicc.profiles: more than one enabled (SGP.22 allows one)".into());
            }
            for (i, k) in e.ci_pkids.iter().enumerate() {
                hex::decode(k).map_err(|e| format!("euicc.ci_pkids[{i}]: not hex: {e}"))?;
            }
            for (key, addr) in [
                ("default_smdp", e.default_smdp.as_deref()),
                ("root_smds", Some(e.root_smds.as_str())),
            ] {
                if let Some(a) = addr {
                    if a.is_empty() || a.len() > 255 || !a.chars().all(|c| c.is_ascii_graphic()) {
                        return Err(format!(
                            "euicc.{key}: \"{a}\" is not an FQDN (SGP.22 §5.7.3)"
                        ));
                    }
                }
            }
            let svn: Vec<&str> = e.svn.split('.').collect();
            if svn.len() != 3 || svn.iter().any(|n| n.parse::<u8>().is_err()) {
                return Err(format!(
                    "euicc.svn: \"{}\" is not a version like 2.2.2",
                    e.svn
                ));
            }
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
