//! `simgate pin verify|enable|disable|change|unblock`: PIN1 of the SIM in a reader or a
//! modem, by hand. The PIN, PUK and new PIN are read from stdin, one a line — never
//! from the command line, where `ps` and the shell's history would keep them.

use super::UsageError;
use crate::card::pin::PinFailure;
use crate::card::pin_command;
use crate::sim::{Lock, PinOp, PinRequest, Secret};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(subcommand)]
    pub op: PinCmd,
}

/// Where the SIM is, and whether the last attempt may be spent.
#[derive(Debug, Args)]
pub struct PinAt {
    /// The reader holding the card (default: the one reader holding a card).
    #[arg(long, conflicts_with = "port")]
    pub reader: Option<String>,
    /// The modem's AT port holding the SIM.
    #[arg(long)]
    pub port: Option<String>,
    /// Spend the last PIN attempt (or a PUK attempt whose count is unknown or the
    /// last): refused without it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum PinCmd {
    /// Enter the PIN (stdin: PIN).
    Verify(PinAt),
    /// Enable PIN1 (stdin: PIN).
    Enable(PinAt),
    /// Disable PIN1 (stdin: PIN).
    Disable(PinAt),
    /// Change PIN1 (stdin: PIN, then the new PIN).
    Change(PinAt),
    /// Unblock PIN1 with the PUK (stdin: PUK, then the new PIN).
    Unblock(PinAt),
}

/// One secret from stdin, prompted on a terminal.
fn secret(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    what: &str,
) -> anyhow::Result<Secret> {
    if std::io::stdin().is_terminal() {
        eprint!("{what}: ");
        std::io::stderr().flush().ok();
    }
    let line = lines
        .next()
        .transpose()?
        .ok_or_else(|| UsageError(format!("stdin: no {what} (one a line)")))?;
    let line = line.trim();
    let r = if what == "PUK" {
        Secret::puk(line)
    } else {
        Secret::pin(line)
    };
    Ok(r.map_err(|e| UsageError(format!("stdin: {e}")))?)
}

impl PinArgs {
    pub async fn run(self, cfg: &crate::config::Config) -> anyhow::Result<ExitCode> {
        let (op, at) = match self.op {
            PinCmd::Verify(a) => (PinOp::Verify, a),
            PinCmd::Enable(a) => (PinOp::Enable, a),
            PinCmd::Disable(a) => (PinOp::Disable, a),
            PinCmd::Change(a) => (PinOp::Change, a),
            PinCmd::Unblock(a) => (PinOp::Unblock, a),
        };
        let req = tokio::task::spawn_blocking(move || -> anyhow::Result<PinRequest> {
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            let first = secret(&mut lines, if op == PinOp::Unblock { "PUK" } else { "PIN" })?;
            let second = match op {
                PinOp::Change | PinOp::Unblock => Some(secret(&mut lines, "new PIN")?),
                _ => None,
            };
            Ok(PinRequest {
                op,
                first,
                second,
                force: at.force,
            })
        });
        let req = req.await.context("stdin reader")??;
        let (result, iccid, lock) = match &at.port {
            Some(port) => through_modem(port, &req, super::modem::profiles_at(cfg, port)?).await?,
            None => through_reader(at.reader.clone(), req).await?,
        };
        let lock_text = lock.map_or("lock state unknown".into(), |l| l.summary());
        match result {
            Ok(()) => {
                outln!("{op}: done; SIM {iccid}: {lock_text}");
                Ok(ExitCode::SUCCESS)
            }
            Err(f) => {
                eprintln!("simgate: {f}; SIM {iccid}: {lock_text}");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

type Outcome = (Result<(), PinFailure>, String, Option<Lock>);

async fn through_reader(name: Option<String>, req: PinRequest) -> anyhow::Result<Outcome> {
    let timeout = std::time::Duration::from_secs(10);
    tokio::task::spawn_blocking(move || {
        let reader = super::esim::pick_reader(name)?;
        let (r, iccid) = crate::reader::with_card(&reader, timeout, move |t| {
            (pin_command::on_card(t, None, &req), false)
        })??;
        Ok(match r {
            Ok(lock) => (Ok(()), iccid, lock),
            Err(f) => (Err(f), iccid, None),
        })
    })
    .await
    .context("PC/SC worker thread failed")?
}

async fn through_modem(
    port: &str,
    req: &PinRequest,
    profiles: crate::modem::Profiles,
) -> anyhow::Result<Outcome> {
    let mut conn = crate::at::connect(port, profiles.recognise("", "").timeouts.default())
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    let (profile, _) = crate::modem::identify::recognise(&mut conn, &profiles)
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    let (r, sim) = crate::modem::pin::on_modem(&mut conn, profile, None, req).await?;
    Ok((r, sim.iccid.unwrap_or_default(), sim.lock))
}
