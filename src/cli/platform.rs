//! `simgate platform`: the platform's side of the contract, small, for the demo and for
//! humans poking at an agent — send a command and follow its lifecycle, or set a SIM's
//! platform record.

use super::UsageError;
use crate::contract::{
    self, AgentTopic, CommandMsg, CommandStatus, CommandStatusWord, PlatformMsg, SCHEMA_VERSION,
};
use crate::link::peer::{Peer, PeerEvent};
use crate::link::ClientAccess;
use crate::sim::PlatformRecord;
use anyhow::{anyhow, Context as _};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Credentials and TLS files of a platform-side tool (watch, platform).
#[derive(Debug, Args)]
pub struct BrokerAccess {
    #[arg(long)]
    pub username: Option<String>,
    /// Better given through the environment than on a command line.
    #[arg(long, env = "SIMGATE_PLATFORM_PASSWORD")]
    pub password: Option<String>,
    /// PEM CA bundle for mqtts:// (default: the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with --client-key) for brokers that require one.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

impl From<BrokerAccess> for ClientAccess {
    fn from(a: BrokerAccess) -> Self {
        ClientAccess {
            username: a.username,
            password: a.password,
            ca_file: a.ca_file,
            client_cert: a.client_cert.zip(a.client_key),
        }
    }
}

/// Which agent a platform-side command talks to, and how it reaches the broker.
#[derive(Debug, Args)]
pub struct PlatformConn {
    #[arg(long, env = "SIMGATE_BROKER")]
    pub broker: String,
    #[arg(long, env = "SIMGATE_AGENT_ID")]
    pub agent_id: String,
    #[command(flatten)]
    pub access: BrokerAccess,
}

#[derive(Debug, Subcommand)]
pub enum PlatformCmd {
    /// Send a command to an agent and print its lifecycle as it comes back (one JSON
    /// line per status). Exit status 0 when it succeeded, 1 when it failed.
    Send {
        #[command(flatten)]
        conn: PlatformConn,
        /// The SIM; none for `sync` (the whole agent).
        #[arg(long, default_value = "")]
        iccid: String,
        /// The command's action (MQTT.md, "Commands").
        #[arg(long, value_enum)]
        action: contract::Action,
        /// Command id (the idempotency key); default: a fresh one.
        #[arg(long)]
        id: Option<String>,
        /// Parameters as JSON (for set_record: the platform record).
        #[arg(long)]
        params: Option<String>,
        /// Seconds until the command expires.
        #[arg(long, default_value_t = 300)]
        expires_in: u64,
        /// Seconds to wait for the final status.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// Set a SIM's platform record (retained on sim/<iccid>/platform).
    Record {
        #[command(flatten)]
        conn: PlatformConn,
        #[arg(long)]
        iccid: String,
        /// The record as JSON, e.g. '{"status":"Active","plan":"IoT 1GB"}'.
        #[arg(long)]
        json: String,
    },
}

pub(super) async fn platform(cmd: PlatformCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PlatformCmd::Send {
            conn: c,
            iccid,
            action,
            id,
            params,
            expires_in,
            wait,
        } => {
            let params = match params {
                Some(p) => serde_json::from_str(&p)
                    .map_err(|e| UsageError(format!("--params: not JSON: {e}")))?,
                None => serde_json::Value::Null,
            };
            // The platform tool checks what the agent would refuse, before connecting:
            // the ICCID and the id become topic levels, the action a word of the contract.
            let whole_agent = action == contract::Action::Sync;
            if whole_agent && !iccid.is_empty() {
                return Err(UsageError(
                    "--iccid: a sync covers every SIM of the agent; leave it out".into(),
                )
                .into());
            }
            if !whole_agent && !contract::valid_iccid(&iccid) {
                return Err(UsageError(format!("--iccid: \"{iccid}\" is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)")).into());
            }
            if let Some(id) = id.as_deref().filter(|i| !contract::valid_command_id(i)) {
                return Err(UsageError(format!(
                    "--id: \"{id}\" must be 1 to 64 of letters, digits, '-', '_' and '.'"
                ))
                .into());
            }
            let id = id.unwrap_or_else(|| {
                format!("cli-{}-{}", crate::time::unix_now(), std::process::id())
            });
            let msg = contract::CommandMsg {
                v: contract::SCHEMA_VERSION,
                id,
                iccid,
                action: action.word().into(),
                params,
                expires_at: crate::time::unix_now() + expires_in,
            };
            let ok = send(c, &msg, Duration::from_secs(wait), true).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PlatformCmd::Record {
            conn: c,
            iccid,
            json,
        } => {
            let record = serde_json::from_str(&json)
                .map_err(|e| UsageError(format!("--json: not a platform record: {e}")))?;
            set_record(c, &iccid, record).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl PlatformConn {
    /// A peer for this agent; a bad agent id or broker URL is the user's mistake.
    pub(super) fn peer(self, tag: &str) -> anyhow::Result<Peer> {
        crate::config::validate_agent_id(&self.agent_id)
            .map_err(|e| UsageError(format!("--agent-id: {e}")))?;
        Peer::new(&self.broker, &self.agent_id, tag, &self.access.into())
            .map_err(|e| UsageError(format!("--broker: {e}")).into())
    }
}

/// Publish a command and print its lifecycle (one JSON line per status) until a final
/// status or `wait` passes. Returns whether it succeeded.
/// Send a command and print its lifecycle until it is final: each status payload as
/// received (`json`), else one line per step in words. Returns whether it succeeded.
async fn send(
    conn: PlatformConn,
    cmd: &CommandMsg,
    wait: Duration,
    json: bool,
) -> anyhow::Result<bool> {
    let mut peer = conn.peer("platform-send")?;
    let status_topic = peer.topics().command_status(&cmd.id);
    let payload = serde_json::to_vec(cmd)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ev = tokio::time::timeout_at(deadline, peer.next())
            .await
            .map_err(|_| anyhow!("no final status for command {} within {wait:?}", cmd.id))?
            .context("broker")?;
        match ev {
            // Subscribe first, so no status is missed; publish once subscribed.
            PeerEvent::Connected => peer.subscribe(status_topic.clone()).await?,
            PeerEvent::Subscribed => {
                let topic = peer.topics().commands();
                peer.publish(topic, false, payload.clone()).await?
            }
            PeerEvent::Message {
                topic: AgentTopic::CommandStatus { id },
                payload,
            } if id == cmd.id => {
                if json {
                    outln!("{}", String::from_utf8_lossy(&payload));
                }
                if let Ok(st) = serde_json::from_slice::<CommandStatus>(&payload) {
                    if !json {
                        outln!("{}", describe(&st));
                    }
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
async fn set_record(conn: PlatformConn, iccid: &str, record: PlatformRecord) -> anyhow::Result<()> {
    if !contract::valid_iccid(iccid) {
        return Err(UsageError(format!("--iccid: \"{iccid}\" is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)")).into());
    }
    let mut peer = conn.peer("platform-record")?;
    let payload = serde_json::to_vec(&PlatformMsg {
        v: SCHEMA_VERSION,
        record,
    })?;
    outln!("{}", String::from_utf8_lossy(&payload));
    peer.publish(peer.topics().sim_platform(iccid), true, payload)
        .await?;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), peer.next())
            .await
            .map_err(|_| anyhow!("the broker did not acknowledge the record"))?
            .context("broker")?;
        if let PeerEvent::Acked = ev {
            return Ok(());
        }
    }
}

/// `simgate refill`: a person at the gateway asks the platform for a top-up, through the
/// running daemon (a `request_refill` command, so the agent's caps and exactly-once path
/// apply); prints the lifecycle.
#[derive(Debug, clap::Args)]
pub struct RefillArgs {
    #[command(flatten)]
    pub conn: PlatformConn,
    #[arg(long)]
    pub iccid: String,
    /// MB to ask for (the platform decides when absent).
    #[arg(long)]
    pub mb: Option<f64>,
    /// Print each status as the agent published it (JSON, one a line).
    #[arg(long)]
    pub json: bool,
}

/// A command's status in words: "refill-… request_refill: failed (too_many…): why".
fn describe(st: &CommandStatus) -> String {
    let mut line = format!("{} {}: {}", st.id, st.action, st.status.word());
    if let Some(code) = st.code {
        line.push_str(&format!(" ({})", code.word()));
    }
    if let Some(reason) = &st.reason {
        line.push_str(&format!(": {reason}"));
    }
    line
}

impl RefillArgs {
    pub(super) async fn run(self) -> anyhow::Result<ExitCode> {
        if !contract::valid_iccid(&self.iccid) {
            return Err(UsageError(format!(
                "--iccid: \"{}\" is not an ICCID (18-20 digits, A-E allowed) or an EID (32 digits)",
                self.iccid
            ))
            .into());
        }
        if self.mb.is_some_and(|m| !m.is_finite() || m <= 0.0) {
            return Err(UsageError("--mb: not a positive number of MB".into()).into());
        }
        let msg = CommandMsg {
            v: SCHEMA_VERSION,
            id: format!("refill-{}-{}", crate::time::unix_now(), std::process::id()),
            iccid: self.iccid,
            action: contract::Action::RequestRefill.word().to_string(),
            params: match self.mb {
                Some(mb) => serde_json::json!({ "amount_mb": mb }),
                None => serde_json::Value::Null,
            },
            expires_at: crate::time::unix_now() + 300,
        };
        let ok = send(self.conn, &msg, Duration::from_secs(30), self.json).await?;
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
