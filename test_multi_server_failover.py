"""Two servers behind HAProxy, one of them SIGKILLed: during a stack deploy, during `docker logs -f`, with 50 edge
agents connected and writes going on. Clients through HAProxy go on with the other server (a request in flight
may fail with a clear error and succeeds when retried), edge agents come back, the leader role moves, and no
acknowledged write is lost. Also: what runs once runs on the leader, and an OAuth sign-in started on one server
finishes on the other. PostgreSQL 15, HAProxy and the OpenID provider are the real programs (conftest, test_oidc).
"""

import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

import agent
from conftest import (HERE, SLOT, TEST_LABEL, Fleet, free_port, start_balancer, start_edge_fleet, start_server,
                      wait_until)
from test_oidc import (CLIENT_ID, CLIENT_SECRET, OpenIDProvider, client_for, follow_provider, install_provider,
                       rsa_jwk, stop_leftover_providers)


class EdgeFleet(Fleet):
    """Two servers with one certificate (edge agents pin it), HAProxy passing their HTTPS through on tls_port."""

    def __init__(self, database: str, servers: list, balancer_port: int, balancer, tls_port: int):
        super().__init__(database, servers, balancer_port, balancer)
        self.tls_port = tls_port

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        """Through HAProxy, as the administrator (the API key made on the first server works on both)."""
        return requests.request(method, self.url + path, headers={"X-API-Key": self.servers[0].admin_api_key},
                                timeout=kwargs.pop("timeout", 30), **kwargs)

    def next_server(self):
        """The server HAProxy's round robin sends the next request to (this test is its only client)."""
        served = self.call("GET", "/api/system/status").headers["X-Served-By"]
        return self.servers[1 if served == "s0" else 0]

    def kill(self, srv) -> float:
        srv.process.send_signal(signal.SIGKILL)
        srv.process.wait()
        return time.monotonic()


@pytest.fixture
def edge_fleet(engine, postgres, tmp_path):
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    agent.create_self_signed_certificate(cert, key, "portainer.py")
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    database = postgres.new_database()
    offered = tmp_path / "offered-agent.py"  # what edge update schedules send; a test writes its own version
    shutil.copy(os.path.join(HERE, "agent.py"), offered)
    args = ("--database", database, "--secrets-key-file", str(key_file), "--sslcert", cert, "--sslkey", key,
            "--edge-heartbeat", "1", "--snapshot-interval", "1", "--edge-agent-file", str(offered))
    servers = [start_server(str(tmp_path / "server-a"), *args)]
    servers.append(start_server(str(tmp_path / "server-b"), *args))
    tls_port = free_port()
    port, balancer = start_balancer(str(tmp_path), servers, tls_port=tls_port)
    yield EdgeFleet(database, servers, port, balancer, tls_port)
    balancer.kill()
    balancer.wait()
    for srv in servers:
        srv.stop()


def server_pid(server_id: str) -> int:
    """The pid in a server id ("<host> pid <pid> <random>")."""
    return int(server_id.split(" pid ")[1].split()[0])


def leader(fleet: Fleet, postgres):
    holder = postgres.psql(fleet.database.rsplit("/", 1)[1],
                           "SELECT holder FROM leases WHERE name = 'leader' AND expires_at > now()")
    return next((srv for srv in fleet.servers if holder and srv.process.pid == server_pid(holder)), None)


def statuses_taken_by(fleet: Fleet, postgres) -> dict[int, int]:
    """{environment id: pid of the server whose snapshot or status the database holds}."""
    rows = postgres.psql(fleet.database.rsplit("/", 1)[1], "SELECT endpoint_id, server FROM environment_status")
    return {int(line.split("|")[0]): server_pid(line.split("|")[1]) for line in rows.splitlines() if line}


def test_the_leader_alone_snapshots_the_environments_and_every_server_answers_with_its_snapshot(edge_fleet,
                                                                                                postgres):
    first = wait_until(lambda: leader(edge_fleet, postgres), timeout=15, message="a leader")
    other = edge_fleet.servers[1] if first is edge_fleet.servers[0] else edge_fleet.servers[0]
    wait_until(lambda: statuses_taken_by(edge_fleet, postgres), timeout=20, message="the first snapshot")
    time.sleep(3)  # more periodic passes (--snapshot-interval 1): still the leader's alone
    assert statuses_taken_by(edge_fleet, postgres) == {1: first.process.pid}

    def shared_snapshot():  # the other server never took one: what it shows is the leader's, a second old at most
        views = [srv.api("GET", "/api/endpoints/1").json() for srv in (first, other)]
        return all(v["Status"] == 1 and v["Snapshots"] for v in views) and \
            abs(views[0]["Snapshots"][0]["Time"] - views[1]["Snapshots"][0]["Time"]) <= 3
    wait_until(shared_snapshot, timeout=5, message="both servers to show the leader's latest snapshot")
    edge_fleet.kill(first)
    wait_until(lambda: statuses_taken_by(edge_fleet, postgres) == {1: other.process.pid}, timeout=20,
               message="the new leader to take the snapshots")


def test_a_leader_that_loses_its_lease_stops_its_jobs_before_another_may_start_them(edge_fleet, postgres):
    """Another holder takes the lease row (as a server would once the lease expired): the old leader's periodic
    snapshots stop within a renewal, and nobody's run until the lease is free again."""
    first = wait_until(lambda: leader(edge_fleet, postgres), timeout=15, message="a leader")
    database = edge_fleet.database.rsplit("/", 1)[1]

    def snapshot_seq() -> int:
        return int(postgres.psql(database, "SELECT coalesce(max(seq), 0) FROM environment_status"))
    wait_until(snapshot_seq, timeout=20, message="the first snapshot")
    postgres.psql(database, "UPDATE leases SET holder = 'another server pid 1 x', "
                            "expires_at = now() + interval '60 seconds' WHERE name = 'leader'")
    wait_until(lambda: "this server is no longer the leader" in first.log(), timeout=10,
               message="the old leader to step back")
    time.sleep(1.5)  # a snapshot pass in flight when the lease went is cancelled with it
    stopped = snapshot_seq()
    time.sleep(3)  # three --snapshot-interval periods
    assert snapshot_seq() == stopped, "a server went on snapshotting without the lease"
    postgres.psql(database, "DELETE FROM leases WHERE name = 'leader'")
    wait_until(lambda: snapshot_seq() > stopped, timeout=15, message="the next leader's snapshots")

def test_a_server_killed_during_a_stack_deploy_leaves_no_half_written_stack_and_a_retry_deploys_it(edge_fleet,
                                                                                                   engine):
    project = f"failover{SLOT}x{time.monotonic_ns() % 10**8}"
    services = "".join(f"  app{i}:\n    image: busybox:local\n    command: sleep 1000\n"
                       f"    labels:\n      {TEST_LABEL}: \"1\"\n" for i in range(8))
    compose = "services:\n" + services
    body = {"Name": project, "StackFileContent": compose}
    path = "/api/stacks/create/standalone/string?endpointId=1"
    victim = edge_fleet.next_server()
    survivor = edge_fleet.servers[1] if victim is edge_fleet.servers[0] else edge_fleet.servers[0]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        deploying = pool.submit(edge_fleet.call, "POST", path, json=body, timeout=120)
        project_filter = {"label": f"com.docker.compose.project={project}"}
        wait_until(lambda: engine.containers.list(all=True, filters=project_filter), timeout=60, interval=0.02,
                   message="the deploy to make its first container")
        edge_fleet.kill(victim)
        answer = deploying.result()
    print(f"the deploy in flight answered {answer.status_code}: {answer.text[:200]}")
    if answer.status_code != 200:
        assert answer.status_code in (502, 503, 504), answer.text  # HAProxy: the server went away mid-request
    records = [s for s in edge_fleet.call("GET", "/api/stacks").json() if s["Name"] == project]
    if answer.status_code == 200:
        assert [s["Id"] for s in records] == [answer.json()["Id"]]
    for stack in records:  # a record that exists is whole: its file is readable on the survivor
        assert edge_fleet.call("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == compose
    for attempt in range(3):
        if records:
            break
        # The engine may still finish a create the killed server had sent: the first retry can meet that container
        # (a clear 409, and what the retry made is removed); the next one finds it and takes it over.
        retry = edge_fleet.call("POST", path, json=body, timeout=120)
        assert retry.headers["X-Served-By"] == ("s0" if survivor is edge_fleet.servers[0] else "s1")
        if retry.status_code == 200:
            records = [retry.json()]
        else:
            assert retry.status_code == 409 and "already in use" in retry.json()["message"], retry.text
            print(f"retry {attempt + 1} answered: {retry.json()['message']}")
    assert records, "three retries of the creation failed"
    stack_id = records[0]["Id"]
    running = engine.containers.list(filters=project_filter)
    assert sorted(c.labels["com.docker.compose.service"] for c in running) == sorted(f"app{i}" for i in range(8))
    assert len(engine.containers.list(all=True, filters=project_filter)) == 8, "one container per service"
    assert edge_fleet.call("DELETE", f"/api/stacks/{stack_id}?endpointId=1").status_code == 204
    assert not engine.containers.list(all=True, filters=project_filter)


def test_a_server_killed_during_docker_logs_follow_ends_the_stream_and_a_new_one_works(edge_fleet, engine):
    container = engine.containers.run("busybox:local", ["sh", "-c", "while true; do echo tick; sleep 0.1; done"],
                                      detach=True, labels={TEST_LABEL: "1"})
    try:
        path = f"/api/endpoints/1/docker/containers/{container.id}/logs?follow=1&stdout=1"
        stream = edge_fleet.call("GET", path, stream=True)
        assert stream.status_code == 200, stream.text
        serving = edge_fleet.servers[int(stream.headers["X-Served-By"][1:])]
        chunks = stream.iter_content(chunk_size=None)
        assert b"tick" in next(chunks)
        killed = edge_fleet.kill(serving)
        with pytest.raises(requests.exceptions.RequestException):
            for _ in chunks:
                assert time.monotonic() - killed < 10, "the stream went on after its server was killed"
        print(f"the stream ended {time.monotonic() - killed:.2f} s after its server was killed")
        again = edge_fleet.call("GET", path, stream=True)
        assert again.status_code == 200, again.text
        assert again.headers["X-Served-By"] != stream.headers["X-Served-By"]
        assert b"tick" in next(again.iter_content(chunk_size=None))
        again.close()
    finally:
        container.remove(force=True)


def test_with_50_edge_agents_a_killed_server_s_agents_come_back_the_leader_moves_and_no_write_is_lost(
        edge_fleet, postgres, tmp_path):
    a, b = edge_fleet.servers
    created = []
    for i in range(50):
        r = a.api("POST", "/api/endpoints", json={"Name": f"site-{i}", "EndpointCreationType": 4,
                                                   "URL": f"https://127.0.0.1:{edge_fleet.tls_port}"})
        assert r.status_code == 200, r.text
        created.append(r.json())
    ids = [e["Id"] for e in created]
    simulator = start_edge_fleet(str(tmp_path), [(e["EdgeKey"], f"site-{e['Id']}") for e in created])
    try:
        def holders():
            held = {}
            for srv in edge_fleet.servers:
                if srv.process.poll() is None:
                    for view in srv.api("GET", "/api/endpoints").json():
                        if view.get("EdgeTunnelConnected"):
                            held[view["Id"]] = srv
            return held
        wait_until(lambda: set(ids) <= set(holders()), timeout=60, interval=0.5, message="50 edge tunnels")
        held = holders()
        wait_until(lambda: all(statuses_taken_by(edge_fleet, postgres).get(i) == held[i].process.pid for i in ids),
                   timeout=10, message="each edge environment's status taken by the server holding its tunnel")
        first_leader = wait_until(lambda: leader(edge_fleet, postgres), timeout=15, message="a leader")
        on_leader = [i for i in ids if held[i] is first_leader]
        assert on_leader, "HAProxy's round robin should have given the leader some of the tunnels"
        survivor = b if first_leader is a else a

        acknowledged, stop = [], threading.Event()

        def write_tags():
            number = 0
            while not stop.is_set():
                r = edge_fleet.call("POST", "/api/tags", json={"Name": f"ack-{number}"})
                if r.status_code == 200:
                    acknowledged.append(f"ack-{number}")
                    number += 1
                elif r.status_code == 409:  # acknowledged, but the answer was lost in the kill
                    number += 1
                else:
                    assert r.status_code in (502, 503, 504), r.text
                    time.sleep(0.1)
        writer = threading.Thread(target=write_tags)
        writer.start()
        try:
            time.sleep(1.0)
            killed = edge_fleet.kill(first_leader)

            def all_answer():
                return all(edge_fleet.call("GET", f"/api/endpoints/{i}/docker/containers/json",
                                           timeout=10).status_code == 200 for i in ids)
            wait_until(all_answer, timeout=30, interval=0.5, message="all 50 edge environments through the survivor")
            back = time.monotonic() - killed
            print(f"{len(on_leader)} of 50 edge agents were on the killed server; all 50 answered through HAProxy "
                  f"{back:.1f} s after the kill")
            wait_until(lambda: leader(edge_fleet, postgres) is survivor, timeout=15, interval=0.2,
                       message="the survivor to lead")
            print(f"the leader role moved {time.monotonic() - killed:.1f} s after the kill")
            time.sleep(1.0)
        finally:
            stop.set()
            writer.join(30)
        names = {t["Name"] for t in survivor.api("GET", "/api/tags").json()}
        lost = [name for name in acknowledged if name not in names]
        assert len(acknowledged) > 10 and not lost, f"{len(lost)} of {len(acknowledged)} acknowledged tags lost"
        views = {v["Id"]: v for v in survivor.api("GET", "/api/endpoints").json()}
        assert all(views[i]["Status"] == 1 and views[i]["EdgeTunnelConnected"] for i in ids)
    finally:
        simulator.terminate()
        simulator.wait(10)


def test_an_oauth_sign_in_started_on_one_server_finishes_on_the_other(fleet, engine):
    """HAProxy's round robin sends the redirect to one server and the provider's callback to the other."""
    install_provider()
    stop_leftover_providers()
    port = free_port()
    provider = OpenIDProvider("failover", port, f"http://127.0.0.1:{port}", [client_for(fleet.url + "/")],
                              [rsa_jwk("failover-key")])
    provider.start()
    try:
        a = fleet.servers[0]
        settings = {"IssuerURL": provider.issuer, "ClientID": CLIENT_ID, "ClientSecret": CLIENT_SECRET,
                    "Scopes": "openid profile email", "UserIdentifier": "preferred_username",
                    "OAuthAutoCreateUsers": True, "DefaultTeamID": 0, "TeamMemberships": {"OAuthClaimName": ""}}
        r = a.api("PUT", "/api/settings", json={"AuthenticationMethod": 3, "OAuthSettings": settings})
        assert r.status_code == 200, r.text
        time.sleep(0.5)  # the other server hears of the settings (NOTIFY)
        for login in ("alice", "bob"):
            browser = requests.Session()
            start = browser.get(fleet.url + "/api/auth/oauth/login", allow_redirects=False, timeout=30)
            assert start.status_code == 302, start.text
            back = follow_provider(browser, start.headers["Location"], login, fleet.url + "/")
            done = browser.post(fleet.url + "/api/auth/oauth/validate", json=back, timeout=30)
            assert done.status_code == 200, done.text
            assert done.headers["X-Served-By"] != start.headers["X-Served-By"], "HAProxy kept one server"
            me = fleet.through_balancer("GET", "/api/users/me", done.json()["jwt"])
            assert me.json()["Username"] == login
            replay = browser.post(fleet.url + "/api/auth/oauth/validate", json=back, timeout=30)
            assert replay.status_code == 400 and "already used" in replay.json()["message"], replay.text
    finally:
        provider.stop()
        fleet.servers[0].api("PUT", "/api/settings", json={"AuthenticationMethod": 1})



def test_an_agent_environment_added_on_one_server_answers_through_both(fleet, local_agent):
    """An agent trusts the one key that signs requests to it: every server signs with the key in the database."""
    a, b = fleet.servers
    r = a.api("POST", "/api/endpoints", json={"Name": "agent", "EndpointCreationType": 2,
                                               "URL": local_agent})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    wait_until(lambda: b.api("GET", f"/api/endpoints/{endpoint_id}").status_code == 200, timeout=5,
               message="the other server to know the environment")
    for srv in (a, b, a, b):
        answer = srv.api("GET", f"/api/endpoints/{endpoint_id}/docker/containers/json")
        assert answer.status_code == 200, answer.text


def update_window(agent_log: str) -> tuple[float, float]:
    """From an edge agent's log: when it replaced its agent.py, and when the new one's tunnel was up."""
    start = end = None
    for line in agent_log.splitlines():
        if start is None and "agent.py replaced by version" in line:
            start = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        elif start is not None and "edge tunnel to" in line and " is up " in line:
            end = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            break
    assert start is not None and end is not None, agent_log[-2000:]
    return start, end


def test_an_update_schedule_s_batch_size_holds_across_both_servers_and_every_device_ends_updated(
        edge_fleet, tmp_path):
    """Six real edge agents (agent.py copies that update themselves) spread over both servers by HAProxy, batches
    of two: each server sends to the devices it holds, and at no moment are more than two updating fleet-wide."""
    a = edge_fleet.servers[0]
    devices = []

    def call(method: str, path: str, **kwargs) -> requests.Response:  # through HAProxy, as the administrator
        return edge_fleet.through_balancer(method, path, a.admin_token, **kwargs)
    for i in range(6):
        r = a.api("POST", "/api/endpoints", json={"Name": f"upd-{i}", "EndpointCreationType": 4,
                                                   "URL": f"https://127.0.0.1:{edge_fleet.tls_port}"})
        assert r.status_code == 200, r.text
        home = tmp_path / f"device-{i}"
        home.mkdir()
        shutil.copy(os.path.join(HERE, "agent.py"), home / "agent.py")
        env = {**os.environ, "EDGE": "1", "EDGE_KEY": r.json()["EdgeKey"], "EDGE_ID": f"upd-{i}",
               "EDGE_DATA": str(home / "state"), "DOCKER_HOST": "unix:///var/run/docker.sock",
               "EDGE_HEARTBEAT": "1", "EDGE_BACKOFF_INITIAL": "0.2", "EDGE_BACKOFF_MAX": "1.0"}
        process = subprocess.Popen([sys.executable, str(home / "agent.py")], env=env, stdout=subprocess.DEVNULL,
                                   stderr=open(home / "agent.log", "ab"))
        devices.append((r.json()["Id"], home, process))
    ids = [i for i, _, _ in devices]
    try:
        def held_by() -> dict:
            return {view["Id"]: srv for srv in edge_fleet.servers for view in srv.api("GET", "/api/endpoints").json()
                    if view["Id"] in ids and view["EdgeTunnelConnected"] and not view["EdgeTunnelRelayed"]}
        wait_until(lambda: len(held_by()) == 6, timeout=60, interval=0.5, message="six edge tunnels")
        assert len({srv.port for srv in held_by().values()}) == 2, "HAProxy should spread the devices over both"
        group = call("POST", "/api/edge_groups", json={"Name": "line", "Dynamic": False, "Endpoints": ids})
        assert group.status_code == 200, group.text
        group = group.json()
        with open(os.path.join(HERE, "agent.py")) as f:
            text = f.read().replace(f'AGENT_VERSION = "{agent.AGENT_VERSION}"', 'AGENT_VERSION = "2.19.4-batch"', 1)
        (tmp_path / "offered-agent.py").write_text(text)
        r = call("POST", "/api/edge_update_schedules", json={
            "name": "batched", "groupIds": [group["Id"]], "batchSize": 2, "rollbackTimeout": 20})
        assert r.status_code == 200, r.text
        schedule_id, most, seen_by = r.json()["id"], 0, set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            answer = call("GET", f"/api/edge_update_schedules/{schedule_id}")
            assert answer.status_code == 200, answer.text
            seen_by.add(answer.headers["X-Served-By"])
            states = [d["status"] for d in answer.json()["devices"].values()]
            updating = states.count("updating")
            most = max(most, updating)
            assert updating <= 2, answer.json()["devices"]
            if len(states) == 6 and all(s == "updated" for s in states):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"not every device updated: {answer.json()['devices']}")
        assert most == 2 and seen_by == {"s0", "s1"}  # batches were full, watched through both servers
        digest = hashlib.sha256(text.encode()).hexdigest()
        for _, home, _ in devices:
            assert hashlib.sha256((home / "agent.py").read_bytes()).hexdigest() == digest
        # what the devices lived through: from replacing agent.py to the new agent's tunnel, at most two at once
        windows = [update_window((home / "agent.log").read_text()) for _, home, _ in devices]
        assert max(sum(1 for start, end in windows if start <= moment < end) for moment, _ in windows) <= 2, windows
        views = {v["Id"]: v for v in call("GET", "/api/endpoints").json()}
        assert all(views[i]["Agent"]["Version"] == "2.19.4-batch" for i in ids)
    finally:
        for _, home, process in devices:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):  # the updated agent
                pid = json.loads((home / "state" / "state.json").read_text()).get("pid")
                if pid and pid != process.pid:
                    os.kill(pid, signal.SIGTERM)
