#!/usr/bin/env python3
"""Measures pwrite + fdatasync on this disk, growing a file versus overwriting a pre-zeroed
one: the measurement behind the engine's pre-zeroed segments (docs/STORAGE.md).

Usage: python3 benches/tools/fsync_probe.py [DIR]   (DIR on the disk to measure, not tmpfs)
"""
import os
import sys
import time


def run(directory, prezero, size, n=2000):
    path = os.path.join(directory, "fsync-probe.bin")
    if os.path.exists(path):
        os.remove(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        if prezero:
            os.write(fd, b"\0" * (size * n))
            os.fsync(fd)
        buf = b"x" * size
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            a = time.perf_counter()
            os.pwrite(fd, buf, i * size)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - a)
        total = time.perf_counter() - t0
    finally:
        os.close(fd)
        os.remove(path)
    lat.sort()
    kind = "overwriting zeros" if prezero else "growing the file "
    print(f"{size:>6} B, {kind}: {n / total:7.0f} syncs/s, "
          f"p50 {lat[n // 2] * 1e6:4.0f} us, p99 {lat[int(n * 0.99)] * 1e6:4.0f} us")


if __name__ == "__main__":
    directory = sys.argv[1] if len(sys.argv) > 1 else "."
    for size in (33 * 1024, 300):
        run(directory, False, size)
        run(directory, True, size)
