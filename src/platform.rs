//! `simgate platform`: the platform's side of the contract, small, for the demo and for
//! humans poking at an agent — send a command and follow its lifecycle, or set a SIM's
//! platform record.

use crate::link::contract::{
    CommandMsg, CommandStatus, CommandStatusWord, PlatformMsg, Topics, SCHEMA_VERSION,
};
use crate::sim::PlatformRecord;
use anyhow::{anyhow, Context as _};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::time::Duration;

/// Where the platform tool connects.
#[derive(Debug, Clone)]
pub struct Conn {
    pub broker: String,
    pub agent_id: String,
    pub access: crate::link::ClientAccess,
}

fn client(conn: &Conn, tag: &str) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop, Topics)> {
    crate::config::validate_agent_id(&conn.agent_id)
        .map_err(|e| crate::cli::UsageError(format!("--agent-id: {e}")))?;
    let opts = crate::link::client_options(
        &conn.broker,
        format!("simgate-platform-{tag}-{}", std::process::id()),
        &conn.access,
    )
    .map_err(|e| crate::cli::UsageError(format!("--broker: {e}")))?;
    let (c, el) = AsyncClient::new(opts, 16);
    Ok((c, el, Topics::new(&conn.agent_id)))
}

/// Publish a command and print its lifecycle (one JSON line per status) until a final
/// status or `wait` passes. Returns whether it succeeded.
pub async fn send(conn: &Conn, cmd: &CommandMsg, wait: Duration) -> anyhow::Result<bool> {
    let (client, mut el, topics) = client(conn, "send")?;
    let status_topic = topics.command_status(&cmd.id);
    let payload = serde_json::to_vec(cmd)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ev = tokio::time::timeout_at(deadline, el.poll())
            .await
            .map_err(|_| anyhow!("no final status for command {} within {wait:?}", cmd.id))?
            .context("broker")?;
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                // Subscribe first, so no status is missed.
                client
                    .subscribe(status_topic.clone(), QoS::AtLeastOnce)
                    .await?;
            }
            Event::Incoming(Packet::SubAck(_)) => {
                client
                    .publish(topics.commands(), QoS::AtLeastOnce, false, payload.clone())
                    .await?;
            }
            Event::Incoming(Packet::Publish(p)) if p.topic == status_topic => {
                println!("{}", String::from_utf8_lossy(&p.payload));
                if let Ok(st) = serde_json::from_slice::<CommandStatus>(&p.payload) {
                    match st.status {
                        CommandStatusWord::Successful => return Ok(true),
                        CommandStatusWord::Failed => return Ok(false),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// Publish a SIM's platform record, retained, and wait for the broker's acknowledgement.
pub async fn set_record(conn: &Conn, iccid: &str, record: PlatformRecord) -> anyhow::Result<()> {
    if !crate::link::contract::valid_iccid(iccid) {
        return Err(crate::cli::UsageError(format!("--iccid: \"{iccid}\" is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)")).into());
    }
    let (client, mut el, topics) = client(conn, "record")?;
    let payload = serde_json::to_vec(&PlatformMsg {
        v: SCHEMA_VERSION,
        record,
    })?;
    println!("{}", String::from_utf8_lossy(&payload));
    client
        .publish(topics.sim_platform(iccid), QoS::AtLeastOnce, true, payload)
        .await?;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .map_err(|_| anyhow!("the broker did not acknowledge the record"))?
            .context("broker")?;
        if let Event::Incoming(Packet::PubAck(_)) = ev {
            return Ok(());
        }
    }
}
