"""Stacks that are projects, not files: a project archive (compose file, build context, a config file bound by a
relative path, a file secret) deployed on the local environment, on an agent's host and on an edge site; archive
attacks refused; a failing deploy that leaves nothing behind; live progress while a deploy runs."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import threading
import time
import uuid
import zipfile

import docker
import pytest
import requests

import agent as shared
import portainer
import test_ui
from conftest import BUSYBOX, HERE, SLOT, TEST_LABEL, make_namespace_host, start_server, wait_until

PREFIX = f"ptpy{SLOT}proj"
# Namespace host numbers of this file (see conftest.NAMESPACE_HOSTS).
AGENT_HOST, EDGE_HOST = 18, 19
AGENT_PORT = 9001

COMPOSE = textwrap.dedent(f"""\
    services:
      web:
        build:
          context: ./backend
          args:
            GREETING: hello from a build arg
        command: sh -c "exec sleep 3600"
        volumes:
          - ./config/site.conf:/etc/app/site.conf:ro
          - ./data:/data
        secrets: [token]
        configs:
          - source: motd
            target: /etc/motd
        environment:
          MODE: ${{MODE:-plain}}
        stop_grace_period: 1s
        labels: {{"{TEST_LABEL}": "1"}}
    secrets:
      token:
        file: ./secrets/token.txt
    configs:
      motd:
        content: a config given inline
    """)
DOCKERFILE = textwrap.dedent(f"""\
    FROM {BUSYBOX}
    ARG GREETING
    RUN echo "$GREETING" > /greeting
    COPY . /context/
    """)


def project_files(site_conf: str = "listen 8080\n") -> dict[str, bytes]:
    return {"docker-compose.yml": COMPOSE.encode(), "backend/Dockerfile": DOCKERFILE.encode(),
            "backend/app.txt": b"the app\n", "backend/.dockerignore": b"ignored.txt\n",
            "backend/ignored.txt": b"must not reach the engine\n", "config/site.conf": site_conf.encode(),
            "secrets/token.txt": b"s3cret-token\n"}


def tar_archive(files: dict[str, bytes], gz: bool = True, extra=None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


def link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def zip_archive(files: dict[str, bytes], zeros: int = 0) -> bytes:
    """A zip of `files`, and with `zeros` MiB of zeros in zeros.bin (a bomb: it packs to a few hundred KiB)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        if zeros:
            with archive.open("zeros.bin", "w") as f:
                for _ in range(zeros):
                    f.write(bytes(1024 * 1024))
    return buffer.getvalue()


def upload(server, endpoint_id: int, name: str, archive: bytes, headers: dict | None = None, token: str | None = None,
           **fields):
    return server.api("POST", f"/api/stacks/create/standalone/file?endpointId={endpoint_id}", headers=headers,
                      token=token, data={"Name": name, **fields}, files={"file": ("project.tar.gz", archive)},
                      timeout=300)


def delete_stacks_named(server, name: str) -> None:
    for stack in server.api("GET", "/api/stacks").json():
        if stack["Name"] == name:
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}", timeout=120)


def remove_project(client: docker.DockerClient, project: str) -> None:
    label = {"label": f"com.docker.compose.project={project}"}
    for item in client.containers.list(all=True, filters=label):
        item.remove(force=True)
    for item in client.networks.list(filters=label) + client.volumes.list(filters=label):
        item.remove()
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(f"{project}_"):
                client.images.remove(tag)  # by its tag: a build may have made no image of its own


def read_in(container, path: str) -> str:
    code, output = container.exec_run(["cat", path])
    assert code == 0, output
    return output.decode()


def check_project_deployed(client: docker.DockerClient, project: str, project_dir: str) -> None:
    """The built image, the relative bind, the file secret and the inline config, as seen inside the container."""
    web = client.containers.get(f"{project}_web_1")
    assert web.status == "running"
    assert read_in(web, "/etc/app/site.conf") == "listen 8080\n"
    assert read_in(web, "/run/secrets/token") == "s3cret-token\n"
    assert read_in(web, "/etc/motd") == "a config given inline"
    assert read_in(web, "/greeting") == "hello from a build arg\n"
    assert read_in(web, "/context/app.txt") == "the app\n"
    assert web.exec_run(["test", "-e", "/context/ignored.txt"]).exit_code == 1  # .dockerignore respected
    binds = {m["Destination"]: m for m in web.attrs["Mounts"]}
    assert binds["/etc/app/site.conf"]["Source"] == os.path.join(project_dir, "config", "site.conf")
    assert binds["/run/secrets/token"]["RW"] is False and binds["/etc/motd"]["RW"] is False
    assert web.image.tags == [f"{project}_web:latest"]


@pytest.fixture
def project(server, engine, request):
    name = f"{PREFIX}{request.node.name.split('_', 2)[-1][:16].replace('_', '')}"
    delete_stacks_named(server, name)
    remove_project(engine, name)
    yield name
    delete_stacks_named(server, name)
    remove_project(engine, name)


# ---------------------------------------------------------------------------------------------------------------
# Unpacking an archive: what may and may not be in one (the code the server and the agents share)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attack, reason", [
    (tar_archive({"../escaped.txt": b"x"}), "'..'"),
    (tar_archive({"/tmp/absolute.txt": b"x"}), "absolute"),
    (tar_archive({}, extra=[link("out", "/etc")]), "outside"),
    (tar_archive({}, extra=[link("up", "../../..")]), "outside"),
    (tar_archive({}, extra=[link("hard", "/etc/passwd", tarfile.LNKTYPE)]), "absolute"),
    (tar_archive({}, extra=[link("dir", "sub"), link("sub", "..")]), "outside"),
    (tar_archive({}, extra=[link("null", "", tarfile.CHRTYPE)]), "device"),
    (zip_archive({"../../zip-escaped.txt": b"x"}), "'..'"),
], ids=["dot-dot", "absolute", "symlink-out", "symlink-up", "hard-link", "symlink-chain", "device", "zip-dot-dot"])
def test_archive_that_would_write_outside_its_project_is_refused(tmp_path, attack, reason):
    destination = tmp_path / "project"
    destination.mkdir()
    with pytest.raises(shared.ArchiveRefused) as refused:
        shared.unpack_project_archive(io.BytesIO(attack), str(destination))
    assert reason in str(refused.value)
    assert sorted(os.listdir(tmp_path)) == ["project"]


def test_zip_bomb_and_too_many_files_stop_at_the_caps(tmp_path):
    bomb = zip_archive({}, zeros=3)
    assert len(bomb) < 10_000
    with pytest.raises(shared.ArchiveRefused, match="more than 2 MiB"):
        shared.unpack_project_archive(io.BytesIO(bomb), str(tmp_path), max_bytes=2 * 1024 * 1024)
    many = tar_archive({f"f{i}": b"" for i in range(20)}, gz=False)
    with pytest.raises(shared.ArchiveRefused, match="more than 10 entries"):
        shared.unpack_project_archive(io.BytesIO(many), str(tmp_path / "x"), max_files=10)


def test_a_project_is_synchronised_in_place_keeping_what_services_wrote_and_never_following_their_links(tmp_path):
    def unpacked(files: dict[str, bytes]) -> str:
        directory = tempfile.mkdtemp(dir=tmp_path)
        shared.unpack_project_archive(io.BytesIO(tar_archive(files)), directory)
        return directory

    final = tmp_path / "project"
    shared.sync_project(unpacked({"site.conf": b"one", "old.txt": b"x", "data/seed": b"s"}), str(final))
    inode = os.stat(final / "site.conf").st_ino
    (final / "data" / "written-by-a-service").write_text("kept")
    shared.sync_project(unpacked({"site.conf": b"two", "data/seed": b"s"}), str(final))
    assert (final / "site.conf").read_bytes() == b"two" and os.stat(final / "site.conf").st_ino == inode
    assert not (final / "old.txt").exists() and (final / "data" / "written-by-a-service").read_text() == "kept"
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, final / "data" / "planted")  # a container's doing
    shared.sync_project(unpacked({"data/planted/x": b"evil"}), str(final))
    assert os.listdir(outside) == [] and not os.path.islink(final / "data" / "planted")  # replaced, not followed
    assert (final / "data" / "planted" / "x").read_bytes() == b"evil"


def test_dockerignore_reads_as_the_docker_cli_reads_it():
    rules = portainer.dockerignore_rules("# comment\n*.log\n/build\n**/secret*\n!keep.log\ndocs/**/*.md\n")
    ignored = lambda path: portainer.dockerignored(path, rules)  # noqa: E731
    assert ignored("a.log") and not ignored("keep.log") and not ignored("dir/a.log")
    assert ignored("build") and ignored("build/out.o") and not ignored("src/build")
    assert ignored("secret.txt") and ignored("deep/down/secret-key") and not ignored("public.txt")
    assert ignored("docs/a.md") and ignored("docs/x/y/b.md") and not ignored("docs/a.txt")


def test_a_redeploy_cut_short_by_a_crash_is_undone_when_the_server_starts(tmp_path):
    compose_dir = tmp_path / "compose"
    (compose_dir / ".previous-5-abc" / "project").mkdir(parents=True)
    (compose_dir / ".previous-5-abc" / "project" / "docker-compose.yml").write_text("services: {}\n")
    (compose_dir / ".staging-xyz").mkdir()
    (compose_dir / "6").mkdir()
    (compose_dir / ".previous-6-def" / "project").mkdir(parents=True)
    portainer.Stacks(None, None, str(tmp_path)).recover_interrupted()
    assert sorted(os.listdir(compose_dir)) == ["5", "6"]
    assert (compose_dir / "5" / "docker-compose.yml").read_text() == "services: {}\n"


# ---------------------------------------------------------------------------------------------------------------
# The local environment: the project directory is the server's
# ---------------------------------------------------------------------------------------------------------------


class ProgressReader(threading.Thread):
    """Reads a deploy's progress stream as the UI does, noting when each event arrived."""

    def __init__(self, server, deploy_id: str):
        super().__init__(daemon=True)
        self.server, self.deploy_id, self.events, self.opened = server, deploy_id, [], threading.Event()

    def run(self) -> None:
        with self.server.api("GET", f"/api/stacks/deploys/{self.deploy_id}/progress", stream=True,
                             timeout=300) as response:
            assert response.status_code == 200, response.text
            self.opened.set()
            for line in response.iter_lines():
                if line:
                    self.events.append((time.monotonic(), json.loads(line)))


def test_a_progress_stream_whose_deploy_never_comes_ends_empty_after_a_few_seconds(server):
    """A reader of an id that no create or update call names is not kept waiting for minutes."""
    started = time.monotonic()
    r = server.api("GET", f"/api/stacks/deploys/{uuid.uuid4().hex}/progress", timeout=60)
    waited = time.monotonic() - started
    assert r.status_code == 200 and r.text == "", r.text
    assert portainer.DEPLOY_PROGRESS_CLAIM_SECONDS <= waited < portainer.DEPLOY_PROGRESS_CLAIM_SECONDS + 5, waited


def test_project_archive_builds_binds_its_files_and_streams_progress_on_the_local_environment(server, engine,
                                                                                            project):
    deploy_id = uuid.uuid4().hex
    reader = ProgressReader(server, deploy_id)
    reader.start()
    assert reader.opened.wait(10)
    r = upload(server, 1, project, tar_archive(project_files()), headers={"X-Portainer-Deploy-Id": deploy_id})
    answered = time.monotonic()
    assert r.status_code == 200, r.text
    stack = r.json()
    reader.join(30)
    stages = [event["stage"] for _, event in reader.events]
    assert {"build", "create", "start"} <= set(stages) and stages[-1] == "done", stages
    assert reader.events[0][0] < answered  # progress came while the deploy ran, before its answer
    assert any("Step" in event.get("line", "") for _, event in reader.events)
    project_dir = os.path.join(server.data, "compose", str(stack["Id"]))
    assert stack["ProjectPath"] == project_dir and stack["EntryPoint"] == "docker-compose.yml"
    check_project_deployed(engine, project, project_dir)
    assert engine.containers.get(f"{project}_web_1").exec_run(["sh", "-c", "echo kept > /data/run.txt"]).exit_code == 0

    # the editor's redeploy keeps the project's other files; an archive replaces them (what services wrote stays)
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                   json={"StackFileContent": COMPOSE, "Env": [{"name": "MODE", "value": "fancy"}]}, timeout=300)
    assert r.status_code == 200, r.text
    web = engine.containers.get(f"{project}_web_1")
    assert "MODE=fancy" in web.attrs["Config"]["Env"] and read_in(web, "/etc/app/site.conf") == "listen 8080\n"
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1", data={"Env": "[]"},
                   files={"file": ("p.zip", zip_archive(project_files("listen 9090\n")))}, timeout=300)
    assert r.status_code == 200, r.text
    web = engine.containers.get(f"{project}_web_1")
    assert read_in(web, "/etc/app/site.conf") == "listen 9090\n" and read_in(web, "/data/run.txt") == "kept\n"
    assert server.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == COMPOSE

    assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204
    assert not os.path.exists(project_dir)


def test_compose_file_in_a_subdirectory_resolves_its_paths_from_there(server, engine, project):
    compose = textwrap.dedent(f"""\
        services:
          web:
            image: {BUSYBOX}
            command: sleep 3600
            env_file: stack.env
            volumes: ["./site.conf:/site.conf:ro"]
            secrets:
              - source: api_key
                target: key.txt
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        secrets:
          api_key:
            environment: FROM_ENV
        """)
    archive = zip_archive({"README": b"the project", "deploy/compose.yaml": compose.encode(),
                           "deploy/site.conf": b"nested\n"})
    r = upload(server, 1, project, archive, ComposeFile="deploy/compose.yaml",
               Env=json.dumps([{"name": "FROM_ENV", "value": "yes"}]))
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["EntryPoint"] == "deploy/compose.yaml"
    web = engine.containers.get(f"{project}_web_1")
    assert read_in(web, "/site.conf") == "nested\n" and "FROM_ENV=yes" in web.attrs["Config"]["Env"]
    assert read_in(web, "/run/secrets/key.txt") == "yes"  # a secret from the stack's env
    assert web.labels["com.docker.compose.project.working_dir"] == os.path.join(stack["ProjectPath"], "deploy")
    assert server.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == compose
    r = upload(server, 1, project + "x", archive, ComposeFile="deploy/missing.yml")
    assert r.status_code == 400 and "no compose file 'deploy/missing.yml'" in r.json()["message"]


def test_archive_attacks_get_a_400_and_write_nothing(server, engine, project):
    compose_dir = os.path.join(server.data, "compose")
    before = set(os.listdir(compose_dir)) if os.path.isdir(compose_dir) else set()
    compose = {"docker-compose.yml": f"services: {{web: {{image: {BUSYBOX}}}}}\n".encode()}
    attacks = [tar_archive({**compose, "../../escaped.txt": b"x"}), tar_archive({**compose, "/tmp/abs.txt": b"x"}),
               tar_archive(compose, extra=[link("etc", "/etc")]),
               tar_archive(compose, extra=[link("up", "../../../..")]),
               zip_archive(compose, zeros=shared.PROJECT_MAX_BYTES // (1024 * 1024) + 1)]
    for attack in attacks:
        r = upload(server, 1, project, attack)
        assert r.status_code == 400 and "project archive refused" in r.json()["message"], r.text
    assert not os.path.exists(os.path.join(server.data, "escaped.txt"))
    assert not os.path.exists("/tmp/abs.txt") or os.path.getmtime("/tmp/abs.txt") < time.time() - 600
    after = set(os.listdir(compose_dir)) if os.path.isdir(compose_dir) else set()
    assert after == before  # no staging directory left behind
    assert all(s["Name"] != project for s in server.api("GET", "/api/stacks").json())
    r = upload(server, 1, project, tar_archive({"README": b"no compose file"}))
    assert r.status_code == 400 and "no compose file" in r.json()["message"]


def test_failing_service_is_named_and_leaves_nothing_behind(server, engine, project):
    compose = textwrap.dedent(f"""\
        services:
          good:
            build: ./good
            command: sleep 3600
            stop_grace_period: 1s
            networks: [back]
            volumes: [data:/data]
            labels: {{"{TEST_LABEL}": "1"}}
          bad:
            image: {BUSYBOX}
            command: /no/such/program
            depends_on: [good]
            networks: [back]
            labels: {{"{TEST_LABEL}": "1"}}
        networks:
          back: {{}}
        volumes:
          data: {{}}
        """)
    archive = tar_archive({"docker-compose.yml": compose.encode(), "good/Dockerfile": f"FROM {BUSYBOX}\n".encode()})
    deploy_id = uuid.uuid4().hex
    reader = ProgressReader(server, deploy_id)
    reader.start()
    assert reader.opened.wait(10)
    r = upload(server, 1, project, archive, headers={"X-Portainer-Deploy-Id": deploy_id})
    assert r.status_code >= 400 and "service 'bad'" in r.json()["message"], r.text
    reader.join(30)
    last = reader.events[-1][1]
    assert last["stage"] == "error" and "service 'bad'" in last["message"]
    assert ("start", "good") in [(e["stage"], e.get("service")) for _, e in reader.events]
    label = {"label": f"com.docker.compose.project={project}"}
    assert engine.containers.list(all=True, filters=label) == []
    assert engine.networks.list(filters=label) == [] and engine.volumes.list(filters=label) == []
    assert engine.images.list(name=f"{project}_good") == []  # the image it built went too
    assert all(s["Name"] != project for s in server.api("GET", "/api/stacks").json())
    compose_dir = os.path.join(server.data, "compose")
    assert not any(name.startswith(".") for name in os.listdir(compose_dir))


def test_standard_users_build_passes_the_checks_of_the_proxys_build(server, engine, project, make_user):
    user_id, token, _ = make_user()
    settings = {"allowStackManagementForRegularUsers": True}
    assert server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": settings}).status_code == 200
    try:
        def archive(build_network: str) -> bytes:
            compose = textwrap.dedent(f"""\
                services:
                  web:
                    build: {{context: ., network: {build_network}}}
                    command: sleep 3600
                    stop_grace_period: 1s
                    labels: {{"{TEST_LABEL}": "1"}}
                """)
            return tar_archive({"docker-compose.yml": compose.encode(), "Dockerfile": f"FROM {BUSYBOX}\nLABEL built=1\n".encode()})

        r = upload(server, 1, project, archive("host"), token=token)
        assert r.status_code == 403 and "host namespace" in r.json()["message"], r.text
        r = upload(server, 1, project, tar_archive(project_files()), token=token)  # relative binds are host paths
        assert r.status_code == 403 and "bind mount" in r.json()["message"], r.text
        assert engine.images.list(name=f"{project}_web") == []
        r = upload(server, 1, project, archive("bridge"), token=token)
        assert r.status_code == 200, r.text
        web = engine.containers.get(f"{project}_web_1")
        assert web.labels["io.portainer.accesscontrol.users"] == str(user_id)
        assert web.image.tags == [f"{project}_web:latest"]
    finally:
        server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})


def test_pull_policy_never_needs_the_image_and_build_rebuilds_on_every_deploy(server, engine, project):
    never = f"services:\n  web:\n    image: {PREFIX}-absent:1\n    pull_policy: never\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": never})
    assert r.status_code == 400 and "service 'web'" in r.json()["message"] and "never" in r.json()["message"]
    compose = textwrap.dedent(f"""\
        services:
          web:
            build: .
            pull_policy: build
            command: sleep 3600
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        """)
    archive = tar_archive({"docker-compose.yml": compose.encode(), "Dockerfile": f"FROM {BUSYBOX}\nLABEL a=1\n".encode()})
    r = upload(server, 1, project, archive)
    assert r.status_code == 200, r.text
    deploy_id = uuid.uuid4().hex
    reader = ProgressReader(server, deploy_id)
    reader.start()
    assert reader.opened.wait(10)
    r = server.api("PUT", f"/api/stacks/{r.json()['Id']}?endpointId=1", json={"StackFileContent": compose},
                   headers={"X-Portainer-Deploy-Id": deploy_id}, timeout=300)
    assert r.status_code == 200, r.text
    reader.join(30)
    assert any(e["stage"] == "build" and "Step" in e["line"] for _, e in reader.events)  # built again


local_registry = test_ui.local_registry


def test_pulls_report_each_layer_while_the_deploy_runs(server, engine, project, local_registry):
    compose = textwrap.dedent(f"""\
        services:
          pulled:
            image: {local_registry}
            pull_policy: always
            command: ["/not-in-this-image"]
            labels: {{"{TEST_LABEL}": "1"}}
        """)
    deploy_id = uuid.uuid4().hex
    reader = ProgressReader(server, deploy_id)
    reader.start()
    assert reader.opened.wait(10)
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", timeout=300,
                   headers={"X-Portainer-Deploy-Id": deploy_id}, json={"Name": project, "StackFileContent": compose})
    assert r.status_code >= 400 and "service 'pulled'" in r.json()["message"], r.text  # it has nothing to run
    reader.join(30)
    pulls = [e for _, e in reader.events if e["stage"] == "pull"]
    assert pulls and all(e["service"] == "pulled" and e["image"] == local_registry for e in pulls)
    assert any(e["layer"] and "complete" in e["status"].lower() for e in pulls), pulls
    assert reader.events[-1][1]["stage"] == "error"


# ---------------------------------------------------------------------------------------------------------------
# An agent's host and an edge site: the agent keeps the project's files in its projects directory
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote_server(engine, workdir):
    """A server of this module's own: agents pin the first server that talks to them."""
    srv = start_server(os.path.join(workdir, f"projects-server-{SLOT}"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def agent_host(engine):
    host = make_namespace_host(AGENT_HOST)
    for leftover in ("agent-state", "agent-projects"):  # an earlier run's pairing and projects
        shutil.rmtree(os.path.join(host.root, leftover), ignore_errors=True)
    host.start_engine()
    host.load_image(engine)
    projects = os.path.join(host.root, "agent-projects")
    log = open(os.path.join(host.root, "agent.log"), "ab")
    process = host.popen([sys.executable, os.path.join(HERE, "agent.py"), "--port", str(AGENT_PORT),
                          "--docker-host", f"unix://{host.socket}", "--data", os.path.join(host.root, "agent-state"),
                          "--projects-dir", projects], cwd=HERE, stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: requests.get(f"https://{host.address}:{AGENT_PORT}/ping", verify=False, timeout=2)
               .status_code == 204, timeout=20, message="the agent")
    yield host, projects
    process.terminate()
    process.wait(10)
    host.remove()


def deploy_and_check_remotely(server, endpoint_id: int, client: docker.DockerClient, projects: str) -> None:
    name = f"{PREFIX}remote"
    remove_project(client, name)  # what an earlier, killed run left on that engine
    r = upload(server, endpoint_id, name, tar_archive(project_files()))
    assert r.status_code == 200, r.text
    stack = r.json()
    check_project_deployed(client, name, os.path.join(projects, name))
    assert sorted(os.listdir(os.path.join(projects, name))) == [".portainer", ".portainer-files", "backend", "config",
                                                                 "data", "docker-compose.yml", "secrets", "stack.env"]
    web = client.containers.get(f"{name}_web_1")
    assert web.exec_run(["sh", "-c", "echo kept > /data/runtime.txt"]).exit_code == 0
    assert os.stat(os.path.join(projects, name)).st_mode & 0o777 == 0o700  # it holds the stack's secrets
    # a redeploy with a new archive rewrites the agent's copy too
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}",
                   files={"file": ("p.tar", tar_archive(project_files("listen 9191\n"), gz=False))}, timeout=300)
    assert r.status_code == 200, r.text
    web = client.containers.get(f"{name}_web_1")
    assert read_in(web, "/etc/app/site.conf") == "listen 9191\n"
    assert read_in(web, "/data/runtime.txt") == "kept\n"  # what the service wrote beside its files stays
    assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}").status_code == 204
    assert not os.path.exists(os.path.join(projects, name))


def test_project_deploys_on_an_agent_host_from_the_agents_projects_directory(remote_server, agent_host):
    host, projects = agent_host
    r = remote_server.api("POST", "/api/endpoints", json={"Name": "projects-agent", "EndpointCreationType": 2,
                                                           "URL": f"{host.address}:{AGENT_PORT}"})
    assert r.status_code == 200, r.text
    # the agent's project routes need the server's signature like every other call
    unsigned = requests.put(f"https://{host.address}:{AGENT_PORT}/projects/intruder", data=b"", verify=False, timeout=5)
    assert unsigned.status_code == 403 and not os.path.exists(os.path.join(projects, "intruder"))
    deploy_and_check_remotely(remote_server, r.json()["Id"], host.client(), projects)


def test_project_deploys_on_an_edge_site_through_the_tunnel(engine, workdir, tmp_path):
    from test_edge import EdgeAgent, connected, create_edge_environment

    site = make_namespace_host(EDGE_HOST)
    shutil.rmtree(os.path.join(site.root, "edge-projects"), ignore_errors=True)
    server = agent_process = None
    try:
        site.start_engine()
        site.load_image(engine)
        subprocess.run(["ip", "netns", "exec", site.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                        "NEW", "-j", "DROP"], check=True)
        server = start_server(os.path.join(workdir, f"projects-edge-{SLOT}"), "--edge-heartbeat", "1",
                              bind_host=site.host_address)
        endpoint = create_edge_environment(server, "projects-edge")
        projects = os.path.join(site.root, "edge-projects")
        os.environ["AGENT_PROJECTS_DIR"] = projects
        try:
            agent_process = EdgeAgent(endpoint["EdgeKey"], "projects-site", f"unix://{site.socket}",
                                      str(tmp_path / "edge-agent.log"), site=site)
        finally:
            del os.environ["AGENT_PROJECTS_DIR"]
        wait_until(lambda: connected(server, endpoint["Id"]), timeout=30, message="the edge agent to connect")
        deploy_and_check_remotely(server, endpoint["Id"], site.client(), projects)
    finally:
        if agent_process:
            agent_process.stop()
        if server:
            server.stop()
        site.remove()


# ---------------------------------------------------------------------------------------------------------------
# The UI: upload a project archive, watch the deploy
# ---------------------------------------------------------------------------------------------------------------

browser = test_ui.browser
open_page = test_ui.open_page


@pytest.mark.browser
def test_admin_uploads_a_project_archive_and_watches_its_deploy_in_the_ui(server, engine, project, open_page,
                                                                         tmp_path):
    archive = tmp_path / "project.tar.gz"
    archive.write_bytes(tar_archive(project_files()))
    tab = open_page()
    page = tab.page
    test_ui.log_in(page, server)
    page.goto(server.url + "/#/stacks/new")
    page.get_by_label("Name", exact=True).fill(project)
    page.get_by_label("Upload a compose file or a project archive").set_input_files(str(archive))
    page.get_by_role("button", name="Deploy the stack").click()
    # while the image builds, its steps show in the progress panel
    page.wait_for_function("() => /web: Step \\d/.test(document.getElementById('deploy-progress')?.textContent)",
                           timeout=120_000)
    page.get_by_role("heading", name=f"Stack {project}").wait_for(timeout=120_000)
    check_project_deployed(engine, project, engine.containers.get(f"{project}_web_1").labels[
        "com.docker.compose.project.working_dir"])
