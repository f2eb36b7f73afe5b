//! `simgate watch`: a platform-side view of one agent — subscribes to its topics and
//! shows the SIM table it publishes, redrawn on every change. Used by the demo and by
//! anyone checking what an agent really sends.

use crate::config::BrokerUrl;
use crate::link::contract::{Health, SimState, Topics};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Render the SIM table as text.
pub fn render(health: Option<&Health>, sims: &BTreeMap<String, SimState>) -> String {
    let mut out = String::new();
    let agent = match health {
        Some(h) => h.state.as_str(),
        None => "unknown",
    };
    out.push_str(&format!("agent: {agent}   SIMs: {}\n", sims.len()));
    out.push_str(&format!(
        "{:<22} {:<9} {:<15} {:<10} {:<8} {:<10} {}\n",
        "ICCID", "TYPE", "STATUS", "IN SESSION", "PRESENT", "OPERATOR", "WHERE"
    ));
    for s in sims.values() {
        let status = s.status.map(|st| {
            serde_json::to_value(st)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        });
        let in_session = serde_json::to_value(s.in_session)
            .ok()
            .and_then(|v| v.as_str().map(String::from));
        let form = match s.form_factor {
            Some(crate::sim::FormFactor::Esim) => "eSIM",
            Some(crate::sim::FormFactor::Physical) => "physical",
            None => "?",
        };
        out.push_str(&format!(
            "{:<22} {:<9} {:<15} {:<10} {:<8} {:<10} {}{}\n",
            s.iccid,
            form,
            status.flatten().unwrap_or_else(|| "-".into()),
            in_session.unwrap_or_default(),
            if s.present { "yes" } else { "no" },
            s.operator.as_deref().unwrap_or("-"),
            s.location.label(),
            s.problem
                .as_deref()
                .map(|p| format!("  !! {p}"))
                .unwrap_or_default(),
        ));
    }
    out
}

/// Subscribe to `agent_id`'s topics on `broker` and print the table until cancelled.
pub async fn run(
    broker: &str,
    agent_id: &str,
    plain: bool,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let url = BrokerUrl::parse(broker).map_err(|e| anyhow::anyhow!("--broker: {e}"))?;
    crate::config::validate_agent_id(agent_id).map_err(|e| anyhow::anyhow!("--agent-id: {e}"))?;
    let topics = Topics::new(agent_id);
    let client_id = format!("simgate-watch-{}", std::process::id());
    let mut opts = MqttOptions::new(client_id, url.host, url.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let filter = format!("simgate/v1/{agent_id}/#");
    let redraw = !plain && std::io::stdout().is_terminal();
    let mut sims: BTreeMap<String, SimState> = BTreeMap::new();
    let mut health: Option<Health> = None;
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
                } else {
                    continue;
                }
                let table = render(health.as_ref(), &sims);
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
