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


@pytest.mark.parametrize("value", ["${}", "${1ST}", "${NAME:+alt}", "cost $5", "${UNCLOSED"])
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
            privileged: true
        """) == "docker-compose.yml, line 5: unsupported key 'services.web.privileged'"
    assert refusal("""
        services:
          web:
            image: busybox
            deploy:
              resources:
                limits:
                  pids: 10
        """) == "docker-compose.yml, line 8: unsupported key 'services.web.deploy.resources.limits.pids'"
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
    ("name: other\nservices: {web: {image: busybox}}", "the top-level 'name' must be the stack's name, 'shop'"),
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


def test_ports_are_read_in_short_and_long_syntax_and_ranges_are_refused():
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
    assert "cannot read '8000-8010:80'" in refusal("services: {web: {image: busybox, ports: ['8000-8010:80']}}")


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
    assert stack.services["db"]["mounts"] == [
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
    assert stack.services["api"]["depends_on"] == {"db": "service_healthy"}
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
    assert "'services.web.deploy.mode' is for Swarm stacks" in refusal(text, project_dir=str(tmp_path),
                                                                        files={"site.conf": b"listen 80"})
    swarm = compose(text, swarm=True, project_dir=str(tmp_path), files={"site.conf": b"listen 80"})
    assert swarm.configs["site"]["data"] == b"listen 80" and swarm.configs["site"]["name"] == "shop_site"
    assert swarm.services["web"]["mode"] == "global"
    assert swarm.services["web"]["configs"] == [{"source": "site", "target": "site"}]
