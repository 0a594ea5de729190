"""A small Quiver client over aioquic, written from docs/PROTOCOL.md alone.

One bidirectional QUIC stream per request: write one request frame, finish the send side,
read response frames. A read's answer is `Events` frames until one without `FLAG_MORE`; a
subscription's is frames until the stream ends.
"""

import asyncio
import contextlib
import ssl

from aioquic.asyncio import QuicConnectionProtocol, connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived, StreamReset

import quiver_wire as w

# Longest wait for any one answer: a test that hangs fails instead.
ANSWER_TIMEOUT_S = 15


class StreamWasReset(Exception):
    """The server reset the stream (RESET_STREAM) with an application error code."""

    def __init__(self, code):
        super().__init__(f"stream reset by the server, code {code}")
        self.code = code


class ConnectionClosed(Exception):
    """The connection ended; `terminated` is aioquic's ConnectionTerminated event."""

    def __init__(self, terminated):
        t = terminated
        super().__init__(f"connection closed: code {t.error_code}, frame type {t.frame_type}, "
                         f"reason {t.reason_phrase!r}")
        self.terminated = terminated


class Response:
    """The receive side of one request stream, read frame by frame."""

    def __init__(self, protocol, stream_id):
        self.protocol = protocol
        self.stream_id = stream_id
        self.queue = asyncio.Queue()
        self.buf = b""
        self.ended = False

    async def frame(self):
        """The next (kind, flags, payload), or None when the stream ended between frames."""
        while True:
            parsed = w.parse_frame(self.buf)
            if parsed is not None:
                kind, flags, payload, self.buf = parsed
                return kind, flags, payload
            if self.ended:
                if self.buf:
                    raise w.Malformed("the stream ended inside a frame")
                return None
            item = await asyncio.wait_for(self.queue.get(), ANSWER_TIMEOUT_S)
            what = item[0]
            if what == "data":
                self.buf += item[1]
                self.ended = item[2]
            elif what == "reset":
                raise StreamWasReset(item[1])
            else:
                raise ConnectionClosed(item[1])

    async def response(self):
        """The next frame, decoded: (name, value); an `Error` frame raises ServerError."""
        f = await self.frame()
        if f is None:
            return None
        return w.decode_response(*f)

    async def one(self):
        """The single response of a request, checking that the stream then ends."""
        r = await self.response()
        if await self.frame() is not None:
            raise w.Malformed("more than one frame for a single response")
        return r

    async def events(self):
        """Every event of a read, following `FLAG_MORE` across frames. Returns (events,
        frame count)."""
        out, frames = [], 0
        while True:
            f = await self.frame()
            if f is None:
                raise w.Malformed("a read ended without a frame lacking FLAG_MORE")
            kind, flags, payload = f
            frames += 1
            name, value = w.decode_response(kind, flags, payload)
            if name != "Events":
                raise w.Malformed(f"{name} in a read's answer")
            out.extend(value)
            if not flags & w.FLAG_MORE:
                if await self.frame() is not None:
                    raise w.Malformed("frames after the last one")
                return out, frames


class Protocol(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.responses = {}
        self.terminated = None
        self.closed_event = asyncio.Event()

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived):
            r = self.responses.get(event.stream_id)
            if r is not None:
                r.queue.put_nowait(("data", event.data, event.end_stream))
        elif isinstance(event, StreamReset):
            r = self.responses.get(event.stream_id)
            if r is not None:
                r.queue.put_nowait(("reset", event.error_code))
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            for r in self.responses.values():
                r.queue.put_nowait(("closed", event))
            self.closed_event.set()

    def send(self, data, finish=True):
        """Opens a bidirectional stream and writes `data` on it."""
        if self.terminated is not None:
            raise ConnectionClosed(self.terminated)
        stream_id = self._quic.get_next_available_stream_id()
        r = Response(self, stream_id)
        self.responses[stream_id] = r
        self._quic.send_stream_data(stream_id, data, end_stream=finish)
        self.transmit()
        return r

    async def closed(self):
        await asyncio.wait_for(self.closed_event.wait(), ANSWER_TIMEOUT_S)
        return self.terminated


def configuration(ca_file):
    c = QuicConfiguration(is_client=True, alpn_protocols=[w.ALPN])
    c.server_name = "localhost"  # the generated certificate names localhost, 127.0.0.1, ::1
    c.verify_mode = ssl.CERT_REQUIRED
    c.load_verify_locations(cafile=ca_file)
    return c


@contextlib.asynccontextmanager
async def session(host, port, ca_file, hello=True, token=b""):
    """A connection; with `hello`, the Hello exchange is done first (as the spec asks)."""
    async with connect(host, port, configuration=configuration(ca_file),
                       create_protocol=Protocol) as protocol:
        if hello:
            name, ok = await protocol.send(w.hello(token=token)).one()
            if name != "HelloOk" or ok["version"] != w.PROTOCOL_VERSION:
                raise w.Malformed(f"Hello answered {name} {ok}")
            protocol.hello_ok = ok
        yield protocol
