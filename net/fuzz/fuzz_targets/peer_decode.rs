//! `PeerMessage::decode` and `AuthFrame::decode` never panic; a message that decodes re-encodes
//! (flat and as shared chunks, the same bytes) to one frame that decodes to the same message.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quiver_net::frame::{self, Frame};
use quiver_net::peer::{AuthFrame, PeerMessage, Role, PEER_FRAME_PAYLOAD_BYTES_MAX};

fuzz_target!(|data: &[u8]| {
    let [k0, k1, f0, f1, ref payload @ ..] = *data else {
        return;
    };
    let f = Frame {
        kind: u16::from_le_bytes([k0, k1]),
        flags: u16::from_le_bytes([f0, f1]),
        payload: Bytes::copy_from_slice(payload),
    };
    if let Ok(a) = AuthFrame::decode(&f, Role::Dialer) {
        assert_eq!(f.payload.len(), quiver_net::peer::AUTH_PAYLOAD_BYTES);
        assert_eq!(a.role, Role::Dialer);
    }
    let _ = AuthFrame::decode(&f, Role::Acceptor);
    let Ok(m) = PeerMessage::decode(&f) else {
        return;
    };
    let mut wire = BytesMut::new();
    m.encode(&mut wire);
    assert_eq!(wire.len(), m.frame_len());
    let (mut head, mut chunks) = (BytesMut::new(), Vec::new());
    m.encode_chunks(&mut head, &mut chunks);
    chunks.push(head.freeze());
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    assert_eq!(&joined[..], &wire[..], "chunked and flat encodings agree");
    let again = frame::parse(&mut wire, PEER_FRAME_PAYLOAD_BYTES_MAX)
        .expect("re-encoded frame is valid")
        .expect("re-encoded frame is whole");
    assert!(wire.is_empty(), "one frame, nothing after it");
    assert_eq!(
        PeerMessage::decode(&again).expect("re-encoded message decodes"),
        m
    );
});
