//! The suite's network: one Linux network namespace per node, joined by veth pairs to a bridge
//! in a switch namespace, with a veth into the runner's own namespace for the clients; and
//! partitions cut with nftables *inside* each node's namespace, so the host's firewall is never
//! touched.
//!
//! ```text
//!   runner (clients)        switch namespace bjS{run}          node namespaces
//!   bj{run}h 10.77.R.254 ── bj{run}sh ┐
//!                                     ├─ br0 ─ bj{run}s1 ── bj{run}v1 10.77.R.1   (bj{run}n1)
//!                                     ├─────── bj{run}s2 ── bj{run}v2 10.77.R.2   (bj{run}n2)
//!                                     └─────── bj{run}s3 ── bj{run}v3 10.77.R.3   (bj{run}n3)
//! ```
//!
//! `R` is derived from the run id, so concurrent runs use different subnets and names. Every
//! address is one the suite created, inside namespaces it created; nothing else is addressed.
//!
//! A partition is a set of *blocked pairs* of nodes: for each pair (a, b), node a's namespace
//! gets nftables rules dropping packets to and from b's address (b's gets the same for a), both
//! directions, input and output. Client traffic (from 10.77.R.254) is never dropped. Healing
//! deletes the `nemesis` table in every node's namespace. Established TCP connections across a
//! cut simply stop delivering, as in a real partition.
//!
//! Creating namespaces needs root (CAP_NET_ADMIN) and the `ip` and `nft` tools (Debian's
//! `iproute2` and `nftables`, which `tests/setup-jepsen.sh` installs). [`Netns::available`] probes
//! for them.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, bail};

/// The namespaces of one run.
pub struct Netns {
    run: u32,
    nodes: Vec<u64>,
    created: bool,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn nft_in(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (install nftables)")?;
    use std::io::Write;
    child.stdin.take().expect("piped").write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Netns {
    /// Whether namespaces can be made here (root, `ip`, `nft`): tries one and removes it.
    pub fn available() -> bool {
        let probe = format!("bjprobe{}", std::process::id() % 100_000);
        let ok = ip(&["netns", "add", &probe]).is_ok();
        if ok {
            let nft = Command::new("ip")
                .args(["netns", "exec", &probe, "nft", "list", "tables"])
                .output()
                .is_ok_and(|o| o.status.success());
            let _ = ip(&["netns", "del", &probe]);
            return nft;
        }
        false
    }

    /// Creates the namespaces, bridge and veths for `nodes` (ids 1..=250).
    pub fn create(run: u32, nodes: &[u64]) -> anyhow::Result<Netns> {
        // A run id whose names nobody uses: concurrent runs must not touch each other's
        // namespaces (a run killed before cleaning up leaves its slot taken; there are 200).
        let existing = Command::new("ip").args(["netns", "list"]).output().context("running ip")?;
        let existing = String::from_utf8_lossy(&existing.stdout).into_owned();
        let taken = |r: u32| existing.split_whitespace().any(|w| w == format!("bjS{r}"));
        let run = (0..200).map(|i| (run + i) % 200 + 20).find(|&r| !taken(r)).context(
            "every network slot of the suite is taken (stale namespaces: ip netns list)",
        )?;
        let mut net = Netns { run, nodes: nodes.to_vec(), created: true };
        net.remove_stale();
        let sw = net.switch();
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let (host, host_peer) = (format!("bj{run}h"), format!("bj{run}sh"));
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &host_peer])?;
        ip(&["link", "set", &host_peer, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &host_peer, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &host_peer, "up"])?;
        ip(&["addr", "add", &format!("{}/24", net.client_ip()), "dev", &host])?;
        ip(&["link", "set", &host, "up"])?;
        for &id in nodes {
            net.add_node(id)?;
        }
        net.nodes = nodes.to_vec();
        Ok(net)
    }

    fn add_node(&self, id: u64) -> anyhow::Result<()> {
        let (ns, sw, run) = (self.ns(id), self.switch(), self.run);
        let (v, s) = (format!("bj{run}v{id}"), format!("bj{run}s{id}"));
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &v, "type", "veth", "peer", "name", &s])?;
        ip(&["link", "set", &v, "netns", &ns])?;
        ip(&["link", "set", &s, "netns", &sw])?;
        ip(&["-n", &sw, "link", "set", &s, "master", "br0"])?;
        ip(&["-n", &sw, "link", "set", &s, "up"])?;
        ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.node_ip(id)), "dev", &v])?;
        ip(&["-n", &ns, "link", "set", &v, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn remove_stale(&self) {
        let _ = ip(&["netns", "del", &self.switch()]);
        for id in 1..=9 {
            let _ = ip(&["netns", "del", &self.ns(id)]);
        }
        let _ = ip(&["link", "del", &format!("bj{}h", self.run)]);
    }

    fn switch(&self) -> String {
        format!("bjS{}", self.run)
    }

    /// Node `id`'s namespace.
    pub fn ns(&self, id: u64) -> String {
        format!("bj{}n{id}", self.run)
    }

    /// Node `id`'s address.
    pub fn node_ip(&self, id: u64) -> String {
        format!("10.77.{}.{id}", self.run)
    }

    /// The clients' address (in the runner's namespace).
    pub fn client_ip(&self) -> String {
        format!("10.77.{}.254", self.run)
    }

    /// The command prefix that runs a program in node `id`'s namespace.
    pub fn prefix(&self, id: u64) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.ns(id)]
    }

    /// Cuts the links between every pair in `blocked` (both directions), replacing any earlier
    /// partition.
    pub fn partition(&self, blocked: &BTreeSet<(u64, u64)>) -> anyhow::Result<()> {
        self.heal()?;
        for &id in &self.nodes {
            let peers: Vec<String> = blocked
                .iter()
                .filter_map(|&(a, b)| match () {
                    _ if a == id => Some(self.node_ip(b)),
                    _ if b == id => Some(self.node_ip(a)),
                    _ => None,
                })
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if peers.is_empty() {
                continue;
            }
            let set = peers.join(", ");
            let script = format!(
                "table inet nemesis {{\n\
                 \x20 chain in {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n\
                 \x20 chain out {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            nft_in(&self.ns(id), &script)?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        for &id in &self.nodes {
            // Absent when no partition was made there: not an error.
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns(id), "nft", "delete", "table", "inet", "nemesis"])
                .stderr(std::process::Stdio::null())
                .status();
        }
        Ok(())
    }

    /// Removes everything this run created.
    pub fn destroy(&mut self) {
        if self.created {
            self.remove_stale();
            self.created = false;
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.destroy();
    }
}
