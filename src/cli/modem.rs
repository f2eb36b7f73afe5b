//! The modem subcommands: `simgate modem info` and `simgate modems`.

use crate::modem::identify::{self, ModemInfo};
use crate::modem::Profiles;
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
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

pub(super) fn profiles(dir: &Option<PathBuf>) -> anyhow::Result<Profiles> {
    Ok(match dir {
        Some(d) => Profiles::with_overrides(d)?,
        None => Profiles::shipped()?,
    })
}

/// The profiles a one-shot command at `port` works with, as the daemon would at that
/// port: the shipped ones, the configured directory's over them (`modems.profile_dir`),
/// and the port's eUICC transport (`modems.euicc_transport`).
pub(super) fn profiles_at(cfg: &crate::config::Config, port: &str) -> anyhow::Result<Profiles> {
    let dir = &cfg.modems.profile_dir;
    let set = profiles(&(!dir.as_os_str().is_empty()).then(|| dir.clone()))
        .with_context(|| format!("modems.profile_dir {}", dir.display()))?;
    Ok(match cfg.modems.euicc_transport.get(port) {
        Some(t) => set.with_euicc_transport(*t),
        None => set,
    })
}

async fn info_of(port: &str, profiles: &Profiles) -> anyhow::Result<(ModemInfo, u64)> {
    let mut conn = crate::at::connect(port, profiles.recognise("", "").timeouts.default())
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
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
            outln!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            out!("{}", table(&info));
        }
        Ok(())
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The human view of one modem.
pub(super) fn table(i: &ModemInfo) -> String {
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
    if let Some(l) = &s.lock {
        row("PIN lock", l.summary());
    }
    if s.present {
        let luhn = match s.iccid_luhn_ok {
            Some(false) => " (fails Luhn check)",
            _ => "",
        };
        row("ICCID", format!("{}{luhn}", or_dash(&s.iccid)));
        row("IMSI", or_dash(&s.imsi).into());
        row(
            "form factor",
            s.form_factor.map_or("unknown", |f| f.word()).to_string(),
        );
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
        let state = r.state.word();
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
    let session = s.in_session.word();
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
        let profiles = std::sync::Arc::new(profiles(&self.profile_dir)?);
        let ports = if self.port.is_empty() {
            scan_ports(Path::new("/dev"), Path::new("/dev/serial/by-id"))
        } else {
            self.port.clone()
        };
        // Every port at once: a Quectel exposes five, and a silent one (GNSS, diagnostics)
        // costs the whole timeout.
        let progress = std::io::stderr().is_terminal();
        if progress && ports.len() > 1 {
            eprintln!(
                "probing {} ports (at most {} s)...",
                ports.len(),
                self.timeout
            );
        }
        let limit = Duration::from_secs(self.timeout);
        let mut probes = tokio::task::JoinSet::new();
        for (n, port) in ports.iter().cloned().enumerate() {
            let profiles = profiles.clone();
            probes.spawn(async move {
                let r = tokio::time::timeout(limit, info_of(&port, &profiles)).await;
                (n, port, r)
            });
        }
        let mut results = Vec::new();
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => anyhow::bail!("cancelled"),
                r = probes.join_next() => r,
            };
            let Some(joined) = next else { break };
            let (n, port, r) = joined?;
            if progress {
                let verdict = match &r {
                    Ok(Ok(_)) => "answered",
                    Ok(Err(_)) => "failed",
                    Err(_) => "silent",
                };
                eprintln!("  {port}: {verdict}");
            }
            results.push((n, port, r));
        }
        results.sort_by_key(|(n, _, _)| *n);
        let mut found = Vec::new();
        for (_, port, r) in results {
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
            outln!("{}", serde_json::to_string_pretty(&found)?);
        } else {
            outln!(
                "{:<20} {:<16} {:<20} {:<22} {:<10} {:<8}",
                "PORT",
                "MODEL",
                "IMEI",
                "ICCID",
                "FORM",
                "SESSION"
            );
            for i in &found {
                outln!(
                    "{:<20} {:<16} {:<20} {:<22} {:<10} {:<8}",
                    i.port,
                    or_dash(&i.model),
                    or_dash(&i.imei),
                    i.sim.iccid.as_deref().unwrap_or(&i.sim.state),
                    i.sim.form_factor.map_or("unknown", |f| f.word()),
                    i.sim.in_session.word()
                );
            }
        }
        Ok(())
    }
}

/// USB modem ports as Linux names them (option/qcserial: ttyUSB; cdc-acm: ttyACM), each
/// under its stable udev name in `by_id` (/dev/serial/by-id: vendor, model, serial and
/// interface, the same after a reboot or a USB reset) when it has one: the name to put
/// in `[modems] ports`.
fn scan_ports(dev: &Path, by_id: &Path) -> Vec<String> {
    let names = |dir: &Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        v.sort();
        v
    };
    let stable: Vec<(std::path::PathBuf, std::path::PathBuf)> = names(by_id)
        .into_iter()
        .filter_map(|link| Some((std::fs::canonicalize(&link).ok()?, link)))
        .collect();
    names(dev)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ttyUSB") || n.starts_with("ttyACM"))
        })
        .map(|p| {
            let real = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
            stable
                .iter()
                .find(|(target, _)| *target == real)
                .map_or(p, |(_, link)| link.clone())
                .display()
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanned_ports_go_by_their_stable_names() {
        let root = std::env::temp_dir().join(format!("simgate-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (dev, by_id) = (root.join("dev"), root.join("by-id"));
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&by_id).unwrap();
        for n in ["ttyUSB0", "ttyUSB1", "ttyACM0", "ttyS0", "null"] {
            std::fs::write(dev.join(n), "").unwrap();
        }
        let stable = by_id.join("usb-Quectel_EC25_0123-if01-port0");
        std::os::unix::fs::symlink("../dev/ttyUSB1", &stable).unwrap();
        let got = scan_ports(&dev, &by_id);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            got,
            vec![
                dev.join("ttyACM0").display().to_string(),
                dev.join("ttyUSB0").display().to_string(),
                stable.display().to_string(),
            ]
        );
    }
}
