//! Leap-second policies in the membership: every member declares how its clock handles a leap
//! second (`--leap step|smear`, [`Member::leap`]), and a cluster must not mix them (see
//! `docs/architecture/time.md`, "Leap seconds").
//!
//! - **At start** a member whose recorded policy differs from the one it runs with refuses to
//!   start ([`Error::LeapPolicyMismatch`]), and so does a founding member whose entry in the
//!   founding list does.
//! - **`add_member`** refuses a member whose policy differs from the membership's (the policy of
//!   a majority of the voters).
//! - **While running**, once a second ([`LEAP_CHECK_INTERVAL`]), a member fences its clock
//!   ([`boundkv_consensus::node::NodeHandle::set_policy_fence`]) when the membership records it
//!   with another policy than it runs with (a member added with the wrong policy), or when its
//!   policy differs from the majority's inside a leap window: from 12 h before to 24 h after a leap its
//!   kernel announces, or of the end of 30 June or 31 December UTC (the only days a leap second
//!   has ever been scheduled; a smearing member's kernel is never told of the leap, so it must
//!   go by the calendar). Outside the windows a mixed membership (one older than this check)
//!   runs as before: the two policies agree except around a leap.
//!
//! For example, three voters recorded `step`, `step`, `smear` (a membership mixed by hand),
//! node 3 running `--leap smear`. On 15 March nothing happens: no leap is possible. At
//! 2026-12-31T18:00:00Z, six hours before a possible leap, node 3's check finds the majority's
//! policy (`step`) differs from its own inside a window and fences its clock:
//!
//! ```text
//! WARN leap policy: fencing this node's clock node=3 reason=this node's leap policy (smear)
//!      differs from the majority's (step) inside the leap window of a possible leap second at
//!      2027-01-01T00:00:00Z (12 h before it to 24 h after): ...
//! ```
//!
//! It issues no timestamps, holds no lease, serves no reads and gives up leadership until
//! 2027-01-01T12:00:00Z, when the fence lifts by itself. Nodes 1 and 2 are not fenced. Had node 3
//! been *recorded* `step` while running `smear`, it would be fenced at any time, and refuse to
//! start at its next restart.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::watch;

use boundkv_clockbound::{Clock, LeapPolicy, Timestamp, leap};
use boundkv_storage::Engine;

use crate::error::{Error, Result};

use super::{Member, Replica};

/// How often a member checks its policy against the membership's.
pub const LEAP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The policy a strict majority of `voters` is recorded with, if one is.
pub fn membership_policy(members: &BTreeMap<u64, Member>, voters: &[u64]) -> Option<LeapPolicy> {
    let count = |p: LeapPolicy| {
        voters.iter().filter(|v| members.get(v).is_some_and(|m| m.leap == p)).count()
    };
    [LeapPolicy::Step, LeapPolicy::Smear].into_iter().find(|&p| 2 * count(p) > voters.len())
}

/// Refuses to start member `id` running `ours` when the membership (or the founding list)
/// records it with another policy.
pub fn check_at_start(
    id: u64,
    ours: LeapPolicy,
    recorded: &BTreeMap<u64, Member>,
    founding: Option<&[Member]>,
) -> Result<()> {
    let me = recorded.get(&id).or_else(|| founding.and_then(|f| f.iter().find(|m| m.id == id)));
    match me {
        Some(m) if m.leap != ours => {
            Err(Error::LeapPolicyMismatch { node: id, ours, membership: m.leap })
        }
        _ => Ok(()),
    }
}

/// Why member `id` running `ours` must be fenced now, if it must (see the module docs).
pub fn fence_reason(
    id: u64,
    ours: LeapPolicy,
    members: &BTreeMap<u64, Member>,
    voters: &[u64],
    clock: &dyn Clock,
) -> Option<String> {
    if let Some(m) = members.get(&id)
        && m.leap != ours
    {
        return Some(format!(
            "this node runs with --leap {ours}, but the membership records it with --leap {}: \
             restart it with --leap {}, or remove it and add it again with its policy",
            m.leap, m.leap
        ));
    }
    let majority = membership_policy(members, voters)?;
    if majority == ours {
        return None;
    }
    // A clock that cannot be read cannot show that no leap is near: fenced (it issues nothing
    // while unreadable anyway), rather than lifting the fence for a moment.
    let Ok(reading) = clock.now() else {
        return Some(format!(
            "this node's leap policy ({ours}) differs from the majority's ({majority}), and its \
             clock cannot be read to tell whether a leap window is open"
        ));
    };
    let now = reading.interval.midpoint();
    let window = leap_window(clock, now)?;
    Some(format!(
        "this node's leap policy ({ours}) differs from the majority's ({majority}) inside the \
         leap window of {window} (12 h before it to 24 h after): a stepped and a smeared clock disagree by up \
         to a second there"
    ))
}

/// The leap whose window contains `now`: one the kernel announced, else a possible one (the
/// end of 30 June or 31 December UTC), described.
fn leap_window(clock: &dyn Clock, now: Timestamp) -> Option<String> {
    if let Some(e) =
        clock.leap_report().and_then(|r| r.announced).filter(|e| e.window_contains(now))
    {
        return Some(format!("the leap second the kernel announces ({e})"));
    }
    leap::possible_leap_near(now).map(|at| format!("a possible leap second at {at}"))
}

impl<E: Engine> Replica<E> {
    /// Checks this member's leap policy against the membership's every
    /// [`LEAP_CHECK_INTERVAL`], fencing or unfencing its clock (see the module docs).
    pub(super) async fn watch_leap_policy(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut last: Option<String> = None;
        loop {
            let Some(replica) = this.upgrade() else { return };
            let voters = replica.state.borrow().conf.voters.clone();
            let members = replica.shared.members();
            let why = fence_reason(
                replica.id,
                replica.options.leap,
                &members,
                &voters,
                replica.clock.as_ref(),
            );
            if why != last {
                match &why {
                    Some(why) => {
                        tracing::warn!(node = replica.id, reason = %why, "leap policy: fencing this node's clock")
                    }
                    None => tracing::warn!(node = replica.id, "leap policy: fence lifted"),
                }
                replica.node.set_policy_fence(why.clone());
                last = why;
            }
            drop(replica);
            tokio::select! {
                _ = tokio::time::sleep(LEAP_CHECK_INTERVAL) => {}
                _ = stopping.changed() => return,
            }
        }
    }

    /// Refuses to add `member` when its policy differs from the membership's.
    pub(super) fn check_new_member_policy(&self, member: &Member) -> Result<()> {
        let voters = self.state.borrow().conf.voters.clone();
        match membership_policy(&self.shared.members(), &voters) {
            Some(p) if p != member.leap => {
                Err(Error::LeapPolicyMismatch { node: member.id, ours: member.leap, membership: p })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: u64, leap: LeapPolicy) -> (u64, Member) {
        (id, Member { id, peer_address: "p".into(), client_address: "c".into(), leap })
    }

    #[test]
    fn the_majority_policy_and_the_start_check() {
        use LeapPolicy::{Smear, Step};
        let members: BTreeMap<u64, Member> = [m(1, Step), m(2, Step), m(3, Smear)].into();
        assert_eq!(membership_policy(&members, &[1, 2, 3]), Some(Step));
        assert_eq!(membership_policy(&members, &[1, 3]), None);
        assert_eq!(membership_policy(&members, &[3]), Some(Smear));
        assert!(check_at_start(1, Step, &members, None).is_ok());
        let e = check_at_start(3, Step, &members, None).unwrap_err();
        assert_eq!(e, Error::LeapPolicyMismatch { node: 3, ours: Step, membership: Smear });
        let text = e.to_string();
        assert!(text.contains("--leap step") && text.contains("--leap smear"), "{text}");
        // A founding member checks its entry in the founding list.
        let founding = [m(4, Smear).1];
        assert!(check_at_start(4, Step, &BTreeMap::new(), Some(&founding)).is_err());
        assert!(check_at_start(4, Smear, &BTreeMap::new(), Some(&founding)).is_ok());
    }

    #[test]
    fn a_minority_policy_is_fenced_only_inside_a_leap_window() {
        use LeapPolicy::{Smear, Step};
        use boundkv_clockbound::SimClock;
        let members: BTreeMap<u64, Member> = [m(1, Step), m(2, Step), m(3, Smear)].into();
        let voters = [1, 2, 3];
        // 2026-03-15T00:00:00Z: no leap is possible.
        let march = SimClock::manual(Timestamp::from_nanos(1_773_532_800_000_000_000));
        assert_eq!(fence_reason(3, Smear, &members, &voters, &march), None);
        assert_eq!(fence_reason(1, Step, &members, &voters, &march), None);
        // 2026-12-31T18:00:00Z: six hours before a possible leap.
        let december = SimClock::manual(Timestamp::from_nanos(1_798_740_000_000_000_000));
        let why = fence_reason(3, Smear, &members, &voters, &december).unwrap();
        assert!(why.contains("(smear) differs from the majority's (step)"), "{why}");
        assert_eq!(fence_reason(1, Step, &members, &voters, &december), None);
        // Recorded with another policy than it runs with: fenced at any time.
        let why = fence_reason(1, Smear, &members, &voters, &march).unwrap();
        assert!(why.contains("records it with --leap step"), "{why}");
    }
}
