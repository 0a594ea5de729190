//! `Response::decode` never panics; a response it accepts re-encodes to a frame that decodes to the
//! same response.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quiver_net::frame::{self, Frame};
use quiver_net::message::Response;

fuzz_target!(|data: &[u8]| {
    let [k0, k1, f0, f1, ref payload @ ..] = *data else {
        return;
    };
    let f = Frame {
        kind: u16::from_le_bytes([k0, k1]),
        flags: u16::from_le_bytes([f0, f1]),
        payload: Bytes::copy_from_slice(payload),
    };
    let Ok(resp) = Response::decode(&f) else {
        return;
    };
    let mut wire = BytesMut::new();
    resp.encode(&mut wire);
    let again = frame::parse(&mut wire, frame::FRAME_PAYLOAD_BYTES_MAX)
        .expect("re-encoded frame is valid")
        .expect("re-encoded frame is whole");
    assert!(wire.is_empty(), "one frame, nothing after it");
    assert_eq!(
        Response::decode(&again).expect("re-encoded response decodes"),
        resp
    );
});
