//! `simgate emulate card|modem`: devices for tests and demos (feature `emulators`).

use super::modem::profiles;
use super::UsageError;
use crate::emu::modem::{self as emulator, Control, EmuSim, Options};
use crate::emu::transcript::Transcript;
use crate::emu::vcard::{self, CardImage, EuiccPki, VirtualCard};
use anyhow::bail;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum Emulate {
    /// A modem on a pty, behaving like a profile's modem (see devices/modems/README.md).
    Modem(EmulateModemArgs),
    /// A test SM-DP+: ES9+ (GSMA SGP.22) over HTTPS with real cryptography, profiles as
    /// data. Prints `smdp listening on https://ADDR` when ready.
    Smdp(EmulateSmdpArgs),
    /// A virtual card plugged into vpcd, answering from a card image.
    Card {
        /// Card image (TOML; see devices/cards/README.md).
        #[arg(long)]
        image: PathBuf,
        /// vpcd's address (the reader's TCP port).
        #[arg(long, default_value = "127.0.0.1:35963")]
        vpcd: String,
        /// Delay added to every APDU answer, in milliseconds (a real T=0 SIM costs
        /// several ms per APDU).
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// The eUICC's keys and certificates for the ES10b download (SGP.22 §3.1.3): a
        /// directory holding ci.pem (the trusted CI), eum.pem, euicc.pem and euicc.key
        /// (tests/rig/rsp-pki.sh makes one). Without it, download functions are refused.
        #[arg(long, value_name = "DIR")]
        pki: Option<PathBuf>,
        /// The eUICC's default SM-DP+ address (GetEuiccConfiguredAddresses), instead of
        /// the image's `default_smdp`: e.g. 127.0.0.1:PORT of a test SM-DP+.
        #[arg(long, value_name = "ADDRESS")]
        default_smdp: Option<String>,
    },
}

impl Emulate {
    pub(super) async fn run(self, cancel: CancellationToken) -> anyhow::Result<ExitCode> {
        match self {
            Emulate::Modem(args) => {
                args.run(cancel).await?;
                Ok(ExitCode::SUCCESS)
            }
            Emulate::Smdp(args) => {
                args.run(cancel).await?;
                Ok(ExitCode::SUCCESS)
            }
            Emulate::Card {
                image,
                vpcd,
                latency_ms,
                pki,
                default_smdp,
            } => {
                let latency = Duration::from_millis(latency_ms);
                let euicc = EuiccArgs { pki, default_smdp };
                emulate_card(image, euicc, vpcd, latency, cancel).await
            }
        }
    }
}

/// The PKI's eUICC certificate must be the card's: the SM-DP+ derives the BPP's keys with
/// the certificate's EID, the card with its own.
fn same_eid(pki: &EuiccPki, eid: &str) -> Result<(), UsageError> {
    match pki.eid() {
        Some(e) if e == eid => Ok(()),
        other => Err(UsageError(format!(
            "--pki: euicc.pem is for EID {}, the eUICC's is {eid} (make the PKI for this EID)",
            other.unwrap_or("(none: no subject serialNumber)")
        ))),
    }
}

/// The eUICC PKI of `--pki DIR`, its errors naming the file.
fn load_pki(dir: Option<&std::path::Path>) -> anyhow::Result<Option<std::sync::Arc<EuiccPki>>> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let pki = EuiccPki::load(dir).map_err(|e| UsageError(format!("--pki: {e}")))?;
    Ok(Some(std::sync::Arc::new(pki)))
}

/// The eUICC settings `emulate card` takes beside the image.
struct EuiccArgs {
    pki: Option<PathBuf>,
    default_smdp: Option<String>,
}

async fn emulate_card(
    image: PathBuf,
    euicc: EuiccArgs,
    vpcd: String,
    latency: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let image = CardImage::load(&image)?;
    let name = image.name.clone();
    let mut card = VirtualCard::new(image);
    let no_euicc = card.image().euicc.is_none();
    if let Some(pki) = load_pki(euicc.pki.as_deref())? {
        let eid = card.image().euicc.as_ref().map(|e| e.eid.clone());
        let Some(eid) = eid else {
            return Err(UsageError("--pki: the image has no [euicc]".into()).into());
        };
        same_eid(&pki, &eid)?;
        card = card.with_pki(pki);
    }
    if let Some(a) = &euicc.default_smdp {
        if no_euicc {
            return Err(UsageError("--default-smdp: the image has no [euicc]".into()).into());
        }
        card.set_default_smdp(a);
    }
    let session = vcard::vpcd::Session { latency };
    let ended = vcard::vpcd::serve(&vpcd, &mut card, &session, &cancel, || {
        // Tests and the demo wait for this line: from now on pcscd shows the card.
        outln!("card \"{name}\" inserted at vpcd {vpcd}");
    })
    .await?;
    match ended {
        vcard::vpcd::Ended::Removed => {
            outln!(
                "card removed ({} APDUs answered, {} resets)",
                card.apdus(),
                card.resets()
            );
            Ok(ExitCode::SUCCESS)
        }
        vcard::vpcd::Ended::Pulled => {
            outln!("card pulled mid-exchange ({} APDUs seen)", card.apdus());
            Ok(ExitCode::SUCCESS)
        }
        vcard::vpcd::Ended::ReaderGone => {
            bail!("vpcd at {vpcd} closed the connection (pcscd stopped?)")
        }
    }
}

/// A fault of the test SM-DP+.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SmdpFault {
    /// serverSignature1 corrupted: the eUICC's AuthenticateServer refuses the server.
    BadSignature,
    /// The MAC of the bound profile package's last 86 segment corrupted: the eUICC
    /// stops the install there.
    BadMac,
    /// getBoundProfilePackage is never answered: the server closes the connection.
    GoneAfterBppRequest,
    /// Every profile needs a confirmation code ("0000" for a profile without its own).
    RequireCc,
}

/// `simgate emulate smdp`: a test SM-DP+.
#[derive(Debug, clap::Args)]
pub struct EmulateSmdpArgs {
    /// Address to listen on (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The PKI directory made by tests/rig/rsp-pki.sh: ci.pem, dpauth.pem/.key,
    /// dppb.pem/.key, dptls.pem/.key (the TLS server certificate).
    #[arg(long)]
    pub pki: PathBuf,
    /// The profiles file (format: devices/smdp/profiles.toml).
    #[arg(long)]
    pub profiles: PathBuf,
    /// The SM-DP+ address LPAs must name in initiateAuthentication (default: the bound
    /// 127.0.0.1:PORT and localhost:PORT).
    #[arg(long)]
    pub address: Option<String>,
    /// Append what happens to this file, one JSON object a line: every ES9+ call with
    /// its status, bound packages, cancelled sessions, notifications received (seq,
    /// ICCID, verified), TLS handshakes that failed.
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// A fault to play. Repeatable. (An unknown matching ID is just data.)
    #[arg(long = "fault", value_enum)]
    pub faults: Vec<SmdpFault>,
}

impl EmulateSmdpArgs {
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let has = |f| self.faults.contains(&f);
        let opts = crate::emu::smdp::Options {
            listen: self.listen.clone(),
            pki: self.pki.clone(),
            profiles: self.profiles.clone(),
            address: self.address.clone(),
            journal: self.journal.clone(),
            faults: crate::emu::smdp::Faults {
                bad_signature: has(SmdpFault::BadSignature),
                bad_mac: has(SmdpFault::BadMac),
                gone_after_bpp_request: has(SmdpFault::GoneAfterBppRequest),
                require_cc: has(SmdpFault::RequireCc),
            },
        };
        crate::emu::smdp::run(opts, cancel, |addr| {
            // Tests and the demo wait for this line.
            outln!("smdp listening on https://{addr}");
        })
        .await?;
        Ok(())
    }
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
    /// Refuse concatenated commands (`AT+A;+B` answered ERROR), as some firmwares do.
    #[arg(long)]
    pub single_commands: bool,
    /// A command this firmware does not know, answered ERROR: as written (AT+QGDCNT?) or
    /// by name, every form (AT+CGLA). Repeatable.
    #[arg(long = "refuse")]
    pub refuse: Vec<String>,
    /// A SIM (an eSIM profile's ICCID) the network never registers, e.g. a profile
    /// enabled by a swap that must roll back. Repeatable.
    #[arg(long = "never-registers", value_name = "ICCID")]
    pub never_registers: Vec<String>,
    /// Append every command line received to this file, one a line, as it arrives: the
    /// modem's side of what happened (tests count the effects in it).
    #[arg(long)]
    pub journal: Option<PathBuf>,
    /// The starting SIM has PIN1 enabled with this PIN (PUK 12345678).
    #[arg(long)]
    pub pin: Option<String>,
    /// PIN attempts left on that SIM (default 3).
    #[arg(long, requires = "pin")]
    pub pin_attempts: Option<u8>,
    /// PUK attempts left on that SIM (default 10).
    #[arg(long, requires = "pin")]
    pub puk_attempts: Option<u8>,
    /// The SIM initialises this long after power-on, insertion or a restart, saying
    /// `SIM PIN` to +CPIN? meanwhile whatever its PIN (as some firmwares do).
    #[arg(long, default_value_t = 0)]
    pub sim_init_ms: u64,
    /// The eSIMs' eUICC keys and certificates for the ES10b download: ci.pem, eum.pem,
    /// euicc.pem, euicc.key (as `simgate emulate card --pki`).
    #[arg(long, value_name = "DIR")]
    pub pki: Option<PathBuf>,
    /// The eSIMs' eUICC settings from a card image (devices/cards/README.md: free_nvm,
    /// default_smdp, faults such as mute_after_segments); its EID and profiles are the
    /// eSIM's.
    #[arg(long, value_name = "FILE")]
    pub euicc_image: Option<PathBuf>,
    /// The starting SIM's IMSI (its first 5 or 6 digits choose the home operator whose
    /// USSD replies the network gives: devices/operators).
    #[arg(long)]
    pub imsi: Option<String>,
    /// Messages the SMS storage holds; more wait in the network until space is made.
    #[arg(long, default_value_t = 10)]
    pub sms_capacity: usize,
}

impl EmulateModemArgs {
    pub async fn run(self, cancel: CancellationToken) -> anyhow::Result<()> {
        let profiles = profiles(&self.profile_dir)?;
        let profile = profiles
            .get(&self.profile)
            .ok_or_else(|| {
                UsageError(format!(
                    "--profile: no profile {:?}; known: {}",
                    self.profile,
                    profiles.names().join(", ")
                ))
            })?
            .clone();
        let mut opts = Options::new(profile);
        opts.operators = profiles.operators().clone();
        opts.sms_capacity = self.sms_capacity;
        if let Some(t) = &self.transcript {
            opts.transcript = Some(Transcript::load(t)?);
        }
        opts.link = self.link.clone();
        opts.latency = Duration::from_millis(self.latency_ms);
        opts.single_commands = self.single_commands;
        opts.refuse = self.refuse.clone();
        opts.never_registers = self.never_registers.clone();
        opts.journal = self.journal.clone();
        opts.pki = load_pki(self.pki.as_deref())?;
        if let (Some(pki), Some(eid)) = (&opts.pki, EmuSim::esim().eid) {
            same_eid(pki, &eid)?;
        }
        if let Some(path) = &self.euicc_image {
            let image = CardImage::load(path)?;
            if image.euicc.is_none() {
                return Err(UsageError(format!(
                    "--euicc-image: {} has no [euicc]",
                    path.display()
                ))
                .into());
            }
            opts.euicc_image = Some(image);
        }
        if self.esim {
            opts.sim = Some(EmuSim::esim());
        }
        if self.no_sim {
            opts.sim = None;
            opts.session_up = false;
        }
        opts.sim_init = Duration::from_millis(self.sim_init_ms);
        if let (Some(imsi), Some(sim)) = (&self.imsi, opts.sim.as_mut()) {
            if !(6..=15).contains(&imsi.len()) || !imsi.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UsageError(format!("--imsi {imsi:?}: 6 to 15 digits")).into());
            }
            sim.imsi = imsi.clone();
        }
        if let (Some(code), Some(sim)) = (&self.pin, opts.sim.as_mut()) {
            let mut pin = crate::emu::pin::SimPin::new(code);
            pin.attempts = self.pin_attempts.unwrap_or(pin.attempts);
            pin.puk_attempts = self.puk_attempts.unwrap_or(pin.puk_attempts);
            pin.check().map_err(|e| UsageError(format!("--pin: {e}")))?;
            sim.pin = Some(pin);
            // A locked SIM has no data session until it is unlocked.
            opts.session_up = false;
        }
        let mut h = emulator::start(opts, cancel.clone())?;
        outln!("{}", h.path().display());
        eprintln!(
            "emulating {}; commands on stdin: remove | insert | swap | esim | slot N empty|first|other|noreg|noreg-first|esim | silent | talk | garbage | busy N | vanish SECS | reboot SECS | restart | connect | urc TEXT | traffic SENT_BPS RECEIVED_BPS | sms SENDER TEXT | count | sms-stored",
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
                    outln!("{}", p.display());
                },
                l = lines.recv(), if stdin_open => match l {
                    // How many command lines the modem was sent so far, on stdout: the
                    // cost of an operation is the difference of two counts.
                    Some(l) if l.trim() == "count" => outln!("commands {}", h.commands()),
                    // Messages in the SMS storage now, on stdout.
                    Some(l) if l.trim() == "sms-stored" => outln!("sms-stored {}", h.sms_stored()),
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
        "slot" => {
            // slot N SIM: N counted from 1 as printed on gateways.
            let mut w = words.next()?.split_whitespace();
            let n = w
                .next()?
                .parse::<u8>()
                .ok()?
                .checked_sub(1)
                .filter(|n| *n < 2)?;
            let sim = match w.next()? {
                "empty" => None,
                "first" => Some(EmuSim::physical()),
                "other" => Some(EmuSim::other()),
                "noreg" => Some(EmuSim::unregistered()),
                // The first SIM, but one that never registers.
                "noreg-first" => Some(EmuSim {
                    registers: false,
                    ..EmuSim::physical()
                }),
                "esim" => Some(EmuSim::esim()),
                _ => return None,
            };
            Control::Slot(n, sim)
        }
        "restart" => Control::Restart,
        // sms SENDER TEXT: `\n` in TEXT is a line break.
        "sms" => {
            let (sender, text) = words.next()?.trim().split_once(' ')?;
            Control::Sms {
                sender: sender.to_string(),
                text: text.replace("\\n", "\n"),
            }
        }
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
