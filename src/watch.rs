//! `simgate watch`: a platform-side view of one agent — subscribes to its topics and
//! shows the SIM table it publishes, redrawn on every change. Used by the demo and by
//! anyone checking what an agent really sends.

use crate::link::contract::{
    CommandStatus, EventKind, EventMsg, Health, SimState, Topics, UsageBatch, UsageSample,
};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many recent events and command statuses the view keeps.
const RECENT: usize = 8;

fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// One line for an event.
pub fn describe_event(e: &EventMsg) -> String {
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
            word(code),
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
            word(status),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        EventKind::OutboxShed { telemetry, events } => format!(
            "#{} outbox full: {telemetry} telemetry and {events} events shed so far",
            e.seq
        ),
    }
}

/// Render the SIM table (observed and platform fields) and the recent activity as text.
pub fn render(
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
    for s in sims.values() {
        let p = s.platform.clone().unwrap_or_default();
        let form = match s.form_factor {
            Some(crate::sim::FormFactor::Esim) => "eSIM",
            Some(crate::sim::FormFactor::Physical) => "physical",
            None => "?",
        };
        out.push_str(&format!(
            "{:<21} {:<9} {:<17} {:<7} {:<7} {:<12} {:<12} {:>8} {:>9} {:>4} {:<12} {}{}{}\n",
            s.iccid,
            form,
            s.status.map(|st| word(&st)).unwrap_or_else(|| "-".into()),
            word(&s.in_session),
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
            p.sim_type.map(|t| word(&t)).unwrap_or_else(|| "-".into()),
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

/// Subscribe to `agent_id`'s topics on `broker` and print the table until cancelled.
pub async fn run(
    broker: &str,
    agent_id: &str,
    access: &crate::link::ClientAccess,
    plain: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    crate::config::validate_agent_id(agent_id)
        .map_err(|e| crate::cli::UsageError(format!("--agent-id: {e}")))?;
    let topics = Topics::new(agent_id);
    let client_id = format!("simgate-watch-{}", std::process::id());
    let opts = crate::link::client_options(broker, client_id, access)
        .map_err(|e| crate::cli::UsageError(format!("--broker: {e}")))?;
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let filter = topics.all();
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
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                client.subscribe(filter.clone(), QoS::AtLeastOnce).await?;
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == topics.health() {
                    health = serde_json::from_slice(&p.payload).ok();
                } else if p.topic.ends_with("/state") {
                    match serde_json::from_slice::<SimState>(&p.payload) {
                        Ok(s) => {
                            sims.insert(s.iccid.clone(), s);
                        }
                        Err(e) => {
                            tracing::warn!(topic = %p.topic, error = %e, "unreadable SIM state")
                        }
                    }
                } else if p.topic == topics.usage() {
                    match serde_json::from_slice::<UsageBatch>(&p.payload) {
                        Ok(b) => {
                            for u in b.sims {
                                usage.insert(u.iccid.clone(), u);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable usage batch"),
                    }
                } else if p.topic == topics.events() {
                    match serde_json::from_slice::<EventMsg>(&p.payload) {
                        // A command's outcome is already shown from its status topic.
                        Ok(e) if matches!(e.kind, EventKind::Command { .. }) => continue,
                        Ok(e) => note(&mut recent, describe_event(&e)),
                        Err(e) => tracing::warn!(error = %e, "unreadable event"),
                    }
                } else if p.topic.starts_with(&topics.commands()) && p.topic.ends_with("/status") {
                    match serde_json::from_slice::<CommandStatus>(&p.payload) {
                        // Final statuses also come as command events; show the steps.
                        Ok(st) => note(
                            &mut recent,
                            format!(
                                "command {} {} -> {}{}",
                                st.id,
                                st.action,
                                word(&st.status),
                                st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                            ),
                        ),
                        Err(e) => tracing::warn!(error = %e, "unreadable command status"),
                    }
                } else {
                    continue;
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
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{InSession, Location, PlatformRecord, Status};

    #[test]
    fn the_table_shows_platform_fields_and_recent_activity() {
        let mut sims = BTreeMap::new();
        sims.insert(
            "8988211000000430010".to_string(),
            SimState {
                v: 1,
                iccid: "8988211000000430010".into(),
                status: Some(Status::Active),
                in_session: InSession::NotApplicable,
                form_factor: None,
                eid: None,
                imsi: None,
                imei: None,
                operator: None,
                mcc_mnc: None,
                location: Location::Reader {
                    reader: "R 00 00".into(),
                },
                present: true,
                observed_at: 1,
                problem: None,
                spn: None,
                blank_esim: false,
                batch: Default::default(),
                platform: Some(PlatformRecord {
                    status: Some(Status::Active),
                    plan: Some("IoT 1GB".into()),
                    data_left_mb: Some(512.0),
                    labels: vec!["fleet-a".into()],
                    ..Default::default()
                }),
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
