//! `simgate station`: flags, and the screen for the person at the station.

use super::run::{http_settings, link_settings, AgentArgs};
use super::shutdown_token;
use crate::config::Config;
use crate::observe::CardReport;
use crate::observe::{ProvisionReport, ProvisionResult, ProvisionStage};
use crate::reader;
use crate::station::{Screen, Settings, Tally};
use clap::Args;
use std::io::Write;
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
    /// Disable PIN1 on every card inserted, with this PIN (the batch's): the attempts
    /// left are read first and the last one is never spent (the card is skipped, with
    /// a warning); each card's result goes to the CSV, the screen and the page.
    #[arg(long, value_name = "PIN")]
    pub disable_pin: Option<String>,
    /// Download a profile onto every Blank eUICC inserted, from this CSV of activation
    /// codes (a header line, then one code per line; columns activation_code, eid,
    /// confirmation_code, labels, nickname): the code meant for the card's EID, else the
    /// next unused one, each code used once. Results go to --csv (default FILE with
    /// .results.csv).
    #[arg(long, value_name = "FILE.csv")]
    pub provision: Option<PathBuf>,
    /// With --provision: provision eUICCs that have a profile enabled too (shown and
    /// skipped otherwise).
    #[arg(long, requires = "provision")]
    pub provision_non_blank: bool,
    /// With --provision: the GSMA CI certificates the SM-DP+ must chain to (default:
    /// [esim] ci_dir).
    #[arg(long, value_name = "DIR", requires = "provision")]
    pub ci_dir: Option<PathBuf>,
}

pub(super) async fn station(args: StationArgs, mut cfg: Config) -> anyhow::Result<ExitCode> {
    args.agent.apply(&mut cfg);
    cfg.load_secrets()?;
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
    if !cfg.broker.endpoints().is_empty() && cfg.agent.id.is_empty() {
        eprintln!("simgate: agent.id: a station publishing to a broker needs --agent-id, SIMGATE_AGENT_ID or agent.id");
        return Ok(ExitCode::from(2));
    }
    let disable_pin = match &args.disable_pin {
        Some(p) => Some(
            crate::sim::Secret::pin(p)
                .map_err(|e| super::UsageError(format!("--disable-pin: {e}")))?,
        ),
        None => None,
    };
    let provision = match &args.provision {
        Some(file) => {
            let codes = match crate::station::codes::load(file) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("simgate: --provision: the file is refused, nothing was done:\n{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let ci_dir = args
                .ci_dir
                .clone()
                .unwrap_or_else(|| cfg.esim.ci_dir.clone());
            let tls = crate::rsp::tls::client_config(&ci_dir)
                .map_err(|e| super::UsageError(format!("--ci-dir: {e}")))?;
            Some(crate::station::provision::Plan {
                file: file.clone(),
                codes,
                results: args
                    .csv
                    .clone()
                    .unwrap_or_else(|| file.with_extension("results.csv")),
                tls,
                smdp_timeout: std::time::Duration::from_secs(cfg.esim.smdp_timeout_secs.max(1)),
                card_timeout: std::time::Duration::from_millis(cfg.readers.card_timeout_ms),
                non_blank: args.provision_non_blank,
            })
        }
        None => None,
    };
    let broker = (!cfg.broker.endpoints().is_empty()).then(|| link_settings(&cfg));
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    let settings = crate::station::Settings {
        readers: cfg.readers.names.clone(),
        batch: crate::sim::Batch {
            labels: cfg.station.labels.clone(),
            company: non_empty(cfg.station.company.clone()),
            note: non_empty(cfg.station.note.clone()),
        },
        // With --provision, --csv names the results file instead of a file of reads.
        csv: args.csv.filter(|_| provision.is_none()),
        state_dir: cfg.agent.state_dir.clone(),
        broker,
        read: reader::ReadSettings::from_config(&cfg.readers),
        http: http_settings(&cfg),
        disable_pin,
        provision,
    };
    let mut screen = Terminal::new(args.json);
    crate::station::run(settings, &mut screen, shutdown_token()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The station's terminal screen: rows appended as reads finish (no full redraw, so the
/// history stays scrollable and nothing shown is ever overwritten), or NDJSON with
/// `--json`.
#[derive(Debug)]
struct Terminal {
    json: bool,
    /// ANSI colours and the bell only on a terminal.
    ansi: bool,
    out: std::io::Stdout,
}

impl Terminal {
    fn new(json: bool) -> Terminal {
        let out = std::io::stdout();
        Terminal {
            json,
            // Colour and the bell only where wanted (NO_COLOR, CLICOLOR, TERM=dumb).
            ansi: !json && anstream::AutoStream::choice(&out) != anstream::ColorChoice::Never,
            out,
        }
    }

    fn write(&mut self, text: &str) -> std::io::Result<()> {
        let mut lock = self.out.lock();
        lock.write_all(text.as_bytes()).and_then(|_| lock.flush())
    }
}

impl Screen for Terminal {
    fn header(&mut self, s: &Settings) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        let mut attrs = Vec::new();
        if !s.batch.labels.is_empty() {
            attrs.push(format!("labels: {}", s.batch.labels.join(", ")));
        }
        if let Some(c) = &s.batch.company {
            attrs.push(format!("company: {c}"));
        }
        if let Some(n) = &s.batch.note {
            attrs.push(format!("note: {n}"));
        }
        let readers = if s.readers.is_empty() {
            "all readers".to_string()
        } else {
            s.readers.join(", ")
        };
        let page = match &s.http {
            Some(h) => format!("The station page: {}\n", page_url(h.addr)),
            None => String::new(),
        };
        let text = format!(
            "simgate station: {readers}{}{}\n{page}Insert SIMs; each appears below. Ctrl-C ends the batch.\n\n",
            if attrs.is_empty() { "" } else { " | " },
            attrs.join(" | ")
        );
        self.write(&text)
    }

    fn note(&mut self, text: &str) -> std::io::Result<()> {
        if self.json {
            tracing::info!("{text}");
            return Ok(());
        }
        self.write(&format!("   {text}\n"))
    }

    fn row(&mut self, r: &CardReport, tally: &Tally) -> std::io::Result<()> {
        if self.json {
            let line = serde_json::to_string(r)?;
            return self.write(&format!("{line}\n"));
        }
        let card = r.card.as_ref();
        let (bold, red, green, reset, bell) = if self.ansi {
            ("\x1b[1m", "\x1b[1;37;41m", "\x1b[32m", "\x1b[0m", "\x07")
        } else {
            ("", "", "", "", "")
        };
        let mut text = String::new();
        let status = card.and_then(|c| c.status).map_or("-", |s| s.word());
        let form = card.map_or("-", |c| c.form_text());
        text.push_str(&format!(
            "{bold}#{:<3}{reset} {}  ICCID {}  {form}  EID {}  status {status}",
            r.n.unwrap_or_default(),
            r.reader,
            card.and_then(|c| c.iccid.as_deref()).unwrap_or("-"),
            card.and_then(|c| c.eid.as_deref()).unwrap_or("-"),
        ));
        if let Some(op) = card.and_then(|c| c.operator.as_ref()) {
            text.push_str(&format!("  {op}"));
        }
        if let Some(l) = card
            .and_then(|c| c.lock)
            .filter(|l| l.state != crate::sim::LockState::Ready)
        {
            text.push_str(&format!("  {}", l.summary()));
        }
        if let Some(t) = r.known_since {
            text.push_str(&format!(
                "  (known, last seen {})",
                crate::time::utc_text(t)
            ));
        }
        text.push_str(&format!("  {} ms\n", r.ms));
        for w in &r.warnings {
            text.push_str(&format!("{red} !! {w} !! {reset}{bell}\n"));
        }
        if let Some(e) = &r.error {
            text.push_str(&format!("     {e}\n"));
        }
        if let Some(payload) = &r.qr {
            text.push_str(&qr_text(payload));
        }
        text.push_str(&format!(
            "{green}     count: {} read, {} unique SIMs, {} with warnings{reset}\n",
            tally.reads(),
            tally.unique(),
            tally.warned()
        ));
        self.write(&text)
    }

    fn provision(&mut self, p: &ProvisionReport) -> std::io::Result<()> {
        if self.json {
            let line = serde_json::to_string(p)?;
            return self.write(&format!("{line}\n"));
        }
        let who = format!("   {} | EID {}:", p.reader, p.eid.as_deref().unwrap_or("-"));
        let text = match &p.stage {
            ProvisionStage::Assigned { line, for_this_eid } => format!(
                "{who} code of line {line} ({})\n",
                if *for_this_eid {
                    "the one for this EID"
                } else {
                    "the next unused"
                }
            ),
            ProvisionStage::Reconciled { line, landed } => format!(
                "{who} its interrupted download (line {line}) settled with the card: {}\n",
                if *landed {
                    "the profile had landed"
                } else {
                    "nothing had landed; downloading again"
                }
            ),
            ProvisionStage::Preview { profile } => format!(
                "{who} profile {} \"{}\" from {} ({})\n",
                profile.iccid,
                profile.name,
                profile.provider,
                profile.class.word()
            ),
            ProvisionStage::Loading { done, of } => {
                format!("{who} installing {} ({done}/{of})\n", bar(*done, *of))
            }
            ProvisionStage::Done {
                result,
                words,
                iccid,
                ms,
                ..
            } => {
                let (on, off, bell) = self.end_colour(*result);
                let mut t = format!("{who}\n   {on} {words} {off}{bell}");
                if let (ProvisionResult::Ok, Some(i)) = (result, iccid) {
                    t.push_str(&format!("  ICCID {i}"));
                }
                if let Some(ms) = ms {
                    t.push_str(&format!("  {ms} ms"));
                }
                t.push('\n');
                t
            }
        };
        self.write(&text)
    }

    fn summary(&mut self, t: &Tally) -> std::io::Result<()> {
        if self.json {
            return Ok(());
        }
        self.write(&format!(
            "\nbatch done: {} read, {} unique SIMs, {} with warnings\n",
            t.reads(),
            t.unique(),
            t.warned()
        ))
    }
}

impl Terminal {
    /// Loud colours for a card's end, when on a terminal: green for OK, red for an
    /// error or a pulled card, none for a skipped one.
    fn end_colour(&self, result: ProvisionResult) -> (&'static str, &'static str, &'static str) {
        if !self.ansi {
            return ("", "", "");
        }
        match result {
            ProvisionResult::Ok => ("\x1b[1;30;42m", "\x1b[0m", "\x07"),
            ProvisionResult::Failed | ProvisionResult::Pulled => {
                ("\x1b[1;37;41m", "\x1b[0m", "\x07")
            }
            ProvisionResult::Skipped => ("\x1b[1m", "\x1b[0m", ""),
        }
    }
}

/// A progress bar of `done` out of `of`, 20 cells wide.
fn bar(done: usize, of: usize) -> String {
    let cells = (done * 20).checked_div(of).unwrap_or(0).min(20);
    format!(
        "[{}{}] {:3}%",
        "#".repeat(cells),
        ".".repeat(20 - cells),
        (done * 100).checked_div(of).unwrap_or(0)
    )
}

/// The page's URL as a person types it (an unspecified address: this machine's).
fn page_url(addr: std::net::SocketAddr) -> String {
    match addr.ip().is_unspecified() {
        true => format!("http://localhost:{}/", addr.port()),
        false => format!("http://{addr}/"),
    }
}

/// A QR code of `payload` as Unicode half-blocks (two modules per character cell, so it
/// stays square in a terminal), with the quiet zone the standard asks for (ISO/IEC 18004
/// §9.1: four modules).
fn qr_text(payload: &str) -> String {
    use qrcode::render::unicode::Dense1x2;
    match qrcode::QrCode::new(payload.as_bytes()) {
        Ok(code) => {
            let art = code
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build();
            let mut out = String::new();
            for line in art.lines() {
                out.push_str("     ");
                out.push_str(line);
                out.push('\n');
            }
            out.push_str(&format!("     QR: {payload}\n"));
            out
        }
        // A payload too long for any QR version: show it as text only.
        Err(e) => format!("     (no QR code: {e}) {payload}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qr_of_an_eid_renders_as_half_blocks() {
        let text = qr_text("89049032123451234512345678901235");
        assert!(text.contains('▀') || text.contains('▄'), "{text}");
        assert!(text.ends_with("QR: 89049032123451234512345678901235\n"));
    }
}
