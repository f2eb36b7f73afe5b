//! A card reset by another application in the middle of simgate's read: simgate
//! reconnects and reads it again, instead of failing. Through real pcscd + vpcd.
//!
//! Alone in its test binary: it points this process's own PC/SC client at the rig's
//! pcscd (PCSCLITE_CSOCK_NAME), which no other test here must see.

use crate::support;

use std::process::Stdio;
use std::time::Duration;
use support::{Lines, Pcsc, Proc};

#[test]
fn a_card_reset_by_another_application_mid_read_is_reconnected_and_read() {
    let pcsc = Pcsc::start();
    // 300 ms per APDU: the read takes seconds once it has begun, time enough to reset
    // the card under it.
    let _card = pcsc.insert_with(0, "usim.toml", &["--latency-ms", "300"]);
    let mut read = Proc::spawn(
        "simgate read",
        pcsc.simgate()
            .args(["read", "--json", "--reader", &pcsc.reader(0)])
            .env("RUST_LOG", "simgate=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut err = Lines::new(read.child.stderr.take().unwrap());
    let mut out = Lines::new(read.child.stdout.take().unwrap());
    // The read under way (a fixed wait lost the race on a loaded machine: the reset
    // came before the read had connected, and nothing needed a reconnect).
    err.expect("the read under way", Duration::from_secs(30), |l| {
        l.contains("identifying the card")
    });

    // Another application: connect and leave with a reset (SCardDisconnect
    // SCARD_RESET_CARD), as a second tool on a shared station might.
    std::env::set_var("PCSCLITE_CSOCK_NAME", &pcsc.sock);
    let ctx = pcsc::Context::establish(pcsc::Scope::User).expect("PC/SC context on the rig");
    let name = std::ffi::CString::new(pcsc.reader(0)).unwrap();
    let card = ctx
        .connect(&name, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .expect("connect alongside simgate");
    card.disconnect(pcsc::Disposition::ResetCard)
        .map_err(|(_, e)| e)
        .expect("reset the card");

    let st = read.wait(Duration::from_secs(20));
    assert!(
        st.success(),
        "simgate read failed after the reset: {:?}",
        err.drain()
    );
    let text = out.drain().join("\n");
    assert!(
        text.contains("\"iccid\": \"8988211000000430010\""),
        "{text}"
    );
    err.expect("the reconnect in the log", Duration::from_secs(5), |l| {
        l.contains("reconnecting to the card")
    });
}
