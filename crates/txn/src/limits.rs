//! The documented limits of one transaction. Exceeding one is a typed error and nothing is
//! written.
//!
//! | limit | default | why |
//! |---|---|---|
//! | key | 4 KiB | keys are copied into every version, index and conflict check |
//! | value | 64 KiB | keeps every sled page in the synced log (see `boundkv_storage::SledEngine`) |
//! | writes per transaction | 10,000 | one atomic batch; bounds commit latency and memory |
//! | bytes per transaction | 16 MiB | the same, in bytes |
//! | lifetime | 60 s | a transaction open longer cannot be validated; its caller may have gone |

use std::time::Duration;

use boundkv_storage::{MAX_KEY_LEN, MAX_VALUE_LEN};

use crate::error::{Error, Result};

/// The limits of one transaction (see the module table).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, bytes (at most the storage's 4 KiB).
    pub max_key_len: usize,
    /// Longest value, bytes (at most the storage's 64 KiB).
    pub max_value_len: usize,
    /// Most writes (distinct keys) in one transaction.
    pub max_writes: usize,
    /// Most key and value bytes in one transaction.
    pub max_txn_bytes: usize,
    /// Longest a read-write transaction may stay open.
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_len: MAX_KEY_LEN,
            max_value_len: MAX_VALUE_LEN,
            max_writes: 10_000,
            max_txn_bytes: 16 << 20,
            max_lifetime: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// Checks one key (and value) against the limits.
    pub fn check_write(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        let max_key = self.max_key_len.min(MAX_KEY_LEN);
        if key.len() > max_key {
            return Err(Error::KeyTooLarge { len: key.len(), max: max_key });
        }
        let max_value = self.max_value_len.min(MAX_VALUE_LEN);
        if let Some(v) = value
            && v.len() > max_value
        {
            return Err(Error::ValueTooLarge { len: v.len(), max: max_value });
        }
        Ok(())
    }

    /// Checks a key used for reading.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        self.check_write(key, None)
    }
}
