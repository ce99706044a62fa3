//! The Raft proposal path under the transaction manager: [`RaftApplier`] proposes a decided
//! commit record and resolves once its entry is applied on this node.

use tokio::sync::oneshot;

use boundkv_consensus::node::{NodeHandle, ProposeError};

use crate::apply::{Applier, ApplyHandle};
use crate::error::Error;
use crate::record::CommitRecord;

use super::{ApplyOutput, Command};

/// The applier of a replicated node: proposes the record and resolves once it is applied here.
pub(super) struct RaftApplier {
    pub(super) node: NodeHandle<ApplyOutput>,
}

impl Applier for RaftApplier {
    fn apply(&self, record: CommitRecord) -> ApplyHandle {
        let (tx, rx) = oneshot::channel();
        self.node.propose_then(Command::Commit(record).encode(), move |outcome| {
            let result = match outcome {
                Ok(ApplyOutput::Applied { .. }) => Ok(()),
                Ok(ApplyOutput::Duplicate { ts }) => Err(Error::OutcomeUnknown(format!(
                    "this transaction id was already committed at {ts}; resend to learn its outcome"
                ))),
                Ok(ApplyOutput::Rejected(why)) => Err(Error::Rejected(why)),
                Ok(other) => {
                    Err(Error::OutcomeUnknown(format!("unexpected apply output {other:?}")))
                }
                Err(ProposeError::NotLeader { leader }) => Err(Error::NotLeader {
                    leader,
                    reason: "leadership moved before the commit was proposed; it did not apply"
                        .into(),
                }),
                Err(ProposeError::Dropped) => Err(Error::NotLeader {
                    leader: None,
                    reason: "leadership changed before the commit was replicated; it did not apply"
                        .into(),
                }),
                Err(e) => Err(Error::OutcomeUnknown(e.to_string())),
            };
            let _ = tx.send(result);
        });
        rx
    }
}
