"""Browser tests of the Swarm pages on a real one-node Swarm (a namespace host's engine, never the shared one):
a service created from the form, scaled, rolled out to a new image and back, its live logs, a drained node, and
configs and secrets made and removed. A real server, headless Chromium; screenshots go to docs/screenshots/."""

from __future__ import annotations

import base64
import contextlib

import docker
import pytest

import conftest
import test_ui
import test_ui_motd
from conftest import BUSYBOX, SLOT, TEST_LABEL, wait_until

pytestmark = pytest.mark.browser

browser = test_ui.browser
open_page = test_ui.open_page
log_in = test_ui.log_in

SWARM_UI_HOST = 16  # conftest.NAMESPACE_HOSTS
PREFIX = f"ptpy-sw{SLOT}"
SECOND_TAG = f"{PREFIX}-busybox:v2"  # busybox:local under a second name: a new image for the rollout


@pytest.fixture(scope="module")
def swarm_host(engine):
    with conftest.one_node_swarm(engine, SWARM_UI_HOST) as host:
        host.client().images.get(BUSYBOX).tag(SECOND_TAG)
        yield host


def add_swarm_environment(srv, host) -> int:
    r = srv.api("POST", "/api/endpoints", json={"Name": "swarm", "EndpointCreationType": 1, "URL": f"unix://{host.socket}"})
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def running_tasks(client: docker.DockerClient, service: str) -> list[dict]:
    return [t for t in client.api.tasks(filters={"service": service, "desired-state": "running"})
            if t["Status"]["State"] == "running"]


def page_errors(tab) -> list[str]:
    """What went wrong in the page's scripts; a refused call the page shows is the browser's note, not an error."""
    return [e for e in tab.console_errors if "Failed to load resource" not in e]


def add_row(page, editor: str, button: str):
    page.locator(editor).get_by_role("button", name=button).click()
    return page.locator(f"{editor} .pair").last


def wait_for_rollout(page, image: str, replicas: int) -> None:
    """The rollout panel says done, with every slot's task running `image`, the current spec."""
    def finished():
        rows = page.locator("#rollout-tasks tr").all_inner_texts()
        return (page.locator("#rollout").get_attribute("data-done") == "yes" and len(rows) == replicas
                and all(f"{image} current" in row for row in rows)
                and page.locator("#rollout-count").inner_text().startswith(f"{replicas} of {replicas} tasks run"))
    wait_until(finished, timeout=90, interval=0.3, message=f"the rollout of {image} to {replicas} task(s)")


def test_an_admin_runs_a_service_from_the_form_scales_rolls_out_rolls_back_reads_logs_and_drains_the_node(
        fresh_server, open_page, swarm_host):
    srv = fresh_server()
    env = add_swarm_environment(srv, swarm_host)
    client = swarm_host.client()
    tab = open_page()
    page = tab.page
    log_in(page, srv)

    # A config and a secret first, from the forms, for the service to mount.
    page.goto(f"{srv.url}/#/env/{env}/configs")
    page.get_by_role("link", name="Create config").click()
    page.locator("#d-name").fill(f"{PREFIX}-config")
    page.locator("#d-text").fill("greeting=hello from a config\n")
    add_row(page, "#d-labels", "+ Add label").get_by_placeholder("label name").fill(TEST_LABEL)
    page.get_by_role("button", name="Create the config").click()
    page.locator("#data-content", has_text="greeting=hello from a config").wait_for()
    tab.shot("swarm-config")
    secret_text = "hunter2-never-shown"
    page.goto(f"{srv.url}/#/env/{env}/secrets/new")
    page.locator("#d-name").fill(f"{PREFIX}-secret")
    page.get_by_label("From a file").check()  # a secret from a file this time
    page.locator("#d-file").set_input_files({"name": "app-secret.txt", "mimeType": "text/plain",
                                             "buffer": secret_text.encode()})
    page.get_by_role("button", name="Create the secret").click()
    page.locator("#data-content", has_text="never shown").wait_for()
    assert secret_text not in page.content()
    page.locator("summary", has_text="Inspect").click()
    assert secret_text not in page.content() and base64.b64encode(secret_text.encode()).decode() not in page.content()
    tab.shot("swarm-secret")

    # The service, from the form: command, env, a tmpfs mount, the config and secret, placement, resources,
    # restart policy, a quick update and rollback config, a label.
    page.goto(f"{srv.url}/#/env/{env}/services")
    page.get_by_role("link", name="Create service").click()
    name = f"{PREFIX}-web"
    page.locator("#s-name").fill(name)
    page.locator("#s-image").fill(BUSYBOX)
    # The trap: a shell as PID 1 ignores SIGTERM, and every replaced task would wait out its 10 s grace period.
    page.locator("#s-args").fill("sh -c 'trap \"exit 0\" TERM; while true; do echo \"tick $GREETING $(cat /run/secrets/app-secret | wc -c)\"; sleep 1; done'")
    row = add_row(page, "#s-env", "+ Add variable")
    row.locator("[data-part='0']").fill("GREETING")
    row.locator("[data-part='1']").fill("from-env")
    row = add_row(page, "#s-mounts", "+ Add a mount")
    row.locator("[data-part='0']").select_option("tmpfs")
    row.locator("[data-part='2']").fill("/scratch")
    row = add_row(page, "#s-configs", "+ Add a config")
    row.locator("[data-part='1']").fill("/etc/app.conf")
    row = add_row(page, "#s-secrets", "+ Add a secret")
    row.locator("[data-part='1']").fill("app-secret")
    add_row(page, "#s-labels", "+ Add label").get_by_placeholder("label name").fill(TEST_LABEL)
    page.locator("summary", has_text="Placement").click()
    page.locator("#s-constraints").fill("node.role==manager")
    page.locator("summary", has_text="Resources").click()
    page.locator("#s-limit-memory").fill("64M")
    page.locator("summary", has_text="Restart policy").click()
    page.locator("#s-restart").select_option("any")
    page.locator("#s-restart-delay").fill("1s")
    page.locator("summary", has_text="Update config").click()
    page.locator("#s-update-parallelism").fill("1")
    page.locator("#s-update-monitor").fill("1s")
    page.locator("#s-update-delay").fill("1x")  # a mistake: shown at its input, nothing sent
    page.get_by_role("button", name="Create the service").click()
    page.locator("#s-update-delay + .field-error", has_text="not a duration").wait_for()
    assert not client.services.list(filters={"name": name})
    page.locator("#s-update-delay").fill("")
    page.locator("summary", has_text="Rollback config").click()
    page.locator("#s-rollback-parallelism").fill("0")
    page.locator("#s-rollback-monitor").fill("1s")
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("swarm-service-create")
    page.get_by_role("button", name="Create the service").click()
    page.locator(".toolbar h2", has_text=name).wait_for()
    spec = client.services.list(filters={"name": name})[0].attrs["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Env"] == ["GREETING=from-env"]
    assert container["Mounts"] == [{"Type": "tmpfs", "Target": "/scratch"}]
    assert [c["ConfigName"] for c in container["Configs"]] == [f"{PREFIX}-config"]
    assert container["Secrets"][0]["File"]["Name"] == "app-secret"
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==manager"]
    assert spec["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"] == 64 * 1024 * 1024
    assert spec["UpdateConfig"]["Monitor"] == 10**9 and spec["RollbackConfig"]["Parallelism"] == 0
    assert spec["Labels"][TEST_LABEL] == ""
    wait_for_rollout(page, BUSYBOX, 1)

    # Scale to 3: three running tasks, in the page and on the engine.
    page.locator("#svc-replicas").fill("3")
    page.get_by_role("button", name="Scale").click()
    page.locator("#svc-mode", has_text="replicated 3").wait_for()
    wait_for_rollout(page, BUSYBOX, 3)
    wait_until(lambda: len(running_tasks(client, name)) == 3, timeout=60, message="3 running tasks")
    page.get_by_role("link", name="Tasks", exact=True).click()
    page.locator("#tasks tbody tr", has_text="running").nth(2).wait_for()
    assert page.locator("#tasks tbody tr", has_text="running").count() == 3

    # A new image: the rollout replaces the tasks one at a time, then reports done.
    page.get_by_role("link", name="Overview").click()
    page.locator("#svc-image").fill(SECOND_TAG)
    page.get_by_role("button", name="Roll out").click()
    wait_until(lambda: "previous" in page.locator("#rollout-tasks").inner_text() and SECOND_TAG in
               page.locator("#rollout-tasks").inner_text(), timeout=30, message="the rollout to be halfway")
    tab.shot("swarm-service-rollout")
    wait_for_rollout(page, SECOND_TAG, 3)
    assert page.locator("#rollout-state").inner_text() in ("completed", "updating")  # done: every task is current
    wait_until(lambda: client.services.get(name).attrs.get("UpdateStatus", {}).get("State") == "completed",
               timeout=60, message="the engine to report the update completed")
    assert {t["Spec"]["ContainerSpec"]["Image"] for t in running_tasks(client, name)} == {SECOND_TAG}

    # Roll back: the previous image again on every task.
    page.get_by_role("button", name="Roll back").click()
    page.locator("#rollout-state", has_text="roll").wait_for()
    wait_for_rollout(page, BUSYBOX, 3)
    wait_until(lambda: {t["Spec"]["ContainerSpec"]["Image"] for t in running_tasks(client, name)} == {BUSYBOX}
               and len(running_tasks(client, name)) == 3, timeout=90, message="the rollback to finish")
    assert client.services.get(name).attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == BUSYBOX

    # Force update: every task replaced, same spec otherwise.
    page.get_by_role("button", name="Force update").click()
    wait_until(lambda: client.services.get(name).attrs["Spec"]["TaskTemplate"].get("ForceUpdate") == 1,
               message="the forced update to be sent")
    wait_for_rollout(page, BUSYBOX, 3)

    # Its logs, merged across the three tasks, live, each line tagged with its task; env and secret reached it.
    page.get_by_role("link", name="Logs").click()
    logs = page.locator("#logs")
    for slot in (1, 2, 3):
        logs.locator("div", has_text=f"{name}.{slot} tick from-env {len(secret_text)}").first.wait_for(timeout=30000)
    before = page.locator("#logs > div").count()
    wait_until(lambda: page.locator("#logs > div").count() > before, timeout=15, message="new lines to arrive")
    page.locator("#log-search").fill(f"{name}.2")
    wait_until(lambda: all(f"{name}.2" in t for t in page.locator("#logs > div").all_inner_texts()), timeout=5,
               message="the filter to keep one task's lines")
    page.locator("#log-search").fill("")
    tab.shot("swarm-service-logs")

    # The removal of a config in use is refused by the engine, and the page says why.
    config_id = client.configs.list(filters={"name": f"{PREFIX}-config"})[0].id
    page.goto(f"{srv.url}/#/env/{env}/configs/{config_id}")
    page.locator("#data-content").wait_for()
    assert page.locator("dd a", has_text=name).count() == 1  # used by the service
    page.get_by_role("button", name="Remove").click()
    page.locator("#data-error", has_text="in use").wait_for()

    # Drain the node: its tasks leave it; with no other node they wait, pending.
    page.goto(f"{srv.url}/#/env/{env}/nodes")
    page.locator("#swarm-list tbody a").first.click()
    # The engine refuses to demote the last manager; the page says why.
    page.get_by_role("button", name="Demote to worker").click()
    page.locator("#node-error", has_text="last manager").wait_for()
    page.locator("#node-avail").select_option("drain")
    label = add_row(page, "#node-labels", "+ Add label")
    label.get_by_placeholder("label name").fill("zone")
    label.get_by_placeholder("value").fill("a")
    page.get_by_role("button", name="Save").click()
    page.locator("#node-availability", has_text="drain").wait_for()
    assert client.nodes.list()[0].attrs["Spec"]["Availability"] == "drain"
    assert client.nodes.list()[0].attrs["Spec"]["Labels"] == {"zone": "a"}
    wait_until(lambda: not running_tasks(client, name), timeout=60, message="the tasks to leave the drained node")
    wait_until(lambda: page.locator("#node-tasks tbody tr", has_text="running").count() == 0, timeout=15,
               message="the node page to show no running task")
    tab.shot("swarm-node")
    page.goto(f"{srv.url}/#/env/{env}/services/{client.services.get(name).id}/tasks")
    wait_until(lambda: page.locator("#tasks tbody tr", has_text="pending").count() == 3, timeout=30,
               message="three pending tasks")

    # A phone in the dark theme: the service page fits the screen.
    phone = open_page(width=390, height=844, dark=True)
    log_in(phone.page, srv)
    service_id, node_id = client.services.get(name).id, client.nodes.list()[0].id
    for path, ready in ((f"services/{service_id}/logs", "#logs > div"), (f"services/{service_id}/tasks", "#tasks tbody tr"),
                        ("services/new", "#s-image"), (f"nodes/{node_id}", "#node-tasks tbody tr"),
                        (f"configs/{config_id}", "#data-content"), (f"services/{service_id}", "#rollout-tasks tr")):
        phone.page.goto(f"{srv.url}/#/env/{env}/{path}")
        phone.page.locator(ready).first.wait_for()
        assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
    assert phone.page.evaluate("document.documentElement.dataset.theme") == "dark"
    phone.shot("phone-dark-swarm-service")

    # Active again; then the service, the config and the secret go, from their pages.
    page.goto(f"{srv.url}/#/env/{env}/nodes/{client.nodes.list()[0].id}")
    page.locator("#node-avail").select_option("active")
    page.get_by_role("button", name="Save").click()
    page.locator("#node-availability", has_text="active").wait_for()
    page.goto(f"{srv.url}/#/env/{env}/services/{client.services.get(name).id}")
    # exactly "Remove": until the service page is drawn, the node page's label row shows "Remove this row"
    page.get_by_role("button", name="Remove", exact=True).click()
    page.locator("#swarm-list").wait_for()
    wait_until(lambda: not client.services.list(filters={"name": name}), message="the service to go")
    for kind in ("configs", "secrets"):
        page.goto(f"{srv.url}/#/env/{env}/{kind}")
        page.locator("#swarm-list tbody a", has_text=f"{PREFIX}-").click()
        page.get_by_role("button", name="Remove").click()
        page.locator("#swarm-list").wait_for()
        wait_until(lambda kind=kind: not getattr(client, kind).list(filters={"name": PREFIX}),
                   timeout=20, message=f"the {kind} to go")
    assert page_errors(tab) == [] and page_errors(phone) == []


def test_a_standard_user_sees_the_proxys_refusals_and_cannot_change_nodes(fresh_server, open_page, swarm_host):
    srv = fresh_server()
    env = add_swarm_environment(srv, swarm_host)
    password = "erin's long password"
    user = srv.api("POST", "/api/users", json={"Username": "erin", "Password": password, "Role": 2}).json()
    assert srv.api("PUT", f"/api/endpoints/{env}",
                   json={"UserAccessPolicies": {str(user["Id"]): {"RoleId": 0}}}).status_code == 200
    client = swarm_host.client()
    tab = open_page()
    page = tab.page
    test_ui_motd.log_in_as(page, srv, "erin", password)

    # A bind mount is refused by the proxy for a standard user: the message is shown at the mount's input.
    page.goto(f"{srv.url}/#/env/{env}/services/new")
    name = f"{PREFIX}-erin"
    page.locator("#s-name").fill(name)
    page.locator("#s-image").fill(BUSYBOX)
    page.locator("#s-args").fill("sleep 3600")
    row = add_row(page, "#s-mounts", "+ Add a mount")
    row.locator("[data-part='0']").select_option("bind")
    row.locator("[data-part='1']").fill("/etc")
    row.locator("[data-part='2']").fill("/host-etc")
    page.get_by_role("button", name="Create the service").click()
    page.locator(".field-error", has_text="not allowed for non-administrators").wait_for()
    assert not client.services.list(filters={"name": name})
    try:
        # Without it the service is theirs: they scale it, and the engine holds it with their ownership label.
        row.get_by_role("button", name="Remove this row").click()
        page.get_by_role("button", name="Create the service").click()
        page.locator(".toolbar h2", has_text=name).wait_for()
        page.locator("#svc-replicas").fill("2")
        page.get_by_role("button", name="Scale").click()
        page.locator("#svc-mode", has_text="replicated 2").wait_for()
        assert client.services.get(name).attrs["Spec"]["Labels"]["io.portainer.accesscontrol.users"] == str(user["Id"])

        # Nodes: no control for them (the server says they may not change one); the proxy refuses a change sent anyway.
        me = srv.api("GET", "/api/users/me", token=srv.login("erin", password)).json()
        assert "DockerNodeUpdate" not in me["EndpointAuthorizations"][str(env)], me
        page.goto(f"{srv.url}/#/env/{env}/nodes/{client.nodes.list()[0].id}")
        page.get_by_text("Only administrators of this environment change a node").wait_for()
        page.locator("#node-scheduling", has_text="active: takes new tasks").wait_for()
        assert page.locator("#node-avail").count() == 0 and page.get_by_role("button", name="Save").count() == 0
        assert page.get_by_role("button", name="Demote to worker").count() == 0
        assert page.get_by_role("button", name="Promote to manager").count() == 0
        node = client.nodes.list()[0].attrs
        refused = srv.api("POST", f"/api/endpoints/{env}/docker/nodes/{node['ID']}/update?version={node['Version']['Index']}",
                          token=srv.login("erin", password), json={**node["Spec"], "Availability": "drain"})
        assert refused.status_code == 403 and "reserved for administrators" in refused.json()["message"]
        assert client.nodes.list()[0].attrs["Spec"]["Availability"] == "active"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.services.get(name).remove()
    assert page_errors(tab) == []



def test_an_environment_administrator_sees_and_uses_the_node_controls_that_others_do_not_get(
        fresh_server, open_page, swarm_host):
    srv = fresh_server()
    env = add_swarm_environment(srv, swarm_host)
    users = {}
    for username, role_id in (("frank", 1), ("helen", 3)):  # environment administrator, helpdesk
        password = f"{username}'s long password"
        user = srv.api("POST", "/api/users", json={"Username": username, "Password": password, "Role": 2}).json()
        users[username] = (user["Id"], password, role_id)
    assert srv.api("PUT", f"/api/endpoints/{env}", json={"UserAccessPolicies": {
        str(uid): {"RoleId": role_id} for uid, _, role_id in users.values()}}).status_code == 200
    # What the UI reads: each user's authorizations on the environment, by Portainer's names, from the proxy's rules.
    def authorizations(username):
        token = srv.login(username, users[username][1])
        return srv.api("GET", "/api/users/me", token=token).json()["EndpointAuthorizations"]
    assert authorizations("frank") == {str(env): {"DockerNodeUpdate": True, "DockerNodeDelete": True,
                                                  "EndpointResourcesAccess": True}}
    assert authorizations("helen") == {str(env): {"EndpointResourcesAccess": True}}
    assert srv.api("GET", "/api/users/me").json()["EndpointAuthorizations"] == {}  # an administrator holds them all

    client = swarm_host.client()
    node_id = client.nodes.list()[0].id
    tab = open_page()
    page = tab.page
    test_ui_motd.log_in_as(page, srv, "frank", users["frank"][1])
    try:
        page.goto(f"{srv.url}/#/env/{env}/nodes/{node_id}")
        page.get_by_role("button", name="Demote to worker").wait_for()
        page.locator("#node-avail").select_option("pause")
        page.get_by_role("button", name="Save").click()
        page.locator("#node-availability", has_text="pause").wait_for()
        assert client.nodes.get(node_id).attrs["Spec"]["Availability"] == "pause"
        page.locator("#node-avail").select_option("active")
        page.get_by_role("button", name="Save").click()
        page.locator("#node-availability", has_text="active").wait_for()
        assert client.nodes.get(node_id).attrs["Spec"]["Availability"] == "active"
        # Helpdesk sees the node, without controls.
        test_ui_motd.log_in_as(page, srv, "helen", users["helen"][1])
        page.goto(f"{srv.url}/#/env/{env}/nodes/{node_id}")
        page.locator("#node-scheduling", has_text="active").wait_for()
        assert page.locator("#node-avail").count() == 0
    finally:
        node = client.nodes.get(node_id)
        if node.attrs["Spec"]["Availability"] != "active":
            node.update({**node.attrs["Spec"], "Availability": "active"})
    assert page_errors(tab) == []
