"""Edge fleets: devices imaged once with one onboarding key make their own environments, wait in the waiting room
until an administrator (or an auto-approval rule) trusts them, and are refused once rejected or removed.

Edge agents are real `agent.py` processes; some run on a site behind NAT (a network namespace that drops every
inbound connection) and reach the server only through the tunnel they dial. Their Docker engine is this machine's.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

import agent
import test_ui
from conftest import HERE, make_namespace_host, remove_namespace_host, start_server, wait_until

FAST_AGENT = {"EDGE_HEARTBEAT": "1", "EDGE_BACKOFF_INITIAL": "0.2", "EDGE_BACKOFF_MAX": "1.0", "LOG_LEVEL": "DEBUG"}
ENGINE = "unix:///var/run/docker.sock"
# test_ui's browser and tab fixtures, shared rather than copied.
browser = test_ui.browser
open_page = test_ui.open_page
# The simulated devices dial the server's self-signed HTTPS port as agents do, without pinning.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def fleet_site():
    """A site behind NAT: reaches this machine, refuses every inbound connection."""
    host = make_namespace_host(17)
    subprocess.run(["ip", "netns", "exec", host.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                    "NEW", "-j", "DROP"], check=True)
    yield host
    remove_namespace_host(host.name, host.name.replace("node", "veth"), host.root)


@pytest.fixture(scope="module")
def fleet(fleet_site, workdir):
    offered = os.path.join(workdir, "offered-agent.py")  # what update schedules send; each test writes its own
    shutil.copy(os.path.join(HERE, "agent.py"), offered)
    server = start_server(os.path.join(workdir, "fleet-data"), "--edge-heartbeat", "1", "--edge-agent-file", offered,
                          bind_host=fleet_site.host_address)
    agents: list[FleetAgent] = []
    yield {"server": server, "agents": agents, "site": fleet_site, "workdir": workdir, "offered": offered}
    for device in agents:
        device.stop()
    server.stop()


class FleetAgent:
    """One `python agent.py` in edge mode, imaged with the fleet's key; on the NAT site or on this machine."""

    def __init__(self, fleet: dict, key: str, edge_id: str, site=None, own_copy: bool = False, **announced: str):
        """own_copy: run a copy of agent.py of its own (one that updates itself replaces its file)."""
        self.edge_id = edge_id
        self.data = os.path.join(fleet["workdir"], f"device-{edge_id}")
        self.log_path = self.data + ".log"
        self.agent_file = os.path.join(self.data, "agent.py") if own_copy else os.path.join(HERE, "agent.py")
        if own_copy and not os.path.exists(self.agent_file):
            os.makedirs(self.data, exist_ok=True)
            shutil.copy(os.path.join(HERE, "agent.py"), self.agent_file)
        env = {**os.environ, **FAST_AGENT, "EDGE": "1", "EDGE_KEY": key, "EDGE_ID": edge_id, "DOCKER_HOST": ENGINE,
               "EDGE_DATA": os.path.join(self.data, "state"), **{f"EDGE_{k.upper()}": v for k, v in announced.items()}}
        argv = [sys.executable, self.agent_file]
        log = open(self.log_path, "ab")
        self.process = (site.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT) if site else
                        subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        fleet["agents"].append(self)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def running_digest(self) -> str:
        with open(self.agent_file, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    def stop(self) -> None:
        """The process started, and the one a rolled-back update became (its watchdog), if any."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        try:
            with open(os.path.join(self.data, "state", "state.json")) as f:
                pid = json.load(f).get("pid")
            if pid and pid != self.process.pid:
                os.kill(pid, signal.SIGTERM)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            pass


def onboarding_key(server) -> str:
    r = server.api("GET", "/api/edge/onboarding")
    assert r.status_code == 200, r.text
    return r.json()["EdgeKey"]


def environment_of(server, edge_id: str) -> dict | None:
    return next((ep for ep in server.api("GET", "/api/endpoints", params={"types": "4"}).json()
                 if ep.get("EdgeID") == edge_id), None)


def connected_environment(server, edge_id: str, timeout: float = 30) -> dict:
    return wait_until(lambda: (ep := environment_of(server, edge_id)) and ep["EdgeTunnelConnected"] and ep,
                      timeout=timeout, message=f"device {edge_id} to onboard and connect")


def docker_status(server, endpoint_id: int) -> int:
    return server.api("GET", f"/api/endpoints/{endpoint_id}/docker/version").status_code


def bulk(server, action: str, ids: list[int], **extra) -> requests.Response:
    return server.api("POST", "/api/endpoints/bulk", json={"Action": action, "EndpointIds": ids, **extra})


def make_standard_user(server) -> str:
    name = f"operator-{time.monotonic_ns() % 10**8}"
    r = server.api("POST", "/api/users", json={"Username": name, "Password": "a long enough password", "Role": 2})
    assert r.status_code == 200, r.text
    return server.login(name, "a long enough password")


def test_administrator_reads_the_onboarding_key_and_a_standard_user_cannot(fleet):
    server = fleet["server"]
    key = agent.EdgeKey.decode(onboarding_key(server))
    assert key.endpoint_id == agent.GLOBAL_KEY_ENDPOINT and key.server_url == server.https_url
    assert onboarding_key(server) == onboarding_key(server)  # stable until rotated
    assert key.secret not in open(os.path.join(server.data, "portainer.json")).read()
    token = make_standard_user(server)
    for method, path in (("GET", "/api/edge/onboarding"), ("POST", "/api/edge/onboarding/rotate"),
                         ("GET", "/api/edge/auto_approval"), ("GET", "/api/edge/refused_devices")):
        assert server.api(method, path, token=token).status_code == 403, path
    r = server.api("POST", "/api/endpoints/bulk", token=token, json={"Action": "approve", "EndpointIds": [1]})
    assert r.status_code == 403


def test_device_behind_nat_onboards_into_the_waiting_room_where_no_docker_call_passes(fleet):
    server = fleet["server"]
    tag = server.api("POST", "/api/tags", json={"Name": "kiosk"}).json()
    group = server.api("POST", "/api/edge_groups", json={"Name": "north", "Dynamic": False}).json()
    FleetAgent(fleet, onboarding_key(server), "site-device-1", site=fleet["site"], name="till-7",
               tags="kiosk,no-such-tag", groups="north,no-such-group")
    ep = connected_environment(server, "site-device-1")
    assert ep["Name"] == "till-7" and ep["TagIds"] == [tag["ID"]] and ep["UserTrusted"] is False
    assert ep["Status"] == 1 and ep["Agent"]["Version"] == agent.AGENT_VERSION
    assert ep["Id"] in server.api("GET", f"/api/edge_groups/{group['Id']}").json()["Endpoints"]
    r = server.api("GET", f"/api/endpoints/{ep['Id']}/docker/version")
    assert r.status_code == 403 and "approval" in r.json()["message"]
    waiting = server.api("GET", "/api/endpoints", params={"edgeDeviceUntrusted": "true"}).json()
    assert [e["EdgeID"] for e in waiting] == ["site-device-1"]
    assert all(e["UserTrusted"] for e in server.api("GET", "/api/endpoints",
                                                     params={"edgeDeviceUntrusted": "false"}).json())


def test_administrator_approves_waiting_devices_in_bulk_and_their_engines_answer(fleet):
    server = fleet["server"]
    key = onboarding_key(server)
    FleetAgent(fleet, key, "bulk-device-1", site=fleet["site"])
    FleetAgent(fleet, key, "bulk-device-2", name="counter")
    first, second = connected_environment(server, "bulk-device-1"), connected_environment(server, "bulk-device-2")
    assert docker_status(server, first["Id"]) == 403 and docker_status(server, second["Id"]) == 403
    r = bulk(server, "approve", [first["Id"], second["Id"]])
    assert r.status_code == 200, r.text
    for ep in (first, second):
        wait_until(lambda: docker_status(server, ep["Id"]) == 200, timeout=15, message="the approved engine")
        assert environment_of(server, ep["EdgeID"])["UserTrusted"] is True
    logs = server.api("GET", "/api/useractivity/logs", params={"limit": 1000}).json()["logs"]
    assert {e["action"] for e in logs if e["username"] == "admin"} >= {
        f"approve environment {first['Name']}", f"approve environment {second['Name']}"}
    assert any(e["action"] == "edge device bulk-device-1 onboarded, waiting for approval" for e in logs)


def test_device_matching_an_auto_approval_rule_is_trusted_at_once(fleet):
    server = fleet["server"]
    server.api("POST", "/api/tags", json={"Name": "trusted-kiosk"})
    r = server.api("PUT", "/api/edge/auto_approval", json={"Rules": [{"Kind": "tag", "Value": "trusted-kiosk"},
                                                                      {"Kind": "edgeid", "Value": "factory-*"}]})
    assert r.status_code == 200, r.text
    assert server.api("PUT", "/api/edge/auto_approval",
                      json={"Rules": [{"Kind": "colour", "Value": "x"}]}).status_code == 400
    key = onboarding_key(server)
    FleetAgent(fleet, key, "auto-device-1", tags="trusted-kiosk")
    FleetAgent(fleet, key, "factory-42")
    FleetAgent(fleet, key, "stranger-1", tags="kiosk")
    for edge_id in ("auto-device-1", "factory-42"):
        ep = connected_environment(server, edge_id)
        assert ep["UserTrusted"] is True
        wait_until(lambda: docker_status(server, ep["Id"]) == 200, timeout=15, message="the engine")
    stranger = connected_environment(server, "stranger-1")
    assert stranger["UserTrusted"] is False and docker_status(server, stranger["Id"]) == 403
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": []})


def test_rejected_device_is_refused_until_admitted_again(fleet):
    server = fleet["server"]
    device = FleetAgent(fleet, onboarding_key(server), "reject-device-1", site=fleet["site"])
    ep = connected_environment(server, "reject-device-1")
    assert bulk(server, "reject", [ep["Id"]]).status_code == 200
    refused = server.api("GET", "/api/edge/refused_devices").json()
    assert {"EdgeID": "reject-device-1", "Reason": "rejected"}.items() <= next(
        d for d in refused if d["EdgeID"] == "reject-device-1").items()
    wait_until(lambda: "rejected or removed" in device.log(), timeout=20, message="the device to be refused")
    time.sleep(1.5)
    assert environment_of(server, "reject-device-1") is None
    assert server.api("POST", "/api/edge/refused_devices/reject-device-1/admit").status_code == 204
    again = connected_environment(server, "reject-device-1")
    assert again["UserTrusted"] is True and again["Id"] != ep["Id"]
    wait_until(lambda: docker_status(server, again["Id"]) == 200, timeout=15, message="the admitted engine")


def test_removed_device_is_refused_too(fleet):
    server = fleet["server"]
    device = FleetAgent(fleet, onboarding_key(server), "remove-device-1")
    ep = connected_environment(server, "remove-device-1")
    assert server.api("DELETE", f"/api/endpoints/{ep['Id']}").status_code == 204
    wait_until(lambda: "rejected or removed" in device.log(), timeout=20, message="the removed device to be refused")
    assert environment_of(server, "remove-device-1") is None
    assert any(d["EdgeID"] == "remove-device-1" and d["Reason"] == "removed"
               for d in server.api("GET", "/api/edge/refused_devices").json())


def test_rotated_key_refuses_new_devices_with_the_old_one_and_onboarded_devices_stay(fleet):
    server = fleet["server"]
    old_key = onboarding_key(server)
    veteran = FleetAgent(fleet, old_key, "veteran-device")
    veteran_ep = connected_environment(server, "veteran-device")
    r = server.api("POST", "/api/edge/onboarding/rotate")
    assert r.status_code == 200 and r.json()["EdgeKey"] != old_key
    late = FleetAgent(fleet, old_key, "late-device")
    wait_until(lambda: "401 invalid edge onboarding key" in late.log(), timeout=20, message="the old key refused")
    assert environment_of(server, "late-device") is None
    FleetAgent(fleet, r.json()["EdgeKey"], "new-key-device")
    connected_environment(server, "new-key-device")
    # the veteran restarts with the old fleet key on its image: its own key still lets it in
    veteran.stop()
    wait_until(lambda: not environment_of(server, "veteran-device")["EdgeTunnelConnected"], timeout=15,
               message="the veteran to disconnect")
    FleetAgent(fleet, old_key, "veteran-device")
    assert connected_environment(server, "veteran-device")["Id"] == veteran_ep["Id"]


def test_per_environment_edge_keys_keep_working(fleet):
    server = fleet["server"]
    r = server.api("POST", "/api/endpoints", json={"Name": "classic-edge", "EndpointCreationType": 4,
                                                    "URL": server.https_url})
    assert r.status_code == 200, r.text
    FleetAgent(fleet, r.json()["EdgeKey"], "classic-device", site=fleet["site"])
    ep = connected_environment(server, "classic-device")
    assert ep["UserTrusted"] is True
    wait_until(lambda: docker_status(server, ep["Id"]) == 200, timeout=15, message="the classic engine")


def onboard_simulated_devices(server, prefix: str, count: int, tag_every_other: str = "") -> None:
    """What an agent's first call does (POST /api/endpoints/global-key), without the agent or its tunnel."""
    key = agent.EdgeKey.decode(onboarding_key(server))
    session = requests.Session()
    for n in range(count):
        r = session.post(server.https_url + agent.EDGE_GLOBAL_KEY_PATH, verify=False, timeout=30,
                         headers={agent.EDGE_SECRET_HEADER: key.secret, agent.EDGE_ID_HEADER: f"{prefix}-{n:03d}"},
                         json={"Name": f"{prefix}-{n:03d}", "TagNames": [tag_every_other] if n % 2 else []})
        assert r.status_code == 200, r.text


def test_fleet_list_filters_and_pages_on_the_server(fleet):
    server = fleet["server"]
    tag = server.api("POST", "/api/tags", json={"Name": "paging"}).json()
    onboard_simulated_devices(server, "sim", 60, tag_every_other="paging")
    tagged = server.api("GET", "/api/endpoints", params={"tagIds": tag["ID"], "start": 0, "limit": 10})
    assert tagged.headers["X-Total-Count"] == "30" and len(tagged.json()) == 10
    down_waiting = server.api("GET", "/api/endpoints", params={"status": "2", "edgeDeviceUntrusted": "true",
                                                               "search": "sim-", "limit": 100})
    assert down_waiting.headers["X-Total-Count"] == "60"
    page = server.api("GET", "/api/endpoints", params={"search": "sim-", "start": 50, "limit": 25}).json()
    assert [e["Name"] for e in page] == [f"sim-{n:03d}" for n in range(50, 60)]
    versions = server.api("GET", "/api/endpoints", params={"agentVersions": agent.AGENT_VERSION}).json()
    assert versions and all(e["Agent"]["Version"] == agent.AGENT_VERSION for e in versions)
    recent = server.api("GET", "/api/endpoints", params={"lastSeenAfter": int(time.time()) - 5}).json()
    assert recent and all(e["EdgeTunnelConnected"] or e["LastCheckInDate"] >= time.time() - 6 for e in recent)
    ids = [e["Id"] for e in down_waiting.json()]
    group = server.api("POST", "/api/endpoint_groups", json={"Name": "shop floor"}).json()
    assert bulk(server, "move", ids[:5], GroupId=group["Id"]).status_code == 200
    assert bulk(server, "tag", ids[:5], TagIds=[tag["ID"]]).status_code == 200
    moved = server.api("GET", "/api/endpoints", params={"groupIds": group["Id"], "tagIds": tag["ID"]})
    assert sorted(e["Id"] for e in moved.json()) == sorted(ids[:5])
    assert bulk(server, "move", ids[:1], GroupId=999).status_code == 400
    assert bulk(server, "remove", ids).status_code == 200
    assert server.api("GET", "/api/endpoints", params={"search": "sim-"}).headers["X-Total-Count"] == "0"


@pytest.mark.browser
def test_administrator_copies_the_key_sets_a_rule_and_approves_a_page_of_waiting_devices_in_the_browser(
        fleet, open_page):
    server = fleet["server"]
    onboard_simulated_devices(server, "ui-sim", 55)
    tab = open_page()
    page = tab.page
    test_ui.log_in(page, server)
    page.goto(server.url + "/#/edge/settings")
    assert page.locator("#fleet-key").inner_text().strip() == onboarding_key(server)
    page.get_by_label("Rule kind").select_option("edgeid")
    page.get_by_label("Rule value").fill("ui-kiosk-*")
    page.get_by_role("button", name="Add rule").click()
    page.locator("#rules").get_by_text("ui-kiosk-*").wait_for()
    assert {"Kind": "edgeid", "Value": "ui-kiosk-*"} in server.api("GET", "/api/edge/auto_approval").json()["Rules"]

    page.goto(server.url + "/#/edge/devices?trust=waiting&search=ui-sim")
    page.get_by_text("1–50 of 55", exact=True).wait_for()
    page.get_by_role("button", name="Next").click()
    page.get_by_text("51–55 of 55", exact=True).wait_for()
    page.get_by_label("Select this page").check()
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("1–50 of 50", exact=True).wait_for()  # the approved five left the waiting room
    trusted = server.api("GET", "/api/endpoints", params={"search": "ui-sim", "edgeDeviceUntrusted": "false"})
    assert sorted(e["Name"] for e in trusted.json()) == [f"ui-sim-{n:03d}" for n in range(50, 55)]
    page.get_by_label("Select this page").check()
    page.get_by_role("button", name="Reject").click()
    page.get_by_text("No edge device matches.").wait_for()
    refused = {d["EdgeID"] for d in server.api("GET", "/api/edge/refused_devices").json()}
    left = server.api("GET", "/api/endpoints", params={"search": "ui-sim"}).json()
    assert {f"ui-sim-{n:03d}" for n in range(50)} - refused == set(), ([e["Name"] for e in left], tab.failed_responses)
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": []})

    group = server.api("POST", "/api/edge_groups", json={"Name": "ui-line", "Dynamic": False}).json()
    write_offered_agent(fleet, "2.19.4-ui")
    page.goto(server.url + "/#/edge/updates")
    page.get_by_text("2.19.4-ui").first.wait_for()
    page.get_by_label("Name").fill("ui rollout")
    page.get_by_label("Edge groups").select_option(str(group["Id"]))
    page.get_by_label("Devices at a time").fill("3")
    page.get_by_role("button", name="Schedule the update").click()
    page.locator("[data-schedule]").get_by_text("ui rollout").wait_for()
    made = [s for s in server.api("GET", "/api/edge_update_schedules").json() if s["name"] == "ui rollout"]
    assert made and made[0]["groupIds"] == [group["Id"]] and made[0]["batchSize"] == 3
    # Interfaces other test runs on this machine add or remove make Chromium abort a request now and then.
    errors = [e for e in tab.console_errors if "ERR_NETWORK_CHANGED" not in e]
    assert not errors, errors


def write_offered_agent(fleet: dict, version: str, broken: bool = False) -> str:
    """The agent.py the server offers: this one declaring another version (and, broken, exiting at start)."""
    with open(os.path.join(HERE, "agent.py")) as f:
        text = f.read().replace(f'AGENT_VERSION = "{agent.AGENT_VERSION}"', f'AGENT_VERSION = "{version}"', 1)
    if broken:
        text = text.replace('if __name__ == "__main__":\n    sys.exit(main())', 'sys.exit("this agent.py is broken")')
    with open(fleet["offered"], "w") as f:
        f.write(text)
    return hashlib.sha256(text.encode()).hexdigest()


def schedule_states(server, schedule_id: int) -> dict[int, dict]:
    schedule = server.api("GET", f"/api/edge_update_schedules/{schedule_id}").json()
    return {int(k): v for k, v in schedule["devices"].items()}


def test_update_schedule_across_two_groups_updates_every_device_one_offline_when_it_returns_a_broken_one_rolls_back(
        fleet):
    server = fleet["server"]
    line_a = server.api("POST", "/api/edge_groups", json={"Name": "line-a", "Dynamic": False}).json()
    line_b = server.api("POST", "/api/edge_groups", json={"Name": "line-b", "Dynamic": False}).json()
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": [{"Kind": "edgeid", "Value": "upd-*"}]})
    key = onboarding_key(server)
    devices = {name: FleetAgent(fleet, key, name, site=fleet["site"] if name == "upd-a1" else None, own_copy=True,
                                groups=group) for name, group in (("upd-a1", "line-a"), ("upd-a2", "line-a"),
                                                                  ("upd-b1", "line-b"), ("upd-b2", "line-b"))}
    ids = {name: connected_environment(server, name)["Id"] for name in devices}
    devices["upd-b2"].stop()  # offline while the schedule runs
    wait_until(lambda: not environment_of(server, "upd-b2")["EdgeTunnelConnected"], timeout=15, message="b2 offline")

    token = make_standard_user(server)
    assert server.api("POST", "/api/edge_update_schedules", token=token,
                      json={"name": "x", "groupIds": [line_a["Id"]]}).status_code == 403
    new_digest = write_offered_agent(fleet, "2.19.4-fleet.1")
    assert server.api("GET", "/api/edge_update_schedules/agent_versions").json() == ["2.19.4-fleet.1"]
    r = server.api("POST", "/api/edge_update_schedules", json={
        "name": "fleet.1", "groupIds": [line_a["Id"], line_b["Id"]], "batchSize": 2, "rollbackTimeout": 6})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["version"] == "2.19.4-fleet.1" and first["digest"] == new_digest
    online = [ids[n] for n in ("upd-a1", "upd-a2", "upd-b1")]
    wait_until(lambda: all(schedule_states(server, first["id"])[i]["status"] == "updated" for i in online),
               timeout=60, message="the online devices to update")
    assert schedule_states(server, first["id"])[ids["upd-b2"]]["status"] == "pending"
    for name in ("upd-a1", "upd-a2", "upd-b1"):
        assert devices[name].running_digest() == new_digest
        assert environment_of(server, name)["Agent"]["Version"] == "2.19.4-fleet.1"
    # the offline device comes back and is updated then
    devices["upd-b2"] = FleetAgent(fleet, key, "upd-b2", own_copy=True, groups="line-b")
    wait_until(lambda: schedule_states(server, first["id"])[ids["upd-b2"]]["status"] == "updated", timeout=45,
               message="the returning device to update")
    assert devices["upd-b2"].running_digest() == new_digest
    assert server.api("GET", f"/api/edge_update_schedules/{first['id']}").json()["finished"]

    # a broken agent.py for line b: each device's watchdog puts fleet.1 back, which reports the rollback
    write_offered_agent(fleet, "2.19.4-broken", broken=True)
    broken = server.api("POST", "/api/edge_update_schedules", json={
        "name": "broken", "groupIds": [line_b["Id"]], "batchSize": 2, "rollbackTimeout": 6}).json()
    line_b_ids = [ids["upd-b1"], ids["upd-b2"]]
    wait_until(lambda: all(schedule_states(server, broken["id"])[i]["status"] == "rolled back" for i in line_b_ids),
               timeout=60, message="the broken update to roll back")
    states = schedule_states(server, broken["id"])
    assert all("did not reconnect within 6 s" in states[i]["reason"] for i in line_b_ids)
    for name in ("upd-b1", "upd-b2"):
        assert devices[name].running_digest() == new_digest
        ep = connected_environment(server, name)
        assert ep["Agent"]["Version"] == "2.19.4-fleet.1"
        wait_until(lambda: docker_status(server, ep["Id"]) == 200, timeout=15, message="the rolled-back engine")
    logs = server.api("GET", "/api/useractivity/logs", params={"limit": 1000}).json()["logs"]
    assert any(e["action"] == "schedule agent update 'broken' to version 2.19.4-broken" for e in logs)
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": []})


def test_single_approval_with_portainers_user_trusted_field_and_bad_onboarding_calls_are_refused(fleet):
    server = fleet["server"]
    key = agent.EdgeKey.decode(onboarding_key(server))
    url = server.https_url + agent.EDGE_GLOBAL_KEY_PATH
    headers = {agent.EDGE_SECRET_HEADER: key.secret, agent.EDGE_ID_HEADER: "single-1"}
    for bad_headers, body, status in (({**headers, agent.EDGE_ID_HEADER: ""}, {}, 400),
                                      ({**headers, agent.EDGE_SECRET_HEADER: "guess"}, {}, 401),
                                      (headers, {"TagNames": [1]}, 400), (headers, {"Name": ["x"]}, 400)):
        r = requests.post(url, headers=bad_headers, json=body, verify=False, timeout=30)
        assert r.status_code == status, (bad_headers, body, r.text)
    assert requests.post(server.url + agent.EDGE_GLOBAL_KEY_PATH, headers=headers, timeout=30).status_code == 403
    assert environment_of(server, "single-1") is None  # nothing half-made by the refused calls
    answer = requests.post(url, headers=headers, json={"Name": "single"}, verify=False, timeout=30).json()
    assert answer["UserTrusted"] is False and agent.EdgeKey.decode(answer["EdgeKey"]).endpoint_id == answer["endpointID"]
    r = server.api("PUT", f"/api/endpoints/{answer['endpointID']}", json={"UserTrusted": True})
    assert r.status_code == 200 and r.json()["UserTrusted"] is True
    # onboarding the same Edge ID again once trusted is refused: the device keeps the key it was given
    assert requests.post(url, headers=headers, json={}, verify=False, timeout=30).status_code == 409
    assert server.api("PUT", "/api/endpoints/1", json={"UserTrusted": False}).status_code == 400
    token = make_standard_user(server)
    assert server.api("PUT", f"/api/endpoints/{answer['endpointID']}", token=token,
                      json={"UserTrusted": False}).status_code == 403
    assert server.api("DELETE", f"/api/endpoints/{answer['endpointID']}").status_code == 204


def test_device_refuses_an_update_not_signed_by_the_server_it_pinned(fleet):
    server = fleet["server"]
    group = server.api("POST", "/api/edge_groups", json={"Name": "line-c", "Dynamic": False}).json()
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": [{"Kind": "edgeid", "Value": "pinned-*"}]})
    device = FleetAgent(fleet, onboarding_key(server), "pinned-1", own_copy=True, groups="line-c")
    ep = connected_environment(server, "pinned-1")
    pin = os.path.join(device.data, "state", "server-signing-key")
    assert open(pin).read() == agent.RequestSigner(agent.load_or_create_signing_key(
        os.path.join(server.data, "agent_signature.pem"))).public_key
    with open(pin, "w") as f:  # as if another server had onboarded it
        f.write("3059301306072a8648ce3d020106082a8648ce3d03010703420004" + "ab" * 64)
    before = device.running_digest()
    write_offered_agent(fleet, "2.19.4-unsigned")
    schedule = server.api("POST", "/api/edge_update_schedules", json={
        "name": "pinned", "groupIds": [group["Id"]], "rollbackTimeout": 6}).json()
    wait_until(lambda: schedule_states(server, schedule["id"])[ep["Id"]]["status"] == "failed", timeout=30,
               message="the device to refuse the update")
    assert "paired with another Portainer server" in schedule_states(server, schedule["id"])[ep["Id"]]["reason"]
    assert device.running_digest() == before and device.process.poll() is None
    server.api("PUT", "/api/edge/auto_approval", json={"Rules": []})
