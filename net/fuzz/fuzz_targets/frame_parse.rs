//! `frame::parse` never panics; frames respect the limit and flags, and feeding the bytes in two
//! pieces yields what one piece does.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use quiver_net::frame::{parse, Frame, FrameError, FLAG_MORE, FRAME_HEADER_BYTES};

/// Feeds `wire` split at `at`, pulling frames after each piece, until the end or an error.
fn run(wire: &[u8], at: usize, max: usize) -> (Vec<Frame>, Option<FrameError>, usize) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in [&wire[..at], &wire[at..]] {
        buf.extend_from_slice(piece);
        loop {
            match parse(&mut buf, max) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e), buf.len()),
            }
        }
    }
    (frames, None, buf.len())
}

fuzz_target!(|data: &[u8]| {
    let [m0, m1, split, ref wire @ ..] = *data else {
        return;
    };
    let max = u16::from_le_bytes([m0, m1]) as usize;
    let (frames, err, left) = run(wire, wire.len(), max);
    let (frames2, err2, _) = run(wire, (split as usize).min(wire.len()), max);
    assert_eq!((&frames, &err), (&frames2, &err2));
    let used: usize = frames
        .iter()
        .map(|f| FRAME_HEADER_BYTES + f.payload.len())
        .sum();
    assert_eq!(used + left, wire.len());
    assert!(
        err.is_some() || left < FRAME_HEADER_BYTES + max,
        "a whole frame was left unparsed"
    );
    for f in &frames {
        assert!(f.payload.len() <= max && f.flags & !FLAG_MORE == 0);
    }
});
