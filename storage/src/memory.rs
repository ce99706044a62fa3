//! [`MemoryEngine`]: a `BTreeMap` behind a lock. For tests and for simulations that must not
//! touch the disk; nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use crate::engine::{Engine, ScanIter, Status, WriteBatch};
use crate::error::Result;

/// An in-memory engine. `flush` is a no-op: there is nothing to make durable.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    data: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for MemoryEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.data.read().unwrap_or_else(|e| e.into_inner()).get(key).cloned())
    }

    fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        // Copy the range out so the iterator holds no lock (and cannot deadlock a writer).
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let items: Vec<_> = data.range(range).map(|(k, v)| Ok((k.clone(), v.clone()))).collect();
        Box::new(items.into_iter())
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        for (key, value) in batch.into_ops() {
            match value {
                Some(v) => data.insert(key, v),
                None => data.remove(&key),
            };
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn status(&self) -> Result<Status> {
        Ok(Status { name: "memory".into(), size_on_disk: 0, durability: "none (in memory)".into() })
    }
}
