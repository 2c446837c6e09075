#!/usr/bin/env python3
"""bench.py: measure portainer.py's speed, memory and scale against the engine itself.

    python bench.py                 # every measure, side by side in one run
    python bench.py proxy stream    # only these; other entries of bench-results.json are kept

Starts what it needs (a server, and where a measure needs them an agent or edge agent) on this machine,
prints a table and writes bench-results.json. Goals are checked here, never in timed tests.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "bench-results.json")
DOCKER_SOCKET = "/var/run/docker.sock"
BENCH_LABEL = "portainer.py.bench"
PASSWORD = "benchmark admin password"
BUSYBOX = "busybox:local"


# ---------------------------------------------------------------------------------------------------------------
# Processes under measure
# ---------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BenchServer:
    """A portainer.py process with an admin and an API key, managing the machine's engine as environment 1."""

    def __init__(self, workdir: str, *extra: str):
        self.data = os.path.join(workdir, "server-data")
        os.makedirs(self.data, exist_ok=True)
        password_file = os.path.join(workdir, "admin-pw")
        with open(password_file, "w") as f:
            f.write(PASSWORD)
        self.port, self.https_port = free_port(), free_port()
        self.log = open(os.path.join(workdir, "server.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "portainer.py"), "--bind", f"127.0.0.1:{self.port}",
             "--bind-https", f"127.0.0.1:{self.https_port}", "--data", self.data, "-H", "unix://" + DOCKER_SOCKET,
             "--admin-password-file", password_file, "--log-level", "WARNING", *extra],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(self.url + "/api/status") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            async with session.post(self.url + "/api/auth", json={"Username": "admin", "Password": PASSWORD}) as r:
                jwt = (await r.json())["jwt"]
            async with session.post(self.url + "/api/users/1/tokens", headers={"Authorization": f"Bearer {jwt}"},
                                    json={"password": PASSWORD, "description": "bench"}) as r:
                self.api_key = (await r.json())["rawAPIKey"]

    @property
    def headers(self) -> dict:
        return {"X-API-Key": self.api_key}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


class BenchAgent:
    """`python agent.py` on this machine, serving the machine's engine on 127.0.0.1."""

    def __init__(self, workdir: str):
        self.port = free_port()
        self.log = open(os.path.join(workdir, "agent.log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "agent.py"), "--host", "127.0.0.1", "--port", str(self.port),
             "--docker-host", "unix://" + DOCKER_SOCKET, "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"https://127.0.0.1:{self.port}/ping", ssl=False) as r:
                        if r.status == 204:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("agent.py did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def docker_cli(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def remove_bench_objects() -> None:
    ids = docker_cli("ps", "-aq", "--filter", f"label={BENCH_LABEL}").split()
    if ids:
        docker_cli("rm", "-f", *ids, check=False)


# ---------------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def latencies(session: aiohttp.ClientSession, url: str, headers: dict, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url, headers=headers) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append((time.perf_counter() - started) * 1000)
    return out


async def throughput(make_session, url: str, headers: dict, concurrency: int, seconds: float) -> tuple[float, int]:
    done, errors = 0, 0
    deadline = time.perf_counter() + seconds

    async def worker(session):
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                async with session.get(url, headers=headers) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    async with make_session() as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return done / (time.perf_counter() - started), errors


def direct_session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(DOCKER_SOCKET, limit=limit))


def tcp_session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))


PROXY_RATIO_GOALS = {"local": 1.2, "agent": 1.5, "edge": 1.6}


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.results: dict[str, dict] = {}
        self.workdir = tempfile.mkdtemp(prefix="portainer-py-bench-")
        self.server: BenchServer | None = None
        self.agent: BenchAgent | None = None
        self.environment_ids: dict[str, int] = {}

    def record(self, name: str, value: float, unit: str, goal: str, met: bool | None, note: str = "") -> None:
        self.results[name] = {"value": round(value, 3), "unit": unit, "goal": goal, "met": met}
        if note:
            self.results[name]["note"] = note
        status = "n/a" if met is None else ("met" if met else "MISSED")
        print(f"  {name:<44} {value:>12.3f} {unit:<8} goal {goal:<22} {status}", flush=True)

    async def start_server(self) -> BenchServer:
        if self.server is None:
            self.server = BenchServer(self.workdir)
            await self.server.ready()
        return self.server

    async def environments(self) -> dict[str, int]:
        """Environment ids by kind, each reaching the machine's engine: local socket, agent, edge agent."""
        if self.environment_ids:
            return self.environment_ids
        server = await self.start_server()
        self.environment_ids["local"] = 1
        self.agent = BenchAgent(self.workdir)
        await self.agent.ready()
        async with aiohttp.ClientSession() as session:
            async with session.post(server.url + "/api/endpoints", headers=server.headers,
                                    json={"Name": "bench-agent", "EndpointCreationType": 2,
                                          "URL": f"127.0.0.1:{self.agent.port}"}) as r:
                body = await r.json()
                assert r.status == 200, body
                self.environment_ids["agent"] = body["Id"]
        return self.environment_ids

    # -- proxy latency ------------------------------------------------------------------------------------------
    async def measure_proxy(self) -> None:
        print("proxy latency: GET /containers/json with 100 containers", flush=True)
        remove_bench_objects()
        for i in range(100):
            docker_cli("create", "--label", BENCH_LABEL, BUSYBOX, "true")
        server = await self.start_server()
        count = self.args.requests
        targets = {"direct": ("http://docker/v1.41/containers/json?all=1", {}, direct_session)}
        for kind, endpoint_id in (await self.environments()).items():
            targets[kind] = (f"{server.url}/api/endpoints/{endpoint_id}/docker/v1.41/containers/json?all=1",
                             server.headers, tcp_session)
        p50 = {}
        for name, (url, headers, make_session) in targets.items():
            async with make_session() as session:
                await latencies(session, url, headers, 20)  # warm up connections and caches
                values = await latencies(session, url, headers, count)
            p50[name] = statistics.median(values)
            self.record(f"proxy.{name}.p50", p50[name], "ms", "", None)
            self.record(f"proxy.{name}.p99", percentile(values, 0.99), "ms", "", None)
            rate, errors = await throughput(make_session, url, headers, 32, self.args.seconds)
            self.record(f"proxy.{name}.rps_c32", rate, "req/s", "", None if errors == 0 else False)
        for kind, goal in PROXY_RATIO_GOALS.items():
            if kind in p50:
                ratio = p50[kind] / p50["direct"]
                self.record(f"proxy.{kind}.p50_ratio", ratio, "x", f"<= {goal}", ratio <= goal)
        direct_rps = self.results["proxy.direct.rps_c32"]["value"]
        local_rps = self.results["proxy.local.rps_c32"]["value"]
        self.record("proxy.local.rps_c32_share", 100 * local_rps / direct_rps, "%", ">= 90", local_rps >= 0.9 * direct_rps)
        remove_bench_objects()

    # -- stream throughput --------------------------------------------------------------------------------------
    async def measure_stream(self) -> None:
        print("stream throughput: docker export of a 200 MB container", flush=True)
        remove_bench_objects()
        context = os.path.join(self.workdir, "big")
        os.makedirs(context, exist_ok=True)
        with open(os.path.join(context, "big.bin"), "wb") as f:
            for _ in range(200):
                f.write(os.urandom(1024 * 1024))
        with open(os.path.join(context, "Dockerfile"), "w") as f:
            f.write(f"FROM {BUSYBOX}\nCOPY big.bin /big.bin\n")
        docker_cli("build", "-q", "-t", "portainer-py-bench-big:1", context)
        container = docker_cli("create", "--label", BENCH_LABEL, "portainer-py-bench-big:1", "true").strip()
        server = await self.start_server()

        async def export(session, url, headers, sample_pid=None):
            peak = rss_mb(sample_pid) if sample_pid else 0
            size = 0
            started = time.perf_counter()
            async with session.get(url, headers=headers) as r:
                async for chunk in r.content.iter_chunked(256 * 1024):
                    size += len(chunk)
                    if sample_pid and size % (8 * 1024 * 1024) < 256 * 1024:
                        peak = max(peak, rss_mb(sample_pid))
            return size / (1024 * 1024) / (time.perf_counter() - started), peak

        async with direct_session() as session:
            direct, _ = await export(session, f"http://docker/v1.41/containers/{container}/export", {})
        self.record("stream.direct", direct, "MB/s", "", None)
        for kind, endpoint_id in (await self.environments()).items():
            before = rss_mb(server.process.pid)
            async with tcp_session() as session:
                rate, peak = await export(
                    session, f"{server.url}/api/endpoints/{endpoint_id}/docker/v1.41/containers/{container}/export",
                    server.headers, server.process.pid)
            self.record(f"stream.{kind}", rate, "MB/s", ">= 70 % of direct", rate >= 0.7 * direct)
            self.record(f"stream.{kind}.rss_growth", peak - before, "MB", "< 20", peak - before < 20)
        docker_cli("rm", "-f", container)
        docker_cli("rmi", "-f", "portainer-py-bench-big:1", check=False)

    # -- memory at rest -----------------------------------------------------------------------------------------
    async def measure_memory(self) -> None:
        print("memory at rest", flush=True)
        server = BenchServer(tempfile.mkdtemp(dir=self.workdir))
        await server.ready()
        await asyncio.sleep(3)
        self.record("memory.server_idle_rss", rss_mb(server.process.pid), "MB", "<= 60",
                    rss_mb(server.process.pid) <= 60)
        server.stop()
        agent = BenchAgent(tempfile.mkdtemp(dir=self.workdir))
        await agent.ready()
        await asyncio.sleep(2)
        self.record("memory.agent_idle_rss", rss_mb(agent.process.pid), "MB", "<= 40", rss_mb(agent.process.pid) <= 40)
        agent.stop()

    # -- API under load -----------------------------------------------------------------------------------------
    async def measure_api_load(self) -> None:
        clients, seconds = self.args.clients, self.args.load_seconds
        print(f"API under load: {clients} concurrent clients for {seconds} s", flush=True)
        server = await self.start_server()
        paths = ["/api/endpoints", "/api/endpoints/1/docker/v1.41/containers/json?all=1"]
        values: list[float] = []
        errors = 0
        deadline = time.perf_counter() + seconds

        async def client(session, index):
            nonlocal errors
            i = index
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    async with session.get(server.url + paths[i % 2], headers=server.headers) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                values.append((time.perf_counter() - started) * 1000)
                i += 1

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
            await asyncio.gather(*(client(session, i) for i in range(clients)))
        self.record("api_load.errors", errors, "errors", "0", errors == 0)
        self.record("api_load.p99", percentile(values, 0.99), "ms", "reported", None)
        self.record("api_load.rps", len(values) / seconds, "req/s", "reported", None)

    async def run(self, measures: list[str]) -> None:
        try:
            for name in measures:
                await getattr(self, f"measure_{name}")()
        finally:
            if self.agent:
                self.agent.stop()
            if self.server:
                self.server.stop()
            remove_bench_objects()
            shutil.rmtree(self.workdir, ignore_errors=True)


MEASURES = ["proxy", "stream", "memory", "api_load"]


def machine_description() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{os.cpu_count()} cores {model}, {memory:.0f} GiB, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("measures", nargs="*", help="which measures (default: all)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per latency measure")
    parser.add_argument("--seconds", type=float, default=5, help="length of each throughput run")
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients for api_load")
    parser.add_argument("--load-seconds", type=float, default=60, help="length of the api_load run")
    args = parser.parse_args(argv)
    measures = args.measures or MEASURES
    bench = Bench(args)
    print(f"machine: {machine_description()}")
    asyncio.run(bench.run(measures))
    previous = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            previous = json.load(f).get("measures", {})
    previous.update(bench.results)
    with open(RESULTS + ".tmp", "w") as f:
        json.dump({"machine": machine_description(), "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "measures": previous}, f, indent=2, sort_keys=True)
    os.replace(RESULTS + ".tmp", RESULTS)
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
