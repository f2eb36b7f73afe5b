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
