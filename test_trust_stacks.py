"""Stacks have owners (issue 13, item 6): Portainer's resource control of type 6 on every stack, so a standard user
sees, reads and changes only their own stacks (or those shared with them), sees a stack's env only when they may
manage it, and cannot reach another user's volume or network through `external: true` in a compose file.

Driven as users drive it: two standard users and an administrator over HTTP, against the real engine."""
from __future__ import annotations

import os
import textwrap
import time

import docker
import pytest
import requests

import conftest
from conftest import ADMIN_PASSWORD, BUSYBOX, SLOT, TEST_LABEL, one_node_swarm

PREFIX = f"ptpy{SLOT}tr"
STACK_RESOURCE_CONTROL = 6


def app_stack(password_variable: str = "PASSWORD") -> str:
    """A one-service stack whose container gets a secret from the stack's env, with a volume of its own."""
    return textwrap.dedent(f"""\
        services:
          app:
            image: {BUSYBOX}
            command: sleep 3600
            environment:
              PASSWORD: ${{{password_variable}}}
            volumes: [data:/data]
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        volumes:
          data:
            labels: {{"{TEST_LABEL}": "1"}}
        """)


def stack_using(kind: str, key: str, declaration: str) -> str:
    """A stack whose service uses a volume or network declared at the top level as given."""
    use = f"volumes: [{key}:/data]" if kind == "volumes" else f"networks: [{key}]"
    return textwrap.dedent(f"""\
        services:
          app:
            image: {BUSYBOX}
            command: sleep 3600
            {use}
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
        {kind}:
          {key}: {declaration}
        """)


def proxy(server, method: str, path: str, key: str, **kwargs) -> requests.Response:
    return requests.request(method, f"{server.url}/api/endpoints/1/docker/v1.41{path}",
                            headers={"X-API-Key": key}, timeout=60, **kwargs)


def deploy(server, name: str, content: str, token: str | None = None, env: list | None = None,
           endpoint_id: int = 1) -> requests.Response:
    return server.api("POST", f"/api/stacks/create/standalone/string?endpointId={endpoint_id}", token=token,
                      json={"Name": name, "StackFileContent": content, "Env": env or []})


def listed_names(server, token: str | None = None) -> set[str]:
    r = server.api("GET", "/api/stacks", token=token)
    assert r.status_code == 200, r.text
    return {s["Name"] for s in r.json()}


def make_team_of(server, user_id: int) -> int:
    r = server.api("POST", "/api/teams", json={"Name": f"{PREFIX}team-{time.monotonic_ns() % 10**9}"})
    assert r.status_code == 200, r.text
    team_id = r.json()["Id"]
    r = server.api("POST", "/api/team_memberships", json={"UserID": user_id, "TeamID": team_id, "Role": 2})
    assert r.status_code == 200, r.text
    return team_id


def remove_stacks_and_leftovers(server, engine: docker.DockerClient, prefix: str) -> None:
    for stack in server.api("GET", "/api/stacks").json():
        if stack["Name"].startswith(prefix):
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}")
    for container in engine.containers.list(all=True, filters={"label": TEST_LABEL}):
        if container.labels.get("com.docker.compose.project", "").startswith(prefix):
            container.remove(force=True)
    for network in engine.networks.list():
        if network.name.startswith(prefix):
            network.remove()
    for volume in engine.volumes.list():
        if volume.name.startswith(prefix):
            volume.remove(force=True)


@pytest.fixture
def two_users(server, engine, make_user, request):
    """Users A and B, standard users on environment 1 where standard users may manage stacks; a stack name
    prefix of the test's own, with nothing of it left before or after."""
    prefix = f"{PREFIX}{abs(hash(request.node.name)) % 10**6}"
    remove_stacks_and_leftovers(server, engine, prefix)
    r = server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": True}})
    assert r.status_code == 200, r.text
    yield prefix, make_user(), make_user()
    server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})
    remove_stacks_and_leftovers(server, engine, prefix)


@pytest.fixture
def stack_of_a(server, two_users):
    """User A's stack, deployed with PASSWORD in its env."""
    prefix, (a_id, a_token, a_key), user_b = two_users
    name = f"{prefix}a"
    r = deploy(server, name, app_stack(), token=a_token, env=[{"name": "PASSWORD", "value": "a-secret"}])
    assert r.status_code == 200, r.text
    return r.json(), (a_id, a_token, a_key), user_b


def test_standard_user_cannot_see_another_users_stack_or_its_env(server, stack_of_a):
    stack, (a_id, a_token, _), (_, b_token, _) = stack_of_a
    control = stack["ResourceControl"]
    assert control["Type"] == STACK_RESOURCE_CONTROL and control["ResourceId"] == f"1_{stack['Name']}"
    assert [a["UserId"] for a in control["UserAccesses"]] == [a_id] and not control["AdministratorsOnly"]
    mine = next(s for s in server.api("GET", "/api/stacks", token=a_token).json() if s["Id"] == stack["Id"])
    assert mine["Env"] == [{"name": "PASSWORD", "value": "a-secret"}]
    assert mine["ResourceControl"]["Id"] == control["Id"]

    assert stack["Name"] not in listed_names(server, b_token)
    for path in ("", "/file", "/services", "/images_status"):
        r = server.api("GET", f"/api/stacks/{stack['Id']}{path}", token=b_token)
        assert r.status_code == 403, (path, r.text)
        assert "a-secret" not in r.text and "access denied to stack" in r.json()["message"]
    r = server.api("GET", f"/api/stacks/{stack['Id']}/file", token=a_token)
    assert r.status_code == 200 and "PASSWORD" in r.json()["StackFileContent"]


def test_standard_user_cannot_update_stop_start_or_delete_another_users_stack(server, engine, stack_of_a):
    stack, (_, a_token, a_key), (_, b_token, _) = stack_of_a
    at = f"/api/stacks/{stack['Id']}"
    r = server.api("PUT", f"{at}?endpointId=1", token=b_token,
                   json={"StackFileContent": app_stack(), "Env": [{"name": "PASSWORD", "value": "b-was-here"}]})
    assert r.status_code == 403, r.text
    for action in ("stop", "start"):
        assert server.api("POST", f"{at}/{action}?endpointId=1", token=b_token).status_code == 403
    assert server.api("DELETE", f"{at}?endpointId=1", token=b_token).status_code == 403
    container = engine.containers.get(f"{stack['Name']}_app_1")
    assert container.status == "running" and "PASSWORD=a-secret" in container.attrs["Config"]["Env"]

    r = server.api("PUT", f"{at}?endpointId=1", token=a_token,
                   json={"StackFileContent": app_stack(), "Env": [{"name": "PASSWORD", "value": "a-new-secret"}]})
    assert r.status_code == 200, r.text
    assert r.json()["Env"] == [{"name": "PASSWORD", "value": "a-new-secret"}]
    assert server.api("POST", f"{at}/stop?endpointId=1", token=a_token).status_code == 200
    assert server.api("POST", f"{at}/start?endpointId=1", token=a_token).status_code == 200
    container = engine.containers.get(f"{stack['Name']}_app_1")
    assert "PASSWORD=a-new-secret" in container.attrs["Config"]["Env"]
    assert container.id in proxy(server, "GET", "/containers/json", a_key).text
    assert server.api("DELETE", f"{at}?endpointId=1", token=a_token).status_code == 204
    assert stack["Name"] not in listed_names(server)
    controls = server.api("GET", "/api/resource_controls").json()
    assert all(rc["ResourceId"] != f"1_{stack['Name']}" for rc in controls)


def test_standard_user_cannot_use_another_users_volume_or_network_in_their_stack(server, engine, two_users):
    prefix, (_, _, a_key), (_, b_token, b_key) = two_users
    a_volume, a_network, b_volume = f"{prefix}-a-data", f"{prefix}-a-net", f"{prefix}-b-data"
    assert proxy(server, "POST", "/volumes/create", a_key,
                 json={"Name": a_volume, "Labels": {TEST_LABEL: "1"}}).status_code == 201
    assert proxy(server, "POST", "/networks/create", a_key,
                 json={"Name": a_network, "Labels": {TEST_LABEL: "1"}}).status_code == 201
    assert proxy(server, "POST", "/volumes/create", b_key,
                 json={"Name": b_volume, "Labels": {TEST_LABEL: "1"}}).status_code == 201

    attempts = [("volumes", f"{{external: true, name: {a_volume}}}", a_volume),
                ("volumes", f"{{name: {a_volume}}}", a_volume),  # not external, but the same volume by its name
                ("networks", f"{{external: true, name: {a_network}}}", a_network)]
    for number, (kind, declaration, victim) in enumerate(attempts):
        name = f"{prefix}b{number}"
        r = deploy(server, name, stack_using(kind, "stolen", declaration), token=b_token)
        assert r.status_code == 403, (declaration, r.text)
        assert victim in r.json()["message"]
        assert engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"}) == []
        assert name not in listed_names(server)
    a_volume_now = engine.volumes.get(a_volume)
    assert a_volume_now.attrs["Labels"].get("com.docker.compose.project") is None

    r = deploy(server, f"{prefix}bown", stack_using("volumes", "mine", f"{{external: true, name: {b_volume}}}"),
               token=b_token)
    assert r.status_code == 200, r.text
    mounts = engine.containers.get(f"{prefix}bown_app_1").attrs["Mounts"]
    assert [m["Name"] for m in mounts] == [b_volume]
    r = server.api("PUT", f"/api/stacks/{r.json()['Id']}?endpointId=1", token=b_token,
                   json={"StackFileContent": stack_using("volumes", "mine", f"{{external: true, name: {a_volume}}}")})
    assert r.status_code == 403 and a_volume in r.json()["message"], r.text


def test_administrator_sees_every_stack_and_shares_one_with_a_team(server, engine, stack_of_a):
    stack, (a_id, a_token, _), (b_id, b_token, b_key) = stack_of_a
    listed = {s["Name"]: s for s in server.api("GET", "/api/stacks").json()}
    assert listed[stack["Name"]]["Env"] == [{"name": "PASSWORD", "value": "a-secret"}]
    assert server.api("GET", f"/api/stacks/{stack['Id']}/file").status_code == 200

    team_a, team_b = make_team_of(server, a_id), make_team_of(server, b_id)
    control_id = stack["ResourceControl"]["Id"]
    r = server.api("PUT", f"/api/resource_controls/{control_id}", json={"Teams": [team_b]})
    assert r.status_code == 200, r.text
    assert stack["Name"] in listed_names(server, b_token)
    r = server.api("GET", f"/api/stacks/{stack['Id']}", token=b_token)
    assert r.status_code == 200 and [t["TeamId"] for t in r.json()["ResourceControl"]["TeamAccesses"]] == [team_b]
    assert r.json()["Env"] == [{"name": "PASSWORD", "value": "a-secret"}]  # B's team may now manage it

    # B redeploys the shared stack: what it makes stays A's (and A's team's) and B's team's, not B's alone.
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1", token=b_token,
                   json={"StackFileContent": app_stack(), "Env": [{"name": "PASSWORD", "value": "shared"}]})
    assert r.status_code == 200, r.text
    labels = engine.containers.get(f"{stack['Name']}_app_1").labels
    assert labels["io.portainer.accesscontrol.users"] == str(a_id)
    assert labels["io.portainer.accesscontrol.teams"] == ",".join(str(t) for t in sorted({team_a, team_b}))
    assert stack["Name"] in listed_names(server, a_token)

    r = server.api("PUT", f"/api/resource_controls/{control_id}", json={"Teams": [], "Public": True})
    assert r.status_code == 200, r.text
    assert stack["Name"] in listed_names(server, b_token)


def test_a_team_a_stack_is_shared_with_uses_its_containers_at_once_without_a_redeploy(server, stack_of_a):
    stack, _, (b_id, _, b_key) = stack_of_a
    container = f"{stack['Name']}_app_1"
    listed = lambda: {n.lstrip("/") for c in proxy(server, "GET", "/containers/json?all=1", b_key).json()  # noqa: E731
                      for n in c["Names"]}
    assert container not in listed()
    assert proxy(server, "GET", f"/containers/{container}/json", b_key).status_code == 403

    team_b = make_team_of(server, b_id)
    r = server.api("PUT", f"/api/resource_controls/{stack['ResourceControl']['Id']}", json={"Teams": [team_b]})
    assert r.status_code == 200, r.text
    assert container in listed()
    assert proxy(server, "GET", f"/containers/{container}/json", b_key).status_code == 200
    volumes = {v["Name"] for v in proxy(server, "GET", "/volumes", b_key).json()["Volumes"]}
    assert f"{stack['Name']}_data" in volumes

    r = server.api("PUT", f"/api/resource_controls/{stack['ResourceControl']['Id']}", json={"Teams": []})
    assert r.status_code == 200, r.text
    assert container not in listed()
    assert proxy(server, "POST", f"/containers/{container}/stop", b_key).status_code == 403


def test_stacks_without_resource_control_are_for_administrators_only(server, stack_of_a, make_user):
    stack, (_, a_token, _), _ = stack_of_a
    control_id = stack["ResourceControl"]["Id"]
    assert server.api("DELETE", f"/api/resource_controls/{control_id}").status_code == 204
    assert stack["Name"] not in listed_names(server, a_token)
    assert server.api("GET", f"/api/stacks/{stack['Id']}", token=a_token).status_code == 403
    assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1", token=a_token).status_code == 403
    r = server.api("GET", f"/api/stacks/{stack['Id']}")
    assert r.status_code == 200 and r.json()["ResourceControl"] is None

    r = server.api("POST", "/api/resource_controls", json={"ResourceID": f"1_{stack['Name']}",
                                                           "Type": STACK_RESOURCE_CONTROL, "Public": True})
    assert r.status_code == 200, r.text
    assert stack["Name"] in listed_names(server, a_token)


def test_a_public_stack_shows_its_env_only_to_those_who_may_manage_it(server, stack_of_a, make_user):
    stack, _, _ = stack_of_a
    r = server.api("PUT", f"/api/resource_controls/{stack['ResourceControl']['Id']}", json={"Public": True})
    assert r.status_code == 200, r.text
    reader_id, reader_token, _ = make_user()
    r = server.api("PUT", "/api/endpoints/1", json={"UserAccessPolicies": {
        **(server.api("GET", "/api/endpoints/1").json().get("UserAccessPolicies") or {}),
        str(reader_id): {"RoleId": 5}}})  # read-only user
    assert r.status_code == 200, r.text
    r = server.api("GET", f"/api/stacks/{stack['Id']}", token=reader_token)
    assert r.status_code == 200 and r.json()["Env"] is None and "a-secret" not in r.text
    listed = next(s for s in server.api("GET", "/api/stacks", token=reader_token).json() if s["Id"] == stack["Id"])
    assert listed["Env"] is None
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1", token=reader_token,
                   json={"StackFileContent": app_stack()})
    assert r.status_code == 403


def test_a_stack_an_administrator_deploys_is_for_administrators_only(server, two_users):
    prefix, (_, a_token, _), _ = two_users
    r = deploy(server, f"{prefix}adm", app_stack(), env=[{"name": "PASSWORD", "value": "admin-secret"}])
    assert r.status_code == 200, r.text
    assert r.json()["ResourceControl"]["AdministratorsOnly"] is True
    assert f"{prefix}adm" not in listed_names(server, a_token)
    assert server.api("GET", f"/api/stacks/{r.json()['Id']}/file", token=a_token).status_code == 403


@pytest.fixture
def swarm_environment(server, engine):
    """A single-node swarm on a namespace host, as environment N of the session's server."""
    with one_node_swarm(engine, 14) as host:  # host numbers: see conftest.NAMESPACE_HOSTS
        r = server.api("POST", "/api/endpoints", json={"Name": f"{PREFIX}-swarm", "EndpointCreationType": 1,
                                                       "URL": f"unix://{host.socket}"})
        assert r.status_code == 200, r.text
        endpoint_id = r.json()["Id"]
        r = server.api("PUT", f"/api/endpoints/{endpoint_id}",
                       json={"SecuritySettings": {"allowStackManagementForRegularUsers": True}})
        assert r.status_code == 200, r.text
        yield host, endpoint_id
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


def test_swarm_stacks_have_owners_and_cannot_take_another_users_network(server, swarm_environment, make_user):
    host, endpoint_id = swarm_environment
    (a_id, a_token, a_key), (_, b_token, _) = make_user(endpoint_access=(endpoint_id,)), \
        make_user(endpoint_access=(endpoint_id,))
    a_network = f"{PREFIX}-a-mesh"
    r = requests.post(f"{server.url}/api/endpoints/{endpoint_id}/docker/v1.41/networks/create",
                      headers={"X-API-Key": a_key}, timeout=60,
                      json={"Name": a_network, "Driver": "overlay", "Attachable": True})
    assert r.status_code == 201, r.text
    content = textwrap.dedent(f"""\
        services:
          api:
            image: {BUSYBOX}
            command: sleep 3600
            environment:
              PASSWORD: ${{PASSWORD}}
            stop_grace_period: 1s
        """)
    r = server.api("POST", f"/api/stacks/create/swarm/string?endpointId={endpoint_id}", token=a_token,
                   json={"Name": f"{PREFIX}swarma", "StackFileContent": content,
                         "Env": [{"name": "PASSWORD", "value": "a-swarm-secret"}]})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["ResourceControl"]["ResourceId"] == f"{endpoint_id}_{PREFIX}swarma"
    assert [a["UserId"] for a in stack["ResourceControl"]["UserAccesses"]] == [a_id]
    assert f"{PREFIX}swarma" not in listed_names(server, b_token)
    assert server.api("GET", f"/api/stacks/{stack['Id']}", token=b_token).status_code == 403
    r = server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}", token=b_token)
    assert r.status_code == 403
    assert host.client().services.get(f"{PREFIX}swarma_api")

    stolen = content + f"    networks: [mesh]\nnetworks:\n  mesh: {{external: true, name: {a_network}}}\n"
    r = server.api("POST", f"/api/stacks/create/swarm/string?endpointId={endpoint_id}", token=b_token,
                   json={"Name": f"{PREFIX}swarmb", "StackFileContent": stolen, "Env": [{"name": "PASSWORD",
                                                                                        "value": "b"}]})
    assert r.status_code == 403 and a_network in r.json()["message"], r.text
    assert not host.client().services.list(filters={"name": f"{PREFIX}swarmb"})
    r = server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}", token=a_token)
    assert r.status_code == 204


def test_stack_pages_show_the_owner_and_an_administrator_shares_the_stack_with_a_team(server, stack_of_a):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian chromium is not installed (make test-deps)")
    stack, (a_id, _, _), (b_id, b_token, _) = stack_of_a
    a_name = server.api("GET", f"/api/users/{a_id}").json()["Username"]
    team_b = make_team_of(server, b_id)
    team_name = server.api("GET", f"/api/teams/{team_b}").json()["Name"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=conftest.CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        conftest.open_login_page(page, server.url)
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.locator("#env-list .env").first.wait_for()
        page.goto(server.url + "/#/stacks")
        row = page.locator("tr", has=page.locator(f"a:text-is('{stack['Name']}')"))
        assert row.locator("td.access").inner_text() == a_name
        page.goto(server.url + f"/#/stacks/{stack['Id']}")
        page.wait_for_selector(f"#stack-access:text-is('{a_name}')")
        page.select_option("#acl #w", [f"u{a_id}", f"t{team_b}"])
        page.click("#acl button.primary")
        page.wait_for_selector(f"#stack-access:text-is('{a_name}, team {team_name}')")
        browser.close()
    assert not errors
    assert stack["Name"] in listed_names(server, b_token)


def test_compose_projects_another_user_ran_outside_portainer_stay_unseen(server, two_users):
    prefix, (_, a_token, a_key), (_, b_token, _) = two_users
    project = f"{prefix}out"
    r = proxy(server, "POST", f"/containers/create?name={project}_web_1", a_key,
              json={"Image": BUSYBOX, "Cmd": ["sleep", "60"],
                    "Labels": {"com.docker.compose.project": project, "com.docker.compose.service": "web",
                               TEST_LABEL: "1"}})
    assert r.status_code == 201, r.text

    def outside(token):
        r = server.api("GET", "/api/stacks/outside?endpointId=1", token=token)
        assert r.status_code == 200, r.text
        return {p["Name"] for p in r.json()}

    assert project in outside(a_token) and project in outside(None)
    assert project not in outside(b_token)
