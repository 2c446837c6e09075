"""Edge agents: a host on a network nobody can dial into is managed through the tunnel its agent opens.

The edge site is a network namespace with its own Docker engine that drops every new inbound connection; its
agent dials the server's HTTPS port and the server reaches the engine back through that one WebSocket.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import requests

import agent
import portainer
import conftest
from conftest import ADMIN_PASSWORD, BUSYBOX, HERE, TEST_LABEL, make_namespace_host, start_server, wait_until
from test_portainer import run_in_pty

FAST_AGENT = {"EDGE_HEARTBEAT": "1", "EDGE_BACKOFF_INITIAL": "0.2", "EDGE_BACKOFF_MAX": "1.5", "LOG_LEVEL": "DEBUG"}


@pytest.fixture(scope="module")
def edge_site(engine):
    """A remote site behind NAT: its own engine, reaches this machine, refuses every inbound connection."""
    host = make_namespace_host(2)  # host numbers: see conftest.NAMESPACE_HOSTS
    host.start_engine()
    host.load_image(engine)
    subprocess.run(["ip", "netns", "exec", host.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                    "NEW", "-j", "DROP"], check=True)
    yield host
    host.remove()


@pytest.fixture(scope="module")
def edge_server(edge_site, workdir):
    """A server listening where the edge site can reach it, with short heartbeats so dead links show fast."""
    holder = {"server": start_server(os.path.join(workdir, "edge-data"), "--edge-heartbeat", "1",
                                     bind_host=edge_site.host_address)}
    yield holder
    holder["server"].stop()


class EdgeAgent:
    """One `python agent.py` in edge mode, started on a host (a namespace) or on this machine."""

    def __init__(self, key: str, edge_id: str, docker_host: str, log_path: str, site=None):
        env = {**os.environ, **FAST_AGENT, "EDGE": "1", "EDGE_KEY": key, "EDGE_ID": edge_id,
               "DOCKER_HOST": docker_host}
        self.log_path = log_path
        argv = [sys.executable, os.path.join(HERE, "agent.py")]
        log = open(log_path, "wb")
        self.process = (site.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT) if site else
                        subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def create_edge_environment(server, name: str, url: str | None = None) -> dict:
    r = server.api("POST", "/api/endpoints", json={"Name": name, "EndpointCreationType": 4,
                                                    "URL": url or server.https_url})
    assert r.status_code == 200, r.text
    return r.json()


def connected(server, endpoint_id: int) -> bool:
    view = server.api("GET", f"/api/endpoints/{endpoint_id}").json()
    return view["EdgeTunnelConnected"] and view["Status"] == 1


@pytest.fixture(scope="module")
def edge_env(edge_server, edge_site, workdir):
    """An edge environment whose agent runs on the edge site, connected."""
    server = edge_server["server"]
    endpoint = create_edge_environment(server, "edge-site")
    site_agent = EdgeAgent(endpoint["EdgeKey"], "site-machine-id", f"unix://{edge_site.socket}",
                           os.path.join(workdir, "edge-agent.log"), site=edge_site)
    wait_until(lambda: connected(server, endpoint["Id"]), timeout=30, message="the edge agent to connect")
    yield {"endpoint": endpoint, "agent": site_agent}
    site_agent.stop()


def test_edge_key_names_the_server_environment_certificate_and_a_secret(edge_server, edge_env):
    server, endpoint = edge_server["server"], edge_env["endpoint"]
    key = agent.EdgeKey.decode(endpoint["EdgeKey"])
    assert key.server_url == server.https_url and key.endpoint_id == endpoint["Id"]
    assert key.fingerprint == portainer.certificate_fingerprint(os.path.join(server.data, "certs", "cert.pem"))
    assert len(key.secret) >= 40
    assert f"EDGE_KEY={endpoint['EdgeKey']}" in endpoint["EdgeAgentCommand"]
    again = server.api("GET", f"/api/endpoints/{endpoint['Id']}/edge/key").json()
    assert again["EdgeKey"] == endpoint["EdgeKey"]
    # the key is not part of what users who can see the environment read
    assert "EdgeKey" not in server.api("GET", f"/api/endpoints/{endpoint['Id']}").json()
    assert endpoint["EdgeKey"] not in open(os.path.join(server.data, "portainer.json")).read()


def test_edge_site_refuses_inbound_connections_yet_is_managed_with_the_docker_cli(edge_server, edge_env,
                                                                                  edge_site):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    listener = edge_site.popen([sys.executable, "-m", "http.server", "--bind", edge_site.address, "18099"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with pytest.raises(OSError):
            socket.create_connection((edge_site.address, 18099), timeout=1.5)
    finally:
        listener.kill()
    assert "CONTAINER ID" in server.docker("ps", endpoint_id=endpoint_id).stdout
    out = server.docker("run", "--rm", "--label", TEST_LABEL, BUSYBOX, "echo", "hello from the edge",
                        endpoint_id=endpoint_id).stdout
    assert out.strip() == "hello from the edge"
    info = server.docker("info", "--format", "{{.Name}} {{.DockerRootDir}}", endpoint_id=endpoint_id).stdout
    assert edge_site.root in info


def test_run_it_and_exec_it_work_through_the_tunnel(edge_server, edge_env, edge_site):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    env = server.docker_cli_env(endpoint_id)
    seen = run_in_pty(["docker", "run", "-it", "--rm", "--label", TEST_LABEL, BUSYBOX, "sh"], env,
                      [b"echo $((6*7))\r", b"exit\r"], b"42")
    assert b"42" in seen
    server.docker("run", "-d", "--name", "edge-sleeper", "--label", TEST_LABEL, BUSYBOX, "sleep", "300",
                  endpoint_id=endpoint_id)
    try:
        seen = run_in_pty(["docker", "exec", "-it", "edge-sleeper", "sh"], env, [b"echo exec-$((2+3))\r", b"exit\r"],
                          b"exec-5")
        assert b"exec-5" in seen
    finally:
        server.docker("rm", "-f", "edge-sleeper", endpoint_id=endpoint_id)


def test_a_stalled_export_does_not_stall_logs_or_ps_on_the_same_tunnel(edge_server, edge_env, tmp_path):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    server.docker("run", "--name", "edge-big", "--label", TEST_LABEL, BUSYBOX, "sh", "-c",
                  "dd if=/dev/urandom of=/big bs=1M count=12 2>/dev/null", endpoint_id=endpoint_id)
    server.docker("run", "-d", "--name", "edge-ticker", "--label", TEST_LABEL, BUSYBOX, "sh", "-c",
                  "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done", endpoint_id=endpoint_id)
    env = server.docker_cli_env(endpoint_id)
    # nobody reads the export's pipe yet: its stream stops at the flow-control window and waits
    export = subprocess.Popen(["docker", "export", "edge-big"], env=env, stdout=subprocess.PIPE)
    logs = subprocess.Popen(["docker", "logs", "-f", "edge-ticker"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        first = [logs.stdout.readline() for _ in range(3)]
        assert all(line.startswith("tick") for line in first)
        started = time.monotonic()
        assert "edge-ticker" in server.docker("ps", endpoint_id=endpoint_id).stdout
        assert time.monotonic() - started < 5
        later = [logs.stdout.readline() for _ in range(40)]
        assert later[-1].startswith("tick") and int(later[-1][4:]) > int(first[-1][4:])
        data, _ = export.communicate(timeout=120)
        assert export.returncode == 0
        members = {m.name: m.size for m in tarfile.open(fileobj=io.BytesIO(data))}
        assert members["big"] == 12 * 1024 * 1024
    finally:
        export.kill()
        logs.kill()
        server.docker("rm", "-f", "edge-big", "edge-ticker", endpoint_id=endpoint_id)


def test_large_upload_and_a_build_go_through_the_tunnel(edge_server, edge_env, tmp_path):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    payload = os.urandom(8 * 1024 * 1024)
    (tmp_path / "upload.bin").write_bytes(payload)
    server.docker("run", "-d", "--name", "edge-receiver", "--label", TEST_LABEL, BUSYBOX, "sleep", "300",
                  endpoint_id=endpoint_id)
    try:
        server.docker("cp", str(tmp_path / "upload.bin"), "edge-receiver:/upload.bin", endpoint_id=endpoint_id)
        digest = server.docker("exec", "edge-receiver", "sha256sum", "/upload.bin", endpoint_id=endpoint_id).stdout
        assert digest.split()[0] == hashlib.sha256(payload).hexdigest()
    finally:
        server.docker("rm", "-f", "edge-receiver", endpoint_id=endpoint_id)
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {BUSYBOX}\nCOPY hello.txt /hello.txt\nCMD cat /hello.txt\n")
    (context / "hello.txt").write_text("built at the edge\n")
    server.docker("build", "-q", "-t", "portainer-py-edge-built:1", str(context), endpoint_id=endpoint_id)
    out = server.docker("run", "--rm", "--label", TEST_LABEL, "portainer-py-edge-built:1", endpoint_id=endpoint_id)
    assert out.stdout.strip() == "built at the edge"
    server.docker("rmi", "portainer-py-edge-built:1", endpoint_id=endpoint_id)


def test_many_concurrent_calls_share_one_tunnel(edge_server, edge_env):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    base = f"{server.url}/api/endpoints/{endpoint_id}/docker"
    results = []

    def call():
        r = requests.get(f"{base}/v1.41/version", headers={"X-API-Key": server.admin_api_key}, timeout=30)
        results.append(r.status_code)

    def engine_connections() -> int:
        fds = os.listdir(f"/proc/{edge_env['agent'].process.pid}/fd")
        return sum(os.readlink(f"/proc/{edge_env['agent'].process.pid}/fd/{fd}").startswith("socket:") for fd in fds)

    before = engine_connections()
    threads = [threading.Thread(target=call) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 40
    # the server keeps a few connections for reuse and closes the rest; the agent lets those go too
    wait_until(lambda: engine_connections() <= before + 16, timeout=10, message="the agent to release connections")


def test_agent_refuses_a_server_presenting_another_certificate(edge_server, edge_env, workdir, tmp_path):
    impostor = start_server(str(tmp_path / "impostor"), admin_password=None)
    try:
        key = agent.EdgeKey.decode(edge_env["endpoint"]["EdgeKey"])
        key.server_url = impostor.https_url  # the right key, sent to a server holding another certificate
        fooled = EdgeAgent(key.encode(), "site-machine-id", "unix:///nonexistent.sock", str(tmp_path / "agent.log"))
        try:
            wait_until(lambda: "does not match the edge key" in fooled.log(), timeout=15,
                       message="the agent to refuse the certificate")
        finally:
            fooled.stop()
        assert "edge" not in impostor.log().lower()  # the agent hung up before sending any request
    finally:
        impostor.stop()


def test_server_refuses_a_wrong_secret_and_a_second_edge_id_until_the_admin_re_associates(edge_server, workdir,
                                                                                          tmp_path):
    server = edge_server["server"]
    endpoint = create_edge_environment(server, "edge-association")
    endpoint_id = endpoint["Id"]
    key = agent.EdgeKey.decode(endpoint["EdgeKey"])
    forged = agent.EdgeKey(key.server_url, key.endpoint_id, key.fingerprint, "not-the-secret").encode()
    guesser = EdgeAgent(forged, "guesser", "unix:///var/run/docker.sock", str(tmp_path / "guesser.log"))
    first = EdgeAgent(endpoint["EdgeKey"], "machine-one", "unix:///var/run/docker.sock", str(tmp_path / "one.log"))
    second = None
    try:
        wait_until(lambda: "refused this edge agent (401" in guesser.log(), timeout=15, message="401 for a forgery")
        wait_until(lambda: connected(server, endpoint_id), timeout=15, message="the first agent to connect")
        assert server.api("GET", f"/api/endpoints/{endpoint_id}").json()["EdgeID"] == "machine-one"
        second = EdgeAgent(endpoint["EdgeKey"], "machine-two", "unix:///var/run/docker.sock",
                           str(tmp_path / "two.log"))
        wait_until(lambda: "refused this edge agent (403" in second.log(), timeout=15, message="403 for machine-two")
        refused = server.api("GET", f"/api/endpoints/{endpoint_id}").json()["EdgeRefused"]
        assert refused["EdgeID"] == "machine-two"
        assert server.docker("ps", "-q", endpoint_id=endpoint_id).returncode == 0  # the first one still serves
        r = server.api("PUT", f"/api/endpoints/{endpoint_id}/association", json={"EdgeID": "machine-two"})
        assert r.status_code == 200 and r.json()["EdgeID"] == "machine-two" and r.json()["EdgeRefused"] is None
        wait_until(lambda: "refused this edge agent (403" in first.log(), timeout=15, message="machine-one refused")
        wait_until(lambda: connected(server, endpoint_id), timeout=15, message="machine-two to connect")
        assert server.docker("ps", "-q", endpoint_id=endpoint_id).returncode == 0
        # removing the environment lets its agent go: it is refused from then on
        assert server.api("DELETE", f"/api/endpoints/{endpoint_id}").status_code == 204
        wait_until(lambda: "refused this edge agent (401" in second.log(), timeout=15, message="machine-two let go")
    finally:
        for process in (guesser, first, second):
            if process:
                process.stop()
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


def test_tunnel_route_is_https_only_and_needs_the_secret(edge_server):
    server = edge_server["server"]
    assert requests.get(server.url + agent.EDGE_TUNNEL_PATH, timeout=5).status_code == 403
    r = requests.get(server.https_url + agent.EDGE_TUNNEL_PATH, verify=False, timeout=5,
                     headers={agent.EDGE_ENDPOINT_HEADER: "1", agent.EDGE_SECRET_HEADER: "x"})
    assert r.status_code == 401


def test_edge_groups_hold_listed_environments_or_those_carrying_their_tags(edge_server, edge_env):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    static = server.api("POST", "/api/edge_groups", json={"Name": "static-sites", "Endpoints": [endpoint_id]})
    assert static.status_code == 200 and static.json()["TrustedEndpoints"] == [endpoint_id]
    assert server.api("POST", "/api/edge_groups", json={"Name": "not-edge", "Endpoints": [1]}).status_code == 400
    dynamic = server.api("POST", "/api/edge_groups", json={"Name": "tagged", "Dynamic": True, "TagIds": [7]}).json()
    assert dynamic["TrustedEndpoints"] == []
    server.api("PUT", f"/api/endpoints/{endpoint_id}", json={"TagIds": [7]})
    try:
        assert server.api("GET", f"/api/edge_groups/{dynamic['Id']}").json()["TrustedEndpoints"] == [endpoint_id]
    finally:
        server.api("PUT", f"/api/endpoints/{endpoint_id}", json={"TagIds": []})
    assert server.api("DELETE", f"/api/edge_groups/{dynamic['Id']}").status_code == 204
    assert server.api("DELETE", f"/api/edge_groups/{static.json()['Id']}").status_code == 204


def wait_for_job(server, job_id: int, endpoint_id: int, timeout: float = 60) -> dict:
    def done():
        tasks = server.api("GET", f"/api/edge_jobs/{job_id}/tasks").json()
        return tasks and tasks[0]["LogsStatus"] == 3
    wait_until(done, timeout=timeout, interval=0.5, message=f"edge job {job_id} to report")
    return server.api("GET", f"/api/edge_jobs/{job_id}/tasks/{endpoint_id}/logs").json()


def test_edge_job_runs_a_script_on_a_group_and_its_output_and_exit_code_come_back(edge_server, edge_env):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    group = server.api("POST", "/api/edge_groups", json={"Name": "job-sites", "Endpoints": [endpoint_id]}).json()
    r = server.api("POST", "/api/edge_jobs/create/string", json={
        "Name": "hello job", "EdgeGroups": [group["Id"]], "Recurring": False,
        "FileContent": "echo job-output-$((40+2)); echo to-stderr >&2; exit 3"})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["Endpoints"][str(endpoint_id)]["LogsStatus"] in (2, 3)
    logs = wait_for_job(server, job["Id"], endpoint_id)
    assert "job-output-42" in logs["FileContent"] and "to-stderr" in logs["FileContent"]
    assert logs["ExitCode"] == 3
    on_host = server.api("POST", "/api/edge_jobs", json={"Name": "on the host", "Endpoints": [endpoint_id],
                                                        "Mode": "host", "FileContent": "cat /etc/os-release"}).json()
    with open("/etc/os-release") as f:
        assert wait_for_job(server, on_host["Id"], endpoint_id)["FileContent"] == f.read()
    bad_cron = server.api("POST", "/api/edge_jobs", json={"Name": "bad", "Endpoints": [endpoint_id],
                                                         "FileContent": "true", "Recurring": True,
                                                         "CronExpression": "every minute"})
    assert bad_cron.status_code == 400
    in_use = server.api("DELETE", f"/api/edge_groups/{group['Id']}")
    assert in_use.status_code == 409 and "hello job" in in_use.json()["message"]
    for finished in (job, on_host):
        assert server.api("DELETE", f"/api/edge_jobs/{finished['Id']}").status_code == 204
    assert server.api("DELETE", f"/api/edge_groups/{group['Id']}").status_code == 204


def test_cut_link_shows_down_queues_jobs_and_recovers_without_writing_the_store(edge_server, edge_env, edge_site):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    veth = edge_site.name.replace("node", "veth")
    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
    try:
        wait_until(lambda: not connected(server, endpoint_id), timeout=10, message="the server to see the cut")
        assert server.docker("ps", endpoint_id=endpoint_id, check=False, timeout=30).returncode != 0
        job = server.api("POST", "/api/edge_jobs", json={"Name": "while away", "Endpoints": [endpoint_id],
                                                         "FileContent": "echo ran-after-reconnect"}).json()
        assert job["Endpoints"][str(endpoint_id)]["LogsStatus"] == 2
        time.sleep(2)
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    wait_until(lambda: connected(server, endpoint_id), timeout=20, message="the agent to reconnect")
    assert "ran-after-reconnect" in wait_for_job(server, job["Id"], endpoint_id)["FileContent"]
    assert "CONTAINER ID" in server.docker("ps", endpoint_id=endpoint_id).stdout
    # an idle tunnel, its heartbeats and a reconnection cost no write: not the store, not the activity log
    written = lambda: {name: os.stat(os.path.join(server.data, name)).st_mtime_ns  # noqa: E731
                       for name in os.listdir(server.data) if os.path.isfile(os.path.join(server.data, name))}
    time.sleep(1.5)
    before = written()
    subprocess.run(["ip", "link", "set", veth, "down"], check=True)
    time.sleep(3)
    subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    wait_until(lambda: connected(server, endpoint_id), timeout=20, message="the agent to reconnect")
    time.sleep(2)
    assert written() == before
    server.api("DELETE", f"/api/edge_jobs/{job['Id']}")


def test_agent_comes_back_after_a_server_restart(edge_server, edge_env, edge_site):
    server, endpoint_id = edge_server["server"], edge_env["endpoint"]["Id"]
    assert server.stop(signal.SIGTERM) == 0
    restarted = start_server(server.data, "--edge-heartbeat", "1", bind_host=edge_site.host_address,
                             ports=(server.port, server.https_port))
    edge_server["server"] = restarted
    wait_until(lambda: connected(restarted, endpoint_id), timeout=20, message="the agent to come back")
    out = restarted.docker("run", "--rm", "--label", TEST_LABEL, BUSYBOX, "echo", "back again",
                           endpoint_id=endpoint_id).stdout
    assert out.strip() == "back again"


@pytest.mark.browser
def test_admin_adds_an_edge_environment_groups_it_and_runs_a_job_from_the_ui(edge_server, edge_env):
    from playwright.sync_api import sync_playwright

    server = edge_server["server"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=conftest.CHROMIUM_ARGS)
        page = browser.new_page()
        problems = []
        # failed requests are reported with their URL below; the home page's /api/tags is another feature's
        page.on("console", lambda message: problems.append(message.text)
                if message.type == "error" and not message.text.startswith("Failed to load resource") else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
                if response.status >= 400 and not response.url.endswith("/api/tags") else None)
        page.goto(server.url + "/#/login")
        page.fill("#u", "admin")
        page.fill("#p", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("text=edge-site")
        assert "tunnel connected" in page.text_content("#env-list")
        page.click("main >> a:has-text('Add environment')")
        page.click("[role=tab]:has-text('Edge agent')")
        page.wait_for_selector("text=as the edge node reaches it")
        page.fill("#n", "edge-from-the-ui")
        page.click("button:has-text('Connect')")
        command = page.wait_for_selector("#edge-command").text_content()
        assert command.startswith("EDGE=1 EDGE_KEY=") and "python3 agent.py" in command
        created = next(ep for ep in server.api("GET", "/api/endpoints").json() if ep["Name"] == "edge-from-the-ui")
        assert agent.EdgeKey.decode(command.split("EDGE_KEY=")[1].split()[0]).endpoint_id == created["Id"]
        assert created["URL"] == server.https_url  # no address given: the one the browser used, HTTPS port
        server.api("DELETE", f"/api/endpoints/{created['Id']}")

        page.click("nav >> text=Edge groups")
        page.wait_for_selector("text=Add edge group")
        page.fill("#n", "ui-group")
        page.check(f"input[name=ep][value='{edge_env['endpoint']['Id']}']")
        page.click("text=Create edge group")
        page.wait_for_selector("td:has-text('ui-group')")
        assert "edge-site" in page.text_content("table")

        page.click("nav >> text=Edge jobs")
        page.wait_for_selector("text=Add edge job")
        page.fill("#n", "ui job")
        page.fill("#s", "echo from-the-ui-job")
        page.check("input[name=g]")
        page.click("text=Create edge job")
        page.wait_for_selector("text=Edge job ui job")
        page.wait_for_selector("td:has-text('done')", timeout=60000)  # the page follows the run by itself
        page.click("[data-logs]")
        page.wait_for_selector("#out:has-text('from-the-ui-job')")
        browser.close()
    assert not problems
    for job in server.api("GET", "/api/edge_jobs").json():
        server.api("DELETE", f"/api/edge_jobs/{job['Id']}")
    for group in server.api("GET", "/api/edge_groups").json():
        server.api("DELETE", f"/api/edge_groups/{group['Id']}")


def test_tunnel_flow_control_bounds_buffers_and_a_stalled_stream_leaves_others_flowing():
    """The protocol alone, both ends in this process: a reader that stops stalls only its own stream."""
    import asyncio

    import aiohttp
    from aiohttp import web

    async def scenario():
        served: asyncio.Queue = asyncio.Queue()

        async def serve_stream(stream):  # the far side: remembers its streams, answers on them
            await stream.accept()
            await served.put(stream)

        async def handler(request):
            ws = web.WebSocketResponse(max_msg_size=agent.TUNNEL_MAX_MESSAGE)
            await ws.prepare(request)
            await agent.Tunnel(ws, serve_stream).run()
            return ws

        app = web.Application()
        app.router.add_get("/tunnel", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(f"http://127.0.0.1:{port}/tunnel", max_msg_size=agent.TUNNEL_MAX_MESSAGE)
            opener = agent.Tunnel(ws)
            reading = asyncio.ensure_future(opener.run())
            stalled, lively = await opener.open_stream(), await opener.open_stream()
            far_stalled, far_lively = await served.get(), await served.get()
            big = os.urandom(4 * 1024 * 1024)
            far_stalled.write(big)
            writer = asyncio.ensure_future(far_stalled.drain())
            await asyncio.sleep(0.5)
            assert not writer.done()  # nobody reads the stalled stream: its sender waits for credit
            assert len(stalled._inbound) <= agent.TUNNEL_STREAM_WINDOW
            assert len(far_stalled._outbound) >= len(big) - agent.TUNNEL_STREAM_WINDOW
            for i in range(50):  # the other stream on the same tunnel still flows both ways
                lively.write(b"ping %d\n" % i)
                await lively.drain()
                assert await far_lively.readline() == b"ping %d\n" % i
                far_lively.write(b"pong %d\n" % i)
                await far_lively.drain()
                assert await lively.readline() == b"pong %d\n" % i
            received = bytearray()
            while len(received) < len(big):
                received += await stalled.read(agent.STREAM_CHUNK)
            await writer
            assert bytes(received) == big
            far_stalled.write_eof()
            await far_stalled.drain()
            assert await stalled.read() == b"" and stalled.at_eof()
            await ws.close()
            await reading
        await runner.cleanup()

    asyncio.run(scenario())
