//! The conformance suite every [`Engine`] must pass, and test engines for the layers above.
//!
//! ```ignore
//! boundkv_storage::testsuite::conformance(|| MyEngine::new());
//! boundkv_storage::testsuite::durable_conformance(|dir| MyEngine::open(dir));
//! ```
//!
//! Each check panics with a message naming the rule it found broken.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::engine::{Engine, ScanIter, Status, WriteBatch};
use crate::error::{Error, Result};

fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn put(e: &impl Engine, k: &[u8], v: &[u8]) {
    let mut b = WriteBatch::new();
    b.put(k, v);
    e.write(b).expect("write");
}

fn collect(it: ScanIter<'_>) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.collect::<Result<_>>().expect("scan")
}

fn range(lo: Bound<&str>, hi: Bound<&str>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let conv = |b: Bound<&str>| match b {
        Bound::Included(s) => Bound::Included(s.as_bytes().to_vec()),
        Bound::Excluded(s) => Bound::Excluded(s.as_bytes().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (conv(lo), conv(hi))
}

/// Every rule an engine must follow that does not involve reopening it.
pub fn conformance<E: Engine>(new: impl Fn() -> E) {
    point_reads_and_writes(&new());
    batches_apply_in_order_as_one(&new());
    scans_respect_bounds_and_order(&new());
    odd_keys_and_values(&new());
    flush_is_callable_concurrently(new());
}

fn point_reads_and_writes(e: &impl Engine) {
    assert_eq!(e.get(b"a").unwrap(), None, "a fresh engine is empty");
    put(e, b"a", b"1");
    assert_eq!(e.get(b"a").unwrap(), Some(b"1".to_vec()), "get sees a returned write");
    put(e, b"a", b"2");
    assert_eq!(e.get(b"a").unwrap(), Some(b"2".to_vec()), "a put overwrites");
    let mut b = WriteBatch::new();
    b.delete(b"a".to_vec());
    e.write(b).unwrap();
    assert_eq!(e.get(b"a").unwrap(), None, "a delete removes");
    let mut b = WriteBatch::new();
    b.delete(b"never".to_vec());
    e.write(b).expect("deleting a missing key is fine");
    e.write(WriteBatch::new()).expect("an empty batch is fine");
    assert!(!e.status().unwrap().name.is_empty());
}

fn batches_apply_in_order_as_one(e: &impl Engine) {
    let mut b = WriteBatch::new();
    b.put(b"x".to_vec(), b"1".to_vec()).delete(b"x".to_vec());
    b.delete(b"y".to_vec()).put(b"y".to_vec(), b"2".to_vec());
    b.put(b"z".to_vec(), b"1".to_vec()).put(b"z".to_vec(), b"3".to_vec());
    assert_eq!(b.len(), 6);
    e.write(b).unwrap();
    assert_eq!(e.get(b"x").unwrap(), None, "put then delete in one batch: deleted");
    assert_eq!(e.get(b"y").unwrap(), Some(b"2".to_vec()), "delete then put: present");
    assert_eq!(e.get(b"z").unwrap(), Some(b"3".to_vec()), "the last put wins");
}

fn scans_respect_bounds_and_order(e: &impl Engine) {
    for k in ["b", "a", "d", "c", "ab", "e"] {
        put(e, k.as_bytes(), k.as_bytes());
    }
    let keys = |r| {
        collect(e.scan(r))
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(range(Bound::Unbounded, Bound::Unbounded)), ["a", "ab", "b", "c", "d", "e"]);
    assert_eq!(keys(range(Bound::Included("ab"), Bound::Excluded("d"))), ["ab", "b", "c"]);
    assert_eq!(keys(range(Bound::Excluded("ab"), Bound::Included("d"))), ["b", "c", "d"]);
    assert_eq!(keys(range(Bound::Included("bb"), Bound::Unbounded)), ["c", "d", "e"]);
    assert_eq!(keys(range(Bound::Unbounded, Bound::Excluded("a"))), Vec::<String>::new());
    assert_eq!(keys(range(Bound::Included("c"), Bound::Included("c"))), ["c"]);
    let rev: Vec<_> = e
        .scan(range(Bound::Included("b"), Bound::Unbounded))
        .rev()
        .map(|r| String::from_utf8(r.unwrap().0).unwrap())
        .collect();
    assert_eq!(rev, ["e", "d", "c", "b"], "next_back walks backwards");
    let mut both = e.scan(range(Bound::Unbounded, Bound::Unbounded));
    assert_eq!(both.next().unwrap().unwrap(), kv("a", "a"));
    assert_eq!(both.next_back().unwrap().unwrap(), kv("e", "e"), "both ends of one iterator");
}

fn odd_keys_and_values(e: &impl Engine) {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"", b"empty key"),
        (b"\x00", b""),
        (b"\x00\x00\xff", b"\xff\x00"),
        (b"\xff\xff", b"x"),
        (b"k\x00", b"nul"),
    ];
    for (k, v) in cases {
        put(e, k, v);
    }
    for (k, v) in cases {
        assert_eq!(e.get(k).unwrap().as_deref(), Some(v), "key {k:02x?}");
    }
    let all = collect(e.scan((Bound::Unbounded, Bound::Unbounded)));
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "scan order is byte order");
    let big = vec![0xAB; crate::MAX_VALUE_LEN];
    put(e, b"big", &big);
    assert_eq!(e.get(b"big").unwrap(), Some(big), "the largest value MVCC stores round-trips");
}

fn flush_is_callable_concurrently<E: Engine>(e: E) {
    let e = Arc::new(e);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    put(&*e, format!("t{t}-{i}").as_bytes(), b"v");
                    e.flush().expect("flush");
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(collect(e.scan((Bound::Unbounded, Bound::Unbounded))).len(), 200);
}

/// The rules of a durable engine: what `flush` returned for is there after reopening.
pub fn durable_conformance<E: Engine>(open: impl Fn(&Path) -> E) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let e = open(dir.path());
        for i in 0..100u32 {
            let mut b = WriteBatch::new();
            b.put(format!("k{i:03}").into_bytes(), i.to_be_bytes().to_vec());
            if i % 10 == 0 && i > 0 {
                b.delete(format!("k{:03}", i - 1).into_bytes());
            }
            e.write(b).unwrap();
        }
        e.flush().unwrap();
    }
    let e = open(dir.path());
    let all = collect(e.scan((Bound::Unbounded, Bound::Unbounded)));
    assert_eq!(all.len(), 100 - 9, "every flushed batch survives reopening");
    assert_eq!(e.get(b"k050").unwrap(), Some(50u32.to_be_bytes().to_vec()));
    assert_eq!(e.get(b"k049").unwrap(), None, "and so do deletes");
}

/// An engine wrapper whose writes and flushes can be made to fail, as a full or broken disk
/// would. Once a flush has failed it stays failed, like a real engine after `fsync` fails.
pub struct FaultyEngine<E: Engine> {
    inner: E,
    fail_writes: AtomicBool,
    fail_flushes: AtomicBool,
}

impl<E: Engine> FaultyEngine<E> {
    /// Wraps `inner`, healthy.
    pub fn new(inner: E) -> Self {
        FaultyEngine {
            inner,
            fail_writes: AtomicBool::new(false),
            fail_flushes: AtomicBool::new(false),
        }
    }

    /// Makes writes fail (`true`) or succeed again (`false`).
    pub fn set_fail_writes(&self, on: bool) {
        self.fail_writes.store(on, Ordering::SeqCst);
    }

    /// Makes every flush from now on fail.
    pub fn fail_flushes(&self) {
        self.fail_flushes.store(true, Ordering::SeqCst);
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Engine> Engine for FaultyEngine<E> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(&self, range: (Bound<Vec<u8>>, Bound<Vec<u8>>)) -> ScanIter<'_> {
        self.inner.scan(range)
    }
    fn write(&self, batch: WriteBatch) -> Result<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(Error::Io("No space left on device (os error 28) [injected]".into()));
        }
        self.inner.write(batch)
    }
    fn flush(&self) -> Result<()> {
        if self.fail_flushes.load(Ordering::SeqCst) {
            return Err(Error::Io("fdatasync: Input/output error (os error 5) [injected]".into()));
        }
        self.inner.flush()
    }
    fn status(&self) -> Result<Status> {
        self.inner.status()
    }
}
