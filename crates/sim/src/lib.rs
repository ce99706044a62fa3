//! boundkv's deterministic simulator (see `docs/architecture/testing.md`).

pub mod cluster;
pub mod disk;
pub mod nemesis;
pub mod net;
pub mod run;
pub mod script;
pub mod time;
pub mod trace;
pub mod workload;

pub use disk::{DiskStats, SimDisk};
pub use net::{NetFaults, NetStats, SimNet};
pub use time::SimTime;
pub use trace::Trace;
