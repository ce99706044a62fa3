//! Three real `boundkv serve` processes on loopback, driven through the client.
//!
//! Each test's doc comment lists its scenario. Timing is never asserted; every wait is bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundkv_client::{Client, Error, WireError};
use boundkv_tests::jepsen::proxy::PeerProxy;
use boundkv_tests::{ClusterOptions, NodeSetup, SetupFn, TestCluster, free_port};

type Result<T = ()> = anyhow::Result<T>;

/// Writes `n` keys `prefix{i}` one after another, retrying each until acknowledged (the client
/// keeps the same transaction id across a commit's resends, so nothing applies twice).
async fn write_keys(client: &Client, prefix: &str, n: usize) -> Result<BTreeMap<String, String>> {
    let mut acked = BTreeMap::new();
    for i in 0..n {
        let (k, v) = (format!("{prefix}{i:04}"), format!("v{i}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match client.put(&k, &v).await {
                Ok(_) => break,
                Err(e)
                    if Instant::now() < deadline
                        && (e.is_retryable() || matches!(e, Error::OutcomeUnknown { .. })) =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => anyhow::bail!("writing {k}: {e}"),
            }
        }
        acked.insert(k, v);
    }
    Ok(acked)
}

/// Checks that every acknowledged write is visible through `client`.
async fn check_all(client: &Client, acked: &BTreeMap<String, String>) -> Result {
    let snapshot = client.read_only().await?;
    let rows = snapshot.scan::<[u8]>(.., None).await?;
    let found: BTreeMap<String, String> = rows
        .into_iter()
        .map(|(k, v)| {
            (String::from_utf8_lossy(&k).into_owned(), String::from_utf8_lossy(&v).into_owned())
        })
        .collect();
    for (k, v) in acked {
        assert_eq!(found.get(k), Some(v), "acknowledged write {k} = {v} is missing or wrong");
    }
    Ok(())
}

/// Waits (at most 30 s) until node `id` serves every acknowledged write: a node that was cut off
/// or down catches up.
async fn caught_up(cluster: &TestCluster, id: u64, acked: &BTreeMap<String, String>) -> Result {
    let reader = cluster.client_reading_from(id).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check_all(&reader, acked).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("node {id} not caught up yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// - three nodes; a client writes through the cluster (the leader);
/// - a second client whose reads go to a follower reads at `latest` and sees the write, every
///   time, right after each acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_write_through_the_leader_is_read_through_a_follower() -> Result {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    let leader = cluster.leader().await?;
    let follower = cluster.nodes.iter().map(|n| n.id).find(|&i| i != leader).unwrap();
    let writer = cluster.client().await?;
    let reader = cluster.client_reading_from(follower).await?;
    for i in 0..20 {
        let v = format!("v{i}");
        writer.put("probe", &v).await?;
        let snapshot = reader.read_only().await?;
        assert_eq!(
            snapshot.get("probe").await?.as_deref(),
            Some(v.as_bytes()),
            "follower {follower} read {i}"
        );
    }
    let status = reader.status_of(follower).await?;
    assert_eq!(status.role, boundkv_client::Role::Follower);
    Ok(())
}

/// - the leader is killed (SIGKILL) mid-stream; writes go on through the new leader;
/// - the old leader restarts on its data and catches up: reads served by it see every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_kill_the_leader_keep_writing_restart_it_and_catch_up() -> Result {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let client = cluster.client().await?;
    let mut acked = write_keys(&client, "before/", 20).await?;
    let old = cluster.leader().await?;
    cluster.kill(old);
    acked.extend(write_keys(&client, "during/", 20).await?);
    let new = cluster.leader().await?;
    assert_ne!(new, old, "a new leader took over");
    cluster.restart(old)?;
    caught_up(&cluster, old, &acked).await
}

/// - writes are acknowledged; then every node is killed at once (SIGKILL) and restarted: every
///   acknowledged write is there;
/// - then every node is stopped gracefully (SIGTERM; each exits 0) and restarted: again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_stop_all_restart_all_and_find_every_acknowledged_write() -> Result {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let client = cluster.client().await?;
    let mut acked = write_keys(&client, "a/", 30).await?;
    drop(client);
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    let client = cluster.client().await?;
    check_all(&client, &acked).await?;
    acked.extend(write_keys(&client, "b/", 10).await?);
    drop(client);
    for id in [1, 2, 3] {
        assert!(cluster.stop(id), "node {id} exits cleanly on SIGTERM\n{}", cluster.logs());
    }
    for id in [1, 2, 3] {
        cluster.restart(id)?;
    }
    let client = cluster.client().await?;
    check_all(&client, &acked).await?;
    Ok(())
}

/// Durability under replication, seen from outside with `strace`: sequential commits, and
/// between any two acknowledgements the leader and at least one follower completed an
/// `fdatasync` of their database (a quorum of durable copies before every answer). Closed
/// timestamps are slowed to one a minute so that their own syncs cannot stand in for the commits'.
/// Its mutation twin runs the nodes with `--durability buffered` and must be caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_every_acknowledgement_follows_a_quorum_of_fdatasyncs() -> Result {
    let violations = strace_commits(false).await?;
    assert_eq!(
        violations, 0,
        "{violations} acknowledgements without a quorum of syncs before them"
    );
    Ok(())
}

/// See [`t40_every_acknowledgement_follows_a_quorum_of_fdatasyncs`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_mutant_buffered_durability_is_caught() -> Result {
    let violations = strace_commits(true).await?;
    assert!(violations > 0, "the strace check must catch a cluster that does not sync");
    Ok(())
}

async fn strace_commits(buffered: bool) -> Result<usize> {
    let mut options = ClusterOptions::default();
    options.serve_args.extend(["--close-interval".into(), "60s".into()]);
    if buffered {
        options.serve_args.extend(["--durability".into(), "buffered".into()]);
    }
    let cluster = TestCluster::start(options)?;
    let client = cluster.client().await?;
    client.put("warm", "up").await?;
    let leader = cluster.leader().await?;
    let mut traces = Vec::new();
    for n in &cluster.nodes {
        let out = cluster.dir().join(format!("strace-{}.log", n.id));
        traces.push((
            n.id,
            out.clone(),
            cluster.strace(n.id, "trace=fdatasync,write,writev", &out)?,
        ));
    }
    const COMMITS: usize = 20;
    for i in 0..COMMITS {
        client.put(format!("k{i}"), "v").await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let leader_client_port = cluster.node(leader).client.rsplit(':').next().unwrap().to_string();
    let mut syncs: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    let mut acks: Vec<f64> = Vec::new();
    for (id, path, mut strace) in traces {
        let _ = strace.kill();
        let _ = strace.wait();
        let text = std::fs::read_to_string(&path)?;
        for line in text.lines() {
            let Some(t) = line.split_whitespace().nth(1).and_then(|t| t.parse::<f64>().ok()) else {
                continue;
            };
            let completed_sync = (line.contains("fdatasync(") && !line.contains("<unfinished"))
                || line.contains("<... fdatasync resumed>");
            if completed_sync {
                syncs.entry(id).or_default().push(t);
            }
            // A response on the leader's client socket (`-y` shows TCP:[local->remote]).
            if id == leader
                && (line.contains("write(") || line.contains("writev("))
                && line.contains(&format!("127.0.0.1:{leader_client_port}->"))
            {
                acks.push(t);
            }
        }
    }
    assert!(acks.len() >= COMMITS, "found {} responses on the leader's client socket", acks.len());
    let mut violations = 0;
    for pair in acks.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        let synced =
            |id: u64| syncs.get(&id).is_some_and(|s| s.iter().any(|&t| t > from && t < to));
        let followers = cluster.nodes.iter().filter(|n| n.id != leader && synced(n.id)).count();
        if !synced(leader) || followers == 0 {
            violations += 1;
        }
    }
    Ok(violations)
}

/// Bad input to a real server: garbage bytes, an oversized length prefix, another protocol
/// version, a frame that does not decode, and a client that half-closes after sending: each
/// gets a defined answer (or a close) and the server goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_bad_input_gets_an_answer_and_breaks_nothing() -> Result {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..ClusterOptions::default() })?;
    let client = cluster.client().await?;
    client.put("still", "here").await?;
    let addr = cluster.node(1).client.clone();
    let exchange = |bytes: Vec<u8>, half_close: bool| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&bytes)?;
        if half_close {
            s.shutdown(std::net::Shutdown::Write)?;
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        Ok(out)
    };
    let frame = |payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    };
    let decode_all = |mut bytes: &[u8]| {
        let mut frames = Vec::new();
        while bytes.len() >= 4 {
            let len = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
            frames
                .push(boundkv_wire::decode_response(&bytes[4..4 + len]).expect("a response frame"));
            bytes = &bytes[4 + len..];
        }
        frames
    };
    // An oversized length prefix: FrameTooLarge under id 0, then the server closes.
    let answer = decode_all(&exchange(vec![0xff, 0xff, 0xff, 0xff, 1, 2, 3], false)?);
    assert!(
        matches!(answer.as_slice(), [f] if f.id == 0 && matches!(f.response, boundkv_wire::Response::Error(WireError::FrameTooLarge { .. }))),
        "{answer:?}"
    );
    // Another version (300), id 7: UnsupportedVersion under id 7.
    let answer = decode_all(&exchange(frame(&[0xAC, 0x02, 0x07, 0xff]), true)?);
    assert!(
        matches!(answer.as_slice(), [f] if f.id == 7 && matches!(f.response, boundkv_wire::Response::Error(WireError::UnsupportedVersion { client: 300, .. }))),
        "{answer:?}"
    );
    // This version (3), id 9, an unknown request variant: Malformed under id 9.
    let answer = decode_all(&exchange(frame(&[0x03, 0x09, 0x63]), true)?);
    assert!(
        matches!(answer.as_slice(), [f] if f.id == 9 && matches!(f.response, boundkv_wire::Response::Error(WireError::Malformed(_)))),
        "{answer:?}"
    );
    // A Status request, then a half-close: the request is still answered.
    let status = boundkv_wire::encode_request(&boundkv_wire::RequestFrame::new(
        3,
        boundkv_wire::Request::Status,
    ))?;
    let answer = decode_all(&exchange(frame(&status), true)?);
    assert!(
        matches!(answer.as_slice(), [f] if f.id == 3 && matches!(f.response, boundkv_wire::Response::Status(_))),
        "{answer:?}"
    );
    // Garbage: no crash.
    let _ = exchange(b"GET / HTTP/1.1\r\n\r\n".to_vec(), true)?;
    // The server still serves.
    assert_eq!(client.get("still").await?.as_deref(), Some(&b"here"[..]));
    client.put("after", "bad input").await?;
    Ok(())
}

/// The Prometheus endpoint answers with the metrics the docs list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_metrics_are_served() -> Result {
    let cluster = TestCluster::start(ClusterOptions { nodes: 1, ..ClusterOptions::default() })?;
    let client = cluster.client().await?;
    client.put("m", "1").await?;
    let body = boundkv_tests::scrape_metrics(&cluster.node(1).metrics)?;
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for name in [
        "boundkv_commit_wait_seconds_bucket",
        "boundkv_clock_bound_seconds",
        "boundkv_raft_term",
        "boundkv_raft_applied_index",
        "boundkv_is_leader 1",
        "boundkv_lease_valid 1",
        "boundkv_requests_total{kind=\"commit\",outcome=\"ok\"}",
        "boundkv_request_duration_seconds_bucket",
    ] {
        assert!(body.contains(name), "/metrics lacks {name}:\n{body}");
    }
    Ok(())
}

/// Membership across processes: node 4 starts empty in join mode, is added (learner, caught up,
/// promoted), serves the data; then node 1 is removed and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t70_add_and_remove_members() -> Result {
    let mut cluster = TestCluster::start(ClusterOptions::default())?;
    let client = cluster.client().await?;
    let acked = write_keys(&client, "m/", 10).await?;
    let (peer, addr) = {
        let n4 = cluster.spawn_joiner(4)?;
        (n4.peer.clone(), n4.client.clone())
    };
    let members = client.add_member(4, peer, addr).await?;
    assert!(members.iter().any(|m| m.id == 4 && m.voter), "{members:?}");
    let reader = cluster.client_reading_from(4).await?;
    check_all(&reader, &acked).await?;
    let members = client.remove_member(1).await;
    let members = match members {
        Ok(m) => m,
        // Node 1 led and handed over first: ask again, at the new leader.
        Err(_) => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client.remove_member(1).await?
        }
    };
    assert!(members.iter().all(|m| m.id != 1), "{members:?}");
    client.put("after", "removal").await?;
    assert_eq!(reader.get("after").await?.as_deref(), Some(&b"removal"[..]));
    Ok(())
}

/// The consistency suite's peer proxy (its network where namespaces cannot be made) really cuts
/// links, and only the ones it is told to:
/// - three nodes whose Raft traffic passes the proxy (each advertises the proxy's port);
/// - the leader is cut off from both followers: they elect a new leader among themselves and
///   take writes, and the proxy counts the frames it dropped;
/// - healed, the old leader catches up and serves every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_the_peer_proxy_partitions_the_leader_away() -> Result {
    let ids = [1, 2, 3];
    let proxy = Arc::new(PeerProxy::start(&ids)?);
    let p = proxy.clone();
    let setup: SetupFn = Arc::new(move |id| NodeSetup {
        ports: p.listen_address(id).map(|l| (free_port(), l.port(), free_port())),
        advertise_peer: p.advertised_address(id).map(|a| a.to_string()),
        ..NodeSetup::default()
    });
    let cluster =
        TestCluster::start(ClusterOptions { setup: Some(setup), ..ClusterOptions::default() })?;
    assert_ne!(
        cluster.node(1).peer,
        cluster.node(1).peer_listen,
        "node 1 is reached through the proxy"
    );
    let client = cluster.client().await?;
    let mut acked = write_keys(&client, "before/", 10).await?;
    let old = cluster.leader().await?;
    let others: Vec<u64> = ids.into_iter().filter(|&i| i != old).collect();
    proxy.partition(&others.iter().map(|&o| (old, o)).collect());

    let deadline = Instant::now() + Duration::from_secs(30);
    let new = 'found: loop {
        for &id in &others {
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.status_of(cluster.node(id).client.as_str()),
            )
            .await
                && s.role == boundkv_client::Role::Leader
                && s.lease_valid
            {
                break 'found id;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no new leader behind the partition\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(new, old);
    acked.extend(write_keys(&client, "during/", 10).await?);
    let (_, dropped) = proxy.counts();
    assert!(dropped > 0, "the proxy dropped the cut links' frames");

    proxy.heal();
    caught_up(&cluster, old, &acked).await
}

/// Garbage collection across processes (`--gc-retention 300ms --gc-interval 50ms`):
/// - versions of one key are written; the leader raises the GC horizon through the log;
/// - every node, asked for a snapshot at the first version's timestamp, answers
///   `BelowGcHorizon`; every node serves the newest value; `/metrics` shows the horizon's age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t90_old_versions_are_collected_on_every_node() -> Result {
    let mut options = ClusterOptions::default();
    options
        .serve_args
        .extend(["--gc-retention", "300ms", "--gc-interval", "50ms"].map(String::from));
    let cluster = TestCluster::start(options)?;
    let client = cluster.client().await?;
    let first = client.put("k", "v0").await?.ts;
    for i in 1..5 {
        client.put("k", format!("v{i}")).await?;
    }
    for node in &cluster.nodes {
        let reader = cluster.client_reading_from(node.id).await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match reader.read_at(first).await {
                Err(Error::Server(WireError::BelowGcHorizon { .. })) => break,
                other => {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "node {} still serves below the horizon: {:?}",
                        node.id,
                        other.map(|s| s.ts())
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        assert_eq!(reader.get("k").await?.as_deref(), Some(&b"v4"[..]), "node {}", node.id);
        let body = boundkv_tests::scrape_metrics(&node.metrics)?;
        let age: f64 = boundkv_tests::metric_value(&body, "boundkv_gc_horizon_age_seconds")
            .ok_or_else(|| {
                let head: String = body.chars().take(300).collect();
                anyhow::anyhow!(
                    "node {}: no gc_horizon_age_seconds in /metrics ({} bytes, beginning {head:?})",
                    node.id,
                    body.len()
                )
            })?;
        assert!(age > 0.0, "node {}: the horizon's age {age}", node.id);
    }
    Ok(())
}

/// Peer clock checks, as `status` shows them: every node reports what it measured of each other
/// member's clock (offset, uncertainty, consistent), and on one healthy machine every clock
/// agrees, within its uncertainty, and no node is fenced; and every node's readings are widened
/// to what its peers verify (`/metrics`: the bound used above the source's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t61_status_shows_each_members_measured_clock_offset() -> Result {
    let cluster = TestCluster::start(ClusterOptions::default())?;
    let client = cluster.client().await?;
    client.put("c", "1").await?;
    let ids: Vec<u64> = cluster.nodes.iter().map(|n| n.id).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &id in &ids {
        loop {
            let s = client.status_of(id).await?;
            let peers: Vec<u64> = s.clock.peers.iter().map(|p| p.id).collect();
            let others: Vec<u64> = ids.iter().copied().filter(|&o| o != id).collect();
            if peers == others {
                for p in &s.clock.peers {
                    assert!(
                        p.consistent,
                        "node {id} finds node {}'s clock inconsistent: {p:?}",
                        p.id
                    );
                    assert!(
                        p.offset_nanos.unsigned_abs() as u128 <= p.uncertainty.as_nanos(),
                        "node {id}: node {}'s offset is outside its uncertainty: {p:?}",
                        p.id
                    );
                }
                assert!(s.clock.problem.is_none(), "node {id}: {:?}", s.clock.problem);
                break;
            }
            assert!(Instant::now() < deadline, "node {id} measured {peers:?}, not {others:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every node's timestamps use its clock widened to what its peers verify: wider than the
    // source's own bound (by about a peer's bound plus half a round trip).
    for node in &cluster.nodes {
        let body = boundkv_tests::scrape_metrics(&node.metrics)?;
        let metric = |name: &str| {
            boundkv_tests::metric_value(&body, name)
                .ok_or_else(|| anyhow::anyhow!("node {}: no {name} in /metrics", node.id))
        };
        let used = metric("boundkv_clock_bound_seconds")?;
        let source = metric("boundkv_clock_source_bound_seconds")?;
        assert!(used > source, "node {}: bound used {used} s, the source's {source} s", node.id);
    }
    Ok(())
}
