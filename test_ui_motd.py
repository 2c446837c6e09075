"""Browser tests of the message of the day: the administrator writes it on the settings page, every user sees it
as a banner on the home page until they dismiss it. A real server, headless Chromium."""

from __future__ import annotations

import pytest

import conftest

import test_ui

pytestmark = pytest.mark.browser

# test_ui's browser and tab fixtures, shared rather than copied.
browser = test_ui.browser
open_page = test_ui.open_page
log_in = test_ui.log_in


def log_in_as(page, srv, username: str, password: str) -> None:
    conftest.open_login_page(page, srv.url)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.locator("#env-list .env").first.wait_for()


def set_message_on_the_settings_page(page, srv, title: str, message: str) -> None:
    page.goto(srv.url + "/#/settings")
    card = page.locator("#motd-settings")
    card.get_by_label("Title").fill(title)
    card.get_by_label("Message").fill(message)
    card.get_by_role("button", name="Save the message").click()
    card.get_by_text("Saved.").wait_for()


def test_a_standard_user_reads_the_admins_message_of_the_day_dismisses_it_and_sees_the_next_one(
        fresh_server, open_page):
    srv = fresh_server()
    password = "dana's long password"
    user = srv.api("POST", "/api/users", json={"Username": "dana", "Password": password, "Role": 2}).json()
    assert srv.api("PUT", "/api/endpoints/1",
                   json={"UserAccessPolicies": {str(user["Id"]): {"RoleId": 0}}}).status_code == 200

    admin_tab = open_page()
    admin = admin_tab.page
    log_in(admin, srv)
    assert admin.locator("#motd").count() == 0  # nothing set: no banner
    injected = '<img src=x onerror="window.motdInjected=1"><b>Maintenance</b> tonight\nat 22:00'
    set_message_on_the_settings_page(admin, srv, "Heads <i>up</i>", injected)
    motd = srv.api("GET", "/api/motd").json()
    assert motd["Title"] == "Heads <i>up</i>" and motd["Message"] == injected and motd["Hash"]
    admin.reload()
    assert admin.locator("#motd-settings").get_by_label("Message").input_value() == injected

    user_tab = open_page()
    page = user_tab.page
    log_in_as(page, srv, "dana", password)
    banner = page.get_by_role("region", name="Message of the day")
    banner.wait_for()
    # The administrator's HTML is text: shown as typed, no element made from it, no script run.
    assert banner.locator(".motd-title").inner_text() == "Heads <i>up</i>"
    assert banner.locator(".motd-message").inner_text() == injected
    assert banner.locator("img, b, i").count() == 0
    assert page.evaluate("window.motdInjected") is None

    banner.get_by_role("button", name="Dismiss the message of the day").click()
    banner.wait_for(state="detached")
    page.reload()
    page.locator("#env-list .env").first.wait_for()
    assert page.locator("#motd").count() == 0

    # A new message (a new hash) shows again; dismissing the old one did not hide it.
    set_message_on_the_settings_page(admin, srv, "Heads up", "Maintenance moved to Friday")
    page.reload()
    banner.locator(".motd-message", has_text="Maintenance moved to Friday").wait_for()

    # An empty message takes the banner away for everyone.
    set_message_on_the_settings_page(admin, srv, "", "")
    page.reload()
    page.locator("#env-list .env").first.wait_for()
    assert page.locator("#motd").count() == 0
    assert user_tab.console_errors == [] and admin_tab.console_errors == []
