//! The ES10b functions of a profile download (GSMA SGP.22 v2.x §3.1.3, §5.7), as the LPA
//! sends them to the ISD-R: request encoders and response decoders, pure. The LPA needs
//! no card cryptography: what the SM-DP+ signed it relays unchanged, and what the eUICC
//! signed it hands back to the SM-DP+ unchanged. The tags are those of SGP.22 Annex H
//! (the RSP ASN.1 module, AUTOMATIC TAGS: a SEQUENCE or CHOICE none of whose components
//! carries a tag gets context tags [0], [1], … in order).
//!
//! The engine that runs a download over a card and an SM-DP+ is `rsp::download`.

use super::es10::{bad, der, iccid_from_bytes, tlvs, top, uint, utf8, DecodeError};
use super::es10::{ProfileClass, ProfileInfo, ProfileState};
use super::tlv;
use serde::Serialize;

// ---------------------------------------------------------------------------------------
// Requests

/// GetEuiccChallengeRequest [46] (BF2E), empty (SGP.22 §5.7.7).
pub fn get_euicc_challenge() -> Vec<u8> {
    der(0xBF2E, &[])
}

/// GetEuiccInfo1Request [32] (BF20), empty (SGP.22 §5.7.8).
pub fn get_euicc_info1() -> Vec<u8> {
    der(0xBF20, &[])
}

/// EuiccConfiguredAddressesRequest [60] (BF3C), empty (SGP.22 §5.7.20 ES10a).
pub fn get_configured_addresses() -> Vec<u8> {
    der(0xBF3C, &[])
}

/// The device facts an eUICC passes to the SM-DP+ (DeviceInfo, SGP.22 §5.7.13 and Annex
/// H): the TAC (the IMEI's first 8 digits, BCD, 4 bytes), the IMEI when known, and the
/// releases the device supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub tac: [u8; 4],
    pub imei: Option<[u8; 8]>,
}

impl DeviceInfo {
    /// From an IMEI's 15 digits (TS 23.003 §6.2.1): the TAC is its first 8, and the IMEI
    /// itself is sent as 8 bytes of swapped-nibble BCD padded with F (as EF.IMEI is coded,
    /// TS 31.102). `None` (a reader has no IMEI): a TAC of zeros, which SGP.22 allows for
    /// devices without one.
    pub fn from_imei(imei: Option<&str>) -> DeviceInfo {
        let digits: Option<Vec<u8>> = imei.and_then(|i| {
            (i.len() >= 14 && i.len() <= 16 && i.bytes().all(|b| b.is_ascii_digit()))
                .then(|| i.bytes().map(|b| b - b'0').collect())
        });
        let Some(d) = digits else {
            return DeviceInfo {
                tac: [0; 4],
                imei: None,
            };
        };
        let mut tac = [0u8; 4];
        for (i, p) in d[..8].chunks(2).enumerate() {
            // The TAC is plain BCD, most significant digit first (SGP.22 DeviceInfo.tac).
            tac[i] = p[0] << 4 | p[1];
        }
        let mut nibbles = d.clone();
        nibbles.resize(16, 0xF);
        let mut imei_bytes = [0u8; 8];
        for (i, p) in nibbles.chunks(2).enumerate() {
            imei_bytes[i] = p[1] << 4 | p[0];
        }
        DeviceInfo {
            tac,
            imei: Some(imei_bytes),
        }
    }

    /// DeviceInfo ::= SEQUENCE { tac [0] Octet4, deviceCapabilities [1] SEQUENCE { … },
    /// imei [2] Octet8 OPTIONAL } — encoded under the [1] (A1) of its parent. The
    /// capabilities: E-UTRAN, UTRAN and GSM at Release 13 (VersionType '0D 00 00'),
    /// what the IoT modems simgate drives support.
    fn encode(&self) -> Vec<u8> {
        let release = [0x0D, 0x00, 0x00];
        let mut caps = der(0x80, &release); // gsmSupportedRelease
        caps.extend(der(0x81, &release)); // utranSupportedRelease
        caps.extend(der(0x85, &release)); // eutranSupportedRelease
        let mut body = der(0x80, &self.tac);
        body.extend(der(0xA1, &caps));
        if let Some(imei) = &self.imei {
            body.extend(der(0x82, imei));
        }
        der(0xA1, &body)
    }
}

/// One object of an SM-DP+ answer, relayed: exactly one TLV with the expected tag.
fn one(raw: &[u8], tag: u32, what: &str) -> Result<(), DecodeError> {
    match tlv::parse(raw)
        .map_err(|e| bad(format!("{what}: {e}")))?
        .as_slice()
    {
        [t] if t.tag == tag => Ok(()),
        _ => Err(bad(format!(
            "{what}: not one object tagged {tag:X} ({} byte(s) starting {})",
            raw.len(),
            hex::encode_upper(&raw[..raw.len().min(6)])
        ))),
    }
}

/// AuthenticateServerRequest [56] (BF38) { serverSigned1, serverSignature1 (5F37),
/// euiccCiPKIdToBeUsed (04), serverCertificate (30), ctxParams1 [0] (A0)
/// ctxParamsForCommonAuthentication { matchingId [0] (80) OPTIONAL, deviceInfo [1] (A1) } }
/// (SGP.22 §5.7.13). The first four come from ES9+ InitiateAuthentication unchanged.
pub fn authenticate_server(
    server: &InitiateAuthentication,
    matching_id: Option<&str>,
    device: &DeviceInfo,
) -> Vec<u8> {
    let mut ctx = Vec::new();
    if let Some(m) = matching_id {
        ctx.extend(der(0x80, m.as_bytes()));
    }
    ctx.extend(device.encode());
    let mut body = server.server_signed1.clone();
    body.extend_from_slice(&server.server_signature1);
    body.extend_from_slice(&server.ci_pkid);
    body.extend_from_slice(&server.server_certificate);
    body.extend(der(0xA0, &ctx));
    der(0xBF38, &body)
}

/// PrepareDownloadRequest [33] (BF21) { smdpSigned2 (30), smdpSignature2 (5F37), hashCc
/// Octet32 (04) OPTIONAL, smdpCertificate (30) } (SGP.22 §5.7.5).
pub fn prepare_download(server: &AuthenticateClient, hash_cc: Option<&[u8; 32]>) -> Vec<u8> {
    let mut body = server.smdp_signed2.clone();
    body.extend_from_slice(&server.smdp_signature2);
    if let Some(h) = hash_cc {
        body.extend(der(0x04, h));
    }
    body.extend_from_slice(&server.smdp_certificate);
    der(0xBF21, &body)
}

/// Why a session is cancelled (SGP.22 CancelSessionReason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    EndUserRejection = 0,
    Postponed = 1,
    Timeout = 2,
    PprNotAllowed = 3,
}

/// CancelSessionRequest [65] (BF41) { transactionId [0] (80), reason [1] (81) } (SGP.22
/// §5.7.14).
pub fn cancel_session(transaction_id: &[u8], reason: CancelReason) -> Vec<u8> {
    let mut body = der(0x80, transaction_id);
    body.extend(der(0x81, &[reason as u8]));
    der(0xBF41, &body)
}

// ---------------------------------------------------------------------------------------
// What the SM-DP+ sent (ES9+), checked before it goes to the card

/// ES9+ InitiateAuthentication's answer (SGP.22 §6.5.2.6), each field the whole DER
/// object as the eUICC takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiateAuthentication {
    pub transaction_id: Vec<u8>,
    /// ServerSigned1 (30) { transactionId [0], euiccChallenge [1], serverAddress [3],
    /// serverChallenge [4] }.
    pub server_signed1: Vec<u8>,
    pub server_signature1: Vec<u8>,
    pub ci_pkid: Vec<u8>,
    pub server_certificate: Vec<u8>,
}

impl InitiateAuthentication {
    /// Check the relayed objects' shapes and that serverSigned1 is about this session:
    /// its transaction ID, our challenge and the address we asked (SGP.22 §3.1.2: the
    /// LPA checks serverAddress; the eUICC checks the rest again, with the signature).
    pub fn check(&self, challenge: &[u8; 16], address: &str) -> Result<(), DecodeError> {
        one(&self.server_signed1, 0x30, "serverSigned1")?;
        one(&self.server_signature1, 0x5F37, "serverSignature1")?;
        one(&self.ci_pkid, 0x04, "euiccCiPKIdToBeUsed")?;
        one(&self.server_certificate, 0x30, "serverCertificate")?;
        let s = top(&self.server_signed1, 0x30, "serverSigned1")?;
        let tid = top(s, 0x80, "serverSigned1.transactionId")?;
        if tid != self.transaction_id.as_slice() {
            return Err(bad(format!(
                "serverSigned1 is for transaction {}, the answer for {}",
                hex::encode_upper(tid),
                hex::encode_upper(&self.transaction_id)
            )));
        }
        if top(s, 0x81, "serverSigned1.euiccChallenge")? != challenge.as_slice() {
            return Err(bad(
                "serverSigned1 carries another eUICC challenge than ours",
            ));
        }
        let addr = utf8(
            top(s, 0x83, "serverSigned1.serverAddress")?,
            "serverAddress",
        )?;
        if !addr.eq_ignore_ascii_case(address) {
            return Err(bad(format!(
                "the SM-DP+ signed for address \"{addr}\", not \"{address}\" (SGP.22 §3.1.2)"
            )));
        }
        Ok(())
    }
}

/// ES9+ AuthenticateClient's answer (SGP.22 §6.5.2.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticateClient {
    pub transaction_id: Vec<u8>,
    /// StoreMetadataRequest (BF25): what the user confirms before the download.
    pub profile_metadata: Vec<u8>,
    /// SmdpSigned2 (30) { transactionId [0], ccRequiredFlag BOOLEAN, bppEuiccOtpk (5F49)
    /// OPTIONAL }.
    pub smdp_signed2: Vec<u8>,
    pub smdp_signature2: Vec<u8>,
    pub smdp_certificate: Vec<u8>,
}

impl AuthenticateClient {
    /// The shapes, the transaction, and whether the SM-DP+ wants a confirmation code.
    pub fn check(&self) -> Result<bool, DecodeError> {
        one(&self.profile_metadata, 0xBF25, "profileMetadata")?;
        one(&self.smdp_signed2, 0x30, "smdpSigned2")?;
        one(&self.smdp_signature2, 0x5F37, "smdpSignature2")?;
        one(&self.smdp_certificate, 0x30, "smdpCertificate")?;
        let s = top(&self.smdp_signed2, 0x30, "smdpSigned2")?;
        if top(s, 0x80, "smdpSigned2.transactionId")? != self.transaction_id.as_slice() {
            return Err(bad("smdpSigned2 is for another transaction"));
        }
        // X.690 §8.2: BOOLEAN, one byte, 00 false, anything else true.
        match top(s, 0x01, "smdpSigned2.ccRequiredFlag")? {
            [b] => Ok(*b != 0),
            v => Err(bad(format!("ccRequiredFlag of {} byte(s)", v.len()))),
        }
    }
}

/// The profile an SM-DP+ offers, from its StoreMetadataRequest (SGP.22 §5.5.3, Annex H):
/// what a person confirms before a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub iccid: String,
    pub provider: String,
    pub name: String,
    pub class: ProfileClass,
}

/// StoreMetadataRequest [37] (BF25) { iccid (5A), serviceProviderName (91), profileName
/// (92), …, profileClass (95) OPTIONAL, default operational }.
pub fn parse_metadata(data: &[u8]) -> Result<Preview, DecodeError> {
    let body = top(data, 0xBF25, "StoreMetadataRequest")?;
    let iccid = iccid_from_bytes(top(body, 0x5A, "StoreMetadataRequest.iccid")?)
        .map_err(|e| bad(format!("StoreMetadataRequest.iccid: {e}")))?;
    let provider = utf8(
        top(body, 0x91, "serviceProviderName")?,
        "serviceProviderName",
    )?;
    let name = utf8(top(body, 0x92, "profileName")?, "profileName")?;
    let class = match tlv::find(body, 0x95).map_err(|e| bad(e.to_string()))? {
        None => ProfileClass::Operational,
        Some(v) => match uint(v, "profileClass")? {
            0 => ProfileClass::Test,
            1 => ProfileClass::Provisioning,
            2 => ProfileClass::Operational,
            n => return Err(bad(format!("profileClass {n}: SGP.22 defines 0-2"))),
        },
    };
    Ok(Preview {
        iccid: iccid.as_str().to_string(),
        provider,
        name,
        class,
    })
}

/// hashCc (SGP.22 §3.1.3.3, §5.7.5): SHA-256 over SHA-256(confirmation code) ‖
/// transactionId. The code itself never leaves the LPA.
pub fn hash_cc(code: &str, transaction_id: &[u8]) -> [u8; 32] {
    let inner = ring::digest::digest(&ring::digest::SHA256, code.as_bytes());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(inner.as_ref());
    ctx.update(transaction_id);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

// ---------------------------------------------------------------------------------------
// Responses

/// GetEuiccChallengeResponse [46] (BF2E) { euiccChallenge [0] (80) Octet16 }.
pub fn parse_challenge(data: &[u8]) -> Result<[u8; 16], DecodeError> {
    let body = top(data, 0xBF2E, "GetEuiccChallengeResponse")?;
    let c = top(body, 0x80, "euiccChallenge")?;
    c.try_into()
        .map_err(|_| bad(format!("euiccChallenge of {} byte(s), not 16", c.len())))
}

/// EUICCInfo1 [32] (BF20): relayed to the SM-DP+ as it is; checked to be one object.
pub fn check_euicc_info1(data: &[u8]) -> Result<(), DecodeError> {
    one(data, 0xBF20, "EUICCInfo1")?;
    let body = top(data, 0xBF20, "EUICCInfo1")?;
    top(body, 0xA9, "EUICCInfo1.euiccCiPKIdListForVerification")?;
    Ok(())
}

/// EuiccConfiguredAddressesResponse [60] (BF3C) { defaultDpAddress [0] (80) OPTIONAL,
/// rootDsAddress [1] (81) }: the default SM-DP+, if the eUICC has one.
pub fn parse_default_dp(data: &[u8]) -> Result<Option<String>, DecodeError> {
    let body = top(data, 0xBF3C, "EuiccConfiguredAddressesResponse")?;
    tlv::find(body, 0x80)
        .map_err(|e| bad(e.to_string()))?
        .map(|v| utf8(v, "defaultDpAddress"))
        .transpose()
        .map(|a| a.filter(|s| !s.is_empty()))
}

/// AuthenticateErrorCode (SGP.22 §5.7.13), in words.
pub fn authenticate_error(code: u64) -> &'static str {
    match code {
        1 => "the SM-DP+'s certificate is invalid (invalidCertificate)",
        2 => "the SM-DP+'s signature is invalid (invalidSignature)",
        3 => "the SM-DP+ uses a curve the eUICC does not support (unsupportedCurve)",
        4 => "the eUICC has no session for this (noSessionContext)",
        5 => "the SM-DP+'s certificate carries the wrong OID (invalidOid)",
        6 => "the SM-DP+ answered another challenge (euiccChallengeMismatch)",
        7 => "the eUICC does not know the CI the SM-DP+ chose (ciPKUnknown)",
        _ => "the eUICC reports an undefined error (undefinedError)",
    }
}

/// DownloadErrorCode (SGP.22 §5.7.5), in words.
pub fn download_error(code: u64) -> &'static str {
    match code {
        1 => "the SM-DP+'s DPpb certificate is invalid (invalidCertificate)",
        2 => "the SM-DP+'s signature over the download is invalid (invalidSignature)",
        3 => "the SM-DP+ uses a curve the eUICC does not support (unsupportedCurve)",
        4 => "the eUICC has no session for this (noSessionContext)",
        5 => "the transaction is not the eUICC's (invalidTransactionId)",
        _ => "the eUICC reports an undefined error (undefinedError)",
    }
}

/// A refusal inside an eUICC's answer: the function, its code and the code's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{function} refused by the eUICC: {words} (code {code})")]
pub struct CardRefusal {
    pub function: &'static str,
    pub code: u64,
    pub words: &'static str,
}

/// The `[0]` ok / `[1]` error CHOICE of AuthenticateServerResponse and
/// PrepareDownloadResponse: the whole answer when ok (it goes to the SM-DP+ unchanged),
/// the error code otherwise (its error SEQUENCE { transactionId [0], code INTEGER }).
fn ok_or_code(
    data: &[u8],
    tag: u32,
    function: &'static str,
    words: fn(u64) -> &'static str,
) -> Result<Result<Vec<u8>, CardRefusal>, DecodeError> {
    one(data, tag, function)?;
    let body = top(data, tag, function)?;
    let items = tlvs(body, function)?;
    match items.first().map(|t| t.tag) {
        Some(0xA0) => Ok(Ok(data.to_vec())),
        Some(0xA1) => {
            let code = top(items[0].value, 0x02, function)?;
            let code = uint(code, function)?;
            Ok(Err(CardRefusal {
                function,
                code,
                words: words(code),
            }))
        }
        _ => Err(bad(format!("{function}: neither ok [0] nor error [1]"))),
    }
}

/// AuthenticateServerResponse [56] (BF38) CHOICE { authenticateResponseOk [0],
/// authenticateResponseError [1] }.
pub fn parse_authenticate_server(data: &[u8]) -> Result<Result<Vec<u8>, CardRefusal>, DecodeError> {
    ok_or_code(data, 0xBF38, "AuthenticateServer", authenticate_error)
}

/// PrepareDownloadResponse [33] (BF21) CHOICE { downloadResponseOk [0],
/// downloadResponseError [1] }.
pub fn parse_prepare_download(data: &[u8]) -> Result<Result<Vec<u8>, CardRefusal>, DecodeError> {
    ok_or_code(data, 0xBF21, "PrepareDownload", download_error)
}

/// CancelSessionResponse [65] (BF41) CHOICE { cancelSessionResponseOk [0] (A0),
/// cancelSessionResponseError [1] (81) INTEGER { invalidTransactionId(5),
/// undefinedError(127) } }: the whole answer when ok (the SM-DP+ gets it).
pub fn parse_cancel_session(data: &[u8]) -> Result<Result<Vec<u8>, CardRefusal>, DecodeError> {
    one(data, 0xBF41, "CancelSession")?;
    let body = top(data, 0xBF41, "CancelSession")?;
    let items = tlvs(body, "CancelSession")?;
    match items.first() {
        Some(t) if t.tag == 0xA0 => Ok(Ok(data.to_vec())),
        Some(t) if t.tag == 0x81 => {
            let code = uint(t.value, "cancelSessionResponseError")?;
            Ok(Err(CardRefusal {
                function: "CancelSession",
                code,
                words: if code == 5 {
                    "the transaction is not the eUICC's (invalidTransactionId)"
                } else {
                    "the eUICC reports an undefined error (undefinedError)"
                },
            }))
        }
        _ => Err(bad("CancelSession: neither ok [0] nor error [1]")),
    }
}

// ---------------------------------------------------------------------------------------
// The bound profile package

/// Which command of the BPP a segment carries (SGP.22 BppCommandId, §2.5.5): for the
/// progress shown, and to name where an installation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    InitialiseSecureChannel,
    ConfigureIsdp,
    StoreMetadata,
    ReplaceSessionKeys,
    ProfileElements,
}

/// One ES10b LoadBoundProfilePackage segment: the bytes of one STORE DATA sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub kind: SegmentKind,
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

/// The longest 86 segment SGP.22 allows (§2.5.5: each '86' is at most 1020 bytes of
/// value) — checked so a server's oversize segment is named, not sent.
pub const MAX_86: usize = 1020;

/// Split a BoundProfilePackage [54] (BF36) into the segments the LPA sends one by one
/// (SGP.22 §2.5.5, ES8+ functions over ES10b.LoadBoundProfilePackage): (1) the BF36 tag
/// and length with the whole InitialiseSecureChannelRequest (BF23); (2) the whole
/// firstSequenceOf87 (A0, ConfigureISDP); (3) the sequenceOf88's tag and length (A1), then
/// (4) each 88 (StoreMetadata); (5) the whole secondSequenceOf87 (A2, ReplaceSessionKeys)
/// if present; (6) the sequenceOf86's tag and length (A3), then (7) each 86.
pub fn bpp_segments(bpp: &[u8]) -> Result<Vec<Segment<'_>>, DecodeError> {
    let outer = tlv::parse_whole(bpp).map_err(|e| bad(format!("BoundProfilePackage: {e}")))?;
    let [(t, whole)] = outer.as_slice() else {
        return Err(bad("BoundProfilePackage: not one object"));
    };
    if t.tag != 0xBF36 {
        return Err(bad(format!(
            "BoundProfilePackage: tag {:X}, not BF36",
            t.tag
        )));
    }
    let header = &whole[..whole.len() - t.value.len()];
    let parts = tlv::parse_whole(t.value).map_err(|e| bad(format!("BoundProfilePackage: {e}")))?;
    let mut out = Vec::new();
    let (_, isc) = part(&parts, 0xBF23, "initialiseSecureChannelRequest")?;
    let mut first = header.to_vec();
    first.extend_from_slice(isc);
    out.push(Segment {
        kind: SegmentKind::InitialiseSecureChannel,
        bytes: first.into(),
    });
    let (_, a0) = part(&parts, 0xA0, "firstSequenceOf87")?;
    out.push(Segment {
        kind: SegmentKind::ConfigureIsdp,
        bytes: std::borrow::Cow::Borrowed(a0),
    });
    let a1 = part(&parts, 0xA1, "sequenceOf88")?;
    each_of(
        &mut out,
        a1,
        "sequenceOf88",
        0x88,
        SegmentKind::StoreMetadata,
    )?;
    if let Ok((_, a2)) = part(&parts, 0xA2, "secondSequenceOf87") {
        out.push(Segment {
            kind: SegmentKind::ReplaceSessionKeys,
            bytes: std::borrow::Cow::Borrowed(a2),
        });
    }
    let a3 = part(&parts, 0xA3, "sequenceOf86")?;
    each_of(
        &mut out,
        a3,
        "sequenceOf86",
        0x86,
        SegmentKind::ProfileElements,
    )?;
    Ok(out)
}

type Whole<'a> = (tlv::Tlv<'a>, &'a [u8]);

fn part<'a>(parts: &[Whole<'a>], tag: u32, name: &str) -> Result<Whole<'a>, DecodeError> {
    parts
        .iter()
        .find(|(p, _)| p.tag == tag)
        .copied()
        .ok_or_else(|| bad(format!("BoundProfilePackage: no {name} ({tag:X})")))
}

/// A SEQUENCE OF sent as its tag and length alone, then each element on its own.
fn each_of<'a>(
    out: &mut Vec<Segment<'a>>,
    (seq, whole): Whole<'a>,
    name: &str,
    each: u32,
    kind: SegmentKind,
) -> Result<(), DecodeError> {
    out.push(Segment {
        kind,
        bytes: std::borrow::Cow::Borrowed(&whole[..whole.len() - seq.value.len()]),
    });
    let items = tlv::parse_whole(seq.value).map_err(|e| bad(format!("{name}: {e}")))?;
    if items.is_empty() {
        return Err(bad(format!("{name}: empty")));
    }
    for (i, w) in items {
        if i.tag != each {
            return Err(bad(format!("{name}: a {:X} among the {each:X}s", i.tag)));
        }
        if each == 0x86 && i.value.len() > MAX_86 {
            return Err(bad(format!(
                "{name}: a segment of {} bytes (SGP.22 §2.5.5 allows {MAX_86})",
                i.value.len()
            )));
        }
        out.push(Segment {
            kind,
            bytes: std::borrow::Cow::Borrowed(w),
        });
    }
    Ok(())
}

/// BppCommandId (SGP.22 §5.7.6), in words.
pub fn bpp_command(id: u64) -> &'static str {
    match id {
        0 => "initialiseSecureChannel",
        1 => "configureISDP",
        2 => "storeMetadata",
        3 => "storeMetadata2",
        4 => "replaceSessionKeys",
        5 => "loadProfileElements",
        _ => "an unknown BPP command",
    }
}

/// ErrorReason of a ProfileInstallationResult (SGP.22 §5.7.6), in words.
pub fn install_error(reason: u64) -> &'static str {
    match reason {
        1 => "incorrect input values (incorrectInputValues)",
        2 => "the SM-DP+'s signature is invalid (invalidSignature)",
        3 => "the transaction is not the eUICC's (invalidTransactionId)",
        4 => "unsupported key parameters (unsupportedCrtValues)",
        5 => "unsupported remote operation (unsupportedRemoteOperationType)",
        6 => "the eUICC does not take this profile class (unsupportedProfileClass)",
        7 => "the package's secure-channel structure is wrong (scp03tStructureError)",
        8 => "a MAC or decryption failed: the package was altered or bound to another session (scp03tSecurityError)",
        9 => "a profile with this ICCID is already on the eUICC (installFailedDueToIccidAlreadyExistsOnEuicc)",
        10 => "the eUICC has not enough memory for this profile (installFailedDueToInsufficientMemoryForProfile)",
        11 => "the installation was interrupted (installFailedDueToInterruption)",
        12 => "the eUICC could not process the profile package (installFailedDueToPEProcessingError)",
        13 => "the package's ICCID differs from its metadata (installFailedDueToIccidMismatch)",
        14 => "a test profile's network key is invalid (testProfileInstallFailedDueToInvalidNaaKey)",
        15 => "the profile's policy rules are not allowed here (pprNotAllowed)",
        _ => "the installation failed for an unknown reason (installFailedDueToUnknownError)",
    }
}

/// The final result of a ProfileInstallationResult.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Installed {
    Success {
        /// The new ISD-P's AID.
        aid: String,
    },
    Error {
        bpp_command_id: u64,
        error_reason: u64,
    },
}

/// What an eUICC said when a package was loaded (or stopped at a failing segment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationResult {
    pub transaction_id: Vec<u8>,
    /// The notification's sequence number: the eUICC keeps the result as a pending
    /// notification for the SM-DP+ (SGP.22 §3.1.3.4).
    pub seq: u64,
    pub iccid: Option<String>,
    pub result: Installed,
    /// The whole BF37, for ES9+ HandleNotification.
    pub raw: Vec<u8>,
}

impl InstallationResult {
    pub fn describe(&self) -> String {
        match &self.result {
            Installed::Success { aid } => format!("installed in ISD-P {aid}"),
            Installed::Error {
                bpp_command_id,
                error_reason,
            } => format!(
                "the eUICC refused the package at {}: {} (reason {error_reason})",
                bpp_command(*bpp_command_id),
                install_error(*error_reason)
            ),
        }
    }
}

/// ProfileInstallationResult [55] (BF37) { profileInstallationResultData [39] (BF27) {
/// transactionId [0] (80), notificationMetadata (BF2F) { seqNumber [0], …, iccid (5A)
/// OPTIONAL }, smdpOid (06) OPTIONAL, finalResult [2] (A2) CHOICE { successResult [0]
/// (A0) { aid (4F), simaResponse (04) }, errorResult [1] (A1) { bppCommandId [0] (80),
/// errorReason [1] (81), simaResponse [2] OPTIONAL } } }, euiccSignPIR (5F37) }.
pub fn parse_installation_result(data: &[u8]) -> Result<InstallationResult, DecodeError> {
    let what = "ProfileInstallationResult";
    let body = top(data, 0xBF37, what)?;
    let d = top(body, 0xBF27, "profileInstallationResultData")?;
    let transaction_id = top(d, 0x80, "profileInstallationResultData.transactionId")?.to_vec();
    let meta = top(d, 0xBF2F, "notificationMetadata")?;
    let seq = uint(
        top(meta, 0x80, "notificationMetadata.seqNumber")?,
        "seqNumber",
    )?;
    let iccid = tlv::find(meta, 0x5A)
        .map_err(|e| bad(e.to_string()))?
        .map(|v| iccid_from_bytes(v).map(|i| i.as_str().to_string()))
        .transpose()
        .map_err(|e| bad(format!("notificationMetadata.iccid: {e}")))?;
    let fin = top(d, 0xA2, "finalResult")?;
    let result = match tlvs(fin, "finalResult")?.first() {
        Some(t) if t.tag == 0xA0 => Installed::Success {
            aid: hex::encode_upper(top(t.value, 0x4F, "successResult.aid")?),
        },
        Some(t) if t.tag == 0xA1 => Installed::Error {
            bpp_command_id: uint(top(t.value, 0x80, "bppCommandId")?, "bppCommandId")?,
            error_reason: uint(top(t.value, 0x81, "errorReason")?, "errorReason")?,
        },
        _ => return Err(bad("finalResult: neither successResult nor errorResult")),
    };
    top(body, 0x5F37, "euiccSignPIR")?;
    Ok(InstallationResult {
        transaction_id,
        seq,
        iccid,
        result,
        raw: data.to_vec(),
    })
}

/// Whether a profile `iccid` is in a listing, and in which state: how a download that
/// ended in doubt is reconciled (SGP.22 §3.1.3: the result may be lost, the card knows).
pub fn find_profile<'a>(profiles: &'a [ProfileInfo], iccid: &str) -> Option<&'a ProfileInfo> {
    profiles.iter().find(|p| p.iccid == iccid)
}

/// Whether the listing has an enabled profile (for the preview's "replaces" line).
pub fn enabled(profiles: &[ProfileInfo]) -> Option<&ProfileInfo> {
    profiles.iter().find(|p| p.state == ProfileState::Enabled)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BPP shaped as SGP.22 §2.5.5 draws it, with two 88s, an A2 and three 86s.
    fn bpp(with_a2: bool) -> Vec<u8> {
        let isc = der(0xBF23, &der(0x82, &[1]));
        let a0 = der(0xA0, &der(0x87, &[0xAA; 20]));
        let mut s88 = der(0x88, &[1; 10]);
        s88.extend(der(0x88, &[2; 300]));
        let a1 = der(0xA1, &s88);
        let a2 = der(0xA2, &der(0x87, &[3; 30]));
        let mut s86 = der(0x86, &[4; 1020]);
        s86.extend(der(0x86, &[5; 1020]));
        s86.extend(der(0x86, &[6; 17]));
        let a3 = der(0xA3, &s86);
        let mut body = isc;
        body.extend(a0);
        body.extend(a1);
        if with_a2 {
            body.extend(a2);
        }
        body.extend(a3);
        der(0xBF36, &body)
    }

    #[test]
    fn a_bpp_splits_into_the_segments_sgp22_names_and_they_rebuild_it() {
        let b = bpp(true);
        let segs = bpp_segments(&b).unwrap();
        let kinds: Vec<_> = segs.iter().map(|s| s.kind).collect();
        use SegmentKind::*;
        assert_eq!(
            kinds,
            [
                InitialiseSecureChannel,
                ConfigureIsdp,
                StoreMetadata,
                StoreMetadata,
                StoreMetadata,
                ReplaceSessionKeys,
                ProfileElements,
                ProfileElements,
                ProfileElements,
                ProfileElements
            ]
        );
        // The first segment starts with BF36's header and holds the whole BF23.
        assert_eq!(&segs[0].bytes[..2], &[0xBF, 0x36]);
        // A1 and A3 go alone, tag and length only.
        assert_eq!(segs[2].bytes.as_ref(), &[0xA1, 0x82, 0x01, 0x3C]);
        assert_eq!(&segs[6].bytes[..1], &[0xA3]);
        // Concatenated, the segments are the package itself.
        let joined: Vec<u8> = segs.iter().flat_map(|s| s.bytes.iter().copied()).collect();
        assert_eq!(joined, b);
        assert_eq!(bpp_segments(&bpp(false)).unwrap().len(), 9);
    }

    #[test]
    fn a_bpp_without_its_profile_elements_or_with_an_oversize_86_is_named() {
        let no86 = der(
            0xBF36,
            &[
                der(0xBF23, &[]),
                der(0xA0, &[]),
                der(0xA1, &der(0x88, &[1])),
            ]
            .concat(),
        );
        assert!(bpp_segments(&no86)
            .unwrap_err()
            .what
            .contains("sequenceOf86"));
        let big = der(
            0xBF36,
            &[
                der(0xBF23, &[]),
                der(0xA0, &[]),
                der(0xA1, &der(0x88, &[1])),
                der(0xA3, &der(0x86, &[0; 1021])),
            ]
            .concat(),
        );
        assert!(bpp_segments(&big).unwrap_err().what.contains("1021 bytes"));
        assert!(bpp_segments(&[0xBF, 0x36]).is_err());
    }

    #[test]
    fn hash_cc_is_sha256_of_the_codes_sha256_and_the_transaction_id() {
        // SHA-256("") = e3b0c442…; SHA-256(that ‖ 00) computed independently with
        // `printf '' | sha256sum` and python's hashlib.
        let tid = [0u8];
        let h = hash_cc("", &tid);
        let inner = ring::digest::digest(&ring::digest::SHA256, b"");
        assert_eq!(
            hex::encode(inner.as_ref()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut both = inner.as_ref().to_vec();
        both.push(0);
        assert_eq!(
            h.as_slice(),
            ring::digest::digest(&ring::digest::SHA256, &both).as_ref()
        );
        assert_ne!(hash_cc("1234", &tid), hash_cc("1235", &tid));
    }

    #[test]
    fn device_info_carries_the_tac_in_bcd_and_the_imei_swapped() {
        let d = DeviceInfo::from_imei(Some("352099001761481"));
        assert_eq!(d.tac, [0x35, 0x20, 0x99, 0x00]);
        assert_eq!(
            d.imei.unwrap(),
            [0x53, 0x02, 0x99, 0x00, 0x71, 0x16, 0x84, 0xF1]
        );
        assert_eq!(DeviceInfo::from_imei(None).tac, [0; 4]);
        assert_eq!(DeviceInfo::from_imei(Some("12ab")).imei, None);
    }

    #[test]
    fn authenticate_server_relays_the_servers_objects_and_adds_ctx_params() {
        let ia = InitiateAuthentication {
            transaction_id: vec![1, 2],
            server_signed1: der(0x30, &der(0x80, &[1, 2])),
            server_signature1: der(0x5F37, &[9; 64]),
            ci_pkid: der(0x04, &[7; 20]),
            server_certificate: der(0x30, &[0; 10]),
        };
        let req = authenticate_server(&ia, Some("ABC"), &DeviceInfo::from_imei(None));
        let body = top(&req, 0xBF38, "t").unwrap();
        let items = tlvs(body, "t").unwrap();
        let tags: Vec<u32> = items.iter().map(|t| t.tag).collect();
        assert_eq!(tags, [0x30, 0x5F37, 0x04, 0x30, 0xA0]);
        assert_eq!(top(items[4].value, 0x80, "m").unwrap(), b"ABC");
        assert!(top(items[4].value, 0xA1, "d").is_ok());
    }

    #[test]
    fn errors_of_authenticate_server_and_prepare_download_are_said_in_words() {
        let err = der(
            0xBF38,
            &der(0xA1, &[der(0x80, &[1]), der(0x02, &[6])].concat()),
        );
        let r = parse_authenticate_server(&err).unwrap().unwrap_err();
        assert_eq!(r.code, 6);
        assert!(r.to_string().contains("euiccChallengeMismatch"));
        let ok = der(0xBF21, &der(0xA0, &[0x30, 0x00]));
        assert_eq!(parse_prepare_download(&ok).unwrap().unwrap(), ok);
        let bad_ = der(0xBF21, &der(0xA2, &[]));
        assert!(parse_prepare_download(&bad_).is_err());
    }

    #[test]
    fn an_installation_result_gives_its_seq_iccid_and_outcome() {
        let meta = [
            der(0x80, &[3]),
            der(0x81, &[0x07, 0x80]),
            der(0x0C, b"smdp.example"),
            der(
                0x5A,
                &super::super::es10::iccid_bytes(
                    &crate::card::Iccid::from_digits("8949440000000000016").unwrap(),
                ),
            ),
        ]
        .concat();
        let fail = der(0xA1, &[der(0x80, &[5]), der(0x81, &[8])].concat());
        let data = der(
            0xBF27,
            &[der(0x80, &[0xAB]), der(0xBF2F, &meta), der(0xA2, &fail)].concat(),
        );
        let pir = der(0xBF37, &[data, der(0x5F37, &[0; 64])].concat());
        let r = parse_installation_result(&pir).unwrap();
        assert_eq!(r.seq, 3);
        assert_eq!(r.iccid.as_deref(), Some("8949440000000000016"));
        assert!(r.describe().contains("loadProfileElements"));
        assert!(r.describe().contains("scp03tSecurityError"));
    }
}
