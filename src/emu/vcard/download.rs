//! The virtual eUICC's download side (GSMA SGP.22 §3.1.3, ES10b): GetEUICCChallenge,
//! GetEUICCInfo1, AuthenticateServer, PrepareDownload, LoadBoundProfilePackage and
//! CancelSession, with the real cryptography of src/emu/rsp (certificate chains to the
//! trusted CI, ECDSA P-256 signatures, the one-time key, ECKA + KDF, the BSP's MACs and
//! decryption). Pure: requests in, responses out; the card (card.rs) owns the profiles and
//! the notifications this changes.

use super::image::ProfileImage;
use crate::card::es10::NotificationEvent;
use crate::card::tlv as ber;
use crate::emu::rsp::{self, Bsp, Certificate, OneTimeKey, SessionKeys, SigningKey};
use std::path::Path;
use std::sync::Arc;

/// A BER-TLV of any length (the card engine's encoder).
pub(super) fn tlv(tag: u32, value: &[u8]) -> Vec<u8> {
    ber::encode(tag, value)
}

/// SGP.22 §4.5.2.1 role OIDs (certificatePolicies): what each certificate may be used for.
const ROLE_DP_AUTH: &str = "2.23.146.1.2.1.4";
const ROLE_DP_PB: &str = "2.23.146.1.2.1.5";

/// The eUICC's keys and certificates, read from a PKI directory (ci.pem, eum.pem,
/// euicc.pem, euicc.key: the test PKI's file names, tests/rig/rsp-pki.sh).
#[derive(Debug)]
pub struct EuiccPki {
    ci: Certificate,
    eum: Certificate,
    euicc: Certificate,
    key: SigningKey,
}

/// A PKI directory that cannot be used, naming the file and why.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Read(#[from] rsp::RspError),
    #[error("{0}: the CI certificate has no SubjectKeyIdentifier (its PKID, SGP.22 §4.5.2)")]
    NoCiPkid(String),
    #[error("{0}: not issued by {1} ({2})")]
    Chain(String, String, rsp::RspError),
    #[error("{0}: its key is not the key of euicc.pem")]
    KeyMismatch(String),
}

impl EuiccPki {
    /// Load and check the directory: the EUM certificate issued by the CI, the eUICC's by
    /// the EUM, and euicc.key the private key of euicc.pem.
    pub fn load(dir: &Path) -> Result<EuiccPki, PkiError> {
        let file = |name: &str| dir.join(name);
        let shown = |name: &str| file(name).display().to_string();
        let ci = Certificate::load_pem_one(&file("ci.pem"))?;
        let eum = Certificate::load_pem_one(&file("eum.pem"))?;
        let euicc = Certificate::load_pem_one(&file("euicc.pem"))?;
        let key = SigningKey::load_pem(&file("euicc.key"))?;
        if ci.ski().is_none() {
            return Err(PkiError::NoCiPkid(shown("ci.pem")));
        }
        eum.verify_issued_by(&ci)
            .map_err(|e| PkiError::Chain(shown("eum.pem"), "ci.pem".into(), e))?;
        euicc
            .verify_issued_by(&eum)
            .map_err(|e| PkiError::Chain(shown("euicc.pem"), "eum.pem".into(), e))?;
        if key.public_key() != *euicc.public_key() {
            return Err(PkiError::KeyMismatch(shown("euicc.key")));
        }
        Ok(EuiccPki {
            ci,
            eum,
            euicc,
            key,
        })
    }

    /// The EID the eUICC certificate is for (its subject serialNumber, SGP.22
    /// §4.5.2.1.0.2): the card using these keys must have it, since the SM-DP+ binds the
    /// BPP to the EID of this certificate (the KDF's SharedInfo, §2.6.4.2).
    pub fn eid(&self) -> Option<&str> {
        self.euicc.subject_serial_number()
    }

    /// The CI's PKID: its SubjectKeyIdentifier (checked present at load time).
    pub fn ci_pkid(&self) -> &[u8] {
        self.ci.ski().unwrap_or_default()
    }

    /// The eUICC's signature (raw r‖s) as the 5F37 TLV of RSP messages.
    fn sign(&self, data: &[u8]) -> Vec<u8> {
        tlv(0x5F37, &self.key.sign(data))
    }

    /// An RSP server certificate (DPauth, DPpb) checked against this eUICC's CI: issued
    /// by it (SGP.22 §5.7.13 step 1, §5.7.5), its key on P-256, its role when it names
    /// one.
    fn check_server(&self, der: &[u8], role: &str) -> Result<Certificate, CertFault> {
        let cert = Certificate::from_der(der).map_err(|e| match e {
            rsp::RspError::Unsupported(_) => CertFault::Curve,
            _ => CertFault::Invalid,
        })?;
        cert.verify_issued_by(&self.ci)
            .map_err(|_| CertFault::Invalid)?;
        if !cert.policies().is_empty() && !cert.policies().iter().any(|p| p == role) {
            return Err(CertFault::Oid);
        }
        Ok(cert)
    }

    /// otherSignedNotification's signature and certificates (SGP.22 §5.7.10).
    pub(super) fn sign_notification(&self, metadata: &[u8]) -> Vec<u8> {
        let mut out = metadata.to_vec();
        out.extend(self.sign(metadata));
        out.extend_from_slice(self.euicc.der());
        out.extend_from_slice(self.eum.der());
        out
    }
}

/// Why a server certificate was refused, before it becomes the function's error code.
enum CertFault {
    Invalid,
    Curve,
    Oid,
}

/// AuthenticateErrorCode (SGP.22 §5.7.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum AuthenticateError {
    #[error("invalidCertificate")]
    InvalidCertificate = 1,
    #[error("invalidSignature")]
    InvalidSignature = 2,
    #[error("unsupportedCurve")]
    UnsupportedCurve = 3,
    #[error("noSessionContext")]
    NoSessionContext = 4,
    #[error("invalidOid")]
    InvalidOid = 5,
    #[error("euiccChallengeMismatch")]
    ChallengeMismatch = 6,
    #[error("ciPKUnknown")]
    CiPkUnknown = 7,
    #[error("undefinedError")]
    Undefined = 127,
}

/// DownloadErrorCode (SGP.22 §5.7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum DownloadError {
    #[error("invalidCertificate")]
    InvalidCertificate = 1,
    #[error("invalidSignature")]
    InvalidSignature = 2,
    #[error("unsupportedCurve")]
    UnsupportedCurve = 3,
    #[error("noSessionContext")]
    NoSessionContext = 4,
    #[error("invalidTransactionId")]
    InvalidTransactionId = 5,
    #[error("undefinedError")]
    Undefined = 127,
}

/// BppCommandId (SGP.22 §5.7.6): which BPP command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BppCommand {
    InitialiseSecureChannel = 0,
    ConfigureIsdp = 1,
    StoreMetadata = 2,
    ReplaceSessionKeys = 4,
    LoadProfileElements = 5,
}

/// ErrorReason of a ProfileInstallationResult (SGP.22 §5.7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[repr(u8)]
pub enum InstallError {
    #[error("incorrectInputValues")]
    IncorrectInputValues = 1,
    #[error("invalidSignature")]
    InvalidSignature = 2,
    #[error("invalidTransactionId")]
    InvalidTransactionId = 3,
    #[error("unsupportedCrtValues")]
    UnsupportedCrtValues = 4,
    #[error("unsupportedRemoteOperationType")]
    UnsupportedRemoteOperationType = 5,
    #[error("unsupportedProfileClass")]
    UnsupportedProfileClass = 6,
    #[error("scp03tStructureError")]
    Scp03tStructure = 7,
    #[error("scp03tSecurityError")]
    Scp03tSecurity = 8,
    #[error("installFailedDueToIccidAlreadyExistsOnEuicc")]
    IccidExists = 9,
    #[error("installFailedDueToInsufficientMemoryForProfile")]
    OutOfMemory = 10,
    #[error("installFailedDueToPEProcessingError")]
    PeProcessing = 12,
    #[error("installFailedDueToIccidMismatch")]
    IccidMismatch = 13,
}

/// Where the BPP is (SGP.22 §2.5.5: the segments come in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// InitialiseSecureChannel done: A0 (firstSequenceOf87) next.
    ConfigureIsdp,
    /// ConfigureISDP done: the A1 header next.
    MetadataHeader,
    /// Inside A1: 88 segments until the StoreMetadata TLV is whole.
    Metadata,
    /// StoreMetadata done: A2 (ReplaceSessionKeys) or the A3 header next.
    AfterMetadata,
    /// Inside A3: 86 segments until its length is used up.
    Package,
}

/// StoreMetadata's content (SGP.22 §5.5.3), what the installed profile shows.
#[derive(Debug, Clone)]
struct Metadata {
    iccid: String,
    provider: String,
    name: String,
    class: String,
    /// notificationConfigurationInfo's address: where the profile's enable, disable
    /// and delete notifications go.
    notify: Option<String>,
}

/// A BPP being loaded.
struct Bpp {
    stage: Stage,
    bsp: Bsp,
    /// The 88 segments' plaintext so far.
    metadata_bytes: Vec<u8>,
    metadata: Option<Metadata>,
    /// The 86 segments' plaintext: the SAIP profile package.
    package: Vec<u8>,
    /// Bytes of 86 TLVs the A3 header announced and not yet seen.
    package_left: usize,
}

/// After PrepareDownload: the one-time key and what the BPP is checked against.
struct Prepared {
    otk: OneTimeKey,
    dppb: Certificate,
    /// The SM-DP+ OID of CERT.DPpb, for the PIR (SGP.22 §5.7.6 smdpOid).
    pb_oid: Option<Vec<u8>>,
}

/// A session opened by AuthenticateServer (SGP.22 §3.1.3, §5.7.13).
struct Session {
    transaction_id: Vec<u8>,
    server_address: String,
    /// euiccSignature1 as its 5F37 TLV: smdpSignature2 covers it (§5.7.5).
    euicc_signature1: Vec<u8>,
    /// The SM-DP+ OID of CERT.DPauth, for CancelSession.
    auth_oid: Option<Vec<u8>>,
    prepared: Option<Prepared>,
    bpp: Option<Bpp>,
}

/// What the card must change after a download step.
#[derive(Debug)]
pub(super) enum Effect {
    /// Install this profile (disabled); the package's size is its memory.
    Install(ProfileImage, u32),
    /// Keep this ProfileInstallationResult (its BF37 TLV, signed) as a pending
    /// notification with the sequence number given, for this ICCID and SM-DP+.
    Pir {
        seq: u32,
        iccid: Option<String>,
        address: String,
        pir: Vec<u8>,
    },
}

/// What the card tells the download side about itself.
pub(super) struct CardView {
    pub eid: Vec<u8>,
    pub info2: Vec<u8>,
    /// The ICCIDs of the profiles installed.
    pub iccids: Vec<String>,
    /// Free non-volatile memory now, bytes.
    pub free_nvm: u32,
    /// The sequence number the next notification gets.
    pub next_seq: u32,
}

/// The eUICC's download side: its keys (none: every download function refused) and the
/// one session SGP.22 lets it hold.
#[derive(Default)]
pub struct Download {
    pki: Option<Arc<EuiccPki>>,
    challenge: Option<[u8; 16]>,
    session: Option<Session>,
    /// LoadBoundProfilePackage segments answered since power-on (the
    /// `mute_after_segments` fault counts them).
    segments: u64,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("pki", &self.pki.is_some())
            .field("session", &self.session.is_some())
            .field("segments", &self.segments)
            .finish()
    }
}

/// The tag and the header's size of a TLV whose value may not be there (a segment that
/// is a constructed TLV's tag and length alone, SGP.22 §2.5.5).
fn header(data: &[u8]) -> Option<(u32, usize, usize)> {
    let first = *data.first()?;
    let mut i = 1;
    let mut tag = u32::from(first);
    if first & 0x1F == 0x1F {
        loop {
            let b = *data.get(i)?;
            tag = tag << 8 | u32::from(b);
            i += 1;
            if b & 0x80 == 0 || i > 3 {
                break;
            }
        }
    }
    let l = *data.get(i)?;
    i += 1;
    let len = match l {
        0..=0x7F => usize::from(l),
        0x81..=0x83 => {
            let n = usize::from(l & 0x7F);
            let bytes = data.get(i..i + n)?;
            i += n;
            bytes.iter().fold(0, |a, b| a << 8 | usize::from(*b))
        }
        _ => return None,
    };
    Some((tag, len, i))
}

/// Split `data` into its top-level TLVs, each whole (tag and length included), skipping
/// the 00/FF padding between objects as `card::tlv::parse` does, so the two list the
/// same objects.
fn raw_tlvs(mut data: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while let Some(&first) = data.first() {
        if first == 0x00 || first == 0xFF {
            data = &data[1..];
            continue;
        }
        let (_, len, head) = header(data)?;
        let whole = data.get(..head + len)?;
        out.push(whole);
        data = &data[head + len..];
    }
    Some(out)
}

/// 16 random bytes (the eUICC challenge, SGP.22 §5.7.7).
fn random16() -> [u8; 16] {
    use rand_core::{OsRng, RngCore};
    let mut c = [0u8; 16];
    OsRng.fill_bytes(&mut c);
    c
}

/// ICCID digits from EF.ICCID's bytes (swapped nibbles, F padding dropped).
fn iccid_digits(ef: &[u8]) -> String {
    ef.iter()
        .flat_map(|b| [b & 0x0F, b >> 4])
        .take_while(|n| *n != 0x0F)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('F'))
        .collect()
}

impl Download {
    pub fn with_pki(pki: Option<Arc<EuiccPki>>) -> Download {
        Download {
            pki,
            ..Download::default()
        }
    }

    pub fn pki(&self) -> Option<&EuiccPki> {
        self.pki.as_deref()
    }

    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// A reset: the session and its BPP are gone (volatile), the keys stay.
    pub(super) fn drop_session(&mut self) {
        self.challenge = None;
        self.session = None;
    }

    /// A BPP is being loaded: the next STORE DATA is one of its segments.
    pub(super) fn in_bpp(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.bpp.is_some())
    }

    /// GetEUICCChallenge (SGP.22 §5.7.7): a fresh challenge; a session still open is
    /// dropped (a new download starts).
    pub(super) fn challenge(&mut self) -> Vec<u8> {
        let c = random16();
        self.challenge = Some(c);
        self.session = None;
        tlv(0xBF2E, &tlv(0x80, &c))
    }

    /// AuthenticateServer (SGP.22 §5.7.13).
    pub(super) fn authenticate_server(&mut self, value: &[u8], card: &CardView) -> Vec<u8> {
        let fields = ber::parse(value).unwrap_or_default();
        let field = |tag: u32| fields.iter().find(|t| t.tag == tag).map(|t| t.value);
        let signed1 = field(0x30).unwrap_or_default();
        let tid = ber::find(signed1, 0x80)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_vec();
        let refuse = |code: AuthenticateError| {
            tracing::debug!(%code, "AuthenticateServer refused");
            let mut e = tlv(0x80, &tid);
            e.extend(tlv(0x02, &[code as u8]));
            tlv(0xBF38, &tlv(0xA1, &e))
        };
        match self.authenticate(value, card) {
            Ok(out) => out,
            Err(code) => {
                self.session = None;
                refuse(code)
            }
        }
    }

    fn authenticate(
        &mut self,
        value: &[u8],
        card: &CardView,
    ) -> Result<Vec<u8>, AuthenticateError> {
        use AuthenticateError as E;
        // An eUICC without keys knows no CI: whatever PKID the server names is unknown.
        let pki = self.pki.clone().ok_or(E::CiPkUnknown)?;
        let fields = ber::parse(value).map_err(|_| E::Undefined)?;
        let raw = raw_tlvs(value).ok_or(E::Undefined)?;
        // serverSigned1, serverSignature1, euiccCiPKIdToBeUsed, serverCertificate,
        // ctxParams1 (SGP.22 §5.7.13), in this order.
        let tags: Vec<u32> = fields.iter().map(|t| t.tag).collect();
        if raw.len() != 5 || tags.len() != 5 || tags[..4] != [0x30, 0x5F37, 0x04, 0x30] {
            return Err(E::Undefined);
        }
        let (signed1, signature1, pkid, ctx) =
            (fields[0].value, fields[1].value, fields[2].value, raw[4]);
        if pkid != pki.ci_pkid() {
            return Err(E::CiPkUnknown);
        }
        let cert = pki
            .check_server(raw[3], ROLE_DP_AUTH)
            .map_err(|f| match f {
                CertFault::Invalid => E::InvalidCertificate,
                CertFault::Curve => E::UnsupportedCurve,
                CertFault::Oid => E::InvalidOid,
            })?;
        rsp::keys::verify(cert.public_key(), raw[0], signature1)
            .map_err(|_| E::InvalidSignature)?;
        let find = |t: u32| ber::find(signed1, t).ok().flatten();
        let challenge = self.challenge.take().ok_or(E::NoSessionContext)?;
        if find(0x81) != Some(&challenge[..]) {
            return Err(E::ChallengeMismatch);
        }
        let tid = find(0x80).filter(|t| (1..=16).contains(&t.len()));
        let (Some(tid), Some(address), Some(server_challenge)) = (tid, find(0x83), find(0x84))
        else {
            return Err(E::Undefined);
        };
        let server_address = String::from_utf8(address.to_vec()).map_err(|_| E::Undefined)?;
        let mut signed = tlv(0x80, tid);
        signed.extend(tlv(0x83, address));
        signed.extend(tlv(0x84, server_challenge));
        signed.extend_from_slice(&card.info2);
        signed.extend_from_slice(ctx);
        let euicc_signed1 = tlv(0x30, &signed);
        let signature = pki.sign(&euicc_signed1);
        self.session = Some(Session {
            transaction_id: tid.to_vec(),
            server_address,
            euicc_signature1: signature.clone(),
            auth_oid: smdp_oid(&cert),
            prepared: None,
            bpp: None,
        });
        let mut ok = euicc_signed1;
        ok.extend(signature);
        ok.extend_from_slice(pki.euicc.der());
        ok.extend_from_slice(pki.eum.der());
        Ok(tlv(0xBF38, &tlv(0xA0, &ok)))
    }

    /// PrepareDownload (SGP.22 §5.7.5).
    pub(super) fn prepare_download(&mut self, value: &[u8]) -> Vec<u8> {
        let signed2 = ber::find(value, 0x30).ok().flatten().unwrap_or_default();
        let tid = ber::find(signed2, 0x80)
            .ok()
            .flatten()
            .unwrap_or_default()
            .to_vec();
        match self.prepare(value) {
            Ok(out) => out,
            Err(code) => {
                tracing::debug!(%code, "PrepareDownload refused");
                // invalidTransactionId leaves the session to the transaction it belongs to.
                if code != DownloadError::InvalidTransactionId {
                    self.session = None;
                }
                let mut e = tlv(0x80, &tid);
                e.extend(tlv(0x02, &[code as u8]));
                tlv(0xBF21, &tlv(0xA1, &e))
            }
        }
    }

    fn prepare(&mut self, value: &[u8]) -> Result<Vec<u8>, DownloadError> {
        use DownloadError as E;
        let pki = self.pki.clone().ok_or(E::Undefined)?;
        let session = self.session.as_mut().ok_or(E::NoSessionContext)?;
        let fields = ber::parse(value).map_err(|_| E::Undefined)?;
        let raw = raw_tlvs(value).ok_or(E::Undefined)?;
        // smdpSigned2, smdpSignature2, hashCc OPTIONAL, smdpCertificate.
        let tags: Vec<u32> = fields.iter().map(|t| t.tag).collect();
        if raw.len() != tags.len() {
            return Err(E::Undefined);
        }
        let hash_cc = match tags[..] {
            [0x30, 0x5F37, 0x30] => None,
            [0x30, 0x5F37, 0x04, 0x30] if fields[2].value.len() == 32 => Some(fields[2].value),
            _ => return Err(E::Undefined),
        };
        let cert = pki
            .check_server(raw[raw.len() - 1], ROLE_DP_PB)
            .map_err(|f| match f {
                CertFault::Curve => E::UnsupportedCurve,
                _ => E::InvalidCertificate,
            })?;
        // smdpSignature2 covers smdpSigned2 ‖ euiccSignature1 (the 5F37 TLV we gave).
        let mut covered = raw[0].to_vec();
        covered.extend_from_slice(&session.euicc_signature1);
        rsp::keys::verify(cert.public_key(), &covered, fields[1].value)
            .map_err(|_| E::InvalidSignature)?;
        let signed2 = fields[0].value;
        let find = |t: u32| ber::find(signed2, t).ok().flatten();
        if find(0x80) != Some(&session.transaction_id[..]) {
            return Err(E::InvalidTransactionId);
        }
        // ccRequiredFlag (BOOLEAN): the LPA must have sent the hashed code (§3.1.3.3).
        let cc_required = find(0x01).is_some_and(|v| v.first().is_some_and(|b| *b != 0));
        if cc_required && hash_cc.is_none() {
            return Err(E::Undefined);
        }
        // bppEuiccOtpk: a retry of this session keeps the one-time key the BPP is bound to.
        let reuse = find(0x5F49).is_some_and(|k| {
            session
                .prepared
                .as_ref()
                .is_some_and(|p| p.otk.public_point() == k)
        });
        let otk = match session.prepared.take() {
            Some(p) if reuse => p.otk,
            _ => OneTimeKey::generate(),
        };
        let mut signed = tlv(0x80, &session.transaction_id);
        signed.extend(tlv(0x5F49, &otk.public_point()));
        if let Some(h) = hash_cc {
            signed.extend(tlv(0x04, h));
        }
        let euicc_signed2 = tlv(0x30, &signed);
        let mut covered = euicc_signed2.clone();
        covered.extend_from_slice(raw[1]);
        let signature = pki.sign(&covered);
        let pb_oid = smdp_oid(&cert);
        session.prepared = Some(Prepared {
            otk,
            dppb: cert,
            pb_oid,
        });
        session.bpp = None;
        let mut ok = euicc_signed2;
        ok.extend(signature);
        Ok(tlv(0xBF21, &tlv(0xA0, &ok)))
    }

    /// CancelSession (SGP.22 §5.7.14): the session dropped, a
    /// signed confirmation for the SM-DP+.
    pub(super) fn cancel_session(&mut self, value: &[u8]) -> Vec<u8> {
        let find = |t: u32| ber::find(value, t).ok().flatten();
        let tid = find(0x80).unwrap_or_default();
        let reason = find(0x81).unwrap_or(&[0]);
        let (Some(pki), Some(session)) = (self.pki.clone(), self.session.as_ref()) else {
            // cancelSessionResponseError undefinedError: nothing to cancel without keys.
            return tlv(0xBF41, &tlv(0x81, &[127]));
        };
        if session.transaction_id != tid {
            return tlv(0xBF41, &tlv(0x81, &[5]));
        }
        let oid = session.auth_oid.clone().unwrap_or(ID_RSP.to_vec());
        self.session = None;
        self.challenge = None;
        let mut signed = tlv(0x80, tid);
        signed.extend(tlv(0x81, &oid));
        signed.extend(tlv(0x82, reason));
        let signed = tlv(0x30, &signed);
        let mut ok = signed.clone();
        ok.extend(pki.sign(&signed));
        tlv(0xBF41, &tlv(0xA0, &ok))
    }

    /// One LoadBoundProfilePackage segment (SGP.22 §2.5.5, §5.7.6): no data when it went
    /// well and more are due (9000), else the ProfileInstallationResult; with what the
    /// card must change.
    pub(super) fn load_segment(&mut self, data: &[u8], card: &CardView) -> (Vec<u8>, Vec<Effect>) {
        self.segments += 1;
        let Some((tag, len, head)) = header(data) else {
            return self.fail(
                BppCommand::LoadProfileElements,
                InstallError::Scp03tStructure,
                card,
            );
        };
        if tag == 0xBF36 {
            return self.initialise(&data[head..], card);
        }
        // The card routes other segments here only while a BPP is loaded (in_bpp).
        let Some(bpp) = self.session.as_mut().and_then(|s| s.bpp.as_mut()) else {
            return self.fail(
                BppCommand::InitialiseSecureChannel,
                InstallError::Scp03tStructure,
                card,
            );
        };
        let whole = head + len == data.len();
        let result = match (bpp.stage, tag) {
            (Stage::ConfigureIsdp, 0xA0) if whole => bpp.configure_isdp(&data[head..]),
            (Stage::MetadataHeader, 0xA1) if head == data.len() => {
                bpp.stage = Stage::Metadata;
                Ok(())
            }
            (Stage::Metadata, 0x88) if whole => bpp.metadata_segment(data, card),
            (Stage::AfterMetadata, 0xA2) if whole => bpp.replace_keys(&data[head..]),
            (Stage::AfterMetadata, 0xA3) if head == data.len() => {
                bpp.stage = Stage::Package;
                bpp.package_left = len;
                Ok(())
            }
            (Stage::Package, 0x86) if whole && data.len() <= bpp.package_left => {
                bpp.package_segment(data, card)
            }
            (stage, _) => Err((stage.command(), InstallError::Scp03tStructure)),
        };
        if let Err((command, reason)) = result {
            return self.fail(command, reason, card);
        }
        if bpp.stage == Stage::Package && bpp.package_left == 0 {
            return self.install(card);
        }
        (Vec::new(), Vec::new())
    }

    /// Segment 1: the BF36 header and InitialiseSecureChannelRequest (SGP.22 §5.5.1).
    fn initialise(&mut self, data: &[u8], card: &CardView) -> (Vec<u8>, Vec<Effect>) {
        let c = BppCommand::InitialiseSecureChannel;
        let isc = match ber::parse(data) {
            Ok(t) if t.len() == 1 && t[0].tag == 0xBF23 => t[0].value,
            _ => return self.fail(c, InstallError::Scp03tStructure, card),
        };
        let find = |t: u32| ber::find(isc, t).ok().flatten();
        let tid = find(0x80).unwrap_or_default();
        let Some(session) = self.session.as_mut() else {
            return self.fail(c, InstallError::InvalidTransactionId, card);
        };
        if session.transaction_id != tid {
            // Not this session's BPP: answered without touching the session.
            return (
                pir_error_unsigned(tid, c, InstallError::InvalidTransactionId),
                Vec::new(),
            );
        }
        let Some(prepared) = session.prepared.as_ref() else {
            return self.fail(c, InstallError::InvalidTransactionId, card);
        };
        if find(0x82) != Some(&[1][..]) {
            return self.fail(c, InstallError::UnsupportedRemoteOperationType, card);
        }
        let crt = find(0xA6).unwrap_or_default();
        let crt_field = |t: u32| ber::find(crt, t).ok().flatten();
        // GlobalPlatform key type AES ('88'), 16-byte keys: all SGP.22 §2.6.4 allows here.
        let host_id = match (crt_field(0x80), crt_field(0x81), crt_field(0x84)) {
            (Some([0x88]), Some([0x10]), Some(h)) if (1..=16).contains(&h.len()) => h,
            _ => return self.fail(c, InstallError::UnsupportedCrtValues, card),
        };
        let (Some(smdp_otpk), Some(sign)) = (find(0x5F49), find(0x5F37)) else {
            return self.fail(c, InstallError::IncorrectInputValues, card);
        };
        // smdpSign covers remoteOpId ‖ transactionId ‖ controlRefTemplate ‖ smdpOtpk ‖
        // euiccOtpk, each as its TLV (SGP.22 §5.5.1).
        let mut covered: Vec<u8> = raw_tlvs(isc)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| header(t).is_some_and(|(tag, _, _)| tag != 0x5F37))
            .flat_map(|t| t.to_vec())
            .collect();
        covered.extend(tlv(0x5F49, &prepared.otk.public_point()));
        if rsp::keys::verify(prepared.dppb.public_key(), &covered, sign).is_err() {
            return self.fail(c, InstallError::InvalidSignature, card);
        }
        let Ok(shared) = prepared.otk.ecka(smdp_otpk) else {
            return self.fail(c, InstallError::IncorrectInputValues, card);
        };
        let keys = SessionKeys::derive(&shared, 0x88, 16, host_id, &card.eid);
        session.bpp = Some(Bpp {
            stage: Stage::ConfigureIsdp,
            bsp: Bsp::new(&keys),
            metadata_bytes: Vec::new(),
            metadata: None,
            package: Vec::new(),
            package_left: 0,
        });
        (Vec::new(), Vec::new())
    }

    /// The last 86 went well: the profile is installed, disabled (SGP.22 §3.1.3.4).
    fn install(&mut self, card: &CardView) -> (Vec<u8>, Vec<Effect>) {
        let Some(session) = self.session.take() else {
            return (Vec::new(), Vec::new());
        };
        let Some(bpp) = session.bpp.as_ref() else {
            return (Vec::new(), Vec::new());
        };
        let Some(meta) = bpp.metadata.clone() else {
            return (Vec::new(), Vec::new());
        };
        let c = BppCommand::LoadProfileElements;
        let saip = match Saip::read(&bpp.package) {
            Ok(s) => s,
            Err(reason) => {
                return self.finish(
                    &session,
                    Some(&meta.iccid),
                    Err((c, reason)),
                    card,
                    Vec::new(),
                );
            }
        };
        if saip.iccid != meta.iccid {
            let mismatch = Err((c, InstallError::IccidMismatch));
            return self.finish(&session, Some(&meta.iccid), mismatch, card, Vec::new());
        }
        let mut files = std::collections::BTreeMap::new();
        if let Some(imsi) = saip.imsi {
            files.insert("3F00/7FFF/6F07".to_string(), hex::encode_upper(imsi));
        }
        let profile = ProfileImage {
            iccid: meta.iccid.clone(),
            enabled: false,
            name: Some(meta.name.clone()),
            provider: Some(meta.provider.clone()),
            nickname: None,
            class: meta.class.clone(),
            smdp: meta
                .notify
                .clone()
                .unwrap_or(session.server_address.clone()),
            files,
        };
        let size = u32::try_from(bpp.package.len()).unwrap_or(u32::MAX);
        let aid_suffix = u8::try_from(card.iccids.len() + 1).unwrap_or(0xFF);
        let effects = vec![Effect::Install(profile, size)];
        self.finish(&session, Some(&meta.iccid), Ok(aid_suffix), card, effects)
    }

    /// A BPP command failed: the session is dropped and the result says which and why.
    fn fail(
        &mut self,
        command: BppCommand,
        reason: InstallError,
        card: &CardView,
    ) -> (Vec<u8>, Vec<Effect>) {
        tracing::debug!(?command, %reason, "BPP refused");
        let Some(session) = self.session.take() else {
            return (pir_error_unsigned(&[], command, reason), Vec::new());
        };
        let iccid = session
            .bpp
            .as_ref()
            .and_then(|b| b.metadata.as_ref())
            .map(|m| m.iccid.clone());
        self.finish(
            &session,
            iccid.as_deref(),
            Err((command, reason)),
            card,
            Vec::new(),
        )
    }

    /// The signed ProfileInstallationResult (SGP.22 §5.7.6), kept as a notification.
    fn finish(
        &mut self,
        session: &Session,
        iccid: Option<&str>,
        outcome: Result<u8, (BppCommand, InstallError)>,
        card: &CardView,
        mut effects: Vec<Effect>,
    ) -> (Vec<u8>, Vec<Effect>) {
        self.session = None;
        let Some(pki) = self.pki.clone() else {
            return (Vec::new(), effects);
        };
        let address = &session.server_address;
        let mut data = tlv(0x80, &session.transaction_id);
        data.extend(notification_metadata(
            card.next_seq,
            NotificationEvent::Install,
            address,
            iccid,
        ));
        if let Some(oid) = session.prepared.as_ref().and_then(|p| p.pb_oid.as_ref()) {
            data.extend(tlv(0x06, oid));
        }
        let result = match outcome {
            Ok(n) => {
                let mut aid = ISDP_AID_PREFIX.to_vec();
                aid.push(n);
                let mut ok = tlv(0x4F, &aid);
                // simaResponse: one EUICCResponse, every PE ok (SAIP EUICCResponse,
                // peStatus { status ok(0) }).
                ok.extend(tlv(
                    0x04,
                    &tlv(0x30, &tlv(0xA0, &tlv(0x30, &tlv(0x80, &[0])))),
                ));
                tlv(0xA0, &ok)
            }
            Err((command, reason)) => {
                let mut e = tlv(0x80, &[command as u8]);
                e.extend(tlv(0x81, &[reason as u8]));
                tlv(0xA1, &e)
            }
        };
        data.extend(tlv(0xA2, &result));
        let data = tlv(0xBF27, &data);
        let mut pir = data.clone();
        pir.extend(pki.sign(&data));
        let pir = tlv(0xBF37, &pir);
        effects.push(Effect::Pir {
            seq: card.next_seq,
            iccid: iccid.map(str::to_string),
            address: address.clone(),
            pir: pir.clone(),
        });
        (pir, effects)
    }
}

/// The ISD-P AIDs the virtual eUICC gives installed profiles: the ISD-R's RID and PIX
/// start (SGP.02 §2.2.3 style) A0000005591010FFFFFFFF89000010, then the profile's
/// number.
const ISDP_AID_PREFIX: [u8; 15] = [
    0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x10,
];

/// The SM-DP+ OID of a DPauth/DPpb certificate: the registeredID of its
/// subjectAltName (SGP.22 §4.5.2.1.0.3; RFC 5280 §4.2.1.6, GeneralName [8]), as DER
/// content.
fn smdp_oid(cert: &Certificate) -> Option<Vec<u8>> {
    // Certificate { tbsCertificate { ..., extensions [3] { SEQUENCE OF Extension } } }.
    let tbs = ber::find_path(cert.der(), &[0x30, 0x30]).ok().flatten()?;
    let exts = ber::find_path(tbs, &[0xA3, 0x30]).ok().flatten()?;
    let san = ber::parse(exts).ok()?.into_iter().find_map(|ext| {
        let fields = ber::parse(ext.value).ok()?;
        // id-ce-subjectAltName 2.5.29.17; extnValue is the last field.
        (fields.first()?.value == [0x55, 0x1D, 0x11]).then(|| fields.last().map(|f| f.value))?
    })?;
    let names = ber::find(san, 0x30).ok().flatten()?;
    ber::find(names, 0x88).ok().flatten().map(<[u8]>::to_vec)
}

/// CancelSession's smdpOid is mandatory (SGP.22 §5.7.14): a DPauth certificate without
/// one is answered with the RSP arc of SGP.22's ASN.1 module (id-rsp 2.23.146.1).
const ID_RSP: [u8; 4] = [0x67, 0x81, 0x12, 0x01];

/// A PIR for a BPP no session can answer for: unsigned, not kept.
fn pir_error_unsigned(tid: &[u8], command: BppCommand, reason: InstallError) -> Vec<u8> {
    let mut e = tlv(0x80, &[command as u8]);
    e.extend(tlv(0x81, &[reason as u8]));
    let mut data = tlv(0x80, tid);
    data.extend(tlv(0xA2, &tlv(0xA1, &e)));
    tlv(0xBF37, &tlv(0xBF27, &data))
}

/// NotificationMetadata (SGP.22 §5.7.9).
pub(super) fn notification_metadata(
    seq: u32,
    event: NotificationEvent,
    address: &str,
    iccid: Option<&str>,
) -> Vec<u8> {
    let mut m = tlv(0x80, &int(seq));
    m.extend(tlv(0x81, &event.bit_string()));
    m.extend(tlv(0x0C, address.as_bytes()));
    if let Some(i) = iccid {
        m.extend(tlv(0x5A, &super::iccid_to_ef(i)));
    }
    tlv(0xBF2F, &m)
}

/// INTEGER content, minimal (X.690 §8.3).
pub(super) fn int(n: u32) -> Vec<u8> {
    let mut b: Vec<u8> = n
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    if b.first().is_none_or(|b| b & 0x80 != 0) {
        b.insert(0, 0);
    }
    b
}

impl Stage {
    fn command(self) -> BppCommand {
        match self {
            Stage::ConfigureIsdp => BppCommand::ConfigureIsdp,
            Stage::MetadataHeader | Stage::Metadata => BppCommand::StoreMetadata,
            Stage::AfterMetadata => BppCommand::ReplaceSessionKeys,
            Stage::Package => BppCommand::LoadProfileElements,
        }
    }
}

type Step = Result<(), (BppCommand, InstallError)>;

impl Bpp {
    /// Verify the MAC of one 86/87 TLV and decrypt it (SGP.22 §2.6.4.4, §2.6.4.5).
    fn open(
        &mut self,
        seg: &[u8],
        command: BppCommand,
    ) -> Result<Vec<u8>, (BppCommand, InstallError)> {
        self.bsp
            .verify_and_decrypt(seg)
            .map(|(_, plain)| plain)
            .map_err(|e| (command, bsp_reason(&e)))
    }

    /// firstSequenceOf87: ConfigureISDPRequest (SGP.22 §5.5.2).
    fn configure_isdp(&mut self, value: &[u8]) -> Step {
        let c = BppCommand::ConfigureIsdp;
        let segs = raw_tlvs(value).ok_or((c, InstallError::Scp03tStructure))?;
        let mut plain = Vec::new();
        for s in segs {
            if header(s).map(|h| h.0) != Some(0x87) {
                return Err((c, InstallError::Scp03tStructure));
            }
            plain.extend(self.open(s, c)?);
        }
        match ber::parse(&plain) {
            Ok(t) if t.len() == 1 && t[0].tag == 0xBF24 => {}
            _ => return Err((c, InstallError::IncorrectInputValues)),
        }
        self.stage = Stage::MetadataHeader;
        Ok(())
    }

    /// One 88: MAC only (SGP.22 §2.6.4.5); StoreMetadataRequest processed once whole.
    fn metadata_segment(&mut self, seg: &[u8], card: &CardView) -> Step {
        let c = BppCommand::StoreMetadata;
        let plain = self
            .bsp
            .verify_mac_only(seg)
            .map_err(|e| (c, bsp_reason(&e)))?
            .1;
        self.metadata_bytes.extend(plain);
        let Some((tag, len, head)) = header(&self.metadata_bytes) else {
            return Ok(());
        };
        if tag != 0xBF25 {
            return Err((c, InstallError::IncorrectInputValues));
        }
        if self.metadata_bytes.len() < head + len {
            return Ok(());
        }
        if self.metadata_bytes.len() > head + len {
            return Err((c, InstallError::IncorrectInputValues));
        }
        let value = &self.metadata_bytes[head..];
        let meta = store_metadata(value)?;
        if card
            .iccids
            .iter()
            .any(|i| i.eq_ignore_ascii_case(&meta.iccid))
        {
            return Err((c, InstallError::IccidExists));
        }
        self.metadata = Some(meta);
        self.stage = Stage::AfterMetadata;
        Ok(())
    }

    /// secondSequenceOf87: ReplaceSessionKeysRequest (SGP.22 §5.5.4): the 86 segments
    /// come under the profile protection keys, their block counter from 1 again.
    fn replace_keys(&mut self, value: &[u8]) -> Step {
        let c = BppCommand::ReplaceSessionKeys;
        let segs = raw_tlvs(value).ok_or((c, InstallError::Scp03tStructure))?;
        let mut plain = Vec::new();
        for s in segs {
            if header(s).map(|h| h.0) != Some(0x87) {
                return Err((c, InstallError::Scp03tStructure));
            }
            plain.extend(self.open(s, c)?);
        }
        let rsk = match ber::parse(&plain) {
            Ok(t) if t.len() == 1 && t[0].tag == 0xBF26 => t[0].value,
            _ => return Err((c, InstallError::IncorrectInputValues)),
        };
        let find = |t: u32| ber::find(rsk, t).ok().flatten().filter(|v| v.len() == 16);
        let (Some(mcv), Some(enc), Some(mac)) = (find(0x80), find(0x81), find(0x82)) else {
            return Err((c, InstallError::IncorrectInputValues));
        };
        let mut keys = SessionKeys {
            s_enc: [0; 16],
            s_mac: [0; 16],
            initial_mcv: [0; 16],
        };
        keys.s_enc.copy_from_slice(enc);
        keys.s_mac.copy_from_slice(mac);
        keys.initial_mcv.copy_from_slice(mcv);
        self.bsp = Bsp::new(&keys);
        self.stage = Stage::AfterMetadata;
        Ok(())
    }

    /// One 86: a piece of the profile package (SGP.22 §5.5.5), memory permitting.
    fn package_segment(&mut self, seg: &[u8], card: &CardView) -> Step {
        let c = BppCommand::LoadProfileElements;
        if self.metadata.is_none() {
            return Err((
                BppCommand::StoreMetadata,
                InstallError::IncorrectInputValues,
            ));
        }
        self.package_left -= seg.len();
        let plain = self.open(seg, c)?;
        self.package.extend(plain);
        if self.package.len() > card.free_nvm as usize {
            return Err((c, InstallError::OutOfMemory));
        }
        Ok(())
    }
}

/// A MAC that does not verify is a security error; anything else about the segment's
/// form (length, padding) a structure error (SGP.22 §5.7.6).
fn bsp_reason(e: &rsp::RspError) -> InstallError {
    match e {
        rsp::RspError::BadMac => InstallError::Scp03tSecurity,
        _ => InstallError::Scp03tStructure,
    }
}

/// StoreMetadataRequest's content (SGP.22 §5.5.3).
fn store_metadata(value: &[u8]) -> Result<Metadata, (BppCommand, InstallError)> {
    let c = BppCommand::StoreMetadata;
    let bad = (c, InstallError::IncorrectInputValues);
    let find = |t: u32| ber::find(value, t).map_err(|_| bad);
    let iccid = find(0x5A)?.filter(|v| v.len() == 10).ok_or(bad)?;
    let text =
        |v: Option<&[u8]>| String::from_utf8(v.unwrap_or_default().to_vec()).map_err(|_| bad);
    let provider = text(find(0x91)?)?;
    let name = text(find(0x92)?)?;
    let class = match find(0x95)? {
        None | Some([2]) => "operational",
        Some([1]) => "provisioning",
        Some([0]) => "test",
        Some(_) => return Err((c, InstallError::UnsupportedProfileClass)),
    };
    // notificationConfigurationInfo [22]: SEQUENCE OF { profileManagementOperation,
    // notificationAddress } (AUTOMATIC TAGS: 80, 81). The virtual eUICC keeps one
    // address per profile: the first named.
    let notify = match find(0xB6)? {
        Some(list) => ber::parse(list)
            .map_err(|_| bad)?
            .iter()
            .filter_map(|entry| ber::find(entry.value, 0x81).ok().flatten())
            .map(|a| String::from_utf8(a.to_vec()).map_err(|_| bad))
            .next()
            .transpose()?,
        None => None,
    };
    Ok(Metadata {
        iccid: iccid_digits(iccid),
        provider,
        name,
        class: class.into(),
        notify,
    })
}

/// What the eUICC reads from the SAIP profile package (TCA eUICC Profile Package:
/// Interoperable Format, the PE_Definitions ASN.1 module).
struct Saip {
    /// ProfileHeader iccid, as digits (see `header_iccid_digits`).
    iccid: String,
    /// The content of EF.IMSI from the PE-USIM, when the package sets it.
    imsi: Option<Vec<u8>>,
}

/// The ProfileHeader's iccid: the ICCID's digits in BCD in their written order (first
/// digit in the high nibble), 'F'-padded to 10 bytes — unlike SGP.22's Iccid (tag 5A)
/// and EF.ICCID, whose nibbles are swapped. GSMA's TS.48 test profile packages code it
/// so (ICCID 8949449999999990049: header 89 49 44 99 99 99 99 90 04 9F, EF.ICCID
/// 98 94 44 99 99 99 99 09 40 F9); the eUICC compares the two as digits.
fn header_iccid_digits(bcd: &[u8]) -> String {
    bcd.iter()
        .flat_map(|b| [b >> 4, b & 0x0F])
        .take_while(|n| *n != 0x0F)
        .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('F'))
        .collect()
}

impl Saip {
    fn read(package: &[u8]) -> Result<Saip, InstallError> {
        let pes = ber::parse(package).map_err(|_| InstallError::PeProcessing)?;
        // The first PE is the ProfileHeader, [0]: iccid is its [3] (automatic tags).
        let header = pes
            .first()
            .filter(|pe| pe.tag == 0xA0)
            .ok_or(InstallError::PeProcessing)?;
        let iccid = ber::find(header.value, 0x83)
            .ok()
            .flatten()
            .filter(|v| v.len() == 10)
            .ok_or(InstallError::PeProcessing)?;
        // PE-USIM is the ProfileElement [19] (B3: context tag 19, constructed); its
        // ef-imsi is [3], a File: a SEQUENCE OF { fileDescriptor [1], fillFileOffset [2],
        // fillFileContent [3] }.
        let imsi = pes
            .iter()
            .find(|pe| pe.tag == 0xB3)
            .and_then(|usim| ber::find(usim.value, 0xA3).ok().flatten())
            .and_then(file_content);
        Ok(Saip {
            iccid: header_iccid_digits(iccid),
            imsi,
        })
    }
}

/// A SAIP File's content: fillFileContent pieces at their fillFileOffset gaps (the gaps
/// left as the erased state, 'FF').
fn file_content(file: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for t in ber::parse(file).ok()? {
        match t.tag {
            0x82 => {
                let gap = t.value.iter().fold(0usize, |a, b| a << 8 | usize::from(*b));
                out.extend(std::iter::repeat_n(0xFF, gap));
            }
            0x83 => out.extend_from_slice(t.value),
            _ => {}
        }
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
#[path = "download_tests.rs"]
mod tests;
