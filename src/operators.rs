//! What operators say through their own channels, as data (devices/operators/*.toml):
//! per home network (MCC-MNC of the IMSI, ITU-T E.212), the USSD code that asks the
//! prepaid balance and the patterns that read MB and days from its reply, the pattern
//! that recognises a top-up confirmation SMS, and the replies the modem emulator gives.
//! Every shipped file is compiled in and loaded by a test; a user's files
//! (`<modems.profile_dir>/operators/*.toml`) get the same checks and replace a shipped
//! file that names the same network. Errors name the file and the field.

use regex::Regex;
use serde::Deserialize;
use std::path::Path;

const SHIPPED: &[(&str, &str)] = &[(
    "test-network.toml",
    include_str!("../devices/operators/test-network.toml"),
)];

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("{file}: {source}")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Toml {
        file: String,
        source: Box<toml::de::Error>,
    },
    #[error("{file}: field `{field}`: {why}")]
    Invalid {
        file: String,
        field: String,
        why: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorFile {
    /// Home networks, MCC then MNC, 5 or 6 digits ("00101").
    mcc_mnc: Vec<String>,
    name: String,
    source: String,
    #[serde(default)]
    balance: Option<BalanceFile>,
    #[serde(default)]
    topup: Option<TopUpFile>,
    #[serde(default)]
    emulator: Option<EmulatorFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceFile {
    code: String,
    /// Patterns whose group `mb` (or `gb`, × 1000) is the data left.
    #[serde(default)]
    data: Vec<String>,
    /// Patterns whose group `days` is the days left.
    #[serde(default)]
    days: Vec<String>,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUpFile {
    /// The sender as the SMS gives it (`+31612345678`, or a name); absent: any.
    #[serde(default)]
    sender: Option<String>,
    /// A pattern matching the confirmation's text; a group `mb` is the amount.
    pattern: String,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmulatorFile {
    #[serde(default)]
    ussd: Vec<EmuUssd>,
    source: String,
}

/// One reply of the emulated network to a USSD string.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmuUssd {
    /// The string the user sends (`*100#`), or a menu answer (`1`) inside a session.
    pub code: String,
    /// The reply text; absent with `network`.
    #[serde(default)]
    pub reply: Option<String>,
    /// TS 23.038 §5 data coding scheme of the reply (15: GSM 7-bit; 72: UCS2).
    #[serde(default = "default_dcs")]
    pub dcs: u8,
    /// The reply asks for an answer: `+CUSD: 1` (TS 27.007 §7.15).
    #[serde(default)]
    pub continues: bool,
    /// `timeout` (`+CUSD: 5`) or `unsupported` (`+CUSD: 4`) instead of a reply.
    #[serde(default)]
    pub network: Option<String>,
}

fn default_dcs() -> u8 {
    15
}

/// A home network's channels, checked.
#[derive(Debug, Clone)]
pub struct Operator {
    pub file: String,
    pub mcc_mnc: Vec<String>,
    pub name: String,
    pub balance: Option<BalanceQuery>,
    pub topup: Option<TopUp>,
    pub emulator: Vec<EmuUssd>,
}

/// How to ask a prepaid balance and read the reply.
#[derive(Debug, Clone)]
pub struct BalanceQuery {
    pub code: String,
    data: Vec<Regex>,
    days: Vec<Regex>,
    pub source: String,
}

/// What a balance reply said (each fact where a pattern found it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceFacts {
    pub data_left_mb: Option<f64>,
    pub days_left: Option<f64>,
}

/// How a top-up confirmation SMS is recognised.
#[derive(Debug, Clone)]
pub struct TopUp {
    sender: Option<String>,
    pattern: Regex,
    pub source: String,
}

/// A number as operators write it: `1 024,5` or `1,024.5` or `512`.
fn number(text: &str) -> Option<f64> {
    let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let t = match (t.rfind(','), t.rfind('.')) {
        // Both: the later one is the decimal separator.
        (Some(c), Some(d)) if c > d => t.replace('.', "").replace(',', "."),
        (Some(_), Some(_)) => t.replace(',', ""),
        // A comma alone followed by exactly 3 digits is a thousands separator.
        (Some(c), None) if t.len() - c - 1 == 3 => t.replace(',', ""),
        (Some(_), None) => t.replace(',', "."),
        _ => t,
    };
    t.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0)
}

impl BalanceQuery {
    /// Read MB and days from a reply; `None` when no pattern matched anything.
    pub fn read(&self, reply: &str) -> Option<BalanceFacts> {
        let data = self.data.iter().find_map(|re| {
            let c = re.captures(reply)?;
            match (c.name("mb"), c.name("gb")) {
                (Some(m), _) => number(m.as_str()),
                // GB of 1000 MB: MB of 10^6 bytes as everywhere in simgate.
                (None, Some(g)) => number(g.as_str()).map(|g| g * 1000.0),
                _ => None,
            }
        });
        let days = self
            .days
            .iter()
            .find_map(|re| number(re.captures(reply)?.name("days")?.as_str()));
        (data.is_some() || days.is_some()).then_some(BalanceFacts {
            data_left_mb: data.map(|d| (d * 100.0).round() / 100.0),
            days_left: days,
        })
    }
}

impl TopUp {
    /// Whether an SMS is this operator's top-up confirmation; the amount in MB when
    /// the pattern has a group `mb` that matched.
    pub fn matches(&self, sender: &str, text: &str) -> Option<Option<f64>> {
        if self.sender.as_deref().is_some_and(|s| s != sender) {
            return None;
        }
        let c = self.pattern.captures(text)?;
        Some(c.name("mb").and_then(|m| number(m.as_str())))
    }
}

impl Operator {
    pub fn parse(file: &str, text: &str) -> Result<Operator, OperatorError> {
        let f: OperatorFile = toml::from_str(text).map_err(|e| OperatorError::Toml {
            file: file.to_string(),
            source: Box::new(e),
        })?;
        let bad = |field: &str, why: String| OperatorError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            why,
        };
        if f.mcc_mnc.is_empty()
            || f.mcc_mnc
                .iter()
                .any(|m| !(5..=6).contains(&m.len()) || !m.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad("mcc_mnc", "one or more of 5 or 6 digits".into()));
        }
        if f.source.trim().is_empty() {
            return Err(bad("source", "say where the facts come from".into()));
        }
        let compile = |field: &str, p: &str, groups: &[&str]| -> Result<Regex, OperatorError> {
            let re = Regex::new(p).map_err(|e| bad(field, e.to_string()))?;
            if !groups.is_empty() && !re.capture_names().flatten().any(|n| groups.contains(&n)) {
                return Err(bad(
                    field,
                    format!("{p:?} has no group named {}", groups.join(" or ")),
                ));
            }
            Ok(re)
        };
        let balance = match f.balance {
            None => None,
            Some(b) => {
                crate::sms::ussd::check_code(&b.code)
                    .map_err(|e| bad("balance.code", e.to_string()))?;
                if b.data.is_empty() && b.days.is_empty() {
                    return Err(bad("balance", "give `data` or `days` patterns".into()));
                }
                Some(BalanceQuery {
                    code: b.code,
                    data: b
                        .data
                        .iter()
                        .map(|p| compile("balance.data", p, &["mb", "gb"]))
                        .collect::<Result<_, _>>()?,
                    days: b
                        .days
                        .iter()
                        .map(|p| compile("balance.days", p, &["days"]))
                        .collect::<Result<_, _>>()?,
                    source: b.source,
                })
            }
        };
        let topup = match f.topup {
            None => None,
            Some(t) => Some(TopUp {
                pattern: compile("topup.pattern", &t.pattern, &[])?,
                sender: t.sender,
                source: t.source,
            }),
        };
        if f.emulator
            .as_ref()
            .is_some_and(|e| e.source.trim().is_empty())
        {
            return Err(bad(
                "emulator.source",
                "say where the replies come from".into(),
            ));
        }
        let emulator = f.emulator.map(|e| e.ussd).unwrap_or_default();
        for (i, e) in emulator.iter().enumerate() {
            let ok = match e.network.as_deref() {
                None => e.reply.is_some(),
                Some("timeout" | "unsupported") => e.reply.is_none(),
                Some(_) => false,
            };
            if !ok {
                return Err(bad(
                    &format!("emulator.ussd[{i}]"),
                    "a `reply`, or `network` = \"timeout\" | \"unsupported\"".into(),
                ));
            }
        }
        Ok(Operator {
            file: file.to_string(),
            mcc_mnc: f.mcc_mnc,
            name: f.name,
            balance,
            topup,
            emulator,
        })
    }
}

/// The loaded set.
#[derive(Debug, Clone, Default)]
pub struct Operators {
    list: Vec<Operator>,
}

impl Operators {
    pub fn shipped() -> Result<Operators, OperatorError> {
        let list = SHIPPED
            .iter()
            .map(|(f, t)| Operator::parse(&format!("devices/operators/{f}"), t))
            .collect::<Result<_, _>>()?;
        Ok(Operators { list })
    }

    /// Shipped files, then every `*.toml` of `dir` (when it exists), a user's file
    /// replacing the shipped ones for the networks it names.
    pub fn with_overrides(dir: &Path) -> Result<Operators, OperatorError> {
        let mut set = Self::shipped()?;
        let Ok(paths) = crate::toml_error::toml_files(dir) else {
            return Ok(set);
        };
        for path in paths {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| OperatorError::Io {
                file: file.clone(),
                source,
            })?;
            let op = Operator::parse(&file, &text)?;
            for m in &op.mcc_mnc {
                for o in &mut set.list {
                    o.mcc_mnc.retain(|x| x != m);
                }
            }
            set.list.retain(|o| !o.mcc_mnc.is_empty());
            set.list.push(op);
        }
        Ok(set)
    }

    /// The home operator of an IMSI: the longest MCC-MNC prefix that names one
    /// (E.212: 2- and 3-digit MNCs share MCCs).
    pub fn for_imsi(&self, imsi: &str) -> Option<&Operator> {
        let mut best: Option<(usize, &Operator)> = None;
        for o in &self.list {
            for m in &o.mcc_mnc {
                if imsi.starts_with(m.as_str()) && best.is_none_or(|(n, _)| m.len() > n) {
                    best = Some((m.len(), o));
                }
            }
        }
        best.map(|(_, o)| o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_operator_loads() {
        let set = Operators::shipped().unwrap();
        assert_eq!(set.list.len(), SHIPPED.len());
        let test = set.for_imsi("001010000000123").unwrap();
        assert!(test.balance.is_some());
        assert!(set.for_imsi("204040000000000").is_none());
    }

    #[test]
    fn the_test_network_reads_its_balance_replies() {
        let set = Operators::shipped().unwrap();
        let op = set.for_imsi("00101123").unwrap();
        let b = op.balance.as_ref().unwrap();
        for e in op.emulator.iter().filter(|e| e.code == b.code) {
            let facts = b.read(e.reply.as_deref().unwrap()).unwrap();
            assert_eq!(facts.data_left_mb, Some(512.5));
            assert_eq!(facts.days_left, Some(12.0));
        }
    }

    #[test]
    fn numbers_as_operators_write_them() {
        assert_eq!(number("512"), Some(512.0));
        assert_eq!(number("1 024,5"), Some(1024.5));
        assert_eq!(number("1,024.5"), Some(1024.5));
        assert_eq!(number("1.024,5"), Some(1024.5));
        assert_eq!(number("1,024"), Some(1024.0));
        assert_eq!(number("2,5"), Some(2.5));
        assert_eq!(number("x"), None);
    }

    #[test]
    fn bad_files_are_refused_by_field() {
        let e = Operator::parse(
            "x.toml",
            "mcc_mnc = [\"1\"]\nname = \"n\"\nsource = \"s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x.toml: field `mcc_mnc`"), "{e}");
        let e = Operator::parse(
            "x.toml",
            "mcc_mnc = [\"00101\"]\nname = \"n\"\nsource = \"s\"\n[balance]\ncode = \"*100#\"\ndata = ['(\\d+) MB']\nsource = \"s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("balance.data") && e.contains("group named mb"),
            "{e}"
        );
        let e = Operator::parse(
            "x.toml",
            "mcc_mnc = [\"00101\"]\nname = \"n\"\nsource = \"s\"\n[balance]\ncode = \"*100#;AT\"\ndays = ['(?P<days>\\d+)']\nsource = \"s\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("balance.code"), "{e}");
        assert!(Operator::parse(
            "x.toml",
            "mcc_mnc = [\"00101\"]\nname = \"n\"\nsource = \"s\"\nspeed = 1\n"
        )
        .is_err());
    }

    #[test]
    fn a_topup_sms_is_recognised_with_its_amount() {
        let op = Operator::parse(
            "x.toml",
            "mcc_mnc = [\"00101\"]\nname = \"n\"\nsource = \"s\"\n[topup]\nsender = \"TopUp\"\npattern = '(?i)added (?P<mb>[\\d.,]+) MB'\nsource = \"s\"\n",
        )
        .unwrap();
        let t = op.topup.unwrap();
        assert_eq!(t.matches("TopUp", "We added 1,024 MB."), Some(Some(1024.0)));
        assert_eq!(t.matches("Other", "We added 1,024 MB."), None);
        assert_eq!(t.matches("TopUp", "hello"), None);
    }
}
