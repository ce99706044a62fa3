//! Leap-second policies across real `boundkv serve` processes (issue 12, item 3): every member
//! declares how its clock handles a leap second (`--leap step|smear`), the membership records
//! it, and a member with another policy than the membership's is refused.
//!
//! The leap itself (the kernel's step and the step guard absorbing it) cannot be made to happen
//! to a real process here: it is tested with a simulated clock and a simulated kernel in
//! `clockbound` (`guard::tests::leap`) and `consensus` (`clock_check::tests`).
//!
//! Timing is never asserted; every wait is bounded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boundkv_tests::{ClusterOptions, NodeSetup, TestCluster, boundkv_bin, free_port};

type Result<T = ()> = anyhow::Result<T>;

fn metrics(address: &str) -> Result<String> {
    let mut s = TcpStream::connect(address)?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The cluster name a data directory belongs to (its identity file's second line).
fn cluster_name(dir: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("identity"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("cluster "))
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no cluster in {}", dir.display()))
}

/// - one founding node, `--leap step` (the default): `status` and `/metrics` show its policy
///   and the kernel's leap state (read with `adjtimex` on this machine), the membership records
///   `step`;
/// - node 2 starts empty with `--leap smear` (`BOUNDKV_LEAP=smear`) and is offered to the leader
///   as a smearing member: refused, through the client and through `boundkv member add`, with an
///   error naming both policies; the membership is unchanged;
/// - node 1 is stopped and started again with `--leap smear`: it refuses to start, naming both
///   policies; started again with its own policy it serves as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_a_member_with_another_leap_policy_is_refused() -> Result {
    let setup = Arc::new(|id: u64| NodeSetup {
        env: if id == 2 { vec![("BOUNDKV_LEAP".into(), "smear".into())] } else { Vec::new() },
        ..NodeSetup::default()
    });
    let mut cluster = TestCluster::start(ClusterOptions {
        nodes: 1,
        setup: Some(setup),
        ..ClusterOptions::default()
    })?;
    let client = cluster.client().await?;
    client.put("before", "1").await?;

    tracing::info!("--- status and /metrics show the policy and the kernel's leap state");
    let status = client.status().await?;
    assert!(status.clock.leap.starts_with("step; kernel: "), "{:?}", status.clock.leap);
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].leap, "step");
    let body = metrics(&cluster.node(1).metrics)?;
    for line in [
        "boundkv_clock_leap_policy{policy=\"step\"} 1",
        "boundkv_clock_leap_policy{policy=\"smear\"} 0",
        "boundkv_clock_kernel_leap{state=\"unknown\"} 0",
        "boundkv_clock_leap_correction_seconds 0",
    ] {
        assert!(body.contains(line), "/metrics lacks {line}:\n{body}");
    }

    tracing::info!("--- a smearing node is offered to a stepping membership: refused");
    let (peer, addr) = {
        let n2 = cluster.spawn_joiner(2)?;
        (n2.peer.clone(), n2.client.clone())
    };
    let err = client.add_member_with_leap(2, &peer, &addr, "smear").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(
            "node 2 runs with --leap smear, but the membership's leap policy is --leap step"
        ),
        "{text}"
    );
    let out = Command::new(boundkv_bin()?)
        .args(["--cluster", &cluster.node(1).client, "member", "add"])
        .arg(format!("2={peer}/{addr}/smear"))
        .env_remove("BOUNDKV_CLUSTER")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "member add succeeded: {stderr}");
    assert!(stderr.contains("--leap smear") && stderr.contains("--leap step"), "{stderr}");
    assert_eq!(client.status().await?.members.len(), 1, "the membership changed");

    tracing::info!("--- node 1 restarted with --leap smear refuses to start");
    assert!(cluster.stop(1), "node 1 did not stop cleanly");
    let dir = cluster.node(1).dir.clone();
    let mut child = Command::new(boundkv_bin()?)
        .args(["--clock", "system:1ms", "--leap", "smear", "--data"])
        .arg(&dir)
        .args(["serve", "--id", "1", "--cluster-name", &cluster_name(&dir)?])
        .args(["--listen-client", &format!("127.0.0.1:{}", free_port())])
        .args(["--listen-peer", &format!("127.0.0.1:{}", free_port())])
        .env_remove("BOUNDKV_CLUSTER")
        .env_remove("BOUNDKV_LEAP")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("node 1 started with another leap policy and kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut stderr)?;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "node 1 runs with --leap smear, but the membership's leap policy is --leap step"
        ),
        "{stderr}"
    );

    tracing::info!("--- with its own policy again it serves as before");
    cluster.restart(1)?;
    let client = cluster.client().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get("before").await {
            Ok(v) => {
                assert_eq!(v.as_deref(), Some(&b"1"[..]));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("not serving yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
