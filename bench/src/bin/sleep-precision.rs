//! How late does each way of sleeping wake up, and what does that cost a commit wait?
//!
//! ```text
//! cargo run --release -p boundkv-bench --bin sleep-precision [-- --samples 1000]
//! ```
//!
//! Part 1 sleeps for 50 µs, 200 µs and 1 ms with `std::thread::sleep`, `tokio::time::sleep` and
//! boundkv's precise timer, and reports the overshoot (actual minus requested).
//!
//! Part 2 runs commit waits on the system clock with bounds of 25 µs, 100 µs and 500 µs. A commit
//! wait for `s = latest` can end no earlier than the instant `earliest` passes `s`; the overshoot
//! is how long after that instant the waiter got control back. It compares boundkv's wait (precise
//! timer, no spinning) with the same loop plus a final phase that re-reads the clock instead of
//! sleeping through the last 20 µs, and with a loop on `tokio::time::sleep`; it reports the CPU
//! time each blocking wait used. The spin variant is kept here, not in the library, because it did
//! not measurably help: this table is how to check that again.

use std::time::{Duration, Instant};

use boundkv_bench::percentile;
use boundkv_clockbound::wait::{precise_sleep, precise_sleep_blocking};
use boundkv_clockbound::{
    Clock, ClockPolicy, SystemClock, Timestamp, wait_until_after, wait_until_after_blocking,
};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Samples per row (each is one sleep or one commit wait).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec and clock id.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn realtime() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

fn row(name: &str, target: &str, mut overshoot: Vec<Duration>, cpu: Option<Duration>) {
    overshoot.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let cpu = cpu.map_or("-".to_string(), |c| format!("{:.1}", us(c)));
    println!(
        "{name:<34} {target:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {cpu:>9}",
        us(percentile(&overshoot, 50.0)),
        us(percentile(&overshoot, 90.0)),
        us(percentile(&overshoot, 99.0)),
        us(*overshoot.last().unwrap_or(&Duration::ZERO)),
    );
}

fn header(first: &str) {
    println!(
        "\n{first:<34} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "target", "p50 µs", "p90 µs", "p99 µs", "max µs", "cpu µs"
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.samples;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    header("sleep overshoot");
    for d in [Duration::from_micros(50), Duration::from_micros(200), Duration::from_millis(1)] {
        let label = format!("{}µs", d.as_micros());
        let measure = |f: &dyn Fn()| -> Vec<Duration> {
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().saturating_sub(d)
                })
                .collect()
        };
        row("std::thread::sleep", &label, measure(&|| std::thread::sleep(d)), None);
        row("boundkv precise_sleep_blocking", &label, measure(&|| precise_sleep_blocking(d)), None);
        let tokio_sleep = rt.block_on(async {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                tokio::time::sleep(d).await;
                v.push(t.elapsed().saturating_sub(d));
            }
            v
        });
        row("tokio::time::sleep", &label, tokio_sleep, None);
        let precise_async = rt.block_on(async {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                precise_sleep(d).await;
                v.push(t.elapsed().saturating_sub(d));
            }
            v
        });
        row("boundkv precise_sleep (async)", &label, precise_async, None);
    }

    header("commit wait overshoot");
    let policy = ClockPolicy::default();
    for bound in [Duration::from_micros(25), Duration::from_micros(100), Duration::from_micros(500)]
    {
        let clock = SystemClock::new(bound);
        let label = format!("ε={}µs", bound.as_micros());
        // The earliest instant a wait for s can end: when CLOCK_REALTIME passes s + bound.
        let passed_at = |s: Timestamp| s.saturating_add(bound);
        let run_blocking = |wait: &dyn Fn(Timestamp)| {
            let mut over = Vec::with_capacity(n);
            let cpu0 = thread_cpu();
            for _ in 0..n {
                let s = clock.now().unwrap().latest();
                wait(s);
                over.push(realtime().saturating_duration_since(passed_at(s)));
            }
            (over, (thread_cpu() - cpu0) / n as u32)
        };
        let (o, cpu) = run_blocking(&|s| {
            wait_until_after_blocking(&clock, s, &policy).unwrap();
        });
        row("boundkv wait (blocking)", &label, o, Some(cpu));
        let (o, cpu) = run_blocking(&|s| loop {
            let r = clock.now().unwrap();
            if r.after(s) {
                break;
            }
            let gap = s.saturating_duration_since(r.earliest()) + Duration::from_nanos(1);
            if gap < Duration::from_micros(20) {
                std::hint::spin_loop();
            } else {
                precise_sleep_blocking(gap);
            }
        });
        row("precise timer + final 20µs spin", &label, o, Some(cpu));
        let asynchronous = rt.block_on(async {
            let mut over = Vec::with_capacity(n);
            for _ in 0..n {
                let s = clock.now().unwrap().latest();
                wait_until_after(&clock, s, &policy).await.unwrap();
                over.push(realtime().saturating_duration_since(passed_at(s)));
            }
            over
        });
        row("boundkv wait (async)", &label, asynchronous, None);
        let tokio_loop = rt.block_on(async {
            let mut over = Vec::with_capacity(n);
            for _ in 0..n {
                let s = clock.now().unwrap().latest();
                loop {
                    let r = clock.now().unwrap();
                    if r.after(s) {
                        break;
                    }
                    tokio::time::sleep(
                        s.saturating_duration_since(r.earliest()) + Duration::from_nanos(1),
                    )
                    .await;
                }
                over.push(realtime().saturating_duration_since(passed_at(s)));
            }
            over
        });
        row("loop on tokio::time::sleep", &label, tokio_loop, None);
    }
    Ok(())
}
