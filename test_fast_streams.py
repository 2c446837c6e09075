"""What comes back from an engine: its stdout/stderr stream format, and how long a proxied call may take to answer.

Fast unit tests (`make test-fast`): the real demultiplex (console), demultiplex_docker_log (edge job output),
answer_head_timeout (Docker proxy) and the relay's reading of a chunked engine answer (agent.DockerResponse).
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import ssl

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

import agent
import portainer

STDOUT, STDERR = 1, 2


def docker_frame(stream: int, payload: bytes) -> bytes:
    """One frame of Docker's multiplexed stream: stream type, three zero bytes, big-endian size, payload."""
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


# ---- the console: frames arrive in whatever pieces the socket gives ----------------------------------------------

def test_the_console_shows_stdout_and_stderr_in_the_order_they_were_written():
    buffer = bytearray(docker_frame(STDOUT, b"$ ls\n") + docker_frame(STDERR, b"ls: denied\n")
                       + docker_frame(STDOUT, b"done\n"))
    assert portainer.demultiplex(buffer) == b"$ ls\nls: denied\ndone\n"
    assert buffer == bytearray()


def test_a_frame_split_across_reads_is_shown_once_it_is_complete():
    whole = docker_frame(STDOUT, b"hello world")
    buffer = bytearray(whole[:5])
    assert portainer.demultiplex(buffer) == b"" and buffer == whole[:5]
    buffer += whole[5:12]
    assert portainer.demultiplex(buffer) == b""
    buffer += whole[12:] + docker_frame(STDERR, b"!")[:3]
    assert portainer.demultiplex(buffer) == b"hello world"
    assert buffer == docker_frame(STDERR, b"!")[:3]


def test_an_empty_frame_is_skipped():
    buffer = bytearray(docker_frame(STDOUT, b"") + docker_frame(STDOUT, b"x"))
    assert portainer.demultiplex(buffer) == b"x"


@settings(deadline=None)  # a shared 2-core machine: a slow example is not a failure
@given(payloads=st.lists(st.binary(max_size=300), max_size=8), cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_however_the_stream_is_cut_the_console_shows_exactly_what_was_written(payloads, cuts):
    stream = b"".join(docker_frame(STDOUT if i % 2 else STDERR, p) for i, p in enumerate(payloads))
    points = sorted({min(c, len(stream)) for c in cuts} | {len(stream)})
    buffer, shown, start = bytearray(), b"", 0
    for point in points:
        buffer += stream[start:point]
        start = point
        shown += portainer.demultiplex(buffer)
    assert shown == b"".join(payloads) and buffer == bytearray()


# ---- edge job output: a whole log, framed when the container had no TTY ----------------------------------------

def test_an_edge_job_log_is_shown_without_frame_headers():
    raw = docker_frame(STDOUT, b"backup started\n") + docker_frame(STDERR, "écrit\n".encode())
    assert portainer.demultiplex_docker_log(raw) == "backup started\nécrit\n"


def test_an_edge_job_log_from_a_tty_is_shown_as_it_is():
    assert portainer.demultiplex_docker_log(b"plain output\r\n") == "plain output\r\n"
    assert portainer.demultiplex_docker_log(b"") == ""


def test_an_edge_job_log_that_only_looks_framed_at_first_is_shown_as_it_is():
    raw = docker_frame(STDOUT, b"ok\n") + b"trailing text that is no frame"
    assert portainer.demultiplex_docker_log(raw) == raw.decode()


def test_invalid_utf8_in_an_edge_job_log_is_replaced_not_fatal():
    assert portainer.demultiplex_docker_log(docker_frame(STDOUT, b"bad \xff byte")) == "bad \ufffd byte"


# ---- how long the engine may take to start answering a proxied call ---------------------------------------------

def test_an_ordinary_call_gets_the_configured_proxy_timeout():
    for path in ("/containers/json", "/containers/abc/kill", "/images/create", "/containers/abc/logs"):
        assert portainer.answer_head_timeout(60, path, {}, streamed_body=False) == 60


def test_stopping_a_container_waits_its_grace_period_on_top():
    assert portainer.answer_head_timeout(60, "/containers/abc/stop", {"t": "30"}, False) == 90
    assert portainer.answer_head_timeout(60, "/v1.41/containers/abc/restart", {}, False) == 70
    assert portainer.answer_head_timeout(5, "/containers/abc/stop", {"t": "soon"}, False) == 15


def test_an_upload_gets_longer_because_the_engine_answers_once_it_has_read_it_all():
    assert portainer.answer_head_timeout(60, "/build", {}, streamed_body=True) == 1800
    assert portainer.answer_head_timeout(2, "/images/load", {}, streamed_body=True) == 60


@pytest.mark.parametrize("path", ["/containers/stop", "/containers/abc/stop/x", "/containers/abc/stopped"])
def test_only_a_container_stop_or_restart_gets_the_grace_period(path):
    assert portainer.answer_head_timeout(60, path, {"t": "100"}, False) == 60


# ---- connecting to an engine by name ------------------------------------------------------------------------------

@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_a_connection_given_up_while_the_name_resolves_leaves_no_error_in_the_log(loop_name):
    """The proxy's timeout (or a client that went away) cancels the connection to a tcp:// engine whose host name
    does not resolve; uvloop's create_connection alone would log 'Future exception was never retrieved'."""
    new_loop = asyncio.new_event_loop if loop_name == "asyncio" else pytest.importorskip("uvloop").new_event_loop
    unhandled = []

    async def scenario():
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: unhandled.append(context))
        for host in ("engine-that-does-not-resolve.invalid", "another-missing-engine.invalid"):
            with pytest.raises((agent.DockerUnreachable, asyncio.TimeoutError)):
                await asyncio.wait_for(agent.open_docker_stream(f"tcp://{host}:2375"), 0.0001)
            with pytest.raises(agent.DockerUnreachable, match="cannot connect to tcp://"):
                await agent.open_docker_stream(f"tcp://{host}:2375")
        await asyncio.sleep(0.5)  # the resolutions given up on end meanwhile
        gc.collect()  # an unretrieved exception is reported when its future is collected
        await asyncio.sleep(0.05)

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(scenario())
    assert [context["message"] for context in unhandled] == []


# ---- the relay: a chunked engine answer, read from a real asyncio StreamReader ------------------------------------

def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n" % len(part) + part + b"\r\n" for part in parts) + b"0\r\n\r\n"


def chunked_answer() -> tuple[asyncio.StreamReader, agent.DockerResponse]:
    reader = asyncio.StreamReader(limit=agent.DOCKER_READ_BUFFER)
    headers = CIMultiDict({"Transfer-Encoding": "chunked"})
    return reader, agent.DockerResponse(agent.HttpConnection(reader, None), "GET", 200, "OK", headers,
                                        lambda connection, reusable: None)


def test_an_export_in_32_kb_chunks_is_relayed_in_fewer_larger_pieces_byte_for_byte():
    parts = [bytes([i]) * 32 * 1024 for i in range(20)]

    async def scenario():
        reader, answer = chunked_answer()
        reader.feed_data(chunked(*parts))
        reader.feed_eof()
        return [piece async for piece in answer.iter_chunks()]

    pieces = asyncio.run(scenario())
    assert b"".join(pieces) == b"".join(parts)
    assert len(pieces) < len(parts) and max(map(len, pieces)) <= agent.RELAY_PIECE


def test_a_log_line_is_relayed_at_once_without_waiting_for_the_next():
    async def scenario():
        reader, answer = chunked_answer()
        pieces = answer.iter_chunks()
        reader.feed_data(b"6\r\nline 1\r\n")
        assert await asyncio.wait_for(pieces.__anext__(), 2) == b"line 1"
        reader.feed_data(b"b\r\nline 2 par")  # a chunk the engine has not finished sending
        assert await asyncio.wait_for(pieces.__anext__(), 2) == b"line 2 par"
        reader.feed_data(b"t\r\n0\r\n\r\n")
        assert [piece async for piece in pieces] == [b"t"]
    asyncio.run(scenario())


@settings(deadline=None)
@given(parts=st.lists(st.binary(min_size=1, max_size=5000), max_size=12), cuts=st.lists(st.integers(0, 70000),
                                                                                           max_size=12))
def test_however_a_chunked_answer_is_cut_the_relay_hands_on_exactly_its_body(parts, cuts):
    wire = chunked(*parts)
    points = sorted({min(c, len(wire)) for c in cuts} | {len(wire)})

    async def scenario():
        reader, answer = chunked_answer()

        async def feed():
            start = 0
            for point in points:
                reader.feed_data(wire[start:point])
                start = point
                await asyncio.sleep(0)
            reader.feed_eof()

        feeding = asyncio.ensure_future(feed())
        body = b"".join([piece async for piece in answer.iter_chunks()])
        await feeding
        return body

    assert asyncio.run(scenario()) == b"".join(parts)


# ---- the server's HTTPS listener: edge tunnels by the thousand, exports through some of them -----------------------

@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_an_https_upload_arrives_whole_and_its_connection_then_holds_one_tls_record_of_read_buffer(loop_name, tmp_path):
    """Each edge tunnel is one HTTPS connection the server holds for as long as the agent runs: a quiet one keeps a
    16 KiB read buffer (the loops' own TLS keeps 256 KiB each: 2.5 GB for 10,000 tunnels), one carrying an export
    reads 256 KiB at a time."""
    new_loop = asyncio.new_event_loop if loop_name == "asyncio" else pytest.importorskip("uvloop").new_event_loop
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB
    seen: dict[str, tuple] = {}

    async def upload(request: web.Request) -> web.Response:
        received = await request.read()
        tls = request.transport._ssl_protocol  # the connection's ListenerTLS
        seen["upload"] = (len(received), hashlib.sha256(received).hexdigest(), tls.max_size)
        return web.Response(text="stored")

    async def quiet(request: web.Request) -> web.Response:
        tls = request.transport._ssl_protocol
        seen["quiet"] = (tls.max_size, len(tls._ssl_buffer), tls)
        return web.Response(text="fine")

    async def scenario():
        cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
        agent.create_self_signed_certificate(cert, key, "localhost")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/upload", upload)
        app.router.add_get("/quiet", quiet)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = portainer.ListenerTLSSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, ssl=False)) as session:
                async with session.post(f"https://127.0.0.1:{port}/upload", data=body) as answer:
                    assert (answer.status, await answer.text()) == (200, "stored")
                async with session.get(f"https://127.0.0.1:{port}/quiet") as answer:
                    assert (answer.status, await answer.text()) == (200, "fine")
        finally:
            await runner.cleanup()

    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(scenario())
    assert seen["upload"] == (len(body), hashlib.sha256(body).hexdigest(), portainer.TLS_BULK_READ_BUFFER)
    assert seen["quiet"][:2] == (portainer.TLS_READ_BUFFER, portainer.TLS_READ_BUFFER)
    assert isinstance(seen["quiet"][2], portainer.ListenerTLS)
