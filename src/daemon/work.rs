//! The daemon's work seam, shared by commands, rules, refills and swaps: where modem
//! actions go (`ModemPorts`), what a piece of asynchronous work ends with (`Done`), the
//! one way a data-session action reaches a modem (`act_on_modem`: refused on a port
//! ModemManager keeps, asked again while the supervisor attaches) and the one way work
//! leaves the loop (`spawn`). A leaf: it imports none of its siblings, so commands,
//! rules, refill and swap all stand on it without importing one another.

use super::Event;
use crate::at::AtError;
use crate::contract::RefusalCode;
use crate::modem::actions::{Action as ModemAction, ModemRefusal, Outcome};
use crate::modem::supervisor::{ModemError, ModemHandle};
use crate::sim::Observed;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Why a piece of work failed: the contract's refusal code and a reason in words.
pub(crate) type Failure = (RefusalCode, String);

/// What a command's asynchronous work ends with: a fresh observation to record (a
/// re-read card), or nothing new; or why it failed.
pub(crate) type Done = Result<Option<Observed>, Failure>;

/// Where modem actions go: the daemon's modem supervisors, by port. A trait so the
/// executors do not depend on how supervisors are kept (and tests can have none).
pub(crate) trait ModemPorts {
    fn handle(&self, port: &str) -> Option<ModemHandle>;
    /// The port is a spare AT port of a modem ModemManager keeps
    /// (`[modems] shared_with_modemmanager`): its data session is not simgate's to
    /// bring down or up.
    fn shared_with_modemmanager(&self, _port: &str) -> bool {
        false
    }
}

/// A modem port as an action sees it: its supervisor (none when the modem is gone or
/// was never configured) and whether ModemManager keeps its data session.
#[derive(Debug, Clone)]
pub(crate) struct Port {
    pub(crate) port: String,
    pub(crate) handle: Option<ModemHandle>,
    pub(crate) shared: bool,
}

impl Port {
    pub(crate) fn of(modems: &dyn ModemPorts, port: &str) -> Port {
        Port {
            port: port.to_string(),
            handle: modems.handle(port),
            shared: modems.shared_with_modemmanager(port),
        }
    }
}

/// The refusal of a data-session action on a port ModemManager keeps: the same words
/// for a platform command and a local rule.
pub(crate) fn shared_refusal(port: &str) -> Failure {
    (
        RefusalCode::NotApplicable,
        format!(
            "{port} is a spare port of a modem ModemManager keeps (modems.shared_with_modemmanager): \
             ModemManager holds the data session up and would undo a +CGACT within seconds; \
             suspend the line on the platform's side, or let simgate own the modem \
             (/usr/share/simgate/udev/README.md)"
        ),
    )
}

/// The refusal of modem work whose port has no supervisor.
pub(crate) fn no_engine(port: &str) -> Failure {
    (
        RefusalCode::Unavailable,
        format!("modem engine not available for {port}"),
    )
}

/// Whether `action` brings a data session down or up: ModemManager's to decide on a
/// shared port.
pub(crate) fn touches_session(action: ModemAction) -> bool {
    matches!(action, ModemAction::SuspendData | ModemAction::ResumeData)
}

/// The one way a hardware action reaches a modem: refused on a port ModemManager
/// keeps when it touches the data session, refused when no supervisor serves the port,
/// asked again while the supervisor (re)attaches, and its failure said as the
/// contract's code (the modem's "unsupported" apart from a failed verification and
/// from an unreachable modem).
pub(crate) async fn act_on_modem(port: &Port, action: ModemAction) -> Result<Outcome, Failure> {
    if port.shared && touches_session(action) {
        return Err(shared_refusal(&port.port));
    }
    let Some(handle) = &port.handle else {
        return Err(no_engine(&port.port));
    };
    match attached(|| handle.act(action)).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(ModemRefusal::Unsupported(why))) => Err((RefusalCode::Unsupported, why)),
        Ok(Err(refusal)) => Err((RefusalCode::Failed, refusal.to_string())),
        Err(e) => Err((RefusalCode::Unavailable, e.to_string())),
    }
}

/// A supervisor reattaching (simgate just started, a USB reset) answers "not
/// attached": asked again for this long before the work fails.
const ATTACH_WAIT: Duration = Duration::from_secs(30);

/// Ask the supervisor, again while it is (re)attaching — right after a start, or during
/// a USB reset — for up to [`ATTACH_WAIT`].
pub(crate) async fn attached<T, F, Fut>(ask: F) -> Result<T, ModemError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ModemError>>,
{
    let deadline = Instant::now() + ATTACH_WAIT;
    loop {
        match ask().await {
            Err(ModemError::At(AtError::NotAttached)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            r => return r,
        }
    }
}

/// Run a command's work on a task of its own; the loop goes on meanwhile and gets its
/// end as `Event::CommandDone` for `id`.
pub(crate) fn spawn<F>(events: &mpsc::Sender<Event>, id: String, work: F)
where
    F: std::future::Future<Output = Done> + Send + 'static,
{
    let tx = events.clone();
    tokio::spawn(async move {
        let result = work.await;
        let _ = tx.send(Event::CommandDone { id, result }).await;
    });
}

/// Read the card in `reader` again for a command, through `reader::spawn_read` (its
/// own thread, the card time-out: a mute card ends the command failed, never leaves it
/// executing); `done` turns the read into the command's end, sent as
/// `Event::CommandDone` for `id`.
pub(crate) fn reread<F>(
    events: &mpsc::Sender<Event>,
    id: String,
    reader: String,
    settings: crate::reader::ReadSettings,
    done: F,
) where
    F: FnOnce(Result<Observed, crate::reader::ReaderError>) -> Done + Send + 'static,
{
    let tx = events.clone();
    crate::reader::spawn_read(reader, settings, move |read, _took| {
        let obs = read.map(|r| crate::observe::from_card(&r, crate::time::unix_now()));
        let _ = tx.blocking_send(Event::CommandDone {
            id,
            result: done(obs),
        });
    });
}

/// Blocking card work (a PC/SC transaction: an eSIM or PIN operation) for a command,
/// on a blocking thread; when it succeeds, the card read again through [`reread`],
/// `done` turning that read into the command's end. A failure ends the command at once.
pub(crate) fn card_work_then_reread<W, F>(
    events: &mpsc::Sender<Event>,
    id: String,
    reader: String,
    settings: crate::reader::ReadSettings,
    work: W,
    done: F,
) where
    W: FnOnce() -> Result<(), Failure> + Send + 'static,
    F: FnOnce(Result<Observed, crate::reader::ReaderError>) -> Done + Send + 'static,
{
    let tx = events.clone();
    tokio::task::spawn_blocking(move || match work() {
        Ok(()) => reread(&tx, id, reader, settings, done),
        Err(failed) => {
            let _ = tx.blocking_send(Event::CommandDone {
                id,
                result: Err(failed),
            });
        }
    });
}
