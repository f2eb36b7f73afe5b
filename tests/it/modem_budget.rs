//! AT command budgets, counted by the emulator (the modem's side of the wire):
//! ≤ 12 lines per full identification, ≤ 2 per minute in steady state (one poll a
//! minute by default). Counts, never timings.

use simgate::emu::modem::{self as emulator, EmuSim, Options};
use simgate::modem::supervisor::{self, ModemEvent, Settings};
use simgate::modem::Profiles;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Lines the supervisor sends per poll once identification is done.
async fn lines_per_poll(profile: &str, netdev: Option<&str>) -> (u64, u64) {
    let profiles = Arc::new(Profiles::shipped().unwrap());
    let opts = Options::new(profiles.get(profile).unwrap().clone());
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let dir = std::env::temp_dir().join(format!("simgate-budget-{}-{profile}", std::process::id()));
    let store = simgate::store::Store::open(&dir).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let settings = Settings {
        poll: Duration::from_millis(50),
        netdev: netdev.map(str::to_string),
        ..Settings::default()
    };
    supervisor::spawn(
        emu.path().display().to_string(),
        profiles,
        Some(store),
        settings,
        cancel.clone(),
        tx,
    );
    let mut identification = 0;
    let mut usage_at = Vec::new();
    while usage_at.len() < 6 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ModemEvent::Identified(i))) => identification = i.at_commands,
            // One usage sample per poll: the poll's last line has been answered.
            Ok(Some(ModemEvent::Usage { .. })) => usage_at.push(emu.commands()),
            Ok(Some(_)) => {}
            other => panic!("supervisor stopped: {other:?}"),
        }
    }
    cancel.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    // The first sample follows identification; the next five are steady polls.
    let per_poll = (usage_at[5] - usage_at[1]) / 4;
    (identification, per_poll)
}

#[tokio::test]
async fn steady_state_with_hotplug_urc_costs_one_line_per_poll() {
    let (ident, per_poll) = lines_per_poll("quectel-ec2x", None).await;
    println!("quectel-ec2x: {ident} lines per identification, {per_poll} per poll");
    assert!(ident <= 12);
    assert_eq!(per_poll, 1);
}

#[tokio::test]
async fn steady_state_without_hotplug_urc_costs_two_lines_per_poll() {
    // No vendor counter either: usage comes from a network interface's statistics
    // (loopback stands in for wwan0).
    let (ident, per_poll) = lines_per_poll("sierra-at", Some("lo")).await;
    println!("sierra-at: {ident} lines per identification, {per_poll} per poll");
    assert!(ident <= 12);
    assert_eq!(per_poll, 2);
}

#[tokio::test]
async fn esim_identification_stays_within_budget() {
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get("quectel-ec2x").unwrap().clone());
    opts.sim = Some(EmuSim::esim());
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let port = simgate::at::open(emu.path().to_str().unwrap())
        .await
        .unwrap();
    let mut conn = simgate::at::AtConnection::new(port, vec![], vec![]);
    let info = simgate::modem::identify::identify(&mut conn, &profiles, "pty")
        .await
        .unwrap();
    println!("eSIM: {} lines per identification", info.at_commands);
    assert!(info.at_commands <= 12);
    cancel.cancel();
}
