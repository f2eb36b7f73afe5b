//! Hardware actions on a modem, each verified after it is done: the modem's OK is not
//! taken as proof, the state is read back.

use super::profile::Profile;
use super::reply;
use crate::at::command::expand;
use crate::at::conn::AtIo;
use crate::at::parser::{fields, Field};
use crate::at::{AtCommand, AtConnection, AtError, Refusal};
use serde::Serialize;

/// What the platform link or a rule can ask of a modem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "slot")]
pub enum Action {
    /// Bring the data context down and keep it down (the supervisor re-applies it).
    SuspendData,
    ResumeData,
    RadioOff,
    RadioOn,
    /// Switch to SIM slot n, counted from 1 as printed on gateways.
    SwitchSlot(u8),
}

/// What was done and read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub action: Action,
    /// The state read back, in words ("PDP context 1 inactive").
    pub verified: String,
}

/// The modem (or its family) would not do it; the link is fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModemRefusal {
    #[error("modem refused: {0}")]
    Refused(#[from] Refusal),
    #[error("done but not in effect: expected {expected}, read back {found}")]
    NotVerified { expected: String, found: String },
    #[error("{0}")]
    Unsupported(String),
}

pub type ActionResult = Result<Result<Outcome, ModemRefusal>, AtError>;

fn cmd(text: &str) -> Result<AtCommand, AtError> {
    Ok(AtCommand::new(text)?)
}

/// Perform and verify one action.
pub async fn perform<T: AtIo>(
    conn: &mut AtConnection<T>,
    profile: &Profile,
    action: Action,
) -> ActionResult {
    let cid = profile.session.cid;
    match action {
        Action::SuspendData | Action::ResumeData => {
            let on = u8::from(action == Action::ResumeData);
            // TS 27.007 §10.1.10: +CGACT=<state>,<cid>; the network may take long.
            let set = cmd(&format!("AT+CGACT={on},{cid}"))?;
            if let Err(r) = conn.command(&set, profile.timeouts.network()).await? {
                return Ok(Err(r.into()));
            }
            let read = conn
                .command(&cmd("AT+CGACT?")?, profile.timeouts.default())
                .await?;
            let lines = match read {
                Ok(r) => r.lines,
                Err(r) => return Ok(Err(r.into())),
            };
            let active = reply::contexts(&lines).iter().any(|(c, a)| *c == cid && *a);
            let want = on == 1;
            let word = |a: bool| if a { "active" } else { "inactive" };
            Ok(if active == want {
                Ok(Outcome {
                    action,
                    verified: format!("PDP context {cid} {}", word(active)),
                })
            } else {
                Err(ModemRefusal::NotVerified {
                    expected: format!("context {cid} {}", word(want)),
                    found: format!("context {cid} {}", word(active)),
                })
            })
        }
        Action::RadioOff | Action::RadioOn => {
            // TS 27.007 §8.2 <fun>: 1 full functionality, 4 transmit and receive RF
            // circuits disabled (the SIM stays readable, unlike 0).
            let fun = if action == Action::RadioOn { 1 } else { 4 };
            let set = cmd(&format!("AT+CFUN={fun}"))?;
            if let Err(r) = conn.command(&set, profile.timeouts.radio()).await? {
                return Ok(Err(r.into()));
            }
            let read = conn
                .command(&cmd("AT+CFUN?")?, profile.timeouts.default())
                .await?;
            let now = match read {
                Ok(r) => r
                    .lines
                    .iter()
                    .find_map(|l| fields(l, "+CFUN:")?.first().and_then(Field::int)),
                Err(r) => return Ok(Err(r.into())),
            };
            Ok(if now == Some(fun) {
                Ok(Outcome {
                    action,
                    verified: format!("+CFUN: {fun}"),
                })
            } else {
                Err(ModemRefusal::NotVerified {
                    expected: format!("+CFUN: {fun}"),
                    found: format!("{now:?}"),
                })
            })
        }
        Action::SwitchSlot(n) => {
            let Some(s) = &profile.slots else {
                return Ok(Err(ModemRefusal::Unsupported(format!(
                    "{} has no SIM slot switching",
                    profile.family
                ))));
            };
            if n == 0 || n > s.count {
                return Ok(Err(ModemRefusal::Unsupported(format!(
                    "slot {n}: {} has slots 1 to {}",
                    profile.family, s.count
                ))));
            }
            let theirs = u64::from(s.first) + u64::from(n) - 1;
            let set = expand(&s.select, &[("slot", theirs)])?;
            if let Err(r) = conn.command(&set, profile.timeouts.radio()).await? {
                return Ok(Err(r.into()));
            }
            let query = AtCommand::new(&s.query)?;
            let now = match conn.command(&query, profile.timeouts.default()).await? {
                Ok(r) => r
                    .lines
                    .iter()
                    .find_map(|l| fields(l, &s.prefix)?.first().and_then(Field::int)),
                Err(r) => return Ok(Err(r.into())),
            };
            Ok(if now == Some(theirs) {
                Ok(Outcome {
                    action,
                    verified: format!("{} {theirs}", s.prefix),
                })
            } else {
                Err(ModemRefusal::NotVerified {
                    expected: format!("{} {theirs}", s.prefix),
                    found: format!("{now:?}"),
                })
            })
        }
    }
}
