//! t10: the simulator is deterministic and sensitive.
//!
//! - The same seed gives the same run, byte for byte (the hash of its whole trace), and
//!   different seeds give different runs.
//! - A few short seeds pass on today's code.
//! - With commit wait off (a planted bug), a seed fails: the checkers see it.
//!
//! The long runs (hundreds of seeds of 30 s, and the patch mutants) are `scripts/sim.sh`, which
//! CI runs in release mode.

use std::time::Duration;

use boundkv_sim::run::{Mutation, RunOptions, run_seed};
use boundkv_tests::check::Validity;

fn short(seed: u64) -> RunOptions {
    RunOptions { seed, duration: Duration::from_secs(5), ..RunOptions::default() }
}

#[test]
fn t10_a_seed_replays_exactly() {
    for seed in [3, 11] {
        let a = run_seed(&short(seed));
        let b = run_seed(&short(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} replays differently");
        assert_eq!(a.events, b.events);
        assert!(a.ok > 50, "seed {seed} did little: {}", a.summary());
    }
    assert_ne!(run_seed(&short(3)).trace_hash, run_seed(&short(4)).trace_hash);
}

#[test]
fn t10_short_seeds_pass() {
    for seed in 1..=4 {
        let r = run_seed(&short(seed));
        assert_eq!(r.valid, Validity::Valid, "{}", r.summary());
    }
}

#[test]
fn t10_commit_wait_off_is_caught() {
    let caught = (1..=10).find(|&seed| {
        let r = run_seed(&RunOptions { mutation: Some(Mutation::NoCommitWait), ..short(seed) });
        r.valid == Validity::Invalid
    });
    assert!(caught.is_some(), "no seed of 1..=10 caught commit wait switched off");
}
