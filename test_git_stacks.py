"""Stacks from git, as a team doing GitOps uses them: a real git server (nginx, fcgiwrap and `git http-backend`,
with basic auth, over HTTP and over HTTPS with a CA this test makes), a compose project pushed to it, the stack
created from it, redeployed by webhook, by polling and by hand, and every kind of failure leaving the running
stack as it was."""
from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
import uuid

import docker
import pytest
import requests

import test_agent
import test_ui
from conftest import BUSYBOX, SLOT, TEST_LABEL, free_port, make_namespace_host, start_server, wait_until

PREFIX = f"ptpy{SLOT}git"
GIT_USER, GIT_PASSWORD = "gituser", "git-pass-7f3a9c"
MEASURED: dict[str, float] = {}
browser = test_ui.browser  # test_ui's browser and tab fixtures, shared rather than copied
open_page = test_ui.open_page


def compose_project(revision: str) -> str:
    """A plain compose file: one service with a named volume."""
    return textwrap.dedent(f"""\
        services:
          app:
            image: {BUSYBOX}
            command: ["sh", "-c", "cat /data/kept 2>/dev/null; echo $$REVISION > /data/revision; exec sleep 3600"]
            environment:
              REVISION: "{revision}"
              GREETING: ${{GREETING:-hello}}
            volumes:
              - data:/data
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        volumes:
          data:
            labels: {{"{TEST_LABEL}": "1"}}
        """)


def built_project(revision: str) -> dict[str, str]:
    """A compose project: an image built from a context in the repository, a file of it bind-mounted, a file
    secret, and a named volume whose data must outlive redeploys."""
    compose = textwrap.dedent(f"""\
        services:
          app:
            build:
              context: ./backend
            command: ["sh", "-c", "exec sleep 3600"]
            environment:
              REVISION: "{revision}"
              GREETING: ${{GREETING:-hello}}
            volumes:
              - data:/data
              - ./config/site.conf:/etc/app/site.conf:ro
            secrets: [token]
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        secrets:
          token:
            file: ./secrets/token.txt
        volumes:
          data:
            labels: {{"{TEST_LABEL}": "1"}}
        """)
    dockerfile = f"FROM {BUSYBOX}\nRUN echo built-{revision} > /built\n"
    return {"docker-compose.yml": compose, "backend/Dockerfile": dockerfile,
            "config/site.conf": f"site revision {revision}\n", "secrets/token.txt": f"token-{revision}\n"}


def in_directory(directory: str, files: dict[str, str]) -> dict[str, str]:
    """A project in a subdirectory of the repository: its relative paths resolve from there."""
    return {f"{directory}/{name}": content for name, content in files.items()}


def make_ca_and_server_certificate(directory: str) -> tuple[str, str, str]:
    """A CA of the test's own, and a certificate it signs for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portainer.py test git CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (write("ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
            write("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
            write("key.pem", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())))


def kill_pidfile(path: str) -> None:
    try:
        with open(path) as f:
            os.kill(int(f.read().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


class GitServer:
    """nginx + fcgiwrap + git http-backend on 127.0.0.1, basic auth, one bare repository `app.git`, and a
    working clone the test commits and pushes from."""

    def __init__(self, root: str):
        self.root = root
        self.http_port, self.https_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/app.git"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}/app.git"

    def start(self) -> None:
        r = self.root
        shutil.rmtree(r, ignore_errors=True)
        os.makedirs(os.path.join(r, "repos"))
        os.makedirs(os.path.join(r, "tmp"))
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", f"{r}/repos/app.git"], check=True)
        subprocess.run(["git", "-C", f"{r}/repos/app.git", "config", "http.receivepack", "true"], check=True)
        subprocess.run(["htpasswd", "-bc", f"{r}/htpasswd", GIT_USER, GIT_PASSWORD], check=True, capture_output=True)
        self.ca, cert, key = make_ca_and_server_certificate(r)
        socket = f"{r}/fcgi.sock"
        self.processes.append(subprocess.Popen(["fcgiwrap", "-s", f"unix:{socket}"]))
        wait_until(lambda: os.path.exists(socket), timeout=10, message="fcgiwrap's socket")
        os.chmod(socket, 0o777)
        location = textwrap.dedent(f"""\
            location / {{
              auth_basic "git"; auth_basic_user_file {r}/htpasswd; client_max_body_size 0;
              fastcgi_pass unix:{socket}; include /etc/nginx/fastcgi_params;
              fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
              fastcgi_param GIT_PROJECT_ROOT {r}/repos; fastcgi_param GIT_HTTP_EXPORT_ALL "";
              fastcgi_param PATH_INFO $uri; fastcgi_param REMOTE_USER $remote_user;
            }}""")
        with open(f"{r}/nginx.conf", "w") as f:
            f.write(textwrap.dedent(f"""\
                daemon off; user root root; pid {r}/nginx.pid; error_log {r}/nginx-error.log; worker_processes 1;
                events {{ worker_connections 64; }}
                http {{
                  access_log {r}/nginx-access.log;
                  client_body_temp_path {r}/tmp/body; fastcgi_temp_path {r}/tmp/fastcgi;
                  proxy_temp_path {r}/tmp/proxy; uwsgi_temp_path {r}/tmp/uwsgi; scgi_temp_path {r}/tmp/scgi;
                  server {{ listen 127.0.0.1:{self.http_port}; {location} }}
                  server {{ listen 127.0.0.1:{self.https_port} ssl; ssl_certificate {cert};
                           ssl_certificate_key {key}; {location} }}
                }}
                """))
        self.start_nginx()
        work = self.work = f"{r}/work"
        subprocess.run(["git", "init", "-q", "-b", "main", work], check=True)
        for key, value in (("user.name", "Dev"), ("user.email", "dev@example.org")):
            self.git("config", key, value)
        self.git("remote", "add", "origin",
                 f"http://{GIT_USER}:{GIT_PASSWORD}@127.0.0.1:{self.http_port}/app.git")

    def start_nginx(self) -> None:
        r = self.root
        self.nginx = subprocess.Popen(["nginx", "-c", f"{r}/nginx.conf", "-e", f"{r}/nginx-error.log"])
        self.processes.append(self.nginx)
        wait_until(lambda: requests.get(self.url + "/info/refs?service=git-upload-pack", timeout=2,
                                        auth=(GIT_USER, GIT_PASSWORD)).status_code == 200,
                   timeout=15, message="the git server to answer")

    def stop_nginx(self) -> None:
        self.nginx.terminate()
        self.nginx.wait(10)
        self.processes.remove(self.nginx)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", self.work, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    def push(self, files: dict[str, str | None], message: str, branch: str = "main") -> str:
        """Commit these files (None removes one) and push; the new commit's id."""
        for name, content in files.items():
            path = os.path.join(self.work, name)
            if content is None:
                self.git("rm", "-q", name)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(content)
            self.git("add", name)
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", f"HEAD:{branch}")
        return self.git("rev-parse", "HEAD")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        kill_pidfile(f"{self.root}/nginx.pid")


@pytest.fixture(scope="module")
def git_server(tmp_path_factory):
    server = GitServer(str(tmp_path_factory.mktemp("gitserver") / "root"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def remove_built_images(engine) -> None:
    """Images the stacks here built (named <project>_<service>), left by this run or a killed one."""
    for image in engine.images.list():
        if any(tag.startswith(PREFIX) for tag in image.tags):
            for tag in image.tags:
                engine.images.remove(tag, force=True)


@pytest.fixture(scope="module")
def srv(engine, git_server, tmp_path_factory):
    """A server that trusts the test's CA for git over HTTPS and allows a polling interval down to 1 s."""
    remove_built_images(engine)
    server = start_server(str(tmp_path_factory.mktemp("gitsrv") / "data"), "--git-ca-file", git_server.ca,
                          "--git-poll-minimum", "1")
    yield server
    for stack in server.api("GET", "/api/stacks").json():
        server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}")
    server.stop()
    remove_built_images(engine)


def container_of(engine, project: str):
    found = engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    assert len(found) == 1, found
    return found[0]


class ProcessListWatch:
    """Reads every process's command line (what `ps` shows any user) over and over while it is open."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    with contextlib.suppress(OSError):
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            line = f.read().replace(b"\0", b" ").decode(errors="replace")
                        if "git" in line:
                            self.seen.add(line)

    def __enter__(self) -> "ProcessListWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def read_in(container, path: str) -> str:
    result = container.exec_run(["cat", path])
    assert result.exit_code == 0, result.output
    return result.output.decode().strip()


def activity_log(srv) -> str:
    """The server's activity log as text (written every second: an entry may come just after what it records)."""
    with open(os.path.join(srv.data, "activity.jsonl"), errors="replace") as f:
        return f.read()


def create_git_stack(srv, name: str, url: str, **extra) -> requests.Response:
    body = {"Name": name, "RepositoryURL": url, "RepositoryReferenceName": "refs/heads/main",
            "ComposeFile": "deploy/docker-compose.yml", "RepositoryAuthentication": True,
            "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD, **extra}
    return srv.api("POST", "/api/stacks/create/standalone/repository?endpointId=1", json=body)


def test_a_stack_from_git_redeploys_on_webhook_and_on_poll_keeping_its_volume_data(srv, git_server, engine):
    first = git_server.push({**built_project("1"), "README": "app\n"}, "first")
    name = f"{PREFIX}-app"
    r = create_git_stack(srv, name, git_server.url, Env=[{"name": "GREETING", "value": "hi"}],
                         ComposeFile="docker-compose.yml",
                         AutoUpdate={"Webhook": "client-chosen-id", "ForcePullImage": False})
    assert r.status_code == 200, r.text
    stack = r.json()
    config = stack["GitConfig"]
    assert config["URL"] == git_server.url and config["ReferenceName"] == "refs/heads/main"
    assert config["ConfigFilePath"] == "docker-compose.yml" and config["ConfigHash"] == first
    assert config["Authentication"]["Username"] == GIT_USER and config["Authentication"]["Password"] == ""
    webhook = stack["AutoUpdate"]["Webhook"]
    assert webhook != "client-chosen-id" and len(webhook) == 36  # made by the server, a random UUID
    assert GIT_PASSWORD not in r.text
    container = container_of(engine, name)
    env = container.attrs["Config"]["Env"]
    assert "REVISION=1" in env and "GREETING=hi" in env
    assert srv.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == \
        built_project("1")["docker-compose.yml"]
    # The project's parts: the image built from the repository, its bind-mounted file, its file secret.
    assert read_in(container, "/built") == "built-1"
    assert read_in(container, "/etc/app/site.conf") == "site revision 1"
    assert read_in(container, "/run/secrets/token") == "token-1"
    assert container.exec_run(["sh", "-c", "echo precious > /data/kept"]).exit_code == 0

    # A push, then the webhook: the new commit runs, the named volume's data is still there.
    second = git_server.push(built_project("2"), "second")
    with ProcessListWatch() as watch:  # what every process's argv shows while git runs for the server
        started = time.monotonic()
        r = requests.post(f"{srv.url}/api/stacks/webhooks/{webhook}", timeout=120)
        MEASURED["webhook"] = time.monotonic() - started
    assert r.status_code == 204, r.text
    assert any("fetch" in line and "--depth" in line for line in watch.seen), "no git fetch was seen running"
    assert not [line for line in watch.seen if GIT_PASSWORD in line]
    stack = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
    assert stack["GitConfig"]["ConfigHash"] == second and stack["GitCheck"]["Outcome"] == "deployed"
    container = container_of(engine, name)
    assert "REVISION=2" in container.attrs["Config"]["Env"]
    assert read_in(container, "/data/kept") == "precious"
    assert read_in(container, "/built") == "built-2"
    assert read_in(container, "/etc/app/site.conf") == "site revision 2"
    assert read_in(container, "/run/secrets/token") == "token-2"

    # Polling every 2 s: a push is picked up within the interval (plus the redeploy).
    r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1",
                json={"AutoUpdate": {"Interval": "2s", "Webhook": True}})
    assert r.status_code == 200, r.text
    assert r.json()["AutoUpdate"]["Webhook"] == webhook  # the webhook URL stays the same
    third = git_server.push(built_project("3"), "third")
    started = time.monotonic()
    wait_until(lambda: srv.api("GET", f"/api/stacks/{stack['Id']}").json()["GitConfig"]["ConfigHash"] == third,
               timeout=30, interval=0.1, message="the poll to deploy the third commit")
    MEASURED["poll"] = time.monotonic() - started
    assert "REVISION=3" in container_of(engine, name).attrs["Config"]["Env"]
    assert read_in(container_of(engine, name), "/data/kept") == "precious"
    assert read_in(container_of(engine, name), "/etc/app/site.conf") == "site revision 3"
    stack = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
    assert stack["GitCheck"]["Trigger"] == "poll" and stack["GitCheck"]["Time"] > 0
    wait_until(lambda: f"poll: stack {name} deployed {third[:12]}" in activity_log(srv), timeout=10,
               message="the poll's redeploy in the activity log")

    # A poll with nothing new changes nothing: the container is the same one.
    running_id = container_of(engine, name).id
    time.sleep(3)
    assert container_of(engine, name).id == running_id

    # Force update: a container removed by hand comes back at the next poll, though the commit did not change.
    srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1",
            json={"AutoUpdate": {"Interval": "2s", "Webhook": True, "ForceUpdate": True}})
    container_of(engine, name).remove(force=True)
    wait_until(lambda: len(engine.containers.list(filters={"label": f"com.docker.compose.project={name}"})) == 1,
               timeout=30, message="the poll to bring the removed container back")
    r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1",
                json={"AutoUpdate": {"Interval": "", "Webhook": True}})
    assert r.status_code == 200 and r.json()["AutoUpdate"]["Interval"] == ""

    # Secrets stay secret: not in the store, the log or the activity log; the webhook id not in the activity log.
    data = srv.data
    for file_name in ("portainer.json", "activity.jsonl"):
        with open(os.path.join(data, file_name), errors="replace") as f:
            text = f.read()
        assert GIT_PASSWORD not in text, file_name
    with open(os.path.join(data, "activity.jsonl")) as f:
        assert webhook not in f.read()
    assert GIT_PASSWORD not in srv.log()


def test_failed_fetches_give_a_clear_4xx_and_leave_the_running_stack_as_it_was(srv, git_server, engine):
    commit = git_server.push({"deploy/docker-compose.yml": compose_project("10")}, "ten")
    name = f"{PREFIX}-failures"
    r = create_git_stack(srv, name, git_server.url)
    assert r.status_code == 200, r.text
    stack = r.json()
    running = container_of(engine, name).id
    path = f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1"

    def still_running_as_before():
        after = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
        assert after["GitConfig"]["ConfigHash"] == commit
        assert container_of(engine, name).id == running and container_of(engine, name).status == "running"
        assert srv.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == \
            compose_project("10")

    git_server.push({"deploy/docker-compose.yml": compose_project("11")}, "eleven")
    r = srv.api("PUT", path, json={"RepositoryAuthentication": True, "RepositoryUsername": GIT_USER,
                                   "RepositoryPassword": "wrong password"})
    assert r.status_code == 400 and "refused the credentials" in r.json()["message"], r.text
    assert "wrong password" not in r.text
    still_running_as_before()

    r = srv.api("PUT", path, json={"RepositoryReferenceName": "refs/heads/no-such-branch"})
    assert r.status_code == 400 and "not found" in r.json()["message"], r.text
    still_running_as_before()

    git_server.push({"deploy/docker-compose.yml": None, "elsewhere.yml": compose_project("12")}, "moved")
    r = srv.api("PUT", path, json={})
    assert r.status_code == 400 and "deploy/docker-compose.yml" in r.json()["message"], r.text
    still_running_as_before()

    broken = git_server.push({"deploy/docker-compose.yml": "services:\n  app:\n    image: [unclosed\n"}, "broken")
    r = srv.api("PUT", path, json={})
    assert r.status_code == 400 and "docker-compose.yml" in r.json()["message"], r.text
    still_running_as_before()
    assert broken

    # An unreachable server, a missing compose path on create: 400, and no stack is left behind.
    closed = f"http://127.0.0.1:{free_port()}/app.git"
    r = create_git_stack(srv, f"{PREFIX}-unreachable", closed)
    assert r.status_code == 400 and "could not be reached" in r.json()["message"], r.text
    r = create_git_stack(srv, f"{PREFIX}-nopath", git_server.url, ComposeFile="missing.yml")
    assert r.status_code == 400 and "missing.yml" in r.json()["message"], r.text
    names = [s["Name"] for s in srv.api("GET", "/api/stacks").json()]
    assert f"{PREFIX}-unreachable" not in names and f"{PREFIX}-nopath" not in names
    # A URL holding a password, a local path or another transport are refused before git runs.
    for url in (f"http://{GIT_USER}:{GIT_PASSWORD}@127.0.0.1:{git_server.http_port}/app.git",
                "/etc", "file:///etc", "ext::sh -c touch% /tmp/pwned"):
        r = create_git_stack(srv, f"{PREFIX}-badurl", url)
        assert r.status_code == 400, (url, r.text)
        assert GIT_PASSWORD not in r.text

    git_server.stop_nginx()  # the git server down: its address refuses connections
    try:
        r = srv.api("PUT", path, json={})
        assert r.status_code == 400 and "could not be reached" in r.json()["message"], r.text
        still_running_as_before()
    finally:
        git_server.start_nginx()

    git_server.push({"deploy/docker-compose.yml": compose_project("13")}, "fixed")
    r = srv.api("PUT", path, json={"PullImage": False})
    assert r.status_code == 200, r.text
    assert "REVISION=13" in container_of(engine, name).attrs["Config"]["Env"]


def test_a_stack_from_git_over_https_with_the_servers_ca(srv, git_server, engine, fresh_server):
    git_server.push({"deploy/docker-compose.yml": compose_project("20")}, "twenty")
    name = f"{PREFIX}-https"
    r = create_git_stack(srv, name, git_server.https_url)
    assert r.status_code == 200, r.text
    assert "REVISION=20" in container_of(engine, name).attrs["Config"]["Env"]
    assert srv.api("DELETE", f"/api/stacks/{r.json()['Id']}?endpointId=1").status_code == 204
    # A server that does not know the CA refuses the certificate, unless the stack says TLSSkipVerify.
    other = fresh_server()
    r = create_git_stack(other, f"{name}-untrusted", git_server.https_url)
    assert r.status_code == 400 and "not trusted" in r.json()["message"], r.text
    r = create_git_stack(other, f"{name}-skip", git_server.https_url, TLSSkipVerify=True)
    assert r.status_code == 200 and r.json()["GitConfig"]["TLSSkipVerify"] is True, r.text
    assert other.api("DELETE", f"/api/stacks/{r.json()['Id']}?endpointId=1").status_code == 204


def test_standard_user_git_stack_is_vetted_like_any_other_stack(srv, git_server):
    password = "a long enough password"
    user = srv.api("POST", "/api/users", json={"Username": f"{PREFIX}dev", "Password": password, "Role": 2}).json()
    assert srv.api("PUT", "/api/endpoints/1", json={
        "UserAccessPolicies": {str(user["Id"]): {"RoleId": 0}},
        "SecuritySettings": {"allowStackManagementForRegularUsers": True}}).status_code == 200
    token = srv.login(f"{PREFIX}dev", password)
    host_bind = compose_project("30").replace("      - data:/data", "      - data:/data\n      - /etc:/host-etc")
    git_server.push({"deploy/docker-compose.yml": host_bind}, "host bind")
    body = {"Name": f"{PREFIX}-vetted", "RepositoryURL": git_server.url, "ComposeFile": "deploy/docker-compose.yml",
            "RepositoryAuthentication": True, "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD}
    r = srv.api("POST", "/api/stacks/create/standalone/repository?endpointId=1", token=token, json=body)
    assert r.status_code == 403 and "bind mount of host path /etc" in r.json()["message"], r.text
    assert f"{PREFIX}-vetted" not in [s["Name"] for s in srv.api("GET", "/api/stacks").json()]
    # The same project without the host bind is theirs; its webhook id is shown to them, not to a reader.
    git_server.push({"deploy/docker-compose.yml": compose_project("31")}, "plain")
    r = srv.api("POST", "/api/stacks/create/standalone/repository?endpointId=1", token=token,
                json={**body, "AutoUpdate": {"Webhook": True}})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["AutoUpdate"]["Webhook"] and stack["ResourceControl"]["UserAccesses"][0]["UserId"] == user["Id"]
    reader = srv.api("POST", "/api/users", json={"Username": f"{PREFIX}reader", "Password": password, "Role": 2})
    assert srv.api("PUT", "/api/endpoints/1", json={"UserAccessPolicies": {
        str(user["Id"]): {"RoleId": 0}, str(reader.json()["Id"]): {"RoleId": 5}}}).status_code == 200
    assert srv.api("PUT", f"/api/resource_controls/{stack['ResourceControl']['Id']}", json={
        "Public": True, "AdministratorsOnly": False, "Users": [user["Id"]], "Teams": []}).status_code == 200
    seen = srv.api("GET", f"/api/stacks/{stack['Id']}", token=srv.login(f"{PREFIX}reader", password))
    assert seen.status_code == 200 and seen.json()["AutoUpdate"]["Webhook"] == "", seen.text
    # A push that adds the host bind, then the webhook: the redeploy runs with the user's rights, and is refused.
    git_server.push({"deploy/docker-compose.yml": host_bind}, "host bind again")
    r = requests.post(f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}", timeout=60)
    assert r.status_code == 403 and "bind mount of host path /etc" in r.json()["message"], r.text
    after = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
    assert after["GitConfig"]["ConfigHash"] == stack["GitConfig"]["ConfigHash"]
    assert after["GitCheck"]["Outcome"] == "failed"
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1", token=token).status_code == 204
    srv.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})
    assert f"{PREFIX}-vetted" not in [s["Name"] for s in srv.api("GET", "/api/stacks").json()]


def test_additional_files_are_merged_over_the_compose_file(srv, git_server, engine):
    override = "services:\n  app:\n    environment:\n      REVISION: overridden\n      EXTRA: from-the-override\n"
    git_server.push({"deploy/docker-compose.yml": compose_project("70"), "deploy/override.yml": override}, "override")
    name = f"{PREFIX}-override"
    r = create_git_stack(srv, name, git_server.url, AdditionalFiles=["deploy/override.yml"])
    assert r.status_code == 200, r.text
    assert r.json()["AdditionalFiles"] == ["deploy/override.yml"]
    env = container_of(engine, name).attrs["Config"]["Env"]
    assert "REVISION=overridden" in env and "EXTRA=from-the-override" in env
    r = create_git_stack(srv, f"{name}-missing", git_server.url, AdditionalFiles=["deploy/nothing.yml"])
    assert r.status_code == 400 and "deploy/nothing.yml" in r.json()["message"], r.text
    stack_id = next(s["Id"] for s in srv.api("GET", "/api/stacks").json() if s["Name"] == name)
    assert srv.api("DELETE", f"/api/stacks/{stack_id}?endpointId=1").status_code == 204


def template_from_git(srv, git_server, title: str, description: str, compose_path: str = "deploy/docker-compose.yml",
                      password: str = GIT_PASSWORD, **more) -> requests.Response:
    """POST /api/custom_templates/create/repository: a compose template (Type 3) from the test's repository, with
    its credentials."""
    return srv.api("POST", "/api/custom_templates/create/repository", json={
        "Title": title, "Description": description, "Type": 3, "RepositoryURL": git_server.url,
        "ComposeFilePathInRepository": compose_path, "RepositoryAuthentication": True,
        "RepositoryUsername": GIT_USER, "RepositoryPassword": password, **more})


def test_a_custom_template_from_git_is_fetched_again_and_deploys(srv, git_server, engine):
    first = git_server.push({"deploy/docker-compose.yml": compose_project("80")}, "eighty")
    r = template_from_git(srv, git_server, "From git", "a template kept in a repository")
    assert r.status_code == 200, r.text
    template = r.json()
    assert template["GitConfig"]["ConfigHash"] == first and GIT_PASSWORD not in r.text
    assert "_GitPassword" not in srv.api("GET", "/api/custom_templates").text
    git_server.push({"deploy/docker-compose.yml": compose_project("81")}, "eighty-one")
    r = srv.api("PUT", f"/api/custom_templates/{template['Id']}/git_fetch")
    assert r.status_code == 200 and r.json()["FileContent"] == compose_project("81"), r.text
    name = f"{PREFIX}-fromtemplate"
    r = srv.api("POST", f"/api/custom_templates/{template['Id']}/deploy?endpointId=1", json={"Name": name})
    assert r.status_code == 200, r.text
    assert "REVISION=81" in container_of(engine, name).attrs["Config"]["Env"]
    assert srv.api("DELETE", f"/api/stacks/{r.json()['Id']}?endpointId=1").status_code == 204
    r = template_from_git(srv, git_server, "Wrong", "wrong password", password="not it")
    assert r.status_code == 400 and "refused the credentials" in r.json()["message"], r.text


def test_an_edge_stack_from_git_redeploys_by_hand_on_its_webhook_and_on_poll(srv, git_server, engine, tmp_path):
    import test_edge
    endpoint = test_edge.create_edge_environment(srv, f"{PREFIX}-edge-env")
    agent = test_edge.EdgeAgent(endpoint["EdgeKey"], f"{PREFIX}-edge-machine", "unix:///var/run/docker.sock",
                                str(tmp_path / "edge-agent.log"))
    try:
        wait_until(lambda: test_edge.connected(srv, endpoint["Id"]), timeout=30, message="the edge agent")
        group = srv.api("POST", "/api/edge_groups", json={"Name": f"{PREFIX}-sites", "Endpoints": [endpoint["Id"]]})
        assert group.status_code == 200, group.text
        first = git_server.push(in_directory("edge", built_project("90")), "ninety")
        name = f"{PREFIX}-edge"
        body = {"Name": name, "RepositoryURL": git_server.url, "FilePathInRepository": "edge/docker-compose.yml",
                "EdgeGroups": [group.json()["Id"]], "DeploymentType": 0, "RepositoryAuthentication": True,
                "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD}
        # Polling a commit id is pointless (it never moves): refused before anything is fetched.
        r = srv.api("POST", "/api/edge_stacks/create/repository",
                    json={**body, "RepositoryReferenceName": first, "AutoUpdate": {"Interval": "5s"}})
        assert r.status_code == 400 and "needs a branch or a tag" in r.json()["message"], r.text
        r = srv.api("POST", "/api/edge_stacks/create/repository",
                    json={**body, "AutoUpdate": {"Webhook": "client-chosen", "WebhookEnv": True}})
        assert r.status_code == 400 and "WebhookEnv" in r.json()["message"], r.text
        r = srv.api("POST", "/api/edge_stacks/create/repository", json={**body, "AutoUpdate": {"Webhook": True}})
        assert r.status_code == 200, r.text
        edge_stack = r.json()
        assert edge_stack["GitConfig"]["ConfigHash"] == first and GIT_PASSWORD not in r.text
        webhook = edge_stack["AutoUpdate"]["Webhook"]
        assert len(webhook) == 36 and edge_stack["Version"] == 1

        def view() -> dict:
            return srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()

        def status() -> str:
            return view()["Status"][str(endpoint["Id"])]["Status"]

        def runs(revision: str) -> bool:
            found = engine.containers.list(filters={"label": f"com.docker.compose.project={name}"})
            return len(found) == 1 and f"REVISION={revision}" in found[0].attrs["Config"]["Env"] \
                and status() == "running"
        wait_until(lambda: runs("90"), timeout=60, message="the edge stack to run")
        container = container_of(engine, name)
        # The whole project reached the edge environment: the image built from it, its bound file, its secret.
        assert read_in(container, "/built") == "built-90"
        assert read_in(container, "/etc/app/site.conf") == "site revision 90"
        assert read_in(container, "/run/secrets/token") == "token-90"
        assert container.exec_run(["sh", "-c", "echo kept-on-the-edge > /data/kept"]).exit_code == 0

        # By hand: Pull and redeploy.
        second = git_server.push(in_directory("edge", built_project("91")), "ninety-one")
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git/redeploy", json={})
        assert r.status_code == 200 and r.json()["GitConfig"]["ConfigHash"] == second, r.text
        wait_until(lambda: runs("91"), timeout=60, message="the new commit on the edge")
        assert read_in(container_of(engine, name), "/etc/app/site.conf") == "site revision 91"

        # By webhook: public, a new version, every environment deploys the fetched project; its data is kept.
        third = git_server.push(in_directory("edge", built_project("92")), "ninety-two")
        started = time.monotonic()
        r = requests.post(f"{srv.url}/api/edge_stacks/webhooks/{webhook}", timeout=120)
        assert r.status_code == 204, r.text
        wait_until(lambda: runs("92"), timeout=60, interval=0.1, message="the webhook's commit on the edge")
        MEASURED["edge stack webhook"] = time.monotonic() - started
        after = view()
        assert after["GitConfig"]["ConfigHash"] == third and after["Version"] == 3
        assert after["GitCheck"]["Trigger"] == "webhook" and after["GitCheck"]["Outcome"] == "deployed"
        container = container_of(engine, name)
        assert read_in(container, "/built") == "built-92" and read_in(container, "/data/kept") == "kept-on-the-edge"
        assert requests.post(f"{srv.url}/api/edge_stacks/webhooks/{uuid.uuid4()}", timeout=10).status_code == 404
        assert requests.post(f"{srv.url}/api/stacks/webhooks/{webhook}", timeout=10).status_code == 404

        # Portainer's PUT /api/edge_stacks/{id}/git: new settings are tried before they are kept.
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git",
                    json={"Authentication": {"Username": GIT_USER, "Password": "not the password"}})
        assert r.status_code == 400 and "refused the credentials" in r.json()["message"], r.text
        assert "not the password" not in r.text
        # Polling: the same route turns it on; a push is deployed within the interval.
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git",
                    json={"RefName": first, "AutoUpdate": {"Interval": "1s", "Webhook": True}})
        assert r.status_code == 400 and "needs a branch or a tag" in r.json()["message"], r.text
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git",
                    json={"AutoUpdate": {"Interval": "1s", "Webhook": True}})
        assert r.status_code == 200 and r.json()["AutoUpdate"]["Webhook"] == webhook, r.text
        version = view()["Version"]
        time.sleep(2.5)  # polls that find nothing new change nothing
        assert view()["Version"] == version and view()["GitCheck"]["Outcome"] == "unchanged"
        fourth = git_server.push(in_directory("edge", built_project("93")), "ninety-three")
        started = time.monotonic()
        wait_until(lambda: runs("93"), timeout=60, interval=0.1, message="the poll's commit on the edge")
        MEASURED["edge stack poll"] = time.monotonic() - started
        after = view()
        assert after["GitConfig"]["ConfigHash"] == fourth and after["GitCheck"]["Trigger"] == "poll"
        activity = activity_log(srv)
        assert f"webhook: edge stack {name} deployed {third[:12]}" in activity and webhook not in activity

        # A container removed by hand on the edge: without ForceUpdate the polls leave it gone...
        version = view()["Version"]
        container_of(engine, name).remove(force=True)
        time.sleep(3)
        assert not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"})
        assert view()["GitCheck"]["Outcome"] == "unchanged"
        # ...with ForceUpdate a poll finds the drift and redeploys that environment alone, as the file says.
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git",
                    json={"AutoUpdate": {"Interval": "1s", "Webhook": True, "ForceUpdate": True}})
        assert r.status_code == 200 and r.json()["AutoUpdate"]["ForceUpdate"] is True, r.text
        started = time.monotonic()
        wait_until(lambda: runs("93"), timeout=30, interval=0.1, message="the removed container put back")
        MEASURED["edge stack drift put back"] = time.monotonic() - started
        after = view()
        assert after["Version"] == version and after["GitConfig"]["ConfigHash"] == fourth
        assert read_in(container_of(engine, name), "/data/kept") == "kept-on-the-edge"
        # the activity log is written every second: the entry may come just after the container
        wait_until(lambda: "the containers had drifted from the file on environment" in activity_log(srv), timeout=10,
                   message="the drift redeploy in the activity log")
        # A container stopped by hand is put back too; one in step with the file is left alone.
        container_of(engine, name).stop(timeout=1)
        wait_until(lambda: runs("93"), timeout=30, interval=0.1, message="the stopped container put back")
        steady = container_of(engine, name).id
        time.sleep(2.5)
        assert container_of(engine, name).id == steady and view()["GitCheck"]["Outcome"] == "unchanged"

        # A failing fetch (the git server down) keeps what runs, and says so in the edge stack's view.
        git_server.stop_nginx()
        try:
            wait_until(lambda: view()["GitCheck"]["Outcome"] == "failed", timeout=20, message="a failed poll")
            assert "could not be reached" in view()["GitCheck"]["Message"]
            assert view()["GitConfig"]["ConfigHash"] == fourth and runs("93")
        finally:
            git_server.start_nginx()
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git", json={"AutoUpdate": {"Interval": ""}})
        assert r.status_code == 200 and r.json()["AutoUpdate"]["Interval"] == "", r.text
        assert "_GitPassword" not in srv.api("GET", "/api/edge_stacks").text
        assert srv.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    finally:
        agent.stop()


local_registry = test_ui.local_registry


def build_version(engine, repository: str, version: str) -> str:
    """An image made offline from busybox whose /version says which it is, tagged repository:1; its id."""
    dockerfile = f"FROM {BUSYBOX}\nLABEL {TEST_LABEL}=1\nRUN echo {version} > /version\n"
    image, _ = engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=f"{repository}:1", rm=True)
    return image.id


def test_an_edge_stack_pulls_its_images_again_on_each_environment_when_asked(srv, git_server, engine, tmp_path,
                                                                              local_registry):
    import test_edge
    repository = local_registry.rsplit(":", 1)[0].replace("/random", "/pulled")
    first = build_version(engine, repository, "one")
    for line in engine.api.push(repository, tag="1", stream=True, decode=True):
        assert "error" not in line, line

    def registry_moves_on(version: str) -> str:
        """The registry's repository:1 becomes a new image; the engine keeps the one it had under that name."""
        had = engine.images.get(f"{repository}:1").id
        newer = build_version(engine, repository, version)
        for line in engine.api.push(repository, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        engine.api.tag(had, repository, "1")
        return newer

    endpoint = test_edge.create_edge_environment(srv, f"{PREFIX}-pull-env")
    agent = test_edge.EdgeAgent(endpoint["EdgeKey"], f"{PREFIX}-pull-machine", "unix:///var/run/docker.sock",
                                str(tmp_path / "edge-agent.log"))
    name = f"{PREFIX}-edgepull"
    try:
        wait_until(lambda: test_edge.connected(srv, endpoint["Id"]), timeout=30, message="the edge agent")
        group = srv.api("POST", "/api/edge_groups", json={"Name": f"{PREFIX}-pullers",
                                                          "Endpoints": [endpoint["Id"]]})
        assert group.status_code == 200, group.text
        git_server.push({"pull/docker-compose.yml": textwrap.dedent(f"""\
            services:
              app:
                image: {repository}:1
                command: ["sleep", "3600"]
                stop_grace_period: 1s
                labels: {{"{TEST_LABEL}": "1"}}
            """)}, "an image from a registry")
        body = {"Name": name, "RepositoryURL": git_server.url, "FilePathInRepository": "pull/docker-compose.yml",
                "EdgeGroups": [group.json()["Id"]], "DeploymentType": 0, "RepositoryAuthentication": True,
                "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD}
        r = srv.api("POST", "/api/edge_stacks/create/repository",
                    json={**body, "AutoUpdate": {"Webhook": True, "WebhookEnv": True}})
        assert r.status_code == 400 and "no variables" in r.json()["details"], r.text
        r = srv.api("POST", "/api/edge_stacks/create/repository", json={**body, "AutoUpdate": {"Webhook": True}})
        assert r.status_code == 200, r.text
        edge_stack = r.json()
        hook = f"{srv.url}/api/edge_stacks/webhooks/{edge_stack['AutoUpdate']['Webhook']}"

        def runs(image_id: str) -> bool:
            found = engine.containers.list(filters={"label": f"com.docker.compose.project={name}"})
            status = srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"][str(endpoint["Id"])]
            return len(found) == 1 and found[0].image.id == image_id and status["Status"] == "running"

        wait_until(lambda: runs(first), timeout=60, message="the edge stack to run")
        # A webhook without pullImage uses the image the environment has, though the registry's is newer.
        second = registry_moves_on("two")
        assert requests.post(hook, timeout=60).status_code == 204
        wait_until(lambda: srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Version"] == 2
                   and runs(first), timeout=60, message="the redeploy without a pull")
        assert requests.post(hook + "?GREETING=hi", timeout=60).status_code == 400
        # ?pullImage=true: the environment pulls again, and the service runs the new image.
        assert requests.post(hook + "?pullImage=true", timeout=60).status_code == 204
        wait_until(lambda: runs(second), timeout=60, message="the pulled image on the edge")
        assert read_in(container_of(engine, name), "/version") == "two"
        # AutoUpdate.ForcePullImage: every redeploy pulls again, by hand as well as by webhook or poll.
        r = srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git",
                    json={"AutoUpdate": {"Webhook": True, "ForcePullImage": True}})
        assert r.status_code == 200 and r.json()["AutoUpdate"]["ForcePullImage"], r.text
        third = registry_moves_on("three")
        assert srv.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}/git/redeploy", json={}).status_code == 200
        wait_until(lambda: runs(third), timeout=60, message="the forced pull on the edge")
        status = srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"][str(endpoint["Id"])]
        assert status["ReadyRePullImage"] is False  # done: the next deploy pulls only if asked again
        assert srv.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    finally:
        agent.stop()


def test_a_stack_from_a_git_custom_template_builds_its_image_and_binds_its_files(srv, git_server, engine):
    commit = git_server.push(built_project("120"), "a template's project")
    r = template_from_git(srv, git_server, "Built from git", "a project: build context, bound file, file secret",
                          compose_path="docker-compose.yml")
    assert r.status_code == 200, r.text
    template = r.json()
    name = f"{PREFIX}-templated"
    r = srv.api("POST", f"/api/custom_templates/{template['Id']}/deploy?endpointId=1", json={"Name": name})
    assert r.status_code == 200, r.text
    stack = r.json()
    # A git stack like any other: the template's repository, the commit it fetched, never the password.
    assert stack["GitConfig"]["URL"] == git_server.url and stack["GitConfig"]["ConfigHash"] == commit
    assert stack["GitConfig"]["Authentication"]["Username"] == GIT_USER and GIT_PASSWORD not in r.text
    container = container_of(engine, name)
    assert read_in(container, "/built") == "built-120"
    assert read_in(container, "/etc/app/site.conf") == "site revision 120"
    assert read_in(container, "/run/secrets/token") == "token-120"
    newer = git_server.push(built_project("121"), "the template's project moves on")
    r = srv.api("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1", json={})
    assert r.status_code == 200 and r.json()["GitConfig"]["ConfigHash"] == newer, r.text
    assert read_in(container_of(engine, name), "/built") == "built-121"
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204
    assert srv.api("DELETE", f"/api/custom_templates/{template['Id']}").status_code == 204


def test_standard_user_cannot_aim_a_templates_saved_credentials_at_another_branch(srv, git_server, engine):
    git_server.push({"deploy/docker-compose.yml": compose_project("125")}, "the template's branch")
    git_server.push({"deploy/docker-compose.yml": compose_project("126")}, "another branch", branch="feature")
    r = template_from_git(srv, git_server, "Private", "an administrator's private repository",
                          RepositoryReferenceName="refs/heads/main")
    assert r.status_code == 200, r.text
    template = r.json()
    password, own_user, own_password = "a long enough password", f"{PREFIX}own", "own-git-pass-5b1e"
    subprocess.run(["htpasswd", "-b", f"{git_server.root}/htpasswd", own_user, own_password], check=True,
                   capture_output=True)
    user = srv.api("POST", "/api/users", json={"Username": f"{PREFIX}deployer", "Password": password,
                                               "Role": 2}).json()
    assert srv.api("PUT", "/api/endpoints/1", json={
        "UserAccessPolicies": {str(user["Id"]): {"RoleId": 0}},
        "SecuritySettings": {"allowStackManagementForRegularUsers": True}}).status_code == 200
    token = srv.login(f"{PREFIX}deployer", password)
    name = f"{PREFIX}-borrowed"
    r = srv.api("POST", f"/api/custom_templates/{template['Id']}/deploy?endpointId=1", token=token,
                json={"Name": name})
    assert r.status_code == 200, r.text
    stack = r.json()
    # The template's repository at its reference: pulled and redeployed with the saved credentials as often as wanted.
    r = srv.api("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1", token=token, json={})
    assert r.status_code == 200, r.text
    # Another branch with the template's credentials: refused, by either route, and nothing changes.
    for method, path in (("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1"),
                         ("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1")):
        for body in ({"RepositoryReferenceName": "refs/heads/feature"},
                     {"RepositoryReferenceName": "refs/heads/feature", "RepositoryAuthentication": True,
                      "RepositoryUsername": own_user, "RepositoryPassword": ""}):
            r = srv.api(method, path, token=token, json=body)
            assert r.status_code == 403 and "came from custom template" in r.json()["message"], r.text
            assert "credentials of your own" in r.json()["details"]
    after = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
    assert after["GitConfig"]["ReferenceName"] == "refs/heads/main"
    assert "REVISION=125" in container_of(engine, name).attrs["Config"]["Env"]
    # With credentials of their own, the branch is theirs to choose; the saved ones are theirs from then on.
    r = srv.api("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1", token=token, json={
        "RepositoryReferenceName": "refs/heads/feature", "RepositoryAuthentication": True,
        "RepositoryUsername": own_user, "RepositoryPassword": own_password})
    assert r.status_code == 200 and r.json()["GitConfig"]["ReferenceName"] == "refs/heads/feature", r.text
    assert "REVISION=126" in container_of(engine, name).attrs["Config"]["Env"]
    r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1", token=token,
                json={"RepositoryReferenceName": "refs/heads/main"})
    assert r.status_code == 200 and r.json()["GitConfig"]["Authentication"]["Username"] == own_user, r.text
    # The template's author (an administrator) may aim the saved credentials anywhere on a stack of theirs.
    mine = f"{PREFIX}-authors"
    r = srv.api("POST", f"/api/custom_templates/{template['Id']}/deploy?endpointId=1", json={"Name": mine})
    assert r.status_code == 200, r.text
    r = srv.api("POST", f"/api/stacks/{r.json()['Id']}/git?endpointId=1",
                json={"RepositoryReferenceName": "refs/heads/feature"})
    assert r.status_code == 200, r.text
    for made in (stack["Id"], r.json()["Id"]):
        assert srv.api("DELETE", f"/api/stacks/{made}?endpointId=1").status_code == 204
    assert srv.api("DELETE", f"/api/custom_templates/{template['Id']}").status_code == 204
    srv.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})


async def swap_directory(locks, kind: str, record_id: int, order: list[str], who: str, hold_for: float) -> None:
    """What a redeploy does under the record's lock: swap its project directory (here: hold it a while)."""
    async with locks.hold(kind, record_id):
        order.append(f"{who} in")
        await asyncio.sleep(hold_for)
        order.append(f"{who} out")


async def enters_at_once(locks, kind: str, record_id: int) -> bool:
    async with locks.hold(kind, record_id):
        return True


def test_a_webhook_and_a_poll_swap_an_edge_stacks_directory_one_at_a_time(tmp_path):
    """The JSON store's server is alone: its lock is in the process (a unit-level test of RecordLocks)."""
    import portainer

    async def scenario():
        locks, order = portainer.RecordLocks(portainer.Store(str(tmp_path))), []
        first = asyncio.ensure_future(swap_directory(locks, "edge_stacks", 3, order, "webhook", 0.3))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(swap_directory(locks, "edge_stacks", 3, order, "poll", 0), 5)
        await first
        assert order == ["webhook in", "webhook out", "poll in", "poll out"]
        async with locks.hold("edge_stacks", 3):  # another record, or the stack with the same id, never waits
            assert await asyncio.wait_for(enters_at_once(locks, "edge_stacks", 4), 1)
            assert await asyncio.wait_for(enters_at_once(locks, "stacks", 3), 1)

    asyncio.run(scenario())


def test_servers_sharing_a_database_swap_an_edge_stacks_directory_one_at_a_time(request, tmp_path):
    """With --database the lock is the fleet's: two servers' RecordLocks on one PostgreSQL exclude each other, and
    a server that goes away mid-update frees it."""
    try:
        postgres = request.getfixturevalue("postgres")
    except pytest.FixtureLookupError:
        pytest.skip("needs conftest's postgres fixture (PostgreSQL 15 from Debian), which this branch lacks")
    import portainer
    url, key = postgres.new_database(), os.urandom(32)

    async def scenario():
        one = portainer.RecordLocks(portainer.DatabaseStore(str(tmp_path / "one"), url, key))
        two = portainer.RecordLocks(portainer.DatabaseStore(str(tmp_path / "two"), url, key))
        order: list[str] = []
        first = asyncio.ensure_future(swap_directory(one, "edge_stacks", 7, order, "server one", 0.6))
        while not order:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await asyncio.wait_for(swap_directory(two, "edge_stacks", 7, order, "server two", 0), 10)
        assert time.monotonic() - started > 0.3
        await first
        assert order == ["server one in", "server one out", "server two in", "server two out"]
        async with one.hold("edge_stacks", 7):
            assert await asyncio.wait_for(enters_at_once(two, "edge_stacks", 8), 5)
            assert await asyncio.wait_for(enters_at_once(two, "stacks", 7), 5)
        stuck = asyncio.ensure_future(swap_directory(one, "edge_stacks", 7, order, "server gone", 60))
        while order[-1] != "server gone in":
            await asyncio.sleep(0.01)
        stuck.cancel()  # its connection is dropped, as a dead server's is
        assert await asyncio.wait_for(enters_at_once(two, "edge_stacks", 7), 5)

    asyncio.run(scenario())


def test_a_stack_pinned_to_a_commit_id_deploys_it_but_cannot_poll_it(srv, git_server, engine):
    pinned = git_server.push({"deploy/docker-compose.yml": compose_project("130")}, "pinned")
    git_server.push({"deploy/docker-compose.yml": compose_project("131")}, "after the pin")
    name = f"{PREFIX}-pinned"
    r = create_git_stack(srv, name, git_server.url, RepositoryReferenceName=pinned, AutoUpdate={"Interval": "1m"})
    assert r.status_code == 400 and "needs a branch or a tag" in r.json()["message"], r.text
    assert name not in [s["Name"] for s in srv.api("GET", "/api/stacks").json()]
    r = create_git_stack(srv, name, git_server.url, RepositoryReferenceName=pinned, AutoUpdate={"Webhook": True})
    assert r.status_code == 200 and r.json()["GitConfig"]["ConfigHash"] == pinned, r.text
    stack = r.json()
    assert "REVISION=130" in container_of(engine, name).attrs["Config"]["Env"]
    r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1",
                json={"AutoUpdate": {"Interval": "1m", "Webhook": True}})
    assert r.status_code == 400 and "needs a branch or a tag" in r.json()["message"], r.text
    # The webhook still fetches the pinned commit: the stack stays on it.
    r = requests.post(f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}", timeout=60)
    assert r.status_code == 204, r.text
    assert "REVISION=130" in container_of(engine, name).attrs["Config"]["Env"]
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204


def test_a_webhook_sets_variables_only_where_the_stack_allows_it(srv, git_server, engine):
    git_server.push({"deploy/docker-compose.yml": compose_project("95")}, "ninety-five")
    name = f"{PREFIX}-hookenv"
    r = create_git_stack(srv, name, git_server.url, Env=[{"name": "GREETING", "value": "plain"}],
                         AutoUpdate={"Webhook": True})
    assert r.status_code == 200, r.text
    stack = r.json()
    hook = f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}"
    r = requests.post(hook + "?GREETING=hooked", timeout=60)
    assert r.status_code == 400 and "takes no variables" in r.json()["message"], r.text
    r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId=1",
                json={"AutoUpdate": {"Webhook": True, "WebhookEnv": True}})
    assert r.status_code == 200, r.text
    r = requests.post(hook + "?NEWVAR=1", timeout=60)
    assert r.status_code == 400 and "NEWVAR" in r.json()["message"], r.text
    r = requests.post(hook + "?GREETING=hooked", timeout=120)
    assert r.status_code == 204, r.text
    assert "GREETING=hooked" in container_of(engine, name).attrs["Config"]["Env"]
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204


def test_a_server_without_git_says_which_package_to_install(fresh_server, git_server):
    srv = fresh_server(env={"PATH": "/nonexistent"})
    r = create_git_stack(srv, f"{PREFIX}-nogit", git_server.url)
    assert r.status_code == 503, r.text
    assert "git is not installed" in r.json()["message"] and "apt-get install git" in r.json()["details"]


NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"  # Chromium's answer while other suites add or remove interfaces


def real_console_errors(tab) -> list[str]:
    return [e for e in tab.console_errors if NETWORK_CHANGED not in e]


def log_in(tab, srv) -> None:
    """test_ui's log_in, in short tries: Chromium drops a page's requests whenever the machine's interfaces change
    (every container start adds one), which other suites running beside this one do all the time."""
    page = tab.page
    for attempt in range(8):
        try:
            page.goto(srv.url + "/#/login")
            if attempt:
                page.reload()  # a new document: a hash-only goto keeps the page whose modules failed to load
            page.get_by_label("Username").fill("admin", timeout=5000)
            page.get_by_label("Password").fill(test_ui.ADMIN_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.locator("#env-list .env").first.wait_for(timeout=10000)
            return
        except Exception:
            if attempt == 7 or not any(NETWORK_CHANGED in e for e in tab.console_errors):
                raise


@pytest.mark.browser
def test_a_user_deploys_a_stack_from_git_in_the_ui_copies_its_webhook_and_pulls_a_new_commit(
        srv, git_server, engine, open_page):
    first = git_server.push({"deploy/docker-compose.yml": compose_project("40")}, "forty")
    tab = open_page()
    page = tab.page
    log_in(tab, srv)
    page.goto(srv.url + "/#/stacks")
    page.get_by_role("button", name="Add stack from git").click()
    form = page.locator("#git-stack")
    name = f"{PREFIX}-ui"
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Repository URL").fill(git_server.url)
    form.get_by_label("Compose path").fill("deploy/docker-compose.yml")
    form.get_by_label("Authentication", exact=True).check()
    form.get_by_label("Username", exact=True).fill(GIT_USER)
    form.get_by_label("Password or token").fill(GIT_PASSWORD)
    form.get_by_label("Webhook: a secret URL").check()
    form.get_by_label("Environment variables").fill("GREETING=from-the-ui")
    form.get_by_role("button", name="Deploy the stack").click()
    card = page.locator("#git-card")
    card.wait_for(timeout=60000)
    assert card.locator("#git-commit").inner_text() == first[:12]
    assert card.locator("#git-repo").inner_text() == git_server.url
    stack = next(s for s in srv.api("GET", "/api/stacks").json() if s["Name"] == name)
    webhook_url = card.locator("#git-webhook-url").inner_text()
    assert webhook_url == f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}"
    card.get_by_role("button", name="Copy the webhook URL").click()
    page.wait_for_function("() => /Copied|Selected/.test(document.querySelector('#git-webhook-copy').textContent)")
    assert "GREETING=from-the-ui" in container_of(engine, name).attrs["Config"]["Env"]
    assert page.locator("#content").get_attribute("readonly") is not None

    second = git_server.push({"deploy/docker-compose.yml": compose_project("41")}, "forty-one")
    card.get_by_role("button", name="Pull and redeploy").click()
    page.wait_for_function(f"() => document.querySelector('#git-commit') && "
                           f"document.querySelector('#git-commit').textContent === '{second[:12]}'", timeout=60000)
    assert "REVISION=41" in container_of(engine, name).attrs["Config"]["Env"]
    assert not real_console_errors(tab), tab.console_errors


@pytest.mark.browser
def test_a_user_makes_an_edge_stack_from_git_with_a_webhook_and_polling_in_the_ui_and_copies_its_url(
        srv, git_server, open_page):
    group = srv.api("POST", "/api/edge_groups", json={"Name": f"{PREFIX}-ui-sites", "Endpoints": []})
    assert group.status_code == 200, group.text
    first = git_server.push({"deploy/docker-compose.yml": compose_project("140")}, "an edge project")
    tab = open_page()
    page = tab.page
    log_in(tab, srv)
    page.goto(srv.url + "/#/edge/stacks")
    form = page.locator("#git-edge")
    name = f"{PREFIX}-ui-edge"
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Edge groups").select_option(label=f"{PREFIX}-ui-sites")
    form.get_by_label("Repository URL").fill(git_server.url)
    form.get_by_label("Compose path").fill("deploy/docker-compose.yml")
    form.get_by_label("Authentication", exact=True).check()
    form.get_by_label("Username").fill(GIT_USER)
    form.get_by_label("Password or token").fill(GIT_PASSWORD)
    form.get_by_label("Poll the repository every").fill("1h")
    form.get_by_label("Webhook: a secret URL").check()
    form.get_by_role("button", name="Deploy from git to the groups").click()
    card = page.locator("#git-card")
    card.wait_for(timeout=60000)  # the new edge stack's page
    edge_stack = next(s for s in srv.api("GET", "/api/edge_stacks").json() if s["Name"] == name)
    assert edge_stack["AutoUpdate"]["Interval"] == "1h"
    assert card.locator("#git-commit").inner_text() == first[:12]
    assert card.locator("#git-polling").inner_text() == "every 1h"
    webhook_url = card.locator("#git-webhook-url").inner_text()
    assert webhook_url == f"{srv.url}/api/edge_stacks/webhooks/{edge_stack['AutoUpdate']['Webhook']}"
    card.get_by_role("button", name="Copy the webhook URL").click()
    page.wait_for_function("() => /Copied|Selected/.test(document.querySelector('#git-webhook-copy').textContent)")

    # The copied URL, called by the team's git server after a push: the page shows the new commit and its check.
    second = git_server.push({"deploy/docker-compose.yml": compose_project("141")}, "edge project 2")
    assert requests.post(webhook_url, timeout=60).status_code == 204
    page.reload()
    page.wait_for_function(f"() => document.querySelector('#git-commit') && "
                           f"document.querySelector('#git-commit').textContent === '{second[:12]}'", timeout=30000)
    assert "by webhook" in card.locator("#git-checked").inner_text()

    # Polling a commit id is refused with the reason, next to the form.
    settings = page.locator("#git-edge-settings")
    settings.get_by_label("Reference").fill(second)
    settings.get_by_role("button", name="Save the git settings").click()
    settings.get_by_text("the reference is a commit id").wait_for()
    assert srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["GitConfig"]["ReferenceName"] == \
        "refs/heads/main"

    # Credentials: a wrong password is refused before it is kept; the saved ones stay until others work.
    def saved() -> dict:
        return srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()

    settings.get_by_label("Reference").fill("refs/heads/main")
    settings.get_by_label("Keep the saved credentials").uncheck()
    settings.get_by_label("Username").fill(GIT_USER)
    settings.get_by_label("Password or token").fill("not the password")
    settings.get_by_role("button", name="Save the git settings").click()
    settings.get_by_text("refused the credentials").wait_for()
    assert saved()["GitConfig"]["Authentication"]["Username"] == GIT_USER
    own_user, own_password = f"{PREFIX}uiedge", "ui-edge-pass-90c2"
    subprocess.run(["htpasswd", "-b", f"{git_server.root}/htpasswd", own_user, own_password], check=True,
                   capture_output=True)
    settings.get_by_label("Username").fill(own_user)
    settings.get_by_label("Password or token").fill(own_password)
    settings.get_by_label("Re-pull images").check()
    settings.get_by_label("Force redeployment (put back containers changed by hand)").check()
    settings.get_by_role("button", name="Save the git settings").click()
    wait_until(lambda: saved()["GitConfig"]["Authentication"]["Username"] == own_user, timeout=30,
               message="the new credentials saved")
    assert saved()["AutoUpdate"]["ForcePullImage"] is True and saved()["AutoUpdate"]["ForceUpdate"] is True
    # Reloaded, the form keeps the saved credentials unless told otherwise; Pull and redeploy can pull again.
    page.reload()
    settings.get_by_label("Keep the saved credentials").wait_for()
    assert settings.get_by_label("Keep the saved credentials").is_checked()
    assert settings.get_by_label("Re-pull images").is_checked()
    assert settings.get_by_label("Force redeployment (put back containers changed by hand)").is_checked()
    version = saved()["Version"]
    card.get_by_label("Pull the images again on each environment").check()
    card.get_by_role("button", name="Pull and redeploy").click()
    wait_until(lambda: saved()["Version"] == version + 1, timeout=30, message="the redeploy from the page")
    assert saved()["GitConfig"]["Authentication"]["Username"] == own_user
    assert srv.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
    refused = "the server responded with a status of 400"  # the refusals above, which Chromium logs as well
    assert not [e for e in real_console_errors(tab) if refused not in e], tab.console_errors


# ---------------------------------------------------------------------------------------------------------------
# Another host: an agent environment, and an sshd serving the same repository to a deploy key
# ---------------------------------------------------------------------------------------------------------------
AGENT_AND_SSHD_HOST = 20


class SshServer:
    """Debian's sshd on a namespace host, letting one deploy key in; the repository is the git server's (the
    namespace host shares this machine's files)."""

    def __init__(self, host, root: str):
        self.host, self.root = host, root
        self.process = None
        os.makedirs(root, exist_ok=True)
        self.key = os.path.join(root, "deploy_key")
        for path in (self.key, self.key + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deploy", "-f", self.key], check=True)
        with open(self.key + ".pub") as f, open(os.path.join(root, "authorized_keys"), "w") as out:
            out.write(f.read())
        os.chmod(os.path.join(root, "authorized_keys"), 0o600)

    def start(self, host_key_name: str = "host_key") -> None:
        host_key = os.path.join(self.root, host_key_name)
        if not os.path.exists(host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
        config = os.path.join(self.root, "sshd_config")
        with open(config, "w") as f:
            f.write(f"Port 22\nListenAddress {self.host.address}\nHostKey {host_key}\nPidFile {self.root}/sshd.pid\n"
                    f"AuthorizedKeysFile {self.root}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\n")
        os.makedirs("/run/sshd", exist_ok=True)
        self.process = self.host.popen(["/usr/sbin/sshd", "-D", "-e", "-f", config],
                                       stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.root, "sshd.log"), "a"))
        wait_until(self._answers, timeout=15, message="sshd to answer")

    def _answers(self) -> bool:
        import socket
        try:
            with socket.create_connection((self.host.address, 22), timeout=1) as s:
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def private_key(self) -> str:
        with open(self.key) as f:
            return f.read()


@pytest.fixture(scope="module")
def remote(engine):
    """A namespace host with its own engine and agent, and an sshd."""
    host = make_namespace_host(AGENT_AND_SSHD_HOST)
    agent = ssh = None
    try:
        test_agent.start_named_engine(host, f"ptpy-git{SLOT}")
        host.load_image(engine)
        agent = test_agent.AgentProcess(host, data=os.path.join(host.root, "agent-state")).start()
        ssh = SshServer(host, os.path.join(host.root, "sshd"))
        ssh.start()
        yield host, agent, ssh
    finally:
        if ssh is not None:
            ssh.stop()
        if agent is not None:
            agent.stop()
        host.remove()


@pytest.mark.browser
def test_a_user_saves_a_custom_template_from_git_in_the_ui_and_fetches_it_again(srv, git_server, open_page):
    git_server.push({"deploy/docker-compose.yml": compose_project("110")}, "template")
    tab = open_page()
    page = tab.page
    log_in(tab, srv)
    page.goto(srv.url + "/#/templates")
    form = page.locator("#git-template")
    form.get_by_label("Title").fill("Shop from git")
    form.get_by_label("Description").fill("kept in the team's repository")
    form.get_by_label("Repository URL").fill(git_server.url)
    form.get_by_label("Compose path").fill("deploy/docker-compose.yml")
    form.get_by_label("Authentication", exact=True).check()
    form.get_by_label("Username").fill(GIT_USER)
    form.get_by_label("Password or token").fill(GIT_PASSWORD)
    form.get_by_role("button", name="Save template from git").click()
    card = page.locator(".card", has=page.locator("b", has_text="Shop from git"))
    card.get_by_role("button", name="Fetch again from git").wait_for()
    template = next(t for t in srv.api("GET", "/api/custom_templates").json() if t["Title"] == "Shop from git")
    assert srv.api("GET", f"/api/custom_templates/{template['Id']}/file").json()["FileContent"] == \
        compose_project("110")
    git_server.push({"deploy/docker-compose.yml": compose_project("111")}, "template 2")
    card.get_by_role("button", name="Fetch again from git").click()
    page.get_by_text("Template fetched again from its repository").wait_for()
    assert srv.api("GET", f"/api/custom_templates/{template['Id']}/file").json()["FileContent"] == \
        compose_project("111")
    assert not real_console_errors(tab), tab.console_errors


def test_a_deploy_key_fetches_over_ssh_and_the_host_key_is_pinned_on_first_use(srv, git_server, engine, remote):
    host, _, ssh = remote
    commit = git_server.push({"deploy/docker-compose.yml": compose_project("50")}, "fifty")
    url = f"ssh://root@{host.address}{git_server.root}/repos/app.git"
    name = f"{PREFIX}-ssh"
    key = ssh.private_key()
    r = srv.api("POST", "/api/stacks/create/standalone/repository?endpointId=1", json={
        "Name": name, "RepositoryURL": url, "ComposeFile": "deploy/docker-compose.yml", "RepositorySSHKey": key,
        "RepositoryReferenceName": "main"})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["GitConfig"]["ConfigHash"] == commit and "PRIVATE KEY" not in r.text
    assert "REVISION=50" in container_of(engine, name).attrs["Config"]["Env"]
    with open(os.path.join(srv.data, "portainer.json")) as f:
        assert key.strip().splitlines()[1] not in f.read()  # sealed at rest
    with open(os.path.join(srv.data, "git", "known_hosts")) as f:
        assert host.address in f.read()  # pinned on first use

    # The same host answering with another key: refused, and the stack keeps running as it was.
    running = container_of(engine, name).id
    ssh.stop()
    ssh.start("other_host_key")
    git_server.push({"deploy/docker-compose.yml": compose_project("51")}, "fifty-one")
    r = srv.api("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1", json={})
    assert r.status_code == 400 and "SSH host key" in r.json()["message"], r.text
    assert container_of(engine, name).id == running
    ssh.stop()
    ssh.start()
    r = srv.api("PUT", f"/api/stacks/{stack['Id']}/git/redeploy?endpointId=1", json={})
    assert r.status_code == 200, r.text
    assert "REVISION=51" in container_of(engine, name).attrs["Config"]["Env"]
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204


def test_a_stack_from_git_on_an_agent_environment_follows_a_push(srv, git_server, remote):
    host, agent, _ = remote
    r = srv.api("POST", "/api/endpoints", json={"Name": f"{PREFIX}-agent", "EndpointCreationType": 2,
                                                 "URL": f"{host.address}:{test_agent.AGENT_PORT}"})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    git_server.push(built_project("60"), "sixty")
    name = f"{PREFIX}-onagent"
    r = srv.api("POST", f"/api/stacks/create/standalone/repository?endpointId={endpoint_id}", json={
        "Name": name, "RepositoryURL": git_server.url, "RepositoryAuthentication": True,
        "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD, "AutoUpdate": {"Webhook": True}})
    assert r.status_code == 200, r.text
    stack = r.json()
    remote_engine = host.client()
    container = container_of(remote_engine, name)
    assert read_in(container, "/built") == "built-60"
    assert read_in(container, "/etc/app/site.conf") == "site revision 60"
    assert read_in(container, "/run/secrets/token") == "token-60"
    assert container.exec_run(["sh", "-c", "echo on-the-agent > /data/kept"]).exit_code == 0

    commit = git_server.push(built_project("61"), "sixty-one")
    started = time.monotonic()
    r = requests.post(f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}?pullImage=false", timeout=180)
    MEASURED["webhook on an agent"] = time.monotonic() - started
    assert r.status_code == 204, r.text
    assert srv.api("GET", f"/api/stacks/{stack['Id']}").json()["GitConfig"]["ConfigHash"] == commit
    container = container_of(remote_engine, name)
    assert "REVISION=61" in container.attrs["Config"]["Env"]
    assert read_in(container, "/built") == "built-61"
    assert read_in(container, "/etc/app/site.conf") == "site revision 61"
    assert read_in(container, "/data/kept") == "on-the-agent"
    assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}").status_code == 204


def test_a_swarm_stack_from_git_follows_a_push_and_a_service_changed_by_hand_is_put_back(srv, git_server, remote):
    host = remote[0]
    client = host.client()
    client.swarm.init(advertise_addr=host.address)
    try:
        r = srv.api("POST", "/api/endpoints", json={"Name": f"{PREFIX}-swarm", "EndpointCreationType": 1,
                                                     "URL": f"unix://{host.socket}"})
        assert r.status_code == 200, r.text
        endpoint_id = r.json()["Id"]
        swarm_file = compose_project("100").replace("            labels:", "            secrets: [token]\n"
                                                   "            labels:", 1) + \
            "secrets:\n  token:\n    file: ./secrets/token.txt\n"
        git_server.push({"deploy/docker-compose.yml": swarm_file, "deploy/secrets/token.txt": "swarm-token\n"}, "swarm")
        name = f"{PREFIX}-swarm"
        r = srv.api("POST", f"/api/stacks/create/swarm/repository?endpointId={endpoint_id}", json={
            "Name": name, "RepositoryURL": git_server.url, "ComposeFile": "deploy/docker-compose.yml",
            "RepositoryAuthentication": True, "RepositoryUsername": GIT_USER, "RepositoryPassword": GIT_PASSWORD,
            "AutoUpdate": {"Webhook": True}})
        assert r.status_code == 200, r.text
        stack = r.json()
        assert stack["Type"] == 1 and stack["SwarmId"]

        def service_env() -> list:
            services = client.services.list(filters={"label": f"com.docker.stack.namespace={name}"})
            assert len(services) == 1, services
            return services[0].attrs["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
        assert "REVISION=100" in service_env()
        commit = git_server.push({"deploy/docker-compose.yml": swarm_file.replace('"100"', '"101"')}, "swarm 2")
        r = requests.post(f"{srv.url}/api/stacks/webhooks/{stack['AutoUpdate']['Webhook']}", timeout=120)
        assert r.status_code == 204, r.text
        assert srv.api("GET", f"/api/stacks/{stack['Id']}").json()["GitConfig"]["ConfigHash"] == commit
        assert "REVISION=101" in service_env()

        # Force update: a service scaled and changed by hand is put back as the file says at the next poll.
        r = srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId={endpoint_id}",
                    json={"AutoUpdate": {"Interval": "1s", "Webhook": True, "ForceUpdate": True}})
        assert r.status_code == 200, r.text
        service = client.services.list(filters={"label": f"com.docker.stack.namespace={name}"})[0]
        service.update(env=["REVISION=by-hand"], mode=docker.types.ServiceMode("replicated", replicas=2))

        def as_in_the_file() -> bool:
            spec = client.services.get(service.id).attrs["Spec"]
            return spec["Mode"]["Replicated"]["Replicas"] == 1 and "REVISION=101" in \
                spec["TaskTemplate"]["ContainerSpec"].get("Env", [])
        wait_until(as_in_the_file, timeout=30, message="the poll to put the drifted service back")

        # GitCheck is the last poll's (the next one, a second later, finds nothing to do); the activity log keeps
        # each redeploy
        wait_until(lambda: f"poll: stack {name} deployed {commit[:12]} the containers had drifted from the file"
                   in activity_log(srv), timeout=10, message="the drift's redeploy in the activity log")
        srv.api("POST", f"/api/stacks/{stack['Id']}/git?endpointId={endpoint_id}",
                json={"AutoUpdate": {"Interval": "", "Webhook": True}})
        assert srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}").status_code == 204
    finally:
        client.swarm.leave(force=True)


def test_a_wrong_webhook_id_is_a_404_and_guessing_is_rate_limited(srv):
    """Last of the module: it spends the guesses this address has, on stacks' and edge stacks' webhooks alike."""
    answers = [requests.post(f"{srv.url}/api/{kind}/webhooks/{i:08d}-0000-4000-8000-000000000000", timeout=10)
               .status_code for i in range(7) for kind in ("stacks", "edge_stacks")]
    assert answers[:2] == [404, 404] and answers[-2:] == [429, 429], answers


def test_report_push_to_redeploy_times(capsys):
    """Last: the seconds from push to the new commit running, measured by the tests above, for the closing note."""
    measured = ["webhook", "poll", "edge stack webhook", "edge stack poll"]
    missing = [k for k in measured if k not in MEASURED]
    if missing:
        pytest.skip(f"not measured in this run (their tests were not run or failed): {', '.join(missing)}")
    with capsys.disabled():
        print("\npush to redeploy, seconds (PTPY_TEST_SLOT=N python3 -m pytest -q test_git_stacks.py):")
        for key, seconds in MEASURED.items():
            print(f"  {key:<22} {seconds:6.2f}")
