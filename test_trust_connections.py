"""Every answer reaches only the caller who asked, every answer carries the security headers, and what an engine
answers (nulls, missing fields, wrong types) never breaks a snapshot or a page: driven against real server
processes and the real engine."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import ssl
import subprocess
import sys
import time

import docker
import pytest
import requests

from conftest import BUSYBOX, DOCKER_SOCKET, HERE, TEST_LABEL, free_port, wait_until
from test_access import STANDARD, grant, new_user, user_with_role

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
