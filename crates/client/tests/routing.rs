//! Finding the leader, and where reads go: redirects, read preferences, and followers that are
//! behind.

mod common;

use std::time::Duration;

use boundkv_client::{
    Client, ClientOptions, Error, ReadPreference, Request, Response, Role, Timestamp, WireError,
};
use common::{FakeKv, MockServer, Reply, needs_leader, not_leader, status, within};

fn quick() -> ClientOptions {
    ClientOptions {
        retry_backoff_min: Duration::from_millis(5),
        retry_backoff_max: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// Two nodes sharing one store: `a` (id 1) a follower, `b` (id 2) the leader. `a` knows only
/// itself and no leader in its status (it has just restarted, say), but redirects
/// leader-only requests to `b`. Both serve reads.
async fn follower_and_leader() -> (MockServer, MockServer, FakeKv) {
    let kv = FakeKv::new();
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    let (a_member, b_member) = (a.member(1), b.member(2));
    a.set_handler({
        let (kv, a_member, b_member) = (kv.clone(), a_member.clone(), b_member.clone());
        move |incoming| {
            Reply::Answer(match &incoming.request {
                Request::Status => Response::Status(Box::new(status(
                    1,
                    Role::Follower,
                    None,
                    vec![a_member.clone()],
                ))),
                r if needs_leader(r) => not_leader(Some(b_member.clone())),
                r => kv.answer(r),
            })
        }
    });
    b.set_handler({
        let (kv, members) = (kv.clone(), vec![a_member.clone(), b_member.clone()]);
        move |incoming| {
            Reply::Answer(match &incoming.request {
                Request::Status => Response::Status(Box::new(status(
                    2,
                    Role::Leader,
                    Some(members[1].clone()),
                    members.clone(),
                ))),
                r => kv.answer(r),
            })
        }
    });
    (a, b, kv)
}

/// Scenario:
/// 1. connect through `a` only: the client knows `a`, and no leader;
/// 2. a put goes to `a`, which answers NotLeader { b }; the commit is resent to `b`;
/// 3. a transaction then goes straight to `b` for BeginReadWrite, its read and its commit;
/// 4. with `ReadPreference::Node(1)`, read-only transactions and their reads go to `a`.
#[tokio::test]
async fn not_leader_redirects_to_the_leader() {
    within(async {
        let (a, b, kv) = follower_and_leader().await;
        let options = ClientOptions { read_preference: ReadPreference::Node(1), ..quick() };
        let client = Client::connect_with([a.address.clone()], options).await.unwrap();
        assert_eq!(client.leader(), None);

        client.put("x", "1").await.unwrap();
        assert_eq!(client.leader(), Some(b.member(2)));
        assert_eq!(a.received_where(needs_leader).len(), 1, "one commit at a, redirected");
        assert_eq!(kv.applications(), 1);

        let (_, info) = client
            .transaction(async |txn| {
                let x = txn.get("x").await?;
                txn.put("y", x.unwrap())?;
                Ok(())
            })
            .await
            .unwrap();
        assert!(info.ts > Timestamp::ZERO);
        assert_eq!(a.received_where(needs_leader).len(), 1, "nothing more at a");
        let at_b: Vec<&'static str> = b
            .received()
            .iter()
            .map(|r| match r.request {
                Request::BeginReadWrite => "BeginReadWrite",
                Request::Get { .. } => "Get",
                Request::Commit(_) => "Commit",
                _ => "other",
            })
            .collect();
        assert_eq!(at_b, ["Commit", "BeginReadWrite", "Get", "Commit"]);

        let before_a = a.received().len();
        let before_b = b.received().len();
        assert_eq!(client.get("y").await.unwrap().as_deref(), Some(&b"1"[..]));
        let at_a: Vec<bool> = a.received()[before_a..]
            .iter()
            .map(|r| matches!(r.request, Request::BeginReadOnly { .. } | Request::Get { .. }))
            .collect();
        assert_eq!(at_a, [true, true]);
        assert_eq!(b.received().len(), before_b, "the reads did not touch the leader");
        assert_eq!(kv.applications(), 2);
    })
    .await;
}

/// Scenario: the follower `a` (preferred for reads) hands out a snapshot timestamp but answers
/// FollowerBehind to every read at it; the client retries there a few times with backoff, then
/// reads at the leader `b` at the same timestamp.
#[tokio::test]
async fn follower_behind_retries_then_falls_back_to_the_leader() {
    within(async {
        let (a, b, kv) = follower_and_leader().await;
        kv.write("k", Some("v"));
        let b_member = b.member(2);
        a.set_handler({
            let (kv, a_member) = (kv.clone(), a.member(1));
            move |incoming| {
                Reply::Answer(match &incoming.request {
                    Request::Status => Response::Status(Box::new(status(
                        1,
                        Role::Follower,
                        None,
                        vec![a_member.clone()],
                    ))),
                    Request::Get { ts, .. } => Response::Error(WireError::FollowerBehind {
                        requested: *ts,
                        safe_time: Timestamp::ZERO,
                        leader: Some(b_member.clone()),
                    }),
                    r => kv.answer(r),
                })
            }
        });
        let options = ClientOptions { read_preference: ReadPreference::Node(1), ..quick() };
        let client = Client::connect_with([a.address.clone()], options).await.unwrap();

        let snapshot = client.read_only().await.unwrap();
        assert_eq!(snapshot.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));

        let gets_at_a = a.received_where(|r| matches!(r, Request::Get { .. }));
        let gets_at_b = b.received_where(|r| matches!(r, Request::Get { .. }));
        assert_eq!(gets_at_a.len(), 3, "retried at the follower before moving");
        assert_eq!(gets_at_b.len(), 1);
        let Request::Get { ts, .. } = gets_at_b[0].request else { unreachable!() };
        assert_eq!(ts, snapshot.ts(), "the same timestamp at the leader");

        // The snapshot stays at the node that served it.
        snapshot.get("k").await.unwrap();
        assert_eq!(a.received_where(|r| matches!(r, Request::Get { .. })).len(), 3);
        assert_eq!(b.received_where(|r| matches!(r, Request::Get { .. })).len(), 2);
    })
    .await;
}

/// Scenario: `ReadPreference::Any` spreads read-only transactions over the known nodes.
#[tokio::test]
async fn read_preference_any_round_robins() {
    within(async {
        let (a, b, _kv) = follower_and_leader().await;
        let options = ClientOptions { read_preference: ReadPreference::Any, ..quick() };
        // Connect through b, which reports both members.
        let client = Client::connect_with([b.address.clone()], options).await.unwrap();
        assert_eq!(client.members().len(), 2);
        for _ in 0..4 {
            client.read_only().await.unwrap();
        }
        let begins = |node: &MockServer| {
            node.received_where(|r| matches!(r, Request::BeginReadOnly { .. })).len()
        };
        assert_eq!((begins(&a), begins(&b)), (2, 2));
    })
    .await;
}

/// Scenario: a node id the client has never heard of is a clear error.
#[tokio::test]
async fn an_unknown_preferred_node_is_an_error() {
    within(async {
        let (a, _b, _kv) = follower_and_leader().await;
        let options = ClientOptions { read_preference: ReadPreference::Node(9), ..quick() };
        let client = Client::connect_with([a.address.clone()], options).await.unwrap();
        assert_eq!(client.read_only().await.unwrap_err(), Error::UnknownNode { id: 9 });
        assert_eq!(client.status_of(9).await.unwrap_err(), Error::UnknownNode { id: 9 });
        assert_eq!(client.status_of(1).await.unwrap().id, 1);
    })
    .await;
}

/// Scenario: the only known node is down; connect and later calls fail within their deadlines
/// instead of hanging, with errors that say so.
#[tokio::test]
async fn an_unreachable_cluster_fails_within_the_deadline() {
    within(async {
        // A port with nothing listening: bind, learn the port, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = Client::connect([dead.clone()]).await.unwrap_err();
        let Error::NoNodeReachable { tried, last_error: Some(last) } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(tried, &vec![dead.clone()]);
        assert!(matches!(**last, Error::Connection { .. }), "{last:?}");
        assert!(err.is_retryable());

        let (a, b, _kv) = follower_and_leader().await;
        let options = ClientOptions { retry_deadline: Duration::from_millis(300), ..quick() };
        let client = Client::connect_with([a.address.clone()], options).await.unwrap();
        client.put("x", "1").await.unwrap(); // learns b
        drop(b);
        let started = std::time::Instant::now();
        let err = client.begin().get("x").await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(err.is_retryable(), "{err:?}");
    })
    .await;
}

/// Scenario: membership changes go to the leader and update the client's view.
#[tokio::test]
async fn membership_changes_go_to_the_leader() {
    within(async {
        let (a, b, kv) = follower_and_leader().await;
        let members = vec![a.member(1), b.member(2)];
        b.set_handler({
            let members = std::sync::Mutex::new(members.clone());
            move |incoming| {
                let mut members = members.lock().unwrap();
                Reply::Answer(match &incoming.request {
                    Request::Status => Response::Status(Box::new(status(
                        2,
                        Role::Leader,
                        Some(members[1].clone()),
                        members.clone(),
                    ))),
                    Request::AddMember { id, peer_address, client_address, leap } => {
                        members.push(boundkv_client::Member {
                            id: *id,
                            peer_address: peer_address.clone(),
                            client_address: client_address.clone(),
                            voter: false,
                            leap: leap.clone(),
                        });
                        Response::Members(members.clone())
                    }
                    Request::RemoveMember { id } => {
                        members.retain(|m| m.id != *id);
                        Response::Members(members.clone())
                    }
                    r => kv.answer(r),
                })
            }
        });
        let client = Client::connect_with([a.address.clone()], quick()).await.unwrap();
        let after = client.add_member(3, "10.0.0.3:7100", "10.0.0.3:7000").await.unwrap();
        assert_eq!(after.len(), 3);
        assert_eq!(client.members(), after);
        let after = client.remove_member(1).await.unwrap();
        assert_eq!(after.iter().map(|m| m.id).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(client.members(), after);
        assert_eq!(client.status().await.unwrap().id, 2, "the leader answers status first");
    })
    .await;
}
