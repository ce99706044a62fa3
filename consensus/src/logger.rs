//! raft-rs logs through `slog`; boundkv logs through `tracing`. This drain forwards one to the
//! other, with raft-rs's key-values appended to the message and the node id as a field.

use std::fmt::Write as _;

/// A `slog` drain that emits `tracing` events.
pub(crate) struct TracingDrain {
    pub(crate) node_id: u64,
}

/// Collects slog key-values as ` key=value` text.
struct KvText(String);

impl slog::Serializer for KvText {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut kv = KvText(String::new());
        let _ = slog::KV::serialize(&record.kv(), record, &mut kv);
        let _ = slog::KV::serialize(values, record, &mut kv);
        let (msg, kv) = (record.msg(), kv.0);
        let node = self.node_id;
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(node, "raft: {msg}{kv}"),
            slog::Level::Warning => tracing::warn!(node, "raft: {msg}{kv}"),
            slog::Level::Info => tracing::info!(node, "raft: {msg}{kv}"),
            slog::Level::Debug => tracing::debug!(node, "raft: {msg}{kv}"),
            slog::Level::Trace => tracing::trace!(node, "raft: {msg}{kv}"),
        }
        Ok(())
    }
}

/// A raft-rs logger for node `id`.
pub(crate) fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(slog::Fuse(TracingDrain { node_id: id }), slog::o!())
}
