//! Model tests: random operation sequences run against an engine (or MVCC) and against a plain
//! `BTreeMap` model; every read must agree.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use boundkv_storage::{
    Commit, Engine, Error, MemoryEngine, Mvcc, SledEngine, SledOptions, VersionedWrite, WriteBatch,
};
use proptest::prelude::*;

/// Keys from a small alphabet that includes the bytes the key encoding escapes.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, b'a', b'b', 0xFF]), 0..4)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..8)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        Just(Bound::Unbounded),
        key().prop_map(Bound::Included),
        key().prop_map(Bound::Excluded),
    ]
}

#[derive(Debug, Clone)]
enum EngineOp {
    Write(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    Get(Vec<u8>),
    Scan(Bound<Vec<u8>>, Bound<Vec<u8>>, bool),
    Flush,
}

fn engine_op() -> impl Strategy<Value = EngineOp> {
    prop_oneof![
        4 => prop::collection::vec((key(), prop::option::of(value())), 1..5).prop_map(EngineOp::Write),
        3 => key().prop_map(EngineOp::Get),
        2 => (bound(), bound(), any::<bool>()).prop_map(|(a, b, r)| EngineOp::Scan(a, b, r)),
        1 => Just(EngineOp::Flush),
    ]
}

/// BTreeMap panics on inverted or empty-excluded ranges; engines must return nothing instead.
fn valid_range(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a <= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a < b,
        _ => true,
    }
}

fn run_engine_model(engine: &impl Engine, ops: Vec<EngineOp>) -> Result<(), TestCaseError> {
    let mut model = BTreeMap::<Vec<u8>, Vec<u8>>::new();
    for op in ops {
        match op {
            EngineOp::Write(writes) => {
                let mut batch = WriteBatch::new();
                for (k, v) in &writes {
                    match v {
                        Some(v) => {
                            batch.put(k.clone(), v.clone());
                            model.insert(k.clone(), v.clone());
                        }
                        None => {
                            batch.delete(k.clone());
                            model.remove(k);
                        }
                    }
                }
                engine.write(batch).unwrap();
            }
            EngineOp::Get(k) => prop_assert_eq!(engine.get(&k).unwrap(), model.get(&k).cloned()),
            EngineOp::Scan(lo, hi, reverse) => {
                if !valid_range(&lo, &hi) {
                    continue;
                }
                let expected: Vec<_> = model
                    .range((lo.clone(), hi.clone()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let it = engine.scan((lo, hi));
                let mut got: Vec<_> = if reverse {
                    it.rev().collect::<Result<_, _>>().unwrap()
                } else {
                    it.collect::<Result<_, _>>().unwrap()
                };
                if reverse {
                    got.reverse();
                }
                prop_assert_eq!(got, expected);
            }
            EngineOp::Flush => engine.flush().unwrap(),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn memory_engine_matches_the_model(ops in prop::collection::vec(engine_op(), 1..60)) {
        run_engine_model(&MemoryEngine::new(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn sled_engine_matches_the_model(ops in prop::collection::vec(engine_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(dir.path(), SledOptions::default()).unwrap();
        run_engine_model(&engine, ops)?;
    }
}

#[derive(Debug, Clone)]
enum MvccOp {
    /// Commit at the next timestamp (the previous plus `gap`).
    Commit {
        gap: u64,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Read at `back` steps before the latest commit timestamp (or after it).
    Get {
        key: Vec<u8>,
        back: u64,
    },
    Scan {
        lo: Bound<Vec<u8>>,
        hi: Bound<Vec<u8>>,
        back: u64,
    },
    /// GC at `back` before the latest timestamp.
    Gc {
        back: u64,
    },
}

fn mvcc_op() -> impl Strategy<Value = MvccOp> {
    prop_oneof![
        4 => (1u64..5, prop::collection::vec((key(), prop::option::of(value())), 1..4))
            .prop_map(|(gap, writes)| MvccOp::Commit { gap, writes }),
        3 => (key(), 0u64..30).prop_map(|(key, back)| MvccOp::Get { key, back }),
        2 => (bound(), bound(), 0u64..30).prop_map(|(lo, hi, back)| MvccOp::Scan { lo, hi, back }),
        1 => (0u64..20).prop_map(|back| MvccOp::Gc { back }),
    ]
}

/// The model: every version ever written, and the horizon.
#[derive(Default)]
struct MvccModel {
    versions: BTreeMap<Vec<u8>, BTreeMap<u64, Option<Vec<u8>>>>,
    horizon: u64,
}

impl MvccModel {
    fn get(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, Error> {
        if ts < self.horizon {
            return Err(Error::BelowGcHorizon { ts, horizon: self.horizon });
        }
        Ok(self
            .versions
            .get(key)
            .and_then(|v| v.range(..=ts).next_back())
            .and_then(|(_, v)| v.clone()))
    }
}

fn run_mvcc_model<E: Engine>(mvcc: &Mvcc<E>, ops: Vec<MvccOp>) -> Result<(), TestCaseError> {
    let mut model = MvccModel::default();
    let mut ts = 100u64;
    for op in ops {
        match op {
            MvccOp::Commit { gap, writes } => {
                ts += gap;
                // A transaction writes each key once; keep its last write per key.
                let dedup: BTreeMap<_, _> = writes.into_iter().collect();
                for (k, v) in &dedup {
                    model.versions.entry(k.clone()).or_default().insert(ts, v.clone());
                }
                mvcc.apply(&Commit {
                    ts,
                    txn_id: ts.to_be_bytes().to_vec(),
                    writes: dedup
                        .into_iter()
                        .map(|(key, value)| VersionedWrite { key, value })
                        .collect(),
                    applied_index: None,
                })
                .unwrap();
            }
            MvccOp::Get { key, back } => {
                let at = (ts + 3).saturating_sub(back);
                prop_assert_eq!(mvcc.get(&key, at), model.get(&key, at), "get {:?} at {}", key, at);
            }
            MvccOp::Scan { lo, hi, back } => {
                let at = (ts + 3).saturating_sub(back);
                if !valid_range(&lo, &hi) {
                    continue;
                }
                let got = mvcc
                    .scan((lo.clone(), hi.clone()), at)
                    .and_then(|s| s.collect::<Result<Vec<_>, _>>());
                let expected = if at < model.horizon {
                    Err(Error::BelowGcHorizon { ts: at, horizon: model.horizon })
                } else {
                    Ok(model
                        .versions
                        .range((lo, hi))
                        .filter_map(|(k, _)| model.get(k, at).unwrap().map(|v| (k.clone(), v)))
                        .collect())
                };
                prop_assert_eq!(got, expected, "scan at {}", at);
            }
            MvccOp::Gc { back } => {
                let horizon = ts.saturating_sub(back);
                mvcc.gc(horizon).unwrap();
                model.horizon = model.horizon.max(horizon);
            }
        }
    }
    // Time travel: every read at or above the horizon still answers like the model.
    for (key, _) in model.versions.clone() {
        for at in model.horizon..=ts + 1 {
            prop_assert_eq!(mvcc.get(&key, at), model.get(&key, at));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn mvcc_on_memory_matches_the_model(ops in prop::collection::vec(mvcc_op(), 1..60)) {
        run_mvcc_model(&Mvcc::new(Arc::new(MemoryEngine::new())).unwrap(), ops)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn mvcc_on_sled_matches_the_model(ops in prop::collection::vec(mvcc_op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SledEngine::open(dir.path(), SledOptions::default()).unwrap());
        run_mvcc_model(&Mvcc::new(engine).unwrap(), ops)?;
    }
}
