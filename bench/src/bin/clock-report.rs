//! Prints the medians of the last `cargo bench -p boundkv-bench --bench clock` run and their ratio
//! to `clock_gettime(CLOCK_REALTIME)`, from criterion's `estimates.json` files.

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion/now");
    let median = |name: &str| -> anyhow::Result<f64> {
        let path = root.join(name).join("new/estimates.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{} (run `cargo bench -p boundkv-bench --bench clock` first)", path.display())
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v["median"]["point_estimate"].as_f64().context("no median in estimates.json")
    };
    let base = median("clock_gettime_realtime")?;
    println!("{:<28} {:>10} {:>8}", "now() of", "median ns", "ratio");
    for name in
        ["clock_gettime_realtime", "boundkv_clockbound", "aws_clock_bound_client", "boundkv_system"]
    {
        let m = median(name)?;
        println!("{name:<28} {m:>10.1} {:>7.2}x", m / base);
    }
    let ratio = median("boundkv_clockbound")? / base;
    println!(
        "\nboundkv's ClockBound reader: {ratio:.2}x clock_gettime (target: under 3x) -> {}",
        if ratio < 3.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
