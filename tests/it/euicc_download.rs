//! The virtual eUICC's download side (SGP.22 §3.1.3) on the real stack: `simgate emulate
//! card --pki` behind pcscd + vpcd, its PKI made by tests/rig/rsp-pki.sh at test time.
//! The download is relayed by the test itself between the card (through PC/SC) and the
//! test SM-DP+'s ES9+ handlers (src/emu/smdp, in process): a double-vs-double check of
//! the two emulators over the real card transport (T=0 61xx, 255-byte STORE DATA
//! blocks); simgate's own LPA has its tests in tests/it/esim_download.rs.

use crate::support::{self, Pcsc, TempDir};
use base64ct::{Base64, Encoding};
use serde_json::{json, Value};
use simgate::card::{tlv, CardTransport};
use simgate::emu::smdp::es9::{Pki as DpPki, Reply, Smdp};
use simgate::emu::smdp::profiles::ProfilesFile;
use simgate::emu::smdp::Faults;
use std::path::Path;
use std::process::Command;

const BLANK_EID: &str = "89049032123451234512345678910062";
const ISDR: &str = "A0000005591010FFFFFFFF8900000100";
const ADDRESS: &str = "127.0.0.1:8443";

/// A fresh PKI for `eid` (tests/rig/rsp-pki.sh).
fn pki(dir: &Path, eid: &str) {
    let out = Command::new("bash")
        .arg(support::repo().join("tests/rig/rsp-pki.sh"))
        .arg(dir)
        .arg(eid)
        .output()
        .expect("run rsp-pki.sh");
    assert!(
        out.status.success(),
        "rsp-pki.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// APDUs and command bytes sent to the card, for the figures of the download.
#[derive(Default, Debug)]
struct Count {
    apdus: u32,
    bytes: usize,
}

/// One ES10 request as STORE DATA blocks of at most 255 bytes (SGP.22 §5.7.2: P1 11 more
/// / 91 last, P2 the block number), the answer fetched with GET RESPONSE after 61xx.
fn es10(card: &mut dyn CardTransport, n: &mut Count, req: &[u8]) -> Vec<u8> {
    let blocks: Vec<&[u8]> = req.chunks(255).collect();
    let mut send = |apdu: Vec<u8>| {
        n.apdus += 1;
        n.bytes += apdu.len();
        card.transmit(&apdu).expect("card answers")
    };
    let mut resp = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let p1 = if i + 1 == blocks.len() { 0x91 } else { 0x11 };
        let mut apdu = vec![0x80, 0xE2, p1, i as u8, b.len() as u8];
        apdu.extend_from_slice(b);
        resp = send(apdu);
        if p1 == 0x11 {
            assert_eq!(resp, [0x90, 0x00], "block {i}");
        }
    }
    let mut data = Vec::new();
    while let [.., 0x61, le] = resp[..] {
        data.extend_from_slice(&resp[..resp.len() - 2]);
        resp = send(vec![0x00, 0xC0, 0x00, 0x00, le]);
    }
    let (body, sw) = resp.split_at(resp.len() - 2);
    assert_eq!(sw, [0x90, 0x00], "ES10 request {:02X?}", &req[..2]);
    data.extend_from_slice(body);
    data
}

fn b64(b: &[u8]) -> Value {
    Value::String(Base64::encode_string(b))
}

fn field(v: &Value, name: &str) -> Vec<u8> {
    Base64::decode_vec(v[name].as_str().unwrap_or_else(|| panic!("no {name}: {v}"))).unwrap()
}

fn call(dp: &mut Smdp, function: &str, body: Value) -> Value {
    let out = dp.handle(
        function,
        Some("gsma/rsp/v2.2.0"),
        body.to_string().as_bytes(),
    );
    match out.reply {
        Reply::Json(v) => {
            let status = &v["header"]["functionExecutionStatus"]["status"];
            assert_eq!(status, "Executed-Success", "{function}: {v}");
            v
        }
        other => panic!("{function}: {other:?}"),
    }
}

/// The tag, header size and value length of a TLV whose value may be absent.
fn header(d: &[u8]) -> (u32, usize, usize) {
    let mut i = 1;
    let mut tag = u32::from(d[0]);
    if d[0] & 0x1F == 0x1F {
        loop {
            tag = tag << 8 | u32::from(d[i]);
            i += 1;
            if d[i - 1] & 0x80 == 0 {
                break;
            }
        }
    }
    let (len, n) = match d[i] {
        l @ 0..=0x7F => (usize::from(l), 1),
        l => {
            let k = usize::from(l & 0x7F);
            let v = d[i + 1..i + 1 + k]
                .iter()
                .fold(0, |a, b| a << 8 | usize::from(*b));
            (v, 1 + k)
        }
    };
    (tag, i + n, len)
}

fn whole_tlvs(mut d: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !d.is_empty() {
        let (_, h, n) = header(d);
        out.push(d[..h + n].to_vec());
        d = &d[h + n..];
    }
    out
}

/// The BPP's ES10b segments (SGP.22 §2.5.5): BF36 header ‖ BF23, A0, A1 header, each 88,
/// A2, A3 header, each 86.
fn segments(bpp: &[u8]) -> Vec<Vec<u8>> {
    let (tag, h, _) = header(bpp);
    assert_eq!(tag, 0xBF36);
    let parts = whole_tlvs(&bpp[h..]);
    let mut out = vec![[&bpp[..h], &parts[0][..]].concat()];
    for p in &parts[1..] {
        let (tag, ph, _) = header(p);
        if tag == 0xA0 || tag == 0xA2 {
            out.push(p.clone());
        } else {
            out.push(p[..ph].to_vec());
            out.extend(whole_tlvs(&p[ph..]));
        }
    }
    out
}

/// The relay's environment: the PC/SC socket of the rig's pcscd, the reader, the PKI.
const RELAY_ENV: [&str; 3] = [
    "PCSCLITE_CSOCK_NAME",
    "SIMGATE_RELAY_READER",
    "SIMGATE_RELAY_PKI",
];

#[test]
fn a_download_through_pcscd_installs_a_profile_that_esim_list_shows() {
    let dir = TempDir::new("euicc-pki");
    pki(dir.path(), BLANK_EID);
    let pcsc = Pcsc::start();
    let pki_arg = dir.path().to_string_lossy().into_owned();
    let _card = pcsc.insert_with(0, "euicc-blank.toml", &["--pki", &pki_arg]);
    // The relay is a PC/SC client of the rig's private pcscd. libpcsclite reads its
    // socket's name from the environment once per process, so the relay runs in a child
    // of this test binary (the ignored test below), never in this shared process.
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "euicc_download::relay_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(RELAY_ENV[0], &pcsc.sock)
        .env(RELAY_ENV[1], pcsc.reader(0))
        .env(RELAY_ENV[2], dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "relay: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("relay "))
        .unwrap_or_else(|| {
            panic!(
                "no relay line: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    eprintln!("download through pcscd: {line}");
    assert!(line.contains(" result=success"), "{line}");

    // What a user sees: the profile listed, disabled, with the metadata's names.
    let out = pcsc
        .simgate()
        .args(["esim", "list", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["iccid"] == "8900101000000000019")
        .unwrap_or_else(|| panic!("not listed: {list}"))
        .clone();
    assert_eq!(p["state"], "disabled", "{p}");
    assert_eq!(p["name"], "simgate test profile 1", "{p}");
}

/// The relay of the test above, run as its child (does nothing without its
/// environment): the download between the card through PC/SC and the test SM-DP+'s
/// handlers; prints `relay apdus=N bytes=M result=success|error`.
#[test]
#[ignore = "run by a_download_through_pcscd_installs_a_profile_that_esim_list_shows"]
fn relay_child() {
    let (Ok(reader), Ok(pki_dir)) = (std::env::var(RELAY_ENV[1]), std::env::var(RELAY_ENV[2]))
    else {
        eprintln!(
            "relay_child: not run as the relay (no {} in the environment)",
            RELAY_ENV[1]
        );
        return;
    };
    let mut dp = Smdp::new(
        vec![ADDRESS.into()],
        DpPki::load(Path::new(&pki_dir)).unwrap(),
        ProfilesFile::load(&support::repo().join("devices/smdp/profiles.toml")).unwrap(),
        Faults::default(),
    );
    let ctx = simgate::reader::establish().unwrap();
    let reader = simgate::reader::resolve(&ctx, &reader).unwrap();
    let limit = std::time::Duration::from_secs(120);
    let (pir, count) = simgate::reader::with_card(&reader, limit, move |card| {
        let mut n = Count::default();
        let mut select = hex::decode("00A4040010").unwrap();
        select.extend(hex::decode(ISDR).unwrap());
        let r = card.transmit(&select).unwrap();
        assert!(matches!(r[..], [0x61, _] | [0x90, 0x00]), "{r:02X?}");
        if let [0x61, le] = r[..] {
            card.transmit(&[0x00, 0xC0, 0x00, 0x00, le]).unwrap();
        }
        let info1 = es10(card, &mut n, &tlv::encode(0xBF20, &[]));
        let chal = es10(card, &mut n, &tlv::encode(0xBF2E, &[]));
        let chal = tlv::find_path(&chal, &[0xBF2E, 0x80]).unwrap().unwrap();
        let init = call(
            &mut dp,
            "initiateAuthentication",
            json!({"smdpAddress": ADDRESS, "euiccChallenge": b64(chal), "euiccInfo1": b64(&info1)}),
        );
        let tx = init["transactionId"].clone();
        let device = [
            tlv::encode(0x80, &[0x35, 0x29, 0x06, 0x11]),
            tlv::encode(0xA1, &[]),
        ]
        .concat();
        let ctx1 = [
            tlv::encode(0x80, b"SIMGATE-TEST-1"),
            tlv::encode(0xA1, &device),
        ]
        .concat();
        let auth = [
            field(&init, "serverSigned1"),
            field(&init, "serverSignature1"),
            field(&init, "euiccCiPKIdToBeUsed"),
            field(&init, "serverCertificate"),
            tlv::encode(0xA0, &ctx1),
        ]
        .concat();
        let auth = es10(card, &mut n, &tlv::encode(0xBF38, &auth));
        let client = call(
            &mut dp,
            "authenticateClient",
            json!({"transactionId": tx, "authenticateServerResponse": b64(&auth)}),
        );
        let prep = [
            field(&client, "smdpSigned2"),
            field(&client, "smdpSignature2"),
            field(&client, "smdpCertificate"),
        ]
        .concat();
        let prep = es10(card, &mut n, &tlv::encode(0xBF21, &prep));
        let bound = call(
            &mut dp,
            "getBoundProfilePackage",
            json!({"transactionId": tx, "prepareDownloadResponse": b64(&prep)}),
        );
        let mut pir = Vec::new();
        for s in segments(&field(&bound, "boundProfilePackage")) {
            pir = es10(card, &mut n, &s);
            if !pir.is_empty() {
                break;
            }
        }
        let notified = dp.handle(
            "handleNotification",
            Some("gsma/rsp/v2.2.0"),
            json!({"pendingNotification": b64(&pir)})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(notified.reply, Reply::NoContent);
        let journal = notified.journal.last().cloned().unwrap_or_default();
        assert_eq!(journal["verified"], json!(true), "{journal}");
        ((pir, n), false)
    })
    .unwrap();
    let result = tlv::find_path(&pir, &[0xBF37, 0xBF27, 0xA2])
        .unwrap()
        .unwrap();
    let result = if result[0] == 0xA0 {
        "success"
    } else {
        "error"
    };
    println!(
        "relay apdus={} bytes={} result={result}",
        count.apdus, count.bytes
    );
}

#[test]
fn emulate_card_and_modem_refuse_a_pki_made_for_another_eid() {
    let dir = TempDir::new("euicc-pki-other");
    pki(dir.path(), "89049032123451234512345678901235");
    let card = Command::new(support::simgate_bin())
        .args(["emulate", "card", "--vpcd", "127.0.0.1:1", "--image"])
        .arg(support::repo().join("devices/cards/euicc-blank.toml"))
        .arg("--pki")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&card.stderr);
    assert!(!card.status.success());
    assert!(
        err.contains("euicc.pem is for EID 89049032123451234512345678901235")
            && err.contains(BLANK_EID),
        "{err}"
    );
    // The modem's eSIM has the other EID: the same PKI is refused there for the blank's.
    let blank = TempDir::new("euicc-pki-blank");
    pki(blank.path(), BLANK_EID);
    let modem = Command::new(support::simgate_bin())
        .args(["emulate", "modem", "--profile", "generic-csim", "--pki"])
        .arg(blank.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&modem.stderr);
    assert!(!modem.status.success());
    assert!(
        err.contains(&format!("euicc.pem is for EID {BLANK_EID}")),
        "{err}"
    );
}
