"""Existing Portainer clients and scripts work unchanged: the request shapes of Portainer's own swagger clients
(lower-case and exact-case keys), its system/status/motd answers, its console WebSockets, and the Docker SDK
for Python through the proxy (attach, link removal, a gzip-encoded build context), against the real engine."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import time

import aiohttp
import docker
import pytest
import requests

from conftest import ADMIN_PASSWORD, BUSYBOX, SLOT, TEST_LABEL, wait_until

PREFIX = f"ptpyclients{SLOT}"
PASSWORD = "a long enough password"
LABELS = {TEST_LABEL: "1"}


def unique(hint: str) -> str:
    return f"{PREFIX}{hint}{time.monotonic_ns() % 10**8}"


@pytest.fixture
def containers(engine):
    """Containers a test starts (through the engine or the proxy), removed afterwards by name."""
    names: list[str] = []

    def name(hint: str) -> str:
        names.append(unique(hint))
        return names[-1]

    yield name
    for item in names:
        with contextlib.suppress(docker.errors.NotFound):
            engine.containers.get(item).remove(force=True)


# ---------------------------------------------------------------------------------------------------------------
# JSON read the way Portainer reads it
# ---------------------------------------------------------------------------------------------------------------


def test_swagger_client_logs_in_with_lower_case_keys(server):
    lower = requests.post(server.url + "/api/auth", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
    assert lower.status_code == 200, lower.text
    assert set(lower.json()) == {"jwt"}
    exact = requests.post(server.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD,
                                                          "someFieldPortainerMayAdd": True}, timeout=30)
    assert exact.status_code == 200, exact.text
    wrong = requests.post(server.url + "/api/auth", json={"username": "admin", "password": 12345}, timeout=30)
    assert wrong.status_code == 400 and "Password" in wrong.json()["message"]
    twice = requests.post(server.url + "/api/auth", json={"username": "admin", "Username": "admin",
                                                          "password": ADMIN_PASSWORD}, timeout=30)
    assert twice.status_code == 400 and "same field" in twice.json()["message"]


def test_user_created_with_lower_case_keys_is_answered_with_portainers_field_names(server):
    name = unique("lower")
    r = server.api("POST", "/api/users", json={"username": name, "password": PASSWORD, "role": 2})
    assert r.status_code == 200, r.text
    user = r.json()
    assert user["Username"] == name and user["Role"] == 2 and isinstance(user["Id"], int)
    assert "username" not in user and "PasswordHash" not in user
    assert server.login(name, PASSWORD)
    wrong = server.api("POST", "/api/users", json={"Username": unique("wrong"), "Password": PASSWORD, "Role": "2"})
    assert wrong.status_code == 400 and "'Role'" in wrong.json()["message"]
    r = server.api("PUT", f"/api/users/{user['Id']}", json={"username": name + "x", "useCache": True,
                                                            "theme": {"color": "dark"}})
    assert r.status_code == 200 and r.json()["Username"] == name + "x", r.text
    assert server.api("DELETE", f"/api/users/{user['Id']}").status_code == 204


STACK_FILE = f"services:\n  web:\n    image: {BUSYBOX}\n    command: sh -c 'echo $$GREETING; sleep 600'\n" \
             f"    environment:\n      GREETING: ${{GREETING}}\n    labels: {{\"{TEST_LABEL}\": \"1\"}}\n"


@pytest.fixture
def stack_name(server, engine):
    name = unique("stk")
    yield name
    for stack in server.api("GET", "/api/stacks").json():
        if stack["Name"] == name:
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}")
    for container in engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}):
        container.remove(force=True)


def test_stack_created_and_updated_from_portainers_lower_case_payload(server, engine, stack_name):
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"name": stack_name, "stackFileContent": STACK_FILE, "fromAppTemplate": False,
                         "env": [{"Name": "GREETING", "Value": "hello"}], "webhook": ""})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["Name"] == stack_name and stack["Env"] == [{"name": "GREETING", "value": "hello"}]
    assert {"Id", "EndpointId", "Type", "Status", "CreationDate"} <= set(stack)
    web = engine.containers.get(f"{stack_name}_web_1")
    assert "GREETING=hello" in web.attrs["Config"]["Env"]

    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                   json={"stackFileContent": STACK_FILE, "env": [{"name": "GREETING", "value": "again"}],
                         "prune": True, "pullImage": False, "repullImageAndRedeploy": False})
    assert r.status_code == 200, r.text
    assert r.json()["Env"] == [{"name": "GREETING", "value": "again"}]
    assert "GREETING=again" in engine.containers.get(f"{stack_name}_web_1").attrs["Config"]["Env"]

    wrong = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                       json={"stackFileContent": STACK_FILE, "env": [{"name": "GREETING", "value": ["x"]}]})
    assert wrong.status_code == 400 and "Env[0].value" in wrong.json()["message"]


def test_full_portainer_settings_object_is_accepted_and_unknown_settings_ignored(fresh_server):
    srv = fresh_server()
    portainer_settings = {  # what Portainer's GET /api/settings answers, sent back with two changes
        "LogoURL": "", "BlackListedLabels": [], "AuthenticationMethod": 1,
        "InternalAuthSettings": {"RequiredPasswordLength": 12},
        "LDAPSettings": {"AnonymousMode": True, "ReaderDN": "", "URL": "", "TLSConfig": {"TLS": False},
                         "StartTLS": False, "SearchSettings": [{"BaseDN": "", "Filter": "", "UserNameAttribute": ""}],
                         "GroupSearchSettings": [{"GroupBaseDN": "", "GroupFilter": "", "GroupAttribute": ""}],
                         "AutoCreateUsers": True},
        "OAuthSettings": {"ClientID": "", "AccessTokenURI": "", "Scopes": "", "OAuthAutoCreateUsers": False,
                          "DefaultTeamID": 0, "SSO": True, "KubeSecretKey": None},
        "openAMTConfiguration": {"enabled": False}, "FeatureFlagSettings": None,
        "snapshotInterval": "5m", "TemplatesURL": "", "EdgeAgentCheckinInterval": 5,
        "EnableEdgeComputeFeatures": False, "userSessionTimeout": "4h", "KubeconfigExpiry": "0",
        "EnableTelemetry": False, "HelmRepositoryURL": "https://charts.bitnami.com/bitnami",
        "KubectlShellImage": "portainer/kubectl-shell", "TrustOnFirstConnect": False, "EnforceEdgeID": False,
        "AgentSecret": "", "EdgePortainerUrl": "", "Edge": {"CommandInterval": 0, "PingInterval": 0},
        "DisplayDonationHeader": False, "DisplayExternalContributors": False,
    }
    r = srv.api("PUT", "/api/settings", json=portainer_settings)
    assert r.status_code == 200, r.text
    settings = r.json()
    assert settings["SnapshotInterval"] == "5m" and settings["UserSessionTimeout"] == "4h"
    assert "snapshotInterval" not in settings
    assert settings["LDAPSettings"]["AutoCreateUsers"] is True and settings["LDAPSettings"]["AnonymousMode"] is True
    wrong = srv.api("PUT", "/api/settings", json={"snapshotInterval": 300})
    assert wrong.status_code == 400 and "'SnapshotInterval'" in wrong.json()["message"]
    assert "ignored unknown fields 'LogoURL'" not in srv.log()
    assert "ignored unknown fields 'BlackListedLabels'" in srv.log()  # logged at DEBUG, not refused


def test_every_resource_family_takes_lower_case_keys_and_answers_in_portainers_casing(fresh_server):
    srv = fresh_server()
    user = srv.api("POST", "/api/users", json={"username": "carol", "password": PASSWORD, "role": 2}).json()

    def made(path: str, body: dict, *answer_fields: str) -> dict:
        r = srv.api("POST", path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert set(answer_fields) <= set(r.json()), (path, r.json())
        return r.json()

    team = made("/api/teams", {"name": "ops", "teamLeaders": [user["Id"]]}, "Id", "Name")
    assert team["Name"] == "ops"
    assert srv.api("PUT", f"/api/teams/{team['Id']}", json={"name": "ops2"}).json()["Name"] == "ops2"
    other = made("/api/users", {"Username": "dave", "Password": PASSWORD, "Role": 2}, "Id")
    membership = made("/api/team_memberships", {"userID": other["Id"], "teamID": team["Id"], "role": 2},
                      "Id", "UserID", "TeamID", "Role")
    assert (membership["UserID"], membership["TeamID"], membership["Role"]) == (other["Id"], team["Id"], 2)
    control = made("/api/resource_controls", {"resourceID": "abc123", "type": 1, "public": True,
                                              "subResourceIDs": []}, "ResourceId", "Public")
    assert control["Public"] is True and control["ResourceId"] == "abc123"
    assert made("/api/tags", {"name": "prod"}, "ID", "Name")["Name"] == "prod"
    registry = made("/api/registries", {"name": "local", "type": 3, "url": "127.0.0.1:5999",
                                        "authentication": False, "gitlab": {}}, "Id", "Name", "URL")
    assert registry["URL"] == "127.0.0.1:5999"
    template = made("/api/custom_templates/create/string",
                    {"title": "t", "description": "d", "type": 3, "platform": 1,
                     "fileContent": f"services:\n  a:\n    image: {BUSYBOX}\n"}, "Id", "Title", "Type")
    assert template["Title"] == "t" and template["Type"] == 3
    r = srv.api("PUT", "/api/endpoints/1", json={"name": "local-renamed", "tagIDs": []})
    assert r.status_code == 200 and r.json()["Name"] == "local-renamed", r.text
    r = srv.api("PUT", f"/api/users/{user['Id']}/passwd", token=srv.login("carol", PASSWORD),
                json={"password": PASSWORD, "newPassword": PASSWORD + "!"})
    assert r.status_code == 204, r.text
    assert srv.api("POST", "/api/backup", json={"password": ""}).status_code == 200
    wrong = srv.api("POST", "/api/tags", json={"name": ["prod"]})
    assert wrong.status_code == 400 and "'Name'" in wrong.json()["message"]


# ---------------------------------------------------------------------------------------------------------------
# System, status and message of the day: answered from what the server knows, nothing fetched
# ---------------------------------------------------------------------------------------------------------------


def test_system_and_status_version_answer_portainers_fields_without_looking_anything_up(server, make_user):
    _, token, _ = make_user()
    for path in ("/api/system/version", "/api/status/version"):
        assert requests.get(server.url + path, timeout=10).status_code == 401
        answer = server.api("GET", path, token=token).json()
        assert set(answer) == {"UpdateAvailable", "LatestVersion", "ServerVersion", "ServerEdition",
                               "DatabaseVersion", "Build"}
        assert answer["UpdateAvailable"] is False and answer["LatestVersion"] == ""
        assert answer["ServerEdition"] == "CE" and answer["ServerVersion"]
        assert {"BuildNumber", "ImageTag", "GoVersion", "GitCommit"} <= set(answer["Build"])
        assert "Env" not in answer["Build"]  # Portainer shows administrators its environment; we never do
    info = server.api("GET", "/api/system/info", token=token).json()
    assert set(info) == {"platform", "agents", "edgeAgents"}
    assert info["platform"] in ("Docker Standalone", "Docker Swarm", "Docker")
    assert isinstance(info["agents"], int) and isinstance(info["edgeAgents"], int)


def test_motd_is_empty_until_an_administrator_sets_one(fresh_server):
    srv = fresh_server()
    empty = srv.api("GET", "/api/motd").json()
    assert empty == {"Title": "", "Message": "", "ContentLayout": None, "Style": "", "Hash": None}
    r = srv.api("PUT", "/api/settings", json={"messageOfTheDay": {"title": "Maintenance", "message": "Friday 6pm"}})
    assert r.status_code == 200, r.text
    motd = srv.api("GET", "/api/motd").json()
    assert motd["Title"] == "Maintenance" and motd["Message"] == "Friday 6pm"
    assert base64.b64decode(motd["Hash"]) == hashlib.md5(b"Friday 6pm").digest()
    assert requests.get(srv.url + "/api/motd", timeout=10).status_code == 401


# ---------------------------------------------------------------------------------------------------------------
# Portainer's console routes: /api/websocket/exec and /api/websocket/attach
# ---------------------------------------------------------------------------------------------------------------


async def converse(url: str, origin: str | None, send: str, expect: str, headers: dict | None = None,
                   login: tuple[str, str] | None = None) -> str:
    """Open a Portainer console WebSocket, type `send`, and read text frames until `expect` shows."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
        if login:
            async with client.post(url.split("/api/")[0].replace("ws", "http", 1) + "/api/auth",
                                   json={"username": login[0], "password": login[1]}) as answer:
                assert answer.status == 200
        async with client.ws_connect(url, origin=origin, headers=headers or {}) as ws:
            received = ""
            deadline = time.monotonic() + 20
            while expect not in received:
                await ws.send_str(send)
                with contextlib.suppress(asyncio.TimeoutError):
                    while expect not in received:
                        message = await asyncio.wait_for(ws.receive(), 1.0)
                        assert message.type == aiohttp.WSMsgType.TEXT, message  # as Portainer's hijack sends
                        received += message.data
                assert time.monotonic() < deadline, received
            return received


def test_exec_console_route_takes_an_exec_made_through_the_proxy_by_cookie_or_header(server, engine, containers):
    container = engine.containers.run(BUSYBOX, ["sleep", "600"], name=containers("exec"), detach=True, labels=LABELS)
    sdk = server.docker_sdk()
    ws_base = server.url.replace("http", "ws", 1)

    def new_exec() -> str:
        return sdk.api.exec_create(container.id, ["sh"], stdin=True, tty=True)["Id"]

    url = f"{ws_base}/api/websocket/exec?endpointId=1&id={new_exec()}"
    output = asyncio.run(converse(url, server.url, "echo cookie-$((6*7))\n", "cookie-42",
                                  login=("admin", ADMIN_PASSWORD)))
    assert "cookie-42" in output
    url = f"{ws_base}/api/websocket/exec?endpointId=1&id={new_exec()}&nodeName="
    output = asyncio.run(converse(url, None, "echo header-$((7*7))\n", "header-49",
                                  headers={"X-API-Key": server.admin_api_key}))
    assert "header-49" in output

    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    in_url = requests.get(f"{server.url}/api/websocket/exec?endpointId=1&id={new_exec()}&token={server.admin_token}",
                          headers=upgrade, timeout=10)
    assert in_url.status_code == 400
    assert "cookie" in in_url.json()["details"] and "Authorization" in in_url.json()["details"]
    not_hex = server.api("GET", "/api/websocket/exec?endpointId=1&id=../../containers", headers=upgrade)
    assert not_hex.status_code == 400 and "hexadecimal" in not_hex.json()["message"]
    no_env = server.api("GET", f"/api/websocket/exec?id={new_exec()}", headers=upgrade)
    assert no_env.status_code == 400 and "endpointId" in no_env.json()["message"]


def test_attach_console_route_and_a_standard_user_held_to_the_proxys_rules(server, engine, containers, make_user):
    shell = engine.containers.run(BUSYBOX, ["sh"], name=containers("attach"), detach=True, stdin_open=True, tty=True,
                                  labels=LABELS)
    url = f"{server.url.replace('http', 'ws', 1)}/api/websocket/attach?endpointId=1&id={shell.id}"
    output = asyncio.run(converse(url, None, "echo attached-$((8*8))\n", "attached-64",
                                  headers={"Authorization": f"Bearer {server.admin_token}"}))
    assert "attached-64" in output

    _, _, key = make_user()
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    refused = server.api("GET", f"/api/websocket/attach?endpointId=1&id={shell.id}", api_key=key, headers=upgrade)
    assert refused.status_code == 403, refused.text  # not their container
    mine = server.docker_sdk(api_key=key).containers.run(BUSYBOX, ["sh"], name=containers("mine"), detach=True,
                                                         stdin_open=True, tty=True, labels=LABELS)
    url = f"{server.url.replace('http', 'ws', 1)}/api/websocket/attach?endpointId=1&id={mine.id}"
    output = asyncio.run(converse(url, None, "echo mine-$((9*9))\n", "mine-81", headers={"X-API-Key": key}))
    assert "mine-81" in output


def test_openapi_document_lists_the_new_routes_with_their_fields(server):
    document = requests.get(server.url + "/api/docs/openapi.json", timeout=10).json()
    paths = document["paths"]
    for path in ("/api/system/version", "/api/status/version", "/api/system/info", "/api/motd",
                 "/api/websocket/exec", "/api/websocket/attach"):
        assert "get" in paths[path], path
    query = {p["name"]: p["required"] for p in paths["/api/websocket/exec"]["get"]["parameters"]}
    assert query == {"endpointId": True, "id": True, "nodeName": False}
    stack_body = paths["/api/stacks/create/standalone/string"]["post"]["requestBody"]["content"]
    properties = stack_body["application/json"]["schema"]["properties"]
    assert {"Name", "StackFileContent", "Env"} <= set(properties)
    assert properties["Env"]["items"]["properties"].keys() >= {"name", "value"}
    settings = paths["/api/settings"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert "MessageOfTheDay" in settings["properties"]


# ---------------------------------------------------------------------------------------------------------------
# The Docker SDK for Python through the proxy
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["admin", "standard user"])
def test_sdk_attaches_through_its_socket_api_and_as_a_stream(server, containers, make_user, who):
    key = server.admin_api_key if who == "admin" else make_user()[2]
    sdk = server.docker_sdk(api_key=key)
    talker = sdk.containers.run(BUSYBOX, ["sh", "-c", "while true; do echo tick; sleep 0.2; done"],
                                name=containers("talk"), detach=True, labels=LABELS)
    stream = talker.attach(stream=True)
    assert b"tick" in next(iter(stream))
    stream.close()

    shell = sdk.containers.run(BUSYBOX, ["sh"], name=containers("sock"), detach=True, stdin_open=True,
                               labels=LABELS)
    sock = shell.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    raw = sock._sock
    raw.settimeout(10)
    raw.sendall(b"echo socket-$((5*5))\n")
    received = b""
    with contextlib.suppress(TimeoutError):
        while b"socket-25" not in received:
            chunk = raw.recv(4096)
            if not chunk:
                break
            received += chunk
    sock.close()
    assert b"socket-25" in received  # multiplexed frames, as the engine sends them without a TTY


@pytest.mark.parametrize("who", ["admin", "standard user"])
def test_sdk_removes_a_link_between_two_containers(server, engine, containers, make_user, who):
    key = server.admin_api_key if who == "admin" else make_user()[2]
    sdk = server.docker_sdk(api_key=key)
    db = sdk.containers.run(BUSYBOX, ["sleep", "600"], name=containers("db"), detach=True, labels=LABELS)
    web_name = containers("web")
    sdk.containers.run(BUSYBOX, ["sleep", "600"], name=web_name, detach=True, labels=LABELS, links={db.name: "db"})
    assert engine.containers.get(web_name).attrs["HostConfig"]["Links"]
    sdk.api.remove_container(f"{web_name}/db", link=True)
    assert not engine.containers.get(web_name).attrs["HostConfig"]["Links"]
    assert engine.containers.get(db.name).status == "running"  # the linked container itself stays


def test_standard_user_cannot_remove_a_link_of_someone_elses_container(server, engine, containers, make_user):
    db = engine.containers.run(BUSYBOX, ["sleep", "600"], name=containers("odb"), detach=True, labels=LABELS)
    web_name = containers("oweb")
    engine.containers.run(BUSYBOX, ["sleep", "600"], name=web_name, detach=True, labels=LABELS,
                          links={db.name: "db"})
    sdk = server.docker_sdk(api_key=make_user()[2])
    with pytest.raises(docker.errors.APIError) as refused:
        sdk.api.remove_container(f"{web_name}/db", link=True)
    assert refused.value.status_code == 403
    with pytest.raises(docker.errors.APIError) as refused:  # without link=1 it would name the linked container
        sdk.api.remove_container(f"{web_name}/db", force=True)
    assert refused.value.status_code == 403
    assert engine.containers.get(web_name).attrs["HostConfig"]["Links"]
    assert engine.containers.get(db.name).status == "running"


def gzip_build_context(marker: str) -> io.BytesIO:
    dockerfile = f"FROM {BUSYBOX}\nRUN echo {marker} > /marker\nLABEL {TEST_LABEL}=1\n".encode()
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as archive:
        entry = tarfile.TarInfo("Dockerfile")
        entry.size = len(dockerfile)
        archive.addfile(entry, io.BytesIO(dockerfile))
        filler = os.urandom(256 * 1024)  # incompressible: the plain body is far from the gzip body's length
        entry = tarfile.TarInfo("filler.bin")
        entry.size = len(filler)
        archive.addfile(entry, io.BytesIO(filler))
    return io.BytesIO(gzip.compress(plain.getvalue()))


@pytest.mark.parametrize("who", ["admin", "standard user"])
def test_sdk_builds_from_a_gzip_encoded_context(server, engine, make_user, who):
    key = server.admin_api_key if who == "admin" else make_user()[2]
    sdk = server.docker_sdk(api_key=key)
    tag = f"{PREFIX}gzip:{who.replace(' ', '')}"
    marker = unique("built")
    try:
        image, _ = sdk.images.build(fileobj=gzip_build_context(marker), custom_context=True, encoding="gzip",
                                    tag=tag, rm=True)
        output = engine.containers.run(image.id, ["cat", "/marker"], remove=True, labels=LABELS)
        assert output.decode().strip() == marker
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            engine.images.remove(tag, force=True)
    wait_until(lambda: not engine.images.list(name=tag), timeout=10, message="the built image removed")


def test_sdk_configured_only_by_config_json_headers_is_told_how_attach_socket_gets_its_key(server, containers,
                                                                                           tmp_path, monkeypatch):
    """The SDK adds config.json's HttpHeaders to its _get/_post calls, but attach_socket() posts directly: that
    upgrade request carries no credential, so the server can only say how to send one."""
    (tmp_path / "config.json").write_text('{"HttpHeaders": {"X-API-Key": "%s"}}' % server.admin_api_key)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    sdk = docker.DockerClient(base_url=f"tcp://127.0.0.1:{server.port}/api/endpoints/1/docker", version="1.41")
    shell = sdk.containers.run(BUSYBOX, ["sleep", "600"], name=containers("cfg"), detach=True, labels=LABELS)
    assert b"" == shell.attach(stream=False, stdout=False, stderr=False)  # _post: the key from config.json
    with pytest.raises(docker.errors.APIError) as refused:
        shell.attach_socket()
    assert refused.value.status_code == 401
    assert "client.api.headers['X-API-Key']" in refused.value.explanation
    sdk.api.headers["X-API-Key"] = server.admin_api_key
    shell.attach_socket().close()
