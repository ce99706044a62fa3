//! [`ClockHealth`]: what a node may do with its clock right now, and [`HealthMonitor`], which
//! follows it from reading to reading and logs every change once.
//!
//! # The states
//!
//! | health | usable? | comes from |
//! |---|---|---|
//! | [`Synchronized`](ClockHealth::Synchronized) | yes | a `Synchronized` reading under the policy's ceiling |
//! | [`FreeRunning`](ClockHealth::FreeRunning) | yes, the bound grows | a `FreeRunning` reading the policy allows (the daemon lost its source) |
//! | [`Unusable`](ClockHealth::Unusable) | no | status `Unknown`/`Disrupted`, a read error, or a bound above the ceiling ([`Unusable`] says which) |
//! | [`Stepped`](ClockHealth::Stepped) | yes, the bound grows | the [`crate::StepGuard`] saw the source step or lie and holds the node over on its monotonic clock (refused like any reading once the bound passes the ceiling) |
//! | [`Fenced`](ClockHealth::Fenced) | no | a layer that checks this clock against its peers' |
//!
//! [`ClockHealth::classify`] produces the first three from one reading and the
//! [`ClockPolicy`]. The last two are verdicts only a layer with more context can reach; such a
//! layer hands its verdict to [`HealthMonitor::observe_health`], and it is reported, logged and
//! exported like any other state. Nothing in this crate produces them.
//!
//! # Changes are logged once
//!
//! A daemon that loses its source goes `Synchronized → FreeRunning` (about 5 s later, with
//! ClockBound 2.x) `→ Unknown`, and back once it is synchronized again. [`HealthMonitor`] logs
//! each of those transitions exactly once, at WARN, with the bound and the reason:
//!
//! ```text
//! WARN clock health changed from="synchronized" to="free_running" bound=±312µs ...
//! WARN clock health changed from="free_running" to="unusable" bound=±6.1ms reason="the clock's status is Unknown"
//! WARN clock health changed from="unusable" to="synchronized" bound=±48µs unusable_for=30.1s
//! ```
//!
//! A bound above the ceiling is one state however the bound moves while it stays above; a
//! change of *reason* (`Unknown` then `Disrupted`, say) is a change.
//!
//! The monitor is a plain state machine: whoever owns it reads the clock on its own schedule
//! (the server, every 100 ms), off the commit path.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ClockError;
use crate::policy::{ClockPolicy, Unusable};
use crate::time::{ClockReading, ClockStatus};

/// What a node may do with its clock right now (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClockHealth {
    /// Synchronized, with a bound under the ceiling: usable.
    Synchronized,
    /// Free-running (the daemon lost its source; the bound grows at the drift allowance), and
    /// the policy allows it: usable.
    FreeRunning,
    /// The policy refuses the reading: no timestamps, no commit waits finish.
    Unusable {
        /// Why.
        reason: Unusable,
    },
    /// The clock stepped or contradicted its own recent history, as a step guard judged it:
    /// the node holds over on its monotonic clock, usable while the growing bound stays under
    /// the ceiling.
    Stepped {
        /// What the guard saw.
        reason: String,
    },
    /// The clock disagrees with its peers', as peer clock checks judged it: not usable.
    Fenced {
        /// What the checks saw.
        reason: String,
    },
}

impl ClockHealth {
    /// The health one answer of `now()` shows under `policy`.
    pub fn classify(policy: &ClockPolicy, answer: &Result<ClockReading, ClockError>) -> Self {
        match policy.check(answer.clone()) {
            Ok(r) if r.status == ClockStatus::FreeRunning => ClockHealth::FreeRunning,
            Ok(_) => ClockHealth::Synchronized,
            Err(reason) => ClockHealth::Unusable { reason },
        }
    }

    /// Whether timestamps may be taken and commit waits finished.
    pub fn is_usable(&self) -> bool {
        matches!(
            self,
            ClockHealth::Synchronized | ClockHealth::FreeRunning | ClockHealth::Stepped { .. }
        )
    }

    /// A short label, for metrics and logs: `synchronized`, `free_running`, `unusable`,
    /// `stepped`, `fenced`.
    pub fn label(&self) -> &'static str {
        match self {
            ClockHealth::Synchronized => "synchronized",
            ClockHealth::FreeRunning => "free_running",
            ClockHealth::Unusable { .. } => "unusable",
            ClockHealth::Stepped { .. } => "stepped",
            ClockHealth::Fenced { .. } => "fenced",
        }
    }

    /// Every label, in [`ClockHealth::label`]'s order (for a gauge per state).
    pub const LABELS: [&'static str; 5] =
        ["synchronized", "free_running", "unusable", "stepped", "fenced"];

    /// Why the clock is not usable, for people; `None` when it is usable.
    pub fn reason(&self) -> Option<String> {
        match self {
            ClockHealth::Synchronized | ClockHealth::FreeRunning => None,
            ClockHealth::Unusable { reason } => Some(reason.to_string()),
            ClockHealth::Stepped { reason } | ClockHealth::Fenced { reason } => {
                Some(reason.clone())
            }
        }
    }

    /// Two healths are the same *state* when a change between them is not worth a log line:
    /// the same variant, and for `Unusable` the same kind of reason (a bound above the ceiling
    /// stays one state while the bound moves; a read error stays one state while its message
    /// changes).
    fn same_state(&self, other: &ClockHealth) -> bool {
        match (self, other) {
            (ClockHealth::Unusable { reason: a }, ClockHealth::Unusable { reason: b }) => {
                match (a, b) {
                    (Unusable::Status(x), Unusable::Status(y)) => x == y,
                    (Unusable::Error(_), Unusable::Error(_))
                    | (Unusable::BoundTooLarge { .. }, Unusable::BoundTooLarge { .. }) => true,
                    _ => false,
                }
            }
            (ClockHealth::Stepped { .. }, ClockHealth::Stepped { .. })
            | (ClockHealth::Fenced { .. }, ClockHealth::Fenced { .. }) => true,
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for ClockHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            Some(why) => write!(f, "{}: {why}", self.label()),
            None => f.write_str(self.label()),
        }
    }
}

/// The clock's health as last observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The state.
    pub health: ClockHealth,
    /// The bound of the last reading, if the clock could be read.
    pub bound: Option<Duration>,
    /// The policy's ceiling on the bound.
    pub ceiling: Duration,
    /// How long the clock has been in this state (on the observer's timebase).
    pub for_: Duration,
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "clock {}", self.health.label())?;
        match self.bound {
            Some(b) => write!(f, ", bound ±{}", humantime::format_duration(round_us(b)))?,
            None => write!(f, ", bound unknown")?,
        }
        write!(
            f,
            " (ceiling ±{}) for {}",
            humantime::format_duration(self.ceiling),
            humantime::format_duration(round_ms(self.for_))
        )?;
        if let Some(why) = self.health.reason() {
            write!(f, ": {why}")?;
        }
        Ok(())
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

fn round_us(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros() as u64)
}

/// A change of state, as [`HealthMonitor::observe`] reports it (and has logged it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthChange {
    /// The state before; `None` for the first observation.
    pub from: Option<ClockHealth>,
    /// The state now.
    pub to: ClockHealth,
    /// The bound of the reading that showed it.
    pub bound: Option<Duration>,
    /// How long the previous state lasted.
    pub lasted: Duration,
}

/// Follows the clock's health from observation to observation and logs each change of state
/// once, at WARN (see the module docs). Not thread-safe by itself: one owner observes.
#[derive(Debug)]
pub struct HealthMonitor {
    policy: ClockPolicy,
    current: Option<(ClockHealth, Duration)>,
    last_bound: Option<Duration>,
    last_at: Duration,
    /// A short name for log lines (e.g. `node 3`).
    name: String,
}

impl HealthMonitor {
    /// A monitor judging readings by `policy`; `name` goes into its log lines.
    pub fn new(policy: ClockPolicy, name: impl Into<String>) -> Self {
        HealthMonitor {
            policy,
            current: None,
            last_bound: None,
            last_at: Duration::ZERO,
            name: name.into(),
        }
    }

    /// Classifies one answer of `now()`, taken at `at` on the observer's timebase (any
    /// monotonic clock), and records it.
    pub fn observe(
        &mut self,
        answer: &Result<ClockReading, ClockError>,
        at: Duration,
    ) -> Option<HealthChange> {
        let bound = answer.as_ref().ok().map(ClockReading::bound);
        self.observe_health(ClockHealth::classify(&self.policy, answer), bound, at)
    }

    /// Records a verdict reached elsewhere (a step guard's `Stepped`, peer checks' `Fenced`, or
    /// a [`ClockHealth::classify`] of a reading taken elsewhere). Returns the change, if it is
    /// one, after logging it.
    pub fn observe_health(
        &mut self,
        health: ClockHealth,
        bound: Option<Duration>,
        at: Duration,
    ) -> Option<HealthChange> {
        self.last_bound = bound;
        self.last_at = at;
        let (from, lasted) = match self.current.take() {
            Some((h, since)) if h.same_state(&health) => {
                // Same state: keep its start, refresh the details (the bound, the message).
                self.current = Some((health, since));
                return None;
            }
            Some((h, since)) => (Some(h), at.saturating_sub(since)),
            None => (None, Duration::ZERO),
        };
        self.current = Some((health.clone(), at));
        let change = HealthChange { from, to: health, bound, lasted };
        log_change(&self.name, &change, self.policy.max_bound);
        Some(change)
    }

    /// The state as last observed, with how long it has lasted up to the last observation;
    /// `None` before the first.
    pub fn report(&self) -> Option<HealthReport> {
        self.current.as_ref().map(|(health, since)| HealthReport {
            health: health.clone(),
            bound: self.last_bound,
            ceiling: self.policy.max_bound,
            for_: self.last_at.saturating_sub(*since),
        })
    }
}

fn log_change(name: &str, c: &HealthChange, ceiling: Duration) {
    let from = c.from.as_ref().map_or("none", ClockHealth::label);
    let bound = match c.bound {
        Some(b) => format!("±{}", humantime::format_duration(round_us(b))),
        None => "unknown".into(),
    };
    let ceiling = format!("±{}", humantime::format_duration(ceiling));
    let lasted = humantime::format_duration(round_ms(c.lasted)).to_string();
    match (&c.from, c.to.reason()) {
        // Starting healthy is not news.
        (None, None) => tracing::info!(
            clock = name,
            to = c.to.label(),
            %bound,
            %ceiling,
            "clock health: usable"
        ),
        (_, Some(reason)) => tracing::warn!(
            clock = name,
            from,
            to = c.to.label(),
            %bound,
            %ceiling,
            %reason,
            %lasted,
            "clock health changed: the clock is unusable; no new timestamps until it recovers"
        ),
        (Some(_), None) => tracing::warn!(
            clock = name,
            from,
            to = c.to.label(),
            %bound,
            %ceiling,
            %lasted,
            "clock health changed: the clock is usable"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::reading;

    #[test]
    fn each_change_of_state_is_reported_once() {
        let policy = ClockPolicy { max_bound: Duration::from_millis(10), ..Default::default() };
        let mut m = HealthMonitor::new(policy, "test");
        let s = |n: u64| Duration::from_secs(n);
        let first = m.observe(&reading(ClockStatus::Synchronized, 1), s(0)).unwrap();
        assert_eq!((first.from, first.to), (None, ClockHealth::Synchronized));
        assert_eq!(m.observe(&reading(ClockStatus::Synchronized, 2), s(1)), None);
        let c = m.observe(&reading(ClockStatus::FreeRunning, 3), s(2)).unwrap();
        assert_eq!(c.to, ClockHealth::FreeRunning);
        assert_eq!(c.lasted, s(2));
        let c = m.observe(&reading(ClockStatus::Unknown, 4), s(7)).unwrap();
        assert_eq!(c.to, ClockHealth::Unusable { reason: Unusable::Status(ClockStatus::Unknown) });
        assert_eq!(c.bound, Some(Duration::from_millis(4)));
        assert_eq!(m.observe(&reading(ClockStatus::Unknown, 5), s(8)), None);
        let r = m.report().unwrap();
        assert_eq!((r.for_, r.bound), (s(1), Some(Duration::from_millis(5))));
        assert!(!r.health.is_usable());
        assert!(r.to_string().starts_with("clock unusable, bound ±5ms (ceiling ±10ms) for 1s: "));
        // A bound above the ceiling is one state while the bound moves.
        assert!(m.observe(&reading(ClockStatus::Synchronized, 11), s(9)).is_some());
        assert_eq!(m.observe(&reading(ClockStatus::Synchronized, 12), s(10)), None);
        let back = m.observe(&reading(ClockStatus::Synchronized, 1), s(11)).unwrap();
        assert_eq!(back.to, ClockHealth::Synchronized);
        assert_eq!(back.lasted, s(2));
        // Verdicts from elsewhere are states like the others.
        let fenced = ClockHealth::Fenced { reason: "outside the majority".into() };
        assert!(m.observe_health(fenced.clone(), None, s(12)).is_some());
        assert_eq!(m.observe_health(fenced, None, s(13)), None);
        assert_eq!(m.report().unwrap().health.label(), "fenced");
    }
}
