"""LDAP settings and filters, in-process (`make test-fast`): what a username or an administrator's filter can put
into a directory search, and how LDAPSettings are read and merged. The directory itself is in test_ldap.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import portainer

# An RFC 4515 assertion value: any character but these five, which appear only as \XX escapes.
SAFE_VALUE = re.compile(r"(?:[^*()\\\x00]|\\[0-9a-f]{2})*")


@given(st.text())
def test_no_username_can_bring_an_active_filter_character_into_a_search(username):
    escaped = portainer.ldap_filter_value(username)
    assert SAFE_VALUE.fullmatch(escaped)
    # and it decodes back to what was typed: the search is for exactly that name
    assert re.sub(r"\\([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), escaped) == username


def test_the_five_characters_of_rfc_4515_are_escaped():
    assert portainer.ldap_filter_value("alice)(uid=*") == r"alice\29\28uid=\2a"
    assert portainer.ldap_filter_value("a\\b\0") == r"a\5cb\00"
    assert portainer.ldap_filter_value("émile.o'brien") == "émile.o'brien"


@pytest.mark.parametrize("text", ["(objectClass=inetOrgPerson)", " (&(a=b)(|(c=d)(e=f))) ", r"(cn=a\29b)", ""])
def test_an_administrators_filter_in_parentheses_is_kept(text):
    assert portainer.check_ldap_filter(text, "Filter") == text.strip()


@pytest.mark.parametrize("text", ["(a=b)(c=d)", "a=b", "(a=b", "(a=b))", ")(", "(" * 2000 + ")" * 2000])
def test_a_filter_that_is_not_one_parenthesised_filter_is_refused(text):
    with pytest.raises(portainer.BadRequest, match="Filter must be one LDAP filter"):
        portainer.check_ldap_filter(text, "Filter")


@pytest.mark.parametrize("name", ["uid", "sAMAccountName", "member", "2.5.4.3"])
def test_attribute_names_as_rfc_4512_writes_them(name):
    assert portainer.check_ldap_attribute(name, "UserNameAttribute") == name


@pytest.mark.parametrize("name", ["uid)(x", "uid=*", "", "1uid", "a b"])
def test_an_attribute_name_that_could_change_a_filter_is_refused(name):
    with pytest.raises(portainer.BadRequest):
        portainer.check_ldap_attribute(name, "UserNameAttribute")


@pytest.mark.parametrize("url,parsed", [
    ("ldap.example.com:636", ("", "ldap.example.com", 636)), ("ldaps://ldap.example.com", ("ldaps", "ldap.example.com", 0)),
    ("LDAP://10.0.0.1:389/", ("ldap", "10.0.0.1", 389)), ("[::1]:3890", ("", "::1", 3890)), ("dc1", ("", "dc1", 0))])
def test_ldap_server_addresses(url, parsed):
    assert portainer.parse_ldap_url(url) == parsed


@pytest.mark.parametrize("url", ["http://x:1", "host:0", "host:99999", "host:abc", "ho st:1", ":389", "a/b:1"])
def test_a_server_address_that_is_not_host_port_is_refused(url):
    with pytest.raises(portainer.BadRequest):
        portainer.parse_ldap_url(url)


def test_settings_sent_back_as_answered_keep_what_the_server_set():
    stored = portainer.Directory.merged_ldap_settings({}, {
        "URL": "ldap.example.com:636", "SearchSettings": [{"BaseDN": "ou=people,dc=x", "UserNameAttribute": ""}],
        "GroupSearchSettings": [{"GroupBaseDN": "", "GroupFilter": "", "GroupAttribute": ""}]})
    assert stored["URLs"] == ["ldap.example.com:636"] and stored["URL"] == "ldap.example.com:636"
    assert stored["SearchSettings"] == [{"BaseDN": "ou=people,dc=x", "Filter": "", "UserNameAttribute": "uid"}]
    assert stored["GroupSearchSettings"] == []  # the empty row Portainer's answer carries
    stored["TLSConfig"]["TLSCACert"] = "/data/tls/ldap/ca.pem"
    again = portainer.Directory.merged_ldap_settings(stored, {"TLSConfig": {"TLS": True, "TLSCACert": "/etc/shadow"},
                                                              "AutoCreateUsers": True})
    assert again["TLSConfig"]["TLSCACert"] == "/data/tls/ldap/ca.pem"  # a path is never taken from a client
    assert again["AutoCreateUsers"] is True and again["URLs"] == ["ldap.example.com:636"]


def test_ldaps_url_with_tls_off_is_refused():
    with pytest.raises(portainer.BadRequest, match="ldaps://"):
        portainer.Directory.merged_ldap_settings({}, {"URLs": ["ldaps://x"], "TLSConfig": {"TLS": False}})


def test_enabling_ldap_without_the_library_says_what_to_install(tmp_path):
    script = ("import sys; sys.modules['ldap3'] = None\n"
              "import portainer\n"
              "store = portainer.Store(sys.argv[1]); store.acquire(); store.load()\n"
              "directory = portainer.Directory(store, b'k' * 32)\n"
              "try:\n"
              "    directory.settings_changes(portainer.current_settings(store), {'AuthenticationMethod': 2})\n"
              "except portainer.BadRequest as exc:\n"
              "    print(exc.message, '|', exc.details)\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=60)
    assert "needs the Python package ldap3" in out.stdout, out.stderr
    assert "python3-ldap3 (Debian)" in out.stdout and "pip install ldap3 (PyPI)" in out.stdout
