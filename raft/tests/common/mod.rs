//! Helpers shared by the message-by-message tests (`paper.rs`, `rules.rs`).
#![allow(dead_code)]

use quiver_raft::{Entry, HardState, MemStorage, Message, RawNode, ReadState};

/// An application entry whose data names its place.
pub fn entry(index: u64, term: u64) -> Entry {
    Entry::normal(index, term, format!("{index}@{term}").into_bytes())
}

/// A log that already holds `log`, with the hard state (`term`, no vote, `commit`).
pub fn storage_with(log: &[Entry], term: u64, commit: u64) -> MemStorage {
    let mut storage = MemStorage::default();
    storage.append(log);
    storage.set_hard_state(HardState {
        term,
        vote: None,
        commit,
    });
    storage
}

/// Persists everything the node has ready (entries, chunks, hard state), as the application
/// must, and returns the messages it sends and the reads it confirms.
pub fn drain_all(n: &mut RawNode<MemStorage>) -> (Vec<Message>, Vec<ReadState>) {
    let (mut out, mut reads) = (Vec::new(), Vec::new());
    while n.has_ready() {
        let ready = n.ready();
        n.storage_mut().append(&ready.entries);
        for c in &ready.chunks {
            n.storage_mut()
                .write_chunk(c)
                .expect("a shipped chunk persists");
        }
        if let Some(hs) = ready.hard_state {
            n.storage_mut().set_hard_state(hs);
        }
        out.extend(ready.early.iter().chain(&ready.messages).cloned());
        reads.extend(ready.reads.iter().copied());
        n.advance(ready);
    }
    (out, reads)
}

/// [`drain_all`]'s messages.
pub fn drain(n: &mut RawNode<MemStorage>) -> Vec<Message> {
    drain_all(n).0
}

/// The messages addressed to `id`.
pub fn to(msgs: &[Message], id: u64) -> Vec<Message> {
    msgs.iter().filter(|m| m.to == id).cloned().collect()
}
