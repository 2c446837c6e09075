"""The whole system as it fails in the field: crashes, faults, bad input, abuse.

Counts scale with PORTAINER_TEST_SCALE (default 1, as CI runs them) for longer local runs.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from conftest import (ADMIN_PASSWORD, BUSYBOX, HERE, SLOT, TEST_LABEL, make_namespace_host, sleeping_compose,
                      start_server, wait_until)

import portainer

pytestmark = pytest.mark.resilience
SCALE = float(os.environ.get("PORTAINER_TEST_SCALE", "1"))


# ---------------------------------------------------------------------------------------------------------------
# Store crash safety
# ---------------------------------------------------------------------------------------------------------------

# One process imports portainer once, then forks a writer for each line it reads: each writer commits a counter
# as fast as it can and prints each acknowledged value, until the test kills it (about 0.6 s saved a round, against
# starting Python and importing portainer again).
STORE_WRITERS = r"""
import asyncio, os, sys
sys.path.insert(0, sys.argv[2])
import portainer
async def write_forever():
    store = portainer.Store(sys.argv[1]); store.acquire(); store.load()
    n = store.data["settings"].get("counter", 0)
    while True:
        n += 1
        store.data["settings"]["counter"] = n
        store.data["settings"]["padding"] = "x" * (n * 7919 % 20000)
        await store.commit()
        print(n, flush=True)
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        asyncio.run(write_forever())
    print(f"writer {pid}", flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def test_the_store_survives_being_killed_at_random_points_with_every_acknowledged_write(tmp_path):
    directory = str(tmp_path / "store")
    kills = int(200 * SCALE)
    survived = 0
    writers = subprocess.Popen([sys.executable, "-c", STORE_WRITERS, directory, HERE], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        for round_number in range(kills):
            writers.stdin.write("write\n")
            writers.stdin.flush()
            acknowledged, pid = 0, None
            # a different point in the write loop each round: after 1 to 15 acknowledged writes
            wanted = 1 + (round_number * 7) % 15
            while acknowledged < wanted or pid is None:
                line = writers.stdout.readline()
                assert line, "the writers' process ended"
                if line.startswith("writer "):
                    pid = int(line.split()[1])
                elif line.strip().isdigit():
                    acknowledged = int(line)
            os.kill(pid, signal.SIGKILL)
            # what the writer printed before the kill was acknowledged too (a line cut short by it is not a number)
            while not (line := writers.stdout.readline()).endswith("reaped\n"):
                assert line, "the writers' process ended"
                if line.strip().isdigit():
                    acknowledged = int(line)
            store = portainer.Store(directory)
            store.load()
            assert store.data["settings"]["counter"] >= acknowledged, round_number
            survived += 1
    finally:
        writers.kill()
        writers.wait()
    assert survived == kills
    print(f"store survived {survived} kills")


@pytest.mark.parametrize("failing_step", ["write", "fsync", "backup rename", "rename into place"])
def test_a_failure_at_each_step_of_a_write_leaves_the_old_or_the_new_document(tmp_path, monkeypatch, failing_step):
    store = portainer.Store(str(tmp_path))
    store.load()
    store.data["settings"]["value"] = "old"
    store.write_document(json.dumps(store.data).encode())
    old_doc = json.dumps(store.data, sort_keys=True)
    store.data["settings"]["value"] = "new"
    new_doc = json.dumps(store.data, sort_keys=True)
    renames = []
    real_write, real_fsync, real_replace = os.write, os.fsync, os.replace

    def fail(*args):
        raise OSError(5, f"injected failure at {failing_step}")

    if failing_step == "write":
        monkeypatch.setattr(os, "write", fail)
    elif failing_step == "fsync":
        monkeypatch.setattr(os, "fsync", fail)
    else:
        def replace(src, dst):
            renames.append(dst)
            if (failing_step == "backup rename" and len(renames) == 1) or \
                    (failing_step == "rename into place" and len(renames) == 2):
                fail()
            real_replace(src, dst)
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        store.write_document(json.dumps(store.data).encode())
    monkeypatch.setattr(os, "write", real_write)
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(os, "replace", real_replace)
    reloaded = portainer.Store(str(tmp_path))
    reloaded.load()
    assert json.dumps(reloaded.data, sort_keys=True) in (old_doc, new_doc)


def test_a_full_disk_gives_a_clear_error_and_keeps_the_last_good_store(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    server = None
    try:
        server = start_server(str(mount / "data"))
        assert server.api("PUT", "/api/settings", json={"LogoURL": "before"}).status_code == 200
        filler = mount / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        r = server.api("PUT", "/api/settings", json={"LogoURL": "x" * 200000})
        assert r.status_code == 507 and "could not be saved" in r.json()["message"], r.text
        assert server.api("GET", "/api/settings").json()["LogoURL"] == "before"
        filler.unlink()
        assert server.api("PUT", "/api/settings", json={"LogoURL": "after"}).status_code == 200
        server.stop()
        server = start_server(str(mount / "data"), admin_password=ADMIN_PASSWORD)
        assert server.api("GET", "/api/settings").json()["LogoURL"] == "after"
    finally:
        if server:
            server.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


# ---------------------------------------------------------------------------------------------------------------
# Engine faults
# ---------------------------------------------------------------------------------------------------------------


def test_a_hung_engine_times_out_with_a_clear_504_and_the_server_stays_responsive(fresh_server, remote_host):
    server = fresh_server("--proxy-timeout", "2")
    r = server.api("POST", "/api/endpoints", json={"Name": "hung", "URL": f"unix://{remote_host.socket}"})
    endpoint_id = r.json()["Id"]
    engine_pid = remote_host.engine_process.pid
    os.kill(engine_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        r = server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json")
        assert r.status_code == 504 and "did not answer in time" in r.json()["message"]
        assert time.monotonic() - started < 10
        assert server.api("GET", "/api/endpoints/1/docker/_ping").status_code == 200
    finally:
        os.kill(engine_pid, signal.SIGCONT)
    wait_until(lambda: server.api("GET", f"/api/endpoints/{endpoint_id}/docker/_ping").status_code == 200,
               message="the engine to answer again")


def test_open_log_streams_end_cleanly_when_the_engine_restarts(server, remote_host):
    r = server.api("POST", "/api/endpoints", json={"Name": "restarting", "URL": f"unix://{remote_host.socket}"})
    endpoint_id = r.json()["Id"]
    client = remote_host.client()
    container = client.containers.run(BUSYBOX, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
                                      detach=True, labels={TEST_LABEL: "1"})
    try:
        stream = server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/{container.id}/logs"
                                   "?follow=1&stdout=1", stream=True, timeout=60)
        lines = stream.iter_content(64)
        assert b"tick" in next(lines)
        remote_host.stop_engine()
        started = time.monotonic()
        for _ in lines:
            pass
        assert time.monotonic() - started < 30
        assert server.api("GET", "/api/endpoints/1/docker/_ping").status_code == 200
    finally:
        if remote_host.engine_process is None:
            remote_host.start_engine()
        remote_host.client().containers.get(container.id).remove(force=True)
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_schemathesis_finds_no_server_error_and_no_schema_break(fresh_server, tmp_path):
    server = fresh_server()  # of its own: the fuzzer deletes and changes whatever it can reach
    if shutil.which("st") is None:
        pytest.fail("schemathesis is not installed: `make test-deps` installs it")
    examples = str(int(20 * SCALE))
    # A registry, templates URL or environment the fuzzer pointed at an address that does not answer is an honest
    # 502 or 504 (the upstream failed, not this server); every other 5xx is a bug.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.not_a_server_error]\nexpected-statuses = ["1XX", "2XX", "3XX", "4XX", "502", "504"]\n')
    result = subprocess.run(
        ["st", "--config-file", str(config), "run", f"{server.url}/api/docs/openapi.json", "--url", server.url,
         "-H", f"X-API-Key: {server.admin_api_key}", "--checks", "not_a_server_error,response_schema_conformance",
         "--exclude-path-regex", "docker|logout|passwd|tokens", "-n", examples,
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=600)
    print(result.stdout[-3000:])
    failures = result.stdout[result.stdout.find("=== FAILURES"):result.stdout.find("=== WARNINGS")]
    assert result.returncode == 0, failures[:6000] + result.stdout[-2000:] + result.stderr[-2000:]


PATH_TAKING_ROUTES = [(m, p) for m, p, h in portainer.ROUTES if "{" in p and p.startswith("/api/")]


@pytest.mark.parametrize("method,path", PATH_TAKING_ROUTES)
@pytest.mark.parametrize("bad", ["..%2F..%2Fetc%2Fpasswd", "%2e%2e", "1%00", "99999999999999999999", "-1", "abc"])
def test_every_path_parameter_refuses_traversal_and_garbage_with_a_4xx(server, method, path, bad):
    concrete = path.replace("{path:.*}", "..%2F..%2Fetc%2Fpasswd")
    for name in ("{id}", "{keyId}"):
        concrete = concrete.replace(name, bad)
    r = server.api("GET" if method == "*" else method, concrete, data=b"{}",
                   headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (concrete, r.status_code, r.text[:200])
    assert r.json()["message"]


def test_a_raw_malformed_request_gets_a_4xx_not_a_crash(server):
    for raw in (b"GET /api/status HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                b"POST /api/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"a\":",
                b"GET /api/status\x00 HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(4096)
        assert answer == b"" or answer.split(b" ")[1].startswith(b"4"), answer[:100]
    assert server.api("GET", "/api/status").status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Auth abuse
# ---------------------------------------------------------------------------------------------------------------


def forge_token(key: bytes, claims: dict, alg: str = "HS256") -> str:
    header = portainer.b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = portainer.b64url(json.dumps(claims).encode())
    signature = portainer.b64url(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{signature}"


def test_expired_foreign_unsigned_and_revoked_tokens_are_all_refused(server):
    with open(os.path.join(server.data, "jwt.secret"), "rb") as f:
        key = f.read()
    claims = {"id": 1, "username": "admin", "role": 1, "iat": time.time(), "jti": "abc", "exp": int(time.time()) + 60}
    assert server.api("GET", "/api/users/me", token=forge_token(key, claims)).status_code == 200  # the control
    expired = forge_token(key, {**claims, "exp": int(time.time()) - 1})
    foreign = forge_token(b"another key entirely, 32 bytes!!", claims)
    none_alg = forge_token(key, claims, alg="none").rsplit(".", 1)[0] + "."
    token = server.login("admin", ADMIN_PASSWORD)
    server.api("POST", "/api/auth/logout", token=token)
    for name, bad in (("expired", expired), ("foreign", foreign), ("alg none", none_alg), ("revoked", token)):
        r = server.api("GET", "/api/users/me", token=bad)
        assert r.status_code == 401, name


def test_brute_force_hits_the_rate_limit_and_a_correct_password_does_not_get_through(fresh_server):
    server = fresh_server()
    attempts = int(50 * SCALE)
    codes = [requests.post(server.url + "/api/auth", json={"Username": "admin", "Password": f"guess {i}"}).status_code
             for i in range(attempts)]
    assert codes.count(401) <= 5 and codes.count(429) >= attempts - 5
    r = requests.post(server.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    assert r.status_code == 429


# ---------------------------------------------------------------------------------------------------------------
# Agent and edge faults
# ---------------------------------------------------------------------------------------------------------------

# Namespace host numbers of this file: see conftest.NAMESPACE_HOSTS.
AGENT_HOST, EDGE_HOST, EDGE_STACK_HOSTS = 10, 11, (12, 13)
TICKER = ["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done"]


def endpoint_status(server, endpoint_id: int) -> int:
    return server.api("GET", f"/api/endpoints/{endpoint_id}").json()["Status"]


def test_an_agent_killed_mid_stream_ends_the_stream_and_its_environment_comes_back(engine, tmp_path):
    from test_agent import AGENT_PORT, AgentProcess, add_agent_environment

    host = make_namespace_host(AGENT_HOST)
    server = agent = None
    try:
        host.start_engine()
        host.load_image(engine)
        agent = AgentProcess(host, data=str(tmp_path / "agent-state")).start()  # pairs with this test's server
        server = start_server(str(tmp_path / "data"), "--snapshot-interval", "1")
        r = add_agent_environment(server, "killed-agent", f"{host.address}:{AGENT_PORT}")
        assert r.status_code == 200, r.text
        endpoint_id = r.json()["Id"]
        container = host.client().containers.run(BUSYBOX, TICKER, detach=True, labels={TEST_LABEL: "1"})
        stream = server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/{container.id}/logs"
                                   "?follow=1&stdout=1", stream=True, timeout=60)
        chunks = stream.iter_content(64)
        assert b"tick" in next(chunks)
        agent.process.kill()  # SIGKILL: no goodbye, the connection just drops
        agent.process.wait()
        started = time.monotonic()
        with contextlib.suppress(requests.exceptions.ChunkedEncodingError, requests.exceptions.ConnectionError):
            for _ in chunks:
                pass
        assert time.monotonic() - started < 30, "the stream outlived its agent"
        assert server.api("GET", "/api/endpoints/1/docker/_ping").status_code == 200
        r = server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json")
        assert 500 <= r.status_code < 600 and r.json()["message"], r.text  # a clear gateway error
        wait_until(lambda: endpoint_status(server, endpoint_id) == 2, timeout=20, message="the environment down")
        agent.start()
        wait_until(lambda: endpoint_status(server, endpoint_id) == 1, timeout=30, message="the environment up")
        names = [c["Id"] for c in server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json").json()]
        assert container.id in names
        print("agent faults injected: 1 kill mid-stream, recovered")
    finally:
        if agent:
            agent.stop()
        if server:
            server.stop()
        host.remove()


@pytest.fixture(scope="module")
def edge_link(engine, workdir):
    """An edge site behind NAT, its server (1 s heartbeats) and a connected agent."""
    from test_edge import EdgeAgent, connected, create_edge_environment

    host = make_namespace_host(EDGE_HOST)
    host.start_engine()
    host.load_image(engine)
    subprocess.run(["ip", "netns", "exec", host.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                    "NEW", "-j", "DROP"], check=True)
    server = start_server(os.path.join(workdir, f"resilience-edge-{os.getpid()}"), "--edge-heartbeat", "1",
                          bind_host=host.host_address)
    endpoint = create_edge_environment(server, "cut-site")
    site_agent = EdgeAgent(endpoint["EdgeKey"], "cut-site", f"unix://{host.socket}",
                           os.path.join(workdir, "resilience-edge-agent.log"), site=host)
    wait_until(lambda: connected(server, endpoint["Id"]), timeout=30, message="the edge agent to connect")
    yield {"server": server, "host": host, "endpoint_id": endpoint["Id"], "connected": connected}
    site_agent.stop()
    server.stop()
    host.remove()


@contextlib.contextmanager
def cut_link(host):
    """Take the site's link down; bring it back up when the block ends."""
    veth = host.name.replace("node", "veth")
    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)


def test_a_cut_edge_link_ends_an_exec_session_and_a_log_stream_and_the_site_recovers(edge_link):
    server, host, endpoint_id = edge_link["server"], edge_link["host"], edge_link["endpoint_id"]
    name = f"ptpy-cut-{SLOT}"
    server.docker("run", "-d", "--name", name, "--label", TEST_LABEL, *[BUSYBOX, *TICKER], endpoint_id=endpoint_id)
    env = server.docker_cli_env(endpoint_id)
    session = subprocess.Popen(["docker", "exec", "-i", name, "sh"], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    logs = subprocess.Popen(["docker", "logs", "-f", name], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        session.stdin.write(b"echo exec-$((40+2))\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"exec-42\n"
        assert logs.stdout.readline().startswith(b"tick")
        with cut_link(host):
            started = time.monotonic()
            logs.wait(timeout=30)  # the dead link is seen after a few missed heartbeats
            with contextlib.suppress(BrokenPipeError):
                session.stdin.write(b"echo still-there\n")
                session.stdin.flush()
            session.wait(timeout=30)
            print(f"exec session and log stream ended {time.monotonic() - started:.1f} s after the cut")
            assert server.api("GET", "/api/status").status_code == 200
        wait_until(lambda: edge_link["connected"](server, endpoint_id), timeout=30, message="the agent to reconnect")
        r = server.docker("exec", name, "echo", "usable-again", endpoint_id=endpoint_id, check=False)
        out = r.stdout
        assert out.strip() == "usable-again"
        assert server.docker("logs", "--tail", "1", name, endpoint_id=endpoint_id).stdout.startswith("tick")
    finally:
        session.kill()
        logs.kill()
        server.docker("rm", "-f", name, endpoint_id=endpoint_id, check=False)


def test_a_restarted_server_gets_all_its_edge_agents_back(engine, tmp_path):
    from test_edge import EdgeAgent, create_edge_environment

    count = max(2, int(100 * SCALE))
    server = start_server(str(tmp_path / "data"), "--edge-heartbeat", "5")
    agents = []
    try:
        endpoints = [create_edge_environment(server, f"fleet-{i}") for i in range(count)]
        for i, endpoint in enumerate(endpoints):
            agents.append(EdgeAgent(endpoint["EdgeKey"], f"fleet-machine-{i}", "unix:///var/run/docker.sock",
                                    str(tmp_path / f"agent-{i}.log")))

        def all_connected(srv) -> int:
            views = srv.api("GET", "/api/endpoints?limit=0").json()
            return sum(1 for v in views if v.get("EdgeTunnelConnected")) == count

        wait_until(lambda: all_connected(server), timeout=180, interval=1, message=f"{count} edge agents to connect")
        print(f"memory with {count} edge agents: server {server.rss_kb() // 1024} MB")
        assert server.stop() == 0
        server = start_server(server.data, "--edge-heartbeat", "5", ports=(server.port, server.https_port))
        wait_until(lambda: all_connected(server), timeout=120, interval=1, message=f"{count} agents to come back")
        assert all(a.process.poll() is None for a in agents)
        sample = endpoints[:: max(1, count // 5)]
        for endpoint in sample:
            r = server.api("GET", f"/api/endpoints/{endpoint['Id']}/docker/_ping")
            assert r.status_code == 200, r.text
        print(f"edge agents reconnected after a server restart: {count}")
    finally:
        for a in agents:
            a.process.terminate()
        for a in agents:
            with contextlib.suppress(subprocess.TimeoutExpired):
                a.process.wait(10)
        server.stop()


def test_an_edge_stack_deployed_while_sites_were_offline_reaches_every_site(engine, tmp_path):
    from test_edge import EdgeAgent, connected

    hosts = [make_namespace_host(i) for i in EDGE_STACK_HOSTS]
    server = None
    agents = {}
    name = f"ptpy{SLOT}fleet"
    try:
        for host in hosts:
            host.start_engine()
            host.load_image(engine)
        # listening on every address of this machine, so that each site reaches it on its own link
        server = start_server(str(tmp_path / "data"), "--edge-heartbeat", "1", bind_host="0.0.0.0")
        endpoints = []
        for i, host in enumerate(hosts):
            r = server.api("POST", "/api/endpoints", json={"Name": f"site-{i}", "EndpointCreationType": 4,
                                                            "URL": f"https://{host.host_address}:{server.https_port}"})
            assert r.status_code == 200, r.text
            endpoints.append(r.json())

        def start_agent(i):
            agents[i] = EdgeAgent(endpoints[i]["EdgeKey"], f"site-{i}", f"unix://{hosts[i].socket}",
                                  str(tmp_path / f"site-{i}.log"), site=hosts[i])

        start_agent(0)  # the first site is online; the second has never connected yet
        wait_until(lambda: connected(server, endpoints[0]["Id"]), timeout=30, message="site 0 to connect")
        group = server.api("POST", "/api/edge_groups", json={"Name": "fleet",
                                                             "Endpoints": [e["Id"] for e in endpoints]}).json()
        content = sleeping_compose()
        with cut_link(hosts[0]):  # and the first one drops off just as the stack is deployed
            wait_until(lambda: not connected(server, endpoints[0]["Id"]), timeout=15, message="site 0 to drop")
            r = server.api("POST", "/api/edge_stacks", json={"Name": name, "StackFileContent": content,
                                                           "EdgeGroups": [group["Id"]], "DeploymentType": 0})
            assert r.status_code == 200, r.text
            edge_stack = r.json()
            time.sleep(2)
        start_agent(1)

        def running_everywhere() -> bool:
            status = server.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"]
            return all(status[str(e["Id"])]["Status"] == "running" for e in endpoints)

        wait_until(running_everywhere, timeout=90, interval=0.5, message="the edge stack on every site")
        for host in hosts:
            assert host.client().containers.get(f"{name}_web_1").status == "running"
        print(f"edge stack reached {len(hosts)} sites that were offline at deploy time")
        assert server.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    finally:
        for a in agents.values():
            a.stop()
        if server:
            server.stop()
        for host in hosts:
            host.remove()


# ---------------------------------------------------------------------------------------------------------------
# Load
# ---------------------------------------------------------------------------------------------------------------


async def run_clients(server, clients: int, seconds: float, tag: str, remove: bool = False) -> dict:
    """`clients` API clients in parallel for `seconds`: reads, and writes each client reads back at once (and
    then removes, with `remove`)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {server.admin_token}"}
    counts = {"requests": 0, "errors": [], "teams": {}, "users": {}}
    deadline = time.monotonic() + seconds

    async def client(number: int, session) -> None:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                for path in ("/api/status", "/api/endpoints", "/api/users/me", "/api/settings/public"):
                    async with session.get(server.url + path) as r:
                        await r.read()
                        counts["requests"] += 1
                        if r.status != 200:
                            counts["errors"].append((path, r.status))
                kind = "users" if i % 8 == 0 else "teams"  # users less often: their password hash is slow
                name = f"{tag}-{number}-{i}"
                body = {"Username": name, "Password": "a long enough password", "Role": 2} if kind == "users" \
                    else {"Name": name}
                async with session.post(f"{server.url}/api/{kind}", json=body) as r:
                    counts["requests"] += 1
                    if r.status != 200:
                        counts["errors"].append((kind, r.status, await r.text()))
                        continue
                    created = await r.json()
                counts[kind][created["Id"]] = name
                async with session.get(f"{server.url}/api/{kind}/{created['Id']}") as r:
                    counts["requests"] += 1
                    back = await r.json()
                    if r.status != 200 or back.get("Name", back.get("Username")) != name:
                        counts["errors"].append(("read back", kind, r.status))
                if remove:
                    async with session.delete(f"{server.url}/api/{kind}/{created['Id']}") as r:
                        counts["requests"] += 1
                        if r.status != 204:
                            counts["errors"].append(("remove", kind, r.status))
                    del counts[kind][created["Id"]]
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                counts["errors"].append(("connection", repr(exc)))

    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(client(n, session) for n in range(clients)))
    return counts


def check_no_write_lost(server, counts: dict) -> None:
    teams = {t["Id"]: t["Name"] for t in server.api("GET", "/api/teams").json()}
    users = {u["Id"]: u["Username"] for u in server.api("GET", "/api/users").json()}
    assert all(teams.get(i) == name for i, name in counts["teams"].items())
    assert all(users.get(i) == name for i, name in counts["users"].items())


def test_two_hundred_clients_and_a_stack_deploy_lose_nothing_and_leak_no_memory(fresh_server, engine):
    server = fresh_server()
    clients = max(2, int(200 * SCALE))
    stack_name = f"ptpy{SLOT}load"
    content = sleeping_compose()
    deployed = {}

    def deploy():
        time.sleep(5)
        deployed["response"] = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                                          json={"Name": stack_name, "StackFileContent": content}, timeout=120)

    import threading
    deployer = threading.Thread(target=deploy)
    deployer.start()
    counts = asyncio.run(run_clients(server, clients, 60 * SCALE, "main"))
    deployer.join()
    try:
        r = deployed["response"]
        assert r.status_code == 200, r.text
        assert engine.containers.get(f"{stack_name}_web_1").status == "running"
        assert counts["errors"] == [], counts["errors"][:10]
        check_no_write_lost(server, counts)
        total = counts["requests"]
        # memory: after a first short round (caches, pools, allocator arenas), rounds must not keep growing it
        rss = []
        for round_number in range(10):
            more = asyncio.run(run_clients(server, clients, 1.5 * SCALE, f"round{round_number}", remove=True))
            assert more["errors"] == [], more["errors"][:10]
            total += more["requests"]
            time.sleep(0.5)
            rss.append(server.rss_kb())
        print(f"load: {clients} clients, {total} requests, server memory by round (MB): "
              f"{[kb // 1024 for kb in rss]}")
        assert max(rss[5:]) <= rss[1] * 1.15 + 10 * 1024, rss
        # every acknowledged write is also on disk
        server.stop()
        restarted = start_server(server.data)
        check_no_write_lost(restarted, counts)
        restarted.stop()
    finally:
        for stack in server.api("GET", "/api/stacks").json() if server.process.poll() is None else []:
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1")
        for c in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={stack_name}"}):
            c.remove(force=True)


# ---------------------------------------------------------------------------------------------------------------
# Bad bodies, bad compose files, header injection
# ---------------------------------------------------------------------------------------------------------------

JSON_ROUTES = [(m, p) for m, p, h in portainer.ROUTES if m in ("POST", "PUT", "PATCH") and any(
    reader in __import__("inspect").getsource(h) for reader in ("read_json", "read_documented_fields"))]
DEEP = 100000  # nesting far past Python's recursion limit
BAD_BODIES = {
    "truncated JSON": b'{"Name": "x", ',
    "not JSON": b"\xff\xfe<xml/>",
    "a JSON array": b"[1, 2, 3]",
    "a JSON string": b'"just a string"',
    "deeply nested JSON": b"[" * DEEP + b"]" * DEEP,
    "oversized": b'{"Name": "' + b"x" * portainer.MAX_JSON_BODY + b'"}',
}
# fields of the wrong type: a route whose fields are all optional may accept it, none may fail on it
WRONG_TYPES = b'{"Name": 1, "Username": [], "Password": {}, "Role": "admin", "Endpoints": "all", "Id": 1.5}'


def test_every_json_route_answers_malformed_and_oversized_bodies_with_a_4xx_and_a_message(fresh_server):
    server = fresh_server()  # of its own: a route that accepted a bad body would change what others rely on
    assert len(JSON_ROUTES) > 20
    fuzzed = 0
    for method, path in JSON_ROUTES:
        concrete = path.replace("{id}", "1").replace("{keyId}", "1").replace("{path:.*}", "x")
        for name, body in BAD_BODIES.items():
            r = server.api(method, concrete, data=body, headers={"Content-Type": "application/json"})
            fuzzed += 1
            assert 400 <= r.status_code < 500, (method, concrete, name, r.status_code, r.text[:200])
            assert r.json()["message"], (method, concrete, name)
        r = server.api(method, concrete, data=WRONG_TYPES, headers={"Content-Type": "application/json"})
        fuzzed += 1
        assert r.status_code < 500, (method, concrete, r.status_code, r.text[:200])
    assert server.api("GET", "/api/status").status_code == 200
    print(f"bad bodies: {fuzzed} requests on {len(JSON_ROUTES)} JSON routes, all 4xx")


BAD_COMPOSE_FILES = {
    "a list at the top": "- services\n- web\n",
    "a tab indent": "services:\n\tweb:\n\t\timage: busybox:local\n",
    "deep nesting": "services: " + "[" * DEEP + "]" * DEEP + "\n",
    "deep block nesting": "services:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 2000)),
    "a service that is a string": "services:\n  web: busybox:local\n",
    "no services": "version: '3'\n",
    "an unknown tag": "services: !!python/object:os.system {}\n",
    "binary junk": "\x00\x01\x02services",
    "a duplicate key": "services:\n  web:\n    image: a\n  web:\n    image: b\n",
}


def test_bad_compose_files_are_refused_with_a_message_and_deploy_nothing(server, engine):
    name = f"ptpy{SLOT}badcompose"
    for label, content in BAD_COMPOSE_FILES.items():
        for route in ("/api/stacks/create/standalone/string?endpointId=1", "/api/edge_stacks"):
            body = {"Name": name, "StackFileContent": content, "EdgeGroups": [1], "DeploymentType": 0}
            r = server.api("POST", route, json=body)
            assert 400 <= r.status_code < 500 and r.json()["message"], (label, route, r.status_code, r.text[:200])
    assert not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"})
    assert all(s["Name"] != name for s in server.api("GET", "/api/stacks").json())


def raw_request(server, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(raw)  # the write side stays open: a half-closed client gets no answer from aiohttp
        answer = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return answer
            answer += chunk


def test_header_injection_is_refused_and_echoed_values_cannot_add_headers(server):
    auth = f"Authorization: Bearer {server.admin_token}\r\n".encode()
    for raw_value in (b"abc\rInjected: yes", b"abc\nInjected: yes", b"abc\x00def", b"abc\r\n Injected: yes"):
        answer = raw_request(server, b"GET /api/endpoints/1/docker/images/json HTTP/1.1\r\nHost: x\r\n" + auth +
                             b"X-Registry-Auth: " + raw_value + b"\r\nConnection: close\r\n\r\n")
        head, _, message = answer.partition(b"\r\n\r\n")  # refused by the HTTP parser, before any handler
        assert head.split(b" ")[1] == b"400" and message, (raw_value, answer[:200])
        assert b"\r\nInjected:" not in answer.split(b"\r\n\r\n", 1)[0]
    # values a server might echo into its own headers: paths, queries, the registry credentials it passes on
    registry_auth = base64.urlsafe_b64encode(json.dumps({"username": "u\r\nInjected: yes",
                                                         "serveraddress": "x\r\nInjected: yes"}).encode()).decode()
    echoed = [
        ("GET", "/api/x%0d%0aInjected:%20yes", {}),
        ("GET", "/api/endpoints/1/docker/containers/x%0d%0aInjected:%20yes/json", {}),
        ("GET", "/api/endpoints/1/docker/containers/json?filters=%0d%0aInjected:%20yes", {}),
        ("POST", "/api/endpoints/1/docker/images/create?fromImage=ptpy-none%0d%0aInjected:%20yes&tag=x",
         {"X-Registry-Auth": registry_auth}),
        ("GET", "/api/useractivity/logs?export=csv&keyword=%0d%0aInjected:%20yes", {}),
        ("POST", "/api/backup", {"Content-Type": "application/json"}),
    ]
    for method, path, headers in echoed:
        r = server.api(method, path, headers=headers, data=b"{}" if method == "POST" else None, timeout=60)
        if "/docker/" not in path:  # through the proxy the status is the engine's own
            assert r.status_code < 500, (path, r.status_code, r.text[:200])
        assert "Injected" not in r.headers and all("\r" not in v and "\n" not in v for v in r.headers.values()), path
        disposition = r.headers.get("Content-Disposition", "")
        assert not disposition or '"' not in disposition.split('filename="', 1)[1][:-1], disposition
    print(f"header injection: {4 + len(echoed)} attempts refused or neutral")


def test_json_nested_past_the_recursion_limit_is_a_4xx_wherever_it_is_read(server, make_user):
    nested = "[" * 1200 + "]" * 1200  # past the recursion limit, within aiohttp's 8 KiB request line
    _, _, key = make_user()
    token = portainer.b64url(nested.encode()) + "." + portainer.b64url(b"{}") + ".x"
    assert server.api("GET", "/api/users/me", token=token).status_code == 401
    r = server.api("GET", "/api/stacks?filters=" + nested)
    assert r.status_code == 400 and r.json()["message"], r.text[:200]
    r = server.api("POST", "/api/stacks/create/standalone/file?endpointId=1",
                   files={"file": ("docker-compose.yml", b"services: {}\n")}, data={"Name": "x", "Env": nested})
    assert r.status_code == 400 and r.json()["message"], r.text[:200]
    # a standard user's container body is read by the proxy's access rules before it goes to the engine
    r = server.api("POST", "/api/endpoints/1/docker/containers/create", api_key=key, data=nested,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["message"], r.text[:200]
    assert server.api("GET", "/api/status").status_code == 200
