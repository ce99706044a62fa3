//! What every checker returns: a verdict, the anomalies found (a few examples of each kind, all
//! of them counted), and counts.
//!
//! A checker says [`Validity::Invalid`] as soon as it found one anomaly, [`Validity::Unknown`]
//! when it could not decide some part of the history (a search budget ran out, the operations
//! carried no timestamps) and found nothing wrong elsewhere, and [`Validity::Valid`] otherwise.
//! [`overall`] folds several results the same way: one `Invalid` makes the run invalid, else one
//! `Unknown` makes it unknown.
//!
//! Anomalies name operations by *history index*: the `index` of the operation's invoke event,
//! which is what a person searches the history file for. For example a stale read might be
//!
//! ```text
//! Anomaly { kind: "stale-read", ops: [4, 10],
//!           explanation: "read (index 10) of key 1 at ts 300 returned 1, but write 2
//!                         (index 4) at ts 200 is the latest at or below 300" }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many examples of one anomaly kind a result keeps (all are counted).
pub const MAX_EXAMPLES_PER_KIND: usize = 8;

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    /// The history satisfies the property.
    Valid,
    /// The history violates it; the anomalies say how.
    Invalid,
    /// The checker could not decide (and found no violation).
    Unknown,
}

/// One violation, with the operations that make up a (small) example of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The kind, e.g. `"nonlinearizable"`, `"G-single-realtime"`, `"wrong-total"`,
    /// `"stale-read"`, `"timestamp-order"`.
    pub kind: String,
    /// For people: what happened, naming operations by history index.
    pub explanation: String,
    /// History indexes (invoke event indexes) of the operations of the example, ascending.
    pub ops: Vec<u64>,
}

impl Anomaly {
    /// An anomaly of `kind` over `ops` (sorted and deduplicated here).
    pub fn new(kind: &str, explanation: String, mut ops: Vec<u64>) -> Anomaly {
        ops.sort_unstable();
        ops.dedup();
        Anomaly { kind: kind.to_string(), explanation, ops }
    }
}

/// Counts of what a checker looked at. `extra` holds checker-specific counts (keys, states
/// explored, graph edges...), flattened into the JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Operations given to the checker (all workloads' ops it was handed).
    pub ops: u64,
    /// Of which completed ok.
    pub ok: u64,
    /// Completed fail.
    pub fail: u64,
    /// Completed info.
    pub info: u64,
    /// Never completed.
    pub open: u64,
    /// Checker-specific counts.
    #[serde(flatten)]
    pub extra: BTreeMap<String, u64>,
}

impl Stats {
    /// Counts the outcomes of `ops`.
    pub fn of(ops: &[super::Op]) -> Stats {
        let mut s = Stats { ops: ops.len() as u64, ..Stats::default() };
        for op in ops {
            match op.outcome {
                super::Outcome::Ok => s.ok += 1,
                super::Outcome::Fail => s.fail += 1,
                super::Outcome::Info => s.info += 1,
                super::Outcome::Open => s.open += 1,
            }
        }
        s
    }

    /// Adds `n` to the checker-specific count `name`.
    pub fn add(&mut self, name: &str, n: u64) {
        *self.extra.entry(name.to_string()).or_insert(0) += n;
    }
}

/// One checker's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which checker: `"register"`, `"append"`, `"bank"`, `"causal"`, `"timestamps"`.
    pub checker: String,
    /// The verdict.
    pub valid: Validity,
    /// Up to [`MAX_EXAMPLES_PER_KIND`] examples of each anomaly kind, in the order found.
    pub anomalies: Vec<Anomaly>,
    /// How many anomalies of each kind were found (examples or not).
    pub anomaly_counts: BTreeMap<String, u64>,
    /// Why parts of the history could not be decided, or other remarks for people.
    pub notes: Vec<String>,
    /// Counts.
    pub stats: Stats,
    /// How long the check took (in the JSON: `elapsed_secs`, a float).
    #[serde(rename = "elapsed_secs", with = "secs")]
    pub elapsed: Duration,
}

impl CheckResult {
    /// A result that could not check anything, for `reason`.
    pub fn unknown(checker: &str, reason: &str) -> CheckResult {
        CheckResult {
            checker: checker.to_string(),
            valid: Validity::Unknown,
            anomalies: Vec::new(),
            anomaly_counts: BTreeMap::new(),
            notes: vec![reason.to_string()],
            stats: Stats::default(),
            elapsed: Duration::ZERO,
        }
    }

    /// How many anomalies of `kind` were found.
    pub fn count(&self, kind: &str) -> u64 {
        self.anomaly_counts.get(kind).copied().unwrap_or(0)
    }

    /// The anomaly kinds found, in name order.
    pub fn kinds(&self) -> Vec<&str> {
        self.anomaly_counts.keys().map(String::as_str).collect()
    }
}

/// Collects anomalies while a checker runs: keeps [`MAX_EXAMPLES_PER_KIND`] examples per kind,
/// counts all, and builds the [`CheckResult`].
#[derive(Debug, Default)]
pub struct AnomalyLog {
    anomalies: Vec<Anomaly>,
    counts: BTreeMap<String, u64>,
    notes: Vec<String>,
    undecided: bool,
}

impl AnomalyLog {
    /// An empty log.
    pub fn new() -> AnomalyLog {
        AnomalyLog::default()
    }

    /// Records an anomaly (kept as an example if fewer than the cap of its kind are kept).
    pub fn push(&mut self, anomaly: Anomaly) {
        let n = self.counts.entry(anomaly.kind.clone()).or_insert(0);
        *n += 1;
        if *n as usize <= MAX_EXAMPLES_PER_KIND {
            self.anomalies.push(anomaly);
        }
    }

    /// Records that part of the history could not be decided, and why.
    pub fn undecided(&mut self, why: String) {
        self.undecided = true;
        self.notes.push(why);
    }

    /// Adds a remark that does not affect the verdict.
    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Whether any anomaly was recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The result: `Invalid` if any anomaly was recorded, else `Unknown` if anything was
    /// undecided, else `Valid`.
    pub fn finish(self, checker: &str, stats: Stats, elapsed: Duration) -> CheckResult {
        let valid = if !self.counts.is_empty() {
            Validity::Invalid
        } else if self.undecided {
            Validity::Unknown
        } else {
            Validity::Valid
        };
        CheckResult {
            checker: checker.to_string(),
            valid,
            anomalies: self.anomalies,
            anomaly_counts: self.counts,
            notes: self.notes,
            stats,
            elapsed,
        }
    }
}

/// The verdict of several checkers: `Invalid` if any is, else `Unknown` if any is (or there are
/// none), else `Valid`.
pub fn overall(results: &[CheckResult]) -> Validity {
    if results.iter().any(|r| r.valid == Validity::Invalid) {
        Validity::Invalid
    } else if results.is_empty() || results.iter().any(|r| r.valid == Validity::Unknown) {
        Validity::Unknown
    } else {
        Validity::Valid
    }
}

/// `Duration` as float seconds in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(secs).unwrap_or_default())
    }
}
