//! The virtual eUICC's download side in memory: STORE DATA reassembly, the whole ES10b
//! download against a minimal SM-DP+ written here with the crypto core (src/emu/rsp), and
//! each error path of SGP.22 §5.7.5, §5.7.6, §5.7.13, §5.7.14. The PKIs are
//! tests/fixtures/rsp/euicc-pki/ (tests/fixtures/README.md).

use super::super::card::Reply;
use super::super::{CardImage, VirtualCard};
use super::*;
use crate::emu::rsp::keys::verify;
use std::path::PathBuf;

const EID: &str = "89049032123451234512345678901235";
const ISDR: &str = "A0000005591010FFFFFFFF8900000100";
const NEW_ICCID: &str = "8949440000000000032";
const HOST_ID: &[u8] = b"SIMGATE-TEST-DP";

fn pki_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rsp/euicc-pki")
        .join(name)
}

/// A blank eUICC (euicc-blank.toml's shape) plus `extra` TOML, with the fixture PKI.
fn card_with(extra_euicc: &str, fault: &str) -> VirtualCard {
    let text = format!(
        "name = \"t\"\nkind = \"uicc\"\natr = \"3B00\"\n[euicc]\nisdr_aid = \"{ISDR}\"\neid = \"{EID}\"\n{extra_euicc}\n\
         [[euicc.profiles]]\niccid = \"8949440000000000016\"\nenabled = true\n[fault]\n{fault}\n"
    );
    let pki = EuiccPki::load(&pki_dir("ci")).unwrap();
    let mut c = VirtualCard::new(CardImage::parse(&text).unwrap()).with_pki(Arc::new(pki));
    let mut select = hex::decode("00A4040010").unwrap();
    select.extend(hex::decode(ISDR).unwrap());
    assert!(matches!(c.process(&select)[..], [0x61, _] | [0x90, 0x00]));
    c
}

fn card() -> VirtualCard {
    card_with("", "")
}

/// One ES10 request as the LPA sends it (SGP.22 §5.7.2): STORE DATA blocks of at most
/// 255 bytes, P1 11 / 91, P2 the block number; 61xx answered with GET RESPONSE (T=0).
fn es10(c: &mut VirtualCard, req: &[u8]) -> (Vec<u8>, [u8; 2]) {
    let blocks: Vec<&[u8]> = req.chunks(255).collect();
    let mut resp = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let last = i + 1 == blocks.len();
        let mut apdu = vec![
            0x80,
            0xE2,
            if last { 0x91 } else { 0x11 },
            i as u8,
            b.len() as u8,
        ];
        apdu.extend_from_slice(b);
        resp = c.process(&apdu);
        if !last {
            assert_eq!(resp, [0x90, 0x00], "block {i}");
        }
    }
    let mut data = Vec::new();
    while let [.., 0x61, n] = resp[..] {
        data.extend_from_slice(&resp[..resp.len() - 2]);
        resp = c.process(&[0x00, 0xC0, 0x00, 0x00, n]);
    }
    data.extend_from_slice(&resp[..resp.len() - 2]);
    let n = resp.len();
    (data, [resp[n - 2], resp[n - 1]])
}

fn ok(c: &mut VirtualCard, req: &[u8]) -> Vec<u8> {
    let (data, sw) = es10(c, req);
    assert_eq!(sw, [0x90, 0x00]);
    data
}

fn path<'a>(data: &'a [u8], tags: &[u32]) -> &'a [u8] {
    ber::find_path(data, tags)
        .unwrap()
        .unwrap_or_else(|| panic!("no {tags:X?}"))
}

/// What the SM-DP+ of this test does wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum DpFault {
    #[default]
    None,
    OtherCi,
    BadSignature1,
    WrongChallenge,
    UnknownPkid,
    BadSignature2,
    WrongTransactionId,
    BadSmdpSign,
    BadCrt,
    BadMac,
    HeaderIccid,
    ReplaceKeys,
}

/// The minimal SM-DP+ of these tests: the fixture's DPauth/DPpb keys and certificates.
struct Dp {
    auth: SigningKey,
    auth_cert: Certificate,
    pb: SigningKey,
    pb_cert: Certificate,
    ci: Certificate,
    fault: DpFault,
    tid: Vec<u8>,
}

impl Dp {
    fn new(fault: DpFault) -> Dp {
        let dir = pki_dir(if fault == DpFault::OtherCi {
            "other-ci"
        } else {
            "ci"
        });
        Dp {
            auth: SigningKey::load_pem(&dir.join("dpauth.key")).unwrap(),
            auth_cert: Certificate::load_pem_one(&dir.join("dpauth.pem")).unwrap(),
            pb: SigningKey::load_pem(&dir.join("dppb.key")).unwrap(),
            pb_cert: Certificate::load_pem_one(&dir.join("dppb.pem")).unwrap(),
            ci: Certificate::load_pem_one(&pki_dir("ci").join("ci.pem")).unwrap(),
            fault,
            tid: hex::decode("0123456789ABCDEF0123456789ABCDEF").unwrap(),
        }
    }

    /// AuthenticateServerRequest (SGP.22 §5.7.13) for this challenge.
    fn authenticate_server(&self, challenge: &[u8]) -> Vec<u8> {
        let mut chal = challenge.to_vec();
        if self.fault == DpFault::WrongChallenge {
            chal[0] ^= 1;
        }
        let mut s1 = tlv(0x80, &self.tid);
        s1.extend(tlv(0x81, &chal));
        s1.extend(tlv(0x83, b"smdp.test.example"));
        s1.extend(tlv(0x84, &[0x42; 16]));
        let signed1 = tlv(0x30, &s1);
        let mut sig = self.auth.sign(&signed1);
        if self.fault == DpFault::BadSignature1 {
            sig[5] ^= 1;
        }
        let mut pkid = self.ci.ski().unwrap().to_vec();
        if self.fault == DpFault::UnknownPkid {
            pkid[0] ^= 1;
        }
        let mut ctx = tlv(0x80, b"MATCHING-ID-1");
        let mut dev = tlv(0x80, &[0x35, 0x29, 0x06, 0x11]);
        dev.extend(tlv(0xA1, &[]));
        ctx.extend(tlv(0xA1, &dev));
        let mut req = signed1;
        req.extend(tlv(0x5F37, &sig));
        req.extend(tlv(0x04, &pkid));
        req.extend_from_slice(self.auth_cert.der());
        req.extend(tlv(0xA0, &ctx));
        tlv(0xBF38, &req)
    }

    /// PrepareDownloadRequest (SGP.22 §5.7.5) answering this AuthenticateServer response.
    fn prepare_download(&self, auth_resp: &[u8]) -> Vec<u8> {
        let sig1 = path(auth_resp, &[0xBF38, 0xA0, 0x5F37]);
        let mut tid = self.tid.clone();
        if self.fault == DpFault::WrongTransactionId {
            tid[0] ^= 1;
        }
        let mut s2 = tlv(0x80, &tid);
        s2.extend(tlv(0x01, &[0x00]));
        let signed2 = tlv(0x30, &s2);
        let mut covered = signed2.clone();
        covered.extend(tlv(0x5F37, sig1));
        let mut sig = self.pb.sign(&covered);
        if self.fault == DpFault::BadSignature2 {
            sig[0] ^= 1;
        }
        let mut req = signed2;
        req.extend(tlv(0x5F37, &sig));
        req.extend_from_slice(self.pb_cert.der());
        tlv(0xBF21, &req)
    }

    /// The BPP's segments (SGP.22 §2.5.5) for the eUICC's one-time key.
    fn bpp_segments(&self, euicc_otpk: &[u8], iccid: &str, package_size: usize) -> Vec<Vec<u8>> {
        let otk = OneTimeKey::generate();
        let shared = otk.ecka(euicc_otpk).unwrap();
        let keys = SessionKeys::derive(&shared, 0x88, 16, HOST_ID, &hex::decode(EID).unwrap());
        let mut bsp = Bsp::new(&keys);
        let mut part = tlv(0x82, &[1]);
        part.extend(tlv(0x80, &self.tid));
        let mut crt = tlv(
            0x80,
            &[if self.fault == DpFault::BadCrt {
                0x89
            } else {
                0x88
            }],
        );
        crt.extend(tlv(0x81, &[0x10]));
        crt.extend(tlv(0x84, HOST_ID));
        part.extend(tlv(0xA6, &crt));
        part.extend(tlv(0x5F49, &otk.public_point()));
        let mut covered = part.clone();
        covered.extend(tlv(0x5F49, euicc_otpk));
        let mut sign = self.pb.sign(&covered);
        if self.fault == DpFault::BadSmdpSign {
            sign[1] ^= 1;
        }
        let mut isc = part;
        isc.extend(tlv(0x5F37, &sign));
        let isc = tlv(0xBF23, &isc);

        let a0: Vec<u8> = bsp.encrypt_and_mac(0x87, &tlv(0xBF24, &[])).concat();
        let mut meta = tlv(0x5A, &super::super::iccid_to_ef(iccid));
        meta.extend(tlv(0x91, b"Test Operator"));
        meta.extend(tlv(0x92, b"Test Profile"));
        meta.extend(tlv(0x95, &[2]));
        let enable = [tlv(0x80, &[0x06, 0x40]), tlv(0x81, b"notify.test.example")].concat();
        meta.extend(tlv(0xB6, &tlv(0x30, &enable)));
        let seq88 = bsp.mac_only(0x88, &tlv(0xBF25, &meta));
        let a2 = (self.fault == DpFault::ReplaceKeys).then(|| {
            let ppk = SessionKeys {
                s_enc: [0x11; 16],
                s_mac: [0x22; 16],
                initial_mcv: [0x33; 16],
            };
            let mut rsk = tlv(0x80, &ppk.initial_mcv);
            rsk.extend(tlv(0x81, &ppk.s_enc));
            rsk.extend(tlv(0x82, &ppk.s_mac));
            let a2 = bsp.encrypt_and_mac(0x87, &tlv(0xBF26, &rsk)).concat();
            bsp = Bsp::new(&ppk);
            a2
        });
        let header_iccid = if self.fault == DpFault::HeaderIccid {
            "8949440000000000040"
        } else {
            iccid
        };
        let mut seq86 = bsp.encrypt_and_mac(0x86, &saip(header_iccid, package_size));
        if self.fault == DpFault::BadMac {
            let last = seq86.len() - 1;
            let n = seq86[last].len();
            seq86[last][n - 1] ^= 1;
        }

        let mut segments = Vec::new();
        let mut body = isc.clone();
        body.extend(tlv(0xA0, &a0));
        let a1: Vec<u8> = seq88.concat();
        body.extend(tlv(0xA1, &a1));
        if let Some(a2) = &a2 {
            body.extend(tlv(0xA2, a2));
        }
        let a3: Vec<u8> = seq86.concat();
        body.extend(tlv(0xA3, &a3));
        let whole = tlv(0xBF36, &body);
        // (1) BF36 tag+length ‖ BF23; (2) A0; (3) A1 header; (4) each 88; (5) A2;
        // (6) A3 header; (7) each 86.
        let bf36_head = whole.len() - body.len();
        let mut first = whole[..bf36_head].to_vec();
        first.extend(&isc);
        segments.push(first);
        segments.push(tlv(0xA0, &a0));
        let a1_tlv = tlv(0xA1, &a1);
        segments.push(a1_tlv[..a1_tlv.len() - a1.len()].to_vec());
        segments.extend(seq88);
        if let Some(a2) = a2 {
            segments.push(tlv(0xA2, &a2));
        }
        let a3_tlv = tlv(0xA3, &a3);
        segments.push(a3_tlv[..a3_tlv.len() - a3.len()].to_vec());
        segments.extend(seq86);
        segments
    }
}

/// A small SAIP package (PE_Definitions): ProfileHeader with the ICCID, a PE-USIM with
/// EF.IMSI's content, filler in a generic PE up to `size` bytes, PE-End.
fn saip(iccid: &str, size: usize) -> Vec<u8> {
    let mut header = tlv(0x80, &[2]);
    header.extend(tlv(0x81, &[3]));
    header.extend(tlv(0x83, &header_bcd(iccid)));
    let mut out = tlv(0xA0, &header);
    let mut usim = tlv(0xA0, &tlv(0x81, &[1]));
    usim.extend(tlv(0x81, &[0x67, 0x81, 0x0F, 0x01, 0x02, 0x01, 0x04]));
    let mut imsi = tlv(0xA1, &tlv(0x82, &[0x6F, 0x07]));
    imsi.extend(tlv(0x83, &hex::decode("082926101160845749").unwrap()));
    usim.extend(tlv(0xA3, &imsi));
    out.extend(tlv(0xB3, &usim));
    let fill = size.saturating_sub(out.len() + 8);
    out.extend(tlv(0xA1, &vec![0x04; fill.min(60_000)]));
    out.extend(tlv(0xAA, &tlv(0xA0, &tlv(0x81, &[9]))));
    out
}

/// The ProfileHeader's coding of an ICCID: its digits in written order, 'F'-padded to
/// 10 bytes (as GSMA's TS.48 test packages code it).
fn header_bcd(iccid: &str) -> Vec<u8> {
    let mut digits = iccid.to_string();
    while digits.len() < 20 {
        digits.push('F');
    }
    hex::decode(digits).unwrap()
}

/// The download up to the BPP: the eUICC's one-time key, or the refusal on the way.
fn authenticate_and_prepare(c: &mut VirtualCard, dp: &Dp) -> Result<Vec<u8>, Vec<u8>> {
    let chal = ok(c, &tlv(0xBF2E, &[]));
    let auth = ok(c, &dp.authenticate_server(path(&chal, &[0xBF2E, 0x80])));
    if ber::find_path(&auth, &[0xBF38, 0xA0]).unwrap().is_none() {
        return Err(auth);
    }
    let prep = ok(c, &dp.prepare_download(&auth));
    match ber::find_path(&prep, &[0xBF21, 0xA0, 0x30, 0x5F49]).unwrap() {
        Some(k) => Ok(k.to_vec()),
        None => Err(prep),
    }
}

/// The whole BPP: the answer to the last segment sent (the PIR, or empty).
fn load(c: &mut VirtualCard, segments: &[Vec<u8>]) -> Vec<u8> {
    for (i, s) in segments.iter().enumerate() {
        let out = ok(c, s);
        if !out.is_empty() {
            return out;
        }
        assert!(i + 1 < segments.len(), "no PIR after the last segment");
    }
    Vec::new()
}

fn download(fault: DpFault) -> (VirtualCard, Vec<u8>) {
    let mut c = card();
    let dp = Dp::new(fault);
    let otpk = authenticate_and_prepare(&mut c, &dp).expect("prepared");
    let pir = load(&mut c, &dp.bpp_segments(&otpk, NEW_ICCID, 3000));
    (c, pir)
}

/// bppCommandId and errorReason of a PIR's errorResult.
fn pir_error(pir: &[u8]) -> (u8, u8) {
    let e = path(pir, &[0xBF37, 0xBF27, 0xA2, 0xA1]);
    (path(e, &[0x80])[0], path(e, &[0x81])[0])
}

fn auth_error(resp: &[u8]) -> u8 {
    path(resp, &[0xBF38, 0xA1, 0x02])[0]
}

#[test]
fn a_download_installs_the_profile_disabled_with_a_signed_pir_kept_as_notification() {
    let (mut c, pir) = download(DpFault::None);
    // PIR (SGP.22 §5.7.6): successResult, euiccSignPIR over the BF27 by the eUICC key.
    let data = path(&pir, &[0xBF37]);
    let tlvs = raw_tlvs(data).unwrap();
    let euicc = Certificate::load_pem_one(&pki_dir("ci").join("euicc.pem")).unwrap();
    verify(euicc.public_key(), tlvs[0], path(data, &[0x5F37])).unwrap();
    assert!(ber::find_path(&pir, &[0xBF37, 0xBF27, 0xA2, 0xA0, 0x4F])
        .unwrap()
        .is_some());
    // smdpOid: CERT.DPpb's registeredID (the fixture's 2.999.10).
    assert_eq!(path(&pir, &[0xBF37, 0xBF27, 0x06]), [0x88, 0x37, 0x0A]);
    let p = c.profiles().iter().find(|p| p.iccid == NEW_ICCID).unwrap();
    assert_eq!(
        (
            p.enabled,
            p.name.as_deref(),
            p.provider.as_deref(),
            p.class.as_str(),
            p.smdp.as_str()
        ),
        (
            false,
            Some("Test Profile"),
            Some("Test Operator"),
            "operational",
            "notify.test.example"
        )
    );
    // The notification: listed, retrieved as the PIR itself, removed by its number.
    let list = ok(&mut c, &tlv(0xBF28, &[]));
    let meta = path(&list, &[0xBF28, 0xA0, 0xBF2F]);
    assert_eq!(path(meta, &[0x81]), NotificationEvent::Install.bit_string());
    // The install's goes to the SM-DP+ of the session; later ones to the metadata's.
    assert_eq!(path(meta, &[0x0C]), b"smdp.test.example");
    let seq = path(meta, &[0x80]).to_vec();
    let got = ok(&mut c, &tlv(0xBF2B, &tlv(0xA0, &tlv(0x80, &seq))));
    assert_eq!(path(&got, &[0xBF2B, 0xA0]), &pir[..]);
    assert_eq!(
        ok(&mut c, &tlv(0xBF30, &tlv(0x80, &seq))),
        tlv(0xBF30, &tlv(0x80, &[0]))
    );
    assert_eq!(path(&ok(&mut c, &tlv(0xBF28, &[])), &[0xBF28, 0xA0]), b"");
    // Enabled, the profile's ICCID and the package's EF.IMSI are what the card shows.
    let mut enable = tlv(0x5A, &super::super::iccid_to_ef(NEW_ICCID));
    enable = tlv(0xBF31, &[tlv(0xA0, &enable), tlv(0x81, &[0])].concat());
    assert_eq!(ok(&mut c, &enable), tlv(0xBF31, &tlv(0x80, &[0])));
    assert_eq!(
        c.process(&hex::decode("00B082000A").unwrap())[..10],
        super::super::iccid_to_ef(NEW_ICCID)[..]
    );
    let imsi = c.process(&hex::decode("00A40804047FFF6F07").unwrap());
    assert_eq!(imsi[0], 0x61, "EF.IMSI selected: {imsi:02X?}");
    assert_eq!(
        c.process(&hex::decode("00B0000009").unwrap()),
        hex::decode("0829261011608457499000").unwrap()
    );
}

// The start of the ProfileHeader of GSMA's TS.48 v2 test profile (SAIP 2.1, BER-TLV):
// ICCID 8949449999999990049, coded 89 49 44 99 99 99 99 90 04 9F there, while its
// EF.ICCID (and so the StoreMetadata Iccid, tag 5A) is 98 94 44 99 99 99 99 09 40 F9.
#[test]
fn the_profile_header_iccid_reads_in_written_digit_order_as_ts48_codes_it() {
    let mut header = hex::decode("800102810101821F").unwrap();
    header.extend(b"GSMA Generic eUICC Test Profile");
    header.extend(hex::decode("830A8949449999999990049F").unwrap());
    let saip = Saip::read(&tlv(0xA0, &header)).unwrap();
    assert_eq!(saip.iccid, "8949449999999990049");
    // The same ICCID from StoreMetadata's EF.ICCID coding: the two agree.
    let mut meta = tlv(0x5A, &hex::decode("989444999999990940F9").unwrap());
    meta.extend(tlv(0x91, b"OsmocomSPN"));
    meta.extend(tlv(0x92, b"TS48"));
    assert_eq!(store_metadata(&meta).unwrap().iccid, saip.iccid);
}

#[test]
fn a_download_with_replace_session_keys_installs() {
    let (c, pir) = download(DpFault::ReplaceKeys);
    assert!(ber::find_path(&pir, &[0xBF37, 0xBF27, 0xA2, 0xA0])
        .unwrap()
        .is_some());
    assert!(c.profiles().iter().any(|p| p.iccid == NEW_ICCID));
}

// lpac's exchange on a logical channel: MANAGE CHANNEL open, SELECT ISD-R there, then
// GetEUICCChallenge as 81 E2 91 00 03 BF2E00 answered 61xx, fetched with 81 C0 00 00 xx
// (the STORE DATA's class kept for GET RESPONSE).
#[test]
fn get_response_in_the_proprietary_class_on_a_logical_channel_returns_the_answer() {
    let mut c = card();
    assert_eq!(
        c.process(&hex::decode("0070000001").unwrap()),
        [0x01, 0x90, 0x00]
    );
    let mut select = hex::decode("01A4040010").unwrap();
    select.extend(hex::decode(ISDR).unwrap());
    assert!(matches!(c.process(&select)[..], [0x61, _] | [0x90, 0x00]));
    let resp = c.process(&hex::decode("81E2910003BF2E00").unwrap());
    let [0x61, n] = resp[..] else {
        panic!("61xx expected: {resp:02X?}");
    };
    let got = c.process(&[0x81, 0xC0, 0x00, 0x00, n]);
    assert_eq!(got[got.len() - 2..], [0x90, 0x00]);
    assert_eq!(path(&got[..got.len() - 2], &[0xBF2E, 0x80]).len(), 16);
}

#[test]
fn every_answer_passes_through_61xx_and_get_response_over_256_bytes() {
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    let chal = ok(&mut c, &tlv(0xBF2E, &[]));
    let req = dp.authenticate_server(path(&chal, &[0xBF2E, 0x80]));
    assert!(
        req.len() > 255,
        "AuthenticateServer takes more than one block"
    );
    let (resp, sw) = es10(&mut c, &req);
    assert_eq!(sw, [0x90, 0x00]);
    assert!(resp.len() > 256, "{} bytes", resp.len());
    let signed1 = raw_tlvs(path(&resp, &[0xBF38, 0xA0])).unwrap()[0].to_vec();
    let euicc = Certificate::from_der(raw_tlvs(path(&resp, &[0xBF38, 0xA0])).unwrap()[2]).unwrap();
    assert_eq!(euicc.subject_serial_number(), Some(EID));
    verify(
        euicc.public_key(),
        &signed1,
        path(&resp, &[0xBF38, 0xA0, 0x5F37]),
    )
    .unwrap();
    // euiccSigned1 echoes the server's data and carries EUICCInfo2 and ctxParams1.
    assert_eq!(path(&signed1, &[0x30, 0x83]), b"smdp.test.example");
    assert_eq!(path(&signed1, &[0x30, 0xA0, 0x80]), b"MATCHING-ID-1");
    assert!(ber::find_path(&signed1, &[0x30, 0xBF22, 0xA9])
        .unwrap()
        .is_some());
}

#[test]
fn get_response_with_le_00_gives_at_most_256_bytes_then_61xx() {
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    let chal = ok(&mut c, &tlv(0xBF2E, &[]));
    let req = dp.authenticate_server(path(&chal, &[0xBF2E, 0x80]));
    let mut resp = Vec::new();
    for (i, b) in req.chunks(255).enumerate() {
        let p1 = if (i + 1) * 255 >= req.len() {
            0x91
        } else {
            0x11
        };
        let mut apdu = vec![0x80, 0xE2, p1, i as u8, b.len() as u8];
        apdu.extend_from_slice(b);
        resp = c.process(&apdu);
    }
    assert_eq!(resp[0], 0x61);
    let first = c.process(&[0x00, 0xC0, 0x00, 0x00, 0x00]);
    assert_eq!(first.len(), 256 + 2);
    assert_eq!(first[256], 0x61, "more to come");
}

#[test]
fn store_data_block_out_of_sequence_is_refused_and_the_command_dropped() {
    let mut c = card();
    assert_eq!(
        c.process(&[0x80, 0xE2, 0x11, 0x00, 0x03, 0xBF, 0x2E, 0x00]),
        [0x90, 0x00]
    );
    // Block 02 after 00: 6A86 (incorrect P1-P2).
    assert_eq!(
        c.process(&[0x80, 0xE2, 0x91, 0x02, 0x01, 0x00]),
        [0x6A, 0x86]
    );
    // The next command starts afresh at block 00.
    let (out, sw) = es10(&mut c, &tlv(0xBF3C, &[]));
    assert_eq!(
        (out, sw),
        (tlv(0xBF3C, &tlv(0x81, b"lpa.ds.gsma.com")), [0x90, 0x00])
    );
}

#[test]
fn padding_between_request_objects_is_read_as_the_tlv_parser_reads_it() {
    // ISO/IEC 7816-4 §5.2.2: 00/FF between objects; both views of a request agree.
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    let chal = ok(&mut c, &tlv(0xBF2E, &[]));
    let req = dp.authenticate_server(path(&chal, &[0xBF2E, 0x80]));
    let (tag, _, head) = header(&req).unwrap();
    let mut padded = vec![0xFF, 0x00];
    for t in raw_tlvs(&req[head..]).unwrap() {
        padded.extend_from_slice(t);
        padded.push(0xFF);
    }
    assert_eq!(raw_tlvs(&padded).unwrap().len(), 5);
    let resp = ok(&mut c, &tlv(tag, &padded));
    assert!(ber::find_path(&resp, &[0xBF38, 0xA0]).unwrap().is_some());
}

#[test]
fn euicc_info1_names_the_pki_ci_and_addresses_the_default_smdp() {
    let mut c = card_with("default_smdp = \"smdp.default.example\"", "");
    let info1 = ok(&mut c, &tlv(0xBF20, &[]));
    let ci = Certificate::load_pem_one(&pki_dir("ci").join("ci.pem")).unwrap();
    assert_eq!(path(&info1, &[0xBF20, 0x82]), [2, 2, 2]);
    assert_eq!(path(&info1, &[0xBF20, 0xA9, 0x04]), ci.ski().unwrap());
    assert_eq!(path(&info1, &[0xBF20, 0xAA, 0x04]), ci.ski().unwrap());
    let addr = ok(&mut c, &tlv(0xBF3C, &[]));
    assert_eq!(path(&addr, &[0xBF3C, 0x80]), b"smdp.default.example");
}

#[test]
fn authenticate_server_errors_carry_their_sgp22_codes() {
    for (fault, code) in [
        (DpFault::OtherCi, 1),
        (DpFault::BadSignature1, 2),
        (DpFault::WrongChallenge, 6),
        (DpFault::UnknownPkid, 7),
    ] {
        let mut c = card();
        let resp = authenticate_and_prepare(&mut c, &Dp::new(fault)).unwrap_err();
        assert_eq!(auth_error(&resp), code, "{fault:?}");
    }
    // No challenge asked for: noSessionContext.
    let mut c = card();
    let resp = ok(
        &mut c,
        &Dp::new(DpFault::None).authenticate_server(&[0; 16]),
    );
    assert_eq!(auth_error(&resp), 4);
}

#[test]
fn prepare_download_errors_carry_their_sgp22_codes() {
    for (fault, code) in [
        (DpFault::BadSignature2, 2),
        (DpFault::WrongTransactionId, 5),
    ] {
        let mut c = card();
        let resp = authenticate_and_prepare(&mut c, &Dp::new(fault)).unwrap_err();
        assert_eq!(path(&resp, &[0xBF21, 0xA1, 0x02]), [code], "{fault:?}");
    }
    // Without AuthenticateServer first: noSessionContext.
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    let resp = ok(
        &mut c,
        &dp.prepare_download(&tlv(0xBF38, &tlv(0xA0, &tlv(0x5F37, &[0; 64])))),
    );
    assert_eq!(path(&resp, &[0xBF21, 0xA1, 0x02]), [4]);
}

#[test]
fn bpp_failures_answer_the_pir_with_command_and_reason_and_install_nothing() {
    for (fault, want) in [
        (DpFault::BadSmdpSign, (0, 2)),
        (DpFault::BadCrt, (0, 4)),
        (DpFault::BadMac, (5, 8)),
        (DpFault::HeaderIccid, (5, 13)),
    ] {
        let (mut c, pir) = download(fault);
        assert_eq!(pir_error(&pir), want, "{fault:?}");
        assert!(
            !c.profiles().iter().any(|p| p.iccid == NEW_ICCID),
            "{fault:?}"
        );
        // Kept as a notification, signed, until removed.
        let list = ok(&mut c, &tlv(0xBF2B, &[]));
        assert_eq!(path(&list, &[0xBF2B, 0xA0]), &pir[..], "{fault:?}");
    }
}

#[test]
fn an_iccid_already_installed_fails_at_store_metadata() {
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    let otpk = authenticate_and_prepare(&mut c, &dp).unwrap();
    let pir = load(&mut c, &dp.bpp_segments(&otpk, "8949440000000000016", 500));
    assert_eq!(pir_error(&pir), (2, 9));
}

#[test]
fn a_package_beyond_the_free_memory_fails_with_insufficient_memory() {
    let mut c = card_with("free_nvm = 2000", "");
    let dp = Dp::new(DpFault::None);
    let otpk = authenticate_and_prepare(&mut c, &dp).unwrap();
    let pir = load(&mut c, &dp.bpp_segments(&otpk, NEW_ICCID, 5000));
    assert_eq!(pir_error(&pir), (5, 10));
    assert_eq!(c.profiles().len(), 1);
}

#[test]
fn a_card_muted_after_n_segments_stops_answering_mid_bpp() {
    let mut c = card_with("", "mute_after_segments = 3");
    let dp = Dp::new(DpFault::None);
    let otpk = authenticate_and_prepare(&mut c, &dp).unwrap();
    let segments = dp.bpp_segments(&otpk, NEW_ICCID, 500);
    for s in &segments[..3] {
        assert_eq!(ok(&mut c, s), b"");
    }
    let mut apdu = vec![0x80, 0xE2, 0x91, 0x00, segments[3].len() as u8];
    apdu.extend(&segments[3]);
    assert_eq!(c.respond(&apdu), Reply::Mute);
    assert!(c.is_mute());
}

#[test]
fn cancel_session_is_signed_and_ends_the_session() {
    let mut c = card();
    let dp = Dp::new(DpFault::None);
    authenticate_and_prepare(&mut c, &dp).unwrap();
    let mut req = tlv(0x80, &dp.tid);
    req.extend(tlv(0x81, &[1]));
    let resp = ok(&mut c, &tlv(0xBF41, &req));
    let ok_ = path(&resp, &[0xBF41, 0xA0]);
    let signed = raw_tlvs(ok_).unwrap()[0];
    assert_eq!(path(signed, &[0x30, 0x80]), &dp.tid[..]);
    assert_eq!(
        path(signed, &[0x30, 0x81]),
        [0x88, 0x37, 0x0A],
        "CERT.DPauth's OID"
    );
    let euicc = Certificate::load_pem_one(&pki_dir("ci").join("euicc.pem")).unwrap();
    verify(euicc.public_key(), signed, path(ok_, &[0x5F37])).unwrap();
    // The session is gone: a second cancel has nothing to cancel.
    let again = ok(&mut c, &tlv(0xBF41, &req));
    assert_eq!(path(&again, &[0xBF41, 0x81]), [127]);
}

#[test]
fn without_a_pki_download_is_refused_and_es10c_still_works() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("devices/cards/euicc.toml"),
    )
    .unwrap();
    let mut c = VirtualCard::new(CardImage::parse(&text).unwrap());
    let mut select = hex::decode("00A4040010").unwrap();
    select.extend(hex::decode(ISDR).unwrap());
    c.process(&select);
    let chal = ok(&mut c, &tlv(0xBF2E, &[]));
    let resp = ok(
        &mut c,
        &Dp::new(DpFault::None).authenticate_server(path(&chal, &[0xBF2E, 0x80])),
    );
    assert_eq!(auth_error(&resp), 7);
    let list = ok(&mut c, &tlv(0xBF2D, &[]));
    assert_eq!(ber::parse(path(&list, &[0xBF2D, 0xA0])).unwrap().len(), 2);
}

/// A double-vs-double check: this virtual eUICC against the test SM-DP+'s ES9+ handlers
/// (src/emu/smdp, written by another hand from the same spec), joined by a minimal relay
/// written here in place of an LPA. Both being test doubles, it proves they agree with
/// each other, not with a real eUICC or SM-DP+; the real LPA's tests run them behind
/// pcscd and HTTPS.
mod against_the_test_smdp {
    use super::*;
    use crate::emu::smdp::es9::{Pki as DpPki, Reply as DpReply, Smdp};
    use crate::emu::smdp::profiles::ProfilesFile;
    use crate::emu::smdp::Faults;
    use base64ct::{Base64, Encoding};
    use serde_json::{json, Value};

    const ADDRESS: &str = "127.0.0.1:8443";

    fn b64(b: &[u8]) -> Value {
        Value::String(Base64::encode_string(b))
    }

    fn field(v: &Value, name: &str) -> Vec<u8> {
        let text = v[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name} in {v}"));
        Base64::decode_vec(text).unwrap()
    }

    /// One ES9+ call as the relay makes it; the answer's JSON, Null for 204.
    fn call(dp: &mut Smdp, function: &str, body: Value) -> Value {
        let out = dp.handle(
            function,
            Some("gsma/rsp/v2.2.0"),
            body.to_string().as_bytes(),
        );
        match out.reply {
            DpReply::Json(v) => {
                let status = &v["header"]["functionExecutionStatus"]["status"];
                assert_eq!(status, "Executed-Success", "{function}: {v}");
                v
            }
            DpReply::NoContent => Value::Null,
            other => panic!("{function}: {other:?}"),
        }
    }

    fn smdp(faults: Faults) -> Smdp {
        let pki = DpPki::load(&pki_dir("ci")).unwrap();
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let profiles = ProfilesFile::load(&root.join("devices/smdp/profiles.toml")).unwrap();
        Smdp::new(vec![ADDRESS.into()], pki, profiles, faults)
    }

    /// The download of SGP.22 §3.1.3 relayed between the two: the PIR the card answered
    /// the BPP with, and the SM-DP+'s journal of the install notification.
    fn relay(c: &mut VirtualCard, dp: &mut Smdp, matching_id: &str) -> (Vec<u8>, Value) {
        let info1 = ok(c, &tlv(0xBF20, &[]));
        let chal = ok(c, &tlv(0xBF2E, &[]));
        let init = call(
            dp,
            "initiateAuthentication",
            json!({"smdpAddress": ADDRESS, "euiccChallenge": b64(path(&chal, &[0xBF2E, 0x80])),
                   "euiccInfo1": b64(&info1)}),
        );
        let tx = init["transactionId"].as_str().unwrap().to_string();
        let mut ctx = tlv(0x80, matching_id.as_bytes());
        ctx.extend(tlv(
            0xA1,
            &[tlv(0x80, &[0x35, 0x29, 0x06, 0x11]), tlv(0xA1, &[])].concat(),
        ));
        let req = [
            field(&init, "serverSigned1"),
            field(&init, "serverSignature1"),
            field(&init, "euiccCiPKIdToBeUsed"),
            field(&init, "serverCertificate"),
            tlv(0xA0, &ctx),
        ]
        .concat();
        let auth = ok(c, &tlv(0xBF38, &req));
        let client = call(
            dp,
            "authenticateClient",
            json!({"transactionId": tx, "authenticateServerResponse": b64(&auth)}),
        );
        let req = [
            field(&client, "smdpSigned2"),
            field(&client, "smdpSignature2"),
            field(&client, "smdpCertificate"),
        ]
        .concat();
        let prep = ok(c, &tlv(0xBF21, &req));
        let bound = call(
            dp,
            "getBoundProfilePackage",
            json!({"transactionId": tx, "prepareDownloadResponse": b64(&prep)}),
        );
        let bpp = field(&bound, "boundProfilePackage");
        let pir = load(c, &segments_of(&bpp));
        let out = dp.handle(
            "handleNotification",
            Some("gsma/rsp/v2.2.0"),
            json!({"pendingNotification": b64(&pir)})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(out.reply, DpReply::NoContent);
        (pir, out.journal.last().cloned().unwrap_or_default())
    }

    /// A BPP as the LPA sends it (SGP.22 §2.5.5; rsp.md's list): BF36 header ‖ BF23, A0
    /// whole, A1 header, each 88, A2 whole, A3 header, each 86.
    fn segments_of(bpp: &[u8]) -> Vec<Vec<u8>> {
        let (tag, _, head) = header(bpp).unwrap();
        assert_eq!(tag, 0xBF36);
        let parts = raw_tlvs(&bpp[head..]).unwrap();
        let mut out = vec![[&bpp[..head], parts[0]].concat()];
        for p in &parts[1..] {
            let (tag, _, h) = header(p).unwrap();
            match tag {
                0xA0 | 0xA2 => out.push(p.to_vec()),
                _ => {
                    out.push(p[..h].to_vec());
                    out.extend(raw_tlvs(&p[h..]).unwrap().into_iter().map(<[u8]>::to_vec));
                }
            }
        }
        out
    }

    #[test]
    fn double_vs_double_download_installs_and_the_smdp_verifies_the_pir() {
        let mut c = card();
        let mut dp = smdp(Faults::default());
        let (pir, journal) = relay(&mut c, &mut dp, "SIMGATE-TEST-BIG");
        assert!(ber::find_path(&pir, &[0xBF37, 0xBF27, 0xA2, 0xA0])
            .unwrap()
            .is_some());
        assert_eq!(
            (&journal["result"], &journal["verified"]),
            (&json!("success"), &json!(true)),
            "{journal}"
        );
        let p = c
            .profiles()
            .iter()
            .find(|p| p.iccid == "8900101000000000035")
            .unwrap();
        assert_eq!(p.name.as_deref(), Some("simgate test profile 3 (large)"));
        // The package's EF.IMSI (001010000000035) is the profile's.
        assert_eq!(p.files["3F00/7FFF/6F07"], "080910100000000053");
    }

    #[test]
    fn double_vs_double_bad_mac_stops_at_the_segment_with_scp03t_security_error() {
        let mut c = card();
        let faults = Faults {
            bad_mac: true,
            ..Faults::default()
        };
        let (pir, journal) = relay(&mut c, &mut smdp(faults), "SIMGATE-TEST-1");
        assert_eq!(pir_error(&pir), (5, 8));
        assert_eq!(
            journal["result"],
            json!({"bppCommandId": 5, "errorReason": 8})
        );
        assert_eq!(c.profiles().len(), 1);
    }
}
