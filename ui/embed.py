#!/usr/bin/env python3
"""Write the web UI (the files of ui/) into portainer.py's generated section, so that copying portainer.py and
agent.py stays the whole install. `make ui` runs it; test_fast_ui.py fails when the embedded copy differs.

Each file becomes one entry of the dict UI_FILES between the BEGIN and END marker lines: a raw string when it
round-trips exactly as one (no triple quote, no carriage return, no backslash or quote at the end), else
gzip+base64. Running it twice changes nothing. Standard library only.
"""

import base64
import gzip
import pathlib
import sys

UI_DIR = pathlib.Path(__file__).resolve().parent
PORTAINER = UI_DIR.parent / "portainer.py"
BEGIN = "# ---- BEGIN GENERATED UI FILES: written by ui/embed.py (`make ui`) from ui/; do not edit by hand ----"
END = "# ---- END GENERATED UI FILES ----"
# What the browser loads; tests, this script and editor files stay out.
SERVED_SUFFIXES = (".html", ".css", ".js")
MAX_LINE = 120  # ruff's line length (ruff.toml)


def ui_files(ui_dir: pathlib.Path = UI_DIR) -> dict[str, str]:
    """The served files of ui/, by path relative to it ("pages/containers.js"), sorted."""
    found = {}
    for path in sorted(ui_dir.rglob("*")):
        relative = path.relative_to(ui_dir).as_posix()
        if path.is_file() and path.suffix in SERVED_SUFFIXES and not relative.startswith("tests/"):
            found[relative] = path.read_text(encoding="utf-8")
    return found


def literal(text: str) -> str:
    """A Python expression that evaluates to exactly `text`."""
    if '"""' not in text and "\r" not in text and "\x00" not in text and not text.endswith(("\\", '"')):
        return 'r"""' + text + '"""'
    packed = base64.b64encode(gzip.compress(text.encode("utf-8"), 9, mtime=0)).decode("ascii")
    lines = "\n        ".join(f'"{packed[i:i + 100]}"' for i in range(0, len(packed), 100))
    return f'gzip.decompress(base64.b64decode(\n        {lines}\n    )).decode("utf-8")'


def entry(name: str, text: str) -> str:
    code = f"    {name!r}: {literal(text)},"
    # A noqa after a multi-line string covers all of it: the sources' own lint (ESLint) judges their lines.
    return code + ("  # noqa: E501" if max(map(len, code.splitlines())) > MAX_LINE else "") + "\n"


def generated_section(files: dict[str, str]) -> str:
    body = "".join(entry(name, text) for name, text in files.items())
    return f"{BEGIN}\nUI_FILES = {{\n{body}}}\n{END}"


def embed(source: str, files: dict[str, str]) -> str:
    """portainer.py's text with its generated section replaced by one for `files`."""
    start, end = source.find(BEGIN), source.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{PORTAINER.name}: the markers of the generated UI section are missing")
    return source[:start] + generated_section(files) + source[end + len(END):]


def main() -> int:
    source = PORTAINER.read_text(encoding="utf-8")
    updated = embed(source, ui_files())
    if updated == source:
        print(f"{PORTAINER.name}: the embedded UI is up to date")
        return 0
    PORTAINER.write_text(updated, encoding="utf-8")
    print(f"{PORTAINER.name}: embedded UI written from {UI_DIR.name}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
