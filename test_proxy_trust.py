"""Proxy trust: a standard user stays a standard user. Every Docker call is checked on exactly what the engine
will read (Go folds JSON keys case-insensitively), every field is allowed, bound to a security setting or refused,
and every resource a call names is checked on the full id the engine will get.

Driven as users drive it: raw HTTP, the Docker CLI and SDK through a real server, against the real engine. The
property tests at the end run the same rule table in-process on generated spellings of the same bodies."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests
from conftest import BUSYBOX, TEST_LABEL, wait_until
from test_fast_rules import MAP_FIELDS, REFUSED_BODIES

import portainer


def proxy(server, method: str, path: str, key: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{server.url}/api/endpoints/1/docker/v1.41{path}",
                            headers={"X-API-Key": key, **kwargs.pop("headers", {})}, timeout=60, **kwargs)


def create(server, key: str, body: dict, name: str | None = None) -> requests.Response:
    labelled = {**body, "Labels": {**body.get("Labels", {}), TEST_LABEL: "1"}}
    return proxy(server, "POST", "/containers/create" + (f"?name={name}" if name else ""), key,
                 data=json.dumps(labelled), headers={"Content-Type": "application/json"})


@pytest.fixture
def victim(engine):
    """Another user's container (made on the engine directly: nobody owns it through portainer.py), with a
    secret in its environment."""
    container = engine.containers.run(BUSYBOX, "sleep 300", detach=True, environment={"VICTIM_SECRET": "s3cr3t"},
                                      labels={TEST_LABEL: "1"})
    yield container
    container.remove(force=True)


@pytest.fixture
def standard_key(make_user):
    return make_user()[2]


# ---------------------------------------------------------------------------------------------------------------
# One canonical body: keys as Go reads them
# ---------------------------------------------------------------------------------------------------------------

FOLDED_ESCAPES = [
    {"Image": BUSYBOX, "Cmd": ["ls", "/host"], "hostconfig": {"Binds": ["/:/host"]}},
    {"Image": BUSYBOX, "Cmd": ["ls", "/host"], "hostConfig": {"binds": ["/:/host"]}},
    {"Image": BUSYBOX, "Cmd": ["ls", "/host"], "Ho\u017ftconfig": {"Binds": ["/:/host"]}},
    {"Image": BUSYBOX, "HostConfig": {"privileged": True}},
    {"Image": BUSYBOX, "HostConfig": {"pidmode": "host"}},
    {"Image": BUSYBOX, "HostConfig": {"mounts": [{"type": "bind", "source": "/", "target": "/host"}]}},
    {"Image": BUSYBOX, "HostConfig": {"\u212aernelMemory": 0, "Privileged": True}},
]


@pytest.mark.parametrize("body", FOLDED_ESCAPES, ids=range(len(FOLDED_ESCAPES)))
def test_standard_user_cannot_mount_the_host_with_folded_keys(server, standard_key, body):
    r = create(server, standard_key, body)
    assert r.status_code == 403, r.text
    assert "not allowed for non-administrators" in r.json()["message"]


def test_two_keys_folding_to_one_field_are_refused_not_merged(server, standard_key):
    raw = ('{"Image": "%s", "HostConfig": {"Privileged": false}, "hostConfig": {"Binds": ["/:/host"]}}' % BUSYBOX)
    r = proxy(server, "POST", "/containers/create", standard_key, data=raw,
              headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "twice" in r.json()["message"], r.text
    raw = '{"Image": "%s", "Labels": {"a": "1"}, "Labels": {"b": "2"}}' % BUSYBOX
    r = proxy(server, "POST", "/containers/create", standard_key, data=raw,
              headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "'Labels' appears twice" in r.json()["details"], r.text


def test_standard_user_cannot_make_a_host_path_volume_or_privileged_exec_with_folded_keys(server, standard_key):
    r = proxy(server, "POST", "/volumes/create", standard_key,
              json={"Name": f"hostroot-{time.monotonic_ns()}", "driveropts": {"type": "none", "o": "bind",
                                                                               "device": "/"}})
    assert r.status_code == 403, r.text
    name = f"trust-own-{time.monotonic_ns()}"
    assert create(server, standard_key, {"Image": BUSYBOX, "Cmd": ["sleep", "300"]}, name).status_code == 201
    try:
        assert proxy(server, "POST", f"/containers/{name}/start", standard_key).status_code == 204
        r = proxy(server, "POST", f"/containers/{name}/exec", standard_key, json={"Cmd": ["id"], "privileged": True})
        assert r.status_code == 403 and "privileged exec" in r.json()["message"], r.text
        r = proxy(server, "POST", f"/containers/{name}/exec", standard_key, json={"Cmd": ["id"]})
        assert r.status_code == 201, r.text
    finally:
        proxy(server, "DELETE", f"/containers/{name}?force=1", standard_key)


def test_a_field_the_server_does_not_know_is_refused_and_named(server, standard_key):
    r = create(server, standard_key, {"Image": BUSYBOX, "HostConfig": {"Annotations": {"x": "y"}}})
    assert r.status_code == 403 and "HostConfig.Annotations" in r.json()["message"], r.text
    r = create(server, standard_key, {"Image": BUSYBOX, "HostConfig": {"FutureEscape": {"x": "y"}}})
    assert r.status_code == 403 and "HostConfig.FutureEscape" in r.json()["message"], r.text


def test_the_engine_gets_the_canonical_body_that_was_checked(server, standard_key, engine):
    """Lower-case keys a standard user sends are forwarded under Docker's own names, with their labels."""
    name = f"trust-canonical-{time.monotonic_ns()}"
    r = proxy(server, "POST", f"/containers/create?name={name}", standard_key,
              json={"image": BUSYBOX, "cmd": ["sleep", "300"], "hostconfig": {"memory": 67108864},
                    "labels": {"mine": "yes", TEST_LABEL: "1"}})
    assert r.status_code == 201, r.text
    try:
        attrs = engine.containers.get(name).attrs
        assert attrs["HostConfig"]["Memory"] == 67108864
        assert attrs["Config"]["Labels"]["mine"] == "yes"
        assert attrs["Config"]["Labels"][portainer.OWNER_USERS_LABEL]
    finally:
        engine.containers.get(name).remove(force=True)


@pytest.mark.parametrize("body", [
    {"Image": BUSYBOX, "HostConfig": {"MaskedPaths": [], "ReadonlyPaths": []}},
    {"Image": BUSYBOX, "HostConfig": {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}},
    {"Image": BUSYBOX, "HostConfig": {"SecurityOpt": ["apparmor=unconfined"]}},
    {"Image": BUSYBOX, "HostConfig": {"CgroupParent": "/"}},
    {"Image": BUSYBOX, "HostConfig": {"UsernsMode": "host"}},
    {"Image": BUSYBOX, "HostConfig": {"VolumeDriver": "some-plugin"}},
], ids=["unmasked-proc", "inline-seccomp", "apparmor", "cgroup-parent", "userns-host", "volume-driver"])
def test_standard_user_cannot_use_escape_settings(server, standard_key, body):
    r = create(server, standard_key, body)
    assert r.status_code == 403, r.text


# ---------------------------------------------------------------------------------------------------------------
# Every reference is an ownership check, on the full id the engine gets
# ---------------------------------------------------------------------------------------------------------------


def test_links_and_shared_namespaces_to_another_users_container_are_refused(server, standard_key, victim):
    for host_config in ({"Links": [f"{victim.name}:alias"]}, {"NetworkMode": f"container:{victim.name}"},
                        {"PidMode": f"container:{victim.id}"}, {"IpcMode": f"container:{victim.id[:12]}"}):
        r = create(server, standard_key, {"Image": BUSYBOX, "Cmd": ["env"], "HostConfig": host_config})
        assert r.status_code == 403 and "access denied" in r.json()["message"], (host_config, r.text)


def test_own_links_are_forwarded_by_full_id(server, standard_key, engine):
    own = f"trust-linked-{time.monotonic_ns()}"
    assert create(server, standard_key, {"Image": BUSYBOX, "Cmd": ["sleep", "300"]}, own).status_code == 201
    try:
        r = create(server, standard_key, {"Image": BUSYBOX, "Cmd": ["env"], "HostConfig": {"Links": [f"{own}:db"]}},
                   own + "-app")
        assert r.status_code == 201, r.text
        links = engine.containers.get(own + "-app").attrs["HostConfig"]["Links"]
        assert links == [f"/{own}:/{own}-app/db"]
    finally:
        for name in (own + "-app", own):
            proxy(server, "DELETE", f"/containers/{name}?force=1", standard_key)


def test_standard_user_cannot_commit_or_build_on_another_users_container(server, standard_key, victim):
    r = proxy(server, "POST", f"/commit?container={victim.id[:12]}&repo=stolen", standard_key)
    assert r.status_code == 403, r.text
    r = proxy(server, "POST", f"/build?networkmode=container:{victim.name}", standard_key, data=b"",
              headers={"Content-Type": "application/x-tar"})
    assert r.status_code == 403, r.text
    r = proxy(server, "POST", "/build?cgroupparent=/", standard_key, data=b"",
              headers={"Content-Type": "application/x-tar"})
    assert r.status_code == 403, r.text


def test_container_named_like_a_route_is_still_checked(server, standard_key, engine):
    container = engine.containers.create(BUSYBOX, "true", name="json", labels={TEST_LABEL: "1"},
                                         environment={"VICTIM_SECRET": "s3cr3t"})
    try:
        r = proxy(server, "GET", "/containers/json/json", standard_key)
        assert r.status_code == 403 and "s3cr3t" not in r.text, r.text
    finally:
        container.remove(force=True)


def test_a_rename_between_check_and_use_never_reaches_another_container(server, standard_key, victim):
    """The user renames their own container in a loop to a prefix of the victim's id: the check resolves the
    name to their container, and the engine is then sent that container's full id, never the name."""
    prefix = victim.id[:8]
    spare = f"trust-spare-{time.monotonic_ns()}"
    assert create(server, standard_key, {"Image": BUSYBOX, "Cmd": ["sleep", "300"]}, prefix).status_code == 201
    stop = threading.Event()

    def rename_back_and_forth():
        names = [prefix, spare]
        while not stop.is_set():
            proxy(server, "POST", f"/containers/{names[0]}/rename?name={names[1]}", standard_key)
            names.reverse()

    renamer = threading.Thread(target=rename_back_and_forth)
    renamer.start()
    try:
        seen = set()
        for _ in range(150):
            r = proxy(server, "GET", f"/containers/{prefix}/json", standard_key)
            if r.status_code == 200:
                seen.add(r.json()["Id"])
            assert "s3cr3t" not in r.text
        assert victim.id not in seen
    finally:
        stop.set()
        renamer.join()
        for name in (prefix, spare):
            proxy(server, "DELETE", f"/containers/{name}?force=1", standard_key)


def test_network_connect_names_only_own_containers(server, standard_key, victim):
    name = f"trust-net-{time.monotonic_ns()}"
    r = proxy(server, "POST", "/networks/create", standard_key, json={"Name": name, "Labels": {TEST_LABEL: "1"}})
    assert r.status_code == 201, r.text
    try:
        r = proxy(server, "POST", f"/networks/{name}/connect", standard_key, json={"container": victim.id})
        assert r.status_code == 403, r.text
    finally:
        proxy(server, "DELETE", f"/networks/{name}", standard_key)


# ---------------------------------------------------------------------------------------------------------------
# What a standard user does every day still works, through the real CLI and SDK
# ---------------------------------------------------------------------------------------------------------------


def test_standard_user_runs_everyday_docker_commands_unchanged(server, standard_key):
    suffix = time.monotonic_ns() % 10**9
    network, volume = f"trust-daily-net-{suffix}", f"trust-daily-vol-{suffix}"
    server.docker("network", "create", "--label", TEST_LABEL, network, api_key=standard_key)
    try:
        name = f"trust-daily-{suffix}"
        server.docker("run", "-d", "--name", name, "--label", TEST_LABEL, "-p", "127.0.0.1::80", "-v",
                      f"{volume}:/data", "-e", "GREETING=hello", "--memory", "64m", "--network", network,
                      "--security-opt", "no-new-privileges", BUSYBOX, "sh", "-c", "echo $GREETING; sleep 300",
                      api_key=standard_key)
        wait_until(lambda: "hello" in server.docker("logs", name, api_key=standard_key).stdout)
        assert server.docker("exec", name, "cat", "/proc/1/cmdline", api_key=standard_key).returncode == 0
        client = server.docker_sdk(api_key=standard_key)
        container = client.containers.get(name)
        assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert network in container.attrs["NetworkSettings"]["Networks"]
        assert container.exec_run("echo sdk").output.strip() == b"sdk"
        server.docker("rm", "-f", name, api_key=standard_key)
        server.docker("volume", "rm", volume, api_key=standard_key)
    finally:
        server.docker("network", "rm", network, api_key=standard_key, check=False)


def lower_case_fields(value, free_keys: bool = False):
    """The Docker SDK's and CLI's own field names, all in lower case (as a hand-written script may send them)."""
    if isinstance(value, dict):
        return {(key if free_keys else key.lower()): lower_case_fields(item, key in MAP_FIELDS and not free_keys)
                for key, item in value.items()}
    if isinstance(value, list):
        return [lower_case_fields(item) for item in value]
    return value


def test_refused_bodies_are_refused_by_the_real_proxy_too(server, standard_key):
    """The corpus the property tests use, sent for real as written and with lower-case keys."""
    paths = {"container": "/containers/create", "volume": "/volumes/create", "network": "/networks/create"}
    for kind, body in REFUSED_BODIES:
        if kind in paths:
            for spelled in (body, lower_case_fields(body)):
                r = proxy(server, "POST", paths[kind], standard_key, data=json.dumps(spelled),
                          headers={"Content-Type": "application/json"})
                assert r.status_code == 403, (spelled, r.text)
