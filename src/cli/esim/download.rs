//! `simgate esim download`: a profile from an SM-DP+ onto the eUICC in a reader or a
//! modem (rsp::download), each step shown as it happens, the result verified by listing.

use super::super::UsageError;
use crate::card::es10b::{DeviceInfo, Preview};
use crate::card::esim::{self, Action, Isdr};
use crate::card::{euicc, CardTransport, Iccid};
use crate::config::Config;
use crate::rsp::activation::{ActivationCode, Secret};
use crate::rsp::download::{self, Downloaded, Failure, Observer, Order, Step};
use crate::rsp::es9::{Https, Traffic};
use anyhow::Context as _;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub(super) struct DownloadArgs {
    /// The activation code, `LPA:1$<SM-DP+>$<matching ID>` (SGP.22 §4.1). Without it, the
    /// eUICC's default SM-DP+ (ES10a GetEuiccConfiguredAddresses) is asked by EID.
    #[arg(long, env = "SIMGATE_ACTIVATION_CODE", hide_env_values = true)]
    activation_code: Option<String>,
    /// The confirmation code, when the profile needs one (sent hashed, SGP.22 §3.1.3.3).
    #[arg(long, env = "SIMGATE_CONFIRMATION_CODE", hide_env_values = true)]
    confirmation_code: Option<String>,
    /// Enable the new profile once it is installed (the enabled one is disabled).
    #[arg(long)]
    enable: bool,
    /// A nickname for the new profile (up to 64 bytes).
    #[arg(long)]
    nickname: Option<String>,
    /// Download without asking to confirm the profile's preview: for scripts.
    #[arg(long)]
    yes: bool,
    /// The GSMA CI certificates the SM-DP+ must chain to (default: [esim] ci_dir).
    #[arg(long, value_name = "DIR")]
    ci_dir: Option<PathBuf>,
    /// The device's IMEI for the SM-DP+ (DeviceInfo; through a modem, its own is used).
    #[arg(long)]
    imei: Option<String>,
    #[command(flatten)]
    at: super::Target,
}

impl DownloadArgs {
    pub(super) fn target(&self) -> &super::Target {
        &self.at
    }
}

/// The CLI's observer: a line per step for a person, or one JSON object per line.
struct Shown {
    json: bool,
    yes: bool,
    tty: bool,
    last_pct: Option<usize>,
    /// Where an interrupted download is remembered, and what this one is.
    pending: Pending,
}

/// A download under way on one eUICC, written down before its package is loaded (the
/// step a kill can leave half done) and removed once it ended: the next download on the
/// same reader or port reconciles it with the card first (SGP.22 §3.1.3: a failure is
/// "state unknown" until the card says).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PendingRecord {
    place: String,
    smdp: String,
    transaction_id: String,
    iccid: String,
    started: u64,
}

/// The file of pending downloads (STATE_DIR/esim-downloads.json) and this download's
/// record as it fills in.
#[derive(Debug, Default)]
struct Pending {
    file: Option<PathBuf>,
    current: PendingRecord,
}

impl Pending {
    fn all(&self) -> Vec<PendingRecord> {
        self.file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn write(&self, all: &[PendingRecord]) {
        let Some(f) = &self.file else { return };
        let tmp = f.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(all)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, f));
        if let Err(e) = r {
            tracing::warn!(file = %f.display(), error = %e, "cannot record the download under way: an interruption will not be reconciled by itself");
        }
    }

    /// The record of an earlier download at `place`, taken off the file.
    fn take(&self, place: &str) -> Option<PendingRecord> {
        let mut all = self.all();
        let at = all.iter().position(|r| r.place == place)?;
        let r = all.remove(at);
        self.write(&all);
        Some(r)
    }

    fn begin(&self) {
        let mut all = self.all();
        all.retain(|r| r.place != self.current.place);
        all.push(self.current.clone());
        self.write(&all);
    }

    fn end(&self) {
        let _ = self.take(&self.current.place);
    }
}

impl Shown {
    fn line(&mut self, v: serde_json::Value) {
        outln!("{v}");
        let _ = std::io::stdout().flush();
    }
}

impl Observer for Shown {
    fn step(&mut self, step: &Step) {
        match step {
            Step::Challenge { smdp } => self.pending.current.smdp = smdp.clone(),
            Step::ServerAuthenticated { transaction_id } => {
                self.pending.current.transaction_id = transaction_id.clone()
            }
            Step::Preview { profile, .. } => self.pending.current.iccid = profile.iccid.clone(),
            Step::Package { .. } => {
                self.pending.current.started = crate::time::unix_now();
                self.pending.begin();
            }
            _ => {}
        }
        if self.json {
            self.line(serde_json::to_value(step).unwrap_or_default());
            return;
        }
        match step {
            Step::Challenge { smdp } => {
                outln!("eUICC challenge read; asking SM-DP+ {smdp}")
            }
            Step::ServerAuthenticated { transaction_id } => {
                outln!("SM-DP+ authenticated by the eUICC (transaction {transaction_id})")
            }
            Step::Preview {
                profile,
                confirmation_code_required,
            } => {
                print_preview(profile);
                if *confirmation_code_required {
                    outln!("  needs a confirmation code");
                }
            }
            Step::Confirmed => outln!("confirmed; binding the profile to this eUICC"),
            Step::Package { segments, bytes } => {
                outln!("profile package: {bytes} bytes in {segments} segments")
            }
            Step::Installing { done, of } => {
                let pct = done * 100 / (*of).max(1);
                if self.tty {
                    let bar = "#".repeat(pct / 5);
                    out!("\rinstalling [{bar:20}] {pct:3}% ({done}/{of})");
                    if done == of {
                        outln!();
                    }
                    let _ = std::io::stdout().flush();
                } else if self.last_pct.is_none_or(|p| pct / 25 > p / 25) || done == of {
                    outln!("installing: {done}/{of} segments");
                    self.last_pct = Some(pct);
                }
            }
            Step::Installed { iccid, aid } => outln!("installed {iccid} (ISD-P {aid})"),
            Step::NotificationSent { seq } => {
                outln!("installation notification {seq} delivered to the SM-DP+")
            }
            Step::NotificationPending { seq, why } => {
                outln!("installation notification {seq} stays on the eUICC: {why}")
            }
        }
    }

    fn confirm(&mut self, preview: &Preview) -> bool {
        if self.yes {
            return true;
        }
        eprint!(
            "Download profile {} ({} — {}) onto this eUICC? [y/N] ",
            preview.iccid, preview.provider, preview.name
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() {
            return false;
        }
        matches!(answer.trim(), "y" | "Y" | "yes")
    }
}

fn print_preview(p: &Preview) {
    outln!("profile offered:");
    outln!("  ICCID     {}", p.iccid);
    outln!("  name      {}", p.name);
    outln!("  provider  {}", p.provider);
    outln!("  class     {}", p.class.word());
}

/// What the download did, with its costs.
struct Done {
    result: Result<Downloaded, Box<Failure>>,
    /// After the download: the enable/nickname asked for, verified.
    after: Option<Result<esim::Outcome, esim::EsimError>>,
    apdus: u32,
    card_bytes: u64,
    traffic: Traffic,
}

impl DownloadArgs {
    pub(super) async fn run(self, cfg: &Config) -> anyhow::Result<ExitCode> {
        let code = self
            .activation_code
            .as_deref()
            .map(ActivationCode::parse)
            .transpose()
            .map_err(|e| UsageError(format!("--activation-code: {e}")))?;
        if let Some(c) = &code {
            if c.confirmation_required && self.confirmation_code.is_none() {
                return Err(UsageError(
                    "this activation code says the profile needs a confirmation code: give --confirmation-code (or SIMGATE_CONFIRMATION_CODE)".into(),
                )
                .into());
            }
        }
        if let Some(n) = &self.nickname {
            if n.len() > crate::card::es10::NICKNAME_MAX {
                return Err(UsageError("--nickname: longer than 64 bytes".into()).into());
            }
        }
        let tty = std::io::stdout().is_terminal();
        if !self.yes && !std::io::stdin().is_terminal() {
            return Err(UsageError(
                "a download asks to confirm the profile it is offered: confirm with --yes (no terminal to ask on)".into(),
            )
            .into());
        }
        let ci_dir = self
            .ci_dir
            .clone()
            .unwrap_or_else(|| cfg.esim.ci_dir.clone());
        let tls = crate::rsp::tls::client_config(&ci_dir).map_err(UsageError)?;
        let timeout = Duration::from_secs(cfg.esim.smdp_timeout_secs.max(1));
        let started = Instant::now();
        let job = Job {
            code,
            confirmation: self.confirmation_code.clone().map(Secret::new),
            enable: self.enable,
            nickname: self.nickname.clone(),
            tls,
            timeout,
            shown: Shown {
                json: self.at.json,
                yes: self.yes,
                tty: tty && !self.at.json,
                last_pct: None,
                pending: Pending {
                    file: Some(cfg.agent.state_dir.join("esim-downloads.json")),
                    current: PendingRecord::default(),
                },
            },
        };
        let (shown_at, done) = match self.at.port.clone() {
            Some(port) => {
                let imei = self.imei.clone();
                (
                    format!("modem {port}"),
                    through_modem(
                        job,
                        &port,
                        imei,
                        super::super::modem::profiles_at(cfg, &port)?,
                    )
                    .await?,
                )
            }
            None => {
                let device = DeviceInfo::from_imei(self.imei.as_deref());
                // The whole download inside one PC/SC transaction: a card that stops
                // answering is given four card time-outs, the SM-DP+ five calls' worth.
                let bound = timeout * 5 + Duration::from_millis(cfg.readers.card_timeout_ms) * 4;
                let (reader, d) = in_reader(job, self.at.reader.clone(), device, bound).await?;
                (format!("reader \"{reader}\""), d)
            }
        };
        report(&shown_at, done, self.at.json, started.elapsed())
    }
}

/// Everything the download needs, moved into the card's thread.
struct Job {
    code: Option<ActivationCode>,
    confirmation: Option<Secret>,
    enable: bool,
    nickname: Option<String>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    shown: Shown,
}

impl Job {
    /// The download, then what was asked after it, on one ISD-R at `place` (a reader's
    /// name, a modem's port); an earlier download interrupted there is reconciled first.
    fn on<T: CardTransport>(
        mut self,
        isdr: &mut Isdr<T>,
        place: &str,
        device: DeviceInfo,
        rt: tokio::runtime::Handle,
    ) -> anyhow::Result<Done> {
        self.shown.pending.current.place = place.to_string();
        let interrupted = self.shown.pending.take(place).and_then(|old| {
            let tid = hex::decode(&old.transaction_id).ok()?;
            let mut server = Https::new(&old.smdp, self.tls.clone(), rt.clone(), self.timeout).ok();
            let r = download::reconcile_interrupted(
                isdr,
                server.as_mut().map(|s| s as &mut dyn crate::rsp::es9::Es9),
                &tid,
                &old.iccid,
            );
            Some(r)
        });
        if let Some(i) = &interrupted {
            if self.shown.json {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                v["step"] = "interrupted_download".into();
                self.shown.line(v);
            } else {
                outln!(
                    "an earlier download here (transaction {}) was interrupted: profile {} {}",
                    i.transaction_id,
                    i.iccid,
                    if i.landed {
                        "landed: it is on the eUICC"
                    } else {
                        "is not on the eUICC"
                    }
                );
            }
        }
        let (smdp, matching) = match &self.code {
            Some(c) => (c.smdp.clone(), c.matching_id.clone()),
            None => match download::default_smdp(isdr)? {
                Some(a) => (a, Secret::new("")),
                None => {
                    return Err(UsageError(
                        "no --activation-code, and the eUICC has no default SM-DP+ address".into(),
                    )
                    .into())
                }
            },
        };
        let mut server = Https::new(&smdp, self.tls.clone(), rt, self.timeout)
            .map_err(|e| UsageError(format!("SM-DP+ address: {e}")))?;
        let order = Order {
            smdp,
            matching_id: matching,
            confirmation_code: self.confirmation.clone(),
            device,
            deliver_notification: true,
        };
        let result = download::download(isdr, &mut server, &order, &mut self.shown);
        self.shown.pending.end();
        let after = match &result {
            Ok(d) => self.after(isdr, &d.iccid),
            Err(_) => None,
        };
        Ok(Done {
            result,
            after,
            apdus: isdr.apdus(),
            card_bytes: isdr.bytes_sent(),
            traffic: server.traffic,
        })
    }

    fn after<T: CardTransport>(
        &self,
        isdr: &mut Isdr<T>,
        iccid: &str,
    ) -> Option<Result<esim::Outcome, esim::EsimError>> {
        let id = Iccid::from_digits(iccid).ok()?;
        let mut last = None;
        if let Some(n) = &self.nickname {
            let r = esim::apply_on(
                isdr,
                &Action::Nickname {
                    iccid: id.clone(),
                    nickname: n.clone(),
                },
            );
            let failed = r.is_err();
            last = Some(r);
            if failed {
                return last;
            }
        }
        if self.enable {
            last = Some(esim::apply_on(
                isdr,
                &Action::Enable {
                    iccid: id,
                    refresh: false,
                },
            ));
        }
        last
    }
}

async fn in_reader(
    job: Job,
    name: Option<String>,
    device: DeviceInfo,
    bound: Duration,
) -> anyhow::Result<(String, Done)> {
    let rt = tokio::runtime::Handle::current();
    let enable = job.enable;
    tokio::task::spawn_blocking(move || {
        let reader = super::pick_reader(name)?;
        let shown = reader.to_string_lossy().into_owned();
        let place = shown.clone();
        let r = crate::reader::with_card(&reader, bound, move |t| {
            let result = Isdr::select_basic(t, euicc::shipped_aids())
                .map_err(anyhow::Error::new)
                .and_then(|mut isdr| {
                    let done = job.on(&mut isdr, &place, device, rt);
                    // Put the basic channel back on the MF, whatever happened.
                    let _ = isdr.finish();
                    done
                });
            // A profile switch takes effect at the card's next reset (SGP.22 §3.2.1).
            let reset = enable
                && matches!(
                    &result,
                    Ok(Done {
                        after: Some(Ok(_)),
                        ..
                    })
                );
            (result, reset)
        })
        .with_context(|| format!("reader \"{shown}\""))?;
        Ok::<_, anyhow::Error>((shown, r?))
    })
    .await
    .context("PC/SC worker thread failed")?
}

async fn through_modem(
    job: Job,
    port: &str,
    imei: Option<String>,
    profiles: crate::modem::Profiles,
) -> anyhow::Result<Done> {
    use crate::modem::esim as m;
    let mut conn = crate::at::connect(port, profiles.recognise("", "").timeouts.default())
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    let (profile, ident) = crate::modem::identify::recognise(&mut conn, &profiles)
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    // recognise's answers: manufacturer, model, revision, serial (+CGSN: the IMEI).
    let imei = imei.or(ident[3].clone());
    let device = DeviceInfo::from_imei(imei.as_deref());
    let rt = tokio::runtime::Handle::current();
    let enable = job.enable;
    let max_apdu = profile.euicc.cgla_max_apdu;
    let place = port.to_string();
    let (done, _) = m::with_isdr(&mut conn, profile, move |mut isdr| {
        isdr.limit_apdu(max_apdu);
        let done = job.on(&mut isdr, &place, device, rt);
        // Through +CSIM the ISD-R is on the basic channel: back to the MF.
        let _ = isdr.finish();
        Ok(done)
    })
    .await
    .with_context(|| format!("modem {port}"))?;
    let done = done?;
    if enable && matches!(&done.after, Some(Ok(_))) {
        m::refresh(&mut conn, profile)
            .await
            .with_context(|| format!("modem {port}"))?;
    }
    Ok(done)
}

fn report(at: &str, done: Done, json: bool, took: Duration) -> anyhow::Result<ExitCode> {
    let ms = took.as_millis() as u64;
    let after_err = match &done.after {
        Some(Err(e)) => Some(e.to_string()),
        _ => None,
    };
    match done.result {
        Ok(d) => {
            let profiles = match &done.after {
                Some(Ok(o)) => o.profiles.clone(),
                _ => d.profiles.clone(),
            };
            if json {
                let v = serde_json::json!({
                    "result": "installed",
                    "where": at,
                    "iccid": d.iccid,
                    "profile": d.profile,
                    "transaction_id": d.transaction_id,
                    "aid": d.aid,
                    "reconciled_after": d.reconciled_after,
                    "notification_sent": d.notification_sent,
                    "enabled": matches!(&done.after, Some(Ok(o)) if o.enabled_after.as_deref() == Some(d.iccid.as_str())),
                    "after_error": after_err,
                    "profiles": profiles,
                    "segments": d.segments,
                    "bpp_bytes": d.bpp_bytes,
                    "apdus": done.apdus,
                    "bytes_to_card": done.card_bytes,
                    "https": done.traffic,
                    "ms": ms,
                });
                outln!("{v}");
            } else {
                if let Some(why) = &d.reconciled_after {
                    outln!("the exchange failed at its end ({why}), but listing again shows the profile: it is installed");
                }
                outln!(
                    "\nprofile {} is on the eUICC in {at} (verified by listing; {} APDUs, {} HTTPS round trips, {ms} ms)",
                    d.iccid, done.apdus, done.traffic.round_trips
                );
                if let Some(Ok(o)) = &done.after {
                    if let (Some(b), Some(a)) = (&o.enabled_before, &o.enabled_after) {
                        if b != a {
                            outln!("enabled: the SIM's ICCID is now {a} (was {b})");
                        }
                    } else if o.enabled_after.as_deref() == Some(d.iccid.as_str()) {
                        outln!("enabled: the SIM's ICCID is now {}", d.iccid);
                    }
                }
                outln!();
                super::print_profiles(&profiles);
            }
            if let Some(e) = after_err {
                eprintln!("simgate: the profile is installed, but: {e}");
                return Ok(ExitCode::from(1));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            let request = f.error.is_request_error();
            if json {
                let v = serde_json::json!({
                    "result": "failed",
                    "where": at,
                    "at": f.at,
                    "error": f.error.to_string(),
                    "transaction_id": f.transaction_id,
                    "profile": f.preview,
                    "reconciled": f.reconciled,
                    "apdus": done.apdus,
                    "https": done.traffic,
                    "ms": ms,
                });
                outln!("{v}");
            } else {
                let r = &f.reconciled;
                if let Some(c) = &r.card_cancel {
                    outln!("session on the eUICC: {c}");
                }
                if let Some(c) = &r.server_cancel {
                    outln!("session on the SM-DP+: {c}");
                }
                match &r.profiles {
                    Some(list) => {
                        outln!("profiles now (listed again):");
                        super::print_profiles(list);
                    }
                    None => outln!(
                        "the eUICC could not be listed again: its state is unknown until `simgate esim list` answers"
                    ),
                }
            }
            let msg = format!("{at}: {f}");
            if request {
                Err(UsageError(msg).into())
            } else {
                Err(anyhow::anyhow!(msg))
            }
        }
    }
}

/// A client maker for `esim notifications --send`: each SM-DP+ address reached over TLS
/// trusting the configured CIs only.
pub(super) fn connector(
    cfg: &Config,
    ci_dir: Option<&std::path::Path>,
) -> anyhow::Result<
    impl FnMut(&str) -> Result<Box<dyn crate::rsp::es9::Es9>, String> + Send + 'static,
> {
    let dir = ci_dir.map_or_else(|| cfg.esim.ci_dir.clone(), |d| d.to_path_buf());
    let tls = crate::rsp::tls::client_config(&dir).map_err(UsageError)?;
    let timeout = Duration::from_secs(cfg.esim.smdp_timeout_secs.max(1));
    let rt = tokio::runtime::Handle::current();
    Ok(move |address: &str| {
        Https::new(address, tls.clone(), rt.clone(), timeout)
            .map(|h| Box::new(h) as Box<dyn crate::rsp::es9::Es9>)
    })
}

pub(super) fn print_deliveries(at: &str, list: &[download::Delivery]) {
    if list.is_empty() {
        outln!("no notifications pending on the eUICC in {at}");
        return;
    }
    for d in list {
        outln!(
            "{:>5}  {:8}  {:20}  {}  {}",
            d.seq,
            d.event,
            d.iccid.as_deref().unwrap_or("-"),
            d.address,
            d.outcome
        );
    }
}
