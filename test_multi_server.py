"""Two servers, one fleet: the store in a real PostgreSQL 15 (Debian), two servers on it, HAProxy (Debian) in front.

PostgreSQL and HAProxy are started by the fixtures in directories of this test slot's own, so a killed run's
leftovers are stopped and removed before the next run starts.
"""

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import time

import requests

import agent
import portainer
from conftest import (ADMIN_PASSWORD, HERE, PG_BIN, SLOT, TEST_LABEL, as_postgres, free_port, start_balancer,
                      start_server, wait_until)


def seen_within(check, seconds: float) -> float:
    """How long until check() holds, failing after `seconds`."""
    started = time.monotonic()
    wait_until(check, timeout=seconds, interval=0.02, message="the other server to see the change")
    return time.monotonic() - started


def tag_names(srv) -> set:
    r = srv.api("GET", "/api/tags")
    assert r.status_code == 200, r.text
    return {tag["Name"] for tag in r.json()}


def test_work_through_the_balancer_lands_on_both_servers_and_each_sees_the_other_within_a_second(fleet):
    a, b = fleet.servers
    token = requests.post(fleet.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD},
                          timeout=30).json()["jwt"]
    served = set()
    for i in range(6):
        r = fleet.through_balancer("POST", "/api/tags", token, json={"Name": f"site-{i}"})
        assert r.status_code == 200, r.text
        served.add(r.headers["X-Served-By"])
    assert served == {"s0", "s1"}, "HAProxy should have sent the requests to both servers"
    wanted = {f"site-{i}" for i in range(6)}
    for srv in (a, b):
        seen_within(lambda srv=srv: wanted <= tag_names(srv), 1.0)
    # A change on one server reaches the other within a second, both ways, even when nobody asks the other (NOTIFY).
    for writer, reader, name in ((a, b, "from-a"), (b, a, "from-b")):
        applied = reader.log().count("changes from other servers applied")
        assert writer.api("POST", "/api/tags", json={"Name": name}).status_code == 200
        took = seen_within(lambda reader=reader, applied=applied:
                           reader.log().count("changes from other servers applied") > applied, 1.0)
        print(f"{name}: applied on the other server {took * 1000:.0f} ms after the write was acknowledged")
        assert name in tag_names(reader)


def test_an_environment_added_on_one_server_is_up_and_usable_on_the_other(fleet, engine):
    a, b = fleet.servers
    r = a.api("POST", "/api/endpoints", files={"Name": (None, "second"), "EndpointCreationType": (None, "1"),
                                                "URL": (None, "unix:///var/run/docker.sock")})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]

    def up_on_b():
        answer = b.api("GET", f"/api/endpoints/{endpoint_id}")
        return answer.status_code == 200 and answer.json()["Status"] == 1
    seen_within(up_on_b, 5.0)
    assert b.api("GET", f"/api/endpoints/{endpoint_id}/docker/_ping").text == "OK"
    assert a.api("DELETE", f"/api/endpoints/{endpoint_id}").status_code == 204
    seen_within(lambda: b.api("GET", f"/api/endpoints/{endpoint_id}/docker/_ping").status_code == 404, 1.0)


def test_users_sessions_and_api_keys_made_on_one_server_work_on_the_other(fleet):
    a, b = fleet.servers
    r = a.api("POST", "/api/users", json={"Username": "carol", "Password": "a long enough password", "Role": 2})
    assert r.status_code == 200, r.text
    carol_id = r.json()["Id"]
    seen_within(lambda: requests.post(b.url + "/api/auth", timeout=10, json={
        "Username": "carol", "Password": "a long enough password"}).status_code == 200, 1.0)
    token = b.login("carol", "a long enough password")
    key = b.create_api_key(token, carol_id, "a long enough password")
    seen_within(lambda: a.api("GET", "/api/users/me", api_key=key).status_code == 200, 1.0)
    assert a.api("GET", "/api/users/me", token=token).json()["Username"] == "carol"  # one JWT signing key
    # Logging out on one server revokes the session on every server.
    assert a.api("POST", "/api/auth/logout", token=token).status_code in (200, 204)
    seen_within(lambda: b.api("GET", "/api/users/me", token=token).status_code == 401, 1.0)
    # Deleting the API key on one server refuses it on the other.
    key_id = a.api("GET", f"/api/users/{carol_id}/tokens").json()[0]["id"]
    assert a.api("DELETE", f"/api/users/{carol_id}/tokens/{key_id}").status_code == 204
    seen_within(lambda: b.api("GET", "/api/users/me", api_key=key).status_code == 401, 1.0)


def test_failed_logins_on_both_servers_count_against_one_limit(fleet):
    """Five wrong passwords from one address, spread over both servers, use up the address's burst on both: an
    attacker gets no more tries by talking to each server in turn."""
    a, b = fleet.servers
    for attempt in range(5):
        r = requests.post((a, b)[attempt % 2].url + "/api/auth", timeout=10,
                          json={"Username": "mallory", "Password": f"guess number {attempt}"})
        assert r.status_code == 401, r.text
        time.sleep(0.5)  # the other server hears of the attempt
    time.sleep(1)  # on a loaded machine, the last attempt may take longer to reach the other server (6 s refill)
    for srv in (a, b):
        r = requests.post(srv.url + "/api/auth", json={"Username": "mallory", "Password": "one more"}, timeout=10)
        assert r.status_code == 429, r.text


def test_the_activity_log_holds_what_both_servers_did(fleet):
    a, b = fleet.servers
    for srv, name in ((a, "audit-on-a"), (b, "audit-on-b")):
        assert srv.api("POST", "/api/tags", json={"Name": name}).status_code == 200

    def logged_everywhere():
        for srv in (a, b):
            logs = srv.api("GET", "/api/useractivity/logs", params={"keyword": "/api/tags"}).json()["logs"]
            if sum(e["path"] == "/api/tags" and e["method"] == "POST" for e in logs) < 2:
                return False
        return True
    wait_until(logged_everywhere, timeout=5, message="both servers' entries in each server's activity log")
    assert not os.path.exists(os.path.join(a.data, "activity.jsonl"))


def test_concurrent_logouts_on_both_servers_revoke_every_session(fleet):
    """Revocations are one shared record changed by both servers at once: a lost update would let a logged-out
    session work again."""
    a, b = fleet.servers
    tokens = [a.login("admin", ADMIN_PASSWORD) for _ in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda pair: (a, b)[pair[0] % 2].api("POST", "/api/auth/logout", token=pair[1]),
                                enumerate(tokens)))
    assert all(r.status_code in (200, 204) for r in answers), [r.text for r in answers if r.status_code >= 300]
    time.sleep(1.0)
    for srv in (a, b):
        still_working = [t for t in tokens if srv.api("GET", "/api/users/me", token=t).status_code != 401]
        assert not still_working, f"{len(still_working)} logged-out sessions still work"


def test_records_created_in_parallel_on_both_servers_all_get_ids_of_their_own(fleet):
    a, b = fleet.servers

    def create(number):
        return (a, b)[number % 2].api("POST", "/api/tags", json={"Name": f"parallel-{number}"})
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(create, range(36)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    assert len({r.json()["ID"] for r in answers}) == 36
    for srv in (a, b):
        seen_within(lambda srv=srv: {f"parallel-{n}" for n in range(36)} <= tag_names(srv), 1.0)


def test_concurrent_updates_of_one_environment_from_both_servers_lose_nothing(fleet):
    """Server A changes the environment's public URL while server B renames it, twenty times each, at once: both
    fields end as the last acknowledged value; when both change the same field, each answer is a success or a
    clear 409, and the environment ends with an acknowledged value."""
    a, b = fleet.servers

    def change(srv, field, values):
        acknowledged = []
        for value in values:
            r = srv.api("PUT", "/api/endpoints/1", json={field: value})
            assert r.status_code in (200, 409), r.text
            if r.status_code == 200:
                acknowledged.append(value)
        return acknowledged

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        urls = pool.submit(change, a, "PublicURL", [f"10.0.0.{i}" for i in range(20)])
        names = pool.submit(change, b, "Name", [f"local-{i}" for i in range(20)])
        urls, names = urls.result(), names.result()
    assert urls and names
    for srv in (a, b):
        def settled(srv=srv):
            endpoint = srv.api("GET", "/api/endpoints/1").json()
            return endpoint["PublicURL"] == urls[-1] and endpoint["Name"] == names[-1]
        seen_within(settled, 1.0)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(change, a, "Name", [f"a-{i}" for i in range(15)])
        second = pool.submit(change, b, "Name", [f"b-{i}" for i in range(15)])
        acknowledged = first.result() + second.result()
    time.sleep(1.0)
    final = {srv.api("GET", "/api/endpoints/1").json()["Name"] for srv in (a, b)}
    assert len(final) == 1 and final <= set(acknowledged)


def test_a_stack_file_saved_on_one_server_is_read_on_the_other(fleet):
    a, b = fleet.servers
    content = "services:\n  web:\n    image: busybox:local\n    command: sleep 1000\n"
    r = a.api("POST", "/api/custom_templates/create/string",
              json={"Title": "shared", "Description": "d", "Type": 3, "FileContent": content})
    assert r.status_code == 200, r.text
    template_id = r.json()["Id"]

    def readable_on_b():
        answer = b.api("GET", f"/api/custom_templates/{template_id}/file")
        return answer.status_code == 200 and answer.json()["FileContent"] == content
    seen_within(readable_on_b, 1.0)
    assert content.encode() not in subprocess.run(
        [f"{PG_BIN}/pg_dump", "-h", "127.0.0.1", "-p", fleet.database.rsplit(":", 1)[1].split("/")[0], "-U",
         "postgres", fleet.database.rsplit("/", 1)[1]], capture_output=True, check=True).stdout, \
        "stack files are sealed in the database"


def test_a_stack_deployed_on_one_server_is_updated_and_removed_on_the_other(fleet, engine):
    a, b = fleet.servers
    project = f"multi{SLOT}x{time.monotonic_ns() % 10**8}"
    compose = ("services:\n  app:\n    image: busybox:local\n    command: sleep 1000\n"
               f"    labels:\n      {TEST_LABEL}: \"1\"\n    environment:\n      STAGE: ${{STAGE}}\n")
    r = a.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
              json={"Name": project, "StackFileContent": compose, "Env": [{"name": "STAGE", "value": "one"}]})
    assert r.status_code == 200, r.text
    stack_id = r.json()["Id"]
    assert b.api("GET", f"/api/stacks/{stack_id}/file").json()["StackFileContent"] == compose
    changed = compose.replace("sleep 1000", "sleep 2000")
    r = b.api("PUT", f"/api/stacks/{stack_id}?endpointId=1",
              json={"StackFileContent": changed, "Env": [{"name": "STAGE", "value": "two"}]})
    assert r.status_code == 200, r.text
    container = engine.containers.get(f"{project}_app_1")
    assert "STAGE=two" in container.attrs["Config"]["Env"] and container.attrs["Config"]["Cmd"][-1] == "2000"
    seen_within(lambda: a.api("GET", f"/api/stacks/{stack_id}/file").json()["StackFileContent"] == changed, 1.0)
    assert b.api("DELETE", f"/api/stacks/{stack_id}?endpointId=1").status_code == 204
    assert not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    seen_within(lambda: a.api("GET", f"/api/stacks/{stack_id}").status_code == 404, 1.0)


def test_the_leader_killed_another_server_leads_within_15_seconds(fleet, postgres):
    a, b = fleet.servers
    database = fleet.database.rsplit("/", 1)[1]

    def holder_pid():
        holder = postgres.psql(database, "SELECT holder FROM leases WHERE name = 'leader' AND expires_at > now()")
        return int(holder.split(" pid ")[1].split()[0]) if holder else None
    leader_pid = wait_until(holder_pid, timeout=10, message="a leader")
    leader, other = (a, b) if leader_pid == a.process.pid else (b, a)
    assert leader.process.pid == leader_pid
    leader.process.send_signal(signal.SIGKILL)
    leader.process.wait()
    killed = time.monotonic()
    wait_until(lambda: holder_pid() == other.process.pid, timeout=15, interval=0.2, message="the other to lead")
    took = time.monotonic() - killed
    assert took < 15
    assert "this server is now the leader" in other.log()
    print(f"leader role moved in {took:.1f} s")
    # The survivor goes on answering through the balancer.
    token = requests.post(fleet.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD},
                          timeout=30).json()["jwt"]
    for _ in range(4):
        assert fleet.through_balancer("GET", "/api/endpoints", token).status_code == 200


def test_while_the_database_is_down_writes_are_refused_clearly_and_afterwards_nothing_is_lost(fleet, postgres):
    a, b = fleet.servers
    assert a.api("POST", "/api/tags", json={"Name": "before"}).status_code == 200
    pg_ctl = (f"{PG_BIN}/pg_ctl", "-D", f"{postgres.directory}/data")
    as_postgres(*pg_ctl, "stop", "-m", "fast")
    try:
        r = a.api("POST", "/api/tags", json={"Name": "during"})
        assert r.status_code == 503 and "database" in r.json()["message"], r.text
    finally:
        as_postgres(*pg_ctl, "-o", f"'-p {postgres.port} -k {postgres.directory} -c listen_addresses=127.0.0.1'",
                    "-l", f"{postgres.directory}/log", "start", "-w")
    wait_until(lambda: a.api("POST", "/api/tags", json={"Name": "after"}).status_code == 200, timeout=20,
               message="writes to work again")
    for srv in (a, b):
        seen_within(lambda srv=srv: {"before", "after"} <= tag_names(srv) and "during" not in tag_names(srv), 5.0)


def test_an_edge_agent_behind_the_balancer_moves_to_the_other_server_when_its_server_dies(engine, postgres,
                                                                                          tmp_path):
    """One load-balanced address in the edge key: when the server holding the tunnel is killed, the agent
    reconnects through HAProxy to the other, which knows the environment from the database."""
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    agent.create_self_signed_certificate(cert, key, "portainer.py")  # one certificate for both: agents pin it
    key_file = tmp_path / "secrets.key"
    key_file.write_bytes(os.urandom(32))
    args = ("--database", postgres.new_database(), "--secrets-key-file", str(key_file), "--sslcert", cert,
            "--sslkey", key, "--edge-heartbeat", "1")
    servers = [start_server(str(tmp_path / "server-a"), *args)]
    servers.append(start_server(str(tmp_path / "server-b"), *args))
    tls_port = free_port()
    _, balancer = start_balancer(str(tmp_path), servers, tls_port=tls_port)
    edge_agent = None
    try:
        a, b = servers
        r = a.api("POST", "/api/endpoints", json={"Name": "edge-behind-balancer", "EndpointCreationType": 4,
                                                   "URL": f"https://127.0.0.1:{tls_port}"})
        assert r.status_code == 200, r.text
        endpoint = r.json()
        env = {**os.environ, "EDGE": "1", "EDGE_KEY": endpoint["EdgeKey"], "EDGE_ID": "balanced-site",
               "DOCKER_HOST": "unix:///var/run/docker.sock", "EDGE_HEARTBEAT": "1", "EDGE_BACKOFF_INITIAL": "0.2",
               "EDGE_BACKOFF_MAX": "1.5"}
        edge_agent = subprocess.Popen([sys.executable, os.path.join(HERE, "agent.py")], env=env,
                                      stdout=open(tmp_path / "edge-agent.log", "wb"), stderr=subprocess.STDOUT)

        def holder():
            for srv in servers:
                if srv.process.poll() is None and srv.api("GET", f"/api/endpoints/{endpoint['Id']}").json().get(
                        "EdgeTunnelConnected"):
                    return srv
            return None
        first = wait_until(holder, timeout=30, message="the edge agent to connect")
        other = b if first is a else a
        elsewhere = other.api("GET", f"/api/endpoints/{endpoint['Id']}/docker/_ping")
        assert elsewhere.status_code in (502, 503, 504) and elsewhere.json()["message"], elsewhere.text  # no relay
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
        killed = time.monotonic()
        assert wait_until(holder, timeout=30, interval=0.2, message="the agent on the other server") is other
        print(f"edge agent reconnected to the other server in {time.monotonic() - killed:.1f} s")
        assert other.api("GET", f"/api/endpoints/{endpoint['Id']}/docker/_ping").text == "OK"
    finally:
        if edge_agent is not None:
            edge_agent.terminate()
            edge_agent.wait(10)
        balancer.kill()
        balancer.wait()
        for srv in servers:
            srv.stop()


def test_a_status_written_late_by_a_busy_server_does_not_overwrite_a_newer_one_from_another(postgres, tmp_path):
    """An edge agent leaves server one and comes back on server two; one writes its "down" only after two wrote
    "up" with a new snapshot. Both end up showing "up" and two's snapshot: the status learnt last wins."""
    url, key = postgres.new_database(), os.urandom(32)
    servers = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        store = portainer.DatabaseStore(str(tmp_path / name), url, key)
        store.load()
        environments = portainer.Environments(store, str(tmp_path / name))
        servers.append((store, environments, portainer.SharedEnvironmentStatus(store, environments)))
    (store_one, one, one_shares), (store_two, two, two_shares) = servers

    async def scenario():
        await asyncio.gather(store_one.start(), store_two.start())
        try:
            one.record_status(7, portainer.STATUS_DOWN)  # the tunnel ended on server one
            await asyncio.sleep(0.05)
            two.record_status(7, portainer.STATUS_UP, {"Time": 2})  # the agent back on server two
            await two_shares.exchange()
            await one_shares.exchange()  # server one, busy until now, writes its older "down"
            await two_shares.exchange()
            for environments in (one, two):
                assert environments.status[7] == portainer.STATUS_UP
                assert environments.snapshots[7] == {"Time": 2}
            # A status learnt after the one in the database is written, and reaches the other server.
            one.record_status(7, portainer.STATUS_DOWN)
            await one_shares.exchange()
            await two_shares.exchange()
            assert two.status[7] == portainer.STATUS_DOWN and two.snapshots[7] == {"Time": 2}
        finally:
            await asyncio.gather(store_one.stop(), store_two.stop())

    asyncio.run(scenario())


def test_migrate_to_copies_a_data_directory_and_refuses_a_non_empty_database(engine, postgres, tmp_path):
    data = str(tmp_path / "single")
    srv = start_server(data)
    assert srv.api("POST", "/api/tags", json={"Name": "kept"}).status_code == 200
    r = srv.api("POST", "/api/users", json={"Username": "dave", "Password": "dave's long password", "Role": 2})
    assert r.status_code == 200, r.text
    content = "services:\n  app:\n    image: busybox:local\n"
    r = srv.api("POST", "/api/custom_templates/create/string",
                json={"Title": "t", "Description": "d", "Type": 3, "FileContent": content})
    assert r.status_code == 200, r.text
    template_id = r.json()["Id"]
    assert srv.stop() == 0
    database = postgres.new_database()
    migrate = [sys.executable, os.path.join(HERE, "portainer.py"), "--data", data, "--migrate-to", database]
    done = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--secrets-key-file" in done.stdout
    again = subprocess.run(migrate, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "must be empty" in again.stderr, again.stderr
    moved = start_server(str(tmp_path / "on-database"), "--database", database, "--secrets-key-file",
                         os.path.join(data, "registry.key"))
    try:
        assert "kept" in tag_names(moved)
        assert moved.login("dave", "dave's long password")
        assert moved.api("GET", f"/api/custom_templates/{template_id}/file").json()["FileContent"] == content
        r = moved.api("POST", "/api/tags", json={"Name": "new"})  # ids go on after the copied ones
        assert r.status_code == 200 and r.json()["ID"] == 2, r.text
    finally:
        moved.stop()


def test_a_server_without_the_secrets_key_file_is_refused(postgres, tmp_path):
    done = subprocess.run([sys.executable, os.path.join(HERE, "portainer.py"), "--data", str(tmp_path / "d"),
                           "--database", postgres.new_database()], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--secrets-key-file" in done.stderr
