//! The suite's network where network namespaces are not available (no root, or no `ip`/`nft`):
//! every node's Raft traffic passes through a proxy on 127.0.0.1 that the runner controls, and a
//! partition is the proxy dropping the frames of the links it cuts.
//!
//! Each node listens for peers on a port of its own (`--listen-peer`) and *advertises* the
//! proxy's port for it instead (`--advertise-peer`, and its entry in `--initial-cluster`), so
//! every other node dials the proxy to reach it:
//!
//! ```text
//!   node 1 ──dials──▶ proxy :A2 ──▶ node 2's --listen-peer :R2
//!   node 3 ──dials──▶ proxy :A2 ──┘        (one listener per destination node)
//! ```
//!
//! A listener knows the destination of its connections, and the source is in the first frame
//! of every connection: the peer protocol's `Hello { from, to, .. }`, which the proxy decodes
//! with the server's own [`decode_frame`] and forwards unchanged. From then on the proxy forwards
//! whole frames (4-byte big-endian length, then the payload; see `boundkv_server::peer`), one at
//! a time, so it can drop any one of them and the stream stays well framed.
//!
//! ## Partitions
//!
//! A partition is a set of blocked pairs, as for [`super::net::Netns`]: while `(a, b)` is
//! blocked, every frame from a to b and from b to a is read and discarded; when healed, frames
//! flow again on the same connections. That is message loss, which Raft must survive anyway;
//! a real partition (the namespaces' nftables drop) looks to TCP like delay until its
//! retransmissions give up, and both must be safe. Client traffic never passes the proxy, as it
//! is never cut in the namespaces either. A node dialling a dead node's proxy port is
//! accepted and then hung up on when the proxy cannot reach the node, which the node's
//! transport treats like a refused connection.
//!
//! ## Latency
//!
//! This kernel has no `netem`, so added latency comes from here: with [`PeerProxy::set_delay`]
//! every frame is held that long before it is forwarded (in order, per connection). The
//! `slow-net` nemesis uses it.
//!
//! The proxy runs on a runtime of its own (two worker threads), so a busy workload cannot stall
//! it, and it can be started from synchronous code. Only 127.0.0.1 is ever addressed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use boundkv_server::peer::{LENGTH_PREFIX_LEN, PeerFrame, decode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The largest frame the proxy forwards (the server's own limit is far lower).
const MAX_FRAME: usize = 64 << 20;

/// Frames held per connection before the proxy stops reading from it (while delaying).
const DELAY_QUEUE: usize = 4096;

/// What the proxy's connections share.
#[derive(Default)]
struct ProxyState {
    blocked: RwLock<BTreeSet<(u64, u64)>>,
    delay_micros: AtomicU64,
    forwarded: AtomicU64,
    dropped: AtomicU64,
}

impl ProxyState {
    fn is_blocked(&self, from: u64, to: u64) -> bool {
        let blocked = self.blocked.read().unwrap_or_else(|e| e.into_inner());
        blocked.contains(&(from, to)) || blocked.contains(&(to, from))
    }

    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }
}

/// The proxy of one run (see the module docs). Stops when dropped.
pub struct PeerProxy {
    runtime: Option<tokio::runtime::Runtime>,
    state: Arc<ProxyState>,
    /// Per node: (the address the others dial, the address the node listens on).
    addresses: BTreeMap<u64, (SocketAddr, SocketAddr)>,
}

impl PeerProxy {
    /// Starts one listener on 127.0.0.1 per node in `nodes`, each forwarding to a free port
    /// that the node is to listen on ([`PeerProxy::listen_address`]).
    pub fn start(nodes: &[u64]) -> anyhow::Result<PeerProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("jepsen-proxy")
            .enable_all()
            .build()
            .context("starting the proxy's runtime")?;
        let state = Arc::new(ProxyState::default());
        let mut addresses = BTreeMap::new();
        for &id in nodes {
            // Bound here, not with `block_on`: this may be called from async code.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .context("binding a proxy port on 127.0.0.1")?;
            listener.set_nonblocking(true)?;
            let advertised = listener.local_addr()?;
            let target: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse()?;
            addresses.insert(id, (advertised, target));
            runtime.spawn(accept(listener, id, target, state.clone()));
        }
        Ok(PeerProxy { runtime: Some(runtime), state, addresses })
    }

    /// The address the other nodes dial to reach node `id` (the proxy's), if it is proxied.
    pub fn advertised_address(&self, id: u64) -> Option<SocketAddr> {
        self.addresses.get(&id).map(|a| a.0)
    }

    /// The address node `id` listens on for peers, if it is proxied.
    pub fn listen_address(&self, id: u64) -> Option<SocketAddr> {
        self.addresses.get(&id).map(|a| a.1)
    }

    /// Cuts the links between every pair in `blocked` (both directions), replacing any earlier
    /// partition.
    pub fn partition(&self, blocked: &BTreeSet<(u64, u64)>) {
        *self.state.blocked.write().unwrap_or_else(|e| e.into_inner()) = blocked.clone();
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.state.blocked.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Holds every frame `delay` before forwarding it (zero: forward at once).
    pub fn set_delay(&self, delay: Duration) {
        self.state.delay_micros.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Frames forwarded and frames dropped by partitions, so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.state.forwarded.load(Ordering::Relaxed), self.state.dropped.load(Ordering::Relaxed))
    }
}

impl Drop for PeerProxy {
    fn drop(&mut self) {
        // `shutdown_background`: dropping a runtime blocks, which is refused in async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    to: u64,
    target: SocketAddr,
    state: Arc<ProxyState>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("proxy for n{to}: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, to, target, state.clone()));
            }
            Err(e) => {
                tracing::debug!("proxy for n{to}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads one whole frame, length prefix included; `None` at a clean end of stream.
async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut prefix = [0u8; LENGTH_PREFIX_LEN];
    match r.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("a {len}-byte frame")));
    }
    let mut frame = vec![0u8; LENGTH_PREFIX_LEN + len];
    frame[..LENGTH_PREFIX_LEN].copy_from_slice(&prefix);
    r.read_exact(&mut frame[LENGTH_PREFIX_LEN..]).await?;
    Ok(Some(frame))
}

/// Proxies one connection to node `to`: learns the sender from its `Hello`, then forwards or
/// drops frame by frame until either side closes.
async fn connection(inbound: TcpStream, to: u64, target: SocketAddr, state: Arc<ProxyState>) {
    let _ = inbound.set_nodelay(true);
    let (mut from_sender, mut to_sender) = inbound.into_split();
    let Ok(Some(hello)) = read_frame(&mut from_sender).await else { return };
    // Not a Hello: the node refuses it itself; forward it so it can say why (never blocked).
    let from = match decode_frame(&hello[LENGTH_PREFIX_LEN..]) {
        Ok(PeerFrame::Hello { from, .. }) => from,
        _ => 0,
    };
    let Ok(outbound) = TcpStream::connect(target).await else { return };
    let _ = outbound.set_nodelay(true);
    let (mut from_node, mut to_node) = outbound.into_split();
    if to_node.write_all(&hello).await.is_err() {
        return;
    }
    // The writer: frames with the instant they may go, in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE);
    let held = state.clone();
    let writer = async move {
        while let Some((at, frame)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            // A partition that began while the frame was held cuts it too.
            if from != 0 && held.is_blocked(from, to) {
                held.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if to_node.write_all(&frame).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        while let Ok(Some(frame)) = read_frame(&mut from_sender).await {
            if from != 0 && state.is_blocked(from, to) {
                state.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            state.forwarded.fetch_add(1, Ordering::Relaxed);
            if tx.send((Instant::now() + state.delay(), frame)).await.is_err() {
                return;
            }
        }
    };
    // The node never writes on an inbound peer connection; whatever it might is passed back.
    let back = tokio::io::copy(&mut from_node, &mut to_sender);
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
        _ = back => {}
    }
}
