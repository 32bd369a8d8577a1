"""The dashboard's files work offline: nothing in the page, its script or its style sheet
points at another host, the page loads only files the daemon serves, and the files are
package data, so an installed daemon has them."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import pytest

from adapters.dashboard import ASSETS, DashboardAssetError, load_asset

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSET_DIR = REPO_ROOT / "adapters" / "dashboard"

# A scheme with "//" (http, https, ws, wss, ftp, ...), a protocol-relative "//host", or a
# CSS import: each would make the page reach for something that is not the daemon.
_EXTERNAL = re.compile(
    r"""(?ix)
    \b[a-z][a-z0-9+.-]*:// |          # http://host, https://host, wss://host ...
    (?:["'(=]|url\()\s*//[a-z0-9] |   # "//host/x.js", url(//host/x.png)
    @import
    """
)


def external_references(text: str) -> list[str]:
    return [m.group(0) for m in _EXTERNAL.finditer(text)]


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href", "action", "poster", "data", "srcset"} and value:
                self.urls.append((tag, name, value))


def test_the_detector_finds_what_it_is_for() -> None:
    planted = [
        '<script src="https://cdn.example.com/x.js">',
        "fetch('http://10.0.0.1/api')",
        "new WebSocket('wss://example.com/ws')",
        '<link href="//fonts.example.com/f.css">',
        "background: url(//img.example.com/a.png)",
        "@import 'theme.css';",
    ]
    for text in planted:
        assert external_references(text), text
    assert external_references('<script src="dashboard/app.js">') == []
    assert external_references("url.protocol = 'wss:'; // a comment") == []


@pytest.mark.parametrize("name", sorted({name for name, _ in ASSETS.values()}))
def test_no_file_of_the_page_refers_to_another_host(name: str) -> None:
    text = load_asset(name).decode("utf-8")
    assert external_references(text) == [], f"{name} refers to another host"


def test_the_page_loads_only_files_the_daemon_serves() -> None:
    parser = _References()
    parser.feed(load_asset("index.html").decode("utf-8"))
    served = {path.lstrip("/") for path in ASSETS}
    loaded = [(tag, attr, url) for tag, attr, url in parser.urls if not url.startswith("data:")]
    assert loaded, "the page loads its script and style sheet"
    for tag, attr, url in loaded:
        assert url in served, f"<{tag} {attr}={url!r}> is not a file the daemon serves"
    assert {url for _, _, url in loaded} == served - {""}


def test_every_file_of_the_page_is_package_data() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["adapters"]
    on_disk = sorted(p.relative_to(ASSET_DIR.parent).as_posix() for p in ASSET_DIR.iterdir())
    assert on_disk, "adapters/dashboard/ holds the page"
    for path in on_disk:
        assert any(fnmatch(path, pattern) for pattern in patterns), (
            f"adapters/{path} would be left out of an installed package: add it to "
            "[tool.setuptools.package-data] in pyproject.toml"
        )
    served = {f"dashboard/{name}" for name, _ in ASSETS.values()}
    assert served <= set(on_disk)


def test_a_missing_file_says_what_to_do() -> None:
    with pytest.raises(DashboardAssetError, match=r"adapters/dashboard/nothing\.js .*reinstall"):
        load_asset("nothing.js")
