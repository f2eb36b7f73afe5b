//! The connection: owns the port and the receive buffer, sends one command at a time,
//! and sorts what comes back into the command's reply and unsolicited result codes.

use super::command::AtCommand;
use super::parser::{final_result, frame, Final, Frame};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Anything a modem can be reached through: a serial port, a pty, a TCP bridge.
pub trait AtIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AtIo for T {}

/// The link failed; the modem said nothing about the command. Retried by reopening.
#[derive(Debug, thiserror::Error)]
pub enum AtError {
    #[error("{port}: cannot open: {source}")]
    Open {
        port: String,
        source: std::io::Error,
    },
    /// Another process holds the port's lock (/proc/locks says which).
    #[error("{port}: in use by {holder}; {advice}", advice = holder.advice())]
    Held {
        port: String,
        holder: super::holder::Holder,
    },
    #[error("link failed: {0}")]
    Link(#[from] std::io::Error),
    /// End of stream: the port vanished (USB reset, modem reboot) or the bridge hung up.
    #[error("port closed")]
    Closed,
    /// Command text failed its checks: a bug in a constant or a template, never sent.
    #[error("refused to send: {0}")]
    Command(#[from] super::command::CommandError),
    /// The port is being (re)attached; nothing was sent.
    #[error("modem not attached (identifying or reattaching)")]
    NotAttached,
    #[error("no final result to {command} within {after:?}")]
    Timeout { command: String, after: Duration },
    /// An answer that fits no reading of the command (a reply out of step): nothing is
    /// concluded from it; the port is brought into step again.
    #[error("{command}: answer {answer:?} tells nothing; not taken as a fact")]
    Unclear { command: String, answer: String },
}

/// The modem answered, and said no (ERROR, +CME ERROR ...): not a link problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {result}")]
pub struct Refusal {
    pub command: String,
    pub result: Final,
    /// Information lines sent before the error, if any.
    pub lines: Vec<String>,
}

impl Refusal {
    /// The TS 27.007 §9.2.1 number of a +CME ERROR, verbose forms included.
    pub fn cme(&self) -> Option<u16> {
        match &self.result {
            Final::CmeError(code) => code.number(),
            _ => None,
        }
    }
}

/// What a command produced: its information lines (echo and URCs removed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub lines: Vec<String>,
}

impl Reply {
    /// The first line starting with `prefix` ("+CSQ:").
    pub fn line(&self, prefix: &str) -> Option<&str> {
        let name = prefix.trim_end_matches(':');
        self.lines
            .iter()
            .map(String::as_str)
            .find(|l| l.starts_with(name))
    }
}

/// `Ok(Ok(reply))`, `Ok(Err(refusal))` (the modem said no), or `Err` (the link failed).
pub type AtResult = Result<Result<Reply, Refusal>, AtError>;

/// What a group of commands produced ([`AtConnection::group`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grouped {
    /// Every information line of the commands the modem accepted: in command order,
    /// except that commands sent apart (refused on their own before) come last.
    pub lines: Vec<String>,
    /// Per command, its own reply (`None`: refused), when the group was sent one by one;
    /// `None` when it went as one line (then only `lines` tells).
    pub each: Option<Vec<Option<Reply>>>,
    /// The commands the modem refused, each with its answer.
    pub refused: Vec<Refusal>,
}

/// How this modem takes several commands on one line (V.250 §5.2.1), as learnt on this
/// connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concat {
    #[default]
    Unknown,
    Works,
    /// The firmware refuses concatenation as such: groups go one command a line.
    Refused,
}

/// Counters for budgets and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Command lines sent (a compound `AT+A;+B` line counts once).
    pub commands: u64,
    pub urcs: u64,
    pub garbage_bytes: u64,
    /// Lines dropped while bringing the port into step: answers to commands sent
    /// before (by a killed process, or one that timed out).
    pub stale_lines: u64,
}

/// One modem port. One command in flight at a time, by construction: `command` takes
/// `&mut self`.
#[derive(Debug)]
pub struct AtConnection<T> {
    io: T,
    buf: Vec<u8>,
    urcs: VecDeque<String>,
    urc_prefixes: Vec<String>,
    vendor_finals: Vec<String>,
    stats: Stats,
    concat: Concat,
    /// Commands refused on their own on this connection: sent apart from their group,
    /// so one unsupported command does not cost the whole group its line.
    alone: std::collections::HashSet<String>,
}

/// URCs kept for a reader; a supervisor drains them as they come.
const MAX_QUEUED_URCS: usize = 256;

/// URCs every modem may send (TS 27.007 §7.2 +CREG, §10.1.20 +CGREG, §10.1.22 +CEREG,
/// §8.3 +CPIN? not a URC by spec but sent on SIM insertion by most modems, V.250 RING).
pub const STANDARD_URCS: &[&str] = &[
    "+CREG:", "+CGREG:", "+CEREG:", "+C5GREG:", "+CPIN:", "RING", "+CGEV:", "+CMTI:", "+CUSD:",
    "+CIEV:",
];

impl<T: AtIo> AtConnection<T> {
    pub fn new(io: T, urc_prefixes: Vec<String>, vendor_finals: Vec<String>) -> Self {
        let mut prefixes: Vec<String> = STANDARD_URCS.iter().map(|s| s.to_string()).collect();
        prefixes.extend(urc_prefixes);
        AtConnection {
            io,
            buf: Vec::with_capacity(1024),
            urcs: VecDeque::new(),
            urc_prefixes: prefixes,
            vendor_finals,
            stats: Stats::default(),
            concat: Concat::Unknown,
            alone: Default::default(),
        }
    }

    /// Learn more URC prefixes (a profile's, once the model is known).
    pub fn add_urcs(&mut self, prefixes: &[String]) {
        for p in prefixes {
            if !self.urc_prefixes.contains(p) {
                self.urc_prefixes.push(p.clone());
            }
        }
    }

    pub fn add_vendor_finals(&mut self, finals: &[String]) {
        for f in finals {
            if !self.vendor_finals.contains(f) {
                self.vendor_finals.push(f.clone());
            }
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn is_urc(&self, line: &str) -> bool {
        self.urc_prefixes.iter().any(|p| {
            let name = p.trim_end_matches(':');
            line.starts_with(name)
                && line[name.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == ':' || c == ' ')
        })
    }

    /// Read more bytes into the buffer. Cancel-safe: what was read stays in `buf`.
    async fn fill(&mut self) -> Result<(), AtError> {
        let n = self.io.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(AtError::Closed);
        }
        Ok(())
    }

    /// Take the next complete frame out of the buffer, if there is one.
    fn next_frame(&mut self) -> Option<FrameOwned> {
        let (f, used) = frame(&self.buf)?;
        let owned = match f {
            Frame::Line(s) => FrameOwned::Line(s.to_string()),
            Frame::Prompt => FrameOwned::Prompt,
            Frame::Garbage(g) => {
                self.stats.garbage_bytes += g.len() as u64;
                tracing::debug!(bytes = g.len(), "dropped line noise");
                FrameOwned::Garbage
            }
        };
        self.buf.drain(..used);
        Some(owned)
    }

    /// Move every complete line already received into the URC queue: with no command in
    /// flight, anything the modem says is unsolicited (or a stale answer, dropped).
    fn drain_idle(&mut self) {
        while let Some(f) = self.next_frame() {
            if let FrameOwned::Line(line) = f {
                self.idle_line(line);
            }
        }
    }

    fn idle_line(&mut self, line: String) {
        if final_result(&line, &self.vendor_finals).is_some() {
            tracing::debug!(%line, "dropped a final result nobody waited for");
        } else {
            self.push_urc(line);
        }
    }

    /// Queue a URC. A user who never reads them (a one-shot CLI call on a chatty
    /// modem) must not grow memory without bound: the oldest go first.
    fn push_urc(&mut self, line: String) {
        self.stats.urcs += 1;
        if self.urcs.len() >= MAX_QUEUED_URCS {
            let dropped = self.urcs.pop_front();
            tracing::debug!(?dropped, "URC queue full; dropped the oldest");
        }
        self.urcs.push_back(line);
    }

    /// The next unsolicited result code. Cancel-safe, for use in `select!`.
    pub async fn next_urc(&mut self) -> Result<String, AtError> {
        loop {
            self.drain_idle();
            if let Some(u) = self.urcs.pop_front() {
                return Ok(u);
            }
            self.fill().await?;
        }
    }

    /// A URC already received, without waiting.
    pub fn pop_urc(&mut self) -> Option<String> {
        self.drain_idle();
        self.urcs.pop_front()
    }

    /// The next URC starting with `prefix` (`+CUSD:`), waiting for it; the others stay
    /// queued, in order, for whoever reads URCs next. Cancel-safe.
    pub async fn next_urc_with(&mut self, prefix: &str) -> Result<String, AtError> {
        let name = prefix.trim_end_matches(':');
        loop {
            self.drain_idle();
            if let Some(i) = self.urcs.iter().position(|u| u.starts_with(name)) {
                if let Some(u) = self.urcs.remove(i) {
                    return Ok(u);
                }
            }
            self.fill().await?;
        }
    }

    /// Send a command that takes data after the `> ` prompt (TS 27.005 §3.5.1 +CMGS in
    /// PDU mode): the line, then once prompted the data and Ctrl-Z (0x1A), then its
    /// final result. A final result instead of the prompt is the modem's refusal; no
    /// data is sent then.
    pub async fn command_with_data(
        &mut self,
        cmd: &AtCommand,
        data: &str,
        timeout: Duration,
    ) -> AtResult {
        // Data is hex or text of our own making; a CR or Ctrl-Z inside would end it early.
        if data.bytes().any(|b| !(0x20..0x7F).contains(&b)) {
            return Err(AtError::Command(super::command::CommandError::Data));
        }
        self.drain_idle();
        self.stats.commands += 1;
        tracing::trace!(command = %cmd, "send, with data");
        let run = async {
            let mut line = cmd.as_str().as_bytes().to_vec();
            line.push(b'\r');
            self.io.write_all(&line).await?;
            self.io.flush().await?;
            let mut early = Vec::new();
            loop {
                let Some(f) = self.next_frame() else {
                    self.fill().await?;
                    continue;
                };
                match f {
                    FrameOwned::Prompt => break,
                    FrameOwned::Garbage => {}
                    FrameOwned::Line(l) => {
                        if early.is_empty() && l.eq_ignore_ascii_case(cmd.as_str()) {
                            continue; // echo
                        }
                        if let Some(result) = final_result(&l, &self.vendor_finals) {
                            return Ok(Err(Refusal {
                                command: cmd.to_string(),
                                result,
                                lines: early,
                            }));
                        }
                        if self.is_urc(&l) {
                            self.push_urc(l);
                        } else {
                            early.push(l);
                        }
                    }
                }
            }
            let mut bytes = data.as_bytes().to_vec();
            // TS 27.005 §3.5.1: <ctrl-Z> (IRA 26) ends the PDU.
            bytes.push(0x1A);
            self.io.write_all(&bytes).await?;
            self.io.flush().await?;
            self.collect_after_data(cmd, data).await
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                crate::metrics::counters().at_timeout();
                Err(AtError::Timeout {
                    command: cmd.to_string(),
                    after: timeout,
                })
            }
        }
    }

    /// One line of a command's answer, past its echo: its final result code ends the
    /// answer (the lines before it with it); a URC is set aside for the supervisor;
    /// anything else belongs to the answer.
    fn answer_line(
        &mut self,
        cmd: &AtCommand,
        prefixes: &[String],
        lines: &mut Vec<String>,
        line: String,
    ) -> Option<Result<Reply, Refusal>> {
        if let Some(result) = final_result(&line, &self.vendor_finals) {
            let lines = std::mem::take(lines);
            return Some(match result {
                Final::Ok => Ok(Reply { lines }),
                other => Err(Refusal {
                    command: cmd.to_string(),
                    result: other,
                    lines,
                }),
            });
        }
        let ours = prefixes
            .iter()
            .any(|p| line.starts_with(p.trim_end_matches(':')));
        if !ours && self.is_urc(&line) {
            self.push_urc(line);
        } else {
            lines.push(line);
        }
        None
    }

    /// The answer to data sent after a prompt: the data's echo dropped, URCs queued.
    async fn collect_after_data(&mut self, cmd: &AtCommand, data: &str) -> AtResult {
        let prefixes = cmd.reply_prefixes();
        let mut lines = Vec::new();
        loop {
            let Some(f) = self.next_frame() else {
                self.fill().await?;
                continue;
            };
            let FrameOwned::Line(line) = f else { continue };
            // The echo of the data (and its Ctrl-Z) when echo is on.
            if line.trim_end_matches('\u{1A}') == data {
                continue;
            }
            if let Some(done) = self.answer_line(cmd, &prefixes, &mut lines, line) {
                return Ok(done);
            }
        }
    }

    /// Send one command line and wait for its final result code, at most `timeout`.
    pub async fn command(&mut self, cmd: &AtCommand, timeout: Duration) -> AtResult {
        self.drain_idle();
        self.stats.commands += 1;
        tracing::trace!(command = %cmd, "send");
        let run = async {
            let mut line = Vec::with_capacity(cmd.as_str().len() + 1);
            line.extend_from_slice(cmd.as_str().as_bytes());
            // S3, the command line terminator (V.250 §5.2.1, §6.2.1 default 13).
            line.push(b'\r');
            self.io.write_all(&line).await?;
            self.io.flush().await?;
            self.collect(cmd).await
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                crate::metrics::counters().at_timeout();
                Err(AtError::Timeout {
                    command: cmd.to_string(),
                    after: timeout,
                })
            }
        }
    }

    async fn collect(&mut self, cmd: &AtCommand) -> AtResult {
        let prefixes = cmd.reply_prefixes();
        let mut lines = Vec::new();
        loop {
            let Some(f) = self.next_frame() else {
                self.fill().await?;
                continue;
            };
            let line = match f {
                FrameOwned::Line(l) => l,
                // We never start data entry; a stray prompt is answered by the final.
                FrameOwned::Prompt | FrameOwned::Garbage => continue,
            };
            if lines.is_empty() && line.eq_ignore_ascii_case(cmd.as_str()) {
                continue; // echo (V.250 §6.2.4, E1)
            }
            if let Some(done) = self.answer_line(cmd, &prefixes, &mut lines, line) {
                return Ok(done);
            }
        }
    }

    /// How this connection found the modem to take concatenated commands.
    pub fn concat(&self) -> Concat {
        self.concat
    }

    /// Send a group of commands (each may itself be a compound line: every command in
    /// it counts) as one line (V.250 §5.2.1) where the modem takes that, else one by one.
    ///
    /// When the line is refused, its commands are sent one by one (V.250 runs a line left
    /// to right, so those before the refused one ran twice: groups hold queries and
    /// idempotent settings only, as every group in src/modem does): if every one is then
    /// accepted, the firmware refuses concatenation as such, and every later group on
    /// this connection goes one by one from the start (the refusal is paid once); if
    /// some are refused on their own, those are what failed, and later groups send
    /// them apart while the rest stays on one line. A refused command is an entry of
    /// `refused`, never an error; the link failing is.
    pub async fn group(
        &mut self,
        cmds: &[AtCommand],
        timeout: Duration,
    ) -> Result<Grouped, AtError> {
        let atoms: Vec<AtCommand> = cmds.iter().flat_map(AtCommand::atoms).collect();
        let (apart, together): (Vec<usize>, Vec<usize>) =
            (0..atoms.len()).partition(|&i| self.alone.contains(atoms[i].as_str()));
        let mut out = Grouped::default();
        let mut each: Vec<Option<Reply>> = vec![None; atoms.len()];
        let mut singly = apart.clone();
        if together.len() >= 2 && self.concat != Concat::Refused {
            let line = super::command::join(
                &together
                    .iter()
                    .map(|&i| atoms[i].clone())
                    .collect::<Vec<_>>(),
            );
            match self.command(&line, timeout).await? {
                Ok(r) if apart.is_empty() => {
                    self.concat = Concat::Works;
                    out.lines = r.lines;
                    return Ok(out);
                }
                Ok(r) => {
                    self.concat = Concat::Works;
                    out.lines = r.lines;
                    // The rest goes apart; positions no longer tell which line is whose.
                    for i in apart {
                        if let Some(reply) =
                            self.alone_command(&atoms[i], timeout, &mut out).await?
                        {
                            out.lines.extend(reply.lines);
                        }
                    }
                    return Ok(out);
                }
                Err(refusal) => {
                    tracing::debug!(%refusal, "group refused; sending its commands one by one");
                    let before = out.refused.len();
                    for &i in &together {
                        each[i] = self.alone_command(&atoms[i], timeout, &mut out).await?;
                    }
                    if out.refused.len() == before {
                        tracing::info!(line = %line, "the modem refuses concatenated commands (V.250 §5.2.1): one command a line from now on");
                        self.concat = Concat::Refused;
                    }
                }
            }
        } else {
            singly.extend(together);
            singly.sort_unstable();
        }
        for i in singly {
            each[i] = self.alone_command(&atoms[i], timeout, &mut out).await?;
        }
        for r in each.iter().flatten() {
            out.lines.extend(r.lines.iter().cloned());
        }
        out.each = Some(each);
        Ok(out)
    }

    /// One command of a group on its own line; a refusal is recorded and remembered.
    async fn alone_command(
        &mut self,
        cmd: &AtCommand,
        timeout: Duration,
        out: &mut Grouped,
    ) -> Result<Option<Reply>, AtError> {
        match self.command(cmd, timeout).await? {
            Ok(r) => {
                self.alone.remove(cmd.as_str());
                Ok(Some(r))
            }
            Err(refusal) => {
                self.alone.insert(cmd.as_str().to_string());
                out.refused.push(refusal);
                Ok(None)
            }
        }
    }

    /// Bring the port into step before trusting any reply: on every open (a port keeps
    /// what a killed process left in flight: its late answers arrive on the next
    /// connection) and after a command timed out (its answer may still come).
    ///
    /// Replies carry nothing that says which command they answer, so a stale `OK` and
    /// ours look alike; only the echo (V.250 §6.2.4) gives back text of our choosing.
    /// Each try sends `ATE1` (echo on; its own result is not trusted) and then a marker
    /// line unique to this try (see [`marker`]). The modem runs lines in order, so once
    /// the marker's echo and its final result have come, everything before them was
    /// stale and has been dropped, and the next final result answers the next command.
    /// A marker dropped by a busy modem or a line cut short is simply not seen: the try
    /// times out (`each`) and the next one goes. The port is in step only after the
    /// *last* marker sent has finished, so no marker's answer is left in flight. Echo
    /// stays on afterwards (identification turns it off; [`Self::command`] skips it).
    pub async fn synchronise(&mut self, each: Duration) -> Result<(), AtError> {
        // What was received but not read belongs to nobody now.
        self.buf.clear();
        let echo = AtCommand::new("ATE1")?;
        let mut sent = Vec::new();
        for _ in 0..SYNC_TRIES {
            let marker = marker(nonce())?;
            for line in [&echo, &marker] {
                self.stats.commands += 1;
                let mut bytes = line.as_str().as_bytes().to_vec();
                bytes.push(b'\r');
                self.io.write_all(&bytes).await?;
            }
            self.io.flush().await?;
            sent.push(marker);
            match tokio::time::timeout(each, self.await_marker(&sent)).await {
                Ok(r) => return r,
                Err(_) => tracing::debug!(tries = sent.len(), "no marker echo yet; trying again"),
            }
        }
        crate::metrics::counters().at_timeout();
        Err(AtError::Timeout {
            command: "the synchronising marker (ATE1, then a line to echo)".into(),
            after: each * SYNC_TRIES,
        })
    }

    /// Read until the last marker of `sent` has been echoed and has its final result;
    /// drop everything before. Cancel-safe (a frame is consumed whole).
    async fn await_marker(&mut self, sent: &[AtCommand]) -> Result<(), AtError> {
        let last = sent.len() - 1;
        let mut echoed = None;
        loop {
            let Some(f) = self.next_frame() else {
                self.fill().await?;
                continue;
            };
            let FrameOwned::Line(line) = f else { continue };
            if let Some(j) = sent
                .iter()
                .position(|m| line.eq_ignore_ascii_case(m.as_str()))
            {
                echoed = Some(j);
            } else if line.eq_ignore_ascii_case("ATE1") {
                // Our own ATE1, echoed where echo was on already.
            } else if final_result(&line, &self.vendor_finals).is_some() {
                // Any final ends the marker's line: a firmware refusing concatenation
                // answers it ERROR, after the echo all the same.
                if echoed == Some(last) {
                    return Ok(());
                }
                // A stale answer, or an earlier marker's: later lines are still due.
                echoed = None;
                self.stats.stale_lines += 1;
            } else if echoed == Some(last) && self.is_urc(&line) {
                self.push_urc(line);
            } else {
                tracing::debug!(%line, "dropped a line from before the port was in step");
                self.stats.stale_lines += 1;
            }
        }
    }
}

/// Tries of [`AtConnection::synchronise`] before the port counts as not answering.
const SYNC_TRIES: u32 = 4;

/// A marker line: `Q0` (result codes on, V.250 §6.2.5) then sixteen idempotent settings,
/// `E1` (echo on, §6.2.4) for a 0 bit and `V1` (verbose results, §6.2.6) for a 1 bit of
/// `nonce`: a valid line (basic commands run together, §5.2.1; 36 characters, within
/// the 40 every DCE must take) that changes nothing but the state identification sets
/// anyway, and whose echo no other line matches.
fn marker(nonce: u16) -> Result<AtCommand, super::command::CommandError> {
    let mut text = String::from("ATQ0");
    for bit in 0..16 {
        text.push_str(if nonce >> bit & 1 == 1 { "V1" } else { "E1" });
    }
    AtCommand::new(&text)
}

/// A nonce per marker: a process-wide counter mixed with the clock and the pid, so two
/// runs (the killed one and its successor) and two tries never share one.
fn nonce() -> u16 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mixed =
        (u64::from(clock) ^ u64::from(std::process::id()) << 20 ^ n.wrapping_mul(0x9E37_79B9))
            .wrapping_mul(0x2545_F491_4F6C_DD1D);
    (mixed >> 48) as u16
}

enum FrameOwned {
    Line(String),
    Prompt,
    Garbage,
}

/// A boxed port, so the engine above is one type whatever the transport.
pub type Port = Box<dyn AtIo>;

/// A one-shot command's modem: the port opened and the connection brought into step
/// ([`AtConnection::synchronise`], each try bounded by `each`) before its first command,
/// so a dead run's late answers never pair with ours. Every CLI path to a modem opens
/// it through here (the supervisor synchronises its own, at every attach).
pub async fn connect(port: &str, each: Duration) -> Result<AtConnection<Port>, AtError> {
    let io = open(port).await?;
    let mut conn = AtConnection::new(io, vec![], vec![]);
    conn.synchronise(each).await?;
    Ok(conn)
}

/// Open a modem: a serial device path (opened with tokio-serial, raw, 115200 8N1 — a pty
/// or USB CDC ignores the rate), or `tcp://host:port` for a ser2net-style bridge.
pub async fn open(port: &str) -> Result<Port, AtError> {
    if let Some(addr) = port.strip_prefix("tcp://") {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| AtError::Open {
                port: port.to_string(),
                source,
            })?;
        // One small command at a time: Nagle would only add latency.
        s.set_nodelay(true).map_err(AtError::Link)?;
        return Ok(Box::new(s));
    }
    let stream =
        tokio_serial::SerialStream::open(&tokio_serial::new(port, 115_200)).map_err(|e| {
            // Whatever serialport said, the lock table knows whether someone holds it.
            match super::holder::holder(port) {
                Some(holder) => AtError::Held {
                    port: port.to_string(),
                    holder,
                },
                None => AtError::Open {
                    port: port.to_string(),
                    source: e.into(),
                },
            }
        })?;
    Ok(Box::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn cmd(s: &str) -> AtCommand {
        AtCommand::new(s).unwrap()
    }

    async fn run_against(script: &'static [u8], command: &str) -> (AtResult, Vec<String>) {
        let (ours, mut theirs) = duplex(4096);
        let mut conn = AtConnection::new(ours, vec!["+QSIMSTAT:".into()], vec![]);
        let c = cmd(command);
        let modem = async move {
            let mut got = vec![0u8; 64];
            let _ = theirs.read(&mut got).await;
            theirs.write_all(script).await.unwrap();
            theirs
        };
        let (r, _keep) = tokio::join!(conn.command(&c, Duration::from_secs(1)), modem);
        let mut urcs = Vec::new();
        while let Some(u) = conn.pop_urc() {
            urcs.push(u);
        }
        (r, urcs)
    }

    #[tokio::test]
    async fn urc_inside_a_reply_goes_to_the_urc_queue() {
        let (r, urcs) = run_against(
            b"AT+QCCID\r\r\n+QSIMSTAT: 1,1\r\n+QCCID: 8901260886258128535F\r\n+CEREG: 1\r\n\r\nOK\r\n",
            "AT+QCCID",
        )
        .await;
        let reply = r.unwrap().unwrap();
        assert_eq!(reply.lines, vec!["+QCCID: 8901260886258128535F"]);
        assert_eq!(urcs, vec!["+QSIMSTAT: 1,1", "+CEREG: 1"]);
    }

    #[tokio::test]
    async fn cme_error_is_a_refusal_not_a_link_failure() {
        let (r, _) = run_against(b"\r\n+CME ERROR: 10\r\n", "AT+CIMI").await;
        let refusal = r.unwrap().unwrap_err();
        assert_eq!(refusal.cme(), Some(10));
    }

    #[tokio::test]
    async fn garbage_before_the_reply_is_skipped() {
        let (r, _) = run_against(b"\x00\xff\xfe\r\n+CSQ: 5,99\r\n\r\nOK\r\n", "AT+CSQ").await;
        assert_eq!(r.unwrap().unwrap().lines, vec!["+CSQ: 5,99"]);
    }

    #[tokio::test]
    async fn own_prefix_wins_over_urc_prefix() {
        let (r, urcs) = run_against(
            b"\r\n+CEREG: 2,1,\"D504\",\"80428B5\",7\r\n\r\nOK\r\n",
            "AT+CEREG?",
        )
        .await;
        assert_eq!(r.unwrap().unwrap().lines.len(), 1);
        assert!(urcs.is_empty());
    }

    #[tokio::test]
    async fn a_reply_trickling_in_byte_by_byte_with_a_urc_inside_is_assembled() {
        let (ours, mut theirs) = duplex(64);
        let mut conn = AtConnection::new(ours, vec!["+QSIMSTAT:".into()], vec![]);
        let c = cmd("AT+CSQ");
        let modem = async move {
            let mut got = vec![0u8; 16];
            let _ = theirs.read(&mut got).await;
            for b in b"AT+CSQ\r\r\n+CSQ: 5,99\r\n+QSIMSTAT: 1,0\r\n\r\nOK\r\n" {
                theirs.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            theirs
        };
        let (r, _keep) = tokio::join!(conn.command(&c, Duration::from_secs(1)), modem);
        assert_eq!(r.unwrap().unwrap().lines, vec!["+CSQ: 5,99"]);
        assert_eq!(conn.pop_urc().as_deref(), Some("+QSIMSTAT: 1,0"));
    }

    /// A modem left with echo off and two answers of a killed run's commands still
    /// to come: it echoes a line when echo is on, runs lines in order.
    async fn late_modem(mut theirs: tokio::io::DuplexStream) {
        theirs
            .write_all(b"\r\n+CGMI: stale\r\n\r\nOK\r\n\r\nERROR\r\n")
            .await
            .unwrap();
        let mut echo = false;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while theirs.read(&mut b).await.is_ok_and(|n| n == 1) {
            if b[0] != b'\r' {
                line.push(b[0]);
                continue;
            }
            let text = String::from_utf8(std::mem::take(&mut line)).unwrap();
            if echo {
                theirs
                    .write_all(format!("{text}\r").as_bytes())
                    .await
                    .unwrap();
            }
            echo = text.contains("E1") || (echo && !text.contains("E0"));
            let reply = if text == "AT+CGMI" {
                "\r\nQuectel\r\n\r\nOK\r\n"
            } else {
                "\r\nOK\r\n"
            };
            theirs.write_all(reply.as_bytes()).await.unwrap();
        }
    }

    #[tokio::test]
    async fn answers_from_before_the_port_was_in_step_never_reach_a_command() {
        let (ours, theirs) = duplex(4096);
        tokio::spawn(late_modem(theirs));
        let mut conn = AtConnection::new(ours, vec![], vec![]);
        conn.synchronise(Duration::from_secs(5)).await.unwrap();
        let r = conn.command(&cmd("AT+CGMI"), Duration::from_secs(5)).await;
        assert_eq!(r.unwrap().unwrap().lines, vec!["Quectel"]);
        assert_eq!(conn.stats().stale_lines, 4, "{:?}", conn.stats());
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let (ours, _theirs) = duplex(64);
        let mut conn = AtConnection::new(ours, vec![], vec![]);
        let r = conn.command(&cmd("AT"), Duration::from_millis(50)).await;
        assert!(matches!(r, Err(AtError::Timeout { .. })));
    }

    #[tokio::test]
    async fn hangup_is_closed() {
        let (ours, theirs) = duplex(64);
        drop(theirs);
        let mut conn = AtConnection::new(ours, vec![], vec![]);
        let r = conn.command(&cmd("AT"), Duration::from_secs(1)).await;
        assert!(matches!(r, Err(AtError::Closed | AtError::Link(_))));
    }
}
