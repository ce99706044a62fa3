//! [`Server`]: a running node, from opening its data directory to a graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use boundkv_storage::{SledEngine, SledOptions};
use boundkv_txn::replica::Replica;

use crate::clock::ClockWatch;
use crate::config::{ServerConfig, check_identity};
use crate::metrics::{Metrics, serve_metrics};
use crate::peer::{PeerOptions, PeerTransport, serve_peers};
use crate::service::Service;

/// The peer address this node gives others: the one it was told to advertise, else its own
/// entry in the initial cluster, else the bound peer address.
fn advertised_peer(config: &ServerConfig, bound: SocketAddr) -> String {
    if let Some(address) = &config.advertise_peer {
        return address.clone();
    }
    config
        .initial_cluster
        .iter()
        .find(|m| m.id == config.id)
        .map(|m| m.peer_address.clone())
        .unwrap_or_else(|| bound.to_string())
}

/// The most client connections served at once.
const MAX_CONNECTIONS: usize = 4096;

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory belongs to another node, or cannot be used.
    #[error(transparent)]
    Identity(#[from] crate::config::IdentityError),
    /// The database cannot be opened (in use by another process, unreadable, ...).
    #[error("cannot open the database: {0}")]
    Storage(#[from] boundkv_storage::Error),
    /// An address cannot be bound.
    #[error("cannot listen on {what} address {addr}: {error}")]
    Listen {
        /// Which (client, peer, metrics).
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        error: std::io::Error,
    },
    /// The replica could not start.
    #[error("cannot start the replica: {0}")]
    Replica(#[from] boundkv_txn::Error),
    /// The settings are inconsistent.
    #[error("{0}")]
    Config(String),
    /// The settings leave the replica no usable lease ([`ServerConfig::validate`]).
    #[error(transparent)]
    Options(#[from] boundkv_txn::replica::ReplicaOptionsError),
}

/// A running node.
pub struct Server {
    config: ServerConfig,
    replica: Arc<Replica<SledEngine>>,
    peers: Arc<PeerTransport>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    connections: Arc<Semaphore>,
    tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Opens the data directory, binds the listeners, and starts the node. Must run inside a
    /// multi-threaded tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, StartError> {
        let id = config.id;
        if id == 0 {
            return Err(StartError::Config("the node id must not be 0".into()));
        }
        config.validate()?;
        if !config.initial_cluster.is_empty() && !config.initial_cluster.iter().any(|m| m.id == id)
        {
            return Err(StartError::Config(format!(
                "node {id} is not in the initial cluster it was given"
            )));
        }
        check_identity(&config.data_dir, &config.cluster, id)?;
        let engine = Arc::new(SledEngine::open(
            config.data_dir.join("db"),
            SledOptions { durability: config.durability, ..SledOptions::default() },
        )?);
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|error| StartError::Listen { what, addr, error })
        };
        let client_listener = bind("client", config.client_listen).await?;
        let peer_listener = bind("peer", config.peer_listen).await?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(bind("metrics", addr).await?),
            None => None,
        };
        let local = |l: &TcpListener| l.local_addr().expect("a bound listener has an address");
        let (client_addr, peer_addr) = (local(&client_listener), local(&peer_listener));
        let metrics_addr = metrics_listener.as_ref().map(local);

        let span = tracing::info_span!("node", id);
        let (shutdown, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let peer_options = PeerOptions {
            advertise: Some(advertised_peer(&config, peer_addr)),
            ..PeerOptions::default()
        };
        let peers = PeerTransport::new(
            id,
            config.cluster.clone(),
            peer_options.clone(),
            tokio::runtime::Handle::current(),
        );
        let options = config.replica_options();
        let replica = {
            let _entered = span.enter();
            Replica::start(options, engine, config.clock.clone(), peers.clone())?
        };
        // Inbound peer traffic goes to the replica, so it is served once the replica exists. The
        // listener was bound above: peers that connect meanwhile wait in its backlog.
        tasks.push(tokio::spawn(
            serve_peers(
                peer_listener,
                id,
                config.cluster.clone(),
                peer_options,
                replica.deliverer(),
                Some(peers.clone()),
                shutdown.subscribe(),
            )
            .instrument(span.clone()),
        ));
        Self::sync_address_book(&replica, &peers);
        tasks.push(tokio::spawn(
            Self::keep_address_book(replica.clone(), peers.clone(), shutdown.subscribe())
                .instrument(span.clone()),
        ));
        let clock = ClockWatch::start(replica.clone(), shutdown.subscribe());
        let metrics = Metrics::new();
        let service = Arc::new(Service {
            replica: replica.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            max_request_frame: config.max_request_frame,
            max_in_flight: config.max_in_flight_per_connection,
        });
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tasks.push(tokio::spawn(
            service
                .serve(client_listener, shutdown.subscribe(), connections.clone())
                .instrument(span.clone()),
        ));
        if let Some(listener) = metrics_listener {
            tasks.push(tokio::spawn(
                serve_metrics(
                    listener,
                    metrics,
                    replica.clone(),
                    peers.clone(),
                    clock,
                    shutdown.subscribe(),
                )
                .instrument(span.clone()),
            ));
        }
        tracing::info!(
            node = id,
            client = %client_addr,
            peer = %peer_addr,
            metrics = ?metrics_addr,
            clock = %config.clock.describe(),
            data = %config.data_dir.display(),
            "boundkv node serving"
        );
        if config.unsafe_skip_commit_wait {
            tracing::error!(
                node = id,
                "UNSAFE: this node acknowledges commits without commit wait"
            );
        }
        Ok(Server {
            config,
            replica,
            peers,
            client_addr,
            peer_addr,
            metrics_addr,
            shutdown,
            connections,
            tasks,
        })
    }

    /// Where clients connect (the bound address: a configured port 0 is resolved).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// Where peers connect.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// Where metrics are served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The replica.
    pub fn replica(&self) -> &Arc<Replica<SledEngine>> {
        &self.replica
    }

    fn sync_address_book(replica: &Replica<SledEngine>, peers: &PeerTransport) {
        let id = replica.id();
        let book: Vec<(u64, String)> = replica
            .shared()
            .members()
            .into_values()
            .filter(|m| m.id != id)
            .map(|m| (m.id, m.peer_address))
            .collect();
        peers.set_peers(book);
    }

    /// Keeps the transport's address book equal to the replicated membership.
    async fn keep_address_book(
        replica: Arc<Replica<SledEngine>>,
        peers: Arc<PeerTransport>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut last = replica.shared().members();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let now = replica.shared().members();
            if now != last {
                tracing::info!(members = ?now.keys().collect::<Vec<_>>(), "membership changed; updating the peer address book");
                Self::sync_address_book(&replica, &peers);
                last = now;
            }
        }
    }

    /// Waits for SIGTERM or SIGINT (Ctrl-C), then shuts down gracefully.
    pub async fn run_until_signal(self) {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!(node = self.config.id, "SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!(node = self.config.id, "SIGINT: shutting down"),
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets requests in flight finish (at most `shutdown_grace`), then stops
    /// the node: the clock's exact floor is persisted and the data flushed.
    pub async fn shutdown(self) {
        let id = self.config.id;
        self.shutdown.send_replace(true);
        let drained = tokio::time::timeout(
            self.config.shutdown_grace,
            self.connections.acquire_many(MAX_CONNECTIONS as u32),
        )
        .await;
        if drained.is_err() {
            tracing::warn!(
                node = id,
                "requests still in flight after the grace period; stopping anyway"
            );
        }
        let replica = self.replica.clone();
        let _ = tokio::task::spawn_blocking(move || replica.shutdown()).await;
        self.peers.shutdown();
        for t in self.tasks {
            t.abort();
        }
        tracing::info!(node = id, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use boundkv_clockbound::SystemClock;

    use super::*;
    use crate::parse_members;

    #[test]
    fn the_advertised_peer_address_is_the_flag_then_the_initial_cluster_then_the_bound_one() {
        let bound: SocketAddr = "127.0.0.1:7101".parse().unwrap();
        let clock = Arc::new(SystemClock::new(Duration::from_millis(1)));
        let mut config =
            ServerConfig::new(2, "127.0.0.1:7001".parse().unwrap(), bound, "/nonexistent", clock);
        assert_eq!(advertised_peer(&config, bound), "127.0.0.1:7101");
        config.initial_cluster =
            parse_members("1=a:1/a:2,2=b.example:7102/b.example:7002").unwrap();
        assert_eq!(advertised_peer(&config, bound), "b.example:7102");
        config.advertise_peer = Some("proxy:9102".into());
        assert_eq!(advertised_peer(&config, bound), "proxy:9102");
    }
}
