//! Every request and response survives encode → frame parse → decode unchanged, and no byte
//! string makes a decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use quiver_net::frame;
use quiver_net::message::*;
use quiver_net::wire::Text;

fn text(max: usize) -> impl Strategy<Value = Text> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9é$ -]{{0,{max}}}"))
        .unwrap()
        .prop_filter("byte length", move |s| s.len() <= max)
        .prop_map(Text::from)
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn expected() -> impl Strategy<Value = Expected> {
    prop_oneof![
        Just(Expected::Any),
        Just(Expected::NoStream),
        Just(Expected::StreamExists),
        any::<u64>().prop_map(Expected::Exact),
    ]
}

fn read_from() -> impl Strategy<Value = ReadFrom> {
    prop_oneof![
        Just(ReadFrom::Start),
        Just(ReadFrom::End),
        any::<u64>().prop_map(ReadFrom::At)
    ]
}

fn matcher() -> impl Strategy<Value = Option<Match>> {
    prop_oneof![
        Just(None),
        text(30).prop_map(|t| Some(Match::Prefix(t))),
        text(30).prop_map(|t| Some(Match::Regex(t))),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        blob(),
    )
        .prop_map(
            |(max_count, max_age_us, truncate_before, custom)| Metadata {
                max_count,
                max_age_us,
                truncate_before,
                custom,
            },
        )
}

fn new_event() -> impl Strategy<Value = NewEvent> {
    (any::<[u8; 16]>(), text(20), 0u8..2, blob(), blob()).prop_map(
        |(id, event_type, content_type, data, metadata)| NewEvent {
            id,
            event_type,
            content_type,
            data,
            metadata,
        },
    )
}

fn event() -> impl Strategy<Value = Event> {
    (
        text(30),
        any::<u64>(),
        any::<u64>(),
        new_event(),
        any::<u64>(),
    )
        .prop_map(|(stream, version, position, e, created_us)| Event {
            stream,
            version,
            position,
            id: e.id,
            event_type: e.event_type,
            content_type: e.content_type,
            data: e.data,
            metadata: e.metadata,
            created_us,
        })
}

fn info() -> impl Strategy<Value = StreamInfo> {
    (text(30), any::<Option<u64>>(), 0u8..3, metadata()).prop_map(
        |(stream, current_version, deleted, metadata)| StreamInfo {
            stream,
            current_version,
            deleted,
            metadata,
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    let write = (
        text(30),
        expected(),
        proptest::collection::vec(new_event(), 0..4),
    )
        .prop_map(|(stream, expected, events)| StreamWrite {
            stream,
            expected,
            events,
        });
    prop_oneof![
        (any::<u16>(), text(40), blob()).prop_map(|(version, client, token)| Request::Hello {
            version,
            client,
            token
        }),
        proptest::collection::vec(write, 0..3).prop_map(|writes| Request::Append { writes }),
        (text(30), read_from(), any::<bool>(), any::<u64>()).prop_map(
            |(stream, from, backward, max_count)| Request::ReadStream {
                stream,
                from,
                backward,
                max_count
            }
        ),
        (
            read_from(),
            any::<bool>(),
            any::<u64>(),
            matcher(),
            matcher()
        )
            .prop_map(
                |(from, backward, max_count, event_type, stream)| Request::ReadAll {
                    from,
                    backward,
                    max_count,
                    event_type,
                    stream
                }
            ),
        text(30).prop_map(|stream| Request::StreamInfo { stream }),
        (text(30), proptest::option::of(text(30)), any::<u32>()).prop_map(
            |(prefix, after, limit)| Request::ListStreams {
                prefix,
                after,
                limit
            }
        ),
        (text(30), metadata())
            .prop_map(|(stream, metadata)| Request::SetMetadata { stream, metadata }),
        (text(30), expected(), any::<bool>()).prop_map(|(stream, expected, hard)| {
            Request::Delete {
                stream,
                expected,
                hard,
            }
        }),
        Just(Request::Scavenge),
        (text(30), any::<u64>(), blob()).prop_map(|(stream, version, data)| Request::SnapshotPut {
            stream,
            version,
            data
        }),
        (text(30), any::<u64>(), any::<bool>()).prop_map(|(stream, version, latest)| {
            Request::SnapshotGet {
                stream,
                version,
                latest,
            }
        }),
        text(30).prop_map(|stream| Request::SnapshotList { stream }),
        (text(30), any::<u64>())
            .prop_map(|(stream, version)| Request::SnapshotDelete { stream, version }),
        Just(Request::Status),
        (
            proptest::option::of(text(30)),
            read_from(),
            matcher(),
            matcher(),
            any::<u32>(),
            proptest::collection::vec((text(20), 0u8..6, text(20)), 0..3),
        )
            .prop_map(
                |(stream, from, event_type, stream_filter, checkpoint_every, preds)| {
                    let payload =
                        preds
                            .into_iter()
                            .map(|(path, op, value)| Predicate { path, op, value });
                    Request::Subscribe {
                        stream,
                        from,
                        event_type,
                        stream_filter,
                        checkpoint_every,
                        payload: payload.collect(),
                    }
                }
            ),
        text(200).prop_map(|definition| Request::PersistentCreate { definition }),
        text(200).prop_map(|definition| Request::PersistentUpdate { definition }),
        text(30).prop_map(|group| Request::PersistentDelete { group }),
        Just(Request::PersistentList),
        text(30).prop_map(|group| Request::PersistentInfo { group }),
        text(30).prop_map(|group| Request::PersistentReplayParked { group }),
        text(30).prop_map(|group| Request::PersistentConnect { group }),
        proptest::collection::vec(any::<u64>(), 0..6)
            .prop_map(|positions| Request::PersistentAck { positions }),
        (0u8..3, proptest::collection::vec(any::<u64>(), 0..6))
            .prop_map(|(action, positions)| Request::PersistentNack { action, positions }),
        (any::<u64>(), text(30), text(30)).prop_map(|(id, peer, client)| Request::ClusterAdd {
            id,
            peer,
            client
        }),
        Just(Request::ClusterMembers),
        any::<bool>().prop_map(|follower_reads| Request::SetOptions { follower_reads }),
        any::<u64>().prop_map(|id| Request::ClusterRemove { id }),
        proptest::option::of(any::<u64>()).prop_map(|to| Request::ClusterTransfer { to }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u16>(), text(40), text(30), any::<u32>()).prop_map(
            |(version, server, store_id, max_frame)| Response::HelloOk {
                version,
                server,
                store_id,
                max_frame
            }
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(a, b, c, d, idempotent)| Response::Appended {
                next_expected_version: a,
                position_first: b,
                position_last: c,
                index: d,
                idempotent
            }),
        (proptest::collection::vec(event(), 0..4), any::<bool>())
            .prop_map(|(events, more)| Response::Events { events, more }),
        proptest::option::of(info()).prop_map(Response::StreamInfo),
        proptest::collection::vec(info(), 0..4).prop_map(Response::Streams),
        any::<u64>().prop_map(|index| Response::Done { index }),
        any::<[u64; 4]>().prop_map(|[a, b, c, d]| Response::Scavenged {
            segments_scanned: a,
            segments_rewritten: b,
            events_removed: c,
            bytes_reclaimed: d
        }),
        proptest::option::of((text(30), any::<u64>(), blob())).prop_map(Response::Snapshot),
        proptest::collection::vec(any::<u64>(), 0..5).prop_map(Response::SnapshotVersions),
        (
            text(30),
            text(30),
            text(10),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(store_id, server, role, commit_position, last_index, streams)| Response::Status {
                    store_id,
                    server,
                    role,
                    commit_position,
                    last_index,
                    streams
                }
            ),
        (1u16..17, text(60), any::<Option<u64>>()).prop_map(|(code, message, actual)| {
            Response::Error {
                code: ErrorCode::from_u16(code),
                message,
                actual,
            }
        }),
        any::<u64>().prop_map(|position| Response::CaughtUp { position }),
        any::<u64>().prop_map(|position| Response::Checkpoint { position }),
        any::<u64>().prop_map(|position| Response::FellBehind { position }),
        (
            proptest::option::of(any::<u64>()),
            proptest::collection::vec((any::<u64>(), any::<bool>(), text(30)), 0..5)
        )
            .prop_map(|(leader, members)| Response::Members {
                leader,
                members: members
                    .into_iter()
                    .map(|(id, voter, client)| quiver_net::message::Member { id, voter, client })
                    .collect(),
            }),
        text(200).prop_map(Response::PersistentGroups),
        text(200).prop_map(Response::PersistentInfo),
        (any::<u32>(), event())
            .prop_map(|(retry_count, event)| Response::Delivery { retry_count, event }),
    ]
}

fn one_frame(bytes: BytesMut) -> frame::Frame {
    let mut buf = bytes;
    let f = frame::parse(&mut buf, frame::FRAME_PAYLOAD_BYTES_DEFAULT)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty(), "one message is exactly one frame");
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip(req in request()) {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        let f = one_frame(out);
        prop_assert_eq!(f.kind, req.kind() as u16);
        prop_assert_eq!(Request::decode(&f).unwrap(), req);
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let mut out = BytesMut::new();
        resp.encode(&mut out);
        let f = one_frame(out);
        prop_assert_eq!(Response::decode(&f).unwrap(), resp);
    }

    #[test]
    fn decoders_never_panic(
        kind in any::<u16>(),
        flags in 0u16..3,
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let f = frame::Frame { kind, flags, payload: Bytes::from(payload) };
        let _ = Request::decode(&f);
        let _ = Response::decode(&f);
    }

    #[test]
    fn a_truncated_message_is_an_error(req in request(), cut in any::<proptest::sample::Index>()) {
        let mut out = BytesMut::new();
        req.encode(&mut out);
        let f = one_frame(out);
        prop_assume!(!f.payload.is_empty());
        let short = frame::Frame { payload: f.payload.slice(..cut.index(f.payload.len())), ..f };
        prop_assert!(Request::decode(&short).is_err());
    }
}

#[test]
fn kinds_are_distinct_and_known() {
    for k in 0..=u16::MAX {
        if let Some(kind) = Kind::from_u16(k) {
            assert_eq!(kind as u16, k);
        }
    }
    assert_eq!(Kind::from_u16(0x0101), Some(Kind::Append));
    assert_eq!(Kind::from_u16(0x0300), None);
    assert_eq!(Kind::from_u16(0x0115), Some(Kind::PersistentConnect));
    assert_eq!(Kind::from_u16(0x020F), Some(Kind::Delivery));
}

#[test]
fn a_bad_nack_action_is_refused() {
    let mut out = BytesMut::new();
    Request::PersistentNack {
        action: 1,
        positions: vec![4],
    }
    .encode(&mut out);
    let f = one_frame(out);
    let mut payload = f.payload.to_vec();
    payload[0] = 3;
    let bad = frame::Frame {
        payload: Bytes::from(payload),
        ..f
    };
    let err = Request::decode(&bad).unwrap_err();
    assert!(err.detail.contains("nack action"), "{err}");
}

#[test]
fn delivery_frames_carry_more() {
    let mut out = BytesMut::new();
    let event = Event {
        stream: Text::from("s"),
        version: 1,
        position: 2,
        id: [7; 16],
        event_type: Text::from("T"),
        content_type: 1,
        data: Bytes::from_static(b"{}"),
        metadata: Bytes::new(),
        created_us: 3,
    };
    Response::Delivery {
        retry_count: 2,
        event,
    }
    .encode(&mut out);
    assert_eq!(one_frame(out).flags, frame::FLAG_MORE);
}

#[test]
fn forged_counts_do_not_allocate() {
    // An Append claiming 65,535 streams in a 2-byte payload fails at once.
    let f = frame::Frame {
        kind: Kind::Append as u16,
        flags: 0,
        payload: Bytes::from_static(&[0xff, 0xff]),
    };
    let err = Request::decode(&f).unwrap_err();
    assert!(err.detail.contains("cannot fit"), "{err}");
}
