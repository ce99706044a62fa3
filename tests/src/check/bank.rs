//! The `bank` invariant: transfers move money between accounts, never create or destroy it, so
//! every snapshot read must see all accounts, summing to the initial total, none negative.
//!
//! # Method
//!
//! One pass over the `ok` reads (`f` = `"read"`, value `{account: balance, ...}`). Each read is
//! checked on its own, which is the point: a read that saw a transfer's debit but not its
//! credit (read skew, or a torn transaction) has the wrong total. Anomalies:
//!
//! * `wrong-total`: the balances do not sum to the initial total;
//! * `missing-account`: an account is absent (or `null`, unless
//!   [`BankParams::null_balance_is_zero`]);
//! * `unexpected-account`: an account the checker was not told about;
//! * `negative-balance`: a balance below zero (transfers are refused when the balance is short);
//! * `malformed`: a balance that is not an integer, or a read value that is not an object.
//!
//! Transfers are only counted (`transfers_ok`, `transfers_failed`): whether each one happened is
//! what the snapshot sums reveal.
//!
//! # Worked example
//!
//! Accounts 0 and 1, total 10:
//!
//! ```text
//! index  event
//! 0      p0 invoke transfer {from: 0, to: 1, amount: 3}
//! 1      p1 invoke read
//! 2      p1 ok     read {0: 7, 1: 3}      10: fine (the transfer happened before the read)
//! 3      p0 ok     transfer
//! 4      p1 invoke read
//! 5      p1 ok     read {0: 7, 1: 0}      7: wrong-total (the debit without the credit)
//! ```

use std::collections::BTreeSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::{Op, Outcome};
use super::result::{Anomaly, AnomalyLog, CheckResult, Stats};

/// What the bank checker is told about the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankParams {
    /// Every account, as its name in the reads' objects (JSON object keys: `"0"`, `"1"`...).
    pub accounts: Vec<String>,
    /// The sum of all balances, which transfers preserve.
    pub total: i64,
    /// Whether a `null` balance means 0 (an account never written) rather than a missing
    /// account.
    #[serde(default)]
    pub null_balance_is_zero: bool,
}

/// The name an account value has in a read's object: a string as is, anything else as JSON
/// (`3` → `"3"`).
pub fn account_name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => super::json_text(other),
    }
}

/// Checks a bank history: every ok read has every account, sums to `initial_total`, and has no
/// negative balance.
pub fn check(ops: &[Op], accounts: &[String], initial_total: i64) -> CheckResult {
    check_with(
        ops,
        &BankParams {
            accounts: accounts.to_vec(),
            total: initial_total,
            null_balance_is_zero: false,
        },
    )
}

/// [`check`] with all the parameters.
pub fn check_with(ops: &[Op], params: &BankParams) -> CheckResult {
    let start = Instant::now();
    let mut log = AnomalyLog::new();
    let mut stats = Stats::of(ops);
    let accounts: BTreeSet<&str> = params.accounts.iter().map(String::as_str).collect();
    let (mut reads, mut transfers_ok, mut transfers_failed) = (0, 0, 0);
    for op in ops {
        match (op.f.as_str(), op.outcome) {
            ("transfer", Outcome::Ok) => transfers_ok += 1,
            ("transfer", Outcome::Fail) => transfers_failed += 1,
            ("read", Outcome::Ok) => {
                reads += 1;
                check_read(op, params, &accounts, &mut log);
            }
            _ => {}
        }
    }
    stats.add("reads", reads);
    stats.add("transfers_ok", transfers_ok);
    stats.add("transfers_failed", transfers_failed);
    log.finish("bank", stats, start.elapsed())
}

fn check_read(op: &Op, params: &BankParams, accounts: &BTreeSet<&str>, log: &mut AnomalyLog) {
    let index = op.invoke_index;
    let Some(balances) = op.value.as_object() else {
        log.push(Anomaly::new(
            "malformed",
            format!("read (index {index}) returned {}, not an object of balances", op.value),
            vec![index],
        ));
        return;
    };
    let mut total: i64 = 0;
    let mut complete = true;
    for (name, balance) in balances {
        if !accounts.contains(name.as_str()) {
            log.push(Anomaly::new(
                "unexpected-account",
                format!(
                    "read (index {index}) has account {name:?}, which is not one of the bank's"
                ),
                vec![index],
            ));
        }
        let b = match balance {
            Value::Null if params.null_balance_is_zero => 0,
            Value::Null => {
                complete = false;
                log.push(Anomaly::new(
                    "missing-account",
                    format!("read (index {index}) found no balance for account {name:?}"),
                    vec![index],
                ));
                continue;
            }
            v => match v.as_i64() {
                Some(b) => b,
                None => {
                    complete = false;
                    log.push(Anomaly::new(
                        "malformed",
                        format!("read (index {index}) has balance {v} for account {name:?}"),
                        vec![index],
                    ));
                    continue;
                }
            },
        };
        if b < 0 {
            log.push(Anomaly::new(
                "negative-balance",
                format!("read (index {index}) has balance {b} for account {name:?}"),
                vec![index],
            ));
        }
        total = total.saturating_add(b);
    }
    for name in accounts {
        if !balances.contains_key(*name) {
            complete = false;
            log.push(Anomaly::new(
                "missing-account",
                format!("read (index {index}) lacks account {name:?}"),
                vec![index],
            ));
        }
    }
    // A total over missing balances says nothing more than the missing account does.
    if complete && total != params.total {
        log.push(Anomaly::new(
            "wrong-total",
            format!(
                "read (index {index}) sums to {total}, not {}: {}",
                params.total,
                super::json_text(&op.value)
            ),
            vec![index],
        ));
    }
}
