//! boundkv's deterministic simulator (see `docs/architecture/testing.md`).

pub mod disk;
pub mod net;
pub mod script;
pub mod time;
pub mod trace;
pub mod workload;
