"""The rule table that decides every Docker call a non-administrator makes, in-process: bodies read as Go reads
them, and the same content decided alike in every spelling Go accepts (hypothesis). No engine needed; the
regression tests through the real proxy are in test_proxy_trust.py and reuse this corpus."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import portainer

BUSYBOX = "busybox:local"

# Bodies a standard user must never get past the proxy on an environment with the default security settings.
# (body kind, body). The property tests below reuse them in every spelling Go accepts.
REFUSED_BODIES = [
    ("container", {"Image": BUSYBOX, "Cmd": ["ls", "/host"], "HostConfig": {"Binds": ["/:/host"]}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Privileged": True}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"PidMode": "host"}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"NetworkMode": "host"}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"MaskedPaths": [], "ReadonlyPaths": []}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"SecurityOpt": ['seccomp={"defaultAction":"SCMP_ACT_ALLOW"}']}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"CgroupParent": "/"}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"CapAdd": ["SYS_ADMIN"]}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/d",
                                                                  "CgroupPermissions": "rwm"}]}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Sysctls": {"net.ipv4.ip_forward": "1"}}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Runtime": "some-other-runtime"}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"NotADockerField": True}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v",
                                                                 "VolumeOptions": {"DriverConfig": {
                                                                     "Name": "local", "Options": {
                                                                         "type": "none", "o": "bind",
                                                                         "device": "/"}}}}]}}),
    ("volume", {"Name": "hostroot", "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}),
    ("exec", {"Cmd": ["id"], "Privileged": True}),
    ("network", {"Name": "hostnet", "Driver": "macvlan"}),
    ("network", {"Name": "onbridge", "Options": {"com.docker.network.bridge.name": "docker0"}}),
    ("service", {"Name": "s", "TaskTemplate": {"ContainerSpec": {
        "Image": BUSYBOX, "Mounts": [{"Type": "volume", "Source": "v", "Target": "/v", "VolumeOptions": {
            "DriverConfig": {"Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]}}}),
    ("service", {"Name": "s", "TaskTemplate": {"ContainerSpec": {
        "Image": BUSYBOX, "Privileges": {"SELinuxContext": {"Disable": True}}}}}),
    ("service", {"Name": "s", "TaskTemplate": {"PluginSpec": {"Name": "evil"}}}),
    ("secret", {"Name": "s", "Data": "eA==", "Driver": {"Name": "plugin"}}),
]

# What a standard user does every day, as the Docker CLI and SDK send it: none of it may be refused.
HARMLESS_BODIES = [
    ("container", {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": True, "AttachStdout": True,
                   "AttachStderr": True, "ExposedPorts": {"80/tcp": {}}, "Tty": True, "OpenStdin": True,
                   "StdinOnce": True, "Env": ["A=1"], "Cmd": ["sh"], "Image": BUSYBOX, "Volumes": {},
                   "WorkingDir": "", "Entrypoint": None, "OnBuild": None, "Labels": {},
                   "HostConfig": {"Binds": ["data:/data"], "ContainerIDFile": "",
                                  "LogConfig": {"Type": "", "Config": {}}, "NetworkMode": "default",
                                  "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                                  "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}, "AutoRemove": False,
                                  "VolumeDriver": "", "VolumesFrom": None, "CapAdd": None, "CapDrop": None,
                                  "CgroupnsMode": "", "Dns": [], "DnsOptions": [], "DnsSearch": [],
                                  "ExtraHosts": None, "GroupAdd": None, "IpcMode": "", "Cgroup": "", "Links": None,
                                  "OomScoreAdj": 0, "PidMode": "", "Privileged": False, "PublishAllPorts": False,
                                  "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "", "UsernsMode": "",
                                  "ShmSize": 0, "ConsoleSize": [0, 0], "Isolation": "", "CpuShares": 0,
                                  "Memory": 67108864, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
                                  "BlkioWeightDevice": [], "BlkioDeviceReadBps": None,
                                  "BlkioDeviceWriteBps": None, "BlkioDeviceReadIOps": None,
                                  "BlkioDeviceWriteIOps": None, "CpuPeriod": 0, "CpuQuota": 0,
                                  "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "",
                                  "CpusetMems": "", "Devices": [], "DeviceCgroupRules": None,
                                  "DeviceRequests": None, "KernelMemory": 0, "KernelMemoryTCP": 0,
                                  "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
                                  "OomKillDisable": False, "PidsLimit": None, "Ulimits": None, "CpuCount": 0,
                                  "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
                                  "MaskedPaths": None, "ReadonlyPaths": None},
                   "NetworkingConfig": {"EndpointsConfig": {}}}),
    ("container", {"Image": BUSYBOX, "HostConfig": {"SecurityOpt": ["no-new-privileges:true"], "Init": True,
                                                    "Tmpfs": {"/run": "size=1m"}, "CapDrop": ["ALL"],
                                                    "Mounts": [{"Type": "tmpfs", "Target": "/scratch"},
                                                               {"Type": "volume", "Target": "/anon"}]}}),
    ("exec", {"User": "", "Privileged": False, "Tty": True, "AttachStdin": True, "AttachStderr": True,
              "AttachStdout": True, "Detach": False, "DetachKeys": "", "Env": None, "WorkingDir": "",
              "Cmd": ["sh"]}),
    ("volume", {"Name": "data", "Driver": "local", "DriverOpts": {}, "Labels": {"a": "b"}}),
    ("volume", {"Name": "scratch", "DriverOpts": {"type": "tmpfs", "device": "tmpfs", "o": "size=10m"}}),
    ("network", {"Name": "mynet", "CheckDuplicate": True, "Driver": "bridge", "Internal": False,
                 "Attachable": False, "Ingress": False, "IPAM": {"Driver": "default", "Options": {}, "Config": []},
                 "EnableIPv6": False, "Options": {}, "Labels": {}}),
    ("service", {"Name": "web", "Labels": {}, "TaskTemplate": {
        "ContainerSpec": {"Image": BUSYBOX, "Args": ["sleep", "300"], "Init": False, "TTY": False,
                          "Mounts": [{"Type": "volume", "Target": "/data"}]},
        "Resources": {"Limits": {}, "Reservations": {}}, "RestartPolicy": {"Condition": "any"},
        "Placement": {}, "ForceUpdate": 0, "Runtime": "container"},
        "Mode": {"Replicated": {"Replicas": 1}}, "EndpointSpec": {"Mode": "vip", "Ports": [
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}}),
]



def test_go_folds_long_s_kelvin_and_dotless_i_onto_ascii_letters():
    assert portainer.go_fold("Ho\u017ftconfig") == portainer.go_fold("HostConfig") == "HOSTCONFIG"
    assert portainer.go_fold("\u212aernelMemory") == "KERNELMEMORY"
    assert portainer.go_fold("Pr\u0131vileged") == portainer.go_fold("PR\u0130VILEGED") == "PRIVILEGED"
    assert portainer.go_fold("Bind\u00e9") != portainer.go_fold("BindE")


def test_strict_json_refuses_repeated_keys_and_non_numbers():
    for raw in ('{"a": 1, "a": 2}', '{"x": NaN}', '{"x": Infinity}', '{"o": {"b": 1, "b": 1}}'):
        with pytest.raises(ValueError):
            portainer.decode_json(raw)
    assert portainer.decode_json('{"a": {"b": [1, 2]}}') == {"a": {"b": [1, 2]}}


def test_portainer_fields_are_matched_as_go_matches_them():
    assert portainer.field({"username": "anna"}, "Username", str) == "anna"
    assert portainer.field({"U\u017fername": "anna"}, "Username", str) == "anna"
    with pytest.raises(portainer.BadRequest):
        portainer.field({"Username": "a", "username": "b"}, "Username", str)


def test_references_resolve_to_the_full_id_that_is_forwarded():
    body = {"Image": BUSYBOX, "HostConfig": {"Links": ["db:database"], "NetworkMode": "container:web",
                                             "VolumesFrom": ["data:ro"]},
            "NetworkingConfig": {"EndpointsConfig": {"mynet": {"Aliases": ["a"]}}}}
    canonical, vetting = portainer.vet_body("container", body, None)
    ids = {("containers", "db"): "d" * 64, ("containers", "web"): "w" * 64, ("containers", "data"): "f" * 64,
           ("networks", "mynet"): "n" * 64}
    for reference in vetting.references:
        reference.use_id(ids[(reference.kind, reference.name)])
    settled = portainer.settle(canonical)
    assert settled["HostConfig"]["Links"] == ["d" * 64 + ":database"]
    assert settled["HostConfig"]["NetworkMode"] == "container:" + "w" * 64
    assert settled["HostConfig"]["VolumesFrom"] == ["f" * 64 + ":ro"]
    assert settled["NetworkingConfig"]["EndpointsConfig"] == {"n" * 64: {"Aliases": ["a"]}}


def test_a_security_setting_turned_on_allows_what_it_names_and_nothing_else():
    allowed = {**portainer.DEFAULT_SECURITY_SETTINGS, "allowBindMountsForRegularUsers": True}
    _, vetting = portainer.vet_body("container", {"Image": BUSYBOX, "HostConfig": {"Binds": ["/srv:/srv"]}}, allowed)
    assert vetting.problems == []
    _, vetting = portainer.vet_body("container", {"Image": BUSYBOX, "HostConfig": {"Binds": ["/srv:/srv"],
                                                                                   "Privileged": True}}, allowed)
    assert vetting.problems == ["privileged mode (HostConfig.Privileged)"]


SETTINGS = dict(portainer.DEFAULT_SECURITY_SETTINGS)
# Fields whose values are maps: their keys are data (label names, network names), not fields.
MAP_FIELDS = frozenset({"Labels", "DriverOpts", "Options", "Sysctls", "Tmpfs", "ExposedPorts", "Volumes",
                        "PortBindings", "EndpointsConfig", "Config", "StorageOpt"})
FOLD_VARIANTS = {"s": "sS\u017f", "k": "kK\u212a", "i": "iI"}


def go_spelling(rnd: random.Random, key: str) -> str:
    """A spelling of `key` that Go's decoder matches to the same field."""
    return "".join(rnd.choice(FOLD_VARIANTS.get(c.lower(), c.lower() + c.upper())) for c in key)


def respelled(rnd: random.Random, value, free_keys: bool = False):
    """The same content with every struct key re-spelled and every object's keys in another order. Keys of maps
    (labels, network names, driver options) are data, not fields, and keep their spelling."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {(key if free_keys else go_spelling(rnd, key)):
                respelled(rnd, item, free_keys=key in MAP_FIELDS and not free_keys) for key, item in items}
    if isinstance(value, list):
        return [respelled(rnd, item) for item in value]
    return value


def nested_in_harmless(rnd: random.Random, kind: str, body: dict) -> dict:
    """The refused content inside a harmless body of the same kind: the harmless fields cannot hide it."""
    harmless = [b for k, b in HARMLESS_BODIES if k == kind]
    if not harmless:
        return body
    merged = json.loads(json.dumps(rnd.choice(harmless)))

    def merge(into: dict, extra: dict) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
    merge(merged, body)
    return merged


def decided(kind: str, body: dict) -> list[str]:
    try:
        _, vetting = portainer.vet_body(kind, body, SETTINGS)
    except portainer.BadRequest as exc:
        return [exc.message]
    return vetting.problems


@pytest.mark.parametrize("kind,body", REFUSED_BODIES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(REFUSED_BODIES)])
@settings(max_examples=100, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_every_spelling_of_a_refused_body_is_refused(kind, body, seed):
    assert decided(kind, body), "the corpus body itself must be refused"
    rnd = random.Random(seed)
    spelled = respelled(rnd, nested_in_harmless(rnd, kind, body))
    assert decided(kind, spelled), spelled


@pytest.mark.parametrize("kind,body", HARMLESS_BODIES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(HARMLESS_BODIES)])
@settings(max_examples=100, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32))
def test_no_spelling_of_a_harmless_body_is_refused(kind, body, seed):
    spelled = respelled(random.Random(seed), body)
    assert decided(kind, spelled) == [], spelled


