"""Every key of the Compose Specification a stack reads gives the container docker compose gives: the same files
deployed with `docker-compose` (Debian's 1.29) and as a stack on the same engine, and every container's
configuration compared; keys docker-compose 1.29 does not know are checked on the engine's inspect directly."""
from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import re
import subprocess
import textwrap

import docker
import pytest

from conftest import BUSYBOX, SLOT, TEST_LABEL, one_node_swarm

PREFIX = f"ptpy{SLOT}spec"
NET = f"10.{210 + SLOT}"  # subnets of this slot's own: 10.21x.<file>.0/24 for compose, .<file+100> for the stack

# One small project per concern; several services each. ${...} values differ between the two deployments where both
# would otherwise clash on the engine (published ports, static addresses), and are mapped back before comparing.
CORPUS = {
    "containers": """
        services:
          web:
            image: BUSYBOX
            command: sleep 3600
            entrypoint: ["/bin/sh", "-c", "exec \\"$$@\\"", "--"]
            environment:
              A: "1"
              B: ${B_VALUE:-bee}
              FROM_STACK:
            env_file: stack.env
            labels: {"LABEL": "1", tier: web}
            user: "1000:1000"
            working_dir: /tmp
            hostname: webhost
            domainname: example.test
            tty: true
            stdin_open: true
            stop_signal: SIGINT
            stop_grace_period: 3s
            restart: unless-stopped
            init: true
            read_only: true
            mac_address: "02:42:ac:11:00:99"
            expose: ["3000", "4000-4001/udp"]
            ports: ["127.0.0.1::80", "127.0.0.1:${PORT_A}-${PORT_B}:81-82",
                    {target: 90, published: "${PORT_C}", protocol: udp}]
            healthcheck: {test: ["CMD", "true"], interval: 1s, timeout: 20s, retries: 20, start_period: 1s}
          res:
            image: BUSYBOX
            command: sleep 3600
            labels: ["LABEL=1"]
            mem_limit: 64m
            memswap_limit: 128m
            mem_reservation: 32m
            mem_swappiness: 10
            cpu_shares: 512
            cpu_quota: 50000
            cpu_period: 100000
            cpuset: "0"
            pids_limit: 50
            oom_score_adj: 100
            oom_kill_disable: true
            shm_size: 32m
            ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 100}
            sysctls: {net.core.somaxconn: 512}
            security_opt: [no-new-privileges:true]
            cap_add: [NET_ADMIN]
            cap_drop: [MKNOD]
            privileged: false
            group_add: ["100"]
            devices: ["/dev/null:/dev/mynull:rw"]
            device_cgroup_rules: ["c 1:3 mr"]
            tmpfs: ["/run:size=1m", /cache]
            dns: [10.0.0.53]
            dns_search: [example.test]
            dns_opt: [ndots:2]
            extra_hosts: ["db.local:10.0.0.5", "other:10.0.0.6"]
            healthcheck: {disable: true}
            logging: {driver: json-file, options: {max-size: 1m}}
            blkio_config: {weight: 300}
            cgroup_parent: /ptpy-spec-test
            runtime: runc
            userns_mode: host
            pid: host
            ipc: shareable
          dep:
            image: BUSYBOX
            command: [sleep, "3600"]
            labels: {"LABEL": "1"}
            scale: 2
            deploy: {resources: {limits: {cpus: "0.25", memory: 48m}, reservations: {memory: 16m}}}
            ipc: service:res
            network_mode: service:web
            restart: on-failure:3
            depends_on: {web: {condition: service_healthy}, res: {condition: service_started}}
        """,
    "networks": """
        services:
          front:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            networks:
              back: {aliases: [api, api2], ipv4_address: "${NET}.10", priority: 10}
              edge: {priority: 100}
              default:
            links: ["db:database", "cache"]
            depends_on: [db, cache]
          db:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            networks: [back]
          cache:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            networks: {back: {aliases: [memo]}}
          alone:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            network_mode: none
          hostnet:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            network_mode: host
        networks:
          default:
            labels: {"LABEL": "1"}
          back:
            driver: bridge
            driver_opts: {com.docker.network.driver.mtu: "1400"}
            ipam: {config: [{subnet: "${NET}.0/24", ip_range: "${NET}.0/25", gateway: "${NET}.1"}]}
            labels: {"LABEL": "1"}
          edge:
            internal: true
            attachable: true
            labels: {"LABEL": "1"}
        """,
    "volumes": """
        services:
          store:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            volumes:
              - data:/data
              - /anonymous
              - ./made-by-the-engine:/made:ro
              - {type: volume, source: data, target: /nocopy, volume: {nocopy: true}}
              - {type: volume, target: /anonymous-long}
              - memory:/memory:rw
          binder:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            volumes:
              - {type: bind, source: ., target: /project, read_only: true}
          scratch:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            volumes:
              - {type: tmpfs, target: /scratch, tmpfs: {size: 1048576}}
          reader:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            volumes_from: ["store:ro"]
        volumes:
          data:
            labels: {"LABEL": "1"}
          memory:
            driver_opts: {type: tmpfs, device: tmpfs, o: size=1m}
            labels: {"LABEL": "1"}
        """,
    "reuse": """
        x-base: &base
          image: BUSYBOX
          command: sleep 3600
          labels: {"LABEL": "1"}
        services:
          base:
            <<: *base
            environment: {FROM: base, KEEP: "yes"}
            dns: 10.0.0.1
            cap_add: [NET_ADMIN]
          child:
            extends: base
            environment: {FROM: child}
            cap_add: [SYS_TIME]
            healthcheck: {test: "true", interval: 1m}
            restart: "no"
          dollars:
            <<: *base
            environment:
              LITERAL: "$$HOME"
              DEFAULT: "${UNSET_VAR-default}"
              EMPTY_DEFAULT: "${EMPTY:-empty default}"
              EMPTY_KEPT: "${EMPTY-not used}"
              REQUIRED: "${PORT_A:?the port is needed}"
              PLAIN: $PORT_B
          optional:
            <<: *base
            profiles: [debug]
          enabled:
            <<: *base
            profiles: [web, debug]
        """,
    "ordering": """
        services:
          job:
            image: BUSYBOX
            command: "true"
            labels: {"LABEL": "1"}
          after:
            image: BUSYBOX
            command: sleep 3600
            labels: {"LABEL": "1"}
            isolation: default
            platform: linux/amd64
            pull_policy: if_not_present
            depends_on: {job: {condition: service_completed_successfully}}
            healthcheck: {test: "exit 0", interval: 30s}
            stop_grace_period: 1m30s
            cap_drop: [ALL]
            environment: [A=1, FROM_STACK, NOT_GIVEN_ANYWHERE]
            networks:
              v6: {ipv6_address: "fd00:${NET6}::5", link_local_ips: ["169.254.8.8"]}
        networks:
          v6:
            enable_ipv6: true
            ipam: {config: [{subnet: "fd00:${NET6}::/64"}]}
            labels: {"LABEL": "1"}
        """,
}
# Per deployment: (docker-compose's values, the stack's values).
SIDE_ENV = {"PORT_A": ("18601", "18701"), "PORT_B": ("18602", "18702"), "PORT_C": ("18603", "18703"),
            "FROM_STACK": ("given", "given"), "EMPTY": ("", ""), "COMPOSE_PROFILES": ("web", "web")}

# Compose's own labels that differ by tool rather than by file: its hash of the service, and where the file was
# (docker-compose writes its -f argument as given; a stack, the absolute path of its file in the data directory).
# A stack also labels what it makes with its record's id (a creation cut short by a server's death is taken over).
TOOL_LABELS = {"com.docker.compose.config-hash", "com.docker.compose.version",
               "com.docker.compose.project.config_files", "io.portainer-py.stack.id"}
# Deliberate, documented differences: a pattern of the compared path -> why.
EXCEPTIONS = {
    r"\.networks\.\w+\.Attachable$":
        "docker-compose 1.29 makes every network attachable (for `docker-compose run` on Swarm); docker compose v2 "
        "and a stack make a network attachable when the file says `attachable: true`",
    r"\('binder', '1'\)\.(HostConfig\.Binds|HostConfig\.Mounts|Mounts)$":
        "a long-syntax bind that may create its host path (create_host_path, true unless set false) is sent as a "
        "bind (HostConfig.Binds) so the engine creates the path, as docker compose v2 does; docker-compose 1.29 "
        "sends a mount, which fails on a missing path",
    r"\.HostConfig\.VolumesFrom$":
        "volumes_from names the other service's container; docker-compose 1.29 writes its id. The engine resolves "
        "either to the same container at creation (the mounts compared are the same)",
}


def text_of(name: str) -> str:
    return textwrap.dedent(CORPUS[name]).replace("BUSYBOX", BUSYBOX).replace('"LABEL"', f'"{TEST_LABEL}"') \
        .replace("LABEL=1", f"{TEST_LABEL}=1")


def side_env(index: int, side: int) -> dict[str, str]:
    env = {key: values[side] for key, values in SIDE_ENV.items()}
    env["NET"] = f"{NET}.{index + 100 * side}"
    env["NET6"] = f"d{SLOT}{'ab'[side]}{index}"
    return env


def remove_project(engine: docker.DockerClient, project: str) -> None:
    label = {"label": f"com.docker.compose.project={project}"}
    for container in engine.containers.list(all=True, filters=label):
        container.remove(force=True, v=True)
    for network in engine.networks.list(filters=label):
        network.remove()
    for volume in engine.volumes.list(filters=label):
        volume.remove(force=True)


def delete_stack(server, name: str) -> None:
    for stack in server.api("GET", "/api/stacks").json():
        if stack["Name"] == name:
            server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={stack['EndpointId']}", timeout=120)


def deploy_with_docker_compose(project: str, text: str, env: dict, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "docker-compose.yml"), "w") as f:
        f.write(text)
    with open(os.path.join(directory, "stack.env"), "w") as f:  # what a stack writes beside its file
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(["docker-compose", "-p", project, "up", "-d"], cwd=directory, capture_output=True,
                            text=True, timeout=150, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr


def deploy_as_stack(server, project: str, text: str, env: dict) -> dict:
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", timeout=150, json={
        "Name": project, "StackFileContent": text, "Env": [{"name": k, "value": v} for k, v in env.items()]})
    assert r.status_code == 200, r.text
    return r.json()


def normalized_container(engine: docker.DockerClient, container, replacements: list[tuple[str, str]]) -> dict:
    attrs = container.attrs
    config, host = dict(attrs["Config"]), dict(attrs["HostConfig"])
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if k not in TOOL_LABELS}
    # Deliberate: `environment: [NAME]` with NAME set nowhere reaches docker-compose 1.29's container as a bare
    # "NAME" (an engine no-op); a stack leaves it out, as docker compose v2 does. Only entries with a value compare.
    config["Env"] = sorted(e for e in config.get("Env") or [] if "=" in e)
    mounts = sorted(({k: m.get(k) for k in ("Type", "Source", "Destination", "Mode", "RW", "Propagation", "Name")}
                     for m in attrs["Mounts"]), key=lambda m: m["Destination"])
    for mount in mounts:
        if mount["Type"] == "volume" and len(mount["Name"] or "") == 64:  # an anonymous volume: a random name
            mount["Name"] = mount["Source"] = "<anonymous>"
    networks = {name: {"Aliases": n.get("Aliases") or [], "IPAMConfig": n.get("IPAMConfig"),
                       "Links": n.get("Links") or [],
                       "IPAddress": n.get("IPAddress") if (n.get("IPAMConfig") or {}).get("IPv4Address") else ""}
                for name, n in attrs["NetworkSettings"]["Networks"].items()}
    text = json.dumps({"Config": config, "HostConfig": host, "Mounts": mounts, "Networks": networks},
                      sort_keys=True)
    for old, new in replacements:
        text = text.replace(old, new)
    view = json.loads(text)
    view["HostConfig"]["Binds"] = sorted(view["HostConfig"]["Binds"] or [])  # an order the engine ignores
    view["HostConfig"]["Mounts"] = sorted(view["HostConfig"].get("Mounts") or [], key=lambda m: m["Target"])
    for network in view["Networks"].values():  # the engine keeps aliases and links in no particular order
        network["Aliases"], network["Links"] = sorted(network["Aliases"]), sorted(network["Links"])
    return view


def project_view(engine: docker.DockerClient, project: str, directory: str, env: dict) -> dict:
    """Every container of a project by service and number, normalized so two projects can be compared."""
    containers = engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    replacements = [(directory, "<project dir>")]
    for container in containers:
        name = f"<{container.labels['com.docker.compose.service']}_" \
               f"{container.labels['com.docker.compose.container-number']}>"
        replacements += [(container.id, name), (container.id[:12], name)]
    replacements += [(value, f"<{key}>") for key, value in env.items() if key.startswith(("PORT_", "NET"))]
    replacements.append((project, "<project>"))
    view = {}
    for container in containers:
        key = (container.labels["com.docker.compose.service"], container.labels["com.docker.compose.container-number"])
        view[key] = normalized_container(engine, container, replacements)
    networks = {}
    for network in engine.networks.list(filters={"label": f"com.docker.compose.project={project}"}):
        attrs = network.attrs
        text = json.dumps({k: attrs.get(k) for k in ("Driver", "EnableIPv6", "IPAM", "Internal", "Attachable",
                                                     "Options")}
                          | {"Labels": {k: v for k, v in attrs["Labels"].items() if k not in TOOL_LABELS}},
                          sort_keys=True)
        for old, new in replacements:
            text = text.replace(old, new)
        network = json.loads(text)
        for pool in network["IPAM"]["Config"] or []:
            if not pool["Subnet"].startswith((f"{NET}.", "fd00:<NET6>")):  # a pool the engine picked
                pool.update(Subnet="<picked by the engine>", Gateway="<picked by the engine>")
        networks[attrs["Labels"]["com.docker.compose.network"]] = network
    return {"containers": view, "networks": networks}


def differences(ours: dict, theirs: dict, where: str = "") -> tuple[list[str], int]:
    """The leaves that differ, and how many leaves were compared."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        found, count = [], 0
        for key in sorted(set(ours) | set(theirs)):
            if any(re.search(pattern, f"{where}.{key}") for pattern in EXCEPTIONS):
                continue
            more, n = differences(ours.get(key), theirs.get(key), f"{where}.{key}")
            found += more
            count += n
        return found, count
    return ([] if ours == theirs else [f"{where}: stack {ours!r} != docker-compose {theirs!r}"]), 1


@pytest.fixture
def corpus_projects(server, engine, tmp_path):
    names = {name: (f"{PREFIX}dc{name}", f"{PREFIX}st{name}") for name in CORPUS}
    for compose_project, stack_project in names.values():
        delete_stack(server, stack_project)
        remove_project(engine, compose_project)
        remove_project(engine, stack_project)
    yield names
    for compose_project, stack_project in names.values():
        delete_stack(server, stack_project)
        remove_project(engine, compose_project)
        remove_project(engine, stack_project)


def test_a_stack_makes_the_containers_docker_compose_makes_from_the_same_files(server, engine, corpus_projects,
                                                                               tmp_path):
    def deploy(index_and_name):
        index, name = index_and_name
        compose_project, stack_project = corpus_projects[name]
        text = text_of(name)
        directory = str(tmp_path / name)
        compose_env, stack_env = side_env(index, 0), side_env(index, 1)
        deploy_with_docker_compose(compose_project, text, compose_env, directory)
        stack = deploy_as_stack(server, stack_project, text, stack_env)
        theirs = project_view(engine, compose_project, directory, compose_env)
        ours = project_view(engine, stack_project, stack["ProjectPath"], stack_env)
        return name, ours, theirs

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(deploy, enumerate(CORPUS, start=1)))
    problems, compared = [], 0
    for name, ours, theirs in results:
        assert set(ours["containers"]) == set(theirs["containers"]), name
        found, count = differences(ours, theirs, name)
        problems += found
        compared += count
    print(f"\ndifferential: {len(CORPUS)} files, "
          f"{sum(len(r[1]['containers']) for r in results)} containers, {compared} fields compared")
    assert not problems, "\n".join(problems)


BEYOND_COMPOSE_1 = """
    services:
      db:
        image: BUSYBOX
        command: sleep 3600
        labels: {"LABEL": "1"}
        environment: {GENERATION: "${GENERATION}"}
      web:
        image: BUSYBOX
        command: sleep 3600
        labels: {"LABEL": "1"}
        environment:
          NESTED: "${UNSET_A:-${UNSET_B:-nested default}}"
          ALTERNATIVE: "${GENERATION:+generation given}"
        env_file: [{path: missing.env, required: false}]
        ports: [{target: 80, host_ip: 127.0.0.1}]
        deploy:
          resources: {limits: {pids: 30}}
          restart_policy: {condition: on-failure, max_attempts: 2}
        uts: host
        attach: false
        develop: {watch: [{path: ., action: sync, target: /app}]}
        pull_policy: never
        platform: linux/amd64
        depends_on:
          db: {condition: service_started, restart: true}
          ghost: {condition: service_started, required: false}
      sidecar:
        image: BUSYBOX
        command: sleep 3600
        labels: {"LABEL": "1"}
        network_mode: service:db
      optional:
        image: BUSYBOX
        profiles: [never-enabled]
    """


def test_keys_docker_compose_1_29_does_not_know_reach_the_engine(server, engine):
    name = f"{PREFIX}beyond"
    delete_stack(server, name)
    remove_project(engine, name)
    text = textwrap.dedent(BEYOND_COMPOSE_1).replace("BUSYBOX", BUSYBOX).replace('"LABEL"', f'"{TEST_LABEL}"')
    try:
        stack = deploy_as_stack(server, name, text, {"GENERATION": "1"})
        web = engine.containers.get(f"{name}_web_1")
        env = web.attrs["Config"]["Env"]
        assert "NESTED=nested default" in env and "ALTERNATIVE=generation given" in env
        host = web.attrs["HostConfig"]
        assert host["PortBindings"] == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
        assert host["PidsLimit"] == 30 and host["UTSMode"] == "host"
        assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 2}
        assert web.attrs["Platform"] == "linux"
        assert not engine.containers.list(all=True, filters={"name": f"{name}_optional"})
        started = web.attrs["State"]["StartedAt"]
        sidecar = engine.containers.get(f"{name}_sidecar_1")
        db = engine.containers.get(f"{name}_db_1")
        assert sidecar.attrs["HostConfig"]["NetworkMode"] == f"container:{db.id}"
        # depends_on.db.restart: db recreated (its env changed) restarts web, which itself did not change
        r = server.api("PUT", f"/api/stacks/{stack['Id']}?endpointId=1", timeout=150, json={
            "StackFileContent": text.replace("${GENERATION:+generation given}", "generation given"),
            "Env": [{"name": "GENERATION", "value": "2"}]})
        assert r.status_code == 200, r.text
        again = engine.containers.get(f"{name}_web_1")
        assert again.id == web.id and again.attrs["State"]["StartedAt"] > started
        # network_mode: service:db follows db into its new network namespace
        new_db = engine.containers.get(f"{name}_db_1")
        assert engine.containers.get(f"{name}_sidecar_1").attrs["HostConfig"]["NetworkMode"] == \
            f"container:{new_db.id}" != f"container:{db.id}"
    finally:
        delete_stack(server, name)
        remove_project(engine, name)


def test_a_key_that_cannot_apply_is_refused_with_its_file_line_and_reason(server):
    text = f"services:\n  web:\n    image: {BUSYBOX}\n    healthcheck:\n      test: 'true'\n      start_interval: 1s\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                   json={"Name": f"{PREFIX}refused", "StackFileContent": text})
    assert r.status_code == 400
    assert r.json()["message"] == ("docker-compose.yml, line 6: 'services.web.healthcheck.start_interval' is not "
                                   "supported: it needs Docker Engine 25 (API 1.44); portainer.py speaks API 1.41")


@pytest.fixture
def stack_managing_user(server, make_user):
    """A standard user on environment 1, where standard users may manage stacks (the other settings at their
    defaults: off)."""
    r = server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": True}})
    assert r.status_code == 200, r.text
    yield make_user()
    server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": False}})


@pytest.mark.parametrize("key, line, setting", [
    ("privileged: true", "privileged", "allowPrivilegedModeForRegularUsers"),
    ("volumes: ['/etc:/host-etc:ro']", "volumes", "allowBindMountsForRegularUsers"),
    ("pid: host", "pid", "allowHostNamespaceForRegularUsers"),
    ("devices: ['/dev/null:/dev/x']", "devices", "allowDeviceMappingForRegularUsers"),
    ("cap_add: [NET_ADMIN]", "cap_add", "allowContainerCapabilitiesForRegularUsers"),
    ("sysctls: {net.core.somaxconn: 1024}", "sysctls", "allowSysctlSettingForRegularUsers"),
    ("cgroup_parent: /custom", "cgroup_parent", "reserved for administrators"),
])
def test_standard_user_is_refused_a_stack_key_their_security_settings_forbid_by_its_name(
        server, stack_managing_user, key, line, setting):
    _, token, _ = stack_managing_user
    text = f"services:\n  db:\n    image: {BUSYBOX}\n  web:\n    image: {BUSYBOX}\n    command: sleep 1\n    {key}\n"
    r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", token=token,
                   json={"Name": f"{PREFIX}standard", "StackFileContent": text})
    assert r.status_code == 403, r.text
    message = r.json()["message"]
    assert message.startswith("docker-compose.yml, line 7: not allowed for non-administrators"), message
    assert f"'services.web.{line}'" in message and setting in message, message


@pytest.mark.parametrize("key", ["network_mode: container:{victim}", "pid: container:{victim}",
                                 "ipc: container:{victim}", "volumes_from: ['container:{victim}']",
                                 "external_links: ['{victim}:alias']"])
def test_standard_user_cannot_join_or_read_a_container_that_is_not_theirs_through_a_stack(
        server, engine, stack_managing_user, key):
    _, token, _ = stack_managing_user
    victim = engine.containers.run(BUSYBOX, "sleep 3600", detach=True, name=f"{PREFIX}victim-{os.getpid()}",
                                   labels={TEST_LABEL: "1"}, network_mode="none")
    binds = key.startswith("volumes_from")  # which the bind-mount setting governs first: allowed here
    server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowStackManagementForRegularUsers": True,
                                                                     "allowBindMountsForRegularUsers": binds}})
    try:
        text = f"services:\n  web:\n    image: {BUSYBOX}\n    {key.format(victim=victim.name)}\n"
        r = server.api("POST", "/api/stacks/create/standalone/string?endpointId=1", token=token,
                       json={"Name": f"{PREFIX}joiner", "StackFileContent": text})
        assert r.status_code == 403 and f"access denied to container {victim.name}" in r.json()["message"], r.text
        assert not engine.containers.list(all=True, filters={"label": f"com.docker.compose.project={PREFIX}joiner"})
    finally:
        server.api("PUT", "/api/endpoints/1", json={"SecuritySettings": {"allowBindMountsForRegularUsers": False}})
        victim.remove(force=True)


SWARM_KEYS = """
    services:
      api:
        image: BUSYBOX
        command: sleep 3600
        stop_grace_period: 1s
        labels: {"LABEL": "1"}
        dns: [10.0.0.53]
        dns_search: [example.test]
        extra_hosts: ["db.local:10.0.0.5"]
        init: true
        read_only: true
        stop_signal: SIGINT
        group_add: ["100"]
        ulimits: {nofile: {soft: 1024, hard: 2048}}
        restart: on-failure:3
        expose: ["80"]
        secrets: [token]
        configs: [{source: motd, target: /etc/motd, mode: 0440}]
        deploy:
          replicas: 1
          endpoint_mode: dnsrr
          labels: {tier: api}
          placement: {constraints: [node.role==manager], max_replicas_per_node: 1}
          update_config: {parallelism: 1, delay: 2s, order: start-first}
          rollback_config: {parallelism: 1, failure_action: pause}
          resources: {limits: {memory: 64m, pids: 40}}
    secrets:
      token: {environment: TOKEN}
    configs:
      motd: {content: "hello ${NAME}"}
    """


@pytest.fixture
def swarm_endpoint(server, engine):
    """A single-node swarm on a namespace host of this file's own, as an environment of the session's server."""
    with one_node_swarm(engine, 21) as host:  # host numbers: see conftest.NAMESPACE_HOSTS
        r = server.api("POST", "/api/endpoints", json={"Name": f"{PREFIX}-swarm", "EndpointCreationType": 1,
                                                       "URL": f"unix://{host.socket}"})
        assert r.status_code == 200, r.text
        yield host, r.json()["Id"]
        server.api("DELETE", f"/api/endpoints/{r.json()['Id']}")


def test_a_swarm_stack_gives_its_services_the_keys_a_swarm_service_has(server, swarm_endpoint):
    host, endpoint_id = swarm_endpoint
    name = f"{PREFIX}swarmkeys"
    text = textwrap.dedent(SWARM_KEYS).replace("BUSYBOX", BUSYBOX).replace('"LABEL"', f'"{TEST_LABEL}"')
    r = server.api("POST", f"/api/stacks/create/swarm/string?endpointId={endpoint_id}", timeout=150, json={
        "Name": name, "StackFileContent": text, "Env": [{"name": "TOKEN", "value": "s3cret"},
                                                        {"name": "NAME", "value": "world"}]})
    assert r.status_code == 200, r.text
    client = host.client()
    spec = client.services.get(f"{name}_api").attrs["Spec"]
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["DNSConfig"] == {"Nameservers": ["10.0.0.53"], "Search": ["example.test"]}
    assert container["Hosts"] == ["10.0.0.5 db.local"] and container["Groups"] == ["100"]
    assert container["Init"] is True and container["ReadOnly"] is True and container["StopSignal"] == "SIGINT"
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert spec["TaskTemplate"]["RestartPolicy"]["MaxAttempts"] == 3
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role==manager"]
    assert spec["TaskTemplate"]["Placement"]["MaxReplicas"] == 1
    assert spec["TaskTemplate"]["Resources"]["Limits"] == {"MemoryBytes": 64 * 1024 ** 2, "Pids": 40}
    assert spec["UpdateConfig"]["Order"] == "start-first" and spec["UpdateConfig"]["Delay"] == 2_000_000_000
    assert spec["RollbackConfig"]["FailureAction"] == "pause"
    assert spec["EndpointSpec"]["Mode"] == "dnsrr" and spec["Labels"]["tier"] == "api"
    assert [s["File"]["Name"] for s in container["Secrets"]] == ["token"]
    assert [(c["File"]["Name"], c["File"]["Mode"]) for c in container["Configs"]] == [("/etc/motd", 0o440)]
    config = client.configs.list(filters={"name": f"{name}_motd"})[0]
    assert base64.b64decode(config.attrs["Spec"]["Data"]) == b"hello world"
    stack = next(s for s in server.api("GET", "/api/stacks").json() if s["Name"] == name)
    assert server.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId={endpoint_id}",
                      timeout=120).status_code in (200, 204)
