//! The hot pieces below the network: the key encoding, an MVCC point read, and one Raft round
//! (propose, one Ready persisted with an `fdatasync`, apply) on a single-member group.
//!
//! `cargo bench -p boundkv-bench --bench storage`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use boundkv_clockbound::{Clock, ClockPolicy, SimClock};
use boundkv_consensus::log_store::RaftLogStore;
use boundkv_consensus::node::{Node, NodeConfig, NodeParts};
use boundkv_consensus::transport::MemoryRouter;
use boundkv_storage::{Commit, Mvcc, SledEngine, SledOptions, VersionedWrite, keycode};
use boundkv_txn::replica::{Command, Member, MvccStateMachine};
use criterion::{Criterion, criterion_group, criterion_main};

fn key_encoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("keycode");
    let key = b"user/000042/profile".to_vec();
    g.bench_function("encode_key_and_ts", |b| {
        let mut out = Vec::with_capacity(64);
        b.iter(|| {
            out.clear();
            keycode::encode_key_into(black_box(&key), &mut out);
            keycode::encode_ts_into(black_box(1_796_232_375_899_848_871), &mut out);
            black_box(out.len())
        })
    });
    let mut encoded = Vec::new();
    keycode::encode_key_into(&key, &mut encoded);
    g.bench_function("decode_key", |b| {
        b.iter(|| black_box(keycode::decode_key(black_box(&encoded)).map(|(k, _)| k.len())))
    });
    g.finish();
}

fn mvcc_point_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(SledEngine::open(dir.path(), SledOptions::default()).unwrap());
    let mvcc = Mvcc::new(engine).unwrap();
    // 100,000 keys, three versions each.
    for ts in [10u64, 20, 30] {
        let writes: Vec<VersionedWrite> = (0..100_000u64)
            .map(|i| VersionedWrite {
                key: format!("{i:08}").into_bytes(),
                value: Some(vec![0x5A; 256]),
            })
            .collect();
        for chunk in writes.chunks(10_000) {
            mvcc.apply(&Commit {
                ts,
                txn_id: Vec::new(),
                writes: chunk.to_vec(),
                applied_index: None,
            })
            .unwrap();
        }
    }
    mvcc.flush().unwrap();
    let mut g = c.benchmark_group("mvcc");
    let mut i = 0u64;
    g.bench_function("get_newest_of_3_versions_in_100k_keys", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            black_box(mvcc.get(format!("{i:08}").as_bytes(), 25).unwrap())
        })
    });
    g.finish();
}

fn raft_round(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(SledEngine::open(dir.path(), SledOptions::default()).unwrap());
    let mvcc = Arc::new(Mvcc::new(engine.clone()).unwrap());
    let member = Member {
        id: 1,
        peer_address: "-".into(),
        client_address: "-".into(),
        leap: Default::default(),
    };
    let (sm, _shared) = MvccStateMachine::new(mvcc, vec![member]).unwrap();
    let router = MemoryRouter::new();
    let clock: Arc<dyn Clock> = Arc::new(SimClock::real_time());
    let node = Node::start(NodeParts {
        config: NodeConfig {
            id: 1,
            tick: Duration::from_millis(10),
            election_ticks: 5,
            ..NodeConfig::default()
        },
        store: RaftLogStore::open(engine).unwrap(),
        state_machine: sm,
        transport: router.transport(1),
        clock,
        unsafe_lease_clock: None,
        policy: ClockPolicy::default(),
        cluster_clock: None,
        bootstrap: Some(vec![1]),
    })
    .unwrap();
    node.campaign();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while node.state().leader != Some(1) {
        assert!(std::time::Instant::now() < deadline, "the single member did not elect itself");
        std::thread::sleep(Duration::from_millis(10));
    }
    let entry = Command::Close(boundkv_clockbound::Timestamp::from_nanos(1)).encode();
    let mut g = c.benchmark_group("raft");
    g.sample_size(30);
    g.bench_function("propose_persist_fdatasync_apply_one_entry", |b| {
        b.iter(|| {
            let rx = node.propose(entry.clone());
            black_box(futures::executor::block_on(rx).unwrap().unwrap())
        })
    });
    g.finish();
    node.shutdown();
}

criterion_group!(benches, key_encoding, mvcc_point_read, raft_round);
criterion_main!(benches);
