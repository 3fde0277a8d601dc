"""Take the account page's screenshots (docs/account-desktop.png, docs/account-phone.png).

Started by scripts/screenshots, in the test venv (playwright). An authsvc on a free port
with an in-memory store; a demo account signed in from a phone and a laptop (their
User-Agents sent by hand, as those browsers would) and once with a wrong password, so the
lists have something to show; then /account signed in, in Chromium, at two widths.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright, expect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import TEST_PASSWORD, Server  # noqa: E402

CHROMIUM = os.environ.get("AUTHSVC_TEST_CHROMIUM", "/usr/bin/chromium")
USERNAME = "ada"
DEVICES = [
    (
        "Ada's iPhone",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    ),
    (
        "",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ),
]
SHOTS = [("account-desktop.png", 1280, 900), ("account-phone.png", 390, 844)]


def prepare(server: Server) -> None:
    assert server.register(USERNAME).status == 201
    for device, user_agent in DEVICES:
        body = {"username": USERNAME, "password": TEST_PASSWORD}
        if device:
            body["device"] = device
        reply = server.request("POST", "/v1/auth/login", body, headers={"User-Agent": user_agent})
        assert reply.status == 200, reply.body
    wrong = {"username": USERNAME, "password": "not the password"}
    assert server.request("POST", "/v1/auth/login", wrong).status == 401


async def shoot(server: Server, out: Path) -> None:
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM)
        for name, width, height in SHOTS:
            context = await browser.new_context(viewport={"width": width, "height": height})
            page = await context.new_page()
            await page.goto(server.base_url + "/account")
            await page.fill("#sign-in-form input[name=username]", USERNAME)
            await page.fill("#sign-in-form input[name=password]", TEST_PASSWORD)
            await page.click("#sign-in-form button[type=submit]")
            await expect(page.locator("#sessions li")).to_have_count(len(DEVICES) + 1)
            await expect(page.locator("#events li").first).to_be_visible()
            await page.screenshot(path=str(out / name), full_page=True)
            print(f"wrote {(out / name).relative_to(ROOT)}")
            await page.click("#sign-out")  # the next width signs in afresh
            await expect(page.locator("#sign-in")).to_be_visible()
            await context.close()
        await browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        server = Server(Path(work) / "authsvc.log", {"AUTHSVC_REDIS_URL": "memory://"})
        server.start()
        try:
            prepare(server)
            asyncio.run(shoot(server, ROOT / "docs"))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
