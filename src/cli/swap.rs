//! `simgate swap`: a guided SIM swap for a technician at the gateway's shell, each step
//! shown as it happens.
//!
//! It talks to the running daemon through the platform command path (MQTT.md, "Swap"):
//! it finds the SIM present at `--port` in the agent's retained rows, sends a `swap`
//! command for it, and prints the swap's step events and the command's lifecycle. So
//! there is one workflow (src/daemon/swap.rs), durable in the daemon's store, exactly
//! once through its command ids, and the platform sees every step of it. The daemon
//! owns the port (two AT clients on one port would interleave) and the store (sled
//! holds a lock), which is why `simgate swap` does not drive the modem itself.

use super::platform::PlatformConn;
use super::UsageError;
use crate::contract::{
    self, AgentTopic, CommandMsg, CommandStatus, CommandStatusWord, EventKind, EventMsg, SimState,
};
use crate::link::peer::PeerEvent;
use crate::sim::Location;
use anyhow::{anyhow, Context as _};
use clap::Args;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_slot", "expect", "to_profile", "download"])))]
pub struct SwapArgs {
    #[command(flatten)]
    pub conn: PlatformConn,
    /// The modem port whose SIM is replaced (as in the row's location).
    #[arg(long)]
    pub port: String,
    /// Switch to this SIM slot (counted from 1).
    #[arg(long)]
    pub to_slot: Option<u8>,
    /// Replace the SIM by hand; this ICCID must appear.
    #[arg(long)]
    pub expect: Option<String>,
    /// Enable this installed profile of the modem's eUICC (its ICCID) instead of the
    /// enabled one.
    #[arg(long, value_name = "ICCID")]
    pub to_profile: Option<String>,
    /// Download a profile with this activation code (`LPA:1$<SM-DP+>$<matching ID>`,
    /// SGP.22 §4.1), then enable it; the SM-DP+ must chain to the daemon's [esim] ci_dir.
    #[arg(
        long,
        value_name = "ACTIVATION_CODE",
        env = "SIMGATE_ACTIVATION_CODE",
        hide_env_values = true
    )]
    pub download: Option<String>,
    /// The confirmation code of `--download`, when its profile needs one.
    #[arg(
        long,
        requires = "download",
        env = "SIMGATE_CONFIRMATION_CODE",
        hide_env_values = true
    )]
    pub confirmation_code: Option<String>,
    /// Command id (the idempotency key); default: a fresh one.
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds to wait for the swap to end (a physical swap waits for the technician).
    #[arg(long, default_value_t = 1_800)]
    pub wait: u64,
    /// Print the swap's step events and the command's statuses as the agent published
    /// them (JSON, one a line).
    #[arg(long)]
    pub json: bool,
}

/// How long the agent's retained rows may take to arrive after subscribing.
const ROWS_WAIT: Duration = Duration::from_secs(5);

impl SwapArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let mut params = match (
            &self.to_slot,
            &self.expect,
            &self.to_profile,
            &self.download,
        ) {
            (Some(n), None, None, None) => serde_json::json!({ "to_slot": n }),
            (None, Some(i), None, None) => serde_json::json!({ "expect_iccid": i }),
            (None, None, Some(i), None) => serde_json::json!({ "to_profile": i }),
            (None, None, None, Some(c)) => serde_json::json!({ "download": c }),
            _ => {
                return Err(UsageError(
                    "give one of --to-slot, --expect, --to-profile and --download".into(),
                )
                .into())
            }
        };
        if let Some(c) = &self.confirmation_code {
            params["confirmation_code"] = c.clone().into();
        }
        // The agent would refuse them by the same rules: say so before connecting
        // (a refusal names the field, never a code's value).
        if self.download.is_some() {
            contract::parse_download_params(&params, true)
                .map_err(|r| UsageError(format!("--download: {}", r.reason)))?;
        } else {
            contract::parse_swap_params(&params).map_err(|r| {
                UsageError(format!("--to-slot/--expect/--to-profile: {}", r.reason))
            })?;
        }
        if let Some(id) = self
            .id
            .as_deref()
            .filter(|i| !contract::valid_command_id(i))
        {
            return Err(UsageError(format!(
                "--id: \"{id}\" must be 1 to 64 of letters, digits, '-', '_' and '.'"
            ))
            .into());
        }
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("swap-{}-{}", crate::time::unix_now(), std::process::id()));
        let port = self.port.clone();
        let mut peer = self.conn.peer("swap")?;
        let mut sent = false;
        let rows_deadline = tokio::time::Instant::now() + ROWS_WAIT;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.wait);
        loop {
            let until = if sent { deadline } else { rows_deadline };
            let ev = tokio::time::timeout_at(until, peer.next()).await;
            let ev = match ev {
                Ok(ev) => ev.context("broker")?,
                Err(_) if !sent => {
                    return Err(anyhow!(
                        "no SIM present at {port} in the rows of agent {} (is `simgate run` supervising it?)",
                        peer.topics().all().trim_end_matches("/#")
                    ))
                }
                Err(_) => return Err(anyhow!("swap {id} did not end within {} s", self.wait)),
            };
            match ev {
                PeerEvent::Connected => peer.subscribe(peer.topics().all()).await?,
                PeerEvent::Message {
                    topic: AgentTopic::SimState { .. },
                    payload,
                } if !sent => {
                    let Ok(row) = serde_json::from_slice::<SimState>(&payload) else {
                        continue;
                    };
                    let here =
                        matches!(&row.sim.location, Location::Modem { port: p, .. } if *p == port);
                    if !(here && row.sim.present) {
                        continue;
                    }
                    if !self.json {
                        outln!(
                            "swap {id}: SIM {} at {} ({})",
                            row.sim.iccid,
                            row.sim.location.label(),
                            match (&self.to_slot, &self.expect, &self.to_profile) {
                                (Some(n), _, _) => format!("to slot {n}"),
                                (_, Some(i), _) => format!("replace it with SIM {i} when asked"),
                                (_, _, Some(p)) => format!("to its eUICC's profile {p}"),
                                _ => "a profile downloaded onto its eUICC, then enabled".into(),
                            }
                        );
                    }
                    let msg = CommandMsg {
                        v: contract::SCHEMA_VERSION,
                        id: id.clone(),
                        iccid: row.sim.iccid.clone(),
                        action: contract::Action::Swap.word().into(),
                        params: params.clone(),
                        expires_at: crate::time::unix_now() + self.wait,
                    };
                    peer.publish(peer.topics().commands(), false, serde_json::to_vec(&msg)?)
                        .await?;
                    sent = true;
                }
                PeerEvent::Message {
                    topic: AgentTopic::Events,
                    payload,
                } if sent => {
                    let Ok(e) = serde_json::from_slice::<EventMsg>(&payload) else {
                        continue;
                    };
                    match step_line(&id, &e.kind) {
                        Some(_) if self.json => outln!("{}", String::from_utf8_lossy(&payload)),
                        Some(line) => outln!("{line}"),
                        None => {}
                    }
                }
                PeerEvent::Message {
                    topic: AgentTopic::CommandStatus { id: i },
                    payload,
                } if i == id => {
                    let Ok(st) = serde_json::from_slice::<CommandStatus>(&payload) else {
                        continue;
                    };
                    match self.json {
                        true => outln!("{}", String::from_utf8_lossy(&payload)),
                        false => {
                            let reason = st
                                .reason
                                .as_ref()
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default();
                            outln!("swap {id}: {}{reason}", st.status.word());
                        }
                    }
                    match st.status {
                        CommandStatusWord::Successful => return Ok(ExitCode::SUCCESS),
                        CommandStatusWord::Failed => return Ok(ExitCode::FAILURE),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

/// What a technician reads of the swap's events: the step, how it went, in words; no
/// event numbers (`seq` is the platform's bookkeeping, not something to act on).
fn step_line(id: &str, e: &EventKind) -> Option<String> {
    match e {
        EventKind::SwapStep {
            id: i,
            step,
            ok,
            new_iccid,
            detail,
            secs,
            ..
        } if i == id => Some(format!(
            "swap {id}: {step} {}{}: {detail}{}",
            match ok {
                None => "started",
                Some(true) => "done",
                Some(false) => "FAILED",
            },
            secs.map(|s| format!(" in {s:.1} s")).unwrap_or_default(),
            new_iccid
                .as_deref()
                .filter(|n| !detail.contains(*n))
                .map(|n| format!(" (new SIM {n})"))
                .unwrap_or_default()
        )),
        EventKind::EsimDownloadStep {
            id: i,
            step,
            profile,
            detail,
            ..
        } if i == id => Some(format!(
            "swap {id}: download {step}: {detail}{}",
            profile
                .as_deref()
                .filter(|p| !detail.contains(*p))
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default()
        )),
        EventKind::Swapped {
            iccid,
            replaced,
            location,
        } => Some(format!(
            "swap {id}: SIM {replaced} replaced by {iccid} at {}",
            location.label()
        )),
        _ => None,
    }
}
