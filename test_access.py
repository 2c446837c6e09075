"""Teams, roles per environment, resource ownership, the activity log, backups and analytics, driven as users
drive them: the Docker CLI and plain HTTP against real server processes and the real engine."""
from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import socket
import threading
import time
import urllib.parse

import docker
import pytest
import requests
from aiohttp import web

import conftest
from conftest import (ADMIN_PASSWORD, BUSYBOX, TEST_LABEL, free_port, make_namespace_host, start_server, wait_until)

import portainer

PASSWORD = "a long enough password"
OPERATOR, HELPDESK, STANDARD, READ_ONLY = 2, 3, 4, 5


# ---------------------------------------------------------------------------------------------------------------
# Helpers: users with a role, teams, containers owned by nobody
# ---------------------------------------------------------------------------------------------------------------


def new_user(server, name_hint: str) -> tuple[int, str, str]:
    """A standard user with no access to any environment: (id, token, API key)."""
    name = f"{name_hint}-{time.monotonic_ns() % 10**9}"
    r = server.api("POST", "/api/users", json={"Username": name, "Password": PASSWORD, "Role": 2})
    assert r.status_code == 200, r.text
    user_id = r.json()["Id"]
    token = server.login(name, PASSWORD)
    return user_id, token, server.create_api_key(token, user_id, PASSWORD)


def grant(server, kind: str, subject_id: int, role: int, endpoint_id: int = 1) -> None:
    """Give a user ("User") or a team ("Team") a role on an environment."""
    name = f"{kind}AccessPolicies"
    policies = server.api("GET", f"/api/endpoints/{endpoint_id}").json().get(name) or {}
    policies[str(subject_id)] = {"RoleId": role}
    r = server.api("PUT", f"/api/endpoints/{endpoint_id}", json={name: policies})
    assert r.status_code == 200, r.text


def user_with_role(server, role: int, hint: str = "user") -> tuple[int, str, str]:
    user_id, token, key = new_user(server, hint)
    grant(server, "User", user_id, role)
    return user_id, token, key


def make_team(server, name_hint: str, leaders=()) -> int:
    r = server.api("POST", "/api/teams", json={"Name": f"{name_hint}-{time.monotonic_ns() % 10**9}",
                                               "TeamLeaders": list(leaders)})
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def add_member(server, team_id: int, user_id: int, token: str | None = None) -> requests.Response:
    return server.api("POST", "/api/team_memberships", token=token,
                      json={"UserID": user_id, "TeamID": team_id, "Role": 2})


def proxy(server, method: str, path: str, key: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{server.url}/api/endpoints/1/docker/v1.41{path}",
                            headers={"X-API-Key": key}, timeout=60, **kwargs)


@pytest.fixture
def running_container(engine):
    """A container nobody owns through portainer.py (made directly on the engine)."""
    container = engine.containers.run(BUSYBOX, "sh -c 'echo hello from the box; sleep 300'", detach=True,
                                      labels={TEST_LABEL: "1"})
    yield container
    container.remove(force=True)


# ---------------------------------------------------------------------------------------------------------------
# Roles on an environment, through the API and the Docker CLI
# ---------------------------------------------------------------------------------------------------------------


def test_operator_can_restart_but_not_remove(server, running_container):
    _, _, key = user_with_role(server, OPERATOR, "operator")
    cid = running_container.id
    assert proxy(server, "POST", f"/containers/{cid}/restart?t=0", key).status_code == 204
    r = proxy(server, "DELETE", f"/containers/{cid}?force=1", key)
    assert r.status_code == 403 and "Operator" in r.json()["message"]
    server.docker("restart", "-t", "0", cid, api_key=key)
    assert "hello from the box" in server.docker("logs", cid, api_key=key).stdout
    result = server.docker("rm", "-f", cid, api_key=key, check=False)
    assert result.returncode != 0 and "does not allow" in result.stderr
    result = server.docker("run", "--rm", "--label", TEST_LABEL, BUSYBOX, "true", api_key=key, check=False)
    assert result.returncode != 0
    running_container.reload()
    assert running_container.status == "running"


def test_helpdesk_reads_everything_and_logs_but_cannot_open_a_console_or_stop(server, running_container):
    _, _, key = user_with_role(server, HELPDESK, "helpdesk")
    cid = running_container.id
    assert cid[:12] in server.docker("ps", api_key=key).stdout
    assert "hello from the box" in server.docker("logs", cid, api_key=key).stdout
    result = server.docker("exec", cid, "id", api_key=key, check=False)
    assert result.returncode != 0 and "Helpdesk" in result.stderr
    result = server.docker("stop", cid, api_key=key, check=False)
    assert result.returncode != 0
    r = proxy(server, "POST", f"/containers/{cid}/exec", key, json={"Cmd": ["id"]})
    assert r.status_code == 403
    r = proxy(server, "POST", f"/containers/{cid}/attach?stream=1&stdin=1", key)
    assert r.status_code == 403
    assert proxy(server, "GET", f"/containers/{cid}/json", key).status_code == 200


def test_user_without_access_to_an_environment_gets_403_on_its_proxy(server):
    _, _, key = new_user(server, "outsider")
    r = proxy(server, "GET", "/containers/json", key)
    assert r.status_code == 403 and "no access" in r.json()["message"]
    result = server.docker("ps", api_key=key, check=False)
    assert result.returncode != 0 and "no access" in result.stderr
    assert server.api("GET", "/api/endpoints", api_key=key).json() == []


def test_standard_user_is_refused_privileged_host_bind_mount_and_plugin_install(server):
    _, _, key = user_with_role(server, STANDARD, "standard")
    result = server.docker("run", "--rm", "--privileged", "--label", TEST_LABEL, BUSYBOX, "true", api_key=key,
                           check=False)
    assert result.returncode != 0 and "privileged" in result.stderr
    result = server.docker("run", "--rm", "-v", "/etc:/host-etc", "--label", TEST_LABEL, BUSYBOX, "true",
                           api_key=key, check=False)
    assert result.returncode != 0 and "bind mount" in result.stderr
    result = server.docker("plugin", "install", "--grant-all-permissions", "vieux/sshfs", api_key=key,
                           check=False, timeout=60)
    assert result.returncode != 0 and "administrators" in result.stderr
    r = proxy(server, "POST", "/plugins/pull?remote=vieux/sshfs", key, json=[])
    assert r.status_code == 403
    r = proxy(server, "POST", "/containers/create", key,
              json={"Image": BUSYBOX, "Labels": {TEST_LABEL: "1"}, "HostConfig": {"Binds": ["/:/host"]}})
    assert r.status_code == 403 and "bind mount" in r.json()["message"]


def test_read_only_user_can_look_but_not_create(server):
    _, _, key = user_with_role(server, READ_ONLY, "readonly")
    assert server.docker("ps", api_key=key).returncode == 0
    result = server.docker("create", "--label", TEST_LABEL, BUSYBOX, "true", api_key=key, check=False)
    assert result.returncode != 0 and "Read-only" in result.stderr
    assert proxy(server, "POST", "/volumes/create", key, json={"Name": "ro-vol"}).status_code == 403


def test_environment_administrator_may_do_host_level_calls_on_that_environment(server):
    _, _, key = user_with_role(server, 1, "envadmin")
    assert proxy(server, "GET", "/plugins", key).status_code == 200
    created = server.docker("create", "--privileged", "--label", TEST_LABEL, BUSYBOX, "true",
                            api_key=key).stdout.strip()
    server.docker("rm", created)


def test_invalid_role_ids_are_refused(server):
    r = server.api("PUT", "/api/endpoints/1", json={"UserAccessPolicies": {"1": {"RoleId": 9}}})
    assert r.status_code == 400 and "RoleId" in r.json()["message"]


# ---------------------------------------------------------------------------------------------------------------
# Teams: leaders manage members, a team's role applies to its members
# ---------------------------------------------------------------------------------------------------------------


def test_team_leader_manages_members_and_the_team_role_applies_to_them(server, running_container):
    leader_id, leader_token, _ = new_user(server, "leader")
    member_id, member_token, member_key = new_user(server, "member")
    team_id = make_team(server, "ops", leaders=[leader_id])
    grant(server, "Team", team_id, OPERATOR)
    assert proxy(server, "GET", "/containers/json", member_key).status_code == 403
    assert add_member(server, team_id, member_id, token=member_token).status_code == 403
    r = add_member(server, team_id, member_id, token=leader_token)
    assert r.status_code == 200, r.text
    membership_id = r.json()["Id"]
    r = server.api("POST", "/api/team_memberships", token=leader_token,
                   json={"UserID": member_id, "TeamID": team_id, "Role": 1})
    assert r.status_code in (403, 409)
    assert [t["Id"] for t in server.api("GET", "/api/teams", token=member_token).json()] == [team_id]
    assert any(u["Id"] == member_id for u in server.api("GET", "/api/users", token=leader_token).json())
    server.docker("restart", "-t", "0", running_container.id, api_key=member_key)
    assert [m["TeamID"] for m in server.api("GET", f"/api/users/{member_id}/memberships",
                                            token=member_token).json()] == [team_id]
    roles = server.api("GET", "/api/roles", token=member_token).json()
    assert [(r["Id"], r["Name"]) for r in roles][:3] == [(1, "Environment administrator"), (2, "Operator"),
                                                          (3, "Helpdesk")]
    memberships = server.api("GET", f"/api/teams/{team_id}/memberships", token=leader_token).json()
    assert {(m["UserID"], m["Role"]) for m in memberships} == {(leader_id, 1), (member_id, 2)}
    assert server.api("DELETE", f"/api/team_memberships/{membership_id}", token=leader_token).status_code == 204
    assert proxy(server, "GET", "/containers/json", member_key).status_code == 403
    assert server.api("DELETE", f"/api/teams/{team_id}").status_code == 204
    assert str(team_id) not in server.api("GET", "/api/endpoints/1").json()["TeamAccessPolicies"]


# ---------------------------------------------------------------------------------------------------------------
# Resource ownership
# ---------------------------------------------------------------------------------------------------------------


def test_resource_ownership_hides_another_teams_containers_and_volumes(server, engine, running_container):
    since = str(int(time.time()) - 1)
    team_a, team_b = make_team(server, "team-a"), make_team(server, "team-b")
    for team in (team_a, team_b):
        grant(server, "Team", team, STANDARD)
    users = {}
    for name, team in (("alice", team_a), ("anna", team_a), ("bob", team_b)):
        user_id, _, key = new_user(server, name)
        assert add_member(server, team, user_id).status_code == 200
        users[name] = (user_id, key)
    alice_key, anna_key, bob_key = users["alice"][1], users["anna"][1], users["bob"][1]
    cid = server.docker("run", "-d", "--label", TEST_LABEL, BUSYBOX, "sleep", "300",
                        api_key=alice_key).stdout.strip()
    server.docker("volume", "create", "--label", TEST_LABEL, f"alice-vol-{cid[:8]}", api_key=alice_key)
    labels = engine.containers.get(cid).labels
    assert labels["io.portainer.accesscontrol.users"] == str(users["alice"][0])
    assert labels["io.portainer.accesscontrol.teams"] == str(team_a)
    assert cid[:12] in server.docker("ps", api_key=anna_key).stdout
    server.docker("stop", "-t", "0", cid, api_key=anna_key)
    bob_ps = server.docker("ps", "-a", "--no-trunc", api_key=bob_key).stdout
    assert cid not in bob_ps and running_container.id not in bob_ps
    assert f"alice-vol-{cid[:8]}" not in server.docker("volume", "ls", api_key=bob_key).stdout
    assert f"alice-vol-{cid[:8]}" in server.docker("volume", "ls", api_key=anna_key).stdout
    result = server.docker("inspect", cid, api_key=bob_key, check=False)
    assert result.returncode != 0
    assert proxy(server, "GET", f"/containers/{cid}/json", bob_key).status_code == 403
    assert proxy(server, "DELETE", f"/containers/{cid}?force=1", bob_key).status_code == 403
    assert proxy(server, "POST", f"/containers/{running_container.id}/stop", bob_key).status_code == 403
    # a user cannot claim a resource for someone else by writing the labels themselves
    r = proxy(server, "POST", "/containers/create", bob_key,
              json={"Image": BUSYBOX, "Cmd": ["true"],
                    "Labels": {TEST_LABEL: "1", "io.portainer.accesscontrol.users": "1",
                               "io.portainer.accesscontrol.teams": str(team_a)}})
    assert r.status_code == 201, r.text
    bob_container = r.json()["Id"]
    assert engine.containers.get(bob_container).labels["io.portainer.accesscontrol.teams"] == str(team_b)
    assert bob_container not in server.docker("ps", "-a", "--no-trunc", api_key=anna_key).stdout
    # nor use another team's resources from a container of their own
    for args in (["-v", f"alice-vol-{cid[:8]}:/data"], ["--network", f"container:{cid}"],
                 ["--volumes-from", running_container.id]):
        result = server.docker("create", "--label", TEST_LABEL, *args, BUSYBOX, "true", api_key=bob_key, check=False)
        assert result.returncode != 0 and ("access denied" in result.stderr
                                           or "volumes from another container" in result.stderr), args
    bob_volume = f"bob-vol-{cid[:8]}"
    made = server.docker("create", "--label", TEST_LABEL, "-v", f"{bob_volume}:/data", BUSYBOX, "true",
                         api_key=bob_key).stdout.strip()
    assert bob_volume in server.docker("volume", "ls", api_key=bob_key).stdout
    assert bob_volume not in server.docker("volume", "ls", api_key=anna_key).stdout
    server.docker("rm", made, api_key=bob_key)
    server.docker("volume", "rm", bob_volume, api_key=bob_key)
    until = str(int(time.time()) + 1)
    time.sleep(1.2)
    events = {name: server.docker("events", "--since", since, "--until", until, "--format", "{{.Actor.ID}}",
                                  api_key=key, timeout=30).stdout
              for name, key in (("bob", bob_key), ("anna", anna_key))}
    assert bob_container in events["bob"] and cid not in events["bob"] and running_container.id not in events["bob"]
    assert cid in events["anna"] and bob_container not in events["anna"]
    admin_ps = server.docker("ps", "-a", "--no-trunc").stdout
    assert cid in admin_ps and bob_container in admin_ps
    server.docker("rm", "-f", cid, api_key=alice_key)
    server.docker("rm", "-f", bob_container, api_key=bob_key)
    server.docker("volume", "rm", f"alice-vol-{cid[:8]}", api_key=anna_key)


@pytest.fixture(scope="module")
def swarm_environment(server, engine):
    """A one-node Swarm on a host of its own (a network namespace), added as an environment."""
    host = make_namespace_host(3)
    host.start_engine()
    host.load_image(engine)
    client = host.client()
    with contextlib.suppress(docker.errors.APIError):
        client.swarm.leave(force=True)
    client.swarm.init(advertise_addr=host.address)
    r = server.api("POST", "/api/endpoints", json={"Name": "ownership-swarm", "EndpointCreationType": 1,
                                                  "URL": f"unix://{host.socket}"})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    yield endpoint_id
    server.api("DELETE", f"/api/endpoints/{endpoint_id}")
    with contextlib.suppress(docker.errors.APIError):
        client.swarm.leave(force=True)
    host.remove()


def test_services_and_their_tasks_are_hidden_from_another_team(server, swarm_environment):
    endpoint_id = swarm_environment
    keys = {}
    for name in ("alice", "bob"):
        team = make_team(server, f"svc-{name}")
        grant(server, "Team", team, STANDARD, endpoint_id)
        user_id, _, keys[name] = new_user(server, f"svc-{name}")
        assert add_member(server, team, user_id).status_code == 200
    service = f"alice-svc-{time.monotonic_ns() % 10**6}"
    server.docker("service", "create", "--detach", "--no-resolve-image", "--name", service, "--label", TEST_LABEL,
                  BUSYBOX, "sleep", "300",
                  endpoint_id=endpoint_id, api_key=keys["alice"])
    assert service in server.docker("service", "ls", endpoint_id=endpoint_id, api_key=keys["alice"]).stdout
    assert service not in server.docker("service", "ls", endpoint_id=endpoint_id, api_key=keys["bob"]).stdout
    result = server.docker("service", "rm", service, endpoint_id=endpoint_id, api_key=keys["bob"], check=False)
    assert result.returncode != 0 and "access denied" in result.stderr
    base = f"{server.url}/api/endpoints/{endpoint_id}/docker/v1.41"
    tasks = lambda key: requests.get(base + "/tasks", headers={"X-API-Key": key}, timeout=30).json()  # noqa: E731
    alice_tasks = wait_until(lambda: tasks(keys["alice"]), timeout=30, message="the service's task")
    assert tasks(keys["bob"]) == []
    r = requests.get(f"{base}/tasks/{alice_tasks[0]['ID']}", headers={"X-API-Key": keys["bob"]}, timeout=30)
    assert r.status_code == 403
    server.docker("service", "rm", service, endpoint_id=endpoint_id, api_key=keys["alice"])


def test_standard_user_never_sees_the_swarm_join_tokens(server, swarm_environment):
    user_id, _, key = new_user(server, "tokens")
    grant(server, "User", user_id, STANDARD, swarm_environment)
    base = f"{server.url}/api/endpoints/{swarm_environment}/docker/v1.41"
    r = requests.get(base + "/swarm", headers={"X-API-Key": key}, timeout=30)
    assert r.status_code == 200 and "ID" in r.json(), r.text
    assert "JoinTokens" not in r.json() and "SWMTKN" not in r.text
    admin = requests.get(base + "/swarm", headers={"X-API-Key": server.admin_api_key}, timeout=30).json()
    assert admin["JoinTokens"]["Worker"].startswith("SWMTKN")


def test_secrets_and_configs_belong_to_who_made_them(server, swarm_environment):
    endpoint_id = swarm_environment
    keys = {}
    for name in ("alice", "bob"):
        user_id, _, keys[name] = new_user(server, f"secret-{name}")
        grant(server, "User", user_id, STANDARD, endpoint_id)
    base = f"{server.url}/api/endpoints/{endpoint_id}/docker/v1.41"
    call = lambda method, path, who, **kw: requests.request(  # noqa: E731
        method, base + path, headers={"X-API-Key": keys[who]}, timeout=30, **kw)
    suffix = time.monotonic_ns() % 10**6
    r = call("POST", "/secrets/create", "alice", json={"Name": f"alice-pw-{suffix}", "Data": "czNjcjN0",
                                                      "Labels": {TEST_LABEL: "1"}})
    assert r.status_code == 201, r.text
    secret_id = r.json()["ID"]
    r = call("POST", "/configs/create", "alice", json={"Name": f"alice-cfg-{suffix}", "Data": "eA=="})
    assert r.status_code == 201, r.text
    config_id = r.json()["ID"]
    try:
        assert [s["ID"] for s in call("GET", "/secrets", "alice").json()] == [secret_id]
        assert call("GET", "/secrets", "bob").json() == [] and call("GET", "/configs", "bob").json() == []
        assert call("GET", f"/secrets/{secret_id}", "bob").status_code == 403
        assert call("DELETE", f"/configs/{config_id}", "bob").status_code == 403
        service = {"Name": f"bob-steals-{suffix}", "Labels": {TEST_LABEL: "1"}, "TaskTemplate": {"ContainerSpec": {
            "Image": BUSYBOX, "Args": ["sleep", "300"], "Secrets": [{"SecretID": secret_id[:10],
                                                                    "SecretName": f"alice-pw-{suffix}",
                                                                    "File": {"Name": "pw", "UID": "0", "GID": "0",
                                                                             "Mode": 292}}]}}}
        r = call("POST", "/services/create", "bob", json=service)
        assert r.status_code == 403 and "access denied" in r.json()["message"], r.text
        service["Name"] = f"alice-uses-{suffix}"
        r = call("POST", "/services/create", "alice", json=service)
        assert r.status_code == 201, r.text
        spec = call("GET", f"/services/{r.json()['ID']}", "alice").json()["Spec"]
        assert spec["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretID"] == secret_id
        assert call("DELETE", f"/services/{r.json()['ID']}", "alice").status_code == 200
    finally:
        server.api("DELETE", f"/api/endpoints/{endpoint_id}/docker/v1.41/secrets/{secret_id}")
        server.api("DELETE", f"/api/endpoints/{endpoint_id}/docker/v1.41/configs/{config_id}")


def test_administrator_shares_a_container_with_another_team_by_resource_control(server, running_container):
    team = make_team(server, "shared-with")
    grant(server, "Team", team, STANDARD)
    user_id, _, key = new_user(server, "carol")
    assert add_member(server, team, user_id).status_code == 200
    cid = running_container.id
    assert proxy(server, "GET", f"/containers/{cid}/json", key).status_code == 403
    r = server.api("POST", "/api/resource_controls", json={"ResourceID": cid, "Type": 1, "Teams": [team]})
    assert r.status_code == 200, r.text
    control_id = r.json()["Id"]
    assert proxy(server, "GET", f"/containers/{cid}/json", key).status_code == 200
    assert cid in server.docker("ps", "--no-trunc", api_key=key).stdout
    r = server.api("PUT", f"/api/resource_controls/{control_id}", json={"Teams": [], "AdministratorsOnly": True})
    assert r.status_code == 200 and r.json()["AdministratorsOnly"] is True
    assert proxy(server, "GET", f"/containers/{cid}/json", key).status_code == 403
    assert server.api("DELETE", f"/api/resource_controls/{control_id}").status_code == 204
    assert server.api("POST", "/api/resource_controls", api_key=key,
                      json={"ResourceID": cid, "Type": 1, "Public": True}).status_code == 403


# ---------------------------------------------------------------------------------------------------------------
# Security settings
# ---------------------------------------------------------------------------------------------------------------


def test_security_settings_are_editable_and_unknown_switches_refused(server):
    _, _, key = user_with_role(server, STANDARD, "sec")
    r = proxy(server, "POST", "/networks/create", key, json={"Name": "hostish", "Driver": "macvlan",
                                                            "Labels": {TEST_LABEL: "1"}})
    assert r.status_code == 403
    result = server.docker("build", "--network", "host", "-", api_key=key, input=f"FROM {BUSYBOX}\nRUN true\n",
                           check=False)
    assert result.returncode != 0 and "host network" in result.stderr
    r = proxy(server, "POST", "/services/create", key,
              json={"Name": "hostnet", "TaskTemplate": {"ContainerSpec": {"Image": BUSYBOX},
                                                        "Networks": [{"Target": "host"}]}})
    assert r.status_code == 403 and "host network" in r.json()["message"]
    r = server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowEverything": True}})
    assert r.status_code == 400
    r = server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowSysctlSettingForRegularUsers": True}})
    assert r.status_code == 200 and r.json()["SecuritySettings"]["allowSysctlSettingForRegularUsers"] is True
    try:
        r = proxy(server, "POST", "/containers/create", key,
                  json={"Image": BUSYBOX, "Cmd": ["true"], "Labels": {TEST_LABEL: "1"},
                        "HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1"}}})
        assert r.status_code == 201, r.text
        proxy(server, "DELETE", f"/containers/{r.json()['Id']}", key)
    finally:
        server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowSysctlSettingForRegularUsers": False}})


def test_stack_management_follows_the_role_and_the_environment_switch(tmp_path):
    """`require_stack_management` is what the stacks API calls before it deploys for a user."""
    from aiohttp.test_utils import make_mocked_request
    store = portainer.Store(str(tmp_path))
    store.data = portainer.Store.migrate({"schema_version": 0})
    endpoint = {"Id": 1, "UserAccessPolicies": {"2": {"RoleId": 0}, "3": {"RoleId": OPERATOR}, "4": {"RoleId": 1}},
                "TeamAccessPolicies": {}, "SecuritySettings": dict(portainer.DEFAULT_SECURITY_SETTINGS)}
    app = web.Application()
    app[portainer.STORE] = store

    def attempt(user_id: int, role: int = 2):
        request = make_mocked_request("POST", "/api/stacks", app=app)
        request[portainer.CALLER_KEY] = portainer.Caller({"Id": user_id, "Username": f"u{user_id}", "Role": role},
                                                         "apikey")
        try:
            portainer.require_stack_management(request, endpoint)
            return "allowed"
        except portainer.Forbidden as exc:
            return exc.message

    assert "disabled for non-administrators" in attempt(2)
    assert "Operator" in attempt(3)
    assert attempt(4) == "allowed"  # an environment administrator
    assert attempt(1, role=1) == "allowed"  # an administrator
    assert "no access" in attempt(5)
    endpoint["SecuritySettings"]["allowStackManagementForRegularUsers"] = True
    assert attempt(2) == "allowed" and "Operator" in attempt(3)


# ---------------------------------------------------------------------------------------------------------------
# Activity and authentication logs
# ---------------------------------------------------------------------------------------------------------------


def activity(server, path: str = "/api/useractivity/logs", **query) -> dict:
    r = server.api("GET", path, params=query)
    assert r.status_code == 200, r.text
    return r.json()


def test_activity_log_records_proxied_docker_calls_and_api_changes(server):
    user_id, _, key = user_with_role(server, STANDARD, "audited")
    name = f"audited-{time.monotonic_ns() % 10**9}"
    server.docker("create", "--name", name, "--label", TEST_LABEL, BUSYBOX, "true", api_key=key)
    server.docker("rm", name, api_key=key)
    proxy(server, "POST", "/plugins/pull?remote=evil", key, json=[])

    def logged():
        logs = activity(server, keyword="audited-")["logs"]
        return logs if any(e["path"].endswith("/containers/create") for e in logs) else None
    logs = wait_until(logged, timeout=10, message="the proxied create in the activity log")
    create = next(e for e in logs if e["path"].endswith("/containers/create"))
    assert create["userId"] == user_id and create["context"] == "local" and create["endpointId"] == 1
    assert create["method"] == "POST" and create["status"] == 201 and create["timestamp"] > time.time() - 60
    refused = activity(server, keyword="plugins/pull")["logs"]
    assert refused and refused[0]["status"] == 403 and refused[0]["username"].startswith("audited-")
    assert activity(server, keyword="/api/users")["totalCount"] >= 1  # the API call that made the user
    page = activity(server, limit=1, offset=1)
    assert len(page["logs"]) == 1 and page["totalCount"] >= 3
    r = server.api("GET", "/api/useractivity/logs", params={"limit": 2})
    assert int(r.headers["X-Total-Count"]) == r.json()["totalCount"]
    r = server.api("GET", "/api/useractivity/logs.csv", params={"keyword": "audited-"})
    rows = list(csv.reader(io.StringIO(r.text)))
    assert r.headers["Content-Type"].startswith("text/csv") and rows[0][:3] == ["timestamp", "username", "context"]
    assert any(row[4].endswith("/containers/create") for row in rows[1:])
    assert server.api("GET", "/api/useractivity/logs", api_key=key).status_code == 403
    path = os.path.join(server.data, "activity.jsonl")
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_authentication_log_records_success_and_failure_with_the_address(server):
    name = f"authlog-{time.monotonic_ns() % 10**9}"
    server.api("POST", "/api/users", json={"Username": name, "Password": PASSWORD, "Role": 2})
    assert requests.post(server.url + "/api/auth", json={"Username": name, "Password": "wrong password!!"},
                         timeout=10).status_code == 401
    server.login(name, PASSWORD)

    def both():
        logs = activity(server, "/api/useractivity/authlogs", keyword=name)["logs"]
        return logs if len(logs) >= 2 else None
    logs = wait_until(both, timeout=10, message="two authentication entries")
    assert [e["result"] for e in logs[:2]] == ["success", "failure"]
    assert all(e["origin"] == "127.0.0.1" and e["type"] == "login" for e in logs)
    r = server.api("GET", "/api/useractivity/authlogs", params={"export": "csv", "keyword": name})
    assert "failure" in r.text and "127.0.0.1" in r.text


def test_activity_log_keeps_entries_only_for_the_retention(fresh_server):
    srv = fresh_server()
    assert srv.api("PUT", "/api/settings", json={"ActivityLogRetentionDays": 1}).status_code == 200
    srv.stop()
    path = os.path.join(srv.data, "activity.jsonl")
    with open(path, "a") as f:
        f.write(json.dumps({"id": 1, "timestamp": int(time.time()) - 3 * 86400, "kind": "activity",
                            "path": "/api/ancient"}) + "\n")
        f.write(json.dumps({"id": 2, "timestamp": int(time.time()) - 3600, "kind": "activity",
                            "path": "/api/recent"}) + "\n")
    again = start_server(srv.data, admin_password=None)
    try:
        again.admin_token = again.login("admin", ADMIN_PASSWORD)
        wait_until(lambda: "/api/ancient" not in open(path).read(), timeout=10, message="compaction")
        assert activity(again, keyword="/api/recent")["totalCount"] == 1
    finally:
        again.stop()


# ---------------------------------------------------------------------------------------------------------------
# Backups
# ---------------------------------------------------------------------------------------------------------------


def restore(srv, blob: bytes, password: str | None, token: str | None = None) -> requests.Response:
    data = {"password": password} if password is not None else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(srv.url + "/api/restore", files={"file": ("backup.tar.gz", blob)}, data=data,
                         headers=headers, timeout=60)


def test_backup_and_restore_round_trip_and_refusals(fresh_server):
    source = fresh_server()
    r = source.api("POST", "/api/users", json={"Username": "carried-over", "Password": PASSWORD, "Role": 2})
    team_id = source.api("POST", "/api/teams", json={"Name": "carried-team"}).json()["Id"]
    grant(source, "Team", team_id, OPERATOR)
    r = source.api("POST", "/api/backup", json={"password": "backup secret 123"})
    assert r.status_code == 200 and ".tar.gz" in r.headers["Content-Disposition"]
    blob = r.content
    assert blob.startswith(b"PTPYBKUP") and b"carried-over" not in blob
    plain = source.api("POST", "/api/backup", json={}).content
    assert plain[:2] == b"\x1f\x8b"
    assert requests.post(source.url + "/api/backup", json={"password": "x"}, timeout=10).status_code == 401

    target = fresh_server(admin_password=None)
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    for bad, password, reason in [(blob, "wrong password!", "wrong password"),
                                  (bytes(flipped), "backup secret 123", "damaged"),
                                  (blob, "", "encrypted"),
                                  (b"not a backup at all", None, "not a portainer.py backup")]:
        r = restore(target, bad, password)
        assert r.status_code == 400 and reason in r.json()["message"], r.text
    assert requests.get(target.url + "/api/users/admin/check", timeout=5).status_code == 404
    assert not [n for n in os.listdir(target.data) if n.startswith(".restore")]

    r = restore(target, blob, "backup secret 123")
    assert r.status_code == 204, r.text
    token = target.login("admin", ADMIN_PASSWORD)
    names = {u["Username"] for u in target.api("GET", "/api/users", token=token).json()}
    assert names == {"admin", "carried-over"}
    assert target.api("GET", "/api/teams", token=token).json() == [{"Id": team_id, "Name": "carried-team"}]
    endpoint = target.api("GET", "/api/endpoints/1", token=token).json()
    assert endpoint["TeamAccessPolicies"] == {str(team_id): {"RoleId": OPERATOR}}
    assert restore(target, plain, None).status_code == 401  # an administrator exists now
    assert restore(target, plain, None, token=token).status_code == 204


# ---------------------------------------------------------------------------------------------------------------
# Analytics with a local collector
# ---------------------------------------------------------------------------------------------------------------


class Collector:
    """A tiny HTTP server on 127.0.0.1 that keeps every JSON body posted to it."""

    def __init__(self):
        self.port = free_port()
        self.received: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/collect"

    async def _collect(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        return web.Response(status=204)

    async def _start(self):
        app = web.Application()
        app.router.add_post("/collect", self._collect)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __enter__(self) -> "Collector":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_opted_in_analytics_send_exactly_the_preview_and_nothing_identifying(fresh_server):
    with Collector() as collector:
        srv = fresh_server("--analytics-url", collector.url, "--analytics-interval", "1")
        assert requests.get(srv.url + "/api/settings/public", timeout=5).json()["AnalyticsAvailable"] is True
        assert srv.api("POST", "/api/telemetry/send").status_code == 409  # off until opted in
        assert srv.api("PUT", "/api/settings", json={"EnableTelemetry": True}).status_code == 200
        preview = srv.api("GET", "/api/telemetry/preview").json()
        assert preview["Enabled"] is True
        sent = srv.api("POST", "/api/telemetry/send").json()
        assert sent["Sent"] is True
        wait_until(lambda: collector.received, timeout=10, message="the collector to get analytics")
        assert collector.received[0] == sent["Payload"]
        assert set(preview["Payload"]) == set(sent["Payload"])
        assert preview["Payload"]["instanceId"] == sent["Payload"]["instanceId"]
        text = json.dumps(collector.received[0])
        instance = requests.get(srv.url + "/api/system/status", timeout=5).json()["InstanceID"]
        for secret in ("local", "unix://", "docker.sock", "busybox", "admin", instance):
            assert secret not in text
        assert collector.received[0]["environments"] == {"docker": "1-5"}
        assert collector.received[0]["containers"] in ("0", "1-5", "6-20", "21-100", "100+")
        # the background sender goes on at its interval (a day by default, a second here)
        wait_until(lambda: len(collector.received) >= 2, timeout=10, message="a second, scheduled send")


def test_opted_out_and_no_analytics_send_nothing(fresh_server):
    with Collector() as collector:
        srv = fresh_server("--analytics-url", collector.url, "--analytics-interval", "1")
        assert srv.api("POST", "/api/telemetry/send").status_code == 409
        time.sleep(2.5)
        assert collector.received == []
        # opted in once, then restarted with --no-analytics: the choice is hidden and nothing goes out
        assert srv.api("PUT", "/api/settings", json={"EnableTelemetry": True}).status_code == 200
        srv.stop()
        collector.received.clear()
        again = start_server(srv.data, "--no-analytics", "--analytics-url", collector.url,
                             "--analytics-interval", "1", admin_password=None)
        try:
            again.admin_token = again.login("admin", ADMIN_PASSWORD)
            public = requests.get(again.url + "/api/settings/public", timeout=5).json()
            assert public["AnalyticsAvailable"] is False and public["EnableTelemetry"] is False
            assert again.api("PUT", "/api/settings", json={"EnableTelemetry": True}).status_code == 400
            assert again.api("POST", "/api/telemetry/send").status_code == 409
            time.sleep(2.5)
            assert collector.received == []
        finally:
            again.stop()


def test_unreachable_collector_slows_nothing_and_logs_no_error(fresh_server):
    silent = socket.socket()  # accepts connections into its backlog and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/collect"
        srv = fresh_server("--analytics-url", url, "--analytics-interval", "1")
        assert srv.api("PUT", "/api/settings", json={"EnableTelemetry": True}).status_code == 200
        slowest = 0.0
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            started = time.monotonic()
            assert srv.api("GET", "/api/endpoints").status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        assert slowest < 0.5
        log = srv.log()
        assert "analytics not sent" in log
        assert not [line for line in log.splitlines() if (" ERROR " in line or " WARNING " in line)
                    and "analytics" in line.lower()]
        assert log.count("analytics not sent") <= 2  # one attempt per interval, no retry loop
    finally:
        silent.close()


# ---------------------------------------------------------------------------------------------------------------
# Hardening
# ---------------------------------------------------------------------------------------------------------------


def test_the_servers_own_files_are_private(server):
    server.api("POST", "/api/backup", json={"password": "p"})
    wait_until(lambda: os.path.exists(os.path.join(server.data, "activity.jsonl")), timeout=10,
               message="the activity log file")
    found = []
    for root, dirs, files in os.walk(server.data):
        for name in dirs:
            found.append((os.path.join(root, name), os.stat(os.path.join(root, name)).st_mode & 0o777, 0o700))
        for name in files:
            found.append((os.path.join(root, name), os.stat(os.path.join(root, name)).st_mode & 0o777, 0o600))
    assert os.stat(server.data).st_mode & 0o777 == 0o700
    assert {"portainer.json", "jwt.secret", "activity.jsonl"} <= {os.path.basename(p) for p, _, _ in found}
    assert [(p, oct(mode)) for p, mode, wanted in found if mode != wanted] == []


def test_security_headers_are_sent(server):
    r = requests.get(server.url + "/api/system/status", timeout=5)
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Referrer-Policy"] == "no-referrer"


def test_the_ui_has_the_access_audit_backup_and_analytics_pages(server):
    # The page loads app.js, a module that imports the others: read them all, as the browser does.
    modules, pending = {}, ["/assets/app.js"]
    while pending:
        url = pending.pop()
        if url not in modules:
            modules[url] = requests.get(server.url + url, timeout=5).text
            pending += [urllib.parse.urljoin(url, target) for target in re.findall(r"from '([^']+)'", modules[url])]
    js = "\n".join(modules.values())
    for page in ("pageTeams", "pageEndpointAccess", "pageActivity", "pageBackup", "/api/telemetry/preview"):
        assert page in js
    index = requests.get(server.url + "/", timeout=5).text
    scripts = re.findall(r"<script[^>]*src=\"([^\"]+)\"", index)
    assert scripts and all(src.startswith("/assets/") for src in scripts)  # no analytics or other remote script


def test_an_administrator_uses_the_access_audit_and_backup_pages_in_a_browser(fresh_server):
    from playwright.sync_api import sync_playwright
    srv = fresh_server()
    bob_id, _, _ = new_user(srv, "bob")
    team_id = make_team(srv, "ops", leaders=[bob_id])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=conftest.CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(srv.url + "/#/login")
            page.fill("#u", "admin")
            page.fill("#p", ADMIN_PASSWORD)
            page.click("button.primary")
            page.wait_for_selector("text=Environments")
            page.goto(srv.url + f"/#/teams/{team_id}")
            page.wait_for_selector("select[data-role]")
            assert page.eval_on_selector("select[data-role]", "s => s.value") == "1"  # bob leads it
            page.goto(srv.url + "/#/env/1/access")
            page.wait_for_selector("#s")
            page.select_option("#s", f"User:{bob_id}")
            page.select_option("#r", "2")
            page.click("#f button.primary")
            wait_until(lambda: srv.api("GET", "/api/endpoints/1").json()["UserAccessPolicies"]
                       == {str(bob_id): {"RoleId": OPERATOR}}, timeout=10, message="access given from the UI")
            page.goto(srv.url + "/#/env/1/security")
            page.wait_for_selector("input[name=allowSysctlSettingForRegularUsers]")
            page.check("input[name=allowSysctlSettingForRegularUsers]")
            page.click("#f button.primary")
            page.wait_for_selector("text=Saved.")
            assert srv.api("GET", "/api/endpoints/1").json()["SecuritySettings"]["allowSysctlSettingForRegularUsers"]
            page.goto(srv.url + "/#/activity")
            page.fill("#q", "endpoints/1")
            wait_until(lambda: "keyword=endpoints%2F1" in page.get_attribute("#csv", "href"), timeout=10,
                       message="the search to apply")
            paths = page.eval_on_selector_all("#tb td:nth-child(5)", "cells => cells.map(c => c.textContent)")
            assert paths and all("endpoints/1" in p for p in paths)
            page.goto(srv.url + "/#/settings")
            page.wait_for_selector("#preview")
            assert '"instanceId"' in page.inner_text("#preview")
            page.goto(srv.url + "/#/backup")
            page.fill("#bp", "backup password 1")
            with page.expect_download() as download:
                page.click("#bf button.primary")
            assert download.value.suggested_filename.endswith(".tar.gz.enc")
            with open(download.value.path(), "rb") as f:
                assert f.read(8) == b"PTPYBKUP"
        finally:
            browser.close()

