//! Every peer message survives encode → frame parse → decode unchanged (flat or as shared
//! chunks), decoded data shares the received buffer, and malformed input of every kind is a
//! typed error, never a panic.

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use quiver_net::frame::{self, Frame, FrameError, FRAME_HEADER_BYTES};
use quiver_net::peer::*;

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn entries(prev_index: u64) -> impl Strategy<Value = Vec<PeerEntry>> {
    // Some large enough to take the shared path of `encode_chunks`.
    let data = prop_oneof![blob(40), blob(3000)];
    proptest::collection::vec((any::<u64>(), any::<bool>(), data), 0..5).prop_map(move |es| {
        es.into_iter()
            .enumerate()
            .map(|(k, (term, membership, data))| PeerEntry {
                index: prev_index + 1 + k as u64,
                term,
                kind: if membership {
                    PeerEntryKind::Membership
                } else {
                    PeerEntryKind::Normal
                },
                data,
            })
            .collect()
    })
}

fn kind() -> impl Strategy<Value = PeerMessageKind> {
    use PeerMessageKind as K;
    let append = (0..u64::MAX / 2, any::<[u64; 3]>()).prop_flat_map(|(prev_index, [t, c, r])| {
        entries(prev_index).prop_map(move |entries| K::Append {
            prev_index,
            prev_term: t,
            entries,
            commit: c,
            read: r,
        })
    });
    let segment = (
        any::<[u64; 5]>(),
        prop_oneof![blob(40), blob(3000)],
        any::<bool>(),
    )
        .prop_map(
            |([first, last, last_term, prev_term, offset], data, done)| K::Segment {
                first,
                last,
                last_term,
                prev_term,
                offset,
                data,
                done,
            },
        );
    prop_oneof![
        any::<[u64; 2]>().prop_map(|[last_index, last_term]| K::PreVote {
            last_index,
            last_term
        }),
        any::<bool>().prop_map(|reject| K::PreVoteResp { reject }),
        (any::<[u64; 2]>(), any::<bool>()).prop_map(|([last_index, last_term], transfer)| {
            K::Vote {
                last_index,
                last_term,
                transfer,
            }
        }),
        any::<bool>().prop_map(|reject| K::VoteResp { reject }),
        append,
        (any::<bool>(), any::<[u64; 4]>()).prop_map(|(reject, [index, hint, hint_term, read])| {
            K::AppendResp {
                reject,
                index,
                hint,
                hint_term,
                read,
            }
        }),
        Just(K::TimeoutNow),
        any::<u64>().prop_map(|ctx| K::ReadIndex { ctx }),
        any::<[u64; 2]>().prop_map(|[ctx, index]| K::ReadIndexResp { ctx, index }),
        segment,
        (any::<[u64; 2]>(), any::<bool>()).prop_map(|([first, received], reject)| {
            K::SegmentResp {
                first,
                received,
                reject,
            }
        }),
    ]
}

fn message() -> impl Strategy<Value = PeerMessage> {
    (any::<[u64; 3]>(), kind()).prop_map(|([from, to, term], kind)| PeerMessage {
        from,
        to,
        term,
        kind,
    })
}

fn one_frame(mut wire: BytesMut) -> Frame {
    let f = frame::parse(&mut wire, PEER_FRAME_PAYLOAD_BYTES_MAX)
        .expect("valid frame")
        .expect("whole frame");
    assert!(wire.is_empty(), "exactly one frame");
    f
}

fn encoded(m: &PeerMessage) -> BytesMut {
    let mut out = BytesMut::new();
    m.encode(&mut out);
    out
}

fn append(entries: Vec<PeerEntry>) -> PeerMessage {
    PeerMessage {
        from: 1,
        to: 2,
        term: 3,
        kind: PeerMessageKind::Append {
            prev_index: 9,
            prev_term: 2,
            entries,
            commit: 8,
            read: 4,
        },
    }
}

fn entry(index: u64, data: &'static [u8]) -> PeerEntry {
    PeerEntry {
        index,
        term: 3,
        kind: PeerEntryKind::Normal,
        data: Bytes::from_static(data),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn messages_round_trip(m in message()) {
        let wire = encoded(&m);
        prop_assert_eq!(wire.len(), m.frame_len());
        let f = one_frame(wire);
        prop_assert_eq!(f.kind, m.wire_kind() as u16);
        prop_assert_eq!(PeerMessage::decode(&f).unwrap(), m);
    }

    #[test]
    fn chunked_encoding_is_the_same_bytes(ms in proptest::collection::vec(message(), 1..4)) {
        let mut flat = BytesMut::new();
        let (mut head, mut chunks) = (BytesMut::new(), Vec::new());
        for m in &ms {
            m.encode(&mut flat);
            m.encode_chunks(&mut head, &mut chunks);
        }
        chunks.push(head.split().freeze());
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        prop_assert_eq!(&joined[..], &flat[..]);
        // A stream of several messages parses back one by one, in order.
        let mut buf = flat;
        for m in &ms {
            prop_assert_eq!(parse(&mut buf, PEER_FRAME_PAYLOAD_BYTES_MAX).unwrap(), Some(m.clone()));
        }
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_truncation_is_an_error(m in message()) {
        let f = one_frame(encoded(&m));
        for cut in 0..f.payload.len() {
            let short = Frame { payload: f.payload.slice(..cut), ..f.clone() };
            prop_assert!(matches!(
                PeerMessage::decode(&short),
                Err(PeerDecodeError::Malformed(_))
            ));
        }
        let mut long = BytesMut::from(&f.payload[..]);
        long.put_u8(0);
        let long = Frame { payload: long.freeze(), ..f };
        prop_assert!(matches!(PeerMessage::decode(&long), Err(PeerDecodeError::Malformed(_))));
    }

    #[test]
    fn decoders_never_panic(
        kind in prop_oneof![0x0300u16..0x0320, any::<u16>()],
        flags in 0u16..2,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
        version_ok in any::<bool>(),
    ) {
        let mut payload = payload;
        if version_ok && !payload.is_empty() {
            payload[0] = PEER_VERSION;
        }
        let f = Frame { kind, flags, payload: Bytes::from(payload) };
        if let Ok(m) = PeerMessage::decode(&f) {
            prop_assert_eq!(PeerMessage::decode(&one_frame(encoded(&m))).unwrap(), m);
        }
        let _ = AuthFrame::decode(&f, Role::Dialer);
        let _ = AuthFrame::decode(&f, Role::Acceptor);
    }

    #[test]
    fn auth_frames_round_trip(
        [from, to, incarnation] in any::<[u64; 3]>(),
        proof in any::<[u8; 32]>(),
        dialer in any::<bool>(),
    ) {
        let role = if dialer { Role::Dialer } else { Role::Acceptor };
        let a = AuthFrame { role, from, to, incarnation, proof };
        let mut out = BytesMut::new();
        a.encode(&mut out);
        let f = one_frame(out);
        prop_assert_eq!(f.payload.len(), AUTH_PAYLOAD_BYTES);
        prop_assert_eq!(AuthFrame::decode(&f, role).unwrap(), a);
        // A proof is only accepted in its own role's frame: no reflection.
        let other = if dialer { Role::Acceptor } else { Role::Dialer };
        prop_assert!(matches!(AuthFrame::decode(&f, other), Err(PeerDecodeError::UnknownKind(_))));
        prop_assert!(matches!(PeerMessage::decode(&f), Err(PeerDecodeError::UnknownKind(_))));
    }
}

#[test]
fn decoded_data_shares_the_received_buffer() {
    let data = vec![7u8; 4096];
    let m = PeerMessage {
        from: 1,
        to: 2,
        term: 3,
        kind: PeerMessageKind::Segment {
            first: 1,
            last: 9,
            last_term: 3,
            prev_term: 0,
            offset: 0,
            data: Bytes::from(data),
            done: true,
        },
    };
    let f = one_frame(encoded(&m));
    let PeerMessageKind::Segment { data, .. } = PeerMessage::decode(&f).unwrap().kind else {
        panic!("a segment")
    };
    let range = f.payload.as_ptr_range();
    assert!(
        range.contains(&data.as_ptr()),
        "the chunk is a slice, not a copy"
    );

    // And on the way out, large data is handed over as the message's own Bytes.
    let (mut head, mut chunks) = (BytesMut::new(), Vec::new());
    m.encode_chunks(&mut head, &mut chunks);
    let PeerMessageKind::Segment { data, .. } = &m.kind else {
        unreachable!()
    };
    assert!(chunks.iter().any(|c| c.as_ptr() == data.as_ptr()));
}

#[test]
fn oversized_frames_are_refused_from_the_header() {
    let mut buf = BytesMut::new();
    frame::put_header(
        &mut buf,
        PeerKind::Append as u16,
        0,
        PEER_FRAME_PAYLOAD_BYTES_MAX + 1,
    );
    assert_eq!(
        parse(&mut buf, PEER_FRAME_PAYLOAD_BYTES_MAX),
        Err(PeerDecodeError::Frame(FrameError::TooLarge {
            len: PEER_FRAME_PAYLOAD_BYTES_MAX + 1,
            max: PEER_FRAME_PAYLOAD_BYTES_MAX
        }))
    );
    // Nothing of it was buffered beyond the header.
    assert_eq!(buf.len(), FRAME_HEADER_BYTES);
}

#[test]
fn a_truncated_stream_waits_for_more() {
    let wire = encoded(&append(vec![entry(10, b"abc")]));
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(parse(&mut buf, PEER_FRAME_PAYLOAD_BYTES_MAX), Ok(None));
    }
}

#[test]
fn unknown_kinds_flags_and_versions_are_refused() {
    let f = one_frame(encoded(&append(vec![])));
    let bad = |kind, flags, payload: Bytes| {
        PeerMessage::decode(&Frame {
            kind,
            flags,
            payload,
        })
    };
    assert_eq!(
        bad(0x0101, 0, f.payload.clone()),
        Err(PeerDecodeError::UnknownKind(0x0101))
    );
    assert_eq!(
        bad(0x031B, 0, f.payload.clone()),
        Err(PeerDecodeError::UnknownKind(0x031B))
    );
    assert_eq!(
        bad(PeerKind::Auth as u16, 0, f.payload.clone()),
        Err(PeerDecodeError::UnknownKind(PeerKind::Auth as u16))
    );
    assert_eq!(
        bad(f.kind, 1, f.payload.clone()),
        Err(PeerDecodeError::Flags(1))
    );
    let mut v2 = BytesMut::from(&f.payload[..]);
    v2[0] = 2;
    assert_eq!(
        bad(f.kind, 0, v2.freeze()),
        Err(PeerDecodeError::Version(2))
    );
}

#[test]
fn forged_counts_are_refused_before_allocating() {
    let f = one_frame(encoded(&append(vec![entry(10, b"x")])));
    // The entry count sits after the header and four u64s.
    let at = MESSAGE_HEADER_BYTES + 32;
    let mut forged = BytesMut::from(&f.payload[..]);
    forged[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = PeerMessage::decode(&Frame {
        payload: forged.freeze(),
        ..f.clone()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot fit"),
        "a count check, not a truncation found late: {err}"
    );
    // A data length past the end.
    let mut forged = BytesMut::from(&f.payload[..]);
    let len_at = at + 4 + 17;
    forged[len_at..len_at + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        PeerMessage::decode(&Frame {
            payload: forged.freeze(),
            ..f
        }),
        Err(PeerDecodeError::Malformed(_))
    ));
}

#[test]
fn entries_must_follow_prev_index() {
    for entries in [
        vec![entry(11, b"a")],                  // a gap after prev_index 9
        vec![entry(10, b"a"), entry(10, b"b")], // a repeat
        vec![entry(10, b"a"), entry(12, b"b")], // a gap inside
    ] {
        let f = one_frame(encoded(&append(entries)));
        assert!(matches!(
            PeerMessage::decode(&f),
            Err(PeerDecodeError::Malformed(_))
        ));
    }
    // An index that would pass u64::MAX.
    let mut m = append(vec![]);
    if let PeerMessageKind::Append {
        prev_index,
        entries,
        ..
    } = &mut m.kind
    {
        *prev_index = u64::MAX;
        entries.push(entry(0, b"a"));
    }
    let f = one_frame(encoded(&m));
    assert!(matches!(
        PeerMessage::decode(&f),
        Err(PeerDecodeError::Malformed(_))
    ));
}

#[test]
fn bad_booleans_and_entry_kinds_are_refused() {
    let vote = PeerMessage {
        from: 1,
        to: 2,
        term: 3,
        kind: PeerMessageKind::VoteResp { reject: true },
    };
    let f = one_frame(encoded(&vote));
    let mut p = BytesMut::from(&f.payload[..]);
    p[MESSAGE_HEADER_BYTES] = 2;
    assert!(matches!(
        PeerMessage::decode(&Frame {
            payload: p.freeze(),
            ..f
        }),
        Err(PeerDecodeError::Malformed(_))
    ));
    let f = one_frame(encoded(&append(vec![entry(10, b"x")])));
    let mut p = BytesMut::from(&f.payload[..]);
    p[MESSAGE_HEADER_BYTES + 32 + 4 + 16] = 2; // the entry's kind byte
    assert!(matches!(
        PeerMessage::decode(&Frame {
            payload: p.freeze(),
            ..f
        }),
        Err(PeerDecodeError::Malformed(_))
    ));
}
