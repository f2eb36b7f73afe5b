//! The SM-DP+'s ES9+ handling against an eUICC side built here from the RSP crypto core
//! and a real test PKI (tests/fixtures/rsp/pki): every message as SGP.22 encodes it, no
//! HTTP.

use super::es9::{Faults, Pki, Reply, Smdp};
use super::profiles::ProfilesFile;
use crate::emu::rsp::bsp::{Bsp, SessionKeys};
use crate::emu::rsp::der::{self, encode};
use crate::emu::rsp::{keys, sha256, Certificate, OneTimeKey, SigningKey};
use base64ct::{Base64, Encoding};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const ADDRESS: &str = "127.0.0.1:8443";
const EID: &str = "89049032123451234512345678901235";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn server(faults: Faults) -> Smdp {
    let pki = Pki::load(&fixture("tests/fixtures/rsp/pki")).unwrap();
    let profiles = ProfilesFile::load(&fixture("devices/smdp/profiles.toml")).unwrap();
    Smdp::new(
        vec![ADDRESS.into(), "localhost:8443".into()],
        pki,
        profiles,
        faults,
    )
}

fn b64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    Base64::decode_vec(v.as_str().expect("a base64 string")).unwrap()
}

/// Call a function; the JSON answer (status 200) and the journal.
fn call(s: &mut Smdp, function: &str, body: Value) -> (Value, Vec<Value>) {
    let out = s.handle(
        function,
        Some("gsma/rsp/v2.2.0"),
        body.to_string().as_bytes(),
    );
    match out.reply {
        Reply::Json(v) => (v, out.journal),
        other => panic!("{function}: {other:?}"),
    }
}

fn status_of(v: &Value) -> (String, String) {
    let st = &v["header"]["functionExecutionStatus"];
    if st["status"] == "Executed-Success" {
        return ("ok".into(), String::new());
    }
    let d = &st["statusCodeData"];
    (
        d["subjectCode"].as_str().unwrap().into(),
        d["reasonCode"].as_str().unwrap().into(),
    )
}

fn field<'a>(list: &[der::Der<'a>], tag: u32) -> der::Der<'a> {
    *list
        .iter()
        .find(|d| d.tag == tag)
        .unwrap_or_else(|| panic!("no {tag:X}"))
}

/// What a BPP carried: ConfigureISDP, StoreMetadata, the profile package.
type Loaded = (Vec<u8>, Vec<u8>, Vec<u8>);

/// The eUICC side, as SGP.22 §5.7 has it.
struct Euicc {
    key: SigningKey,
    cert: Vec<u8>,
    eum: Vec<u8>,
    pkid: Vec<u8>,
    dir: PathBuf,
}

struct Session {
    tx: String,
    signature1: Vec<u8>,
    signature2: Option<Vec<u8>>,
    otk: OneTimeKey,
}

impl Euicc {
    fn new() -> Euicc {
        let dir = fixture("tests/fixtures/rsp/pki");
        let pem = |n: &str| Certificate::load_pem_one(&dir.join(n)).unwrap();
        Euicc {
            key: SigningKey::load_pem(&dir.join("euicc.key")).unwrap(),
            cert: pem("euicc.pem").der().to_vec(),
            eum: pem("eum.pem").der().to_vec(),
            pkid: pem("ci.pem").ski().unwrap().to_vec(),
            dir,
        }
    }

    fn info1(&self) -> Vec<u8> {
        let list = encode(0x04, &self.pkid);
        encode(
            0xBF20,
            &[
                encode(0x82, &[2, 2, 2]),
                encode(0xA9, &list),
                encode(0xAA, &list),
            ]
            .concat(),
        )
    }

    fn initiate(&self, s: &mut Smdp) -> (Value, Vec<Value>) {
        call(
            s,
            "initiateAuthentication",
            json!({"smdpAddress": ADDRESS, "euiccChallenge": b64(&[7; 16]), "euiccInfo1": b64(&self.info1())}),
        )
    }

    /// AuthenticateServer (SGP.22 §5.7.13), after checking the server as the eUICC does.
    fn authenticate(&self, init: &Value, matching_id: &str) -> (Session, Vec<u8>) {
        let signed1 = unb64(&init["serverSigned1"]);
        let sig1 = unb64(&init["serverSignature1"]);
        let dpauth = Certificate::from_der(&unb64(&init["serverCertificate"])).unwrap();
        let ci = Certificate::load_pem_one(&self.dir.join("ci.pem")).unwrap();
        dpauth.verify_issued_by(&ci).unwrap();
        assert_eq!(&sig1[..3], &[0x5F, 0x37, 0x40]);
        assert!(keys::verify(dpauth.public_key(), &signed1, &sig1[3..]).is_ok());
        assert_eq!(
            unb64(&init["euiccCiPKIdToBeUsed"]),
            encode(0x04, &self.pkid)
        );
        let fields = der::all(der::one(&signed1).unwrap().value).unwrap();
        let tx = field(&fields, 0x80).value.to_vec();
        assert_eq!(
            hex::encode_upper(&tx),
            init["transactionId"].as_str().unwrap()
        );
        assert_eq!(field(&fields, 0x81).value, [7; 16]);
        let ctx = encode(
            0xA0,
            &[
                encode(0x80, matching_id.as_bytes()),
                encode(
                    0xA1,
                    &[encode(0x80, &[0x35, 0x29, 0x06, 0x11]), encode(0xA1, &[])].concat(),
                ),
            ]
            .concat(),
        );
        let euicc_signed1 = encode(
            0x30,
            &[
                encode(0x80, &tx),
                encode(0x83, field(&fields, 0x83).value),
                encode(0x84, field(&fields, 0x84).value),
                encode(0xBF22, &encode(0x81, &[2, 3, 0])),
                ctx,
            ]
            .concat(),
        );
        let signature1 = encode(0x5F37, &self.key.sign(&euicc_signed1));
        let response = encode(
            0xBF38,
            &encode(
                0xA0,
                &[
                    euicc_signed1,
                    signature1.clone(),
                    self.cert.clone(),
                    self.eum.clone(),
                ]
                .concat(),
            ),
        );
        let session = Session {
            tx: hex::encode_upper(&tx),
            signature1,
            signature2: None,
            otk: OneTimeKey::generate(),
        };
        (session, response)
    }

    fn authenticate_client(
        &self,
        s: &mut Smdp,
        session: &Session,
        response: &[u8],
    ) -> (Value, Vec<Value>) {
        call(
            s,
            "authenticateClient",
            json!({"transactionId": session.tx, "authenticateServerResponse": b64(response)}),
        )
    }

    /// PrepareDownload (SGP.22 §5.7.5), after checking smdpSignature2.
    fn prepare(&self, session: &mut Session, auth: &Value, cc: Option<&str>) -> Vec<u8> {
        let signed2 = unb64(&auth["smdpSigned2"]);
        let sig2 = unb64(&auth["smdpSignature2"]);
        let dppb = Certificate::from_der(&unb64(&auth["smdpCertificate"])).unwrap();
        keys::verify(
            dppb.public_key(),
            &[signed2.as_slice(), &session.signature1].concat(),
            der::one(&sig2).unwrap().value,
        )
        .unwrap();
        let tx = hex::decode(&session.tx).unwrap();
        let mut body = vec![
            encode(0x80, &tx),
            encode(0x5F49, &session.otk.public_point()),
        ];
        if let Some(cc) = cc {
            body.push(encode(
                0x04,
                &sha256(&[sha256(cc.as_bytes()).as_slice(), &tx].concat()),
            ));
        }
        let euicc_signed2 = encode(0x30, &body.concat());
        let signature2 = encode(
            0x5F37,
            &self.key.sign(&[euicc_signed2.as_slice(), &sig2].concat()),
        );
        session.signature2 = Some(sig2);
        encode(0xBF21, &encode(0xA0, &[euicc_signed2, signature2].concat()))
    }

    /// The eUICC's side of the BPP: smdpSign, ECKA, then every segment verified and
    /// decrypted. Returns (ConfigureISDP, StoreMetadata, profile package) or the index
    /// of the 86 segment whose MAC failed.
    fn load_bpp(&self, session: &Session, bpp: &[u8]) -> Result<Loaded, usize> {
        let top = der::one(bpp).unwrap();
        assert_eq!(top.tag, 0xBF36);
        let parts = der::all(top.value).unwrap();
        assert_eq!(
            parts.iter().map(|d| d.tag).collect::<Vec<_>>(),
            [0xBF23, 0xA0, 0xA1, 0xA3]
        );
        let iscr = der::all(parts[0].value).unwrap();
        let dppb = Certificate::load_pem_one(&self.dir.join("dppb.pem")).unwrap();
        let signed: Vec<u8> = iscr[..4].iter().flat_map(|d| d.raw.to_vec()).collect();
        assert_eq!(iscr[0].raw, [0x82, 1, 1]);
        assert_eq!(hex::encode_upper(iscr[1].value), session.tx);
        keys::verify(
            dppb.public_key(),
            &[signed, encode(0x5F49, &session.otk.public_point())].concat(),
            iscr[4].value,
        )
        .expect("smdpSign");
        let crt = der::all(iscr[2].value).unwrap();
        let shared = session.otk.ecka(iscr[3].value).unwrap();
        let keys = SessionKeys::derive(
            &shared,
            crt[0].value[0],
            crt[1].value[0],
            crt[2].value,
            &hex::decode(EID).unwrap(),
        );
        let mut bsp = Bsp::new(&keys);
        let mut open = |d: &der::Der<'_>, mac_only: bool| -> Vec<Vec<u8>> {
            der::all(d.value)
                .unwrap()
                .iter()
                .map(|s| {
                    assert!(s.raw.len() <= 1020);
                    if mac_only {
                        bsp.verify_mac_only(s.raw).map(|x| x.1)
                    } else {
                        bsp.verify_and_decrypt(s.raw).map(|x| x.1)
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default()
        };
        let configure = open(&parts[1], false).concat();
        let metadata = open(&parts[2], true).concat();
        let mut package = Vec::new();
        for (i, s) in der::all(parts[3].value).unwrap().iter().enumerate() {
            package.extend(bsp.verify_and_decrypt(s.raw).map_err(|_| i)?.1);
        }
        Ok((configure, metadata, package))
    }

    /// A ProfileInstallationResult (SGP.22 §5.7.6) of a successful install.
    fn install_result(&self, session: &Session, seq: u8, iccid: &[u8]) -> Vec<u8> {
        let meta = encode(
            0xBF2F,
            &[
                encode(0x80, &[seq]),
                encode(0x81, &[0x07, 0x80]),
                encode(0x0C, ADDRESS.as_bytes()),
                encode(0x5A, iccid),
            ]
            .concat(),
        );
        let data = encode(
            0xBF27,
            &[
                encode(0x80, &hex::decode(&session.tx).unwrap()),
                meta,
                encode(
                    0xA2,
                    &encode(
                        0xA0,
                        &[
                            encode(0x4F, &[0xA0, 0, 0, 5, 0x59, 0x10, 0x10]),
                            encode(0x04, &[]),
                        ]
                        .concat(),
                    ),
                ),
            ]
            .concat(),
        );
        let sig = encode(0x5F37, &self.key.sign(&data));
        encode(0xBF37, &[data, sig].concat())
    }

    /// An ES10b CancelSession answer (SGP.22 §5.7.14), signed.
    fn cancel(&self, session: &Session, smdp_oid: &[u8], reason: u8) -> Vec<u8> {
        let signed = encode(
            0x30,
            &[
                encode(0x80, &hex::decode(&session.tx).unwrap()),
                encode(0x81, smdp_oid),
                encode(0x82, &[reason]),
            ]
            .concat(),
        );
        let sig = encode(0x5F37, &self.key.sign(&signed));
        encode(0xBF41, &encode(0xA0, &[signed, sig].concat()))
    }
}

fn dp_oid() -> Vec<u8> {
    let dpauth = Certificate::load_pem_one(&fixture("tests/fixtures/rsp/pki/dpauth.pem")).unwrap();
    dpauth.registered_id().unwrap().to_vec()
}

/// Run a download up to getBoundProfilePackage; its answer and journal.
fn download(
    s: &mut Smdp,
    e: &Euicc,
    matching_id: &str,
    cc: Option<&str>,
) -> (Session, Value, Vec<Value>) {
    let (init, _) = e.initiate(s);
    assert_eq!(status_of(&init).0, "ok", "{init}");
    let (mut session, resp) = e.authenticate(&init, matching_id);
    let (auth, _) = e.authenticate_client(s, &session, &resp);
    assert_eq!(status_of(&auth).0, "ok", "{auth}");
    let prep = e.prepare(&mut session, &auth, cc);
    let (bpp, journal) = call(
        s,
        "getBoundProfilePackage",
        json!({"transactionId": session.tx, "prepareDownloadResponse": b64(&prep)}),
    );
    (session, bpp, journal)
}

#[test]
fn a_download_binds_the_profile_to_the_euicc_and_its_notification_is_journaled() {
    let mut s = server(Faults::default());
    let e = Euicc::new();
    let (session, bpp, journal) = download(&mut s, &e, "SIMGATE-TEST-BIG", None);
    assert_eq!(status_of(&bpp).0, "ok", "{bpp}");
    let profiles = ProfilesFile::load(&fixture("devices/smdp/profiles.toml")).unwrap();
    let profile = profiles.by_matching_id("SIMGATE-TEST-BIG").unwrap();
    let (configure, metadata, package) = e
        .load_bpp(&session, &unb64(&bpp["boundProfilePackage"]))
        .unwrap();
    assert_eq!(configure, [0xBF, 0x24, 0x00]);
    assert_eq!(metadata, profile.metadata(Some(ADDRESS)));
    assert_eq!(package, profile.package());
    let bound = journal.iter().find(|l| l["event"] == "bpp").unwrap();
    assert_eq!(bound["iccid"], "8900101000000000035");
    assert!(bound["segments86"].as_u64().unwrap() > 20, "{bound}");

    let iccid = super::profiles::iccid_bytes(&profile.iccid);
    let note = e.install_result(&session, 3, &iccid);
    let out = s.handle(
        "handleNotification",
        Some("gsma/rsp/v2.2.0"),
        json!({"pendingNotification": b64(&note)})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(out.reply, Reply::NoContent);
    let n = out
        .journal
        .iter()
        .find(|l| l["event"] == "notification")
        .unwrap();
    assert_eq!(
        (n["seq"].clone(), n["iccid"].clone(), n["verified"].clone()),
        (json!(3), json!("8900101000000000035"), json!(true))
    );
    assert_eq!(n["result"], "success");
    // The session is over: a late cancel finds no transaction.
    let (v, _) = call(
        &mut s,
        "cancelSession",
        json!({"transactionId": session.tx, "cancelSessionResponse": b64(&e.cancel(&session, &dp_oid(), 0))}),
    );
    assert_eq!(status_of(&v), ("8.10.1".into(), "3.9".into()));
}

#[test]
fn an_unknown_matching_id_is_refused_and_the_session_can_be_cancelled() {
    let mut s = server(Faults::default());
    let e = Euicc::new();
    let (init, _) = e.initiate(&mut s);
    let (session, resp) = e.authenticate(&init, "NO-SUCH-ID");
    let (v, journal) = e.authenticate_client(&mut s, &session, &resp);
    assert_eq!(status_of(&v), ("8.2.6".into(), "3.8".into()));
    assert_eq!(journal[0]["status"], "Failed");
    let (v, journal) = call(
        &mut s,
        "cancelSession",
        json!({"transactionId": session.tx, "cancelSessionResponse": b64(&e.cancel(&session, &dp_oid(), 1))}),
    );
    assert_eq!(status_of(&v).0, "ok", "{v}");
    let c = journal.iter().find(|l| l["event"] == "cancelled").unwrap();
    assert_eq!(
        (c["transactionId"].as_str(), c["reason"].clone()),
        (Some(session.tx.as_str()), json!(1))
    );
}

#[test]
fn the_confirmation_code_is_required_checked_and_accepted() {
    let e = Euicc::new();
    let mut s = server(Faults::default());
    let (_, v, _) = download(&mut s, &e, "SIMGATE-TEST-CC", None);
    assert_eq!(status_of(&v), ("8.2.7".into(), "2.2".into()));
    let (_, v, _) = download(&mut s, &e, "SIMGATE-TEST-CC", Some("9999"));
    assert_eq!(status_of(&v), ("8.2.7".into(), "3.8".into()));
    let (_, v, _) = download(&mut s, &e, "SIMGATE-TEST-CC", Some("1234"));
    assert_eq!(status_of(&v).0, "ok", "{v}");
    // --fault require-cc: a profile without a code of its own needs the fault's.
    let mut s = server(Faults {
        require_cc: true,
        ..Faults::default()
    });
    let (_, v, _) = download(&mut s, &e, "SIMGATE-TEST-1", None);
    assert_eq!(status_of(&v), ("8.2.7".into(), "2.2".into()));
    let (_, v, _) = download(&mut s, &e, "SIMGATE-TEST-1", Some("0000"));
    assert_eq!(status_of(&v).0, "ok", "{v}");
}

#[test]
fn a_bent_euicc_signature_or_a_foreign_chain_is_refused() {
    let mut s = server(Faults::default());
    let e = Euicc::new();
    let (init, _) = e.initiate(&mut s);
    let (session, mut resp) = e.authenticate(&init, "SIMGATE-TEST-1");
    // A byte of euiccSignature1 (after euiccSigned1, inside the 5F37's value).
    let at = resp
        .windows(3)
        .position(|w| w == [0x5F, 0x37, 0x40])
        .unwrap()
        + 10;
    resp[at] ^= 1;
    let (v, _) = e.authenticate_client(&mut s, &session, &resp);
    assert_eq!(status_of(&v), ("8.1".into(), "6.1".into()));

    // An eUICC certificate presented with the wrong issuer (DPauth as its "EUM").
    let mut other = Euicc::new();
    other.eum = Certificate::load_pem_one(&fixture("tests/fixtures/rsp/pki/dpauth.pem"))
        .unwrap()
        .der()
        .to_vec();
    let (init, _) = other.initiate(&mut s);
    let (session, resp) = other.authenticate(&init, "SIMGATE-TEST-1");
    let (v, _) = other.authenticate_client(&mut s, &session, &resp);
    assert_eq!(status_of(&v), ("8.1.3".into(), "6.1".into()));
}

#[test]
fn unknown_transactions_addresses_and_protocols_get_their_status_codes() {
    let mut s = server(Faults::default());
    let e = Euicc::new();
    let (v, _) = call(
        &mut s,
        "getBoundProfilePackage",
        json!({"transactionId": "00FF", "prepareDownloadResponse": b64(&[0xBF, 0x21, 0])}),
    );
    assert_eq!(status_of(&v), ("8.10.1".into(), "3.9".into()));
    let (v, _) = call(
        &mut s,
        "initiateAuthentication",
        json!({"smdpAddress": "smdp.example.com", "euiccChallenge": b64(&[0; 16]), "euiccInfo1": b64(&e.info1())}),
    );
    assert_eq!(status_of(&v), ("8.8.1".into(), "3.8".into()));
    let (v, _) = call(
        &mut s,
        "initiateAuthentication",
        json!({"smdpAddress": ADDRESS}),
    );
    assert_eq!(status_of(&v), ("1.3.1".into(), "2.2".into()));
    let out = s.handle("initiateAuthentication", Some("gsma/rsp/v3.0.0"), b"{}");
    let Reply::Json(v) = out.reply else { panic!() };
    assert_eq!(status_of(&v), ("1.2.2".into(), "2.1".into()));
    assert_eq!(
        s.handle("listProfiles", Some("gsma/rsp/v2.2.0"), b"{}")
            .reply,
        Reply::NotFound
    );
    // The address is compared without case (SGP.22 §5.6.1).
    let (v, _) = call(
        &mut s,
        "initiateAuthentication",
        json!({"smdpAddress": "LOCALHOST:8443", "euiccChallenge": b64(&[0; 16]), "euiccInfo1": b64(&e.info1())}),
    );
    assert_eq!(status_of(&v).0, "ok");
}

#[test]
fn faults_bend_the_server_signature_the_last_mac_or_drop_the_answer() {
    let e = Euicc::new();
    let mut s = server(Faults {
        bad_signature: true,
        ..Faults::default()
    });
    let (init, _) = e.initiate(&mut s);
    let dpauth = Certificate::from_der(&unb64(&init["serverCertificate"])).unwrap();
    let sig = unb64(&init["serverSignature1"]);
    assert!(keys::verify(
        dpauth.public_key(),
        &unb64(&init["serverSigned1"]),
        &sig[3..]
    )
    .is_err());

    let mut s = server(Faults {
        bad_mac: true,
        ..Faults::default()
    });
    let (session, bpp, _) = download(&mut s, &e, "SIMGATE-TEST-BIG", None);
    let segments = der::all(
        der::all(der::one(&unb64(&bpp["boundProfilePackage"])).unwrap().value).unwrap()[3].value,
    )
    .unwrap()
    .len();
    assert_eq!(
        e.load_bpp(&session, &unb64(&bpp["boundProfilePackage"]))
            .unwrap_err(),
        segments - 1
    );

    let mut s = server(Faults {
        gone_after_bpp_request: true,
        ..Faults::default()
    });
    let (init, _) = e.initiate(&mut s);
    let (mut session, resp) = e.authenticate(&init, "SIMGATE-TEST-1");
    let (auth, _) = e.authenticate_client(&mut s, &session, &resp);
    let prep = e.prepare(&mut session, &auth, None);
    let out = s.handle(
        "getBoundProfilePackage",
        Some("gsma/rsp/v2.2.0"),
        json!({"transactionId": session.tx, "prepareDownloadResponse": b64(&prep)})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(out.reply, Reply::Drop);
    assert_eq!(out.journal[0]["status"], "dropped");
    // The session stays for the LPA's cancel.
    let (v, j) = call(
        &mut s,
        "cancelSession",
        json!({"transactionId": session.tx, "cancelSessionResponse": b64(&e.cancel(&session, &dp_oid(), 2))}),
    );
    assert_eq!(status_of(&v).0, "ok", "{v}");
    assert!(j.iter().any(|l| l["event"] == "cancelled"));
}
