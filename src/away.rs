//! One way to say that a service simgate depends on is away (the broker, pcscd): once at
//! WARN when it goes, every retry at DEBUG, its return at INFO with how long it was away
//! and how many attempts it took. A broker that is down for an hour is one WARN and one
//! INFO in the journal, not a line per retry (≈ 480 an hour at a 10 s ceiling); the
//! retries are there with `RUST_LOG=simgate=debug`.

use std::time::{Duration, Instant};

/// The state of one service's absence.
#[derive(Debug)]
pub struct Away {
    /// What the service is, in a person's words ("the broker", "PC/SC (pcscd)").
    service: &'static str,
    /// Since when it is away, and the failed attempts since.
    since: Option<(Instant, u32)>,
}

impl Away {
    pub fn new(service: &'static str) -> Away {
        Away {
            service,
            since: None,
        }
    }

    /// An attempt to reach it failed (or it went): WARN the first time, DEBUG after.
    pub fn failed(&mut self, error: &dyn std::fmt::Display, retry_in: Duration) {
        let service = self.service;
        let retry_secs = retry_in.as_secs_f64();
        match &mut self.since {
            None => {
                self.since = Some((Instant::now(), 1));
                tracing::warn!(%service, error = %error, retry_secs, "{service} is away; retrying quietly until it is back (RUST_LOG=simgate=debug shows each attempt)");
            }
            Some((_, attempts)) => {
                *attempts += 1;
                tracing::debug!(%service, error = %error, attempt = *attempts, retry_secs, "{service} still away");
            }
        }
    }

    /// It answers again: INFO once, with how long it was away.
    pub fn back(&mut self) {
        if let Some((since, attempts)) = self.since.take() {
            let service = self.service;
            let away_secs = since.elapsed().as_secs();
            tracing::info!(%service, away_secs, attempts, "{service} is back");
        }
    }
}
