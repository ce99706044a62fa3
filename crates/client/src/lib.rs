//! boundkv's client (in progress).
