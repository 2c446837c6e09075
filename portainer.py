#!/usr/bin/env python3
"""portainer.py: one-file Docker management server, API-compatible with Portainer CE.

Sections follow a request from the top of the file down:
    constants and config -> errors -> store -> certificates and secrets -> Docker connectors ->
    environments and snapshots -> auth -> access rules for proxied Docker calls -> Docker proxy ->
    API handlers by resource (edge: one section, after stacks) -> UI assets -> make_app(config) -> main(argv)
Each kind of environment is one class (DockerApiKind, AgentKind, EdgeKind) listed in ENVIRONMENT_KINDS; the
store is reached through its collections (`store.users.get(id)`, ...).
Nothing runs at import time; `main()` is last.
"""
from __future__ import annotations

import argparse
import asyncio
import asyncio.sslproto
import base64
import codecs
import contextlib
import copy
import csv
import dataclasses
import datetime
import fcntl
import gzip
import hashlib
import hmac
import inspect
import io
import json
import logging
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import ssl
import sys
import tarfile
import tempfile
import time
import urllib.parse
import uuid
import weakref
import zlib
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import yaml
from aiohttp import WSCloseCode, web

import agent as shared

log = logging.getLogger("portainer")

# ================================================================================================================
# Constants and config
# ================================================================================================================

VERSION = "2.19.4"
SCHEMA_VERSION = 1
ROLE_ADMIN = 1
ROLE_STANDARD = 2
ENDPOINT_DOCKER = 1
ENDPOINT_AGENT = 2
ENDPOINT_EDGE = 4
STATUS_UP = 1
STATUS_DOWN = 2
MIN_PASSWORD_LENGTH = 12
SESSION_COOKIE = "portainer_api_key"
CSRF_HEADER = "X-CSRF-Token"
API_KEY_PREFIX = "ptr_"
MAX_JSON_BODY = 4 * 1024 * 1024
# Query parameters that would carry a credential in a URL, where proxies and logs keep it.
CREDENTIAL_QUERY_PARAMS = frozenset({"token", "jwt", "api_key", "apikey", "x-api-key", "access_token", "auth"})
DEFAULT_SOCKET = "/var/run/docker.sock"
TLS_READ_BUFFER = 16 * 1024  # one TLS record
EDGE_CONNECT_SNAPSHOTS = 16
# Idle tunnel streams kept per edge environment. Opening one is a round trip on a tunnel already up, while each
# idle one holds memory here and a socket to the engine on the agent: with thousands of agents, keep one.
EDGE_IDLE_STREAMS = 1
# Edge environments a periodic snapshot pass refreshes, stalest first: each is also snapshotted when its agent
# connects, and a pass over ten thousand tunnels (six engine calls each) would keep the server busy for ever.
EDGE_SNAPSHOTS_PER_PASS = 200


def _env(name: str, default: Any = None) -> Any:
    return os.environ.get(name, default)


def _env_flag(name: str) -> bool:
    return str(os.environ.get(name, "")).lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    """Portainer's flag names; each one falls back to a PORTAINER_* environment variable."""
    p = argparse.ArgumentParser(
        prog="portainer.py",
        description="Manage Docker hosts, Swarm clusters and edge devices from one web UI and API.",
        epilog="Every flag can also be set by the environment variable shown in brackets.")
    p.add_argument("--bind", default=_env("PORTAINER_BIND", ":9000"),
                   help="HTTP address to listen on, host:port [PORTAINER_BIND] (default :9000)")
    p.add_argument("--bind-https", default=_env("PORTAINER_BIND_HTTPS", ":9443"),
                   help="HTTPS address to listen on, host:port [PORTAINER_BIND_HTTPS] (default :9443)")
    p.add_argument("--data", default=_env("PORTAINER_DATA", "./data"),
                   help="data directory: store, keys, certificates, stack files [PORTAINER_DATA] (default ./data)")
    p.add_argument("-H", "--host", default=_env("PORTAINER_HOST"),
                   help="Docker endpoint of the first environment, e.g. unix:///var/run/docker.sock or "
                        "tcp://10.0.0.5:2375 [PORTAINER_HOST]; when absent and /var/run/docker.sock exists, it is used")
    p.add_argument("--admin-password-file", default=_env("PORTAINER_ADMIN_PASSWORD_FILE"),
                   help="file holding the admin password in plain text; creates user 'admin' at first start "
                        "[PORTAINER_ADMIN_PASSWORD_FILE]")
    p.add_argument("--sslcert", default=_env("PORTAINER_SSLCERT"),
                   help="TLS certificate (PEM) for HTTPS [PORTAINER_SSLCERT]; else a self-signed one is made once")
    p.add_argument("--sslkey", default=_env("PORTAINER_SSLKEY"), help="TLS key (PEM) for HTTPS [PORTAINER_SSLKEY]")
    p.add_argument("--http-disabled", action="store_true", default=_env_flag("PORTAINER_HTTP_DISABLED"),
                   help="serve HTTPS only [PORTAINER_HTTP_DISABLED]")
    p.add_argument("--no-analytics", action="store_true", default=_env_flag("PORTAINER_NO_ANALYTICS"),
                   help="disable anonymous analytics entirely and hide the choice [PORTAINER_NO_ANALYTICS]")
    p.add_argument("--analytics-url", default=_env("PORTAINER_ANALYTICS_URL", ""),
                   help="where opted-in anonymous analytics are sent [PORTAINER_ANALYTICS_URL]")
    p.add_argument("--analytics-interval", type=float,
                   default=float(_env("PORTAINER_ANALYTICS_INTERVAL", 86400)),
                   help="seconds between two sends of opted-in analytics [PORTAINER_ANALYTICS_INTERVAL] "
                        "(default 86400, once a day)")
    p.add_argument("--log-level", default=_env("PORTAINER_LOG_LEVEL", "INFO"),
                   choices=["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"],
                   help="log verbosity [PORTAINER_LOG_LEVEL] (default INFO)")
    p.add_argument("--admin-init-window", type=float, default=float(_env("PORTAINER_ADMIN_INIT_WINDOW", 300)),
                   help="seconds after start during which the first admin may be created; after that, init is "
                        "refused until restart [PORTAINER_ADMIN_INIT_WINDOW] (default 300)")
    p.add_argument("--snapshot-interval", type=float, default=float(_env("PORTAINER_SNAPSHOT_INTERVAL", 60)),
                   help="seconds between environment snapshots [PORTAINER_SNAPSHOT_INTERVAL] (default 60)")
    p.add_argument("--proxy-timeout", type=float, default=float(_env("PORTAINER_PROXY_TIMEOUT", 60)),
                   help="seconds an engine may take to start answering a proxied call before the caller gets a 504 "
                        "[PORTAINER_PROXY_TIMEOUT] (default 60)")
    p.add_argument("--hsts", action="store_true", default=_env_flag("PORTAINER_HSTS"),
                   help="send Strict-Transport-Security on HTTPS [PORTAINER_HSTS]")
    p.add_argument("--image-check-interval", type=float,
                   default=float(_env("PORTAINER_IMAGE_CHECK_INTERVAL", 3600)),
                   help="seconds between checks of running containers' images for newer versions in their "
                        "registries, and auto-updates of containers labelled for it; 0 turns the schedule off "
                        "[PORTAINER_IMAGE_CHECK_INTERVAL] (default 3600)")
    p.add_argument("--edge-heartbeat", type=float, default=float(_env("PORTAINER_EDGE_HEARTBEAT", 20)),
                   help="seconds between pings on each edge tunnel; a tunnel silent for 1.5 times this is closed "
                        "[PORTAINER_EDGE_HEARTBEAT] (default 20)")
    p.add_argument("--edge-job-image", default=_env("PORTAINER_EDGE_JOB_IMAGE", "busybox:local"),
                   help="image edge job scripts run in unless a job names another "
                        "[PORTAINER_EDGE_JOB_IMAGE] (default busybox:local)")
    p.add_argument("--agent-secret", default=_env("AGENT_SECRET", ""),
                   help="secret proven to every agent that has AGENT_SECRET set; an environment may set its own "
                        "[AGENT_SECRET]")
    p.add_argument("--git-ca-file", default=_env("PORTAINER_GIT_CA_FILE"),
                   help="CA certificates (PEM) trusted for git servers over HTTPS, instead of the system's "
                        "[PORTAINER_GIT_CA_FILE]")
    p.add_argument("--git-poll-minimum", type=float, default=float(_env("PORTAINER_GIT_POLL_MINIMUM", 60)),
                   help="shortest AutoUpdate.Interval a git stack may poll its repository at, in seconds "
                        "[PORTAINER_GIT_POLL_MINIMUM] (default 60)")
    p.add_argument("--ui-dir", default=_env("PORTAINER_UI_DIR"),
                   help="serve the web UI from this directory (a checkout's ui/), read at each request, instead of "
                        "the copy embedded in portainer.py: for editing the UI without `make ui` [PORTAINER_UI_DIR]")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    config = build_parser().parse_args(argv)
    config.log_level = config.log_level.upper()
    if config.host is None and os.path.exists(DEFAULT_SOCKET):
        config.host = "unix://" + DEFAULT_SOCKET
    if bool(config.sslcert) != bool(config.sslkey):
        build_parser().error("--sslcert and --sslkey go together")
    return config


def split_bind(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SystemExit(f"portainer.py: invalid bind address {address!r}, expected host:port")
    return (host.strip("[]") or "0.0.0.0"), int(port)


def app_key(name: str):
    """A typed application key where aiohttp has them (3.9+); a plain string key on older aiohttp."""
    return web.AppKey(name) if hasattr(web, "AppKey") else name


def request_key(name: str):
    """A typed request key where aiohttp has them (3.12+); a plain string key on older aiohttp."""
    return web.RequestKey(name) if hasattr(web, "RequestKey") else name


# Application and request keys: what make_app puts on the app, what auth_middleware puts on each request.
# The types are annotations only (never evaluated), so a key can name a class defined further down.
CONFIG: web.AppKey[argparse.Namespace] = app_key("config")
STORE: web.AppKey[Store] = app_key("store")
ENVIRONMENTS: web.AppKey[Environments] = app_key("environments")
AGENT_SIGNER: web.AppKey[shared.RequestSigner] = app_key("agent_signer")
SESSIONS: web.AppKey[Sessions] = app_key("sessions")
LOGIN_LIMIT: web.AppKey[LoginRateLimit] = app_key("login_limit")
API_KEY_INDEX: web.AppKey[dict] = app_key("api_key_index")
STARTED_AT: web.AppKey[float] = app_key("started_at")
ASSETS: web.AppKey[dict] = app_key("assets")
REGISTRIES: web.AppKey[Registries] = app_key("registries")
IMAGE_UPDATES: web.AppKey[ImageUpdates] = app_key("image_updates")
EDGE_TUNNELS: web.AppKey[EdgeTunnels] = app_key("edge_tunnels")
EDGE_JOBS: web.AppKey[EdgeJobRunner] = app_key("edge_jobs")
STACKS: web.AppKey[Stacks] = app_key("stacks")
EDGE_STACKS: web.AppKey[EdgeStacks] = app_key("edge_stacks")
GIT: web.AppKey[Git] = app_key("git")
GIT_CREDENTIALS: web.AppKey[GitCredentials] = app_key("git_credentials")
GIT_UPDATES: web.AppKey[GitUpdates] = app_key("git_updates")
WEBHOOK_GUESSES: web.AppKey[WebhookGuesses] = app_key("webhook_guesses")
DEPLOYS: web.AppKey[DeployProgress] = app_key("deploys")
CONSOLES: web.AppKey[weakref.WeakSet] = app_key("consoles")
ACTIVITY: web.AppKey[ActivityLog] = app_key("activity")
ANALYTICS_STATE: web.AppKey[dict] = app_key("analytics_state")
# Features that keep state from the store or data directory in memory register a reload here: fn(app).
AFTER_RESTORE: web.AppKey[list] = app_key("after_restore")
CALLER_KEY: web.RequestKey[Caller] = request_key("caller")  # the authenticated Caller of this request


def now() -> int:
    return int(time.time())


# ================================================================================================================
# Errors: one family, each carrying its HTTP status, rendered in one place (error_middleware)
# ================================================================================================================


class ApiError(Exception):
    status = 500

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.message = message
        self.details = details or message


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429


class BadGateway(ApiError):
    status = 502


class ServiceUnavailable(ApiError):
    status = 503


class GatewayTimeout(ApiError):
    status = 504


class InsufficientStorage(ApiError):
    status = 507


# JSON read the way Docker and Portainer (Go servers) read it: Go's encoding/json matches an object key to a struct
# field case-insensitively, with Unicode simple folding (so "hoſtconfig", with U+017F, fills HostConfig), and
# merges two keys that fold alike. We fold the same way, refuse such duplicates, and forward what we checked.

# The only non-ASCII letters that fold onto ASCII ones: long s, Kelvin sign, dotted capital I, dotless small i.
_GO_FOLDS_TO_ASCII = {"\u017f": "S", "\u212a": "K", "\u0130": "I", "\u0131": "I"}


def go_fold(name: str) -> str:
    """Go's foldName: a key and a field name match when their folds are equal."""
    out = []
    for char in name:
        if char.isascii():
            out.append(char.upper())
        elif char in _GO_FOLDS_TO_ASCII:
            out.append(_GO_FOLDS_TO_ASCII[char])
        else:
            lower = char.lower()
            upper = lower.upper() if len(lower) == 1 else char
            out.append(upper if len(upper) == 1 else lower)
    return "".join(out)


class DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise DuplicateKey(f"the key {key!r} appears twice in one object")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode_json(raw: bytes | str) -> Any:
    """Strict JSON: a key twice in one object, NaN or Infinity are errors (Go would merge or refuse them)."""
    return json.loads(raw, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant)


def folded_key(body: dict, name: str) -> str | None:
    """The key of `body` that Go would decode into the field `name`: an exact match, else the one folding alike.
    Two keys folding onto one field are a 400: Go would merge them, and we could check one and forward both."""
    if not isinstance(body, dict):
        return None
    target = go_fold(name)
    matches = [key for key in body if key == name or go_fold(key) == target]
    if len(matches) > 1:
        raise BadRequest(f"the fields {', '.join(map(repr, matches))} name the same field {name!r}",
                         "keys are matched case-insensitively; send each field once")
    return matches[0] if matches else None


async def read_body(request: web.Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The whole request body, refused with 413 past `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    parts, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(request: web.Request, limit: int = MAX_JSON_BODY) -> Any:
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("request body is empty", "a JSON object was expected")
    try:
        return decode_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest("invalid JSON in request body", str(exc)) from exc


# What aiohttp raises for a form or multipart body it cannot parse (a missing boundary, a broken part header).
MALFORMED_FORM_ERRORS = (ValueError, AssertionError, LookupError, aiohttp.http_exceptions.HttpProcessingError)


async def read_json_object(request: web.Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def field(body: dict, name: str, kind: type, required: bool = True, default: Any = None) -> Any:
    """One field of a JSON body, matched as Portainer (Go) matches it, type-checked, with a clear message when it
    is missing or wrong."""
    key = folded_key(body, name)
    if key is None or body[key] is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return default
    value = body[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BadRequest(f"field {name!r} must be {kind.__name__}")
    return value


# A body schema maps each documented field, spelled as Portainer's answers spell it, to its JSON type: a type or
# a tuple of types, a nested schema (dict) for an object, a one-item list [item] for a list, ANY_JSON for free form.
ANY_JSON = object
JSON_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", dict: "an object",
                   list: "a list", ANY_JSON: "any JSON value"}


def _json_kind_name(kind: Any) -> str:
    if isinstance(kind, dict):
        return "an object"
    if isinstance(kind, list):
        return "a list"
    if isinstance(kind, tuple):
        return " or ".join(JSON_TYPE_NAMES.get(k, k.__name__) for k in kind)
    return JSON_TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


def _typed_value(value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, dict):
        return documented_fields(value, kind, where)
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise BadRequest(f"field {where!r} must be a list")
        return [_typed_value(item, kind[0], f"{where}[{index}]") for index, item in enumerate(value)]
    if kind is ANY_JSON:
        return value
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds:
        kinds += (int,)  # a Go float64 field takes 1 as well as 1.5
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        raise BadRequest(f"field {where!r} must be {_json_kind_name(kind)}")
    return value


def documented_fields(body: Any, schema: dict, where: str = "") -> dict:
    """A JSON object read the way Portainer's Go server decodes it into its payload struct: each key matched onto
    the schema's field name case-insensitively (so {"username"} fills Username), answered under the documented
    spelling; a key the schema does not know is ignored (logged at DEBUG); null is the same as absent; a wrong
    type is a 400 that names the field."""
    if not isinstance(body, dict):
        raise BadRequest(f"{where or 'the request body'} must be a JSON object")
    fields, used = {}, set()
    for name, kind in schema.items():
        key = folded_key(body, name)
        if key is None:
            continue
        used.add(key)
        if body[key] is not None:
            fields[name] = _typed_value(body[key], kind, f"{where}.{name}" if where else name)
    ignored = [key for key in body if key not in used]
    if ignored:
        log.debug("ignored unknown fields %s%s", ", ".join(repr(k[:64]) for k in ignored[:20]),
                  f" in {where}" if where else "")
    return fields


async def read_documented_fields(request: web.Request, schema: dict) -> dict:
    """The request's JSON object body, read with documented_fields."""
    return documented_fields(await read_json_object(request), schema)


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info.get(name, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise BadRequest(f"invalid {name} {raw[:40]!r}: a positive integer was expected")
    return int(raw)


def json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, headers=headers,
                        content_type="application/json")


# ================================================================================================================
# Store: one JSON document under --data, written crash-safely, writes coalesced, one owner process
# ================================================================================================================


def _migrate_0_to_1(doc: dict) -> None:
    doc.setdefault("instance_id", str(uuid.uuid4()))
    for collection in ("users", "endpoints", "api_keys", "revoked_tokens", "teams", "team_memberships", "tags"):
        doc.setdefault(collection, {})
    doc.setdefault("next_id", {})
    doc.setdefault("settings", {})


MIGRATIONS: dict[int, Callable[[dict], None]] = {0: _migrate_0_to_1}

DEFAULT_SETTINGS = {
    "UserSessionTimeout": "8h",
    "EnableTelemetry": False,
    "AuthenticationMethod": 1,
    "LogoURL": "",
    "SnapshotInterval": "60s",
    "EdgeAgentCheckinInterval": 5,
    "TemplatesURL": "",
    "ActivityLogRetentionDays": 90,
    "MessageOfTheDay": {"Title": "", "Message": ""},  # what GET /api/motd shows; set by an administrator
}


class DataDirectoryInUse(Exception):
    pass


class Collection:
    """One kind of record in the store document, the only way handlers reach it.

    On disk a collection is a JSON object `{"<id>": record}` (object keys are strings); each record holds its
    integer id (`Id`, or `ID` for tags), which is what the API and every caller use. The records are read from
    the document at each call, so a reload (failed write, restore) is seen at once.
    """

    def __init__(self, store: Store, name: str, kind: str, id_field: str = "Id"):
        self.store = store
        self.name = name  # the key in the store document and in its next_id table
        self.kind = kind  # what a message calls one record: "user", "edge group", ...
        self.id_field = id_field

    @property
    def _records(self) -> dict:
        return self.store.data.setdefault(self.name, {})

    def find(self, record_id: int | str) -> dict | None:
        return self._records.get(str(record_id))

    def get(self, record_id: int | str) -> dict:
        record = self.find(record_id)
        if record is None:
            raise NotFound(f"{self.kind} {record_id} not found")
        return record

    def __contains__(self, record_id: int | str) -> bool:
        return str(record_id) in self._records

    def __iter__(self):
        return iter(list(self._records.values()))  # a copy: callers may delete while they walk

    def __len__(self) -> int:
        return len(self._records)

    def in_id_order(self) -> list[dict]:
        return sorted(self._records.values(), key=lambda record: record[self.id_field])

    def new_id(self) -> int:
        """Reserve the next id, for a record whose files must be written before it is added."""
        return self.store.next_id(self.name)

    def add(self, record: dict) -> dict:
        """Store a new record under the next id (or the id reserved with new_id); `await store.commit()` after."""
        if self.id_field not in record:
            record = {self.id_field: self.new_id(), **record}
        self._records[str(record[self.id_field])] = record
        return record

    def update(self, record_id: int | str, changes: dict) -> dict:
        record = self.get(record_id)
        record.update(changes)
        return record

    def delete(self, record_id: int | str) -> dict:
        record = self.get(record_id)
        del self._records[str(record_id)]
        return record

    def delete_where(self, predicate: Callable[[dict], bool]) -> list[dict]:
        removed = [record for record in self if predicate(record)]
        for record in removed:
            del self._records[str(record[self.id_field])]
        return removed

    @staticmethod
    def public_view(record: dict) -> dict:
        """A record as the API shows it. Keys starting with `_` are secret (password hashes, keys, passwords)
        and never leave the store: this is the one place that rule is applied."""
        return {key: value for key, value in record.items() if not key.startswith("_")}


class Store:
    """The whole state in one dict, saved as JSON. Change a record through its collection (`store.users`, ...),
    then `await commit()`.

    Concurrent commits are coalesced into one write; each caller's commit returns once a write that
    includes its change is on disk. A failed write restores the last good document and raises.
    """

    FILE = "portainer.json"

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, self.FILE)
        self.backup_path = self.path + ".bak"
        self.data: dict = {}  # the document itself; reached through the collections and properties below
        self.users = Collection(self, "users", "user")
        self.api_keys = Collection(self, "api_keys", "API key")
        self.teams = Collection(self, "teams", "team")
        self.team_memberships = Collection(self, "team_memberships", "team membership")
        self.endpoints = Collection(self, "endpoints", "environment")
        self.tags = Collection(self, "tags", "tag", id_field="ID")
        self.resource_controls = Collection(self, "resource_controls", "resource control")
        self.registries = Collection(self, "registries", "registry")
        self.stacks = Collection(self, "stacks", "stack")
        self.edge_groups = Collection(self, "edge_groups", "edge group")
        self.edge_jobs = Collection(self, "edge_jobs", "edge job")
        self.edge_stacks = Collection(self, "edge_stacks", "edge stack")
        self.custom_templates = Collection(self, "custom_templates", "custom template")
        self.endpoint_groups = Collection(self, "endpoint_groups", "environment group")
        self.webhooks = Collection(self, "webhooks", "webhook")
        self._lock_file = None
        self._dirty = False
        self._waiters: list[asyncio.Future] = []
        self._flusher: asyncio.Task | None = None

    # -- ownership --------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        lock_path = os.path.join(self.directory, "portainer.lock")
        lock_file = open(lock_path, "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "unknown"
            lock_file.close()
            raise DataDirectoryInUse(
                f"data directory {self.directory} is already used by another portainer.py process "
                f"(pid {owner}); only one server may own a data directory") from None
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        self._lock_file = lock_file

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    # -- loading ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        doc = None
        for candidate in (self.path, self.backup_path):
            try:
                with open(candidate, "rb") as f:
                    doc = json.loads(f.read())
                if not isinstance(doc, dict):
                    raise ValueError("not a JSON object")
                if candidate != self.path:
                    log.warning("store %s did not load; using the previous version %s", self.path, candidate)
                break
            except FileNotFoundError:
                continue
            except (ValueError, OSError) as exc:
                log.error("store file %s is unreadable: %s", candidate, exc)
                doc = None
        self.data = self.migrate(doc or {"schema_version": 0})

    @staticmethod
    def migrate(doc: dict) -> dict:
        version = doc.get("schema_version", 0)
        if version > SCHEMA_VERSION:
            raise SystemExit(f"portainer.py: the store has schema version {version}, newer than this "
                             f"program's {SCHEMA_VERSION}; upgrade portainer.py")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](doc)
            version += 1
            doc["schema_version"] = version
        return doc

    # -- the parts of the document that are not collections ---------------------------------------------------
    @property
    def instance_id(self) -> str:
        return self.data["instance_id"]

    @property
    def settings(self) -> dict:
        """What administrators changed; `current_settings` adds the defaults."""
        return self.data["settings"]

    @property
    def revoked_tokens(self) -> dict[str, int]:
        """Logged-out session ids and when each would have expired: {jti: exp}."""
        return self.data["revoked_tokens"]

    @property
    def analytics(self) -> dict:
        return self.data.setdefault("analytics", {})

    def document(self) -> bytes:
        """The whole document as it is written to disk, at one consistent moment."""
        return json.dumps(self.data, separators=(",", ":")).encode()

    # -- writing ----------------------------------------------------------------------------------------------
    def next_id(self, collection: str) -> int:
        ids = self.data["next_id"]
        existing = self.data.get(collection, {})
        value = max(ids.get(collection, 1), max((int(k) for k in existing), default=0) + 1)
        ids[collection] = value + 1
        return value

    async def commit(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        self._dirty = True
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await asyncio.shield(waiter)

    async def _flush(self) -> None:
        while self._dirty:
            self._dirty = False
            waiters, self._waiters = self._waiters, []
            payload = self.document()
            try:
                await asyncio.to_thread(self.write_document, payload)
            except OSError as exc:
                log.error("store write failed: %s", exc)
                self.load()  # the last good document, so memory never holds what disk does not
                error = InsufficientStorage("the store could not be saved; nothing was changed", str(exc))
                for w in waiters:
                    if not w.done():
                        w.set_exception(error)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def write_document(self, payload: bytes) -> None:
        """temp file -> fsync -> keep the old one as .bak -> rename into place -> fsync the directory."""
        tmp = f"{self.path}.tmp.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            if os.path.exists(self.path):
                os.replace(self.path, self.backup_path)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def drain(self) -> None:
        """Return once no write is pending or in flight (including writes begun while waiting)."""
        while self._flusher is not None and not self._flusher.done():
            with contextlib.suppress(Exception):
                await self._flusher


write_private_file = shared.write_private_file


# ================================================================================================================
# Certificates and secrets
# ================================================================================================================


def load_or_create_secret(directory: str, name: str, size: int = 32) -> bytes:
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            value = f.read()
        if len(value) >= size:
            return value
    except FileNotFoundError:
        pass
    value = secrets.token_bytes(size)
    write_private_file(path, value)
    return value


def load_or_create_certificate(directory: str) -> tuple[str, str]:
    """A self-signed certificate made once into the data directory and reused on every start."""
    cert_path = os.path.join(directory, "certs", "cert.pem")
    key_path = os.path.join(directory, "certs", "key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(os.path.dirname(cert_path), mode=0o700, exist_ok=True)
    shared.create_self_signed_certificate(cert_path, key_path, "portainer.py")
    return cert_path, key_path


def certificate_fingerprint(cert_path: str) -> str:
    """SHA-256 of the certificate in DER form, hex: what an edge key pins."""
    with open(cert_path, "rb") as f:
        der = ssl.PEM_cert_to_DER_cert(f.read().decode())
    return shared.der_fingerprint(der)


# ================================================================================================================
# Docker connectors: one interface for every kind of environment (the edge tunnel's is in the Edge section)
# ================================================================================================================


class DockerConnector:
    """How the server reaches one environment's Docker API.

    Every environment kind (local socket or TCP API, agent, edge tunnel) implements `open_connection`
    and may add `request_headers` (an agent signs each request). The proxy, snapshots and stacks use
    only `request`/`request_json`, never the kind.
    """

    def __init__(self, endpoint: dict):
        self.endpoint_id = endpoint["Id"]
        self.client = shared.DockerClient(self.open_connection)

    async def open_connection(self) -> shared.HttpConnection:
        raise NotImplementedError

    def request_headers(self, method: str, target: str) -> list[tuple[str, str]]:
        return []

    async def snapshot_details(self) -> dict:
        """Fields a kind adds to each snapshot (an agent adds its version)."""
        return {}

    # A stack's project directory: the server keeps every project under <data>/compose/<id>/; where the engine runs
    # on another host (agent, edge), that host's agent keeps a copy, so relative binds and secret files resolve there.
    async def project_directory(self, name: str, local_directory: str) -> str:
        """Where the engine's host has the project's files (what relative bind sources resolve against)."""
        return local_directory

    async def store_project(self, name: str, local_directory: str) -> None:
        """Put the project's files where the engine's host reads them (here: they are already there)."""

    async def remove_project(self, name: str) -> None:
        """Remove the copy of a project's files the engine's host keeps (here: none besides the server's own)."""

    async def request(self, method: str, target: str, headers=(), body=None, body_length=None,
                      timeout: float | None = 30.0) -> shared.DockerResponse:
        """One request; the body of the answer streams. Raises BadGateway/GatewayTimeout when unreachable."""
        all_headers = list(headers) + self.request_headers(method, target)
        try:
            return await self.client.request(method, target, all_headers, body, body_length, timeout)
        except asyncio.TimeoutError:
            raise GatewayTimeout(f"environment {self.endpoint_id} did not answer in time",
                                 f"{method} {target.split('?')[0]} timed out after {timeout} s") from None
        except shared.DockerUnreachable as exc:
            raise BadGateway(f"environment {self.endpoint_id} is unreachable", str(exc)) from None

    async def request_json(self, method: str, target: str, body: Any = None, timeout: float = 30.0,
                           headers=()) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = list(headers) + ([("Content-Type", "application/json")] if data is not None else [])
        response = await self.request(method, target, headers, data, timeout=timeout)
        async with response:
            try:
                raw = await asyncio.wait_for(response.read(), timeout)
            except asyncio.TimeoutError:
                raise GatewayTimeout(f"environment {self.endpoint_id} did not answer in time") from None
            except shared.DockerUnreachable as exc:
                raise BadGateway(f"environment {self.endpoint_id} is unreachable", str(exc)) from None
        if response.status >= 400:
            raise engine_error(response.status, raw)
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            raise BadGateway(f"environment {self.endpoint_id} answered {method} {target.split('?')[0]} with "
                             "something that is not JSON", raw[:200].decode(errors="replace")) from None

    def close(self) -> None:
        self.client.close()


def engine_error(status: int, raw: bytes) -> ApiError:
    """An engine's error answer, as our error with the engine's status and message."""
    try:
        message = as_text(as_dict(json.loads(raw)).get("message"))
    except (ValueError, RecursionError):
        message = raw.decode(errors="replace")[:500]
    error = ApiError(message or f"the Docker engine answered {status}")
    error.status = status if 400 <= status < 600 else 502
    return error


# -- reading engine answers --------------------------------------------------------------------------------------
# An engine's answer is input like a request: a field may be null (images and volumes without labels), missing
# (older engines, containers whose image was removed) or of another type (a proxy or an agent in between). Every
# field this server reads from one goes through these, so that no answer makes a snapshot, a page or a stack
# operation fail with a 500.

# An id an engine gave that is safe to put back into a path (container, image, service, network ids, names).
ENGINE_ID = re.compile(r"[\w][\w.:-]{0,127}")


def as_dict(value: Any) -> dict:
    """`value` when it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list:
    """`value` when it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def dicts_in(value: Any) -> list[dict]:
    """The JSON objects of an array (a list answer, a list field); anything else in it is skipped."""
    return [item for item in as_list(value) if isinstance(item, dict)]


def texts_in(value: Any) -> list[str]:
    """The strings of an array; anything else in it is skipped."""
    return [item for item in as_list(value) if isinstance(item, str)]


def as_text(value: Any) -> str:
    """`value` when it is a string, else ""."""
    return value if isinstance(value, str) else ""


def as_count(value: Any) -> int:
    """`value` when it is a whole number (not a boolean), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_labels(value: Any) -> dict[str, str]:
    """A labels map: only its text-to-text entries (null labels are none)."""
    return {k: v for k, v in as_dict(value).items() if isinstance(k, str) and isinstance(v, str)}


def field_at(value: Any, *keys: str) -> Any:
    """The field at a path of nested objects (`field_at(service, "Spec", "Name")`); None where one is missing."""
    for key in keys:
        value = as_dict(value).get(key)
    return value


def engine_id(value: Any) -> str:
    """An id or name from an engine answer when it is safe to put into a path, else ""."""
    return value if isinstance(value, str) and ENGINE_ID.fullmatch(value) else ""


def object_id(item: dict) -> str:
    """The path-safe id of an object from an engine answer (Swarm objects say ID, the others Id); "" if none."""
    return engine_id(item.get("ID")) or engine_id(item.get("Id"))


def answered_id(answer: Any, key: str = "Id") -> str:
    """The id an engine answered a create with; BadGateway when the answer carries none."""
    created = engine_id(as_dict(answer).get(key))
    if not created:
        raise BadGateway("the Docker engine answered a create without a usable id", str(answer)[:200])
    return created


def container_summaries(answer: Any) -> list[dict]:
    """A GET /containers/json answer, each item with the fields this server reads made safe to read: Id (path
    safe), Names (strings), Image, State, Status (text), Labels (text to text). Items without an id are left out."""
    containers = []
    for item in dicts_in(answer):
        container_id = engine_id(item.get("Id"))
        if container_id:
            containers.append({**item, "Id": container_id, "Names": texts_in(item.get("Names")),
                               "Image": as_text(item.get("Image")), "State": as_text(item.get("State")),
                               "Status": as_text(item.get("Status")), "Labels": as_labels(item.get("Labels"))})
    return containers


def container_name(container: dict) -> str:
    """The name a container list item shows (its first name, without the slash)."""
    names = texts_in(container.get("Names"))
    return names[0].lstrip("/") if names else ""


class AgentProjectFiles:
    """Project files on the host of an agent or edge agent: its routes PUT/GET/DELETE /projects/{name}, reached
    through `project_request` (signed to an agent, through the tunnel to an edge agent)."""

    endpoint_id: int
    keeps_projects = True  # False once the agent answered that it has no project routes (an older agent)

    async def project_request(self, method: str, target: str, body=None, body_length=None,
                              timeout: float = 30.0) -> shared.DockerResponse:
        raise NotImplementedError

    async def project_call(self, method: str, name: str, body=None, body_length=None, timeout: float = 30.0) -> Any:
        target = shared.PROJECTS_PATH.format(name=urllib.parse.quote(name, safe=""))
        response = await self.project_request(method, target, body, body_length, timeout)
        async with response:
            raw = await asyncio.wait_for(response.read(), timeout)
        if response.status in (404, 405):  # an agent without project routes relays the call to its engine
            self.keeps_projects = False
            log.warning("the agent of environment %s keeps no project files (an older agent): relative binds of "
                        "its stacks name the server's paths", self.endpoint_id)
            return None
        if response.status >= 400:
            error = engine_error(response.status, raw)
            raise BadGateway(f"the agent of environment {self.endpoint_id} refused the project's files: "
                             f"{error.message}")
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            raise BadGateway(f"the agent of environment {self.endpoint_id} answered {target} with something that "
                             "is not JSON") from None

    async def project_directory(self, name: str, local_directory: str) -> str:
        path = as_text(as_dict(await self.project_call("GET", name)).get("Path"))
        if not self.keeps_projects:
            return local_directory
        if not path.startswith("/"):
            raise BadGateway(f"the agent of environment {self.endpoint_id} named no projects directory")
        return path

    async def store_project(self, name: str, local_directory: str) -> None:
        if not self.keeps_projects:
            return
        spool = await asyncio.to_thread(packed_project, local_directory)
        try:
            size = spool.seek(0, os.SEEK_END)
            spool.seek(0)
            await self.project_call("PUT", name, file_chunks(spool), size, timeout=300)
        finally:
            spool.close()

    async def remove_project(self, name: str) -> None:
        if self.keeps_projects:
            await self.project_call("DELETE", name)


def packed_project(directory: str):
    """The project directory as a tar in a temporary file (read from its start by the caller, who closes it)."""
    spool = tempfile.TemporaryFile()
    try:
        shared.pack_project(directory, spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def file_chunks(source) -> AsyncIterator[bytes]:
    """A binary file's bytes from where it stands, read in a thread chunk by chunk (a streamed request body)."""
    while chunk := await asyncio.to_thread(source.read, shared.STREAM_CHUNK):
        yield chunk


class SocketConnector(DockerConnector):
    """A Docker API on a unix socket or a TCP address, optionally with TLS (client certificates)."""

    def __init__(self, endpoint: dict, tls_directory: str):
        super().__init__(endpoint)
        self.url = endpoint["URL"]
        tls = endpoint.get("TLSConfig") or {}
        self.ssl_context = None
        if tls.get("TLS"):
            ctx = ssl.create_default_context()
            ca = os.path.join(tls_directory, "ca.pem")
            if os.path.exists(ca):
                ctx.load_verify_locations(ca)
            cert, key = os.path.join(tls_directory, "cert.pem"), os.path.join(tls_directory, "key.pem")
            if os.path.exists(cert) and os.path.exists(key):
                ctx.load_cert_chain(cert, key)
            if tls.get("TLSSkipVerify"):
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self.ssl_context = ctx

    async def open_connection(self) -> shared.HttpConnection:
        reader, writer = await shared.open_docker_stream(self.url, self.ssl_context)
        return shared.HttpConnection(reader, writer)


class AgentConnector(AgentProjectFiles, DockerConnector):
    """An agent.py on another node: TLS pinned to the certificate seen at creation, every request signed."""

    def __init__(self, endpoint: dict, signer: shared.RequestSigner, default_secret: str):
        super().__init__(endpoint)
        self.url = endpoint["URL"]
        self.fingerprint = (endpoint.get("Agent") or {}).get("CertificateFingerprint", "")
        self.signer = signer
        self.secret = endpoint.get("_AgentSecret") or default_secret

    async def open_connection(self) -> shared.HttpConnection:
        reader, writer, fingerprint = await open_agent_stream(self.url)
        if fingerprint != self.fingerprint:
            writer.close()
            raise shared.DockerUnreachable(
                f"the agent at {self.url} shows a certificate with SHA-256 {fingerprint}, not the {self.fingerprint} "
                "recorded when the environment was added; if the agent was reinstalled, add the environment again")
        return shared.HttpConnection(reader, writer)

    async def request(self, method: str, target: str, headers=(), body=None, body_length=None,
                      timeout: float | None = 30.0) -> shared.DockerResponse:
        """Signed; the node a request targets is signed too, so it cannot be replayed on another node."""
        headers = list(headers)
        node = next((v for k, v in headers if k.lower() == shared.TARGET_HEADER.lower()), "")
        headers += self.signer.headers(method, target, self.secret, target_node=node)
        return await super().request(method, target, headers, body, body_length, timeout)

    async def project_request(self, method: str, target: str, body=None, body_length=None,
                              timeout: float = 30.0) -> shared.DockerResponse:
        return await self.request(method, target, body=body, body_length=body_length, timeout=timeout)

    async def snapshot_details(self) -> dict:
        async with await self.request("GET", "/ping", timeout=10) as response:
            return {"AgentVersion": response.headers.get("Portainer-Agent", "")}


async def open_agent_stream(url: str):
    """A TLS stream to an agent and the SHA-256 fingerprint of the certificate it showed."""
    parsed = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    # Agents make their own certificates; trust comes from the fingerprint pinned at creation, checked by callers.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await shared.open_docker_stream(f"https://{parsed.hostname}:{parsed.port or 9001}", context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return reader, writer, shared.der_fingerprint(der)


# ================================================================================================================
# Environments and snapshots
# ================================================================================================================

DEFAULT_SECURITY_SETTINGS = {
    "allowBindMountsForRegularUsers": False,
    "allowPrivilegedModeForRegularUsers": False,
    "allowHostNamespaceForRegularUsers": False,
    "allowDeviceMappingForRegularUsers": False,
    "allowContainerCapabilitiesForRegularUsers": False,
    "allowSysctlSettingForRegularUsers": False,
    "allowStackManagementForRegularUsers": False,
    "allowVolumeBrowserForRegularUsers": False,
    "enableHostManagementFeatures": False,
}


UNASSIGNED_GROUP_ID = 1


def endpoint_groups(store: Store) -> Collection:
    """Environment groups; group 1 "Unassigned" always exists, as in Portainer (data made before groups get it)."""
    if UNASSIGNED_GROUP_ID not in store.endpoint_groups:
        store.endpoint_groups.add({
            "Id": UNASSIGNED_GROUP_ID, "Name": "Unassigned", "Description": "Unassigned environments",
            "UserAccessPolicies": {}, "TeamAccessPolicies": {}, "TagIds": [], "Labels": []})
    return store.endpoint_groups


def group_of_endpoint(store: Store, endpoint: dict) -> dict:
    """The environment's group; an environment whose group is gone counts as unassigned."""
    groups = endpoint_groups(store)
    return groups.find(endpoint.get("GroupId", UNASSIGNED_GROUP_ID)) or groups.get(UNASSIGNED_GROUP_ID)


class EnvironmentKind:
    """One kind of environment (Portainer's EndpointType): everything that differs between kinds, in one class.

    How the server connects to one, what creating or changing one checks, what its answers add, how often the
    periodic snapshot reaches it, and what it runs for the server's lifetime. Every kind is listed once, in
    ENVIRONMENT_KINDS; make_app makes one of each for the app.
    """

    type: int
    snapshots_per_pass: int | None = None  # None: every environment of the kind in every periodic pass

    def __init__(self, app: web.Application):
        self.app = app

    def connector(self, endpoint: dict) -> DockerConnector:
        raise NotImplementedError(f"{type(self).__name__} must say how it connects")

    async def create(self, request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
        """Check the creation form and fill in the kind's own fields of the new environment."""
        raise NotImplementedError(f"{type(self).__name__} must say how one is created")

    def check_update(self, endpoint: dict, changes: dict) -> None:
        """Check (and normalise) the changes an administrator asks for, before any is applied."""

    def answer_created(self, request: web.Request, endpoint: dict, view: dict) -> None:
        """What the creation answer adds, for the administrator who made it only (e.g. an edge key)."""

    def extend_view(self, endpoint: dict, view: dict) -> None:
        """Live state the kind shows in every answer about one of its environments."""

    def removed(self, endpoint: dict) -> None:
        """Let go of what an environment held once it is removed."""

    def after_restore(self) -> None:
        """A restored store replaced every record: forget what was kept in memory about the old ones."""

    async def shutting_down(self) -> None:
        """Before aiohttp stops waiting for open requests: tell long-lived connections to go."""

    async def lifecycle(self, app: web.Application):
        """For app.cleanup_ctx: start background work before the yield, stop it after."""
        yield


class Environments:
    """Connectors for each environment, and their live status and latest snapshot (kept in memory only)."""

    def __init__(self, store: Store, data_directory: str):
        self.store = store
        self.data_directory = data_directory
        self._connectors: dict[int, DockerConnector] = {}
        self.status: dict[int, int] = {}
        self.snapshots: dict[int, dict] = {}
        self.kinds: dict[int, EnvironmentKind] = {}  # {Type: kind}, one of each of ENVIRONMENT_KINDS (make_app)
        self.snapshot_attempted: dict[int, float] = {}  # monotonic time of each environment's latest attempt

    def tls_directory(self, endpoint_id: int) -> str:
        return os.path.join(self.data_directory, "tls", str(endpoint_id))

    def connector(self, endpoint_id: int) -> DockerConnector:
        connector = self._connectors.get(endpoint_id)
        if connector is None:
            endpoint = self.store.endpoints.get(endpoint_id)
            kind = self.kinds.get(endpoint["Type"])
            if kind is None:
                raise BadRequest(f"environment {endpoint_id} has type {endpoint['Type']}, which this server "
                                 f"cannot connect to")
            connector = self._connectors[endpoint_id] = kind.connector(endpoint)
        return connector

    def forget(self, endpoint_id: int) -> None:
        connector = self._connectors.pop(endpoint_id, None)
        if connector is not None:
            connector.close()

    def close(self) -> None:
        for endpoint_id in list(self._connectors):
            self.forget(endpoint_id)

    def public_view(self, endpoint: dict) -> dict:
        view = self.store.endpoints.public_view(endpoint)
        view["Status"] = self.status.get(endpoint["Id"], STATUS_DOWN)
        view.setdefault("GroupId", UNASSIGNED_GROUP_ID)
        view.setdefault(IMAGE_CHECK_SETTING, False)
        snapshot = self.snapshots.get(endpoint["Id"])
        view["Snapshots"] = [snapshot] if snapshot else []
        kind = self.kinds.get(endpoint["Type"])
        if kind is not None:
            kind.extend_view(endpoint, view)
        return view

    async def snapshot(self, endpoint_id: int) -> dict | None:
        """Ask the engine for its state; up on an answer, down on none. Never raises for an engine fault."""
        self.snapshot_attempted[endpoint_id] = time.monotonic()
        try:
            connector = self.connector(endpoint_id)
            info, version, containers, images, volumes, networks = await asyncio.gather(
                connector.request_json("GET", "/info", timeout=10),
                connector.request_json("GET", "/version", timeout=10),
                connector.request_json("GET", "/containers/json?all=1", timeout=10),
                connector.request_json("GET", "/images/json", timeout=10),
                connector.request_json("GET", "/volumes", timeout=10),
                connector.request_json("GET", "/networks", timeout=10),
            )
            details = await connector.snapshot_details()
        except (ApiError, ValueError) as exc:
            if self.status.get(endpoint_id) != STATUS_DOWN:
                log.warning("environment %s is down: %s", endpoint_id, getattr(exc, "details", exc))
            self.status[endpoint_id] = STATUS_DOWN
            return None
        snapshot = {**snapshot_of(info, version, containers, images, volumes, networks), **details}
        if self.status.get(endpoint_id) == STATUS_DOWN:
            log.info("environment %s is up", endpoint_id)
        self.status[endpoint_id] = STATUS_UP
        self.snapshots[endpoint_id] = snapshot
        return snapshot

    async def snapshot_all(self) -> None:
        ids = [ep["Id"] for ep in self.store.endpoints if ep["Type"] in self.kinds]
        await asyncio.gather(*(self.snapshot(i) for i in ids))

    async def snapshot_due(self) -> None:
        """One periodic pass: every environment, except that a capped kind refreshes only the ones it tried
        longest ago (so every one gets its turn, and none that cannot answer takes another's turn for ever)."""
        ids, capped = [], {t: [] for t, kind in self.kinds.items() if kind.snapshots_per_pass is not None}
        for endpoint in self.store.endpoints:
            if endpoint["Type"] in capped:
                capped[endpoint["Type"]].append(endpoint["Id"])
            elif endpoint["Type"] in self.kinds:
                ids.append(endpoint["Id"])
        for kind_type, kind_ids in capped.items():
            kind_ids.sort(key=lambda i: self.snapshot_attempted.get(i, 0))
            ids += kind_ids[:self.kinds[kind_type].snapshots_per_pass]
        await asyncio.gather(*(self.snapshot(i) for i in ids))


def snapshot_of(info: Any, version: Any, containers: Any, images: Any, volumes: Any, networks: Any) -> dict:
    """What an environment's list page shows, from the engine's answers (whatever their fields hold)."""
    info, containers = as_dict(info), container_summaries(containers)
    running = sum(1 for c in containers if c["State"] == "running")
    statuses = [c["Status"] for c in containers]
    projects = {c["Labels"].get(LABEL_PROJECT) for c in containers} - {None}
    return {
        "Time": now(),
        "DockerVersion": as_text(as_dict(version).get("Version")),
        "Swarm": field_at(info, "Swarm", "ControlAvailable") is True,
        "TotalCPU": as_count(info.get("NCPU")),
        "TotalMemory": as_count(info.get("MemTotal")),
        "ContainerCount": len(containers),
        "RunningContainerCount": running,
        "StoppedContainerCount": len(containers) - running,
        "HealthyContainerCount": sum(1 for s in statuses if "(healthy)" in s),
        "UnhealthyContainerCount": sum(1 for s in statuses if "(unhealthy)" in s),
        "ImageCount": len(dicts_in(images)),
        "VolumeCount": len(dicts_in(as_dict(volumes).get("Volumes"))),
        "NetworkCount": len(dicts_in(networks)),
        "StackCount": len(projects),
        "NodeCount": 1,
    }


async def snapshot_loop(app: web.Application) -> None:
    environments = app[ENVIRONMENTS]
    interval = app[CONFIG].snapshot_interval
    while True:
        await environments.snapshot_due()
        await asyncio.sleep(interval)


# ================================================================================================================
# Auth: passwords, JWT sessions, API keys, login rate limit, and the middleware that requires auth by default
# ================================================================================================================


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    n, r, p = 2 ** 15, 8, 1
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                   maxmem=64 * 1024 * 1024, dklen=32)
        return hmac.compare_digest(candidate, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def check_password_strength(password: Any) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password must be at least {MIN_PASSWORD_LENGTH} characters long")
    return password


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_duration(text: str, default: int = 8 * 3600) -> int:
    match = re.fullmatch(r"\s*([0-9]{1,7})\s*([smhd]?)\s*", str(text))
    if not match:
        return default
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


class Sessions:
    """JWT (HS256) sessions signed with a key kept in the data directory; logout revokes by token id."""

    def __init__(self, key: bytes, store: Store):
        self.key = key
        self.store = store

    def issue(self, user: dict, lifetime: int) -> tuple[str, dict]:
        claims = {"id": user["Id"], "username": user["Username"], "role": user["Role"], "iat": time.time(),
                  "exp": now() + lifetime, "jti": secrets.token_hex(16)}
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = b64url(hmac.new(self.key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}", claims

    def verify(self, token: str) -> dict:
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(payload_b64))
            signature = b64url_decode(signature_b64)
        except (ValueError, TypeError, RecursionError):
            raise Unauthorized("invalid session token") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise Unauthorized("invalid session token", "only HS256 tokens issued by this server are accepted")
        expected = hmac.new(self.key, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("invalid session token", "signature mismatch")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < now():
            raise Unauthorized("session expired, log in again")
        if claims.get("jti") in self.store.revoked_tokens:
            raise Unauthorized("session was logged out, log in again")
        return claims

    def csrf_token(self, claims: dict) -> str:
        return b64url(hmac.new(self.key, b"csrf:" + claims["jti"].encode(), hashlib.sha256).digest())

    async def revoke(self, claims: dict) -> None:
        revoked = self.store.revoked_tokens
        for jti, expiry in list(revoked.items()):
            if expiry < now():
                del revoked[jti]
        revoked[claims["jti"]] = claims["exp"]
        await self.store.commit()


class LoginRateLimit:
    """Failed logins per client address and per username: a burst, then one more every `refill` seconds; a clear
    429. An attempt takes its token before the password is checked (parallel guesses cannot all pass); a success
    gives it back. An address the user logged in from before counts against its own address only,
    so others guessing a username cannot lock its user out."""

    MAX_BUCKETS = 10000
    KNOWN_ADDRESS_SECONDS = 30 * 24 * 3600

    def __init__(self, burst: int = 5, refill: float = 6.0):
        self.burst = burst
        self.refill = refill
        self._buckets: dict[str, tuple[float, float]] = {}
        self._known: dict[tuple[str, str], float] = {}  # (username, address) of a success -> when

    def _tokens(self, key: str) -> float:
        tokens, stamp = self._buckets.get(key, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - stamp) / self.refill)

    def _refuse(self, whom: str) -> TooManyRequests:
        retry = int(self.refill) + 1
        error = TooManyRequests(f"too many failed logins {whom}; try again in {retry} s")
        error.retry_after = retry
        return error

    @staticmethod
    def _keys(address: str, username: str) -> tuple[str, str]:
        return "address " + address, "user " + username.lower()[:256]

    def check(self, address: str) -> None:
        """Refuse early, before the body is read, an address that has no attempt left."""
        if self._tokens(self._keys(address, "")[0]) < 1:
            raise self._refuse(f"from {address}")

    def reserve(self, address: str, username: str) -> None:
        """Take one attempt from the address and from the username, or refuse; nothing awaits in between."""
        by_address, by_user = self._keys(address, username)
        seen = self._known.get((by_user, address))
        known = seen is not None and time.monotonic() - seen < self.KNOWN_ADDRESS_SECONDS
        keys = (by_address,) if known else (by_address, by_user)
        if self._tokens(by_address) < 1:
            raise self._refuse(f"from {address}")
        if not known and self._tokens(by_user) < 1:
            raise self._refuse("for this username")
        stamp = time.monotonic()
        for key in keys:
            self._buckets[key] = (self._tokens(key) - 1, stamp)
        while len(self._buckets) > self.MAX_BUCKETS:
            self._buckets.pop(next(iter(self._buckets)))

    def succeeded(self, address: str, username: str) -> None:
        """The attempt was the user's: the address starts afresh and the username gets its token back (its
        other counts stay: they are others' guesses)."""
        by_address, by_user = self._keys(address, username)
        self._buckets.pop(by_address, None)
        seen = self._known.pop((by_user, address), None)
        if (seen is None or time.monotonic() - seen >= self.KNOWN_ADDRESS_SECONDS) and by_user in self._buckets:
            self._buckets[by_user] = (self._tokens(by_user) + 1, time.monotonic())
        self._known[(by_user, address)] = time.monotonic()
        while len(self._known) > self.MAX_BUCKETS:
            self._known.pop(next(iter(self._known)))


def api_key_digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclasses.dataclass
class Caller:
    """Who is making a request, and how they proved it."""

    user: dict
    via: str  # "jwt", "cookie" or "apikey"
    claims: dict | None = None

    @property
    def id(self) -> int:
        return self.user["Id"]

    @property
    def is_admin(self) -> bool:
        return self.user["Role"] == ROLE_ADMIN


def public(handler):
    """Mark a handler as reachable without authentication. Every other route requires it."""
    handler.public = True
    return handler


def caller_of(request: web.Request) -> Caller:
    return request[CALLER_KEY]


def require_admin(request: web.Request) -> Caller:
    caller = caller_of(request)
    if not caller.is_admin:
        raise Forbidden("administrator access required")
    return caller


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def authenticate(request: web.Request) -> Caller:
    app = request.app
    store: Store = app[STORE]
    users = store.users
    raw_key = request.headers.get("X-API-Key")
    if raw_key:
        key = app[API_KEY_INDEX].get(api_key_digest(raw_key))
        if key is None or key["UserId"] not in users:
            raise Unauthorized("invalid API key")
        key["_last_used_runtime"] = now()
        return Caller(users.get(key["UserId"]), "apikey")
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("Authorization header must be 'Bearer <jwt>'")
        via = "jwt"
    else:
        token = request.cookies.get(SESSION_COOKIE, "")
        via = "cookie"
        if not token:
            message = "authentication required"
            if shared.is_upgrade_request(request) and PROXY_PREFIX.match(request.path):
                # The Docker SDK for Python's attach_socket() skips the HttpHeaders of ~/.docker/config.json.
                message += (" (a Docker SDK client sends its key on attach_socket() only from its session "
                            "headers: client.api.headers['X-API-Key'] = key)")
            raise Unauthorized(message, "send a JWT as 'Authorization: Bearer', an X-API-Key, or log in from the "
                                        "web UI")
    claims = app[SESSIONS].verify(token.strip())
    user = users.find(claims["id"])
    if user is None:
        raise Unauthorized("the user of this session no longer exists")
    if claims.get("iat", 0) < user.get("TokenIssueAt", 0):
        raise Unauthorized("session was invalidated by a password change, log in again")
    caller = Caller(user, via, claims)
    if via == "cookie" and request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, app[SESSIONS].csrf_token(claims)):
            raise Forbidden("missing or invalid CSRF token", f"cookie sessions must send the {CSRF_HEADER} header")
    return caller


@web.middleware
async def error_middleware(request: web.Request, handler):
    """The one place errors become responses: Portainer's shape, {"message", "details"}."""
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if hasattr(exc, "retry_after") else None
        return json_response({"message": exc.message, "details": exc.details}, exc.status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"message": exc.reason, "details": exc.text or exc.reason}, exc.status,
                             {k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response({"message": "internal server error", "details": "see the server log"}, 500)


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """Secure by default: a route is reachable without auth only when its handler is marked @public."""
    for name in request.query:
        if name.lower() in CREDENTIAL_QUERY_PARAMS:
            raise BadRequest("credentials are not accepted in URLs",
                             f"remove the {name!r} query parameter and send the token in a header "
                             "('Authorization: Bearer <jwt>' or 'X-API-Key'); a browser's WebSocket is "
                             "authenticated by the session cookie that POST /api/auth sets")
    route_handler = getattr(request.match_info, "handler", None)
    if getattr(route_handler, "public", False) or request.match_info.http_exception is not None \
            or not request.path.startswith("/api/"):
        return await handler(request)
    request[CALLER_KEY] = authenticate(request)
    response = await handler(request)
    caller = request[CALLER_KEY]
    if caller.via == "cookie" and caller.claims and not response.prepared:
        response.headers[CSRF_HEADER] = request.app[SESSIONS].csrf_token(caller.claims)
    return response


def content_security_policy() -> str:
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


async def set_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every answer needs: an `on_response_prepare` signal, so that streamed and proxied answers (engine
    answers relayed, logs, events, errors) get them as well as the ones a handler builds. Set, not defaulted:
    an engine's answer is input, and a header it sent must not weaken these."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = content_security_policy()
    if request.secure and request.app[CONFIG].hsts:
        response.headers["Strict-Transport-Security"] = "max-age=31536000"



# ================================================================================================================
# Activity log: every state-changing request and every login, appended to a JSON-lines file by a background
# batcher (the request path only appends to a list in memory)
# ================================================================================================================


class ActivityLog:
    """Append-only log of activity and authentication entries in the data directory.

    `record` queues an entry in memory; `run` (a background task) writes queued entries every second, or
    sooner when many wait, with one fsync per batch, and drops entries older than the retention now and then.
    """

    FILE = "activity.jsonl"
    FLUSH_INTERVAL = 1.0
    BATCH = 500
    COMPACT_INTERVAL = 3600.0

    def __init__(self, directory: str, retention_days: Callable[[], int]):
        self.path = os.path.join(directory, self.FILE)
        self.retention_days = retention_days
        self._pending: list[dict] = []
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._last_id = 0

    def record(self, entry: dict) -> None:
        self._last_id = max(self._last_id + 1, time.time_ns() // 1000)
        self._pending.append({"id": self._last_id, "timestamp": now(), **entry})
        if len(self._pending) >= self.BATCH and self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        self._wake, self._lock = asyncio.Event(), asyncio.Lock()
        last_compaction = float("-inf")
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.FLUSH_INTERVAL)
            self._wake.clear()
            await self.flush()
            if time.monotonic() - last_compaction > self.COMPACT_INTERVAL:
                last_compaction = time.monotonic()
                await self.compact()

    async def flush(self) -> None:
        if not self._pending:
            return
        async with self._lock or contextlib.nullcontext():
            entries, self._pending = self._pending, []
            payload = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries).encode()
            try:
                await asyncio.to_thread(self._append, payload)
            except OSError as exc:
                log.error("activity log write failed, %d entries lost: %s", len(entries), exc)

    def _append(self, payload: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def compact(self) -> None:
        days = self.retention_days()
        if days <= 0:
            return
        async with self._lock or contextlib.nullcontext():
            try:
                dropped = await asyncio.to_thread(self._drop_older_than, now() - days * 86400)
            except OSError as exc:
                log.error("activity log compaction failed: %s", exc)
                return
        if dropped:
            log.info("activity log: removed %d entries older than %d days", dropped, days)

    def _drop_older_than(self, cutoff: int) -> int:
        try:
            with open(self.path, "rb") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return 0
        kept = [line for line in lines if self._timestamp(line) >= cutoff]
        if len(kept) == len(lines):
            return 0
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(lines) - len(kept)

    @staticmethod
    def _timestamp(line: bytes) -> int:
        try:
            return int(json.loads(line).get("timestamp", 0))
        except (ValueError, AttributeError, TypeError):
            return 0

    async def entries(self, kind: str) -> list[dict]:
        """Every stored entry of one kind ("activity" or "auth"), newest first, including those still queued."""
        await self.flush()
        return await asyncio.to_thread(self._read, kind)

    def _read(self, kind: str) -> list[dict]:
        found = []
        try:
            with open(self.path, "rb") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and entry.get("kind") == kind:
                        found.append(entry)
        except FileNotFoundError:
            pass
        found.reverse()
        return found


ENDPOINT_PATH = re.compile(r"^/api/(?:endpoints|docker)/(\d+)(?:/|$)")
# Logins go to the authentication log; edge tunnels are machines reconnecting, not people acting.
SECRET_PATH = re.compile(r"^(/api/stacks/webhooks/)[^/]+")
UNLOGGED_PATHS = frozenset({"/api/auth", "/api/auth/logout", shared.EDGE_TUNNEL_PATH})


def record_activity(request: web.Request, status: int) -> None:
    caller = request.get(CALLER_KEY)
    if caller is None and status == 401:
        return  # nobody to attribute it to; failed logins are in the authentication log
    store = request.app[STORE]
    endpoint_id, context = None, "Portainer"
    match = ENDPOINT_PATH.match(request.path)
    if match:
        endpoint_id = int(match.group(1))
        context = (store.endpoints.find(endpoint_id) or {}).get("Name", f"environment {endpoint_id}")
    path = SECRET_PATH.sub(r"\1…", request.path)  # a webhook's id is its only credential
    request.app[ACTIVITY].record({
        "kind": "activity", "userId": caller.id if caller else None,
        "username": caller.user["Username"] if caller else "", "endpointId": endpoint_id, "context": context,
        "method": request.method, "path": path, "action": f"{request.method} {path}",
        "query": urllib.parse.urlencode([(k, v) for k, v in request.query.items()
                                         if k.lower() not in CREDENTIAL_QUERY_PARAMS])[:1000],
        "status": status, "origin": client_address(request)})


def record_auth(request: web.Request, username: str, success: bool, kind: str = "login") -> None:
    request.app[ACTIVITY].record({
        "kind": "auth", "username": username[:128], "origin": client_address(request), "context": "Portainer",
        "type": kind, "result": "success" if success else "failure"})


@web.middleware
async def activity_middleware(request: web.Request, handler):
    """Record every state-changing API request, proxied Docker calls and WebSocket consoles included, with its
    outcome."""
    opens_console = request.headers.get("Upgrade", "").lower() == "websocket"
    if request.method in ("GET", "HEAD", "OPTIONS") and not opens_console or not request.path.startswith("/api/") \
            or request.path in UNLOGGED_PATHS:
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (ConnectionResetError, asyncio.CancelledError):
        status = 499  # the client went away before the answer was complete
        raise
    finally:
        record_activity(request, status)


# ================================================================================================================
# Access rules: who may reach an environment, and which Docker API calls pass the proxy (deny by default)
# ================================================================================================================


def user_team_ids(store: Store, user_id: int) -> set[int]:
    return {m["TeamID"] for m in store.team_memberships if m["UserID"] == user_id}


# Roles a user or team holds on one environment (Portainer Business Edition's RoleIds). A policy of
# {"RoleId": 0}, what Portainer CE stores, means a standard user.
ENV_ROLE_ADMIN, ENV_ROLE_OPERATOR, ENV_ROLE_HELPDESK, ENV_ROLE_STANDARD, ENV_ROLE_READ_ONLY = 1, 2, 3, 4, 5
ENV_ROLE_NAMES = {ENV_ROLE_ADMIN: "Environment administrator", ENV_ROLE_OPERATOR: "Operator",
                  ENV_ROLE_HELPDESK: "Helpdesk", ENV_ROLE_STANDARD: "Standard user",
                  ENV_ROLE_READ_ONLY: "Read-only user"}
# What a proxied Docker call does, from harmless to host-level; every rule below names one.
READ, LOGS, OPERATE, CONSOLE, WRITE, ADMIN = "read", "logs", "operate", "console", "write", "admin"
ROLE_ACTIONS: dict[int, frozenset] = {
    ENV_ROLE_ADMIN: frozenset({READ, LOGS, OPERATE, CONSOLE, WRITE, ADMIN}),
    ENV_ROLE_OPERATOR: frozenset({READ, LOGS, OPERATE, CONSOLE}),
    ENV_ROLE_HELPDESK: frozenset({READ, LOGS}),
    ENV_ROLE_STANDARD: frozenset({READ, LOGS, OPERATE, CONSOLE, WRITE}),
    ENV_ROLE_READ_ONLY: frozenset({READ, LOGS}),
}
# Roles that see only the resources they or their teams own; the others see the whole environment.
OWNERSHIP_BOUND_ROLES = frozenset({ENV_ROLE_STANDARD, ENV_ROLE_READ_ONLY})


def policy_role(policy: Any) -> int:
    role = policy.get("RoleId") if isinstance(policy, dict) else None
    return role if role in ROLE_ACTIONS else ENV_ROLE_STANDARD


def endpoint_role(store: Store, caller: Caller, endpoint: dict) -> int | None:
    """The caller's role on an environment, in Portainer's order: their own policy on the environment, then their
    own on its group, then the strongest of their teams' on the environment, then the strongest on the group."""
    if caller.is_admin:
        return ENV_ROLE_ADMIN
    group = group_of_endpoint(store, endpoint)
    for holder in (endpoint, group):
        own = (holder.get("UserAccessPolicies") or {}).get(str(caller.id))
        if own is not None:
            return policy_role(own)
    team_ids = user_team_ids(store, caller.id)
    for holder in (endpoint, group):
        teams = holder.get("TeamAccessPolicies") or {}
        roles = [policy_role(teams[str(t)]) for t in team_ids if str(t) in teams]
        if roles:
            return min(roles)
    return None


def can_access_endpoint(store: Store, caller: Caller, endpoint: dict) -> bool:
    return endpoint_role(store, caller, endpoint) is not None


def endpoint_for_caller(request: web.Request, endpoint_id: int) -> dict:
    """The environment, if the caller may use it; a user without access learns nothing more than 403."""
    endpoint = request.app[STORE].endpoints.get(endpoint_id)
    if not can_access_endpoint(request.app[STORE], caller_of(request), endpoint):
        raise Forbidden(f"you have no access to environment {endpoint_id}")
    return endpoint


def endpoint_security_settings(endpoint: dict) -> dict:
    return {**DEFAULT_SECURITY_SETTINGS, **(endpoint.get("SecuritySettings") or {})}


def require_stack_management(request: web.Request, endpoint: dict) -> None:
    """Refuse stack creation or change to a non-administrator unless the environment allows it."""
    store, caller = request.app[STORE], caller_of(request)
    role = endpoint_role(store, caller, endpoint)
    if role is None:
        raise Forbidden(f"you have no access to environment {endpoint['Id']}")
    if WRITE not in ROLE_ACTIONS[role]:
        raise Forbidden(f"your role on this environment ({ENV_ROLE_NAMES[role]}) cannot manage stacks")
    if role != ENV_ROLE_ADMIN and not endpoint_security_settings(endpoint)["allowStackManagementForRegularUsers"]:
        raise Forbidden("stack management is disabled for non-administrators on this environment",
                        "an administrator can allow it in the environment's security settings")


_ID = r"(?P<id>[^/]+)"
_NAME = r".+"  # image names and plugin names may hold slashes
# (methods, path pattern after the /vX.Y prefix, action, body kind). Anything not listed here is refused; a role
# may make a call only when its ROLE_ACTIONS hold the call's action. A pattern's `id` group names the resource the
# call acts on: an ownership-bound caller must own it, and the engine gets its full id instead of what was sent.
DOCKER_API_RULES: list[tuple[frozenset, re.Pattern, str, str | None]] = [
    (frozenset(m.split()), re.compile(f"^{pattern}$"), action, body_kind)
    for m, pattern, action, body_kind in [
        ("GET HEAD", r"/_ping", READ, None),
        ("GET", r"/(version|info|events|system/df)", READ, None),
        ("GET", r"/containers/json", READ, None),
        ("POST", r"/containers/create", WRITE, "container"),
        ("POST", r"/containers/prune", ADMIN, None),
        ("GET", rf"/containers/{_ID}/(json|top|changes|export|stats)", READ, None),
        ("GET", rf"/containers/{_ID}/logs", LOGS, None),
        ("GET HEAD", rf"/containers/{_ID}/archive", READ, None),
        ("PUT", rf"/containers/{_ID}/archive", WRITE, None),
        ("POST", rf"/containers/{_ID}/(start|stop|restart|kill|pause|unpause|resize)", OPERATE, None),
        ("POST", rf"/containers/{_ID}/wait", READ, None),
        ("POST", rf"/containers/{_ID}/attach", CONSOLE, None),
        ("POST", rf"/containers/{_ID}/rename", WRITE, None),
        ("POST", rf"/containers/{_ID}/update", WRITE, "container_update"),
        ("POST", rf"/containers/{_ID}/exec", CONSOLE, "exec"),
        ("DELETE", rf"/containers/{_ID}", WRITE, None),
        ("DELETE", rf"/containers/{_ID}/[^/]+", WRITE, None),  # ?link=1: remove the link /{id}/{alias}
        ("POST", rf"/exec/{_ID}/(start|resize)", CONSOLE, None),
        ("GET", rf"/exec/{_ID}/json", READ, None),
        ("GET", r"/images/(json|search|get)", READ, None),
        ("POST", r"/images/(create|load)", WRITE, None),
        ("POST", r"/images/prune", ADMIN, None),
        ("POST", r"/build/prune", ADMIN, None),
        ("POST", r"/(build|commit)", WRITE, None),
        ("POST", r"/session", WRITE, None),
        ("GET", rf"/images/{_NAME}/(json|history|get)", READ, None),
        ("POST", rf"/images/{_NAME}/(tag|push)", WRITE, None),
        ("DELETE", rf"/images/{_NAME}", WRITE, None),
        ("GET", rf"/distribution/{_NAME}/json", READ, None),
        ("POST", r"/auth", WRITE, None),
        ("GET", r"/networks", READ, None),
        ("GET", rf"/networks/{_ID}", READ, None),
        ("POST", r"/networks/create", WRITE, "network"),
        ("POST", r"/networks/prune", ADMIN, None),
        ("POST", rf"/networks/{_ID}/connect", WRITE, "network_connect"),
        ("POST", rf"/networks/{_ID}/disconnect", WRITE, "network_disconnect"),
        ("DELETE", rf"/networks/{_ID}", WRITE, None),
        ("GET", r"/volumes", READ, None),
        ("GET", rf"/volumes/{_ID}", READ, None),
        ("POST", r"/volumes/create", WRITE, "volume"),
        ("POST", r"/volumes/prune", ADMIN, None),
        ("DELETE", rf"/volumes/{_ID}", WRITE, None),
        ("GET", r"/swarm", READ, None),
        ("GET", r"/swarm/unlockkey", ADMIN, None),
        ("POST", r"/swarm/(init|join|leave|update|unlock)", ADMIN, None),
        ("GET", r"/(services|tasks|nodes|secrets|configs)", READ, None),
        ("GET", rf"/(services|tasks|secrets|configs)/{_ID}", READ, None),
        ("GET", r"/nodes/[^/]+", READ, None),
        ("GET", rf"/(services|tasks)/{_ID}/logs", LOGS, None),
        ("POST", r"/services/create", WRITE, "service"),
        ("POST", rf"/services/{_ID}/update", WRITE, "service"),
        ("DELETE", rf"/services/{_ID}", WRITE, None),
        ("POST", r"/nodes/[^/]+/update", ADMIN, None),
        ("DELETE", r"/nodes/[^/]+", ADMIN, None),
        ("POST", r"/secrets/create", WRITE, "secret"),
        ("POST", r"/configs/create", WRITE, "config"),
        ("POST", rf"/secrets/{_ID}/update", WRITE, "secret"),
        ("POST", rf"/configs/{_ID}/update", WRITE, "config"),
        ("DELETE", rf"/(secrets|configs)/{_ID}", WRITE, None),
        ("GET POST DELETE", r"/plugins(/.*)?", ADMIN, None),
        ("GET", r"(/v2)?/browse/(ls|get)", ADMIN, None),
        ("POST PUT", r"(/v2)?/browse/put", ADMIN, None),
        ("DELETE", r"(/v2)?/browse/delete", ADMIN, None),
        ("PUT", r"(/v2)?/browse/rename", ADMIN, None),
    ]
]
API_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
PROXY_PREFIX = re.compile(r"^/api/endpoints/[^/]+/docker")


def docker_rule_for(method: str, path: str) -> tuple[str, str | None, str | None]:
    """The action, body kind and named resource of a Docker API call; Forbidden for a call the proxy does not
    know."""
    bare = API_VERSION_PREFIX.sub("", path)
    for methods, pattern, action, body_kind in DOCKER_API_RULES:
        if method in methods and (found := pattern.match(bare)):
            return action, body_kind, found.groupdict().get("id")
    raise Forbidden(f"the Docker API call {method} {bare} is not allowed through this proxy")


# ----------------------------------------------------------------------------------------------------------------
# Body rules: every field of every body a non-administrator may send, allowed, bound to a security setting,
# reserved for administrators, or checked by a function. A field the tables do not know is refused.
# ----------------------------------------------------------------------------------------------------------------


def _is_host_path(source: str) -> bool:
    return source.startswith("/") or source.startswith(".") or source.startswith("~")


def is_unset(value: Any) -> bool:
    """A zero, empty or null value changes nothing: what the Docker CLI and SDK send for every flag not given."""
    return value is None or value is False or value == 0 and not isinstance(value, bool) or value in ("", [], {})


@dataclasses.dataclass
class Reference:
    """A resource a body names (a volume, a network, another container): checked like a direct call on it, then
    named by the id it resolved to."""
    kind: str
    name: str
    use_id: Callable[[str], None]
    create_missing: bool = False  # a named volume that does not exist yet is made now, owned by the caller


class Vetting:
    """What checking one body found: the fields refused, and the resources it names."""

    def __init__(self, settings: dict | None):
        self.settings = settings  # None: the caller is trusted with the host (an environment administrator)
        self.problems: list[str] = []
        self.references: list[Reference] = []

    def require(self, setting: str, what: str) -> None:
        if self.settings is not None and not self.settings[setting]:
            self.problems.append(what)

    def refuse(self, what: str) -> None:
        if self.settings is not None:
            self.problems.append(what)

    def refer(self, kind: str, name: str, use_id: Callable[[str], None], create_missing: bool = False) -> None:
        self.references.append(Reference(kind, name, use_id, create_missing))


class Rule:
    """How one field is checked; `vet` answers the value to forward."""

    def vet(self, value: Any, where: str, vetting: Vetting) -> Any:
        return value


ALLOWED = Rule()


class Setting(Rule):
    """Allowed only when an environment security setting allows it (or the value is unset)."""

    def __init__(self, setting: str, what: str, unset: Callable[[Any], bool] = is_unset):
        self.setting, self.what, self.unset = setting, what, unset

    def vet(self, value, where, vetting):
        if not self.unset(value):
            vetting.require(self.setting, f"{self.what} ({where})")
        return value


class AdminOnly(Rule):
    def __init__(self, unless: Callable[[Any], bool] = is_unset):
        self.unless = unless

    def vet(self, value, where, vetting):
        if not self.unless(value):
            vetting.refuse(f"{where} (reserved for administrators)")
        return value


class Check(Rule):
    """A field whose value decides: `check(value, where, vetting)` answers the value to forward."""

    def __init__(self, check: Callable[[Any, str, Vetting], Any]):
        self.check = check

    def vet(self, value, where, vetting):
        return value if value is None else self.check(value, where, vetting)


class Struct(Rule):
    """A Go struct: keys matched as Go matches them, forwarded under the field's own name."""

    def __init__(self, fields: dict[str, Rule]):
        self.fields = fields
        self.by_fold = {go_fold(name): name for name in fields}

    def vet(self, value, where, vetting):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadRequest(f"{where or 'the body'} must be a JSON object")
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = key if key in self.fields else self.by_fold.get(go_fold(key))
            path = f"{where}.{name or key}" if where else (name or key)
            if name is None:
                vetting.refuse(f"{path} (a field this server does not know)")
                out[key] = item
                continue
            if name in out:
                raise BadRequest(f"the fields of {where or 'the body'} name {name!r} twice",
                                 "keys are matched case-insensitively; send each field once")
            out[name] = self.fields[name].vet(item, path, vetting)
        return out


class ListOf(Rule):
    def __init__(self, item: Rule):
        self.item = item

    def vet(self, value, where, vetting):
        if value is None:
            return None
        if not isinstance(value, list):
            raise BadRequest(f"{where} must be a JSON array")
        return [self.item.vet(item, f"{where}[{index}]", vetting) for index, item in enumerate(value)]


class MapOf(Rule):
    """A map with free keys (network names, for instance) whose values follow one rule."""

    def __init__(self, item: Rule):
        self.item = item

    def vet(self, value, where, vetting):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadRequest(f"{where} must be a JSON object")
        return {key: self.item.vet(item, f"{where}[{key!r}]", vetting) for key, item in value.items()}


BIND = "allowBindMountsForRegularUsers"
PRIVILEGED = "allowPrivilegedModeForRegularUsers"
HOST_NAMESPACE = "allowHostNamespaceForRegularUsers"
DEVICES = "allowDeviceMappingForRegularUsers"
CAPABILITIES = "allowContainerCapabilitiesForRegularUsers"
SYSCTLS = "allowSysctlSettingForRegularUsers"
SYSTEM_NETWORKS = frozenset({"bridge", "host", "none", "ingress", "docker_gwbridge", "default"})


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{where} must be a string")
    return value


def _list_items(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a JSON array")
    return value


def check_binds(value, where, vetting):
    binds = _list_items(value, where)
    for bind in binds:
        source = _text(bind, where).split(":", 1)[0]
        if _is_host_path(source):
            vetting.require(BIND, f"bind mount of host path {source}")
        elif source:
            vetting.refer("volumes", source, lambda _id: None, create_missing=True)
    return binds


def check_mount(value, where, vetting):
    mount = MOUNT.vet(value, where, vetting)
    kind = mount.get("Type")
    if kind == "bind":
        vetting.require(BIND, f"bind mount of host path {mount.get('Source', '')}")
    elif kind == "volume" or kind is None:
        if mount.get("Source"):
            vetting.refer("volumes", _text(mount["Source"], f"{where}.Source"), lambda _id: None,
                          create_missing=True)
    elif kind != "tmpfs":
        vetting.refuse(f"{where}.Type {kind!r} (reserved for administrators)")
    for option, allowed in (("BindOptions", "bind"), ("TmpfsOptions", "tmpfs")):
        if not is_unset(mount.get(option)) and kind != allowed:
            raise BadRequest(f"{where}.{option} goes only with Type {allowed!r}")
    return mount


def check_namespace_mode(key: str, allowed: tuple[str, ...], container_allowed: bool):
    """PidMode, IpcMode, UTSMode...: 'host' is the host's namespace; 'container:x' shares another container's."""
    def check(value, where, vetting):
        mode = _text(value, where)
        if mode == "host":
            vetting.require(HOST_NAMESPACE, f"host namespace ({key}=host)")
        elif container_allowed and mode.startswith("container:"):
            holder = {"mode": mode}
            vetting.refer("containers", mode[len("container:"):],
                          lambda full_id: holder.update(mode=f"container:{full_id}"))
            return _Deferred(holder, "mode")
        elif mode not in allowed:
            vetting.refuse(f"{where} {mode!r} (reserved for administrators)")
        return mode
    return Check(check)


class _Deferred:
    """A value to forward that a reference's resolution may still change (a name becomes a full id)."""

    def __init__(self, holder: dict, key: str):
        self.holder, self.key = holder, key

    @property
    def value(self):
        return self.holder[self.key]


def check_network_mode(value, where, vetting):
    mode = _text(value, where)
    if mode == "host":
        vetting.require(HOST_NAMESPACE, "host namespace (NetworkMode=host)")
        return mode
    if mode.startswith("container:"):
        holder = {"mode": mode}
        vetting.refer("containers", mode[len("container:"):],
                      lambda full_id: holder.update(mode=f"container:{full_id}"))
        return _Deferred(holder, "mode")
    if mode in SYSTEM_NETWORKS or not mode:
        return mode
    holder = {"mode": mode}
    vetting.refer("networks", mode, lambda full_id: holder.update(mode=full_id))
    return _Deferred(holder, "mode")


def check_links(value, where, vetting):
    """Links name other containers (their env shows up in this one): 'name' or 'name:alias'."""
    links = []
    for index, link in enumerate(_list_items(value, where)):
        name, _, alias = _text(link, where).partition(":")
        name = name.lstrip("/")
        holder = {"link": link}
        vetting.refer("containers", name, lambda full_id, holder=holder, name=name, alias=alias:
                      holder.update(link=f"{full_id}:{alias.rsplit('/', 1)[-1] or name}"))
        links.append(_Deferred(holder, "link"))
    return links


def check_volumes_from(value, where, vetting):
    entries = []
    for entry in _list_items(value, where):
        name, _, mode = _text(entry, where).partition(":")
        vetting.require(BIND, "volumes from another container")
        holder = {"entry": entry}
        vetting.refer("containers", name, lambda full_id, holder=holder, mode=mode:
                      holder.update(entry=full_id + (f":{mode}" if mode else "")))
        entries.append(_Deferred(holder, "entry"))
    return entries


def check_security_options(value, where, vetting):
    options = _list_items(value, where)
    for option in options:
        text = _text(option, where)
        if text.replace("=", ":") not in ("no-new-privileges", "no-new-privileges:true"):
            vetting.require(PRIVILEGED, f"security option {text[:60]}")
    return options


def check_one_of(*allowed: str, what: str = "reserved for administrators"):
    def check(value, where, vetting):
        if value not in allowed:
            vetting.refuse(f"{where} {str(value)[:60]!r} ({what})")
        return value
    return Check(check)


def check_endpoints(value, where, vetting):
    """NetworkingConfig.EndpointsConfig: network name -> settings; each network is a reference."""
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    holder: dict[str, Any] = {}
    for network, settings in value.items():
        holder[network] = ENDPOINT_SETTINGS.vet(settings, f"{where}[{network!r}]", vetting)
        if network not in SYSTEM_NETWORKS:
            vetting.refer("networks", network, lambda full_id, network=network:
                          holder.__setitem__(full_id, holder.pop(network)) if full_id != network else None)
    return _Deferred({"endpoints": holder}, "endpoints")


def check_container_key(value, where, vetting):
    holder = {"id": _text(value, where)}
    vetting.refer("containers", value, lambda full_id: holder.update(id=full_id))
    return _Deferred(holder, "id")


def check_named_reference(kind: str):
    def check(value, where, vetting):
        holder = {"id": _text(value, where)}
        if value:
            vetting.refer(kind, value, lambda full_id: holder.update(id=full_id))
        return _Deferred(holder, "id")
    return Check(check)


def settle(value: Any) -> Any:
    """The value to forward, once references are resolved."""
    if isinstance(value, _Deferred):
        return settle(value.value)
    if isinstance(value, dict):
        return {k: settle(v) for k, v in value.items()}
    if isinstance(value, list):
        return [settle(v) for v in value]
    return value


# The engine's own masked and read-only paths (moby's oci/defaults.go), which inspect shows for every container.
ENGINE_MASKED_PATHS = frozenset({"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                                 "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                                 "/sys/firmware"})
ENGINE_READONLY_PATHS = frozenset({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"})


def keeps_paths(defaults: frozenset) -> Callable[[Any], bool]:
    return lambda value: value is None or isinstance(value, list) and defaults <= set(value)


LOCAL_DRIVER = check_one_of("", "local", what="a volume driver plugin is reserved for administrators")
DEVICE = Setting(DEVICES, "device mapping")
HEALTHCHECK = ALLOWED
MOUNT = Struct({
    "Type": ALLOWED, "Source": ALLOWED, "Target": ALLOWED, "ReadOnly": ALLOWED, "Consistency": ALLOWED,
    "BindOptions": Struct({"Propagation": ALLOWED, "NonRecursive": ALLOWED, "CreateMountpoint": ALLOWED,
                           "ReadOnlyNonRecursive": ALLOWED, "ReadOnlyForceRecursive": ALLOWED}),
    "VolumeOptions": Struct({"NoCopy": ALLOWED, "Labels": ALLOWED, "Subpath": ALLOWED,
                             "DriverConfig": Struct({"Name": LOCAL_DRIVER,
                                                     "Options": Setting(BIND, "a volume backed by a host path")})}),
    "TmpfsOptions": Struct({"SizeBytes": ALLOWED, "Mode": ALLOWED, "Options": ALLOWED}),
})
ENDPOINT_SETTINGS = Struct({
    "IPAMConfig": Struct({"IPv4Address": ALLOWED, "IPv6Address": ALLOWED, "LinkLocalIPs": ALLOWED}),
    "Links": Check(check_links), "Aliases": ALLOWED, "MacAddress": ALLOWED, "DriverOpts": AdminOnly(),
    "NetworkID": ALLOWED, "EndpointID": ALLOWED, "Gateway": ALLOWED, "IPAddress": ALLOWED, "IPPrefixLen": ALLOWED,
    "IPv6Gateway": ALLOWED, "GlobalIPv6Address": ALLOWED, "GlobalIPv6PrefixLen": ALLOWED, "DNSNames": ALLOWED,
    "GwPriority": ALLOWED,
})
# container.Resources: what `docker update` changes, and part of HostConfig.
RESOURCES = {
    **{name: ALLOWED for name in (
        "CpuShares", "Memory", "NanoCpus", "BlkioWeight", "CpuPeriod", "CpuQuota", "CpuRealtimePeriod",
        "CpuRealtimeRuntime", "CpusetCpus", "CpusetMems", "KernelMemory", "KernelMemoryTCP", "MemoryReservation",
        "MemorySwap", "MemorySwappiness", "OomKillDisable", "PidsLimit", "Ulimits", "CpuCount", "CpuPercent",
        "IOMaximumIOps", "IOMaximumBandwidth")},
    "CgroupParent": AdminOnly(),
    **{name: DEVICE for name in (
        "BlkioWeightDevice", "BlkioDeviceReadBps", "BlkioDeviceWriteBps", "BlkioDeviceReadIOps",
        "BlkioDeviceWriteIOps", "Devices", "DeviceCgroupRules", "DeviceRequests")},
    "DeviceCgroupPermissions": AdminOnly(),
}
HOST_CONFIG = Struct({
    **RESOURCES,
    "Binds": Check(check_binds), "ContainerIDFile": ALLOWED, "LogConfig": Struct({"Type": ALLOWED, "Config": ALLOWED}),
    "NetworkMode": Check(check_network_mode), "PortBindings": ALLOWED, "RestartPolicy": ALLOWED,
    "AutoRemove": ALLOWED, "VolumeDriver": LOCAL_DRIVER, "VolumesFrom": Check(check_volumes_from),
    "CapAdd": Setting(CAPABILITIES, "added capabilities"), "CapDrop": ALLOWED,
    "Capabilities": Setting(CAPABILITIES, "a capability set"),
    "CgroupnsMode": check_namespace_mode("CgroupnsMode", ("", "private"), False),
    "Dns": ALLOWED, "DnsOptions": ALLOWED, "DnsSearch": ALLOWED, "ExtraHosts": ALLOWED, "GroupAdd": ALLOWED,
    "IpcMode": check_namespace_mode("IpcMode", ("", "private", "shareable", "none"), True),
    "Cgroup": check_namespace_mode("Cgroup", ("",), True),
    "Links": Check(check_links), "OomScoreAdj": ALLOWED,
    "PidMode": check_namespace_mode("PidMode", ("",), True),
    "Privileged": Setting(PRIVILEGED, "privileged mode"), "PublishAllPorts": ALLOWED, "ReadonlyRootfs": ALLOWED,
    "SecurityOpt": Check(check_security_options), "StorageOpt": ALLOWED, "Tmpfs": ALLOWED,
    "UTSMode": check_namespace_mode("UTSMode", ("",), False),
    "UsernsMode": check_namespace_mode("UsernsMode", ("",), False),
    "ShmSize": ALLOWED, "Sysctls": Setting(SYSCTLS, "sysctl settings"),
    "Runtime": check_one_of(None, "", "runc"), "ConsoleSize": ALLOWED,
    "Isolation": check_one_of("", "default"), "Mounts": ListOf(Check(check_mount)),
    # A list replaces the engine's defaults (an empty one unmasks /proc and /sys); one that keeps them is harmless.
    "MaskedPaths": Setting(PRIVILEGED, "unmasked kernel paths", unset=keeps_paths(ENGINE_MASKED_PATHS)),
    "ReadonlyPaths": Setting(PRIVILEGED, "writable kernel paths", unset=keeps_paths(ENGINE_READONLY_PATHS)),
    "Init": ALLOWED, "Annotations": AdminOnly(),
})
CONTAINER_CONFIG = {name: ALLOWED for name in (
    "Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty",
    "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Image", "Volumes", "WorkingDir",
    "Entrypoint", "NetworkDisabled", "MacAddress", "OnBuild", "Labels", "StopSignal", "StopTimeout", "Shell")}
CONTAINER_CREATE = Struct({
    **CONTAINER_CONFIG, "HostConfig": HOST_CONFIG,
    "NetworkingConfig": Struct({"EndpointsConfig": Check(check_endpoints)}),
})
CONTAINER_UPDATE = Struct({**RESOURCES, "RestartPolicy": ALLOWED})
EXEC_CREATE = Struct({
    **{name: ALLOWED for name in ("User", "Tty", "ConsoleSize", "AttachStdin", "AttachStderr", "AttachStdout",
                                  "Detach", "DetachKeys", "Env", "WorkingDir", "Cmd",
                                  "Container")},  # docker-py sends the container again; the engine ignores it
    "Privileged": Setting(PRIVILEGED, "privileged exec"),
})


def check_volume_options(value, where, vetting):
    """The local driver's options mount what `device` names: only a tmpfs is not a host path."""
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    if not (value.get("type") == "tmpfs" and value.get("device", "tmpfs") == "tmpfs"
            and set(value) <= {"type", "device", "o"} and "bind" not in str(value.get("o", ""))):
        if value:
            vetting.require(BIND, "a volume backed by a host path")
    return value


VOLUME_CREATE = Struct({"Name": ALLOWED, "Driver": LOCAL_DRIVER, "DriverOpts": Check(check_volume_options),
                        "Labels": ALLOWED, "ClusterVolumeSpec": AdminOnly()})


def check_network_driver(value, where, vetting):
    if value in ("host", "macvlan", "ipvlan"):
        vetting.require(HOST_NAMESPACE, f"a {value} network")
    elif value not in ("", "bridge", "overlay"):
        vetting.refuse(f"{where} {str(value)[:60]!r} (a network driver plugin is reserved for administrators)")
    return value


def check_network_options(value, where, vetting):
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object")
    harmless = {"com.docker.network.driver.mtu", "com.docker.network.bridge.enable_icc"}
    for key in value:
        if key not in harmless:
            vetting.refuse(f"{where}[{key!r}] (reserved for administrators)")
    return value


NETWORK_CREATE = Struct({
    "Name": ALLOWED, "CheckDuplicate": ALLOWED, "Driver": Check(check_network_driver), "Scope": ALLOWED,
    "EnableIPv6": ALLOWED, "EnableIPv4": ALLOWED, "Internal": ALLOWED, "Attachable": ALLOWED,
    "Ingress": AdminOnly(), "ConfigOnly": ALLOWED,
    "ConfigFrom": Struct({"Network": check_named_reference("networks")}),
    "IPAM": Struct({"Driver": check_one_of(None, "", "default"), "Options": AdminOnly(),
                    "Config": ListOf(Struct({"Subnet": ALLOWED, "IPRange": ALLOWED, "Gateway": ALLOWED,
                                             "AuxiliaryAddresses": ALLOWED}))}),
    "Options": Check(check_network_options), "Labels": ALLOWED,
})
NETWORK_CONNECT = Struct({"Container": Check(check_container_key), "EndpointConfig": ENDPOINT_SETTINGS})
NETWORK_DISCONNECT = Struct({"Container": Check(check_container_key), "Force": ALLOWED})


def file_reference(kind: str):
    id_field, name_field = ("SecretID", "SecretName") if kind == "secrets" else ("ConfigID", "ConfigName")

    def check(value, where, vetting):
        reference = Struct({"File": ALLOWED, "Runtime": ALLOWED, id_field: ALLOWED, name_field: ALLOWED}).vet(
            value, where, vetting)
        name = reference.get(id_field) or reference.get(name_field)
        if name:
            holder = {"reference": reference}
            vetting.refer(kind, _text(name, where), lambda full_id: holder.update(
                reference={**reference, id_field: full_id}))
            return _Deferred(holder, "reference")
        return reference
    return Check(check)


def check_service_network(value, where, vetting):
    attachment = Struct({"Target": ALLOWED, "Aliases": ALLOWED, "DriverOpts": AdminOnly()}).vet(
        value, where, vetting)
    target = attachment.get("Target")
    if target == "host":
        vetting.require(HOST_NAMESPACE, "host namespace (host network)")
    elif target and target not in SYSTEM_NETWORKS:
        holder = {"attachment": attachment}
        vetting.refer("networks", _text(target, where), lambda full_id: holder.update(
            attachment={**attachment, "Target": full_id}))
        return _Deferred(holder, "attachment")
    return attachment


CONTAINER_SPEC = Struct({
    **{name: ALLOWED for name in (
        "Image", "Labels", "Command", "Args", "Hostname", "Env", "Dir", "User", "Groups", "Init", "StopSignal",
        "TTY", "OpenStdin", "ReadOnly", "StopGracePeriod", "Healthcheck", "Hosts", "DNSConfig", "CapabilityDrop",
        "Ulimits", "OomScoreAdj")},
    "Privileges": AdminOnly(), "Mounts": ListOf(Check(check_mount)),
    "Secrets": ListOf(file_reference("secrets")), "Configs": ListOf(file_reference("configs")),
    "Isolation": check_one_of(None, "", "default"), "Sysctls": Setting(SYSCTLS, "sysctl settings"),
    "CapabilityAdd": Setting(CAPABILITIES, "added capabilities"),
})
SERVICE_NETWORKS = ListOf(Check(check_service_network))
SERVICE_SPEC = Struct({
    "Name": ALLOWED, "Labels": ALLOWED, "Mode": ALLOWED, "UpdateConfig": ALLOWED, "RollbackConfig": ALLOWED,
    "EndpointSpec": ALLOWED, "Networks": SERVICE_NETWORKS,
    "TaskTemplate": Struct({
        "ContainerSpec": CONTAINER_SPEC, "PluginSpec": AdminOnly(), "NetworkAttachmentSpec": AdminOnly(),
        "Resources": ALLOWED, "RestartPolicy": ALLOWED, "Placement": ALLOWED, "Networks": SERVICE_NETWORKS,
        "LogDriver": ALLOWED, "ForceUpdate": ALLOWED, "Runtime": check_one_of(None, "", "container"),
    }),
})
SECRET_CREATE = Struct({"Name": ALLOWED, "Labels": ALLOWED, "Data": ALLOWED, "Driver": AdminOnly(),
                        "Templating": AdminOnly()})
CONFIG_CREATE = Struct({"Name": ALLOWED, "Labels": ALLOWED, "Data": ALLOWED, "Templating": AdminOnly()})
BODY_RULES: dict[str, Struct] = {
    "container": CONTAINER_CREATE, "container_update": CONTAINER_UPDATE, "exec": EXEC_CREATE,
    "volume": VOLUME_CREATE, "network": NETWORK_CREATE, "network_connect": NETWORK_CONNECT,
    "network_disconnect": NETWORK_DISCONNECT, "service": SERVICE_SPEC, "secret": SECRET_CREATE,
    "config": CONFIG_CREATE,
}


def vet_body(body_kind: str, body: Any, settings: dict | None) -> tuple[dict, Vetting]:
    """A body read as the engine reads it, checked field by field: the canonical body to forward (references still
    to resolve) and what was found. `settings` None: the caller is trusted with the host."""
    vetting = Vetting(settings)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return BODY_RULES[body_kind].vet(body, "", vetting), vetting


def refusal(problems: list[str]) -> Forbidden:
    return Forbidden("not allowed for non-administrators on this environment: " + ", ".join(dict.fromkeys(problems)),
                     "an administrator can allow it in the environment's security settings")


# Query parameters the engine reads as references or host settings; every other one is harmless.
def vet_query(bare: str, query: list[tuple[str, str]], vetting: Vetting) -> list[list[str]]:
    """The query of a call, checked; answers [key, value] pairs whose values a reference may still change."""
    pairs = [[key, value] for key, value in query]
    if bare == "/commit":
        for pair in pairs:
            if pair[0] == "container":
                vetting.refer("containers", pair[1], lambda full_id, pair=pair: pair.__setitem__(1, full_id))
    elif bare == "/build":
        for pair in pairs:
            if pair[0] == "cgroupparent" and pair[1]:
                vetting.refuse("cgroupparent (reserved for administrators)")
            elif pair[0] == "networkmode":
                mode = pair[1]
                if mode == "host":
                    vetting.require(HOST_NAMESPACE, "host namespace (build with the host network)")
                elif mode.startswith("container:"):
                    vetting.refer("containers", mode[len("container:"):],
                                  lambda full_id, pair=pair: pair.__setitem__(1, f"container:{full_id}"))
                elif mode and mode not in SYSTEM_NETWORKS:
                    vetting.refer("networks", mode, lambda full_id, pair=pair: pair.__setitem__(1, full_id))
    return pairs


# Resource ownership, as Portainer's resource controls: what a non-administrator creates carries these labels,
# and users bound by ownership see and touch only resources labelled with their id or one of their teams.
OWNER_USERS_LABEL = "io.portainer.accesscontrol.users"
OWNER_TEAMS_LABEL = "io.portainer.accesscontrol.teams"
OWNED_KINDS = ("containers", "volumes", "networks", "services", "secrets", "configs")
LABELLED_CREATES = {"container": "Labels", "volume": "Labels", "network": "Labels", "service": "Labels",
                    "secret": "Labels", "config": "Labels"}


def ownership_labels(store: Store, caller: Caller) -> dict[str, str]:
    """The labels that make a resource the caller's and their teams' (stacks use them for their services)."""
    teams = ",".join(str(t) for t in sorted(user_team_ids(store, caller.id)))
    labels = {OWNER_USERS_LABEL: str(caller.id)}
    if teams:
        labels[OWNER_TEAMS_LABEL] = teams
    return labels


def owns(store: Store, caller: Caller, labels: dict | None) -> bool:
    labels = as_labels(labels)
    users = {u.strip() for u in str(labels.get(OWNER_USERS_LABEL, "")).split(",")}
    teams = {t.strip() for t in str(labels.get(OWNER_TEAMS_LABEL, "")).split(",")}
    return str(caller.id) in users or bool(teams & {str(t) for t in user_team_ids(store, caller.id)})


def resource_labels(kind: str, item: dict) -> dict:
    if kind == "containers":
        return as_labels(item.get("Labels") if "Labels" in item else field_at(item, "Config", "Labels"))
    if kind in ("services", "secrets", "configs"):
        return as_labels(field_at(item, "Spec", "Labels"))
    return as_labels(item.get("Labels"))


# Portainer's resource control types for the kinds the proxy guards.
RESOURCE_CONTROL_TYPES = {"containers": 1, "services": 2, "volumes": 3, "networks": 4, "secrets": 5, "configs": 7}


def resource_key(kind: str, item: dict) -> str:
    return as_text(item.get("Name") if kind == "volumes" else item.get("Id") or item.get("ID"))


def resource_control_for(store: Store, kind: str, item: dict) -> dict | None:
    """An administrator's resource control for this resource, which then decides instead of its labels."""
    controls = store.resource_controls
    if not len(controls):
        return None
    wanted_type, key = RESOURCE_CONTROL_TYPES.get(kind), resource_key(kind, item)
    return next((rc for rc in controls if rc["Type"] == wanted_type and rc["ResourceId"] == key), None)


def visible_resource(store: Store, caller: Caller, kind: str, item: dict) -> bool:
    if kind == "networks" and as_text(item.get("Name")) in SYSTEM_NETWORKS:
        return True
    control = resource_control_for(store, kind, item)
    if control is not None:
        if control["Public"]:
            return True
        if control["AdministratorsOnly"]:
            return False
        teams = user_team_ids(store, caller.id)
        return any(a["UserId"] == caller.id for a in control["UserAccesses"]) or \
            any(a["TeamId"] in teams for a in control["TeamAccesses"])
    return owns(store, caller, resource_labels(kind, item))


def filter_owned_list(store: Store, caller: Caller, kind: str) -> Callable[[bytes], bytes]:
    """A rewrite for a list answer that keeps only the caller's resources."""
    def rewrite(raw: bytes) -> bytes:
        try:
            data = json.loads(raw)
        except ValueError:
            return raw
        if kind == "system" and isinstance(data, dict):
            for key, owned_kind in (("Containers", "containers"), ("Volumes", "volumes")):
                data[key] = [item for item in data.get(key) or [] if isinstance(item, dict)
                             and visible_resource(store, caller, owned_kind, item)]
        elif kind == "volumes" and isinstance(data, dict):
            data["Volumes"] = [v for v in dicts_in(data.get("Volumes")) if visible_resource(store, caller, kind, v)]
        else:
            data = [item for item in dicts_in(data) if visible_resource(store, caller, kind, item)]
        return json.dumps(data).encode()
    return rewrite


async def filter_owned_tasks(connector: DockerConnector, store: Store, caller: Caller) -> Callable[[bytes], bytes]:
    """A rewrite for the task list that keeps the tasks of the caller's services."""
    services = await connector.request_json("GET", "/services")
    owned = {as_text(s.get("ID")) for s in dicts_in(services) if visible_resource(store, caller, "services", s)}
    owned.discard("")

    def rewrite(raw: bytes) -> bytes:
        try:
            tasks = json.loads(raw)
        except ValueError:
            return raw
        return json.dumps([t for t in dicts_in(tasks) if as_text(t.get("ServiceID")) in owned]).encode()
    return rewrite


async def require_owned(connector: DockerConnector, store: Store, caller: Caller, kind: str, resource_id: str,
                        missing_ok: bool = False, headers=()) -> dict | None:
    """The resource, when the caller may use it; Forbidden when it belongs to another user or team (or to
    nobody, like everything made outside portainer.py), NotFound when it does not exist. `headers` name the agent
    node the call is for, so the check sees what the call will reach."""
    if not resource_id:
        raise BadRequest(f"an empty {kind[:-1]} name")
    inspect_path = f"/{kind}/{urllib.parse.quote(resource_id, safe='')}" + ("/json" if kind == "containers" else "")
    try:
        item = await connector.request_json("GET", inspect_path, headers=headers)
    except ApiError as exc:
        if exc.status == 404:
            if missing_ok:
                return None
            raise NotFound(f"no such {kind[:-1]}: {resource_id}") from None
        raise
    if not isinstance(item, dict) or not visible_resource(store, caller, kind, item):
        raise Forbidden(f"access denied to {kind[:-1]} {resource_id}",
                        "it belongs to another user or team; an administrator can share it")
    return item


# ================================================================================================================
# Registries: sealed credentials, per-environment access, and the registry HTTP API v2 (catalog, tags, digests)
# ================================================================================================================

REGISTRY_TYPES = {1: "Quay.io", 2: "Azure", 3: "Custom", 4: "GitLab", 5: "ProGet", 6: "DockerHub", 7: "ECR",
                  8: "GitHub"}
REGISTRY_CUSTOM = 3
DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
# What a HEAD of a manifest accepts, so the digest is the one `docker pull` records (list first, then single).
MANIFEST_MEDIA_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
))
REGISTRY_TIMEOUT = 5.0
# A repository path as the distribution spec defines it: lowercase components joined by '/'.
REPOSITORY_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
# Docker API calls that carry registry credentials in X-Registry-Auth (X-Registry-Config for builds).
REGISTRY_AUTH_PATHS = re.compile(r"^/(images/create|images/.+/push|build|services/create|services/[^/]+/update|"
                                 r"distribution/.+/json)$")


class RegistryProblem(BadGateway):
    """A registry could not be reached or refused us; the message says which and what to do."""


class RegistryPasswords:
    """Registry passwords sealed with AES-GCM under a key kept in the data directory (0600)."""

    AAD = b"portainer.py registry password"

    def __init__(self, key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self._cipher = AESGCM(key[:32])

    def seal(self, password: str) -> str:
        nonce = secrets.token_bytes(12)
        return "v1:" + base64.b64encode(nonce + self._cipher.encrypt(nonce, password.encode(), self.AAD)).decode()

    def open(self, sealed: str) -> str:
        if not sealed:
            return ""
        raw = base64.b64decode(sealed.split(":", 1)[1])
        return self._cipher.decrypt(raw[:12], raw[12:], self.AAD).decode()


@dataclasses.dataclass(frozen=True)
class ImageReference:
    """An image name as the engine normalises it: registry domain, repository path, tag or digest."""

    domain: str
    repository: str
    tag: str
    digest: str = ""

    @classmethod
    def parse(cls, text: str) -> "ImageReference":
        name, _, digest = text.partition("@")
        tag = ""
        head, slash, last = name.rpartition("/")
        if ":" in last:
            last, tag = last.split(":", 1)
        name = head + slash + last
        first, _, rest = name.partition("/")
        # Docker's rule; newer engines also read a first component with capitals as a registry host.
        if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
            domain, path = first, rest
        else:
            domain, path = DOCKER_HUB_DOMAIN, name
        if domain in DOCKER_HUB_ALIASES:
            domain = DOCKER_HUB_DOMAIN
            if "/" not in path:
                path = "library/" + path
        return cls(domain, path, tag or ("" if digest else "latest"), digest)

    @property
    def name(self) -> str:
        """The name without tag or digest, as `fromImage` wants it."""
        return f"{self.domain}/{self.repository}"


def registry_host(url: str) -> str:
    """The host[:port] part of a registry URL ('https://reg.example.com/org' -> 'reg.example.com')."""
    bare = url.split("://", 1)[-1]
    host = bare.split("/", 1)[0].lower()
    return DOCKER_HUB_DOMAIN if host in DOCKER_HUB_ALIASES else host


def is_loopback_host(host: str) -> bool:
    if host.startswith("["):
        hostname = host[1:host.find("]")]
    else:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return hostname == "localhost" or hostname.startswith("127.") or hostname == "::1"


def registry_json(body: bytes, label: str) -> dict:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise RegistryProblem(f"registry {label} answered with something that is not a registry API answer",
                              body[:200].decode(errors="replace"))
    return data


def registry_api_base(url: str) -> str:
    """Where a registry's HTTP API v2 lives: HTTP for loopback test registries (as the engine allows), else HTTPS."""
    if "://" in url:
        parsed = urllib.parse.urlsplit(url)
        return f"{parsed.scheme}://{parsed.netloc}"
    host = registry_host(url)
    if host == DOCKER_HUB_DOMAIN:
        return DOCKER_HUB_API
    return ("http://" if is_loopback_host(host) else "https://") + host


def decode_registry_header(value: str) -> Any:
    """X-Registry-Auth is base64 JSON, URL-safe in Docker clients and standard in browsers: accept both."""
    try:
        text = value.strip().replace("+", "-").replace("/", "_")
        return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None


def encode_registry_header(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
SERVICE_SPEC_CALL = re.compile(r"^/services/(create|[^/]+/update)$")
NAMED_IMAGE_CALL = re.compile(r"^/(?:images/(?P<pushed>.+)/push|distribution/(?P<inspected>.+)/json)$")


def image_named_by_call(path: str, query: str, headers: list[tuple[str, str]], body: bytes | None) -> str | None:
    """The image a pull, push, distribution or service call makes the engine fetch, read as the engine reads
    it (query and path decoded, a service's TaskTemplate.ContainerSpec.Image); None when the call names none."""
    if path == "/images/create":
        # Go's ParseForm reads a form-encoded body before the query, and refuses a query with ';'.
        if any(n.lower() == "content-type" and v.split(";")[0].strip().lower() == FORM_CONTENT_TYPE
               for n, v in headers):
            raise BadRequest("a pull with registry credentials takes its parameters in the query, not a form body")
        if ";" in query:
            raise BadRequest("the query of a pull must not contain ';'")
        named = [v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True) if k == "fromImage"]
        return named[0] if named and named[0] else None
    match = NAMED_IMAGE_CALL.match(path)
    if match:
        return match.group("pushed") or match.group("inspected")
    if SERVICE_SPEC_CALL.match(path):
        try:
            image = decode_json(body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise BadRequest("invalid JSON in request body", str(exc)) from None
        for name in ("TaskTemplate", "ContainerSpec", "Image"):
            key = folded_key(image, name)
            image = image[key] if key is not None else None
        return image if isinstance(image, str) and image else None
    return None


def registry_id_in(data: Any) -> int | None:
    """The registry a Portainer client names with {"registryId": N}; None for real credentials or nothing."""
    if not isinstance(data, dict) or "registryId" not in data:
        return None
    value = data["registryId"]
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise BadRequest("registryId in X-Registry-Auth must be a registry id")
    return int(value)


class Registries:
    """The registries in the store, who may use them where, their credentials, and calls to their API v2."""

    def __init__(self, store: Store, key: bytes):
        self.store = store
        self.passwords = RegistryPasswords(key)
        self._session = None

    def reload(self) -> None:
        """After a restore: the restored data directory's key and registries."""
        self.passwords = RegistryPasswords(load_or_create_secret(self.store.directory, "registry.key"))

    def password(self, registry: dict) -> str:
        from cryptography.exceptions import InvalidTag
        try:
            return self.passwords.open(registry.get("_SealedPassword", ""))
        except (InvalidTag, ValueError, IndexError):
            raise Conflict(f"the password of registry {registry['Name']} cannot be unsealed",
                           "registry.key in the data directory changed; enter the registry's password again") from None

    def may_use(self, caller: Caller | None, registry: dict, endpoint_id: int | None = None) -> bool:
        """Administrators and the server itself use every registry; others where the registry's access lists them
        for that environment (for any environment when endpoint_id is None)."""
        if caller is None or caller.is_admin:
            return True
        teams = {str(t) for t in user_team_ids(self.store, caller.id)}
        for key, access in (registry.get("RegistryAccesses") or {}).items():
            if endpoint_id is not None and key != str(endpoint_id):
                continue
            endpoint = self.store.endpoints.find(key)
            if endpoint is None or not can_access_endpoint(self.store, caller, endpoint):
                continue
            if str(caller.id) in (access.get("UserAccessPolicies") or {}):
                return True
            if teams & set(access.get("TeamAccessPolicies") or {}):
                return True
        return False

    def usable(self, caller: Caller | None, registry_id: int, endpoint_id: int | None) -> dict:
        registry = self.store.registries.get(registry_id)
        if not self.may_use(caller, registry, endpoint_id):
            where = f" on environment {endpoint_id}" if endpoint_id is not None else ""
            raise Forbidden(f"you have no access to registry {registry_id}{where}")
        return registry

    def for_domain(self, domain: str, caller: Caller | None, endpoint_id: int | None) -> dict | None:
        """The registry holding credentials for images from `domain`, if the caller may use one."""
        for registry in self.store.registries.in_id_order():
            if registry_host(registry["URL"]) == domain and self.may_use(caller, registry, endpoint_id):
                return registry
        return None

    def auth_config(self, registry: dict) -> dict:
        """The engine's auth JSON for this registry (what `docker login` would send)."""
        config = {"serveraddress": registry_host(registry["URL"])}
        if registry.get("Authentication"):
            config.update(username=registry.get("Username", ""), password=self.password(registry))
        return config

    def proxy_headers(self, caller: Caller, endpoint_id: int, path: str, query: str,
                      headers: list[tuple[str, str]], body: bytes | None) -> list[tuple[str, str]]:
        """Replace {"registryId": N} in X-Registry-Auth (pull, push, services) or X-Registry-Config (build) with
        the registry's real credentials, once the caller's access to it on this environment is checked and the
        image the call names is on that registry's host (credentials never go to another address)."""
        if not REGISTRY_AUTH_PATHS.match(path):
            return headers
        result = []
        for name, value in headers:
            header = name.lower()
            if header in ("x-registry-auth", "x-registry-config"):
                registry_id = registry_id_in(decode_registry_header(value))
                if registry_id == 0 or (registry_id is not None and path == "/build" and header == "x-registry-auth"):
                    value = encode_registry_header({})  # "no registry"; a build reads X-Registry-Config only
                elif registry_id is not None:
                    registry = self.usable(caller, registry_id, endpoint_id)
                    if header == "x-registry-config":
                        # A build picks credentials by each base image's registry host: key them by this host.
                        config = self.auth_config(registry)
                        value = encode_registry_header({config["serveraddress"]: config})
                    else:
                        self.require_image_host(registry, image_named_by_call(path, query, headers, body))
                        value = encode_registry_header(self.auth_config(registry))
            result.append((name, value))
        return result

    @staticmethod
    def require_image_host(registry: dict, image: str | None) -> None:
        """Refuse to hand a registry's credentials to a call whose image lives on another registry host."""
        if image is None:
            raise BadRequest(f"registry {registry['Id']} was named in X-Registry-Auth, but the call names no image")
        domain = ImageReference.parse(image).domain.lower()
        host = registry_host(registry["URL"])
        if domain != host:
            raise BadRequest(f"the image's registry is not registry {registry['Id']}: image {image} is on "
                             f"{domain}, registry {registry['Id']} ({registry['Name']}) is {host}",
                             "name the registry that holds the image, or the image with that registry's host")

    # -- the registry's HTTP API v2 -----------------------------------------------------------------------------
    def session(self):
        import aiohttp
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REGISTRY_TIMEOUT, connect=3))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, registry: dict | None, base: str, method: str, path: str, accept: str = "application/json",
                   scope: str = "") -> tuple[int, Any, bytes]:
        """One API v2 request, answering basic or bearer-token challenges with the registry's credentials."""
        import aiohttp
        label = registry["Name"] if registry else base.split("://", 1)[-1]
        credentials = None
        if registry and registry.get("Authentication"):
            pair = f"{registry.get('Username', '')}:{self.password(registry)}".encode()
            credentials = "Basic " + base64.b64encode(pair).decode()
        tls = not (registry and registry.get("TLSSkipVerify"))
        headers = {"Accept": accept}
        try:
            for attempt in range(2):
                # No redirects: credentials go to the registry's own address only.
                async with self.session().request(method, base + path, headers=headers, ssl=tls,
                                                  allow_redirects=False) as response:
                    body = await response.read() if method != "HEAD" else b""
                    if response.status != 401 or attempt == 1:
                        break
                    challenge = response.headers.get("WWW-Authenticate", "")
                if challenge.lower().startswith("basic") and credentials is not None:
                    headers["Authorization"] = credentials
                elif challenge.lower().startswith("bearer"):
                    token = await self.bearer_token(challenge, credentials, scope, tls)
                    headers["Authorization"] = f"Bearer {token}"
                else:
                    break
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise RegistryProblem(f"registry {label} is unreachable",
                                  f"{method} {base}{path.split('?')[0]}: {exc or type(exc).__name__}") from None
        if response.status == 401:
            if credentials is None:
                raise RegistryProblem(f"registry {label} requires credentials",
                                      "add it under Registries with authentication, a username and a password")
            raise RegistryProblem(f"registry {label} refused the credentials of user "
                                  f"{registry.get('Username', '')!r}",
                                  "check the registry's username and password under Registries")
        if response.status == 403:
            raise RegistryProblem(f"registry {label} denied access to {path.split('?')[0]}")
        return response.status, response.headers, body

    async def bearer_token(self, challenge: str, credentials: str | None, scope: str, tls: bool) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise ValueError(f"unusable token realm {realm!r}")
        if scope and "scope" not in params:
            params["scope"] = scope
        headers = {"Authorization": credentials} if credentials else {}
        async with self.session().get(realm, params=params, headers=headers, ssl=tls) as response:
            if response.status == 401:
                return ""
            data = await response.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError("the token service answered with something that is not a token")
        return data.get("token") or data.get("access_token") or ""

    async def catalog(self, registry: dict) -> list[str]:
        status, _, body = await self.call(registry, registry_api_base(registry["URL"]), "GET",
                                          "/v2/_catalog?n=1000", scope="registry:catalog:*")
        if status != 200:
            raise RegistryProblem(f"registry {registry['Name']} answered {status} to the catalog request",
                                  body.decode(errors="replace")[:300])
        return registry_json(body, registry["Name"]).get("repositories") or []

    async def tags(self, registry: dict, repository: str) -> list[str]:
        status, _, body = await self.call(registry, registry_api_base(registry["URL"]), "GET",
                                          f"/v2/{repository}/tags/list", scope=f"repository:{repository}:pull")
        if status == 404:
            raise NotFound(f"repository {repository} not found in registry {registry['Name']}")
        if status != 200:
            raise RegistryProblem(f"registry {registry['Name']} answered {status} listing tags of {repository}")
        return registry_json(body, registry["Name"]).get("tags") or []

    async def manifest_digest(self, registry: dict | None, reference: ImageReference) -> str:
        """The digest the registry holds now for the reference's tag (HEAD of the manifest)."""
        base = registry_api_base(registry["URL"]) if registry else registry_api_base(reference.domain)
        path = f"/v2/{reference.repository}/manifests/{reference.tag}"
        scope = f"repository:{reference.repository}:pull"
        status, headers, _ = await self.call(registry, base, "HEAD", path, MANIFEST_MEDIA_TYPES, scope)
        if status == 404:
            raise RegistryProblem(f"{reference.repository}:{reference.tag} is no longer in its registry")
        if status != 200:
            raise RegistryProblem(f"registry answered {status} for {reference.repository}:{reference.tag}")
        digest = headers.get("Docker-Content-Digest", "")
        if not digest:
            _, _, body = await self.call(registry, base, "GET", path, MANIFEST_MEDIA_TYPES, scope)
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        return digest


# ================================================================================================================
# Image updates: is a newer image behind a running container's tag, and recreating the container with it
# ================================================================================================================

UPDATE_OUTDATED = "outdated"
UPDATE_CURRENT = "updated"
UPDATE_SKIPPED = "skipped"
UPDATE_UNKNOWN = "unknown"
AUTO_UPDATE_LABEL = "io.portainer.py.auto-update"
REMOTE_DIGEST_TTL = 60.0
UNREACHABLE_TTL = 60.0
MAX_CACHED_RESULTS = 20000
IMAGE_ID = re.compile(r"(sha256:)?[0-9a-f]{12,64}")
# The environment's opt-in (Portainer BE's name): off, nothing is asked of any registry for its containers.
IMAGE_CHECK_SETTING = "EnableImageNotification"
IMAGE_CHECK_OFF = (f"image update checks are off for this environment: no registry is asked; an administrator "
                   f"can turn them on ({IMAGE_CHECK_SETTING}) in the environment's settings")


def image_status(status: str, message: str = "", **extra) -> dict:
    return {"Status": status, "Message": message, "CheckedAt": now(), **extra}


def creation_body(container: dict, image: dict, engine_info: dict) -> dict:
    """A /containers/create body that rebuilds `container` from its image reference: its own settings kept,
    the old image's and the engine's defaults left out so that the new image's (and the engine's) apply."""
    config = copy.deepcopy(as_dict(container.get("Config")))
    defaults = as_dict(as_dict(image).get("Config"))
    config["Image"] = as_text(config.get("Image"))
    if config.get("Hostname") == as_text(container.get("Id"))[:12]:
        config.pop("Hostname")
    for key in ("Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal", "Healthcheck"):
        if key in config and config[key] == defaults.get(key):
            config.pop(key)
    image_env = set(texts_in(defaults.get("Env")))
    config["Env"] = [e for e in texts_in(config.get("Env")) if e not in image_env]
    image_labels = as_labels(defaults.get("Labels"))
    config["Labels"] = {k: v for k, v in as_labels(config.get("Labels")).items() if image_labels.get(k) != v}
    for key in ("ExposedPorts", "Volumes"):
        kept = {k: v for k, v in as_dict(config.get(key)).items() if k not in as_dict(defaults.get(key))}
        config[key] = kept or None
    host = copy.deepcopy(as_dict(container.get("HostConfig")))
    # Inspect shows the engine's default cgroup namespace mode as if it had been asked for.
    if host.get("CgroupnsMode") == ("private" if str(as_dict(engine_info).get("CgroupVersion")) == "2" else "host"):
        host.pop("CgroupnsMode")
    host["Links"] = [f"{link.split(':')[0].lstrip('/')}:{link.split(':')[1].rsplit('/', 1)[-1]}"
                     for link in texts_in(host.get("Links")) if ":" in link] or None
    # Anonymous volumes (image VOLUME, `-v /data`) are named by the engine; mount them by name so data stays.
    covered = {bind.split(":")[1] for bind in texts_in(host.get("Binds")) if bind.count(":") >= 1}
    covered |= {as_text(m.get("Target")) for m in dicts_in(host.get("Mounts"))}
    for mount in dicts_in(container.get("Mounts")):
        name, destination = as_text(mount.get("Name")), as_text(mount.get("Destination"))
        if mount.get("Type") == "volume" and name and destination and destination not in covered:
            suffix = "" if mount.get("RW", True) else ":ro"
            host["Binds"] = texts_in(host.get("Binds")) + [f"{name}:{destination}{suffix}"]
    networks = as_dict(field_at(container, "NetworkSettings", "Networks"))
    mode = as_text(host.get("NetworkMode")) or "default"
    body = {**config, "HostConfig": host}
    if mode in networks and mode not in ("default", "bridge", "host", "none"):
        body["NetworkingConfig"] = {"EndpointsConfig": {mode: network_endpoint_config(networks[mode], container)}}
    return body


def network_endpoint_config(network: Any, container: dict) -> dict:
    network = as_dict(network)
    aliases = [a for a in texts_in(network.get("Aliases")) if a != as_text(container.get("Id"))[:12]]
    return {"IPAMConfig": network.get("IPAMConfig"), "Links": network.get("Links"), "Aliases": aliases or None,
            "DriverOpts": network.get("DriverOpts")}


def pull_failure(reference: str, message: str) -> ApiError:
    if "unauthorized" in message or "no basic auth credentials" in message or "denied" in message:
        return RegistryProblem(f"the registry refused to serve {reference}: {message}",
                               "check the registry's username and password under Registries, and your access "
                               "to that registry on this environment")
    return RegistryProblem(f"pulling {reference} failed: {message}")


class ImageUpdates:
    """Update status of running containers, kept in memory only; checks on demand and on a schedule."""

    def __init__(self, environments: Environments, registries: Registries):
        self.environments = environments
        self.registries = registries
        self.results: dict[tuple[int, str], dict] = {}
        self._digests: dict[tuple[str, str, str], tuple[float, str]] = {}
        self._unreachable: dict[str, tuple[float, str]] = {}
        self._pending: dict[tuple[str, str, str], tuple[float, asyncio.Future]] = {}
        self._recreating: set[tuple[int, str]] = set()
        self._registry_calls = asyncio.Semaphore(4)
        self._engine_calls = asyncio.Semaphore(8)

    def forget(self) -> None:
        self.results.clear()
        self._digests.clear()
        self._unreachable.clear()

    def enabled(self, endpoint_id: int) -> bool:
        """Whether an administrator turned image update checks on for this environment (off by default)."""
        return self.environments.store.endpoints.get(endpoint_id).get(IMAGE_CHECK_SETTING) is True

    def forget_environment(self, endpoint_id: int) -> None:
        for key in [k for k in self.results if k[0] == endpoint_id]:
            del self.results[key]

    def cached(self, endpoint_id: int, container_id: str) -> dict | None:
        return self.results.get((endpoint_id, container_id)) if self.enabled(endpoint_id) else None

    async def check(self, endpoint_id: int, container_id: str, fresh_since: float | None = None) -> dict:
        """Compare the digest the container's image was pulled with to the one its tag has now; the registry is
        asked again unless it answered since `fresh_since` (within a minute when None). Skipped, asking
        nothing, where the environment's checks are off."""
        if not self.enabled(endpoint_id):
            return image_status(UPDATE_SKIPPED, IMAGE_CHECK_OFF, ContainerId=container_id)
        connector = self.environments.connector(endpoint_id)
        async with self._engine_calls:
            container = as_dict(await connector.request_json(
                "GET", f"/containers/{urllib.parse.quote(container_id, safe='')}/json"))
            image = await self.image_of(connector, container)
        image_name = as_text(field_at(container, "Config", "Image"))
        if image is None:
            result = image_status(UPDATE_SKIPPED, "the container's image is no longer on the engine")
        elif not image_name:
            result = image_status(UPDATE_SKIPPED, "the container was made without an image name")
        else:
            result = await self.compare(image_name, texts_in(image.get("RepoDigests")), fresh_since)
        inspected_id = engine_id(container.get("Id")) or container_id
        result.update(ContainerId=inspected_id, Image=image_name)
        if len(self.results) >= MAX_CACHED_RESULTS:
            self.results.pop(next(iter(self.results)))
        self.results[(endpoint_id, inspected_id)] = result
        if inspected_id != container_id:
            self.results[(endpoint_id, container_id)] = result
        return result

    @staticmethod
    async def image_of(connector: DockerConnector, container: dict) -> dict | None:
        """The inspect of the image a container runs; None when that image was removed (or never named)."""
        image_id = engine_id(container.get("Image"))
        if not image_id:
            return None
        try:
            return as_dict(await connector.request_json("GET", f"/images/{image_id}/json"))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    @staticmethod
    def checkable(image_name: str, repo_digests: list[str]) -> tuple[ImageReference | None, set[str], str]:
        """The reference a check asks its registry about and the digests it was pulled with, or None and why
        no registry is asked for it."""
        if not isinstance(image_name, str) or IMAGE_ID.fullmatch(image_name):
            return None, set(), "the container was made from an image id, not a name"
        reference = ImageReference.parse(image_name)
        if reference.digest:
            return None, set(), "the image is pinned by digest"
        local = {d.split("@", 1)[1] for d in repo_digests if isinstance(d, str) and "@" in d
                 and ImageReference.parse(d).name == reference.name}
        if not local:
            return None, set(), "the image was built or loaded here, not pulled from a registry"
        return reference, local, ""

    async def registries_to_contact(self, endpoint_id: int) -> list[str]:
        """The registry hosts a check of this environment's running containers asks (whether checks are on)."""
        connector = self.environments.connector(endpoint_id)
        running = await connector.request_json("GET", "/containers/json")
        images = await connector.request_json("GET", "/images/json")
        digests = {i.get("Id"): i.get("RepoDigests") or [] for i in images if isinstance(i, dict)}
        hosts = set()
        for container in running if isinstance(running, list) else []:
            if not isinstance(container, dict):
                continue
            reference, _, _ = self.checkable(container.get("Image"), digests.get(container.get("ImageID"), []))
            if reference is not None:
                hosts.add(reference.domain)
        return sorted(hosts)

    async def compare(self, image_name: str, repo_digests: list[str], fresh_since: float | None) -> dict:
        reference, local, why_not = self.checkable(image_name, repo_digests)
        if reference is None:
            return image_status(UPDATE_SKIPPED, why_not)
        try:
            remote = await self.remote_digest(reference, fresh_since)
        except RegistryProblem as exc:
            return image_status(UPDATE_UNKNOWN, exc.message)
        if remote in local:
            return image_status(UPDATE_CURRENT, "", RemoteDigest=remote)
        return image_status(UPDATE_OUTDATED, f"{reference.domain}/{reference.repository}:{reference.tag} "
                                             f"has a newer image", RemoteDigest=remote)

    async def remote_digest(self, reference: ImageReference, fresh_since: float | None) -> str:
        """The tag's digest in its registry; one request serves every container of a check that runs the tag."""
        key = (reference.domain, reference.repository, reference.tag)
        clock = time.monotonic()
        cached = self._digests.get(key)
        if cached and cached[0] >= (clock - REMOTE_DIGEST_TTL if fresh_since is None else fresh_since):
            return cached[1]
        down = self._unreachable.get(reference.domain)
        if down and down[0] >= (clock - UNREACHABLE_TTL if fresh_since is None else fresh_since):
            raise RegistryProblem(down[1])
        started, pending = self._pending.get(key, (0.0, None))
        if pending is None or (fresh_since is not None and started < fresh_since):
            pending = asyncio.ensure_future(self.fetch_digest(reference))
            self._pending[key] = (clock, pending)
            pending.add_done_callback(lambda task: self.fetch_done(key, task))
        return await asyncio.shield(pending)

    def fetch_done(self, key: tuple[str, str, str], task: asyncio.Future) -> None:
        if self._pending.get(key, (0.0, None))[1] is task:
            del self._pending[key]
        if not task.cancelled():
            task.exception()  # retrieved here too, so a fetch nobody waits for any more is not reported

    async def fetch_digest(self, reference: ImageReference) -> str:
        started = time.monotonic()
        registry = self.registries.for_domain(reference.domain, None, None)
        try:
            async with self._registry_calls:
                digest = await self.registries.manifest_digest(registry, reference)
        except RegistryProblem as exc:
            if "unreachable" in exc.message:
                # An air-gapped host: remember it a while, quietly, instead of asking again for every container.
                self._unreachable[reference.domain] = (started, exc.message)
                log.debug("image check: %s (%s)", exc.message, exc.details)
            raise
        self._unreachable.pop(reference.domain, None)
        self._digests[(reference.domain, reference.repository, reference.tag)] = (started, digest)
        return digest

    async def check_environment(self, endpoint_id: int, container_ids: list[str] | None = None,
                                fresh: bool = False) -> dict[str, dict]:
        """Status of the given containers (all running ones when None): cached answers unless `fresh`."""
        if container_ids is None:
            connector = self.environments.connector(endpoint_id)
            running = container_summaries(await connector.request_json("GET", "/containers/json"))
            container_ids = [c["Id"] for c in running]
        answers: dict[str, dict] = {}
        fresh_since = time.monotonic() if fresh else None

        async def one(container_id: str) -> None:
            result = None if fresh else self.cached(endpoint_id, container_id)
            if result is None:
                try:
                    result = await self.check(endpoint_id, container_id, fresh_since)
                except ApiError as exc:
                    result = image_status(UPDATE_UNKNOWN, exc.message)
            answers[container_id] = result

        await asyncio.gather(*(one(c) for c in container_ids))
        return answers

    def forget_missing(self, endpoint_id: int, present: set[str]) -> None:
        for key in [k for k in self.results if k[0] == endpoint_id and k[1] not in present]:
            del self.results[key]

    # -- recreate ---------------------------------------------------------------------------------------------
    async def pull(self, connector: DockerConnector, reference: ImageReference, image_name: str,
                   caller: Caller | None, endpoint_id: int) -> None:
        headers = []
        registry = self.registries.for_domain(reference.domain, caller, endpoint_id)
        if registry is not None:
            headers.append(("X-Registry-Auth", encode_registry_header(self.registries.auth_config(registry))))
        name = reference.name if reference.domain != DOCKER_HUB_DOMAIN else reference.repository
        query = urllib.parse.urlencode({"fromImage": name, "tag": reference.tag})
        response = await connector.request("POST", f"/images/create?{query}", headers, timeout=600)
        async with response:
            raw = await response.read()
        if response.status >= 400:
            raise pull_failure(image_name, engine_error(response.status, raw).message)
        for line in raw.splitlines():
            with contextlib.suppress(ValueError):
                progress = json.loads(line)
                if isinstance(progress, dict) and progress.get("error"):
                    raise pull_failure(image_name, progress["error"])

    async def recreate(self, endpoint_id: int, container_id: str, pull: bool, caller: Caller | None,
                       vet: Callable[[dict], Awaitable[dict]] | None = None) -> tuple[str, dict]:
        """Pull (optionally), then replace the container by one made from the same settings, keeping its name,
        networks and volumes; the old one is restored if anything fails on the way. `vet` may refuse the
        creation body before anything changes, and answers the body to send. Answers the old container's id and
        the new one's inspect."""
        connector = self.environments.connector(endpoint_id)
        container = as_dict(await connector.request_json(
            "GET", f"/containers/{urllib.parse.quote(container_id, safe='')}/json"))
        old_id, name = engine_id(container.get("Id")), as_text(container.get("Name")).lstrip("/")
        image_name = as_text(field_at(container, "Config", "Image"))
        if not (old_id and name and image_name):
            raise BadGateway(f"environment {endpoint_id} described container {container_id} without its id, name "
                             "or image name", "a container cannot be recreated without them")
        if field_at(container, "HostConfig", "AutoRemove"):
            raise BadRequest(f"container {name} was started with --rm (AutoRemove) and cannot be recreated")
        reference = ImageReference.parse(image_name)
        if (endpoint_id, name) in self._recreating:
            raise Conflict(f"container {name} is already being recreated")
        self._recreating.add((endpoint_id, name))
        try:
            if pull and not reference.digest and not IMAGE_ID.fullmatch(image_name):
                await self.pull(connector, reference, image_name, caller, endpoint_id)
            old_image = await self.image_of(connector, container)
            body = creation_body(container, old_image, await connector.request_json("GET", "/info"))
            if vet is not None:
                body = await vet(body)
            new = await self.replace(connector, container, name, body)
        finally:
            self._recreating.discard((endpoint_id, name))
        self.results.pop((endpoint_id, old_id), None)
        self.results.pop((endpoint_id, container_id), None)
        return old_id, new

    async def replace(self, connector: DockerConnector, container: dict, name: str, body: dict) -> dict:
        old_id = engine_id(container.get("Id"))
        was_running = field_at(container, "State", "Running") is True
        parked = f"{name}-old-{old_id[:12]}"
        quoted = urllib.parse.quote
        if was_running:
            grace = as_count(field_at(container, "Config", "StopTimeout")) or 10
            await connector.request_json("POST", f"/containers/{old_id}/stop", timeout=grace + 30)
        await connector.request_json("POST", f"/containers/{old_id}/rename?name={quoted(parked)}")
        new_id = None
        try:
            created = await connector.request_json("POST", f"/containers/create?name={quoted(name)}", body)
            new_id = answered_id(created)
            networks = as_dict(field_at(container, "NetworkSettings", "Networks"))
            primary = as_text(field_at(container, "HostConfig", "NetworkMode")) or "default"
            for network_name, network in networks.items():
                if network_name != primary and not (primary == "default" and network_name == "bridge"):
                    await connector.request_json("POST", f"/networks/{quoted(network_name)}/connect", {
                        "Container": new_id, "EndpointConfig": network_endpoint_config(network, container)})
            if was_running:
                await connector.request_json("POST", f"/containers/{new_id}/start", timeout=60)
        except ApiError:
            if new_id is not None:
                with contextlib.suppress(ApiError):
                    await connector.request_json("DELETE", f"/containers/{new_id}?force=1")
            with contextlib.suppress(ApiError):
                await connector.request_json("POST", f"/containers/{old_id}/rename?name={quoted(name)}")
                if was_running:
                    await connector.request_json("POST", f"/containers/{old_id}/start", timeout=60)
            raise
        await connector.request_json("DELETE", f"/containers/{old_id}?force=1")
        return as_dict(await connector.request_json("GET", f"/containers/{new_id}/json"))


async def image_update_loop(app: web.Application) -> None:
    """Check every running container on a schedule, then recreate those labelled for auto-update."""
    interval = app[CONFIG].image_check_interval
    if interval <= 0:
        return
    environments = app[ENVIRONMENTS]
    while True:
        await asyncio.sleep(interval)
        for endpoint in app[STORE].endpoints:
            if environments.status.get(endpoint["Id"]) != STATUS_UP or endpoint.get(IMAGE_CHECK_SETTING) is not True:
                continue
            try:
                await check_and_auto_update(app, endpoint)
            except ApiError as exc:
                log.debug("image check of environment %s skipped: %s", endpoint["Id"], exc.message)


async def move_resource_control(store: Store, old_id: str, new_id: str) -> None:
    """An administrator's sharing of a container stays with it when it is recreated under a new id."""
    moved = False
    for control in store.resource_controls:
        if control.get("Type") == RESOURCE_CONTROL_TYPES["containers"] and control.get("ResourceId") == old_id:
            control["ResourceId"] = new_id
            moved = True
    if moved:
        await store.commit()


async def check_and_auto_update(app: web.Application, endpoint: dict) -> None:
    updates, endpoint_id = app[IMAGE_UPDATES], endpoint["Id"]
    if not updates.enabled(endpoint_id):
        return
    connector = updates.environments.connector(endpoint_id)
    running = container_summaries(await connector.request_json("GET", "/containers/json"))
    answers = await updates.check_environment(endpoint_id, [c["Id"] for c in running], fresh=True)
    updates.forget_missing(endpoint_id, {c["Id"] for c in running})
    for container in running:
        if container["Labels"].get(AUTO_UPDATE_LABEL, "").lower() != "true":
            continue
        if answers.get(container["Id"], {}).get("Status") != UPDATE_OUTDATED:
            continue
        name = container_name(container) or "?"
        entry = {"kind": "activity", "userId": None, "username": "auto-update", "endpointId": endpoint_id,
                 "context": endpoint.get("Name", ""), "method": "POST", "origin": "schedule",
                 "path": f"/api/docker/{endpoint_id}/containers/{container['Id']}/recreate"}
        try:
            _, new = await updates.recreate(endpoint_id, container["Id"], pull=True, caller=None)
        except ApiError as exc:
            app[ACTIVITY].record({**entry, "action": f"auto-update of container {name} failed: {exc.message}",
                                  "status": exc.status})
            log.warning("auto-update of container %s on environment %s failed: %s", name, endpoint_id, exc.message)
            continue
        new_id, new_image = as_text(new.get("Id")), as_text(field_at(new, "Config", "Image"))
        await move_resource_control(app[STORE], container["Id"], new_id)
        app[ACTIVITY].record({**entry, "action": f"auto-update: recreated container {name} with the new image "
                                                 f"of {new_image}", "status": 200})
        log.info("auto-update: recreated container %s on environment %s with the new image of %s (%s)", name,
                 endpoint_id, new_image, answers[container["Id"]].get("RemoteDigest", ""))


# ================================================================================================================
# Docker proxy: /api/endpoints/{id}/docker/{path}, streamed both ways, upgrades passed through
# ================================================================================================================


@dataclasses.dataclass
class DockerGrant:
    """One caller's permission for one Docker call on one environment, decided by authorize_docker_call. Its
    `vet` checks a body the call sends; `target` is what to forward (names resolved to the full ids checked)."""

    store: Store
    caller: Caller
    endpoint: dict
    connector: DockerConnector
    role: int
    action: str
    body_kind: str | None
    target: str
    node_headers: list[tuple[str, str]]  # the agent node the call is for; every check asks that node
    resource: str | None = None  # what the path names: its full id once an ownership check resolved it
    method: str = ""

    @property
    def trusted_with_host(self) -> bool:
        """Administrators and environment administrators; everyone else is held to the security settings."""
        return self.role == ENV_ROLE_ADMIN

    @property
    def ownership_bound(self) -> bool:
        return self.role in OWNERSHIP_BOUND_ROLES

    @property
    def settings(self) -> dict | None:
        return None if self.trusted_with_host else endpoint_security_settings(self.endpoint)

    def check_fields(self, body_kind: str, body: dict) -> None:
        """Refuse what a body would do that the security settings forbid (its references are not resolved:
        stacks check bodies for resources they are about to make)."""
        _, vetting = vet_body(body_kind, body, self.settings)
        if vetting.problems:
            raise refusal(vetting.problems)

    async def vet(self, body: Any, body_kind: str | None = None) -> dict:
        """The body to forward: read as the engine reads it, every field allowed, every resource it names owned
        and named by its full id, and, for a non-administrator's creation, their ownership labels."""
        body_kind = body_kind or self.body_kind
        canonical, vetting = vet_body(body_kind, body, self.settings)
        if vetting.problems:
            raise refusal(vetting.problems)
        await self.resolve(vetting.references)
        canonical = settle(canonical)
        if not self.caller.is_admin and body_kind in LABELLED_CREATES:
            field_name = LABELLED_CREATES[body_kind]
            labels = {k: v for k, v in as_dict(canonical.get(field_name)).items()
                      if k not in (OWNER_USERS_LABEL, OWNER_TEAMS_LABEL)}
            canonical[field_name] = {**labels, **ownership_labels(self.store, self.caller)}
        return canonical

    async def resolve(self, references: list[Reference]) -> None:
        """Each resource a body or query names passes the check a direct call on it would; the engine then gets
        the full id the name resolved to, so a rename between check and use changes nothing."""
        if not self.ownership_bound:
            return
        for reference in references:
            item = await require_owned(self.connector, self.store, self.caller, reference.kind, reference.name,
                                       missing_ok=reference.create_missing, headers=self.node_headers)
            if item is None:
                # made now, labelled, so that the engine does not make it unowned (and hidden from its user)
                await self.connector.request_json(
                    "POST", "/volumes/create", {"Name": reference.name,
                                                "Labels": ownership_labels(self.store, self.caller)},
                    headers=self.node_headers)
                continue
            reference.use_id(resource_key(reference.kind, item))

    async def resolve_path(self, path: str, resource: str) -> None:
        """The resource the path names must be the caller's; the engine gets its full id."""
        version = (API_VERSION_PREFIX.match(path) or [""])[0]
        parts = API_VERSION_PREFIX.sub("", path).strip("/").split("/")
        kind, rest = parts[0], parts[2:]
        if kind == "exec":
            try:
                exec_info = await self.connector.request_json("GET", f"/exec/{urllib.parse.quote(resource)}/json",
                                                              headers=self.node_headers)
            except ApiError as exc:
                if exc.status == 404:
                    return  # the engine answers the call itself with its own 404
                raise
            await require_owned(self.connector, self.store, self.caller, "containers",
                                str(as_dict(exec_info).get("ContainerID") or ""), headers=self.node_headers)
            return
        if kind == "containers" and self.method == "DELETE" and rest:
            await self.resolve_link_removal(version, resource, rest[0])
            return
        if kind == "tasks":
            task = as_dict(await self.connector.request_json(
                "GET", f"/tasks/{urllib.parse.quote(resource, safe='')}", headers=self.node_headers))
            await require_owned(self.connector, self.store, self.caller, "services", str(task.get("ServiceID") or ""),
                                headers=self.node_headers)
            full_id = str(task.get("ID") or resource)
        else:
            full_id = resource_key(kind, await require_owned(self.connector, self.store, self.caller, kind, resource,
                                                             headers=self.node_headers))
        query = self.target.split("?", 1)[1] if "?" in self.target else ""
        self.resource = full_id
        self.target = f"{version}/{kind}/{urllib.parse.quote(full_id, safe='')}" + "".join(
            "/" + urllib.parse.quote(part, safe="") for part in rest) + (f"?{query}" if query else "")

    async def resolve_link_removal(self, version: str, container: str, alias: str) -> None:
        """DELETE /containers/{name}/{alias}: the container whose link goes must be the caller's. The engine finds
        a link's parent by name, never by id, so it gets the checked container's own name, and link=1 always:
        without it the engine would remove the linked container that /{name}/{alias} also names."""
        item = as_dict(await require_owned(self.connector, self.store, self.caller, "containers", container,
                                           headers=self.node_headers))
        name = as_text(item.get("Name")).lstrip("/")
        if not name:
            raise BadGateway(f"the engine named no container for {container!r}")
        self.resource = resource_key("containers", item)
        self.target = (f"{version}/containers/{urllib.parse.quote(name, safe='')}/"
                       f"{urllib.parse.quote(alias, safe='')}?link=1")

    async def vet_query(self, path: str) -> None:
        """Query parameters that name another resource or a host setting (commit, build) pass the same checks."""
        bare = API_VERSION_PREFIX.sub("", path)
        if bare not in ("/commit", "/build") or self.caller.is_admin:
            return
        base, _, raw_query = self.target.partition("?")
        vetting = Vetting(self.settings)
        pairs = vet_query(bare, urllib.parse.parse_qsl(raw_query, keep_blank_values=True), vetting)
        if vetting.problems:
            raise refusal(vetting.problems)
        if vetting.references:
            await self.resolve(vetting.references)
            self.target = base + "?" + urllib.parse.urlencode(pairs)


def docker_grant(request: web.Request, endpoint: dict, method: str, path: str,
                 target: str | None = None) -> DockerGrant:
    """The rule table and the caller's role decide whether a call may be made at all (see authorize_docker_call)."""
    store, caller = request.app[STORE], caller_of(request)
    role = endpoint_role(store, caller, endpoint)
    if role is None:
        raise Forbidden(f"you have no access to environment {endpoint['Id']}")
    action, body_kind, resource = docker_rule_for(method, path)
    bare = API_VERSION_PREFIX.sub("", path)
    if action not in ROLE_ACTIONS[role]:
        if action == ADMIN:
            raise Forbidden(f"{method} {bare} is reserved for administrators")
        raise Forbidden(f"your role on this environment ({ENV_ROLE_NAMES[role]}) does not allow {method} {bare}")
    node = request.headers.get(shared.TARGET_HEADER, "")
    grant = DockerGrant(store, caller, endpoint, request.app[ENVIRONMENTS].connector(endpoint["Id"]), role, action,
                        body_kind, target or path, [(shared.TARGET_HEADER, node)] if node else [])
    grant.resource, grant.method = resource, method
    return grant


async def authorize_docker_call(request: web.Request, endpoint: dict, method: str, path: str,
                                target: str | None = None) -> DockerGrant:
    """The one decision for every Docker API call made for a user (the proxy, a web console, stacks, templates,
    recreate): the rule table, their role there, and ownership of the resource the path names and of those its
    query names. `target` is the raw path and query to forward (the decoded `path` when not given)."""
    grant = docker_grant(request, endpoint, method, path, target)
    resource = grant.resource
    if grant.ownership_bound and resource is not None:
        await grant.resolve_path(path, resource)
    await grant.vet_query(path)
    return grant


def visible_event(store: Store, caller: Caller, line: bytes) -> bool:
    """An engine event an ownership-bound user may see: their containers' events and image events only."""
    try:
        event = json.loads(line)
    except ValueError:
        return False
    if not isinstance(event, dict):
        return False
    if event.get("Type") == "image":
        return True
    return event.get("Type") == "container" and owns(store, caller, field_at(event, "Actor", "Attributes"))


async def relay_owned_events(request: web.Request, response: shared.DockerResponse, store: Store,
                             caller: Caller) -> web.StreamResponse:
    """The events stream, line by line, without the events of other users' resources."""
    try:
        out = web.StreamResponse(status=response.status, reason=response.reason or None)
        for name, value in response.headers.items():
            if name.lower() not in shared.HOP_BY_HOP_HEADERS:
                out.headers.add(name, value)
        await out.prepare(request)
        pending = b""
        async for chunk in response.iter_chunks():
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if line.strip() and visible_event(store, caller, line)]
            if kept:
                await out.write(b"".join(kept))
        await out.write_eof()
        return out
    finally:
        response.release()


STOP_PATH = re.compile(r"/containers/[^/]+/(stop|restart)$")


def answer_head_timeout(base: float, path: str, query, streamed_body: bool) -> float:
    """How long the engine may take to start answering; streams (logs -f, events, attach) then stay open as long
    as the client wants. An upload is answered only once the engine has read it all, so it gets longer."""
    if streamed_body:
        return 30 * base
    if STOP_PATH.search(path):
        grace = query.get("t", "10")
        return base + (int(grace) if grace.isdigit() else 10)
    return base


def answer_rewrite(grant: DockerGrant, method: str, bare: str) -> Callable[[bytes], bytes] | None:
    """What a caller may not read in an answer: other users' resources in lists, and the swarm's join tokens
    (root on every node) below environment administrators."""
    if method != "GET":
        return None
    listed = bare.strip("/")
    if grant.ownership_bound and listed in OWNED_KINDS + ("containers/json", "system/df"):
        return filter_owned_list(grant.store, grant.caller, listed.split("/")[0])
    if bare == "/swarm" and not grant.trusted_with_host:
        def without_join_tokens(raw: bytes) -> bytes:
            try:
                swarm = json.loads(raw)
            except ValueError:
                return b"{}"
            return json.dumps({k: v for k, v in as_dict(swarm).items() if go_fold(k) != "JOINTOKENS"}).encode()
        return without_join_tokens
    return None


async def handle_docker_proxy(request: web.Request) -> web.StreamResponse:
    endpoint_id = path_id(request)
    endpoint = endpoint_for_caller(request, endpoint_id)
    caller = caller_of(request)
    # The rules see the path decoded; the engine gets it as the client encoded it, unless a name was resolved.
    raw_target = PROXY_PREFIX.sub("", request.raw_path, count=1) or "/"
    path = urllib.parse.unquote(raw_target.split("?", 1)[0])
    if ".." in path.split("/") or any(c in path for c in "\r\n\x00"):
        raise BadRequest("invalid Docker API path", "path segments '..' and control characters are not allowed")
    grant = await authorize_docker_call(request, endpoint, request.method, path, raw_target)
    bare = API_VERSION_PREFIX.sub("", path)
    connector = grant.connector
    headers = shared.forwardable_request_headers(request)
    body, body_length = shared.request_body_for_relay(request)
    if grant.body_kind is not None:
        raw = await read_body(request) if body is not None else b""
        if not caller.is_admin:
            try:
                parsed = decode_json(raw) if raw.strip() else {}
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise BadRequest("invalid JSON in request body", str(exc)) from None
            raw = json.dumps(await grant.vet(parsed)).encode()
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"] + [
                ("Content-Type", "application/json")]
        body, body_length = (raw if raw else None), None
    # After the body is read: a service's image, which decides whose credentials may go with it, is in the body.
    headers = request.app[REGISTRIES].proxy_headers(caller, endpoint_id, bare, raw_target.partition("?")[2], headers,
                                                    body if isinstance(body, bytes) else None)
    rewrite = answer_rewrite(grant, request.method, bare)
    if grant.ownership_bound and request.method == "GET" and bare == "/tasks":
        rewrite = await filter_owned_tasks(connector, grant.store, caller)
    timeout = answer_head_timeout(request.app[CONFIG].proxy_timeout, path, request.query,
                                  streamed_body=body is not None and grant.body_kind is None)
    response = await connector.request(request.method, grant.target, headers, body, body_length, timeout=timeout)
    try:
        if grant.ownership_bound and bare == "/events" and response.status == 200:
            return await relay_owned_events(request, response, grant.store, caller)
        return await shared.relay_response(request, response, rewrite_body=rewrite if response.status == 200 else None)
    except shared.DockerUnreachable as exc:
        log.info("stream from environment %s ended early: %s", endpoint_id, exc)
        raise ConnectionResetError(str(exc)) from None


# ================================================================================================================
# Stacks: a compose engine in Python (parse, check, deploy) that reaches engines only through the connector
# ================================================================================================================

STACK_SWARM = 1
STACK_COMPOSE = 2
STACK_ACTIVE = 1
STACK_INACTIVE = 2
COMPOSE_FILE = "docker-compose.yml"
STACK_ENV_FILE = "stack.env"
# The Compose v1 release whose labels and names we reproduce, so `docker-compose ps` treats our projects as its own.
COMPOSE_VERSION = "1.29.2"
STACK_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
HEALTH_WAIT_SECONDS = 120
MAX_COMPOSE_NODES = 100_000
LABEL_PROJECT = "com.docker.compose.project"
LABEL_SERVICE = "com.docker.compose.service"
LABEL_HASH = "com.docker.compose.config-hash"
LABEL_NAMESPACE = "com.docker.stack.namespace"


class ComposeLoader(yaml.SafeLoader):
    """A YAML loader whose mappings remember the line of each key, so every error can name its line."""


class MarkedMap(dict):
    """A YAML mapping with `line` (where it starts) and `key_lines` (where each key is)."""

    line = 0

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


YAML_MERGE_TAG = "tag:yaml.org,2002:merge"


def _construct_marked_map(loader: ComposeLoader, node: yaml.MappingNode) -> MarkedMap:
    """A mapping; merge keys (`<<: *a`, `<<: [*a, *b]`) add the keys the mapping does not set itself, the first
    merged mapping winning (YAML's merge rule). Merged mappings are built once and read, never copied into
    the node graph (PyYAML's flatten_mapping doubles it at each nested merge)."""
    result = MarkedMap()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    merged: list[MarkedMap] = []
    for key_node, value_node in node.value:
        if key_node.tag == YAML_MERGE_TAG:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(None, None, "a merge key (<<) takes a mapping or a "
                                                            "list of mappings", source.start_mark)
                merged.append(loader.construct_object(source, deep=True))
            continue
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float)):
            raise yaml.constructor.ConstructorError(None, None, "a key must be a plain value", key_node.start_mark)
        key = str(key)
        if key in result:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    for source in merged:
        for key, value in source.items():
            if key not in result:
                result[key] = value
                result.key_lines[key] = source.line_of(key)
    return result


ComposeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_marked_map)


def expanded_yaml_size(root: yaml.Node, budget: int, file_name: str) -> int:
    """How many values the document has once every alias and merge key is expanded, counted on the node graph
    (each node once, remembered), so a small file that expands without end is refused before it is built."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise BadRequest(f"{file_name}, line {node.start_mark.line + 1}: an alias refers to a value that "
                             f"contains it")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > budget:
                raise BadRequest(f"{file_name}: the file expands to more than {budget} values",
                                 "YAML aliases and merge keys (<<) count once for each place they are used")
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root)


def load_yaml(text: str, file_name: str, budget: int = MAX_COMPOSE_NODES) -> Any:
    """The one way this server reads YAML: safe tags only, keys with their lines, and a budget on the expanded
    document (aliases and merge keys included) that answers 400 before anything large is built."""
    try:
        loader = ComposeLoader(text)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise BadRequest(f"{file_name}: invalid YAML: {exc}") from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        expanded_yaml_size(root, budget, file_name)
        return loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise BadRequest(f"{file_name}, line {line}: invalid YAML: {exc.problem or exc}", str(exc)) from None
    except yaml.YAMLError as exc:
        raise BadRequest(f"{file_name}: invalid YAML: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{file_name}: invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


INTERPOLATION = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)|\{(?P<braced>[^}]*)\}|(?P<bad>))")
BRACED = re.compile(r"^(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:?[-?])(?P<arg>.*))?$", re.S)
DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([bkmg]?)b?$", re.I)

SERVICE_KEYS = {"image", "command", "entrypoint", "environment", "env_file", "ports", "volumes", "networks",
                "depends_on", "restart", "labels", "healthcheck", "user", "working_dir", "hostname", "cap_add",
                "cap_drop", "logging", "deploy", "container_name", "configs", "secrets", "stop_grace_period",
                "build", "pull_policy"}
TOP_LEVEL_KEYS = {"version", "services", "networks", "volumes", "configs", "secrets", "name"}
NETWORK_KEYS = {"driver", "driver_opts", "external", "name", "labels", "internal", "attachable"}
VOLUME_KEYS = {"driver", "driver_opts", "external", "name", "labels"}
FILE_OBJECT_KEYS = {"file", "environment", "content", "external", "name", "labels"}
BUILD_KEYS = {"context", "dockerfile", "dockerfile_inline", "args", "target", "labels", "cache_from", "network",
              "shm_size", "extra_hosts"}
PULL_POLICIES = ("always", "never", "missing", "if_not_present", "build")
# Where a secret or config given by environment or content is written inside the project, to be bind-mounted.
GENERATED_FILES_DIR = ".portainer"
INLINE_DOCKERFILE = ".portainer-inline.Dockerfile"
HEALTHCHECK_KEYS = {"test", "interval", "timeout", "retries", "start_period", "disable"}
DEPLOY_KEYS = {"replicas", "resources", "mode", "labels", "restart_policy"}
RESOURCE_KEYS = {"limits", "reservations"}
RESOURCE_VALUE_KEYS = {"cpus", "memory"}
RESTART_POLICY_KEYS = {"condition", "delay", "max_attempts", "window"}
PORT_KEYS = {"target", "published", "protocol", "host_ip", "mode"}
MOUNT_KEYS = {"type", "source", "target", "read_only"}
SERVICE_NETWORK_KEYS = {"aliases"}
DEPENDENCY_CONDITIONS = ("service_started", "service_healthy", "service_completed_successfully")


class ComposeFile:
    """A compose file parsed, interpolated from the stack's env and checked, key by key, into plain settings.

    Every key is either understood or refused with the file, line and key: nothing is silently ignored.
    """

    def __init__(self, text: str, env: dict[str, str], project: str, project_dir: str, swarm: bool = False,
                 file_name: str = COMPOSE_FILE, files: dict[str, bytes] | None = None, source_dir: str | None = None):
        """`project_dir` is the project directory as the engine's host sees it (relative binds resolve there);
        `source_dir` is where this server reads the project's files (the same directory on the local
        environment; the server's copy, or one being staged, for an agent's)."""
        self.project = project
        self.project_dir = project_dir
        self.source_dir = source_dir or project_dir
        self.files = files or {}  # the stack's files about to be written, by path relative to project_dir
        self.generated: dict[str, bytes] = {}  # files this parse adds to the project (secrets given by value)
        self.file_name = file_name
        self.swarm = swarm
        self.env = env
        document = load_yaml(text, file_name)
        if not isinstance(document, MarkedMap):
            raise BadRequest(f"{file_name}, line 1: a compose file is a mapping with a 'services' key")
        self.budget = MAX_COMPOSE_NODES
        document = self.interpolate(document, document.line)
        self.check_keys(document, TOP_LEVEL_KEYS, "")
        if document.get("name") not in (None, project):
            raise self.error(document, "name", f"the top-level 'name' must be the stack's name, {project!r}")
        services = document.get("services")
        if not isinstance(services, MarkedMap) or not services:
            raise self.error(document, "services", "'services' must be a mapping with at least one service")
        self.networks = {name: self.top_level_object(document["networks"], name, NETWORK_KEYS, "networks")
                         for name in self.mapping(document, "networks", "")}
        self.volumes = {name: self.top_level_object(document["volumes"], name, VOLUME_KEYS, "volumes")
                        for name in self.mapping(document, "volumes", "")}
        self.configs = {name: self.file_object(document["configs"], name, "configs")
                        for name in self.mapping(document, "configs", "")}
        self.secrets = {name: self.file_object(document["secrets"], name, "secrets")
                        for name in self.mapping(document, "secrets", "")}
        self.services = {name: self.service(services, name) for name in services}
        self.order = self.dependency_order()
        if any("default" in s["networks"] for s in self.services.values()) and "default" not in self.networks:
            self.networks["default"] = {"name": f"{project}_default", "external": False, "driver": None,
                                        "driver_opts": {}, "labels": {}, "internal": False, "attachable": False}

    # -- errors and generic checks ----------------------------------------------------------------------------
    def error(self, mapping: MarkedMap, key: str, message: str) -> BadRequest:
        line = mapping.line_of(key) if isinstance(mapping, MarkedMap) else 0
        return BadRequest(f"{self.file_name}, line {line}: {message}")

    def check_keys(self, mapping: MarkedMap, allowed: set, path: str) -> None:
        for key in mapping:
            if key not in allowed and not key.startswith("x-"):
                raise self.error(mapping, key, f"unsupported key '{path}{key}'")

    def mapping(self, parent: MarkedMap, key: str, path: str, required: bool = False) -> MarkedMap:
        value = parent.get(key)
        if value is None:
            if required:
                raise self.error(parent, key, f"'{path}{key}' is required")
            empty = MarkedMap()
            empty.line, empty.key_lines = parent.line_of(key), {}
            return empty
        if not isinstance(value, MarkedMap):
            raise self.error(parent, key, f"'{path}{key}' must be a mapping")
        return value

    def string(self, parent: MarkedMap, key: str, path: str, default: str | None = None) -> str | None:
        value = parent.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.error(parent, key, f"'{path}{key}' must be a string")
        return str(value)

    def string_list(self, parent: MarkedMap, key: str, path: str) -> list[str]:
        value = parent.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise self.error(parent, key, f"'{path}{key}' must be a list of strings")
        return [str(v) for v in value]

    def command(self, parent: MarkedMap, key: str, path: str) -> list[str] | None:
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise self.error(parent, key, f"'{path}{key}': {exc}") from None
        return self.string_list(parent, key, path)

    def key_values(self, parent: MarkedMap, key: str, path: str) -> dict[str, str | None]:
        """environment/labels/driver_opts: a mapping, or a list of KEY=VALUE (KEY alone: from the stack's env)."""
        value = parent.get(key)
        if value is None:
            return {}
        if isinstance(value, MarkedMap):
            return {k: None if v is None else scalar_text(v) for k, v in value.items()}
        if isinstance(value, list):
            result: dict[str, str | None] = {}
            for item in value:
                if not isinstance(item, str):
                    raise self.error(parent, key, f"'{path}{key}' items must be KEY=VALUE strings")
                name, sep, text = item.partition("=")
                result[name] = text if sep else None
            return result
        raise self.error(parent, key, f"'{path}{key}' must be a mapping or a list")

    def duration(self, parent: MarkedMap, key: str, path: str) -> int | None:
        """A compose duration (1m30s, 500ms) in nanoseconds."""
        value = parent.get(key)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value * 1_000_000_000)
        text = str(value).strip()
        parts = DURATION_PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise self.error(parent, key, f"'{path}{key}' must be a duration such as 30s or 1m30s")
        scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9, "h": 3600e9}
        return int(sum(float(n) * scale[u] for n, u in parts))

    def size(self, parent: MarkedMap, key: str, path: str) -> int | None:
        value = parent.get(key)
        if value is None:
            return None
        match = SIZE.match(str(value).strip())
        if not match:
            raise self.error(parent, key, f"'{path}{key}' must be a size such as 512m or 1g")
        return int(float(match.group(1)) * 1024 ** "bkmg".index(match.group(2).lower() or "b"))

    # -- interpolation ----------------------------------------------------------------------------------------
    def interpolate(self, value: Any, line: int) -> Any:
        self.budget -= 1
        if self.budget < 0:  # YAML aliases can make a small file expand without end
            raise BadRequest(f"{self.file_name}: the file expands to more than {MAX_COMPOSE_NODES} values")
        if isinstance(value, MarkedMap):
            result = MarkedMap()
            result.line, result.key_lines = value.line, value.key_lines
            for key, item in value.items():
                result[key] = self.interpolate(item, value.line_of(key))
            return result
        if isinstance(value, list):
            return [self.interpolate(item, line) for item in value]
        if isinstance(value, str) and "$" in value:
            return INTERPOLATION.sub(lambda m: self.substitute(m, line), value)
        return value

    def substitute(self, match: re.Match, line: int) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("named"):
            return self.env.get(match.group("named"), "")
        braced = match.group("braced")
        parsed = BRACED.match(braced) if braced is not None else None
        if parsed is None:
            raise BadRequest(f"{self.file_name}, line {line}: invalid interpolation {match.group(0)!r}",
                             "use $VAR, ${VAR}, ${VAR:-default}, ${VAR:?message}, or $$ for a literal $")
        name, op, arg = parsed.group("name"), parsed.group("op"), parsed.group("arg")
        value = self.env.get(name)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and missing:
            return INTERPOLATION.sub(lambda m: self.substitute(m, line), arg)
        if op in (":?", "?") and missing:
            raise BadRequest(f"{self.file_name}, line {line}: variable {name} is required: {arg}")
        return value or ""

    # -- top-level objects ------------------------------------------------------------------------------------
    def top_level_object(self, parent: MarkedMap, name: str, allowed: set, kind: str) -> dict:
        raw = parent.get(name)
        if raw is None:
            raw = MarkedMap()
            raw.line, raw.key_lines = parent.line_of(name), {}
        if not isinstance(raw, MarkedMap):
            raise self.error(parent, name, f"'{kind}.{name}' must be a mapping")
        path = f"{kind}.{name}."
        self.check_keys(raw, allowed, path)
        external = raw.get("external")
        if isinstance(external, MarkedMap):
            external_name = self.string(external, "name", path + "external.")
            external = True
        else:
            external_name = None
        if external not in (None, True, False):
            raise self.error(raw, "external", f"'{path}external' must be true or false")
        given_name = self.string(raw, "name", path) or external_name
        return {"name": given_name or (name if external else f"{self.project}_{name}"), "external": bool(external),
                "driver": self.string(raw, "driver", path), "driver_opts": self.key_values(raw, "driver_opts", path),
                "labels": self.key_values(raw, "labels", path), "internal": bool(raw.get("internal")),
                "attachable": bool(raw.get("attachable"))}

    def file_object(self, parent: MarkedMap, name: str, kind: str) -> dict:
        """A top-level secret or config: from a project file, a variable of the stack's env, or inline content.
        In a standalone stack it is bind-mounted from the project directory (one given by value is written there
        first, under .portainer/), as docker compose does; in a Swarm stack it becomes a Swarm secret or config."""
        raw = self.mapping(parent, name, f"{kind}.")
        path = f"{kind}.{name}."
        self.check_keys(raw, FILE_OBJECT_KEYS, path)
        if raw.get("external"):
            if not self.swarm:
                raise self.error(raw, "external", f"'{path}external': external {kind} exist only in Swarm; a "
                                                  f"standalone stack takes a file, environment or content")
            return {"name": self.string(raw, "name", path) or name, "external": True, "data": None}
        given = [key for key in ("file", "environment", "content") if raw.get(key) is not None]
        if len(given) != 1:
            raise self.error(parent, name, f"'{kind}.{name}' needs one of file, environment or content "
                                           f"(or external: true in a Swarm stack)")
        relative = None
        if given[0] == "file":
            relative = self.string(raw, "file", path)
            data = self.read_project_file(raw, "file", relative)
            relative = os.path.relpath(os.path.realpath(os.path.join(self.source_dir, relative)),
                                       os.path.realpath(self.source_dir))
        elif given[0] == "environment":
            variable = self.string(raw, "environment", path)
            if variable not in self.env:
                raise self.error(raw, "environment", f"'{path}environment': the stack's env has no {variable}")
            data = self.env[variable].encode()
        else:
            data = self.string(raw, "content", path).encode()
        if relative is None and not self.swarm:
            relative = f"{GENERATED_FILES_DIR}/{kind}/{name}"
            self.generated[relative] = data
        return {"name": self.string(raw, "name", path) or f"{self.project}_{name}", "external": False,
                "data": data, "labels": self.key_values(raw, "labels", path), "file": relative}

    def read_project_file(self, parent: MarkedMap, key: str, relative: str) -> bytes:
        """A file of the stack's own (its project directory); nothing outside it."""
        base = os.path.realpath(self.source_dir)
        path = os.path.realpath(os.path.join(base, relative))
        if not path.startswith(base + os.sep):
            raise self.error(parent, key, f"{relative!r} is outside the stack's files")
        if os.path.relpath(path, base) in self.files:
            return self.files[os.path.relpath(path, base)]
        try:
            with open(path, "rb") as f:
                return f.read(1024 * 1024)
        except OSError:
            raise self.error(parent, key, f"{relative!r} is not one of the stack's files") from None

    # -- services ---------------------------------------------------------------------------------------------
    def service(self, services: MarkedMap, name: str) -> dict:
        raw = self.mapping(services, name, "services.", required=True)
        path = f"services.{name}."
        self.check_keys(raw, SERVICE_KEYS, path)
        image = self.string(raw, "image", path) or (f"{self.project}_{name}" if raw.get("build") is not None else None)
        if not image:
            raise self.error(services, name, f"service {name!r} needs an 'image' or a 'build'")
        environment: dict[str, str] = {}
        for env_file in self.string_list(raw, "env_file", path):
            text = self.read_project_file(raw, "env_file", env_file).decode(errors="replace")
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, _, value = line.partition("=")
                    environment[key.strip()] = value
        for key, value in self.key_values(raw, "environment", path).items():
            if value is None:
                if key in self.env:
                    environment[key] = self.env[key]
            else:
                environment[key] = value
        restart = raw.get("restart")
        restart = "no" if restart is False or restart is None else str(restart)
        if not re.fullmatch(r"no|always|unless-stopped|on-failure(:\d+)?", restart):
            raise self.error(raw, "restart", f"'{path}restart' must be no, always, unless-stopped or on-failure")
        logging_options = self.mapping(raw, "logging", path)
        self.check_keys(logging_options, {"driver", "options"}, path + "logging.")
        deploy = self.mapping(raw, "deploy", path)
        self.check_keys(deploy, DEPLOY_KEYS, path + "deploy.")
        replicas = deploy.get("replicas", 1)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise self.error(deploy, "replicas", f"'{path}deploy.replicas' must be a whole number")
        mode = self.string(deploy, "mode", path + "deploy.", "replicated")
        if mode not in ("replicated", "global"):
            raise self.error(deploy, "mode", f"'{path}deploy.mode' must be replicated or global")
        resources = self.mapping(deploy, "resources", path + "deploy.")
        self.check_keys(resources, RESOURCE_KEYS, path + "deploy.resources.")
        limits, reservations = ({}, {})
        for kind, target in (("limits", limits), ("reservations", reservations)):
            values = self.mapping(resources, kind, path + "deploy.resources.")
            self.check_keys(values, RESOURCE_VALUE_KEYS, f"{path}deploy.resources.{kind}.")
            if values.get("cpus") is not None:
                try:
                    target["nano_cpus"] = int(float(values["cpus"]) * 1e9)
                except ValueError:
                    raise self.error(values, "cpus", f"'{path}deploy.resources.{kind}.cpus' must be a number") from None
            memory = self.size(values, "memory", f"{path}deploy.resources.{kind}.")
            if memory is not None:
                target["memory"] = memory
        restart_policy = self.mapping(deploy, "restart_policy", path + "deploy.")
        self.check_keys(restart_policy, RESTART_POLICY_KEYS, path + "deploy.restart_policy.")
        if not self.swarm:
            for key, hint in (("restart_policy", "use 'restart'"), ("labels", "use 'labels'"),
                              ("mode", "use deploy.replicas")):
                if key in deploy:
                    raise self.error(deploy, key, f"'{path}deploy.{key}' is for Swarm stacks; {hint} here")
        service = {
            "image": image,
            "command": self.command(raw, "command", path),
            "entrypoint": self.command(raw, "entrypoint", path),
            "environment": environment,
            "ports": self.ports(raw, path),
            "mounts": self.mounts(raw, path),
            "networks": self.service_networks(raw, path),
            "depends_on": self.depends_on(raw, path, services),
            "restart": restart,
            "labels": self.key_values(raw, "labels", path),
            "healthcheck": self.healthcheck(raw, path),
            "user": self.string(raw, "user", path),
            "working_dir": self.string(raw, "working_dir", path),
            "hostname": self.string(raw, "hostname", path),
            "cap_add": self.string_list(raw, "cap_add", path),
            "cap_drop": self.string_list(raw, "cap_drop", path),
            "logging": {"driver": self.string(logging_options, "driver", path + "logging."),
                        "options": self.key_values(logging_options, "options", path + "logging.")},
            "replicas": replicas,
            "mode": mode,
            "limits": limits,
            "reservations": reservations,
            "deploy_labels": self.key_values(deploy, "labels", path + "deploy."),
            "restart_policy": {"condition": self.string(restart_policy, "condition", path),
                               "delay": self.duration(restart_policy, "delay", path),
                               "max_attempts": restart_policy.get("max_attempts"),
                               "window": self.duration(restart_policy, "window", path)} if restart_policy else None,
            "container_name": self.string(raw, "container_name", path),
            "stop_grace_period": self.duration(raw, "stop_grace_period", path),
            "configs": self.file_references(raw, "configs", path, self.configs),
            "secrets": self.file_references(raw, "secrets", path, self.secrets),
            **self.build_settings(raw, path),
        }
        if service["container_name"] and replicas > 1:
            raise self.error(raw, "container_name", f"'{path}container_name' cannot name {replicas} replicas")
        return service

    def ports(self, raw: MarkedMap, path: str) -> list[dict]:
        result = []
        for item in raw.get("ports") or []:
            if isinstance(item, MarkedMap):
                self.check_keys(item, PORT_KEYS, path + "ports.")
                target = item.get("target")
                published = item.get("published")
                protocol = str(item.get("protocol") or "tcp")
                host_ip = str(item.get("host_ip") or "")
                mode = str(item.get("mode") or "ingress")
            else:
                text = str(item)
                spec, _, protocol = text.partition("/")
                protocol = protocol or "tcp"
                parts = spec.rsplit(":", 2) if spec.count(":") <= 2 else None
                if parts is None:
                    raise self.error(raw, "ports", f"'{path}ports': cannot read {text!r}")
                target = parts[-1]
                published = parts[-2] if len(parts) >= 2 else None
                host_ip = parts[0] if len(parts) == 3 else ""
                mode = "ingress"
            if not re.fullmatch(r"[0-9]{1,5}", str(target)) or \
                    (published not in (None, "") and not re.fullmatch(r"[0-9]{1,5}", str(published))) \
                    or protocol not in ("tcp", "udp", "sctp") or mode not in ("ingress", "host") \
                    or (mode == "host" and not self.swarm):
                raise self.error(raw, "ports", f"'{path}ports': cannot read {item!r} (port ranges are not "
                                                 f"supported; mode host only in Swarm stacks)")
            result.append({"target": int(target), "published": int(published) if published not in (None, "") else None,
                           "protocol": protocol, "host_ip": host_ip, "mode": mode})
        return result

    def mounts(self, raw: MarkedMap, path: str) -> list[dict]:
        result = []
        for item in raw.get("volumes") or []:
            if isinstance(item, MarkedMap):
                self.check_keys(item, MOUNT_KEYS, path + "volumes.")
                kind = str(item.get("type") or "volume")
                source = item.get("source")
                target = item.get("target")
                read_only = bool(item.get("read_only"))
            else:
                parts = str(item).split(":")
                read_only = len(parts) == 3 and parts[2] == "ro"
                if len(parts) == 1:
                    source, target = None, parts[0]
                elif len(parts) in (2, 3) and (len(parts) == 2 or parts[2] in ("ro", "rw")):
                    source, target = parts[0], parts[1]
                else:
                    raise self.error(raw, "volumes", f"'{path}volumes': cannot read {item!r}")
                kind = "bind" if source and _is_host_path(source) else "volume"
            if kind not in ("volume", "bind") or not target or not str(target).startswith("/"):
                raise self.error(raw, "volumes", f"'{path}volumes': cannot read {item!r} "
                                                 f"(volume or bind mounts to an absolute path are supported)")
            if kind == "bind":
                source = os.path.normpath(os.path.join(self.project_dir, os.path.expanduser(str(source))))
            elif source is not None:
                if source not in self.volumes:
                    raise self.error(raw, "volumes", f"volume {source!r} is used by a service but not declared "
                                                     f"under the top-level 'volumes'")
                source = self.volumes[source]["name"]
            result.append({"type": kind, "source": source, "target": str(target), "read_only": read_only})
        return result

    def service_networks(self, raw: MarkedMap, path: str) -> dict[str, dict]:
        value = raw.get("networks")
        if value is None:
            return {"default": {"aliases": []}}
        names = value if isinstance(value, list) else list(value) if isinstance(value, MarkedMap) else None
        if names is None:
            raise self.error(raw, "networks", f"'{path}networks' must be a list or a mapping")
        result = {}
        for name in names:
            name = str(name)
            if name not in self.networks and name != "default":
                raise self.error(raw, "networks", f"network {name!r} is used by a service but not declared under "
                                                  f"the top-level 'networks'")
            options = value.get(name) if isinstance(value, MarkedMap) else None
            aliases: list[str] = []
            if options is not None:
                if not isinstance(options, MarkedMap):
                    raise self.error(value, name, f"'{path}networks.{name}' must be a mapping")
                self.check_keys(options, SERVICE_NETWORK_KEYS, f"{path}networks.{name}.")
                aliases = self.string_list(options, "aliases", f"{path}networks.{name}.")
            result[name] = {"aliases": aliases}
        return result

    def depends_on(self, raw: MarkedMap, path: str, services: MarkedMap) -> dict[str, str]:
        value = raw.get("depends_on")
        if value is None:
            return {}
        if isinstance(value, list):
            result = {str(name): "service_started" for name in value}
        elif isinstance(value, MarkedMap):
            result = {}
            for name, options in value.items():
                options = options if isinstance(options, MarkedMap) else MarkedMap()
                self.check_keys(options, {"condition"}, f"{path}depends_on.{name}.")
                condition = str(options.get("condition") or "service_started")
                if condition not in DEPENDENCY_CONDITIONS:
                    raise self.error(value, name, f"'{path}depends_on.{name}.condition' must be one of "
                                                  + ", ".join(DEPENDENCY_CONDITIONS))
                result[name] = condition
        else:
            raise self.error(raw, "depends_on", f"'{path}depends_on' must be a list or a mapping")
        for name in result:
            if name not in services:
                raise self.error(raw, "depends_on", f"'{path}depends_on' names {name!r}, which is not a service")
        return result

    def healthcheck(self, raw: MarkedMap, path: str) -> dict | None:
        if "healthcheck" not in raw:
            return None
        options = self.mapping(raw, "healthcheck", path)
        self.check_keys(options, HEALTHCHECK_KEYS, path + "healthcheck.")
        if options.get("disable"):
            return {"Test": ["NONE"]}
        test = options.get("test")
        if isinstance(test, str):
            test = ["CMD-SHELL", test]
        elif not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise self.error(options, "test", f"'{path}healthcheck.test' must be a string or a list starting "
                                              f"with CMD, CMD-SHELL or NONE")
        check = {"Test": [str(t) for t in test]}
        for key, name in (("interval", "Interval"), ("timeout", "Timeout"), ("start_period", "StartPeriod")):
            value = self.duration(options, key, path + "healthcheck.")
            if value is not None:
                check[name] = value
        if options.get("retries") is not None:
            retries = options["retries"]
            if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
                raise self.error(options, "retries", f"'{path}healthcheck.retries' must be a whole number")
            check["Retries"] = retries
        return check

    def file_references(self, raw: MarkedMap, key: str, path: str, declared: dict) -> list[dict]:
        result = []
        for item in raw.get(key) or []:
            if isinstance(item, MarkedMap):
                self.check_keys(item, {"source", "target", "uid", "gid", "mode"}, f"{path}{key}.")
                source, target = str(item.get("source")), item.get("target")
                owner = {k: str(item[k]) for k in ("uid", "gid") if item.get(k) is not None}
                if item.get("mode") is not None:
                    try:
                        mode = item["mode"]
                        owner["mode"] = int(str(mode), 8) if isinstance(mode, str) else int(mode)
                    except ValueError:
                        raise self.error(raw, key, f"'{path}{key}': mode must be an octal number") from None
            else:
                source, target, owner = str(item), None, {}
            if source not in declared:
                raise self.error(raw, key, f"{key[:-1]} {source!r} is not declared under the top-level '{key}'")
            # As `docker stack deploy`: no target means the source's name (under /run/secrets/ or /).
            result.append({"source": source, "target": str(target or source), **owner})
        return result

    def build_settings(self, raw: MarkedMap, path: str) -> dict:
        """`build` (a context path, or its long form) and `pull_policy`, as docker compose reads them. The context
        is a directory of the project: the server streams it to the engine, whatever kind the environment is."""
        policy = self.string(raw, "pull_policy", path, "missing")
        if policy not in PULL_POLICIES:
            raise self.error(raw, "pull_policy", f"'{path}pull_policy' must be one of " + ", ".join(PULL_POLICIES))
        value = raw.get("build")
        if value is None:
            if policy == "build":
                raise self.error(raw, "pull_policy", f"'{path}pull_policy: build' needs a 'build'")
            return {"build": None, "pull_policy": policy}
        if self.swarm:
            raise self.error(raw, "build", f"'{path}build' is not supported in Swarm stacks (docker stack deploy "
                                           f"ignores it): build and push the image, then name it in 'image'")
        if isinstance(value, str):
            options = MarkedMap({"context": value})
            options.line, options.key_lines = raw.line_of("build"), {}
        elif isinstance(value, MarkedMap):
            options = value
        else:
            raise self.error(raw, "build", f"'{path}build' must be a context path or a mapping")
        where = path + "build."
        self.check_keys(options, BUILD_KEYS, where)
        context = self.string(options, "context", where, ".")
        if re.match(r"^[a-z][a-z0-9+.-]*://|^git@", context):
            raise self.error(options, "context", f"'{where}context': remote build contexts are not supported; "
                                                 f"put the context in the project")
        base = os.path.realpath(self.source_dir)
        context_path = os.path.realpath(os.path.join(base, context))
        if context_path != base and not context_path.startswith(base + os.sep):
            raise self.error(options, "context", f"'{where}context': {context!r} is outside the stack's files")
        if not os.path.isdir(context_path):
            raise self.error(options, "context", f"'{where}context': {context!r} is not a directory of the project")
        inline = self.string(options, "dockerfile_inline", where)
        dockerfile = (INLINE_DOCKERFILE if inline is not None
                      else self.string(options, "dockerfile", where, "Dockerfile"))
        dockerfile_path = os.path.realpath(os.path.join(context_path, dockerfile))
        if not dockerfile_path.startswith(context_path + os.sep):
            raise self.error(options, "dockerfile", f"'{where}dockerfile' must be inside the build context")
        if inline is None and not os.path.isfile(dockerfile_path):
            raise self.error(options, "dockerfile" if "dockerfile" in options else "context",
                             f"'{where}dockerfile': the context {context!r} has no {dockerfile!r}")
        args = {key: value if value is not None else self.env.get(key)
                for key, value in self.key_values(options, "args", where).items()}
        extra_hosts = options.get("extra_hosts")
        if isinstance(extra_hosts, MarkedMap):
            hosts = [f"{host}:{address}" for host, address in self.key_values(options, "extra_hosts", where).items()]
        else:
            hosts = [entry.replace("=", ":", 1) if "=" in entry else entry
                     for entry in self.string_list(options, "extra_hosts", where)]
        return {"build": {"context": os.path.relpath(context_path, base), "dockerfile": dockerfile,
                          "dockerfile_inline": inline,
                          "args": {key: value for key, value in args.items() if value is not None},
                          "target": self.string(options, "target", where),
                          "labels": self.key_values(options, "labels", where),
                          "cache_from": self.string_list(options, "cache_from", where),
                          "network": self.string(options, "network", where),
                          "shm_size": self.size(options, "shm_size", where), "extra_hosts": hosts},
                "pull_policy": policy}

    def dependency_order(self) -> list[str]:
        order: list[str] = []
        visiting: set[str] = set()

        def visit(name: str, chain: list[str]) -> None:
            if name in order:
                return
            if name in visiting:
                raise BadRequest(f"{self.file_name}: services depend on each other in a cycle: "
                                 + " -> ".join(chain + [name]))
            visiting.add(name)
            for dependency in self.services[name]["depends_on"]:
                visit(dependency, chain + [name])
            visiting.discard(name)
            order.append(name)

        for name in self.services:
            visit(name, [])
        return order

    def config_hash(self, name: str) -> str:
        return hashlib.sha256(json.dumps(self.services[name], sort_keys=True).encode()).hexdigest()


def scalar_text(value: Any) -> str:
    """A YAML scalar as compose writes it into an environment: booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@contextlib.contextmanager
def unless_missing():
    """Let an engine's 404 pass: removing what is already gone is done."""
    try:
        yield
    except ApiError as exc:
        if exc.status != 404:
            raise


def container_number(container: dict) -> int:
    """A compose container's replica number (its container-number label); 0 when it has none that is a number."""
    number = container["Labels"].get("com.docker.compose.container-number", "")
    return int(number) if number.isdigit() and len(number) < 10 else 0


def label_filter(*labels: str) -> str:
    return urllib.parse.quote(json.dumps({"label": list(labels)}))


def image_reference(image: str) -> tuple[str, str]:
    """fromImage and tag for POST /images/create."""
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, digest
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


async def ensure_image(connector: DockerConnector, image: str, pull: bool,
                       progress: Callable[[dict], None] | None = None) -> None:
    """Pull an image when the engine lacks it, or always when asked to; a failed pull is a 400 naming it.
    `progress` hears each of the engine's pull messages (per layer) as it comes."""
    if not pull:
        try:
            await connector.request_json("GET", f"/images/{urllib.parse.quote(image, safe='/:@')}/json")
            return
        except ApiError as exc:
            if exc.status != 404:
                raise
    name, tag = image_reference(image)
    query = urllib.parse.urlencode({"fromImage": name, "tag": tag})
    response = await connector.request("POST", f"/images/create?{query}", timeout=600)
    async with response:
        if response.status >= 400:
            error = engine_error(response.status, await response.read())
            raise BadRequest(f"pulling image {image} failed: {error.message}")
        async for message in engine_messages(response):
            if message.get("error"):
                raise BadRequest(f"pulling image {image} failed: {as_text(message.get('error'))}")
            if progress is not None:
                progress({"stage": "pull", "image": image, "layer": as_text(message.get("id")),
                          "status": as_text(message.get("status")), "progress": as_text(message.get("progress"))})


async def engine_messages(response: shared.DockerResponse, limit: int = 1024 * 1024) -> AsyncIterator[dict]:
    """The JSON objects of a streamed engine answer (pull, build), one a line, as they arrive."""
    pending = b""
    async for chunk in response.iter_chunks():
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > limit:
            raise BadGateway("the engine sent a progress line longer than 1 MiB")
        for line in lines:
            with contextlib.suppress(ValueError, RecursionError):
                if line.strip():
                    yield as_dict(json.loads(line))
    with contextlib.suppress(ValueError, RecursionError):
        if pending.strip():
            yield as_dict(json.loads(pending))


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern]]:
    """A .dockerignore as (re-include, pattern) rules in its order, as the Docker CLI reads it."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        line = os.path.normpath(line[1:].strip() if include else line).lstrip("/")
        if line in ("", "."):
            continue
        pattern, i = "", 0
        while i < len(line):
            char = line[i]
            if line.startswith("**", i):
                i += 2
                if line.startswith("/", i):
                    i += 1
                    pattern += "(?:.*/)?"
                else:
                    pattern += ".*"
                continue
            pattern += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            i += 1
        rules.append((include, re.compile(f"^{pattern}$")))
    return rules


def dockerignored(relative: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether a path of the context is left out: the last rule matching it or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for include, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            ignored = not include
    return ignored


def build_context_tar(source_dir: str, build: dict):
    """The build context (a directory of the project) as a tar in a temporary file: .dockerignore respected, the
    Dockerfile and .dockerignore always sent (as the Docker CLI does), the stack's env file never."""
    context = os.path.join(source_dir, build["context"])
    rules: list[tuple[bool, re.Pattern]] = []
    with contextlib.suppress(FileNotFoundError):
        with open(os.path.join(context, ".dockerignore"), encoding="utf-8", errors="replace") as f:
            rules = dockerignore_rules(f.read(1024 * 1024))
    always = {build["dockerfile"], ".dockerignore"}
    spool = tempfile.TemporaryFile()

    def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    try:
        with tarfile.open(fileobj=spool, mode="w") as archive:
            for directory, names, files in os.walk(context):
                for name in sorted(names + files):
                    path = os.path.join(directory, name)
                    relative = os.path.relpath(path, context).replace(os.sep, "/")
                    if relative in (STACK_ENV_FILE, shared.PROJECT_MANIFEST) and build["context"] == ".":
                        continue
                    if relative not in always and dockerignored(relative, rules):
                        continue
                    if name in names and not os.path.islink(path):
                        archive.add(path, arcname=relative, recursive=False, filter=as_root)
                    elif os.path.islink(path) or os.path.isfile(path):
                        archive.add(path, arcname=relative, recursive=False, filter=as_root)
            if build["dockerfile_inline"] is not None:
                data = build["dockerfile_inline"].encode()
                info = tarfile.TarInfo(INLINE_DOCKERFILE)
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def build_query(image: str, build: dict) -> str:
    """POST /build's query for a service's build settings (tagged with the service's image name)."""
    pairs = [("t", image), ("dockerfile", build["dockerfile"]), ("rm", "1"), ("forcerm", "1")]
    for key, value in (("buildargs", build["args"]), ("labels", build["labels"]), ("cachefrom", build["cache_from"])):
        if value:
            pairs.append((key, json.dumps(value)))
    for key, value in (("target", build["target"]), ("networkmode", build["network"]),
                       ("shmsize", build["shm_size"])):
        if value:
            pairs.append((key, str(value)))
    pairs += [("extrahosts", host) for host in build["extra_hosts"]]
    return urllib.parse.urlencode(pairs)


def project_digest(directory: str) -> str:
    """SHA-256 of a project directory's paths and file contents (links by their targets)."""
    digest = hashlib.sha256()
    for root, names, files in os.walk(directory):
        names.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, directory).encode() + b"\0")
            if os.path.islink(path):
                digest.update(b"->" + os.readlink(path).encode())
            else:
                with open(path, "rb") as f:
                    while chunk := f.read(1024 * 1024):
                        digest.update(chunk)
            digest.update(b"\0")
    return digest.hexdigest()


def service_failure(name: str, exc: ApiError) -> ApiError:
    """The error of one service's step, saying which service failed (the status stays the engine's or ours)."""
    if exc.message.startswith(("service ", "building service ")):
        return exc
    error = ApiError(f"service {name!r} failed: {exc.message}", exc.details)
    error.status = exc.status
    return error


class ComposeDeployment:
    """One compose project on one standalone engine, brought to what its file says (`docker compose up -d`)."""

    def __init__(self, connector: DockerConnector, compose: ComposeFile | None, project: str = ""):
        """Without a compose file (project named instead), only `down` and `stop` can be used: they go by labels."""
        self.connector = connector
        self.compose = compose
        self.project = compose.project if compose else project
        self.config_file = os.path.join(compose.project_dir, os.path.basename(compose.file_name)) if compose else ""
        self.owner_labels: dict[str, str] = {}
        self.progress: Callable[[dict], None] = lambda event: None  # a deploy's live progress (DeployProgress)
        self.registry_config: dict = {}  # X-Registry-Config for builds: the registries the caller may use there
        self.build_targets: dict[str, str] = {}  # service -> /build?... as the caller's grant vetted it
        self.built_images: list[str] = []  # image names this deploy made that the engine did not have before

    def common_labels(self) -> dict[str, str]:
        return {**self.owner_labels, LABEL_PROJECT: self.project, "com.docker.compose.version": COMPOSE_VERSION}

    def network_body(self, key: str) -> dict:
        network = self.compose.networks[key]
        return {"Name": network["name"], "Driver": network["driver"] or "bridge", "CheckDuplicate": True,
                "Options": network["driver_opts"], "Internal": network["internal"], "Attachable": network["attachable"],
                "Labels": {**network["labels"], **self.common_labels(), "com.docker.compose.network": key}}

    def volume_body(self, key: str) -> dict:
        volume = self.compose.volumes[key]
        return {"Name": volume["name"], "Driver": volume["driver"] or "local", "DriverOpts": volume["driver_opts"],
                "Labels": {**volume["labels"], **self.common_labels(), "com.docker.compose.volume": key}}

    def container_name(self, name: str, number: int) -> str:
        return self.compose.services[name]["container_name"] or f"{self.project}_{name}_{number}"

    def container_body(self, name: str, number: int) -> dict:
        service = self.compose.services[name]
        networks = list(service["networks"])
        exposed = {f"{p['target']}/{p['protocol']}": {} for p in service["ports"]}
        bindings: dict[str, list] = {}
        for p in service["ports"]:
            bindings.setdefault(f"{p['target']}/{p['protocol']}", []).append(
                {"HostIp": p["host_ip"], "HostPort": str(p["published"] or "")})
        restart, _, retries = service["restart"].partition(":")
        host = {
            "Binds": [f"{m['source']}:{m['target']}{':ro' if m['read_only'] else ''}"
                      for m in service["mounts"] if m["type"] == "bind"],
            "Mounts": [{"Type": "volume", "Source": m["source"], "Target": m["target"], "ReadOnly": m["read_only"]}
                       for m in service["mounts"] if m["type"] == "volume" and m["source"]],
            "PortBindings": bindings,
            "RestartPolicy": {"Name": "" if restart == "no" else restart, "MaximumRetryCount": int(retries or 0)},
            "CapAdd": service["cap_add"] or None, "CapDrop": service["cap_drop"] or None,
            "NetworkMode": self.compose.networks[networks[0]]["name"] if networks else "none",
        }
        if service["logging"]["driver"]:
            host["LogConfig"] = {"Type": service["logging"]["driver"], "Config": service["logging"]["options"]}
        if service["limits"].get("nano_cpus"):
            host["NanoCpus"] = service["limits"]["nano_cpus"]
        if service["limits"].get("memory"):
            host["Memory"] = service["limits"]["memory"]
        if service["reservations"].get("memory"):
            host["MemoryReservation"] = service["reservations"]["memory"]
        anonymous = {m["target"]: {} for m in service["mounts"] if m["type"] == "volume" and not m["source"]}
        body = {
            "Image": service["image"], "Cmd": service["command"], "Entrypoint": service["entrypoint"],
            "Env": [f"{k}={v}" for k, v in service["environment"].items()],
            "Labels": {**service["labels"], **self.common_labels(), LABEL_SERVICE: name,
                       "com.docker.compose.container-number": str(number), "com.docker.compose.oneoff": "False",
                       LABEL_HASH: self.compose.config_hash(name),
                       "com.docker.compose.project.config_files": self.config_file,
                       "com.docker.compose.project.working_dir": self.compose.project_dir},
            "ExposedPorts": exposed, "Volumes": anonymous, "HostConfig": host,
            "NetworkingConfig": {"EndpointsConfig": {
                self.compose.networks[networks[0]]["name"]: self.endpoint_config(name, networks[0])} if networks
                else {}},
        }
        for key, value in (("User", service["user"]), ("WorkingDir", service["working_dir"]),
                           ("Hostname", service["hostname"]), ("Healthcheck", service["healthcheck"])):
            if value:
                body[key] = value
        if service["stop_grace_period"] is not None:
            body["StopTimeout"] = service["stop_grace_period"] // 1_000_000_000
        host["Binds"] += self.secret_and_config_binds(name)
        return body

    def secret_and_config_binds(self, name: str) -> list[str]:
        """Secrets at /run/secrets/<target> and configs at their target (/<name> by default), read-only binds of
        their files in the project directory, as docker compose mounts them outside Swarm."""
        binds = []
        for kind, declared, prefix in (("secrets", self.compose.secrets, "/run/secrets/"),
                                       ("configs", self.compose.configs, "/")):
            for reference in self.compose.services[name][kind]:
                target = reference["target"]
                target = target if target.startswith("/") else prefix + target
                source = os.path.join(self.compose.project_dir, declared[reference["source"]]["file"])
                binds.append(f"{source}:{target}:ro")
        return binds

    def endpoint_config(self, service: str, network: str) -> dict:
        return {"Aliases": [service] + self.compose.services[service]["networks"][network]["aliases"]}

    def check_allowed(self, grant: DockerGrant) -> None:
        """Refuse, for a standard user, whatever the proxy would refuse them: checked on what will be sent."""
        for name in self.compose.services:
            grant.check_fields("container", self.container_body(name, 1))
        for key, network in self.compose.networks.items():
            if not network["external"]:
                grant.check_fields("network", self.network_body(key))
        for key, volume in self.compose.volumes.items():
            if not volume["external"]:
                grant.check_fields("volume", self.volume_body(key))

    async def project_containers(self) -> list[dict]:
        return container_summaries(await self.connector.request_json(
            "GET", f"/containers/json?all=1&filters={label_filter(f'{LABEL_PROJECT}={self.project}')}"))

    async def ensure_networks_and_volumes(self) -> None:
        for key, network in self.compose.networks.items():
            if not any(key in s["networks"] for s in self.compose.services.values()):
                continue
            try:
                await self.connector.request_json("GET", f"/networks/{urllib.parse.quote(network['name'])}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                if network["external"]:
                    raise BadRequest(f"external network {network['name']!r} does not exist") from None
                await self.connector.request_json("POST", "/networks/create", self.network_body(key))
        for key, volume in self.compose.volumes.items():
            try:
                await self.connector.request_json("GET", f"/volumes/{urllib.parse.quote(volume['name'])}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                if volume["external"]:
                    raise BadRequest(f"external volume {volume['name']!r} does not exist") from None
                await self.connector.request_json("POST", "/volumes/create", self.volume_body(key))

    async def up(self, pull: bool = False, prune: bool = False, rebuild: bool = False) -> None:
        """Create what is missing, recreate services whose config hash changed, start everything; rebuild builds
        every built image again (`up --build`: a git stack's new commit)."""
        await self.prepare_images(pull, rebuild)
        await self.ensure_networks_and_volumes()
        existing = await self.project_containers()
        for name in self.compose.order:
            try:
                await self.wait_for_dependencies(name)
                await self.converge_service(name, [c for c in existing if c["Labels"].get(LABEL_SERVICE) == name])
            except ApiError as exc:
                raise service_failure(name, exc) from None
        if prune:
            for container in existing:
                if container["Labels"].get(LABEL_SERVICE) not in self.compose.services:
                    await self.remove_container(container["Id"])

    def note_replaced_project(self, digest: str) -> None:
        """A new archive replaces the project directory: services that bind its files (relative binds, secrets,
        configs) are recreated when its content changed, so that none keeps the old directory's files."""
        for name, service in self.compose.services.items():
            body = self.container_body(name, 1)
            if any(bind.startswith(self.compose.project_dir + os.sep) for bind in body["HostConfig"]["Binds"]):
                service["project_digest"] = digest

    async def image_id(self, image: str) -> str:
        """The engine's id of an image, "" when it has none of that name."""
        try:
            return as_text(as_dict(await self.connector.request_json(
                "GET", f"/images/{urllib.parse.quote(image, safe='/:@')}/json")).get("Id"))
        except ApiError as exc:
            if exc.status != 404:
                raise
            return ""

    async def prepare_images(self, pull: bool, rebuild: bool = False) -> None:
        """Each service's image, as its pull_policy says: built from the project (build: always, or when missing or
        PullImage is asked), pulled (always, or when missing), or required to be there (never)."""
        pulled: set[str] = set()
        for name in self.compose.order:
            service = self.compose.services[name]
            image, policy = service["image"], service.get("pull_policy", "missing")
            try:
                if service.get("build") is not None:
                    current = await self.image_id(image)
                    if policy == "build" or pull or rebuild or not current:
                        current = await self.build_image(name, existed=bool(current))
                    # As docker compose: a rebuilt image recreates the service's containers.
                    service["image_id"] = current
                elif image not in pulled:
                    if policy == "never":
                        if not await self.image_id(image):
                            raise BadRequest(f"image {image} is not on the engine, and pull_policy is never")
                    else:
                        await ensure_image(self.connector, image, pull or policy == "always",
                                           lambda event, name=name: self.progress({**event, "service": name}))
                    pulled.add(image)
            except ApiError as exc:
                raise service_failure(name, exc) from None

    async def build_image(self, name: str, existed: bool) -> str:
        """POST /build with the context streamed from the project directory; answers the new image's id."""
        service = self.compose.services[name]
        image, build = service["image"], service["build"]
        target = self.build_targets.get(name) or f"/build?{build_query(image, build)}"
        self.progress({"stage": "build", "service": name, "line": f"building {image} from {build['context']}"})
        spool = await asyncio.to_thread(build_context_tar, self.compose.source_dir, build)
        headers = [("Content-Type", "application/x-tar")]
        if self.registry_config:
            headers.append(("X-Registry-Config", encode_registry_header(self.registry_config)))
        try:
            size = spool.seek(0, os.SEEK_END)
            spool.seek(0)
            response = await self.connector.request("POST", target, headers, file_chunks(spool), size, timeout=600)
            async with response:
                if response.status >= 400:
                    error = engine_error(response.status, await response.read())
                    raise BadRequest(f"building service {name!r} failed: {error.message}")
                if not existed:
                    self.built_images.append(image)
                async for message in engine_messages(response):
                    if message.get("error"):
                        raise BadRequest(f"building service {name!r} failed: {as_text(message.get('error')).strip()}")
                    line = as_text(message.get("stream")).rstrip("\n")
                    if line:
                        self.progress({"stage": "build", "service": name, "line": line})
        finally:
            spool.close()
        built = await self.image_id(image)
        if not built:
            raise BadRequest(f"building service {name!r} made no image {image}")
        return built

    async def remove_built_images(self) -> None:
        """After a failed deploy: the images it built that were not there before."""
        for image in self.built_images:
            with unless_missing():
                await self.connector.request_json("DELETE", f"/images/{urllib.parse.quote(image, safe='/:@')}?force=1")
        self.built_images = []

    async def converge_service(self, name: str, containers: list[dict]) -> None:
        wanted = self.compose.services[name]["replicas"]
        config_hash = self.compose.config_hash(name)
        by_number = {container_number(c): c for c in containers}
        for number, container in by_number.items():
            if number > wanted or number < 1 or container["Labels"].get(LABEL_HASH) != config_hash:
                await self.remove_container(container["Id"])
        for number in range(1, wanted + 1):
            container = by_number.get(number)
            if container is not None and container["Labels"].get(LABEL_HASH) == config_hash:
                if container["State"] != "running":
                    await self.connector.request_json("POST", f"/containers/{container['Id']}/start")
                continue
            await self.create_container(name, number)

    async def create_container(self, name: str, number: int) -> str:
        body = self.container_body(name, number)
        query = urllib.parse.urlencode({"name": self.container_name(name, number)})
        created = await self.connector.request_json("POST", f"/containers/create?{query}", body)
        container_id = answered_id(created)
        self.progress({"stage": "create", "service": name, "container": self.container_name(name, number)})
        for network in list(self.compose.services[name]["networks"])[1:]:
            await self.connector.request_json(
                "POST", f"/networks/{urllib.parse.quote(self.compose.networks[network]['name'])}/connect",
                {"Container": container_id, "EndpointConfig": self.endpoint_config(name, network)})
        await self.connector.request_json("POST", f"/containers/{container_id}/start")
        self.progress({"stage": "start", "service": name, "container": self.container_name(name, number)})
        return container_id

    async def remove_container(self, container_id: str) -> None:
        with unless_missing():
            await self.connector.request_json("DELETE", f"/containers/{container_id}?force=1&v=0", timeout=60)

    async def wait_for_dependencies(self, name: str) -> None:
        for dependency, condition in self.compose.services[name]["depends_on"].items():
            if condition == "service_started":
                continue
            self.progress({"stage": "wait", "service": name, "dependency": dependency, "condition": condition})
            deadline = time.monotonic() + HEALTH_WAIT_SECONDS
            while True:
                containers = container_summaries(await self.connector.request_json(
                    "GET", "/containers/json?all=1&filters=" + label_filter(
                        f"{LABEL_PROJECT}={self.project}", f"{LABEL_SERVICE}={dependency}")))
                states = [as_dict(field_at(await self.connector.request_json("GET", f"/containers/{c['Id']}/json"),
                                           "State")) for c in containers]
                if condition == "service_healthy":
                    if any(not isinstance(s.get("Health"), dict) for s in states):
                        raise BadRequest(f"service {name!r} waits for {dependency!r} to be healthy, but "
                                         f"{dependency!r} has no healthcheck")
                    health = [as_text(field_at(s, "Health", "Status")) for s in states]
                    if "unhealthy" in health:
                        raise BadRequest(f"service {dependency!r} is unhealthy, so {name!r} was not started")
                    if health and all(h == "healthy" for h in health):
                        break
                else:
                    if any(s.get("Status") == "exited" and s.get("ExitCode") != 0 for s in states):
                        raise BadRequest(f"service {dependency!r} failed, so {name!r} was not started")
                    if states and all(s.get("Status") == "exited" for s in states):
                        break
                if time.monotonic() > deadline:
                    raise GatewayTimeout(f"service {dependency!r} did not become ready for {name!r} in "
                                         f"{HEALTH_WAIT_SECONDS} s")
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        containers = await self.project_containers()
        order = {name: i for i, name in enumerate(self.compose.order if self.compose else [])}
        for container in sorted(containers, key=lambda c: -order.get(c["Labels"].get(LABEL_SERVICE), -1)):
            if container["State"] in ("running", "restarting", "paused"):
                with unless_missing():
                    await self.connector.request_json("POST", f"/containers/{container['Id']}/stop", timeout=120)

    async def start(self) -> None:
        await self.up()

    async def down(self) -> None:
        """Remove the project's containers, and the networks and volumes it created (not external ones)."""
        for container in await self.project_containers():
            await self.remove_container(container["Id"])
        mine = label_filter(f"{LABEL_PROJECT}={self.project}")
        for network in dicts_in(await self.connector.request_json("GET", f"/networks?filters={mine}")):
            if engine_id(network.get("Id")):
                with unless_missing():
                    await self.connector.request_json("DELETE", f"/networks/{network['Id']}")
        volumes = as_dict(await self.connector.request_json("GET", f"/volumes?filters={mine}"))
        for volume in dicts_in(volumes.get("Volumes")):
            if engine_id(volume.get("Name")):
                with unless_missing():
                    await self.connector.request_json("DELETE", f"/volumes/{volume['Name']}")

    async def service_states(self) -> list[dict]:
        containers = await self.project_containers()
        return [{"Name": name, "Image": service["image"], "Containers": [
            {"Id": c["Id"], "Name": container_name(c), "State": c["State"],
             "Status": c["Status"]} for c in containers if c["Labels"].get(LABEL_SERVICE) == name]}
            for name, service in self.compose.services.items()]


class SwarmDeployment:
    """One stack on a Swarm manager, as `docker stack deploy` makes it: services, overlay networks, configs
    and secrets labelled with the stack namespace."""

    def __init__(self, connector: DockerConnector, compose: ComposeFile | None, project: str = ""):
        """Without a compose file (project named instead), only `down` and `stop` can be used: they go by labels."""
        self.connector = connector
        self.compose = compose
        self.project = compose.project if compose else project
        self.owner_labels: dict[str, str] = {}

    def labels(self, extra: dict | None = None) -> dict:
        return {**(extra or {}), **self.owner_labels, LABEL_NAMESPACE: self.project}

    def network_body(self, key: str) -> dict:
        network = self.compose.networks[key]
        return {"Name": network["name"], "Driver": network["driver"] or "overlay", "CheckDuplicate": True,
                "Options": network["driver_opts"], "Internal": network["internal"],
                "Attachable": network["attachable"], "Labels": self.labels(network["labels"])}

    def service_body(self, name: str, object_ids: dict[str, str] | None = None) -> dict:
        """The service spec; object_ids maps config and secret names to their ids on the engine."""
        service = self.compose.services[name]
        object_ids = object_ids or {}
        mounts = [{"Type": m["type"], "Source": m["source"], "Target": m["target"], "ReadOnly": m["read_only"]}
                  for m in service["mounts"]]
        for mount in mounts:
            if mount["Type"] == "volume" and mount["Source"]:
                mount["VolumeOptions"] = {"Labels": self.labels()}
        spec = {"Image": service["image"], "Labels": self.labels(service["labels"]),
                **({"StopGracePeriod": service["stop_grace_period"]} if service["stop_grace_period"] else {}),
                "Env": [f"{k}={v}" for k, v in service["environment"].items()], "Mounts": mounts,
                "Configs": [self.file_reference(r, self.compose.configs, "Config", object_ids)
                            for r in service["configs"]],
                "Secrets": [self.file_reference(r, self.compose.secrets, "Secret", object_ids)
                            for r in service["secrets"]]}
        for key, value in (("Command", service["entrypoint"]), ("Args", service["command"]),
                           ("User", service["user"]), ("Dir", service["working_dir"]),
                           ("Hostname", service["hostname"]), ("Healthcheck", service["healthcheck"]),
                           ("CapabilityAdd", service["cap_add"]), ("CapabilityDrop", service["cap_drop"])):
            if value:
                spec[key] = value
        template: dict = {"ContainerSpec": spec, "Networks": [
            {"Target": self.compose.networks[n]["name"], "Aliases": [name] + o["aliases"]}
            for n, o in service["networks"].items()]}
        resources = {}
        for kind, target in (("limits", "Limits"), ("reservations", "Reservations")):
            values = service[kind]
            if values:
                resources[target] = {k: v for k, v in (("NanoCPUs", values.get("nano_cpus")),
                                                       ("MemoryBytes", values.get("memory"))) if v}
        if resources:
            template["Resources"] = resources
        policy = service["restart_policy"]
        if policy:
            template["RestartPolicy"] = {k: v for k, v in (
                ("Condition", policy["condition"]), ("Delay", policy["delay"]),
                ("MaxAttempts", policy["max_attempts"]), ("Window", policy["window"])) if v is not None}
        if service["logging"]["driver"]:
            template["LogDriver"] = {"Name": service["logging"]["driver"], "Options": service["logging"]["options"]}
        mode = {"Global": {}} if service["mode"] == "global" else {"Replicated": {"Replicas": service["replicas"]}}
        return {"Name": f"{self.project}_{name}", "TaskTemplate": template, "Mode": mode,
                "Labels": self.labels({**service["deploy_labels"], "com.docker.stack.image": service["image"],
                                       LABEL_HASH: self.compose.config_hash(name)}),
                "EndpointSpec": {"Ports": [{"Protocol": p["protocol"], "TargetPort": p["target"],
                                            **({"PublishedPort": p["published"]} if p["published"] else {}),
                                            "PublishMode": p["mode"]} for p in service["ports"]]}}

    @staticmethod
    def file_reference(reference: dict, declared: dict, kind: str, object_ids: dict[str, str]) -> dict:
        name = declared[reference["source"]]["name"]
        return {f"{kind}Name": name, f"{kind}ID": object_ids.get(name, ""),
                "File": {"Name": reference["target"], "UID": reference.get("uid", "0"),
                         "GID": reference.get("gid", "0"), "Mode": reference.get("mode", 0o444)}}

    def check_allowed(self, grant: DockerGrant) -> None:
        for name in self.compose.services:
            grant.check_fields("service", self.service_body(name))
        for key, network in self.compose.networks.items():
            if not network["external"]:
                grant.check_fields("network", self.network_body(key))

    async def namespace_objects(self, kind: str) -> list[dict]:
        """The stack's services, networks, secrets or configs: those with an id safe to use in a path."""
        return [item for item in dicts_in(await self.connector.request_json(
            "GET", f"/{kind}?filters={label_filter(f'{LABEL_NAMESPACE}={self.project}')}"))
            if object_id(item)]

    async def up(self, pull: bool = False, prune: bool = False) -> None:
        info = await self.connector.request_json("GET", "/info")
        if field_at(info, "Swarm", "ControlAvailable") is not True:
            raise BadRequest("this environment is not a Swarm manager; deploy a compose (standalone) stack instead")
        networks = {as_text(n.get("Name")) for n in await self.namespace_objects("networks")}
        for key, network in self.compose.networks.items():
            if network["external"] or network["name"] in networks:
                continue
            if any(key in s["networks"] for s in self.compose.services.values()):
                await self.connector.request_json("POST", "/networks/create", self.network_body(key))
        object_ids: dict[str, str] = {}
        for kind, objects in (("configs", self.compose.configs), ("secrets", self.compose.secrets)):
            present = {as_text(field_at(o, "Spec", "Name")): engine_id(o.get("ID"))
                       for o in dicts_in(await self.connector.request_json("GET", f"/{kind}"))
                       if engine_id(o.get("ID"))}
            for item in objects.values():
                if item["name"] in present:
                    object_ids[item["name"]] = present[item["name"]]
                elif item["external"]:
                    raise BadRequest(f"external {kind[:-1]} {item['name']!r} does not exist")
                else:
                    created = await self.connector.request_json("POST", f"/{kind}/create", {
                        "Name": item["name"], "Labels": self.labels(item["labels"]),
                        "Data": base64.b64encode(item["data"]).decode()})
                    object_ids[item["name"]] = answered_id(created, "ID")
        services = {as_text(field_at(s, "Spec", "Name")): s for s in await self.namespace_objects("services")}
        for name in self.compose.order:
            body = self.service_body(name, object_ids)
            current = services.get(body["Name"])
            if current is None:
                await self.connector.request_json("POST", "/services/create", body)
            elif as_labels(field_at(current, "Spec", "Labels")).get(LABEL_HASH) != body["Labels"][LABEL_HASH] or pull:
                version = as_count(field_at(current, "Version", "Index"))
                await self.connector.request_json("POST", f"/services/{object_id(current)}/update?version={version}",
                                                  body)
        if prune:
            wanted = {f"{self.project}_{name}" for name in self.compose.services}
            for service_name, service in services.items():
                if service_name not in wanted:
                    await self.connector.request_json("DELETE", f"/services/{object_id(service)}")

    async def stop(self) -> None:
        """Portainer stops a Swarm stack by removing it (`docker stack rm`); start deploys it again."""
        await self.down()

    async def start(self) -> None:
        await self.up()

    async def down(self) -> None:
        for service in await self.namespace_objects("services"):
            with unless_missing():
                await self.connector.request_json("DELETE", f"/services/{object_id(service)}")
        for kind in ("secrets", "configs"):
            for item in await self.namespace_objects(kind):
                with unless_missing():
                    await self.connector.request_json("DELETE", f"/{kind}/{object_id(item)}")
        # A network stays in use until the removed services' tasks are gone.
        deadline = time.monotonic() + 30
        for network in await self.namespace_objects("networks"):
            while True:
                try:
                    await self.connector.request_json("DELETE", f"/networks/{object_id(network)}")
                    break
                except ApiError as exc:
                    if exc.status == 404:
                        break
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)

    async def service_states(self) -> list[dict]:
        services = {as_text(field_at(s, "Spec", "Name")): s for s in await self.namespace_objects("services")}
        tasks = dicts_in(await self.connector.request_json(
            "GET", f"/tasks?filters={label_filter(f'{LABEL_NAMESPACE}={self.project}')}"))
        result = []
        for name, service in self.compose.services.items():
            current = services.get(f"{self.project}_{name}")
            result.append({"Name": name, "Image": service["image"], "Containers": [
                {"Id": as_text(t.get("ID")), "Name": f"{self.project}_{name}.{as_count(t.get('Slot')) or ''}",
                 "State": as_text(field_at(t, "Status", "State")),
                 "Status": as_text(field_at(t, "Status", "Message"))}
                for t in tasks if current and t.get("ServiceID") == object_id(current)
                and t.get("DesiredState") == "running"]})
        return result


def entry_directory(project_dir: str, entry_point: str) -> str:
    """The directory of a project's compose file: where its relative paths resolve."""
    base = os.path.dirname(entry_point)
    return os.path.join(project_dir, base) if base else project_dir


def write_stack_file(path: str, data: bytes) -> None:
    """temp file -> fsync -> rename -> fsync the directory: a crash leaves the old file or the new one."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ================================================================================================================
# Console: exec into (or attach to) a container over a WebSocket, authenticated by the session cookie
# ================================================================================================================

CONSOLE_MAX_MESSAGE = 1024 * 1024


def check_same_origin(request: web.Request) -> None:
    """A browser always sends Origin on a WebSocket; a foreign one would ride the user's cookie (hijacking)."""
    origin = request.headers.get("Origin")
    if origin is None:
        if caller_of(request).via == "cookie":
            raise Forbidden("a WebSocket authenticated by cookie must send an Origin header")
        return
    if urllib.parse.urlsplit(origin).netloc.lower() != request.host.lower():
        raise Forbidden(f"WebSocket from origin {origin} refused", "the console only accepts this server's own pages")


async def open_console_stream(request: web.Request, endpoint: dict, container_id: str, mode: str,
                              command: list[str]) -> tuple[shared.DockerResponse, str, bool]:
    """Start an exec (or attach) under the proxy's access rules; answers the upgraded stream, the resize path and
    whether output is a TTY."""
    connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
    upgrade = [("Content-Type", "application/json"), ("Connection", "Upgrade"), ("Upgrade", "tcp")]
    if mode == "attach":
        grant = await authorize_docker_call(request, endpoint, "POST", f"/containers/{container_id}/attach")
        quoted = urllib.parse.quote(grant.resource, safe="")
        details = await connector.request_json("GET", f"/containers/{quoted}/json", headers=grant.node_headers)
        tty = field_at(details, "Config", "Tty") is True
        target = f"/containers/{quoted}/attach?stream=1&stdin=1&stdout=1&stderr=1"
        resize, body = f"/containers/{quoted}/resize", None
    elif mode == "exec_start":  # an exec the client made (POST /containers/{id}/exec): container_id is its id
        grant = await authorize_docker_call(request, endpoint, "POST", f"/exec/{container_id}/start")
        quoted = urllib.parse.quote(container_id, safe="")
        tty, target = True, f"/exec/{quoted}/start"
        resize, body = f"/exec/{quoted}/resize", json.dumps({"Tty": True, "Detach": False}).encode()
    else:
        exec_config = {"AttachStdin": True, "AttachStdout": True, "AttachStderr": True, "Tty": True,
                       "Cmd": command, "Env": ["TERM=xterm"], "Privileged": False}
        grant = await authorize_docker_call(request, endpoint, "POST", f"/containers/{container_id}/exec")
        quoted = urllib.parse.quote(grant.resource, safe="")
        exec_id = answered_id(await connector.request_json("POST", f"/containers/{quoted}/exec",
                                                           await grant.vet(exec_config)))
        tty, target = True, f"/exec/{exec_id}/start"
        resize, body = f"/exec/{exec_id}/resize", json.dumps({"Detach": False, "Tty": True}).encode()
    response = await connector.request("POST", target, upgrade + grant.node_headers, body, timeout=30)
    if not response.upgraded:
        async with response:
            raw = await response.read()
        raise engine_error(response.status if response.status >= 400 else 502, raw)
    return response, resize, tty


def demultiplex(buffer: bytearray) -> bytes:
    """Take the complete frames of Docker's stdout/stderr stream format out of buffer; answers their payload."""
    out = bytearray()
    while len(buffer) >= 8:
        size = int.from_bytes(buffer[4:8], "big")
        if len(buffer) < 8 + size:
            break
        out += buffer[8:8 + size]
        del buffer[:8 + size]
    return bytes(out)


async def handle_console_websocket(request: web.Request) -> web.WebSocketResponse:
    """Console WebSocket: ?containerId=&cmd=sh (exec) or &mode=attach; binary frames are keystrokes and output,
    a text frame {"type": "resize", "cols", "rows"} resizes the terminal."""
    endpoint_id = path_id(request)
    endpoint = endpoint_for_caller(request, endpoint_id)
    check_same_origin(request)
    container_id = request.query.get("containerId", "")
    if not container_id or "/" in container_id:
        raise BadRequest("containerId is required")
    mode = request.query.get("mode", "exec")
    if mode not in ("exec", "attach"):
        raise BadRequest("mode must be exec or attach")
    try:
        command = shlex.split(request.query.get("cmd", "sh"))
    except ValueError as exc:
        raise BadRequest(f"cannot parse cmd: {exc}") from None
    if not command:
        raise BadRequest("cmd must not be empty")
    stream, resize_path, tty = await open_console_stream(request, endpoint, container_id, mode, command)
    return await relay_console(request, endpoint_id, stream, resize_path, tty)


async def relay_console(request: web.Request, endpoint_id: int, stream: shared.DockerResponse, resize_path: str,
                        tty: bool, portainer_protocol: bool = False) -> web.WebSocketResponse:
    """Pipe a WebSocket to an upgraded engine stream. Ours: binary frames are keystrokes and output (demultiplexed
    when there is no TTY), a text frame {"type": "resize"} resizes. Portainer's (/api/websocket/*): every frame
    the client sends is keystrokes, and the engine's bytes go back as they are, in text frames (as Portainer's
    hijack does; invalid UTF-8 replaced), the terminal resized through the API."""
    connector = request.app[ENVIRONMENTS].connector(endpoint_id)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=CONSOLE_MAX_MESSAGE)
    try:
        await ws.prepare(request)
    except Exception:
        stream.release()
        raise
    request.app[CONSOLES].add(ws)
    connection = stream.connection

    async def engine_to_browser():
        pending = bytearray()
        text = codecs.getincrementaldecoder("utf-8")("replace")
        while True:
            data = await connection.reader.read(shared.STREAM_CHUNK)
            if not data:
                return
            if portainer_protocol:
                if decoded := text.decode(data):
                    await ws.send_str(decoded)
                continue
            if not tty:
                pending += data
                data = demultiplex(pending)
            if data:
                await ws.send_bytes(data)

    async def resize(cols: Any, rows: Any):
        if isinstance(cols, int) and isinstance(rows, int) and 0 < cols < 1000 and 0 < rows < 1000:
            with contextlib.suppress(ApiError):
                await connector.request_json("POST", f"{resize_path}?h={rows}&w={cols}")

    async def browser_to_engine():
        async for message in ws:
            if message.type == web.WSMsgType.BINARY or portainer_protocol and message.type == web.WSMsgType.TEXT:
                connection.writer.write(message.data if isinstance(message.data, bytes) else message.data.encode())
                await connection.writer.drain()
            elif message.type == web.WSMsgType.TEXT:
                try:
                    control = json.loads(message.data)
                except (ValueError, RecursionError):
                    continue
                if isinstance(control, dict) and control.get("type") == "resize":
                    await resize(control.get("cols"), control.get("rows"))

    tasks = [asyncio.ensure_future(engine_to_browser()), asyncio.ensure_future(browser_to_engine())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:  # either side hanging up ends the session
            log.debug("console session on environment %s ended by the %s: %r", endpoint_id,
                      "engine" if task is tasks[0] else "browser", task.exception())
    finally:
        for task in tasks:
            task.cancel()
        stream.release()
        connection.close()
        await ws.close()
    return ws


HEXADECIMAL_ID = re.compile(r"[0-9a-fA-F]{1,64}")


async def handle_portainer_console(request: web.Request, mode: str) -> web.WebSocketResponse:
    """Portainer's console routes: ?endpointId=&id=&nodeName=, authenticated by header or session cookie."""
    endpoint_id = query_int(request, "endpointId", 0)
    if endpoint_id <= 0:
        raise BadRequest("Invalid query parameter: endpointId", "a positive environment id is required")
    resource_id = request.query.get("id", "")
    if not HEXADECIMAL_ID.fullmatch(resource_id):
        raise BadRequest("Invalid query parameter: id (must be hexadecimal identifier)")
    endpoint = endpoint_for_caller(request, endpoint_id)
    check_same_origin(request)
    node = request.query.get("nodeName", "")
    if node and (len(node) > 253 or any(c.isspace() or c in "\x00/" for c in node)):
        raise BadRequest("Invalid query parameter: nodeName")
    # nodeName picks the agent node, as the proxy's X-PortainerAgent-Target header does
    scoped = request.clone(headers={**request.headers, shared.TARGET_HEADER: node}) if node else request
    stream, resize_path, tty = await open_console_stream(scoped, endpoint, resource_id, mode, [])
    return await relay_console(request, endpoint_id, stream, resize_path, tty, portainer_protocol=True)


async def handle_websocket_exec(request: web.Request) -> web.WebSocketResponse:
    """Portainer's exec console: ?endpointId=&id=<exec id made with POST /containers/{id}/exec>[&nodeName=];
    frames carry the exec's raw bytes both ways (text frames out), resize with POST /exec/{id}/resize."""
    return await handle_portainer_console(request, "exec_start")


async def handle_websocket_attach(request: web.Request) -> web.WebSocketResponse:
    """Portainer's attach console: ?endpointId=&id=<container id>[&nodeName=]; frames carry the container's raw
    bytes both ways (text frames out)."""
    return await handle_portainer_console(request, "attach")


# ================================================================================================================
# API handlers: system and docs
# ================================================================================================================


@public
async def handle_system_status(request: web.Request) -> web.Response:
    """Version and instance id (public)."""
    return json_response({"Version": VERSION, "InstanceID": request.app[STORE].instance_id})


def version_answer() -> dict:
    """Portainer's versionResponse. Nothing is looked up: an air-gapped host has no release feed to ask, so an
    update is never announced (and, unlike Portainer, no administrator is shown the server's environment)."""
    return {"UpdateAvailable": False, "LatestVersion": "", "ServerVersion": VERSION, "ServerEdition": "CE",
            "DatabaseVersion": VERSION,
            "Build": {"BuildNumber": "", "ImageTag": VERSION, "NodejsVersion": "", "YarnVersion": "",
                      "WebpackVersion": "", "GoVersion": "", "GitCommit": ""}}


async def handle_system_version(request: web.Request) -> web.Response:
    """The server's version (GET /api/system/version; GET /api/status/version is Portainer's older name)."""
    return json_response(version_answer())


def container_platform(app: web.Application) -> str:
    """Portainer's platform name for where the server runs, from the latest snapshot of the local engine."""
    if os.environ.get("PODMAN_MODE") == "1":
        return "Podman"
    environments: Environments = app[ENVIRONMENTS]
    local = [ep for ep in app[STORE].endpoints
             if ep["Type"] == ENDPOINT_DOCKER and str(ep.get("URL", "")).startswith("unix://")]
    for endpoint in sorted(local, key=lambda ep: ep["Id"]):
        snapshot = environments.snapshots.get(endpoint["Id"])
        if snapshot:
            return "Docker Swarm" if snapshot.get("Swarm") else "Docker Standalone"
    return "Docker"


async def handle_system_info(request: web.Request) -> web.Response:
    """Portainer's systemInfoResponse: the platform and how many agent and edge agent environments exist."""
    endpoints = list(request.app[STORE].endpoints)
    return json_response({"platform": container_platform(request.app),
                          "agents": sum(1 for ep in endpoints if ep["Type"] == ENDPOINT_AGENT),
                          "edgeAgents": sum(1 for ep in endpoints if ep["Type"] == ENDPOINT_EDGE)})


async def handle_motd(request: web.Request) -> web.Response:
    """Portainer's message of the day: what an administrator set in the settings' MessageOfTheDay {Title,
    Message} (PUT /api/settings), empty otherwise; never fetched from outside."""
    motd = {"Title": "", "Message": "", **as_dict(current_settings(request.app[STORE]).get("MessageOfTheDay"))}
    title, message = as_text(motd.get("Title")), as_text(motd.get("Message"))
    if not message:
        return json_response({"Title": title, "Message": "", "ContentLayout": None, "Style": "", "Hash": None})
    digest = hashlib.md5(message.encode(), usedforsecurity=False).digest()  # Portainer's libcrypto.HashFromBytes
    return json_response({"Title": title, "Message": message, "ContentLayout": {}, "Style": "",
                          "Hash": base64.b64encode(digest).decode()})


@public
async def handle_openapi(request: web.Request) -> web.Response:
    """An OpenAPI 3 description of this API, generated from the route table."""
    return json_response(openapi_document())


# ================================================================================================================
# API handlers: first admin, login, logout
# ================================================================================================================


def user_view(user: dict) -> dict:
    return {"Id": user["Id"], "Username": user["Username"], "Role": user["Role"],
            "CreationDate": user.get("CreationDate", 0), "TokenIssueAt": user.get("TokenIssueAt", 0),
            "ThemeSettings": user.get("ThemeSettings", {"color": ""})}


def find_user_by_name(store: Store, username: str) -> dict | None:
    wanted = username.lower()
    return next((u for u in store.users if u["Username"].lower() == wanted), None)


async def create_user(store: Store, username: Any, password: Any, role: Any) -> dict:
    if not isinstance(username, str) or not username.strip() or len(username) > 128:
        raise BadRequest("Username must be a non-empty string of at most 128 characters")
    if role not in (ROLE_ADMIN, ROLE_STANDARD):
        raise BadRequest("Role must be 1 (administrator) or 2 (standard user)")
    check_password_strength(password)
    if find_user_by_name(store, username.strip()):
        raise Conflict(f"a user named {username.strip()!r} already exists")
    password_hash = await asyncio.to_thread(hash_password, password)
    if find_user_by_name(store, username.strip()):
        raise Conflict(f"a user named {username.strip()!r} already exists")
    user = store.users.add({"Username": username.strip(), "Role": role, "PasswordHash": password_hash,
                            "CreationDate": now(), "TokenIssueAt": 0})
    await store.commit()
    return user


def admin_exists(store: Store) -> bool:
    return any(u["Role"] == ROLE_ADMIN for u in store.users)


# The payloads of Portainer's login and first-administrator routes.
CREDENTIALS_FIELDS = {"Username": str, "Password": str}


@public
async def handle_admin_check(request: web.Request) -> web.Response:
    """204 when an administrator exists, 404 when the first one is still to be created."""
    if admin_exists(request.app[STORE]):
        return web.Response(status=204)
    raise NotFound("no administrator account exists yet")


@public
async def handle_admin_init(request: web.Request) -> web.Response:
    """Create the first administrator: only while none exists and within the init window after start."""
    store = request.app[STORE]
    body = await read_documented_fields(request, CREDENTIALS_FIELDS)
    if admin_exists(store):
        raise Conflict("an administrator already exists")
    started = request.app[STARTED_AT]
    if time.monotonic() - started > request.app[CONFIG].admin_init_window:
        raise Forbidden("the administrator set-up window has closed; restart portainer.py to create the "
                        "first administrator", "this protects a fresh instance that nobody claimed")
    user = await create_user(store, body.get("Username"), body.get("Password"), ROLE_ADMIN)
    return json_response(user_view(user))


@public
async def handle_auth(request: web.Request) -> web.Response:
    """Log in with {Username, Password}; answers {jwt} and sets an HttpOnly session cookie."""
    address = client_address(request)
    limiter: LoginRateLimit = request.app[LOGIN_LIMIT]
    limiter.check(address)
    body = await read_documented_fields(request, CREDENTIALS_FIELDS)
    username, password = body.get("Username"), body.get("Password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise BadRequest("Username and Password are required")
    limiter.reserve(address, username)
    store = request.app[STORE]
    user = find_user_by_name(store, username)
    valid = await asyncio.to_thread(verify_password, password, user["PasswordHash"] if user else DUMMY_HASH)
    if not user or not valid:
        log.info("failed login for %r from %s", username[:64], address)
        record_auth(request, username, False)
        raise Unauthorized("invalid credentials")
    limiter.succeeded(address, username)
    record_auth(request, user["Username"], True)
    lifetime = parse_duration(store.settings.get("UserSessionTimeout", "8h"))
    token, claims = request.app[SESSIONS].issue(user, lifetime)
    csrf = request.app[SESSIONS].csrf_token(claims)
    response = json_response({"jwt": token}, headers={CSRF_HEADER: csrf})
    response.set_cookie(SESSION_COOKIE, token, max_age=lifetime, httponly=True, samesite="Strict",
                        secure=request.secure, path="/")
    return response


async def handle_logout(request: web.Request) -> web.Response:
    """Revoke the current session token."""
    caller = caller_of(request)
    if caller.claims:
        await request.app[SESSIONS].revoke(caller.claims)
    record_auth(request, caller.user["Username"], True, "logout")
    response = web.Response(status=204)
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


# ================================================================================================================
# API handlers: users and API keys
# ================================================================================================================


def require_self_or_admin(request: web.Request, user_id: int) -> Caller:
    caller = caller_of(request)
    if not caller.is_admin and caller.id != user_id:
        raise Forbidden("you can only see or change your own account")
    return caller


async def handle_users_list(request: web.Request) -> web.Response:
    """All users (administrators and team leaders); a standard user sees only themselves."""
    caller = caller_of(request)
    users = request.app[STORE].users
    # a team leader picks new members from everyone
    everyone = caller.is_admin or is_team_leader(request.app[STORE], caller.id)
    return json_response([user_view(u) for u in users if everyone or u["Id"] == caller.id])


USER_CREATE_FIELDS = {"Username": str, "Password": str, "Role": int}
USER_UPDATE_FIELDS = {"Username": str, "Password": str, "NewPassword": str, "Role": int, "UseCache": bool,
                      "Theme": ANY_JSON}
USER_PASSWORD_FIELDS = {"Password": str, "NewPassword": str}
API_KEY_CREATE_FIELDS = {"password": str, "description": str}


async def handle_user_create(request: web.Request) -> web.Response:
    """Create a user {Username, Password, Role} (administrators)."""
    require_admin(request)
    body = await read_documented_fields(request, USER_CREATE_FIELDS)
    user = await create_user(request.app[STORE], body.get("Username"), body.get("Password"),
                             body.get("Role", ROLE_STANDARD))
    return json_response(user_view(user))


async def handle_user_me(request: web.Request) -> web.Response:
    """The calling user."""
    return json_response(user_view(caller_of(request).user))


async def handle_user_inspect(request: web.Request) -> web.Response:
    """One user (administrators, or the user themselves)."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    return json_response(user_view(request.app[STORE].users.get(user_id)))


async def handle_user_update(request: web.Request) -> web.Response:
    """Change a user's Username, Password or Role; only administrators change roles or others' passwords."""
    user_id = path_id(request)
    caller = require_self_or_admin(request, user_id)
    store = request.app[STORE]
    user = store.users.get(user_id)
    body = await read_documented_fields(request, USER_UPDATE_FIELDS)
    username = field(body, "Username", str, required=False)
    password = field(body, "Password", str, required=False) or field(body, "NewPassword", str, required=False)
    role = field(body, "Role", int, required=False)
    if role is not None and role != user["Role"]:
        if not caller.is_admin:
            raise Forbidden("only administrators can change roles")
        if role not in (ROLE_ADMIN, ROLE_STANDARD):
            raise BadRequest("Role must be 1 (administrator) or 2 (standard user)")
        if user["Role"] == ROLE_ADMIN and sum(u["Role"] == ROLE_ADMIN for u in store.users) == 1:
            raise Conflict("cannot demote the last administrator")
    if username:
        other = find_user_by_name(store, username.strip())
        if other and other["Id"] != user_id:
            raise Conflict(f"a user named {username.strip()!r} already exists")
    if password is not None:
        if not caller.is_admin:
            raise Forbidden("use PUT /api/users/{id}/passwd with your current password to change it")
        check_password_strength(password)
        new_hash = await asyncio.to_thread(hash_password, password)
    if username:
        user["Username"] = username.strip()
    if role is not None:
        user["Role"] = role
    if password is not None:
        user["PasswordHash"] = new_hash
        user["TokenIssueAt"] = time.time()
    await store.commit()
    return json_response(user_view(user))


async def handle_user_password(request: web.Request) -> web.Response:
    """Change your own password {Password, NewPassword}; sessions issued before are invalidated."""
    user_id = path_id(request)
    caller = caller_of(request)
    if caller.id != user_id:
        raise Forbidden("you can only change your own password here")
    body = await read_documented_fields(request, USER_PASSWORD_FIELDS)
    current, new = field(body, "Password", str), field(body, "NewPassword", str)
    check_password_strength(new)
    store = request.app[STORE]
    user = store.users.get(user_id)
    if not await asyncio.to_thread(verify_password, current, user["PasswordHash"]):
        raise Forbidden("current password is wrong")
    user["PasswordHash"] = await asyncio.to_thread(hash_password, new)
    user["TokenIssueAt"] = time.time()
    await store.commit()
    return web.Response(status=204)


async def handle_user_delete(request: web.Request) -> web.Response:
    """Delete a user and their API keys (administrators; never the last administrator)."""
    require_admin(request)
    user_id = path_id(request)
    store = request.app[STORE]
    user = store.users.get(user_id)
    if user["Role"] == ROLE_ADMIN and sum(u["Role"] == ROLE_ADMIN for u in store.users) == 1:
        raise Conflict("cannot delete the last administrator")
    store.users.delete(user_id)
    store.api_keys.delete_where(lambda key: key["UserId"] == user_id)
    store.team_memberships.delete_where(lambda membership: membership["UserID"] == user_id)
    for holder in [*store.endpoints, *endpoint_groups(store)]:
        (holder.get("UserAccessPolicies") or {}).pop(str(user_id), None)
    await store.commit()
    rebuild_api_key_index(request.app)
    return web.Response(status=204)


def api_key_view(key: dict) -> dict:
    return {"id": key["Id"], "userId": key["UserId"], "description": key["Description"],
            "prefix": key["Prefix"], "dateCreated": key["DateCreated"],
            "lastUsed": key.get("_last_used_runtime", key.get("LastUsed", 0))}


def rebuild_api_key_index(app: web.Application) -> None:
    app[API_KEY_INDEX].clear()
    app[API_KEY_INDEX].update({k["Digest"]: k for k in app[STORE].api_keys})


async def handle_token_create(request: web.Request) -> web.Response:
    """Create an API key {password, description} for yourself; the raw key is shown once."""
    user_id = path_id(request)
    caller = caller_of(request)
    if caller.id != user_id:
        raise Forbidden("you can only create API keys for yourself")
    body = await read_documented_fields(request, API_KEY_CREATE_FIELDS)
    password = field(body, "password", str)
    description = field(body, "description", str, required=False, default="")[:256]
    store = request.app[STORE]
    if not await asyncio.to_thread(verify_password, password, caller.user["PasswordHash"]):
        raise Forbidden("password is wrong")
    raw = API_KEY_PREFIX + b64url(secrets.token_bytes(32))
    key = store.api_keys.add({"UserId": user_id, "Description": description, "Prefix": raw[:7],
                              "Digest": api_key_digest(raw), "DateCreated": now(), "LastUsed": 0})
    await store.commit()
    rebuild_api_key_index(request.app)
    return json_response({"rawAPIKey": raw, "apiKey": api_key_view(key)})


async def handle_token_list(request: web.Request) -> web.Response:
    """A user's API keys (never the keys themselves)."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    keys = request.app[STORE].api_keys
    return json_response([api_key_view(k) for k in keys if k["UserId"] == user_id])


async def handle_token_delete(request: web.Request) -> web.Response:
    """Delete one of a user's API keys."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    key_id = path_id(request, "keyId")
    store = request.app[STORE]
    key = store.api_keys.get(key_id)
    if key["UserId"] != user_id:
        raise NotFound(f"API key {key_id} not found")
    store.api_keys.delete(key_id)
    await store.commit()
    rebuild_api_key_index(request.app)
    return web.Response(status=204)


# ================================================================================================================
# API handlers: teams and team memberships (a team leader manages their own team's members)
# ================================================================================================================

TEAM_LEADER, TEAM_MEMBER = 1, 2


def is_team_leader(store: Store, user_id: int, team_id: int | None = None) -> bool:
    return any(m["UserID"] == user_id and m["Role"] == TEAM_LEADER and team_id in (None, m["TeamID"])
               for m in store.team_memberships)


def team_view(team: dict) -> dict:
    return {"Id": team["Id"], "Name": team["Name"]}


def membership_view(membership: dict) -> dict:
    return {"Id": membership["Id"], "UserID": membership["UserID"], "TeamID": membership["TeamID"],
            "Role": membership["Role"]}


def check_team_name(store: Store, name: Any, team_id: int = 0) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise BadRequest("Name must be a non-empty string of at most 128 characters")
    if any(t["Name"].lower() == name.strip().lower() and t["Id"] != team_id for t in store.teams):
        raise Conflict(f"a team named {name.strip()!r} already exists")
    return name.strip()


def add_membership(store: Store, user_id: int, team_id: int, role: int) -> dict:
    store.users.get(user_id)
    store.teams.get(team_id)
    if role not in (TEAM_LEADER, TEAM_MEMBER):
        raise BadRequest("Role must be 1 (team leader) or 2 (member)")
    if any(m["UserID"] == user_id and m["TeamID"] == team_id for m in store.team_memberships):
        raise Conflict(f"user {user_id} is already a member of team {team_id}")
    return store.team_memberships.add({"UserID": user_id, "TeamID": team_id, "Role": role})


async def handle_teams_list(request: web.Request) -> web.Response:
    """All teams (administrators); other users see the teams they belong to."""
    store, caller = request.app[STORE], caller_of(request)
    mine = user_team_ids(store, caller.id)
    return json_response([team_view(t) for t in store.teams.in_id_order()
                          if caller.is_admin or t["Id"] in mine])


TEAM_FIELDS = {"Name": str, "TeamLeaders": [int]}


async def handle_team_create(request: web.Request) -> web.Response:
    """Create a team {Name, TeamLeaders: [user ids]} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    body = await read_documented_fields(request, TEAM_FIELDS)
    name = check_team_name(store, body.get("Name"))
    leaders = field(body, "TeamLeaders", list, required=False, default=[])
    for user_id in leaders:
        if not isinstance(user_id, int):
            raise BadRequest("TeamLeaders must be a list of user ids")
        store.users.get(user_id)
    team = store.teams.add({"Name": name})
    for user_id in dict.fromkeys(leaders):
        add_membership(store, user_id, team["Id"], TEAM_LEADER)
    await store.commit()
    return json_response(team_view(team))


async def handle_team_inspect(request: web.Request) -> web.Response:
    """One team (administrators and its members)."""
    store, caller = request.app[STORE], caller_of(request)
    team = store.teams.get(path_id(request))
    if not caller.is_admin and team["Id"] not in user_team_ids(store, caller.id):
        raise Forbidden("you are not a member of this team")
    return json_response(team_view(team))


async def handle_team_update(request: web.Request) -> web.Response:
    """Rename a team {Name} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    team = store.teams.get(path_id(request))
    body = await read_documented_fields(request, TEAM_FIELDS)
    team["Name"] = check_team_name(store, body.get("Name"), team["Id"])
    await store.commit()
    return json_response(team_view(team))


async def handle_team_delete(request: web.Request) -> web.Response:
    """Delete a team, its memberships and its access to environments (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    team = store.teams.delete(path_id(request))
    store.team_memberships.delete_where(lambda membership: membership["TeamID"] == team["Id"])
    for holder in [*store.endpoints, *endpoint_groups(store)]:
        (holder.get("TeamAccessPolicies") or {}).pop(str(team["Id"]), None)
    await store.commit()
    return web.Response(status=204)


async def handle_team_memberships_of_team(request: web.Request) -> web.Response:
    """The memberships of one team (administrators and the team's members)."""
    store, caller = request.app[STORE], caller_of(request)
    team = store.teams.get(path_id(request))
    if not caller.is_admin and team["Id"] not in user_team_ids(store, caller.id):
        raise Forbidden("you are not a member of this team")
    return json_response([membership_view(m) for m in store.team_memberships
                          if m["TeamID"] == team["Id"]])


async def handle_user_memberships(request: web.Request) -> web.Response:
    """The team memberships of one user (administrators, or the user themselves)."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    store = request.app[STORE]
    store.users.get(user_id)
    return json_response([membership_view(m) for m in store.team_memberships
                          if m["UserID"] == user_id])


ROLE_DESCRIPTIONS = {
    ENV_ROLE_ADMIN: "Full control of the environment, beyond its security settings",
    ENV_ROLE_OPERATOR: "Operate every resource: start, stop, restart, kill, pause, logs, console; no create or remove",
    ENV_ROLE_HELPDESK: "Read every resource and its logs; no console, no change",
    ENV_ROLE_STANDARD: "Create and use resources of their own and their teams, within the security settings",
    ENV_ROLE_READ_ONLY: "Read resources of their own and their teams and their logs",
}


async def handle_roles_list(request: web.Request) -> web.Response:
    """The roles a user or team can hold on an environment, strongest first."""
    return json_response([{"Id": role, "Name": ENV_ROLE_NAMES[role], "Description": ROLE_DESCRIPTIONS[role],
                           "Priority": role, "Actions": sorted(ROLE_ACTIONS[role])} for role in sorted(ROLE_ACTIONS)])


def require_team_manager(request: web.Request, team_id: int, role: int) -> None:
    """Administrators manage every team; a team leader adds and removes plain members of their own team."""
    store, caller = request.app[STORE], caller_of(request)
    if caller.is_admin:
        return
    if not is_team_leader(store, caller.id, team_id):
        raise Forbidden("only administrators and the team's leaders manage its members")
    if role == TEAM_LEADER:
        raise Forbidden("only administrators make team leaders")


async def handle_memberships_list(request: web.Request) -> web.Response:
    """All team memberships (administrators); a team leader sees those of the teams they lead."""
    store, caller = request.app[STORE], caller_of(request)
    return json_response([membership_view(m) for m in store.team_memberships
                          if caller.is_admin or is_team_leader(store, caller.id, m["TeamID"])])


MEMBERSHIP_FIELDS = {"UserID": int, "TeamID": int, "Role": int}


async def handle_membership_create(request: web.Request) -> web.Response:
    """Add a user to a team {UserID, TeamID, Role: 1 leader | 2 member}."""
    store = request.app[STORE]
    body = await read_documented_fields(request, MEMBERSHIP_FIELDS)
    user_id, team_id = field(body, "UserID", int), field(body, "TeamID", int)
    role = field(body, "Role", int, required=False, default=TEAM_MEMBER)
    require_team_manager(request, team_id, role)
    membership = add_membership(store, user_id, team_id, role)
    await store.commit()
    return json_response(membership_view(membership))


async def handle_membership_update(request: web.Request) -> web.Response:
    """Change a membership's role {Role} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    membership = store.team_memberships.get(path_id(request))
    body = await read_documented_fields(request, MEMBERSHIP_FIELDS)
    role = field(body, "Role", int)
    if role not in (TEAM_LEADER, TEAM_MEMBER):
        raise BadRequest("Role must be 1 (team leader) or 2 (member)")
    membership["Role"] = role
    await store.commit()
    return json_response(membership_view(membership))


async def handle_membership_delete(request: web.Request) -> web.Response:
    """Remove a user from a team (administrators, or a leader of that team for plain members)."""
    store = request.app[STORE]
    membership = store.team_memberships.get(path_id(request))
    require_team_manager(request, membership["TeamID"], membership["Role"])
    store.team_memberships.delete(membership["Id"])
    await store.commit()
    return web.Response(status=204)


# ================================================================================================================
# API handlers: resource controls (an administrator shares a resource, or keeps it to administrators)
# ================================================================================================================


def resource_control_view(control: dict) -> dict:
    return {k: control[k] for k in ("Id", "ResourceId", "SubResourceIds", "Type", "UserAccesses", "TeamAccesses",
                                    "Public", "AdministratorsOnly", "System")}


def resource_control_fields(store: Store, body: dict, control: dict) -> None:
    """Users, Teams, Public, AdministratorsOnly from a request body into a resource control, checked."""
    users = field(body, "Users", list, required=False, default=None)
    teams = field(body, "Teams", list, required=False, default=None)
    if users is not None:
        for user_id in users:
            if not isinstance(user_id, int):
                raise BadRequest("Users must be a list of user ids")
            store.users.get(user_id)
        control["UserAccesses"] = [{"UserId": u, "AccessLevel": 1} for u in dict.fromkeys(users)]
    if teams is not None:
        for team_id in teams:
            if not isinstance(team_id, int):
                raise BadRequest("Teams must be a list of team ids")
            store.teams.get(team_id)
        control["TeamAccesses"] = [{"TeamId": t, "AccessLevel": 1} for t in dict.fromkeys(teams)]
    for name in ("Public", "AdministratorsOnly"):
        value = field(body, name, bool, required=False)
        if value is not None:
            control[name] = value
    if control["Public"] and control["AdministratorsOnly"]:
        raise BadRequest("a resource cannot be both Public and AdministratorsOnly")


async def handle_resource_controls_list(request: web.Request) -> web.Response:
    """Every resource control (administrators)."""
    require_admin(request)
    return json_response([resource_control_view(rc)
                          for rc in request.app[STORE].resource_controls])


RESOURCE_CONTROL_FIELDS = {"ResourceID": str, "Type": int, "Users": [int], "Teams": [int], "Public": bool,
                           "AdministratorsOnly": bool, "SubResourceIDs": [str]}


async def handle_resource_control_create(request: web.Request) -> web.Response:
    """Share a resource {ResourceID, Type (1 container, 2 service, 3 volume, 4 network, 6 stack: ResourceID
    "<environment id>_<stack name>"), Users, Teams, Public, AdministratorsOnly} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    body = await read_documented_fields(request, RESOURCE_CONTROL_FIELDS)
    resource_id = field(body, "ResourceID", str)
    kind = field(body, "Type", int)
    if kind not in (*RESOURCE_CONTROL_TYPES.values(), STACK_RESOURCE_CONTROL):
        raise BadRequest("Type must be 1 (container), 2 (service), 3 (volume), 4 (network) or 6 (stack)")
    if any(rc["Type"] == kind and rc["ResourceId"] == resource_id for rc in store.resource_controls):
        raise Conflict(f"a resource control for {resource_id} already exists; change it instead")
    control = {"Id": 0, "ResourceId": resource_id, "SubResourceIds": [], "Type": kind, "UserAccesses": [],
               "TeamAccesses": [], "Public": False, "AdministratorsOnly": False, "System": False}
    resource_control_fields(store, body, control)
    control["Id"] = store.resource_controls.new_id()
    store.resource_controls.add(control)
    await store.commit()
    return json_response(resource_control_view(control))


async def handle_resource_control_update(request: web.Request) -> web.Response:
    """Change who may use a resource {Users, Teams, Public, AdministratorsOnly} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    control = store.resource_controls.get(path_id(request))
    body = await read_documented_fields(request, RESOURCE_CONTROL_FIELDS)
    changed = copy.deepcopy(control)
    resource_control_fields(store, body, changed)
    control.update(changed)
    await store.commit()
    return json_response(resource_control_view(control))


async def handle_resource_control_delete(request: web.Request) -> web.Response:
    """Remove a resource control; the resource's ownership labels decide again (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    store.resource_controls.delete(path_id(request))
    await store.commit()
    return web.Response(status=204)


# ================================================================================================================
# API handlers: environments (endpoints)
# ================================================================================================================

ENDPOINT_URL_SCHEMES = ("unix", "tcp", "http", "https")


def normalise_docker_url(url: str, creation_type: int) -> str:
    url = url.strip()
    if creation_type == ENDPOINT_AGENT:
        if "://" not in url:
            url = "tcp://" + url
        parsed = urllib.parse.urlsplit(url)
        if not parsed.hostname:
            raise BadRequest(f"invalid agent URL {url!r}, expected host:port")
        return f"tcp://{parsed.hostname}:{parsed.port or 9001}"
    if "://" not in url:
        url = "tcp://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ENDPOINT_URL_SCHEMES:
        raise BadRequest(f"invalid URL scheme {parsed.scheme!r}", "use unix:///path or tcp://host:port")
    if parsed.scheme == "unix" and not parsed.path:
        raise BadRequest("a unix URL needs a socket path, e.g. unix:///var/run/docker.sock")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise BadRequest(f"invalid URL {url!r}: no host")
    return url


# A JSON body for POST /api/endpoints (Portainer itself takes a multipart form: see read_endpoint_form).
ENDPOINT_CREATE_FIELDS = {"Name": str, "EndpointCreationType": (int, str), "URL": str, "PublicURL": str,
                          "GroupID": (int, str), "TagIds": [int], "TLS": (bool, str), "TLSSkipVerify": (bool, str),
                          "AgentSecret": str}


async def read_endpoint_form(request: web.Request) -> tuple[dict, dict[str, bytes]]:
    """Portainer creates environments from a multipart form; JSON is accepted too. Returns fields and files."""
    if request.content_type.startswith("multipart/") or request.content_type == "application/x-www-form-urlencoded":
        fields: dict = {}
        files: dict[str, bytes] = {}
        try:
            post = await request.post()
        except MALFORMED_FORM_ERRORS as exc:
            raise BadRequest("malformed form body", str(exc) or "a multipart body needs a boundary") from None
        for name, value in post.items():
            if hasattr(value, "file"):
                files[name] = value.file.read(1024 * 1024)
            else:
                fields[name] = value
        return fields, files
    return await read_documented_fields(request, ENDPOINT_CREATE_FIELDS), {}


def form_bool(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "on", "yes")


def form_int(fields: dict, name: str, default: int | None = None) -> int | None:
    value = fields.get(name, default)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"field {name!r} must be an integer") from None


async def handle_endpoint_create(request: web.Request) -> web.Response:
    """Add an environment: EndpointCreationType 1 (Docker socket/API), 2 (agent) or 4 (edge agent)."""
    require_admin(request)
    fields, files = await read_endpoint_form(request)
    name = fields.get("Name")
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("Name is required")
    creation_type = form_int(fields, "EndpointCreationType", ENDPOINT_DOCKER)
    kinds = request.app[ENVIRONMENTS].kinds
    kind = kinds.get(creation_type)
    if kind is None:
        raise BadRequest(f"EndpointCreationType {creation_type} is not supported", f"supported: {sorted(kinds)}")
    store = request.app[STORE]
    if any(ep["Name"].lower() == name.strip().lower() for ep in store.endpoints):
        raise Conflict(f"an environment named {name.strip()!r} already exists")
    endpoint = {
        "Id": 0, "Name": name.strip(), "Type": creation_type, "URL": "", "PublicURL": fields.get("PublicURL", ""),
        "GroupId": form_int(fields, "GroupID", 1), "TagIds": [], "UserAccessPolicies": {},
        "TeamAccessPolicies": {}, "SecuritySettings": dict(DEFAULT_SECURITY_SETTINGS), "CreationDate": now(),
        "TLSConfig": {"TLS": form_bool(fields.get("TLS")), "TLSSkipVerify": form_bool(fields.get("TLSSkipVerify"))},
    }
    get_endpoint_group(store, endpoint["GroupId"], status=BadRequest)
    tag_ids = fields.get("TagIds")
    if isinstance(tag_ids, list):
        endpoint["TagIds"] = [t for t in tag_ids if isinstance(t, int)]
    await kind.create(request, endpoint, fields, files)
    endpoint["Id"] = store.endpoints.new_id()
    for name_in_form, file_name in (("TLSCACertFile", "ca.pem"), ("TLSCertFile", "cert.pem"),
                                    ("TLSKeyFile", "key.pem")):
        if name_in_form in files:
            directory = request.app[ENVIRONMENTS].tls_directory(endpoint["Id"])
            os.makedirs(directory, mode=0o700, exist_ok=True)
            write_private_file(os.path.join(directory, file_name), files[name_in_form])
    store.endpoints.add(endpoint)
    await store.commit()
    environments = request.app[ENVIRONMENTS]
    await environments.snapshot(endpoint["Id"])
    view = environments.public_view(endpoint)
    kind.answer_created(request, endpoint, view)
    return json_response(view)


class DockerApiKind(EnvironmentKind):
    """A Docker engine's own API: its local socket (unix://) or TCP, with TLS files when given."""

    type = ENDPOINT_DOCKER

    def connector(self, endpoint: dict) -> DockerConnector:
        return SocketConnector(endpoint, self.app[ENVIRONMENTS].tls_directory(endpoint["Id"]))

    async def create(self, request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
        url = fields.get("URL")
        if not isinstance(url, str) or not url.strip():
            raise BadRequest("URL is required, e.g. unix:///var/run/docker.sock or tcp://10.0.0.5:2375")
        endpoint["URL"] = normalise_docker_url(url, ENDPOINT_DOCKER)

    def check_update(self, endpoint: dict, changes: dict) -> None:
        if "URL" in changes:
            changes["URL"] = normalise_docker_url(changes["URL"], ENDPOINT_DOCKER)


class AgentKind(EnvironmentKind):
    """A Portainer agent: TLS to the agent, whose certificate is pinned at creation; every request is signed."""

    type = ENDPOINT_AGENT

    def __init__(self, app: web.Application):
        super().__init__(app)
        self.signer = app[AGENT_SIGNER] = shared.RequestSigner(shared.load_or_create_signing_key(
            os.path.join(app[STORE].directory, "agent_signature.pem")))

    def connector(self, endpoint: dict) -> DockerConnector:
        return AgentConnector(endpoint, self.signer, self.app[CONFIG].agent_secret)

    async def create(self, request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
        """Reach the agent, pin its certificate's fingerprint (trusted from now on), check it accepts us."""
        url = fields.get("URL")
        if not isinstance(url, str) or not url.strip():
            raise BadRequest("URL is required: the agent's host:port, e.g. 10.0.0.5:9001")
        endpoint["URL"] = normalise_docker_url(url, ENDPOINT_AGENT)
        try:
            reader, writer, fingerprint = await open_agent_stream(endpoint["URL"])
        except shared.DockerUnreachable as exc:
            raise BadGateway(f"cannot reach an agent at {endpoint['URL']}", str(exc)) from None
        connection = shared.HttpConnection(reader, writer)
        try:
            await connection.send_head("GET", "/ping", [("Host", "agent"), ("Connection", "close")])
            status, _, headers = await asyncio.wait_for(connection.read_head(), 10)
        except (shared.DockerUnreachable, ConnectionError, asyncio.TimeoutError) as exc:
            raise BadGateway(f"the agent at {endpoint['URL']} did not answer", str(exc)) from None
        finally:
            connection.close()
        if status != 204 or "Portainer-Agent" not in headers:
            raise BadRequest(f"{endpoint['URL']} is not a Portainer agent", f"GET /ping answered {status}")
        endpoint["Agent"] = {"Version": headers["Portainer-Agent"], "CertificateFingerprint": fingerprint}
        secret = fields.get("AgentSecret")
        if isinstance(secret, str) and secret:
            endpoint["_AgentSecret"] = secret
        connector = AgentConnector(endpoint, self.signer, request.app[CONFIG].agent_secret)
        try:
            await connector.request_json("GET", "/version", timeout=15)
        except ApiError as exc:
            if exc.status == 403:
                raise Forbidden(f"the agent refused this server: {exc.message}", "set the same AGENT_SECRET on "
                                "both sides, or restart the agent to pair it anew") from None
            raise
        finally:
            connector.close()

    def check_update(self, endpoint: dict, changes: dict) -> None:
        if "URL" in changes:
            changes["URL"] = normalise_docker_url(changes["URL"], ENDPOINT_AGENT)


def visible_endpoints(request: web.Request) -> list[dict]:
    store, caller = request.app[STORE], caller_of(request)
    return [ep for ep in store.endpoints if can_access_endpoint(store, caller, ep)]


async def handle_endpoints_list(request: web.Request) -> web.Response:
    """Environments the caller may use; ?search= filters by name or URL, ?start=&limit= pages."""
    endpoints = sorted(visible_endpoints(request), key=lambda ep: ep["Id"])
    search = request.query.get("search", "").lower()
    if search:
        endpoints = [ep for ep in endpoints if search in ep["Name"].lower() or search in ep.get("URL", "").lower()]
    types = request.query.getall("types", [])
    if types:
        endpoints = [ep for ep in endpoints if str(ep["Type"]) in types]
    group_ids = request.query.getall("groupIds[]", []) + request.query.getall("groupIds", [])
    if group_ids:
        endpoints = [ep for ep in endpoints if str(ep.get("GroupId", UNASSIGNED_GROUP_ID)) in group_ids]
    total = len(endpoints)
    start = query_int(request, "start", 0)
    limit = query_int(request, "limit", 0)
    endpoints = endpoints[start:start + limit] if limit else endpoints[start:]
    environments = request.app[ENVIRONMENTS]
    return json_response([environments.public_view(ep) for ep in endpoints], headers={"X-Total-Count": str(total)})


def query_int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()):
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    return int(raw)


async def handle_endpoint_inspect(request: web.Request) -> web.Response:
    """One environment with its status and latest snapshot."""
    endpoint = endpoint_for_caller(request, path_id(request))
    return json_response(request.app[ENVIRONMENTS].public_view(endpoint))


def check_access_policies(name: str, policies: dict) -> None:
    """UserAccessPolicies / TeamAccessPolicies: {"<id>": {"RoleId": n}}, as Portainer stores them."""
    for key, value in policies.items():
        if not str(key).isdigit() or not isinstance(value, dict):
            raise BadRequest(f"{name} must map ids to objects such as {{\"RoleId\": 0}}")
        if value.get("RoleId", 0) not in (0, *ROLE_ACTIONS):
            raise BadRequest("RoleId must be one of 1 (environment administrator), 2 (operator), "
                             "3 (helpdesk), 4 (standard user), 5 (read-only user)")


ENDPOINT_EDITABLE = {"Name": str, "PublicURL": str, "GroupID": int, "TagIds": list, "UserAccessPolicies": dict,
                     "TeamAccessPolicies": dict, "URL": str, "TLS": bool, "TLSSkipVerify": bool,
                     IMAGE_CHECK_SETTING: bool}
# SecuritySettings (ours, not in Portainer's payload) keeps its exact switch names: a mistyped one is refused,
# never silently left as it was.
ENDPOINT_UPDATE_FIELDS = {**ENDPOINT_EDITABLE, "TagIds": [int], "SecuritySettings": dict}


async def handle_endpoint_update(request: web.Request) -> web.Response:
    """Change an environment's name, URL, TLS options, tags or access policies (administrators)."""
    require_admin(request)
    endpoint_id = path_id(request)
    environments = request.app[ENVIRONMENTS]
    endpoint = request.app[STORE].endpoints.get(endpoint_id)
    body = await read_documented_fields(request, ENDPOINT_UPDATE_FIELDS)
    changes = {}
    for name, field_type in ENDPOINT_EDITABLE.items():
        value = field(body, name, field_type, required=False)
        if value is not None:
            changes[name] = value
    if "Name" in changes:
        if not changes["Name"].strip():
            raise BadRequest("Name cannot be empty")
        store = request.app[STORE]
        if any(ep["Name"].lower() == changes["Name"].strip().lower() and ep["Id"] != endpoint_id
               for ep in store.endpoints):
            raise Conflict(f"an environment named {changes['Name'].strip()!r} already exists")
    kind = environments.kinds.get(endpoint["Type"])
    if kind is not None:
        kind.check_update(endpoint, changes)
    for policies in ("UserAccessPolicies", "TeamAccessPolicies"):
        if policies in changes:
            check_access_policies(policies, changes[policies])
    if "GroupID" in changes:
        get_endpoint_group(request.app[STORE], changes["GroupID"], status=BadRequest)
    security = body.get("SecuritySettings")
    if security is not None:
        if not isinstance(security, dict) or any(k not in DEFAULT_SECURITY_SETTINGS or not isinstance(v, bool)
                                                 for k, v in security.items()):
            raise BadRequest("SecuritySettings holds only these true/false switches: "
                             + ", ".join(DEFAULT_SECURITY_SETTINGS))
    # all input checked: apply
    for name in ("Name", "PublicURL", "URL", "UserAccessPolicies", "TeamAccessPolicies"):
        if name in changes:
            endpoint[name] = changes[name].strip() if isinstance(changes[name], str) else changes[name]
    if "GroupID" in changes:
        endpoint["GroupId"] = changes["GroupID"]
    if "TagIds" in changes:
        endpoint["TagIds"] = [t for t in changes["TagIds"] if isinstance(t, int)]
    for name in ("TLS", "TLSSkipVerify"):
        if name in changes:
            endpoint.setdefault("TLSConfig", {})[name] = changes[name]
    if security is not None:
        endpoint["SecuritySettings"] = {**DEFAULT_SECURITY_SETTINGS, **endpoint.get("SecuritySettings", {}),
                                        **security}
    if IMAGE_CHECK_SETTING in changes:
        endpoint[IMAGE_CHECK_SETTING] = changes[IMAGE_CHECK_SETTING]
        request.app[IMAGE_UPDATES].forget_environment(endpoint_id)
    await request.app[STORE].commit()
    environments.forget(endpoint_id)
    view = environments.public_view(endpoint)
    if IMAGE_CHECK_SETTING in changes:
        view["ImageNotificationRegistries"] = await image_check_registries(request.app, endpoint_id)
    return json_response(view)


async def handle_endpoint_delete(request: web.Request) -> web.Response:
    """Remove an environment from this server (nothing on the engine is touched)."""
    require_admin(request)
    await delete_endpoint(request.app, path_id(request))
    return web.Response(status=204)


async def delete_endpoint(app: web.Application, endpoint_id: int) -> None:
    environments = app[ENVIRONMENTS]
    endpoint = app[STORE].endpoints.delete(endpoint_id)
    await app[STORE].commit()
    kind = environments.kinds.get(endpoint["Type"])
    if kind is not None:
        kind.removed(endpoint)
    environments.forget(endpoint_id)
    environments.status.pop(endpoint_id, None)
    environments.snapshots.pop(endpoint_id, None)
    environments.snapshot_attempted.pop(endpoint_id, None)


async def handle_endpoints_delete_batch(request: web.Request) -> web.Response:
    """Remove several environments, {"endpoints": [{"id": 1, "deleteCluster": false}]}: 204 when all went,
    else 207 with {"deleted": [...], "errors": [...]} (administrators)."""
    require_admin(request)
    items = field(await read_json_object(request), "endpoints", list, required=False, default=[])
    if not items:
        raise BadRequest("Invalid request payload",
                         "invalid request payload. You must provide a list of environments to delete")
    ids = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each item of endpoints must be an object such as {\"id\": 1}")
        ids.append(field(item, "id", int))
        field(item, "deleteCluster", bool, required=False)
    answer = {"deleted": [], "errors": []}
    for endpoint_id in ids:
        try:
            await delete_endpoint(request.app, endpoint_id)
        except NotFound:
            log.warning("batch removal: environment %s not found", endpoint_id)
            answer["errors"].append(endpoint_id)
            continue
        answer["deleted"].append(endpoint_id)
    if answer["errors"]:
        return json_response(answer, status=207)
    return web.Response(status=204)


async def handle_endpoint_settings_update(request: web.Request) -> web.Response:
    """Portainer's security switches of one environment, {"allowBindMountsForRegularUsers": true, ...}; a switch
    left out keeps its value (administrators)."""
    require_admin(request)
    endpoint_id = path_id(request)
    environments = request.app[ENVIRONMENTS]
    body = await read_json_object(request)
    endpoint = request.app[STORE].endpoints.get(endpoint_id)
    changes = {name: value for name in DEFAULT_SECURITY_SETTINGS
               if (value := field(body, name, bool, required=False)) is not None}
    gpu_management = field(body, "enableGPUManagement", bool, required=False)
    gpus = field(body, "gpus", list, required=False)
    if gpus is not None and not all(isinstance(g, dict) and all(isinstance(v, str) for v in g.values())
                                    for g in gpus):
        raise BadRequest("gpus must be a list of {\"name\": ..., \"value\": ...} pairs")
    endpoint["SecuritySettings"] = {**endpoint_security_settings(endpoint), **changes}
    if gpu_management is not None:
        endpoint["EnableGPUManagement"] = gpu_management
    if gpus is not None:
        endpoint["Gpus"] = gpus
    await request.app[STORE].commit()
    return json_response(environments.public_view(endpoint))


async def handle_endpoint_snapshot(request: web.Request) -> web.Response:
    """Take a snapshot of one environment now."""
    endpoint = endpoint_for_caller(request, path_id(request))
    environments = request.app[ENVIRONMENTS]
    await environments.snapshot(endpoint["Id"])
    return json_response(environments.public_view(endpoint))


async def handle_endpoints_snapshot(request: web.Request) -> web.Response:
    """Take a snapshot of every environment now (administrators)."""
    require_admin(request)
    await request.app[ENVIRONMENTS].snapshot_all()
    return web.Response(status=204)


# ================================================================================================================
# API handlers: environment groups (their access policies apply to every environment in them)
# ================================================================================================================


def get_endpoint_group(store: Store, group_id: int, status: type[ApiError] = NotFound) -> dict:
    """The group, or `status` (404, or 400 where a body names it)."""
    group = endpoint_groups(store).find(group_id)
    if group is None:
        raise status(f"environment group {group_id} not found")
    return group


def checked_tag_ids(store: Store, body: dict, name: str = "TagIDs") -> list[int] | None:
    """A list of existing tag ids, or None when the body has none."""
    if field(body, name, list, required=False) is None:
        return None
    tag_ids = id_list(body, name)
    missing = [t for t in tag_ids if t not in store.tags]
    if missing:
        raise BadRequest(f"no such tags: {missing}")
    return tag_ids


def endpoint_group_description(body: dict) -> str:
    return field(body, "Description", str, required=False, default="")


async def handle_endpoint_groups_list(request: web.Request) -> web.Response:
    """Environment groups: every one for an administrator, else those the caller or their teams have access to."""
    store, caller = request.app[STORE], caller_of(request)
    groups = endpoint_groups(store).in_id_order()
    if not caller.is_admin:
        team_ids = {str(t) for t in user_team_ids(store, caller.id)}
        groups = [g for g in groups if str(caller.id) in (g.get("UserAccessPolicies") or {})
                  or team_ids & set(g.get("TeamAccessPolicies") or {})]
    return json_response(groups)


async def handle_endpoint_group_create(request: web.Request) -> web.Response:
    """Create an environment group {Name, Description, AssociatedEndpoints, TagIDs} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    body = await read_json_object(request)
    name = field(body, "Name", str, required=False, default="").strip()
    if not name:
        raise BadRequest("Invalid request payload", "invalid environment group name")
    associated = id_list(body, "AssociatedEndpoints")
    tag_ids = checked_tag_ids(store, body) or []
    group = endpoint_groups(store).add({
        "Name": name, "Description": endpoint_group_description(body),
        "UserAccessPolicies": {}, "TeamAccessPolicies": {}, "TagIds": tag_ids, "Labels": []})
    group_id = group["Id"]
    for endpoint_id in associated:  # unknown ids are skipped, as Portainer does
        endpoint = store.endpoints.find(endpoint_id)
        if endpoint is not None:
            endpoint["GroupId"] = group_id
    await store.commit()
    return json_response(group)


async def handle_endpoint_group_inspect(request: web.Request) -> web.Response:
    """One environment group (administrators)."""
    require_admin(request)
    return json_response(get_endpoint_group(request.app[STORE], path_id(request)))


async def handle_endpoint_group_update(request: web.Request) -> web.Response:
    """Change a group's name, description, tags or access policies (administrators); empty fields are kept."""
    require_admin(request)
    store = request.app[STORE]
    group = get_endpoint_group(store, path_id(request))
    body = await read_json_object(request)
    name = field(body, "Name", str, required=False, default="").strip()
    description = endpoint_group_description(body)
    tag_ids = checked_tag_ids(store, body)
    policies = {}
    for kind in ("UserAccessPolicies", "TeamAccessPolicies"):
        value = field(body, kind, dict, required=False)
        if value is not None:
            check_access_policies(kind, value)
            policies[kind] = {str(k): v for k, v in value.items()}
    if name:
        group["Name"] = name
    if description:
        group["Description"] = description
    if tag_ids is not None:
        group["TagIds"] = tag_ids
    group.update(policies)
    await store.commit()
    return json_response(group)


async def handle_endpoint_group_delete(request: web.Request) -> web.Response:
    """Delete a group; its environments become unassigned (administrators; never group 1, "Unassigned")."""
    require_admin(request)
    group_id = path_id(request)
    if group_id == UNASSIGNED_GROUP_ID:
        raise Forbidden("Unable to remove the default 'Unassigned' group")
    store = request.app[STORE]
    get_endpoint_group(store, group_id)
    endpoint_groups(store).delete(group_id)
    for endpoint in store.endpoints:
        if endpoint.get("GroupId") == group_id:
            endpoint["GroupId"] = UNASSIGNED_GROUP_ID
    await store.commit()
    return web.Response(status=204)


async def set_endpoint_group(request: web.Request, group_id: int) -> web.Response:
    store = request.app[STORE]
    get_endpoint_group(store, path_id(request))
    endpoint = request.app[STORE].endpoints.get(path_id(request, "endpointId"))
    endpoint["GroupId"] = group_id
    await store.commit()
    return web.Response(status=204)


async def handle_endpoint_group_add_endpoint(request: web.Request) -> web.Response:
    """Move an environment into this group (administrators)."""
    require_admin(request)
    return await set_endpoint_group(request, path_id(request))


async def handle_endpoint_group_remove_endpoint(request: web.Request) -> web.Response:
    """Take an environment out of this group: it becomes unassigned (administrators)."""
    require_admin(request)
    return await set_endpoint_group(request, UNASSIGNED_GROUP_ID)


# ================================================================================================================
# API handlers: tags (labels for environments; dynamic edge groups select environments by them)
# ================================================================================================================


def tag_view(tag: dict, store: Store) -> dict:
    endpoints = {str(ep["Id"]): True for ep in store.endpoints if tag["ID"] in ep.get("TagIds", [])}
    groups = {str(g["Id"]): True for g in endpoint_groups(store) if tag["ID"] in g.get("TagIds", [])}
    return {"ID": tag["ID"], "Name": tag["Name"], "Endpoints": endpoints, "EndpointGroups": groups}


async def handle_tags_list(request: web.Request) -> web.Response:
    """Every tag, with the environments that carry it."""
    store = request.app[STORE]
    return json_response([tag_view(t, store) for t in store.tags.in_id_order()])


TAG_FIELDS = {"Name": str}


async def handle_tag_create(request: web.Request) -> web.Response:
    """Create a tag {Name} (administrators)."""
    require_admin(request)
    name = field(await read_documented_fields(request, TAG_FIELDS), "Name", str).strip()
    if not name or len(name) > 128:
        raise BadRequest("Name must be 1 to 128 characters")
    store = request.app[STORE]
    if any(t["Name"].lower() == name.lower() for t in store.tags):
        raise Conflict(f"a tag named {name!r} already exists")
    tag = store.tags.add({"Name": name})
    await store.commit()
    return json_response(tag_view(tag, store))


async def handle_tag_delete(request: web.Request) -> web.Response:
    """Delete a tag and take it off every environment and edge group (administrators)."""
    require_admin(request)
    tag_id = path_id(request)
    store = request.app[STORE]
    store.tags.delete(tag_id)
    for holder in [*store.endpoints, *store.edge_groups, *endpoint_groups(store)]:
        if tag_id in (holder.get("TagIds") or []):
            holder["TagIds"] = [t for t in holder["TagIds"] if t != tag_id]
    await store.commit()
    return web.Response(status=204)


# ================================================================================================================
# API handlers: settings
# ================================================================================================================

# The settings PUT /api/settings changes; the rest of Portainer's settings object is accepted and ignored.
SETTINGS_FIELDS = {"UserSessionTimeout": str, "EnableTelemetry": bool, "LogoURL": str, "SnapshotInterval": str,
                   "EdgeAgentCheckinInterval": int, "ActivityLogRetentionDays": int, "TemplatesURL": str,
                   "MessageOfTheDay": {"Title": str, "Message": str}}
MAX_MESSAGE_OF_THE_DAY = 10_000


def current_settings(store: Store) -> dict:
    return {**DEFAULT_SETTINGS, **store.settings}


async def handle_settings_get(request: web.Request) -> web.Response:
    """Server settings (administrators)."""
    require_admin(request)
    return json_response(current_settings(request.app[STORE]))


@public
async def handle_settings_public(request: web.Request) -> web.Response:
    """The settings the login page needs (public)."""
    settings = current_settings(request.app[STORE])
    return json_response({"LogoURL": settings["LogoURL"], "AuthenticationMethod": settings["AuthenticationMethod"],
                          "EnableTelemetry": settings["EnableTelemetry"] and not request.app[CONFIG].no_analytics,
                          "AnalyticsAvailable": not request.app[CONFIG].no_analytics})


async def handle_settings_update(request: web.Request) -> web.Response:
    """Change settings (administrators): Portainer's settings object, keys matched as Portainer matches them;
    settings this server does not have are ignored, a wrong type is refused."""
    require_admin(request)
    changes = await read_documented_fields(request, SETTINGS_FIELDS)
    if "MessageOfTheDay" in changes:
        motd = {"Title": "", "Message": "", **changes["MessageOfTheDay"]}
        if len(motd["Title"]) + len(motd["Message"]) > MAX_MESSAGE_OF_THE_DAY:
            raise BadRequest(f"MessageOfTheDay is longer than {MAX_MESSAGE_OF_THE_DAY} characters")
        changes["MessageOfTheDay"] = motd
    if "UserSessionTimeout" in changes and not re.fullmatch(r"[0-9]{1,7}[smhd]?", changes["UserSessionTimeout"]):
        raise BadRequest("UserSessionTimeout must look like 8h, 30m or 3600s")
    if not 0 <= changes.get("ActivityLogRetentionDays", 0) <= 36500:
        raise BadRequest("ActivityLogRetentionDays must be between 0 (keep forever) and 36500")
    if changes.get("EnableTelemetry") and request.app[CONFIG].no_analytics:
        raise BadRequest("analytics are disabled by --no-analytics")
    store = request.app[STORE]
    store.settings.update(changes)
    await store.commit()
    return json_response(current_settings(store))


# ================================================================================================================
# API handlers: registries, their access per environment, and browsing their repositories
# ================================================================================================================


def registry_view(registry: dict) -> dict:
    """A registry as the API shows it: never its password."""
    view = Collection.public_view(registry)
    view["Password"] = ""
    return view


REGISTRY_ACCESS_FIELDS = {"UserAccessPolicies": dict, "TeamAccessPolicies": dict, "Namespaces": list}
REGISTRY_FIELDS = {"Name": str, "URL": str, "Type": int, "BaseURL": str, "Username": str, "Password": str,
                   "Authentication": bool, "TLSSkipVerify": bool, "RegistryAccesses": dict}


def registry_access(body: dict) -> dict:
    """One environment's access to a registry, {UserAccessPolicies, TeamAccessPolicies, Namespaces}, checked."""
    body = documented_fields(body, REGISTRY_ACCESS_FIELDS)
    access = {"UserAccessPolicies": {}, "TeamAccessPolicies": {}, "Namespaces": []}
    for policies in ("UserAccessPolicies", "TeamAccessPolicies"):
        value = field(body, policies, dict, required=False, default={})
        for key, policy in value.items():
            if not str(key).isdigit() or not isinstance(policy, dict):
                raise BadRequest(f"{policies} must map ids to objects such as {{\"RoleId\": 0}}")
        access[policies] = {str(k): v for k, v in value.items()}
    access["Namespaces"] = field(body, "Namespaces", list, required=False, default=[])
    return access


async def registry_fields(request: web.Request, registry: dict, body: dict, creating: bool) -> None:
    """Check and apply the editable fields of a registry; the password is sealed before it is kept."""
    store = request.app[STORE]
    name = field(body, "Name", str, required=creating)
    url = field(body, "URL", str, required=creating)
    kind = field(body, "Type", int, required=False)
    if name is not None:
        if not name.strip():
            raise BadRequest("Name cannot be empty")
        if any(r["Name"].lower() == name.strip().lower() and r["Id"] != registry.get("Id")
               for r in store.registries):
            raise Conflict(f"a registry named {name.strip()!r} already exists")
        registry["Name"] = name.strip()
    if url is not None:
        url = url.strip().rstrip("/")
        if not url or any(c.isspace() for c in url) or not registry_host(url):
            raise BadRequest("URL must be a registry address such as registry.example.com:5000")
        registry["URL"] = url
    if kind is not None:
        if kind not in REGISTRY_TYPES:
            raise BadRequest("Type must be one of " + ", ".join(f"{k} ({v})" for k, v in REGISTRY_TYPES.items()))
        registry["Type"] = kind
    for name_in_body in ("BaseURL", "Username"):
        value = field(body, name_in_body, str, required=False)
        if value is not None:
            registry[name_in_body] = value.strip()
    for switch in ("Authentication", "TLSSkipVerify"):
        value = field(body, switch, bool, required=False)
        if value is not None:
            registry[switch] = value
    accesses = field(body, "RegistryAccesses", dict, required=False)
    if accesses is not None:
        if any(not str(k).isdigit() or not isinstance(v, dict) for k, v in accesses.items()):
            raise BadRequest("RegistryAccesses must map environment ids to {UserAccessPolicies, TeamAccessPolicies}")
        registry["RegistryAccesses"] = {str(k): registry_access(v) for k, v in accesses.items()}
    password = field(body, "Password", str, required=False)
    if password:
        registry["_SealedPassword"] = request.app[REGISTRIES].passwords.seal(password)
    if not registry.get("Authentication"):
        registry["Username"] = ""
        registry.pop("_SealedPassword", None)
    elif not registry.get("Username"):
        raise BadRequest("Username is required when Authentication is on")


async def handle_registries_list(request: web.Request) -> web.Response:
    """Registries: all for administrators, those you may use somewhere for others (passwords never shown)."""
    caller, registries = caller_of(request), request.app[REGISTRIES]
    listed = request.app[STORE].registries.in_id_order()
    return json_response([registry_view(r) for r in listed if registries.may_use(caller, r)])


async def handle_registry_create(request: web.Request) -> web.Response:
    """Add a registry {Name, Type, URL, Authentication, Username, Password} (administrators)."""
    require_admin(request)
    body = await read_documented_fields(request, REGISTRY_FIELDS)
    store = request.app[STORE]
    registry = {"Id": 0, "Name": "", "Type": REGISTRY_CUSTOM, "URL": "", "BaseURL": "", "Authentication": False,
                "Username": "", "TLSSkipVerify": False, "RegistryAccesses": {}}
    await registry_fields(request, registry, body, creating=True)
    registry["Id"] = store.registries.new_id()
    store.registries.add(registry)
    await store.commit()
    return json_response(registry_view(registry))


async def handle_registry_inspect(request: web.Request) -> web.Response:
    """One registry (its password never shown)."""
    registry = request.app[REGISTRIES].usable(caller_of(request), path_id(request), None)
    return json_response(registry_view(registry))


async def handle_registry_update(request: web.Request) -> web.Response:
    """Change a registry (administrators); an empty or absent Password keeps the current one."""
    require_admin(request)
    registry = request.app[STORE].registries.get(path_id(request))
    body = await read_documented_fields(request, REGISTRY_FIELDS)
    changed = copy.deepcopy(registry)
    await registry_fields(request, changed, body, creating=False)
    registry.clear()
    registry.update(changed)
    await request.app[STORE].commit()
    return json_response(registry_view(registry))


async def handle_registry_delete(request: web.Request) -> web.Response:
    """Remove a registry and its credentials (administrators)."""
    require_admin(request)
    request.app[STORE].registries.delete(path_id(request))
    await request.app[STORE].commit()
    return web.Response(status=204)


async def handle_endpoint_registries(request: web.Request) -> web.Response:
    """The registries you may use on one environment."""
    endpoint = endpoint_for_caller(request, path_id(request))
    caller, registries = caller_of(request), request.app[REGISTRIES]
    listed = request.app[STORE].registries.in_id_order()
    return json_response([registry_view(r) for r in listed if registries.may_use(caller, r, endpoint["Id"])])


async def handle_endpoint_registry_access(request: web.Request) -> web.Response:
    """Who may use a registry on one environment: {UserAccessPolicies, TeamAccessPolicies} (administrators)."""
    require_admin(request)
    endpoint_id = path_id(request)
    request.app[STORE].endpoints.get(endpoint_id)
    registry = request.app[STORE].registries.get(path_id(request, "registryId"))
    access = registry_access(await read_json_object(request))
    accesses = registry.setdefault("RegistryAccesses", {})
    if access["UserAccessPolicies"] or access["TeamAccessPolicies"]:
        accesses[str(endpoint_id)] = access
    else:
        accesses.pop(str(endpoint_id), None)
    await request.app[STORE].commit()
    return web.Response(status=204)


async def handle_registry_catalog(request: web.Request) -> web.Response:
    """The repositories of a registry (its HTTP API v2 _catalog)."""
    registries = request.app[REGISTRIES]
    registry = registries.usable(caller_of(request), path_id(request), None)
    return json_response({"repositories": await registries.catalog(registry)})


async def handle_registry_tags(request: web.Request) -> web.Response:
    """The tags of one repository of a registry (its HTTP API v2 tags/list)."""
    registries = request.app[REGISTRIES]
    registry = registries.usable(caller_of(request), path_id(request), None)
    repository = request.match_info["repository"]
    if not REPOSITORY_NAME.fullmatch(repository):
        raise BadRequest(f"invalid repository name {repository[:100]!r}")
    return json_response({"name": repository, "tags": await registries.tags(registry, repository)})


# ================================================================================================================
# API handlers: image updates and recreating containers with a new image
# ================================================================================================================


async def handle_container_image_status(request: web.Request) -> web.Response:
    """Whether a newer image is behind a container's tag: Status outdated, updated, skipped or unknown."""
    endpoint = endpoint_for_caller(request, path_id(request))
    fresh = request.query.get("refresh", "").lower() in ("1", "true")
    updates = request.app[IMAGE_UPDATES]
    container_id = request.match_info["containerId"]
    await authorize_docker_call(request, endpoint, "GET", f"/containers/{container_id}/json")
    result = None if fresh else updates.cached(endpoint["Id"], container_id)
    return json_response(result or await updates.check(endpoint["Id"], container_id,
                                                       time.monotonic() if fresh else None))


async def image_check_registries(app: web.Application, endpoint_id: int) -> list[str] | None:
    """The registry hosts the environment's image update check contacts; None when its engine cannot say."""
    try:
        return await app[IMAGE_UPDATES].registries_to_contact(endpoint_id)
    except ApiError as exc:
        log.info("registries of environment %s unknown: %s", endpoint_id, exc.message)
        return None


async def handle_endpoint_image_notification(request: web.Request) -> web.Response:
    """The image update check setting of an environment and the registry hosts it contacts (administrators)."""
    require_admin(request)
    endpoint = request.app[STORE].endpoints.get(path_id(request))
    return json_response({IMAGE_CHECK_SETTING: endpoint.get(IMAGE_CHECK_SETTING) is True,
                          "Registries": await image_check_registries(request.app, endpoint["Id"])})


async def handle_endpoint_image_status(request: web.Request) -> web.Response:
    """Update status of many containers at once: ?containerIds=a,b (running ones when absent), ?refresh=true."""
    endpoint = endpoint_for_caller(request, path_id(request))
    fresh = request.query.get("refresh", "").lower() in ("1", "true")
    raw_ids = request.query.get("containerIds", "")
    ids = [i for i in raw_ids.split(",") if i] if raw_ids else None
    if ids is not None and (len(ids) > 500 or any(not re.fullmatch(r"[\w.-]{1,128}", i) for i in ids)):
        raise BadRequest("containerIds must be at most 500 container ids or names, separated by commas")
    store, caller = request.app[STORE], caller_of(request)
    if endpoint_role(store, caller, endpoint) in OWNERSHIP_BOUND_ROLES:
        running = container_summaries(
            await request.app[ENVIRONMENTS].connector(endpoint["Id"]).request_json("GET", "/containers/json"))
        owned = [c["Id"] for c in running if visible_resource(store, caller, "containers", c)]
        ids = owned if ids is None else [i for i in ids if any(o.startswith(i) for o in owned) and len(i) >= 12]
    return json_response(await request.app[IMAGE_UPDATES].check_environment(endpoint["Id"], ids, fresh))


RECREATE_FIELDS = {"PullImage": bool}


async def handle_container_recreate(request: web.Request) -> web.Response:
    """Recreate a container {PullImage}: pull its image's tag, then replace it keeping settings and data."""
    endpoint = endpoint_for_caller(request, path_id(request))
    body = await read_documented_fields(request, RECREATE_FIELDS) if request.can_read_body else {}
    pull = field(body, "PullImage", bool, required=False, default=False)
    container_id = request.match_info["containerId"]
    store, caller = request.app[STORE], caller_of(request)
    # The caller must be allowed each engine call a recreate makes, as through the proxy, on the container checked.
    container_id = (await authorize_docker_call(request, endpoint, "GET", f"/containers/{container_id}/json")).resource
    for method, call in (("POST", f"/containers/{container_id}/stop"), ("POST", f"/containers/{container_id}/rename"),
                         ("DELETE", f"/containers/{container_id}")) + ((("POST", "/images/create"),) if pull else ()):
        await authorize_docker_call(request, endpoint, method, call)
    creating = await authorize_docker_call(request, endpoint, "POST", "/containers/create")
    updates = request.app[IMAGE_UPDATES]
    old_id, new = await updates.recreate(endpoint["Id"], container_id, pull, caller,
                                         creating.vet if not caller.is_admin else None)
    await move_resource_control(store, old_id, as_text(new.get("Id")))
    return json_response(new)


async def handle_stack_images_status(request: web.Request) -> web.Response:
    """Whether a stack's running containers have newer images: the stack's Status and each container's."""
    stack = stack_for_caller(request)
    endpoint = endpoint_for_caller(request, stack["EndpointId"])
    fresh = request.query.get("refresh", "").lower() in ("1", "true")
    label = LABEL_PROJECT if stack["Type"] == STACK_COMPOSE else LABEL_NAMESPACE
    connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
    filters = urllib.parse.quote(json.dumps({"label": [f"{label}={stack['Name']}"]}))
    running = container_summaries(await connector.request_json("GET", f"/containers/json?filters={filters}"))
    store, caller = request.app[STORE], caller_of(request)
    if endpoint_role(store, caller, endpoint) in OWNERSHIP_BOUND_ROLES:
        running = [c for c in running if visible_resource(store, caller, "containers", c)]
    answers = await request.app[IMAGE_UPDATES].check_environment(endpoint["Id"], [c["Id"] for c in running], fresh)
    for container in running:
        answers[container["Id"]]["Name"] = container_name(container)
    statuses = {a["Status"] for a in answers.values()}
    status = next((s for s in (UPDATE_OUTDATED, UPDATE_UNKNOWN, UPDATE_CURRENT) if s in statuses), UPDATE_SKIPPED)
    return json_response({"Status": status, "Message": "", "Containers": answers})


# ================================================================================================================
# API handlers: stacks (compose and Swarm), outside projects
# ================================================================================================================


class Stacks:
    """Stack records (in the store), their files (under <data>/compose/<id>/) and one lock per stack."""

    def __init__(self, store: Store, environments: Environments, data_directory: str):
        self.store = store
        self.environments = environments
        self.data_directory = data_directory
        self._locks: dict[int, asyncio.Lock] = {}
        self.creating: set[tuple[int, str]] = set()  # (environment, name) of stacks being deployed

    def lock(self, stack_id: int) -> asyncio.Lock:
        return self._locks.setdefault(stack_id, asyncio.Lock())

    def project_dir(self, stack_id: int) -> str:
        return os.path.join(self.data_directory, "compose", str(stack_id))

    def read_file(self, stack: dict) -> str:
        try:
            with open(os.path.join(self.project_dir(stack["Id"]), stack["EntryPoint"]), encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            raise NotFound(f"the file of stack {stack['Id']} is missing", str(exc)) from None

    @staticmethod
    def stack_files(content: str, env: list[dict]) -> dict[str, bytes]:
        # stack.env is what Portainer writes too, so `env_file: stack.env` works the same here.
        return {STACK_ENV_FILE: "".join(f"{e['name']}={e['value']}\n" for e in env).encode(),
                COMPOSE_FILE: content.encode()}

    @staticmethod
    def write_files(project_dir: str, content: str, env: list[dict], entry_point: str = COMPOSE_FILE) -> None:
        """The compose file, and the stack's env file beside it (where `env_file: stack.env` finds it)."""
        for name, data in Stacks.stack_files(content, env).items():
            path = entry_point if name == COMPOSE_FILE else os.path.join(os.path.dirname(entry_point), name)
            write_stack_file(os.path.join(project_dir, path), data)

    def recover_interrupted(self) -> None:
        """At start: what a deploy cut short by a crash left beside the projects. A project directory moved
        aside by a redeploy that never finished goes back; staging directories go."""
        root = os.path.join(self.data_directory, "compose")
        if not os.path.isdir(root):
            return
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            previous = re.fullmatch(r"\.previous-(\d+)-.*", name)
            if previous and os.path.isdir(os.path.join(path, "project")) and \
                    not os.path.exists(self.project_dir(int(previous.group(1)))):
                os.rename(os.path.join(path, "project"), self.project_dir(int(previous.group(1))))
            if name.startswith((".staging-", ".previous-")):
                shutil.rmtree(path, ignore_errors=True)

    def new_staging(self) -> str:
        """A new directory beside the projects (same file system), where a project is put together before it
        replaces the stack's directory in one rename."""
        root = os.path.join(self.data_directory, "compose")
        os.makedirs(root, mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix=".staging-", dir=root)

    def stage(self, entry_point: str, content: str, env: list[dict], upload: "StagedProject | None") -> str:
        """A new stack's project as it will be (an uploaded archive's files, or the editor's compose file), or an
        archive replacing a stack's project; the stack's env file in both. (The editor's redeploy of a stack
        writes its compose file in place instead: the project's other files, and running containers' binds of
        them, stay as they are.)"""
        staging = upload.directory if upload is not None else self.new_staging()
        if upload is None:
            write_stack_file(os.path.join(staging, entry_point), content.encode())
        write_stack_file(os.path.join(staging, os.path.dirname(entry_point), STACK_ENV_FILE),
                         Stacks.stack_files("", env)[STACK_ENV_FILE])
        return staging

    @staticmethod
    def add_generated_files(staging: str, compose: ComposeFile) -> None:
        """Secrets and configs given by value, as files of the project; written in place (same inode), so a
        running container's bind of one sees its new value."""
        for relative, data in compose.generated.items():
            path = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            if not os.path.realpath(os.path.dirname(path)).startswith(os.path.realpath(staging) + os.sep):
                raise BadRequest(f"{relative} leaves the stack's files through a link (made by one of its services?)")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(data)

    def install(self, stack_id: int, staging: str) -> str | None:
        """The staged project becomes the stack's directory, brought to it in place (agent.sync_project: binds
        keep their files and directories, what services wrote there stays). Answers a copy of the files it
        replaced, for `restore`."""
        final = self.project_dir(stack_id)
        if not os.path.lexists(final):
            shared.sync_project(staging, final)
            shutil.rmtree(staging, ignore_errors=True)
            return None
        previous = tempfile.mkdtemp(prefix=f".previous-{stack_id}-", dir=os.path.dirname(final))
        try:
            replaced = shared.project_manifest(final)
        except FileNotFoundError:  # a stack from before manifests: every file there is the project's
            replaced = [os.path.relpath(os.path.join(d, n), final) for d, _, files in os.walk(final) for n in files]
        for relative in replaced:
            source, copy = os.path.join(final, relative), os.path.join(previous, "project", relative)
            if os.path.islink(source) or os.path.isfile(source):
                os.makedirs(os.path.dirname(copy), exist_ok=True)
                shutil.copy2(source, copy, follow_symlinks=False)
        shared.sync_project(staging, final)
        shutil.rmtree(staging, ignore_errors=True)
        return previous

    def restore(self, stack_id: int, previous: str | None) -> None:
        """Undo `install`: the stack's directory is what it was before (none, for a stack that was being made)."""
        final = self.project_dir(stack_id)
        if previous is None:
            shutil.rmtree(final, ignore_errors=True)
            return
        os.makedirs(os.path.join(previous, "project"), exist_ok=True)
        shared.sync_project(os.path.join(previous, "project"), final)
        shutil.rmtree(previous, ignore_errors=True)

    def remover(self, stack: dict) -> ComposeDeployment | SwarmDeployment:
        """What removes or stops a stack by its labels, even when its file no longer parses."""
        connector = self.environments.connector(stack["EndpointId"])
        kind = SwarmDeployment if stack["Type"] == STACK_SWARM else ComposeDeployment
        return kind(connector, None, stack["Name"])

    def deployment(self, stack_type: int, endpoint_id: int, name: str, content: str, env: list[dict],
                   project_dir: str, source_dir: str | None = None,
                   entry_point: str = COMPOSE_FILE) -> ComposeDeployment | SwarmDeployment:
        """`project_dir` is where the engine's host has the project; `source_dir` where this server reads it. As
        docker compose does, relative paths resolve from the compose file's directory (a compose file in a
        subdirectory of the project resolves them there, and they stay inside it)."""
        swarm = stack_type == STACK_SWARM
        project_dir = entry_directory(project_dir, entry_point)
        source_dir = entry_directory(source_dir, entry_point) if source_dir else None
        files = {STACK_ENV_FILE: self.stack_files(content, env)[STACK_ENV_FILE],
                 os.path.basename(entry_point): content.encode()}
        compose = ComposeFile(content, {e["name"]: e["value"] for e in env}, name, project_dir, swarm=swarm,
                              files=files, source_dir=source_dir, file_name=entry_point)
        connector = self.environments.connector(endpoint_id)
        return SwarmDeployment(connector, compose) if swarm else ComposeDeployment(connector, compose)


# A deploy's live progress: the UI picks an id, opens GET /api/stacks/deploys/{id}/progress, then sends the id in
# this header on the create or update call (ids and tokens never travel in a URL's query; the id is no secret).
DEPLOY_ID_HEADER = "X-Portainer-Deploy-Id"
DEPLOY_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
DEPLOY_PROGRESS_KEEP_SECONDS = 300
DEPLOY_PROGRESS_MAX_EVENTS = 5000


class ProgressChannel:
    """One deploy's events, kept until it has ended and its reader has them all (or a few minutes pass)."""

    def __init__(self, owner: int):
        self.owner = owner
        self.events: list[dict] = []
        self.finished = False
        self.touched = time.monotonic()
        self.changed = asyncio.Event()

    def publish(self, event: dict) -> None:
        crowded = len(self.events) >= DEPLOY_PROGRESS_MAX_EVENTS and event.get("stage") in ("pull", "build")
        if self.finished or crowded:
            return  # beyond the cap only the steps that matter are kept, not every layer's percentage
        self.events.append({**event, "time": round(time.time(), 3)})
        self.touched = time.monotonic()
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def finish(self, event: dict) -> None:
        if not self.finished:
            self.publish(event)
            self.finished = True


class DeployProgress:
    """The live progress of stack deploys by the id each one's caller chose; only that user reads it."""

    def __init__(self):
        self.channels: dict[str, ProgressChannel] = {}

    def channel(self, deploy_id: str, user_id: int) -> ProgressChannel:
        moment = time.monotonic()
        for stale in [k for k, c in self.channels.items() if moment - c.touched > DEPLOY_PROGRESS_KEEP_SECONDS]:
            del self.channels[stale]
        channel = self.channels.setdefault(deploy_id, ProgressChannel(user_id))
        if channel.owner != user_id:
            raise Forbidden(f"deploy {deploy_id} is another user's")
        return channel


def deploy_progress(request: web.Request) -> ProgressChannel:
    """Where this create or update call reports what it does: the channel its X-Portainer-Deploy-Id names, or one
    nobody reads."""
    deploy_id = request.headers.get(DEPLOY_ID_HEADER, "")
    if not deploy_id:
        return ProgressChannel(caller_of(request).id)
    if not DEPLOY_ID.match(deploy_id):
        raise BadRequest(f"{DEPLOY_ID_HEADER} must be 8 to 64 letters, digits, '-' or '_'")
    return request.app[DEPLOYS].channel(deploy_id, caller_of(request).id)


async def handle_stack_deploy_progress(request: web.Request) -> web.StreamResponse:
    """A deploy's live progress as JSON lines (pulls per layer, build steps, containers created and started,
    health waits), for the id sent in X-Portainer-Deploy-Id on the create or update call; ends with the deploy."""
    deploy_id = request.match_info["deployId"]
    if not DEPLOY_ID.match(deploy_id):
        raise BadRequest("a deploy id is 8 to 64 letters, digits, '-' or '_'")
    channel = request.app[DEPLOYS].channel(deploy_id, caller_of(request).id)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-store"})
    await response.prepare(request)
    sent = 0
    deadline = time.monotonic() + DEPLOY_PROGRESS_KEEP_SECONDS
    while True:
        while sent < len(channel.events):
            await response.write(json.dumps(channel.events[sent]).encode() + b"\n")
            sent += 1
        if channel.finished or (not channel.events and time.monotonic() > deadline):
            break
        changed = channel.changed
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), 15)
        channel.touched = time.monotonic()
    request.app[DEPLOYS].channels.pop(deploy_id, None)
    await response.write_eof()
    return response


# Portainer's stack payloads; an env entry is its portainer.Pair {"name", "value"}.
STACK_ENV = [{"name": str, "value": (str, int, float)}]
STACK_CREATE_FIELDS = {"Name": str, "StackFileContent": str, "Env": STACK_ENV, "FromAppTemplate": bool,
                       "PullImage": bool}
SWARM_STACK_CREATE_FIELDS = {**STACK_CREATE_FIELDS, "SwarmID": str}
STACK_UPDATE_FIELDS = {"StackFileContent": str, "Env": STACK_ENV, "Prune": bool, "PullImage": bool}
STACK_DEPLOY_FIELDS = {"Name": str, "Env": STACK_ENV}


def stack_env(body: dict) -> list[dict]:
    env = body.get("Env") or []
    if not isinstance(env, list) or any(not isinstance(e, dict) or not isinstance(e.get("name"), str)
                                        or not re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", e["name"])
                                        or not isinstance(e.get("value", ""), (str, int, float)) for e in env):
        raise BadRequest("Env must be a list of {\"name\": \"VAR\", \"value\": \"...\"} with valid variable names")
    return [{"name": e["name"], "value": str(e.get("value", ""))} for e in env]


def stack_content(body: dict) -> str:
    content = field(body, "StackFileContent", str)
    if not content.strip():
        raise BadRequest("StackFileContent is empty")
    return content


def stack_endpoint(request: web.Request, endpoint_id: int | None = None) -> dict:
    """The environment a stack call is for, when the caller may manage stacks there."""
    if endpoint_id is None:
        raw = request.query.get("endpointId", "")
        if not re.fullmatch(r"[0-9]{1,12}", raw):
            raise BadRequest("the query parameter endpointId is required")
        endpoint_id = int(raw)
    endpoint = endpoint_for_caller(request, endpoint_id)
    require_stack_management(request, endpoint)
    return endpoint


# Portainer's resource control type for stacks; its ResourceId is "<environment id>_<stack name>".
STACK_RESOURCE_CONTROL = 6


def stack_resource_id(stack: dict) -> str:
    return f"{stack['EndpointId']}_{stack['Name']}"


def stack_resource_control(store: Store, stack: dict) -> dict | None:
    """Who may use a stack besides administrators; a stack without one is for administrators only."""
    resource_id = stack_resource_id(stack)
    return next((rc for rc in store.resource_controls
                 if rc["Type"] == STACK_RESOURCE_CONTROL and rc["ResourceId"] == resource_id), None)


def can_access_stack(store: Store, caller: Caller, stack: dict) -> bool:
    """Administrators, environment administrators and roles that see the whole environment see every stack there;
    ownership-bound users see those their resource control gives them (theirs, their teams', public ones)."""
    endpoint = store.endpoints.find(stack["EndpointId"])
    if endpoint is None:
        return caller.is_admin
    role = endpoint_role(store, caller, endpoint)
    if role is None:
        return False
    if role not in OWNERSHIP_BOUND_ROLES:
        return True
    control = stack_resource_control(store, stack)
    if control is None or control["AdministratorsOnly"]:
        return False
    teams = user_team_ids(store, caller.id)
    return control["Public"] or any(a["UserId"] == caller.id for a in control["UserAccesses"]) or \
        any(a["TeamId"] in teams for a in control["TeamAccesses"])


def can_manage_stack(store: Store, caller: Caller, stack: dict) -> bool:
    """May change (and so read the env of) this stack: access to it and the right to manage stacks there."""
    if not can_access_stack(store, caller, stack):
        return False
    endpoint = store.endpoints.find(stack["EndpointId"])
    if endpoint is None:
        return caller.is_admin
    role = endpoint_role(store, caller, endpoint)
    return WRITE in ROLE_ACTIONS[role] and (
        role == ENV_ROLE_ADMIN or endpoint_security_settings(endpoint)["allowStackManagementForRegularUsers"])


def require_stack_access(request: web.Request, stack: dict) -> None:
    if not can_access_stack(request.app[STORE], caller_of(request), stack):
        raise Forbidden(f"access denied to stack {stack['Id']}",
                        "it belongs to another user or team; an administrator can share it")


async def add_stack_resource_control(store: Store, caller: Caller, stack: dict) -> None:
    """As Portainer: a new stack is its creator's, or administrators' only when an administrator made it."""
    stale = stack_resource_control(store, stack)  # left by a stack of that name removed outside portainer.py
    if stale is not None:
        store.resource_controls.delete(stale["Id"])
    store.resource_controls.add({
        "ResourceId": stack_resource_id(stack), "SubResourceIds": [], "Type": STACK_RESOURCE_CONTROL,
        "UserAccesses": [] if caller.is_admin else [{"UserId": caller.id, "AccessLevel": 1}],
        "TeamAccesses": [], "Public": False, "AdministratorsOnly": caller.is_admin, "System": False})


def stack_owner_labels(store: Store, caller: Caller, stack: dict | None) -> dict[str, str]:
    """The ownership labels of what a deploy creates. A new stack's are the caller's (and their teams'); an existing
    one's go to the users its resource control names and their teams, and to the teams it names, so a user it was
    shared with does not take over what its owner made."""
    control = stack_resource_control(store, stack) if stack else None
    if control is None or not (control["UserAccesses"] or control["TeamAccesses"]):
        return ownership_labels(store, caller)
    users = [a["UserId"] for a in control["UserAccesses"]]
    teams = {a["TeamId"] for a in control["TeamAccesses"]}.union(*(user_team_ids(store, u) for u in users))
    labels = {OWNER_USERS_LABEL: ",".join(str(u) for u in users)} if users else {}
    if teams:
        labels[OWNER_TEAMS_LABEL] = ",".join(str(t) for t in sorted(teams))
    return labels


async def require_owned_stack_references(store: Store, caller: Caller, deployment: ComposeDeployment |
                                         SwarmDeployment, existing_stack: bool) -> None:
    """Volumes, networks, secrets and configs a stack uses that it does not make (external ones, or any of that
    name already on the engine) must be the caller's, as a direct `docker run -v` would require; a stack's own
    are, on update."""
    project_label = LABEL_NAMESPACE if isinstance(deployment, SwarmDeployment) else LABEL_PROJECT
    connector, compose = deployment.connector, deployment.compose
    used = [("volumes", compose.volumes), ("networks", compose.networks)]
    if isinstance(deployment, SwarmDeployment):
        used += [("secrets", compose.secrets), ("configs", compose.configs)]
    for kind, objects in used:
        for item in objects.values():
            if not item["external"]:
                try:
                    found = await connector.request_json("GET", f"/{kind}/{urllib.parse.quote(item['name'], safe='')}")
                except ApiError as exc:
                    if exc.status == 404:
                        continue  # the stack makes it, labelled as the caller's
                    raise
                labels = resource_labels(kind, as_dict(found))
                if existing_stack and labels.get(project_label) == deployment.project:
                    continue
            await require_owned(connector, store, caller, kind, item["name"], missing_ok=True)


async def apply_caller_rules(request: web.Request, endpoint: dict, deployment: ComposeDeployment | SwarmDeployment,
                             stack: dict | None = None) -> None:
    """What the proxy would require of this caller, applied to what the stack will create: the security settings
    below environment administrators, ownership labels so an ownership-bound user manages what they made, and
    ownership of the volumes and networks it uses without making them."""
    store, caller = request.app[STORE], caller_of(request)
    creation = "/services/create" if isinstance(deployment, SwarmDeployment) else "/containers/create"
    deployment.check_allowed(docker_grant(request, endpoint, "POST", creation))
    if isinstance(deployment, ComposeDeployment):
        await vet_stack_builds(request, endpoint, deployment)
    if not caller.is_admin:
        deployment.owner_labels = stack_owner_labels(store, caller, stack)
    if endpoint_role(store, caller, endpoint) in OWNERSHIP_BOUND_ROLES:
        await require_owned_stack_references(store, caller, deployment, existing_stack=stack is not None)


async def vet_stack_builds(request: web.Request, endpoint: dict, deployment: ComposeDeployment) -> None:
    """Each build a stack makes passes what the proxy's POST /build would require of the caller (network mode,
    cgroup parent, ownership of what it names), and uses the query that check settled on."""
    for name, service in deployment.compose.services.items():
        if service.get("build") is not None:
            target = f"/build?{build_query(service['image'], service['build'])}"
            grant = docker_grant(request, endpoint, "POST", "/build", target)
            await grant.vet_query("/build")
            deployment.build_targets[name] = grant.target
    if deployment.build_targets:
        deployment.registry_config = stack_registry_config(request, endpoint["Id"])


def stack_view(request: web.Request, stack: dict) -> dict:
    """A stack as Portainer answers it: with its resource control, and its env only for who may manage it."""
    store, caller = request.app[STORE], caller_of(request)
    view = store.stacks.public_view(stack)
    control = stack_resource_control(store, stack)
    view["ResourceControl"] = resource_control_view(control) if control else None
    if not can_manage_stack(store, caller, stack):
        view["Env"] = None
        if view.get("AutoUpdate"):  # a git stack's webhook id redeploys it: only for who may do that
            view["AutoUpdate"] = {**view["AutoUpdate"], "Webhook": ""}
    return view


async def create_stack(request: web.Request, stack_type: int, body: dict, from_template: bool = False,
                       adopting: bool = False, upload: "StagedProject | None" = None,
                       record: dict | None = None) -> dict:
    """Check the project, write it, deploy it; a failed deploy leaves nothing behind. `upload` is a project
    archive the request brought, or a fetched git reference (its compose file is the body's StackFileContent);
    `record` holds what the stack keeps besides (a git stack's GitConfig and AutoUpdate)."""
    try:
        return await create_stack_from_project(request, stack_type, body, from_template, adopting, upload,
                                               record or {})
    finally:
        if upload is not None:
            await asyncio.to_thread(upload.discard)


async def create_stack_from_project(request: web.Request, stack_type: int, body: dict, from_template: bool,
                                    adopting: bool, upload: "StagedProject | None", record: dict) -> dict:
    endpoint = stack_endpoint(request)
    caller = caller_of(request)
    stacks: Stacks = request.app[STACKS]
    name = field(body, "Name", str).strip()
    if not STACK_NAME.match(name):
        raise BadRequest(f"invalid stack name {name!r}",
                         "use lowercase letters, digits, '-' and '_', starting with a letter or digit")
    content, env = stack_content(body), stack_env(body)
    entry_point = upload.entry_point if upload is not None else COMPOSE_FILE
    key = (endpoint["Id"], name)
    if key in stacks.creating or any(s["Name"] == name and s["EndpointId"] == endpoint["Id"]
                                     for s in request.app[STORE].stacks):
        raise Conflict(f"a stack named {name!r} already exists on this environment")
    swarm_id = ""
    if stack_type == STACK_SWARM:
        swarm_id = field(body, "SwarmID", str, required=False, default="")
    stack_id = request.app[STORE].stacks.new_id()
    project_dir = stacks.project_dir(stack_id)
    progress = deploy_progress(request)
    stacks.creating.add(key)
    staging = ""
    try:
        staging = await asyncio.to_thread(stacks.stage, entry_point, content, env, upload)
        if upload is not None:
            upload.directory = staging  # installed below, or discarded with the upload
        deployment = await project_deployment(request, stack_type, endpoint, name, content, env, stack_id,
                                              staging, entry_point)
        await apply_caller_rules(request, endpoint, deployment)
        if stack_type == STACK_SWARM:
            if await deployment.namespace_objects("services"):
                raise Conflict(f"a Swarm stack named {name!r} made outside portainer.py runs on this environment")
            swarm_id = swarm_id or as_text(as_dict(await deployment.connector.request_json("GET", "/swarm")).get("ID"))
        elif not adopting and await deployment.project_containers():
            raise Conflict(f"a compose project named {name!r} made outside portainer.py runs on this environment",
                           "an administrator can adopt it (POST /api/stacks/adopt) or pick another name")
        await asyncio.to_thread(stacks.install, stack_id, staging)
        if upload is not None:
            upload.directory = ""
        deployment.compose.source_dir = entry_directory(project_dir, entry_point)
        deployment.progress = progress.publish
        try:
            await deployment.connector.store_project(name, project_dir)
            await deployment.up(pull=bool(body.get("PullImage")))
        except (ApiError, OSError) as exc:
            if not adopting:  # what an adopted project had stays, whatever went wrong
                with contextlib.suppress(ApiError, OSError):
                    await deployment.down()
            await undo_project(deployment, name)
            await asyncio.to_thread(shutil.rmtree, project_dir, True)
            progress.finish({"stage": "error", "message": getattr(exc, "message", str(exc))})
            raise
        stack = {"Id": stack_id, "Name": name, "Type": stack_type, "EndpointId": endpoint["Id"], "SwarmId": swarm_id,
                 "EntryPoint": entry_point, "Env": env, "Status": STACK_ACTIVE, "ProjectPath": project_dir,
                 "CreationDate": now(), "CreatedBy": caller.user["Username"], "UpdateDate": 0, "UpdatedBy": "",
                 "ResourceControl": None, "AdditionalFiles": [], "AutoUpdate": None, "GitConfig": None,
                 "FromAppTemplate": from_template, "Namespace": "", "IsComposeFormat": stack_type == STACK_COMPOSE}
        stack.update(record)
        request.app[STORE].stacks.add(stack)
        await add_stack_resource_control(request.app[STORE], caller, stack)
        await request.app[STORE].commit()
        progress.finish({"stage": "done", "stack": stack_id})
    except ApiError as exc:
        progress.finish({"stage": "error", "message": exc.message})
        raise
    finally:
        stacks.creating.discard(key)
        if staging and os.path.isdir(staging):  # never installed: the check or the conflict refused it
            await asyncio.to_thread(shutil.rmtree, staging, True)
    return stack


async def project_deployment(request: web.Request, stack_type: int, endpoint: dict, name: str, content: str,
                             env: list[dict], stack_id: int, source_dir: str | None = None,
                             entry_point: str = COMPOSE_FILE) -> ComposeDeployment | SwarmDeployment:
    """The deployment of a stack's project on an environment: parsed from `source_dir` (the stack's directory, or
    one being staged), its relative paths resolved where that environment's engine has the project's files."""
    stacks: Stacks = request.app[STACKS]
    project_dir = stacks.project_dir(stack_id)
    connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
    engine_dir = await connector.project_directory(name, project_dir)
    deployment = stacks.deployment(stack_type, endpoint["Id"], name, content, env, engine_dir,
                                   source_dir=source_dir or project_dir, entry_point=entry_point)
    await asyncio.to_thread(Stacks.add_generated_files, deployment.compose.source_dir, deployment.compose)
    return deployment


async def undo_project(deployment: ComposeDeployment | SwarmDeployment, name: str) -> None:
    """After a failed first deploy: the images it built and the copy of its files an agent got go too."""
    with contextlib.suppress(ApiError, OSError):
        if isinstance(deployment, ComposeDeployment):
            await deployment.remove_built_images()
    with contextlib.suppress(ApiError, OSError):
        await deployment.connector.remove_project(name)


def stack_registry_config(request: web.Request, endpoint_id: int) -> dict:
    """X-Registry-Config for a stack's builds: the credentials of every registry the caller may use on the
    environment, by host (the engine picks them by each base image's registry)."""
    registries, caller = request.app[REGISTRIES], caller_of(request)
    config = {}
    for registry in request.app[STORE].registries.in_id_order():
        if registries.may_use(caller, registry, endpoint_id):
            auth = registries.auth_config(registry)
            config[auth["serveraddress"]] = auth
    return config


async def handle_stack_create_standalone_string(request: web.Request) -> web.Response:
    """Deploy a compose stack from the file's text: {Name, StackFileContent, Env}."""
    stack = await create_stack(request, STACK_COMPOSE, await read_documented_fields(request, STACK_CREATE_FIELDS))
    return json_response(stack_view(request, stack))


async def handle_stack_create_standalone_file(request: web.Request) -> web.Response:
    """Deploy a compose stack from an uploaded compose file or project archive (multipart: Name, file, Env as
    JSON, ComposeFile: the archive's compose file)."""
    stack_endpoint(request)  # who may not deploy here sends no archive to unpack
    body, upload = await stack_upload_form(request)
    return json_response(stack_view(request, await create_stack(request, STACK_COMPOSE, body, upload=upload)))


async def handle_stack_create_swarm_file(request: web.Request) -> web.Response:
    """Deploy a Swarm stack from an uploaded compose file or project archive (multipart: Name, SwarmID, file,
    Env as JSON, ComposeFile: the archive's compose file)."""
    stack_endpoint(request)
    body, upload = await stack_upload_form(request)
    return json_response(stack_view(request, await create_stack(request, STACK_SWARM, body, upload=upload)))


# A project archive's compose file, when the form names none: the names docker compose looks for, in its order.
COMPOSE_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
STACK_FORM_FIELDS = ("Name", "SwarmID", "Env", "ComposeFile", "Prune", "PullImage")


@dataclasses.dataclass
class StagedProject:
    """A project put together in a staging directory beside the projects (Stacks.new_staging): an uploaded archive
    unpacked, or a checkout; and the compose file in it the stack deploys (its entry point). create_stack and
    redeploy_stack take one and move its directory into place (or remove it, with `discard`)."""

    directory: str
    entry_point: str

    def compose_text(self) -> str:
        try:
            with open(os.path.join(self.directory, *self.entry_point.split("/")), "rb") as f:
                return f.read(MAX_JSON_BODY).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"the archive's {self.entry_point} is not UTF-8 text") from None

    def discard(self) -> None:
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)


async def unpack_upload(stacks: Stacks, spool, compose_file: str) -> StagedProject:
    """An uploaded archive, unpacked safely (see agent.unpack_project_archive) into a staging directory."""
    directory = await asyncio.to_thread(stacks.new_staging)
    try:
        await asyncio.to_thread(shared.unpack_project_archive, spool, directory)
        if compose_file:
            try:
                entry_point = shared.project_member_path(compose_file)
            except shared.ArchiveRefused as exc:
                raise BadRequest(f"ComposeFile: {exc}") from None
            if not os.path.isfile(os.path.join(directory, *entry_point.split("/"))):
                raise BadRequest(f"the archive has no compose file {compose_file!r}")
        else:
            entry_point = next((n for n in COMPOSE_FILE_NAMES if os.path.isfile(os.path.join(directory, n))), "")
            if not entry_point:
                raise BadRequest("the archive has no compose file at its top", "name it with the form field "
                                 "ComposeFile, or add one of " + ", ".join(COMPOSE_FILE_NAMES))
        upload = StagedProject(directory, entry_point)
        upload.compose_text()
        return upload
    except shared.ArchiveRefused as exc:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise BadRequest(f"project archive refused: {exc}", "nothing of it was kept") from None
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, directory, True)
        raise


async def stack_upload_form(request: web.Request, require_file: bool = True) -> tuple[dict, StagedProject | None]:
    """Portainer's multipart stack upload (Name, SwarmID, Env as JSON, file) as the body create_stack reads. The
    `file` is a compose file, or a project archive (.tar, .tar.gz, .zip, told apart by its content) whose compose
    file is the field ComposeFile (default: compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml).
    Read as a stream: an archive may be up to 64 MiB, far more than other bodies."""
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send a multipart form with Name, file and Env")
    fields: dict[str, str] = {}
    spool = tempfile.TemporaryFile()
    received = False
    try:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "file":
                    received = True
                    size = 0
                    while chunk := await part.read_chunk(shared.STREAM_CHUNK):
                        size += len(chunk)
                        if size > shared.PROJECT_ARCHIVE_MAX_BYTES:
                            raise BadRequest(f"the file is larger than "
                                             f"{shared.PROJECT_ARCHIVE_MAX_BYTES // (1024 * 1024)} MiB")
                        await asyncio.to_thread(spool.write, chunk)
                elif part.name in STACK_FORM_FIELDS:
                    value = b""
                    while chunk := await part.read_chunk(shared.STREAM_CHUNK):
                        value += chunk
                        if len(value) > MAX_JSON_BODY:
                            raise BadRequest(f"the form field {part.name} is too large")
                    fields[part.name] = value.decode("utf-8")
        except MALFORMED_FORM_ERRORS as exc:
            raise BadRequest("malformed multipart body", str(exc) or "a multipart body needs a boundary") from None
        try:
            env = _typed_value(decode_json(fields.get("Env") or "[]"), STACK_ENV, "Env")
        except (ValueError, RecursionError) as exc:
            raise BadRequest("Env must be JSON: [{\"name\": ..., \"value\": ...}]", str(exc)) from None
        body: dict = {"Name": fields.get("Name"), "Env": env}
        if "Env" not in fields:
            body.pop("Env")
        for flag in ("Prune", "PullImage"):
            if flag in fields:
                body[flag] = fields[flag].strip().lower() in ("1", "true", "yes", "on")
        if "SwarmID" in fields:
            body["SwarmID"] = fields["SwarmID"]
        if not received:
            if require_file:
                raise BadRequest("the form field 'file' (a compose file or a project archive) is required")
            return body, None
        spool.seek(0)
        if shared.archive_kind(spool.read(512)) is None:
            spool.seek(0)
            try:
                body["StackFileContent"] = spool.read(MAX_JSON_BODY + 1).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequest("the file is neither UTF-8 text nor a .tar, .tar.gz or .zip archive",
                                 str(exc)) from None
            if len(body["StackFileContent"]) > MAX_JSON_BODY:
                raise BadRequest(f"a compose file is at most {MAX_JSON_BODY // (1024 * 1024)} MiB")
            return body, None
        upload = await unpack_upload(request.app[STACKS], spool, fields.get("ComposeFile", "").strip())
        body["StackFileContent"] = upload.compose_text()
        return body, upload
    finally:
        spool.close()


async def handle_stack_create_swarm_string(request: web.Request) -> web.Response:
    """Deploy a Swarm stack from the file's text: {Name, SwarmID, StackFileContent, Env}."""
    stack = await create_stack(request, STACK_SWARM, await read_documented_fields(request, SWARM_STACK_CREATE_FIELDS))
    return json_response(stack_view(request, stack))


async def handle_stack_create_legacy(request: web.Request) -> web.Response:
    """Deploy a stack the pre-2.19 way: ?type=1|2&method=string|file&endpointId=N."""
    stack_type = query_int(request, "type", STACK_COMPOSE)
    method = request.query.get("method", "string")
    if stack_type not in (STACK_SWARM, STACK_COMPOSE) or method not in ("string", "file"):
        raise BadRequest("type must be 1 (Swarm) or 2 (compose) and method string or file")
    if method == "file":
        if stack_type == STACK_SWARM:
            return await handle_stack_create_swarm_file(request)
        return await handle_stack_create_standalone_file(request)
    fields = STACK_CREATE_FIELDS if stack_type == STACK_COMPOSE else SWARM_STACK_CREATE_FIELDS
    stack = await create_stack(request, stack_type, await read_documented_fields(request, fields))
    return json_response(stack_view(request, stack))


def visible_stacks(request: web.Request) -> list[dict]:
    store, caller = request.app[STORE], caller_of(request)
    return [s for s in store.stacks if can_access_stack(store, caller, s)]


async def handle_stacks_list(request: web.Request) -> web.Response:
    """Stacks on the environments the caller may use; ?filters={"EndpointID": N} narrows to one."""
    stacks = visible_stacks(request)
    raw = request.query.get("filters")
    if raw:
        try:
            filters = json.loads(raw)
        except (ValueError, RecursionError):
            raise BadRequest("filters must be JSON, e.g. {\"EndpointID\": 1}") from None
        if isinstance(filters, dict) and filters.get("EndpointID"):
            stacks = [s for s in stacks if s["EndpointId"] == filters["EndpointID"]]
        if isinstance(filters, dict) and filters.get("SwarmID"):
            stacks = [s for s in stacks if s["SwarmId"] == filters["SwarmID"]]
    return json_response([stack_view(request, s) for s in sorted(stacks, key=lambda s: s["Id"])])


def stack_for_caller(request: web.Request) -> dict:
    """The stack, when the caller may see it: 403 as Portainer answers for another user's stack."""
    stack = request.app[STORE].stacks.get(path_id(request))
    endpoint_for_caller(request, stack["EndpointId"])
    require_stack_access(request, stack)
    return stack


async def handle_stack_inspect(request: web.Request) -> web.Response:
    """One stack."""
    return json_response(stack_view(request, stack_for_caller(request)))


async def handle_stack_file(request: web.Request) -> web.Response:
    """A stack's compose file: {StackFileContent}."""
    stack = stack_for_caller(request)
    content = await asyncio.to_thread(request.app[STACKS].read_file, stack)
    return json_response({"StackFileContent": content})


async def handle_stack_services(request: web.Request) -> web.Response:
    """Each service of a stack with its containers (or Swarm tasks) and their state."""
    stack = stack_for_caller(request)
    stacks: Stacks = request.app[STACKS]
    content = await asyncio.to_thread(stacks.read_file, stack)
    deployment = stacks.deployment(stack["Type"], stack["EndpointId"], stack["Name"], content, stack["Env"],
                                   stacks.project_dir(stack["Id"]), entry_point=stack["EntryPoint"])
    return json_response(await deployment.service_states())


def managed_stack(request: web.Request) -> tuple[dict, dict]:
    """The stack and its environment, when the caller may change it."""
    stack = request.app[STORE].stacks.get(path_id(request))
    endpoint = stack_endpoint(request, stack["EndpointId"])
    require_stack_access(request, stack)
    raw = request.query.get("endpointId")
    if raw is not None and raw != str(stack["EndpointId"]):
        raise BadRequest(f"stack {stack['Id']} is on environment {stack['EndpointId']}, not {raw}")
    return stack, endpoint


async def handle_stack_update(request: web.Request) -> web.Response:
    """Change a stack's file or env and redeploy: only services whose config changed are recreated;
    Prune removes services no longer in the file; PullImage pulls images again (and rebuilds built ones).
    The project's other files stay; a multipart body whose `file` is a project archive replaces them all
    (fields as on create: file, Env, ComposeFile, Prune, PullImage)."""
    stack, endpoint = managed_stack(request)
    if stack.get("GitConfig"):
        raise BadRequest(f"stack {stack['Id']} is deployed from a git repository",
                         "push to the repository and redeploy (PUT /api/stacks/{id}/git/redeploy)")
    upload = None
    if request.content_type.startswith("multipart/"):
        body, upload = await stack_upload_form(request, require_file=False)
        if upload is None and "StackFileContent" not in body:
            body["StackFileContent"] = await asyncio.to_thread(request.app[STACKS].read_file, stack)
    else:
        body = await read_documented_fields(request, STACK_UPDATE_FIELDS)
    try:
        return await redeploy_stack(request, stack, endpoint, body, upload)
    finally:
        if upload is not None:
            await asyncio.to_thread(upload.discard)


async def redeploy_stack(request: web.Request, stack: dict, endpoint: dict, body: dict,
                         upload: StagedProject | None) -> web.Response:
    stacks: Stacks = request.app[STACKS]
    caller = caller_of(request)
    content, env = stack_content(body), stack_env(body) if "Env" in body else stack["Env"]
    entry_point = upload.entry_point if upload is not None else stack["EntryPoint"]
    progress = deploy_progress(request)
    project_dir = stacks.project_dir(stack["Id"])
    async with stacks.lock(stack["Id"]):
        staging = ""
        try:
            if upload is not None:
                staging = await asyncio.to_thread(stacks.stage, entry_point, content, env, upload)
            deployment = await project_deployment(request, stack["Type"], endpoint, stack["Name"], content, env,
                                                  stack["Id"], staging or None, entry_point)
            await apply_caller_rules(request, endpoint, deployment, stack)
            previous, previous_content = None, await asyncio.to_thread(stacks.read_file, stack)
            if upload is not None:
                if isinstance(deployment, ComposeDeployment):
                    deployment.note_replaced_project(await asyncio.to_thread(project_digest, staging))
                previous = await asyncio.to_thread(stacks.install, stack["Id"], staging)
                staging = upload.directory = ""
                deployment.compose.source_dir = entry_directory(project_dir, entry_point)
            else:
                await asyncio.to_thread(Stacks.write_files, project_dir, content, env, entry_point)
            deployment.progress = progress.publish
            try:
                await deployment.connector.store_project(stack["Name"], project_dir)
                await deployment.up(pull=bool(body.get("PullImage")), prune=bool(body.get("Prune")),
                                    **({"rebuild": True} if body.get("Rebuild") else {}))
            except (ApiError, OSError):
                if isinstance(deployment, ComposeDeployment):
                    with contextlib.suppress(ApiError, OSError):
                        await deployment.remove_built_images()
                if upload is not None:
                    await asyncio.to_thread(stacks.restore, stack["Id"], previous)
                else:
                    await asyncio.to_thread(Stacks.write_files, project_dir, previous_content, stack["Env"],
                                            stack["EntryPoint"])
                with contextlib.suppress(ApiError, OSError):  # the agent keeps what the stack had too
                    await deployment.connector.store_project(stack["Name"], project_dir)
                raise
            if previous is not None:
                await asyncio.to_thread(shutil.rmtree, previous, True)
            stack.update({"Env": env, "Status": STACK_ACTIVE, "UpdateDate": now(), "EntryPoint": entry_point,
                          "UpdatedBy": caller.user["Username"]})
            await request.app[STORE].commit()
            progress.finish({"stage": "done", "stack": stack["Id"]})
        except ApiError as exc:
            progress.finish({"stage": "error", "message": exc.message})
            raise
        finally:
            if staging and os.path.isdir(staging):
                await asyncio.to_thread(shutil.rmtree, staging, True)
    return json_response(stack_view(request, stack))


async def change_stack_state(request: web.Request, status: int) -> web.Response:
    stack, endpoint = managed_stack(request)
    stacks: Stacks = request.app[STACKS]
    async with stacks.lock(stack["Id"]):
        if status == STACK_ACTIVE:
            content = await asyncio.to_thread(stacks.read_file, stack)
            deployment = await project_deployment(request, stack["Type"], endpoint, stack["Name"], content,
                                                  stack["Env"], stack["Id"], entry_point=stack["EntryPoint"])
            await apply_caller_rules(request, endpoint, deployment, stack)
            await deployment.connector.store_project(stack["Name"], stacks.project_dir(stack["Id"]))
            await deployment.start()
        else:
            await stacks.remover(stack).stop()
        stack["Status"] = status
        await request.app[STORE].commit()
    return json_response(stack_view(request, stack))


async def handle_stack_start(request: web.Request) -> web.Response:
    """Start a stopped stack."""
    return await change_stack_state(request, STACK_ACTIVE)


async def handle_stack_stop(request: web.Request) -> web.Response:
    """Stop a stack (a Swarm stack's services are removed until it is started again)."""
    return await change_stack_state(request, STACK_INACTIVE)


async def handle_stack_delete(request: web.Request) -> web.Response:
    """Remove a stack: its containers or services, and the networks, volumes, configs and secrets it created."""
    stack, endpoint = managed_stack(request)
    stacks: Stacks = request.app[STACKS]
    async with stacks.lock(stack["Id"]):
        remover = stacks.remover(stack)
        await remover.down()
        await remove_agent_project(remover.connector, stack)
        store = request.app[STORE]
        store.stacks.delete(stack["Id"])
        control = stack_resource_control(store, stack)
        if control is not None:
            store.resource_controls.delete(control["Id"])
        await request.app[STORE].commit()
        await asyncio.to_thread(shutil.rmtree, stacks.project_dir(stack["Id"]), True)
    return web.Response(status=204)


async def remove_agent_project(connector: DockerConnector, stack: dict) -> None:
    """The copy of a removed (or moved) stack's files its agent kept; an agent that cannot be told is logged,
    the stack is gone all the same (its containers are, already)."""
    try:
        await connector.remove_project(stack["Name"])
    except ApiError as exc:
        log.warning("the files of stack %s stay on environment %s: %s", stack["Id"], stack["EndpointId"],
                    exc.message)


async def handle_stack_migrate(request: web.Request) -> web.Response:
    """Move a stack to another environment, {EndpointID, SwarmID, Name}: deployed there first, then removed here."""
    stack, _ = managed_stack(request)
    body = await read_json_object(request)
    target_id = field(body, "EndpointID", int, required=False, default=0)
    if target_id <= 0:
        raise BadRequest("Invalid request payload", "Invalid environment identifier. Must be a positive number")
    request.app[STORE].endpoints.get(target_id)
    target = stack_endpoint(request, target_id)
    name = field(body, "Name", str, required=False, default="").strip() or stack["Name"]
    if not STACK_NAME.match(name):
        raise BadRequest(f"invalid stack name {name!r}",
                         "use lowercase letters, digits, '-' and '_', starting with a letter or digit")
    if target_id == stack["EndpointId"] and name == stack["Name"]:
        raise BadRequest(f"stack {stack['Id']} is already on environment {target_id} under that name")
    stacks: Stacks = request.app[STACKS]
    if (target_id, name) in stacks.creating or any(
            s["Name"] == name and s["EndpointId"] == target_id for s in request.app[STORE].stacks):
        raise Conflict(f"A stack with the name '{name}' is already running on endpoint '{target['Name']}'")
    async with stacks.lock(stack["Id"]):
        content = await asyncio.to_thread(stacks.read_file, stack)
        deployment = await project_deployment(request, stack["Type"], target, name, content, stack["Env"],
                                              stack["Id"], entry_point=stack["EntryPoint"])
        await apply_caller_rules(request, target, deployment, stack)
        swarm_id = stack.get("SwarmId", "")
        if stack["Type"] == STACK_SWARM:
            if await deployment.namespace_objects("services"):
                raise Conflict(f"A stack with the name '{name}' is already running on endpoint '{target['Name']}'")
            swarm_id = field(body, "SwarmID", str, required=False, default="") or as_text(
                as_dict(await deployment.connector.request_json("GET", "/swarm")).get("ID"))
        elif await deployment.project_containers():
            raise Conflict(f"A stack with the name '{name}' is already running on endpoint '{target['Name']}'")
        try:
            await deployment.connector.store_project(name, stacks.project_dir(stack["Id"]))
            await deployment.up()
        except (ApiError, OSError):
            with contextlib.suppress(ApiError, OSError):
                await deployment.down()
            await undo_project(deployment, name)
            raise
        remover = stacks.remover(stack)
        await remover.down()
        await remove_agent_project(remover.connector, stack)
        store = request.app[STORE]
        control = stack_resource_control(store, stack)
        stack.update({"EndpointId": target_id, "Name": name, "SwarmId": swarm_id, "UpdateDate": now(),
                      "UpdatedBy": caller_of(request).user["Username"]})
        if control is not None:
            control["ResourceId"] = stack_resource_id(stack)
        await store.commit()
    return json_response(stack_view(request, stack))


async def handle_stacks_outside(request: web.Request) -> web.Response:
    """Compose projects running on an environment that were not deployed here (?endpointId=N)."""
    endpoint = stack_endpoint(request)
    connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
    containers = container_summaries(
        await connector.request_json("GET", f"/containers/json?all=1&filters={label_filter(LABEL_PROJECT)}"))
    managed = {s["Name"] for s in request.app[STORE].stacks if s["EndpointId"] == endpoint["Id"]}
    store, caller = request.app[STORE], caller_of(request)
    if endpoint_role(store, caller, endpoint) in OWNERSHIP_BOUND_ROLES:  # other users' projects stay unseen
        containers = [c for c in containers if visible_resource(store, caller, "containers", c)]
    projects: dict[str, dict] = {}
    for container in containers:
        labels = container["Labels"]
        name = labels.get(LABEL_PROJECT)
        if not name or name in managed:
            continue
        project = projects.setdefault(name, {"Name": name, "Type": STACK_COMPOSE, "EndpointId": endpoint["Id"],
                                             "Outside": True, "Services": [], "Containers": 0, "Running": 0,
                                             "WorkingDir": labels.get("com.docker.compose.project.working_dir", "")})
        project["Containers"] += 1
        project["Running"] += container["State"] == "running"
        service = labels.get(LABEL_SERVICE)
        if service and service not in project["Services"]:
            project["Services"].append(service)
    return json_response(sorted(projects.values(), key=lambda p: p["Name"]))


async def handle_stack_adopt(request: web.Request) -> web.Response:
    """Take over a compose project made elsewhere by supplying its file (administrators): from then on it is a
    full stack. Services whose containers do not match the file are recreated; named volumes are kept."""
    require_admin(request)
    body = await read_documented_fields(request, STACK_CREATE_FIELDS)
    endpoint = stack_endpoint(request)
    name = field(body, "Name", str)
    connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
    found = container_summaries(await connector.request_json(
        "GET", f"/containers/json?all=1&filters={label_filter(f'{LABEL_PROJECT}={name}')}"))
    if not found:
        raise NotFound(f"no compose project named {name!r} runs on environment {endpoint['Id']}")
    return json_response(stack_view(request, await create_stack(request, STACK_COMPOSE, body, adopting=True)))


# ================================================================================================================
# Stacks from git: a repository's checkout is the stack's project directory; redeployed by hand, by webhook or by
# polling. Git is the `git` command, run asynchronously, shallow, for one reference; credentials never in its argv.
# ================================================================================================================

GIT_TIMEOUT = 120.0
GIT_DEFAULT_COMPOSE_PATH = "docker-compose.yml"
GIT_PROTOCOLS = "http:https:ssh"  # GIT_ALLOW_PROTOCOL: never file://, ext:: (runs commands) or the others
GIT_REFERENCE = re.compile(r"^(?!-)(?!.*\.\.)[A-Za-z0-9._/@+-]{1,250}$")
GIT_SCP_URL = re.compile(r"^(?P<user>[A-Za-z0-9][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*):"
                         r"(?P<path>(?!-)[^\s]+)$")
GIT_STATUS_LINES = 6
GIT_SHUTDOWN_WAIT = 1.5  # seconds a poll's redeploy may go on once the server stops (it stops within 2 s)
WEBHOOK_GUESSES = 10  # wrong webhook ids an address may try in a burst; then one more every WEBHOOK_GUESS_REFILL s
WEBHOOK_GUESS_REFILL = 6.0


class GitProblem(BadRequest):
    """A repository could not be read as asked (credentials, reference, path, server): the message says which; it
    never holds a credential."""


class GitCredentials(RegistryPasswords):
    """Git passwords, tokens and deploy keys, sealed like registry passwords under a key of their own (git.key)."""

    AAD = b"portainer.py git credential"

    def __init__(self, directory: str):
        self.directory = directory
        self.reload()

    def reload(self) -> None:
        """At start, and after a restore: the data directory's key."""
        super().__init__(load_or_create_secret(self.directory, "git.key"))


@dataclasses.dataclass
class GitSource:
    """Where a stack's files come from, and how to get them; the secrets here are plain only while a git runs."""

    url: str
    reference: str = ""  # empty: the remote's default branch (its HEAD)
    username: str = ""
    password: str = dataclasses.field(default="", repr=False)  # never in a repr, so never in a traceback's
    ssh_key: str = dataclasses.field(default="", repr=False)  # a deploy key (OpenSSH) for ssh:// and user@host:path
    tls_skip_verify: bool = False

    @property
    def ssh(self) -> bool:
        return self.url.startswith("ssh://") or bool(GIT_SCP_URL.match(self.url))

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.ssh_key) if s]


def git_url(text: str) -> str:
    """A repository URL the server may fetch: https, http, or SSH; never a local path, another transport or a URL
    holding a credential (those go in RepositoryUsername/RepositoryPassword, so they are sealed and never shown)."""
    url = text.strip()
    if not url or len(url) > 2000 or any(c.isspace() or ord(c) < 32 for c in url) or url.startswith("-"):
        raise BadRequest("RepositoryURL must be a git repository URL such as https://git.example.com/team/app.git")
    if GIT_SCP_URL.match(url):
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("https", "http", "ssh") or not parts.hostname or parts.hostname.startswith("-"):
        raise BadRequest(f"RepositoryURL must start with https://, http:// or ssh:// (or be user@host:path), "
                         f"not {parts.scheme or 'a local path'}")
    if parts.password is not None or parts.scheme != "ssh" and parts.username is not None:
        raise BadRequest("RepositoryURL must not hold credentials",
                         "put them in RepositoryUsername and RepositoryPassword: they are sealed and never shown")
    return url


def git_reference(text: str) -> str:
    reference = text.strip()
    if reference and not GIT_REFERENCE.match(reference):
        raise BadRequest(f"invalid RepositoryReferenceName {reference[:100]!r}",
                         "a branch, a tag or a full reference such as refs/heads/main")
    return reference


def git_relative_path(text: str, field_name: str) -> str:
    """A path inside the repository (the compose file, an additional file)."""
    path = text.strip()
    normalised = os.path.normpath(path) if path else ""
    if not path or path.startswith("/") or normalised.startswith("..") or "\x00" in path or normalised == ".":
        raise BadRequest(f"{field_name} must be a path inside the repository, such as docker-compose.yml")
    return normalised


class Git:
    """The `git` command (Debian's git), run asynchronously with a timeout, never asking a terminal. A password
    reaches git through GIT_ASKPASS reading this process's environment, a deploy key through a 0600 file that
    lives while the command runs; neither is in an argument, a URL or a message."""

    ASKPASS = ('#!/bin/sh\n# portainer.py: answers git\'s credential prompts from its environment\n'
               'case "$1" in\n  Username*) printf \'%s\\n\' "$PORTAINER_GIT_USERNAME" ;;\n'
               '  *) printf \'%s\\n\' "$PORTAINER_GIT_PASSWORD" ;;\nesac\n')

    def __init__(self, directory: str, ca_file: str | None = None, timeout: float = GIT_TIMEOUT):
        self.directory = os.path.join(directory, "git")  # askpass, HOME, pinned SSH host keys
        self.ca_file = ca_file
        self.timeout = timeout

    def prepare(self) -> None:
        os.makedirs(os.path.join(self.directory, "home"), mode=0o700, exist_ok=True)
        askpass = os.path.join(self.directory, "askpass.sh")
        if not os.path.exists(askpass):
            write_private_file(askpass, self.ASKPASS.encode())
        os.chmod(askpass, 0o700)

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.directory, "known_hosts")

    async def run(self, source: GitSource, *args: str, cwd: str | None = None) -> str:
        executable = shutil.which("git")
        if executable is None:
            raise ServiceUnavailable("git is not installed on the server",
                                     "install Debian's git package (apt-get install git)")
        await asyncio.to_thread(self.prepare)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(self.directory, "home"),
               "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1",
               "GIT_ASKPASS": os.path.join(self.directory, "askpass.sh"), "GIT_ALLOW_PROTOCOL": GIT_PROTOCOLS,
               "PORTAINER_GIT_USERNAME": source.username, "PORTAINER_GIT_PASSWORD": source.password}
        options = ["-c", "credential.helper=", "-c", "core.askPass=" + env["GIT_ASKPASS"],
                   "-c", "protocol.file.allow=never", "-c", "http.lowSpeedLimit=1", "-c", "http.lowSpeedTime=30"]
        if source.tls_skip_verify:
            options += ["-c", "http.sslVerify=false"]
        elif self.ca_file:
            options += ["-c", "http.sslCAInfo=" + self.ca_file]
        key_file = None
        try:
            if source.ssh:
                ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",  # pinned on first use
                       "-o", "UserKnownHostsFile=" + self.known_hosts, "-o", "ConnectTimeout=15",
                       "-o", "IdentitiesOnly=yes", "-F", "/dev/null"]
                if source.ssh_key:
                    key_file = os.path.join(self.directory, f"key-{secrets.token_hex(8)}")
                    key = source.ssh_key.replace("\r\n", "\n").strip() + "\n"
                    await asyncio.to_thread(write_private_file, key_file, key.encode())
                    ssh += ["-i", key_file]
                env["GIT_SSH_COMMAND"] = " ".join(shlex.quote(part) for part in ssh)
            process = await asyncio.create_subprocess_exec(
                executable, *options, *args, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
            try:
                out, err = await asyncio.wait_for(process.communicate(), self.timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
                raise GitProblem(f"the git server for {source.url} did not answer within {self.timeout:.0f} s") \
                    from None
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                raise
        finally:
            if key_file:
                with contextlib.suppress(OSError):
                    os.unlink(key_file)
        if process.returncode != 0:
            raise git_failure(source, err.decode("utf-8", "replace"))
        return out.decode("utf-8", "replace")

    async def remote_commit(self, source: GitSource) -> str:
        """The commit the reference names on the remote now (`git ls-remote`: nothing is downloaded)."""
        reference = source.reference or "HEAD"
        out = await self.run(source, "ls-remote", source.url, reference)
        refs = {}
        for line in out.splitlines():
            commit, _, name = line.partition("\t")
            if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
                refs[name] = commit
        candidates = [reference] if reference.startswith("refs/") or reference == "HEAD" else \
            [f"refs/heads/{reference}", f"refs/tags/{reference}^{{}}", f"refs/tags/{reference}"]
        for name in candidates:
            if name in refs:
                return refs[name]
        raise GitProblem(f"reference {reference!r} not found in {source.url}",
                         "name a branch, a tag or a full reference such as refs/heads/main")

    async def fetch(self, source: GitSource, destination: str) -> str:
        """A shallow checkout of the one reference into destination (an empty directory; no .git kept); its
        commit."""
        await self.run(source, "init", "-q", destination)
        await self.run(source, "fetch", "-q", "--depth", "1", "--no-tags", "--no-recurse-submodules", source.url,
                       source.reference or "HEAD", cwd=destination)
        await self.run(source, "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", "FETCH_HEAD",
                       cwd=destination)
        commit = (await self.run(source, "rev-parse", "FETCH_HEAD^{commit}", cwd=destination)).strip()
        await asyncio.to_thread(shutil.rmtree, os.path.join(destination, ".git"))
        await asyncio.to_thread(refuse_escaping_links, destination)
        return commit


def git_failure(source: GitSource, stderr: str) -> GitProblem:
    """What git's complaint means for the user, with the credentials taken out of what it said."""
    text = stderr
    for secret in source.secrets():
        text = text.replace(secret, "***")
    text = re.sub(r"(://)[^/@\s]+@", r"\1", text)  # userinfo in any URL git echoes
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = "\n".join(lines[-GIT_STATUS_LINES:])
    lower = text.lower()
    url = source.url
    if any(s in lower for s in ("authentication failed", "could not read username", "could not read password",
                                "terminal prompts disabled", "access denied", "http basic", "error: 401",
                                "returned error: 403")):
        return GitProblem(f"the git server refused the credentials for {url}",
                          "check RepositoryUsername and RepositoryPassword (or the token)")
    if "permission denied (publickey" in lower:
        return GitProblem(f"the git server refused the deploy key for {url}",
                          "add the key's public half to the repository's deploy keys")
    if "host key verification failed" in lower or "remote host identification has changed" in lower:
        return GitProblem(f"the SSH host key of the git server for {url} is not the one seen first",
                          "if the server's key really changed, an administrator removes its line from "
                          "<data>/git/known_hosts")
    if "couldn't find remote ref" in lower or "not our ref" in lower or "unknown revision" in lower:
        return GitProblem(f"reference {source.reference or 'HEAD'!r} not found in {url}", detail)
    if "certificate" in lower or "ssl" in lower and "verif" in lower:
        return GitProblem(f"the certificate of the git server for {url} is not trusted",
                          "give its CA with --git-ca-file, or set TLSSkipVerify")
    if any(s in lower for s in ("could not resolve", "connection refused", "failed to connect", "timed out",
                                "no route to host", "network is unreachable", "couldn't connect",
                                "connection reset", "could not read from remote")):
        return GitProblem(f"the git server for {url} could not be reached", detail)
    if "not found" in lower or "does not appear to be a git repository" in lower or "repository" in lower:
        return GitProblem(f"no git repository at {url}", detail)
    return GitProblem(f"git could not read {url}", detail)


def refuse_escaping_links(root: str) -> None:
    """A symbolic link in a checkout must stay inside it: a bind mount or file secret follows it on the host."""
    base = os.path.realpath(root)
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if target != base and not target.startswith(base + os.sep):
                    raise GitProblem(f"the repository's {os.path.relpath(path, root)!r} is a symbolic link to "
                                     f"outside the repository")


async def fetch_checkout(app: web.Application, source: GitSource, config_path: str,
                         additional_files: list[str]) -> tuple[StagedProject, str, str]:
    """Fetch a reference into a staging directory beside the stacks' projects, as a project upload is: (the
    project, its commit, its compose file's text). A missing compose file or additional file is a 400; nothing is
    left behind on failure."""
    path = await asyncio.to_thread(app[STACKS].new_staging)
    try:
        commit = await app[GIT].fetch(source, path)
        for relative, name in [(config_path, "ComposeFile"), *((f, "AdditionalFiles") for f in additional_files)]:
            full = os.path.realpath(os.path.join(path, relative))
            if not full.startswith(os.path.realpath(path) + os.sep) or not os.path.isfile(full):
                raise GitProblem(f"{relative!r} ({name}) is not a file in {source.url} at "
                                 f"{source.reference or 'HEAD'} (commit {commit[:12]})")
        content = await asyncio.to_thread(read_text_file, os.path.join(path, config_path))
        if additional_files:
            content = await asyncio.to_thread(merge_compose_files, path, config_path, additional_files)
        return StagedProject(path, config_path), commit, content
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, path, True)
        raise


def plain_yaml(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_yaml(v) for v in value]
    return value


def merge_yaml(base: Any, override: Any) -> Any:
    """An override file over a compose file: mappings merged key by key, anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge_yaml(base[key], value) if key in base else value
        return merged
    return override


def merge_compose_files(root: str, config_path: str, additional_files: list[str]) -> str:
    """The compose file with the AdditionalFiles merged over it in order (as `docker compose -f a -f b` merges
    mappings), written back in its place so that the stack's file is what runs."""
    path = os.path.join(root, config_path)
    merged = plain_yaml(load_yaml(read_text_file(path), config_path))
    for relative in additional_files:
        override = load_yaml(read_text_file(os.path.join(root, relative)), relative)
        if not isinstance(override, dict):
            raise BadRequest(f"{relative}: an additional file is a mapping, as a compose file is")
        merged = merge_yaml(merged, plain_yaml(override))
    text = yaml.safe_dump(merged, sort_keys=False, default_flow_style=False)
    write_stack_file(path, text.encode())
    return text


def read_text_file(path: str, limit: int = MAX_JSON_BODY) -> str:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise BadRequest(f"{os.path.basename(path)} is larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{os.path.basename(path)} is not UTF-8 text") from None


def parse_go_duration(text: str, field_name: str) -> float:
    """A Go duration ("5m", "1h30m", "90s") in seconds."""
    value = text.strip()
    parts = DURATION_PART.findall(value)
    if not value or "".join(number + unit for number, unit in parts) != value:
        raise BadRequest(f"{field_name} must be a duration such as 5m, 1h or 90s")
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * scale[unit] for number, unit in parts)


GIT_AUTO_UPDATE = {"Interval": str, "Webhook": (str, bool), "ForceUpdate": bool, "ForcePullImage": bool,
                   "WebhookEnv": bool}
GIT_SOURCE_FIELDS = {"RepositoryReferenceName": str, "RepositoryAuthentication": bool, "RepositoryUsername": str,
                     "RepositoryPassword": str, "RepositorySSHKey": str, "TLSSkipVerify": bool}
GIT_STACK_CREATE_FIELDS = {"Name": str, "RepositoryURL": str, "ComposeFile": str, "AdditionalFiles": [str],
                           "Env": STACK_ENV, "AutoUpdate": GIT_AUTO_UPDATE, "FromAppTemplate": bool,
                           **GIT_SOURCE_FIELDS}
SWARM_GIT_STACK_CREATE_FIELDS = {**GIT_STACK_CREATE_FIELDS, "SwarmID": str}
GIT_STACK_UPDATE_FIELDS = {"AutoUpdate": GIT_AUTO_UPDATE, "Env": STACK_ENV, "Prune": bool, **GIT_SOURCE_FIELDS}
GIT_STACK_REDEPLOY_FIELDS = {"Env": STACK_ENV, "Prune": bool, "PullImage": bool, "StackName": str,
                             **GIT_SOURCE_FIELDS}


def git_auto_update(app: web.Application, body: dict, previous: dict | None) -> dict | None:
    """Portainer's AutoUpdate {Interval, Webhook, ForceUpdate, ForcePullImage}, checked. The webhook id is always
    made here (a random UUID), whatever the client sent: a chosen id could be guessed. WebhookEnv (portainer.py's
    own) lets a webhook call's query parameters set the values of the stack's existing variables."""
    raw = body.get("AutoUpdate")
    if raw is None:
        return None
    interval = (raw.get("Interval") or "").strip()
    if interval:
        seconds = parse_go_duration(interval, "AutoUpdate.Interval")
        minimum = app[CONFIG].git_poll_minimum
        if seconds < minimum:
            raise BadRequest(f"AutoUpdate.Interval must be at least {minimum:g} s",
                             "the server's --git-poll-minimum sets the shortest interval")
    webhook = raw.get("Webhook")
    keep = (previous or {}).get("Webhook", "")
    return {"Interval": interval, "Webhook": (keep or str(uuid.uuid4())) if webhook else "",
            "ForceUpdate": bool(raw.get("ForceUpdate")), "ForcePullImage": bool(raw.get("ForcePullImage")),
            "WebhookEnv": bool(raw.get("WebhookEnv")), "JobID": str(uuid.uuid4()) if interval else ""}


def git_source_from_body(app: web.Application, body: dict, url: str, stack: dict | None = None) -> GitSource:
    """Where to fetch from: the body's reference and credentials, else the stack's (unsealed for this fetch)."""
    config = (stack or {}).get("GitConfig") or {}
    reference = git_reference(body["RepositoryReferenceName"]) if "RepositoryReferenceName" in body \
        else config.get("ReferenceName", "")
    source = GitSource(url, reference, tls_skip_verify=body.get("TLSSkipVerify", config.get("TLSSkipVerify", False)))
    authentication = body.get("RepositoryAuthentication")
    if authentication is None and stack is not None:  # unchanged: the stack's own credentials
        source.username = (config.get("Authentication") or {}).get("Username", "")
        source.password = git_secret(app, stack, "_GitPassword")
        source.ssh_key = git_secret(app, stack, "_GitSSHKey")
    elif authentication:
        source.username = (body.get("RepositoryUsername") or "").strip()
        source.password = body.get("RepositoryPassword") or ""
        if not source.password and stack is not None:
            source.password = git_secret(app, stack, "_GitPassword")
    if body.get("RepositorySSHKey"):
        source.ssh_key = body["RepositorySSHKey"]
    elif stack is not None and authentication is not None:
        source.ssh_key = git_secret(app, stack, "_GitSSHKey")
    if source.ssh_key and not source.ssh:
        raise BadRequest("RepositorySSHKey is for ssh:// and user@host:path URLs")
    if source.ssh_key and "PRIVATE KEY" not in source.ssh_key:
        raise BadRequest("RepositorySSHKey must be an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY-----)")
    if authentication and not source.ssh and (not source.username or not source.password):
        raise BadRequest("RepositoryUsername and RepositoryPassword are required when RepositoryAuthentication "
                         "is on")
    return source


def git_secret(app: web.Application, stack: dict, key: str) -> str:
    from cryptography.exceptions import InvalidTag
    try:
        return app[GIT_CREDENTIALS].open(stack.get(key, ""))
    except (InvalidTag, ValueError, IndexError):
        raise Conflict(f"the git credentials of {stack.get('Name') or stack.get('Title')!r} cannot be unsealed",
                       "git.key in the data directory changed; enter them again") from None


def git_stack_fields(app: web.Application, source: GitSource, config_path: str, commit: str,
                     auto_update: dict | None, caller: Caller, additional_files: list[str]) -> dict:
    """What a stack record keeps of its repository: Portainer's GitConfig (never a password), AutoUpdate, and the
    sealed credentials and deploying user under `_` keys (never shown)."""
    sealer = app[GIT_CREDENTIALS]
    return {
        "GitConfig": {"URL": source.url, "ReferenceName": source.reference, "ConfigFilePath": config_path,
                      "ConfigHash": commit, "TLSSkipVerify": source.tls_skip_verify,
                      "Authentication": {"Username": source.username, "Password": "", "GitCredentialID": 0,
                                         "AuthorizationType": 0} if source.username or source.ssh_key else None},
        "AutoUpdate": auto_update, "AdditionalFiles": additional_files,
        "GitCheck": {"Time": now(), "Commit": commit, "Outcome": "deployed", "Message": ""},
        "_GitPassword": sealer.seal(source.password) if source.password else "",
        "_GitSSHKey": sealer.seal(source.ssh_key) if source.ssh_key else "",
        "_GitUserId": caller.id}


async def create_git_stack(request: web.Request, stack_type: int) -> web.Response:
    """Fetch the repository's reference, then deploy the checkout as the stack's project directory through the
    same create_stack every other create route uses."""
    fields = SWARM_GIT_STACK_CREATE_FIELDS if stack_type == STACK_SWARM else GIT_STACK_CREATE_FIELDS
    body = await read_documented_fields(request, fields)
    stack_endpoint(request)  # refused before anything is fetched for a caller who may not deploy here
    app = request.app
    url = git_url(field(body, "RepositoryURL", str))
    config_path = git_relative_path(body.get("ComposeFile") or GIT_DEFAULT_COMPOSE_PATH, "ComposeFile")
    additional = [git_relative_path(f, "AdditionalFiles") for f in body.get("AdditionalFiles", [])]
    source = git_source_from_body(app, body, url)
    auto_update = git_auto_update(app, body, None)
    project, commit, content = await fetch_checkout(app, source, config_path, additional)
    record = git_stack_fields(app, source, config_path, commit, auto_update, caller_of(request), additional)
    stack = await create_stack(request, stack_type, {**body, "StackFileContent": content}, upload=project,
                               from_template=bool(body.get("FromAppTemplate")), record=record)
    app[GIT_UPDATES].schedule(stack)
    return json_response(stack_view(request, stack))


async def handle_stack_create_standalone_repository(request: web.Request) -> web.Response:
    """Deploy a compose stack from a git repository: {Name, RepositoryURL, RepositoryReferenceName, ComposeFile,
    RepositoryAuthentication, RepositoryUsername, RepositoryPassword, Env, AutoUpdate, TLSSkipVerify}."""
    return await create_git_stack(request, STACK_COMPOSE)


async def handle_stack_create_swarm_repository(request: web.Request) -> web.Response:
    """Deploy a Swarm stack from a git repository (the standalone fields and SwarmID)."""
    return await create_git_stack(request, STACK_SWARM)


class StackActor:
    """What the stack checks read of a request, for a redeploy nobody waits on (webhook, poll): the app, and the
    user the stack deploys as, so the new files are vetted exactly as that user's own request would be."""

    def __init__(self, app: web.Application, caller: Caller):
        self.app = app
        self.headers: dict[str, str] = {}
        self.caller = caller

    def __getitem__(self, key):
        if key is CALLER_KEY:
            return self.caller
        raise KeyError(key)

    def get(self, key, default=None):
        return self.caller if key is CALLER_KEY else default


def git_actor(app: web.Application, stack: dict) -> StackActor:
    """The user whose rights a background redeploy has: who made the stack or last changed its git settings."""
    user = app[STORE].users.find(stack.get("_GitUserId", 0))
    if user is None:
        raise Forbidden(f"stack {stack['Name']} deploys as a user who no longer exists",
                        "an administrator saves its git settings again (POST /api/stacks/{id}/git)")
    return StackActor(app, Caller(user, "git"))


async def redeploy_git_stack(actor: web.Request | StackActor, stack: dict, source: GitSource | None = None,
                             env: list[dict] | None = None, pull: bool = False, prune: bool = False,
                             fetch: bool = True) -> str:
    """Fetch the stack's reference (or keep its files when fetch is False) and redeploy it through the same
    redeploy_stack an update uses: the checkout is staged, vetted, swapped in whole, and the previous project comes
    back if anything fails, so the running stack stays as it was. The commit deployed."""
    app = actor.app
    stacks: Stacks = app[STACKS]
    endpoint = app[STORE].endpoints.get(stack["EndpointId"])
    require_stack_management(actor, endpoint)
    if not can_access_stack(app[STORE], actor[CALLER_KEY], stack):
        raise Forbidden(f"access denied to stack {stack['Id']}")
    config = stack["GitConfig"]
    source = source or git_source_from_body(app, {}, config["URL"], stack)
    body: dict = {"PullImage": pull, "Prune": prune, "Rebuild": fetch and stack["Type"] == STACK_COMPOSE,
                  **({"Env": env} if env is not None else {})}
    project, commit = None, config["ConfigHash"]
    started = time.monotonic()
    if fetch:
        project, commit, body["StackFileContent"] = await fetch_checkout(app, source, config["ConfigFilePath"],
                                                                         stack["AdditionalFiles"])
    else:
        body["StackFileContent"] = await asyncio.to_thread(stacks.read_file, stack)
    fetched = time.monotonic()
    try:
        await redeploy_stack(actor, stack, endpoint, body, project)
    finally:
        if project is not None:
            await asyncio.to_thread(project.discard)
    log.info("stack %s: commit %s fetched in %.2f s, deployed in %.2f s", stack["Name"], commit[:12],
             fetched - started, time.monotonic() - fetched)
    config.update({"ConfigHash": commit, "ReferenceName": source.reference, "TLSSkipVerify": source.tls_skip_verify})
    stack["GitCheck"] = {"Time": now(), "Commit": commit, "Outcome": "deployed", "Message": ""}
    await app[STORE].commit()
    return commit


def git_stack_for_caller(request: web.Request) -> tuple[dict, dict]:
    stack, endpoint = managed_stack(request)
    if not stack.get("GitConfig"):
        raise BadRequest(f"stack {stack['Id']} is not deployed from a git repository")
    return stack, endpoint


def remember_git_source(app: web.Application, stack: dict, source: GitSource, caller: Caller) -> None:
    """Keep the reference and credentials a successful fetch used (sealed), and who the stack now deploys as."""
    sealer = app[GIT_CREDENTIALS]
    config = stack["GitConfig"]
    config["ReferenceName"], config["TLSSkipVerify"] = source.reference, source.tls_skip_verify
    config["Authentication"] = {"Username": source.username, "Password": "", "GitCredentialID": 0,
                                "AuthorizationType": 0} if source.username or source.ssh_key else None
    stack["_GitPassword"] = sealer.seal(source.password) if source.password else ""
    stack["_GitSSHKey"] = sealer.seal(source.ssh_key) if source.ssh_key else ""
    stack["_GitUserId"] = caller.id


async def handle_stack_git_update(request: web.Request) -> web.Response:
    """Change a git stack's reference, credentials, auto-update and env (POST /api/stacks/{id}/git): the new
    settings are tried with `git ls-remote` before they are kept; nothing is redeployed."""
    stack, _ = git_stack_for_caller(request)
    body = await read_documented_fields(request, GIT_STACK_UPDATE_FIELDS)
    app, caller = request.app, caller_of(request)
    source = git_source_from_body(app, body, stack["GitConfig"]["URL"], stack)
    await app[GIT].remote_commit(source)
    auto_update = git_auto_update(app, body, stack.get("AutoUpdate")) if "AutoUpdate" in body \
        else stack.get("AutoUpdate")
    remember_git_source(app, stack, source, caller)
    stack["AutoUpdate"] = auto_update
    if "Env" in body:
        stack["Env"] = stack_env(body)
    stack.update({"UpdateDate": now(), "UpdatedBy": caller.user["Username"]})
    await app[STORE].commit()
    app[GIT_UPDATES].schedule(stack)
    return json_response(stack_view(request, stack))


async def handle_stack_git_redeploy(request: web.Request) -> web.Response:
    """Pull and redeploy (PUT /api/stacks/{id}/git/redeploy {RepositoryReferenceName, RepositoryAuthentication,
    RepositoryUsername, RepositoryPassword, Env, Prune, PullImage}): fetch the reference, deploy it."""
    stack, _ = git_stack_for_caller(request)
    body = await read_documented_fields(request, GIT_STACK_REDEPLOY_FIELDS)
    app = request.app
    source = git_source_from_body(app, body, stack["GitConfig"]["URL"], stack)
    env = stack_env(body) if "Env" in body else None
    await redeploy_git_stack(request, stack, source, env, pull=bool(body.get("PullImage")),
                             prune=bool(body.get("Prune")))
    remember_git_source(app, stack, source, caller_of(request))
    await app[STORE].commit()
    return json_response(stack_view(request, stack))


async def fetch_compose_text(app: web.Application, source: GitSource, config_path: str) -> tuple[str, str]:
    """Only the compose file of a reference (a template keeps no other file): (its text, the commit)."""
    project, commit, content = await fetch_checkout(app, source, config_path, [])
    await asyncio.to_thread(project.discard)
    return content, commit


def install_edge_project(project: StagedProject, project_dir: str) -> None:
    """A checkout becomes an edge stack's directory whole (each environment gets it as it deploys)."""
    previous = f"{project_dir}.previous-{secrets.token_hex(4)}"
    if os.path.lexists(project_dir):
        os.replace(project_dir, previous)
    os.makedirs(os.path.dirname(project_dir), mode=0o700, exist_ok=True)
    os.replace(project.directory, project_dir)
    project.directory = ""
    shutil.rmtree(previous, ignore_errors=True)


def git_source_fields(app: web.Application, source: GitSource, config_path: str, commit: str) -> dict:
    """What a custom template or an edge stack keeps of its repository: GitConfig and sealed credentials."""
    fields = git_stack_fields(app, source, config_path, commit, None, Caller({"Id": 0}, "git"), [])
    return {"GitConfig": fields["GitConfig"], "_GitPassword": fields["_GitPassword"],
            "_GitSSHKey": fields["_GitSSHKey"]}


EDGE_STACK_GIT_FIELDS = {"Name": str, "RepositoryURL": str, "FilePathInRepository": str, "EdgeGroups": [int],
                         "DeploymentType": int, **GIT_SOURCE_FIELDS}


async def handle_edge_stack_create_repository(request: web.Request) -> web.Response:
    """Deploy a compose file from a git repository to every environment of some edge groups: {Name, RepositoryURL,
    RepositoryReferenceName, FilePathInRepository, EdgeGroups, RepositoryAuthentication, ...} (administrators)."""
    require_admin(request)
    body = await read_documented_fields(request, EDGE_STACK_GIT_FIELDS)
    app = request.app
    url = git_url(field(body, "RepositoryURL", str))
    config_path = git_relative_path(body.get("FilePathInRepository") or GIT_DEFAULT_COMPOSE_PATH,
                                    "FilePathInRepository")
    source = git_source_from_body(app, body, url)
    project, commit, content = await fetch_checkout(app, source, config_path, [])
    record = git_source_fields(app, source, config_path, commit)
    try:
        return json_response(await create_edge_stack(request, {**body, "StackFileContent": content}, record,
                                                     project))
    finally:
        await asyncio.to_thread(project.discard)


async def handle_edge_stack_git_redeploy(request: web.Request) -> web.Response:
    """Fetch an edge stack's repository again and send the file to every environment of its groups, as a new
    version (administrators)."""
    edge_stack = edge_stack_for_admin(request)
    config = edge_stack.get("GitConfig")
    if not config:
        raise BadRequest(f"edge stack {edge_stack['Id']} is not from a git repository")
    app = request.app
    body = await read_documented_fields(request, GIT_SOURCE_FIELDS)
    source = git_source_from_body(app, body, config["URL"], edge_stack)
    project, commit, content = await fetch_checkout(app, source, config["ConfigFilePath"], [])
    edge: EdgeStacks = app[EDGE_STACKS]
    project_dir = edge.project_dir(edge_stack["Id"])
    try:
        ComposeFile(content, {}, edge_stack["Name"], project_dir, source_dir=project.directory,
                    file_name=config["ConfigFilePath"])
        for key in list(edge_stack["Status"]):  # no deploy reads the directory while it is swapped
            edge.stop_deploying(edge_stack, int(key))
        await asyncio.to_thread(install_edge_project, project, project_dir)
    finally:
        await asyncio.to_thread(project.discard)
    edge_stack.update({"EntryPoint": config["ConfigFilePath"], "Version": edge_stack.get("Version", 1) + 1,
                       **git_source_fields(app, source, config["ConfigFilePath"], commit)})
    for key in list(edge_stack["Status"]):
        edge.set_status(edge_stack, int(key), EDGE_PENDING)
    await app[STORE].commit()
    edge.schedule(edge_stack)
    return json_response(Collection.public_view(edge_stack))


class WebhookGuesses:
    """Wrong webhook ids per client address: a burst, then one more every few seconds, then a clear 429."""

    MAX_ADDRESSES = 10000

    def __init__(self, burst: int = WEBHOOK_GUESSES, refill: float = WEBHOOK_GUESS_REFILL):
        self.burst, self.refill = burst, refill
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, address: str) -> float:
        tokens, stamp = self._buckets.get(address, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - stamp) / self.refill)

    def check(self, address: str) -> None:
        if self._tokens(address) < 1:
            error = TooManyRequests(f"too many unknown webhook ids from {address}; try again in "
                                    f"{int(self.refill) + 1} s")
            error.retry_after = int(self.refill) + 1
            raise error

    def missed(self, address: str) -> None:
        self._buckets[address] = (self._tokens(address) - 1, time.monotonic())
        while len(self._buckets) > self.MAX_ADDRESSES:
            self._buckets.pop(next(iter(self._buckets)))


@public
async def handle_stack_webhook(request: web.Request) -> web.Response:
    """Fetch and redeploy the stack whose webhook this is (POST /api/stacks/webhooks/{webhookID}); ?pullImage=true
    pulls images again. The id is the only credential; a wrong one is a 404, and many are a 429."""
    app, address = request.app, client_address(request)
    app[WEBHOOK_GUESSES].check(address)
    token = request.match_info["webhook"]
    stack = None
    for candidate in app[STORE].stacks:
        hook = (candidate.get("AutoUpdate") or {}).get("Webhook") or ""
        if hook and hmac.compare_digest(hook.encode(), token.encode()):
            stack = candidate
    if stack is None or not stack.get("GitConfig"):
        app[WEBHOOK_GUESSES].missed(address)
        raise NotFound("Unable to find a stack with this webhook")
    env = None
    extra = {k: v for k, v in request.query.items() if k != "pullImage"}
    if extra:
        if not stack["AutoUpdate"].get("WebhookEnv"):
            raise BadRequest("this stack's webhook takes no variables", "its AutoUpdate.WebhookEnv is off")
        known = {e["name"] for e in stack["Env"]}
        unknown = sorted(set(extra) - known)
        if unknown:
            raise BadRequest(f"the stack has no variable {unknown[0][:64]!r}",
                             "a webhook sets only variables the stack already has")
        env = [{"name": e["name"], "value": extra.get(e["name"], e["value"])} for e in stack["Env"]]
    pull = request.query.get("pullImage", "").lower() in ("1", "true") or stack["AutoUpdate"].get("ForcePullImage")
    await git_update(app, stack, "webhook", env=env, pull=bool(pull), force=True)
    return web.Response(status=204)


async def git_update(app: web.Application, stack: dict, trigger: str, env: list[dict] | None = None,
                     pull: bool = False, force: bool = False) -> str:
    """One check of a git stack (by webhook or poll): redeploy when the remote commit changed, when forced (a
    webhook), or when ForceUpdate is on and the containers drifted from the file. The outcome goes to the stack's
    GitCheck and the activity log; a failure leaves the running stack as it was, and is raised."""
    auto = stack.get("AutoUpdate") or {}
    outcome, message, commit, status = "unchanged", "", stack["GitConfig"]["ConfigHash"], 200
    try:
        actor = git_actor(app, stack)
        source = git_source_from_body(app, {}, stack["GitConfig"]["URL"], stack)
        if force or await app[GIT].remote_commit(source) != commit:
            commit = await redeploy_git_stack(actor, stack, source, env, pull=pull or auto.get("ForcePullImage"))
            outcome = "deployed"
        elif auto.get("ForceUpdate") and await git_stack_drifted(actor, stack):
            await redeploy_git_stack(actor, stack, source, pull=pull, fetch=False)
            outcome, message = "deployed", "the containers had drifted from the file"
    except ApiError as exc:
        outcome, message, status = "failed", exc.message, exc.status
        raise
    finally:
        if app[STORE].stacks.find(stack["Id"]) is stack:
            stack["GitCheck"] = {"Time": now(), "Commit": commit, "Outcome": outcome, "Message": message,
                                 "Trigger": trigger}
            if outcome != "unchanged":
                app[ACTIVITY].record({
                    "kind": "activity", "userId": None, "username": f"git {trigger}",
                    "endpointId": stack["EndpointId"], "context": stack["Name"], "method": trigger.upper(),
                    "path": f"/api/stacks/{stack['Id']}/git/redeploy",
                    "action": f"{trigger}: stack {stack['Name']} {outcome} {commit[:12]} {message}".strip(),
                    "query": "", "status": status, "origin": "portainer.py"})
                with contextlib.suppress(ApiError):  # an unchanged check waits for the next write
                    await app[STORE].commit()
    return commit


async def git_stack_drifted(actor: StackActor, stack: dict) -> bool:
    """Whether a compose stack's containers no longer match its file (removed, stopped, changed by hand)."""
    if stack["Type"] != STACK_COMPOSE:
        return False
    content = await asyncio.to_thread(actor.app[STACKS].read_file, stack)
    endpoint = actor.app[STORE].endpoints.get(stack["EndpointId"])
    deployment = await project_deployment(actor, stack["Type"], endpoint, stack["Name"], content, stack["Env"],
                                          stack["Id"], entry_point=stack["EntryPoint"])
    containers = await deployment.project_containers()
    for name, service in deployment.compose.services.items():
        if service.get("build") is not None:  # part of the hash `up` gave its containers
            service["image_id"] = await deployment.image_id(service["image"])
        mine = [c for c in containers if c["Labels"].get(LABEL_SERVICE) == name]
        if len(mine) != service["replicas"] or any(
                c["Labels"].get(LABEL_HASH) != deployment.compose.config_hash(name) or c["State"] != "running"
                for c in mine):
            return True
    return False


class GitUpdates:
    """Polls each git stack with an AutoUpdate.Interval: one check at a time per stack, each interval jittered by
    up to a tenth so that stacks made together do not all ask their servers at the same moment."""

    TICK = 0.5

    def __init__(self, app: web.Application):
        self.app = app
        self.due: dict[int, float] = {}
        self.running: dict[int, asyncio.Task] = {}

    @staticmethod
    def interval(stack: dict) -> float:
        raw = (stack.get("AutoUpdate") or {}).get("Interval") or ""
        try:
            return parse_go_duration(raw, "Interval") if raw and stack.get("GitConfig") else 0.0
        except BadRequest:
            return 0.0

    def schedule(self, stack: dict, first: bool = False) -> None:
        seconds = self.interval(stack)
        if seconds <= 0:
            self.due.pop(stack["Id"], None)
            return
        delay = random.uniform(0, seconds) if first else seconds * random.uniform(0.9, 1.1)
        self.due[stack["Id"]] = time.monotonic() + delay

    def schedule_all(self) -> None:
        """At start, and after a restore: every git stack with an interval, at a random point of its first one."""
        self.due.clear()
        for stack in self.app[STORE].stacks:
            self.schedule(stack, first=True)

    async def run(self) -> None:
        self.schedule_all()
        while True:
            await asyncio.sleep(self.TICK)
            moment = time.monotonic()
            for stack_id, when in list(self.due.items()):
                if when > moment or stack_id in self.running:
                    continue
                stack = self.app[STORE].stacks.find(stack_id)
                if stack is None or self.interval(stack) <= 0:
                    self.due.pop(stack_id, None)
                    continue
                self.schedule(stack)
                task = self.running[stack_id] = asyncio.ensure_future(self.poll(stack))
                task.add_done_callback(lambda _, stack_id=stack_id: self.running.pop(stack_id, None))

    async def poll(self, stack: dict) -> None:
        try:
            await git_update(self.app, stack, "poll")
        except ApiError as exc:
            log.info("auto-update of stack %s: %s", stack["Name"], exc.message)
        except (OSError, aiohttp.ClientError) as exc:
            log.warning("auto-update of stack %s failed: %s", stack["Name"], exc)
        except Exception:  # a background task: what went wrong is logged, and the next poll comes
            log.exception("auto-update of stack %s failed", stack["Name"])

    async def stop(self) -> None:
        """At shutdown: a redeploy under way may finish (a cut one would leave the stack half deployed), for a while."""
        running = list(self.running.values())
        if running:
            await asyncio.wait(running, timeout=GIT_SHUTDOWN_WAIT)
        for task in running:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def git_updates_lifecycle(app: web.Application):
    """The git stacks' polling runs for the server's lifetime."""
    task = asyncio.ensure_future(app[GIT_UPDATES].run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await app[GIT_UPDATES].stop()


# ================================================================================================================
# Edge: agents that dial in through a tunnel, the edge environment kind, edge groups, jobs and stacks
# ================================================================================================================

# -- tunnels: the connected edge agents, and the connector that reaches an engine through one ----------------------


class EdgeTunnels:
    """Live edge tunnels by environment id, in memory only: connecting, heartbeats and disconnecting never
    write the store. Per tunnel the server keeps the WebSocket, its Tunnel and one last-seen stamp."""

    def __init__(self):
        self.tunnels: dict[int, shared.Tunnel] = {}
        self.last_seen: dict[int, int] = {}
        # The latest Edge ID refused per environment, shown to administrators so they can re-associate.
        self.refused: dict[int, dict] = {}
        self.websockets: weakref.WeakSet = weakref.WeakSet()
        # Called with the environment id whenever its agent connects (edge jobs waiting for it run then).
        self.on_connect: list[Callable[[int], None]] = []
        self.tasks: set[asyncio.Task] = set()
        # A fleet reconnecting after a restart is snapshotted a few at a time, not all at once.
        self.snapshot_slots = asyncio.Semaphore(EDGE_CONNECT_SNAPSHOTS)

    async def snapshot_when_connected(self, environments: "Environments", endpoint_id: int) -> None:
        async with self.snapshot_slots:
            if self.is_connected(endpoint_id):
                await environments.snapshot(endpoint_id)

    def spawn(self, coroutine: Awaitable) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def is_connected(self, endpoint_id: int) -> bool:
        # a dead tunnel stays listed while its closing handshake times out; it carries nothing any more
        tunnel = self.tunnels.get(endpoint_id)
        return tunnel is not None and not tunnel.closed

    def seen(self, endpoint_id: int) -> int:
        return now() if endpoint_id in self.tunnels else self.last_seen.get(endpoint_id, 0)


class EdgeConnector(AgentProjectFiles, DockerConnector):
    """An edge host's engine, reached through the tunnel its agent opened: one tunnel stream per connection.
    Its project files are reached through the same tunnel, on streams opened to the agent's "projects"."""

    def __init__(self, endpoint: dict, tunnels: EdgeTunnels):
        self.tunnels = tunnels
        super().__init__(endpoint)
        self.client = shared.DockerClient(self.open_connection, max_idle=EDGE_IDLE_STREAMS)
        self.projects_client = shared.DockerClient(lambda: self.open_connection("projects"), max_idle=0)

    async def open_connection(self, target: str = "docker") -> shared.HttpConnection:
        tunnel = self.tunnels.tunnels.get(self.endpoint_id)
        if tunnel is None:
            raise shared.DockerUnreachable(f"the edge agent of environment {self.endpoint_id} is not connected")
        try:
            stream = await tunnel.open_stream(target)
        except (ConnectionError, asyncio.TimeoutError) as exc:
            raise shared.DockerUnreachable(f"edge tunnel: {exc or 'no answer from the agent'}") from None
        return shared.HttpConnection(stream, stream)

    async def project_request(self, method: str, target: str, body=None, body_length=None,
                              timeout: float = 30.0) -> shared.DockerResponse:
        try:
            return await self.projects_client.request(method, target, [], body, body_length, timeout)
        except asyncio.TimeoutError:
            raise GatewayTimeout(f"the edge agent of environment {self.endpoint_id} did not answer in time") from None
        except shared.DockerUnreachable as exc:
            raise BadGateway(f"environment {self.endpoint_id} is unreachable", str(exc)) from None


# -- edge keys, the tunnel endpoint, association -------------------------------------------------------------------

MAX_EDGE_ID = 128


def server_certificate_path(config: argparse.Namespace) -> str:
    return config.sslcert or load_or_create_certificate(os.path.abspath(config.data))[0]


def edge_key_for(app: web.Application, endpoint: dict) -> str:
    """The key is derived, not stored: it always pins the certificate the server presents now."""
    fingerprint = certificate_fingerprint(server_certificate_path(app[CONFIG]))
    return shared.EdgeKey(endpoint["URL"], endpoint["Id"], fingerprint, endpoint["_EdgeSecret"]).encode()


def edge_agent_command(key: str) -> str:
    return f"EDGE=1 EDGE_KEY={key} EDGE_ID=$(cat /etc/machine-id) python3 agent.py"


def default_edge_server_url(request: web.Request) -> str:
    """Where agents dial when the administrator names no address: the host they reached us by, HTTPS port."""
    _, port = split_bind(request.app[CONFIG].bind_https)
    host = urllib.parse.urlsplit("//" + request.host).hostname or "localhost"
    return f"https://{'[' + host + ']' if ':' in host else host}:{port}"


def edge_endpoint(request: web.Request) -> dict:
    endpoint = request.app[STORE].endpoints.get(path_id(request))
    if endpoint["Type"] != ENDPOINT_EDGE:
        raise BadRequest(f"environment {endpoint['Id']} is not an edge environment")
    return endpoint


async def handle_edge_key(request: web.Request) -> web.Response:
    """An edge environment's key and the command that starts its agent (administrators)."""
    require_admin(request)
    endpoint = edge_endpoint(request)
    key = edge_key_for(request.app, endpoint)
    return json_response({"EdgeKey": key, "EdgeAgentCommand": edge_agent_command(key)})


ASSOCIATION_FIELDS = {"EdgeID": str}


async def handle_endpoint_association(request: web.Request) -> web.Response:
    """Re-associate an edge environment: bind {EdgeID}, or with none let the next agent that connects bind."""
    require_admin(request)
    endpoint = edge_endpoint(request)
    body = await read_documented_fields(request, ASSOCIATION_FIELDS) if request.can_read_body else {}
    edge_id = field(body, "EdgeID", str, required=False, default="").strip()
    if len(edge_id) > MAX_EDGE_ID:
        raise BadRequest(f"EdgeID is longer than {MAX_EDGE_ID} characters")
    await bind_edge_id(request, endpoint, edge_id)
    return json_response(request.app[ENVIRONMENTS].public_view(endpoint))


async def bind_edge_id(request: web.Request, endpoint: dict, edge_id: str) -> None:
    """Bind the environment to an Edge ID (none: the next agent that connects); the current agent is let go."""
    endpoint["EdgeID"] = edge_id
    await request.app[STORE].commit()
    tunnels = request.app[EDGE_TUNNELS]
    tunnels.refused.pop(endpoint["Id"], None)
    tunnel = tunnels.tunnels.get(endpoint["Id"])
    if tunnel is not None:
        await tunnel.ws.close(code=shared.aiohttp.WSCloseCode.POLICY_VIOLATION, message=b"re-associated")
    log.info("environment %s re-associated to Edge ID %r", endpoint["Id"], edge_id or "(next agent)")


async def handle_endpoint_association_delete(request: web.Request) -> web.Response:
    """Portainer's de-association: forget the edge agent's Edge ID and snapshot; the next agent binds
    (administrators)."""
    require_admin(request)
    endpoint = edge_endpoint(request)
    await bind_edge_id(request, endpoint, "")
    request.app[ENVIRONMENTS].snapshots.pop(endpoint["Id"], None)
    return web.Response(status=204)


@public
async def handle_edge_tunnel(request: web.Request) -> web.StreamResponse:
    """The edge agent's tunnel: a WebSocket on the HTTPS port; the agent proves itself with its key's secret."""
    if not request.secure:
        raise Forbidden("the edge tunnel is served on the HTTPS port only")
    app = request.app
    raw_id = request.headers.get(shared.EDGE_ENDPOINT_HEADER, "")
    secret = request.headers.get(shared.EDGE_SECRET_HEADER, "")
    edge_id = request.headers.get(shared.EDGE_ID_HEADER, "").strip()
    endpoint = app[STORE].endpoints.find(raw_id) if raw_id.isdigit() else None
    if endpoint is None or endpoint["Type"] != ENDPOINT_EDGE or not secret or \
            not hmac.compare_digest(secret.encode(), endpoint["_EdgeSecret"].encode()):
        log.warning("edge tunnel refused from %s: unknown environment or wrong secret", client_address(request))
        raise Unauthorized("invalid edge key")
    if not edge_id or len(edge_id) > MAX_EDGE_ID:
        raise BadRequest(f"the {shared.EDGE_ID_HEADER} header must carry the agent's Edge ID")
    endpoint_id = endpoint["Id"]
    tunnels, environments = app[EDGE_TUNNELS], app[ENVIRONMENTS]
    if not endpoint.get("EdgeID"):
        endpoint["EdgeID"] = edge_id
        await app[STORE].commit()
        log.info("environment %s is now associated with Edge ID %s", endpoint_id, edge_id)
    elif endpoint["EdgeID"] != edge_id:
        tunnels.refused[endpoint_id] = {"EdgeID": edge_id, "Address": client_address(request), "Time": now()}
        log.warning("edge tunnel refused for environment %s: Edge ID %r is not the associated one",
                    endpoint_id, edge_id)
        raise Forbidden("this edge key is associated with another Edge ID",
                        "an administrator can re-associate the environment")
    heartbeat = app[CONFIG].edge_heartbeat
    ws = web.WebSocketResponse(heartbeat=heartbeat, receive_timeout=shared.tunnel_receive_timeout(heartbeat),
                               max_msg_size=shared.TUNNEL_MAX_MESSAGE, compress=False,
                               timeout=shared.TUNNEL_CLOSE_TIMEOUT)
    await ws.prepare(request)
    tunnel = shared.Tunnel(ws)
    previous = tunnels.tunnels.get(endpoint_id)
    tunnels.tunnels[endpoint_id] = tunnel
    tunnels.websockets.add(ws)
    environments.forget(endpoint_id)  # pooled connections ran over the previous tunnel
    if previous is not None:
        await previous.ws.close(code=shared.aiohttp.WSCloseCode.GOING_AWAY, message=b"replaced")
    environments.status[endpoint_id] = STATUS_UP
    log.info("edge agent of environment %s connected from %s", endpoint_id, client_address(request))
    for notify in tunnels.on_connect:
        notify(endpoint_id)
    try:
        await tunnel.run()
    finally:
        if endpoint_id in app[STORE].endpoints:
            tunnels.last_seen[endpoint_id] = now()
        if tunnels.tunnels.get(endpoint_id) is tunnel:
            del tunnels.tunnels[endpoint_id]
            environments.status[endpoint_id] = STATUS_DOWN
            environments.forget(endpoint_id)
        log.info("edge agent of environment %s disconnected", endpoint_id)
    return ws


# -- edge groups: static lists, or the environments carrying some tags ---------------------------------------------


def edge_environment_ids(store: Store) -> set[int]:
    return {ep["Id"] for ep in store.endpoints if ep["Type"] == ENDPOINT_EDGE}


def edge_group_view(store: Store, group: dict) -> dict:
    return {**group, "TrustedEndpoints": edge_group_endpoint_ids(store, group["Id"])}


def id_list(body: dict, name: str) -> list[int]:
    values = field(body, name, list, required=False, default=[])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise BadRequest(f"{name} must be a list of ids")
    return sorted(set(values))


EDGE_GROUP_FIELDS = {"Name": str, "Dynamic": bool, "TagIds": [int], "Endpoints": [int], "PartialMatch": bool}


def checked_edge_group(store: Store, body: dict, group_id: int | None) -> dict:
    name = field(body, "Name", str).strip()
    if not name:
        raise BadRequest("Name is required")
    if any(g["Name"].lower() == name.lower() and g["Id"] != group_id for g in store.edge_groups):
        raise Conflict(f"an edge group named {name!r} already exists")
    dynamic = field(body, "Dynamic", bool, required=False, default=False)
    tag_ids, endpoints = id_list(body, "TagIds"), id_list(body, "Endpoints")
    if dynamic and not tag_ids:
        raise BadRequest("a dynamic edge group needs TagIds")
    not_edge = set(endpoints) - edge_environment_ids(store)
    if not dynamic and not_edge:
        raise BadRequest(f"not edge environments: {sorted(not_edge)}")
    return {"Name": name, "Dynamic": dynamic, "TagIds": tag_ids if dynamic else [],
            "Endpoints": [] if dynamic else endpoints,
            "PartialMatch": field(body, "PartialMatch", bool, required=False, default=False)}


async def handle_edge_groups_list(request: web.Request) -> web.Response:
    """Edge groups with the environments each holds now (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    return json_response([edge_group_view(store, g) for g in store.edge_groups])


async def handle_edge_group_create(request: web.Request) -> web.Response:
    """Create an edge group {Name, Dynamic, TagIds, Endpoints, PartialMatch} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    group = checked_edge_group(store, await read_documented_fields(request, EDGE_GROUP_FIELDS), None)
    group["Id"] = store.edge_groups.new_id()
    store.edge_groups.add(group)
    await store.commit()
    return json_response(edge_group_view(store, group))


async def handle_edge_group_inspect(request: web.Request) -> web.Response:
    """One edge group (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    return json_response(edge_group_view(store, store.edge_groups.get(path_id(request))))


async def handle_edge_group_update(request: web.Request) -> web.Response:
    """Replace an edge group's name, kind, tags or environments (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    group = store.edge_groups.get(path_id(request))
    group.update(checked_edge_group(store, await read_documented_fields(request, EDGE_GROUP_FIELDS), group["Id"]))
    await store.commit()
    return json_response(edge_group_view(store, group))


async def handle_edge_group_delete(request: web.Request) -> web.Response:
    """Delete an edge group no edge job uses (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    group = store.edge_groups.get(path_id(request))
    users = [j["Name"] for j in store.edge_jobs if group["Id"] in j["EdgeGroups"]]
    if users:
        raise Conflict(f"edge group {group['Name']!r} is used by edge jobs: {', '.join(users)}")
    store.edge_groups.delete(group["Id"])
    await store.commit()
    return web.Response(status=204)


# -- edge jobs: scripts run on edge hosts, at once or on a cron schedule -------------------------------------------

EDGE_JOB_TIMEOUT = 3600
EDGE_JOB_OUTPUT_LIMIT = 64 * 1024
EDGE_JOB_RUNS_KEPT = 5
EDGE_JOB_LABEL = "io.portainer.edgejob"
LOGS_IDLE, LOGS_PENDING, LOGS_COLLECTED = 1, 2, 3
CRON_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def parse_cron(expression: str) -> list[set[int]]:
    """Five cron fields (minute hour day month weekday) with *, lists, ranges and steps."""
    parts = expression.split()
    if len(parts) != 5:
        raise BadRequest(f"invalid CronExpression {expression!r}", "five fields: minute hour day month weekday")
    fields = []
    for text, (low, high) in zip(parts, CRON_RANGES):
        values: set[int] = set()
        for item in text.split(","):
            base, _, step = item.partition("/")
            try:
                every = int(step) if step else 1
                if base == "*":
                    start, end = low, high
                elif "-" in base:
                    start, end = (int(x) for x in base.split("-", 1))
                else:
                    start = int(base)
                    end = high if step else start
            except ValueError:
                raise BadRequest(f"invalid CronExpression {expression!r}", f"cannot read {item!r}") from None
            if not low <= start <= end <= high or every < 1:
                raise BadRequest(f"invalid CronExpression {expression!r}", f"{item!r} is outside {low}-{high}")
            values.update(range(start, end + 1, every))
        fields.append(values)
    return fields


def cron_matches(fields: list[set[int]], moment: time.struct_time) -> bool:
    minute, hour, day, month, weekday = fields
    return (moment.tm_min in minute and moment.tm_hour in hour and moment.tm_mday in day
            and moment.tm_mon in month and (moment.tm_wday + 1) % 7 in weekday)


def demultiplex_docker_log(raw: bytes) -> str:
    """A container's log stream without the 8-byte frame headers Docker adds when there is no TTY."""
    parts, offset = [], 0
    while offset + 8 <= len(raw) and raw[offset] in (0, 1, 2) and raw[offset + 1:offset + 4] == b"\0\0\0":
        size = int.from_bytes(raw[offset + 4:offset + 8], "big")
        parts.append(raw[offset + 8:offset + 8 + size])
        offset += 8 + size
    text = b"".join(parts) if offset >= len(raw) else raw
    return text.decode(errors="replace")


async def run_script_on_engine(connector: DockerConnector, job: dict, image: str) -> tuple[int, str]:
    """Run a job's script in a container on an engine, answer its exit code and output, remove the container.
    In host mode the container shares the host's PID and network namespaces and chroots into the host's root
    filesystem, so the script sees and changes the host (with a container's default capabilities)."""
    script = job["FileContent"]
    config: dict = {"Image": job.get("Image") or image, "Cmd": ["sh", "-c", script], "Tty": False,
                    "Labels": {EDGE_JOB_LABEL: str(job["Id"])}, "HostConfig": {}}
    if job.get("Mode") == "host":
        config["Cmd"] = ["chroot", "/host", "sh", "-c", script]
        config["HostConfig"] = {"PidMode": "host", "NetworkMode": "host", "Binds": ["/:/host"]}
    container = answered_id(await connector.request_json("POST", "/containers/create", config))
    try:
        await connector.request_json("POST", f"/containers/{container}/start")
        waited = await connector.request_json("POST", f"/containers/{container}/wait", timeout=EDGE_JOB_TIMEOUT)
        response = await connector.request("GET", f"/containers/{container}/logs?stdout=1&stderr=1")
        raw = b""
        async with response:
            async for chunk in response.iter_chunks():
                raw += chunk[:EDGE_JOB_OUTPUT_LIMIT - len(raw)]
                if len(raw) >= EDGE_JOB_OUTPUT_LIMIT:
                    break
        exit_code = as_dict(waited).get("StatusCode")
        return (exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else -1,
                demultiplex_docker_log(raw))
    finally:
        with contextlib.suppress(ApiError):
            await connector.request_json("DELETE", f"/containers/{container}?force=1")


class EdgeJobRunner:
    """Runs edge jobs through the tunnels. A run waits in its job (stored, so a restart loses none) until the
    host's agent is connected; each finished run's exit code and output are kept per host."""

    def __init__(self, app: web.Application):
        self.app = app
        self.running: set[tuple[int, int]] = set()
        self.tasks: set[asyncio.Task] = set()

    def targets(self, job: dict) -> list[int]:
        store = self.app[STORE]
        ids = set(job["Endpoints"]) & edge_environment_ids(store)
        for group_id in job["EdgeGroups"]:
            if group_id in store.edge_groups:
                ids.update(edge_group_endpoint_ids(store, group_id))
        return sorted(ids)

    async def queue(self, job: dict) -> None:
        job["_Pending"] = sorted(set(job.get("_Pending", [])) | set(self.targets(job)))
        await self.app[STORE].commit()
        self.dispatch()

    def dispatch(self, endpoint_id: int | None = None) -> None:
        """Start every waiting run whose host is connected (only that host's when one is named)."""
        tunnels = self.app[EDGE_TUNNELS]
        for job in self.app[STORE].edge_jobs:
            for target in job.get("_Pending", []):
                if (endpoint_id in (None, target) and tunnels.is_connected(target)
                        and (job["Id"], target) not in self.running):
                    self.running.add((job["Id"], target))
                    task = asyncio.ensure_future(self.run(job["Id"], target))
                    self.tasks.add(task)
                    task.add_done_callback(self.tasks.discard)

    async def run(self, job_id: int, endpoint_id: int) -> None:
        store = self.app[STORE]
        try:
            job = store.edge_jobs.find(job_id)
            if job is None:
                return
            started = now()
            try:
                connector = self.app[ENVIRONMENTS].connector(endpoint_id)
                exit_code, output = await run_script_on_engine(connector, job, self.app[CONFIG].edge_job_image)
                error = ""
            except (BadGateway, GatewayTimeout) as exc:
                log.info("edge job %s on environment %s waits for the host: %s", job_id, endpoint_id, exc.details)
                return
            except ApiError as exc:
                exit_code, output, error = -1, "", exc.message
            job = store.edge_jobs.find(job_id)
            if job is None:
                return
            runs = job.setdefault("Results", {}).setdefault(str(endpoint_id), [])
            runs.append({"Time": started, "Duration": now() - started, "ExitCode": exit_code, "Output": output,
                         "Error": error})
            del runs[:-EDGE_JOB_RUNS_KEPT]
            job["_Pending"] = [e for e in job.get("_Pending", []) if e != endpoint_id]
            await store.commit()
            log.info("edge job %s on environment %s exited %s", job_id, endpoint_id, exit_code)
        finally:
            self.running.discard((job_id, endpoint_id))

    async def schedule(self) -> None:
        """Once a minute (never more often), queue the recurring jobs whose cron expression matches."""
        while True:
            await asyncio.sleep(60 - time.time() % 60 + 0.5)
            moment = time.localtime()
            for job in self.app[STORE].edge_jobs:
                if job["Recurring"] and cron_matches(parse_cron(job["CronExpression"]), moment):
                    await self.queue(job)


def edge_job_view(app: web.Application, job: dict) -> dict:
    """Portainer's shape: Endpoints maps each target to the state of its logs."""
    pending = set(job.get("_Pending", []))
    results = job.get("Results", {})
    endpoints = {str(e): {"CollectLogs": False, "LogsStatus": LOGS_PENDING if e in pending else
                          LOGS_COLLECTED if str(e) in results else LOGS_IDLE}
                 for e in app[EDGE_JOBS].targets(job)}
    view = app[STORE].edge_jobs.public_view(job)
    for bulky in ("FileContent", "Results"):  # served by their own routes
        view.pop(bulky, None)
    view["Endpoints"] = endpoints
    return view


EDGE_JOB_FIELDS = {"Name": str, "FileContent": str, "Recurring": bool, "CronExpression": str,
                   "EdgeGroups": [int], "Endpoints": [int], "Mode": str, "Image": str}


def checked_edge_job(store: Store, body: dict) -> dict:
    name = field(body, "Name", str).strip()
    if not name or not re.fullmatch(r"[\w .-]{1,128}", name):
        raise BadRequest("Name is required: letters, digits, spaces, '.', '_' or '-'")
    script = field(body, "FileContent", str)
    if not script.strip():
        raise BadRequest("FileContent (the script) is required")
    recurring = field(body, "Recurring", bool, required=False, default=False)
    cron = field(body, "CronExpression", str, required=False, default="").strip()
    if recurring:
        parse_cron(cron)
    groups, endpoints = id_list(body, "EdgeGroups"), id_list(body, "Endpoints")
    missing = [g for g in groups if g not in store.edge_groups]
    if missing:
        raise BadRequest(f"edge groups not found: {missing}")
    not_edge = set(endpoints) - edge_environment_ids(store)
    if not_edge:
        raise BadRequest(f"not edge environments: {sorted(not_edge)}")
    if not groups and not endpoints:
        raise BadRequest("choose the hosts: EdgeGroups or Endpoints")
    mode = field(body, "Mode", str, required=False, default="container")
    if mode not in ("container", "host"):
        raise BadRequest("Mode is 'container' (the script runs in a container) or 'host'")
    return {"Name": name, "FileContent": script, "Recurring": recurring, "CronExpression": cron,
            "EdgeGroups": groups, "Endpoints": endpoints, "Mode": mode,
            "Image": field(body, "Image", str, required=False, default="")}


async def handle_edge_jobs_list(request: web.Request) -> web.Response:
    """Edge jobs (administrators)."""
    require_admin(request)
    return json_response([edge_job_view(request.app, j) for j in request.app[STORE].edge_jobs])


async def handle_edge_job_create(request: web.Request) -> web.Response:
    """Create an edge job {Name, FileContent, EdgeGroups, Endpoints, Recurring, CronExpression, Image, Mode};
    a job that is not recurring runs once on each host, as soon as the host is connected (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    job = checked_edge_job(store, await read_documented_fields(request, EDGE_JOB_FIELDS))
    job.update({"Id": store.edge_jobs.new_id(), "Created": now(), "Version": 1, "Results": {}, "_Pending": []})
    store.edge_jobs.add(job)
    if job["Recurring"]:
        await store.commit()
    else:
        await request.app[EDGE_JOBS].queue(job)
    return json_response(edge_job_view(request.app, job))


async def handle_edge_job_inspect(request: web.Request) -> web.Response:
    """One edge job (administrators)."""
    require_admin(request)
    return json_response(edge_job_view(request.app, request.app[STORE].edge_jobs.get(path_id(request))))


async def handle_edge_job_update(request: web.Request) -> web.Response:
    """Replace an edge job's script, hosts or schedule (administrators); past results stay."""
    require_admin(request)
    store = request.app[STORE]
    job = store.edge_jobs.get(path_id(request))
    job.update(checked_edge_job(store, await read_documented_fields(request, EDGE_JOB_FIELDS)))
    await store.commit()
    return json_response(edge_job_view(request.app, job))


async def handle_edge_job_delete(request: web.Request) -> web.Response:
    """Delete an edge job and its results (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    store.edge_jobs.delete(path_id(request))
    await store.commit()
    return web.Response(status=204)


async def handle_edge_job_file(request: web.Request) -> web.Response:
    """An edge job's script (administrators)."""
    require_admin(request)
    return json_response({"FileContent": request.app[STORE].edge_jobs.get(path_id(request))["FileContent"]})


async def handle_edge_job_run(request: web.Request) -> web.Response:
    """Run an edge job now on all its hosts (each as soon as it is connected) (administrators)."""
    require_admin(request)
    job = request.app[STORE].edge_jobs.get(path_id(request))
    await request.app[EDGE_JOBS].queue(job)
    return json_response(edge_job_view(request.app, job))


async def handle_edge_job_tasks(request: web.Request) -> web.Response:
    """One task per host of an edge job: its connection, whether a run waits, and the latest run."""
    require_admin(request)
    app = request.app
    job = app[STORE].edge_jobs.get(path_id(request))
    pending = set(job.get("_Pending", []))
    tasks = []
    for endpoint_id in app[EDGE_JOBS].targets(job):
        runs = job.get("Results", {}).get(str(endpoint_id), [])
        latest = runs[-1] if runs else None
        tasks.append({"Id": endpoint_id, "EndpointId": endpoint_id,
                      "EndpointName": app[STORE].endpoints.get(endpoint_id)["Name"],
                      "Connected": app[EDGE_TUNNELS].is_connected(endpoint_id),
                      "LogsStatus": LOGS_PENDING if endpoint_id in pending else
                      LOGS_COLLECTED if latest else LOGS_IDLE,
                      "LastRun": {k: v for k, v in latest.items() if k != "Output"} if latest else None,
                      "Runs": len(runs)})
    return json_response(tasks)


async def handle_edge_job_task_logs(request: web.Request) -> web.Response:
    """The output of the latest run of an edge job on one host: {FileContent, ExitCode, Time, Error}."""
    require_admin(request)
    job = request.app[STORE].edge_jobs.get(path_id(request))
    runs = job.get("Results", {}).get(str(path_id(request, "taskId")), [])
    if not runs:
        raise NotFound("this edge job has not run on that host yet")
    latest = runs[-1]
    return json_response({"FileContent": latest["Output"], "ExitCode": latest["ExitCode"], "Time": latest["Time"],
                          "Error": latest["Error"]})


# -- edge stacks: one compose file deployed to every environment of some edge groups -------------------------------

EDGE_PENDING = 0
EDGE_ERROR = 2
EDGE_RUNNING = 7
EDGE_DEPLOYING = 8
EDGE_STATUS_NAMES = {EDGE_PENDING: "pending", EDGE_ERROR: "error", EDGE_RUNNING: "running",
                     EDGE_DEPLOYING: "deploying"}
EDGE_RETRY_SECONDS = 5.0


def edge_group_endpoint_ids(store: Store, group_id: int) -> list[int]:
    """The environments of an edge group: its static list, or for a dynamic group those carrying its tags."""
    group = store.edge_groups.find(group_id)
    if group is None:
        raise BadRequest(f"edge group {group_id} not found")
    if not group.get("Dynamic"):
        return sorted(int(i) for i in group.get("Endpoints") or []
                      if (store.endpoints.find(i) or {}).get("Type") == ENDPOINT_EDGE)
    tags = set(group.get("TagIds") or [])

    def match(ep: dict) -> bool:
        # an environment carries its own tags and its environment group's, as in Portainer
        carried = set(ep.get("TagIds") or []) | set(group_of_endpoint(store, ep).get("TagIds") or [])
        return bool(tags & carried) if group.get("PartialMatch") else tags <= carried

    return [ep["Id"] for ep in store.endpoints if ep["Type"] == ENDPOINT_EDGE and tags and match(ep)]


class EdgeStacks:
    """Edge stacks: one compose file sent to every environment of some edge groups, each deployment tracked.

    A deployment that could not reach its environment stays pending and is tried again every few seconds, so an
    edge agent that connects later still gets the stack.
    """

    def __init__(self, store: Store, environments: Environments, data_directory: str):
        self.store = store
        self.environments = environments
        self.data_directory = data_directory
        self._running: dict[tuple[int, int], asyncio.Task] = {}

    def project_dir(self, edge_stack_id: int) -> str:
        return os.path.join(self.data_directory, "edge_stacks", str(edge_stack_id))

    def refresh_targets(self, edge_stack: dict) -> None:
        """Environments that joined one of the stack's groups since get it too."""
        for group_id in edge_stack["EdgeGroups"]:
            with contextlib.suppress(ApiError):
                for endpoint_id in edge_group_endpoint_ids(self.store, group_id):
                    if str(endpoint_id) not in edge_stack["Status"]:
                        self.set_status(edge_stack, endpoint_id, EDGE_PENDING)

    def schedule(self, edge_stack: dict) -> None:
        for key, status in edge_stack["Status"].items():
            task_key = (edge_stack["Id"], int(key))
            if status["Type"] in (EDGE_PENDING,) and task_key not in self._running:
                task = asyncio.ensure_future(self.deploy(edge_stack, int(key)))
                self._running[task_key] = task
                task.add_done_callback(lambda _t, k=task_key: self._running.pop(k, None))

    def set_status(self, edge_stack: dict, endpoint_id: int, kind: int, message: str = "") -> None:
        edge_stack["Status"][str(endpoint_id)] = {"EndpointID": endpoint_id, "Type": kind,
                                                  "Status": EDGE_STATUS_NAMES[kind], "Error": message,
                                                  "Time": now()}

    def read_file(self, edge_stack: dict) -> str:
        entry_point = edge_stack.get("EntryPoint") or COMPOSE_FILE  # where its repository has it, for one from git
        with open(os.path.join(self.project_dir(edge_stack["Id"]), entry_point), encoding="utf-8") as f:
            return f.read()

    async def deploy(self, edge_stack: dict, endpoint_id: int) -> None:
        content = await asyncio.to_thread(self.read_file, edge_stack)
        try:
            connector = self.environments.connector(endpoint_id)
            async with await connector.request("GET", "/_ping", timeout=10) as response:
                await response.read()
        except (ApiError, shared.DockerUnreachable) as exc:
            self.set_status(edge_stack, endpoint_id, EDGE_PENDING,
                            f"environment offline, will retry: {getattr(exc, 'message', exc)}")
            return
        self.set_status(edge_stack, endpoint_id, EDGE_DEPLOYING)
        await self.store.commit()
        try:
            # its files go where the environment's engine reads them, as a stack's do
            local = self.project_dir(edge_stack["Id"])
            compose = ComposeFile(content, {}, edge_stack["Name"],
                                  await connector.project_directory(edge_stack["Name"], local), source_dir=local,
                                  file_name=edge_stack.get("EntryPoint") or COMPOSE_FILE)
            await asyncio.to_thread(Stacks.add_generated_files, local, compose)
            await connector.store_project(edge_stack["Name"], local)
            # a version from git may change what is built: built again, as a git stack's redeploy is
            await ComposeDeployment(connector, compose).up(rebuild=bool(edge_stack.get("GitConfig")))
        except (BadGateway, GatewayTimeout, ServiceUnavailable) as exc:
            self.set_status(edge_stack, endpoint_id, EDGE_PENDING, f"environment offline, will retry: {exc.message}")
        except ApiError as exc:
            self.set_status(edge_stack, endpoint_id, EDGE_ERROR, exc.message)
        else:
            self.set_status(edge_stack, endpoint_id, EDGE_RUNNING)
        if edge_stack["Id"] in self.store.edge_stacks:
            await self.store.commit()

    async def retry_loop(self) -> None:
        while True:
            await asyncio.sleep(EDGE_RETRY_SECONDS)
            for edge_stack in self.store.edge_stacks:
                self.refresh_targets(edge_stack)
                self.schedule(edge_stack)

    async def remove(self, edge_stack: dict, endpoint_ids: list[int] | None = None) -> None:
        """Take the stack off these environments (all it was sent to when none are named)."""
        for key in [str(i) for i in endpoint_ids] if endpoint_ids is not None else list(edge_stack["Status"]):
            self.stop_deploying(edge_stack, int(key))
            with contextlib.suppress(ApiError):
                await ComposeDeployment(self.environments.connector(int(key)), None, edge_stack["Name"]).down()
                await self.environments.connector(int(key)).remove_project(edge_stack["Name"])

    def stop_deploying(self, edge_stack: dict, endpoint_id: int) -> None:
        task = self._running.pop((edge_stack["Id"], endpoint_id), None)
        if task is not None:
            task.cancel()

    def forget_running(self, app: web.Application | None = None) -> None:
        """Drop deployments in flight (shutdown, or a restored store whose records replace theirs)."""
        for task in list(self._running.values()):
            task.cancel()
        self._running.clear()

    async def close(self) -> None:
        self.forget_running()


EDGE_STACK_CREATE_FIELDS = {"Name": str, "StackFileContent": str, "EdgeGroups": [int], "DeploymentType": int}


async def handle_edge_stack_create(request: web.Request) -> web.Response:
    """Deploy a compose file to every environment of some edge groups: {Name, StackFileContent, EdgeGroups,
    DeploymentType 0}."""
    require_admin(request)
    return json_response(await create_edge_stack(request, await read_documented_fields(request,
                                                                                        EDGE_STACK_CREATE_FIELDS)))


async def create_edge_stack(request: web.Request, body: dict, record: dict | None = None,
                            project: StagedProject | None = None) -> dict:
    """Check an edge stack's file and groups, keep it, and send it to every environment of its groups; `record`
    holds what it keeps besides and `project` its files (an edge stack from git: its GitConfig, its checkout)."""
    store = request.app[STORE]
    edge: EdgeStacks = request.app[EDGE_STACKS]
    name = field(body, "Name", str).strip()
    if not STACK_NAME.match(name):
        raise BadRequest(f"invalid edge stack name {name!r}", "use lowercase letters, digits, '-' and '_'")
    if any(s["Name"] == name for s in store.edge_stacks):
        raise Conflict(f"an edge stack named {name!r} already exists")
    if field(body, "DeploymentType", int, required=False, default=0) != 0:
        raise BadRequest("only DeploymentType 0 (compose) is supported")
    groups = field(body, "EdgeGroups", list)
    if not groups or any(isinstance(g, bool) or not isinstance(g, int) for g in groups):
        raise BadRequest("EdgeGroups must be a non-empty list of edge group ids")
    endpoint_ids = sorted({i for g in groups for i in edge_group_endpoint_ids(store, g)})
    content = stack_content(body)
    edge_stack_id = store.edge_stacks.new_id()
    project_dir = edge.project_dir(edge_stack_id)
    entry_point = project.entry_point if project is not None else COMPOSE_FILE
    if project is not None:
        ComposeFile(content, {}, name, project_dir, source_dir=project.directory, file_name=entry_point)
        await asyncio.to_thread(install_edge_project, project, project_dir)
    else:
        ComposeFile(content, {}, name, project_dir)
        await asyncio.to_thread(write_stack_file, os.path.join(project_dir, COMPOSE_FILE), content.encode())
    edge_stack = {"Id": edge_stack_id, "Name": name, "EdgeGroups": groups, "DeploymentType": 0,
                  "CreationDate": now(), "ProjectPath": project_dir, "EntryPoint": entry_point, "Version": 1,
                  "Status": {}, **(record or {})}
    for endpoint_id in endpoint_ids:
        edge.set_status(edge_stack, endpoint_id, EDGE_PENDING)
    store.edge_stacks.add(edge_stack)
    await store.commit()
    edge.schedule(edge_stack)
    return Collection.public_view(edge_stack)


async def handle_edge_stacks_list(request: web.Request) -> web.Response:
    """Edge stacks with each environment's deployment status (administrators)."""
    require_admin(request)
    return json_response([Collection.public_view(s) for s in request.app[STORE].edge_stacks.in_id_order()])


async def handle_edge_stack_inspect(request: web.Request) -> web.Response:
    """One edge stack with each environment's status: pending, deploying, running or error with its message."""
    require_admin(request)
    return json_response(Collection.public_view(request.app[STORE].edge_stacks.get(path_id(request))))


def edge_stack_for_admin(request: web.Request) -> dict:
    require_admin(request)
    return request.app[STORE].edge_stacks.get(path_id(request))


def edge_group_ids(body: dict) -> list[int]:
    groups = field(body, "EdgeGroups", list, required=False, default=[])
    if not groups or any(isinstance(g, bool) or not isinstance(g, int) for g in groups):
        raise BadRequest("Invalid request payload", "edge Groups are mandatory for an Edge stack")
    return groups


async def handle_edge_stack_update(request: web.Request) -> web.Response:
    """Change an edge stack, {StackFileContent, EdgeGroups, UpdateVersion, DeploymentType}: environments that left
    its groups lose it, new ones get it; with UpdateVersion the new file is redeployed everywhere (administrators)."""
    edge_stack = edge_stack_for_admin(request)
    body = await read_json_object(request)
    content = field(body, "StackFileContent", str, required=False, default="")
    if not content:
        raise BadRequest("Invalid request payload", "invalid stack file content")
    groups = edge_group_ids(body)
    if field(body, "DeploymentType", int, required=False, default=0) != 0:
        raise BadRequest("only DeploymentType 0 (compose) is supported")
    update_version = field(body, "UpdateVersion", bool, required=False, default=False)
    store, edge = request.app[STORE], request.app[EDGE_STACKS]
    targets = {i for g in groups for i in edge_group_endpoint_ids(store, g)}
    project_dir = edge.project_dir(edge_stack["Id"])
    if update_version:
        entry_point = edge_stack.get("EntryPoint") or COMPOSE_FILE
        ComposeFile(content, {}, edge_stack["Name"], project_dir, file_name=entry_point)
        await asyncio.to_thread(write_stack_file, os.path.join(project_dir, entry_point), content.encode())
        edge_stack["Version"] = edge_stack.get("Version", 1) + 1
    left = [int(k) for k in edge_stack["Status"] if int(k) not in targets]
    for endpoint_id in left:
        del edge_stack["Status"][str(endpoint_id)]
    for endpoint_id in sorted(targets):
        if update_version or str(endpoint_id) not in edge_stack["Status"]:
            edge.stop_deploying(edge_stack, endpoint_id)
            edge.set_status(edge_stack, endpoint_id, EDGE_PENDING)
    edge_stack["EdgeGroups"] = groups
    edge_stack["NumDeployments"] = len(targets)
    await store.commit()
    await edge.remove(edge_stack, left)
    edge.schedule(edge_stack)
    return json_response(Collection.public_view(edge_stack))


async def handle_edge_stack_file(request: web.Request) -> web.Response:
    """An edge stack's compose file, {StackFileContent} (administrators)."""
    edge_stack = edge_stack_for_admin(request)
    try:
        content = await asyncio.to_thread(request.app[EDGE_STACKS].read_file, edge_stack)
    except OSError as exc:
        raise NotFound(f"the file of edge stack {edge_stack['Id']} is missing", str(exc)) from None
    return json_response({"StackFileContent": content})


async def handle_edge_stack_delete(request: web.Request) -> web.Response:
    """Remove an edge stack from every environment it was deployed to."""
    require_admin(request)
    edge: EdgeStacks = request.app[EDGE_STACKS]
    edge_stack = request.app[STORE].edge_stacks.delete(path_id(request))
    await request.app[STORE].commit()
    await edge.remove(edge_stack)
    await asyncio.to_thread(shutil.rmtree, edge.project_dir(edge_stack["Id"]), True)
    return web.Response(status=204)


# -- the edge environment kind: all of the above, started and stopped with the server ------------------------------


class EdgeKind(EnvironmentKind):
    """Edge agents dial in through a tunnel on the HTTPS port; each environment's key pins this server's certificate.
    Brings the tunnel registry, the edge job runner and the edge stacks with it."""

    type = ENDPOINT_EDGE
    snapshots_per_pass = EDGE_SNAPSHOTS_PER_PASS

    def __init__(self, app: web.Application):
        super().__init__(app)
        store, environments = app[STORE], app[ENVIRONMENTS]
        self.tunnels = app[EDGE_TUNNELS] = EdgeTunnels()
        self.jobs = app[EDGE_JOBS] = EdgeJobRunner(app)
        self.stacks = app[EDGE_STACKS] = EdgeStacks(store, environments, store.directory)
        self.tunnels.on_connect.append(self.jobs.dispatch)
        self.tunnels.on_connect.append(
            lambda endpoint_id: self.tunnels.spawn(self.tunnels.snapshot_when_connected(environments, endpoint_id)))

    def connector(self, endpoint: dict) -> DockerConnector:
        return EdgeConnector(endpoint, self.tunnels)

    async def create(self, request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
        url = str(fields.get("URL") or default_edge_server_url(request)).strip()
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "https" or not parsed.hostname:
            raise BadRequest("URL must be this server's HTTPS address as edge agents reach it",
                             "for example https://portainer.example.com:9443")
        endpoint["URL"] = f"https://{parsed.netloc}"
        endpoint["EdgeID"] = ""
        endpoint["_EdgeSecret"] = secrets.token_urlsafe(32)

    def answer_created(self, request: web.Request, endpoint: dict, view: dict) -> None:
        view["EdgeKey"] = edge_key_for(request.app, endpoint)
        view["EdgeAgentCommand"] = edge_agent_command(view["EdgeKey"])

    def extend_view(self, endpoint: dict, view: dict) -> None:
        view["LastCheckInDate"] = self.tunnels.seen(endpoint["Id"])
        view["EdgeTunnelConnected"] = self.tunnels.is_connected(endpoint["Id"])
        view["EdgeRefused"] = self.tunnels.refused.get(endpoint["Id"])

    def removed(self, endpoint: dict) -> None:
        tunnels = self.tunnels
        tunnels.refused.pop(endpoint["Id"], None)
        tunnels.last_seen.pop(endpoint["Id"], None)
        tunnel = tunnels.tunnels.get(endpoint["Id"])
        if tunnel is not None:
            tunnels.spawn(tunnel.ws.close(code=shared.aiohttp.WSCloseCode.POLICY_VIOLATION,
                                          message=b"environment removed"))

    def after_restore(self) -> None:
        """A restored store may hold other environments and secrets: every agent reconnects and is checked again,
        and deployments in flight stop (the restored records replace theirs)."""
        self.stacks.forget_running()
        self.tunnels.refused.clear()
        for tunnel in list(self.tunnels.tunnels.values()):
            self.tunnels.spawn(tunnel.ws.close(code=shared.aiohttp.WSCloseCode.GOING_AWAY, message=b"store restored"))

    async def shutting_down(self) -> None:
        """Every edge agent hears the server is going away, so it reconnects at once when the server is back."""
        await asyncio.gather(*(ws.close(code=shared.aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
                               for ws in list(self.tunnels.websockets)), return_exceptions=True)

    async def lifecycle(self, app: web.Application):
        """Edge stack deployments left pending (restart, offline environments) are retried in the background,
        and the edge job scheduler runs, for the server's lifetime."""
        for edge_stack in app[STORE].edge_stacks:
            for status in edge_stack["Status"].values():
                if status["Type"] == EDGE_DEPLOYING:
                    status.update(Type=EDGE_PENDING, Status="pending")
        retry = asyncio.ensure_future(self.stacks.retry_loop())
        scheduler = asyncio.ensure_future(self.jobs.schedule())
        self.jobs.dispatch()
        yield
        pending = [scheduler, *self.jobs.tasks, *self.tunnels.tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        retry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retry
        await self.stacks.close()


# ================================================================================================================
# API handlers: service webhooks (a secret URL that redeploys one Swarm service with its image pulled again)
# ================================================================================================================

WEBHOOK_SERVICE = 1




async def service_for_update(request: web.Request, endpoint: dict, service_id: str) -> dict:
    """The service, when the caller may update it (the same decision as the proxy's POST /services/{id}/update)."""
    try:
        grant = await authorize_docker_call(request, endpoint, "POST",
                                            f"/services/{urllib.parse.quote(service_id, safe='')}/update")
        return as_dict(await grant.connector.request_json(
            "GET", f"/services/{urllib.parse.quote(grant.resource or service_id, safe='')}"))
    except ApiError as exc:
        if exc.status == 404:
            raise NotFound(f"service {service_id!r} not found on environment {endpoint['Id']}") from None
        if exc.status == 503:  # the engine's answer when it is not a Swarm manager
            raise BadRequest(f"environment {endpoint['Id']} has no Swarm services", exc.message) from None
        raise


async def handle_webhook_create(request: web.Request) -> web.Response:
    """Create a service webhook {ResourceID, EndpointID, RegistryID, WebhookType 1}: its Token is the secret part
    of POST /api/webhooks/{token} (whoever may update the service)."""
    body = await read_json_object(request)
    resource_id = field(body, "ResourceID", str, required=False, default="")
    endpoint_id = field(body, "EndpointID", int, required=False, default=0)
    registry_id = field(body, "RegistryID", int, required=False, default=0)
    if not resource_id:
        raise BadRequest("Invalid request payload", "Invalid ResourceID")
    if endpoint_id <= 0:
        raise BadRequest("Invalid request payload", "Invalid EndpointID")
    if field(body, "WebhookType", int, required=False, default=0) != WEBHOOK_SERVICE:
        raise BadRequest("Invalid request payload", "Invalid WebhookType: only 1 (service) is supported")
    endpoint = endpoint_for_caller(request, endpoint_id)
    service = await service_for_update(request, endpoint, resource_id)
    caller, store = caller_of(request), request.app[STORE]
    if registry_id:
        request.app[REGISTRIES].usable(caller, registry_id, endpoint_id)
    full_id = as_text(service.get("ID")) or resource_id
    if any(w["ResourceId"] in (resource_id, full_id) for w in store.webhooks):
        raise Conflict("A webhook for this resource already exists")
    webhook = store.webhooks.add({
        "Token": str(uuid.uuid4()), "ResourceId": full_id, "EndpointId": endpoint_id,
        "RegistryId": registry_id, "Type": WEBHOOK_SERVICE, "_CreatedBy": caller.id})
    await store.commit()
    return json_response(Collection.public_view(webhook))


def webhook_filters(request: web.Request) -> dict:
    raw = request.query.get("filters")
    if not raw:
        return {}
    try:
        filters = decode_json(raw)
    except ValueError as exc:
        raise BadRequest("Invalid query parameter: filters", str(exc)) from None
    if not isinstance(filters, dict):
        raise BadRequest("Invalid query parameter: filters", "a JSON object was expected")
    return {"ResourceId": field(filters, "ResourceID", str, required=False),
            "EndpointId": field(filters, "EndpointID", int, required=False)}


async def handle_webhooks_list(request: web.Request) -> web.Response:
    """Webhooks (?filters={"ResourceID": ..., "EndpointID": N}): all for an administrator, else the caller's own."""
    store, caller = request.app[STORE], caller_of(request)
    filters = {k: v for k, v in webhook_filters(request).items() if v}
    listed = [w for w in store.webhooks.in_id_order()
              if all(w[k] == v for k, v in filters.items())]
    if not caller.is_admin:
        listed = [w for w in listed if w.get("_CreatedBy") == caller.id
                  and can_access_endpoint(store, caller, store.endpoints.find(w["EndpointId"]) or {})]
    return json_response([Collection.public_view(w) for w in listed])


async def managed_webhook(request: web.Request) -> dict:
    """The webhook, when the caller may change it: administrators, its creator, or who may update its service."""
    store, caller = request.app[STORE], caller_of(request)
    webhook = store.webhooks.get(path_id(request))
    if not caller.is_admin and webhook.get("_CreatedBy") != caller.id:
        await service_for_update(request, endpoint_for_caller(request, webhook["EndpointId"]), webhook["ResourceId"])
    return webhook


async def handle_webhook_update(request: web.Request) -> web.Response:
    """Change the registry whose credentials the webhook pulls with, {RegistryID} (0: none)."""
    webhook = await managed_webhook(request)
    registry_id = field(await read_json_object(request), "RegistryID", int, required=False, default=0)
    if registry_id:
        request.app[REGISTRIES].usable(caller_of(request), registry_id, webhook["EndpointId"])
    webhook["RegistryId"] = registry_id
    await request.app[STORE].commit()
    return json_response(Collection.public_view(webhook))


async def handle_webhook_delete(request: web.Request) -> web.Response:
    """Delete a webhook: its URL stops working (administrators, its creator, or who may update its service)."""
    store = request.app[STORE]
    webhook = await managed_webhook(request)
    store.webhooks.delete(webhook["Id"])
    await store.commit()
    return web.Response(status=204)


def webhook_by_token(store: Store, token: str) -> dict:
    found = None
    for webhook in store.webhooks:
        if hmac.compare_digest(webhook["Token"].encode(), token.encode()):
            found = webhook
    if found is None:
        raise NotFound("Unable to find a webhook with this token")
    return found


@public
async def handle_webhook_execute(request: web.Request) -> web.Response:
    """Redeploy the webhook's service with its image pulled again; ?tag= moves it to another tag of that image.
    The token is the only credential, as in Portainer."""
    webhook = webhook_by_token(request.app[STORE], request.match_info["token"])
    tag = request.query.get("tag", "")
    if tag and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise BadRequest(f"invalid tag {tag[:140]!r}")
    connector = request.app[ENVIRONMENTS].connector(webhook["EndpointId"])
    service_path = f"/services/{urllib.parse.quote(webhook['ResourceId'], safe='')}"
    try:
        service = as_dict(await connector.request_json("GET", service_path + "?insertDefaults=true"))
    except ApiError as exc:
        if exc.status == 404:
            raise NotFound("the webhook's service no longer exists") from None
        raise
    spec = as_dict(service.get("Spec"))
    task = spec["TaskTemplate"] = as_dict(spec.get("TaskTemplate"))
    container = as_dict(task.get("ContainerSpec"))
    image = as_text(container.get("Image")).split("@sha", 1)[0]
    if not image:
        raise BadRequest("the webhook's service has no image")
    if tag:
        head, _, last = image.rpartition("/")
        image = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
        image += f":{tag}"
    headers = []
    if webhook.get("RegistryId"):
        registries = request.app[REGISTRIES]
        headers.append(("X-Registry-Auth",
                        encode_registry_header(registries.auth_config(registries.get(webhook["RegistryId"])))))
    reference = ImageReference.parse(image)
    query = urllib.parse.urlencode({"fromImage": reference.name, "tag": reference.tag})
    response = await connector.request("POST", f"/images/create?{query}", headers, timeout=600)
    async with response:
        raw = await response.read()
    failure = pull_error(response.status, raw)
    if failure and tag:
        raise NotFound("Error pulling image with the specified tag", failure)
    if failure:  # the nodes still look for a newer image as they start the service's tasks
        log.info("webhook %s: pulling %s failed, redeploying with the local image: %s", webhook["Id"], image, failure)
    container["Image"] = image
    task["ContainerSpec"] = container
    task["ForceUpdate"] = as_count(task.get("ForceUpdate")) + 1
    version = as_count(field_at(service, "Version", "Index"))
    await connector.request_json("POST", f"{service_path}/update?version={version}", spec, headers=headers)
    return web.Response(status=204)


def pull_error(status: int, raw: bytes) -> str:
    """What went wrong in an image pull: the engine's error answer, or an error line in its progress stream."""
    if status >= 400:
        return engine_error(status, raw).message
    for line in raw.splitlines():
        with contextlib.suppress(ValueError):
            message = as_dict(json.loads(line)).get("error")
            if message:
                return as_text(message)
    return ""


# ================================================================================================================
# API handlers: app templates (bundled, from the admin's URL or file) and custom templates
# ================================================================================================================

TEMPLATE_CONTAINER = 1
TEMPLATE_SWARM_STACK = 2
TEMPLATE_COMPOSE_STACK = 3
# Bundled so an air-gapped server has templates: only images made or loaded locally (busybox), no download.
BUNDLED_TEMPLATES = {"version": "3", "templates": [
    {"id": 1, "type": TEMPLATE_CONTAINER, "title": "Static web server", "name": "httpd",
     "description": "busybox httpd serving /www on port 80", "categories": ["webserver"], "platform": "linux",
     "logo": "", "image": "busybox:local", "command": "httpd -f -p 80 -h /www", "ports": ["80/tcp"],
     "volumes": [{"container": "/www"}], "restart_policy": "unless-stopped", "env": [], "labels": []},
    {"id": 2, "type": TEMPLATE_CONTAINER, "title": "Shell sandbox", "name": "sandbox",
     "description": "A long-running busybox shell to exec into", "categories": ["tools"], "platform": "linux",
     "logo": "", "image": "busybox:local", "command": "sleep 2147483647", "ports": [], "volumes": [],
     "restart_policy": "unless-stopped", "env": [{"name": "TZ", "label": "Time zone", "default": "UTC"}],
     "labels": []},
    {"id": 3, "type": TEMPLATE_COMPOSE_STACK, "title": "Web server and worker", "name": "web-worker",
     "description": "httpd in front, a worker behind it, a shared named volume", "categories": ["examples"],
     "platform": "linux", "logo": "", "env": [{"name": "PORT", "label": "Published port", "default": "8080"}],
     "repository": {"url": "bundled", "stackfile": "docker-compose.yml"},
     "stackFileContent": "services:\n  web:\n    image: busybox:local\n    command: httpd -f -p 80 -h /www\n"
                         "    ports:\n      - \"${PORT:-8080}:80\"\n    volumes:\n      - www:/www\n"
                         "    depends_on:\n      - worker\n  worker:\n    image: busybox:local\n"
                         "    command: sh -c 'while true; do date > /www/index.html; sleep 5; done'\n"
                         "    volumes:\n      - www:/www\nvolumes:\n  www:\n"},
]}


async def load_templates(app: web.Application) -> dict:
    """Templates from the admin's TemplatesURL (http(s):// or a file path), else the bundled ones."""
    source = current_settings(app[STORE]).get("TemplatesURL") or ""
    if not source:
        return BUNDLED_TEMPLATES
    try:
        if source.startswith(("http://", "https://")):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
                async with session.get(source) as response:
                    response.raise_for_status()
                    document = json.loads(await response.read())
        else:
            path = source[len("file://"):] if source.startswith("file://") else source
            document = json.loads(await asyncio.to_thread(lambda: open(path, "rb").read()))
    except (OSError, ValueError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise BadGateway(f"the templates at {source} could not be read", str(exc)) from None
    if not isinstance(document, dict) or not isinstance(document.get("templates"), list):
        raise BadGateway(f"the templates at {source} are not in the v3 format {{\"version\", \"templates\"}}")
    document["templates"] = [t for t in document["templates"] if isinstance(t, dict)]
    return document


async def handle_templates_list(request: web.Request) -> web.Response:
    """App templates in Portainer's v3 format: {"version": "3", "templates": [...]}."""
    return json_response(await load_templates(request.app))


def template_env(template_env_spec: list, given: list[dict]) -> list[dict]:
    values = {e["name"]: e["value"] for e in given}
    return [{"name": e["name"], "value": values.get(e["name"], str(e.get("default", "")))}
            for e in template_env_spec if isinstance(e, dict) and e.get("name")] + \
        [e for e in given if e["name"] not in {t.get("name") for t in template_env_spec if isinstance(t, dict)}]


async def deploy_container_template(request: web.Request, template: dict, name: str, env: list[dict]) -> dict:
    endpoint = endpoint_for_caller(request, query_int(request, "endpointId", 0))
    grant = await authorize_docker_call(request, endpoint, "POST", "/containers/create")
    connector = grant.connector
    ports = [str(p) if "/" in str(p) else f"{p}/tcp" for p in template.get("ports") or []]
    restart = template.get("restart_policy") or "no"
    body = {"Image": template["image"], "Env": [f"{e['name']}={e['value']}" for e in env],
            "Labels": {label["name"]: label["value"] for label in template.get("labels") or []
                       if isinstance(label, dict)},
            "ExposedPorts": {p.split(":")[-1]: {} for p in ports},
            "Volumes": {v["container"]: {} for v in template.get("volumes") or [] if isinstance(v, dict)},
            "HostConfig": {"PortBindings": {p.split(":")[-1]: [{"HostPort": p.split(":")[0] if ":" in p else ""}]
                                            for p in ports},
                           "RestartPolicy": {"Name": "" if restart == "no" else restart},
                           "Privileged": bool(template.get("privileged"))}}
    if template.get("command"):
        body["Cmd"] = shlex.split(template["command"])
    body = await grant.vet(body)
    await ensure_image(connector, template["image"], False)
    query = urllib.parse.urlencode({"name": name}) if name else ""
    container_id = answered_id(await connector.request_json("POST", f"/containers/create?{query}", body))
    await connector.request_json("POST", f"/containers/{container_id}/start")
    return {"Id": container_id, "Name": name}


async def template_by_id(app: web.Application, template_id: int) -> dict:
    """A template by its id, or by its place in the list (templates of files without ids)."""
    templates = (await load_templates(app))["templates"]
    template = next((t for t in templates if t.get("id") == template_id), None)
    if template is None and 0 < template_id <= len(templates):
        template = templates[template_id - 1]
    if template is None:
        raise NotFound(f"template {template_id} not found")
    return template


def template_stack_file(template: dict) -> str | None:
    """A stack template's file when it carries one (Portainer's "stackFile"; the bundled "stackFileContent")."""
    content = template.get("stackFile") or template.get("stackFileContent")
    return content if isinstance(content, str) and content else None


async def handle_template_file(request: web.Request) -> web.Response:
    """A stack template's compose file, {FileContent}."""
    template_id = path_id(request)
    template = await template_by_id(request.app, template_id)
    if template.get("type", TEMPLATE_CONTAINER) == TEMPLATE_CONTAINER:
        raise BadRequest("Invalid template type", f"template {template_id} is a container template, with no file")
    content = template_stack_file(template)
    if content is None:
        raise BadRequest("Invalid template configuration",
                         "its file is in a git repository, which this air-gapped server does not fetch")
    return json_response({"FileContent": content})


async def handle_template_deploy(request: web.Request) -> web.Response:
    """Deploy an app template by its id (?endpointId=N, {Name, Env}): a container or a stack."""
    template_id = path_id(request)
    body = await read_documented_fields(request, STACK_DEPLOY_FIELDS)
    template = await template_by_id(request.app, template_id)
    env = template_env(template.get("env") or [], stack_env(body))
    name = field(body, "Name", str, required=False, default=template.get("name") or "")
    if template.get("type", TEMPLATE_CONTAINER) == TEMPLATE_CONTAINER:
        if not template.get("image"):
            raise BadRequest(f"template {template_id} has no image")
        return json_response(await deploy_container_template(request, template, name, env))
    content = template_stack_file(template)
    if not content:
        raise BadRequest(f"template {template_id} has no bundled stack file",
                         "stacks from git repositories cannot be fetched by this air-gapped server")
    stack_type = STACK_SWARM if template["type"] == TEMPLATE_SWARM_STACK else STACK_COMPOSE
    stack = await create_stack(request, stack_type, {"Name": name, "StackFileContent": content, "Env": env},
                               from_template=True)
    return json_response(stack_view(request, stack))


CUSTOM_TEMPLATE_FIELDS = {"Title": str, "Description": str, "Note": str, "Logo": str, "Platform": int, "Type": int,
                          "Variables": list}
CUSTOM_TEMPLATE_BODY_FIELDS = {**CUSTOM_TEMPLATE_FIELDS, "FileContent": str}


def custom_template_for_caller(request: web.Request) -> dict:
    return request.app[STORE].custom_templates.get(path_id(request))


def require_template_owner(request: web.Request, template: dict) -> None:
    caller = caller_of(request)
    if not caller.is_admin and template["CreatedByUserId"] != caller.id:
        raise Forbidden("only the template's author or an administrator can change it")


def custom_template_path(request: web.Request, template_id: int) -> str:
    return os.path.join(request.app[STORE].directory, "custom_templates", str(template_id), COMPOSE_FILE)


def check_custom_template(body: dict, partial: bool) -> dict:
    values = {}
    for name, kind in CUSTOM_TEMPLATE_FIELDS.items():
        value = field(body, name, kind, required=(name in ("Title", "Description")) and not partial)
        if value is not None:
            values[name] = value
    if values.get("Type", TEMPLATE_COMPOSE_STACK) not in (TEMPLATE_SWARM_STACK, TEMPLATE_COMPOSE_STACK):
        raise BadRequest("Type must be 2 (Swarm stack) or 3 (compose stack)")
    return values


async def handle_custom_template_create(request: web.Request) -> web.Response:
    """Save a stack file as a custom template: {Title, Description, Note, Logo, Type, FileContent}."""
    body = await read_documented_fields(request, CUSTOM_TEMPLATE_BODY_FIELDS)
    values = check_custom_template(body, partial=False)
    content = field(body, "FileContent", str)
    ComposeFile(content, {}, "template", os.path.join(request.app[STORE].directory, "custom_templates"),
                swarm=values.get("Type") == TEMPLATE_SWARM_STACK)
    store = request.app[STORE]
    template_id = store.custom_templates.new_id()
    path = custom_template_path(request, template_id)
    await asyncio.to_thread(write_stack_file, path, content.encode())
    template = {"Id": template_id, "Title": "", "Description": "", "Note": "", "Logo": "", "Platform": 1,
                "Type": TEMPLATE_COMPOSE_STACK, "Variables": [], **values, "EntryPoint": COMPOSE_FILE,
                "ProjectPath": os.path.dirname(path), "CreatedByUserId": caller_of(request).id,
                "CreationDate": now()}
    store.custom_templates.add(template)
    await store.commit()
    return json_response(template)


async def handle_custom_templates_list(request: web.Request) -> web.Response:
    """Custom templates."""
    return json_response([Collection.public_view(t) for t in request.app[STORE].custom_templates.in_id_order()])


async def handle_custom_template_inspect(request: web.Request) -> web.Response:
    """One custom template."""
    return json_response(Collection.public_view(custom_template_for_caller(request)))


async def handle_custom_template_file(request: web.Request) -> web.Response:
    """A custom template's stack file: {FileContent}."""
    template = custom_template_for_caller(request)
    path = custom_template_path(request, template["Id"])
    return json_response({"FileContent": await asyncio.to_thread(lambda: open(path, encoding="utf-8").read())})


async def handle_custom_template_update(request: web.Request) -> web.Response:
    """Change a custom template's fields or file (its author or an administrator)."""
    template = custom_template_for_caller(request)
    require_template_owner(request, template)
    body = await read_documented_fields(request, CUSTOM_TEMPLATE_BODY_FIELDS)
    values = check_custom_template(body, partial=True)
    content = field(body, "FileContent", str, required=False)
    if content is not None:
        ComposeFile(content, {}, "template", os.path.dirname(custom_template_path(request, template["Id"])),
                    swarm=values.get("Type", template["Type"]) == TEMPLATE_SWARM_STACK)
        await asyncio.to_thread(write_stack_file, custom_template_path(request, template["Id"]), content.encode())
    template.update(values)
    await request.app[STORE].commit()
    return json_response(Collection.public_view(template))


async def handle_custom_template_delete(request: web.Request) -> web.Response:
    """Remove a custom template (its author or an administrator)."""
    template = custom_template_for_caller(request)
    require_template_owner(request, template)
    request.app[STORE].custom_templates.delete(template["Id"])
    await request.app[STORE].commit()
    await asyncio.to_thread(shutil.rmtree, os.path.dirname(custom_template_path(request, template["Id"])), True)
    return web.Response(status=204)


async def handle_custom_template_deploy(request: web.Request) -> web.Response:
    """Deploy a custom template as a stack (?endpointId=N, {Name, Env})."""
    template = custom_template_for_caller(request)
    body = await read_documented_fields(request, STACK_DEPLOY_FIELDS)
    path = custom_template_path(request, template["Id"])
    content = await asyncio.to_thread(lambda: open(path, encoding="utf-8").read())
    stack_type = STACK_SWARM if template["Type"] == TEMPLATE_SWARM_STACK else STACK_COMPOSE
    stack = await create_stack(request, stack_type, {"Name": body.get("Name"), "StackFileContent": content,
                                                     "Env": body.get("Env") or []}, from_template=True)
    return json_response(stack_view(request, stack))


CUSTOM_TEMPLATE_GIT_FIELDS = {**CUSTOM_TEMPLATE_FIELDS, "RepositoryURL": str, "ComposeFilePathInRepository": str,
                              **GIT_SOURCE_FIELDS}


async def handle_custom_template_create_repository(request: web.Request) -> web.Response:
    """Save a stack file from a git repository as a custom template: {Title, Description, Note, Logo, Type,
    RepositoryURL, RepositoryReferenceName, ComposeFilePathInRepository, RepositoryAuthentication, ...}; its file
    is fetched again with PUT /api/custom_templates/{id}/git_fetch."""
    body = await read_documented_fields(request, CUSTOM_TEMPLATE_GIT_FIELDS)
    values = check_custom_template(body, partial=False)
    app, store = request.app, request.app[STORE]
    url = git_url(field(body, "RepositoryURL", str))
    config_path = git_relative_path(body.get("ComposeFilePathInRepository") or GIT_DEFAULT_COMPOSE_PATH,
                                    "ComposeFilePathInRepository")
    source = git_source_from_body(app, body, url)
    content, commit = await fetch_compose_text(app, source, config_path)
    ComposeFile(content, {}, "template", os.path.join(store.directory, "custom_templates"),
                swarm=values.get("Type") == TEMPLATE_SWARM_STACK, file_name=config_path)
    template_id = store.custom_templates.new_id()
    path = custom_template_path(request, template_id)
    await asyncio.to_thread(write_stack_file, path, content.encode())
    template = {"Id": template_id, "Title": "", "Description": "", "Note": "", "Logo": "", "Platform": 1,
                "Type": TEMPLATE_COMPOSE_STACK, "Variables": [], **values, "EntryPoint": COMPOSE_FILE,
                "ProjectPath": os.path.dirname(path), "CreatedByUserId": caller_of(request).id,
                "CreationDate": now(), **git_source_fields(app, source, config_path, commit)}
    store.custom_templates.add(template)
    await store.commit()
    return json_response(Collection.public_view(template))


async def handle_custom_template_git_fetch(request: web.Request) -> web.Response:
    """Fetch a git custom template's file again (its author or an administrator): {FileContent}."""
    template = custom_template_for_caller(request)
    require_template_owner(request, template)
    config = template.get("GitConfig")
    if not config:
        raise BadRequest(f"custom template {template['Id']} is not from a git repository")
    app = request.app
    source = git_source_from_body(app, {}, config["URL"], template)
    content, commit = await fetch_compose_text(app, source, config["ConfigFilePath"])
    ComposeFile(content, {}, "template", os.path.dirname(custom_template_path(request, template["Id"])),
                swarm=template["Type"] == TEMPLATE_SWARM_STACK, file_name=config["ConfigFilePath"])
    await asyncio.to_thread(write_stack_file, custom_template_path(request, template["Id"]), content.encode())
    config["ConfigHash"] = commit
    await app[STORE].commit()
    return json_response({"FileContent": content})


# ================================================================================================================
# API handlers: activity and authentication logs (administrators)
# ================================================================================================================

ACTIVITY_COLUMNS = {
    "activity": ("timestamp", "username", "context", "method", "path", "status", "origin"),
    "auth": ("timestamp", "username", "origin", "context", "type", "result"),
}
MAX_LOG_PAGE = 1000


def csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # a spreadsheet would run a cell starting with these as a formula
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def activity_csv(kind: str, entries: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    columns = ACTIVITY_COLUMNS[kind]
    writer.writerow(columns)
    for entry in entries:
        row = dict(entry)
        row["timestamp"] = datetime.datetime.fromtimestamp(entry.get("timestamp", 0), datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        writer.writerow([csv_cell(row.get(c)) for c in columns])
    return out.getvalue().encode()


async def activity_answer(request: web.Request, kind: str, export_csv: bool) -> web.Response:
    require_admin(request)
    entries = await request.app[ACTIVITY].entries(kind)
    keyword = request.query.get("keyword", "").strip().lower()
    columns = ACTIVITY_COLUMNS[kind]
    if keyword:
        entries = [e for e in entries if keyword in " ".join(str(e.get(c, "")) for c in columns).lower()]
    after, before = query_int(request, "after", 0), query_int(request, "before", 0)
    if after:
        entries = [e for e in entries if e.get("timestamp", 0) >= after]
    if before:
        entries = [e for e in entries if e.get("timestamp", 0) <= before]
    if export_csv or request.query.get("export") == "csv":
        name = "activity-logs" if kind == "activity" else "authentication-logs"
        return web.Response(body=activity_csv(kind, entries), content_type="text/csv", charset="utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    total = len(entries)
    offset = query_int(request, "offset", 0)
    limit = min(query_int(request, "limit", 100) or 100, MAX_LOG_PAGE)
    return json_response({"logs": entries[offset:offset + limit], "totalCount": total},
                         headers={"X-Total-Count": str(total)})


async def handle_activity_logs(request: web.Request) -> web.Response:
    """Activity log, newest first: ?keyword=&offset=&limit=&after=&before=, ?export=csv for CSV."""
    return await activity_answer(request, "activity", False)


async def handle_activity_logs_csv(request: web.Request) -> web.Response:
    """Activity log as CSV (same filters)."""
    return await activity_answer(request, "activity", True)


async def handle_auth_logs(request: web.Request) -> web.Response:
    """Authentication log (logins and logouts, successes and failures, with client address)."""
    return await activity_answer(request, "auth", False)


async def handle_auth_logs_csv(request: web.Request) -> web.Response:
    """Authentication log as CSV (same filters)."""
    return await activity_answer(request, "auth", True)


# ================================================================================================================
# API handlers: backup and restore of the data directory (AES-256-GCM with a scrypt key when a password is given)
# ================================================================================================================

BACKUP_MAGIC = b"PTPYBKUP"
BACKUP_VERSION = 1
BACKUP_SALT_SIZE = 16
BACKUP_NONCE_SIZE = 12
BACKUP_SCRYPT = {"n": 2 ** 15, "r": 8, "p": 1}
BACKUP_HEADER_SIZE = len(BACKUP_MAGIC) + 1 + BACKUP_SALT_SIZE + BACKUP_NONCE_SIZE
MAX_BACKUP_SIZE = 512 * 1024 * 1024
# Never in a backup: the lock belongs to the running process, temporary files are half-written.
BACKUP_SKIPPED = re.compile(r"^(portainer\.lock|portainer\.json(\.bak)?|.*\.tmp(\.\d+)?|\.restore-.*)$")
RESTORE_STAGING = ".restore-staging"
RESTORE_OLD = ".restore-old"


def backup_key(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, maxmem=64 * 1024 * 1024, dklen=32, **BACKUP_SCRYPT)


def encrypt_backup(archive: bytes, password: str) -> bytes:
    """magic | version | salt | nonce | AES-256-GCM(archive), the header authenticated as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    salt, nonce = secrets.token_bytes(BACKUP_SALT_SIZE), secrets.token_bytes(BACKUP_NONCE_SIZE)
    header = BACKUP_MAGIC + bytes([BACKUP_VERSION]) + salt + nonce
    return header + AESGCM(backup_key(password, salt)).encrypt(nonce, archive, header)


def decrypt_backup(blob: bytes, password: str) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    if len(blob) < BACKUP_HEADER_SIZE + 16 or blob[len(BACKUP_MAGIC)] != BACKUP_VERSION:
        raise BadRequest("the backup file is damaged or of an unknown version")
    header = blob[:BACKUP_HEADER_SIZE]
    salt = header[len(BACKUP_MAGIC) + 1:len(BACKUP_MAGIC) + 1 + BACKUP_SALT_SIZE]
    nonce = header[-BACKUP_NONCE_SIZE:]
    try:
        return AESGCM(backup_key(password, salt)).decrypt(nonce, blob[BACKUP_HEADER_SIZE:], header)
    except InvalidTag:
        raise BadRequest("the backup could not be decrypted: wrong password or a damaged file",
                         "nothing was changed") from None


def build_backup_archive(directory: str, store_document: bytes) -> bytes:
    """tar.gz of the data directory, with the store as it is in memory instead of the file on disk."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(Store.FILE)
        info.size, info.mtime, info.mode = len(store_document), now(), 0o600
        tar.addfile(info, io.BytesIO(store_document))
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not BACKUP_SKIPPED.match(d))
            for name in sorted(files):
                relative = os.path.relpath(os.path.join(root, name), directory)
                if BACKUP_SKIPPED.match(name) or os.path.islink(os.path.join(root, name)):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    tar.add(os.path.join(root, name), arcname=relative, recursive=False)
    return buffer.getvalue()


BACKUP_FIELDS = {"password": str}


async def handle_backup(request: web.Request) -> web.Response:
    """Download a backup of the data directory {password}; with a password it is encrypted (administrators)."""
    require_admin(request)
    body = await read_documented_fields(request, BACKUP_FIELDS) if request.body_exists else {}
    password = field(body, "password", str, required=False, default="")
    store = request.app[STORE]
    await request.app[ACTIVITY].flush()
    document = store.document()
    archive = await asyncio.to_thread(build_backup_archive, store.directory, document)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d_%H-%M-%S")
    name = f"portainer-backup_{stamp}.tar.gz"
    if password:
        archive = await asyncio.to_thread(encrypt_backup, archive, password)
        name += ".enc"
    return web.Response(body=archive, content_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def validated_backup_members(archive: bytes) -> tuple[dict, dict[str, bytes]]:
    """The store document and every file of a backup, checked before anything on disk is touched."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            for member in tar:
                name = os.path.normpath(member.name)
                if member.isdir():
                    continue
                if not member.isfile() or name.startswith(("/", "..")) or "/../" in f"/{name}/" \
                        or BACKUP_SKIPPED.match(os.path.basename(name)) and name != Store.FILE:
                    raise BadRequest(f"the backup holds an entry that is not allowed: {member.name[:100]!r}")
                total += member.size
                if total > MAX_BACKUP_SIZE * 4:
                    raise BadRequest("the backup unpacks to more than this server accepts")
                files[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise BadRequest("the file is not a portainer.py backup (not a readable tar.gz)", str(exc)) from None
    if Store.FILE not in files:
        raise BadRequest(f"the backup has no {Store.FILE}")
    try:
        document = json.loads(files.pop(Store.FILE))
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        document = Store.migrate(document)
    except (ValueError, SystemExit) as exc:
        raise BadRequest("the backup's store cannot be read", str(exc)) from None
    for collection in ("users", "endpoints"):
        if not isinstance(document.get(collection), dict):
            raise BadRequest(f"the backup's store has no {collection}")
    return document, files


def stage_restore(directory: str, document: dict, files: dict[str, bytes]) -> str:
    staging = os.path.join(directory, RESTORE_STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=0o700)
    for name, content in files.items():
        path = os.path.join(staging, name)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_private_file(path, content)
    write_private_file(os.path.join(staging, Store.FILE), json.dumps(document, separators=(",", ":")).encode())
    return staging


def swap_in_restore(directory: str, staging: str) -> str:
    """Move the staged top-level entries into place, the replaced ones aside (renames only, no copying)."""
    old = os.path.join(directory, RESTORE_OLD)
    shutil.rmtree(old, ignore_errors=True)
    os.makedirs(old, mode=0o700)
    for name in os.listdir(staging):
        target = os.path.join(directory, name)
        if os.path.lexists(target):
            os.replace(target, os.path.join(old, name))
        os.replace(os.path.join(staging, name), target)
    with contextlib.suppress(FileNotFoundError):
        os.replace(os.path.join(directory, Store.FILE + ".bak"), os.path.join(old, Store.FILE + ".bak"))
    os.rmdir(staging)
    return old


@public
async def handle_restore(request: web.Request) -> web.Response:
    """Restore a backup (multipart file, password): on a fresh instance within the set-up window, or by an
    administrator. A wrong password or a damaged file changes nothing."""
    app, store = request.app, request.app[STORE]
    if admin_exists(store):
        request[CALLER_KEY] = authenticate(request)
        require_admin(request)
    elif time.monotonic() - app[STARTED_AT] > app[CONFIG].admin_init_window:
        raise Forbidden("the set-up window has closed; restart portainer.py to restore onto this fresh instance")
    if not request.content_type.startswith("multipart/"):
        raise BadRequest("send the backup as multipart/form-data with fields 'file' and 'password'")
    received, password = bytearray(), ""
    try:
        reader = await request.multipart()
        async for part in reader:
            if part.name == "file":
                while chunk := await part.read_chunk(1024 * 1024):
                    received += chunk
                    if len(received) > MAX_BACKUP_SIZE:
                        raise PayloadTooLarge(f"a backup may be at most {MAX_BACKUP_SIZE} bytes")
            elif part.name == "password":
                password = (await part.read(decode=True)).decode(errors="replace")[:1024]
    except MALFORMED_FORM_ERRORS as exc:
        raise BadRequest("malformed multipart body", str(exc) or "a multipart body needs a boundary") from None
    blob = bytes(received)
    if not blob:
        raise BadRequest("no backup file was sent (field 'file')")
    if blob.startswith(BACKUP_MAGIC):
        if not password:
            raise BadRequest("this backup is encrypted: give its password")
        blob = await asyncio.to_thread(decrypt_backup, blob, password)
    elif password:
        raise BadRequest("a password was given but this backup is not encrypted")
    document, files = await asyncio.to_thread(validated_backup_members, blob)
    staging = await asyncio.to_thread(stage_restore, store.directory, document, files)
    await app[ACTIVITY].flush()
    await store.drain()
    # From here to the reload nothing awaits, so no request sees or writes a half-restored state.
    old = swap_in_restore(store.directory, staging)
    store.load()
    app[SESSIONS].key = load_or_create_secret(store.directory, "jwt.secret")
    rebuild_api_key_index(app)
    environments = app[ENVIRONMENTS]
    environments.close()
    environments.status.clear()
    environments.snapshots.clear()
    for reload_hook in app[AFTER_RESTORE]:
        reload_hook(app)
    await asyncio.to_thread(shutil.rmtree, old, True)
    asyncio.ensure_future(environments.snapshot_all())
    log.info("restored a backup: %d users, %d environments", len(store.users), len(store.endpoints))
    return web.Response(status=204)


# ================================================================================================================
# Analytics: off unless an administrator opts in; anonymous counts in buckets, shown before they are sent
# ================================================================================================================

COUNT_BUCKETS = ((0, "0"), (5, "1-5"), (20, "6-20"), (100, "21-100"))
ENDPOINT_TYPE_NAMES = {ENDPOINT_DOCKER: "docker", ENDPOINT_AGENT: "agent", ENDPOINT_EDGE: "edge"}
ANALYTICS_TIMEOUT = 5.0


def count_bucket(count: int) -> str:
    return next((label for limit, label in COUNT_BUCKETS if count <= limit), "100+")


def analytics_enabled(app: web.Application) -> bool:
    config = app[CONFIG]
    return bool(config.analytics_url) and not config.no_analytics and \
        bool(current_settings(app[STORE])["EnableTelemetry"])


def analytics_payload(app: web.Application) -> dict:
    """Exactly what is sent: no names, addresses, images or ids of anything but this random instance id."""
    store, environments = app[STORE], app[ENVIRONMENTS]
    analytics = store.analytics
    analytics.setdefault("InstanceID", str(uuid.uuid4()))  # not the public instance id: it cannot be linked
    by_type: dict[str, int] = {}
    for endpoint in store.endpoints:
        kind = ENDPOINT_TYPE_NAMES.get(endpoint["Type"], f"type{endpoint['Type']}")
        by_type[kind] = by_type.get(kind, 0) + 1
    snapshots = environments.snapshots.values()
    return {
        "instanceId": analytics["InstanceID"],
        "version": VERSION,
        "environments": {kind: count_bucket(n) for kind, n in sorted(by_type.items())},
        "containers": count_bucket(sum(s.get("ContainerCount", 0) for s in snapshots)),
        "stacks": count_bucket(sum(s.get("StackCount", 0) for s in snapshots)),
    }


async def send_analytics(app: web.Application) -> bool:
    """One attempt, short timeout; a failure is one DEBUG line and waits for the next interval."""
    import aiohttp
    store = app[STORE]
    payload = analytics_payload(app)
    store.analytics["LastSent"] = now()
    app[ANALYTICS_STATE]["last_sent"] = time.monotonic()
    try:
        timeout = aiohttp.ClientTimeout(total=ANALYTICS_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(app[CONFIG].analytics_url, json=payload) as response:
                ok = response.status < 300
                if not ok:
                    log.debug("analytics not accepted: %s answered %s", app[CONFIG].analytics_url, response.status)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
        log.debug("analytics not sent to %s: %s", app[CONFIG].analytics_url, exc or type(exc).__name__)
        ok = False
    await store.commit()
    return ok


async def analytics_loop(app: web.Application) -> None:
    interval = app[CONFIG].analytics_interval
    state = app[ANALYTICS_STATE]
    stored = app[STORE].analytics.get("LastSent", 0)
    state.setdefault("last_sent", time.monotonic() - max(0, now() - stored))
    while True:
        await asyncio.sleep(min(interval, 60))
        if analytics_enabled(app) and time.monotonic() - state["last_sent"] >= interval:
            await send_analytics(app)


async def handle_telemetry_preview(request: web.Request) -> web.Response:
    """What analytics would send, exactly, and whether and where they are sent (administrators)."""
    require_admin(request)
    app = request.app
    return json_response({"Enabled": analytics_enabled(app), "Available": not app[CONFIG].no_analytics,
                          "URL": app[CONFIG].analytics_url,
                          "LastSent": app[STORE].analytics.get("LastSent", 0),
                          "Payload": analytics_payload(app)})


async def handle_telemetry_send(request: web.Request) -> web.Response:
    """Send analytics now, when opted in (administrators); answers what was sent."""
    require_admin(request)
    app = request.app
    if not analytics_enabled(app):
        raise Conflict("analytics are off: opt in in the settings (and set --analytics-url)")
    payload = analytics_payload(app)
    sent = await send_analytics(app)
    return json_response({"Sent": sent, "Payload": payload})


# ================================================================================================================
# UI assets: the web interface (no CDN, no build step), served compressed with ETag
# ================================================================================================================
# The sources are the files of ui/ (ES modules the browser loads itself: index.html loads /assets/app.js, which
# imports the rest). ui/embed.py (`make ui`) copies them into the generated section below, so portainer.py alone
# serves them; --ui-dir serves a ui/ directory from disk instead, read at each request, for editing without
# regenerating. test_fast_ui.py fails when the copy below differs from ui/.

# The labels of the security switches (DEFAULT_SECURITY_SETTINGS), as the environment's security page shows them.
UI_SECURITY_SWITCH_LABELS = {
    "allowBindMountsForRegularUsers": "Allow bind mounts of host paths",
    "allowPrivilegedModeForRegularUsers": "Allow privileged mode",
    "allowHostNamespaceForRegularUsers": "Allow host namespaces (PID, network, IPC)",
    "allowDeviceMappingForRegularUsers": "Allow device mapping",
    "allowContainerCapabilitiesForRegularUsers": "Allow added capabilities",
    "allowSysctlSettingForRegularUsers": "Allow sysctl settings",
    "allowStackManagementForRegularUsers": "Allow stack creation and changes",
    "allowVolumeBrowserForRegularUsers": "Allow the volume browser",
    "enableHostManagementFeatures": "Enable host management features",
}


def ui_constants() -> dict:
    """The numbers the API uses and the names the UI shows for them, built from this file's constants: the UI
    keeps no copy (ui/constants.js reads this once). `...Names` maps a number to its label."""
    def names(labels: dict) -> dict:
        return {str(number): label for number, label in labels.items()}
    resource_control_types = {**{kind[:-1].capitalize(): number for kind, number in RESOURCE_CONTROL_TYPES.items()},
                              "Stack": STACK_RESOURCE_CONTROL}
    return {
        "UserRoles": {"Administrator": ROLE_ADMIN, "Standard": ROLE_STANDARD},
        "UserRoleNames": names({ROLE_ADMIN: "administrator", ROLE_STANDARD: "standard user"}),
        "TeamRoles": {"Leader": TEAM_LEADER, "Member": TEAM_MEMBER},
        "TeamRoleNames": names({TEAM_LEADER: "Team leader", TEAM_MEMBER: "Member"}),
        "EnvironmentTypes": {"Docker": ENDPOINT_DOCKER, "Agent": ENDPOINT_AGENT, "Edge": ENDPOINT_EDGE},
        "EnvironmentTypeNames": names({ENDPOINT_DOCKER: "Docker", ENDPOINT_AGENT: "Agent",
                                       ENDPOINT_EDGE: "Edge agent"}),
        "EnvironmentStatus": {"Up": STATUS_UP, "Down": STATUS_DOWN},
        "EnvironmentRoles": {"Administrator": ENV_ROLE_ADMIN, "Operator": ENV_ROLE_OPERATOR,
                             "Helpdesk": ENV_ROLE_HELPDESK, "Standard": ENV_ROLE_STANDARD,
                             "ReadOnly": ENV_ROLE_READ_ONLY},
        "EnvironmentRoleNames": names(ENV_ROLE_NAMES),
        "SecuritySwitches": {name: UI_SECURITY_SWITCH_LABELS[name] for name in DEFAULT_SECURITY_SETTINGS},
        "RegistryTypes": {"Custom": REGISTRY_CUSTOM},
        "RegistryTypeNames": names(REGISTRY_TYPES),
        "ResourceControlTypes": resource_control_types,
        "ResourceControlTypeNames": names({number: kind.lower() for kind, number in resource_control_types.items()}),
        "StackTypes": {"Swarm": STACK_SWARM, "Compose": STACK_COMPOSE},
        "StackTypeNames": names({STACK_SWARM: "Swarm", STACK_COMPOSE: "Compose"}),
        "StackStatus": {"Active": STACK_ACTIVE, "Inactive": STACK_INACTIVE},
        "TemplateTypes": {"Container": TEMPLATE_CONTAINER, "SwarmStack": TEMPLATE_SWARM_STACK,
                          "ComposeStack": TEMPLATE_COMPOSE_STACK},
        "TemplateTypeNames": names({TEMPLATE_CONTAINER: "container", TEMPLATE_SWARM_STACK: "Swarm stack",
                                    TEMPLATE_COMPOSE_STACK: "compose stack"}),
        "EdgeJobLogStateNames": names({LOGS_IDLE: "not run yet", LOGS_PENDING: "waiting for the host",
                                       LOGS_COLLECTED: "done"}),
        "EdgeStackStatus": {name.capitalize(): name for name in EDGE_STATUS_NAMES.values()},
        "ImageUpdateStatus": {"Outdated": UPDATE_OUTDATED, "Current": UPDATE_CURRENT, "Skipped": UPDATE_SKIPPED,
                              "Unknown": UPDATE_UNKNOWN},
        "ImageUpdateStatusNames": {UPDATE_OUTDATED: "update available", UPDATE_CURRENT: "up to date",
                                   UPDATE_SKIPPED: "unknown", UPDATE_UNKNOWN: "unknown"},
    }


async def handle_ui_constants(request: web.Request) -> web.Response:
    """The numbers and names the web UI shows (roles, environment, registry and stack types, security switches)."""
    return json_response(ui_constants())


# ---- BEGIN GENERATED UI FILES: written by ui/embed.py (`make ui`) from ui/; do not edit by hand ----
UI_FILES = {
    'api.js': r"""// The one way the UI talks to the server: every request goes through `request`, which sends the CSRF token
// on changes, keeps the token the server hands back, ends with the page (its abort signal) and turns an
// error answer into an ApiFailure carrying the server's {message, details} and the HTTP status.
import {pageSignal} from './lifecycle.js';

const CSRF_HEADER = 'X-CSRF-Token';
let csrf = sessionStorage.getItem('csrf') || '';

export class ApiFailure extends Error {
  constructor(message, status, details) { super(message); this.status = status; this.details = details; }
}
async function failureOf(response) {
  const text = await response.text(); let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = {message: text}; }
  return new ApiFailure((data && data.message) || response.statusText || `HTTP ${response.status}`, response.status, data && data.details);
}
function rememberCsrf(response) { const t = response.headers.get(CSRF_HEADER); if (t) { csrf = t; sessionStorage.setItem('csrf', t); } }
// After logging out: the next session gets its own token.
export function forgetCsrf() { csrf = ''; sessionStorage.removeItem('csrf'); }

// The fetch primitive: body is JSON unless it is a Blob, FormData or ArrayBuffer (sent as is); `signal`
// replaces the page's own (a stream the page restarts). Resolves with the Response when it is a success.
export async function request(method, path, {body, headers = {}, signal} = {}) {
  const isRaw = body instanceof Blob || body instanceof FormData || body instanceof ArrayBuffer;
  if (body !== undefined && !isRaw) headers['Content-Type'] = 'application/json';
  if (csrf && method !== 'GET' && method !== 'HEAD') headers[CSRF_HEADER] = csrf;
  const r = await fetch(path, {method, headers, credentials: 'same-origin', signal: signal || pageSignal(),
                               body: body === undefined ? undefined : (isRaw ? body : JSON.stringify(body))});
  rememberCsrf(r);
  if (!r.ok) throw await failureOf(r);
  return r;
}
// JSON in, JSON out; throws ApiFailure with the server's {message, details}.
export async function api(method, path, body, headers) {
  const r = await request(method, path, {body, headers});
  const text = await r.text();
  try { return text ? JSON.parse(text) : null; } catch (e) { return text; }
}
// A streamed answer: onChunk(Uint8Array) for each piece as it arrives; resolves when the stream ends.
export async function apiStream(method, path, body, onChunk, headers, signal) {
  const r = await request(method, path, {body, headers, signal});
  const reader = r.body.getReader();
  for (;;) { const {done, value} = await reader.read(); if (done) return; onChunk(value); }
}
""",  # noqa: E501
    'app.css': r"""
:root{--bg:#f4f5f7;--panel:#fff;--text:#1d2330;--muted:#5f6b7a;--accent:#1366d6;--accent-text:#fff;--danger:#c62828;
--ok:#2e7d32;--warn:#a15c00;--border:#dde1e7;--hover:#eef2f8;--side:#1b2433;--side-text:#cfd6e2;--mark:#ffe08a;
--term-bg:#11151c;--term-fg:#d8dee9}
[data-theme=dark]{--bg:#12151b;--panel:#1b2029;--text:#e5e9f0;--muted:#9aa4b2;--accent:#5b9bff;--accent-text:#0b1220;
--border:#2c3340;--danger:#ef5350;--ok:#66bb6a;--warn:#ffb74d;--hover:#232a36;--side:#0d1117;--side-text:#b7c0ce;
--mark:#7a5d00}
*{box-sizing:border-box}html,body{height:100%}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--text)}
a{color:var(--accent)}h1,h2,h3{margin:0 0 12px}h2{font-size:20px}h3{font-size:15px;margin-top:8px}
:focus-visible{outline:2px solid var(--accent);outline-offset:1px}
.layout{display:grid;grid-template-columns:210px minmax(0,1fr);min-height:100vh}.layout>div{min-width:0}
.side{background:var(--side);color:var(--side-text);padding:12px 0;display:flex;flex-direction:column;gap:2px}
.side .brand{font-weight:700;font-size:16px;padding:4px 16px 12px;color:#fff}
.side a{color:var(--side-text);text-decoration:none;padding:6px 16px;display:block;border-left:3px solid transparent}
.side a:hover,.side a.active{background:rgba(255,255,255,.07);color:#fff;border-left-color:var(--accent)}
.side .group{padding:12px 16px 4px;font-size:11px;text-transform:uppercase;letter-spacing:.06em;opacity:.7}
.side .envname{padding:2px 16px 4px;color:#fff;font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.top{display:flex;align-items:center;gap:10px;padding:8px 18px;background:var(--panel);border-bottom:1px solid var(--border)}
.top .crumbs{flex:1;color:var(--muted);overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.menu{display:none}.side .brand{display:flex;justify-content:space-between;align-items:center}
.side .menu{background:none;border:0;color:#fff;font-size:20px;padding:0 4px}
main{padding:18px;max-width:1500px;width:100%}
.card{background:var(--panel);border:1px solid var(--border);border-radius:8px;padding:16px;margin-bottom:16px}
.auth{max-width:400px;margin:10vh auto}.auth .brand{font-size:22px;font-weight:700;margin-bottom:12px}
label{display:block;margin:10px 0 4px;color:var(--muted)}label.check{display:flex;gap:8px;align-items:center;color:var(--text)}
input,select,textarea{width:100%;padding:7px 9px;border:1px solid var(--border);border-radius:6px;background:var(--bg);
color:var(--text);font:inherit}textarea{font-family:ui-monospace,Menlo,Consolas,monospace;min-height:80px}
input[type=checkbox],input[type=radio]{width:auto;margin:0}input[type=file]{padding:5px}
input.invalid,select.invalid,textarea.invalid{border-color:var(--danger)}
.field-error{color:var(--danger);font-size:12px;margin-top:3px}
button,.button{padding:6px 13px;border-radius:6px;border:1px solid var(--border);background:var(--panel);color:var(--text);
cursor:pointer;font:inherit;text-decoration:none;display:inline-block;white-space:nowrap}
button:hover,.button:hover{background:var(--hover)}button.primary,.button.primary{background:var(--accent);border-color:var(--accent);
color:var(--accent-text)}button.danger{color:var(--danger)}button:disabled{opacity:.45;cursor:default}
button.small,.button.small{padding:2px 8px;font-size:12px}button.link{border:0;background:none;color:var(--accent);padding:0}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--border);
vertical-align:top}th{color:var(--muted);font-weight:600;user-select:none;white-space:nowrap}th.sortable{cursor:pointer}
th.sorted-asc::after{content:" \25B2"}th.sorted-desc::after{content:" \25BC"}tbody tr:hover{background:var(--hover)}
td.check,th.check{width:28px}.table-wrap{overflow-x:auto}
.error{color:var(--danger);margin:8px 0}.error:empty{display:none}.ok-text{color:var(--ok)}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;border:1px solid var(--border);margin-right:4px}
.badge.outdated{color:var(--warn);border-color:var(--warn)}.badge.updated{color:var(--ok)}
.up,.running,.healthy{color:var(--ok)}.down,.exited,.dead,.unhealthy{color:var(--danger)}.paused,.restarting,.created{color:var(--warn)}
.toolbar{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin-bottom:12px}.toolbar input.filter{max-width:260px}
.toolbar .spacer,.spacer{flex:1}.toolbar select,.toolbar input:not([type=checkbox]){width:auto}.toolbar input.filter{min-width:180px;width:260px}.toolbar h2{margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:12px}
.tile{display:block;text-decoration:none;color:var(--text)}.tile:hover{border-color:var(--accent)}
.stat{font-size:26px;font-weight:700}.muted{color:var(--muted)}.small{font-size:12px}.mono{font-family:ui-monospace,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-all;margin:0}.hidden{display:none!important}
pre.copyable{background:var(--bg);border:1px solid var(--border);border-radius:6px;padding:8px}
.motd{display:flex;gap:12px;align-items:flex-start;border-left:4px solid var(--accent)}.motd .motd-text{flex:1}
.motd .motd-message{margin:0;white-space:pre-line;overflow-wrap:anywhere}
.env{display:flex;gap:14px;align-items:flex-start}.env .info{flex:1}.env .name{font-size:16px;font-weight:600}
.row{display:flex;gap:10px;flex-wrap:wrap}.row>*{flex:1;min-width:140px}.row>.narrow{flex:0 0 auto;min-width:0}
.pairs .pair{display:flex;gap:6px;margin-bottom:6px;align-items:center}.pairs .pair>input{flex:1}.pairs .pair>select{flex:0 0 90px}
fieldset{border:1px solid var(--border);border-radius:8px;margin:12px 0;padding:8px 12px}legend{color:var(--muted);padding:0 6px}
.tabs{display:flex;gap:2px;border-bottom:1px solid var(--border);margin-bottom:12px;flex-wrap:wrap}
.tabs a{padding:7px 14px;text-decoration:none;color:var(--muted);border-bottom:2px solid transparent}
.tabs a.active{color:var(--text);border-bottom-color:var(--accent)}
.tree{overflow-wrap:anywhere}.tree ul{list-style:none;margin:0;padding-left:18px}.tree>ul{padding-left:0}.tree li{margin:1px 0}
.tree .k{color:var(--accent)}.tree .s{color:var(--ok)}.tree .n{color:var(--warn)}.tree details>summary{cursor:pointer}
.logs{height:60vh;overflow:auto;border:1px solid var(--border);background:var(--term-bg);color:var(--term-fg);padding:8px;border-radius:6px;
font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.logs .err{color:#ff8a80}.logs mark{background:#ffd54f;color:#111}.logs .ts{color:#7f8ea3}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px}
.chart canvas{width:100%;height:160px;display:block}.chart .legend{font-size:12px;color:var(--muted)}
.layer{display:grid;grid-template-columns:100px 1fr;gap:2px 8px;align-items:center;font-size:12px;margin:4px 0}
.layer progress{width:100%;height:12px}.layer .detail{grid-column:2}
.toasts{position:fixed;right:16px;bottom:16px;display:flex;flex-direction:column;gap:8px;z-index:20}
.toast{background:var(--panel);border:1px solid var(--border);border-left:4px solid var(--ok);padding:10px 14px;border-radius:6px;
box-shadow:0 4px 14px rgba(0,0,0,.15);max-width:380px}.toast.bad{border-left-color:var(--danger)}
.term{border:1px solid var(--border);background:var(--term-bg);color:var(--term-fg);font:13px/1.25 ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;
padding:6px;border-radius:6px;height:60vh;overflow:hidden;white-space:pre;outline:none;position:relative;cursor:text}
.term:focus{box-shadow:0 0 0 2px var(--accent)}.term .line{height:1.25em}.term .cursor{background:var(--term-fg);color:var(--term-bg)}
.term .b{font-weight:700}.term .u{text-decoration:underline}.term .dim{opacity:.6}
.fg0{color:#2e3440}.fg1{color:#e06c75}.fg2{color:#98c379}.fg3{color:#e5c07b}.fg4{color:#61afef}.fg5{color:#c678dd}.fg6{color:#56b6c2}.fg7{color:#d8dee9}
.fg8{color:#6b7689}.fg9{color:#ff7b86}.fg10{color:#b5e890}.fg11{color:#ffd68a}.fg12{color:#82c4ff}.fg13{color:#e09cf5}.fg14{color:#7fdbe6}.fg15{color:#fff}
.bg0{background:#2e3440}.bg1{background:#b5424d}.bg2{background:#5d8a3a}.bg3{background:#a07f2e}.bg4{background:#3568a8}.bg5{background:#8a4a9e}.bg6{background:#2f8391}.bg7{background:#c0c6d0}
.bg8{background:#4c566a}.bg9{background:#e06c75}.bg10{background:#98c379}.bg11{background:#e5c07b}.bg12{background:#61afef}.bg13{background:#c678dd}.bg14{background:#56b6c2}.bg15{background:#eceff4}
.fgi{color:var(--term-bg)}.bgi{background:var(--term-fg)}
.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px}.kv dt{color:var(--muted)}.kv dd{margin:0;word-break:break-all}
.empty{padding:24px;text-align:center;color:var(--muted)}
.more{margin-top:8px}
.editor{display:flex;border:1px solid var(--border);border-radius:6px;background:var(--bg)}
.editor textarea{border:0;border-radius:0 6px 6px 0;font:13px/1.5 monospace;resize:vertical;white-space:pre;overflow:auto}
.gutter{min-width:3em;padding:8px 6px;text-align:right;color:var(--muted);font:13px/1.5 monospace;overflow:hidden;
user-select:none;border-right:1px solid var(--border)}.gutter .bad{background:var(--danger);color:#fff}
.flat{margin:0}.tick{width:auto}
@media (max-width:760px){.layout{grid-template-columns:minmax(0,1fr)}.top{padding:6px 8px;gap:6px}.top .who{display:none}.side{display:none}.side.open{display:flex;position:fixed;inset:0 30% 0 0;z-index:10;
overflow:auto}.menu{display:inline-block}main{padding:8px}td,th{padding:5px}.hide-sm{display:none}.layer{grid-template-columns:80px 1fr}
.toolbar input.filter{max-width:none;width:100%}}
label.inline{display:inline-flex;align-items:center;gap:4px;margin:0 12px 0 0}
label.inline input{width:auto}
.env-group .group-name{margin:18px 0 8px}.env-group:first-child .group-name{margin-top:0}
.env .env-pick{margin-top:5px}
.webhook-url{word-break:break-all;margin-right:4px}
""",  # noqa: E501
    'app.js': r"""// The web UI's entry module (index.html loads it; the browser loads the imports). No framework, no build step.
import {$} from './dom.js';
import {portLinks} from './pages/containers.js';
import {containerName} from './format.js';
import {route} from './router.js';
import {dataTable} from './table.js';

window.addEventListener('hashchange', route);
document.addEventListener('keydown', e => {
  // "/" focuses the filter of the page, as in most consoles.
  if (e.key === '/' && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName) && !document.activeElement.classList.contains('term')) {
    const filter = $('main input.filter'); if (filter) { e.preventDefault(); filter.focus(); }
  }
});
// The list component, reachable from the browser console (and from the browser test that feeds it 1,000 rows).
Object.assign(window, {dataTable, containerName, portLinks});
route();
""",  # noqa: E501
    'constants.js': r"""// Numbers and names the server defines once in Python (roles, environment and registry types, security
// switches...), from GET /api/ui/constants. Read once, after logging in: the login and setup pages need none.
import {api} from './api.js';

export const constants = {};
export async function loadConstants() {
  if (!Object.keys(constants).length) Object.assign(constants, await api('GET', '/api/ui/constants'));
}
""",  # noqa: E501
    'deploy-progress.js': r"""// A stack deploy's live progress events as lines of text (pure; unit-tested in ui/tests/). The stack editor
// (pages/stacks.js) opens the stream and shows them.
export const DEPLOY_ID_HEADER = 'X-Portainer-Deploy-Id';

// One event as a line of text.
export function progressLine(e) {
  const who = e.service ? `${e.service}: ` : '';
  switch (e.stage) {
    case 'pull': return `${who}pull ${e.image}${e.layer ? ' ' + e.layer : ''} ${e.status || ''}${e.progress ? ' ' + e.progress : ''}`.trimEnd();
    case 'build': return `${who}${e.line}`;
    case 'create': return `${who}created ${e.container}`;
    case 'start': return `${who}started ${e.container}`;
    case 'wait': return `${who}waiting for ${e.dependency} (${(e.condition || '').replace('service_', '')})`;
    case 'done': return 'deployed';
    case 'error': return `failed: ${e.message}`;
    default: return `${who}${e.stage}`;
  }
}
// The key under which an event's line replaces an earlier one (a pulled layer's percentage), or null: a new line.
export function progressKey(e) { return e.stage === 'pull' && e.layer ? `${e.service}|${e.image}|${e.layer}` : null; }
""",  # noqa: E501
    'docker.js': r"""// The Docker engine of one environment, reached through the server's proxy.
import {apiStream} from './api.js';
import {every, onLeave} from './lifecycle.js';
import {jsonLines} from './streams.js';

export const dockerBase = envId => `/api/endpoints/${envId}/docker`;
// Live updates: the engine's event stream (kept open while the page is shown) calls onChange, at most every
// 300 ms; a slow poll stays as the fallback when events cannot be read.
export function watchEngine(envId, types, onChange, fallbackMs = 15000) {
  let timer = 0;
  const changed = () => { clearTimeout(timer); timer = setTimeout(() => onChange().catch(() => {}), 300); };
  const filters = encodeURIComponent(JSON.stringify({type: types}));
  apiStream('GET', `${dockerBase(envId)}/events?filters=${filters}`, undefined, jsonLines(changed)).catch(() => {});
  onLeave(() => clearTimeout(timer));
  every(fallbackMs, onChange);
}
""",
    'dom.js': r"""// The two query shortcuts every page uses.
export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
""",
    'feedback.js': r"""// Feedback: toasts, and errors next to their cause.
import {$, $$} from './dom.js';

export function toast(message, bad = false) {
  let box = $('.toasts'); if (!box) { box = document.createElement('div'); box.className = 'toasts'; box.setAttribute('role', 'status'); document.body.append(box); }
  const t = document.createElement('div'); t.className = 'toast' + (bad ? ' bad' : ''); t.textContent = message; box.append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}
function clearErrors(form) {
  $$('.field-error', form).forEach(e => e.remove()); $$('.invalid', form).forEach(e => e.classList.remove('invalid'));
  const general = $('.error', form); if (general) general.textContent = '';
}
// Put the message under the input it is about (the server names the field), else in the form's error line.
export function showError(form, err, fieldName) {
  clearErrors(form);
  const text = err.message + (err.details && err.details !== err.message ? ` (${err.details})` : '');
  const fields = $$('[name]', form).filter(el => el.name && el.type !== 'hidden');
  const target = fieldName ? form.elements[fieldName]
    : fields.find(el => new RegExp(`\\b${el.name}\\b`, 'i').test(err.message) || (el.dataset.errorHint && new RegExp(el.dataset.errorHint, 'i').test(err.message)));
  if (target && target.insertAdjacentElement) {
    target.classList.add('invalid'); target.setAttribute('aria-invalid', 'true');
    const note = document.createElement('div'); note.className = 'field-error'; note.setAttribute('role', 'alert'); note.textContent = text;
    (target.closest('.pair') || target).insertAdjacentElement('afterend', note); target.focus();
  } else { const general = $('.error', form); if (general) general.textContent = text; else toast(text, true); }
}
// The first pages' helper: an error goes next to its field; a plain {message} (such as "Saved.") to the form's line.
export const formError = (form, err) => { if (err instanceof Error) showError(form, err); else { const line = $('.error', form); if (line) line.textContent = err.message; } };
// Submit handler with errors shown in the form and the button disabled while it runs.
export function onSubmit(form, fn) {
  // An error note goes away as soon as the user edits the field it is about.
  form.addEventListener('input', e => {
    const field = e.target; if (!field.classList || !field.classList.contains('invalid')) return;
    field.classList.remove('invalid'); field.removeAttribute('aria-invalid');
    const note = (field.closest('.pair') || field).nextElementSibling; if (note && note.classList.contains('field-error')) note.remove();
  });
  form.addEventListener('submit', async e => {
    e.preventDefault(); clearErrors(form); const button = $('button[type=submit], button:not([type])', form);
    if (button) button.disabled = true;
    try { await fn(new FormData(form)); } catch (err) { if (err.name !== 'AbortError') showError(form, err); }
    finally { if (button) button.disabled = false; }
  });
}
export function download(href, filename) { const a = document.createElement('a'); a.href = href; a.download = filename || ''; document.body.append(a); a.click(); a.remove(); }
""",  # noqa: E501
    'format.js': r"""// Text for the page: HTML escaping, sizes, dates, ids. Pure functions (unit-tested in ui/tests/).
export const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
export function fmtBytes(n) { if (!n && n !== 0) return ''; const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; } return `${n.toFixed(n < 10 && i ? 1 : 0)} ${u[i]}`; }
export function fmtDate(t) { if (!t) return ''; const d = typeof t === 'number' ? new Date(t * 1000) : new Date(t);
  return isNaN(d) ? '' : d.toLocaleString(); }
export function fmtAgo(t) { const s = Math.max(0, Date.now() / 1000 - (typeof t === 'number' ? t : Date.parse(t) / 1000));
  if (s < 60) return `${Math.floor(s)} s ago`; if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`; return `${Math.floor(s / 86400)} days ago`; }
export const shortId = id => String(id || '').replace(/^sha256:/, '').slice(0, 12);
export const containerName = c => ((c.Names && c.Names[0]) || c.Name || '').replace(/^\//, '');
""",  # noqa: E501
    'image-updates.js': r"""// Image updates: badges that tell whether a running container's image has a newer version, and recreate.
import {api} from './api.js';
import {constants} from './constants.js';
import {$, $$} from './dom.js';
import {toast} from './feedback.js';
import {esc} from './format.js';

// The stack view's image updates: a badge per running container, recreate buttons for the outdated ones.
export async function stackImageUpdates(stack, reload) {
  const box = $('#stack-updates'); if (!box) return;
  const labels = constants.ImageUpdateStatusNames;
  let answer;
  try { answer = await api('GET', `/api/stacks/${stack.Id}/images_status`); } catch (e) { box.textContent = e.message; return; }
  const entries = Object.entries(answer.Containers);
  box.innerHTML = entries.length ? `<p>Images: <span class="badge ${esc(answer.Status)}">${labels[answer.Status]}</span> ` +
    entries.map(([id, s]) => `<span class="badge ${esc(s.Status)}" title="${esc(s.Message)}">${esc(s.Name)}: ${labels[s.Status] || 'unknown'}</span>` +
      (s.Status === constants.ImageUpdateStatus.Outdated ? `<button type="button" class="small" data-recreate="${esc(id)}">Recreate with new image</button> ` : '')).join('') + '</p>' : '';
  $$('[data-recreate]', box).forEach(b => b.onclick = async () => { b.disabled = true; b.textContent = 'Recreating…';
    try { await api('POST', `/api/docker/${stack.EndpointId}/containers/${b.dataset.recreate}/recreate`, {PullImage: true}); toast('Recreated with the new image'); reload(); }
    catch (err) { toast(err.message, true); b.disabled = false; b.textContent = 'Recreate with new image'; } });
}
// The "Image update" column of a containers table: a badge per running container, and a recreate button.
export function imageUpdates(envId, redraw, reload) {
  const labels = constants.ImageUpdateStatusNames;
  const state = {statuses: {}};
  state.value = c => (state.statuses[c.Id] || {}).Status || '';
  state.cell = c => { if (c.State !== 'running') return '';
    const s = state.statuses[c.Id]; if (!s) return '<span class="muted small">checking…</span>';
    return `<span class="badge ${esc(s.Status)}" title="${esc(s.Message)}">${labels[s.Status] || 'unknown'}</span>` +
      (s.Status === constants.ImageUpdateStatus.Outdated ? ` <button class="small" data-recreate="${esc(c.Id)}">Recreate with new image</button>` : ''); };
  state.load = async refresh => {
    try { state.statuses = await api('GET', `/api/endpoints/${envId}/image_status${refresh ? '?refresh=true' : ''}`); }
    catch (e) { toast(e.message, true); }
    redraw(); };
  state.missing = rows => rows.some(c => c.State === 'running' && !state.statuses[c.Id]);
  state.bind = el => el.addEventListener('click', async e => {
    const b = e.target.closest('[data-recreate]'); if (!b) return;
    b.disabled = true; b.textContent = 'Recreating…';
    try { await api('POST', `/api/docker/${envId}/containers/${b.dataset.recreate}/recreate`, {PullImage: true}); toast('Recreated with the new image'); }
    catch (err) { toast(err.message, true); }
    await reload(); });
  return state;
}
""",  # noqa: E501
    'index.html': r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>portainer.py</title><link rel="stylesheet" href="/assets/app.css"><link rel="icon" href="data:,">
</head><body><div id="app" aria-live="polite"></div><script type="module" src="/assets/app.js"></script></body></html>
""",
    'lifecycle.js': r"""// Everything a page starts (timers, streams, sockets) ends when the user leaves it.
const pageCleanups = [];
let pageController = new AbortController();
export function pageSignal() { return pageController.signal; }
export function onLeave(fn) { pageCleanups.push(fn); }
export function leavePage() {
  pageController.abort(); pageController = new AbortController();
  for (const fn of pageCleanups.splice(0)) { try { fn(); } catch (e) { console.error(e); } }
}
export function every(ms, fn) {
  let busy = false;
  const id = setInterval(async () => { if (document.hidden || busy) return; busy = true;
    try { await fn(); } catch (e) { if (e.name !== 'AbortError') console.warn(e); } finally { busy = false; } }, ms);
  onLeave(() => clearInterval(id));
}
""",
    'pages/access.js': r"""// Pages: who has access to an environment (roles), what standard users may do there (security settings),
// and resources shared beyond their owners (resource controls).
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {$app, bindShell, shell} from '../shell.js';
import {roleOptions} from '../widgets.js';

export async function pageEndpointAccess(id) {
  const ep = await api('GET', `/api/endpoints/${id}`);
  await accessEditor({title: `Access to ${ep.Name}`, target: ep, path: `/api/endpoints/${id}`, again: () => pageEndpointAccess(id),
    intro: 'Administrators always have access. Everyone else sees this environment only when listed here (or in its group\'s access), and can do what the role allows.',
    footer: `<p><a href="#/env/${ep.Id}/security">Security settings of this environment</a></p>`});
}
// Who has access to an environment group: the roles apply to every environment of the group.
export async function pageGroupAccess(id) {
  const group = await api('GET', `/api/endpoint_groups/${id}`);
  await accessEditor({title: `Access to group ${group.Name}`, target: group, path: `/api/endpoint_groups/${id}`, again: () => pageGroupAccess(id),
    intro: 'Who is listed here has access to every environment of this group, with the role given (an environment\'s own access list comes first).',
    footer: `<p><a href="#/groups/${group.Id}">Edit the group</a> · <a href="#/groups">All groups</a></p>`,
    crumbs: `<a href="#/groups">Groups</a> / ${esc(group.Name)} / Access`});
}
// The access list of an environment or a group: {UserAccessPolicies, TeamAccessPolicies} of `target`, saved with PUT `path`.
async function accessEditor({title, target, path, again, intro, footer, crumbs}) {
  const [users, teams] = await Promise.all([api('GET', '/api/users'), api('GET', '/api/teams')]);
  const policies = {User: target.UserAccessPolicies || {}, Team: target.TeamAccessPolicies || {}};
  const nameOf = (kind, sid) => kind === 'User' ? ((users.find(u => u.Id === +sid) || {}).Username || `user ${sid}`)
                                               : ((teams.find(t => t.Id === +sid) || {}).Name || `team ${sid}`);
  const rows = ['User', 'Team'].flatMap(kind => Object.entries(policies[kind]).map(([sid, p]) => ({kind, sid, role: p.RoleId || constants.EnvironmentRoles.Standard})));
  $app.innerHTML = shell(`<div class="card"><h2>${esc(title)}</h2>
    <p class="muted">${esc(intro)}</p>
    <table><tr><th>User or team</th><th>Role</th><th></th></tr>${rows.map(r => `<tr><td>${r.kind === 'Team' ? 'Team ' : ''}${esc(nameOf(r.kind, r.sid))}</td>
      <td><select data-kind="${r.kind}" data-sid="${esc(r.sid)}" aria-label="role">${roleOptions(r.role, constants.EnvironmentRoleNames)}</select></td>
      <td><button class="danger" data-remove="${r.kind}:${esc(r.sid)}">Remove access</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">Administrators only.</td></tr>'}</table>
    <form id="f"><h3>Give access</h3><label for="s">User or team</label><select id="s" required>
      ${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="User:${u.Id}">${esc(u.Username)}</option>`).join('')}
      ${teams.map(t => `<option value="Team:${t.Id}">Team ${esc(t.Name)}</option>`).join('')}</select>
      <label for="r">Role</label><select id="r">${roleOptions(constants.EnvironmentRoles.Standard, constants.EnvironmentRoleNames)}</select>
      <div class="error" role="alert"></div><button class="primary">Give access</button></form>
    ${footer}</div>`, crumbs);
  bindShell();
  const save = async () => { await api('PUT', path, {UserAccessPolicies: policies.User, TeamAccessPolicies: policies.Team}); again(); };
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const [kind, sid] = f.s.value.split(':');
    policies[kind][sid] = {RoleId: +f.r.value}; try { await save(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('select[data-kind]').forEach(s => s.onchange = () => { policies[s.dataset.kind][s.dataset.sid] = {RoleId: +s.value}; save().catch(err => formError(f, err)); });
  document.querySelectorAll('[data-remove]').forEach(b => b.onclick = () => { const [kind, sid] = b.dataset.remove.split(':'); delete policies[kind][sid]; save().catch(err => formError(f, err)); });
}
export async function pageEndpointSecurity(id) {
  const ep = await api('GET', `/api/endpoints/${id}`);
  const current = ep.SecuritySettings || {};
  $app.innerHTML = shell(`<div class="card"><h2>Security settings of ${esc(ep.Name)}</h2>
    <p class="muted">What users who are not administrators of this environment may do. Everything here is off by default: each switch can give root on the host.</p>
    <form id="f">${Object.entries(constants.SecuritySwitches).map(([k, label]) => `<label class="check"><input type="checkbox" name="${k}" ${current[k] ? 'checked' : ''}> ${esc(label)}</label>`).join('')}
    <div class="error" role="alert"></div><button class="primary">Save</button></form>
    <p><a href="#/env/${ep.Id}/access">Who has access</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const body = {};
    Object.keys(constants.SecuritySwitches).forEach(k => { body[k] = f.elements[k].checked; });
    try { await api('PUT', `/api/endpoints/${id}`, {SecuritySettings: body}); formError(f, {message: 'Saved.'}); } catch (err) { formError(f, err); } };
}
export async function pageResourceControls() {
  const [controls, users, teams] = await Promise.all([api('GET', '/api/resource_controls'), api('GET', '/api/users'), api('GET', '/api/teams')]);
  const kinds = constants.ResourceControlTypeNames;
  const who = rc => rc.Public ? 'everyone with access to the environment' : rc.AdministratorsOnly ? 'administrators only' :
    [...rc.UserAccesses.map(a => (users.find(u => u.Id === a.UserId) || {}).Username || `user ${a.UserId}`),
     ...rc.TeamAccesses.map(a => 'team ' + ((teams.find(t => t.Id === a.TeamId) || {}).Name || a.TeamId))].join(', ') || 'nobody but administrators';
  $app.innerHTML = shell(`<div class="card"><h2>Shared resources</h2>
    <p class="muted">What a user creates is theirs and their teams'. Here an administrator shares a resource with others, makes it public, or keeps it to administrators.</p>
    <table><tr><th>Resource</th><th>Kind</th><th>Who may use it</th><th></th></tr>${controls.map(rc => `<tr><td>${esc(rc.ResourceId.slice(0, 24))}</td>
      <td>${esc(kinds[rc.Type] || rc.Type)}</td><td>${esc(who(rc))}</td><td><button class="danger" data-del="${rc.Id}">Remove</button></td></tr>`).join('')
      || '<tr><td colspan="4" class="muted">Nothing is shared beyond its owners.</td></tr>'}</table>
    <form id="f"><h3>Share a resource</h3><label for="rid">Full id (the name, for a volume)</label><input id="rid" required>
      <label for="k">Kind</label><select id="k">${roleOptions(constants.ResourceControlTypes.Container, kinds)}</select>
      <label for="w">With</label><select id="w" multiple>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="u${u.Id}">${esc(u.Username)}</option>`).join('')}
        ${teams.map(t => `<option value="t${t.Id}">team ${esc(t.Name)}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="pub"> Public: everyone with access to the environment</label>
      <label class="check"><input type="checkbox" id="adm"> Administrators only</label>
      <div class="error" role="alert"></div><button class="primary">Share</button></form></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const chosen = [...f.w.selectedOptions].map(o => o.value);
    try { await api('POST', '/api/resource_controls', {ResourceID: f.rid.value.trim(), Type: +f.k.value, Public: f.pub.checked, AdministratorsOnly: f.adm.checked,
      Users: chosen.filter(v => v[0] === 'u').map(v => +v.slice(1)), Teams: chosen.filter(v => v[0] === 't').map(v => +v.slice(1))}); pageResourceControls(); }
    catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/resource_controls/${b.dataset.del}`); pageResourceControls(); });
}
""",  # noqa: E501
    'pages/activity.js': r"""// Page: the activity and authentication logs, searchable, exported as CSV.
import {api} from '../api.js';
import {esc} from '../format.js';
import {$app, bindShell, shell} from '../shell.js';

export async function pageActivity(kind) {
  const columns = kind === 'authlogs' ? ['timestamp', 'username', 'origin', 'type', 'result']
                                      : ['timestamp', 'username', 'context', 'method', 'path', 'status'];
  let keyword = '', offset = 0; const limit = 50;
  $app.innerHTML = shell(`<div class="card"><div class="toolbar"><h2>${kind === 'authlogs' ? 'Authentication log' : 'Activity log'}</h2>
    <a href="#/activity">Activity</a><a href="#/activity/auth">Authentication</a>
    <input id="q" placeholder="Search" aria-label="Search the log"><a id="csv" download>Export CSV</a></div>
    <table><thead><tr>${columns.map(c => `<th>${esc(c)}</th>`).join('')}</tr></thead><tbody id="tb"></tbody></table>
    <div class="toolbar"><button id="prev">Previous</button><span id="pos" class="muted"></span><button id="next">Next</button></div></div>`);
  bindShell();
  const draw = async () => {
    const query = `keyword=${encodeURIComponent(keyword)}`;
    const page = await api('GET', `/api/useractivity/${kind}?${query}&offset=${offset}&limit=${limit}`);
    document.getElementById('csv').href = `/api/useractivity/${kind}.csv?${query}`;
    document.getElementById('tb').innerHTML = page.logs.map(e => `<tr>${columns.map(c => `<td>${c === 'timestamp' ? new Date(e[c] * 1000).toLocaleString() : esc(e[c])}</td>`).join('')}</tr>`).join('')
      || `<tr><td colspan="${columns.length}" class="muted">Nothing recorded${keyword ? ' matches' : ''}.</td></tr>`;
    document.getElementById('pos').textContent = page.totalCount ? `${offset + 1}–${offset + page.logs.length} of ${page.totalCount}` : '';
    document.getElementById('prev').disabled = offset === 0;
    document.getElementById('next').disabled = offset + limit >= page.totalCount;
  };
  let timer = null;
  document.getElementById('q').oninput = e => { clearTimeout(timer); timer = setTimeout(() => { keyword = e.target.value; offset = 0; draw(); }, 250); };
  document.getElementById('prev').onclick = () => { offset = Math.max(0, offset - limit); draw(); };
  document.getElementById('next').onclick = () => { offset += limit; draw(); };
  await draw();
}
""",  # noqa: E501
    'pages/auth.js': r"""// Pages: the first administrator (a fresh server) and the login.
import {api} from '../api.js';
import {$} from '../dom.js';
import {onSubmit, showError} from '../feedback.js';
import {session} from '../session.js';
import {$app} from '../shell.js';

export async function pageSetup() {
  const pub = session.publicSettings || await api('GET', '/api/settings/public');
  document.title = 'Set up · portainer.py';
  $app.innerHTML = `<div class="card auth"><div class="brand">portainer.py</div><h2>Create the administrator</h2><form id="setup" novalidate>
    <label for="setup-user">Username</label><input id="setup-user" name="Username" value="admin" autocomplete="username" required>
    <label for="setup-password">Password (12 characters or more)</label><input id="setup-password" type="password" name="Password" autocomplete="new-password" required data-error-hint="password">
    <label for="setup-confirm">Confirm password</label><input id="setup-confirm" type="password" name="Confirm" autocomplete="new-password" required>
    ${pub.AnalyticsAvailable ? `<label class="check"><input type="checkbox" id="analytics" name="analytics"> Send anonymous usage statistics (off unless you tick it)</label>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create user</button></p></form>
    <p><a href="#/restore">Restore from a backup instead</a></p></div>`;
  const form = $('#setup'); $('#setup-password').focus();
  onSubmit(form, async data => {
    if (data.get('Password') !== data.get('Confirm')) return showError(form, new Error('The passwords do not match'), 'Confirm');
    const credentials = {Username: data.get('Username'), Password: data.get('Password')};
    await api('POST', '/api/users/admin/init', credentials);
    await api('POST', '/api/auth', credentials);
    if (data.get('analytics')) await api('PUT', '/api/settings', {EnableTelemetry: true});
    location.hash = '#/home';
  });
}
export async function pageLogin() {
  document.title = 'Log in · portainer.py';
  $app.innerHTML = `<div class="card auth"><div class="brand">portainer.py</div><h2>Log in</h2><form id="login">
    <label for="u">Username</label><input id="u" name="Username" autocomplete="username" required>
    <label for="p">Password</label><input id="p" name="Password" type="password" autocomplete="current-password" required>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Log in</button></p></form></div>`;
  const form = $('#login'); $('#u').focus();
  onSubmit(form, async data => {
    await api('POST', '/api/auth', {Username: data.get('Username'), Password: data.get('Password')});
    const next = sessionStorage.getItem('after-login') || '#/home'; sessionStorage.removeItem('after-login');
    location.hash = next === '#/login' ? '#/home' : next;
  });
}
""",  # noqa: E501
    'pages/backup.js': r"""// Pages: backup and restore of the data directory, and restore onto a fresh server.
import {request} from '../api.js';
import {formError} from '../feedback.js';
import {route} from '../router.js';
import {$app, bindShell, shell} from '../shell.js';

async function restoreForm(f, after) {
  const data = new FormData(); data.append('file', f.file.files[0]); data.append('password', f.pw.value);
  await request('POST', '/api/restore', {body: data});
  after();
}
function restoreFormHtml() {
  return `<form id="rf"><h3>Restore</h3><label for="file">Backup file</label><input id="file" name="file" type="file" required>
    <label for="pw">Its password (if it was given one)</label><input id="pw" type="password" autocomplete="off">
    <div class="error" role="alert"></div><button class="danger">Restore</button></form>`;
}
export async function pageBackup() {
  $app.innerHTML = shell(`<div class="card"><h2>Backup</h2>
    <p class="muted">A copy of the data directory: users, environments, settings, stack files, keys and certificates. With a password it is encrypted (AES-256-GCM).</p>
    <form id="bf"><label for="bp">Password (recommended)</label><input id="bp" type="password" autocomplete="new-password">
    <div class="error" role="alert"></div><button class="primary">Download backup</button></form>
    ${restoreFormHtml()}</div>`);
  bindShell();
  const bf = document.getElementById('bf');
  bf.onsubmit = async e => { e.preventDefault();
    let r;
    try { r = await request('POST', '/api/backup', {body: {password: bf.bp.value}}); } catch (err) { return formError(bf, {message: err.message}); }
    const name = (r.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/);
    const a = document.createElement('a'); a.href = URL.createObjectURL(await r.blob()); a.download = name ? name[1] : 'portainer-backup.tar.gz';
    document.body.appendChild(a); a.click(); a.remove(); formError(bf, {message: 'Backup downloaded.'}); };
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault(); if (!confirm('Replace all of this server\'s data with the backup?')) return;
    try { await restoreForm(rf, () => formError(rf, {message: 'Restored. Log in again if your session ends.'})); } catch (err) { formError(rf, err); } };
}
export async function pageRestoreFresh() {
  $app.innerHTML = `<div class="card auth"><h2>Restore this new server from a backup</h2>${restoreFormHtml()}<p><a href="#/home">Create an administrator instead</a></p></div>`;
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault();
    try { await restoreForm(rf, () => { location.hash = '#/login'; route(); }); } catch (err) { formError(rf, err); } };
}
""",  # noqa: E501
    'pages/container.js': r"""// Page: one container, with its tabs: overview, logs, stats, console (the terminal) and inspect.
import {api, apiStream} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {download, onSubmit, showError, toast} from '../feedback.js';
import {containerName, esc, fmtBytes, fmtDate} from '../format.js';
import {every, onLeave} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';
import {dockerStreamDecoder, jsonLines} from '../streams.js';
import {Terminal} from '../terminal.js';
import {jsonTree, lineChart} from '../widgets.js';

const CONTAINER_TABS = [['overview', 'Overview'], ['logs', 'Logs'], ['stats', 'Stats'], ['console', 'Console'], ['inspect', 'Inspect']];
export async function pageContainer(envId, containerId, tab = 'overview') {
  const base = dockerBase(envId);
  const c = await api('GET', `${base}/containers/${containerId}/json`);
  const name = containerName(c);
  const main = render(name, `<div class="toolbar"><h2>${esc(name)}</h2><span class="badge ${esc(c.State.Status)}" id="c-state">${esc(c.State.Status)}</span>
    <span class="spacer"></span>${['start', 'stop', 'restart', 'kill', 'pause', 'unpause'].map(a => `<button data-action="${a}">${a[0].toUpperCase() + a.slice(1)}</button>`).join('')}
    <a class="button" href="#/env/${envId}/containers/new?from=${esc(c.Id)}">Duplicate/Edit</a><button class="danger" data-action="remove">Remove</button></div>
    <nav class="tabs">${CONTAINER_TABS.map(([t, l]) => `<a href="#/env/${envId}/containers/${esc(c.Id)}/${t}" class="${t === tab ? 'active' : ''}">${l}</a>`).join('')}</nav>
    <div id="tab"></div>`, envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, esc(name)));
  $$('[data-action]', main).forEach(b => b.addEventListener('click', async () => {
    const action = b.dataset.action;
    try {
      if (action === 'remove') { if (!confirm(`Remove container ${name}?`)) return; await api('DELETE', `${base}/containers/${c.Id}?force=1`); toast(`Container ${name} removed`); location.hash = `#/env/${envId}/containers`; return; }
      await api('POST', `${base}/containers/${c.Id}/${action}`); toast(`${name}: ${action} done`); await showState();
    } catch (err) { toast(`${action}: ${err.message}`, true); }
  }));
  const showState = async () => { const now = await api('GET', `${base}/containers/${c.Id}/json`);
    $('#c-state').textContent = now.State.Status; $('#c-state').className = `badge ${now.State.Status}`; };
  watchEngine(envId, ['container'], showState);
  const el = $('#tab');
  const tabs = {overview: containerOverview, logs: containerLogs, stats: containerStats, console: containerConsole,
                inspect: (el, c) => { el.innerHTML = `<div class="card tree"><ul>${jsonTree(c)}</ul></div>`; }};
  await (tabs[tab] || containerOverview)(el, c, envId);
}
function containerOverview(el, c, envId) {
  const net = Object.entries((c.NetworkSettings || {}).Networks || {});
  const ports = Object.entries((c.NetworkSettings || {}).Ports || {}).flatMap(([p, b]) => (b || []).map(x => `${x.HostIp}:${x.HostPort} → ${p}`));
  el.innerHTML = `<div class="grid2"><div class="card"><h3>Status</h3><dl class="kv"><dt>ID</dt><dd class="mono">${esc(c.Id)}</dd>
    <dt>Image</dt><dd>${esc(c.Config.Image)}</dd><dt>Created</dt><dd>${fmtDate(c.Created)}</dd><dt>Started</dt><dd>${fmtDate(c.State.StartedAt)}</dd>
    <dt>Command</dt><dd class="mono">${esc([...(c.Config.Entrypoint || []), ...(c.Config.Cmd || [])].join(' '))}</dd>
    <dt>Restart policy</dt><dd>${esc((c.HostConfig.RestartPolicy || {}).Name || 'no')}</dd><dt>Ports</dt><dd>${esc(ports.join(', ')) || '<span class="muted">none</span>'}</dd>
    <dt>Networks</dt><dd>${net.map(([n, v]) => `${esc(n)} ${esc(v.IPAddress)}`).join('<br>') || '<span class="muted">none</span>'}</dd>
    <dt>Volumes</dt><dd>${(c.Mounts || []).map(m => `${esc(m.Name || m.Source)} → ${esc(m.Destination)}`).join('<br>') || '<span class="muted">none</span>'}</dd></dl></div>
    <div class="card"><h3>Environment variables</h3><pre class="small mono">${esc((c.Config.Env || []).join('\n')) || '<span class="muted">none</span>'}</pre>
    <h3>Labels</h3><pre class="small mono">${esc(Object.entries(c.Config.Labels || {}).map(([k, v]) => `${k}=${v}`).join('\n')) || '<span class="muted">none</span>'}</pre></div></div>`;
}

const MAX_LOG_LINES = 10000;
async function containerLogs(el, c, envId) {
  el.innerHTML = `<div class="toolbar"><input class="filter" id="log-search" type="search" placeholder="Search logs" aria-label="Search logs">
    <label class="check"><input type="checkbox" id="log-follow" checked> Follow</label>
    <label class="check"><input type="checkbox" id="log-ts"> Timestamps</label>
    <label class="check"><input type="checkbox" id="log-only"> Only matching lines</label>
    <label for="log-tail" class="check">Lines <select id="log-tail"><option>100</option><option selected>1000</option><option value="all">all</option></select></label>
    <span class="spacer"></span><span class="muted small" id="log-count"></span><button id="log-download">Download</button></div>
    <div class="logs" id="logs" tabindex="0" aria-label="Container logs" aria-live="off"></div>`;
  const box = $('#logs'); let lines = [], partial = {1: '', 2: ''}, scheduled = false, controller = null;
  const draw = () => {
    scheduled = false;
    const q = $('#log-search').value, showTs = $('#log-ts').checked, only = $('#log-only').checked;
    const pattern = q.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), test = q ? new RegExp(pattern, 'i') : null;
    const shown = test && only ? lines.filter(l => test.test(l.text)) : lines;
    const re = test;
    let matches = 0;
    box.innerHTML = shown.slice(-3000).map(l => {
      let text = esc(l.text);
      if (re) text = text.replace(new RegExp(esc(q).replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'), m => { matches++; return `<mark>${m}</mark>`; });
      return `<div class="${l.stream === 2 ? 'err' : ''}">${showTs && l.ts ? `<span class="ts">${esc(l.ts)} </span>` : ''}${text}</div>`;
    }).join('');
    $('#log-count').textContent = `${lines.length} lines` + (re ? ` · ${matches} matches` : '');
    if ($('#log-follow').checked) box.scrollTop = box.scrollHeight;
  };
  const schedule = () => { if (!scheduled) { scheduled = true; requestAnimationFrame(draw); } };
  const onText = (stream, text) => {
    const parts = (partial[stream] + text).split('\n'); partial[stream] = parts.pop();
    for (const raw of parts) { const m = raw.match(/^(\d{4}-\d\d-\d\dT\S+) (.*)$/s); lines.push({stream, ts: m ? m[1] : '', text: (m ? m[2] : raw).replace(/\r$/, '')}); }
    if (lines.length > MAX_LOG_LINES) lines = lines.slice(-MAX_LOG_LINES);
    schedule();
  };
  const start = () => {
    if (controller) controller.abort();
    controller = new AbortController(); lines = []; partial = {1: '', 2: ''};
    const tail = $('#log-tail').value;
    const url = `${dockerBase(envId)}/containers/${c.Id}/logs?stdout=1&stderr=1&timestamps=1&follow=1&tail=${tail}`;
    const decode = dockerStreamDecoder(c.Config.Tty, onText);
    apiStream('GET', url, undefined, decode, undefined, controller.signal).catch(err => { if (err.name !== 'AbortError') { box.insertAdjacentHTML('beforeend', `<div class="err">${esc(err.message)}</div>`); } });
    schedule();
  };
  onLeave(() => controller && controller.abort());
  $('#log-search').addEventListener('input', schedule);
  ['#log-ts', '#log-only'].forEach(s => $(s).addEventListener('change', schedule));
  $('#log-follow').addEventListener('change', schedule);
  $('#log-tail').addEventListener('change', start);
  box.addEventListener('scroll', () => { const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 20; if (!atEnd && $('#log-follow').checked && !scheduled) $('#log-follow').checked = false; });
  $('#log-download').addEventListener('click', () => {
    const text = lines.map(l => ($('#log-ts').checked && l.ts ? l.ts + ' ' : '') + l.text).join('\n') + '\n';
    const url = URL.createObjectURL(new Blob([text], {type: 'text/plain'}));
    download(url, `${containerName(c)}.log`); setTimeout(() => URL.revokeObjectURL(url), 5000);
  });
  start();
}

async function containerStats(el, c, envId) {
  if (c.State.Status !== 'running') { el.innerHTML = '<p class="empty">Statistics are available while the container runs.</p>'; return; }
  el.innerHTML = '<div class="charts"><div id="ch-cpu"></div><div id="ch-mem"></div><div id="ch-net"></div><div id="ch-io"></div></div><div class="error" id="stats-error"></div><div id="top"></div>';
  const rate = n => `${fmtBytes(n)}/s`;
  const cpu = lineChart($('#ch-cpu'), 'CPU', [{label: 'CPU %', color: '#1e88e5'}], v => `${v.toFixed(1)} %`);
  const mem = lineChart($('#ch-mem'), 'Memory', [{label: 'used', color: '#8e24aa'}], fmtBytes);
  const net = lineChart($('#ch-net'), 'Network', [{label: 'received', color: '#43a047'}, {label: 'sent', color: '#fb8c00'}], rate);
  const io = lineChart($('#ch-io'), 'Disk I/O', [{label: 'read', color: '#00897b'}, {label: 'written', color: '#e53935'}], rate);
  let previous = null;
  const sum = (list, op) => (list || []).filter(e => e.op && e.op.toLowerCase() === op).reduce((a, e) => a + e.value, 0);
  const onStats = s => {
    const now = Date.parse(s.read) / 1000;
    const netRx = Object.values(s.networks || {}).reduce((a, n) => a + n.rx_bytes, 0), netTx = Object.values(s.networks || {}).reduce((a, n) => a + n.tx_bytes, 0);
    const blk = (s.blkio_stats || {}).io_service_bytes_recursive, rd = sum(blk, 'read'), wr = sum(blk, 'write');
    const cpuDelta = s.cpu_stats.cpu_usage.total_usage - s.precpu_stats.cpu_usage.total_usage;
    const sysDelta = (s.cpu_stats.system_cpu_usage || 0) - (s.precpu_stats.system_cpu_usage || 0);
    const cpus = s.cpu_stats.online_cpus || (s.cpu_stats.cpu_usage.percpu_usage || [1]).length;
    cpu.push([sysDelta > 0 ? cpuDelta / sysDelta * cpus * 100 : 0]);
    const cache = (s.memory_stats.stats || {}).inactive_file ?? (s.memory_stats.stats || {}).cache ?? 0;
    mem.push([Math.max(0, (s.memory_stats.usage || 0) - cache)]);
    if (previous) { const dt = Math.max(0.1, now - previous.now);
      net.push([(netRx - previous.netRx) / dt, (netTx - previous.netTx) / dt]); io.push([(rd - previous.rd) / dt, (wr - previous.wr) / dt]); }
    previous = {now, netRx, netTx, rd, wr};
  };
  apiStream('GET', `${dockerBase(envId)}/containers/${c.Id}/stats?stream=1`, undefined, jsonLines(onStats))
    .catch(err => { if (err.name !== 'AbortError') $('#stats-error').textContent = err.message; });
  const top = async () => { const t = await api('GET', `${dockerBase(envId)}/containers/${c.Id}/top`);
    $('#top').innerHTML = `<div class="card"><h3>Processes</h3><div class="table-wrap"><table><thead><tr>${t.Titles.map(x => `<th>${esc(x)}</th>`).join('')}</tr></thead>
      <tbody>${t.Processes.map(p => `<tr>${p.map(x => `<td class="mono small">${esc(x)}</td>`).join('')}</tr>`).join('')}</tbody></table></div></div>`; };
  top().catch(() => {}); every(5000, top);
}
async function containerConsole(el, c, envId) {
  if (c.State.Status !== 'running') { el.innerHTML = '<p class="empty">Start the container to open a console.</p>'; return; }
  el.innerHTML = `<form class="toolbar" id="console-form"><label for="console-cmd" class="check">Command</label>
    <select id="console-cmd" name="cmd" class="narrow"><option>sh</option><option>bash</option><option>/bin/sh -l</option><option>ash</option></select>
    <input id="console-custom" name="custom" class="filter" placeholder="or another command" aria-label="Custom command">
    <button class="primary" type="submit" id="console-connect">Connect</button><button type="button" id="console-attach">Attach</button>
    <button type="button" id="console-close" disabled>Disconnect</button><span class="muted small" id="console-status"></span>
    <div class="error" role="alert"></div></form><div class="term" id="term"></div>`;
  const term = new Terminal($('#term'), data => { if (socket && socket.readyState === 1) socket.send(new TextEncoder().encode(data)); });
  let socket = null;
  const status = t => { $('#console-status').textContent = t; };
  const sendSize = (cols, rows) => { if (socket && socket.readyState === 1) socket.send(JSON.stringify({type: 'resize', cols, rows})); };
  term.onResize = sendSize; term.fit(); term.draw();
  const observer = new ResizeObserver(() => term.fit()); observer.observe($('#term'));
  const close = () => { if (socket) { socket.onclose = null; socket.close(); socket = null; } $('#console-close').disabled = true; status('disconnected'); };
  onLeave(() => { close(); observer.disconnect(); });
  const open = mode => {
    close(); term.reset(); term.fit(); term.draw();
    const cmd = $('#console-custom').value.trim() || $('#console-cmd').value;
    const query = new URLSearchParams({containerId: c.Id, mode, cmd});
    // The session cookie authenticates the socket: no token in the URL.
    socket = new WebSocket(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/endpoints/${envId}/console/ws?${query}`);
    socket.binaryType = 'arraybuffer';
    status('connecting…');
    socket.onopen = () => { status(mode === 'attach' ? 'attached' : `connected: ${cmd}`); $('#console-close').disabled = false; sendSize(term.cols, term.rows); $('#term').focus(); };
    socket.onmessage = m => term.write(typeof m.data === 'string' ? m.data : new Uint8Array(m.data));
    socket.onclose = e => { status(e.code === 1000 || e.code === 1005 ? 'session ended' : `closed (${e.code}${e.reason ? ': ' + e.reason : ''})`); $('#console-close').disabled = true;
      if (e.code === 1006 && !socket.everOpened) showError($('#console-form'), new Error('The console could not be opened: your role on this environment may not allow it, or the container stopped')); };
    socket.addEventListener('open', () => { socket.everOpened = true; });
  };
  onSubmit($('#console-form'), async () => open('exec'));
  $('#console-attach').addEventListener('click', () => open('attach'));
  $('#console-close').addEventListener('click', close);
  $('#term').addEventListener('focus', () => term.draw()); $('#term').addEventListener('blur', () => term.draw());
}
""",  # noqa: E501
    'pages/containers.js': r"""// Pages: the containers of an environment (list with bulk actions) and the create/duplicate form.
import {api} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {onSubmit, showError, toast} from '../feedback.js';
import {containerName, esc, fmtAgo, fmtDate, shortId} from '../format.js';
import {imageUpdates} from '../image-updates.js';
import {envIsSwarm, session} from '../session.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';
import {pairsEditor} from '../widgets.js';

export function portLinks(c) {
  const host = (session.currentEnv && session.currentEnv.PublicURL) || location.hostname;
  const seen = new Set();
  return (c.Ports || []).filter(p => p.PublicPort && !seen.has(p.PublicPort + p.Type) && seen.add(p.PublicPort + p.Type))
    .map(p => p.Type === 'tcp' ? `<a href="http://${esc(host)}:${p.PublicPort}" target="_blank" rel="noopener noreferrer">${p.PublicPort}:${p.PrivatePort}</a>` : `${p.PublicPort}:${p.PrivatePort}/${p.Type}`).join(' ');
}
export async function pageContainers(envId) {
  const base = dockerBase(envId);
  const main = render('Containers', `<div class="toolbar"><h2>Containers</h2><span class="spacer"></span>
    <button id="check-updates">Check for image updates</button>
    <a class="button primary" href="#/env/${envId}/containers/new">Add container</a></div><div id="containers"></div>`, envCrumbs(envId, 'Containers'));
  const updates = imageUpdates(envId, () => table.setRows(table.rows()), () => load());
  const actions = ['start', 'stop', 'restart', 'kill', 'pause', 'unpause', 'remove'].map(a => `<button class="${a === 'remove' ? 'danger' : ''}" data-action="${a}" disabled>${a[0].toUpperCase() + a.slice(1)}</button>`).join('');
  const label = (c, k) => (c.Labels || {})[k] || '';
  const table = dataTable($('#containers'), {
    id: c => c.Id, selectable: true, actions, filterPlaceholder: 'Filter containers', empty: 'No containers on this environment.',
    columns: [
      {key: 'name', label: 'Name', value: containerName, html: c => `<a href="#/env/${envId}/containers/${esc(c.Id)}">${esc(containerName(c))}</a>`},
      {key: 'state', label: 'State', value: c => c.State, html: c => `<span class="${esc(c.State)}">${esc(c.State)}</span> <span class="muted small hide-sm">${esc(c.Status)}</span>`},
      {key: 'stack', label: 'Stack', value: c => label(c, 'com.docker.compose.project') || label(c, 'com.docker.stack.namespace'), cls: 'hide-sm'},
      {key: 'image', label: 'Image', value: c => c.Image, html: c => (c.Image.startsWith('sha256:') ? `<span class="mono" title="${esc(c.Image)}">${esc(shortId(c.Image))}</span>` : esc(c.Image))},
      {key: 'update', label: 'Image update', value: updates.value, html: updates.cell},
      {key: 'created', label: 'Created', value: c => c.Created, html: c => `<span title="${esc(fmtDate(c.Created))}">${fmtAgo(c.Created)}</span>`, cls: 'hide-sm'},
      {key: 'ip', label: 'IP', value: c => Object.values((c.NetworkSettings || {}).Networks || {}).map(n => n.IPAddress).filter(Boolean).join(' '), cls: 'hide-sm'},
      {key: 'ports', label: 'Published ports', html: portLinks, cls: 'hide-sm'},
      {key: 'node', label: 'Node', value: c => label(c, 'com.docker.swarm.node.id') ? label(c, 'com.docker.swarm.node.id').slice(0, 12) : '', cls: 'hide-sm'},
    ].filter(col => col.key !== 'node' || envIsSwarm(session.currentEnv)),
    onSelectionChange: sel => $$('[data-action]', main).forEach(b => { b.disabled = sel.size === 0; }),
  });
  const load = async () => { table.setRows(await api('GET', `${base}/containers/json?all=1`));
    if (updates.missing(table.rows())) updates.load(false); };
  updates.bind(main);
  $('#check-updates').addEventListener('click', () => updates.load(true));
  $$('[data-action]', main).forEach(b => b.addEventListener('click', async () => {
    const ids = table.selected(), action = b.dataset.action;
    if (action === 'remove' && !confirm(`Remove ${ids.length} container(s)? Their data outside volumes is lost.`)) return;
    $$('[data-action]', main).forEach(x => { x.disabled = true; });
    const results = await Promise.allSettled(ids.map(id => action === 'remove' ? api('DELETE', `${base}/containers/${id}?force=1&v=0`) : api('POST', `${base}/containers/${id}/${action}`)));
    const failed = results.map((r, i) => [r, ids[i]]).filter(([r]) => r.status === 'rejected');
    failed.forEach(([r, id]) => toast(`${action} ${shortId(id)}: ${r.reason.message}`, true));
    if (ids.length > failed.length) toast(`${action}: ${ids.length - failed.length} container(s) done`);
    table.clearSelection(); await load();
  }));
  await load(); watchEngine(envId, ['container'], load);
}
export async function pageContainerCreate(envId) {
  const base = dockerBase(envId);
  const from = new URLSearchParams(location.hash.split('?')[1] || '').get('from');
  const [source, networks, volumes] = await Promise.all([from ? api('GET', `${base}/containers/${from}/json`) : null,
    api('GET', `${base}/networks`), api('GET', `${base}/volumes`)]);
  const cfg = (source && source.Config) || {}, host = (source && source.HostConfig) || {};
  const ports = Object.entries(host.PortBindings || {}).flatMap(([cport, binds]) => (binds || []).map(b => [b.HostPort, cport.split('/')[0], cport.split('/')[1] || 'tcp']));
  const env = (cfg.Env || []).map(e => [e.split('=')[0], e.split('=').slice(1).join('=')]);
  const labels = Object.entries(cfg.Labels || {}).filter(([k]) => !k.startsWith('com.docker.'));
  const mounts = (host.Binds || []).map(b => b.split(':'));
  const netNow = Object.keys(((source && source.NetworkSettings) || {}).Networks || {})[0] || host.NetworkMode || 'bridge';
  const title = source ? `Duplicate / edit ${esc(containerName(source))}` : 'Create a container';
  render('Create container', `<div class="card"><h2>${title}</h2><form id="create" novalidate>
    <div class="row"><div><label for="c-name">Name</label><input id="c-name" name="name" value="${esc(source ? containerName(source) : '')}" placeholder="optional"></div>
    <div><label for="c-image">Image</label><input id="c-image" name="Image" required value="${esc(cfg.Image || '')}" placeholder="e.g. nginx:latest" data-error-hint="image|No such image|reference"></div></div>
    <div class="row"><div><label for="c-cmd">Command</label><input id="c-cmd" name="Cmd" value="${esc((cfg.Cmd || []).join(' '))}" placeholder="default of the image"></div>
    <div><label for="c-entry">Entrypoint</label><input id="c-entry" name="Entrypoint" value="${esc((cfg.Entrypoint || []).join(' '))}" placeholder="default of the image"></div></div>
    <fieldset><legend>Ports (host → container)</legend><div id="c-ports"></div></fieldset>
    <fieldset><legend>Environment variables</legend><div id="c-env"></div></fieldset>
    <fieldset><legend>Volumes (volume name or host path → container path)</legend><div id="c-volumes"></div></fieldset>
    <div class="row"><div><label for="c-network">Network</label><select id="c-network" name="network">${networks.map(n => `<option ${n.Name === netNow ? 'selected' : ''}>${esc(n.Name)}</option>`).join('')}</select></div>
    <div><label for="c-restart">Restart policy</label><select id="c-restart" name="restart">${['no', 'always', 'unless-stopped', 'on-failure'].map(p => `<option ${p === ((host.RestartPolicy || {}).Name || 'no') ? 'selected' : ''}>${p}</option>`).join('')}</select></div>
    <div><label for="c-memory">Memory limit (MB)</label><input id="c-memory" name="memory" type="number" min="0" value="${host.Memory ? Math.round(host.Memory / 1048576) : ''}" data-error-hint="memory"></div>
    <div><label for="c-cpus">CPU limit (cores)</label><input id="c-cpus" name="cpus" type="number" min="0" step="0.1" value="${host.NanoCpus ? host.NanoCpus / 1e9 : ''}" data-error-hint="cpu"></div></div>
    <fieldset><legend>Labels</legend><div id="c-labels"></div></fieldset>
    <div class="row"><label class="check narrow"><input type="checkbox" name="tty" ${cfg.Tty ? 'checked' : ''}> Interactive TTY (-it)</label>
    <label class="check narrow"><input type="checkbox" name="privileged" data-error-hint="privileged" ${host.Privileged ? 'checked' : ''}> Privileged</label>
    ${source ? '<label class="check narrow"><input type="checkbox" name="replace" checked> Replace the original container</label>' : ''}</div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Deploy the container</button> <a href="#/env/${envId}/containers">Cancel</a></p></form></div>`,
    envCrumbs(envId, `<a href="#/env/${envId}/containers">Containers</a>`, 'Create'));
  const volumeNames = (volumes.Volumes || []).map(v => v.Name);
  const getPorts = pairsEditor($('#c-ports'), [{placeholder: 'host port, e.g. 8080', name: 'hostPort', hint: 'port is already allocated|address already in use|host port'}, {placeholder: 'container port, e.g. 80', name: 'containerPort'}, {placeholder: 'protocol', options: ['tcp', 'udp']}], ports, 'Publish a port');
  const getEnv = pairsEditor($('#c-env'), [{placeholder: 'NAME'}, {placeholder: 'value'}], env, 'Add variable');
  const getVolumes = pairsEditor($('#c-volumes'), [{placeholder: `volume (${volumeNames.slice(0, 3).join(', ') || 'name'}) or /host/path`, name: 'volumeSource', hint: 'bind mount|host path|volume'}, {placeholder: '/path/in/container', name: 'volumeTarget'}], mounts, 'Map a volume');
  const getLabels = pairsEditor($('#c-labels'), [{placeholder: 'label name'}, {placeholder: 'value'}], labels, 'Add label');
  const form = $('#create'); $('#c-image').focus();
  onSubmit(form, async data => {
    const image = data.get('Image').trim();
    if (!image) return showError(form, new Error('An image is required'), 'Image');
    const split = s => s.trim() ? s.trim().match(/(?:[^\s"']+|"[^"]*"|'[^']*')+/g).map(a => a.replace(/^["']|["']$/g, '')) : undefined;
    const exposed = {}, bindings = {};
    for (const [hostPort, containerPort, proto] of getPorts()) {
      if (!/^\d+$/.test(containerPort)) return showError(form, new Error(`Container port "${containerPort}" must be a number`), 'containerPort');
      const key = `${containerPort}/${proto || 'tcp'}`; exposed[key] = {}; (bindings[key] = bindings[key] || []).push({HostPort: hostPort || ''});
    }
    const body = {Image: image, Cmd: split(data.get('Cmd')), Entrypoint: split(data.get('Entrypoint')),
      Env: getEnv().map(([k, v]) => `${k}=${v}`), Labels: Object.fromEntries(getLabels()), Tty: !!data.get('tty'), OpenStdin: !!data.get('tty'),
      ExposedPorts: exposed,
      HostConfig: {PortBindings: bindings, Binds: getVolumes().map(([s, t]) => `${s}:${t}`), NetworkMode: data.get('network'),
        RestartPolicy: {Name: data.get('restart'), MaximumRetryCount: 0}, Privileged: !!data.get('privileged'),
        Memory: data.get('memory') ? Math.round(+data.get('memory') * 1048576) : 0, NanoCpus: data.get('cpus') ? Math.round(+data.get('cpus') * 1e9) : 0}};
    const name = data.get('name').trim();
    if (source && data.get('replace')) {
      await api('POST', `${base}/containers/${source.Id}/stop`).catch(() => {});
      await api('POST', `${base}/containers/${source.Id}/rename?name=${encodeURIComponent(containerName(source) + '-old-' + Date.now())}`);
    }
    const created = await api('POST', `${base}/containers/create${name ? '?name=' + encodeURIComponent(name) : ''}`, body);
    try { await api('POST', `${base}/containers/${created.Id}/start`); }
    catch (err) { toast(`Created but not started: ${err.message}`, true); }
    if (source && data.get('replace')) await api('DELETE', `${base}/containers/${source.Id}?force=1`).catch(err => toast(err.message, true));
    toast(`Container ${name || shortId(created.Id)} deployed`);
    location.hash = `#/env/${envId}/containers/${created.Id}`;
  });
}
""",  # noqa: E501
    'pages/dashboard.js': r"""// Page: one environment's dashboard.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {esc, fmtBytes} from '../format.js';
import {every} from '../lifecycle.js';
import {envIsSwarm, session} from '../session.js';
import {ENV_NAV, envCrumbs, render} from '../shell.js';

export async function pageDashboard(envId) {
  const base = dockerBase(envId);
  render('Dashboard', `<div class="toolbar"><h2>${esc(session.currentEnv.Name)}</h2><span class="badge ${session.currentEnv.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}">${session.currentEnv.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}</span></div>
    <div id="dash"><p class="muted">Loading…</p></div>`, envCrumbs(envId, 'Dashboard'));
  const draw = async () => {
    const [info, version, containers, images, volumes, networks] = await Promise.all([api('GET', `${base}/info`), api('GET', `${base}/version`),
      api('GET', `${base}/containers/json?all=1`), api('GET', `${base}/images/json`), api('GET', `${base}/volumes`), api('GET', `${base}/networks`)]);
    const running = containers.filter(c => c.State === 'running').length;
    const stacks = new Set(containers.map(c => (c.Labels || {})['com.docker.compose.project']).filter(Boolean));
    const tile = (href, n, label, detail = '') => `<a class="card tile" href="${href}"><div class="stat">${n}</div><div>${label}</div><div class="muted small">${detail}</div></a>`;
    $('#dash').innerHTML = `<div class="grid">
      ${tile(`#/env/${envId}/containers`, containers.length, 'Containers', `<span class="running">${running} running</span> · <span class="exited">${containers.length - running} stopped</span>`)}
      ${tile(`#/env/${envId}/images`, images.length, 'Images', fmtBytes(images.reduce((a, i) => a + (i.Size || 0), 0)))}
      ${tile(`#/env/${envId}/volumes`, (volumes.Volumes || []).length, 'Volumes')}
      ${tile(`#/env/${envId}/networks`, networks.length, 'Networks')}
      ${tile(ENV_NAV.some(n => n.path === 'stacks') ? `#/env/${envId}/stacks` : `#/env/${envId}/containers`, stacks.size, 'Stacks', 'compose projects')}
      ${envIsSwarm(session.currentEnv) ? tile(`#/env/${envId}/services`, '', 'Swarm', `${info.Swarm.Nodes} nodes · ${info.Swarm.Managers} managers`) : ''}</div>
      <div class="card"><h3>Engine</h3><dl class="kv"><dt>Name</dt><dd>${esc(info.Name)}</dd><dt>Docker</dt><dd>${esc(version.Version)} (API ${esc(version.ApiVersion)})</dd>
      <dt>OS</dt><dd>${esc(info.OperatingSystem)} · ${esc(info.KernelVersion)} · ${esc(info.Architecture)}</dd><dt>CPU / memory</dt><dd>${info.NCPU} · ${fmtBytes(info.MemTotal)}</dd>
      <dt>Storage driver</dt><dd>${esc(info.Driver)}</dd><dt>Root directory</dt><dd class="mono">${esc(info.DockerRootDir)}</dd>
      <dt>Swarm</dt><dd>${esc((info.Swarm || {}).LocalNodeState || 'inactive')}${info.Swarm && info.Swarm.ControlAvailable ? ' (manager)' : ''}</dd>
      <dt>URL</dt><dd class="mono">${esc(session.currentEnv.URL)}</dd></dl></div>`;
  };
  await draw(); every(10000, draw);
}
""",  # noqa: E501
    'pages/edge.js': r"""// Pages and parts of the edge feature: the edge kind of the environment wizard, edge keys and association on
// the home page, edge groups, edge jobs and edge stacks.
import {api} from '../api.js';
import {$} from '../dom.js';
import {formError, showError, toast} from '../feedback.js';
import {esc, fmtAgo} from '../format.js';
import {every} from '../lifecycle.js';
import {constants} from '../constants.js';
import {isAdmin} from '../session.js';
import {render} from '../shell.js';
import {bindGitEdgeStackCard, bindGitEdgeStacks, gitEdgeStackCard, gitEdgeStackForm} from './stack-git.js';
import {bindEditor, checkboxes, checkedIds, statusBadge} from '../widgets.js';

export async function pageEdgeStacks() {
  const [stacks, groups, eps] = await Promise.all([api('GET', '/api/edge_stacks'), api('GET', '/api/edge_groups').catch(() => []), api('GET', '/api/endpoints')]);
  const epName = id => (eps.find(e => e.Id === id) || {}).Name || id;
  render('Edge stacks', `<div class="toolbar"><h2 class="flat">Edge stacks</h2></div>
    <div class="card"><table><tr><th>Name</th><th>Environments</th><th></th></tr>
    ${stacks.map(s => `<tr><td><a href="#/edge/stacks/${s.Id}">${esc(s.Name)}</a></td><td>${Object.values(s.Status).map(st => `<span class="badge ${st.Status === constants.EdgeStackStatus.Running ? 'running' : st.Status === constants.EdgeStackStatus.Error ? 'exited' : 'paused'}" title="${esc(st.Error)}">${esc(epName(st.EndpointID))}: ${esc(st.Status)}</span> ${st.Error ? `<span class="muted">${esc(st.Error)}</span>` : ''}`).join('<br>') || '<span class="muted">no environment in its groups</span>'}</td>
      <td><button class="danger" data-del="${s.Id}">Remove</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">No edge stack yet.</td></tr>'}</table></div>
    <div class="card"><h3>New edge stack</h3><form id="f"><label for="n">Name</label><input id="n" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <label for="g">Edge groups</label><select id="g" multiple>${groups.map(g => `<option value="${g.Id}">${esc(g.Name)}</option>`).join('')}</select>
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="14" spellcheck="false">services:\n  web:\n    image: busybox:local\n    command: sleep 3600\n</textarea></div>
    <div class="error" role="alert" id="err"></div><button class="primary">Deploy to the groups</button></form></div>${gitEdgeStackForm(groups)}`);
  bindGitEdgeStacks(pageEdgeStacks);
  let badLine = 0; const redraw = bindEditor(() => badLine);
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); badLine = 0;
    try { await api('POST', '/api/edge_stacks', {Name: f.n.value, StackFileContent: f.content.value, DeploymentType: 0,
      EdgeGroups: [...f.g.selectedOptions].map(o => +o.value)}); pageEdgeStacks(); }
    catch (err) { formError(f, err); const m = /line (\d+)/.exec(err.message); badLine = m ? +m[1] : 0; redraw(); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/edge_stacks/${b.dataset.del}`); pageEdgeStacks(); });
}
// One edge stack: its compose file and edge groups, saved as a new version the edge agents deploy again.
export async function pageEdgeStack(id) {
  const [stack, file, groups] = await Promise.all([api('GET', `/api/edge_stacks/${id}`), api('GET', `/api/edge_stacks/${id}/file`),
    api('GET', '/api/edge_groups').catch(() => [])]);
  render('Edge stack', `<div class="card"><h2>Edge stack ${esc(stack.Name)}</h2><p class="muted">Version ${esc(stack.Version)} · saving deploys a new version to every environment of its groups.</p>
    <form id="f"><label for="g">Edge groups</label><select id="g" multiple>${groups.map(g => `<option value="${g.Id}" ${stack.EdgeGroups.includes(g.Id) ? 'selected' : ''}>${esc(g.Name)}</option>`).join('')}</select>
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="18" spellcheck="false">${esc(file.StackFileContent)}</textarea></div>
    <div class="error" role="alert" id="err"></div><p><button class="primary">Save and redeploy</button> <a href="#/edge/stacks">All edge stacks</a></p></form></div>
    ${stack.GitConfig ? gitEdgeStackCard(stack) : ''}`,
    `<a href="#/edge/stacks">Edge stacks</a> / ${esc(stack.Name)}`);
  if (stack.GitConfig) bindGitEdgeStackCard(stack, () => pageEdgeStack(id));
  let badLine = 0; const redraw = bindEditor(() => badLine);
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); badLine = 0; redraw();
    try { const saved = await api('PUT', `/api/edge_stacks/${id}`, {StackFileContent: f.content.value, EdgeGroups: [...f.g.selectedOptions].map(o => +o.value), UpdateVersion: true});
      toast(`Edge stack ${saved.Name} saved: version ${saved.Version}`); await pageEdgeStack(id); }
    catch (err) { formError(f, err); const m = /line (\d+)/.exec(err.message); badLine = m ? +m[1] : 0; redraw(); } };
}
// The edge kind of the add-environment wizard.
export const EDGE_WIZARD_KIND = {label: 'Edge agent (the node dials this server)',
  fields: env => env ? `<p class="muted">The agent dials ${esc(env.URL)}; its Edge ID is ${esc(env.EdgeID || '(none yet)')}.</p>
    ${env.EdgeID ? `<p><button type="button" data-disassociate="${env.Id}">Disassociate</button> <span class="muted small">forget this Edge ID: the next agent that connects with the key is bound</span></p>` : ''}` :
    `<label for="url">This server's address as the edge node reaches it (HTTPS); empty: https://${esc(location.hostname)} on this server's HTTPS port</label>
    <input id="url" name="URL" placeholder="https://portainer.example.com:9443">`,
  done: (el, env) => { el.innerHTML = `<h3>Edge environment ${esc(env.Name)} created</h3>${edgeKeyBox(env)}
    <p>It shows as up on the <a href="#/home">home page</a> as soon as its agent connects.</p>`; bindEdgeButtons(el); }};
export function edgeInfo(ep) {
  if (ep.Type !== constants.EnvironmentTypes.Edge) return '';
  const refused = ep.EdgeRefused ? `<div class="error">Refused an agent with Edge ID <code>${esc(ep.EdgeRefused.EdgeID)}</code> from
    ${esc(ep.EdgeRefused.Address)}. ${isAdmin() ? `<button class="small" data-associate="${ep.Id}" data-edge-id="${esc(ep.EdgeRefused.EdgeID)}">Associate this agent instead</button>` : ''}</div>` : '';
  return `<div class="muted small">Edge ID <code>${esc(ep.EdgeID || '(none yet)')}</code> · tunnel ${ep.EdgeTunnelConnected ? 'connected' : 'disconnected'} ·
    last seen ${ep.LastCheckInDate ? fmtAgo(ep.LastCheckInDate) : 'never'}
    ${isAdmin() ? `<button type="button" class="small" data-edge-key="${ep.Id}">Show edge key</button>` : ''}
    ${isAdmin() && ep.EdgeID ? `<button type="button" class="small" data-disassociate="${ep.Id}" title="Forget this Edge ID: the next edge agent that connects with the key is bound instead">Disassociate</button>` : ''}</div>${refused}<div id="edge-key-${ep.Id}"></div>`;
}
function edgeKeyBox(answer) {
  return `<p>Run this on the edge node, next to a copy of agent.py (Python 3 with aiohttp):</p>
    <pre class="copyable mono" id="edge-command">${esc(answer.EdgeAgentCommand)}</pre>
    <p><button type="button" data-copy="edge-command">Copy command</button></p>
    <p class="muted">The edge key alone:</p><pre class="copyable mono" id="edge-key-raw">${esc(answer.EdgeKey)}</pre>
    <p><button type="button" data-copy="edge-key-raw">Copy key</button></p>`;
}
// One listener per container, so cards drawn again every few seconds keep working buttons.
export function bindEdgeButtons(container, redraw) {
  container.addEventListener('click', async e => {
    const b = e.target.closest('[data-copy], [data-edge-key], [data-associate], [data-disassociate]');
    if (!b) return;
    if (b.dataset.copy) {
      const text = $(`#${b.dataset.copy}`).textContent;
      try { await navigator.clipboard.writeText(text); b.textContent = 'Copied'; }
      catch (err) { const range = document.createRange(); range.selectNodeContents($(`#${b.dataset.copy}`));
        getSelection().removeAllRanges(); getSelection().addRange(range); b.textContent = 'Selected: press Ctrl+C'; }
    } else if (b.dataset.edgeKey) {
      $(`#edge-key-${b.dataset.edgeKey}`).innerHTML = edgeKeyBox(await api('GET', `/api/endpoints/${b.dataset.edgeKey}/edge/key`));
    } else if (b.dataset.disassociate) {
      if (!confirm('Disassociate this environment from its edge agent? Its tunnel closes; the next agent that connects with the edge key is bound.')) return;
      try { await api('DELETE', `/api/endpoints/${b.dataset.disassociate}/association`); toast('Environment disassociated from its edge agent'); }
      catch (err) { toast(err.message, true); return; }
      if (redraw) await redraw();
    } else {
      await api('PUT', `/api/endpoints/${b.dataset.associate}/association`, {EdgeID: b.dataset.edgeId});
      toast(`Environment associated with Edge ID ${b.dataset.edgeId}`); if (redraw) await redraw();
    }
  });
}
export async function pageEdgeGroups() {
  const [groups, eps] = await Promise.all([api('GET', '/api/edge_groups'), api('GET', `/api/endpoints?types=${constants.EnvironmentTypes.Edge}`)]);
  const byId = Object.fromEntries(eps.map(ep => [ep.Id, ep]));
  const main = render('Edge groups', `<div class="card"><h2>Edge groups</h2><table><tr><th>Name</th><th>Kind</th><th>Environments</th><th></th></tr>
    ${groups.map(g => `<tr><td>${esc(g.Name)}</td><td>${g.Dynamic ? `tags ${esc(g.TagIds.join(', '))} (${g.PartialMatch ? 'any' : 'all'})` : 'static'}</td>
    <td>${g.TrustedEndpoints.map(id => `${esc((byId[id] || {}).Name || id)} ${statusBadge(byId[id])}`).join(', ') || '<span class="muted">none</span>'}</td>
    <td><button class="danger small" data-del="${g.Id}">Remove</button></td></tr>`).join('') || '<tr><td colspan="4" class="muted">No edge group yet.</td></tr>'}</table>
    <div class="error" role="alert" id="err"></div></div>
    <div class="card"><h3>Add edge group</h3><form id="f"><label for="n">Name</label><input id="n" required>
    <label for="k">Kind</label><select id="k"><option value="static">Static: the environments ticked below</option>
    <option value="dynamic">Dynamic: every edge environment carrying tags</option></select>
    <div id="static"><p>Edge environments</p>${checkboxes(eps, 'ep')}</div>
    <div id="dynamic" class="hidden"><label for="t">Tag ids (comma separated)</label><input id="t">
    <label class="check"><input type="checkbox" id="pm"> Any of the tags is enough (else all)</label></div>
    <div class="error" role="alert"></div><p><button class="primary">Create edge group</button></p></form></div>`);
  const f = $('#f');
  f.k.addEventListener('change', () => { $('#static').classList.toggle('hidden', f.k.value !== 'static'); $('#dynamic').classList.toggle('hidden', f.k.value === 'static'); });
  f.addEventListener('submit', async e => { e.preventDefault(); const dynamic = f.k.value === 'dynamic';
    const body = {Name: f.n.value, Dynamic: dynamic, Endpoints: dynamic ? [] : checkedIds(f, 'ep'),
      TagIds: dynamic ? f.t.value.split(',').map(x => x.trim()).filter(Boolean).map(Number) : [], PartialMatch: f.pm.checked};
    try { await api('POST', '/api/edge_groups', body); toast('Edge group created'); await pageEdgeGroups(); } catch (err) { showError(f, err); } });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-del]'); if (!b) return;
    try { await api('DELETE', `/api/edge_groups/${b.dataset.del}`); await pageEdgeGroups(); } catch (err) { $('#err').textContent = err.message; } });
}
export async function pageEdgeJobs() {
  const [jobs, groups, eps] = await Promise.all([api('GET', '/api/edge_jobs'), api('GET', '/api/edge_groups'), api('GET', `/api/endpoints?types=${constants.EnvironmentTypes.Edge}`)]);
  const main = render('Edge jobs', `<div class="card"><h2>Edge jobs</h2><table><tr><th>Name</th><th>Schedule</th><th>Hosts</th><th></th></tr>
    ${jobs.map(j => `<tr><td><a href="#/edge/jobs/${j.Id}">${esc(j.Name)}</a></td><td>${j.Recurring ? esc(j.CronExpression) : 'once'}</td>
    <td>${Object.keys(j.Endpoints).length}</td><td><button class="small" data-run="${j.Id}">Run now</button> <button class="danger small" data-del="${j.Id}">Remove</button></td></tr>`).join('')
    || '<tr><td colspan="4" class="muted">No edge job yet.</td></tr>'}</table></div>
    <div class="card"><h3>Add edge job</h3><form id="f"><label for="n">Name</label><input id="n" required>
    <label for="s">Script (sh)</label><textarea id="s" rows="6" required></textarea>
    <p>Edge groups</p>${checkboxes(groups, 'g')}<p>Edge environments</p>${checkboxes(eps, 'ep')}
    <label class="check"><input type="checkbox" id="r"> Recurring</label>
    <label for="c">Cron schedule (minute hour day month weekday)</label><input id="c" placeholder="*/15 * * * *">
    <label for="m">Run</label><select id="m"><option value="container">in a container</option><option value="host">on the host (its files, processes and network)</option></select>
    <label for="i">Image (empty: the server's default)</label><input id="i">
    <div class="error" role="alert"></div><p><button class="primary">Create edge job</button></p></form></div>`);
  const f = $('#f');
  f.addEventListener('submit', async e => { e.preventDefault();
    const body = {Name: f.n.value, FileContent: f.s.value, EdgeGroups: checkedIds(f, 'g'), Endpoints: checkedIds(f, 'ep'),
      Recurring: f.r.checked, CronExpression: f.c.value, Mode: f.m.value, Image: f.i.value};
    try { const job = await api('POST', '/api/edge_jobs/create/string', body); location.hash = `#/edge/jobs/${job.Id}`; } catch (err) { showError(f, err); } });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-run], [data-del]'); if (!b) return;
    if (b.dataset.run) { await api('POST', `/api/edge_jobs/${b.dataset.run}/run`); location.hash = `#/edge/jobs/${b.dataset.run}`; }
    else { await api('DELETE', `/api/edge_jobs/${b.dataset.del}`); await pageEdgeJobs(); } });
}
export async function pageEdgeJob(id) {
  const job = await api('GET', `/api/edge_jobs/${id}`);
  const state = constants.EdgeJobLogStateNames;
  const main = render('Edge job', `<div class="card"><h2>Edge job ${esc(job.Name)}</h2><p class="muted">${job.Recurring ? 'Runs on ' + esc(job.CronExpression) : 'Runs once'}
    · <button id="run" class="small">Run now</button></p><div id="tasks"></div><pre id="out" class="mono"></pre></div>`,
    `<a href="#/edge/jobs">Edge jobs</a> / ${esc(job.Name)}`);
  const draw = async () => {
    const tasks = await api('GET', `/api/edge_jobs/${id}/tasks`);
    $('#tasks').innerHTML = `<table><tr><th>Environment</th><th>Tunnel</th><th>State</th><th>Exit code</th><th>Last run</th><th></th></tr>
    ${tasks.map(t => `<tr><td>${esc(t.EndpointName)}</td><td><span class="badge ${t.Connected ? 'up' : 'down'}">${t.Connected ? 'connected' : 'disconnected'}</span></td>
    <td>${state[t.LogsStatus]}</td><td>${t.LastRun ? esc(t.LastRun.ExitCode) : ''}${t.LastRun && t.LastRun.Error ? ' ' + esc(t.LastRun.Error) : ''}</td>
    <td>${t.LastRun ? fmtAgo(t.LastRun.Time) : ''}</td>
    <td>${t.LastRun ? `<button class="small" data-logs="${t.EndpointId}">Output</button>` : ''}</td></tr>`).join('')}</table>`;
  };
  $('#run').addEventListener('click', async () => { await api('POST', `/api/edge_jobs/${id}/run`); await draw(); });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-logs]'); if (!b) return;
    const logs = await api('GET', `/api/edge_jobs/${id}/tasks/${b.dataset.logs}/logs`);
    $('#out').textContent = logs.FileContent || '(no output)'; });
  await draw(); every(3000, draw);
}
""",  # noqa: E501
    'pages/environments.js': r"""// Pages: home (every environment), the add/edit environment wizard, and tags.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {$} from '../dom.js';
import {formError, onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtAgo, fmtBytes} from '../format.js';
import {every} from '../lifecycle.js';
import {bindEdgeButtons, EDGE_WIZARD_KIND, edgeInfo} from './edge.js';
import {groupName, UNASSIGNED_GROUP} from './groups.js';
import {motdBanner} from './motd.js';
import {isAdmin, session} from '../session.js';
import {render} from '../shell.js';

// One environment's card on the home page.
function envCard(ep, tagName, picked) {
  const s = ep.Snapshots[0] || {}; const up = ep.Status === constants.EnvironmentStatus.Up;
  return `<div class="card env" data-env="${ep.Id}">${isAdmin() ? `<input type="checkbox" class="env-pick" value="${ep.Id}" ${picked.has(ep.Id) ? 'checked' : ''} aria-label="Select ${esc(ep.Name)}">` : ''}<div class="info">
    <a class="name" href="#/env/${ep.Id}/dashboard">${esc(ep.Name)}</a>
    <span class="badge ${up ? 'up' : 'down'}">${up ? 'up' : 'down'}</span><span class="badge">${esc(constants.EnvironmentTypeNames[ep.Type] || 'type ' + ep.Type)}</span>
    ${s.Swarm ? '<span class="badge">Swarm</span>' : ''}${(ep.TagIds || []).map(t => `<span class="badge">${esc(tagName(t))}</span>`).join('')}
    <span class="muted small mono">${esc(ep.URL)}</span>
    <div class="muted">${s.DockerVersion ? `Docker ${esc(s.DockerVersion)} · ` : ''}${s.RunningContainerCount ?? 0} running · ${s.StoppedContainerCount ?? 0} stopped ·
    ${s.HealthyContainerCount ?? 0} healthy · ${s.ImageCount ?? 0} images · ${s.VolumeCount ?? 0} volumes ·${s.NetworkCount !== undefined ? ` ${s.NetworkCount} networks ·` : ''} ${s.StackCount ?? 0} stacks ·
    ${s.TotalCPU ?? '?'} CPU · ${fmtBytes(s.TotalMemory)} RAM${s.AgentVersion ? ` · agent ${esc(s.AgentVersion)}` : ''}${s.Time ? ` · snapshot ${fmtAgo(s.Time)}` : ''}</div>
    ${ep.Agent ? `<div class="muted small">Agent TLS certificate SHA-256 <code>${esc(ep.Agent.CertificateFingerprint)}</code></div>` : ''}
    ${isAdmin() ? `<div class="small"><a href="#/env/${ep.Id}/access">Access</a> · <a href="#/env/${ep.Id}/security">Security settings</a></div>` : ''}${edgeInfo(ep)}</div>
    ${isAdmin() ? `<a class="button" href="#/environments/${ep.Id}/edit">Edit</a>` : ''}</div>`;
}
// Home: every environment the caller may use, under its group's name; the group filter is kept in the address (?group=N).
export async function pageHome() {
  session.currentEnv = null;
  const chosenGroup = new URLSearchParams(location.hash.split('?')[1] || '').get('group') || '';
  let [envs, tags, groups, motd] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => []),
    api('GET', '/api/endpoint_groups').catch(() => []), api('GET', '/api/motd').catch(() => null)]);
  const groupIds = () => [...new Set([...groups.map(g => g.Id), ...envs.map(ep => ep.GroupId || UNASSIGNED_GROUP)])].sort((a, b) => a - b);
  render('Home', `<div class="toolbar"><h2>Environments</h2><span class="spacer"></span>
    <input class="filter" id="env-search" type="search" placeholder="Search by name, URL, type, tag, group" aria-label="Search environments">
    <select id="env-group" aria-label="Group"><option value="">All groups</option>${groupIds().map(id => `<option value="${id}" ${String(id) === chosenGroup ? 'selected' : ''}>${esc(groupName(groups, id))}</option>`).join('')}</select>
    ${isAdmin() ? `<button class="danger" id="env-remove" disabled>Remove selected</button>
      <a class="button" href="#/groups">Groups</a> <a class="button primary" href="#/environments/new">Add environment</a>` : ''}</div>
    <div class="error" role="alert" id="env-errors"></div><div id="env-list"></div>`);
  motdBanner($('#main'), motd);
  const picked = new Set();
  const tagName = id => (tags.find(t => t.ID === id || t.Id === id) || {}).Name || `tag ${id}`;
  const draw = () => {
    const q = $('#env-search').value.toLowerCase(), group = +$('#env-group').value;
    const shown = envs.filter(ep => (!group || (ep.GroupId || UNASSIGNED_GROUP) === group) &&
      [ep.Name, ep.URL, constants.EnvironmentTypeNames[ep.Type], groupName(groups, ep.GroupId || UNASSIGNED_GROUP), ...(ep.TagIds || []).map(tagName)].join(' ').toLowerCase().includes(q));
    // Only one group (every environment unassigned): no heading, as before groups existed.
    const headings = groupIds().length > 1 || envs.some(ep => (ep.GroupId || UNASSIGNED_GROUP) !== UNASSIGNED_GROUP);
    $('#env-list').innerHTML = groupIds().map(id => { const inGroup = shown.filter(ep => (ep.GroupId || UNASSIGNED_GROUP) === id);
      return inGroup.length ? `<section class="env-group" data-group="${id}" aria-label="Group ${esc(groupName(groups, id))}">
        ${headings ? `<h3 class="group-name">${esc(groupName(groups, id))} <span class="muted small">${inGroup.length}</span></h3>` : ''}${inGroup.map(ep => envCard(ep, tagName, picked)).join('')}</section>` : ''; }).join('')
      || `<p class="empty">${envs.length ? 'No environment matches.' : 'No environment yet.'}</p>`;
  };
  $('#env-search').addEventListener('input', draw);
  $('#env-group').addEventListener('change', () => { history.replaceState(null, '', $('#env-group').value ? `#/home?group=${$('#env-group').value}` : '#/home'); draw(); });
  draw();
  const remove = $('#env-remove');
  const showPicked = () => { for (const id of [...picked]) if (!envs.some(ep => ep.Id === id)) picked.delete(id);
    if (remove) { remove.disabled = !picked.size; remove.textContent = picked.size ? `Remove ${picked.size} selected` : 'Remove selected'; } };
  $('#env-list').addEventListener('change', e => { if (!e.target.classList.contains('env-pick')) return;
    e.target.checked ? picked.add(+e.target.value) : picked.delete(+e.target.value); showPicked(); });
  // Several at once: DELETE /api/endpoints answers 204, or 207 naming those it could not remove.
  if (remove) remove.addEventListener('click', async () => {
    const names = envs.filter(ep => picked.has(ep.Id)).map(ep => ep.Name);
    if (!confirm(`Remove ${names.length} environment(s) from this server (${names.join(', ')})? Nothing on their engines is touched.`)) return;
    const ids = [...picked], nameOf = id => (envs.find(ep => ep.Id === id) || {}).Name || `environment ${id}`;
    $('#env-errors').textContent = '';
    try {
      const answer = await api('DELETE', '/api/endpoints', {endpoints: ids.map(id => ({id}))});
      const failed = (answer && answer.errors) || [];
      if (failed.length) $('#env-errors').textContent = `Not removed (no longer there): ${failed.map(nameOf).join(', ')}`;
      toast(`${ids.length - failed.length} environment(s) removed`, !!failed.length);
      picked.clear(); await reload();
    } catch (err) { $('#env-errors').textContent = err.message; }
  });
  const reload = async () => { [envs, groups] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/endpoint_groups').catch(() => groups)]); draw(); showPicked(); };
  bindEdgeButtons($('#env-list'), reload);
  every(10000, reload);
}

// What the wizard asks for each kind of environment: {label, fields: html(env), done: (element, env) => ...}.
const DOCKER_WIZARD_KIND = {label: 'Docker API (socket or TCP)',
      fields: env => `<label for="url">Docker API URL</label><input id="url" name="URL" required placeholder="unix:///var/run/docker.sock or tcp://10.0.0.5:2376" value="${esc(env ? env.URL : 'unix:///var/run/docker.sock')}">
        <label class="check"><input type="checkbox" name="TLS" ${env && env.TLSConfig && env.TLSConfig.TLS ? 'checked' : ''}> TLS</label>
        <label class="check"><input type="checkbox" name="TLSSkipVerify" ${env && env.TLSConfig && env.TLSConfig.TLSSkipVerify ? 'checked' : ''}> Skip server certificate verification</label>
        ${env ? '' : `<div class="row"><div><label for="tls-ca">CA certificate</label><input id="tls-ca" type="file" name="TLSCACertFile"></div>
        <div><label for="tls-cert">Client certificate</label><input id="tls-cert" type="file" name="TLSCertFile"></div>
        <div><label for="tls-key">Client key</label><input id="tls-key" type="file" name="TLSKeyFile"></div></div>`}`};
const AGENT_WIZARD_KIND = {label: 'Agent (agent.py on the node)',
      fields: env => `<label for="url">Agent address (host:port, port 9001 by default)</label><input id="url" name="URL" required placeholder="10.0.0.5:9001" value="${esc(env ? env.URL : '')}">
        ${env ? '' : '<label for="secret">Agent secret (only when the agent runs with AGENT_SECRET)</label><input id="secret" name="AgentSecret" type="password" autocomplete="off">'}`,
      done: (el, env) => { el.innerHTML = `<p>Added <a href="#/env/${env.Id}/dashboard">${esc(env.Name)}</a>.</p>` +
        (env.Agent ? `<p>Check that the agent's certificate has this SHA-256 fingerprint; it is trusted from now on:</p><pre class="mono">${esc(env.Agent.CertificateFingerprint)}</pre>` : ''); }};
// The wizard's tabs by environment type (the server's numbers, known once the constants are read).
const wizardKinds = () => { const types = constants.EnvironmentTypes;
  return {[types.Docker]: DOCKER_WIZARD_KIND, [types.Agent]: AGENT_WIZARD_KIND, [types.Edge]: EDGE_WIZARD_KIND}; };
export async function pageEnvironmentForm(envId) {
  session.currentEnv = null;
  const [env, groups] = await Promise.all([envId ? api('GET', `/api/endpoints/${envId}`) : null, api('GET', '/api/endpoint_groups').catch(() => [])]);
  const envGroup = env ? env.GroupId || UNASSIGNED_GROUP : UNASSIGNED_GROUP;
  // The kind the wizard opens with: an agent, as in Portainer.
  const kind = env ? env.Type : Number(new URLSearchParams(location.hash.split('?')[1]).get('type') || constants.EnvironmentTypes.Agent);
  const wizard = wizardKinds(), kinds = Object.entries(wizard);
  render(env ? 'Edit environment' : 'Add environment', `<div class="card"><h2>${env ? 'Edit environment ' + esc(env.Name) : 'Add an environment'}</h2>
    ${env ? '' : `<div class="tabs" role="tablist">${kinds.map(([k, d]) => `<a role="tab" href="#/environments/new?type=${k}" class="${+k === kind ? 'active' : ''}">${esc(d.label)}</a>`).join('')}</div>`}
    <form id="env-form"><label for="n">Name</label><input id="n" name="Name" required value="${esc(env ? env.Name : '')}">
    ${wizard[kind] ? wizard[kind].fields(env) : '<p class="error">This kind of environment cannot be edited here.</p>'}
    <label for="env-group">Group</label><select id="env-group" name="GroupID">${(groups.some(g => g.Id === envGroup) ? groups : [{Id: envGroup, Name: groupName(groups, envGroup)}, ...groups])
      .map(g => `<option value="${g.Id}" ${g.Id === envGroup ? 'selected' : ''}>${esc(g.Name)}</option>`).join('')}</select>
    <label for="env-public">Public URL (used for the links of published ports)</label><input id="env-public" name="PublicURL" value="${esc(env ? env.PublicURL : '')}">
    ${env ? `<label class="check"><input type="checkbox" name="EnableImageNotification" ${env.EnableImageNotification ? 'checked' : ''}> Check for image updates (asks each running image's registry for its tag's digest)</label>
      <p class="muted small" id="env-image-registries">Registries it will contact: …</p>` : ''}
    ${env ? `<p><a href="#/env/${env.Id}/access">Who has access</a> · <a href="#/env/${env.Id}/security">What standard users may do (security settings)</a></p>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">${env ? 'Save' : 'Connect'}</button>
    ${env ? '<button type="button" class="danger" id="env-delete">Remove environment</button>' : ''} <a href="#/home">Cancel</a></p></form><div id="env-done"></div></div>`,
    `<a href="#/home">Home</a> / ${env ? 'Edit environment' : 'Add environment'}`);
  const form = $('#env-form'); $('#n').focus();
  if (env) api('GET', `/api/endpoints/${env.Id}/image_notification`).then(s => { $('#env-image-registries').textContent = s.Registries === null
    ? 'Registries it will contact: unknown (the engine did not answer).' : `Registries it will contact: ${s.Registries.join(', ') || 'none (no running container was pulled from a registry)'}`; }).catch(() => {});
  onSubmit(form, async data => {
    if (env) {
      const body = {Name: data.get('Name'), PublicURL: data.get('PublicURL'), EnableImageNotification: !!data.get('EnableImageNotification'), GroupID: +data.get('GroupID')};
      if (data.has('URL')) Object.assign(body, {URL: data.get('URL'), TLS: !!data.get('TLS'), TLSSkipVerify: !!data.get('TLSSkipVerify')});
      await api('PUT', `/api/endpoints/${env.Id}`, body); toast('Environment saved'); location.hash = '#/home'; return;
    }
    const body = new FormData(); body.set('EndpointCreationType', String(kind));
    for (const [k, v] of data.entries()) { if (v instanceof File && !v.size) continue; body.set(k, v instanceof File ? v : (v === 'on' ? 'true' : v)); }
    const created = await api('POST', '/api/endpoints', body);
    const after = wizard[kind].done;
    if (after) after($('#env-done'), created); else { toast(`Environment ${created.Name} added`); location.hash = `#/env/${created.Id}/dashboard`; }
  });
  if (env && env.Type === constants.EnvironmentTypes.Edge) bindEdgeButtons(form, () => pageEnvironmentForm(env.Id));
  const del = $('#env-delete');
  if (del) del.addEventListener('click', async () => { if (!confirm(`Remove environment ${env.Name} from this server? Nothing on the engine is touched.`)) return;
    try { await api('DELETE', `/api/endpoints/${env.Id}`); toast('Environment removed'); location.hash = '#/home'; } catch (err) { showError(form, err); } });
}
export async function pageTags() {
  const [tags, envs] = await Promise.all([api('GET', '/api/tags'), api('GET', '/api/endpoints')]);
  const main = render('Tags', `<div class="card"><h2>Tags</h2>
    <p class="muted">Tags label environments; dynamic edge groups pick their environments by tag.</p>
    <table><thead><tr><th>Tag</th><th>Environments</th><th></th></tr></thead><tbody>
    ${tags.map(t => `<tr><td><span class="badge">${esc(t.Name)}</span></td><td>${envs.map(ep => `<label class="inline">
      <input type="checkbox" data-tag="${t.ID}" data-env="${ep.Id}" ${(ep.TagIds || []).includes(t.ID) ? 'checked' : ''}> ${esc(ep.Name)}</label>`).join(' ')}</td>
      <td><button class="danger" data-del="${t.ID}">Remove</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">No tags yet.</td></tr>'}
    </tbody></table><form id="f"><label for="tag-name">New tag</label><input id="tag-name" required maxlength="128">
    <div class="error" role="alert"></div><button class="primary">Add tag</button></form></div>`);
  const f = main.querySelector('#f');
  f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/tags', {Name: f.querySelector('#tag-name').value}); pageTags(); } catch (err) { formError(f, err); } };
  main.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/tags/${b.dataset.del}`); pageTags(); });
  main.querySelectorAll('[data-tag]').forEach(box => box.onchange = async () => {
    const ep = envs.find(x => x.Id === +box.dataset.env), tag = +box.dataset.tag;
    ep.TagIds = box.checked ? [...new Set([...(ep.TagIds || []), tag])] : (ep.TagIds || []).filter(x => x !== tag);
    try { await api('PUT', `/api/endpoints/${ep.Id}`, {TagIds: ep.TagIds}); toast('Saved'); } catch (err) { toast(err.message); box.checked = !box.checked; } });
}
""",  # noqa: E501
    'pages/groups.js': r"""// Pages: environment groups (administrators): the list, a new group, one group's name, tags and environments.
// Group 1, "Unassigned", holds every environment no other group has; it cannot be removed.
import {api} from '../api.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';
import {dataTable} from '../table.js';
import {checkboxes, checkedIds, statusBadge} from '../widgets.js';

export const UNASSIGNED_GROUP = 1;
// A group's name from the list the caller may read (a standard user reads only the groups they are in).
export const groupName = (groups, id) => (groups.find(g => g.Id === id) || {}).Name || (id === UNASSIGNED_GROUP ? 'Unassigned' : `Group ${id}`);
const tagBadges = (tags, ids) => (ids || []).map(id => `<span class="badge">${esc((tags.find(t => t.ID === id) || {}).Name || `tag ${id}`)}</span>`).join('');
const tagBoxes = (tags, chosen = []) => tags.map(t => `<label class="inline"><input type="checkbox" name="tag" value="${t.ID}" ${chosen.includes(t.ID) ? 'checked' : ''}> ${esc(t.Name)}</label>`).join('')
  || '<p class="muted">No tag yet (<a href="#/tags">add tags</a>).</p>';

export async function pageGroups() {
  const [groups, envs, tags] = await Promise.all([api('GET', '/api/endpoint_groups'), api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => [])]);
  const members = id => envs.filter(ep => ep.GroupId === id);
  const main = render('Groups', `<div class="toolbar"><h2>Environment groups</h2></div>
    <div class="card"><p class="muted">A group gathers environments: the home page shows them under its name, and who has access to the group
    has access to each of its environments.</p><div id="group-list"></div><div class="error" role="alert" id="err"></div></div>
    <div class="card"><h3>Add group</h3><form id="f"><label for="group-name">Name</label><input id="group-name" name="Name" required>
    <label for="group-description">Description</label><input id="group-description" name="Description">
    <p class="muted">Tags</p><div>${tagBoxes(tags)}</div>
    <p class="muted">Environments (taken out of their current group)</p>${checkboxes(envs, 'ep')}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create group</button></p></form></div>`);
  dataTable($('#group-list'), {id: g => g.Id, rows: groups, filterPlaceholder: 'Filter groups', empty: 'No group yet.', columns: [
    {key: 'name', label: 'Name', value: g => g.Name, html: g => `<a href="#/groups/${g.Id}">${esc(g.Name)}</a>`},
    {key: 'description', label: 'Description', value: g => g.Description, cls: 'hide-sm'},
    {key: 'tags', label: 'Tags', value: g => (g.TagIds || []).map(id => (tags.find(t => t.ID === id) || {}).Name).join(' '), html: g => tagBadges(tags, g.TagIds)},
    {key: 'envs', label: 'Environments', value: g => members(g.Id).length,
     html: g => members(g.Id).map(ep => esc(ep.Name)).join(', ') || '<span class="muted">none</span>'},
    {key: 'actions', label: '', html: g => `<a class="button small" href="#/groups/${g.Id}">Edit</a> <a class="button small" href="#/groups/${g.Id}/access">Access</a>
      ${g.Id === UNASSIGNED_GROUP ? '' : `<button class="small danger" data-del="${g.Id}" aria-label="Remove group ${esc(g.Name)}">Remove</button>`}`}]});
  main.addEventListener('click', async e => { const b = e.target.closest('[data-del]'); if (!b) return;
    const group = groups.find(g => g.Id === +b.dataset.del);
    if (!confirm(`Remove group ${group.Name}? Its environments become unassigned.`)) return;
    try { await api('DELETE', `/api/endpoint_groups/${group.Id}`); toast(`Group ${group.Name} removed`); await pageGroups(); }
    catch (err) { $('#err').textContent = err.message; } });
  const f = $('#f');
  onSubmit(f, async data => {
    const made = await api('POST', '/api/endpoint_groups', {Name: data.get('Name'), Description: data.get('Description'),
      AssociatedEndpoints: checkedIds(f, 'ep'), TagIDs: checkedIds(f, 'tag')});
    toast(`Group ${made.Name} created`); await pageGroups();
  });
}

export async function pageGroup(id) {
  const [group, envs, tags] = await Promise.all([api('GET', `/api/endpoint_groups/${id}`), api('GET', '/api/endpoints'), api('GET', '/api/tags').catch(() => [])]);
  const inside = envs.filter(ep => ep.GroupId === group.Id), outside = envs.filter(ep => ep.GroupId !== group.Id);
  const main = render('Group', `<div class="card"><h2>Group ${esc(group.Name)}</h2><form id="f">
    <label for="group-name">Name</label><input id="group-name" name="Name" required value="${esc(group.Name)}">
    <label for="group-description">Description</label><input id="group-description" name="Description" value="${esc(group.Description)}">
    <p class="muted">Tags</p><div>${tagBoxes(tags, group.TagIds || [])}</div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save</button> <a href="#/groups/${group.Id}/access">Who has access</a> · <a href="#/groups">All groups</a></p></form></div>
    <div class="card"><h3>Environments in this group</h3><table id="group-members"><tr><th>Environment</th><th>Status</th><th></th></tr>
    ${inside.map(ep => `<tr data-env="${ep.Id}"><td>${esc(ep.Name)}</td><td>${statusBadge(ep)}</td>
      <td>${group.Id === UNASSIGNED_GROUP ? '' : `<button class="small" data-out="${ep.Id}">Take out of the group</button>`}</td></tr>`).join('')
      || '<tr><td colspan="3" class="muted">No environment in this group.</td></tr>'}</table>
    ${outside.length ? `<form id="add" class="toolbar"><label for="group-add">Move an environment into this group</label>
      <select id="group-add" name="endpoint">${outside.map(ep => `<option value="${ep.Id}">${esc(ep.Name)}</option>`).join('')}</select>
      <button type="submit">Move into the group</button><div class="error" role="alert"></div></form>` : ''}</div>`,
    `<a href="#/groups">Groups</a> / ${esc(group.Name)}`);
  const f = $('#f');
  onSubmit(f, async data => {
    await api('PUT', `/api/endpoint_groups/${group.Id}`, {Name: data.get('Name'), Description: data.get('Description'), TagIDs: checkedIds(f, 'tag')});
    toast('Group saved'); await pageGroup(group.Id);
  });
  const add = $('#add');
  if (add) onSubmit(add, async data => {
    await api('PUT', `/api/endpoint_groups/${group.Id}/endpoints/${data.get('endpoint')}`); toast('Environment moved'); await pageGroup(group.Id);
  });
  main.addEventListener('click', async e => { const b = e.target.closest('[data-out]'); if (!b) return;
    try { await api('DELETE', `/api/endpoint_groups/${group.Id}/endpoints/${b.dataset.out}`); toast('Environment taken out'); await pageGroup(group.Id); }
    catch (err) { toast(err.message, true); } });
}
""",  # noqa: E501
    'pages/images.js': r"""// Page: images (pull with per-layer progress, build, import/export, tag, remove).
import {api, apiStream} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$, $$} from '../dom.js';
import {download, onSubmit, showError, toast} from '../feedback.js';
import {esc, fmtBytes, fmtDate, shortId} from '../format.js';
import {registryChoice} from './registries.js';
import {envCrumbs, render} from '../shell.js';
import {jsonLines} from '../streams.js';
import {dataTable} from '../table.js';
import {progressView} from '../widgets.js';

export async function pageImages(envId) {
  const base = dockerBase(envId);
  render('Images', `<div class="toolbar"><h2>Images</h2></div>
    <div class="grid2"><form class="card" id="pull"><h3>Pull an image</h3><div class="row"><div><label for="pull-image">Image</label>
      <input id="pull-image" name="image" required placeholder="e.g. registry:5000/app:1.2" data-error-hint="image|reference|repository|manifest"></div>
      <div><label for="pull-registry">Registry</label><select id="pull-registry" name="registry"><option value="">none (public, or the engine's login)</option></select></div></div>
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Pull</button></p><div id="pull-progress"></div></form>
    <form class="card" id="build"><h3>Build from a context</h3><label for="build-tag">Tag</label><input id="build-tag" name="tag" placeholder="myapp:latest">
      <label for="build-file">Build context (.tar or .tar.gz with a Dockerfile)</label><input id="build-file" type="file" name="context" required accept=".tar,.tgz,.gz,application/x-tar,application/gzip">
      <label for="build-dockerfile">Dockerfile path in the context</label><input id="build-dockerfile" name="dockerfile" value="Dockerfile">
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Build</button></p><div id="build-progress"></div></form>
    <form class="card" id="import"><h3>Import images</h3><label for="import-file">Image archive (from docker save or Export)</label>
      <input id="import-file" type="file" name="archive" required accept=".tar,application/x-tar">
      <div class="error" role="alert"></div><p><button class="primary" type="submit">Import</button></p><div id="import-progress"></div></form></div>
    <div class="card" id="images"></div>`, envCrumbs(envId, 'Images'));
  const usedBy = new Map();
  const table = dataTable($('#images'), {
    id: i => i.Id, selectable: true, filterPlaceholder: 'Filter images', empty: 'No images.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button><button data-action="export" disabled>Export</button><input id="tag-name" class="filter" placeholder="new tag, e.g. app:v2" aria-label="New tag"><button data-action="tag" disabled>Tag</button>',
    columns: [
      {key: 'id', label: 'Id', value: i => shortId(i.Id), html: i => `<span class="mono">${esc(shortId(i.Id))}</span> ${usedBy.get(i.Id) ? '' : '<span class="badge">unused</span>'}`},
      {key: 'tags', label: 'Tags', value: i => (i.RepoTags || []).filter(t => t !== '<none>:<none>').join(' ') || '<none>'},
      {key: 'size', label: 'Size', value: i => i.Size, html: i => fmtBytes(i.Size)},
      {key: 'created', label: 'Created', value: i => i.Created, html: i => fmtDate(i.Created), cls: 'hide-sm'},
    ],
    onSelectionChange: sel => $$('#images [data-action]').forEach(b => { b.disabled = sel.size === 0 || (b.dataset.action === 'tag' && sel.size !== 1); }),
  });
  const load = async () => {
    const [images, containers] = await Promise.all([api('GET', `${base}/images/json`), api('GET', `${base}/containers/json?all=1`)]);
    usedBy.clear(); containers.forEach(c => usedBy.set(c.ImageID, true)); table.setRows(images);
  };
  const imageRef = id => { const i = table.rows().find(x => x.Id === id); const tag = i && (i.RepoTags || []).find(t => t !== '<none>:<none>'); return tag || id; };
  $('#images').addEventListener('click', async e => {
    const action = e.target.dataset && e.target.dataset.action; if (!action || e.target.disabled) return;
    const ids = table.selected();
    if (action === 'export') { for (const id of ids) download(`${base}/images/${encodeURIComponent(imageRef(id))}/get`, `${imageRef(id).replace(/[/:]/g, '_')}.tar`); return; }
    if (action === 'tag') {
      const input = $('#tag-name'), m = input.value.trim().match(/^(.+?)(?::([\w][\w.-]*))?$/);
      if (!m) { input.classList.add('invalid'); toast('Enter a tag such as app:v2', true); return; }
      try { await api('POST', `${base}/images/${encodeURIComponent(ids[0])}/tag?repo=${encodeURIComponent(m[1])}&tag=${encodeURIComponent(m[2] || 'latest')}`); toast(`Tagged ${input.value}`); input.value = ''; }
      catch (err) { toast(`Tag: ${err.message}`, true); }
    }
    if (action === 'remove') {
      if (!confirm(`Remove ${ids.length} image(s)?`)) return;
      for (const id of ids) { try { await api('DELETE', `${base}/images/${encodeURIComponent(id)}?force=1`); } catch (err) { toast(`Remove ${shortId(id)}: ${err.message}`, true); } }
    }
    table.clearSelection(); await load();
  });
  const streamInto = async (form, progressEl, method, url, body, headers) => {
    const view = progressView(progressEl);
    await apiStream(method, url, body, jsonLines(m => view.feed(m)), headers);
    if (view.failed()) throw new Error(view.failed());
    await load();
  };
  const registries = await registryChoice(envId, $('#pull-registry'));
  onSubmit($('#pull'), async data => {
    const ref = registries.qualify(data.get('registry'), data.get('image').trim()); const m = ref.match(/^(.+?)(?::([\w][\w.-]*))?(@sha256:[0-9a-f]+)?$/);
    if (!ref || !m) return showError($('#pull'), new Error('Enter an image reference'), 'image');
    const fromImage = m[3] ? m[1] + m[3] : m[1];
    await streamInto($('#pull'), $('#pull-progress'), 'POST', `${base}/images/create?fromImage=${encodeURIComponent(fromImage)}${m[3] ? '' : '&tag=' + encodeURIComponent(m[2] || 'latest')}`,
      undefined, registries.headers(data.get('registry')));
    toast(`Pulled ${ref}`);
  });
  onSubmit($('#build'), async data => {
    const file = data.get('context'); if (!file || !file.size) return showError($('#build'), new Error('Choose a build context archive'), 'context');
    const q = new URLSearchParams({dockerfile: data.get('dockerfile') || 'Dockerfile', rm: '1'}); if (data.get('tag')) q.set('t', data.get('tag'));
    await streamInto($('#build'), $('#build-progress'), 'POST', `${base}/build?${q}`, file, {'Content-Type': 'application/x-tar'});
    toast('Build finished');
  });
  onSubmit($('#import'), async data => {
    const file = data.get('archive'); if (!file || !file.size) return showError($('#import'), new Error('Choose an image archive'), 'archive');
    await streamInto($('#import'), $('#import-progress'), 'POST', `${base}/images/load?quiet=0`, file, {'Content-Type': 'application/x-tar'});
    toast('Images imported');
  });
  await load(); watchEngine(envId, ['image'], load);
}
""",  # noqa: E501
    'pages/motd.js': r"""// The message of the day: the administrator's card on the settings page (PUT /api/settings MessageOfTheDay) and
// the banner on the home page (GET /api/motd). The text is an administrator's input: it is shown as text, never HTML.
import {api} from '../api.js';
import {$} from '../dom.js';
import {formError, onSubmit} from '../feedback.js';
import {esc} from '../format.js';

// The Hash (of the message) the user dismissed in this browser, as Portainer does: a new message shows again.
const DISMISSED_KEY = 'motd-dismissed';

// Settings page: Title and Message, saved together; an empty message shows no banner.
export function motdSettingsCard(main, settings) {
  const motd = settings.MessageOfTheDay || {};
  const form = document.createElement('form'); form.className = 'card'; form.id = 'motd-settings';
  form.innerHTML = `<h2>Message of the day</h2><p class="muted">Shown as a banner on the home page of every user until they dismiss it. Leave the message empty to show none.</p>
    <label for="motd-title">Title</label><input id="motd-title" name="Title" value="${esc(motd.Title)}">
    <label for="motd-message">Message</label><textarea id="motd-message" name="Message" rows="4">${esc(motd.Message)}</textarea>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save the message</button></p>`;
  main.append(form);
  onSubmit(form, async data => {
    await api('PUT', '/api/settings', {MessageOfTheDay: {Title: data.get('Title'), Message: data.get('Message')}});
    formError(form, {message: 'Saved.'});
  });
}
// Home page: the banner above the environments, unless there is no message or this one was dismissed.
export function motdBanner(main, motd) {
  if (!motd || !motd.Message || !motd.Hash || localStorage.getItem(DISMISSED_KEY) === motd.Hash) return;
  const banner = document.createElement('section'); banner.className = 'card motd'; banner.id = 'motd';
  banner.setAttribute('aria-label', 'Message of the day');
  banner.innerHTML = `<div class="motd-text"><h3 class="motd-title"></h3><p class="motd-message"></p></div>
    <button type="button" class="small" aria-label="Dismiss the message of the day">&times;</button>`;
  $('.motd-title', banner).textContent = motd.Title || 'Message of the day';
  $('.motd-message', banner).textContent = motd.Message;
  $('button', banner).addEventListener('click', () => { localStorage.setItem(DISMISSED_KEY, motd.Hash); banner.remove(); });
  main.prepend(banner);
}
""",  # noqa: E501
    'pages/networks.js': r"""// Page: the networks of an environment.
import {api} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';

export async function pageNetworks(envId) {
  const base = dockerBase(envId);
  render('Networks', `<div class="toolbar"><h2>Networks</h2></div>
    <form class="card" id="network-create"><h3>Create a network</h3><div class="row"><div><label for="n-name">Name</label><input id="n-name" name="Name" required></div>
    <div><label for="n-driver">Driver</label><select id="n-driver" name="Driver"><option>bridge</option><option>overlay</option><option>macvlan</option><option>ipvlan</option></select></div>
    <div><label for="n-subnet">Subnet</label><input id="n-subnet" name="Subnet" placeholder="e.g. 172.30.0.0/16" data-error-hint="subnet|pool|overlap"></div>
    <div><label for="n-gateway">Gateway</label><input id="n-gateway" name="Gateway" placeholder="e.g. 172.30.0.1" data-error-hint="gateway"></div></div>
    <div class="row"><label class="check narrow"><input type="checkbox" name="Internal"> Internal (no outside access)</label><label class="check narrow"><input type="checkbox" name="Attachable"> Attachable</label></div>
    <div class="error" role="alert"></div><button class="primary" type="submit">Create the network</button></form><div class="card" id="networks"></div>`, envCrumbs(envId, 'Networks'));
  const builtin = new Set(['bridge', 'host', 'none', 'ingress', 'docker_gwbridge']);
  const table = dataTable($('#networks'), {
    id: n => n.Id, selectable: true, filterPlaceholder: 'Filter networks', empty: 'No networks.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: n => n.Name}, {key: 'driver', label: 'Driver', value: n => n.Driver}, {key: 'scope', label: 'Scope', value: n => n.Scope, cls: 'hide-sm'},
      {key: 'subnet', label: 'Subnet', value: n => ((n.IPAM || {}).Config || []).map(c => c.Subnet).join(' '), cls: 'mono small'},
      {key: 'gateway', label: 'Gateway', value: n => ((n.IPAM || {}).Config || []).map(c => c.Gateway || '').join(' '), cls: 'hide-sm mono small'},
      {key: 'flags', label: '', value: n => [n.Internal && 'internal', n.Attachable && 'attachable', builtin.has(n.Name) && 'system'].filter(Boolean).join(' ')}],
    onSelectionChange: sel => { $('#networks [data-action]').disabled = sel.size === 0; },
  });
  const load = async () => table.setRows(await api('GET', `${base}/networks`));
  $('#networks').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    for (const id of table.selected()) { try { await api('DELETE', `${base}/networks/${id}`); } catch (err) { toast(`Remove: ${err.message}`, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#network-create'), async data => {
    const ipam = data.get('Subnet') ? {Driver: 'default', Config: [{Subnet: data.get('Subnet'), ...(data.get('Gateway') ? {Gateway: data.get('Gateway')} : {})}]} : undefined;
    await api('POST', `${base}/networks/create`, {Name: data.get('Name').trim(), Driver: data.get('Driver'), Internal: !!data.get('Internal'), Attachable: !!data.get('Attachable'), IPAM: ipam, CheckDuplicate: true});
    toast(`Network ${data.get('Name')} created`); $('#network-create').reset(); await load();
  });
  await load(); watchEngine(envId, ['network'], load);
}
""",  # noqa: E501
    'pages/registries.js': r"""// Pages: registries (add, edit, who may use them), browsing one, and the registry picker of pulls.
import {api, apiStream} from '../api.js';
import {constants} from '../constants.js';
import {dockerBase} from '../docker.js';
import {$, $$} from '../dom.js';
import {formError, toast} from '../feedback.js';
import {esc} from '../format.js';
import {isAdmin} from '../session.js';
import {render} from '../shell.js';
import {jsonLines} from '../streams.js';
import {progressView} from '../widgets.js';

export async function pageRegistries(editId) {
  const regs = await api('GET', '/api/registries');
  const editing = regs.find(r => String(r.Id) === String(editId));
  const r0 = editing || {Name: '', URL: '', Type: constants.RegistryTypes.Custom, Authentication: false, Username: '', TLSSkipVerify: false};
  render('Registries', `<div class="card"><h2>Registries</h2><table><thead><tr><th>Name</th><th>URL</th>
    <th class="hide-sm">Type</th><th>Credentials</th><th></th></tr></thead><tbody>
    ${regs.map(r => `<tr><td>${esc(r.Name)}</td><td>${esc(r.URL)}</td><td class="hide-sm">${esc(constants.RegistryTypeNames[r.Type] || r.Type)}</td>
      <td>${r.Authentication ? esc(r.Username) : '<span class="muted">anonymous</span>'}</td>
      <td><a href="#/registries/${r.Id}">Browse</a> ${isAdmin() ? `<button class="small" data-edit="${r.Id}">Edit</button>
      <button class="small" data-access="${r.Id}">Access</button> <button class="small danger" data-del="${r.Id}">Remove</button>` : ''}</td></tr>`).join('')
      || '<tr><td colspan="5" class="muted">No registry yet.</td></tr>'}</tbody></table></div>
    ${isAdmin() ? `<div class="card"><h3>${editing ? 'Edit registry ' + esc(editing.Name) : 'Add registry'}</h3><form id="rf">
      <label for="rn">Name</label><input id="rn" required value="${esc(r0.Name)}">
      <label for="ru">URL (host:port, e.g. registry.example.com or 127.0.0.1:5000)</label><input id="ru" required value="${esc(r0.URL)}">
      <label for="rt">Type</label><select id="rt">${Object.entries(constants.RegistryTypeNames).map(([k, v]) => `<option value="${k}" ${+k === r0.Type ? 'selected' : ''}>${v}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="ra" ${r0.Authentication ? 'checked' : ''}> Authentication</label>
      <label for="rus">Username</label><input id="rus" autocomplete="off" value="${esc(r0.Username)}">
      <label for="rp">Password${editing ? ' (leave empty to keep the current one)' : ''}</label><input id="rp" type="password" autocomplete="new-password">
      <label class="check"><input type="checkbox" id="rk" ${r0.TLSSkipVerify ? 'checked' : ''}> Skip TLS certificate verification</label>
      <div class="error" role="alert"></div><button class="primary">${editing ? 'Save' : 'Add registry'}</button>
      ${editing ? '<a href="#/registries">Cancel</a>' : ''}</form></div><div id="access"></div>` : ''}`);
  if (!isAdmin()) return;
  const f = $('#rf');
  f.onsubmit = async e => { e.preventDefault();
    const body = {Name: f.rn.value, URL: f.ru.value, Type: +f.rt.value, Authentication: f.ra.checked,
                  Username: f.rus.value, TLSSkipVerify: f.rk.checked};
    if (f.rp.value) body.Password = f.rp.value;
    try { if (editing) await api('PUT', `/api/registries/${editing.Id}`, body); else await api('POST', '/api/registries', body);
      toast(editing ? 'Registry saved' : 'Registry added'); location.hash = '#/registries'; pageRegistries(); } catch (err) { formError(f, err); } };
  $$('[data-edit]').forEach(b => b.onclick = () => pageRegistries(b.dataset.edit));
  $$('[data-del]').forEach(b => b.onclick = async () => {
    if (!confirm('Remove this registry and its credentials?')) return;
    try { await api('DELETE', `/api/registries/${b.dataset.del}`); pageRegistries(); } catch (err) { toast(err.message, true); } });
  $$('[data-access]').forEach(b => b.onclick = () => registryAccessForm(regs.find(r => String(r.Id) === b.dataset.access)));
}
async function registryAccessForm(reg) {
  const [eps, users, teams] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/users'),
    api('GET', '/api/teams').catch(() => [])]);
  const box = $('#access');
  const draw = envId => { const acc = (reg.RegistryAccesses || {})[envId] || {};
    const users_ = acc.UserAccessPolicies || {}, teams_ = acc.TeamAccessPolicies || {};
    box.innerHTML = `<div class="card"><h3>Who may use ${esc(reg.Name)}</h3><form id="af"><label for="ae">Environment</label>
      <select id="ae">${eps.map(ep => `<option value="${ep.Id}" ${String(ep.Id) === String(envId) ? 'selected' : ''}>${esc(ep.Name)}</option>`).join('')}</select>
      <fieldset><legend>Users</legend>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<label class="check"><input type="checkbox" name="u" value="${u.Id}" ${users_[u.Id] ? 'checked' : ''}> ${esc(u.Username)}</label>`).join('') || '<span class="muted">no standard users</span>'}</fieldset>
      ${teams.length ? `<fieldset><legend>Teams</legend>${teams.map(t => `<label class="check"><input type="checkbox" name="t" value="${t.Id}" ${teams_[t.Id] ? 'checked' : ''}> ${esc(t.Name)}</label>`).join('')}</fieldset>` : ''}
      <div class="error" role="alert"></div><button class="primary">Save access</button></form></div>`;
    const f = $('#af');
    f.ae.onchange = () => draw(f.ae.value);
    f.onsubmit = async e => { e.preventDefault();
      const pick = n => Object.fromEntries($$(`input[name=${n}]:checked`, f).map(x => [x.value, {RoleId: 0}]));
      const body = {UserAccessPolicies: pick('u'), TeamAccessPolicies: pick('t')};
      try { await api('PUT', `/api/endpoints/${f.ae.value}/registries/${reg.Id}`, body);
        reg.RegistryAccesses = reg.RegistryAccesses || {}; reg.RegistryAccesses[f.ae.value] = body; toast('Access saved'); }
      catch (err) { formError(f, err); } }; };
  draw(eps.length ? eps[0].Id : '');
}
export async function pageRegistryBrowse(id) {
  const [reg, eps] = await Promise.all([api('GET', `/api/registries/${id}`), api('GET', '/api/endpoints')]);
  render(reg.Name, `<div class="card"><h2>${esc(reg.Name)} <span class="muted">${esc(reg.URL)}</span></h2>
    <div class="error" role="alert" id="reg-err"></div><div class="grid"><div><h3>Repositories</h3><div id="repos" class="muted">Loading…</div></div>
    <div><h3>Tags</h3><div id="tags" class="muted">Choose a repository.</div></div></div>
    <label for="pull-env">Pull to environment</label><select id="pull-env">${eps.map(ep => `<option value="${ep.Id}">${esc(ep.Name)}</option>`).join('')}</select>
    <div id="pulled"></div></div>`, `<a href="#/registries">Registries</a> / ${esc(reg.Name)}`);
  const err = $('#reg-err');
  let repos = [];
  try { repos = (await api('GET', `/api/registries/${id}/v2/_catalog`)).repositories; } catch (e) { err.textContent = e.message; }
  $('#repos').innerHTML = repos.map(r => `<div><a href="#/registries/${id}" data-repo="${esc(r)}">${esc(r)}</a></div>`).join('') || 'No repository.';
  $$('[data-repo]').forEach(a => a.onclick = async e => { e.preventDefault(); err.textContent = '';
    const repo = a.dataset.repo, box = $('#tags');
    try { const t = await api('GET', `/api/registries/${id}/v2/${repo.split('/').map(encodeURIComponent).join('/')}/tags/list`);
      box.innerHTML = (t.tags || []).map(tag => `<div>${esc(repo)}:<b>${esc(tag)}</b> <button class="small" data-pull="${esc(tag)}">Pull</button></div>`).join('') || 'No tag.';
      $$('[data-pull]', box).forEach(b => b.onclick = () => pullWithRegistry(reg, repo, b.dataset.pull));
    } catch (e2) { err.textContent = e2.message; } });
}
// A pull through the proxy that names the registry, as Portainer's UI does: the server adds its credentials.
async function pullWithRegistry(reg, repo, tag) {
  const env = $('#pull-env').value, image = `${reg.URL.replace(/^\w+:\/\//, '').split('/')[0]}/${repo}`;
  const view = progressView($('#pulled'));
  try {
    await apiStream('POST', `${dockerBase(env)}/images/create?fromImage=${encodeURIComponent(image)}&tag=${encodeURIComponent(tag)}`,
      undefined, jsonLines(m => view.feed(m)), {'X-Registry-Auth': btoa(JSON.stringify({registryId: reg.Id}))});
    if (view.failed()) throw new Error(view.failed());
    toast(`Pulled ${image}:${tag}`);
  } catch (err) { toast(`Pull of ${image}:${tag} failed: ${err.message}`, true); }
}
// A registry picker for pulls: the registries the user may use here; the server adds the chosen one's credentials.
export async function registryChoice(envId, select) {
  const regs = await api('GET', `/api/endpoints/${envId}/registries`).catch(() => []);
  select.insertAdjacentHTML('beforeend', regs.map(r => `<option value="${r.Id}">${esc(r.Name)} (${esc(r.URL)})</option>`).join(''));
  const host = id => { const r = regs.find(x => String(x.Id) === String(id)); return r ? r.URL.replace(/^\w+:\/\//, '').split('/')[0] : ''; };
  return {
    headers: id => (id ? {'X-Registry-Auth': btoa(JSON.stringify({registryId: +id}))} : {}),
    qualify: (id, ref) => (id && host(id) && !ref.startsWith(host(id) + '/') ? `${host(id)}/${ref}` : ref),
  };
}
""",  # noqa: E501
    'pages/stack-git.js': r"""// Pages: stacks from a git repository (the create form), and the git card on a stack's page (repository, deployed
// commit, last check, "Pull and redeploy", the webhook URL, auto-update settings).
import {api} from '../api.js';
import {$} from '../dom.js';
import {constants} from '../constants.js';
import {onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';

function envList(text) {
  return text.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'))
    .map(l => { const i = l.indexOf('='); return i < 0 ? {name: l, value: ''} : {name: l.slice(0, i), value: l.slice(i + 1)}; });
}
const lines = text => text.split('\n').map(l => l.trim()).filter(Boolean);
// POST <origin>/api/stacks/webhooks/<id> fetches the repository and redeploys the stack.
export const stackWebhookUrl = id => `${location.origin}/api/stacks/webhooks/${id}`;

// Auto-update fields, shared by the create form and the stack's git card: {Interval, Webhook, ForceUpdate, ForcePullImage}.
function autoUpdateFields(auto) {
  auto = auto || {};
  return `<fieldset><legend>Automatic updates</legend>
    <label for="git-interval">Poll the repository every (a duration such as 5m or 1h; empty: no polling)</label>
    <input id="git-interval" name="Interval" placeholder="5m" value="${esc(auto.Interval || '')}">
    <label class="check"><input type="checkbox" id="git-webhook" name="Webhook" ${auto.Webhook ? 'checked' : ''}> Webhook: a secret URL that redeploys the stack when called</label>
    <label class="check"><input type="checkbox" id="git-webhook-env" name="WebhookEnv" ${auto.WebhookEnv ? 'checked' : ''}> The webhook's query parameters may set the stack's variables</label>
    <label class="check"><input type="checkbox" id="git-force" name="ForceUpdate" ${auto.ForceUpdate ? 'checked' : ''}> Redeploy when the containers drifted from the file, even without a new commit</label>
    <label class="check"><input type="checkbox" id="git-pull" name="ForcePullImage" ${auto.ForcePullImage ? 'checked' : ''}> Pull images again at each update</label></fieldset>`;
}
function autoUpdateOf(data) {
  return {Interval: (data.get('Interval') || '').trim(), Webhook: data.get('Webhook') === 'on', WebhookEnv: data.get('WebhookEnv') === 'on',
    ForceUpdate: data.get('ForceUpdate') === 'on', ForcePullImage: data.get('ForcePullImage') === 'on'};
}
function credentialFields(config) {
  const auth = config && config.Authentication;
  return `<label class="check"><input type="checkbox" id="git-auth" name="RepositoryAuthentication" ${auth ? 'checked' : ''}> Authentication</label>
    <div class="row"><div><label for="git-user">Username</label><input id="git-user" name="RepositoryUsername" autocomplete="off" value="${esc(auth ? auth.Username : '')}"></div>
    <div><label for="git-password">Password or token${config ? ' (empty: keep the saved one)' : ''}</label><input id="git-password" name="RepositoryPassword" type="password" autocomplete="new-password"></div></div>
    <label for="git-key">SSH deploy key (for ssh:// or user@host:path URLs; private key, OpenSSH format)</label>
    <textarea id="git-key" name="RepositorySSHKey" rows="3" spellcheck="false" placeholder="-----BEGIN OPENSSH PRIVATE KEY-----"></textarea>
    <label class="check"><input type="checkbox" id="git-tls" name="TLSSkipVerify" ${config && config.TLSSkipVerify ? 'checked' : ''}> Skip TLS verification</label>`;
}
function credentialsOf(data) {
  const body = {RepositoryAuthentication: data.get('RepositoryAuthentication') === 'on', TLSSkipVerify: data.get('TLSSkipVerify') === 'on'};
  if (body.RepositoryAuthentication) { body.RepositoryUsername = data.get('RepositoryUsername').trim(); body.RepositoryPassword = data.get('RepositoryPassword'); }
  if (data.get('RepositorySSHKey').trim()) body.RepositorySSHKey = data.get('RepositorySSHKey');
  return body;
}

export async function pageStackFromGit() {
  const eps = await api('GET', '/api/endpoints');
  render('Stack from git', `<div class="card"><h2>New stack from a git repository</h2><form id="git-stack">
    <label for="git-name">Name</label><input id="git-name" name="Name" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <div class="row"><div><label for="git-ep">Environment</label><select id="git-ep" name="EndpointID">${eps.map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select></div>
    <div><label for="git-type">Type</label><select id="git-type" name="Type"><option value="${constants.StackTypes.Compose}">Compose (standalone)</option><option value="${constants.StackTypes.Swarm}">Swarm</option></select></div></div>
    <label for="git-url">Repository URL</label><input id="git-url" name="RepositoryURL" required placeholder="https://git.example.com/team/app.git">
    <div class="row"><div><label for="git-ref">Reference</label><input id="git-ref" name="RepositoryReferenceName" value="refs/heads/main"></div>
    <div><label for="git-path">Compose path</label><input id="git-path" name="ComposeFile" value="docker-compose.yml"></div></div>
    <label for="git-extra">Additional files (one path a line, merged over the compose file in order)</label><textarea id="git-extra" name="AdditionalFiles" rows="2"></textarea>
    ${credentialFields(null)}
    ${autoUpdateFields(null)}
    <label for="git-env">Environment variables (NAME=value, one a line)</label><textarea id="git-env" name="Env" rows="4"></textarea>
    <div class="error" role="alert"></div>
    <div class="toolbar"><button class="primary" type="submit">Deploy the stack</button></div></form></div>`);
  onSubmit($('#git-stack'), async data => {
    const kind = +data.get('Type') === constants.StackTypes.Swarm ? 'swarm' : 'standalone';
    const body = {Name: data.get('Name').trim(), RepositoryURL: data.get('RepositoryURL').trim(),
      RepositoryReferenceName: data.get('RepositoryReferenceName').trim(), ComposeFile: data.get('ComposeFile').trim(),
      AdditionalFiles: lines(data.get('AdditionalFiles')), Env: envList(data.get('Env')), ...credentialsOf(data)};
    const auto = autoUpdateOf(data);
    if (auto.Interval || auto.Webhook) body.AutoUpdate = auto;
    const made = await api('POST', `/api/stacks/create/${kind}/repository?endpointId=${data.get('EndpointID')}`, body);
    location.hash = `#/stacks/${made.Id}`;
  });
}

const when = seconds => seconds ? new Date(seconds * 1000).toLocaleString() : 'never';
// The card a git stack's page shows above its (read-only) compose file.
export function gitStackCard(stack) {
  const config = stack.GitConfig, check = stack.GitCheck || {}, auto = stack.AutoUpdate || {};
  return `<div class="card" id="git-card"><h3>Git repository</h3>
    <table><tr><th>Repository</th><td><code id="git-repo">${esc(config.URL)}</code></td></tr>
    <tr><th>Reference</th><td><code>${esc(config.ReferenceName || 'HEAD')}</code></td></tr>
    <tr><th>Compose path</th><td><code>${esc(config.ConfigFilePath)}</code>${(stack.AdditionalFiles || []).map(f => ` + <code>${esc(f)}</code>`).join('')}</td></tr>
    <tr><th>Deployed commit</th><td><code id="git-commit" title="${esc(config.ConfigHash)}">${esc((config.ConfigHash || '').slice(0, 12))}</code></td></tr>
    <tr><th>Last checked</th><td id="git-checked">${esc(when(check.Time))}${check.Outcome ? ` <span class="badge ${check.Outcome === 'failed' ? 'exited' : 'running'}">${esc(check.Outcome)}</span>` : ''}
      ${check.Trigger ? `<span class="muted">by ${esc(check.Trigger)}</span>` : ''} ${check.Message ? `<span class="muted">${esc(check.Message)}</span>` : ''}</td></tr>
    ${auto.Webhook ? `<tr><th>Webhook</th><td><code class="small webhook-url" id="git-webhook-url">${esc(stackWebhookUrl(auto.Webhook))}</code>
      <button type="button" class="small" id="git-webhook-copy" aria-label="Copy the webhook URL">Copy</button></td></tr>` : ''}</table>
    <form id="git-redeploy"><div class="row"><div><label for="git-redeploy-ref">Reference</label><input id="git-redeploy-ref" name="RepositoryReferenceName" value="${esc(config.ReferenceName)}"></div></div>
      <label class="check"><input type="checkbox" name="PullImage"> Pull images again</label>
      <label class="check"><input type="checkbox" name="Prune"> Remove services no longer in the file</label>
      <div class="error" role="alert"></div><button class="primary" type="submit">Pull and redeploy</button></form>
    <form id="git-settings"><h3>Git settings</h3>${credentialFields(config)}${autoUpdateFields(auto)}
      <div class="error" role="alert"></div><button type="submit">Save the git settings</button></form></div>`;
}
export function bindGitStackCard(stack, reload) {
  const copy = $('#git-webhook-copy');
  if (copy) copy.onclick = async () => {
    try { await navigator.clipboard.writeText($('#git-webhook-url').textContent); copy.textContent = 'Copied'; }
    catch (err) { const range = document.createRange(); range.selectNodeContents($('#git-webhook-url'));
      getSelection().removeAllRanges(); getSelection().addRange(range); copy.textContent = 'Selected: press Ctrl+C'; }
  };
  const query = `?endpointId=${stack.EndpointId}`;
  onSubmit($('#git-redeploy'), async data => {
    const body = {RepositoryReferenceName: data.get('RepositoryReferenceName').trim(), PullImage: data.get('PullImage') === 'on', Prune: data.get('Prune') === 'on'};
    const env = $('#env'); if (env) body.Env = envList(env.value); // the variables as edited above
    const deployed = await api('PUT', `/api/stacks/${stack.Id}/git/redeploy${query}`, body);
    toast(`Deployed commit ${deployed.GitConfig.ConfigHash.slice(0, 12)}`); await reload();
  });
  onSubmit($('#git-settings'), async data => {
    const body = {...credentialsOf(data), AutoUpdate: autoUpdateOf(data)};
    if (body.RepositoryAuthentication && !body.RepositoryPassword) delete body.RepositoryPassword; // keep the saved one
    await api('POST', `/api/stacks/${stack.Id}/git${query}`, body); toast('Git settings saved'); await reload();
  });
}

// Custom templates and edge stacks from a repository: the same repository fields, their own routes.
function repositoryFields(prefix, pathField) {
  return `<label for="${prefix}-url">Repository URL</label><input id="${prefix}-url" name="RepositoryURL" required placeholder="https://git.example.com/team/app.git">
    <div class="row"><div><label for="${prefix}-ref">Reference</label><input id="${prefix}-ref" name="RepositoryReferenceName" value="refs/heads/main"></div>
    <div><label for="${prefix}-path">Compose path</label><input id="${prefix}-path" name="${pathField}" value="docker-compose.yml"></div></div>
    <label class="check"><input type="checkbox" name="RepositoryAuthentication"> Authentication</label>
    <div class="row"><div><label for="${prefix}-user">Username</label><input id="${prefix}-user" name="RepositoryUsername" autocomplete="off"></div>
    <div><label for="${prefix}-password">Password or token</label><input id="${prefix}-password" name="RepositoryPassword" type="password" autocomplete="new-password"></div></div>`;
}
function repositoryOf(data, pathField) {
  const body = {RepositoryURL: data.get('RepositoryURL').trim(), RepositoryReferenceName: data.get('RepositoryReferenceName').trim(),
    [pathField]: data.get(pathField).trim(), RepositoryAuthentication: data.get('RepositoryAuthentication') === 'on'};
  if (body.RepositoryAuthentication) { body.RepositoryUsername = data.get('RepositoryUsername').trim(); body.RepositoryPassword = data.get('RepositoryPassword'); }
  return body;
}
export function gitTemplateForm() {
  return `<div class="card"><h3>New custom template from a git repository</h3><form id="git-template">
    <label for="gt-title">Title</label><input id="gt-title" name="Title" required>
    <label for="gt-description">Description</label><input id="gt-description" name="Description" required>
    ${repositoryFields('gt', 'ComposeFilePathInRepository')}
    <div class="error" role="alert"></div><button class="primary" type="submit">Save template from git</button></form></div>`;
}
export function bindGitTemplates(reload) {
  onSubmit($('#git-template'), async data => {
    await api('POST', '/api/custom_templates/create/repository', {Title: data.get('Title').trim(), Description: data.get('Description').trim(),
      Type: constants.TemplateTypes.ComposeStack, ...repositoryOf(data, 'ComposeFilePathInRepository')});
    toast('Template saved from the repository'); await reload();
  });
  document.querySelectorAll('[data-git-fetch]').forEach(b => b.onclick = async () => {
    try { await api('PUT', `/api/custom_templates/${b.dataset.gitFetch}/git_fetch`); toast('Template fetched again from its repository'); }
    catch (err) { toast(err.message, true); } });
}
export function gitEdgeStackForm(groups) {
  return `<div class="card"><h3>New edge stack from a git repository</h3><form id="git-edge">
    <label for="ge-name">Name</label><input id="ge-name" name="Name" required pattern="[a-z0-9][a-z0-9_\\-]*">
    <label for="ge-groups">Edge groups</label><select id="ge-groups" name="EdgeGroups" multiple>${groups.map(g => `<option value="${g.Id}">${esc(g.Name)}</option>`).join('')}</select>
    ${repositoryFields('ge', 'FilePathInRepository')}
    <div class="error" role="alert"></div><button class="primary" type="submit">Deploy from git to the groups</button></form></div>`;
}
export function bindGitEdgeStacks(reload) {
  onSubmit($('#git-edge'), async data => {
    await api('POST', '/api/edge_stacks/create/repository', {Name: data.get('Name').trim(), DeploymentType: 0,
      EdgeGroups: data.getAll('EdgeGroups').map(Number), ...repositoryOf(data, 'FilePathInRepository')});
    await reload();
  });
}
// On an edge stack's page: where its file comes from, and a button that fetches it again and redeploys everywhere.
export function gitEdgeStackCard(stack) {
  const config = stack.GitConfig;
  return `<div class="card" id="git-card"><h3>Git repository</h3><p><code id="git-repo">${esc(config.URL)}</code> · <code>${esc(config.ReferenceName || 'HEAD')}</code> · <code>${esc(config.ConfigFilePath)}</code>
    · commit <code id="git-commit" title="${esc(config.ConfigHash)}">${esc(config.ConfigHash.slice(0, 12))}</code></p>
    <div class="error" role="alert" id="git-edge-error"></div><button type="button" class="primary" id="git-edge-redeploy">Pull and redeploy</button></div>`;
}
export function bindGitEdgeStackCard(stack, reload) {
  $('#git-edge-redeploy').onclick = async () => {
    try { const saved = await api('PUT', `/api/edge_stacks/${stack.Id}/git/redeploy`, {}); toast(`Edge stack ${saved.Name}: version ${saved.Version}`); await reload(); }
    catch (err) { $('#git-edge-error').textContent = err.message; } };
}
""",  # noqa: E501
    'pages/stacks.js': r"""// Pages: stacks (list, ones made outside portainer.py to adopt) and the stack editor.
import {api, request} from '../api.js';
import {constants} from '../constants.js';
import {DEPLOY_ID_HEADER, progressKey, progressLine} from '../deploy-progress.js';
import {formError, onSubmit, toast} from '../feedback.js';
import {esc} from '../format.js';
import {stackImageUpdates} from '../image-updates.js';
import {isAdmin, session} from '../session.js';
import {render} from '../shell.js';
import {bindGitStackCard, gitStackCard} from './stack-git.js';
import {demuxLogs, jsonLines} from '../streams.js';
import {bindEditor} from '../widgets.js';

// A deploy's live progress: a deploy id of the page's choosing, its stream opened (GET
// /api/stacks/deploys/{id}/progress, JSON lines ending with the deploy) before the deploy call that names it in
// X-Portainer-Deploy-Id. Shows each event in `panel`; resolves, once the stream is open, with that header.
function deployId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map(b => b.toString(16).padStart(2, '0')).join('');
}
async function watchDeploy(panel) {
  const id = deployId(), lines = [], keyed = new Map();
  panel.hidden = false; panel.textContent = 'starting…';
  const response = await request('GET', `/api/stacks/deploys/${id}/progress`, {signal: new AbortController().signal});
  const draw = () => { panel.textContent = lines.join('\n'); panel.scrollTop = panel.scrollHeight; };
  const feed = jsonLines(e => {
    const key = progressKey(e), line = progressLine(e);
    if (key && keyed.has(key)) lines[keyed.get(key)] = line;
    else { if (key) keyed.set(key, lines.length); lines.push(line); }
    draw();
  });
  const reader = response.body.getReader();
  (async () => { try { for (;;) { const {done, value} = await reader.read(); if (done) return; feed(value); } } catch (e) { /* the page went away */ } })();
  return {[DEPLOY_ID_HEADER]: id};
}

// Who may use a stack, from its resource control: a stack without one is for administrators only.
function stackAccess(rc, users, teams) {
  if (!rc || rc.AdministratorsOnly) return 'administrators';
  if (rc.Public) return 'public';
  return [...rc.UserAccesses.map(a => a.UserId === session.me.Id ? 'you' : (users.find(u => u.Id === a.UserId) || {}).Username || `user ${a.UserId}`),
    ...rc.TeamAccesses.map(a => 'team ' + ((teams.find(t => t.Id === a.TeamId) || {}).Name || a.TeamId))].join(', ') || 'administrators';
}
export async function pageStacks() {
  const [stacks, eps, users, teams] = await Promise.all([api('GET', '/api/stacks'), api('GET', '/api/endpoints'),
    api('GET', '/api/users').catch(() => []), api('GET', '/api/teams').catch(() => [])]);
  const epName = id => (eps.find(e => e.Id === id) || {}).Name || id;
  const outside = [];
  for (const ep of eps.filter(e => e.Status === constants.EnvironmentStatus.Up && e.Type === constants.EnvironmentTypes.Docker)) {
    try { outside.push(...await api('GET', `/api/stacks/outside?endpointId=${ep.Id}`)); } catch (e) { /* no stack rights there */ }
  }
  render('Stacks', `<div class="toolbar"><h2 class="flat">Stacks</h2><span class="spacer"></span>
    ${isAdmin() ? '<a href="#/edge/stacks">Edge stacks</a>' : ''}<a href="#/stacks/new/git"><button>Add stack from git</button></a><a href="#/stacks/new"><button class="primary">Add stack</button></a></div>
    <div class="card"><table><thead><tr><th>Name</th><th>Type</th><th>Environment</th><th>State</th><th>Owner/Access</th><th>Created</th></tr></thead><tbody>
    ${stacks.map(s => `<tr><td><a href="#/stacks/${s.Id}">${esc(s.Name)}</a>${s.GitConfig ? ' <span class="badge" title="deployed from a git repository">git</span>' : ''}</td><td>${esc(constants.StackTypeNames[s.Type])}</td>
      <td>${esc(epName(s.EndpointId))}</td><td class="${s.Status === constants.StackStatus.Active ? 'running' : 'exited'}">${s.Status === constants.StackStatus.Active ? 'active' : 'inactive'}</td>
      <td class="access">${esc(stackAccess(s.ResourceControl, users, teams))}</td>
      <td>${new Date(s.CreationDate * 1000).toLocaleString()}</td></tr>`).join('') || '<tr><td colspan="6" class="muted">No stack yet.</td></tr>'}
    </tbody></table></div>
    ${outside.length ? `<div class="card"><h3>Made outside portainer.py</h3><table><tr><th>Project</th><th>Environment</th><th>Services</th><th>Running</th><th></th></tr>
    ${outside.map(p => `<tr><td>${esc(p.Name)}</td><td>${esc(epName(p.EndpointId))}</td><td>${esc(p.Services.join(', '))}</td>
      <td>${p.Running}/${p.Containers}</td><td>${isAdmin() ? `<a href="#/stacks/adopt/${p.EndpointId}/${encodeURIComponent(p.Name)}">Adopt</a>` : ''}</td></tr>`).join('')}</table></div>` : ''}`);
}
function envText(env) { return (env || []).map(e => `${e.name}=${e.value}`).join('\n'); }
function envList(text) { return text.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#')).map(l => { const i = l.indexOf('='); return i < 0 ? {name: l, value: ''} : {name: l.slice(0, i), value: l.slice(i + 1)}; }); }
export async function pageStackEditor(id, adopt) {
  const eps = await api('GET', '/api/endpoints');
  let stack = null, content = 'services:\n  web:\n    image: busybox:local\n    command: sleep 3600\n', services = [];
  let users = [], teams = [];
  if (id) { stack = await api('GET', `/api/stacks/${id}`); content = (await api('GET', `/api/stacks/${id}/file`)).StackFileContent;
    services = await api('GET', `/api/stacks/${id}/services`).catch(() => []);
    [users, teams] = await Promise.all([api('GET', '/api/users').catch(() => []), api('GET', '/api/teams').catch(() => [])]); }
  const rc = stack && stack.ResourceControl;
  let badLine = 0;
  render('Stack', `<div class="card"><h2>${stack ? 'Stack ' + esc(stack.Name) : adopt ? 'Adopt ' + esc(adopt.name) : 'New stack'}</h2><form id="f">
    ${stack ? '' : `<label for="n">Name</label><input id="n" required pattern="[a-z0-9][a-z0-9_\\-]*" value="${esc(adopt ? adopt.name : '')}" ${adopt ? 'readonly' : ''}>
      <label for="ep">Environment</label><select id="ep">${eps.map(e => `<option value="${e.Id}" ${adopt && +adopt.ep === e.Id ? 'selected' : ''}>${esc(e.Name)}</option>`).join('')}</select>
      ${adopt ? '' : `<label for="ty">Type</label><select id="ty"><option value="${constants.StackTypes.Compose}">Compose (standalone)</option><option value="${constants.StackTypes.Swarm}">Swarm</option></select>
      <label for="upload">Upload a compose file or a project archive (instead of the text below)</label>
      <input id="upload" type="file" name="file" accept=".yml,.yaml,.tar,.tgz,.tar.gz,.zip,application/yaml,text/yaml,application/x-tar,application/gzip,application/zip">
      <label for="compose-file">Compose file in the archive (default: compose.yaml, docker-compose.yml, …)</label>
      <input id="compose-file" placeholder="docker-compose.yml">
      <p class="muted">An archive (.tar, .tar.gz, .zip) is the whole project: its relative binds, build contexts, secret and config files resolve inside it.</p>`}`}
    <label for="content">Compose file</label><div class="editor"><div class="gutter" id="gutter" aria-hidden="true"></div>
    <textarea id="content" rows="22" spellcheck="false" ${stack && stack.GitConfig ? 'readonly aria-describedby="git-note"' : ''}>${esc(content)}</textarea></div>
    ${stack && stack.GitConfig ? '<p class="muted" id="git-note">This file comes from the git repository below: push a change there, then pull and redeploy.</p>' : ''}
    ${stack ? `<p>Owner/Access: <b id="stack-access">${esc(stackAccess(rc, users, teams))}</b></p>` : ''}
    ${stack && stack.Env === null ? '<p class="muted">Its environment variables are shown only to those who may manage this stack.</p>' :
    `<label for="env">Environment variables (NAME=value, one a line)</label><textarea id="env" rows="4">${esc(envText(stack && stack.Env))}</textarea>`}
    ${stack && !stack.GitConfig ? `<label for="upload">Replace the project with an archive (optional: .tar, .tar.gz, .zip; its compose file replaces the text above)</label>
      <input id="upload" type="file" name="file" accept=".tar,.tgz,.tar.gz,.zip,application/x-tar,application/gzip,application/zip">
      <label for="compose-file">Compose file in the archive</label><input id="compose-file" placeholder="${esc(stack.EntryPoint || 'docker-compose.yml')}">
      <label><input type="checkbox" id="prune" class="tick"> Remove services no longer in the file</label>
      <label><input type="checkbox" id="pull" class="tick"> Pull images again</label>` : ''}
    <div class="error" role="alert" id="err"></div>
    <pre id="deploy-progress" class="small mono build-log" aria-live="polite" aria-label="Deploy progress" hidden></pre>
    <div class="toolbar">${stack && stack.GitConfig ? '' : `<button class="primary" type="submit">${stack ? 'Update the stack' : adopt ? 'Adopt' : 'Deploy the stack'}</button>`}
    ${stack ? `<button type="button" data-act="${stack.Status === constants.StackStatus.Active ? 'stop' : 'start'}">${stack.Status === constants.StackStatus.Active ? 'Stop' : 'Start'}</button>
      <button type="button" class="danger" data-act="remove">Remove</button>` : ''}</div></form></div>
    ${stack && stack.GitConfig ? gitStackCard(stack) : ''}
    ${stack ? `<div class="card"><h3>Services</h3><div id="stack-updates"></div><table><tr><th>Service</th><th>Image</th><th>Containers</th></tr>
      ${services.map(s => `<tr><td>${esc(s.Name)}</td><td>${esc(s.Image)}</td><td>${s.Containers.map(c => `<span class="badge ${esc(c.State)}">${esc(c.Name)}: ${esc(c.State)}</span>` +
        (stack.Type === constants.StackTypes.Compose ? ` <button type="button" data-logs="${esc(c.Id)}">logs</button>` : '')).join(' ') || '<span class="muted">none</span>'}</td></tr>`).join('')}</table>
      <pre id="logs" aria-live="polite"></pre></div>` : ''}
    ${stack && eps.some(e => e.Id !== stack.EndpointId) ? `<div class="card"><form id="migrate"><h3>Migrate to another environment</h3>
      <p class="muted">Deploys the stack on the chosen environment, then removes it from ${esc((eps.find(e => e.Id === stack.EndpointId) || {}).Name || 'this one')}. Volumes' data does not move.</p>
      <div class="row"><div><label for="migrate-ep">Environment</label><select id="migrate-ep" name="EndpointID">${eps.filter(e => e.Id !== stack.EndpointId).map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select></div>
      <div><label for="migrate-name">New name (optional)</label><input id="migrate-name" name="Name" pattern="[a-z0-9][a-z0-9_\\-]*" placeholder="${esc(stack.Name)}"></div></div>
      <div class="error" role="alert"></div><p><button type="submit">Migrate to…</button></p></form></div>` : ''}
    ${stack && isAdmin() ? `<div class="card"><form id="acl"><h3>Access</h3>
      <label for="w">Shared with</label><select id="w" multiple>${users.filter(u => u.Role !== constants.UserRoles.Administrator).map(u => `<option value="u${u.Id}" ${rc && rc.UserAccesses.some(a => a.UserId === u.Id) ? 'selected' : ''}>${esc(u.Username)}</option>`).join('')}
        ${teams.map(t => `<option value="t${t.Id}" ${rc && rc.TeamAccesses.some(a => a.TeamId === t.Id) ? 'selected' : ''}>team ${esc(t.Name)}</option>`).join('')}</select>
      <label class="check"><input type="checkbox" id="pub" ${rc && rc.Public ? 'checked' : ''}> Public: everyone with access to the environment</label>
      <label class="check"><input type="checkbox" id="adm" ${!rc || rc.AdministratorsOnly ? 'checked' : ''}> Administrators only</label>
      <div class="error" role="alert"></div><button class="primary">Save access</button></form></div>` : ''}`);
  const migrate = document.getElementById('migrate');
  if (migrate) onSubmit(migrate, async data => {
    const target = eps.find(e => e.Id === +data.get('EndpointID'));
    if (!confirm(`Move stack ${stack.Name} to ${target.Name}? It is removed from its current environment once it runs there.`)) return;
    const moved = await api('POST', `/api/stacks/${stack.Id}/migrate?endpointId=${stack.EndpointId}`, {EndpointID: target.Id, Name: data.get('Name').trim()});
    toast(`Stack ${moved.Name} now runs on ${target.Name}`); await pageStackEditor(moved.Id);
  });
  const acl = document.getElementById('acl');
  if (acl) acl.onsubmit = async e => { e.preventDefault(); const chosen = [...acl.w.selectedOptions].map(o => o.value);
    const body = {Public: acl.pub.checked, AdministratorsOnly: acl.adm.checked,
      Users: chosen.filter(v => v[0] === 'u').map(v => +v.slice(1)), Teams: chosen.filter(v => v[0] === 't').map(v => +v.slice(1))};
    try { if (rc) await api('PUT', `/api/resource_controls/${rc.Id}`, body);
      else await api('POST', '/api/resource_controls', {...body, ResourceID: `${stack.EndpointId}_${stack.Name}`, Type: constants.ResourceControlTypes.Stack});
      toast('Access saved'); pageStackEditor(stack.Id); } catch (err) { formError(acl, err); } };
  const redraw = bindEditor(() => badLine);
  if (stack) stackImageUpdates(stack, () => pageStackEditor(stack.Id));
  if (stack && stack.GitConfig) bindGitStackCard(stack, () => pageStackEditor(stack.Id));
  const f = document.getElementById('f'), err = document.getElementById('err');
  const fail = e => { err.textContent = e.message; const m = /line (\d+)/.exec(e.message); badLine = m ? +m[1] : 0; redraw(); };
  // A compose file or project archive as a multipart upload, as Portainer's "Upload" build method sends it.
  const uploadForm = (upload, body) => { const form = new FormData(); form.set('file', upload);
    if (body.Env) form.set('Env', JSON.stringify(body.Env));
    for (const k of ['Name', 'Prune', 'PullImage']) if (body[k] !== undefined) form.set(k, String(body[k]));
    if (f['compose-file'] && f['compose-file'].value.trim()) form.set('ComposeFile', f['compose-file'].value.trim());
    return form; };
  f.onsubmit = async e => { e.preventDefault(); err.textContent = ''; badLine = 0; redraw();
    const body = {StackFileContent: f.content.value, ...(f.env ? {Env: envList(f.env.value)} : {})};
    const upload = f.upload && f.upload.files[0], button = f.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      const headers = await watchDeploy(document.getElementById('deploy-progress'));
      if (stack) { body.Prune = f.prune.checked; body.PullImage = f.pull.checked;
        const path = `/api/stacks/${stack.Id}?endpointId=${stack.EndpointId}`;
        if (upload) { delete body.StackFileContent; await api('PUT', path, uploadForm(upload, body), headers); }
        else await api('PUT', path, body, headers);
        toast(`Stack ${stack.Name} updated`); return pageStackEditor(stack.Id); }
      body.Name = f.n.value;
      const ep = f.ep.value;
      const kind = !adopt && +f.ty.value === constants.StackTypes.Swarm ? 'swarm' : 'standalone';
      let made;
      if (adopt) made = await api('POST', `/api/stacks/adopt?endpointId=${ep}`, body, headers);
      else if (upload) made = await api('POST', `/api/stacks/create/${kind}/file?endpointId=${ep}`, uploadForm(upload, body), headers);
      else made = await api('POST', `/api/stacks/create/${kind}/string?endpointId=${ep}`, body, headers);
      toast(`Stack ${made.Name} deployed`); location.hash = `#/stacks/${made.Id}`;
    } catch (e2) { fail(e2); } finally { button.disabled = false; } };
  document.querySelectorAll('[data-logs]').forEach(b => b.onclick = async () => {
    const path = `/api/endpoints/${stack.EndpointId}/docker/containers/${b.dataset.logs}/logs?stdout=1&stderr=1&tail=200`;
    document.getElementById('logs').textContent = await request('GET', path).then(async r => demuxLogs(new Uint8Array(await r.arrayBuffer())),
      err => `logs unavailable (${err.status})`); });
  document.querySelectorAll('[data-act]').forEach(b => b.onclick = async () => { err.textContent = '';
    try { if (b.dataset.act === 'remove') { if (!confirm(`Remove stack ${stack.Name} and everything it created?`)) return;
        await api('DELETE', `/api/stacks/${stack.Id}?endpointId=${stack.EndpointId}`); location.hash = '#/stacks'; return; }
      await api('POST', `/api/stacks/${stack.Id}/${b.dataset.act}?endpointId=${stack.EndpointId}`); pageStackEditor(stack.Id);
    } catch (e2) { fail(e2); } });
}
""",  # noqa: E501
    'pages/swarm.js': r"""// Pages: read views of a Swarm's services (with their webhooks), nodes, configs and secrets.
import {api} from '../api.js';
import {dockerBase} from '../docker.js';
import {$} from '../dom.js';
import {toast} from '../feedback.js';
import {esc, fmtDate} from '../format.js';
import {every} from '../lifecycle.js';
import {envCrumbs, render} from '../shell.js';
import {dataTable} from '../table.js';

const SWARM_VIEWS = {
  services: {title: 'Services', columns: [{key: 'name', label: 'Name', value: s => s.Spec.Name}, {key: 'image', label: 'Image', value: s => ((s.Spec.TaskTemplate.ContainerSpec || {}).Image || '').split('@')[0]},
    {key: 'mode', label: 'Mode', value: s => s.Spec.Mode.Replicated ? `replicated ${s.Spec.Mode.Replicated.Replicas}` : 'global'},
    {key: 'running', label: 'Running', value: s => s.ServiceStatus ? `${s.ServiceStatus.RunningTasks} / ${s.ServiceStatus.DesiredTasks}` : ''},
    {key: 'ports', label: 'Ports', value: s => ((s.Endpoint || {}).Ports || []).map(p => `${p.PublishedPort}:${p.TargetPort}`).join(' ')},
    {key: 'updated', label: 'Updated', value: s => s.UpdatedAt, html: s => fmtDate(s.UpdatedAt), cls: 'hide-sm'}], path: 'services?status=true'},
  nodes: {title: 'Nodes', columns: [{key: 'host', label: 'Host name', value: n => n.Description.Hostname}, {key: 'role', label: 'Role', value: n => n.Spec.Role + (n.ManagerStatus && n.ManagerStatus.Leader ? ' (leader)' : '')},
    {key: 'availability', label: 'Availability', value: n => n.Spec.Availability}, {key: 'status', label: 'Status', value: n => n.Status.State, html: n => `<span class="${n.Status.State === 'ready' ? 'up' : 'down'}">${esc(n.Status.State)}</span>`},
    {key: 'engine', label: 'Engine', value: n => n.Description.Engine.EngineVersion, cls: 'hide-sm'}, {key: 'addr', label: 'Address', value: n => n.Status.Addr, cls: 'hide-sm'}], path: 'nodes'},
  configs: {title: 'Configs', columns: [{key: 'name', label: 'Name', value: c => c.Spec.Name}, {key: 'created', label: 'Created', value: c => c.CreatedAt, html: c => fmtDate(c.CreatedAt)},
    {key: 'updated', label: 'Updated', value: c => c.UpdatedAt, html: c => fmtDate(c.UpdatedAt), cls: 'hide-sm'}], path: 'configs'},
  secrets: {title: 'Secrets', columns: [{key: 'name', label: 'Name', value: c => c.Spec.Name}, {key: 'created', label: 'Created', value: c => c.CreatedAt, html: c => fmtDate(c.CreatedAt)},
    {key: 'updated', label: 'Updated', value: c => c.UpdatedAt, html: c => fmtDate(c.UpdatedAt), cls: 'hide-sm'}], path: 'secrets'},
};
// A service's webhook: POST <origin>/api/webhooks/<Token> redeploys it (pulling its image again).
const webhookUrl = hook => `${location.origin}/api/webhooks/${hook.Token}`;
const webhookQuery = filters => `/api/webhooks?filters=${encodeURIComponent(JSON.stringify(filters))}`;
function webhookCell(service, hook) {
  const name = service.Spec.Name;
  return `<label class="check"><input type="checkbox" data-webhook="${esc(service.ID)}" ${hook ? 'checked' : ''} aria-label="Webhook of ${esc(name)}"> webhook</label>
    ${hook ? `<code class="small webhook-url" id="webhook-${esc(service.ID)}">${esc(webhookUrl(hook))}</code>
      <button type="button" class="small" data-copy-webhook="${esc(service.ID)}" aria-label="Copy the webhook URL of ${esc(name)}">Copy</button>` : ''}`;
}
export async function pageSwarm(envId, kind) {
  const view = SWARM_VIEWS[kind];
  render(view.title, `<div class="toolbar"><h2>${view.title}</h2></div><div class="card" id="swarm-list"></div><div class="error" role="alert" id="swarm-error"></div>`, envCrumbs(envId, view.title));
  const services = kind === 'services';
  let hooks = []; // the webhooks of this environment the caller may see: {Id, Token, ResourceId, EndpointId}
  const hookOf = service => hooks.find(h => h.ResourceId === service.ID);
  const columns = services ? [...view.columns, {key: 'webhook', label: 'Webhook', value: s => (hookOf(s) ? 'on' : 'off'), html: s => webhookCell(s, hookOf(s))}] : view.columns;
  const table = dataTable($('#swarm-list'), {id: x => x.ID, columns, filterPlaceholder: `Filter ${kind}`, empty: `No ${kind}.`});
  const load = async () => {
    const [rows, found] = await Promise.all([api('GET', `${dockerBase(envId)}/${view.path}`), services ? api('GET', webhookQuery({EndpointID: +envId})).catch(() => hooks) : []]);
    hooks = found; table.setRows(rows);
  };
  if (services) $('#swarm-list').addEventListener('click', async e => {
    const copy = e.target.closest('[data-copy-webhook]'); if (!copy) return;
    const text = $(`#webhook-${CSS.escape(copy.dataset.copyWebhook)}`).textContent;
    try { await navigator.clipboard.writeText(text); copy.textContent = 'Copied'; }
    catch (err) { const range = document.createRange(); range.selectNodeContents($(`#webhook-${CSS.escape(copy.dataset.copyWebhook)}`));
      getSelection().removeAllRanges(); getSelection().addRange(range); copy.textContent = 'Selected: press Ctrl+C'; }
  });
  if (services) $('#swarm-list').addEventListener('change', async e => {
    const box = e.target.closest('[data-webhook]'); if (!box) return;
    const serviceId = box.dataset.webhook; $('#swarm-error').textContent = ''; box.disabled = true;
    try {
      if (box.checked) {
        await api('POST', '/api/webhooks', {ResourceID: serviceId, EndpointID: +envId, WebhookType: 1}).catch(async err => {
          if (err.status !== 409) throw err; // made meanwhile (another tab, another user): show that one
          if (!(await api('GET', webhookQuery({ResourceID: serviceId, EndpointID: +envId}))).length) throw err; });
        toast('Webhook created');
      } else {
        const [hook] = await api('GET', webhookQuery({ResourceID: serviceId, EndpointID: +envId}));
        if (hook) await api('DELETE', `/api/webhooks/${hook.Id}`);
        toast('Webhook removed');
      }
    } catch (err) { $('#swarm-error').textContent = err.message; }
    await load();
  });
  await load(); every(10000, load);
}
""",  # noqa: E501
    'pages/teams.js': r"""// Pages: teams and one team's members.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {isAdmin, session} from '../session.js';
import {$app, bindShell, shell} from '../shell.js';
import {roleOptions} from '../widgets.js';

export async function pageTeams() {
  const [teams, users] = await Promise.all([api('GET', '/api/teams'), api('GET', '/api/users')]);
  const members = await Promise.all(teams.map(t => api('GET', `/api/teams/${t.Id}/memberships`).catch(() => [])));
  const userName = id => (users.find(u => u.Id === id) || {}).Username || `user ${id}`;
  const admin = isAdmin();
  $app.innerHTML = shell(`<div class="card"><h2>Teams</h2><table><tr><th>Team</th><th>Members</th><th></th></tr>
    ${teams.map((t, i) => `<tr><td><a href="#/teams/${t.Id}">${esc(t.Name)}</a></td>
      <td>${members[i].map(m => esc(userName(m.UserID)) + (m.Role === constants.TeamRoles.Leader ? ' <span class="badge">leader</span>' : '')).join(', ')}</td>
      <td>${admin ? `<button class="danger" data-del="${t.Id}">Remove</button>` : ''}</td></tr>`).join('') || '<tr><td colspan="3" class="muted">No team yet.</td></tr>'}</table>
    ${admin ? `<form id="f"><h3>Add team</h3><label for="n">Name</label><input id="n" required>
      <label for="l">Team leader (optional)</label><select id="l"><option value="">none</option>
      ${users.map(u => `<option value="${u.Id}">${esc(u.Username)}</option>`).join('')}</select>
      <div class="error" role="alert"></div><button class="primary">Create team</button></form>` : ''}</div>`);
  bindShell();
  const f = document.getElementById('f');
  if (f) f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/teams', {Name: f.n.value, TeamLeaders: f.l.value ? [+f.l.value] : []}); pageTeams(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => {
    if (confirm('Remove this team? Its members lose the access given to the team.')) { await api('DELETE', `/api/teams/${b.dataset.del}`); pageTeams(); } });
}
export async function pageTeam(id) {
  const [team, memberships, users] = await Promise.all([api('GET', `/api/teams/${id}`), api('GET', `/api/teams/${id}/memberships`), api('GET', '/api/users')]);
  const admin = isAdmin();
  const leads = memberships.some(m => m.UserID === session.me.Id && m.Role === constants.TeamRoles.Leader);
  const userName = uid => (users.find(u => u.Id === uid) || {}).Username || `user ${uid}`;
  const outside = users.filter(u => !memberships.some(m => m.UserID === u.Id));
  $app.innerHTML = shell(`<div class="card"><h2>Team ${esc(team.Name)}</h2><table><tr><th>User</th><th>Role in the team</th><th></th></tr>
    ${memberships.map(m => `<tr><td>${esc(userName(m.UserID))}</td><td>${admin ? `<select data-role="${m.Id}" aria-label="role of ${esc(userName(m.UserID))}">
      ${roleOptions(m.Role, constants.TeamRoleNames)}</select>` : esc(constants.TeamRoleNames[m.Role])}</td>
      <td>${admin || (leads && m.Role === constants.TeamRoles.Member) ? `<button class="danger" data-del="${m.Id}">Remove from team</button>` : ''}</td></tr>`).join('')}</table>
    ${admin || leads ? `<form id="f"><h3>Add a member</h3><label for="u">User</label><select id="u" required>
      ${outside.map(u => `<option value="${u.Id}">${esc(u.Username)}</option>`).join('')}</select>
      ${admin ? `<label for="r">Role</label><select id="r">${roleOptions(constants.TeamRoles.Member, constants.TeamRoleNames)}</select>` : ''}
      <div class="error" role="alert"></div><button class="primary">Add</button></form>` : ''}
    <p><a href="#/teams">All teams</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  if (f) f.onsubmit = async e => { e.preventDefault(); const r = document.getElementById('r');
    try { await api('POST', '/api/team_memberships', {UserID: +f.u.value, TeamID: +id, Role: r ? +r.value : constants.TeamRoles.Member}); pageTeam(id); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/team_memberships/${b.dataset.del}`); pageTeam(id); });
  document.querySelectorAll('[data-role]').forEach(s => s.onchange = async () => { await api('PUT', `/api/team_memberships/${s.dataset.role}`, {Role: +s.value}); pageTeam(id); });
}
""",  # noqa: E501
    'pages/templates.js': r"""// Page: app templates and custom templates, deployed to an environment.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {formError} from '../feedback.js';
import {esc} from '../format.js';
import {render} from '../shell.js';
import {bindGitTemplates, gitTemplateForm} from './stack-git.js';

export async function pageTemplates() {
  const [doc, custom, eps] = await Promise.all([api('GET', '/api/templates'), api('GET', '/api/custom_templates'), api('GET', '/api/endpoints')]);
  const kinds = constants.TemplateTypeNames;
  const card = (t, key) => `<div class="card"><b>${esc(t.title || t.Title)}</b> <span class="badge">${kinds[t.type || t.Type] || ''}</span>
    <div class="muted">${esc(t.description || t.Description)}</div>
    <form class="deploy" data-key="${key}"><label>Name</label><input name="name" required value="${esc(t.name || '')}">
    ${(t.env || []).map(e => `<label>${esc(e.label || e.name)}</label><input name="env-${esc(e.name)}" value="${esc(e.default || '')}">`).join('')}
    <label>Environment</label><select name="ep">${eps.map(e => `<option value="${e.Id}">${esc(e.Name)}</option>`).join('')}</select>
    <div class="error" role="alert"></div><button class="primary">Deploy</button>
    ${key.startsWith('c') ? `<button type="button" class="danger" data-del="${key.slice(1)}">Remove</button>` : ''}
    ${key.startsWith('c') && t.GitConfig ? `<button type="button" data-git-fetch="${t.Id}">Fetch again from git</button>` : ''}
    ${key.startsWith('t') && t.type !== constants.TemplateTypes.Container ? `<button type="button" data-file="${t.id}" aria-controls="template-file-${t.id}">View file</button>` : ''}</form>
    ${key.startsWith('t') ? `<pre class="copyable mono small hidden" id="template-file-${t.id}" aria-label="Compose file of ${esc(t.title)}"></pre>` : ''}</div>`;
  render('App templates', `<h2>App templates</h2><div class="grid">${doc.templates.map(t => card(t, 't' + t.id)).join('')}</div>
    <h2>Custom templates</h2><div class="grid">${custom.map(t => card(t, 'c' + t.Id)).join('') || '<p class="muted">None yet.</p>'}</div>
    <div class="card"><h3>New custom template</h3><form id="nt"><label for="tt">Title</label><input id="tt" required>
    <label for="td">Description</label><input id="td" required><label for="tc">Compose file</label><textarea id="tc" rows="10" spellcheck="false"></textarea>
    <div class="error" role="alert"></div><button class="primary">Save template</button></form></div>${gitTemplateForm()}`);
  bindGitTemplates(pageTemplates);
  document.querySelectorAll('form.deploy').forEach(f => f.onsubmit = async e => { e.preventDefault();
    const env = [...f.querySelectorAll('input[name^="env-"]')].map(i => ({name: i.name.slice(4), value: i.value}));
    const key = f.dataset.key, path = key.startsWith('t') ? `/api/templates/${key.slice(1)}` : `/api/custom_templates/${key.slice(1)}`;
    try { const r = await api('POST', `${path}/deploy?endpointId=${f.ep.value}`, {Name: f.name.value, Env: env});
      location.hash = r.EndpointId ? `#/stacks/${r.Id}` : `#/env/${f.ep.value}/containers`; } catch (err) { formError(f, err); } });
  // A stack template's compose file, read from the server (POST /api/templates/{id}/file), shown under its card.
  document.querySelectorAll('[data-file]').forEach(b => b.onclick = async () => {
    const box = document.getElementById(`template-file-${b.dataset.file}`);
    if (!box.classList.contains('hidden')) { box.classList.add('hidden'); b.textContent = 'View file'; return; }
    try { box.textContent = (await api('POST', `/api/templates/${b.dataset.file}/file`)).FileContent; box.classList.remove('hidden'); b.textContent = 'Hide file'; }
    catch (err) { formError(b.closest('form'), err); } });
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/custom_templates/${b.dataset.del}`); pageTemplates(); });
  const nt = document.getElementById('nt');
  nt.onsubmit = async e => { e.preventDefault(); try { await api('POST', '/api/custom_templates/create/string',
    {Title: nt.tt.value, Description: nt.td.value, Type: constants.TemplateTypes.ComposeStack, FileContent: nt.tc.value}); pageTemplates(); } catch (err) { formError(nt, err); } };
}
""",  # noqa: E501
    'pages/users.js': r"""// Pages: users, settings (with the activity log retention and analytics), my account and API keys.
import {api} from '../api.js';
import {constants} from '../constants.js';
import {$} from '../dom.js';
import {formError, onSubmit, toast} from '../feedback.js';
import {esc, fmtAgo, fmtDate} from '../format.js';
import {motdSettingsCard} from './motd.js';
import {session} from '../session.js';
import {render} from '../shell.js';
import {dataTable} from '../table.js';

export async function pageUsers() {
  session.currentEnv = null;
  render('Users', `<div class="toolbar"><h2>Users</h2></div><form class="card" id="user-create"><h3>Add a user</h3>
    <div class="row"><div><label for="u-name">Username</label><input id="u-name" name="Username" required autocomplete="off"></div>
    <div><label for="u-password">Password (12 characters or more)</label><input id="u-password" name="Password" type="password" required autocomplete="new-password" data-error-hint="password"></div>
    <div><label for="u-role">Role</label><select id="u-role" name="Role">${[constants.UserRoles.Standard, constants.UserRoles.Administrator].map(role => `<option value="${role}">${esc(constants.UserRoleNames[role])}</option>`).join('')}</select></div></div>
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Create user</button></p></form><div class="card" id="users"></div>`);
  const table = dataTable($('#users'), {id: u => u.Id, selectable: true, filterPlaceholder: 'Filter users', actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: u => u.Username}, {key: 'role', label: 'Role', value: u => constants.UserRoleNames[u.Role]},
      {key: 'created', label: 'Created', value: u => u.CreationDate, html: u => fmtDate(u.CreationDate), cls: 'hide-sm'}],
    onSelectionChange: sel => { $('#users [data-action]').disabled = sel.size === 0; }});
  const load = async () => table.setRows(await api('GET', '/api/users'));
  $('#users').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    if (!confirm('Remove the selected users and their API keys?')) return;
    for (const id of table.selected()) { try { await api('DELETE', `/api/users/${id}`); } catch (err) { toast(err.message, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#user-create'), async data => {
    const u = await api('POST', '/api/users', {Username: data.get('Username'), Password: data.get('Password'), Role: +data.get('Role')});
    toast(`User ${u.Username} created`); $('#user-create').reset(); await load();
  });
  await load();
}
export async function pageSettings() {
  session.currentEnv = null;
  const [s, pub] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/settings/public')]);
  render('Settings', `<form class="card" id="settings"><h2>Settings</h2>
    <label for="s-timeout">Session lifetime (e.g. 8h, 30m)</label><input id="s-timeout" name="UserSessionTimeout" value="${esc(s.UserSessionTimeout)}">
    <label for="s-snapshot">Snapshot interval</label><input id="s-snapshot" name="SnapshotInterval" value="${esc(s.SnapshotInterval || '')}">
    <label for="s-logo">Logo URL</label><input id="s-logo" name="LogoURL" value="${esc(s.LogoURL || '')}">
    ${pub.AnalyticsAvailable ? `<p><label class="check"><input type="checkbox" name="EnableTelemetry" ${s.EnableTelemetry ? 'checked' : ''}> Send anonymous usage statistics</label></p>` : ''}
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Save settings</button></p></form>`);
  onSubmit($('#settings'), async data => {
    const body = {UserSessionTimeout: data.get('UserSessionTimeout'), SnapshotInterval: data.get('SnapshotInterval'), LogoURL: data.get('LogoURL')};
    if (pub.AnalyticsAvailable) body.EnableTelemetry = !!data.get('EnableTelemetry');
    await api('PUT', '/api/settings', body); toast('Settings saved');
  });
  motdSettingsCard($('#main'), s);
  await settingsAuditPanel();
}
export async function pageAccount() {
  session.currentEnv = null;
  render('My account', `<div class="grid2"><form class="card" id="password"><h3>Change password</h3>
    <label for="a-current">Current password</label><input id="a-current" type="password" name="Password" required autocomplete="current-password" data-error-hint="current password">
    <label for="a-new">New password (12 characters or more)</label><input id="a-new" type="password" name="NewPassword" required autocomplete="new-password" data-error-hint="at least|characters">
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Change password</button></p></form>
    <form class="card" id="key-create"><h3>Add an API key</h3><label for="k-desc">Description</label><input id="k-desc" name="description" required>
    <label for="k-password">Your password</label><input id="k-password" type="password" name="password" required autocomplete="current-password" data-error-hint="password">
    <div class="error" role="alert"></div><p><button class="primary" type="submit">Add API key</button></p><div id="k-raw"></div></form></div>
    <div class="card"><h3>API keys of ${esc(session.me.Username)}</h3><div id="keys"></div></div>`);
  const table = dataTable($('#keys'), {id: k => k.id, selectable: true, filterPlaceholder: 'Filter keys', empty: 'No API keys.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'desc', label: 'Description', value: k => k.description}, {key: 'prefix', label: 'Starts with', value: k => k.prefix, html: k => `<span class="mono">${esc(k.prefix)}…</span>`},
      {key: 'created', label: 'Created', value: k => k.dateCreated, html: k => fmtDate(k.dateCreated)}, {key: 'used', label: 'Last used', value: k => k.lastUsed, html: k => k.lastUsed ? fmtAgo(k.lastUsed) : 'never'}],
    onSelectionChange: sel => { $('#keys [data-action]').disabled = sel.size === 0; }});
  const load = async () => table.setRows(await api('GET', `/api/users/${session.me.Id}/tokens`));
  $('#keys').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    for (const id of table.selected()) { try { await api('DELETE', `/api/users/${session.me.Id}/tokens/${id}`); } catch (err) { toast(err.message, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#key-create'), async data => {
    const r = await api('POST', `/api/users/${session.me.Id}/tokens`, {description: data.get('description'), password: data.get('password')});
    $('#k-raw').innerHTML = `<p>Copy this key now, it is shown only once:</p><pre class="mono" id="raw-key">${esc(r.rawAPIKey)}</pre>`;
    $('#key-create').reset(); await load();
  });
  onSubmit($('#password'), async data => {
    await api('PUT', `/api/users/${session.me.Id}/passwd`, {Password: data.get('Password'), NewPassword: data.get('NewPassword')});
    toast('Password changed: log in again'); location.hash = '#/login';
  });
  await load();
}
async function settingsAuditPanel() {
  const main = document.querySelector('main'); if (!main) return;
  const [s, preview] = await Promise.all([api('GET', '/api/settings'), api('GET', '/api/telemetry/preview')]);
  const card = document.createElement('div'); card.className = 'card';
  card.innerHTML = `<h2>Activity log and analytics</h2><form id="af"><label for="ret">Keep activity log entries for (days, 0 = forever)</label>
    <input id="ret" type="number" min="0" max="36500" value="${esc(s.ActivityLogRetentionDays)}">
    <div class="error" role="alert"></div><button class="primary">Save</button></form>
    <h3>Anonymous analytics</h3>${preview.Available ? `<p class="muted">${preview.Enabled ? 'On' : 'Off'}${preview.URL ? '' : ' (no --analytics-url is set, so nothing is sent)'}.
    At most once a day, exactly this is sent${preview.LastSent ? ', last on ' + new Date(preview.LastSent * 1000).toLocaleString() : ''}:</p>
    <pre id="preview">${esc(JSON.stringify(preview.Payload, null, 2))}</pre>` : '<p class="muted">Disabled by --no-analytics.</p>'}`;
  main.appendChild(card);
  const af = card.querySelector('#af');
  af.onsubmit = async e => { e.preventDefault();
    try { await api('PUT', '/api/settings', {ActivityLogRetentionDays: +af.ret.value}); formError(af, {message: 'Saved.'}); } catch (err) { formError(af, err); } };
}
""",  # noqa: E501
    'pages/volumes.js': r"""// Pages: the volumes of an environment, and the volume browser of agent environments.
import {api, request} from '../api.js';
import {dockerBase, watchEngine} from '../docker.js';
import {$} from '../dom.js';
import {onSubmit, toast} from '../feedback.js';
import {esc, fmtDate} from '../format.js';
import {$app, bindShell, envCrumbs, render, shell} from '../shell.js';
import {dataTable} from '../table.js';
import {pairsEditor} from '../widgets.js';

export async function pageVolumes(envId) {
  const base = dockerBase(envId);
  render('Volumes', `<div class="toolbar"><h2>Volumes</h2></div>
    <form class="card" id="volume-create"><h3>Create a volume</h3><div class="row"><div><label for="v-name">Name</label><input id="v-name" name="Name" placeholder="generated when empty"></div>
    <div><label for="v-driver">Driver</label><input id="v-driver" name="Driver" value="local"></div></div>
    <fieldset><legend>Driver options</legend><div id="v-opts"></div></fieldset><fieldset><legend>Labels</legend><div id="v-labels"></div></fieldset>
    <div class="error" role="alert"></div><button class="primary" type="submit">Create the volume</button></form><div id="volume-warnings"></div><div class="card" id="volumes"></div>`, envCrumbs(envId, 'Volumes'));
  const node = v => (v.Portainer && v.Portainer.Agent && v.Portainer.Agent.NodeName) || '';
  const getOpts = pairsEditor($('#v-opts'), [{placeholder: 'option'}, {placeholder: 'value'}], [], 'Add option');
  const getLabels = pairsEditor($('#v-labels'), [{placeholder: 'label'}, {placeholder: 'value'}], [], 'Add label');
  const table = dataTable($('#volumes'), {
    id: v => v.Name, selectable: true, filterPlaceholder: 'Filter volumes', empty: 'No volumes.',
    actions: '<button class="danger" data-action="remove" disabled>Remove</button>',
    columns: [{key: 'name', label: 'Name', value: v => v.Name, html: v => `<span class="mono">${esc(v.Name)}</span>
        <a class="small" href="#/env/${envId}/volumes/${encodeURIComponent(v.Name)}/browse?node=${encodeURIComponent(node(v))}" title="Browse files (agent environments)">browse</a>`},
      {key: 'driver', label: 'Driver', value: v => v.Driver}, {key: 'node', label: 'Node', value: node, cls: 'hide-sm'},
      {key: 'mount', label: 'Mount point', value: v => v.Mountpoint, cls: 'hide-sm mono small'},
      {key: 'created', label: 'Created', value: v => v.CreatedAt, html: v => fmtDate(v.CreatedAt), cls: 'hide-sm'}],
    onSelectionChange: sel => { $('#volumes [data-action]').disabled = sel.size === 0; },
  });
  const load = async () => { const answer = await api('GET', `${base}/volumes`); table.setRows(answer.Volumes || []);
    $('#volume-warnings').innerHTML = (answer.Warnings || []).map(w => `<p class="error">${esc(w)}</p>`).join(''); };
  $('#volumes').addEventListener('click', async e => { if (!e.target.dataset || e.target.dataset.action !== 'remove' || e.target.disabled) return;
    const names = table.selected(); if (!confirm(`Remove ${names.length} volume(s) and their data?`)) return;
    for (const n of names) { try { await api('DELETE', `${base}/volumes/${encodeURIComponent(n)}`); } catch (err) { toast(`Remove ${n}: ${err.message}`, true); } }
    table.clearSelection(); await load(); });
  onSubmit($('#volume-create'), async data => {
    const v = await api('POST', `${base}/volumes/create`, {Name: data.get('Name').trim(), Driver: data.get('Driver') || 'local', DriverOpts: Object.fromEntries(getOpts()), Labels: Object.fromEntries(getLabels())});
    toast(`Volume ${v.Name} created`); $('#volume-create').reset(); getOpts.clear(); getLabels.clear(); await load();
  });
  await load(); watchEngine(envId, ['volume'], load);
}
// The agent's file API on one node of the environment (the agent routes on X-PortainerAgent-Target).
function agentFetch(method, path, node, body) {
  return request(method, path, {body, headers: node ? {'X-PortainerAgent-Target': node} : {}});
}
export async function pageBrowse(id, volume, node, path) {
  const base = `/api/endpoints/${id}/docker/v2/browse`;
  const q = p => `volumeID=${encodeURIComponent(volume)}&path=${encodeURIComponent(p)}`;
  const join = name => (path.endsWith('/') ? path : path + '/') + name;
  const entries = await (await agentFetch('GET', `${base}/ls?${q(path)}`, node)).json();
  const parent = path.replace(/\/[^/]*\/?$/, '') || '/';
  $app.innerHTML = shell(`<div class="card"><h2>Volume ${esc(volume)}: ${esc(path)}</h2>
    <div class="toolbar">${path !== '/' ? `<button id="up">Up</button>` : ''}<input type="file" id="file" aria-label="File to upload">
    <button class="primary" id="upload">Upload here</button><div class="error" role="alert" id="err"></div></div>
    <table><tr><th>Name</th><th>Size</th><th>Modified</th><th></th></tr>${entries.map((e, i) => `<tr>
    <td>${e.Dir ? `<a href="#" data-open="${i}">${esc(e.Name)}/</a>` : esc(e.Name)}</td><td>${e.Dir ? '' : e.Size}</td>
    <td>${new Date(e.ModTime * 1000).toLocaleString()}</td><td>${e.Dir ? '' : `<button data-get="${i}">Download</button>`}
    <button data-ren="${i}">Rename</button> <button class="danger" data-del="${i}">Delete</button></td></tr>`).join('')}</table></div>`);
  bindShell();
  const again = p => pageBrowse(id, volume, node, p);
  const err = document.getElementById('err');
  const act = fn => async ev => { ev.preventDefault(); try { await fn(entries[ev.target.dataset.open ?? ev.target.dataset.get ?? ev.target.dataset.ren ?? ev.target.dataset.del]); } catch (e) { err.textContent = e.message; } };
  const up = document.getElementById('up'); if (up) up.onclick = () => again(parent);
  document.querySelectorAll('[data-open]').forEach(a => a.onclick = act(async e => again(join(e.Name))));
  document.querySelectorAll('[data-get]').forEach(b => b.onclick = act(async e => {
    const blob = await (await agentFetch('GET', `${base}/get?${q(join(e.Name))}`, node)).blob();
    const a = document.createElement('a'); a.href = URL.createObjectURL(blob); a.download = e.Name; a.click(); URL.revokeObjectURL(a.href); }));
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = act(async e => {
    if (!confirm(`Delete ${e.Name}?`)) return; await agentFetch('DELETE', `${base}/delete?${q(join(e.Name))}`, node); again(path); }));
  document.querySelectorAll('[data-ren]').forEach(b => b.onclick = act(async e => {
    const name = prompt('New name', e.Name); if (!name || name === e.Name) return;
    await agentFetch('PUT', `${base}/rename?${q(join(e.Name))}&newPath=${encodeURIComponent(join(name))}`, node); again(path); }));
  document.getElementById('upload').onclick = act(async () => {
    const file = document.getElementById('file').files[0]; if (!file) return;
    const form = new FormData(); form.append('file', file, file.name);
    await agentFetch('POST', `${base}/put?${q(path)}`, node, form); again(path); });
}
""",  # noqa: E501
    'router.js': r"""// The router: which page a hash route (#/env/1/containers) shows, and the login or setup page before any.
import {api, ApiFailure, request} from './api.js';
import {loadConstants} from './constants.js';
import {esc} from './format.js';
import {leavePage} from './lifecycle.js';
import {pageEndpointAccess, pageEndpointSecurity, pageGroupAccess, pageResourceControls} from './pages/access.js';
import {pageActivity} from './pages/activity.js';
import {pageLogin, pageSetup} from './pages/auth.js';
import {pageBackup, pageRestoreFresh} from './pages/backup.js';
import {pageContainer} from './pages/container.js';
import {pageContainerCreate, pageContainers} from './pages/containers.js';
import {pageDashboard} from './pages/dashboard.js';
import {pageEdgeGroups, pageEdgeJob, pageEdgeJobs, pageEdgeStack, pageEdgeStacks} from './pages/edge.js';
import {pageEnvironmentForm, pageHome, pageTags} from './pages/environments.js';
import {pageGroup, pageGroups} from './pages/groups.js';
import {pageImages} from './pages/images.js';
import {pageNetworks} from './pages/networks.js';
import {pageRegistries, pageRegistryBrowse} from './pages/registries.js';
import {pageStackFromGit} from './pages/stack-git.js';
import {pageStackEditor, pageStacks} from './pages/stacks.js';
import {pageSwarm} from './pages/swarm.js';
import {pageTeam, pageTeams} from './pages/teams.js';
import {pageTemplates} from './pages/templates.js';
import {pageAccount, pageSettings, pageUsers} from './pages/users.js';
import {pageBrowse, pageVolumes} from './pages/volumes.js';
import {session} from './session.js';
import {applyTheme, render} from './shell.js';

// ---- router: hash route -> page function ---------------------------------------------------------------------
// Each entry: [pattern after '#/', page function(...captured groups)]. `env/(\d+)/...` routes load the environment
// first (session.currentEnv) for the navigation. A new page adds its route here.
const UI_ROUTES = [
  ['home', pageHome],
  ['tags', pageTags],
  ['groups', pageGroups],
  ['groups/(\\d+)', pageGroup],
  ['groups/(\\d+)/access', pageGroupAccess],
  ['environments/new', () => pageEnvironmentForm(null)],
  ['environments/(\\d+)/edit', pageEnvironmentForm],
  ['env/(\\d+)/dashboard', pageDashboard],
  ['env/(\\d+)/containers', pageContainers],
  ['env/(\\d+)/containers/new', pageContainerCreate],
  ['env/(\\d+)/containers/([0-9a-zA-Z_.-]+)', pageContainer],
  ['env/(\\d+)/containers/([0-9a-zA-Z_.-]+)/(overview|logs|stats|console|inspect)', pageContainer],
  ['env/(\\d+)/images', pageImages],
  ['env/(\\d+)/volumes', pageVolumes],
  ['env/(\\d+)/volumes/([^/]+)/browse', (id, volume) => pageBrowse(id, decodeURIComponent(volume), new URLSearchParams(location.hash.split('?')[1] || '').get('node') || '', '/')],
  ['env/(\\d+)/access', pageEndpointAccess],
  ['env/(\\d+)/security', pageEndpointSecurity],
  ['env/(\\d+)/networks', pageNetworks],
  ['env/(\\d+)/(services|nodes|configs|secrets)', pageSwarm],
  ['users', pageUsers],
  ['teams', pageTeams],
  ['teams/(\\d+)', pageTeam],
  ['resource-controls', pageResourceControls],
  ['activity', () => pageActivity('logs')],
  ['activity/auth', () => pageActivity('authlogs')],
  ['backup', pageBackup],
  ['settings', pageSettings],
  ['registries', () => pageRegistries()],
  ['registries/(\\d+)', pageRegistryBrowse],
  ['account', pageAccount],
  ['stacks', pageStacks],
  ['stacks/new', () => pageStackEditor(null)],
  ['stacks/new/git', pageStackFromGit],
  ['stacks/(\\d+)', id => pageStackEditor(id)],
  ['stacks/adopt/(\\d+)/(.+)', (ep, name) => pageStackEditor(null, {ep, name: decodeURIComponent(name)})],
  ['templates', pageTemplates],
  ['edge/stacks', pageEdgeStacks],
  ['edge/stacks/(\\d+)', pageEdgeStack],
  ['edge/groups', pageEdgeGroups],
  ['edge/jobs', pageEdgeJobs],
  ['edge/jobs/(\\d+)', pageEdgeJob],
];
export async function route() {
  leavePage(); applyTheme();
  const hash = location.hash || '#/home', path = hash.slice(2).split('?')[0];
  try {
    if (path === 'login' || path === 'setup') session.me = null;
    if (!session.me) { // first load, or after logging in or out: later navigations cost no extra round trip
      session.publicSettings = session.publicSettings || await api('GET', '/api/settings/public');
      const adminExists = await request('GET', '/api/users/admin/check').then(() => true,
        err => { if (!(err instanceof ApiFailure)) throw err; return err.status !== 404; });
      if (!adminExists) return await (path === 'restore' ? pageRestoreFresh() : pageSetup());
      if (path === 'login' || path === 'setup') return await pageLogin();
      session.me = await api('GET', '/api/users/me');
      await loadConstants();
    }
    const match = UI_ROUTES.map(([pattern, page]) => [path.match(new RegExp(`^${pattern}$`)), page]).find(([m]) => m);
    if (!match) { location.replace('#/home'); return; }
    const [m, page] = match, args = m.slice(1);
    if (path.startsWith('env/')) { session.currentEnv = await api('GET', `/api/endpoints/${args[0]}`); }
    else session.currentEnv = null;
    await page(...args);
  } catch (err) {
    if (err.name === 'AbortError') return;
    if (err.status === 401) { session.me = null; if (path !== 'login') sessionStorage.setItem('after-login', hash); location.hash = '#/login'; return; }
    render('Error', `<div class="card"><h2>Something went wrong</h2><p class="error" role="alert">${esc(err.message)}</p>
      ${err.details ? `<p class="muted">${esc(err.details)}</p>` : ''}<p><a href="#/home">Back to the environments</a></p></div>`);
  }
}
""",  # noqa: E501
    'session.js': r"""// Who is logged in and where they are: the state every page reads. The router fills it.
import {constants} from './constants.js';

export const session = {
  me: null,               // GET /api/users/me, null until logged in
  publicSettings: null,   // GET /api/settings/public, read once
  currentEnv: null,       // the environment of an env/<id>/... page, for the navigation
};
// Before the constants are read (an error page), nobody is shown administrator links.
export const isAdmin = () => !!session.me && !!constants.UserRoles && session.me.Role === constants.UserRoles.Administrator;
export const envIsSwarm = env => !!(env && env.Snapshots && env.Snapshots[0] && env.Snapshots[0].Swarm);
""",  # noqa: E501
    'shell.js': r"""// The shell around every page: navigation, theme, top bar.
import {api, forgetCsrf} from './api.js';
import {$} from './dom.js';
import {esc} from './format.js';
import {envIsSwarm, isAdmin, session} from './session.js';

// The element every page draws into.
export const $app = document.getElementById('app');
// Feature pages add their links here: GLOBAL_NAV for server-wide pages, ENV_NAV for pages of one environment
// (`swarm: true` shows a link only on a Swarm manager; `admin: true` only to administrators).
const GLOBAL_NAV = [
  {href: '#/home', label: 'Home'},
  {href: '#/users', label: 'Users', admin: true},
  {href: '#/teams', label: 'Teams'},
  {href: '#/resource-controls', label: 'Sharing', admin: true},
  {href: '#/activity', label: 'Activity', admin: true},
  {href: '#/backup', label: 'Backup', admin: true},
  {href: '#/settings', label: 'Settings', admin: true},
  {href: '#/groups', label: 'Groups', admin: true},
  {href: '#/tags', label: 'Tags', admin: true},
  {href: '#/registries', label: 'Registries'},
  {href: '#/stacks', label: 'Stacks'},
  {href: '#/templates', label: 'App templates'},
  {href: '#/edge/stacks', label: 'Edge stacks', admin: true},
  {href: '#/edge/groups', label: 'Edge groups', admin: true},
  {href: '#/edge/jobs', label: 'Edge jobs', admin: true},
  {href: '#/account', label: 'My account'},
];
export const ENV_NAV = [
  {path: 'dashboard', label: 'Dashboard'},
  {path: 'containers', label: 'Containers'},
  {path: 'images', label: 'Images'},
  {path: 'volumes', label: 'Volumes'},
  {path: 'networks', label: 'Networks'},
  {path: 'services', label: 'Services', swarm: true},
  {path: 'nodes', label: 'Nodes', swarm: true},
  {path: 'configs', label: 'Configs', swarm: true},
  {path: 'secrets', label: 'Secrets', swarm: true},
  {path: 'access', label: 'Access', admin: true},
  {path: 'security', label: 'Security settings', admin: true},
];
export function applyTheme() {
  const saved = localStorage.getItem('theme');
  const dark = saved ? saved === 'dark' : window.matchMedia && matchMedia('(prefers-color-scheme: dark)').matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
}
function toggleTheme() { localStorage.setItem('theme', document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark'); applyTheme(); }
export function shell(content, crumbs = '') {
  const hash = location.hash.split('?')[0];
  const link = (href, label) => `<a href="${href}" class="${hash === href || hash.startsWith(href + '/') ? 'active' : ''}">${esc(label)}</a>`;
  const envLinks = session.currentEnv ? `<div class="group">Environment</div><div class="envname" title="${esc(session.currentEnv.Name)}">${esc(session.currentEnv.Name)}</div>` +
    ENV_NAV.filter(n => (!n.swarm || envIsSwarm(session.currentEnv)) && (!n.admin || isAdmin()))
      .map(n => link(`#/env/${session.currentEnv.Id}/${n.path}`, n.label)).join('') : '';
  return `<div class="layout"><nav class="side" id="side" aria-label="Main"><div class="brand">portainer.py<button class="menu" id="menu-close" aria-label="Close menu">&times;</button></div>
    ${GLOBAL_NAV.filter(n => !n.admin || isAdmin()).map(n => link(n.href, n.label)).join('')}${envLinks}</nav>
    <div><div class="top"><button class="menu" id="menu" aria-controls="side" aria-label="Menu">&#9776;</button>
    <span class="crumbs">${crumbs}</span>
    <button id="theme" title="Switch between light and dark theme">Theme</button>
    <span class="muted who">${esc(session.me && session.me.Username)}</span><button id="logout">Log out</button></div>
    <main id="main">${content}</main></div></div>`;
}
export function bindShell() {
  $('#theme').addEventListener('click', toggleTheme);
  $('#menu').addEventListener('click', () => { $('#side').classList.add('open'); $('#side a').focus(); });
  $('#menu-close').addEventListener('click', () => { $('#side').classList.remove('open'); $('#menu').focus(); });
  $('#side').addEventListener('keydown', e => { if (e.key === 'Escape') $('#menu-close').click(); });
  $('#logout').addEventListener('click', async () => {
    await api('POST', '/api/auth/logout').catch(() => {});
    session.me = null; forgetCsrf(); location.hash = '#/login';
  });
}
// Render a page inside the shell; answers the <main> element.
export function render(title, content, crumbs) {
  document.title = `${title} · portainer.py`;
  $app.innerHTML = shell(content, crumbs ?? esc(title));
  bindShell();
  return $('#main');
}
export const envCrumbs = (envId, ...parts) => [`<a href="#/home">Home</a>`, `<a href="#/env/${envId}/dashboard">${esc(session.currentEnv ? session.currentEnv.Name : envId)}</a>`, ...parts].join(' / ');
""",  # noqa: E501
    'streams.js': r"""// Decoders of the engine's streamed answers. Pure functions (unit-tested in ui/tests/).
// Newline-delimited JSON (pull, build, load, stats progress) as objects.
export function jsonLines(onObject) {
  const decoder = new TextDecoder(); let rest = '';
  return chunk => { rest += decoder.decode(chunk, {stream: true}); const lines = rest.split('\n'); rest = lines.pop();
    for (const line of lines) if (line.trim()) { try { onObject(JSON.parse(line)); } catch (e) { onObject({stream: line + '\n'}); } } };
}

// Docker's log stream: without a TTY each frame is [stream, 0, 0, 0, size (4 bytes, big endian)] + payload.
export function dockerStreamDecoder(tty, onText) {
  const decoders = {1: new TextDecoder(), 2: new TextDecoder()};
  let pending = new Uint8Array(0);
  return chunk => {
    if (tty) { onText(1, decoders[1].decode(chunk, {stream: true})); return; }
    const joined = new Uint8Array(pending.length + chunk.length); joined.set(pending); joined.set(chunk, pending.length);
    let offset = 0;
    while (joined.length - offset >= 8) {
      const kind = joined[offset], size = new DataView(joined.buffer, offset + 4, 4).getUint32(0);
      if (joined.length - offset - 8 < size) break;
      onText(kind === 2 ? 2 : 1, decoders[kind === 2 ? 2 : 1].decode(joined.subarray(offset + 8, offset + 8 + size), {stream: true}));
      offset += 8 + size;
    }
    pending = joined.slice(offset);
  };
}
export function demuxLogs(bytes) {
  // Docker frames non-TTY logs: 8-byte header (stream, 0, 0, 0, big-endian length), then the payload.
  const parts = []; let i = 0;
  while (i + 8 <= bytes.length && bytes[i] <= 2 && bytes[i + 1] === 0 && bytes[i + 2] === 0 && bytes[i + 3] === 0) {
    const size = (bytes[i + 4] << 24 | bytes[i + 5] << 16 | bytes[i + 6] << 8 | bytes[i + 7]) >>> 0;
    parts.push(bytes.subarray(i + 8, i + 8 + size)); i += 8 + size; }
  if (i < bytes.length) parts.push(bytes.subarray(i));
  const dec = new TextDecoder(); return parts.map(p => dec.decode(p)).join('');
}
""",  # noqa: E501
    'table.js': r"""// Data table: client-side filter, sort, selection; fast for thousands of rows. The filter and sort are pure
// functions (searchIndex, visibleRows: unit-tested in ui/tests/); dataTable draws them and keeps the selection.
import {$, $$} from './dom.js';
import {esc} from './format.js';

// One collator for every sort: localeCompare with options builds a new one per comparison, seconds for big tables.
const collator = new Intl.Collator(undefined, {numeric: true});

// Each row's search text, computed once per data set, not on every key press: [[row, text], ...].
export function searchIndex(rows, columns) {
  return rows.map(row => [row, columns.map(c => c.value ? String(c.value(row) ?? '') : '').join(' ').toLowerCase()]);
}
// The rows whose text holds every word of the filter, sorted by the column sort.key (numbers as numbers, text
// in natural order: "app-2" before "app-10").
export function visibleRows(index, columns, filterText, sort) {
  const words = filterText.toLowerCase().split(/\s+/).filter(Boolean);
  const col = columns.find(c => c.key === sort.key); const dir = sort.asc ? 1 : -1;
  const out = index.filter(([, text]) => words.every(w => text.includes(w))).map(([row]) => row);
  if (col && col.value) out.sort((a, b) => { const x = col.value(a), y = col.value(b);
    return (typeof x === 'number' && typeof y === 'number' ? x - y : collator.compare(String(x ?? ''), String(y ?? ''))) * dir; });
  return out;
}

// columns: [{key, label, value: row => sortable value, html: row => cell HTML, cls}]; id: row => unique id.
export function dataTable(el, {columns, id, rows = [], selectable = false, filterPlaceholder = 'Filter', actions = '', empty = 'Nothing here yet.',
                       sortKey, limit = 500, onSelectionChange = () => {}}) {
  let data = rows, sort = {key: sortKey || columns[0].key, asc: true}, shown = limit, filterText = '';
  const selected = new Set();
  el.innerHTML = `<div class="toolbar"><input class="filter" type="search" placeholder="${esc(filterPlaceholder)}" aria-label="${esc(filterPlaceholder)}">
    ${actions}<span class="spacer"></span><span class="muted small count"></span></div>
    <div class="table-wrap"><table><thead><tr>${selectable ? '<th class="check"><input type="checkbox" class="select-all" aria-label="Select all"></th>' : ''}
    ${columns.map(c => `<th class="${c.value ? 'sortable' : ''} ${(c.cls || '').includes('hide-sm') ? 'hide-sm' : ''}" data-key="${c.key}" ${c.value ? 'tabindex="0"' : ''}>${esc(c.label)}</th>`).join('')}
    </tr></thead><tbody></tbody></table></div><div class="more"></div>`;
  const tbody = $('tbody', el), filter = $('.filter', el), count = $('.count', el), more = $('.more', el);
  let index = [];
  const reindex = () => { index = searchIndex(data, columns); };
  const shownRows = () => visibleRows(index, columns, filterText, sort);
  const draw = () => {
    const rowsNow = shownRows();
    const ids = new Set(data.map(id)); for (const s of [...selected]) if (!ids.has(s)) selected.delete(s);
    tbody.innerHTML = rowsNow.slice(0, shown).map(row => { const rid = String(id(row));
      return `<tr data-id="${esc(rid)}">${selectable ? `<td class="check"><input type="checkbox" class="select" value="${esc(rid)}" ${selected.has(rid) ? 'checked' : ''} aria-label="Select row"></td>` : ''}${columns.map(c => `<td class="${c.cls || ''}">${c.html ? c.html(row) : esc(c.value(row))}</td>`).join('')}</tr>`; }).join('')
      || `<tr><td colspan="${columns.length + (selectable ? 1 : 0)}" class="empty">${data.length ? 'No match for this filter.' : esc(empty)}</td></tr>`;
    count.textContent = `${rowsNow.length} of ${data.length}` + (selected.size ? ` · ${selected.size} selected` : '');
    more.innerHTML = rowsNow.length > shown ? `<button class="show-more">Show ${rowsNow.length - shown} more</button>` : '';
    $$('th[data-key]', el).forEach(th => { th.classList.toggle('sorted-asc', th.dataset.key === sort.key && sort.asc); th.classList.toggle('sorted-desc', th.dataset.key === sort.key && !sort.asc); });
    const all = $('.select-all', el); if (all) all.checked = rowsNow.length > 0 && rowsNow.every(r => selected.has(String(id(r))));
  };
  let timer = 0;
  filter.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => { filterText = filter.value; shown = limit; draw(); }, 60); });
  const sortBy = th => { if (!th.classList.contains('sortable')) return; sort = {key: th.dataset.key, asc: sort.key === th.dataset.key ? !sort.asc : true}; draw(); };
  $('thead', el).addEventListener('click', e => { const th = e.target.closest('th[data-key]'); if (th) sortBy(th); });
  $('thead', el).addEventListener('keydown', e => { const th = e.target.closest('th[data-key]'); if (th && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); sortBy(th); } });
  el.addEventListener('change', e => {
    if (e.target.classList.contains('select')) { e.target.checked ? selected.add(e.target.value) : selected.delete(e.target.value); }
    else if (e.target.classList.contains('select-all')) { for (const r of shownRows()) e.target.checked ? selected.add(String(id(r))) : selected.delete(String(id(r))); $$('.select', tbody).forEach(b => { b.checked = e.target.checked; }); }
    else return;
    count.textContent = `${shownRows().length} of ${data.length}` + (selected.size ? ` · ${selected.size} selected` : ''); onSelectionChange(selected);
  });
  more.addEventListener('click', () => { shown = Infinity; draw(); });
  reindex(); draw();
  return {
    setRows(newRows) { data = newRows; reindex(); draw(); onSelectionChange(selected); },
    selected: () => [...selected],
    clearSelection() { selected.clear(); draw(); onSelectionChange(selected); },
    rows: () => data,
  };
}

""",  # noqa: E501
    'terminal.js': r"""// Terminal: a compact VT100/xterm subset (enough for sh, top and vi in busybox).
import {esc} from './format.js';

const MAX_SCROLLBACK = 2000;
// The screen model: parses what the program writes (text, escape sequences) into lines of [character, CSS
// classes] and answers its queries (cursor position) through send. No DOM: unit-tested in ui/tests/.
export class Screen {
  constructor(send) {
    this.output = send; this.cols = 80; this.rows = 24; this.onResize = () => {};
    this.heldInput = ''; this.holdUntil = 0;
    this.reset();
  }
  send(data) {
    // busybox ash reads a cursor report and the keys typed right after it in one go, and drops the keys:
    // keys typed within a moment of a report wait for that moment to pass.
    const wait = this.holdUntil - performance.now();
    if (wait <= 0 && !this.heldInput) { this.output(data); return; }
    this.heldInput += data;
    if (this.heldInput === data) setTimeout(() => { const held = this.heldInput; this.heldInput = ''; this.output(held); }, Math.max(wait, 0));
  }
  report(data) { this.output(data); this.holdUntil = performance.now() + 80; }
  blankLine() { return Array.from({length: this.cols}, () => [' ', this.attrClass()]); }
  reset() {
    this.attr = {fg: -1, bg: -1, b: false, u: false, inv: false, dim: false};
    this.main = Array.from({length: this.rows}, () => this.blankLine()); this.alt = null; this.lines = this.main;
    this.x = 0; this.y = 0; this.top = 0; this.bottom = this.rows - 1; this.saved = {x: 0, y: 0};
    this.state = 0; this.params = ''; this.wrapPending = false; this.appCursor = false; this.cursorVisible = true;
    this.decoder = new TextDecoder(); this.dirty = true; this.scrollback = []; this.viewOffset = 0;
  }
  // Lines that scrolled off the top of the main screen can be read again with the wheel or Shift+PageUp.
  scrollView(lines) { this.viewOffset = Math.max(0, Math.min(this.scrollback.length, this.viewOffset + lines)); this.schedule(); }
  attrClass() {
    const a = this.attr || {fg: -1, bg: -1}; const fg = a.fg, bg = a.bg; const out = [];
    if (a.inv) { out.push(fg < 0 ? 'bgi' : `bg${fg}`, bg < 0 ? 'fgi' : `fg${bg}`); }
    else { if (fg >= 0) out.push(`fg${a.b && fg < 8 ? fg + 8 : fg}`); if (bg >= 0) out.push(`bg${bg}`); }
    if (a.b) out.push('b'); if (a.u) out.push('u'); if (a.dim) out.push('dim');
    return out.join(' ');
  }
  resize(cols, rows) {
    cols = Math.max(20, Math.min(400, cols)); rows = Math.max(5, Math.min(200, rows));
    if (cols === this.cols && rows === this.rows) return;
    const fit = lines => { const out = lines.slice(Math.max(0, lines.length - rows)).map(l => l.slice(0, cols).concat(Array.from({length: Math.max(0, cols - l.length)}, () => [' ', '']))); while (out.length < rows) out.push(Array.from({length: cols}, () => [' ', ''])); return out; };
    const shift = Math.max(0, this.main.length - rows);
    this.cols = cols; this.rows = rows; this.main = fit(this.main); if (this.alt) this.alt = fit(this.alt);
    this.lines = this.alt || this.main; this.y = Math.min(rows - 1, Math.max(0, this.y - shift)); this.x = Math.min(cols - 1, this.x);
    this.top = 0; this.bottom = rows - 1; this.dirty = true; this.schedule(); this.onResize(cols, rows);
  }
  write(data) {
    const text = typeof data === 'string' ? data : this.decoder.decode(data, {stream: true});
    for (const ch of text) this.feed(ch);
    this.schedule();
  }
  // Drawing is for the view (Terminal): a bare screen draws nothing.
  schedule() {}
  scrollUp(n = 1) {
    for (let i = 0; i < n; i++) {
      const [gone] = this.lines.splice(this.top, 1); this.lines.splice(this.bottom, 0, this.blankLine());
      if (!this.alt && this.top === 0) { this.scrollback.push(gone); if (this.scrollback.length > MAX_SCROLLBACK) this.scrollback.shift(); }
    }
  }
  scrollDown(n = 1) { for (let i = 0; i < n; i++) { this.lines.splice(this.bottom, 1); this.lines.splice(this.top, 0, this.blankLine()); } }
  lineFeed() { if (this.y === this.bottom) this.scrollUp(); else if (this.y < this.rows - 1) this.y++; }
  put(ch) {
    if (this.wrapPending) { this.x = 0; this.lineFeed(); this.wrapPending = false; }
    this.lines[this.y][this.x] = [ch, this.attrClass()];
    if (this.x === this.cols - 1) this.wrapPending = true; else this.x++;
  }
  feed(ch) {
    const code = ch.codePointAt(0);
    if (this.state === 0) {
      if (code >= 32 && code !== 127) return this.put(ch);
      this.wrapPending = code === 27 ? this.wrapPending : false;
      switch (ch) {
        case '\x1b': this.state = 1; return;
        case '\r': this.x = 0; return;
        case '\n': case '\v': case '\f': this.lineFeed(); return;
        case '\b': this.x = Math.max(0, this.x - 1); return;
        case '\t': this.x = Math.min(this.cols - 1, (Math.floor(this.x / 8) + 1) * 8); return;
        default: return;
      }
    }
    if (this.state === 1) { // after ESC
      this.state = 0;
      switch (ch) {
        case '[': this.state = 2; this.params = ''; return;
        case ']': this.state = 3; return;
        case '(': case ')': case '*': case '+': this.state = 4; return;
        case '7': this.saved = {x: this.x, y: this.y, attr: {...this.attr}}; return;
        case '8': this.x = this.saved.x; this.y = this.saved.y; if (this.saved.attr) this.attr = {...this.saved.attr}; return;
        case 'D': this.lineFeed(); return;
        case 'E': this.x = 0; this.lineFeed(); return;
        case 'M': if (this.y === this.top) this.scrollDown(); else this.y = Math.max(0, this.y - 1); return;
        case 'c': this.reset(); return;
        default: return;
      }
    }
    if (this.state === 3) { if (ch === '\x07') this.state = 0; else if (ch === '\x1b') this.state = 5; return; } // OSC title
    if (this.state === 5) { this.state = ch === '\\' ? 0 : 3; return; }
    if (this.state === 4) { this.state = 0; return; } // charset designation: ignored
    if (code >= 0x20 && code <= 0x3f) { this.params += ch; return; }
    this.state = 0; this.csi(ch, this.params);
  }
  csi(final, raw) {
    const priv = raw.startsWith('?'), p = raw.replace(/^[?>=]/, '').split(';').map(n => parseInt(n, 10));
    const n = (i, d = 1) => (isNaN(p[i]) || p[i] === 0 ? d : p[i]);
    const clamp = () => { this.x = Math.max(0, Math.min(this.cols - 1, this.x)); this.y = Math.max(0, Math.min(this.rows - 1, this.y)); };
    const blank = () => [' ', this.attrClass()];
    const line = this.lines[this.y];
    this.wrapPending = false;
    switch (final) {
      case 'A': this.y = Math.max(this.y < this.top ? 0 : this.top, this.y - n(0)); break;
      case 'B': this.y = Math.min(this.y > this.bottom ? this.rows - 1 : this.bottom, this.y + n(0)); break;
      case 'C': this.x += n(0); clamp(); break;
      case 'D': this.x -= n(0); clamp(); break;
      case 'E': this.x = 0; this.y += n(0); clamp(); break;
      case 'F': this.x = 0; this.y -= n(0); clamp(); break;
      case 'G': case '`': this.x = n(0) - 1; clamp(); break;
      case 'd': this.y = n(0) - 1; clamp(); break;
      case 'H': case 'f': this.y = n(0) - 1; this.x = n(1) - 1; clamp(); break;
      case 'J': { const mode = p[0] || 0;
        if (mode === 0) { for (let x = this.x; x < this.cols; x++) line[x] = blank(); for (let y = this.y + 1; y < this.rows; y++) this.lines[y] = this.blankLine(); }
        else if (mode === 1) { for (let x = 0; x <= this.x; x++) line[x] = blank(); for (let y = 0; y < this.y; y++) this.lines[y] = this.blankLine(); }
        else for (let y = 0; y < this.rows; y++) this.lines[y] = this.blankLine();
        break; }
      case 'K': { const mode = p[0] || 0, from = mode === 0 ? this.x : 0, to = mode === 1 ? this.x : this.cols - 1;
        for (let x = from; x <= to; x++) line[x] = blank(); break; }
      case 'L': if (this.y >= this.top && this.y <= this.bottom) for (let i = 0; i < n(0); i++) { this.lines.splice(this.bottom, 1); this.lines.splice(this.y, 0, this.blankLine()); } break;
      case 'M': if (this.y >= this.top && this.y <= this.bottom) for (let i = 0; i < n(0); i++) { this.lines.splice(this.y, 1); this.lines.splice(this.bottom, 0, this.blankLine()); } break;
      case 'P': line.splice(this.x, n(0)); while (line.length < this.cols) line.push(blank()); break;
      case '@': for (let i = 0; i < n(0); i++) line.splice(this.x, 0, blank()); line.length = this.cols; break;
      case 'X': for (let i = 0; i < n(0) && this.x + i < this.cols; i++) line[this.x + i] = blank(); break;
      case 'S': this.scrollUp(n(0)); break;
      case 'T': this.scrollDown(n(0)); break;
      case 'r': this.top = n(0) - 1; this.bottom = Math.min(this.rows - 1, n(1, this.rows) - 1); if (this.top >= this.bottom) { this.top = 0; this.bottom = this.rows - 1; } this.x = 0; this.y = 0; break;
      case 's': this.saved = {x: this.x, y: this.y}; break;
      case 'u': this.x = this.saved.x; this.y = this.saved.y; break;
      case 'm': this.sgr(raw === '' ? [0] : p.map(v => (isNaN(v) ? 0 : v))); break;
      case 'n': if (p[0] === 6) this.report(`\x1b[${this.y + 1};${this.x + 1}R`); else if (p[0] === 5) this.report('\x1b[0n'); break;
      case 'c': if (!raw.startsWith('>')) this.report('\x1b[?1;2c'); break;
      case 'h': case 'l': if (priv) this.mode(p, final === 'h'); break;
      default: break;
    }
    this.dirty = true;
  }
  mode(list, on) {
    for (const m of list) {
      if (m === 1) this.appCursor = on;
      else if (m === 25) this.cursorVisible = on;
      else if (m === 47 || m === 1047 || m === 1049) {
        if (on && !this.alt) { if (m === 1049) this.saved = {x: this.x, y: this.y, attr: {...this.attr}}; this.alt = Array.from({length: this.rows}, () => this.blankLine()); this.lines = this.alt; }
        else if (!on && this.alt) { this.alt = null; this.lines = this.main; if (m === 1049) { this.x = this.saved.x; this.y = this.saved.y; } }
        this.top = 0; this.bottom = this.rows - 1;
      }
    }
  }
  sgr(p) {
    for (let i = 0; i < p.length; i++) {
      const v = p[i], a = this.attr;
      if (v === 0) Object.assign(a, {fg: -1, bg: -1, b: false, u: false, inv: false, dim: false});
      else if (v === 1) a.b = true; else if (v === 2) a.dim = true; else if (v === 4) a.u = true; else if (v === 7) a.inv = true;
      else if (v === 22) { a.b = false; a.dim = false; } else if (v === 24) a.u = false; else if (v === 27) a.inv = false;
      else if (v >= 30 && v <= 37) a.fg = v - 30; else if (v === 39) a.fg = -1;
      else if (v >= 40 && v <= 47) a.bg = v - 40; else if (v === 49) a.bg = -1;
      else if (v >= 90 && v <= 97) a.fg = v - 82; else if (v >= 100 && v <= 107) a.bg = v - 92;
      else if (v === 38 || v === 48) { // 256 colours and true colour, mapped to the nearest of the 16
        let c = -1;
        if (p[i + 1] === 5) { const n = p[i + 2]; c = n < 16 ? n : n >= 232 ? (n > 243 ? 15 : 8) : 7; i += 2; }
        else if (p[i + 1] === 2) { const [r, g, b] = [p[i + 2], p[i + 3], p[i + 4]]; c = (r > 127 ? 1 : 0) | (g > 127 ? 2 : 0) | (b > 127 ? 4 : 0); i += 4; }
        if (v === 38) a.fg = c; else a.bg = c;
      }
    }
  }
  text() { return this.lines.map(l => l.map(c => c[0]).join('').replace(/\s+$/, '')).join('\n'); }
}

// The screen drawn in an element, with the keyboard, paste and wheel of the browser.
export class Terminal extends Screen {
  constructor(el, send) {
    super(send);
    this.el = el;
    el.tabIndex = 0; el.setAttribute('role', 'textbox'); el.setAttribute('aria-label', 'Terminal'); el.setAttribute('aria-multiline', 'true');
    el.addEventListener('keydown', e => this.key(e));
    el.addEventListener('paste', e => { e.preventDefault(); this.send(e.clipboardData.getData('text').replace(/\r?\n/g, '\r')); });
    el.addEventListener('wheel', e => { if (this.alt) return; e.preventDefault(); this.scrollView(e.deltaY < 0 ? 3 : -3); }, {passive: false});
  }
  schedule() { if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); }); }
  draw() {
    let shown = this.lines;
    if (this.viewOffset && !this.alt) { const all = this.scrollback.concat(this.lines); shown = all.slice(all.length - this.rows - this.viewOffset, all.length - this.viewOffset); }
    const rows = shown.map((line, y) => {
      let html = '', run = '', cls = null;
      line.forEach(([ch, c], x) => {
        if (this.cursorVisible && !this.viewOffset && y === this.y && x === this.x && document.activeElement === this.el) c = (c ? c + ' ' : '') + 'cursor';
        if (c !== cls) { if (run) html += cls ? `<span class="${cls}">${esc(run)}</span>` : esc(run); run = ''; cls = c; }
        run += ch;
      });
      if (run) html += cls ? `<span class="${cls}">${esc(run)}</span>` : esc(run.replace(/\s+$/, ''));
      return `<div class="line">${html}</div>`;
    });
    this.el.innerHTML = rows.join('');
  }
  key(e) {
    const cursor = k => (this.appCursor ? '\x1bO' : '\x1b[') + k;
    const keys = {Enter: '\r', Backspace: '\x7f', Tab: '\t', Escape: '\x1b', ArrowUp: cursor('A'), ArrowDown: cursor('B'), ArrowRight: cursor('C'),
      ArrowLeft: cursor('D'), Home: '\x1b[H', End: '\x1b[F', PageUp: '\x1b[5~', PageDown: '\x1b[6~', Delete: '\x1b[3~', Insert: '\x1b[2~',
      F1: '\x1bOP', F2: '\x1bOQ', F3: '\x1bOR', F4: '\x1bOS'};
    let out = null;
    if (e.ctrlKey && e.shiftKey && (e.key === 'C' || e.key === 'V')) return; // leave copy and paste to the browser
    if (e.key === 'Tab' && e.shiftKey) return; // Shift+Tab leaves the terminal, so the page stays keyboard-usable
    if (e.shiftKey && (e.key === 'PageUp' || e.key === 'PageDown')) { e.preventDefault(); this.scrollView((e.key === 'PageUp' ? 1 : -1) * (this.rows - 1)); return; }
    if (keys[e.key]) out = keys[e.key];
    else if (e.ctrlKey && !e.altKey && e.key.length === 1) { const c = e.key.toUpperCase().charCodeAt(0); if (c >= 64 && c <= 95) out = String.fromCharCode(c - 64); else if (e.key === ' ') out = '\x00'; }
    else if (e.key.length === 1 && !e.metaKey) out = (e.altKey ? '\x1b' : '') + e.key;
    if (out === null) return;
    e.preventDefault(); if (this.viewOffset) { this.viewOffset = 0; this.schedule(); } this.send(out);
  }
  // Columns and rows that fit the element, from the size of one character.
  fit() {
    const probe = document.createElement('span'); probe.textContent = 'M'.repeat(10); this.el.append(probe);
    const w = probe.getBoundingClientRect().width / 10, h = probe.getBoundingClientRect().height; probe.remove();
    if (!w || !h) return;
    const style = getComputedStyle(this.el), padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight), padY = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    this.resize(Math.floor((this.el.clientWidth - padX) / w), Math.floor((this.el.clientHeight - padY) / h));
  }
}
""",  # noqa: E501
    'widgets.js': r"""// Form and display components the pages share: rows of inputs, pull progress, JSON tree, charts, editor.
import {constants} from './constants.js';
import {$, $$} from './dom.js';
import {esc, fmtBytes} from './format.js';

// Rows of inputs the user adds and removes (ports, env, labels, volumes). fields: [{name, placeholder, options}].
export function pairsEditor(el, fields, values = [], addLabel = 'Add') {
  el.classList.add('pairs');
  const row = (vals = []) => { const div = document.createElement('div'); div.className = 'pair';
    div.innerHTML = fields.map((f, i) => f.options
      ? `<select data-part="${i}" aria-label="${esc(f.placeholder)}">${f.options.map(o => `<option ${o === vals[i] ? 'selected' : ''}>${esc(o)}</option>`).join('')}</select>`
      : `<input data-part="${i}" name="${esc(f.name || '')}" placeholder="${esc(f.placeholder)}" aria-label="${esc(f.placeholder)}" value="${esc(vals[i] ?? '')}"${f.hint ? ` data-error-hint="${esc(f.hint)}"` : ''}>`).join('') +
      `<button type="button" class="small remove-pair" aria-label="Remove this row">&times;</button>`;
    el.insertBefore(div, el.lastElementChild); };
  el.innerHTML = `<button type="button" class="small add-pair">+ ${esc(addLabel)}</button>`;
  el.addEventListener('click', e => { if (e.target.classList.contains('add-pair')) row(); else if (e.target.classList.contains('remove-pair')) e.target.closest('.pair').remove(); });
  values.forEach(row);
  const read = () => $$('.pair', el).map(p => fields.map((f, i) => $(`[data-part="${i}"]`, p).value.trim())).filter(v => v.some(Boolean));
  read.clear = () => $$('.pair', el).forEach(p => p.remove());
  return read;
}

// Per-layer progress of a pull, load or push stream; `stream` lines (build output) go to a log under the bars.
export function progressView(el) {
  el.innerHTML = '<div class="layers"></div><pre class="small mono build-log"></pre><div class="error" role="alert"></div>';
  const layers = $('.layers', el), log = $('.build-log', el), error = $('.error', el); const rows = new Map();
  return {
    feed(m) {
      if (m.error || m.errorDetail) { error.textContent = m.error || m.errorDetail.message; return; }
      if (m.stream) { log.textContent += m.stream; return; }
      if (m.aux && m.aux.ID) { log.textContent += `Built ${m.aux.ID}\n`; return; }
      if (!m.id || !m.status || /^Pulling from/.test(m.status)) { if (m.status) log.textContent += (m.id ? m.id + ': ' : '') + m.status + '\n'; return; }
      let r = rows.get(m.id);
      if (!r) { r = document.createElement('div'); r.className = 'layer'; r.dataset.layer = m.id;
        r.innerHTML = `<span class="mono">${esc(m.id.slice(0, 12))}</span><progress max="1" value="0"></progress><span class="detail muted"></span>`;
        layers.append(r); rows.set(m.id, r); }
      const bar = $('progress', r), detail = $('.detail', r), p = m.progressDetail || {};
      if (p.total) { bar.max = p.total; bar.value = p.current || 0; }
      if (/complete|already exists|Loaded|Pushed|Layer already/i.test(m.status)) { bar.max = 1; bar.value = 1; }
      detail.textContent = m.status + (p.total ? ` ${fmtBytes(p.current || 0)} / ${fmtBytes(p.total)}` : '');
    },
    failed: () => error.textContent,
    fail(message) { error.textContent = message; },
  };
}
export function jsonTree(value, key) {
  const label = key === undefined ? '' : `<span class="k">${esc(key)}</span>: `;
  if (value && typeof value === 'object') {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    if (!entries.length) return `<li>${label}<span class="muted">${Array.isArray(value) ? '[]' : '{}'}</span></li>`;
    return `<li><details ${key === undefined ? 'open' : ''}><summary>${label}<span class="muted">${Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`}</span></summary>
      <ul>${entries.map(([k, v]) => jsonTree(v, k)).join('')}</ul></details></li>`;
  }
  const cls = typeof value === 'string' ? 's' : 'n';
  return `<li>${label}<span class="${cls}">${esc(typeof value === 'string' ? `"${value}"` : String(value))}</span></li>`;
}
// Live line chart on a <canvas>: series [{label, color}], push(values) adds one point per series.
export function lineChart(el, title, series, format) {
  el.className = 'card chart';
  el.innerHTML = `<h3>${esc(title)}</h3><canvas role="img" aria-label="${esc(title)} chart"></canvas><div class="legend"></div>`;
  const canvas = $('canvas', el), legend = $('.legend', el), points = series.map(() => []), size = 60;
  const draw = () => {
    const ratio = window.devicePixelRatio || 1, w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w) return;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const g = canvas.getContext('2d'); g.scale(ratio, ratio);
    const styles = getComputedStyle(document.documentElement);
    const max = Math.max(1e-9, ...points.flat()) * 1.15;
    g.strokeStyle = styles.getPropertyValue('--border'); g.fillStyle = styles.getPropertyValue('--muted'); g.font = '11px system-ui';
    for (let i = 0; i <= 4; i++) { const y = 4 + (h - 8) * i / 4; g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
      g.fillText(format(max * (4 - i) / 4), 4, Math.max(12, y - 2)); }
    series.forEach((s, si) => { g.strokeStyle = s.color; g.lineWidth = 2; g.beginPath();
      points[si].forEach((v, i) => { const x = w - (points[si].length - 1 - i) * (w / (size - 1)), y = h - 4 - (h - 8) * v / max; i ? g.lineTo(x, y) : g.moveTo(x, y); });
      g.stroke(); });
    legend.innerHTML = series.map((s, si) => `<span class="badge">${esc(s.label)}: ${esc(format(points[si][points[si].length - 1] || 0))}</span>`).join('');
  };
  return {push(values) { values.forEach((v, i) => { points[i].push(v); if (points[i].length > size) points[i].shift(); }); draw(); }};
}
export function roleOptions(selected, roles) {
  return Object.entries(roles).map(([v, n]) => `<option value="${v}" ${+v === +selected ? 'selected' : ''}>${esc(n)}</option>`).join('');
}
export function bindEditor(errorLine) {
  const text = document.getElementById('content'), gutter = document.getElementById('gutter');
  const draw = () => { const n = text.value.split('\n').length;
    gutter.innerHTML = Array.from({length: n}, (_, i) => `<div class="${i + 1 === errorLine() ? 'bad' : ''}">${i + 1}</div>`).join(''); gutter.scrollTop = text.scrollTop; };
  text.oninput = draw; text.onscroll = () => { gutter.scrollTop = text.scrollTop; }; draw(); return draw;
}
export function statusBadge(ep) { return ep ? `<span class="badge ${ep.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}">${ep.Status === constants.EnvironmentStatus.Up ? 'up' : 'down'}</span>` : ''; }
export function checkboxes(items, name) {
  return items.map(i => `<label class="check"><input type="checkbox" name="${name}" value="${i.Id}"> ${esc(i.Name)}</label>`).join('') || '<p class="muted">None yet.</p>';
}
export const checkedIds = (form, name) => $$(`input[name=${name}]:checked`, form).map(x => +x.value);
""",  # noqa: E501
}
# ---- END GENERATED UI FILES ----


@dataclasses.dataclass
class StaticAsset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str

    @classmethod
    def make(cls, text: str, content_type: str) -> "StaticAsset":
        body = text.encode()
        return cls(body, gzip.compress(body, 9, mtime=0), content_type,
                   '"' + hashlib.sha256(body).hexdigest()[:20] + '"')


UI_CONTENT_TYPES = {".html": "text/html", ".css": "text/css", ".js": "application/javascript"}
UI_ASSET_PREFIX = "/assets/"


def ui_url(name: str) -> str:
    """Where the browser finds a file of ui/: the page at /, every other file under /assets/."""
    return "/" if name == "index.html" else UI_ASSET_PREFIX + name


def ui_content_type(name: str) -> str:
    return UI_CONTENT_TYPES[os.path.splitext(name)[1]]


# What make_app serves: URL -> (text, content type).
UI_ASSETS = {ui_url(name): (text, ui_content_type(name)) for name, text in UI_FILES.items()}


def ui_asset_from_disk(ui_dir: str, url: str) -> StaticAsset | None:
    """The file of a ui/ directory the URL names (--ui-dir), read now; None when there is none. Only the files
    the embedded copy would hold are served: the names are listed from the directory, never joined from the URL."""
    root = os.path.realpath(ui_dir)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "tests")
        for file_name in files:
            path = os.path.join(folder, file_name)
            name = os.path.relpath(path, root).replace(os.sep, "/")
            if os.path.splitext(name)[1] in UI_CONTENT_TYPES and ui_url(name) == url:
                with open(path, encoding="utf-8") as f:
                    return StaticAsset.make(f.read(), ui_content_type(name))
    return None


@public
async def handle_ui_asset(request: web.Request) -> web.Response:
    """The web UI: compressed when the browser accepts gzip, 304 when its copy is current."""
    ui_dir = request.app[CONFIG].ui_dir
    asset = ui_asset_from_disk(ui_dir, request.path) if ui_dir else request.app[ASSETS].get(request.path)
    if asset is None:
        raise NotFound(f"no such page {request.path}")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    body = asset.body
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return web.Response(body=body, headers=headers, content_type=asset.content_type, charset="utf-8")


# ================================================================================================================
# Application: route table, environment kinds, OpenAPI, startup and shutdown
# ================================================================================================================

# Every kind of environment, one class each (bottle's server_names): {Portainer's EndpointType: kind}.
ENVIRONMENT_KINDS: dict[int, type[EnvironmentKind]] = {
    ENDPOINT_DOCKER: DockerApiKind,
    ENDPOINT_AGENT: AgentKind,
    ENDPOINT_EDGE: EdgeKind,
}
DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", "/api/system/status", handle_system_status),
    ("GET", "/api/status", handle_system_status),
    ("GET", "/api/system/version", handle_system_version),
    ("GET", "/api/status/version", handle_system_version),
    ("GET", "/api/system/info", handle_system_info),
    ("GET", "/api/motd", handle_motd),
    ("GET", "/api/docs/openapi.json", handle_openapi),
    ("GET", "/api/users/admin/check", handle_admin_check),
    ("POST", "/api/users/admin/init", handle_admin_init),
    ("POST", "/api/auth", handle_auth),
    ("POST", "/api/auth/logout", handle_logout),
    ("GET", "/api/users", handle_users_list),
    ("POST", "/api/users", handle_user_create),
    ("GET", "/api/users/me", handle_user_me),
    ("GET", "/api/users/{id}", handle_user_inspect),
    ("PUT", "/api/users/{id}", handle_user_update),
    ("DELETE", "/api/users/{id}", handle_user_delete),
    ("PUT", "/api/users/{id}/passwd", handle_user_password),
    ("GET", "/api/users/{id}/tokens", handle_token_list),
    ("POST", "/api/users/{id}/tokens", handle_token_create),
    ("DELETE", "/api/users/{id}/tokens/{keyId}", handle_token_delete),
    ("GET", "/api/teams", handle_teams_list),
    ("POST", "/api/teams", handle_team_create),
    ("GET", "/api/teams/{id}", handle_team_inspect),
    ("PUT", "/api/teams/{id}", handle_team_update),
    ("DELETE", "/api/teams/{id}", handle_team_delete),
    ("GET", "/api/teams/{id}/memberships", handle_team_memberships_of_team),
    ("GET", "/api/users/{id}/memberships", handle_user_memberships),
    ("GET", "/api/roles", handle_roles_list),
    ("GET", "/api/team_memberships", handle_memberships_list),
    ("POST", "/api/team_memberships", handle_membership_create),
    ("PUT", "/api/team_memberships/{id}", handle_membership_update),
    ("DELETE", "/api/team_memberships/{id}", handle_membership_delete),
    ("GET", "/api/resource_controls", handle_resource_controls_list),
    ("POST", "/api/resource_controls", handle_resource_control_create),
    ("PUT", "/api/resource_controls/{id}", handle_resource_control_update),
    ("DELETE", "/api/resource_controls/{id}", handle_resource_control_delete),
    ("GET", "/api/endpoints", handle_endpoints_list),
    ("POST", "/api/endpoints", handle_endpoint_create),
    ("POST", "/api/endpoints/snapshot", handle_endpoints_snapshot),
    ("GET", "/api/endpoints/{id}", handle_endpoint_inspect),
    ("PUT", "/api/endpoints/{id}", handle_endpoint_update),
    ("DELETE", "/api/endpoints/{id}", handle_endpoint_delete),
    ("DELETE", "/api/endpoints", handle_endpoints_delete_batch),
    ("PUT", "/api/endpoints/{id}/settings", handle_endpoint_settings_update),
    ("POST", "/api/endpoints/{id}/snapshot", handle_endpoint_snapshot),
    ("GET", "/api/endpoint_groups", handle_endpoint_groups_list),
    ("POST", "/api/endpoint_groups", handle_endpoint_group_create),
    ("GET", "/api/endpoint_groups/{id}", handle_endpoint_group_inspect),
    ("PUT", "/api/endpoint_groups/{id}", handle_endpoint_group_update),
    ("DELETE", "/api/endpoint_groups/{id}", handle_endpoint_group_delete),
    ("PUT", "/api/endpoint_groups/{id}/endpoints/{endpointId}", handle_endpoint_group_add_endpoint),
    ("DELETE", "/api/endpoint_groups/{id}/endpoints/{endpointId}", handle_endpoint_group_remove_endpoint),
    ("*", "/api/endpoints/{id}/docker/{path:.*}", handle_docker_proxy),
    ("GET", "/api/registries", handle_registries_list),
    ("POST", "/api/registries", handle_registry_create),
    ("GET", "/api/registries/{id}", handle_registry_inspect),
    ("PUT", "/api/registries/{id}", handle_registry_update),
    ("DELETE", "/api/registries/{id}", handle_registry_delete),
    ("GET", "/api/registries/{id}/v2/_catalog", handle_registry_catalog),
    ("GET", "/api/registries/{id}/v2/{repository:.+}/tags/list", handle_registry_tags),
    ("GET", "/api/endpoints/{id}/registries", handle_endpoint_registries),
    ("PUT", "/api/endpoints/{id}/registries/{registryId}", handle_endpoint_registry_access),
    ("GET", "/api/endpoints/{id}/image_status", handle_endpoint_image_status),
    ("GET", "/api/endpoints/{id}/image_notification", handle_endpoint_image_notification),
    ("GET", "/api/docker/{id}/containers/{containerId}/image_status", handle_container_image_status),
    ("POST", "/api/docker/{id}/containers/{containerId}/recreate", handle_container_recreate),
    ("GET", "/api/stacks/{id}/images_status", handle_stack_images_status),
    ("GET", "/api/endpoints/edge/tunnel", handle_edge_tunnel),
    ("GET", "/api/endpoints/{id}/edge/key", handle_edge_key),
    ("PUT", "/api/endpoints/{id}/association", handle_endpoint_association),
    ("DELETE", "/api/endpoints/{id}/association", handle_endpoint_association_delete),
    ("GET", "/api/edge_groups", handle_edge_groups_list),
    ("POST", "/api/edge_groups", handle_edge_group_create),
    ("GET", "/api/edge_groups/{id}", handle_edge_group_inspect),
    ("PUT", "/api/edge_groups/{id}", handle_edge_group_update),
    ("DELETE", "/api/edge_groups/{id}", handle_edge_group_delete),
    ("GET", "/api/edge_jobs", handle_edge_jobs_list),
    ("POST", "/api/edge_jobs", handle_edge_job_create),
    ("POST", "/api/edge_jobs/create/string", handle_edge_job_create),
    ("GET", "/api/edge_jobs/{id}", handle_edge_job_inspect),
    ("PUT", "/api/edge_jobs/{id}", handle_edge_job_update),
    ("DELETE", "/api/edge_jobs/{id}", handle_edge_job_delete),
    ("GET", "/api/edge_jobs/{id}/file", handle_edge_job_file),
    ("POST", "/api/edge_jobs/{id}/run", handle_edge_job_run),
    ("GET", "/api/edge_jobs/{id}/tasks", handle_edge_job_tasks),
    ("GET", "/api/edge_jobs/{id}/tasks/{taskId}/logs", handle_edge_job_task_logs),
    ("POST", "/api/stacks/create/standalone/string", handle_stack_create_standalone_string),
    ("POST", "/api/stacks/create/standalone/file", handle_stack_create_standalone_file),
    ("POST", "/api/stacks/create/swarm/string", handle_stack_create_swarm_string),
    ("POST", "/api/stacks/create/swarm/file", handle_stack_create_swarm_file),
    ("POST", "/api/stacks/create/standalone/repository", handle_stack_create_standalone_repository),
    ("POST", "/api/stacks/create/swarm/repository", handle_stack_create_swarm_repository),
    ("POST", "/api/stacks/webhooks/{webhook}", handle_stack_webhook),
    ("POST", "/api/stacks/{id}/git", handle_stack_git_update),
    ("PUT", "/api/stacks/{id}/git/redeploy", handle_stack_git_redeploy),
    ("POST", "/api/stacks", handle_stack_create_legacy),
    ("GET", "/api/stacks", handle_stacks_list),
    ("GET", "/api/stacks/outside", handle_stacks_outside),
    ("GET", "/api/stacks/deploys/{deployId}/progress", handle_stack_deploy_progress),
    ("POST", "/api/stacks/adopt", handle_stack_adopt),
    ("GET", "/api/stacks/{id}", handle_stack_inspect),
    ("PUT", "/api/stacks/{id}", handle_stack_update),
    ("DELETE", "/api/stacks/{id}", handle_stack_delete),
    ("GET", "/api/stacks/{id}/file", handle_stack_file),
    ("GET", "/api/stacks/{id}/services", handle_stack_services),
    ("POST", "/api/stacks/{id}/start", handle_stack_start),
    ("POST", "/api/stacks/{id}/stop", handle_stack_stop),
    ("POST", "/api/stacks/{id}/migrate", handle_stack_migrate),
    ("GET", "/api/edge_stacks", handle_edge_stacks_list),
    ("POST", "/api/edge_stacks", handle_edge_stack_create),
    ("POST", "/api/edge_stacks/create/repository", handle_edge_stack_create_repository),
    ("PUT", "/api/edge_stacks/{id}/git/redeploy", handle_edge_stack_git_redeploy),
    ("GET", "/api/edge_stacks/{id}", handle_edge_stack_inspect),
    ("PUT", "/api/edge_stacks/{id}", handle_edge_stack_update),
    ("DELETE", "/api/edge_stacks/{id}", handle_edge_stack_delete),
    ("GET", "/api/edge_stacks/{id}/file", handle_edge_stack_file),
    ("GET", "/api/webhooks", handle_webhooks_list),
    ("POST", "/api/webhooks", handle_webhook_create),
    ("PUT", "/api/webhooks/{id}", handle_webhook_update),
    ("DELETE", "/api/webhooks/{id}", handle_webhook_delete),
    ("POST", "/api/webhooks/{token}", handle_webhook_execute),
    ("GET", "/api/templates", handle_templates_list),
    ("POST", "/api/templates/{id}/deploy", handle_template_deploy),
    ("POST", "/api/templates/{id}/file", handle_template_file),
    ("GET", "/api/custom_templates", handle_custom_templates_list),
    ("POST", "/api/custom_templates/create/string", handle_custom_template_create),
    ("POST", "/api/custom_templates/create/repository", handle_custom_template_create_repository),
    ("PUT", "/api/custom_templates/{id}/git_fetch", handle_custom_template_git_fetch),
    ("GET", "/api/custom_templates/{id}", handle_custom_template_inspect),
    ("PUT", "/api/custom_templates/{id}", handle_custom_template_update),
    ("DELETE", "/api/custom_templates/{id}", handle_custom_template_delete),
    ("GET", "/api/custom_templates/{id}/file", handle_custom_template_file),
    ("POST", "/api/custom_templates/{id}/deploy", handle_custom_template_deploy),
    ("GET", "/api/endpoints/{id}/console/ws", handle_console_websocket),
    ("GET", "/api/websocket/exec", handle_websocket_exec),
    ("GET", "/api/websocket/attach", handle_websocket_attach),
    ("GET", "/api/useractivity/logs", handle_activity_logs),
    ("GET", "/api/useractivity/logs.csv", handle_activity_logs_csv),
    ("GET", "/api/useractivity/authlogs", handle_auth_logs),
    ("GET", "/api/useractivity/authlogs.csv", handle_auth_logs_csv),
    ("POST", "/api/backup", handle_backup),
    ("POST", "/api/restore", handle_restore),
    ("GET", "/api/telemetry/preview", handle_telemetry_preview),
    ("POST", "/api/telemetry/send", handle_telemetry_send),
    ("GET", "/api/tags", handle_tags_list),
    ("POST", "/api/tags", handle_tag_create),
    ("DELETE", "/api/tags/{id}", handle_tag_delete),
    ("GET", "/api/settings", handle_settings_get),
    ("PUT", "/api/settings", handle_settings_update),
    ("GET", "/api/settings/public", handle_settings_public),
    ("GET", "/api/ui/constants", handle_ui_constants),
    ("GET", "/", handle_ui_asset),
    ("GET", UI_ASSET_PREFIX + "{path:.+}", handle_ui_asset),
]


_STRING = {"type": "string"}
_CREDENTIALS = {"type": "object", "required": ["Username", "Password"],
                "properties": {"Username": _STRING, "Password": _STRING}}
_ID_LIST = {"type": "array", "items": {"type": "integer"}}
_POLICIES = {"type": "object", "additionalProperties": {"type": "object", "properties": {
    "RoleId": {"type": "integer"}}}}
# Request bodies of the routes that take one, so clients and fuzzers know what to send.
REQUEST_SCHEMAS: dict[str, dict] = {
    "handle_admin_init": _CREDENTIALS,
    "handle_auth": _CREDENTIALS,
    "handle_user_create": {"type": "object", "required": ["Username", "Password"],
                           "properties": {"Username": _STRING, "Password": _STRING,
                                          "Role": {"type": "integer", "enum": [1, 2]}}},
    "handle_user_update": {"type": "object", "properties": {"Username": _STRING, "Password": _STRING,
                                                            "Role": {"type": "integer", "enum": [1, 2]}}},
    "handle_user_password": {"type": "object", "required": ["Password", "NewPassword"],
                             "properties": {"Password": _STRING, "NewPassword": _STRING}},
    "handle_token_create": {"type": "object", "required": ["password"],
                            "properties": {"password": _STRING, "description": _STRING}},
    "handle_endpoint_create": {"type": "object", "required": ["Name"],
                               "properties": {"Name": _STRING, "EndpointCreationType": {"type": "integer"},
                                              "URL": _STRING, "TLS": {"type": "boolean"}}},
    "handle_endpoint_group_create": {"type": "object", "required": ["Name"], "properties": {
        "Name": _STRING, "Description": _STRING, "AssociatedEndpoints": _ID_LIST, "TagIDs": _ID_LIST}},
    "handle_endpoint_group_update": {"type": "object", "properties": {
        "Name": _STRING, "Description": _STRING, "TagIDs": _ID_LIST, "UserAccessPolicies": _POLICIES,
        "TeamAccessPolicies": _POLICIES}},
    "handle_endpoint_settings_update": {"type": "object", "properties": {
        **{name: {"type": "boolean"} for name in DEFAULT_SECURITY_SETTINGS}, "enableGPUManagement": {"type": "boolean"},
        "gpus": {"type": "array", "items": {"type": "object", "properties": {"name": _STRING, "value": _STRING}}}}},
    "handle_endpoints_delete_batch": {"type": "object", "required": ["endpoints"], "properties": {
        "endpoints": {"type": "array", "items": {"type": "object", "required": ["id"], "properties": {
            "id": {"type": "integer"}, "deleteCluster": {"type": "boolean"}}}}}},
    "handle_stack_migrate": {"type": "object", "required": ["EndpointID"], "properties": {
        "EndpointID": {"type": "integer"}, "SwarmID": _STRING, "Name": _STRING}},
    "handle_edge_stack_update": {"type": "object", "required": ["StackFileContent", "EdgeGroups"], "properties": {
        "StackFileContent": _STRING, "EdgeGroups": _ID_LIST, "UpdateVersion": {"type": "boolean"},
        "DeploymentType": {"type": "integer", "enum": [0]}}},
    "handle_webhook_update": {"type": "object", "properties": {"RegistryID": {"type": "integer"}}},
    "handle_webhook_create": {"type": "object", "required": ["ResourceID", "EndpointID", "WebhookType"],
                              "properties": {"ResourceID": _STRING, "EndpointID": {"type": "integer"},
                                             "RegistryID": {"type": "integer"},
                                             "WebhookType": {"type": "integer", "enum": [1]}}},
}
_STACK_UPLOAD = {"type": "object", "required": ["Name", "file"], "properties": {
    "Name": _STRING, "SwarmID": _STRING, "Env": {"type": "string", "description": "JSON: [{name, value}]"},
    "file": {"type": "string", "format": "binary",
             "description": "a compose file, or a project archive (.tar, .tar.gz, .zip; told apart by content)"},
    "ComposeFile": {"type": "string", "description": "the archive's compose file (default: compose.yaml, "
                                                     "compose.yml, docker-compose.yaml, docker-compose.yml)"}}}
# Routes that take a multipart form, as Portainer's do.
FORM_SCHEMAS: dict[str, dict] = {
    "handle_stack_create_standalone_file": _STACK_UPLOAD,
    "handle_stack_create_swarm_file": _STACK_UPLOAD,
}
# The other bodies are described from the schema their handler reads them with (documented_fields).
REQUEST_FIELDS: dict[str, dict] = {
    "handle_user_update": USER_UPDATE_FIELDS, "handle_team_create": TEAM_FIELDS, "handle_team_update": TEAM_FIELDS,
    "handle_membership_create": MEMBERSHIP_FIELDS, "handle_membership_update": MEMBERSHIP_FIELDS,
    "handle_resource_control_create": RESOURCE_CONTROL_FIELDS,
    "handle_resource_control_update": RESOURCE_CONTROL_FIELDS,
    "handle_endpoint_update": ENDPOINT_UPDATE_FIELDS, "handle_tag_create": TAG_FIELDS,
    "handle_endpoint_association": ASSOCIATION_FIELDS, "handle_edge_group_create": EDGE_GROUP_FIELDS,
    "handle_edge_group_update": EDGE_GROUP_FIELDS, "handle_edge_job_create": EDGE_JOB_FIELDS,
    "handle_edge_job_update": EDGE_JOB_FIELDS, "handle_registry_create": REGISTRY_FIELDS,
    "handle_registry_update": REGISTRY_FIELDS, "handle_endpoint_registry_access": REGISTRY_ACCESS_FIELDS,
    "handle_container_recreate": RECREATE_FIELDS, "handle_stack_create_standalone_string": STACK_CREATE_FIELDS,
    "handle_stack_create_swarm_string": SWARM_STACK_CREATE_FIELDS,
    "handle_stack_create_legacy": SWARM_STACK_CREATE_FIELDS,
    "handle_stack_update": STACK_UPDATE_FIELDS, "handle_stack_adopt": STACK_CREATE_FIELDS,
    "handle_stack_create_standalone_repository": GIT_STACK_CREATE_FIELDS,
    "handle_stack_create_swarm_repository": SWARM_GIT_STACK_CREATE_FIELDS,
    "handle_stack_git_update": GIT_STACK_UPDATE_FIELDS, "handle_stack_git_redeploy": GIT_STACK_REDEPLOY_FIELDS,
    "handle_custom_template_create_repository": CUSTOM_TEMPLATE_GIT_FIELDS,
    "handle_edge_stack_create_repository": EDGE_STACK_GIT_FIELDS, "handle_edge_stack_git_redeploy": GIT_SOURCE_FIELDS,
    "handle_edge_stack_create": EDGE_STACK_CREATE_FIELDS, "handle_template_deploy": STACK_DEPLOY_FIELDS,
    "handle_custom_template_create": CUSTOM_TEMPLATE_BODY_FIELDS,
    "handle_custom_template_update": CUSTOM_TEMPLATE_BODY_FIELDS, "handle_custom_template_deploy": STACK_DEPLOY_FIELDS,
    "handle_backup": BACKUP_FIELDS, "handle_settings_update": SETTINGS_FIELDS,
}
_CONSOLE_QUERY = [("endpointId", "integer", True), ("id", "string", True), ("nodeName", "string", False)]
# Query parameters of routes that take them: (name, type, required).
QUERY_PARAMETERS: dict[str, list[tuple[str, str, bool]]] = {
    "handle_websocket_exec": _CONSOLE_QUERY, "handle_websocket_attach": _CONSOLE_QUERY,
    "handle_stack_webhook": [("pullImage", "boolean", False)],
}
_OPENAPI_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object", list: "array"}


def openapi_schema(kind: Any) -> dict:
    """The OpenAPI schema of a documented_fields schema (keys are matched case-insensitively, extra keys ignored)."""
    if isinstance(kind, dict):
        return {"type": "object", "properties": {name: openapi_schema(k) for name, k in kind.items()}}
    if isinstance(kind, list):
        return {"type": "array", "items": openapi_schema(kind[0])}
    if isinstance(kind, tuple):
        return {"oneOf": [openapi_schema(k) for k in kind]}
    if kind is ANY_JSON:
        return {}
    return {"type": _OPENAPI_TYPES[kind]}


def openapi_document() -> dict:
    paths: dict = {}
    for method, path, handler in ROUTES:
        if not path.startswith("/api/"):
            continue
        clean = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)
        integer_params = ("id", "keyId", "registryId", "taskId", "endpointId")
        params = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "integer"} if name in integer_params else {"type": "string"}}
                  for name in re.findall(r"\{(\w+)", clean)]
        params += [{"name": name, "in": "query", "required": required, "schema": {"type": kind}}
                   for name, kind, required in QUERY_PARAMETERS.get(handler.__name__, [])]
        methods = ["get", "post", "put", "delete"] if method == "*" else [method.lower()]
        for m in methods:
            operation = {
                "summary": (inspect.getdoc(handler) or handler.__name__).splitlines()[0],
                "operationId": f"{handler.__name__}_{m}",
                "parameters": params,
                "responses": {"default": {"description": "JSON answer, or {message, details} on error"}},
            }
            if not getattr(handler, "public", False):
                operation["security"] = [{"jwt": []}, {"apiKey": []}]
            schema = REQUEST_SCHEMAS.get(handler.__name__) or (
                openapi_schema(REQUEST_FIELDS[handler.__name__]) if handler.__name__ in REQUEST_FIELDS else None)
            if schema and m in ("post", "put", "delete"):
                operation["requestBody"] = {"content": {"application/json": {"schema": schema}}}
            if handler.__name__ in FORM_SCHEMAS and m == "post":
                operation["requestBody"] = {"content": {"multipart/form-data": {
                    "schema": FORM_SCHEMAS[handler.__name__]}}}
            paths.setdefault(clean, {})[m] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "portainer.py API", "version": VERSION,
                 "description": "Compatible with the Portainer CE API."},
        "components": {"securitySchemes": {
            "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}},
        "paths": paths,
    }


async def create_first_admin_and_environment(app: web.Application) -> None:
    config, store = app[CONFIG], app[STORE]
    if config.admin_password_file and not admin_exists(store):
        try:
            with open(config.admin_password_file) as f:
                password = f.read().strip()
        except OSError as exc:
            raise SystemExit(f"portainer.py: cannot read --admin-password-file: {exc}") from None
        try:
            await create_user(store, "admin", password, ROLE_ADMIN)
        except ApiError as exc:
            raise SystemExit(f"portainer.py: --admin-password-file: {exc.message}") from None
        log.info("created user 'admin' from %s", config.admin_password_file)
    if config.host and not store.settings.get("_initial_environment_created"):
        url = normalise_docker_url(config.host, ENDPOINT_DOCKER)
        store.endpoints.add({
            "Name": "local", "Type": ENDPOINT_DOCKER, "URL": url, "PublicURL": "",
            "GroupId": 1, "TagIds": [], "UserAccessPolicies": {}, "TeamAccessPolicies": {},
            "SecuritySettings": dict(DEFAULT_SECURITY_SETTINGS), "TLSConfig": {"TLS": False}, "CreationDate": now()})
        store.settings["_initial_environment_created"] = True
        await store.commit()
        log.info("created environment 'local' for %s", url)


async def server_lifecycle(app: web.Application):
    """Startup before the yield, shutdown after: background tasks are made here and cancelled here."""
    await create_first_admin_and_environment(app)
    rebuild_api_key_index(app)
    snapshots = asyncio.ensure_future(snapshot_loop(app))
    image_checks = asyncio.ensure_future(image_update_loop(app))
    yield
    for ws in list(app[CONSOLES]):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
    for task in (snapshots, image_checks):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[REGISTRIES].close()
    app[ENVIRONMENTS].close()
    await app[STORE].drain()
    app[STORE].release()


def tighten_data_permissions(directory: str) -> None:
    """The server's own files are the owner's only: 0600 files, 0700 directories, whatever made them."""
    os.chmod(directory, 0o700)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o700)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), 0o600)


async def audit_and_analytics_lifecycle(app: web.Application):
    """The activity log writer and the analytics sender run in the background, never on a request's path."""
    store = app[STORE]
    await asyncio.to_thread(tighten_data_permissions, store.directory)
    if "InstanceID" not in store.analytics:
        store.analytics["InstanceID"] = str(uuid.uuid4())
        await store.commit()
    tasks = [asyncio.ensure_future(app[ACTIVITY].run()), asyncio.ensure_future(analytics_loop(app))]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[ACTIVITY].flush()


def register_startup_and_shutdown(app: web.Application, kinds: list[EnvironmentKind]) -> None:
    """Everything that runs for the server's lifetime, in one place. The cleanup_ctx generators start in this order
    and stop in the reverse one, so the store (server_lifecycle) is drained and released last."""
    for lifecycle in (server_lifecycle, audit_and_analytics_lifecycle, git_updates_lifecycle,
                      *(kind.lifecycle for kind in kinds)):
        app.cleanup_ctx.append(lifecycle)

    async def tell_long_lived_connections_to_go(app: web.Application) -> None:
        await asyncio.gather(*(kind.shutting_down() for kind in kinds))

    # on_shutdown, not cleanup_ctx: it runs before aiohttp stops waiting for open requests (cleanup runs after).
    app.on_shutdown.append(tell_long_lived_connections_to_go)


def make_app(config: argparse.Namespace) -> web.Application:
    """The whole server as an aiohttp application. Takes ownership of the data directory (file lock)."""
    store = Store(config.data)
    store.acquire()
    store.load()
    app = web.Application(middlewares=[activity_middleware, error_middleware, auth_middleware],
                          client_max_size=MAX_JSON_BODY)
    app.on_response_prepare.append(set_security_headers)
    app[CONFIG] = config
    app[STORE] = store
    environments = app[ENVIRONMENTS] = Environments(store, store.directory)
    app[SESSIONS] = Sessions(load_or_create_secret(store.directory, "jwt.secret"), store)
    app[LOGIN_LIMIT] = LoginRateLimit()
    app[API_KEY_INDEX] = {}
    app[STARTED_AT] = time.monotonic()
    app[CONSOLES] = weakref.WeakSet()
    app[ASSETS] = {path: StaticAsset.make(text, kind) for path, (text, kind) in UI_ASSETS.items()}
    app[REGISTRIES] = Registries(store, load_or_create_secret(store.directory, "registry.key"))
    app[IMAGE_UPDATES] = ImageUpdates(app[ENVIRONMENTS], app[REGISTRIES])
    app[STACKS] = Stacks(store, app[ENVIRONMENTS], store.directory)
    app[GIT] = Git(store.directory, config.git_ca_file)
    app[GIT_CREDENTIALS] = GitCredentials(store.directory)
    app[GIT_UPDATES] = GitUpdates(app)
    app[WEBHOOK_GUESSES] = WebhookGuesses()
    app[STACKS].recover_interrupted()
    app[DEPLOYS] = DeployProgress()
    app[ACTIVITY] = ActivityLog(store.directory,
                                lambda: int(current_settings(store)["ActivityLogRetentionDays"]))
    app[ANALYTICS_STATE] = {}
    environments.kinds.update({kind_type: kind(app) for kind_type, kind in ENVIRONMENT_KINDS.items()})
    app[AFTER_RESTORE] = [lambda restored: restored[REGISTRIES].reload(),
                          lambda restored: restored[GIT_CREDENTIALS].reload(),
                          lambda restored: restored[GIT_UPDATES].schedule_all(),
                          lambda restored: restored[IMAGE_UPDATES].forget(),
                          *(lambda restored, kind=kind: kind.after_restore() for kind in environments.kinds.values())]
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    register_startup_and_shutdown(app, list(environments.kinds.values()))
    return app


def tls_context(config: argparse.Namespace) -> ssl.SSLContext:
    if config.sslcert:
        cert, key = config.sslcert, config.sslkey
    else:
        cert, key = load_or_create_certificate(os.path.abspath(config.data))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve(config: argparse.Namespace) -> None:
    # asyncio gives every TLS connection a 256 KiB read buffer; TLS records are at most 16 KiB, and 10,000
    # idle edge tunnels would otherwise hold 2.5 GB in buffers alone.
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    app = make_app(config)
    runner_options, site_options = shared.aiohttp_server_options()
    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    try:
        addresses = []
        if not config.http_disabled:
            host, port = split_bind(config.bind)
            await web.TCPSite(runner, host, port, **site_options).start()
            addresses.append(f"http://{host}:{port}")
        host, port = split_bind(config.bind_https)
        await web.TCPSite(runner, host, port, ssl_context=tls_context(config), **site_options).start()
        addresses.append(f"https://{host}:{port}")
        log.info("portainer.py %s serving %s (data %s)", VERSION, ", ".join(addresses), app[STORE].directory)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config))
    except DataDirectoryInUse as exc:
        print(f"portainer.py: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"portainer.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
