"""Secrets at rest and on the wire: encrypted backups, and the signatures an agent checks on every request.

Fast unit tests (`make test-fast`): the real encrypt_backup/decrypt_backup (AES-256-GCM, scrypt key) and the
real RequestSigner/RequestVerifier of agent.py, no server and no agent process.
"""
from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import agent
import portainer

ARCHIVE = b"a tar.gz of the data directory" * 100


# ---- backups ---------------------------------------------------------------------------------------------------

def test_an_encrypted_backup_opens_with_its_password():
    blob = portainer.encrypt_backup(ARCHIVE, "backup password")
    assert blob.startswith(portainer.BACKUP_MAGIC)
    assert ARCHIVE[:30] not in blob
    assert portainer.decrypt_backup(blob, "backup password") == ARCHIVE


def test_two_backups_with_one_password_share_no_salt_nonce_or_ciphertext():
    first, second = (portainer.encrypt_backup(ARCHIVE, "same password") for _ in range(2))
    header = portainer.BACKUP_HEADER_SIZE
    assert first[len(portainer.BACKUP_MAGIC) + 1:header] != second[len(portainer.BACKUP_MAGIC) + 1:header]
    assert first[header:] != second[header:]


def test_a_wrong_password_is_refused_and_says_nothing_was_changed():
    blob = portainer.encrypt_backup(ARCHIVE, "right password")
    with pytest.raises(portainer.BadRequest) as caught:
        portainer.decrypt_backup(blob, "wrong password")
    assert caught.value.status == 400
    assert "wrong password or a damaged file" in caught.value.message and caught.value.details == "nothing was changed"


@pytest.mark.parametrize("where", ["magic", "salt", "nonce", "ciphertext", "tag"])
def test_a_tampered_backup_is_refused(where):
    blob = bytearray(portainer.encrypt_backup(ARCHIVE, "backup password"))
    magic = len(portainer.BACKUP_MAGIC)
    offset = {"magic": 0, "salt": magic + 1, "nonce": portainer.BACKUP_HEADER_SIZE - 1,
              "ciphertext": portainer.BACKUP_HEADER_SIZE + 5, "tag": len(blob) - 1}[where]
    blob[offset] ^= 0x01
    with pytest.raises(portainer.BadRequest, match="wrong password or a damaged file"):
        portainer.decrypt_backup(bytes(blob), "backup password")


@pytest.mark.parametrize("damage", ["truncated", "unknown version"])
def test_a_truncated_or_unknown_version_backup_is_refused_as_damaged(damage):
    blob = bytearray(portainer.encrypt_backup(ARCHIVE, "backup password"))
    if damage == "truncated":
        blob = blob[:portainer.BACKUP_HEADER_SIZE + 10]
    else:
        blob[len(portainer.BACKUP_MAGIC)] = portainer.BACKUP_VERSION + 1
    with pytest.raises(portainer.BadRequest, match="damaged or of an unknown version"):
        portainer.decrypt_backup(bytes(blob), "backup password")


def test_a_backup_archive_holds_the_store_and_files_but_not_the_lock_or_half_written_files(tmp_path):
    (tmp_path / "portainer.lock").write_text("1234")
    (tmp_path / "portainer.json").write_text('{"stale": true}')
    (tmp_path / "portainer.json.tmp.7").write_text("half")
    (tmp_path / "compose" / "1").mkdir(parents=True)
    (tmp_path / "compose" / "1" / "docker-compose.yml").write_text("services: {}")
    document = {"schema_version": portainer.SCHEMA_VERSION, "users": {}, "endpoints": {}}
    archive = portainer.build_backup_archive(str(tmp_path), json.dumps(document).encode())
    restored, files = portainer.validated_backup_members(portainer.decrypt_backup(
        portainer.encrypt_backup(archive, "pw"), "pw"))
    assert restored == document
    assert files == {"compose/1/docker-compose.yml": b"services: {}"}


def tar_gz(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["../outside", "/etc/cron.d/job", "compose/../../escape", "portainer.lock"])
def test_a_backup_entry_that_would_land_outside_the_data_directory_is_refused(name):
    store = json.dumps({"users": {}, "endpoints": {}}).encode()
    with pytest.raises(portainer.BadRequest, match="an entry that is not allowed"):
        portainer.validated_backup_members(tar_gz({"portainer.json": store, name: b"x"}))


def test_a_backup_without_a_store_or_not_a_tar_is_refused():
    with pytest.raises(portainer.BadRequest, match="has no portainer.json"):
        portainer.validated_backup_members(tar_gz({"other": b"x"}))
    with pytest.raises(portainer.BadRequest, match="not a readable tar.gz"):
        portainer.validated_backup_members(b"plain text")


# ---- request signatures (server -> agent) ------------------------------------------------------------------------

def signer() -> agent.RequestSigner:
    return agent.RequestSigner(ec.generate_private_key(ec.SECP256R1()))


def refused(verifier: agent.RequestVerifier, method: str, target: str, headers) -> str:
    with pytest.raises(agent.AgentAuthError) as caught:
        verifier.verify(method, target, dict(headers))
    return str(caught.value)


def test_an_agent_accepts_a_signed_request_and_pairs_with_its_server():
    server = signer()
    verifier = agent.RequestVerifier()
    assert verifier.verify("GET", "/containers/json", dict(server.headers("GET", "/containers/json"))) \
        == server.public_key
    assert verifier.pinned == server.public_key
    assert verifier.verify("POST", "/containers/create", dict(server.headers("POST", "/containers/create")))


def test_an_unsigned_request_is_refused():
    assert "unsigned request" in refused(agent.RequestVerifier(), "GET", "/info", {})


def test_a_replayed_request_is_refused():
    headers = signer().headers("POST", "/containers/abc/start")
    verifier = agent.RequestVerifier()
    verifier.verify("POST", "/containers/abc/start", dict(headers))
    assert "replayed request" in refused(verifier, "POST", "/containers/abc/start", headers)


@pytest.mark.parametrize("skew", [-agent.SIGNATURE_WINDOW - 5, agent.SIGNATURE_WINDOW + 5])
def test_a_request_signed_too_long_ago_or_in_the_future_is_refused(skew):
    headers = signer().headers("GET", "/info", timestamp=int(time.time()) + skew)
    assert "outside the accepted window" in refused(agent.RequestVerifier(), "GET", "/info", headers)


def test_a_request_signed_within_the_window_is_accepted():
    headers = signer().headers("GET", "/info", timestamp=int(time.time()) - agent.SIGNATURE_WINDOW + 5)
    agent.RequestVerifier().verify("GET", "/info", dict(headers))


def test_a_signature_by_another_key_than_the_one_presented_is_refused():
    server, impostor = signer(), signer()
    headers = dict(impostor.headers("GET", "/info"))
    headers[agent.PUBLIC_KEY_HEADER] = server.public_key
    assert refused(agent.RequestVerifier(), "GET", "/info", headers) == "invalid request signature"


@pytest.mark.parametrize("change", ["method", "target", "node", "garbage signature", "garbage key"])
def test_a_signed_request_changed_on_the_way_is_refused(change):
    headers = dict(signer().headers("DELETE", "/containers/abc", target_node="node-1"))
    headers[agent.TARGET_HEADER] = "node-1"
    method, target = "DELETE", "/containers/abc"
    if change == "method":
        method = "GET"
    elif change == "target":
        target = "/containers/xyz"
    elif change == "node":
        headers[agent.TARGET_HEADER] = "node-2"
    elif change == "garbage signature":
        headers[agent.SIGNATURE_HEADER] = "not base64!"
    else:
        headers[agent.PUBLIC_KEY_HEADER] = "zz" + headers[agent.PUBLIC_KEY_HEADER][2:]
    assert refused(agent.RequestVerifier(), method, target, headers) == "invalid request signature"


def test_a_paired_agent_refuses_another_server_even_after_a_restart(tmp_path):
    pin = str(tmp_path / "server.pub")
    first, second = signer(), signer()
    agent.RequestVerifier(pin_path=pin).verify("GET", "/info", dict(first.headers("GET", "/info")))
    assert stat.S_IMODE(os.stat(pin).st_mode) == 0o600
    restarted = agent.RequestVerifier(pin_path=pin)
    assert "already paired with another Portainer server" in refused(restarted, "GET", "/info",
                                                                     second.headers("GET", "/info"))
    restarted.verify("GET", "/info", dict(first.headers("GET", "/info")))


def test_with_a_secret_any_server_proving_it_is_accepted_and_others_are_refused():
    verifier = agent.RequestVerifier(secret="agent secret")
    for server in (signer(), signer()):
        verifier.verify("GET", "/info", dict(server.headers("GET", "/info", secret="agent secret")))
    assert verifier.pinned is None
    assert "did not prove the agent secret" in refused(verifier, "GET", "/info", signer().headers("GET", "/info"))
    assert "did not prove the agent secret" in refused(verifier, "GET", "/info",
                                                       signer().headers("GET", "/info", secret="guess"))


def test_the_servers_signing_key_is_made_once_and_kept_owner_readable(tmp_path):
    path = str(tmp_path / "agent_signature.pem")
    key = agent.load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert agent.RequestSigner(agent.load_or_create_signing_key(path)).public_key == agent.RequestSigner(key).public_key


def test_agents_of_a_cluster_prove_the_shared_secret_to_each_other():
    headers = dict(agent.cluster_headers("cluster secret", "GET", "/containers/json"))
    agent.verify_cluster_headers("cluster secret", "GET", "/containers/json", headers)
    for secret, target in (("other secret", "/containers/json"), ("cluster secret", "/images/json")):
        with pytest.raises(agent.AgentAuthError, match="does not prove the agent secret"):
            agent.verify_cluster_headers(secret, "GET", target, headers)
    stale = dict(headers, **{agent.TIMESTAMP_HEADER: str(int(time.time()) - 3600)})
    with pytest.raises(agent.AgentAuthError, match="outside the accepted window"):
        agent.verify_cluster_headers("cluster secret", "GET", "/containers/json", stale)


@pytest.mark.parametrize("key_class", [agent.OpenSSLEcdsaKey, agent.CryptographyEcdsaKey])
def test_both_signature_checks_accept_the_servers_signature_and_refuse_any_other(key_class):
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    if key_class is agent.OpenSSLEcdsaKey:
        assert agent.OpenSSLEcdsaKey.library(), "the agent checks signatures through Python's own libcrypto here"
    server = ec.generate_private_key(ec.SECP256R1())
    der = server.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    key = key_class(der)
    signature = server.sign(b"GET /info", ec.ECDSA(hashes.SHA256()))
    assert key.verifies(signature, b"GET /info")
    assert not key.verifies(signature, b"GET /infp")
    assert not key.verifies(signature[:-1], b"GET /info")
    assert not key.verifies(ec.generate_private_key(ec.SECP256R1()).sign(b"GET /info", ec.ECDSA(hashes.SHA256())),
                            b"GET /info")
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for not_a_key in (other, der + b"\0", der[:-1], b""):
        with pytest.raises(ValueError):
            key_class(not_a_key)
