//! The worked examples of `docs/PROTOCOL.md` (section 7) are what this crate encodes, byte
//! for byte: each `<!-- example: NAME -->` block is the encoding of the message named here,
//! and decodes back to it. The Python interop client (`net/interop/check.py`) checks the
//! same blocks against its own encoder and the running server.

use bytes::{Bytes, BytesMut};
use quiver_net::frame::parse;
use quiver_net::message::{Event, Expected, NewEvent, ReadFrom, Request, Response, StreamWrite};
use quiver_net::{ErrorCode, Text};

const SPEC: &str = include_str!("../../docs/PROTOCOL.md");
const ID: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

/// The bytes of the example named `name`: the hex block after its marker.
fn example(name: &str) -> Vec<u8> {
    let marker = format!("<!-- example: {name} -->");
    let at = SPEC
        .find(&marker)
        .unwrap_or_else(|| panic!("no example {name}"));
    let rest = &SPEC[at + marker.len()..];
    let start = rest.find("```\n").expect("a fenced block") + 4;
    let end = start + rest[start..].find("```").expect("a closed block");
    let hex: String = rest[start..end].split_whitespace().collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn one_frame(bytes: &[u8]) -> quiver_net::frame::Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = parse(&mut buf, 1 << 20).unwrap().expect("a whole frame");
    assert!(buf.is_empty(), "one frame, nothing after it");
    frame
}

fn check_request(name: &str, req: Request) {
    let mut out = BytesMut::new();
    req.encode(&mut out);
    assert_eq!(hex(&out), hex(&example(name)), "{name}: the spec's bytes");
    assert_eq!(Request::decode(&one_frame(&example(name))).unwrap(), req);
}

fn check_response(name: &str, resp: Response) {
    let mut out = BytesMut::new();
    resp.encode(&mut out);
    assert_eq!(hex(&out), hex(&example(name)), "{name}: the spec's bytes");
    assert_eq!(Response::decode(&one_frame(&example(name))).unwrap(), resp);
}

/// The event of the examples, as stored (its timestamp fixed).
fn spec_event() -> Event {
    Event {
        stream: Text::from("order-1"),
        version: 0,
        position: 0,
        id: ID,
        event_type: Text::from("Created"),
        content_type: 1,
        data: Bytes::from_static(br#"{"a":1}"#),
        metadata: Bytes::new(),
        created_us: 1_700_000_000_000_000,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn every_worked_example_is_what_the_codec_says() {
    check_request(
        "hello-request",
        Request::Hello {
            version: 1,
            client: Text::from("py"),
            token: Bytes::new(),
        },
    );
    check_response(
        "hello-ok",
        Response::HelloOk {
            version: 1,
            server: Text::from("quiver 0.1.0"),
            store_id: Text::from("quiver"),
            max_frame: 16 << 20,
        },
    );
    check_request(
        "append-request",
        Request::Append {
            writes: vec![StreamWrite {
                stream: Text::from("order-1"),
                expected: Expected::NoStream,
                events: vec![NewEvent {
                    id: ID,
                    event_type: Text::from("Created"),
                    content_type: 1,
                    data: Bytes::from_static(br#"{"a":1}"#),
                    metadata: Bytes::new(),
                }],
            }],
        },
    );
    check_response(
        "appended",
        Response::Appended {
            next_expected_version: 0,
            position_first: 0,
            position_last: 0,
            index: 1,
            idempotent: false,
        },
    );
    check_request(
        "read-stream-request",
        Request::ReadStream {
            stream: Text::from("order-1"),
            from: ReadFrom::Start,
            backward: false,
            max_count: 10,
        },
    );
    check_response(
        "events",
        Response::Events {
            events: vec![spec_event()],
            more: false,
        },
    );
    check_request(
        "subscribe-request",
        Request::Subscribe {
            stream: None,
            from: ReadFrom::End,
            event_type: None,
            stream_filter: None,
            checkpoint_every: 0,
            payload: Vec::new(),
        },
    );
    check_response("caught-up", Response::CaughtUp { position: 1 });
    check_request("status-request", Request::Status);
    check_response("done", Response::Done { index: 5 });
    check_request(
        "snapshot-get-request",
        Request::SnapshotGet {
            stream: Text::from("order-1"),
            version: u64::MAX,
            latest: true,
        },
    );
    check_response(
        "snapshot-reply",
        Response::Snapshot(Some((
            Text::from("order-1"),
            0,
            Bytes::from_static(br#"{"n":1}"#),
        ))),
    );
    check_request(
        "persistent-connect-request",
        Request::PersistentConnect {
            group: Text::from("billing"),
        },
    );
    check_response(
        "delivery",
        Response::Delivery {
            retry_count: 0,
            event: spec_event(),
        },
    );
    check_request(
        "persistent-ack-request",
        Request::PersistentAck { positions: vec![0] },
    );
    check_response(
        "error",
        Response::Error {
            code: ErrorCode::WrongExpectedVersion,
            message: Text::from("expected NoStream, stream is at 0"),
            actual: Some(0),
        },
    );
}
