//! The clock's high-water mark, kept in the database's own metadata so it is synced with the data
//! (through the same engine and the same group commit).

use std::sync::Arc;

use boundkv_clockbound::{HighWaterMark, HighWaterMarkError, Timestamp};
use boundkv_storage::{Engine, Mvcc, mvcc::meta};

/// [`HighWaterMark`] on MVCC metadata.
pub struct MvccHighWaterMark<E: Engine> {
    mvcc: Arc<Mvcc<E>>,
}

impl<E: Engine> MvccHighWaterMark<E> {
    /// The mark stored in `mvcc`'s metadata.
    pub fn new(mvcc: Arc<Mvcc<E>>) -> Self {
        MvccHighWaterMark { mvcc }
    }
}

impl<E: Engine> HighWaterMark for MvccHighWaterMark<E> {
    fn load(&self) -> Result<Option<Timestamp>, HighWaterMarkError> {
        self.mvcc
            .get_meta_u64(meta::CLOCK_HIGH_WATER_MARK)
            .map(|v| v.map(Timestamp::from_nanos))
            .map_err(|e| HighWaterMarkError(e.to_string()))
    }

    fn store(&self, mark: Timestamp) -> Result<(), HighWaterMarkError> {
        // set_meta writes and flushes (fdatasync) before returning.
        self.mvcc
            .set_meta(meta::CLOCK_HIGH_WATER_MARK, &mark.as_nanos().to_be_bytes())
            .map_err(|e| HighWaterMarkError(e.to_string()))
    }
}
