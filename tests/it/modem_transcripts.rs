//! Recorded replies (tests/fixtures/transcripts, each with its @source) replayed by the
//! emulator on a pty and identified by simgate.

use simgate::at::{self, AtConnection};
use simgate::emu::modem::{self as emulator, Options};
use simgate::emu::transcript::Transcript;
use simgate::modem::identify::{self, ModemInfo};
use simgate::modem::Profiles;
use std::path::Path;
use tokio_util::sync::CancellationToken;

async fn replay(file: &str) -> (ModemInfo, AtConnection<at::Port>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transcripts")
        .join(file);
    let t = Transcript::load(&path).unwrap();
    assert!(!t.sources.is_empty());
    let profile = file.split('.').next().unwrap();
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get(profile).unwrap().clone());
    opts.transcript = Some(t);
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let port = at::open(emu.path().to_str().unwrap()).await.unwrap();
    let mut conn = AtConnection::new(port, vec![], vec![]);
    let info = identify::identify(&mut conn, &profiles, "pty")
        .await
        .unwrap();
    // The emulator task ends with the token; the connection stays readable for URCs
    // already received.
    cancel.cancel();
    (info, conn)
}

#[tokio::test]
async fn quectel_manual_examples_with_a_urc_inside_the_iccid_reply() {
    let (info, mut conn) = replay("quectel-ec2x.manual-examples.at").await;
    // The manual's ICCID fails the Luhn check: reported as read, never fixed.
    assert_eq!(info.sim.iccid.as_deref(), Some("89860025128306012474"));
    assert_eq!(info.sim.iccid_luhn_ok, Some(false));
    let obs = simgate::observe::from_modem(&info, 0).unwrap();
    assert_eq!(obs.local_status(), Some(simgate::sim::Status::Invalid));
    let usage = info.sim.usage.unwrap();
    assert_eq!((usage.sent, usage.received), (3832, 4618));
    // The URC inside the reply went to the URC queue, not into the ICCID.
    assert_eq!(conn.pop_urc().as_deref(), Some("+QSIMSTAT : 1,1"));
}

#[tokio::test]
async fn telit_counters_follow_the_profile_field_order() {
    let (info, _) = replay("telit-le910.at-commander.at").await;
    assert_eq!(info.sim.iccid.as_deref(), Some("8903213243545678129"));
    let usage = info.sim.usage.unwrap();
    assert_eq!((usage.sent, usage.received), (11, 729418));
}

#[tokio::test]
async fn locked_sim_without_readable_iccid_is_reported_as_such() {
    let (info, _) = replay("generic-3gpp.at-commander.at").await;
    assert!(info.sim.present);
    assert_eq!(info.sim.state, "SIM PIN");
    assert_eq!(info.sim.iccid, None);
    assert_eq!(info.sim.imsi, None);
}
