//! t90: a value whose sync failed is never readable (issue 11, bug 4).
//!
//! When the applier applies a commit to storage and its `fdatasync` then fails, the commit's
//! timestamp is released (nothing is committed) and the node records a fatal error. If the
//! release comes first, a reader waiting at a timestamp at or above the commit's is woken, finds
//! no failure recorded yet, and reads the value that never became durable.
//!
//! The window is one statement wide, so a thread race would find it only by chance. This test
//! makes it certain: the reader's future is polled *inside its waker*, so it runs the very
//! moment the release wakes it, before the committer's next statement.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use boundkv_clockbound::{
    MemoryHighWaterMark, OracleOptions, SimClock, Timestamp, TimestampOracle,
};
use boundkv_storage::{MemoryEngine, Mvcc};
use boundkv_txn::{Applier, ApplyHandle, CommitRecord, Error, TxnManager, TxnOptions};
use bytes::Bytes;
use tokio::sync::oneshot;

type Read = Pin<Box<dyn Future<Output = Result<Option<Bytes>, Error>> + Send>>;

/// A task that is polled by whoever wakes it, synchronously.
struct PollOnWake {
    future: Mutex<Option<Read>>,
    result: Mutex<Option<Result<Option<Bytes>, Error>>>,
}

impl PollOnWake {
    fn poll_now(self: &Arc<Self>) {
        let Ok(mut slot) = self.future.try_lock() else { return };
        let Some(fut) = slot.as_mut() else { return };
        let waker = Waker::from(self.clone());
        if let Poll::Ready(r) = fut.as_mut().poll(&mut Context::from_waker(&waker)) {
            *self.result.lock().unwrap() = Some(r);
            *slot = None;
        }
    }
}

impl Wake for PollOnWake {
    fn wake(self: Arc<Self>) {
        self.poll_now();
    }
}

/// Applies the record to storage, then answers as a failed `fdatasync` would (once the test
/// says so).
struct SyncFailsApplier {
    mvcc: Arc<Mvcc<MemoryEngine>>,
    answers: Mutex<Vec<oneshot::Sender<boundkv_txn::Result<()>>>>,
}

impl Applier for SyncFailsApplier {
    fn apply(&self, record: CommitRecord) -> ApplyHandle {
        self.mvcc.apply(&record.to_commit(None, false)).unwrap();
        let (tx, rx) = oneshot::channel();
        self.answers.lock().unwrap().push(tx);
        rx
    }
}

#[test]
fn t90_a_reader_woken_by_a_failed_commit_never_sees_its_value() {
    let clock = SimClock::manual(Timestamp::from_nanos(1_000_000_000));
    clock.set_bound(Duration::from_millis(1)).set_auto_advance(true);
    let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
    let oracle = Arc::new(
        TimestampOracle::open(
            Arc::new(clock.clone()),
            OracleOptions::default(),
            Box::new(MemoryHighWaterMark::default()),
        )
        .unwrap(),
    );
    let applier =
        Arc::new(SyncFailsApplier { mvcc: mvcc.clone(), answers: Mutex::new(Vec::new()) });
    let manager = TxnManager::new(mvcc, oracle, applier.clone(), TxnOptions::default());

    // The commit: applied to storage, waiting for its sync.
    let mut txn = manager.begin();
    txn.put("k", "never durable").unwrap();
    let commit = std::thread::spawn(move || futures::executor::block_on(txn.commit()));
    while applier.answers.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }

    // The reader: its timestamp is at or above the commit's, so it waits for it.
    let m = manager.clone();
    let reader = Arc::new(PollOnWake {
        future: Mutex::new(Some(Box::pin(async move {
            let ro = m.read_only().await?;
            ro.get("k")
        }))),
        result: Mutex::new(None),
    });
    reader.poll_now();
    assert!(reader.result.lock().unwrap().is_none(), "the reader waits for the pending commit");

    // The sync fails.
    let answer = applier.answers.lock().unwrap().pop().unwrap();
    answer.send(Err(Error::Fatal("fdatasync: EIO".into()))).unwrap();
    let committed = commit.join().unwrap();
    assert!(matches!(committed, Err(Error::Fatal(_))), "the commit fails: {committed:?}");

    let read = reader.result.lock().unwrap().take().expect("the release woke the reader");
    assert!(
        matches!(read, Err(Error::Fatal(_))),
        "a reader woken by the release must find the node failed, not read {read:?}"
    );
}
