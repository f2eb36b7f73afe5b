//! ES9+ request handling of the test SM-DP+ (SGP.22 §5.6, JSON binding §6.5), pure: a
//! function name, the request's X-Admin-Protocol and body in; the answer, and what to
//! journal, out. No I/O, so every check is unit tested without HTTP.
//!
//! Every check and its status code follows SGP.22 §5.6.1–§5.6.5 (codes as its
//! tables, the same as lpac's table of them); where the spec leaves the code open
//! (malformed requests), osmo-smdpp's choice is used and said so.

use super::profiles::{Profile, ProfilesFile};
use crate::card::iccid::Iccid;
use crate::emu::rsp::bsp::{Bsp, SessionKeys, KEY_LENGTH_AES128, KEY_TYPE_AES};
use crate::emu::rsp::cert::oid_text;
use crate::emu::rsp::der::{self, encode, Der};
use crate::emu::rsp::{keys, sha256, Certificate, OneTimeKey, RspError, SigningKey};
use base64ct::{Base64, Encoding};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The SM-DP+'s side of the test PKI (tests/rig/rsp-pki.sh's file names).
#[derive(Debug, Clone)]
pub struct Pki {
    ci: Certificate,
    dpauth: Certificate,
    dpauth_key: SigningKey,
    dppb: Certificate,
    dppb_key: SigningKey,
}

impl Pki {
    /// ci.pem, dpauth.pem/.key, dppb.pem/.key from `dir`; each certificate must be
    /// issued by the CI.
    pub fn load(dir: &Path) -> Result<Pki, RspError> {
        let cert = |name: &str| Certificate::load_pem_one(&dir.join(name));
        let key = |name: &str| SigningKey::load_pem(&dir.join(name));
        let pki = Pki {
            ci: cert("ci.pem")?,
            dpauth: cert("dpauth.pem")?,
            dpauth_key: key("dpauth.key")?,
            dppb: cert("dppb.pem")?,
            dppb_key: key("dppb.key")?,
        };
        for (name, c, k) in [
            ("dpauth.pem", &pki.dpauth, &pki.dpauth_key),
            ("dppb.pem", &pki.dppb, &pki.dppb_key),
        ] {
            let file = |e| RspError::File {
                path: dir.join(name),
                source: Box::new(e),
            };
            c.verify_issued_by(&pki.ci).map_err(file)?;
            if c.public_key() != &k.public_key() {
                return Err(file(RspError::BadKey));
            }
        }
        if pki.ci.ski().is_none() {
            return Err(RspError::File {
                path: dir.join("ci.pem"),
                source: Box::new(RspError::Malformed(
                    "CI certificate without SubjectKeyIdentifier",
                )),
            });
        }
        Ok(pki)
    }

    /// The CI's PKID (its SubjectKeyIdentifier).
    fn ci_pkid(&self) -> &[u8] {
        self.ci.ski().unwrap_or_default()
    }
}

/// Faults of the server, set on its command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// serverSignature1 corrupted: the eUICC's AuthenticateServer must refuse it.
    pub bad_signature: bool,
    /// The MAC of the BPP's last 86 segment corrupted: the eUICC must stop there.
    pub bad_mac: bool,
    /// getBoundProfilePackage is never answered: the connection is closed.
    pub gone_after_bpp_request: bool,
    /// Every profile needs a confirmation code; with none of its own, "0000" is it.
    pub require_cc: bool,
}

/// The confirmation code of `--fault require-cc` for a profile without one.
const FAULT_CC: &str = "0000";

/// The ES9+ functions of an SM-DP+ (SGP.22 §6.5.2), by their path segment.
pub const FUNCTIONS: [&str; 5] = [
    "initiateAuthentication",
    "authenticateClient",
    "getBoundProfilePackage",
    "handleNotification",
    "cancelSession",
];

/// An ES9+ function execution status other than success (SGP.22 §6.5.1.4 header,
/// statusCodeData).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub subject: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn status(subject: &'static str, reason: &'static str, message: impl Into<String>) -> Status {
    Status {
        subject,
        reason,
        message: message.into(),
    }
}

// Malformed requests: SGP.22 leaves the exact code to the server; these are
// osmo-smdpp's (subject 1.2.x for the HTTP header, 1.3.1 for the request's elements;
// reason 2.1 invalid, 2.2 missing).
fn missing(field: &str) -> Status {
    status("1.3.1", "2.2", format!("{field} missing"))
}
fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    status("1.3.1", "2.1", format!("{field}: {why}"))
}
fn unknown_transaction() -> Status {
    status(
        "8.10.1",
        "3.9",
        "The RSP session identified by the TransactionID is unknown",
    )
}
fn euicc_signature_invalid(what: &str) -> Status {
    status("8.1", "6.1", format!("eUICC signature is invalid ({what})"))
}

/// How the HTTP side answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(Value),
    /// 204, no body (handleNotification, SGP.22 §6.5.2.7).
    NoContent,
    /// Close the connection without answering (`--fault gone-after-bpp-request`).
    Drop,
    /// 404: not an ES9+ function.
    NotFound,
}

/// A handled request: the reply and the journal lines it adds.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub journal: Vec<Value>,
}

/// Where a download session stands (SGP.22 §3.1.3).
#[derive(Debug)]
enum Phase {
    /// After initiateAuthentication.
    Initiated,
    /// After authenticateClient: the eUICC is known, a profile is chosen.
    Authenticated { euicc: Euicc, profile: Profile },
    /// After getBoundProfilePackage: waiting for the install notification.
    Bound { euicc: Euicc },
    /// A later step failed: only cancelSession (or a notification) ends it.
    Failed { euicc: Option<Euicc> },
}

#[derive(Debug, Clone)]
struct Euicc {
    cert: Certificate,
    eid: String,
    /// smdpSignature2 as its 5F37 TLV, covered by euiccSignature2.
    smdp_signature2: Vec<u8>,
    cc_required: bool,
    /// The StoreMetadataRequest shown to the LPA (profileMetadata), bound as it was.
    metadata: Vec<u8>,
}

#[derive(Debug)]
struct Transaction {
    /// The SM-DP+ address the LPA named, signed in serverSigned1.
    address: String,
    server_challenge: [u8; 16],
    phase: Phase,
}

/// The SM-DP+: its identity, its profiles and its open sessions.
#[derive(Debug)]
pub struct Smdp {
    addresses: Vec<String>,
    pki: Pki,
    profiles: ProfilesFile,
    faults: Faults,
    sessions: HashMap<String, Transaction>,
}

/// One ES9+ request's JSON members.
struct Request(Map<String, Value>);

impl Request {
    fn text(&self, field: &str) -> Result<&str, Status> {
        match self.0.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(invalid(field, "not a string")),
            None => Err(missing(field)),
        }
    }

    /// A base64 member (SGP.22 §6.5.1.2: binary data as base64, RFC 4648).
    fn bytes(&self, field: &str) -> Result<Vec<u8>, Status> {
        Base64::decode_vec(self.text(field)?).map_err(|_| invalid(field, "not base64"))
    }
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(Base64::encode_string(bytes))
}

fn random16() -> [u8; 16] {
    use rand_core::RngCore;
    let mut out = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut out);
    out
}

/// The children of a constructed object, for the RSP structures.
fn children<'a>(d: &Der<'a>, field: &'static str) -> Result<Vec<Der<'a>>, Status> {
    der::all(d.value).map_err(|e| invalid(field, e))
}

fn child<'a>(list: &[Der<'a>], tag: u32, field: &'static str) -> Result<Der<'a>, Status> {
    list.iter()
        .find(|d| d.tag == tag)
        .copied()
        .ok_or_else(|| invalid(field, format!("no element tagged {tag:X}")))
}

fn parse_top<'a>(bytes: &'a [u8], tag: u32, field: &'static str) -> Result<Der<'a>, Status> {
    let d = der::one(bytes).map_err(|e| invalid(field, e))?;
    if d.tag != tag {
        return Err(invalid(field, format!("tag {:X}, expected {tag:X}", d.tag)));
    }
    Ok(d)
}

fn small_int(d: &Der<'_>) -> i64 {
    d.value.iter().fold(0i64, |n, b| n << 8 | i64::from(*b))
}

fn iccid_text(raw: &[u8]) -> String {
    Iccid::from_ef(raw).map_or_else(|_| hex::encode_upper(raw), |i| i.as_str().to_string())
}

impl Smdp {
    /// `addresses` are the SM-DP+ addresses an LPA may name (SGP.22 §5.6.1: compared
    /// case-insensitively), e.g. `127.0.0.1:PORT` and `localhost:PORT`.
    pub fn new(addresses: Vec<String>, pki: Pki, profiles: ProfilesFile, faults: Faults) -> Smdp {
        Smdp {
            addresses,
            pki,
            profiles,
            faults,
            sessions: HashMap::new(),
        }
    }

    /// Handle one ES9+ request: `function` is the last path segment under
    /// /gsma/rsp2/es9plus/, `admin_protocol` the X-Admin-Protocol header.
    pub fn handle(&mut self, function: &str, admin_protocol: Option<&str>, body: &[u8]) -> Outcome {
        if !FUNCTIONS.contains(&function) {
            return Outcome {
                reply: Reply::NotFound,
                journal: vec![
                    json!({"event": "call", "function": function, "status": "not found"}),
                ],
            };
        }
        let mut journal = Vec::new();
        let result = self.dispatch(function, admin_protocol, body, &mut journal);
        let (reply, line) = match result {
            Ok((reply, tx)) => {
                let mut line =
                    json!({"event": "call", "function": function, "status": "Executed-Success"});
                if let Some(tx) = tx {
                    line["transactionId"] = Value::String(tx);
                }
                if reply == Reply::Drop {
                    line["status"] = Value::String("dropped".into());
                }
                (reply, line)
            }
            Err(s) => {
                let line = json!({
                    "event": "call", "function": function, "status": "Failed",
                    "subjectCode": s.subject, "reasonCode": s.reason, "message": s.message,
                });
                (Reply::Json(failed(&s)), line)
            }
        };
        journal.insert(0, line);
        Outcome { reply, journal }
    }

    fn dispatch(
        &mut self,
        function: &str,
        admin_protocol: Option<&str>,
        body: &[u8],
        journal: &mut Vec<Value>,
    ) -> Result<(Reply, Option<String>), Status> {
        // SGP.22 §6.5.1: X-Admin-Protocol gsma/rsp/v<x.y.z>; this server speaks v2.
        match admin_protocol {
            Some(p) if p.starts_with("gsma/rsp/v2.") => {}
            Some(p) => {
                return Err(status(
                    "1.2.2",
                    "2.1",
                    format!("X-Admin-Protocol {p:?} not supported (v2.x.y)"),
                ))
            }
            None => return Err(status("1.2.2", "2.2", "X-Admin-Protocol header missing")),
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| invalid("body", format!("not JSON: {e}")))?;
        let Value::Object(members) = value else {
            return Err(invalid("body", "not a JSON object"));
        };
        let req = Request(members);
        match function {
            "initiateAuthentication" => self.initiate_authentication(&req),
            "authenticateClient" => self.authenticate_client(&req),
            "getBoundProfilePackage" => self.get_bound_profile_package(&req, journal),
            "handleNotification" => self
                .handle_notification(&req, journal)
                .map(|()| (Reply::NoContent, None)),
            _ => self.cancel_session(&req, journal),
        }
    }

    /// SGP.22 §5.6.1 ES9+.InitiateAuthentication.
    fn initiate_authentication(
        &mut self,
        req: &Request,
    ) -> Result<(Reply, Option<String>), Status> {
        let address = req.text("smdpAddress")?.to_string();
        if !self
            .addresses
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&address))
        {
            return Err(status(
                "8.8.1",
                "3.8",
                format!("Invalid SM-DP+ Address {address:?}"),
            ));
        }
        let challenge = req.bytes("euiccChallenge")?;
        if challenge.len() != 16 {
            return Err(invalid("euiccChallenge", "not 16 bytes"));
        }
        let info1 = req.bytes("euiccInfo1")?;
        let info1 = parse_top(&info1, 0xBF20, "euiccInfo1")?;
        let parts = children(&info1, "euiccInfo1")?;
        let pkids = |tag, field| -> Result<Vec<Vec<u8>>, Status> {
            let list = child(&parts, tag, field)?;
            Ok(children(&list, field)?
                .iter()
                .map(|d| d.value.to_vec())
                .collect())
        };
        // svn [2] VersionType: this server speaks SGP.22 v2.x (SGP.22 §5.6.1: "not
        // supported" otherwise).
        match child(&parts, 0x82, "svn")?.value {
            [2, _, _] => {}
            v => {
                return Err(status(
                    "8.8.3",
                    "3.1",
                    format!("The Specification Version Number {v:02X?} indicated by the eUICC is not supported by the SM-DP+"),
                ))
            }
        }
        let ours = self.pki.ci_pkid().to_vec();
        // The eUICC must be able to verify our DPauth chain (ForVerification) and to
        // sign with a chain to the same CI (ForSigning); one CI here.
        if !pkids(0xA9, "euiccCiPKIdListForVerification")?.contains(&ours) {
            return Err(status(
                "8.8.4",
                "3.7",
                "The SM-DP+ has no CERT.DPauth.ECDSA signed by one of the CI Public Key supported by the eUICC",
            ));
        }
        if !pkids(0xAA, "euiccCiPKIdListForSigning")?.contains(&ours) {
            return Err(status(
                "8.8.2",
                "3.1",
                "None of the proposed Public Key Identifiers is supported by the SM-DP+",
            ));
        }
        let tx_bytes = random16();
        let tx = hex::encode_upper(tx_bytes);
        let server_challenge = random16();
        // ServerSigned1 ::= SEQUENCE { transactionId [0], euiccChallenge [1],
        // serverAddress [3], serverChallenge [4] }.
        let signed1 = encode(
            0x30,
            &[
                encode(0x80, &tx_bytes),
                encode(0x81, &challenge),
                encode(0x83, address.as_bytes()),
                encode(0x84, &server_challenge),
            ]
            .concat(),
        );
        let mut sig = self.pki.dpauth_key.sign(&signed1);
        if self.faults.bad_signature {
            sig[20] ^= 0x5A;
        }
        self.sessions.insert(
            tx.clone(),
            Transaction {
                address,
                server_challenge,
                phase: Phase::Initiated,
            },
        );
        let body = success(json!({
            "transactionId": tx,
            "serverSigned1": b64(&signed1),
            "serverSignature1": b64(&encode(0x5F37, &sig)),
            // SubjectKeyIdentifier as an OCTET STRING TLV.
            "euiccCiPKIdToBeUsed": b64(&encode(0x04, &ours)),
            "serverCertificate": b64(self.pki.dpauth.der()),
        }));
        Ok((Reply::Json(body), Some(tx)))
    }

    fn session<'s>(
        sessions: &'s mut HashMap<String, Transaction>,
        req: &Request,
    ) -> Result<(String, &'s mut Transaction), Status> {
        let tx = req.text("transactionId")?.to_string();
        match sessions.get_mut(&tx) {
            Some(t) => Ok((tx, t)),
            None => Err(unknown_transaction()),
        }
    }

    /// SGP.22 §5.6.3 ES9+.AuthenticateClient.
    fn authenticate_client(&mut self, req: &Request) -> Result<(Reply, Option<String>), Status> {
        let response = req.bytes("authenticateServerResponse")?;
        let ci = self.pki.ci.clone();
        let cc_forced = self.faults.require_cc;
        let (tx, session) = Self::session(&mut self.sessions, req)?;
        if !matches!(session.phase, Phase::Initiated) {
            return Err(unknown_transaction());
        }
        // Whatever goes wrong from here leaves the session to be cancelled.
        let checked = check_authenticate_server_response(&response, &tx, session, &ci);
        let (euicc_cert, eid, signature1, matching_id) = match checked {
            Ok(v) => v,
            Err(s) => {
                session.phase = Phase::Failed { euicc: None };
                return Err(s);
            }
        };
        let Some(profile) = matching_id
            .as_deref()
            .and_then(|m| self.profiles.by_matching_id(m))
            .cloned()
        else {
            session_fail(&mut self.sessions, &tx);
            return Err(status(
                "8.2.6",
                "3.8",
                format!(
                    "MatchingID (AC_Token or EventID) {:?} is refused",
                    matching_id.unwrap_or_default()
                ),
            ));
        };
        let cc_required = profile.confirmation_code.is_some() || cc_forced;
        let tx_bytes = hex::decode(&tx).unwrap_or_default();
        // SmdpSigned2 ::= SEQUENCE { transactionId [0], ccRequiredFlag BOOLEAN,
        // bppEuiccOtpk [APPLICATION 73] OPTIONAL } (no BPP is reused here).
        let signed2 = encode(
            0x30,
            &[
                encode(0x80, &tx_bytes),
                encode(0x01, &[if cc_required { 0xFF } else { 0x00 }]),
            ]
            .concat(),
        );
        // SGP.22 §5.6.3: smdpSignature2 over smdpSigned2 ‖ euiccSignature1 (its TLV).
        let signature2 = encode(
            0x5F37,
            &self
                .pki
                .dppb_key
                .sign(&[signed2.as_slice(), &signature1].concat()),
        );
        // Enable/disable/delete notifications come back here, to the address the LPA used.
        let address = self
            .sessions
            .get(&tx)
            .map(|s| s.address.clone())
            .unwrap_or_default();
        let metadata = profile.metadata(Some(&address));
        let body = success(json!({
            "transactionId": tx,
            "profileMetadata": b64(&metadata),
            "smdpSigned2": b64(&signed2),
            "smdpSignature2": b64(&signature2),
            "smdpCertificate": b64(self.pki.dppb.der()),
        }));
        if let Some(s) = self.sessions.get_mut(&tx) {
            s.phase = Phase::Authenticated {
                euicc: Euicc {
                    cert: euicc_cert,
                    eid,
                    smdp_signature2: signature2,
                    cc_required,
                    metadata,
                },
                profile,
            };
        }
        Ok((Reply::Json(body), Some(tx)))
    }

    /// SGP.22 §5.6.2 ES9+.GetBoundProfilePackage.
    fn get_bound_profile_package(
        &mut self,
        req: &Request,
        journal: &mut Vec<Value>,
    ) -> Result<(Reply, Option<String>), Status> {
        let response = req.bytes("prepareDownloadResponse")?;
        let faults = self.faults;
        let (tx, session) = Self::session(&mut self.sessions, req)?;
        let phase = std::mem::replace(&mut session.phase, Phase::Failed { euicc: None });
        let Phase::Authenticated { euicc, profile } = phase else {
            session.phase = phase;
            return Err(unknown_transaction());
        };
        session.phase = Phase::Failed {
            euicc: Some(euicc.clone()),
        };
        let otpk = check_prepare_download_response(&response, &tx, &euicc, &profile, faults)?;
        if faults.gone_after_bpp_request {
            return Ok((Reply::Drop, Some(tx)));
        }
        let (bpp, segments) = bind(&tx, &euicc, &profile, &otpk, &self.pki.dppb_key, faults)
            .map_err(|e| status("8.1", "6.1", format!("otPK.EUICC.ECKA unusable: {e}")))?;
        journal.push(json!({
            "event": "bpp", "transactionId": tx, "iccid": profile.iccid,
            "segments86": segments, "bytes": bpp.len(), "badMac": faults.bad_mac,
        }));
        session.phase = Phase::Bound { euicc };
        let body = success(json!({ "transactionId": tx, "boundProfilePackage": b64(&bpp) }));
        Ok((Reply::Json(body), Some(tx)))
    }

    /// SGP.22 §5.6.4 ES9+.HandleNotification: always 204 (the LPA cannot act on our
    /// verdict); the journal says what came and whether its signature verified.
    fn handle_notification(
        &mut self,
        req: &Request,
        journal: &mut Vec<Value>,
    ) -> Result<(), Status> {
        let raw = req.bytes("pendingNotification")?;
        let top = der::one(&raw).map_err(|e| invalid("pendingNotification", e))?;
        let parts = children(&top, "pendingNotification")?;
        match top.tag {
            // ProfileInstallationResult ::= [55] { profileInstallationResultData [39],
            // euiccSignPIR [APPLICATION 55] }.
            0xBF37 => {
                let data = child(&parts, 0xBF27, "profileInstallationResultData")?;
                let sig = child(&parts, 0x5F37, "euiccSignPIR")?;
                let fields = children(&data, "profileInstallationResultData")?;
                let tx = hex::encode_upper(child(&fields, 0x80, "transactionId")?.value);
                let meta = child(&fields, 0xBF2F, "notificationMetadata")?;
                let (seq, iccid) = metadata_seq_iccid(&meta)?;
                let result = child(&fields, 0xA2, "finalResult")?;
                let result = children(&result, "finalResult")?;
                let outcome = match result.first() {
                    Some(d) if d.tag == 0xA0 => json!("success"),
                    Some(d) if d.tag == 0xA1 => {
                        let e = children(d, "errorResult")?;
                        json!({
                            "bppCommandId": e.iter().find(|x| x.tag == 0x80).map(small_int),
                            "errorReason": e.iter().find(|x| x.tag == 0x81).map(small_int),
                        })
                    }
                    _ => {
                        return Err(invalid(
                            "finalResult",
                            "neither successResult nor errorResult",
                        ))
                    }
                };
                let euicc = self.sessions.get(&tx).and_then(|t| match &t.phase {
                    Phase::Bound { euicc, .. } => Some(euicc.cert.clone()),
                    Phase::Authenticated { euicc, .. } => Some(euicc.cert.clone()),
                    Phase::Failed { euicc } => euicc.as_ref().map(|e| e.cert.clone()),
                    Phase::Initiated => None,
                });
                let verified =
                    euicc.map(|c| keys::verify(c.public_key(), data.raw, sig.value).is_ok());
                if verified == Some(true) {
                    // The download is over, whatever its result (SGP.22 §3.1.3.3).
                    self.sessions.remove(&tx);
                }
                journal.push(json!({
                    "event": "notification", "kind": "install", "seq": seq, "iccid": iccid,
                    "transactionId": tx, "result": outcome, "verified": verified,
                }));
            }
            // OtherSignedNotification ::= SEQUENCE { tbsOtherNotification,
            // euiccNotificationSignature [APPLICATION 55], euiccCertificate, eumCertificate }.
            0x30 => {
                let tbs = child(&parts, 0xBF2F, "tbsOtherNotification")?;
                let sig = child(&parts, 0x5F37, "euiccNotificationSignature")?;
                let certs: Vec<&Der<'_>> = parts.iter().filter(|d| d.tag == 0x30).collect();
                let (seq, iccid) = metadata_seq_iccid(&tbs)?;
                let verified = match certs.as_slice() {
                    [euicc, eum] => {
                        let euicc = Certificate::from_der(euicc.raw)
                            .map_err(|e| invalid("euiccCertificate", e))?;
                        let eum = Certificate::from_der(eum.raw)
                            .map_err(|e| invalid("eumCertificate", e))?;
                        eum.verify_issued_by(&self.pki.ci).is_ok()
                            && euicc.verify_issued_by(&eum).is_ok()
                            && keys::verify(euicc.public_key(), tbs.raw, sig.value).is_ok()
                    }
                    _ => return Err(invalid("otherSignedNotification", "certificates missing")),
                };
                let kind = pmo_kind(&children(&tbs, "tbsOtherNotification")?);
                journal.push(json!({
                    "event": "notification", "kind": kind, "seq": seq, "iccid": iccid,
                    "verified": verified,
                }));
            }
            t => return Err(invalid("pendingNotification", format!("tag {t:X}"))),
        }
        Ok(())
    }

    /// SGP.22 §5.6.5 ES9+.CancelSession.
    fn cancel_session(
        &mut self,
        req: &Request,
        journal: &mut Vec<Value>,
    ) -> Result<(Reply, Option<String>), Status> {
        let response = req.bytes("cancelSessionResponse")?;
        let smdp_oid = self.pki.dpauth.registered_id().map(<[u8]>::to_vec);
        let (tx, session) = Self::session(&mut self.sessions, req)?;
        let top = parse_top(&response, 0xBF41, "cancelSessionResponse")?;
        let parts = children(&top, "cancelSessionResponse")?;
        let mut reason = None;
        match parts.first() {
            // cancelSessionResponseOk [0] { euiccCancelSessionSigned, euiccCancelSessionSignature }.
            Some(ok) if ok.tag == 0xA0 => {
                let items = children(ok, "cancelSessionResponseOk")?;
                let signed = child(&items, 0x30, "euiccCancelSessionSigned")?;
                let sig = child(&items, 0x5F37, "euiccCancelSessionSignature")?;
                let cert = match &session.phase {
                    Phase::Authenticated { euicc, .. } | Phase::Bound { euicc, .. } => {
                        Some(&euicc.cert)
                    }
                    Phase::Failed { euicc } => euicc.as_ref().map(|e| &e.cert),
                    // Before authenticateClient the eUICC's key is not known yet.
                    Phase::Initiated => None,
                };
                if let Some(cert) = cert {
                    keys::verify(cert.public_key(), signed.raw, sig.value)
                        .map_err(|_| euicc_signature_invalid("euiccCancelSessionSignature"))?;
                }
                // EuiccCancelSessionSigned ::= SEQUENCE { transactionId [0], smdpOid [1],
                // reason [2] } (AUTOMATIC TAGS).
                let fields = children(&signed, "euiccCancelSessionSigned")?;
                if hex::encode_upper(child(&fields, 0x80, "transactionId")?.value) != tx {
                    return Err(unknown_transaction());
                }
                let oid = child(&fields, 0x81, "smdpOid")?;
                if smdp_oid.as_deref().is_some_and(|o| o != oid.value) {
                    return Err(status(
                        "8.8",
                        "3.10",
                        format!("The provided SM-DP+ OID {} is invalid", oid_text(oid.value)),
                    ));
                }
                reason = fields.iter().find(|d| d.tag == 0x82).map(small_int);
            }
            // cancelSessionResponseError [1] INTEGER: the eUICC had no such session; the
            // server's still ends.
            Some(err) if err.tag == 0x81 => {}
            _ => return Err(invalid("cancelSessionResponse", "neither Ok nor Error")),
        }
        self.sessions.remove(&tx);
        journal.push(json!({"event": "cancelled", "transactionId": tx, "reason": reason}));
        Ok((Reply::Json(success(json!({}))), Some(tx)))
    }
}

fn session_fail(sessions: &mut HashMap<String, Transaction>, tx: &str) {
    if let Some(s) = sessions.get_mut(tx) {
        s.phase = Phase::Failed { euicc: None };
    }
}

/// NotificationMetadata ::= [47] { seqNumber [0], profileManagementOperation [1],
/// notificationAddress UTF8String, iccid Iccid OPTIONAL }.
fn metadata_seq_iccid(meta: &Der<'_>) -> Result<(i64, Option<String>), Status> {
    let fields = children(meta, "notificationMetadata")?;
    let seq = small_int(&child(&fields, 0x80, "seqNumber")?);
    let iccid = fields
        .iter()
        .find(|d| d.tag == 0x5A)
        .map(|d| iccid_text(d.value));
    Ok((seq, iccid))
}

/// NotificationEvent ::= BIT STRING {install(0), enable(1), disable(2), delete(3)}.
fn pmo_kind(fields: &[Der<'_>]) -> &'static str {
    let bits = fields
        .iter()
        .find(|d| d.tag == 0x81)
        .and_then(|d| d.value.get(1))
        .copied()
        .unwrap_or(0);
    match bits {
        b if b & 0x80 != 0 => "install",
        b if b & 0x40 != 0 => "enable",
        b if b & 0x20 != 0 => "disable",
        b if b & 0x10 != 0 => "delete",
        _ => "unknown",
    }
}

type Authenticated = (Certificate, String, Vec<u8>, Option<String>);

/// The eUICC's answer as SGP.22 shapes AuthenticateServerResponse and
/// PrepareDownloadResponse: a CHOICE of its Ok [0] or its Error [1] { transactionId [0],
/// error code INTEGER }. The Ok part, or the error code said as 8.1/6.1.
fn ok_or_refusal<'a>(
    parts: &[Der<'a>],
    field: &'static str,
    error_field: &'static str,
    refused: &str,
) -> Result<Der<'a>, Status> {
    match parts.first() {
        Some(d) if d.tag == 0xA0 => Ok(*d),
        Some(d) if d.tag == 0xA1 => {
            let code = children(d, error_field)?
                .iter()
                .find(|x| x.tag == 0x02)
                .map(small_int);
            Err(status("8.1", "6.1", format!("{refused} {code:?}")))
        }
        _ => Err(invalid(field, "neither Ok nor Error")),
    }
}

/// SGP.22 §5.6.3 steps on AuthenticateServerResponse: the eUICC's chain to our CI, its
/// signature, the transaction and the server challenge; returns the eUICC certificate,
/// the EID, euiccSignature1's TLV and the matching ID.
fn check_authenticate_server_response(
    raw: &[u8],
    tx: &str,
    session: &Transaction,
    ci: &Certificate,
) -> Result<Authenticated, Status> {
    let top = parse_top(raw, 0xBF38, "authenticateServerResponse")?;
    let parts = children(&top, "authenticateServerResponse")?;
    let ok = ok_or_refusal(
        &parts,
        "authenticateServerResponse",
        "authenticateResponseError",
        "the eUICC refused the server: authenticateErrorCode",
    )?;
    // AuthenticateResponseOk ::= SEQUENCE { euiccSigned1, euiccSignature1 [APPLICATION
    // 55], euiccCertificate, eumCertificate }.
    let items = children(&ok, "authenticateResponseOk")?;
    let seqs: Vec<&Der<'_>> = items.iter().filter(|d| d.tag == 0x30).collect();
    let [signed1, euicc_der, eum_der] = seqs.as_slice() else {
        return Err(invalid(
            "authenticateResponseOk",
            "euiccSigned1 and two certificates expected",
        ));
    };
    let signature1 = child(&items, 0x5F37, "euiccSignature1")?;
    let eum = Certificate::from_der(eum_der.raw)
        .map_err(|e| status("8.1.2", "6.1", format!("EUM Certificate is invalid: {e}")))?;
    let euicc = Certificate::from_der(euicc_der.raw)
        .map_err(|e| status("8.1.3", "6.1", format!("eUICC Certificate is invalid: {e}")))?;
    if eum.aki() != ci.ski() {
        return Err(status(
            "8.11.1",
            "3.9",
            "Unknown CI Public Key. The CI used by the EUM Certificate is not a trusted root.",
        ));
    }
    eum.verify_issued_by(ci)
        .map_err(|e| status("8.1.2", "6.1", format!("EUM Certificate is invalid: {e}")))?;
    euicc
        .verify_issued_by(&eum)
        .map_err(|e| status("8.1.3", "6.1", format!("eUICC Certificate is invalid: {e}")))?;
    keys::verify(euicc.public_key(), signed1.raw, signature1.value)
        .map_err(|_| euicc_signature_invalid("euiccSignature1 over euiccSigned1"))?;
    // EuiccSigned1 ::= SEQUENCE { transactionId [0], serverAddress [3], serverChallenge
    // [4], euiccInfo2 [34], ctxParams1 }.
    let fields = children(signed1, "euiccSigned1")?;
    if hex::encode_upper(child(&fields, 0x80, "transactionId")?.value) != tx {
        return Err(unknown_transaction());
    }
    if child(&fields, 0x84, "serverChallenge")?.value != session.server_challenge {
        return Err(status(
            "8.1",
            "6.1",
            "eUICC signature is invalid or serverChallenge is invalid",
        ));
    }
    if !child(&fields, 0x83, "serverAddress")?
        .value
        .eq_ignore_ascii_case(session.address.as_bytes())
    {
        return Err(status(
            "8.8.1",
            "3.8",
            "Invalid SM-DP+ Address in euiccSigned1",
        ));
    }
    let eid = euicc
        .subject_serial_number()
        .filter(|e| e.len() == 32 && e.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| {
            status(
                "8.1.3",
                "6.1",
                "eUICC Certificate is invalid: no EID as its serialNumber",
            )
        })?
        .to_string();
    // ctxParams1: ctxParamsForCommonAuthentication [0] { matchingId [0] UTF8String
    // OPTIONAL, deviceInfo [1] }.
    let ctx = child(&fields, 0xA0, "ctxParams1")?;
    let matching_id = children(&ctx, "ctxParamsForCommonAuthentication")?
        .iter()
        .find(|d| d.tag == 0x80)
        .map(|d| String::from_utf8_lossy(d.value).into_owned())
        .filter(|m| !m.is_empty());
    Ok((euicc, eid, signature1.raw.to_vec(), matching_id))
}

/// SGP.22 §5.6.2 steps on PrepareDownloadResponse: euiccSignature2, the transaction,
/// the confirmation code; returns otPK.EUICC.ECKA.
fn check_prepare_download_response(
    raw: &[u8],
    tx: &str,
    euicc: &Euicc,
    profile: &Profile,
    faults: Faults,
) -> Result<Vec<u8>, Status> {
    let top = parse_top(raw, 0xBF21, "prepareDownloadResponse")?;
    let parts = children(&top, "prepareDownloadResponse")?;
    let ok = ok_or_refusal(
        &parts,
        "prepareDownloadResponse",
        "downloadResponseError",
        "the eUICC refused PrepareDownload: downloadErrorCode",
    )?;
    let items = children(&ok, "downloadResponseOk")?;
    let signed2 = child(&items, 0x30, "euiccSigned2")?;
    let signature2 = child(&items, 0x5F37, "euiccSignature2")?;
    // euiccSignature2 over euiccSigned2 ‖ smdpSignature2 (its 5F37 TLV).
    keys::verify(
        euicc.cert.public_key(),
        &[signed2.raw, &euicc.smdp_signature2].concat(),
        signature2.value,
    )
    .map_err(|_| euicc_signature_invalid("euiccSignature2"))?;
    // EUICCSigned2 ::= SEQUENCE { transactionId [0], euiccOtpk [APPLICATION 73],
    // hashCc Octet32 OPTIONAL }.
    let fields = children(&signed2, "euiccSigned2")?;
    let tx_raw = child(&fields, 0x80, "transactionId")?.value;
    if hex::encode_upper(tx_raw) != tx {
        return Err(unknown_transaction());
    }
    let otpk = child(&fields, 0x5F49, "euiccOtpk")?.value.to_vec();
    if euicc.cc_required {
        let code = profile
            .confirmation_code
            .as_deref()
            .unwrap_or(if faults.require_cc { FAULT_CC } else { "" });
        let Some(hash) = fields.iter().find(|d| d.tag == 0x04) else {
            return Err(status("8.2.7", "2.2", "Confirmation Code is missing"));
        };
        // SGP.22 §3.1.3.1: hashCc = SHA-256(SHA-256(code) ‖ transactionId).
        let want = sha256(&[sha256(code.as_bytes()).as_slice(), tx_raw].concat());
        if hash.value != want {
            return Err(status("8.2.7", "3.8", "Confirmation Code is refused"));
        }
    }
    Ok(otpk)
}

/// The BoundProfilePackage (SGP.22 §2.5.4, §5.5): InitialiseSecureChannelRequest,
/// ConfigureISDP (87), StoreMetadata (88), the profile package (86), protected with the
/// session keys from ECKA with the eUICC's one-time key. Returns the BPP and its number
/// of 86 segments.
fn bind(
    tx: &str,
    euicc: &Euicc,
    profile: &Profile,
    euicc_otpk: &[u8],
    dppb_key: &SigningKey,
    faults: Faults,
) -> Result<(Vec<u8>, usize), RspError> {
    let tx_bytes = hex::decode(tx).unwrap_or_default();
    let eid = hex::decode(&euicc.eid).map_err(|_| RspError::Malformed("EID"))?;
    let ot = OneTimeKey::generate();
    let shared = ot.ecka(euicc_otpk)?;
    // hostId: any 1–16 bytes identifying the host (SGP.22 §5.5.1); it enters the KDF.
    let host_id = b"simgate SM-DP+";
    let keys = SessionKeys::derive(&shared, KEY_TYPE_AES, KEY_LENGTH_AES128, host_id, &eid);
    // InitialiseSecureChannelRequest ::= [35] { remoteOpId [2] (1 =
    // installBoundProfilePackage), transactionId [0], controlRefTemplate [6] { keyType
    // [0] '88', keyLen [1] '10', hostId [4] }, smdpOtpk [APPLICATION 73], smdpSign
    // [APPLICATION 55] }; smdpSign covers the first four ‖ euiccOtpk (5F49 TLV).
    let signed_part = [
        encode(0x82, &[1]),
        encode(0x80, &tx_bytes),
        encode(
            0xA6,
            &[
                encode(0x80, &[KEY_TYPE_AES]),
                encode(0x81, &[KEY_LENGTH_AES128]),
                encode(0x84, host_id),
            ]
            .concat(),
        ),
        encode(0x5F49, &ot.public_point()),
    ]
    .concat();
    let sign = dppb_key.sign(&[signed_part.as_slice(), &encode(0x5F49, euicc_otpk)].concat());
    let iscr = encode(0xBF23, &[signed_part, encode(0x5F37, &sign)].concat());

    let mut bsp = Bsp::new(&keys);
    // ConfigureISDPRequest ::= [36] SEQUENCE { dpProprietaryData OPTIONAL } — empty.
    let configure = bsp.encrypt_and_mac(0x87, &encode(0xBF24, &[]));
    let metadata = bsp.mac_only(0x88, &euicc.metadata);
    let mut package = bsp.encrypt_and_mac(0x86, &profile.package());
    if faults.bad_mac {
        if let Some(last) = package.last_mut().and_then(|s| s.last_mut()) {
            *last ^= 0x01;
        }
    }
    let segments = package.len();
    let bpp = encode(
        0xBF36,
        &[
            iscr,
            encode(0xA0, &configure.concat()),
            encode(0xA1, &metadata.concat()),
            encode(0xA3, &package.concat()),
        ]
        .concat(),
    );
    Ok((bpp, segments))
}

fn success(mut body: Value) -> Value {
    body["header"] = json!({"functionExecutionStatus": {"status": "Executed-Success"}});
    body
}

fn failed(s: &Status) -> Value {
    json!({"header": {"functionExecutionStatus": {
        "status": "Failed",
        "statusCodeData": {"subjectCode": s.subject, "reasonCode": s.reason, "message": s.message},
    }}})
}
