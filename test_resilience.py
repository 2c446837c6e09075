"""The whole system as it fails in the field: crashes, faults, bad input, abuse.

Counts scale with PORTAINER_TEST_SCALE (default 1, as CI runs them) for longer local runs.
"""
from __future__ import annotations

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

from conftest import ADMIN_PASSWORD, BUSYBOX, HERE, TEST_LABEL, start_server, wait_until

import portainer

pytestmark = pytest.mark.resilience
SCALE = float(os.environ.get("PORTAINER_TEST_SCALE", "1"))


# ---------------------------------------------------------------------------------------------------------------
# Store crash safety
# ---------------------------------------------------------------------------------------------------------------

STORE_WRITER = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[2])
import portainer
async def main():
    store = portainer.Store(sys.argv[1]); store.acquire(); store.load()
    n = store.data["settings"].get("counter", 0)
    while True:
        n += 1
        store.data["settings"]["counter"] = n
        store.data["settings"]["padding"] = "x" * (n * 7919 % 20000)
        await store.commit()
        print(n, flush=True)
asyncio.run(main())
"""


def test_the_store_survives_being_killed_at_random_points_with_every_acknowledged_write(tmp_path):
    directory = str(tmp_path / "store")
    kills = int(200 * SCALE)
    survived = 0
    for round_number in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", STORE_WRITER, directory, HERE], stdout=subprocess.PIPE,
                                  text=True)
        acknowledged = 0
        # a different point in the write loop each round: after 1 to 15 acknowledged writes
        wanted = 1 + (round_number * 7) % 15
        while acknowledged < wanted:
            line = writer.stdout.readline()
            if not line:
                break
            acknowledged = int(line)
        writer.kill()
        writer.wait()
        store = portainer.Store(directory)
        store.load()
        assert store.data["settings"]["counter"] >= acknowledged, round_number
        survived += 1
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


def test_schemathesis_finds_no_server_error_and_no_schema_break(fresh_server):
    server = fresh_server()  # of its own: the fuzzer deletes and changes whatever it can reach
    if shutil.which("st") is None:
        pytest.fail("schemathesis is not installed: `make test-deps` installs it")
    examples = str(int(20 * SCALE))
    result = subprocess.run(
        ["st", "run", f"{server.url}/api/docs/openapi.json", "--url", server.url,
         "-H", f"X-API-Key: {server.admin_api_key}", "--checks", "not_a_server_error,response_schema_conformance",
         "--exclude-path-regex", "docker|logout|passwd|tokens", "-n", examples,
         "--request-timeout", "20", "--no-color"],
        capture_output=True, text=True, timeout=600)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


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
