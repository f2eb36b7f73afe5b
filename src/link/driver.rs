//! The driver: one task on rumqttc's event loop — connect (a cluster's nodes in this
//! agent's order), subscribe, hand outbox entries to rumqttc within the window, delete
//! an entry on its PUBACK, publish health, reconnect on the policy's waits, and say
//! offline at shutdown.

use super::drain;
use super::encode;
use super::handle::Link;
use super::inbound::{Inbox, Received};
use super::inflight::{Conn, Lost};
use super::nodes::Nodes;
use super::pump::Pump;
use super::reconnect::{Failure, Reconnect, LINK_STABLE};
use super::settings::{mqtt_options, LinkSettings};
use crate::config::BrokerUrl;
use crate::contract::{self, EventKind, Health};
use rumqttc::{Event, EventLoop, Packet, QoS, SubscribeFilter};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Drops what rumqttc keeps to send again after a reconnect: the requests and in-flight
/// publishes `EventLoop::clean` moved to `pending`, and the publish held back by a
/// packet id "collision", which `clean` leaves in place — kept, it stops rumqttc from
/// reading any request on the next connection (the SUBSCRIBE included), and the agent
/// never publishes again (seen after a renewal in tests/it/chaos.rs, the hostile
/// flood). The outbox is the only queue: it sends all of them again from its head.
fn forget_rumqttc_copies(eventloop: &mut EventLoop) {
    eventloop.pending.clear();
    eventloop.state.collision = None;
}

/// Sleeps until `at`; forever for None (a `select!` branch disabled by its guard still
/// builds its future).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

pub(super) struct Driver {
    link: Link,
    eventloop: Pump,
    inbox: Inbox,
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
    /// The broker's absence, said once (crate::away).
    away: crate::away::Away,
}

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
    pub(super) fn new(
        link: Link,
        eventloop: EventLoop,
        received: mpsc::Sender<Received>,
        settings: &LinkSettings,
        urls: Vec<BrokerUrl>,
        url: BrokerUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Driver {
        Driver {
            inbox: Inbox::new(link.topics.clone(), received),
            link,
            eventloop: Pump::new(eventloop),
            window: settings.window(),
            conn: None,
            usage_interval: settings.usage_interval,
            nodes: Nodes::new(&settings.agent_id, urls),
            url,
            settings: settings.clone(),
            tls,
            connected_at: None,
            short_drops: 0,
            away: crate::away::Away::new("the broker"),
        }
    }

    pub(super) async fn run(mut self, cancel: CancellationToken) {
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
                Ok(Event::Incoming(Packet::ConnAck(ack))) => self.on_connack(&ack, &mut waits),
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
                    if self.on_puback(ack.pkid).await {
                        refill = true;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if let Some(ack) = self.inbox.on_publish(p).await {
                        self.link.ack(ack);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    // rumqttc moved its in-flight publishes (and queued requests) here to
                    // resend them; the outbox is the queue, so drop them.
                    forget_rumqttc_copies(self.eventloop.get());
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

    /// The broker accepted the connection: the outbox may pass a window, rumqttc's
    /// leftovers give way to it, the rows go again to a node that may lack them, and
    /// the subscription is asked for (publishing starts at its SUBACK).
    fn on_connack(&mut self, ack: &rumqttc::ConnAck, waits: &mut Reconnect) {
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
        forget_rumqttc_copies(self.eventloop.get());
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

    /// A PUBACK: its outbox entry deleted. True when the window may be refilled; false
    /// when an acknowledgement still awaited was given up (src/link/inflight.rs) and the
    /// connection renewed.
    async fn on_puback(&mut self, pkid: u16) -> bool {
        if let Some(conn) = self.conn.as_mut() {
            let entry = conn.acked(pkid);
            tracing::trace!(pkid, seq = ?entry, in_flight = conn.in_flight(), "publish acknowledged");
            match entry {
                Some(Some(seq)) => {
                    if let Err(e) = self.link.outbox.acknowledged(seq) {
                        tracing::error!(error = %e, seq, "acknowledged entry not removed");
                    }
                }
                Some(None) => {}
                None => tracing::warn!(pkid, "PUBACK for an unknown packet"),
            }
            if let Some(lost) = conn.lost(Instant::now(), self.window) {
                self.renew(lost).await;
                return false;
            }
        }
        true
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
        forget_rumqttc_copies(eventloop);
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

    /// Discard the message rumqttc cannot read, through a session of its own on the
    /// current node (`drain`), and tell the daemon.
    async fn drain(&mut self) {
        let access = drain::Access {
            url: &self.url,
            client_id: &self.settings.agent_id,
            username: &self.settings.username,
            password: &self.settings.password,
            tls: self.tls.clone(),
        };
        self.inbox.drain(&access).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::reconnect::{self, DEFAULT_RECONNECT_MAX};
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
