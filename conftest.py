"""Test fixtures: a real Docker engine, real portainer.py server processes, real clients.

Everything a test creates on an engine carries the label TEST_LABEL so that a run cleans up what an
earlier, killed run left behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import docker
import pytest
import requests
import urllib3

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

HERE = os.path.dirname(os.path.abspath(__file__))
DOCKER_SOCKET = "/var/run/docker.sock"
# Parallel runs on one machine (several checkouts) each set their own slot, so they share no names.
SLOT = int(os.environ.get("PTPY_TEST_SLOT", "0"))
TEST_LABEL = "portainer.py.test" + (str(SLOT) if SLOT else "")
ADMIN_PASSWORD = "correct horse battery staple"
BUSYBOX = "busybox:local"


def sleeping_compose(service: str = "web") -> str:
    """A compose file of one busybox service that sleeps and stops at once, labelled as the tests' own."""
    return (f"services:\n  {service}:\n    image: {BUSYBOX}\n    command: sleep 3600\n    stop_grace_period: 1s\n"
            f"    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Debian's Chromium as every browser test starts it: the flags keep it from dialling out at start (updates, sync,
# first-run pages), which this closed network refuses many at a time.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def open_login_page(page, base_url: str, attempts: int = 4) -> None:
    """The web UI's login page, shown. Chromium drops a request in flight when the machine's network interfaces
    change (net::ERR_NETWORK_CHANGED: every container start adds a veth link); a module of the UI it dropped leaves
    the page blank, so a page that shows no login form within 10 s is loaded again (a reload: going to the same
    address again only changes the hash)."""
    from playwright.sync_api import Error as PlaywrightError
    for attempt in range(attempts):
        try:
            if attempt == 0:
                page.goto(base_url + "/#/login")
            else:
                page.reload()
            page.get_by_label("Username").wait_for(timeout=10_000)
            return
        except PlaywrightError:
            if attempt == attempts - 1:
                raise


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)


def remove_labelled(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": TEST_LABEL}):
        c.remove(force=True)
    for n in client.networks.list(filters={"label": TEST_LABEL}):
        n.remove()
    for v in client.volumes.list(filters={"label": TEST_LABEL}):
        v.remove(force=True)


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    """The machine's Docker engine (started by `make test`), with busybox:local and nothing left from before."""
    if not os.path.exists(DOCKER_SOCKET):
        subprocess.run(["make", "-C", HERE, "engine"], check=True)
    client = docker.DockerClient(base_url="unix://" + DOCKER_SOCKET)
    client.ping()
    try:
        client.images.get(BUSYBOX)
    except docker.errors.ImageNotFound:
        subprocess.run(["make", "-C", HERE, "engine"], check=True)
    remove_labelled(client)
    yield client
    remove_labelled(client)
    client.close()


@dataclass
class Server:
    """One running portainer.py process and the ways a test talks to it."""

    process: subprocess.Popen
    data: str
    port: int
    https_port: int
    log_path: str
    admin_token: str = ""
    admin_api_key: str = ""
    extra: dict = field(default_factory=dict)
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def https_url(self) -> str:
        return f"https://{self.address}:{self.https_port}"

    def api(self, method: str, path: str, token: str | None = None, api_key: str | None = None,
            **kwargs) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if api_key:
            headers["X-API-Key"] = api_key
        elif token is None and self.admin_token:
            headers["Authorization"] = f"Bearer {self.admin_token}"
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 60)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def login(self, username: str, password: str) -> str:
        r = requests.post(self.url + "/api/auth", json={"Username": username, "Password": password}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["jwt"]

    def create_api_key(self, token: str, user_id: int, password: str) -> str:
        r = self.api("POST", f"/api/users/{user_id}/tokens", token=token,
                     json={"password": password, "description": "tests"})
        assert r.status_code == 200, r.text
        return r.json()["rawAPIKey"]

    def docker_sdk(self, endpoint_id: int = 1, api_key: str | None = None) -> docker.DockerClient:
        client = docker.DockerClient(base_url=f"tcp://{self.address}:{self.port}/api/endpoints/{endpoint_id}/docker",
                                     version="1.41", timeout=120)
        client.api.headers["X-API-Key"] = api_key or self.admin_api_key
        return client

    def docker_cli_env(self, endpoint_id: int = 1, api_key: str | None = None) -> dict:
        config_dir = os.path.join(self.data, "..", f"cli-{endpoint_id}-{abs(hash(api_key)) % 10**8}")
        os.makedirs(config_dir, exist_ok=True)
        with open(os.path.join(config_dir, "config.json"), "w") as f:
            json.dump({"HttpHeaders": {"X-API-Key": api_key or self.admin_api_key}}, f)
        env = dict(os.environ)
        env["DOCKER_HOST"] = f"tcp://{self.address}:{self.port}/api/endpoints/{endpoint_id}/docker"
        env["DOCKER_CONFIG"] = config_dir
        env["DOCKER_BUILDKIT"] = "0"
        env.pop("DOCKER_TLS_VERIFY", None)
        return env

    def docker(self, *args, endpoint_id: int = 1, api_key: str | None = None, input: str | None = None,
               timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=self.docker_cli_env(endpoint_id, api_key), input=input,
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def rss_kb(self) -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(data: str, *args: str, admin_password: str | None = ADMIN_PASSWORD, wait: bool = True,
                 host: str | None = "unix://" + DOCKER_SOCKET, env: dict | None = None, bind_host: str = "127.0.0.1",
                 ports: tuple[int, int] | None = None) -> Server:
    """Start `python portainer.py` on free ports (or the given (http, https) ports, to restart a server where
    it was); with admin_password, the admin exists and is logged in. `bind_host` is the address it listens on,
    e.g. a namespace host's `host_address` so that processes on that host can reach it."""
    os.makedirs(data, exist_ok=True)
    port, https_port = ports or (free_port(), free_port())
    argv = [sys.executable, os.path.join(HERE, "portainer.py"), "--bind", f"{bind_host}:{port}",
            "--bind-https", f"{bind_host}:{https_port}", "--data", data, "--log-level", "DEBUG", *args]
    if host:
        argv += ["-H", host]
    if admin_password:
        password_file = os.path.join(os.path.dirname(data.rstrip("/")), f"{os.path.basename(data)}-admin-pw")
        with open(password_file, "w") as f:
            f.write(admin_password)
        argv += ["--admin-password-file", password_file]
    log_path = data.rstrip("/") + ".log"
    log_file = open(log_path, "ab")
    process = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=HERE,
                               env={**os.environ, **(env or {})})
    server = Server(process, data, port, https_port, log_path, address=bind_host)
    if wait:
        def up():
            if process.poll() is not None:
                raise AssertionError(f"portainer.py exited {process.returncode}:\n{server.log()}")
            return requests.get(server.url + "/api/system/status", timeout=2).status_code == 200
        wait_until(up, timeout=30, message="portainer.py to answer")
        if admin_password:
            server.admin_token = server.login("admin", admin_password)
            server.admin_api_key = server.create_api_key(server.admin_token, 1, admin_password)
    return server


@pytest.fixture(scope="session")
def workdir():
    path = tempfile.mkdtemp(prefix="portainer-py-tests-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server(engine, workdir) -> Server:
    """One server for the session, managing the machine's engine as environment 1."""
    srv = start_server(os.path.join(workdir, "main-data"))
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(engine, tmp_path):
    """A server of its own for a test that changes global state; stopped afterwards."""
    started = []

    def make(*args, **kwargs) -> Server:
        srv = start_server(str(tmp_path / f"data{len(started)}"), *args, **kwargs)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def make_user(server):
    """Create a standard user and return (user id, token, api key)."""
    counter = [0]

    def make(role: int = 2, endpoint_access: tuple = (1,)):
        counter[0] += 1
        name = f"user{counter[0]}-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        password = "a long enough password"
        r = server.api("POST", "/api/users", json={"Username": name, "Password": password, "Role": role})
        assert r.status_code == 200, r.text
        user_id = r.json()["Id"]
        for endpoint_id in endpoint_access:
            endpoint = server.api("GET", f"/api/endpoints/{endpoint_id}").json()
            policies = endpoint.get("UserAccessPolicies") or {}
            policies[str(user_id)] = {"RoleId": 0}
            r = server.api("PUT", f"/api/endpoints/{endpoint_id}", json={"UserAccessPolicies": policies})
            assert r.status_code == 200, r.text
        token = server.login(name, password)
        key = server.create_api_key(token, user_id, password)
        return user_id, token, key

    return make


# ---------------------------------------------------------------------------------------------------------------
# A second host: a network namespace with its own Docker engine (see ../shared/TESTBED.md)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class NamespaceHost:
    """A 'remote' host: its own network namespace, address and Docker engine, reachable from this machine."""

    name: str
    address: str
    host_address: str
    root: str
    engine_process: subprocess.Popen | None = None

    @property
    def netns(self) -> str:
        return f"/var/run/netns/{self.name}"

    @property
    def socket(self) -> str:
        return os.path.join(self.root, "docker.sock")

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a process that lives on this host (its network is the namespace's)."""
        return subprocess.Popen(["nsenter", f"--net={self.netns}", *argv], **kwargs)

    def sh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["nsenter", f"--net={self.netns}", "sh", "-c", command], capture_output=True,
                              text=True, check=check)

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=f"unix://{self.socket}")

    def start_engine(self) -> None:
        os.makedirs(os.path.join(self.root, "exec"), exist_ok=True)
        pidfile = os.path.join(self.root, "docker.pid")
        kill_pidfile(pidfile)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        log = open(os.path.join(self.root, "dockerd.log"), "ab")
        self.engine_process = self.popen(
            ["dockerd", "--data-root", os.path.join(self.root, "data"), "--exec-root", os.path.join(self.root, "exec"),
             "-H", f"unix://{self.socket}", "--pidfile", pidfile, "--storage-driver=vfs"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.client().ping(), timeout=60, interval=0.3, message=f"dockerd on {self.name}")

    def stop_engine(self) -> None:
        if self.engine_process and self.engine_process.poll() is None:
            self.engine_process.terminate()
            try:
                self.engine_process.wait(30)
            except subprocess.TimeoutExpired:
                self.engine_process.kill()
                self.engine_process.wait()
        self.engine_process = None

    def remove(self) -> None:
        """The host gone: its containers removed by force first (a running one would get its own 10 s stop
        timeout, and the engine's shutdown waits for it: a busybox `sleep` as PID 1 ignores SIGTERM), its engine
        stopped, its namespace removed."""
        if self.engine_process and self.engine_process.poll() is None:
            with contextlib.suppress(Exception):
                for container in self.client().containers.list(all=True):
                    with contextlib.suppress(docker.errors.APIError):
                        container.remove(force=True)
        self.stop_engine()
        remove_namespace_host(self.name, self.name.replace("node", "veth"), self.root)

    def load_image(self, engine: docker.DockerClient, image: str = BUSYBOX) -> None:
        client = self.client()
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            client.images.load(b"".join(engine.images.get(image).save(named=image)))


def kill_pidfile(pidfile: str) -> None:
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(pidfile)


def remove_namespace_host(name: str, veth: str, root: str) -> None:
    kill_pidfile(os.path.join(root, "docker.pid"))
    subprocess.run(["ip", "link", "del", veth], capture_output=True)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


# Which suite uses which host number, so that one pytest run never hands the same namespace to two fixtures.
NAMESPACE_HOSTS = {1: "remote_host (session)", 2: "test_edge", 3: "test_access", 4: "test_stacks swarm",
                   5: "test_agent", 6: "test_agent swarm manager", 7: "test_agent swarm worker",
                   8: "test_ui swarm", 9: "test_stacks edge site", 10: "test_resilience agent",
                   11: "test_resilience edge site", 12: "test_resilience edge stack site 1",
                   13: "test_resilience edge stack site 2", 14: "test_trust_stacks swarm",
                   15: "test_portainer_routes swarm", 16: "test_ui_swarm", 17: "test_edge_fleet site",
                   18: "test_compose_projects agent", 19: "test_compose_projects edge site",
                   20: "test_git_stacks agent and sshd", 21: "test_compose_spec swarm"}
# Hosts 10..34 live in 10.97.0.0/16 (10.99 holds ten hosts per slot), numbered past the first scheme's names.
EXTRA_HOSTS_PER_SLOT = 25


def make_namespace_host(index: int) -> NamespaceHost:
    """Host number `index` of this run's slot: 1..9 at 10.99.N.2, 10..34 at 10.97.N.2 (this machine at .1)."""
    if index < 10:
        number = SLOT * 10 + index
        subnet = f"10.99.{number}"
    else:
        assert index < 10 + EXTRA_HOSTS_PER_SLOT, f"no namespace host number {index}"
        number = 1000 + SLOT * EXTRA_HOSTS_PER_SLOT + index - 10
        subnet = f"10.97.{number - 1000}"
    name, veth = f"ptpy-node{number}", f"ptpy-veth{number}"  # interface names stay within 15 characters
    address, host_address = f"{subnet}.2", f"{subnet}.1"
    root = f"/tmp/portainer-py-{name}"
    remove_namespace_host(name, veth, root)  # whatever an earlier, killed run left
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
    run("ip", "netns", "add", name)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}n")
    run("ip", "link", "set", f"{veth}n", "netns", name)
    run("ip", "addr", "add", f"{host_address}/24", "dev", veth)
    run("ip", "link", "set", veth, "up")
    run("ip", "netns", "exec", name, "sh", "-c",
        f"ip addr add {address}/24 dev {veth}n; ip link set {veth}n up; ip link set lo up")
    # No default route: a host of the test bed reaches this machine and nothing beyond it (no stray pulls).
    return NamespaceHost(name, address, host_address, root)


@pytest.fixture(scope="session")
def remote_host(engine):
    """A second host with its own engine, on a network only this machine can reach."""
    host = make_namespace_host(1)
    host.start_engine()
    host.load_image(engine)
    yield host
    host.remove()


@pytest.fixture
def local_agent(engine, tmp_path):
    """`python agent.py` on 127.0.0.1 serving the machine's engine (an agent environment without a second host)."""
    port = free_port()
    log = open(tmp_path / "agent.log", "ab")
    process = subprocess.Popen([sys.executable, os.path.join(HERE, "agent.py"), "--host", "127.0.0.1", "--port",
                                str(port), "--docker-host", "unix:///var/run/docker.sock", "--data",
                                str(tmp_path / "agent-data"), "--log-level", "DEBUG"], stdout=log, stderr=log)
    try:
        def listening() -> bool:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
            assert process.poll() is None, (tmp_path / "agent.log").read_text()
            return False
        wait_until(listening, message="the agent to listen")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def one_node_swarm(engine: docker.DockerClient, index: int):
    """A one-node Swarm on namespace host `index` (never on the shared engine, whose other users a swarm would
    disturb), with busybox:local; left and removed afterwards, also after an earlier, killed run."""
    host = make_namespace_host(index)
    try:
        host.start_engine()
        host.load_image(engine)
        client = host.client()
        with contextlib.suppress(docker.errors.APIError):
            client.swarm.leave(force=True)
        client.swarm.init(advertise_addr=host.address, listen_addr=f"{host.address}:2377")
        yield host
    finally:
        with contextlib.suppress(Exception):
            host.client().swarm.leave(force=True)
        host.remove()


# -- many edge agents in one process: agent.py's own tunnel code, one session, N tunnels -------------------------

async def simulate_edge_fleet(keys_path: str, heartbeat: float = 20.0, concurrency: int = 64) -> None:
    """One edge agent per line of `keys_path` ("<edge key> <edge id>"): each keeps its tunnel up like
    `run_edge_agent` and relays every stream the server opens to the machine's engine with `serve_edge_stream`.
    Prints "held <count>" whenever the count of open tunnels changed (checked every 0.5 s). bench.py's fleet
    simulator and the failover tests run it in a process of its own (start_edge_fleet)."""
    import asyncio

    import aiohttp

    import agent
    with open(keys_path) as f:
        agents = [line.split() for line in f if line.strip()]
    held = 0
    handshakes = asyncio.Semaphore(concurrency)
    docker_url = "unix://" + DOCKER_SOCKET
    timeout = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30)

    async def one_agent(session, key_text: str, edge_id: str) -> None:
        nonlocal held
        key = agent.EdgeKey.decode(key_text)
        pin = aiohttp.Fingerprint(bytes.fromhex(key.fingerprint))
        attempt = 0
        while True:
            try:
                async with handshakes:
                    if key.endpoint_id == agent.GLOBAL_KEY_ENDPOINT:  # the fleet's key: onboard, as agent.py does
                        settings = agent.EdgeSettings(key, edge_id, name=edge_id, data_dir="")
                        key = await agent.onboard_with_global_key(session, settings, agent.EdgeState(None), pin)
                    headers = {agent.EDGE_ENDPOINT_HEADER: str(key.endpoint_id),
                               agent.EDGE_SECRET_HEADER: key.secret, agent.EDGE_ID_HEADER: edge_id,
                               agent.EDGE_VERSION_HEADER: agent.AGENT_VERSION}
                    ws = await session.ws_connect(key.server_url + agent.EDGE_TUNNEL_PATH, headers=headers, ssl=pin,
                                                  heartbeat=heartbeat,
                                                  receive_timeout=agent.tunnel_receive_timeout(heartbeat),
                                                  max_msg_size=agent.TUNNEL_MAX_MESSAGE, compress=0,
                                                  **agent.CLIENT_WS_CLOSE_TIMEOUT)
                held += 1
                attempt = 0
                try:
                    await agent.Tunnel(ws, lambda stream: agent.serve_edge_stream(stream, docker_url), large=True).run()
                finally:
                    held -= 1
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError, agent.EdgeOnboardingRefused) as exc:
                print(f"{edge_id}: {exc or type(exc).__name__}", file=sys.stderr, flush=True)
            await asyncio.sleep(agent.reconnect_delay(attempt, 0.5, 5))
            attempt += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        tasks = [asyncio.ensure_future(one_agent(session, key, edge_id)) for key, edge_id in agents]
        reported = -1
        while True:
            if held != reported:
                reported = held
                print(f"held {held}", flush=True)
            await asyncio.sleep(0.5)
            if all(t.done() for t in tasks):
                break


def start_edge_fleet(directory: str, agents: list[tuple[str, str]]) -> subprocess.Popen:
    """A process holding one edge tunnel per (edge key, edge id), printing "held <count>" lines on stdout."""
    keys_path = os.path.join(directory, "edge-fleet.keys")
    with open(keys_path, "w") as f:
        f.writelines(f"{key} {edge_id}\n" for key, edge_id in agents)
    return subprocess.Popen([sys.executable, "-c", "import asyncio, sys, conftest; "
                             "asyncio.run(conftest.simulate_edge_fleet(sys.argv[1]))", keys_path], cwd=HERE,
                            stdout=subprocess.PIPE, stderr=open(os.path.join(directory, "edge-fleet.log"), "ab"),
                            text=True)


# ---------------------------------------------------------------------------------------------------------------
# Two or more servers, one fleet: a real PostgreSQL 15 (Debian) for their store, HAProxy (Debian) in front of them
# (test_multi_server*.py). PostgreSQL and HAProxy run in directories of this test slot's own, so a killed run's
# leftovers are stopped and removed before the next run starts.
# ---------------------------------------------------------------------------------------------------------------

PG_BIN = "/usr/lib/postgresql/15/bin"
MULTI_SERVER_WORK = f"/tmp/portainer-py-multi-server-{SLOT}"


def as_postgres(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["su", "postgres", "-c", " ".join(argv)], capture_output=True, text=True, check=check)


class Postgres:
    def __init__(self, directory: str, port: int):
        self.directory, self.port = directory, port
        self.databases = 0

    def psql(self, database: str, sql: str) -> str:
        result = subprocess.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                 "-d", database, "-Atc", sql], capture_output=True, text=True, check=True)
        return result.stdout.strip()

    def new_database(self) -> str:
        self.databases += 1
        name = f"fleet{self.databases}"
        self.psql("postgres", f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"


def stop_leftover_postgres(directory: str) -> None:
    if os.path.exists(os.path.join(directory, "data", "postmaster.pid")):
        as_postgres(f"{PG_BIN}/pg_ctl", "-D", f"{directory}/data", "stop", "-m", "immediate", check=False)


def stop_leftover_haproxy(pidfile: str) -> None:
    try:
        with open(pidfile) as f:
            pid = int(f.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"haproxy" in f.read():
                os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass


@pytest.fixture(scope="module")
def postgres():
    directory = os.path.join(MULTI_SERVER_WORK, "pg")
    stop_leftover_postgres(directory)
    shutil.rmtree(MULTI_SERVER_WORK, ignore_errors=True)
    os.makedirs(directory)
    shutil.chown(directory, "postgres")
    os.chmod(MULTI_SERVER_WORK, 0o755)
    port = free_port()
    as_postgres(f"{PG_BIN}/initdb", "-D", f"{directory}/data", "-A", "trust", "-U", "postgres")
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", f"{directory}/data", "-o",
                f"'-p {port} -k {directory} -c listen_addresses=127.0.0.1'", "-l", f"{directory}/log",
                "start", "-w")
    yield Postgres(directory, port)
    as_postgres(f"{PG_BIN}/pg_ctl", "-D", f"{directory}/data", "stop", "-m", "fast", check=False)
    shutil.rmtree(MULTI_SERVER_WORK, ignore_errors=True)


class Fleet:
    """Two servers on one database, and HAProxy in front of them."""

    def __init__(self, database: str, servers: list, balancer_port: int, balancer: subprocess.Popen):
        self.database, self.servers, self.balancer = database, servers, balancer
        self.url = f"http://127.0.0.1:{balancer_port}"

    def through_balancer(self, method: str, path: str, token: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"},
                                timeout=30, **kwargs)


def start_balancer(directory: str, servers: list, tls_port: int | None = None) -> tuple[int, subprocess.Popen]:
    """HAProxy: HTTP on the port it answers, and with tls_port the servers' HTTPS passed through as TCP (edge
    agents pin the servers' certificate)."""
    port = free_port()
    config = os.path.join(directory, "haproxy.cfg")
    pidfile = os.path.join(directory, "haproxy.pid")
    stop_leftover_haproxy(pidfile)
    lines = ["global", f"  pidfile {pidfile}", "defaults", "  mode http", "  timeout connect 2s",
             "  timeout client 60s", "  timeout server 60s", "  option redispatch", "  retries 2",
             "frontend portainer", f"  bind 127.0.0.1:{port}", "  default_backend servers",
             "backend servers", "  balance roundrobin", "  option httpchk GET /api/system/status",
             "  http-response set-header X-Served-By %[srv_name]"]
    lines += [f"  server s{i} 127.0.0.1:{srv.port} check inter 500 fall 2 rise 1" for i, srv in enumerate(servers)]
    if tls_port:
        lines += ["frontend portainer_tls", "  mode tcp", f"  bind 127.0.0.1:{tls_port}", "  default_backend tls",
                  "backend tls", "  mode tcp", "  balance roundrobin"]
        lines += [f"  server s{i} 127.0.0.1:{srv.https_port} check inter 500 fall 2 rise 1"
                  for i, srv in enumerate(servers)]
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    process = subprocess.Popen(["haproxy", "-f", config, "-db"], stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(directory, "haproxy.log"), "ab"))
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/api/system/status", timeout=2).ok, timeout=15,
               message="HAProxy to answer")
    return port, process


@pytest.fixture
def fleet(engine, postgres, tmp_path):
    database = postgres.new_database()
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    args = ("--database", database, "--secrets-key-file", str(key_file))
    servers = [start_server(str(tmp_path / "server-a"), *args)]  # the first fills the empty database
    servers.append(start_server(str(tmp_path / "server-b"), *args))
    port, balancer = start_balancer(str(tmp_path), servers)
    yield Fleet(database, servers, port, balancer)
    balancer.kill()
    balancer.wait()
    for srv in servers:
        srv.stop()
