//! A replica's background tasks, started with it and stopped by `Replica::shutdown`: starting a
//! leader's term, closing timestamps, raising the GC horizon, collecting garbage, and stopping
//! the Raft member when the transaction layer hits a fatal error.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use boundkv_clockbound::{Timestamp, wait};
use boundkv_consensus::node::Role;
use boundkv_storage::Engine;

use crate::error::Result;

use super::{Command, Replica};

impl<E: Engine> Replica<E> {
    /// Logs when this node leads with an unusable clock (it serves nothing then) and when that
    /// ends; once per change.
    fn report_clock(&self, reported: &mut bool) {
        let leads = self.state.borrow().role == Role::Leader;
        let problem = if leads { self.clock_problem() } else { None };
        match &problem {
            Some(why) if !*reported => {
                tracing::warn!(node = self.id, %why, "the leader cannot serve: its clock is unusable");
            }
            None if *reported && leads => {
                tracing::info!(node = self.id, "the leader's clock is usable again");
            }
            _ => {}
        }
        *reported = problem.is_some();
    }

    /// A fatal error in the transaction layer (a failed write of the clock's high-water mark,
    /// say) means this node's storage can no longer be trusted: the Raft member stops too, so
    /// that it neither wins elections it cannot serve nor acknowledges appends.
    pub(super) async fn stop_on_fatal(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(mut failure) = this.upgrade().map(|r| r.txn.watch_failure()) else {
            return;
        };
        tokio::select! {
            biased;
            _ = stopping.changed() => {}
            r = failure.wait_for(Option::is_some) => {
                let why = match r {
                    Ok(e) => e.as_ref().map(ToString::to_string).unwrap_or_default(),
                    Err(_) => return,
                };
                if let Some(replica) = this.upgrade() {
                    replica.node.fail(format!("transactions stopped: {why}"));
                }
            }
        }
    }

    /// Raises the floor above the log's timestamps and resets the conflict index whenever this
    /// node becomes leader and has caught up (see the `replica` module's docs).
    pub(super) async fn start_terms(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(mut state) = this.upgrade().map(|r| r.state.clone()) else {
            return;
        };
        loop {
            let Some(replica) = this.upgrade() else { return };
            let pending = {
                let s = state.borrow_and_update();
                // `ready_at` is `MAX` until the node has measured it on a usable, unfenced
                // clock; the term starts once it has (it bounds the conflict index below).
                s.leader_state.filter(|ls| {
                    ls.caught_up
                        && ls.ready_at != Timestamp::MAX
                        && replica.gate.activated_term.load(Ordering::Acquire) != ls.term
                })
            };
            if let Some(ls) = pending {
                match replica.activate(ls.term, ls.ready_at).await {
                    Ok(()) => tracing::info!(
                        node = replica.id,
                        term = ls.term,
                        "leader active: timestamps above the log's, conflict index reset"
                    ),
                    Err(e) => {
                        tracing::warn!(node = replica.id, term = ls.term, error = %e, "cannot start the term yet; retrying");
                        drop(replica);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            drop(replica);
            tokio::select! {
                biased;
                r = state.changed() => if r.is_err() { return },
                _ = stopping.changed() => return,
            }
        }
    }

    async fn activate(&self, term: u64, ready_at: Timestamp) -> Result<()> {
        let reading = wait::usable_reading(&*self.clock, &self.options.policy).await?;
        // Straight to the oracle: the gate refuses everything until the term is activated.
        self.txn.oracle().observe(self.shared.max_log_ts(), reading)?;
        // Earlier leaders' read timestamps all lie below their leases' ends, below ready_at.
        self.txn.start_term(ready_at);
        self.gate.activated_term.store(term, Ordering::Release);
        Ok(())
    }

    /// While this node is an active leader: sends a closed timestamp to every other member
    /// every `close_interval` (see the `closed` module; nothing is written).
    pub(super) async fn close_timestamps(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(interval) = this.upgrade().map(|r| r.options.close_interval) else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut clock_reported = false;
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => {}
                _ = stopping.changed() => return,
            }
            let Some(replica) = this.upgrade() else { return };
            replica.report_clock(&mut clock_reported);
            if !replica.lease_valid() {
                continue;
            }
            let members: Vec<u64> = replica.shared.members().into_keys().collect();
            replica.send_closed(&members).await;
        }
    }
}

impl<E: Engine + 'static> Replica<E> {
    /// While this node is an active leader: every `gc_interval`, proposes `Gc(h)` with
    /// `h = min(now().earliest - gc_retention, its safe time, the oldest read in use here)`, when
    /// that is above the current horizon. The safe time keeps every later commit above `h`: it
    /// lies below every pending commit and at or below the floor every later one exceeds (see
    /// the `command` module).
    pub(super) async fn raise_gc_horizon(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some((interval, Some(retention))) =
            this.upgrade().map(|r| (r.options.gc_interval, r.options.gc_retention))
        else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ticker.tick() => {}
                _ = stopping.changed() => return,
            }
            let Some(replica) = this.upgrade() else { return };
            if !replica.lease_valid() {
                continue;
            }
            let Some(reading) = replica.usable_now() else { continue };
            let mut horizon = reading.earliest().saturating_sub(retention).min(replica.safe_time());
            if let Some(oldest) = replica.txn.oldest_active_read() {
                horizon = horizon.min(oldest);
            }
            if horizon <= replica.gc_horizon() {
                continue;
            }
            let id = replica.id;
            replica.node.propose_then(Command::Gc(horizon).encode(), move |outcome| {
                if let Err(e) = outcome {
                    tracing::debug!(node = id, %horizon, error = %e, "GC horizon not raised");
                }
            });
        }
    }

    /// On every replica: whenever the applied GC horizon rises (and once at start), deletes what
    /// it makes unreachable, off the Raft thread. Deletions decided at a horizon stay right on
    /// any later state of the same log (a snapshot installed meanwhile has a horizon at least as
    /// high), so this needs no lock against applying or installing.
    pub(super) async fn collect_garbage(
        this: std::sync::Weak<Self>,
        mut stopping: watch::Receiver<bool>,
    ) {
        let Some(mut horizons) = this.upgrade().map(|r| r.shared.watch_gc_horizon()) else {
            return;
        };
        horizons.mark_changed(); // a collection a crash interrupted is finished at start
        // The horizon the last whole collection ran at: nothing to do again below it.
        let mut collected = Timestamp::ZERO;
        loop {
            tokio::select! {
                biased;
                changed = horizons.changed() => if changed.is_err() { return },
                _ = stopping.changed() => return,
            }
            let horizon = *horizons.borrow_and_update();
            if horizon == Timestamp::ZERO || horizon <= collected {
                continue;
            }
            let Some(replica) = this.upgrade() else { return };
            let (id, mvcc, inline) =
                (replica.id, replica.mvcc.clone(), replica.options.collect_garbage_inline);
            drop(replica);
            let outcome = if inline {
                Ok(mvcc.collect_garbage())
            } else {
                tokio::task::spawn_blocking(move || mvcc.collect_garbage()).await
            };
            match outcome {
                Ok(Ok(stats)) if stats.interrupted => {
                    // A snapshot replaced the state meanwhile; its install notifies again.
                    tracing::debug!(node = id, %horizon, "garbage collection interrupted")
                }
                Ok(Ok(stats)) => {
                    collected = horizon;
                    tracing::info!(
                    node = id,
                    %horizon,
                    versions_deleted = stats.versions_deleted,
                    versions_kept = stats.versions_kept,
                    txn_records_deleted = stats.txn_records_deleted,
                    "garbage collected"
                    )
                }
                // The next horizon tries again; reads stay exact meanwhile (old versions only
                // linger).
                Ok(Err(e)) => {
                    tracing::error!(node = id, %horizon, error = %e, "garbage collection failed")
                }
                Err(e) => tracing::error!(node = id, error = %e, "garbage collection panicked"),
            }
        }
    }
}
