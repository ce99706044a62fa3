//! The cost of reading a clock: `now()` on boundkv's ClockBound reader, on the system-clock
//! fallback and on AWS's own client, against `clock_gettime(CLOCK_REALTIME)` itself.
//!
//! The target for the embedded reader is a median under 3× `clock_gettime`.
//! `cargo run -p boundkv-bench --bin clock-report` prints the ratios after a run.

use std::hint::black_box;
use std::time::Duration;

use boundkv_bench::LiveSegment;
use boundkv_clockbound::{Clock, ClockBoundClock, SystemClock};
use criterion::{Criterion, criterion_group, criterion_main};

fn clock_now(c: &mut Criterion) {
    let segment = LiveSegment::start(Duration::from_micros(20), 50_000).expect("segment");
    let boundkv = ClockBoundClock::open_path(&segment.path).expect("boundkv reader");
    let system = SystemClock::new(Duration::from_micros(500));
    let mut aws =
        clock_bound_client::ClockBoundClient::new_with_path(segment.path.to_str().unwrap())
            .expect("AWS client");

    let mut g = c.benchmark_group("now");
    g.bench_function("clock_gettime_realtime", |b| {
        b.iter(|| {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: a valid timespec and clock id.
            unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
            black_box(ts)
        })
    });
    g.bench_function("boundkv_clockbound", |b| b.iter(|| black_box(boundkv.now())));
    g.bench_function("aws_clock_bound_client", |b| b.iter(|| black_box(aws.now())));
    g.bench_function("boundkv_system", |b| b.iter(|| black_box(system.now())));
    g.finish();
}

criterion_group!(benches, clock_now);
criterion_main!(benches);
