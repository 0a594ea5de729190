//! Raft messages to the peer protocol's wire model and back, field for field.
//!
//! `quiver-net` may not depend on `quiver-raft` (the client crate depends on `quiver-net`), so
//! it has its own model of a Raft message (`quiver_net::peer`); this is the one place that
//! knows both. Both `match`es are exhaustive: a new message kind in the core fails to compile
//! here until the wire learns it.
//!
//! Copies: on the way out, entry and chunk data (`Vec<u8>`) become `Bytes` without a copy. On
//! the way in, the wire's `Bytes` are slices of the received frame and the core's `Entry`
//! holds a `Vec<u8>`, so each payload is copied once; a core that carried `Bytes` would not
//! need it (docs/RAFT.md, "Not built yet").

use quiver_net::peer::{PeerEntry, PeerEntryKind, PeerMessage, PeerMessageKind};
use quiver_raft::{Entry, EntryKind, Message, MessageKind};

/// A message of the core as it goes on the wire.
pub fn to_wire(m: Message) -> PeerMessage {
    use MessageKind as K;
    use PeerMessageKind as W;
    let kind = match m.kind {
        K::PreVote {
            last_index,
            last_term,
        } => W::PreVote {
            last_index,
            last_term,
        },
        K::PreVoteResp { reject } => W::PreVoteResp { reject },
        K::Vote {
            last_index,
            last_term,
            transfer,
        } => W::Vote {
            last_index,
            last_term,
            transfer,
        },
        K::VoteResp { reject } => W::VoteResp { reject },
        K::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            read,
        } => W::Append {
            prev_index,
            prev_term,
            entries: entries.into_iter().map(entry_to_wire).collect(),
            commit,
            read,
        },
        K::AppendResp {
            reject,
            index,
            hint,
            hint_term,
            read,
        } => W::AppendResp {
            reject,
            index,
            hint,
            hint_term,
            read,
        },
        K::TimeoutNow => W::TimeoutNow,
        K::ReadIndex { ctx } => W::ReadIndex { ctx },
        K::ReadIndexResp { ctx, index } => W::ReadIndexResp { ctx, index },
        K::Segment {
            first,
            last,
            last_term,
            prev_term,
            offset,
            data,
            done,
        } => W::Segment {
            first,
            last,
            last_term,
            prev_term,
            offset,
            data: data.into(),
            done,
        },
        K::SegmentResp {
            first,
            received,
            reject,
        } => W::SegmentResp {
            first,
            received,
            reject,
        },
    };
    PeerMessage {
        from: m.from,
        to: m.to,
        term: m.term,
        kind,
    }
}

/// A message from the wire as the core takes it.
pub fn from_wire(m: PeerMessage) -> Message {
    use MessageKind as K;
    use PeerMessageKind as W;
    let kind = match m.kind {
        W::PreVote {
            last_index,
            last_term,
        } => K::PreVote {
            last_index,
            last_term,
        },
        W::PreVoteResp { reject } => K::PreVoteResp { reject },
        W::Vote {
            last_index,
            last_term,
            transfer,
        } => K::Vote {
            last_index,
            last_term,
            transfer,
        },
        W::VoteResp { reject } => K::VoteResp { reject },
        W::Append {
            prev_index,
            prev_term,
            entries,
            commit,
            read,
        } => K::Append {
            prev_index,
            prev_term,
            entries: entries.into_iter().map(entry_from_wire).collect(),
            commit,
            read,
        },
        W::AppendResp {
            reject,
            index,
            hint,
            hint_term,
            read,
        } => K::AppendResp {
            reject,
            index,
            hint,
            hint_term,
            read,
        },
        W::TimeoutNow => K::TimeoutNow,
        W::ReadIndex { ctx } => K::ReadIndex { ctx },
        W::ReadIndexResp { ctx, index } => K::ReadIndexResp { ctx, index },
        W::Segment {
            first,
            last,
            last_term,
            prev_term,
            offset,
            data,
            done,
        } => K::Segment {
            first,
            last,
            last_term,
            prev_term,
            offset,
            data: data.into(),
            done,
        },
        W::SegmentResp {
            first,
            received,
            reject,
        } => K::SegmentResp {
            first,
            received,
            reject,
        },
    };
    Message {
        from: m.from,
        to: m.to,
        term: m.term,
        kind,
    }
}

fn entry_to_wire(e: Entry) -> PeerEntry {
    PeerEntry {
        index: e.index,
        term: e.term,
        kind: match e.kind {
            EntryKind::Normal => PeerEntryKind::Normal,
            EntryKind::Membership => PeerEntryKind::Membership,
        },
        data: e.data,
    }
}

fn entry_from_wire(e: PeerEntry) -> Entry {
    Entry {
        index: e.index,
        term: e.term,
        kind: match e.kind {
            PeerEntryKind::Normal => EntryKind::Normal,
            PeerEntryKind::Membership => EntryKind::Membership,
        },
        data: e.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use quiver_net::frame;
    use quiver_net::peer::PEER_FRAME_PAYLOAD_BYTES_MAX;

    /// One message of every kind, with values that tell each field from the others.
    fn every_kind() -> Vec<MessageKind> {
        use MessageKind as K;
        let entries = vec![
            Entry::normal(11, 5, b"an engine command".to_vec()),
            Entry::normal(12, 5, Vec::new()),
            Entry {
                index: 13,
                term: 6,
                kind: EntryKind::Membership,
                data: quiver_raft::Membership::with_voters([1, 2, 3])
                    .encode()
                    .into(),
            },
            Entry::normal(14, 6, vec![0xAB; 5000]),
        ];
        vec![
            K::PreVote {
                last_index: 1,
                last_term: 2,
            },
            K::PreVoteResp { reject: true },
            K::Vote {
                last_index: 3,
                last_term: 4,
                transfer: true,
            },
            K::VoteResp { reject: false },
            K::Append {
                prev_index: 10,
                prev_term: 4,
                entries,
                commit: 9,
                read: 77,
            },
            K::Append {
                prev_index: 10,
                prev_term: 4,
                entries: Vec::new(),
                commit: 9,
                read: 0,
            },
            K::AppendResp {
                reject: true,
                index: 20,
                hint: 15,
                hint_term: 3,
                read: 78,
            },
            K::TimeoutNow,
            K::ReadIndex { ctx: 5 },
            K::ReadIndexResp { ctx: 5, index: 33 },
            K::Segment {
                first: 100,
                last: 199,
                last_term: 7,
                prev_term: 6,
                offset: 4096,
                data: vec![1, 2, 3, 4],
                done: true,
            },
            K::SegmentResp {
                first: 100,
                received: 4100,
                reject: true,
            },
        ]
    }

    #[test]
    fn every_raft_message_survives_the_wire() {
        for (k, kind) in every_kind().into_iter().enumerate() {
            let m = Message {
                from: 1 + k as u64,
                to: 100 + k as u64,
                term: 1000 + k as u64,
                kind,
            };
            // Through the types alone.
            assert_eq!(from_wire(to_wire(m.clone())), m);
            // And through the bytes, as it goes between nodes.
            let mut wire = BytesMut::new();
            to_wire(m.clone()).encode(&mut wire);
            let f = frame::parse(&mut wire, PEER_FRAME_PAYLOAD_BYTES_MAX)
                .unwrap()
                .unwrap();
            let back = quiver_net::peer::PeerMessage::decode(&f).unwrap();
            assert_eq!(from_wire(back), m);
        }
    }
}
