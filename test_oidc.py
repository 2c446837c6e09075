"""OAuth 2.0 / OpenID Connect sign-in against a real OpenID provider: the certified Node.js `oidc-provider`
(tests/oidc-provider, installed with `npm ci` when missing), started on 127.0.0.1 by the fixtures with one client.
Tokens the server must refuse come from real provider instances: one signing with a key the issuer does not
publish, one whose clock is ten minutes behind; the nonce and state cases tamper with what the browser carries."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field

import pytest
import requests
import test_ui
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import HERE, SLOT, free_port, start_server, wait_until

PROVIDER_DIR = os.path.join(HERE, "tests", "oidc-provider")
RUN_DIR = f"/tmp/portainer-py-oidc-{SLOT}"  # configs and pidfiles: a killed run's providers are stopped first
CLIENT_ID = "portainer"
CLIENT_SECRET = "the client secret of portainer.py at the provider"
ACCOUNTS = {
    "alice": {"preferred_username": "alice", "email": "alice@example.org", "groups": ["devs"]},
    "bob": {"preferred_username": "bob", "email": "bob@example.org", "groups": []},
    "carol": {"preferred_username": "carol", "email": "carol@example.org", "groups": ["devs", "ops"]},
    "dave": {"preferred_username": "dave", "email": "dave@example.org"},
    "erin": {"preferred_username": "erin", "email": "erin@example.org"},
    "mallory": {"preferred_username": "admin", "email": "mallory@example.org"},
}


def b64url_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(kid: str) -> dict:
    """A private RSA signing key as a JWK, for a provider's `jwks` configuration."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.private_numbers()
    public = numbers.public_numbers
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64url_int(public.n),
            "e": b64url_int(public.e), "d": b64url_int(numbers.d), "p": b64url_int(numbers.p),
            "q": b64url_int(numbers.q), "dp": b64url_int(numbers.dmp1), "dq": b64url_int(numbers.dmq1),
            "qi": b64url_int(numbers.iqmp)}


def install_provider() -> None:
    if not os.path.isdir(os.path.join(PROVIDER_DIR, "node_modules", "oidc-provider")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, check=True, timeout=600,
                       capture_output=True)


def stop_leftover_providers() -> None:
    os.makedirs(RUN_DIR, exist_ok=True)
    for name in os.listdir(RUN_DIR):
        if name.endswith(".pid"):
            with contextlib.suppress(ValueError, OSError):
                with open(os.path.join(RUN_DIR, name)) as f:
                    pid = int(f.read().strip())
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"op.mjs" in f.read():
                        os.kill(pid, signal.SIGTERM)
            os.unlink(os.path.join(RUN_DIR, name))


@dataclass
class OpenIDProvider:
    """One oidc-provider process: its issuer (the URL tokens name), where it listens, its clients and keys."""

    name: str
    port: int
    issuer: str
    clients: list
    keys: list
    clock_offset_seconds: int = 0
    id_token_seconds: int = 0
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        config = os.path.join(RUN_DIR, f"{self.name}.json")
        with open(config, "w") as f:
            json.dump({"issuer": self.issuer, "port": self.port, "clients": self.clients,
                       "jwks": {"keys": self.keys}, "accounts": ACCOUNTS,
                       "clockOffsetSeconds": self.clock_offset_seconds, "idTokenSeconds": self.id_token_seconds}, f)
        log = open(os.path.join(RUN_DIR, f"{self.name}.log"), "ab")
        self.process = subprocess.Popen(["node", "op.mjs", config], cwd=PROVIDER_DIR, stdout=log,
                                        stderr=subprocess.STDOUT)
        with open(os.path.join(RUN_DIR, f"{self.name}.pid"), "w") as f:
            f.write(str(self.process.pid))

        def up():
            assert self.process.poll() is None, f"oidc-provider {self.name} exited"
            with contextlib.suppress(requests.ConnectionError):
                return requests.get(self.url + "/jwks", timeout=2).status_code == 200
            return False
        wait_until(up, timeout=30, message=f"oidc-provider {self.name}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(RUN_DIR, f"{self.name}.pid"))


@dataclass
class OpenIDTestbed:
    server: object
    provider: OpenIDProvider  # the company's provider
    forger: OpenIDProvider  # names the provider as issuer, signs with a key the provider does not publish
    slow_clock: OpenIDProvider  # its clock is 10 minutes behind, its ID tokens live 1: they are born expired
    teams: dict

    @property
    def redirect_uri(self) -> str:
        return self.server.url + "/"

    def configure(self, provider: OpenIDProvider | None = None, **overrides) -> None:
        """Point the server at a provider (discovery from its issuer), with OAuth turned on."""
        provider = provider or self.provider
        settings = {"IssuerURL": provider.issuer, "ClientID": CLIENT_ID, "ClientSecret": CLIENT_SECRET,
                    "Scopes": "openid profile email groups", "UserIdentifier": "preferred_username",
                    "AuthorizationURI": "", "AccessTokenURI": "", "JWKSURI": "", "ResourceURI": "",
                    "OAuthAutoCreateUsers": True, "DefaultTeamID": self.teams["everyone"], "DisplayName": "Example ID",
                    "TeamMemberships": {"OAuthClaimName": ""}, "LogoutURI": "", **overrides}
        r = self.server.api("PUT", "/api/settings", json={"AuthenticationMethod": 3, "OAuthSettings": settings})
        assert r.status_code == 200, r.text


def client_for(redirect_uri: str, client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict:
    return {"client_id": client_id, "client_secret": secret, "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code"], "response_types": ["code"]}


@pytest.fixture(scope="module")
def oidc(engine, tmp_path_factory):
    install_provider()
    stop_leftover_providers()
    port, https_port = free_port(), free_port()
    redirect = f"http://127.0.0.1:{port}/"
    clients = [client_for(redirect), client_for("http://127.0.0.1:9/other-app", "other-app", "other secret")]
    provider_port = free_port()
    issuer = f"http://127.0.0.1:{provider_port}"
    provider = OpenIDProvider("provider", provider_port, issuer, clients, [rsa_jwk("signing-key-1")])
    forger = OpenIDProvider("forger", free_port(), issuer, clients, [rsa_jwk("signing-key-1")])
    slow_port = free_port()
    slow_clock = OpenIDProvider("slow-clock", slow_port, f"http://127.0.0.1:{slow_port}", clients,
                                [rsa_jwk("slow-key")], clock_offset_seconds=600, id_token_seconds=60)
    started = []
    srv = None
    try:
        for p in (provider, forger, slow_clock):
            p.start()
            started.append(p)
        srv = start_server(str(tmp_path_factory.mktemp("oidc") / "data"), ports=(port, https_port))
        teams = {}
        for name in ("everyone", "devs", "ops"):
            r = srv.api("POST", "/api/teams", json={"Name": name})
            assert r.status_code == 200, r.text
            teams[name] = r.json()["Id"]
        yield OpenIDTestbed(srv, provider, forger, slow_clock, teams)
    finally:
        if srv:
            srv.stop()
        for p in started:
            p.stop()


def follow_provider(browser: requests.Session, url: str, login: str, redirect_prefix: str) -> dict:
    """What a person does at the provider's own pages (devInteractions): sign in, allow; answers the query the
    provider sends the browser back to the redirect URI with."""
    for _ in range(20):
        r = browser.get(url, allow_redirects=False, timeout=30)
        while r.status_code in (302, 303):
            location = urllib.parse.urljoin(r.url, r.headers["Location"])
            if location.startswith(redirect_prefix):
                return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            r = browser.get(location, allow_redirects=False, timeout=30)
        assert r.status_code == 200, (r.status_code, r.text[:500])
        action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
        prompt = re.search(r'name="prompt" value="(\w+)"', r.text)
        assert action and prompt, r.text[:1000]
        form = {"prompt": prompt.group(1)}
        if prompt.group(1) == "login":
            form.update({"login": login, "password": "any password: devInteractions takes every one"})
        r = browser.post(urllib.parse.urljoin(r.url, html.unescape(action.group(1))), data=form,
                         allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303), (r.status_code, r.text[:500])
        url = urllib.parse.urljoin(r.url, r.headers["Location"])
        if url.startswith(redirect_prefix):
            return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    raise AssertionError("the provider never sent the browser back")


def start_sign_in(oidc: OpenIDTestbed, browser: requests.Session) -> str:
    r = browser.get(oidc.server.url + "/api/auth/oauth/login", allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def sign_in(oidc: OpenIDTestbed, login: str, browser: requests.Session | None = None,
            tamper=None) -> tuple[requests.Response, dict, requests.Session]:
    """The whole code flow as a browser does it; `tamper` may change the authorization URL on the way."""
    browser = browser or requests.Session()
    location = start_sign_in(oidc, browser)
    if tamper:
        location = tamper(location)
    back = follow_provider(browser, location, login, oidc.redirect_uri)
    assert "code" in back, back
    r = browser.post(oidc.server.url + "/api/auth/oauth/validate", json={"code": back["code"],
                                                                         "state": back.get("state", "")},
                     timeout=30)
    return r, back, browser


def auth_log(oidc: OpenIDTestbed) -> list[dict]:
    r = oidc.server.api("GET", "/api/useractivity/authlogs", params={"limit": 500})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["logs"] if isinstance(body, dict) else body


def wait_for_auth_entry(oidc: OpenIDTestbed, username: str, result: str) -> None:
    wait_until(lambda: any(e.get("username") == username and e.get("type") == "oauth" and e.get("result") == result
                           for e in auth_log(oidc)), timeout=15, message=f"oauth {result} of {username} in the log")


def test_a_new_user_signs_in_through_the_provider_lands_in_the_default_team_and_logs_out(oidc):
    oidc.configure()
    public = requests.get(oidc.server.url + "/api/settings/public", timeout=10).json()
    assert public["AuthenticationMethod"] == 3 and public["OAuthLoginURI"] == "/api/auth/oauth/login"
    assert public["OAuthDisplayName"] == "Example ID"
    settings = oidc.server.api("GET", "/api/settings").json()
    assert settings["OAuthSettings"]["ClientSecret"] == "" and settings["OAuthSettings"]["ClientSecretSet"] is True
    with open(os.path.join(oidc.server.data, "portainer.json")) as f:
        assert CLIENT_SECRET not in f.read()  # sealed at rest

    browser = requests.Session()
    location = start_sign_in(oidc, browser)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert location.startswith(oidc.provider.issuer + "/auth?")
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == oidc.redirect_uri and "openid" in query["scope"].split()
    assert "code_verifier" not in location and CLIENT_SECRET not in location
    back = follow_provider(browser, location, "bob", oidc.redirect_uri)
    r = browser.post(oidc.server.url + "/api/auth/oauth/validate", json=back, timeout=30)
    assert r.status_code == 200, r.text
    token = r.json()["jwt"]
    me = oidc.server.api("GET", "/api/users/me", token=token).json()
    assert me["Username"] == "bob" and me["Role"] == 2
    memberships = oidc.server.api("GET", f"/api/users/{me['Id']}/memberships").json()
    assert [m["TeamID"] for m in memberships] == [oidc.teams["everyone"]]
    # No password of ours: bob cannot log in with one.
    assert requests.post(oidc.server.url + "/api/auth", json={"Username": "bob", "Password": "a guess at bob's"},
                         timeout=10).status_code == 401
    wait_for_auth_entry(oidc, "bob", "success")

    assert oidc.server.api("POST", "/api/auth/logout", token=token).status_code == 204
    assert oidc.server.api("GET", "/api/users/me", token=token).status_code == 401


def test_team_membership_follows_the_groups_claim_at_each_sign_in(oidc):
    oidc.configure(TeamMemberships={"OAuthClaimName": "groups"})
    r, _, _ = sign_in(oidc, "carol")
    assert r.status_code == 200, r.text
    me = oidc.server.api("GET", "/api/users/me", token=r.json()["jwt"]).json()
    teams = {m["TeamID"] for m in oidc.server.api("GET", f"/api/users/{me['Id']}/memberships").json()}
    assert teams == {oidc.teams["devs"], oidc.teams["ops"]}  # the claim decides: the default team is not in it


def test_a_replayed_state_or_one_from_another_browser_is_refused(oidc):
    oidc.configure()
    r, back, browser = sign_in(oidc, "alice")
    assert r.status_code == 200, r.text
    replay = browser.post(oidc.server.url + "/api/auth/oauth/validate", json=back, timeout=30)
    assert replay.status_code == 400 and "already used" in replay.json()["message"], replay.text

    victim = requests.Session()
    location = start_sign_in(oidc, victim)
    back = follow_provider(victim, location, "alice", oidc.redirect_uri)
    stranger = requests.post(oidc.server.url + "/api/auth/oauth/validate", json=back, timeout=30)
    assert stranger.status_code == 400 and "another browser" in stranger.json()["message"], stranger.text
    missing = victim.post(oidc.server.url + "/api/auth/oauth/validate", json={"code": back["code"]}, timeout=30)
    assert missing.status_code == 400 and "state is required" in missing.json()["message"]
    wait_for_auth_entry(oidc, "(OAuth sign-in)", "failure")


def test_an_id_token_signed_with_a_key_the_provider_does_not_publish_is_refused(oidc):
    # The forger names the real issuer and the real key id, but signs with its own key; the server checks the
    # signature with the keys the real provider publishes.
    forger = oidc.forger
    oidc.configure(forger, IssuerURL=oidc.provider.issuer, AuthorizationURI=forger.url + "/auth",
                   AccessTokenURI=forger.url + "/token", JWKSURI=oidc.provider.url + "/jwks",
                   ResourceURI=forger.url + "/me")
    r, _, _ = sign_in(oidc, "alice")
    assert r.status_code == 401, r.text
    assert r.json()["message"] == "the ID token's signature does not verify with the provider's key"


def test_an_expired_id_token_is_refused(oidc):
    oidc.configure(oidc.slow_clock)
    r, _, _ = sign_in(oidc, "alice")
    assert r.status_code == 401, r.text
    assert r.json()["message"] == "the ID token has expired"


def test_an_id_token_carrying_another_nonce_is_refused(oidc):
    oidc.configure()

    def other_nonce(location: str) -> str:
        return re.sub(r"nonce=[^&]+", "nonce=" + secrets.token_urlsafe(32), location)
    r, _, _ = sign_in(oidc, "alice", tamper=other_nonce)
    assert r.status_code == 401, r.text
    assert r.json()["message"] == "the ID token's nonce is not the one this sign-in sent"


def test_a_code_obtained_without_the_servers_pkce_challenge_is_refused(oidc):
    oidc.configure()

    def other_challenge(location: str) -> str:
        verifier = secrets.token_urlsafe(64)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        return re.sub(r"code_challenge=[^&]+", "code_challenge=" + challenge, location)
    r, _, _ = sign_in(oidc, "alice", tamper=other_challenge)
    assert r.status_code == 401 and "refused the sign-in code" in r.json()["message"], r.text


def test_an_id_token_issued_to_another_client_is_refused(oidc):
    """A conforming token endpoint only issues ID tokens for the client that authenticated, so a real token for
    another client is checked by the same verifier the validate route uses, against the real provider's JWKS."""
    sys.path.insert(0, HERE)
    import portainer
    browser = requests.Session()
    verifier, nonce = secrets.token_urlsafe(64), secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:9/other-app"
    query = urllib.parse.urlencode({"response_type": "code", "client_id": "other-app", "redirect_uri": redirect,
                                    "scope": "openid", "state": "s", "nonce": nonce, "code_challenge": challenge,
                                    "code_challenge_method": "S256"})
    back = follow_provider(browser, f"{oidc.provider.url}/auth?{query}", "alice", redirect)
    tokens = requests.post(oidc.provider.url + "/token", auth=("other-app", "other secret"), timeout=30,
                           data={"grant_type": "authorization_code", "code": back["code"], "redirect_uri": redirect,
                                 "code_verifier": verifier}).json()
    endpoints = {"issuer": oidc.provider.issuer, "jwks_uri": oidc.provider.url + "/jwks"}

    async def verify(client_id: str) -> dict:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            return await portainer.OpenIDSignIn(b"k" * 32).verified_claims(session, tokens["id_token"], endpoints,
                                                                           client_id, nonce)
    assert asyncio.run(verify("other-app"))["sub"] == "alice"  # the token is sound for its own client
    with pytest.raises(portainer.Unauthorized, match="issued to another client"):
        asyncio.run(verify(CLIENT_ID))


def test_the_provider_rotates_its_signing_key_and_sign_in_goes_on(oidc):
    oidc.configure()
    r, _, _ = sign_in(oidc, "alice")
    assert r.status_code == 200, r.text  # the server has the provider's JWKS cached now
    provider = oidc.provider
    provider.stop()
    provider.keys = [rsa_jwk("signing-key-2")]
    provider.start()
    try:
        r, _, _ = sign_in(oidc, "alice")
        assert r.status_code == 200, r.text
    finally:
        provider.stop()
        provider.keys = [rsa_jwk("signing-key-1")]
        provider.start()


def test_without_automatic_creation_an_unknown_user_is_refused_and_logged(oidc):
    oidc.configure(OAuthAutoCreateUsers=False)
    r, _, _ = sign_in(oidc, "dave")  # dave signs in nowhere else in these tests
    assert r.status_code == 403 and "there is no user 'dave'" in r.json()["message"], r.text
    wait_for_auth_entry(oidc, "dave", "failure")
    # The administrator creates dave, without a password (OAuth is on): now he signs in, and only through it.
    created = oidc.server.api("POST", "/api/users", json={"Username": "dave", "Role": 2})
    assert created.status_code == 200, created.text
    r, _, _ = sign_in(oidc, "dave")
    assert r.status_code == 200, r.text
    assert oidc.server.api("GET", "/api/users/me", token=r.json()["jwt"]).json()["Id"] == created.json()["Id"]


def test_a_provider_account_named_like_the_local_administrator_does_not_become_it(oidc):
    oidc.configure()
    r, _, _ = sign_in(oidc, "mallory")  # at many providers a user picks their own preferred_username
    assert r.status_code == 403 and "password of this server" in r.json()["message"], r.text
    wait_for_auth_entry(oidc, "admin", "failure")


def test_turning_oauth_on_says_what_is_missing(oidc, monkeypatch):
    r = oidc.server.api("PUT", "/api/settings", json={"AuthenticationMethod": 3, "OAuthSettings": {"ClientID": ""}})
    assert r.status_code == 400 and "ClientID is required" in r.json()["message"], r.text
    r = oidc.server.api("PUT", "/api/settings", json={"OAuthSettings": {"IssuerURL": "ftp://example.org"}})
    assert r.status_code == 400 and "IssuerURL" in r.json()["message"], r.text
    sys.path.insert(0, HERE)
    import portainer
    monkeypatch.setitem(sys.modules, "jwt", None)  # as on a host without PyJWT
    with pytest.raises(portainer.BadRequest) as refused:
        portainer.check_oauth_can_be_enabled({"ClientID": "x", "IssuerURL": "http://127.0.0.1:1"})
    assert "python3-jwt" in refused.value.message and "PyJWT" in refused.value.message


browser = test_ui.browser  # test_ui's browser and tab fixtures, shared rather than copied
open_page = test_ui.open_page


@pytest.mark.browser
def test_the_admin_turns_oauth_on_in_the_ui_and_a_user_signs_in_through_the_providers_login_page(oidc, open_page):
    tab = open_page()
    page = tab.page
    test_ui.log_in(page, oidc.server)
    page.goto(oidc.server.url + "/#/settings")
    page.get_by_role("link", name="Authentication: OAuth 2.0 / OpenID Connect sign-in").click()
    form = page.locator("#oauth-settings")
    form.wait_for()
    form.get_by_label("Use OAuth sign-in").check()
    page.locator("#oauth-DisplayName").fill("Example ID")
    page.locator("#oauth-IssuerURL").fill(oidc.provider.issuer)
    page.locator("#oauth-ClientID").fill(CLIENT_ID)
    page.locator("#oauth-ClientSecret").fill(CLIENT_SECRET)
    page.locator("#oauth-Scopes").fill("openid profile email")
    page.locator("#oauth-UserIdentifier").fill("preferred_username")
    for name in ("AuthorizationURI", "AccessTokenURI", "JWKSURI", "ResourceURI", "LogoutURI", "TeamClaim"):
        page.locator(f"#oauth-{name}").fill("")
    form.get_by_label("Create users on their first sign-in").check()
    page.locator("#oauth-DefaultTeamID").select_option(label="everyone")
    page.evaluate("window.scrollTo(0, 0)")
    tab.shot("oauth-settings")
    form.get_by_role("button", name="Save OAuth settings").click()
    form.get_by_text("Saved.").wait_for()
    saved = oidc.server.api("GET", "/api/settings").json()
    assert saved["AuthenticationMethod"] == 3 and saved["OAuthSettings"]["ClientSecretSet"]
    assert saved["OAuthSettings"]["DefaultTeamID"] == oidc.teams["everyone"]

    page.get_by_role("button", name="Log out").click()
    button = page.get_by_role("link", name="Sign in with Example ID")
    button.wait_for()
    tab.shot("login-oauth")
    logout = oidc.provider.url + "/session/end"
    r = oidc.server.api("PUT", "/api/settings", json={"OAuthSettings": {"LogoutURI": logout}})
    assert r.status_code == 200, r.text
    button.click()
    page.locator("input[name=login]").fill("erin")  # the provider's own login page
    page.locator("input[name=password]").fill("any password")
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()  # the provider asks to allow portainer.py
    page.locator(".who", has_text="erin").wait_for()
    assert "code=" not in page.url and "state=" not in page.url and page.url.endswith("#/home"), page.url
    erin = next(u for u in oidc.server.api("GET", "/api/users").json() if u["Username"] == "erin")
    memberships = oidc.server.api("GET", f"/api/users/{erin['Id']}/memberships").json()
    assert [m["TeamID"] for m in memberships] == [oidc.teams["everyone"]]
    erin_session = next(c["value"] for c in page.context.cookies() if c["name"] == "portainer_api_key")

    page.get_by_role("button", name="Log out").click()  # ends our session, then the provider's
    page.wait_for_url(logout + "*")
    assert oidc.server.api("GET", "/api/users/me", token=erin_session).status_code == 401
    # (The provider's own pages ask a font host this machine cannot reach: their console errors are not ours.)
    assert not [failed for failed in tab.failed_responses if oidc.server.url in failed], tab.failed_responses
