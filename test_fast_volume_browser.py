"""The agent's volume browser: a user browsing a volume reaches that volume's files and nothing else.

Fast unit tests (`make test-fast`): the real agent.confined_path on a directory tree made in tmp_path.
"""
from __future__ import annotations

import os

import pytest

import agent


@pytest.fixture
def volume(tmp_path):
    """A volume's directory (as the agent finds it: a real path) beside a secret the browser must never reach."""
    root = tmp_path / "volumes" / "data" / "_data"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "app.log").write_text("line\n")
    (tmp_path / "secret.txt").write_text("host secret")
    return os.path.realpath(root)


def refusal(root: str, path: str) -> agent.AgentRequestError:
    with pytest.raises(agent.AgentRequestError) as caught:
        agent.confined_path(root, path)
    return caught.value


@pytest.mark.parametrize("path, inside", [
    ("/", ""), ("", ""), (".", ""), ("/logs", "logs"), ("logs/app.log", "logs/app.log"),
    ("//logs///app.log", "logs/app.log"), ("./logs/./app.log", "logs/app.log"), ("logs\\app.log", "logs/app.log"),
    ("/new/file.txt", "new/file.txt"),
])
def test_a_path_in_the_volume_is_found_however_it_is_written(volume, path, inside):
    assert agent.confined_path(volume, path) == os.path.join(volume, inside).rstrip("/")


@pytest.mark.parametrize("path", ["..", "../secret.txt", "/logs/../../secret.txt", "logs/..", "..\\secret.txt"])
def test_a_path_climbing_out_with_dot_dot_is_refused(volume, path):
    error = refusal(volume, path)
    assert (error.status, error.message) == (400, "path may not contain '..'")


def test_a_path_with_a_nul_byte_is_refused(volume):
    error = refusal(volume, "logs/app.log\x00.png")
    assert (error.status, error.message) == (400, "path may not contain NUL")


def test_a_symbolic_link_leading_out_of_the_volume_is_refused(volume, tmp_path):
    os.symlink(tmp_path / "secret.txt", os.path.join(volume, "escape"))
    os.symlink("/", os.path.join(volume, "logs", "root"))
    for path in ("escape", "/logs/root/etc/passwd"):
        error = refusal(volume, path)
        assert (error.status, error.message) == (403, "path leaves the volume (through a symbolic link)")


def test_a_symbolic_link_to_a_sibling_directory_with_the_same_prefix_is_refused(volume):
    sibling = volume + "-other"
    os.mkdir(sibling)
    os.symlink(sibling, os.path.join(volume, "look-alike"))
    assert refusal(volume, "look-alike").status == 403


def test_a_symbolic_link_that_stays_inside_the_volume_is_followed(volume):
    os.symlink("logs/app.log", os.path.join(volume, "latest.log"))
    assert agent.confined_path(volume, "latest.log") == os.path.join(volume, "logs", "app.log")
