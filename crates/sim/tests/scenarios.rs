//! t11: the targeted scenarios (`crates/sim/src/scenario.rs`) pass on today's code, and each
//! catches the mutation it targets on every seed, not on some: the lease scenario the lease check
//! switched off, the clock-step scenario the step guard switched off, the clock-lie scenario the
//! peer checks that never fence, the read-floor scenario follower reads without their floor, and
//! the lease-clock-step scenario leases measured on the raw clock, the cluster clock's
//! bad-oscillator scenario a leader never convicted.
//!
//! The patch mutants (bugs 1 and 2 reintroduced) cannot be applied from a test; `scripts/sim.sh`
//! runs them against the CI seed set, where the scenarios that target them catch them.

use std::time::Duration;

use boundkv_sim::run::{Mutation, RunOptions, ScenarioChoice, run_seed};
use boundkv_sim::scenario::Scenario;
use boundkv_tests::check::Validity;

fn with(scenario: Scenario, seed: u64) -> RunOptions {
    RunOptions {
        seed,
        // The scenario runs first; the random phase gets what is left of this.
        duration: Duration::from_secs(2),
        scenario: ScenarioChoice::This(scenario),
        ..RunOptions::default()
    }
}

fn scenario_verdict(options: &RunOptions) -> (Validity, String) {
    let report = run_seed(options);
    let scenario = report
        .results
        .iter()
        .find(|r| r.checker == "scenario")
        .map(|r| r.valid)
        .expect("a run with a scenario reports it");
    (scenario, report.summary())
}

/// Asserts that `scenario` catches `mutation` on every one of `seeds` (without peer clock checks
/// if `no_peer_clock_checks`).
fn assert_caught_on_every_seed(
    scenario: Scenario,
    mutation: Mutation,
    seeds: std::ops::RangeInclusive<u64>,
    no_peer_clock_checks: bool,
) {
    for seed in seeds {
        let options =
            RunOptions { mutation: Some(mutation), no_peer_clock_checks, ..with(scenario, seed) };
        let (verdict, summary) = scenario_verdict(&options);
        assert_eq!(verdict, Validity::Invalid, "seed {seed} missed the mutant: {summary}");
    }
}

#[test]
fn t11_every_scenario_passes_on_todays_code() {
    for scenario in Scenario::ALL {
        for seed in [1, 2] {
            let report = run_seed(&with(scenario, seed));
            assert_eq!(report.valid, Validity::Valid, "{}", report.summary());
            assert_eq!(report.scenario_built, Some(true), "no corner built: {}", report.summary());
        }
    }
}

#[test]
fn t11_the_lease_scenario_catches_the_lease_check_off_on_every_seed() {
    assert_caught_on_every_seed(Scenario::LeaseHandover, Mutation::NoLeaseCheck, 1..=4, false);
}

/// The step guard off, without peer clock checks (as in an embedded database, where the guard is
/// a step's only defence; with the checks, readings widened to what the peers verify cover a
/// step too): a follower's read after its clock stepped misses an acknowledged write, on every
/// seed.
#[test]
fn t11_the_clock_step_scenario_catches_the_step_guard_off_on_every_seed() {
    assert_caught_on_every_seed(Scenario::ClockStep, Mutation::NoStepGuard, 1..=4, true);
}

/// A node restarted with its clock 250 ms off (behind on some seeds, ahead on others) inside a
/// claimed tiny bound: with the peer clock checks fencing off, a read at it, or a commit it
/// acknowledges as leader, breaks real-time order on every seed; with them on, it is fenced
/// (t11_every_scenario_passes_on_todays_code).
#[test]
fn t12_the_clock_lie_scenario_catches_the_peer_checks_off_on_every_seed() {
    assert_caught_on_every_seed(Scenario::ClockLieAtRestart, Mutation::NoPeerChecks, 1..=4, false);
}

/// A node restarted with its clock off by a little more than its bound (`Scenario::SmallClockLie`:
/// beyond its bound by more than another node R's bound, less than the peer checks resolve, so
/// nobody is fenced), behind on some seeds, ahead on others: with readings not widened to what
/// the peers verify, its read after R acknowledged a write, or R's read after it acknowledged
/// one as leader, misses the write on every seed; widened, the scenario passes and every step
/// of it runs (t11_every_scenario_passes_on_todays_code).
#[test]
fn t12_the_small_clock_lie_scenario_catches_readings_not_widened_on_every_seed() {
    assert_caught_on_every_seed(Scenario::SmallClockLie, Mutation::NoPeerWidening, 1..=6, false);
}

/// A follower's clock goes back inside its old bound (the step guard lets it through) between
/// two reads at `ReadAt::Latest`: without the floor of timestamps already served, the second
/// misses a write the first returned (and that was acknowledged before it began), on every seed.
/// Without peer clock checks, as above: with them, the widened readings count the move back.
#[test]
fn t12_the_read_floor_scenario_catches_reads_without_the_floor_on_every_seed() {
    assert_caught_on_every_seed(Scenario::ReadFloor, Mutation::NoReadFloor, 1..=4, true);
}

/// A leader's clock source steps forward 4–6 s while it renews its lease: a lease measured on the
/// raw source (not through the step guard) outlives the true one, and the old leader, resumed
/// after a new one acknowledged a write, serves the value it replaced, on every seed.
#[test]
fn t12_the_lease_clock_step_scenario_catches_leases_on_the_raw_clock_on_every_seed() {
    assert_caught_on_every_seed(Scenario::LeaseClockStep, Mutation::RawLeaseClock, 1..=4, false);
}

/// Every kernel announces a leap second and every clock steps back one second at midnight
/// (`Scenario::LeapSecond`, not drawn: it starts the run just before a UTC midnight): the
/// cluster carries through it, nothing read is stale, no node holds over or is fenced, and the
/// random phase that follows (crashes and restarts inside the absorption, clock faults) stays
/// valid. With step guards that know nothing of leap seconds, every seed's scenario fails
/// (every node holds over).
#[test]
fn t13_the_leap_second_scenario_passes_and_catches_guards_that_do_not_absorb() {
    for seed in [1, 2, 3] {
        let options =
            RunOptions { duration: Duration::from_secs(30), ..with(Scenario::LeapSecond, seed) };
        let report = run_seed(&options);
        assert_eq!(report.valid, Validity::Valid, "{}", report.summary());
        assert_eq!(report.scenario_built, Some(true), "no corner built: {}", report.summary());
    }
    assert_caught_on_every_seed(Scenario::LeapSecond, Mutation::NoLeapAbsorb, 1..=4, false);
}

/// Under the cluster clock, a leader's oscillator runs 25–100 × `RHO` fast or slow
/// (`Scenario::ClusterBadOscillator`): its followers find its answers contradicting, a majority
/// convicts it, it steps down and stays out while broken, the others serve again, and it rejoins
/// once repaired; the random phase that follows stays valid. With conviction switched off, the
/// broken leader keeps leading and the scenario fails on every seed.
#[test]
fn t14_the_bad_oscillator_scenario_passes_and_catches_a_leader_never_convicted() {
    let on_the_cluster_clock = |seed| RunOptions {
        cluster_clock: Some(200),
        // Some time left after the scenario's 15-odd seconds, so that the random phase runs.
        duration: Duration::from_secs(20),
        ..with(Scenario::ClusterBadOscillator, seed)
    };
    for seed in [1, 2, 3] {
        let report = run_seed(&on_the_cluster_clock(seed));
        assert_eq!(report.valid, Validity::Valid, "{}", report.summary());
        assert_eq!(report.scenario_built, Some(true), "no corner built: {}", report.summary());
    }
    for seed in 1..=4 {
        let options = RunOptions {
            mutation: Some(Mutation::ClusterNeverConvict),
            ..on_the_cluster_clock(seed)
        };
        let (verdict, summary) = scenario_verdict(&options);
        assert_eq!(verdict, Validity::Invalid, "seed {seed} missed the mutant: {summary}");
    }
}
