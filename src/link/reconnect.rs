//! How long the link waits before its next connect round: the one reconnect policy,
//! pure (no clock, no socket), so that benches/fleet_quota.rs runs this very code for a
//! simulated fleet of 100,000 agents. MQTT.md, "Connection" and "Clusters", give the
//! arithmetic.
//!
//! Two regimes (src/backoff.rs underneath):
//! - the broker is out of reach (TCP refused or timed out, no route, DNS): 0.5 s
//!   doubling to `reconnect_max` (10 s by default), equal jitter. An attempt costs the
//!   broker nothing while it is away, and the cap bounds how long an agent takes to
//!   notice it is back.
//! - the broker is there and turns the agent away (CONNACK refused, TLS refused, or a
//!   connection closed before it lived `LINK_STABLE`: another client with this id, a
//!   poison message, a flapping broker): 0.5 s doubling to 60 s, reset only by a
//!   connection that lived `LINK_STABLE`, longer than its longest wait, so two clients
//!   taking the same client id over from each other never look stable.
//!
//! After a drop: without a fleet quota, retry at once (a lone agent's NAT timeout comes
//! back in half a second); if that finds the broker gone, the whole fleet most likely
//! lost it at this instant, and that one wait is spread over half the cap. With a fleet
//! quota (`broker.fleet_size` / `broker.fleet_connects_per_s` = a window W), the first
//! retry after any drop is uniform over [0, W], and no later round that reached no node
//! waits less than W: each agent arrives at most once per W, so N agents arrive at about
//! N / W = the quota, and all are back within W of the broker's return. An attempt the
//! broker refuses (its quota hit by the arrivals' fluctuation) backs off in the
//! turned-away regime.

use crate::backoff::Backoff;
use std::time::Duration;

/// The first wait of both regimes.
pub const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The ceiling of the turned-away regime.
pub const REJECTED_CAP: Duration = Duration::from_secs(60);
/// A connection that lived this long was a success: both regimes start over.
pub const LINK_STABLE: Duration = Duration::from_secs(90);
/// The default ceiling of reconnect waits while the broker is unreachable.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Why a connect round ended without a connection, or a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No node was reached (refused, timed out, no route, not resolvable); or a
    /// connection that had lived dropped.
    Unreachable,
    /// A node answered and said no (CONNACK refused, TLS refused), or closed a connection
    /// before it lived [`LINK_STABLE`].
    TurnedAway,
}

/// One agent's reconnect policy.
#[derive(Debug, Clone)]
pub struct Reconnect {
    unreachable: Backoff,
    rejected: Backoff,
    reconnect_max: Duration,
    /// fleet size / fleet connects per second; None: no fleet quota configured.
    fleet_window: Option<Duration>,
    /// A connection dropped and no round has failed since (no fleet quota: the next
    /// failed round's wait is spread).
    spread_next: bool,
}

impl Reconnect {
    /// Seeded from the clock and the pid (src/backoff.rs): agents started together
    /// still diverge.
    pub fn new(reconnect_max: Duration, fleet_window: Option<Duration>) -> Reconnect {
        Reconnect {
            unreachable: Backoff::new(BACKOFF_BASE, reconnect_max, LINK_STABLE),
            rejected: Backoff::new(BACKOFF_BASE, REJECTED_CAP, LINK_STABLE),
            reconnect_max,
            fleet_window,
            spread_next: false,
        }
    }

    /// With a fixed random seed: tests, and the fleet simulation (one seed per agent).
    pub fn with_seed(
        reconnect_max: Duration,
        fleet_window: Option<Duration>,
        seed: u64,
    ) -> Reconnect {
        Reconnect {
            unreachable: Backoff::with_seed(BACKOFF_BASE, reconnect_max, LINK_STABLE, seed),
            rejected: Backoff::with_seed(BACKOFF_BASE, REJECTED_CAP, LINK_STABLE, !seed),
            reconnect_max,
            fleet_window,
            spread_next: false,
        }
    }

    /// The broker accepted a connection: the next outage starts with short waits.
    pub fn connected(&mut self) {
        self.unreachable.reset();
        self.spread_next = false;
    }

    /// The wait before the next connect round. `lived`: how long the connection that
    /// just ended had been accepted; None when the round found no connection at all.
    pub fn wait(&mut self, lived: Option<Duration>, failure: Failure) -> Duration {
        if let Some(lived) = lived {
            self.rejected.ended_after(lived);
        }
        let turned_away = failure == Failure::TurnedAway;
        let wait = if turned_away {
            self.rejected.next_wait()
        } else {
            self.unreachable.next_wait()
        };
        if let Some(window) = self.fleet_window {
            return match lived {
                // A drop: likely the whole fleet's (a broker restart) or a node's share
                // of it (a cluster node gone). Spread over the window: N agents arrive
                // at N / W per second.
                Some(_) => {
                    let spread = self.unreachable.spread(window);
                    match turned_away {
                        true => wait.max(spread),
                        false => spread,
                    }
                }
                // A round that reached no node: no agent comes more often than once
                // per window, so the arrivals keep the phases the first spread gave
                // them, and the fleet comes back within one window of the broker.
                None if !turned_away => wait.max(window),
                // Refused (over the broker's quota: the arrivals fluctuate around the
                // rate): the turned-away regime, so the few refused come back soon
                // instead of a whole window later, and slow down if refused again.
                None => wait,
            };
        }
        if lived.is_some() {
            // A connection dropped: retry at once. If that finds the broker gone, the
            // whole fleet most likely lost theirs at this instant, so that failure's
            // wait is spread (below). Another client taking the id over never finds
            // the broker gone, so it is not slowed by this.
            self.spread_next = true;
            wait
        } else if std::mem::take(&mut self.spread_next) && !turned_away {
            // The first round after a drop found the broker out of reach: spread this
            // wait over half the unreachable regime's ceiling. From then on every
            // agent's attempts keep their own phase, and at most about
            // 1/(reconnect_max/2) of the fleet arrives in any second, after a short
            // outage as after a long one.
            wait.max(self.unreachable.spread(self.reconnect_max / 2))
        } else {
            wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn without_a_fleet_quota_a_drop_is_retried_at_once_and_an_outage_is_spread() {
        let mut r = Reconnect::with_seed(S(10), None, 5);
        r.connected();
        let first = r.wait(Some(S(600)), Failure::Unreachable);
        assert!(first <= BACKOFF_BASE, "{first:?}");
        // The broker is gone: the next wait lands anywhere in [0, 5 s] (at least the
        // climb's own wait).
        let spread: Vec<Duration> = (0..200)
            .map(|i| {
                let mut r = Reconnect::with_seed(S(10), None, i);
                r.wait(Some(S(600)), Failure::Unreachable);
                r.wait(None, Failure::Unreachable)
            })
            .collect();
        assert!(spread.iter().all(|w| *w <= S(5)));
        assert!(spread.iter().any(|w| *w > S(4)), "{spread:?}");
    }

    #[test]
    fn with_a_fleet_quota_a_drop_is_spread_over_the_window_then_one_attempt_per_window() {
        let window = S(333);
        let firsts: Vec<Duration> = (0..500)
            .map(|i| {
                let mut r = Reconnect::with_seed(S(10), Some(window), i);
                r.connected();
                r.wait(Some(S(600)), Failure::Unreachable)
            })
            .collect();
        assert!(firsts.iter().all(|w| *w <= window));
        // Uniform over the window: every tenth of it gets some of the fleet.
        for tenth in 0..10 {
            let lo = window * tenth / 10;
            let hi = window * (tenth + 1) / 10;
            assert!(
                firsts.iter().any(|w| *w >= lo && *w < hi),
                "nothing in {lo:?}..{hi:?}"
            );
        }
        let mut r = Reconnect::with_seed(S(10), Some(window), 1);
        r.wait(Some(S(600)), Failure::Unreachable);
        for _ in 0..20 {
            assert!(r.wait(None, Failure::Unreachable) >= window);
        }
        // Refused by a broker over its quota: the turned-away regime's climb.
        let refused: Vec<Duration> = (0..8).map(|_| r.wait(None, Failure::TurnedAway)).collect();
        assert!(refused[0] <= BACKOFF_BASE, "{refused:?}");
        assert!(refused.iter().all(|w| *w <= REJECTED_CAP), "{refused:?}");
    }

    #[test]
    fn a_short_lived_connection_keeps_climbing_in_the_turned_away_regime() {
        let mut r = Reconnect::with_seed(S(10), None, 3);
        let waits: Vec<Duration> = (0..8)
            .map(|_| r.wait(Some(S(2)), Failure::TurnedAway))
            .collect();
        assert!(waits[7] >= S(30), "{waits:?}");
        // A connection that lived resets it.
        let reset = r.wait(Some(LINK_STABLE), Failure::TurnedAway);
        assert!(reset <= BACKOFF_BASE, "{reset:?}");
    }
}
