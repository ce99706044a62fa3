//! `--data DIR`: which embedded database the key-value commands work on.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use boundkv::{Db, Options, Timestamp};
use clap::Args;

use crate::clock_args::ClockArgs;

/// Where the embedded database lives.
#[derive(Args, Debug, Clone)]
pub(crate) struct DataArgs {
    /// The embedded database's directory (created if missing). One process opens it at a time.
    #[arg(long, global = true, env = "BOUNDKV_DATA", value_name = "DIR")]
    pub(crate) data: Option<PathBuf>,
}

impl DataArgs {
    /// Opens the database named by `--data` with the clock named by `--clock`.
    pub(crate) fn open(&self, clock: &ClockArgs) -> anyhow::Result<Db> {
        let dir = self.data.as_ref().ok_or_else(|| {
            anyhow!(
                "no database given: pass --data DIR (or set BOUNDKV_DATA) to use an embedded \
                 database in DIR; it is created if it does not exist"
            )
        })?;
        open_at(dir, clock)
    }
}

/// Opens the embedded database in `dir` with the clock named by `--clock`.
pub(crate) fn open_at(dir: &std::path::Path, clock: &ClockArgs) -> anyhow::Result<Db> {
    let opened = clock.open()?;
    Db::open(dir, Options::with_clock_instance(opened.clock))
        .with_context(|| format!("opening the database in {}", dir.display()))
}

/// Parses `--at`: nanoseconds since the epoch, or an RFC 3339 time.
pub(crate) fn parse_timestamp(s: &str) -> Result<Timestamp, String> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Timestamp::from_nanos(n));
    }
    humantime::parse_rfc3339_weak(s).map(Timestamp::from_system_time).map_err(|e| {
        format!("{s:?} is neither nanoseconds since the epoch nor an RFC 3339 time: {e}")
    })
}
