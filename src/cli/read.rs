//! `simgate readers` and `simgate read`.

use crate::config::Config;
use crate::reader::{self, CardRead, ReaderError};
use anyhow::Context as _;
use serde::Serialize;
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

/// One row of `simgate read`.
#[derive(Debug, Serialize)]
pub(crate) struct ReadRow {
    reader: String,
    /// `None` for a Blank eSIM whose MF has no EF.ICCID.
    iccid: Option<String>,
    luhn_ok: bool,
    kind: crate::card::CardKind,
    form_factor: crate::sim::FormFactor,
    #[serde(skip_serializing_if = "Option::is_none")]
    eid: Option<String>,
    /// An eUICC with no enabled profile.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    blank_esim: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<crate::sim::Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<String>,
    atr: String,
    /// APDUs the identification budget counts, and every APDU sent.
    apdus: u32,
    apdus_total: u32,
    /// Identification time: connect to disconnect, in this process.
    ms: u64,
}

impl ReadRow {
    fn new(r: &CardRead, ms: u64) -> Self {
        let obs = crate::daemon::observed_from_read(r);
        ReadRow {
            reader: r.reader.clone(),
            iccid: r.identity.iccid.as_ref().map(|i| i.to_string()),
            luhn_ok: obs.iccid_luhn_ok,
            kind: r.identity.kind,
            form_factor: obs.form_factor.unwrap_or(crate::sim::FormFactor::Physical),
            status: obs.local_status(),
            blank_esim: obs.blank_esim,
            eid: obs.eid,
            problem: obs.problem,
            imsi: obs.imsi,
            spn: obs.spn,
            operator: obs.operator,
            atr: r.atr.clone(),
            apdus: r.identity.apdus,
            apdus_total: r.identity.apdus_total,
            ms,
        }
    }
}

/// Read every named reader at once, each on its own thread (reader::read_card_timeout).
fn read_all(
    names: Vec<std::ffi::CString>,
    settings: reader::ReadSettings,
) -> Vec<(Result<CardRead, ReaderError>, u64)> {
    let handles: Vec<_> = names
        .into_iter()
        .map(|n| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let r = reader::read_card_timeout(&n, settings);
                (r, started.elapsed().as_millis() as u64)
            })
        })
        .collect();
    handles
        .into_iter()
        .filter_map(|h| match h.join() {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::error!("a reader thread panicked");
                None
            }
        })
        .collect()
}

pub(super) async fn read(
    only: Option<String>,
    json: bool,
    cfg: &Config,
) -> anyhow::Result<ExitCode> {
    let settings = reader::ReadSettings::from_config(&cfg.readers);
    let results: Vec<(Result<CardRead, ReaderError>, u64)> = blocking(move || {
        let ctx = reader::establish()?;
        let names = match &only {
            Some(name) => vec![reader::resolve(&ctx, name)?],
            None => reader::list(&ctx)?
                .into_iter()
                .filter(|r| r.card_present)
                .filter_map(|r| std::ffi::CString::new(r.name).ok())
                .collect(),
        };
        Ok::<_, ReaderError>(read_all(names, settings))
    })
    .await??;
    let mut rows = Vec::new();
    for (result, ms) in results {
        match result {
            Ok(read) => rows.push(ReadRow::new(&read, ms)),
            Err(e) => eprintln!("simgate: {e}"),
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
                "{:width$}  {:20}  LUHN  KIND  FORM      {:32}  ATR",
                "READER", "ICCID", "EID"
            );
        }
        for r in &rows {
            let luhn = if r.luhn_ok { "ok" } else { "FAIL" };
            let kind = match r.kind {
                crate::card::CardKind::Uicc => "uicc",
                crate::card::CardKind::Gsm => "gsm",
            };
            let form = match r.form_factor {
                crate::sim::FormFactor::Physical => "physical",
                crate::sim::FormFactor::Esim => "esim",
            };
            println!(
                "{:width$}  {:20}  {luhn:4}  {kind:4}  {form:8}  {:32}  {}",
                r.reader,
                r.iccid.as_deref().unwrap_or("-"),
                r.eid.as_deref().unwrap_or("-"),
                r.atr
            );
        }
    }
    if rows.is_empty() {
        eprintln!("simgate: no card could be read");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
