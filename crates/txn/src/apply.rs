//! Where a decided commit goes: the [`Applier`] makes a [`CommitRecord`] durable and applies it
//! to storage.
//!
//! The embedded database uses [`LocalApplier`]: one thread takes every record waiting in its queue,
//! applies each as its own atomic batch, then makes them all durable with **one** flush (one
//! `fdatasync`) and answers them all. While it syncs, new records queue up and form the next group.
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
                    let applied: Vec<Result<()>> = group
                        .iter()
                        .map(|job| {
                            mvcc.apply(&job.record.to_commit(None, false)).map_err(Error::from)
                        })
                        .collect();
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
