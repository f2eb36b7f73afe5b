//! The platform link: one MQTT connection per agent (rumqttc) speaking the contract's
//! topics and payloads (src/contract/), health with a last will, and the durable outbox
//! as the only send queue.
//!
//! Only this module knows MQTT. The daemon hands it states, events, command statuses and
//! usage samples; each goes into the outbox (written and flushed) before rumqttc sees
//! it, and leaves the outbox only on the PUBACK for that very packet.
//!
//! How a message and its acknowledgement are tied together: the driver is the only one
//! publishing, through rumqttc's request channel, which rumqttc serves in order. Each
//! publish it hands over is remembered in a FIFO; rumqttc reports the packet id it gave
//! each one (`Outgoing::Publish(pkid)`) in that same order, so the FIFO's head gets
//! that id; a PUBACK names the id, the map names the outbox entry. At most `window`
//! publishes are in flight, and rumqttc's id space is more than twice that, so an id is
//! not reused while its publish awaits its PUBACK (rumqttc's "collision" state, which
//! would hold a publish back, cannot happen) — unless that PUBACK never comes, which
//! src/link/inflight.rs sees in time and answers with a new connection. rumqttc's own retransmission after a
//! reconnect is discarded on every connection error: its queue forgets what a restart
//! loses anyway, and the outbox replays from its head, in order.
//!
//! Session: persistent (`clean_session = false`), so the broker queues QoS 1 commands
//! for this agent while it is offline; incoming publishes are acknowledged manually,
//! only after the daemon stored them, so a crash between receipt and storage means a
//! redelivery, never a loss.
//!
//! By room: `settings` (what the link is given, the MQTT options), `tls` (rustls),
//! `handle` (`Link`: what the daemon queues), `driver` (the task on rumqttc's event
//! loop: connect, subscribe, feed the outbox, acknowledge, reconnect), `inflight` (one
//! connection's publishes awaiting their PUBACK), `pump` (rumqttc's event loop, each
//! poll carried to its end) and `inbound` (what the platform sends, for the daemon).
//! Here, `Link::start` puts them together.

mod drain;
mod driver;
mod handle;
mod inbound;
mod inflight;
mod nodes;
pub mod peer;
mod pump;
pub mod reconnect;
mod settings;
mod tls;

use crate::config::BrokerUrl;
use crate::contract::Topics;
use crate::store::{Store, StoreError};
use driver::Driver;
pub use handle::Link;
#[cfg(all(test, feature = "fuzzing"))]
pub(crate) use inbound::received;
pub use inbound::{AckToken, Received, INBOUND_QUEUE};
pub use reconnect::DEFAULT_RECONNECT_MAX;
use rumqttc::AsyncClient;
use settings::mqtt_options;
pub use settings::{client_options, ClientAccess, LinkSettings};
use std::path::PathBuf;
use std::sync::Arc;
use tls::tls_config;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

impl Link {
    /// Connect (in the background: the link keeps retrying) and return the handle and
    /// the task driving the connection. What the platform sends arrives on `received`.
    /// The task ends when `cancel` fires, after publishing the agent offline.
    /// [`Link::start`] when a broker is configured; `(None, None)` for a local-only run.
    pub fn start_if(
        settings: Option<&LinkSettings>,
        store: &Store,
        received: mpsc::Sender<Received>,
        cancel: CancellationToken,
    ) -> Result<(Option<Link>, Option<tokio::task::JoinHandle<()>>), LinkError> {
        match settings {
            Some(s) => {
                let (link, task) = Self::start(s, store, received, cancel)?;
                Ok((Some(link), Some(task)))
            }
            None => Ok((None, None)),
        }
    }

    pub fn start(
        settings: &LinkSettings,
        store: &Store,
        received: mpsc::Sender<Received>,
        cancel: CancellationToken,
    ) -> Result<(Link, tokio::task::JoinHandle<()>), LinkError> {
        let urls = settings
            .urls
            .iter()
            .map(|u| BrokerUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LinkError::Url)?;
        let Some(url) = urls.first().cloned() else {
            return Err(LinkError::Url("no broker URL given".into()));
        };
        let topics = Topics::new(&settings.agent_id);
        let window = settings.window();
        // One TLS configuration for every node (the same CA and client certificate).
        let tls = match urls.iter().any(|u| u.tls) {
            true => Some(Arc::new(tls_config(
                settings.ca_file.as_deref(),
                settings.client_cert.as_ref(),
            )?)),
            false => None,
        };
        let opts = mqtt_options(settings, &topics, &url, tls.as_ref());
        // Room for a full window of publishes plus acknowledgements and subscriptions.
        let (client, eventloop) = AsyncClient::new(opts, usize::from(window) + 64);
        let link = Link::new(client, topics, store, settings)?;
        let driver = Driver::new(link.clone(), eventloop, received, settings, urls, url, tls);
        let task = tokio::spawn(driver.run(cancel));
        Ok((link, task))
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own payload types hold only strings, numbers and maps with string keys:
    // serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("broker URL: {0}")]
    Url(String),
    #[error("TLS: {what} {path}: {source}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("payload: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The nodes of `urls` in the order agent `agent_id` tries them (its preferred node
/// first, then its failover order; src/link/nodes.rs), as URLs: for planning a fleet's
/// spread over a cluster. A name with several addresses counts as one node here.
pub fn node_order(agent_id: &str, urls: &[String]) -> Result<Vec<String>, LinkError> {
    let parsed = urls
        .iter()
        .map(|u| BrokerUrl::parse(u))
        .collect::<Result<Vec<_>, _>>()
        .map_err(LinkError::Url)?;
    Ok(nodes::rank(agent_id, parsed)
        .iter()
        .map(|n| n.to_string())
        .collect())
}
