//! One module per subcommand.

pub(crate) mod clock;
pub(crate) mod cluster;
pub(crate) mod demo;
pub(crate) mod kv;
pub(crate) mod serve;
pub(crate) mod up;
