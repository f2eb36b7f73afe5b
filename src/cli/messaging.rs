//! `simgate ussd` and `simgate sms`: the operator's channels of a modem's SIM, by hand
//! (the daemon offers the same to the platform as the `ussd` and `sms_send` commands).

use super::modem::profiles;
use super::UsageError;
use crate::modem::ussd::{self, Ended};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the modem is.
#[derive(Debug, Args)]
pub struct ModemAt {
    /// The modem's AT port (/dev/ttyUSB2) or tcp://host:port of a ser2net-style bridge.
    #[arg(long)]
    pub port: String,
    /// Extra modem profiles (*.toml) and operators (operators/*.toml).
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
}

/// `simgate ussd --port P '*100#' [ANSWER ...]`.
#[derive(Debug, Args)]
pub struct UssdArgs {
    #[command(flatten)]
    pub at: ModemAt,
    /// The USSD code (`*100#`); absent with --balance.
    #[arg(required_unless_present = "balance")]
    pub code: Option<String>,
    /// Answers to the network's menus, in order; a menu left unanswered is cancelled.
    pub answers: Vec<String>,
    /// Ask the SIM's operator for its balance (devices/operators: the code by the
    /// IMSI's MCC-MNC) and read MB and days from the reply.
    #[arg(long, conflicts_with = "code")]
    pub balance: bool,
    /// Seconds to wait for each reply from the network before cancelling.
    #[arg(long, default_value_t = 30)]
    pub wait: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SmsArgs {
    #[command(subcommand)]
    pub op: SmsCmd,
}

#[derive(Debug, Subcommand)]
pub enum SmsCmd {
    /// Send an SMS (PDU mode; long texts in concatenated parts).
    Send {
        #[command(flatten)]
        at: ModemAt,
        /// Destination: digits, + for an international number.
        number: String,
        text: String,
    },
    /// List the received messages the modem stores (they stay there).
    List {
        #[command(flatten)]
        at: ModemAt,
        #[arg(long)]
        json: bool,
    },
}

async fn open(
    at: &ModemAt,
) -> anyhow::Result<(
    crate::at::AtConnection<crate::at::conn::Port>,
    crate::modem::Profiles,
    String,
)> {
    let profiles = profiles(&at.profile_dir)?;
    let mut conn = crate::at::connect(&at.port, profiles.recognise("", "").timeouts.default())
        .await
        .with_context(|| format!("{}: the modem did not answer", at.port))?;
    let (profile, _) = crate::modem::identify::recognise(&mut conn, &profiles)
        .await
        .with_context(|| format!("{}: the modem did not answer", at.port))?;
    let name = profile.name.clone();
    Ok((conn, profiles, name))
}

impl UssdArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        if let Some(c) = &self.code {
            ussd::check_code(c).map_err(|e| UsageError(e.to_string()))?;
        }
        for a in &self.answers {
            ussd::check_answer(a).map_err(|e| UsageError(e.to_string()))?;
        }
        let (mut conn, profiles, name) = open(&self.at).await?;
        let profile = profiles
            .get(&name)
            .context("the recognised profile vanished")?;
        let (code, query) = match &self.code {
            Some(c) => (c.clone(), None),
            None => {
                let sim = crate::modem::identify::sim_info(&mut conn, profile).await?;
                let imsi = sim
                    .imsi
                    .context("the SIM's IMSI is not readable (locked or absent): no operator")?;
                let op = profiles.operators().for_imsi(&imsi).ok_or_else(|| {
                    UsageError(format!(
                        "no operator file for IMSI {}… (devices/operators, or operators/ in --profile-dir)",
                        &imsi[..imsi.len().min(6)]
                    ))
                })?;
                let q = op.balance.clone().ok_or_else(|| {
                    UsageError(format!("{}: no [balance] in {}", op.name, op.file))
                })?;
                (q.code.clone(), Some(q))
            }
        };
        let wait = Duration::from_secs(self.wait.max(1));
        let r = ussd::run(&mut conn, profile, &code, &self.answers, wait).await?;
        let ex = match r {
            Ok(ex) => ex,
            Err(f) => {
                eprintln!("simgate: {code}: {f}");
                return Ok(ExitCode::FAILURE);
            }
        };
        let facts = query
            .as_ref()
            .and_then(|q| ex.replies.last().and_then(|r| q.read(r)));
        let ended = match ex.ended {
            Ended::Done => "done",
            Ended::Cancelled => "cancelled",
            Ended::ByNetwork => "ended by the network",
        };
        if self.json {
            let mut v = serde_json::json!({
                "code": code,
                "replies": ex.replies,
                "ended": ended,
                "at_lines": ex.at_lines,
            });
            if let Some(f) = facts {
                v["data_left_mb"] = serde_json::json!(f.data_left_mb);
                v["days_left"] = serde_json::json!(f.days_left);
            }
            outln!("{v}");
        } else {
            for r in &ex.replies {
                outln!("{r}");
            }
            if ex.ended == Ended::Cancelled {
                eprintln!("(the network asked for more; the session was cancelled)");
            }
            if let Some(f) = facts {
                let mb = f.data_left_mb.map_or("?".into(), |v| format!("{v} MB"));
                let days = f.days_left.map_or("?".into(), |v| format!("{v} days"));
                outln!("balance: {mb} left, {days} (the operator's figures)");
            } else if query.is_some() {
                eprintln!("simgate: the operator's reply matched none of its patterns");
                return Ok(ExitCode::FAILURE);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl SmsArgs {
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self.op {
            SmsCmd::Send { at, number, text } => {
                crate::sms::pdu::check_number(&number).map_err(|e| UsageError(e.to_string()))?;
                let (mut conn, profiles, name) = open(&at).await?;
                let profile = profiles
                    .get(&name)
                    .context("the recognised profile vanished")?;
                match crate::modem::sms::send(&mut conn, profile, &number, &text).await? {
                    Ok(sent) => {
                        outln!(
                            "sent to {number} in {} part(s), message reference(s) {:?}",
                            sent.references.len(),
                            sent.references
                        );
                        Ok(ExitCode::SUCCESS)
                    }
                    Err(f) => {
                        eprintln!("simgate: {number}: {f}");
                        Ok(ExitCode::FAILURE)
                    }
                }
            }
            SmsCmd::List { at, json } => {
                let (mut conn, profiles, name) = open(&at).await?;
                let profile = profiles
                    .get(&name)
                    .context("the recognised profile vanished")?;
                crate::modem::sms::setup(&mut conn, profile).await?;
                let listing = match crate::modem::sms::list(&mut conn, profile).await? {
                    Ok(l) => l,
                    Err(r) => {
                        eprintln!("simgate: {r}");
                        return Ok(ExitCode::FAILURE);
                    }
                };
                let (msgs, waiting) = crate::sms::reassemble(listing.received.clone(), false);
                if json {
                    let list: Vec<_> = msgs
                        .iter()
                        .map(|m| {
                            serde_json::json!({
                                "sender": m.sender, "sent_at": m.sent_at, "text": m.text,
                                "parts": m.parts, "indexes": m.indexes,
                            })
                        })
                        .collect();
                    outln!(
                        "{}",
                        serde_json::json!({"messages": list, "parts_waiting": waiting,
                            "used": listing.used, "total": listing.total})
                    );
                } else {
                    for m in &msgs {
                        outln!(
                            "{} {} ({} part(s)): {}",
                            m.sent_at,
                            m.sender,
                            m.parts,
                            m.text
                        );
                    }
                    if !waiting.is_empty() {
                        outln!("parts waiting for their siblings at {waiting:?}");
                    }
                    if let (Some(u), Some(t)) = (listing.used, listing.total) {
                        outln!("storage: {u} of {t}");
                    }
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
