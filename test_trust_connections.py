"""Every answer reaches only the caller who asked, every answer carries the security headers, and what an engine
answers (nulls, missing fields, wrong types) never breaks a snapshot or a page: driven against real server
processes and the real engine."""
from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import ssl
import subprocess
import sys
import time

import aiohttp
import docker
import pytest
import requests
from aiohttp import web

from conftest import BUSYBOX, DOCKER_SOCKET, HERE, SLOT, TEST_LABEL, free_port, wait_until
from test_access import STANDARD, grant, new_user, user_with_role
from test_edge import EdgeAgent, connected, create_edge_environment

import agent
import portainer

# The local agent makes its own certificate; trust in it is not what these tests are about.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


def raw_call(server, method: str, path: str, key: str, body: dict | None = None,
             expect_continue: bool = False) -> tuple[int, bytes]:
    """One request on its own connection, headers exactly as given (http.client skips the interim 100 itself)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.putrequest(method, path)
        connection.putheader("X-API-Key", key)
        if data is not None:
            connection.putheader("Content-Type", "application/json")
            connection.putheader("Content-Length", str(len(data)))
        if expect_continue:
            connection.putheader("Expect", "100-continue")
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class LocalAgent:
    """`python agent.py` on this machine, serving the machine's engine over HTTPS on a port of its own."""

    def __init__(self, tmp: str):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"https://{self.address}"
        self.log_path = os.path.join(tmp, "local-agent.log")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "agent.py"), "--host", "127.0.0.1", "--port", str(self.port),
             "--docker-host", "unix://" + DOCKER_SOCKET, "--log-level", "DEBUG"],
            cwd=HERE, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_until(self.answers, timeout=20, message="the local agent")

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"agent.py exited {self.process.returncode}:\n{open(self.log_path).read()}")
        return requests.get(self.url + "/ping", verify=False, timeout=2).status_code == 204

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def local_agent(engine, tmp_path_factory):
    running = LocalAgent(str(tmp_path_factory.mktemp("local-agent")))
    yield running
    running.stop()


# ---------------------------------------------------------------------------------------------------------------
# One answer per request
# ---------------------------------------------------------------------------------------------------------------


def test_an_answer_never_reaches_another_caller_after_expect_continue(server):
    _, _, user_key = user_with_role(server, STANDARD, "expecting")
    for attempt in range(5):
        status, raw = raw_call(server, "POST", "/api/endpoints/1/docker/v1.41/containers/create", user_key,
                               {"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"}},
                               expect_continue=True)
        assert status == 201, raw
        created = json.loads(raw)
        assert set(created) == {"Id", "Warnings"}
        # The administrator's next call, on whatever engine connection the server picks, gets its own answer.
        status, raw = raw_call(server, "GET", "/api/endpoints/1/docker/v1.41/version", server.admin_api_key)
        assert status == 200, raw
        assert "ApiVersion" in json.loads(raw), f"attempt {attempt}: the administrator got {raw[:200]!r}"
        r = server.api("GET", f"/api/endpoints/1/docker/v1.41/containers/{created['Id']}/json")
        assert r.status_code == 200 and r.json()["Id"] == created["Id"], r.text


def test_an_answer_never_reaches_another_caller_through_an_agent_after_expect_continue(server, local_agent):
    r = server.api("POST", "/api/endpoints", json={"Name": f"expect-agent-{time.monotonic_ns()}",
                                                   "EndpointCreationType": 2, "URL": local_agent.address})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    user_id, _, user_key = new_user(server, "expecting-on-agent")
    grant(server, "User", user_id, STANDARD, endpoint_id)
    # The agent is paired with this server now: a request signed with the server's key is one of its own.
    signer = agent.RequestSigner(agent.load_or_create_signing_key(os.path.join(server.data, "agent_signature.pem")))
    try:
        for attempt in range(3):
            status, raw = raw_call(server, "POST", f"/api/endpoints/{endpoint_id}/docker/v1.41/containers/create",
                                   user_key, {"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"}},
                                   expect_continue=True)
            assert status == 201 and set(json.loads(raw)) == {"Id", "Warnings"}, raw
            # Straight to the agent, as a server that sends Expect would: the agent passes no Expect on either.
            target = "/v1.41/containers/create"
            connection = http.client.HTTPSConnection(local_agent.address, timeout=20,
                                                     context=ssl._create_unverified_context())
            try:
                body = json.dumps({"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"}}).encode()
                connection.request("POST", target, body, {**dict(signer.headers("POST", target)),
                                                          "Content-Type": "application/json",
                                                          "Expect": "100-continue"})
                answer = connection.getresponse()
                assert answer.status == 201 and set(json.loads(answer.read())) == {"Id", "Warnings"}
            finally:
                connection.close()
            status, raw = raw_call(server, "GET", f"/api/endpoints/{endpoint_id}/docker/v1.41/version",
                                   server.admin_api_key)
            assert status == 200 and "ApiVersion" in json.loads(raw), f"attempt {attempt}: {raw[:200]!r}"
            direct = requests.get(local_agent.url + "/v1.41/version", verify=False, timeout=20,
                                  headers=dict(signer.headers("GET", "/v1.41/version")))
            assert direct.status_code == 200 and "ApiVersion" in direct.json(), direct.text
    finally:
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


def test_an_answer_never_reaches_another_caller_through_an_edge_tunnel_after_expect_continue(server, tmp_path):
    endpoint = create_edge_environment(server, f"expect-edge-{time.monotonic_ns()}")
    edge_agent = EdgeAgent(endpoint["EdgeKey"], f"expect-edge-{SLOT}", "unix://" + DOCKER_SOCKET,
                           str(tmp_path / "edge-agent.log"))
    try:
        wait_until(lambda: connected(server, endpoint["Id"]), timeout=30, message="the edge agent to connect")
        user_id, _, user_key = new_user(server, "expecting-on-edge")
        grant(server, "User", user_id, STANDARD, endpoint["Id"])
        base = f"/api/endpoints/{endpoint['Id']}/docker/v1.41"
        for attempt in range(3):
            status, raw = raw_call(server, "POST", base + "/containers/create", user_key,
                                   {"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"}},
                                   expect_continue=True)
            assert status == 201 and set(json.loads(raw)) == {"Id", "Warnings"}, raw
            status, raw = raw_call(server, "GET", base + "/version", server.admin_api_key)
            assert status == 200 and "ApiVersion" in json.loads(raw), f"attempt {attempt}: {raw[:200]!r}"
    finally:
        edge_agent.stop()
        server.api("DELETE", f"/api/endpoints/{endpoint['Id']}")


def engine_client() -> agent.DockerClient:
    """The shared client (the one the proxy, the agent relay and the edge tunnel use) on the real engine."""
    async def open_engine() -> agent.HttpConnection:
        return agent.HttpConnection(*await agent.open_docker_stream("unix://" + DOCKER_SOCKET))
    return agent.DockerClient(open_engine)


async def answer_of(client: agent.DockerClient, method: str, target: str, body: bytes | None = None) -> tuple:
    headers = [("Content-Type", "application/json")] if body is not None else []
    async with await client.request(method, target, headers, body, timeout=20) as response:
        return response.status, json.loads(await asyncio.wait_for(response.read(), 20))


def test_the_shared_client_never_hands_an_unread_answer_to_the_next_caller(engine):
    async def story():
        client = engine_client()
        try:
            for _ in range(3):
                # An answer left unread (a stream the caller gave up on, a body it did not want) ...
                streaming = await client.request("GET", "/v1.41/events", timeout=20)
                assert streaming.status == 200
                streaming.release()
                unwanted = await client.request("GET", "/v1.41/info", timeout=20)
                unwanted.release()
                # ... is never what the next caller reads.
                status, version = await answer_of(client, "GET", "/v1.41/version")
                assert status == 200 and "ApiVersion" in version, version
        finally:
            client.close()
    asyncio.run(story())


def test_the_shared_client_closes_a_connection_whose_request_body_was_cut_off(local_agent):
    """An agent answers an unsigned upload at once (403) and would read the rest of its body from the next
    request on that connection: the connection is closed instead, and the next caller gets its own answer."""
    async def body_the_client_abandons():
        yield b'{"Image": "'
        await asyncio.sleep(0.3)
        raise ConnectionResetError("the client went away mid-upload")

    async def open_agent() -> agent.HttpConnection:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        return agent.HttpConnection(*await agent.open_docker_stream(local_agent.url, tls))

    async def story():
        client = agent.DockerClient(open_agent)
        try:
            for _ in range(3):
                response = await client.request("POST", "/v1.41/containers/create", [
                    ("Content-Type", "application/json")], body_the_client_abandons(), body_length=1000, timeout=20)
                async with response:
                    assert response.status == 403 and not response.request_sent
                    assert "unsigned" in json.loads(await response.read())["message"]
                # A pooled connection still owing body bytes would stall here until the agent gave up on it.
                async with await client.request("GET", "/ping", timeout=5) as ping:
                    assert ping.status == 204 and ping.headers["Portainer-Agent"] == agent.AGENT_VERSION
                    await ping.read()
        finally:
            client.close()
    asyncio.run(story())


def test_the_shared_client_skips_the_engines_interim_100_continue_for_the_real_answer(engine):
    async def story():
        client = engine_client()
        connection = await client._open_connection()
        try:
            body = json.dumps({"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"}}).encode()
            # Sent as a client that waits for 100 Continue would: the engine answers 100, then 201.
            await connection.send_head("POST", "/v1.41/containers/create", [
                ("Host", "docker"), ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Expect", "100-continue")])
            await connection.send_body(body, chunked=False)
            status, _, headers = await asyncio.wait_for(connection.read_head(), 20)
            assert status == 201
            response = agent.DockerResponse(connection, "POST", status, "", headers, lambda c, r: None)
            assert set(json.loads(await response.read())) == {"Id", "Warnings"}
            # The shared client never passes a caller's Expect on, so the engine has no interim answer to give.
            status, created = await answer_of(client, "POST", "/v1.41/containers/create", body)
            assert status == 201 and set(created) == {"Id", "Warnings"}
            status, version = await answer_of(client, "GET", "/v1.41/version")
            assert status == 200 and "ApiVersion" in version
        finally:
            connection.close()
            client.close()
    asyncio.run(story())



def test_a_client_that_closes_a_followed_stream_ends_the_relay_without_an_error_logged(engine, caplog):
    """The real engine's /events relayed by agent.relay_response (what every path, local, agent, edge and relayed,
    answers with); the client reads the head and goes away, and the engine's next event is written after it."""
    async def scenario():
        client = engine_client()
        relayed = asyncio.get_running_loop().create_future()

        async def follow_events(request):
            try:
                response = await client.request("GET", "/events", timeout=30)
                return await agent.relay_response(request, response)
            finally:
                relayed.set_result(None)
        app = web.Application()
        app.router.add_get("/events", follow_events)
        runner = web.AppRunner(app, **agent.aiohttp_server_options()[0])
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{port}/events") as answer:
                    assert answer.status == 200
            name = f"ptpy-client-gone-{os.getpid()}"
            for _ in range(3):  # events the relay writes to the client that went away
                (await client.request("POST", "/volumes/create", [("Content-Type", "application/json")],
                                      json.dumps({"Name": name}).encode(), timeout=30)).release()
                (await client.request("DELETE", f"/volumes/{name}", timeout=30)).release()
            await asyncio.wait_for(relayed, 10)
        finally:
            await runner.cleanup()
            client.close()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not errors, [(r.name, r.getMessage(), r.exc_info and r.exc_info[0]) for r in errors]

# ---------------------------------------------------------------------------------------------------------------
# Security headers on every answer
# ---------------------------------------------------------------------------------------------------------------


def assert_security_headers(response: requests.Response) -> None:
    headers = response.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", dict(headers)
    assert headers.get("X-Frame-Options") == "DENY", dict(headers)
    assert headers.get("Referrer-Policy") == "no-referrer", dict(headers)
    assert "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""), dict(headers)


@pytest.fixture
def talking_container(engine):
    container = engine.containers.run(BUSYBOX, "sh -c 'while true; do echo tick; sleep 0.2; done'", detach=True,
                                      labels={TEST_LABEL: "1"})
    yield container
    container.remove(force=True)


def test_proxied_and_streamed_answers_carry_the_security_headers(server, talking_container):
    base = server.url + "/api/endpoints/1/docker"
    headers = {"X-API-Key": server.admin_api_key}
    listed = requests.get(base + "/containers/json", headers=headers, timeout=20)
    assert listed.status_code == 200 and any(c["Id"] == talking_container.id for c in listed.json())
    assert_security_headers(listed)
    with requests.get(f"{base}/v1.41/containers/{talking_container.id}/logs?follow=1&stdout=1", headers=headers,
                      stream=True, timeout=20) as logs:
        assert logs.status_code == 200
        assert b"tick" in next(logs.iter_content(64))
        assert_security_headers(logs)
    with requests.get(f"{base}/v1.41/events?since=0", headers=headers, stream=True, timeout=20) as events:
        assert events.status_code == 200
        assert_security_headers(events)
    missing = requests.get(f"{base}/v1.41/containers/no-such-container-here/json", headers=headers, timeout=20)
    assert missing.status_code == 404
    assert_security_headers(missing)
    # An ownership-bound user's streams are relayed by their own filter: they carry the headers too.
    _, _, user_key = user_with_role(server, STANDARD, "headers")
    with requests.get(f"{base}/v1.41/events?since=0", headers={"X-API-Key": user_key}, stream=True,
                      timeout=20) as events:
        assert events.status_code == 200
        assert_security_headers(events)
    for answer in (requests.get(server.url + "/api/no/such/route", timeout=20),
                   requests.get(server.url + "/api/endpoints", timeout=20),
                   requests.get(server.url + "/", timeout=20)):
        assert_security_headers(answer)


# ---------------------------------------------------------------------------------------------------------------
# Engine answers are input too
# ---------------------------------------------------------------------------------------------------------------

ORPHAN_IMAGE = f"ptpy-orphaned-image-{SLOT}:1"
UNLABELLED_VOLUME = f"ptpy-unlabelled-volume-{SLOT}"
# Made with `"Labels": null`, so it carries no test label: found by this name to clean up after a killed run.
NULL_FIELDS_CONTAINER = f"ptpy-null-fields-{SLOT}"


def engine_call(method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """One call straight to the engine's socket (no SDK defaults in between, so `null` is sent as null)."""
    async def call():
        client = engine_client()
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = [("Content-Type", "application/json")] if data is not None else []
            async with await client.request(method, path, headers, data, timeout=60) as response:
                raw = await response.read()
                return response.status, (json.loads(raw) if raw.strip() else None)
        finally:
            client.close()
    return asyncio.run(call())


@pytest.fixture
def engine_with_odd_answers(engine):
    """An engine holding what real engines hold and answer with nulls and missing parts: a container whose image
    was removed (`docker rmi -f`), a volume and an image without labels (`"Labels": null`), a container created
    with `"Labels": null` and null fields."""
    subprocess.run(["docker", "rmi", "-f", ORPHAN_IMAGE], capture_output=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(UNLABELLED_VOLUME).remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.containers.get(NULL_FIELDS_CONTAINER).remove(force=True)
    builder = engine.containers.run(BUSYBOX, "sh -c 'echo built > /marker'", detach=True, labels={TEST_LABEL: "1"})
    builder.wait()
    builder.commit(*ORPHAN_IMAGE.split(":"))
    builder.remove()
    orphan = engine.containers.create(ORPHAN_IMAGE, "true", labels={TEST_LABEL: "1", "com.docker.compose.project":
                                                                  f"ptpy-orphans-{SLOT}"})
    subprocess.run(["docker", "rmi", "-f", ORPHAN_IMAGE], check=True, capture_output=True)
    status, created = engine_call("POST", f"/v1.41/containers/create?name={NULL_FIELDS_CONTAINER}", {
        "Image": BUSYBOX, "Cmd": ["true"], "Labels": None, "Env": None, "HostConfig": None, "ExposedPorts": None})
    assert status == 201, created
    nulls = engine.containers.get(created["Id"])
    status, volume = engine_call("POST", "/v1.41/volumes/create", {"Name": UNLABELLED_VOLUME, "Labels": None})
    assert status == 201 and volume["Labels"] is None, volume
    status, images = engine_call("GET", "/v1.41/images/json")
    assert any(i["Labels"] is None for i in images)  # busybox:local, imported, has none
    yield {"orphan": orphan, "nulls": nulls}
    for container in (orphan, nulls):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
    with contextlib.suppress(docker.errors.NotFound):
        engine.volumes.get(UNLABELLED_VOLUME).remove(force=True)


def test_an_engine_with_orphaned_and_unlabelled_resources_is_added_snapshotted_and_browsed(server,
                                                                                          engine_with_odd_answers):
    orphan = engine_with_odd_answers["orphan"]
    r = server.api("POST", "/api/endpoints", json={"Name": f"odd-answers-{time.monotonic_ns()}",
                                                   "EndpointCreationType": 1, "URL": "unix://" + DOCKER_SOCKET})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    try:
        assert r.json()["Status"] == 1
        snapshot = r.json()["Snapshots"][0]
        assert snapshot["ContainerCount"] >= 2 and snapshot["VolumeCount"] >= 1 and snapshot["ImageCount"] >= 1
        assert server.api("POST", f"/api/endpoints/{endpoint_id}/snapshot").status_code in (200, 204)
        endpoints = server.api("GET", "/api/endpoints").json()
        assert any(ep["Id"] == endpoint_id and ep["Status"] == 1 for ep in endpoints)

        # What the containers, images and volumes pages ask, for an administrator and for a standard user.
        user_id, _, user_key = new_user(server, "odd-answers")
        grant(server, "User", user_id, STANDARD, endpoint_id)
        base = f"/api/endpoints/{endpoint_id}/docker/v1.41"
        for key in (server.admin_api_key, user_key):
            for path in ("/containers/json?all=1", "/images/json", "/volumes", "/networks", "/info", "/version"):
                answer = server.api("GET", base + path, api_key=key)
                assert answer.status_code == 200, (path, answer.text)
        listed = server.api("GET", base + "/containers/json?all=1", api_key=server.admin_api_key).json()
        assert orphan.id in {c["Id"] for c in listed}
        assert UNLABELLED_VOLUME not in {v["Name"] for v in server.api(
            "GET", base + "/volumes", api_key=user_key).json()["Volumes"]}  # nobody's: hidden, not a 500

        status = server.api("GET", f"/api/docker/{endpoint_id}/containers/{orphan.id}/image_status")
        assert status.status_code == 200 and status.json()["Status"] == "skipped", status.text
        statuses = server.api("GET", f"/api/endpoints/{endpoint_id}/image_status?containerIds={orphan.id}")
        assert statuses.status_code == 200 and statuses.json()[orphan.id]["Status"] == "skipped", statuses.text
        assert server.api("GET", f"/api/endpoints/{endpoint_id}/image_status").status_code == 200
        outside = server.api("GET", f"/api/stacks/outside?endpointId={endpoint_id}")
        assert outside.status_code == 200 and f"ptpy-orphans-{SLOT}" in {p["Name"] for p in outside.json()}
        recreate = server.api("POST", f"/api/docker/{endpoint_id}/containers/{orphan.id}/recreate", json={})
        assert 400 <= recreate.status_code < 500, recreate.text  # its image is gone: refused, not a 500
    finally:
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


def test_snapshots_and_filters_read_null_missing_and_wrong_typed_fields_without_failing(tmp_path):
    """Older engines, agents and proxies answer what a current engine never does (`"Labels": null` on a
    container, a list where an object belongs): what the server computes from them stays well-formed."""
    containers = [
        {"Id": "a" * 64, "Labels": None, "Names": None, "State": None, "Status": None},
        {"Id": "b" * 64, "Labels": ["not", "a", "map"], "Names": ["/web"], "State": "running",
         "Status": "Up 2 minutes (healthy)"},
        {"Id": "c" * 64, "Labels": {"com.docker.compose.project": "shop", "broken": 7}, "State": 3},
        {"Id": None}, {"Id": "../../escape"}, "not an object", None, 42,
    ]
    snapshot = portainer.snapshot_of(None, ["wrong"], containers, None, {"Volumes": None}, "x")
    assert snapshot["ContainerCount"] == 3 and snapshot["RunningContainerCount"] == 1
    assert snapshot["HealthyContainerCount"] == 1 and snapshot["StackCount"] == 1
    assert (snapshot["ImageCount"], snapshot["VolumeCount"], snapshot["NetworkCount"]) == (0, 0, 0)
    assert (snapshot["DockerVersion"], snapshot["TotalCPU"], snapshot["Swarm"]) == ("", 0, False)
    snapshot = portainer.snapshot_of({"NCPU": "4", "MemTotal": True, "Swarm": None}, {"Version": 20}, None,
                                     [{"Labels": None}], [], [{"Name": "bridge"}])
    assert (snapshot["TotalCPU"], snapshot["TotalMemory"], snapshot["ContainerCount"]) == (0, 0, 0)
    assert (snapshot["ImageCount"], snapshot["NetworkCount"]) == (1, 1)

    summaries = portainer.container_summaries(containers)
    assert [c["Labels"] for c in summaries] == [{}, {}, {"com.docker.compose.project": "shop"}]
    assert [portainer.container_name(c) for c in summaries] == ["", "web", ""]

    body = portainer.creation_body({"Id": None, "Config": {"Image": "busybox:local", "Labels": None, "Env": None},
                                    "HostConfig": None, "Mounts": [None, {"Type": "volume"}],
                                    "NetworkSettings": {"Networks": []}}, None, None)
    assert body["Image"] == "busybox:local" and body["Labels"] == {} and body["Env"] == []

    store = portainer.Store(str(tmp_path))
    store.load()
    caller = portainer.Caller({"Id": 7, "Username": "u", "Role": 2}, "apikey", {})
    assert not portainer.visible_event(store, caller, b'{"Type": "container", "Actor": null}')
    assert not portainer.visible_event(store, caller, b'{"Type": "container", "Actor": {"Attributes": [1]}}')
    rewrite = portainer.filter_owned_list(store, caller, "volumes", 1)
    assert json.loads(rewrite(b'{"Volumes": [null, {"Name": "v", "Labels": null}, 3], "Warnings": null}')) == {
        "Volumes": [], "Warnings": None}
    rewrite = portainer.filter_owned_list(store, caller, "networks", 1)
    assert json.loads(rewrite(b'[{"Name": ["x"], "Labels": null}, {"Name": "bridge", "Labels": null}]')) == [
        {"Name": "bridge", "Labels": None}]
