"""Two servers, one fleet, one edge agent: a request for the edge environment that reaches the server not holding its
tunnel is relayed to the server that does (mutually authenticated TLS, streamed both ways, upgrades included).

Real PostgreSQL 15 and HAProxy (conftest's fixtures), two real servers with --relay-address, a real agent.py edge
agent given the load-balanced address, the real Docker engine and the real docker CLI.
"""

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

import pytest
import requests

import agent
import portainer
import test_git_stacks
from conftest import (BUSYBOX, HERE, PG_BIN, TEST_LABEL, Fleet, free_port, sleeping_compose, start_balancer, start_server,
                      wait_until)
from test_fast_tunnel import run, running, websocket_pair


# -- the byte pipe alone: a stream of one tunnel joined to a stream of another, in one process --------------------


def relayed_chain(serve_at_agent):
    """Like the fleet: the server a client reached (S) opens streams on its link to the holder (H), which joins each
    to a stream it opens on the agent's tunnel (G, which serves it with serve_at_agent). Yields S's Tunnel."""
    @contextlib.asynccontextmanager
    async def chain():
        async with websocket_pair() as (holder_ws, server_ws), websocket_pair() as (holder_tunnel_ws, agent_ws):
            to_agent = agent.Tunnel(holder_tunnel_ws)

            async def join(incoming):
                _, target = agent.parse_relay_target(incoming.target)
                outgoing = await to_agent.open_stream(target)
                await incoming.accept()
                await agent.join_tunnel_streams(incoming, outgoing)
            link = agent.Tunnel(server_ws)
            async with running((holder_ws, server_ws), link, agent.Tunnel(holder_ws, join)), \
                    running((holder_tunnel_ws, agent_ws), to_agent, agent.Tunnel(agent_ws, serve_at_agent)):
                yield link
    return chain()


def test_a_relayed_stream_carries_bytes_and_the_end_of_input_both_ways():
    async def shout_until_the_end(stream):
        await stream.accept()
        received = b""
        while data := await stream.read():
            received += data
        stream.write(received.upper() + b" (input ended)")
        stream.write_eof()
        await stream.drain()

    async def scenario():
        async with relayed_chain(shout_until_the_end) as link:
            stream = await link.open_stream(agent.relay_target(7, "docker"))
            payload = os.urandom(600_000).hex().encode()[:1_000_000]  # more than every window on the way
            stream.write(payload)
            stream.write_eof()
            await stream.drain()
            answer = b""
            while data := await stream.read():
                answer += data
            assert answer == payload.upper() + b" (input ended)"
    run(scenario())


def test_closing_either_end_of_a_relayed_stream_closes_the_other():
    agent_streams = []

    async def hold(stream):
        agent_streams.append(stream)
        await stream.accept()
        await stream.wait_closed()

    async def scenario():
        async with relayed_chain(hold) as link:
            stream = await link.open_stream(agent.relay_target(7, "docker"))
            stream.close("client went away")
            await asyncio.wait_for(agent_streams[0].wait_closed(), 5)
            assert agent_streams[0].close_reason == "client went away"
            stream = await link.open_stream(agent.relay_target(7, "docker"))
            agent_streams[1].close("engine went away")
            await asyncio.wait_for(stream.wait_closed(), 5)
            assert stream.close_reason == "engine went away"
    run(scenario())


def test_the_ids_of_10000_tunnels_are_announced_in_notify_payloads_under_8000_bytes():
    ids = list(range(10**9, 10**9 + 10_000))  # long ids: the most of them a payload can carry
    parts = portainer.id_parts(ids)
    assert [i for part in parts for i in part] == ids
    change = {"connect": parts[0], "server": "x" * 64, "address": "[2001:db8::1]:65535"}
    assert all(len(json.dumps({**change, "connect": part}, separators=(",", ":"))) < 8000 for part in parts)
    assert len(parts) < 30


# -- the fleet: two servers, PostgreSQL, HAProxy, one edge agent ----------------------------------------------------


class RelayFleet(Fleet):
    """The fleet with its edge environment: `holder` holds the agent's tunnel, `other` does not."""

    endpoint_id: int
    edge_agent: subprocess.Popen
    holder = None

    @property
    def other(self):
        return next(srv for srv in self.servers if srv is not self.holder)

    def start_agent_again(self, edge_key: str, log_path: str) -> None:
        """Start the edge agent (stopped before) and wait for the server that holds its new tunnel."""
        self.edge_agent = start_edge_agent(edge_key, log_path)
        self.holder = wait_until(lambda: tunnel_holder(self), timeout=30, message="the agent back")


def start_edge_agent(edge_key: str, log_path: str) -> subprocess.Popen:
    env = {**os.environ, "EDGE": "1", "EDGE_KEY": edge_key, "EDGE_ID": "relayed-site",
           "DOCKER_HOST": "unix:///var/run/docker.sock", "EDGE_HEARTBEAT": "1", "EDGE_BACKOFF_INITIAL": "0.2",
           "EDGE_BACKOFF_MAX": "1.5"}
    return subprocess.Popen([sys.executable, os.path.join(HERE, "agent.py")], env=env,
                            stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)


def tunnel_holder(fleet: RelayFleet):
    """The server whose own tunnel carries the agent (its log says so last), or None."""
    for srv in fleet.servers:
        if srv.process.poll() is None:
            log = srv.log()
            connected = log.rfind(f"edge agent of environment {fleet.endpoint_id} connected")
            if connected >= 0 and log.rfind(f"edge agent of environment {fleet.endpoint_id} disconnected") < connected:
                return srv
    return None


@pytest.fixture(scope="module")
def relay_fleet(engine, postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("relay")
    cert, key = str(root / "cert.pem"), str(root / "key.pem")
    agent.create_self_signed_certificate(cert, key, "portainer.py")  # one HTTPS certificate: agents pin it
    key_file = root / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    args = ("--database", postgres.new_database(), "--secrets-key-file", str(key_file), "--sslcert", cert,
            "--sslkey", key, "--edge-heartbeat", "1", "--snapshot-interval", "3600",  # snapshots: on connect only
            "--git-poll-minimum", "1")
    servers = []
    for name in ("server-a", "server-b"):
        relay_port = free_port()
        servers.append(start_server(str(root / name), *args, "--relay-address", f"127.0.0.1:{relay_port}",
                                    "--bind-relay", f"127.0.0.1:{relay_port}"))
        servers[-1].extra["relay_port"] = relay_port
    tls_port = free_port()
    port, balancer = start_balancer(str(root), servers, tls_port=tls_port)
    fleet = RelayFleet(args[1], servers, port, balancer)
    edge_agent = None
    try:
        r = servers[0].api("POST", "/api/endpoints", json={"Name": "relayed-edge", "EndpointCreationType": 4,
                                                           "URL": f"https://127.0.0.1:{tls_port}"})
        assert r.status_code == 200, r.text
        fleet.endpoint_id = r.json()["Id"]
        edge_agent = fleet.edge_agent = start_edge_agent(r.json()["EdgeKey"], str(root / "edge-agent.log"))
        fleet.holder = wait_until(lambda: tunnel_holder(fleet), timeout=30, message="the edge agent to connect")
        yield fleet
    finally:
        # the agent a test started again (after stopping this one) is the fleet's now
        for agent_process in {edge_agent, getattr(fleet, "edge_agent", None)} - {None}:
            agent_process.send_signal(signal.SIGCONT)
            agent_process.terminate()
            agent_process.wait(10)
        balancer.kill()
        balancer.wait()
        for srv in servers:
            srv.stop()


@pytest.fixture
def busybox_container(engine):
    """A container on the engine the edge agent serves, printing a numbered line every 0.2 s."""
    container = engine.containers.run(BUSYBOX, ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); "
                                                "sleep 0.2; done"], detach=True, labels={TEST_LABEL: "1"})
    yield container
    container.remove(force=True)


def docker_path(fleet: RelayFleet, path: str) -> str:
    return f"/api/endpoints/{fleet.endpoint_id}/docker{path}"


def test_the_server_without_the_tunnel_shows_the_edge_environment_connected_up_and_snapshotted(relay_fleet):
    def shown_up():
        endpoint = relay_fleet.other.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()
        return endpoint["EdgeTunnelConnected"] and endpoint["Status"] == 1 and endpoint["Snapshots"]
    wait_until(shown_up, timeout=15, message="the edge environment to show up on the server without its tunnel")
    assert relay_fleet.other.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()["EdgeTunnelRelayed"]
    assert not relay_fleet.holder.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()["EdgeTunnelRelayed"]
    assert relay_fleet.other.log().count(f"edge agent of environment {relay_fleet.endpoint_id} connected") == 0


def test_container_list_through_the_other_server_is_the_edge_engines_and_its_latency_is_measured(relay_fleet, engine,
                                                                                                  busybox_container):
    relayed = relay_fleet.other.api("GET", docker_path(relay_fleet, "/containers/json"))
    assert relayed.status_code == 200, relayed.text
    assert busybox_container.id in {c["Id"] for c in relayed.json()}
    # Interleaved, so that whatever else loads the machine weighs on both alike.
    servers = {"direct (the holder)": relay_fleet.holder, "relayed (the other)": relay_fleet.other}
    sessions, took = {}, {name: [] for name in servers}
    for name, srv in servers.items():
        sessions[name] = requests.Session()
        sessions[name].headers["X-API-Key"] = srv.admin_api_key
    for _ in range(300):
        for name, srv in servers.items():
            started = time.perf_counter()
            r = sessions[name].get(srv.url + docker_path(relay_fleet, "/containers/json"), timeout=30)
            took[name].append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, r.text
    print("docker ps (GET /containers/json, 300 calls each): " + "; ".join(
        f"{name} p50 {statistics.median(times):.1f} ms p99 {sorted(times)[296]:.1f} ms"
        for name, times in took.items()))


def test_docker_logs_follow_through_the_other_server_streams_new_lines(relay_fleet, busybox_container):
    wait_until(lambda: b"line 2" in busybox_container.logs(), timeout=10, message="the container to print")
    path = docker_path(relay_fleet, f"/containers/{busybox_container.id}/logs?follow=1&stdout=1&tail=1")
    with relay_fleet.other.api("GET", path, stream=True, timeout=30) as r:
        assert r.status_code == 200, r.text
        first = int(busybox_container.logs().split()[-1])
        seen = b""
        deadline = time.monotonic() + 15
        for chunk in r.iter_content(chunk_size=None):
            seen += chunk
            if f"line {first + 5}\n".encode() in seen or time.monotonic() > deadline:
                break
    assert f"line {first + 5}\n".encode() in seen, seen[-200:]
    # The container's next lines meet the closed client: the relay ends with a debug line, no error logged.
    wait_until(lambda: "the client went away during the answer" in relay_fleet.other.log(), timeout=10,
               message="the relay to end")
    for srv in relay_fleet.servers:
        assert "Error handling request" not in srv.log(), srv.log()[-3000:]


def test_docker_exec_with_a_hijacked_stdin_through_the_other_server(relay_fleet, busybox_container):
    """`docker exec -i` hijacks the connection: stdin flows in, its end is passed on, the output flows back."""
    done = relay_fleet.other.docker("exec", "-i", busybox_container.id, "sh", "-c", "cat; echo stdin ended",
                                    endpoint_id=relay_fleet.endpoint_id, input="hello through the relay\n",
                                    timeout=60)
    assert done.stdout == "hello through the relay\nstdin ended\n", done.stderr


def test_docker_exec_it_with_a_terminal_through_the_other_server(relay_fleet, busybox_container):
    """`docker exec -it` under a real pseudo-terminal (util-linux `script`): the TTY upgrade, typed input, output."""
    env = relay_fleet.other.docker_cli_env(relay_fleet.endpoint_id)
    command = f"docker exec -it {busybox_container.id} sh -c 'read line; echo \"got $line on $(tty)\"'"
    done = subprocess.run(["script", "-qec", command, "/dev/null"], env=env, input="typed through the relay\n",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "got typed through the relay on /dev/pts/" in done.stdout, done.stdout


def test_a_16_mib_archive_streams_through_the_other_server_unchanged(relay_fleet, engine, busybox_container):
    exit_code, output = busybox_container.exec_run(["busybox", "dd", "if=/dev/urandom", "of=/big", "bs=1048576",
                                                    "count=16"])
    assert exit_code == 0, output
    direct = hashlib.sha256()
    stream, _ = engine.api.get_archive(busybox_container.id, "/big")
    for chunk in stream:
        direct.update(chunk)
    for name, srv in (("through the holder's own tunnel", relay_fleet.holder), ("relayed", relay_fleet.other)):
        received, size = hashlib.sha256(), 0
        started = time.monotonic()
        with srv.api("GET", docker_path(relay_fleet, f"/containers/{busybox_container.id}/archive"),
                     params={"path": "/big"}, stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text
            for chunk in r.iter_content(chunk_size=65536):
                received.update(chunk)
                size += len(chunk)
        took = time.monotonic() - started
        print(f"16 MiB archive {name}: {size / 1048576:.1f} MiB in {took:.2f} s ({size / 1048576 / took:.1f} MiB/s)")
        assert size > 16 * 1048576 and received.hexdigest() == direct.hexdigest()


def relay_listener_answer(port: int, context: ssl.SSLContext) -> bytes:
    """What the relay listener answers a plain request, b"" when it refuses the TLS handshake."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /relay HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
                return tls.recv(4096)
        except (ssl.SSLError, ConnectionResetError):
            return b""


def test_the_relay_listener_refuses_a_client_without_a_fleet_certificate(relay_fleet, tmp_path):
    port = relay_fleet.holder.extra["relay_port"]
    stranger = ssl.create_default_context()
    stranger.check_hostname, stranger.verify_mode = False, ssl.CERT_NONE
    assert relay_listener_answer(port, stranger) == b""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    agent.create_self_signed_certificate(cert, key, "not of the fleet")
    stranger.load_cert_chain(cert, key)
    assert relay_listener_answer(port, stranger) == b""
    # The other server's own certificate (issued from the fleet's CA) passes the handshake: the refusals above are
    # the certificate's, not a listener that answers nobody.
    certs = os.path.join(relay_fleet.other.data, "certs")
    member = ssl.create_default_context()
    member.check_hostname, member.verify_mode = False, ssl.CERT_NONE
    member.load_cert_chain(os.path.join(certs, "relay-cert.pem"), os.path.join(certs, "relay-key.pem"))
    assert relay_listener_answer(port, member).startswith(b"HTTP/1.1 ")


def test_the_fleet_ca_key_is_sealed_in_the_database(relay_fleet, postgres):
    database = relay_fleet.database.rsplit("/", 1)[1]
    dump = subprocess.run([f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres",
                           database], capture_output=True, text=True, check=True).stdout
    assert "fleet-ca" in dump and "BEGIN CERTIFICATE" in dump
    assert "PRIVATE KEY" not in dump


def test_an_edge_environment_no_server_holds_is_not_connected_on_any_server(relay_fleet):
    r = relay_fleet.other.api("POST", "/api/endpoints", json={"Name": "never-connected", "EndpointCreationType": 4,
                                                              "URL": "https://127.0.0.1:1"})
    assert r.status_code == 200, r.text
    for srv in relay_fleet.servers:
        answer = srv.api("GET", f"/api/endpoints/{r.json()['Id']}/docker/_ping")
        assert answer.status_code == 502 and "is not connected" in answer.json()["details"], answer.text


def test_an_edge_stack_made_on_the_other_server_is_deployed_once_by_the_holder(relay_fleet, engine):
    other = relay_fleet.other
    group = other.api("POST", "/api/edge_groups", json={"Name": "relayed-sites", "Endpoints": [relay_fleet.endpoint_id]})
    assert group.status_code == 200, group.text
    name = f"relayed{time.monotonic_ns() % 10**8}"
    compose = sleeping_compose()
    r = other.api("POST", "/api/edge_stacks", json={"Name": name, "StackFileContent": compose,
                                                    "EdgeGroups": [group.json()["Id"]], "DeploymentType": 0})
    assert r.status_code == 200, r.text
    edge_stack = r.json()

    def status():
        return other.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"].get(
            str(relay_fleet.endpoint_id), {})
    try:
        wait_until(lambda: status().get("Status") == "running", timeout=60, interval=0.5,
                   message="the edge stack to run")
        assert not status().get("Error"), status()
        assert len(engine.containers.list(filters={"label": f"com.docker.compose.project={name}"})) == 1
    finally:
        assert other.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    wait_until(lambda: not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}),
               timeout=30, message="the stack to leave the site")


git_server = test_git_stacks.git_server  # nginx + git http-backend, shared rather than copied


def leader(fleet: RelayFleet):
    def leads(srv) -> bool:
        log = srv.log()
        return log.rfind("this server is now the leader") > log.rfind("this server is no longer the leader")
    return wait_until(lambda: next((srv for srv in fleet.servers if leads(srv)), None), timeout=20,
                      message="a leader")


def move_the_agent_off(fleet: RelayFleet, srv, log_path: str) -> None:
    """Start the edge agent again until another server than `srv` holds its tunnel (HAProxy hands each new
    connection to the next server)."""
    edge_key = srv.api("GET", f"/api/endpoints/{fleet.endpoint_id}/edge/key").json()["EdgeKey"]
    for _ in range(4):
        if fleet.holder is not srv:
            return
        fleet.edge_agent.terminate()
        fleet.edge_agent.wait(10)
        wait_until(lambda: tunnel_holder(fleet) is None, timeout=10, message="the agent gone")
        fleet.start_agent_again(edge_key, log_path)
    assert fleet.holder is not srv


def test_the_leaders_drift_check_reaches_an_edge_stack_through_the_relay_and_the_holder_puts_it_back(
        relay_fleet, engine, git_server, postgres, tmp_path):
    """An edge stack from git with ForceUpdate: the leader polls the repository and checks each environment for
    drift, through the relay when another server holds the tunnel; the holder deploys what drifted."""
    leading = leader(relay_fleet)
    move_the_agent_off(relay_fleet, leading, str(tmp_path / "edge-agent.log"))
    name = f"relayeddrift{time.monotonic_ns() % 10**8}"
    compose = sleeping_compose()
    git_server.push({"edge/docker-compose.yml": compose}, "an edge stack for the relayed site")
    group = leading.api("POST", "/api/edge_groups", json={"Name": f"{name}-sites",
                                                         "Endpoints": [relay_fleet.endpoint_id]})
    assert group.status_code == 200, group.text
    r = leading.api("POST", "/api/edge_stacks/create/repository", json={
        "Name": name, "RepositoryURL": git_server.url, "FilePathInRepository": "edge/docker-compose.yml",
        "EdgeGroups": [group.json()["Id"]], "DeploymentType": 0, "RepositoryAuthentication": True,
        "RepositoryUsername": test_git_stacks.GIT_USER, "RepositoryPassword": test_git_stacks.GIT_PASSWORD,
        "AutoUpdate": {"Interval": "1s", "ForceUpdate": True}})
    assert r.status_code == 200, r.text
    edge_stack = r.json()

    def running_container():
        found = engine.containers.list(filters={"label": f"com.docker.compose.project={name}"})
        return found[0] if len(found) == 1 else None
    try:
        first = wait_until(running_container, timeout=60, message="the edge stack to run")
        first.remove(force=True)
        wait_until(lambda: (running_container() or first).id != first.id, timeout=30,
                   message="the removed container put back")
        database = relay_fleet.database.rsplit("/", 1)[1]
        wait_until(lambda: postgres.psql(database, "SELECT count(*) FROM activity WHERE entry->>'action' LIKE "
                                                   f"'poll: edge stack {name} deployed %drifted from the file%'")
                   != "0", timeout=10, message="the leader's drift check in the activity log")
        assert tunnel_holder(relay_fleet) is not leading and leader(relay_fleet) is leading  # as at the start
    finally:
        assert leading.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    wait_until(lambda: not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}),
               timeout=30, message="the stack to leave the site")


def connected_count(srv, ids: set[int]) -> int:
    return sum(1 for e in srv.api("GET", "/api/endpoints").json() if e["Id"] in ids and e["EdgeTunnelConnected"])


def when_both_show(servers, ids: set[int], count: int, timeout: float = 60) -> list[float]:
    """The time at which each server first showed `count` of `ids` connected (polled in turn)."""
    seen: list[float | None] = [None] * len(servers)
    deadline = time.monotonic() + timeout
    while None in seen and time.monotonic() < deadline:
        for number, srv in enumerate(servers):
            if seen[number] is None and connected_count(srv, ids) == count:
                seen[number] = time.monotonic()
    assert None not in seen, f"not every server showed {count} of {len(ids)} connected within {timeout} s"
    return seen


def test_a_burst_of_200_edge_agents_on_one_server_is_seen_on_the_other_within_a_second(relay_fleet, tmp_path):
    """The other server follows the tunnel registry by the changes NOTIFY carries, not by reading it all again."""
    holding, following = relay_fleet.servers

    def create(number):
        r = holding.api("POST", "/api/endpoints", json={"Name": f"burst-{number}", "EndpointCreationType": 4,
                                                        "URL": holding.https_url})
        assert r.status_code == 200, r.text
        # in the waiting room: not snapshotted on connect, so that only the registry is measured
        untrusted = holding.api("PUT", f"/api/endpoints/{r.json()['Id']}", json={"UserTrusted": False})
        assert untrusted.status_code == 200, untrusted.text
        return r.json()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        created = list(pool.map(create, range(200)))
    ids = {e["Id"] for e in created}
    keys = tmp_path / "burst.keys"
    keys.write_text("".join(f"{e['EdgeKey']} burst-agent-{e['Id']}\n" for e in created))
    # conftest's fleet simulator: one process holding every agent's tunnel
    simulate = f"import asyncio, conftest; asyncio.run(conftest.simulate_edge_fleet({str(keys)!r}, heartbeat=5))"
    simulator = subprocess.Popen([sys.executable, "-c", simulate], cwd=HERE, stdout=subprocess.DEVNULL,
                                 stderr=open(tmp_path / "simulator.log", "ab"))
    try:
        held, seen = when_both_show((holding, following), ids, 200)
        print(f"200 edge agents connecting to one server: the other showed them all {seen - held:+.2f} s after it")
        assert seen - held <= 1.0
        assert following.api("GET", f"/api/endpoints/{created[0]['Id']}").json()["EdgeTunnelRelayed"] is True
    finally:
        simulator.terminate()
        simulator.wait(10)
    held, seen = when_both_show((holding, following), ids, 0)
    print(f"200 edge agents disconnecting from one server: the other showed them gone {seen - held:+.2f} s after it")
    assert seen - held <= 1.0
    assert not any(srv.log().count("reading the whole table again") for srv in relay_fleet.servers)


def test_an_edge_agent_that_stops_is_shown_down_on_both_servers_and_up_again_when_it_returns(relay_fleet, tmp_path):
    def shown(srv, connected: bool) -> bool:
        endpoint = srv.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()
        return endpoint["EdgeTunnelConnected"] is connected and endpoint["Status"] == (1 if connected else 2)
    edge_key = relay_fleet.servers[0].api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}/edge/key")
    assert edge_key.status_code == 200, edge_key.text
    def snapshot_time(srv) -> int:
        snapshots = srv.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()["Snapshots"]
        return snapshots[0]["Time"] if snapshots else 0
    snapshotted = {srv.url: wait_until(lambda srv=srv: snapshot_time(srv), timeout=15, message="a first snapshot")
                   for srv in relay_fleet.servers}
    relay_fleet.edge_agent.terminate()
    relay_fleet.edge_agent.wait(10)
    for srv in relay_fleet.servers:
        wait_until(lambda srv=srv: shown(srv, False), timeout=10, message="the stopped agent shown down")
    relay_fleet.start_agent_again(edge_key.json()["EdgeKey"], str(tmp_path / "edge-agent.log"))
    for srv in relay_fleet.servers:
        wait_until(lambda srv=srv: shown(srv, True), timeout=15, message="the returned agent shown up")
    # The holder snapshots the returned agent; the other shows that snapshot, shared through the database, and
    # takes none of its own (none taken twice for a move).
    wait_until(lambda: snapshot_time(relay_fleet.holder) > snapshotted[relay_fleet.holder.url], timeout=15,
               message="the holder's snapshot of the returned agent")
    # Shared every second, but on a loaded machine the other server may catch up a little later.
    wait_until(lambda: snapshot_time(relay_fleet.other) == snapshot_time(relay_fleet.holder),
               timeout=portainer.RELAY_SNAPSHOT_DELAY + 10, message="the holder's snapshot shown by the other server")
    time.sleep(portainer.RELAY_SNAPSHOT_DELAY + 1)
    assert snapshot_time(relay_fleet.other) <= snapshot_time(relay_fleet.holder)  # none of its own, newer


def test_a_server_that_lost_its_listen_connection_reads_the_registry_again(relay_fleet, postgres, tmp_path):
    """The change made while the other server's LISTEN connection is gone is not heard: it reads the table again."""
    database = relay_fleet.database.rsplit("/", 1)[1]
    edge_key = relay_fleet.servers[0].api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}/edge/key").json()
    killed = postgres.psql(database, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                     "datname = current_database() AND query LIKE 'LISTEN%portainer_tunnels%'")
    assert killed.strip() == "2", killed  # one a server
    relay_fleet.edge_agent.terminate()  # its withdrawal is notified while nobody listens
    relay_fleet.edge_agent.wait(10)
    for srv in relay_fleet.servers:
        wait_until(lambda srv=srv: not srv.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()[
            "EdgeTunnelConnected"], timeout=10, message="the stopped agent shown disconnected")
        wait_until(lambda srv=srv: "listening for tunnel changes was lost" in srv.log(), timeout=10,
                   message="the server to listen again")
    relay_fleet.start_agent_again(edge_key["EdgeKey"], str(tmp_path / "edge-agent.log"))
    wait_until(lambda: relay_fleet.other.api("GET", f"/api/endpoints/{relay_fleet.endpoint_id}").json()[
        "EdgeTunnelRelayed"], timeout=10, message="the returned agent relayed by the other server")


def test_when_the_holder_dies_the_other_says_so_and_then_serves_the_moved_agent_directly(relay_fleet):
    fleet, holder, other = relay_fleet, relay_fleet.holder, relay_fleet.other
    assert other.api("GET", docker_path(fleet, "/_ping")).text == "OK"
    fleet.edge_agent.send_signal(signal.SIGSTOP)  # the agent waits: the holder's death is seen before it moves
    holder.process.send_signal(signal.SIGKILL)
    holder.process.wait()
    r = other.api("GET", docker_path(fleet, "/containers/json"))
    assert r.status_code == 502 and "cannot be reached" in r.json()["details"], r.text
    fleet.edge_agent.send_signal(signal.SIGCONT)
    moved = time.monotonic()
    wait_until(lambda: tunnel_holder(fleet) is other, timeout=30, interval=0.2, message="the agent on the other")
    print(f"edge agent moved to the surviving server in {time.monotonic() - moved:.1f} s")
    r = other.api("GET", docker_path(fleet, "/containers/json"))
    assert r.status_code == 200, r.text
    assert other.api("GET", f"/api/endpoints/{fleet.endpoint_id}").json()["EdgeTunnelConnected"] is True
