//! `SimDisk`: the engine conformance suite, and what a crash, a failed flush and a full disk
//! may and may not do.

use std::cell::RefCell;
use std::ops::Bound;

use boundkv_sim::disk::SimDisk;
use boundkv_storage::testsuite::{conformance, durable_conformance};
use boundkv_storage::{Engine, Error, WriteBatch};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in ops {
        match v {
            Some(v) => b.put(k.as_bytes(), v.as_bytes()),
            None => b.delete(k.as_bytes()),
        };
    }
    b
}

fn put(disk: &SimDisk, k: &str, v: &str) {
    disk.write(batch(&[(k, Some(v))])).unwrap();
}

fn all(disk: &SimDisk) -> Vec<(String, String)> {
    disk.scan((Bound::Unbounded, Bound::Unbounded))
        .map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
}

#[test]
fn sim_disk_conforms() {
    conformance(SimDisk::new);
}

/// Reopening is a crash after everything was flushed, so it must keep everything.
#[test]
fn sim_disk_is_durable_across_a_crash_after_flush() {
    let current: RefCell<Option<SimDisk>> = RefCell::default();
    let rng = RefCell::new(StdRng::seed_from_u64(1));
    durable_conformance(|_dir| {
        let disk = match current.borrow_mut().take() {
            Some(old) => old.crash(&mut *rng.borrow_mut()),
            None => SimDisk::new(),
        };
        *current.borrow_mut() = Some(disk.clone());
        disk
    });
}

#[test]
fn a_crash_keeps_every_flushed_batch_and_a_prefix_of_the_rest() {
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..200 {
        let disk = SimDisk::new();
        put(&disk, "a", "1");
        disk.write(batch(&[("gone", Some("x"))])).unwrap();
        disk.write(batch(&[("gone", None), ("b", Some("1"))])).unwrap();
        disk.flush().unwrap();
        // Three unflushed batches, each touching two keys so a torn one would show.
        for i in 1..=3 {
            let v = i.to_string();
            disk.write(batch(&[("x", Some(&v)), ("y", Some(&v))])).unwrap();
        }
        assert_eq!(disk.stats().unsynced_batches, 3);
        let after = disk.crash(&mut StdRng::seed_from_u64(seed));
        let state = all(&after);
        assert!(state.contains(&("a".into(), "1".into())), "flushed batches survive: {state:?}");
        assert!(state.contains(&("b".into(), "1".into())), "flushed batches survive: {state:?}");
        assert!(after.get(b"gone").unwrap().is_none(), "flushed deletes survive");
        let x = after.get(b"x").unwrap();
        assert_eq!(x, after.get(b"y").unwrap(), "a batch is never torn");
        // Kept: 0 (no x), or batches 1..=k (x = k).
        let kept = x.map_or(0, |v| String::from_utf8(v).unwrap().parse::<usize>().unwrap());
        seen.insert(kept);
        // What was recovered is durable on the new disk, which starts healthy.
        assert_eq!(after.stats().unsynced_batches, 0);
        assert_eq!(after.durable_len(), state.len());
        put(&after, "c", "1");
        after.flush().unwrap();
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 1, 2, 3], "every prefix length occurs");
}

#[test]
fn a_crash_keeps_the_first_batches_in_write_order() {
    // Overwrites of one key: the survivor's value tells how many batches were kept, and the
    // kept ones must be the first ones.
    let disk = SimDisk::new();
    for i in 0..10 {
        put(&disk, "k", &i.to_string());
        put(&disk, &format!("n{i}"), "");
    }
    let after = disk.crash_keeping(7);
    assert_eq!(after.get(b"k").unwrap().as_deref(), Some(&b"3"[..]));
    let names: Vec<_> = all(&after).into_iter().map(|(k, _)| k).collect();
    assert_eq!(names, ["k", "n0", "n1", "n2"]);
}

#[test]
fn a_crashed_disk_is_dead() {
    let disk = SimDisk::new();
    put(&disk, "a", "1");
    disk.flush().unwrap();
    let stray = disk.clone(); // a task of the dead incarnation still holds it
    let after = disk.crash(&mut StdRng::seed_from_u64(7));
    assert!(stray.is_crashed());
    assert!(matches!(stray.get(b"a"), Err(Error::Io(_))));
    assert!(matches!(stray.write(batch(&[("b", Some("1"))])), Err(Error::Io(_))));
    assert!(matches!(stray.flush(), Err(Error::Io(_))));
    assert!(stray.status().is_err());
    let scanned: Vec<_> = stray.scan((Bound::Unbounded, Bound::Unbounded)).collect();
    assert!(matches!(scanned.as_slice(), [Err(Error::Io(_))]));
    assert_eq!(after.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(after.get(b"b").unwrap(), None, "the stray write reached nothing");
}

#[test]
#[should_panic(expected = "already crashed")]
fn a_disk_crashes_once() {
    let disk = SimDisk::new();
    let _ = disk.crash_keeping(0);
    let _ = disk.crash_keeping(0);
}

#[test]
fn a_failed_flush_poisons_and_makes_nothing_durable() {
    let disk = SimDisk::new();
    put(&disk, "a", "1");
    disk.flush().unwrap();
    put(&disk, "b", "1");
    disk.fail_next_flush();
    assert!(matches!(disk.flush(), Err(Error::Io(_))));
    assert!(disk.is_poisoned());
    assert!(matches!(disk.write(batch(&[("c", Some("1"))])), Err(Error::Io(_))), "no more writes");
    assert!(matches!(disk.flush(), Err(Error::Io(_))), "no more flushes");
    assert_eq!(disk.get(b"b").unwrap().as_deref(), Some(&b"1"[..]), "reads still work");
    assert_eq!(disk.get(b"c").unwrap(), None);
    assert_eq!(disk.durable_len(), 1, "the failed flush made nothing durable");
    let stats = disk.stats();
    assert_eq!((stats.flushes, stats.failed_flushes, stats.failed_writes), (1, 2, 1));
    // A crash keeps `a`, maybe `b`, and the next incarnation is healthy.
    let after = disk.crash_keeping(0);
    assert_eq!(all(&after), [("a".to_string(), "1".to_string())]);
    assert!(!after.is_poisoned());
    put(&after, "c", "1");
    after.flush().unwrap();
}

#[test]
fn a_full_disk_writes_nothing() {
    let disk = SimDisk::new();
    put(&disk, "a", "1");
    disk.set_full(true);
    let e = disk.write(batch(&[("a", Some("2")), ("b", Some("1"))])).unwrap_err();
    assert!(e.to_string().contains("no space left on device"), "{e}");
    assert_eq!(all(&disk), [("a".to_string(), "1".to_string())], "the batch changed nothing");
    disk.flush().expect("a flush needs no new space");
    assert_eq!(disk.stats().unsynced_batches, 0);
    // Fullness belongs to the device: it outlives a crash.
    let after = disk.crash_keeping(0);
    assert!(after.write(batch(&[("b", Some("1"))])).is_err());
    after.set_full(false);
    put(&after, "b", "1");
    assert_eq!(after.get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
}
