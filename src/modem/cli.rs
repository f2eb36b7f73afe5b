//! The modem subcommands: `simgate modem info`, `simgate modems`, `simgate emulate
//! modem`. clap types plus their `run`; the binary's own parser embeds them.

use super::emulator::{self, Control, EmuSim, Options};
use super::identify::{self, ModemInfo};
use super::transcript::Transcript;
use super::Profiles;
use crate::at::AtConnection;
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `simgate modem ...`
#[derive(Debug, clap::Args)]
pub struct ModemArgs {
    #[command(subcommand)]
    pub command: ModemCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModemCommand {
    /// Identify one modem and its SIM.
    Info(InfoArgs),
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Serial port (/dev/ttyUSB2) or tcp://host:port of a ser2net-style bridge.
    #[arg(long)]
    pub port: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Extra modem profiles (*.toml), validated like the shipped ones.
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// State directory, to show this month's usage.
    #[arg(long, env = "SIMGATE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `simgate modems`: find and identify modems.
#[derive(Debug, clap::Args)]
pub struct ModemsArgs {
    /// Ports to probe; default: every /dev/ttyUSB* and /dev/ttyACM*.
    #[arg(long)]
    pub port: Vec<String>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Give up on a port that has not answered within this many seconds (non-AT ports
    /// such as GNSS or diagnostics never answer).
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

/// `simgate emulate modem`: a modem on a pty.
#[derive(Debug, clap::Args)]
pub struct EmulateModemArgs {
    /// Profile name (quectel-ec2x, telit-le910, ...).
    #[arg(long)]
    pub profile: String,
    /// Replay this transcript (format: devices/modems/README.md).
    #[arg(long)]
    pub transcript: Option<PathBuf>,
    /// Keep a symlink here pointing at the current pty.
    #[arg(long)]
    pub link: Option<PathBuf>,
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// Start with an eSIM instead of a physical SIM.
    #[arg(long)]
    pub esim: bool,
    /// Start without a SIM.
    #[arg(long)]
    pub no_sim: bool,
    /// Delay before each answer, milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
}

fn profiles(dir: &Option<PathBuf>) -> anyhow::Result<Profiles> {
    Ok(match dir {
        Some(d) => Profiles::with_overrides(d)?,
        None => Profiles::shipped()?,
    })
}

async fn info_of(port: &str, profiles: &Profiles) -> anyhow::Result<(ModemInfo, u64)> {
    let io = crate::at::open(port).await?;
    let mut conn = AtConnection::new(io, vec![], vec![]);
    let info = identify::identify(&mut conn, profiles, port)
        .await
        .with_context(|| format!("{port}: identification failed"))?;
    Ok((info, conn.stats().commands))
}

impl ModemArgs {
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let ModemCommand::Info(a) = self.command;
        let profiles = profiles(&a.profile_dir)?;
        let (mut info, _) = tokio::select! {
            _ = cancel.cancelled() => anyhow::bail!("cancelled"),
            r = info_of(&a.port, &profiles) => r?,
        };
        if let (Some(dir), Some(iccid)) = (&a.state_dir, &info.sim.iccid) {
            let store = crate::store::Store::open(dir)?;
            let month = crate::time::month_key(crate::time::unix_now());
            info.sim.this_month_mb = Some(store.month_usage(iccid, &month)?.megabytes());
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            print!("{}", table(&info));
        }
        Ok(())
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The human view of one modem.
pub fn table(i: &ModemInfo) -> String {
    let s = &i.sim;
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
    row("port", i.port.clone());
    row("profile", i.profile.clone());
    row("manufacturer", or_dash(&i.manufacturer).into());
    row("model", or_dash(&i.model).into());
    row("firmware", or_dash(&i.firmware).into());
    row("IMEI", or_dash(&i.imei).into());
    // "READY", "SIM PIN", or "SIM not inserted" said plainly.
    row("SIM", s.state.clone());
    if s.present {
        let luhn = match s.iccid_luhn_ok {
            Some(false) => " (fails Luhn check)",
            _ => "",
        };
        row("ICCID", format!("{}{luhn}", or_dash(&s.iccid)));
        row("IMSI", or_dash(&s.imsi).into());
        row("form factor", s.form_factor.clone());
        if let Some(slot) = s.slot {
            row("slot", slot.to_string());
        }
        if let Some(eid) = &s.eid {
            row("EID", eid.clone());
        }
        row(
            "operator",
            format!("{} ({})", or_dash(&s.operator), or_dash(&s.mcc_mnc)),
        );
    }
    if let Some(r) = &s.registration {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        row(
            "registration",
            format!(
                "{state} ({}, {}) area {} cell {}",
                r.domain,
                r.access_tech.unwrap_or("-"),
                r.area.as_deref().unwrap_or("-"),
                r.cell.as_deref().unwrap_or("-")
            ),
        );
    }
    if let Some(sig) = &s.signal {
        row(
            "signal",
            sig.dbm
                .map_or("unknown".into(), |d| format!("{d} dBm (CSQ {})", sig.csq)),
        );
    }
    let session = match s.in_session {
        crate::sim::InSession::Yes => "yes",
        crate::sim::InSession::No => "no",
        crate::sim::InSession::NotApplicable => "n/a",
    };
    row("in session", format!("{session} ({})", s.session_reason));
    if let Some(u) = &s.usage {
        row(
            "counter",
            format!("{} B sent, {} B received", u.sent, u.received),
        );
    }
    if let Some(mb) = s.this_month_mb {
        row("this month", format!("{mb} MB"));
    }
    row("AT commands", i.at_commands.to_string());
    out
}

impl ModemsArgs {
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let profiles = profiles(&self.profile_dir)?;
        let ports = if self.port.is_empty() {
            scan_ports()
        } else {
            self.port.clone()
        };
        let mut found = Vec::new();
        for port in ports {
            let r = tokio::select! {
                _ = cancel.cancelled() => anyhow::bail!("cancelled"),
                r = tokio::time::timeout(Duration::from_secs(self.timeout), info_of(&port, &profiles)) => r,
            };
            match r {
                Ok(Ok((info, _))) => found.push(info),
                Ok(Err(e)) => {
                    // Most errors already start with the port; name it once.
                    let msg = crate::cli::report(&e);
                    match msg.starts_with(port.as_str()) {
                        true => eprintln!("{msg}"),
                        false => eprintln!("{port}: {msg}"),
                    }
                }
                Err(_) => eprintln!("{port}: no AT answer within {} s", self.timeout),
            }
        }
        if found.is_empty() {
            // Each port's failure is named above; an empty table would read as success.
            anyhow::bail!("no modem answered");
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            println!(
                "{:<20} {:<16} {:<20} {:<22} {:<10} {:<8}",
                "PORT", "MODEL", "IMEI", "ICCID", "FORM", "SESSION"
            );
            for i in &found {
                let session = serde_json::to_value(i.sim.in_session)?;
                println!(
                    "{:<20} {:<16} {:<20} {:<22} {:<10} {:<8}",
                    i.port,
                    or_dash(&i.model),
                    or_dash(&i.imei),
                    i.sim.iccid.as_deref().unwrap_or(&i.sim.state),
                    i.sim.form_factor,
                    session.as_str().unwrap_or("-")
                );
            }
        }
        Ok(())
    }
}

/// USB modem ports as Linux names them (option/qcserial: ttyUSB; cdc-acm: ttyACM).
fn scan_ports() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
        .map(|n| format!("/dev/{n}"))
        .collect();
    out.sort();
    out
}

impl EmulateModemArgs {
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let profiles = profiles(&self.profile_dir)?;
        let profile = profiles
            .get(&self.profile)
            .ok_or_else(|| {
                crate::cli::UsageError(format!(
                    "--profile: no profile {:?}; known: {}",
                    self.profile,
                    profiles.names().join(", ")
                ))
            })?
            .clone();
        let mut opts = Options::new(profile);
        if let Some(t) = &self.transcript {
            opts.transcript = Some(Transcript::load(t)?);
        }
        opts.link = self.link.clone();
        opts.latency = Duration::from_millis(self.latency_ms);
        if self.esim {
            opts.sim = Some(EmuSim::esim());
        }
        if self.no_sim {
            opts.sim = None;
            opts.session_up = false;
        }
        let mut h = emulator::start(opts, cancel.clone())?;
        println!("{}", h.path().display());
        eprintln!(
            "emulating {}; commands on stdin: remove | insert | swap | esim | silent | talk | garbage | busy N | vanish SECS | reboot SECS | restart | connect | urc TEXT | traffic SENT_BPS RECEIVED_BPS",
            self.profile
        );
        // A plain thread reads stdin (tokio's io-std feature is not compiled in); it
        // ends with stdin.
        let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(8);
        std::thread::spawn(move || {
            for l in std::io::stdin().lines().map_while(Result::ok) {
                if tx.blocking_send(l).is_err() {
                    return;
                }
            }
        });
        let mut stdin_open = true;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                p = h.changed_path() => if let Some(p) = p {
                    println!("{}", p.display());
                },
                l = lines.recv(), if stdin_open => match l {
                    Some(l) => match control(&l) {
                        Some(c) => h.send(c).await,
                        None => eprintln!("unknown emulator command: {l}"),
                    },
                    None => stdin_open = false,
                },
            }
        }
    }
}

fn control(line: &str) -> Option<Control> {
    let mut words = line.trim().splitn(2, ' ');
    let secs = |w: Option<&str>| {
        Duration::from_secs_f64(w.and_then(|s| s.trim().parse().ok()).unwrap_or(2.0))
    };
    Some(match words.next()? {
        "remove" => Control::RemoveSim,
        "insert" => Control::InsertSim(EmuSim::physical()),
        "swap" => Control::InsertSim(EmuSim::other()),
        "esim" => Control::InsertSim(EmuSim::esim()),
        "silent" => Control::Silent(true),
        "talk" => Control::Silent(false),
        "garbage" => Control::Garbage,
        "busy" => Control::SimBusy(words.next()?.trim().parse().ok()?),
        "vanish" => Control::Vanish(secs(words.next())),
        "reboot" => Control::RebootOnNextCommand(secs(words.next())),
        "urc" => Control::Urc(words.next()?.to_string()),
        "restart" => Control::Restart,
        "connect" => Control::Connect,
        "traffic" => {
            let mut n = words.next()?.split_whitespace().map(|w| w.parse().ok());
            Control::Traffic {
                sent: n.next()??,
                received: n.next()??,
            }
        }
        _ => return None,
    })
}
