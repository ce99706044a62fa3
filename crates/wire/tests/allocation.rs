//! Decoding allocates at most a constant multiple of its input, whatever lengths the input
//! claims.
//!
//! A counting global allocator measures the peak memory the decoding thread holds. It counts per
//! thread, so tests running in parallel do not disturb each other's measurements.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::Bound;

use boundkv_wire::{decode_request, decode_response};
use bytes::Bytes;

struct CountingAllocator;

thread_local! {
    /// Bytes this thread holds now (allocations minus deallocations it made).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// The most `HELD` has been since the last `reset_peak`.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn record(delta: isize) {
    // `try_with`: the allocator runs during thread teardown too, when the cells may be gone.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds as it does for `System`; the counting touches only thread-locals
// with const initializers, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size() as isize);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        record(-(layout.size() as isize));
        // SAFETY: forwarded unchanged; `ptr` came from `System` via this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Count the old and new blocks as both held for a moment, as a copying realloc does.
        record(new_size as isize);
        record(-(layout.size() as isize));
        // SAFETY: forwarded unchanged; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The peak bytes held while running `f`, above what was held before.
fn peak_allocation(f: impl FnOnce()) -> usize {
    let base = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    f();
    (PEAK.with(Cell::get) - base).max(0) as usize
}

/// A varint claiming 2^63 - 1 elements or bytes.
const HUGE: [u8; 9] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];

#[test]
fn claimed_lengths_are_not_preallocated() {
    // Commit { txn_id, read_ts: None, read_keys: 2^63 - 1 claimed, then 64 empty keys }.
    let keys = [&[0x03, 0x07, 0x04][..], &[0; 16], &[0x00], &HUGE, &[0x00; 64]].concat();
    // Response::Rows with 2^63 - 1 rows claimed, then 64 empty rows.
    let rows = [&[0x03, 0x07, 0x02][..], &HUGE, &[0x00; 128]].concat();
    // Response::Members with 2^63 - 1 members claimed.
    let members = [&[0x03, 0x07, 0x05][..], &HUGE, &[0x01, 0x00, 0x01]].concat();

    let peak = peak_allocation(|| {
        assert!(decode_request(&keys).is_err());
        assert!(decode_response(&rows).is_err());
        assert!(decode_response(&members).is_err());
    });
    // serde preallocates at most 1 MiB for a sequence, whatever it claims.
    assert!(peak <= 1 << 20, "peak {peak} bytes for inputs under 200 bytes");
}

/// The worst inputs per byte: long lists of the elements that are cheapest to encode for their
/// size in memory. For each, the peak must stay within what the decoded value needs, allowing
/// for how a `Vec` grows: serde starts it at 1 MiB and doubles it, so its capacity may reach
/// twice the elements decoded, and a copying reallocation holds the old buffer (half that) too.
#[test]
fn memory_is_a_bounded_multiple_of_the_input() {
    const N: usize = 1 << 18;
    let commit = |read_keys: &[u8], read_ranges: &[u8], writes: &[u8]| {
        [&[0x03, 0x07, 0x04][..], &[0; 16], &[0x00], read_keys, read_ranges, writes].concat()
    };
    let list = |encoded_element: &[u8]| [varint(N), encoded_element.repeat(N)].concat();
    let empty = [0x00];
    let cases: [(&str, Vec<u8>, usize); 4] = [
        // N empty read keys: 1 byte each on the wire, a `Bytes` in memory.
        ("read_keys", commit(&list(&[0x00]), &empty, &empty), size_of::<Bytes>()),
        // N (Unbounded, Unbounded) read ranges: 2 bytes each.
        (
            "read_ranges",
            commit(&empty, &list(&[0x00, 0x00]), &empty),
            size_of::<(Bound<Bytes>, Bound<Bytes>)>(),
        ),
        // N deletes of the empty key: 2 bytes each.
        (
            "writes",
            commit(&empty, &empty, &list(&[0x00, 0x00])),
            size_of::<(Bytes, Option<Bytes>)>(),
        ),
        // Response::Rows with N empty rows: 2 bytes each.
        (
            "rows",
            [&[0x03, 0x07, 0x02][..], &list(&[0x00, 0x00])].concat(),
            size_of::<(Bytes, Bytes)>(),
        ),
    ];
    for (what, input, element_size) in cases {
        let peak = peak_allocation(|| {
            if what == "rows" {
                decode_response(&input).expect(what);
            } else {
                decode_request(&input).expect(what);
            }
        });
        let needed = N * element_size;
        eprintln!(
            "{what}: {} input bytes, {needed} bytes of elements, peak {peak} bytes ({:.1}x the \
             input)",
            input.len(),
            peak as f64 / input.len() as f64
        );
        assert!(peak <= 3 * needed + (1 << 20), "{what}: peak {peak}, elements {needed}");
        // And in terms of the input alone: no element costs more than 40 bytes per input byte.
        assert!(peak <= 3 * 40 * input.len(), "{what}: peak {peak} for {} bytes", input.len());
    }
}

fn varint(n: usize) -> Vec<u8> {
    postcard::to_stdvec(&(n as u64)).unwrap()
}
