//! `Request::decode` never panics; a request it accepts re-encodes to a frame that decodes to the
//! same request.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quiver_net::frame::{self, Frame};
use quiver_net::message::Request;

fuzz_target!(|data: &[u8]| {
    let [k0, k1, f0, f1, ref payload @ ..] = *data else {
        return;
    };
    let f = Frame {
        kind: u16::from_le_bytes([k0, k1]),
        flags: u16::from_le_bytes([f0, f1]),
        payload: Bytes::copy_from_slice(payload),
    };
    let Ok(req) = Request::decode(&f) else { return };
    let mut wire = BytesMut::new();
    req.encode(&mut wire);
    let again = frame::parse(&mut wire, frame::FRAME_PAYLOAD_BYTES_MAX)
        .expect("re-encoded frame is valid")
        .expect("re-encoded frame is whole");
    assert!(wire.is_empty(), "one frame, nothing after it");
    assert_eq!(
        Request::decode(&again).expect("re-encoded request decodes"),
        req
    );
});
