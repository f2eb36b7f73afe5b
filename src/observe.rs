//! Observations: what a card read or a modem identification tells about a SIM, as the
//! one shared model (`sim::Observed`), and the one report of a card read that `read`,
//! `station` and every later surface show. Pure: the clock is passed in.

use crate::card::CardKind;
use crate::modem::identify::ModemInfo;
use crate::reader::CardRead;
use crate::sim::{Batch, FormFactor, InSession, Location, Observed, Status};
use serde::Serialize;

/// One card read as every surface shows it (`simgate read --json`, `simgate station
/// --json`, the station's CSV and screen). Stable: fields are added, never renamed.
#[derive(Debug, Clone, Serialize)]
pub struct CardReport {
    /// Running count of reads in a station's batch (unreadable cards included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Unix seconds when the read finished.
    pub at: u64,
    pub reader: String,
    /// What the card told, when it could be read.
    #[serde(flatten)]
    pub card: Option<CardFacts>,
    /// Why the card could not be read (then there is no `card`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From the insertion event (or the command) to the end of identification.
    pub ms: u64,
    /// What the person must look at: duplicate, Luhn failure, unreadable card ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When this SIM was last seen before, by any earlier run on this store (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_since: Option<u64>,
    /// The eSIM's QR code payload: the EID (or ICCID) until the platform supplies an
    /// activation code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
    /// A station's batch attributes: `labels`, `company`, `note`.
    #[serde(flatten)]
    pub batch: Batch,
    /// `station --disable-pin`: what was done with this card's PIN ("disabled",
    /// "already disabled", "skipped: 1 attempt left" ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_disable: Option<String>,
}

/// The facts of a card that was read.
#[derive(Debug, Clone, Serialize)]
pub struct CardFacts {
    /// `None` for a Blank eSIM whose MF has no EF.ICCID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// The ICCID's Luhn check; absent with the ICCID (nothing to check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luhn_ok: Option<bool>,
    pub kind: CardKind,
    pub form_factor: FormFactor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    /// An eUICC with no enabled profile.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub blank_esim: bool,
    /// simgate's own status (Invalid, with `problem`), when it sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// PIN1's lock state, where the card told it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::sim::Lock>,
    pub atr: String,
    /// APDUs the identification budget counts, and every APDU sent.
    pub apdus: u32,
    pub apdus_total: u32,
}

impl CardReport {
    /// The report of a finished read: its facts, or why there are none.
    pub fn new(
        reader: &str,
        result: &Result<CardRead, crate::reader::ReaderError>,
        at: u64,
        ms: u64,
    ) -> CardReport {
        let (card, error) = match result {
            Ok(read) => (Some(CardFacts::new(read, &from_card(read, at))), None),
            Err(e) => (None, Some(e.to_string())),
        };
        CardReport {
            n: None,
            at,
            reader: reader.to_string(),
            card,
            error,
            ms,
            warnings: Vec::new(),
            known_since: None,
            qr: None,
            batch: Batch::default(),
            pin_disable: None,
        }
    }
}

impl CardFacts {
    /// "physical", "esim", or "esim (blank)" for an eUICC with no enabled profile.
    pub fn form_text(&self) -> &'static str {
        match (self.form_factor, self.blank_esim) {
            (FormFactor::Esim, true) => "esim (blank)",
            (f, _) => f.word(),
        }
    }

    fn new(read: &CardRead, obs: &Observed) -> CardFacts {
        CardFacts {
            iccid: read.identity.iccid.as_ref().map(|i| i.to_string()),
            luhn_ok: read.identity.iccid.as_ref().map(|_| obs.iccid_luhn_ok),
            kind: read.identity.kind,
            form_factor: obs.form_factor.unwrap_or(FormFactor::Physical),
            eid: obs.eid.clone(),
            blank_esim: obs.blank_esim,
            status: obs.local_status(),
            problem: obs.problem.clone(),
            imsi: obs.imsi.clone(),
            spn: obs.spn.clone(),
            operator: obs.operator.clone(),
            lock: obs.lock,
            atr: read.atr.clone(),
            apdus: read.identity.apdus,
            apdus_total: read.identity.apdus_total,
        }
    }
}

/// The observation a card read makes.
///
/// Keyed by ICCID; a Blank eSIM whose MF has no EF.ICCID is keyed by its EID instead (32
/// digits, so it never collides with an ICCID's 18-20).
pub fn from_card(read: &CardRead, now: u64) -> Observed {
    let id = &read.identity;
    let eid = id
        .euicc
        .as_ref()
        .and_then(|e| e.eid.as_ref())
        .map(|e| e.as_str().to_string());
    let key = id
        .iccid
        .as_ref()
        .map(|i| i.as_str().to_string())
        .or_else(|| eid.clone())
        .unwrap_or_default();
    let mut problems = Vec::new();
    if id.iccid.as_ref().is_some_and(|i| !i.luhn_ok()) {
        problems.push("ICCID fails its Luhn check".to_string());
    }
    if let Some(e) = id.euicc.as_ref().and_then(|e| e.eid.as_ref()) {
        if !e.check_ok() {
            problems.push("EID fails its mod-97 check".to_string());
        }
    }
    if id.euicc.as_ref().is_some_and(|e| e.eid.is_none()) {
        problems.push("eUICC did not give its EID".to_string());
    }
    let operator = id
        .imsi
        .as_deref()
        .and_then(crate::card::subscriber::home_operator);
    Observed {
        iccid: key,
        // No ICCID to check (a Blank eSIM keyed by EID) is not a Luhn failure.
        iccid_luhn_ok: id.iccid.as_ref().is_none_or(|i| i.luhn_ok()),
        form_factor: Some(if id.euicc.is_some() {
            FormFactor::Esim
        } else {
            FormFactor::Physical
        }),
        eid,
        imsi: id.imsi.clone(),
        spn: id.spn.clone(),
        blank_esim: id.is_blank_esim(),
        imei: None,
        operator: operator.map(|(_, name)| name.to_string()),
        // The serving network's code: a card in a reader has none.
        mcc_mnc: None,
        in_session: InSession::NotApplicable,
        atr: Some(read.atr.clone()),
        location: Location::Reader {
            reader: read.reader.clone(),
        },
        present: true,
        modem_silent: false,
        observed_at: now,
        problem: (!problems.is_empty()).then(|| problems.join("; ")),
        pending: None,
        batch: Default::default(),
        nested_batch: None,
        esim_profiles: id.euicc.as_ref().and_then(|e| e.profile_list.clone()),
        lock: id.lock,
    }
}

/// The observation a modem's identification makes, when it holds a SIM with an ICCID.
pub fn from_modem(info: &ModemInfo, now: u64) -> Option<Observed> {
    let iccid = info.sim.iccid.clone()?;
    Some(Observed {
        iccid,
        iccid_luhn_ok: info.sim.iccid_luhn_ok.unwrap_or(false),
        form_factor: info.sim.form_factor,
        eid: info.sim.eid.clone(),
        imsi: info.sim.imsi.clone(),
        spn: None,
        blank_esim: false,
        imei: info.imei.clone(),
        operator: info.sim.operator.clone(),
        mcc_mnc: info.sim.mcc_mnc.clone(),
        in_session: info.sim.in_session,
        atr: None,
        location: Location::Modem {
            port: info.port.clone(),
            slot: info.sim.slot,
        },
        present: info.sim.present,
        modem_silent: false,
        observed_at: now,
        problem: (info.sim.iccid_luhn_ok == Some(false))
            .then(|| "ICCID fails its Luhn check".to_string()),
        // A swap's Pending is the daemon's to add (src/daemon/swap.rs).
        pending: None,
        batch: Default::default(),
        nested_batch: None,
        esim_profiles: None,
        lock: info.sim.lock,
    })
}

/// What a provisioning station (`simgate station --provision`) shows of one card, as it
/// happens: on its screen, in `--json` (one object per line) and on the station page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProvisionReport {
    pub reader: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    #[serde(flatten)]
    pub stage: ProvisionStage,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "provision", rename_all = "snake_case")]
pub enum ProvisionStage {
    /// A code was given to the card (stored first).
    Assigned {
        line: usize,
        /// `true`: the file names this EID; `false`: the next unused code.
        for_this_eid: bool,
    },
    /// An earlier download onto this card was interrupted: settled with the card.
    Reconciled { line: usize, landed: bool },
    /// The profile the SM-DP+ offers.
    Preview {
        profile: crate::card::es10b::Preview,
    },
    /// Segments of the package loaded so far.
    Loading { done: usize, of: usize },
    /// The end: `ok` (take it out), `failed` (why in words), `pulled` (the card left
    /// mid-download), `skipped` (not provisioned: why).
    Done {
        result: ProvisionResult,
        words: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        iccid: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ms: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionResult {
    Ok,
    Failed,
    Pulled,
    Skipped,
}

impl ProvisionResult {
    pub fn word(self) -> &'static str {
        match self {
            ProvisionResult::Ok => "ok",
            ProvisionResult::Failed => "failed",
            ProvisionResult::Pulled => "pulled",
            ProvisionResult::Skipped => "skipped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::euicc::{Eid, Profiles};
    use crate::card::{CardKind, Euicc, Iccid, Identity};
    use crate::sim::{FormFactor, Status};

    fn read(iccid: Option<&str>, eid: &str, profiles: Profiles) -> CardRead {
        CardRead {
            reader: "R 00 00".into(),
            atr: "3B00".into(),
            identity: Identity {
                kind: CardKind::Uicc,
                iccid: iccid.map(|i| Iccid::from_digits(i).unwrap()),
                euicc: Some(Euicc {
                    isdr_aid: "A0000005591010FFFFFFFF8900000100".into(),
                    isdr_name: "GSMA standard ISD-R".into(),
                    eid: Some(Eid::from_digits(eid)),
                    profiles: Some(profiles),
                    profile_list: None,
                    basic_channel: false,
                }),
                imsi: Some("262011106487504".into()),
                spn: None,
                lock: None,
                apdus: 4,
                apdus_subscriber: 0,
                apdus_total: 6,
            },
        }
    }

    #[test]
    fn an_eid_failing_mod97_makes_the_sim_invalid_with_the_reason() {
        // pySim's test_eid_verify_wrong vector (tests/fixtures/card_vectors.jsonl).
        let obs = from_card(
            &read(
                Some("8949440000000000016"),
                "89049032123451234512345678901234",
                Profiles::Enabled,
            ),
            0,
        );
        assert_eq!(obs.local_status(), Some(Status::Invalid));
        assert_eq!(obs.problem.as_deref(), Some("EID fails its mod-97 check"));
        assert_eq!(obs.form_factor, Some(FormFactor::Esim));
        assert_eq!(obs.operator.as_deref(), Some("Telekom Deutschland"));
    }

    #[test]
    fn a_blank_esim_without_iccid_is_keyed_by_its_eid_and_blank() {
        let obs = from_card(
            &read(
                None,
                "89049032123451234512345678901235",
                Profiles::NoneEnabled,
            ),
            0,
        );
        assert_eq!(obs.iccid, "89049032123451234512345678901235");
        assert!(obs.iccid_luhn_ok && obs.blank_esim);
        assert_eq!(
            obs.local_status(),
            None,
            "Blank is the platform's word, not simgate's"
        );
    }
}
