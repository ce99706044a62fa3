//! Membership: the members and their addresses, and adding or removing one through a joint
//! configuration (a new member joins as a learner and is promoted once it has caught up).

use raft::prelude::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
};
use tokio::time::Instant;

use boundkv_consensus::node::{NodeState, ProposeError, Role};
use boundkv_consensus::raft;
use boundkv_storage::Engine;

use crate::error::{Error, Result};

use super::{Member, Replica, humantime_short};

/// A member as [`Replica::members`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member and its addresses (empty if the membership never recorded them).
    pub member: Member,
    /// Whether it votes.
    pub voter: bool,
}

impl<E: Engine> Replica<E> {
    /// The members with their addresses, in id order; learners say so.
    pub fn members(&self) -> Vec<MemberInfo> {
        let conf = self.state.borrow().conf.clone();
        self.members_in(&conf)
    }

    fn members_in(&self, conf: &ConfState) -> Vec<MemberInfo> {
        let state = NodeState { conf: conf.clone(), ..self.state.borrow().clone() };
        let known = self.shared.members();
        state
            .members()
            .into_iter()
            .map(|id| MemberInfo {
                member: known.get(&id).cloned().unwrap_or(Member {
                    id,
                    peer_address: String::new(),
                    client_address: String::new(),
                    leap: Default::default(),
                }),
                voter: state.is_voter(id),
            })
            .collect()
    }

    /// Adds a member: as a learner first, then, once it has caught up, as a voter through a joint
    /// configuration left explicitly. Leader only.
    pub async fn add_member(&self, member: Member) -> Result<Vec<MemberInfo>> {
        if member.id == 0 {
            return Err(Error::Rejected("member id 0 is reserved".into()));
        }
        let state = self.leader_state_or_not_leader()?;
        if state.is_voter(member.id) {
            return Ok(self.members());
        }
        if !state.conf.learners.contains(&member.id) {
            self.check_new_member_policy(&member)?;
            let mut cc = ConfChangeV2::default();
            cc.set_changes(vec![single(ConfChangeType::AddLearnerNode, member.id)].into());
            cc.context = member.encode().into();
            self.change_membership(cc).await?;
        }
        self.wait_caught_up(member.id).await?;
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Explicit);
        cc.set_changes(vec![single(ConfChangeType::AddNode, member.id)].into());
        let joint = self.change_membership(cc).await?;
        let conf = if joint.voters_outgoing.is_empty() {
            joint
        } else {
            self.change_membership(ConfChangeV2::default()).await?
        };
        Ok(self.members_in(&conf))
    }

    /// Removes a member through a joint configuration left explicitly. The leader hands its
    /// leadership to another voter before removing itself (the caller then retries there).
    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        let state = self.leader_state_or_not_leader()?;
        if !state.members().contains(&id) {
            return Ok(self.members());
        }
        if id == self.id {
            let Some(&to) = state.conf.voters.iter().find(|&&v| v != id) else {
                return Err(Error::Rejected("cannot remove the only voter".into()));
            };
            self.node.transfer_leader(to);
            return Err(Error::NotLeader {
                leader: Some(to),
                reason:
                    "the leader is handing over before removing itself; retry at the new leader"
                        .into(),
            });
        }
        let mut cc = ConfChangeV2::default();
        if state.is_voter(id) {
            cc.set_transition(ConfChangeTransition::Explicit);
        }
        cc.set_changes(vec![single(ConfChangeType::RemoveNode, id)].into());
        let mut conf = self.change_membership(cc).await?;
        if !conf.voters_outgoing.is_empty() {
            conf = self.change_membership(ConfChangeV2::default()).await?;
        }
        Ok(self.members_in(&conf))
    }

    fn leader_state_or_not_leader(&self) -> Result<NodeState> {
        let state = self.state.borrow().clone();
        if state.role != Role::Leader {
            return Err(self.not_leader(state.leader));
        }
        Ok(state)
    }

    async fn change_membership(&self, cc: ConfChangeV2) -> Result<ConfState> {
        match self.node.change_membership(cc).await {
            Ok(Ok(conf)) => Ok(conf),
            Ok(Err(ProposeError::NotLeader { leader })) => Err(self.not_leader(leader)),
            Ok(Err(ProposeError::Refused(why))) => Err(Error::Unavailable(why)),
            Ok(Err(e)) => Err(Error::OutcomeUnknown(format!("membership change: {e}"))),
            Err(_) => Err(Error::OutcomeUnknown("the Raft node stopped".into())),
        }
    }

    /// Waits until member `id` has replicated the leader's log up to the commit index seen at the
    /// start.
    async fn wait_caught_up(&self, id: u64) -> Result<()> {
        let target = self.state.borrow().commit_index;
        let deadline = Instant::now() + self.options.catch_up_timeout;
        let mut state = self.state.clone();
        loop {
            {
                let s = state.borrow_and_update();
                if s.role != Role::Leader {
                    return Err(self.not_leader(s.leader));
                }
                if s.progress.get(&id).is_some_and(|&m| m >= target) {
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable(format!(
                    "node {id} did not catch up within {}; it stays a learner",
                    humantime_short(self.options.catch_up_timeout)
                )));
            }
            let _ = tokio::time::timeout(left, state.changed()).await;
        }
    }
}

fn single(change_type: ConfChangeType, node_id: u64) -> ConfChangeSingle {
    let mut s = ConfChangeSingle::default();
    s.set_change_type(change_type);
    s.node_id = node_id;
    s
}
