//! Both engines pass the same conformance suite.

use boundkv_storage::testsuite::{conformance, durable_conformance};
use boundkv_storage::{Durability, MemoryEngine, SledEngine, SledOptions};

#[test]
fn memory_engine_conforms() {
    conformance(MemoryEngine::new);
}

#[test]
fn sled_engine_conforms() {
    let dirs: std::cell::RefCell<Vec<tempfile::TempDir>> = Default::default();
    conformance(|| {
        let dir = tempfile::tempdir().unwrap();
        let e = SledEngine::open(dir.path(), SledOptions::default()).unwrap();
        dirs.borrow_mut().push(dir);
        e
    });
}

#[test]
fn sled_engine_is_durable_in_both_modes() {
    durable_conformance(|dir| SledEngine::open(dir, SledOptions::default()).unwrap());
    durable_conformance(|dir| {
        SledEngine::open(
            dir,
            SledOptions { durability: Durability::Buffered, ..SledOptions::default() },
        )
        .unwrap()
    });
}

#[test]
fn a_second_opener_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledEngine::open(dir.path(), SledOptions::default()).unwrap();
    let e =
        SledEngine::open(dir.path(), SledOptions::default()).err().expect("second open must fail");
    assert!(e.to_string().contains("in use by another process"), "{e}");
}
