"""Limits the server keeps for everyone's sake: registry credentials go only to the registry they belong to, a
small YAML file cannot expand without end, parallel password guesses hit the login limit, and nothing asks an
outside registry about the images running here until an administrator turns the image update check on.

Real processes only: a real registry (Distribution 2.8) on 127.0.0.1 with basic auth, a plain listener that
records any credentials it is sent, the real engine, and servers of this file's own.
"""
from __future__ import annotations

import base64
import concurrent.futures
import http.client
import http.server
import json
import os
import subprocess
import threading
import time

import docker
import pytest
import requests

import conftest
from conftest import BUSYBOX, SLOT, TEST_LABEL, free_port, start_server, wait_until
from test_registries import forget_registry_images

NAME = f"ptpy{SLOT}trust"  # prefix of everything this file makes on the engine
LABELS = {TEST_LABEL: "1"}
REGISTRY_USER = f"{NAME}-user"  # only this file's servers know it: the registry's log tells their calls apart
REGISTRY_PASSWORD = "Trust-l1mits-registry-secret"
FAST_STOP = {"stop_signal": "SIGKILL"}


# ---------------------------------------------------------------------------------------------------------------
# Real programs of the tests: a registry that logs every call, and a listener that records credentials
# ---------------------------------------------------------------------------------------------------------------


class LoggingRegistry:
    """`docker-registry serve` on 127.0.0.1 with htpasswd basic auth, logging each request with its user."""

    def __init__(self, root: str):
        self.root = root
        self.address = f"127.0.0.1:{free_port()}"
        os.makedirs(root, exist_ok=True)
        htpasswd = subprocess.run(["htpasswd", "-Bbn", REGISTRY_USER, REGISTRY_PASSWORD], capture_output=True,
                                  text=True, check=True).stdout
        with open(os.path.join(root, "htpasswd"), "w") as f:
            f.write(htpasswd)
        with open(os.path.join(root, "config.yml"), "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n"
                    f"http:\n  addr: {self.address}\n  secret: tests\n"
                    f"auth:\n  htpasswd:\n    realm: tests\n    path: {root}/htpasswd\n")
        self.log_path = os.path.join(root, "registry.log")
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(["/usr/bin/docker-registry", "serve", os.path.join(root, "config.yml")],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(lambda: requests.get(f"http://{self.address}/v2/", timeout=2).status_code == 401,
                   timeout=20, message="the registry to answer")

    def calls_by_a_server(self) -> list[str]:
        """Requests a portainer.py server made with this file's registry credentials (the engine's own pushes
        and pulls say `docker/...` as their user agent; servers of other runs on this machine do not know the
        credentials, so their calls are never authorized)."""
        with open(self.log_path, errors="replace") as f:
            return [line for line in f if 'msg="authorized request"' in line and "aiohttp" in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


class CredentialRecorder:
    """A plain HTTP listener on 127.0.0.1 that answers like a registry wanting basic auth, and records every
    request and every Authorization header it receives."""

    def __init__(self):
        self.requests: list[str] = []
        self.authorizations: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                recorder.requests.append(f"{self.command} {self.path}")
                if self.headers.get("Authorization"):
                    recorder.authorizations.append(self.headers["Authorization"])
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="recorder"')
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def registry_auth_header(data: dict) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def push(engine: docker.DockerClient, image: str, repository: str, tag: str) -> None:
    engine.images.get(image).tag(repository, tag)
    for line in engine.images.push(repository, tag, stream=True, decode=True,
                                   auth_config={"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}):
        assert "error" not in line, line


@pytest.fixture(scope="module")
def registry(engine, tmp_path_factory):
    reg = LoggingRegistry(str(tmp_path_factory.mktemp("trust-registry")))
    yield reg
    reg.stop()
    forget_registry_images(engine, reg.address)


@pytest.fixture
def recorder():
    listener = CredentialRecorder()
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def srv(engine, tmp_path_factory):
    """A server of this file's own that checks images every second (once its environment allows it)."""
    server = start_server(str(tmp_path_factory.mktemp("trust-server") / "data"), "--image-check-interval", "1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def registry_id(srv, registry):
    r = srv.api("POST", "/api/registries", json={
        "Name": f"{NAME}-private", "Type": 3, "URL": registry.address, "Authentication": True,
        "Username": REGISTRY_USER, "Password": REGISTRY_PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def proxy_post(srv, path: str, headers: dict, **kwargs) -> requests.Response:
    return requests.post(f"{srv.url}/api/endpoints/1/docker{path}", timeout=60,
                         headers={"X-API-Key": srv.admin_api_key, **headers}, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Registry credentials go only to the registry's own host
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("image, registry_url, same", [
    ("nginx", "docker.io", True),
    ("library/nginx:1.25", "https://index.docker.io/v1/", True),
    ("registry-1.docker.io/team/app", "docker.io", True),
    ("docker.io/team/app", "registry-1.docker.io", True),
    ("127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", True),
    ("127.0.0.1:5000/team/app:v1", "http://127.0.0.1:5000/team", True),
    ("127.0.0.1:5999/x", "127.0.0.1:5000", False),
    ("localhost/app", "localhost:5000", False),
    ("team/app", "registry.example.com", False),
    ("registry.example.com.evil.example/app", "registry.example.com", False),
    ("Registry.Example.com/app", "registry.example.com", True),
])
def test_an_image_belongs_to_a_registry_only_on_the_registrys_host(image, registry_url, same):
    import portainer

    registry = {"Id": 7, "Name": "seven", "URL": registry_url}
    if same:
        portainer.Registries.require_image_host(registry, image)
    else:
        with pytest.raises(portainer.BadRequest) as refused:
            portainer.Registries.require_image_host(registry, image)
        assert "is not registry 7" in refused.value.message


def test_registry_credentials_are_never_sent_to_the_address_an_image_names(srv, engine, registry, registry_id,
                                                                           recorder):
    # The control: the engine does send credentials to this listener when it is given them.
    with pytest.raises(docker.errors.APIError):
        engine.api.pull(f"{recorder.address}/{NAME}/x", "v1",
                        auth_config={"username": REGISTRY_USER, "password": REGISTRY_PASSWORD})
    assert recorder.authorizations, recorder.requests
    recorder.authorizations.clear()
    recorder.requests.clear()

    named = {"X-Registry-Auth": registry_auth_header({"registryId": registry_id})}
    pull = proxy_post(srv, f"/images/create?fromImage={recorder.address}/{NAME}/x&tag=v1", named)
    assert pull.status_code == 400, pull.text
    assert f"is not registry {registry_id}" in pull.json()["message"]
    assert recorder.address in pull.json()["message"]

    with pytest.raises(docker.errors.APIError) as failure:  # the Docker SDK, as a user would pull
        srv.docker_sdk().api.pull(f"{recorder.address}/{NAME}/x", "v1", auth_config={"registryId": registry_id})
    assert failure.value.response.status_code == 400

    # fromImage in a form body: the engine would read it before the query
    smuggled = proxy_post(srv, f"/images/create?fromImage={registry.address}/{NAME}/x&tag=v1",
                          {**named, "Content-Type": "application/x-www-form-urlencoded"},
                          data=f"fromImage={recorder.address}/{NAME}/x")
    assert smuggled.status_code == 400, smuggled.text
    engine.images.get(BUSYBOX).tag(f"{recorder.address}/{NAME}/x", "v1")
    try:
        pushed = proxy_post(srv, f"/images/{recorder.address}/{NAME}/x/push?tag=v1", named)
        assert pushed.status_code == 400 and f"is not registry {registry_id}" in pushed.json()["message"]
    finally:
        engine.images.remove(f"{recorder.address}/{NAME}/x:v1")
    # A service names its image in the body, with keys in any case the engine folds
    service = {"Name": f"{NAME}-svc", "taskTemplate": {"containerSpec": {"image": f"{recorder.address}/{NAME}/x"}}}
    refused = proxy_post(srv, "/services/create", named, json=service)
    assert refused.status_code == 400 and f"is not registry {registry_id}" in refused.json()["message"]
    twice = json.dumps(service)[:-1] + ', "TaskTemplate": {"ContainerSpec": {"Image": "' + registry.address + '/x"}}}'
    ambiguous = proxy_post(srv, "/services/create", {**named, "Content-Type": "application/json"}, data=twice)
    assert ambiguous.status_code == 400 and "TaskTemplate" in ambiguous.json()["message"], ambiguous.text
    assert recorder.requests == [] and recorder.authorizations == []

    # The registry's own images still get its credentials
    push(engine, BUSYBOX, f"{registry.address}/{NAME}/own", "v1")
    engine.images.remove(f"{registry.address}/{NAME}/own:v1")
    own = proxy_post(srv, f"/images/create?fromImage={registry.address}/{NAME}/own&tag=v1", named)
    assert own.status_code == 200 and "error" not in own.text, own.text
    assert engine.images.get(f"{registry.address}/{NAME}/own:v1")
    on_its_host = {"Name": f"{NAME}-svc", "TaskTemplate": {"ContainerSpec": {"Image": f"{registry.address}/x"}}}
    passed = proxy_post(srv, "/services/create", named, json=on_its_host)
    assert passed.status_code != 400, passed.text  # the engine answers (this engine is no swarm manager)


# ---------------------------------------------------------------------------------------------------------------
# YAML: a budget on the expanded document, aliases and merge keys included
# ---------------------------------------------------------------------------------------------------------------


def merge_key_bomb(levels: int = 24) -> str:
    """Each level merges the one before twice: a few hundred bytes that PyYAML alone flattens into 2**levels."""
    lines = ["x0: &x0 {a: 1, b: 2}"] + [f"x{i}: &x{i} {{<<: [*x{i - 1}, *x{i - 1}]}}" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\nservices:\n  web:\n    image: {BUSYBOX}\n    <<: *x{levels}\n"


def test_a_merge_key_bomb_is_refused_at_once_and_the_server_keeps_answering(srv):
    bomb = merge_key_bomb()
    assert len(bomb.encode()) < 800
    answers: list[requests.Response] = []

    def post_bomb():
        answers.append(srv.api("POST", "/api/custom_templates/create/string", timeout=30, json={
            "Title": "bomb", "Description": "merge keys", "Type": 3, "FileContent": bomb}))

    started = time.monotonic()
    bombers = [threading.Thread(target=post_bomb) for _ in range(4)]
    for thread in bombers:
        thread.start()
    meanwhile = srv.api("GET", "/api/system/status", timeout=5)
    for thread in bombers:
        thread.join(30)
    elapsed = time.monotonic() - started
    assert meanwhile.status_code == 200
    assert elapsed < 5, f"four bombs took {elapsed:.1f} s"
    assert [a.status_code for a in answers] == [400] * 4
    assert "expands to more than" in answers[0].json()["message"]
    stack = srv.api("POST", "/api/stacks/create/standalone/string?endpointId=1", timeout=30,
                    json={"Name": f"{NAME}-bomb", "StackFileContent": bomb})
    assert stack.status_code == 400 and "expands to more than" in stack.json()["message"]
    assert all(t["Title"] != "bomb" for t in srv.api("GET", "/api/custom_templates").json())


def test_yaml_that_refers_to_itself_or_nests_too_deeply_gets_a_400(srv):
    for text, expected in (("x: &a [*a]\nservices: {}\n", "contains it"),
                           ("services: " + "[" * 3000 + "]" * 3000 + "\n", "nested too deeply")):
        r = srv.api("POST", "/api/custom_templates/create/string", json={
            "Title": "odd", "Description": "odd yaml", "Type": 3, "FileContent": text})
        assert r.status_code == 400 and expected in r.json()["message"], r.text


def test_a_compose_file_with_anchors_and_merge_keys_still_deploys(srv, engine):
    project = f"{NAME}-merged"
    compose = (f"x-common: &common\n  image: {BUSYBOX}\n  command: sleep 3600\n  stop_grace_period: 1s\n"
               f"  labels: &labels\n    {TEST_LABEL}: \"1\"\n  environment:\n    ROLE: common\n"
               f"services:\n  first:\n    <<: *common\n  second:\n    <<: *common\n"
               f"    environment:\n      ROLE: second\n    labels:\n      <<: *labels\n      tier: back\n")
    r = srv.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                json={"Name": project, "StackFileContent": compose})
    assert r.status_code == 200, r.text
    try:
        containers = {c.labels["com.docker.compose.service"]: c for c in
                      engine.containers.list(filters={"label": f"com.docker.compose.project={project}"})}
        assert sorted(containers) == ["first", "second"]
        assert "ROLE=common" in containers["first"].attrs["Config"]["Env"]
        assert "ROLE=second" in containers["second"].attrs["Config"]["Env"]
        assert containers["second"].labels["tier"] == "back" and containers["second"].labels[TEST_LABEL] == "1"
    finally:
        assert srv.api("DELETE", f"/api/stacks/{r.json()['Id']}?endpointId=1").status_code in (200, 204)


def test_the_bomb_costs_the_server_milliseconds():
    import portainer

    started = time.perf_counter()
    with pytest.raises(portainer.BadRequest):
        portainer.load_yaml(merge_key_bomb(), "bomb.yml")
    assert time.perf_counter() - started < 1.0


# ---------------------------------------------------------------------------------------------------------------
# The login limit: counted before the password is checked, per address and per username
# ---------------------------------------------------------------------------------------------------------------


def login_from(server, source: str, username: str, password: str) -> int:
    """POST /api/auth from one loopback source address (the server sees it as the client's address)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30, source_address=(source, 0))
    try:
        connection.request("POST", "/api/auth", json.dumps({"Username": username, "Password": password}),
                           {"Content-Type": "application/json"})
        return connection.getresponse().status
    finally:
        connection.close()


def make_login_user(server, name: str, password: str = "the right password 42") -> str:
    r = server.api("POST", "/api/users", json={"Username": name, "Password": password, "Role": 2})
    assert r.status_code == 200, r.text
    return password


def test_forty_parallel_wrong_logins_get_at_most_the_limit_of_401s(fresh_server):
    server = fresh_server()
    make_login_user(server, "parallel")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        codes = list(pool.map(lambda i: requests.post(server.url + "/api/auth", timeout=60, json={
            "Username": "parallel", "Password": f"guess {i}"}).status_code, range(40)))
    refills = int((time.monotonic() - started) / 6.0)
    assert codes.count(401) <= 5 + refills, codes
    assert codes.count(429) == 40 - codes.count(401), codes


def test_guesses_of_one_username_from_many_addresses_hit_its_limit_but_not_its_user(fresh_server):
    server = fresh_server()
    password = make_login_user(server, "target")
    assert login_from(server, "127.0.0.20", "target", password) == 200  # where the user logs in every day
    codes = [login_from(server, f"127.0.0.{30 + i}", "target", f"guess {i}") for i in range(8)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429] * 3, codes  # each from an address with tries left
    assert login_from(server, "127.0.0.50", "target", password) == 429  # a new address waits for the window
    assert login_from(server, "127.0.0.20", "target", password) == 200  # the user's own address is not locked out
    assert login_from(server, "127.0.0.51", "someone-else", "guess") == 401  # other usernames are not affected


# ---------------------------------------------------------------------------------------------------------------
# The image update check leaves the host only once an administrator turns it on for the environment
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def checked_container(engine, registry):
    image = f"{registry.address}/{NAME}/checked"
    push(engine, BUSYBOX, image, "v1")
    container = engine.containers.run(f"{image}:v1", "sleep 600", detach=True, labels=LABELS, **FAST_STOP)
    yield container
    container.remove(force=True)


def container_status(srv, container_id: str) -> dict:
    r = srv.api("GET", f"/api/docker/1/containers/{container_id}/image_status?refresh=true")
    assert r.status_code == 200, r.text
    return r.json()


def test_with_the_image_check_off_no_registry_hears_of_the_images_running_here(srv, registry, registry_id,
                                                                                checked_container):
    assert srv.api("GET", "/api/endpoints/1").json()["EnableImageNotification"] is False  # off by default
    before = len(registry.calls_by_a_server())
    status = container_status(srv, checked_container.id)
    assert status["Status"] == "skipped" and "off for this environment" in status["Message"]
    listed = srv.api("GET", "/api/endpoints/1/image_status?refresh=true").json()
    assert listed[checked_container.id]["Status"] == "skipped"
    time.sleep(2.5)  # the periodic check runs every second on this server
    assert len(registry.calls_by_a_server()) == before

    setting = srv.api("GET", "/api/endpoints/1/image_notification").json()
    assert setting["EnableImageNotification"] is False and registry.address in setting["Registries"]

    turned_on = srv.api("PUT", "/api/endpoints/1", json={"EnableImageNotification": True})
    assert turned_on.status_code == 200, turned_on.text
    assert turned_on.json()["EnableImageNotification"] is True
    assert registry.address in turned_on.json()["ImageNotificationRegistries"]
    assert container_status(srv, checked_container.id)["Status"] == "updated"
    assert len(registry.calls_by_a_server()) > before

    assert srv.api("PUT", "/api/endpoints/1", json={"EnableImageNotification": False}).status_code == 200
    time.sleep(1.5)  # a periodic pass already under way when it was turned off may still finish
    after = len(registry.calls_by_a_server())
    assert container_status(srv, checked_container.id)["Status"] == "skipped"
    time.sleep(2.5)
    assert len(registry.calls_by_a_server()) == after


def test_only_administrators_turn_the_image_check_on(srv):
    password = "a long enough password"
    r = srv.api("POST", "/api/users", json={"Username": f"{NAME}-std", "Password": password, "Role": 2})
    assert r.status_code == 200, r.text
    token = srv.login(f"{NAME}-std", password)
    assert srv.api("PUT", "/api/endpoints/1", token=token, json={"EnableImageNotification": True}).status_code == 403
    assert srv.api("GET", "/api/endpoints/1/image_notification", token=token).status_code == 403
    bad = srv.api("PUT", "/api/endpoints/1", json={"EnableImageNotification": "yes"})
    assert bad.status_code == 400 and "EnableImageNotification" in bad.json()["message"]
    assert srv.api("GET", "/api/endpoints/1").json()["EnableImageNotification"] is False


@pytest.mark.browser
def test_web_ui_shows_the_registries_the_check_will_contact_and_turns_it_on(srv, registry, registry_id,
                                                                          checked_container):
    from playwright.sync_api import expect, sync_playwright

    from conftest import ADMIN_PASSWORD

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=conftest.CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            conftest.open_login_page(page, srv.url)
            page.get_by_label("Username").fill("admin")
            page.get_by_label("Password").fill(ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("#env-list .env").first.wait_for()
            page.goto(srv.url + "/#/environments/1/edit")
            expect(page.locator("#env-image-registries")).to_contain_text(registry.address)
            checkbox = page.get_by_label("Check for image updates")
            expect(checkbox).not_to_be_checked()
            checkbox.check()
            page.get_by_role("button", name="Save").click()
            page.locator(".toast", has_text="Environment saved").wait_for()
            assert errors == []
        finally:
            browser.close()
    try:
        assert srv.api("GET", "/api/endpoints/1").json()["EnableImageNotification"] is True
        assert container_status(srv, checked_container.id)["Status"] == "updated"
    finally:
        assert srv.api("PUT", "/api/endpoints/1", json={"EnableImageNotification": False}).status_code == 200
