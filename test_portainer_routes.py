"""Portainer CE routes that existing clients and scripts call, replayed with Portainer's own request shapes
(lower-case and exact-case keys, multipart where Portainer uses it) against a real server and the real engine."""
from __future__ import annotations

import contextlib
import subprocess
import json
import os
import time
import uuid

import docker
import pytest
import requests

from conftest import (ADMIN_PASSWORD, BUSYBOX, DOCKER_SOCKET, TEST_LABEL, make_namespace_host, sleeping_compose,
                      start_server, wait_until)

PASSWORD = "a long enough password"
READ_ONLY = 5


def unique(hint: str) -> str:
    return f"{hint}-{time.monotonic_ns() % 10**9}"


def new_user(server, hint: str) -> tuple[int, str]:
    """A standard user with no access to any environment: (id, API key)."""
    name = unique(hint)
    r = server.api("POST", "/api/users", json={"Username": name, "Password": PASSWORD, "Role": 2})
    assert r.status_code == 200, r.text
    user_id = r.json()["Id"]
    token = server.login(name, PASSWORD)
    return user_id, server.create_api_key(token, user_id, PASSWORD)


def new_environment(server, hint: str, group_id: int | None = None) -> int:
    form = {"Name": unique(hint), "EndpointCreationType": "1", "URL": f"unix://{DOCKER_SOCKET}"}
    if group_id is not None:
        form["GroupID"] = str(group_id)
    r = server.api("POST", "/api/endpoints", files={k: (None, v) for k, v in form.items()})
    assert r.status_code == 200, r.text
    return r.json()["Id"]


def as_user(server, key: str, method: str, path: str, **kwargs) -> requests.Response:
    return server.api(method, path, api_key=key, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Environment groups
# ---------------------------------------------------------------------------------------------------------------


def test_unassigned_group_exists_and_environments_belong_to_it(server):
    groups = server.api("GET", "/api/endpoint_groups").json()
    unassigned = next(g for g in groups if g["Id"] == 1)
    assert unassigned["Name"] == "Unassigned"
    for name in ("Description", "UserAccessPolicies", "TeamAccessPolicies", "TagIds"):
        assert name in unassigned
    assert server.api("GET", "/api/endpoints/1").json()["GroupId"] == 1
    r = server.api("DELETE", "/api/endpoint_groups/1")
    assert r.status_code == 403, r.text


def test_environment_group_crud_with_portainer_payloads(server):
    environment = new_environment(server, "grp-crud")
    r = server.api("POST", "/api/endpoint_groups", json={"name": unique("crud"), "description": "lower-case keys",
                                                         "associatedEndpoints": [environment], "tagIDs": []})
    assert r.status_code == 200, r.text
    group = r.json()
    assert group["Description"] == "lower-case keys" and group["TagIds"] == []
    assert server.api("GET", f"/api/endpoints/{environment}").json()["GroupId"] == group["Id"]
    assert server.api("POST", "/api/endpoint_groups", json={"Description": "no name"}).status_code == 400
    r = server.api("PUT", f"/api/endpoint_groups/{group['Id']}", json={"Name": "", "Description": "changed"})
    assert r.status_code == 200 and r.json()["Name"] == group["Name"] and r.json()["Description"] == "changed"
    assert server.api("GET", f"/api/endpoint_groups/{group['Id']}").json()["Description"] == "changed"
    r = server.api("DELETE", f"/api/endpoint_groups/{group['Id']}/endpoints/{environment}")
    assert r.status_code == 204
    assert server.api("GET", f"/api/endpoints/{environment}").json()["GroupId"] == 1
    r = server.api("PUT", f"/api/endpoint_groups/{group['Id']}/endpoints/{environment}")
    assert r.status_code == 204
    assert server.api("PUT", f"/api/endpoints/{environment}", json={"GroupID": 9999}).status_code == 400
    r = server.api("GET", f"/api/endpoints?groupIds[]={group['Id']}")
    assert [ep["Id"] for ep in r.json()] == [environment]
    assert server.api("PUT", f"/api/endpoint_groups/9999/endpoints/{environment}").status_code == 404
    assert server.api("PUT", f"/api/endpoint_groups/{group['Id']}/endpoints/9999").status_code == 404
    assert server.api("DELETE", f"/api/endpoint_groups/{group['Id']}").status_code == 204
    assert server.api("GET", f"/api/endpoint_groups/{group['Id']}").status_code == 404
    assert server.api("GET", f"/api/endpoints/{environment}").json()["GroupId"] == 1
    server.api("DELETE", f"/api/endpoints/{environment}")


def test_standard_user_given_a_group_sees_and_uses_exactly_its_environments(server):
    group = server.api("POST", "/api/endpoint_groups", json={"Name": unique("team-envs")}).json()
    inside = [new_environment(server, "grp-in", group["Id"]), new_environment(server, "grp-in")]
    server.api("PUT", f"/api/endpoint_groups/{group['Id']}/endpoints/{inside[1]}")
    outside = new_environment(server, "grp-out")
    user_id, key = new_user(server, "grp-user")
    try:
        assert as_user(server, key, "GET", "/api/endpoint_groups").json() == []
        r = server.api("PUT", f"/api/endpoint_groups/{group['Id']}",
                       json={"UserAccessPolicies": {str(user_id): {"RoleId": 0}}})
        assert r.status_code == 200 and str(user_id) in r.json()["UserAccessPolicies"], r.text
        assert [g["Id"] for g in as_user(server, key, "GET", "/api/endpoint_groups").json()] == [group["Id"]]
        seen = sorted(ep["Id"] for ep in as_user(server, key, "GET", "/api/endpoints").json())
        assert seen == sorted(inside)
        for environment in inside:
            assert as_user(server, key, "GET", f"/api/endpoints/{environment}").status_code == 200
            r = as_user(server, key, "POST", f"/api/endpoints/{environment}/snapshot")
            assert r.status_code == 200 and r.json()["Snapshots"], r.text
            r = as_user(server, key, "GET", f"/api/endpoints/{environment}/docker/v1.41/containers/json")
            assert r.status_code == 200, r.text
        assert as_user(server, key, "GET", f"/api/endpoints/{outside}").status_code == 403
        r = as_user(server, key, "GET", f"/api/endpoints/{outside}/docker/v1.41/containers/json")
        assert r.status_code == 403
        # the environment's own policy comes first: read-only there, whatever the group gives
        r = server.api("PUT", f"/api/endpoints/{inside[0]}",
                       json={"UserAccessPolicies": {str(user_id): {"RoleId": READ_ONLY}}})
        assert r.status_code == 200, r.text
        r = as_user(server, key, "POST", f"/api/endpoints/{inside[0]}/docker/v1.41/volumes/create",
                    json={"Name": unique("ro-vol"), "Labels": {TEST_LABEL: "1"}})
        assert r.status_code == 403, r.text
        # moving an environment out of the group takes the group's access away from it
        server.api("DELETE", f"/api/endpoint_groups/{group['Id']}/endpoints/{inside[1]}")
        assert as_user(server, key, "GET", f"/api/endpoints/{inside[1]}").status_code == 403
    finally:
        for environment in (*inside, outside):
            server.api("DELETE", f"/api/endpoints/{environment}")
        server.api("DELETE", f"/api/endpoint_groups/{group['Id']}")
        server.api("DELETE", f"/api/users/{user_id}")


def test_a_team_given_a_group_reaches_its_environments(server):
    group = server.api("POST", "/api/endpoint_groups", json={"Name": unique("team-grp")}).json()
    environment = new_environment(server, "team-grp-env", group["Id"])
    user_id, key = new_user(server, "team-grp-user")
    team = server.api("POST", "/api/teams", json={"Name": unique("grp-team")}).json()["Id"]
    try:
        r = server.api("POST", "/api/team_memberships", json={"UserID": user_id, "TeamID": team, "Role": 2})
        assert r.status_code == 200, r.text
        assert as_user(server, key, "GET", f"/api/endpoints/{environment}").status_code == 403
        r = server.api("PUT", f"/api/endpoint_groups/{group['Id']}",
                       json={"teamAccessPolicies": {str(team): {"RoleId": 0}}})
        assert r.status_code == 200, r.text
        assert [ep["Id"] for ep in as_user(server, key, "GET", "/api/endpoints").json()] == [environment]
    finally:
        server.api("DELETE", f"/api/endpoints/{environment}")
        server.api("DELETE", f"/api/endpoint_groups/{group['Id']}")
        server.api("DELETE", f"/api/teams/{team}")
        server.api("DELETE", f"/api/users/{user_id}")


def test_a_dynamic_edge_group_matches_the_tags_of_an_environments_group(server):
    tag = server.api("POST", "/api/tags", json={"Name": unique("site-tag")}).json()
    group = server.api("POST", "/api/endpoint_groups", json={"Name": unique("tagged"), "TagIDs": [tag["ID"]]}).json()
    assert group["TagIds"] == [tag["ID"]]
    assert server.api("GET", "/api/tags").json()[-1]["EndpointGroups"] == {str(group["Id"]): True}
    r = server.api("POST", "/api/endpoints", json={"Name": unique("tagged-edge"), "EndpointCreationType": 4,
                                                  "URL": server.https_url, "GroupID": group["Id"]})
    assert r.status_code == 200 and r.json()["GroupId"] == group["Id"], r.text
    environment = r.json()["Id"]
    edge_group = server.api("POST", "/api/edge_groups", json={"Name": unique("by-tag"), "Dynamic": True,
                                                              "TagIds": [tag["ID"]]}).json()
    try:
        assert edge_group["TrustedEndpoints"] == [environment]
    finally:
        server.api("DELETE", f"/api/edge_groups/{edge_group['Id']}")
        server.api("DELETE", f"/api/endpoints/{environment}")
        server.api("DELETE", f"/api/endpoint_groups/{group['Id']}")
        server.api("DELETE", f"/api/tags/{tag['ID']}")


def test_data_directory_made_before_groups_loads_with_the_unassigned_group(fresh_server):
    first = fresh_server()
    first.stop()
    path = os.path.join(first.data, "portainer.json")
    with open(path) as f:
        document = json.load(f)
    document.pop("endpoint_groups", None)
    for endpoint in document["endpoints"].values():
        endpoint.pop("GroupId", None)
    with open(path, "w") as f:
        json.dump(document, f)
    again = start_server(first.data, admin_password=None, host=None)
    try:
        again.admin_token = again.login("admin", ADMIN_PASSWORD)
        assert [g["Name"] for g in again.api("GET", "/api/endpoint_groups").json()] == ["Unassigned"]
        assert again.api("GET", "/api/endpoints/1").json()["GroupId"] == 1
    finally:
        again.stop()


# ---------------------------------------------------------------------------------------------------------------
# Environments: settings, batch removal, edge de-association
# ---------------------------------------------------------------------------------------------------------------


def test_environment_settings_take_portainers_camel_case_switches(server):
    environment = new_environment(server, "settings")
    try:
        r = server.api("PUT", f"/api/endpoints/{environment}/settings",
                       json={"allowBindMountsForRegularUsers": True, "AllowStackManagementForRegularUsers": True,
                             "enableGPUManagement": False, "gpus": []})
        assert r.status_code == 200, r.text
        settings = r.json()["SecuritySettings"]
        assert settings["allowBindMountsForRegularUsers"] is True
        assert settings["allowStackManagementForRegularUsers"] is True
        assert settings["allowPrivilegedModeForRegularUsers"] is False
        r = server.api("PUT", f"/api/endpoints/{environment}/settings", json={"allowPrivilegedModeForRegularUsers": 1})
        assert r.status_code == 400 and "allowPrivilegedModeForRegularUsers" in r.json()["message"]
        r = server.api("PUT", f"/api/endpoints/{environment}/settings", json={"allowBindMountsForRegularUsers": False})
        kept = r.json()["SecuritySettings"]
        assert kept["allowBindMountsForRegularUsers"] is False and kept["allowStackManagementForRegularUsers"] is True
        _, key = new_user(server, "settings-user")
        r = as_user(server, key, "PUT", f"/api/endpoints/{environment}/settings",
                    json={"allowPrivilegedModeForRegularUsers": True})
        assert r.status_code == 403
    finally:
        server.api("DELETE", f"/api/endpoints/{environment}")


def test_batch_removal_of_environments_answers_as_portainer(server):
    first, second = new_environment(server, "batch"), new_environment(server, "batch")
    r = server.api("DELETE", "/api/endpoints", json={"endpoints": [{"id": first, "deleteCluster": False},
                                                                  {"id": 99999}]})
    assert r.status_code == 207, r.text
    assert r.json() == {"deleted": [first], "errors": [99999]}
    assert server.api("GET", f"/api/endpoints/{first}").status_code == 404
    r = server.api("DELETE", "/api/endpoints", json={"Endpoints": [{"ID": second}]})
    assert r.status_code == 204, r.text
    assert server.api("GET", f"/api/endpoints/{second}").status_code == 404
    assert server.api("DELETE", "/api/endpoints", json={"endpoints": []}).status_code == 400


def test_edge_environment_de_association(server):
    r = server.api("POST", "/api/endpoints", json={"Name": unique("edge-deassoc"), "EndpointCreationType": 4,
                                                  "URL": server.https_url})
    assert r.status_code == 200, r.text
    environment = r.json()["Id"]
    try:
        r = server.api("PUT", f"/api/endpoints/{environment}/association", json={"EdgeID": "machine-1"})
        assert r.status_code == 200 and r.json()["EdgeID"] == "machine-1", r.text
        r = server.api("DELETE", f"/api/endpoints/{environment}/association")
        assert r.status_code == 204, r.text
        assert server.api("GET", f"/api/endpoints/{environment}").json()["EdgeID"] == ""
        assert server.api("DELETE", "/api/endpoints/1/association").status_code == 400
        assert server.api("DELETE", "/api/endpoints/99999/association").status_code == 404
    finally:
        server.api("DELETE", f"/api/endpoints/{environment}")


# ---------------------------------------------------------------------------------------------------------------
# Swarm: stacks uploaded as a file, and service webhooks (a one-node swarm with a registry on a host of its own)
# ---------------------------------------------------------------------------------------------------------------

HOOK_REPOSITORY = "127.0.0.1:5000/hook"


@pytest.fixture(scope="module")
def swarm(engine, server):
    """(host, environment id): a one-node swarm on namespace host 15 with a registry serving HOOK_REPOSITORY
    tags v1 and v2 on that host's 127.0.0.1:5000."""
    host = make_namespace_host(15)  # host numbers: see conftest.NAMESPACE_HOSTS
    host.start_engine()
    host.load_image(engine)
    client = host.client()
    with contextlib.suppress(docker.errors.APIError):
        client.swarm.leave(force=True)
    client.swarm.init(advertise_addr=host.address)
    os.makedirs(os.path.join(host.root, "registry"), exist_ok=True)
    config = os.path.join(host.root, "registry", "config.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {host.root}/registry/data\n"
                "http:\n  addr: 127.0.0.1:5000\n  secret: tests\n")
    registry_log = open(os.path.join(host.root, "registry", "log"), "ab")
    registry = host.popen(["/usr/bin/docker-registry", "serve", config], stdout=registry_log,
                          stderr=subprocess.STDOUT)
    wait_until(lambda: host.sh("wget -q -O- http://127.0.0.1:5000/v2/", check=False).returncode == 0,
               timeout=20, message="the registry on the swarm host")
    for tag in ("v1", "v2"):
        client.images.get(BUSYBOX).tag(HOOK_REPOSITORY, tag)
        for line in client.images.push(HOOK_REPOSITORY, tag, stream=True, decode=True):
            assert "error" not in line, line
    r = server.api("POST", "/api/endpoints", json={"Name": unique("routes-swarm"), "EndpointCreationType": 1,
                                                  "URL": f"unix://{host.socket}"})
    assert r.status_code == 200, r.text
    environment = r.json()["Id"]
    yield host, environment
    server.api("DELETE", f"/api/endpoints/{environment}")
    registry.terminate()
    registry.wait(10)
    registry_log.close()
    with contextlib.suppress(docker.errors.APIError):
        client.swarm.leave(force=True)
    host.remove()


def test_swarm_stack_uploaded_as_a_multipart_file_is_deployed(server, swarm):
    host, environment = swarm
    name = unique("upload").replace("-", "")
    content = (f"services:\n  app:\n    image: {BUSYBOX}\n    command: sleep 3600\n    environment:\n"
               f"      - GREETING=${{GREETING}}\n    deploy:\n      labels: {{\"{TEST_LABEL}\": \"1\"}}\n")
    swarm_id = host.client().swarm.attrs["ID"]
    r = server.api("POST", f"/api/stacks/create/swarm/file?endpointId={environment}",
                   data={"Name": name, "SwarmID": swarm_id, "Env": json.dumps([{"name": "GREETING", "value": "hi"}])},
                   files={"file": ("docker-compose.yml", content)})
    assert r.status_code == 200, r.text
    stack = r.json()
    try:
        assert stack["Type"] == 1 and stack["SwarmId"] == swarm_id and stack["EndpointId"] == environment
        services = host.client().services.list(filters={"label": f"com.docker.stack.namespace={name}"})
        assert len(services) == 1
        assert "GREETING=hi" in services[0].attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        r = server.api("GET", f"/api/stacks/{stack['Id']}/file")
        assert r.json()["StackFileContent"] == content
        r = server.api("POST", f"/api/stacks/create/swarm/file?endpointId={environment}", data={"Name": "nofile"})
        assert r.status_code == 400
    finally:
        assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={environment}").status_code == 204


def grant_standard(server, user_id: int, environment: int) -> None:
    policies = server.api("GET", f"/api/endpoints/{environment}").json().get("UserAccessPolicies") or {}
    policies[str(user_id)] = {"RoleId": 0}
    r = server.api("PUT", f"/api/endpoints/{environment}", json={"UserAccessPolicies": policies})
    assert r.status_code == 200, r.text


def service_spec(host, service_id: str) -> dict:
    return host.client().api.inspect_service(service_id)["Spec"]


def test_service_webhook_redeploys_with_the_image_pulled_again_and_a_new_tag(server, swarm):
    host, environment = swarm
    (alice, alice_key), (bob, bob_key) = new_user(server, "hook-alice"), new_user(server, "hook-bob")
    for user_id in (alice, bob):
        grant_standard(server, user_id, environment)
    base = f"/api/endpoints/{environment}/docker/v1.41"
    r = as_user(server, alice_key, "POST", base + "/services/create", json={
        "Name": unique("hooked"), "Labels": {TEST_LABEL: "1"},
        "TaskTemplate": {"ContainerSpec": {"Image": f"{HOOK_REPOSITORY}:v1", "Command": ["sleep", "3600"]}}})
    assert r.status_code == 201, r.text
    service_id = r.json()["ID"]
    try:
        payload = {"resourceID": service_id, "endpointID": environment, "webhookType": 1}
        assert as_user(server, bob_key, "POST", "/api/webhooks", json=payload).status_code == 403
        assert as_user(server, alice_key, "POST", "/api/webhooks",
                       json={**payload, "webhookType": 2}).status_code == 400
        r = as_user(server, alice_key, "POST", "/api/webhooks", json=payload)
        assert r.status_code == 200, r.text
        webhook = r.json()
        assert set(webhook) == {"Id", "Token", "ResourceId", "EndpointId", "RegistryId", "Type"}
        assert webhook["ResourceId"] == service_id and webhook["EndpointId"] == environment and webhook["Type"] == 1
        assert len(webhook["Token"]) == 36 and webhook["Token"].count("-") == 4
        r = server.api("POST", "/api/webhooks", json={"ResourceID": service_id, "EndpointID": environment,
                                                      "WebhookType": 1})
        assert r.status_code == 409
        assert [w["Id"] for w in as_user(server, alice_key, "GET", "/api/webhooks").json()] == [webhook["Id"]]
        assert as_user(server, bob_key, "GET", "/api/webhooks").json() == []
        filters = json.dumps({"ResourceID": service_id, "EndpointID": environment})
        assert [w["Id"] for w in server.api("GET", f"/api/webhooks?filters={filters}").json()] == [webhook["Id"]]

        hook_url = f"{server.url}/api/webhooks/{webhook['Token']}"
        forced = service_spec(host, service_id)["TaskTemplate"].get("ForceUpdate", 0)
        assert requests.post(f"{server.url}/api/webhooks/{uuid.uuid4()}", timeout=30).status_code == 404
        r = requests.post(hook_url, timeout=120)
        assert r.status_code == 204, r.text
        spec = service_spec(host, service_id)
        assert spec["TaskTemplate"]["ForceUpdate"] == forced + 1
        assert spec["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == f"{HOOK_REPOSITORY}:v1"
        r = requests.post(hook_url + "?tag=v2", timeout=120)
        assert r.status_code == 204, r.text
        assert service_spec(host, service_id)["TaskTemplate"]["ContainerSpec"]["Image"].split("@")[0] == \
            f"{HOOK_REPOSITORY}:v2"
        r = requests.post(hook_url + "?tag=missing", timeout=120)
        assert r.status_code == 404, r.text

        r = as_user(server, alice_key, "PUT", f"/api/webhooks/{webhook['Id']}", json={"registryID": 99999})
        assert r.status_code == 404, r.text
        r = as_user(server, alice_key, "PUT", f"/api/webhooks/{webhook['Id']}", json={"RegistryID": 0})
        assert r.status_code == 200 and r.json()["RegistryId"] == 0, r.text
        assert as_user(server, bob_key, "PUT", f"/api/webhooks/{webhook['Id']}", json={}).status_code == 403
        assert as_user(server, bob_key, "DELETE", f"/api/webhooks/{webhook['Id']}").status_code == 403
        assert as_user(server, alice_key, "DELETE", f"/api/webhooks/{webhook['Id']}").status_code == 204
        assert requests.post(hook_url, timeout=30).status_code == 404
    finally:
        with contextlib.suppress(docker.errors.APIError):
            host.client().api.remove_service(service_id)
        for user_id in (alice, bob):
            server.api("DELETE", f"/api/users/{user_id}")


# ---------------------------------------------------------------------------------------------------------------
# Stacks: migration to another environment; app template files; edge stacks updated and redeployed
# ---------------------------------------------------------------------------------------------------------------


def project_containers(engine, project: str) -> list:
    return engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})


def test_stack_migrates_to_another_environment_under_a_new_name(server, engine):
    target = new_environment(server, "migrate-target")
    name = unique("migrating").replace("-", "")
    content = sleeping_compose("app")
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"name": name, "stackFileContent": content})
    assert r.status_code == 200, r.text
    stack = r.json()
    moved = f"{name}moved"
    try:
        assert server.api("POST", f"/api/stacks/{stack['Id']}/migrate?endpointId=1", json={}).status_code == 400
        r = server.api("POST", f"/api/stacks/{stack['Id']}/migrate?endpointId=1",
                       json={"EndpointID": 99999})
        assert r.status_code == 404
        r = server.api("POST", f"/api/stacks/{stack['Id']}/migrate?endpointId=1",
                       json={"endpointID": target, "name": moved})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["Id"] == stack["Id"] and answer["EndpointId"] == target and answer["Name"] == moved
        assert not project_containers(engine, name)
        assert [c.status for c in project_containers(engine, moved)] == ["running"]
        assert server.api("GET", f"/api/stacks/{stack['Id']}").json()["EndpointId"] == target
    finally:
        server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={target}")
        server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1")
        for project in (name, moved):
            for container in project_containers(engine, project):
                container.remove(force=True)
        server.api("DELETE", f"/api/endpoints/{target}")


def test_app_template_file_is_answered_for_stack_templates_only(server):
    templates = server.api("GET", "/api/templates").json()["templates"]
    stack_template = next(t for t in templates if t["type"] == 3)
    container_template = next(t for t in templates if t["type"] == 1)
    r = server.api("POST", f"/api/templates/{stack_template['id']}/file")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"FileContent"} and "services:" in r.json()["FileContent"]
    assert server.api("POST", f"/api/templates/{container_template['id']}/file").status_code == 400
    assert server.api("POST", "/api/templates/9999/file").status_code == 404


def test_edge_stack_is_updated_and_redeployed_and_its_file_read_back(server, engine, workdir):
    edge = pytest.importorskip("test_edge")
    r = server.api("POST", "/api/endpoints", json={"Name": unique("edge-update"), "EndpointCreationType": 4,
                                                  "URL": server.https_url})
    assert r.status_code == 200, r.text
    environment = r.json()
    group = server.api("POST", "/api/edge_groups", json={"Name": unique("edge-upd"),
                                                         "Endpoints": [environment["Id"]]}).json()
    empty_group = server.api("POST", "/api/edge_groups", json={"Name": unique("edge-none"), "Endpoints": []}).json()
    name = unique("edgeupd").replace("-", "")
    version = lambda v: (f"services:\n  web:\n    image: {BUSYBOX}\n    command: sleep 3600\n"  # noqa: E731
                         f"    stop_grace_period: 1s\n    environment: [RELEASE={v}]\n"
                         f"    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")
    r = server.api("POST", "/api/edge_stacks", json={"Name": name, "StackFileContent": version(1),
                                                     "EdgeGroups": [group["Id"]], "DeploymentType": 0})
    assert r.status_code == 200, r.text
    edge_stack = r.json()
    site_agent = edge.EdgeAgent(environment["EdgeKey"], "routes-edge", f"unix://{DOCKER_SOCKET}",
                                os.path.join(workdir, "routes-edge-agent.log"))
    status = lambda: server.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"]  # noqa: E731
    release = lambda: [e for e in engine.containers.get(f"{name}_web_1").attrs["Config"]["Env"]  # noqa: E731
                       if e.startswith("RELEASE=")]
    try:
        wait_until(lambda: status()[str(environment["Id"])]["Status"] == "running", timeout=60, interval=0.5,
                   message="the edge stack to run")
        assert release() == ["RELEASE=1"]
        r = server.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}", json={"edgeGroups": [group["Id"]]})
        assert r.status_code == 400, r.text
        r = server.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}",
                       json={"stackFileContent": version(2), "edgeGroups": [group["Id"]], "updateVersion": True,
                             "deploymentType": 0})
        assert r.status_code == 200, r.text
        assert r.json()["Version"] == 2
        r = server.api("GET", f"/api/edge_stacks/{edge_stack['Id']}/file")
        assert r.status_code == 200 and r.json() == {"StackFileContent": version(2)}
        wait_until(lambda: status()[str(environment["Id"])]["Status"] == "running" and release() == ["RELEASE=2"],
                   timeout=60, interval=0.5, message="the new version to run")
        r = server.api("PUT", f"/api/edge_stacks/{edge_stack['Id']}",
                       json={"StackFileContent": version(2), "EdgeGroups": [empty_group["Id"]]})
        assert r.status_code == 200 and r.json()["Status"] == {}, r.text
        wait_until(lambda: not project_containers(engine, name), timeout=30, message="the stack to leave the site")
    finally:
        site_agent.stop()
        server.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}")
        for container in project_containers(engine, name):
            container.remove(force=True)
        for edge_group in (group, empty_group):
            server.api("DELETE", f"/api/edge_groups/{edge_group['Id']}")
        server.api("DELETE", f"/api/endpoints/{environment['Id']}")


def test_openapi_lists_these_routes_with_their_bodies(server):
    paths = requests.get(server.url + "/api/docs/openapi.json", timeout=30).json()["paths"]
    assert "requestBody" in paths["/api/endpoint_groups"]["post"]
    assert "requestBody" in paths["/api/endpoints"]["delete"]
    assert "multipart/form-data" in paths["/api/stacks/create/swarm/file"]["post"]["requestBody"]["content"]
    assert "security" not in paths["/api/webhooks/{token}"]["post"]
    for path, method in (("/api/endpoint_groups/{id}/endpoints/{endpointId}", "delete"),
                         ("/api/endpoints/{id}/settings", "put"), ("/api/endpoints/{id}/association", "delete"),
                         ("/api/edge_stacks/{id}", "put"), ("/api/edge_stacks/{id}/file", "get"),
                         ("/api/stacks/{id}/migrate", "post"), ("/api/templates/{id}/file", "post"),
                         ("/api/webhooks", "get"), ("/api/webhooks/{id}", "delete")):
        assert method in paths[path], (path, method)
