//! The drift experiment of the Berkeley study (Gusella and Zatti's TEMPO), in boundkv: every
//! node's oscillator drifts at its own random rate within `±ρ`, and a time service (the runner,
//! through the nodes' ClockBound segments) corrects every clock every `R` seconds. Between
//! corrections two clocks drift apart at most `2ρ` per second, so no two clocks are ever more
//! than `2ρR` apart; the study measured the worst offset its master saw against that
//! theoretical maximum.
//!
//! Here the peer clock checks play the master: every member measures every other member's
//! clock (Cristian's method, see `boundkv_consensus::clock_check`), and the runner asks every
//! node for what it measured (`status`) every 200 ms. It also knows the truth: it sets every
//! clock's error itself (see [`super::clock`], [`ClockMode::Oscillators`]) and samples it every
//! 10 ms. The report has three numbers per run:
//!
//! | | what | must be |
//! |---|---|---|
//! | theoretical | `2ρR`, with `R` the longest time any clock actually drifted between corrections | |
//! | true worst | the largest `\|e_i − e_j\|` the runner sampled | ≤ theoretical (the experiment is set up right) |
//! | measured worst | the largest `\|offset\|` any member measured | ≤ theoretical + that measurement's uncertainty (Cristian's bound: half the round trip plus both clocks' bounds) |
//!
//! The segments tell the truth throughout: each advertises `max_drift = ρ` and a bound that
//! grows from 50 µs at `ρ` since the node's last correction, as a daemon's does. A correction
//! slews the error to zero over `min(100 ms, R / 10)` (every clock of the node together, never a
//! step), then the bound starts again from 50 µs. So every interval holds true time, no member
//! should be fenced, and the history must stay valid.
//!
//! [`ClockMode::Oscillators`]: super::clock::ClockMode::Oscillators

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundkv_client::Client;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::clock::{Clocks, HEALTHY_BOUND};

/// What the experiment is asked to do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftExperiment {
    /// The largest drift rate, parts per million.
    pub rho_ppm: u32,
    /// How often the time service corrects every clock.
    pub every: Duration,
}

impl std::str::FromStr for DriftExperiment {
    type Err = String;

    /// `RHO_PPM:R_SECONDS`, e.g. `200:2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (rho, every) = s.split_once(':').ok_or("expected RHO_PPM:R_SECONDS, e.g. 200:2")?;
        let rho_ppm: u32 = rho.trim_end_matches("ppm").parse().map_err(|e| format!("ρ: {e}"))?;
        let every: f64 = every.trim_end_matches('s').parse().map_err(|e| format!("R: {e}"))?;
        if !(1..=100_000).contains(&rho_ppm) || !(0.1..=600.0).contains(&every) {
            return Err("ρ must be 1–100,000 ppm and R 0.1–600 s".into());
        }
        Ok(DriftExperiment { rho_ppm, every: Duration::from_secs_f64(every) })
    }
}

/// One measurement a member made of another's clock, as the worst of its kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WorstMeasurement {
    /// The measuring member.
    pub by: u64,
    /// The measured member.
    pub of: u64,
    /// The measured offset, microseconds.
    pub offset_us: f64,
    /// The measurement's uncertainty (half the round trip plus both bounds), microseconds.
    pub uncertainty_us: f64,
    /// Half the probe's round trip: how far the estimate can be from the true offset,
    /// microseconds.
    pub half_rtt_us: f64,
    /// The true offset when the peer answered (the runner's own record of every clock's error,
    /// sampled every 10 ms, at the answer's arrival less half the round trip), microseconds.
    pub true_offset_us: f64,
}

/// What the experiment found (in `results.json` as `drift_experiment`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DriftReport {
    /// ρ, ppm.
    pub rho_ppm: u32,
    /// R, seconds.
    pub correct_every_s: f64,
    /// Each node's drift rate, ppm.
    pub rates_ppm: BTreeMap<String, f64>,
    /// Corrections made.
    pub corrections: u64,
    /// The longest time a clock drifted between two corrections (R, plus the runner's own
    /// delays: a correction waits for a status poll in progress), seconds.
    pub longest_period_s: f64,
    /// `2ρ` times that longest period, microseconds.
    pub theoretical_us: f64,
    /// The largest true offset between two clocks the runner sampled, microseconds.
    pub true_worst_us: f64,
    /// The largest offset a member measured with a round trip of at most 1 ms (the study's
    /// master, like Cristian's method, keeps its most precise probes).
    pub measured_worst: WorstMeasurement,
    /// The largest offset a member measured at all, however long the round trip.
    pub measured_worst_any: WorstMeasurement,
    /// Measurements collected (member × peer × poll).
    pub measurements: u64,
    /// Whether the true worst is within the theory, and the measured worst within the theory
    /// plus its measurement's uncertainty.
    pub within_theory: bool,
}

/// Runs the experiment until `deadline` over `ids`, then leaves every clock true.
pub async fn run(
    exp: DriftExperiment,
    clocks: Arc<Clocks>,
    admin: Client,
    ids: Vec<u64>,
    seed: u64,
    deadline: Instant,
) -> anyhow::Result<DriftReport> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6472696674);
    let rho_ppb = i64::from(exp.rho_ppm) * 1_000;
    let rates: BTreeMap<u64, i64> =
        ids.iter().map(|&id| (id, rng.random_range(-rho_ppb..=rho_ppb))).collect();
    let mut report = DriftReport {
        rho_ppm: exp.rho_ppm,
        correct_every_s: exp.every.as_secs_f64(),
        rates_ppm: rates.iter().map(|(id, r)| (format!("n{id}"), *r as f64 / 1e3)).collect(),
        ..DriftReport::default()
    };
    let slew = Duration::from_millis(100).min(exp.every / 10);
    let mut synced = Instant::now();
    let mut longest = Duration::ZERO;
    // Every clock's true error, sampled each turn of the loop, for the last 2 s.
    let mut history: VecDeque<(Instant, BTreeMap<u64, i64>)> = VecDeque::new();
    let start_drifting = |clocks: &Clocks| -> anyhow::Result<()> {
        let now = Instant::now();
        for (&id, &rate) in &rates {
            clocks.update(id, |s| {
                s.bound = HEALTHY_BOUND;
                s.max_drift_ppb = exp.rho_ppm * 1_000;
                s.synced_at = Some(now);
            })?;
            clocks.set_drift(id, rate)?;
        }
        Ok(())
    };
    start_drifting(&clocks)?;
    let mut next_correction = Instant::now() + exp.every;
    let mut next_poll = Instant::now();
    while Instant::now() < deadline {
        let errors: Vec<i64> = ids.iter().map(|&id| clocks.error_nanos(id)).collect();
        history
            .push_back((Instant::now(), ids.iter().copied().zip(errors.iter().copied()).collect()));
        while history.front().is_some_and(|(at, _)| at.elapsed() > Duration::from_secs(2)) {
            history.pop_front();
        }
        let spread =
            errors.iter().max().copied().unwrap_or(0) - errors.iter().min().copied().unwrap_or(0);
        report.true_worst_us = report.true_worst_us.max(spread as f64 / 1e3);
        if Instant::now() >= next_correction {
            // The clocks drifted from `synced` until the slew ends.
            longest = longest.max(synced.elapsed() + slew);
            clocks.slew_back(&ids, slew).await?;
            start_drifting(&clocks)?;
            synced = Instant::now();
            report.corrections += 1;
            next_correction = Instant::now() + exp.every;
        }
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_millis(200);
            poll(&admin, &ids, &history, &mut report).await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    longest = longest.max(synced.elapsed() + slew);
    clocks.slew_back(&ids, slew).await?;
    report.longest_period_s = longest.as_secs_f64();
    report.theoretical_us = 2.0 * f64::from(exp.rho_ppm) * longest.as_secs_f64();
    let m = &report.measured_worst;
    report.within_theory = report.true_worst_us <= report.theoretical_us
        && m.offset_us.abs() <= report.theoretical_us + m.half_rtt_us;
    Ok(report)
}

/// The true offset of `of`'s clock from `by`'s `ago` before now, from the runner's samples
/// (the nearest one), microseconds.
fn true_offset(
    history: &VecDeque<(Instant, BTreeMap<u64, i64>)>,
    ago: Duration,
    by: u64,
    of: u64,
) -> f64 {
    let Some(when) = Instant::now().checked_sub(ago) else { return f64::NAN };
    let nearest =
        history.iter().min_by_key(|(at, _)| if *at > when { *at - when } else { when - *at });
    nearest.map_or(f64::NAN, |(_, e)| {
        (e.get(&of).copied().unwrap_or(0) - e.get(&by).copied().unwrap_or(0)) as f64 / 1e3
    })
}

/// Asks every node what it last measured of the others.
async fn poll(
    admin: &Client,
    ids: &[u64],
    history: &VecDeque<(Instant, BTreeMap<u64, i64>)>,
    report: &mut DriftReport,
) {
    for &by in ids {
        let Ok(Ok(status)) =
            tokio::time::timeout(Duration::from_millis(500), admin.status_of(by)).await
        else {
            continue;
        };
        for p in status.clock.peers {
            // Answers older than a probe round measured an earlier moment.
            if p.age > Duration::from_millis(500) {
                continue;
            }
            report.measurements += 1;
            let uncertainty_us = p.uncertainty.as_secs_f64() * 1e6;
            let m = WorstMeasurement {
                by,
                of: p.id,
                offset_us: p.offset_nanos as f64 / 1e3,
                uncertainty_us,
                half_rtt_us: p.round_trip.as_secs_f64() * 1e6 / 2.0,
                true_offset_us: true_offset(history, p.age + p.round_trip / 2, by, p.id),
            };
            if m.offset_us.abs() > report.measured_worst_any.offset_us.abs() {
                report.measured_worst_any = m.clone();
            }
            if m.half_rtt_us <= 500.0 && m.offset_us.abs() > report.measured_worst.offset_us.abs() {
                report.measured_worst = m;
            }
        }
    }
}
