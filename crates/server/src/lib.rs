//! boundkv's networked server (in progress).

pub mod peer;
