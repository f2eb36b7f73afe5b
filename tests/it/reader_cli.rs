//! `simgate readers` and `simgate read` through a real pcscd with vpcd and simgate's
//! virtual cards.

use crate::support;

use support::Pcsc;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn read_identifies_a_usim_and_a_gsm_sim_through_pcscd() {
    let pcsc = Pcsc::start();
    let _usim = pcsc.insert(0, "usim.toml");
    let _gsm = pcsc.insert(1, "gsm-sim.toml");

    let out = pcsc.simgate().args(["read", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let usim = rows
        .iter()
        .find(|r| r["reader"] == pcsc.reader(0))
        .expect("a row for reader 0");
    assert_eq!(usim["iccid"], "8988211000000430010");
    assert_eq!(usim["kind"], "uicc");
    assert_eq!(usim["luhn_ok"], true);
    assert_eq!(usim["atr"], "3B9F96801FC78031A073BE21136743200718000001A5");
    assert_eq!(usim["form_factor"], "physical");
    assert_eq!(usim["imsi"], "228062800000208");
    assert_eq!(usim["operator"], "SBB GSM-R");
    assert!(usim.get("eid").is_none(), "{usim}");
    assert_eq!(
        usim["apdus"], 2,
        "a physical UICC: ICCID by SFI, SELECT of the standard ISD-R"
    );
    let gsm = rows
        .iter()
        .find(|r| r["reader"] == pcsc.reader(1))
        .expect("a row for reader 1");
    assert_eq!(gsm["iccid"], "8988211000000530082");
    assert_eq!(gsm["kind"], "gsm");
    assert_eq!(
        gsm["apdus"], 3,
        "GSM SIM: refused CLA 00, then SELECT + READ BINARY with CLA A0"
    );
    assert_eq!(gsm["imsi"], "262011106487504");
    assert_eq!(gsm["form_factor"], "physical");
}

#[test]
fn read_of_one_named_reader_prints_a_table() {
    let pcsc = Pcsc::start();
    let _usim = pcsc.insert(1, "usim.toml");
    let out = pcsc
        .simgate()
        .args(["read", "--reader", &pcsc.reader(1)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with(&pcsc.reader(1)))
        .unwrap_or_else(|| panic!("no row: {text}"));
    assert!(
        row.contains("8988211000000430010") && row.contains(" ok ") && row.contains("uicc"),
        "{row}"
    );
}

#[test]
fn readers_shows_which_reader_holds_a_card_with_its_atr() {
    let pcsc = Pcsc::start();
    let card = pcsc.insert(0, "gsm-sim.toml");
    let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
    let list = json(&out);
    assert_eq!(list[0]["name"], pcsc.reader(0));
    assert_eq!(list[0]["card_present"], true);
    assert_eq!(list[0]["atr"], "3B1694718001050000");
    assert_eq!(list[1]["name"], pcsc.reader(1));
    assert_eq!(list[1]["card_present"], false);

    card.remove();
    support::wait_for(
        "pcscd to see the card gone",
        std::time::Duration::from_secs(10),
        || {
            let out = pcsc.simgate().args(["readers", "--json"]).output().unwrap();
            json(&out)[0]["card_present"] == false
        },
    );
}

#[test]
fn read_of_a_reader_that_does_not_exist_fails_naming_it_and_the_readers_present() {
    let pcsc = Pcsc::start();
    let out = pcsc
        .simgate()
        .args(["read", "--reader", "No Such Reader"])
        .output()
        .unwrap();
    // The user's input, not the work failing: 2, as the README's exit codes say.
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no reader named \"No Such Reader\""), "{err}");
    assert!(
        err.contains(&pcsc.reader(0)) && err.contains(&pcsc.reader(1)),
        "{err}"
    );
}

#[test]
fn read_with_no_card_anywhere_says_so_and_fails() {
    let pcsc = Pcsc::start();
    let out = pcsc.simgate().args(["read"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no card could be read"));
}

#[test]
fn read_shows_a_blank_esim_as_blank_and_no_luhn_verdict_without_an_iccid() {
    let pcsc = Pcsc::start();
    let _blank = pcsc.insert(0, "euicc-blank.toml");
    let out = pcsc.simgate().args(["read"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&pcsc.reader(0)))
        .unwrap_or_else(|| panic!("no line for the reader: {text}"));
    let cols: Vec<&str> = line[pcsc.reader(0).len()..].split_whitespace().collect();
    // ICCID "-", LUHN "-" (nothing to check), KIND, FORM "esim (blank)", EID, ATR.
    assert_eq!(&cols[..2], ["-", "-"], "{line}");
    assert!(line.contains("esim (blank)"), "{line}");
}

#[test]
fn read_of_one_mute_card_ends_at_the_card_timeout_naming_the_reader() {
    // One card is read on the command's own thread: a watchdog, not a waiting thread,
    // bounds it (src/cli/read.rs).
    let pcsc = Pcsc::start();
    let dir = support::TempDir::new("read-mute");
    let config = dir.path().join("simgate.toml");
    std::fs::write(&config, "[readers]\ncard_timeout_ms = 1000\n").unwrap();
    let _mute = pcsc.insert(0, "mute.toml");
    let mut read = support::Proc::spawn(
        "simgate read",
        pcsc.simgate()
            .arg("--config")
            .arg(&config)
            .args(["read", "--reader", &pcsc.reader(0)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );
    // A bound for a loaded machine, far above the 1 s time-out: without one the read
    // would wait on the card for ever.
    let status = read.wait(std::time::Duration::from_secs(60));
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut read.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(&format!("reader \"{}\"", pcsc.reader(0)))
            && err.contains("card did not answer within 1s")
            && err.contains("no card could be read"),
        "{err}"
    );
}
