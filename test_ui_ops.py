"""Day-2 operations in the web UI (issue 19, without Swarm): the events page, the image, network and volume
detail pages, and one live log view for a whole stack. A real server, the machine's engine, headless Chromium.
Screenshots of each new page go to docs/screenshots/ (README.md shows them)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time

import docker
import pytest
import requests

import test_ui
from conftest import BUSYBOX, SLOT, TEST_LABEL, wait_until
from test_access import user_with_role

pytestmark = pytest.mark.browser

browser = test_ui.browser
open_page = test_ui.open_page
local_registry = test_ui.local_registry
PREFIX = f"ptpy-ops{SLOT}"
# Chromium drops loads in flight when the machine's interfaces change (every container start adds a veth; the
# machine is shared): such a load is tried again, and its console line is no error of the page.
NETWORK_CHANGED = "ERR_NETWORK_CHANGED"


def log_in(page, srv, username: str = "admin", password: str = test_ui.ADMIN_PASSWORD) -> None:
    page.goto(srv.url + "/#/login")
    for attempt in range(5):
        if attempt:
            page.reload()  # the same URL again is only a hash change: the modules that failed are not asked again
        try:
            page.get_by_label("Username").wait_for(timeout=5000)
            break
        except test_ui.playwright_api.TimeoutError:
            if attempt == 4:
                raise
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator("#env-list .env").first.wait_for()


def page_errors(tab, *expected: str) -> list[str]:
    return [e for e in tab.console_errors if NETWORK_CHANGED not in e and not any(x in e for x in expected)]


@pytest.fixture
def labelled(engine):
    """Containers, networks and volumes a test makes, removed afterwards (TEST_LABEL marks them)."""
    made = {"images": []}
    yield made
    for c in engine.containers.list(all=True, filters={"label": f"{TEST_LABEL}=ops"}):
        c.remove(force=True)
    for n in engine.networks.list(filters={"label": f"{TEST_LABEL}=ops"}):
        n.remove()
    for v in engine.volumes.list(filters={"label": f"{TEST_LABEL}=ops"}):
        v.remove(force=True)
    for image in made["images"]:
        with contextlib.suppress(docker.errors.NotFound):
            engine.images.remove(image)


def run_busybox(engine, name: str, command: str, **kwargs):
    with contextlib.suppress(docker.errors.NotFound):
        engine.containers.get(name).remove(force=True)
    return engine.containers.run(BUSYBOX, ["sh", "-c", command], name=name, detach=True,
                                 labels={TEST_LABEL: "ops"}, **kwargs)


def test_the_events_page_shows_a_new_containers_events_live_and_filters_them(fresh_server, engine, open_page,
                                                                             labelled):
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/env/1/events")
    page.locator("#events-state", has_text="live").wait_for()
    name = f"{PREFIX}-evented"
    container = run_busybox(engine, name, "sleep 60")
    rows = page.locator("#events tbody tr", has_text=name)
    rows.filter(has_text="start").first.wait_for()
    container.stop(timeout=0)
    rows.filter(has_text="die").first.wait_for()

    page.get_by_label("Actor").fill(name)
    wait_until(lambda: all(name in t for t in page.locator("#events tbody tr").all_inner_texts()), message="actor filter")
    tab.shot("events")
    page.get_by_label("Action").fill("die")
    wait_until(lambda: page.locator("#events tbody tr").count() >= 1 and all(
        "die" in t for t in page.locator("#events tbody tr").all_inner_texts()), message="action filter")
    # The type filter goes to the engine: a network event stream has no container rows.
    page.get_by_label("Actor").fill("")
    page.get_by_label("Action").fill("")
    page.get_by_label("Type").select_option("network")
    engine.networks.create(f"{PREFIX}-evnet", labels={TEST_LABEL: "ops"})
    page.locator("#events tbody tr[data-type=network]", has_text=f"{PREFIX}-evnet").first.wait_for()
    assert page.locator("#events tbody tr:not([data-type=network])").count() == 0
    assert page_errors(tab) == []


def test_a_container_paused_while_the_containers_page_opens_its_event_stream_is_shown_paused_without_a_reload(
        fresh_server, engine, open_page, labelled):
    srv = fresh_server()
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    name = f"{PREFIX}-early"
    container = run_busybox(engine, name, "sleep 60")
    # The page's event stream is held back until the container has been paused: the engine sends that
    # event before the page listens, so only the page's reload once its stream is open can show it.
    held = []
    page.route(re.compile(r"/docker/events\?"), lambda route: held.append(route))
    page.goto(srv.url + "/#/env/1/containers")
    row = page.locator("#containers tbody tr", has_text=name)
    row.locator("td", has_text="running").wait_for()
    wait_until(lambda: held or page.wait_for_timeout(50), message="the page to ask for its event stream")
    container.pause()
    time.sleep(1)
    held[0].continue_()
    row.locator("td", has_text="paused").wait_for(timeout=5000)  # the page's slow poll comes after 15 s
    container.unpause()
    assert page_errors(tab) == []


def test_an_image_page_shows_history_and_users_tags_and_pushes_it_to_a_registry(fresh_server, engine, open_page,
                                                                                labelled, local_registry):
    srv = fresh_server()
    registry_host = local_registry.split("/")[0]
    tagged, pushed = f"{PREFIX}-image:v2", f"{registry_host}/{PREFIX}/pushed:1"
    labelled["images"] += [tagged, pushed]
    user = run_busybox(engine, f"{PREFIX}-image-user", "sleep 60")
    image = engine.images.get(BUSYBOX)
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/env/1/images")
    page.get_by_placeholder("Filter images").fill(BUSYBOX)
    page.locator("#images tbody tr", has_text=BUSYBOX).get_by_role("link").first.click()
    page.locator("#image-history tbody tr").first.wait_for()
    assert page.locator("#image-users", has_text=user.name).count() == 1
    assert BUSYBOX in page.locator("#image-tags").inner_text()

    page.get_by_label("New tag").fill("not a tag!")
    page.get_by_role("button", name="Tag", exact=True).click()
    page.locator("#image-tag .field-error").wait_for()
    page.get_by_label("New tag").fill(tagged)
    page.get_by_role("button", name="Tag", exact=True).click()
    page.locator("#image-tags li", has_text=tagged).wait_for()
    assert engine.images.get(tagged).id == image.id
    tab.shot("image")

    page.get_by_label("New tag").fill(pushed)
    page.get_by_role("button", name="Tag", exact=True).click()
    page.locator("#image-tags li", has_text=pushed).wait_for()
    page.get_by_label("Tag", exact=True).select_option(pushed)
    page.get_by_role("button", name="Push", exact=True).click()
    page.locator(".toast", has_text=f"Pushed {pushed}").wait_for(timeout=60000)
    assert page.locator("#push-progress .layer").count() >= 1
    tags = requests.get(f"http://{registry_host}/v2/{PREFIX}/pushed/tags/list", timeout=10).json()
    assert tags["tags"] == ["1"]

    # Removing an image a container uses is refused by the engine; the refusal is shown.
    page.get_by_role("button", name="Remove", exact=True).click()
    page.locator(".toast.bad", has_text="Remove").wait_for()
    assert engine.images.get(BUSYBOX)
    assert page_errors(tab, "409 (Conflict)") == []


def test_a_network_page_connects_and_disconnects_a_container(fresh_server, engine, open_page, labelled):
    srv = fresh_server()
    network = engine.networks.create(f"{PREFIX}-net", labels={TEST_LABEL: "ops"},
                                     ipam=docker.types.IPAMConfig(pool_configs=[
                                         docker.types.IPAMPool(subnet=f"10.{210 + SLOT}.9.0/24")]))
    container = run_busybox(engine, f"{PREFIX}-net-user", "sleep 60")
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/env/1/networks")
    page.locator("#networks tbody tr", has_text=network.name).get_by_role("link").click()
    page.locator("#network-containers", has_text="No container is connected").wait_for()
    assert f"10.{210 + SLOT}.9.0/24" in page.locator("main").inner_text()

    page.get_by_label("Container").select_option(label=container.name)
    page.get_by_label("IPv4 address (optional)").fill(f"10.{210 + SLOT}.9.77")
    page.get_by_role("button", name="Connect", exact=True).click()
    row = page.locator("#network-containers tbody tr", has_text=container.name)
    row.wait_for()
    assert f"10.{210 + SLOT}.9.77" in row.inner_text()
    container.reload()
    assert network.name in container.attrs["NetworkSettings"]["Networks"]
    tab.shot("network")

    row.get_by_role("button", name="Disconnect").click()
    page.locator("#network-containers", has_text="No container is connected").wait_for()
    container.reload()
    assert network.name not in container.attrs["NetworkSettings"]["Networks"]
    assert page_errors(tab) == []


def test_a_volume_page_lists_the_containers_that_mount_it(fresh_server, engine, open_page, labelled):
    srv = fresh_server()
    volume = engine.volumes.create(f"{PREFIX}-vol", labels={TEST_LABEL: "ops"})
    reader = run_busybox(engine, f"{PREFIX}-vol-reader", "sleep 60", volumes={volume.name: {"bind": "/data", "mode": "ro"}})
    run_busybox(engine, f"{PREFIX}-vol-other", "sleep 60")
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + "/#/env/1/volumes")
    page.locator("#volumes tbody tr", has_text=volume.name).get_by_role("link", name=volume.name).click()
    users = page.locator("#volume-users tbody tr")
    users.first.wait_for()
    assert users.count() == 1
    assert reader.name in users.inner_text() and "/data" in users.inner_text() and "read-only" in users.inner_text()
    assert "needs an agent environment" in page.locator("main").inner_text()  # the local socket has no browser
    tab.shot("volume")
    assert page_errors(tab) == []


STACK_SERVICE = """  {name}:
    image: {image}
    labels: ["{label}=ops"]
    command: ["sh", "-c", "i=0; while [ $$i -lt 800 ]; do i=$$((i+1)); echo \\"{name} line $$i\\"; if [ $$((i % 10)) = 0 ]; then echo \\"{name} warn $$i\\" >&2; fi; sleep 0.05; done; sleep 600"]
"""


# Every line of the merged view, in order, as "<container> | <text>": the view is virtualised (only the rows in the
# viewport are in the page), so it is scrolled from top to bottom a viewport at a time, as a user would.
READ_ALL_ROWS_JS = """async box => {
  const frames = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const seen = new Map();
  box.scrollTop = 0; await frames();
  for (;;) {
    for (const row of box.querySelectorAll('.line')) seen.set(Number(row.dataset.seq), row.querySelector('.who').textContent + ' | ' + row.querySelector('.text').textContent);
    if (box.scrollTop + box.clientHeight >= box.scrollHeight - 1) break;
    box.scrollTop += box.clientHeight - 20; await frames();
  }
  return [...seen.entries()].sort((a, b) => a[0] - b[0]).map(entry => entry[1]);
}"""


# Scrolls the merged view down from where it is, a viewport at a time, until a row's text matches `pattern`.
SCROLL_TO_ROW_JS = """async (box, pattern) => {
  const frames = () => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
  const wanted = new RegExp(pattern);
  for (;;) {
    if ([...box.querySelectorAll('.line .text')].some(t => wanted.test(t.textContent))) return true;
    if (box.scrollTop + box.clientHeight >= box.scrollHeight - 1) return false;
    box.scrollTop += box.clientHeight - 20; await frames();
  }
}"""


def numbers_of(lines: list[str], service: str) -> list[int]:
    return [int(m.group(1)) for t in lines if (m := re.search(rf"_{service}_1 \| {service} line (\d+)$", t))]


def row_texts(logs) -> list[str]:
    return logs.locator(".line").evaluate_all("rows => rows.map(r => r.dataset.seq + ' ' + r.textContent)")


def test_a_stacks_logs_in_one_live_view_tagged_filtered_paused_and_downloaded(fresh_server, engine, open_page,
                                                                              labelled, tmp_path):
    srv = fresh_server()
    name = f"{PREFIX}-logs"
    compose = "services:\n" + "".join(STACK_SERVICE.format(name=s, image=BUSYBOX, label=TEST_LABEL)
                                      for s in ("alpha", "bravo", "charlie"))
    r = srv.api("POST", "/api/stacks/create/standalone/string?endpointId=1",
                json={"Name": name, "StackFileContent": compose})
    assert r.status_code == 200, r.text
    stack = r.json()
    try:
        tab = open_page()
        page = tab.page
        log_in(page, srv)
        page.goto(srv.url + f"/#/stacks/{stack['Id']}")
        page.get_by_role("link", name="Logs of all its containers").click()
        logs = page.locator("#merged-logs")
        # Lines from each container, each container's rows in one colour (while following: the last screenful).
        for service in ("alpha", "bravo", "charlie"):
            logs.locator(".line", has=page.locator(".who", has_text=service)).locator(
                ".text", has_text=re.compile(rf"^{service} line \d+$")).first.wait_for()
        colours = {}
        for service in ("alpha", "bravo", "charlie"):
            classes = logs.locator(".line", has=page.locator(".who", has_text=service)).evaluate_all(
                "els => [...new Set(els.map(e => [...e.classList].find(c => /^hue\\d+$/.test(c))))]")
            assert len(classes) == 1, classes
            colours[service] = classes[0]
        assert page.locator("#log-legend .chip").count() == 3
        # Scrolled back to the start (no longer following): the first lines are there, in the same colours.
        logs.focus()
        page.keyboard.press("Home")
        assert not page.get_by_label("Follow").is_checked()
        wait_until(lambda: logs.evaluate("box => box.scrollTop") == 0, message="scrolled to the start")
        for service in ("alpha", "bravo", "charlie"):
            assert logs.evaluate(SCROLL_TO_ROW_JS, rf"^{service} line 3$"), service
            first = logs.locator(".line", has=page.locator(".text", has_text=re.compile(rf"^{service} line 3$")))
            first.wait_for()
            assert colours[service] in first.get_attribute("class").split()
            assert "err" not in first.get_attribute("class")
        page.get_by_label("Follow").check()
        # stderr is marked: a plain-text filter brings the line into view.
        page.get_by_label("Filter the lines").fill("alpha warn 10")
        warn = logs.locator(".line", has=page.locator(".text", has_text=re.compile(r"^alpha warn 10$")))
        warn.wait_for()
        assert "err" in warn.get_attribute("class") and warn.locator(".stream").text_content() == "stderr"
        assert warn.locator("mark").text_content() == "alpha warn 10"

        # A regular expression filter: only matching lines, the match highlighted.
        page.get_by_label("Regular expression").check()
        page.get_by_label("Filter the lines").fill(r"(alpha|charlie) warn [0-9]*0$")
        wait_until(lambda: logs.locator(".line").count() >= 2 and all(
            re.search(r"(alpha|charlie) warn \d*0$", t) for t in logs.locator(".line .text").all_text_contents()),
            message="only matching lines")
        assert logs.locator(".line mark").first.text_content().startswith(("alpha warn", "charlie warn"))
        assert all("err" in c for c in logs.locator(".line").evaluate_all("rows => rows.map(r => r.className)"))
        tab.shot("merged-logs")
        page.get_by_label("Filter the lines").fill("(")
        page.locator("#log-error", has_text="Not a regular expression").wait_for()
        page.get_by_label("Filter the lines").fill("")
        wait_until(lambda: logs.locator(".line .text", has_text=re.compile(r" line \d+$")).count() > 0,
                   message="every line again")

        # Pause: the view stands still while lines arrive; resume: every line is there, none lost.
        page.get_by_role("button", name="Pause").click()
        page.wait_for_timeout(300)  # the frame already asked for
        before = row_texts(logs)
        page.locator("#log-count", has_text=re.compile(r"paused, [1-9]\d* new")).wait_for()
        page.wait_for_timeout(500)
        assert row_texts(logs) == before
        page.get_by_role("button", name="Resume").click()
        wait_until(lambda: row_texts(logs)[-1:] != before[-1:], message="lines after resuming")
        page.get_by_label("Follow").uncheck()
        every_line = logs.evaluate(READ_ALL_ROWS_JS)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download").click()
        kept = tmp_path / "kept.txt"
        download.value.save_as(kept)
        for service in ("alpha", "bravo", "charlie"):
            numbers = numbers_of(every_line, service)
            missing = sorted(set(range(1, max(numbers, default=0) + 1)) - set(numbers))
            in_download = [n for n in missing if re.search(rf" {service} line {n}$", kept.read_text(), re.M)]
            assert numbers[:1] == [1] and not missing, (service, numbers[:5], numbers[-5:], missing, in_download)

        with page.expect_download() as download:
            page.get_by_role("button", name="Download").click()
        saved = tmp_path / "logs.txt"
        download.value.save_as(saved)
        text = saved.read_text()
        for service in ("alpha", "bravo", "charlie"):
            assert re.search(rf"^{name}_{service}_1 \| {service} line 1$", text, re.M), text[:300]
            assert re.search(rf"^{name}_{service}_1 stderr \| {service} warn 10$", text, re.M)
            numbers = numbers_of(text.splitlines(), service)
            assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= len(numbers_of(every_line, service))

        # The same view at phone width, dark theme.
        phone = open_page(width=390, height=800, dark=True)
        log_in(phone.page, srv)
        phone.page.goto(srv.url + f"/#/env/1/logs?stack={name}")
        phone.page.locator("#merged-logs .line").first.wait_for()
        assert phone.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        phone.shot("phone-dark-merged-logs")
        assert page_errors(tab) == [] and page_errors(phone) == []
    finally:
        srv.api("DELETE", f"/api/stacks/{stack['Id']}?endpointId=1")


def test_standard_user_reads_merged_logs_of_their_own_containers_only(fresh_server, engine, labelled):
    srv = fresh_server()
    _, token, _ = user_with_role(srv, 0, "erin")  # a standard user with access to the local environment
    theirs = run_busybox(engine, f"{PREFIX}-not-erins", "echo admin secret; sleep 60")
    created = srv.api("POST", f"/api/endpoints/1/docker/containers/create?name={PREFIX}-erins", token=token,
                      json={"Image": BUSYBOX, "Cmd": ["sh", "-c", "echo erin was here; sleep 60"],
                            "Labels": {TEST_LABEL: "ops"}})
    assert created.status_code == 201, created.text
    mine = created.json()["Id"]
    assert srv.api("POST", f"/api/endpoints/1/docker/containers/{mine}/start", token=token).status_code == 204

    refused = srv.api("GET", f"/api/endpoints/1/logs?containers={mine},{theirs.id}&follow=0", token=token)
    assert refused.status_code in (403, 404), refused.text
    assert "admin secret" not in refused.text and refused.json()["message"]

    def erins_lines() -> bytes:
        answer = srv.api("GET", f"/api/endpoints/1/logs?containers={mine}&follow=0", token=token)
        assert answer.status_code == 200, answer.text
        return answer.content
    wait_until(lambda: b"erin was here" in erins_lines(), message="erin's own log line")
    for bad in ("containers=", "containers=a,a", "containers=abc123", f"containers={mine}&since=yesterday", f"containers={mine}&tail=-1"):
        assert srv.api("GET", f"/api/endpoints/1/logs?{bad}", token=token).status_code == 400, bad


def test_standard_user_sees_the_events_of_their_own_volumes_and_networks_not_others(fresh_server, engine, labelled):
    srv = fresh_server()
    _, token, _ = user_with_role(srv, 0, "erin")  # a standard user with access to the local environment
    since = int(time.time()) - 1
    # Erin's live event stream, read while the volumes and networks come and go (until a few seconds on).
    answer: dict = {}
    watching = threading.Thread(target=lambda: answer.update(erin=srv.api(
        "GET", f"/api/endpoints/1/docker/events?since={since}&until={since + 8}", token=token)))
    watching.start()
    time.sleep(1)
    others = engine.volumes.create(f"{PREFIX}-not-erins-volume", labels={TEST_LABEL: "ops"})
    engine.networks.create(f"{PREFIX}-not-erins-net", labels={TEST_LABEL: "ops"})
    for kind, body in (("volumes", {"Name": f"{PREFIX}-erins-volume"}), ("networks", {"Name": f"{PREFIX}-erins-net"})):
        made = srv.api("POST", f"/api/endpoints/1/docker/{kind}/create", token=token,
                       json={**body, "Labels": {TEST_LABEL: "ops"}})
        assert made.status_code == 201, made.text
    time.sleep(1)  # the create events go by while the volume is there to be looked up
    assert srv.api("DELETE", f"/api/endpoints/1/docker/volumes/{PREFIX}-erins-volume", token=token).status_code == 204
    others.remove()
    watching.join(timeout=30)
    assert answer["erin"].status_code == 200, answer["erin"].text
    seen = {(e["Type"], e["Action"], e["Actor"]["Attributes"].get("name", e["Actor"]["ID"]))
            for e in map(json.loads, answer["erin"].text.splitlines())}
    assert {("volume", "create", f"{PREFIX}-erins-volume"), ("volume", "destroy", f"{PREFIX}-erins-volume"),
            ("network", "create", f"{PREFIX}-erins-net")} <= seen, seen
    assert not [e for e in seen if "not-erins" in e[2]], seen
    # An administrator sees them all.
    everything = srv.api("GET", f"/api/endpoints/1/docker/events?since={since}&until={int(time.time()) + 1}").text
    assert f"{PREFIX}-not-erins-volume" in everything and f"{PREFIX}-not-erins-net" in everything


def test_the_new_pages_fit_a_phone_in_the_dark_theme(fresh_server, engine, open_page, labelled):
    srv = fresh_server()
    network = engine.networks.create(f"{PREFIX}-phone-net", labels={TEST_LABEL: "ops"})
    volume = engine.volumes.create(f"{PREFIX}-phone-vol", labels={TEST_LABEL: "ops"})
    image = engine.images.get(BUSYBOX)
    tab = open_page(width=390, height=800, dark=True)
    page = tab.page
    log_in(page, srv)
    for path, ready in (("events", "#events"), (f"images/{image.id}", "#image-history"),
                        (f"networks/{network.id}", "#network-containers"), (f"volumes/{volume.name}", "#volume-users"),
                        ("logs", "#log-pick")):
        page.goto(srv.url + f"/#/env/1/{path}")
        page.locator(ready).wait_for()
        assert page.evaluate("document.documentElement.dataset.theme") == "dark"
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
        if path == "events":
            tab.shot("phone-dark-events")
    assert page_errors(tab) == []


def test_a_read_only_user_is_shown_the_refusal_when_tagging_an_image_or_opening_an_admins_network(
        fresh_server, engine, open_page, labelled):
    srv = fresh_server()
    password = "rory's long password"
    user = srv.api("POST", "/api/users", json={"Username": "rory", "Password": password, "Role": 2}).json()
    assert srv.api("PUT", "/api/endpoints/1",
                   json={"UserAccessPolicies": {str(user["Id"]): {"RoleId": 5}}}).status_code == 200  # read-only
    network = engine.networks.create(f"{PREFIX}-ro-net", labels={TEST_LABEL: "ops"})
    tab = open_page()
    page = tab.page
    log_in(page, srv, "rory", password)
    page.goto(srv.url + f"/#/env/1/images/{engine.images.get(BUSYBOX).id}")
    page.get_by_label("New tag").fill(f"{PREFIX}-refused:1")
    page.get_by_role("button", name="Tag", exact=True).click()
    refusal = page.locator("#image-tag", has_text="Read-only user")
    refusal.wait_for()
    assert "does not allow POST" in refusal.inner_text()
    with pytest.raises(docker.errors.ImageNotFound):
        engine.images.get(f"{PREFIX}-refused:1")

    page.goto(srv.url + "/#/env/1/events")  # reading is allowed
    page.locator("#events-state", has_text="live").wait_for()
    assert page.locator("#events-error").inner_text() == ""
    # The administrator's network is not theirs: the page says so instead of showing it.
    page.goto(srv.url + f"/#/env/1/networks/{network.id}")
    page.get_by_role("heading", name="Something went wrong").wait_for()
    assert page.get_by_role("alert").inner_text().strip()
    assert page.locator("#network-connect").count() == 0
    assert page_errors(tab, "403 (Forbidden)") == []


def test_a_volume_page_on_an_agent_environment_opens_its_file_browser(fresh_server, engine, open_page, labelled,
                                                                      local_agent):
    srv = fresh_server()
    r = srv.api("POST", "/api/endpoints", json={"Name": "local-agent", "EndpointCreationType": 2, "URL": local_agent})
    assert r.status_code == 200, r.text
    env_id = r.json()["Id"]
    volume = engine.volumes.create(f"{PREFIX}-agent-vol", labels={TEST_LABEL: "ops"})
    with open(os.path.join(volume.attrs["Mountpoint"], "seen-from-the-volume-page.txt"), "w") as f:
        f.write("hello")
    tab = open_page()
    page = tab.page
    log_in(page, srv)
    page.goto(srv.url + f"/#/env/{env_id}/volumes/{volume.name}")
    page.get_by_role("link", name="Browse files").click()
    page.get_by_text("seen-from-the-volume-page.txt").wait_for()
    assert page_errors(tab) == []
