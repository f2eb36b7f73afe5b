//! `simgate rules test RULES FACTS`: the rules engine run dry on files, so a platform
//! engineer can check a rule before sending it (the way thin-edge.io's `tedge flows
//! test` does). The engine is the daemon's own (src/rules.rs).

use super::UsageError;
use crate::rules::{self, Facts};
use anyhow::Context as _;
use clap::Subcommand;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Evaluate RULES (a JSON list of rules, or a platform record with `rules`) over
    /// FACTS (a JSON object of facts, or a list of them, evaluated in order with the
    /// rules' state carried along). Prints each firing as a JSON line; a refused rule is
    /// named on stderr (exit 2).
    Test {
        rules: PathBuf,
        facts: PathBuf,
        /// The ICCID the firing ids are made from.
        #[arg(long, default_value = "89000000000000000000")]
        iccid: String,
    },
}

fn json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("{}: not JSON: {e}", path.display())).into())
}

impl RulesCmd {
    pub(super) fn run(self) -> anyhow::Result<ExitCode> {
        let RulesCmd::Test {
            rules: rules_file,
            facts: facts_file,
            iccid,
        } = self;
        let list = match json(&rules_file)? {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(mut o) => match o.remove("rules") {
                Some(serde_json::Value::Array(a)) => a,
                _ => {
                    return Err(UsageError(format!(
                        "{}: a record without a rules list",
                        rules_file.display()
                    ))
                    .into())
                }
            },
            _ => {
                return Err(UsageError(format!(
                    "{}: not a list of rules or a record",
                    rules_file.display()
                ))
                .into())
            }
        };
        let (parsed, refused) = rules::parse(&list);
        for e in &refused {
            eprintln!("simgate: {}: {e}", rules_file.display());
        }
        let steps = match json(&facts_file)? {
            serde_json::Value::Array(a) => a,
            one => vec![one],
        };
        let mut state = rules::State::new();
        for (i, step) in steps.into_iter().enumerate() {
            let mut facts: Facts = serde_json::from_value(step).map_err(|e| {
                UsageError(format!("{}: facts #{}: {e}", facts_file.display(), i + 1))
            })?;
            if facts.now == 0 {
                facts.now = crate::time::unix_now();
            }
            if facts.month.is_empty() {
                facts.month = crate::time::month_key(facts.now);
            }
            for f in rules::evaluate(&iccid, &parsed, &mut state, &facts) {
                outln!("{}", serde_json::to_string(&f)?);
            }
        }
        Ok(if refused.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        })
    }
}
