//! Full identification of a modem and its SIM, in as few command lines as the specs
//! allow: compound lines (V.250 §5.2.1) group queries whose replies carry distinct
//! prefixes. The count is part of the result so the budget (≤ 12) is measured.

use super::profile::{EuiccAccess, EuiccTransport, Profile, Profiles};
use super::reply::{self, Registration, Signal};
use crate::at::conn::AtIo;
use crate::at::parser::{cme, fields};
use crate::at::{AtCommand, AtConnection, AtError, Reply};
use crate::card::Iccid;
use crate::sim::{FormFactor, InSession};
use serde::Serialize;
use std::time::Duration;

/// The ISD-R AID (SGP.22 §2.2.3).
pub const ISD_R_AID: &str = "A0000005591010FFFFFFFF8900000100";
/// ES10c GetEUICCData asking for the EID: STORE DATA, tag BF3E containing tag list 5C 01
/// 5A (SGP.22 §5.7.20); CLA 80 before the channel bits are set.
const GET_EID: [u8; 11] = [
    0x80, 0xE2, 0x91, 0x00, 0x06, 0xBF, 0x3E, 0x03, 0x5C, 0x01, 0x5A,
];
/// READ BINARY of EF.ICCID through +CRSM: command 176, file id 12258 = 2FE2, 10 bytes
/// (TS 27.007 §8.18, TS 102 221 §13.2).
const CRSM_ICCID: &str = "AT+CRSM=176,12258,0,0,10";
/// How often and how long to wait for a SIM answering "SIM busy" (+CME ERROR: 14) while
/// it initialises after power-on or insertion; SIMs take up to a few seconds.
const SIM_BUSY_TRIES: u32 = 10;
const SIM_BUSY_WAIT: Duration = Duration::from_millis(300);

/// Everything simgate reports about one modem (`simgate modem info --json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModemInfo {
    pub port: String,
    pub profile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei: Option<String>,
    pub sim: SimInfo,
    /// AT command lines this identification spent.
    pub at_commands: u64,
}

/// The SIM as seen through the modem.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct SimInfo {
    pub present: bool,
    /// "READY", "SIM PIN", ..., or "SIM not inserted" said plainly.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iccid_luhn_ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcc_mnc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Physical or eSIM; `None` (JSON null): unknown, the modem cannot reach the ISD-R.
    pub form_factor: Option<FormFactor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid: Option<String>,
    pub in_session: InSession,
    pub session_reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The SIM slot in use, counted from 1, on families with several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u8>,
    /// PIN1's lock: +CPIN?'s code, the family's counters, +CLCK="SC",2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<crate::sim::Lock>,
    /// Filled from the store by the caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub this_month_mb: Option<f64>,
}

/// A raw counter sample.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub sent: u64,
    pub received: u64,
}

/// The dynamic part, refreshed by one compound line in steady state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Status {
    pub registration: Option<Registration>,
    pub signal: Option<Signal>,
    pub in_session: InSession,
    pub session_reason: String,
    pub usage: Option<Usage>,
    pub slot: Option<u8>,
}

/// Constants and profile text were checked at load; a failure here is a bug in a
/// constant, surfaced as an error naming it rather than a panic.
fn checked(text: &str) -> Result<AtCommand, AtError> {
    Ok(AtCommand::new(text)?)
}

/// Send a line; a refusal becomes `None` (logged), the link failing is an error.
async fn ask<T: AtIo>(
    conn: &mut AtConnection<T>,
    cmd: &AtCommand,
    timeout: Duration,
) -> Result<Option<Reply>, AtError> {
    match conn.command(cmd, timeout).await? {
        Ok(r) => Ok(Some(r)),
        Err(refusal) => {
            tracing::debug!(%refusal, "modem refused");
            Ok(None)
        }
    }
}

/// Bring the port to a known state (echo off, verbose results, numeric +CME errors) and
/// recognise the model. Two lines.
pub async fn recognise<'p, T: AtIo>(
    conn: &mut AtConnection<T>,
    profiles: &'p Profiles,
) -> Result<(&'p Profile, [Option<String>; 4]), AtError> {
    let generic = profiles.recognise("", "");
    let t = generic.timeouts.default();
    // E0: no echo (V.250 §6.2.4); V1: verbose results (§6.2.6); +CMEE=1: numeric
    // +CME ERROR (TS 27.007 §9.1). Basic commands chain without ';' (V.250 §5.2.1).
    conn.group(
        &[checked("ATE0")?, checked("ATV1")?, checked("AT+CMEE=1")?],
        t,
    )
    .await?;
    // Manufacturer, model, revision, IMEI (TS 27.007 §5.1-§5.4): one line each.
    let ids = ["AT+CGMI", "AT+CGMM", "AT+CGMR", "AT+CGSN"];
    let group = conn
        .group(
            &ids.iter()
                .map(|c| checked(c))
                .collect::<Result<Vec<_>, _>>()?,
            t,
        )
        .await?;
    let mut out: [Option<String>; 4] = Default::default();
    match &group.each {
        Some(each) => {
            for (slot, r) in out.iter_mut().zip(each) {
                *slot = r
                    .as_ref()
                    .and_then(|r| r.lines.first())
                    .map(|l| reply::identity_text(l));
            }
        }
        None if group.lines.len() >= ids.len() => {
            for (slot, line) in out.iter_mut().zip(&group.lines) {
                *slot = Some(reply::identity_text(line));
            }
        }
        // One line, but a reply short of a line per command: which is which is
        // unknowable, so ask each on its own.
        None => {
            for (slot, c) in out.iter_mut().zip(ids) {
                if let Some(r) = ask(conn, &checked(c)?, t).await? {
                    *slot = r.lines.first().map(|l| reply::identity_text(l));
                }
            }
        }
    }
    let profile = profiles.recognise(
        out[0].as_deref().unwrap_or_default(),
        out[1].as_deref().unwrap_or_default(),
    );
    conn.add_urcs(&profile.urcs);
    if let Some(h) = &profile.hotplug {
        conn.add_urcs(std::slice::from_ref(&h.urc));
    }
    conn.add_vendor_finals(&profile.vendor_finals);
    Ok((profile, out))
}

/// The profile's init lines, as one group (`AtConnection::group`).
pub async fn init<T: AtIo>(conn: &mut AtConnection<T>, profile: &Profile) -> Result<(), AtError> {
    if profile.init.commands.is_empty() {
        return Ok(());
    }
    let cmds = profile
        .init
        .commands
        .iter()
        .map(|l| checked(l))
        .collect::<Result<Vec<_>, _>>()?;
    let g = conn.group(&cmds, profile.timeouts.default()).await?;
    for r in g.refused {
        tracing::debug!(refusal = %r, "init command refused");
    }
    Ok(())
}

/// The SIM's state from +CPIN?, waiting out "SIM busy". `Ok(None)` means no SIM.
pub async fn pin_state<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<Result<String, String>, AtError> {
    let cmd = checked("AT+CPIN?")?;
    for _ in 0..SIM_BUSY_TRIES {
        match conn.command(&cmd, profile.timeouts.sim()).await? {
            Ok(r) => return Ok(reply::pin_state(&r.lines).ok_or_else(|| "unknown".to_string())),
            Err(refusal) => match refusal.cme() {
                Some(cme::SIM_NOT_INSERTED) => return Ok(Err("SIM not inserted".into())),
                Some(cme::SIM_BUSY) => tokio::time::sleep(SIM_BUSY_WAIT).await,
                Some(cme::SIM_FAILURE) => return Ok(Err("SIM failure".into())),
                // Any other refusal says nothing about the SIM (an answer out of
                // step, a firmware's quirk): concluding "no SIM" from it would report
                // a SIM that is there removed.
                _ => {
                    return Err(AtError::Unclear {
                        command: cmd.to_string(),
                        answer: refusal.result.to_string(),
                    })
                }
            },
        }
    }
    Ok(Err("SIM busy".into()))
}

/// +CLCK="SC",2 (TS 27.007 §7.4): whether PIN1 ("SC", the SIM lock) is enabled.
const PIN_ENABLED: &str = "AT+CLCK=\"SC\",2";

/// The lock of a SIM whose +CPIN? said `code`: the family's counters (one line; a
/// refusal leaves the counts unknown).
pub async fn lock<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    code: &str,
) -> Result<Option<crate::sim::Lock>, AtError> {
    let counters = profile.pin_counters();
    let counts = match ask(conn, &checked(&counters.command)?, profile.timeouts.sim()).await? {
        Some(r) => reply::pin_counters(&r.lines, &counters),
        None => (None, None),
    };
    Ok(reply::lock(code, None, counts))
}

/// The ICCID: the family's command, then EF.ICCID through +CRSM.
pub async fn iccid<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<Option<Iccid>, AtError> {
    let t = profile.timeouts.sim();
    if let Some(c) = &profile.iccid.command {
        match conn.command(&checked(c)?, t).await? {
            Ok(r) => {
                if let Some(i) = reply::vendor_iccid(&r.lines, profile.iccid.prefix.as_deref()) {
                    return Ok(Some(i));
                }
            }
            // No SIM: +CRSM would only be refused the same way; save the line.
            Err(refusal) if refusal.cme() == Some(cme::SIM_NOT_INSERTED) => return Ok(None),
            Err(refusal) => tracing::debug!(%refusal, "vendor ICCID refused; trying +CRSM"),
        }
    }
    let Some(r) = ask(conn, &checked(CRSM_ICCID)?, t).await? else {
        return Ok(None);
    };
    Ok(match reply::crsm(&r.lines) {
        // 90 00: normal ending (TS 102 221 §10.2.1.1).
        Some((0x90, 0x00, data)) => Iccid::from_ef(&data).ok(),
        _ => None,
    })
}

/// The status group: registration, signal, contexts, the vendor counter and the slot,
/// one line in steady state (`AtConnection::group`).
pub fn status_commands(profile: &Profile) -> Result<Vec<AtCommand>, crate::at::CommandError> {
    let mut lines = vec![profile.registration.command.as_str(), "AT+CGACT?"];
    if let Some(c) = &profile.counters {
        lines.push(c.command.as_str());
    }
    if let Some(s) = &profile.slots {
        lines.push(s.query.as_str());
    }
    lines.into_iter().map(AtCommand::new).collect()
}

pub async fn status<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<Status, AtError> {
    // A part refused (a counter this firmware lacks, +CGACT? while the SIM is gone)
    // leaves the rest known: the group sends it apart.
    let g = conn
        .group(&status_commands(profile)?, profile.timeouts.default())
        .await?;
    Ok(interpret_status(profile, &g.lines))
}

/// Pure: the status line's reply into a [`Status`].
pub fn interpret_status(profile: &Profile, lines: &[String]) -> Status {
    let ctx = reply::contexts(lines);
    let (in_session, session_reason) = match ctx.iter().find(|(_, active)| *active) {
        Some((cid, _)) => (InSession::Yes, format!("PDP context {cid} active (+CGACT)")),
        None if ctx.is_empty() => (
            InSession::NotApplicable,
            "the modem reports no PDP context (+CGACT? empty)".to_string(),
        ),
        None => (InSession::No, "no PDP context active (+CGACT)".to_string()),
    };
    Status {
        registration: reply::best_registration(lines),
        signal: lines.iter().find_map(|l| reply::signal(l)),
        in_session,
        session_reason,
        slot: profile.slots.as_ref().and_then(|s| {
            let theirs = lines
                .iter()
                .find_map(|l| fields(l, &s.prefix)?.first()?.int())?;
            u8::try_from(theirs.checked_sub(u64::from(s.first))? + 1).ok()
        }),
        usage: profile.counters.as_ref().and_then(|c| {
            reply::counters(lines, &c.prefix, c.sent, c.received)
                .map(|(sent, received)| Usage { sent, received })
        }),
    }
}

/// Probe the ISD-R: a physical SIM refuses +CCHO of its AID; an eUICC opens a channel
/// and gives its EID through +CGLA.
pub async fn form_factor<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<(Option<FormFactor>, Option<String>), AtError> {
    if profile.euicc.access == EuiccAccess::None {
        return Ok((None, None));
    }
    if profile.euicc.transport == EuiccTransport::Csim {
        return form_factor_csim(conn, profile).await;
    }
    let t = profile.timeouts.sim();
    let open = checked(&format!("AT+CCHO={}", crate::at::quote(ISD_R_AID)))?;
    let Some(r) = ask(conn, &open, t).await? else {
        return Ok((Some(FormFactor::Physical), None));
    };
    // Logical channels 1-19 exist (TS 102 221 §10.1.1); anything else is a mangled
    // answer: the form factor stays unknown.
    let Some(ch) = reply::channel(&r.lines).filter(|c| (1..=19).contains(c)) else {
        return Ok((None, None));
    };
    let mut apdu = GET_EID.to_vec();
    // Logical channel in CLA: b2-b1 for channels 1-3, the further interindustry form
    // (b7=1, b4-b1 = channel-4) for 4-19 (TS 102 221 §10.1.1).
    apdu[0] = if ch <= 3 { 0x80 | ch } else { 0xC0 | (ch - 4) };
    let hexed = hex::encode_upper(&apdu);
    let cgla = checked(&format!(
        "AT+CGLA={ch},{},{}",
        hexed.len(),
        crate::at::quote(&hexed)
    ))?;
    let eid = ask(conn, &cgla, t)
        .await?
        .and_then(|r| reply::cgla(&r.lines))
        .and_then(|resp| reply::eid(&resp));
    ask(conn, &checked(&format!("AT+CCHC={ch}"))?, t).await?;
    // The ISD-R answered SELECT: this is an eUICC even if the EID could not be read.
    Ok((Some(FormFactor::Esim), eid))
}

/// One APDU through +CSIM (TS 27.007 §8.17); `None` when the modem refuses the line or
/// answers something that is not a response APDU.
async fn csim<T: AtIo>(
    conn: &mut AtConnection<T>,
    apdu: &[u8],
    t: Duration,
) -> Result<Option<Vec<u8>>, AtError> {
    let hexed = hex::encode_upper(apdu);
    let cmd = checked(&format!(
        "AT+CSIM={},{}",
        hexed.len(),
        crate::at::quote(&hexed)
    ))?;
    Ok(ask(conn, &cmd, t)
        .await?
        .and_then(|r| reply::apdu_checked(&r.lines, "+CSIM").ok()))
}

/// The ISD-R probed through +CSIM: MANAGE CHANNEL open, SELECT by AID on it (a physical
/// SIM answers 6A82, TS 102 221 §10.2.1.5), GetEUICCData for the EID (its answer by
/// 61xx / GET RESPONSE, TS 102 221 §7.3.1.1.4), MANAGE CHANNEL close.
async fn form_factor_csim<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<(Option<FormFactor>, Option<String>), AtError> {
    let t = profile.timeouts.sim();
    let ch = match csim(conn, &[0x00, 0x70, 0x00, 0x00, 0x01], t).await? {
        Some(r) if matches!(r[..], [1..=3, 0x90, 0x00]) => r[0],
        _ => return Ok((None, None)),
    };
    let mut select = vec![ch, 0xA4, 0x04, 0x00, 16];
    select.extend(hex::decode(ISD_R_AID).unwrap_or_default());
    let found = match csim(conn, &select, t).await? {
        Some(sel) => {
            let sw = &sel[sel.len() - 2..];
            if sw == [0x90, 0x00] || sw[0] == 0x61 {
                Some(FormFactor::Esim)
            } else {
                Some(FormFactor::Physical)
            }
        }
        None => None,
    };
    let mut eid = None;
    if found == Some(FormFactor::Esim) {
        let mut apdu = GET_EID.to_vec();
        apdu[0] |= ch;
        if let Some(r) = csim(conn, &apdu, t).await? {
            let r = match r[r.len() - 2..] {
                [0x61, n] => csim(conn, &[ch, 0xC0, 0x00, 0x00, n], t).await?,
                _ => Some(r),
            };
            eid = r.and_then(|resp| reply::eid(&resp));
        }
    }
    csim(conn, &[0x00, 0x70, 0x80, ch, 0x00], t).await?;
    Ok((found, eid))
}

/// Identify modem and SIM: the whole picture, counting command lines.
pub async fn identify<T: AtIo>(
    conn: &mut AtConnection<T>,
    profiles: &Profiles,
    port: &str,
) -> Result<ModemInfo, AtError> {
    let before = conn.stats().commands;
    let (profile, [manufacturer, model, firmware, imei]) = recognise(conn, profiles).await?;
    init(conn, profile).await?;
    let sim = sim_info(conn, profile).await?;
    Ok(ModemInfo {
        port: port.to_string(),
        profile: profile.name.clone(),
        manufacturer,
        model,
        firmware,
        imei,
        sim,
        at_commands: conn.stats().commands - before,
    })
}

/// The SIM part of identification (also run again after a hot-swap).
pub async fn sim_info<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
) -> Result<SimInfo, AtError> {
    let mut sim = SimInfo::default();
    let st = status(conn, profile).await?;
    sim.registration = st.registration;
    sim.signal = st.signal;
    sim.in_session = st.in_session;
    sim.session_reason = st.session_reason;
    sim.usage = st.usage;
    sim.slot = st.slot;
    match pin_state(conn, profile).await? {
        Err(plain) => {
            sim.state = plain;
            sim.in_session = InSession::No;
            sim.session_reason = "no SIM".into();
            return Ok(sim);
        }
        Ok(state) => {
            sim.present = true;
            sim.state = state;
        }
    }
    if let Some(i) = iccid(conn, profile).await? {
        sim.iccid_luhn_ok = Some(i.luhn_ok());
        sim.iccid = Some(i.to_string());
    }
    if sim.state != "READY" {
        // A locked SIM gives no IMSI and no network (TS 27.007 §8.3): its row says why,
        // with the attempts left (one line, src/modem/reply.rs `lock`).
        sim.lock = lock(conn, profile, &sim.state).await?;
        return Ok(sim);
    }
    // IMSI (TS 27.007 §5.6, bare digits) and the operator in long and numeric form
    // (§7.3: +COPS=3,<format> sets the format of the next +COPS?); on the same line,
    // whether PIN1 is enabled (§7.4 +CLCK="SC",2) and its counters.
    let counters = profile.pin_counters();
    let cmds = [
        "AT+CIMI",
        "AT+COPS=3,0",
        "AT+COPS?",
        "AT+COPS=3,2",
        "AT+COPS?",
        PIN_ENABLED,
        counters.command.as_str(),
    ]
    .iter()
    .map(|c| checked(c))
    .collect::<Result<Vec<_>, _>>()?;
    let g = conn.group(&cmds, profile.timeouts.default()).await?;
    sim.lock = reply::lock(
        &sim.state,
        reply::pin_enabled(&g.lines),
        reply::pin_counters(&g.lines, &counters),
    );
    sim.imsi = g
        .lines
        .iter()
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .cloned();
    (sim.operator, sim.mcc_mnc) = reply::operator(&g.lines);
    (sim.form_factor, sim.eid) = form_factor(conn, profile).await?;
    Ok(sim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profiles_compound_registration_command_is_part_of_the_status_group() {
        let set = Profiles::shipped().unwrap();
        let p = set.get("telit-le910").unwrap();
        let atoms: Vec<AtCommand> = status_commands(p)
            .unwrap()
            .iter()
            .flat_map(AtCommand::atoms)
            .collect();
        // Every command of the group stands alone (for a modem that refuses
        // concatenation) and joins back into the one steady-state line.
        assert!(atoms.iter().all(|a| a.atoms().len() == 1), "{atoms:?}");
        assert!(atoms.iter().any(|a| a.as_str() == "AT+CGACT?"));
        assert!(crate::at::command::join(&atoms)
            .as_str()
            .contains(";+CGACT?"));
    }

    #[test]
    fn status_reads_session_and_counters() {
        let set = Profiles::shipped().unwrap();
        let p = set.get("quectel-ec2x").unwrap();
        let lines: Vec<String> = [
            "+CREG: 0,2",
            "+CEREG: 2,1,\"D504\",\"80428B5\",7",
            "+CSQ: 20,99",
            "+CGACT: 1,1",
            "+QGDCNT: 3832,4618",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = interpret_status(p, &lines);
        assert_eq!(s.in_session, InSession::Yes);
        assert_eq!(
            s.usage,
            Some(Usage {
                sent: 3832,
                received: 4618
            })
        );
        assert_eq!(s.registration.unwrap().domain, "CEREG");
        assert_eq!(s.signal.unwrap().dbm, Some(-73));
    }
}
