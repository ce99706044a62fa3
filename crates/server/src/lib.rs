//! boundkv's networked server: a [`Replica`](boundkv_txn::replica::Replica) served to clients
//! over TCP, with the Raft peer transport, Prometheus metrics, configuration and graceful
//! shutdown.
//!
//! # A node
//!
//! ```text
//!            clients (boundkv_wire frames)                 peers (Raft messages)
//!                  │                                              │
//!   ┌──────────────▼──────────────┐                ┌──────────────▼──────────────┐
//!   │ service: one task per        │                │ peer: one inbound task per  │
//!   │ connection, one per request  │                │ connection; one outbound    │
//!   └──────────────┬──────────────┘                │ task + bounded queue per peer│
//!                  │                                └──────────────┬──────────────┘
//!   ┌──────────────▼──────────────────────────────────────────────▼──────────────┐
//!   │ Replica (boundkv-txn): transactions, commit wait, closed timestamps, the gate │
//!   │   Raft node (boundkv-consensus): one thread, RawNode, the Ready loop         │
//!   │   sled (boundkv-storage): the Raft log, the hard state and the MVCC data     │
//!   └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! [`Server::start`] opens the data directory, binds the client, peer and metrics listeners,
//! and starts the replica; [`Server::run_until_signal`] serves until SIGTERM or Ctrl-C, then shuts
//! down gracefully: it stops accepting, lets the requests in flight finish (within a grace
//! period), persists the clock's exact floor and flushes the data.
//!
//! The protocol is `boundkv_wire`'s; [`convert`] is the one place where wire types become
//! replica types and back. Errors a client should act on (not the leader, a conflict, an
//! unavailable clock) are answered as typed [`boundkv_wire::WireError`]s; a storage failure stops
//! the node from serving and is answered as `Fatal`.

mod clock;
pub mod config;
pub mod convert;
pub mod metrics;
pub mod peer;
mod server;
mod service;
mod status;

pub use config::{ServerConfig, format_members, parse_member, parse_members};
pub use server::{Server, StartError};
