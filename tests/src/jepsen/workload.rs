//! The workloads: what each client process does, and how it records it.
//!
//! | workload | operations | checked by |
//! |---|---|---|
//! | `register` | read (a read-only transaction at `latest`), write (a blind put), cas (a read-write transaction that writes only if the value is the expected one), over 8 independent keys | per-key linearizability; timestamp order |
//! | `append` | transactions of 1–4 micro-ops over a rotating set of keys: `append` (read the list, write it longer) and `r`; read-only ones through followers too | Elle's cycle search (strict serializability); timestamp order |
//! | `bank` | transfers between 5 accounts (a read-write transaction that refuses to overdraw) and snapshot reads of every balance | totals and non-negative balances |
//! | `causal` | a writer per key writes 1, 2, 3, ... through the leader; after each acknowledgement a reader reads the key through a node that is *not* the leader | every read sees every acknowledged write; timestamp order |
//!
//! Every process is one client (its own connections) with a read preference: the leader, any
//! node, or one node in particular, so that reads are served by followers as well. An operation
//! that times out or whose commit outcome is unknown completes as `info`, and its process is
//! retired (the next operation gets a fresh process id, as Jepsen's convention says).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundkv_client::{Client, ClientOptions, Error as ClientError, ReadPreference};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use serde_json::{Value, json};

use super::recorder::{Completion, Outcome, Recorder};

/// The workloads by name.
pub const WORKLOADS: &[&str] = &["register", "append", "bank", "causal"];

/// The bank's accounts and what each starts with.
pub const BANK_ACCOUNTS: u64 = 5;
/// Each account's initial balance.
pub const BANK_INITIAL: i64 = 100;

/// How long one operation may take before it is recorded as `info`.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// What every client shares.
pub struct Shared {
    /// The history.
    pub recorder: Arc<Recorder>,
    /// Client addresses of every node, and their ids.
    pub nodes: Vec<(u64, String)>,
    /// Unique values.
    counter: AtomicU64,
    /// `append`: the keys in use, and how many appends each got.
    append_keys: Mutex<(Vec<u64>, BTreeMap<u64, u64>, u64)>,
    /// Every key an `append` transaction touched.
    pub append_touched: Mutex<BTreeSet<u64>>,
}

impl Shared {
    /// Shared state for clients of `nodes`.
    pub fn new(recorder: Arc<Recorder>, nodes: Vec<(u64, String)>) -> Arc<Self> {
        Arc::new(Shared {
            recorder,
            nodes,
            counter: AtomicU64::new(1),
            append_keys: Mutex::new(((0..6).collect(), BTreeMap::new(), 6)),
            append_touched: Mutex::new(BTreeSet::new()),
        })
    }

    fn unique(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    fn node_name(id: u64) -> String {
        format!("n{id}")
    }
}

/// Client options for the suite: short deadlines, so that faults turn into `info` quickly.
pub fn client_options(read_preference: ReadPreference) -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        commit_deadline: Duration::from_secs(5),
        retry_deadline: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        read_preference,
        max_transaction_attempts: 3,
        ..ClientOptions::default()
    }
}

/// A client process: its client, its current process id, and where its reads go.
pub struct Process {
    shared: Arc<Shared>,
    client: Client,
    id: u64,
    preference: ReadPreference,
    rng: StdRng,
}

impl Process {
    /// A process whose reads go where `preference` says.
    pub async fn new(
        shared: Arc<Shared>,
        preference: ReadPreference,
        seed: u64,
    ) -> anyhow::Result<Process> {
        let addrs: Vec<String> = shared.nodes.iter().map(|(_, a)| a.clone()).collect();
        let client = Client::connect_with(addrs, client_options(preference)).await?;
        let id = shared.recorder.new_process();
        Ok(Process { shared, client, id, preference, rng: StdRng::seed_from_u64(seed) })
    }

    fn read_node(&self) -> Option<String> {
        match self.preference {
            ReadPreference::Node(id) => Some(Shared::node_name(id)),
            _ => self.client.leader().map(|m| Shared::node_name(m.id)),
        }
    }

    fn write_node(&self) -> Option<String> {
        self.client.leader().map(|m| Shared::node_name(m.id))
    }

    /// Runs `op` as one operation: invoke, then the completion `op` reports, or `info` after the
    /// timeout. `reads_only`: an error or timeout is `fail` (nothing can have happened).
    async fn run<F>(&mut self, f: &str, value: Value, reads_only: bool, op: F) -> Outcome
    where
        F: std::future::Future<Output = Result<(Outcome, Completion), ClientError>>,
    {
        let rec = self.shared.recorder.clone();
        let invoked = rec.invoke(self.id, f, value, None);
        let result = tokio::time::timeout(OP_TIMEOUT, op).await;
        let (outcome, completion) = match result {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let outcome = if !reads_only && e.commit_may_have_applied() {
                    Outcome::Info
                } else {
                    Outcome::Fail
                };
                (outcome, Completion { error: Some(e.to_string()), ..Completion::default() })
            }
            Err(_) => (
                if reads_only { Outcome::Fail } else { Outcome::Info },
                Completion {
                    error: Some(format!("no answer within {OP_TIMEOUT:?}")),
                    ..Completion::default()
                },
            ),
        };
        rec.complete(self.id, f, invoked, outcome, completion);
        if outcome == Outcome::Info {
            self.id = rec.new_process();
        }
        outcome
    }

    /// One `register` operation on a random key.
    pub async fn register_op(&mut self) {
        let key = self.rng.random_range(0..8u64);
        let k = format!("r{key}");
        let roll: u32 = self.rng.random_range(0..10);
        let client = self.client.clone();
        if roll < 5 {
            let node = self.read_node();
            self.run("read", json!([key, null]), true, async move {
                let s = client.read_only().await?;
                let v = s.get(&k).await?;
                let v = v.map(|b| parse_int(&b));
                Ok((
                    Outcome::Ok,
                    Completion {
                        value: Some(json!([key, v])),
                        node,
                        ts: Some(s.ts().as_nanos()),
                        ..Completion::default()
                    },
                ))
            })
            .await;
        } else if roll < 8 {
            let v = self.shared.unique();
            let node = self.write_node();
            self.run("write", json!([key, v]), false, async move {
                let info = client.put(&k, v.to_string()).await?;
                Ok((
                    Outcome::Ok,
                    Completion {
                        value: Some(json!([key, v])),
                        node,
                        ts: Some(info.ts.as_nanos()),
                        ..Completion::default()
                    },
                ))
            })
            .await;
        } else {
            // Expect a recent value: most cas attempts then have a chance.
            let recent = self.shared.counter.load(Ordering::Relaxed);
            let expected = recent.saturating_sub(self.rng.random_range(1..20u64)).max(1);
            let new = self.shared.unique();
            let node = self.write_node();
            self.run("cas", json!([key, [expected, new]]), false, async move {
                let read_ts = Arc::new(AtomicU64::new(0));
                let rt = read_ts.clone();
                let mut attempt = 0;
                let (swapped, info) = loop {
                    attempt += 1;
                    let mut txn = client.begin();
                    let cur = txn.get(&k).await?.map(|b| parse_int(&b));
                    rt.store(txn.read_ts().map_or(0, |t| t.as_nanos()), Ordering::Relaxed);
                    let swapped = cur == Some(expected);
                    if swapped {
                        txn.put(&k, new.to_string())?;
                    }
                    match txn.commit().await {
                        Ok(info) => break (swapped, info),
                        Err(e) if retry_txn(&e, attempt) => {
                            tokio::time::sleep(Duration::from_millis(20)).await
                        }
                        Err(e) => return Err(e),
                    }
                };
                let c = Completion {
                    value: Some(json!([key, [expected, new]])),
                    node,
                    ..Completion::default()
                };
                if swapped {
                    Ok((
                        Outcome::Ok,
                        Completion {
                            ts: Some(info.ts.as_nanos()),
                            read_ts: nonzero(read_ts.load(Ordering::Relaxed)),
                            ..c
                        },
                    ))
                } else {
                    Ok((Outcome::Fail, c))
                }
            })
            .await;
        }
    }

    fn append_keys(&mut self) -> Vec<u64> {
        let mut state = self.shared.append_keys.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.rng.random_range(1..=4usize).min(state.0.len());
        let mut picked = BTreeSet::new();
        while picked.len() < n {
            picked.insert(state.0[self.rng.random_range(0..state.0.len())]);
        }
        // Rotate keys that have grown long, so lists (and checking them) stay small.
        for &k in &picked {
            let count = state.1.entry(k).or_default();
            *count += 1;
            if *count > 40 {
                let next = state.2;
                state.2 += 1;
                if let Some(slot) = state.0.iter_mut().find(|x| **x == k) {
                    *slot = next;
                }
            }
        }
        self.shared
            .append_touched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(picked.iter().copied());
        picked.into_iter().collect()
    }

    /// One `append` transaction.
    pub async fn append_op(&mut self) {
        let keys = self.append_keys();
        let mut ops: Vec<(bool, u64, u64)> = Vec::new(); // (append?, key, value)
        for &k in &keys {
            if self.rng.random_bool(0.5) {
                ops.push((true, k, self.shared.unique()));
            } else {
                ops.push((false, k, 0));
            }
        }
        let invoke_value = micro_ops(&ops, None);
        let read_only = ops.iter().all(|(a, _, _)| !a);
        let client = self.client.clone();
        if read_only && self.rng.random_bool(0.5) {
            // Through the process's read preference (followers included).
            let node = self.read_node();
            self.run("txn", invoke_value, true, async move {
                let s = client.read_only().await?;
                let mut reads = Vec::new();
                for (_, k, _) in &ops {
                    reads.push(parse_list(s.get(format!("a{k}")).await?.as_deref()));
                }
                Ok((
                    Outcome::Ok,
                    Completion {
                        value: Some(micro_ops(&ops, Some(&reads))),
                        node,
                        ts: Some(s.ts().as_nanos()),
                        ..Completion::default()
                    },
                ))
            })
            .await;
            return;
        }
        let node = self.write_node();
        self.run("txn", invoke_value, read_only, async move {
            let read_ts = Arc::new(AtomicU64::new(0));
            let rt = read_ts.clone();
            let mut attempt = 0;
            let (reads, info) = loop {
                attempt += 1;
                let mut txn = client.begin();
                let mut reads = Vec::new();
                for &(append, k, v) in &ops {
                    let key = format!("a{k}");
                    let mut list = parse_list(txn.get(&key).await?.as_deref());
                    if append {
                        list.push(v);
                        txn.put(&key, format_list(&list))?;
                        reads.push(Vec::new());
                    } else {
                        reads.push(list);
                    }
                }
                rt.store(txn.read_ts().map_or(0, |t| t.as_nanos()), Ordering::Relaxed);
                match txn.commit().await {
                    Ok(info) => break (reads, info),
                    Err(e) if retry_txn(&e, attempt) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => return Err(e),
                }
            };
            let ts = if read_only {
                nonzero(read_ts.load(Ordering::Relaxed))
            } else {
                Some(info.ts.as_nanos())
            };
            Ok((
                Outcome::Ok,
                Completion {
                    value: Some(micro_ops(&ops, Some(&reads))),
                    node,
                    ts,
                    read_ts: if read_only {
                        None
                    } else {
                        nonzero(read_ts.load(Ordering::Relaxed))
                    },
                    ..Completion::default()
                },
            ))
        })
        .await;
    }

    /// One `bank` operation: a transfer or a snapshot read.
    pub async fn bank_op(&mut self) {
        let client = self.client.clone();
        if self.rng.random_bool(0.4) {
            let node = self.read_node();
            self.run("read", Value::Null, true, async move {
                let s = client.read_only().await?;
                let mut balances = serde_json::Map::new();
                for a in 0..BANK_ACCOUNTS {
                    let v = s.get(format!("acct{a}")).await?;
                    balances.insert(a.to_string(), json!(v.map(|b| parse_int(&b) as i64)));
                }
                Ok((
                    Outcome::Ok,
                    Completion {
                        value: Some(Value::Object(balances)),
                        node,
                        ts: Some(s.ts().as_nanos()),
                        ..Completion::default()
                    },
                ))
            })
            .await;
            return;
        }
        let from = self.rng.random_range(0..BANK_ACCOUNTS);
        let to = (from + self.rng.random_range(1..BANK_ACCOUNTS)) % BANK_ACCOUNTS;
        let amount: i64 = self.rng.random_range(1..=5);
        let value = json!({"from": from, "to": to, "amount": amount});
        let node = self.write_node();
        self.run("transfer", value.clone(), false, async move {
            let mut attempt = 0;
            let (moved, info) = loop {
                attempt += 1;
                let mut txn = client.begin();
                let (fk, tk) = (format!("acct{from}"), format!("acct{to}"));
                let fb = txn.get(&fk).await?.map_or(0, |b| parse_int(&b) as i64);
                let tb = txn.get(&tk).await?.map_or(0, |b| parse_int(&b) as i64);
                let moved = fb >= amount;
                if moved {
                    txn.put(&fk, (fb - amount).to_string())?;
                    txn.put(&tk, (tb + amount).to_string())?;
                }
                match txn.commit().await {
                    Ok(info) => break (moved, info),
                    Err(e) if retry_txn(&e, attempt) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(e) => return Err(e),
                }
            };
            let c = Completion { value: Some(value), node, ..Completion::default() };
            if moved {
                Ok((Outcome::Ok, Completion { ts: Some(info.ts.as_nanos()), ..c }))
            } else {
                Ok((Outcome::Fail, Completion { error: Some("insufficient balance".into()), ..c }))
            }
        })
        .await;
    }

    /// A final `bank` read of every balance.
    pub async fn bank_op_read(&mut self) {
        let client = self.client.clone();
        let node = self.read_node();
        self.run("read", Value::Null, true, async move {
            let s = client.read_only().await?;
            let mut balances = serde_json::Map::new();
            for a in 0..BANK_ACCOUNTS {
                let v = s.get(format!("acct{a}")).await?;
                balances.insert(a.to_string(), json!(v.map(|b| parse_int(&b) as i64)));
            }
            Ok((
                Outcome::Ok,
                Completion {
                    value: Some(Value::Object(balances)),
                    node,
                    ts: Some(s.ts().as_nanos()),
                    ..Completion::default()
                },
            ))
        })
        .await;
    }

    /// Writes `v` to causal key `key` (through the leader); whether it was acknowledged.
    pub async fn causal_write(&mut self, key: u64, v: u64) -> bool {
        let client = self.client.clone();
        let node = self.write_node();
        let outcome = self
            .run("write", json!([key, v]), false, async move {
                let info = client.put(format!("c{key}"), v.to_string()).await?;
                Ok((
                    Outcome::Ok,
                    Completion {
                        value: Some(json!([key, v])),
                        node,
                        ts: Some(info.ts.as_nanos()),
                        ..Completion::default()
                    },
                ))
            })
            .await;
        outcome == Outcome::Ok
    }

    /// Reads causal key `key` (through this process's node).
    pub async fn causal_read(&mut self, key: u64) {
        let client = self.client.clone();
        let node = self.read_node();
        self.run("read", json!([key, null]), true, async move {
            let s = client.read_only().await?;
            let v = s.get(format!("c{key}")).await?.map(|b| parse_int(&b));
            Ok((
                Outcome::Ok,
                Completion {
                    value: Some(json!([key, v])),
                    node,
                    ts: Some(s.ts().as_nanos()),
                    ..Completion::default()
                },
            ))
        })
        .await;
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where this process reads.
    pub fn preference(&self) -> ReadPreference {
        self.preference
    }
}

/// Whether a transaction that failed to commit should run again: a conflict or another
/// definite, retryable refusal, at most three runs in all (Jepsen's clients retry little, so
/// that histories show what happened).
fn retry_txn(e: &ClientError, attempt: u32) -> bool {
    attempt < 3 && e.is_retryable() && !e.commit_may_have_applied()
}

fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

fn parse_int(b: &[u8]) -> u64 {
    std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

fn parse_list(b: Option<&[u8]>) -> Vec<u64> {
    match b.and_then(|b| std::str::from_utf8(b).ok()) {
        Some(s) if !s.is_empty() => s.split(',').filter_map(|x| x.parse().ok()).collect(),
        _ => Vec::new(),
    }
}

fn format_list(l: &[u64]) -> String {
    l.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The micro-ops as JSON: `["append", k, v]` and `["r", k, reads or null]`.
fn micro_ops(ops: &[(bool, u64, u64)], reads: Option<&[Vec<u64>]>) -> Value {
    Value::Array(
        ops.iter()
            .enumerate()
            .map(|(i, &(append, k, v))| {
                if append {
                    json!(["append", k, v])
                } else {
                    json!(["r", k, reads.map(|r| json!(r[i]))])
                }
            })
            .collect(),
    )
}

/// Writes the bank's initial balances (retrying until it lands).
pub async fn bank_setup(client: &Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut txn = client.begin();
        for a in 0..BANK_ACCOUNTS {
            txn.put(format!("acct{a}"), BANK_INITIAL.to_string())?;
        }
        let r = txn.commit().await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("bank setup: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("bank setup failed: {e}"),
        }
    }
}

/// The `append` keys read at the end.
pub fn final_append_keys(shared: &Shared) -> Vec<u64> {
    shared.append_touched.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
}

impl Process {
    /// The final read-only transaction of `append`: every key ever touched, in one snapshot.
    pub async fn append_final_read(&mut self, keys: &[u64]) {
        let ops: Vec<(bool, u64, u64)> = keys.iter().map(|&k| (false, k, 0)).collect();
        let client = self.client.clone();
        let node = self.read_node();
        self.run("txn", micro_ops(&ops, None), true, async move {
            let s = client.read_only().await?;
            let mut reads = Vec::new();
            for (_, k, _) in &ops {
                reads.push(parse_list(s.get(format!("a{k}")).await?.as_deref()));
            }
            Ok((
                Outcome::Ok,
                Completion {
                    value: Some(micro_ops(&ops, Some(&reads))),
                    node,
                    ts: Some(s.ts().as_nanos()),
                    ..Completion::default()
                },
            ))
        })
        .await;
    }

    /// A final `register` read of `key`.
    pub async fn register_final_read(&mut self, key: u64) {
        let client = self.client.clone();
        let node = self.read_node();
        self.run("read", json!([key, null]), true, async move {
            let s = client.read_only().await?;
            let v = s.get(format!("r{key}")).await?.map(|b| parse_int(&b));
            Ok((
                Outcome::Ok,
                Completion {
                    value: Some(json!([key, v])),
                    node,
                    ts: Some(s.ts().as_nanos()),
                    ..Completion::default()
                },
            ))
        })
        .await;
    }
}
