//! From a recorded history to a verdict: runs the workload's checkers (see `crate::check`).

use std::path::Path;

use anyhow::Context;

use crate::check::{self, CheckParams, Validity, bank::BankParams};

use super::workload::{BANK_ACCOUNTS, BANK_INITIAL};

/// What the checkers said.
#[derive(Clone, Debug)]
pub struct Checked {
    /// Whether every checker found the history valid (an undecided checker is not valid).
    pub valid: bool,
    /// The overall verdict.
    pub validity: Validity,
    /// Every checker's result, as JSON.
    pub results: serde_json::Value,
    /// Anomaly kinds found, with counts (over every checker).
    pub anomalies: Vec<(String, usize)>,
}

/// Checks the history at `path` as a `workload` history.
pub fn check_history(path: &Path, workload: &str) -> anyhow::Result<Checked> {
    let events =
        check::read_history(path).with_context(|| format!("reading {}", path.display()))?;
    let ops = check::pair(&events)
        .with_context(|| format!("pairing the operations of {}", path.display()))?;
    let params = CheckParams {
        bank: Some(BankParams {
            accounts: (0..BANK_ACCOUNTS).map(|a| a.to_string()).collect(),
            total: BANK_INITIAL * BANK_ACCOUNTS as i64,
            null_balance_is_zero: false,
        }),
        ..CheckParams::default()
    };
    let results = check::check_workload(workload, &ops, &params);
    let validity = check::overall(&results);
    let mut anomalies: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &results {
        for (kind, n) in &r.anomaly_counts {
            *anomalies.entry(format!("{}:{kind}", r.checker)).or_default() += *n as usize;
        }
    }
    Ok(Checked {
        valid: validity == Validity::Valid,
        validity,
        results: serde_json::to_value(&results)?,
        anomalies: anomalies.into_iter().collect(),
    })
}
