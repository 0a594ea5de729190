"""Quiver's client protocol (version 1), written from docs/PROTOCOL.md alone.

Pure bytes: frames, the primitive encodings, the requests this client sends and the
responses it reads. No I/O here; quiver_client.py carries these bytes over QUIC. Every
integer is little-endian; nothing is aligned or padded.
"""

import struct
import uuid
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1
ALPN = "quiver/1"
FRAME_HEADER_BYTES = 8
FLAG_MORE = 0x0001

# Request kinds (section 4).
HELLO = 0x0100
APPEND = 0x0101
READ_STREAM = 0x0102
READ_ALL = 0x0103
STATUS = 0x010D
SUBSCRIBE = 0x010E

# Response kinds (section 5).
HELLO_OK = 0x0200
APPENDED = 0x0201
EVENTS = 0x0202
STATUS_REPLY = 0x020A
CAUGHT_UP = 0x020B
CHECKPOINT = 0x020C
FELL_BEHIND = 0x0210
ERROR = 0x02FF

# Error codes (section 6).
ERROR_NAMES = {
    1: "WrongExpectedVersion", 2: "StreamDeleted", 3: "StreamNotFound", 4: "InvalidName",
    5: "InvalidRequest", 6: "TooLarge", 7: "IdempotencyMismatch", 8: "Unauthenticated",
    9: "UnsupportedVersion", 10: "Malformed", 11: "Corruption", 12: "Unavailable",
    13: "Timeout", 14: "NotLeader", 15: "Internal", 16: "AlreadyExists",
}

# Expected (section 3): tag, then a u64 that is always present.
ANY, NO_STREAM, STREAM_EXISTS, EXACT = 0, 1, 2, 3
# ReadFrom (section 3).
FROM_START, FROM_END, FROM_AT = 0, 1, 2
# Content types.
BINARY, JSON = 0, 1


class Malformed(Exception):
    """Bytes that do not decode as the spec says."""


# ---- primitives -------------------------------------------------------------------------

def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def boolean(v):
    return b"\x01" if v else b"\x00"


def str8(s):
    b = s.encode("utf-8")
    if len(b) > 255:
        raise ValueError("a str8 holds at most 255 bytes")
    return u8(len(b)) + b


def str16(s):
    b = s.encode("utf-8")
    if len(b) > 65535:
        raise ValueError("a str16 holds at most 65,535 bytes")
    return u16(len(b)) + b


def bytes32(b):
    return u32(len(b)) + bytes(b)


def frame(kind, payload, flags=0):
    """One frame: u32 payload length, u16 kind, u16 flags, then the payload."""
    return struct.pack("<IHH", len(payload), kind, flags) + payload


class Reader:
    """Reads fields off a payload; every read checks the bytes left first."""

    def __init__(self, data):
        self.data = memoryview(data)
        self.at = 0

    def take(self, n):
        if n > len(self.data) - self.at:
            raise Malformed(f"needs {n} bytes at {self.at}, {len(self.data) - self.at} left")
        b = bytes(self.data[self.at:self.at + n])
        self.at += n
        return b

    def left(self):
        return len(self.data) - self.at

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def boolean(self):
        b = self.u8()
        if b > 1:
            raise Malformed(f"bool byte {b}")
        return b == 1

    def opt_u64(self):
        return self.u64() if self.boolean() else None

    def text(self, n):
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError as e:
            raise Malformed(f"text is not UTF-8: {e}") from None

    def str8(self):
        return self.text(self.u8())

    def str16(self):
        return self.text(self.u16())

    def bytes32(self):
        return self.take(self.u32())

    def end(self):
        if self.left():
            raise Malformed(f"{self.left()} bytes left over")


def parse_frame(buf):
    """(kind, flags, payload, rest) for the first whole frame of `buf`, or None if `buf`
    does not hold one yet."""
    if len(buf) < FRAME_HEADER_BYTES:
        return None
    length, kind, flags = struct.unpack_from("<IHH", buf)
    if flags & ~FLAG_MORE:
        raise Malformed(f"unknown flag bits {flags:#06x}")
    if len(buf) < FRAME_HEADER_BYTES + length:
        return None
    end = FRAME_HEADER_BYTES + length
    return kind, flags, bytes(buf[FRAME_HEADER_BYTES:end]), buf[end:]


# ---- requests ---------------------------------------------------------------------------

def hello(client="quiver-interop (python, aioquic)", token=b""):
    return frame(HELLO, u16(PROTOCOL_VERSION) + str16(client) + bytes32(token))


@dataclass
class NewEvent:
    event_type: str
    data: bytes
    content_type: int = BINARY
    metadata: bytes = b""
    id: uuid.UUID = field(default_factory=uuid.uuid4)

    def encode(self):
        t = self.event_type.encode("utf-8")
        # NewEventHeader, 28 bytes: id, data_len, meta_len, type_len, content_type, reserved.
        header = (self.id.bytes + u32(len(self.data)) + u32(len(self.metadata))
                  + u8(len(t)) + u8(self.content_type) + b"\x00\x00")
        assert len(header) == 28
        return header + t + self.data + self.metadata


def expected(tag, version=0):
    return u8(tag) + u64(version)


def append(writes):
    """writes: [(stream, (tag, version), [NewEvent])]: one atomic write."""
    p = u16(len(writes))
    for stream, (tag, version), events in writes:
        p += str8(stream) + expected(tag, version) + u32(len(events))
        for e in events:
            p += e.encode()
    return frame(APPEND, p)


def read_from(tag, at=0):
    return u8(tag) + u64(at)


def no_match():
    return u8(0)


def prefix(s):
    return u8(1) + str16(s)


def read_stream(stream, start=(FROM_START, 0), backward=False, max_count=2**64 - 1):
    return frame(READ_STREAM, str8(stream) + read_from(*start) + boolean(backward)
                 + u64(max_count))


def read_all(start=(FROM_START, 0), backward=False, max_count=2**64 - 1,
             event_type=None, stream=None):
    return frame(READ_ALL, read_from(*start) + boolean(backward) + u64(max_count)
                 + (event_type or no_match()) + (stream or no_match()))


def subscribe(stream=None, start=(FROM_START, 0), event_type=None, stream_filter=None,
              checkpoint_every=0):
    p = boolean(stream is not None)
    if stream is not None:
        p += str8(stream)
    p += read_from(*start) + (event_type or no_match()) + (stream_filter or no_match())
    p += u32(checkpoint_every) + u16(0)  # no payload predicates
    return frame(SUBSCRIBE, p)


def status():
    return frame(STATUS, b"")


# ---- responses --------------------------------------------------------------------------

@dataclass
class Event:
    id: uuid.UUID
    version: int
    position: int
    created_us: int
    stream: str
    event_type: str
    content_type: int
    data: bytes
    metadata: bytes


class ServerError(Exception):
    """An `Error` frame."""

    def __init__(self, code, message, actual):
        super().__init__(f"{ERROR_NAMES.get(code, 'Internal')} ({code}): {message}")
        self.code = code
        self.name = ERROR_NAMES.get(code, "Internal")
        self.message = message
        self.actual = actual


def decode_event(r):
    # EventHeader, 52 bytes.
    eid = uuid.UUID(bytes=r.take(16))
    version, position, created_us = r.u64(), r.u64(), r.u64()
    data_len, meta_len = r.u32(), r.u32()
    stream_len, type_len, content_type, _reserved = r.u8(), r.u8(), r.u8(), r.u8()
    stream = r.text(stream_len)
    event_type = r.text(type_len)
    data = r.take(data_len)
    metadata = r.take(meta_len)
    return Event(eid, version, position, created_us, stream, event_type, content_type,
                 data, metadata)


def decode_response(kind, flags, payload):
    """The response as a (name, value) pair; `FLAG_MORE` is allowed on Events only."""
    if flags & FLAG_MORE and kind != EVENTS:
        raise Malformed(f"FLAG_MORE on kind {kind:#06x}")
    r = Reader(payload)
    if kind == HELLO_OK:
        out = ("HelloOk", {"version": r.u16(), "server": r.str16(), "store_id": r.str8(),
                           "max_frame": r.u32()})
    elif kind == APPENDED:
        out = ("Appended", {"next_expected_version": r.u64(), "position_first": r.u64(),
                            "position_last": r.u64(), "index": r.u64(),
                            "idempotent": r.boolean()})
    elif kind == EVENTS:
        count = r.u32()
        if count * 52 > r.left():
            raise Malformed(f"{count} events cannot fit in {r.left()} bytes")
        out = ("Events", [decode_event(r) for _ in range(count)])
    elif kind in (CAUGHT_UP, CHECKPOINT, FELL_BEHIND):
        name = {CAUGHT_UP: "CaughtUp", CHECKPOINT: "Checkpoint", FELL_BEHIND: "FellBehind"}
        out = (name[kind], r.u64())
    elif kind == STATUS_REPLY:
        out = ("StatusReply", {"store_id": r.str8(), "server": r.str16(), "role": r.str8(),
                               "commit_position": r.u64(), "last_index": r.u64(),
                               "streams": r.u64()})
    elif kind == ERROR:
        code, message, actual = r.u16(), r.str16(), r.opt_u64()
        r.end()
        raise ServerError(code, message, actual)
    else:
        raise Malformed(f"response kind {kind:#06x} is not one this client reads")
    r.end()
    return out
