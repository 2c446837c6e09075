"""The agent, driven as users drive it: agent.py on other hosts (network namespaces with their own engines),
managed from the server with the Docker CLI, alone and as a two-node Swarm."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time

import pytest
import requests

import conftest
from conftest import (BUSYBOX, DOCKER_SOCKET, HERE, SLOT, TEST_LABEL, NamespaceHost, kill_pidfile,
                      make_namespace_host, start_server, wait_until)
from test_portainer import run_in_pty

import agent as shared

AGENT_PORT = 9001
# Namespace host numbers of this file (conftest's remote_host uses 1).
SINGLE_HOST, MANAGER_HOST, WORKER_HOST = 5, 6, 7
SWARM_SECRET = "cluster secret for the tests"
# Agents make their own certificates; the tests check fingerprints instead.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


# ---------------------------------------------------------------------------------------------------------------
# Hosts, engines and agents
# ---------------------------------------------------------------------------------------------------------------


def start_named_engine(host: NamespaceHost, hostname: str) -> None:
    """The host's engine in its own UTS namespace too, so that its node name is its own."""
    pidfile = os.path.join(host.root, "docker.pid")
    kill_pidfile(pidfile)
    shutil.rmtree(host.root, ignore_errors=True)  # a swarm an earlier run left lives in the data root
    os.makedirs(os.path.join(host.root, "exec"), exist_ok=True)
    log = open(os.path.join(host.root, "dockerd.log"), "ab")
    dockerd = (f"dockerd --data-root {host.root}/data --exec-root {host.root}/exec -H unix://{host.socket} "
               f"--pidfile {pidfile} --storage-driver=vfs")
    host.engine_process = host.popen(["unshare", "--uts", "sh", "-c", f"hostname {hostname} && exec {dockerd}"],
                                     stdout=log, stderr=subprocess.STDOUT)
    wait_until(lambda: host.client().ping(), timeout=60, interval=0.3, message=f"dockerd on {host.name}")


class AgentProcess:
    """`python agent.py` living on a namespace host."""

    def __init__(self, host: NamespaceHost, *args: str, port: int = AGENT_PORT, data: str | None = None):
        self.host, self.args, self.port, self.data = host, args, port, data
        self.log_path = os.path.join(host.root, f"agent-{port}.log")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host.address}:{self.port}"

    def start(self) -> "AgentProcess":
        argv = [sys.executable, os.path.join(HERE, "agent.py"), "--port", str(self.port),
                "--docker-host", f"unix://{self.host.socket}", "--log-level", "DEBUG", *self.args]
        if self.data:
            argv += ["--data", self.data]
        self.process = self.host.popen(argv, cwd=HERE, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_until(self.answers, timeout=20, message=f"agent on {self.host.name}")
        return self

    def answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"agent.py exited {self.process.returncode}:\n{open(self.log_path).read()}")
        return requests.get(self.url + "/ping", verify=False, timeout=2).status_code == 204

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def certificate_fingerprint(self) -> str:
        pem = ssl.get_server_certificate((self.host.address, self.port))
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


@pytest.fixture(scope="module")
def agent_server(engine, workdir):
    """A server of this module's own (agents pin the first server that talks to them), snapshotting every 2 s."""
    srv = start_server(os.path.join(workdir, f"agent-server-{SLOT}"), "--snapshot-interval", "2",
                       host="unix://" + DOCKER_SOCKET)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def agent_host(engine):
    host = make_namespace_host(SINGLE_HOST)
    start_named_engine(host, f"ptpy-agent{SLOT}")
    host.load_image(engine)
    agent = AgentProcess(host, data=os.path.join(host.root, "agent-state")).start()
    yield agent
    agent.stop()
    host.remove()


def add_agent_environment(server, name: str, url: str, **fields) -> requests.Response:
    return server.api("POST", "/api/endpoints", json={"Name": name, "EndpointCreationType": 2, "URL": url, **fields})


@pytest.fixture(scope="module")
def agent_env(agent_server, agent_host) -> int:
    r = add_agent_environment(agent_server, "node-agent", f"{agent_host.host.address}:{AGENT_PORT}")
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def cli_env(server, endpoint_id: int, headers: dict | None = None) -> dict:
    """Docker CLI settings for an environment; `headers` (e.g. the target node) go with every request."""
    env = server.docker_cli_env(endpoint_id)
    with open(os.path.join(env["DOCKER_CONFIG"], "config.json"), "w") as f:
        json.dump({"HttpHeaders": {"X-API-Key": server.admin_api_key, **(headers or {})}}, f)
    return env


def docker_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr}"
    return result


def server_signer(server) -> shared.RequestSigner:
    return shared.RequestSigner(shared.load_or_create_signing_key(os.path.join(server.data, "agent_signature.pem")))


def signed_get(agent: AgentProcess, target: str, signer: shared.RequestSigner, **header_options):
    headers = dict(signer.headers("GET", target, **header_options))
    return requests.get(agent.url + target, headers=headers, verify=False, timeout=10)


# ---------------------------------------------------------------------------------------------------------------
# One agent on another host
# ---------------------------------------------------------------------------------------------------------------


def test_agent_ping_is_unsigned_and_names_its_version(agent_host):
    r = requests.get(agent_host.url + "/ping", verify=False, timeout=5)
    assert r.status_code == 204
    assert r.headers["Portainer-Agent"] == shared.AGENT_VERSION and r.headers["Portainer-Agent-API-Version"]


def test_agent_flags_fall_back_to_portainer_environment_variables(monkeypatch):
    for name, value in [("AGENT_PORT", "9100"), ("AGENT_HOST", "127.0.0.1"), ("AGENT_SECRET", "s"),
                        ("AGENT_CLUSTER_ADDR", "tasks.agent"), ("DOCKER_HOST", "unix:///x.sock"), ("LOG_LEVEL", "debug")]:
        monkeypatch.setenv(name, value)
    config = shared.build_agent_parser().parse_args([])
    assert (config.port, config.host, config.secret, config.cluster_addr, config.docker_host, config.log_level) == (
        9100, "127.0.0.1", "s", "tasks.agent", "unix:///x.sock", "DEBUG")
    assert shared.build_agent_parser().parse_args(["--port", "9200"]).port == 9200


def test_admin_adds_an_agent_and_sees_its_certificate_fingerprint(agent_server, agent_host, agent_env):
    endpoint = agent_server.api("GET", f"/api/endpoints/{agent_env}").json()
    assert endpoint["Type"] == 2 and endpoint["URL"] == f"tcp://{agent_host.host.address}:{AGENT_PORT}"
    assert endpoint["Agent"]["CertificateFingerprint"] == agent_host.certificate_fingerprint()
    assert endpoint["Status"] == 1 and endpoint["Snapshots"][0]["AgentVersion"] == shared.AGENT_VERSION
    key_file = os.path.join(agent_server.data, "agent_signature.pem")
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"


def test_docker_cli_manages_the_agent_host(agent_server, agent_host, agent_env, tmp_path):
    env = cli_env(agent_server, agent_env)
    remote = agent_host.host.client()
    name = f"ptpy-agent-ps-{SLOT}"
    docker_cli(env, "run", "-d", "--name", name, "--label", TEST_LABEL, BUSYBOX,
               "sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done")
    assert remote.containers.get(name).status == "running"  # it runs on the agent's engine, not the machine's
    assert name in docker_cli(env, "ps", "--format", "{{.Names}}").stdout

    seen = run_in_pty(["docker", "run", "-it", "--rm", "--label", TEST_LABEL, BUSYBOX, "sh"], env,
                      [b"echo $((6*7))\r", b"exit\r"], b"42")
    assert b"42" in seen
    seen = run_in_pty(["docker", "exec", "-it", name, "sh"], env, [b"echo exec-$((2+3))\r", b"exit\r"], b"exec-5")
    assert b"exec-5" in seen

    follow = subprocess.Popen(["docker", "logs", "-f", name], env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = [follow.stdout.readline() for _ in range(8)]
        assert lines[-1].startswith("tick")
    finally:
        follow.send_signal(signal.SIGINT)
        follow.wait(10)

    (tmp_path / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY hello.txt /hello.txt\nCMD cat /hello.txt\n")
    (tmp_path / "hello.txt").write_text("built through the agent\n" + "x" * 200_000)
    docker_cli(env, "build", "-q", "-t", "ptpy-agent-built:1", str(tmp_path), timeout=120)
    out = docker_cli(env, "run", "--rm", "--label", TEST_LABEL, "ptpy-agent-built:1").stdout
    assert out.startswith("built through the agent")
    assert remote.images.get("ptpy-agent-built:1")
    docker_cli(env, "rm", "-f", name)


def test_agent_refuses_unsigned_replayed_expired_wrong_key_and_tampered_requests(agent_server, agent_host, agent_env):
    signer = server_signer(agent_server)
    target = "/v1.41/version"
    assert signed_get(agent_host, target, signer).status_code == 200

    unsigned = requests.get(agent_host.url + target, verify=False, timeout=5)
    assert unsigned.status_code == 403 and "unsigned" in unsigned.json()["message"]

    headers = dict(signer.headers("GET", target))
    assert requests.get(agent_host.url + target, headers=headers, verify=False, timeout=5).status_code == 200
    replayed = requests.get(agent_host.url + target, headers=headers, verify=False, timeout=5)
    assert replayed.status_code == 403 and "replayed" in replayed.json()["message"]

    expired = signed_get(agent_host, target, signer, timestamp=int(time.time()) - 600)
    assert expired.status_code == 403 and "window" in expired.json()["message"]

    stranger = shared.RequestSigner(shared.load_or_create_signing_key(os.path.join(agent_server.data, "..",
                                                                                   f"stranger-{SLOT}.pem")))
    wrong_key = signed_get(agent_host, target, stranger)
    assert wrong_key.status_code == 403 and "already paired" in wrong_key.json()["message"]

    tampered = dict(signer.headers("GET", "/v1.41/version"))
    r = requests.get(agent_host.url + "/v1.41/info", headers=tampered, verify=False, timeout=5)
    assert r.status_code == 403 and "signature" in r.json()["message"]


def test_a_second_server_is_refused_because_the_agent_is_already_paired(fresh_server, agent_host, agent_env):
    other = fresh_server()
    r = add_agent_environment(other, "stolen", f"{agent_host.host.address}:{AGENT_PORT}")
    assert r.status_code == 403 and "already paired" in r.json()["message"]


def test_agent_with_a_secret_accepts_only_servers_that_prove_it(agent_server, fresh_server, agent_host):
    secret_agent = AgentProcess(agent_host.host, "--secret", "right secret", port=AGENT_PORT + 1).start()
    try:
        url = f"{agent_host.host.address}:{AGENT_PORT + 1}"
        wrong = add_agent_environment(agent_server, "secret-wrong", url, AgentSecret="wrong secret")
        assert wrong.status_code == 403 and "secret" in wrong.json()["message"]
        assert add_agent_environment(agent_server, "secret-none", url).status_code == 403
        right = add_agent_environment(agent_server, "secret-right", url, AgentSecret="right secret")
        assert right.status_code == 200, right.text
        # any server knowing the secret is accepted, nothing is pinned
        other = fresh_server("--agent-secret", "right secret")
        assert add_agent_environment(other, "secret-other", url).status_code == 200
        signer = server_signer(agent_server)
        assert signed_get(secret_agent, "/v1.41/version", signer, secret="wrong secret").status_code == 403
        assert signed_get(secret_agent, "/v1.41/version", signer, secret="right secret").status_code == 200
        agent_server.api("DELETE", f"/api/endpoints/{right.json()['Id']}")
    finally:
        secret_agent.stop()


def test_server_refuses_an_agent_whose_certificate_changed(agent_server, agent_host):
    stateless = AgentProcess(agent_host.host, port=AGENT_PORT + 2).start()
    try:
        r = add_agent_environment(agent_server, "stateless", f"{agent_host.host.address}:{AGENT_PORT + 2}")
        assert r.status_code == 200, r.text
        env_id = r.json()["Id"]
        assert agent_server.api("GET", f"/api/endpoints/{env_id}/docker/v1.41/version").status_code == 200
        stateless.stop()
        stateless.start()  # no state directory: a new certificate, which the server must not trust
        r = agent_server.api("GET", f"/api/endpoints/{env_id}/docker/v1.41/version")
        assert r.status_code == 502 and "certificate" in r.json()["details"]
        agent_server.api("DELETE", f"/api/endpoints/{env_id}")
    finally:
        stateless.stop()


def test_volume_browser_works_inside_the_volume_and_refuses_escapes(agent_server, agent_host, agent_env):
    remote = agent_host.host.client()
    volume = remote.volumes.create(f"ptpy-browse-{SLOT}", labels={TEST_LABEL: "1"})
    try:
        base = f"/api/endpoints/{agent_env}/docker/v2/browse"
        q = {"volumeID": volume.name}
        r = agent_server.api("PUT", f"{base}/put", params={**q, "path": "/notes.txt"}, data=b"kept in a volume\n")
        assert r.status_code == 204, r.text
        r = agent_server.api("POST", f"{base}/put", params={**q, "path": "/"},
                             files={"file": ("upload.bin", b"\x00\x01" * 1000)})
        assert r.status_code == 204, r.text
        listing = agent_server.api("GET", f"{base}/ls", params={**q, "path": "/"}).json()
        assert {e["Name"]: e["Size"] for e in listing} == {"notes.txt": 17, "upload.bin": 2000}
        assert agent_server.api("GET", f"{base}/get", params={**q, "path": "notes.txt"}).content == b"kept in a volume\n"
        assert agent_server.api("PUT", f"{base}/rename", params={**q, "path": "/notes.txt", "newPath": "/n2.txt"}
                                ).status_code == 204
        assert agent_server.api("DELETE", f"{base}/delete", params={**q, "path": "/upload.bin"}).status_code == 204
        assert [e["Name"] for e in agent_server.api("GET", f"{base}/ls", params={**q, "path": "/"}).json()] == ["n2.txt"]

        for escape in ("../../../../etc/passwd", "/../../etc", "a/../../x"):
            r = agent_server.api("GET", f"{base}/get", params={**q, "path": escape})
            assert r.status_code == 400, (escape, r.text)
        os.symlink("/etc", os.path.join(volume.attrs["Mountpoint"], "outside"))
        for method, operation in (("GET", "ls"), ("GET", "get"), ("DELETE", "delete")):
            r = agent_server.api(method, f"{base}/{operation}", params={**q, "path": "/outside/passwd"})
            assert r.status_code == 403 and "leaves the volume" in r.json()["message"], r.text
        r = agent_server.api("PUT", f"{base}/put", params={**q, "path": "/outside/evil"}, data=b"x")
        assert r.status_code == 403 and not os.path.exists("/etc/evil")
        assert os.path.exists("/etc/passwd")
    finally:
        volume.remove(force=True)


@pytest.mark.browser
def test_admin_adds_an_agent_and_browses_a_volume_in_the_web_ui(agent_server, agent_host, agent_env):
    playwright = pytest.importorskip("playwright.sync_api")
    from conftest import ADMIN_PASSWORD
    volume = agent_host.host.client().volumes.create(f"ptpy-ui-browse-{SLOT}", labels={TEST_LABEL: "1"})
    with open(os.path.join(volume.attrs["Mountpoint"], "seen-in-ui.txt"), "w") as f:
        f.write("hello")
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=conftest.CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(agent_server.url + "/#/login")
            page.fill("#u", "admin")
            page.fill("#p", ADMIN_PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("text=Add environment")
            page.click("text=Add environment")
            page.fill("#n", "agent-from-ui")
            page.fill("#url", f"{agent_host.host.address}:{AGENT_PORT}")
            page.click("button.primary")
            page.wait_for_selector("pre")
            assert page.inner_text("pre").strip() == agent_host.certificate_fingerprint()
            new_id = [ep["Id"] for ep in agent_server.api("GET", "/api/endpoints").json()
                      if ep["Name"] == "agent-from-ui"][0]
            page.goto(agent_server.url + f"/#/env/{new_id}/volumes")
            page.click(f"tr:has-text('{volume.name}') a:text-is('browse')")
            page.wait_for_selector("text=seen-in-ui.txt")
            browser.close()
        agent_server.api("DELETE", f"/api/endpoints/{new_id}")
    finally:
        volume.remove(force=True)


def test_killed_agent_takes_its_environment_down_and_a_restart_brings_it_back(agent_server, agent_host, agent_env):
    def status():
        return agent_server.api("GET", f"/api/endpoints/{agent_env}").json()["Status"]

    assert status() == 1
    agent_host.stop(signal.SIGKILL)
    wait_until(lambda: status() == 2, timeout=8, message="environment down")
    r = agent_server.api("GET", f"/api/endpoints/{agent_env}/docker/v1.41/version")
    assert r.status_code == 502
    agent_host.start()  # same state directory: same certificate, same paired server
    wait_until(lambda: status() == 1, timeout=8, message="environment up again")
    assert agent_server.api("GET", f"/api/endpoints/{agent_env}/docker/v1.41/version").status_code == 200
    stranger = shared.RequestSigner(shared.load_or_create_signing_key(os.path.join(agent_server.data, "..",
                                                                                   f"stranger-{SLOT}.pem")))
    assert "already paired" in signed_get(agent_host, "/v1.41/version", stranger).json()["message"]


# ---------------------------------------------------------------------------------------------------------------
# A two-node Swarm of namespace engines, an agent on each node
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def swarm(engine, agent_server):
    manager, worker = make_namespace_host(MANAGER_HOST), make_namespace_host(WORKER_HOST)
    manager_name, worker_name = f"ptpy-manager{SLOT}", f"ptpy-worker{SLOT}"
    agents: list[AgentProcess] = []
    try:
        # A direct link between the two nodes: the machine's firewall is left alone.
        link = f"10.98.{SLOT * 10 + 1}"
        subprocess.run(["ip", "link", "add", f"ptpy-sw{SLOT}a", "netns", manager.name, "type", "veth", "peer", "name",
                        f"ptpy-sw{SLOT}b", "netns", worker.name], check=True, capture_output=True)
        manager.sh(f"ip addr add {link}.1/24 dev ptpy-sw{SLOT}a && ip link set ptpy-sw{SLOT}a up")
        worker.sh(f"ip addr add {link}.2/24 dev ptpy-sw{SLOT}b && ip link set ptpy-sw{SLOT}b up")
        start_named_engine(manager, manager_name)
        start_named_engine(worker, worker_name)
        for host in (manager, worker):
            host.load_image(engine)
        manager.client().swarm.init(advertise_addr=f"{link}.1", listen_addr=f"{link}.1:2377")
        token = manager.client().swarm.attrs["JoinTokens"]["Worker"]
        worker.client().swarm.join(remote_addrs=[f"{link}.1:2377"], join_token=token, advertise_addr=f"{link}.2",
                                   listen_addr=f"{link}.2:2377")
        wait_until(lambda: len(manager.client().nodes.list()) == 2, message="worker joined")
        cluster = f"{link}.1,{link}.2"
        for host in (manager, worker):
            agents.append(AgentProcess(host, "--secret", SWARM_SECRET, "--cluster-addr", cluster).start())
        r = add_agent_environment(agent_server, "swarm", f"{manager.address}:{AGENT_PORT}", AgentSecret=SWARM_SECRET)
        assert r.status_code == 200, r.text
        yield {"env": r.json()["Id"], "manager": manager, "worker": worker, "agents": agents,
               "names": (manager_name, worker_name)}
    finally:
        for agent in agents:
            agent.stop()
        for host in (worker, manager):
            with contextlib.suppress(Exception):
                host.client().swarm.leave(force=True)
            host.remove()
            shutil.rmtree(host.root, ignore_errors=True)


def test_swarm_environment_lists_containers_of_every_node_tagged_with_the_node(agent_server, swarm):
    manager_name, worker_name = swarm["names"]
    for host, name in ((swarm["manager"], "on-manager"), (swarm["worker"], "on-worker")):
        host.client().containers.run(BUSYBOX, "sleep 300", name=f"ptpy-{name}-{SLOT}", detach=True,
                                     labels={TEST_LABEL: "1"})
    r = agent_server.api("GET", f"/api/endpoints/{swarm['env']}/docker/v1.41/containers/json")
    assert r.status_code == 200, r.text
    nodes = {c["Names"][0].lstrip("/"): c["Portainer"]["Agent"]["NodeName"] for c in r.json()}
    assert nodes[f"ptpy-on-manager-{SLOT}"] == manager_name and nodes[f"ptpy-on-worker-{SLOT}"] == worker_name
    volumes = agent_server.api("GET", f"/api/endpoints/{swarm['env']}/docker/v1.41/volumes").json()
    assert isinstance(volumes["Volumes"], list)
    # what the CLI sees: both nodes' containers in one `docker ps`
    names = docker_cli(cli_env(agent_server, swarm["env"]), "ps", "--format", "{{.Names}}").stdout.split()
    assert {f"ptpy-on-manager-{SLOT}", f"ptpy-on-worker-{SLOT}"} <= set(names)


def test_swarm_exec_into_a_worker_container_by_target_node(agent_server, swarm):
    _, worker_name = swarm["names"]
    name = f"ptpy-exec-target-{SLOT}"
    swarm["worker"].client().containers.run(BUSYBOX, "sleep 300", name=name, detach=True, labels={TEST_LABEL: "1"})
    env = cli_env(agent_server, swarm["env"], {"X-PortainerAgent-Target": worker_name})
    seen = run_in_pty(["docker", "exec", "-it", name, "sh"], env, [b"echo on-$((40+2))\r", b"exit\r"], b"on-42")
    assert b"on-42" in seen


def test_swarm_cli_reaches_a_worker_container_without_naming_the_node(agent_server, swarm):
    name = f"ptpy-found-{SLOT}"
    swarm["worker"].client().containers.run(BUSYBOX, ["sh", "-c", "echo from-the-worker; sleep 300"], name=name,
                                            detach=True, labels={TEST_LABEL: "1"})
    env = cli_env(agent_server, swarm["env"])
    wait_until(lambda: "from-the-worker" in docker_cli(env, "logs", name).stdout, timeout=10, message="logs")
    seen = run_in_pty(["docker", "exec", "-it", name, "sh"], env, [b"echo found-$((1+1))\r", b"exit\r"], b"found-2")
    assert b"found-2" in seen
    docker_cli(env, "rm", "-f", name)
    assert not swarm["worker"].client().containers.list(all=True, filters={"name": name})


def test_swarm_calls_go_to_a_manager_even_through_the_worker_agent(agent_server, swarm):
    r = add_agent_environment(agent_server, "swarm-via-worker", f"{swarm['worker'].address}:{AGENT_PORT}",
                              AgentSecret=SWARM_SECRET)
    assert r.status_code == 200, r.text
    try:
        nodes = agent_server.api("GET", f"/api/endpoints/{r.json()['Id']}/docker/v1.41/nodes").json()
        assert sorted(n["Description"]["Hostname"] for n in nodes) == sorted(swarm["names"])
    finally:
        agent_server.api("DELETE", f"/api/endpoints/{r.json()['Id']}")


def test_a_down_node_is_reported_not_a_failure_of_the_whole_list(agent_server, swarm):
    _, worker_name = swarm["names"]
    worker_agent = swarm["agents"][1]
    worker_agent.stop(signal.SIGKILL)
    try:
        r = agent_server.api("GET", f"/api/endpoints/{swarm['env']}/docker/v1.41/containers/json")
        assert r.status_code == 200
        assert worker_name in r.headers["X-PortainerAgent-Unreachable-Nodes"]
        assert all(c["Portainer"]["Agent"]["NodeName"] != worker_name for c in r.json())
    finally:
        worker_agent.start()


def test_peer_agents_refuse_requests_without_the_servers_signature(swarm):
    worker_agent = swarm["agents"][1]
    r = requests.get(worker_agent.url + "/v1.41/containers/json", headers={"X-PortainerAgent-Forwarded": "1"},
                     verify=False, timeout=5)
    assert r.status_code == 403
    r = requests.get(worker_agent.url + shared.NODE_INFO_PATH, verify=False, timeout=5)
    assert r.status_code == 403 and "secret" in r.json()["message"]


def test_the_node_a_call_targets_is_the_node_whose_container_was_checked(agent_server, swarm):
    """A standard user's own container on the manager and another one of the same name on the worker: naming the
    worker in X-PortainerAgent-Target reaches the worker's, so the ownership check must look there too."""
    manager_name, worker_name = swarm["names"]
    user = f"agent-target-{time.monotonic_ns() % 10**6}"
    r = agent_server.api("POST", "/api/users", json={"Username": user, "Password": "a long enough password",
                                                     "Role": 2})
    assert r.status_code == 200, r.text
    user_id = r.json()["Id"]
    r = agent_server.api("PUT", f"/api/endpoints/{swarm['env']}",
                         json={"UserAccessPolicies": {str(user_id): {"RoleId": 0}}})
    assert r.status_code == 200, r.text
    token = agent_server.login(user, "a long enough password")
    key = agent_server.create_api_key(token, user_id, "a long enough password")
    name = f"ptpy-same-name-{SLOT}"
    base = f"{agent_server.url}/api/endpoints/{swarm['env']}/docker/v1.41"
    on_node = lambda node: {"X-API-Key": key, "X-PortainerAgent-Target": node}  # noqa: E731
    r = requests.post(f"{base}/containers/create?name={name}", headers=on_node(manager_name), timeout=30,
                      json={"Image": BUSYBOX, "Cmd": ["sleep", "300"], "Labels": {TEST_LABEL: "1"}})
    assert r.status_code == 201, r.text
    swarm["worker"].client().containers.create(BUSYBOX, "sleep 300", name=name, labels={TEST_LABEL: "1"},
                                               environment=["WORKER_SECRET=s3cr3t"])
    try:
        assert requests.get(f"{base}/containers/{name}/json", headers=on_node(manager_name),
                            timeout=30).status_code == 200
        r = requests.get(f"{base}/containers/{name}/json", headers=on_node(worker_name), timeout=30)
        assert r.status_code == 403 and "s3cr3t" not in r.text, r.text
    finally:
        for host in (swarm["manager"], swarm["worker"]):
            host.client().containers.get(name).remove(force=True)
