//! Locked SIMs (PIN1 enabled) on the real stack: a reader card through pcscd + vpcd and
//! simgate's virtual card, a modem SIM through the emulator on a pty. The ICCID is read
//! before any PIN, so a locked SIM has its row with its lock state; PINs never guessed.

use crate::support;

use simgate::emu::modem::{self as emulator, Options};
use simgate::emu::pin::SimPin;
use simgate::modem::Profiles;
use std::process::Command;
use support::Pcsc;
use tokio_util::sync::CancellationToken;

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
fn a_reader_card_with_pin_enabled_has_its_iccid_and_lock_state_but_no_imsi() {
    let pcsc = Pcsc::start();
    let _locked = pcsc.insert(0, "usim-pin.toml");
    let _last = pcsc.insert(1, "usim-pin-last.toml");
    let out = pcsc.simgate().args(["read", "--json"]).output().unwrap();
    let rows = json(&out);
    let row = |slot: u8| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["reader"] == pcsc.reader(slot))
            .cloned()
            .unwrap_or_else(|| panic!("a row for reader {slot}: {rows}"))
    };
    let locked = row(0);
    assert_eq!(locked["iccid"], "8988211000000430010");
    assert!(
        locked.get("imsi").is_none(),
        "EF.IMSI is behind PIN1: {locked}"
    );
    assert_eq!(
        locked["lock"],
        serde_json::json!({"state": "pin_required", "pin_enabled": true, "pin_attempts": 3})
    );
    // The SPN has no PIN condition and is still read.
    assert_eq!(locked["spn"], "GSM-R CH");
    let last = row(1);
    assert_eq!(last["iccid"], "8988211000000430028");
    assert_eq!(last["lock"]["pin_attempts"], 1);

    // The text view says it too.
    let text = pcsc.simgate().arg("read").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("pin_required (3 PIN attempts left)"),
        "{text}"
    );
}

#[test]
fn a_card_without_pin_is_ready_at_no_extra_apdu() {
    let pcsc = Pcsc::start();
    let _card = pcsc.insert(0, "usim.toml");
    let out = pcsc.simgate().args(["read", "--json"]).output().unwrap();
    let rows = json(&out);
    let r = &rows[0];
    assert_eq!(r["lock"], serde_json::json!({"state": "ready"}));
    assert_eq!(r["imsi"], "228062800000208");
    // The readable IMSI is the proof: no VERIFY spent (ICCID, ISD-R probe).
    assert_eq!(r["apdus"], 2);
}

async fn modem_info(f: impl FnOnce(&mut Options)) -> serde_json::Value {
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get("quectel-ec2x").unwrap().clone());
    f(&mut opts);
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let port = emu.path().display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(support::simgate_bin())
            .args(["modem", "info", "--port", &port, "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    cancel.cancel();
    json(&out)
}

fn locked_sim(opts: &mut Options, attempts: u8) {
    let mut pin = SimPin::new("1234");
    pin.attempts = attempts;
    if let Some(s) = opts.sim.as_mut() {
        s.pin = Some(pin);
    }
    opts.session_up = false;
}

#[tokio::test]
async fn a_locked_modem_sim_has_its_iccid_and_lock_state_with_the_familys_counters() {
    let v = modem_info(|o| locked_sim(o, 2)).await;
    let sim = &v["sim"];
    assert_eq!(sim["state"], "SIM PIN");
    assert_eq!(sim["iccid"], "8901260886258128535", "{v}");
    assert!(sim["imsi"].is_null(), "{v}");
    assert_eq!(
        sim["lock"],
        serde_json::json!({"state": "pin_required", "pin_enabled": true, "pin_attempts": 2, "puk_attempts": 10})
    );
}

#[tokio::test]
async fn a_ready_modem_sim_says_whether_its_pin_is_enabled_on_the_identification_line() {
    let v = modem_info(|_| {}).await;
    assert_eq!(
        v["sim"]["lock"],
        serde_json::json!({"state": "ready", "pin_enabled": false, "pin_attempts": 3, "puk_attempts": 10})
    );
    assert!(v["at_commands"].as_u64().unwrap() <= 12, "{v}");
}

fn card(name: &str) -> simgate::emu::vcard::VirtualCard {
    let path = support::repo().join("devices/cards").join(name);
    let image = simgate::emu::vcard::CardImage::load(&path).unwrap_or_else(|e| panic!("{e}"));
    simgate::emu::vcard::VirtualCard::new(image)
}

/// The card engine over the virtual card in memory: what the APDUs do, exactly.
#[test]
fn imsi_missing_then_read_after_verify_and_counters_outlive_a_reset() {
    use simgate::card::apdu::Channel;
    use simgate::card::pin::{self, PinOp, PinOutcome, Secret};
    use simgate::card::{identify, CardKind, Options};
    use simgate::sim::LockState;

    let mut c = card("usim-pin.toml");
    let id = identify(&mut c, &Options::default()).unwrap();
    assert!(id.imsi.is_none());
    assert_eq!(id.lock.unwrap().state, LockState::PinRequired);
    // The lock state cost one VERIFY without data, counted with the subscriber reads.
    assert_eq!(id.apdus_subscriber, 5);

    let mut ch = Channel::new(&mut c);
    let wrong = Secret::pin("0000").unwrap();
    assert_eq!(
        pin::run(&mut ch, CardKind::Uicc, PinOp::Verify, &wrong, None).unwrap(),
        PinOutcome::Wrong { attempts_left: 2 }
    );
    c.reset();
    let id = identify(&mut c, &Options::default()).unwrap();
    assert_eq!(
        id.lock.unwrap().pin_attempts,
        Some(2),
        "a reset keeps the counter"
    );

    let mut ch = Channel::new(&mut c);
    let right = Secret::pin("1234").unwrap();
    assert_eq!(
        pin::run(&mut ch, CardKind::Uicc, PinOp::Verify, &right, None).unwrap(),
        PinOutcome::Done
    );
    let id = identify(&mut c, &Options::default()).unwrap();
    assert_eq!(id.imsi.as_deref(), Some("228062800000208"));
    assert_eq!(id.lock.unwrap().state, LockState::Ready);
    c.reset();
    let id = identify(&mut c, &Options::default()).unwrap();
    assert!(id.imsi.is_none(), "a reset forgets the verification");
    assert_eq!(
        id.lock.unwrap().pin_attempts,
        Some(3),
        "a right PIN restores the counter"
    );
}

#[test]
fn a_blocked_reader_card_tells_its_puk_attempts_and_a_dead_one_says_blocked() {
    use simgate::card::apdu::Channel;
    use simgate::card::pin::{self, PinOp, Secret};
    use simgate::card::{identify, CardKind, Options};
    use simgate::sim::LockState;

    let mut c = card("usim-pin-last.toml");
    let mut ch = Channel::new(&mut c);
    let wrong = Secret::pin("0000").unwrap();
    pin::run(&mut ch, CardKind::Uicc, PinOp::Verify, &wrong, None).unwrap();
    let lock = identify(&mut c, &Options::default()).unwrap().lock.unwrap();
    assert_eq!(
        (lock.state, lock.puk_attempts),
        (LockState::PukRequired, Some(10))
    );
    let bad_puk = Secret::puk("00000000").unwrap();
    let new = Secret::pin("4321").unwrap();
    for _ in 0..10 {
        let mut ch = Channel::new(&mut c);
        pin::run(
            &mut ch,
            CardKind::Uicc,
            PinOp::Unblock,
            &bad_puk,
            Some(&new),
        )
        .unwrap();
    }
    let lock = identify(&mut c, &Options::default()).unwrap().lock.unwrap();
    assert_eq!(lock.state, LockState::Blocked);
}

/// A 0600 secrets file with one SIM's PIN, in `dir`; returns the configuration text
/// naming it.
fn pins_config(dir: &std::path::Path, iccid: &str, pin: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join("pins.toml");
    std::fs::write(&file, format!("[pins]\n\"{iccid}\" = \"{pin}\"\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!("[modems]\npins_file = \"{}\"\n", file.display())
}

/// The emulated modem's SIM (at-commander's Quectel sample ICCID, src/emu/modem.rs).
const MODEM_ICCID: &str = "8901260886258128535";

fn journal_lines(journal: &std::path::Path, prefix: &str) -> usize {
    std::fs::read_to_string(journal)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_ascii_uppercase().starts_with(prefix))
        .count()
}

#[test]
fn a_modem_sim_locked_at_boot_is_unlocked_once_from_the_pins_file_and_the_pin_stays_secret() {
    use std::process::Stdio;
    use std::time::Duration;
    use support::{Broker, Lines, Modem, Proc, TempDir};
    let broker = Broker::start();
    let agent = "gw-pin";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let state = TempDir::new("pin-state");
    let scratch = TempDir::new("pin-modem");
    let journal = scratch.path().join("journal");
    let emu = Modem::start_with(
        "quectel-ec2x",
        &["--pin", "2468", "--journal", journal.to_str().unwrap()],
    );
    let config = pins_config(scratch.path(), MODEM_ICCID, "2468");
    let mut daemon = Proc::spawn(
        "simgate run",
        support::modem_agent_with(&broker.url(), agent, state.path(), &emu.port, &config)
            .stderr(Stdio::piped()),
    );
    let mut log = Lines::new(daemon.child.stderr.take().unwrap());
    let topic = format!("simgate/v1/{agent}/sim/{MODEM_ICCID}/state");
    // The locked row first: its ICCID, its lock, no IMSI.
    let locked = sub.expect("the locked SIM's row", |m| m.topic == topic);
    assert_eq!(
        locked.payload["lock"]["state"], "pin_required",
        "{}",
        locked.payload
    );
    assert!(locked.payload.get("imsi").is_none());
    // Then the same row unlocked, with what only an unlocked SIM tells.
    let ready = sub.expect("the unlocked SIM's row", |m| {
        m.topic == topic && m.payload["lock"]["state"] == "ready"
    });
    assert_eq!(ready.payload["imsi"], "20404001234567");
    assert_eq!(ready.payload["lock"]["pin_enabled"], true);
    assert_eq!(ready.payload["lock"]["pin_attempts"], 3);
    log.expect("the unlock in the log", Duration::from_secs(30), |l| {
        l.contains("configured PIN entered")
    });
    daemon.interrupt();
    log.drain();
    assert!(
        log.seen.iter().all(|l| !holds_pin(l, "2468")),
        "the PIN reached the log"
    );
    assert!(
        sub.lines.seen.iter().all(|l| !holds_pin(l, "2468")),
        "the PIN reached the platform"
    );
    assert_eq!(journal_lines(&journal, "AT+CPIN="), 1, "one attempt");
}

#[test]
fn a_wrong_pin_in_the_config_is_tried_once_and_never_again_across_restarts() {
    use std::process::Stdio;
    use std::time::Duration;
    use support::{Broker, Lines, Modem, Proc, TempDir};
    let broker = Broker::start();
    let agent = "gw-wrong-pin";
    let state = TempDir::new("wrong-pin-state");
    let scratch = TempDir::new("wrong-pin-modem");
    let journal = scratch.path().join("journal");
    let emu = Modem::start_with(
        "quectel-ec2x",
        &["--pin", "2468", "--journal", journal.to_str().unwrap()],
    );
    let config = pins_config(scratch.path(), MODEM_ICCID, "1357");
    for start in 0..4 {
        let mut daemon = Proc::spawn(
            "simgate run",
            support::modem_agent_with(&broker.url(), agent, state.path(), &emu.port, &config)
                .stderr(Stdio::piped()),
        );
        let mut log = Lines::new(daemon.child.stderr.take().unwrap());
        let (what, needle) = if start == 0 {
            ("the refusal", "configured PIN refused")
        } else {
            (
                "the refusal remembered",
                "refused before: never tried again",
            )
        };
        log.expect(what, Duration::from_secs(30), |l| l.contains(needle));
        daemon.interrupt();
        log.drain();
        assert!(
            log.seen.iter().all(|l| !holds_pin(l, "1357")),
            "the PIN reached the log"
        );
    }
    assert_eq!(
        journal_lines(&journal, "AT+CPIN="),
        1,
        "tried once in four starts"
    );
    // The SIM itself: still 2 attempts left.
    let out = Command::new(support::simgate_bin())
        .args(["modem", "info", "--json", "--port", &emu.port])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["sim"]["lock"]["pin_attempts"], 2, "{v}");
}

#[test]
fn a_sim_saying_sim_pin_while_it_initialises_is_not_given_a_pin_and_ends_ready() {
    use std::time::Duration;
    use support::{Broker, Modem, Proc, TempDir};
    let broker = Broker::start();
    let agent = "gw-pin-init";
    let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
    let state = TempDir::new("pin-init-state");
    let scratch = TempDir::new("pin-init-modem");
    let journal = scratch.path().join("journal");
    // No PIN on this SIM; the firmware says SIM PIN for 2 s after power-on.
    let emu = Modem::start_with(
        "quectel-ec2x",
        &[
            "--sim-init-ms",
            "2000",
            "--journal",
            journal.to_str().unwrap(),
        ],
    );
    let config = pins_config(scratch.path(), MODEM_ICCID, "2468");
    let _daemon = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(&broker.url(), agent, state.path(), &emu.port, &config),
    );
    let topic = format!("simgate/v1/{agent}/sim/{MODEM_ICCID}/state");
    let ready = sub.expect_within("the SIM's row once ready", Duration::from_secs(30), |m| {
        m.topic == topic && m.payload["lock"]["state"] == "ready"
    });
    assert_eq!(ready.payload["imsi"], "20404001234567");
    assert_eq!(
        journal_lines(&journal, "AT+CPIN="),
        0,
        "no PIN while the counters were unknown"
    );
}

fn pin_command(id: &str, action: &str, params: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "v": 1, "id": id, "iccid": MODEM_ICCID, "action": action,
        "params": params, "expires_at": support::unix_now() + 600
    })
}

/// A daemon on a modem whose SIM has PIN 2468 with `attempts` left, no pins file.
struct LockedGateway {
    broker: support::Broker,
    sub: support::Sub,
    journal: std::path::PathBuf,
    _emu: support::Modem,
    _daemon: support::Proc,
    _dirs: (support::TempDir, support::TempDir),
    agent: &'static str,
}

impl LockedGateway {
    fn start(agent: &'static str, attempts: &str) -> LockedGateway {
        use support::{Broker, Modem, Proc, TempDir};
        let broker = Broker::start();
        let mut sub = broker.subscribe(&format!("simgate/v1/{agent}/#"));
        let state = TempDir::new("pin-cmd-state");
        let scratch = TempDir::new("pin-cmd-modem");
        let journal = scratch.path().join("journal");
        let emu = Modem::start_with(
            "quectel-ec2x",
            &[
                "--pin",
                "2468",
                "--pin-attempts",
                attempts,
                "--journal",
                journal.to_str().unwrap(),
            ],
        );
        let daemon = Proc::spawn(
            "simgate run",
            &mut support::modem_agent(&broker.url(), agent, state.path(), &emu.port),
        );
        let topic = format!("simgate/v1/{agent}/sim/{MODEM_ICCID}/state");
        sub.expect("the locked SIM's first row", |m| m.topic == topic);
        LockedGateway {
            broker,
            sub,
            journal,
            _emu: emu,
            _daemon: daemon,
            _dirs: (state, scratch),
            agent,
        }
    }

    fn send(&mut self, id: &str, action: &str, params: serde_json::Value) -> serde_json::Value {
        support::send_command(&self.broker, self.agent, &pin_command(id, action, params));
        support::final_status(&mut self.sub, self.agent, id).payload
    }

    /// The SIM's row satisfying `pred`: already seen (it may have come before the
    /// command's outcome, which was awaited first), or awaited.
    fn row_where(
        &mut self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let topic = format!("simgate/v1/{}/sim/{MODEM_ICCID}/state", self.agent);
        let is = |m: &support::Msg| m.topic == topic && pred(&m.payload);
        if let Some(m) = self
            .sub
            .lines
            .seen
            .iter()
            .filter_map(|l| support::parse_msg(l))
            .find(|m| is(m))
        {
            return m.payload;
        }
        self.sub.expect(what, is).payload
    }
}

#[test]
fn pin_verify_from_the_platform_unlocks_a_modem_sim_exactly_once() {
    let mut gw = LockedGateway::start("gw-pin-verify", "3");
    let st = gw.send("pv-1", "pin_verify", serde_json::json!({"pin": "2468"}));
    assert_eq!(st["status"], "successful", "{st}");
    let row = gw.row_where("the unlocked row", |r| r["lock"]["state"] == "ready");
    assert_eq!(row["imsi"], "20404001234567");
    // Redelivered: answered from its record, not sent again.
    let again = gw.send("pv-1", "pin_verify", serde_json::json!({"pin": "2468"}));
    assert_eq!(again["status"], "successful");
    assert_eq!(journal_lines(&gw.journal, "AT+CPIN="), 1);
    assert!(
        gw.sub
            .lines
            .seen
            .iter()
            .all(|l| !holds_pin(l, "2468") || l.contains("/cmd ")),
        "the PIN came back from the agent"
    );
}

#[test]
fn a_pin_command_at_one_attempt_left_is_refused_by_name_and_spent_only_with_force() {
    let mut gw = LockedGateway::start("gw-pin-last", "1");
    let st = gw.send("pl-1", "pin_verify", serde_json::json!({"pin": "2468"}));
    assert_eq!(st["status"], "failed");
    assert_eq!(st["code"], "last_attempt", "{st}");
    assert_eq!(journal_lines(&gw.journal, "AT+CPIN="), 0, "nothing sent");
    let st = gw.send(
        "pl-2",
        "pin_verify",
        serde_json::json!({"pin": "2468", "force": true}),
    );
    assert_eq!(st["status"], "successful", "{st}");
    gw.row_where("the unlocked row", |r| r["lock"]["state"] == "ready");
}

#[test]
fn a_wrong_pin_command_says_the_attempts_left_and_the_row_follows() {
    let mut gw = LockedGateway::start("gw-pin-wrong", "3");
    let st = gw.send("pw-1", "pin_verify", serde_json::json!({"pin": "0000"}));
    assert_eq!(st["status"], "failed");
    assert_eq!(
        st["reason"], "pin_verify: wrong PIN: 2 attempts left",
        "{st}"
    );
    gw.row_where("the row with 2 attempts", |r| {
        r["lock"]["pin_attempts"] == 2
    });
}

#[test]
fn a_blocked_sim_is_unblocked_only_by_pin_unblock_with_the_puk() {
    let mut gw = LockedGateway::start("gw-pin-puk", "0");
    let row = gw.row_where("the PUK-locked row", |r| {
        r["lock"]["state"] == "puk_required"
    });
    assert_eq!(row["lock"]["puk_attempts"], 10);
    // A PIN cannot help: refused by name, nothing sent.
    let st = gw.send("pu-1", "pin_verify", serde_json::json!({"pin": "2468"}));
    assert_eq!(st["code"], "not_applicable", "{st}");
    let st = gw.send(
        "pu-2",
        "pin_unblock",
        serde_json::json!({"puk": "12345678", "new_pin": "1111"}),
    );
    assert_eq!(st["status"], "successful", "{st}");
    let row = gw.row_where("the unblocked row", |r| r["lock"]["state"] == "ready");
    assert_eq!(row["lock"]["pin_attempts"], 3);
    assert_eq!(journal_lines(&gw.journal, "AT+CPIN="), 1, "one PUK line");
}

#[test]
fn pin_params_are_checked_by_name_without_echoing_the_secret() {
    let mut gw = LockedGateway::start("gw-pin-params", "3");
    let st = gw.send("pp-1", "pin_verify", serde_json::json!({"pin": "12a4"}));
    assert_eq!(st["code"], "invalid_field");
    assert!(
        st["reason"].as_str().unwrap().starts_with("params.pin:"),
        "{st}"
    );
    assert!(!st.to_string().contains("12a4"), "{st}");
    let st = gw.send("pp-2", "pin_change", serde_json::json!({"pin": "2468"}));
    assert_eq!(
        st["reason"], "params.new_pin: missing, or not a string",
        "{st}"
    );
    assert_eq!(journal_lines(&gw.journal, "AT+CPIN="), 0);
}

#[test]
fn simgate_pin_verify_at_a_reader_reads_the_pin_from_stdin_and_the_imsi_follows() {
    use std::io::Write;
    use std::process::Stdio;
    let pcsc = Pcsc::start();
    let _card = pcsc.insert(0, "usim-pin.toml");
    let mut child = pcsc
        .simgate()
        .args(["pin", "verify", "--reader", &pcsc.reader(0)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"1234\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "pin_verify: done; SIM 8988211000000430010: ready"
    );
    let rows = json(&pcsc.simgate().args(["read", "--json"]).output().unwrap());
    assert_eq!(rows[0]["imsi"], "228062800000208", "{rows}");
}

#[test]
fn station_disable_pin_over_a_batch_skips_the_card_at_one_attempt_left_and_says_so_loudly() {
    use std::process::Stdio;
    use std::time::Duration;
    use support::{Lines, Proc, TempDir};
    let pcsc = Pcsc::start();
    let state = TempDir::new("pin-station");
    let csv = state.path().join("batch.csv");
    let mut st = Proc::spawn(
        "simgate station",
        pcsc.simgate()
            .args(["station", "--json", "--disable-pin", "1234", "--csv"])
            .arg(&csv)
            .arg("--state-dir")
            .arg(state.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    );
    let mut out = Lines::new(st.child.stdout.take().unwrap());
    let mut read_in = |reader: String| -> serde_json::Value {
        let line = out.expect(
            &format!("a read in {reader}"),
            Duration::from_secs(20),
            |l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["reader"] == reader),
        );
        serde_json::from_str(&line).unwrap()
    };
    let _locked = pcsc.insert(0, "usim-pin.toml");
    let locked = read_in(pcsc.reader(0));
    let _last = pcsc.insert(1, "usim-pin-last.toml");
    let last = read_in(pcsc.reader(1));

    assert_eq!(locked["pin_disable"], "disabled", "{locked}");
    assert_eq!(locked["lock"]["state"], "ready");
    assert_eq!(locked["lock"]["pin_enabled"], false);
    assert!(locked.get("warnings").is_none(), "{locked}");

    assert_eq!(last["pin_disable"], "skipped: 1 attempt left", "{last}");
    assert_eq!(last["lock"]["pin_attempts"], 1, "the last attempt kept");
    let warned = last["warnings"].as_array().unwrap();
    assert!(
        warned
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("PIN NOT DISABLED")),
        "{last}"
    );

    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.lines().next().unwrap().ends_with(",pin_disable"),
        "{text}"
    );
    assert!(
        text.contains(",disabled\n") || text.contains(",disabled\r\n"),
        "{text}"
    );
    assert!(text.contains("skipped: 1 attempt left"), "{text}");
    st.interrupt();
}

/// Whether `line` holds `pin` as a number of its own: not inside a longer run of digits
/// (a duration such as `"secs":0.001357742` is not the PIN 1357 leaking).
fn holds_pin(line: &str, pin: &str) -> bool {
    let b = line.as_bytes();
    line.match_indices(pin).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| b[i]);
        let after = b.get(at + pin.len()).copied();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}
