//! `simgate run`: a card in a reader becomes a retained state message on a real
//! mosquitto, and its removal updates it.

use crate::support;

use std::process::Stdio;
use std::time::Duration;
use support::{Broker, Lines, Pcsc, Proc, TempDir};

#[test]
fn run_publishes_retained_sim_state_and_its_change_on_removal() {
    let pcsc = Pcsc::start();
    let broker = Broker::start();
    let state = TempDir::new("state");
    let mut sub = broker.subscribe("simgate/v1/gw-test/#");
    let card = pcsc.insert(0, "usim.toml");

    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(support::run_args(&broker.url(), "gw-test"))
            .arg(state.path())
            .args(["--reader", &pcsc.reader(0)])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    );

    let health = sub.expect("agent online", |m| m.topic == "simgate/v1/gw-test/health");
    assert_eq!(health.payload["state"], "online");
    let topic = "simgate/v1/gw-test/sim/8988211000000430010/state";
    let present = sub.expect("the SIM's state", |m| m.topic == topic);
    assert_eq!(present.payload["v"], 1);
    assert_eq!(present.payload["iccid"], "8988211000000430010");
    assert_eq!(present.payload["present"], true);
    assert_eq!(present.payload["in_session"], "n/a");
    assert_eq!(present.payload["location"]["reader"], pcsc.reader(0));

    card.remove();
    let gone = sub.expect("the SIM's state after removal", |m| m.topic == topic);
    assert_eq!(gone.payload["present"], false);

    // A subscriber arriving later (the platform after a restart) gets the retained row.
    let mut late = broker.subscribe(topic);
    let retained = late.expect("the retained row", |m| m.topic == topic);
    assert!(retained.retained, "SIM state must be retained");
    assert_eq!(retained.payload["present"], false);

    // Ctrl-C: the agent says it is offline and exits cleanly.
    let st = run.interrupt();
    assert!(st.success(), "simgate run exited with {st}");
    let off = sub.expect("agent offline", |m| {
        m.topic == "simgate/v1/gw-test/health" && m.payload["state"] == "offline"
    });
    assert_eq!(off.payload["v"], 1);
}

#[test]
fn run_refuses_a_reader_name_that_does_not_exist() {
    let pcsc = Pcsc::start();
    let state = TempDir::new("state");
    let mut run = Proc::spawn(
        "simgate run",
        pcsc.simgate()
            .args(["run", "--agent-id", "gw-test", "--state-dir"])
            .arg(state.path())
            .args(["--reader", "Typo Reader"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut err = Lines::new(run.child.stderr.take().unwrap());
    let st = run.wait(Duration::from_secs(10));
    // A configuration error (exit 2): the service manager does not restart it.
    assert_eq!(st.code(), Some(2));
    err.expect("an error naming the reader", Duration::from_secs(5), |l| {
        l.contains("no reader named \"Typo Reader\"") && l.contains(&pcsc.reader(0))
    });
}
