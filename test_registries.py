"""Private registries and image updates, with a real registry (Distribution 2.8) on 127.0.0.1 and basic auth.

The story: an image is pushed to the registry, the registry is added to portainer.py with its credentials, the
image is pulled through the proxy by naming the registry, a container runs it with data in a volume, a new
version is pushed under the same tag, the container shows "update available", is recreated, shows "up to date",
and still has its data. The registry password never leaves the server.
"""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import time

import docker
import pytest
import requests

import conftest
from conftest import ADMIN_PASSWORD, BUSYBOX, SLOT, TEST_LABEL, free_port, start_server, wait_until

REGISTRY_USER = "alice"
REGISTRY_PASSWORD = "Reg1stry-pa55word-never-shown"
NAME = f"ptpy{SLOT}reg"  # prefix of everything this file makes on the engine
LABELS = {TEST_LABEL: "1"}
FAST_STOP = {"stop_signal": "SIGKILL"}  # `sleep` as PID 1 ignores SIGTERM; recreating stops the container


# ---------------------------------------------------------------------------------------------------------------
# A real registry process and a server of this file's own
# ---------------------------------------------------------------------------------------------------------------


class Registry:
    """One `docker-registry serve` on 127.0.0.1, with htpasswd basic auth when `auth`."""

    def __init__(self, root: str, auth: bool = True):
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        os.makedirs(root, exist_ok=True)
        auth_section = ""
        if auth:
            htpasswd = subprocess.run(["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD], capture_output=True,
                                      text=True, check=True).stdout
            with open(os.path.join(root, "htpasswd"), "w") as f:
                f.write(htpasswd)
            auth_section = f"auth:\n  htpasswd:\n    realm: tests\n    path: {root}/htpasswd\n"
        with open(os.path.join(root, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                    f"  delete:\n    enabled: true\nhttp:\n  addr: {self.address}\n  secret: tests\n{auth_section}")
        self.log = open(os.path.join(root, "registry.log"), "ab")
        self.process = subprocess.Popen(["/usr/bin/docker-registry", "serve", os.path.join(root, "config.yml")],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: requests.get(f"http://{self.address}/v2/", timeout=2).status_code in (200, 401),
                   timeout=20, message="the registry to answer")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


def engine_auth() -> dict:
    return {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}


def push(engine: docker.DockerClient, image: str, repository: str, tag: str, auth: dict | None = None) -> str:
    """Tag `image` as repository:tag on the engine and push it with the engine's login; returns the digest."""
    engine.images.get(image).tag(repository, tag)
    digest = ""
    for line in engine.images.push(repository, tag, stream=True, decode=True, auth_config=auth):
        assert "error" not in line, line
        digest = (line.get("aux") or {}).get("Digest", digest)
    assert digest
    return digest


def new_version(engine: docker.DockerClient, content: str) -> str:
    """A new image: busybox:local plus a /version file (a commit, no build), returned by id."""
    container = engine.containers.create(BUSYBOX, "true", labels=LABELS)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        data = content.encode()
        info = tarfile.TarInfo("version")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    container.put_archive("/", archive.getvalue())
    image = container.commit()
    container.remove()
    return image.id


def remove_image_quietly(engine: docker.DockerClient, name: str, force: bool = True) -> None:
    try:
        engine.images.remove(name, force=force)
    except docker.errors.APIError:
        pass


def registry_auth_header(registry_id: int) -> str:
    return base64.b64encode(json.dumps({"registryId": registry_id}).encode()).decode()


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory):
    reg = Registry(str(tmp_path_factory.mktemp("registry")))
    yield reg
    reg.stop()
    forget_registry_images(engine, reg.address)


def forget_registry_images(engine: docker.DockerClient, address: str) -> None:
    """Remove the tags and the digest references (kept on busybox:local too) that pushes to `address` made."""
    for image in engine.images.list():
        for name in image.tags + (image.attrs.get("RepoDigests") or []):
            if name.startswith(address + "/"):
                remove_image_quietly(engine, name, force=False)


@pytest.fixture(scope="module")
def srv(engine, tmp_path_factory):
    """A server of this file's own, checking images every 2 seconds so auto-updates can be seen quickly (the
    checks are an opt-in of each environment: turned on here)."""
    server = start_server(str(tmp_path_factory.mktemp("server") / "data"), "--image-check-interval", "2")
    r = server.api("PUT", "/api/endpoints/1", json={"EnableImageNotification": True})
    assert r.status_code == 200 and r.json()["EnableImageNotification"] is True, r.text
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry_id(srv, registry):
    r = srv.api("POST", "/api/registries", json={
        "Name": f"{NAME}-private", "Type": 3, "URL": registry.address, "Authentication": True,
        "Username": REGISTRY_USER, "Password": REGISTRY_PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def standard_user(srv, name: str) -> tuple[int, str]:
    """A standard user with access to environment 1; returns (user id, API key)."""
    password = "a long enough password"
    r = srv.api("POST", "/api/users", json={"Username": name, "Password": password, "Role": 2})
    assert r.status_code == 200, r.text
    user_id = r.json()["Id"]
    policies = srv.api("GET", "/api/endpoints/1").json().get("UserAccessPolicies") or {}
    policies[str(user_id)] = {"RoleId": 0}
    assert srv.api("PUT", "/api/endpoints/1", json={"UserAccessPolicies": policies}).status_code == 200
    token = srv.login(name, password)
    return user_id, srv.create_api_key(token, user_id, password)


def assert_no_password(response: requests.Response) -> None:
    assert REGISTRY_PASSWORD not in response.text


def image_status(srv, container_id: str, api_key: str | None = None) -> dict:
    r = srv.api("GET", f"/api/docker/1/containers/{container_id}/image_status?refresh=true", api_key=api_key)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------------------------
# Registries and their credentials
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, domain, repository, tag", [
    ("busybox", "docker.io", "library/busybox", "latest"),
    ("user/app:1.2", "docker.io", "user/app", "1.2"),
    ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", "v1"),
    ("localhost/app", "localhost", "app", "latest"),
    ("registry.example.com/app@sha256:" + "a" * 64, "registry.example.com", "app", ""),
])
def test_image_names_are_read_as_the_engine_reads_them(name, domain, repository, tag):
    import portainer

    reference = portainer.ImageReference.parse(name)
    assert (reference.domain, reference.repository, reference.tag) == (domain, repository, tag)


def test_a_sealed_password_opens_only_with_its_key():
    import portainer
    from cryptography.exceptions import InvalidTag

    sealed = portainer.RegistryPasswords(b"k" * 32).seal(REGISTRY_PASSWORD)
    assert REGISTRY_PASSWORD not in sealed and sealed != portainer.RegistryPasswords(b"k" * 32).seal(REGISTRY_PASSWORD)
    assert portainer.RegistryPasswords(b"k" * 32).open(sealed) == REGISTRY_PASSWORD
    with pytest.raises(InvalidTag):
        portainer.RegistryPasswords(b"x" * 32).open(sealed)


def test_registry_password_is_sealed_at_rest_and_never_returned(srv, registry, registry_id):
    listed = srv.api("GET", "/api/registries")
    assert listed.status_code == 200
    mine = next(r for r in listed.json() if r["Id"] == registry_id)
    assert mine["Name"] == f"{NAME}-private" and mine["Type"] == 3 and mine["URL"] == registry.address
    assert mine["Authentication"] is True and mine["Username"] == REGISTRY_USER and mine["Password"] == ""
    for response in (listed, srv.api("GET", f"/api/registries/{registry_id}"),
                     srv.api("PUT", f"/api/registries/{registry_id}", json={"Name": f"{NAME}-private"}),
                     srv.api("GET", "/api/endpoints/1/registries")):
        assert response.status_code == 200, response.text
        assert_no_password(response)
    with open(os.path.join(srv.data, "portainer.json")) as f:
        assert REGISTRY_PASSWORD not in f.read()
    assert oct(os.stat(os.path.join(srv.data, "registry.key")).st_mode & 0o777) == "0o600"


def test_only_administrators_manage_registries_and_bad_input_gets_a_message(srv, registry_id):
    _, key = standard_user(srv, f"{NAME}-viewer")
    assert srv.api("POST", "/api/registries", api_key=key, json={"Name": "x", "URL": "x.example"}).status_code == 403
    assert srv.api("DELETE", f"/api/registries/{registry_id}", api_key=key).status_code == 403
    assert srv.api("GET", f"/api/registries/{registry_id}", api_key=key).status_code == 403
    assert all(r["Id"] != registry_id for r in srv.api("GET", "/api/registries", api_key=key).json())
    for body in ({"Name": "no url"}, {"Name": "bad type", "URL": "r.example", "Type": 99},
                 {"Name": "no user", "URL": "r.example", "Authentication": True},
                 {"Name": f"{NAME}-private", "URL": "r.example"}):
        r = srv.api("POST", "/api/registries", json=body)
        assert r.status_code in (400, 409) and r.json()["message"], (body, r.text)
    r = srv.api("POST", "/api/registries", json={"Name": f"{NAME}-temp", "URL": "registry.example.com"})
    assert r.status_code == 200
    assert srv.api("DELETE", f"/api/registries/{r.json()['Id']}").status_code == 204
    assert srv.api("GET", f"/api/registries/{r.json()['Id']}").status_code == 404


def test_repositories_and_tags_of_a_registry_can_be_browsed(srv, engine, registry, registry_id):
    push(engine, BUSYBOX, f"{registry.address}/{NAME}/browse", "one", engine_auth())
    push(engine, BUSYBOX, f"{registry.address}/{NAME}/browse", "two", engine_auth())
    catalog = srv.api("GET", f"/api/registries/{registry_id}/v2/_catalog")
    assert catalog.status_code == 200, catalog.text
    assert f"{NAME}/browse" in catalog.json()["repositories"]
    tags = srv.api("GET", f"/api/registries/{registry_id}/v2/{NAME}/browse/tags/list")
    assert tags.status_code == 200, tags.text
    assert sorted(tags.json()["tags"]) == ["one", "two"]
    assert srv.api("GET", f"/api/registries/{registry_id}/v2/{NAME}/nothing/tags/list").status_code == 404


def test_a_restored_backup_keeps_the_registry_credentials_usable(srv, registry, registry_id, tmp_path):
    backup = srv.api("POST", "/api/backup", json={"password": "backup secret 123"})
    assert backup.status_code == 200
    target = start_server(str(tmp_path / "restored"), admin_password=None)
    try:
        assert os.path.exists(os.path.join(target.data, "registry.key"))  # its own key, until the restore
        restored = requests.post(target.url + "/api/restore", files={"file": ("backup", backup.content)},
                                 data={"password": "backup secret 123"}, timeout=60)
        assert restored.status_code == 204, restored.text
        token = target.login("admin", ADMIN_PASSWORD)
        catalog = target.api("GET", f"/api/registries/{registry_id}/v2/_catalog", token=token)
        assert catalog.status_code == 200, catalog.text
        assert_no_password(target.api("GET", "/api/registries", token=token))
    finally:
        target.stop()


def test_wrong_credentials_give_a_clear_message(srv, engine, registry):
    r = srv.api("POST", "/api/registries", json={
        "Name": f"{NAME}-wrong", "URL": registry.address, "Authentication": True, "Username": REGISTRY_USER,
        "Password": "not the password"})
    wrong_id = r.json()["Id"]
    browse = srv.api("GET", f"/api/registries/{wrong_id}/v2/_catalog")
    assert browse.status_code == 502
    assert "refused the credentials" in browse.json()["message"] and "username and password" in browse.json()["details"]
    push(engine, BUSYBOX, f"{registry.address}/{NAME}/wrong", "v1", engine_auth())
    remove_image_quietly(engine, f"{registry.address}/{NAME}/wrong:v1")
    client = srv.docker_sdk()
    with pytest.raises(docker.errors.APIError) as failure:
        client.api.pull(f"{registry.address}/{NAME}/wrong", "v1", auth_config={"registryId": wrong_id})
    assert "unauthorized" in str(failure.value)
    assert srv.api("DELETE", f"/api/registries/{wrong_id}").status_code == 204


def test_pull_through_the_proxy_uses_the_registry_named_in_x_registry_auth(srv, engine, registry, registry_id):
    image = f"{registry.address}/{NAME}/pulled"
    push(engine, BUSYBOX, image, "v1", engine_auth())
    remove_image_quietly(engine, f"{image}:v1")
    client = srv.docker_sdk()
    with pytest.raises(docker.errors.APIError):
        client.api.pull(image, "v1")  # no credentials: the registry refuses
    client.api.pull(image, "v1", auth_config={"registryId": registry_id})
    assert engine.images.get(f"{image}:v1").attrs["RepoDigests"]
    engine.images.get(BUSYBOX).tag(image, "pushed-through-proxy")
    pushed = client.api.push(image, "pushed-through-proxy", auth_config={"registryId": registry_id})
    assert "error" not in pushed and "Digest" in pushed, pushed
    missing = requests.post(f"{srv.url}/api/endpoints/1/docker/images/create?fromImage={image}&tag=v1",
                            headers={"X-API-Key": srv.admin_api_key, "X-Registry-Auth": registry_auth_header(9999)},
                            timeout=30)
    assert missing.status_code == 404 and "registry 9999" in missing.json()["message"]


def test_a_build_through_the_proxy_pulls_its_base_image_with_the_registry_named_in_x_registry_config(
        srv, engine, registry, registry_id):
    base = f"{registry.address}/{NAME}/base"
    push(engine, BUSYBOX, base, "v1", engine_auth())
    remove_image_quietly(engine, f"{base}:v1")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {base}:v1\nLABEL {TEST_LABEL}=1\n".encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    build = lambda headers: requests.post(  # noqa: E731
        f"{srv.url}/api/endpoints/1/docker/build?t={NAME}-built:v1&rm=1", data=context.getvalue(), timeout=120,
        headers={"X-API-Key": srv.admin_api_key, "Content-Type": "application/x-tar", **headers})
    assert "errorDetail" in build({}).text  # without credentials the registry refuses the base image
    built = build({"X-Registry-Config": registry_auth_header(registry_id)})
    assert built.status_code == 200 and "errorDetail" not in built.text, built.text
    assert engine.images.get(f"{NAME}-built:v1").labels[TEST_LABEL] == "1"
    remove_image_quietly(engine, f"{NAME}-built:v1")


def test_a_standard_user_pulls_with_a_registry_only_where_given_access(srv, engine, registry, registry_id):
    user_id, key = standard_user(srv, f"{NAME}-puller")
    image = f"{registry.address}/{NAME}/shared"
    push(engine, BUSYBOX, image, "v1", engine_auth())
    remove_image_quietly(engine, f"{image}:v1")
    pull = lambda: requests.post(  # noqa: E731
        f"{srv.url}/api/endpoints/1/docker/images/create?fromImage={image}&tag=v1",
        headers={"X-API-Key": key, "X-Registry-Auth": registry_auth_header(registry_id)}, timeout=60)
    refused = pull()
    assert refused.status_code == 403 and f"registry {registry_id}" in refused.json()["message"]
    assert srv.api("GET", "/api/endpoints/1/registries", api_key=key).json() == []
    r = srv.api("PUT", f"/api/endpoints/1/registries/{registry_id}",
                json={"UserAccessPolicies": {str(user_id): {"RoleId": 0}}, "TeamAccessPolicies": {}})
    assert r.status_code == 204, r.text
    visible = srv.api("GET", "/api/endpoints/1/registries", api_key=key)
    assert [r["Id"] for r in visible.json()] == [registry_id]
    assert_no_password(visible)
    allowed = pull()
    assert allowed.status_code == 200 and "error" not in allowed.text, allowed.text
    assert engine.images.get(f"{image}:v1")
    assert srv.api("PUT", f"/api/registries/{registry_id}", json={"RegistryAccesses": {}}).status_code == 200
    assert pull().status_code == 403


# ---------------------------------------------------------------------------------------------------------------
# Image updates
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def app_volume(engine):
    name = f"{NAME}-data"
    for leftover in engine.containers.list(all=True, filters={"name": f"{NAME}-app"}):
        leftover.remove(force=True)
    for volume in engine.volumes.list(filters={"name": name}):
        volume.remove(force=True)
    for leftover in engine.networks.list(names=[f"{NAME}-net"]):
        leftover.remove()
    volume = engine.volumes.create(name, labels=LABELS)
    network = engine.networks.create(f"{NAME}-net", labels=LABELS)
    yield volume.name, network.name
    for leftover in engine.containers.list(all=True, filters={"name": f"{NAME}-app"}):
        leftover.remove(force=True)
    network.remove()
    volume.remove(force=True)


def test_update_available_then_recreate_keeps_name_network_and_volume_data(srv, engine, registry, registry_id,
                                                                           app_volume):
    volume, network = app_volume
    image = f"{registry.address}/{NAME}/app"
    first_digest = push(engine, BUSYBOX, image, "stable", engine_auth())
    remove_image_quietly(engine, f"{image}:stable")
    client = srv.docker_sdk()
    client.api.pull(image, "stable", auth_config={"registryId": registry_id})
    container = client.containers.run(
        f"{image}:stable", ["sh", "-c", "test -f /data/file || echo precious > /data/file; exec sleep 600"],
        name=f"{NAME}-app", detach=True, labels=LABELS, volumes={volume: {"bind": "/data", "mode": "rw"}},
        network=network, **FAST_STOP)
    wait_until(lambda: engine.containers.get(container.id).exec_run("cat /data/file").output == b"precious\n",
               message="the container to write its data")

    status = image_status(srv, container.id)
    assert status["Status"] == "updated" and status["RemoteDigest"] == first_digest

    second = new_version(engine, "v2")
    second_digest = push(engine, second, image, "stable", engine_auth())
    assert second_digest != first_digest
    remove_image_quietly(engine, second)  # so that recreating has to pull it from the registry
    status = image_status(srv, container.id)
    assert status["Status"] == "outdated" and status["RemoteDigest"] == second_digest
    listed = srv.api("GET", f"/api/endpoints/1/image_status?containerIds={container.id}")
    assert listed.json()[container.id]["Status"] == "outdated"

    r = srv.api("POST", f"/api/docker/1/containers/{container.id}/recreate", json={"PullImage": True})
    assert r.status_code == 200, r.text
    new = r.json()
    assert new["Id"] != container.id and new["Name"] == f"/{NAME}-app" and new["State"]["Running"]
    assert list(new["NetworkSettings"]["Networks"]) == [network]
    assert image_status(srv, new["Id"])["Status"] == "updated"
    recreated = engine.containers.get(f"{NAME}-app")
    assert recreated.exec_run("cat /data/file").output == b"precious\n"
    assert recreated.exec_run("cat /version").output == b"v2"
    assert recreated.labels[TEST_LABEL] == "1"
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(container.id)


def test_recreate_restores_the_old_container_when_the_pull_fails(srv, engine, registry, app_volume):
    volume, network = app_volume
    image = f"{registry.address}/{NAME}/gone"
    push(engine, BUSYBOX, image, "v1", engine_auth())
    container = engine.containers.run(f"{image}:v1", "sleep 600", name=f"{NAME}-app", detach=True, labels=LABELS)
    requests.delete(f"http://{registry.address}/v2/{NAME}/gone/manifests/"
                    f"{engine.images.get(f'{image}:v1').attrs['RepoDigests'][0].split('@')[1]}",
                    auth=(REGISTRY_USER, REGISTRY_PASSWORD), timeout=10)
    r = srv.api("POST", f"/api/docker/1/containers/{container.id}/recreate", json={"PullImage": True})
    assert r.status_code == 502 and image in r.json()["message"], r.text
    container.reload()
    assert container.status == "running" and container.name == f"{NAME}-app"


def test_a_container_from_an_unreachable_registry_shows_unknown_quietly(srv, engine, tmp_path):
    open_registry = Registry(str(tmp_path / "open"), auth=False)
    image = f"{open_registry.address}/{NAME}/offline"
    try:
        push(engine, BUSYBOX, image, "v1")
        container = engine.containers.run(f"{image}:v1", "sleep 600", detach=True, labels=LABELS)
        assert image_status(srv, container.id)["Status"] == "updated"
    finally:
        open_registry.stop()
    started = time.monotonic()
    status = image_status(srv, container.id)
    assert status["Status"] == "unknown" and "unreachable" in status["Message"]
    assert time.monotonic() - started < 6
    local = engine.containers.run(BUSYBOX, "sleep 600", detach=True, labels=LABELS)
    assert image_status(srv, local.id)["Status"] == "skipped"
    time.sleep(2.5)  # a scheduled check runs against the unreachable registry too
    noisy = [line for line in srv.log().splitlines() if open_registry.address in line
             and (" WARNING " in line or " ERROR " in line or "Traceback" in line)]
    assert noisy == []
    container.remove(force=True)
    local.remove(force=True)
    forget_registry_images(engine, open_registry.address)


def test_the_stack_view_shows_an_update_and_a_recreated_container_stays_in_its_stack(srv, engine, registry,
                                                                                   registry_id):
    image = f"{registry.address}/{NAME}/stacked"
    push(engine, BUSYBOX, image, "stable", engine_auth())
    stack_name = f"{NAME}-stack"
    compose = (f"services:\n  app:\n    image: {image}:stable\n"
               f"    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while sleep 1; do :; done\"]\n"
               f"    labels:\n      {TEST_LABEL}: \"1\"\n")
    r = srv.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                json={"Name": stack_name, "StackFileContent": compose})
    assert r.status_code == 200, r.text
    stack_id = r.json()["Id"]
    try:
        status = srv.api("GET", f"/api/stacks/{stack_id}/images_status?refresh=true").json()
        assert status["Status"] == "updated" and len(status["Containers"]) == 1, status
        push(engine, new_version(engine, "stack-v2"), image, "stable", engine_auth())
        status = srv.api("GET", f"/api/stacks/{stack_id}/images_status?refresh=true").json()
        assert status["Status"] == "outdated"
        (container_id, _), = status["Containers"].items()
        r = srv.api("POST", f"/api/docker/1/containers/{container_id}/recreate", json={"PullImage": True})
        assert r.status_code == 200, r.text
        assert srv.api("GET", f"/api/stacks/{stack_id}/images_status?refresh=true").json()["Status"] == "updated"
        services = srv.api("GET", f"/api/stacks/{stack_id}/services").json()
        assert [c["Id"] for s in services for c in s["Containers"]] == [r.json()["Id"]]
    finally:
        assert srv.api("DELETE", f"/api/stacks/{stack_id}?endpointId=1").status_code in (200, 204)


def test_a_container_labelled_for_auto_update_is_recreated_on_schedule(srv, engine, registry, registry_id):
    image = f"{registry.address}/{NAME}/auto"
    push(engine, BUSYBOX, image, "stable", engine_auth())
    name = f"{NAME}-auto"
    for leftover in engine.containers.list(all=True, filters={"name": name}):
        leftover.remove(force=True)
    container = engine.containers.run(f"{image}:stable", "sleep 600", name=name, detach=True,
                                      labels={**LABELS, "io.portainer.py.auto-update": "true"}, **FAST_STOP)
    try:
        second = new_version(engine, "auto-v2")
        push(engine, second, image, "stable", engine_auth())
        wait_until(lambda: engine.containers.get(name).id != container.id, timeout=30,
                   message="the scheduled auto-update")
        assert engine.containers.get(name).exec_run("cat /version").output == b"auto-v2"
        # the new container runs before the recreate finishes and is logged: wait for the log, not just the id
        wait_until(lambda: "auto-update: recreated container " + name in srv.log(), timeout=30,
                   message="the auto-update in the server log")

        def recorded():
            logged = srv.api("GET", "/api/useractivity/logs?keyword=auto-update").json()["logs"]
            return any(e["path"].endswith(f"/containers/{container.id}/recreate") and e["status"] == 200
                       and name in e["action"] for e in logged)
        wait_until(recorded, timeout=30, message="the auto-update in the activity log")
    finally:
        for leftover in engine.containers.list(all=True, filters={"name": name}):
            leftover.remove(force=True)


def test_a_standard_user_recreates_and_checks_only_containers_they_own(srv, engine):
    _, key = standard_user(srv, f"{NAME}-owner")
    theirs = engine.containers.run(BUSYBOX, "sleep 600", detach=True, labels=LABELS, **FAST_STOP)
    mine = srv.docker_sdk(api_key=key).containers.run(BUSYBOX, "sleep 600", detach=True, labels=LABELS,
                                                      **FAST_STOP)
    try:
        for method, path in (("POST", f"/api/docker/1/containers/{theirs.id}/recreate"),
                             ("GET", f"/api/docker/1/containers/{theirs.id}/image_status")):
            assert srv.api(method, path, api_key=key, json={}).status_code == 403
        listed = srv.api("GET", "/api/endpoints/1/image_status", api_key=key).json()
        assert list(listed) == [mine.id]
        r = srv.api("POST", f"/api/docker/1/containers/{mine.id}/recreate", api_key=key, json={"PullImage": False})
        assert r.status_code == 200, r.text
        assert r.json()["Config"]["Labels"]["io.portainer.accesscontrol.users"]
    finally:
        for container in engine.containers.list(all=True, filters={"label": TEST_LABEL, "ancestor": BUSYBOX}):
            if container.id == theirs.id or container.name == mine.name:
                container.remove(force=True)


def test_the_registry_password_never_appears_in_the_server_log(srv, registry_id):
    log = srv.log()  # the whole story of this file, logged at DEBUG level
    assert "recreated container" in log
    assert REGISTRY_PASSWORD not in log
    with open(os.path.join(srv.data, "activity.jsonl")) as f:
        assert REGISTRY_PASSWORD not in f.read()
    assert base64.b64encode(REGISTRY_PASSWORD.encode()).decode() not in log


# ---------------------------------------------------------------------------------------------------------------
# The web UI
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_web_ui_adds_a_registry_browses_it_pulls_with_it_and_recreates_an_outdated_container(srv, engine, registry):
    from playwright.sync_api import expect, sync_playwright

    image = f"{registry.address}/{NAME}/web"
    push(engine, BUSYBOX, image, "stable", engine_auth())
    push(engine, BUSYBOX, f"{registry.address}/{NAME}/pulled-in-ui", "v1", engine_auth())
    remove_image_quietly(engine, f"{registry.address}/{NAME}/pulled-in-ui:v1")
    name = f"{NAME}-web"
    for leftover in engine.containers.list(all=True, filters={"name": name}):
        leftover.remove(force=True)
    container = engine.containers.run(f"{image}:stable", "sleep 600", name=name, detach=True, labels=LABELS,
                                      **FAST_STOP)
    push(engine, new_version(engine, "web-v2"), image, "stable", engine_auth())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=conftest.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            conftest.open_login_page(page, srv.url)
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("nav.side").get_by_role("link", name="Registries").click()
            page.get_by_label("Name", exact=True).fill(f"{NAME}-from-ui")
            page.get_by_label("URL").fill(registry.address)
            page.get_by_label("Authentication").check()
            page.get_by_label("Username").fill(REGISTRY_USER)
            page.get_by_label("Password", exact=True).fill(REGISTRY_PASSWORD)
            page.get_by_role("button", name="Add registry").click()
            row = page.locator("tr", has_text=f"{NAME}-from-ui")
            expect(row).to_be_visible()
            assert REGISTRY_PASSWORD not in page.content()

            # Browse, and pull a tag with the registry's credentials.
            row.get_by_role("link", name="Browse").click()
            page.click(f"[data-repo='{NAME}/pulled-in-ui']")
            page.locator("#tags [data-pull]").click()
            page.locator(".toast", has_text="Pulled").wait_for(timeout=60000)
            engine.images.get(f"{registry.address}/{NAME}/pulled-in-ui:v1")

            # The containers list shows the update and recreates the container with it.
            page.goto(srv.url + "/#/env/1/containers")
            web_row = page.locator("tr", has_text=name)
            expect(web_row.locator(".badge.outdated")).to_have_text("update available", timeout=20000)
            web_row.get_by_role("button", name="Recreate with new image").click()
            expect(page.locator("tr", has_text=name).locator(".badge.updated")).to_have_text("up to date",
                                                                                           timeout=30000)
            assert errors == []
        finally:
            browser.close()
    assert engine.containers.get(name).id != container.id
    assert engine.containers.get(name).exec_run("cat /version").output == b"web-v2"
    engine.containers.get(name).remove(force=True)
