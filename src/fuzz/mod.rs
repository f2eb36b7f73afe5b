//! Fuzz targets: one function per parser of outside input (modem bytes, card responses,
//! platform payloads, the TOML files a user edits, broker URLs), each taking arbitrary
//! bytes and checking its invariants by panicking. The same functions are driven three
//! ways: by libFuzzer through cargo-fuzz (fuzz/, `make fuzz`), by the corpus replay
//! (every file under tests/fuzz/corpus/<target>/, a unit test here), and by the bounded
//! structure-aware property tests of `props` (`make test`).
//!
//! Beyond "no panic", each target checks what the parser promises: parse → print →
//! parse round-trips where a printer exists, the streaming AT parser framing the same
//! however the input is split, every ICCID that leaves a parser being one the contract
//! accepts (`contract::valid_iccid`), bounded work on a card that answers anything.
//!
//! Nothing but tests imports this module (the daemon's property test takes its
//! generators); it imports whatever it tests.

pub mod gen;
#[cfg(test)]
pub(crate) mod props;

use crate::at::command::{self, AtCommand};
use crate::at::parser::{self, Field, Frame};
use crate::card::{
    self, apdu, es10, euicc, iccid::Iccid, subscriber, tlv, CardError, CardTransport,
};
use crate::config::{BrokerUrl, Config, ConfigError};
use crate::contract;
use crate::modem::{profile::Profile, reply};

/// A target: arbitrary bytes in, a panic when an invariant fails.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and of its cargo-fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("at_stream", at_stream),
    ("at_reply", at_reply),
    ("at_command", at_command),
    ("tlv", tlv_es10),
    ("apdu", apdu_responses),
    ("ef", ef),
    ("contract_json", contract_json),
    ("config_toml", config_toml),
    ("modem_profile", modem_profile),
    ("card_image", card_image),
    ("broker_url", broker_url),
    ("emu_rsp", emu_rsp),
    ("euicc", euicc),
    ("rsp", rsp_answers),
    ("es9_json", es9_json),
    ("sms_pdu", sms_pdu),
];

/// Run the target called `name`; `false` when there is none.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(n, _)| *n == name) {
        Some((_, f)) => {
            f(data);
            true
        }
        None => false,
    }
}

/// A frame the connection keeps (the parser's borrow of its buffer, owned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Line(String),
    Prompt,
    Garbage(Vec<u8>),
}

impl From<Frame<'_>> for Owned {
    fn from(f: Frame<'_>) -> Owned {
        match f {
            Frame::Line(s) => Owned::Line(s.to_string()),
            Frame::Prompt => Owned::Prompt,
            Frame::Garbage(g) => Owned::Garbage(g.to_vec()),
        }
    }
}

/// Frame a stream the way `at::conn::AtConnection` does: bytes arrive in chunks ending
/// at `cuts` (increasing offsets into `data`), and after each chunk every complete frame
/// is taken out of the buffer. Returns the frames and the bytes left unframed. Checks
/// that every frame consumes at least one byte and no more than the buffer holds.
pub fn feed(data: &[u8], cuts: &[usize]) -> (Vec<Owned>, usize) {
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&data.len())) {
        let to = to.clamp(from, data.len());
        buf.extend_from_slice(&data[from..to]);
        from = to;
        while let Some((f, used)) = parser::frame(&buf) {
            assert!(
                used > 0 && used <= buf.len(),
                "frame consumed {used} of {}",
                buf.len()
            );
            out.push(Owned::from(f));
            buf.drain(..used);
        }
    }
    (out, buf.len())
}

/// The AT stream parser: the same frames and the same remainder however the bytes are
/// split (whole; byte by byte for short inputs; at cuts drawn from the input).
pub fn at_stream(data: &[u8]) {
    let whole = feed(data, &[]);
    if data.len() <= 512 {
        let bytewise: Vec<usize> = (1..data.len()).collect();
        assert_eq!(feed(data, &bytewise), whole, "byte by byte");
    }
    let mut rng = gen::Rng::new(contract::payload_hash(data));
    let cuts = rng.splits(data.len());
    assert_eq!(feed(data, &cuts), whole, "split at {cuts:?}");
    for f in &whole.0 {
        match f {
            Owned::Line(l) => {
                assert!(!l.is_empty() && l.len() < parser::MAX_LINE, "line {l:?}");
                assert!(!l.contains(['\r', '\n']), "terminator inside {l:?}");
            }
            Owned::Garbage(g) => assert!(g.len() <= parser::MAX_LINE),
            Owned::Prompt => {}
        }
    }
}

/// Lines of text out of arbitrary bytes.
fn lines_of(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The reply parsers (TS 27.007 information text and finals): no panic; a final prints
/// back to itself; every ICCID they produce is one the contract accepts.
pub fn at_reply(data: &[u8]) {
    let vendor = ["ABORTED".to_string()];
    let lines = lines_of(data);
    for l in &lines {
        if let Some(f) = parser::final_result(l, &vendor) {
            let printed = f.to_string();
            assert_eq!(
                parser::final_result(&printed, &vendor),
                Some(f),
                "{l:?} printed {printed:?}"
            );
        }
        let _ = parser::param_list(l);
        if let Some((name, _)) = l.split_once(':') {
            let _ = parser::fields(l, &format!("{name}:"));
        }
        let _ = reply::registration(l, true);
        let _ = reply::registration(l, false);
        if let Some(s) = reply::signal(l) {
            assert_eq!(s.dbm.is_some(), s.csq <= 31);
        }
        let _ = reply::identity_text(l);
    }
    let _ = reply::best_registration(&lines);
    let _ = reply::operator(&lines);
    let _ = reply::pin_state(&lines);
    for prefix in [Some("+QCCID:"), Some("+ICCID:"), Some("+CCID:"), None] {
        if let Some(i) = reply::vendor_iccid(&lines, prefix) {
            assert!(
                contract::valid_iccid(i.as_str()),
                "ICCID {i} from {lines:?}"
            );
        }
    }
    let _ = reply::crsm(&lines);
    let _ = reply::contexts(&lines);
    let _ = reply::counters(&lines, "+QGDCNT:", 0, 1);
    let _ = reply::channel(&lines);
    let _ = reply::cgla(&lines);
    if let Some(eid) = reply::eid(data) {
        assert_eq!(eid.len(), 32);
    }
}

/// Command text: a checked line splits into checked commands that join into a line
/// that splits and joins back to itself; any value, quoted, makes a valid command and is read back as itself.
pub fn at_command(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = AtCommand::new(&text) {
        let atoms = c.atoms();
        for a in &atoms {
            assert!(AtCommand::new(a.as_str()).is_ok(), "atom {a} of {c}");
        }
        // Basic commands run together stay one atom (`AtCommand::atoms`), so the round
        // trip holds from the joined line on: its atoms join back to it.
        let line = command::join(&atoms);
        assert_eq!(command::join(&line.atoms()), line, "{c}");
        let _ = c.reply_prefixes();
    }
    let quoted = command::quote(&text);
    let line = format!("AT+CPOL={quoted}");
    assert!(AtCommand::new(&line).is_ok(), "{line:?}");
    assert_eq!(
        parser::fields(&format!("+CPOL: {quoted}"), "+CPOL:"),
        Some(vec![Field::Str(text.to_string())]),
        "{quoted}"
    );
    let _ = command::expand(&text, &[("slot", 1), ("cid", 3)]);
}

/// BER-TLV and the ES10 answers read with it: parse → encode → parse gives the same
/// objects, at every level; an error's offset lies inside the input.
pub fn tlv_es10(data: &[u8]) {
    fn walk(data: &[u8], depth: usize) {
        match tlv::parse(data) {
            Ok(objs) => {
                let encoded: Vec<u8> = objs
                    .iter()
                    .flat_map(|t| tlv::encode(t.tag, t.value))
                    .collect();
                assert_eq!(tlv::parse(&encoded).as_ref(), Ok(&objs));
                for t in &objs {
                    if t.is_constructed() && depth < 4 {
                        walk(t.value, depth + 1);
                    }
                }
                if let Some(first) = objs.first() {
                    let _ = tlv::find_path(data, &[first.tag, 0x5A]);
                }
            }
            Err(e) => assert!(e.offset < data.len(), "{e} in {} bytes", data.len()),
        }
    }
    walk(data, 0);
    if let Some(eid) = euicc::Eid::from_bytes(data) {
        assert_eq!(eid.check_ok(), euicc::eid_check_ok(eid.as_str()));
    }
    // The ES10b/ES10c answers of src/card/es10.rs: a profile's ICCID out of any answer
    // is a key the contract accepts, and one that the request encoder gives back as the
    // same 10 bytes it came from.
    if let Ok(profiles) = es10::parse_profiles_info(data) {
        for p in profiles {
            assert!(
                contract::valid_iccid(&p.iccid),
                "profile ICCID {:?}",
                p.iccid
            );
        }
    }
    if data.len() >= 10 {
        if let Ok(iccid) = es10::iccid_from_bytes(&data[..10]) {
            let again = es10::iccid_from_bytes(&es10::iccid_bytes(&iccid));
            assert_eq!(again.as_ref().map(|i| i.as_str()), Ok(iccid.as_str()));
        }
    }
    for op in [
        es10::Operation::Enable,
        es10::Operation::Disable,
        es10::Operation::Delete,
        es10::Operation::Nickname,
    ] {
        let _ = es10::parse_result(op, data);
    }
    let _ = es10::parse_euicc_info2(data);
    let _ = es10::parse_notification_list(data);
    let _ = es10::parse_retrieved(data);
    let _ = es10::parse_removed(data);
}

/// A card that answers with whatever the fuzzer says: each answer is one length byte
/// and that many bytes; when they run out, the card is pulled.
#[derive(Debug)]
pub struct ScriptedCard<'a> {
    script: &'a [u8],
    pub transmitted: usize,
}

impl<'a> ScriptedCard<'a> {
    pub fn new(script: &'a [u8]) -> ScriptedCard<'a> {
        ScriptedCard {
            script,
            transmitted: 0,
        }
    }
}

impl CardTransport for ScriptedCard<'_> {
    fn transmit(&mut self, _command: &[u8]) -> Result<Vec<u8>, CardError> {
        self.transmitted += 1;
        let (&len, rest) = self.script.split_first().ok_or(CardError::Removed)?;
        let len = usize::from(len).min(rest.len());
        let (answer, rest) = rest.split_at(len);
        self.script = rest;
        Ok(answer.to_vec())
    }
}

/// Most APDUs one identification may send: every command of the engine (ICCID, kind,
/// every ISD-R AID, EID, profiles, IMSI, SPN, channel management) with its T=0
/// follow-ups. A card that answers anything must not make it loop.
const MAX_IDENTIFY_APDUS: usize = 400;

/// APDU responses and the whole identification over a card answering anything: no
/// panic, bounded work, and an ICCID only when the contract accepts it.
pub fn apdu_responses(data: &[u8]) {
    if let Ok(r) = apdu::Response::parse(data, "FUZZ") {
        assert_eq!(r.data.len() + 2, data.len());
    }
    let mut ch = apdu::Channel::new(ScriptedCard::new(data));
    let _ = ch.send(&card::Apdu::new(0, 0xB0, 0x82, 0).with_le(10), "FUZZ");
    // One command, a 6Cxx repeat, at most 16 GET RESPONSEs.
    assert!(ch.apdus() <= 18, "{} APDUs for one command", ch.apdus());
    assert_eq!(ch.commands(), 1);
    let mut card = ScriptedCard::new(data);
    if let Ok(id) = card::identify(&mut card, &card::Options::default()) {
        if let Some(i) = &id.iccid {
            assert!(contract::valid_iccid(i.as_str()), "ICCID {i}");
        }
        assert!(id.apdus_total as usize == card.transmitted);
    }
    assert!(
        card.transmitted <= MAX_IDENTIFY_APDUS,
        "{}",
        card.transmitted
    );
}

/// Elementary files: EF.ICCID and an ICCID's text, EF.IMSI, EF.SPN, the ATR. An ICCID
/// decoded is one the contract accepts, prints to digits that parse back to it, and
/// encodes back to an EF that decodes to it.
pub fn ef(data: &[u8]) {
    let check = |i: &Iccid, from: &dyn std::fmt::Debug| {
        assert!(contract::valid_iccid(i.as_str()), "ICCID {i} from {from:?}");
        assert_eq!(Iccid::from_digits(&i.to_string()).as_ref(), Ok(i));
        let raw = crate::emu::vcard::card::iccid_to_ef(i.as_str());
        assert_eq!(Iccid::from_ef(&raw).as_ref(), Ok(i), "EF {raw:02X?}");
    };
    if let Ok(i) = Iccid::from_ef(data) {
        check(&i, &data);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(i) = Iccid::from_digits(&text) {
        check(&i, &text);
    }
    if let Some(imsi) = subscriber::decode_imsi(data) {
        assert!((6..=15).contains(&imsi.len()) && imsi.bytes().all(|b| b.is_ascii_digit()));
        let _ = subscriber::home_operator(&imsi);
    }
    if let Some(spn) = subscriber::decode_spn(data) {
        assert!(!spn.is_empty() && spn.trim() == spn);
    }
    let _ = card::atr::declares_euicc(data);
}

/// A fixed "now" for the contract target, so a corpus file means the same each run.
pub const NOW: u64 = 1_790_000_000;

/// Command and platform-record JSON (and a topic before the first newline): an accepted
/// command's fields are valid; a refusal keeps only valid ids; an accepted record prints
/// and parses back to itself.
pub fn contract_json(data: &[u8]) {
    let (topic, payload) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (String::from_utf8_lossy(&data[..at]), &data[at + 1..]),
        None => (Default::default(), data),
    };
    let topics = contract::Topics::new("gw-1");
    let _ = topics.inbound(&topic);
    let _ = topics.outbound(&topic);
    for payload in [payload, data] {
        match contract::parse_command(payload, NOW) {
            Ok(c) => {
                assert!(contract::valid_command_id(&c.id) && contract::valid_iccid(&c.iccid));
                assert!(c.expires_at > NOW && c.expires_at <= NOW + contract::COMMAND_MEMORY_SECS);
            }
            Err(r) => {
                assert!(r.id.as_deref().is_none_or(contract::valid_command_id));
                assert!(r.iccid.as_deref().is_none_or(contract::valid_iccid));
                assert!(!r.reason.is_empty());
            }
        }
        if let Ok(Some(rec)) = contract::parse_platform_record(payload) {
            let printed = serde_json::to_vec(&contract::PlatformMsg {
                v: contract::SCHEMA_VERSION,
                record: rec.clone(),
            })
            .expect("a record serialises");
            assert_eq!(
                contract::parse_platform_record(&printed).map_err(|r| r.reason),
                Ok(Some(rec)),
                "{}",
                String::from_utf8_lossy(&printed)
            );
        }
    }
}

/// The configuration file: an error names the file; an accepted file is checked
/// without panicking.
pub fn config_toml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, "fuzz.toml") {
        Ok(c) => {
            let _ = c.validate("fuzz.toml");
        }
        Err(ConfigError::Parse { file, .. }) => assert!(file.starts_with("fuzz.toml"), "{file}"),
        Err(e) => panic!("parse gave {e}"),
    }
}

/// A modem profile: an accepted one has only valid command lines, its slot template
/// expands for every slot, and matching does not panic.
pub fn modem_profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = Profile::parse("fuzz.toml", &text) {
        let _ = p.matches("Quectel", "EC25");
        for c in &p.init.commands {
            assert!(AtCommand::new(c).is_ok(), "{c}");
        }
        assert!(AtCommand::new(&p.registration.command).is_ok());
        if let Some(s) = &p.slots {
            for n in s.first..s.first.saturating_add(s.count.min(16)) {
                assert!(command::expand(&s.select, &[("slot", u64::from(n))]).is_ok());
            }
        }
    }
}

/// A card image: an accepted one becomes a virtual card that the identification engine
/// reads without panicking and within its APDU bound.
pub fn card_image(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(image) = crate::emu::vcard::CardImage::parse(&text) {
        let mut vc = crate::emu::vcard::VirtualCard::new(image);
        if let Ok(id) = card::identify(&mut vc, &card::Options::default()) {
            assert!(id.apdus_total as usize <= MAX_IDENTIFY_APDUS);
        }
    }
}

/// A broker URL: an accepted one has a host of host-name or IP-literal characters, and
/// prints to a URL that parses back to it.
pub fn broker_url(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = BrokerUrl::parse(&text) {
        assert!(!u.host.is_empty());
        let printed = u.to_string();
        assert_eq!(
            BrokerUrl::parse(&printed).as_ref(),
            Ok(&u),
            "{text:?} → {printed}"
        );
    }
}

/// The emulators' RSP parsers (src/emu/rsp, src/emu/smdp), fed what an LPA or a
/// peer could send: the bytes as DER (objects print back to their bytes; a certificate;
/// a BSP segment under fixed keys) and as the body of every ES9+ function of a fresh
/// test SM-DP+, which answers each with a JSON status — never a panic, never a dropped
/// connection or a bound package without a session.
pub fn emu_rsp(data: &[u8]) {
    use crate::emu::rsp::{der, Bsp, Certificate, SessionKeys};
    use crate::emu::smdp::es9::{Faults, Pki, Reply, Smdp, FUNCTIONS};
    use crate::emu::smdp::profiles::ProfilesFile;
    use std::sync::OnceLock;

    if let Ok(objects) = der::all(data) {
        for d in objects {
            assert_eq!(der::encode(d.tag, d.value), d.raw, "{data:02x?}");
        }
    }
    let _ = Certificate::from_der(data);
    let keys = SessionKeys {
        s_enc: [1; 16],
        s_mac: [2; 16],
        initial_mcv: [3; 16],
    };
    let _ = Bsp::new(&keys).verify_and_decrypt(data);
    let _ = Bsp::new(&keys).verify_mac_only(data);

    // The PKI and profiles are read once (files of the repository); the server is new
    // each run, so no session outlives its input.
    static LOADED: OnceLock<(Pki, ProfilesFile)> = OnceLock::new();
    let (pki, profiles) = LOADED.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        (
            Pki::load(&root.join("tests/fixtures/rsp/pki")).expect("the fixture PKI"),
            ProfilesFile::load(&root.join("devices/smdp/profiles.toml"))
                .expect("the shipped profiles"),
        )
    });
    let mut smdp = Smdp::new(
        vec!["127.0.0.1:8443".into()],
        pki.clone(),
        profiles.clone(),
        Faults::default(),
    );
    for function in FUNCTIONS {
        let out = smdp.handle(function, Some("gsma/rsp/v2.2.0"), data);
        match out.reply {
            Reply::Json(v) => {
                let status = &v["header"]["functionExecutionStatus"]["status"];
                assert!(status == "Executed-Success" || status == "Failed", "{v}");
                if function != "initiateAuthentication" && function != "handleNotification" {
                    // Nothing but initiateAuthentication opens a session: every later
                    // function fails on a server that has none (or on the one this
                    // input's initiateAuthentication opened, whose id it cannot know).
                    assert_eq!(status, "Failed", "{function}: {v}");
                }
            }
            Reply::NoContent => assert_eq!(function, "handleNotification"),
            other => panic!("{function}: {other:?}"),
        }
    }
}

/// The virtual eUICC's ES10b side (src/emu/vcard/download.rs), fed what an LPA could
/// send, to a card holding the fixture PKI: the bytes as one ES10 request in STORE DATA
/// blocks, again after a challenge (AuthenticateServer, PrepareDownload, CancelSession
/// parse them), and as LoadBoundProfilePackage segments. Every answer is a status word
/// of STORE DATA (9000 with or without data, 6A80 wrong data, 6A86 a block out of
/// order), and nothing is installed: no input carries a valid signature or MAC.
pub fn euicc(data: &[u8]) {
    use crate::emu::vcard::{CardImage, EuiccPki, VirtualCard};
    use std::sync::{Arc, OnceLock};

    static PKI: OnceLock<Arc<EuiccPki>> = OnceLock::new();
    let pki = PKI.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/rsp/euicc-pki/ci");
        Arc::new(EuiccPki::load(&dir).expect("the fixture eUICC PKI"))
    });
    let image = "name = \"fuzz\"\nkind = \"uicc\"\natr = \"3B00\"\nt0_procedures = false\n\
                 [euicc]\nisdr_aid = \"A0000005591010FFFFFFFF8900000100\"\n\
                 eid = \"89049032123451234512345678901235\"\nfree_nvm = 4096\n";
    let image = CardImage::parse(image).expect("the fuzz card image");
    let mut card = VirtualCard::new(image).with_pki(pki.clone());
    let mut select = vec![0x00, 0xA4, 0x04, 0x00, 0x10];
    select.extend_from_slice(&[
        0xA0, 0x00, 0x00, 0x05, 0x59, 0x10, 0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x00, 0x00, 0x01,
        0x00,
    ]);
    card.process(&select);
    let mut send = |request: &[u8]| {
        let blocks: Vec<&[u8]> = request.chunks(255).collect();
        for (i, b) in blocks.iter().enumerate() {
            let last = i + 1 == blocks.len();
            let mut apdu = vec![0x80, 0xE2, if last { 0x91 } else { 0x11 }, i as u8];
            apdu.push(b.len() as u8);
            apdu.extend_from_slice(b);
            let resp = card.process(&apdu);
            let sw = &resp[resp.len().saturating_sub(2)..];
            assert!(
                matches!(sw, [0x90, 0x00] | [0x6A, 0x80] | [0x6A, 0x86]),
                "{resp:02X?} to {apdu:02X?}"
            );
            assert!(last || resp == [0x90, 0x00], "block {i}: {resp:02X?}");
        }
    };
    send(data);
    send(&[0xBF, 0x2E, 0x00]);
    send(data);
    // A BPP's first segment (the BF36 header), then the bytes as the next ones.
    send(&[0xBF, 0x36, 0x82, 0x10, 0x00]);
    send(data);
    assert!(card.profiles().is_empty(), "installed from {data:02X?}");
}

/// The eUICC's answers of a profile download and the bound profile package (src/card/
/// es10b.rs): bounded, and a package that splits gives back exactly its own bytes when
/// its segments are joined (SGP.22 §2.5.5: the LPA relays it unchanged).
pub fn rsp_answers(data: &[u8]) {
    use crate::card::es10b;
    if let Ok(segs) = es10b::bpp_segments(data) {
        let joined: Vec<u8> = segs.iter().flat_map(|s| s.bytes.iter().copied()).collect();
        assert_eq!(joined, data, "segments rejoin to the package");
        // Oversize 86 segments are relayed, but always said: the warning's list holds
        // exactly the 86s over SGP.22's 1020 bytes.
        let said = es10b::oversize_86(&segs);
        let over = segs
            .iter()
            .filter(|s| s.kind == es10b::SegmentKind::ProfileElements)
            .filter(|s| s.bytes.first() == Some(&0x86) && s.bytes.len() > es10b::MAX_86)
            .count();
        assert_eq!(said.len(), over, "every oversize 86 is said");
    }
    let _ = es10b::parse_challenge(data);
    let _ = es10b::check_euicc_info1(data);
    let _ = es10b::parse_default_dp(data);
    for r in [
        es10b::parse_authenticate_server(data),
        es10b::parse_prepare_download(data),
        es10b::parse_cancel_session(data),
    ] {
        if let Ok(Ok(whole)) = r {
            assert_eq!(whole, data, "an ok answer is relayed whole");
        }
    }
    if let Ok(p) = es10b::parse_metadata(data) {
        assert!(
            contract::valid_iccid(&p.iccid),
            "preview ICCID {:?}",
            p.iccid
        );
    }
    if let Ok(r) = es10b::parse_installation_result(data) {
        if let Some(i) = &r.iccid {
            assert!(contract::valid_iccid(i), "result ICCID {i:?}");
        }
        let _ = r.describe();
    }
}

/// What an SM-DP+ answers over ES9+ (JSON, SGP.22 §6.5) and activation codes (§4.1): a
/// refusal is read with its codes or named malformed, never a panic; an accepted
/// activation code has a checked address and prints no secret.
pub fn es9_json(data: &[u8]) {
    use crate::rsp::{activation::ActivationCode, es9};
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = ActivationCode::parse(text) {
            assert!(crate::rsp::activation::check_address(&code.smdp).is_ok());
            let shown = format!("{code:?}");
            assert!(
                code.matching_id.is_empty()
                    || !shown.contains(&format!("\"{}\"", code.matching_id.expose()))
            );
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for f in [
        es9::Function::InitiateAuthentication,
        es9::Function::AuthenticateClient,
        es9::Function::GetBoundProfilePackage,
    ] {
        if let Err(es9::Es9Error::Refused { status, .. }) = es9::execution_status(&v, f) {
            let _ = status.words();
        }
        for name in [
            "transactionId",
            "serverSigned1",
            "boundProfilePackage",
            "profileMetadata",
        ] {
            let _ = es9::field(&v, f, name);
        }
    }
}

/// SMS PDUs and TS 23.038 text (src/sms): the bytes read as a PDU (as the modem's hex
/// and as text a modem might send) never panic, and whatever parses gives parts that
/// reassemble; the bytes read as text go through SMS-DELIVER and back unchanged (the
/// emulator's encoder and the reader agree), GSM 7-bit packing round-trips at every
/// fill, and SMS-SUBMIT splitting never loses a character.
pub fn sms_pdu(data: &[u8]) {
    use crate::sms::{gsm7, pdu, reassemble, Stored};
    let mut stored = Vec::new();
    for candidate in [
        hex::encode(data),
        String::from_utf8_lossy(data).into_owned(),
    ] {
        if let Ok(d) = pdu::parse_deliver(&candidate) {
            stored.push(Stored {
                index: stored.len() as u32,
                sms: d,
            });
        }
    }
    let n = stored.len();
    let (whole, waiting) = reassemble(stored.clone(), false);
    let (all, none) = reassemble(stored, true);
    assert!(none.is_empty());
    assert!(whole.len() + waiting.len() <= n && all.len() <= n);

    let text: String = String::from_utf8_lossy(data).chars().take(400).collect();
    let back = pdu::parse_deliver(&pdu::deliver("+4915112345678", &text, 1_700_000_000, None))
        .map(|d| d.text);
    // One PDU holds at most 255 units of user data: longer texts are cut by the
    // length octet, so the round trip is promised up to that.
    if gsm7::encode(&text).map_or(gsm7::encode_ucs2(&text).len(), |s| s.len()) <= 140 {
        assert_eq!(back.as_deref(), Ok(text.as_str()), "{text:?}");
    }
    if let Some(septets) = gsm7::encode(&text) {
        for fill in 0..7u8 {
            let packed = gsm7::pack(&septets, fill);
            assert_eq!(
                gsm7::decode(&gsm7::unpack(&packed, septets.len(), fill)),
                text
            );
        }
    }
    if let Ok(parts) = pdu::submit("+4915112345678", &text, 1) {
        assert!(!parts.is_empty());
        for p in &parts {
            assert_eq!(p.pdu.len(), 2 * p.tpdu_len + 2);
        }
    }
}
