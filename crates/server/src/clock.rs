//! The node's clock watcher: one task that reads the clock every [`WATCH_INTERVAL`], judges it
//! by the replica's policy ([`ClockHealth`]), logs every change of state once at WARN (with the
//! bound and the reason), and keeps the last [`HealthReport`] for `Status`, `/metrics` and the
//! `ClockUnavailable` answers.
//!
//! It is off the commit path: requests never wait for it, and it never decides anything. The
//! commit path reads the clock itself and applies the same policy (see `docs/architecture/time.md`,
//! "When the clock is unusable").
//!
//! The step guard's holdover shows as `Stepped` (read from the clock's
//! [`guard_report`](boundkv_clockbound::Clock::guard_report) at each observation); the peer clock
//! checks report `Fenced` through [`ClockWatch::set_verdict`]; while a verdict is set it is the
//! node's clock state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use boundkv_clockbound::{ClockHealth, HealthMonitor, HealthReport};
use boundkv_storage::SledEngine;
use boundkv_txn::replica::Replica;

/// How often the watcher reads the clock.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The last observation of the node's clock (see the module docs).
pub(crate) struct ClockWatch {
    inner: Mutex<Inner>,
    origin: Instant,
}

struct Inner {
    monitor: HealthMonitor,
    verdict: Option<ClockHealth>,
}

impl ClockWatch {
    /// Starts watching `replica`'s clock until `shutdown` turns true; the first observation is
    /// made before this returns.
    pub(crate) fn start(
        replica: Arc<Replica<SledEngine>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Arc<ClockWatch> {
        let name = format!("node {}", replica.id());
        let this = Arc::new(ClockWatch {
            inner: Mutex::new(Inner {
                monitor: HealthMonitor::new(replica.policy().clone(), name),
                verdict: None,
            }),
            origin: Instant::now(),
        });
        this.observe(&replica);
        let watcher = this.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WATCH_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => watcher.observe(&replica),
                    _ = shutdown.changed() => return,
                }
            }
        });
        this
    }

    fn observe(&self, replica: &Replica<SledEngine>) {
        let answer = replica.clock().now();
        let at = self.origin.elapsed();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bound = answer.as_ref().ok().map(|r| r.bound());
        // The step guard's holdover is a state of its own while the reading is otherwise
        // usable (a bound past the ceiling is `Unusable`, whatever the guard says).
        let holdover = replica.clock().guard_report().filter(|g| g.holding_over).map(|g| {
            let jump_ms = g.jump_nanos.unwrap_or(0) as f64 / 1e6;
            ClockHealth::Stepped {
                reason: format!(
                    "the clock jumped {jump_ms:+.3} ms against its own past; holding over on the \
                     monotonic clock ({} step(s) since start)",
                    g.steps
                ),
            }
        });
        let usable = ClockHealth::classify(replica.policy(), &answer).is_usable();
        match (inner.verdict.clone(), holdover) {
            (Some(verdict), _) => inner.monitor.observe_health(verdict, bound, at),
            (None, Some(stepped)) if usable => inner.monitor.observe_health(stepped, bound, at),
            _ => inner.monitor.observe(&answer, at),
        };
    }

    /// Sets (or clears, with `None`) a verdict reached by a layer that knows more than one
    /// reading shows: `Stepped` from a step guard, `Fenced` from peer clock checks. It is
    /// reported and logged from the next observation on.
    #[allow(dead_code)] // the hook for the step guard and the peer checks (issue 12)
    pub(crate) fn set_verdict(&self, verdict: Option<ClockHealth>) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).verdict = verdict;
    }

    /// The clock's state as last observed.
    pub(crate) fn report(&self) -> Option<HealthReport> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).monitor.report()
    }
}
