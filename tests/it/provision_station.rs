//! `simgate station --provision FILE.csv`: a batch of Blank eUICCs (virtual eUICCs behind
//! pcscd + vpcd, each with its own EID and certificate under one test EUM) provisioned
//! from a file of activation codes against the test SM-DP+, two readers at once. What is
//! pinned: every code is used at most once — across a mistyped code, a card pulled
//! mid-download and a station killed mid-download — and each card's end is said in words.

use crate::support::smdp::{self, eid};
use crate::support::{self, Lines, Pcsc, Proc, TempDir};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// An ICCID from its 18 first digits and the Luhn check digit (ITU-T E.118).
fn iccid(prefix: &str) -> String {
    let sum: u32 = prefix
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                x / 10 + x % 10
            } else {
                d
            }
        })
        .sum();
    format!("{prefix}{}", (10 - sum % 10) % 10)
}

/// The batch's profiles on the test SM-DP+: matching ID → ICCID.
fn profiles(dir: &Path, ids: &[&str]) -> (PathBuf, HashMap<String, String>) {
    let mut text = String::new();
    let mut map = HashMap::new();
    for (k, id) in ids.iter().enumerate() {
        let i = iccid(&format!("89001020000000{:04}", k + 1));
        let big = if id.ends_with("BIG") {
            "package_bytes = 24000\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "[[profile]]\nmatching_id = \"{id}\"\niccid = \"{i}\"\nimsi = \"0010100000{:05}\"\nname = \"batch profile {}\"\nprovider = \"simgate test operator\"\nclass = \"operational\"\n{big}\n",
            k + 1,
            k + 1
        ));
        map.insert(id.to_string(), i);
    }
    let path = dir.join("profiles.toml");
    std::fs::write(&path, text).unwrap();
    (path, map)
}

/// A test SM-DP+ and a set of Blank eUICCs, each with its own EID and certificate from
/// one EUM (tests/rig/rsp-pki.sh --euicc).
struct Rig {
    dir: TempDir,
    pki: PathBuf,
    smdp: smdp::Smdp,
    iccids: HashMap<String, String>,
}

impl Rig {
    fn new(matching_ids: &[&str]) -> Rig {
        let dir = TempDir::new("provision");
        let pki = smdp::rsp_pki(
            &dir.path().join("pki"),
            &eid("890490321234512345123456789100"),
        );
        let (file, iccids) = profiles(dir.path(), matching_ids);
        let smdp = smdp::Smdp::start(&pki, &file, &[]);
        Rig {
            dir,
            pki,
            smdp,
            iccids,
        }
    }

    /// A Blank eUICC with EID `eid` into reader `slot`, answering after `latency_ms`.
    fn insert(&self, pcsc: &Pcsc, slot: u8, eid: &str, latency_ms: u64) -> support::Card {
        let (image, keys) = smdp::blank_euicc(&self.pki, self.dir.path(), eid);
        pcsc.insert_with(
            slot,
            image.to_str().unwrap(),
            &[
                "--pki",
                keys.to_str().unwrap(),
                "--latency-ms",
                &latency_ms.to_string(),
            ],
        )
    }

    fn code(&self, matching_id: &str) -> String {
        self.smdp.activation_code(matching_id)
    }

    fn codes_file(&self, lines: &[String]) -> PathBuf {
        let path = self.dir.path().join("codes.csv");
        let mut text = "activation_code,eid,confirmation_code,labels,nickname\n".to_string();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A provisioning station with its NDJSON output.
struct Station {
    proc: Proc,
    out: Lines,
    /// Ends already handed out, per reader.
    taken: HashMap<String, usize>,
}

impl Station {
    fn start(pcsc: &Pcsc, rig: &Rig, state: &Path, codes: &Path, results: &Path) -> Station {
        let mut proc = Proc::spawn(
            "simgate station --provision",
            pcsc.simgate()
                .args(["station", "--json", "--state-dir"])
                .arg(state)
                .arg("--provision")
                .arg(codes)
                .arg("--csv")
                .arg(results)
                .arg("--ci-dir")
                .arg(&rig.pki)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = Lines::new(proc.child.stdout.take().expect("piped stdout"));
        Station {
            proc,
            out,
            taken: HashMap::new(),
        }
    }

    fn is(line: &str, reader: &str, stage: &str) -> bool {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|v| v["reader"] == reader && v["provision"] == stage)
    }

    /// The next provisioning step `stage` of `reader` not handed out yet (steps of two
    /// readers interleave: each is looked for in everything seen so far first).
    fn next(&mut self, reader: &str, stage: &str, limit: Duration) -> Value {
        let key = format!("{reader}/{stage}");
        let k = self.taken.get(&key).copied().unwrap_or(0);
        let count = |seen: &[String]| seen.iter().filter(|l| Self::is(l, reader, stage)).count();
        while count(&self.out.seen) <= k {
            self.out
                .expect(&format!("{stage} in {reader}"), limit, |l| {
                    Self::is(l, reader, stage)
                });
        }
        self.taken.insert(key, k + 1);
        let line = self
            .out
            .seen
            .iter()
            .filter(|l| Self::is(l, reader, stage))
            .nth(k)
            .expect("counted above");
        serde_json::from_str(line).unwrap()
    }

    /// Everything `reader` said so far is of cards gone: the next card's steps follow.
    fn next_card(&mut self, reader: &str) {
        for stage in ["assigned", "reconciled", "preview", "loading", "done"] {
            let n = self
                .out
                .seen
                .iter()
                .filter(|l| Self::is(l, reader, stage))
                .count();
            self.taken.insert(format!("{reader}/{stage}"), n);
        }
    }

    /// The next end (`done`) of a card in `reader`.
    fn end(&mut self, reader: &str) -> Value {
        self.next(reader, "done", Duration::from_secs(90))
    }
}

/// The results CSV's rows as (eid, iccid, code, result, detail, labels).
fn results(path: &Path) -> Vec<[String; 6]> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time,reader,eid,iccid,code_line,activation_code,labels,result,detail,ms")
    );
    lines
        .map(|l| {
            // The fields of these tests hold no quotes; the detail may hold commas.
            let f: Vec<&str> = l.splitn(9, ',').collect();
            let detail = f[8].rsplit_once(',').map_or(f[8], |(d, _)| d);
            [f[2], f[3], f[5], f[7], detail, f[6]].map(str::to_string)
        })
        .collect()
}

/// Every code appears in at most one `ok` row, and no profile went to two cards.
fn assert_each_code_once(rows: &[[String; 6]]) {
    let ok: Vec<_> = rows.iter().filter(|r| r[3] == "ok").collect();
    for r in &ok {
        assert_eq!(
            ok.iter().filter(|o| o[2] == r[2]).count(),
            1,
            "code used twice: {rows:?}"
        );
        assert_eq!(
            ok.iter().filter(|o| o[0] == r[0]).count(),
            1,
            "a card provisioned twice: {rows:?}"
        );
    }
}

fn list_iccids(pcsc: &Pcsc, reader: &str) -> Vec<String> {
    let out = pcsc
        .simgate()
        .args(["esim", "list", "--json", "--reader", reader])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["profiles"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["iccid"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_batch_over_two_readers_uses_each_code_once_through_a_mistyped_code_and_a_pulled_card() {
    let rig = Rig::new(&["BATCH-1", "BATCH-2", "BATCH-3", "BATCH-BIG"]);
    let pcsc = Pcsc::start();
    let state = rig.dir.path().join("state");
    let (a, b, c, d) = (
        eid("890490321234512345123456781001"),
        eid("890490321234512345123456781002"),
        eid("890490321234512345123456781003"),
        eid("890490321234512345123456781004"),
    );
    // Line 2 is meant for D; line 4 is mistyped (a matching ID the SM-DP+ does not know).
    let codes = rig.codes_file(&[
        format!("{},{d},,fleet;north,truck 4", rig.code("BATCH-1")),
        rig.code("BATCH-2") + ",,,,",
        rig.code("BATCH-E") + ",,,,",
        rig.code("BATCH-BIG") + ",,,,",
        rig.code("BATCH-3") + ",,,,",
    ]);
    let out = rig.dir.path().join("results.csv");
    let mut st = Station::start(&pcsc, &rig, &state, &codes, &out);
    let (r0, r1) = (pcsc.reader(0), pcsc.reader(1));

    // Two readers at once: lines 3 and 4, the next unused codes, one to each.
    let mut cards = [
        Some(rig.insert(&pcsc, 0, &a, 0)),
        Some(rig.insert(&pcsc, 1, &b, 0)),
    ];
    let (end0, end1) = (st.end(&r0), st.end(&r1));
    let (ok, bad, bad_slot) = if end0["result"] == "ok" {
        (end0, end1, 1u8)
    } else {
        (end1, end0, 0u8)
    };
    assert_eq!(ok["result"], "ok", "{ok}");
    assert!(
        ok["words"]
            .as_str()
            .unwrap()
            .starts_with("OK — take it out"),
        "{ok}"
    );
    assert_eq!(ok["iccid"], rig.iccids["BATCH-2"].as_str());
    assert_eq!(bad["result"], "failed", "{bad}");
    let words = bad["words"].as_str().unwrap();
    assert!(
        words.contains("matching ID is refused") && words.contains("set aside"),
        "{words}"
    );
    assert!(
        !words.contains("BATCH-E"),
        "a matching ID is a secret: {words}"
    );

    // The card that got the mistyped code goes; C comes in its place and gets line 5
    // (the large profile), and is pulled while its package loads.
    pcsc.pull(cards[usize::from(bad_slot)].take().unwrap(), bad_slot);
    let rr = pcsc.reader(bad_slot);
    st.next_card(&rr);
    let slow = rig.insert(&pcsc, bad_slot, &c, 20);
    let assigned = st.next(&rr, "assigned", Duration::from_secs(30));
    assert_eq!(assigned["line"], 5, "{assigned}");
    let preview = st.next(&rr, "preview", Duration::from_secs(60));
    assert_eq!(
        preview["profile"]["iccid"],
        rig.iccids["BATCH-BIG"].as_str()
    );
    st.next(&rr, "loading", Duration::from_secs(60));
    let l = st.next(&rr, "loading", Duration::from_secs(60));
    assert!(
        l["done"].as_u64().unwrap() < l["of"].as_u64().unwrap(),
        "{l}"
    );
    pcsc.pull(slow, bad_slot);
    let pulled = st.end(&rr);
    assert_eq!(pulled["result"], "pulled", "{pulled}");
    assert!(
        pulled["words"]
            .as_str()
            .unwrap()
            .starts_with("CARD PULLED mid-download"),
        "{pulled}"
    );

    // D gets the code meant for its EID (line 2), though line 6 is unused too.
    st.next_card(&rr);
    let card_d = rig.insert(&pcsc, bad_slot, &d, 0);
    let assigned = st.next(&rr, "assigned", Duration::from_secs(30));
    assert_eq!(assigned["line"], 2, "{assigned}");
    assert_eq!(assigned["for_this_eid"], true);
    let end = st.end(&rr);
    assert_eq!(end["result"], "ok", "{end}");
    assert_eq!(end["iccid"], rig.iccids["BATCH-1"].as_str());
    // Installed, not enabled (the card stays Blank for its buyer), with its line's
    // nickname.
    let listed = pcsc
        .simgate()
        .args(["esim", "list", "--json", "--reader", &rr])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let p = &listed["profiles"][0];
    assert_eq!(p["iccid"], rig.iccids["BATCH-1"].as_str(), "{listed}");
    assert_eq!(p["nickname"], "truck 4", "{listed}");
    assert_eq!(p["state"], "disabled", "{listed}");
    pcsc.pull(card_d, bad_slot);

    // C again: its interrupted download is settled with the card (nothing landed: a
    // pulled virtual card comes back blank), and it gets its own code again, no other.
    st.next_card(&rr);
    let _c = rig.insert(&pcsc, bad_slot, &c, 0);
    let assigned = st.next(&rr, "assigned", Duration::from_secs(30));
    assert_eq!(assigned["line"], 5, "{assigned}");
    let settled = st.next(&rr, "reconciled", Duration::from_secs(60));
    assert_eq!(settled["landed"], false, "{settled}");
    let end = st.end(&rr);
    assert_eq!(end["result"], "ok", "{end}");
    assert_eq!(end["iccid"], rig.iccids["BATCH-BIG"].as_str());
    assert_eq!(list_iccids(&pcsc, &rr), [rig.iccids["BATCH-BIG"].clone()]);

    // A card with a profile enabled is shown and skipped, its profiles untouched.
    let ok_slot = 1 - bad_slot;
    pcsc.pull(cards[usize::from(ok_slot)].take().unwrap(), ok_slot);
    let ro = pcsc.reader(ok_slot);
    st.next_card(&ro);
    let _enabled = pcsc.insert(ok_slot, "euicc.toml");
    let skipped = st.end(&ro);
    assert_eq!(skipped["result"], "skipped", "{skipped}");
    assert!(
        skipped["words"].as_str().unwrap().starts_with("not Blank"),
        "{skipped}"
    );
    st.proc.interrupt();

    let rows = results(&out);
    assert_each_code_once(&rows);
    let ok_codes: Vec<_> = rows
        .iter()
        .filter(|r| r[3] == "ok")
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(ok_codes.len(), 3, "{rows:?}");
    assert!(ok_codes.contains(&(d.clone(), rig.iccids["BATCH-1"].clone())));
    assert!(
        rows.iter()
            .any(|r| r[0] == d && r[3] == "ok" && r[5] == "fleet;north"),
        "the code's labels: {rows:?}"
    );
    assert!(ok_codes.contains(&(c.clone(), rig.iccids["BATCH-BIG"].clone())));
    assert!(
        rows.iter().any(|r| r[3] == "pulled" && r[0] == c),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[3] == "failed" && r[4].contains("matching ID is refused")),
        "{rows:?}"
    );
    // The confirmation codes never reach the CSV (none here) nor the log: the file is
    // the record; the store holds digests only (checked by the restart test).
}

#[test]
fn a_station_killed_mid_download_never_hands_a_code_to_a_second_card_after_restart() {
    let rig = Rig::new(&["RESTART-1", "RESTART-BIG", "RESTART-3"]);
    let pcsc = Pcsc::start();
    let state = rig.dir.path().join("state");
    let codes = rig.codes_file(&[
        rig.code("RESTART-1") + ",,,,",
        rig.code("RESTART-BIG") + ",,,,",
        rig.code("RESTART-3") + ",,,,",
    ]);
    let out = rig.dir.path().join("results.csv");
    let (a, b, c) = (
        eid("890490321234512345123456782001"),
        eid("890490321234512345123456782002"),
        eid("890490321234512345123456782003"),
    );
    let (r0, r1) = (pcsc.reader(0), pcsc.reader(1));
    let mut st = Station::start(&pcsc, &rig, &state, &codes, &out);
    let a_card = rig.insert(&pcsc, 0, &a, 0);
    let end = st.end(&r0);
    assert_eq!(end["iccid"], rig.iccids["RESTART-1"].as_str(), "{end}");
    // B gets the large profile and the station is killed while its package loads.
    st.next_card(&r1);
    let _b = rig.insert(&pcsc, 1, &b, 20);
    let assigned = st.next(&r1, "assigned", Duration::from_secs(30));
    assert_eq!(assigned["line"], 3, "{assigned}");
    st.next(&r1, "loading", Duration::from_secs(60));
    st.next(&r1, "loading", Duration::from_secs(60));
    st.proc.kill9();

    // Restarted on the same state: A (still in) is known as provisioned; B (still in,
    // its session half loaded) is settled with the card and gets its own code again.
    let mut st = Station::start(&pcsc, &rig, &state, &codes, &out);
    let again = st.end(&r0);
    assert_eq!(again["result"], "skipped", "{again}");
    assert!(
        again["words"]
            .as_str()
            .unwrap()
            .starts_with("already provisioned"),
        "{again}"
    );
    let assigned = st.next(&r1, "assigned", Duration::from_secs(30));
    assert_eq!(assigned["line"], 3, "B keeps its code: {assigned}");
    let settled = st.next(&r1, "reconciled", Duration::from_secs(60));
    assert_eq!(settled["landed"], false, "{settled}");
    let end = st.end(&r1);
    assert_eq!(end["iccid"], rig.iccids["RESTART-BIG"].as_str(), "{end}");
    // A new card gets the one code left, not A's nor B's.
    pcsc.pull(a_card, 0);
    st.next_card(&r0);
    let _c = rig.insert(&pcsc, 0, &c, 0);
    let end = st.end(&r0);
    assert_eq!(end["iccid"], rig.iccids["RESTART-3"].as_str(), "{end}");
    st.proc.interrupt();

    let rows = results(&out);
    assert_each_code_once(&rows);
    assert_eq!(rows.iter().filter(|r| r[3] == "ok").count(), 3, "{rows:?}");
    // The store names codes by digest only: no matching ID in the state directory.
    let mut db = Vec::new();
    for e in std::fs::read_dir(state.join("db")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            db.extend(std::fs::read(p).unwrap());
        }
    }
    let text = String::from_utf8_lossy(&db);
    assert!(text.contains(&b), "the assignment is stored");
    assert!(
        !text.contains("RESTART-"),
        "a matching ID reached the store"
    );
}

#[test]
fn a_mistyped_code_file_is_refused_at_start_with_file_line_and_what_is_wrong() {
    let dir = TempDir::new("provision-bad");
    let codes = dir.path().join("codes.csv");
    std::fs::write(
        &codes,
        "activation_code,eid\nLPA:1$127.0.0.1:8443$GOOD-1,\nLPA:1$127.0.0.1:8443$GOOD 2,\nLPA:1$127.0.0.1:8443$GOOD-3,8904903212345123451234567891006\n",
    )
    .unwrap();
    let pcsc = Pcsc::start();
    let out = pcsc
        .simgate()
        .args(["station", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--provision")
        .arg(&codes)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = codes.display();
    assert!(
        err.contains(&format!(
            "{shown}:3: activation_code: matching ID: letters, digits and '-' only"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{shown}:4: eid \"")), "{err}");
    assert!(!err.contains("GOOD"), "a matching ID in an error: {err}");
    assert!(!dir.path().join("codes.results.csv").exists());
}

#[test]
fn the_station_page_shows_the_code_the_preview_and_ok_take_it_out() {
    let rig = Rig::new(&["PAGE-1"]);
    let pcsc = Pcsc::start();
    let codes = rig.codes_file(&[rig.code("PAGE-1") + ",,,,"]);
    let port = support::free_port();
    let mut station = Proc::spawn(
        "simgate station --provision --http",
        pcsc.simgate()
            .args(["station", "--json", "--state-dir"])
            .arg(rig.dir.path().join("state"))
            .arg("--provision")
            .arg(&codes)
            .arg("--ci-dir")
            .arg(&rig.pki)
            .args(["--http", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );
    support::wait_for(
        "the station page to answer",
        Duration::from_secs(20),
        || {
            assert!(station.child.try_wait().ok().flatten().is_none());
            support::browser::http(port, "GET", "/", &[], None).is_ok_and(|(s, _)| s == 200)
        },
    );
    let browser = support::browser::Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.until(
        "the page's live stream",
        "document.getElementById('live').classList.contains('on')",
        Duration::from_secs(20),
    );
    // Inserted after the page loaded: the card's box fills in as it goes.
    let _card = rig.insert(&pcsc, 0, &eid("890490321234512345123456785001"), 0);
    let text = browser.until(
        "the card's loud end",
        "(t => t.includes('OK — take it out') && t)(document.getElementById('provisions').innerText)",
        Duration::from_secs(60),
    );
    let text = text.as_str().unwrap();
    assert!(text.contains("code of line 2"), "{text}");
    assert!(
        text.contains(&format!("profile {}", rig.iccids["PAGE-1"])),
        "the preview: {text}"
    );
    assert!(
        !text.contains("PAGE-1"),
        "a matching ID on the page: {text}"
    );
    // A page opened afterwards sees the same (from the snapshot).
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    browser.until(
        "the card's end in the snapshot",
        "document.getElementById('provisions').innerText.includes('OK — take it out')",
        Duration::from_secs(20),
    );
    station.interrupt();
}
