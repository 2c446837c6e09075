"""Signing in with a company's LDAP directory: a real OpenLDAP slapd (Debian), seeded by the test with users and
groups, serving LDAPS with a certificate from a CA the test makes, and StartTLS on its plain port."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import requests

import test_ui
from conftest import ADMIN_PASSWORD, SLOT, free_port, start_server, wait_until

# test_ui's browser and tab fixtures, shared rather than copied.
browser = test_ui.browser
open_page = test_ui.open_page

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=org"
ROOT_DN, ROOT_PASSWORD = f"cn=admin,{SUFFIX}", "root secret of the test directory"
READER_DN, READER_PASSWORD = f"cn=reader,{SUFFIX}", "the reader account's own password"
PASSWORDS = {"alice": "alice's directory password", "bob": "bob's directory password",
             "carol": "carol's directory password", "erin": "erin's directory password"}
GROUPS = {"developers": ["alice", "carol"], "operators": ["alice", "bob"]}
TEST_ROOT = f"/tmp/portainer-py-ldap-test{SLOT}"

pytestmark = pytest.mark.skipif(not os.path.exists(SLAPD) or not shutil.which("ldapadd"),
                                reason="Debian slapd and ldap-utils are not installed (make test-deps)")


def make_ca_and_server_certificate(directory: str) -> None:
    """ca.pem, and server.pem/server.key for 127.0.0.1 and localhost signed by it (the CA's key is thrown away)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portainer.py test directory CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
              .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                          x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    with open(os.path.join(directory, "ca.pem"), "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.pem"), "wb") as f:
        f.write(server.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "server.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


SLAPD_CONF = """include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {root}/slapd.pid
TLSCACertificateFile {root}/ca.pem
TLSCertificateFile {root}/server.pem
TLSCertificateKeyFile {root}/server.key
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw "{root_password}"
directory {root}/db
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by dn.exact="{reader}" read
  by * none
"""


def seed_ldif() -> str:
    entries = [f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
               f"dn: {READER_DN}\nobjectClass: simpleSecurityObject\nobjectClass: organizationalRole\ncn: reader\n"
               f"userPassword: {READER_PASSWORD}\n",
               f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
               f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n"]
    for name, password in PASSWORDS.items():
        entries.append(f"dn: uid={name},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\n"
                       f"sn: {name}\nuserPassword: {password}\n")
    for group, members in GROUPS.items():
        entries.append(f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}\n"
                       + "".join(f"member: uid={m},ou=people,{SUFFIX}\n" for m in members))
    return "\n".join(entries)


class Slapd:
    """A real OpenLDAP server of the test's own: LDAPS on one port, plain LDAP (and StartTLS) on another."""

    def __init__(self, root: str):
        self.root = root
        self.ldaps_port, self.ldap_port = free_port(), free_port()
        self.process: subprocess.Popen | None = None

    @property
    def ca_pem(self) -> bytes:
        with open(os.path.join(self.root, "ca.pem"), "rb") as f:
            return f.read()

    def start(self) -> None:
        stop_slapd(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(os.path.join(self.root, "db"))
        make_ca_and_server_certificate(self.root)
        with open(os.path.join(self.root, "slapd.conf"), "w") as f:
            f.write(SLAPD_CONF.format(root=self.root, suffix=SUFFIX, root_dn=ROOT_DN, root_password=ROOT_PASSWORD,
                                      reader=READER_DN))
        log = open(os.path.join(self.root, "slapd.log"), "ab")
        self.process = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", os.path.join(self.root, "slapd.conf"),
             "-h", f"ldaps://127.0.0.1:{self.ldaps_port}/ ldap://127.0.0.1:{self.ldap_port}/"],
            stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: self.modify(["ldapwhoami"]).returncode == 0, timeout=20, interval=0.2,
                   message="slapd to answer")
        result = self.modify(["ldapadd"], seed_ldif())
        assert result.returncode == 0, result.stderr

    def modify(self, command: list[str], ldif: str = "") -> subprocess.CompletedProcess:
        """An ldap-utils command as the directory's root, over the plain port (the test's own side door)."""
        if self.process and self.process.poll() is not None:
            raise AssertionError(f"slapd exited {self.process.returncode}")
        return subprocess.run([*command, "-x", "-H", f"ldap://127.0.0.1:{self.ldap_port}", "-D", ROOT_DN,
                               "-w", ROOT_PASSWORD], input=ldif, capture_output=True, text=True, timeout=20)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def stop_slapd(root: str) -> None:
    """What a killed earlier run left: its slapd, found by its own pidfile (never by name)."""
    try:
        pid = int(open(os.path.join(root, "slapd.pid")).read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if root.encode() not in f.read():
                return  # the pid was reused by another process
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        pass


@pytest.fixture(scope="module")
def directory():
    slapd = Slapd(os.path.join(TEST_ROOT, "slapd"))
    slapd.start()
    yield slapd
    slapd.stop()


@pytest.fixture(scope="module")
def srv(engine, directory):
    data = os.path.join(TEST_ROOT, "server-data")
    shutil.rmtree(data, ignore_errors=True)
    server = start_server(data)
    yield server
    server.stop()
    shutil.rmtree(data, ignore_errors=True)


def ldap_settings(slapd: Slapd, **changes) -> dict:
    settings = {"AnonymousMode": False, "ReaderDN": READER_DN, "Password": READER_PASSWORD,
                "URLs": [f"127.0.0.1:{slapd.ldaps_port}"], "TLSConfig": {"TLS": True, "TLSSkipVerify": False},
                "StartTLS": False, "AutoCreateUsers": True,
                "SearchSettings": [{"BaseDN": f"ou=people,{SUFFIX}", "Filter": "(objectClass=inetOrgPerson)",
                                    "UserNameAttribute": "uid"}],
                "GroupSearchSettings": [{"GroupBaseDN": f"ou=groups,{SUFFIX}", "GroupFilter": "(objectClass=groupOfNames)",
                                         "GroupAttribute": "member"}]}
    settings.update(changes)
    return settings


def upload_ca(srv, pem: bytes) -> requests.Response:
    return srv.api("POST", "/api/upload/tls/ca?folder=ldap", files={"file": ("ca.pem", pem)})


def use_ldap(srv, slapd: Slapd, **changes) -> dict:
    assert upload_ca(srv, slapd.ca_pem).status_code == 204
    r = srv.api("PUT", "/api/settings", json={"AuthenticationMethod": 2, "LDAPSettings": ldap_settings(slapd, **changes)})
    assert r.status_code == 200, r.text
    return r.json()


def sign_in(srv, username: str, password: str) -> requests.Response:
    return requests.post(srv.url + "/api/auth", json={"Username": username, "Password": password}, timeout=60)


def user_named(srv, name: str) -> dict | None:
    return next((u for u in srv.api("GET", "/api/users").json() if u["Username"] == name), None)


def team_names_of(srv, user_id: int) -> set[str]:
    teams = {t["Id"]: t["Name"] for t in srv.api("GET", "/api/teams").json()}
    return {teams[m["TeamID"]] for m in srv.api("GET", f"/api/users/{user_id}/memberships").json()}


def auth_log(srv) -> list[dict]:
    return srv.api("GET", "/api/useractivity/authlogs").json()["logs"]


def test_directory_user_signs_in_over_ldaps_with_the_uploaded_ca_and_is_created_on_first_login(srv, directory):
    settings = use_ldap(srv, directory)
    assert settings["AuthenticationMethod"] == 2
    ldap = settings["LDAPSettings"]
    assert "Password" not in ldap and not any(k.startswith("_") for k in settings)
    assert ldap["URLs"] == [f"127.0.0.1:{directory.ldaps_port}"] and ldap["TLSConfig"]["TLSCACert"].endswith("ca.pem")
    assert srv.api("GET", "/api/settings").json() == settings
    with open(os.path.join(srv.data, "portainer.json"), "rb") as f:  # sealed at rest
        assert READER_PASSWORD.encode() not in f.read()
    assert READER_PASSWORD not in srv.log()

    assert user_named(srv, "carol") is None
    r = sign_in(srv, "carol", PASSWORDS["carol"])
    assert r.status_code == 200, r.text
    carol = user_named(srv, "carol")
    assert carol and carol["Role"] == 2
    me = requests.get(srv.url + "/api/users/me", headers={"Authorization": "Bearer " + r.json()["jwt"]}, timeout=10)
    assert me.json()["Username"] == "carol"
    # the second login is the same user
    assert sign_in(srv, "carol", PASSWORDS["carol"]).status_code == 200
    assert [u["Username"] for u in srv.api("GET", "/api/users").json()].count("carol") == 1

    entries = auth_log(srv)
    assert any(e["username"] == "carol" and e["context"] == "LDAP" and e["result"] == "success" for e in entries)
    activity = srv.api("GET", "/api/useractivity/logs").json()["logs"]
    assert any(e["path"] == "/api/settings" and e["method"] == "PUT" for e in activity)
    assert any(e["path"] == "/api/upload/tls/ca" for e in activity)


def test_team_membership_follows_directory_groups_between_logins(srv, directory):
    use_ldap(srv, directory)
    teams = {name: srv.api("POST", "/api/teams", json={"Name": name}).json()["Id"]
             for name in ("developers", "Operators", "auditors")}
    assert sign_in(srv, "alice", PASSWORDS["alice"]).status_code == 200
    alice = user_named(srv, "alice")
    assert team_names_of(srv, alice["Id"]) == {"developers", "Operators"}  # names match case-insensitively
    # a membership an administrator gave stays whatever the directory says
    assert srv.api("POST", "/api/team_memberships",
                   json={"UserID": alice["Id"], "TeamID": teams["auditors"], "Role": 2}).status_code == 200

    result = directory.modify(["ldapmodify"], f"dn: cn=developers,ou=groups,{SUFFIX}\nchangetype: modify\n"
                                              f"delete: member\nmember: uid=alice,ou=people,{SUFFIX}\n")
    assert result.returncode == 0, result.stderr
    assert sign_in(srv, "alice", PASSWORDS["alice"]).status_code == 200
    assert team_names_of(srv, alice["Id"]) == {"Operators", "auditors"}

    result = directory.modify(["ldapmodify"], f"dn: cn=developers,ou=groups,{SUFFIX}\nchangetype: modify\n"
                                              f"add: member\nmember: uid=alice,ou=people,{SUFFIX}\n")
    assert result.returncode == 0, result.stderr
    assert sign_in(srv, "alice", PASSWORDS["alice"]).status_code == 200
    assert team_names_of(srv, alice["Id"]) == {"developers", "Operators", "auditors"}


def test_wrong_password_and_unknown_user_are_refused_alike(srv, directory):
    use_ldap(srv, directory)
    wrong = sign_in(srv, "bob", "not bob's password at all")
    unknown = sign_in(srv, "mallory", "whatever she tries here")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"] == "invalid credentials"
    assert user_named(srv, "mallory") is None
    failures = [e for e in auth_log(srv) if e["result"] == "failure" and e["context"] == "LDAP"]
    assert {"bob", "mallory"} <= {e["username"] for e in failures}


@pytest.mark.parametrize("username", ["al*", "a*e", "alice)(uid=alice", "*", "alice\0", "alice\\"])
def test_filter_characters_in_a_username_cannot_widen_the_search(srv, directory, username):
    use_ldap(srv, directory)
    r = sign_in(srv, username, PASSWORDS["alice"])
    assert r.status_code == 401, r.text
    assert user_named(srv, username) is None
    assert sign_in(srv, "alice", PASSWORDS["alice"]).status_code == 200  # the same password, the real name


def test_a_directory_that_is_down_leaves_the_internal_admin_able_to_sign_in(srv, directory):
    use_ldap(srv, directory, URLs=[f"127.0.0.1:{free_port()}"])
    started = time.monotonic()
    refused = sign_in(srv, "bob", PASSWORDS["bob"])
    assert refused.status_code == 503, refused.text
    assert "LDAP directory cannot be used" in refused.json()["message"] and "connect" in refused.json()["message"]
    assert time.monotonic() - started < 30
    assert any(e["username"] == "bob" and e["context"] == "LDAP" and e["result"] == "failure" for e in auth_log(srv))
    admin = sign_in(srv, "admin", ADMIN_PASSWORD)
    assert admin.status_code == 200, admin.text
    assert any(e["username"] == "admin" and e["context"] == "Portainer" and e["result"] == "success"
               for e in auth_log(srv))
    # failover: the first server is down, the second answers
    use_ldap(srv, directory, URLs=[f"127.0.0.1:{free_port()}", f"localhost:{directory.ldaps_port}"])
    assert sign_in(srv, "bob", PASSWORDS["bob"]).status_code == 200


def test_starttls_on_the_plain_port_and_plain_text_only_when_chosen(srv, directory):
    starttls = {"URLs": [f"ldap://127.0.0.1:{directory.ldap_port}"], "TLSConfig": {"TLS": False}, "StartTLS": True}
    use_ldap(srv, directory, **starttls)
    assert sign_in(srv, "bob", PASSWORDS["bob"]).status_code == 200
    plain = ldap_settings(directory, URLs=[f"127.0.0.1:{directory.ldap_port}"], TLSConfig={"TLS": False},
                          StartTLS=False)
    refused = srv.api("PUT", "/api/settings", json={"AuthenticationMethod": 2, "LDAPSettings": plain})
    assert refused.status_code == 400 and "readable on the network" in refused.json()["message"]
    assert srv.api("GET", "/api/settings").json()["LDAPSettings"]["StartTLS"] is True  # nothing half-written
    plain["AllowPlainText"] = True
    assert srv.api("PUT", "/api/settings", json={"AuthenticationMethod": 2, "LDAPSettings": plain}).status_code == 200
    assert sign_in(srv, "bob", PASSWORDS["bob"]).status_code == 200


def check(srv, settings: dict) -> requests.Response:
    return srv.api("POST", "/api/ldap/check", json={"LDAPSettings": settings})


def test_ldap_check_names_the_step_that_failed(srv, directory):
    assert upload_ca(srv, directory.ca_pem).status_code == 204
    good = check(srv, ldap_settings(directory))
    assert good.status_code == 200, good.text
    steps = good.json()["Steps"]
    assert "TLS, certificate verified" in steps[0] and steps[1] == f"bound as {READER_DN}"
    assert f"{len(PASSWORDS)} user(s)" in steps[2] and "2 group(s)" in steps[3]
    teams = {t["Name"].lower(): t["Id"] for t in srv.api("GET", "/api/teams").json()}
    assert good.json()["Groups"] == [{"Name": name, "TeamID": teams.get(name)} for name in ("developers", "operators")]

    down = check(srv, ldap_settings(directory, URLs=[f"127.0.0.1:{free_port()}"]))
    assert down.status_code == 502 and down.json()["message"].startswith("connect failed"), down.text
    starttls = check(srv, ldap_settings(directory, URLs=[f"ldap://127.0.0.1:{directory.ldap_port}"],
                                        TLSConfig={"TLS": False}, StartTLS=True))
    assert starttls.status_code == 200 and "StartTLS" in starttls.json()["Steps"][0], starttls.text
    not_tls = check(srv, ldap_settings(directory, URLs=[f"127.0.0.1:{directory.ldap_port}"]))  # LDAPS to plain
    assert not_tls.status_code == 502 and not_tls.json()["message"].startswith("TLS failed"), not_tls.text
    bind = check(srv, ldap_settings(directory, Password="not the reader's password"))
    assert bind.status_code == 502 and bind.json()["message"].startswith("bind failed"), bind.text
    assert "invalidCredentials" in bind.json()["message"]
    search = check(srv, ldap_settings(directory, SearchSettings=[
        {"BaseDN": f"ou=nobody,{SUFFIX}", "Filter": "", "UserNameAttribute": "uid"}]))
    assert search.status_code == 502 and search.json()["message"].startswith("search failed"), search.text
    assert "noSuchObject" in search.json()["message"]
    bad_filter = check(srv, ldap_settings(directory, SearchSettings=[
        {"BaseDN": SUFFIX, "Filter": "(objectClass=*", "UserNameAttribute": "uid"}]))
    assert bad_filter.status_code == 400 and "Filter" in bad_filter.json()["message"]

    # a CA that did not sign the directory's certificate: TLS fails and says so
    other = os.path.join(TEST_ROOT, "other-ca")
    os.makedirs(other, exist_ok=True)
    make_ca_and_server_certificate(other)
    assert upload_ca(srv, open(os.path.join(other, "ca.pem"), "rb").read()).status_code == 204
    untrusted = check(srv, ldap_settings(directory))
    assert untrusted.status_code == 502 and untrusted.json()["message"].startswith("TLS failed"), untrusted.text
    assert "certificate" in untrusted.json()["message"].lower()
    assert upload_ca(srv, b"not a certificate").status_code == 400
    assert upload_ca(srv, directory.ca_pem).status_code == 204
    log = srv.log()  # what went wrong is logged; no password ever is
    assert READER_PASSWORD not in log and not any(password in log for password in PASSWORDS.values())


def test_standard_user_cannot_change_or_test_the_directory_settings(srv, directory):
    password = "a long enough password"
    user = srv.api("POST", "/api/users", json={"Username": "dora", "Password": password, "Role": 2})
    assert user.status_code == 200, user.text
    srv.api("PUT", "/api/settings", json={"AuthenticationMethod": 1})
    token = srv.login("dora", password)
    assert srv.api("POST", "/api/ldap/check", token=token, json={"LDAPSettings": ldap_settings(directory)}).status_code == 403
    assert srv.api("PUT", "/api/settings", token=token, json={"AuthenticationMethod": 1}).status_code == 403
    assert srv.api("POST", "/api/upload/tls/ca?folder=ldap", token=token,
                   files={"file": ("ca.pem", directory.ca_pem)}).status_code == 403


def test_the_bind_password_is_sealed_at_rest_and_kept_when_left_out(srv, directory):
    use_ldap(srv, directory)
    with open(os.path.join(srv.data, "portainer.json")) as f:
        stored = json.load(f)["settings"]
    assert stored["_LDAPBindPassword"].startswith("v1:") and "Password" not in stored["LDAPSettings"]
    # what GET answered, sent back without the password: the stored one is kept
    settings = srv.api("GET", "/api/settings").json()
    assert srv.api("PUT", "/api/settings", json=settings).status_code == 200
    assert sign_in(srv, "bob", PASSWORDS["bob"]).status_code == 200
    assert check(srv, settings["LDAPSettings"]).status_code == 200


def reload_page(page, selector: str) -> None:
    """Reload until the page shows `selector`: Chromium drops requests in flight (ERR_NETWORK_CHANGED) when
    other tests on the machine add or remove network interfaces."""
    for attempt in range(3):
        page.reload()
        try:
            page.locator(selector).wait_for(timeout=5000)
            return
        except test_ui.playwright_api.TimeoutError:
            if attempt == 2:
                raise


@pytest.mark.browser
def test_administrator_configures_ldap_on_the_authentication_page_and_tests_it(fresh_server, directory, open_page,
                                                                               tmp_path):
    srv = fresh_server()
    team = srv.api("POST", "/api/teams", json={"Name": "developers"}).json()
    ca_file = tmp_path / "directory-ca.pem"
    ca_file.write_bytes(directory.ca_pem)
    tab = open_page(height=1850)
    page = tab.page
    test_ui.log_in(page, srv)
    page.goto(srv.url + "/#/settings")
    page.get_by_role("link", name="Authentication settings").click()
    form = page.locator("#auth-settings")
    assert not form.get_by_role("region", name="LDAP settings").is_visible()  # internal: nothing to fill
    form.get_by_label("OAuth", exact=True).check()  # the OAuth form, with its own save, takes the LDAP part's place
    oauth = page.get_by_role("region", name="OAuth settings")
    oauth.get_by_role("button", name="Save OAuth settings").wait_for()
    assert oauth.get_by_label("Issuer URL").is_visible()
    assert not form.get_by_role("button", name="Save authentication settings").is_visible()
    form.get_by_label("LDAP", exact=True).check()
    assert not oauth.is_visible()
    ldap = form.get_by_role("region", name="LDAP settings")
    ldap.get_by_label("Servers").fill(f"127.0.0.1:{directory.ldaps_port}")
    ldap.get_by_label("Connection security").select_option("ldaps")
    ldap.get_by_label("CA certificate (PEM)").set_input_files(str(ca_file))
    ldap.get_by_label("Reader DN").fill(READER_DN)
    ldap.get_by_label("Password (leave empty").fill("not the reader's password")
    ldap.get_by_label("Base DN", exact=True).fill(f"ou=people,{SUFFIX}")
    ldap.get_by_label("Filter (optional)", exact=True).fill("(objectClass=inetOrgPerson)")
    ldap.get_by_label("Create users on their first sign-in").check()
    ldap.get_by_label("Group base DN").fill(f"ou=groups,{SUFFIX}")
    ldap.get_by_label("Group filter (optional)").fill("(objectClass=groupOfNames)")

    result = page.locator("#ldap-check")
    ldap.get_by_role("button", name="Test connectivity").click()
    result.get_by_text("Connection test failed.").wait_for()
    assert "bind failed" in result.inner_text() and "invalidCredentials" in result.inner_text()

    ldap.get_by_label("Password (leave empty").fill(READER_PASSWORD)
    ldap.get_by_role("button", name="Test connectivity").click()
    result.get_by_text("Connection test passed.").wait_for()
    assert f"bound as {READER_DN}" in result.inner_text()
    mapping = result.locator("table")
    assert mapping.get_by_role("link", name="developers").get_attribute("href") == f"#/teams/{team['Id']}"
    assert "no team of that name" in mapping.locator("tr", has_text="operators").inner_text()
    tab.shot("authentication-ldap")

    form.get_by_role("button", name="Save authentication settings").click()
    page.get_by_text("Authentication settings saved").wait_for()
    settings = srv.api("GET", "/api/settings").json()
    assert settings["AuthenticationMethod"] == 2 and settings["LDAPSettings"]["TLSConfig"]["TLSCACert"]
    assert settings["LDAPSettings"]["SearchSettings"][0]["UserNameAttribute"] == "uid"
    signed_in = sign_in(srv, "alice", PASSWORDS["alice"])
    assert signed_in.status_code == 200, signed_in.text
    assert team_names_of(srv, user_named(srv, "alice")["Id"]) == {"developers"}

    reload_page(page, "#auth-settings")  # what was saved is what the page shows again, the password excepted
    assert page.get_by_label("LDAP", exact=True).is_checked()
    assert page.get_by_label("Servers").input_value() == f"127.0.0.1:{directory.ldaps_port}"
    assert page.get_by_label("Password (leave empty").input_value() == ""
    assert "A CA certificate is uploaded" in page.locator("#ldap-ca-state").inner_text()
    # the failed test's 502, and requests Chromium dropped when the machine's network changed, are expected
    assert [e for e in tab.console_errors if "502" not in e and "ERR_NETWORK_CHANGED" not in e] == []


def test_without_automatic_creation_an_administrator_adds_the_directory_user_who_then_makes_an_api_key(srv, directory):
    use_ldap(srv, directory, AutoCreateUsers=False)
    refused = sign_in(srv, "erin", PASSWORDS["erin"])
    assert refused.status_code == 401 and "no user here yet" in refused.json()["message"]
    assert user_named(srv, "erin") is None
    made = srv.api("POST", "/api/users", json={"Username": "erin", "Role": 2})  # no password: the directory's
    assert made.status_code == 200, made.text
    signed_in = sign_in(srv, "erin", PASSWORDS["erin"])
    assert signed_in.status_code == 200, signed_in.text
    token = signed_in.json()["jwt"]
    wrong = srv.api("POST", f"/api/users/{made.json()['Id']}/tokens", token=token,
                    json={"password": "not erin's password", "description": "ci"})
    assert wrong.status_code == 403
    key = srv.api("POST", f"/api/users/{made.json()['Id']}/tokens", token=token,
                  json={"password": PASSWORDS["erin"], "description": "ci"})
    assert key.status_code == 200, key.text
    assert srv.api("GET", "/api/users/me", api_key=key.json()["rawAPIKey"]).json()["Username"] == "erin"
    # with the internal method, a user without a password cannot be made and erin cannot sign in
    assert srv.api("PUT", "/api/settings", json={"AuthenticationMethod": 1}).status_code == 200
    assert srv.api("POST", "/api/users", json={"Username": "frank", "Role": 2}).status_code == 400
    assert sign_in(srv, "erin", PASSWORDS["erin"]).status_code == 401
