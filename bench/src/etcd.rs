//! A three-member etcd cluster on 127.0.0.1 (Debian's `etcd-server` 3.4), for the side-by-side
//! comparison: each member with its own data directory under a temporary directory, default
//! settings (the WAL is fdatasync'ed before a write is acknowledged, as boundkv's log is).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running etcd cluster; killed when dropped.
pub struct EtcdCluster {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    /// Client endpoints, `http://127.0.0.1:PORT`.
    pub endpoints: Vec<String>,
}

fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl EtcdCluster {
    /// Starts three members and waits until `etcdctl endpoint health` passes on all.
    pub fn start() -> anyhow::Result<EtcdCluster> {
        let etcd = which("etcd")
            .context("etcd is not installed: run bench/setup.sh (Debian's etcd-server)")?;
        let dir = tempfile::Builder::new().prefix("boundkv-bench-etcd-").tempdir()?;
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (port(), port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut children = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
            children.push(
                Command::new(&etcd)
                    .args(["--name", &format!("e{i}")])
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("e{i}")))
                    .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
                    .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
                    .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
                    .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
                    .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "boundkv-bench", "--log-level", "warn"])
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting etcd")?,
            );
        }
        let endpoints: Vec<String> =
            ports.iter().map(|(c, _)| format!("http://127.0.0.1:{c}")).collect();
        let cluster = EtcdCluster { _dir: dir, children, endpoints };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let healthy = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &cluster.endpoints.join(","), "endpoint", "health"])
                .output()
                .is_ok_and(|o| o.status.success());
            if healthy {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
}
