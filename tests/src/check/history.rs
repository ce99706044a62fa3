//! Histories: the events a run recorded (one JSON line each), and the operations they pair into.
//!
//! A history is a sequence of [`Event`]s: every operation a client process attempts appears as
//! an `invoke` event, later followed by at most one completion event of the same process (`ok`,
//! `fail` or `info`). The checkers work on [`Op`]s, which [`pair`] builds by matching each
//! invoke with its completion, and which it validates against Jepsen's conventions (see the
//! format in [`crate::check`]).
//!
//! For example, these five events
//!
//! ```text
//! index process type    f      value
//! 0     0       invoke  write  [1, 5]
//! 1     1       invoke  read   [1, null]
//! 2     0       info    write  [1, 5]      (timed out: process 0 is retired)
//! 3     1       ok      read   [1, 5]
//! 4     2       invoke  write  [1, 6]      (process 2 replaces process 0; never completes)
//! ```
//!
//! pair into three operations:
//!
//! ```text
//! Op { process: 0, f: write, invoke_index: 0, complete_index: Some(2), outcome: Info, value: [1, 5] }
//! Op { process: 1, f: read,  invoke_index: 1, complete_index: Some(3), outcome: Ok,   value: [1, 5] }
//! Op { process: 2, f: write, invoke_index: 4, complete_index: None,    outcome: Open, value: [1, 6] }
//! ```
//!
//! whereas a sixth event `{"index": 5, "process": 0, "type": "invoke", ...}` would be rejected
//! with [`HistoryError::ProcessReused`]: after an `info`, the process may still be running the
//! old operation, so a new one under the same id would break the one-outstanding-op rule.
//!
//! An `Op`'s value is the completion's for `ok` (a read's result, a transaction's filled-in
//! reads), else the invoke's; a completion whose value is `null` keeps the invoke's value.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// An operation begins.
    Invoke,
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown: it may or may not have happened, at any time after its invoke.
    Info,
}

/// One line of a history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history, strictly increasing down the file.
    pub index: u64,
    /// Nanoseconds since the run began (monotonic).
    pub time: u64,
    /// The client process.
    pub process: u64,
    /// Invoke or one of the completions (`"type"` in the JSON).
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The operation's function: `"read"`, `"write"`, `"cas"`, `"txn"`, `"transfer"`...
    pub f: String,
    /// The operation's argument or result.
    #[serde(default)]
    pub value: Value,
    /// The node that served it, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Commit timestamp (writes) or read timestamp (read-only operations), nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
    /// A read-write transaction's read timestamp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_ts: Option<u64>,
    /// For people: the error, on fail and info completions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event {
    /// An event without node, timestamps or error.
    pub fn new(
        index: u64,
        time: u64,
        process: u64,
        kind: EventType,
        f: &str,
        value: Value,
    ) -> Event {
        Event {
            index,
            time,
            process,
            kind,
            f: f.to_string(),
            value,
            node: None,
            ts: None,
            read_ts: None,
            error: None,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Completed `ok`: it happened.
    Ok,
    /// Completed `fail`: it did not happen.
    Fail,
    /// Completed `info`: it may have happened, at any time after its invoke, or never.
    Info,
    /// Never completed: treated like `Info`.
    Open,
}

impl Outcome {
    /// Whether the operation may or may not have happened (`Info` or `Open`).
    pub fn is_indeterminate(self) -> bool {
        matches!(self, Outcome::Info | Outcome::Open)
    }
}

/// An operation: an invoke paired with its completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The client process.
    pub process: u64,
    /// The function.
    pub f: String,
    /// The invoke event's index: how anomalies name this operation.
    pub invoke_index: u64,
    /// The invoke event's time.
    pub invoke_time: u64,
    /// The completion event's index (`None`: never completed).
    pub complete_index: Option<u64>,
    /// The completion event's time (`None`: never completed).
    pub complete_time: Option<u64>,
    /// How it ended.
    pub outcome: Outcome,
    /// The completion's value for `ok`, else the invoke's.
    pub value: Value,
    /// The node that served it (the completion's, else the invoke's).
    pub node: Option<String>,
    /// Commit or read timestamp (the completion's, else the invoke's).
    pub ts: Option<u64>,
    /// A read-write transaction's read timestamp (the completion's, else the invoke's).
    pub read_ts: Option<u64>,
}

impl Op {
    /// Whether this operation completed ok before `other` was invoked (real-time order).
    pub fn precedes(&self, other: &Op) -> bool {
        self.outcome == Outcome::Ok && self.complete_index.is_some_and(|c| c < other.invoke_index)
    }

    /// The position of the completion in the history, `u64::MAX` if it never completed (or its
    /// completion is unknown): the end of time, for real-time comparisons.
    pub fn return_position(&self) -> u64 {
        match self.outcome {
            Outcome::Ok | Outcome::Fail => self.complete_index.unwrap_or(u64::MAX),
            Outcome::Info | Outcome::Open => u64::MAX,
        }
    }
}

/// What is wrong with a history file or its events.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a valid event.
    #[error("line {line}: {message}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// An event's index is not greater than the previous event's.
    #[error("event index {index} follows index {previous}: indexes must increase")]
    IndexOrder {
        /// The offending index.
        index: u64,
        /// The index before it.
        previous: u64,
    },
    /// A process invoked an operation while another of its operations was outstanding.
    #[error(
        "process {process} invoked at index {second} while its op at index {first} was outstanding"
    )]
    TwoOutstanding {
        /// The process.
        process: u64,
        /// The outstanding op's invoke index.
        first: u64,
        /// The new invoke's index.
        second: u64,
    },
    /// A completion with no outstanding invoke of its process.
    #[error("completion at index {index} of process {process} has no outstanding invoke")]
    CompletionWithoutInvoke {
        /// The process.
        process: u64,
        /// The completion's index.
        index: u64,
    },
    /// A process that ended with `info` was used again.
    #[error(
        "process {process} was retired by the info at index {info} but appears again at index {index}"
    )]
    ProcessReused {
        /// The process.
        process: u64,
        /// The info completion's index.
        info: u64,
        /// The event that reuses it.
        index: u64,
    },
    /// A completion's `f` differs from its invoke's.
    #[error(
        "completion at index {index} has f {completion:?} but its invoke (index {invoke}) has f {invoked:?}"
    )]
    MismatchedF {
        /// The invoke's index.
        invoke: u64,
        /// The completion's index.
        index: u64,
        /// The invoke's f.
        invoked: String,
        /// The completion's f.
        completion: String,
    },
}

/// Parses a history from JSON Lines text (blank lines are skipped; line numbers in errors are
/// 1-based).
pub fn parse_history(text: &str) -> Result<Vec<Event>, HistoryError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(event) = parse_line(line, i + 1)? {
            events.push(event);
        }
    }
    Ok(events)
}

/// Reads a history file (see [`parse_history`]).
pub fn read_history(path: &Path) -> Result<Vec<Event>, HistoryError> {
    let io = |source| HistoryError::Io { path: path.to_path_buf(), source };
    let reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        if let Some(event) = parse_line(&line.map_err(io)?, i + 1)? {
            events.push(event);
        }
    }
    Ok(events)
}

/// Reads a history file and pairs it into operations.
pub fn read_ops(path: &Path) -> Result<Vec<Op>, HistoryError> {
    pair(&read_history(path)?)
}

fn parse_line(line: &str, number: usize) -> Result<Option<Event>, HistoryError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(line)
        .map(Some)
        .map_err(|e| HistoryError::Parse { line: number, message: e.to_string() })
}

/// Writes events as JSON Lines.
pub fn write_history(mut out: impl Write, events: &[Event]) -> std::io::Result<()> {
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Writes events to the file at `path` (replacing it).
pub fn write_history_file(path: &Path, events: &[Event]) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::create(path).map_err(io)?;
    write_history(std::io::BufWriter::new(file), events).map_err(io)
}

/// Pairs invokes with completions, in invoke order, checking Jepsen's conventions: indexes
/// increase; a process has at most one outstanding operation; a completion has an outstanding
/// invoke of its process with the same `f`; a process retired by `info` is not used again.
/// Invokes never completed become [`Outcome::Open`] operations.
pub fn pair(events: &[Event]) -> Result<Vec<Op>, HistoryError> {
    enum Slot {
        Busy(usize),
        Retired(u64),
    }
    let mut ops: Vec<Op> = Vec::new();
    let mut processes: HashMap<u64, Slot> = HashMap::new();
    let mut previous: Option<u64> = None;
    for e in events {
        if let Some(p) = previous
            && e.index <= p
        {
            return Err(HistoryError::IndexOrder { index: e.index, previous: p });
        }
        previous = Some(e.index);
        match (e.kind, processes.get(&e.process)) {
            (_, Some(Slot::Retired(info))) => {
                return Err(HistoryError::ProcessReused {
                    process: e.process,
                    info: *info,
                    index: e.index,
                });
            }
            (EventType::Invoke, Some(Slot::Busy(i))) => {
                return Err(HistoryError::TwoOutstanding {
                    process: e.process,
                    first: ops[*i].invoke_index,
                    second: e.index,
                });
            }
            (EventType::Invoke, None) => {
                processes.insert(e.process, Slot::Busy(ops.len()));
                ops.push(Op {
                    process: e.process,
                    f: e.f.clone(),
                    invoke_index: e.index,
                    invoke_time: e.time,
                    complete_index: None,
                    complete_time: None,
                    outcome: Outcome::Open,
                    value: e.value.clone(),
                    node: e.node.clone(),
                    ts: e.ts,
                    read_ts: e.read_ts,
                });
            }
            (_, None) => {
                return Err(HistoryError::CompletionWithoutInvoke {
                    process: e.process,
                    index: e.index,
                });
            }
            (kind, Some(Slot::Busy(i))) => {
                let op = &mut ops[*i];
                if op.f != e.f {
                    return Err(HistoryError::MismatchedF {
                        invoke: op.invoke_index,
                        index: e.index,
                        invoked: op.f.clone(),
                        completion: e.f.clone(),
                    });
                }
                op.complete_index = Some(e.index);
                op.complete_time = Some(e.time);
                op.outcome = match kind {
                    EventType::Ok => Outcome::Ok,
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                if kind == EventType::Ok && !e.value.is_null() {
                    op.value = e.value.clone();
                }
                op.node = e.node.clone().or(op.node.take());
                op.ts = e.ts.or(op.ts);
                op.read_ts = e.read_ts.or(op.read_ts);
                if kind == EventType::Info {
                    processes.insert(e.process, Slot::Retired(e.index));
                } else {
                    processes.remove(&e.process);
                }
            }
        }
    }
    Ok(ops)
}
