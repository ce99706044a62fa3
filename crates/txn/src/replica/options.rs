//! A replica's settings ([`ReplicaOptions`]), the widest clock bound its lease allows, and the
//! settings it refuses to start with ([`ReplicaOptionsError`]).

use std::sync::Arc;
use std::time::Duration;

use boundkv_clockbound::{Clock, ClockPolicy};
use boundkv_consensus::node::NodeConfig;

use crate::manager::TxnOptions;

use super::Member;

/// Settings of a [`Replica`](super::Replica).
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// The Raft member's settings (id, ticks, lease).
    pub node: NodeConfig,
    /// Transaction limits (and the test-only mutation switch).
    pub txn: TxnOptions,
    /// Which clock readings are usable. The replica lowers `max_bound` to the widest bound its
    /// lease allows ([`ReplicaOptions::clock_policy`]).
    pub policy: ClockPolicy,
    /// How often the active leader sends every member a closed timestamp (see the `closed`
    /// module; nothing is written). Default 25 ms.
    pub close_interval: Duration,
    /// How long a replica waits for its closed timestamp to reach a read's timestamp before
    /// answering `FollowerBehind`. Default 2 s.
    pub follower_wait: Duration,
    /// How long a commit may take before its caller hears `OutcomeUnknown` (it goes on in the
    /// background and may still apply). Default 10 s.
    pub commit_timeout: Duration,
    /// How long `add_member` waits for a new learner to catch up before promoting it. Default
    /// 60 s.
    pub catch_up_timeout: Duration,
    /// How far back reads may go: the leader raises the GC horizon to about `now - retention`
    /// every `gc_interval`, and every replica deletes the versions no read above it can see.
    /// `None` keeps every version. Default 1 h. Set the same on every member (the leader's
    /// counts).
    pub gc_retention: Option<Duration>,
    /// How often the leader raises the GC horizon. Default 60 s.
    pub gc_interval: Duration,
    /// For a brand-new group: the founding members (every founding member is started with the
    /// same list). `None` for a member that joins an existing group, or restarts.
    pub founding: Option<Vec<Member>>,
    /// How this member's clock handles a leap second (`--leap`); must match what the
    /// membership records for it (see [`crate::replica::leap`]). Default step.
    pub leap: boundkv_clockbound::LeapPolicy,
    /// Collect garbage on the runtime's own thread instead of tokio's blocking pool. For the
    /// simulator, whose one thread must see every piece of work start and end; a server keeps
    /// the default (`false`), so that a long collection never holds up the runtime.
    pub collect_garbage_inline: bool,
    /// **Test only; breaks external consistency.** Issue timestamps and serve leader reads
    /// without a valid lease and without waiting out earlier leaders' leases. The lease tests'
    /// mutation twin turns it on to show that they catch the stale reads it allows.
    #[doc(hidden)]
    pub unsafe_ignore_lease: bool,
    /// **Test only; breaks linearizability.** Place a follower's `ReadAt::Latest` reads at the
    /// clock's `latest` alone, without the floor of the timestamps this node already served and
    /// its oracle's floor. A guarded clock's `latest` falls when its bound shrinks, so a read
    /// can then land below one this node served just before, and miss a write the earlier read
    /// returned. The simulator's `no-read-floor` mutation turns it on to show that its
    /// `read-floor` scenario catches that.
    #[doc(hidden)]
    pub unsafe_no_read_floor: bool,
    /// **Test only; breaks external consistency.** Measure the Raft node's lease (when a
    /// renewal's heartbeat left) and `ready_at` on this clock instead of the replica's clock:
    /// the simulator's `raw-lease-clock` mutation hands it the source without its step guard,
    /// so that a step the guard holds the node's timestamps over stretches its lease.
    #[doc(hidden)]
    pub unsafe_lease_clock: Option<UnsafeLeaseClock>,
    /// The cluster clock (`--clock cluster:RHO`), when it is the replica's clock: the Raft node
    /// drives it (`boundkv_consensus::cluster_clock`). The clock passed to `Replica::start` must
    /// then be this one.
    pub cluster_clock: Option<Arc<boundkv_consensus::cluster_clock::ClusterClock>>,
}

/// A clock for [`ReplicaOptions::unsafe_lease_clock`] (a mutation only).
#[derive(Clone)]
pub struct UnsafeLeaseClock(pub Arc<dyn Clock>);

impl std::fmt::Debug for UnsafeLeaseClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnsafeLeaseClock({})", self.0.describe())
    }
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            node: NodeConfig::default(),
            txn: TxnOptions::default(),
            policy: ClockPolicy::default(),
            close_interval: Duration::from_millis(25),
            follower_wait: Duration::from_secs(2),
            commit_timeout: Duration::from_secs(10),
            catch_up_timeout: Duration::from_secs(60),
            gc_retention: Some(Duration::from_secs(3600)),
            gc_interval: Duration::from_secs(60),
            founding: None,
            leap: boundkv_clockbound::LeapPolicy::Step,
            collect_garbage_inline: false,
            unsafe_ignore_lease: false,
            unsafe_no_read_floor: false,
            unsafe_lease_clock: None,
            cluster_clock: None,
        }
    }
}

impl ReplicaOptions {
    /// The widest clock bound with which this replica's leader lease stays usable from one
    /// renewal to the next: `(lease − lease_renewal) / 2`, the largest `ε` with
    /// `2 × ε + lease_renewal ≤ lease` (zero when the lease is no longer than its renewal
    /// interval).
    ///
    /// Why. A renewal's heartbeat goes out at true time `t₀` with a reading of bound `ε₀` and
    /// midpoint `t₀ + δ` (`δ` the clock's offset); once a quorum answers, the lease runs until
    /// `earliest + lease = t₀ + δ − ε₀ + lease`. A timestamp issued at true time `t` from a
    /// reading of bound `ε` is at least its `latest = t + δ + ε`, and the gate passes it only
    /// below the lease's end: `t − t₀ < lease − ε₀ − ε` (a steady offset cancels out). The next
    /// renewal goes out `lease_renewal` after `t₀`, so the lease lasts until then only if
    /// `lease − ε₀ − ε ≥ lease_renewal`; with both bounds at most `ε_max`, that is
    /// `2 × ε_max + lease_renewal ≤ lease`. The renewal's round trip comes on top: for that long
    /// the lease may lapse, and the first request that finds it lapsed renews it on demand (a
    /// Safe ReadIndex round, after which the lease is usable for `lease − 2ε ≥ lease_renewal`,
    /// so this works whenever a round trip is shorter than `lease_renewal`).
    ///
    /// With a wider bound some timestamps may still pass, in bursts after each renewal, and with
    /// `2 × ε ≥ lease` none can. One rule for every case: a replica refuses every reading wider
    /// than this ([`ReplicaOptions::clock_policy`]).
    pub fn lease_bound_ceiling(&self) -> Duration {
        self.node.lease.saturating_sub(self.node.lease_renewal) / 2
    }

    /// The clock policy the replica acts on: [`ReplicaOptions::policy`] with `max_bound` lowered
    /// to [`ReplicaOptions::lease_bound_ceiling`] when that is smaller, saying why. Every reading
    /// the replica takes goes through it (its Raft node's lease and election readings, its
    /// timestamp oracle, its waits, its gate, its status), so a bound too wide for the lease is
    /// an unusable clock everywhere: requests fail with [`Error::Clock`] naming the bound.
    ///
    /// [`Error::Clock`]: crate::error::Error::Clock
    pub fn clock_policy(&self) -> ClockPolicy {
        let ceiling = self.lease_bound_ceiling();
        if ceiling >= self.policy.max_bound {
            return self.policy.clone();
        }
        ClockPolicy {
            max_bound: ceiling,
            max_bound_reason: Some(format!(
                "the widest a {} lease renewed every {} allows: 2 × bound + renewal must not \
                 exceed the lease",
                humantime::format_duration(self.node.lease),
                humantime::format_duration(self.node.lease_renewal)
            )),
            ..self.policy.clone()
        }
    }

    /// Refuses settings no clock can work with: a lease that no clock bound fits
    /// ([`ReplicaOptionsError::NoUsableLease`], when [`ReplicaOptions::lease_bound_ceiling`] is
    /// zero). [`Replica::start_driven`] (and so [`Replica::start`]) calls it first.
    ///
    /// [`Replica::start_driven`]: super::Replica::start_driven
    /// [`Replica::start`]: super::Replica::start
    pub fn validate(&self) -> std::result::Result<(), ReplicaOptionsError> {
        if self.lease_bound_ceiling().is_zero() {
            return Err(ReplicaOptionsError::NoUsableLease {
                lease: self.node.lease,
                lease_renewal: self.node.lease_renewal,
            });
        }
        Ok(())
    }
}

/// Settings a replica refuses to start with ([`ReplicaOptions::validate`]). Deterministic: the
/// same settings are always refused; change them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ReplicaOptionsError {
    /// No clock bound fits the lease: `2 × bound + lease_renewal ≤ lease` holds for none (see
    /// [`ReplicaOptions::lease_bound_ceiling`]).
    #[error(
        "a lease of {} renewed every {} leaves no usable lease for any clock bound: \
         2 × bound + lease renewal must not exceed the lease; raise the lease (--lease) or renew \
         it more often",
        humantime::format_duration(*lease),
        humantime::format_duration(*lease_renewal)
    )]
    NoUsableLease {
        /// The lease.
        lease: Duration,
        /// How often the leader renews it.
        lease_renewal: Duration,
    },
}

#[cfg(test)]
mod tests {
    use boundkv_clockbound::{ClockReading, Timestamp};

    use super::*;
    use crate::error::Error;

    fn with_lease(lease_ms: u64, renewal_ms: u64) -> ReplicaOptions {
        let mut o = ReplicaOptions::default();
        o.node.lease = Duration::from_millis(lease_ms);
        o.node.lease_renewal = Duration::from_millis(renewal_ms);
        o
    }

    #[test]
    fn the_defaults_are_valid_and_refuse_bounds_too_wide_for_the_lease() {
        let o = ReplicaOptions::default();
        assert_eq!(o.validate(), Ok(()));
        // lease 1 s, renewal 200 ms: 2 × 400 ms + 200 ms = 1 s.
        assert_eq!(o.lease_bound_ceiling(), Duration::from_millis(400));
        let policy = o.clock_policy();
        assert_eq!(policy.max_bound, Duration::from_millis(400));
        let reading = |bound_ms| {
            Ok(ClockReading {
                interval: boundkv_clockbound::TimeInterval::around(
                    Timestamp::from_nanos(1 << 60),
                    Duration::from_millis(bound_ms),
                ),
                status: boundkv_clockbound::ClockStatus::FreeRunning,
            })
        };
        assert!(policy.check(reading(400)).is_ok());
        let e = policy.check(reading(401)).unwrap_err().to_string();
        assert!(
            e.contains("±401ms exceeds the ceiling ±400ms")
                && e.contains("a 1s lease renewed every 200ms"),
            "{e}"
        );
    }

    #[test]
    fn a_tighter_policy_is_kept() {
        let mut o = with_lease(1000, 200);
        o.policy.max_bound = Duration::from_millis(50);
        assert_eq!(o.clock_policy(), o.policy);
    }

    #[test]
    fn a_lease_no_bound_fits_is_refused() {
        for (lease, renewal) in [(200, 200), (100, 200), (0, 0)] {
            let o = with_lease(lease, renewal);
            assert_eq!(
                o.validate(),
                Err(ReplicaOptionsError::NoUsableLease {
                    lease: Duration::from_millis(lease),
                    lease_renewal: Duration::from_millis(renewal),
                })
            );
        }
        let e = Error::from(with_lease(200, 200).validate().unwrap_err()).to_string();
        assert!(
            e.contains("a lease of 200ms renewed every 200ms leaves no usable lease")
                && e.contains("raise the lease"),
            "{e}"
        );
        // The smallest room there is: a nanosecond of bound.
        let mut o = with_lease(200, 200);
        o.node.lease += Duration::from_nanos(2);
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.lease_bound_ceiling(), Duration::from_nanos(1));
    }
}
