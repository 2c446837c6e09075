"""The store's collections: how every handler reads and changes users, environments, stacks and the rest.

Fast unit tests (`make test-fast`): a real Store in a temporary data directory, committed to disk and loaded
back, no server and no engine.
"""
from __future__ import annotations

import asyncio
import json
import os

import pytest

import portainer


@pytest.fixture
def store(tmp_path):
    store = portainer.Store(str(tmp_path))
    store.acquire()
    store.load()
    yield store
    store.release()


def commit(store: portainer.Store) -> None:
    asyncio.run(store.commit())


def reloaded(store: portainer.Store) -> portainer.Store:
    again = portainer.Store(store.directory)
    again.load()
    return again


def test_an_added_record_gets_the_next_id_and_is_found_by_it(store):
    first = store.users.add({"Username": "alice", "Role": 2})
    second = store.users.add({"Username": "bob", "Role": 2})
    assert (first["Id"], second["Id"]) == (1, 2)
    assert list(first) == ["Id", "Username", "Role"]  # the id comes first, as the API has always shown it
    assert store.users.get(2) is second and store.users.get("2") is second
    assert 1 in store.users and 3 not in store.users
    assert [u["Username"] for u in store.users] == ["alice", "bob"]
    assert len(store.users) == 2


def test_a_missing_record_is_a_404_that_names_its_kind_and_id(store):
    with pytest.raises(portainer.NotFound, match="^environment 7 not found$"):
        store.endpoints.get(7)
    with pytest.raises(portainer.NotFound, match="^edge group 3 not found$"):
        store.edge_groups.delete(3)
    with pytest.raises(portainer.NotFound, match="^team membership 9 not found$"):
        store.team_memberships.update(9, {"Role": 1})
    assert store.stacks.find(1) is None


def test_a_deleted_id_is_never_given_again(store):
    store.teams.add({"Name": "ops"})
    store.teams.add({"Name": "dev"})
    assert store.teams.delete(2)["Name"] == "dev"
    assert store.teams.add({"Name": "qa"})["Id"] == 3


def test_an_id_reserved_for_files_written_first_is_the_one_the_record_keeps(store):
    reserved = store.stacks.new_id()
    stack = store.stacks.add({"Id": reserved, "Name": "web"})
    assert store.stacks.get(reserved) is stack
    assert store.stacks.add({"Name": "db"})["Id"] == reserved + 1


def test_tags_are_counted_by_their_own_id_field(store):
    store.tags.add({"Name": "prod"})
    store.tags.add({"Name": "lab"})
    assert [t["ID"] for t in store.tags.in_id_order()] == [1, 2]


def test_update_changes_the_stored_record_and_delete_where_removes_only_matches(store):
    store.api_keys.add({"UserId": 1, "Description": "ci"})
    store.api_keys.add({"UserId": 2, "Description": "laptop"})
    store.api_keys.add({"UserId": 1, "Description": "backup"})
    assert store.api_keys.update(2, {"Description": "desk"}) is store.api_keys.get(2)
    removed = store.api_keys.delete_where(lambda key: key["UserId"] == 1)
    assert [k["Description"] for k in removed] == ["ci", "backup"]
    assert [k["Description"] for k in store.api_keys] == ["desk"]


def test_secret_fields_stay_in_the_store_and_never_reach_the_public_view(store):
    endpoint = store.endpoints.add({"Name": "edge", "Type": 4, "_EdgeSecret": "s3cret"})
    registry = store.registries.add({"Name": "hub", "_SealedPassword": "sealed"})
    assert store.endpoints.public_view(endpoint) == {"Id": endpoint["Id"], "Name": "edge", "Type": 4}
    assert "_SealedPassword" not in store.registries.public_view(registry)
    assert endpoint["_EdgeSecret"] == "s3cret"  # the view is a copy: the record keeps its secret


def test_committed_records_load_back_from_disk_with_their_ids_as_string_keys(store):
    store.users.add({"Username": "alice", "Role": 1})
    store.edge_jobs.add({"Name": "backup", "_Pending": [4]})
    commit(store)
    with open(os.path.join(store.directory, portainer.Store.FILE)) as f:
        document = json.load(f)
    assert document["users"] == {"1": {"Id": 1, "Username": "alice", "Role": 1}}  # the on-disk format
    again = reloaded(store)
    assert again.users.get(1)["Username"] == "alice"
    assert again.edge_jobs.get(1)["_Pending"] == [4]
    assert again.users.add({"Username": "bob", "Role": 2})["Id"] == 2


def test_a_data_directory_written_before_collections_loads_unchanged(tmp_path):
    """A document as older versions wrote it (and as backups hold it) is read as it is."""
    document = {"schema_version": 1, "instance_id": "x", "next_id": {"users": 6}, "settings": {},
                "users": {"5": {"Id": 5, "Username": "admin", "Role": 1}}, "endpoints": {}, "api_keys": {},
                "revoked_tokens": {}, "teams": {}, "team_memberships": {}, "tags": {}}
    (tmp_path / portainer.Store.FILE).write_text(json.dumps(document))
    store = portainer.Store(str(tmp_path))
    store.load()
    assert store.users.get(5)["Username"] == "admin"
    assert len(store.stacks) == 0 and store.resource_controls.find(1) is None
    assert store.users.add({"Username": "bob", "Role": 2})["Id"] == 6


def test_a_reload_is_seen_by_the_collections_at_once(store):
    store.users.add({"Username": "alice", "Role": 1})
    commit(store)
    store.users.add({"Username": "not saved", "Role": 2})
    store.load()  # what a failed write or a restore does
    assert [u["Username"] for u in store.users] == ["alice"]


# ---- environments: each kind answers for its own type ----------------------------------------------------------

def test_every_kind_of_environment_is_listed_once_under_its_own_type():
    kinds = portainer.ENVIRONMENT_KINDS
    assert sorted(kinds) == [portainer.ENDPOINT_DOCKER, portainer.ENDPOINT_AGENT, portainer.ENDPOINT_EDGE]
    assert all(kind.type == kind_type for kind_type, kind in kinds.items())


def test_an_environment_connects_through_its_kind_and_an_unknown_type_is_a_clear_400(store):
    from aiohttp import web
    app = web.Application()
    environments = app[portainer.ENVIRONMENTS] = portainer.Environments(store, store.directory)
    environments.kinds[portainer.ENDPOINT_DOCKER] = portainer.DockerApiKind(app)
    local = store.endpoints.add({"Name": "local", "Type": portainer.ENDPOINT_DOCKER, "URL": "unix:///nowhere.sock",
                                 "TLSConfig": {"TLS": False}, "_Note": "secret"})
    odd = store.endpoints.add({"Name": "odd", "Type": 9, "URL": ""})
    connector = environments.connector(local["Id"])
    try:
        assert isinstance(connector, portainer.SocketConnector)
    finally:
        environments.close()
    with pytest.raises(portainer.BadRequest, match="has type 9, which this server cannot connect to"):
        environments.connector(odd["Id"])
    assert "_Note" not in environments.public_view(local)
