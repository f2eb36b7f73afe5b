//! `simgate readers` and `simgate read`.

use crate::card::CardError;
use crate::config::Config;
use crate::observe::CardReport;
use crate::reader;
use std::ffi::CString;
use std::process::ExitCode;

// Both commands block on PC/SC on the process's one thread, with no async runtime
// (cli::main): a one-shot command has nothing else to run, and every thread it hands work
// to is one more wait for the scheduler on a loaded machine.

pub(super) fn readers(json: bool) -> anyhow::Result<ExitCode> {
    let list = reader::establish().and_then(|ctx| reader::list(&ctx))?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        outln!("no PC/SC readers");
    } else {
        let width = list.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
        outln!("{:width$}  CARD  ATR", "READER");
        for r in &list {
            let card = if r.mute {
                "mute"
            } else if r.card_present {
                "yes"
            } else {
                "no"
            };
            outln!(
                "{:width$}  {card:4}  {}",
                r.name,
                r.atr.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Read every named reader at once, each on its own thread (`reader::start_read`),
/// waited for here.
fn read_all(names: Vec<CString>, settings: reader::ReadSettings) -> Vec<CardReport> {
    let pending: Vec<_> = names
        .iter()
        .map(|name| (name, reader::start_read(name, settings)))
        .collect();
    let mut reports: Vec<CardReport> = pending
        .into_iter()
        .map(|(name, read)| {
            let (result, took) = read.wait();
            CardReport::new(
                &name.to_string_lossy(),
                &result,
                crate::time::unix_now(),
                took.as_millis() as u64,
            )
        })
        .collect();
    reports.sort_by(|a, b| a.reader.cmp(&b.reader));
    reports
}

/// Read the one card on this thread, over `ctx`: no thread to hand it to and wait for, no
/// second PC/SC context (each its own round trips to pcscd). PC/SC has no per-call
/// timeout, so a watchdog thread, which sleeps and never wakes before the card timeout,
/// ends the command with the timeout's error if the card outlasts it: in a one-shot
/// command nothing else is pending. A reader that does not exist is the user's error,
/// not a card's.
fn read_here(
    ctx: &pcsc::Context,
    name: &CString,
    settings: reader::ReadSettings,
) -> Result<CardReport, reader::ReaderError> {
    let shown = name.to_string_lossy().into_owned();
    let timeout = settings.card_timeout;
    let who = shown.clone();
    let watchdog = std::thread::Builder::new()
        .name("card timeout".into())
        .spawn(move || {
            std::thread::sleep(timeout);
            let e = reader::ReaderError::Card {
                reader: who,
                source: CardError::Timeout(timeout),
            };
            eprintln!("simgate: {e}");
            eprintln!("simgate: no card could be read");
            std::process::exit(1);
        });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "no card timeout: cannot start its thread");
    }
    let started = std::time::Instant::now();
    let result = reader::read_card(ctx, name, &settings);
    if let Err(e @ reader::ReaderError::UnknownReader { .. }) = result {
        return Err(e);
    }
    Ok(CardReport::new(
        &shown,
        &result,
        crate::time::unix_now(),
        started.elapsed().as_millis() as u64,
    ))
}

pub(super) fn read(only: Option<String>, json: bool, cfg: &Config) -> anyhow::Result<ExitCode> {
    let settings = reader::ReadSettings::from_config(&cfg.readers);
    let ctx = reader::establish()?;
    let names = match only {
        // Connected to by the name given, not looked up first: a wrong name is answered
        // at the connection, with the readers present (reader::read_card).
        Some(name) => vec![CString::new(name.as_str()).or_else(|_| reader::resolve(&ctx, &name))?],
        None => reader::list(&ctx)?
            .into_iter()
            .filter(|r| r.card_present)
            .filter_map(|r| CString::new(r.name).ok())
            .collect(),
    };
    let reports = match names.as_slice() {
        [one] => vec![read_here(&ctx, one, settings)?],
        _ => read_all(names, settings),
    };
    // Unreadable cards are named on stderr; the table and the JSON hold the cards read.
    let mut rows = Vec::new();
    for r in reports {
        match (&r.card, &r.error) {
            (Some(_), _) => rows.push(r),
            (None, e) => eprintln!("simgate: {}", e.as_deref().unwrap_or("card not read")),
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let width = rows
            .iter()
            .map(|r| r.reader.len())
            .max()
            .unwrap_or(6)
            .max(6);
        if !rows.is_empty() {
            outln!(
                "{:width$}  {:20}  LUHN  KIND  FORM          {:32}  {:28}  ATR",
                "READER",
                "ICCID",
                "EID",
                "PIN LOCK"
            );
        }
        for (r, c) in rows.iter().filter_map(|r| Some((r, r.card.as_ref()?))) {
            let luhn = match c.luhn_ok {
                Some(true) => "ok",
                Some(false) => "FAIL",
                None => "-",
            };
            let kind = c.kind.word();
            let form = c.form_text();
            let lock = c.lock.map_or("-".to_string(), |l| l.summary());
            outln!(
                "{:width$}  {:20}  {luhn:4}  {kind:4}  {form:12}  {:32}  {lock:28}  {}",
                r.reader,
                c.iccid.as_deref().unwrap_or("-"),
                c.eid.as_deref().unwrap_or("-"),
                c.atr
            );
        }
    }
    if rows.is_empty() {
        eprintln!("simgate: no card could be read");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
