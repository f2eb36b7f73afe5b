//! Modems of other dialects (issue 9, item 4): a firmware that refuses concatenated
//! commands (V.250 §5.2.1) altogether, and one that refuses a single command of a group.
//! Both through the emulator on a pty, opened with tokio-serial like a USB modem; the
//! line counts are the emulator's (the modem's side of the wire).

use simgate::at::{AtConnection, Concat, Port};
use simgate::emu::modem::{self as emulator, Handle, Options};
use simgate::modem::identify::{self, ModemInfo};
use simgate::modem::Profiles;
use tokio_util::sync::CancellationToken;

/// An identified quectel-ec2x emulated with `tweak`, and the connection that did it.
async fn identified(
    tweak: impl FnOnce(&mut Options),
) -> (
    ModemInfo,
    AtConnection<Port>,
    Handle,
    Profiles,
    CancellationToken,
) {
    let profiles = Profiles::shipped().unwrap();
    let mut opts = Options::new(profiles.get("quectel-ec2x").unwrap().clone());
    tweak(&mut opts);
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let port = simgate::at::open(emu.path().to_str().unwrap())
        .await
        .unwrap();
    let mut conn = AtConnection::new(port, vec![], vec![]);
    let info = identify::identify(&mut conn, &profiles, "pty")
        .await
        .unwrap();
    (info, conn, emu, profiles, cancel)
}

/// Lines the modem receives for one status group, in steady state.
async fn lines_per_status(conn: &mut AtConnection<Port>, emu: &Handle, profiles: &Profiles) -> u64 {
    let p = profiles.get("quectel-ec2x").unwrap();
    identify::status(conn, p).await.unwrap();
    let before = emu.commands();
    identify::status(conn, p).await.unwrap();
    emu.commands() - before
}

// Guards the nulls (IMSI, operator, MCC/MNC, registration, signal) of a firmware that
// answers ERROR to `AT+A;+B`.
#[tokio::test]
async fn a_modem_refusing_concatenation_is_identified_in_full_one_command_a_line() {
    let (info, mut conn, emu, profiles, cancel) = identified(|o| o.single_commands = true).await;
    let sim = &info.sim;
    assert!(sim.imsi.is_some(), "{sim:?}");
    assert!(sim.operator.is_some(), "{sim:?}");
    assert!(sim.mcc_mnc.is_some(), "{sim:?}");
    assert!(sim.registration.is_some(), "{sim:?}");
    assert!(sim.signal.is_some(), "{sim:?}");
    assert!(sim.usage.is_some(), "{sim:?}");
    assert_eq!(info.model.as_deref(), Some("EC25"), "{info:?}");
    assert_eq!(conn.concat(), Concat::Refused);

    // Steady state pays no refusal: the status group's commands (the profile's
    // registration and signal queries, +CGACT?, +QGDCNT?, the slot query), one a line.
    let p = profiles.get("quectel-ec2x").unwrap();
    let commands = identify::status_commands(p)
        .unwrap()
        .iter()
        .flat_map(simgate::at::AtCommand::atoms)
        .count() as u64;
    assert_eq!(commands, 7);
    assert_eq!(lines_per_status(&mut conn, &emu, &profiles).await, commands);
    println!(
        "single-command firmware: {} lines per identification",
        info.at_commands
    );
    cancel.cancel();
}

// Guards a group losing everything to one command the firmware lacks.
#[tokio::test]
async fn a_modem_refusing_one_command_of_a_group_keeps_the_rest_on_one_line() {
    let (info, mut conn, emu, profiles, cancel) =
        identified(|o| o.refuse = vec!["AT+QGDCNT?".into()]).await;
    let sim = &info.sim;
    assert!(sim.registration.is_some(), "{sim:?}");
    assert!(sim.signal.is_some(), "{sim:?}");
    assert!(sim.imsi.is_some() && sim.operator.is_some(), "{sim:?}");
    assert_eq!(sim.usage, None, "the counter this firmware lacks");
    assert_eq!(conn.concat(), Concat::Works, "concatenation itself works");

    // Steady state: the rest on one line, the refused command on its own.
    assert_eq!(lines_per_status(&mut conn, &emu, &profiles).await, 2);
    cancel.cancel();
}
