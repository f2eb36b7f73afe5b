//! What `simgate run` and `simgate station` share: the recorder that turns an
//! observation into the store's row and the platform's messages, and the reader manager
//! that turns the PC/SC watcher's events into card reads and observations. The daemon
//! (src/daemon) and the station (src/station) are loops over these.

pub mod changes;
pub mod readers;
pub mod recorder;

pub use readers::{FinishedRead, ReaderManager};
pub use recorder::{RecordError, Recorder};
