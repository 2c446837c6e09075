"""Browser tests of the UI of environment groups and the routes that came with them: group pages and access, the
home page by group, removing several environments, edge disassociation, stack migration and swarm upload, the
edge stack editor, template files and service webhooks. A real server, the real engine, headless Chromium."""

from __future__ import annotations

import pytest

import conftest
import test_ui
from conftest import BUSYBOX, DOCKER_SOCKET, SLOT, TEST_LABEL, wait_until

pytestmark = pytest.mark.browser

# test_ui's browser and tab fixtures, shared rather than copied.
browser = test_ui.browser
open_page = test_ui.open_page
log_in = test_ui.log_in
PREFIX = f"ptpy-uigroups{SLOT}"
SWARM_HOST = test_ui.SWARM_HOST  # test_ui's swarm host number: both fixtures are per test, never up at once


def add_socket_environment(srv, name: str) -> dict:
    """One more environment on the same engine socket: enough for lists, groups and moves."""
    r = srv.api("POST", "/api/endpoints", json={"Name": name, "EndpointCreationType": 1, "URL": "unix://" + DOCKER_SOCKET})
    assert r.status_code == 200, r.text
    return r.json()


def group_ids_of(srv) -> dict[str, int]:
    return {ep["Name"]: ep["GroupId"] for ep in srv.api("GET", "/api/endpoints").json()}


def test_an_admin_makes_a_group_moves_an_environment_in_and_finds_it_under_the_group_on_home(fresh_server, open_page):
    srv = fresh_server()
    add_socket_environment(srv, "line-2")
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.locator("nav.side").get_by_role("link", name="Groups", exact=True).click()
    page.locator("#group-list tbody tr", has_text="Unassigned").wait_for()
    # Group 1 holds every environment without a group: it has no Remove button.
    assert page.locator("#group-list tbody tr", has_text="Unassigned").get_by_role("button", name="Remove").count() == 0
    page.get_by_label("Name").fill("factory floor")
    page.get_by_label("Description").fill("the machines of hall 3")
    page.locator("#f").get_by_label("line-2").check()
    page.get_by_role("button", name="Create group").click()
    row = page.locator("#group-list tbody tr", has_text="factory floor")
    row.wait_for()
    assert "line-2" in row.inner_text()
    assert group_ids_of(srv)["line-2"] != 1
    group = next(g for g in srv.api("GET", "/api/endpoint_groups").json() if g["Name"] == "factory floor")
    assert group["Description"] == "the machines of hall 3"
    tab.shot("groups")

    # Move "local" in from the group's page, and rename the group there.
    row.get_by_role("link", name="Edit").click()
    page.get_by_label("Move an environment into this group").select_option(label="local")
    page.get_by_role("button", name="Move into the group").click()
    page.locator("#group-members tr", has_text="local").wait_for()
    assert group_ids_of(srv)["local"] == group["Id"]
    page.get_by_label("Name").fill("hall 3")
    page.get_by_role("button", name="Save").click()
    page.locator("h2", has_text="Group hall 3").wait_for()
    assert srv.api("GET", f"/api/endpoint_groups/{group['Id']}").json()["Name"] == "hall 3"

    # Home shows both under the group's name; a third environment stays under "Unassigned".
    add_socket_environment(srv, "spare")
    page.locator("nav.side").get_by_role("link", name="Home").click()
    hall = page.locator(f'#env-list section[data-group="{group["Id"]}"]')
    hall.locator(".env", has_text="line-2").wait_for()
    assert hall.locator(".group-name").inner_text().startswith("hall 3")
    assert hall.locator(".env").count() == 2
    unassigned = page.locator('#env-list section[data-group="1"]')
    assert unassigned.locator(".group-name").inner_text().startswith("Unassigned")
    assert unassigned.locator(".env", has_text="spare").count() == 1

    # The group filter keeps only that group's environments, and stays in the address.
    page.get_by_label("Group", exact=True).select_option(label="Unassigned")
    hall.wait_for(state="detached")
    assert page.locator("#env-list .env").count() == 1
    assert page.url.endswith("#/home?group=1")
    page.reload()
    page.locator("#env-list .env", has_text="spare").wait_for()
    assert page.locator("#env-list .env").count() == 1
    page.get_by_label("Group", exact=True).select_option(label="All groups")
    hall.wait_for()

    # Taking an environment out of the group makes it unassigned again; the group can be removed.
    page.goto(srv.url + f"/#/groups/{group['Id']}")
    page.locator("#group-members tr", has_text="local").get_by_role("button", name="Take out of the group").click()
    page.locator("#group-members tr", has_text="local").wait_for(state="detached")
    assert group_ids_of(srv)["local"] == 1
    page.goto(srv.url + "/#/groups")
    page.get_by_role("button", name="Remove group hall 3").click()
    page.locator("#group-list tbody tr", has_text="hall 3").wait_for(state="detached")
    assert group_ids_of(srv)["line-2"] == 1
    assert not tab.console_errors, tab.console_errors


def test_an_admin_gives_a_user_access_to_a_group_and_the_user_sees_its_environments(fresh_server, open_page):
    srv = fresh_server()
    password = "dana's long password"
    user = srv.api("POST", "/api/users", json={"Username": "dana", "Password": password, "Role": 2}).json()
    group = srv.api("POST", "/api/endpoint_groups", json={"Name": "night shift", "Description": "", "AssociatedEndpoints": [1],
                                                          "TagIDs": []}).json()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/groups")
    page.locator("#group-list tbody tr", has_text="night shift").get_by_role("link", name="Access").click()
    page.locator("h2", has_text="Access to group night shift").wait_for()
    page.get_by_label("User or team").select_option(label="dana")
    page.get_by_label("Role", exact=True).select_option(label="Read-only user")
    page.get_by_role("button", name="Give access").click()
    page.locator("table tr", has_text="dana").wait_for()
    policies = srv.api("GET", f"/api/endpoint_groups/{group['Id']}").json()["UserAccessPolicies"]
    read_only = next(int(k) for k, v in srv.api("GET", "/api/ui/constants").json()["EnvironmentRoleNames"].items()
                     if v == "Read-only user")
    assert policies == {str(user["Id"]): {"RoleId": read_only}}
    assert srv.api("GET", "/api/endpoints/1").json()["UserAccessPolicies"] == {}

    page.get_by_role("button", name="Log out").click()
    page.locator("#login").wait_for()
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    section = page.locator(f'#env-list section[data-group="{group["Id"]}"]')
    section.locator(".env", has_text="local").wait_for()
    assert section.locator(".group-name").inner_text().startswith("night shift")
    assert page.get_by_role("button", name="Remove selected").count() == 0

    # Removing the access takes the environment away from her.
    page.get_by_role("button", name="Log out").click()
    page.locator("#login").wait_for()
    log_in(page, srv)
    page.goto(srv.url + f"/#/groups/{group['Id']}/access")
    page.locator("table tr", has_text="dana").get_by_role("button", name="Remove access").click()
    page.locator("table tr", has_text="dana").wait_for(state="detached")
    assert srv.api("GET", f"/api/endpoint_groups/{group['Id']}").json()["UserAccessPolicies"] == {}


def test_an_admin_removes_several_environments_at_once_and_reads_which_were_already_gone(fresh_server, open_page):
    srv = fresh_server()
    first, second, third = (add_socket_environment(srv, name) for name in ("old-a", "old-b", "old-c"))
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    remove = page.get_by_role("button", name="Remove selected")
    assert remove.is_disabled()
    page.get_by_label("Select old-a").check()
    page.get_by_label("Select old-b").check()
    page.get_by_role("button", name="Remove 2 selected").click()
    page.locator("#env-list .env", has_text="old-a").wait_for(state="detached")
    page.locator("#env-list .env", has_text="old-b").wait_for(state="detached")
    names = {ep["Name"] for ep in srv.api("GET", "/api/endpoints").json()}
    assert names == {"local", "old-c"}
    assert remove.is_disabled()

    # Someone else removed old-c meanwhile: the 207 answer names it, the others go.
    page.get_by_label("Select old-c").check()
    page.get_by_label("Select local").check()
    assert srv.api("DELETE", f"/api/endpoints/{third['Id']}").status_code == 204
    page.get_by_role("button", name="Remove 2 selected").click()
    page.locator("#env-errors", has_text="Not removed (no longer there): old-c").wait_for()
    page.locator("#env-list .env", has_text="local").wait_for(state="detached")
    assert srv.api("GET", "/api/endpoints").json() == []
    assert first["Id"] != second["Id"]


def test_an_admin_disassociates_an_edge_environment_from_its_agent(fresh_server, open_page):
    srv = fresh_server()
    r = srv.api("POST", "/api/endpoints", json={"Name": "kiosk", "EndpointCreationType": 4, "URL": srv.https_url})
    assert r.status_code == 200, r.text
    edge = r.json()
    assert srv.api("PUT", f"/api/endpoints/{edge['Id']}/association", json={"EdgeID": "kiosk-7"}).status_code == 200
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    card = page.locator("#env-list .env", has_text="kiosk")
    card.get_by_text("kiosk-7").wait_for()
    card.get_by_role("button", name="Disassociate").click()
    card.get_by_role("button", name="Disassociate").wait_for(state="detached")
    assert srv.api("GET", f"/api/endpoints/{edge['Id']}").json().get("EdgeID", "") == ""
    assert "(none yet)" in card.inner_text()

    # The same from the environment's own page.
    assert srv.api("PUT", f"/api/endpoints/{edge['Id']}/association", json={"EdgeID": "kiosk-8"}).status_code == 200
    page.goto(srv.url + f"/#/environments/{edge['Id']}/edit")
    page.get_by_text("its Edge ID is kiosk-8").wait_for()
    page.get_by_role("button", name="Disassociate").click()
    page.get_by_text("its Edge ID is (none yet)").wait_for()
    assert srv.api("GET", f"/api/endpoints/{edge['Id']}").json().get("EdgeID", "") == ""


def remove_stacks(srv) -> None:
    for stack in srv.api("GET", "/api/stacks").json():
        srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}")


def test_a_stack_uploaded_as_a_file_migrates_to_another_environment_under_a_new_name(fresh_server, engine, open_page, tmp_path):
    srv = fresh_server()
    second = add_socket_environment(srv, "second site")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(f"services:\n  web:\n    image: {BUSYBOX}\n    command: sleep 3600\n    labels:\n      {TEST_LABEL}: '1'\n")
    tab = open_page()
    page = tab.page
    try:
        log_in(page, srv)
        page.goto(srv.url + "/#/stacks/new")
        page.get_by_label("Name", exact=True).fill(f"{PREFIX}-web")
        page.get_by_label("Environment", exact=True).select_option(label="local")
        page.get_by_label("Upload a compose file").set_input_files(str(compose))
        page.get_by_role("button", name="Deploy the stack").click()
        page.locator("h2", has_text=f"Stack {PREFIX}-web").wait_for()
        stack = next(s for s in srv.api("GET", "/api/stacks").json() if s["Name"] == f"{PREFIX}-web")
        assert stack["EndpointId"] == 1
        assert "sleep 3600" in srv.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"]

        # The same engine is behind both environments: a new name keeps the two projects apart.
        page.get_by_label("Environment", exact=True).select_option(label="second site")
        page.get_by_label("New name (optional)").fill(f"{PREFIX}-moved")
        page.get_by_role("button", name="Migrate to…").click()
        page.locator("h2", has_text=f"Stack {PREFIX}-moved").wait_for()
        moved = srv.api("GET", f"/api/stacks/{stack['Id']}").json()
        assert (moved["EndpointId"], moved["Name"]) == (second["Id"], f"{PREFIX}-moved")
        wait_until(lambda: engine.containers.list(filters={"label": f"com.docker.compose.project={PREFIX}-moved"}),
                   message="the migrated stack's container")
        assert not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={PREFIX}-web"})
        assert not tab.console_errors, tab.console_errors
    finally:
        remove_stacks(srv)


def test_an_admin_edits_an_edge_stacks_compose_file_and_saves_a_new_version(fresh_server, open_page):
    srv = fresh_server()
    group = srv.api("POST", "/api/edge_groups", json={"Name": "shops", "Dynamic": False, "Endpoints": [], "TagIds": [],
                                                       "PartialMatch": False}).json()
    other = srv.api("POST", "/api/edge_groups", json={"Name": "depots", "Dynamic": False, "Endpoints": [], "TagIds": [],
                                                       "PartialMatch": False}).json()
    content = f"services:\n  web:\n    image: {BUSYBOX}\n    command: sleep 3600\n"
    r = srv.api("POST", "/api/edge_stacks", json={"Name": "till", "StackFileContent": content, "DeploymentType": 0,
                                                   "EdgeGroups": [group["Id"]]})
    assert r.status_code == 200, r.text
    stack = r.json()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/edge/stacks")
    page.get_by_role("link", name="till").click()
    editor = page.get_by_label("Compose file")
    editor.wait_for()
    assert editor.input_value() == content
    page.locator("main p.muted", has_text="Version 1").wait_for()
    editor.fill("services:\n  web:\n    image: [unclosed\n")
    page.get_by_role("button", name="Save and redeploy").click()
    page.locator("#err").wait_for()
    assert page.locator("#err").inner_text()
    assert srv.api("GET", f"/api/edge_stacks/{stack['Id']}/file").json()["StackFileContent"] == content

    changed = content.replace("sleep 3600", "sleep 7200")
    editor.fill(changed)
    page.get_by_label("Edge groups").select_option([str(group["Id"]), str(other["Id"])])
    page.get_by_role("button", name="Save and redeploy").click()
    page.locator("main p.muted", has_text="Version 2").wait_for()
    assert srv.api("GET", f"/api/edge_stacks/{stack['Id']}/file").json()["StackFileContent"] == changed
    saved = srv.api("GET", f"/api/edge_stacks/{stack['Id']}").json()
    assert sorted(saved["EdgeGroups"]) == sorted([group["Id"], other["Id"]])
    assert saved["Version"] == 2
    assert page.get_by_label("Compose file").input_value() == changed


def test_a_user_reads_a_stack_templates_compose_file_before_deploying_it(fresh_server, open_page):
    srv = fresh_server()
    templates = srv.api("GET", "/api/templates").json()["templates"]
    stack_template = next(t for t in templates if t["type"] != 1)
    container_template = next(t for t in templates if t["type"] == 1)
    expected = srv.api("POST", f"/api/templates/{stack_template['id']}/file").json()["FileContent"]
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.locator("nav.side").get_by_role("link", name="App templates").click()
    card = page.locator(".card", has=page.locator(f'form[data-key="t{stack_template["id"]}"]'))
    card.get_by_role("button", name="View file").click()
    shown = page.get_by_label(f"Compose file of {stack_template['title']}")
    shown.wait_for()
    assert shown.inner_text().strip() == expected.strip()
    card.get_by_role("button", name="Hide file").click()
    shown.wait_for(state="hidden")
    # A container template has no file to show.
    other = page.locator(".card", has=page.locator(f'form[data-key="t{container_template["id"]}"]'))
    assert other.get_by_role("button", name="View file").count() == 0
    assert not tab.failed_responses, tab.failed_responses


@pytest.fixture
def swarm_host(engine):
    """A one-node Swarm on an engine of its own (a network namespace host), running one service."""
    with conftest.one_node_swarm(engine, SWARM_HOST) as host:
        client = host.client()
        client.services.create(BUSYBOX, ["sleep", "3600"], name=f"{PREFIX}-service", labels={TEST_LABEL: "1"})
        yield host


def test_a_swarm_service_gets_a_webhook_and_a_swarm_stack_is_deployed_from_an_uploaded_file(
        fresh_server, open_page, swarm_host, tmp_path):
    srv = fresh_server()
    r = srv.api("POST", "/api/endpoints", json={"Name": "swarm site", "EndpointCreationType": 1,
                                                 "URL": f"unix://{swarm_host.socket}"})
    assert r.status_code == 200, r.text
    env_id = r.json()["Id"]
    service = swarm_host.client().services.get(f"{PREFIX}-service")
    tab = open_page()
    tab.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=srv.url)
    page = tab.page
    try:
        log_in(page, srv)
        page.goto(srv.url + f"/#/env/{env_id}/services")
        row = page.locator("#swarm-list tbody tr", has_text=f"{PREFIX}-service")
        row.wait_for()
        box = row.get_by_label(f"Webhook of {PREFIX}-service")
        assert not box.is_checked()
        box.check()
        url = row.locator(".webhook-url")
        url.wait_for()
        hooks = srv.api("GET", "/api/webhooks").json()
        assert [(h["ResourceId"], h["EndpointId"]) for h in hooks] == [(service.id, env_id)]
        assert url.inner_text() == f"{srv.url}/api/webhooks/{hooks[0]['Token']}"
        row.get_by_role("button", name=f"Copy the webhook URL of {PREFIX}-service").click()
        row.locator("[data-copy-webhook]", has_text="Copied").wait_for()
        assert page.evaluate("navigator.clipboard.readText()") == url.inner_text()
        # Drawn again (another visit): the existing webhook is found.
        page.reload()
        row.locator(".webhook-url").wait_for()
        assert row.get_by_label(f"Webhook of {PREFIX}-service").is_checked()
        row.get_by_label(f"Webhook of {PREFIX}-service").uncheck()
        row.locator(".webhook-url").wait_for(state="detached")
        assert srv.api("GET", "/api/webhooks").json() == []

        # A Swarm stack from an uploaded compose file.
        compose = tmp_path / "stack.yml"
        compose.write_text(f"services:\n  worker:\n    image: {BUSYBOX}\n    command: sleep 3600\n")
        page.goto(srv.url + "/#/stacks/new")
        page.get_by_label("Name", exact=True).fill(f"{PREFIX}-swarm")
        page.get_by_label("Environment", exact=True).select_option(label="swarm site")
        page.get_by_label("Type").select_option(label="Swarm")
        page.get_by_label("Upload a compose file").set_input_files(str(compose))
        page.get_by_role("button", name="Deploy the stack").click()
        page.locator("h2", has_text=f"Stack {PREFIX}-swarm").wait_for()
        stack = next(s for s in srv.api("GET", "/api/stacks").json() if s["Name"] == f"{PREFIX}-swarm")
        assert (stack["EndpointId"], stack["Type"]) == (env_id, 1)
        wait_until(lambda: swarm_host.client().services.list(filters={"name": f"{PREFIX}-swarm_worker"}),
                   message="the stack's service")
        assert not tab.console_errors, tab.console_errors
    finally:
        remove_stacks(srv)
