//! Which store a key-value command talks to.
//!
//! 1. `--cluster HOST:PORT,...` (or `BOUNDKV_CLUSTER`): a running cluster, through the client;
//! 2. else `--data DIR` (or `BOUNDKV_DATA`): an embedded database in DIR;
//! 3. else the local cluster a running `boundkv up` recorded (see [`crate::local`]);
//! 4. else an error that explains all three.

use std::time::Duration;

use anyhow::{Context, anyhow};
use boundkv::Db;
use boundkv_client::{Client, ClientOptions};
use clap::Args;

use crate::clock_args::ClockArgs;
use crate::data_args::DataArgs;

/// `--cluster`: the cluster the key-value commands talk to.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// A running cluster's client addresses (any one that answers is enough), comma-separated:
    /// `127.0.0.1:7001,127.0.0.1:7002`. Without it (and without --data), the commands use the
    /// local cluster `boundkv up` runs.
    #[arg(
        long,
        global = true,
        env = "BOUNDKV_CLUSTER",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    pub(crate) cluster: Option<Vec<String>>,
}

/// A store chosen by the rules in the module docs.
pub(crate) enum Target {
    /// An embedded database.
    Embedded(Db),
    /// A cluster.
    Cluster(Cluster),
}

/// A connected client with a runtime to drive it.
pub(crate) struct Cluster {
    runtime: tokio::runtime::Runtime,
    pub(crate) client: Client,
}

impl Cluster {
    /// Connects to the cluster at `addresses`.
    pub(crate) fn connect(addresses: Vec<String>) -> anyhow::Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let options =
            ClientOptions { connect_timeout: Duration::from_secs(2), ..ClientOptions::default() };
        let client = runtime
            .block_on(Client::connect_with(addresses.clone(), options))
            .with_context(|| format!("connecting to the cluster at {}", addresses.join(",")))?;
        Ok(Cluster { runtime, client })
    }

    /// Runs a future on the client's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }
}

impl Target {
    /// Chooses (see the module docs).
    pub(crate) fn choose(
        cluster: &ClusterArgs,
        data: &DataArgs,
        clock: &ClockArgs,
    ) -> anyhow::Result<Target> {
        if let Some(addresses) = &cluster.cluster {
            return Ok(Target::Cluster(Cluster::connect(addresses.clone())?));
        }
        if data.data.is_some() {
            return Ok(Target::Embedded(data.open(clock)?));
        }
        if let Some(local) = crate::local::running() {
            return Ok(Target::Cluster(Cluster::connect(local.client_addresses())?));
        }
        Err(anyhow!(
            "no database and no cluster given. Either\n\
             \x20 - pass --data DIR (or set BOUNDKV_DATA) to use an embedded database in DIR \
             (created if missing), or\n\
             \x20 - pass --cluster HOST:PORT[,HOST:PORT...] (or set BOUNDKV_CLUSTER) to use a \
             running cluster, or\n\
             \x20 - start a local cluster with `boundkv up` in another \
             terminal; the commands then find it by themselves."
        ))
    }

    /// Only a cluster will do (membership commands).
    pub(crate) fn cluster_only(
        cluster: &ClusterArgs,
        data: &DataArgs,
        what: &str,
    ) -> anyhow::Result<Cluster> {
        if let Some(addresses) = &cluster.cluster {
            return Cluster::connect(addresses.clone());
        }
        if data.data.is_some() {
            return Err(anyhow!(
                "`{what}` works on a cluster; an embedded database has no members"
            ));
        }
        if let Some(local) = crate::local::running() {
            return Cluster::connect(local.client_addresses());
        }
        Err(anyhow!(
            "no cluster given: pass --cluster HOST:PORT[,...] (or set BOUNDKV_CLUSTER), or start a \
             local cluster with `boundkv up`"
        ))
    }
}

/// What a commit reports, from either kind of store.
pub(crate) struct Committed {
    pub(crate) ts: boundkv::Timestamp,
    pub(crate) latency: Duration,
    pub(crate) commit_wait: Duration,
    pub(crate) durable: Duration,
    pub(crate) wait_beyond_durable: Duration,
    /// Whether `durable` is a replication (cluster) or a local write.
    pub(crate) replicated: bool,
}

impl Committed {
    pub(crate) fn local(i: &boundkv::CommitInfo) -> Self {
        Committed {
            ts: i.ts,
            latency: i.latency,
            commit_wait: i.commit_wait,
            durable: i.durable,
            wait_beyond_durable: i.wait_beyond_durable,
            replicated: false,
        }
    }

    pub(crate) fn remote(i: &boundkv_client::CommitInfo) -> Self {
        Committed {
            ts: boundkv::Timestamp::from_nanos(i.ts.as_nanos()),
            latency: i.latency,
            commit_wait: i.commit_wait,
            durable: i.durable,
            wait_beyond_durable: i.wait_beyond_durable,
            replicated: true,
        }
    }
}
