//! `simgate esim download`: a profile downloaded from the test SM-DP+ (`simgate emulate
//! smdp`, ES9+ over HTTPS on loopback) onto the virtual eUICC (through pcscd + vpcd, and
//! behind the emulated modem's +CGLA and +CSIM), both doubles with real SGP.22
//! cryptography and keys from a PKI the rig makes at test time (tests/rig/rsp-pki.sh).
//! Each failure must end cancelled on both sides and reconciled by listing again.

use crate::support::{self, smdp, Modem, Pcsc, TempDir};
use std::path::Path;
use std::process::Output;

/// The Blank eUICC's EID (devices/cards/euicc-blank.toml): the PKI's eUICC certificate
/// carries it (SGP.22 §4.5.2.1.0.2: the serialNumber of CERT.EUICC.ECDSA).
const EID: &str = "89049032123451234512345678910062";
const PROFILE: &str = "8900101000000000019";
const PROFILE_CC: &str = "8900101000000000027";

struct Rig {
    _dir: TempDir,
    pki: std::path::PathBuf,
    smdp: smdp::Smdp,
}

fn rig(smdp_args: &[&str]) -> Rig {
    rig_for(EID, smdp_args)
}

/// The emulated modem's eSIM (src/emu/modem.rs: an eUICC with two profiles, one enabled).
const MODEM_EID: &str = "89049032123451234512345678901235";

fn rig_for(eid: &str, smdp_args: &[&str]) -> Rig {
    let dir = TempDir::new("rsp");
    let pki = smdp::rsp_pki(&dir.path().join("pki"), eid);
    let smdp = smdp::Smdp::start(&pki, &smdp::shipped_profiles(), smdp_args);
    Rig {
        _dir: dir,
        pki,
        smdp,
    }
}

fn pki_arg(pki: &Path) -> String {
    pki.display().to_string()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The final JSON line of a `--json` download.
fn result(out: &Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .rfind(|v| v.get("result").is_some())
        .unwrap_or_else(|| {
            panic!(
                "no result line; stdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn download(pcsc: &Pcsc, rig: &Rig, code: &str, extra: &[&str]) -> Output {
    pcsc.simgate()
        .args([
            "esim",
            "download",
            "--yes",
            "--json",
            "--activation-code",
            code,
        ])
        .args(["--ci-dir", &pki_arg(&rig.pki)])
        .args(extra)
        .output()
        .unwrap()
}

fn list(pcsc: &Pcsc) -> serde_json::Value {
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
    serde_json::from_slice(&out.stdout).unwrap()
}

fn iccids(list: &serde_json::Value) -> Vec<String> {
    list["profiles"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["iccid"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn blank_euicc(pcsc: &Pcsc, rig: &Rig) -> support::Card {
    pcsc.insert_with(0, "euicc-blank.toml", &["--pki", &pki_arg(&rig.pki)])
}

#[test]
fn a_profile_downloads_through_pcscd_enabled_listed_and_its_notification_delivered() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);

    let out = download(
        &pcsc,
        &rig,
        &rig.smdp.activation_code("SIMGATE-TEST-1"),
        &["--enable", "--nickname", "field-1"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let steps: Vec<String> = json_lines(&out)
        .iter()
        .filter_map(|v| v["step"].as_str().map(str::to_string))
        .collect();
    for s in [
        "challenge",
        "server_authenticated",
        "preview",
        "confirmed",
        "package",
        "installing",
        "installed",
        "notification_sent",
    ] {
        assert!(
            steps.iter().any(|x| x == s),
            "step {s} missing in {steps:?}"
        );
    }
    let preview = json_lines(&out)
        .into_iter()
        .find(|v| v["step"] == "preview")
        .unwrap();
    assert_eq!(preview["profile"]["iccid"], PROFILE);
    assert_eq!(preview["profile"]["name"], "simgate test profile 1");
    let r = result(&out);
    assert_eq!(r["result"], "installed");
    assert_eq!(r["iccid"], PROFILE);
    assert_eq!(r["enabled"], true, "{r}");
    assert_eq!(r["notification_sent"], true);

    // Verified independently: the card lists it enabled, with its nickname; the SIM now
    // reads as the new profile; the SM-DP+ received a verified install notification and
    // the card no longer holds it.
    let l = list(&pcsc);
    let p = l["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["iccid"] == PROFILE)
        .cloned()
        .expect("the new profile is listed");
    assert_eq!(p["state"], "enabled");
    assert_eq!(p["nickname"], "field-1");
    let read = pcsc.simgate().args(["read", "--json"]).output().unwrap();
    let read: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    let card = &read.as_array().map(|a| a[0].clone()).unwrap_or(read);
    assert_eq!(card["iccid"], PROFILE, "{card}");
    assert_eq!(card["imsi"], "001010000000019", "{card}");
    let n = rig.smdp.events("notification");
    assert!(
        n.iter()
            .any(|e| e["iccid"] == PROFILE && e["verified"] == true && e["kind"] == "install"),
        "{n:?}"
    );
    let pending = pcsc
        .simgate()
        .args(["esim", "notifications", "--json"])
        .output()
        .unwrap();
    let pending: serde_json::Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert!(
        !pending
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["event"] == "install"),
        "the install notification left the card once delivered: {pending}"
    );

    // The enable is the profile's SM-DP+'s to know too (its metadata asks for it):
    // delivered over ES9+ on demand, and gone from the card once delivered.
    assert!(
        pending
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["event"] == "enable"),
        "{pending}"
    );
    let sent = pcsc
        .simgate()
        .args([
            "esim",
            "notifications",
            "--send",
            "--json",
            "--ci-dir",
            &pki_arg(&rig.pki),
        ])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    assert!(
        sent.as_array()
            .unwrap()
            .iter()
            .any(|d| d["event"] == "enable" && d["outcome"] == "delivered"),
        "{sent}"
    );
    assert!(rig
        .smdp
        .events("notification")
        .iter()
        .any(|e| e["iccid"] == PROFILE && e["kind"] == "enable" && e["verified"] == true));
    let left = pcsc
        .simgate()
        .args(["esim", "notifications", "--json"])
        .output()
        .unwrap();
    let left: serde_json::Value = serde_json::from_slice(&left.stdout).unwrap();
    assert_eq!(
        left,
        serde_json::json!([]),
        "delivered notifications leave the card"
    );
}

#[test]
fn a_confirmation_code_is_required_sent_hashed_and_a_wrong_one_is_refused_and_cancelled() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);
    let code = rig.smdp.activation_code("SIMGATE-TEST-CC");

    // The SM-DP+ asks for a code the user did not give: said before anything is bound.
    let out = download(&pcsc, &rig, &code, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("confirmation code"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let wrong = download(&pcsc, &rig, &code, &["--confirmation-code", "9999"]);
    assert!(!wrong.status.success());
    let r = result(&wrong);
    assert_eq!(r["result"], "failed");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("confirmation code is refused"),
        "{r}"
    );
    assert_eq!(r["reconciled"]["card_cancel"], "cancelled", "{r}");
    assert_eq!(r["reconciled"]["server_cancel"], "cancelled", "{r}");
    assert!(!iccids(&list(&pcsc)).contains(&PROFILE_CC.to_string()));
    assert!(!rig.smdp.events("cancelled").is_empty());
    // The code never travels or prints in clear.
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains("9999"));

    let right = download(&pcsc, &rig, &code, &["--confirmation-code", "1234"]);
    assert!(
        right.status.success(),
        "{}",
        String::from_utf8_lossy(&right.stderr)
    );
    assert!(iccids(&list(&pcsc)).contains(&PROFILE_CC.to_string()));
}

#[test]
fn an_unknown_matching_id_is_refused_in_words_with_its_codes() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);
    let out = download(&pcsc, &rig, &rig.smdp.activation_code("NO-SUCH-ORDER"), &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a wrong activation code is the user's"
    );
    let r = result(&out);
    let e = r["error"].as_str().unwrap();
    assert!(
        e.contains("matching ID is refused") && e.contains("8.2.6"),
        "{e}"
    );
    assert_eq!(r["reconciled"]["card_cancel"], "cancelled", "{r}");
    assert!(iccids(&list(&pcsc)).is_empty());
}

#[test]
fn a_server_certificate_from_another_ci_is_refused_by_name() {
    let rig = rig(&[]);
    let other = TempDir::new("other-ci");
    let other_pki = smdp::rsp_pki_named(&other.path().join("pki"), EID, "other");
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);
    let out = pcsc
        .simgate()
        .args(["esim", "download", "--yes", "--json", "--activation-code"])
        .arg(rig.smdp.activation_code("SIMGATE-TEST-1"))
        .args(["--ci-dir", &pki_arg(&other_pki)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let r = result(&out);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("does not chain to a configured CI"),
        "{r}"
    );
    assert!(
        rig.smdp.events("call").is_empty(),
        "no ES9+ call reached the server"
    );
}

/// A download of SIMGATE-TEST-1 onto a Blank eUICC in a reader, from an SM-DP+ playing
/// `fault`: it must fail. Its result line, with the rig and the card still there.
fn failing_download(fault: &str) -> (Rig, Pcsc, support::Card, serde_json::Value) {
    let rig = rig(&["--fault", fault]);
    let pcsc = Pcsc::start();
    let card = blank_euicc(&pcsc, &rig);
    let out = download(
        &pcsc,
        &rig,
        &rig.smdp.activation_code("SIMGATE-TEST-1"),
        &[],
    );
    assert!(
        !out.status.success(),
        "a download against {fault} succeeded"
    );
    let r = result(&out);
    (rig, pcsc, card, r)
}

#[test]
fn a_bad_server_signature_is_refused_by_the_euicc_and_nothing_installed() {
    let (_rig, pcsc, _card, r) = failing_download("bad-signature");
    assert_eq!(r["at"], "AuthenticateServer", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("invalidSignature"),
        "{r}"
    );
    assert!(iccids(&list(&pcsc)).is_empty());
}

#[test]
fn a_package_with_a_bad_mac_is_refused_by_the_euicc_and_its_result_reaches_the_server() {
    let (rig, _pcsc, _card, r) = failing_download("bad-mac");
    assert_eq!(r["at"], "LoadBoundProfilePackage", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("scp03tSecurityError"),
        "{r}"
    );
    assert_eq!(r["reconciled"]["profiles"], serde_json::json!([]), "{r}");
    // The eUICC's error result is the session's end on the server side too.
    let n = rig.smdp.events("notification");
    assert!(n.iter().any(|e| e["kind"] == "install"), "{n:?}");
}

#[test]
fn the_server_gone_mid_download_cancels_the_card_session_and_reconciles() {
    let rig = rig(&["--fault", "gone-after-bpp-request"]);
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);
    let out = download(
        &pcsc,
        &rig,
        &rig.smdp.activation_code("SIMGATE-TEST-1"),
        &[],
    );
    assert!(!out.status.success());
    let r = result(&out);
    assert_eq!(r["at"], "getBoundProfilePackage", "{r}");
    assert_eq!(r["reconciled"]["card_cancel"], "cancelled", "{r}");
    assert_eq!(r["reconciled"]["profiles"], serde_json::json!([]), "{r}");
    // The card is usable at once: the same order downloads.
    let again = smdp::Smdp::start(&rig.pki, &smdp::shipped_profiles(), &[]);
    let ok = download(&pcsc, &rig, &again.activation_code("SIMGATE-TEST-1"), &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn a_second_download_of_an_installed_iccid_is_refused_by_the_euicc() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = blank_euicc(&pcsc, &rig);
    let code = rig.smdp.activation_code("SIMGATE-TEST-1");
    assert!(download(&pcsc, &rig, &code, &[]).status.success());
    let out = download(&pcsc, &rig, &code, &[]);
    assert!(!out.status.success());
    let r = result(&out);
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("already on the eUICC"),
        "{r}"
    );
    // Listed once, still there: the earlier install is not mistaken for this one.
    assert_eq!(iccids(&list(&pcsc)), [PROFILE]);
}

#[test]
fn a_card_that_stops_answering_mid_package_ends_in_a_failure_with_its_state_unknown() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = pcsc.insert_with(
        0,
        "euicc-blank-lost-mid-install.toml",
        &["--pki", &pki_arg(&rig.pki)],
    );
    // A short card time-out: the download's bound is 4 of them plus 5 SM-DP+ time-outs.
    let cfg = rig._dir.path().join("simgate.toml");
    std::fs::write(
        &cfg,
        "[readers]\ncard_timeout_ms = 1000\n[esim]\nsmdp_timeout_secs = 2\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = pcsc
        .simgate()
        .arg("--config")
        .arg(&cfg)
        .args(["esim", "download", "--yes", "--json", "--activation-code"])
        .arg(rig.smdp.activation_code("SIMGATE-TEST-BIG"))
        .args(["--ci-dir", &pki_arg(&rig.pki)])
        .output()
        .unwrap();
    eprintln!(
        "a mute card ended the download after {:?}",
        started.elapsed()
    );
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("installed"), "{err}");
}

/// A download onto the emulated modem's eSIM, enabled: a gateway moved to another
/// operator's profile.
fn modem_download(family: &str, rig: &Rig) -> (Output, Modem) {
    let mut m = Modem::start_with(family, &["--esim", "--pki", &pki_arg(&rig.pki)]);
    let out = std::process::Command::new(support::simgate_bin())
        .args(["esim", "download", "--yes", "--json", "--port", &m.port])
        .args([
            "--activation-code",
            &rig.smdp.activation_code("SIMGATE-TEST-1"),
        ])
        .args(["--ci-dir", &pki_arg(&rig.pki), "--enable"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    m.control("status");
    (out, m)
}

#[test]
fn a_profile_downloads_through_a_modems_cgla_and_the_modem_follows_the_new_iccid() {
    let rig = rig_for(MODEM_EID, &[]);
    let (out, m) = modem_download("generic-3gpp", &rig);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = result(&out);
    assert_eq!(r["iccid"], PROFILE);
    assert_eq!(r["enabled"], true);
    let info = std::process::Command::new(support::simgate_bin())
        .args(["modem", "info", "--json", "--port", &m.port])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["sim"]["iccid"], PROFILE, "{info}");
}

#[test]
fn a_profile_downloads_through_csim_on_a_family_without_cgla() {
    let rig = rig_for(MODEM_EID, &[]);
    let (out, _m) = modem_download("generic-csim", &rig);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(result(&out)["iccid"], PROFILE);
}

#[test]
fn a_kill_mid_package_is_reconciled_by_the_next_download_on_that_reader() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    // 5 ms per APDU, as a real reader with a T=0 card: the package takes a while.
    let _card = pcsc.insert_with(
        0,
        "euicc-blank.toml",
        &["--pki", &pki_arg(&rig.pki), "--latency-ms", "5"],
    );
    let state = rig._dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = rig._dir.path().join("simgate.toml");
    std::fs::write(
        &cfg,
        format!("[agent]\nstate_dir = \"{}\"\n", state.display()),
    )
    .unwrap();
    let code = rig.smdp.activation_code("SIMGATE-TEST-BIG");
    let mut first = support::Proc::spawn(
        "simgate esim download",
        configured_download(&pcsc, &rig, &cfg, &code).stdout(std::process::Stdio::piped()),
    );
    let mut lines = support::Lines::new(first.child.stdout.take().unwrap());
    let seen = lines.expect(
        "the package half loaded",
        std::time::Duration::from_secs(60),
        |l| l.contains("\"installing\"") && l.contains("\"done\":5,"),
    );
    first.kill9();
    let tid = rig
        .smdp
        .events("call")
        .into_iter()
        .find_map(|c| c["transactionId"].as_str().map(str::to_string))
        .expect("the first download's transaction");
    assert!(seen.contains("installing"));

    let out = configured_download(&pcsc, &rig, &cfg, &code)
        .output()
        .unwrap();
    let lines = json_lines(&out);
    let old = lines
        .iter()
        .find(|v| v["step"] == "interrupted_download")
        .unwrap_or_else(|| panic!("no reconcile of the killed download: {lines:?}"));
    assert_eq!(old["transaction_id"], tid);
    assert_eq!(old["landed"], false, "{old}");
    assert_eq!(old["profiles"], serde_json::json!([]), "{old}");
    // The card lost its session with the process that held it (a new PC/SC connection):
    // it cannot sign the session's end, and says so; the server's session expires.
    assert!(old["card_cancel"].is_string(), "{old}");
    assert!(old["server_cancel"].is_string(), "{old}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(result(&out)["iccid"], "8900101000000000035");
}

#[test]
fn without_an_activation_code_the_euiccs_default_smdp_is_asked() {
    let rig = rig(&[]);
    let pcsc = Pcsc::start();
    let _card = pcsc.insert_with(
        0,
        "euicc-blank.toml",
        &[
            "--pki",
            &pki_arg(&rig.pki),
            "--default-smdp",
            &rig.smdp.address,
        ],
    );
    let out = pcsc
        .simgate()
        .args([
            "esim",
            "download",
            "--yes",
            "--json",
            "--ci-dir",
            &pki_arg(&rig.pki),
        ])
        .output()
        .unwrap();
    // The test SM-DP+ keeps no order for this EID without a matching ID: it refuses, and
    // says so — after the eUICC's default address (ES10a) led the LPA to it.
    let r = result(&out);
    assert_eq!(r["result"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("8.2.6"), "{r}");
    let calls = rig.smdp.events("call");
    assert!(
        calls
            .iter()
            .any(|c| c["function"] == "initiateAuthentication"),
        "{calls:?}"
    );
}

/// `simgate --config CFG esim download --yes --json` of `code`, trusting the rig's CI.
fn configured_download(pcsc: &Pcsc, rig: &Rig, cfg: &Path, code: &str) -> std::process::Command {
    let mut c = pcsc.simgate();
    c.arg("--config")
        .arg(cfg)
        .args([
            "esim",
            "download",
            "--yes",
            "--json",
            "--activation-code",
            code,
        ])
        .args(["--ci-dir", &pki_arg(&rig.pki)]);
    c
}

/// Guards `modems.euicc_transport`: a module whose firmware refuses +CGLA although its
/// family has it (lpac's users meet this inside LoadBoundProfilePackage) downloads
/// through +CSIM once its port is set so — and the port's setting reaches every
/// one-shot command at that port (they used the shipped profiles only).
#[test]
fn a_port_set_to_csim_downloads_where_its_firmware_refuses_cgla() {
    let rig = rig_for(MODEM_EID, &[]);
    let m = Modem::start_with(
        "generic-3gpp",
        &["--esim", "--pki", &pki_arg(&rig.pki), "--refuse", "AT+CGLA"],
    );
    let download = |cfg: &str| {
        let file = rig._dir.path().join("simgate.toml");
        std::fs::write(&file, cfg).unwrap();
        std::process::Command::new(support::simgate_bin())
            .arg("--config")
            .arg(&file)
            .args(["esim", "download", "--yes", "--json", "--port", &m.port])
            .args([
                "--activation-code",
                &rig.smdp.activation_code("SIMGATE-TEST-1"),
            ])
            .args(["--ci-dir", &pki_arg(&rig.pki)])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let refused = download("");
    assert!(
        !refused.status.success(),
        "+CGLA is refused: {}",
        String::from_utf8_lossy(&refused.stdout)
    );
    let out = download(&format!(
        "[modems.euicc_transport]\n\"{}\" = \"csim\"\n",
        m.port
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(result(&out)["iccid"], PROFILE);
}
