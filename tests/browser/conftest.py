"""Browser tests of the web client: Debian's Chromium (headless, through Playwright) against the
real functions app (APP_ENV=dev, so the dev sign-in exists; it serves web/dist, which
./scripts/test builds first), the chat worker and the offline model, on a fresh database.

The stack comes from tests/e2e/conftest.py's helpers. Every page a test opens is watched: a
request to any host but the API's fails the test. Screenshots go to .data/artifacts/browser/."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.conftest import Server
from tests.e2e.conftest import GENEROUS_LIMITS, Stack, running_stack

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "web" / "dist"
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = ROOT / ".data" / "artifacts" / "browser"
CHROMIUM = os.environ.get("AGENTMARKET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Two shared cores: processes start and answer slowly at times; waits end as soon as they can.
expect.set_options(timeout=20_000)

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="module")
def web_limits() -> dict[str, int]:
    """The limits a module's stack runs with (override in a module to test them)."""
    return GENEROUS_LIMITS


@pytest.fixture(scope="module")
def stack(
    pg_server: Server, tmp_path_factory: pytest.TempPathFactory, web_limits: dict[str, int]
) -> Iterator[Stack]:
    if not (DIST / "index.html").is_file():
        pytest.fail("web/dist is not built: ./scripts/test builds it (or: cd web && npm run build)")
    env = {
        "APP_ENV": "dev",
        "LOG_LEVEL": "info",
        "SSE_PING_SECONDS": "1",
        "CATALOG_CACHE_SECONDS": "0",
        "WEB_DIST_DIR": str(DIST),
    }
    logs = tmp_path_factory.mktemp("browser-logs")
    unset = ("SUPABASE_URL", "SUPABASE_ANON_KEY", "CORS_ALLOW_ORIGINS")
    with running_stack(pg_server, logs, limits=web_limits, env=env, unset=unset) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Per module: only one sync Playwright may run at a time in a thread, and other modules
    # (test_cross_origin.py) start their own.
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Watch:
    """What the pages of one context did: requests to other hosts, console errors."""

    def __init__(self, api: str, tolerate: str | None = None) -> None:
        self.origin = api
        self.tolerate = re.compile(tolerate) if tolerate else None
        self.foreign: list[str] = []
        self.errors: list[str] = []

    def request(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.foreign.append(url)

    def console(self, kind: str, text: str) -> None:
        # 4xx answers the app handles (a 422, a 429) are logged by Chromium as errors; not ours.
        if self.tolerate and self.tolerate.search(text):
            return
        if kind == "error" and "status of 4" not in text:
            self.errors.append(text)


Opener = Callable[..., Page]


@pytest.fixture
def open_page(browser: Browser, stack: Stack) -> Iterator[Opener]:
    """open_page(path="/", *, email=None, admin=False, viewport=DESKTOP, tour=False,
    bypass_csp=False, tolerate=None) → a Page on the app, signed in as `email` when given (a
    dev session put in localStorage), the first-visit tour already done unless `tour`. Console
    errors fail the test unless they match the `tolerate` pattern."""
    contexts: list[tuple[BrowserContext, Watch]] = []

    def opener(
        path: str = "/",
        *,
        email: str | None = None,
        admin: bool = False,
        viewport: dict[str, int] = DESKTOP,
        tour: bool = False,
        bypass_csp: bool = False,
        tolerate: str | None = None,
    ) -> Page:
        context = browser.new_context(
            viewport=viewport,  # type: ignore[arg-type]
            base_url=stack.api,
            timezone_id="UTC",
            locale="en-US",
            accept_downloads=True,
            bypass_csp=bypass_csp,
        )
        watch = Watch(stack.api, tolerate)
        context.on("request", lambda r: watch.request(r.url))
        contexts.append((context, watch))
        init: dict[str, str] = {}
        if not tour:
            init["agentmarket.tour"] = "done"
        if email:
            init["agentmarket.session"] = json.dumps(dev_session(stack, email, admin=admin))
        if init:
            # Once per tab, so that a reload keeps what the app stored since.
            context.add_init_script(
                "if (!sessionStorage.getItem('seeded')) {"
                f" for (const [k, v] of Object.entries({json.dumps(init)}))"
                " localStorage.setItem(k, v);"
                " sessionStorage.setItem('seeded', '1'); }"
            )
        page = context.new_page()
        page.on("console", lambda m: watch.console(m.type, m.text))
        page.goto(path)
        return page

    yield opener
    for context, watch in contexts:
        context.close()
        assert watch.foreign == [], f"requests left for another host: {watch.foreign}"
        assert watch.errors == [], f"console errors: {watch.errors}"


def dev_session(stack: Stack, email: str, *, admin: bool = False) -> dict[str, Any]:
    """The session the sign-in page stores, from the real POST /api/dev/session."""
    answer = httpx.post(f"{stack.api}/api/dev/session", json={"email": email, "admin": admin})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    import time

    return {
        "access_token": body["access_token"],
        "expires_at": int(time.time()) + body["expires_in"],
        "provider": "dev",
        "user": {"id": body["user"]["id"], "email": body["user"]["email"], "admin": admin},
    }


def api_client(stack: Stack, email: str, *, admin: bool = False) -> httpx.Client:
    token = dev_session(stack, email, admin=admin)["access_token"]
    return httpx.Client(
        base_url=stack.api, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"] if page.viewport_size else 0
    path = ARTIFACTS / f"{name}-{width}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now (needs a context
    opened with bypass_csp=True: the script tag is inline)."""
    page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "async () => await axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [n["target"] for n in v["nodes"]][:5],
        }
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def deploy(client: httpx.Client, agent: str = "sql-sidekick", **config: object) -> str:
    response = client.post("/api/marketplace/deploy", json={"agent_id": agent, "config": config})
    assert response.status_code == 201, response.text
    deployment_id: str = response.json()["id"]
    return deployment_id


def chat(client: httpx.Client, deployment: str, message: str) -> dict[str, Any]:
    response = client.post(f"/api/agents/{deployment}/chat", json={"message": message})
    assert response.status_code == 200, response.text
    exchange: dict[str, Any] = response.json()
    return exchange


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

__all__ = ["expect"]
