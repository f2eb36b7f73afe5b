//! `simgate readers` and `simgate read`.

use crate::config::Config;
use crate::observe::CardReport;
use crate::reader::{self, ReaderError};
use anyhow::Context as _;
use std::process::ExitCode;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("PC/SC worker thread failed")
}

pub(super) async fn readers(json: bool) -> anyhow::Result<ExitCode> {
    let list = blocking(|| reader::establish().and_then(|ctx| reader::list(&ctx))).await??;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else if list.is_empty() {
        println!("no PC/SC readers");
    } else {
        let width = list.iter().map(|r| r.name.len()).max().unwrap_or(6).max(6);
        println!("{:width$}  CARD  ATR", "READER");
        for r in &list {
            let card = if r.mute {
                "mute"
            } else if r.card_present {
                "yes"
            } else {
                "no"
            };
            println!(
                "{:width$}  {card:4}  {}",
                r.name,
                r.atr.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Read every named reader at once, each on its own thread (`reader::spawn_read`).
fn read_all(names: Vec<String>, settings: reader::ReadSettings) -> Vec<CardReport> {
    let (tx, rx) = std::sync::mpsc::channel();
    let count = names.len();
    for name in names {
        let tx = tx.clone();
        let shown = name.clone();
        reader::spawn_read(name, settings, move |result, took| {
            let at = crate::time::unix_now();
            // The receiver waits for every read: it is there.
            let _ = tx.send(CardReport::new(
                &shown,
                &result,
                at,
                took.as_millis() as u64,
            ));
        });
    }
    drop(tx);
    let mut reports: Vec<CardReport> = rx.iter().take(count).collect();
    reports.sort_by(|a, b| a.reader.cmp(&b.reader));
    reports
}

pub(super) async fn read(
    only: Option<String>,
    json: bool,
    cfg: &Config,
) -> anyhow::Result<ExitCode> {
    let settings = reader::ReadSettings::from_config(&cfg.readers);
    let reports = blocking(move || {
        let ctx = reader::establish()?;
        let names = match &only {
            Some(name) => vec![reader::resolve(&ctx, name)?.to_string_lossy().into_owned()],
            None => reader::list(&ctx)?
                .into_iter()
                .filter(|r| r.card_present)
                .map(|r| r.name)
                .collect(),
        };
        Ok::<_, ReaderError>(read_all(names, settings))
    })
    .await??;
    // Unreadable cards are named on stderr; the table and the JSON hold the cards read.
    let mut rows = Vec::new();
    for r in reports {
        match (&r.card, &r.error) {
            (Some(_), _) => rows.push(r),
            (None, e) => eprintln!("simgate: {}", e.as_deref().unwrap_or("card not read")),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let width = rows
            .iter()
            .map(|r| r.reader.len())
            .max()
            .unwrap_or(6)
            .max(6);
        if !rows.is_empty() {
            println!(
                "{:width$}  {:20}  LUHN  KIND  FORM          {:32}  ATR",
                "READER", "ICCID", "EID"
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
            println!(
                "{:width$}  {:20}  {luhn:4}  {kind:4}  {form:12}  {:32}  {}",
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
