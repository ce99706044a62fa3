//! Recording the history as it happens: one JSON line per event, in the order events happened
//! (an invoke is written before the request is sent, a completion after the answer arrived), with
//! times on the run's monotonic clock. The format is `crate::check`'s (Jepsen's conventions).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Ok,
    /// It definitely did not happen.
    Fail,
    /// Unknown: it may or may not have happened.
    Info,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// A completion's details.
#[derive(Clone, Debug, Default)]
pub struct Completion {
    /// The value (a read's result, a transaction's filled-in micro-ops), or the invoke's.
    pub value: Option<Value>,
    /// The node that served it, if known.
    pub node: Option<String>,
    /// Commit or read timestamp.
    pub ts: Option<u64>,
    /// A read-write transaction's read timestamp.
    pub read_ts: Option<u64>,
    /// For people: the error, on fail and info.
    pub error: Option<String>,
}

/// Counts for the progress bar and the results.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Operations invoked.
    pub invoked: u64,
    /// Completed ok.
    pub ok: u64,
    /// Completed fail.
    pub fail: u64,
    /// Completed info.
    pub info: u64,
}

/// The history being written.
pub struct Recorder {
    start: Instant,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    index: AtomicU64,
    next_process: AtomicU64,
    counts: Mutex<Counts>,
    /// (time ns, latency ns, outcome) of every completion, for the latency plot.
    latencies: Mutex<Vec<(u64, u64, Outcome, String)>>,
}

impl Recorder {
    /// A history written to `path`.
    pub fn create(path: &Path) -> anyhow::Result<Recorder> {
        Ok(Recorder {
            start: Instant::now(),
            out: Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
            index: AtomicU64::new(0),
            next_process: AtomicU64::new(0),
            counts: Mutex::new(Counts::default()),
            latencies: Mutex::new(Vec::new()),
        })
    }

    /// Nanoseconds since the run began.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A fresh process id (a client's first, or a replacement after an info).
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    fn write(&self, mut event: Value) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        // The index is taken under the lock, so lines are in index order.
        event["index"] = json!(self.index.fetch_add(1, Ordering::Relaxed));
        let _ = serde_json::to_writer(&mut *out, &event);
        let _ = out.write_all(b"\n");
    }

    /// Records an invocation; returns its time (to measure the latency).
    pub fn invoke(&self, process: u64, f: &str, value: Value, node: Option<&str>) -> u64 {
        let time = self.now();
        self.write(json!({"time": time, "process": process, "type": "invoke", "f": f, "value": value, "node": node}));
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).invoked += 1;
        time
    }

    /// Records a completion of the operation invoked at `invoked`.
    pub fn complete(&self, process: u64, f: &str, invoked: u64, outcome: Outcome, c: Completion) {
        let time = self.now();
        let mut event = json!({
            "time": time, "process": process, "type": outcome.as_str(), "f": f,
            "value": c.value.unwrap_or(Value::Null), "node": c.node, "ts": c.ts,
        });
        if let Some(r) = c.read_ts {
            event["read_ts"] = json!(r);
        }
        if let Some(e) = c.error {
            event["error"] = json!(e);
        }
        self.write(event);
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            match outcome {
                Outcome::Ok => counts.ok += 1,
                Outcome::Fail => counts.fail += 1,
                Outcome::Info => counts.info += 1,
            }
        }
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).push((
            invoked,
            time.saturating_sub(invoked),
            outcome,
            f.to_string(),
        ));
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every completion's (invoke time, latency, outcome, f).
    pub fn latencies(&self) -> Vec<(u64, u64, Outcome, String)> {
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Flushes the file.
    pub fn flush(&self) -> anyhow::Result<()> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).flush()?;
        Ok(())
    }
}
