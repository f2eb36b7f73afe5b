//! `simgate watch`: a platform-side view of one agent — subscribes to its topics and
//! shows the SIM table it publishes, redrawn in place on every change (on a terminal;
//! `--plain` or a pipe prints each table after the last). Used by the demo and by
//! anyone checking what an agent really sends.

use crate::contract::{
    AgentTopic, CommandStatus, EventKind, EventMsg, Health, SimState, UsageBatch, UsageSample,
};
use crate::link::peer::PeerEvent;
use crate::sim::PlatformRecord;
use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many recent events and command statuses the view keeps.
const RECENT: usize = 8;

/// One line for an event.
pub(super) fn describe_event(e: &EventMsg) -> String {
    match &e.kind {
        EventKind::Inserted { iccid, location } => {
            format!("#{} inserted {iccid} at {}", e.seq, location.label())
        }
        EventKind::Removed { iccid, location } => {
            format!("#{} removed {iccid} from {}", e.seq, location.label())
        }
        EventKind::Swapped {
            iccid,
            replaced,
            location,
        } => format!(
            "#{} swapped {replaced} -> {iccid} at {}",
            e.seq,
            location.label()
        ),
        EventKind::IdentityChanged {
            iccid, field, new, ..
        } => format!(
            "#{} {iccid}: {field} now {}",
            e.seq,
            new.as_deref().unwrap_or("-")
        ),
        EventKind::Error {
            iccid,
            code,
            reason,
        } => format!(
            "#{} error {}{}: {reason}",
            e.seq,
            code.word(),
            iccid
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default()
        ),
        EventKind::Command {
            id,
            action,
            status,
            reason,
            ..
        } => format!(
            "#{} command {id} {action}: {}{}",
            e.seq,
            status.word(),
            reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        EventKind::RuleFired {
            iccid,
            rule,
            actions,
            ..
        } => format!(
            "#{} rule {rule} fired for {iccid}: {}",
            e.seq,
            actions
                .iter()
                .map(|a| format!(
                    "{} {}",
                    a.action.word(),
                    a.outcome.as_deref().unwrap_or("?")
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        EventKind::RefillRequested {
            iccid, request_id, ..
        } => format!("#{} refill requested for {iccid} ({request_id})", e.seq),
        EventKind::EsimNotification {
            iccid,
            number,
            operation,
            address,
            ..
        } => format!(
            "#{} eSIM notification {number} ({operation}) of {iccid} for {address}",
            e.seq
        ),
        EventKind::SwapStep {
            id,
            iccid,
            step,
            ok,
            new_iccid,
            detail,
            secs,
        } => format!(
            "#{} swap {id} of {iccid}: {step} {}{}: {detail}{}",
            e.seq,
            match ok {
                None => "started",
                Some(true) => "done",
                Some(false) => "FAILED",
            },
            secs.map(|s| format!(" in {s:.1} s")).unwrap_or_default(),
            new_iccid
                .as_deref()
                .map(|n| format!(" (new SIM {n})"))
                .unwrap_or_default()
        ),
        EventKind::EsimDownloadStep {
            id,
            iccid,
            step,
            profile,
            detail,
            ..
        } => format!(
            "#{} eSIM download {id} on {iccid}: {step}{}: {detail}",
            e.seq,
            profile
                .as_deref()
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default()
        ),
        EventKind::ReaderService { up: true, .. } => format!("#{} PC/SC service back", e.seq),
        EventKind::Sms {
            iccid,
            from,
            text,
            topup,
            ..
        } => format!(
            "#{} SMS to {iccid} from {from}{}: {text}",
            e.seq,
            if topup.is_some() { " (top-up)" } else { "" }
        ),
        EventKind::ModemService {
            port, up, reason, ..
        } => format!(
            "#{} modem {port} {}{}",
            e.seq,
            if *up {
                "answers again"
            } else {
                "not answering"
            },
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        EventKind::ReaderService { up: false, reason } => format!(
            "#{} PC/SC service lost: {}",
            e.seq,
            reason.as_deref().unwrap_or("-")
        ),
        EventKind::OutboxShed { telemetry, events } => format!(
            "#{} outbox full: {telemetry} telemetry and {events} events shed so far",
            e.seq
        ),
    }
}

/// One column of the SIM table: its header, alignment, and the cell of a row.
struct Column {
    head: &'static str,
    right: bool,
    cell: fn(&Row<'_>) -> String,
}

/// What one line of the table is drawn from.
struct Row<'a> {
    state: &'a SimState,
    platform: PlatformRecord,
    usage: Option<&'a UsageSample>,
}

/// "ready", "PIN (3 left)", "PUK (10 left)", "blocked": short enough for a column.
fn lock_cell(l: &crate::sim::Lock) -> String {
    use crate::sim::LockState;
    let left = |n: Option<u8>| n.map_or(String::new(), |n| format!(" ({n} left)"));
    match l.state {
        LockState::Ready => "ready".into(),
        LockState::PinRequired => format!("PIN{}", left(l.pin_attempts)),
        LockState::PukRequired => format!("PUK{}", left(l.puk_attempts)),
        LockState::Blocked => "blocked".into(),
    }
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

/// The columns of the platform's SIMs page (the station page shows the same ones), most
/// important first: a terminal too narrow for them all drops the last ones (never a
/// value cut short). Local estimates of data and days left are marked `~`.
const COLUMNS: &[Column] = &[
    Column {
        head: "ICCID",
        right: false,
        cell: |r| r.state.sim.iccid.clone(),
    },
    Column {
        head: "PRESENT",
        right: false,
        cell: |r| if r.state.sim.present { "yes" } else { "gone" }.into(),
    },
    Column {
        head: "STATUS",
        right: false,
        cell: |r| r.state.status.map_or("-", |st| st.word()).to_string(),
    },
    Column {
        head: "FORM",
        right: false,
        cell: |r| match r.state.sim.form_factor {
            Some(crate::sim::FormFactor::Esim) if r.state.sim.blank_esim => "Blank eSIM".into(),
            Some(crate::sim::FormFactor::Esim) => "eSIM".into(),
            Some(crate::sim::FormFactor::Physical) => "physical".into(),
            None => "?".into(),
        },
    },
    Column {
        head: "LOCK",
        right: false,
        // The PIN lock: "ready", or what the SIM waits for and the attempts left.
        cell: |r| match r.state.sim.lock {
            Some(l) => lock_cell(&l),
            None => "-".into(),
        },
    },
    Column {
        head: "SESSION",
        right: false,
        cell: |r| r.state.sim.in_session.word().to_string(),
    },
    Column {
        head: "LEFT MB",
        right: true,
        cell: |r| match r.state.estimate.as_ref().and_then(|e| e.data_left_mb) {
            Some(e) => format!("~{e:.1}"),
            None => r
                .platform
                .data_left_mb
                .map_or("-".into(), |d| format!("{d:.1}")),
        },
    },
    Column {
        head: "DAYS",
        right: true,
        cell: |r| match r.state.estimate.as_ref().and_then(|e| e.days_left) {
            Some(e) => format!("~{e:.0}"),
            None => r.platform.days_left.map_or("-".into(), |d| d.to_string()),
        },
    },
    Column {
        head: "MONTH MB",
        right: true,
        cell: |r| {
            r.usage
                .map_or("-".into(), |u| format!("{:.1}", (u.rx + u.tx) as f64 / 1e6))
        },
    },
    Column {
        head: "OPERATOR",
        right: false,
        cell: |r| {
            or_dash(
                r.state
                    .sim
                    .operator
                    .as_deref()
                    .or(r.state.sim.spn.as_deref()),
            )
        },
    },
    Column {
        head: "PLAN",
        right: false,
        cell: |r| or_dash(r.platform.plan.as_deref()),
    },
    Column {
        head: "WHERE",
        right: false,
        cell: |r| r.state.sim.location.label(),
    },
    Column {
        head: "COMPANY",
        right: false,
        // The platform's word first, else what a reader station gave the batch.
        cell: |r| {
            or_dash(
                r.platform
                    .company
                    .as_deref()
                    .or(r.state.sim.batch.company.as_deref()),
            )
        },
    },
    Column {
        head: "END USER",
        right: false,
        cell: |r| or_dash(r.platform.end_user.as_deref()),
    },
    Column {
        head: "TYPE",
        right: false,
        cell: |r| r.platform.sim_type.map_or("-", |t| t.word()).to_string(),
    },
    Column {
        head: "LABELS",
        right: false,
        cell: |r| {
            let labels = if r.platform.labels.is_empty() {
                &r.state.sim.batch.labels
            } else {
                &r.platform.labels
            };
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            }
        },
    },
    Column {
        head: "RULES",
        right: true,
        cell: |r| match r.platform.rules.len() {
            0 => "-".into(),
            n => n.to_string(),
        },
    },
    Column {
        head: "NOTE",
        right: false,
        cell: |r| {
            let note = r
                .platform
                .note
                .as_deref()
                .or(r.state.sim.batch.note.as_deref());
            match (&r.state.sim.problem, &r.state.sim.pending, note) {
                (Some(p), _, _) => format!("!! {p}"),
                (None, Some(p), _) => format!("pending: {p}"),
                (None, None, n) => or_dash(n),
            }
        },
    },
];

/// The SIM table as lines `width` columns wide at most (None: as wide as it needs):
/// columns whose every cell is "-" are left out, then the least important ones until
/// every remaining column fits its longest word; long cells wrap at words within their
/// column (comfy-table's dynamic arrangement), a number is never cut.
fn table(rows: &[Row<'_>], width: Option<usize>) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let mut keep: Vec<usize> = (0..COLUMNS.len())
        .filter(|&i| i == 0 || cells.iter().any(|row| row[i] != "-"))
        .collect();
    // The narrowest a column can be: its longest word (a value never breaks inside).
    let min = |i: usize| {
        std::iter::once(COLUMNS[i].head)
            .chain(cells.iter().map(|row| row[i].as_str()))
            .flat_map(str::split_whitespace)
            .map(|w| w.chars().count())
            .max()
            .unwrap_or(1)
    };
    if let Some(w) = width {
        // Each column costs its width plus one space between columns.
        while keep.len() > 1 && keep.iter().map(|&i| min(i) + 1).sum::<usize>() > w + 1 {
            keep.pop();
        }
    }
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING);
    t.set_content_arrangement(match width {
        Some(_) => comfy_table::ContentArrangement::Dynamic,
        None => comfy_table::ContentArrangement::Disabled,
    });
    if let Some(w) = width {
        t.set_width(u16::try_from(w).unwrap_or(u16::MAX));
    }
    t.set_header(keep.iter().map(|&i| COLUMNS[i].head));
    for row in &cells {
        t.add_row(keep.iter().map(|&i| row[i].clone()));
    }
    for (n, &i) in keep.iter().enumerate() {
        if let Some(col) = t.column_mut(n) {
            col.set_padding((0, 1));
            col.set_constraint(comfy_table::ColumnConstraint::LowerBoundary(
                // The padding counts in the width.
                comfy_table::Width::Fixed(u16::try_from(min(i) + 1).unwrap_or(u16::MAX)),
            ));
            if COLUMNS[i].right {
                col.set_cell_alignment(comfy_table::CellAlignment::Right);
            }
        }
    }
    t.lines().map(|l| l.trim_end().to_string()).collect()
}

/// Render the SIM table (observed and platform fields) and the recent activity as lines.
/// `size` (a terminal's rows and columns) bounds them: rows that do not fit are counted
/// on one line instead, so the table never scrolls, and the columns fit the width.
/// `notice` is said under the title (an agent never seen, for one).
pub(super) fn render(
    health: Option<&Health>,
    sims: &BTreeMap<String, SimState>,
    usage: &BTreeMap<String, UsageSample>,
    recent: &VecDeque<String>,
    size: Option<(usize, usize)>,
    notice: Option<&str>,
) -> Vec<String> {
    let agent = match health {
        Some(Health {
            state,
            broker: Some(node),
            ..
        }) if state == "online" => format!("{state} on {node}"),
        Some(h) => h.state.clone(),
        None => "unknown".into(),
    };
    let present = sims.values().filter(|s| s.sim.present).count();
    let mut out = vec![format!(
        "agent: {agent}   SIMs: {} ({present} present)",
        sims.len()
    )];
    out.extend(notice.map(String::from));
    let footer: Vec<String> = if recent.is_empty() {
        Vec::new()
    } else {
        std::iter::once(String::new())
            .chain(std::iter::once("recent:".to_string()))
            .chain(recent.iter().map(|l| format!("  {l}")))
            .collect()
    };
    // Present SIMs first, each group in ICCID order.
    let mut ordered: Vec<&SimState> = sims.values().collect();
    ordered.sort_by_key(|s| !s.sim.present);
    let rows: Vec<Row<'_>> = ordered
        .into_iter()
        .map(|state| Row {
            state,
            platform: state.platform.clone().unwrap_or_default(),
            usage: usage.get(&state.sim.iccid),
        })
        .collect();
    let width = size.map(|(_, cols)| cols);
    let room = size.map_or(usize::MAX, |(h, _)| {
        h.saturating_sub(out.len() + footer.len())
    });
    // As many rows as fit the room (a wrapped row takes several lines).
    let mut shown = rows.len();
    let mut lines = table(&rows[..shown], width);
    while lines.len() + usize::from(shown < rows.len()) > room && shown > 0 {
        shown -= 1;
        lines = table(&rows[..shown], width);
    }
    out.extend(lines);
    if shown < rows.len() {
        out.push(format!(
            "… {} more SIMs (a taller terminal shows them)",
            rows.len() - shown
        ));
    }
    out.extend(footer);
    out
}

/// A terminal showing the table in place: the alternate screen (the shell's scrollback
/// stays as it was), no line wrapping, no cursor; each redraw overwrites the lines from
/// the top and clears what is left below, so nothing scrolls and nothing flickers.
/// Dropping it gives the terminal back as it was (ECMA-48 / xterm control sequences).
struct Screen {
    size: Option<(usize, usize)>,
}

impl Screen {
    fn open() -> std::io::Result<Screen> {
        let mut out = std::io::stdout().lock();
        // Alternate screen, auto-wrap off, cursor hidden.
        write!(out, "\x1b[?1049h\x1b[?7l\x1b[?25l")?;
        out.flush()?;
        Ok(Screen {
            size: terminal_size(),
        })
    }

    fn resized(&mut self) {
        self.size = terminal_size();
    }

    fn draw(&self, lines: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        let mut frame = String::from("\x1b[H");
        for l in lines {
            // Erase the rest of each line: a shorter line leaves nothing of the last one.
            frame.push_str(l);
            frame.push_str("\x1b[K\r\n");
        }
        frame.push_str("\x1b[J"); // and everything below
        out.write_all(frame.as_bytes())?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\x1b[?25h\x1b[?7h\x1b[?1049l");
        let _ = out.flush();
    }
}

/// The terminal's rows and columns, from `stty size` on the controlling terminal (no
/// ioctl: the crate forbids unsafe code, and this is read only at start and on resize).
fn terminal_size() -> Option<(usize, usize)> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<usize>().ok());
    let rows = it.next()??;
    let cols = it.next()??;
    (rows > 2 && cols > 20).then_some((rows, cols))
}

/// How long `watch` waits for anything of its agent before it says that no such agent
/// has been seen: a live agent's retained health arrives at once on subscribing.
const UNSEEN_AFTER: Duration = Duration::from_secs(4);

/// The agent id in `simgate/v1/<id>/health`, another agent's health.
fn health_of(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("simgate/v1/")?
        .strip_suffix("/health")
        .filter(|id| !id.contains('/'))
}

/// How `watch` shows the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Redrawn in place on a terminal (one table per change elsewhere).
    Live,
    /// One table per change, never redrawn.
    Plain,
    /// Once every SIM of the agent's retained index has its row: the table, then exit.
    Once,
    /// As `Once`, the agent's health and rows as JSON.
    OnceJson,
}

/// How long `watch --once` waits for the rows its agent's index names, once the agent
/// was heard from: retained messages arrive at once, so a row still missing then is one
/// the broker does not hold (a cluster node that never had it: MQTT.md, "Clusters").
const ONCE_WITHIN: Duration = Duration::from_secs(10);

/// What `watch` has heard of its agent, and shows.
#[derive(Default)]
struct View {
    sims: BTreeMap<String, SimState>,
    health: Option<Health>,
    recent: VecDeque<String>,
    /// The latest usage sample per SIM (this month's counters).
    usage: BTreeMap<String, UsageSample>,
    /// Shown above the live table: the agent has not been seen.
    notice: Option<String>,
    /// For --once: the index's ICCIDs, and the payloads as received (for --json).
    index: Option<std::collections::BTreeSet<String>>,
    raw: BTreeMap<String, serde_json::Value>,
    raw_health: Option<serde_json::Value>,
}

impl View {
    /// The table, with no size limit and no notice (plain output, --once).
    fn table(&self) -> Vec<String> {
        render(
            self.health.as_ref(),
            &self.sims,
            &self.usage,
            &self.recent,
            None,
            None,
        )
    }

    /// The table drawn in place on the terminal, fitted to it, the notice on top.
    fn draw(&self, screen: &Screen) -> std::io::Result<()> {
        screen.draw(&render(
            self.health.as_ref(),
            &self.sims,
            &self.usage,
            &self.recent,
            screen.size,
            self.notice.as_deref(),
        ))
    }

    /// One table per change: drawn in place, or printed under a time stamp.
    fn show(&self, screen: Option<&Screen>) -> anyhow::Result<()> {
        match screen {
            Some(screen) => self.draw(screen)?,
            None => {
                let mut out = std::io::stdout().lock();
                let table = self.table().join("\n");
                writeln!(out, "--- {}\n{table}", crate::time::unix_now())?;
                out.flush()?;
            }
        }
        Ok(())
    }

    fn note(&mut self, line: String) {
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(line);
    }

    /// For --once --json: a payload kept as the agent published it.
    fn keep_raw(&mut self, topic: &AgentTopic, payload: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        match topic {
            AgentTopic::Health => self.raw_health = Some(v),
            AgentTopic::SimState { iccid } => {
                self.raw.insert(iccid.clone(), v);
            }
            _ => {}
        }
    }

    /// A message on one of the agent's topics taken in; whether what is shown changed
    /// (with `once`, an index counts: it says which rows to wait for).
    fn apply(&mut self, topic: AgentTopic, payload: &[u8], once: bool) -> bool {
        match topic {
            AgentTopic::Health => self.health = serde_json::from_slice(payload).ok(),
            AgentTopic::SimState { iccid } => match serde_json::from_slice::<SimState>(payload) {
                Ok(s) => {
                    self.sims.insert(s.sim.iccid.clone(), s);
                }
                Err(e) => tracing::warn!(%iccid, error = %e, "unreadable SIM state"),
            },
            AgentTopic::Usage => match serde_json::from_slice::<UsageBatch>(payload) {
                Ok(b) => {
                    for u in b.sims {
                        self.usage.insert(u.iccid.clone(), u);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unreadable usage batch"),
            },
            AgentTopic::Events => match serde_json::from_slice::<EventMsg>(payload) {
                // A command's outcome is already shown from its status topic.
                Ok(e) if matches!(e.kind, EventKind::Command { .. }) => return false,
                Ok(e) => self.note(describe_event(&e)),
                Err(e) => tracing::warn!(error = %e, "unreadable event"),
            },
            AgentTopic::CommandStatus { .. } => {
                match serde_json::from_slice::<CommandStatus>(payload) {
                    // Final statuses also come as command events; show the steps.
                    Ok(st) => self.note(format!(
                        "command {} {} -> {}{}",
                        st.id,
                        st.action,
                        st.status.word(),
                        st.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                    )),
                    Err(e) => tracing::warn!(error = %e, "unreadable command status"),
                }
            }
            AgentTopic::Index => {
                match serde_json::from_slice::<crate::contract::SimIndex>(payload) {
                    Ok(i) => self.index = Some(i.iccids.into_iter().collect()),
                    Err(e) => tracing::warn!(error = %e, "unreadable index"),
                }
                return once;
            }
            // The rows themselves come on their own topics (a wildcard subscription).
            AgentTopic::SimPlatform { .. } | AgentTopic::Command => return false,
        }
        true
    }

    /// For --once: the agent's health and every row its index names are in.
    fn complete(&self) -> bool {
        self.health.is_some()
            && self
                .index
                .as_ref()
                .is_some_and(|i| i.iter().all(|iccid| self.sims.contains_key(iccid)))
    }

    /// `watch --once`'s output: the table, or with --json the agent's health and rows as
    /// it published them (present SIMs first, as in the table; health left out when none
    /// came).
    fn print_once(self, mode: Mode, agent: &str) -> anyhow::Result<()> {
        match mode {
            Mode::OnceJson => {
                let mut rows: Vec<&serde_json::Value> = self.raw.values().collect();
                rows.sort_by_key(|r| r.get("present") != Some(&serde_json::Value::Bool(true)));
                let mut doc = serde_json::json!({ "agent": agent, "sims": rows });
                if let Some(h) = self.raw_health {
                    doc["health"] = h;
                }
                outln!("{}", serde_json::to_string_pretty(&doc)?);
            }
            _ => outln!("{}", self.table().join("\n")),
        }
        Ok(())
    }

    /// `watch --once` waited ONCE_WITHIN after hearing the agent: the rows in, or which
    /// of the index's are missing.
    fn give_up(self, mode: Mode, agent_id: &str) -> anyhow::Result<()> {
        // An agent that never had a SIM has published no index: its health and
        // no row is the whole picture.
        if self.index.is_none() && self.health.is_some() && self.sims.is_empty() {
            return self.print_once(mode, agent_id);
        }
        let missing: Vec<&str> = self
            .index
            .iter()
            .flatten()
            .filter(|i| !self.sims.contains_key(*i))
            .map(String::as_str)
            .collect();
        anyhow::bail!(
            "agent {agent_id}: no row on this broker for {} of the SIMs its index names ({}); `simgate platform send --action sync` asks it for all of them again",
            missing.len(),
            missing.join(", ")
        );
    }
}

/// Subscribe to the agent's topics and print the table until cancelled (or once).
pub(super) async fn run(
    conn: super::platform::PlatformConn,
    mode: Mode,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let plain = mode != Mode::Live;
    let once = matches!(mode, Mode::Once | Mode::OnceJson);
    let give_up = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(give_up);
    let agent_id = conn.agent_id.clone();
    let mut peer = conn.peer("watch")?;
    let filter = peer.topics().all();
    // Every agent's retained health too: to name the agents there are when this one
    // is not among them (a mistyped id).
    let everyone = crate::contract::Topics::new("+").health();
    let mut others: std::collections::BTreeSet<String> = Default::default();
    let mut heard = false;
    let unseen = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(unseen);
    let mut screen = if !plain && std::io::stdout().is_terminal() {
        Some(Screen::open()?)
    } else {
        None
    };
    let mut resize = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    let mut view = View::default();
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = resize.recv() => {
                if let Some(screen) = screen.as_mut() {
                    screen.resized();
                    view.draw(screen)?;
                }
                continue;
            }
            _ = &mut give_up, if once => return view.give_up(mode, &agent_id),
            _ = &mut unseen, if !heard && view.notice.is_none() => {
                let seen: Vec<&str> = others.iter().map(String::as_str).collect();
                let text = format!(
                    "no agent {agent_id} has been seen on this broker; agents seen: {}",
                    if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
                );
                if once {
                    anyhow::bail!(text);
                }
                if screen.is_none() {
                    outln!("{text}");
                }
                view.notice = Some(text);
                if let Some(screen) = screen.as_ref() {
                    view.draw(screen)?;
                }
                continue;
            }
            ev = peer.next() => ev,
        };
        let (topic, payload) = match ev {
            Ok(PeerEvent::Connected) => {
                peer.subscribe(filter.clone()).await?;
                peer.subscribe(everyone.clone()).await?;
                unseen
                    .as_mut()
                    .reset(tokio::time::Instant::now() + UNSEEN_AFTER);
                continue;
            }
            Ok(PeerEvent::Foreign { topic }) => {
                if let Some(id) = health_of(&topic) {
                    others.insert(id.to_string());
                }
                continue;
            }
            Ok(PeerEvent::Message { topic, payload }) => {
                if !heard {
                    heard = true;
                    view.notice = None;
                    give_up
                        .as_mut()
                        .reset(tokio::time::Instant::now() + ONCE_WITHIN);
                }
                if mode == Mode::OnceJson {
                    view.keep_raw(&topic, &payload);
                }
                (topic, payload)
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "broker unreachable; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        if !view.apply(topic, &payload, once) {
            continue;
        }
        if once {
            if view.complete() {
                return view.print_once(mode, &agent_id);
            }
            continue;
        }
        view.show(screen.as_ref())?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Location, PlatformRecord, Status};

    #[test]
    fn the_table_shows_platform_fields_and_recent_activity() {
        let mut sims = BTreeMap::new();
        sims.insert(
            "8988211000000430010".to_string(),
            SimState {
                v: 1,
                status: Some(Status::Active),
                sim: crate::sim::Observed::new(
                    "8988211000000430010",
                    true,
                    Location::Reader {
                        reader: "R 00 00".into(),
                    },
                    1,
                ),
                platform: Some(PlatformRecord {
                    status: Some(Status::Active),
                    plan: Some("IoT 1GB".into()),
                    data_left_mb: Some(512.0),
                    labels: vec!["fleet-a".into()],
                    ..Default::default()
                }),
                estimate: None,
                suspended_by: None,
                operator_estimate: None,
            },
        );
        let recent = VecDeque::from(["command c-1 suspend -> failed (no session)".to_string()]);
        let usage = BTreeMap::from([(
            "8988211000000430010".to_string(),
            UsageSample {
                iccid: "8988211000000430010".into(),
                month: "2026-11".into(),
                rx: 3_000_000,
                tx: 500_000,
                at: 1,
            },
        )]);
        let text = render(
            Some(&Health::new(true, 1)),
            &sims,
            &usage,
            &recent,
            None,
            None,
        )
        .join("\n");
        for want in [
            "Active",
            "IoT 1GB",
            "3.5",
            "512.0",
            "fleet-a",
            "R 00 00",
            "c-1 suspend",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    fn row(iccid: &str, estimate: Option<crate::sim::Estimate>) -> SimState {
        SimState {
            v: 1,
            status: Some(Status::Active),
            sim: crate::sim::Observed::new(
                iccid,
                true,
                Location::Modem {
                    port: "/dev/ttyUSB2".into(),
                    slot: Some(1),
                },
                1,
            ),
            platform: Some(PlatformRecord {
                data_left_mb: Some(100.0),
                days_left: Some(9),
                end_user: Some("Truck 12".into()),
                note: Some("spare".into()),
                ..Default::default()
            }),
            estimate,
            suspended_by: None,
            operator_estimate: None,
        }
    }

    #[test]
    fn local_estimates_are_marked_and_the_page_columns_are_all_there() {
        let est = crate::sim::Estimate {
            data_left_mb: Some(42.5),
            days_left: Some(3.0),
            since: 1,
        };
        let sims = BTreeMap::from([(
            "8988211000000430010".to_string(),
            row("8988211000000430010", Some(est)),
        )]);
        let lines = render(None, &sims, &BTreeMap::new(), &VecDeque::new(), None, None);
        let head = &lines[1];
        for col in [
            "ICCID", "PRESENT", "STATUS", "SESSION", "END USER", "LEFT MB", "DAYS", "WHERE", "NOTE",
        ] {
            assert!(head.contains(col), "{col} missing: {head}");
        }
        // Columns with nothing in them on any row are left out.
        for col in [
            "OPERATOR", "PLAN", "COMPANY", "MONTH MB", "TYPE", "LABELS", "RULES",
        ] {
            assert!(!head.contains(col), "{col} is dashes only: {head}");
        }
        let r = &lines[2];
        assert!(
            r.contains("~42.5") && r.contains("~3"),
            "estimates marked: {r}"
        );
        assert!(
            !r.contains("100.0"),
            "the estimate replaces the platform's base: {r}"
        );
        assert!(
            r.contains("Truck 12") && r.contains("spare") && r.contains("/dev/ttyUSB2#1"),
            "{r}"
        );
    }

    #[test]
    fn at_80_columns_the_table_fits_and_no_value_is_cut() {
        let est = crate::sim::Estimate {
            data_left_mb: Some(1042.5),
            days_left: Some(30.0),
            since: 1,
        };
        let mut sims = BTreeMap::new();
        for iccid in ["8988211000000430010", "89314404000000000019"] {
            let mut r = row(iccid, Some(est.clone()));
            r.platform.as_mut().unwrap().company = Some("ACME Logistics International".into());
            r.platform.as_mut().unwrap().plan = Some("IoT 1GB Europe".into());
            sims.insert(iccid.to_string(), r);
        }
        for cols in [80, 120] {
            let lines = render(
                None,
                &sims,
                &BTreeMap::new(),
                &VecDeque::new(),
                Some((24, cols)),
                None,
            );
            for l in &lines {
                assert!(
                    l.chars().count() <= cols,
                    "wider than {cols}: {l:?}\n{lines:#?}"
                );
            }
            let text = lines.join("\n");
            for whole in ["89314404000000000019", "~1042.5", "~30"] {
                assert!(
                    text.split_whitespace().any(|w| w == whole),
                    "{whole} cut at {cols} columns:\n{text}"
                );
            }
            assert!(!text.contains('…'), "nothing cut with an ellipsis:\n{text}");
        }
        // A wider terminal shows the columns a narrow one had to leave out.
        let wide = render(
            None,
            &sims,
            &BTreeMap::new(),
            &VecDeque::new(),
            Some((24, 200)),
            None,
        );
        assert!(
            wide[1].contains("COMPANY") && wide[1].contains("NOTE"),
            "{wide:#?}"
        );
    }

    #[test]
    fn a_short_terminal_gets_a_count_of_the_rows_that_do_not_fit_never_a_scroll() {
        let sims: BTreeMap<String, SimState> = (0..30)
            .map(|i| {
                let iccid = format!("89882110000004300{i:02}");
                (iccid.clone(), row(&iccid, None))
            })
            .collect();
        let recent = VecDeque::from(["#1 inserted".to_string()]);
        let lines = render(
            None,
            &sims,
            &BTreeMap::new(),
            &recent,
            Some((12, 200)),
            None,
        );
        assert_eq!(lines.len(), 12, "{lines:#?}");
        assert!(
            lines.iter().any(|l| l.starts_with("… 24 more SIMs")),
            "{lines:#?}"
        );
        assert_eq!(
            lines.last().unwrap(),
            "  #1 inserted",
            "recent activity stays in view"
        );
        let all = render(None, &sims, &BTreeMap::new(), &recent, None, None);
        assert_eq!(all.len(), 2 + 30 + 3, "no terminal: everything");
    }
}
