//! `simgate esim ...`: an eUICC's profiles in a reader, listed and changed (card::esim).

mod download;

use super::UsageError;
use crate::card::es10::{NotificationMeta, ProfileInfo};
use crate::card::esim::{self, Action, EsimError, Isdr, Listing, Outcome};
use crate::card::{euicc, CardTransport, Iccid};
use crate::config::Config;
use crate::reader;
use anyhow::Context as _;
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct EsimArgs {
    #[command(subcommand)]
    cmd: EsimCmd,
}

/// Where the eUICC is.
#[derive(Debug, Clone, Args)]
pub(super) struct Target {
    /// Exact reader name (see `simgate readers`); default: the one reader holding a card.
    #[arg(long, conflicts_with = "port")]
    pub(super) reader: Option<String>,
    /// A modem's AT port (/dev/ttyUSB2, or tcp://host:port): the eUICC in it, through
    /// +CCHO/+CGLA.
    #[arg(long)]
    pub(super) port: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Debug, Subcommand)]
enum EsimCmd {
    /// The eUICC's facts (EID, SGP.22 version, free memory, CI keys) and its profiles.
    List {
        #[command(flatten)]
        at: Target,
    },
    /// Enable a profile (the enabled one is disabled); verified by listing again.
    Enable {
        iccid: String,
        #[command(flatten)]
        at: Target,
    },
    /// Disable the enabled profile; verified by listing again.
    Disable {
        iccid: String,
        #[command(flatten)]
        at: Target,
    },
    /// Delete a disabled profile (asks first on a terminal); verified by listing again.
    Delete {
        iccid: String,
        /// Do not ask: for scripts.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        at: Target,
    },
    /// Set a profile's nickname (up to 64 bytes; empty clears it).
    Nickname {
        iccid: String,
        name: String,
        #[command(flatten)]
        at: Target,
    },
    /// The notifications pending on the eUICC (SGP.22 §3.5), for the SM-DP+.
    Notifications {
        /// Deliver each to the SM-DP+ it names (ES9+ HandleNotification, over TLS to a
        /// configured CI) and remove it from the card once delivered.
        #[arg(long)]
        send: bool,
        /// The GSMA CI certificates the SM-DP+ must chain to (default: [esim] ci_dir).
        #[arg(long, value_name = "DIR", requires = "send")]
        ci_dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        at: Target,
    },
    /// Download a profile from an SM-DP+ (SGP.22 §3.1.3): each step shown, the preview
    /// confirmed, the result verified by listing; on a failure the session is cancelled on
    /// both sides and the profiles listed again.
    #[command(after_help = "Examples:\n  \
        simgate esim download --reader 'ACS ACR39U 00 00' --activation-code 'LPA:1$smdp.example.com$04386-AGYFT-A74Y8-3F815' --enable\n  \
        simgate esim download --port /dev/ttyUSB2 --activation-code 'LPA:1$smdp.example.com$MID$$1' --confirmation-code 1234 --yes --json\n\n\
        The SM-DP+ must present a TLS certificate chaining to a CI in [esim] ci_dir (default /etc/simgate/ci).")]
    Download(download::DownloadArgs),
}

fn iccid_arg(text: &str) -> anyhow::Result<Iccid> {
    Iccid::from_digits(text).map_err(|e| UsageError(format!("ICCID \"{text}\": {e}")).into())
}

/// The reader to use: the one named, or the only one holding a card.
pub(super) fn pick_reader(name: Option<String>) -> anyhow::Result<std::ffi::CString> {
    let ctx = reader::establish()?;
    if let Some(n) = name {
        return Ok(reader::resolve(&ctx, &n)?);
    }
    let with_card: Vec<String> = reader::list(&ctx)?
        .into_iter()
        .filter(|r| r.card_present)
        .map(|r| r.name)
        .collect();
    match with_card.as_slice() {
        [] => anyhow::bail!("no card in any reader"),
        [one] => Ok(reader::resolve(&ctx, one)?),
        many => Err(UsageError(format!(
            "several readers hold a card ({}): pick one with --reader",
            many.join(", ")
        ))
        .into()),
    }
}

/// A profile already in the state an enable or a disable asks for: the command succeeds
/// with nothing done (exit 0), so a script can ask for a state without checking first.
#[derive(Debug, thiserror::Error)]
#[error("{0}: nothing to do")]
struct AlreadySo(String);

/// An eSIM error at the binary's edge: the profile already in the state asked for is
/// no failure ([`AlreadySo`], exit 0); the user's request (unknown ICCID, wrong state)
/// is a usage error, exit 2; the card failing is exit 1.
fn edge(e: EsimError) -> anyhow::Error {
    if e.already_so() {
        return AlreadySo(e.to_string()).into();
    }
    if e.is_request_error() {
        UsageError(e.to_string()).into()
    } else {
        anyhow::Error::new(e)
    }
}

/// Run `f` on the eUICC in the reader: the ISD-R selected on the basic channel, the card
/// reset afterwards when `f` says so (a profile switch).
async fn on_card<R: Send + 'static>(
    at: &Target,
    cfg: &Config,
    f: impl FnOnce(Isdr<&mut dyn CardTransport>) -> (Result<R, EsimError>, bool) + Send + 'static,
) -> anyhow::Result<(String, R)> {
    let name = at.reader.clone();
    // An operation is several exchanges: four times the card timeout of one read.
    let timeout = std::time::Duration::from_millis(cfg.readers.card_timeout_ms.saturating_mul(4));
    let (shown, result) = tokio::task::spawn_blocking(move || {
        let reader = pick_reader(name)?;
        let shown = reader.to_string_lossy().into_owned();
        let r = reader::with_card(&reader, timeout, move |t| {
            match Isdr::select_basic(t, euicc::shipped_aids()) {
                Ok(isdr) => f(isdr),
                Err(e) => (Err(e), false),
            }
        })?;
        Ok::<_, anyhow::Error>((shown, r))
    })
    .await
    .context("PC/SC worker thread failed")??;
    let value = result.map_err(|e| edge(e).context(format!("reader \"{shown}\"")))?;
    Ok((shown, value))
}

/// An eSIM command through a modem: identified, then the operation, the AT lines
/// counted.
async fn through_modem(cmd: EsimCmd, port: &str, cfg: &Config) -> anyhow::Result<ExitCode> {
    use crate::modem::esim as m;
    let profiles = super::modem::profiles_at(cfg, port)?;
    let mut conn = crate::at::connect(port, profiles.recognise("", "").timeouts.default())
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    let (profile, _) = crate::modem::identify::recognise(&mut conn, &profiles)
        .await
        .with_context(|| format!("{port}: the modem did not answer"))?;
    let started = std::time::Instant::now();
    let shown = format!("modem {port}");
    let esim_err = |e: m::ModemEsimError| match e {
        m::ModemEsimError::Esim(e) => edge(e).context(shown.clone()),
        e => anyhow::Error::new(e).context(shown.clone()),
    };
    let (json, cost) = match &cmd {
        EsimCmd::List { at } => {
            let (l, cost) = m::list(&mut conn, profile).await.map_err(esim_err)?;
            if !at.json {
                print_listing(&shown, &l);
            }
            (at.json.then(|| serde_json::to_value(&l)).transpose()?, cost)
        }
        EsimCmd::Notifications {
            at,
            send: true,
            ci_dir,
        } => {
            let mut connect = download::connector(cfg, ci_dir.as_deref())?;
            let (l, cost) = m::with_isdr(&mut conn, profile, move |mut i| {
                crate::rsp::download::deliver_pending(&mut i, &mut connect)
            })
            .await
            .map_err(esim_err)?;
            if !at.json {
                download::print_deliveries(&shown, &l);
            }
            (at.json.then(|| serde_json::to_value(&l)).transpose()?, cost)
        }
        EsimCmd::Notifications { at, .. } => {
            let (l, cost) = m::notifications(&mut conn, profile)
                .await
                .map_err(esim_err)?;
            if !at.json {
                print_notifications(&shown, &l);
            }
            (at.json.then(|| serde_json::to_value(&l)).transpose()?, cost)
        }
        other => {
            let (action, json) = match other {
                EsimCmd::Enable { iccid, at } => (
                    Action::Enable {
                        iccid: iccid_arg(iccid)?,
                        refresh: false,
                    },
                    at.json,
                ),
                EsimCmd::Disable { iccid, at } => (
                    Action::Disable {
                        iccid: iccid_arg(iccid)?,
                        refresh: false,
                    },
                    at.json,
                ),
                EsimCmd::Delete { iccid, yes, at } => {
                    let id = iccid_arg(iccid)?;
                    if !yes {
                        confirm_delete(&id)?;
                    }
                    (Action::Delete { iccid: id }, at.json)
                }
                EsimCmd::Nickname { iccid, name, at } => (
                    Action::Nickname {
                        iccid: iccid_arg(iccid)?,
                        nickname: name.clone(),
                    },
                    at.json,
                ),
                _ => unreachable!("list, notifications and download are handled above"),
            };
            let (o, cost) = m::apply(&mut conn, profile, &action)
                .await
                .map_err(esim_err)?;
            let iccid = action.iccid().as_str().to_string();
            if !json {
                print_outcome(&shown, verb(&action), &iccid, &o);
            }
            let v = json
                .then(|| {
                    serde_json::to_value(&o).map(|mut v| {
                        v["iccid"] = iccid.clone().into();
                        v["done"] = verb(&action).into();
                        v
                    })
                })
                .transpose()?;
            (v, cost)
        }
    };
    let ms = started.elapsed().as_millis() as u64;
    match json {
        Some(mut v) => {
            if v.is_object() {
                v["port"] = port.into();
                v["at_lines"] = cost.at_lines.into();
                v["ms"] = ms.into();
            }
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        None => outln!("({} AT lines, {ms} ms)", cost.at_lines),
    }
    Ok(ExitCode::SUCCESS)
}

fn verb(action: &Action) -> &'static str {
    match action {
        Action::Enable { .. } => "enabled",
        Action::Disable { .. } => "disabled",
        Action::Delete { .. } => "deleted",
        Action::Nickname { .. } => "nicknamed",
    }
}

impl EsimCmd {
    fn target(&self) -> &Target {
        match self {
            EsimCmd::List { at }
            | EsimCmd::Enable { at, .. }
            | EsimCmd::Disable { at, .. }
            | EsimCmd::Delete { at, .. }
            | EsimCmd::Nickname { at, .. }
            | EsimCmd::Notifications { at, .. } => at,
            EsimCmd::Download(d) => d.target(),
        }
    }
}

impl EsimArgs {
    pub async fn run(self, cfg: &Config) -> anyhow::Result<ExitCode> {
        let json = self.cmd.target().json;
        match self.run_command(cfg).await {
            Err(e) => match e.downcast_ref::<AlreadySo>() {
                Some(AlreadySo(what)) => {
                    match json {
                        true => outln!(
                            "{}",
                            serde_json::json!({ "done": "nothing", "reason": what })
                        ),
                        false => outln!("{}", super::report(&e)),
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => Err(e),
            },
            ok => ok,
        }
    }

    async fn run_command(self, cfg: &Config) -> anyhow::Result<ExitCode> {
        if let EsimCmd::Download(d) = self.cmd {
            return d.run(cfg).await;
        }
        if let Some(port) = self.cmd.target().port.clone() {
            return through_modem(self.cmd, &port, cfg).await;
        }
        match self.cmd {
            EsimCmd::List { at } => {
                let (reader, l) =
                    on_card(&at, cfg, |i| (esim::list(i).map(|(l, _)| l), false)).await?;
                if at.json {
                    let mut v = serde_json::to_value(&l)?;
                    v["reader"] = reader.into();
                    outln!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print_listing(&reader, &l);
                }
            }
            EsimCmd::Enable { iccid, at } => {
                let action = Action::Enable {
                    iccid: iccid_arg(&iccid)?,
                    refresh: false,
                };
                operate(&at, cfg, action).await?;
            }
            EsimCmd::Disable { iccid, at } => {
                let action = Action::Disable {
                    iccid: iccid_arg(&iccid)?,
                    refresh: false,
                };
                operate(&at, cfg, action).await?;
            }
            EsimCmd::Delete { iccid, yes, at } => {
                let id = iccid_arg(&iccid)?;
                if !yes {
                    confirm_delete(&id)?;
                }
                operate(&at, cfg, Action::Delete { iccid: id }).await?;
            }
            EsimCmd::Nickname { iccid, name, at } => {
                let action = Action::Nickname {
                    iccid: iccid_arg(&iccid)?,
                    nickname: name,
                };
                operate(&at, cfg, action).await?;
            }
            EsimCmd::Notifications {
                at,
                send: true,
                ci_dir,
            } => {
                let mut connect = download::connector(cfg, ci_dir.as_deref())?;
                let (reader, list) = on_card(&at, cfg, move |mut i| {
                    let r = crate::rsp::download::deliver_pending(&mut i, &mut connect);
                    let _ = i.finish();
                    (r, false)
                })
                .await?;
                if at.json {
                    outln!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    download::print_deliveries(&reader, &list);
                }
            }
            EsimCmd::Notifications { at, .. } => {
                let (reader, list) = on_card(&at, cfg, |i| {
                    (esim::notifications(i).map(|(l, _)| l), false)
                })
                .await?;
                if at.json {
                    outln!("{}", serde_json::to_string_pretty(&list)?);
                } else {
                    print_notifications(&reader, &list);
                }
            }
            EsimCmd::Download(_) => unreachable!("download is handled above"),
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Deleting cannot be undone: asked on a terminal, refused without `--yes` elsewhere.
fn confirm_delete(iccid: &Iccid) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(UsageError(format!(
            "deleting profile {} cannot be undone: confirm with --yes (no terminal to ask on)",
            iccid.as_str()
        ))
        .into());
    }
    eprint!(
        "Delete profile {} from the eUICC? This cannot be undone. [y/N] ",
        iccid.as_str()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        anyhow::bail!("not deleted")
    }
}

async fn operate(at: &Target, cfg: &Config, action: Action) -> anyhow::Result<()> {
    let verb = verb(&action);
    let iccid = action.iccid().as_str().to_string();
    // An enable or disable takes effect at the card's next reset (SGP.22 §3.2.1, without
    // refreshFlag): the reader resets it once the switch is verified.
    let switches = matches!(action, Action::Enable { .. } | Action::Disable { .. });
    let (reader, o) = on_card(at, cfg, move |i| {
        let r = esim::apply(i, &action).map(|(o, _)| o);
        let reset = switches && r.is_ok();
        (r, reset)
    })
    .await?;
    if at.json {
        let mut v = serde_json::to_value(&o)?;
        v["reader"] = reader.into();
        v["iccid"] = iccid.into();
        v["done"] = verb.into();
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_outcome(&reader, verb, &iccid, &o);
    }
    Ok(())
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

pub(super) fn print_profiles(list: &[ProfileInfo]) {
    if list.is_empty() {
        outln!("no profiles installed");
        return;
    }
    let w = |f: &dyn Fn(&ProfileInfo) -> usize, min: usize| {
        list.iter().map(f).max().unwrap_or(0).max(min)
    };
    let wp = w(&|p| or_dash(&p.provider).len(), 8);
    let wn = w(&|p| or_dash(&p.name).len(), 4);
    outln!(
        "{:20}  {:8}  {:12}  {:wp$}  {:wn$}  NICKNAME",
        "ICCID",
        "STATE",
        "CLASS",
        "PROVIDER",
        "NAME"
    );
    for p in list {
        outln!(
            "{:20}  {:8}  {:12}  {:wp$}  {:wn$}  {}",
            p.iccid,
            p.state.word(),
            p.class.map_or("-", |c| c.word()),
            or_dash(&p.provider),
            or_dash(&p.name),
            or_dash(&p.nickname)
        );
    }
}

fn print_listing(reader: &str, l: &Listing) {
    let check = match l.eid_check_ok {
        Some(true) => " (check digits ok)",
        Some(false) => " (CHECK DIGITS FAIL)",
        None => "",
    };
    outln!("where      {reader}");
    outln!("EID        {}{check}", or_dash(&l.eid));
    outln!("SGP.22     {}", or_dash(&l.info.sgp22_version));
    outln!(
        "free NVM   {}",
        l.info
            .free_nvm
            .map_or("-".to_string(), |n| format!("{n} bytes"))
    );
    let keys = if l.info.ci_pkids_verification.is_empty() {
        "-".to_string()
    } else {
        l.info.ci_pkids_verification.join(", ")
    };
    outln!("CI keys    {keys}");
    outln!("ISD-R      {}", l.isdr_aid);
    outln!();
    print_profiles(&l.profiles);
}

fn print_outcome(reader: &str, verb: &str, iccid: &str, o: &Outcome) {
    outln!(
        "{verb} {iccid} on the eUICC in \"{reader}\" (verified; {} APDUs)",
        o.apdus
    );
    if let (Some(b), Some(a)) = (&o.enabled_before, &o.enabled_after) {
        if b != a {
            outln!("the SIM's ICCID is now {a} (was {b})");
        }
    }
    outln!();
    print_profiles(&o.profiles);
    outln!(
        "\n{} notification(s) pending for the SM-DP+ (`simgate esim notifications`)",
        o.notifications.len()
    );
}

fn print_notifications(reader: &str, list: &[NotificationMeta]) {
    if list.is_empty() {
        outln!("no notifications pending on the eUICC in \"{reader}\"");
        return;
    }
    outln!("{:>5}  {:8}  {:20}  SM-DP+", "SEQ", "EVENT", "ICCID");
    for n in list {
        outln!(
            "{:>5}  {:8}  {:20}  {}",
            n.seq,
            n.event.word(),
            or_dash(&n.iccid),
            n.address
        );
    }
}
