//! The platform link: one MQTT connection per agent (rumqttc) speaking the contract's
//! topics and payloads (src/contract.rs), health with a last will, and the durable outbox as the only
//! send queue.
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

mod drain;
mod inflight;
mod nodes;
pub mod peer;
pub mod reconnect;

use crate::config::BrokerUrl;
use crate::contract::{
    self, Command, CommandStatus, EventKind, EventMsg, Health, Inbound, Refusal, SimIndex,
    SimState, Topics, UsageBatch, UsageSample,
};
use crate::sim::PlatformRecord;
use crate::store::outbox::{Class, Limits, Outbox, Shed};
use crate::store::{Store, StoreError};
use inflight::{Conn, Lost};
use nodes::Nodes;
pub use reconnect::DEFAULT_RECONNECT_MAX;
use reconnect::{Failure, Reconnect, LINK_STABLE};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    TlsConfiguration, Transport,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

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

/// Settings the link needs, taken from the configuration.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// The broker, or the nodes of a cluster (src/link/nodes.rs); at least one.
    pub urls: Vec<String>,
    pub agent_id: String,
    pub keepalive: Duration,
    pub username: String,
    pub password: String,
    /// PEM CA bundle; None: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key (mutual TLS); both or neither.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Outbox entries kept before telemetry (then events) is shed.
    pub outbox_cap: u64,
    /// Bytes of queued messages kept before telemetry (then events) is shed.
    pub outbox_max_bytes: u64,
    /// Percent of the state directory's file system kept free while messages queue up
    /// (at least `store::outbox::DISK_RESERVE_FLOOR`).
    pub outbox_disk_reserve_percent: u8,
    /// Publishes in flight (unacknowledged) at once.
    pub window: u16,
    /// Usage telemetry is batched and sent at this interval.
    pub usage_interval: Duration,
    /// The longest wait between connect attempts while the broker is unreachable.
    pub reconnect_max: Duration,
    /// fleet size / the broker's fleet-wide CONNECT quota: a drop's first retry is
    /// spread over it (src/link/reconnect.rs); None: not configured.
    pub fleet_window: Option<Duration>,
}

impl LinkSettings {
    /// Defaults for everything but the broker and the agent (platform-side tools).
    pub fn new(url: &str, agent_id: &str) -> LinkSettings {
        LinkSettings {
            urls: vec![url.to_string()],
            agent_id: agent_id.to_string(),
            keepalive: Duration::from_secs(300),
            username: String::new(),
            password: String::new(),
            ca_file: None,
            client_cert: None,
            outbox_cap: 100_000,
            outbox_max_bytes: crate::config::DEFAULT_OUTBOX_MAX_BYTES,
            outbox_disk_reserve_percent: crate::config::DEFAULT_DISK_RESERVE_PERCENT,
            window: 16,
            usage_interval: Duration::from_secs(900),
            reconnect_max: DEFAULT_RECONNECT_MAX,
            fleet_window: None,
        }
    }
}

/// Something the platform sent, for the daemon. Acknowledge it with [`Link::ack`] once
/// it is stored: until then the broker will deliver it again after a reconnect.
#[derive(Debug)]
pub enum Received {
    Command {
        command: Result<Command, Refusal>,
        ack: AckToken,
    },
    PlatformRecord {
        iccid: String,
        /// Ok(None): the platform cleared its retained record.
        record: Result<Option<PlatformRecord>, Refusal>,
        ack: AckToken,
    },
}

/// The MQTT acknowledgement owed for an inbound message (None: already acknowledged,
/// a poison message the link discarded, see `drain`).
#[derive(Debug)]
pub struct AckToken(Option<Publish>);

impl AckToken {
    /// Nothing to acknowledge: a command that came from the station page (src/http).
    pub fn local() -> AckToken {
        AckToken(None)
    }

    /// Nothing owed: for the daemon's property test, which hands it messages of its own.
    #[cfg(all(test, feature = "fuzzing"))]
    pub(crate) fn none() -> AckToken {
        AckToken(None)
    }
}

/// What an inbound message on `topic` means: a command or a platform record, each
/// parsed and checked by the contract (a record's refusal carries the payload's
/// fingerprint). A topic that is not ours gives its acknowledgement back.
pub(crate) fn received(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    now: u64,
    ack: AckToken,
) -> Result<Received, AckToken> {
    match topics.inbound(topic) {
        Some(Inbound::Command) => Ok(Received::Command {
            command: contract::parse_command(payload, now),
            ack,
        }),
        Some(Inbound::PlatformRecord { iccid }) => {
            let record = if contract::valid_iccid(&iccid) {
                contract::parse_platform_record(payload)
            } else {
                Err(Refusal::new(
                    contract::RefusalCode::InvalidField,
                    "topic: not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)",
                ))
            }
            .map_err(|mut r| {
                r.payload_hash = contract::payload_hash(payload);
                r
            });
            Ok(Received::PlatformRecord { iccid, record, ack })
        }
        None => Err(ack),
    }
}

/// Handle used by the daemon to publish. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Link {
    client: AsyncClient,
    topics: Topics,
    store: Store,
    outbox: Outbox,
    wake: Arc<Notify>,
    usage: Arc<Mutex<Usage>>,
    /// Between a CONNACK and the connection's end (the daemon's status line).
    connected: Arc<std::sync::atomic::AtomicBool>,
    /// The ICCIDs in the retained index (`index`); None until first needed, then
    /// loaded from the store.
    indexed: Arc<Mutex<Option<BTreeSet<String>>>>,
}

/// Usage between batches.
#[derive(Debug, Default)]
struct Usage {
    /// The latest sample per SIM since the last batch.
    pending: BTreeMap<String, UsageSample>,
    /// What the last queued batch said per SIM (month, rx, tx): a SIM whose counters
    /// did not move is left out of the next batch, so an idle gateway sends none.
    queued: HashMap<String, (String, u64, u64)>,
}

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
        let window = settings.window.clamp(1, 1024);
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
        let link = Link {
            client,
            topics,
            store: store.clone(),
            outbox: store.outbox(Limits {
                messages: settings.outbox_cap,
                bytes: settings.outbox_max_bytes,
                disk_reserve: crate::store::outbox::disk_reserve(
                    store.dir(),
                    settings.outbox_disk_reserve_percent,
                ),
            })?,
            wake: Arc::new(Notify::new()),
            usage: Arc::new(Mutex::new(Usage::default())),
            connected: Arc::default(),
            indexed: Arc::default(),
        };
        let driver = Driver {
            link: link.clone(),
            eventloop: Pump::new(eventloop),
            received,
            window,
            conn: None,
            usage_interval: settings.usage_interval,
            nodes: Nodes::new(&settings.agent_id, urls),
            url,
            settings: settings.clone(),
            tls,
            connected_at: None,
            short_drops: 0,
            dropped_qos0: 0,
            away: crate::away::Away::new("the broker"),
        };
        let task = tokio::spawn(driver.run(cancel));
        Ok((link, task))
    }

    /// The contract's topics for this agent.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Whether the broker accepted the current connection (CONNACK) and it still stands.
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Messages waiting in the outbox.
    pub fn queued(&self) -> u64 {
        self.outbox.len()
    }

    /// How long the oldest message in the outbox has waited, in seconds (None: empty).
    pub fn oldest_queued_secs(&self) -> Option<u64> {
        self.outbox.oldest_age(crate::time::unix_now())
    }

    fn enqueue(
        &self,
        class: Class,
        topic: &str,
        retain: bool,
        coalesce: Option<&str>,
        payload: impl FnOnce(u64) -> Vec<u8>,
    ) -> Result<(), LinkError> {
        // The push fsyncs on the caller's thread (milliseconds on flash): durability
        // before sending is the point, and the daemon's loop is the only caller.
        let (seq, shed) = match self.outbox.push(class, topic, retain, coalesce, payload) {
            Ok(r) => r,
            // Telemetry and events may be lost when the store cannot take them (a full
            // disk despite the reserve): the agent keeps running and says so. States and
            // statuses may not: their failure stops the daemon, which restarts.
            Err(e) if matches!(class, Class::Telemetry | Class::Event) => {
                tracing::error!(error = %e, %topic, "message not stored, dropped (disk full?)");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Tests wait for this line: from here the message survives kill -9.
        tracing::debug!(seq, %topic, "queued");
        if shed.any() {
            self.report_shed()?;
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The shed counter travels as one coalesced notice: however often the outbox
    /// overflows while offline, the platform gets one event with the totals.
    fn report_shed(&self) -> Result<(), LinkError> {
        let Shed { telemetry, events } = self.outbox.shed_totals()?;
        tracing::warn!(telemetry, events, "outbox full: messages shed");
        let topic = self.topics.events();
        self.outbox.push(
            Class::Notice,
            &topic,
            false,
            Some("notice/outbox_shed"),
            |seq| {
                encode(&EventMsg {
                    v: contract::SCHEMA_VERSION,
                    seq,
                    ts: crate::time::unix_now(),
                    kind: EventKind::OutboxShed { telemetry, events },
                })
            },
        )?;
        Ok(())
    }

    /// Queue a SIM's retained state (QoS 1); a newer state of the same SIM replaces a
    /// queued older one.
    pub fn publish_state(&self, state: &SimState) -> Result<(), LinkError> {
        self.queue_state(state, Queueing::Coalesced)
    }

    fn queue_state(&self, state: &SimState, how: Queueing) -> Result<(), LinkError> {
        let topic = self.topics.sim_state(&state.sim.iccid);
        let payload = serde_json::to_vec(state)?;
        let coalesce = (how == Queueing::Coalesced).then_some(topic.as_str());
        self.enqueue(Class::State, &topic, true, coalesce, |_| payload)?;
        // A SIM new to this agent: the index names it, after its row.
        let new = {
            let mut indexed = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
            let set = match indexed.as_mut() {
                Some(set) => set,
                None => indexed.insert(self.indexed_now()?),
            };
            set.insert(state.sim.iccid.clone())
        };
        if new {
            self.publish_index(Queueing::Coalesced)?;
        }
        Ok(())
    }

    /// Every ICCID with a row, from the store.
    fn indexed_now(&self) -> Result<BTreeSet<String>, LinkError> {
        Ok(self
            .store
            .all_observed()?
            .into_iter()
            .map(|o| o.iccid)
            .collect())
    }

    /// Queue the retained index.
    fn publish_index(&self, how: Queueing) -> Result<(), LinkError> {
        let iccids: Vec<String> = {
            let mut indexed = self.indexed.lock().unwrap_or_else(|p| p.into_inner());
            match indexed.as_ref() {
                Some(set) => set.iter().cloned().collect(),
                None => indexed
                    .insert(self.indexed_now()?)
                    .iter()
                    .cloned()
                    .collect(),
            }
        };
        let topic = self.topics.index();
        let payload = serde_json::to_vec(&SimIndex {
            v: contract::SCHEMA_VERSION,
            ts: crate::time::unix_now(),
            iccids,
        })?;
        let coalesce = (how == Queueing::Coalesced).then_some(topic.as_str());
        self.enqueue(Class::State, &topic, true, coalesce, |_| payload)
    }

    /// Queue every SIM's row again (coalesced with any queued version), then the index:
    /// for a broker (node) that does not hold this agent's retained state.
    fn requeue_rows(&self) -> Result<u64, LinkError> {
        self.rows_again(Queueing::Coalesced)
    }

    /// A `sync`'s snapshot: every SIM's row, then the index, each queued as a message
    /// of its own; returns how many rows. Not coalesced: a newer row replacing a queued
    /// one goes to the outbox's tail, which would put it behind the sync's end marker
    /// (queued next by the caller) — the snapshot's rows must all come before it.
    pub fn sync_rows(&self) -> Result<u64, LinkError> {
        self.rows_again(Queueing::Snapshot)
    }

    fn rows_again(&self, how: Queueing) -> Result<u64, LinkError> {
        let mut rows = 0;
        for obs in self.store.all_observed()? {
            self.queue_state(&self.store.row(&obs)?, how)?;
            rows += 1;
        }
        self.publish_index(how)?;
        Ok(rows)
    }

    /// Queue an event (QoS 1, not retained).
    pub fn publish_event(&self, kind: EventKind) -> Result<(), LinkError> {
        let topic = self.topics.events();
        self.enqueue(Class::Event, &topic, false, None, |seq| {
            encode(&EventMsg {
                v: contract::SCHEMA_VERSION,
                seq,
                ts: crate::time::unix_now(),
                kind,
            })
        })
    }

    /// Queue an event once per `key`, ever (`Outbox::push_once`): `Ok(false)` when it
    /// was queued before. Unlike [`Self::publish_event`], a store that cannot take it
    /// is an error: the caller keeps the thing the event reports (an SMS on the modem)
    /// until it can.
    pub fn publish_event_once(&self, key: &str, kind: EventKind) -> Result<bool, LinkError> {
        let topic = self.topics.events();
        let queued =
            self.outbox
                .push_once(Class::Event, &topic, &format!("once/{key}"), |seq| {
                    encode(&EventMsg {
                        v: contract::SCHEMA_VERSION,
                        seq,
                        ts: crate::time::unix_now(),
                        kind,
                    })
                })?;
        if queued {
            tracing::debug!(%topic, %key, "queued once");
            self.wake.notify_one();
        }
        Ok(queued)
    }

    /// Queue a command's lifecycle status (QoS 1, not retained, never shed).
    pub fn publish_command_status(&self, status: &CommandStatus) -> Result<(), LinkError> {
        let topic = self.topics.command_status(&status.id);
        let payload = serde_json::to_vec(status)?;
        // Coalesced per command: a replay after a crash or a lost acknowledgement sends
        // only the latest status, never an older one after a newer one (MQTT.md,
        // "Lifecycle").
        self.enqueue(Class::Outcome, &topic, false, Some(&topic), |_| payload)
    }

    /// Note a SIM's usage counters; the latest sample per SIM goes out in the next batch,
    /// unless they are what the last batch already said.
    pub fn report_usage(&self, sample: UsageSample) {
        // Poisoned: a panic elsewhere while holding it; the maps are still maps.
        let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        let key = (sample.month.clone(), sample.rx, sample.tx);
        if u.queued.get(&sample.iccid) == Some(&key) {
            u.pending.remove(&sample.iccid);
        } else {
            u.pending.insert(sample.iccid.clone(), sample);
        }
    }

    /// Queue one batch of the usage noted since the last one (nothing when none).
    pub fn flush_usage(&self) -> Result<(), LinkError> {
        let sims: Vec<UsageSample> = {
            let mut u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
            let sims: Vec<UsageSample> = std::mem::take(&mut u.pending).into_values().collect();
            for s in &sims {
                u.queued
                    .insert(s.iccid.clone(), (s.month.clone(), s.rx, s.tx));
            }
            sims
        };
        if sims.is_empty() {
            return Ok(());
        }
        let topic = self.topics.usage();
        self.enqueue(Class::Telemetry, &topic, false, None, |seq| {
            encode(&UsageBatch {
                v: contract::SCHEMA_VERSION,
                seq,
                ts: crate::time::unix_now(),
                sims,
            })
        })
    }

    /// Acknowledge an inbound message (after storing what it said). Never waits: the
    /// daemon's loop must not stall on a full request channel; an acknowledgement not
    /// sent means a redelivery, which the store answers.
    pub fn ack(&self, token: AckToken) {
        let Some(publish) = token.0 else {
            return;
        };
        if let Err(e) = self.client.try_ack(&publish) {
            tracing::debug!(error = %e, "ack not sent; the broker will redeliver");
        }
    }
}

/// How a retained message of the agent's state is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queueing {
    /// Replacing a queued older version of the same topic (MQTT.md, "Durability").
    Coalesced,
    /// A message of its own, where it stands in the queue (a `sync`'s snapshot).
    Snapshot,
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Our own payload types hold only strings, numbers and maps with string keys:
    // serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Sleeps until `at`; forever for None (a `select!` branch disabled by its guard still
/// builds its future).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// rumqttc's event loop with each poll carried to its end. `EventLoop::poll` is not
/// cancel-safe: dropped while it waits to hand a packet to the socket (a broker slow to
/// read), the packet it already counted in flight is lost — a PUBLISH the broker never
/// sees, whose PUBACK never comes; once the packet ids wrap round to it, rumqttc holds
/// every later publish back ("collision") and the agent publishes nothing more (seen
/// under a flood of inbound payloads on a loaded machine: tests/it/chaos.rs). The
/// driver also wakes for the outbox and the usage tick, so the poll lives in a future
/// of its own that owns the event loop and outlives those wake-ups.
struct Pump {
    /// The event loop while no poll is under way.
    home: Option<EventLoop>,
    polling: Option<Polling>,
    /// Ends the poll under way (see `halt`).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A poll's end: the event loop back, and the event (None: halted).
type Polled = (EventLoop, Option<Result<Event, rumqttc::ConnectionError>>);
type Polling = std::pin::Pin<Box<dyn std::future::Future<Output = Polled> + Send>>;

impl Pump {
    fn new(eventloop: EventLoop) -> Pump {
        Pump {
            home: Some(eventloop),
            polling: None,
            stop: None,
        }
    }

    /// The event loop between polls (the driver touches it only after an event, when
    /// the poll that produced it has ended, or after `halt`).
    fn get(&mut self) -> &mut EventLoop {
        self.home
            .as_mut()
            .expect("the event loop is home between polls: only `next` takes it away")
    }

    /// Whether events already read off the socket wait in rumqttc to be handed out, one
    /// per poll. None do while a poll is under way: a poll waits only once they are out.
    fn has_buffered(&self) -> bool {
        self.home
            .as_ref()
            .is_some_and(|e| !e.state.events.is_empty())
    }

    /// The next event: the poll under way continued, or a new one. Cancel-safe: a
    /// dropped call leaves its poll to the next call.
    async fn next(&mut self) -> Result<Event, rumqttc::ConnectionError> {
        loop {
            let polling = match &mut self.polling {
                Some(p) => p,
                None => {
                    let mut eventloop = self
                        .home
                        .take()
                        .expect("no poll under way, so the event loop is home");
                    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                    self.stop = Some(stop);
                    self.polling.insert(Box::pin(async move {
                        tokio::select! {
                            ev = eventloop.poll() => (eventloop, Some(ev)),
                            _ = stopped => (eventloop, None),
                        }
                    }))
                }
            };
            let (eventloop, ev) = polling.await;
            self.polling = None;
            self.stop = None;
            self.home = Some(eventloop);
            if let Some(ev) = ev {
                return ev;
            }
        }
    }

    /// The event loop, the poll under way (if any) ended and what it was doing dropped:
    /// only for a connection about to be closed, whose unacknowledged publishes the
    /// outbox sends again anyway (`Driver::renew`).
    async fn halt(&mut self) -> &mut EventLoop {
        if let (Some(polling), Some(stop)) = (self.polling.take(), self.stop.take()) {
            let _ = stop.send(());
            let (eventloop, _) = polling.await;
            self.home = Some(eventloop);
        }
        self.get()
    }
}

struct Driver {
    link: Link,
    eventloop: Pump,
    received: mpsc::Sender<Received>,
    window: u16,
    conn: Option<Conn>,
    usage_interval: Duration,
    /// The broker's nodes in this agent's order, and the current connect round.
    nodes: Nodes,
    /// The node of the current connection or attempt (also for `drain`).
    url: BrokerUrl,
    settings: LinkSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// When the current connection was accepted (CONNACK).
    connected_at: Option<Instant>,
    /// Connections in a row that the broker closed before they were stable.
    short_drops: u32,
    /// QoS 0 messages dropped because the daemon was `INBOUND_QUEUE` behind.
    dropped_qos0: u64,
    /// The broker's absence, said once (crate::away).
    away: crate::away::Away,
}

/// Inbound messages (commands, platform records) waiting for the daemon, at most.
/// Above the broker's in-flight window for QoS 1 (mosquitto's max_inflight_messages: 20
/// by default), so in practice only a QoS 0 flood meets the bound.
pub const INBOUND_QUEUE: usize = 256;

/// rumqttc's limit on a packet, both ways. An inbound packet over it breaks the
/// connection before it is read; the driver then discards it through `drain`.
const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Whether a connection's end means the broker is there and turns the agent away (the
/// slow regime of [`Reconnect`]) rather than out of reach. `lived`: how long the connection
/// had been accepted, None when it never was.
fn turned_away(lived: Option<Duration>, e: &rumqttc::ConnectionError) -> bool {
    use rumqttc::ConnectionError as C;
    match lived {
        // A connection that lived: a fresh start (the unreachable waits were reset when
        // it was accepted).
        Some(l) if l >= LINK_STABLE => false,
        // Accepted, then closed soon: a twin, a poison message, a flapping broker.
        Some(_) => true,
        // Never accepted: the broker itself said no, or it was not reached at all.
        None => matches!(e, C::ConnectionRefused(_) | C::Tls(_) | C::NotConnAck(_)),
    }
}

/// This many connections in a row closed by the broker before `LINK_STABLE` raise an
/// `error` event with code `client_id_in_use`.
const UNSTABLE_AFTER: u32 = 3;

impl Driver {
    async fn run(mut self, cancel: CancellationToken) {
        let mut waits = Reconnect::new(self.settings.reconnect_max, self.settings.fleet_window);
        // Cancelled meanwhile: the loop below ends at once, through the shutdown.
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.nodes.start_round() => self.use_node(),
        }
        let mut usage_tick = tokio::time::interval(self.usage_interval);
        usage_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick after one interval, not at once.
        usage_tick.reset();
        // Acknowledgements come in bursts: rumqttc reads every packet waiting on the
        // socket at once and hands them out one per poll. The window is refilled once
        // such a burst is through, with one read of the outbox for all the room it made
        // (benches/link.rs, the drain).
        let mut refill = false;
        loop {
            if refill && !self.eventloop.has_buffered() {
                refill = false;
                self.fill();
            }
            let ready = self.conn.as_ref().is_some_and(|c| c.ready);
            let wake = self.link.wake.clone();
            // When an acknowledgement still awaited is next due to be given up.
            let due = self
                .conn
                .as_ref()
                .and_then(|c| c.next_deadline(self.window));
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                _ = sleep_until(due), if due.is_some() => {
                    let lost = self
                        .conn
                        .as_ref()
                        .and_then(|c| c.lost(Instant::now(), self.window));
                    if let Some(lost) = lost {
                        self.renew(lost).await;
                    }
                    continue;
                }
                _ = usage_tick.tick() => {
                    if let Err(e) = self.link.flush_usage() {
                        tracing::error!(error = %e, "usage batch not queued");
                    }
                    self.fill();
                    continue;
                }
                // Only while connected: waking would otherwise cancel a connect attempt.
                _ = wake.notified(), if ready => {
                    self.fill();
                    continue;
                }
                ev = self.eventloop.next() => ev,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.away.back();
                    crate::metrics::counters().broker_connected();
                    let moved = self.nodes.accepted();
                    tracing::info!(session_present = ack.session_present, broker = %self.url, "connected to broker");
                    self.connected_at = Some(Instant::now());
                    // The broker is reachable: the next outage starts with short waits.
                    waits.connected();
                    self.link
                        .connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    self.link.outbox.set_passing(u64::from(self.window));
                    // Whatever rumqttc kept from the last session is replayed from the
                    // outbox instead, with ids this driver tracks.
                    self.eventloop.get().pending.clear();
                    self.conn = Some(Conn::new());
                    // A broker without our session (first contact, or it lost its
                    // state) may have lost the retained rows too, and another node of
                    // a cluster never had them (a node keeps only the retained
                    // messages published on it: MQTT.md, "Clusters"): queue them
                    // again. On an ordinary reconnect to the same node it kept both,
                    // and nothing is resent.
                    if !ack.session_present || moved {
                        tracing::info!(broker = %self.url, session_present = ack.session_present, "rows published again for this broker node");
                        if let Err(e) = self.link.requeue_rows() {
                            tracing::error!(error = %e, "retained rows not requeued");
                        }
                    }
                    // Resubscribe on every connect: a broker that lost its sessions
                    // (restart without persistence) must still deliver commands.
                    let t = &self.link.topics;
                    let filters = [
                        SubscribeFilter::new(t.commands(), QoS::AtLeastOnce),
                        SubscribeFilter::new(t.sim_platform_filter(), QoS::AtLeastOnce),
                    ];
                    if let Err(e) = self.link.client.try_subscribe_many(filters) {
                        // Without a SUBACK to wait for, publish at once: the outbox
                        // must drain; commands come after the next reconnect.
                        tracing::error!(error = %e, "subscribe not queued; commands wait for the next connect");
                        self.publish_health(true);
                        if let Some(conn) = self.conn.as_mut() {
                            conn.ready = true;
                        }
                        self.fill();
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        tracing::error!(
                            "broker refused a subscription (ACL?): commands will not arrive"
                        );
                    }
                    if self.conn.as_ref().is_some_and(|c| !c.ready) {
                        self.publish_health(true);
                        if let Some(conn) = self.conn.as_mut() {
                            conn.ready = true;
                        }
                        self.fill();
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    if let Some(conn) = self.conn.as_mut() {
                        match conn.handed.pop_front() {
                            Some(entry) => {
                                tracing::trace!(pkid, seq = ?entry, "publish sent");
                                conn.sent(pkid, entry, Instant::now())
                            }
                            None => tracing::warn!(pkid, "publish not handed over by the link"),
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(conn) = self.conn.as_mut() {
                        let entry = conn.acked(ack.pkid);
                        tracing::trace!(pkid = ack.pkid, seq = ?entry, in_flight = conn.in_flight(), "publish acknowledged");
                        match entry {
                            Some(Some(seq)) => {
                                if let Err(e) = self.link.outbox.acknowledged(seq) {
                                    tracing::error!(error = %e, seq, "acknowledged entry not removed");
                                }
                            }
                            Some(None) => {}
                            None => tracing::warn!(pkid = ack.pkid, "PUBACK for an unknown packet"),
                        }
                        if let Some(lost) = conn.lost(Instant::now(), self.window) {
                            self.renew(lost).await;
                            continue;
                        }
                    }
                    refill = true;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => self.on_publish(p).await,
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    // rumqttc moved its in-flight publishes (and queued requests) here to
                    // resend them; the outbox is the queue, so drop them.
                    self.eventloop.get().pending.clear();
                    let wait = self.on_connection_error(&e, &mut waits, &cancel).await;
                    tracing::debug!(
                        queued = self.link.outbox.len(),
                        "messages waiting for the broker"
                    );
                    self.away.failed(&e, wait);
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
        self.shutdown().await;
    }

    /// Decide what a connection's end means and how long to wait before the next
    /// attempt: discard a poison message, say it loudly when the broker keeps closing
    /// fresh connections (another client with this id), fail over to the next broker
    /// node, and ask the reconnect policy ([`Reconnect`]) for the wait.
    async fn on_connection_error(
        &mut self,
        e: &rumqttc::ConnectionError,
        waits: &mut Reconnect,
        cancel: &CancellationToken,
    ) -> Duration {
        use rumqttc::{ConnectionError as C, StateError as S};
        let lived = self.connected_at.take().map(|t| t.elapsed());
        self.link
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.link.outbox.set_passing(0);
        let io_closed = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            )
        };
        let closed_by_broker = match e {
            C::MqttState(S::ConnectionAborted) => true,
            C::MqttState(S::Io(io)) | C::Io(io) => io_closed(io),
            _ => false,
        };
        if let C::MqttState(S::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) = e
        {
            tracing::warn!(
                bytes = n,
                "inbound message over the packet limit: discarding it"
            );
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = self.drain() => {}
            }
        } else if closed_by_broker && lived.is_some_and(|l| l < LINK_STABLE) {
            self.short_drops += 1;
            if self.short_drops >= UNSTABLE_AFTER {
                tracing::error!(
                    drops = self.short_drops,
                    "the broker keeps closing this agent's connections soon after accepting them: is another client using client id {:?}?",
                    self.settings.agent_id
                );
            }
            if self.short_drops == UNSTABLE_AFTER {
                let reason = format!(
                    "the broker closed {UNSTABLE_AFTER} connections in a row within {} s of accepting them; most likely another client uses this agent's client id {:?}",
                    LINK_STABLE.as_secs(),
                    self.settings.agent_id
                );
                if let Err(e) = self.link.publish_event(EventKind::Error {
                    iccid: None,
                    code: contract::RefusalCode::ClientIdInUse,
                    reason,
                }) {
                    tracing::error!(error = %e, "client_id_in_use event not queued");
                }
            }
        }
        if lived.is_some_and(|l| l >= LINK_STABLE) {
            self.short_drops = 0;
        }
        // Not reached at all: an outage, not another client taking the id over (a
        // twin's broker always answers).
        let never_reached = lived.is_none() && !turned_away(None, e);
        if never_reached {
            self.short_drops = 0; // the streak of short drops ends
        }
        let failure = match turned_away(lived, e) {
            true => Failure::TurnedAway,
            false => Failure::Unreachable,
        };
        if lived.is_none() && self.nodes.failed_over() {
            let from = std::mem::replace(&mut self.url, self.nodes.current().clone());
            self.use_node();
            tracing::info!(%from, to = %self.url, error = %e, "broker node not reached: trying the next");
            // A node out of reach costs no CONNECT: the next one at once. One that
            // answered and said no is left after its regime's wait.
            return match failure {
                Failure::Unreachable => Duration::ZERO,
                Failure::TurnedAway => waits.wait(lived, failure),
            };
        }
        let wait = waits.wait(lived, failure);
        // The next round starts at this agent's preferred node, names resolved again.
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = self.nodes.start_round() => self.use_node(),
        }
        wait
    }

    /// A PUBACK is given up (src/link/inflight.rs): close this connection and open
    /// another at once. The outbox sends again from its head what was not acknowledged
    /// (at least once, MQTT.md "Durability"); rumqttc's copies are dropped as after any
    /// connection error.
    async fn renew(&mut self, lost: Lost) {
        tracing::warn!(
            pkid = lost.pkid,
            waited_ms = lost.waited.as_millis() as u64,
            overtaken = lost.overtaken,
            broker = %self.url,
            "the broker's acknowledgement of a message did not come (a broker drops it when its queue for this agent is full, or never sends one for a message it refused): reconnecting; what is unacknowledged is sent again"
        );
        let eventloop = self.eventloop.halt().await;
        eventloop.clean();
        eventloop.pending.clear();
        self.conn = None;
        self.connected_at = None;
        self.link
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.link.outbox.set_passing(0);
    }

    /// Point the next connect attempt at the current node of the round.
    fn use_node(&mut self) {
        let node = self.nodes.current().clone();
        let eventloop = self.eventloop.get();
        if eventloop.mqtt_options.broker_address() != (node.host.clone(), node.port) {
            eventloop.mqtt_options =
                mqtt_options(&self.settings, &self.link.topics, &node, self.tls.as_ref());
        }
        self.url = node;
    }

    /// Discard what rumqttc cannot read (see `drain`), and tell the daemon, which
    /// refuses it as `too_large` like any oversized payload.
    async fn drain(&mut self) {
        let access = drain::Access {
            url: &self.url,
            client_id: &self.settings.agent_id,
            username: &self.settings.username,
            password: &self.settings.password,
            tls: self.tls.clone(),
        };
        let found = match drain::drain(&access, MAX_PACKET_BYTES).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "poison message not discarded; retrying after the next connect");
                return;
            }
        };
        for d in found {
            tracing::warn!(topic = %d.topic, bytes = d.bytes, "oversized message acknowledged and discarded");
            let mut refusal = Refusal::new(
                contract::RefusalCode::TooLarge,
                format!(
                    "payload of {} bytes exceeds the {MAX_PACKET_BYTES} bytes the agent reads; discarded",
                    d.bytes
                ),
            );
            // Unread: its size stands for it.
            refusal.payload_hash = contract::payload_hash(&d.bytes.to_be_bytes());
            let msg = match self.link.topics.inbound(&d.topic) {
                Some(Inbound::Command) => Received::Command {
                    command: Err(refusal),
                    ack: AckToken(None),
                },
                Some(Inbound::PlatformRecord { iccid }) => Received::PlatformRecord {
                    iccid,
                    record: Err(refusal),
                    ack: AckToken(None),
                },
                None => continue,
            };
            let _ = self.received.send(msg).await;
        }
    }

    /// Health goes out directly, not through the outbox: it is republished on every
    /// connect, and the will covers the other case.
    fn publish_health(&mut self, online: bool) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut health = Health::new(online, crate::time::unix_now());
        if online {
            health.broker = Some(self.url.to_string());
        }
        let payload = encode(&health);
        match self.link.client.try_publish(
            self.link.topics.health(),
            QoS::AtLeastOnce,
            true,
            payload,
        ) {
            Ok(()) => conn.handed.push_back(None),
            Err(e) => tracing::warn!(error = %e, "health not queued"),
        }
    }

    /// Hand outbox entries to rumqttc while the window has room: as many as it has,
    /// read from the outbox at once.
    fn fill(&mut self) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.ready) else {
            return;
        };
        let room = usize::from(self.window).saturating_sub(conn.in_flight());
        if room == 0 {
            return;
        }
        let batch = match self.link.outbox.entries_after(conn.cursor, room) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "outbox unreadable");
                return;
            }
        };
        tracing::trace!(room, batch = batch.len(), after = ?conn.cursor, "window filled");
        for (seq, entry) in batch {
            // try_: the channel has room for a window (see `start`); should it be full,
            // the next acknowledgement or wake-up fills again from the same cursor.
            if let Err(e) = self.link.client.try_publish(
                entry.topic,
                QoS::AtLeastOnce,
                entry.retain,
                entry.payload,
            ) {
                tracing::debug!(error = %e, "request channel full");
                break;
            }
            conn.handed.push_back(Some(seq));
            conn.cursor = Some(seq);
        }
    }

    async fn on_publish(&mut self, p: Publish) {
        let now = crate::time::unix_now();
        let (topic, payload, qos) = (p.topic.clone(), p.payload.clone(), p.qos);
        let msg = match received(&self.link.topics, &topic, &payload, now, AckToken(Some(p))) {
            Ok(msg) => msg,
            Err(ack) => {
                // Not ours to consume (a broker delivering outside our filters): ack so
                // it does not come back.
                tracing::debug!(%topic, "ignored inbound message");
                self.link.ack(ack);
                return;
            }
        };
        // The queue to the daemon is bounded (INBOUND_QUEUE): a flood must not grow
        // memory (5 000 hostile QoS 0 payloads queued 17 MB that the allocator kept).
        // QoS 1 messages are bounded by the broker's in-flight window anyway (manual
        // acks; mosquitto: 20), and wait here for room. A QoS 0 message arriving while
        // the daemon is that far behind is dropped: at most once is what its sender
        // asked for, and the contract's messages are QoS 1 (MQTT.md).
        let msg = match self.received.try_send(msg) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(msg)) if qos != QoS::AtMostOnce => msg,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped_qos0 += 1;
                // Said at 1, 2, 4, 8 ... drops: a flood does not flood the journal too.
                if self.dropped_qos0.is_power_of_two() {
                    tracing::warn!(%topic, dropped = self.dropped_qos0, "QoS 0 message dropped: the agent is {INBOUND_QUEUE} messages behind");
                }
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!("daemon gone; inbound message left unacknowledged");
                return;
            }
        };
        if self.received.send(msg).await.is_err() {
            tracing::debug!("daemon gone; inbound message left unacknowledged");
        }
    }

    /// Graceful stop: say offline ourselves (the will is only sent on an unclean drop),
    /// then disconnect, driving the loop until both went out or a short grace expired.
    /// If the offline message cannot go out, the broker still publishes the will once
    /// the connection drops.
    async fn shutdown(mut self) {
        if self.conn.as_ref().is_some_and(|c| c.ready) {
            self.publish_health(false);
            let _ = self.link.client.try_disconnect();
            // The poll under way (if any) takes both requests from the channel.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(ev) = self.eventloop.next().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        if let Err(e) = self.link.outbox.flush() {
            tracing::warn!(error = %e, "outbox not flushed at shutdown");
        }
    }
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

/// The agent's MQTT options for one broker node.
fn mqtt_options(
    settings: &LinkSettings,
    topics: &Topics,
    url: &BrokerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> MqttOptions {
    let window = settings.window.clamp(1, 1024);
    let mut opts = MqttOptions::new(settings.agent_id.clone(), url.host.clone(), url.port);
    opts.set_keep_alive(settings.keepalive);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    // Twice the window plus room for health: see the module note on packet ids.
    opts.set_inflight(2 * window + 2);
    // rumqttc drops the connection on a packet over its limit, and with a persistent
    // session the broker redelivers it on every reconnect: a loop. So the transport
    // limit is generous (1 MiB) and the contract's own limit (MAX_INBOUND_BYTES) is
    // enforced after receipt, as a refusal the platform sees. Brokers should cap
    // what reaches the agent (mosquitto: message_size_limit) — see MQTT.md.
    opts.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if !settings.username.is_empty() {
        opts.set_credentials(settings.username.clone(), settings.password.clone());
    }
    if let (true, Some(cfg)) = (url.tls, tls) {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            cfg.clone(),
        )));
    }
    let will = encode(&Health::new(false, 0));
    opts.set_last_will(LastWill::new(topics.health(), will, QoS::AtLeastOnce, true));
    opts
}

/// How a platform-side tool (`simgate watch`, `simgate platform`) reaches a broker:
/// credentials and TLS files, applied the same way the agent applies its own.
#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// rumqttc options for a platform-side tool with client id `client_id`.
pub fn client_options(
    url: &str,
    client_id: String,
    access: &ClientAccess,
) -> Result<MqttOptions, LinkError> {
    let url = BrokerUrl::parse(url).map_err(LinkError::Url)?;
    let mut opts = MqttOptions::new(client_id, url.host, url.port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(u) = &access.username {
        opts.set_credentials(u.clone(), access.password.clone().unwrap_or_default());
    }
    if url.tls {
        let cfg = tls_config(access.ca_file.as_deref(), access.client_cert.as_ref())?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(opts)
}

/// Build the rustls client configuration: `ring` as the crypto provider (see
/// Cargo.toml), the CA file's roots or the system's, and an optional client certificate.
fn tls_config(
    ca_file: Option<&Path>,
    client_cert: Option<&(PathBuf, PathBuf)>,
) -> Result<rustls::ClientConfig, LinkError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(ca) => {
            let certs = read_certs("CA file", ca)?;
            if certs.is_empty() {
                return Err(LinkError::Tls(format!(
                    "CA file {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            for c in certs {
                roots.add(c)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(LinkError::Tls(
                    "no system trust roots found; set broker.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match client_cert {
        Some((cert, key)) => {
            let chain = read_certs("client certificate", cert)?;
            let file = |source| LinkError::TlsFile {
                what: "client key",
                path: key.clone(),
                source,
            };
            let mut rd = std::io::BufReader::new(std::fs::File::open(key).map_err(file)?);
            let key_der = rustls_pemfile::private_key(&mut rd)
                .map_err(file)?
                .ok_or_else(|| {
                    LinkError::Tls(format!("client key {}: no PEM private key", key.display()))
                })?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        None => builder.with_no_client_auth(),
    })
}

fn read_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, LinkError> {
    let file = |source| LinkError::TlsFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut rd = std::io::BufReader::new(std::fs::File::open(path).map_err(file)?);
    rustls_pemfile::certs(&mut rd)
        .collect::<Result<Vec<_>, _>>()
        .map_err(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::{ConnectReturnCode, ConnectionError as C};
    use std::io::{Error, ErrorKind};

    #[test]
    fn an_unreachable_broker_is_retried_in_the_fast_regime() {
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
        ] {
            assert!(!turned_away(None, &C::Io(Error::from(kind))), "{kind:?}");
        }
        assert!(!turned_away(None, &C::NetworkTimeout));
    }

    #[test]
    fn a_broker_that_says_no_or_drops_a_fresh_connection_is_retried_slowly() {
        let refused = C::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(turned_away(None, &refused), "bad credentials: slow");
        let reset = || C::Io(Error::from(ErrorKind::ConnectionReset));
        assert!(
            turned_away(Some(Duration::from_secs(2)), &reset()),
            "a twin's takeover"
        );
        assert!(
            !turned_away(Some(LINK_STABLE), &reset()),
            "a connection that lived starts over"
        );
    }

    #[test]
    fn the_unreachable_regime_is_capped_by_the_setting() {
        let mut b = crate::backoff::Backoff::with_seed(
            reconnect::BACKOFF_BASE,
            DEFAULT_RECONNECT_MAX,
            LINK_STABLE,
            3,
        );
        let waits: Vec<Duration> = (0..12).map(|_| b.next_wait()).collect();
        assert!(
            waits.iter().all(|w| *w <= DEFAULT_RECONNECT_MAX),
            "{waits:?}"
        );
        // Past the climb, every wait is in the cap's second half: spread, never a spin.
        assert!(
            waits[6..].iter().all(|w| *w >= DEFAULT_RECONNECT_MAX / 2),
            "{waits:?}"
        );
    }
}
