//! The client against one honest mock leader: writes, reads, scans, transactions, snapshots.

mod common;

use std::ops::Bound;

use boundkv_client::{Client, ClientOptions, Error, Request, Timestamp, WireError};
use bytes::Bytes;
use common::{FakeKv, MockServer, excluded, included, single_leader, within};

async fn one_node(options: ClientOptions) -> (MockServer, FakeKv, Client) {
    let kv = FakeKv::new();
    let node = MockServer::start().await;
    node.set_handler(single_leader(kv.clone(), node.member(1)));
    let client = Client::connect_with([node.address.clone()], options).await.expect("connect");
    (node, kv, client)
}

fn pairs(rows: &[(Bytes, Bytes)]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|(k, v)| (std::str::from_utf8(k).unwrap(), std::str::from_utf8(v).unwrap()))
        .collect()
}

/// Scenario: put two keys, read them back, delete one, scan; `connect` learned the membership.
#[tokio::test]
async fn get_put_delete_scan_round_trip() {
    within(async {
        let (node, kv, client) = one_node(ClientOptions::default()).await;
        assert_eq!(client.members(), vec![node.member(1)]);
        assert_eq!(client.leader(), Some(node.member(1)));

        let first = client.put("a", "1").await.unwrap();
        let second = client.put("b", "2").await.unwrap();
        assert!(second.ts > first.ts);
        assert_eq!(client.get("a").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(client.get("missing").await.unwrap(), None);
        assert_eq!(pairs(&client.scan::<str>(.., None).await.unwrap()), [("a", "1"), ("b", "2")]);

        client.delete("a").await.unwrap();
        assert_eq!(client.get("a").await.unwrap(), None);
        assert_eq!(pairs(&client.scan("a".."z", None).await.unwrap()), [("b", "2")]);
        assert_eq!(kv.applications(), 3);

        // Blind writes carry no read timestamp and no reads.
        let commits = node.received_where(|r| matches!(r, Request::Commit(_)));
        for commit in commits {
            let Request::Commit(commit) = commit.request else { unreachable!() };
            assert_eq!(commit.read_ts, None);
            assert!(commit.read_keys.is_empty() && commit.read_ranges.is_empty());
        }
        // One connection carried everything.
        assert_eq!(node.connections(), 1);
    })
    .await;
}

/// Scenario: a transaction reads its own writes (puts and deletes, in gets and scans), and its
/// commit carries what it read from the server.
#[tokio::test]
async fn a_transaction_reads_its_own_writes() {
    within(async {
        let (node, _kv, client) = one_node(ClientOptions::default()).await;
        client.put("k1", "old").await.unwrap();
        client.put("k2", "old").await.unwrap();

        let mut txn = client.begin();
        assert_eq!(txn.read_ts(), None);
        txn.put("k1", "new").unwrap();
        assert_eq!(txn.get("k1").await.unwrap().as_deref(), Some(&b"new"[..]));
        assert_eq!(txn.read_ts(), None, "an own write is read without the server");
        assert_eq!(txn.get("k2").await.unwrap().as_deref(), Some(&b"old"[..]));
        assert!(txn.read_ts().is_some());
        txn.delete("k2").unwrap();
        txn.put("k3", "added").unwrap();
        assert_eq!(
            pairs(&txn.scan("k".."l", None).await.unwrap()),
            [("k1", "new"), ("k3", "added")]
        );
        // A limit cuts the scan, and only the part returned is recorded for validation.
        assert_eq!(pairs(&txn.scan("k".."l", Some(1)).await.unwrap()), [("k1", "new")]);
        let read_ts = txn.read_ts();
        let id = txn.id();
        txn.commit().await.unwrap();

        let Some(Request::Commit(commit)) =
            node.received_where(|r| matches!(r, Request::Commit(_))).pop().map(|r| r.request)
        else {
            panic!("no commit")
        };
        assert_eq!(commit.txn_id, id.to_bytes());
        assert_eq!(commit.read_ts, read_ts);
        assert_eq!(commit.read_keys, [Bytes::from("k2")]);
        assert_eq!(
            commit.read_ranges,
            [(included("k"), excluded("l")), (included("k"), included("k1"))]
        );
        assert_eq!(
            commit.writes,
            [
                (Bytes::from("k1"), Some(Bytes::from("new"))),
                (Bytes::from("k2"), None),
                (Bytes::from("k3"), Some(Bytes::from("added"))),
            ]
        );
        assert_eq!(
            pairs(&client.scan("k".."l", None).await.unwrap()),
            [("k1", "new"), ("k3", "added")]
        );
    })
    .await;
}

/// Scenario: a transaction that writes nothing commits without a request, at its read
/// timestamp.
#[tokio::test]
async fn a_read_only_transaction_commits_locally() {
    within(async {
        let (node, _kv, client) = one_node(ClientOptions::default()).await;
        let mut txn = client.begin();
        txn.get("x").await.unwrap();
        let read_ts = txn.read_ts().unwrap();
        assert_eq!(txn.commit().await.unwrap().ts, read_ts);
        assert_eq!(client.begin().commit().await.unwrap().ts, Timestamp::ZERO);
        assert!(node.received_where(|r| matches!(r, Request::Commit(_))).is_empty());
    })
    .await;
}

/// Scenario: snapshots at an exact past timestamp see the old value; a timestamp in the future
/// is refused with the server's typed error.
#[tokio::test]
async fn read_at_travels_in_time() {
    within(async {
        let (_node, _kv, client) = one_node(ClientOptions::default()).await;
        let before = client.put("x", "1").await.unwrap();
        client.put("x", "2").await.unwrap();
        let then = client.read_at(before.ts).await.unwrap();
        assert_eq!(then.ts(), before.ts);
        assert_eq!(then.get("x").await.unwrap().as_deref(), Some(&b"1"[..]));
        let now = client.read_only().await.unwrap();
        assert_eq!(now.get("x").await.unwrap().as_deref(), Some(&b"2"[..]));
        let stale = client.read_stale(std::time::Duration::from_secs(1)).await.unwrap();
        assert_eq!(stale.get("x").await.unwrap().as_deref(), Some(&b"2"[..]));

        let err = client.read_at(Timestamp::MAX).await.unwrap_err();
        assert!(matches!(err, Error::Server(WireError::TimestampInFuture { .. })), "{err:?}");
        assert!(!err.is_retryable());
    })
    .await;
}

/// Scenario: with pages of 3 rows, scanning 10 keys takes 4 `Scan` requests, each continuing
/// after the last key of the one before; a limit of 5 takes 2 (3 + 2); a transaction's scan
/// pages the same way.
#[tokio::test]
async fn a_scan_larger_than_a_page_pages() {
    within(async {
        let options = ClientOptions { scan_page_size: 3, ..ClientOptions::default() };
        let (node, kv, client) = one_node(options).await;
        for i in 0..10 {
            kv.write(&format!("key{i:02}"), Some(&format!("v{i}")));
        }
        kv.write("other", Some("not in the range"));

        let rows = client.scan("key".."kez", None).await.unwrap();
        let keys: Vec<String> = (0..10).map(|i| format!("key{i:02}")).collect();
        let got: Vec<String> =
            rows.iter().map(|(k, _)| String::from_utf8(k.to_vec()).unwrap()).collect();
        assert_eq!(got, keys);
        let scans: Vec<(Bound<Bytes>, Option<u32>)> = node
            .received_where(|r| matches!(r, Request::Scan { .. }))
            .into_iter()
            .map(|r| match r.request {
                Request::Scan { start, limit, .. } => (start, limit),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            scans,
            [
                (included("key"), Some(3)),
                (excluded("key02"), Some(3)),
                (excluded("key05"), Some(3)),
                (excluded("key08"), Some(3)),
            ]
        );

        let limited = client.scan("key".."kez", Some(5)).await.unwrap();
        assert_eq!(limited.len(), 5);
        assert_eq!(limited[4].0, Bytes::from("key04"));
        let limits: Vec<Option<u32>> = node
            .received_where(|r| matches!(r, Request::Scan { .. }))
            .into_iter()
            .skip(4)
            .map(|r| match r.request {
                Request::Scan { limit, .. } => limit,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(limits, [Some(3), Some(2)]);

        let mut txn = client.begin();
        assert_eq!(txn.scan("key".."kez", None).await.unwrap().len(), 10);
        let scanned_before = 4 + 2;
        assert_eq!(
            node.received_where(|r| matches!(r, Request::Scan { .. })).len(),
            scanned_before + 4
        );
    })
    .await;
}

/// Scenario: another client writes a key this transaction read; `transaction()` re-runs it and
/// the second run sees the new value.
#[tokio::test]
async fn transaction_reruns_after_a_real_conflict() {
    within(async {
        let (_node, kv, client) = one_node(ClientOptions::default()).await;
        client.put("n", "1").await.unwrap();
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let (seen, _) = client
            .transaction(async |txn| {
                let n = txn.get("n").await?.unwrap();
                if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    kv.write("n", Some("5")); // someone else, between our read and our commit
                }
                let n: u32 = std::str::from_utf8(&n).unwrap().parse().unwrap();
                txn.put("n", (n + 1).to_string())?;
                Ok(n)
            })
            .await
            .unwrap();
        assert_eq!((seen, runs.into_inner()), (5, 2));
        assert_eq!(client.get("n").await.unwrap().as_deref(), Some(&b"6"[..]));
    })
    .await;
}

/// The futures the client returns can be spawned (they are `Send`).
#[tokio::test]
async fn client_futures_are_send() {
    within(async {
        let (_node, _kv, client) = one_node(ClientOptions::default()).await;
        let spawned = tokio::spawn({
            let client = client.clone();
            async move {
                client
                    .transaction(async |txn| {
                        txn.put("spawned", "yes")?;
                        txn.get("other").await
                    })
                    .await
            }
        });
        spawned.await.unwrap().unwrap();
        assert_eq!(client.get("spawned").await.unwrap().as_deref(), Some(&b"yes"[..]));
    })
    .await;
}
