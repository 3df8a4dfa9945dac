"""`almere screenshot`: a picture of the control room's dashboard as a role sees it, taken with
Debian's Chromium (the README's pictures come from here, during a coordinated run)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

# As the machine's own probe starts Chromium: no sandbox as root, no calls home from a closed network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


async def take(*, url: str, token: str, out: Path, settle_s: float = 5.0) -> Path:
    """Logs in at `url` (the gateway's /dashboard/) with `token`, lets live data arrive, saves a PNG."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is not installed: make browser")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await page.goto(url)
        await page.get_by_test_id("token-input").fill(token)
        await page.get_by_test_id("login").click()
        await page.wait_for_function("window.__dashboard.ready", timeout=30_000)
        await asyncio.sleep(settle_s)
        out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=out)
        await browser.close()
    return out
