#!/usr/bin/env python3
"""portainer.py agent: serves one node's Docker engine to a portainer.py server.

This file also holds the protocol code the server and the agent share, so that no protocol exists twice:
the HTTP/1.1 client that speaks to a Docker API over any byte stream (unix socket, TCP, TLS, tunnel
stream) and the relay that streams a request from an aiohttp server to that API and back, upgrades
(`docker exec -it`, `docker attach`) included. `portainer.py` imports it.

Sections, in the order a request flows:
    constants -> Docker HTTP client -> relay (aiohttp request -> Docker API -> aiohttp response) ->
    tunnel protocol (streams over one WebSocket, used by the server and the edge agent) -> edge mode -> main
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import random
import ssl
import struct
import sys
import urllib.parse
from typing import AsyncIterator, Awaitable, Callable, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

# ----------------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------------

AGENT_VERSION = "2.19.4"
AGENT_API_VERSION = "2"
STREAM_CHUNK = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
# Headers that describe one hop of a connection, never forwarded (RFC 9110 section 7.6.1).
HOP_BY_HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)


class DockerUnreachable(Exception):
    """The Docker API could not be reached or answered with something that is not HTTP."""


# ----------------------------------------------------------------------------------------------------------------
# Docker HTTP client: HTTP/1.1 over any asyncio byte stream, with streamed bodies and upgrades
# ----------------------------------------------------------------------------------------------------------------


async def open_docker_stream(url: str, ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0):
    """Open a byte stream to a Docker API given as unix:///path, tcp://host:port or https://host:port."""
    parsed = urllib.parse.urlsplit(url)
    try:
        if parsed.scheme in ("unix", "npipe"):
            coro = asyncio.open_unix_connection(parsed.path or "/var/run/docker.sock", limit=MAX_RESPONSE_HEAD)
        elif parsed.scheme in ("tcp", "http", "https"):
            use_tls = ssl_context if (ssl_context is not None or parsed.scheme == "https") else None
            if parsed.scheme == "https" and use_tls is None:
                use_tls = ssl.create_default_context()
            port = parsed.port or (2376 if use_tls else 2375)
            coro = asyncio.open_connection(parsed.hostname, port, ssl=use_tls, limit=MAX_RESPONSE_HEAD)
        else:
            raise DockerUnreachable(f"unsupported Docker endpoint scheme {parsed.scheme!r} in {url!r}")
        return await asyncio.wait_for(coro, timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        raise DockerUnreachable(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc


class HttpConnection:
    """One HTTP/1.1 connection to a Docker API. Used for one request at a time; reusable when kept alive."""

    def __init__(self, reader: asyncio.StreamReader, writer):
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    @property
    def is_closing(self) -> bool:
        return self.writer.is_closing() or self.reader.at_eof()

    async def send_head(self, method: str, target: str, headers: Iterable[tuple[str, str]]) -> None:
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} contains a line break")
            lines.append(f"{name}: {value}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self.writer.drain()

    async def send_body(self, body: bytes | AsyncIterator[bytes] | None, chunked: bool) -> None:
        if body is None:
            return
        if isinstance(body, (bytes, bytearray)):
            if body:
                self.writer.write(body)
                await self.writer.drain()
            return
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                self.writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            else:
                self.writer.write(chunk)
            await self.writer.drain()
        if chunked:
            self.writer.write(b"0\r\n\r\n")
            await self.writer.drain()

    async def read_head(self) -> tuple[int, str, CIMultiDict]:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise DockerUnreachable("the Docker API closed the connection before answering") from exc
        except asyncio.LimitOverrunError as exc:
            raise DockerUnreachable("the Docker API sent an oversized response head") from exc
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise DockerUnreachable(f"the Docker API answered with something that is not HTTP: {lines[0][:80]!r}")
        headers: CIMultiDict = CIMultiDict()
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        return int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers


class DockerResponse:
    """A Docker API response whose body is read as a stream. Release it (or use `async with`) when done."""

    def __init__(self, connection: HttpConnection, method: str, status: int, reason: str, headers: CIMultiDict,
                 on_release: Callable[[HttpConnection, bool], None]):
        self.connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers
        self._on_release = on_release
        self._released = False
        self._finished = False
        self.upgraded = status == 101
        te = headers.get("Transfer-Encoding", "").lower()
        self._chunked = "chunked" in te
        length = headers.get("Content-Length")
        self._remaining = int(length) if (length and length.isdigit() and not self._chunked) else None
        no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
        if no_body or self._remaining == 0:
            self._finished = True
        self._keep_alive = "close" not in headers.get("Connection", "").lower() and (
            self._chunked or self._remaining is not None or no_body)

    async def __aenter__(self) -> "DockerResponse":
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, decoded from chunked transfer encoding when the engine used it."""
        reader = self.connection.reader
        while not self._finished:
            if self._chunked:
                size_line = await reader.readline()
                if not size_line:
                    raise DockerUnreachable("the Docker API closed a chunked body early")
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    self._finished = True
                    return
                while size > 0:
                    data = await reader.read(min(size, STREAM_CHUNK))
                    if not data:
                        raise DockerUnreachable("the Docker API closed a chunked body early")
                    size -= len(data)
                    yield data
                await reader.readline()
            elif self._remaining is not None:
                data = await reader.read(min(self._remaining, STREAM_CHUNK))
                if not data:
                    raise DockerUnreachable("the Docker API closed the body early")
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._finished = True
                yield data
            else:
                data = await reader.read(STREAM_CHUNK)
                if not data:
                    self._finished = True
                    return
                yield data

    async def read(self, limit: int = 64 * 1024 * 1024) -> bytes:
        parts, size = [], 0
        async for chunk in self.iter_chunks():
            size += len(chunk)
            if size > limit:
                raise DockerUnreachable(f"the Docker API answer is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        reusable = self._finished and self._keep_alive and not self.upgraded and not self.connection.is_closing
        self._on_release(self.connection, reusable)


class DockerClient:
    """Sends requests to one Docker API over connections from `open_connection`, keeping idle ones alive."""

    def __init__(self, open_connection: Callable[[], Awaitable[HttpConnection]], max_idle: int = 16):
        self._open_connection = open_connection
        self._idle: list[HttpConnection] = []
        self._max_idle = max_idle

    def _release(self, connection: HttpConnection, reusable: bool) -> None:
        if reusable and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes | AsyncIterator[bytes] | None = None, body_length: int | None = None,
                      timeout: float | None = None) -> DockerResponse:
        """Send one request; the response head is awaited, the body is left to stream.

        A streamed body is sent with Content-Length when `body_length` is given, else chunked. An idle
        connection that turns out to be closed is retried once on a new one when the body can be resent.
        """
        header_list = [("Host", "docker")] + list(headers)
        chunked = False
        if isinstance(body, (bytes, bytearray)):
            header_list.append(("Content-Length", str(len(body))))
        elif body is not None:
            if body_length is not None:
                header_list.append(("Content-Length", str(body_length)))
            else:
                chunked = True
                header_list.append(("Transfer-Encoding", "chunked"))
        replayable = body is None or isinstance(body, (bytes, bytearray))
        for attempt in range(2):
            from_pool = bool(self._idle) and attempt == 0 and replayable
            connection = self._idle.pop() if from_pool else await self._open_connection()
            try:
                return await asyncio.wait_for(
                    self._exchange(connection, method, target, header_list, body, chunked), timeout)
            except (DockerUnreachable, ConnectionError) as exc:
                connection.close()
                if from_pool:
                    continue
                raise DockerUnreachable(str(exc) or "the Docker API connection failed") from exc
            except BaseException:
                connection.close()
                raise
        raise DockerUnreachable("the Docker API connection failed")

    async def _exchange(self, connection: HttpConnection, method, target, header_list, body, chunked):
        await connection.send_head(method, target, header_list)
        sender = asyncio.ensure_future(connection.send_body(body, chunked))
        try:
            status, reason, headers = await connection.read_head()
        except BaseException:
            sender.cancel()
            raise
        if status == 101 or not sender.done():
            # The engine may answer before the whole body is sent (an upgrade, or an early error): let it finish.
            if status != 101:
                try:
                    await sender
                except (ConnectionError, DockerUnreachable):
                    pass
        else:
            sender.result()
        return DockerResponse(connection, method, status, reason, headers, self._release)


# ----------------------------------------------------------------------------------------------------------------
# Relay: stream an aiohttp request to a Docker API and its answer back, upgrades included
# ----------------------------------------------------------------------------------------------------------------

# Credentials meant for the server or the agent itself; never passed on to an engine.
PRIVATE_REQUEST_HEADERS = frozenset(
    h.lower() for h in ("Authorization", "X-API-Key", "Cookie", "X-CSRF-Token", "X-PortainerAgent-Signature",
                        "X-PortainerAgent-PublicKey", "X-PortainerAgent-Timestamp", "X-PortainerAgent-Nonce",
                        "X-PortainerAgent-Target", "X-Registry-Auth-Portainer")
)


def forwardable_request_headers(request: web.Request) -> list[tuple[str, str]]:
    headers = [(k, v) for k, v in request.headers.items()
               if k.lower() not in HOP_BY_HOP_HEADERS and k.lower() not in PRIVATE_REQUEST_HEADERS]
    if is_upgrade_request(request):
        headers += [("Connection", "Upgrade"), ("Upgrade", request.headers.get("Upgrade", "tcp"))]
    return headers


def is_upgrade_request(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and bool(request.headers.get("Upgrade"))


async def request_body_stream(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        yield chunk


def request_body_for_relay(request: web.Request) -> tuple[AsyncIterator[bytes] | None, int | None]:
    """The incoming body as a stream plus its length when known (None, None when there is no body)."""
    if request.content_length is not None:
        if request.content_length == 0:
            return None, None
        return request_body_stream(request), request.content_length
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return request_body_stream(request), None
    return None, None


async def relay_response(request: web.Request, response: DockerResponse,
                         rewrite_body: Callable[[bytes], bytes] | None = None) -> web.StreamResponse:
    """Send an engine's response to the client: streamed, or as a raw two-way pipe after an upgrade."""
    if response.upgraded:
        return await _relay_upgraded(request, response)
    try:
        out = web.StreamResponse(status=response.status, reason=response.reason or None)
        for name, value in response.headers.items():
            if name.lower() not in HOP_BY_HOP_HEADERS:
                out.headers.add(name, value)
        if rewrite_body is not None:
            body = rewrite_body(await response.read())
            out.content_length = len(body)
            await out.prepare(request)
            await out.write(body)
            await out.write_eof()
            return out
        length = response.headers.get("Content-Length")
        if length and length.isdigit() and "chunked" not in response.headers.get("Transfer-Encoding", "").lower():
            out.content_length = int(length)
        await out.prepare(request)
        async for chunk in response.iter_chunks():
            await out.write(chunk)
        await out.write_eof()
        return out
    finally:
        response.release()


class _UpgradedClient(asyncio.Protocol):
    """Takes over the client's transport after a 101: raw bytes both ways, half-close kept open, flow control."""

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self._reading_paused = False
        self._writable = asyncio.Event()
        self._writable.set()
        self.lost = asyncio.Event()

    # fed by aiohttp with what it read past the request, then by the transport itself
    def feed_data(self, data: bytes):
        self.data_received(data)
        return False, b""

    def feed_eof(self):
        self.queue.put_nowait(b"")

    def data_received(self, data: bytes) -> None:
        self.queue.put_nowait(data)
        self._queued += len(data)
        if self._queued > 4 * STREAM_CHUNK and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        # `docker run` without -i closes its write side at once and keeps reading: stay half-open for it.
        self.queue.put_nowait(b"")
        return True

    def connection_lost(self, exc) -> None:
        self.queue.put_nowait(b"")
        self.lost.set()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def read(self) -> bytes:
        data = await self.queue.get()
        self._queued -= len(data)
        if self._reading_paused and self._queued <= STREAM_CHUNK and not self.lost.is_set():
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    async def write(self, data: bytes) -> None:
        self.transport.write(data)
        await self._writable.wait()


async def _relay_upgraded(request: web.Request, response: DockerResponse) -> web.StreamResponse:
    out = web.StreamResponse(status=101, reason="UPGRADED")
    for name in ("Content-Type", "Api-Version", "Docker-Experimental", "Ostype", "Server"):
        if name in response.headers:
            out.headers[name] = response.headers[name]
    out.headers["Connection"] = "Upgrade"
    out.headers["Upgrade"] = response.headers.get("Upgrade", "tcp")
    await out.prepare(request)
    transport = request.transport
    client = _UpgradedClient(transport)
    request.protocol.set_parser(client)  # hands over what aiohttp already read past the request
    transport.set_protocol(client)
    connection = response.connection
    # Bytes the engine sent right after its 101 head are already in the connection's reader buffer.

    async def client_to_engine():
        while True:
            data = await client.read()
            if not data:
                with contextlib.suppress(Exception):
                    if connection.writer.can_write_eof():
                        connection.writer.write_eof()
                return
            connection.writer.write(data)
            await connection.writer.drain()

    async def engine_to_client():
        while not client.lost.is_set():
            data = await connection.reader.read(STREAM_CHUNK)
            if not data:
                return
            await client.write(data)

    upstream = asyncio.ensure_future(client_to_engine())
    downstream = asyncio.ensure_future(engine_to_client())
    lost = asyncio.ensure_future(client.lost.wait())
    try:
        # The session ends when the engine ends it or the client goes away; a half-close alone does not end it.
        await asyncio.wait([downstream, lost], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream, lost):
            task.cancel()
        response.release()
        request.protocol.force_close()
        transport.close()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Tunnel protocol: many byte streams over one WebSocket, each with its own credit-based flow control
# ----------------------------------------------------------------------------------------------------------------
#
# The server opens streams; the edge agent connects each one to its Docker engine and pipes raw bytes, so
# HTTP, streaming answers and upgrades (exec -it, attach) all pass unchanged. One binary WebSocket message is
# one frame: kind (1 byte), stream id (4 bytes, big-endian), payload (at most TUNNEL_MAX_PAYLOAD bytes).
#   OPEN    server -> agent: open a stream (payload: what to connect to); agent -> server: it is open
#   DATA    stream bytes; a sender never has more unacknowledged DATA out than TUNNEL_STREAM_WINDOW
#   WINDOW  payload: 4-byte count of bytes the receiver consumed, given back to the sender as credit
#   EOF     the sender will send no more DATA on this stream; the other direction stays open
#   CLOSE   the stream is gone (payload: a reason), from either side at any time
# So a slow reader stalls only its own stream, and neither side buffers more than one window per stream.
# Liveness is the WebSocket's own ping/pong (aiohttp `heartbeat`), on both sides.

TUNNEL_OPEN, TUNNEL_DATA, TUNNEL_WINDOW, TUNNEL_EOF, TUNNEL_CLOSE = 1, 2, 3, 4, 5
TUNNEL_FRAME_HEADER = struct.Struct("!BI")
TUNNEL_MAX_PAYLOAD = 64 * 1024
TUNNEL_MAX_MESSAGE = 2 * TUNNEL_MAX_PAYLOAD  # the largest frame and headroom: aiohttp refuses one of exactly its limit
TUNNEL_STREAM_WINDOW = 256 * 1024
TUNNEL_MAX_STREAMS = 1024
TUNNEL_OPEN_TIMEOUT = 15.0
TUNNEL_CLOSE_TIMEOUT = 2.0


def tunnel_receive_timeout(heartbeat: float) -> float:
    """Silence after which a tunnel is dead: pings go out every `heartbeat` seconds, so a live link is never
    quiet for longer. (aiohttp 3.8 only closes the transport on a missing pong, which a dead TLS link never
    finishes; this timeout ends the tunnel on every aiohttp version.)"""
    return heartbeat * 1.5
EDGE_TUNNEL_PATH = "/api/endpoints/edge/tunnel"
EDGE_ENDPOINT_HEADER = "X-PortainerEdge-EndpointID"
EDGE_SECRET_HEADER = "X-PortainerEdge-Secret"
EDGE_ID_HEADER = "X-PortainerAgent-EdgeID"

edge_log = logging.getLogger("portainer.edge")
# Fire-and-forget tasks (a CLOSE sent from a synchronous close(), a served stream) are kept here until done.
_BACKGROUND_TASKS: set[asyncio.Future] = set()


class TunnelStream:
    """One byte stream in a tunnel: its own reader and writer, shaped like asyncio's StreamReader/StreamWriter
    as far as HttpConnection, DockerResponse and the relay use them."""

    limit = MAX_RESPONSE_HEAD

    def __init__(self, tunnel: "Tunnel", stream_id: int):
        self.tunnel = tunnel
        self.id = stream_id
        self.closed = False
        self.close_reason = ""
        self._inbound = bytearray()
        self._inbound_eof = False
        self._readable = asyncio.Event()
        self._unacknowledged = 0
        self._credit = TUNNEL_STREAM_WINDOW
        self._has_credit = asyncio.Event()
        self._outbound = bytearray()
        self._eof_wanted = False
        self._eof_sent = False
        self._flusher: asyncio.Future | None = None
        self._closed_event: asyncio.Event | None = None

    # -- frames from the other side -----------------------------------------------------------------------------
    def received_data(self, payload: bytes) -> None:
        if self.closed or self._inbound_eof:
            return
        if len(self._inbound) + len(payload) > TUNNEL_STREAM_WINDOW:
            self.close("flow control violated: more data than credit")
            return
        self._inbound += payload
        self._readable.set()

    def received_window(self, amount: int) -> None:
        self._credit += amount
        self._has_credit.set()

    def received_eof(self) -> None:
        self._inbound_eof = True
        self._readable.set()

    def mark_closed(self, reason: str) -> None:
        """The stream is gone: what was received can still be read, nothing more is sent."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._inbound_eof = True
        self._outbound.clear()
        self._readable.set()
        self._has_credit.set()
        if self._closed_event is not None:
            self._closed_event.set()
        self.tunnel.forget(self)

    # -- reading (StreamReader-like) ----------------------------------------------------------------------------
    async def _consumed(self, size: int) -> None:
        self._unacknowledged += size
        if self._unacknowledged >= TUNNEL_STREAM_WINDOW // 4 and not self.closed:
            amount, self._unacknowledged = self._unacknowledged, 0
            await self.tunnel.send(TUNNEL_WINDOW, self.id, amount.to_bytes(4, "big"))

    async def _wait_readable(self) -> None:
        while not self._inbound and not self._inbound_eof:
            self._readable.clear()
            await self._readable.wait()

    def at_eof(self) -> bool:
        return self._inbound_eof and not self._inbound

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (any amount when n < 0) as soon as some are there; b"" at the end of the stream."""
        if n == 0:
            return b""
        await self._wait_readable()
        size = len(self._inbound) if n < 0 else min(n, len(self._inbound))
        data = bytes(self._inbound[:size])
        del self._inbound[:size]
        if data:
            await self._consumed(size)
        return data

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while True:
            index = self._inbound.find(separator)
            if index >= 0:
                end = index + len(separator)
                if end > self.limit:
                    raise asyncio.LimitOverrunError("separator is found, but chunk is longer than limit", end)
                data = bytes(self._inbound[:end])
                del self._inbound[:end]
                await self._consumed(end)
                return data
            if len(self._inbound) > self.limit:
                raise asyncio.LimitOverrunError("separator is not found, and chunk exceed the limit", 0)
            if self._inbound_eof:
                partial = bytes(self._inbound)
                self._inbound.clear()
                raise asyncio.IncompleteReadError(partial, None)
            self._readable.clear()
            await self._readable.wait()

    async def readline(self) -> bytes:
        try:
            return await self.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial

    # -- writing (StreamWriter-like) ----------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed or self._eof_wanted or not data:
            return
        self._outbound += data
        self._start_flusher()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self.closed or self._eof_wanted:
            return
        self._eof_wanted = True
        self._start_flusher()

    async def drain(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self.closed:
            raise ConnectionResetError(f"tunnel stream closed: {self.close_reason}")

    def is_closing(self) -> bool:
        return self.closed

    def close(self, reason: str = "closed") -> None:
        """Abort: drop what is not sent yet and tell the other side the stream is gone."""
        if self.closed:
            return
        self._inbound.clear()
        self.mark_closed(reason)
        self.tunnel.send_soon(TUNNEL_CLOSE, self.id, reason.encode()[:200])

    async def wait_closed(self) -> None:
        if not self.closed:
            if self._closed_event is None:
                self._closed_event = asyncio.Event()
            await self._closed_event.wait()

    def get_extra_info(self, name: str, default=None):
        return default

    def _start_flusher(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        while not self.closed:
            if self._outbound:
                if self._credit <= 0:
                    self._has_credit.clear()
                    await self._has_credit.wait()
                    continue
                size = min(len(self._outbound), self._credit, TUNNEL_MAX_PAYLOAD)
                chunk = bytes(self._outbound[:size])
                del self._outbound[:size]
                self._credit -= size
                if not await self.tunnel.send(TUNNEL_DATA, self.id, chunk):
                    self.mark_closed("the tunnel closed")
            elif self._eof_wanted and not self._eof_sent:
                self._eof_sent = True
                await self.tunnel.send(TUNNEL_EOF, self.id)
            else:
                return

    # -- the edge agent's side ----------------------------------------------------------------------------------
    async def accept(self) -> None:
        """Tell the opener the stream is connected (the agent calls this once its engine answered)."""
        await self.tunnel.send(TUNNEL_OPEN, self.id)


class Tunnel:
    """Streams multiplexed over one WebSocket. The server opens streams with `open_stream`; the edge agent
    hands each stream it is asked to open to `serve_stream`. `run()` reads frames until the WebSocket ends."""

    def __init__(self, ws, serve_stream: Callable[[TunnelStream], Awaitable[None]] | None = None):
        self.ws = ws
        self.streams: dict[int, TunnelStream] = {}
        self.closed = False
        self._serve_stream = serve_stream
        self._next_id = 1
        self._opening: dict[int, asyncio.Future] = {}

    async def send(self, kind: int, stream_id: int, payload: bytes = b"") -> bool:
        """Send one frame; False when the tunnel is gone."""
        if self.closed or self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(TUNNEL_FRAME_HEADER.pack(kind, stream_id) + payload)
            return True
        except (ConnectionError, RuntimeError):
            return False

    def send_soon(self, kind: int, stream_id: int, payload: bytes = b"") -> None:
        if not self.closed:
            task = asyncio.ensure_future(self.send(kind, stream_id, payload))
            _BACKGROUND_TASKS.add(task)
            task.add_done_callback(_BACKGROUND_TASKS.discard)

    def forget(self, stream: TunnelStream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    async def open_stream(self, target: str = "docker", timeout: float = TUNNEL_OPEN_TIMEOUT) -> TunnelStream:
        """A new stream to the far side's `target`, once the far side says it is connected."""
        if self.closed:
            raise ConnectionResetError("the tunnel is closed")
        if len(self.streams) >= TUNNEL_MAX_STREAMS:
            raise ConnectionResetError(f"the tunnel already carries {TUNNEL_MAX_STREAMS} streams")
        stream_id = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        stream = TunnelStream(self, stream_id)
        self.streams[stream_id] = stream
        opened = asyncio.get_running_loop().create_future()
        self._opening[stream_id] = opened
        try:
            if not await self.send(TUNNEL_OPEN, stream_id, target.encode()):
                raise ConnectionResetError("the tunnel is closed")
            await asyncio.wait_for(opened, timeout)
        except BaseException:
            stream.close("not opened")
            raise
        finally:
            self._opening.pop(stream_id, None)
        return stream

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.ERROR:
                    edge_log.warning("tunnel closed on error: %s", message.data)
                    break
                if message.type != aiohttp.WSMsgType.BINARY or len(message.data) < TUNNEL_FRAME_HEADER.size:
                    edge_log.warning("tunnel protocol error: unexpected %s message; closing", message.type)
                    break
                kind, stream_id = TUNNEL_FRAME_HEADER.unpack_from(message.data)
                self._dispatch(kind, stream_id, message.data[TUNNEL_FRAME_HEADER.size:])
        except asyncio.TimeoutError:
            edge_log.warning("tunnel silent for too long (no data, no pong): the link is dead")
        finally:
            self.closed = True
            for stream in list(self.streams.values()):
                stream.mark_closed("the tunnel closed")
            for opened in self._opening.values():
                if not opened.done():
                    opened.set_exception(ConnectionResetError("the tunnel closed"))
            # on a dead link the closing handshake cannot finish; do not wait for it long
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.ws.close(), TUNNEL_CLOSE_TIMEOUT)

    def _dispatch(self, kind: int, stream_id: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if kind == TUNNEL_DATA:
            if stream is not None:
                stream.received_data(payload)
        elif kind == TUNNEL_WINDOW:
            if stream is not None and len(payload) == 4:
                stream.received_window(int.from_bytes(payload, "big"))
        elif kind == TUNNEL_EOF:
            if stream is not None:
                stream.received_eof()
        elif kind == TUNNEL_CLOSE:
            opened = self._opening.get(stream_id)
            reason = payload.decode(errors="replace") or "closed by the other side"
            if opened is not None and not opened.done():
                opened.set_exception(ConnectionResetError(reason))
            if stream is not None:
                stream.mark_closed(reason)
        elif kind == TUNNEL_OPEN:
            opened = self._opening.get(stream_id)
            if opened is not None:
                if not opened.done():
                    opened.set_result(None)
            elif self._serve_stream is not None and stream is None:
                if len(self.streams) >= TUNNEL_MAX_STREAMS:
                    self.send_soon(TUNNEL_CLOSE, stream_id, b"too many streams")
                    return
                stream = self.streams[stream_id] = TunnelStream(self, stream_id)
                task = asyncio.ensure_future(self._serve_stream(stream))
                _BACKGROUND_TASKS.add(task)
                task.add_done_callback(_BACKGROUND_TASKS.discard)


@dataclasses.dataclass
class EdgeKey:
    """What an edge agent needs to find and trust its server, and to be trusted by it."""

    server_url: str
    endpoint_id: int
    fingerprint: str  # SHA-256 of the server's TLS certificate (DER), hex
    secret: str

    def encode(self) -> str:
        text = "|".join((self.server_url, str(self.endpoint_id), self.fingerprint, self.secret))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, key: str) -> "EdgeKey":
        try:
            text = base64.urlsafe_b64decode(key.strip() + "=" * (-len(key.strip()) % 4)).decode()
            server_url, endpoint_id, fingerprint, secret = text.split("|")
            bytes.fromhex(fingerprint)
            return cls(server_url, int(endpoint_id), fingerprint.lower(), secret)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError("invalid edge key: copy it again from the server's environment page") from exc


# ----------------------------------------------------------------------------------------------------------------
# Edge mode: dial out to the server, keep the tunnel up, serve its streams from the local Docker engine
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class EdgeSettings:
    key: EdgeKey
    edge_id: str
    docker_url: str = "unix:///var/run/docker.sock"
    heartbeat: float = 20.0  # with the pong wait of heartbeat/2, a dead link is seen within 30 s
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    connect_timeout: float = 10.0

    @classmethod
    def from_environment(cls, env=os.environ) -> "EdgeSettings":
        """EDGE_KEY, EDGE_ID, DOCKER_HOST, EDGE_HEARTBEAT, EDGE_BACKOFF_INITIAL, EDGE_BACKOFF_MAX."""
        if not env.get("EDGE_KEY") or not env.get("EDGE_ID"):
            raise ValueError("edge mode needs EDGE_KEY (from the server) and EDGE_ID (e.g. $(cat /etc/machine-id))")
        return cls(EdgeKey.decode(env["EDGE_KEY"]), env["EDGE_ID"].strip(),
                   env.get("DOCKER_HOST") or cls.docker_url,
                   float(env.get("EDGE_HEARTBEAT", cls.heartbeat)),
                   float(env.get("EDGE_BACKOFF_INITIAL", cls.backoff_initial)),
                   float(env.get("EDGE_BACKOFF_MAX", cls.backoff_max)))


def reconnect_delay(attempt: int, initial: float, cap: float) -> float:
    """Capped exponential backoff with full jitter, so a fleet cut off at once does not return at once."""
    return random.uniform(initial / 2, min(cap, initial * 2 ** min(attempt, 30)))


async def _pipe_stream_to_engine(stream: TunnelStream, writer: asyncio.StreamWriter) -> None:
    while data := await stream.read(STREAM_CHUNK):
        writer.write(data)
        await writer.drain()
    if not stream.closed and writer.can_write_eof():
        writer.write_eof()


async def _pipe_engine_to_stream(reader: asyncio.StreamReader, stream: TunnelStream) -> None:
    while data := await reader.read(STREAM_CHUNK):
        stream.write(data)
        await stream.drain()
    stream.write_eof()
    await stream.drain()


async def serve_edge_stream(stream: TunnelStream, docker_url: str) -> None:
    """Connect one tunnel stream to the local engine and pipe raw bytes both ways until both ends are done."""
    try:
        reader, writer = await open_docker_stream(docker_url)
    except DockerUnreachable as exc:
        stream.close(str(exc))
        return
    await stream.accept()
    upstream = asyncio.ensure_future(_pipe_stream_to_engine(stream, writer))
    downstream = asyncio.ensure_future(_pipe_engine_to_stream(reader, stream))
    closed = asyncio.ensure_future(stream.wait_closed())
    try:
        # Done when the engine has said everything, or when the server closed the stream (a pooled keep-alive
        # connection it let go): the engine would keep that socket open for ever.
        await asyncio.wait([downstream, closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream, closed):
            task.cancel()
        await asyncio.gather(upstream, downstream, closed, return_exceptions=True)
        writer.close()
        stream.close("done")


async def run_edge_agent(settings: EdgeSettings) -> None:
    """Keep one tunnel to the server up for ever, pinned to the certificate named in the edge key."""
    url = settings.key.server_url.rstrip("/") + EDGE_TUNNEL_PATH
    headers = {EDGE_ENDPOINT_HEADER: str(settings.key.endpoint_id), EDGE_SECRET_HEADER: settings.key.secret,
               EDGE_ID_HEADER: settings.edge_id}
    pin = aiohttp.Fingerprint(bytes.fromhex(settings.key.fingerprint))
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                    sock_connect=settings.connect_timeout)
    attempt = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                async with session.ws_connect(url, headers=headers, ssl=pin, heartbeat=settings.heartbeat,
                                              receive_timeout=tunnel_receive_timeout(settings.heartbeat),
                                              max_msg_size=TUNNEL_MAX_MESSAGE, compress=0,
                                              **CLIENT_WS_CLOSE_TIMEOUT) as ws:
                    edge_log.info("edge tunnel to %s is up (environment %s)", settings.key.server_url,
                                  settings.key.endpoint_id)
                    attempt = 0
                    await Tunnel(ws, lambda stream: serve_edge_stream(stream, settings.docker_url)).run()
                    edge_log.warning("edge tunnel closed (code %s); reconnecting", ws.close_code)
            except aiohttp.ServerFingerprintMismatch:
                edge_log.error("refusing the server at %s: its TLS certificate does not match the edge key",
                               settings.key.server_url)
            except aiohttp.WSServerHandshakeError as exc:
                edge_log.error("the server refused this edge agent (%s %s)", exc.status, exc.message)
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                edge_log.warning("cannot reach the server at %s: %s", settings.key.server_url,
                                 exc or type(exc).__name__)
            delay = reconnect_delay(attempt, settings.backoff_initial, settings.backoff_max)
            attempt += 1
            await asyncio.sleep(delay)


# How long closing a client WebSocket may wait for the server's answer (aiohttp 3.8 takes a float, 3.9+ an object).
CLIENT_WS_CLOSE_TIMEOUT = ({"timeout": aiohttp.ClientWSTimeout(ws_close=TUNNEL_CLOSE_TIMEOUT)}
                           if hasattr(aiohttp, "ClientWSTimeout") else {"timeout": TUNNEL_CLOSE_TIMEOUT})


def edge_main() -> int:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = EdgeSettings.from_environment()
    except ValueError as exc:
        print(f"agent.py: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_edge_agent(settings))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def main() -> int:
    if str(os.environ.get("EDGE", "")).lower() in ("1", "true", "yes", "on"):
        return edge_main()
    print("agent.py: set EDGE=1 EDGE_KEY=... EDGE_ID=... to run as an edge agent", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
