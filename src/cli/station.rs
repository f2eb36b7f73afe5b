//! `simgate station`: flags, and the screen for the person at the station.

use super::run::{link_settings, AgentArgs};
use super::shutdown_token;
use crate::config::Config;
use crate::reader;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct StationArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Label attached to every SIM of this batch. Repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Company the batch is for.
    #[arg(long)]
    pub company: Option<String>,
    /// Note attached to every SIM of this batch.
    #[arg(long)]
    pub note: Option<String>,
    /// Append every read to this CSV file, durably, as it happens.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// One JSON object per read on stdout (NDJSON) instead of the screen.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn station(args: StationArgs, mut cfg: Config) -> anyhow::Result<ExitCode> {
    args.agent.apply(&mut cfg);
    // Flags replace the config's batch attributes one by one.
    if !args.labels.is_empty() {
        cfg.station.labels = args.labels;
    }
    if let Some(c) = args.company {
        cfg.station.company = c;
    }
    if let Some(n) = args.note {
        cfg.station.note = n;
    }
    if let Err(e) = cfg.validate("command line") {
        eprintln!("simgate: {e}");
        return Ok(ExitCode::from(2));
    }
    if !cfg.broker.url.is_empty() && cfg.agent.id.is_empty() {
        eprintln!("simgate: agent.id: a station publishing to a broker needs --agent-id, SIMGATE_AGENT_ID or agent.id");
        return Ok(ExitCode::from(2));
    }
    let broker = (!cfg.broker.url.is_empty()).then(|| link_settings(&cfg));
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let settings = crate::station::Settings {
        readers: cfg.readers.names.clone(),
        batch: crate::sim::Batch {
            labels: cfg.station.labels.clone(),
            company: non_empty(cfg.station.company.clone()),
            note: non_empty(cfg.station.note.clone()),
        },
        csv: args.csv,
        json: args.json,
        state_dir: cfg.agent.state_dir.clone(),
        broker,
        read: reader::ReadSettings::from_config(&cfg.readers),
    };
    crate::station::run(settings, shutdown_token()).await?;
    Ok(ExitCode::SUCCESS)
}
