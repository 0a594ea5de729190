"""Quiver's second-language interoperability check: a client written in Python on aioquic
from docs/PROTOCOL.md alone, run against a real `quiver serve` on a fresh, empty store.

It checks that this client's bytes equal the worked examples of the spec, that the server
answers them with the spec's bytes, and that Hello, appends, reads and subscriptions (and
the refusals the spec promises) behave as written. Prints one line per check and a verdict;
exits 0 only if every check passed.

    python3 check.py --server 127.0.0.1:7600 --ca DATA_DIR/tls/ca.pem [--spec docs/PROTOCOL.md]
"""

import argparse
import asyncio
import json
import os
import re
import sys
import traceback
import uuid

import quiver_client as qc
import quiver_wire as w

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_DEFAULT = os.path.join(HERE, "..", "..", "docs", "PROTOCOL.md")
# The id of the spec's worked examples.
EXAMPLE_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


def spec_examples(path):
    """The spec's worked examples: each `<!-- example: NAME -->` line is followed by a fenced
    block of continuous hex."""
    text = open(path, encoding="utf-8").read()
    found = {}
    for m in re.finditer(r"<!-- example: ([a-z0-9-]+) -->\s*```\n([0-9a-f\n]+)```", text):
        found[m.group(1)] = bytes.fromhex(m.group(2).replace("\n", ""))
    return found


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    async def run(self, name, coro):
        try:
            await coro
            self.passed += 1
            print(f"PASS {name}", flush=True)
        except Exception as e:  # a check's failure, whatever it is, is reported, not raised
            self.failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


async def expect_error(response, name):
    """The request's answer is an `Error` frame with code `name`; returns it."""
    try:
        got = await response.one()
    except w.ServerError as e:
        expect(e.name == name, f"expected Error {name}, got {e}")
        return e
    raise AssertionError(f"expected Error {name}, got {got}")


def spec_event():
    return w.NewEvent("Created", b'{"a":1}', content_type=w.JSON, id=EXAMPLE_ID)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="HOST:PORT of a fresh quiver serve")
    ap.add_argument("--ca", required=True, help="the server's CA, DATA_DIR/tls/ca.pem")
    ap.add_argument("--spec", default=SPEC_DEFAULT)
    args = ap.parse_args()
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    examples = spec_examples(args.spec)
    checks = Checks()

    def session(**kw):
        return qc.session(host, port, args.ca, **kw)

    async def spec_bytes():
        for name in ["hello-request", "hello-ok", "append-request", "appended",
                     "read-stream-request", "events", "subscribe-request", "caught-up",
                     "error", "status-request"]:
            expect(name in examples, f"the spec has no example {name!r}")
        expect(w.hello(client="py") == examples["hello-request"], "Hello bytes differ")
        expect(w.status() == examples["status-request"], "Status bytes differ")
        append = w.append([("order-1", (w.NO_STREAM, 0), [spec_event()])])
        expect(append == examples["append-request"], "Append bytes differ")
        read = w.read_stream("order-1", (w.FROM_START, 0), False, 10)
        expect(read == examples["read-stream-request"], "ReadStream bytes differ")
        sub = w.subscribe(None, (w.FROM_END, 0))
        expect(sub == examples["subscribe-request"], "Subscribe bytes differ")
        for name in ["hello-ok", "appended", "events", "caught-up"]:
            kind, flags, payload, rest = w.parse_frame(examples[name])
            expect(rest == b"", f"{name}: bytes after the frame")
            w.decode_response(kind, flags, payload)
        kind, flags, payload, _ = w.parse_frame(examples["error"])
        try:
            w.decode_response(kind, flags, payload)
            raise AssertionError("the error example did not decode as an Error")
        except w.ServerError as e:
            expect((e.name, e.actual) == ("WrongExpectedVersion", 0), f"{e}")

    async def hello_and_the_worked_append():
        async with session() as c:
            ok = c.hello_ok
            expect(ok["max_frame"] >= 1 << 20, f"max_frame {ok['max_frame']}")
            # The spec's worked example, on a new store: the answer is the spec's bytes.
            r = c.send(w.append([("order-1", (w.NO_STREAM, 0), [spec_event()])]))
            kind, flags, payload = await r.frame()
            got = w.frame(kind, payload, flags)
            expect(got == examples["appended"],
                   f"Appended differs from the spec: {got.hex()} vs {examples['appended'].hex()}")
            expect(await r.frame() is None, "one frame")
            # A retry of the same id is idempotent: the original write, nothing new.
            name, a = await c.send(w.append([("order-1", (w.NO_STREAM, 0),
                                              [spec_event()])])).one()
            expect(a["idempotent"] and a["position_first"] == 0, f"retry answered {a}")
            # A new id against NoStream conflicts, carrying the actual version.
            e = await expect_error(c.send(w.append([("order-1", (w.NO_STREAM, 0), [
                w.NewEvent("Created", b"{}", w.JSON)])])), "WrongExpectedVersion")
            expect(e.actual == 0, f"actual {e.actual}")
            # The stored event reads back as the spec's Events example (but its timestamp).
            events, _ = await c.send(w.read_stream("order-1", (w.FROM_START, 0), False,
                                                   10)).events()
            kind, flags, payload, _ = w.parse_frame(examples["events"])
            (_, [want]) = w.decode_response(kind, flags, payload)
            expect(len(events) == 1, f"{len(events)} events")
            got = events[0]
            got.created_us = want.created_us
            expect(got == want, f"read {got}, spec {want}")

    async def appends_and_streamed_reads():
        async with session() as c:
            n = 3000
            batch = [w.NewEvent("Counted", json.dumps({"i": i}).encode(), w.JSON)
                     for i in range(n)]
            name, a = await c.send(w.append([("many-1", (w.ANY, 0), batch)])).one()
            expect(name == "Appended" and a["next_expected_version"] == n - 1, f"{a}")
            first = a["position_first"]
            expect(a["position_last"] == first + n - 1, f"{a}")
            # Exact expected version, then a multi-stream append in one atomic write.
            name, a2 = await c.send(w.append([
                ("many-1", (w.EXACT, n - 1), [w.NewEvent("More", b"x")]),
                ("many-2", (w.NO_STREAM, 0), [w.NewEvent("Other", b"y")]),
            ])).one()
            expect(a2["position_last"] == a2["position_first"] + 1, f"{a2}")
            events, frames = await c.send(w.read_stream("many-1")).events()
            expect([e.version for e in events] == list(range(n + 1)), "versions 0..n")
            expect(all(json.loads(e.data) == {"i": e.version} for e in events[:n]), "data")
            expect(events[n].data == b"x" and events[n].content_type == w.BINARY, "last")
            expect(frames >= 1, f"{frames} frames")
            back, _ = await c.send(w.read_stream("many-1", (w.FROM_END, 0), True, 3)).events()
            expect([e.version for e in back] == [n, n - 1, n - 2], f"{[e.version for e in back]}")
            # $all, filtered by stream prefix, from a position.
            all_, _ = await c.send(w.read_all((w.FROM_AT, first), False, 2**64 - 1,
                                              stream=w.prefix("many-2"))).events()
            expect([(e.stream, e.version) for e in all_] == [("many-2", 0)], f"{all_}")
            # A read of nothing is one Events frame with count 0.
            none, frames = await c.send(w.read_stream("many-1", (w.FROM_AT, n + 5))).events()
            expect(none == [] and frames == 1, f"{none} in {frames} frames")
            await expect_error(c.send(w.read_stream("no-such-stream")), "StreamNotFound")

    async def a_read_spanning_many_frames():
        async with session() as c:
            # 40 events of 100 KB: more than one frame's worth (frames are capped near 1 MiB).
            batch = [w.NewEvent("Big", bytes([i]) * 100_000) for i in range(40)]
            await c.send(w.append([("big-1", (w.NO_STREAM, 0), batch)])).one()
            events, frames = await c.send(w.read_stream("big-1")).events()
            expect(len(events) == 40 and frames > 1, f"{len(events)} events in {frames} frames")
            expect(all(e.data == bytes([e.version]) * 100_000 for e in events), "payloads")

    async def subscriptions():
        async with session() as c:
            # `$all` from the end: CaughtUp first, then only what commits after.
            sub = c.send(w.subscribe(None, (w.FROM_END, 0)))
            name, caught_up_at = await sub.response()
            expect(name == "CaughtUp", f"{name}")
            # A stream subscription from its start: its history, then CaughtUp.
            sub2 = c.send(w.subscribe("order-1", (w.FROM_START, 0)))
            name, history = await sub2.response()
            expect(name == "Events" and [e.version for e in history] == [0], f"{name}")
            name, at = await sub2.response()
            expect((name, at) == ("CaughtUp", 1), f"{name} {at}")
            await c.send(w.append([("order-1", (w.EXACT, 0), [w.NewEvent("Paid", b"1")]),
                                   ("live-1", (w.ANY, 0), [w.NewEvent("Hi", b"2")])])).one()
            seen = []
            while len(seen) < 2:
                name, value = await sub.response()
                expect(name in ("Events", "Checkpoint"), f"{name}")
                if name == "Events":
                    seen.extend(value)
            expect([(e.stream, e.event_type) for e in seen] == [("order-1", "Paid"),
                                                                 ("live-1", "Hi")], f"{seen}")
            expect(seen[0].position == caught_up_at, "live delivery starts where CaughtUp said")
            name, live = await sub2.response()
            expect(name == "Events" and [e.version for e in live] == [1], f"{name}")

    async def refusals_on_a_live_connection():
        async with session() as c:
            # An empty request stream (FIN, no bytes) is answered, and the connection stays.
            await expect_error(c.send(b""), "InvalidRequest")
            # Names: control characters are refused, DEL and U+0080-U+009F included.
            for bad in ["a\x7fb", "a\x85b", "a\x1fb", "$reserved"]:
                await expect_error(c.send(w.append([(bad, (w.ANY, 0), [
                    w.NewEvent("T", b"")])])), "InvalidName")
            await expect_error(c.send(w.append([("ok-name", (w.ANY, 0), [
                w.NewEvent("T\x9f", b"")])])), "InvalidName")
            # A second Hello.
            await expect_error(c.send(w.hello()), "InvalidRequest")
            name, s = await c.send(w.status()).one()
            expect(name == "StatusReply", "still serving")

    async def a_token_when_none_is_required_is_accepted():
        async with session(token=b"not-needed") as c:
            name, _ = await c.send(w.status()).one()
            expect(name == "StatusReply", name)

    async def a_request_before_hello_gets_an_error_then_the_close():
        async with session(hello=False) as c:
            e = await expect_error(c.send(w.status()), "Malformed")
            t = await c.closed()
            expect(t.frame_type is None, "an application close (CONNECTION_CLOSE 0x1d)")
            expect(t.error_code == 1, f"close code {t.error_code}, want 1 (protocol)")
            expect(t.reason_phrase == e.message, f"reason {t.reason_phrase!r}")

    async def more_requests_than_the_stream_limit_wait_for_credit():
        async with session() as c:
            # 300 requests at once: the client's QUIC stack holds those past the limit (256)
            # until the server's MAX_STREAMS credit arrives; all are answered.
            rs = [c.send(w.status()) for _ in range(300)]
            answers = await asyncio.gather(*(r.one() for r in rs))
            expect(all(a[0] == "StatusReply" for a in answers), "all answered")

    async def breaking_the_stream_limit_closes_with_stream_limit_error():
        async with session() as c:
            # Pretend the server allowed more streams than it did (an aioquic internal), and
            # send one request on a stream far past the limit: a QUIC protocol violation
            # (RFC 9000 section 4.6). Nothing else is in flight, so the server's close is
            # not held back by congestion control (see docs/PROTOCOL.md, Limits).
            c._quic._remote_max_streams_bidi = 10_000
            stream_id = 4 * 1000  # client-initiated bidirectional stream number 1000
            c.responses[stream_id] = qc.Response(c, stream_id)
            c._quic.send_stream_data(stream_id, w.status(), end_stream=True)
            c.transmit()
            t = await c.closed()
            expect(t.error_code == 0x4, f"transport error {t.error_code:#x}, want 0x4 "
                   "STREAM_LIMIT_ERROR")
            expect(t.frame_type is not None, "a transport close (CONNECTION_CLOSE 0x1c)")

    await checks.run("the spec's examples are this client's bytes", spec_bytes())
    await checks.run("Hello, and the worked Append answered with the spec's bytes",
                     hello_and_the_worked_append())
    await checks.run("appends (Any, NoStream, Exact, multi-stream) and streamed reads",
                     appends_and_streamed_reads())
    await checks.run("a read spanning many frames", a_read_spanning_many_frames())
    await checks.run("subscriptions: catch-up, CaughtUp, live", subscriptions())
    await checks.run("refusals on a live connection", refusals_on_a_live_connection())
    await checks.run("a token when none is required is accepted",
                     a_token_when_none_is_required_is_accepted())
    await checks.run("a request before Hello: Error Malformed, then close code 1",
                     a_request_before_hello_gets_an_error_then_the_close())
    await checks.run("requests past the stream limit wait for credit",
                     more_requests_than_the_stream_limit_wait_for_credit())
    await checks.run("a stream past the limit: transport close STREAM_LIMIT_ERROR",
                     breaking_the_stream_limit_closes_with_stream_limit_error())
    verdict = "PASS" if checks.failed == 0 else "FAIL"
    print(f"interop: {verdict} ({checks.passed} passed, {checks.failed} failed)", flush=True)
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
