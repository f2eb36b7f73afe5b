//! What the operator's channels leave in the store: a `ussd` or `sms_send` command's
//! result (kept as long as the command's id, so a repeat is answered with it), and the
//! operator's last balance figures per ICCID (shown beside the platform's, never over
//! them).

use super::{Store, StoreError};
use crate::contract::CommandResult;
use serde::{Deserialize, Serialize};

const RESULTS: &str = "command_results";
const BALANCES: &str = "operator_balances";

/// What the SIM's operator said about its balance, and when (MQTT.md, "SIM state":
/// `operator_estimate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct OperatorEstimate {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub data_left_mb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub days_left: Option<f64>,
    /// Always `operator`: the figures are the operator's reply to a balance query.
    pub source: String,
    /// When the reply came (Unix seconds).
    pub at: u64,
}

impl Store {
    /// Keep a command's result until its record is forgotten.
    pub fn set_command_result(&self, id: &str, r: &CommandResult) -> Result<(), StoreError> {
        self.put_json(RESULTS, id, r)?;
        self.flush()
    }

    pub fn command_result(&self, id: &str) -> Result<Option<CommandResult>, StoreError> {
        self.get_json(RESULTS, id)
    }

    /// Forget a command's result (with its record).
    pub fn remove_command_result(&self, id: &str) -> Result<(), StoreError> {
        self.tree(RESULTS)?.remove(id.as_bytes())?;
        Ok(())
    }

    pub fn operator_estimate(&self, iccid: &str) -> Result<Option<OperatorEstimate>, StoreError> {
        self.get_json(BALANCES, iccid)
    }

    pub fn set_operator_estimate(
        &self,
        iccid: &str,
        e: &OperatorEstimate,
    ) -> Result<(), StoreError> {
        self.put_json(BALANCES, iccid, e)?;
        self.flush()
    }
}
