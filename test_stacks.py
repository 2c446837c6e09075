"""Stacks, as users deploy them: compose files through the API onto the real engine, checked with the real
`docker-compose` (v1) and `docker stack` CLIs; Swarm stacks on a single-node swarm of a namespace engine."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import docker
import pytest

import conftest
from conftest import (ADMIN_PASSWORD, BUSYBOX, SLOT, TEST_LABEL, make_namespace_host, sleeping_compose, start_server,
                      wait_until)

PREFIX = f"ptpy{SLOT}"

TWO_SERVICES = textwrap.dedent(f"""\
    services:
      db:
        image: {BUSYBOX}
        command: sh -c "echo $${{GREETING}} > /data/greeting; exec sleep 3600"
        environment:
          GREETING: ${{GREETING}}
        healthcheck:
          test: ["CMD", "true"]
          interval: 1s
          retries: 3
        volumes:
          - data:/data
        networks: [back]
        stop_grace_period: 1s
        labels: {{"{TEST_LABEL}": "1"}}
      web:
        image: {BUSYBOX}
        command: sleep 3600
        environment:
          MODE: ${{MODE:-fast}}
        depends_on:
          db:
            condition: service_healthy
        networks:
          back:
            aliases: [frontend]
        stop_grace_period: 1s
        labels: {{"{TEST_LABEL}": "1"}}
    networks:
      back:
        labels: {{"{TEST_LABEL}": "1"}}
    volumes:
      data:
        labels: {{"{TEST_LABEL}": "1"}}
    """)


def project_resources(engine: docker.DockerClient, project: str) -> tuple[list, list, list]:
    label = {"label": f"com.docker.compose.project={project}"}
    return (engine.containers.list(all=True, filters=label), engine.networks.list(filters=label),
            engine.volumes.list(filters=label))


def remove_project(engine: docker.DockerClient, project: str) -> None:
    containers, networks, volumes = project_resources(engine, project)
    for item in containers:
        item.remove(force=True)
    for item in networks + volumes:
        item.remove()


def delete_stacks_named(server, name: str) -> None:
    for stack in server.api("GET", "/api/stacks").json():
        if stack["Name"] == name:
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}")


@pytest.fixture
def project(server, engine, request):
    """A stack name of this test's own, with nothing left of it before or after."""
    name = f"{PREFIX}{request.node.name.split('_', 2)[-1][:20].replace('_', '')}"
    delete_stacks_named(server, name)
    remove_project(engine, name)
    yield name
    delete_stacks_named(server, name)
    remove_project(engine, name)


def compose_ps(stack: dict, name: str) -> str:
    compose_file = os.path.join(stack["ProjectPath"], stack["EntryPoint"])
    result = subprocess.run(["docker-compose", "-p", name, "-f", compose_file,
                             "--project-directory", stack["ProjectPath"], "ps", "-q"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_two_service_stack_deploys_updates_one_service_and_is_removed_cleanly(server, engine, project):
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": TWO_SERVICES,
                         "Env": [{"name": "GREETING", "value": "hello"}]})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert stack["Type"] == 2 and stack["Status"] == 1 and stack["EndpointId"] == 1
    assert stack["EntryPoint"] == "docker-compose.yml" and stack["CreatedBy"] == "admin"
    assert stack["ProjectPath"].endswith(f"/compose/{stack['Id']}")
    assert server.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == TWO_SERVICES

    db, web = engine.containers.get(f"{project}_db_1"), engine.containers.get(f"{project}_web_1")
    assert db.status == web.status == "running"
    # env interpolation: ${GREETING} from the stack, ${MODE:-fast} defaulted, $$ reaching the shell as $
    assert "GREETING=hello" in db.attrs["Config"]["Env"] and "MODE=fast" in web.attrs["Config"]["Env"]
    assert db.exec_run("cat /data/greeting").output.decode().strip() == "hello"
    # depends_on service_healthy: web started after db's first successful healthcheck
    assert web.attrs["State"]["StartedAt"] > db.attrs["State"]["Health"]["Log"][0]["End"][:26]
    assert web.labels["com.docker.compose.project"] == project and web.labels["com.docker.compose.oneoff"] == "False"
    back = engine.networks.get(f"{project}_back")
    assert "frontend" in web.attrs["NetworkSettings"]["Networks"][f"{project}_back"]["Aliases"]
    assert back.attrs["Labels"]["com.docker.compose.project"] == project
    assert engine.volumes.get(f"{project}_data").attrs["Labels"]["com.docker.compose.volume"] == "data"

    assert set(compose_ps(stack, project).split()) == {db.id, web.id}

    services = server.api("GET", f"/api/stacks/{stack['Id']}/services").json()
    assert {s["Name"]: s["Containers"][0]["State"] for s in services} == {"db": "running", "web": "running"}

    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                   json={"StackFileContent": TWO_SERVICES, "Env": [{"name": "GREETING", "value": "hello"},
                                                                   {"name": "MODE", "value": "slow"}]})
    assert r.status_code == 200, r.text
    assert engine.containers.get(f"{project}_db_1").id == db.id
    new_web = engine.containers.get(f"{project}_web_1")
    assert new_web.id != web.id and "MODE=slow" in new_web.attrs["Config"]["Env"]

    assert server.api("POST", f"/api/stacks/{stack['Id']}/stop?endpointId=1").json()["Status"] == 2
    assert engine.containers.get(f"{project}_web_1").status == "exited"
    assert server.api("POST", f"/api/stacks/{stack['Id']}/start?endpointId=1").json()["Status"] == 1
    assert engine.containers.get(f"{project}_web_1").status == "running"

    assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1").status_code == 204
    assert project_resources(engine, project) == ([], [], [])
    assert not os.path.exists(stack["ProjectPath"])
    assert server.api("GET", f"/api/stacks/{stack['Id']}").status_code == 404


def test_stack_uploaded_as_a_file_is_deployed(server, engine, project):
    content = (f"services:\n  one:\n    image: {BUSYBOX}\n    command: sleep 3600\n    stop_grace_period: 1s\n"
               f"    env_file: stack.env\n    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")
    r = server.api("POST", "/api/stacks/create/standalone/file?endpointId=1",
                   data={"Name": project, "Env": json.dumps([{"name": "FROM_FILE", "value": "yes"}])},
                   files={"file": ("docker-compose.yml", content)})
    assert r.status_code == 200, r.text
    assert "FROM_FILE=yes" in engine.containers.get(f"{project}_one_1").attrs["Config"]["Env"]


def test_bad_yaml_and_unsupported_keys_are_refused_with_their_line(server, engine, project):
    bad_yaml = "services:\n  web:\n    image: busybox:local\n   command: [oops\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": bad_yaml})
    assert r.status_code == 400 and "line 4" in r.json()["message"], r.text

    unsupported = f"services:\n  web:\n    image: {BUSYBOX}\n    not_a_compose_key: .\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": unsupported})
    message = r.json()["message"]
    assert r.status_code == 400 and "docker-compose.yml, line 4" in message and "services.web.not_a_compose_key" in message

    undeclared = f"services:\n  web:\n    image: {BUSYBOX}\n    volumes:\n      - nowhere:/data\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": undeclared})
    assert r.status_code == 400 and "line 4" in r.json()["message"] and "nowhere" in r.json()["message"]
    bomb = "x-a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"x-{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '*a'] * 10)}]\n" for i in range(8))
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": bomb + f"services:\n  web:\n    image: {BUSYBOX}\n"})
    assert r.status_code == 400 and "expands" in r.json()["message"], r.text
    assert project_resources(engine, project) == ([], [], [])
    assert all(s["Name"] != project for s in server.api("GET", "/api/stacks").json())


def test_standard_user_needs_stack_permission_gets_no_bind_mount_and_owns_the_stack(server, engine, project,
                                                                                     make_user):
    user_id, token, key = make_user()
    body = {"Name": project, "StackFileContent": f"services:\n  web:\n    image: {BUSYBOX}\n    command: sleep 60\n"
                                                 f"    volumes:\n      - /etc:/host-etc\n"}
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", token=token, json=body)
    assert r.status_code == 403 and "administrators" in r.json()["message"]
    settings = {"allowStackManagementForRegularUsers": True}
    assert server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": settings}).status_code == 200
    try:
        r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", token=token, json=body)
        assert r.status_code == 403 and "bind mount of host path /etc" in r.json()["message"], r.text
        assert project_resources(engine, project)[0] == []
        body["StackFileContent"] = (f"services:\n  web:\n    image: {BUSYBOX}\n    command: sleep 60\n"
                                    f"    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")
        r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", token=token, json=body)
        assert r.status_code == 200, r.text
        web = engine.containers.get(f"{project}_web_1")
        assert web.labels["io.portainer.accesscontrol.users"] == str(user_id)
        assert web.id in server.docker("ps", "-q", "--no-trunc", api_key=key).stdout
    finally:
        server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})


def test_compose_project_made_outside_is_listed_and_adopted(server, engine, project, tmp_path):
    content = textwrap.dedent(f"""\
        services:
          app:
            image: {BUSYBOX}
            command: sleep 3600
            stop_grace_period: 1s
            labels: {{"{TEST_LABEL}": "1"}}
            volumes: [keep:/keep]
        volumes:
          keep:
            labels: {{"{TEST_LABEL}": "1"}}
        """)
    (tmp_path / "docker-compose.yml").write_text(content)
    up = subprocess.run(["docker-compose", "-p", project, "up", "-d"], cwd=tmp_path, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    outside = server.api("GET", "/api/stacks/outside?endpointId=1").json()
    listed = [p for p in outside if p["Name"] == project]
    assert listed and listed[0]["Services"] == ["app"] and listed[0]["Outside"] is True

    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": project, "StackFileContent": content})
    assert r.status_code == 409 and "adopt" in r.json()["details"]
    r = server.api("POST", "/api/stacks/adopt?endpointId=1", json={"Name": project, "StackFileContent": content})
    assert r.status_code == 200, r.text
    stack = r.json()
    assert all(p["Name"] != project for p in server.api("GET", "/api/stacks/outside?endpointId=1").json())
    app = engine.containers.get(f"{project}_app_1")
    assert app.status == "running" and len(engine.volumes.list(filters={"name": f"{project}_keep"})) == 1
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                   json={"StackFileContent": content.replace("sleep 3600", "sleep 3601")})
    assert r.status_code == 200, r.text
    assert engine.containers.get(f"{project}_app_1").attrs["Config"]["Cmd"] == ["sleep", "3601"]


def test_app_templates_are_bundled_or_read_from_the_admins_file(server, tmp_path):
    document = server.api("GET", "/api/templates").json()
    assert document["version"] == "3" and {t["type"] for t in document["templates"]} >= {1, 3}
    own = tmp_path / "templates.json"
    own.write_text(json.dumps({"version": "3", "templates": [{"id": 1, "type": 1, "title": "ours",
                                                              "image": BUSYBOX}]}))
    assert server.api("PUT", "/api/settings", json={"TemplatesURL": str(own)}).status_code == 200
    try:
        assert [t["title"] for t in server.api("GET", "/api/templates").json()["templates"]] == ["ours"]
    finally:
        server.api("PUT", "/api/settings", json={"TemplatesURL": ""})
    assert server.api("GET", "/api/templates").json() == document


def test_app_templates_deploy_a_container_or_a_stack(server, engine, project):
    name = f"{project}-sandbox"
    try:
        r = server.api("POST", "/api/templates/2/deploy?endpointId=1",
                       json={"Name": name, "Env": [{"name": "TZ", "value": "Europe/Paris"}]})
        assert r.status_code == 200, r.text
        container = engine.containers.get(name)
        assert container.status == "running" and "TZ=Europe/Paris" in container.attrs["Config"]["Env"]
    finally:
        for container in engine.containers.list(all=True, filters={"name": name}):
            container.remove(force=True)

    r = server.api("POST", "/api/custom_templates/create/string",
                   json={"Title": "mine", "Description": "one sleeper", "Type": 3,
                         "FileContent": f"services:\n  s:\n    image: {BUSYBOX}\n    command: sleep 60\n"
                                        f"    labels: {{\"{TEST_LABEL}\": \"1\"}}\n"})
    assert r.status_code == 200, r.text
    template = r.json()
    assert any(t["Id"] == template["Id"] for t in server.api("GET", "/api/custom_templates").json())
    assert "sleep 60" in server.api("GET", f"/api/custom_templates/{template['Id']}/file").json()["FileContent"]
    r = server.api("POST", f"/api/custom_templates/{template['Id']}/deploy?endpointId=1", json={"Name": project})
    assert r.status_code == 200 and r.json()["FromAppTemplate"] is True, r.text
    assert engine.containers.get(f"{project}_s_1").status == "running"
    assert server.api("DELETE", f"/api/custom_templates/{template['Id']}").status_code == 204
    assert server.api("GET", f"/api/custom_templates/{template['Id']}").status_code == 404


def test_edge_stack_needs_existing_edge_groups(server):
    r = server.api("POST", "/api/edge_stacks", json={"Name": f"{PREFIX}edge", "StackFileContent": "services: {}",
                                                     "EdgeGroups": [999], "DeploymentType": 0})
    assert r.status_code == 400 and "edge group 999" in r.json()["message"]


# ---------------------------------------------------------------------------------------------------------------
# Swarm: a single-node swarm on a namespace engine (never on the machine's own engine)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def swarm_host(engine):
    host = make_namespace_host(4)  # host numbers: see conftest.NAMESPACE_HOSTS
    host.start_engine()
    host.load_image(engine)
    client = host.client()
    client.swarm.init(advertise_addr=host.address)
    yield host
    with_client = host.client()
    try:
        with_client.swarm.leave(force=True)
    finally:
        host.remove()


def test_swarm_stack_is_seen_by_docker_stack_ls(server, swarm_host):
    r = server.api("POST", "/api/endpoints", json={"Name": f"swarm-{PREFIX}", "EndpointCreationType": 1,
                                                   "URL": f"unix://{swarm_host.socket}"})
    assert r.status_code == 200, r.text
    endpoint_id = r.json()["Id"]
    name = f"{PREFIX}swarm"
    content = textwrap.dedent(f"""\
        services:
          api:
            image: {BUSYBOX}
            command: sleep 3600
            stop_grace_period: 1s
            networks: [mesh]
            configs:
              - source: settings
                target: /etc/settings
            secrets: [token]
            deploy:
              replicas: 2
              resources:
                limits: {{cpus: "0.5", memory: 64m}}
          worker:
            image: {BUSYBOX}
            command: sleep 3600
            stop_grace_period: 1s
            networks: [mesh]
        networks:
          mesh: {{}}
        configs:
          settings:
            file: ./stack.env
        secrets:
          token:
            file: ./stack.env
        """)
    env = {**os.environ, "DOCKER_HOST": f"unix://{swarm_host.socket}"}
    try:
        r = server.api("POST", f"/api/stacks/create/swarm/string?endpointId={endpoint_id}",
                       json={"Name": name, "StackFileContent": content, "Env": [{"name": "LEVEL", "value": "debug"}]})
        assert r.status_code == 200, r.text
        stack = r.json()
        assert stack["Type"] == 1 and stack["SwarmId"]
        listing = subprocess.run(["docker", "stack", "ls"], env=env, capture_output=True, text=True).stdout
        assert [name, "2"] in [line.split() for line in listing.splitlines()], listing
        client = swarm_host.client()
        api_service = client.services.get(f"{name}_api")
        assert api_service.attrs["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
        config = client.configs.list(filters={"name": f"{name}_settings"})[0]
        assert config.attrs["Spec"]["Labels"]["com.docker.stack.namespace"] == name
        secret = client.secrets.list(filters={"name": f"{name}_token"})[0]
        assert secret.attrs["Spec"]["Labels"]["com.docker.stack.namespace"] == name
        spec = api_service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
        assert spec["Secrets"][0]["File"]["Name"] == "token"
        assert spec["Configs"][0]["File"]["Name"] == "/etc/settings"
        assert client.networks.get(f"{name}_mesh").attrs["Driver"] == "overlay"
        wait_until(lambda: subprocess.run(["docker", "stack", "ps", name, "--filter", "desired-state=running",
                                           "--format", "{{.CurrentState}}"], env=env, capture_output=True,
                                          text=True).stdout.count("Running") == 3, timeout=60, interval=1,
                   message="3 running tasks")
        head, tail = content.split("  worker:")
        api_version = api_service.attrs["Version"]["Index"]
        worker_version = client.services.get(f"{name}_worker").attrs["Version"]["Index"]
        r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}",
                       json={"StackFileContent": head + "  worker:" + tail.replace("sleep 3600", "sleep 3601"),
                             "Env": [{"name": "LEVEL", "value": "debug"}]})
        assert r.status_code == 200, r.text
        assert client.services.get(f"{name}_api").attrs["Version"]["Index"] == api_version
        worker = client.services.get(f"{name}_worker").attrs
        assert worker["Version"]["Index"] > worker_version
        assert worker["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "3601"]
        assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}").status_code == 204
        listing = subprocess.run(["docker", "stack", "ls"], env=env, capture_output=True, text=True).stdout
        assert name not in listing and not client.configs.list(filters={"name": f"{name}_settings"})
        assert not client.secrets.list(filters={"name": f"{name}_token"})
    finally:
        delete_stacks_named(server, name)
        server.api("DELETE", f"/api/endpoints/{endpoint_id}")


# ---------------------------------------------------------------------------------------------------------------
# The stack editor in a real browser
# ---------------------------------------------------------------------------------------------------------------


def test_stack_editor_shows_the_error_line_then_deploys_and_removes(server, engine, project):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian chromium is not installed (make test-deps)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=conftest.CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(30000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())
        page.goto(server.url + "/#/login")
        page.fill("#u", "admin")
        page.fill("#p", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("text=Environments")
        page.goto(server.url + "/#/stacks/new")
        page.fill("#n", project)
        page.fill("#content", f"services:\n  web:\n    image: {BUSYBOX}\n    privileged_mode: true\n")
        page.click("text=Deploy the stack")
        page.wait_for_selector("#err:has-text('line 4')")
        assert page.inner_text(".gutter .bad") == "4"
        page.fill("#content", f"services:\n  web:\n    image: {BUSYBOX}\n"
                              f"    command: sh -c 'echo hello-from-web; exec sleep 3600'\n"
                              f"    stop_grace_period: 1s\n    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")
        page.click("text=Deploy the stack")
        page.wait_for_selector(f"text={project}_web_1: running")
        page.click("button[data-logs]")
        page.wait_for_selector("#logs:has-text('hello-from-web')")
        page.click("button[data-act=remove]")
        page.wait_for_selector("h2:has-text('Stacks')")
        page.goto(server.url + "/#/templates")
        page.wait_for_selector("text=Web server and worker")
        page.goto(server.url + "/#/edge/stacks")
        page.wait_for_selector("text=New edge stack")
        browser.close()
    assert not errors
    assert project_resources(engine, project)[0] == []


def test_prune_removes_dropped_services_and_a_failed_update_keeps_the_running_stack(server, engine, project):
    def service(name: str, image: str = BUSYBOX) -> str:
        return (f"  {name}:\n    image: {image}\n    command: sleep 3600\n    stop_grace_period: 1s\n"
                f"    labels: {{\"{TEST_LABEL}\": \"1\"}}\n")

    both = "services:\n" + service("a") + service("b")
    r = server.api("POST", "/api/stacks?type=2&method=string&endpointId=1",
                   json={"Name": project, "StackFileContent": both})
    assert r.status_code == 200, r.text
    stack = r.json()
    a = engine.containers.get(f"{project}_a_1")
    only_a = "services:\n" + service("a")
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1", json={"StackFileContent": only_a, "Prune": True})
    assert r.status_code == 200, r.text
    assert [c.name for c in project_resources(engine, project)[0]] == [f"{project}_a_1"]
    assert engine.containers.get(f"{project}_a_1").id == a.id

    # an image the engine lacks is pulled; a pull that fails names the image and changes nothing
    missing = "127.0.0.1:1/missing:1"
    r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1",
                   json={"StackFileContent": "services:\n" + service("a", missing)})
    assert r.status_code == 400 and f"pulling image {missing} failed" in r.json()["message"], r.text
    assert server.api("GET", f"/api/stacks/{stack['Id']}/file").json()["StackFileContent"] == only_a
    assert engine.containers.get(f"{project}_a_1").id == a.id


# ---------------------------------------------------------------------------------------------------------------
# Edge stacks through the edge tunnel (runs once the edge tunnel and edge groups are in the tree)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def edge_site(engine, workdir):
    """An edge site that refuses inbound connections, and a server it can reach; skipped without the edge tunnel."""
    edge = pytest.importorskip("test_edge", reason="the edge tunnel (branch edge) is not merged yet")
    host = make_namespace_host(9)  # host numbers: see conftest.NAMESPACE_HOSTS
    host.start_engine()
    host.load_image(engine)
    subprocess.run(["ip", "netns", "exec", host.name, "iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate",
                    "NEW", "-j", "DROP"], check=True)
    srv = start_server(os.path.join(workdir, "edge-stacks-data"), "--edge-heartbeat", "1", bind_host=host.host_address)
    yield edge, host, srv
    srv.stop()
    host.remove()


def test_edge_stack_reaches_an_edge_agent_that_connects_after_the_deploy(edge_site, workdir):
    edge, host, srv = edge_site
    endpoint = edge.create_edge_environment(srv, f"edge-stacks-{PREFIX}")
    r = srv.api("POST", "/api/edge_groups", json={"Name": "sites", "Endpoints": [endpoint["Id"]]})
    assert r.status_code == 200, r.text
    name = f"{PREFIX}edge"
    content = sleeping_compose()
    r = srv.api("POST", "/api/edge_stacks", json={"Name": name, "StackFileContent": content,
                                                   "EdgeGroups": [r.json()["Id"]], "DeploymentType": 0})
    assert r.status_code == 200, r.text
    edge_stack = r.json()
    assert edge_stack["Status"][str(endpoint["Id"])]["Status"] == "pending"
    site_agent = edge.EdgeAgent(endpoint["EdgeKey"], "edge-stacks-site", f"unix://{host.socket}",
                                os.path.join(workdir, "edge-stacks-agent.log"), site=host)
    try:
        def status() -> dict:
            return srv.api("GET", f"/api/edge_stacks/{edge_stack['Id']}").json()["Status"][str(endpoint["Id"])]

        wait_until(lambda: status()["Status"] == "running", timeout=60, interval=0.5,
                   message="the edge stack to run on the site")
        assert host.client().containers.get(f"{name}_web_1").status == "running"
        assert srv.api("DELETE", f"/api/edge_stacks/{edge_stack['Id']}").status_code == 204
        assert not host.client().containers.list(all=True, filters={"label": f"com.docker.compose.project={name}"})
    finally:
        site_agent.stop()
