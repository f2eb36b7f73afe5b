//! What is in flight on one broker connection, and when an acknowledgement that has not
//! come is given up for good.
//!
//! A QoS 1 publish leaves the outbox only on its PUBACK (MQTT.md, "Durability"). Two
//! brokers on this rig leave a publish without one, on a connection that stays up:
//! - mosquitto drops every packet, PUBACKs too, to a client whose outgoing queue has
//!   reached `max_queued_messages` (an agent slow to read a flood of inbound payloads:
//!   tests/it/chaos.rs);
//! - RabbitMQ 3.x's MQTT plugin answers a publish its queues refused (a queue on a node
//!   that just died: tests/it/cluster.rs) with no PUBACK at all, MQTT 3.1.1 having no
//!   negative one; it expects the client to send again on a new connection.
//!
//! Left alone, each unacknowledged publish holds a place of the window for good; once
//! the window is all such places the agent publishes nothing more, and once a lost
//! packet id comes round, rumqttc holds every later publish back ("collision"). So the
//! driver renews the connection (src/link/driver.rs, `Driver::renew`) and the outbox sends
//! again from its head what was not acknowledged — at least once, as MQTT 3.1.1 §4.4
//! resends on a new connection. A publish is given up when:
//! - it is *overtaken*: a PUBACK came for a publish more than a window later (MQTT 3.1.1
//!   §4.6 orders PUBACKs as their PUBLISHes), and it waited [`REORDER_GRACE`] — a
//!   broker that confirms out of order (RabbitMQ's publisher confirms do) gets that
//!   long before the order is taken as loss; or
//! - it is *overdue*: it waited [`ACK_PATIENCE`], whatever came after it — the broker
//!   that never acknowledges and acknowledges nothing later either.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long an overtaken publish may still wait for its PUBACK.
pub(super) const REORDER_GRACE: Duration = Duration::from_secs(5);

/// How long any publish waits for its PUBACK on a live connection. Well above a PUBACK's
/// round trip on a slow link with a full window (16 rows of 1 KB at 10 kbit/s: 13 s),
/// well below the keep-alive (300 s by default) that would otherwise be the only end.
pub(super) const ACK_PATIENCE: Duration = Duration::from_secs(30);

/// State of one broker connection.
#[derive(Debug)]
pub(super) struct Conn {
    /// Subscriptions acknowledged: publishing may start (the subscription comes first,
    /// so commands are not missed while a backlog drains).
    pub(super) ready: bool,
    /// Handed to rumqttc, packet id not yet known, in order (None: a health message,
    /// not in the outbox).
    pub(super) handed: VecDeque<Option<u64>>,
    /// Packet id → the publish awaiting its PUBACK.
    inflight: HashMap<u16, InFlight>,
    /// Publishes sent on this connection, counted (each one's `order`).
    sent: u64,
    /// The latest publish (by `order`) acknowledged on this connection.
    newest_acked: u64,
    /// The last outbox seq handed over on this connection.
    pub(super) cursor: Option<u64>,
}

/// A publish on the wire, awaiting its PUBACK.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// Its place among the publishes of this connection.
    order: u64,
    /// Its outbox entry (None: a health message, not in the outbox).
    seq: Option<u64>,
    /// When rumqttc wrote it.
    at: Instant,
}

/// A publish whose PUBACK is given up.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Lost {
    pub(super) pkid: u16,
    pub(super) waited: Duration,
    /// A later publish was acknowledged past it (else: nothing came for it at all).
    pub(super) overtaken: bool,
}

impl Conn {
    pub(super) fn new() -> Conn {
        Conn {
            ready: false,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            sent: 0,
            newest_acked: 0,
            cursor: None,
        }
    }

    pub(super) fn in_flight(&self) -> usize {
        self.handed.len() + self.inflight.len()
    }

    /// rumqttc gave the next handed publish packet id `pkid`, writing it at `at`.
    pub(super) fn sent(&mut self, pkid: u16, seq: Option<u64>, at: Instant) {
        self.sent += 1;
        let order = self.sent;
        self.inflight.insert(pkid, InFlight { order, seq, at });
    }

    /// A PUBACK for `pkid`: the outbox entry it acknowledges; None when the packet id
    /// was not in flight, Some(None) for a health message.
    pub(super) fn acked(&mut self, pkid: u16) -> Option<Option<u64>> {
        let done = self.inflight.remove(&pkid)?;
        self.newest_acked = self.newest_acked.max(done.order);
        Some(done.seq)
    }

    fn overtaken(&self, f: &InFlight, window: u16) -> bool {
        self.newest_acked.saturating_sub(f.order) > u64::from(window)
    }

    /// When `f` is given up if nothing comes for it.
    fn deadline(&self, f: &InFlight, window: u16) -> Instant {
        let wait = if self.overtaken(f, window) {
            REORDER_GRACE
        } else {
            ACK_PATIENCE
        };
        f.at + wait
    }

    /// The oldest publish given up by `now` (see the module note).
    pub(super) fn lost(&self, now: Instant, window: u16) -> Option<Lost> {
        self.inflight
            .iter()
            .filter(|(_, f)| self.deadline(f, window) <= now)
            .min_by_key(|(_, f)| f.order)
            .map(|(p, f)| Lost {
                pkid: *p,
                waited: now.saturating_duration_since(f.at),
                overtaken: self.overtaken(f, window),
            })
    }

    /// When [`Conn::lost`] may next find a publish, if none arrives meanwhile.
    pub(super) fn next_deadline(&self, window: u16) -> Option<Instant> {
        self.inflight
            .values()
            .map(|f| self.deadline(f, window))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u16 = 16;
    /// The link's packet id space (`set_inflight(2 × window + 2)` in src/link/settings.rs).
    const IDS: u16 = 2 * WINDOW + 2;

    fn ids() -> impl FnMut() -> u16 {
        let mut pkid = 0u16;
        move || {
            pkid = pkid % IDS + 1;
            pkid
        }
    }

    /// Every PUBACK arriving in order, each within the grace: nothing is given up.
    #[test]
    fn acknowledgements_in_order_give_nothing_up() {
        let t0 = Instant::now();
        let mut next = ids();
        let mut conn = Conn::new();
        let mut open = VecDeque::new();
        for seq in 0..200u64 {
            let now = t0 + Duration::from_millis(seq * 10);
            let p = next();
            conn.sent(p, Some(seq), now);
            open.push_back(p);
            if open.len() == usize::from(WINDOW) {
                let p = open.pop_front().unwrap();
                assert_eq!(conn.acked(p), Some(Some(seq + 1 - u64::from(WINDOW))));
                assert_eq!(conn.lost(now, WINDOW), None);
            }
        }
        assert_eq!(conn.acked(9999), None, "an unknown packet id tells nothing");
    }

    /// Regression: mosquitto dropped PUBACKs to an agent slow to read a flood of
    /// inbound QoS 0 payloads (tests/it/chaos.rs, the hostile flood, on a loaded
    /// machine); rumqttc then held every later publish back once the lost ids came
    /// round, and the agent published nothing more. An overtaken publish is given up
    /// after the grace, and the timer to look again is set for that moment.
    #[test]
    fn a_puback_dropped_by_the_broker_is_given_up_once_overtaken_and_the_grace_is_over() {
        let t0 = Instant::now();
        let mut next = ids();
        let mut conn = Conn::new();
        let lost = next();
        conn.sent(lost, Some(1000), t0);
        // The window moves on past it, each PUBACK arriving.
        let mut open = VecDeque::new();
        for seq in 1001..1020u64 {
            let p = next();
            conn.sent(p, Some(seq), t0);
            open.push_back(p);
            if open.len() == usize::from(WINDOW) - 1 {
                conn.acked(open.pop_front().unwrap());
            }
        }
        while let Some(p) = open.pop_front() {
            conn.acked(p);
        }
        // Overtaken, within the grace: a broker that reorders still has time.
        assert_eq!(conn.lost(t0 + Duration::from_secs(1), WINDOW), None);
        assert_eq!(conn.next_deadline(WINDOW), Some(t0 + REORDER_GRACE));
        assert_eq!(
            conn.lost(t0 + REORDER_GRACE, WINDOW),
            Some(Lost {
                pkid: lost,
                waited: REORDER_GRACE,
                overtaken: true
            })
        );
    }

    /// Regression: RabbitMQ 3.10 sent no PUBACK for publishes routed to a queue of a
    /// node just killed (tests/it/cluster.rs), acknowledged nothing more once the window
    /// was all such publishes, and the agent's sync never ended. With nothing later
    /// acknowledged, a publish is given up after the patience.
    #[test]
    fn a_publish_the_broker_never_acknowledges_is_given_up_after_the_patience() {
        let t0 = Instant::now();
        let mut next = ids();
        let mut conn = Conn::new();
        let first = next();
        conn.sent(first, Some(1), t0);
        let second = next();
        conn.sent(second, Some(2), t0 + Duration::from_secs(1));
        // A later one acknowledged, within a window: reordering, not loss.
        let third = next();
        conn.sent(third, Some(3), t0 + Duration::from_secs(2));
        assert_eq!(conn.acked(third), Some(Some(3)));
        assert_eq!(conn.lost(t0 + REORDER_GRACE * 2, WINDOW), None);
        assert_eq!(conn.next_deadline(WINDOW), Some(t0 + ACK_PATIENCE));
        // The oldest one is named first.
        assert_eq!(
            conn.lost(t0 + ACK_PATIENCE + Duration::from_secs(1), WINDOW),
            Some(Lost {
                pkid: first,
                waited: ACK_PATIENCE + Duration::from_secs(1),
                overtaken: false
            })
        );
        conn.acked(first);
        conn.acked(second);
        assert_eq!(conn.next_deadline(WINDOW), None, "nothing in flight");
    }
}
