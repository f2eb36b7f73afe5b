//! A modem on a pseudo-terminal, driven by a profile (and optionally a recorded
//! transcript). simgate opens the pty's slave path through tokio-serial exactly as it
//! opens a USB modem port. The emulator models what bites in the field: echo, URCs,
//! latency, counters that grow during a session, SIM removal and insertion, silence,
//! garbage, SIM busy, and the port vanishing and coming back (USB reset, reboot).

use super::transcript::Transcript;
use crate::at::parser::{param_list, Field};
use crate::emu::vcard::{CardImage, EuiccPki, VirtualCard};
use crate::modem::identify::ISD_R_AID;
use crate::modem::profile::{EuiccAccess, EuiccTransport, Profile};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_serial::{SerialPort, SerialStream};
use tokio_util::sync::CancellationToken;

/// A SIM in the emulated modem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmuSim {
    pub iccid: String,
    pub imsi: String,
    /// Some: an eUICC with this EID.
    pub eid: Option<String>,
    /// False: a SIM the network never accepts (no line, barred): +CEREG stays at 2
    /// (searching) and +CGACT=1 fails, as a failed swap's new SIM does.
    pub registers: bool,
    /// PIN1 and PUK1 (src/emu/pin.rs); `None`: no PIN enabled.
    pub pin: Option<crate::emu::pin::SimPin>,
}

impl EmuSim {
    /// A physical SIM; the ICCID is at-commander's Quectel sample (19 digits, Luhn-valid).
    pub fn physical() -> EmuSim {
        EmuSim {
            iccid: "8901260886258128535".into(),
            imsi: "20404001234567".into(),
            eid: None,
            registers: true,
            pin: None,
        }
    }

    /// A second physical SIM, for swaps.
    pub fn other() -> EmuSim {
        EmuSim {
            iccid: "89314404000000000019".into(),
            imsi: "204080000000019".into(),
            eid: None,
            registers: true,
            pin: None,
        }
    }

    /// The second SIM, but one the network never registers.
    pub fn unregistered() -> EmuSim {
        EmuSim {
            registers: false,
            ..EmuSim::other()
        }
    }

    /// An eSIM; the EID is a valid (mod 97) SGP.29-style number.
    pub fn esim() -> EmuSim {
        EmuSim {
            iccid: "89883030000000000429".into(),
            imsi: "262011234567890".into(),
            eid: Some("89049032123451234512345678901235".into()),
            registers: true,
            pin: None,
        }
    }
}

/// Faults and field events the tests (or a person, via stdin) inject.
#[derive(Debug)]
pub enum Control {
    RemoveSim,
    InsertSim(EmuSim),
    /// Stop answering (true) or answer again (false).
    Silent(bool),
    /// Send line noise now.
    Garbage,
    /// The next N +CPIN? are answered "SIM busy" (+CME ERROR: 14).
    SimBusy(u32),
    /// The port disappears for the given time, then comes back (a new pty, the link
    /// repointed): a USB reset.
    Vanish(Duration),
    /// The modem reboots while answering the next command: the port vanishes for the
    /// given time, counters and session reset.
    RebootOnNextCommand(Duration),
    /// Put this SIM (None: nothing) in slot N (counted from 0), whether or not it is the
    /// slot in use; the slot in use changes SIM as on a hot-plug.
    Slot(u8, Option<EmuSim>),
    /// Send an arbitrary URC.
    Urc(String),
    /// A modem on a UART restarts: the port stays, the state is lost, the boot URC is
    /// sent.
    Restart,
    /// The modem brings its data context up by itself (an autoconnect profile, or
    /// another program on its second port), if it has a SIM and its radio is on.
    Connect,
    /// Bytes per second sent and received while a session is up.
    Traffic {
        sent: u64,
        received: u64,
    },
    /// An SMS arrives from `sender` (src/emu/messaging.rs: stored, in parts if long).
    Sms {
        sender: String,
        text: String,
    },
}

/// Emulator settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: Profile,
    pub transcript: Option<Transcript>,
    /// A symlink kept pointing at the current pty (like /dev/serial/by-id).
    pub link: Option<PathBuf>,
    pub sim: Option<EmuSim>,
    /// The SIM in the second slot, for families with slots.
    pub second_sim: Option<EmuSim>,
    /// Delay before each answer.
    pub latency: Duration,
    pub session_up: bool,
    /// A firmware that refuses concatenated commands (V.250 §5.2.1): any line holding
    /// more than one command is answered ERROR.
    pub single_commands: bool,
    /// Commands this firmware does not know (`AT+QGDCNT?`): ERROR, also inside a
    /// compound line, which then stops there as on a real modem.
    pub refuse: Vec<String>,
    /// ICCIDs (an eSIM's profiles, say) the network never registers: after a profile
    /// switch to one of them, +CEREG stays searching, as for a profile without a line.
    pub never_registers: Vec<String>,
    /// A file every command line received is appended to (and flushed), one a line.
    pub journal: Option<PathBuf>,
    /// How long a SIM initialises after power-on, insertion or a restart: meanwhile
    /// +CPIN? says `SIM PIN` whatever the SIM's PIN (as some firmwares do) and PIN
    /// commands answer SIM busy (+CME ERROR: 14).
    pub sim_init: Duration,
    /// The eSIMs' eUICC keys and certificates (ES10b download, src/emu/vcard/download.rs);
    /// None: download functions refused as by an eUICC without keys.
    pub pki: Option<std::sync::Arc<EuiccPki>>,
    /// The eSIMs' eUICC as a card image (devices/cards/README.md: free memory, default
    /// SM-DP+, faults); its EID and profiles replaced by the eSIM's. None: a built-in one.
    pub euicc_image: Option<CardImage>,
    /// The operators whose USSD replies the network gives (by the SIM's IMSI).
    pub operators: crate::operators::Operators,
    /// Messages the SMS storage holds.
    pub sms_capacity: usize,
}

impl Options {
    pub fn new(profile: Profile) -> Options {
        Options {
            profile,
            transcript: None,
            link: None,
            sim: Some(EmuSim::physical()),
            second_sim: Some(EmuSim::other()),
            latency: Duration::ZERO,
            session_up: true,
            single_commands: false,
            refuse: Vec::new(),
            never_registers: Vec::new(),
            journal: None,
            sim_init: Duration::ZERO,
            pki: None,
            euicc_image: None,
            operators: crate::operators::Operators::default(),
            sms_capacity: 10,
        }
    }
}

/// The running emulator: its current port path and its control channel.
#[derive(Debug, Clone)]
pub struct Handle {
    control: mpsc::Sender<Control>,
    path: watch::Receiver<PathBuf>,
    commands: watch::Receiver<u64>,
    stored: watch::Receiver<usize>,
}

impl Handle {
    /// The pty slave path right now (changes after a vanish unless a link is used).
    pub fn path(&self) -> PathBuf {
        self.path.borrow().clone()
    }

    /// Command lines received so far.
    pub fn commands(&self) -> u64 {
        *self.commands.borrow()
    }

    /// Messages in the SMS storage now.
    pub fn sms_stored(&self) -> usize {
        *self.stored.borrow()
    }

    /// Wait until the port has come back under a new path.
    pub async fn changed_path(&mut self) -> Option<PathBuf> {
        self.path.changed().await.ok()?;
        Some(self.path())
    }

    pub async fn send(&self, c: Control) {
        // The emulator task ends only on cancellation; a send after that is moot.
        let _ = self.control.send(c).await;
    }
}

/// Start the emulator on a new pty. It runs until `cancel`.
pub fn start(opts: Options, cancel: CancellationToken) -> std::io::Result<Handle> {
    let (master, slave) = open_pty(opts.link.as_deref())?;
    let (ptx, prx) = watch::channel(path_of(&slave)?);
    let (ctx, crx) = mpsc::channel(16);
    let (ntx, nrx) = watch::channel(0);
    let (stx, srx) = watch::channel(0);
    let state = State::new(&opts);
    tokio::spawn(run(
        opts,
        state,
        master,
        slave,
        crx,
        ptx,
        (ntx, stx),
        cancel,
    ));
    Ok(Handle {
        control: ctx,
        path: prx,
        commands: nrx,
        stored: srx,
    })
}

fn path_of(slave: &SerialStream) -> std::io::Result<PathBuf> {
    slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| std::io::Error::other("pty without a slave name"))
}

fn open_pty(link: Option<&Path>) -> std::io::Result<(SerialStream, SerialStream)> {
    let (master, slave) = SerialStream::pair().map_err(std::io::Error::from)?;
    if let Some(link) = link {
        let target = path_of(&slave)?;
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(target, link).map_err(|e| {
            std::io::Error::new(e.kind(), format!("--link {}: {e}", link.display()))
        })?;
    }
    Ok((master, slave))
}

/// The modem's state between commands.
#[derive(Debug)]
struct State {
    echo: bool,
    sim: Option<EmuSim>,
    slots: [Option<EmuSim>; 2],
    slot: u8,
    radio_on: bool,
    session: bool,
    cops_format: u8,
    busy: u32,
    silent: bool,
    reboot_next: Option<Duration>,
    sent: u64,
    received: u64,
    rate: (u64, u64),
    counted_at: Instant,
    transcript: Option<Transcript>,
    single_commands: bool,
    refuse: Vec<String>,
    never_registers: Vec<String>,
    /// `Options::sim_init`, when the SIM in use is initialised, and whether that end is
    /// still to be announced.
    sim_init: Duration,
    sim_ready_at: Instant,
    sim_init_pending: bool,
    /// The eUICCs of the eSIMs seen, by EID: the virtual card engine (src/emu/vcard)
    /// answering +CCHO/+CGLA/+CCHC, its profiles changed as a real eUICC's are.
    euiccs: std::collections::HashMap<String, VirtualCard>,
    pki: Option<std::sync::Arc<EuiccPki>>,
    euicc_image: Option<CardImage>,
    /// USSD and SMS (src/emu/messaging.rs).
    msg: super::messaging::Messaging,
    /// URCs to send after the final result of the line being answered.
    after: Vec<String>,
    /// `+CMGS=<length>` prompted: the PDU of that many octets is awaited.
    data_entry: Option<usize>,
}

/// The second profile every emulated eUICC holds (disabled), Luhn-valid, made up.
pub const EMU_SECOND_PROFILE: &str = "89883030000000000437";

/// A virtual eUICC for an emulated eSIM: its ICCID the enabled profile, a second one
/// disabled (devices/cards/README.md's image format), on the given image's settings when
/// there is one. The modem does the T=0 GET RESPONSE itself, as the families' +CGLA
/// answers show (+CSIM passes 61xx through: `VirtualCard::process_t0`).
fn euicc_for(sim: &EmuSim, st: &State) -> Option<VirtualCard> {
    let eid = sim.eid.as_ref()?;
    let text = format!(
        "name = \"emulated eUICC\"\nkind = \"uicc\"\natr = \"3B00\"\nt0_procedures = false\n\
         [euicc]\nisdr_aid = \"{ISD_R_AID}\"\neid = \"{eid}\"\n\
         [[euicc.profiles]]\niccid = \"{}\"\nenabled = true\nname = \"Emulated Operator\"\nprovider = \"Emu\"\n\
         [[euicc.profiles]]\niccid = \"{EMU_SECOND_PROFILE}\"\nenabled = false\nname = \"Travel\"\nprovider = \"Roamer\"\n",
        sim.iccid
    );
    let mut image = CardImage::parse(&text).ok()?;
    if let Some(given) = &st.euicc_image {
        let profiles = image.euicc.take()?.profiles;
        let mut e = given.euicc.clone()?;
        e.eid = eid.clone();
        e.isdr_aid = ISD_R_AID.into();
        e.profiles = profiles;
        image.euicc = Some(e);
        image.fault = given.fault.clone();
    }
    let card = VirtualCard::new(image);
    Some(match &st.pki {
        Some(pki) => card.with_pki(pki.clone()),
        None => card,
    })
}

fn s_eid(sim: &Option<EmuSim>) -> Option<String> {
    sim.as_ref().and_then(|s| s.eid.clone())
}

impl State {
    /// The eUICC of this eSIM, made when first reached (None: a physical SIM).
    fn euicc(&mut self, sim: &EmuSim) -> Option<&mut VirtualCard> {
        let eid = sim.eid.clone()?;
        if !self.euiccs.contains_key(&eid) {
            let card = euicc_for(sim, self)?;
            self.euiccs.insert(eid.clone(), card);
        }
        self.euiccs.get_mut(&eid)
    }

    /// The SIM in use takes its eUICC's enabled profile's ICCID.
    fn follow_enabled_profile(&mut self) {
        let Some(eid) = s_eid(&self.sim) else {
            return;
        };
        let Some(card) = self.euiccs.get(&eid) else {
            return;
        };
        let Some(iccid) = card
            .profiles()
            .iter()
            .find(|p| p.enabled)
            .map(|p| p.iccid.clone())
        else {
            return;
        };
        for s in self.sim.iter_mut().chain(self.slots.iter_mut().flatten()) {
            if s.eid.as_deref() == Some(eid.as_str()) {
                s.iccid = iccid.clone();
            }
        }
    }

    fn new(opts: &Options) -> State {
        State {
            single_commands: opts.single_commands,
            refuse: opts.refuse.iter().map(|c| c.to_ascii_uppercase()).collect(),
            never_registers: opts.never_registers.clone(),
            echo: true, // V.250 §6.2.4: E1 is the default
            sim: opts.sim.clone(),
            slots: [opts.sim.clone(), opts.second_sim.clone()],
            slot: 0,
            radio_on: true,
            session: opts.session_up && opts.sim.is_some(),
            cops_format: 0,
            busy: 0,
            silent: false,
            reboot_next: None,
            sent: 0,
            received: 0,
            rate: (1_000, 10_000),
            counted_at: Instant::now(),
            transcript: opts.transcript.clone(),
            euiccs: Default::default(),
            sim_init: opts.sim_init,
            sim_ready_at: Instant::now() + opts.sim_init,
            sim_init_pending: !opts.sim_init.is_zero(),
            pki: opts.pki.clone(),
            euicc_image: opts.euicc_image.clone(),
            msg: super::messaging::Messaging::new(opts.operators.clone(), opts.sms_capacity),
            after: Vec::new(),
            data_entry: None,
        }
    }

    /// A SIM (re)powered: it initialises again and forgets its PIN was verified.
    fn sim_powered(&mut self) {
        self.sim_ready_at = Instant::now() + self.sim_init;
        self.sim_init_pending = !self.sim_init.is_zero();
        for s in self.sim.iter_mut().chain(self.slots.iter_mut().flatten()) {
            if let Some(p) = s.pin.as_mut() {
                p.power_cycle();
            }
        }
    }

    fn initialising(&self) -> bool {
        self.sim.is_some() && Instant::now() < self.sim_ready_at
    }

    /// The SIM in use waits for its PIN or PUK: no IMSI, no network (TS 27.007 §8.3).
    fn sim_locked(&self) -> bool {
        self.initialising()
            || self
                .sim
                .as_ref()
                .and_then(|s| s.pin.as_ref())
                .is_some_and(|p| p.need() != crate::emu::pin::Need::Nothing)
    }

    /// A PIN operation on the SIM in use, kept in its slot too; AT's words for the
    /// outcome (TS 27.007 §9.2.1: 3 operation not allowed, 12 SIM PUK required, 13 SIM
    /// failure, 14 SIM busy, 16 incorrect password).
    fn pin_op(
        &mut self,
        op: impl FnOnce(&mut crate::emu::pin::SimPin) -> Result<(), crate::emu::pin::PinError>,
    ) -> Result<Vec<String>, String> {
        use crate::emu::pin::PinError;
        if self.initialising() {
            return Err("+CME ERROR: 14".into());
        }
        let sim = self.sim.as_mut().ok_or_else(|| NO_SIM.to_string())?;
        let Some(pin) = sim.pin.as_mut() else {
            return Err("+CME ERROR: 3".into());
        };
        let r = op(pin);
        let dead = pin.puk_attempts == 0;
        let copy = sim.clone();
        self.slots[usize::from(self.slot)] = Some(copy);
        match r {
            Ok(()) => Ok(vec![]),
            Err(PinError::Wrong(_)) => Err("+CME ERROR: 16".into()),
            Err(PinError::Blocked) if dead => Err("+CME ERROR: 13".into()),
            Err(PinError::Blocked) => Err("+CME ERROR: 12".into()),
            Err(PinError::NotAllowed) => Err("+CME ERROR: 3".into()),
        }
    }

    fn registered(&self) -> bool {
        self.radio_on
            && !self.sim_locked()
            && self
                .sim
                .as_ref()
                .is_some_and(|s| s.registers && !self.never_registers.contains(&s.iccid))
    }

    /// Counters grow with time while the session is up.
    fn tick(&mut self) {
        let dt = self.counted_at.elapsed();
        self.counted_at = Instant::now();
        if self.session {
            let ms = dt.as_millis() as u64;
            self.sent += self.rate.0 * ms / 1000;
            self.received += self.rate.1 * ms / 1000;
        }
    }

    /// After a reboot: RAM state is gone.
    fn reboot(&mut self) {
        self.sim_powered();
        self.echo = true;
        self.sent = 0;
        self.received = 0;
        self.session = false;
        self.busy = 0;
        self.counted_at = Instant::now();
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    opts: Options,
    mut st: State,
    mut master: SerialStream,
    mut slave: SerialStream,
    mut control: mpsc::Receiver<Control>,
    path: watch::Sender<PathBuf>,
    (counter, stored): (watch::Sender<u64>, watch::Sender<usize>),
    cancel: CancellationToken,
) {
    let mut line = Vec::new();
    let mut buf = [0u8; 512];
    let mut journal = opts.journal.as_deref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(
                |e| tracing::error!(journal = %p.display(), error = %e, "cannot open the journal"),
            )
            .ok()
    });
    loop {
        // The SIM's initialisation ends: say so as a modem does (TS 27.007 §8.3 +CPIN
        // unsolicited, as Quectel's "+CPIN: READY" after power-on).
        let init_ends = st.sim_init_pending.then_some(st.sim_ready_at);
        let vanish = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(init_ends.unwrap_or_else(Instant::now).into()), if init_ends.is_some() => {
                st.sim_init_pending = false;
                if st.sim.is_some() {
                    let code = if st.sim_locked() { "SIM PIN" } else { "READY" };
                    let _ = master.write_all(format!("\r\n+CPIN: {code}\r\n").as_bytes()).await;
                }
                None
            }
            c = control.recv() => match c {
                None => return,
                Some(c) => {
                    let v = apply(&opts.profile, &mut st, c, &mut master).await;
                    stored.send_replace(st.msg.stored());
                    v
                }
            },
            n = master.read(&mut buf) => {
                let Ok(n) = n else { return };
                let mut vanish = None;
                for &b in &buf[..n] {
                    if let Some(len) = st.data_entry {
                        // TS 27.005 §3.5.1: Ctrl-Z sends the PDU, ESC cancels it.
                        match b {
                            0x1A | 0x1B => {
                                st.data_entry = None;
                                let pdu = String::from_utf8_lossy(&line).trim().to_string();
                                line.clear();
                                if let Some(j) = journal.as_mut() {
                                    use std::io::Write;
                                    let _ = writeln!(j, "PDU {pdu}");
                                }
                                let out = match (b, st.msg.submit(len, &pdu)) {
                                    (0x1B, _) => "\r\nOK\r\n".to_string(),
                                    (_, Ok(lines)) => lines
                                        .iter()
                                        .map(|l| format!("\r\n{l}\r\n"))
                                        .chain(["\r\nOK\r\n".to_string()])
                                        .collect(),
                                    (_, Err(e)) => format!("\r\n{e}\r\n"),
                                };
                                if master.write_all(out.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            b'\r' | b'\n' => {}
                            _ => line.push(b),
                        }
                        continue;
                    }
                    match b {
                        // S3 ends the command line (V.250 §6.2.1).
                        b'\r' => {
                            let text = String::from_utf8_lossy(&line).trim().to_string();
                            line.clear();
                            if text.is_empty() || st.silent {
                                continue;
                            }
                            counter.send_modify(|c| *c += 1);
                            if let Some(j) = journal.as_mut() {
                                use std::io::Write;
                                // A line in a local file per command: a test tool.
                                let _ = writeln!(j, "{text}");
                            }
                            if let Some(down) = st.reboot_next.take() {
                                vanish = Some(down);
                                break;
                            }
                            if st.echo {
                                let _ = master.write_all(format!("{text}\r").as_bytes()).await;
                            }
                            if !opts.latency.is_zero() {
                                tokio::time::sleep(opts.latency).await;
                            }
                            let out = answer(&opts.profile, &mut st, &text);
                            stored.send_replace(st.msg.stored());
                            if master.write_all(out.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        b'\n' => {}
                        _ => line.push(b),
                    }
                }
                vanish.map(|d| (d, true))
            }
        };
        if let Some((down, reboot)) = vanish {
            // The stable name goes with the device, as udev removes a /dev/serial/by-id
            // link: left pointing at the freed pty, it would lead whoever opens it to
            // the next pty given that number (another modem).
            if let Some(link) = opts.link.as_deref() {
                let _ = std::fs::remove_file(link);
            }
            drop(master);
            drop(slave);
            if reboot {
                st.reboot();
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(down) => {}
            }
            let Ok((m, s)) = open_pty(opts.link.as_deref()) else {
                return;
            };
            master = m;
            slave = s;
            line.clear();
            if let Ok(p) = path_of(&slave) {
                let _ = path.send(p);
            }
            if let Some(boot) = opts.profile.boot_urcs.first().filter(|_| reboot) {
                let _ = master.write_all(format!("\r\n{boot}\r\n").as_bytes()).await;
            }
        }
    }
}

/// Apply a control event; returns a vanish request (downtime, reboot?).
async fn apply(
    profile: &Profile,
    st: &mut State,
    c: Control,
    master: &mut SerialStream,
) -> Option<(Duration, bool)> {
    let urc = |text: String| format!("\r\n{text}\r\n");
    let mut out = String::new();
    match c {
        Control::RemoveSim => {
            st.sim = None;
            st.slots[usize::from(st.slot)] = None;
            st.session = false;
            if let Some(h) = &profile.hotplug {
                out = urc(hotplug_urc(h, true));
            }
        }
        Control::InsertSim(sim) => {
            st.slots[usize::from(st.slot)] = Some(sim.clone());
            st.sim = Some(sim);
            st.sim_powered();
            // A new SIM means a new attach: the old data context is gone.
            st.session = false;
            if let Some(h) = &profile.hotplug {
                out = urc(hotplug_urc(h, false));
            }
        }
        Control::Slot(n, sim) => {
            let n = usize::from(n).min(st.slots.len() - 1);
            st.slots[n] = sim.clone();
            if n == usize::from(st.slot) {
                let removed = sim.is_none();
                st.sim = sim;
                st.session = false;
                if let Some(h) = &profile.hotplug {
                    out = urc(hotplug_urc(h, removed));
                }
            }
        }
        Control::Silent(s) => st.silent = s,
        Control::Garbage => {
            let _ = master.write_all(b"\x00\xff\xfe\x13garbage\xff\r\n").await;
        }
        Control::SimBusy(n) => st.busy = n,
        Control::Vanish(d) => return Some((d, false)),
        Control::RebootOnNextCommand(d) => st.reboot_next = Some(d),
        Control::Urc(text) => out = urc(text),
        Control::Restart => {
            st.reboot();
            if let Some(boot) = profile.boot_urcs.first() {
                out = urc(boot.clone());
            }
        }
        Control::Traffic { sent, received } => {
            st.tick();
            st.rate = (sent, received);
        }
        Control::Connect => {
            st.tick();
            st.session = st.registered();
        }
        Control::Sms { sender, text } => {
            let now = crate::time::unix_now() as i64;
            for u in st.msg.receive(&sender, &text, now) {
                out.push_str(&urc(u));
            }
        }
    }
    if !out.is_empty() {
        let _ = master.write_all(out.as_bytes()).await;
    }
    None
}

/// The hot-plug URC as the profile describes it.
fn hotplug_urc(h: &crate::modem::profile::Hotplug, removed: bool) -> String {
    let value = if removed {
        // Profile checks guarantee at least one "removed" value.
        h.removed[0].clone()
    } else {
        h.inserted.clone()
    };
    let mut fields = vec!["1".to_string(); h.field + 1];
    fields[h.field] = value;
    format!("{} {}", h.urc, fields.join(","))
}

/// Split a command line into its commands: basic ones (E0, V1) and extended ones
/// separated by ';' outside quotes (V.250 §5.2.1).
fn split_line(body: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = body.chars().peekable();
    // Leading basic commands: a letter (or &letter) and digits, until an extended one.
    while let Some(&c) = chars.peek() {
        if c.is_ascii_alphabetic() || c == '&' {
            let mut cmd = String::new();
            cmd.push(c);
            chars.next();
            if c == '&' {
                if let Some(l) = chars.next() {
                    cmd.push(l);
                }
            }
            while let Some(&d) = chars.peek() {
                if d.is_ascii_digit() {
                    cmd.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            parts.push(cmd.to_ascii_uppercase());
        } else {
            break;
        }
    }
    for c in chars {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => {
                if !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        parts.push(cur);
    }
    parts
}

/// The full answer to one command line, V.250 verbose framing.
fn answer(profile: &Profile, st: &mut State, text: &str) -> String {
    if let Some(t) = st.transcript.as_mut() {
        if let Some(reply) = t.take_framed(text) {
            return reply;
        }
    }
    let frame = |l: &str| format!("\r\n{l}\r\n");
    let Some(body) = text
        .get(2..)
        .filter(|_| text.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")))
    else {
        return frame("ERROR");
    };
    let mut out = String::new();
    let cmds = split_line(body);
    if st.single_commands && cmds.len() > 1 {
        return frame("ERROR");
    }
    for cmd in cmds {
        let full = format!("AT{}", cmd.to_ascii_uppercase());
        // A refused command as written (`AT+QGDCNT?`), or by name (`AT+CGLA`: every form).
        let refused = st.refuse.iter().any(|r| {
            full == *r
                || full
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with(['=', '?']))
        });
        if refused {
            out.push_str(&frame("ERROR"));
            return out;
        }
        let recorded = st
            .transcript
            .as_mut()
            .and_then(|t| t.take(&format!("AT{cmd}")))
            .map(recorded_result);
        match recorded.unwrap_or_else(|| command(profile, st, &cmd)) {
            Ok(lines) => {
                for l in lines {
                    out.push_str(&frame(&l));
                }
            }
            Err(e) => {
                out.push_str(&frame(&e));
                st.after.clear();
                return out;
            }
        }
        if st.data_entry.is_some() {
            // TS 27.005 §3.5.1: the prompt, and the PDU is awaited; no final yet.
            out.push_str("\r\n> ");
            return out;
        }
    }
    out.push_str(&frame("OK"));
    for u in st.after.drain(..) {
        out.push_str(&frame(&u));
    }
    out
}

/// A recorded reply as one command's result: its last non-blank line is the final.
fn recorded_result(lines: Vec<String>) -> Result<Vec<String>, String> {
    let mut info: Vec<String> = lines.into_iter().filter(|l| !l.is_empty()).collect();
    match info.pop() {
        Some(f) if f == "OK" => Ok(info),
        Some(f) => Err(f),
        None => Ok(info),
    }
}

/// PIN1 and PUK1 attempts left (a SIM without PIN: fresh counters).
fn counters(s: &EmuSim) -> (u8, u8) {
    s.pin.as_ref().map_or(
        (crate::emu::pin::PIN_TRIES, crate::emu::pin::PUK_TRIES),
        |p| (p.attempts, p.puk_attempts),
    )
}

/// TS 27.007 §9.2.1: SIM not inserted.
const NO_SIM: &str = "+CME ERROR: 10";
/// TS 27.007 §9.2.1: SIM failure.
const SIM_FAILURE: &str = "+CME ERROR: 13";

/// Nibble-swapped BCD, F-padded, as stored in EF.ICCID (TS 102 221 §13.2).
fn ef_iccid(digits: &str) -> String {
    let mut d: Vec<char> = digits.chars().collect();
    // Pad to the file's 20 nibbles, and always to an even count so every chunk below
    // has two nibbles.
    while d.len() < 20 || d.len() % 2 == 1 {
        d.push('F');
    }
    d.chunks(2).map(|p| format!("{}{}", p[1], p[0])).collect()
}

fn command(profile: &Profile, st: &mut State, cmd: &str) -> Result<Vec<String>, String> {
    let upper = cmd.to_ascii_uppercase();
    let sim = st.sim.clone();
    let need_sim = || sim.clone().ok_or_else(|| NO_SIM.to_string());
    let em = &profile.emulator;
    let is = |profile_cmd: Option<&str>| {
        profile_cmd.is_some_and(|c| c.get(2..).is_some_and(|b| b.eq_ignore_ascii_case(cmd)))
    };
    if is(profile.iccid.command.as_deref()) {
        let s = need_sim()?;
        let digits = if s.iccid.len() % 2 == 1 {
            format!("{}F", s.iccid)
        } else {
            s.iccid
        };
        return Ok(vec![match &profile.iccid.prefix {
            Some(p) => format!("{p} {digits}"),
            None => digits,
        }]);
    }
    if let Some(c) = &profile.pin {
        if is(Some(&c.command)) {
            let s = need_sim()?;
            if st.initialising() {
                return Err("+CME ERROR: 14".into());
            }
            let (pin, puk) = counters(&s);
            let (Some(pf), Some(uf)) = (c.pin_field, c.puk_field) else {
                return Ok(vec![format!("{} SIM PIN,{pin},3", c.prefix)]);
            };
            // The fields the family fills we do not model: the facility name first
            // (Quectel's "SC"), zero elsewhere.
            let mut f = vec!["0".to_string(); pf.max(uf) + 1];
            f[0] = "\"SC\"".into();
            f[pf] = pin.to_string();
            f[uf] = puk.to_string();
            return Ok(vec![format!("{} {}", c.prefix, f.join(","))]);
        }
    }
    if let Some(c) = &profile.counters {
        if is(Some(&c.command)) {
            st.tick();
            let n = c.sent.max(c.received) + 1;
            let mut f = vec!["0".to_string(); n];
            // n ≥ 1; field 0 is the context id in the counter replies we know.
            f[0] = "1".into();
            f[c.sent] = st.sent.to_string();
            f[c.received] = st.received.to_string();
            return Ok(vec![format!("{} {}", c.prefix, f.join(","))]);
        }
    }
    if let Some(s) = &profile.slots {
        if is(Some(&s.query)) {
            return Ok(vec![format!("{} {}", s.prefix, st.slot + s.first)]);
        }
        let stem = s.select.split("{slot}").next().unwrap_or_default();
        let stem_body = stem.get(2..).unwrap_or_default().to_ascii_uppercase();
        if let Some(n) = upper.strip_prefix(&stem_body).filter(|n| !n.is_empty()) {
            let slot = n.parse::<u8>().map_err(|_| "ERROR".to_string())?;
            let idx = slot
                .checked_sub(s.first)
                .filter(|i| *i < 2)
                .ok_or("+CME ERROR: 3")?;
            st.slot = idx;
            st.sim = st.slots[usize::from(idx)].clone();
            st.session = false;
            return Ok(vec![]);
        }
    }
    if profile
        .init
        .commands
        .iter()
        .any(|c| c.get(2..).is_some_and(|b| b.eq_ignore_ascii_case(cmd)))
    {
        return Ok(vec![]);
    }
    let (name, arg) = match upper.find(['=', '?']) {
        Some(i) => (&upper[..i], &cmd[i..]),
        None => (upper.as_str(), ""),
    };
    match (name, arg) {
        ("E0", _) => st.echo = false,
        ("E1", _) => st.echo = true,
        ("Q0" | "V1" | "V" | "Z" | "&F", _) => {}
        ("I" | "I0", _) => {
            return Ok(vec![
                em.manufacturer.clone(),
                em.model.clone(),
                format!("Revision: {}", em.revision),
            ])
        }
        ("+CMEE", _) | ("+CREG" | "+CGREG" | "+CEREG", "=0" | "=1" | "=2") => {}
        ("+CGMI", "") => return Ok(vec![em.manufacturer.clone()]),
        ("+CGMM", "") => return Ok(vec![em.model.clone()]),
        ("+CGMR", "") => return Ok(vec![em.revision.clone()]),
        ("+CGSN", "") => return Ok(vec!["867698041234567".into()]),
        ("+CPIN", "?") => {
            let s = need_sim()?;
            if st.busy > 0 {
                st.busy -= 1;
                return Err("+CME ERROR: 14".into());
            }
            use crate::emu::pin::Need;
            let need = s.pin.as_ref().map_or(Need::Nothing, |p| p.need());
            let code = match need {
                _ if st.initialising() => "SIM PIN",
                Need::Nothing => "READY",
                Need::Pin => "SIM PIN",
                Need::Puk | Need::Dead => "SIM PUK",
            };
            return Ok(vec![format!("+CPIN: {code}")]);
        }
        // TS 27.007 §8.3: +CPIN=<pin> or +CPIN=<puk>,<newpin>, by what the SIM waits for.
        ("+CPIN", a) if a.starts_with('=') => {
            let p: Vec<String> = param_list(&a[1..])
                .iter()
                .filter_map(|f| f.text().map(str::to_string))
                .collect();
            use crate::emu::pin::Need;
            return st.pin_op(|pin| match (pin.need(), p.as_slice()) {
                (Need::Pin, [code]) => pin.verify(code),
                (Need::Puk | Need::Dead, [puk, new]) => pin.unblock(puk, new),
                _ => Err(crate::emu::pin::PinError::NotAllowed),
            });
        }
        // TS 27.007 §7.4: +CLCK="SC",<mode>[,<passwd>]; mode 2 queries.
        ("+CLCK", a) => {
            let p = param_list(&a[1..]);
            if p.first().and_then(Field::text) != Some("SC") {
                return Err("+CME ERROR: 3".into());
            }
            let mode = p.get(1).and_then(Field::int).ok_or("ERROR")?;
            if mode == 2 {
                let on = need_sim()?.pin.as_ref().is_some_and(|p| p.enabled);
                return Ok(vec![format!("+CLCK: {}", u8::from(on))]);
            }
            let code = p
                .get(2)
                .and_then(Field::text)
                .unwrap_or_default()
                .to_string();
            return st.pin_op(|pin| pin.set_enabled(mode == 1, &code));
        }
        // TS 27.007 §7.5: +CPWD="SC",<oldpwd>,<newpwd>.
        ("+CPWD", a) => {
            let p: Vec<String> = param_list(&a[1..])
                .iter()
                .filter_map(|f| f.text().map(str::to_string))
                .collect();
            let [fac, old, new] = p.as_slice() else {
                return Err("ERROR".into());
            };
            if fac != "SC" {
                return Err("+CME ERROR: 3".into());
            }
            return st.pin_op(|pin| pin.change(old, new));
        }
        // TS 27.007 §8.65: every code's retries.
        ("+CPINR", _) => {
            let s = need_sim()?;
            if st.initialising() {
                return Err("+CME ERROR: 14".into());
            }
            let (pin, puk) = counters(&s);
            return Ok(vec![
                format!("+CPINR: SIM PIN,{pin},{}", crate::emu::pin::PIN_TRIES),
                format!("+CPINR: SIM PUK,{puk},{}", crate::emu::pin::PUK_TRIES),
            ]);
        }
        ("+CIMI", "") if st.sim_locked() && sim.is_some() => {
            // TS 27.007 §9.2.1: 11 SIM PIN required.
            return Err("+CME ERROR: 11".into());
        }
        ("+CIMI", "") => return Ok(vec![need_sim()?.imsi]),
        ("+CRSM", "=176,12258,0,0,10") => {
            let s = need_sim()?;
            return Ok(vec![format!("+CRSM: 144,0,\"{}\"", ef_iccid(&s.iccid))]);
        }
        ("+COPS", "=3,0") => st.cops_format = 0,
        ("+COPS", "=3,2") => st.cops_format = 2,
        ("+COPS", "?") => {
            return Ok(vec![if st.registered() {
                let oper = if st.cops_format == 2 {
                    "20404"
                } else {
                    "Vodafone NL"
                };
                format!("+COPS: 0,{},\"{oper}\",7", st.cops_format)
            } else {
                "+COPS: 0".into()
            }])
        }
        ("+CREG" | "+CGREG" | "+CEREG", "?") => {
            let stat = if st.registered() {
                1
            } else if st.radio_on {
                2
            } else {
                0
            };
            return Ok(vec![if name == "+CREG" {
                // An LTE-only modem: the circuit domain stays searching.
                format!("+CREG: 0,{}", if st.radio_on { 2 } else { 0 })
            } else if stat == 1 {
                format!("{name}: 2,1,\"D504\",\"80428B5\",7")
            } else {
                format!("{name}: 2,{stat}")
            }]);
        }
        ("+CSQ", "") => {
            return Ok(vec![if st.radio_on {
                "+CSQ: 20,99"
            } else {
                "+CSQ: 99,99"
            }
            .into()])
        }
        ("+CGACT", "?") => {
            st.tick();
            return Ok(vec![format!(
                "+CGACT: {},{}",
                profile.session.cid,
                u8::from(st.session)
            )]);
        }
        ("+CGACT", a) => {
            let p = param_list(&a[1..]);
            let on = p.first().and_then(Field::int).ok_or("ERROR")?;
            if on == 1 && !st.registered() {
                // TS 27.007 §9.2.1 148: unspecified GPRS error.
                return Err("+CME ERROR: 148".into());
            }
            st.tick();
            st.session = on == 1;
        }
        ("+CFUN", "?") => return Ok(vec![format!("+CFUN: {}", if st.radio_on { 1 } else { 4 })]),
        ("+CFUN", a) => {
            let p = param_list(&a[1..]);
            let f = p.first().and_then(Field::int).ok_or("ERROR")?;
            st.tick();
            st.radio_on = f == 1;
            if !st.radio_on {
                st.session = false;
            }
            // Radio back on: the modem reads its SIM again, and an eUICC shows its
            // enabled profile (a switch takes effect here, as after SGP.22's reset).
            if st.radio_on {
                st.follow_enabled_profile();
            }
        }
        ("+CCHO", a) => {
            if profile.euicc.access == EuiccAccess::None
                || profile.euicc.transport == EuiccTransport::Csim
            {
                return Err("ERROR".into());
            }
            let s = need_sim()?;
            let p = param_list(&a[1..]);
            let aid = p.first().and_then(Field::text).unwrap_or_default();
            if s.eid.is_none() || !aid.eq_ignore_ascii_case(ISD_R_AID) {
                // The card answered SELECT with 6A82 (file not found); TS 27.007 leaves
                // the mapping to the MT: most give "unknown".
                return Err("+CME ERROR: 100".into());
            }
            let card = st.euicc(&s).ok_or("ERROR")?;
            // TS 27.007 §8.45: MANAGE CHANNEL, then SELECT of the AID on it.
            let r = card.process(&[0x00, 0x70, 0x00, 0x00, 0x01]);
            let ch = match r[..] {
                [n, 0x90, 0x00] => n,
                // No channel left: TS 27.007 +CME ERROR 4 (operation not supported).
                _ => return Err("+CME ERROR: 4".into()),
            };
            let mut select = vec![ch & 0x03, 0xA4, 0x04, 0x00, 16];
            select.extend(hex::decode(ISD_R_AID).unwrap_or_default());
            card.process(&select);
            return Ok(vec![if profile.euicc.ccho_prefixed {
                format!("+CCHO: {ch}")
            } else {
                ch.to_string()
            }]);
        }
        ("+CGLA", a) => {
            if profile.euicc.transport == EuiccTransport::Csim {
                return Err("ERROR".into());
            }
            let s = need_sim()?;
            let p = param_list(&a[1..]);
            let apdu = p
                .get(2)
                .and_then(Field::text)
                .unwrap_or_default()
                .to_ascii_uppercase();
            let bytes = hex::decode(&apdu).map_err(|_| "+CME ERROR: 50")?;
            let resp = match s.eid.as_ref().and_then(|e| st.euiccs.get_mut(e)) {
                // A card that stopped answering: the MT gives up on it (TS 27.007 §9.2.1
                // 13, SIM failure).
                Some(card) if card.is_mute() => return Err(SIM_FAILURE.into()),
                Some(card) => hex::encode_upper(card.process(&bytes)),
                // INS not supported (ISO/IEC 7816-4 6D00).
                None => "6D00".into(),
            };
            return Ok(vec![format!("+CGLA: {},\"{resp}\"", resp.len())]);
        }
        // TS 27.007 §8.17: a whole command APDU to the SIM, its channel in the CLA; the
        // response as the card gave it, 61xx included. Only an eSIM's card is emulated
        // at this level; a physical SIM answers 6D00 (INS not supported).
        ("+CSIM", a) => {
            let s = need_sim()?;
            let p = param_list(&a[1..]);
            let len = p.first().and_then(Field::int).ok_or("+CME ERROR: 50")?;
            let apdu = p.get(1).and_then(Field::text).unwrap_or_default();
            if usize::try_from(len).ok() != Some(apdu.len()) {
                // <length> counts the characters of <command> (§8.17).
                return Err("+CME ERROR: 50".into());
            }
            let bytes = hex::decode(apdu).map_err(|_| "+CME ERROR: 50")?;
            let resp = match st.euicc(&s) {
                Some(card) if card.is_mute() => return Err(SIM_FAILURE.into()),
                Some(card) => hex::encode_upper(card.process_t0(&bytes)),
                None => "6D00".into(),
            };
            return Ok(vec![format!("+CSIM: {},\"{resp}\"", resp.len())]);
        }
        ("+CCHC", a) => {
            let p = param_list(&a[1..]);
            let ch = p.first().and_then(Field::int).unwrap_or(0) as u8;
            if let Some(card) = s_eid(&sim).and_then(|e| st.euiccs.get_mut(&e)) {
                card.process(&[0x00, 0x70, 0x80, ch]);
            }
        }
        ("+CUSD", a) if a.starts_with("=1,") && !st.registered() => {
            // TS 27.007 §9.2.1: 30 no network service.
            return Err("+CME ERROR: 30".into());
        }
        ("+CSCS" | "+CUSD" | "+CMGF" | "+CNMI" | "+CPMS" | "+CMGL" | "+CMGR" | "+CMGD", _) => {
            let imsi = sim.as_ref().map(|s| s.imsi.clone());
            return st
                .msg
                .command(profile, imsi.as_deref(), name, arg, &mut st.after);
        }
        ("+CMGS", a) if a.starts_with('=') => {
            let len = a[1..].trim().parse::<usize>().map_err(|_| "ERROR")?;
            st.data_entry = Some(len);
        }
        ("", "") => {}
        _ => return Err("ERROR".into()),
    }
    Ok(vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_extended_commands_split() {
        assert_eq!(split_line("E0V1+CMEE=1"), vec!["E0", "V1", "+CMEE=1"]);
        assert_eq!(
            split_line("+CCHO=\"A;B\";+CSQ"),
            vec!["+CCHO=\"A;B\"", "+CSQ"]
        );
    }

    /// The family without +CGLA: +CCHO refused, the ISD-R reached through +CSIM with the
    /// card's own 61xx passed to the TE (TS 27.007 §8.17).
    #[test]
    fn csim_family_reaches_the_isdr_with_whole_apdus_and_refuses_cgla() {
        let profiles = crate::modem::profile::Profiles::shipped().unwrap();
        let profile = profiles.get("generic-csim").unwrap().clone();
        let mut opts = Options::new(profile.clone());
        opts.sim = Some(EmuSim::esim());
        let mut st = State::new(&opts);
        let mut at = |c: &str| command(&profile, &mut st, c);
        assert_eq!(at(&format!("+CCHO=\"{ISD_R_AID}\"")), Err("ERROR".into()));
        assert_eq!(at("+CGLA=1,10,\"81E2910003BF2E00\""), Err("ERROR".into()));
        assert_eq!(
            at("+CSIM=10,\"0070000001\""),
            Ok(vec!["+CSIM: 6,\"019000\"".into()])
        );
        let select = format!("+CSIM=42,\"01A4040010{ISD_R_AID}\"");
        assert!(at(&select).unwrap()[0].starts_with("+CSIM: 4,\"61"));
        // GetEUICCChallenge (SGP.22 §5.7.7): 61 15, then GET RESPONSE on the channel.
        assert_eq!(
            at("+CSIM=16,\"81E2910003BF2E00\""),
            Ok(vec!["+CSIM: 4,\"6115\"".into()])
        );
        let got = at("+CSIM=10,\"01C0000015\"").unwrap();
        assert!(got[0].starts_with("+CSIM: 46,\"BF2E128010"), "{got:?}");
        assert!(got[0].ends_with("9000\""), "{got:?}");
        // <length> must count <command>'s characters.
        assert_eq!(at("+CSIM=9,\"0070000001\""), Err("+CME ERROR: 50".into()));
    }

    #[test]
    fn ef_iccid_is_swapped_and_padded() {
        let ef = hex::decode(ef_iccid("8901260886258128535")).unwrap();
        assert_eq!(
            crate::card::Iccid::from_ef(&ef).unwrap().as_str(),
            "8901260886258128535"
        );
    }
}
