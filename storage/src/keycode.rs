//! An order-preserving encoding of user keys and timestamps into engine keys.
//!
//! MVCC stores every version of every key in one ordered keyspace, so the encoding must make
//! byte order agree with what MVCC needs: all versions of a key together, keys in their own
//! order, and for each key the **newest version first** (so "the newest version at or below ts"
//! is the first entry a forward scan from `(key, ts)` finds).
//!
//! | part | encoding | why |
//! |---|---|---|
//! | user key | each `0x00` byte becomes `0x00 0xFF`; then the terminator `0x00 0x00` | a key that is a prefix of another sorts first, and no key's versions interleave with another's |
//! | timestamp | `u64::MAX - ts`, big-endian | big-endian sorts like the number; inverting puts the newest first |
//!
//! For example, the versions of `"a\0"` at ts 5 and 9, next to `"a"` at ts 7 and `"b"` at ts 1:
//!
//! ```text
//! 61 00 00            FF FF FF FF FF FF FF F8   "a"   @7
//! 61 00 FF 00 00      FF FF FF FF FF FF FF F6   "a\0" @9   (newest first)
//! 61 00 FF 00 00      FF FF FF FF FF FF FF FA   "a\0" @5
//! 62 00 00            FF FF FF FF FF FF FF FE   "b"   @1
//! ```
//!
//! `"a"`'s terminator `00 00` sorts before `"a\0"`'s escaped `00 FF`, so `"a"` and all its versions
//! come first, exactly as `"a" < "a\0"` requires.

use crate::error::{Error, Result};

/// Appends the escaped, terminated form of `key` to `out`.
pub fn encode_key_into(key: &[u8], out: &mut Vec<u8>) {
    out.reserve(key.len() + 2);
    for &b in key {
        if b == 0x00 {
            out.extend_from_slice(&[0x00, 0xFF]);
        } else {
            out.push(b);
        }
    }
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Appends `ts` inverted and big-endian, so that newer timestamps sort first.
pub fn encode_ts_into(ts: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&(u64::MAX - ts).to_be_bytes());
}

/// Decodes an escaped, terminated key from the front of `bytes`; returns it and the rest.
pub fn decode_key(bytes: &[u8]) -> Result<(Vec<u8>, &[u8])> {
    let mut key = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (0x00, Some(0x00)) => return Ok((key, &bytes[i + 2..])),
            (0x00, Some(0xFF)) => {
                key.push(0x00);
                i += 2;
            }
            (0x00, other) => {
                return Err(Error::Corruption(format!(
                    "bad key escape 0x00 {other:02x?} at byte {i}"
                )));
            }
            (b, _) => {
                key.push(b);
                i += 1;
            }
        }
    }
    Err(Error::Corruption("key without terminator".into()))
}

/// Decodes an inverted big-endian timestamp that must be all of `bytes`.
pub fn decode_ts(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corruption(format!("timestamp of {} bytes, not 8", bytes.len())))?;
    Ok(u64::MAX - u64::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version(key: &[u8], ts: u64) -> Vec<u8> {
        let mut v = Vec::new();
        encode_key_into(key, &mut v);
        encode_ts_into(ts, &mut v);
        v
    }

    #[test]
    fn the_documented_example() {
        assert_eq!(version(b"a", 7), [0x61, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF8]);
        let mut order =
            vec![version(b"b", 1), version(b"a\0", 5), version(b"a\0", 9), version(b"a", 7)];
        order.sort();
        assert_eq!(
            order,
            vec![version(b"a", 7), version(b"a\0", 9), version(b"a\0", 5), version(b"b", 1)]
        );
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        assert!(decode_key(b"abc").is_err());
        assert!(decode_key(&[0x61, 0x00, 0x01]).is_err());
        assert!(decode_ts(&[1, 2, 3]).is_err());
    }

    proptest! {
        #[test]
        fn order_is_preserved(a: Vec<u8>, b: Vec<u8>, ta: u64, tb: u64) {
            let expected = a.cmp(&b).then(tb.cmp(&ta)); // keys ascending, then newest first
            prop_assert_eq!(version(&a, ta).cmp(&version(&b, tb)), expected);
        }

        #[test]
        fn round_trips(key: Vec<u8>, ts: u64) {
            let v = version(&key, ts);
            let (k, rest) = decode_key(&v).unwrap();
            prop_assert_eq!(k, key);
            prop_assert_eq!(decode_ts(rest).unwrap(), ts);
        }
    }
}
