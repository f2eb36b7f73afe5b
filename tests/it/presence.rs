//! Presence the platform can trust across what a gateway lives through: simgate killed
//! (a power cut) while a SIM leaves, and pcscd restarting under cards that never moved
//! (issue 9, items 1 and 3). Each through the real pcscd + vpcd, ptys and mosquitto.

use crate::support;

use std::process::{Command, Stdio};
use support::{Broker, Modem, Msg, Pcsc, Proc, Sub, TempDir};

const USIM: &str = "8988211000000430010";

fn reader_agent(pcsc: &Pcsc, broker: &Broker, agent: &str, state: &TempDir) -> Proc {
    Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), agent))
            .arg(state.path())
            .args(["--reader", &pcsc.reader(0), "--reader", &pcsc.reader(1)])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

fn is_event(m: &Msg, kind: &str) -> bool {
    m.topic.ends_with("/events") && m.payload["type"] == kind
}

/// The next event, whatever it is.
fn next_event(sub: &mut Sub, what: &str) -> Msg {
    sub.expect(what, |m| m.topic.ends_with("/events"))
}

// Guards the stale `present: true` of a card pulled while simgate was not running.
#[test]
fn a_card_pulled_while_simgate_was_down_is_reported_removed_at_the_first_look() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut sub = broker.subscribe("simgate/v1/gw-gone/#");
    let card = pcsc.insert(0, "usim.toml");
    let mut run = reader_agent(&pcsc, &broker, "gw-gone", &state);
    let topic = format!("simgate/v1/gw-gone/sim/{USIM}/state");
    let m = sub.expect("the SIM present", |m| m.topic == topic);
    assert_eq!(m.payload["present"], true);

    // A power cut: no removal can be seen while simgate is down.
    run.kill9();
    card.remove();
    let _run = reader_agent(&pcsc, &broker, "gw-gone", &state);

    let ev = sub.expect("the removal, once simgate looked again", |m| {
        is_event(m, "removed")
    });
    assert_eq!(ev.payload["iccid"], USIM);
    assert_eq!(ev.payload["location"]["reader"], pcsc.reader(0));
    let m = sub.expect("the SIM's row after the first look", |m| m.topic == topic);
    assert_eq!(m.payload["present"], false);
}

// Guards the same for a modem SIM: the first identification of the port is its first look.
#[test]
fn a_modem_sim_removed_while_simgate_was_down_is_reported_removed_at_the_first_identification() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let port = emu.port.clone();
    let mut sub = broker.subscribe("simgate/v1/gw-mgone/#");
    let agent = |state: &TempDir| -> Command {
        support::modem_agent(&broker.url(), "gw-mgone", state.path(), &port)
    };
    let mut run = Proc::spawn("simgate run", &mut agent(&state));
    let topic = "simgate/v1/gw-mgone/sim/8901260886258128535/state";
    let m = sub.expect("the modem SIM present", |m| m.topic == topic);
    assert_eq!(m.payload["present"], true);

    run.kill9();
    emu.control("remove");
    let _run = Proc::spawn("simgate run", &mut agent(&state));

    let ev = sub.expect("the removal at the first identification", |m| {
        is_event(m, "removed")
    });
    assert_eq!(ev.payload["iccid"], "8901260886258128535");
    let m = sub.expect("the SIM's row", |m| m.topic == topic);
    assert_eq!(m.payload["present"], false);
    assert_eq!(m.payload["in_session"], "no");
}

// Guards the flap (removed + inserted per card) a pcscd restart used to cause.
#[test]
fn a_pcscd_restart_under_a_card_that_stayed_is_one_outage_not_a_removal_and_an_insertion() {
    let mut pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut sub = broker.subscribe("simgate/v1/gw-flap/#");
    let card = pcsc.insert(0, "usim.toml");
    let _run = reader_agent(&pcsc, &broker, "gw-flap", &state);
    let ev = sub.expect("the card inserted", |m| is_event(m, "inserted"));
    assert_eq!(ev.payload["iccid"], USIM);

    // pcscd crashes and comes back; the card is still in its reader (vpcd's virtual
    // card has to plug in again: for pcscd it never left).
    pcsc.stop();
    let lost = next_event(&mut sub, "the outage");
    assert_eq!(lost.payload["type"], "reader_service", "{}", lost.payload);
    assert_eq!(lost.payload["up"], false);
    drop(card);
    pcsc.resume();
    let card = pcsc.insert(0, "usim.toml");
    let back = next_event(&mut sub, "pcscd back");
    assert_eq!(back.payload["type"], "reader_service", "{}", back.payload);
    assert_eq!(back.payload["up"], true);

    // The next event about the card is its real removal: nothing in between.
    card.remove();
    let ev = next_event(&mut sub, "the real removal");
    assert_eq!(ev.payload["type"], "removed", "{}", ev.payload);
    assert_eq!(ev.payload["iccid"], USIM);
}

// Guards a silent modem being invisible to the platform (issue 9, item 2): its SIM's row
// kept the old session and nothing told the platform.
#[test]
fn a_modem_that_stops_answering_is_told_to_the_platform_and_so_is_its_return() {
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut emu = Modem::start("quectel-ec2x");
    let mut sub = broker.subscribe("simgate/v1/gw-mute/#");
    // The shortest poll the configuration allows: silence is found at the next poll.
    let _run = Proc::spawn(
        "simgate run",
        &mut support::modem_agent_with(
            &broker.url(),
            "gw-mute",
            state.path(),
            &emu.port,
            "[modems]\npoll_secs = 5\n",
        ),
    );
    let topic = "simgate/v1/gw-mute/sim/8901260886258128535/state";
    let m = sub.expect("the modem SIM present", |m| m.topic == topic);
    assert_eq!(m.payload["present"], true);
    assert!(m.payload.get("modem_silent").is_none(), "{}", m.payload);

    emu.control("silent");
    let m = sub.expect("the row of a SIM whose modem is silent", |m| {
        m.topic == topic && m.payload["modem_silent"] == true
    });
    assert_eq!(m.payload["in_session"], "n/a", "the session is unknown now");
    assert_eq!(m.payload["present"], true, "what was last seen stands");
    let ev = sub.expect("the event", |m| is_event(m, "modem_service"));
    assert_eq!(ev.payload["up"], false);
    assert_eq!(ev.payload["iccid"], "8901260886258128535");
    assert_eq!(ev.payload["port"], emu.port.as_str());

    emu.control("talk");
    let ev = sub.expect("the modem back", |m| is_event(m, "modem_service"));
    assert_eq!(ev.payload["up"], true);
    let m = sub.expect("the row again", |m| m.topic == topic);
    assert!(m.payload.get("modem_silent").is_none(), "{}", m.payload);
    assert_ne!(m.payload["in_session"], "n/a", "{}", m.payload);
}
