//! Where `boundkv up` records the local cluster it runs, so that the other commands find it
//! without `--cluster`.
//!
//! Two files:
//!
//! - `DIR/cluster.json`, in the cluster's own directory: its members (ids and addresses). A
//!   second `boundkv up --dir DIR` reuses it, so a restarted cluster keeps its addresses and its
//!   data directories keep their identities.
//! - the *pointer*, `$BOUNDKV_UP_FILE` or `$XDG_RUNTIME_DIR/boundkv/up.json` (falling back to
//!   `/tmp/boundkv-UID/up.json`): the running `up` process's id and the cluster's directory and
//!   members. A command with neither `--cluster` nor `--data` reads it and checks that the process
//!   is still alive, so a pointer left by a killed `up` is ignored.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A node of a local cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalNode {
    pub(crate) id: u64,
    pub(crate) client: String,
    pub(crate) peer: String,
    pub(crate) metrics: String,
}

/// What `up` records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalCluster {
    /// The `up` process.
    pub(crate) pid: u32,
    /// The cluster's directory.
    pub(crate) dir: PathBuf,
    pub(crate) nodes: Vec<LocalNode>,
}

impl LocalCluster {
    /// The client addresses, comma-separated, as `--cluster` takes them.
    pub(crate) fn client_addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }
}

/// The pointer file's path.
pub(crate) fn pointer_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BOUNDKV_UP_FILE") {
        return PathBuf::from(p);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("boundkv").join("up.json"),
        _ => {
            // SAFETY: getuid has no preconditions and cannot fail.
            let uid = unsafe { libc::getuid() };
            PathBuf::from(format!("/tmp/boundkv-{uid}")).join("up.json")
        }
    }
}

/// Writes `value` as JSON to `path` atomically (write a temporary file, rename it).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The local cluster a running `boundkv up` recorded, if there is one and its process lives.
pub(crate) fn running() -> Option<LocalCluster> {
    let text = std::fs::read(pointer_path()).ok()?;
    let cluster: LocalCluster = serde_json::from_slice(&text).ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists; it sends nothing.
    let alive = unsafe { libc::kill(cluster.pid as libc::pid_t, 0) } == 0;
    alive.then_some(cluster)
}

/// Removes the pointer if it points at process `pid`.
pub(crate) fn remove_pointer(pid: u32) {
    let path = pointer_path();
    if let Ok(text) = std::fs::read(&path)
        && let Ok(c) = serde_json::from_slice::<LocalCluster>(&text)
        && c.pid == pid
    {
        let _ = std::fs::remove_file(path);
    }
}
