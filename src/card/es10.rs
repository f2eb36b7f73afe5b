//! The ES10 functions an LPA sends to an eUICC's ISD-R (GSMA SGP.22 v2.x §5.7): request
//! encoders and response decoders, pure. ES10c manages profiles (GetProfilesInfo §5.7.15,
//! EnableProfile §5.7.16, DisableProfile §5.7.17, DeleteProfile §5.7.18, SetNickname
//! §5.7.21); ES10b lists and removes pending notifications (ListNotification §5.7.9,
//! RetrieveNotificationsList §5.7.10, RemoveNotificationFromList §5.7.11) and reads the
//! eUICC's facts (GetEUICCInfo2, §5.7.8). The tags are those of SGP.22 Annex H (ASN.1).
//!
//! The engine that sends them over a card channel is `card::esim`.

use super::iccid::Iccid;
use super::tlv;
use serde::Serialize;

/// A DER object (ITU-T X.690 §8.1): tag bytes, definite length, value.
pub fn der(tag: u32, value: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = tag
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    match value.len() {
        n @ 0..=0x7F => out.push(n as u8),
        n @ 0x80..=0xFF => out.extend_from_slice(&[0x81, n as u8]),
        n => out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(value);
    out
}

/// A profile's ICCID as ES10 carries it: Iccid ::= [APPLICATION 26] OCTET STRING
/// (SIZE(10)), tag 5A, swapped-nibble BCD padded with F like EF.ICCID (TS 102 221 §13.2).
pub fn iccid_bytes(iccid: &Iccid) -> [u8; 10] {
    let mut nibbles: Vec<u8> = iccid
        .as_str()
        .chars()
        .filter_map(|c| c.to_digit(16).map(|d| d as u8))
        .collect();
    nibbles.resize(20, 0xF);
    let mut out = [0u8; 10];
    for (i, p) in nibbles.chunks(2).enumerate() {
        out[i] = p[1] << 4 | p[0];
    }
    out
}

/// Decode a profile's tag 5A: exactly 10 bytes of BCD.
pub fn iccid_from_bytes(raw: &[u8]) -> Result<Iccid, String> {
    if raw.len() != 10 {
        return Err(format!(
            "ICCID of {} byte(s) ({}); SGP.22 Iccid is 10 BCD bytes",
            raw.len(),
            hex::encode_upper(raw)
        ));
    }
    Iccid::from_ef(raw).map_err(|e| format!("ICCID {}: {e}", hex::encode_upper(raw)))
}

// ---------------------------------------------------------------------------------------
// Requests

/// The ProfileInfo tags `esim list` shows (SGP.22 §5.7.15, Annex H ProfileInfo): iccid
/// (5A), profileState (9F70), profileNickname (90), serviceProviderName (91),
/// profileName (92), profileClass (95). Asking only for these keeps icons (94, up to
/// 1 KiB each) off the wire.
pub const LIST_TAGS: [u8; 8] = [0x5A, 0x9F, 0x70, 0x90, 0x91, 0x92, 0x95, 0x00];

/// ProfileInfoListRequest [45] (BF2D) { tagList [APPLICATION 28] (5C) }.
pub fn get_profiles_info() -> Vec<u8> {
    der(0xBF2D, &der(0x5C, &LIST_TAGS[..7]))
}

/// GetEuiccInfo2Request [34] (BF22), empty.
pub fn get_euicc_info2() -> Vec<u8> {
    der(0xBF22, &[])
}

/// EnableProfileRequest [49] (BF31) / DisableProfileRequest [50] (BF32): profileIdentifier
/// [0] (A0) CHOICE { iccid (5A) }, refreshFlag [1] (81) BOOLEAN.
fn switch_request(tag: u32, iccid: &Iccid, refresh: bool) -> Vec<u8> {
    let mut body = der(0xA0, &der(0x5A, &iccid_bytes(iccid)));
    body.extend(der(0x81, &[if refresh { 0xFF } else { 0x00 }]));
    der(tag, &body)
}

pub fn enable_profile(iccid: &Iccid, refresh: bool) -> Vec<u8> {
    switch_request(0xBF31, iccid, refresh)
}

pub fn disable_profile(iccid: &Iccid, refresh: bool) -> Vec<u8> {
    switch_request(0xBF32, iccid, refresh)
}

/// DeleteProfileRequest [51] (BF33) CHOICE { iccid (5A) }.
pub fn delete_profile(iccid: &Iccid) -> Vec<u8> {
    der(0xBF33, &der(0x5A, &iccid_bytes(iccid)))
}

/// The longest profileNickname (SGP.22 Annex H: UTF8String (SIZE(0..64))), in bytes.
pub const NICKNAME_MAX: usize = 64;

/// SetNicknameRequest [41] (BF29) { iccid (5A), profileNickname [16] (90) }. `None` when
/// the nickname is longer than 64 bytes.
pub fn set_nickname(iccid: &Iccid, nickname: &str) -> Option<Vec<u8>> {
    if nickname.len() > NICKNAME_MAX {
        return None;
    }
    let mut body = der(0x5A, &iccid_bytes(iccid));
    body.extend(der(0x90, nickname.as_bytes()));
    Some(der(0xBF29, &body))
}

/// ListNotificationRequest [40] (BF28), every operation.
pub fn list_notification() -> Vec<u8> {
    der(0xBF28, &[])
}

/// INTEGER content, minimal two's complement (X.690 §8.3).
fn integer(n: u32) -> Vec<u8> {
    let mut bytes: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    bytes
}

/// RetrieveNotificationsListRequest [43] (BF2B) { searchCriteria [0] (A0) CHOICE {
/// seqNumber [0] (80) } }.
pub fn retrieve_notification(seq: u32) -> Vec<u8> {
    der(0xBF2B, &der(0xA0, &der(0x80, &integer(seq))))
}

/// RetrieveNotificationsListRequest [43] (BF2B) without searchCriteria: every pending
/// notification, signed.
pub fn retrieve_all_notifications() -> Vec<u8> {
    der(0xBF2B, &[])
}

/// NotificationSentRequest [48] (BF30) { seqNumber [0] (80) }: RemoveNotificationFromList.
pub fn remove_notification(seq: u32) -> Vec<u8> {
    der(0xBF30, &der(0x80, &integer(seq)))
}

// ---------------------------------------------------------------------------------------
// Responses

/// An ES10 response that is not what SGP.22 says it is: what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    pub what: String,
}

pub(super) fn bad(what: impl Into<String>) -> DecodeError {
    DecodeError { what: what.into() }
}

pub(super) fn tlvs<'a>(data: &'a [u8], within: &str) -> Result<Vec<tlv::Tlv<'a>>, DecodeError> {
    tlv::parse(data).map_err(|e| bad(format!("{within}: {e}")))
}

/// The value of the one top-level object tagged `tag`.
pub(super) fn top<'a>(data: &'a [u8], tag: u32, name: &str) -> Result<&'a [u8], DecodeError> {
    tlvs(data, name)?
        .into_iter()
        .find(|t| t.tag == tag)
        .map(|t| t.value)
        .ok_or_else(|| {
            bad(format!(
                "{name}: no tag {tag:X} in {} byte(s) starting {}",
                data.len(),
                hex::encode_upper(&data[..data.len().min(8)])
            ))
        })
}

pub(super) fn uint(v: &[u8], what: &str) -> Result<u64, DecodeError> {
    if v.is_empty() || v.len() > 8 {
        return Err(bad(format!("{what}: an INTEGER of {} byte(s)", v.len())));
    }
    Ok(v.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
}

pub(super) fn utf8(v: &[u8], what: &str) -> Result<String, DecodeError> {
    String::from_utf8(v.to_vec()).map_err(|_| bad(format!("{what}: not UTF-8")))
}

/// One ProfileInfo (SGP.22 §5.7.15), as far as `LIST_TAGS` asked: the SIM record's
/// vocabulary (src/sim.rs).
pub use crate::sim::{EsimProfile as ProfileInfo, ProfileClass, ProfileState};

/// ProfileInfoListError (SGP.22 §5.7.15): incorrectInputValues(1), undefinedError(127).
fn profile_list_error(code: u64) -> &'static str {
    match code {
        1 => "incorrect input values",
        _ => "undefined error",
    }
}

/// ProfileInfoListResponse [45] (BF2D) CHOICE { profileInfoListOk [0] (A0) SEQUENCE OF
/// ProfileInfo (E3), profileInfoListError [1] (81) }.
pub fn parse_profiles_info(data: &[u8]) -> Result<Vec<ProfileInfo>, DecodeError> {
    let body = top(data, 0xBF2D, "ProfileInfoListResponse")?;
    let items = tlvs(body, "ProfileInfoListResponse")?;
    let Some(list) = items.iter().find(|t| t.tag == 0xA0) else {
        if let Some(e) = items.iter().find(|t| t.tag == 0x81) {
            let code = uint(e.value, "profileInfoListError")?;
            return Err(bad(format!(
                "GetProfilesInfo: the eUICC answered profileInfoListError {code} ({})",
                profile_list_error(code)
            )));
        }
        return Err(bad(
            "ProfileInfoListResponse: neither A0 (list) nor 81 (error)",
        ));
    };
    let mut out = Vec::new();
    for (i, info) in tlvs(list.value, "profileInfoListOk")?
        .into_iter()
        .filter(|t| t.tag == 0xE3)
        .enumerate()
    {
        let at = |f: &str| format!("ProfileInfo[{i}].{f}");
        let mut iccid = None;
        let mut state = None;
        let mut p = ProfileInfo {
            iccid: String::new(),
            state: ProfileState::Disabled,
            name: None,
            provider: None,
            nickname: None,
            class: None,
        };
        for f in tlvs(info.value, &at("*"))? {
            match f.tag {
                0x5A => iccid = Some(iccid_from_bytes(f.value).map_err(|e| bad(at(&e)))?),
                0x9F70 => {
                    state = Some(match uint(f.value, &at("profileState"))? {
                        0 => ProfileState::Disabled,
                        1 => ProfileState::Enabled,
                        n => return Err(bad(format!("{}: {n} is no state", at("profileState")))),
                    })
                }
                0x90 => p.nickname = Some(utf8(f.value, &at("profileNickname"))?),
                0x91 => p.provider = Some(utf8(f.value, &at("serviceProviderName"))?),
                0x92 => p.name = Some(utf8(f.value, &at("profileName"))?),
                0x95 => {
                    p.class = match uint(f.value, &at("profileClass"))? {
                        0 => Some(ProfileClass::Test),
                        1 => Some(ProfileClass::Provisioning),
                        2 => Some(ProfileClass::Operational),
                        // A class this version does not know: shown as none.
                        _ => None,
                    }
                }
                // Tags we did not ask for (an eUICC may add them): ignored.
                _ => {}
            }
        }
        p.iccid = iccid
            .ok_or_else(|| bad(format!("ProfileInfo[{i}]: no ICCID (5A)")))?
            .as_str()
            .to_string();
        p.state = state.ok_or_else(|| bad(format!("ProfileInfo[{i}]: no profileState (9F70)")))?;
        out.push(p);
    }
    Ok(out)
}

/// Which ES10c operation a result code answers; each has its own list (SGP.22 §5.7.16
/// to §5.7.18, §5.7.21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Enable,
    Disable,
    Delete,
    Nickname,
}

impl Operation {
    pub fn function(self) -> &'static str {
        match self {
            Operation::Enable => "EnableProfile",
            Operation::Disable => "DisableProfile",
            Operation::Delete => "DeleteProfile",
            Operation::Nickname => "SetNickname",
        }
    }

    fn tag(self) -> u32 {
        match self {
            Operation::Enable => 0xBF31,
            Operation::Disable => 0xBF32,
            Operation::Delete => 0xBF33,
            Operation::Nickname => 0xBF29,
        }
    }

    /// The meaning of a result code, in words a person acts on (SGP.22 Annex H:
    /// EnableProfileResponse, DisableProfileResponse, DeleteProfileResponse,
    /// SetNicknameResponse).
    pub fn reason(self, code: u8) -> &'static str {
        match (self, code) {
            (_, 1) => "no profile with this ICCID on the eUICC (iccidOrAidNotFound)",
            (Operation::Enable, 2) => {
                "the profile is already enabled (profileNotInDisabledState)"
            }
            (Operation::Disable, 2) => "the profile is not enabled (profileNotInEnabledState)",
            (Operation::Delete, 2) => {
                "the profile is enabled: disable it or enable another one first (profileNotInDisabledState)"
            }
            (Operation::Nickname, _) if code != 127 => "undefined result",
            (_, 3) => "the profile's policy rules forbid it (disallowedByPolicy)",
            (Operation::Enable, 4) => {
                "the profile must not be re-enabled (wrongProfileReenabling)"
            }
            (Operation::Enable | Operation::Disable, 5) => {
                "the card's toolkit is busy with the device (catBusy): try again in a moment"
            }
            (_, 127) => "the eUICC reports an undefined error (undefinedError)",
            _ => "a result code SGP.22 does not define",
        }
    }
}

/// A refused ES10c operation: the function, its result code and what it means.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} refused: {}", op.function(), op.reason(*code))]
pub struct Refusal {
    pub op: Operation,
    pub code: u8,
}

/// The one result of EnableProfile, DisableProfile, DeleteProfile and SetNickname: their
/// response tag { [0] (80) INTEGER }, 0 being ok.
pub fn parse_result(op: Operation, data: &[u8]) -> Result<Result<(), Refusal>, DecodeError> {
    let body = top(data, op.tag(), op.function())?;
    let code = top(body, 0x80, op.function())?;
    match uint(code, op.function())? {
        0 => Ok(Ok(())),
        n => Ok(Err(Refusal {
            op,
            code: n.min(255) as u8,
        })),
    }
}

/// The eUICC's facts from EUICCInfo2 (SGP.22 §5.7.8, Annex H EUICCInfo2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct EuiccInfo2 {
    /// svn [2] (82): the SGP.22 version the eUICC implements, "2.2.1".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sgp22_version: Option<String>,
    /// profileVersion [1] (81): the SIMalliance profile package version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_version: Option<String>,
    /// euiccFirmwareVer [3] (83).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// extCardResource [4] (84) { 82 freeNonVolatileMemory }, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_nvm: Option<u64>,
    /// euiccCiPKIdListForVerification [9] (A9): the CI key ids (SubjectKeyIdentifier, 04),
    /// hex.
    pub ci_pkids_verification: Vec<String>,
    /// euiccCiPKIdListForSigning [10] (AA).
    pub ci_pkids_signing: Vec<String>,
}

fn version(v: &[u8]) -> String {
    v.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(".")
}

fn key_ids(v: &[u8], what: &str) -> Result<Vec<String>, DecodeError> {
    Ok(tlvs(v, what)?
        .into_iter()
        .filter(|t| t.tag == 0x04)
        .map(|t| hex::encode_upper(t.value))
        .collect())
}

/// EUICCInfo2 [34] (BF22) SEQUENCE { ... } (SGP.22 Annex H).
pub fn parse_euicc_info2(data: &[u8]) -> Result<EuiccInfo2, DecodeError> {
    let body = top(data, 0xBF22, "EUICCInfo2")?;
    let mut info = EuiccInfo2::default();
    for f in tlvs(body, "EUICCInfo2")? {
        match f.tag {
            0x81 => info.profile_version = Some(version(f.value)),
            0x82 => info.sgp22_version = Some(version(f.value)),
            0x83 => info.firmware = Some(version(f.value)),
            // extCardResource: an OCTET STRING holding TLVs (SGP.22 §5.7.8): 81 installed
            // applications, 82 free non-volatile memory, 83 free volatile memory.
            0x84 => {
                if let Some(v) = tlvs(f.value, "EUICCInfo2.extCardResource")?
                    .into_iter()
                    .find(|t| t.tag == 0x82)
                {
                    info.free_nvm = Some(uint(v.value, "extCardResource.freeNonVolatileMemory")?);
                }
            }
            0xA9 => {
                info.ci_pkids_verification = key_ids(f.value, "euiccCiPKIdListForVerification")?
            }
            0xAA => info.ci_pkids_signing = key_ids(f.value, "euiccCiPKIdListForSigning")?,
            _ => {}
        }
    }
    Ok(info)
}

crate::sim::wire_words! {
    /// NotificationEvent (SGP.22 Annex H, a BIT STRING): which operation a pending
    /// notification reports.
    pub enum NotificationEvent {
        Install = "install",
        Enable = "enable",
        Disable = "disable",
        Delete = "delete",
    }
}

impl NotificationEvent {
    /// The BIT STRING's content: unused-bit count, then the one bit set (X.690 §8.6).
    pub fn bit_string(self) -> [u8; 2] {
        match self {
            NotificationEvent::Install => [0x07, 0x80],
            NotificationEvent::Enable => [0x06, 0x40],
            NotificationEvent::Disable => [0x05, 0x20],
            NotificationEvent::Delete => [0x04, 0x10],
        }
    }

    fn from_bit_string(v: &[u8]) -> Option<NotificationEvent> {
        let bits = *v.get(1)?;
        [
            NotificationEvent::Install,
            NotificationEvent::Enable,
            NotificationEvent::Disable,
            NotificationEvent::Delete,
        ]
        .into_iter()
        .find(|e| bits & e.bit_string()[1] != 0)
    }
}

/// NotificationMetadata [47] (BF2F) (SGP.22 Annex H): one pending notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotificationMeta {
    pub seq: u32,
    pub event: NotificationEvent,
    /// The SM-DP+ the notification is for (notificationAddress, 0C).
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
}

fn parse_metadata(v: &[u8], at: &str) -> Result<NotificationMeta, DecodeError> {
    let mut seq = None;
    let mut event = None;
    let mut address = None;
    let mut iccid = None;
    for f in tlvs(v, at)? {
        match f.tag {
            0x80 => seq = Some(uint(f.value, &format!("{at}.seqNumber"))?),
            0x81 => event = NotificationEvent::from_bit_string(f.value),
            0x0C => address = Some(utf8(f.value, &format!("{at}.notificationAddress"))?),
            0x5A => {
                iccid = Some(
                    iccid_from_bytes(f.value)
                        .map_err(|e| bad(format!("{at}.iccid: {e}")))?
                        .as_str()
                        .to_string(),
                )
            }
            _ => {}
        }
    }
    Ok(NotificationMeta {
        seq: seq
            .ok_or_else(|| bad(format!("{at}: no seqNumber (80)")))?
            .min(u64::from(u32::MAX)) as u32,
        event: event.ok_or_else(|| bad(format!("{at}: no profileManagementOperation (81)")))?,
        address: address.ok_or_else(|| bad(format!("{at}: no notificationAddress (0C)")))?,
        iccid,
    })
}

/// ListNotificationResponse [40] (BF28) CHOICE { notificationMetadataList [0] (A0)
/// SEQUENCE OF NotificationMetadata (BF2F), listNotificationsResultError [1] (81) }.
pub fn parse_notification_list(data: &[u8]) -> Result<Vec<NotificationMeta>, DecodeError> {
    let body = top(data, 0xBF28, "ListNotificationResponse")?;
    let items = tlvs(body, "ListNotificationResponse")?;
    let Some(list) = items.iter().find(|t| t.tag == 0xA0) else {
        return Err(bad(
            "ListNotification: the eUICC answered listNotificationsResultError",
        ));
    };
    tlvs(list.value, "notificationMetadataList")?
        .into_iter()
        .filter(|t| t.tag == 0xBF2F)
        .enumerate()
        .map(|(i, t)| parse_metadata(t.value, &format!("NotificationMetadata[{i}]")))
        .collect()
}

/// A pending notification as the SM-DP+ wants it: the whole PendingNotification DER
/// (SGP.22 §5.7.10: otherSignedNotification, SEQUENCE 30, or profileInstallationResult,
/// BF37), with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNotification {
    pub meta: NotificationMeta,
    pub der: Vec<u8>,
}

/// RetrieveNotificationsListResponse [43] (BF2B) CHOICE { notificationList [0] (A0)
/// SEQUENCE OF PendingNotification, notificationsListResultError [1] (81) }.
pub fn parse_retrieved(data: &[u8]) -> Result<Vec<PendingNotification>, DecodeError> {
    let body = top(data, 0xBF2B, "RetrieveNotificationsListResponse")?;
    let items = tlvs(body, "RetrieveNotificationsListResponse")?;
    let Some(list) = items.iter().find(|t| t.tag == 0xA0) else {
        return Err(bad(
            "RetrieveNotificationsList: the eUICC answered notificationsListResultError",
        ));
    };
    let mut out = Vec::new();
    for (i, t) in tlvs(list.value, "notificationList")?
        .into_iter()
        .enumerate()
    {
        let at = format!("PendingNotification[{i}]");
        // otherSignedNotification { tbsOtherNotification (BF2F) ... }; an installation
        // result carries it at profileInstallationResultData (BF27) { notificationMetadata
        // (BF2F) }.
        let meta = match t.tag {
            0x30 => top(t.value, 0xBF2F, &at)?,
            0xBF37 => tlv::find_path(t.value, &[0xBF27, 0xBF2F])
                .map_err(|e| bad(format!("{at}: {e}")))?
                .ok_or_else(|| bad(format!("{at}: no notificationMetadata")))?,
            other => return Err(bad(format!("{at}: tag {other:X} is no notification"))),
        };
        out.push(PendingNotification {
            meta: parse_metadata(meta, &at)?,
            der: der(t.tag, t.value),
        });
    }
    Ok(out)
}

/// NotificationSentResponse [48] (BF30) { deleteNotificationStatus [0] (80): ok(0),
/// nothingToDelete(1), undefinedError(127) }. `Ok(false)`: nothing to delete.
pub fn parse_removed(data: &[u8]) -> Result<bool, DecodeError> {
    let body = top(data, 0xBF30, "NotificationSentResponse")?;
    match uint(top(body, 0x80, "NotificationSentResponse")?, "deleteNotificationStatus")? {
        0 => Ok(true),
        1 => Ok(false),
        n => Err(bad(format!(
            "RemoveNotificationFromList: the eUICC answered deleteNotificationStatus {n} (undefined error)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iccid(s: &str) -> Iccid {
        Iccid::from_digits(s).unwrap()
    }

    #[test]
    fn requests_encode_per_sgp22_annex_h() {
        assert_eq!(
            hex::encode_upper(get_profiles_info()),
            "BF2D095C075A9F7090919295"
        );
        // lpac's encoding of the same request (euicc/es10c.c): A0 { 5A }, 81 refreshFlag.
        assert_eq!(
            hex::encode_upper(enable_profile(&iccid("8949440000000000016"), false)),
            "BF3111A00C5A0A989444000000000010F6810100"
        );
        assert_eq!(
            hex::encode_upper(delete_profile(&iccid("8949440000000000024"))),
            "BF330C5A0A989444000000000020F4"
        );
        assert_eq!(
            hex::encode_upper(set_nickname(&iccid("8949440000000000024"), "work").unwrap()),
            "BF29125A0A989444000000000020F49004776F726B"
        );
        assert!(set_nickname(&iccid("8949440000000000024"), &"x".repeat(65)).is_none());
        assert_eq!(
            hex::encode_upper(retrieve_notification(5)),
            "BF2B05A003800105"
        );
        // 128 needs a leading zero byte: INTEGER is signed (X.690 §8.3.2).
        assert_eq!(
            hex::encode_upper(remove_notification(128)),
            "BF300480020080"
        );
        assert_eq!(hex::encode_upper(list_notification()), "BF2800");
    }

    #[test]
    fn profiles_info_decodes_every_field() {
        let mut p = der(0x5A, &iccid_bytes(&iccid("8949440000000000016")));
        p.extend(der(0x9F70, &[1]));
        p.extend(der(0x90, b"work"));
        p.extend(der(0x91, b"Op"));
        p.extend(der(0x92, b"Op Data"));
        p.extend(der(0x95, &[2]));
        let mut q = der(0x5A, &iccid_bytes(&iccid("8949440000000000024")));
        q.extend(der(0x9F70, &[0]));
        let mut list = der(0xE3, &p);
        list.extend(der(0xE3, &q));
        let resp = der(0xBF2D, &der(0xA0, &list));
        let got = parse_profiles_info(&resp).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            ProfileInfo {
                iccid: "8949440000000000016".into(),
                state: ProfileState::Enabled,
                name: Some("Op Data".into()),
                provider: Some("Op".into()),
                nickname: Some("work".into()),
                class: Some(ProfileClass::Operational),
            }
        );
        assert_eq!(got[1].state, ProfileState::Disabled);
        assert_eq!(got[1].name, None);
    }

    #[test]
    fn a_profile_iccid_not_10_bytes_is_named() {
        let mut p = der(0x5A, &[0x98, 0x49, 0x44]);
        p.extend(der(0x9F70, &[1]));
        let resp = der(0xBF2D, &der(0xA0, &der(0xE3, &p)));
        let err = parse_profiles_info(&resp).unwrap_err().to_string();
        assert!(
            err.contains("ProfileInfo[0]") && err.contains("3 byte(s)") && err.contains("10 BCD"),
            "{err}"
        );
    }

    #[test]
    fn malformed_and_error_responses_say_what() {
        // Truncated: BF2D claims 9 bytes, 3 follow.
        let err = parse_profiles_info(&hex::decode("BF2D09A001").unwrap()).unwrap_err();
        assert!(err.to_string().contains("not BER-TLV"), "{err}");
        // Another function's answer.
        let err = parse_profiles_info(&hex::decode("BF3103800100").unwrap()).unwrap_err();
        assert!(err.to_string().contains("no tag BF2D"), "{err}");
        let err = parse_profiles_info(&hex::decode("BF2D0381017F").unwrap()).unwrap_err();
        assert!(err.to_string().contains("undefined error"), "{err}");
    }

    #[test]
    fn result_codes_become_reasons() {
        assert_eq!(
            parse_result(Operation::Enable, &hex::decode("BF3103800100").unwrap()).unwrap(),
            Ok(())
        );
        let r = parse_result(Operation::Delete, &hex::decode("BF3303800102").unwrap())
            .unwrap()
            .unwrap_err();
        assert!(r.to_string().contains("disable it"), "{r}");
        let r = parse_result(Operation::Enable, &hex::decode("BF3103800105").unwrap())
            .unwrap()
            .unwrap_err();
        assert!(r.to_string().contains("catBusy"), "{r}");
        let r = parse_result(Operation::Disable, &hex::decode("BF3203800101").unwrap())
            .unwrap()
            .unwrap_err();
        assert!(r.to_string().contains("no profile with this ICCID"), "{r}");
        assert!(parse_result(Operation::Enable, &[0xBF, 0x31, 0x00]).is_err());
    }

    #[test]
    fn euicc_info2_gives_version_memory_and_ci_keys() {
        let mut body = der(0x81, &[2, 3, 1]);
        body.extend(der(0x82, &[2, 2, 1]));
        body.extend(der(0x83, &[4, 1, 0]));
        body.extend(der(0x84, &[0x81, 0x01, 0x02, 0x82, 0x03, 0x01, 0x86, 0xA0]));
        body.extend(der(0x85, &[0x07, 0x00]));
        let ci = hex::decode("F54172BDF98A95D65CBEB88A38A1C11D800A85C3").unwrap();
        body.extend(der(0xA9, &der(0x04, &ci)));
        body.extend(der(0xAA, &der(0x04, &ci)));
        let info = parse_euicc_info2(&der(0xBF22, &body)).unwrap();
        assert_eq!(info.sgp22_version.as_deref(), Some("2.2.1"));
        assert_eq!(info.free_nvm, Some(100_000));
        assert_eq!(
            info.ci_pkids_verification,
            vec!["F54172BDF98A95D65CBEB88A38A1C11D800A85C3".to_string()]
        );
    }

    #[test]
    fn notifications_list_retrieve_and_remove() {
        let mut m = der(0x80, &integer(3));
        m.extend(der(0x81, &NotificationEvent::Enable.bit_string()));
        m.extend(der(0x0C, b"smdp.example.com"));
        m.extend(der(0x5A, &iccid_bytes(&iccid("8949440000000000016"))));
        let meta = der(0xBF2F, &m);
        let list = parse_notification_list(&der(0xBF28, &der(0xA0, &meta))).unwrap();
        assert_eq!(
            list,
            vec![NotificationMeta {
                seq: 3,
                event: NotificationEvent::Enable,
                address: "smdp.example.com".into(),
                iccid: Some("8949440000000000016".into()),
            }]
        );
        let mut signed = meta.clone();
        signed.extend(der(0x5F37, &[0xAA; 4]));
        let pending = der(0x30, &signed);
        let got = parse_retrieved(&der(0xBF2B, &der(0xA0, &pending))).unwrap();
        assert_eq!((got[0].meta.seq, got[0].der.clone()), (3, pending));
        assert_eq!(
            parse_removed(&hex::decode("BF3003800100").unwrap()),
            Ok(true)
        );
        assert_eq!(
            parse_removed(&hex::decode("BF3003800101").unwrap()),
            Ok(false)
        );
    }
}
