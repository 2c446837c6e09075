#!/usr/bin/env python3
"""portainer.py: one-file Docker management server, API-compatible with Portainer CE.

Sections follow a request from the top of the file down:
    constants and config -> errors -> store -> certificates and secrets -> Docker connectors ->
    environments and snapshots -> auth -> access rules for proxied Docker calls -> Docker proxy ->
    API handlers by resource -> UI assets -> make_app(config) -> main(argv)
Nothing runs at import time; `main()` is last.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
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
import re
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tarfile
import time
import urllib.parse
import uuid
import zlib
from typing import Any, Awaitable, Callable

from aiohttp import web

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
    p.add_argument("--agent-secret", default=_env("AGENT_SECRET", ""),
                   help="secret proven to every agent that has AGENT_SECRET set; an environment may set its own "
                        "[AGENT_SECRET]")
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


def app_key(name: str, kind: type):
    """A typed application key where aiohttp has them (3.9+); a plain string key on older aiohttp."""
    return web.AppKey(name, kind) if hasattr(web, "AppKey") else name


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
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("invalid JSON in request body", str(exc)) from exc


# What aiohttp raises for a form or multipart body it cannot parse (a missing boundary, a broken part header).
MALFORMED_FORM_ERRORS = (ValueError, AssertionError, LookupError)


async def read_json_object(request: web.Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def field(body: dict, name: str, kind: type, required: bool = True, default: Any = None) -> Any:
    """One field of a JSON body, type-checked, with a clear message when it is missing or wrong."""
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return default
    value = body[name]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise BadRequest(f"field {name!r} must be {kind.__name__}")
    return value


def path_id(request: web.Request, name: str = "id") -> int:
    raw = request.match_info.get(name, "")
    if not raw.isdigit() or len(raw) > 12:
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
    "ActivityLogRetentionDays": 90,
}


class DataDirectoryInUse(Exception):
    pass


class Store:
    """The whole state in one dict, saved as JSON. Change `data`, then `await commit()`.

    Concurrent commits are coalesced into one write; each caller's commit returns once a write that
    includes its change is on disk. A failed write restores the last good document and raises.
    """

    FILE = "portainer.json"

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, self.FILE)
        self.backup_path = self.path + ".bak"
        self.data: dict = {}
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
            payload = json.dumps(self.data, separators=(",", ":")).encode()
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
# Docker connectors: one interface for every kind of environment
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

    async def request_json(self, method: str, target: str, body: Any = None, timeout: float = 30.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = [("Content-Type", "application/json")] if data is not None else []
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
        return json.loads(raw) if raw.strip() else None

    def close(self) -> None:
        self.client.close()


def engine_error(status: int, raw: bytes) -> ApiError:
    """An engine's error answer, as our error with the engine's status and message."""
    try:
        message = json.loads(raw).get("message", "")
    except (ValueError, AttributeError):
        message = raw.decode(errors="replace")[:500]
    error = ApiError(message or f"the Docker engine answered {status}")
    error.status = status if 400 <= status < 600 else 502
    return error


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


class AgentConnector(DockerConnector):
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


class Environments:
    """Connectors for each environment, and their live status and latest snapshot (kept in memory only)."""

    def __init__(self, store: Store, data_directory: str):
        self.store = store
        self.data_directory = data_directory
        self._connectors: dict[int, DockerConnector] = {}
        self.status: dict[int, int] = {}
        self.snapshots: dict[int, dict] = {}
        # Environment kinds beyond the local socket register a factory here: {Type: factory(endpoint)}.
        self.connector_kinds: dict[int, Callable[[dict], DockerConnector]] = {
            ENDPOINT_DOCKER: lambda ep: SocketConnector(ep, self.tls_directory(ep["Id"])),
        }

    def tls_directory(self, endpoint_id: int) -> str:
        return os.path.join(self.data_directory, "tls", str(endpoint_id))

    def get(self, endpoint_id: int) -> dict:
        endpoint = self.store.data["endpoints"].get(str(endpoint_id))
        if endpoint is None:
            raise NotFound(f"environment {endpoint_id} not found")
        return endpoint

    def connector(self, endpoint_id: int) -> DockerConnector:
        connector = self._connectors.get(endpoint_id)
        if connector is None:
            endpoint = self.get(endpoint_id)
            factory = self.connector_kinds.get(endpoint["Type"])
            if factory is None:
                raise BadRequest(f"environment {endpoint_id} has type {endpoint['Type']}, which this server "
                                 f"cannot connect to")
            connector = self._connectors[endpoint_id] = factory(endpoint)
        return connector

    def forget(self, endpoint_id: int) -> None:
        connector = self._connectors.pop(endpoint_id, None)
        if connector is not None:
            connector.close()

    def close(self) -> None:
        for endpoint_id in list(self._connectors):
            self.forget(endpoint_id)

    def public_view(self, endpoint: dict) -> dict:
        view = {k: v for k, v in endpoint.items() if not k.startswith("_")}
        view["Status"] = self.status.get(endpoint["Id"], STATUS_DOWN)
        snapshot = self.snapshots.get(endpoint["Id"])
        view["Snapshots"] = [snapshot] if snapshot else []
        return view

    async def snapshot(self, endpoint_id: int) -> dict | None:
        """Ask the engine for its state; up on an answer, down on none. Never raises for an engine fault."""
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
        running = sum(1 for c in containers if c.get("State") == "running")
        statuses = [c.get("Status", "") for c in containers]
        projects = {c.get("Labels", {}).get("com.docker.compose.project") for c in containers} - {None}
        snapshot = {
            "Time": now(),
            "DockerVersion": version.get("Version", ""),
            "Swarm": bool((info.get("Swarm") or {}).get("ControlAvailable")),
            "TotalCPU": info.get("NCPU", 0),
            "TotalMemory": info.get("MemTotal", 0),
            "ContainerCount": len(containers),
            "RunningContainerCount": running,
            "StoppedContainerCount": len(containers) - running,
            "HealthyContainerCount": sum(1 for s in statuses if "(healthy)" in s),
            "UnhealthyContainerCount": sum(1 for s in statuses if "(unhealthy)" in s),
            "ImageCount": len(images),
            "VolumeCount": len((volumes or {}).get("Volumes") or []),
            "NetworkCount": len(networks or []),
            "StackCount": len(projects),
            "NodeCount": 1,
            **details,
        }
        if self.status.get(endpoint_id) == STATUS_DOWN:
            log.info("environment %s is up", endpoint_id)
        self.status[endpoint_id] = STATUS_UP
        self.snapshots[endpoint_id] = snapshot
        return snapshot

    async def snapshot_all(self) -> None:
        ids = [ep["Id"] for ep in self.store.data["endpoints"].values() if ep["Type"] in self.connector_kinds]
        await asyncio.gather(*(self.snapshot(i) for i in ids))


async def snapshot_loop(app: web.Application) -> None:
    environments = app[ENVIRONMENTS]
    interval = app[CONFIG].snapshot_interval
    while True:
        await environments.snapshot_all()
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
        except (ValueError, TypeError):
            raise Unauthorized("invalid session token") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
            raise Unauthorized("invalid session token", "only HS256 tokens issued by this server are accepted")
        expected = hmac.new(self.key, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized("invalid session token", "signature mismatch")
        if not isinstance(claims.get("exp"), int) or claims["exp"] < now():
            raise Unauthorized("session expired, log in again")
        if claims.get("jti") in self.store.data["revoked_tokens"]:
            raise Unauthorized("session was logged out, log in again")
        return claims

    def csrf_token(self, claims: dict) -> str:
        return b64url(hmac.new(self.key, b"csrf:" + claims["jti"].encode(), hashlib.sha256).digest())

    async def revoke(self, claims: dict) -> None:
        revoked = self.store.data["revoked_tokens"]
        for jti, expiry in list(revoked.items()):
            if expiry < now():
                del revoked[jti]
        revoked[claims["jti"]] = claims["exp"]
        await self.store.commit()


class LoginRateLimit:
    """Per client address: a burst of failed logins, then one more every `refill` seconds; a clear 429."""

    def __init__(self, burst: int = 5, refill: float = 6.0):
        self.burst = burst
        self.refill = refill
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, address: str) -> float:
        tokens, stamp = self._buckets.get(address, (self.burst, time.monotonic()))
        return min(self.burst, tokens + (time.monotonic() - stamp) / self.refill)

    def check(self, address: str) -> None:
        if self._tokens(address) < 1:
            retry = int(self.refill) + 1
            error = TooManyRequests(f"too many failed logins from {address}; try again in {retry} s")
            error.retry_after = retry
            raise error

    def failed(self, address: str) -> None:
        self._buckets[address] = (self._tokens(address) - 1, time.monotonic())
        if len(self._buckets) > 10000:
            self._buckets.pop(next(iter(self._buckets)))

    def succeeded(self, address: str) -> None:
        self._buckets.pop(address, None)


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
    users = store.data["users"]
    raw_key = request.headers.get("X-API-Key")
    if raw_key:
        key = app[API_KEY_INDEX].get(api_key_digest(raw_key))
        if key is None or str(key["UserId"]) not in users:
            raise Unauthorized("invalid API key")
        key["_last_used_runtime"] = now()
        return Caller(users[str(key["UserId"])], "apikey")
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
            raise Unauthorized("authentication required", "send a JWT as 'Authorization: Bearer', an X-API-Key, "
                                                          "or log in from the web UI")
    claims = app[SESSIONS].verify(token.strip())
    user = users.get(str(claims["id"]))
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
                             f"remove the {name!r} query parameter and send the token in a header")
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


@web.middleware
async def security_headers_middleware(request: web.Request, handler):
    response = await handler(request)
    if not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Content-Security-Policy", content_security_policy())
        if request.secure and request.app[CONFIG].hsts:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response



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
UNLOGGED_PATHS = frozenset({"/api/auth", "/api/auth/logout"})  # these go to the authentication log


def record_activity(request: web.Request, status: int) -> None:
    caller = request.get(CALLER_KEY)
    if caller is None and status == 401:
        return  # nobody to attribute it to; failed logins are in the authentication log
    store = request.app[STORE]
    endpoint_id, context = None, "Portainer"
    match = ENDPOINT_PATH.match(request.path)
    if match:
        endpoint_id = int(match.group(1))
        context = (store.data["endpoints"].get(match.group(1)) or {}).get("Name", f"environment {endpoint_id}")
    request.app[ACTIVITY].record({
        "kind": "activity", "userId": caller.id if caller else None,
        "username": caller.user["Username"] if caller else "", "endpointId": endpoint_id, "context": context,
        "method": request.method, "path": request.path, "action": f"{request.method} {request.path}",
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
    return {m["TeamID"] for m in store.data["team_memberships"].values() if m["UserID"] == user_id}


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
    """The caller's role on an environment: their own policy first, else the strongest of their teams'."""
    if caller.is_admin:
        return ENV_ROLE_ADMIN
    own = (endpoint.get("UserAccessPolicies") or {}).get(str(caller.id))
    if own is not None:
        return policy_role(own)
    teams = endpoint.get("TeamAccessPolicies") or {}
    roles = [policy_role(teams[str(t)]) for t in user_team_ids(store, caller.id) if str(t) in teams]
    return min(roles) if roles else None


def can_access_endpoint(store: Store, caller: Caller, endpoint: dict) -> bool:
    return endpoint_role(store, caller, endpoint) is not None


def endpoint_for_caller(request: web.Request, endpoint_id: int) -> dict:
    """The environment, if the caller may use it; a user without access learns nothing more than 403."""
    endpoint = request.app[ENVIRONMENTS].get(endpoint_id)
    if not can_access_endpoint(request.app[STORE], caller_of(request), endpoint):
        raise Forbidden(f"you have no access to environment {endpoint_id}")
    return endpoint


def endpoint_security_settings(endpoint: dict) -> dict:
    return {**DEFAULT_SECURITY_SETTINGS, **(endpoint.get("SecuritySettings") or {})}


def bound_by_security_settings(store: Store, caller: Caller, endpoint: dict) -> bool:
    """Administrators and environment administrators are trusted with the host; everyone else is checked."""
    return endpoint_role(store, caller, endpoint) != ENV_ROLE_ADMIN


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


_ID = r"[^/]+"
_NAME = r".+"  # image names and plugin names may hold slashes
# (methods, path pattern after the /vX.Y prefix, action, body check). Anything not listed here is refused;
# a role may make a call only when its ROLE_ACTIONS hold the call's action.
DOCKER_API_RULES: list[tuple[frozenset, re.Pattern, str, str | None]] = [
    (frozenset(m.split()), re.compile(f"^{pattern}$"), action, check)
    for m, pattern, action, check in [
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
        ("POST", r"/exec/[^/]+/(start|resize)", CONSOLE, None),
        ("GET", r"/exec/[^/]+/json", READ, None),
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
        ("POST", rf"/networks/{_ID}/(connect|disconnect)", WRITE, "network_connect"),
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
        ("GET", rf"/(services|tasks|nodes|secrets|configs)/{_ID}", READ, None),
        ("GET", rf"/(services|tasks)/{_ID}/logs", LOGS, None),
        ("POST", r"/services/create", WRITE, "service"),
        ("POST", rf"/services/{_ID}/update", WRITE, "service"),
        ("DELETE", rf"/services/{_ID}", WRITE, None),
        ("POST", rf"/nodes/{_ID}/update", ADMIN, None),
        ("DELETE", rf"/nodes/{_ID}", ADMIN, None),
        ("POST", r"/(secrets|configs)/create", WRITE, None),
        ("POST", rf"/(secrets|configs)/{_ID}/update", WRITE, None),
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


def docker_rule_for(method: str, path: str) -> tuple[str, str | None]:
    """The action and body check of a Docker API call; Forbidden for a call the proxy does not know."""
    bare = API_VERSION_PREFIX.sub("", path)
    for methods, pattern, action, check in DOCKER_API_RULES:
        if method in methods and pattern.match(bare):
            return action, check
    raise Forbidden(f"the Docker API call {method} {bare} is not allowed through this proxy")


def _is_host_path(source: str) -> bool:
    return source.startswith("/") or source.startswith(".") or source.startswith("~")


def container_create_violations(body: dict, settings: dict) -> list[str]:
    """What in a container's settings would give a standard user root on the host, given the environment's
    security settings."""
    host = body.get("HostConfig") or {}
    if not isinstance(host, dict):
        return ["HostConfig must be an object"]
    problems = []
    if host.get("Privileged") and not settings["allowPrivilegedModeForRegularUsers"]:
        problems.append("privileged mode")
    if not settings["allowHostNamespaceForRegularUsers"]:
        for key in ("PidMode", "NetworkMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
            if str(host.get(key) or "").lower() == "host":
                problems.append(f"host namespace ({key}=host)")
    if not settings["allowBindMountsForRegularUsers"]:
        for bind in host.get("Binds") or []:
            if isinstance(bind, str) and _is_host_path(bind.split(":", 1)[0]):
                problems.append(f"bind mount of host path {bind.split(':', 1)[0]}")
        for mount in host.get("Mounts") or []:
            if isinstance(mount, dict) and (mount.get("Type") == "bind" or
                                            (mount.get("VolumeOptions") or {}).get("DriverConfig")):
                problems.append(f"bind mount of host path {mount.get('Source', '')}")
        if host.get("VolumesFrom"):
            problems.append("volumes from another container")
    if not settings["allowDeviceMappingForRegularUsers"]:
        if host.get("Devices") or host.get("DeviceRequests") or host.get("DeviceCgroupRules"):
            problems.append("device mapping")
    if host.get("CapAdd") and not settings["allowContainerCapabilitiesForRegularUsers"]:
        problems.append("added capabilities")
    if host.get("Sysctls") and not settings["allowSysctlSettingForRegularUsers"]:
        problems.append("sysctl settings")
    for option in host.get("SecurityOpt") or []:
        if isinstance(option, str) and "unconfined" in option and not settings["allowPrivilegedModeForRegularUsers"]:
            problems.append(f"security option {option}")
    return problems


def service_violations(body: dict, settings: dict) -> list[str]:
    spec = ((body.get("TaskTemplate") or {}).get("ContainerSpec") or {})
    problems = []
    if not settings["allowBindMountsForRegularUsers"]:
        for mount in spec.get("Mounts") or []:
            if isinstance(mount, dict) and mount.get("Type") == "bind":
                problems.append(f"bind mount of host path {mount.get('Source', '')}")
    if spec.get("CapabilityAdd") and not settings["allowContainerCapabilitiesForRegularUsers"]:
        problems.append("added capabilities")
    if spec.get("Sysctls") and not settings["allowSysctlSettingForRegularUsers"]:
        problems.append("sysctl settings")
    networks = (body.get("TaskTemplate") or {}).get("Networks") or body.get("Networks") or []
    if not settings["allowHostNamespaceForRegularUsers"] and any(
            isinstance(n, dict) and n.get("Target") == "host" for n in networks):
        problems.append("host namespace (host network)")
    return problems


def volume_violations(body: dict, settings: dict) -> list[str]:
    options = body.get("DriverOpts") or {}
    if not settings["allowBindMountsForRegularUsers"] and isinstance(options, dict) and (
            "device" in options or "bind" in str(options.get("o", ""))):
        return ["a volume backed by a host path"]
    return []


def network_violations(body: dict, settings: dict) -> list[str]:
    if not settings["allowHostNamespaceForRegularUsers"] and body.get("Driver") in ("host", "macvlan", "ipvlan"):
        return [f"a {body.get('Driver')} network"]
    return []


BODY_CHECKS: dict[str, Callable[[dict, dict], list[str]]] = {
    "container": container_create_violations,
    "container_update": lambda body, settings: (["device mapping"] if body.get("Devices") and not
                                                settings["allowDeviceMappingForRegularUsers"] else []),
    "exec": lambda body, settings: (["privileged exec"] if body.get("Privileged") and not
                                    settings["allowPrivilegedModeForRegularUsers"] else []),
    "service": service_violations,
    "volume": volume_violations,
    "network": network_violations,
    "network_connect": lambda body, settings: [],  # only the container it names is checked (ownership)
}


# Resource ownership, as Portainer's resource controls: what a non-administrator creates carries these labels,
# and users bound by ownership see and touch only resources labelled with their id or one of their teams.
OWNER_USERS_LABEL = "io.portainer.accesscontrol.users"
OWNER_TEAMS_LABEL = "io.portainer.accesscontrol.teams"
OWNED_KINDS = ("containers", "volumes", "networks", "services")
LABELLED_CREATES = {"container": "Labels", "volume": "Labels", "network": "Labels", "service": "Labels"}
SYSTEM_NETWORKS = frozenset({"bridge", "host", "none", "ingress", "docker_gwbridge"})
NOT_RESOURCE_IDS = frozenset({"create", "json", "prune"})


def ownership_labels(store: Store, caller: Caller) -> dict[str, str]:
    """The labels that make a resource the caller's and their teams' (stacks use them for their services)."""
    teams = ",".join(str(t) for t in sorted(user_team_ids(store, caller.id)))
    labels = {OWNER_USERS_LABEL: str(caller.id)}
    if teams:
        labels[OWNER_TEAMS_LABEL] = teams
    return labels


def owns(store: Store, caller: Caller, labels: dict | None) -> bool:
    labels = labels or {}
    users = {u.strip() for u in str(labels.get(OWNER_USERS_LABEL, "")).split(",")}
    teams = {t.strip() for t in str(labels.get(OWNER_TEAMS_LABEL, "")).split(",")}
    return str(caller.id) in users or bool(teams & {str(t) for t in user_team_ids(store, caller.id)})


def resource_labels(kind: str, item: dict) -> dict | None:
    if kind == "containers":
        return item.get("Labels") if "Labels" in item else (item.get("Config") or {}).get("Labels")
    if kind == "services":
        return (item.get("Spec") or {}).get("Labels")
    return item.get("Labels")


# Portainer's resource control types for the kinds the proxy guards.
RESOURCE_CONTROL_TYPES = {"containers": 1, "services": 2, "volumes": 3, "networks": 4}


def resource_key(kind: str, item: dict) -> str:
    return str(item.get("Name") if kind == "volumes" else item.get("Id") or item.get("ID") or "")


def resource_control_for(store: Store, kind: str, item: dict) -> dict | None:
    """An administrator's resource control for this resource, which then decides instead of its labels."""
    controls = store.data.get("resource_controls") or {}
    if not controls:
        return None
    wanted_type, key = RESOURCE_CONTROL_TYPES.get(kind), resource_key(kind, item)
    return next((rc for rc in controls.values() if rc["Type"] == wanted_type and rc["ResourceId"] == key), None)


def visible_resource(store: Store, caller: Caller, kind: str, item: dict) -> bool:
    if kind == "networks" and item.get("Name") in SYSTEM_NETWORKS:
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
            data["Volumes"] = [v for v in data.get("Volumes") or [] if visible_resource(store, caller, kind, v)]
        elif isinstance(data, list):
            data = [item for item in data if isinstance(item, dict) and visible_resource(store, caller, kind, item)]
        return json.dumps(data).encode()
    return rewrite


async def filter_owned_tasks(connector: DockerConnector, store: Store, caller: Caller) -> Callable[[bytes], bytes]:
    """A rewrite for the task list that keeps the tasks of the caller's services."""
    services = await connector.request_json("GET", "/services")
    owned = {s.get("ID") for s in services or [] if isinstance(s, dict) and visible_resource(store, caller,
                                                                                             "services", s)}

    def rewrite(raw: bytes) -> bytes:
        try:
            tasks = json.loads(raw)
        except ValueError:
            return raw
        return json.dumps([t for t in tasks if isinstance(t, dict) and t.get("ServiceID") in owned]
                          if isinstance(tasks, list) else tasks).encode()
    return rewrite


async def require_owned(connector: DockerConnector, store: Store, caller: Caller, kind: str, resource_id: str,
                        missing_ok: bool = False) -> dict | None:
    """The resource, when the caller may use it; Forbidden when it belongs to another user or team (or to
    nobody, like everything made outside portainer.py), NotFound when it does not exist."""
    inspect_path = f"/{kind}/{urllib.parse.quote(resource_id, safe='')}" + ("/json" if kind == "containers" else "")
    try:
        item = await connector.request_json("GET", inspect_path)
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


async def require_resource_access(connector: DockerConnector, store: Store, caller: Caller, path: str) -> None:
    """Refuse a call on one resource that belongs to another user or team (and on unowned ones)."""
    parts = API_VERSION_PREFIX.sub("", path).strip("/").split("/")
    if len(parts) < 2 or parts[1] in NOT_RESOURCE_IDS:
        return
    kind, resource_id = parts[0], parts[1]
    if kind == "exec":
        try:
            exec_info = await connector.request_json("GET", f"/exec/{urllib.parse.quote(resource_id)}/json")
        except ApiError:
            return  # the engine answers the call itself with its own 404
        kind, resource_id = "containers", exec_info.get("ContainerID", "")
    elif kind == "tasks":
        task = await connector.request_json("GET", f"/tasks/{urllib.parse.quote(resource_id, safe='')}")
        kind, resource_id = "services", str((task or {}).get("ServiceID", ""))
    if kind in OWNED_KINDS:
        await require_owned(connector, store, caller, kind, resource_id)


def referenced_resources(check: str, body: dict) -> list[tuple[str, str]]:
    """Other resources a create or connect would use: named volumes, networks, another container's
    namespaces or volumes."""
    refs: list[tuple[str, str]] = []
    if check == "container":
        host = body.get("HostConfig") if isinstance(body.get("HostConfig"), dict) else {}
        for bind in host.get("Binds") or []:
            source = str(bind).split(":", 1)[0]
            if source and not _is_host_path(source):
                refs.append(("volumes", source))
        for mount in host.get("Mounts") or []:
            if isinstance(mount, dict) and mount.get("Type", "volume") == "volume" and mount.get("Source"):
                refs.append(("volumes", str(mount["Source"])))
        for source in host.get("VolumesFrom") or []:
            refs.append(("containers", str(source).split(":", 1)[0]))
        for key in ("NetworkMode", "PidMode", "IpcMode"):
            value = str(host.get(key) or "")
            if value.startswith("container:"):
                refs.append(("containers", value[len("container:"):]))
            elif key == "NetworkMode" and value not in ("", "default", "host", "none"):
                refs.append(("networks", value))
        endpoints = (body.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}
        if isinstance(endpoints, dict):
            refs += [("networks", str(name)) for name in endpoints if name not in ("default", "host", "none")]
    elif check == "service":
        spec = ((body.get("TaskTemplate") or {}).get("ContainerSpec") or {})
        for mount in spec.get("Mounts") or []:
            if isinstance(mount, dict) and mount.get("Type", "volume") == "volume" and mount.get("Source"):
                refs.append(("volumes", str(mount["Source"])))
        for network in (body.get("TaskTemplate") or {}).get("Networks") or body.get("Networks") or []:
            if isinstance(network, dict) and network.get("Target"):
                refs.append(("networks", str(network["Target"])))
    elif check == "network_connect" and body.get("Container"):
        refs.append(("containers", str(body["Container"])))
    return refs


async def require_owned_references(connector: DockerConnector, store: Store, caller: Caller, check: str,
                                   body: dict) -> None:
    for kind, resource_id in dict.fromkeys(referenced_resources(check, body)):
        item = await require_owned(connector, store, caller, kind, resource_id, missing_ok=kind == "volumes")
        if item is None:
            # made now, labelled, so that the engine does not make it unowned (and hidden from its user)
            await connector.request_json("POST", "/volumes/create",
                                         {"Name": resource_id, "Labels": ownership_labels(store, caller)})


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
        if rest and ("." in first or ":" in first or first == "localhost"):
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
        store.data.setdefault("registries", {})

    def reload(self) -> None:
        """After a restore: the restored data directory's key and registries."""
        self.passwords = RegistryPasswords(load_or_create_secret(self.store.directory, "registry.key"))
        self.store.data.setdefault("registries", {})

    def get(self, registry_id: int) -> dict:
        registry = self.store.data["registries"].get(str(registry_id))
        if registry is None:
            raise NotFound(f"registry {registry_id} not found")
        return registry

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
            endpoint = self.store.data["endpoints"].get(key)
            if endpoint is None or not can_access_endpoint(self.store, caller, endpoint):
                continue
            if str(caller.id) in (access.get("UserAccessPolicies") or {}):
                return True
            if teams & set(access.get("TeamAccessPolicies") or {}):
                return True
        return False

    def usable(self, caller: Caller | None, registry_id: int, endpoint_id: int | None) -> dict:
        registry = self.get(registry_id)
        if not self.may_use(caller, registry, endpoint_id):
            where = f" on environment {endpoint_id}" if endpoint_id is not None else ""
            raise Forbidden(f"you have no access to registry {registry_id}{where}")
        return registry

    def for_domain(self, domain: str, caller: Caller | None, endpoint_id: int | None) -> dict | None:
        """The registry holding credentials for images from `domain`, if the caller may use one."""
        for registry in sorted(self.store.data["registries"].values(), key=lambda r: r["Id"]):
            if registry_host(registry["URL"]) == domain and self.may_use(caller, registry, endpoint_id):
                return registry
        return None

    def auth_config(self, registry: dict) -> dict:
        """The engine's auth JSON for this registry (what `docker login` would send)."""
        config = {"serveraddress": registry_host(registry["URL"])}
        if registry.get("Authentication"):
            config.update(username=registry.get("Username", ""), password=self.password(registry))
        return config

    def proxy_headers(self, caller: Caller, endpoint_id: int, path: str,
                      headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Replace {"registryId": N} in X-Registry-Auth (pull, push, services) or X-Registry-Config (build) with
        the registry's real credentials, once the caller's access to it on this environment is checked."""
        if not REGISTRY_AUTH_PATHS.match(path):
            return headers
        result = []
        for name, value in headers:
            if name.lower() in ("x-registry-auth", "x-registry-config"):
                registry_id = registry_id_in(decode_registry_header(value))
                if registry_id == 0:  # Portainer's "no registry": pull anonymously
                    value = encode_registry_header({})
                elif registry_id is not None:
                    config = self.auth_config(self.usable(caller, registry_id, endpoint_id))
                    if name.lower() == "x-registry-config":
                        config = {config["serveraddress"]: config}
                    value = encode_registry_header(config)
            result.append((name, value))
        return result

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


def image_status(status: str, message: str = "", **extra) -> dict:
    return {"Status": status, "Message": message, "CheckedAt": now(), **extra}


def creation_body(container: dict, image: dict, engine_info: dict) -> dict:
    """A /containers/create body that rebuilds `container` from its image reference: its own settings kept,
    the old image's and the engine's defaults left out so that the new image's (and the engine's) apply."""
    config = copy.deepcopy(container["Config"])
    defaults = (image or {}).get("Config") or {}
    config["Image"] = container["Config"]["Image"]
    if config.get("Hostname") == container["Id"][:12]:
        config.pop("Hostname")
    for key in ("Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal", "Healthcheck"):
        if key in config and config[key] == defaults.get(key):
            config.pop(key)
    image_env = set(defaults.get("Env") or [])
    config["Env"] = [e for e in config.get("Env") or [] if e not in image_env]
    image_labels = defaults.get("Labels") or {}
    config["Labels"] = {k: v for k, v in (config.get("Labels") or {}).items() if image_labels.get(k) != v}
    for key in ("ExposedPorts", "Volumes"):
        kept = {k: v for k, v in (config.get(key) or {}).items() if k not in (defaults.get(key) or {})}
        config[key] = kept or None
    host = copy.deepcopy(container["HostConfig"])
    # Inspect shows the engine's default cgroup namespace mode as if it had been asked for.
    if host.get("CgroupnsMode") == ("private" if str(engine_info.get("CgroupVersion")) == "2" else "host"):
        host.pop("CgroupnsMode")
    host["Links"] = [f"{link.split(':')[0].lstrip('/')}:{link.split(':')[1].rsplit('/', 1)[-1]}"
                     for link in host.get("Links") or [] if ":" in link] or None
    # Anonymous volumes (image VOLUME, `-v /data`) are named by the engine; mount them by name so data stays.
    covered = {bind.split(":")[1] for bind in host.get("Binds") or [] if bind.count(":") >= 1}
    covered |= {m.get("Target") for m in host.get("Mounts") or []}
    for mount in container.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in covered:
            suffix = "" if mount.get("RW", True) else ":ro"
            host["Binds"] = (host.get("Binds") or []) + [f"{mount['Name']}:{mount['Destination']}{suffix}"]
    networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
    mode = host.get("NetworkMode") or "default"
    body = {**config, "HostConfig": host}
    if mode in networks and mode not in ("default", "bridge", "host", "none"):
        body["NetworkingConfig"] = {"EndpointsConfig": {mode: network_endpoint_config(networks[mode], container)}}
    return body


def network_endpoint_config(network: dict, container: dict) -> dict:
    aliases = [a for a in network.get("Aliases") or [] if a != container["Id"][:12]]
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

    def cached(self, endpoint_id: int, container_id: str) -> dict | None:
        return self.results.get((endpoint_id, container_id))

    async def check(self, endpoint_id: int, container_id: str, fresh_since: float | None = None) -> dict:
        """Compare the digest the container's image was pulled with to the one its tag has now; the registry is
        asked again unless it answered since `fresh_since` (within a minute when None)."""
        connector = self.environments.connector(endpoint_id)
        async with self._engine_calls:
            container = await connector.request_json("GET", f"/containers/{urllib.parse.quote(container_id)}/json")
            image = await connector.request_json("GET", f"/images/{container['Image']}/json")
        result = await self.compare(container["Config"]["Image"], image.get("RepoDigests") or [], fresh_since)
        result.update(ContainerId=container["Id"], Image=container["Config"]["Image"])
        if len(self.results) >= MAX_CACHED_RESULTS:
            self.results.pop(next(iter(self.results)))
        self.results[(endpoint_id, container["Id"])] = result
        if container["Id"] != container_id:
            self.results[(endpoint_id, container_id)] = result
        return result

    async def compare(self, image_name: str, repo_digests: list[str], fresh_since: float | None) -> dict:
        if IMAGE_ID.fullmatch(image_name):
            return image_status(UPDATE_SKIPPED, "the container was made from an image id, not a name")
        reference = ImageReference.parse(image_name)
        if reference.digest:
            return image_status(UPDATE_SKIPPED, "the image is pinned by digest")
        local = {d.split("@", 1)[1] for d in repo_digests if "@" in d
                 and ImageReference.parse(d).name == reference.name}
        if not local:
            return image_status(UPDATE_SKIPPED, "the image was built or loaded here, not pulled from a registry")
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
            running = await connector.request_json("GET", "/containers/json")
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
                       vet: Callable[[dict], Awaitable[None]] | None = None) -> tuple[str, dict]:
        """Pull (optionally), then replace the container by one made from the same settings, keeping its name,
        networks and volumes; the old one is restored if anything fails on the way. `vet` may refuse the
        creation body before anything changes. Answers the old container's id and the new one's inspect."""
        connector = self.environments.connector(endpoint_id)
        container = await connector.request_json("GET", f"/containers/{urllib.parse.quote(container_id)}/json")
        old_id, name = container["Id"], container["Name"].lstrip("/")
        if (container.get("HostConfig") or {}).get("AutoRemove"):
            raise BadRequest(f"container {name} was started with --rm (AutoRemove) and cannot be recreated")
        image_name = container["Config"]["Image"]
        reference = ImageReference.parse(image_name)
        if (endpoint_id, name) in self._recreating:
            raise Conflict(f"container {name} is already being recreated")
        self._recreating.add((endpoint_id, name))
        try:
            if pull and not reference.digest and not IMAGE_ID.fullmatch(image_name):
                await self.pull(connector, reference, image_name, caller, endpoint_id)
            old_image = await connector.request_json("GET", f"/images/{container['Image']}/json")
            body = creation_body(container, old_image, await connector.request_json("GET", "/info"))
            if vet is not None:
                await vet(body)
            new = await self.replace(connector, container, name, body)
        finally:
            self._recreating.discard((endpoint_id, name))
        self.results.pop((endpoint_id, old_id), None)
        self.results.pop((endpoint_id, container_id), None)
        return old_id, new

    async def replace(self, connector: DockerConnector, container: dict, name: str, body: dict) -> dict:
        old_id = container["Id"]
        was_running = bool((container.get("State") or {}).get("Running"))
        parked = f"{name}-old-{old_id[:12]}"
        quoted = urllib.parse.quote
        if was_running:
            grace = (container.get("Config") or {}).get("StopTimeout") or 10
            await connector.request_json("POST", f"/containers/{old_id}/stop", timeout=grace + 30)
        await connector.request_json("POST", f"/containers/{old_id}/rename?name={quoted(parked)}")
        new_id = None
        try:
            created = await connector.request_json("POST", f"/containers/create?name={quoted(name)}", body)
            new_id = created["Id"]
            networks = (container.get("NetworkSettings") or {}).get("Networks") or {}
            primary = (container.get("HostConfig") or {}).get("NetworkMode") or "default"
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
        return await connector.request_json("GET", f"/containers/{new_id}/json")


async def image_update_loop(app: web.Application) -> None:
    """Check every running container on a schedule, then recreate those labelled for auto-update."""
    interval = app[CONFIG].image_check_interval
    if interval <= 0:
        return
    environments = app[ENVIRONMENTS]
    while True:
        await asyncio.sleep(interval)
        for endpoint in list(app[STORE].data["endpoints"].values()):
            if environments.status.get(endpoint["Id"]) != STATUS_UP:
                continue
            try:
                await check_and_auto_update(app, endpoint)
            except ApiError as exc:
                log.debug("image check of environment %s skipped: %s", endpoint["Id"], exc.message)


async def move_resource_control(store: Store, old_id: str, new_id: str) -> None:
    """An administrator's sharing of a container stays with it when it is recreated under a new id."""
    moved = False
    for control in (store.data.get("resource_controls") or {}).values():
        if control.get("Type") == RESOURCE_CONTROL_TYPES["containers"] and control.get("ResourceId") == old_id:
            control["ResourceId"] = new_id
            moved = True
    if moved:
        await store.commit()


async def check_and_auto_update(app: web.Application, endpoint: dict) -> None:
    updates, endpoint_id = app[IMAGE_UPDATES], endpoint["Id"]
    connector = updates.environments.connector(endpoint_id)
    running = await connector.request_json("GET", "/containers/json")
    answers = await updates.check_environment(endpoint_id, [c["Id"] for c in running], fresh=True)
    updates.forget_missing(endpoint_id, {c["Id"] for c in running})
    for container in running:
        labels = container.get("Labels") or {}
        if labels.get(AUTO_UPDATE_LABEL, "").lower() != "true":
            continue
        if answers.get(container["Id"], {}).get("Status") != UPDATE_OUTDATED:
            continue
        name = (container.get("Names") or ["/?"])[0].lstrip("/")
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
        await move_resource_control(app[STORE], container["Id"], new["Id"])
        app[ACTIVITY].record({**entry, "action": f"auto-update: recreated container {name} with the new image "
                                                 f"of {new['Config']['Image']}", "status": 200})
        log.info("auto-update: recreated container %s on environment %s with the new image of %s (%s)", name,
                 endpoint_id, new["Config"]["Image"], answers[container["Id"]].get("RemoteDigest", ""))


# ================================================================================================================
# Docker proxy: /api/endpoints/{id}/docker/{path}, streamed both ways, upgrades passed through
# ================================================================================================================


async def authorize_docker_call(request: web.Request, endpoint: dict, method: str, path: str) -> str | None:
    """Everything that decides whether the caller may make one Docker API call on an environment: the rule
    table, their role there, and ownership of the resource the path names. Routes other than the proxy that
    act on an engine for a user (a web console, stacks) call this too. Returns the call's body check."""
    store, caller = request.app[STORE], caller_of(request)
    role = endpoint_role(store, caller, endpoint)
    if role is None:
        raise Forbidden(f"you have no access to environment {endpoint['Id']}")
    action, check = docker_rule_for(method, path)
    bare = API_VERSION_PREFIX.sub("", path)
    if action not in ROLE_ACTIONS[role]:
        if action == ADMIN:
            raise Forbidden(f"{method} {bare} is reserved for administrators")
        raise Forbidden(f"your role on this environment ({ENV_ROLE_NAMES[role]}) does not allow {method} {bare}")
    if role in OWNERSHIP_BOUND_ROLES:
        await require_resource_access(request.app[ENVIRONMENTS].connector(endpoint["Id"]), store, caller, path)
    return check


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
    return event.get("Type") == "container" and owns(store, caller, (event.get("Actor") or {}).get("Attributes"))


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


async def handle_docker_proxy(request: web.Request) -> web.StreamResponse:
    endpoint_id = path_id(request)
    endpoint = endpoint_for_caller(request, endpoint_id)
    store, caller = request.app[STORE], caller_of(request)
    role = endpoint_role(store, caller, endpoint)
    # The engine gets the path and query exactly as the client encoded them; the rules see them decoded.
    target = PROXY_PREFIX.sub("", request.raw_path, count=1) or "/"
    path = urllib.parse.unquote(target.split("?", 1)[0])
    if ".." in path.split("/") or any(c in path for c in "\r\n\x00"):
        raise BadRequest("invalid Docker API path", "path segments '..' and control characters are not allowed")
    check = await authorize_docker_call(request, endpoint, request.method, path)
    bare = API_VERSION_PREFIX.sub("", path)
    if bare == "/build" and request.query.get("networkmode", "").lower() == "host" and \
            bound_by_security_settings(store, caller, endpoint) and \
            not endpoint_security_settings(endpoint)["allowHostNamespaceForRegularUsers"]:
        raise Forbidden("not allowed for non-administrators on this environment: host namespace (build with the "
                        "host network)", "an administrator can allow it in the environment's security settings")
    connector = request.app[ENVIRONMENTS].connector(endpoint_id)
    ownership_bound = role in OWNERSHIP_BOUND_ROLES
    headers = shared.forwardable_request_headers(request)
    headers = request.app[REGISTRIES].proxy_headers(caller, endpoint_id, API_VERSION_PREFIX.sub("", path), headers)
    body, body_length = shared.request_body_for_relay(request)
    if check is not None:
        raw = await read_body(request) if body is not None else b""
        if not caller.is_admin:
            try:
                parsed = json.loads(raw) if raw.strip() else {}
            except ValueError as exc:
                raise BadRequest("invalid JSON in request body", str(exc)) from None
            if not isinstance(parsed, dict):
                raise BadRequest("request body must be a JSON object")
            if bound_by_security_settings(store, caller, endpoint):
                problems = BODY_CHECKS[check](parsed, endpoint_security_settings(endpoint))
                if problems:
                    raise Forbidden("not allowed for non-administrators on this environment: "
                                    + ", ".join(problems),
                                    "an administrator can allow it in the environment's security settings")
            if ownership_bound:
                await require_owned_references(connector, store, caller, check, parsed)
            if check in LABELLED_CREATES:
                labels = parsed.get(LABELLED_CREATES[check])
                parsed[LABELLED_CREATES[check]] = {**(labels if isinstance(labels, dict) else {}),
                                                   **ownership_labels(store, caller)}
                raw = json.dumps(parsed).encode()
        body, body_length = (raw if raw else None), None
    rewrite = None
    if ownership_bound and request.method == "GET" and bare.strip("/") in OWNED_KINDS + ("containers/json",
                                                                                         "system/df"):
        rewrite = filter_owned_list(store, caller, bare.strip("/").split("/")[0])
    if ownership_bound and request.method == "GET" and bare == "/tasks":
        rewrite = await filter_owned_tasks(connector, store, caller)
    timeout = answer_head_timeout(request.app[CONFIG].proxy_timeout, path, request.query,
                                  streamed_body=body is not None and check is None)
    response = await connector.request(request.method, target, headers, body, body_length, timeout=timeout)
    try:
        if ownership_bound and bare == "/events" and response.status == 200:
            return await relay_owned_events(request, response, store, caller)
        return await shared.relay_response(request, response, rewrite_body=rewrite if response.status == 200 else None)
    except shared.DockerUnreachable as exc:
        log.info("stream from environment %s ended early: %s", endpoint_id, exc)
        raise ConnectionResetError(str(exc)) from None


# ================================================================================================================
# API handlers: system and docs
# ================================================================================================================


@public
async def handle_system_status(request: web.Request) -> web.Response:
    """Version and instance id (public)."""
    return json_response({"Version": VERSION, "InstanceID": request.app[STORE].data["instance_id"]})


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
    return next((u for u in store.data["users"].values() if u["Username"].lower() == wanted), None)


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
    user_id = store.next_id("users")
    user = {"Id": user_id, "Username": username.strip(), "Role": role, "PasswordHash": password_hash,
            "CreationDate": now(), "TokenIssueAt": 0}
    store.data["users"][str(user_id)] = user
    await store.commit()
    return user


def admin_exists(store: Store) -> bool:
    return any(u["Role"] == ROLE_ADMIN for u in store.data["users"].values())


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
    body = await read_json_object(request)
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
    body = await read_json_object(request)
    username, password = body.get("Username"), body.get("Password")
    if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
        raise BadRequest("Username and Password are required")
    store = request.app[STORE]
    user = find_user_by_name(store, username)
    valid = await asyncio.to_thread(verify_password, password, user["PasswordHash"] if user else DUMMY_HASH)
    if not user or not valid:
        limiter.failed(address)
        log.info("failed login for %r from %s", username[:64], address)
        record_auth(request, username, False)
        raise Unauthorized("invalid credentials")
    limiter.succeeded(address)
    record_auth(request, user["Username"], True)
    lifetime = parse_duration(store.data["settings"].get("UserSessionTimeout", "8h"))
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


def get_user(store: Store, user_id: int) -> dict:
    user = store.data["users"].get(str(user_id))
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


def require_self_or_admin(request: web.Request, user_id: int) -> Caller:
    caller = caller_of(request)
    if not caller.is_admin and caller.id != user_id:
        raise Forbidden("you can only see or change your own account")
    return caller


async def handle_users_list(request: web.Request) -> web.Response:
    """All users (administrators and team leaders); a standard user sees only themselves."""
    caller = caller_of(request)
    users = request.app[STORE].data["users"].values()
    # a team leader picks new members from everyone
    everyone = caller.is_admin or is_team_leader(request.app[STORE], caller.id)
    return json_response([user_view(u) for u in users if everyone or u["Id"] == caller.id])


async def handle_user_create(request: web.Request) -> web.Response:
    """Create a user {Username, Password, Role} (administrators)."""
    require_admin(request)
    body = await read_json_object(request)
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
    return json_response(user_view(get_user(request.app[STORE], user_id)))


async def handle_user_update(request: web.Request) -> web.Response:
    """Change a user's Username, Password or Role; only administrators change roles or others' passwords."""
    user_id = path_id(request)
    caller = require_self_or_admin(request, user_id)
    store = request.app[STORE]
    user = get_user(store, user_id)
    body = await read_json_object(request)
    username = field(body, "Username", str, required=False)
    password = field(body, "Password", str, required=False) or field(body, "NewPassword", str, required=False)
    role = field(body, "Role", int, required=False)
    if role is not None and role != user["Role"]:
        if not caller.is_admin:
            raise Forbidden("only administrators can change roles")
        if role not in (ROLE_ADMIN, ROLE_STANDARD):
            raise BadRequest("Role must be 1 (administrator) or 2 (standard user)")
        if user["Role"] == ROLE_ADMIN and sum(u["Role"] == ROLE_ADMIN for u in store.data["users"].values()) == 1:
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
    body = await read_json_object(request)
    current, new = field(body, "Password", str), field(body, "NewPassword", str)
    check_password_strength(new)
    store = request.app[STORE]
    user = get_user(store, user_id)
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
    user = get_user(store, user_id)
    if user["Role"] == ROLE_ADMIN and sum(u["Role"] == ROLE_ADMIN for u in store.data["users"].values()) == 1:
        raise Conflict("cannot delete the last administrator")
    del store.data["users"][str(user_id)]
    for key_id, key in list(store.data["api_keys"].items()):
        if key["UserId"] == user_id:
            del store.data["api_keys"][key_id]
    for membership_id, membership in list(store.data["team_memberships"].items()):
        if membership["UserID"] == user_id:
            del store.data["team_memberships"][membership_id]
    for endpoint in store.data["endpoints"].values():
        (endpoint.get("UserAccessPolicies") or {}).pop(str(user_id), None)
    await store.commit()
    rebuild_api_key_index(request.app)
    return web.Response(status=204)


def api_key_view(key: dict) -> dict:
    return {"id": key["Id"], "userId": key["UserId"], "description": key["Description"],
            "prefix": key["Prefix"], "dateCreated": key["DateCreated"],
            "lastUsed": key.get("_last_used_runtime", key.get("LastUsed", 0))}


def rebuild_api_key_index(app: web.Application) -> None:
    app[API_KEY_INDEX].clear()
    app[API_KEY_INDEX].update({k["Digest"]: k for k in app[STORE].data["api_keys"].values()})


async def handle_token_create(request: web.Request) -> web.Response:
    """Create an API key {password, description} for yourself; the raw key is shown once."""
    user_id = path_id(request)
    caller = caller_of(request)
    if caller.id != user_id:
        raise Forbidden("you can only create API keys for yourself")
    body = await read_json_object(request)
    password = field(body, "password", str)
    description = field(body, "description", str, required=False, default="")[:256]
    store = request.app[STORE]
    if not await asyncio.to_thread(verify_password, password, caller.user["PasswordHash"]):
        raise Forbidden("password is wrong")
    raw = API_KEY_PREFIX + b64url(secrets.token_bytes(32))
    key_id = store.next_id("api_keys")
    key = {"Id": key_id, "UserId": user_id, "Description": description, "Prefix": raw[:7],
           "Digest": api_key_digest(raw), "DateCreated": now(), "LastUsed": 0}
    store.data["api_keys"][str(key_id)] = key
    await store.commit()
    rebuild_api_key_index(request.app)
    return json_response({"rawAPIKey": raw, "apiKey": api_key_view(key)})


async def handle_token_list(request: web.Request) -> web.Response:
    """A user's API keys (never the keys themselves)."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    keys = request.app[STORE].data["api_keys"].values()
    return json_response([api_key_view(k) for k in keys if k["UserId"] == user_id])


async def handle_token_delete(request: web.Request) -> web.Response:
    """Delete one of a user's API keys."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    key_id = path_id(request, "keyId")
    store = request.app[STORE]
    key = store.data["api_keys"].get(str(key_id))
    if key is None or key["UserId"] != user_id:
        raise NotFound(f"API key {key_id} not found")
    del store.data["api_keys"][str(key_id)]
    await store.commit()
    rebuild_api_key_index(request.app)
    return web.Response(status=204)


# ================================================================================================================
# API handlers: teams and team memberships (a team leader manages their own team's members)
# ================================================================================================================

TEAM_LEADER, TEAM_MEMBER = 1, 2


def get_team(store: Store, team_id: int) -> dict:
    team = store.data["teams"].get(str(team_id))
    if team is None:
        raise NotFound(f"team {team_id} not found")
    return team


def is_team_leader(store: Store, user_id: int, team_id: int | None = None) -> bool:
    return any(m["UserID"] == user_id and m["Role"] == TEAM_LEADER and team_id in (None, m["TeamID"])
               for m in store.data["team_memberships"].values())


def team_view(team: dict) -> dict:
    return {"Id": team["Id"], "Name": team["Name"]}


def membership_view(membership: dict) -> dict:
    return {"Id": membership["Id"], "UserID": membership["UserID"], "TeamID": membership["TeamID"],
            "Role": membership["Role"]}


def check_team_name(store: Store, name: Any, team_id: int = 0) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > 128:
        raise BadRequest("Name must be a non-empty string of at most 128 characters")
    if any(t["Name"].lower() == name.strip().lower() and t["Id"] != team_id for t in store.data["teams"].values()):
        raise Conflict(f"a team named {name.strip()!r} already exists")
    return name.strip()


def add_membership(store: Store, user_id: int, team_id: int, role: int) -> dict:
    get_user(store, user_id)
    get_team(store, team_id)
    if role not in (TEAM_LEADER, TEAM_MEMBER):
        raise BadRequest("Role must be 1 (team leader) or 2 (member)")
    if any(m["UserID"] == user_id and m["TeamID"] == team_id for m in store.data["team_memberships"].values()):
        raise Conflict(f"user {user_id} is already a member of team {team_id}")
    membership_id = store.next_id("team_memberships")
    membership = {"Id": membership_id, "UserID": user_id, "TeamID": team_id, "Role": role}
    store.data["team_memberships"][str(membership_id)] = membership
    return membership


async def handle_teams_list(request: web.Request) -> web.Response:
    """All teams (administrators); other users see the teams they belong to."""
    store, caller = request.app[STORE], caller_of(request)
    mine = user_team_ids(store, caller.id)
    return json_response([team_view(t) for t in sorted(store.data["teams"].values(), key=lambda t: t["Id"])
                          if caller.is_admin or t["Id"] in mine])


async def handle_team_create(request: web.Request) -> web.Response:
    """Create a team {Name, TeamLeaders: [user ids]} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    body = await read_json_object(request)
    name = check_team_name(store, body.get("Name"))
    leaders = field(body, "TeamLeaders", list, required=False, default=[])
    for user_id in leaders:
        if not isinstance(user_id, int):
            raise BadRequest("TeamLeaders must be a list of user ids")
        get_user(store, user_id)
    team_id = store.next_id("teams")
    team = {"Id": team_id, "Name": name}
    store.data["teams"][str(team_id)] = team
    for user_id in dict.fromkeys(leaders):
        add_membership(store, user_id, team_id, TEAM_LEADER)
    await store.commit()
    return json_response(team_view(team))


async def handle_team_inspect(request: web.Request) -> web.Response:
    """One team (administrators and its members)."""
    store, caller = request.app[STORE], caller_of(request)
    team = get_team(store, path_id(request))
    if not caller.is_admin and team["Id"] not in user_team_ids(store, caller.id):
        raise Forbidden("you are not a member of this team")
    return json_response(team_view(team))


async def handle_team_update(request: web.Request) -> web.Response:
    """Rename a team {Name} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    team = get_team(store, path_id(request))
    body = await read_json_object(request)
    team["Name"] = check_team_name(store, body.get("Name"), team["Id"])
    await store.commit()
    return json_response(team_view(team))


async def handle_team_delete(request: web.Request) -> web.Response:
    """Delete a team, its memberships and its access to environments (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    team = get_team(store, path_id(request))
    del store.data["teams"][str(team["Id"])]
    for membership_id, membership in list(store.data["team_memberships"].items()):
        if membership["TeamID"] == team["Id"]:
            del store.data["team_memberships"][membership_id]
    for endpoint in store.data["endpoints"].values():
        (endpoint.get("TeamAccessPolicies") or {}).pop(str(team["Id"]), None)
    await store.commit()
    return web.Response(status=204)


async def handle_team_memberships_of_team(request: web.Request) -> web.Response:
    """The memberships of one team (administrators and the team's members)."""
    store, caller = request.app[STORE], caller_of(request)
    team = get_team(store, path_id(request))
    if not caller.is_admin and team["Id"] not in user_team_ids(store, caller.id):
        raise Forbidden("you are not a member of this team")
    return json_response([membership_view(m) for m in store.data["team_memberships"].values()
                          if m["TeamID"] == team["Id"]])


async def handle_user_memberships(request: web.Request) -> web.Response:
    """The team memberships of one user (administrators, or the user themselves)."""
    user_id = path_id(request)
    require_self_or_admin(request, user_id)
    store = request.app[STORE]
    get_user(store, user_id)
    return json_response([membership_view(m) for m in store.data["team_memberships"].values()
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
    return json_response([membership_view(m) for m in store.data["team_memberships"].values()
                          if caller.is_admin or is_team_leader(store, caller.id, m["TeamID"])])


async def handle_membership_create(request: web.Request) -> web.Response:
    """Add a user to a team {UserID, TeamID, Role: 1 leader | 2 member}."""
    store = request.app[STORE]
    body = await read_json_object(request)
    user_id, team_id = field(body, "UserID", int), field(body, "TeamID", int)
    role = field(body, "Role", int, required=False, default=TEAM_MEMBER)
    require_team_manager(request, team_id, role)
    membership = add_membership(store, user_id, team_id, role)
    await store.commit()
    return json_response(membership_view(membership))


def get_membership(store: Store, membership_id: int) -> dict:
    membership = store.data["team_memberships"].get(str(membership_id))
    if membership is None:
        raise NotFound(f"team membership {membership_id} not found")
    return membership


async def handle_membership_update(request: web.Request) -> web.Response:
    """Change a membership's role {Role} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    membership = get_membership(store, path_id(request))
    body = await read_json_object(request)
    role = field(body, "Role", int)
    if role not in (TEAM_LEADER, TEAM_MEMBER):
        raise BadRequest("Role must be 1 (team leader) or 2 (member)")
    membership["Role"] = role
    await store.commit()
    return json_response(membership_view(membership))


async def handle_membership_delete(request: web.Request) -> web.Response:
    """Remove a user from a team (administrators, or a leader of that team for plain members)."""
    store = request.app[STORE]
    membership = get_membership(store, path_id(request))
    require_team_manager(request, membership["TeamID"], membership["Role"])
    del store.data["team_memberships"][str(membership["Id"])]
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
            get_user(store, user_id)
        control["UserAccesses"] = [{"UserId": u, "AccessLevel": 1} for u in dict.fromkeys(users)]
    if teams is not None:
        for team_id in teams:
            if not isinstance(team_id, int):
                raise BadRequest("Teams must be a list of team ids")
            get_team(store, team_id)
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
                          for rc in (request.app[STORE].data.get("resource_controls") or {}).values()])


async def handle_resource_control_create(request: web.Request) -> web.Response:
    """Share a resource {ResourceID, Type (1 container, 2 service, 3 volume, 4 network), Users, Teams, Public,
    AdministratorsOnly} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    body = await read_json_object(request)
    resource_id = field(body, "ResourceID", str)
    kind = field(body, "Type", int)
    if kind not in RESOURCE_CONTROL_TYPES.values():
        raise BadRequest("Type must be 1 (container), 2 (service), 3 (volume) or 4 (network)")
    controls = store.data.setdefault("resource_controls", {})
    if any(rc["Type"] == kind and rc["ResourceId"] == resource_id for rc in controls.values()):
        raise Conflict(f"a resource control for {resource_id} already exists; change it instead")
    control = {"Id": 0, "ResourceId": resource_id, "SubResourceIds": [], "Type": kind, "UserAccesses": [],
               "TeamAccesses": [], "Public": False, "AdministratorsOnly": False, "System": False}
    resource_control_fields(store, body, control)
    control["Id"] = store.next_id("resource_controls")
    controls[str(control["Id"])] = control
    await store.commit()
    return json_response(resource_control_view(control))


def get_resource_control(store: Store, control_id: int) -> dict:
    control = (store.data.get("resource_controls") or {}).get(str(control_id))
    if control is None:
        raise NotFound(f"resource control {control_id} not found")
    return control


async def handle_resource_control_update(request: web.Request) -> web.Response:
    """Change who may use a resource {Users, Teams, Public, AdministratorsOnly} (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    control = get_resource_control(store, path_id(request))
    body = await read_json_object(request)
    changed = copy.deepcopy(control)
    resource_control_fields(store, body, changed)
    control.update(changed)
    await store.commit()
    return json_response(resource_control_view(control))


async def handle_resource_control_delete(request: web.Request) -> web.Response:
    """Remove a resource control; the resource's ownership labels decide again (administrators)."""
    require_admin(request)
    store = request.app[STORE]
    control = get_resource_control(store, path_id(request))
    del store.data["resource_controls"][str(control["Id"])]
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
    return await read_json_object(request), {}


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
    hooks: EndpointKinds = request.app[ENDPOINT_KINDS]
    if creation_type not in hooks.creators:
        raise BadRequest(f"EndpointCreationType {creation_type} is not supported",
                         f"supported: {sorted(hooks.creators)}")
    store = request.app[STORE]
    if any(ep["Name"].lower() == name.strip().lower() for ep in store.data["endpoints"].values()):
        raise Conflict(f"an environment named {name.strip()!r} already exists")
    endpoint = {
        "Id": 0, "Name": name.strip(), "Type": creation_type, "URL": "", "PublicURL": fields.get("PublicURL", ""),
        "GroupId": form_int(fields, "GroupID", 1), "TagIds": [], "UserAccessPolicies": {},
        "TeamAccessPolicies": {}, "SecuritySettings": dict(DEFAULT_SECURITY_SETTINGS), "CreationDate": now(),
        "TLSConfig": {"TLS": form_bool(fields.get("TLS")), "TLSSkipVerify": form_bool(fields.get("TLSSkipVerify"))},
    }
    tag_ids = fields.get("TagIds")
    if isinstance(tag_ids, list):
        endpoint["TagIds"] = [t for t in tag_ids if isinstance(t, int)]
    await hooks.creators[creation_type](request, endpoint, fields, files)
    endpoint["Id"] = store.next_id("endpoints")
    for name_in_form, file_name in (("TLSCACertFile", "ca.pem"), ("TLSCertFile", "cert.pem"),
                                    ("TLSKeyFile", "key.pem")):
        if name_in_form in files:
            directory = request.app[ENVIRONMENTS].tls_directory(endpoint["Id"])
            os.makedirs(directory, mode=0o700, exist_ok=True)
            write_private_file(os.path.join(directory, file_name), files[name_in_form])
    store.data["endpoints"][str(endpoint["Id"])] = endpoint
    await store.commit()
    environments = request.app[ENVIRONMENTS]
    await environments.snapshot(endpoint["Id"])
    return json_response(environments.public_view(endpoint))


async def create_docker_endpoint(request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
    url = fields.get("URL")
    if not isinstance(url, str) or not url.strip():
        raise BadRequest("URL is required, e.g. unix:///var/run/docker.sock or tcp://10.0.0.5:2375")
    endpoint["URL"] = normalise_docker_url(url, ENDPOINT_DOCKER)


async def create_agent_endpoint(request: web.Request, endpoint: dict, fields: dict, files: dict) -> None:
    """Reach the agent, record the fingerprint of its certificate (trusted from now on) and check it accepts us."""
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
    connector = AgentConnector(endpoint, request.app[AGENT_SIGNER], request.app[CONFIG].agent_secret)
    try:
        await connector.request_json("GET", "/version", timeout=15)
    except ApiError as exc:
        if exc.status == 403:
            raise Forbidden(f"the agent refused this server: {exc.message}",
                            "set the same AGENT_SECRET on both sides, or restart the agent to pair it anew") from None
        raise
    finally:
        connector.close()


def register_agent_kind(app: web.Application) -> None:
    """Agent environments: how they are created and how the server connects to them."""
    signer = shared.RequestSigner(shared.load_or_create_signing_key(
        os.path.join(app[STORE].directory, "agent_signature.pem")))
    app[AGENT_SIGNER] = signer
    secret = app[CONFIG].agent_secret
    app[ENVIRONMENTS].connector_kinds[ENDPOINT_AGENT] = lambda ep: AgentConnector(ep, signer, secret)
    app[ENDPOINT_KINDS].creators[ENDPOINT_AGENT] = create_agent_endpoint


class EndpointKinds:
    """What each EndpointCreationType needs at creation; the agent and edge kinds register themselves here."""

    def __init__(self):
        self.creators: dict[int, Callable[[web.Request, dict, dict, dict], Awaitable[None]]] = {
            ENDPOINT_DOCKER: create_docker_endpoint,
        }


def visible_endpoints(request: web.Request) -> list[dict]:
    store, caller = request.app[STORE], caller_of(request)
    return [ep for ep in store.data["endpoints"].values() if can_access_endpoint(store, caller, ep)]


async def handle_endpoints_list(request: web.Request) -> web.Response:
    """Environments the caller may use; ?search= filters by name or URL, ?start=&limit= pages."""
    endpoints = sorted(visible_endpoints(request), key=lambda ep: ep["Id"])
    search = request.query.get("search", "").lower()
    if search:
        endpoints = [ep for ep in endpoints if search in ep["Name"].lower() or search in ep.get("URL", "").lower()]
    types = request.query.getall("types", [])
    if types:
        endpoints = [ep for ep in endpoints if str(ep["Type"]) in types]
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
    if not raw.isdigit():
        raise BadRequest(f"query parameter {name!r} must be a non-negative integer")
    return int(raw)


async def handle_endpoint_inspect(request: web.Request) -> web.Response:
    """One environment with its status and latest snapshot."""
    endpoint = endpoint_for_caller(request, path_id(request))
    return json_response(request.app[ENVIRONMENTS].public_view(endpoint))


ENDPOINT_EDITABLE = {"Name": str, "PublicURL": str, "GroupID": int, "TagIds": list, "UserAccessPolicies": dict,
                     "TeamAccessPolicies": dict, "URL": str, "TLS": bool, "TLSSkipVerify": bool}


async def handle_endpoint_update(request: web.Request) -> web.Response:
    """Change an environment's name, URL, TLS options, tags or access policies (administrators)."""
    require_admin(request)
    endpoint_id = path_id(request)
    environments = request.app[ENVIRONMENTS]
    endpoint = environments.get(endpoint_id)
    body = await read_json_object(request)
    changes = {}
    for name, kind in ENDPOINT_EDITABLE.items():
        value = field(body, name, kind, required=False)
        if value is not None:
            changes[name] = value
    if "Name" in changes:
        if not changes["Name"].strip():
            raise BadRequest("Name cannot be empty")
        store = request.app[STORE]
        if any(ep["Name"].lower() == changes["Name"].strip().lower() and ep["Id"] != endpoint_id
               for ep in store.data["endpoints"].values()):
            raise Conflict(f"an environment named {changes['Name'].strip()!r} already exists")
    if "URL" in changes and endpoint["Type"] in (ENDPOINT_DOCKER, ENDPOINT_AGENT):
        changes["URL"] = normalise_docker_url(changes["URL"], endpoint["Type"])
    for policies in ("UserAccessPolicies", "TeamAccessPolicies"):
        if policies in changes:
            for key, value in changes[policies].items():
                if not str(key).isdigit() or not isinstance(value, dict):
                    raise BadRequest(f"{policies} must map ids to objects such as {{\"RoleId\": 0}}")
                if value.get("RoleId", 0) not in (0, *ROLE_ACTIONS):
                    raise BadRequest("RoleId must be one of 1 (environment administrator), 2 (operator), "
                                     "3 (helpdesk), 4 (standard user), 5 (read-only user)")
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
    await request.app[STORE].commit()
    environments.forget(endpoint_id)
    return json_response(environments.public_view(endpoint))


async def handle_endpoint_delete(request: web.Request) -> web.Response:
    """Remove an environment from this server (nothing on the engine is touched)."""
    require_admin(request)
    endpoint_id = path_id(request)
    environments = request.app[ENVIRONMENTS]
    environments.get(endpoint_id)
    del request.app[STORE].data["endpoints"][str(endpoint_id)]
    await request.app[STORE].commit()
    environments.forget(endpoint_id)
    environments.status.pop(endpoint_id, None)
    environments.snapshots.pop(endpoint_id, None)
    return web.Response(status=204)


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
# API handlers: settings
# ================================================================================================================

SETTINGS_TYPES = {"UserSessionTimeout": str, "EnableTelemetry": bool, "LogoURL": str, "SnapshotInterval": str,
                  "EdgeAgentCheckinInterval": int, "ActivityLogRetentionDays": int}


def current_settings(store: Store) -> dict:
    return {**DEFAULT_SETTINGS, **store.data["settings"]}


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
    """Change settings (administrators); unknown keys and wrong types are refused."""
    require_admin(request)
    body = await read_json_object(request)
    unknown = sorted(set(body) - set(SETTINGS_TYPES))
    if unknown:
        raise BadRequest(f"unknown settings: {', '.join(unknown)}")
    changes = {name: field(body, name, kind) for name, kind in SETTINGS_TYPES.items() if name in body}
    if "UserSessionTimeout" in changes and not re.fullmatch(r"[0-9]{1,7}[smhd]?", changes["UserSessionTimeout"]):
        raise BadRequest("UserSessionTimeout must look like 8h, 30m or 3600s")
    if not 0 <= changes.get("ActivityLogRetentionDays", 0) <= 36500:
        raise BadRequest("ActivityLogRetentionDays must be between 0 (keep forever) and 36500")
    if changes.get("EnableTelemetry") and request.app[CONFIG].no_analytics:
        raise BadRequest("analytics are disabled by --no-analytics")
    store = request.app[STORE]
    store.data["settings"].update(changes)
    await store.commit()
    return json_response(current_settings(store))


# ================================================================================================================
# API handlers: registries, their access per environment, and browsing their repositories
# ================================================================================================================


def registry_view(registry: dict) -> dict:
    """A registry as the API shows it: never its password."""
    view = {k: v for k, v in registry.items() if not k.startswith("_")}
    view["Password"] = ""
    return view


def registry_access(body: dict) -> dict:
    """One environment's access to a registry, {UserAccessPolicies, TeamAccessPolicies, Namespaces}, checked."""
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
               for r in store.data["registries"].values()):
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
    listed = sorted(request.app[STORE].data["registries"].values(), key=lambda r: r["Id"])
    return json_response([registry_view(r) for r in listed if registries.may_use(caller, r)])


async def handle_registry_create(request: web.Request) -> web.Response:
    """Add a registry {Name, Type, URL, Authentication, Username, Password} (administrators)."""
    require_admin(request)
    body = await read_json_object(request)
    store = request.app[STORE]
    registry = {"Id": 0, "Name": "", "Type": REGISTRY_CUSTOM, "URL": "", "BaseURL": "", "Authentication": False,
                "Username": "", "TLSSkipVerify": False, "RegistryAccesses": {}}
    await registry_fields(request, registry, body, creating=True)
    registry["Id"] = store.next_id("registries")
    store.data["registries"][str(registry["Id"])] = registry
    await store.commit()
    return json_response(registry_view(registry))


async def handle_registry_inspect(request: web.Request) -> web.Response:
    """One registry (its password never shown)."""
    registry = request.app[REGISTRIES].usable(caller_of(request), path_id(request), None)
    return json_response(registry_view(registry))


async def handle_registry_update(request: web.Request) -> web.Response:
    """Change a registry (administrators); an empty or absent Password keeps the current one."""
    require_admin(request)
    registry = request.app[REGISTRIES].get(path_id(request))
    body = await read_json_object(request)
    changed = copy.deepcopy(registry)
    await registry_fields(request, changed, body, creating=False)
    registry.clear()
    registry.update(changed)
    await request.app[STORE].commit()
    return json_response(registry_view(registry))


async def handle_registry_delete(request: web.Request) -> web.Response:
    """Remove a registry and its credentials (administrators)."""
    require_admin(request)
    registry_id = path_id(request)
    request.app[REGISTRIES].get(registry_id)
    del request.app[STORE].data["registries"][str(registry_id)]
    await request.app[STORE].commit()
    return web.Response(status=204)


async def handle_endpoint_registries(request: web.Request) -> web.Response:
    """The registries you may use on one environment."""
    endpoint = endpoint_for_caller(request, path_id(request))
    caller, registries = caller_of(request), request.app[REGISTRIES]
    listed = sorted(request.app[STORE].data["registries"].values(), key=lambda r: r["Id"])
    return json_response([registry_view(r) for r in listed if registries.may_use(caller, r, endpoint["Id"])])


async def handle_endpoint_registry_access(request: web.Request) -> web.Response:
    """Who may use a registry on one environment: {UserAccessPolicies, TeamAccessPolicies} (administrators)."""
    require_admin(request)
    endpoint_id = path_id(request)
    request.app[ENVIRONMENTS].get(endpoint_id)
    registry = request.app[REGISTRIES].get(path_id(request, "registryId"))
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
        running = await request.app[ENVIRONMENTS].connector(endpoint["Id"]).request_json("GET", "/containers/json")
        owned = [c["Id"] for c in running if visible_resource(store, caller, "containers", c)]
        ids = owned if ids is None else [i for i in ids if any(o.startswith(i) for o in owned) and len(i) >= 12]
    return json_response(await request.app[IMAGE_UPDATES].check_environment(endpoint["Id"], ids, fresh))


async def handle_container_recreate(request: web.Request) -> web.Response:
    """Recreate a container {PullImage}: pull its image's tag, then replace it keeping settings and data."""
    endpoint = endpoint_for_caller(request, path_id(request))
    body = await read_json_object(request) if request.can_read_body else {}
    pull = field(body, "PullImage", bool, required=False, default=False)
    container_id = request.match_info["containerId"]
    store, caller = request.app[STORE], caller_of(request)
    # The caller must be allowed each engine call a recreate makes, as through the proxy.
    for method, call in (("GET", f"/containers/{container_id}/json"), ("POST", f"/containers/{container_id}/stop"),
                         ("POST", f"/containers/{container_id}/rename"), ("DELETE", f"/containers/{container_id}"),
                         ("POST", "/containers/create")) + ((("POST", "/images/create"),) if pull else ()):
        await authorize_docker_call(request, endpoint, method, call)

    async def vet(creation: dict) -> None:
        if bound_by_security_settings(store, caller, endpoint):
            problems = BODY_CHECKS["container"](creation, endpoint_security_settings(endpoint))
            if problems:
                raise Forbidden("not allowed for non-administrators on this environment: " + ", ".join(problems),
                                "an administrator can allow it in the environment's security settings")
        if endpoint_role(store, caller, endpoint) in OWNERSHIP_BOUND_ROLES:
            connector = request.app[ENVIRONMENTS].connector(endpoint["Id"])
            await require_owned_references(connector, store, caller, "container", creation)

    updates = request.app[IMAGE_UPDATES]
    old_id, new = await updates.recreate(endpoint["Id"], container_id, pull, caller, vet)
    await move_resource_control(store, old_id, new["Id"])
    return json_response(new)


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


async def handle_backup(request: web.Request) -> web.Response:
    """Download a backup of the data directory {password}; with a password it is encrypted (administrators)."""
    require_admin(request)
    body = await read_json(request) if request.body_exists else {}
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    password = field(body, "password", str, required=False, default="")
    store = request.app[STORE]
    await request.app[ACTIVITY].flush()
    document = json.dumps(store.data, separators=(",", ":")).encode()  # one consistent moment of the store
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
    log.info("restored a backup: %d users, %d environments", len(store.data["users"]), len(store.data["endpoints"]))
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
    analytics = store.data.setdefault("analytics", {})
    analytics.setdefault("InstanceID", str(uuid.uuid4()))  # not the public instance id: it cannot be linked
    by_type: dict[str, int] = {}
    for endpoint in store.data["endpoints"].values():
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
    store.data["analytics"]["LastSent"] = now()
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
    stored = app[STORE].data.get("analytics", {}).get("LastSent", 0)
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
                          "LastSent": app[STORE].data.get("analytics", {}).get("LastSent", 0),
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
# UI assets: the embedded web interface (no CDN, no build step), served compressed with ETag
# ================================================================================================================

UI_INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>portainer.py</title><link rel="stylesheet" href="/assets/app.css"><link rel="icon" href="data:,">
</head><body><div id="app" aria-live="polite"></div><script src="/assets/app.js"></script></body></html>
"""

UI_CSS = """
:root{--bg:#f5f6f8;--panel:#fff;--text:#1d2330;--muted:#5f6b7a;--accent:#1366d6;--danger:#c62828;--ok:#2e7d32;
--border:#dde1e7;--warn:#b26a00}
[data-theme=dark]{--bg:#12151b;--panel:#1b2029;--text:#e5e9f0;--muted:#9aa4b2;--accent:#5b9bff;--border:#2c3340;
--danger:#ef5350;--ok:#66bb6a;--warn:#ffb74d}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;
background:var(--bg);color:var(--text)}a{color:var(--accent)}
header{display:flex;align-items:center;gap:16px;padding:10px 18px;background:var(--panel);
border-bottom:1px solid var(--border)}header .brand{font-weight:700}header nav{display:flex;gap:12px;flex-wrap:wrap}
header .spacer{flex:1}main{padding:18px;max-width:1400px;margin:0 auto}
.card{background:var(--panel);border:1px solid var(--border);border-radius:8px;padding:16px;margin-bottom:16px}
.auth{max-width:380px;margin:8vh auto}label{display:block;margin:10px 0 4px;color:var(--muted)}
input,select,textarea{width:100%;padding:8px;border:1px solid var(--border);border-radius:6px;background:var(--bg);
color:var(--text);font:inherit}button{padding:7px 14px;border-radius:6px;border:1px solid var(--border);
background:var(--panel);color:var(--text);cursor:pointer;font:inherit}button.primary{background:var(--accent);
border-color:var(--accent);color:#fff}button.danger{color:var(--danger)}button:disabled{opacity:.5}
table{width:100%;border-collapse:collapse}th,td{text-align:left;padding:7px 8px;border-bottom:1px solid var(--border)}
th{color:var(--muted);font-weight:600;cursor:pointer;user-select:none}.error{color:var(--danger);margin:8px 0}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;border:1px solid var(--border)}
.up,.running{color:var(--ok)}.down,.exited{color:var(--danger)}.paused{color:var(--warn)}
.badge.outdated{color:var(--warn);border-color:var(--warn)}.badge.updated{color:var(--ok)}input.inline{width:auto}
fieldset{border:1px solid var(--border);border-radius:6px;margin:10px 0}
.toolbar{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin-bottom:12px}.toolbar input{max-width:260px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
.stat{font-size:26px;font-weight:700}.muted{color:var(--muted)}pre{white-space:pre-wrap;word-break:break-all}
label.check{display:flex;gap:8px;align-items:center;color:var(--text)}label.check input{width:auto}
@media (max-width:700px){header{flex-wrap:wrap}main{padding:8px}td,th{padding:5px}.hide-sm{display:none}}
"""

UI_JS = r"""
'use strict';
const $app = document.getElementById('app');
let csrf = sessionStorage.getItem('csrf') || '';
let me = null;
const esc = s => String(s ?? '').replace(/[&<>"']/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c]));
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (csrf && method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body),
                               credentials: 'same-origin'});
  const t = r.headers.get('X-CSRF-Token'); if (t) { csrf = t; sessionStorage.setItem('csrf', t); }
  const text = await r.text(); let data = null; try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (!r.ok) { const err = new Error((data && data.message) || r.statusText); err.status = r.status; throw err; }
  return data;
}
function theme() { document.documentElement.dataset.theme = localStorage.getItem('theme') || 'light'; }
function toggleTheme() { localStorage.setItem('theme', (localStorage.getItem('theme') === 'dark') ? 'light' : 'dark'); theme(); }
function shell(content) {
  return `<header><span class="brand">portainer.py</span><nav><a href="#/home">Home</a>` +
    (me && me.Role === 1 ? `<a href="#/users">Users</a><a href="#/settings">Settings</a>` : '') +
    `<a href="#/teams">Teams</a>` +
    (me && me.Role === 1 ? `<a href="#/resource-controls">Sharing</a><a href="#/activity">Activity</a><a href="#/backup">Backup</a>` : '') +
    `<a href="#/registries">Registries</a><a href="#/account">Account</a></nav><span class="spacer"></span>
    <button id="theme" title="Switch light/dark theme">Theme</button><span class="muted">${esc(me && me.Username)}</span>
    <button id="logout">Log out</button></header><main>${content}</main>`;
}
function bindShell() {
  document.getElementById('theme').onclick = toggleTheme;
  document.getElementById('logout').onclick = async () => { await api('POST', '/api/auth/logout').catch(() => {});
    me = null; sessionStorage.removeItem('csrf'); location.hash = '#/login'; };
}
function formError(form, err) { form.querySelector('.error').textContent = err.message; }

async function pageSetup() {
  const pub = await api('GET', '/api/settings/public');
  $app.innerHTML = `<div class="card auth"><h2>Create the administrator</h2><form id="f">
    <label for="u">Username</label><input id="u" name="Username" value="admin" autocomplete="username" required>
    <label for="p">Password (12 characters or more)</label><input id="p" type="password" name="Password" minlength="12" autocomplete="new-password" required>
    ${pub.AnalyticsAvailable ? `<label><input type="checkbox" id="analytics" style="width:auto"> Send anonymous usage statistics (off unless you tick it)</label>` : ''}
    <div class="error" role="alert"></div><button class="primary" type="submit">Create user</button></form>
    <p><a href="#/restore">Restore from a backup instead</a></p></div>`;
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/users/admin/init', {Username: f.u.value, Password: f.p.value});
      await api('POST', '/api/auth', {Username: f.u.value, Password: f.p.value});
      const box = document.getElementById('analytics');
      if (box && box.checked) await api('PUT', '/api/settings', {EnableTelemetry: true});
      location.hash = '#/home'; route(); } catch (err) { formError(f, err); } };
}
async function pageLogin() {
  $app.innerHTML = `<div class="card auth"><h2>Log in to portainer.py</h2><form id="f">
    <label for="u">Username</label><input id="u" autocomplete="username" required>
    <label for="p">Password</label><input id="p" type="password" autocomplete="current-password" required>
    <div class="error" role="alert"></div><button class="primary" type="submit">Log in</button></form></div>`;
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault();
    try { await api('POST', '/api/auth', {Username: f.u.value, Password: f.p.value}); location.hash = '#/home'; route(); }
    catch (err) { formError(f, err); } };
}
async function pageHome() {
  const eps = await api('GET', '/api/endpoints');
  const kinds = {1: 'Docker', 2: 'Agent', 4: 'Edge agent'};
  $app.innerHTML = shell(`<div class="toolbar"><h2 style="margin:0">Environments</h2><span class="spacer"></span>
    ${me.Role === 1 ? '<a href="#/environments/new">Add environment</a>' : ''}
    <input id="q" placeholder="Search environments" aria-label="Search environments"></div>
    <div id="list"></div>`);
  bindShell();
  const draw = () => { const q = document.getElementById('q').value.toLowerCase();
    document.getElementById('list').innerHTML = eps.filter(ep => ep.Name.toLowerCase().includes(q) || ep.URL.toLowerCase().includes(q)).map(ep => {
      const s = ep.Snapshots[0] || {};
      return `<div class="card env"><a href="#/env/${ep.Id}/containers"><b>${esc(ep.Name)}</b></a>
        <span class="badge ${ep.Status === 1 ? 'up' : 'down'}">${ep.Status === 1 ? 'up' : 'down'}</span>
        <span class="badge">${kinds[ep.Type] || ep.Type}</span> <span class="muted">${esc(ep.URL)}</span>
        <div class="muted">Docker ${esc(s.DockerVersion || '?')} · ${s.RunningContainerCount ?? 0} running ·
        ${s.StoppedContainerCount ?? 0} stopped · ${s.ImageCount ?? 0} images · ${s.VolumeCount ?? 0} volumes ·
        ${s.StackCount ?? 0} stacks${s.AgentVersion ? ` · agent ${esc(s.AgentVersion)}` : ''} ·
        <a href="#/env/${ep.Id}/volumes">volumes</a></div>
        ${ep.Agent ? `<div class="muted">TLS certificate SHA-256 <code>${esc(ep.Agent.CertificateFingerprint)}</code></div>` : ''}
        ${me.Role === 1 ? `<div><a href="#/env/${ep.Id}/access">Access</a> ·
        <a href="#/env/${ep.Id}/security">Security settings</a></div>` : ''}
        </div>`; }).join('') || '<p class="muted">No environment matches.</p>'; };
  document.getElementById('q').oninput = draw; draw();
}
async function pageContainers(id) {
  const base = `/api/endpoints/${id}/docker`;
  let rows = await api('GET', `${base}/containers/json?all=1`);
  let sortKey = 'name', asc = true;
  const updates = imageUpdates(id, () => draw(), async () => { rows = await api('GET', `${base}/containers/json?all=1`); draw(); });
  $app.innerHTML = shell(`<div class="toolbar"><h2 style="margin:0">Containers</h2>
    <input id="q" placeholder="Filter" aria-label="Filter containers">
    ${['start','stop','restart','kill','pause','unpause','remove'].map(a => `<button data-act="${a}" ${a==='remove'?'class="danger"':''}>${a}</button>`).join('')}
    <button id="check-updates">Check for image updates</button><div class="error" role="alert" id="err"></div></div>
    <table><thead><tr><th><input type="checkbox" id="all" aria-label="Select all" style="width:auto"></th>
    <th data-k="name">Name</th><th data-k="state">State</th><th data-k="image">Image</th>
    <th class="hide-sm" data-k="created">Created</th><th class="hide-sm">Ports</th><th>Image update</th></tr></thead><tbody id="tb"></tbody></table>`);
  bindShell();
  const name = c => (c.Names[0] || '').replace(/^\//, '');
  const key = {name, state: c => c.State, image: c => c.Image, created: c => c.Created};
  const draw = () => { const q = document.getElementById('q').value.toLowerCase();
    const list = rows.filter(c => (name(c) + ' ' + c.Image + ' ' + c.State).toLowerCase().includes(q))
      .sort((a, b) => { const x = key[sortKey](a), y = key[sortKey](b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
    document.getElementById('tb').innerHTML = list.map(c => `<tr><td><input type="checkbox" class="sel" value="${esc(c.Id)}" aria-label="select ${esc(name(c))}" style="width:auto"></td>
      <td>${esc(name(c))}</td><td class="${esc(c.State)}">${esc(c.State)}</td><td>${esc(c.Image)}</td>
      <td class="hide-sm">${new Date(c.Created * 1000).toLocaleString()}</td>
      <td class="hide-sm">${(c.Ports || []).filter(p => p.PublicPort).map(p => `<a href="http://${location.hostname}:${p.PublicPort}" target="_blank" rel="noopener">${p.PublicPort}:${p.PrivatePort}</a>`).join(' ')}</td>
      <td>${updates.cell(c)}</td></tr>`).join(''); updates.bind(); };
  document.getElementById('q').oninput = draw;
  document.querySelectorAll('th[data-k]').forEach(th => th.onclick = () => { asc = sortKey === th.dataset.k ? !asc : true; sortKey = th.dataset.k; draw(); });
  document.getElementById('all').onchange = e => document.querySelectorAll('.sel').forEach(b => b.checked = e.target.checked);
  document.querySelectorAll('[data-act]').forEach(b => b.onclick = async () => {
    const ids = [...document.querySelectorAll('.sel:checked')].map(x => x.value); const err = document.getElementById('err'); err.textContent = '';
    for (const cid of ids) { try { if (b.dataset.act === 'remove') await api('DELETE', `${base}/containers/${cid}?force=1`);
      else await api('POST', `${base}/containers/${cid}/${b.dataset.act}`); } catch (e) { err.textContent = e.message; } }
    rows = await api('GET', `${base}/containers/json?all=1`); draw(); });
  document.getElementById('check-updates').onclick = () => updates.load(true);
  draw(); updates.load(false);
}
async function pageAddEnvironment() {
  $app.innerHTML = shell(`<div class="card"><h2>Add environment</h2><form id="f">
    <label for="kind">Environment type</label><select id="kind"><option value="2">Agent (agent.py on the node, port 9001)</option>
    <option value="1">Docker API (unix:// or tcp:// URL)</option></select>
    <label for="n">Name</label><input id="n" required>
    <label for="url">URL</label><input id="url" placeholder="10.0.0.5:9001" required>
    <label for="secret">Agent secret (only when the agent runs with AGENT_SECRET)</label><input id="secret" type="password" autocomplete="off">
    <div class="error" role="alert"></div><button class="primary">Add environment</button></form><div id="added"></div></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault();
    const body = {Name: f.n.value, EndpointCreationType: +f.kind.value, URL: f.url.value};
    if (f.secret.value) body.AgentSecret = f.secret.value;
    try { const ep = await api('POST', '/api/endpoints', body); formError(f, {message: ''});
      document.getElementById('added').innerHTML = `<p>Added <a href="#/env/${ep.Id}/containers">${esc(ep.Name)}</a>.</p>` +
        (ep.Agent ? `<p>Check that the agent's certificate has this SHA-256 fingerprint; it is trusted from now on:</p><pre>${esc(ep.Agent.CertificateFingerprint)}</pre>` : '');
    } catch (err) { formError(f, err); } };
}
async function agentFetch(method, path, node, body) {
  const headers = {}; if (node) headers['X-PortainerAgent-Target'] = node;
  if (csrf && method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, {method, headers, body, credentials: 'same-origin'});
  if (!r.ok) { let msg = r.statusText; try { msg = (await r.json()).message || msg; } catch (e) {} const err = new Error(msg); err.status = r.status; throw err; }
  return r;
}
async function pageVolumes(id) {
  const data = await api('GET', `/api/endpoints/${id}/docker/volumes`);
  const node = v => (v.Portainer && v.Portainer.Agent && v.Portainer.Agent.NodeName) || '';
  $app.innerHTML = shell(`<div class="card"><h2>Volumes</h2><table><tr><th>Name</th><th>Driver</th><th>Node</th><th></th></tr>
    ${(data.Volumes || []).map(v => `<tr><td>${esc(v.Name)}</td><td>${esc(v.Driver)}</td><td>${esc(node(v))}</td>
    <td><a href="#/env/${id}/volumes/${encodeURIComponent(v.Name)}/browse?node=${encodeURIComponent(node(v))}">browse</a></td></tr>`).join('')}</table>
    ${(data.Warnings || []).map(w => `<p class="error">${esc(w)}</p>`).join('')}
    <p class="muted">Browsing works on agent environments.</p></div>`);
  bindShell();
}
async function pageBrowse(id, volume, node, path) {
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
async function pageAccount() {
  const keys = await api('GET', `/api/users/${me.Id}/tokens`);
  $app.innerHTML = shell(`<div class="card"><h2>Account: ${esc(me.Username)}</h2><h3>API keys</h3>
    <table><tr><th>Description</th><th>Prefix</th><th></th></tr>${keys.map(k => `<tr><td>${esc(k.description)}</td>
    <td>${esc(k.prefix)}…</td><td><button class="danger" data-del="${k.id}">Remove</button></td></tr>`).join('')}</table>
    <form id="f"><label for="d">Description</label><input id="d" required><label for="p">Your password</label>
    <input id="p" type="password" required><div class="error" role="alert"></div>
    <button class="primary">Add API key</button></form><pre id="raw"></pre></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); try { const r = await api('POST', `/api/users/${me.Id}/tokens`, {description: f.d.value, password: f.p.value});
    document.getElementById('raw').textContent = 'Copy this key now, it is shown once: ' + r.rawAPIKey; } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/users/${me.Id}/tokens/${b.dataset.del}`); pageAccount(); });
}
async function pageUsers() {
  const users = await api('GET', '/api/users');
  $app.innerHTML = shell(`<div class="card"><h2>Users</h2><table><tr><th>Name</th><th>Role</th><th></th></tr>
    ${users.map(u => `<tr><td>${esc(u.Username)}</td><td>${u.Role === 1 ? 'administrator' : 'standard user'}</td>
    <td>${u.Id !== me.Id ? `<button class="danger" data-del="${u.Id}">Remove</button>` : ''}</td></tr>`).join('')}</table>
    <form id="f"><h3>Add user</h3><label for="u">Username</label><input id="u" required><label for="p">Password</label>
    <input id="p" type="password" minlength="12" required><label for="r">Role</label><select id="r"><option value="2">standard user</option>
    <option value="1">administrator</option></select><div class="error" role="alert"></div><button class="primary">Create user</button></form></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); try { await api('POST', '/api/users', {Username: f.u.value, Password: f.p.value, Role: +f.r.value}); pageUsers(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/users/${b.dataset.del}`); pageUsers(); });
}
async function pageSettings() {
  const s = await api('GET', '/api/settings'); const pub = await api('GET', '/api/settings/public');
  $app.innerHTML = shell(`<div class="card"><h2>Settings</h2><form id="f"><label for="t">Session lifetime</label>
    <input id="t" value="${esc(s.UserSessionTimeout)}">
    ${pub.AnalyticsAvailable ? `<label><input type="checkbox" id="a" style="width:auto" ${s.EnableTelemetry ? 'checked' : ''}> Send anonymous usage statistics</label>` : ''}
    <div class="error" role="alert"></div><button class="primary">Save</button></form></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const body = {UserSessionTimeout: f.t.value};
    const a = document.getElementById('a'); if (a) body.EnableTelemetry = a.checked;
    try { await api('PUT', '/api/settings', body); formError(f, {message: 'Saved.'}); } catch (err) { formError(f, err); } };
  await settingsAuditPanel();
}
const ENV_ROLES = {1: 'Environment administrator', 2: 'Operator', 3: 'Helpdesk', 4: 'Standard user', 5: 'Read-only user'};
const SECURITY_SWITCHES = {
  allowBindMountsForRegularUsers: 'Allow bind mounts of host paths', allowPrivilegedModeForRegularUsers: 'Allow privileged mode',
  allowHostNamespaceForRegularUsers: 'Allow host namespaces (PID, network, IPC)', allowDeviceMappingForRegularUsers: 'Allow device mapping',
  allowContainerCapabilitiesForRegularUsers: 'Allow added capabilities', allowSysctlSettingForRegularUsers: 'Allow sysctl settings',
  allowStackManagementForRegularUsers: 'Allow stack creation and changes', allowVolumeBrowserForRegularUsers: 'Allow the volume browser',
  enableHostManagementFeatures: 'Enable host management features'};
function roleOptions(selected, roles) {
  return Object.entries(roles).map(([v, n]) => `<option value="${v}" ${+v === +selected ? 'selected' : ''}>${esc(n)}</option>`).join('');
}
async function pageTeams() {
  const [teams, users] = await Promise.all([api('GET', '/api/teams'), api('GET', '/api/users')]);
  const members = await Promise.all(teams.map(t => api('GET', `/api/teams/${t.Id}/memberships`).catch(() => [])));
  const userName = id => (users.find(u => u.Id === id) || {}).Username || `user ${id}`;
  const admin = me.Role === 1;
  $app.innerHTML = shell(`<div class="card"><h2>Teams</h2><table><tr><th>Team</th><th>Members</th><th></th></tr>
    ${teams.map((t, i) => `<tr><td><a href="#/teams/${t.Id}">${esc(t.Name)}</a></td>
      <td>${members[i].map(m => esc(userName(m.UserID)) + (m.Role === 1 ? ' <span class="badge">leader</span>' : '')).join(', ')}</td>
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
async function pageTeam(id) {
  const [team, memberships, users] = await Promise.all([api('GET', `/api/teams/${id}`), api('GET', `/api/teams/${id}/memberships`), api('GET', '/api/users')]);
  const admin = me.Role === 1;
  const leads = memberships.some(m => m.UserID === me.Id && m.Role === 1);
  const userName = uid => (users.find(u => u.Id === uid) || {}).Username || `user ${uid}`;
  const outside = users.filter(u => !memberships.some(m => m.UserID === u.Id));
  $app.innerHTML = shell(`<div class="card"><h2>Team ${esc(team.Name)}</h2><table><tr><th>User</th><th>Role in the team</th><th></th></tr>
    ${memberships.map(m => `<tr><td>${esc(userName(m.UserID))}</td><td>${admin ? `<select data-role="${m.Id}" aria-label="role of ${esc(userName(m.UserID))}">
      ${roleOptions(m.Role, {1: 'Team leader', 2: 'Member'})}</select>` : (m.Role === 1 ? 'Team leader' : 'Member')}</td>
      <td>${admin || (leads && m.Role === 2) ? `<button class="danger" data-del="${m.Id}">Remove from team</button>` : ''}</td></tr>`).join('')}</table>
    ${admin || leads ? `<form id="f"><h3>Add a member</h3><label for="u">User</label><select id="u" required>
      ${outside.map(u => `<option value="${u.Id}">${esc(u.Username)}</option>`).join('')}</select>
      ${admin ? `<label for="r">Role</label><select id="r">${roleOptions(2, {1: 'Team leader', 2: 'Member'})}</select>` : ''}
      <div class="error" role="alert"></div><button class="primary">Add</button></form>` : ''}
    <p><a href="#/teams">All teams</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  if (f) f.onsubmit = async e => { e.preventDefault(); const r = document.getElementById('r');
    try { await api('POST', '/api/team_memberships', {UserID: +f.u.value, TeamID: +id, Role: r ? +r.value : 2}); pageTeam(id); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => { await api('DELETE', `/api/team_memberships/${b.dataset.del}`); pageTeam(id); });
  document.querySelectorAll('[data-role]').forEach(s => s.onchange = async () => { await api('PUT', `/api/team_memberships/${s.dataset.role}`, {Role: +s.value}); pageTeam(id); });
}
async function pageEndpointAccess(id) {
  const [ep, users, teams] = await Promise.all([api('GET', `/api/endpoints/${id}`), api('GET', '/api/users'), api('GET', '/api/teams')]);
  const policies = {User: ep.UserAccessPolicies || {}, Team: ep.TeamAccessPolicies || {}};
  const nameOf = (kind, sid) => kind === 'User' ? ((users.find(u => u.Id === +sid) || {}).Username || `user ${sid}`)
                                               : ((teams.find(t => t.Id === +sid) || {}).Name || `team ${sid}`);
  const rows = ['User', 'Team'].flatMap(kind => Object.entries(policies[kind]).map(([sid, p]) => ({kind, sid, role: p.RoleId || 4})));
  $app.innerHTML = shell(`<div class="card"><h2>Access to ${esc(ep.Name)}</h2>
    <p class="muted">Administrators always have access. Everyone else sees this environment only when listed here, and can do what the role allows.</p>
    <table><tr><th>User or team</th><th>Role</th><th></th></tr>${rows.map(r => `<tr><td>${r.kind === 'Team' ? 'Team ' : ''}${esc(nameOf(r.kind, r.sid))}</td>
      <td><select data-kind="${r.kind}" data-sid="${esc(r.sid)}" aria-label="role">${roleOptions(r.role, ENV_ROLES)}</select></td>
      <td><button class="danger" data-remove="${r.kind}:${esc(r.sid)}">Remove access</button></td></tr>`).join('') || '<tr><td colspan="3" class="muted">Administrators only.</td></tr>'}</table>
    <form id="f"><h3>Give access</h3><label for="s">User or team</label><select id="s" required>
      ${users.filter(u => u.Role !== 1).map(u => `<option value="User:${u.Id}">${esc(u.Username)}</option>`).join('')}
      ${teams.map(t => `<option value="Team:${t.Id}">Team ${esc(t.Name)}</option>`).join('')}</select>
      <label for="r">Role</label><select id="r">${roleOptions(4, ENV_ROLES)}</select>
      <div class="error" role="alert"></div><button class="primary">Give access</button></form>
    <p><a href="#/env/${ep.Id}/security">Security settings of this environment</a></p></div>`);
  bindShell();
  const save = async () => { await api('PUT', `/api/endpoints/${id}`, {UserAccessPolicies: policies.User, TeamAccessPolicies: policies.Team}); pageEndpointAccess(id); };
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const [kind, sid] = f.s.value.split(':');
    policies[kind][sid] = {RoleId: +f.r.value}; try { await save(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('select[data-kind]').forEach(s => s.onchange = () => { policies[s.dataset.kind][s.dataset.sid] = {RoleId: +s.value}; save(); });
  document.querySelectorAll('[data-remove]').forEach(b => b.onclick = () => { const [kind, sid] = b.dataset.remove.split(':'); delete policies[kind][sid]; save(); });
}
async function pageEndpointSecurity(id) {
  const ep = await api('GET', `/api/endpoints/${id}`);
  const current = ep.SecuritySettings || {};
  $app.innerHTML = shell(`<div class="card"><h2>Security settings of ${esc(ep.Name)}</h2>
    <p class="muted">What users who are not administrators of this environment may do. Everything here is off by default: each switch can give root on the host.</p>
    <form id="f">${Object.entries(SECURITY_SWITCHES).map(([k, label]) => `<label class="check"><input type="checkbox" name="${k}" ${current[k] ? 'checked' : ''}> ${esc(label)}</label>`).join('')}
    <div class="error" role="alert"></div><button class="primary">Save</button></form>
    <p><a href="#/env/${ep.Id}/access">Who has access</a></p></div>`);
  bindShell();
  const f = document.getElementById('f');
  f.onsubmit = async e => { e.preventDefault(); const body = {};
    Object.keys(SECURITY_SWITCHES).forEach(k => { body[k] = f.elements[k].checked; });
    try { await api('PUT', `/api/endpoints/${id}`, {SecuritySettings: body}); formError(f, {message: 'Saved.'}); } catch (err) { formError(f, err); } };
}
async function pageActivity(kind) {
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
async function restoreForm(f, after) {
  const data = new FormData(); data.append('file', f.file.files[0]); data.append('password', f.pw.value);
  const headers = csrf ? {'X-CSRF-Token': csrf} : {};
  const r = await fetch('/api/restore', {method: 'POST', body: data, headers, credentials: 'same-origin'});
  if (!r.ok) { const body = await r.json().catch(() => ({})); throw new Error(body.message || r.statusText); }
  after();
}
function restoreFormHtml() {
  return `<form id="rf"><h3>Restore</h3><label for="file">Backup file</label><input id="file" name="file" type="file" required>
    <label for="pw">Its password (if it was given one)</label><input id="pw" type="password" autocomplete="off">
    <div class="error" role="alert"></div><button class="danger">Restore</button></form>`;
}
async function pageBackup() {
  $app.innerHTML = shell(`<div class="card"><h2>Backup</h2>
    <p class="muted">A copy of the data directory: users, environments, settings, stack files, keys and certificates. With a password it is encrypted (AES-256-GCM).</p>
    <form id="bf"><label for="bp">Password (recommended)</label><input id="bp" type="password" autocomplete="new-password">
    <div class="error" role="alert"></div><button class="primary">Download backup</button></form>
    ${restoreFormHtml()}</div>`);
  bindShell();
  const bf = document.getElementById('bf');
  bf.onsubmit = async e => { e.preventDefault();
    const r = await fetch('/api/backup', {method: 'POST', credentials: 'same-origin', body: JSON.stringify({password: bf.bp.value}),
                                          headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}});
    if (!r.ok) { const body = await r.json().catch(() => ({})); return formError(bf, {message: body.message || r.statusText}); }
    const name = (r.headers.get('Content-Disposition') || '').match(/filename="([^"]+)"/);
    const a = document.createElement('a'); a.href = URL.createObjectURL(await r.blob()); a.download = name ? name[1] : 'portainer-backup.tar.gz';
    document.body.appendChild(a); a.click(); a.remove(); formError(bf, {message: 'Backup downloaded.'}); };
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault(); if (!confirm('Replace all of this server\'s data with the backup?')) return;
    try { await restoreForm(rf, () => formError(rf, {message: 'Restored. Log in again if your session ends.'})); } catch (err) { formError(rf, err); } };
}
async function pageRestoreFresh() {
  $app.innerHTML = `<div class="card auth"><h2>Restore this new server from a backup</h2>${restoreFormHtml()}<p><a href="#/home">Create an administrator instead</a></p></div>`;
  const rf = document.getElementById('rf');
  rf.onsubmit = async e => { e.preventDefault();
    try { await restoreForm(rf, () => { location.hash = '#/login'; route(); }); } catch (err) { formError(rf, err); } };
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
async function pageResourceControls() {
  const [controls, users, teams] = await Promise.all([api('GET', '/api/resource_controls'), api('GET', '/api/users'), api('GET', '/api/teams')]);
  const kinds = {1: 'container', 2: 'service', 3: 'volume', 4: 'network'};
  const who = rc => rc.Public ? 'everyone with access to the environment' : rc.AdministratorsOnly ? 'administrators only' :
    [...rc.UserAccesses.map(a => (users.find(u => u.Id === a.UserId) || {}).Username || `user ${a.UserId}`),
     ...rc.TeamAccesses.map(a => 'team ' + ((teams.find(t => t.Id === a.TeamId) || {}).Name || a.TeamId))].join(', ') || 'nobody but administrators';
  $app.innerHTML = shell(`<div class="card"><h2>Shared resources</h2>
    <p class="muted">What a user creates is theirs and their teams'. Here an administrator shares a resource with others, makes it public, or keeps it to administrators.</p>
    <table><tr><th>Resource</th><th>Kind</th><th>Who may use it</th><th></th></tr>${controls.map(rc => `<tr><td>${esc(rc.ResourceId.slice(0, 24))}</td>
      <td>${esc(kinds[rc.Type] || rc.Type)}</td><td>${esc(who(rc))}</td><td><button class="danger" data-del="${rc.Id}">Remove</button></td></tr>`).join('')
      || '<tr><td colspan="4" class="muted">Nothing is shared beyond its owners.</td></tr>'}</table>
    <form id="f"><h3>Share a resource</h3><label for="rid">Full id (the name, for a volume)</label><input id="rid" required>
      <label for="k">Kind</label><select id="k">${roleOptions(1, kinds)}</select>
      <label for="w">With</label><select id="w" multiple>${users.filter(u => u.Role !== 1).map(u => `<option value="u${u.Id}">${esc(u.Username)}</option>`).join('')}
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
const REGISTRY_TYPES = {1: 'Quay.io', 2: 'Azure', 3: 'Custom', 4: 'GitLab', 5: 'ProGet', 6: 'DockerHub', 7: 'ECR', 8: 'GitHub'};
async function pageRegistries(editId) {
  const regs = await api('GET', '/api/registries');
  const admin = me.Role === 1;
  const editing = regs.find(r => String(r.Id) === String(editId));
  const r0 = editing || {Name: '', URL: '', Type: 3, Authentication: false, Username: '', TLSSkipVerify: false};
  $app.innerHTML = shell(`<div class="card"><h2>Registries</h2><table><thead><tr><th>Name</th><th>URL</th>
    <th class="hide-sm">Type</th><th>Credentials</th><th></th></tr></thead><tbody>
    ${regs.map(r => `<tr><td>${esc(r.Name)}</td><td>${esc(r.URL)}</td><td class="hide-sm">${esc(REGISTRY_TYPES[r.Type] || r.Type)}</td>
      <td>${r.Authentication ? esc(r.Username) : '<span class="muted">anonymous</span>'}</td>
      <td><a href="#/registries/${r.Id}">Browse</a> ${admin ? `<button data-edit="${r.Id}">Edit</button>
      <button data-access="${r.Id}">Access</button> <button class="danger" data-del="${r.Id}">Remove</button>` : ''}</td></tr>`).join('')
      || '<tr><td colspan="5" class="muted">No registry yet.</td></tr>'}</tbody></table></div>
    ${admin ? `<div class="card"><h3>${editing ? 'Edit registry ' + esc(editing.Name) : 'Add registry'}</h3><form id="rf">
      <label for="rn">Name</label><input id="rn" required value="${esc(r0.Name)}">
      <label for="ru">URL (host:port, e.g. registry.example.com or 127.0.0.1:5000)</label><input id="ru" required value="${esc(r0.URL)}">
      <label for="rt">Type</label><select id="rt">${Object.entries(REGISTRY_TYPES).map(([k, v]) => `<option value="${k}" ${+k === r0.Type ? 'selected' : ''}>${v}</option>`).join('')}</select>
      <label><input type="checkbox" id="ra" class="inline" ${r0.Authentication ? 'checked' : ''}> Authentication</label>
      <label for="rus">Username</label><input id="rus" autocomplete="off" value="${esc(r0.Username)}">
      <label for="rp">Password${editing ? ' (leave empty to keep the current one)' : ''}</label><input id="rp" type="password" autocomplete="new-password">
      <label><input type="checkbox" id="rk" class="inline" ${r0.TLSSkipVerify ? 'checked' : ''}> Skip TLS certificate verification</label>
      <div class="error" role="alert"></div><button class="primary">${editing ? 'Save' : 'Add registry'}</button>
      ${editing ? '<a href="#/registries">Cancel</a>' : ''}</form></div><div id="access"></div>` : ''}`);
  bindShell();
  if (!admin) return;
  const f = document.getElementById('rf');
  f.onsubmit = async e => { e.preventDefault();
    const body = {Name: f.rn.value, URL: f.ru.value, Type: +f.rt.value, Authentication: f.ra.checked,
                  Username: f.rus.value, TLSSkipVerify: f.rk.checked};
    if (f.rp.value) body.Password = f.rp.value;
    try { if (editing) await api('PUT', `/api/registries/${editing.Id}`, body); else await api('POST', '/api/registries', body);
      location.hash = '#/registries'; pageRegistries(); } catch (err) { formError(f, err); } };
  document.querySelectorAll('[data-edit]').forEach(b => b.onclick = () => pageRegistries(b.dataset.edit));
  document.querySelectorAll('[data-del]').forEach(b => b.onclick = async () => {
    if (confirm('Remove this registry and its credentials?')) { await api('DELETE', `/api/registries/${b.dataset.del}`); pageRegistries(); } });
  document.querySelectorAll('[data-access]').forEach(b => b.onclick = () => registryAccessForm(regs.find(r => String(r.Id) === b.dataset.access)));
}
async function registryAccessForm(reg) {
  const [eps, users, teams] = await Promise.all([api('GET', '/api/endpoints'), api('GET', '/api/users'),
    api('GET', '/api/teams').catch(() => [])]);
  const box = document.getElementById('access');
  const draw = envId => { const acc = (reg.RegistryAccesses || {})[envId] || {};
    const users_ = acc.UserAccessPolicies || {}, teams_ = acc.TeamAccessPolicies || {};
    box.innerHTML = `<div class="card"><h3>Who may use ${esc(reg.Name)}</h3><form id="af"><label for="ae">Environment</label>
      <select id="ae">${eps.map(ep => `<option value="${ep.Id}" ${String(ep.Id) === String(envId) ? 'selected' : ''}>${esc(ep.Name)}</option>`).join('')}</select>
      <fieldset><legend>Users</legend>${users.filter(u => u.Role !== 1).map(u => `<label><input type="checkbox" class="inline" name="u" value="${u.Id}" ${users_[u.Id] ? 'checked' : ''}> ${esc(u.Username)}</label>`).join('') || '<span class="muted">no standard users</span>'}</fieldset>
      ${teams.length ? `<fieldset><legend>Teams</legend>${teams.map(t => `<label><input type="checkbox" class="inline" name="t" value="${t.Id}" ${teams_[t.Id] ? 'checked' : ''}> ${esc(t.Name)}</label>`).join('')}</fieldset>` : ''}
      <div class="error" role="alert"></div><button class="primary">Save access</button></form></div>`;
    const f = document.getElementById('af');
    f.ae.onchange = () => draw(f.ae.value);
    f.onsubmit = async e => { e.preventDefault();
      const pick = n => Object.fromEntries([...f.querySelectorAll(`input[name=${n}]:checked`)].map(x => [x.value, {RoleId: 0}]));
      const body = {UserAccessPolicies: pick('u'), TeamAccessPolicies: pick('t')};
      try { await api('PUT', `/api/endpoints/${f.ae.value}/registries/${reg.Id}`, body);
        reg.RegistryAccesses = reg.RegistryAccesses || {}; reg.RegistryAccesses[f.ae.value] = body; formError(f, {message: 'Saved.'}); }
      catch (err) { formError(f, err); } }; };
  draw(eps.length ? eps[0].Id : '');
}
async function pageRegistryBrowse(id) {
  const [reg, eps] = await Promise.all([api('GET', `/api/registries/${id}`), api('GET', '/api/endpoints')]);
  $app.innerHTML = shell(`<div class="card"><h2>${esc(reg.Name)} <span class="muted">${esc(reg.URL)}</span></h2>
    <div class="error" role="alert" id="err"></div><div class="grid"><div><h3>Repositories</h3><div id="repos" class="muted">Loading…</div></div>
    <div><h3>Tags</h3><div id="tags" class="muted">Choose a repository.</div></div></div>
    <label for="env">Pull to environment</label><select id="env">${eps.map(ep => `<option value="${ep.Id}">${esc(ep.Name)}</option>`).join('')}</select>
    <pre id="pulled"></pre></div>`);
  bindShell();
  const err = document.getElementById('err');
  let repos = [];
  try { repos = (await api('GET', `/api/registries/${id}/v2/_catalog`)).repositories; } catch (e) { err.textContent = e.message; }
  document.getElementById('repos').innerHTML = repos.map(r => `<div><a href="#/registries/${id}" data-repo="${esc(r)}">${esc(r)}</a></div>`).join('') || 'No repository.';
  document.querySelectorAll('[data-repo]').forEach(a => a.onclick = async e => { e.preventDefault(); err.textContent = '';
    const repo = a.dataset.repo; const box = document.getElementById('tags');
    try { const t = await api('GET', `/api/registries/${id}/v2/${repo.split('/').map(encodeURIComponent).join('/')}/tags/list`);
      box.innerHTML = (t.tags || []).map(tag => `<div>${esc(repo)}:<b>${esc(tag)}</b> <button data-pull="${esc(tag)}">Pull</button></div>`).join('') || 'No tag.';
      box.querySelectorAll('[data-pull]').forEach(b => b.onclick = () => pullWithRegistry(reg, repo, b.dataset.pull));
    } catch (e2) { err.textContent = e2.message; } });
}
async function pullWithRegistry(reg, repo, tag) {
  const out = document.getElementById('pulled'), env = document.getElementById('env').value;
  const image = `${reg.URL.replace(/^\w+:\/\//, '').split('/')[0]}/${repo}`;
  out.textContent = `Pulling ${image}:${tag}…`;
  const r = await fetch(`/api/endpoints/${env}/docker/images/create?fromImage=${encodeURIComponent(image)}&tag=${encodeURIComponent(tag)}`,
    {method: 'POST', credentials: 'same-origin', headers: {'X-CSRF-Token': csrf, 'X-Registry-Auth': btoa(JSON.stringify({registryId: reg.Id}))}});
  const text = await r.text(); const lines = text.trim().split('\n').map(l => { try { return JSON.parse(l); } catch (e) { return {}; } });
  const failed = !r.ok ? (lines[0].message || r.statusText) : (lines.find(l => l.error) || {}).error;
  out.textContent = failed ? `Pull failed: ${failed}` : `Pulled ${image}:${tag}. ${(lines[lines.length - 1] || {}).status || ''}`;
}
function imageUpdates(endpointId, redraw, reload) {
  const labels = {outdated: 'update available', updated: 'up to date', skipped: 'unknown', unknown: 'unknown'};
  const state = {statuses: {}, error: ''};
  state.cell = c => { if (c.State !== 'running') return '';
    const s = state.statuses[c.Id]; if (!s) return '<span class="muted">checking…</span>';
    return `<span class="badge ${esc(s.Status)}" title="${esc(s.Message)}">${labels[s.Status] || 'unknown'}</span>` +
      (s.Status === 'outdated' ? ` <button data-recreate="${esc(c.Id)}">Recreate with new image</button>` : ''); };
  state.load = async refresh => {
    try { state.statuses = await api('GET', `/api/endpoints/${endpointId}/image_status${refresh ? '?refresh=true' : ''}`); }
    catch (e) { state.statuses = {}; document.getElementById('err').textContent = e.message; }
    redraw(); };
  state.bind = () => document.querySelectorAll('[data-recreate]').forEach(b => b.onclick = async () => {
    const err = document.getElementById('err'); b.disabled = true; b.textContent = 'Recreating…'; err.textContent = '';
    try { await api('POST', `/api/docker/${endpointId}/containers/${b.dataset.recreate}/recreate`, {PullImage: true}); }
    catch (e) { err.textContent = e.message; }
    await reload(); state.load(false); });
  return state;
}
async function route() {
  theme();
  const hash = location.hash || '#/home';
  try {
    const check = await fetch('/api/users/admin/check');
    if (check.status === 404) return hash === '#/restore' ? pageRestoreFresh() : pageSetup();
    if (hash === '#/login') return pageLogin();
    me = await api('GET', '/api/users/me');
    let m;
    if ((m = hash.match(/^#\/env\/(\d+)\/containers/))) return await pageContainers(m[1]);
    if ((m = hash.match(/^#\/env\/(\d+)\/volumes\/([^/]+)\/browse(?:\?node=(.*))?$/)))
      return await pageBrowse(m[1], decodeURIComponent(m[2]), decodeURIComponent(m[3] || ''), '/');
    if ((m = hash.match(/^#\/env\/(\d+)\/volumes/))) return await pageVolumes(m[1]);
    if (hash === '#/environments/new') return await pageAddEnvironment();
    if ((m = hash.match(/^#\/env\/(\d+)\/access/))) return await pageEndpointAccess(m[1]);
    if ((m = hash.match(/^#\/env\/(\d+)\/security/))) return await pageEndpointSecurity(m[1]);
    if ((m = hash.match(/^#\/teams\/(\d+)/))) return await pageTeam(m[1]);
    if (hash === '#/teams') return await pageTeams();
    if (hash === '#/resource-controls') return await pageResourceControls();
    if (hash === '#/activity') return await pageActivity('logs');
    if (hash === '#/activity/auth') return await pageActivity('authlogs');
    if (hash === '#/backup') return await pageBackup();
    if (hash === '#/account') return await pageAccount();
    if (hash === '#/users') return await pageUsers();
    if (hash === '#/settings') return await pageSettings();
    if (hash === '#/registries') return await pageRegistries();
    if ((m = hash.match(/^#\/registries\/(\d+)$/))) return await pageRegistryBrowse(m[1]);
    return await pageHome();
  } catch (err) {
    if (err.status === 401) { location.hash = '#/login'; return pageLogin(); }
    $app.innerHTML = shell(`<div class="card error" role="alert">${esc(err.message)}</div>`); bindShell();
  }
}
window.addEventListener('hashchange', route);
route();
"""


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


UI_ASSETS = {"/": (UI_INDEX_HTML, "text/html"), "/assets/app.css": (UI_CSS, "text/css"),
             "/assets/app.js": (UI_JS, "application/javascript")}


@public
async def handle_ui_asset(request: web.Request) -> web.Response:
    """The embedded web UI: compressed when the browser accepts gzip, 304 when its copy is current."""
    asset = request.app[ASSETS].get(request.path)
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
# Application: route table, OpenAPI, startup and shutdown
# ================================================================================================================

CONFIG = app_key("config", argparse.Namespace)
STORE = app_key("store", Store)
ENVIRONMENTS = app_key("environments", Environments)
ENDPOINT_KINDS = app_key("endpoint_kinds", EndpointKinds)
AGENT_SIGNER = app_key("agent_signer", shared.RequestSigner)
SESSIONS = app_key("sessions", Sessions)
LOGIN_LIMIT = app_key("login_limit", LoginRateLimit)
API_KEY_INDEX = app_key("api_key_index", dict)
STARTED_AT = app_key("started_at", float)
ASSETS = app_key("assets", dict)
REGISTRIES = app_key("registries", Registries)
IMAGE_UPDATES = app_key("image_updates", ImageUpdates)
ACTIVITY = app_key("activity", ActivityLog)
ANALYTICS_STATE = app_key("analytics_state", dict)
# Features that keep state from the store or data directory in memory register a reload here: fn(app).
AFTER_RESTORE = app_key("after_restore", list)
CALLER_KEY = "caller"
DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

ROUTES: list[tuple[str, str, Callable]] = [
    ("GET", "/api/system/status", handle_system_status),
    ("GET", "/api/status", handle_system_status),
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
    ("POST", "/api/endpoints/{id}/snapshot", handle_endpoint_snapshot),
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
    ("GET", "/api/docker/{id}/containers/{containerId}/image_status", handle_container_image_status),
    ("POST", "/api/docker/{id}/containers/{containerId}/recreate", handle_container_recreate),
    ("GET", "/api/useractivity/logs", handle_activity_logs),
    ("GET", "/api/useractivity/logs.csv", handle_activity_logs_csv),
    ("GET", "/api/useractivity/authlogs", handle_auth_logs),
    ("GET", "/api/useractivity/authlogs.csv", handle_auth_logs_csv),
    ("POST", "/api/backup", handle_backup),
    ("POST", "/api/restore", handle_restore),
    ("GET", "/api/telemetry/preview", handle_telemetry_preview),
    ("POST", "/api/telemetry/send", handle_telemetry_send),
    ("GET", "/api/settings", handle_settings_get),
    ("PUT", "/api/settings", handle_settings_update),
    ("GET", "/api/settings/public", handle_settings_public),
    ("GET", "/", handle_ui_asset),
    ("GET", "/assets/app.css", handle_ui_asset),
    ("GET", "/assets/app.js", handle_ui_asset),
]


_STRING = {"type": "string"}
_CREDENTIALS = {"type": "object", "required": ["Username", "Password"],
                "properties": {"Username": _STRING, "Password": _STRING}}
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
    "handle_endpoint_update": {"type": "object", "properties": {
        "Name": _STRING, "URL": _STRING, "PublicURL": _STRING, "TagIds": {"type": "array"},
        "UserAccessPolicies": {"type": "object"}, "TeamAccessPolicies": {"type": "object"},
        "SecuritySettings": {"type": "object"}}},
    "handle_endpoint_registry_access": {"type": "object", "properties": {
        "UserAccessPolicies": {"type": "object"}, "TeamAccessPolicies": {"type": "object"},
        "Namespaces": {"type": "array", "items": _STRING}}},
    "handle_container_recreate": {"type": "object", "properties": {"PullImage": {"type": "boolean"}}},
    "handle_settings_update": {"type": "object", "properties": {
        "UserSessionTimeout": _STRING, "EnableTelemetry": {"type": "boolean"}, "LogoURL": _STRING}},
}


def openapi_document() -> dict:
    paths: dict = {}
    for method, path, handler in ROUTES:
        if not path.startswith("/api/"):
            continue
        clean = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)
        params = [{"name": name, "in": "path", "required": True,
                   "schema": {"type": "integer"} if name in ("id", "keyId", "registryId") else {"type": "string"}}
                  for name in re.findall(r"\{(\w+)", clean)]
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
            if handler.__name__ in REQUEST_SCHEMAS and m in ("post", "put"):
                operation["requestBody"] = {"content": {"application/json": {
                    "schema": REQUEST_SCHEMAS[handler.__name__]}}}
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
    if config.host and not store.data["settings"].get("_initial_environment_created"):
        endpoint_id = store.next_id("endpoints")
        url = normalise_docker_url(config.host, ENDPOINT_DOCKER)
        store.data["endpoints"][str(endpoint_id)] = {
            "Id": endpoint_id, "Name": "local", "Type": ENDPOINT_DOCKER, "URL": url, "PublicURL": "",
            "GroupId": 1, "TagIds": [], "UserAccessPolicies": {}, "TeamAccessPolicies": {},
            "SecuritySettings": dict(DEFAULT_SECURITY_SETTINGS), "TLSConfig": {"TLS": False}, "CreationDate": now()}
        store.data["settings"]["_initial_environment_created"] = True
        await store.commit()
        log.info("created environment 'local' for %s", url)


async def server_lifecycle(app: web.Application):
    """Startup before the yield, shutdown after: background tasks are made here and cancelled here."""
    await create_first_admin_and_environment(app)
    rebuild_api_key_index(app)
    snapshots = asyncio.ensure_future(snapshot_loop(app))
    image_checks = asyncio.ensure_future(image_update_loop(app))
    yield
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
    if "InstanceID" not in store.data.setdefault("analytics", {}):
        store.data["analytics"]["InstanceID"] = str(uuid.uuid4())
        await store.commit()
    tasks = [asyncio.ensure_future(app[ACTIVITY].run()), asyncio.ensure_future(analytics_loop(app))]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[ACTIVITY].flush()


def make_app(config: argparse.Namespace) -> web.Application:
    """The whole server as an aiohttp application. Takes ownership of the data directory (file lock)."""
    store = Store(config.data)
    store.acquire()
    store.load()
    app = web.Application(middlewares=[activity_middleware, error_middleware, security_headers_middleware,
                                       auth_middleware],
                          client_max_size=MAX_JSON_BODY)
    app[CONFIG] = config
    app[STORE] = store
    app[ENVIRONMENTS] = Environments(store, store.directory)
    app[ENDPOINT_KINDS] = EndpointKinds()
    register_agent_kind(app)
    app[SESSIONS] = Sessions(load_or_create_secret(store.directory, "jwt.secret"), store)
    app[LOGIN_LIMIT] = LoginRateLimit()
    app[API_KEY_INDEX] = {}
    app[STARTED_AT] = time.monotonic()
    app[ASSETS] = {path: StaticAsset.make(text, kind) for path, (text, kind) in UI_ASSETS.items()}
    app[REGISTRIES] = Registries(store, load_or_create_secret(store.directory, "registry.key"))
    app[IMAGE_UPDATES] = ImageUpdates(app[ENVIRONMENTS], app[REGISTRIES])
    app[ACTIVITY] = ActivityLog(store.directory,
                                lambda: int(current_settings(store)["ActivityLogRetentionDays"]))
    app[ANALYTICS_STATE] = {}
    app[AFTER_RESTORE] = [lambda restored: restored[REGISTRIES].reload(),
                          lambda restored: restored[IMAGE_UPDATES].forget()]
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(server_lifecycle)
    app.cleanup_ctx.append(audit_and_analytics_lifecycle)
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
