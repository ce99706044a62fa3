//! One module per subcommand.

pub(crate) mod clock;
pub(crate) mod demo;
pub(crate) mod kv;
