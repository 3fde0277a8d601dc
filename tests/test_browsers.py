"""Browsers, for real: Debian's Chromium, headless, driven by playwright-python, against real
authsvc processes.

A test single-page app is served from another origin (an aiohttp app in this process, on a
port of its own) and imports the browser client from authsvc (/client/authsvc.js); the
account page is authsvc's own (/account). These tests fail, never skip, when Chromium
cannot start: `./scripts/test` (as root) installs Debian's `chromium` where it is missing
(``AUTHSVC_TEST_CHROMIUM`` names another executable). `playwright install` is never run.

Sites: 127.0.0.1 on another port is another origin of the same site, where the default
``SameSite=Strict`` cookie goes along; ``localhost`` is another site, where only
``SameSite=None`` goes, and only when the browser allows third-party cookies (docs/browsers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    async_playwright,
    expect,
)
from servers import TEST_PASSWORD, Server, Servers, free_port

# Chromium and real authsvc processes: out of the fast set (the servers fixture also marks
# these tests `process`, so the run on the wheel runs them again).
pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("AUTHSVC_TEST_CHROMIUM", "/usr/bin/chromium")
COOKIE = "__Host-authsvc-refresh"
ROUNDS = 20


# --- the browser --------------------------------------------------------------------------


@pytest.fixture
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


async def launch(playwright: Playwright) -> Browser:
    """Chromium, or a failure that says why: these tests never skip."""
    try:
        return await playwright.chromium.launch(executable_path=CHROMIUM)
    except Exception as exc:
        pytest.fail(
            f"Chromium ({CHROMIUM}) cannot start: {exc}\n"
            "install Debian's chromium (./scripts/test does as root) or set AUTHSVC_TEST_CHROMIUM",
            pytrace=False,
        )


@pytest.fixture
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    chromium = await launch(playwright)
    yield chromium
    await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """One browser profile: its tabs share cookies, storage, Web Locks and BroadcastChannels."""
    profile = await browser.new_context()
    yield profile
    await profile.close()


async def profile_allowing_third_party_cookies(
    playwright: Playwright, directory: Path
) -> BrowserContext:
    """A profile whose settings allow third-party cookies, as a user may choose (a fresh
    headless profile blocks them: ``cookie_controls_mode`` 1)."""
    (directory / "Default").mkdir(parents=True)
    (directory / "Default" / "Preferences").write_text(
        json.dumps({"profile": {"cookie_controls_mode": 0}})
    )
    try:
        return await playwright.chromium.launch_persistent_context(
            str(directory), executable_path=CHROMIUM
        )
    except Exception as exc:
        pytest.fail(f"Chromium ({CHROMIUM}) cannot start: {exc}", pytrace=False)


# --- the servers --------------------------------------------------------------------------

SPA_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A single-page app</title></head>
<body><p>A single-page app on {origin}, using authsvc at {authsvc}.</p>
<script type="module">
import {{ Authsvc, SignedOut }} from "{authsvc}/client/authsvc.js";
window.authsvcUrl = "{authsvc}";
window.SignedOut = SignedOut;
window.signedOut = [];
window.auth = new Authsvc({{
  baseUrl: "{authsvc}",
  device: "test app",
  onSignedOut: (reason) => window.signedOut.push(reason),
}});
window.ready = true;
</script></body></html>
"""


@dataclass
class Spa:
    """The test app: one page, served from ``origin``."""

    origin: str
    runner: web.AppRunner

    @property
    def url(self) -> str:
        return self.origin + "/"


@contextlib.asynccontextmanager
async def spa_on(host: str, port: int, authsvc: str) -> AsyncIterator[Spa]:
    origin = f"http://{host}:{port}"

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=SPA_PAGE.format(origin=origin, authsvc=authsvc), content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield Spa(origin, runner)
    finally:
        await runner.cleanup()


@pytest.fixture
def store(redis_client: Any, redis_url: str) -> str:
    """The suite's Redis, flushed before the test."""
    return redis_url


def start_authsvc(
    servers: Servers, tmp_path: Path, store: str, keys_dir: Path, **env: str
) -> Server:
    return servers.start(
        tmp_path / "authsvc.log",
        {
            "AUTHSVC_REDIS_URL": store,
            "AUTHSVC_KEYS_DIR": str(keys_dir),
            "AUTHSVC_LOGIN_RATE_LIMIT": "1000/60",
            **{f"AUTHSVC_{name.upper()}": value for name, value in env.items()},
        },
    )


@dataclass
class Setup:
    authsvc: Server
    spa: Spa


@pytest.fixture
async def same_site(
    servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> AsyncIterator[Setup]:
    """authsvc on 127.0.0.1, the app on 127.0.0.1 on another port: another origin, the
    same site; authsvc lists the app's origin, and the cookie keeps SameSite=Strict."""
    port = free_port()
    server = start_authsvc(
        servers, tmp_path, store, keys_dir, cors_origins=f"http://127.0.0.1:{port}"
    )
    async with spa_on("127.0.0.1", port, server.base_url) as spa:
        yield Setup(server, spa)


async def open_app(context: BrowserContext, spa: Spa) -> Page:
    page = await context.new_page()
    await page.goto(spa.url)
    await page.wait_for_function("window.ready === true")
    return page


def register(server: Server, username: str) -> None:
    assert server.register(username).status == 201


async def refresh_cookie(context: BrowserContext) -> dict[str, Any] | None:
    for cookie in await context.cookies():
        if cookie["name"] == COOKIE:
            return dict(cookie)
    return None


LOGIN = "([username, password]) => auth.login(username, password)"

# A refresh sent by hand, as a stale tab or an attacker's script would: the status and
# the error code.
RAW_REFRESH = """async (csrf) => {
  const response = await fetch(window.authsvcUrl + "/v1/auth/refresh", {
    method: "POST", credentials: "include",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: "{}"});
  const body = await response.json();
  return [response.status, body.error ?? null];
}"""


# --- the tests ----------------------------------------------------------------------------


async def test_a_page_on_another_origin_logs_in_and_never_sees_the_refresh_token(
    context: BrowserContext, same_site: Setup
) -> None:
    register(same_site.authsvc, "alice")
    page = await open_app(context, same_site.spa)
    pair = await page.evaluate(LOGIN, ["alice", TEST_PASSWORD])
    assert "refresh_token" not in pair
    assert pair["csrf_token"] and pair["access_token"]

    cookie = await refresh_cookie(context)
    assert cookie is not None, "authsvc set no refresh cookie"
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/" and cookie["domain"] == "127.0.0.1"
    for _ in range(3):
        seen = await page.evaluate(
            """async () => {
              await auth.refresh();
              const me = await auth.me();
              return {cookie: document.cookie, me,
                      storage: JSON.stringify({...localStorage, ...sessionStorage})};
            }"""
        )
        assert seen["me"]["username"] == "alice"
        rotated = await refresh_cookie(context)
        assert rotated is not None and rotated["value"] != cookie["value"]
        cookie = rotated
        assert COOKIE not in seen["cookie"] and cookie["value"] not in seen["cookie"]
        assert cookie["value"] not in seen["storage"]
        assert seen["cookie"] == ""


async def test_two_tabs_refreshing_at_the_same_instant_share_one_refresh_20_rounds(
    context: BrowserContext, servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> None:
    """The Web Lock makes the tabs take turns, and the tab that waited adopts the token
    the other broadcast: each round sends exactly one refresh, both tabs hold the same
    access token, and neither is ever logged out. The grace is the least authsvc allows
    (0: a second use within the same second still gets the successor), so the client
    does not lean on it."""
    port = free_port()
    server = start_authsvc(
        servers,
        tmp_path,
        store,
        keys_dir,
        cors_origins=f"http://127.0.0.1:{port}",
        refresh_reuse_grace="0",
    )
    register(server, "alice")
    async with spa_on("127.0.0.1", port, server.base_url) as spa:
        first = await open_app(context, spa)
        await first.evaluate(LOGIN, ["alice", TEST_PASSWORD])
        second = await open_app(context, spa)  # a new tab: the session through the cookie
        await second.evaluate("auth.refresh()")
        sent_before = 1
        for round_ in range(ROUNDS):
            at = time.time() * 1000 + 150  # both tabs start at this wall-clock instant
            script = """async (at) => {
              await new Promise((go) => setTimeout(go, at - Date.now()));
              return auth.refresh();
            }"""
            tokens = await asyncio.gather(first.evaluate(script, at), second.evaluate(script, at))
            assert tokens[0] == tokens[1], f"round {round_}: the tabs hold different tokens"
            for tab in (first, second):
                me = await tab.evaluate("auth.me()")
                assert me["username"] == "alice", f"round {round_}"
            sent = sum([await tab.evaluate("auth.refreshes") for tab in (first, second)])
            assert sent - sent_before == 1, f"round {round_}: {sent - sent_before} refreshes"
            sent_before = sent
        for tab in (first, second):
            assert await tab.evaluate("window.signedOut") == []
        assert server.request("GET", "/v1/auth/me", token=tokens[0]).status == 200


async def test_after_logout_in_one_tab_the_others_refresh_is_refused_and_its_cookie_is_gone(
    context: BrowserContext, same_site: Setup
) -> None:
    register(same_site.authsvc, "alice")
    first = await open_app(context, same_site.spa)
    pair = await first.evaluate(LOGIN, ["alice", TEST_PASSWORD])
    second = await open_app(context, same_site.spa)
    await second.evaluate("auth.refresh()")
    cookie = await refresh_cookie(context)
    assert cookie is not None

    await first.evaluate("auth.logout()")
    assert await refresh_cookie(context) is None, "logout left the cookie"
    # The other tab heard of it, and its client refuses to refresh.
    await second.wait_for_function("window.signedOut.length === 1")
    assert await second.evaluate("window.signedOut") == ["logout"]
    assert await second.evaluate(
        "auth.refresh().then(() => 'refreshed', (e) => e instanceof SignedOut)"
    )
    # A refresh sent anyway, with the session's csrf_token: no cookie, refused.
    assert await second.evaluate(RAW_REFRESH, pair["csrf_token"]) == [401, "invalid_grant"]
    # Even with the cookie put back (a late response, a restored profile): refused, and
    # the cookie cleared again.
    await context.add_cookies([cookie])  # type: ignore[list-item]
    assert await second.evaluate(RAW_REFRESH, pair["csrf_token"]) == [401, "invalid_grant"]
    assert await refresh_cookie(context) is None
    status = same_site.authsvc.request("GET", "/v1/auth/me", token=pair["access_token"]).status
    assert status == 401


async def test_a_refresh_racing_a_logout_never_brings_the_session_back(
    context: BrowserContext, same_site: Setup
) -> None:
    """One tab logs out while the other refreshes, at the same instant, 5 rounds: however
    they interleave, both tabs end signed out, the cookie is gone, and the session is over
    (the logout waits for the refresh lock; a late token for an ended session is ignored)."""
    register(same_site.authsvc, "alice")
    first = await open_app(context, same_site.spa)
    second = await open_app(context, same_site.spa)
    for round_ in range(5):
        pair = await first.evaluate(LOGIN, ["alice", TEST_PASSWORD])
        await second.evaluate("auth.refresh()")
        at = time.time() * 1000 + 150
        wait = "await new Promise((go) => setTimeout(go, at - Date.now()));"
        await asyncio.gather(
            first.evaluate(f"async (at) => {{ {wait} await auth.logout(); }}", at),
            second.evaluate(
                f"async (at) => {{ {wait} return auth.refresh().catch((e) => e.name); }}", at
            ),
        )
        for tab in (first, second):
            state = await tab.evaluate("[auth.signedIn, auth.sessionId]")
            assert state == [False, None], f"round {round_}"
        assert await refresh_cookie(context) is None, f"round {round_}"
        reply = same_site.authsvc.request("GET", "/v1/auth/me", token=pair["access_token"])
        assert reply.status == 401, f"round {round_}"


async def test_an_unlisted_origin_reads_nothing(
    context: BrowserContext, servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> None:
    listed, unlisted = free_port(), free_port()
    server = start_authsvc(
        servers, tmp_path, store, keys_dir, cors_origins=f"http://127.0.0.1:{listed}"
    )
    register(server, "alice")
    token = server.login("alice")["access_token"]
    async with spa_on("127.0.0.1", unlisted, server.base_url) as spa:
        page = await open_app(context, spa)
        outcome = await page.evaluate(
            """async (token) => {
              const attempt = (path, init) => fetch(window.authsvcUrl + path, init)
                .then(async (r) => "read " + r.status + " " + await r.text(),
                      (e) => e.name);
              return {
                login: await auth.login("alice", "correct horse battery staple")
                  .then(() => "logged in", (e) => e.name),
                me: await attempt("/v1/auth/me", {headers: {Authorization: "Bearer " + token}}),
                sessions: await attempt("/v1/auth/sessions",
                  {headers: {Authorization: "Bearer " + token}, credentials: "include"}),
                refresh: await attempt("/v1/auth/refresh", {method: "POST",
                  credentials: "include", headers: {"Content-Type": "application/json"},
                  body: "{}"}),
                // A simple request (no preflight) reaches authsvc, but its answer stays
                // unreadable to the page.
                jwks: await attempt("/.well-known/jwks.json", {}),
              };
            }""",
            token,
        )
    assert outcome == {
        "login": "TypeError",
        "me": "TypeError",
        "sessions": "TypeError",
        "refresh": "TypeError",
        "jwks": "TypeError",
    }
    assert await refresh_cookie(context) is None
    sessions = server.request("GET", "/v1/auth/sessions", token=token).body["sessions"]
    assert len(sessions) == 1, "a login from the unlisted origin made a session"


async def test_the_client_refreshes_before_expiry_and_once_on_a_401(
    context: BrowserContext, servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> None:
    """A wrong current password (a 401) is not sent twice; an access token refused as not
    fresh enough for the session list (SENSITIVE_MAX_AGE) is refreshed and the call sent
    again, once; one about to expire is refreshed before a call is sent."""
    port = free_port()
    server = start_authsvc(
        servers,
        tmp_path,
        store,
        keys_dir,
        cors_origins=f"http://127.0.0.1:{port}",
        access_token_ttl="6",
        sensitive_max_age="1",
    )
    register(server, "alice")
    async with spa_on("127.0.0.1", port, server.base_url) as spa:
        page = await open_app(context, spa)
        await page.evaluate(LOGIN, ["alice", TEST_PASSWORD])
        wrong = await page.evaluate(
            """() => auth.changePassword("not the password at all", "a brand new password 1")
              .then(() => "changed", (e) => [e.status, e.error, auth.refreshes])"""
        )
        assert wrong == [401, "invalid_credentials", 0]
        # Past the sensitive age, within the lifetime: the list's 401 brings one refresh.
        listed = await page.evaluate(
            """async () => {
              await new Promise((go) => setTimeout(go, 2500));
              const sessions = await auth.sessions();
              return [sessions.length, auth.refreshes];
            }"""
        )
        assert listed == [1, 1]
        # Within the margin of expiry (a tenth of the lifetime): refreshed before the call.
        before = await page.evaluate(
            """async () => {
              await new Promise((go) => setTimeout(go, 5700));
              await auth.me();
              return auth.refreshes;
            }"""
        )
        assert before == 2


async def test_a_cross_site_page_refreshes_with_samesite_none_where_third_party_cookies_are_allowed(
    playwright: Playwright, servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> None:
    """localhost and 127.0.0.1 are different sites: only SameSite=None goes along, and
    only in a profile that allows third-party cookies."""
    port = free_port()
    origin = f"http://localhost:{port}"
    server = start_authsvc(
        servers, tmp_path, store, keys_dir, cors_origins=origin, cookie_samesite="None"
    )
    register(server, "alice")
    context = await profile_allowing_third_party_cookies(playwright, tmp_path / "profile")
    try:
        async with spa_on("localhost", port, server.base_url) as spa:
            page = await open_app(context, spa)
            await page.evaluate(LOGIN, ["alice", TEST_PASSWORD])
            cookie = await refresh_cookie(context)
            assert cookie is not None and cookie["sameSite"] == "None"
            for _ in range(3):
                await page.evaluate("auth.refresh()")
            assert (await page.evaluate("auth.me()"))["username"] == "alice"
            assert await page.evaluate("document.cookie") == ""
    finally:
        await context.close()


async def test_a_cross_site_page_cannot_refresh_where_third_party_cookies_are_blocked(
    context: BrowserContext, servers: Servers, tmp_path: Path, store: str, keys_dir: Path
) -> None:
    """What headless Chromium does by default (and Safari, Firefox's strict mode and every
    private window): the cross-site cookie is never stored, so the login works and the
    first refresh is refused. docs/browsers.md: put the app on the same site."""
    port = free_port()
    origin = f"http://localhost:{port}"
    server = start_authsvc(
        servers, tmp_path, store, keys_dir, cors_origins=origin, cookie_samesite="None"
    )
    register(server, "alice")
    async with spa_on("localhost", port, server.base_url) as spa:
        page = await open_app(context, spa)
        await page.evaluate(LOGIN, ["alice", TEST_PASSWORD])
        assert await refresh_cookie(context) is None
        refused = await page.evaluate("auth.refresh().then(() => 'refreshed', (e) => e.status)")
        assert refused == 401


# --- the account page ---------------------------------------------------------------------


@pytest.fixture
def page_errors() -> Iterator[list[str]]:
    """What the page printed as errors (a CSP violation is one): none, at the end."""
    errors: list[str] = []
    yield errors
    assert errors == []


async def test_the_account_page_signs_in_lists_sessions_ends_one_changes_the_password(
    context: BrowserContext,
    servers: Servers,
    tmp_path: Path,
    store: str,
    keys_dir: Path,
    page_errors: list[str],
) -> None:
    """Same origin as authsvc, no CORS setting: the page works in cookie mode alone."""
    server = start_authsvc(servers, tmp_path, store, keys_dir)
    register(server, "alice")
    laptop = server.request(
        "POST",
        "/v1/auth/login",
        {"username": "alice", "password": TEST_PASSWORD, "device": "Work laptop"},
        headers={"User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) "
                 "Gecko/20100101 Firefox/128.0"},
    ).body  # fmt: skip

    page = await context.new_page()
    page.on("console", lambda m: m.type == "error" and page_errors.append(m.text))
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    response = await page.goto(server.base_url + "/account")
    assert response is not None and response.status == 200
    await page.fill("#sign-in-form input[name=username]", "alice")
    await page.fill("#sign-in-form input[name=password]", TEST_PASSWORD)
    await page.click("#sign-in-form button[type=submit]")

    rows = page.locator("#sessions li")
    await expect(rows).to_have_count(2)
    this_one = page.locator("#sessions li.current")
    assert await this_one.locator(".badge").is_visible()
    # The page names its device at sign-in: authsvc keeps 64 bytes of a User-Agent.
    device = await this_one.locator(".device").inner_text()
    assert re.fullmatch(r"Headless Chrome \d+ on Linux", device), device
    other = page.locator("#sessions li:not(.current)")
    assert await other.locator(".device").inner_text() == "Work laptop"
    assert await other.locator(".browser").inner_text() == "Firefox 128, Windows"
    assert await other.locator(".address").inner_text() == "127.0.0.1"
    assert await page.locator("#username").inner_text() == "alice"

    await other.locator("button.end").click()
    await expect(rows).to_have_count(1)
    # Its tokens are refused at once.
    assert server.request("GET", "/v1/auth/me", token=laptop["access_token"]).status == 401
    assert server.refresh(laptop["refresh_token"]).status == 401

    new_password = "a new passphrase for alice"
    await page.fill("#password-form input[name=current]", TEST_PASSWORD)
    await page.fill("#password-form input[name=new]", new_password)
    await page.fill("#password-form input[name=again]", new_password)
    await page.click("#password-form button[type=submit]")
    # (Waiting goes through locators: the page's CSP refuses wait_for_function's eval.)
    await expect(page.locator("#notice")).to_contain_text("Password changed")
    await page.wait_for_selector("#events li[data-type=password_changed]")
    types = await page.locator("#events li").evaluate_all("rows => rows.map(r => r.dataset.type)")
    assert types[0] == "password_changed"
    assert {"login", "session_revoked", "password_changed"} <= set(types)
    assert server.request(
        "POST", "/v1/auth/login", {"username": "alice", "password": TEST_PASSWORD}
    ).status == 401  # fmt: skip
    assert server.login("alice", new_password)["access_token"]
    # Still signed in: the password change kept this session.
    await page.reload()
    await page.wait_for_selector("#sessions li.current")
    assert await page.locator("#account").is_visible()


async def test_the_account_page_ends_all_other_sessions_and_signs_out_everywhere(
    context: BrowserContext,
    servers: Servers,
    tmp_path: Path,
    store: str,
    keys_dir: Path,
    page_errors: list[str],
) -> None:
    server = start_authsvc(servers, tmp_path, store, keys_dir)
    register(server, "alice")
    others = [server.login("alice") for _ in range(2)]

    page = await context.new_page()
    page.on("console", lambda m: m.type == "error" and page_errors.append(m.text))
    await page.goto(server.base_url + "/account")
    await page.fill("#sign-in-form input[name=username]", "alice")
    await page.fill("#sign-in-form input[name=password]", TEST_PASSWORD)
    await page.click("#sign-in-form button[type=submit]")
    rows = page.locator("#sessions li")
    await expect(rows).to_have_count(3)

    await page.click("#end-others")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#notice")).to_contain_text("2 other sessions ended")
    for pair in others:
        assert server.request("GET", "/v1/auth/me", token=pair["access_token"]).status == 401
        assert server.refresh(pair["refresh_token"]).status == 401
    # The page's own session lives on, through the cookie: a reload resumes it.
    await page.reload()
    await expect(rows).to_have_count(1)
    session_id = await rows.first.get_attribute("data-session-id")

    await page.click("#sign-out-everywhere")
    await expect(page.locator("#sign-in")).to_be_visible()
    await expect(page.locator("#notice")).to_contain_text("Signed out everywhere")
    assert await refresh_cookie(context) is None
    # Every session ended: a new login is the only one left.
    fresh = server.login("alice")
    listed = server.request("GET", "/v1/auth/sessions", token=fresh["access_token"]).body
    assert [s["session_id"] for s in listed["sessions"]] == [fresh["session_id"]]
    assert session_id != fresh["session_id"]
