#!/usr/bin/env python3
"""portainer.py agent: serves one node's Docker engine to a portainer.py server.

This file also holds the protocol code the server and the agent share, so that no protocol exists twice:
the HTTP/1.1 client that speaks to a Docker API over any byte stream (unix socket, TCP, TLS, tunnel
stream) and the relay that streams a request from an aiohttp server to that API and back, upgrades
(`docker exec -it`, `docker attach`) included. `portainer.py` imports it.

Sections, in the order a request flows:
    constants -> Docker HTTP client -> relay (aiohttp request -> Docker API -> aiohttp response)
"""
from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.parse
from typing import AsyncIterator, Awaitable, Callable, Iterable

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
