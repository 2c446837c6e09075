"""The web UI's sources in ui/ and the copy portainer.py embeds and serves.

Fast unit tests (`make test-fast`): no browser, no engine. The UI's own JavaScript unit tests are in ui/tests/
(`node --test ui/tests/`, also run by `make test-fast`); the browser tests are test_ui.py and the `browser` marks.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import pytest

import portainer

HERE = pathlib.Path(__file__).resolve().parent
UI = HERE / "ui"
_spec = importlib.util.spec_from_file_location("ui_embed", UI / "embed.py")
embed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(embed)

IMPORT = re.compile(r"^import \{([^}]*)\} from '([^']+)';", re.M)
EXPORT = re.compile(r"^export (?:async function|function|const|let|class) ([\w$]+)", re.M)


def test_the_ui_embedded_in_portainer_py_is_the_ui_directory():
    source = (HERE / "portainer.py").read_text(encoding="utf-8")
    assert embed.embed(source, embed.ui_files()) == source, "ui/ changed: run `make ui` to embed it in portainer.py"
    assert portainer.UI_FILES == embed.ui_files()


def test_embedding_twice_changes_nothing():
    source = (HERE / "portainer.py").read_text(encoding="utf-8")
    once = embed.embed(source, embed.ui_files())
    assert embed.embed(once, embed.ui_files()) == once


@pytest.mark.parametrize("text", [
    "plain", "regex /\\s+/ and '\\n'", 'a """ triple quote', "ends with a backslash \\", "carriage\r\nreturn",
    "\\", 'quote at the end"', "unicode · … →", ""])
def test_every_file_text_round_trips_through_its_python_literal(text):
    namespace = {"base64": __import__("base64"), "gzip": __import__("gzip")}
    assert eval(embed.literal(text), namespace) == text  # noqa: S307 (the literal this script writes)


def test_the_page_loads_one_module_that_imports_the_others():
    index = portainer.UI_FILES["index.html"]
    assert re.findall(r"<script[^>]*>", index) == ['<script type="module" src="/assets/app.js">']
    assert "/assets/app.js" in portainer.UI_ASSETS and "/assets/pages/containers.js" in portainer.UI_ASSETS
    assert portainer.UI_ASSETS["/"][1] == "text/html"
    assert {kind for url, (text, kind) in portainer.UI_ASSETS.items() if url.endswith(".js")} == \
        {"application/javascript"}


def test_every_import_of_a_module_names_a_file_and_what_it_exports():
    """What the browser checks when it links the modules, before anything runs (a typo is a blank page)."""
    exports = {name: set(EXPORT.findall(text)) for name, text in portainer.UI_FILES.items() if name.endswith(".js")}
    problems = []
    for name, text in portainer.UI_FILES.items():
        for names, target in IMPORT.findall(text):
            resolved = (pathlib.PurePosixPath(name).parent / target).as_posix()
            resolved = str(pathlib.PurePosixPath(*[p for p in resolved.split("/") if p != "."]))
            while "/../" in "/" + resolved:
                resolved = re.sub(r"(^|/)[^/.][^/]*/\.\./", r"\1", resolved, count=1)
            if resolved not in exports:
                problems.append(f"{name}: no module {target}")
                continue
            missing = {n.strip() for n in names.split(",") if n.strip()} - exports[resolved]
            if missing:
                problems.append(f"{name}: {target} does not export {sorted(missing)}")
    assert problems == []


def test_the_ui_constants_are_the_python_constants():
    constants = json.loads(json.dumps(portainer.ui_constants()))
    assert constants["RegistryTypeNames"] == {str(k): v for k, v in portainer.REGISTRY_TYPES.items()}
    assert constants["EnvironmentRoleNames"] == {str(k): v for k, v in portainer.ENV_ROLE_NAMES.items()}
    assert list(constants["SecuritySwitches"]) == list(portainer.DEFAULT_SECURITY_SETTINGS)
    assert constants["UserRoles"] == {"Administrator": portainer.ROLE_ADMIN, "Standard": portainer.ROLE_STANDARD}
    assert constants["EnvironmentTypes"]["Edge"] == portainer.ENDPOINT_EDGE
    assert constants["ResourceControlTypes"]["Stack"] == portainer.STACK_RESOURCE_CONTROL
    assert set(constants["ResourceControlTypeNames"]) == \
        {str(n) for n in (*portainer.RESOURCE_CONTROL_TYPES.values(), portainer.STACK_RESOURCE_CONTROL)}


def test_every_security_switch_has_a_label_and_every_label_a_switch():
    assert set(portainer.UI_SECURITY_SWITCH_LABELS) == set(portainer.DEFAULT_SECURITY_SETTINGS)


@pytest.mark.parametrize("copy", ["Quay.io", "Environment administrator", "allowBindMountsForRegularUsers",
                                  "'Edge agent'", "Team leader'", "update available", "=== 'outdated'"])
def test_the_javascript_keeps_no_second_copy_of_a_server_constant(copy):
    assert [name for name, text in portainer.UI_FILES.items() if copy in text] == []


def test_the_constants_need_a_login_and_the_ui_files_do_not():
    handlers = {path: handler for method, path, handler in portainer.ROUTES if method == "GET"}
    assert not getattr(handlers["/api/ui/constants"], "public", False)
    assert handlers["/"].public and handlers["/assets/{path:.+}"].public


def test_the_ui_dir_flag_serves_each_file_as_it_is_on_disk_now(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html>first")
    (tmp_path / "pages" / "home.js").write_text("export const a = 1;")
    (tmp_path / "tests" / "home.test.js").write_text("test")
    (tmp_path / "notes.txt").write_text("not served")
    config = portainer.parse_args(["--ui-dir", str(tmp_path)])
    assert config.ui_dir == str(tmp_path)
    page = portainer.ui_asset_from_disk(config.ui_dir, "/")
    assert page.body == b"<!doctype html>first" and page.content_type == "text/html"
    (tmp_path / "index.html").write_text("<!doctype html>edited")
    edited = portainer.ui_asset_from_disk(config.ui_dir, "/")
    assert edited.body == b"<!doctype html>edited" and edited.etag != page.etag
    assert portainer.ui_asset_from_disk(config.ui_dir, "/assets/pages/home.js").content_type == "application/javascript"
    for url in ("/assets/tests/home.test.js", "/assets/notes.txt", "/assets/../portainer.py", "/assets/index.html",
                "/assets/pages/../pages/home.js"):
        assert portainer.ui_asset_from_disk(config.ui_dir, url) is None, url


def test_no_module_sets_an_inline_style_the_content_security_policy_would_block():
    assert [name for name, text in portainer.UI_FILES.items()
            if name.endswith(".js") and "style=" in text.replace("'style=", "")] == []
