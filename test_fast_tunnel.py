"""The edge tunnel: many byte streams over one WebSocket between the server and an edge agent, and the edge key.

Fast unit tests (`make test-fast`): the real Tunnel and TunnelStream of agent.py over a real WebSocket pair on
loopback, in one process. Some tests put a raw WebSocket on one side to see the frames on the wire.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

import agent

OPEN, DATA, WINDOW, EOF, CLOSE, LIMITS = agent.TUNNEL_OPEN, agent.TUNNEL_DATA, agent.TUNNEL_WINDOW, \
    agent.TUNNEL_EOF, agent.TUNNEL_CLOSE, agent.TUNNEL_LIMITS
LARGE_PAYLOAD, LARGE_WINDOW = agent.TUNNEL_LARGE_PAYLOAD, agent.TUNNEL_LARGE_WINDOW


def run(coroutine, timeout: float = 20):
    async def bounded():
        return await asyncio.wait_for(coroutine, timeout)
    return asyncio.run(bounded())


def frame(kind: int, stream_id: int, payload: bytes = b"") -> bytes:
    return agent.TUNNEL_FRAME_HEADER.pack(kind, stream_id) + payload


async def next_frame(ws) -> tuple[int, int, bytes]:
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    kind, stream_id = agent.TUNNEL_FRAME_HEADER.unpack_from(message.data)
    return kind, stream_id, message.data[agent.TUNNEL_FRAME_HEADER.size:]


@contextlib.asynccontextmanager
async def websocket_pair():
    """(server side, agent side): a WebSocket accepted by an aiohttp server on loopback and its client."""
    accepted = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def handle_tunnel(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=agent.TUNNEL_MAX_MESSAGE, compress=False)
        await ws.prepare(request)
        accepted.set_result(ws)
        await finished.wait()
        return ws

    app = web.Application()
    app.router.add_get("/tunnel", handle_tunnel)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        client = await session.ws_connect(server.make_url("/tunnel"), max_msg_size=agent.TUNNEL_MAX_MESSAGE,
                                          compress=0)
        yield await accepted, client
        await client.close()
    finally:
        finished.set()
        await session.close()
        await server.close()


@contextlib.asynccontextmanager
async def running(pair, *tunnels: agent.Tunnel):
    """Tunnels reading their WebSocket of `pair` until the end, when both sides close at once (a side nobody
    reads would never answer a close from the other)."""
    tasks = [asyncio.ensure_future(tunnel.run()) for tunnel in tunnels]
    try:
        yield tasks
    finally:
        await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in pair)), 5)
        await asyncio.wait(tasks, timeout=5)
        for task in tasks:
            task.cancel()


@contextlib.asynccontextmanager
async def tunnel_pair(serve_stream, large: bool = False):
    """The server's Tunnel and the edge agent's Tunnel (which hands each opened stream to serve_stream)."""
    async with websocket_pair() as pair:
        server, edge = agent.Tunnel(pair[0], large=large), agent.Tunnel(pair[1], serve_stream, large=large)
        async with running(pair, server, edge):
            yield server, edge


async def read_all(stream: agent.TunnelStream) -> bytes:
    received = bytearray()
    while data := await stream.read():
        received += data
    return bytes(received)


async def serve_by_command(stream: agent.TunnelStream) -> None:
    """A stand-in engine: 'echo' answers the rest of the stream upper-cased; 'flood N' writes N bytes."""
    await stream.accept()
    command = (await stream.readline()).decode().split()
    if command[0] == "echo":
        while data := await stream.read():
            stream.write(data.upper())
            await stream.drain()
    elif command[0] == "flood":
        size = int(command[1])
        while size > 0:
            chunk = min(size, 100_000)
            stream.write(b"f" * chunk)
            await stream.drain()
            size -= chunk
    elif command[0] == "refuse":
        stream.close("cannot reach the engine")
        return
    stream.write_eof()
    await stream.drain()


# ---- the wire format ---------------------------------------------------------------------------------------------

def test_a_frame_is_kind_then_big_endian_stream_id_then_payload():
    assert frame(OPEN, 7, b"docker") == b"\x01\x00\x00\x00\x07docker"
    assert frame(CLOSE, 0x01020304, b"gone") == b"\x05\x01\x02\x03\x04gone"
    assert agent.TUNNEL_FRAME_HEADER.size == 5
    assert agent.TUNNEL_MAX_MESSAGE > agent.TUNNEL_LARGE_PAYLOAD + agent.TUNNEL_FRAME_HEADER.size


def test_the_edge_agent_accepts_a_stream_and_answers_on_it_frame_by_frame():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, serve_by_command)):
            await server_ws.send_bytes(frame(OPEN, 7, b"docker"))
            assert await next_frame(server_ws) == (OPEN, 7, b"")
            await server_ws.send_bytes(frame(DATA, 7, b"echo\nping"))
            assert await next_frame(server_ws) == (DATA, 7, b"PING")
            await server_ws.send_bytes(frame(EOF, 7))
            assert await next_frame(server_ws) == (EOF, 7, b"")
    run(scenario())


def test_the_server_sends_no_more_than_the_window_until_the_agent_gives_credit_back():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws)
            async with running((server_ws, agent_ws), server):
                opening = asyncio.ensure_future(server.open_stream("docker"))
                assert await next_frame(agent_ws) == (OPEN, 1, b"docker")
                await agent_ws.send_bytes(frame(OPEN, 1))
                stream = await opening
                stream.write(b"x" * (agent.TUNNEL_STREAM_WINDOW + 100_000))
                received = 0
                while received < agent.TUNNEL_STREAM_WINDOW:
                    kind, stream_id, payload = await next_frame(agent_ws)
                    assert (kind, stream_id) == (DATA, 1) and len(payload) <= agent.TUNNEL_MAX_PAYLOAD
                    received += len(payload)
                assert received == agent.TUNNEL_STREAM_WINDOW
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(agent_ws.receive(), 0.3)
                await agent_ws.send_bytes(frame(WINDOW, 1, (60_000).to_bytes(4, "big")))
                kind, _, payload = await next_frame(agent_ws)
                assert kind == DATA and len(payload) == 60_000
    run(scenario())


def test_a_reader_gives_credit_back_once_it_has_consumed_a_quarter_window():
    async def scenario():
        consumed = asyncio.get_running_loop().create_future()

        async def read_slowly(stream):
            await stream.accept()
            data = await stream.read(agent.TUNNEL_STREAM_WINDOW // 4)
            consumed.set_result(len(data))

        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, read_slowly)):
            await server_ws.send_bytes(frame(OPEN, 3, b"docker"))
            assert (await next_frame(server_ws))[0] == OPEN
            await server_ws.send_bytes(frame(DATA, 3, b"a" * agent.TUNNEL_MAX_PAYLOAD))
            await server_ws.send_bytes(frame(DATA, 3, b"b" * agent.TUNNEL_MAX_PAYLOAD))
            assert await consumed == agent.TUNNEL_STREAM_WINDOW // 4
            kind, stream_id, payload = await next_frame(server_ws)
            assert (kind, stream_id) == (WINDOW, 3)
            assert int.from_bytes(payload, "big") == agent.TUNNEL_STREAM_WINDOW // 4
    run(scenario())


def test_a_sender_that_ignores_the_window_gets_its_stream_closed():
    async def scenario():
        async def never_read(stream):
            await stream.accept()
            await stream.wait_closed()

        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, never_read)):
            await server_ws.send_bytes(frame(OPEN, 9, b"docker"))
            assert (await next_frame(server_ws))[0] == OPEN
            for _ in range(agent.TUNNEL_STREAM_WINDOW // agent.TUNNEL_MAX_PAYLOAD + 1):
                await server_ws.send_bytes(frame(DATA, 9, b"z" * agent.TUNNEL_MAX_PAYLOAD))
            assert await next_frame(server_ws) == (CLOSE, 9, b"flow control violated: more data than credit")
    run(scenario())


def test_an_edge_agent_refuses_streams_beyond_its_limit(monkeypatch):
    monkeypatch.setattr(agent, "TUNNEL_MAX_STREAMS", 2)

    async def scenario():
        async def hold(stream):
            await stream.accept()
            await stream.wait_closed()

        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, hold)):
            for stream_id in (1, 2):
                await server_ws.send_bytes(frame(OPEN, stream_id, b"docker"))
                assert await next_frame(server_ws) == (OPEN, stream_id, b"")
            await server_ws.send_bytes(frame(OPEN, 3, b"docker"))
            assert await next_frame(server_ws) == (CLOSE, 3, b"too many streams")
    run(scenario())


@pytest.mark.parametrize("bad_message", ["text", "short frame"])
def test_a_message_that_is_not_a_frame_ends_the_tunnel(bad_message):
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws)
            async with running((server_ws, agent_ws), server) as (task,):
                opening = asyncio.ensure_future(server.open_stream("docker"))
                await next_frame(agent_ws)
                if bad_message == "text":
                    await agent_ws.send_str("hello")
                else:
                    await agent_ws.send_bytes(b"\x02\x00")
                assert (await agent_ws.receive()).type == aiohttp.WSMsgType.CLOSE  # the server closes the tunnel
                await asyncio.wait_for(task, 5)
                assert server.closed
                with pytest.raises(ConnectionResetError, match="the tunnel closed"):
                    await opening
    run(scenario())


# ---- streams between a server and an edge agent ----------------------------------------------------------------

def test_a_stream_carries_bytes_both_ways_and_ends_when_both_sides_are_done():
    async def scenario():
        async with tunnel_pair(serve_by_command) as (server, _edge):
            stream = await server.open_stream()
            stream.write(b"echo\nhello ")
            stream.write(b"edge")
            stream.write_eof()
            await stream.drain()
            assert await read_all(stream) == b"HELLO EDGE"
            assert stream.at_eof()
    run(scenario())


@pytest.mark.parametrize("large", [False, True], ids=["first sizes", "large frames and windows"])
def test_a_transfer_larger_than_the_window_arrives_whole_and_in_order(large):
    payload = hashlib.sha256(b"seed").digest() * (3 * LARGE_WINDOW // 32 + 7)

    async def scenario():
        async with tunnel_pair(serve_by_command, large) as (server, _edge):
            stream = await server.open_stream()
            stream.write(b"echo\n" + payload)
            stream.write_eof()
            assert await read_all(stream) == payload.upper()
    run(scenario())


def test_a_stream_nobody_reads_does_not_stall_the_others():
    async def scenario():
        async with tunnel_pair(serve_by_command) as (server, _edge):
            stalled = await server.open_stream()
            stalled.write(b"flood 5000000\n")
            await asyncio.sleep(0.2)  # the flood fills the stalled stream's window
            others = [await server.open_stream() for _ in range(10)]
            for number, stream in enumerate(others):
                stream.write(f"echo\nstream {number}".encode())
                stream.write_eof()
            answers = await asyncio.gather(*(read_all(stream) for stream in others))
            assert answers == [f"STREAM {number}".encode() for number in range(10)]
            assert len(await stalled.read(10)) == 10
    run(scenario())


def test_a_small_answer_goes_out_between_the_frames_of_a_bulk_stream_not_after_its_window():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws)
            async with running((server_ws, agent_ws), server):
                streams = []
                for stream_id in (1, 2):
                    opening = asyncio.ensure_future(server.open_stream("docker"))
                    assert (await next_frame(agent_ws))[:2] == (OPEN, stream_id)
                    await agent_ws.send_bytes(frame(OPEN, stream_id))
                    streams.append(await opening)
                bulk, small = streams
                bulk.write(b"e" * agent.TUNNEL_STREAM_WINDOW)  # an export: a whole window at once
                small.write(b"[]")  # then the answer to a docker ps
                order = [(await next_frame(agent_ws))[1] for _ in range(agent.TUNNEL_STREAM_WINDOW
                                                                         // agent.TUNNEL_MAX_PAYLOAD + 1)]
                assert order.index(2) <= 1, order
    run(scenario())


def test_a_stream_the_agent_cannot_connect_fails_to_open_with_the_agents_reason():
    async def scenario():
        async with tunnel_pair(serve_by_command) as (server, _edge):
            stream = await server.open_stream()
            stream.write(b"refuse\n")
            assert await read_all(stream) == b""
            assert stream.closed and stream.close_reason == "cannot reach the engine"
            with pytest.raises(ConnectionResetError, match="tunnel stream closed: cannot reach the engine"):
                await stream.drain()
    run(scenario())


def test_opening_a_stream_fails_with_the_reason_the_far_side_gives():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws)
            async with running((server_ws, agent_ws), server):
                opening = asyncio.ensure_future(server.open_stream("docker"))
                assert await next_frame(agent_ws) == (OPEN, 1, b"docker")
                await agent_ws.send_bytes(frame(CLOSE, 1, b"cannot reach the engine"))
                with pytest.raises(ConnectionResetError, match="cannot reach the engine"):
                    await opening
                assert server.streams == {}
    run(scenario())


def test_opening_a_stream_the_far_side_never_answers_times_out_and_tells_it():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws)
            async with running((server_ws, agent_ws), server):
                with pytest.raises(asyncio.TimeoutError):
                    await server.open_stream("docker", timeout=0.3)
                assert server.streams == {}
                assert await next_frame(agent_ws) == (OPEN, 1, b"docker")
                assert await next_frame(agent_ws) == (CLOSE, 1, b"not opened")
    run(scenario())


def test_when_the_tunnel_drops_its_streams_end_and_no_new_one_opens():
    async def scenario():
        async with tunnel_pair(serve_by_command) as (server, edge):
            stream = await server.open_stream()
            stream.write(b"echo\n")
            await stream.drain()
            await edge.ws.close()
            assert await read_all(stream) == b""
            assert stream.close_reason == "the tunnel closed"
            await asyncio.sleep(0)
            with pytest.raises(ConnectionResetError, match="the tunnel is closed"):
                await server.open_stream()
    run(scenario())


def test_a_dead_link_is_declared_after_one_and_a_half_heartbeats():
    assert agent.tunnel_receive_timeout(20) == 30
    assert agent.tunnel_receive_timeout(2) == 3


def test_reconnect_delays_grow_with_jitter_and_stay_under_the_cap():
    for attempt in range(40):
        delay = agent.reconnect_delay(attempt, 1.0, 60.0)
        assert 0.5 <= delay <= min(60.0, 2 ** attempt)
    assert len({agent.reconnect_delay(5, 1.0, 60.0) for _ in range(20)}) > 1


# ---- edge keys -------------------------------------------------------------------------------------------------

FINGERPRINT = hashlib.sha256(b"certificate").hexdigest()


def test_an_edge_key_carries_the_server_address_environment_fingerprint_and_secret():
    key = agent.EdgeKey("https://portainer.example:9443", 12, FINGERPRINT, "s3cret-token")
    text = key.encode()
    assert "=" not in text and "|" not in text
    assert agent.EdgeKey.decode(text) == key
    assert base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode() \
        == f"https://portainer.example:9443|12|{FINGERPRINT}|s3cret-token"


def test_an_edge_key_pasted_with_spaces_or_an_upper_case_fingerprint_still_decodes():
    key = agent.EdgeKey("https://10.0.0.1:9443", 3, FINGERPRINT.upper(), "secret")
    decoded = agent.EdgeKey.decode(f"  {key.encode()}\n")
    assert decoded.fingerprint == FINGERPRINT and decoded.endpoint_id == 3


@settings(deadline=None)  # a shared 2-core machine: a slow example is not a failure
@given(url=st.from_regex(r"https://[a-z0-9.-]{1,30}(:[0-9]{1,5})?", fullmatch=True),
       endpoint_id=st.integers(1, 2 ** 31), secret=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_",
                                                           min_size=1, max_size=64))
def test_any_edge_key_the_server_makes_decodes_back_to_itself(url, endpoint_id, secret):
    key = agent.EdgeKey(url, endpoint_id, FINGERPRINT, secret)
    assert agent.EdgeKey.decode(key.encode()) == key


@pytest.mark.parametrize("text", [
    "", "not base64 at all!",
    base64.urlsafe_b64encode(b"https://x|1|abc").decode(),
    base64.urlsafe_b64encode(b"https://x|one|" + FINGERPRINT.encode() + b"|s").decode(),
    base64.urlsafe_b64encode(b"https://x|1|not-hex|s").decode(),
    base64.urlsafe_b64encode(b"\xff\xfe|1|00|s").decode(),
])
def test_a_damaged_edge_key_is_refused_with_a_hint(text):
    with pytest.raises(ValueError, match="invalid edge key: copy it again from the server's environment page"):
        agent.EdgeKey.decode(text)


# ---- large frames and windows: agreed with LIMITS, granted with WINDOW, never sent to a side that predates them ---

async def open_from_large_server(server: agent.Tunnel, raw_ws) -> agent.TunnelStream:
    """A stream the large-frame server opens to the raw side, which answers OPEN; the server's frames checked."""
    opening = asyncio.ensure_future(server.open_stream("docker"))
    assert await next_frame(raw_ws) == (OPEN, 1, b"docker")
    assert await next_frame(raw_ws) == (WINDOW, 1, (LARGE_WINDOW - agent.TUNNEL_STREAM_WINDOW).to_bytes(4, "big"))
    await raw_ws.send_bytes(frame(OPEN, 1))
    return await opening


async def data_until_silent(raw_ws) -> list[int]:
    """The sizes of the DATA frames that arrive until the sender has no credit left."""
    sizes = []
    while True:
        try:
            kind, stream_id, payload = await next_frame_within(raw_ws, 0.3)
        except asyncio.TimeoutError:
            return sizes
        assert (kind, stream_id) == (DATA, 1)
        sizes.append(len(payload))


async def next_frame_within(ws, seconds: float) -> tuple[int, int, bytes]:
    message = await asyncio.wait_for(ws.receive(), seconds)
    kind, stream_id = agent.TUNNEL_FRAME_HEADER.unpack_from(message.data)
    return kind, stream_id, message.data[agent.TUNNEL_FRAME_HEADER.size:]


def test_a_server_and_agent_that_both_take_large_frames_move_a_bulk_stream_in_large_frames():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws, large=True)
            async with running((server_ws, agent_ws), server):
                assert await next_frame(agent_ws) == (LIMITS, 0, LARGE_PAYLOAD.to_bytes(4, "big"))
                await agent_ws.send_bytes(frame(LIMITS, 0, LARGE_PAYLOAD.to_bytes(4, "big")))
                stream = await open_from_large_server(server, agent_ws)
                await agent_ws.send_bytes(frame(WINDOW, 1, (LARGE_WINDOW - agent.TUNNEL_STREAM_WINDOW).to_bytes(4, "big")))
                await asyncio.sleep(0.05)
                stream.write(b"x" * (2 * LARGE_WINDOW))
                assert await data_until_silent(agent_ws) == [LARGE_PAYLOAD] * (LARGE_WINDOW // LARGE_PAYLOAD)
    run(scenario())


def test_an_agent_that_predates_large_frames_gets_frames_it_accepts_and_the_credit_it_grants():
    """An agent of the protocol's first version never sends LIMITS, ignores the server's and grants 256 KB."""
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws, large=True)
            async with running((server_ws, agent_ws), server):
                assert (await next_frame(agent_ws))[0] == LIMITS
                stream = await open_from_large_server(server, agent_ws)
                stream.write(b"x" * LARGE_WINDOW)
                sizes = await data_until_silent(agent_ws)
                assert sizes == [agent.TUNNEL_MAX_PAYLOAD] * (agent.TUNNEL_STREAM_WINDOW // agent.TUNNEL_MAX_PAYLOAD)
    run(scenario())


def test_a_large_window_is_taken_whole_unacknowledged_and_a_stream_sent_more_is_closed():
    async def scenario():
        async def never_read(stream):
            await stream.accept()
            await stream.wait_closed()

        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, never_read, large=True)):
            assert await next_frame(server_ws) == (LIMITS, 0, LARGE_PAYLOAD.to_bytes(4, "big"))
            await server_ws.send_bytes(frame(OPEN, 9, b"docker"))
            answers = {(await next_frame(server_ws))[:2] for _ in range(2)}  # the agent's OPEN and its extra credit
            assert answers == {(OPEN, 9), (WINDOW, 9)}
            for _ in range(LARGE_WINDOW // LARGE_PAYLOAD):
                await server_ws.send_bytes(frame(DATA, 9, b"z" * LARGE_PAYLOAD))
            with pytest.raises(asyncio.TimeoutError):  # a whole large window is taken
                await next_frame_within(server_ws, 0.3)
            await server_ws.send_bytes(frame(DATA, 9, b"z"))
            assert await next_frame(server_ws) == (CLOSE, 9, b"flow control violated: more data than credit")
    run(scenario())


def test_a_small_answer_beside_a_bulk_stream_of_large_frames_waits_behind_one_frame_at_most():
    async def scenario():
        async with websocket_pair() as (server_ws, agent_ws):
            server = agent.Tunnel(server_ws, large=True)
            async with running((server_ws, agent_ws), server):
                assert (await next_frame(agent_ws))[0] == LIMITS
                await agent_ws.send_bytes(frame(LIMITS, 0, LARGE_PAYLOAD.to_bytes(4, "big")))
                streams = []
                for stream_id in (1, 2):
                    opening = asyncio.ensure_future(server.open_stream("docker"))
                    assert (await next_frame(agent_ws))[:2] == (OPEN, stream_id)
                    assert (await next_frame(agent_ws))[:2] == (WINDOW, stream_id)
                    await agent_ws.send_bytes(frame(OPEN, stream_id))
                    streams.append(await opening)
                bulk, small = streams
                bulk.write(b"e" * agent.TUNNEL_STREAM_WINDOW)
                small.write(b"[]")
                frames = [await next_frame(agent_ws) for _ in range(2)]
                assert (DATA, 2, b"[]") in frames, [(kind, stream_id, len(payload)) for kind, stream_id, payload in frames]
    run(scenario())


def test_an_edge_agent_stops_reading_its_engine_while_the_server_reads_nothing_and_resumes_after(tmp_path):
    """The edge agent's side of a stream (agent.serve_edge_stream) on a byte source that writes as fast as it may:
    while nobody reads the stream on the server, the source is soon blocked (the agent holds at most a window
    unsent); once the server reads, the bytes flow again, whole."""
    async def scenario():
        written = 0

        async def flood(reader, writer):
            nonlocal written
            await reader.readline()
            with contextlib.suppress(ConnectionError):
                for number in range(200):
                    writer.write(bytes([number]) * 65536)
                    written += 65536
                    await writer.drain()
                writer.close()

        source = await asyncio.start_unix_server(flood, str(tmp_path / "source.sock"))
        served: list[agent.TunnelStream] = []

        async def serve(stream):
            served.append(stream)
            await agent.serve_edge_stream(stream, f"unix://{tmp_path / 'source.sock'}")
        try:
            async with tunnel_pair(serve, large=True) as (server, _edge):
                stream = await server.open_stream()
                stream.write(b"start\n")
                await asyncio.sleep(1)
                stalled_at = written
                await asyncio.sleep(0.5)
                assert written == stalled_at < 4 * 1024 * 1024, written  # a window, a piece and socket buffers
                assert served[0].unsent <= 2 * agent.RELAY_PIECE
                received = await read_all(stream)
                assert received == b"".join(bytes([number]) * 65536 for number in range(200))
        finally:
            source.close()
    run(scenario())


def test_a_bulk_answer_holds_its_frames_while_a_small_question_waits_for_its_answer():
    """The edge agent answers an export (bulk) and a docker ps (a question) on one tunnel: while the question
    waits, the export sends a frame per TUNNEL_BULK_YIELD_SECONDS at most; a question unanswered for
    TUNNEL_ANSWER_FIRST_SECONDS no longer holds it."""
    async def scenario():
        answer_now = asyncio.Event()

        async def serve(stream):
            await stream.accept()
            if (await stream.readline()).strip() == b"export":
                while not stream.closed:
                    stream.write(b"e" * 65536)
                    await stream.drain()
            else:
                await answer_now.wait()
                stream.write(b"the answer")
                await stream.drain()

        arrived: list[tuple[float, int, int]] = []  # (monotonic time, stream id, DATA bytes)

        async def receive(server_ws):
            while True:
                kind, stream_id, payload = await next_frame(server_ws)
                if kind == DATA:
                    arrived.append((asyncio.get_running_loop().time(), stream_id, len(payload)))
                    if stream_id == 1:  # credit back at once: only the agent's choice holds the export
                        await server_ws.send_bytes(frame(WINDOW, 1, len(payload).to_bytes(4, "big")))

        def export_bytes(after: float, before: float) -> int:
            return sum(size for at, stream_id, size in arrived if stream_id == 1 and after <= at < before)

        loop = asyncio.get_running_loop()
        async with websocket_pair() as (server_ws, agent_ws), \
                running((server_ws, agent_ws), agent.Tunnel(agent_ws, serve)):
            await server_ws.send_bytes(frame(OPEN, 1, b"docker"))
            assert await next_frame(server_ws) == (OPEN, 1, b"")
            await server_ws.send_bytes(frame(DATA, 1, b"export\n"))
            receiving = asyncio.ensure_future(receive(server_ws))
            try:
                while export_bytes(0, float("inf")) < 2 * agent.TUNNEL_BULK_BYTES:  # bulk by now
                    await asyncio.sleep(0.01)
                await server_ws.send_bytes(frame(OPEN, 2, b"docker"))
                await server_ws.send_bytes(frame(DATA, 2, b"ps\n"))
                asked = loop.time()
                await asyncio.sleep(agent.TUNNEL_ANSWER_FIRST_SECONDS * 0.8)
                held = export_bytes(asked + 0.02, asked + agent.TUNNEL_ANSWER_FIRST_SECONDS * 0.8)
                # a window in flight when the question came, then a frame per hold
                assert held <= agent.TUNNEL_STREAM_WINDOW + 4 * 65536, held
                await asyncio.sleep(agent.TUNNEL_ANSWER_FIRST_SECONDS)
                expired = loop.time()
                await asyncio.sleep(0.1)
                assert export_bytes(expired, expired + 0.1) > 2 * held  # the unanswered question holds no more
                answer_now.set()
                while not any(stream_id == 2 for _, stream_id, _ in arrived):
                    await asyncio.sleep(0.01)
            finally:
                receiving.cancel()
    run(scenario())
