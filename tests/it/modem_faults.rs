//! The supervisor against the emulator on real ptys: hot-swap, USB reset, silence,
//! reboot in the middle of a command, and verified hardware actions.

use simgate::emu::modem::{self as emulator, Control, EmuSim, Options};
use simgate::modem::actions::{Action, ModemRefusal};
use simgate::modem::supervisor::{self, ModemEvent, ModemHandle, Settings};
use simgate::modem::{Profile, Profiles};
use simgate::sim::InSession;
use simgate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Upper bound for awaiting an event; a bound against hangs, not a measurement. A
/// reboot's re-attach on a loaded 2-core machine (the port gone, reopened with backoff,
/// identified again) took longer than 10 s.
const PATIENCE: Duration = Duration::from_secs(60);

struct Rig {
    emu: emulator::Handle,
    modem: ModemHandle,
    events: mpsc::Receiver<ModemEvent>,
    store: Store,
    cancel: CancellationToken,
    dir: PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn rig(profile: &str, poll: Duration, f: impl FnOnce(&mut Options)) -> Rig {
    rig_with(profile, poll, |_| {}, f).await
}

async fn rig_with(
    profile: &str,
    poll: Duration,
    tweak: impl FnOnce(&mut Profile),
    f: impl FnOnce(&mut Options),
) -> Rig {
    // One directory per rig: tests run in parallel threads of one process.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "simgate-faults-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut set = Profiles::shipped().unwrap();
    let mut p = set.get(profile).unwrap().clone();
    tweak(&mut p);
    set.replace(p.clone());
    let profiles = Arc::new(set);
    let mut opts = Options::new(p);
    // A stable name across re-enumeration, like /dev/serial/by-id.
    opts.link = Some(dir.join("modem"));
    f(&mut opts);
    let cancel = CancellationToken::new();
    let emu = emulator::start(opts, cancel.clone()).unwrap();
    let store = Store::open(&dir.join("state")).unwrap();
    let (tx, events) = mpsc::channel(64);
    let settings = Settings {
        poll,
        ..Settings::default()
    };
    let (modem, _task) = supervisor::spawn(
        dir.join("modem").display().to_string(),
        profiles,
        Some(store.clone()),
        settings,
        cancel.clone(),
        tx,
    );
    Rig {
        emu,
        modem,
        events,
        store,
        cancel,
        dir,
    }
}

/// The next event matching `pick`, skipping others.
async fn expect<T>(
    rx: &mut mpsc::Receiver<ModemEvent>,
    mut pick: impl FnMut(&ModemEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = rx.recv().await.expect("supervisor running");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("event within patience")
}

fn identified(e: &ModemEvent) -> Option<Option<String>> {
    match e {
        ModemEvent::Identified(i) => Some(i.sim.iccid.clone()),
        _ => None,
    }
}

const FIRST: &str = "8901260886258128535";
const SECOND: &str = "89314404000000000019";

#[tokio::test]
async fn sim_swap_by_urc_reports_new_identity_and_keeps_old_usage() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    assert_eq!(
        expect(&mut r.events, identified).await.as_deref(),
        Some(FIRST)
    );
    r.emu.send(Control::RemoveSim).await;
    let gone = expect(&mut r.events, |e| match e {
        ModemEvent::SimRemoved { iccid, .. } => Some(iccid.clone()),
        _ => None,
    })
    .await;
    assert_eq!(gone, FIRST);
    let month = simgate::time::month_key(simgate::time::unix_now());
    let old_usage = r.store.month_usage(FIRST, &month).unwrap();
    r.emu.send(Control::InsertSim(EmuSim::other())).await;
    let new = expect(&mut r.events, |e| match e {
        ModemEvent::SimInserted { info, .. } => Some(info.sim.iccid.clone()),
        _ => None,
    })
    .await;
    assert_eq!(new.as_deref(), Some(SECOND));
    // The new SIM's samples never land on the old ICCID.
    expect(&mut r.events, |e| {
        matches!(e, ModemEvent::Usage { iccid, .. } if iccid == SECOND).then_some(())
    })
    .await;
    assert_eq!(r.store.month_usage(FIRST, &month).unwrap(), old_usage);
}

#[tokio::test]
async fn sim_swap_without_urc_is_found_by_the_periodic_check() {
    // Sierra's AT port has no hot-plug URC.
    let mut r = rig("sierra-at", Duration::from_millis(200), |_| {}).await;
    assert_eq!(
        expect(&mut r.events, identified).await.as_deref(),
        Some(FIRST)
    );
    r.emu.send(Control::InsertSim(EmuSim::other())).await;
    let (new, previous) = expect(&mut r.events, |e| match e {
        ModemEvent::SimInserted { info, previous } => {
            Some((info.sim.iccid.clone(), previous.clone()))
        }
        _ => None,
    })
    .await;
    assert_eq!(new.as_deref(), Some(SECOND));
    assert_eq!(previous.as_deref(), Some(FIRST));
}

#[tokio::test]
async fn usb_reset_is_reattached_within_five_seconds() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    r.emu
        .send(Control::Vanish(Duration::from_millis(500)))
        .await;
    expect(&mut r.events, |e| {
        matches!(e, ModemEvent::Lost { .. }).then_some(())
    })
    .await;
    let back = tokio::time::timeout(Duration::from_secs(5), expect(&mut r.events, identified))
        .await
        .expect("reattached within 5 s");
    assert_eq!(back.as_deref(), Some(FIRST));
}

#[tokio::test]
async fn silent_modem_times_out_recovers_and_never_hangs() {
    // Short timeouts, so that "no hang" is shown within the test's patience whichever
    // command the silence catches (the shipped +CFUN timeout is 15 s).
    let quick = |p: &mut Profile| {
        p.timeouts.default_ms = 300;
        p.timeouts.radio_ms = 500;
        p.timeouts.sim_ms = 500;
        p.timeouts.network_ms = 500;
    };
    let mut r = rig_with("quectel-ec2x", Duration::from_millis(100), quick, |_| {}).await;
    expect(&mut r.events, identified).await;
    r.emu.send(Control::Silent(true)).await;
    // An action during silence comes back with an error instead of hanging.
    let act = tokio::time::timeout(PATIENCE, r.modem.act(Action::RadioOn))
        .await
        .expect("no hang");
    assert!(act.is_err(), "{act:?}");
    expect(&mut r.events, |e| {
        matches!(e, ModemEvent::Lost { .. }).then_some(())
    })
    .await;
    r.emu.send(Control::Silent(false)).await;
    assert_eq!(
        expect(&mut r.events, identified).await.as_deref(),
        Some(FIRST)
    );
}

#[tokio::test]
async fn reboot_in_the_middle_of_a_command_is_survived() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    r.emu
        .send(Control::RebootOnNextCommand(Duration::from_millis(300)))
        .await;
    let act = r.modem.act(Action::SuspendData).await;
    assert!(act.is_err(), "{act:?}");
    assert_eq!(
        expect(&mut r.events, identified).await.as_deref(),
        Some(FIRST)
    );
    // After the reboot the counter restarted; the sample is accounted, not lost.
    expect(&mut r.events, |e| {
        matches!(e, ModemEvent::Usage { .. }).then_some(())
    })
    .await;
}

#[tokio::test]
async fn suspend_resume_radio_and_slot_are_verified() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    let done = r.modem.act(Action::SuspendData).await.unwrap().unwrap();
    assert_eq!(done.verified, "PDP context 1 inactive");
    let done = r.modem.act(Action::ResumeData).await.unwrap().unwrap();
    assert_eq!(done.verified, "PDP context 1 active");
    let done = r.modem.act(Action::RadioOff).await.unwrap().unwrap();
    assert_eq!(done.verified, "+CFUN: 4");
    // Radio off: the data context cannot come up; the modem says so.
    let refused = r.modem.act(Action::ResumeData).await.unwrap();
    assert!(
        matches!(refused, Err(ModemRefusal::Refused(_))),
        "{refused:?}"
    );
    r.modem.act(Action::RadioOn).await.unwrap().unwrap();
    let done = r.modem.act(Action::SwitchSlot(2)).await.unwrap().unwrap();
    assert_eq!(done.verified, "+QDSIM: 1");
    let (new, slot) = expect(&mut r.events, |e| match e {
        ModemEvent::SimInserted { info, .. } => Some((info.sim.iccid.clone(), info.sim.slot)),
        _ => None,
    })
    .await;
    assert_eq!((new.as_deref(), slot), (Some(SECOND), Some(2)));
    let no = r.modem.act(Action::SwitchSlot(3)).await.unwrap();
    assert!(matches!(no, Err(ModemRefusal::Unsupported(_))));
}

/// The session as the supervisor reports it: a Session change or a counter sample.
fn session(e: &ModemEvent) -> Option<InSession> {
    match e {
        ModemEvent::Usage { in_session, .. } | ModemEvent::Session { in_session, .. } => {
            Some(*in_session)
        }
        _ => None,
    }
}

#[tokio::test]
async fn suspend_is_kept_across_a_reattach() {
    // A 1 s poll: the standing order is checked on every status line.
    let mut r = rig("quectel-ec2x", Duration::from_secs(1), |_| {}).await;
    expect(&mut r.events, identified).await;
    r.modem.act(Action::SuspendData).await.unwrap().unwrap();
    // A USB reset, then the modem brings its context back up by itself.
    r.emu
        .send(Control::Vanish(Duration::from_millis(200)))
        .await;
    expect(&mut r.events, identified).await;
    r.emu.send(Control::Connect).await;
    // Two status lines after the reconnect: the session is down again in both (a
    // supervisor that forgot the order would report it up).
    for _ in 0..2 {
        assert_eq!(expect(&mut r.events, session).await, InSession::No);
    }
    assert_eq!(r.store.suspended_iccids().unwrap(), vec![FIRST.to_string()]);
}

#[tokio::test]
async fn a_suspension_belongs_to_its_sim_not_to_the_modem() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(1), |_| {}).await;
    expect(&mut r.events, identified).await;
    r.modem.act(Action::SuspendData).await.unwrap().unwrap();
    // Another SIM goes in and the modem connects it: it is not suspended.
    r.emu.send(Control::InsertSim(EmuSim::other())).await;
    expect(&mut r.events, |e| match e {
        ModemEvent::SimInserted { info, .. } => info.sim.iccid.clone(),
        _ => None,
    })
    .await;
    r.emu.send(Control::Connect).await;
    expect(&mut r.events, |e| {
        (session(e) == Some(InSession::Yes)).then_some(())
    })
    .await;
    // The suspended SIM comes back: its session is brought down again.
    r.emu.send(Control::InsertSim(EmuSim::physical())).await;
    r.emu.send(Control::Connect).await;
    expect(&mut r.events, |e| match e {
        ModemEvent::SimInserted { info, .. } if info.sim.iccid.as_deref() == Some(FIRST) => {
            Some(())
        }
        _ => None,
    })
    .await;
    for _ in 0..2 {
        assert_eq!(expect(&mut r.events, session).await, InSession::No);
    }
}

#[tokio::test]
async fn family_without_slots_refuses_a_switch_plainly() {
    let mut r = rig("telit-le910", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    let no = r.modem.act(Action::SwitchSlot(2)).await.unwrap();
    assert!(matches!(no, Err(ModemRefusal::Unsupported(_))), "{no:?}");
}

#[tokio::test]
async fn a_restart_behind_an_open_port_is_noticed_by_its_boot_urc() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    // A UART modem restarts: no port event, only "RDY" and lost settings (echo back on).
    r.emu.send(Control::Restart).await;
    assert_eq!(
        expect(&mut r.events, identified).await.as_deref(),
        Some(FIRST)
    );
    let done = r.modem.act(Action::RadioOn).await.unwrap().unwrap();
    assert_eq!(done.verified, "+CFUN: 1");
}

/// Regression: the failure count was never reset after a successful reattach, so a
/// second loss went unreported.
#[tokio::test]
async fn every_loss_is_reported_once() {
    let mut r = rig("quectel-ec2x", Duration::from_secs(60), |_| {}).await;
    expect(&mut r.events, identified).await;
    for _ in 0..2 {
        r.emu
            .send(Control::Vanish(Duration::from_millis(200)))
            .await;
        expect(&mut r.events, |e| {
            matches!(e, ModemEvent::Lost { .. }).then_some(())
        })
        .await;
        expect(&mut r.events, identified).await;
    }
}

#[tokio::test]
async fn a_session_change_is_reported_without_a_counter() {
    // Sierra: no vendor counter, no netdev configured — the session is still followed.
    let mut r = rig("sierra-at", Duration::from_millis(100), |_| {}).await;
    expect(&mut r.events, identified).await;
    r.modem.act(Action::RadioOff).await.unwrap().unwrap();
    let (iccid, session) = expect(&mut r.events, |e| match e {
        ModemEvent::Session {
            iccid, in_session, ..
        } => Some((iccid.clone(), *in_session)),
        _ => None,
    })
    .await;
    assert_eq!((iccid.as_str(), session), (FIRST, InSession::No));
}
