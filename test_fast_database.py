"""The PostgreSQL store's pure parts: how two servers' changes to one record merge, and its flags.

Fast unit tests (`make test-fast`): no database; test_multi_server.py runs the store on a real PostgreSQL.
"""
from __future__ import annotations

import sys

import pytest

import portainer

BASE = {"Id": 1, "Name": "local", "PublicURL": "", "TagIds": []}


def test_changes_to_different_fields_of_one_record_on_two_servers_are_both_kept():
    mine = {**BASE, "PublicURL": "10.0.0.1"}
    theirs = {**BASE, "Name": "edge"}
    assert portainer.merge_record("environment 1", BASE, mine, theirs) == {**BASE, "PublicURL": "10.0.0.1",
                                                                           "Name": "edge"}


def test_a_field_removed_here_and_a_field_changed_there_are_both_kept():
    mine = {key: value for key, value in BASE.items() if key != "PublicURL"}
    theirs = {**BASE, "Name": "edge"}
    assert portainer.merge_record("environment 1", BASE, mine, theirs) == {"Id": 1, "Name": "edge", "TagIds": []}


def test_the_same_field_changed_differently_on_two_servers_is_a_conflict_not_a_lost_update():
    with pytest.raises(portainer.Conflict, match="Name"):
        portainer.merge_record("environment 1", BASE, {**BASE, "Name": "a"}, {**BASE, "Name": "b"})


def test_the_same_change_made_on_two_servers_is_no_conflict():
    assert portainer.merge_record("environment 1", BASE, {**BASE, "Name": "a"}, {**BASE, "Name": "a"})["Name"] == "a"


def test_a_list_both_servers_appended_to_is_a_conflict():
    with pytest.raises(portainer.Conflict):
        portainer.merge_record("environment 1", BASE, {**BASE, "TagIds": [1]}, {**BASE, "TagIds": [2]})


def test_true_and_one_are_different_values():
    with pytest.raises(portainer.Conflict):
        portainer.merge_record("settings", {"x": 0}, {"x": 1}, {"x": True})


def test_a_record_changed_here_and_deleted_there_is_a_conflict_and_a_deletion_here_wins():
    with pytest.raises(portainer.Conflict, match="deleted on another server"):
        portainer.merge_record("user 2", BASE, {**BASE, "Name": "a"}, None)
    assert portainer.merge_record("user 2", BASE, None, {**BASE, "Name": "b"}) is None


def test_an_id_created_on_two_servers_at_once_is_a_conflict():
    with pytest.raises(portainer.Conflict, match="created on another server"):
        portainer.merge_record("tag 3", None, {"ID": 3, "Name": "a"}, {"ID": 3, "Name": "b"})


def test_the_same_default_record_made_on_two_servers_is_no_conflict():
    group = {"Id": 1, "Name": "Unassigned"}
    assert portainer.merge_record("environment group 1", None, dict(group), dict(group)) == group


def test_a_file_is_merged_whole():
    with pytest.raises(portainer.Conflict):
        portainer.merge_record("shared file compose/1/docker-compose.yml", {"sha256": "0", "sealed": "x"},
                               {"sha256": "1", "sealed": "y"}, {"sha256": "2", "sealed": "z"}, atomic=True)


def test_logged_out_sessions_from_two_servers_are_all_kept():
    assert portainer.merge_record("revoked_tokens", {"a": 1}, {"a": 1, "b": 2}, {"a": 1, "c": 3}) == \
        {"a": 1, "b": 2, "c": 3}


def test_a_database_url_in_messages_has_no_password():
    assert portainer.redact_database_url("postgresql://portainer:s3cret@db:5432/fleet") == \
        "postgresql://portainer:***@db:5432/fleet"
    assert portainer.redact_database_url("postgresql://db/fleet") == "postgresql://db/fleet"


def test_the_database_needs_the_shared_secrets_key_file(monkeypatch, capsys):
    monkeypatch.delenv("PORTAINER_SECRETS_KEY_FILE", raising=False)
    with pytest.raises(SystemExit):
        portainer.parse_args(["--database", "postgresql://db/fleet"])
    assert "--secrets-key-file" in capsys.readouterr().err


def test_without_a_database_flag_the_json_file_store_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("PORTAINER_DATABASE", raising=False)
    config = portainer.parse_args(["--data", str(tmp_path)])
    store = portainer.open_store(config)
    try:
        assert type(store) is portainer.Store
        assert type(portainer.leadership_for(store)) is portainer.SoleServer
    finally:
        store.release()


def test_a_database_url_of_another_kind_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    config = portainer.parse_args(["--data", str(tmp_path / "d"), "--database", "mysql://db/fleet",
                                   "--secrets-key-file", str(key)])
    with pytest.raises(SystemExit, match="postgresql://"):
        portainer.open_store(config)


def test_a_short_secrets_key_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_bytes(b"short")
    with pytest.raises(SystemExit, match="at least 32"):
        portainer.read_secrets_key(str(key))


def test_without_the_driver_the_message_names_the_pypi_and_debian_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(SystemExit) as refused:
        portainer.import_asyncpg()
    assert "pip install asyncpg" in str(refused.value) and "python3-asyncpg" in str(refused.value)
