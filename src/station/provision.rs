//! Provisioning at the station (`simgate station --provision FILE.csv`): each Blank eUICC
//! inserted gets a profile from the batch's activation codes (src/station/codes.rs), the
//! code meant for its EID or else the next unused one, through the LPA's download engine
//! (src/rsp/download.rs) — one download per reader, readers in parallel.
//!
//! A code is used once. Which code went to which EID is stored (src/store/provision.rs)
//! and flushed before the download starts, and again (with the transaction) before the
//! package is loaded; only what the card says afterwards frees it. So:
//! - a download that failed with the card still answering is settled at once: the
//!   engine's reconcile lists the profiles; landed → used, not landed → offered again;
//! - a card pulled (or lost) while its package was loading, or a station killed then,
//!   leaves the code bound to that EID; when the card comes back, the interrupted session
//!   is reconciled (`reconcile_interrupted`) before anything else, and the code is marked
//!   used (the profile landed) or downloaded again onto that same card (it did not);
//! - a code the SM-DP+ refuses (an unknown matching ID, a wrong confirmation code) is
//!   never offered again.
//!
//! Confirmation codes and matching IDs never reach a log, the store or the screen.

use super::codes::Code;
use crate::card::es10b::{DeviceInfo, Preview};
use crate::card::esim::{self, Action, Isdr};
use crate::card::{euicc, Iccid};
use crate::observe::{ProvisionReport, ProvisionResult, ProvisionStage};
use crate::reader::CardRead;
use crate::rsp::download::{self, Observer, Order, Step};
use crate::rsp::es9::Https;
use crate::store::provision::{AssignState, Assignment};
use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What `--provision` brings to a station.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The codes' file, for the person.
    pub file: PathBuf,
    pub codes: Vec<Code>,
    /// The results CSV.
    pub results: PathBuf,
    /// TLS to the SM-DP+s, trusting the configured CIs only.
    pub tls: Arc<rustls::ClientConfig>,
    pub smdp_timeout: Duration,
    pub card_timeout: Duration,
    /// Provision eUICCs with a profile enabled too (`--provision-non-blank`).
    pub non_blank: bool,
}

/// A row of the results CSV (src/station/csv.rs): what a provisioning ended in.
#[derive(Debug, Clone)]
pub struct Row {
    pub at: u64,
    pub reader: String,
    pub eid: String,
    pub iccid: Option<String>,
    /// The code's line and text (the activation code, never its confirmation code).
    pub code: Option<(usize, String)>,
    /// The code's labels (its line's `labels`), for whoever files the cards.
    pub labels: Vec<String>,
    pub result: ProvisionResult,
    pub words: String,
    pub ms: Option<u64>,
}

/// A download job's end, back to the station's loop.
#[derive(Debug)]
pub struct Finished {
    reader: String,
    eid: String,
    key: String,
    started: Instant,
    result: JobResult,
}

#[derive(Debug)]
enum JobResult {
    /// The profile is on the card.
    Installed { iccid: String, preview: Preview },
    /// It is not, and the card said so: the code is free again.
    NotLanded { words: String, refused: bool },
    /// What the card holds is unknown (it left, or stopped answering).
    Unknown { words: String },
}

/// The batch's codes and who holds them.
#[derive(Debug)]
pub struct Provisioner {
    plan: Plan,
    store: Store,
    /// Code key → its assignment, as stored.
    held: HashMap<String, Assignment>,
    /// Readers with a download under way.
    busy: HashSet<String>,
    progress: mpsc::UnboundedSender<ProvisionReport>,
    done: mpsc::UnboundedSender<Finished>,
}

/// What the loop is told to do with a card.
#[derive(Debug)]
pub enum Decision {
    /// Not provisioned (why, in words): shown, and a row of the results CSV.
    Skipped(ProvisionReport, Row),
    /// A download was started; its progress and end come on the channels.
    Started(ProvisionReport),
}

impl Provisioner {
    /// Load the assignments of earlier runs. Codes assigned but never loaded (a kill
    /// before the package) are free again: nothing can have landed.
    pub fn new(
        plan: Plan,
        store: Store,
    ) -> Result<
        (
            Provisioner,
            mpsc::UnboundedReceiver<ProvisionReport>,
            mpsc::UnboundedReceiver<Finished>,
        ),
        StoreError,
    > {
        let mut held = HashMap::new();
        for a in store.assignments()? {
            if a.state == AssignState::Assigned {
                store.release_assignment(&a.code)?;
            } else {
                held.insert(a.code.clone(), a);
            }
        }
        let (ptx, prx) = mpsc::unbounded_channel();
        let (dtx, drx) = mpsc::unbounded_channel();
        Ok((
            Provisioner {
                plan,
                store,
                held,
                busy: HashSet::new(),
                progress: ptx,
                done: dtx,
            },
            prx,
            drx,
        ))
    }

    /// The batch's standing, for the header: used, held by a card pulled mid-download,
    /// refused, free.
    pub fn standing(&self) -> String {
        let (mut used, mut pulled, mut refused) = (0, Vec::new(), 0);
        for c in &self.plan.codes {
            match self.held.get(&c.key).map(|a| &a.state) {
                Some(AssignState::Used { .. }) => used += 1,
                Some(AssignState::Refused { .. }) => refused += 1,
                Some(_) => pulled.push(self.held[&c.key].eid.clone()),
                None => {}
            }
        }
        let free = self.plan.codes.len() - used - refused - pulled.len();
        let mut s = format!(
            "{}: {} codes, {used} used, {free} free",
            self.plan.file.display(),
            self.plan.codes.len()
        );
        if refused > 0 {
            s.push_str(&format!(", {refused} refused by the SM-DP+"));
        }
        if !pulled.is_empty() {
            s.push_str(&format!(
                ", {} held by eUICCs pulled mid-download (insert them again to settle: {})",
                pulled.len(),
                pulled.join(", ")
            ));
        }
        s
    }

    pub fn results(&self) -> &std::path::Path {
        &self.plan.results
    }

    fn code(&self, key: &str) -> Option<&Code> {
        self.plan.codes.iter().find(|c| c.key == key)
    }

    /// A card was read in `reader` (a current read): provision it, or say why not.
    pub fn on_read(&mut self, read: &CardRead) -> Result<Option<Decision>, StoreError> {
        let reader = read.reader.clone();
        if self.busy.contains(&reader) {
            return Ok(None);
        }
        let id = &read.identity;
        let skip = |eid: Option<String>, words: String| {
            let iccid = id.iccid.as_ref().map(|i| i.to_string());
            let row = Row {
                at: crate::time::unix_now(),
                reader: reader.clone(),
                eid: eid.clone().unwrap_or_default(),
                iccid: iccid.clone(),
                code: None,
                labels: Vec::new(),
                result: ProvisionResult::Skipped,
                words: words.clone(),
                ms: None,
            };
            let shown = ProvisionReport {
                reader: reader.clone(),
                eid,
                stage: ProvisionStage::Done {
                    result: ProvisionResult::Skipped,
                    words,
                    iccid,
                    line: None,
                    ms: None,
                },
            };
            Ok(Some(Decision::Skipped(shown, row)))
        };
        let Some(eid) = id.euicc.as_ref().and_then(|e| e.eid.clone()) else {
            return skip(
                None,
                "not an eUICC: nothing to provision — take it out".into(),
            );
        };
        let eid = eid.as_str().to_string();
        // This card's own record first: a code it holds, spent or to settle.
        let mine = self
            .held
            .values()
            .filter(|a| a.eid == eid && self.code(&a.code).is_some())
            .find(|a| !matches!(a.state, AssignState::Refused { .. }))
            .cloned();
        if let Some(a) = &mine {
            if let AssignState::Used { iccid } = &a.state {
                let line = self.code(&a.code).map_or(0, |c| c.line);
                return skip(
                    Some(eid),
                    format!("already provisioned: profile {iccid} from line {line} — take it out"),
                );
            }
        }
        if mine.is_none() && !id.is_blank_esim() && !self.plan.non_blank {
            let listed = id.euicc.as_ref().is_some_and(|e| e.profiles.is_some());
            let why = match (listed, &id.iccid) {
                (true, Some(i)) => format!("not Blank: profile {i} is enabled"),
                (true, None) => "not Blank: a profile is enabled".to_string(),
                // Unknown is not Blank: a card is never provisioned on a guess.
                (false, _) => {
                    "its profiles could not be listed, so it may not be Blank".to_string()
                }
            };
            return skip(
                Some(eid),
                format!(
                    "{why}; skipped (--provision-non-blank provisions it anyway) — take it out"
                ),
            );
        }
        let (code, for_this_eid, settle) = match &mine {
            Some(a) => {
                let Some(c) = self.code(&a.code) else {
                    return Ok(None);
                };
                (
                    c.clone(),
                    c.eid.as_deref() == Some(eid.as_str()),
                    Some(a.clone()),
                )
            }
            None => {
                let free = |c: &&Code| !self.held.contains_key(&c.key);
                let meant = self
                    .plan
                    .codes
                    .iter()
                    .filter(free)
                    .find(|c| c.eid.as_deref() == Some(eid.as_str()));
                match meant.or_else(|| {
                    self.plan
                        .codes
                        .iter()
                        .filter(free)
                        .find(|c| c.eid.is_none())
                }) {
                    Some(c) => (c.clone(), c.eid.is_some(), None),
                    None => {
                        return skip(
                            Some(eid),
                            "no code left for this eUICC: the batch is used up — take it out"
                                .into(),
                        )
                    }
                }
            }
        };
        // Stored before anything touches the card: from here on the code is this EID's.
        if settle.is_none() {
            let a = Assignment {
                code: code.key.clone(),
                eid: eid.clone(),
                state: AssignState::Assigned,
                at: crate::time::unix_now(),
            };
            self.store.put_assignment(&a)?;
            self.held.insert(code.key.clone(), a);
        }
        if let Some(a) = &settle {
            tracing::info!(%reader, eid = %eid, line = code.line, state = ?a.state, "this eUICC holds a code already: settled with the card first");
        }
        self.busy.insert(reader.clone());
        let job = Job {
            reader: reader.clone(),
            eid: eid.clone(),
            code: code.clone(),
            settle,
            store: self.store.clone(),
            progress: self.progress.clone(),
            plan: self.plan.clone(),
        };
        let done = self.done.clone();
        let rt = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _ = done.send(job.run(rt));
        });
        Ok(Some(Decision::Started(ProvisionReport {
            reader,
            eid: Some(eid),
            stage: ProvisionStage::Assigned {
                line: code.line,
                for_this_eid,
            },
        })))
    }

    /// A download ended: settle its code (stored), and say what the person sees and the
    /// results CSV records.
    pub fn on_finished(&mut self, f: Finished) -> Result<(ProvisionReport, Row), StoreError> {
        self.busy.remove(&f.reader);
        let code = self.code(&f.key).cloned();
        let ms = f.started.elapsed().as_millis() as u64;
        let now = crate::time::unix_now();
        // The job stored the transaction as it went: the store is the truth.
        let stored = self
            .store
            .assignments()?
            .into_iter()
            .find(|a| a.code == f.key);
        if let Some(a) = &stored {
            self.held.insert(f.key.clone(), a.clone());
        }
        let (result, words, iccid) = match f.result {
            JobResult::Installed { iccid, preview } => {
                let a = Assignment {
                    code: f.key.clone(),
                    eid: f.eid.clone(),
                    state: AssignState::Used {
                        iccid: iccid.clone(),
                    },
                    at: now,
                };
                self.store.put_assignment(&a)?;
                self.held.insert(f.key.clone(), a);
                (
                    ProvisionResult::Ok,
                    format!(
                        "OK — take it out: {} ({}) installed",
                        preview.name, preview.provider
                    ),
                    Some(iccid),
                )
            }
            JobResult::NotLanded { words, refused } => {
                if refused {
                    let a = Assignment {
                        code: f.key.clone(),
                        eid: f.eid.clone(),
                        state: AssignState::Refused { why: words.clone() },
                        at: now,
                    };
                    self.store.put_assignment(&a)?;
                    self.held.insert(f.key.clone(), a);
                } else {
                    self.store.release_assignment(&f.key)?;
                    self.held.remove(&f.key);
                }
                let again = if refused {
                    "the code is set aside"
                } else {
                    "nothing installed; the code is offered again"
                };
                (
                    ProvisionResult::Failed,
                    format!("FAILED: {words} ({again}) — take it out"),
                    None,
                )
            }
            JobResult::Unknown { words } => match stored.map(|a| a.state) {
                // The package was loading: the code stays this card's until it is back.
                Some(AssignState::Loading { .. }) => (
                    ProvisionResult::Pulled,
                    format!(
                        "CARD PULLED mid-download ({words}): its code stays with EID {} until it is inserted again",
                        f.eid
                    ),
                    None,
                ),
                // Nothing was loaded: nothing can have landed.
                _ => {
                    self.store.release_assignment(&f.key)?;
                    self.held.remove(&f.key);
                    (
                        ProvisionResult::Pulled,
                        format!(
                            "CARD PULLED before its profile was sent ({words}): nothing installed; the code is offered again"
                        ),
                        None,
                    )
                }
            },
        };
        let progress = ProvisionReport {
            reader: f.reader.clone(),
            eid: Some(f.eid.clone()),
            stage: ProvisionStage::Done {
                result,
                words: words.clone(),
                iccid: iccid.clone(),
                line: code.as_ref().map(|c| c.line),
                ms: Some(ms),
            },
        };
        let row = Row {
            at: now,
            reader: f.reader,
            eid: f.eid,
            iccid,
            labels: code.as_ref().map(|c| c.labels.clone()).unwrap_or_default(),
            code: code.map(|c| (c.line, c.text.expose().to_string())),
            result,
            words,
            ms: Some(ms),
        };
        Ok((progress, row))
    }
}

/// Everything one card's download needs, moved into its thread.
struct Job {
    reader: String,
    eid: String,
    code: Code,
    /// An earlier assignment of this code to this card, to settle first.
    settle: Option<Assignment>,
    store: Store,
    progress: mpsc::UnboundedSender<ProvisionReport>,
    plan: Plan,
}

impl Job {
    fn run(self, rt: tokio::runtime::Handle) -> Finished {
        let started = Instant::now();
        let (reader, eid, key) = (self.reader.clone(), self.eid.clone(), self.code.key.clone());
        let name = std::ffi::CString::new(reader.clone());
        // The whole download in one PC/SC transaction, bounded as `esim download` is:
        // five SM-DP+ calls' worth and four card time-outs.
        let bound = self.plan.smdp_timeout * 5 + self.plan.card_timeout * 4;
        let result = match name {
            Err(_) => JobResult::NotLanded {
                words: "the reader's name is not a C string".into(),
                refused: false,
            },
            Ok(name) => match crate::reader::with_card(&name, bound, move |t| {
                let r = match Isdr::select_basic(t, euicc::shipped_aids()) {
                    Ok(mut isdr) => {
                        let r = self.on(&mut isdr, rt);
                        let _ = isdr.finish();
                        r
                    }
                    Err(e) => JobResult::Unknown {
                        words: format!("the eUICC's ISD-R did not answer: {e}"),
                    },
                };
                (r, false)
            }) {
                Ok(r) => r,
                Err(e) => JobResult::Unknown {
                    words: e.to_string(),
                },
            },
        };
        Finished {
            reader,
            eid,
            key,
            started,
            result,
        }
    }

    fn show(&self, stage: ProvisionStage) {
        let _ = self.progress.send(ProvisionReport {
            reader: self.reader.clone(),
            eid: Some(self.eid.clone()),
            stage,
        });
    }

    fn on<T: crate::card::CardTransport>(
        &self,
        isdr: &mut Isdr<T>,
        rt: tokio::runtime::Handle,
    ) -> JobResult {
        let server = |addr: &str| {
            Https::new(
                addr,
                self.plan.tls.clone(),
                rt.clone(),
                self.plan.smdp_timeout,
            )
        };
        // An interrupted download of this code onto this card: the card says what landed.
        if let Some(AssignState::Loading {
            smdp,
            transaction_id,
            iccid,
        }) = self.settle.as_ref().map(|a| &a.state)
        {
            let tid = hex::decode(transaction_id).unwrap_or_default();
            let mut s = server(smdp).ok();
            let r = download::reconcile_interrupted(
                isdr,
                s.as_mut().map(|s| s as &mut dyn crate::rsp::es9::Es9),
                &tid,
                iccid,
            );
            if r.reconciled.profiles.is_none() {
                return JobResult::Unknown {
                    words: "the eUICC could not be listed to settle its interrupted download"
                        .into(),
                };
            }
            self.show(ProvisionStage::Reconciled {
                line: self.code.line,
                landed: r.landed,
            });
            if r.landed {
                let listed = r
                    .reconciled
                    .profiles
                    .as_deref()
                    .and_then(|l| crate::card::es10b::find_profile(l, iccid));
                return JobResult::Installed {
                    iccid: iccid.clone(),
                    preview: Preview {
                        iccid: iccid.clone(),
                        provider: listed.and_then(|p| p.provider.clone()).unwrap_or_default(),
                        name: listed.and_then(|p| p.name.clone()).unwrap_or_default(),
                        class: listed
                            .and_then(|p| p.class)
                            .unwrap_or(crate::card::es10::ProfileClass::Operational),
                    },
                };
            }
        }
        let mut s = match server(&self.code.code.smdp) {
            Ok(s) => s,
            Err(e) => {
                return JobResult::NotLanded {
                    words: format!("SM-DP+ address: {e}"),
                    refused: true,
                }
            }
        };
        let order = Order {
            smdp: self.code.code.smdp.clone(),
            matching_id: self.code.code.matching_id.clone(),
            confirmation_code: self.code.confirmation.clone(),
            device: DeviceInfo::from_imei(None),
            deliver_notification: true,
        };
        let mut watch = Watch {
            job: self,
            smdp: order.smdp.clone(),
            tid: String::new(),
            iccid: String::new(),
            last_pct: None,
            store_error: None,
        };
        let r = download::download(isdr, &mut s, &order, &mut watch);
        // The transaction could not be stored: the download was declined before any
        // package (never a code out unrecorded), and what the store holds is unknown.
        if let Some(e) = watch.store_error {
            return JobResult::Unknown {
                words: format!("the state directory did not take the transaction ({e}); the download was stopped"),
            };
        }
        match r {
            Ok(d) => {
                if let (Some(n), Ok(id)) = (&self.code.nickname, Iccid::from_digits(&d.iccid)) {
                    let r = esim::apply_on(
                        isdr,
                        &Action::Nickname {
                            iccid: id,
                            nickname: n.clone(),
                        },
                    );
                    if let Err(e) = r {
                        tracing::warn!(iccid = %d.iccid, error = %e, "nickname not set");
                    }
                }
                JobResult::Installed {
                    iccid: d.iccid,
                    preview: d.profile,
                }
            }
            Err(f) => match &f.reconciled.profiles {
                None => JobResult::Unknown {
                    words: f.to_string(),
                },
                Some(_) => JobResult::NotLanded {
                    refused: f.error.is_request_error(),
                    words: f.to_string(),
                },
            },
        }
    }
}

/// The download's observer: progress to the screen, the assignment to the store before
/// the package is loaded.
struct Watch<'a> {
    job: &'a Job,
    smdp: String,
    tid: String,
    iccid: String,
    last_pct: Option<usize>,
    store_error: Option<StoreError>,
}

impl Observer for Watch<'_> {
    fn step(&mut self, step: &Step) {
        match step {
            Step::ServerAuthenticated { transaction_id } => self.tid = transaction_id.clone(),
            Step::Preview { profile, .. } => {
                self.iccid = profile.iccid.clone();
                self.job.show(ProvisionStage::Preview {
                    profile: profile.clone(),
                });
            }
            Step::Package { segments, .. } => self.job.show(ProvisionStage::Loading {
                done: 0,
                of: *segments,
            }),
            Step::Installing { done, of } => {
                // A step per tenth, not per segment: a 24 KB package has 25.
                let pct = done * 100 / (*of).max(1);
                if self.last_pct.is_none_or(|p| pct / 10 > p / 10) || done == of {
                    self.last_pct = Some(pct);
                    self.job.show(ProvisionStage::Loading {
                        done: *done,
                        of: *of,
                    });
                }
            }
            _ => {}
        }
    }

    /// The station downloads what its file names: no one to ask. The transaction is
    /// stored first (before PrepareDownload, hence before any package): a pull or a kill
    /// from here on is settled with the card; a transaction that could not be stored is
    /// declined, so no code goes out unrecorded.
    fn confirm(&mut self, _preview: &Preview) -> bool {
        let a = Assignment {
            code: self.job.code.key.clone(),
            eid: self.job.eid.clone(),
            state: AssignState::Loading {
                smdp: self.smdp.clone(),
                transaction_id: self.tid.clone(),
                iccid: self.iccid.clone(),
            },
            at: crate::time::unix_now(),
        };
        match self.job.store.put_assignment(&a) {
            Ok(()) => true,
            Err(e) => {
                self.store_error = Some(e);
                false
            }
        }
    }
}
