//! How a [`Client`](crate::Client) talks to the cluster: its timeouts, deadlines, backoff, and
//! where it sends read-only transactions.
//!
//! Three clocks bound every call, from the innermost out:
//!
//! ```text
//!  connect_timeout   opening one TCP connection                                   2 s
//!  request_timeout   one request on one connection, until its answer              10 s
//!  retry_deadline    one operation, retries included (redirects, FollowerBehind,  10 s
//!                    unreachable nodes, Unavailable): then its last error
//!  commit_deadline   one commit, resends included: then Error::OutcomeUnknown     30 s
//!                    if a resend may have applied, else its last error
//! ```
//!
//! A single attempt's timeout is cut to what is left of its operation's deadline, so an
//! operation ends by its deadline (plus at most one connect timeout). Between attempts the
//! client sleeps a jittered, doubling backoff from `retry_backoff_min` to `retry_backoff_max`:
//! with the defaults 20 ms, 40 ms, 80 ms, ... up to 1 s, each drawn uniformly from its upper
//! half (10–20 ms, 20–40 ms, ...), so clients that failed together do not retry together.

use std::time::Duration;

/// Where a [`Client`](crate::Client) sends read-only transactions
/// ([`Client::read_only`](crate::Client::read_only) and friends, and so
/// [`Client::get`](crate::Client::get) and [`Client::scan`](crate::Client::scan)).
///
/// Read-write transactions always go to the leader. A read-only transaction's reads are exact
/// wherever they are served (they are at a fixed timestamp), so if its node fails or stays
/// behind, the client continues at another node, the leader first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadPreference {
    /// The leader, which never has to wait to catch up. The default.
    #[default]
    Leader,
    /// Every known node in turn (round-robin), to spread the load.
    Any,
    /// The node with this id, for example a nearby follower.
    Node(u64),
}

/// How a [`Client`](crate::Client) behaves; see the module docs for how the timeouts nest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long one request on one connection may take to be answered. Default 10 s.
    pub request_timeout: Duration,
    /// How long [`Transaction::commit`](crate::Transaction::commit) keeps resending a commit
    /// whose outcome it does not know before giving up with
    /// [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown). Default 30 s.
    pub commit_deadline: Duration,
    /// How long any other operation keeps retrying (redirects to the leader, nodes that are
    /// unreachable, behind, or unavailable) before giving up with its last error. Default 10 s.
    pub retry_deadline: Duration,
    /// How long opening a TCP connection may take. Default 2 s.
    pub connect_timeout: Duration,
    /// Where read-only transactions go. Default [`ReadPreference::Leader`].
    pub read_preference: ReadPreference,
    /// The first backoff between retries; it doubles up to `retry_backoff_max`, with jitter.
    /// Default 20 ms; at least 1 ms is used.
    pub retry_backoff_min: Duration,
    /// The longest backoff between retries. Default 1 s.
    pub retry_backoff_max: Duration,
    /// How many times [`Client::transaction`](crate::Client::transaction) runs a transaction
    /// before returning its last retryable error, the first run included. Default 10.
    pub max_transaction_attempts: u32,
    /// How many rows one `Scan` request asks for; longer scans take several requests, so a
    /// range of any size fits the frame limit. Halved on the fly if the server answers
    /// `FrameTooLarge`. Default 1024.
    pub scan_page_size: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            commit_deadline: Duration::from_secs(30),
            retry_deadline: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            read_preference: ReadPreference::Leader,
            retry_backoff_min: Duration::from_millis(20),
            retry_backoff_max: Duration::from_secs(1),
            max_transaction_attempts: 10,
            scan_page_size: 1024,
        }
    }
}
