//! `decode_entry` never panics (first byte = kind); an append it accepts iterates cleanly, lazily
//! and by headers, to the same events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_engine::format::{decode_entry, Entry, EntryKind};
use zerocopy::IntoBytes;

fuzz_target!(|data: &[u8]| {
    let Some((&k, body)) = data.split_first() else {
        return;
    };
    let Ok(kind) = EntryKind::from_byte(k) else {
        return;
    };
    let Ok(Entry::Append(view)) = decode_entry(kind, body) else {
        return;
    };
    let events: Vec<_> = view
        .events()
        .map(|e| e.expect("checked event").header)
        .collect();
    let headers: Vec<_> = view.headers().map(|h| h.expect("checked header")).collect();
    assert_eq!(events.len(), view.event_count as usize);
    assert_eq!(headers.len(), events.len());
    for (a, b) in events.iter().zip(&headers) {
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
});
