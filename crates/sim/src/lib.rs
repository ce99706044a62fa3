//! boundkv's deterministic simulator (see `docs/architecture/testing.md`).

// A seed replays exactly only if tokio's own random choices are seeded too
// (`runtime::Builder::rng_seed`), which needs this cfg: `.cargo/config.toml` sets it, and a
// `RUSTFLAGS` in the environment replaces that setting.
#[cfg(all(not(tokio_unstable), not(doc)))]
compile_error!(
    "boundkv-sim needs `--cfg tokio_unstable` (set in .cargo/config.toml; a RUSTFLAGS variable overrides it: add `--cfg tokio_unstable` to it)"
);

pub mod cluster;
pub mod disk;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod scenario;
pub mod script;
pub mod time;
pub mod trace;
pub mod workload;

pub use disk::{DiskStats, SimDisk};
pub use net::{NetFaults, NetStats, SimNet};
pub use time::SimTime;
pub use trace::Trace;
