//! [`Transaction`] (read-write) and [`Snapshot`] (read-only), as the client runs them.
//!
//! # A read-write transaction, step by step
//!
//! Nothing is sent until the first read. Then the transaction takes its read timestamp `r` with
//! `BeginReadWrite` at the leader, and every read goes to the node that gave it `r`, at `r`.
//! Writes stay in the transaction until commit, and reads see them first. The transaction
//! records what it read, so that the leader can check at commit that none of it changed after
//! `r`:
//!
//! ```text
//! txn.get("a")              → BeginReadWrite ← Timestamp(r); → Get { r, "a" } ← Value(Some("1"))
//!                             read_keys = {"a"}
//! txn.put("a", "2")           writes = {"a": Some("2")}                      (nothing sent)
//! txn.get("a")              → Some("2"), its own write                       (nothing sent)
//! txn.scan("k".."m", None)  → Scan { r, "k".."m" } ← Rows([("k1", "x")]), merged with own writes
//!                             read_ranges = [("k".."m")]
//! txn.commit()              → Commit { txn_id, read_ts: Some(r), read_keys: ["a"],
//!                                      read_ranges: [("k".."m")], writes: [("a", Some("2"))] }
//!                           ← Committed(CommitInfo { ts: c, .. })
//! ```
//!
//! A scan cut short by its limit records only the part it returned (up to and including its last
//! key): rows inserted beyond it could not have changed what the transaction saw. A transaction
//! that wrote nothing commits without a request (its reads were all at one snapshot, so there is
//! nothing to validate), and one that read nothing sends `read_ts: None` (a blind write).
//!
//! # Resending a commit, and starting over
//!
//! [`Transaction::commit`] sends one `CommitRequest` and, if it gets no definite answer (the
//! connection breaks, the request times out, the leader answers `OutcomeUnknown` or
//! `NotLeader`), sends the very same request, with the same transaction id, again, until it gets
//! one or its deadline passes. That is safe because the server applies a transaction id at most
//! once: a resend either reports the first attempt's `Committed`, or applies the transaction now
//! if the first attempt never did.
//!
//! Starting over is different. `Conflict` and `Expired` say the transaction did not apply and
//! cannot: its reads are stale. Re-running it reads again at a new timestamp and may decide to
//! write something else, so it is a *new* transaction and needs a *new* id. Reusing the old id
//! would let the server mistake it for the old one; choosing a new id after an unknown outcome
//! would let both apply. Hence the rule that [`Client::transaction`](crate::Client::transaction)
//! follows: a new id only after an error that says the commit did not apply.
//!
//! # Snapshots
//!
//! A [`Snapshot`] holds a timestamp from `BeginReadOnly` and the node that gave it. Its reads go
//! to that node at that timestamp; if the node fails or stays behind, they continue at another
//! (the leader first), which returns the same answer, because a read at a fixed timestamp is the
//! same everywhere it is served. A snapshot takes no locks and never conflicts.
//!
//! # Long scans
//!
//! A response must fit in one frame, so scans ask for at most
//! [`scan_page_size`](crate::ClientOptions::scan_page_size) rows at a time and continue after
//! the last key of each full page. Scanning `"a"..` with pages of 2 over the keys `a b c`:
//!
//! ```text
//! → Scan { start: Included("a"), end: Unbounded, limit: Some(2) }   ← Rows([a, b])  full: go on
//! → Scan { start: Excluded("b"), end: Unbounded, limit: Some(2) }   ← Rows([c])     short: done
//! ```
//!
//! A page cut short by the scan's own limit asks for only the rows still wanted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boundkv_wire::{CommitInfo, CommitRequest, Request, Response, Timestamp, WireError};
use bytes::Bytes;

use crate::cluster::{Cluster, Resend, unexpected};
use crate::{Error, Result};

/// Identifies a read-write transaction: 16 random bytes, chosen once per attempt. The server
/// applies a transaction id at most once, which is what makes resending a commit safe.
///
/// `Display` and `Debug` print it as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId([u8; 16]);

impl TxnId {
    /// A new random id.
    pub fn random() -> Self {
        TxnId(rand::random())
    }

    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        TxnId(bytes)
    }

    /// The id's bytes, as the wire carries them in [`CommitRequest::txn_id`].
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({self})")
    }
}

/// Converts any range of byte-like keys to owned bounds.
pub(crate) fn to_bounds<B: AsRef<[u8]> + ?Sized>(
    range: impl RangeBounds<B>,
) -> (Bound<Bytes>, Bound<Bytes>) {
    let owned = |bound: Bound<&B>| match bound {
        Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k.as_ref())),
        Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k.as_ref())),
        Bound::Unbounded => Bound::Unbounded,
    };
    (owned(range.start_bound()), owned(range.end_bound()))
}

/// Whether a range holds no keys because its start lies past its end (such a range is never
/// sent, and a `BTreeMap` would panic on it).
fn is_inverted(range: &(Bound<Bytes>, Bound<Bytes>)) -> bool {
    match range {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start) | Bound::Excluded(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end)) => start >= end,
        _ => false,
    }
}

/// Reads `key` at `ts`, starting at `home` and updating it to the node that answered.
async fn get_at(
    cluster: &Cluster,
    ts: Timestamp,
    key: Bytes,
    home: &mut String,
) -> Result<Option<Bytes>> {
    let (response, served) = cluster.call_reader(Request::Get { ts, key }, home.clone()).await?;
    *home = served;
    match response {
        Response::Value(value) => Ok(value),
        other => Err(unexpected("Get", &other)),
    }
}

/// Scans `range` at `ts`, at most `limit` rows, page by page (see the module docs).
async fn scan_at(
    cluster: &Cluster,
    ts: Timestamp,
    range: (Bound<Bytes>, Bound<Bytes>),
    limit: Option<usize>,
    home: &mut String,
) -> Result<Vec<(Bytes, Bytes)>> {
    let (mut start, end) = range;
    let mut page = cluster.options.scan_page_size.max(1);
    let mut rows: Vec<(Bytes, Bytes)> = Vec::new();
    loop {
        let wanted = match limit {
            Some(limit) if rows.len() >= limit => break,
            Some(limit) => u32::try_from(limit - rows.len()).unwrap_or(u32::MAX).min(page),
            None => page,
        };
        let request =
            Request::Scan { ts, start: start.clone(), end: end.clone(), limit: Some(wanted) };
        let batch = match cluster.call_reader(request, home.clone()).await {
            Ok((Response::Rows(batch), served)) => {
                *home = served;
                batch
            }
            Ok((other, _)) => return Err(unexpected("Scan", &other)),
            Err(Error::Server(WireError::FrameTooLarge { .. })) if wanted > 1 => {
                page = wanted / 2;
                tracing::debug!(page, "a scan page was too large for a frame; halving it");
                continue;
            }
            Err(e) => return Err(e),
        };
        if batch.len() > wanted as usize {
            return Err(Error::Protocol(format!(
                "a Scan asking for {wanted} rows was answered with {}",
                batch.len()
            )));
        }
        let full = batch.len() == wanted as usize;
        if let Some((last, _)) = batch.last() {
            // Each page must start after the previous one, or paging could go on forever.
            if matches!(&start, Bound::Excluded(previous) if last <= previous) {
                return Err(Error::Protocol("a Scan page did not advance past the last".into()));
            }
            start = Bound::Excluded(last.clone());
        }
        rows.extend(batch);
        if !full {
            break;
        }
    }
    Ok(rows)
}

/// A read-write transaction against the cluster: snapshot reads at one read timestamp (taken at
/// the first read), buffered writes, and validation at commit (see the module docs).
///
/// Dropping it without committing abandons it; nothing it did is visible to anyone, and the
/// server is not told (it holds nothing for the transaction until commit).
pub struct Transaction {
    cluster: Arc<Cluster>,
    id: TxnId,
    /// The read timestamp and the node reads go to, once the first read has taken it.
    read: Option<(Timestamp, String)>,
    read_keys: BTreeSet<Bytes>,
    read_ranges: Vec<(Bound<Bytes>, Bound<Bytes>)>,
    writes: BTreeMap<Bytes, Option<Bytes>>,
}

impl Transaction {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Transaction {
            cluster,
            id: TxnId::random(),
            read: None,
            read_keys: BTreeSet::new(),
            read_ranges: Vec::new(),
            writes: BTreeMap::new(),
        }
    }

    /// This transaction's id, which its commit carries.
    pub fn id(&self) -> TxnId {
        self.id
    }

    /// The read timestamp, once the first read has taken it.
    pub fn read_ts(&self) -> Option<Timestamp> {
        self.read.as_ref().map(|(ts, _)| *ts)
    }

    /// Takes the read timestamp at the leader, if this is the first read.
    async fn ensure_read_ts(&mut self) -> Result<(Timestamp, String)> {
        if let Some(read) = &self.read {
            return Ok(read.clone());
        }
        let (response, leader) =
            self.cluster.call_leader(Request::BeginReadWrite, Resend::Always).await?;
        let ts = match response {
            Response::Timestamp(ts) => ts,
            other => return Err(unexpected("BeginReadWrite", &other)),
        };
        self.read = Some((ts, leader.clone()));
        Ok((ts, leader))
    }

    /// The value of `key`: this transaction's own write if it made one, else the committed
    /// value as of its read timestamp.
    pub async fn get(&mut self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let key = Bytes::copy_from_slice(key.as_ref());
        if let Some(own) = self.writes.get(&key) {
            return Ok(own.clone());
        }
        let (ts, mut home) = self.ensure_read_ts().await?;
        let value = get_at(&self.cluster, ts, key.clone(), &mut home).await;
        self.remember_home(home);
        let value = value?;
        self.read_keys.insert(key);
        Ok(value)
    }

    /// The pairs in `range` (with this transaction's own writes applied), in key order, at most
    /// `limit` of them. The scanned range (up to the last key returned, when the limit cut it
    /// short) is validated at commit, so rows others insert into it cause a conflict.
    pub async fn scan<B: AsRef<[u8]> + ?Sized>(
        &mut self,
        range: impl RangeBounds<B>,
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let range = to_bounds(range);
        if is_inverted(&range) || limit == Some(0) {
            return Ok(Vec::new());
        }
        let (ts, mut home) = self.ensure_read_ts().await?;
        // Enough from the server to fill the limit even if every own delete hides a row.
        let own_deletes = self.writes.range(range.clone()).filter(|(_, v)| v.is_none()).count();
        let fetch = limit.map(|limit| limit.saturating_add(own_deletes));
        let stored = scan_at(&self.cluster, ts, range.clone(), fetch, &mut home).await;
        self.remember_home(home);
        let mut merged: BTreeMap<Bytes, Option<Bytes>> =
            stored?.into_iter().map(|(k, v)| (k, Some(v))).collect();
        for (key, value) in self.writes.range(range.clone()) {
            merged.insert(key.clone(), value.clone());
        }
        let limit = limit.unwrap_or(usize::MAX);
        let rows: Vec<(Bytes, Bytes)> =
            merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit).collect();
        let scanned = match rows.last() {
            Some((last, _)) if rows.len() == limit => (range.0, Bound::Included(last.clone())),
            _ => range,
        };
        self.read_ranges.push(scanned);
        Ok(rows)
    }

    fn remember_home(&mut self, home: String) {
        if let Some((_, address)) = &mut self.read {
            *address = home;
        }
    }

    /// Sets `key` to `value` at commit. Never fails today; it returns a `Result` like the
    /// embedded database's, so code moves between the two unchanged.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let key = Bytes::copy_from_slice(key.as_ref());
        self.writes.insert(key, Some(Bytes::copy_from_slice(value.as_ref())));
        Ok(())
    }

    /// Deletes `key` at commit. Never fails today (see [`Transaction::put`]).
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        self.writes.insert(Bytes::copy_from_slice(key.as_ref()), None);
        Ok(())
    }

    /// Commits: sends the transaction's reads and writes to the leader, which validates the
    /// reads, applies the writes, waits out commit wait, and answers. Resends the same request
    /// (same id) until a definite answer or the commit deadline; see the module docs.
    ///
    /// A transaction without writes commits at once without a request, at its read timestamp
    /// (or [`Timestamp::ZERO`] if it read nothing either).
    ///
    /// # Errors
    ///
    /// [`Error::OutcomeUnknown`] if the deadline passed while a resend may have applied. Every
    /// other error means the transaction did not apply; `Conflict` and `Expired` (as
    /// [`Error::Server`]) mean it must be re-run from the start, with a new transaction.
    pub async fn commit(self) -> Result<CommitInfo> {
        if self.writes.is_empty() {
            return Ok(CommitInfo {
                ts: self.read_ts().unwrap_or(Timestamp::ZERO),
                commit_wait: Duration::ZERO,
                durable: Duration::ZERO,
                wait_beyond_durable: Duration::ZERO,
                latency: Duration::ZERO,
            });
        }
        let request = CommitRequest {
            txn_id: self.id.to_bytes(),
            read_ts: self.read_ts(),
            read_keys: self.read_keys.into_iter().collect(),
            read_ranges: self.read_ranges,
            writes: self.writes.into_iter().collect(),
        };
        let txn_id = self.id;
        match self.cluster.call_leader(Request::Commit(request), Resend::SameTxn(txn_id)).await? {
            (Response::Committed(info), _) => Ok(info),
            (other, address) => Err(Error::OutcomeUnknown {
                txn_id,
                reason: format!(
                    "{address} answered the commit with {}",
                    unexpected("Commit", &other)
                ),
            }),
        }
    }

    /// Abandons the transaction (as dropping it does).
    pub fn rollback(self) {}
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("id", &self.id)
            .field("read_ts", &self.read_ts())
            .field("read_keys", &self.read_keys.len())
            .field("read_ranges", &self.read_ranges.len())
            .field("writes", &self.writes.len())
            .finish()
    }
}

/// A read-only snapshot of the cluster at one timestamp: lock-free, never conflicts. Cheap to
/// share by reference; reads may run concurrently.
pub struct Snapshot {
    cluster: Arc<Cluster>,
    ts: Timestamp,
    /// The node reads go to: the one that gave the timestamp, until it cannot serve them.
    home: Mutex<String>,
}

impl Snapshot {
    pub(crate) fn new(cluster: Arc<Cluster>, ts: Timestamp, home: String) -> Self {
        Snapshot { cluster, ts, home: Mutex::new(home) }
    }

    /// The snapshot's timestamp: every read of this snapshot is at it.
    pub fn ts(&self) -> Timestamp {
        self.ts
    }

    fn home(&self) -> String {
        self.home.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_home(&self, home: String) {
        *self.home.lock().unwrap_or_else(|e| e.into_inner()) = home;
    }

    /// The value of `key` at the snapshot's timestamp.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        let mut home = self.home();
        let value =
            get_at(&self.cluster, self.ts, Bytes::copy_from_slice(key.as_ref()), &mut home).await;
        self.set_home(home);
        value
    }

    /// The pairs in `range` at the snapshot's timestamp, in key order, at most `limit` of them.
    pub async fn scan<B: AsRef<[u8]> + ?Sized>(
        &self,
        range: impl RangeBounds<B>,
        limit: Option<usize>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let range = to_bounds(range);
        if is_inverted(&range) || limit == Some(0) {
            return Ok(Vec::new());
        }
        let mut home = self.home();
        let rows = scan_at(&self.cluster, self.ts, range, limit, &mut home).await;
        self.set_home(home);
        rows
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("ts", &self.ts).field("node", &self.home()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_ids_print_as_hex() {
        let id = TxnId::from_bytes([0xAB; 16]);
        assert_eq!(id.to_string(), "ab".repeat(16));
        assert_eq!(format!("{id:?}"), format!("TxnId({})", "ab".repeat(16)));
        assert_ne!(TxnId::random(), TxnId::random());
    }

    #[test]
    fn inverted_ranges_are_recognized() {
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert!(is_inverted(&(Bound::Included(b("b")), Bound::Included(b("a")))));
        assert!(!is_inverted(&(Bound::Included(b("a")), Bound::Included(b("a")))));
        assert!(is_inverted(&(Bound::Included(b("a")), Bound::Excluded(b("a")))));
        assert!(is_inverted(&(Bound::Excluded(b("a")), Bound::Included(b("a")))));
        assert!(is_inverted(&(Bound::Excluded(b("a")), Bound::Excluded(b("a")))));
        assert!(!is_inverted(&(Bound::Excluded(b("a")), Bound::Unbounded)));
        assert!(!is_inverted(&(Bound::Unbounded, Bound::Unbounded)));
    }

    #[test]
    fn ranges_of_any_byte_like_keys_convert() {
        assert_eq!(
            to_bounds("a".."c"),
            (Bound::Included(Bytes::from("a")), Bound::Excluded(Bytes::from("c")))
        );
        assert_eq!(to_bounds::<[u8]>(..), (Bound::Unbounded, Bound::Unbounded));
    }
}
