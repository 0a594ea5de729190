//! `discovery::decode` never panics, on raw bytes or on bytes that carry a valid tag (so the
//! fuzzer reaches the parser behind the HMAC check); an announcement that decodes
//! re-encodes to one that decodes to the same announcement.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_net::discovery::{decode, derive_key, encode};

fuzz_target!(|data: &[u8]| {
    let key = derive_key(b"a fuzzing secret of enough bytes");
    let _ = decode(data, &key);
    // The same bytes behind the magic, authenticated.
    let mut packet = b"QVD1".to_vec();
    packet.extend_from_slice(data);
    let tag = ring::hmac::sign(&key, &packet);
    packet.extend_from_slice(tag.as_ref());
    if let Ok(a) = decode(&packet, &key) {
        assert_eq!(decode(&encode(&a, &key), &key), Ok(a));
    }
});
