"""Edge fleets: devices imaged once with one onboarding key make their own environments, wait in the waiting room
until an administrator (or an auto-approval rule) trusts them, and are refused once rejected or removed.

Edge agents are real `agent.py` processes; some run on a site behind NAT (a network namespace that drops every
inbound connection) and reach the server only through the tunnel they dial. Their Docker engine is this machine's.
"""
from __future__ import annotations

import os
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
    host = make_namespace_host(16)
    subprocess.run(["ip", "netns", "exec", host.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                    "NEW", "-j", "DROP"], check=True)
    yield host
    remove_namespace_host(host.name, host.name.replace("node", "veth"), host.root)


@pytest.fixture(scope="module")
def fleet(fleet_site, workdir):
    server = start_server(os.path.join(workdir, "fleet-data"), "--edge-heartbeat", "1",
                          bind_host=fleet_site.host_address)
    agents: list[FleetAgent] = []
    yield {"server": server, "agents": agents, "site": fleet_site, "workdir": workdir}
    for device in agents:
        device.stop()
    server.stop()


class FleetAgent:
    """One `python agent.py` in edge mode, imaged with the fleet's key; on the NAT site or on this machine."""

    def __init__(self, fleet: dict, key: str, edge_id: str, site=None, **announced: str):
        self.edge_id = edge_id
        self.data = os.path.join(fleet["workdir"], f"device-{edge_id}")
        self.log_path = self.data + ".log"
        env = {**os.environ, **FAST_AGENT, "EDGE": "1", "EDGE_KEY": key, "EDGE_ID": edge_id, "DOCKER_HOST": ENGINE,
               "EDGE_DATA": self.data, **{f"EDGE_{k.upper()}": v for k, v in announced.items()}}
        argv = [sys.executable, os.path.join(HERE, "agent.py")]
        log = open(self.log_path, "ab")
        self.process = (site.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT) if site else
                        subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        fleet["agents"].append(self)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


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
    assert not tab.console_errors, tab.console_errors
