//! Raft messages as bytes, for transports: raft-rs's protobuf encoding, behind two functions so
//! that nothing outside this crate needs to know about protobuf.
//!
//! # Hostile input
//!
//! `protobuf` 2.28 is subject to RUSTSEC-2024-0437: crafted unknown fields nested deeply enough
//! overflow the stack while parsing. raft-rs 0.7 depends on protobuf 2.28 whichever codec it is
//! built with. Peer messages come only from cluster members, so the exposure is limited to a
//! malicious peer; [`decode_message`] refuses payloads above [`MAX_MESSAGE_LEN`] and reports every
//! parse failure as an error, never a panic.

use protobuf::Message as _;
use raft::prelude::Message;

/// The largest encoded Raft message [`decode_message`] accepts: 64 MiB. Append messages are
/// bounded by `NodeConfig::max_size_per_msg` (1 MiB by default); snapshots are the large ones.
pub const MAX_MESSAGE_LEN: usize = 64 << 20;

/// Why a message could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a Raft message.
    #[error("malformed raft message: {0}")]
    Malformed(String),
    /// The payload is larger than [`MAX_MESSAGE_LEN`].
    #[error("raft message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Encodes a Raft message (protobuf).
pub fn encode_message(msg: &Message) -> Result<Vec<u8>, CodecError> {
    msg.write_to_bytes().map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decodes a Raft message encoded by [`encode_message`].
pub fn decode_message(bytes: &[u8]) -> Result<Message, CodecError> {
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(CodecError::TooLarge { len: bytes.len(), max: MAX_MESSAGE_LEN });
    }
    Message::parse_from_bytes(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::{Entry, MessageType};

    #[test]
    fn round_trip_and_garbage() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 2;
        m.from = 1;
        m.term = 7;
        m.entries =
            vec![Entry { index: 3, term: 7, data: b"x".to_vec().into(), ..Entry::default() }]
                .into();
        let bytes = encode_message(&m).unwrap();
        assert_eq!(decode_message(&bytes).unwrap(), m);
        assert!(decode_message(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_message(&bytes[..bytes.len() - 1]).is_err());
    }
}
