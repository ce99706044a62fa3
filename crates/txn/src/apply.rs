//! Where a decided commit goes: the [`Applier`] makes a [`CommitRecord`] durable and applies it
//! to storage.
//!
//! The embedded database uses [`LocalApplier`]: one thread takes every record waiting in its queue,
//! applies them all as **one** atomic engine batch (each record checked first: one that the
//! storage refuses is answered with its error and left out), then makes them durable with **one**
//! flush (one `fdatasync`) and answers them all. While it syncs, new records queue up and form the next group.
//! This is group commit: 64 concurrent writers cost a handful of syncs per round, not 64. It
//! writes no transaction-id record (an embedded caller cannot retry a commit, so there is nothing
//! to deduplicate): a commit costs one key per write.
//!
//! The replicated server supplies an applier that proposes the record to Raft instead; the
//! transaction layer does not change.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use boundkv_storage::{Engine, Mvcc};

use crate::error::{Error, Result};
use crate::record::CommitRecord;

/// Resolves once a record is durable and applied, or failed.
pub type ApplyHandle = oneshot::Receiver<Result<()>>;

/// Makes commit records durable and applies them.
pub trait Applier: Send + Sync + 'static {
    /// Starts applying `record`.
    ///
    /// # To ensure correctness
    /// The handle must resolve `Ok` only once the record is durable (it survives a power loss)
    /// and applied to the storage that reads go to. On `Err` the record must not be applied, or
    /// the error must be fatal (the node stops). Records must be applied in the order their
    /// timestamps were chosen only where they touch the same keys; the MVCC versions make any
    /// order of distinct commits equivalent.
    fn apply(&self, record: CommitRecord) -> ApplyHandle;
}

struct Job {
    record: CommitRecord,
    done: oneshot::Sender<Result<()>>,
}

/// The embedded applier: group commit on a dedicated thread (see the module docs).
pub struct LocalApplier {
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The most records one group applies before syncing.
const MAX_GROUP: usize = 512;

impl LocalApplier {
    /// Starts the applier thread over `mvcc`.
    pub fn start<E: Engine>(mvcc: Arc<Mvcc<E>>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("boundkv-apply".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    let commits: Vec<_> =
                        group.iter().map(|job| job.record.to_commit(None, false)).collect();
                    // One engine batch for the group (one log reservation in sled, one lock):
                    // per-record batches cost more than the records themselves.
                    let applied: Vec<Result<()>> = match mvcc.apply_group(&commits) {
                        Ok(each) => each.into_iter().map(|r| r.map_err(Error::from)).collect(),
                        Err(e) => vec![Err(Error::from(e)); commits.len()],
                    };
                    let synced = if applied.iter().any(Result::is_ok) {
                        mvcc.flush().map_err(Error::from)
                    } else {
                        Ok(())
                    };
                    for (job, result) in group.into_iter().zip(applied) {
                        let _ = job.done.send(result.and(synced.clone()));
                    }
                }
            })
            .expect("spawn the apply thread");
        LocalApplier { queue: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)) }
    }

    /// Stops the thread after the records already queued.
    pub fn shutdown(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Applier for LocalApplier {
    fn apply(&self, record: CommitRecord) -> ApplyHandle {
        let (done, handle) = oneshot::channel();
        let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        match queue.as_ref() {
            Some(tx) => {
                if let Err(mpsc::SendError(job)) = tx.send(Job { record, done }) {
                    let _ = job.done.send(Err(Error::Fatal("the apply thread has stopped".into())));
                }
            }
            None => {
                let _ = done.send(Err(Error::Fatal("the database is closed".into())));
            }
        }
        handle
    }
}

impl Drop for LocalApplier {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use boundkv_clockbound::Timestamp;
    use boundkv_storage::{MemoryEngine, Mvcc};

    use super::*;
    use crate::record::{TxnId, Write};

    fn record(id: u8, ts: u64, key: &str, value_len: usize) -> CommitRecord {
        CommitRecord {
            txn_id: TxnId([id; 16]),
            ts: Timestamp::from_nanos(ts),
            writes: vec![Write {
                key: key.to_string().into(),
                value: Some(vec![7; value_len].into()),
            }],
        }
    }

    /// Records queued together are applied as one engine batch; one the storage refuses (here a
    /// value over the limit) is answered with its error and written nowhere, and the others of
    /// its group are applied and answered `Ok`, however the thread happened to group them.
    #[tokio::test]
    async fn a_refused_record_fails_alone_and_its_group_applies() {
        let mvcc = Arc::new(Mvcc::new(Arc::new(MemoryEngine::new())).unwrap());
        let applier = LocalApplier::start(mvcc.clone());
        let handles: Vec<_> = (0..40u8)
            .map(|i| {
                let len = if i % 10 == 3 { boundkv_storage::mvcc::MAX_VALUE_LEN + 1 } else { 8 };
                applier.apply(record(i, 100 + u64::from(i), &format!("k{i}"), len))
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let result = h.await.expect("answered");
            let stored = mvcc.get(format!("k{i}").as_bytes(), 1000).unwrap();
            if i % 10 == 3 {
                assert!(result.is_err(), "record {i} is over the limit");
                assert_eq!(stored, None, "record {i} was written nowhere");
            } else {
                assert!(result.is_ok(), "record {i}: {result:?}");
                assert_eq!(stored.as_deref(), Some(&[7u8; 8][..]), "record {i} applied");
            }
        }
        applier.shutdown();
    }
}
