#!/usr/bin/env python3
"""Writes a few valid encodings into corpus/<target>/ as fuzzing seeds (run from engine/fuzz)."""
import os
import struct

def u8(v): return struct.pack("<B", v)
def u16(v): return struct.pack("<H", v)
def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def str8(s): return u8(len(s)) + s

def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF

assert crc32c(b"123456789") == 0xE3069283

def event(version, slot, etype, data, meta):
    return (bytes(range(16)) + u64(version) + u64(1_700_000_000_000_000) + u32(version - 1)
            + u32(len(data)) + u32(len(meta)) + u16(slot) + u8(len(etype)) + u8(1) + etype + data + meta)

entries = {  # kind byte, body
    "append": (1, u16(2) + str8(b"orders-1") + str8(b"users-2") + u32(2)
               + event(1, 0, b"Created", b"{}", b"") + event(2, 1, b"Renamed", b'{"n":1}', b"m")),
    "delete": (2, str8(b"orders-1") + u8(1) + u64(3)),
    "metadata": (3, str8(b"orders-1") + u8(5) + u64(10) + u64(0) + u64(2) + u32(2) + b"{}"),
    "snapshot_put": (4, str8(b"orders-1") + u64(7) + b"state"),
    "snapshot_delete": (5, str8(b"orders-1") + u64(7)),
    "checkpoint": (6, str8(b"sub-a") + u64(42) + b"opaque"),
    "membership": (7, b"\x01\x02\x03"),
    "noop": (8, b""),
}

def record(kind, body, index):
    tail = u64(index) + u64(1) + u64(index * 2) + u32(2 if kind == 1 else 0) + u8(kind) + u8(0) + b"\0\0"
    return u32(len(body)) + u32(crc32c(body, crc32c(tail))) + tail + body

def segment_header():
    h = b"QUIVSEG\x01" + u32(1) + u32(64) + u64(1) + u64(0) + u64(1 << 20) + bytes(20)
    return h + u32(crc32c(h))

records = {f"record_{n}": record(k, b, i + 1) for i, (n, (k, b)) in enumerate(entries.items())}
records["segment_header"] = segment_header()
records["zeros"] = bytes(48)

for target, seeds in [("entry_decode", {n: u8(k) + b for n, (k, b) in entries.items()}), ("record_parse", records)]:
    os.makedirs(f"corpus/{target}", exist_ok=True)
    for name, data in seeds.items():
        with open(f"corpus/{target}/seed-{name}", "wb") as f:
            f.write(data)
