//! What `simgate run` and `simgate station` share: the recorder that turns an
//! observation into the store's row and the platform's messages, and the reader manager
//! that turns the PC/SC watcher's events into card reads and observations. The daemon
//! (src/daemon) and the station (src/station) are loops over these.

pub mod changes;
pub mod readers;
pub mod recorder;

pub use readers::{FinishedRead, ReaderManager};
pub use recorder::{RecordError, Recorder};

use crate::http::Feed;
use crate::link::{Link, LinkError, LinkSettings, Received};
use crate::reader::watch::{self, ReaderEvent};
use crate::store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The platform side of a running agent: the recorder over the store and the link (when
/// a broker is configured), what the platform sends, and the link's task to await at
/// shutdown.
pub type Started = (Recorder, mpsc::Receiver<Received>, Option<JoinHandle<()>>);

/// Start the platform link (if `broker` is set) over `store`; rows go to `feed` too
/// when the station page is served.
pub fn start(
    store: Store,
    broker: Option<&LinkSettings>,
    feed: Option<Feed>,
    cancel: &CancellationToken,
) -> Result<Started, LinkError> {
    let (tx, rx) = mpsc::channel::<Received>(crate::link::INBOUND_QUEUE);
    let (link, task): (Option<Link>, _) = Link::start_if(broker, &store, tx, cancel.clone())?;
    let rec = Recorder { store, link, feed };
    // What a crash left unpublished goes out before anything new is recorded.
    rec.recover().map_err(|e| match e {
        RecordError::Link(e) => e,
        RecordError::Store(e) => LinkError::from(e),
    })?;
    Ok((rec, rx, task))
}

/// Start the PC/SC watcher for readers matching `patterns` (all when empty) on a
/// blocking thread; it ends when `cancel` fires.
pub fn watch_readers(
    patterns: Vec<String>,
    cancel: &CancellationToken,
) -> (mpsc::Receiver<ReaderEvent>, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<ReaderEvent>(64);
    let cancel = cancel.clone();
    let rt = tokio::runtime::Handle::current();
    let task = tokio::task::spawn_blocking(move || watch::watch(patterns, tx, cancel, rt));
    (rx, task)
}
