//! The one retry backoff: the broker link, the PC/SC watcher and the modem supervisors
//! all wait with it between attempts.
//!
//! Exponential with "equal jitter" (AWS Architecture Blog, "Exponential Backoff And
//! Jitter"): the n-th wait is uniform in [c/2, c] with c = min(cap, base·2^n). Half of
//! every wait is random, so a fleet retrying after a broker restart spreads out instead
//! of arriving as one herd; the other half is a floor, so a retry loop never spins.
//!
//! The backoff starts over only after an attempt *lasted*: a connection accepted and
//! dropped at once (a poison message, another client taking the same MQTT client id) is
//! a failure like a refused one, so it keeps climbing to the cap instead of looping
//! several times a second. Pure: the caller measures how long an attempt lived.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// An attempt that lived at least this long was a success: start over.
    stable: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// Waits from `base` doubling to `cap`; reset by an attempt that lived `stable`.
    pub fn new(base: Duration, cap: Duration, stable: Duration) -> Backoff {
        // Seed from the clock and the pid: agents started together still diverge.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()).rotate_left(32);
        Self::with_seed(base, cap, stable, seed)
    }

    /// A backoff with a fixed random seed (tests).
    pub fn with_seed(base: Duration, cap: Duration, stable: Duration, seed: u64) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            stable,
            attempt: 0,
            // xorshift must not start at 0.
            rng: seed | 1,
        }
    }

    /// Start over (the next wait is the shortest).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// An attempt that had succeeded ended after `lived`: if that was long enough to
    /// count as stable, start over; otherwise keep climbing.
    pub fn ended_after(&mut self, lived: Duration) {
        if lived >= self.stable {
            self.reset();
        }
    }

    /// How long an attempt must live to reset the backoff.
    pub fn stable(&self) -> Duration {
        self.stable
    }

    /// The ceiling of the next wait: min(cap, base·2^attempt).
    pub fn ceiling(&self) -> Duration {
        self.base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.cap)
    }

    /// The next wait, uniform in [ceiling/2, ceiling]; each call climbs one step.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = ceiling.as_millis() as u64;
        let half = ms / 2;
        Duration::from_millis(half + self.random() % (ms - half + 1))
    }

    /// A wait uniform in [0, upto] ("full jitter"), without climbing: spreads the first
    /// retry of many clients that failed at the same instant.
    pub fn spread(&mut self, upto: Duration) -> Duration {
        Duration::from_millis(self.random() % (upto.as_millis() as u64 + 1))
    }

    /// xorshift64* (Marsaglia; Vigna): enough randomness for jitter, no dependency.
    fn random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spread_covers_its_whole_range_and_never_climbs() {
        let mut b = Backoff::with_seed(MS(500), MS(8000), MS(1000), 11);
        let waits: Vec<Duration> = (0..400).map(|_| b.spread(MS(5000))).collect();
        assert!(waits.iter().all(|w| *w <= MS(5000)));
        assert!(waits.iter().any(|w| *w < MS(500)) && waits.iter().any(|w| *w > MS(4500)));
        assert_eq!(b.ceiling(), MS(500), "spreading is not an attempt");
    }

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn link() -> Backoff {
        Backoff::with_seed(MS(500), Duration::from_secs(60), Duration::from_secs(90), 7)
    }

    #[test]
    fn waits_stay_between_half_and_all_of_a_doubling_ceiling_capped() {
        let mut b = link();
        for attempt in 0..40u32 {
            let ceiling = MS(500).saturating_mul(1 << attempt.min(20)).min(MS(60_000));
            assert_eq!(b.ceiling(), ceiling, "attempt {attempt}");
            let w = b.next_wait();
            assert!(w <= ceiling && w >= ceiling / 2, "attempt {attempt}: {w:?}");
        }
        assert_eq!(b.ceiling(), MS(60_000), "the cap holds after many attempts");
    }

    #[test]
    fn waits_are_jittered_and_two_seeds_diverge() {
        let mut b = link();
        let waits: Vec<Duration> = (0..20)
            .map(|_| {
                b.reset();
                for _ in 0..8 {
                    b.next_wait();
                }
                b.next_wait()
            })
            .collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
        let mut other = Backoff::with_seed(MS(500), MS(60_000), MS(90_000), 8);
        let mut b = link();
        let a: Vec<_> = (0..10).map(|_| b.next_wait()).collect();
        let c: Vec<_> = (0..10).map(|_| other.next_wait()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn only_an_attempt_that_lived_long_enough_resets_it() {
        let mut b = link();
        for _ in 0..5 {
            b.next_wait();
        }
        let climbed = b.ceiling();
        // Accepted and dropped at once (a poison message, a client id taken over).
        b.ended_after(Duration::from_secs(2));
        assert_eq!(b.ceiling(), climbed, "a short-lived connection reset it");
        b.next_wait();
        assert!(b.ceiling() > climbed);
        b.ended_after(Duration::from_secs(90));
        assert_eq!(b.ceiling(), MS(500));
    }

    #[test]
    fn a_zero_base_never_divides_by_zero() {
        let mut b = Backoff::with_seed(Duration::ZERO, Duration::ZERO, Duration::ZERO, 1);
        assert_eq!(b.next_wait(), Duration::ZERO);
    }
}
