#!/usr/bin/env python3
"""Writes a few valid encodings into corpus/<target>/ as fuzzing seeds (run from net/fuzz)."""
import os
import struct

def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def str8(s): return u8(len(s)) + s
def str16(s): return u16(len(s)) + s
def bytes32(b): return u32(len(b)) + b
def opt(v): return u8(0) if v is None else u8(1) + u64(v)
def meta(): return opt(10) + opt(None) + opt(3) + bytes32(b"{}")
def info(): return str8(b"orders-1") + opt(4) + u8(1) + meta()
def msg(kind, payload, flags=0): return u16(kind) + u16(flags) + payload  # the targets' input shape

UUID = bytes(range(16))
new_event = UUID + u32(2) + u32(1) + u8(7) + u8(1) + b"\0\0" + b"Created" + b"{}" + b"m"
event = (UUID + u64(3) + u64(99) + u64(1_700_000_000_000_000) + u32(2) + u32(0)
         + u8(8) + u8(7) + u8(1) + u8(0) + b"orders-1" + b"Created" + b"{}")

requests = {
    "hello": msg(0x0100, u16(1) + str16(b"quiver-cli") + bytes32(b"secret")),
    "append": msg(0x0101, u16(1) + str8(b"orders-1") + u8(3) + u64(2) + u32(1) + new_event),
    "read_stream": msg(0x0102, str8(b"orders-1") + u8(2) + u64(5) + u8(1) + u64(100)),
    "read_all": msg(0x0103, u8(0) + u64(0) + u8(0) + u64(10) + u8(1) + str16(b"Order") + u8(2) + str16(b"^o.*")),
    "stream_info": msg(0x0104, str8(b"orders-1")),
    "list_streams": msg(0x0105, str8(b"ord") + u8(1) + str8(b"orders-1") + u32(50)),
    "set_metadata": msg(0x0106, str8(b"orders-1") + meta()),
    "delete": msg(0x0107, str8(b"orders-1") + u8(1) + u64(0) + u8(1)),
    "scavenge": msg(0x0108, b""),
    "snapshot_put": msg(0x0109, str8(b"orders-1") + u64(7) + bytes32(b"state")),
    "snapshot_get": msg(0x010A, str8(b"orders-1") + u64(7) + u8(1)),
    "snapshot_list": msg(0x010B, str8(b"orders-1")),
    "snapshot_delete": msg(0x010C, str8(b"orders-1") + u64(7)),
    "status": msg(0x010D, b""),
}
responses = {
    "hello_ok": msg(0x0200, u16(1) + str16(b"quiver 0.1") + str8(b"store-1") + u32(16 << 20)),
    "appended": msg(0x0201, u64(3) + u64(10) + u64(12) + u64(40) + u8(0)),
    "events": msg(0x0202, u32(1) + event, flags=1),
    "stream_info": msg(0x0204, u8(1) + info()),
    "streams": msg(0x0205, u32(2) + info() + info()),
    "done": msg(0x0206, u64(41)),
    "scavenged": msg(0x0207, u64(4) + u64(1) + u64(100) + u64(4096)),
    "snapshot": msg(0x0208, u8(1) + str8(b"orders-1") + u64(7) + bytes32(b"state")),
    "snapshot_versions": msg(0x0209, u32(2) + u64(3) + u64(7)),
    "status": msg(0x020A, str8(b"store-1") + str16(b"quiver 0.1") + str8(b"leader") + u64(9) + u64(9) + u64(2)),
    "error": msg(0x02FF, u16(1) + str16(b"wrong expected version") + opt(5)),
}

def frame(m):  # a target input (kind, flags, payload) as a wire frame
    return u32(len(m) - 4) + m

frames = {
    "two_frames": u16(1024) + u8(5) + frame(requests["hello"]) + frame(responses["events"]),
    "partial": u16(1024) + u8(0) + frame(requests["append"])[:-3],
    "too_large": u16(4) + u8(2) + frame(requests["hello"]),
}

def peer(kind, body, frm=1, to=2, term=3):  # a peer message: version, from, to, term, fields
    return msg(kind, u8(1) + u64(frm) + u64(to) + u64(term) + body)

def entry(index, kind, data): return u64(index) + u64(3) + u8(kind) + bytes32(data)

peers = {
    "auth": msg(0x0300, u8(1) + u64(1) + u64(2) + u64(0x1234) + bytes(range(32))),
    "auth_ok": msg(0x0301, u8(1) + u64(2) + u64(1) + u64(0x5678) + bytes(range(32))),
    "pre_vote": peer(0x0310, u64(10) + u64(2)),
    "pre_vote_resp": peer(0x0311, u8(1)),
    "vote": peer(0x0312, u64(10) + u64(2) + u8(1)),
    "vote_resp": peer(0x0313, u8(0)),
    "append": peer(0x0314, u64(9) + u64(2) + u64(8) + u64(4) + u32(2)
                   + entry(10, 0, b"event batch") + entry(11, 1, u32(1) + u64(1) + u32(0) + u32(0))),
    "heartbeat": peer(0x0314, u64(9) + u64(2) + u64(8) + u64(4) + u32(0)),
    "append_resp": peer(0x0315, u8(1) + u64(9) + u64(5) + u64(2) + u64(4)),
    "timeout_now": peer(0x0316, b""),
    "read_index": peer(0x0317, u64(77)),
    "read_index_resp": peer(0x0318, u64(77) + u64(12)),
    "segment": peer(0x0319, u64(1) + u64(9) + u64(3) + u64(0) + u64(0) + bytes32(b"segment bytes") + u8(1)),
    "segment_resp": peer(0x031A, u64(1) + u64(4096) + u8(0)),
}

for target, seeds in [("frame_parse", frames), ("request_decode", requests), ("response_decode", responses),
                      ("peer_decode", peers)]:
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)
