#!/usr/bin/env python3
"""portainer.py agent: serves one node's Docker engine to a portainer.py server.

This file also holds the protocol code the server and the agent share, so that no protocol exists twice:
the HTTP/1.1 client that speaks to a Docker API over any byte stream (unix socket, TCP, TLS, tunnel
stream) and the relay that streams a request from an aiohttp server to that API and back, upgrades
(`docker exec -it`, `docker attach`) included. `portainer.py` imports it.

It also holds the request signatures both sides speak (the server signs, the agent verifies) and the
self-signed certificate maker both use.

Sections, in the order a request flows:
    constants -> Docker HTTP client -> relay (aiohttp request -> Docker API -> aiohttp response) ->
    files and certificates -> request signatures -> agent: config, cluster, volume browser, routes ->
    tunnel protocol (streams over one WebSocket, used by the server and the edge agent) -> edge mode -> main
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as the module, not as a script: Python keeps a script's syntax tree until the script ends, and this
    # file's tree would hold about 15 MB for as long as the agent runs.
    # The file is loaded by its path, whatever its name (an edge agent's rollback runs agent.py.previous).
    import subprocess
    run_file_as_module = (
        "import importlib.machinery, importlib.util, os, sys; path = sys.argv.pop(1); "
        "sys.path.insert(0, os.path.dirname(path)); loader = importlib.machinery.SourceFileLoader('agent', path); "
        "module = importlib.util.module_from_spec(importlib.util.spec_from_loader('agent', loader)); "
        "sys.modules['agent'] = module; loader.exec_module(module); sys.exit(module.main())")
    os.execv(sys.executable, [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", run_file_as_module,
                              os.path.abspath(__file__), *sys.argv[1:]])

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import inspect
import ipaddress
import json
import logging
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import struct
import subprocess
import tempfile
import time
import urllib.parse
import uuid
import zipfile
import zlib
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger("portainer.agent")

# ----------------------------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------------------------

AGENT_VERSION = "2.19.4"
AGENT_API_VERSION = "2"
STREAM_CHUNK = 64 * 1024
MAX_RESPONSE_HEAD = 64 * 1024
# What a Docker connection's reader buffers before it stops reading the socket (at twice this). Larger than one
# 256 KB socket read, so a fast stream is not paused and resumed (two epoll changes) after every read.
DOCKER_READ_BUFFER = 512 * 1024
# A relayed body is handed on in pieces of up to this many bytes: the engine sends 32 KB chunks, and each piece
# costs a write, a TLS record batch and a send on every hop after it.
RELAY_PIECE = 256 * 1024
# Headers that describe one hop of a connection, never forwarded (RFC 9110 section 7.6.1).
HOP_BY_HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer",
        "Transfer-Encoding", "Upgrade", "Host", "Content-Length",
    )
)


# Headers between a client and the first server only: aiohttp answers `Expect: 100-continue` itself, and an
# engine's interim 100 must never be taken for the answer to a pooled connection's request.
CLIENT_ONLY_REQUEST_HEADERS = frozenset({"expect"})
# How many interim (1xx) answers may come before the answer itself.
MAX_INTERIM_ANSWERS = 16


class DockerUnreachable(Exception):
    """The Docker API could not be reached or answered with something that is not HTTP."""


# ----------------------------------------------------------------------------------------------------------------
# Docker HTTP client: HTTP/1.1 over any asyncio byte stream, with streamed bodies and upgrades
# ----------------------------------------------------------------------------------------------------------------


async def connect_docker(url: str, protocol_factory: Callable[[], asyncio.BaseProtocol],
                         ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0):
    """(transport, protocol) of a new connection to a Docker API given as unix:///path, tcp://host:port or
    https://host:port."""
    parsed = urllib.parse.urlsplit(url)
    loop = asyncio.get_running_loop()
    try:
        if parsed.scheme in ("unix", "npipe"):
            coro = loop.create_unix_connection(protocol_factory, parsed.path or "/var/run/docker.sock")
        elif parsed.scheme in ("tcp", "http", "https"):
            use_tls = ssl_context if (ssl_context is not None or parsed.scheme == "https") else None
            if parsed.scheme == "https" and use_tls is None:
                use_tls = ssl.create_default_context()
            port = parsed.port or (2376 if use_tls else 2375)
            coro = _connect_tcp(protocol_factory, parsed.hostname or "", port, use_tls)
        else:
            raise DockerUnreachable(f"unsupported Docker endpoint scheme {parsed.scheme!r} in {url!r}")
        return await asyncio.wait_for(coro, timeout)
    except (OSError, ValueError, asyncio.TimeoutError, ssl.SSLError) as exc:  # ValueError: a bad port or host name
        raise DockerUnreachable(f"cannot connect to {url}: {exc or type(exc).__name__}") from exc


async def _connect_tcp(protocol_factory: Callable[[], asyncio.BaseProtocol], host: str, port: int,
                       tls: ssl.SSLContext | None):
    """loop.create_connection, with the name resolved first and each address tried in turn: uvloop's
    create_connection, cancelled (a timeout) while it resolves a name, leaves a future whose error is logged as
    "Future exception was never retrieved" (uvloop issue 437); its getaddrinfo alone does not."""
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not addresses:
        raise OSError(f"{host} has no address")
    failure: OSError | None = None
    for family, _, _, _, address in addresses:
        try:
            return await loop.create_connection(protocol_factory, address[0], address[1], family=family, ssl=tls,
                                                server_hostname=host if tls is not None else None)
        except OSError as exc:
            failure = exc
    raise failure


async def open_docker_stream(url: str, ssl_context: ssl.SSLContext | None = None, timeout: float = 10.0):
    """(StreamReader, StreamWriter) of a new connection to a Docker API (see connect_docker)."""
    reader = asyncio.StreamReader(limit=DOCKER_READ_BUFFER)
    transport, protocol = await connect_docker(url, lambda: asyncio.StreamReaderProtocol(reader), ssl_context,
                                               timeout)
    return reader, asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())


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
        """The head of the final answer: interim 1xx answers (100 Continue, 102, 103) are read and skipped, so
        the answer handed on is the one to the request; 101 is final (the connection is now the upgrade's)."""
        for _ in range(MAX_INTERIM_ANSWERS):
            status, reason, headers = await self._read_one_head()
            if not (100 <= status < 200) or status == 101:
                return status, reason, headers
        raise DockerUnreachable(f"the Docker API sent more than {MAX_INTERIM_ANSWERS} interim answers")

    async def _read_one_head(self) -> tuple[int, str, CIMultiDict]:
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise DockerUnreachable("the Docker API closed the connection before answering") from exc
        except asyncio.LimitOverrunError as exc:
            raise DockerUnreachable("the Docker API sent an oversized response head") from exc
        if len(raw) > MAX_RESPONSE_HEAD:
            raise DockerUnreachable("the Docker API sent an oversized response head")
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


def buffered_bytes(reader) -> int:
    """How many received bytes a reader (asyncio's StreamReader or a TunnelStream) holds, read without waiting."""
    return len(reader._buffer) if isinstance(reader, asyncio.StreamReader) else reader.buffered


class DockerResponse:
    """A Docker API response whose body is read as a stream. Release it (or use `async with`) when done."""

    def __init__(self, connection: HttpConnection, method: str, status: int, reason: str, headers: CIMultiDict,
                 on_release: Callable[[HttpConnection, bool], None], request_sent: bool = True):
        self.connection = connection
        # Whether the whole request body reached the engine: a connection with part of a request still owed,
        # or an unread answer, is closed on release, never handed to the next caller.
        self.request_sent = request_sent
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
        interim = 100 <= status < 200
        no_body = method == "HEAD" or status in (204, 304) or interim
        if no_body or self._remaining == 0:
            self._finished = True
        self._keep_alive = not interim and "close" not in headers.get("Connection", "").lower() and (
            self._chunked or self._remaining is not None or no_body)

    async def __aenter__(self) -> "DockerResponse":
        return self

    async def __aexit__(self, *exc) -> None:
        self.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives, decoded from chunked transfer encoding when the engine used it. Chunks
        already received are handed on together (up to RELAY_PIECE); nothing waits for bytes not yet sent."""
        reader = self.connection.reader
        pieces: list[bytes] = []
        held = 0
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
                    if pieces:
                        yield b"".join(pieces)
                    return
                while size > 0:
                    data = await reader.read(min(size, RELAY_PIECE))
                    if not data:
                        raise DockerUnreachable("the Docker API closed a chunked body early")
                    size -= len(data)
                    pieces.append(data)
                    held += len(data)
                    if held >= RELAY_PIECE or (size > 0 and not buffered_bytes(reader)):
                        yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                        pieces, held = [], 0
                if pieces and buffered_bytes(reader) < 2 + 16:  # the next chunk is not here yet: hand on what is held
                    yield b"".join(pieces) if len(pieces) > 1 else pieces[0]
                    pieces, held = [], 0
                await reader.readline()
            elif self._remaining is not None:
                data = await reader.read(min(self._remaining, RELAY_PIECE))
                if not data:
                    raise DockerUnreachable("the Docker API closed the body early")
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._finished = True
                yield data
            else:
                data = await reader.read(RELAY_PIECE)
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
        reusable = (self.request_sent and self._finished and self._keep_alive and not self.upgraded
                    and not self.connection.is_closing)
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
        # The body is sent at once, never after an interim 100 Continue: a caller's Expect is not passed on.
        header_list = [("Host", "docker")] + [(name, value) for name, value in headers
                                              if name.lower() not in CLIENT_ONLY_REQUEST_HEADERS]
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
        request_sent = True
        if status == 101:
            pass  # the upgrade's body (if any) keeps flowing; the connection is never pooled again
        elif not sender.done():
            # The engine may answer before the whole body is sent (an early error): let it finish. A body that
            # could not be sent in full leaves the connection mid-request, so it is closed after this answer.
            try:
                await sender
            except (ConnectionError, DockerUnreachable):
                request_sent = False
        else:
            sender.result()
        return DockerResponse(connection, method, status, reason, headers, self._release, request_sent)


# ----------------------------------------------------------------------------------------------------------------
# Relay: stream an aiohttp request to a Docker API and its answer back, upgrades included
# ----------------------------------------------------------------------------------------------------------------

# Credentials meant for the server or the agent itself; never passed on to an engine.
PRIVATE_REQUEST_HEADERS = frozenset(
    h.lower() for h in ("Authorization", "X-API-Key", "Cookie", "X-CSRF-Token", "X-PortainerAgent-Signature",
                        "X-PortainerAgent-PublicKey", "X-PortainerAgent-Timestamp", "X-PortainerAgent-Nonce",
                        "X-PortainerAgent-SecretProof", "X-PortainerAgent-Forwarded",
                        "X-Registry-Auth-Portainer")
)


# The Content-Encodings aiohttp's server decodes before a handler reads the body (its parser's own test).
SERVER_DECODED_ENCODINGS = frozenset({"gzip", "deflate", "br", "zstd"})


def body_decoded_by_server(request: web.Request) -> bool:
    """aiohttp hands a handler a gzip (deflate, br, zstd) body already decompressed: what is relayed is then
    plain bytes of a length nobody knows yet, and must not be announced as compressed."""
    encoding = request.headers.get("Content-Encoding", "")
    return encoding.isascii() and encoding.lower() in SERVER_DECODED_ENCODINGS


def forwardable_request_headers(request: web.Request) -> list[tuple[str, str]]:
    decoded = body_decoded_by_server(request)
    headers = [(k, v) for k, v in request.headers.items()
               if k.lower() not in HOP_BY_HOP_HEADERS and k.lower() not in PRIVATE_REQUEST_HEADERS
               and k.lower() not in CLIENT_ONLY_REQUEST_HEADERS
               and not (decoded and k.lower() == "content-encoding")]
    if is_upgrade_request(request):
        headers += [("Connection", "Upgrade"), ("Upgrade", request.headers.get("Upgrade", "tcp"))]
    return headers


def is_upgrade_request(request: web.Request) -> bool:
    return "upgrade" in request.headers.get("Connection", "").lower() and bool(request.headers.get("Upgrade"))


async def request_body_stream(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        yield chunk


async def upgrade_body_from_tail(request: web.Request, length: int) -> AsyncIterator[bytes]:
    """aiohttp 3.8 switches protocols right after the head of an Upgrade request (`docker exec -it` sends a JSON
    body with it): the body then lands in the protocol's tail, never in `request.content`."""
    protocol, received = request.protocol, 0
    deadline = asyncio.get_running_loop().time() + 30
    while received < length:
        tail = protocol._message_tail
        if tail:
            part = tail[:length - received]
            protocol._message_tail = tail[len(part):]
            received += len(part)
            yield part
        elif asyncio.get_running_loop().time() > deadline:
            raise ConnectionResetError("the client did not send the body of its upgrade request")
        else:
            await asyncio.sleep(0.005)


def request_body_for_relay(request: web.Request) -> tuple[AsyncIterator[bytes] | None, int | None]:
    """The incoming body as a stream plus its length when known (None, None when there is no body)."""
    if request.content_length is not None:
        if request.content_length == 0:
            return None, None
        if body_decoded_by_server(request) and not is_upgrade_request(request):
            return request_body_stream(request), None  # decompressed: longer than its Content-Length
        if is_upgrade_request(request) and getattr(request.protocol, "_upgrade", False) is True:
            return upgrade_body_from_tail(request, request.content_length), request.content_length
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
    except ConnectionResetError as exc:
        if not client_went_away(request, exc):
            raise
        return out
    finally:
        response.release()


def client_went_away(request: web.Request, failure: ConnectionResetError) -> bool:
    """Whether `failure`, a write to the client that failed, is the client having closed its connection (`docker
    logs -f` interrupted): then the answer ends there, logged at debug level, not as an error worth a traceback."""
    transport = request.transport
    if transport is not None and not transport.is_closing():
        return False
    log.debug("%s %s: the client went away during the answer (%s)", request.method, request.rel_url.path, failure)
    return True


class FlowControlledWrites:
    """The writing half of a protocol that relays raw bytes onto its transport: `write` waits while the transport's
    buffer is over its high-water mark (pause_writing) and returns at once when the connection is lost."""

    transport: asyncio.Transport

    def __init__(self):
        self._writable = asyncio.Event()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._writable.set()

    async def write(self, data: bytes) -> None:
        self.transport.write(data)
        await self._writable.wait()


class _UpgradedClient(FlowControlledWrites, asyncio.Protocol):
    """Takes over the client's transport after a 101: raw bytes both ways, half-close kept open, flow control."""

    def __init__(self, transport: asyncio.Transport):
        super().__init__()
        self.transport = transport
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._queued = 0
        self._reading_paused = False
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
        super().connection_lost(exc)

    async def read(self) -> bytes:
        data = await self.queue.get()
        self._queued -= len(data)
        if self._reading_paused and self._queued <= STREAM_CHUNK and not self.lost.is_set():
            self._reading_paused = False
            self.transport.resume_reading()
        return data


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
# Files and certificates: private files written atomically, a self-signed certificate for HTTPS
# ----------------------------------------------------------------------------------------------------------------


def write_private_file(path: str, data: bytes) -> None:
    """Write a secret (key, certificate key) readable by the owner only, atomically."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def new_certificate(subject, extensions: list, days: int, issuer: tuple[bytes, bytes] | None = None,
                    backdate: datetime.timedelta = datetime.timedelta(days=1)) -> tuple[bytes, bytes]:
    """A new ECDSA P-256 key and a certificate for it, both PEM: self-signed, or signed by `issuer` (its certificate
    and key, PEM). `subject` is an x509.Name; `extensions` are (extension, critical) pairs. Valid `days` from
    `backdate` ago (clocks of the hosts that check it may run behind)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signing_key = subject, key
    if issuer is not None:
        issuer_name = x509.load_pem_x509_certificate(issuer[0]).subject
        signing_key = serialization.load_pem_private_key(issuer[1], password=None)
    valid_from = datetime.datetime.now(datetime.timezone.utc) - backdate
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(valid_from)
               .not_valid_after(valid_from + datetime.timedelta(days=days)))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(signing_key, hashes.SHA256())
    return (certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


def create_self_signed_certificate(cert_path: str, key_path: str, common_name: str) -> None:
    """An ECDSA P-256 certificate for this host's name, localhost and 127.0.0.1, valid ten years."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "portainer.py self-signed")])
    alt_names = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
                 x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate, key = new_certificate(name, [(x509.SubjectAlternativeName(alt_names), False)], days=3650)
    write_private_file(key_path, key)
    write_private_file(cert_path, certificate)


def der_fingerprint(der: bytes) -> str:
    """How a certificate is pinned: SHA-256 of its DER form, hex."""
    return hashlib.sha256(der).hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# Project files: a stack's compose project (its compose files and the files beside them), unpacked safely; the
# server unpacks uploaded archives with this, and agents unpack the projects the server sends them
# ----------------------------------------------------------------------------------------------------------------

PROJECT_ARCHIVE_MAX_BYTES = 64 * 1024 * 1024  # the archive as sent
PROJECT_MAX_BYTES = 256 * 1024 * 1024  # every file unpacked, together
PROJECT_MAX_FILES = 10_000
PROJECTS_PATH = "/projects/{name}"
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")


class ArchiveRefused(ValueError):
    """A project archive that would write outside its directory, hold what a project cannot, or too much."""


def archive_kind(head: bytes) -> str | None:
    """"gzip", "zip" or "tar" from a file's first 512 bytes; None for anything else (a plain compose file)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def project_member_path(name: str) -> str:
    """A member's path inside the project, refused when absolute, climbing out with '..', or not plain text."""
    if "\x00" in name or "\\" in name:
        raise ArchiveRefused(f"{name!r}: a path may not hold NUL or backslashes")
    if name.startswith("/") or re.match(r"^[a-zA-Z]:", name):
        raise ArchiveRefused(f"{name!r}: absolute paths are not allowed in a project archive")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ArchiveRefused(f"{name!r}: '..' is not allowed in a project archive")
    return "/".join(parts)


class ProjectUnpacker:
    """Writes one archive's members under `root` (a new, empty directory), checking each against the caps and
    the directory's bounds: every parent is resolved before a write, files are opened without following links."""

    def __init__(self, root: str, max_bytes: int = PROJECT_MAX_BYTES, max_files: int = PROJECT_MAX_FILES):
        self.root = os.path.realpath(root)
        self.max_bytes, self.max_files = max_bytes, max_files
        self.written = 0
        self.members = 0
        self.files: set[str] = set()

    def inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + os.sep)

    def target(self, relative: str) -> str:
        self.members += 1
        if self.members > self.max_files:
            raise ArchiveRefused(f"the archive holds more than {self.max_files} entries")
        path = os.path.join(self.root, *relative.split("/"))
        parent = os.path.realpath(os.path.dirname(path))
        if not self.inside(parent):
            raise ArchiveRefused(f"{relative!r} would be written through a link that leaves the project")
        os.makedirs(parent, exist_ok=True)
        return os.path.join(parent, os.path.basename(path))

    def directory(self, relative: str) -> None:
        if not relative:
            return
        path = self.target(relative)
        if os.path.islink(path):
            raise ArchiveRefused(f"{relative!r} is a link and a directory")
        os.makedirs(path, exist_ok=True)

    def file(self, relative: str, source, mode: int = 0o644) -> None:
        if not relative:
            raise ArchiveRefused("an archive entry has no name")
        path = self.target(relative)
        with contextlib.suppress(FileNotFoundError):
            if os.path.islink(path) or os.path.isdir(path):
                raise ArchiveRefused(f"{relative!r} is in the archive twice")
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            while chunk := source.read(STREAM_CHUNK):
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise ArchiveRefused(f"the archive unpacks to more than {self.max_bytes // (1024 * 1024)} MiB")
                f.write(chunk)
        os.chmod(path, 0o755 if mode & 0o111 else 0o644)  # no set-id bits, no private modes the engine can't read
        self.files.add(relative)

    def symlink(self, relative: str, link_target: str) -> None:
        if not link_target or link_target.startswith("/") or "\x00" in link_target:
            raise ArchiveRefused(f"{relative!r} links to {link_target!r}, outside the project")
        resolved = os.path.normpath(os.path.join(os.path.dirname(relative), link_target))
        if resolved == ".." or resolved.startswith("../"):
            raise ArchiveRefused(f"{relative!r} links to {link_target!r}, outside the project")
        os.symlink(link_target, self.target(relative))

    def hardlink(self, relative: str, link_target: str) -> None:
        """A hard link becomes a copy of the project file it names: never a link to a file elsewhere."""
        source = project_member_path(link_target)
        if source not in self.files:
            raise ArchiveRefused(f"{relative!r} is a hard link to {link_target!r}, which is not a file of the project")
        with open(os.path.join(self.root, *source.split("/")), "rb") as f:
            self.file(relative, f)

    def finish(self) -> None:
        """Every link, followed to its end once all are written, must still land inside the project."""
        for directory, names, files in os.walk(self.root):
            for name in names + files:
                path = os.path.join(directory, name)
                if os.path.islink(path) and not self.inside(os.path.realpath(path)):
                    raise ArchiveRefused(f"{os.path.relpath(path, self.root)!r} links outside the project")


def unpack_project_archive(source, destination: str, max_bytes: int = PROJECT_MAX_BYTES,
                           max_files: int = PROJECT_MAX_FILES) -> None:
    """Unpack a .tar, .tar.gz or .zip (a seekable binary file) into `destination`, a new empty directory. Refuses
    (ArchiveRefused) absolute paths, '..', links leaving it, devices and other special files, and more than the
    caps; the caller removes `destination` then."""
    import tarfile  # only where projects are unpacked: 0.4 MB an agent at rest does without

    source.seek(0)
    kind = archive_kind(source.read(512))
    source.seek(0)
    unpacker = ProjectUnpacker(destination, max_bytes, max_files)
    try:
        if kind == "zip":
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    relative = project_member_path(info.filename)
                    mode = info.external_attr >> 16
                    if info.is_dir():
                        unpacker.directory(relative)
                    elif stat.S_ISLNK(mode):
                        with archive.open(info) as f:
                            unpacker.symlink(relative, f.read(4096).decode("utf-8", "replace"))
                    elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # many zip tools store no file type
                        raise ArchiveRefused(f"{info.filename!r} is not a file, a directory or a link")
                    else:
                        with archive.open(info) as f:
                            unpacker.file(relative, f, mode)
        elif kind in ("tar", "gzip"):
            with tarfile.open(fileobj=source, mode="r:*") as archive:
                for member in archive:
                    relative = project_member_path(member.name)
                    if member.isdir():
                        unpacker.directory(relative)
                    elif member.issym():
                        unpacker.symlink(relative, member.linkname)
                    elif member.islnk():
                        unpacker.hardlink(relative, member.linkname)
                    elif member.isreg():
                        unpacker.file(relative, archive.extractfile(member), member.mode)
                    else:
                        raise ArchiveRefused(f"{member.name!r} is a device, a pipe or another special file")
        else:
            raise ArchiveRefused("not a .tar, .tar.gz or .zip archive")
        unpacker.finish()
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, UnicodeError) as exc:
        raise ArchiveRefused(f"the archive cannot be read: {exc}") from None


def pack_project(directory: str, target) -> None:
    """The project directory as a tar (files, directories and links as they are) into the binary file `target`."""
    import tarfile

    with tarfile.open(fileobj=target, mode="w") as archive:
        for name in sorted(os.listdir(directory)):
            if name != PROJECT_MANIFEST:
                archive.add(os.path.join(directory, name), arcname=name, recursive=True)


PROJECT_MANIFEST = ".portainer-files"  # at a project's top on an agent's host: the files the server sent last


def sync_project(incoming: str, final: str) -> None:
    """Bring the project directory `final` to the files of `incoming`, in place: a file that stays keeps its inode
    (a running container's bind of it sees the new content) and a directory stays the same directory (binds of
    ./data keep working); files the server sent last time and no longer sends go; files made there since (a
    container's data) stay. Never writes through a link: a container may have planted one."""
    os.makedirs(final, mode=0o700, exist_ok=True)
    root = os.path.realpath(final)

    def target(relative: str) -> str:
        path = os.path.join(final, *relative.split("/"))
        parent = os.path.realpath(os.path.dirname(path))
        if parent != root and not parent.startswith(root + os.sep):
            raise ArchiveRefused(f"{relative!r} would be written through a link that leaves the project")
        return path

    sent: list[str] = []
    for directory, names, files in os.walk(incoming):
        for name in sorted(names) + sorted(files):
            source = os.path.join(directory, name)
            relative = os.path.relpath(source, incoming).replace(os.sep, "/")
            if relative == PROJECT_MANIFEST:
                continue
            path = target(relative)
            if name in names and not os.path.islink(source):
                if os.path.lexists(path) and (os.path.islink(path) or not os.path.isdir(path)):
                    os.unlink(path)
                os.makedirs(path, exist_ok=True)
                continue
            sent.append(relative)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            if os.path.islink(source) or not (os.path.isfile(path) and not os.path.islink(path)):
                if os.path.lexists(path):
                    os.unlink(path)
                os.rename(source, path)
                continue
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW)
            with os.fdopen(fd, "wb") as out, open(source, "rb") as f:
                shutil.copyfileobj(f, out, STREAM_CHUNK)
            os.chmod(path, os.stat(source).st_mode & 0o777)
    manifest = os.path.join(final, PROJECT_MANIFEST)
    with contextlib.suppress(FileNotFoundError):
        for relative in set(project_manifest(final)) - set(sent):
            with contextlib.suppress(ArchiveRefused, ValueError):
                path = target(project_member_path(relative))
                if os.path.islink(path) or os.path.isfile(path):
                    os.unlink(path)
    write_private_file(manifest, "\n".join(sent).encode())


def project_manifest(final: str) -> list[str]:
    """The files last synchronised into a project directory (FileNotFoundError when it never was)."""
    with open(os.path.join(final, PROJECT_MANIFEST), encoding="utf-8") as f:
        return [line for line in f.read().splitlines() if line]


class ProjectFiles:
    """The projects directory of an agent's host: one directory per compose project, brought to the tar the server
    sends (unpacked and checked beside it, then synchronised in place), so binds and secrets of that project
    resolve on this host."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)

    def path(self, name: str) -> str:
        if not PROJECT_NAME.match(name):
            raise AgentRequestError(400, f"invalid project name {name!r}")
        return os.path.join(self.directory, name)

    async def handle_put(self, request: web.Request) -> web.Response:
        """PUT /projects/{name}: the body is the project as a tar; it replaces whatever the project had."""
        final = self.path(request.match_info["name"])
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        # mkdtemp's 0700 stays: a project holds its secrets; the engine (root) binds from it all the same
        incoming = tempfile.mkdtemp(prefix=".incoming-", dir=self.directory)
        try:
            with tempfile.TemporaryFile(dir=self.directory) as spool:
                size = 0
                while chunk := await request.content.read(STREAM_CHUNK):
                    size += len(chunk)
                    if size > PROJECT_MAX_BYTES:
                        raise AgentRequestError(400, f"a project is at most {PROJECT_MAX_BYTES // (1024 * 1024)} MiB")
                    spool.write(chunk)
                try:
                    await asyncio.to_thread(unpack_project_archive, spool, incoming)
                    await asyncio.to_thread(sync_project, incoming, final)
                except ArchiveRefused as exc:
                    raise AgentRequestError(400, f"project refused: {exc}") from None
        finally:
            if incoming:
                await asyncio.to_thread(shutil.rmtree, incoming, True)
        return web.json_response({"Path": final})

    async def handle_get(self, request: web.Request) -> web.Response:
        """GET /projects/{name}: where the project's files are (or will be) on this host."""
        final = self.path(request.match_info["name"])
        return web.json_response({"Path": final, "Exists": os.path.isdir(final)})

    async def handle_delete(self, request: web.Request) -> web.Response:
        final = self.path(request.match_info["name"])
        if os.path.lexists(final):
            await asyncio.to_thread(shutil.rmtree, final)
        return web.Response(status=204)

    def add_routes(self, app: web.Application, check: Callable[[web.Request], None]) -> None:
        """The three routes, each passing `check` (the agent's signature check) first."""
        for method, handler in (("PUT", self.handle_put), ("GET", self.handle_get), ("DELETE", self.handle_delete)):
            async def checked(request: web.Request, handler=handler) -> web.StreamResponse:
                check(request)
                return await handler(request)
            app.router.add_route(method, PROJECTS_PATH, checked)


def default_projects_directory(data: str) -> str:
    return os.path.join(data, "projects") if data else "/var/lib/portainer-agent/projects"


# ----------------------------------------------------------------------------------------------------------------
# Request signatures: the server signs every request to an agent; the agent checks freshness, replay and pairing
# ----------------------------------------------------------------------------------------------------------------

PUBLIC_KEY_HEADER = "X-PortainerAgent-PublicKey"
SIGNATURE_HEADER = "X-PortainerAgent-Signature"
TIMESTAMP_HEADER = "X-PortainerAgent-Timestamp"
NONCE_HEADER = "X-PortainerAgent-Nonce"
SECRET_PROOF_HEADER = "X-PortainerAgent-SecretProof"
TARGET_HEADER = "X-PortainerAgent-Target"
FORWARDED_HEADER = "X-PortainerAgent-Forwarded"
SIGNED_HEADERS = (PUBLIC_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SECRET_PROOF_HEADER)
# A signed request is accepted this many seconds either side of the agent's clock, and its nonce is kept as long.
SIGNATURE_WINDOW = 30


class AgentAuthError(Exception):
    """A request the agent refuses: unsigned, stale, replayed, badly signed, or from a server it is not paired with."""


def signed_message(method: str, target: str, timestamp: str, nonce: str, public_key: str,
                   target_node: str = "") -> bytes:
    """What is signed: the request line, freshness, the node it is meant for, bound to the signing key."""
    return "\n".join(("portainer.py-agent-v1", method.upper(), target, target_node, timestamp, nonce,
                      public_key)).encode()


def secret_proof(secret: str, message: bytes) -> str:
    return hmac.new(hashlib.sha256(b"portainer.py agent secret\0" + secret.encode()).digest(), message,
                    hashlib.sha256).hexdigest()


def load_or_create_signing_key(path: str):
    """The server's ECDSA P-256 key pair, made once and kept owner-readable only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        key = ec.generate_private_key(ec.SECP256R1())
        write_private_file(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
        return key


class RequestSigner:
    """Signs requests with the server's private key (and proves the agent secret when one is set)."""

    def __init__(self, private_key):
        from cryptography.hazmat.primitives import serialization

        self._key = private_key
        self.public_key = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo).hex()

    def headers(self, method: str, target: str, secret: str = "", timestamp: int | None = None,
                nonce: str | None = None, target_node: str = "") -> list[tuple[str, str]]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
        nonce = nonce or secrets.token_hex(16)
        message = signed_message(method, target, timestamp_text, nonce, self.public_key, target_node)
        signature = self._key.sign(message, ec.ECDSA(hashes.SHA256()))
        headers = [(PUBLIC_KEY_HEADER, self.public_key), (SIGNATURE_HEADER, base64.b64encode(signature).decode()),
                   (TIMESTAMP_HEADER, timestamp_text), (NONCE_HEADER, nonce)]
        if secret:
            headers.append((SECRET_PROOF_HEADER, secret_proof(secret, message)))
        return headers


class OpenSSLEcdsaKey:
    """An ECDSA public key checked by the libcrypto that Python's own ssl module loaded: the agent needs no
    cryptography import for its requests (its bindings would add about 6.5 MB to the agent for good)."""

    EVP_PKEY_EC = 408  # NID_X9_62_id_ecPublicKey
    _library: Any = None

    @classmethod
    def library(cls):
        """libcrypto's functions, found through _ssl's own handle (the same copy, never a second one); None when
        they cannot be found (another TLS library, an OpenSSL older than 1.1.1)."""
        if cls._library is None:
            cls._library = False
            try:
                import _ssl
                import ctypes
                lib = ctypes.CDLL(_ssl.__file__)
                pointer, size = ctypes.c_void_p, ctypes.c_size_t
                get_base_id = getattr(lib, "EVP_PKEY_get_base_id", None) or lib.EVP_PKEY_base_id  # 3.x, 1.1.1
                for function, result, arguments in (
                        (lib.d2i_PUBKEY, pointer, [pointer, ctypes.POINTER(ctypes.c_char_p), ctypes.c_long]),
                        (get_base_id, ctypes.c_int, [pointer]), (lib.EVP_PKEY_free, None, [pointer]),
                        (lib.EVP_MD_CTX_new, pointer, []), (lib.EVP_MD_CTX_free, None, [pointer]),
                        (lib.EVP_sha256, pointer, []),
                        (lib.EVP_DigestVerifyInit, ctypes.c_int, [pointer, pointer, pointer, pointer, pointer]),
                        (lib.EVP_DigestVerify, ctypes.c_int, [pointer, ctypes.c_char_p, size, ctypes.c_char_p, size]),
                        (lib.ERR_clear_error, None, [])):
                    function.restype, function.argtypes = result, arguments
                lib.get_base_id = get_base_id
                cls._library = (lib, ctypes)
            except (ImportError, OSError, AttributeError):
                pass
        return cls._library or None

    def __init__(self, der: bytes):
        lib, ctypes = self.library()
        self._lib = lib
        buffer = ctypes.c_char_p(der)
        start = ctypes.cast(buffer, ctypes.c_void_p).value
        self._pkey = lib.d2i_PUBKEY(None, ctypes.byref(buffer), len(der))
        consumed = (ctypes.cast(buffer, ctypes.c_void_p).value or start) - start
        lib.ERR_clear_error()  # a refused key leaves errors that ssl would later report as its own
        if not self._pkey or consumed != len(der) or lib.get_base_id(self._pkey) != self.EVP_PKEY_EC:
            raise ValueError("not an ECDSA public key")

    def __del__(self):
        if getattr(self, "_pkey", None):
            self._lib.EVP_PKEY_free(self._pkey)

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether `signature` (DER, as cryptography's ECDSA makes it) signs SHA-256 of `message`."""
        lib = self._lib
        context = lib.EVP_MD_CTX_new()
        if not context:
            raise MemoryError("EVP_MD_CTX_new failed")
        try:
            return (lib.EVP_DigestVerifyInit(context, None, lib.EVP_sha256(), None, self._pkey) == 1
                    and lib.EVP_DigestVerify(context, signature, len(signature), message, len(message)) == 1)
        finally:
            lib.EVP_MD_CTX_free(context)
            lib.ERR_clear_error()


class CryptographyEcdsaKey:
    """The same check through cryptography, where libcrypto's functions cannot be reached."""

    def __init__(self, der: bytes):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = serialization.load_der_public_key(der)
        if not isinstance(self._key, ec.EllipticCurvePublicKey):
            raise ValueError("not an ECDSA key")

    def verifies(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self._key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False


def load_ecdsa_public_key(der: bytes) -> OpenSSLEcdsaKey | CryptographyEcdsaKey:
    """A public key (DER SubjectPublicKeyInfo) that checks request signatures; ValueError when it is none."""
    return OpenSSLEcdsaKey(der) if OpenSSLEcdsaKey.library() else CryptographyEcdsaKey(der)


class RequestVerifier:
    """The agent's side: a valid, fresh, never-seen signature from the paired server (or one proving the secret)."""

    def __init__(self, secret: str = "", pin_path: str | None = None):
        self.secret = secret
        self.pin_path = pin_path
        self.pinned: str | None = None
        if pin_path and os.path.exists(pin_path):
            with open(pin_path) as f:
                self.pinned = f.read().strip() or None
        self._seen_nonces: dict[str, float] = {}
        # The last key loaded, by its hex: every request of the paired server presents the same one.
        self._loaded_key: tuple[str, OpenSSLEcdsaKey | CryptographyEcdsaKey] | None = None

    def _public_key(self, public_key: str) -> OpenSSLEcdsaKey | CryptographyEcdsaKey:
        if self._loaded_key is None or self._loaded_key[0] != public_key:
            self._loaded_key = (public_key, load_ecdsa_public_key(bytes.fromhex(public_key)))
        return self._loaded_key[1]

    def _remember_nonce(self, nonce: str, moment: float) -> None:
        if len(self._seen_nonces) > 1000:
            horizon = moment - 2 * SIGNATURE_WINDOW
            self._seen_nonces = {n: t for n, t in self._seen_nonces.items() if t > horizon}
        self._seen_nonces[nonce] = moment

    def verify(self, method: str, target: str, headers) -> str:
        """The public key of the server that signed this request; AgentAuthError when it must be refused."""
        public_key, signature = headers.get(PUBLIC_KEY_HEADER, ""), headers.get(SIGNATURE_HEADER, "")
        timestamp, nonce = headers.get(TIMESTAMP_HEADER, ""), headers.get(NONCE_HEADER, "")
        if not (public_key and signature and timestamp and nonce):
            raise AgentAuthError("unsigned request: this agent answers only requests signed by its Portainer server")
        moment = time.time()
        if not timestamp.isdigit() or abs(moment - int(timestamp)) > SIGNATURE_WINDOW:
            raise AgentAuthError(f"request timestamp is outside the accepted window of {SIGNATURE_WINDOW} s "
                                 "(stale request, or the clocks of server and agent differ)")
        if nonce in self._seen_nonces:
            raise AgentAuthError("replayed request: this nonce was already used")
        message = signed_message(method, target, timestamp, nonce, public_key, headers.get(TARGET_HEADER, ""))
        try:
            valid = self._public_key(public_key).verifies(base64.b64decode(signature, validate=True), message)
        except (ValueError, TypeError, base64.binascii.Error):
            valid = False
        if not valid:
            raise AgentAuthError("invalid request signature")
        if self.secret:
            proof = headers.get(SECRET_PROOF_HEADER, "")
            if not hmac.compare_digest(proof, secret_proof(self.secret, message)):
                raise AgentAuthError("the server did not prove the agent secret (AGENT_SECRET differs or is unset "
                                     "on the server)")
        elif self.pinned is None:
            self.pinned = public_key
            if self.pin_path:
                write_private_file(self.pin_path, public_key.encode())
            log.info("paired with the Portainer server whose key is %s...", public_key[-16:])
        elif not hmac.compare_digest(self.pinned, public_key):
            raise AgentAuthError("agent already paired with another Portainer server")
        self._remember_nonce(nonce, moment)
        return public_key


def cluster_headers(secret: str, method: str, target: str) -> list[tuple[str, str]]:
    """What one agent sends another when it asks on its own behalf: a proof of the shared secret."""
    timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
    message = signed_message(method, target, timestamp, nonce, "cluster")
    return [(TIMESTAMP_HEADER, timestamp), (NONCE_HEADER, nonce), (SECRET_PROOF_HEADER, secret_proof(secret, message))]


def verify_cluster_headers(secret: str, method: str, target: str, headers) -> None:
    timestamp, nonce = headers.get(TIMESTAMP_HEADER, ""), headers.get(NONCE_HEADER, "")
    if not (timestamp and nonce and headers.get(SECRET_PROOF_HEADER)):
        raise AgentAuthError("cluster request does not prove the agent secret")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SIGNATURE_WINDOW:
        raise AgentAuthError("cluster request timestamp is outside the accepted window")
    message = signed_message(method, target, timestamp, nonce, "cluster")
    if not hmac.compare_digest(headers.get(SECRET_PROOF_HEADER, ""), secret_proof(secret, message)):
        raise AgentAuthError("cluster request does not prove the agent secret")


# ----------------------------------------------------------------------------------------------------------------
# Agent: config
# ----------------------------------------------------------------------------------------------------------------


def build_agent_parser() -> argparse.ArgumentParser:
    """Portainer agent's settings; every flag falls back to the environment variable Portainer uses."""
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="agent.py", description="Serve this node's Docker engine to a portainer.py server over signed HTTPS.",
        epilog="Every flag can also be set by the environment variable shown in brackets.")
    p.add_argument("--port", type=int, default=env("AGENT_PORT", "9001"), help="HTTPS port [AGENT_PORT] (9001)")
    p.add_argument("--host", default=env("AGENT_HOST", "0.0.0.0"), help="address to bind [AGENT_HOST] (0.0.0.0)")
    p.add_argument("--secret", default=env("AGENT_SECRET", ""),
                   help="shared secret; only a server proving it is accepted, and agents of a cluster prove it to "
                        "each other [AGENT_SECRET]; without it the first server is pinned")
    p.add_argument("--cluster-addr", default=env("AGENT_CLUSTER_ADDR", ""),
                   help="the other agents of a Swarm: a DNS name resolving to all of them (tasks.agent) or a "
                        "comma-separated list of host[:port] [AGENT_CLUSTER_ADDR]")
    p.add_argument("--docker-host", default=env("DOCKER_HOST", "unix:///var/run/docker.sock"),
                   help="this node's Docker API [DOCKER_HOST] (unix:///var/run/docker.sock)")
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log verbosity [LOG_LEVEL] (INFO)")
    p.add_argument("--data", default=env("AGENT_DATA", ""),
                   help="state directory: keeps the certificate and the paired server's key across restarts "
                        "[AGENT_DATA]; without it nothing is written to disk")
    p.add_argument("--projects-dir", default=env("AGENT_PROJECTS_DIR", ""),
                   help="where the files of the stacks deployed here are kept (compose files, configs, build "
                        "contexts); relative binds resolve there, so when the agent runs in a container this path "
                        "must be mounted at the same path [AGENT_PROJECTS_DIR] (<data>/projects, or "
                        "/var/lib/portainer-agent/projects without --data)")
    return p


class AgentRequestError(Exception):
    """An answer the agent gives itself, rendered as Portainer's {"message": ...} with this status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ----------------------------------------------------------------------------------------------------------------
# Agent: cluster (Swarm peers, their node names and roles, routing, fan-out)
# ----------------------------------------------------------------------------------------------------------------

API_VERSION = r"(?:/v\d+(?:\.\d+)?)?"
FAN_OUT_PATHS = re.compile(rf"^{API_VERSION}/(containers/json|images/json|volumes|networks)$")
MANAGER_PATHS = re.compile(rf"^{API_VERSION}/(services|tasks|nodes|secrets|configs|swarm)(/|$)")
BROWSE_PATH = re.compile(r"^(?:/v2)?/browse/(ls|get|put|delete|rename)$")
# Calls on one container or exec instance, found on whichever node has it when no target node is given.
LOCATABLE_PATHS = re.compile(rf"^{API_VERSION}/(containers|exec)/([^/]+)(/|$)")
NOT_AN_OBJECT_ID = frozenset({"json", "create", "prune"})
NODE_INFO_PATH = "/agent/node"
LOCATE_PATH = "/agent/locate"
UNREACHABLE_NODES_HEADER = "X-PortainerAgent-Unreachable-Nodes"
NODE_PROOF_HEADER = "X-PortainerAgent-NodeProof"
CLUSTER_REFRESH_SECONDS = 10.0


async def resolve_cluster_addresses(spec: str, default_port: int) -> list[str]:
    """host:port of every agent named by AGENT_CLUSTER_ADDR; a DNS name stands for all its addresses."""
    loop = asyncio.get_running_loop()
    addresses: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        parsed = urllib.parse.urlsplit("//" + item)
        host, port = parsed.hostname, parsed.port or default_port
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve cluster address %s: %s", host, exc)
            continue
        for info in infos:
            ip = info[4][0]
            address = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
            if address not in addresses:
                addresses.append(address)
    return addresses


class Cluster:
    """What this agent knows of the other agents of its Swarm: address -> node name, role, reachability."""

    def __init__(self, agent: "Agent"):
        self.agent = agent
        self.members: dict[str, dict] = {}
        self._clients: dict[str, DockerClient] = {}
        self._discovery_clients: dict[str, DockerClient] = {}
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._peer_tls = ssl.create_default_context()
        # Peers make their own certificates: with a secret, `client` pins the one each peer proved it holds.
        self._peer_tls.check_hostname = False
        self._peer_tls.verify_mode = ssl.CERT_NONE

    def client(self, address: str) -> DockerClient:
        """Connections to a peer; with a secret, only to the certificate the peer proved it holds."""
        if address not in self._clients:
            async def open_peer() -> HttpConnection:
                reader, writer = await open_docker_stream(f"https://{address}", self._peer_tls, timeout=5)
                if self.agent.config.secret:
                    shown = der_fingerprint(writer.get_extra_info("ssl_object").getpeercert(binary_form=True))
                    if shown != self.members.get(address, {}).get("CertificateFingerprint"):
                        # the peer may have restarted with a new certificate since this agent last asked it
                        await self.refresh(force=True)
                    if shown != self.members.get(address, {}).get("CertificateFingerprint"):
                        writer.close()
                        raise DockerUnreachable(f"the agent at {address} shows a certificate it has not proven")
                return HttpConnection(reader, writer)
            self._clients[address] = DockerClient(open_peer)
        return self._clients[address]

    def _discovery_client(self, address: str) -> DockerClient:
        if address not in self._discovery_clients:
            async def open_peer() -> HttpConnection:
                return HttpConnection(*await open_docker_stream(f"https://{address}", self._peer_tls, timeout=5))
            self._discovery_clients[address] = DockerClient(open_peer)
        return self._discovery_clients[address]

    def close(self) -> None:
        for client in [*self._clients.values(), *self._discovery_clients.values()]:
            client.close()

    async def ask_node(self, address: str) -> dict | None:
        """The peer's node name, role and certificate; with a secret, its answer must prove the secret too."""
        secret = self.agent.config.secret
        headers = cluster_headers(secret, "GET", NODE_INFO_PATH) if secret else []
        try:
            response = await self._discovery_client(address).request("GET", NODE_INFO_PATH, headers, timeout=5)
            async with response:
                raw = await asyncio.wait_for(response.read(), 5)
            if response.status != 200:
                log.warning("agent at %s refused to describe itself: %s", address, raw[:200])
                return None
            if secret:
                expected = secret_proof(secret, dict(headers)[NONCE_HEADER].encode() + b"\n" + raw)
                if not hmac.compare_digest(response.headers.get(NODE_PROOF_HEADER, ""), expected):
                    log.warning("agent at %s does not prove the cluster secret; not trusted", address)
                    return None
            answer = json.loads(raw)
            if not isinstance(answer, dict):
                log.warning("agent at %s described itself with something that is not a JSON object", address)
                return None
            return answer
        except (DockerUnreachable, asyncio.TimeoutError, ValueError, RecursionError) as exc:
            log.debug("agent at %s does not answer: %s", address, exc)
            return None

    async def refresh(self, force: bool = False) -> None:
        async with self._lock:
            if not force and time.monotonic() - self._checked_at < CLUSTER_REFRESH_SECONDS:
                return
            await self.agent.describe_node()
            addresses = await resolve_cluster_addresses(self.agent.config.cluster_addr, self.agent.config.port)
            answers = await asyncio.gather(*(self.ask_node(a) for a in addresses))
            members = {}
            for address, answer in zip(addresses, answers):
                if answer and answer.get("AgentId") == self.agent.agent_id:
                    continue
                known = self.members.get(address, {"NodeName": address, "NodeRole": "unknown"})
                members[address] = {**known, **(answer or {}), "Reachable": answer is not None}
            self.members = members
            self._checked_at = time.monotonic()

    async def locate(self, kind: str, object_id: str) -> str | None:
        """The peer whose engine has this container or exec instance; None when it is here or nowhere."""
        if await self.agent.has_object(kind, object_id):
            return None
        await self.refresh()
        target = f"{LOCATE_PATH}?{urllib.parse.urlencode({'kind': kind, 'id': object_id})}"
        secret = self.agent.config.secret

        async def ask(address: str) -> bool:
            headers = cluster_headers(secret, "GET", target) if secret else []
            try:
                async with await self.client(address).request("GET", target, headers, timeout=5) as response:
                    answer = json.loads(await response.read())
                    return response.status == 200 and isinstance(answer, dict) and answer.get("Found") is True
            except (DockerUnreachable, asyncio.TimeoutError, ValueError, RecursionError):
                return False

        addresses = [a for a, member in self.members.items() if member.get("Reachable")]
        for address, found in zip(addresses, await asyncio.gather(*(ask(a) for a in addresses))):
            if found:
                return address
        return None

    async def address_of(self, node_name: str) -> str:
        for attempt in range(2):
            await self.refresh(force=attempt > 0)
            for address, member in self.members.items():
                if member.get("NodeName") == node_name:
                    return address
        raise AgentRequestError(404, f"no agent in this cluster runs on node {node_name!r}")

    async def manager_address(self) -> str:
        for attempt in range(2):
            await self.refresh(force=attempt > 0)
            for address, member in self.members.items():
                if member.get("NodeRole") == "manager" and member.get("Reachable"):
                    return address
        raise AgentRequestError(503, "no Swarm manager's agent can be reached from this node")


def forwarded_headers(request: web.Request) -> list[tuple[str, str]]:
    """The request's headers for the next agent, the server's signature intact (the peer checks it itself)."""
    signature = [(name, request.headers[name]) for name in SIGNED_HEADERS if name in request.headers]
    return forwardable_request_headers(request) + signature + [(FORWARDED_HEADER, "1")]


def tag_with_node(item: Any, node_name: str) -> Any:
    if isinstance(item, dict):
        item.setdefault("Portainer", {})["Agent"] = {"NodeName": node_name}
    return item


# ----------------------------------------------------------------------------------------------------------------
# Agent: volume browser, confined to the volume's directory
# ----------------------------------------------------------------------------------------------------------------


def confined_path(root: str, path: str) -> str:
    """`path` inside the volume at `root`, symlinks resolved; refused when it would leave the volume."""
    parts = [part for part in path.replace("\\", "/").split("/") if part not in ("", ".")]
    if ".." in parts:
        raise AgentRequestError(400, "path may not contain '..'")
    if any("\x00" in part for part in parts):
        raise AgentRequestError(400, "path may not contain NUL")
    real = os.path.realpath(os.path.join(root, *parts))
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        raise AgentRequestError(403, "path leaves the volume (through a symbolic link)")
    return real


def entry_view(directory: str, name: str) -> dict:
    info = os.lstat(os.path.join(directory, name))
    return {"Name": name, "Size": info.st_size, "Dir": stat.S_ISDIR(info.st_mode), "ModTime": int(info.st_mtime)}


# ----------------------------------------------------------------------------------------------------------------
# Agent: the process (node identity, request dispatch, routes)
# ----------------------------------------------------------------------------------------------------------------


class Agent:
    """One node's agent: checks every request's signature, then serves it here or routes it across the cluster."""

    def __init__(self, config: argparse.Namespace):
        self.config = config
        self.agent_id = uuid.uuid4().hex
        self.node_name = socket.gethostname()
        self.node_role = "standalone"
        self.docker = DockerClient(self._open_docker)
        pin_path = os.path.join(config.data, "server_key.pub") if config.data else None
        self.verifier = RequestVerifier(config.secret, pin_path)
        self.cluster = Cluster(self) if config.cluster_addr else None
        self.certificate_fingerprint = ""
        self.projects = ProjectFiles(config.projects_dir or default_projects_directory(config.data))

    async def _open_docker(self) -> HttpConnection:
        return HttpConnection(*await open_docker_stream(self.config.docker_host))

    async def docker_json(self, method: str, target: str) -> Any:
        try:
            response = await self.docker.request(method, target, timeout=30)
            async with response:
                raw = await response.read()
        except (DockerUnreachable, asyncio.TimeoutError) as exc:
            raise AgentRequestError(502, f"the node's Docker engine is unreachable: {exc}") from None
        if response.status >= 400:
            raise AgentRequestError(response.status, _docker_message(raw, response.status))
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            raise AgentRequestError(502, f"the node's Docker engine answered {target.split('?')[0]} with something "
                                         "that is not JSON") from None

    async def has_object(self, kind: str, object_id: str) -> bool:
        try:
            target = f"/{kind}/{urllib.parse.quote(object_id, safe='')}/json"
            async with await self.docker.request("GET", target, timeout=10) as response:
                await response.read()
                return response.status == 200
        except (DockerUnreachable, asyncio.TimeoutError):
            return False

    async def describe_node(self) -> dict:
        info = await self.docker_json("GET", "/info")
        info = info if isinstance(info, dict) else {}  # an engine's answer is input: any field may be null
        swarm = info.get("Swarm") if isinstance(info.get("Swarm"), dict) else {}
        self.node_name = info.get("Name") if isinstance(info.get("Name"), str) and info["Name"] else self.node_name
        if swarm.get("ControlAvailable"):
            self.node_role = "manager"
        elif swarm.get("LocalNodeState") == "active":
            self.node_role = "worker"
        else:
            self.node_role = "standalone"
        return {"NodeName": self.node_name, "NodeRole": self.node_role, "AgentId": self.agent_id,
                "Version": AGENT_VERSION}

    # -- dispatch ------------------------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        target = request.raw_path
        self.verifier.verify(request.method, target, request.headers)
        path = urllib.parse.unquote(target.split("?", 1)[0])
        browse = BROWSE_PATH.match(path)
        if self.cluster is not None and FORWARDED_HEADER not in request.headers:
            node = request.headers.get(TARGET_HEADER, "")
            if node:
                await self.cluster.refresh()
                if node != self.node_name:
                    return await self.forward(request, await self.cluster.address_of(node))
            elif not browse and request.method == "GET" and FAN_OUT_PATHS.match(path):
                return await self.fan_out(request)
            elif not browse and MANAGER_PATHS.match(path):
                await self.cluster.refresh()
                if self.node_role != "manager":
                    return await self.forward(request, await self.cluster.manager_address())
            elif not browse and (located := LOCATABLE_PATHS.match(path)) and located.group(2) not in NOT_AN_OBJECT_ID:
                address = await self.cluster.locate(located.group(1), located.group(2))
                if address is not None:
                    return await self.forward(request, address)
        if browse:
            return await self.browse(request, browse.group(1))
        return await self.relay_to_docker(request)

    async def relay_to_docker(self, request: web.Request) -> web.StreamResponse:
        headers = [(k, v) for k, v in forwardable_request_headers(request) if k.lower() != TARGET_HEADER.lower()]
        body, body_length = request_body_for_relay(request)
        try:
            response = await self.docker.request(request.method, request.raw_path, headers, body, body_length,
                                                 timeout=300)
        except (DockerUnreachable, asyncio.TimeoutError) as exc:
            raise AgentRequestError(502, f"the node's Docker engine is unreachable: {exc}") from None
        return await relay_response(request, response)

    async def forward(self, request: web.Request, address: str) -> web.StreamResponse:
        body, body_length = request_body_for_relay(request)
        try:
            response = await self.cluster.client(address).request(
                request.method, request.raw_path, forwarded_headers(request), body, body_length, timeout=300)
        except (DockerUnreachable, asyncio.TimeoutError) as exc:
            raise AgentRequestError(502, f"the agent at {address} is unreachable: {exc}") from None
        return await relay_response(request, response)

    async def fan_out(self, request: web.Request) -> web.Response:
        """A list from every node at once, merged, each item tagged with its node; a down node is reported."""
        await self.cluster.refresh()
        target = request.raw_path
        local_headers = [(k, v) for k, v in forwardable_request_headers(request) if k.lower() != TARGET_HEADER.lower()]

        async def ask(client: DockerClient, headers) -> tuple[int, bytes]:
            response = await client.request("GET", target, headers, timeout=30)
            async with response:
                return response.status, await asyncio.wait_for(response.read(), 30)

        addresses = list(self.cluster.members)
        answers = await asyncio.gather(
            ask(self.docker, local_headers),
            *(ask(self.cluster.client(a), forwarded_headers(request)) for a in addresses), return_exceptions=True)
        local = answers[0]
        if isinstance(local, BaseException):
            raise AgentRequestError(502, f"the node's Docker engine is unreachable: {local}")
        if local[0] != 200:
            return web.Response(status=local[0], body=local[1], content_type="application/json")
        sources = [(self.node_name, local)] + [
            (self.cluster.members[a].get("NodeName", a), answer) for a, answer in zip(addresses, answers[1:])]
        merged_items, warnings, unreachable = [], [], []
        is_volumes = False
        for node_name, answer in sources:
            if isinstance(answer, BaseException) or answer[0] != 200:
                reason = answer if isinstance(answer, BaseException) else _docker_message(answer[1], answer[0])
                unreachable.append(node_name)
                warnings.append(f"node {node_name} is unreachable: {reason}")
                continue
            try:
                data = json.loads(answer[1]) if answer[1].strip() else []
            except (ValueError, RecursionError):
                unreachable.append(node_name)
                warnings.append(f"node {node_name} answered something that is not JSON")
                continue
            if isinstance(data, dict):
                is_volumes = True
                node_warnings = data.get("Warnings")
                warnings += [w for w in node_warnings if isinstance(w, str)] if isinstance(node_warnings, list) else []
                data = data.get("Volumes")
            merged_items += [tag_with_node(item, node_name) for item in (data if isinstance(data, list) else [])]
        if warnings:
            log.warning("fan-out %s: %s", request.path, "; ".join(warnings))
        merged: Any = {"Volumes": merged_items, "Warnings": warnings or None} if is_volumes else merged_items
        headers = {UNREACHABLE_NODES_HEADER: ",".join(unreachable)} if unreachable else {}
        return web.json_response(merged, headers=headers)

    # -- volume browser ------------------------------------------------------------------------------------------

    async def volume_root(self, request: web.Request) -> str:
        volume_id = request.query.get("volumeID", "")
        if not volume_id:
            raise AgentRequestError(400, "volumeID is required")
        volume = await self.docker_json("GET", f"/volumes/{urllib.parse.quote(volume_id, safe='')}")
        mountpoint = volume.get("Mountpoint") if isinstance(volume, dict) else None
        if not isinstance(mountpoint, str) or not mountpoint or not os.path.isdir(mountpoint):
            raise AgentRequestError(409, f"volume {volume_id!r} has no local directory this agent can reach")
        return os.path.realpath(mountpoint)

    async def browse(self, request: web.Request, operation: str) -> web.StreamResponse:
        allowed = {"ls": "GET", "get": "GET", "put": ("POST", "PUT"), "delete": "DELETE", "rename": "PUT"}[operation]
        if request.method not in (allowed if isinstance(allowed, tuple) else (allowed,)):
            raise AgentRequestError(405, f"browse/{operation} takes {allowed}")
        root = await self.volume_root(request)
        path = confined_path(root, request.query.get("path", "/"))
        if operation == "ls":
            if not os.path.isdir(path):
                raise AgentRequestError(404, "not a directory")
            return web.json_response([entry_view(path, name) for name in sorted(os.listdir(path))])
        if operation == "get":
            if not os.path.isfile(path):
                raise AgentRequestError(404, "not a file")
            return web.FileResponse(path, headers={
                "Content-Disposition": f"attachment; filename=\"{os.path.basename(path)}\""})
        if operation == "put":
            return await self.browse_put(request, root, path)
        if path == root:
            raise AgentRequestError(400, "the volume's root cannot be deleted or renamed")
        if operation == "delete":
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
            else:
                raise AgentRequestError(404, "no such file")
            return web.Response(status=204)
        new_name = request.query.get("newPath", "")
        if not new_name and request.can_read_body:
            body = await request.json()
            new_name = body.get("NewFilePath", "") if isinstance(body, dict) else ""
        if not new_name:
            raise AgentRequestError(400, "newPath is required")
        destination = confined_path(root, new_name)
        if not os.path.lexists(path):
            raise AgentRequestError(404, "no such file")
        os.rename(path, destination)
        return web.Response(status=204)

    async def browse_put(self, request: web.Request, root: str, path: str) -> web.Response:
        """Multipart `file` into the directory `path` (Portainer's form), or a raw body into the file `path`."""
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "file" and part.filename:
                    await self._write_stream(confined_path(root, os.path.relpath(path, root) + "/" +
                                                           os.path.basename(part.filename)), part.read_chunk)
                    return web.Response(status=204)
            raise AgentRequestError(400, "the form holds no 'file'")
        if path == root or os.path.isdir(path):
            raise AgentRequestError(400, "path must name a file")
        await self._write_stream(path, lambda: request.content.read(STREAM_CHUNK))
        return web.Response(status=204)

    @staticmethod
    async def _write_stream(path: str, read_chunk: Callable[[], Awaitable[bytes]]) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            while True:
                chunk = await read_chunk()
                if not chunk:
                    break
                f.write(chunk)

    # -- routes --------------------------------------------------------------------------------------------------

    async def handle_ping(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={"Portainer-Agent": AGENT_VERSION,
                                                 "Portainer-Agent-API-Version": AGENT_API_VERSION})

    async def handle_node_info(self, request: web.Request) -> web.Response:
        """Who this agent is, for the other agents of its cluster (they prove the secret when one is set)."""
        node = {**await self.describe_node(), "CertificateFingerprint": self.certificate_fingerprint}
        body = json.dumps(node).encode()
        headers = {}
        if self.config.secret:
            verify_cluster_headers(self.config.secret, request.method, request.raw_path, request.headers)
            headers[NODE_PROOF_HEADER] = secret_proof(self.config.secret,
                                                      request.headers[NONCE_HEADER].encode() + b"\n" + body)
        return web.Response(body=body, content_type="application/json", headers=headers)


    async def handle_locate(self, request: web.Request) -> web.Response:
        """Whether this node's engine has a container or exec instance (asked by the other agents)."""
        if self.config.secret:
            verify_cluster_headers(self.config.secret, request.method, request.raw_path, request.headers)
        kind = request.query.get("kind", "")
        if kind not in ("containers", "exec"):
            raise AgentRequestError(400, "kind is containers or exec")
        return web.json_response({"Found": await self.has_object(kind, request.query.get("id", ""))})


def _docker_message(raw: bytes, status: int) -> str:
    try:
        message = json.loads(raw).get("message")
        return message if isinstance(message, str) and message else f"status {status}"
    except (ValueError, AttributeError, RecursionError):
        return raw.decode(errors="replace")[:300] or f"status {status}"


@web.middleware
async def agent_error_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except AgentAuthError as exc:
        log.warning("refused %s %s from %s: %s", request.method, request.path, request.remote, exc)
        return web.json_response({"message": str(exc), "details": "request refused by the agent"}, status=403)
    except AgentRequestError as exc:
        return web.json_response({"message": exc.message, "details": ""}, status=exc.status)
    except OSError as exc:
        if isinstance(exc, ConnectionError):
            raise
        return web.json_response({"message": f"file operation failed: {exc.strerror or exc}", "details": ""},
                                 status=400)


def make_agent_app(agent: Agent) -> web.Application:
    app = web.Application(middlewares=[agent_error_middleware])
    app.router.add_route("GET", "/ping", agent.handle_ping)
    app.router.add_route("GET", NODE_INFO_PATH, agent.handle_node_info)
    app.router.add_route("GET", LOCATE_PATH, agent.handle_locate)
    agent.projects.add_routes(app, lambda request: agent.verifier.verify(request.method, request.raw_path,
                                                                         request.headers))
    app.router.add_route("*", "/{path:.*}", agent.handle)

    async def lifecycle(app: web.Application):
        yield
        agent.docker.close()
        if agent.cluster is not None:
            agent.cluster.close()

    app.cleanup_ctx.append(lifecycle)
    return app


def agent_tls_context(data: str) -> tuple[ssl.SSLContext, str]:
    """A certificate made at start (kept in the state directory when there is one) and its fingerprint."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory() as directory:
        if data:
            os.makedirs(data, mode=0o700, exist_ok=True)
            directory = data
        cert_path, key_path = os.path.join(directory, "agent-cert.pem"), os.path.join(directory, "agent-key.pem")
        if not (os.path.exists(cert_path) and os.path.exists(key_path)):
            run_in_child_process(create_self_signed_certificate, cert_path, key_path, "portainer.py agent")
        context.load_cert_chain(cert_path, key_path)
        with open(cert_path) as f:
            fingerprint = der_fingerprint(ssl.PEM_cert_to_DER_cert(f.read()))
    return context, fingerprint


def run_in_child_process(function: Callable[..., None], *args) -> None:
    """Run a one-off job in a forked child: what it imports (cryptography's x509 for a certificate, about 11 MB)
    never becomes part of the agent, which runs for months."""
    if not hasattr(os, "fork"):
        function(*args)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            function(*args)
            status = 0
        except BaseException:
            log.exception("%s failed", function.__name__)
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError(f"{function.__name__} failed (exit status {os.waitstatus_to_exitcode(status)})")


def return_freed_memory() -> None:
    """Give the heap's free pages back to the system before start-up allocates among them: compiling this file
    and portainer.py (never cached when the directory is read-only) leaves megabytes free but held by malloc."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc (musl, macOS): it holds nothing back this way


EVENT_LOOP_ENV = "EVENT_LOOP"  # "uvloop" or "asyncio"; unset: the default each program passes to run_event_loop


def run_event_loop(main_coroutine: Awaitable[Any], default: str = "asyncio") -> Any:
    """asyncio.run, on uvloop (an optional import: Debian python3-uvloop, PyPI uvloop) when EVENT_LOOP=uvloop or
    when `default` is uvloop and it is installed. The server defaults to uvloop (less than half the CPU per byte
    it relays); the agents to asyncio (uvloop adds 2 MB at rest and saves them little: their engine is local)."""
    choice = os.environ.get(EVENT_LOOP_ENV, "").strip().lower()
    if choice not in ("", "uvloop", "asyncio"):
        raise ValueError(f"{EVENT_LOOP_ENV} must be uvloop or asyncio, not {choice!r}")
    if (choice or default) == "uvloop":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise ValueError(f"{EVENT_LOOP_ENV}=uvloop needs uvloop (Debian: python3-uvloop, PyPI: uvloop)")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main_coroutine)
    return asyncio.run(main_coroutine)


def aiohttp_server_options() -> tuple[dict, dict]:
    """AppRunner and TCPSite options for a quick shutdown, on aiohttp 3.8 (Debian 12) and 3.9+ alike."""
    runner_options: dict = {"access_log": None}
    site_options: dict = {"reuse_address": True}
    # aiohttp 3.8 takes the shutdown timeout per site and always cancels handlers of a lost client.
    if "shutdown_timeout" in inspect.signature(web.AppRunner.__init__).parameters:
        runner_options["shutdown_timeout"] = 0.5
        runner_options["handler_cancellation"] = True  # a client that goes away ends its relayed stream
    else:
        site_options["shutdown_timeout"] = 0.5
    return runner_options, site_options


async def serve_agent(config: argparse.Namespace) -> None:
    agent = Agent(config)
    with contextlib.suppress(AgentRequestError):
        await agent.describe_node()
    runner_options, site_options = aiohttp_server_options()
    tls, agent.certificate_fingerprint = agent_tls_context(config.data)
    runner = web.AppRunner(make_agent_app(agent), **runner_options)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.host, config.port, ssl_context=tls, **site_options).start()
        log.info("agent %s for node %s (%s) serving https://%s:%s, Docker at %s%s", AGENT_VERSION, agent.node_name,
                 agent.node_role, config.host, config.port, config.docker_host,
                 f", cluster {config.cluster_addr}" if config.cluster_addr else "")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


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
#   LIMITS  stream id 0, payload: 4-byte size of the largest DATA payload this side accepts. Sent first by a side
#           that accepts more than TUNNEL_MAX_PAYLOAD; until the other side's LIMITS came, a side sends DATA of at
#           most TUNNEL_MAX_PAYLOAD. A side that predates LIMITS ignores it (an unknown kind), so it never gets more.
# Every stream starts with TUNNEL_STREAM_WINDOW of credit each way; a receiver with a larger window grants the
# rest with a WINDOW frame as the stream opens (valid for either side of any version).
# So a slow reader stalls only its own stream, and neither side buffers more than one window per stream.
# Liveness is the WebSocket's own ping/pong (aiohttp `heartbeat`), on both sides.

TUNNEL_OPEN, TUNNEL_DATA, TUNNEL_WINDOW, TUNNEL_EOF, TUNNEL_CLOSE, TUNNEL_LIMITS = 1, 2, 3, 4, 5, 6
TUNNEL_FRAME_HEADER = struct.Struct("!BI")
TUNNEL_MAX_PAYLOAD = 64 * 1024  # the DATA payload every side accepts (the protocol's first version)
TUNNEL_STREAM_WINDOW = 256 * 1024  # the credit every stream starts with, each way
# What the edge tunnel and the relay between servers use once both sides said so: a bulk stream (docker export,
# image save, logs) crosses in four times fewer frames and credit frames, so in less CPU per byte on both sides.
# (A 1 MB window moved no more bytes a second on two cores, and a docker ps beside an export waited longer.)
TUNNEL_LARGE_PAYLOAD = 256 * 1024
TUNNEL_LARGE_WINDOW = 512 * 1024
TUNNEL_MAX_MESSAGE = 2 * TUNNEL_LARGE_PAYLOAD  # the largest frame, headroom: aiohttp refuses one of exactly its limit
TUNNEL_MAX_STREAMS = 1024
# Small answers first, on the side that answers (the edge agent, a relay's holder). A stream that has sent
# TUNNEL_BULK_BYTES is bulk (an export, an image save, a long log). One that carried less both ways and has just
# received data waits for its answer until it sends some (a docker ps). While another stream waits (asked less
# than TUNNEL_ANSWER_FIRST_SECONDS ago: a stream that takes input and answers nothing holds nobody for long), a
# bulk stream holds its next frame, for up to TUNNEL_BULK_YIELD_SECONDS at a time, then sends at least one. Its
# engine then stops producing too (the pipe pauses reading): on a busy host that frees the CPU the docker ps
# needs, and the bulk stream still moves between answers. (bench.py head_of_line: p99 3.8-4x idle before, 2.4-3.1x.)
TUNNEL_BULK_BYTES = 1024 * 1024
TUNNEL_ANSWER_FIRST_SECONDS = 0.1
TUNNEL_BULK_YIELD_SECONDS = 0.02
TUNNEL_OPEN_TIMEOUT = 15.0
TUNNEL_CLOSE_TIMEOUT = 2.0
EDGE_STABLE_TUNNEL = 10.0


def tunnel_receive_timeout(heartbeat: float) -> float:
    """Silence after which a tunnel is dead: pings go out every `heartbeat` seconds, so a live link is never
    quiet for longer. (aiohttp 3.8 only closes the transport on a missing pong, which a dead TLS link never
    finishes; this timeout ends the tunnel on every aiohttp version.)"""
    return heartbeat * 1.5
EDGE_TUNNEL_PATH = "/api/endpoints/edge/tunnel"
EDGE_ENDPOINT_HEADER = "X-PortainerEdge-EndpointID"
EDGE_SECRET_HEADER = "X-PortainerEdge-Secret"
EDGE_ID_HEADER = "X-PortainerAgent-EdgeID"
# Fleets: one onboarding key for many devices (its environment id is 0), and what an agent tells the server.
EDGE_GLOBAL_KEY_PATH = "/api/endpoints/global-key"
GLOBAL_KEY_ENDPOINT = 0
EDGE_VERSION_HEADER = "X-PortainerAgent-Version"
EDGE_DIGEST_HEADER = "X-PortainerAgent-Digest"  # SHA-256 of the agent.py that runs, hex
EDGE_UPDATE_HEADER = "X-PortainerAgent-Update"  # JSON: how the latest update ended, {"Status", "Reason"}
# Self-updates: the server opens a tunnel stream to this target and sends one JSON line {"Version", "Digest",
# "Size", "RollbackTimeout", "Signature"} and then the new agent.py; the agent answers one JSON line
# {"Accepted": true} or {"Accepted": false, "Reason"}. The signature is RequestSigner's over
# agent_update_target(), checked with RequestVerifier against the server key the agent pinned.
AGENT_UPDATE_TARGET = "agent-update"
MAX_AGENT_FILE = 8 * 1024 * 1024
EDGE_WATCHDOG_ENV = "EDGE_UPDATE_WATCHDOG"


def agent_update_target(digest: str, version: str) -> str:
    return f"/agent.py?sha256={digest}&version={urllib.parse.quote(version, safe='')}"


def version_in_agent_file(data: bytes) -> str:
    """The AGENT_VERSION an agent.py declares ("" when it declares none)."""
    found = re.search(rb'^AGENT_VERSION = "([^"\n]{1,32})"', data, re.M)
    return found.group(1).decode(errors="replace") if found else ""

def tunnel_frame(kind: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    return TUNNEL_FRAME_HEADER.pack(kind, stream_id) + payload


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
        self.target = "docker"  # what the opening side asked to reach (docker, projects or an agent update)
        self.closed = False
        self.close_reason = ""
        self._inbound = bytearray()
        self._inbound_eof = False
        self._readable = asyncio.Event()
        self._unacknowledged = 0
        self._window = tunnel.window  # what this side buffers for the stream at most (the credit it grants)
        self._credit = TUNNEL_STREAM_WINDOW
        self._has_credit = asyncio.Event()
        self._outbound = bytearray()
        self._eof_wanted = False
        self._eof_sent = False
        self._flusher: asyncio.Future | None = None
        self._closed_event: asyncio.Event | None = None
        self.sent_bytes = self.received_bytes = 0
        self.asked_at = 0.0  # monotonic: when it last received data while it owed an answer (waiting_for_answers)

    # -- frames from the other side -----------------------------------------------------------------------------
    def received_data(self, payload: bytes) -> None:
        if self.closed or self._inbound_eof:
            return
        if len(self._inbound) + len(payload) > self._window:
            self.close("flow control violated: more data than credit")
            return
        self._inbound += payload
        self._readable.set()
        self.received_bytes += len(payload)
        if self.tunnel.answers_first and self.sent_bytes < TUNNEL_BULK_BYTES and \
                self.received_bytes < TUNNEL_BULK_BYTES:
            self.asked_at = time.monotonic()
            self.tunnel.waiting_for_answers.add(self)

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
        if self._unacknowledged >= self._window // 4 and not self.closed:
            amount, self._unacknowledged = self._unacknowledged, 0
            await self.tunnel.send(TUNNEL_WINDOW, self.id, amount.to_bytes(4, "big"))

    async def _wait_readable(self) -> None:
        while not self._inbound and not self._inbound_eof:
            self._readable.clear()
            await self._readable.wait()

    def at_eof(self) -> bool:
        return self._inbound_eof and not self._inbound

    @property
    def buffered(self) -> int:
        return len(self._inbound)

    @property
    def unsent(self) -> int:
        return len(self._outbound)

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (any amount when n < 0) as soon as some are there; b"" at the end of the stream."""
        if n == 0:
            return b""
        await self._wait_readable()
        size = len(self._inbound) if n < 0 else min(n, len(self._inbound))
        with memoryview(self._inbound) as view:
            data = bytes(view[:size])  # one copy (a bytearray slice would be a second)
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
        sending = self.tunnel.sending
        try:
            await self._send_outbound(sending)
        finally:
            sending.discard(self)

    async def _send_outbound(self, sending: set) -> None:
        while not self.closed:
            if self._outbound:
                if self._credit <= 0:
                    sending.discard(self)
                    self._has_credit.clear()
                    await self._has_credit.wait()
                    continue
                if self.sent_bytes >= TUNNEL_BULK_BYTES and self.tunnel.waiting_for_answers:
                    await self.tunnel.answers_sent(TUNNEL_BULK_YIELD_SECONDS)
                    if self.closed:
                        return
                sending.add(self)
                # Large frames only while no other stream has bytes to send, so that a small answer (a docker ps
                # beside an export) waits behind one large frame at most, then shares the link frame by frame.
                largest = self.tunnel.send_payload if len(sending) == 1 else TUNNEL_MAX_PAYLOAD
                size = min(len(self._outbound), self._credit, largest)
                with memoryview(self._outbound) as view:
                    frame = tunnel_frame(TUNNEL_DATA, self.id, view[:size])  # the bytes are copied once, here
                del self._outbound[:size]
                self._credit -= size
                self.sent_bytes += size
                self.tunnel.waiting_for_answers.discard(self)
                if not await self.tunnel.send_frame(frame):
                    self.mark_closed("the tunnel closed")
                elif self._outbound:
                    # Let the other streams' frames (a `docker ps` beside an export) go out before this stream's
                    # next one: a send that does not wait would otherwise put a whole window on the wire first.
                    await asyncio.sleep(0)
            elif self._eof_wanted and not self._eof_sent:
                self._eof_sent = True
                await self.tunnel.send(TUNNEL_EOF, self.id)
            else:
                return

    # -- the edge agent's side ----------------------------------------------------------------------------------
    async def accept(self) -> None:
        """Tell the opener the stream is connected (the agent calls this once its engine answered)."""
        await self.tunnel.send(TUNNEL_OPEN, self.id)

    def extra_credit(self) -> bytes:
        """The WINDOW payload that grants the rest of this side's window beyond the initial credit (b"" if none)."""
        extra = self._window - TUNNEL_STREAM_WINDOW
        return extra.to_bytes(4, "big") if extra > 0 else b""


class Tunnel:
    """Streams multiplexed over one WebSocket. The server opens streams with `open_stream`; the edge agent
    hands each stream it is asked to open to `serve_stream`. `run()` reads frames until the WebSocket ends."""

    def __init__(self, ws, serve_stream: Callable[[TunnelStream], Awaitable[None]] | None = None,
                 max_streams: int | None = None, large: bool = False):
        """`large`: grant each stream TUNNEL_LARGE_WINDOW and accept DATA of TUNNEL_LARGE_PAYLOAD (the WebSocket
        must take messages of TUNNEL_MAX_MESSAGE); without it, the protocol's first sizes."""
        self.ws = ws
        self.max_streams = max_streams or TUNNEL_MAX_STREAMS
        self.window = TUNNEL_LARGE_WINDOW if large else TUNNEL_STREAM_WINDOW
        self.accepted_payload = TUNNEL_LARGE_PAYLOAD if large else TUNNEL_MAX_PAYLOAD
        self.send_payload = TUNNEL_MAX_PAYLOAD  # until the other side's LIMITS says it takes more
        self.sending: set[TunnelStream] = set()  # streams with bytes to send and credit to send them
        self.answers_first = serve_stream is not None  # the side streams are opened to (TUNNEL_BULK_BYTES)
        self.waiting_for_answers: set[TunnelStream] = set()  # asked, nothing sent back yet
        self.streams: dict[int, TunnelStream] = {}
        self.closed = False
        self._serve_stream = serve_stream
        self._next_id = 1
        self._opening: dict[int, asyncio.Future] = {}

    async def send(self, kind: int, stream_id: int, payload: bytes = b"") -> bool:
        """Send one frame; False when the tunnel is gone."""
        return await self.send_frame(tunnel_frame(kind, stream_id, payload))

    async def send_frame(self, frame: bytes) -> bool:
        if self.closed or self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(frame)
            return True
        except (ConnectionError, RuntimeError):
            return False

    def send_soon(self, kind: int, stream_id: int, payload: bytes = b"") -> None:
        if not self.closed:
            task = asyncio.ensure_future(self.send(kind, stream_id, payload))
            _BACKGROUND_TASKS.add(task)
            task.add_done_callback(_BACKGROUND_TASKS.discard)

    def forget(self, stream: TunnelStream) -> None:
        self.waiting_for_answers.discard(stream)
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    async def answers_sent(self, timeout: float) -> None:
        """Return once no stream waits for its answer any more (one asked longer than TUNNEL_ANSWER_FIRST_SECONDS
        ago no longer counts: a stream that takes input and answers nothing), or after `timeout`."""
        deadline = time.monotonic() + timeout
        while (now := time.monotonic()) < deadline:
            for stream in [s for s in self.waiting_for_answers if now - s.asked_at >= TUNNEL_ANSWER_FIRST_SECONDS]:
                self.waiting_for_answers.discard(stream)
            if not self.waiting_for_answers:
                return
            await asyncio.sleep(min(0.002, deadline - now))

    async def open_stream(self, target: str = "docker", timeout: float = TUNNEL_OPEN_TIMEOUT) -> TunnelStream:
        """A new stream to the far side's `target`, once the far side says it is connected."""
        if self.closed:
            raise ConnectionResetError("the tunnel is closed")
        if len(self.streams) >= self.max_streams:
            raise ConnectionResetError(f"the tunnel already carries {self.max_streams} streams")
        stream_id = self._next_id
        self._next_id = self._next_id % 0xFFFFFFFF + 1
        stream = TunnelStream(self, stream_id)
        self.streams[stream_id] = stream
        opened = asyncio.get_running_loop().create_future()
        self._opening[stream_id] = opened
        try:
            if not await self.send(TUNNEL_OPEN, stream_id, target.encode()):
                raise ConnectionResetError("the tunnel is closed")
            if credit := stream.extra_credit():
                await self.send(TUNNEL_WINDOW, stream_id, credit)
            await asyncio.wait_for(opened, timeout)
        except BaseException:
            stream.close("not opened")
            raise
        finally:
            self._opening.pop(stream_id, None)
        return stream

    async def run(self) -> None:
        try:
            if self.accepted_payload > TUNNEL_MAX_PAYLOAD:
                await self.send(TUNNEL_LIMITS, 0, self.accepted_payload.to_bytes(4, "big"))
            async for message in self.ws:
                if message.type == aiohttp.WSMsgType.ERROR:
                    edge_log.warning("tunnel closed on error: %s", message.data)
                    break
                if message.type != aiohttp.WSMsgType.BINARY or len(message.data) < TUNNEL_FRAME_HEADER.size:
                    edge_log.warning("tunnel protocol error: unexpected %s message; closing", message.type)
                    break
                kind, stream_id = TUNNEL_FRAME_HEADER.unpack_from(message.data)
                if kind == TUNNEL_DATA:  # appended to the stream's buffer straight from the message: no copy
                    self._dispatch(kind, stream_id, memoryview(message.data)[TUNNEL_FRAME_HEADER.size:])
                else:
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
        elif kind == TUNNEL_LIMITS:
            if stream_id == 0 and len(payload) == 4:
                offered = int.from_bytes(payload, "big")
                self.send_payload = max(TUNNEL_MAX_PAYLOAD, min(offered, TUNNEL_LARGE_PAYLOAD))
        elif kind == TUNNEL_OPEN:
            opened = self._opening.get(stream_id)
            if opened is not None:
                if not opened.done():
                    opened.set_result(None)
            elif self._serve_stream is not None and stream is None:
                if len(self.streams) >= self.max_streams:
                    self.send_soon(TUNNEL_CLOSE, stream_id, b"too many streams")
                    return
                stream = self.streams[stream_id] = TunnelStream(self, stream_id)
                stream.target = payload.decode(errors="replace") or "docker"
                if credit := stream.extra_credit():
                    self.send_soon(TUNNEL_WINDOW, stream_id, credit)
                task = asyncio.ensure_future(self._serve_stream(stream))
                _BACKGROUND_TASKS.add(task)
                task.add_done_callback(_BACKGROUND_TASKS.discard)


# Server-to-server relay: a server that does not hold an edge environment's tunnel reaches it through the server that
# does. It opens one WebSocket (mutually authenticated TLS, both sides' certificates issued by the fleet's CA) to
# that server's relay listener at RELAY_PATH and runs a Tunnel over it; each stream it opens there names the
# environment and the target (relay_target), and the holding server joins it to a stream of the edge tunnel.
RELAY_PATH = "/relay"
RELAY_HEARTBEAT = 5.0
RELAY_MAX_STREAMS = 65536  # one link carries the streams of every environment whose tunnel the other server holds


def relay_target(endpoint_id: int, target: str) -> str:
    return f"{endpoint_id} {target}"


def parse_relay_target(text: str) -> tuple[int, str] | None:
    """(environment id, target) from a relayed stream's target; None when it is not one."""
    number, _, target = text.partition(" ")
    if not number.isdigit() or not target or len(text) > 200:
        return None
    return int(number), target


async def _copy_tunnel_stream(source: TunnelStream, destination: TunnelStream) -> None:
    """Bytes from one stream to the other, flow-controlled (the next read waits until the last write drained); an
    end of data is passed on as an end of data, a closed stream closes the other."""
    try:
        while data := await source.read(TUNNEL_LARGE_PAYLOAD):
            destination.write(data)
            await destination.drain()
        if source.closed:
            destination.close(source.close_reason or "closed")
        else:
            destination.write_eof()
            await destination.drain()
    except ConnectionError:
        source.close(destination.close_reason or "closed")


async def join_tunnel_streams(first: TunnelStream, second: TunnelStream) -> None:
    """Pipe two tunnel streams into each other until both directions ended, or either side closed."""
    try:
        await asyncio.gather(_copy_tunnel_stream(first, second), _copy_tunnel_stream(second, first))
    finally:
        first.close("done")
        second.close("done")


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


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def running_agent_file() -> str:
    return os.path.abspath(__file__)


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@dataclasses.dataclass
class EdgeSettings:
    key: EdgeKey
    edge_id: str
    docker_url: str = "unix:///var/run/docker.sock"
    heartbeat: float = 20.0  # with the pong wait of heartbeat/2, a dead link is seen within 30 s
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    connect_timeout: float = 10.0
    # What a device onboarding with the fleet's key announces; the server keeps the tags and groups that exist.
    name: str = ""
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    data_dir: str = ""  # the device key it was given, the server key it pinned, an update under way
    update_timeout: float = 60.0  # a new agent.py that has not reconnected by then is rolled back
    projects_dir: str = default_projects_directory("")  # the stacks' project files the server writes here

    @classmethod
    def from_environment(cls, env=os.environ) -> "EdgeSettings":
        """EDGE_KEY, EDGE_ID, DOCKER_HOST, EDGE_HEARTBEAT, EDGE_BACKOFF_INITIAL, EDGE_BACKOFF_MAX, EDGE_NAME,
        EDGE_TAGS, EDGE_GROUPS (comma-separated), EDGE_DATA, EDGE_UPDATE_TIMEOUT, AGENT_PROJECTS_DIR (where the
        stacks' project files are kept; default /var/lib/portainer-agent/projects)."""
        if not env.get("EDGE_KEY") or not env.get("EDGE_ID"):
            raise ValueError("edge mode needs EDGE_KEY (from the server) and EDGE_ID (e.g. $(cat /etc/machine-id))")
        return cls(EdgeKey.decode(env["EDGE_KEY"]), env["EDGE_ID"].strip(),
                   env.get("DOCKER_HOST") or cls.docker_url,
                   float(env.get("EDGE_HEARTBEAT", cls.heartbeat)),
                   float(env.get("EDGE_BACKOFF_INITIAL", cls.backoff_initial)),
                   float(env.get("EDGE_BACKOFF_MAX", cls.backoff_max)),
                   name=env.get("EDGE_NAME", "").strip() or socket.gethostname(),
                   tags=comma_list(env.get("EDGE_TAGS", "")), groups=comma_list(env.get("EDGE_GROUPS", "")),
                   data_dir=env.get("EDGE_DATA") or os.path.join(os.path.dirname(running_agent_file()), "edge-data"),
                   update_timeout=float(env.get("EDGE_UPDATE_TIMEOUT", cls.update_timeout)),
                   projects_dir=env.get("AGENT_PROJECTS_DIR") or cls.projects_dir)


class EdgeState:
    """What an edge agent keeps between runs, in EDGE_DATA/state.json (owner-readable only): the device key the
    server gave it when it onboarded with the fleet's key, and how its latest self-update went."""

    def __init__(self, directory: str | None):
        """directory None: kept in memory only (a fleet simulator's many agents)."""
        self.path = os.path.join(directory, "state.json") if directory else None
        self.values: dict = {}
        if self.path:
            with contextlib.suppress(FileNotFoundError, ValueError):
                with open(self.path) as f:
                    loaded = json.load(f)
                self.values = loaded if isinstance(loaded, dict) else {}

    def save(self) -> None:
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        write_private_file(self.path, json.dumps(self.values).encode())

    def set(self, **values) -> None:
        self.values.update(values)
        self.values = {k: v for k, v in self.values.items() if v is not None}
        self.save()


class EdgeOnboardingRefused(Exception):
    """The server refused to onboard this device (rotated key, rejected device, Edge ID taken)."""


async def onboard_with_global_key(session: aiohttp.ClientSession, settings: EdgeSettings, state: EdgeState,
                                  pin: aiohttp.Fingerprint) -> EdgeKey:
    """Portainer's POST /api/endpoints/global-key: the server makes (or finds) this device's environment and
    answers with its own key, kept in the state file so that a rotated fleet key does not cut the device off."""
    body = {"Name": settings.name, "TagNames": list(settings.tags), "EdgeGroupNames": list(settings.groups),
            "AgentVersion": AGENT_VERSION}
    headers = {EDGE_SECRET_HEADER: settings.key.secret, EDGE_ID_HEADER: settings.edge_id}
    async with session.post(settings.key.server_url.rstrip("/") + EDGE_GLOBAL_KEY_PATH, json=body,
                            headers=headers, ssl=pin) as response:
        raw = await response.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {}
    if response.status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("EdgeKey"), str):
        message = answer.get("message", "") if isinstance(answer, dict) else ""
        raise EdgeOnboardingRefused(f"{response.status} {message or raw[:200].decode(errors='replace')}")
    device_key = EdgeKey.decode(answer["EdgeKey"])
    if settings.data_dir and isinstance(answer.get("SigningKey"), str) and \
            not os.path.exists(server_key_path(settings)):
        os.makedirs(settings.data_dir, mode=0o700, exist_ok=True)
        write_private_file(server_key_path(settings), answer["SigningKey"].encode())
    state.set(device_key=answer["EdgeKey"])
    edge_log.info("onboarded as environment %s%s", device_key.endpoint_id,
                  "" if answer.get("UserTrusted") else ": waiting for an administrator's approval")
    return device_key


def server_key_path(settings: EdgeSettings) -> str:
    """The server's signing key, pinned at onboarding (or at the first update): updates must carry its signature."""
    return os.path.join(settings.data_dir, "server-signing-key")


class EdgeSelfUpdate:
    """Replace this agent.py with the one the server sends through the tunnel, checked against the digest the
    server signed; restart as the new one, with a watchdog (the old file, run apart) that puts the old file back
    and restarts it when the new agent has not reconnected in time."""

    def __init__(self, settings: EdgeSettings, state: EdgeState):
        self.settings = settings
        self.state = state

    async def receive(self, stream: TunnelStream) -> None:
        await stream.accept()
        try:
            os.makedirs(self.settings.data_dir, mode=0o700, exist_ok=True)
            header = json.loads(await stream.readline())
            if not isinstance(header, dict):
                raise ValueError("the update header is not a JSON object")
            size = int(header["Size"])
            if not 0 < size <= MAX_AGENT_FILE:
                raise ValueError(f"an agent.py of {size} bytes is refused")
            data = bytearray()
            while len(data) < size:
                chunk = await stream.read(min(STREAM_CHUNK, size - len(data)))
                if not chunk:
                    raise ValueError("the offered agent.py ended early")
                data += chunk
            self.check(header, bytes(data))
            new, previous = self.prepare(bytes(data))
        except (ValueError, KeyError, TypeError, OSError, AgentAuthError, asyncio.LimitOverrunError) as exc:
            edge_log.error("update refused: %s", exc)
            await self.answer(stream, {"Accepted": False, "Reason": str(exc)[:300]})
            return
        await self.answer(stream, {"Accepted": True})
        self.switch(header, new, previous)

    @staticmethod
    async def answer(stream: TunnelStream, answer: dict) -> None:
        stream.write(json.dumps(answer).encode() + b"\n")
        stream.write_eof()
        with contextlib.suppress(ConnectionError):
            await stream.drain()

    def check(self, header: dict, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(digest, str(header["Digest"])):
            raise ValueError("the offered agent.py does not match its digest")
        signature = header["Signature"]
        if not isinstance(signature, dict):
            raise ValueError("the update carries no signature")
        verifier = RequestVerifier(pin_path=server_key_path(self.settings))
        verifier.verify("PUT", agent_update_target(digest, str(header["Version"])), signature)

    def prepare(self, data: bytes) -> tuple[str, str]:
        """Keep a copy of the running file and write the new one beside it (so a full or read-only disk is
        refused before the server is told yes)."""
        path = running_agent_file()
        previous = os.path.join(self.settings.data_dir, "agent.py.previous")
        shutil.copy2(path, previous)
        new = path + ".new"
        with open(new, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(new, os.stat(path).st_mode & 0o7777)
        return new, previous

    def switch(self, header: dict, new: str, previous: str) -> None:
        """Put the new file in place atomically, start the watchdog, become the new agent."""
        path = running_agent_file()
        timeout = float(header.get("RollbackTimeout") or self.settings.update_timeout)
        self.state.set(update={"Version": header["Version"], "Digest": header["Digest"], "Path": path,
                               "Previous": previous, "Deadline": time.time() + timeout, "Timeout": timeout,
                               "Pid": os.getpid()}, update_report=None)
        os.replace(new, path)
        subprocess.Popen([sys.executable, previous], env={**os.environ, EDGE_WATCHDOG_ENV: "1"})
        edge_log.warning("agent.py replaced by version %s; restarting", header["Version"])
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.execv(sys.executable, [sys.executable, path, *sys.argv[1:]])


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def watch_update() -> int:
    """The watchdog (the old agent.py, run beside the new one): when the update is not confirmed by its deadline,
    put the old file back, stop the new agent, and become the old agent, which reports the rollback."""
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s watchdog: %(message)s")
    settings = EdgeSettings.from_environment()
    update = EdgeState(settings.data_dir).values.get("update")
    while update and time.time() < update["Deadline"]:
        time.sleep(0.5)
        update = EdgeState(settings.data_dir).values.get("update")
    if not update:
        return 0
    edge_log.error("the new agent (version %s) did not reconnect within %s s: rolling back", update["Version"],
                   update["Timeout"])
    with open(update["Previous"], "rb") as f:
        old = f.read()
    write_private_file(update["Path"] + ".rollback", old)
    os.chmod(update["Path"] + ".rollback", 0o755)
    os.replace(update["Path"] + ".rollback", update["Path"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(update["Pid"], signal.SIGTERM)
        for _ in range(30):
            if not process_alive(update["Pid"]):
                break
            time.sleep(0.1)
        else:
            os.kill(update["Pid"], signal.SIGKILL)
    EdgeState(settings.data_dir).set(update=None, update_report={
        "Status": "rolled back", "Digest": update["Digest"], "Version": update["Version"],
        "Reason": f"the new agent did not reconnect within {update['Timeout']:g} s"})
    env = {k: v for k, v in os.environ.items() if k != EDGE_WATCHDOG_ENV}
    os.execve(sys.executable, [sys.executable, update["Path"]], env)
    return 1


async def serve_edge_agent_stream(stream: TunnelStream, settings: EdgeSettings, state: EdgeState,
                                  targets: dict[str, str]) -> None:
    """A stream the server opened: to the Docker engine, to this host's project files, or an update of this
    agent."""
    if stream.target == AGENT_UPDATE_TARGET:
        await EdgeSelfUpdate(settings, state).receive(stream)
    else:
        await serve_edge_stream(stream, targets.get(stream.target))


def tunnel_headers(settings: EdgeSettings, key: EdgeKey, state: EdgeState) -> dict:
    headers = {EDGE_ENDPOINT_HEADER: str(key.endpoint_id), EDGE_SECRET_HEADER: key.secret,
               EDGE_ID_HEADER: settings.edge_id, EDGE_VERSION_HEADER: AGENT_VERSION,
               EDGE_DIGEST_HEADER: file_digest(running_agent_file())}
    if state.values.get("update_report"):
        headers[EDGE_UPDATE_HEADER] = json.dumps(state.values["update_report"])
    return headers


def reconnect_delay(attempt: int, initial: float, cap: float) -> float:
    """Capped exponential backoff with full jitter, so a fleet cut off at once does not return at once."""
    return random.uniform(initial / 2, min(cap, initial * 2 ** min(attempt, 30)))


class EnginePipe(FlowControlledWrites, asyncio.BufferedProtocol):
    """An edge agent's connection to its engine for one tunnel stream. What the engine sends is read into one
    buffer and handed straight to the stream (no reader buffer to copy through, no allocation per read); reading
    pauses while the stream holds RELAY_PIECE or more unsent (its credit is spent) and resumes once that went out.
    What the stream brings is written to the engine with `write`, which waits while the socket is full."""

    def __init__(self, stream: TunnelStream):
        super().__init__()
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.engine_done = asyncio.get_running_loop().create_future()  # the engine said all or went away
        self._buffer = bytearray(RELAY_PIECE)
        self._reading_paused = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.stream.write(memoryview(self._buffer)[:nbytes])  # copied once, into the stream's unsent bytes
        if self.stream.unsent >= RELAY_PIECE and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
            task = asyncio.ensure_future(self._resume_once_sent())
            _BACKGROUND_TASKS.add(task)
            task.add_done_callback(_BACKGROUND_TASKS.discard)

    async def _resume_once_sent(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.stream.drain()
            self._reading_paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        self._ended()
        # The engine is done sending; what the stream still brings may be written (not over TLS, which cannot
        # half-close: there the transport closes, as asyncio's own StreamReaderProtocol does).
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._ended()

    def _ended(self) -> None:
        if not self.engine_done.done():
            self.engine_done.set_result(None)

    async def write(self, data: bytes) -> None:
        if self.transport.is_closing():
            raise ConnectionResetError("the engine closed the connection")
        await super().write(data)


async def _pipe_stream_to_engine(stream: TunnelStream, engine: EnginePipe) -> None:
    while data := await stream.read(STREAM_CHUNK):
        await engine.write(data)
    if not stream.closed and engine.transport.can_write_eof() and not engine.transport.is_closing():
        engine.transport.write_eof()


async def _pipe_engine_to_stream(engine: EnginePipe, stream: TunnelStream) -> None:
    await engine.engine_done
    stream.write_eof()
    await stream.drain()


@contextlib.asynccontextmanager
async def serve_edge_projects(projects_dir: str):
    """The project-file routes of an edge agent, on a unix socket in a private directory: the tunnel (authenticated
    both ways) is their only way in, so they check no signature. Yields the socket's URL."""
    socket_dir = tempfile.mkdtemp(prefix="portainer-edge-")
    os.chmod(socket_dir, 0o700)
    app = web.Application(middlewares=[agent_error_middleware])
    ProjectFiles(projects_dir).add_routes(app, lambda request: None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = os.path.join(socket_dir, "projects.sock")
    try:
        await web.UnixSite(runner, path).start()
        yield f"unix://{path}"
    finally:
        await runner.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def serve_edge_stream(stream: TunnelStream, docker_url: str | None) -> None:
    """Connect one tunnel stream to the local engine (or the other local service it asked for) and pipe raw bytes
    both ways until both ends are done."""
    if docker_url is None:
        stream.close(f"this edge agent serves no {stream.target!r}")
        return
    try:
        transport, engine = await connect_docker(docker_url, lambda: EnginePipe(stream))
    except DockerUnreachable as exc:
        stream.close(str(exc))
        return
    await stream.accept()
    upstream = asyncio.ensure_future(_pipe_stream_to_engine(stream, engine))
    downstream = asyncio.ensure_future(_pipe_engine_to_stream(engine, stream))
    closed = asyncio.ensure_future(stream.wait_closed())
    try:
        # Done when the engine has said everything, or when the server closed the stream (a pooled keep-alive
        # connection it let go): the engine would keep that socket open for ever.
        await asyncio.wait([downstream, closed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (upstream, downstream, closed):
            task.cancel()
        await asyncio.gather(upstream, downstream, closed, return_exceptions=True)
        transport.close()
        stream.close("done")


async def run_edge_agent(settings: EdgeSettings) -> None:
    """Keep one tunnel to the server up for ever, pinned to the certificate named in the edge key. With the
    fleet's onboarding key the agent first gets a key of its own (POST /api/endpoints/global-key)."""
    pin = aiohttp.Fingerprint(bytes.fromhex(settings.key.fingerprint))
    timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout,
                                    sock_connect=settings.connect_timeout)
    state = EdgeState(settings.data_dir)
    onboarding = settings.key.endpoint_id == GLOBAL_KEY_ENDPOINT
    if onboarding or state.values:
        state.set(pid=os.getpid())  # which process is the agent now, after an update or a rollback
    attempt = 0
    async with serve_edge_projects(settings.projects_dir) as projects_url, \
            aiohttp.ClientSession(timeout=timeout) as session:
        # What a tunnel stream may reach: the engine, or this host's project files (the server writes them).
        targets = {"docker": settings.docker_url, "projects": projects_url}
        while True:
            try:
                key = settings.key
                if onboarding:
                    saved = state.values.get("device_key")
                    key = EdgeKey.decode(saved) if saved else await onboard_with_global_key(session, settings,
                                                                                            state, pin)
                url = key.server_url.rstrip("/") + EDGE_TUNNEL_PATH
                async with session.ws_connect(url, headers=tunnel_headers(settings, key, state), ssl=pin,
                                              heartbeat=settings.heartbeat,
                                              receive_timeout=tunnel_receive_timeout(settings.heartbeat),
                                              max_msg_size=TUNNEL_MAX_MESSAGE, compress=0,
                                              **CLIENT_WS_CLOSE_TIMEOUT) as ws:
                    edge_log.info("edge tunnel to %s is up (environment %s)", key.server_url, key.endpoint_id)
                    if state.values.get("update"):
                        edge_log.info("update to version %s confirmed", state.values["update"]["Version"])
                    if state.values.get("update") or state.values.get("update_report"):
                        state.set(update=None, update_report=None)  # the server has the report in our headers
                    opened = time.monotonic()
                    await Tunnel(ws, lambda stream: serve_edge_agent_stream(stream, settings, state, targets),
                                 large=True).run()
                    edge_log.warning("edge tunnel closed (code %s); reconnecting", ws.close_code)
                    # Only a tunnel that held resets the backoff: one closed at once (a server replacing it
                    # again and again) must not become a tight reconnect loop.
                    if time.monotonic() - opened >= EDGE_STABLE_TUNNEL:
                        attempt = 0
            except aiohttp.ServerFingerprintMismatch:
                edge_log.error("refusing the server at %s: its TLS certificate does not match the edge key",
                               settings.key.server_url)
            except EdgeOnboardingRefused as exc:
                edge_log.error("the server refused to onboard this device (%s)", exc)
            except aiohttp.WSServerHandshakeError as exc:
                edge_log.error("the server refused this edge agent (%s %s)", exc.status, exc.message)
                if onboarding and exc.status == 401:
                    state.set(device_key=None)  # the environment is gone: onboard again (a removed one is refused)
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
        run_event_loop(run_edge_agent(settings))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Main: the agent, or with EDGE=1 the edge agent
# ----------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return_freed_memory()
    if os.environ.get(EDGE_WATCHDOG_ENV) == "1":
        return watch_update()
    if str(os.environ.get("EDGE", "")).lower() in ("1", "true", "yes", "on"):
        return edge_main()
    config = build_agent_parser().parse_args(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_event_loop(serve_agent(config))
    except OSError as exc:
        print(f"agent.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
