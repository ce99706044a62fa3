//! [`ClockPolicy`]: which readings a database may act on.
//!
//! A reading is *usable* when all of these hold:
//!
//! 1. `now()` returned `Ok`;
//! 2. its status is `Synchronized`, or `FreeRunning` when [`ClockPolicy::allow_free_running`] is
//!    set (the default: a free-running bound is still a bound, only growing);
//! 3. its bound is at most [`ClockPolicy::max_bound`] (a bound of minutes is technically valid
//!    but would make every commit wait minutes; refusing is the more useful answer). A user of
//!    the policy may lower the ceiling further from its own settings and say why in
//!    [`ClockPolicy::max_bound_reason`] (a replica lowers it to what its leader lease allows).
//!
//! Anything else is [`Unusable`], and waits for a usable reading give up after
//! [`ClockPolicy::unavailable_timeout`].

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ClockError;
use crate::time::{ClockReading, ClockStatus};

/// What makes a reading usable, and how long to wait for one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockPolicy {
    /// How long a caller waits for a usable reading before failing with `ClockUnavailable`.
    /// Default 5 s.
    pub unavailable_timeout: Duration,
    /// Readings with a larger bound are unusable. Default 1 s.
    pub max_bound: Duration,
    /// Why `max_bound` is what it is, when it was derived from other settings rather than
    /// configured (a replica lowers it to the widest bound its lease allows); quoted by
    /// [`Unusable::BoundTooLarge`]. Default `None`.
    #[serde(default)]
    pub max_bound_reason: Option<String>,
    /// Whether `FreeRunning` readings are usable. Default `true`.
    pub allow_free_running: bool,
    /// A commit wait whose target lies further than this beyond `earliest` fails at once instead
    /// of sleeping (a clock stepped back by hours should not hang a commit for hours).
    /// Default 10 s.
    pub max_commit_wait: Duration,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        ClockPolicy {
            unavailable_timeout: Duration::from_secs(5),
            max_bound: Duration::from_secs(1),
            max_bound_reason: None,
            allow_free_running: true,
            max_commit_wait: Duration::from_secs(10),
        }
    }
}

/// Why a reading may not be acted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unusable {
    /// The clock answered with a status that does not bound true time.
    Status(ClockStatus),
    /// The clock could not be read.
    Error(ClockError),
    /// The bound is larger than the configured ceiling.
    BoundTooLarge {
        /// The reading's bound.
        bound: Duration,
        /// [`ClockPolicy::max_bound`].
        ceiling: Duration,
        /// [`ClockPolicy::max_bound_reason`].
        reason: Option<String>,
    },
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Status(s) => write!(f, "the clock's status is {s}"),
            Unusable::Error(e) => write!(f, "{e}"),
            Unusable::BoundTooLarge { bound, ceiling, reason } => {
                write!(
                    f,
                    "the clock's bound ±{} exceeds the ceiling ±{}",
                    humantime::format_duration(*bound),
                    humantime::format_duration(*ceiling)
                )?;
                match reason {
                    Some(why) => write!(f, " ({why})"),
                    None => Ok(()),
                }
            }
        }
    }
}

impl ClockPolicy {
    /// Classifies one answer of `now()`.
    pub fn check(
        &self,
        answer: Result<ClockReading, ClockError>,
    ) -> Result<ClockReading, Unusable> {
        let reading = answer.map_err(Unusable::Error)?;
        match reading.status {
            ClockStatus::Synchronized => {}
            ClockStatus::FreeRunning if self.allow_free_running => {}
            status => return Err(Unusable::Status(status)),
        }
        let bound = reading.bound();
        if bound > self.max_bound {
            return Err(Unusable::BoundTooLarge {
                bound,
                ceiling: self.max_bound,
                reason: self.max_bound_reason.clone(),
            });
        }
        Ok(reading)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::time::{TimeInterval, Timestamp};

    /// A reading with `status` and a bound of `bound_ms`, for tests of policies and health.
    pub(crate) fn reading(status: ClockStatus, bound_ms: u64) -> Result<ClockReading, ClockError> {
        Ok(ClockReading {
            interval: TimeInterval::around(
                Timestamp::from_nanos(1 << 60),
                Duration::from_millis(bound_ms),
            ),
            status,
        })
    }

    #[test]
    fn only_bounded_statuses_under_the_ceiling_are_usable() {
        let p = ClockPolicy { max_bound: Duration::from_millis(10), ..ClockPolicy::default() };
        assert!(p.check(reading(ClockStatus::Synchronized, 10)).is_ok());
        assert!(p.check(reading(ClockStatus::FreeRunning, 1)).is_ok());
        assert_eq!(
            p.check(reading(ClockStatus::Synchronized, 11)),
            Err(Unusable::BoundTooLarge {
                bound: Duration::from_millis(11),
                ceiling: Duration::from_millis(10),
                reason: None,
            })
        );
        let why = ClockPolicy { max_bound_reason: Some("the lease".into()), ..p.clone() };
        let e = why.check(reading(ClockStatus::Synchronized, 11)).unwrap_err();
        assert_eq!(e.to_string(), "the clock's bound ±11ms exceeds the ceiling ±10ms (the lease)");
        assert_eq!(
            p.check(reading(ClockStatus::Unknown, 1)),
            Err(Unusable::Status(ClockStatus::Unknown))
        );
        assert_eq!(
            p.check(reading(ClockStatus::Disrupted, 1)),
            Err(Unusable::Status(ClockStatus::Disrupted))
        );
        let strict = ClockPolicy { allow_free_running: false, ..p.clone() };
        assert_eq!(
            strict.check(reading(ClockStatus::FreeRunning, 1)),
            Err(Unusable::Status(ClockStatus::FreeRunning))
        );
        let err = ClockError::Simulated("x".into());
        assert_eq!(p.check(Err(err.clone())), Err(Unusable::Error(err)));
    }
}
