//! `simgate watch`: a platform-side view of one agent — subscribes to its topics and
//! shows the SIM table it publishes, redrawn on every change. Used by the demo and by
//! anyone checking what an agent really sends.

use crate::contract::{
    AgentTopic, CommandStatus, EventKind, EventMsg, Health, SimState, UsageBatch, UsageSample,
};
use crate::link::peer::PeerEvent;
use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many recent events and command statuses the view keeps.
const RECENT: usize = 8;

/// One line for an event.
pub(super) fn describe_event(e: &EventMsg) -> String {
    match &e.kind {
        EventKind::Inserted { iccid, location } => {
            format!("#{} inserted {iccid} at {}", e.seq, location.label())
        }
        EventKind::Removed { iccid, location } => {
            format!("#{} removed {iccid} from {}", e.seq, location.label())
        }
        EventKind::Swapped {
            iccid,
            replaced,
            location,
        } => format!(
            "#{} swapped {replaced} -> {iccid} at {}",
            e.seq,
            location.label()
        ),
        EventKind::IdentityChanged {
            iccid, field, new, ..
        } => format!(
            "#{} {iccid}: {field} now {}",
            e.seq,
            new.as_deref().unwrap_or("-")
        ),
        EventKind::Error {
            iccid,
            code,
            reason,
        } => format!(
            "#{} error {}{}: {reason}",
            e.seq,
            code.word(),
            iccid
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default()
        ),
        EventKind::Command {
            id,
            action,
            status,
            reason,
            ..
        } => format!(
            "#{} command {id} {action}: {}{}",
            e.seq,
            status.word(),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        EventKind::RuleFired {
            iccid,
            rule,
            actions,
            ..
        } => format!(
            "#{} rule {rule} fired for {iccid}: {}",
            e.seq,
            actions
                .iter()
                .map(|a| format!(
                    "{} {}",
                    a.action.word(),
                    a.outcome.as_deref().unwrap_or("?")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventKind::RefillRequested {
            iccid, request_id, ..
        } => format!("#{} refill requested for {iccid} ({request_id})", e.seq),
        EventKind::EsimNotification {
            iccid,
            number,
            operation,
            address,
            ..
        } => format!(
            "#{} eSIM notification {number} ({operation}) of {iccid} for {address}",
            e.seq
        ),
        EventKind::SwapStep {
            id,
            iccid,
            step,
            ok,
            new_iccid,
            detail,
            secs,
        } => format!(
            "#{} swap {id} of {iccid}: {step} {}{}: {detail}{}",
            e.seq,
            match ok {
                None => "started",
                Some(true) => "done",
                Some(false) => "FAILED",
            },
            secs.map(|s| format!(" in {s:.1} s")).unwrap_or_default(),
            new_iccid
                .as_deref()
                .map(|n| format!(" (new SIM {n})"))
                .unwrap_or_default()
        ),
        EventKind::ReaderService { up: true, .. } => format!("#{} PC/SC service back", e.seq),
        EventKind::ModemService {
            port, up, reason, ..
        } => format!(
            "#{} modem {port} {}{}",
            e.seq,
            if *up {
                "answers again"
            } else {
                "not answering"
            },
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventKind::ReaderService { up: false, reason } => format!(
            "#{} PC/SC service lost: {}",
            e.seq,
            reason.as_deref().unwrap_or("-")
        ),
        EventKind::OutboxShed { telemetry, events } => format!(
            "#{} outbox full: {telemetry} telemetry and {events} events shed so far",
            e.seq
        ),
    }
}

/// Render the SIM table (observed and platform fields) and the recent activity as text.
pub(super) fn render(
    health: Option<&Health>,
    sims: &BTreeMap<String, SimState>,
    usage: &BTreeMap<String, UsageSample>,
    recent: &VecDeque<String>,
) -> String {
    let mut out = String::new();
    let agent = match health {
        Some(h) => h.state.as_str(),
        None => "unknown",
    };
    out.push_str(&format!("agent: {agent}   SIMs: {}\n", sims.len()));
    out.push_str(&format!(
        "{:<21} {:<9} {:<17} {:<7} {:<7} {:<12} {:<12} {:>8} {:>9} {:>4} {:<12} {}\n",
        "ICCID",
        "FORM",
        "STATUS",
        "SESSION",
        "PRESENT",
        "PLAN",
        "COMPANY",
        "MONTH MB",
        "LEFT MB",
        "DAYS",
        "TYPE",
        "WHERE"
    ));
    let cut = |s: Option<&str>, n: usize| -> String {
        let s = s.unwrap_or("-");
        if s.chars().count() > n {
            s.chars().take(n - 1).chain(['…']).collect()
        } else {
            s.to_string()
        }
    };
    for row in sims.values() {
        let (s, p) = (&row.sim, row.platform.clone().unwrap_or_default());
        let form = match s.form_factor {
            Some(crate::sim::FormFactor::Esim) => "eSIM",
            Some(crate::sim::FormFactor::Physical) => "physical",
            None => "?",
        };
        out.push_str(&format!(
            "{:<21} {:<9} {:<17} {:<7} {:<7} {:<12} {:<12} {:>8} {:>9} {:>4} {:<12} {}{}{}\n",
            s.iccid,
            form,
            row.status.map_or("-", |st| st.word()),
            s.in_session.word(),
            if s.present { "yes" } else { "no" },
            cut(p.plan.as_deref(), 12),
            // The platform's word first, else what a reader station gave the batch.
            cut(p.company.as_deref().or(s.batch.company.as_deref()), 12),
            usage
                .get(&s.iccid)
                .map(|u| format!("{:.1}", (u.rx + u.tx) as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            p.data_left_mb
                .map(|d| format!("{d:.1}"))
                .unwrap_or_else(|| "-".into()),
            p.days_left
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            p.sim_type.map_or("-", |t| t.word()),
            s.location.label(),
            {
                let labels = if p.labels.is_empty() {
                    &s.batch.labels
                } else {
                    &p.labels
                };
                if labels.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", labels.join(", "))
                }
            },
            s.problem
                .as_deref()
                .map(|p| format!("  !! {p}"))
                .unwrap_or_default(),
        ));
    }
    if !recent.is_empty() {
        out.push_str("\nrecent:\n");
        for line in recent {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

/// Subscribe to the agent's topics and print the table until cancelled.
pub(super) async fn run(
    conn: super::platform::PlatformConn,
    plain: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut peer = conn.peer("watch")?;
    let filter = peer.topics().all();
    let redraw = !plain && std::io::stdout().is_terminal();
    let mut sims: BTreeMap<String, SimState> = BTreeMap::new();
    let mut health: Option<Health> = None;
    let mut recent: VecDeque<String> = VecDeque::new();
    // The latest usage sample per SIM (this month's counters).
    let mut usage: BTreeMap<String, UsageSample> = BTreeMap::new();
    fn note(recent: &mut VecDeque<String>, line: String) {
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(line);
    }
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            ev = peer.next() => ev,
        };
        let (topic, payload) = match ev {
            Ok(PeerEvent::Connected) => {
                peer.subscribe(filter.clone()).await?;
                continue;
            }
            Ok(PeerEvent::Message { topic, payload }) => (topic, payload),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        match topic {
            AgentTopic::Health => health = serde_json::from_slice(&payload).ok(),
            AgentTopic::SimState { iccid } => match serde_json::from_slice::<SimState>(&payload) {
                Ok(s) => {
                    sims.insert(s.sim.iccid.clone(), s);
                }
                Err(e) => tracing::warn!(%iccid, error = %e, "unreadable SIM state"),
            },
            AgentTopic::Usage => match serde_json::from_slice::<UsageBatch>(&payload) {
                Ok(b) => {
                    for u in b.sims {
                        usage.insert(u.iccid.clone(), u);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable usage batch"),
            },
            AgentTopic::Events => match serde_json::from_slice::<EventMsg>(&payload) {
                // A command's outcome is already shown from its status topic.
                Ok(e) if matches!(e.kind, EventKind::Command { .. }) => continue,
                Ok(e) => note(&mut recent, describe_event(&e)),
                Err(e) => tracing::warn!(error = %e, "unreadable event"),
            },
            AgentTopic::CommandStatus { .. } => {
                match serde_json::from_slice::<CommandStatus>(&payload) {
                    // Final statuses also come as command events; show the steps.
                    Ok(st) => note(
                        &mut recent,
                        format!(
                            "command {} {} -> {}{}",
                            st.id,
                            st.action,
                            st.status.word(),
                            st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                        ),
                    ),
                    Err(e) => tracing::warn!(error = %e, "unreadable command status"),
                }
            }
            AgentTopic::SimPlatform { .. } | AgentTopic::Command => continue,
        }
        let table = render(health.as_ref(), &sims, &usage, &recent);
        let mut out = std::io::stdout().lock();
        if redraw {
            // ANSI: cursor home, clear screen.
            write!(out, "\x1b[H\x1b[2J{table}")?;
        } else {
            writeln!(out, "--- {}\n{table}", crate::time::unix_now())?;
        }
        out.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Location, PlatformRecord, Status};

    #[test]
    fn the_table_shows_platform_fields_and_recent_activity() {
        let mut sims = BTreeMap::new();
        sims.insert(
            "8988211000000430010".to_string(),
            SimState {
                v: 1,
                status: Some(Status::Active),
                sim: crate::sim::Observed::new(
                    "8988211000000430010",
                    true,
                    Location::Reader {
                        reader: "R 00 00".into(),
                    },
                    1,
                ),
                platform: Some(PlatformRecord {
                    status: Some(Status::Active),
                    plan: Some("IoT 1GB".into()),
                    data_left_mb: Some(512.0),
                    labels: vec!["fleet-a".into()],
                    ..Default::default()
                }),
                estimate: None,
            },
        );
        let recent = VecDeque::from(["command c-1 suspend -> failed (no session)".to_string()]);
        let usage = BTreeMap::from([(
            "8988211000000430010".to_string(),
            UsageSample {
                iccid: "8988211000000430010".into(),
                month: "2026-11".into(),
                rx: 3_000_000,
                tx: 500_000,
                at: 1,
            },
        )]);
        let text = render(Some(&Health::new(true, 1)), &sims, &usage, &recent);
        for want in [
            "Active",
            "IoT 1GB",
            "3.5",
            "512.0",
            "[fleet-a]",
            "R 00 00",
            "c-1 suspend",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }
}
