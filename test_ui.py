"""The web UI in a real browser (Debian Chromium driven by Playwright): a user's first hour, clicked through.

Screenshots of the main pages are written to docs/screenshots/ as the tests run; README.md shows them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.server
import io
import os
import re
import subprocess
import tarfile
import threading

import aiohttp
import docker
import pytest
import requests

import conftest
from conftest import ADMIN_PASSWORD, BUSYBOX, HERE, SLOT, TEST_LABEL, free_port, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = conftest.CHROMIUM_ARGS
SCREENSHOTS = os.path.join(HERE, "docs", "screenshots")
PREFIX = f"ptpy-ui{SLOT}"
SWARM_HOST = 8  # namespace host index; conftest's remote_host is 1, access 3, agent 5-7, stacks 1-2


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (make test-deps)")
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class BrowserPage:
    """One browser tab with what went wrong in it: console errors and Content-Security-Policy violations."""

    def __init__(self, context):
        self.context = context
        self.page = context.new_page()
        self.page.set_default_timeout(15000)
        self.console_errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("dialog", lambda d: d.accept())
        self.failed_responses: list[str] = []
        self.page.on("response", lambda r: r.status >= 400 and self.failed_responses.append(
            f"{r.status} {r.request.method} {r.url}"))

    def shot(self, name: str) -> None:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        self.page.wait_for_timeout(150)  # let the last animation frame paint
        self.page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"))


@pytest.fixture
def open_page(browser, request):
    contexts = []
    tabs = []

    def make(width: int = 1280, height: int = 800, dark: bool = False) -> BrowserPage:
        context = browser.new_context(viewport={"width": width, "height": height},
                                      color_scheme="dark" if dark else "light", accept_downloads=True)
        contexts.append(context)
        tabs.append(BrowserPage(context))
        return tabs[-1]

    yield make
    # The last state of every tab, for whoever reads a failure (test-artifacts/ is not committed).
    artifacts = os.path.join(HERE, "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    for number, tab in enumerate(tabs):
        print(f"tab {number}: failed responses {tab.failed_responses}, console errors {tab.console_errors}")
        with contextlib.suppress(Exception):
            tab.page.screenshot(path=os.path.join(artifacts, f"{request.node.name}-{number}.png"))
    for context in contexts:
        context.close()


def random_layer_tar(size: int = 3 * 1024 * 1024) -> bytes:
    """A root file system with data no engine has yet, so pulling it really downloads a layer."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo("data/random.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def local_registry(engine, tmp_path):
    """A real image registry (Distribution) on 127.0.0.1 holding one image the engine does not have."""
    port = free_port()
    (tmp_path / "registry.yml").write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/registry\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    process = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "registry.yml")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    repository = f"127.0.0.1:{port}/{PREFIX}/random"
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200,
                   message="the registry to answer")
        engine.api.import_image_from_data(random_layer_tar(), repository=repository, tag="1",
                                          changes=[f"LABEL {TEST_LABEL}=1"])
        for line in engine.api.push(repository, tag="1", stream=True, decode=True):
            assert "error" not in line, line
        engine.images.remove(f"{repository}:1", force=True)
        yield f"{repository}:1"
    finally:
        for image in engine.images.list(filters={"label": TEST_LABEL}):
            engine.images.remove(image.id, force=True)
        process.terminate()
        process.wait(10)


def terminal_text(tab) -> str:
    return tab.page.locator("#term").inner_text()


def type_in_terminal(tab, text: str) -> None:
    tab.page.locator("#term").click()
    tab.page.keyboard.type(text, delay=15)


def test_a_users_first_hour_clicked_through(fresh_server, engine, open_page, local_registry):
    srv = fresh_server(admin_password=None)
    tab = open_page()
    page = tab.page
    name = f"{PREFIX}-web"

    # First run: the administrator is created from the browser; analytics stay off unless ticked.
    page.goto(srv.url)
    page.get_by_label("Password (12 characters or more)").fill(ADMIN_PASSWORD)
    analytics = page.locator("#analytics")
    assert analytics.count() == 1 and not analytics.is_checked()
    page.get_by_label("Confirm password").fill("something else entirely")
    page.get_by_role("button", name="Create user").click()
    page.locator(".field-error", has_text="do not match").wait_for()
    page.get_by_label("Confirm password").fill(ADMIN_PASSWORD)
    tab.shot("setup")
    page.get_by_role("button", name="Create user").click()
    page.locator("#env-list .env").first.wait_for()
    assert srv.api("GET", "/api/settings", token=srv.login("admin", ADMIN_PASSWORD)).json()["EnableTelemetry"] is False

    # Log out and in again; a wrong password is reported next to the form.
    page.get_by_role("button", name="Log out").click()
    page.locator("#login").wait_for()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("alert").filter(has_text="invalid credentials").wait_for()
    tab.shot("login")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()

    # Home: the local environment, up, with its engine version.
    card = page.locator("#env-list .env", has_text="local")
    card.locator(".badge.up").wait_for()
    assert engine.version()["Version"] in card.inner_text()
    tab.shot("home")
    card.get_by_role("link", name="local").click()
    page.locator(".tile", has_text="Containers").wait_for()
    tab.shot("dashboard")

    # Run a container from the create form.
    page.locator("nav.side").get_by_role("link", name="Containers").click()
    page.get_by_role("link", name="Add container").click()
    page.locator("#create").wait_for()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Image").fill(BUSYBOX)
    page.get_by_label("Command").fill('sh -c "trap exit TERM; while true; do echo tick $(date +%s); sleep 1; done"')
    page.get_by_role("button", name="+ Publish a port").click()
    host_port = free_port()
    page.get_by_placeholder("host port, e.g. 8080").fill(str(host_port))
    page.get_by_placeholder("container port, e.g. 80").fill("80")
    page.get_by_role("button", name="+ Add label").click()
    page.get_by_placeholder("label name").fill(TEST_LABEL)
    page.get_by_placeholder("value").last.fill("1")
    tab.shot("container-create")
    page.get_by_role("button", name="Deploy the container").click()

    # Its logs stream in while it runs.
    page.locator("#c-state", has_text="running").wait_for()
    container = engine.containers.get(name)
    assert container.labels.get(TEST_LABEL) == "1"
    assert container.attrs["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == str(host_port)
    page.get_by_role("link", name="Inspect").click()
    page.locator(".tree summary", has_text="{").first.wait_for()
    page.locator(".tree details summary").filter(has_text=re.compile(r"^Config:")).click()
    page.locator(".tree .s", has_text=BUSYBOX).first.wait_for()
    tab.shot("container-inspect")
    page.get_by_role("link", name="Logs").click()
    page.locator("#logs", has_text="tick").wait_for()
    first = page.locator("#logs div").count()
    wait_until(lambda: page.locator("#logs div").count() > first, timeout=10, message="new log lines")
    page.get_by_placeholder("Search logs").fill("tick")
    page.locator("#logs mark").first.wait_for()
    page.get_by_label("Timestamps").check()
    page.locator("#logs .ts").first.wait_for()
    tab.shot("container-logs")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download").click()
    assert download.value.suggested_filename == f"{name}.log"
    assert "tick" in open(download.value.path()).read()

    page.get_by_role("link", name="Stats").click()
    page.locator("#ch-net .legend", has_text="received").wait_for()
    page.wait_for_timeout(2500)
    tab.shot("container-stats")

    # A console: `echo hi` answers hi, and vi edits a file.
    page.get_by_role("link", name="Console").click()
    page.get_by_role("button", name="Connect", exact=True).click()
    page.locator("#console-status", has_text="connected").wait_for()
    wait_until(lambda: "#" in terminal_text(tab), timeout=10, message="a shell prompt")
    type_in_terminal(tab, "echo hi\n")
    wait_until(lambda: re.search(r"^hi$", terminal_text(tab), re.M), timeout=10, message="hi in the terminal")
    type_in_terminal(tab, "vi /note.txt\n")
    wait_until(lambda: "/note.txt" in terminal_text(tab), timeout=10, message="vi to open")
    type_in_terminal(tab, "ihello from vi")
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)  # vi takes an Escape followed at once by more keys for an escape sequence
    type_in_terminal(tab, ":wq\n")
    type_in_terminal(tab, "clear; cat /note.txt\n")
    wait_until(lambda: re.search(r"^hello from vi$", terminal_text(tab), re.M), timeout=10, message="the saved file")
    type_in_terminal(tab, "ls --color=always / && printf '\\033[1;32mgreen\\033[0m\\n'\n")
    page.locator("#term span.fg10", has_text="green").wait_for()
    tab.shot("container-console")

    # Stop it and remove it from the list, in bulk.
    page.locator("nav.side").get_by_role("link", name="Containers").click()
    page.get_by_placeholder("Filter containers").fill(name)
    row = page.locator("#containers tbody tr", has_text=name)
    # A change made elsewhere (here with the Docker SDK) shows up without reloading, from the event stream.
    container.pause()
    row.locator("td", has_text="paused").wait_for(timeout=5000)
    container.unpause()
    row.locator("td", has_text="running").wait_for(timeout=5000)
    row.locator("input.select").check()
    tab.shot("containers")
    page.get_by_role("button", name="Stop", exact=True).click()
    row.locator("td", has_text="exited").wait_for()
    row.locator("input.select").check()
    page.get_by_role("button", name="Remove", exact=True).click()
    row.wait_for(state="detached")
    with pytest.raises(docker.errors.NotFound):
        engine.containers.get(name)

    # Pull an image from a real registry with a progress bar per layer.
    page.locator("nav.side").get_by_role("link", name="Images").click()
    page.locator("#pull").wait_for()
    page.get_by_label("Image", exact=True).fill(local_registry)
    page.get_by_role("button", name="Pull").click()
    page.locator("#pull-progress .layer progress").first.wait_for()
    page.locator(".toast", has_text="Pulled").wait_for(timeout=60000)
    layer = page.locator("#pull-progress .layer").first
    assert "complete" in layer.inner_text().lower()
    bar = layer.locator("progress")
    assert bar.get_attribute("value") == bar.get_attribute("max")
    engine.images.get(local_registry)
    page.get_by_placeholder("Filter images").fill(local_registry.split("/", 1)[1])
    tab.shot("images")

    # An API key for scripts, shown once.
    page.locator("nav.side").get_by_role("link", name="My account").click()
    page.locator("#key-create").wait_for()
    page.get_by_label("Description").fill("backup script")
    page.get_by_label("Your password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Add API key").click()
    raw_key = page.locator("#raw-key").inner_text().strip()
    assert raw_key.startswith("ptr_")
    assert srv.api("GET", "/api/users/me", api_key=raw_key).json()["Username"] == "admin"
    page.locator("#keys tbody tr", has_text="backup script").wait_for()
    tab.shot("account")

    # A user for a colleague, who then logs in.
    page.locator("nav.side").get_by_role("link", name="Users").click()
    page.locator("#users tbody tr", has_text="admin").wait_for()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password (12 characters or more)").fill("short")
    page.get_by_role("button", name="Create user").click()
    page.locator(".field-error", has_text="12").wait_for()
    page.get_by_label("Password (12 characters or more)").fill("alice's long password")
    page.get_by_role("button", name="Create user").click()
    page.locator("#users tbody tr", has_text="alice").wait_for()
    tab.shot("users")
    page.get_by_role("button", name="Log out").click()
    page.locator("#login").wait_for()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("alice's long password")
    page.get_by_role("button", name="Log in").click()
    page.locator("#env-list", has_text="No environment yet").wait_for()
    assert page.locator("nav.side").get_by_role("link", name="Users").count() == 0
    assert not [e for e in tab.console_errors if "Content Security Policy" in e or "Refused" in e], tab.console_errors


def test_console_runs_top_and_reports_resizes(fresh_server, engine, open_page):
    srv = fresh_server()
    container = engine.containers.run(BUSYBOX, ["sleep", "300"], name=f"{PREFIX}-top", detach=True,
                                      labels={TEST_LABEL: "1"})
    interactive = engine.containers.run(BUSYBOX, ["sh"], name=f"{PREFIX}-it", detach=True, tty=True,
                                        stdin_open=True, labels={TEST_LABEL: "1"})
    try:
        tab = open_page(1280, 800)
        page = tab.page
        log_in(page, srv)
        page.goto(srv.url + f"/#/env/1/containers/{container.id}/console")
        page.get_by_role("button", name="Connect", exact=True).click()
        page.locator("#console-status", has_text="connected").wait_for()
        wait_until(lambda: "#" in terminal_text(tab), timeout=10, message="a shell prompt")
        type_in_terminal(tab, "stty size\n")
        size = wait_until(lambda: re.search(r"^(\d+) (\d+)$", terminal_text(tab), re.M), timeout=10,
                          message="stty size")
        rows, cols = int(size.group(1)), int(size.group(2))
        assert cols > 80 and rows > 10
        # Output that scrolled away can be read again (Shift+PageUp), and typing returns to the live screen.
        type_in_terminal(tab, f"seq 1 {rows * 3}\n")
        wait_until(lambda: re.search(rf"^{rows * 3}$", terminal_text(tab), re.M), timeout=10, message="seq output")
        page.keyboard.press("Shift+PageUp")
        page.wait_for_timeout(200)
        earlier = terminal_text(tab)
        assert re.search(rf"^{rows * 2}$", earlier, re.M) and not re.search(rf"^{rows * 3}$", earlier, re.M), earlier
        type_in_terminal(tab, "clear\n")
        type_in_terminal(tab, "top\n")
        wait_until(lambda: "PID" in terminal_text(tab) and "Mem:" in terminal_text(tab), timeout=10,
                   message="top's screen")
        tab.shot("console-top")
        page.set_viewport_size({"width": 900, "height": 800})
        page.wait_for_timeout(500)
        page.locator("#term").click()
        page.keyboard.press("Control+C")
        wait_until(lambda: "PID" not in terminal_text(tab).split("\n")[-3:][0], timeout=10, message="top to end")
        type_in_terminal(tab, "clear; stty size\n")
        smaller = wait_until(lambda: re.search(r"^(\d+) (\d+)$", terminal_text(tab), re.M), timeout=10,
                             message="stty size after resize")
        assert int(smaller.group(2)) < cols

        # Attach to the main process of a container started with -it.
        page.goto(srv.url + f"/#/env/1/containers/{interactive.id}/console")
        # the route renders asynchronously: wait for this container's page, not the previous one's Attach button
        page.wait_for_function("name => document.title.startsWith(name)", arg=interactive.name)
        page.get_by_role("button", name="Attach").click()
        page.locator("#console-status", has_text="attached").wait_for()
        type_in_terminal(tab, "echo attached-$((6*7))\n")
        wait_until(lambda: re.search(r"^attached-42$", terminal_text(tab), re.M), timeout=10,
                   message="the attached shell's answer")
    finally:
        container.remove(force=True)
        interactive.remove(force=True)


def test_console_websocket_refuses_another_origin_and_a_missing_session(fresh_server, engine):
    srv = fresh_server()
    container = engine.containers.run(BUSYBOX, ["sleep", "60"], name=f"{PREFIX}-origin", detach=True,
                                      labels={TEST_LABEL: "1"})
    try:
        session = requests.Session()
        assert session.post(srv.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD}).ok
        url = srv.url + f"/api/endpoints/1/console/ws?containerId={container.id}&cmd=sh"
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        foreign = session.get(url, headers={**upgrade, "Origin": "http://evil.example"})
        assert foreign.status_code == 403 and "origin" in foreign.json()["message"].lower()
        anonymous = requests.get(url, headers={**upgrade, "Origin": srv.url})
        assert anonymous.status_code == 401
        same = session.get(url, headers={**upgrade, "Origin": srv.url}, stream=True)
        assert same.status_code == 101
        same.close()

        # Other users get the Docker proxy's rules: access to the environment, a role that may exec, ownership.
        password = "a long enough password"
        user = srv.api("POST", "/api/users", json={"Username": "bob", "Password": password, "Role": 2}).json()
        bob = requests.Session()
        assert bob.post(srv.url + "/api/auth", json={"Username": "bob", "Password": password}).ok

        def as_bob(role: int | None) -> requests.Response:
            policies = {str(user["Id"]): {"RoleId": role}} if role else {}
            assert srv.api("PUT", "/api/endpoints/1", json={"UserAccessPolicies": policies}).status_code == 200
            return bob.get(url, headers={**upgrade, "Origin": srv.url}, stream=True)

        assert as_bob(None).status_code == 403
        helpdesk = as_bob(3)
        assert helpdesk.status_code == 403 and "Helpdesk" in helpdesk.json()["message"]
        assert as_bob(4).status_code == 403  # a standard user, and the container is not theirs
        operator = as_bob(2)
        assert operator.status_code == 101
        operator.close()
    finally:
        container.remove(force=True)


def test_attach_to_a_container_without_a_tty_gives_plain_output(fresh_server, engine):
    """Docker multiplexes stdout/stderr of a non-TTY container; the console must unwrap the frames."""
    srv = fresh_server()
    container = engine.containers.run(BUSYBOX, ["sh"], name=f"{PREFIX}-notty", detach=True, stdin_open=True,
                                      labels={TEST_LABEL: "1"})
    url = srv.url.replace("http", "ws") + f"/api/endpoints/1/console/ws?containerId={container.id}&mode=attach"

    async def converse() -> bytes:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:
            login = await client.post(srv.url + "/api/auth", json={"Username": "admin", "Password": ADMIN_PASSWORD})
            assert login.status == 200
            async with client.ws_connect(url, origin=srv.url) as ws:
                async def read_for(seconds: float) -> bytes:
                    received = b""
                    with contextlib.suppress(asyncio.TimeoutError):
                        while True:
                            message = await asyncio.wait_for(ws.receive(), seconds)
                            assert message.type == aiohttp.WSMsgType.BINARY, message
                            received += message.data
                    return received

                # The engine hooks up stdout and stderr just after stdin: wait until both carry output.
                for _ in range(40):
                    await ws.send_bytes(b"echo ready-err >&2; echo ready-out\n")
                    seen = await read_for(0.5)
                    if b"ready-err" in seen and b"ready-out" in seen:
                        break
                await ws.send_bytes(b"echo plain-$((2+3)); echo oops >&2\n")
                return await read_for(1.0)

    try:
        # Playwright's sync API keeps an event loop in this thread, so the client gets a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            output = pool.submit(asyncio.run, converse()).result(60)
        # Plain text, no frame headers; stdout and stderr are separate pipes, so their order may vary.
        assert sorted(output.splitlines()) == [b"oops", b"plain-5"], output
    finally:
        container.remove(force=True)


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    requests_seen: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        RecordingHandler.requests_seen.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_content_security_policy_blocks_an_injected_request_to_another_origin(fresh_server, open_page):
    srv = fresh_server()
    # "Another origin": a web server on 127.0.0.2, which the policy must stop the page from reaching.
    outside = http.server.HTTPServer(("127.0.0.2", 0), RecordingHandler)
    threading.Thread(target=outside.serve_forever, daemon=True).start()
    target = f"http://127.0.0.2:{outside.server_port}"
    try:
        tab = open_page()
        page = tab.page
        page.goto(srv.url + "/#/login")
        page.get_by_label("Username").wait_for()
        violations = page.evaluate("""async target => {
            const seen = [];
            document.addEventListener('securitypolicyviolation', e => seen.push(e.violatedDirective + ' ' + e.blockedURI));
            const img = document.createElement('img'); img.src = target + '/img'; document.body.append(img);
            const s = document.createElement('script'); s.src = target + '/script.js'; document.body.append(s);
            const inline = document.createElement('script'); inline.textContent = 'window.injected = 1'; document.body.append(inline);
            const fetched = await fetch(target + '/fetch').then(() => 'reached', () => 'blocked');
            await new Promise(r => setTimeout(r, 500));
            return {seen, fetched, injected: window.injected || 0};
        }""", target)
        assert violations["fetched"] == "blocked"
        assert violations["injected"] == 0
        directives = " ".join(violations["seen"])
        assert "connect-src" in directives and "img-src" in directives and "script-src" in directives
        assert RecordingHandler.requests_seen == []
    finally:
        outside.shutdown()


def test_ui_assets_are_compressed_cached_and_load_in_one_request(fresh_server):
    srv = fresh_server()
    index = requests.get(srv.url + "/")
    scripts = re.findall(r'src="([^"]+)"', index.text)
    styles = re.findall(r'href="(/assets/[^"]+)"', index.text)
    assert scripts == ["/assets/app.js"] and styles == ["/assets/app.css"]
    assert "style=" not in requests.get(srv.url + "/assets/app.js").text.replace("'style=", "")
    js = requests.get(srv.url + "/assets/app.js", headers={"Accept-Encoding": "gzip"})
    assert js.headers["Content-Encoding"] == "gzip" and js.headers["ETag"]
    again = requests.get(srv.url + "/assets/app.js", headers={"If-None-Match": js.headers["ETag"]})
    assert again.status_code == 304


def test_container_table_draws_the_first_rows_of_a_thousand_then_more_sorts_and_filters_them(fresh_server, open_page):
    """The list component alone, fed 1,000 rows shaped like the engine's answer (creating 1,000 real containers
    takes minutes on vfs). How fast it is, bench.py measures (ui.filter_latency)."""
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    timings = page.evaluate("""() => {
        const rows = Array.from({length: 1000}, (_, i) => ({Id: 'c' + i, Names: ['/app-' + i], State: i % 3 ? 'running' : 'exited',
            Status: 'Up', Image: 'img:' + (i % 7), Created: 1700000000 + i, Labels: {}, Ports: [{PrivatePort: 80, PublicPort: 8000 + i, Type: 'tcp'}]}));
        const host = document.createElement('div'); document.body.append(host);
        const table = dataTable(host, {id: c => c.Id, selectable: true, rows, columns: [
            {key: 'name', label: 'Name', value: containerName}, {key: 'state', label: 'State', value: c => c.State},
            {key: 'image', label: 'Image', value: c => c.Image}, {key: 'ports', label: 'Ports', html: portLinks}]});
        const shown = host.querySelectorAll('tbody tr').length;
        host.querySelector('th[data-key=image]').click();
        const firstImage = host.querySelector('tbody tr td:nth-child(4)').textContent;
        host.querySelector('.show-more').click();
        return {shown, firstImage, all: host.querySelectorAll('tbody tr').length};
    }""")
    assert timings == {"shown": 200, "firstImage": "img:0", "all": 1000}, timings
    page.locator(".filter").last.fill("app-99")
    wait_until(lambda: page.locator("div:last-child > .table-wrap tbody tr").count() == 11, timeout=5,
               message="filtered rows")


def test_phone_width_and_dark_theme(fresh_server, engine, open_page):
    srv = fresh_server()
    tab = open_page(390, 844, dark=True)
    page = tab.page
    log_in(page, srv)
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert not page.locator("nav.side").is_visible()
    page.get_by_role("button", name="Menu").click()
    page.locator("nav.side").get_by_role("link", name="Home").wait_for()
    page.keyboard.press("Escape")
    page.locator("nav.side").wait_for(state="hidden")
    page.goto(srv.url + "/#/env/1/containers")
    page.locator("#containers tbody tr").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    tab.shot("phone-dark-containers")
    page.get_by_role("button", name="Theme").click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"


def tar_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def log_in(page, srv) -> None:
    conftest.open_login_page(page, srv.url)
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.locator("#env-list .env").first.wait_for()


def test_build_import_export_volumes_and_networks_from_their_pages(fresh_server, engine, open_page, tmp_path):
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    built, imported = f"{PREFIX}-built:1", f"{PREFIX}-imported:1"
    volume, network = f"{PREFIX}-volume", f"{PREFIX}-net"
    context = tmp_path / "context.tar"
    context.write_bytes(tar_of({"Dockerfile": f"FROM {BUSYBOX}\nLABEL {TEST_LABEL}=1\nRUN echo built > /built.txt\n".encode()}))
    engine.images.get(BUSYBOX).tag(imported)
    archive = tmp_path / "image.tar"
    archive.write_bytes(b"".join(engine.api.get_image(imported)))
    engine.images.remove(imported)
    try:
        log_in(page, srv)
        page.goto(srv.url + "/#/env/1/images")
        page.get_by_label("Tag", exact=True).fill(built)
        page.get_by_label("Build context (.tar or .tar.gz with a Dockerfile)").set_input_files(str(context))
        page.get_by_role("button", name="Build", exact=True).click()
        page.locator(".toast", has_text="Build finished").wait_for(timeout=60000)
        assert "Successfully built" in page.locator("#build-progress .build-log").inner_text()
        engine.images.get(built)

        page.get_by_label("Image archive (from docker save or Export)").set_input_files(str(archive))
        page.get_by_role("button", name="Import", exact=True).click()
        page.locator(".toast", has_text="Images imported").wait_for(timeout=60000)
        assert imported in page.locator("#import-progress").inner_text()
        engine.images.get(imported)

        page.get_by_placeholder("Filter images").fill(imported)
        page.locator("#images tbody tr", has_text=imported).locator("input.select").check()
        with page.expect_download() as download:
            page.get_by_role("button", name="Export", exact=True).click()
        saved = tmp_path / "exported.tar"
        download.value.save_as(saved)
        with tarfile.open(saved) as tar:
            assert "manifest.json" in tar.getnames()

        page.locator("nav.side").get_by_role("link", name="Volumes").click()
        page.locator("#volume-create").wait_for()
        page.get_by_label("Name", exact=True).fill(volume)
        page.get_by_role("button", name="+ Add label").click()
        page.get_by_placeholder("label").fill(TEST_LABEL)
        page.get_by_placeholder("value").fill("1")
        page.get_by_role("button", name="Create the volume").click()
        page.locator("#volumes tbody tr", has_text=volume).locator("input.select").check()
        page.locator("#volumes").get_by_role("button", name="Remove", exact=True).click()
        page.locator("#volumes tbody tr", has_text=volume).wait_for(state="detached")
        assert not engine.volumes.list(filters={"name": volume})

        page.locator("nav.side").get_by_role("link", name="Networks").click()
        page.locator("#network-create").wait_for()
        page.get_by_label("Name", exact=True).fill(network)
        page.get_by_label("Subnet").fill("not-a-subnet")
        page.get_by_role("button", name="Create the network").click()
        page.locator("#n-subnet + .field-error").wait_for()
        page.get_by_label("Subnet").fill(f"10.{200 + SLOT}.77.0/24")
        page.get_by_role("button", name="Create the network").click()
        row = page.locator("#networks tbody tr", has_text=network)
        row.wait_for()
        assert f"10.{200 + SLOT}.77.0/24" in row.inner_text()
        tab.shot("networks")
        row.locator("input.select").check()
        page.locator("#networks").get_by_role("button", name="Remove", exact=True).click()
        row.wait_for(state="detached")
        assert not engine.networks.list(names=[network])
    finally:
        for name in (built, imported):
            with contextlib.suppress(docker.errors.NotFound):
                engine.images.remove(name, force=True)
        for leftover in engine.networks.list(names=[network]):
            leftover.remove()
        for leftover in engine.volumes.list(filters={"name": volume}):
            leftover.remove(force=True)


@pytest.fixture
def swarm_host(engine):
    """A one-node Swarm on an engine of its own (a network namespace host), with a service, a config and a secret."""
    with conftest.one_node_swarm(engine, SWARM_HOST) as host:
        client = host.client()
        client.services.create(BUSYBOX, ["sleep", "3600"], name=f"{PREFIX}-service", labels={TEST_LABEL: "1"})
        client.configs.create(name=f"{PREFIX}-config", data=b"setting=1", labels={TEST_LABEL: "1"})
        client.secrets.create(name=f"{PREFIX}-secret", data=b"hunter2", labels={TEST_LABEL: "1"})
        yield host


def test_add_a_swarm_environment_with_the_wizard_and_read_its_services_nodes_configs_secrets(
        fresh_server, open_page, swarm_host):
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.get_by_role("link", name="Add environment").click()
    page.get_by_role("tab", name="Docker API (socket or TCP)").click()
    # The tab is a link: the Docker API form replaces the agent form once the hashchange is handled. Typing the
    # name before that typed it into the agent form, and the empty required Name then blocked Connect.
    page.get_by_label("Docker API URL").wait_for()
    page.get_by_label("Name").fill("swarm site")
    page.get_by_label("Docker API URL").fill("ftp://nowhere")
    page.get_by_role("button", name="Connect").click()
    page.locator("#url + .field-error", has_text="scheme").wait_for()
    tab.shot("environment-add")
    page.get_by_label("Docker API URL").fill(f"unix://{swarm_host.socket}")
    assert page.locator("#url + .field-error").count() == 0
    page.get_by_role("button", name="Connect").click()
    page.locator(".toolbar h2", has_text="swarm site").wait_for()
    page.locator(".tile", has_text="Swarm").wait_for()
    side = page.locator("nav.side")
    side.get_by_role("link", name="Services").click()
    row = page.locator("#swarm-list tbody tr", has_text=f"{PREFIX}-service")
    row.wait_for()
    assert "replicated 1" in row.inner_text()
    tab.shot("swarm-services")
    side.get_by_role("link", name="Nodes").click()
    page.locator("#swarm-list tbody tr", has_text="manager (leader)").wait_for()
    side.get_by_role("link", name="Configs").click()
    page.locator("#swarm-list tbody tr", has_text=f"{PREFIX}-config").wait_for()
    side.get_by_role("link", name="Secrets").click()
    page.locator("#swarm-list tbody tr", has_text=f"{PREFIX}-secret").wait_for()
    page.locator("nav.side").get_by_role("link", name="Home").click()
    page.locator("#env-list .env", has_text="swarm site").locator(".badge", has_text="Swarm").wait_for()


def test_a_standard_user_sees_why_a_privileged_container_is_refused_and_the_admin_can_allow_it(
        fresh_server, engine, open_page):
    srv = fresh_server()
    password = "carol's long password"
    user = srv.api("POST", "/api/users", json={"Username": "carol", "Password": password, "Role": 2}).json()
    assert srv.api("PUT", "/api/endpoints/1",
                   json={"UserAccessPolicies": {str(user["Id"]): {"RoleId": 0}}}).status_code == 200
    tab = open_page()
    page = tab.page
    page.goto(srv.url + "/#/login")
    page.get_by_label("Username").fill("carol")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator("#env-list .env", has_text="local").wait_for()
    assert page.get_by_role("link", name="Add environment").count() == 0
    page.goto(srv.url + "/#/env/1/containers/new")
    page.get_by_label("Image").fill(BUSYBOX)
    page.get_by_label("Name", exact=True).fill(f"{PREFIX}-privileged")
    page.get_by_role("button", name="+ Add label").click()
    page.get_by_placeholder("label name").fill(TEST_LABEL)
    page.get_by_label("Privileged").check()
    page.get_by_role("button", name="Deploy the container").click()
    page.locator(".field-error", has_text="privileged mode").wait_for()
    assert page.locator("input[name=privileged]").get_attribute("aria-invalid") == "true"
    assert not engine.containers.list(all=True, filters={"name": f"{PREFIX}-privileged"})

    page.get_by_role("button", name="Log out").click()
    page.locator("#login").wait_for()
    log_in(page, srv)
    page.goto(srv.url + "/#/environments/1/edit")
    page.get_by_role("link", name="What standard users may do (security settings)").click()
    page.get_by_label("Allow privileged mode").check()
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved.").wait_for()
    settings = srv.api("GET", "/api/endpoints/1").json()["SecuritySettings"]
    assert settings["allowPrivilegedModeForRegularUsers"] is True
    assert settings["allowBindMountsForRegularUsers"] is False


def test_an_admin_tags_an_environment_and_sees_the_tag_on_home(fresh_server, open_page):
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/tags")
    page.get_by_label("New tag").fill("factory-floor")
    page.get_by_role("button", name="Add tag").click()
    page.get_by_label("local").check()
    wait_until(lambda: srv.api("GET", "/api/endpoints/1").json()["TagIds"] != [], message="the tag to be saved")
    page.goto(srv.url + "/#/home")
    page.locator("#env-list .env .badge", has_text="factory-floor").wait_for()
