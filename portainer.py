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
import dataclasses
import datetime
import fcntl
import gzip
import hashlib
import hmac
import inspect
import json
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import sys
import time
import urllib.parse
import uuid
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
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher


def write_private_file(path: str, data: bytes) -> None:
    """Write a secret (key, certificate key) readable by the owner only, atomically."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    os.makedirs(os.path.dirname(cert_path), mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    hostname = socket.gethostname()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portainer.py"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "portainer.py self-signed")])
    valid_from = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    alt_names = [x509.DNSName("localhost"), x509.DNSName(hostname)]
    import ipaddress
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(valid_from)
            .not_valid_after(valid_from + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .sign(key, hashes.SHA256()))
    write_private_file(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def certificate_fingerprint(cert_path: str) -> str:
    """SHA-256 of the certificate in DER form, hex: what an edge key pins."""
    with open(cert_path, "rb") as f:
        der = ssl.PEM_cert_to_DER_cert(f.read().decode())
    return hashlib.sha256(der).hexdigest()


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
# Access rules: who may reach an environment, and which Docker API calls pass the proxy (deny by default)
# ================================================================================================================


def user_team_ids(store: Store, user_id: int) -> set[int]:
    return {m["TeamID"] for m in store.data["team_memberships"].values() if m["UserID"] == user_id}


def can_access_endpoint(store: Store, caller: Caller, endpoint: dict) -> bool:
    if caller.is_admin:
        return True
    if str(caller.id) in (endpoint.get("UserAccessPolicies") or {}):
        return True
    teams = endpoint.get("TeamAccessPolicies") or {}
    return any(str(team_id) in teams for team_id in user_team_ids(store, caller.id))


def endpoint_for_caller(request: web.Request, endpoint_id: int) -> dict:
    """The environment, if the caller may use it; a user without access learns nothing more than 403."""
    endpoint = request.app[ENVIRONMENTS].get(endpoint_id)
    if not can_access_endpoint(request.app[STORE], caller_of(request), endpoint):
        raise Forbidden(f"you have no access to environment {endpoint_id}")
    return endpoint


READ, WRITE, ADMIN = "read", "write", "admin"
_ID = r"[^/]+"
_NAME = r".+"  # image names and plugin names may hold slashes
# (methods, path pattern after the /vX.Y prefix, level, body check). Anything not listed here is refused.
DOCKER_API_RULES: list[tuple[frozenset, re.Pattern, str, str | None]] = [
    (frozenset(m.split()), re.compile(f"^{pattern}$"), level, check)
    for m, pattern, level, check in [
        ("GET HEAD", r"/_ping", READ, None),
        ("GET", r"/(version|info|events|system/df)", READ, None),
        ("GET", r"/containers/json", READ, None),
        ("POST", r"/containers/create", WRITE, "container"),
        ("POST", r"/containers/prune", ADMIN, None),
        ("GET", rf"/containers/{_ID}/(json|top|logs|changes|export|stats)", READ, None),
        ("GET HEAD", rf"/containers/{_ID}/archive", READ, None),
        ("PUT", rf"/containers/{_ID}/archive", WRITE, None),
        ("POST", rf"/containers/{_ID}/(start|stop|restart|kill|pause|unpause|wait|resize|attach|rename)", WRITE,
         None),
        ("POST", rf"/containers/{_ID}/update", WRITE, "container_update"),
        ("POST", rf"/containers/{_ID}/exec", WRITE, "exec"),
        ("DELETE", rf"/containers/{_ID}", WRITE, None),
        ("POST", r"/exec/[^/]+/(start|resize)", WRITE, None),
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
        ("POST", rf"/networks/{_ID}/(connect|disconnect)", WRITE, None),
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
        ("GET", rf"/(services|tasks)/{_ID}/logs", READ, None),
        ("POST", r"/services/create", WRITE, "service"),
        ("POST", rf"/services/{_ID}/update", WRITE, "service"),
        ("DELETE", rf"/services/{_ID}", WRITE, None),
        ("POST", rf"/nodes/{_ID}/update", ADMIN, None),
        ("DELETE", rf"/nodes/{_ID}", ADMIN, None),
        ("POST", r"/(secrets|configs)/create", WRITE, None),
        ("POST", rf"/(secrets|configs)/{_ID}/update", WRITE, None),
        ("DELETE", rf"/(secrets|configs)/{_ID}", WRITE, None),
        ("GET POST DELETE", r"/plugins(/.*)?", ADMIN, None),
    ]
]
API_VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")
PROXY_PREFIX = re.compile(r"^/api/endpoints/[^/]+/docker")


def docker_rule_for(method: str, path: str) -> tuple[str, str | None]:
    """The access level and body check of a Docker API call; Forbidden for a call the proxy does not know."""
    bare = API_VERSION_PREFIX.sub("", path)
    for methods, pattern, level, check in DOCKER_API_RULES:
        if method in methods and pattern.match(bare):
            return level, check
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
}


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


def creation_body(container: dict, image: dict) -> dict:
    """A /containers/create body that rebuilds `container` from its image reference: its own settings kept,
    the old image's defaults left out so that the new image's defaults apply."""
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
                       endpoint: dict | None = None) -> dict:
        """Pull (optionally), then replace the container by one made from the same settings, keeping its name,
        networks and volumes; the old one is restored if anything fails on the way."""
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
            body = creation_body(container, old_image)
            if caller is not None and not caller.is_admin and endpoint is not None:
                settings = {**DEFAULT_SECURITY_SETTINGS, **(endpoint.get("SecuritySettings") or {})}
                problems = container_create_violations(body, settings)
                if problems:
                    raise Forbidden("not allowed for non-administrators on this environment: " + ", ".join(problems))
            new = await self.replace(connector, container, name, body)
        finally:
            self._recreating.discard((endpoint_id, name))
        self.results.pop((endpoint_id, old_id), None)
        self.results.pop((endpoint_id, container_id), None)
        return new

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
    updates, environments = app[IMAGE_UPDATES], app[ENVIRONMENTS]
    while True:
        await asyncio.sleep(interval)
        for endpoint in list(app[STORE].data["endpoints"].values()):
            if environments.status.get(endpoint["Id"]) != STATUS_UP:
                continue
            try:
                await check_and_auto_update(updates, endpoint["Id"])
            except ApiError as exc:
                log.debug("image check of environment %s skipped: %s", endpoint["Id"], exc.message)


async def check_and_auto_update(updates: ImageUpdates, endpoint_id: int) -> None:
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
        try:
            new = await updates.recreate(endpoint_id, container["Id"], pull=True, caller=None)
        except ApiError as exc:
            log.warning("auto-update of container %s on environment %s failed: %s", name, endpoint_id, exc.message)
            continue
        log.info("auto-update: recreated container %s on environment %s with the new image of %s (%s)", name,
                 endpoint_id, new["Config"]["Image"], answers[container["Id"]].get("RemoteDigest", ""))


# ================================================================================================================
# Docker proxy: /api/endpoints/{id}/docker/{path}, streamed both ways, upgrades passed through
# ================================================================================================================


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
    caller = caller_of(request)
    # The engine gets the path and query exactly as the client encoded them; the rules see them decoded.
    target = PROXY_PREFIX.sub("", request.raw_path, count=1) or "/"
    path = urllib.parse.unquote(target.split("?", 1)[0])
    if ".." in path.split("/") or any(c in path for c in "\r\n\x00"):
        raise BadRequest("invalid Docker API path", "path segments '..' and control characters are not allowed")
    level, check = docker_rule_for(request.method, path)
    if level == ADMIN and not caller.is_admin:
        raise Forbidden(f"{request.method} {API_VERSION_PREFIX.sub('', path)} is reserved for administrators")
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
            settings = {**DEFAULT_SECURITY_SETTINGS, **(endpoint.get("SecuritySettings") or {})}
            problems = BODY_CHECKS[check](parsed, settings)
            if problems:
                raise Forbidden("not allowed for non-administrators on this environment: " + ", ".join(problems),
                                "an administrator can allow it in the environment's security settings")
        body, body_length = (raw if raw else None), None
    connector = request.app[ENVIRONMENTS].connector(endpoint_id)
    timeout = answer_head_timeout(request.app[CONFIG].proxy_timeout, path, request.query, streamed_body=body is not None and check is None)
    response = await connector.request(request.method, target, headers, body, body_length, timeout=timeout)
    try:
        return await shared.relay_response(request, response)
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
        raise Unauthorized("invalid credentials")
    limiter.succeeded(address)
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
    """All users (administrators); a standard user sees only themselves."""
    caller = caller_of(request)
    users = request.app[STORE].data["users"].values()
    return json_response([user_view(u) for u in users if caller.is_admin or u["Id"] == caller.id])


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
        except (ValueError, AssertionError, KeyError) as exc:
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
                  "EdgeAgentCheckinInterval": int}


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
    return json_response(await request.app[IMAGE_UPDATES].check_environment(endpoint["Id"], ids, fresh))


async def handle_container_recreate(request: web.Request) -> web.Response:
    """Recreate a container {PullImage}: pull its image's tag, then replace it keeping settings and data."""
    endpoint = endpoint_for_caller(request, path_id(request))
    body = await read_json_object(request) if request.can_read_body else {}
    pull = field(body, "PullImage", bool, required=False, default=False)
    new = await request.app[IMAGE_UPDATES].recreate(endpoint["Id"], request.match_info["containerId"], pull,
                                                    caller_of(request), endpoint)
    return json_response(new)


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
    <div class="error" role="alert"></div><button class="primary" type="submit">Create user</button></form></div>`;
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
        ${s.StackCount ?? 0} stacks</div></div>`; }).join('') || '<p class="muted">No environment matches.</p>'; };
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
    if (check.status === 404) return pageSetup();
    if (hash === '#/login') return pageLogin();
    me = await api('GET', '/api/users/me');
    let m;
    if ((m = hash.match(/^#\/env\/(\d+)\/containers/))) return await pageContainers(m[1]);
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
SESSIONS = app_key("sessions", Sessions)
LOGIN_LIMIT = app_key("login_limit", LoginRateLimit)
API_KEY_INDEX = app_key("api_key_index", dict)
STARTED_AT = app_key("started_at", float)
ASSETS = app_key("assets", dict)
REGISTRIES = app_key("registries", Registries)
IMAGE_UPDATES = app_key("image_updates", ImageUpdates)
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


def make_app(config: argparse.Namespace) -> web.Application:
    """The whole server as an aiohttp application. Takes ownership of the data directory (file lock)."""
    store = Store(config.data)
    store.acquire()
    store.load()
    app = web.Application(middlewares=[error_middleware, security_headers_middleware, auth_middleware],
                          client_max_size=MAX_JSON_BODY)
    app[CONFIG] = config
    app[STORE] = store
    app[ENVIRONMENTS] = Environments(store, store.directory)
    app[ENDPOINT_KINDS] = EndpointKinds()
    app[SESSIONS] = Sessions(load_or_create_secret(store.directory, "jwt.secret"), store)
    app[LOGIN_LIMIT] = LoginRateLimit()
    app[API_KEY_INDEX] = {}
    app[STARTED_AT] = time.monotonic()
    app[ASSETS] = {path: StaticAsset.make(text, kind) for path, (text, kind) in UI_ASSETS.items()}
    app[REGISTRIES] = Registries(store, load_or_create_secret(store.directory, "registry.key"))
    app[IMAGE_UPDATES] = ImageUpdates(app[ENVIRONMENTS], app[REGISTRIES])
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    app.cleanup_ctx.append(server_lifecycle)
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
    runner_options: dict = {"access_log": None}
    site_options: dict = {"reuse_address": True}
    # aiohttp 3.8 (Debian 12) takes the shutdown timeout per site and always cancels handlers of a lost client.
    if "shutdown_timeout" in inspect.signature(web.AppRunner.__init__).parameters:
        runner_options["shutdown_timeout"] = 0.5
        runner_options["handler_cancellation"] = True  # a client that goes away ends its proxied stream
    else:
        site_options["shutdown_timeout"] = 0.5
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
