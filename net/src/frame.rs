//! Frames: the unit on the wire. Every message travels in one frame:
//!
//! ```text
//! offset size field
//! 0      4    len    payload length in bytes (little-endian), at most the receiver's limit
//! 4      2    kind   message kind (see `message::Kind`)
//! 6      2    flags  bit 0: more frames follow for this response (streamed reads); others 0
//! 8      len  payload
//! ```
//!
//! A reader pulls frames out of a growing buffer with [`parse`]: it returns `Ok(None)` until a
//! whole frame is there, and an error for a frame whose declared length passes the limit, so a
//! peer cannot make the reader buffer without bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of [`FrameHeader`].
pub const FRAME_HEADER_BYTES: usize = 8;
/// Default largest payload a peer accepts (16 MiB): a batch of thousands of events fits.
pub const FRAME_PAYLOAD_BYTES_DEFAULT: usize = 16 << 20;
/// The largest limit that may be configured (64 MiB, the engine's record limit).
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// Flag: more frames follow for the same response.
pub const FLAG_MORE: u16 = 1;

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FrameHeader {
    /// Payload length.
    pub len: U32,
    /// Message kind.
    pub kind: U16,
    /// Flags ([`FLAG_MORE`]).
    pub flags: U16,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_BYTES);
const _: () = assert!(FRAME_PAYLOAD_BYTES_MAX < u32::MAX as usize);

/// One frame, its payload shared with the buffer it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Message kind.
    pub kind: u16,
    /// Flags.
    pub flags: u16,
    /// The payload.
    pub payload: Bytes,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The declared payload is larger than this side accepts.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A flag this version does not know is set.
    #[error("unknown frame flags {0:#06x}")]
    UnknownFlags(u16),
}

/// Takes one whole frame from the front of `buf`, if there is one.
pub fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Frame>, FrameError> {
    let Ok((h, _)) = FrameHeader::read_from_prefix(&buf[..]) else {
        return Ok(None);
    };
    let len = h.len.get() as usize;
    if len > max_payload {
        return Err(FrameError::TooLarge {
            len,
            max: max_payload,
        });
    }
    if h.flags.get() & !FLAG_MORE != 0 {
        return Err(FrameError::UnknownFlags(h.flags.get()));
    }
    if buf.len() < FRAME_HEADER_BYTES + len {
        buf.reserve(FRAME_HEADER_BYTES + len - buf.len());
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Frame {
        kind: h.kind.get(),
        flags: h.flags.get(),
        payload,
    }))
}

/// Appends a frame header for a payload of `len` bytes to `out`.
pub fn put_header(out: &mut BytesMut, kind: u16, flags: u16, len: usize) {
    let h = FrameHeader {
        len: U32::new(u32::try_from(len).expect("payloads are below 4 GiB")),
        kind: U16::new(kind),
        flags: U16::new(flags),
    };
    out.put_slice(h.as_bytes());
}

/// Encodes a whole frame: reserves the header, lets `body` write the payload, then fills in
/// the length. No intermediate buffer.
pub fn encode(out: &mut BytesMut, kind: u16, flags: u16, body: impl FnOnce(&mut BytesMut)) {
    let at = out.len();
    put_header(out, kind, flags, 0);
    body(out);
    let len = out.len() - at - FRAME_HEADER_BYTES;
    let len = u32::try_from(len).expect("payloads are below 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_in_pieces() {
        let mut wire = BytesMut::new();
        encode(&mut wire, 7, FLAG_MORE, |b| b.put_slice(b"hello"));
        encode(&mut wire, 8, 0, |_| {});
        let bytes = wire.freeze();
        // Feed one byte at a time: nothing comes out until a frame is whole.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes.iter() {
            buf.put_u8(*b);
            while let Some(f) = parse(&mut buf, 1024).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].kind, got[0].flags, &got[0].payload[..]),
            (7, FLAG_MORE, &b"hello"[..])
        );
        assert_eq!((got[1].kind, got[1].payload.len()), (8, 0));
    }

    #[test]
    fn oversized_frames_are_refused_before_buffering() {
        let mut buf = BytesMut::new();
        put_header(&mut buf, 1, 0, 2048);
        assert_eq!(
            parse(&mut buf, 1024),
            Err(FrameError::TooLarge {
                len: 2048,
                max: 1024
            })
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = parse(&mut buf, 32) {}
        }
    }
}
