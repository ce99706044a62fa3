//! Commits whose outcome the client does not know, and transactions that must start over.

mod common;

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boundkv_client::{Client, ClientOptions, Error, Request, Response, Role, WireError};
use bytes::Bytes;
use common::{FakeKv, MockServer, Reply, excluded, included, status, within};

fn quick() -> ClientOptions {
    ClientOptions {
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// A one-node leader backed by `kv`, whose commits are first offered to `on_commit`: it returns
/// `Some(reply)` to take over, `None` to let `kv` answer.
async fn leader_with(
    kv: FakeKv,
    on_commit: impl Fn(usize, &common::Incoming, &FakeKv) -> Option<Reply> + Send + Sync + 'static,
) -> MockServer {
    let node = MockServer::start().await;
    let me = node.member(1);
    let commits = AtomicUsize::new(0);
    node.set_handler(move |incoming| match &incoming.request {
        Request::Status => Reply::Answer(Response::Status(Box::new(status(
            1,
            Role::Leader,
            Some(me.clone()),
            vec![me.clone()],
        )))),
        Request::Commit(_) => {
            let n = commits.fetch_add(1, Ordering::SeqCst) + 1;
            on_commit(n, &incoming, &kv)
                .unwrap_or_else(|| Reply::Answer(kv.answer(&incoming.request)))
        }
        r => Reply::Answer(kv.answer(r)),
    });
    node
}

fn commit_ids(node: &MockServer) -> Vec<[u8; 16]> {
    node.received()
        .into_iter()
        .filter_map(|r| match r.request {
            Request::Commit(c) => Some(c.txn_id),
            _ => None,
        })
        .collect()
}

/// Scenario: the leader applies the first commit, then drops the connection without answering.
/// The client reconnects and resends the same transaction id; the leader's deduplication
/// answers Committed, and the transaction applied exactly once.
#[tokio::test]
async fn a_commit_lost_with_its_connection_is_resent_with_the_same_id() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |n, incoming, kv| {
            (n == 1).then(|| {
                kv.answer(&incoming.request); // applied...
                incoming.conn.close(); // ...but the answer is lost
                Reply::Later
            })
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let id = txn.id();
        let info = txn.commit().await.unwrap();

        assert_eq!(kv.applications(), 1);
        assert_eq!(commit_ids(&node), [id.to_bytes(), id.to_bytes()]);
        assert_eq!(node.connections(), 2, "the resend went on a new connection");
        assert_eq!(client.get("x").await.unwrap().as_deref(), Some(&b"1"[..]));
        assert!(info.ts > boundkv_client::Timestamp::ZERO);
    })
    .await;
}

/// Scenario: the leader answers OutcomeUnknown to the first commit and applies the second; both
/// carry the same transaction id.
#[tokio::test]
async fn outcome_unknown_then_committed_with_the_same_id() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |n, _, _| {
            (n == 1).then(|| {
                Reply::Answer(Response::Error(WireError::OutcomeUnknown("leader changed".into())))
            })
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let id = txn.id();
        txn.commit().await.unwrap();
        assert_eq!(commit_ids(&node), [id.to_bytes(), id.to_bytes()]);
        assert_eq!(kv.applications(), 1);
    })
    .await;
}

/// Scenario: the leader answers OutcomeUnknown forever. The client resends (same id) until the
/// commit deadline and then reports Error::OutcomeUnknown for that transaction id.
#[tokio::test]
async fn outcome_unknown_forever_gives_up_at_the_commit_deadline() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::OutcomeUnknown("no quorum".into()))))
        })
        .await;
        let deadline = Duration::from_millis(300);
        let options = ClientOptions { commit_deadline: deadline, ..quick() };
        let client = Client::connect_with([node.address.clone()], options).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let id = txn.id();
        let started = Instant::now();
        let err = txn.commit().await.unwrap_err();
        let took = started.elapsed();

        let Error::OutcomeUnknown { txn_id, reason } = &err else { panic!("{err:?}") };
        assert_eq!(*txn_id, id);
        assert!(reason.contains("no quorum"), "{reason}");
        assert!(err.commit_may_have_applied() && err.is_retryable());
        assert!(took >= deadline && took < deadline + Duration::from_secs(1), "{took:?}");
        let ids = commit_ids(&node);
        assert!(ids.len() >= 3, "resent {} times", ids.len());
        assert!(ids.iter().all(|i| *i == id.to_bytes()));
    })
    .await;
}

/// Scenario: `transaction()` never re-runs (under a new id) a commit whose outcome is unknown.
#[tokio::test]
async fn transaction_does_not_rerun_an_unknown_outcome() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::OutcomeUnknown("no quorum".into()))))
        })
        .await;
        let options = ClientOptions { commit_deadline: Duration::from_millis(100), ..quick() };
        let client = Client::connect_with([node.address.clone()], options).await.unwrap();
        let runs = AtomicUsize::new(0);
        let err = client
            .transaction(async |txn| {
                runs.fetch_add(1, Ordering::SeqCst);
                txn.put("x", "1")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }), "{err:?}");
        assert_eq!(runs.into_inner(), 1);
        assert_eq!(commit_ids(&node).into_iter().collect::<HashSet<_>>().len(), 1);
    })
    .await;
}

/// Scenario: the leader answers Conflict to the first two commits. `transaction()` runs the
/// closure three times, each as a new transaction with a new id and a fresh read timestamp, and
/// each commit carries the keys and the range the closure read.
#[tokio::test]
async fn transaction_reruns_on_conflict_with_new_ids() {
    within(async {
        let kv = FakeKv::new();
        kv.write("a", Some("1"));
        kv.write("k2", Some("2"));
        let node = leader_with(kv.clone(), |n, _, _| {
            (n <= 2).then(|| {
                Reply::Answer(Response::Error(WireError::Conflict {
                    key: "a".into(),
                    read_ts: boundkv_client::Timestamp::ZERO,
                    conflicting_commit_ts: boundkv_client::Timestamp::ZERO,
                }))
            })
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let runs = Mutex::new(Vec::new());
        let ((), info) = client
            .transaction(async |txn| {
                runs.lock().unwrap().push(txn.id());
                let a = txn.get("a").await?.unwrap_or_default();
                let rows = txn.scan("k1".."k9", None).await?;
                txn.put("sum", format!("{}+{}", String::from_utf8_lossy(&a), rows.len()))?;
                Ok(())
            })
            .await
            .unwrap();
        let runs = runs.into_inner().unwrap();
        assert_eq!(runs.len(), 3);
        assert_eq!(runs.iter().collect::<HashSet<_>>().len(), 3, "a new id per run");

        let commits: Vec<_> = node
            .received()
            .into_iter()
            .filter_map(|r| match r.request {
                Request::Commit(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(commits.len(), 3);
        let read_timestamps: HashSet<_> = commits.iter().map(|c| c.read_ts.unwrap()).collect();
        assert_eq!(read_timestamps.len(), 3, "a fresh read timestamp per run");
        for (commit, id) in commits.iter().zip(&runs) {
            assert_eq!(commit.txn_id, id.to_bytes());
            assert_eq!(commit.read_keys, [Bytes::from("a")]);
            let range: (Bound<Bytes>, Bound<Bytes>) = (included("k1"), excluded("k9"));
            assert_eq!(commit.read_ranges, [range]);
            assert_eq!(commit.writes, [(Bytes::from("sum"), Some(Bytes::from("1+1")))]);
        }
        assert_eq!(kv.applications(), 1);
        assert_eq!(
            node.received_where(|r| matches!(r, Request::BeginReadWrite)).len(),
            3,
            "each run began anew"
        );
        assert!(info.ts > boundkv_client::Timestamp::ZERO);
    })
    .await;
}

/// Scenario: a conflict on every commit: `transaction()` gives up after
/// `max_transaction_attempts` runs with the typed Conflict error.
#[tokio::test]
async fn transaction_gives_up_after_max_attempts() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::Expired {
                read_ts: boundkv_client::Timestamp::ZERO,
            })))
        })
        .await;
        let options = ClientOptions { max_transaction_attempts: 4, ..quick() };
        let client = Client::connect_with([node.address.clone()], options).await.unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let err = client
            .transaction(async |txn| {
                runs.fetch_add(1, Ordering::SeqCst);
                txn.get("a").await?;
                txn.put("a", "b")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Server(WireError::Expired { .. })), "{err:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(commit_ids(&node).into_iter().collect::<HashSet<_>>().len(), 4);
    })
    .await;
}

/// Scenario: a non-retryable answer (a value too large) is returned at once, and is not re-run.
#[tokio::test]
async fn a_definite_error_is_returned_at_once() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::ValueTooLarge { len: 10, max: 1 })))
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let runs = AtomicUsize::new(0);
        let err = client
            .transaction(async |txn| {
                runs.fetch_add(1, Ordering::SeqCst);
                txn.put("a", "0123456789")
            })
            .await
            .unwrap_err();
        assert_eq!(err, Error::Server(WireError::ValueTooLarge { len: 10, max: 1 }));
        assert_eq!(runs.into_inner(), 1);
        assert_eq!(commit_ids(&node).len(), 1);
    })
    .await;
}

/// Scenario: the leader never answers a commit. Each attempt times out after the request
/// timeout; the client resends until the commit deadline, then reports OutcomeUnknown (the
/// request may have applied).
#[tokio::test]
async fn a_commit_that_times_out_is_resent_then_unknown() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| Some(Reply::Later)).await;
        let options = ClientOptions {
            request_timeout: Duration::from_millis(100),
            commit_deadline: Duration::from_millis(350),
            ..quick()
        };
        let client = Client::connect_with([node.address.clone()], options).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let err = txn.commit().await.unwrap_err();
        assert!(
            matches!(&err, Error::OutcomeUnknown { reason, .. } if reason.contains("timed out")),
            "{err:?}"
        );
        let ids = commit_ids(&node);
        assert!((3..=4).contains(&ids.len()), "{} attempts", ids.len());
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1);
    })
    .await;
}

/// Scenario: the only node has stopped (`Fatal`). The commit is not resent for the whole
/// deadline: with no other node to try, the error comes back at once, and it did not apply.
#[tokio::test]
async fn a_stopped_node_fails_the_commit_at_once() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::Fatal("disk failed".into()))))
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let started = Instant::now();
        let err = client.put("x", "1").await.unwrap_err();
        assert_eq!(err, Error::Server(WireError::Fatal("disk failed".into())));
        assert!(!err.commit_may_have_applied());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(commit_ids(&node).len(), 1);
    })
    .await;
}

/// Scenario: the first commit's connection is lost; the resend is answered `Malformed` (say, a
/// node that cannot read it). The first attempt may have applied, so the outcome is unknown.
#[tokio::test]
async fn an_unreadable_resend_does_not_settle_an_earlier_attempt() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |n, incoming, _| {
            Some(if n == 1 {
                incoming.conn.close();
                Reply::Later
            } else {
                Reply::Answer(Response::Error(WireError::Malformed("cannot read".into())))
            })
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let id = txn.id();
        let err = txn.commit().await.unwrap_err();
        let Error::OutcomeUnknown { txn_id, reason } = &err else { panic!("{err:?}") };
        assert_eq!(*txn_id, id);
        assert!(reason.contains("cannot read"), "{reason}");
    })
    .await;
}

/// Scenario: the leader answers ClockUnavailable (as a server does once its clock has given no
/// usable reading within its `unavailable_timeout`). The client reports it at once, as the
/// definite "nothing was done" it is: one attempt, not resent into the commit deadline, not
/// turned into OutcomeUnknown, and `Client::transaction` does not re-run it.
#[tokio::test]
async fn clock_unavailable_is_reported_at_once_and_not_as_outcome_unknown() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |_, _, _| {
            Some(Reply::Answer(Response::Error(WireError::ClockUnavailable(
                "clock unavailable for 5s: the clock's status is Unknown".into(),
            ))))
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let started = Instant::now();
        let err = client.put("x", "1").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert!(
            matches!(err, Error::Server(WireError::ClockUnavailable(_))),
            "a definite clock error, not {err:?}"
        );
        assert!(!err.commit_may_have_applied());
        assert!(err.to_string().contains("nothing was done"), "{err}");
        assert_eq!(commit_ids(&node).len(), 1, "not resent");
        let err = client
            .transaction(async |txn| {
                txn.put("y", "1")?;
                Ok(())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Server(WireError::ClockUnavailable(_))), "{err:?}");
        assert_eq!(commit_ids(&node).len(), 2, "the transaction ran once");
        assert_eq!(kv.applications(), 0);
    })
    .await;
}

/// Scenario: the first attempt's outcome is unknown, then the leader answers ClockUnavailable.
/// That answer does not settle the first attempt, so the client resends the same transaction id
/// until an answer does (here: Committed).
#[tokio::test]
async fn clock_unavailable_after_an_unknown_outcome_is_resent() {
    within(async {
        let kv = FakeKv::new();
        let node = leader_with(kv.clone(), |n, _, _| match n {
            1 => Some(Reply::Answer(Response::Error(WireError::OutcomeUnknown("x".into())))),
            2 => Some(Reply::Answer(Response::Error(WireError::ClockUnavailable("y".into())))),
            _ => None,
        })
        .await;
        let client = Client::connect_with([node.address.clone()], quick()).await.unwrap();
        let mut txn = client.begin();
        txn.put("x", "1").unwrap();
        let id = txn.id();
        txn.commit().await.unwrap();
        assert_eq!(commit_ids(&node), [id.to_bytes(); 3]);
        assert_eq!(kv.applications(), 1);
    })
    .await;
}
