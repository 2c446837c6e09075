"""The core server, driven as users drive it: the real Docker CLI, the Docker SDK and plain HTTP."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import ADMIN_PASSWORD, BUSYBOX, HERE, TEST_LABEL, start_server, wait_until

import portainer


# ---------------------------------------------------------------------------------------------------------------
# Process, flags, first start
# ---------------------------------------------------------------------------------------------------------------


def test_help_documents_every_flag_with_its_environment_variable():
    out = subprocess.run([sys.executable, os.path.join(HERE, "portainer.py"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    for flag, env in [("--bind", "PORTAINER_BIND"), ("--bind-https", "PORTAINER_BIND_HTTPS"),
                      ("--data", "PORTAINER_DATA"), ("--host", "PORTAINER_HOST"),
                      ("--admin-password-file", "PORTAINER_ADMIN_PASSWORD_FILE"), ("--sslcert", "PORTAINER_SSLCERT"),
                      ("--sslkey", "PORTAINER_SSLKEY"), ("--http-disabled", "PORTAINER_HTTP_DISABLED"),
                      ("--no-analytics", "PORTAINER_NO_ANALYTICS"), ("--log-level", "PORTAINER_LOG_LEVEL")]:
        assert flag in out and env in out, flag


def test_flags_fall_back_to_environment_variables(monkeypatch):
    monkeypatch.setenv("PORTAINER_BIND", "127.0.0.1:1234")
    monkeypatch.setenv("PORTAINER_HTTP_DISABLED", "true")
    config = portainer.parse_args(["--data", "/tmp/x"])
    assert config.bind == "127.0.0.1:1234" and config.http_disabled and config.data == "/tmp/x"
    assert portainer.parse_args(["--bind", ":9100"]).bind == ":9100"


def test_first_start_creates_admin_and_local_environment(server):
    assert server.api("GET", "/api/users/admin/check").status_code == 204
    endpoints = server.api("GET", "/api/endpoints").json()
    local = endpoints[0]
    assert local["Id"] == 1 and local["Type"] == 1 and local["URL"] == "unix:///var/run/docker.sock"
    assert local["Status"] == 1
    snapshot = local["Snapshots"][0]
    assert snapshot["DockerVersion"] and snapshot["TotalCPU"] >= 1 and snapshot["ImageCount"] >= 1


def test_system_status_is_public_and_gives_version_and_instance(server):
    for path in ("/api/system/status", "/api/status"):
        body = requests.get(server.url + path, timeout=5).json()
        assert body["Version"] == portainer.VERSION and len(body["InstanceID"]) == 36


def test_https_uses_a_self_signed_certificate_made_once_and_reused(fresh_server, tmp_path):
    srv = fresh_server()
    r = requests.get(srv.https_url + "/api/system/status", verify=False, timeout=5)
    assert r.status_code == 200
    cert_path = os.path.join(srv.data, "certs", "cert.pem")
    first = open(cert_path).read()
    assert oct(os.stat(os.path.join(srv.data, "certs", "key.pem")).st_mode & 0o777) == "0o600"
    srv.stop()
    again = start_server(srv.data, admin_password=None)
    try:
        assert open(cert_path).read() == first
    finally:
        again.stop()


def test_http_disabled_serves_https_only(fresh_server):
    srv = fresh_server("--http-disabled", wait=False, admin_password=None)
    wait_until(lambda: requests.get(srv.https_url + "/api/status", verify=False, timeout=2).ok, message="https")
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url + "/api/status", timeout=2)


def test_sigterm_shuts_down_within_two_seconds_even_with_a_log_stream_open(fresh_server, engine):
    srv = fresh_server()
    container = engine.containers.run(BUSYBOX, "sleep 300", detach=True, labels={TEST_LABEL: "1"})
    stream = requests.get(f"{srv.url}/api/endpoints/1/docker/containers/{container.id}/logs?follow=1&stdout=1",
                          headers={"X-API-Key": srv.admin_api_key}, stream=True, timeout=30)
    assert stream.status_code == 200
    started = time.monotonic()
    srv.process.send_signal(signal.SIGTERM)
    srv.process.wait(5)
    assert time.monotonic() - started < 2.0
    assert srv.process.returncode == 0
    container.remove(force=True)


def test_second_server_on_the_same_data_directory_exits_and_the_first_keeps_running(fresh_server):
    first = fresh_server()
    second = subprocess.run([sys.executable, os.path.join(HERE, "portainer.py"), "--data", first.data,
                             "--bind", "127.0.0.1:0", "--bind-https", "127.0.0.1:0"],
                            capture_output=True, text=True, timeout=20)
    assert second.returncode != 0
    assert "already used by another portainer.py process" in second.stderr
    assert first.api("GET", "/api/endpoints").status_code == 200


# ---------------------------------------------------------------------------------------------------------------
# Store
# ---------------------------------------------------------------------------------------------------------------


def test_store_and_secrets_are_private_files(server):
    for name in ("portainer.json", "jwt.secret"):
        assert oct(os.stat(os.path.join(server.data, name)).st_mode & 0o777) == "0o600", name


def test_store_has_a_schema_version_and_migrates_an_old_document(tmp_path):
    store = portainer.Store(str(tmp_path))
    with open(store.path, "w") as f:
        json.dump({"users": {"1": {"Id": 1, "Username": "old", "Role": 1}}}, f)
    store.load()
    assert store.data["schema_version"] == portainer.SCHEMA_VERSION
    assert store.data["users"]["1"]["Username"] == "old" and store.data["endpoints"] == {}


def test_store_falls_back_to_the_previous_version_when_the_main_file_is_damaged(tmp_path):
    store = portainer.Store(str(tmp_path))
    store.load()
    store.data["settings"]["marker"] = "first"
    store.write_document(json.dumps(store.data).encode())
    store.data["settings"]["marker"] = "second"
    store.write_document(json.dumps(store.data).encode())
    with open(store.path, "w") as f:
        f.write('{"truncated": ')
    again = portainer.Store(str(tmp_path))
    again.load()
    assert again.data["settings"]["marker"] == "first"


def test_a_failed_store_write_leaves_the_last_good_document_and_reports_it(tmp_path, monkeypatch):
    import asyncio

    store = portainer.Store(str(tmp_path))
    store.load()

    async def scenario():
        store.data["settings"]["value"] = "good"
        await store.commit()

        def full_disk(payload):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store, "write_document", full_disk)
        store.data["settings"]["value"] = "lost"
        with pytest.raises(portainer.InsufficientStorage):
            await store.commit()

    asyncio.run(scenario())
    assert store.data["settings"]["value"] == "good"
    reloaded = portainer.Store(str(tmp_path))
    reloaded.load()
    assert reloaded.data["settings"]["value"] == "good"


def test_a_burst_of_writes_is_coalesced_into_few_disk_writes(tmp_path, monkeypatch):
    import asyncio

    store = portainer.Store(str(tmp_path))
    store.load()
    writes = []
    real_write = store.write_document
    monkeypatch.setattr(store, "write_document", lambda payload: (writes.append(1), real_write(payload)))

    async def burst():
        async def one(i):
            store.data["settings"][f"k{i}"] = i
            await store.commit()
        await asyncio.gather(*(one(i) for i in range(100)))

    asyncio.run(burst())
    assert len(writes) <= 3
    reloaded = portainer.Store(str(tmp_path))
    reloaded.load()
    assert all(reloaded.data["settings"][f"k{i}"] == i for i in range(100))


def test_proxied_calls_and_polls_never_write_the_store(server, engine):
    before = os.stat(os.path.join(server.data, "portainer.json")).st_mtime_ns
    client = server.docker_sdk()
    for _ in range(20):
        client.containers.list(all=True)
    server.api("POST", "/api/endpoints/1/snapshot")
    assert os.stat(os.path.join(server.data, "portainer.json")).st_mtime_ns == before


# ---------------------------------------------------------------------------------------------------------------
# Auth
# ---------------------------------------------------------------------------------------------------------------


def test_admin_init_creates_the_first_admin_once(fresh_server):
    srv = fresh_server(admin_password=None)
    assert requests.get(srv.url + "/api/users/admin/check").status_code == 404
    short = requests.post(srv.url + "/api/users/admin/init", json={"Username": "admin", "Password": "short"})
    assert short.status_code == 400 and "12 characters" in short.json()["message"]
    r = requests.post(srv.url + "/api/users/admin/init", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    assert r.status_code == 200 and r.json()["Role"] == 1
    assert requests.get(srv.url + "/api/users/admin/check").status_code == 204
    again = requests.post(srv.url + "/api/users/admin/init", json={"Username": "other", "Password": ADMIN_PASSWORD})
    assert again.status_code == 409


def test_admin_init_is_refused_after_the_window_until_restart(fresh_server):
    srv = fresh_server("--admin-init-window", "1", admin_password=None)
    time.sleep(1.2)
    r = requests.post(srv.url + "/api/users/admin/init", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    assert r.status_code == 403 and "restart" in r.json()["message"]
    srv.stop()
    restarted = start_server(srv.data, "--admin-init-window", "30", admin_password=None)
    try:
        r = requests.post(restarted.url + "/api/users/admin/init",
                          json={"Username": "admin", "Password": ADMIN_PASSWORD})
        assert r.status_code == 200
    finally:
        restarted.stop()


def test_login_gives_a_jwt_and_an_httponly_strict_cookie(server):
    r = requests.post(server.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    assert r.status_code == 200 and r.json()["jwt"].count(".") == 2
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert r.headers["X-CSRF-Token"]


def test_cookie_sessions_need_the_csrf_token_for_changes(server):
    session = requests.Session()
    r = session.post(server.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    csrf = r.headers["X-CSRF-Token"]
    assert session.get(server.url + "/api/users/me").status_code == 200
    refused = session.put(server.url + "/api/settings", json={"LogoURL": ""})
    assert refused.status_code == 403 and "CSRF" in refused.json()["message"]
    allowed = session.put(server.url + "/api/settings", json={"LogoURL": ""}, headers={"X-CSRF-Token": csrf})
    assert allowed.status_code == 200


def test_logout_revokes_the_token(server):
    token = server.login("admin", ADMIN_PASSWORD)
    assert server.api("GET", "/api/users/me", token=token).status_code == 200
    assert server.api("POST", "/api/auth/logout", token=token).status_code == 204
    r = server.api("GET", "/api/users/me", token=token)
    assert r.status_code == 401 and "logged out" in r.json()["message"]


def test_wrong_password_and_forged_tokens_are_refused(server):
    bad = requests.post(server.url + "/api/auth", json={"Username": "admin", "Password": "not the password!"})
    assert bad.status_code == 401
    header, payload, _ = server.admin_token.split(".")
    unsigned = portainer.b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode()) + "." + payload + "."
    for token in (unsigned, f"{header}.{payload}.AAAA", "garbage"):
        assert server.api("GET", "/api/users/me", token=token).status_code == 401


def test_api_keys_authenticate_are_stored_hashed_and_can_be_deleted(server):
    key = server.create_api_key(server.admin_token, 1, ADMIN_PASSWORD)
    assert key.startswith("ptr_")
    assert server.api("GET", "/api/users/me", api_key=key).json()["Username"] == "admin"
    with open(os.path.join(server.data, "portainer.json")) as f:
        assert key not in f.read()
    keys = server.api("GET", "/api/users/1/tokens").json()
    mine = [k for k in keys if key.startswith(k["prefix"])][-1]
    assert server.api("DELETE", f"/api/users/1/tokens/{mine['id']}").status_code == 204
    assert server.api("GET", "/api/users/me", api_key=key).status_code == 401


def test_api_key_creation_needs_the_password(server):
    r = server.api("POST", "/api/users/1/tokens", json={"password": "wrong password!!", "description": "x"})
    assert r.status_code == 403


def test_failed_logins_are_rate_limited_with_a_clear_429(fresh_server):
    srv = fresh_server()
    codes = [requests.post(srv.url + "/api/auth", json={"Username": "admin", "Password": f"wrong {i}"}).status_code
             for i in range(8)]
    assert codes[0] == 401 and codes[-1] == 429
    r = requests.post(srv.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD})
    assert r.status_code == 429 and "try again" in r.json()["message"] and r.headers["Retry-After"]


def test_tokens_in_the_query_string_are_refused(server):
    for name in ("token", "api_key", "jwt", "X-API-Key"):
        r = requests.get(f"{server.url}/api/users/me?{name}={server.admin_token}", timeout=5)
        assert r.status_code == 400 and "URL" in r.json()["message"], name
    r = requests.get(f"{server.url}/api/endpoints/1/docker/containers/json?token={server.admin_token}",
                     headers={"X-API-Key": server.admin_api_key}, timeout=5)
    assert r.status_code == 400


def test_every_api_route_requires_auth_unless_marked_public(server):
    public = {(m, p) for m, p, h in portainer.ROUTES if getattr(h, "public", False)}
    assert public == {("GET", "/api/system/status"), ("GET", "/api/status"), ("GET", "/api/docs/openapi.json"),
                      ("GET", "/api/users/admin/check"), ("POST", "/api/users/admin/init"), ("POST", "/api/auth"),
                      ("GET", "/api/settings/public"), ("GET", "/"), ("GET", "/assets/{path:.+}"),
                      ("POST", "/api/restore"),
                      ("GET", "/api/auth/oauth/login"), ("POST", "/api/auth/oauth/validate"),  # sign-in itself
                      ("GET", "/api/endpoints/edge/tunnel"),  # it checks the edge key's secret itself
                      ("POST", "/api/endpoints/global-key"),  # it checks the fleet's onboarding key itself
                      ("POST", "/api/webhooks/{token}"),  # the token is the secret, as in Portainer
                      ("POST", "/api/stacks/webhooks/{webhook}"),  # so is a git stack's webhook id
                      ("POST", "/api/edge_stacks/webhooks/{webhook}")}  # and a git edge stack's
    for method, path, handler in portainer.ROUTES:
        if (method, path) in public:
            continue
        concrete = re.sub(r"\{[^}]+\}", "1", path)
        r = requests.request("GET" if method == "*" else method, server.url + concrete, timeout=10)
        assert r.status_code == 401, (method, path, r.status_code)
    # restore is public only on a fresh instance; once an administrator exists it needs one
    assert requests.post(server.url + "/api/restore", timeout=10).status_code == 401


def test_password_change_invalidates_older_sessions(server, make_user):
    user_id, token, _ = make_user()
    r = server.api("PUT", f"/api/users/{user_id}/passwd", token=token,
                   json={"Password": "a long enough password", "NewPassword": "another long password"})
    assert r.status_code == 204
    assert server.api("GET", "/api/users/me", token=token).status_code == 401


def test_users_are_managed_by_administrators_only(server, make_user):
    user_id, token, _ = make_user()
    assert server.api("POST", "/api/users", token=token,
                      json={"Username": "sneaky", "Password": "a long enough password", "Role": 1}).status_code == 403
    assert server.api("PUT", f"/api/users/{user_id}", token=token, json={"Role": 1}).status_code == 403
    assert [u["Id"] for u in server.api("GET", "/api/users", token=token).json()] == [user_id]
    dup = server.api("POST", "/api/users", json={"Username": "ADMIN", "Password": "a long enough password"})
    assert dup.status_code == 409
    assert server.api("DELETE", "/api/users/1").status_code == 409  # the last administrator stays
    assert server.api("DELETE", f"/api/users/{user_id}").status_code == 204
    assert server.api("GET", "/api/users/me", token=token).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# Bad input gets a 4xx and a message
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/users", "{not json"),
    ("POST", "/api/users", "[1, 2]"),
    ("PUT", "/api/settings", '{"Bogus": 1, "snapshotInterval": true}'),  # unknown ignored, wrong type refused
    ("PUT", "/api/settings", '{"UserSessionTimeout": 12}'),
    ("POST", "/api/endpoints", '{"Name": "x", "EndpointCreationType": 99}'),
    ("POST", "/api/endpoints", '{"Name": "x", "URL": "ftp://nope"}'),
    ("PUT", "/api/endpoints/1", '{"UserAccessPolicies": {"abc": 1}}'),
    ("GET", "/api/endpoints/abc", None),
    ("GET", "/api/endpoints/99999", None),
    ("GET", "/api/users/-1", None),
    ("GET", "/api/endpoints?start=-1", None),
])
def test_bad_input_gets_a_4xx_with_a_message(server, method, path, body):
    r = server.api(method, path, data=body, headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["message"]


def test_an_oversized_body_is_refused_with_413(server):
    r = server.api("POST", "/api/users", data=b"x" * (portainer.MAX_JSON_BODY + 10))
    assert r.status_code == 413


# ---------------------------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------------------------


def test_environments_can_be_created_listed_searched_updated_and_deleted(server):
    r = server.api("POST", "/api/endpoints",
                   files={"Name": (None, "second-socket"), "EndpointCreationType": (None, "1"),
                          "URL": (None, "unix:///var/run/docker.sock")})
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["Status"] == 1 and created["Snapshots"]
    json_made = server.api("POST", "/api/endpoints", json={"Name": "json-made", "URL": "tcp://127.0.0.1:1"})
    assert json_made.status_code == 200 and json_made.json()["Status"] == 2
    listed = server.api("GET", "/api/endpoints?search=second")
    assert [e["Name"] for e in listed.json()] == ["second-socket"] and listed.headers["X-Total-Count"] == "1"
    paged = server.api("GET", "/api/endpoints?start=0&limit=1")
    assert len(paged.json()) == 1 and int(paged.headers["X-Total-Count"]) >= 3
    r = server.api("PUT", f"/api/endpoints/{created['Id']}", json={"Name": "renamed"})
    assert r.json()["Name"] == "renamed"
    assert server.api("POST", "/api/endpoints", json={"Name": "RENAMED", "URL": "tcp://x:1"}).status_code == 409
    for endpoint in (created, json_made.json()):
        assert server.api("DELETE", f"/api/endpoints/{endpoint['Id']}").status_code == 204
    assert server.api("GET", f"/api/endpoints/{created['Id']}").status_code == 404


def test_a_standard_user_sees_only_environments_they_have_access_to(server, make_user):
    _, token, key = make_user(endpoint_access=())
    assert server.api("GET", "/api/endpoints", token=token).json() == []
    assert server.api("GET", "/api/endpoints/1", token=token).status_code == 403
    r = requests.get(server.url + "/api/endpoints/1/docker/containers/json", headers={"X-API-Key": key})
    assert r.status_code == 403


# ---------------------------------------------------------------------------------------------------------------
# Docker proxy with the real Docker CLI and SDK
# ---------------------------------------------------------------------------------------------------------------


def test_docker_cli_ps_and_run_through_the_proxy(server):
    assert "CONTAINER ID" in server.docker("ps").stdout
    out = server.docker("run", "--rm", "--label", TEST_LABEL, BUSYBOX, "echo", "hello from the proxy").stdout
    assert out.strip() == "hello from the proxy"


def test_docker_cli_run_with_piped_input(server):
    out = server.docker("run", "-i", "--rm", "--label", TEST_LABEL, BUSYBOX, "sh", "-c", "read x; echo got:$x",
                        input="hello\n").stdout
    assert out.strip() == "got:hello"


def run_in_pty(argv: list[str], env: dict, keystrokes: list[bytes], expect: bytes, timeout: float = 30) -> bytes:
    """Run a command in a real terminal, type into it, and read until `expect` shows up."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    seen = b""
    deadline = time.monotonic() + timeout
    pending = list(keystrokes)
    try:
        while expect not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.3)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    break
            elif pending:
                os.write(fd, pending.pop(0))
        return seen
    finally:
        with_suppressed = [lambda: os.kill(pid, signal.SIGKILL), lambda: os.waitpid(pid, 0), lambda: os.close(fd)]
        for action in with_suppressed:
            try:
                action()
            except OSError:
                pass


def test_docker_cli_run_it_and_exec_it_in_a_terminal(server, engine):
    env = server.docker_cli_env()
    seen = run_in_pty(["docker", "run", "-it", "--rm", "--label", TEST_LABEL, BUSYBOX, "sh"], env,
                      [b"echo $((6*7))\r", b"exit\r"], b"42")
    assert b"42" in seen
    container = engine.containers.run(BUSYBOX, "sleep 300", detach=True, labels={TEST_LABEL: "1"})
    seen = run_in_pty(["docker", "exec", "-it", container.id, "sh"], env, [b"echo exec-$((2+3))\r", b"exit\r"],
                      b"exec-5")
    assert b"exec-5" in seen
    container.remove(force=True)


def test_docker_cli_logs_follow_streams_and_can_be_cancelled(server, engine):
    container = engine.containers.run(BUSYBOX, ["sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done"],
                                      detach=True, labels={TEST_LABEL: "1"})
    process = subprocess.Popen(["docker", "logs", "-f", container.id], env=server.docker_cli_env(),
                               stdout=subprocess.PIPE, text=True)
    lines = [process.stdout.readline() for _ in range(5)]
    assert lines[-1].startswith("line")
    process.send_signal(signal.SIGINT)
    process.wait(10)
    # the server is still fine after the client went away mid-stream
    assert server.docker("ps", "-q").returncode == 0
    container.remove(force=True)


def test_docker_cli_build_of_a_small_context(server, tmp_path):
    (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY hello.txt /hello.txt\nCMD cat /hello.txt\n")
    (tmp_path / "hello.txt").write_text("built through the proxy\n")
    server.docker("build", "-q", "-t", "portainer-py-test-built:1", str(tmp_path))
    out = server.docker("run", "--rm", "--label", TEST_LABEL, "portainer-py-test-built:1").stdout
    assert out.strip() == "built through the proxy"
    server.docker("rmi", "portainer-py-test-built:1")


def test_docker_sdk_runs_containers_and_reads_logs_through_the_proxy(server):
    client = server.docker_sdk()
    output = client.containers.run(BUSYBOX, "echo sdk-ok", remove=True, labels={TEST_LABEL: "1"})
    assert output.strip() == b"sdk-ok"
    container = client.containers.run(BUSYBOX, "sh -c 'echo a; echo b'", detach=True, labels={TEST_LABEL: "1"})
    container.wait(timeout=30)
    assert container.logs() == b"a\nb\n"
    assert client.info()["ID"]
    container.remove()


def test_docker_events_stay_open_and_deliver(server, engine):
    client = server.docker_sdk()
    events = client.events(decode=True, filters={"label": TEST_LABEL})
    got = []
    reader = threading.Thread(target=lambda: got.append(next(events)), daemon=True)
    reader.start()
    time.sleep(0.5)
    engine.containers.run(BUSYBOX, "true", remove=True, labels={TEST_LABEL: "1"})
    reader.join(20)
    events.close()
    assert got and got[0]["Type"] == "container"


def test_unknown_and_host_level_docker_calls_are_denied_by_default(server, make_user):
    _, _, key = make_user()
    headers = {"X-API-Key": key}
    base = server.url + "/api/endpoints/1/docker"
    assert requests.get(base + "/v1.41/nothing/here", headers=headers).status_code == 403
    assert requests.get(base + "/plugins", headers=headers).status_code == 403
    assert requests.post(base + "/plugins/pull?remote=evil", headers=headers, json=[]).status_code == 403
    assert requests.post(base + "/swarm/init", headers=headers, json={}).status_code == 403
    assert requests.post(base + "/swarm/leave", headers=headers).status_code == 403
    r = requests.get(base + "/containers/../../etc/passwd", headers=headers)
    assert r.status_code in (400, 403, 404)
    # the administrator may list plugins
    assert requests.get(base + "/plugins", headers={"X-API-Key": server.admin_api_key}).status_code == 200


@pytest.mark.parametrize("host_config,what", [
    ({"Privileged": True}, "privileged"),
    ({"PidMode": "host"}, "host namespace"),
    ({"NetworkMode": "host"}, "host namespace"),
    ({"IpcMode": "host"}, "host namespace"),
    ({"Binds": ["/:/host"]}, "bind mount"),
    ({"Mounts": [{"Type": "bind", "Source": "/etc", "Target": "/x"}]}, "bind mount"),
    ({"Devices": [{"PathOnHost": "/dev/mem", "PathInContainer": "/dev/mem", "CgroupPermissions": "rwm"}]},
     "device"),
    ({"CapAdd": ["SYS_ADMIN"]}, "capabilities"),
    ({"Sysctls": {"net.ipv4.ip_forward": "1"}}, "sysctl"),
])
def test_standard_user_cannot_create_a_container_that_gives_root_on_the_host(server, make_user, host_config, what):
    _, _, key = make_user()
    r = requests.post(server.url + "/api/endpoints/1/docker/v1.41/containers/create",
                      headers={"X-API-Key": key},
                      json={"Image": BUSYBOX, "Labels": {TEST_LABEL: "1"}, "HostConfig": host_config})
    assert r.status_code == 403 and what in r.json()["message"], r.text


def test_standard_user_is_refused_a_privileged_container_by_the_docker_cli(server, make_user):
    _, _, key = make_user()
    result = server.docker("run", "--rm", "--privileged", "--label", TEST_LABEL, BUSYBOX, "true", api_key=key,
                           check=False)
    assert result.returncode != 0 and "privileged" in result.stderr
    result = server.docker("run", "--rm", "-v", "/:/host", "--label", TEST_LABEL, BUSYBOX, "true", api_key=key,
                           check=False)
    assert result.returncode != 0 and "bind mount" in result.stderr
    ok = server.docker("run", "--rm", "-v", "portainer-py-test-vol:/data", "--label", TEST_LABEL, BUSYBOX,
                       "echo", "named volumes are fine", api_key=key)
    assert "named volumes are fine" in ok.stdout
    server.docker("volume", "rm", "portainer-py-test-vol")


def test_administrators_may_run_privileged_containers_and_settings_can_allow_users(server, make_user):
    # (this sandbox cannot start privileged containers, so creating one is the proof)
    created = server.docker("create", "--privileged", "--label", TEST_LABEL, BUSYBOX, "true").stdout.strip()
    server.docker("rm", created)
    _, _, key = make_user()
    allow = {"SecuritySettings": {"allowPrivilegedModeForRegularUsers": True}}
    assert server.api("PUT", "/api/endpoints/1", json=allow).status_code == 200
    try:
        created = server.docker("create", "--privileged", "--label", TEST_LABEL, BUSYBOX, "true",
                                api_key=key).stdout.strip()
        server.docker("rm", created)
    finally:
        server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowPrivilegedModeForRegularUsers": False}})


def test_standard_user_cannot_exec_privileged_or_create_a_host_path_volume(server, make_user, engine):
    _, _, key = make_user()
    container = engine.containers.run(BUSYBOX, "sleep 300", detach=True, labels={TEST_LABEL: "1"})
    base = server.url + "/api/endpoints/1/docker"
    r = requests.post(f"{base}/containers/{container.id}/exec", headers={"X-API-Key": key},
                      json={"Cmd": ["id"], "Privileged": True})
    assert r.status_code == 403
    r = requests.post(f"{base}/volumes/create", headers={"X-API-Key": key},
                      json={"Name": "sneaky", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}})
    assert r.status_code == 403
    container.remove(force=True)


@pytest.mark.slow
def test_docker_save_and_load_of_a_200_mb_image_streams_with_bounded_memory(server, engine, tmp_path):
    blob = tmp_path / "ctx"
    blob.mkdir()
    with open(blob / "big.bin", "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1024 * 1024))
    (blob / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY big.bin /big.bin\n")
    engine.images.build(path=str(blob), tag="portainer-py-test-big:1", rm=True)
    (blob / "big.bin").unlink()
    tar = tmp_path / "image.tar"
    rss_before = server.rss_kb()
    peak = [rss_before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_kb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        server.docker("save", "-o", str(tar), "portainer-py-test-big:1", timeout=300)
        assert tar.stat().st_size > 200 * 1024 * 1024
        engine.images.remove("portainer-py-test-big:1", force=True)
        out = server.docker("load", "-i", str(tar), timeout=300).stdout
        assert "portainer-py-test-big:1" in out
    finally:
        stop.set()
        sampler.join()
        engine.images.remove("portainer-py-test-big:1", force=True)
    growth_mb = (peak[0] - rss_before) / 1024
    assert growth_mb < 30, f"server RSS grew by {growth_mb:.1f} MB while streaming 200 MB each way"


def test_an_engine_that_is_down_makes_its_environment_down_not_the_server(server, remote_host):
    """The remote host's engine is stopped and restarted under the running server."""
    r = server.api("POST", "/api/endpoints", json={"Name": "flaky-engine", "URL": f"unix://{remote_host.socket}"})
    assert r.status_code == 200 and r.json()["Status"] == 1, r.text
    endpoint_id = r.json()["Id"]
    try:
        remote_host.stop_engine()
        assert server.api("POST", f"/api/endpoints/{endpoint_id}/snapshot").json()["Status"] == 2
        proxied = server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json")
        assert proxied.status_code == 502 and proxied.json()["message"]
        assert server.api("GET", "/api/endpoints/1").json()["Status"] == 1
        remote_host.start_engine()
        assert server.api("POST", f"/api/endpoints/{endpoint_id}/snapshot").json()["Status"] == 1
        assert server.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json").status_code == 200
    finally:
        if remote_host.engine_process is None:
            remote_host.start_engine()
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


# ---------------------------------------------------------------------------------------------------------------
# OpenAPI, UI shell
# ---------------------------------------------------------------------------------------------------------------


def test_openapi_describes_every_api_route(server):
    doc = requests.get(server.url + "/api/docs/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for method, path, handler in portainer.ROUTES:
        if not path.startswith("/api/"):
            continue
        clean = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)
        methods = ["get", "post", "put", "delete"] if method == "*" else [method.lower()]
        for m in methods:
            assert m in doc["paths"][clean], (method, path)


def test_ui_is_served_compressed_with_etag_and_a_strict_csp(server):
    r = requests.get(server.url + "/", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    again = requests.get(server.url + "/", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304


# ---------------------------------------------------------------------------------------------------------------
# Container image
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_dockerfile_builds_runs_as_non_root_and_is_managed_through_the_api(engine, tmp_path):
    subprocess.run(["make", "-C", HERE, "base-image"], check=True, timeout=600)
    image, _ = engine.images.build(path=HERE, tag="portainer-py-test-image:latest", rm=True,
                                   buildargs={"BASE": "local/python-base:bookworm"})
    password_file = tmp_path / "pw"
    password_file.write_text(ADMIN_PASSWORD)
    port = __import__("conftest").free_port()
    container = engine.containers.run(
        image.id, ["--admin-password-file", "/run/pw"], detach=True, labels={TEST_LABEL: "1"},
        ports={"9000/tcp": ("127.0.0.1", port)},
        volumes={"/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                 str(password_file): {"bind": "/run/pw", "mode": "ro"}})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(url + "/api/status", timeout=2).ok, timeout=60, message="the image to serve")
        top = container.top()
        assert top["Titles"][0] == "UID" and all(p[0] != "root" for p in top["Processes"]), top
        jwt = requests.post(url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD}).json()["jwt"]
        headers = {"Authorization": f"Bearer {jwt}"}
        endpoints = requests.get(url + "/api/endpoints", headers=headers).json()
        assert endpoints[0]["Status"] == 1
        listed = requests.get(url + "/api/endpoints/1/docker/containers/json", headers=headers).json()
        assert container.id in [c["Id"] for c in listed]
        wait_until(lambda: engine.api.inspect_container(container.id)["State"]["Health"]["Status"] == "healthy",
                   timeout=90, interval=1, message="the image's healthcheck")
    finally:
        container.remove(force=True)
        engine.images.remove(image.id, force=True)


def test_tags_label_environments_and_leave_them_when_deleted(server, make_user):
    r = server.api("POST", "/api/tags", json={"Name": "factory-floor"})
    assert r.status_code == 200, r.text
    tag_id = r.json()["ID"]
    assert server.api("POST", "/api/tags", json={"Name": "FACTORY-FLOOR"}).status_code == 409
    _, token, _ = make_user()
    assert server.api("POST", "/api/tags", token=token, json={"Name": "x"}).status_code == 403
    assert server.api("PUT", "/api/endpoints/1", json={"TagIds": [tag_id]}).status_code == 200
    listed = {t["ID"]: t for t in server.api("GET", "/api/tags").json()}
    assert listed[tag_id]["Endpoints"] == {"1": True}
    assert server.api("DELETE", f"/api/tags/{tag_id}").status_code == 204
    assert server.api("GET", "/api/endpoints/1").json()["TagIds"] == []
    assert server.api("DELETE", f"/api/tags/{tag_id}").status_code == 404
