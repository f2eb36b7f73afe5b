//! Platform commands and records, taking effect exactly once.
//!
//! A command's id is claimed in the store (flushed) before anything else happens and
//! before the MQTT delivery is acknowledged; its outcome is stored before it is
//! reported. A redelivered or repeated id is answered from its record, never executed
//! again. A command whose record says it started but never finished (simgate died
//! mid-way) is reported failed as interrupted: its effect is unknown, so it is not
//! retried behind the platform's back.
//!
//! A command goes claim → plan → execute → finish:
//! - claim (`Commands::claim`): the id stored, duplicates answered from the store;
//! - plan (`plan.rs`, pure): the action, its params and the facts (where the SIM sits,
//!   eSIM or not, a port ModemManager keeps) give a `Plan` or the refusal;
//! - execute (`execute.rs`): `executing` stored first, then one function per plan,
//!   finishing at once or running on a task (`work::spawn`, `work::reread`);
//! - finish (`Commands::finish`): the outcome stored, then reported.
//!
//! Adding a command: its word in `contract::Action`; when it takes params, one
//! `contract::Params` variant and its arm in `contract::parse_params`; one arm in
//! `plan::plan` (with its refusals, and their unit tests beside them) giving one new
//! `Plan` variant; one function in `execute.rs` for that variant, its arm in
//! `execute::execute`. Its modem work goes through `work::act_on_modem` or the
//! supervisor's handle, its card reads through `work::reread`, its events through the
//! Recorder (`ctx.rec.event`). MQTT.md documents it, with an example.

mod execute;
mod messaging;
mod plan;
#[cfg(all(test, feature = "fuzzing"))]
mod props;

use super::work::{Done, Failure, ModemPorts};
use super::{Ctx, DaemonError};
use crate::contract::{
    Action, Command, CommandStatus, CommandStatusWord, EventKind, Refusal, RefusalCode,
    SCHEMA_VERSION,
};
use crate::link::Received;
use crate::sim::PlatformRecord;
use crate::store::commands::{Claim, CommandRecord, CommandState, MAX_COMMAND_IDS};
use plan::{Facts, Host};
use std::collections::HashSet;

/// How long the id of a command refused before its `expires_at` was read is remembered.
const REFUSAL_MEMORY_SECS: u64 = 86_400;

const INTERRUPTED: &str =
    "simgate restarted while the command was in progress; its effect is unknown and it was not repeated";

/// Commands in flight in this process (their async work not yet done).
#[derive(Debug, Default)]
pub(crate) struct Commands {
    running: HashSet<String>,
}

impl Commands {
    /// At start-up: a command left executing by a run that died has an unknown effect.
    /// Report it failed as interrupted (its delivery may have been acknowledged, so
    /// no redelivery would ever settle it). One left received whose time is up will
    /// never run: failed as expired. Then forget the finished ones whose time is up.
    pub(crate) fn recover(ctx: &Ctx) -> Result<(), DaemonError> {
        let now = crate::time::unix_now();
        for mut rec in ctx.store.all_commands()? {
            if ctx.store.get_swap(&rec.id)?.is_some()
                || super::esim_download::owns(&ctx.store, &rec.id)?
            {
                // A swap's or a download's record says where it stood:
                // swap::recover or esim_download::recover finishes it.
                continue;
            }
            let fail = match rec.state {
                CommandState::Executing => Some((RefusalCode::Interrupted, INTERRUPTED.into())),
                CommandState::Received if rec.keep_until != 0 && rec.keep_until <= now => Some((
                    RefusalCode::Expired,
                    format!("expired at {} before it ran", rec.keep_until),
                )),
                _ => None,
            };
            if let Some((code, reason)) = fail {
                rec.state = CommandState::Failed;
                rec.code = Some(code);
                rec.reason = Some(reason);
                rec.updated_at = now;
                tracing::warn!(id = %rec.id, ?code, "command failed at start-up");
                store_and_report(ctx, &mut rec)?;
            } else if rec.unreported {
                // The last run stored this outcome and died before queuing its report:
                // nobody would tell the platform otherwise (its delivery was
                // acknowledged, so the broker does not send the command again).
                tracing::warn!(id = %rec.id, state = %rec.state, "command outcome reported at start-up: the last run died before reporting it");
                report(ctx, &rec, true)?;
                ctx.store.mark_reported(&rec.id)?;
            }
        }
        let forgotten = ctx.store.forget_commands(now)?;
        tracing::debug!(forgotten, "command ids past their time forgotten");
        Ok(())
    }

    /// A command a previous run left running whose work goes on now (a SIM swap
    /// resumed or rolled back at start-up): its outcome arrives as `CommandDone`.
    pub(crate) fn adopt(&mut self, id: String) {
        self.running.insert(id);
    }

    pub(crate) async fn on_platform(
        &mut self,
        ctx: &Ctx,
        msg: Received,
        modems: &dyn ModemPorts,
    ) -> Result<(), DaemonError> {
        match msg {
            Received::Command { command, ack } => {
                match command {
                    Ok(cmd) => self.on_command(ctx, cmd, modems).await?,
                    Err(refusal) => self.on_refused(ctx, refusal)?,
                }
                // Acknowledged only now: the claim is on disk, a redelivery is answered
                // from it.
                if let Some(link) = &ctx.link {
                    link.ack(ack);
                }
            }
            Received::PlatformRecord { iccid, record, ack } => {
                match record {
                    Ok(rec) => {
                        ctx.store.clear_refused_platform(&iccid)?;
                        let rec = rec.unwrap_or_default();
                        if ctx
                            .store
                            .note_received_platform(&iccid, fingerprint(&rec))?
                        {
                            tracing::debug!(%iccid, "platform record redelivered unchanged");
                        } else {
                            execute::set_record(ctx, &iccid, rec)?
                        }
                    }
                    // The same retained record refused again (a reconnect, a restart):
                    // said once.
                    Err(r) if ctx.store.refused_platform_known(&iccid, r.payload_hash)? => {
                        tracing::debug!(%iccid, reason = %r.reason, "platform record refused again");
                    }
                    Err(r) => {
                        tracing::warn!(%iccid, reason = %r.reason, "platform record refused");
                        ctx.rec.event(EventKind::Error {
                            iccid: crate::contract::valid_iccid(&iccid).then(|| iccid.clone()),
                            code: r.code,
                            reason: format!("platform record refused: {}", r.reason),
                        })?;
                        // Remembered once its report is queued: a kill in between
                        // reports it again at the next start, never not at all.
                        ctx.store.note_refused_platform(&iccid, r.payload_hash)?;
                    }
                }
                if let Some(link) = &ctx.link {
                    link.ack(ack);
                }
            }
        }
        Ok(())
    }

    /// An inbound command that failed its checks. With a readable id it gets a failed
    /// status on its own topic (recorded, so a redelivery gets the same answer);
    /// without one, an error event.
    fn on_refused(&mut self, ctx: &Ctx, r: Refusal) -> Result<(), DaemonError> {
        tracing::warn!(id = r.id.as_deref(), code = %r.code, reason = %r.reason, "command refused");
        let Some(id) = r.id.clone() else {
            ctx.rec.event(EventKind::Error {
                iccid: r.iccid.clone(),
                code: r.code,
                reason: format!("command refused: {}", r.reason),
            })?;
            return Ok(());
        };
        let now = crate::time::unix_now();
        let mut rec = CommandRecord {
            id,
            iccid: r.iccid.clone().unwrap_or_default(),
            action: r.action.clone().unwrap_or_default(),
            state: CommandState::Failed,
            code: Some(r.code),
            reason: Some(r.reason.clone()),
            received_at: now,
            updated_at: now,
            // Refused before it could say when it expires: remembered a day, so its
            // redeliveries are answered from the record.
            keep_until: now + REFUSAL_MEMORY_SECS,
            unreported: false,
            rows: None,
            profile: None,
        };
        // Stored with its outcome, final from the start (see `store_and_report`).
        rec.unreported = true;
        match ctx.store.claim_command(&rec, now)? {
            Claim::New => {
                report(ctx, &rec, true)?;
                Ok(ctx.store.mark_reported(&rec.id)?)
            }
            Claim::Known(existing) => self.answer_duplicate(ctx, existing),
            Claim::Full => {
                too_many(&mut rec);
                report(ctx, &rec, true)
            }
        }
    }

    /// claim → plan → execute → finish (see the module's comment).
    async fn on_command(
        &mut self,
        ctx: &Ctx,
        cmd: Command,
        modems: &dyn ModemPorts,
    ) -> Result<(), DaemonError> {
        let Some(mut rec) = self.claim(ctx, &cmd)? else {
            return Ok(());
        };
        let plan = plan::plan(&cmd, &facts(ctx, &cmd, modems)?);
        if let plan::Plan::Refuse(why) = plan {
            return self.finish(ctx, &mut rec, Err(why));
        }
        // Executing is stored before the effect: if simgate dies now, a redelivery finds
        // it and reports the command interrupted instead of running it twice.
        rec.state = CommandState::Executing;
        rec.updated_at = crate::time::unix_now();
        ctx.store.put_command(&rec)?;
        report(ctx, &rec, false)?;
        match execute::execute(ctx, modems, &cmd, plan, &mut rec)? {
            Step::Finished(outcome) => self.finish(ctx, &mut rec, outcome),
            Step::Running => {
                self.running.insert(cmd.id.clone());
                Ok(())
            }
        }
    }

    /// Claim a command's id in the store. `None`: answered already (a duplicate, or
    /// refused because too many ids are remembered); else its record, to run.
    fn claim(&mut self, ctx: &Ctx, cmd: &Command) -> Result<Option<CommandRecord>, DaemonError> {
        let now = crate::time::unix_now();
        let mut rec = CommandRecord {
            id: cmd.id.clone(),
            iccid: cmd.iccid.clone(),
            action: cmd.action.word().to_string(),
            state: CommandState::Received,
            code: None,
            reason: None,
            received_at: now,
            updated_at: now,
            // After it, a repeat is refused as expired: never run twice.
            keep_until: cmd.expires_at,
            unreported: false,
            rows: None,
            profile: None,
        };
        match ctx.store.claim_command(&rec, now)? {
            Claim::New => {
                tracing::info!(id = %cmd.id, iccid = %cmd.iccid, action = cmd.action.word(), "command received");
                report(ctx, &rec, false)?;
                Ok(Some(rec))
            }
            // Not remembered, and nothing done: said so, once.
            Claim::Full => {
                tracing::warn!(id = %cmd.id, "too many command ids remembered: command refused");
                too_many(&mut rec);
                report(ctx, &rec, true)?;
                Ok(None)
            }
            // Claimed by a run of simgate that died before it acknowledged the delivery
            // or started anything: no effect happened, so processing it now is its
            // first and only execution.
            Claim::Known(existing)
                if existing.state == CommandState::Received && !self.running.contains(&cmd.id) =>
            {
                tracing::info!(id = %cmd.id, "command redelivered before it ran: running it now");
                // The dead run may have died before saying so.
                report(ctx, &existing, false)?;
                Ok(Some(existing))
            }
            Claim::Known(existing) => {
                self.answer_duplicate(ctx, existing)?;
                Ok(None)
            }
        }
    }

    /// A command's asynchronous work (card re-read, modem action) finished.
    pub(crate) async fn on_done(
        &mut self,
        ctx: &Ctx,
        id: String,
        result: Done,
    ) -> Result<(), DaemonError> {
        self.running.remove(&id);
        let Some(mut rec) = ctx.store.get_command(&id)? else {
            return Ok(());
        };
        let outcome = match result {
            Ok(Some(obs)) => {
                ctx.record(&obs).await?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        // A suspend or resume changes the row's `suspended_by` even when the session
        // was already as asked (nothing observed changed, so `record` published
        // nothing), and a refill may lift a rule's: the row goes out again before the
        // command is successful.
        let session = [
            Action::Suspend.word(),
            Action::Resume.word(),
            Action::Refill.word(),
        ];
        if outcome.is_ok() && session.contains(&rec.action.as_str()) {
            if let Some(obs) = ctx.store.get_observed(&rec.iccid)? {
                ctx.rec.publish_row(&obs)?;
            }
        }
        self.finish(ctx, &mut rec, outcome)
    }

    fn finish(
        &mut self,
        ctx: &Ctx,
        rec: &mut CommandRecord,
        outcome: Result<(), Failure>,
    ) -> Result<(), DaemonError> {
        match outcome {
            Ok(()) => {
                rec.state = CommandState::Successful;
                rec.code = None;
                rec.reason = None;
            }
            Err((code, reason)) => {
                rec.state = CommandState::Failed;
                rec.code = Some(code);
                rec.reason = Some(reason);
            }
        }
        rec.updated_at = crate::time::unix_now();
        tracing::info!(id = %rec.id, state = %rec.state, code = rec.code.map(|c| c.word()), reason = rec.reason.as_deref(), "command finished");
        store_and_report(ctx, rec)
    }

    /// A command id seen before: answer from its record.
    fn answer_duplicate(&mut self, ctx: &Ctx, mut rec: CommandRecord) -> Result<(), DaemonError> {
        tracing::info!(id = %rec.id, state = %rec.state, "duplicate command: answered from its record");
        if rec.state.is_final() || self.running.contains(&rec.id) {
            return report(ctx, &rec, false);
        }
        // Claimed by an earlier run of simgate that died before finishing.
        self.finish(
            ctx,
            &mut rec,
            Err((RefusalCode::Interrupted, INTERRUPTED.into())),
        )
    }
}

/// A stable fingerprint of a platform record as received (over its JSON, which serde
/// writes in field order): equal records, equal fingerprints, across restarts.
fn fingerprint(rec: &PlatformRecord) -> u64 {
    crate::rules::fingerprint(&serde_json::to_vec(rec).unwrap_or_default())
}

/// A command refused because [`MAX_COMMAND_IDS`] ids are remembered: nothing was
/// stored, so it is not answered from a record later.
fn too_many(rec: &mut CommandRecord) {
    rec.state = CommandState::Failed;
    rec.code = Some(RefusalCode::TooManyCommands);
    rec.reason = Some(format!(
        "this agent remembers {MAX_COMMAND_IDS} unexpired command ids; nothing was done, send it again later"
    ));
}

/// Store a final outcome, then report it (its status and its `command` event). Stored
/// first, so a crash in between never runs the command again; marked `unreported`
/// until the report is in the outbox, so such a crash is reported by the next start
/// (`Commands::recover`) instead of never: the command's delivery was acknowledged
/// long ago, no redelivery would ask again. (Found building the chaos suite's check
/// that every command gets an outcome: tests/it/chaos.rs.)
fn store_and_report(ctx: &Ctx, rec: &mut CommandRecord) -> Result<(), DaemonError> {
    rec.unreported = true;
    ctx.store.put_command(rec)?;
    // A debug-build-only hook: die here, as a power cut would, for the test that
    // shows the outcome still reaches the platform.
    #[cfg(debug_assertions)]
    if std::env::var("SIMGATE_DEBUG_DIE_AFTER_OUTCOME").is_ok_and(|id| id == rec.id) {
        tracing::warn!(id = %rec.id, "SIMGATE_DEBUG_DIE_AFTER_OUTCOME: dying before the report");
        std::process::abort();
    }
    report(ctx, rec, true)?;
    rec.unreported = false;
    Ok(ctx.store.mark_reported(&rec.id)?)
}

/// Publish a command's status; final ones also as a `command` event.
fn report(ctx: &Ctx, rec: &CommandRecord, as_event: bool) -> Result<(), DaemonError> {
    if ctx.link.is_none() && ctx.rec.feed.is_none() {
        return Ok(());
    }
    let status = match rec.state {
        CommandState::Received => CommandStatusWord::Received,
        CommandState::Executing => CommandStatusWord::Executing,
        CommandState::Successful => CommandStatusWord::Successful,
        CommandState::Failed => CommandStatusWord::Failed,
    };
    // To the platform and the page alike (the recorder: src/agent/recorder.rs).
    ctx.rec.command_status(
        &CommandStatus {
            v: SCHEMA_VERSION,
            id: rec.id.clone(),
            iccid: rec.iccid.clone(),
            action: rec.action.clone(),
            status,
            code: rec.code,
            reason: rec.reason.clone(),
            rows: rec.rows,
            result: match rec.state {
                CommandState::Successful => ctx.store.command_result(&rec.id)?,
                _ => None,
            },
            profile: rec.profile.clone(),
            ts: crate::time::unix_now(),
        },
        as_event,
    )?;
    Ok(())
}

/// Where a command stands once its executor returned.
#[derive(Debug)]
pub(crate) enum Step {
    /// Done now: its outcome.
    Finished(Result<(), Failure>),
    /// Work under way; its outcome arrives as `Event::CommandDone`.
    Running,
}

/// What the plan needs from outside the command: where the SIM sits (when present),
/// whether it is an eSIM, whether its modem port is ModemManager's.
fn facts(ctx: &Ctx, cmd: &Command, modems: &dyn ModemPorts) -> Result<Facts, DaemonError> {
    let obs = ctx.store.get_observed(&cmd.iccid)?.filter(|o| o.present);
    let host = obs.as_ref().map(Host::of);
    let shared_with_modemmanager = match &host {
        Some(Host::Modem { port, .. }) => modems.shared_with_modemmanager(port),
        _ => false,
    };
    Ok(Facts {
        esim: obs
            .as_ref()
            .is_some_and(|o| o.form_factor == Some(crate::sim::FormFactor::Esim)),
        host,
        shared_with_modemmanager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::contract::{Action, Params};
    use crate::modem::supervisor::ModemHandle;
    use crate::sim::{Location, Observed};

    fn cmd(action: Action) -> Command {
        Command {
            id: "c".into(),
            iccid: "8988211000000430010".into(),
            action,
            params: Params::None,
            expires_at: u64::MAX,
        }
    }

    struct NoModems;
    impl ModemPorts for NoModems {
        fn handle(&self, _: &str) -> Option<ModemHandle> {
            None
        }
    }

    fn ctx(tag: &str) -> (Ctx, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("simgate-cmd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (events, _rx) = tokio::sync::mpsc::channel(4);
        (
            Ctx::new(
                crate::store::Store::open(&dir).unwrap(),
                None,
                events,
                crate::reader::ReadSettings::from_config(&Default::default()),
            ),
            dir,
        )
    }

    fn record(id: &str, state: CommandState, updated_at: u64) -> CommandRecord {
        CommandRecord {
            id: id.into(),
            iccid: "8988211000000430010".into(),
            action: "refresh".into(),
            state,
            code: None,
            reason: None,
            received_at: updated_at,
            updated_at,
            keep_until: updated_at + 3_600,
            unreported: false,
            rows: None,
            profile: None,
        }
    }

    #[test]
    fn a_command_left_executing_by_a_dead_run_is_failed_as_interrupted_at_start_up() {
        let (ctx, dir) = ctx("recover");
        let now = crate::time::unix_now();
        ctx.store
            .put_command(&record("e", CommandState::Executing, now))
            .unwrap();
        ctx.store
            .put_command(&record("old", CommandState::Successful, 10))
            .unwrap();
        ctx.store
            .put_command(&record("r", CommandState::Received, now))
            .unwrap();
        // Finished, its report never queued (killed in between): reported now.
        let u = CommandRecord {
            unreported: true,
            rows: None,
            ..record("u", CommandState::Successful, now)
        };
        ctx.store.put_command(&u).unwrap();
        Commands::recover(&ctx).unwrap();
        let u = ctx.store.get_command("u").unwrap().unwrap();
        assert_eq!((u.state, u.unreported), (CommandState::Successful, false));
        let e = ctx.store.get_command("e").unwrap().unwrap();
        assert!(!e.unreported, "the interrupted outcome was reported");
        assert_eq!(e.state, CommandState::Failed);
        assert_eq!(e.code, Some(RefusalCode::Interrupted));
        assert_eq!(e.reason.as_deref(), Some(INTERRUPTED), "no code prefix");
        assert_eq!(
            ctx.store.get_command("old").unwrap(),
            None,
            "old record kept"
        );
        // Received: its delivery was never acknowledged; the redelivery runs it.
        assert_eq!(
            ctx.store.get_command("r").unwrap().unwrap().state,
            CommandState::Received
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_redelivered_command_that_never_started_runs_once() {
        let (ctx, dir) = ctx("resume");
        let now = crate::time::unix_now();
        ctx.store
            .put_command(&record("sr", CommandState::Received, now))
            .unwrap();
        let reader = Location::Reader {
            reader: "R 00 00".into(),
        };
        let obs = Observed::new("8988211000000430010", true, reader, now);
        ctx.store.put_observed(&obs).unwrap();
        let mut cmds = Commands::default();
        let cmd = Command {
            id: "sr".into(),
            iccid: obs.iccid.clone(),
            action: Action::SetRecord,
            params: Params::Record(PlatformRecord {
                plan: Some("IoT 1GB".into()),
                ..Default::default()
            }),
            expires_at: u64::MAX,
        };
        cmds.on_command(&ctx, cmd.clone(), &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_command("sr").unwrap().unwrap().state,
            CommandState::Successful
        );
        assert_eq!(
            ctx.store
                .get_platform(&obs.iccid)
                .unwrap()
                .unwrap()
                .plan
                .as_deref(),
            Some("IoT 1GB")
        );
        // And once more: answered from the record, the cached record untouched.
        ctx.store
            .put_platform(&obs.iccid, &PlatformRecord::default())
            .unwrap();
        cmds.on_command(&ctx, cmd, &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_platform(&obs.iccid).unwrap().unwrap().plan,
            None
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn past_the_cap_a_new_command_is_refused_unremembered_and_a_known_one_answered() {
        let (ctx, dir) = ctx("cap");
        let now = crate::time::unix_now();
        for i in 0..MAX_COMMAND_IDS {
            let claim = ctx.store.claim_command(
                &record(&format!("c{i}"), CommandState::Successful, now),
                now,
            );
            assert_eq!(claim.unwrap(), Claim::New);
        }
        let mut cmds = Commands::default();
        let mut c = cmd(Action::Refresh);
        c.id = "one-too-many".into();
        c.expires_at = now + 60;
        cmds.on_command(&ctx, c, &NoModems).await.unwrap();
        assert_eq!(ctx.store.get_command("one-too-many").unwrap(), None);
        // A repeat of a remembered id is still answered from its record (not refused).
        let mut known = cmd(Action::Refresh);
        known.id = "c7".into();
        cmds.on_command(&ctx, known, &NoModems).await.unwrap();
        assert_eq!(
            ctx.store.get_command("c7").unwrap().unwrap().state,
            CommandState::Successful
        );
        drop(ctx);
        let _ = std::fs::remove_dir_all(dir);
    }
}
