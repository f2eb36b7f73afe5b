//! Identification over a real pty: the emulator owns the master, simgate opens the
//! slave with tokio-serial like a USB modem port.

use simgate::at::{self, AtConnection};
use simgate::emu::modem::{self as emulator, Control, EmuSim, Options};
use simgate::modem::identify;
use simgate::modem::Profiles;
use simgate::sim::InSession;
use tokio_util::sync::CancellationToken;

async fn emulate(
    profile: &str,
    f: impl FnOnce(&mut Options),
) -> (emulator::Handle, CancellationToken) {
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get(profile).unwrap().clone());
    f(&mut opts);
    let cancel = CancellationToken::new();
    let h = emulator::start(opts, cancel.clone()).unwrap();
    (h, cancel)
}

async fn connect(h: &emulator::Handle) -> AtConnection<at::Port> {
    let port = at::open(h.path().to_str().unwrap()).await.unwrap();
    AtConnection::new(port, vec![], vec![])
}

#[tokio::test]
async fn quectel_physical_sim_is_identified_within_budget() {
    let (h, cancel) = emulate("quectel-ec2x", |_| {}).await;
    let mut conn = connect(&h).await;
    let profiles = Profiles::shipped().unwrap();
    let info = identify::identify(&mut conn, &profiles, "pty")
        .await
        .unwrap();
    assert_eq!(info.profile, "quectel-ec2x");
    assert_eq!(info.manufacturer.as_deref(), Some("Quectel"));
    assert_eq!(info.model.as_deref(), Some("EC25"));
    assert_eq!(info.firmware.as_deref(), Some("EC25EFAR06A03M4G"));
    assert_eq!(info.imei.as_deref(), Some("867698041234567"));
    assert!(info.sim.present);
    assert_eq!(info.sim.state, "READY");
    // The modem sends the 19-digit ICCID with its F filler; simgate strips it.
    assert_eq!(info.sim.iccid.as_deref(), Some("8901260886258128535"));
    assert_eq!(info.sim.iccid_luhn_ok, Some(true));
    assert_eq!(info.sim.imsi.as_deref(), Some("20404001234567"));
    assert_eq!(info.sim.operator.as_deref(), Some("Vodafone NL"));
    assert_eq!(info.sim.mcc_mnc.as_deref(), Some("20404"));
    assert_eq!(
        info.sim.form_factor,
        Some(simgate::sim::FormFactor::Physical)
    );
    assert_eq!(info.sim.in_session, InSession::Yes);
    let reg = info.sim.registration.clone().unwrap();
    assert_eq!(reg.domain, "CEREG");
    assert_eq!(reg.access_tech, Some("E-UTRAN"));
    assert!(info.sim.usage.is_some());
    // EC2x has two slots; the first is in use, counted from 1 as on the gateway label.
    assert_eq!(info.sim.slot, Some(1));
    assert!(matches!(
        simgate::observe::from_modem(&info, 0).unwrap().location,
        simgate::sim::Location::Modem { slot: Some(1), .. }
    ));
    assert!(info.at_commands <= 12, "{} commands", info.at_commands);
    assert_eq!(info.at_commands, h.commands());
    cancel.cancel();
}

#[tokio::test]
async fn esim_gives_its_eid_within_budget() {
    let (h, cancel) = emulate("quectel-ec2x", |o| o.sim = Some(EmuSim::esim())).await;
    let mut conn = connect(&h).await;
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "pty")
        .await
        .unwrap();
    assert_eq!(info.sim.form_factor, Some(simgate::sim::FormFactor::Esim));
    assert_eq!(
        info.sim.eid.as_deref(),
        Some("89049032123451234512345678901235")
    );
    assert!(info.at_commands <= 12, "{} commands", info.at_commands);
    cancel.cancel();
}

#[tokio::test]
async fn generic_modem_reads_iccid_through_crsm() {
    let (h, cancel) = emulate("generic-3gpp", |_| {}).await;
    let mut conn = connect(&h).await;
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "pty")
        .await
        .unwrap();
    assert_eq!(info.profile, "generic-3gpp");
    assert_eq!(info.sim.iccid.as_deref(), Some("8901260886258128535"));
    cancel.cancel();
}

#[tokio::test]
async fn every_family_identifies_its_emulated_modem() {
    let profiles = Profiles::shipped().unwrap();
    for name in profiles.names() {
        let (h, cancel) = emulate(name, |_| {}).await;
        let mut conn = connect(&h).await;
        let info = identify::identify(&mut conn, &profiles, "pty")
            .await
            .unwrap();
        assert_eq!(info.profile, name);
        assert_eq!(
            info.sim.iccid.as_deref(),
            Some("8901260886258128535"),
            "{name}"
        );
        assert!(
            info.at_commands <= 12,
            "{name}: {} commands",
            info.at_commands
        );
        cancel.cancel();
    }
}

#[tokio::test]
async fn missing_sim_is_said_plainly() {
    let (h, cancel) = emulate("telit-le910", |o| o.sim = None).await;
    let mut conn = connect(&h).await;
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "pty")
        .await
        .unwrap();
    assert!(!info.sim.present);
    assert_eq!(info.sim.state, "SIM not inserted");
    assert_eq!(info.sim.iccid, None);
    assert_eq!(info.sim.in_session, InSession::No);
    cancel.cancel();
}

#[tokio::test]
async fn sim_busy_is_retried_until_ready() {
    let (h, cancel) = emulate("quectel-ec2x", |_| {}).await;
    h.send(Control::SimBusy(2)).await;
    let mut conn = connect(&h).await;
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "pty")
        .await
        .unwrap();
    assert_eq!(info.sim.state, "READY");
    assert!(info.sim.iccid.is_some());
    cancel.cancel();
}

#[tokio::test]
async fn garbage_and_urcs_do_not_pollute_identification() {
    let (h, cancel) = emulate("quectel-ec2x", |_| {}).await;
    let mut conn = connect(&h).await;
    h.send(Control::Garbage).await;
    h.send(Control::Urc("+CEREG: 1,\"D504\",\"80428B5\",7".into()))
        .await;
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "pty")
        .await
        .unwrap();
    assert_eq!(info.sim.iccid.as_deref(), Some("8901260886258128535"));
    assert_eq!(
        conn.pop_urc().as_deref(),
        Some("+CEREG: 1,\"D504\",\"80428B5\",7")
    );
    cancel.cancel();
}

#[tokio::test]
async fn a_modem_behind_a_tcp_bridge_is_identified() {
    // A ser2net-style bridge: TCP on one side, the modem's serial port on the other.
    let (h, cancel) = emulate("quectel-bg9x", |_| {}).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serial = h.path();
    let bridge = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut port = at::open(serial.to_str().unwrap()).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut port).await;
    });
    let port = at::open(&format!("tcp://{addr}")).await.unwrap();
    let mut conn = AtConnection::new(port, vec![], vec![]);
    let info = identify::identify(&mut conn, &Profiles::shipped().unwrap(), "tcp")
        .await
        .unwrap();
    assert_eq!(info.profile, "quectel-bg9x");
    assert_eq!(info.sim.iccid.as_deref(), Some("8901260886258128535"));
    cancel.cancel();
    bridge.abort();
}
