"""What browsers load from authsvc: the browser client at /client/authsvc.js and the account
page at /account, served from the package with their types, cache and security headers.

Chromium runs them for real in test_browsers.py; these tests check what is served.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from contract import assert_matches_document
from servers import Servers

ROOT = Path(__file__).resolve().parent.parent
CLIENT_SOURCE = ROOT / "authsvc" / "http" / "web" / "authsvc.js"
PAGE_PATHS = ["/account", "/account/account.css", "/account/account.js", "/account/favicon.svg"]
CSP = "default-src 'self'; frame-ancestors 'none'"


class _Elements(HTMLParser):
    """Every start tag of a document, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] in ("script", "style") and data.strip():
            self.script_text += data


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


async def test_the_browser_client_is_served_as_a_cacheable_javascript_module(client: Any) -> None:
    response = await client.get("/client/authsvc.js")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.headers["Cache-Control"] == "public, max-age=300"
    # A module script is fetched in CORS mode: a page on any origin may import it.
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.read()
    assert body == CLIENT_SOURCE.read_bytes()
    assert b"export class Authsvc" in body


async def test_the_browser_client_answers_304_to_its_etag(client: Any) -> None:
    first = await client.get("/client/authsvc.js")
    again = await client.get("/client/authsvc.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""
    assert again.headers["ETag"] == first.headers["ETag"]


def test_the_client_in_clients_browser_is_the_file_authsvc_serves() -> None:
    """One source of truth: clients/browser/authsvc.js is a link to the package's file."""
    checkout_copy = ROOT / "clients" / "browser" / "authsvc.js"
    assert checkout_copy.is_symlink()
    assert checkout_copy.resolve() == CLIENT_SOURCE.resolve()


def test_the_browser_client_has_no_dependencies() -> None:
    """One ES module: it imports nothing, so no build step and no bundler."""
    source = CLIENT_SOURCE.read_text()
    assert re.search(r"^\s*import\b", source, re.MULTILINE) is None
    assert "require(" not in source


async def test_the_account_page_is_served_with_a_strict_content_security_policy(
    client: Any,
) -> None:
    for path in PAGE_PATHS:
        response = await client.get(path)
        assert response.status == 200, path
        assert response.headers["Content-Security-Policy"] == CSP, path
        assert response.headers["X-Frame-Options"] == "DENY", path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
    page = await client.get("/account")
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Cache-Control"] == "no-cache"
    css = await client.get("/account/account.css")
    assert css.headers["Content-Type"] == "text/css; charset=utf-8"
    script = await client.get("/account/account.js")
    assert script.headers["Content-Type"] == "text/javascript; charset=utf-8"


async def test_the_account_page_has_no_inline_code_and_no_external_assets(client: Any) -> None:
    """What the CSP would refuse anyway: no inline script or style, nothing from elsewhere;
    and a viewport for phones."""
    html = await (await client.get("/account")).text()
    document = elements(html)
    assert document.script_text == ""
    referenced = []
    for tag, attrs in document.tags:
        assert "style" not in attrs, tag
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "script":
            assert attrs.get("type") == "module" and attrs.get("src"), attrs
            referenced.append(attrs["src"])
        if tag == "link":
            referenced.append(attrs["href"])
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in (
        document.tags
    )
    script = await (await client.get("/account/account.js")).text()
    referenced += re.findall(r'from "([^"]+)"', script)
    assert sorted(referenced) == [
        "/account/account.css",
        "/account/account.js",
        "/account/favicon.svg",
        "/client/authsvc.js",
    ]
    for path in referenced:
        assert path is not None and path.startswith("/") and not path.startswith("//")
        assert (await client.get(path)).status == 200, path


async def test_the_account_page_can_be_turned_off(make_client: Any) -> None:
    client = await make_client(account_page=False)
    for path in PAGE_PATHS:
        response = await client.get(path)
        assert response.status == 404, path
        assert (await response.json())["error"] == "not_found"
        assert "Content-Security-Policy" not in response.headers
    # The client stays: other pages import it.
    assert (await client.get("/client/authsvc.js")).status == 200


def test_the_account_page_setting_reads_false_from_the_environment() -> None:
    from authsvc.config import load_settings

    assert load_settings({}).account_page is True
    assert load_settings({"AUTHSVC_ACCOUNT_PAGE": "false"}).account_page is False


@pytest.mark.process
def test_an_installed_authsvc_serves_the_client_and_the_page(
    servers: Servers, tmp_path: Path
) -> None:
    """Run on the wheel by scripts/test-installed: the files are package data."""
    server = servers.start(tmp_path / "authsvc.log", {"AUTHSVC_REDIS_URL": "memory://"})
    reply = server.request("GET", "/client/authsvc.js")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert reply.body.encode() == CLIENT_SOURCE.read_bytes()
    for path in PAGE_PATHS:
        page = server.request("GET", path)
        assert page.status == 200, path
        assert page.headers["Content-Security-Policy"] == CSP
    if os.environ.get("AUTHSVC_TEST_AUTHSVC"):
        assert "PYTHONSAFEPATH" in server.env


@pytest.mark.parametrize("path", ["/client/authsvc.js", *PAGE_PATHS])
async def test_the_browser_files_answer_as_documented(
    client: Any, make_client: Any, path: str
) -> None:
    response = await client.get(path)
    assert_matches_document("GET", path, response, await response.read())
    again = await client.get(path, headers={"If-None-Match": response.headers["ETag"]})
    assert_matches_document("GET", path, again, await again.read())
    if path in PAGE_PATHS:
        off = await (await make_client(account_page=False)).get(path)
        assert_matches_document("GET", path, off, await off.read())
