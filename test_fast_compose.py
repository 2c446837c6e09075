"""Compose files as a stack's author writes them: parsed, interpolated from the stack's env and checked.

Fast unit tests (`make test-fast`): the real ComposeFile, no engine.
"""
from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import portainer


def compose(text: str, env: dict | None = None, swarm: bool = False, project_dir: str = "/nonexistent/stack",
            files: dict | None = None) -> portainer.ComposeFile:
    return portainer.ComposeFile(textwrap.dedent(text), env or {}, "shop", project_dir, swarm=swarm, files=files)


def refusal(text: str, env: dict | None = None, **options) -> str:
    with pytest.raises(portainer.BadRequest) as caught:
        compose(text, env, **options)
    assert caught.value.status == 400
    return caught.value.message


def test_variables_from_the_stack_env_fill_image_command_and_environment():
    stack = compose("""
        services:
          web:
            image: "busybox:${TAG}"
            command: echo $GREETING ${NAME}
            environment:
              - MODE=${MODE}
              - UNSET=[$NOT_SET]
        """, {"TAG": "1.36", "GREETING": "hello", "NAME": "world", "MODE": "production"})
    web = stack.services["web"]
    assert web["image"] == "busybox:1.36"
    assert web["command"] == ["echo", "hello", "world"]
    assert web["environment"] == {"MODE": "production", "UNSET": "[]"}


def test_a_default_is_used_when_the_variable_is_unset_or_empty_with_colon_dash():
    text = """
        services:
          web:
            image: "busybox:${TAG:-latest}"
            labels:
              tier: "${TIER-backend}"
        """
    unset = compose(text).services["web"]
    assert unset["image"] == "busybox:latest" and unset["labels"] == {"tier": "backend"}
    empty = compose(text, {"TAG": "", "TIER": ""}).services["web"]
    # ":-" replaces an empty value, "-" keeps it, as in docker compose
    assert empty["image"] == "busybox:latest" and empty["labels"] == {"tier": ""}
    given_values = compose(text, {"TAG": "2", "TIER": "front"}).services["web"]
    assert given_values["image"] == "busybox:2" and given_values["labels"] == {"tier": "front"}


def test_a_default_may_itself_name_a_variable():
    web = compose("""
        services:
          web:
            image: "${IMAGE:-$FALLBACK}"
        """, {"FALLBACK": "busybox:local"}).services["web"]
    assert web["image"] == "busybox:local"


def test_a_double_dollar_is_a_literal_dollar_and_is_not_interpolated():
    web = compose("""
        services:
          web:
            image: busybox
            command: ["sh", "-c", "echo $$HOME costs $${PRICE} $$"]
        """, {"HOME": "/should/not/appear", "PRICE": "10"}).services["web"]
    assert web["command"] == ["sh", "-c", "echo $HOME costs ${PRICE} $"]


@settings(deadline=None)  # a shared 2-core machine: a slow example is not a failure
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_text_with_its_dollars_doubled_comes_back_unchanged(text):
    stack = compose("services: {web: {image: busybox}}")
    assert stack.interpolate(text.replace("$", "$$"), 1) == text


def test_a_required_variable_that_is_missing_is_refused_with_its_message_and_line():
    text = """
        services:
          web:
            image: busybox
            environment:
              DATABASE_URL: "${DATABASE_URL:?set the database address}"
        """
    message = refusal(text)
    assert message == "docker-compose.yml, line 6: variable DATABASE_URL is required: set the database address"
    assert "required" in refusal(text, {"DATABASE_URL": ""})
    assert compose(text, {"DATABASE_URL": "pg://db"}).services["web"]["environment"] == {"DATABASE_URL": "pg://db"}


@pytest.mark.parametrize("value", ["${}", "${1ST}", "${NAME:x}", "cost $5", "${UNCLOSED", "${A:-${B:-x}"])
def test_an_invalid_interpolation_is_refused_naming_its_line(value):
    message = refusal(f"""
        services:
          web:
            image: busybox
            hostname: "{value}"
        """)
    assert message.startswith("docker-compose.yml, line 5: invalid interpolation"), message


def test_an_unknown_key_is_refused_naming_the_key_and_its_line():
    assert refusal("""
        services:
          web:
            image: busybox
            privileged_mode: true
        """) == "docker-compose.yml, line 5: unsupported key 'services.web.privileged_mode'"
    assert refusal("""
        services:
          web:
            image: busybox
            deploy:
              resources:
                limits:
                  pid: 10
        """) == "docker-compose.yml, line 8: unsupported key 'services.web.deploy.resources.limits.pid'"
    assert "unsupported key 'build'" in refusal("build: .\nservices: {web: {image: busybox}}")


def test_extension_keys_starting_with_x_are_allowed_anywhere():
    stack = compose("""
        x-common: &common
          image: busybox
        services:
          web:
            <<: *common
            x-note: ignored by everyone
        """)
    assert stack.services["web"]["image"] == "busybox"


def test_a_duplicate_key_is_refused_naming_its_line():
    message = refusal("""
        services:
          web:
            image: busybox
            image: nginx
        """)
    assert message.startswith("docker-compose.yml, line 5: invalid YAML") and "duplicate key 'image'" in message


def test_broken_yaml_is_refused_naming_its_line():
    message = refusal("services:\n  web:\n    image: [busybox\n")
    assert message.startswith("docker-compose.yml, line ") and "invalid YAML" in message


@pytest.mark.parametrize("text, expected", [
    ("[1, 2]", "a compose file is a mapping with a 'services' key"),
    ("version: '3'", "'services' must be a mapping with at least one service"),
    ("services: {}", "'services' must be a mapping with at least one service"),
    ("services: {web: {command: true}}", "service 'web' needs an 'image'"),
])
def test_a_file_without_a_usable_service_is_refused_with_what_is_missing(text, expected):
    assert expected in refusal(text)


def test_a_file_that_expands_without_end_is_refused():
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefg":
        previous = chr(ord(level) - 1)
        laughs.append(f"x-{level}: &{level} [*{previous}, *{previous}, *{previous}, *{previous}, *{previous}, "
                      f"*{previous}, *{previous}, *{previous}, *{previous}, *{previous}]")
    text = "x-" + "\n".join(laughs) + "\nservices: {web: {image: busybox, labels: {l: x}}}\n"
    assert "expands to more than" in refusal(text)


def test_ports_are_read_in_short_and_long_syntax_with_ranges():
    web = compose("""
        services:
          web:
            image: busybox
            ports:
              - "8080:80"
              - "127.0.0.1:5353:53/udp"
              - "9000"
              - target: 443
                published: 8443
        """).services["web"]
    assert web["ports"] == [
        {"target": 80, "published": 8080, "protocol": "tcp", "host_ip": "", "mode": "ingress"},
        {"target": 53, "published": 5353, "protocol": "udp", "host_ip": "127.0.0.1", "mode": "ingress"},
        {"target": 9000, "published": None, "protocol": "tcp", "host_ip": "", "mode": "ingress"},
        {"target": 443, "published": 8443, "protocol": "tcp", "host_ip": "", "mode": "ingress"},
    ]
    ranges = compose("services: {web: {image: busybox, ports: ['8000-8010:80', '9000-9001:90-91/udp', "
                     "'[::1]:7000:70', {target: 60, published: '6000-6005'}]}}").services["web"]["ports"]
    assert [(p["target"], p["published"], p["protocol"], p["host_ip"]) for p in ranges] == [
        (80, "8000-8010", "tcp", ""), (90, 9000, "udp", ""), (91, 9001, "udp", ""), (70, 7000, "tcp", "::1"),
        (60, "6000-6005", "tcp", "")]
    assert "maps ranges of different sizes" in refusal("services: {web: {image: busybox, ports: ['1-3:80-81']}}")
    assert "publishes a range on one port" in refusal("services: {web: {image: busybox, ports: ['1:80-81']}}")


def test_named_volumes_must_be_declared_and_bind_mounts_resolve_inside_the_project(tmp_path):
    stack = compose("""
        services:
          db:
            image: busybox
            volumes:
              - data:/var/lib/data
              - ./conf:/etc/conf:ro
        volumes:
          data:
        """, project_dir=str(tmp_path))
    assert [{k: m[k] for k in ("type", "source", "target", "read_only")} for m in stack.services["db"]["mounts"]] == [
        {"type": "volume", "source": "shop_data", "target": "/var/lib/data", "read_only": False},
        {"type": "bind", "source": str(tmp_path / "conf"), "target": "/etc/conf", "read_only": True},
    ]
    assert "volume 'cache' is used by a service but not declared" in refusal(
        "services: {db: {image: busybox, volumes: ['cache:/cache']}}")


def test_an_env_file_outside_the_stacks_files_is_refused(tmp_path):
    (tmp_path / "app.env").write_text("# comment\nMODE=from-file\nEMPTY=\n")
    web = compose("services: {web: {image: busybox, env_file: app.env, environment: {EXTRA: 1}}}",
                  project_dir=str(tmp_path)).services["web"]
    assert web["environment"] == {"MODE": "from-file", "EMPTY": "", "EXTRA": "1"}
    assert "'../../etc/passwd' is outside the stack's files" in refusal(
        "services: {web: {image: busybox, env_file: ../../etc/passwd}}", project_dir=str(tmp_path))


def test_services_start_after_what_they_depend_on_and_a_cycle_is_refused():
    stack = compose("""
        services:
          web: {image: busybox, depends_on: [api]}
          api: {image: busybox, depends_on: {db: {condition: service_healthy}}}
          db: {image: busybox}
        """)
    assert stack.order == ["db", "api", "web"]
    assert stack.services["api"]["depends_on"] == {"db": {"condition": "service_healthy", "restart": False,
                                                          "required": True}}
    assert "in a cycle: a -> b -> a" in refusal("services: {a: {image: x, depends_on: [b]}, "
                                                 "b: {image: x, depends_on: [a]}}")
    assert "names 'ghost', which is not a service" in refusal("services: {a: {image: x, depends_on: [ghost]}}")


def test_durations_and_sizes_are_read_as_compose_writes_them():
    web = compose("""
        services:
          web:
            image: busybox
            stop_grace_period: 1m30s
            healthcheck:
              test: wget -q localhost
              interval: 500ms
              retries: 3
            deploy:
              resources:
                limits: {cpus: "0.5", memory: 512m}
        """).services["web"]
    assert web["stop_grace_period"] == 90 * 10 ** 9
    assert web["healthcheck"] == {"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 500 * 10 ** 6, "Retries": 3}
    assert web["limits"] == {"nano_cpus": 500_000_000, "memory": 512 * 1024 ** 2}
    assert "line 1: 'services.web.stop_grace_period' must be a duration" in refusal(
        "services: {web: {image: busybox, stop_grace_period: soon}}")
    assert "must be a size such as 512m" in refusal(
        "services: {web: {image: busybox, deploy: {resources: {limits: {memory: lots}}}}}")


def test_swarm_only_keys_are_refused_in_a_compose_stack_and_read_in_a_swarm_stack(tmp_path):
    text = """
        services:
          web:
            image: busybox
            configs: [site]
            deploy:
              mode: global
        configs:
          site:
            file: ./site.conf
        """
    # configs are mounted from the project outside Swarm (test_compose_projects.py); deploy.mode is Swarm's only
    assert "'services.web.deploy.mode: global' needs Swarm" in refusal(text, project_dir=str(tmp_path),
                                                                        files={"site.conf": b"listen 80"})
    swarm = compose(text, swarm=True, project_dir=str(tmp_path), files={"site.conf": b"listen 80"})
    assert swarm.configs["site"]["data"] == b"listen 80" and swarm.configs["site"]["name"] == "shop_site"
    assert swarm.services["web"]["mode"] == "global"
    assert swarm.services["web"]["configs"] == [{"source": "site", "target": "site"}]


# -- every key of the Compose Specification (issue #15) ---------------------------------------------------------------
def deployment(text: str, env: dict | None = None, swarm: bool = False, files: dict | None = None):
    stack = compose(text, env, swarm=swarm, files=files)
    return (portainer.SwarmDeployment if swarm else portainer.ComposeDeployment)(None, stack)


@pytest.mark.parametrize("value, env, expected", [
    ("${A:-${B:-inner}}", {}, "inner"),
    ("${A:-${B:-inner}}", {"B": "b"}, "b"),
    ("${A:-${B:-inner}}", {"A": "a"}, "a"),
    ("${A:+alternative}", {"A": "set"}, "alternative"),
    ("${A:+alternative}", {"A": ""}, ""),
    ("${A+alternative}", {"A": ""}, "alternative"),
    ("${A+alternative}", {}, ""),
    ("${A?unused}", {"A": ""}, ""),
    ("${A:-a}b}", {}, "ab}"),
    ("${A:-$$literal}", {}, "$literal"),
])
def test_every_interpolation_form_reads_as_docker_compose_reads_it(value, env, expected):
    web = compose(f"services: {{web: {{image: busybox, environment: {{V: '{value}'}}}}}}", env).services["web"]
    assert web["environment"]["V"] == expected


def test_the_projects_dot_env_fills_variables_and_the_stacks_env_wins():
    text = "services: {web: {image: 'busybox:${TAG}', environment: {MODE: '${MODE}'}}}"
    files = {".env": b"# defaults\nTAG=1.36\nexport MODE='from dot env'\n"}
    assert compose(text, files=files).services["web"]["image"] == "busybox:1.36"
    web = compose(text, {"MODE": "from stack"}, files=files).services["web"]
    assert web["environment"] == {"MODE": "from stack"}


def test_extends_merges_a_service_of_the_same_file_or_of_another_project_file():
    files = {"common.yml": b"services:\n  base:\n    image: busybox\n    environment: {A: common}\n"
                           b"    ports: ['80']\n    dns: [10.0.0.1]\n"}
    stack = compose("""
        services:
          web:
            extends: {file: common.yml, service: base}
            environment: {B: web}
            ports: ['81']
          worker:
            extends: web
            command: sleep 1
            dns: 10.0.0.2
        """, files=files)
    web, worker = stack.services["web"], stack.services["worker"]
    assert web["image"] == worker["image"] == "busybox"
    assert web["environment"] == worker["environment"] == {"A": "common", "B": "web"}
    assert [p["target"] for p in worker["ports"]] == [80, 81]
    assert worker["host"]["Dns"] == ["10.0.0.1", "10.0.0.2"] and worker["command"] == ["sleep", "1"]
    assert "in a cycle" in refusal("services: {a: {image: x, extends: b}, b: {image: x, extends: a}}")
    assert "'services.a.extends.service' names 'ghost'" in refusal("services: {a: {image: x, extends: ghost}}")


def test_include_adds_the_services_of_another_project_file_and_refuses_a_name_defined_twice():
    files = {"db/compose.yml": b"services:\n  db: {image: postgres}\nvolumes:\n  data: {}\n"}
    stack = compose("""
        include: [db/compose.yml]
        services:
          web: {image: busybox, depends_on: [db], volumes: ['data:/data']}
        """, files=files)
    assert stack.order == ["db", "web"] and stack.volumes["data"]["name"] == "shop_data"
    assert "db/compose.yml defines services.db, which this file defines too" in refusal(
        "include: [db/compose.yml]\nservices: {db: {image: busybox}}", files=files)
    assert "'missing.yml' is not one of the stack's files" in refusal(
        "include: [missing.yml]\nservices: {web: {image: busybox}}")


def test_profiles_leave_out_services_unless_compose_profiles_names_them():
    text = """
        services:
          web: {image: busybox}
          debug: {image: busybox, profiles: [debug]}
          tools: {image: busybox, profiles: [debug, tools], depends_on: {debug: {condition: service_started,
                                                                                  required: false}}}
        """
    assert list(compose(text).services) == ["web"]
    assert list(compose(text, {"COMPOSE_PROFILES": "tools"}).services) == ["web", "tools"]
    assert compose(text, {"COMPOSE_PROFILES": "tools"}).services["tools"]["depends_on"] == {}
    assert list(compose(text, {"COMPOSE_PROFILES": "debug"}).services) == ["web", "debug", "tools"]
    assert "names 'debug', which is not enabled" in refusal(
        "services: {web: {image: x, depends_on: [debug]}, debug: {image: x, profiles: [debug]}}")


def test_env_files_are_read_in_order_and_an_optional_missing_one_is_skipped():
    files = {"a.env": b"A=1\nB=from a\n", "b.env": b'B="from b"\n'}
    web = compose("""
        services:
          web:
            image: busybox
            env_file: [a.env, {path: b.env, required: true}, {path: missing.env, required: false}]
        """, files=files).services["web"]
    assert web["environment"] == {"A": "1", "B": "from b"}
    assert "'missing.env' is not one of the stack's files" in refusal(
        "services: {web: {image: busybox, env_file: [missing.env]}}")


@pytest.mark.parametrize("service, key, reason", [
    ("annotations: {a: b}", "annotations", "API 1.43"),
    ("post_start: [{command: 'true'}]", "post_start", "lifecycle hooks"),
    ("credential_spec: {file: x.json}", "credential_spec", "Windows"),
    ("use_api_socket: true", "use_api_socket", "hand it the engine"),
    ("healthcheck: {test: 'true', start_interval: 1s}", "healthcheck.start_interval", "API 1.44"),
    ("volumes: [{type: volume, source: v, target: /v, volume: {subpath: a}}]", "volumes.volume.subpath", "API 1.45"),
    ("volumes: [{type: image, source: alpine, target: /i}]", "volumes.type: image", "API 1.48"),
    ("networks: {default: {mac_address: '02:00:00:00:00:01'}}", "networks.default.mac_address", "API 1.44"),
    ("pull_policy: daily", "pull_policy", "periodic pulls are not supported"),
    ("deploy: {mode: global}", "deploy.mode: global", "needs Swarm"),
    ("deploy: {placement: {constraints: [node.role==manager]}}", "deploy.placement", "placement needs Swarm"),
])
def test_a_key_that_cannot_apply_is_refused_naming_its_line_and_why(service, key, reason):
    message = refusal(f"services:\n  web:\n    image: busybox\n    {service}\nvolumes: {{v: {{}}}}\n")
    assert message.startswith("docker-compose.yml, line ") and f"services.web.{key}" in message, message
    assert reason in message, message


def test_container_keys_become_the_engine_fields_docker_compose_sends():
    body = deployment("""
        services:
          db: {image: busybox}
          web:
            image: busybox
            gpus: all
            deploy:
              resources:
                limits: {cpus: "1.5", memory: 1g, pids: 20}
                reservations: {devices: [{driver: nvidia, count: 1, capabilities: [gpu, compute]}]}
            cpu_rt_runtime: 950ms
            uts: host
            cgroup: private
            storage_opt: {size: 1G}
            extra_hosts: {gateway: host-gateway, multi: ["10.0.0.1", "::1"]}
            ulimits: {nofile: 1024}
            devices: ["/dev/fuse", "/dev/sda:/dev/xvda:r"]
            pid: "service:db"
            external_links: ["other_container:alias"]
            links: [db]
            volumes_from: ["container:named:rw"]
            restart: "no"
        """).container_body("web", 1)
    host = body["HostConfig"]
    assert host["DeviceRequests"] == [{"Driver": "", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]],
                                       "Options": {}}]
    assert host["NanoCpus"] == 1_500_000_000 and host["Memory"] == 1024 ** 3 and host["PidsLimit"] == 20
    assert host["CpuRealtimeRuntime"] == 950_000 and host["UTSMode"] == "host" and host["CgroupnsMode"] == "private"
    assert host["StorageOpt"] == {"size": "1G"} and host["Ulimits"] == [{"Name": "nofile", "Soft": 1024,
                                                                        "Hard": 1024}]
    assert host["ExtraHosts"] == ["gateway:host-gateway", "multi:10.0.0.1", "multi:::1"]
    assert host["Devices"] == [
        {"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"},
        {"PathOnHost": "/dev/sda", "PathInContainer": "/dev/xvda", "CgroupPermissions": "r"}]
    assert host["PidMode"] == "container:shop_db_1" and host["VolumesFrom"] == ["named:rw"]
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert body["NetworkingConfig"]["EndpointsConfig"]["shop_default"]["Links"] == [
        "shop_db_1:db", "shop_db_1:shop_db_1", "shop_db_1:db_1", "other_container:alias"]
    reserved = deployment("services: {web: {image: busybox, deploy: {resources: {reservations: {devices: "
                          "[{driver: nvidia, device_ids: ['0'], capabilities: [gpu]}]}}}}}").container_body("web", 1)
    assert reserved["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0"], "Capabilities": [["gpu"]], "Options": {}}]


def test_a_network_with_ipam_and_a_service_with_a_static_address_and_priorities():
    stack = deployment("""
        services:
          web:
            image: busybox
            networks:
              low: {priority: 1}
              high: {priority: 9, ipv4_address: 10.9.0.5, aliases: [www]}
        networks:
          low: {}
          high:
            enable_ipv6: true
            ipam: {driver: default, config: [{subnet: 10.9.0.0/24, aux_addresses: {router: 10.9.0.2}}]}
        """)
    body = stack.container_body("web", 1)
    assert body["HostConfig"]["NetworkMode"] == "shop_high"
    assert body["NetworkingConfig"]["EndpointsConfig"] == {
        "shop_high": {"Aliases": ["web", "www"], "IPAMConfig": {"IPv4Address": "10.9.0.5"}}}
    network = stack.network_body("high")
    assert network["EnableIPv6"] is True and network["IPAM"] == {
        "Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "AuxiliaryAddresses": {"router": "10.9.0.2"}}]}


def test_a_swarm_service_gets_the_keys_a_service_has_and_refuses_the_others():
    body = deployment("""
        services:
          web:
            image: busybox
            dns: [10.0.0.53]
            extra_hosts: ["db:10.0.0.5"]
            init: true
            read_only: true
            stop_signal: SIGINT
            group_add: ["100"]
            expose: ["80"]
            deploy:
              endpoint_mode: dnsrr
              placement: {constraints: [node.role==manager], preferences: [{spread: node.labels.zone}]}
              update_config: {parallelism: 2, delay: 10s, order: start-first}
              resources: {limits: {pids: 30}}
        """, swarm=True).service_body("web")
    spec = body["TaskTemplate"]["ContainerSpec"]
    assert spec["DNSConfig"] == {"Nameservers": ["10.0.0.53"]} and spec["Hosts"] == ["10.0.0.5 db"]
    assert spec["Init"] is True and spec["ReadOnly"] is True and spec["StopSignal"] == "SIGINT"
    assert spec["Groups"] == ["100"]
    assert body["EndpointSpec"]["Mode"] == "dnsrr"
    assert body["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==manager"],
                                                 "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}]}
    assert body["UpdateConfig"] == {"Parallelism": 2, "Delay": 10_000_000_000, "Order": "start-first"}
    assert body["TaskTemplate"]["Resources"] == {"Limits": {"Pids": 30}}
    restarting = deployment("services: {web: {image: busybox, restart: 'on-failure:3'}}", swarm=True)
    assert restarting.service_body("web")["TaskTemplate"]["RestartPolicy"] == {"Condition": "on-failure",
                                                                               "MaxAttempts": 3}
    message = refusal("services: {web: {image: busybox, privileged: true}}", swarm=True)
    assert "'services.web.privileged' is not supported in Swarm stacks" in message


def test_swarm_secrets_and_configs_come_from_a_file_the_stacks_env_or_inline_content(tmp_path):
    stack = compose("""
        services:
          web: {image: busybox, secrets: [token], configs: [motd, conf]}
        secrets:
          token: {environment: TOKEN}
        configs:
          motd: {content: "hello ${NAME}"}
          conf: {file: ./app.conf}
        """, {"TOKEN": "s3cret", "NAME": "world"}, swarm=True, files={"app.conf": b"x=1\n"})
    assert stack.secrets["token"]["data"] == b"s3cret"
    assert stack.configs["motd"]["data"] == b"hello world" and stack.configs["conf"]["data"] == b"x=1\n"
    assert "needs one of file, environment or content" in refusal(
        "services: {web: {image: busybox}}\nsecrets: {token: {}}", swarm=True)
