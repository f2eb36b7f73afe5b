//! Bounded property tests over structure-aware generators (`make test`, a few seconds
//! in all), and the replay of the fuzz corpus through every target. A failing case
//! names its seed; `SIMGATE_PROP_SEED=<hex> cargo test --lib fuzz::` replays it, and
//! `SIMGATE_PROP_CASES=N` runs every property N times for a longer look.

use super::gen::{cases, Rng};
use super::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// The corpus

/// tests/fuzz/corpus/<target>/: every file, through its target. The directories are
/// where `make fuzz` keeps what libFuzzer found interesting, seeded from devices/ and
/// tests/fixtures; each must exist and hold at least one file.
#[test]
fn every_corpus_file_replays_through_its_target() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    let mut total = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (seed it: make fuzz-seed)", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            files += 1;
        }
        assert!(files > 0, "{}: empty corpus", dir.display());
        total += files;
    }
    assert!(total >= TARGETS.len());
}

// ---------------------------------------------------------------------------------------
// The AT stream

/// Lines a modem sends: replies, finals, echoes and URCs (tests/fixtures/at-vectors.jsonl
/// has their sources).
const AT_LINES: &[&str] = &[
    "AT+CSQ",
    "+CSQ: 2,99",
    "OK",
    "ERROR",
    "+CME ERROR: 10",
    "+CME ERROR: SIM not inserted",
    "+CREG: 2,1,\"9BCD\",\"09AB\",2",
    "+CGREG: 1,\"D504\",\"80428B5\",7",
    "+QCCID: 8901260886258128535F",
    "+QSIMSTAT : 1,0",
    "RING",
    "+QIND: \"csq\",25,99",
    "+CGLA: 4,\"6121\"",
    "RDY",
    "+CPIN: READY",
    ">x",
    "\tOperator\tname",
];

/// One piece of a generated stream: its bytes and the frames it must give.
fn at_piece(rng: &mut Rng) -> (Vec<u8>, Vec<Owned>) {
    const ENDS: &[&[u8]] = &[b"\r\n", b"\r", b"\n", b"\r\r\n", b"\r\n\r\n"];
    let end = *rng.pick(ENDS);
    let with_end = |mut b: Vec<u8>| {
        b.extend_from_slice(end);
        b
    };
    match rng.below(20) {
        0..=9 => {
            let l = *rng.pick(AT_LINES);
            (with_end(l.as_bytes().to_vec()), vec![Owned::Line(l.into())])
        }
        10..=12 => {
            // Printable text, not starting with "> " nor ending in blanks.
            let mut t = {
                let n = rng.range(1, 40);
                rng.text(&[' ', 'a', 'Z', '0', '+', ':', ',', '"', '>'], n)
            };
            t.insert(0, 'x');
            t.push('y');
            (with_end(t.clone().into_bytes()), vec![Owned::Line(t)])
        }
        13..=14 => (b"> ".to_vec(), vec![Owned::Prompt]),
        15..=16 => {
            // Noise: never CR, LF or '>', at least one byte that cannot be text.
            let mut g: Vec<u8> = (0..rng.range(0, 12))
                .map(|_| *rng.pick(&[0x00, 0x07, 0x1B, 0x80, 0xC3, 0xFE, 0xFF, b'O', b'K']))
                .collect();
            g.insert(rng.below(g.len() + 1), 0xFF);
            (with_end(g.clone()), vec![Owned::Garbage(g)])
        }
        // An empty line, or one of blanks only.
        17 => (
            with_end(rng.pick(&[&b""[..], b" ", b"\t", b" \t "]).to_vec()),
            vec![],
        ),
        _ => {
            // A line around the longest the parser waits for.
            let n = parser::MAX_LINE + rng.range(0, 3) - 1 + 40 * rng.below(2);
            let text = "x".repeat(n);
            let frames = if n < parser::MAX_LINE {
                vec![Owned::Line(text.clone())]
            } else {
                let mut f = vec![Owned::Garbage(vec![b'x'; parser::MAX_LINE])];
                if n > parser::MAX_LINE {
                    f.push(Owned::Line("x".repeat(n - parser::MAX_LINE)));
                }
                f
            };
            (with_end(text.into_bytes()), frames)
        }
    }
}

fn at_stream_case(rng: &mut Rng, long_lines: bool) -> (Vec<u8>, Vec<Owned>) {
    let mut data = Vec::new();
    let mut expected = Vec::new();
    for _ in 0..rng.range(1, 12) {
        let (b, f) = loop {
            let p = at_piece(rng);
            if long_lines || p.0.len() < parser::MAX_LINE {
                break p;
            }
        };
        data.extend(b);
        expected.extend(f);
    }
    (data, expected)
}

/// Frames compared, a difference shown short (a long line is thousands of bytes).
fn same_frames(got: &[Owned], want: &[Owned], how: &str) {
    let short = |f: &Owned| {
        let s = format!("{f:?}");
        match s.len() > 80 {
            true => format!("{}… ({} chars)", &s[..60], s.len()),
            false => s,
        }
    };
    if let Some(i) = (0..got.len().max(want.len())).find(|i| got.get(*i) != want.get(*i)) {
        panic!(
            "{how}: frame {i} is {:?}, expected {:?} ({} frames, expected {})",
            got.get(i).map(short),
            want.get(i).map(short),
            got.len(),
            want.len()
        );
    }
}

#[test]
fn the_at_stream_frames_the_same_cut_at_every_byte_boundary() {
    cases("at_stream_every_cut", 150, |rng| {
        let (data, expected) = at_stream_case(rng, false);
        let (whole, _) = feed(&data, &[]);
        same_frames(
            &whole,
            &expected,
            &format!("{:?}", String::from_utf8_lossy(&data)),
        );
        for cut in 0..=data.len() {
            same_frames(&feed(&data, &[cut]).0, &expected, &format!("cut at {cut}"));
        }
        let bytewise: Vec<usize> = (1..data.len()).collect();
        same_frames(&feed(&data, &bytewise).0, &expected, "byte by byte");
    });
}

/// Regression: a line longer than `MAX_LINE` was framed whole when its terminator had
/// already arrived, but cut into garbage when it arrived later: the frames depended on
/// how the serial port split the bytes. Now a line is cut at `MAX_LINE` either way.
#[test]
fn a_line_past_max_line_is_cut_the_same_however_it_arrives() {
    cases("at_stream_long_lines", 40, |rng| {
        let (data, expected) = at_stream_case(rng, true);
        same_frames(&feed(&data, &[]).0, &expected, "whole");
        for _ in 0..4 {
            let cuts = rng.splits(data.len());
            same_frames(
                &feed(&data, &cuts).0,
                &expected,
                &format!("split at {cuts:?}"),
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Reply parsing and command text

/// Regression: `quote` escapes every byte beyond ASCII as `\HH` (the line stays
/// printable ASCII), but reading the string back turned each escaped byte into its own
/// Latin-1 character, so "é" came back as "Ã©". Escapes are now decoded to bytes, read
/// as UTF-8 when they are.
#[test]
fn a_quoted_value_reads_back_as_itself() {
    cases("quote_round_trip", 300, |rng| {
        let mut line = String::from("+CPOL: ");
        let mut expected = Vec::new();
        for i in 0..rng.range(1, 5) {
            if i > 0 {
                line.push(',');
            }
            match rng.below(3) {
                0 => {
                    let n = rng.range(0, 9999).to_string();
                    line.push_str(&n);
                    expected.push(Field::Raw(n));
                }
                1 if i > 0 => expected.push(Field::Empty),
                _ => {
                    let v = {
                        let n = rng.range(0, 24);
                        rng.any_text(n)
                    };
                    line.push_str(&command::quote(&v));
                    expected.push(Field::Str(v));
                }
            }
        }
        if expected.last() == Some(&Field::Empty) {
            // A trailing empty parameter is no parameter: end with one.
            line.push_str(",1");
            expected.push(Field::Raw("1".into()));
        }
        assert_eq!(parser::fields(&line, "+CPOL:"), Some(expected), "{line:?}");
        assert!(AtCommand::new(&format!("AT+CPOL={}", &line[7..])).is_ok());
    });
}

#[test]
fn a_final_result_prints_back_to_itself() {
    let vendor = ["ABORTED".to_string()];
    cases("final_round_trip", 200, |rng| {
        let code = match rng.below(2) {
            0 => parser::ErrorCode::Numeric(rng.range(0, 65535) as u16),
            _ => {
                let t = format!("x{}", {
                    let n = rng.range(0, 12);
                    rng.text(&['a', ' ', 'B', '9', ':'], n)
                });
                parser::ErrorCode::Verbose(t.trim().to_string())
            }
        };
        let f = match rng.below(6) {
            0 => parser::Final::Ok,
            1 => parser::Final::Error,
            2 => parser::Final::CmeError(code),
            3 => parser::Final::CmsError(code),
            4 => parser::Final::Call(
                rng.pick(&["CONNECT 9600", "NO CARRIER", "BUSY"][..])
                    .to_string(),
            ),
            _ => parser::Final::Vendor("ABORTED".into()),
        };
        assert_eq!(parser::final_result(&f.to_string(), &vendor), Some(f));
    });
}

#[test]
fn extended_commands_joined_on_one_line_split_back_into_themselves() {
    const PARTS: &[&str] = &[
        "AT+CREG?",
        "AT+CSQ",
        "AT+CGDCONT=1,\"IP\",\"a;b\"",
        "AT#CCID",
        "AT+QCCID",
        "AT^SYSINFO",
        "AT+CPOL=\"x\\22;y\"",
    ];
    cases("at_join_atoms", 200, |rng| {
        let parts: Vec<AtCommand> = (0..rng.range(1, 5))
            .map(|_| AtCommand::new(rng.pick::<&str>(PARTS)).unwrap())
            .collect();
        let line = command::join(&parts);
        assert_eq!(line.atoms(), parts, "{line}");
        assert!(AtCommand::new(line.as_str()).is_ok());
    });
}

// ---------------------------------------------------------------------------------------
// BER-TLV

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Leaf(u32, Vec<u8>),
    Tree(u32, Vec<Node>),
}

impl Node {
    fn tag(&self) -> u32 {
        match self {
            Node::Leaf(t, _) | Node::Tree(t, _) => *t,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Node::Leaf(t, v) => tlv::encode(*t, v),
            Node::Tree(t, kids) => {
                tlv::encode(*t, &kids.iter().flat_map(Node::encode).collect::<Vec<_>>())
            }
        }
    }
}

fn tlv_node(rng: &mut Rng, depth: usize) -> Node {
    // SGP.22 and TS 102 221 tags: primitive one- and two-byte, constructed ones.
    const PRIMITIVE: &[u32] = &[0x5A, 0x4F, 0x80, 0x81, 0x9F70, 0x5F20, 0x9F8101];
    const CONSTRUCTED: &[u32] = &[0xBF2D, 0xBF3E, 0xA0, 0xE3, 0x61, 0x62, 0x6F];
    if depth < 3 && rng.chance(1, 3) {
        let kids = (0..rng.range(0, 4))
            .map(|_| tlv_node(rng, depth + 1))
            .collect();
        Node::Tree(*rng.pick(CONSTRUCTED), kids)
    } else {
        // Lengths across the short/81/82 boundaries.
        let len = *rng.pick(&[0, 1, 16, 127, 128, 255, 256, 300]);
        let len = if rng.chance(1, 2) {
            rng.range(0, 20)
        } else {
            len
        };
        Node::Leaf(*rng.pick(PRIMITIVE), rng.bytes(len))
    }
}

fn decode_nodes(data: &[u8]) -> Vec<Node> {
    tlv::parse(data)
        .unwrap()
        .into_iter()
        .map(|t| {
            if t.is_constructed() {
                Node::Tree(t.tag, decode_nodes(t.value))
            } else {
                Node::Leaf(t.tag, t.value.to_vec())
            }
        })
        .collect()
}

#[test]
fn tlv_encodes_and_parses_back_at_every_level() {
    cases("tlv_round_trip", 300, |rng| {
        let nodes: Vec<Node> = (0..rng.range(1, 4)).map(|_| tlv_node(rng, 0)).collect();
        let mut data: Vec<u8> = nodes.iter().flat_map(Node::encode).collect();
        // Padding between objects (ISO/IEC 7816-4 §5.2.2) is skipped.
        if rng.chance(1, 4) {
            data.splice(0..0, [0xFF, 0x00]);
        }
        assert_eq!(decode_nodes(&data), nodes);
        // Every path down to a leaf whose tags are each the only one on their level
        // finds that leaf (`find` takes the first of a tag).
        fn paths(level: &[Node], path: &mut Vec<u32>, out: &mut Vec<(Vec<u32>, Vec<u8>)>) {
            for n in level {
                if level.iter().filter(|m| m.tag() == n.tag()).count() > 1 {
                    continue;
                }
                path.push(n.tag());
                match n {
                    Node::Leaf(_, v) => out.push((path.clone(), v.clone())),
                    Node::Tree(_, kids) => paths(kids, path, out),
                }
                path.pop();
            }
        }
        let mut all = Vec::new();
        paths(&nodes, &mut Vec::new(), &mut all);
        for (path, value) in all {
            assert_eq!(
                tlv::find_path(&data, &path),
                Ok(Some(value.as_slice())),
                "{path:X?}"
            );
        }
    });
}

#[test]
fn tlv_with_a_length_one_off_is_refused_at_its_object_or_reads_differently() {
    cases("tlv_length_one_off", 300, |rng| {
        let node = tlv_node(rng, 0);
        let good = node.encode();
        // The outermost length byte: after the tag.
        let tag_len = tlv::encode(node.tag(), &[]).len() - 1;
        let mut bad = good.clone();
        let first_len = bad[tag_len];
        // The last byte of the length, one up or one down (never wrapping round).
        let last = match first_len {
            0x00..=0x7F => tag_len,
            _ => tag_len + usize::from(first_len & 0x7F),
        };
        bad[last] = match (bad[last], rng.chance(1, 2)) {
            (0xFF, _) | (1..=0xFE, false) => bad[last] - 1,
            _ => bad[last] + 1,
        };
        let outcome = std::panic::catch_unwind(|| tlv_es10(&bad));
        assert!(outcome.is_ok(), "target panicked on {bad:02X?}");
        match tlv::parse(&bad) {
            // Longer than what follows: refused at the object's start; shorter: the
            // byte left over is refused where it stands.
            Err(e) => assert!(
                e.offset == 0 || e.offset == bad.len() - 1,
                "{e} in {bad:02X?}"
            ),
            // Shorter, and the byte left over is padding: the value lost its last byte.
            Ok(objs) => {
                let before = tlv::parse(&good).unwrap();
                assert_ne!(objs, before, "{bad:02X?} read like {good:02X?}");
                assert_eq!(objs[0].value, &before[0].value[..before[0].value.len() - 1]);
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// Elementary files

fn luhn_digit(body: &str) -> char {
    (0..10)
        .map(|d| char::from_digit(d, 10).unwrap())
        .find(|d| card::iccid::luhn_valid(&format!("{body}{d}")))
        .unwrap()
}

#[test]
fn iccid_digits_encode_to_ef_and_decode_back() {
    cases("iccid_round_trip", 300, |rng| {
        let n = rng.range(17, 19);
        let alphabet: &[char] = if rng.chance(1, 5) {
            &['8', '9', '0', '1', 'A', 'C', 'E']
        } else {
            &['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']
        };
        let body = format!("89{}", rng.text(alphabet, n - 2));
        let digits = match body.chars().all(|c| c.is_ascii_digit()) {
            true => format!("{body}{}", luhn_digit(&body)),
            false => format!("{body}0"),
        };
        let raw = crate::emu::vcard::iccid_to_ef(&digits);
        let i = Iccid::from_ef(&raw).unwrap();
        assert_eq!(i.as_str(), digits);
        assert_eq!(i.luhn_ok(), card::iccid::luhn_valid(&digits));
        ef(&raw);
    });
}

/// Regression: `Iccid::from_digits` (a modem's +CCID answer) took an F filler in the
/// middle of the number, which `Iccid::from_ef` refuses and the contract never lets
/// reach a topic or the store: an ICCID leaving a parser now always passes
/// `contract::valid_iccid`.
#[test]
fn an_iccid_with_filler_inside_is_refused_from_text_as_from_the_ef() {
    cases("iccid_inner_filler", 200, |rng| {
        let mut digits = {
            let n = rng.range(18, 20);
            rng.text(&['8', '9', '0', '1', '5'], n)
        };
        let at = rng.range(1, digits.len() - 2);
        digits.replace_range(at..at + 1, if rng.chance(1, 2) { "F" } else { "f" });
        assert!(Iccid::from_digits(&digits).is_err(), "{digits}");
        let line = format!("+QCCID: {digits}");
        assert_eq!(reply::vendor_iccid(&[line], Some("+QCCID:")), None);
    });
}

#[test]
fn imsi_digits_encode_to_ef_and_decode_back() {
    cases("imsi_round_trip", 200, |rng| {
        let digits = {
            let n = rng.range(6, 15);
            rng.text(&['0', '1', '2', '4', '8', '9'], n)
        };
        // TS 31.102 §4.2.2: the parity nibble, then the digits, swapped, F-padded.
        let mut nibbles = vec![if digits.len() % 2 == 1 { 9 } else { 1 }];
        nibbles.extend(digits.chars().map(|c| c.to_digit(10).unwrap() as u8));
        if nibbles.len() % 2 == 1 {
            nibbles.push(0xF);
        }
        let mut raw: Vec<u8> = vec![(nibbles.len() / 2) as u8];
        raw.extend(nibbles.chunks(2).map(|p| p[1] << 4 | p[0]));
        raw.resize(9, 0xFF);
        assert_eq!(
            subscriber::decode_imsi(&raw).as_deref(),
            Some(digits.as_str())
        );
        ef(&raw);
    });
}

// ---------------------------------------------------------------------------------------
// Contract JSON: every field of the wrong type

pub(crate) const ICCID: &str = "8988211000000430010";

/// Values of every JSON type.
fn json_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(18_446_744_073_709_551_615u64),
        json!(""),
        json!("x"),
        json!([]),
        json!([1, "a"]),
        json!({}),
        json!({"a": 1}),
    ]
}

/// What a field takes, to tell a wrong-typed value.
#[derive(Debug, Clone, Copy)]
enum Kind {
    U32,
    U64,
    Num,
    Str,
    StrArr,
    Arr,
}

fn fits(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::U32 => v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)),
        Kind::U64 => v.as_u64().is_some(),
        Kind::Num => v.is_number(),
        Kind::Str => v.is_string(),
        Kind::StrArr => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        Kind::Arr => v.is_array(),
    }
}

/// A valid command of each action whose fields are checked, and its fields by path.
fn commands() -> Vec<(Value, Vec<(&'static str, Kind)>)> {
    let base = |action: &str, params: Value| {
        json!({"v": 1, "id": "c-1", "iccid": ICCID, "action": action,
               "expires_at": NOW + 60, "params": params})
    };
    let top = [
        ("v", Kind::U32),
        ("id", Kind::Str),
        ("iccid", Kind::Str),
        ("action", Kind::Str),
        ("expires_at", Kind::U64),
    ];
    let with = |extra: &[(&'static str, Kind)]| top.iter().chain(extra).copied().collect();
    vec![
        (base("suspend", Value::Null), with(&[])),
        (
            base(
                "set_record",
                json!({"status": "Active", "plan": "IoT", "labels": ["a"]}),
            ),
            with(&[
                ("params.plan", Kind::Str),
                ("params.company", Kind::Str),
                ("params.note", Kind::Str),
                ("params.labels", Kind::StrArr),
                ("params.data_left_mb", Kind::Num),
                ("params.days_left", Kind::U32),
                ("params.rules", Kind::Arr),
                ("params.updated_at", Kind::U64),
                ("params.activation_code", Kind::Str),
            ]),
        ),
        (
            base("esim_enable", json!({"profile": "8949440000000000024"})),
            with(&[("params.profile", Kind::Str)]),
        ),
        (
            base(
                "esim_nickname",
                json!({"profile": "8949440000000000024", "nickname": "work"}),
            ),
            with(&[
                ("params.profile", Kind::Str),
                ("params.nickname", Kind::Str),
            ]),
        ),
        (
            base("esim_notification_ack", json!({"seq": 7})),
            with(&[("params.seq", Kind::U32)]),
        ),
        (
            base("refill", json!({"amount_mb": 100})),
            with(&[
                ("params.amount_mb", Kind::Num),
                ("params.days", Kind::U32),
                ("params.request_id", Kind::Str),
            ]),
        ),
        (
            base("swap", json!({"to_slot": 2})),
            with(&[("params.to_slot", Kind::U64)]),
        ),
        (
            base("request_refill", json!({"amount_mb": 10})),
            with(&[("params.amount_mb", Kind::Num)]),
        ),
    ]
}

fn set(doc: &mut Value, path: &str, v: Value) {
    match path.split_once('.') {
        Some((a, b)) => doc[a][b] = v,
        None => doc[path] = v,
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap()
}

/// Every command with one field of the wrong type, and that field's name.
fn wrong_typed_commands() -> Vec<(Vec<u8>, &'static str)> {
    let mut out = Vec::new();
    for (doc, fields) in commands() {
        assert!(
            contract::parse_command(&serde_json::to_vec(&doc).unwrap(), NOW).is_ok(),
            "{doc}"
        );
        for (path, kind) in fields {
            for v in json_values().into_iter().filter(|v| !fits(kind, v)) {
                // `null` for an optional field is its absence; not a wrong type.
                let list = matches!(kind, Kind::StrArr | Kind::Arr);
                if v.is_null() && path.starts_with("params.") && !list {
                    continue;
                }
                let mut d = doc.clone();
                set(&mut d, path, v);
                out.push((serde_json::to_vec(&d).unwrap(), path));
            }
        }
    }
    out
}

/// Regression: a field of the wrong type was refused as "not a v1 command: invalid
/// type: string "x", expected u64" — serde's words, without the field. Every refusal
/// now names its field.
#[test]
fn a_command_with_any_field_of_the_wrong_type_is_refused_naming_the_field() {
    let all = wrong_typed_commands();
    assert!(all.len() > 100, "{}", all.len());
    for (payload, path) in all {
        let text = String::from_utf8_lossy(&payload).to_string();
        let r = contract::parse_command(&payload, NOW).expect_err(&text);
        assert!(
            r.reason.contains(leaf(path)),
            "{path}: {} for {text}",
            r.reason
        );
        if path != "id" {
            assert_eq!(r.id.as_deref(), Some("c-1"), "{text}");
        }
        contract_json(&payload);
    }
}

#[test]
fn a_platform_record_with_any_field_of_the_wrong_type_is_refused_naming_the_field() {
    let doc = json!({"v": 1, "status": "Active", "plan": "IoT 1GB", "labels": ["x"]});
    let fields = [
        ("v", Kind::U32),
        ("plan", Kind::Str),
        ("company", Kind::Str),
        ("end_user", Kind::Str),
        ("note", Kind::Str),
        ("labels", Kind::StrArr),
        ("data_left_mb", Kind::Num),
        ("days_left", Kind::U32),
        ("rules", Kind::Arr),
        ("updated_at", Kind::U64),
        ("activation_code", Kind::Str),
    ];
    for (path, kind) in fields {
        for v in json_values().into_iter().filter(|v| !fits(kind, v)) {
            let mut d = doc.clone();
            // `null` for an optional field is its absence; not a wrong type.
            if v.is_null() && path != "v" && path != "labels" && path != "rules" {
                continue;
            }
            set(&mut d, path, v);
            let payload = serde_json::to_vec(&d).unwrap();
            let r = contract::parse_platform_record(&payload).expect_err(&d.to_string());
            assert!(r.reason.contains(path), "{path}: {} for {d}", r.reason);
            contract_json(&payload);
        }
    }
}

// ---------------------------------------------------------------------------------------
// A refused payload changes nothing in the store (the property itself is the daemon's:
// src/daemon/commands/props.rs)

/// Payloads the contract refuses: wrong types, garbage, truncations, bad ids.
pub(crate) fn refused_payloads(rng: &mut Rng) -> Vec<Vec<u8>> {
    let wrong = wrong_typed_commands();
    let mut out: Vec<Vec<u8>> = (0..24).map(|_| rng.pick(&wrong).0.clone()).collect();
    let good = serde_json::to_vec(&commands()[1].0).unwrap();
    for _ in 0..8 {
        let cut = rng.below(good.len());
        out.push(good[..cut].to_vec());
        let mut flipped = good.clone();
        let at = rng.below(flipped.len());
        flipped[at] ^= 1 << rng.below(8);
        out.push(flipped);
        out.push({
            let n = rng.range(0, 64);
            rng.bytes(n)
        });
    }
    out.push(
        br#"{"v":1,"id":"a/b","iccid":"8988211000000430010","action":"suspend","expires_at":1}"#
            .to_vec(),
    );
    out.push(vec![b' '; contract::MAX_INBOUND_BYTES + 1]);
    out
}

// ---------------------------------------------------------------------------------------
// TOML files: every value of the wrong type

/// `key = value` lines of a TOML text, with their line numbers, key and what the value
/// is (string, integer, boolean, array, inline table).
fn toml_values(text: &str) -> Vec<(usize, &str, char)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, v) = l.split_once(" = ")?;
            let k = k.trim();
            if k.starts_with('#') || k.starts_with('[') || k.contains(' ') {
                return None;
            }
            let v = v.trim();
            // A value that goes on over the next lines is left alone.
            if (v.starts_with('[') && !v.ends_with(']'))
                || (v.starts_with('{') && !v.ends_with('}'))
            {
                return None;
            }
            let kind = match v.chars().next()? {
                '"' => 's',
                '[' => 'a',
                '{' => 't',
                't' | 'f' => 'b',
                c if c.is_ascii_digit() || c == '-' => 'i',
                _ => return None,
            };
            Some((i + 1, k, kind))
        })
        .collect()
}

/// `text` with each value, in turn, replaced by one of every other type; and the line.
fn wrong_typed_toml(text: &str) -> Vec<(String, usize, String)> {
    const VALUES: &[(char, &str)] = &[
        ('s', "\"x\""),
        ('i', "-7"),
        ('f', "1.5"),
        ('b', "true"),
        ('a', "[1, \"a\"]"),
        ('t', "{ a = 1 }"),
    ];
    let mut out = Vec::new();
    for (line, key, kind) in toml_values(text) {
        for (k, v) in VALUES
            .iter()
            .filter(|(k, _)| *k != kind && !(kind == 'i' && *k == 'f'))
        {
            // An empty array or table also reads as an array of anything.
            if (kind == 'a' && *k == 'a') || (kind == 't' && *k == 't') {
                continue;
            }
            let mutated: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| match i + 1 == line {
                    true => format!("{key} = {v}"),
                    false => l.to_string(),
                })
                .collect();
            out.push((mutated.join("\n"), line, key.to_string()));
        }
    }
    out
}

#[test]
fn a_config_value_of_the_wrong_type_is_refused_naming_file_line_and_key() {
    let all = wrong_typed_toml(&crate::config::template_keys());
    assert!(all.len() > 100, "{}", all.len());
    for (text, line, key) in all {
        match Config::parse(&text, "s.toml") {
            Err(ConfigError::Parse { file, message }) => {
                assert_eq!(file, format!("s.toml:{line}"), "{key}: {message}");
                assert!(message.contains(&key), "{key}: {message}");
            }
            other => panic!("{key} on line {line}: {other:?}"),
        }
        config_toml(text.as_bytes());
    }
}

#[test]
fn a_modem_profile_or_card_image_value_of_the_wrong_type_is_refused_naming_line_and_key() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in [
        "devices/modems/quectel-ec2x.toml",
        "devices/modems/generic-3gpp.toml",
    ] {
        let original = std::fs::read_to_string(root.join(file)).unwrap();
        for (text, line, key) in wrong_typed_toml(&original) {
            let e = Profile::parse("p.toml", &text).expect_err(&format!("{key} on line {line}"));
            let e = e.to_string();
            assert!(
                e.starts_with(&format!("p.toml:{line}: ")) && e.contains(&key),
                "{e}"
            );
            modem_profile(text.as_bytes());
        }
    }
    for file in ["devices/cards/euicc.toml", "devices/cards/usim.toml"] {
        let original = std::fs::read_to_string(root.join(file)).unwrap();
        for (text, line, key) in wrong_typed_toml(&original) {
            let e = crate::emu::vcard::CardImage::parse(&text).expect_err(&key);
            assert!(
                e.starts_with(&format!("line {line}: ")) && e.contains(&key),
                "{e}"
            );
            card_image(text.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Broker URLs

#[test]
fn a_broker_url_prints_back_to_itself_and_a_bad_host_is_refused() {
    cases("broker_url", 300, |rng| {
        let host = match rng.below(4) {
            0 => format!("b{}.example", rng.range(0, 99)),
            1 => format!("10.0.{}.{}", rng.range(0, 255), rng.range(0, 255)),
            2 => "[::1]".to_string(),
            _ => format!("[fd00::{:x}]", rng.range(1, 0xffff)),
        };
        let tls = rng.chance(1, 2);
        let scheme = if tls { "mqtts" } else { "mqtt" };
        let port = rng.chance(1, 2).then(|| rng.range(1, 65535) as u16);
        let slash = if rng.chance(1, 4) { "/" } else { "" };
        let url = match port {
            Some(p) => format!("{scheme}://{host}:{p}{slash}"),
            None => format!("{scheme}://{host}{slash}"),
        };
        let u = BrokerUrl::parse(&url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let default = if tls { 8883 } else { 1883 };
        assert_eq!((u.tls, u.port), (tls, port.unwrap_or(default)), "{url}");
        assert_eq!(u.host, host.trim_matches(['[', ']']), "{url}");
        broker_url(url.as_bytes());
        // A character no host name or address has: refused, naming the URL.
        let bad = *rng.pick(&['/', '@', ' ', '?', '#', '"', '\\', '%']);
        let bad_url = format!("{scheme}://a{bad}{}", host.trim_matches(['[', ']']));
        let e = BrokerUrl::parse(&bad_url).expect_err(&bad_url);
        assert!(e.contains(&bad_url), "{e}");
    });
}

// ---------------------------------------------------------------------------------------
// Seeds

/// A virtual card that keeps every answer, as the `apdu` target's script format (one
/// length byte, then the answer).
struct Recording(crate::emu::vcard::VirtualCard, Vec<u8>, Vec<Vec<u8>>);

impl CardTransport for Recording {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>, CardError> {
        let answer = self.0.transmit(command)?;
        let kept = &answer[..answer.len().min(255)];
        self.1.push(kept.len() as u8);
        self.1.extend_from_slice(kept);
        self.2.push(answer.clone());
        Ok(answer)
    }
}

/// `make fuzz-seed`: write the seeds of tests/fuzz/corpus/<target>/ from what the
/// repository already holds: devices/ (card images, modem profiles), tests/fixtures
/// (AT vectors and transcripts, card vectors), the configuration template, and every
/// answer the virtual cards give during an identification. Files are named by their
/// content's hash, so seeding twice adds nothing.
#[test]
#[ignore = "writes tests/fuzz/corpus; run by `make fuzz-seed`"]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = [
        device_seeds(root),
        fixture_seeds(root),
        contract_seeds(),
        rsp_seeds(root),
        euicc_seeds(root),
    ]
    .concat();
    let mut written = 0;
    for (target, data) in seeds {
        assert!(TARGETS.iter().any(|(n, _)| *n == target), "{target}");
        let dir = root.join("tests/fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("seed-{:016x}", contract::payload_hash(&data)));
        if !path.exists() {
            std::fs::write(path, data).unwrap();
            written += 1;
        }
    }
    eprintln!("{written} seed files written");
}

/// A directory's .toml and .at files, in name order.
fn sorted_toml_and_at(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml" || e == "at"))
        .collect();
    v.sort();
    v
}

/// devices/: card images and every answer their virtual card gives to an
/// identification; modem profiles; the configuration template.
fn device_seeds(root: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let read_dir = |dir: &str| sorted_toml_and_at(&root.join(dir));
    for p in read_dir("devices/cards") {
        let text = std::fs::read_to_string(&p).unwrap();
        seeds.push(("card_image", text.clone().into_bytes()));
        let image = crate::emu::vcard::CardImage::parse(&text).unwrap();
        let mut rec = Recording(
            crate::emu::vcard::VirtualCard::new(image),
            Vec::new(),
            Vec::new(),
        );
        let _ = card::identify(&mut rec, &card::Options::default());
        seeds.push(("apdu", rec.1));
        for answer in rec.2 {
            let data = &answer[..answer.len().saturating_sub(2)];
            seeds.push(("ef", data.to_vec()));
            if data.len() > 2 && tlv::parse(data).is_ok() {
                seeds.push(("tlv", data.to_vec()));
            }
        }
    }
    for p in read_dir("devices/modems") {
        seeds.push(("modem_profile", std::fs::read(&p).unwrap()));
    }
    seeds.push(("config_toml", crate::config::TEMPLATE.as_bytes().to_vec()));
    seeds
}

/// tests/fixtures: AT transcripts and vectors, card vectors.
fn fixture_seeds(root: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let read_dir = |dir: &str| sorted_toml_and_at(&root.join(dir));
    for p in read_dir("tests/fixtures/transcripts") {
        let mut stream = Vec::new();
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            if let Some(cmd) = l.strip_prefix("> ") {
                stream.extend(format!("{cmd}\r").bytes());
                seeds.push(("at_command", cmd.as_bytes().to_vec()));
            } else if let Some(reply) = l.strip_prefix("< ") {
                stream.extend(format!("\r\n{reply}\r\n").bytes());
            }
        }
        seeds.push(("at_stream", stream.clone()));
        seeds.push(("at_reply", stream));
    }
    let vectors = |file: &str| -> Vec<Value> {
        std::fs::read_to_string(root.join("tests/fixtures").join(file))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    for v in vectors("at-vectors.jsonl") {
        let (Some(cmd), Some(resp)) = (v["command"].as_str(), v["response"].as_str()) else {
            continue;
        };
        seeds.push(("at_command", cmd.as_bytes().to_vec()));
        seeds.push(("at_reply", resp.as_bytes().to_vec()));
        seeds.push((
            "at_stream",
            format!("{cmd}\r\r\n{resp}\r\n\r\nOK\r\n").into_bytes(),
        ));
    }
    for v in vectors("card_vectors.jsonl") {
        if let Some(raw) = v["raw"].as_str().and_then(|h| hex::decode(h).ok()) {
            seeds.push((if v["kind"] == "efdir" { "tlv" } else { "ef" }, raw));
        }
        if let Some(d) = v["decoded"].as_str() {
            seeds.push(("ef", d.as_bytes().to_vec()));
        }
    }
    seeds
}

/// The contract's inbound payloads (with and without their topic) and broker URLs.
fn contract_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let topics = contract::Topics::new("gw-1");
    for (doc, _) in commands() {
        let payload = serde_json::to_vec(&doc).unwrap();
        let mut with_topic = format!("{}\n", topics.commands()).into_bytes();
        with_topic.extend(&payload);
        seeds.push(("contract_json", payload));
        seeds.push(("contract_json", with_topic));
    }
    let record = br#"{"v":1,"status":"Suspended","plan":"IoT 1GB","sim_type":"PAYGO","data_left_mb":12.5,"days_left":3,"labels":["fleet-a"],"rules":[{"id":"r1"}]}"#;
    let mut with_topic = format!("{}\n", topics.sim_platform(ICCID)).into_bytes();
    with_topic.extend(record);
    seeds.push(("contract_json", record.to_vec()));
    seeds.push(("contract_json", with_topic));
    for url in [
        "mqtt://localhost:1883",
        "mqtts://broker.example",
        "mqtt://[::1]:1884/",
        "mqtts://10.0.0.1:8883",
    ] {
        seeds.push(("broker_url", url.as_bytes().to_vec()));
    }
    seeds
}

/// The RSP parsers: the fixture certificates, BSP segments of pySim's vectors, and
/// ES9+ request bodies.
fn rsp_seeds(root: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    for dir in ["tests/fixtures/rsp/pki", "tests/fixtures/rsp/sgp26"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for p in files {
            let bytes = std::fs::read(&p).unwrap();
            match p.extension().and_then(|e| e.to_str()) {
                Some("der") => seeds.push(("emu_rsp", bytes)),
                Some("pem") => {
                    for c in rustls_pemfile::certs(&mut bytes.as_slice()) {
                        seeds.push(("emu_rsp", c.unwrap().as_ref().to_vec()));
                    }
                }
                _ => {}
            }
        }
    }
    let vectors =
        std::fs::read_to_string(root.join("tests/fixtures/rsp/pysim_bsp_ppk_segments.txt"))
            .unwrap();
    for line in vectors.lines().filter(|l| !l.starts_with('#')) {
        seeds.push(("emu_rsp", hex::decode(line).unwrap()));
    }
    for body in [
        r#"{"smdpAddress":"127.0.0.1:8443","euiccChallenge":"BwcHBwcHBwcHBwcHBwcHBw==","euiccInfo1":"vyAcggMCAgKpCgQI8BT93/JLpdeqCgQI8BT93/JLpdc="}"#,
        r#"{"transactionId":"0123456789ABCDEF0123456789ABCDEF","authenticateServerResponse":"vzgA"}"#,
        r#"{"transactionId":"0123456789ABCDEF0123456789ABCDEF","prepareDownloadResponse":"vyEA"}"#,
        r#"{"pendingNotification":"vzcA"}"#,
        r#"{"transactionId":"0123456789ABCDEF0123456789ABCDEF","cancelSessionResponse":"v0EDgQEF"}"#,
    ] {
        seeds.push(("emu_rsp", body.as_bytes().to_vec()));
    }
    seeds
}

/// The virtual eUICC's ES10b requests: the download functions, with the fixture's
/// certificates where a certificate goes, and BPP segments' headers.
fn euicc_seeds(root: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();
    let pem = |name: &str| {
        let path = root.join("tests/fixtures/rsp/euicc-pki/ci").join(name);
        let bytes = std::fs::read(path).unwrap();
        let der = rustls_pemfile::certs(&mut bytes.as_slice()).next().unwrap();
        der.unwrap().as_ref().to_vec()
    };
    let enc = crate::card::tlv::encode;
    let tid = enc(0x80, &[0x01; 16]);
    let signed1 = enc(
        0x30,
        &[
            tid.clone(),
            enc(0x81, &[7; 16]),
            enc(0x83, b"127.0.0.1:8443"),
            enc(0x84, &[9; 16]),
        ]
        .concat(),
    );
    let ctx = enc(0xA0, &enc(0x80, b"SIMGATE-TEST-1"));
    let auth = [
        signed1,
        enc(0x5F37, &[0; 64]),
        enc(0x04, &[0xAB; 20]),
        pem("dpauth.pem"),
        ctx,
    ];
    let signed2 = enc(0x30, &[tid.clone(), enc(0x01, &[0])].concat());
    let prep = [signed2, enc(0x5F37, &[0; 64]), pem("dppb.pem")];
    for request in [
        enc(0xBF2E, &[]),
        enc(0xBF20, &[]),
        enc(0xBF3C, &[]),
        enc(0xBF38, &auth.concat()),
        enc(0xBF21, &prep.concat()),
        enc(0xBF41, &[tid, enc(0x81, &[0])].concat()),
        enc(0xA0, &enc(0x87, &[0; 24])),
        vec![0xA1, 0x0A],
        enc(0x88, &[0; 24]),
        vec![0xA3, 0x82, 0x03, 0xF0],
        enc(0x86, &[0; 40]),
    ] {
        seeds.push(("euicc", request));
    }
    seeds
}
