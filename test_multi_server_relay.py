"""Two servers, one fleet, one edge agent: a request for the edge environment that reaches the server not holding its
tunnel is relayed to the server that does (mutually authenticated TLS, streamed both ways, upgrades included).

Real PostgreSQL 15 and HAProxy (conftest's fixtures), two real servers with --relay-address, a real agent.py edge
agent given the load-balanced address, the real Docker engine and the real docker CLI.
"""

import hashlib
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
from conftest import BUSYBOX, HERE, TEST_LABEL, Fleet, free_port, start_balancer, start_server, wait_until


class RelayFleet(Fleet):
    """The fleet with its edge environment: `holder` holds the agent's tunnel, `other` does not."""

    endpoint_id: int
    edge_agent: subprocess.Popen
    holder = other = None


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
            "--sslkey", key, "--edge-heartbeat", "1")
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
        fleet.other = servers[1] if fleet.holder is servers[0] else servers[0]
        yield fleet
    finally:
        if edge_agent is not None:
            edge_agent.send_signal(signal.SIGCONT)
            edge_agent.terminate()
            edge_agent.wait(10)
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
    assert relay_fleet.other.log().count(f"edge agent of environment {relay_fleet.endpoint_id} connected") == 0


def test_container_list_through_the_other_server_is_the_edge_engines_and_its_latency_is_measured(relay_fleet, engine,
                                                                                                  busybox_container):
    relayed = relay_fleet.other.api("GET", docker_path(relay_fleet, "/containers/json"))
    assert relayed.status_code == 200, relayed.text
    assert busybox_container.id in {c["Id"] for c in relayed.json()}
    timings = {}
    for name, srv in (("direct", relay_fleet.holder), ("relayed", relay_fleet.other)):
        session = requests.Session()
        session.headers["X-API-Key"] = srv.admin_api_key
        took = []
        for _ in range(300):
            started = time.perf_counter()
            r = session.get(srv.url + docker_path(relay_fleet, "/containers/json"), timeout=30)
            took.append((time.perf_counter() - started) * 1000)
            assert r.status_code == 200, r.text
        took.sort()
        timings[name] = (statistics.median(took), took[int(len(took) * 0.99) - 1])
    print("docker ps (GET /containers/json, 300 calls): " + "; ".join(
        f"{name} p50 {p50:.1f} ms p99 {p99:.1f} ms" for name, (p50, p99) in timings.items()))


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


def test_docker_exec_with_a_hijacked_stdin_through_the_other_server(relay_fleet, busybox_container):
    """`docker exec -i` hijacks the connection: stdin flows in, its end is passed on, the output flows back."""
    done = relay_fleet.other.docker("exec", "-i", busybox_container.id, "sh", "-c", "cat; echo stdin ended",
                                    endpoint_id=relay_fleet.endpoint_id, input="hello through the relay\n",
                                    timeout=60)
    assert done.stdout == "hello through the relay\nstdin ended\n", done.stderr


def test_a_16_mib_archive_streams_through_the_other_server_unchanged(relay_fleet, engine, busybox_container):
    exit_code, output = busybox_container.exec_run(["busybox", "dd", "if=/dev/urandom", "of=/big", "bs=1048576",
                                                    "count=16"])
    assert exit_code == 0, output
    direct = hashlib.sha256()
    stream, _ = engine.api.get_archive(busybox_container.id, "/big")
    for chunk in stream:
        direct.update(chunk)
    relayed, size = hashlib.sha256(), 0
    started = time.monotonic()
    with relay_fleet.other.api("GET", docker_path(relay_fleet, f"/containers/{busybox_container.id}/archive"),
                               params={"path": "/big"}, stream=True, timeout=60) as r:
        assert r.status_code == 200, r.text
        for chunk in r.iter_content(chunk_size=65536):
            relayed.update(chunk)
            size += len(chunk)
    took = time.monotonic() - started
    print(f"16 MiB archive relayed: {size / 1048576:.1f} MiB in {took:.2f} s ({size / 1048576 / took:.0f} MiB/s)")
    assert size > 16 * 1048576 and relayed.hexdigest() == direct.hexdigest()


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


def test_an_edge_environment_no_server_holds_is_not_connected_on_any_server(relay_fleet):
    r = relay_fleet.other.api("POST", "/api/endpoints", json={"Name": "never-connected", "EndpointCreationType": 4,
                                                              "URL": "https://127.0.0.1:1"})
    assert r.status_code == 200, r.text
    for srv in relay_fleet.servers:
        answer = srv.api("GET", f"/api/endpoints/{r.json()['Id']}/docker/_ping")
        assert answer.status_code == 502 and "is not connected" in answer.json()["details"], answer.text


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
