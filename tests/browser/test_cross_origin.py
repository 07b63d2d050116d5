"""A page served from another origin calls the API in a real browser (Debian's Chromium through
Playwright): listed in CORS_ALLOW_ORIGINS it browses, deploys and chats with a streamed reply
(fetch + ReadableStream, the rate-limit and request-id headers readable); from an origin not
listed, the browser refuses the API's answers to it (fetch rejects with a TypeError).

The stack is the real one (functions, worker, offline model: tests/e2e/conftest.py's helpers);
the pages come from tiny static servers on two more ports."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from tests.conftest import Server
from tests.e2e.conftest import GENEROUS_LIMITS, Stack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

PAGE = Path(__file__).parent / "cross_origin_page"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@functools.cache
def _page_handler() -> Any:
    return functools.partial(_Quiet, directory=str(PAGE))


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two static servers of the test page: the listed origin and one that is not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _page_handler()) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        listed, unlisted = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        yield listed, unlisted
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def stack(
    pg_server: Server, tmp_path_factory: pytest.TempPathFactory, origins: tuple[str, str]
) -> Iterator[Stack]:
    """The e2e stack (tests/e2e/conftest.py) with CORS_ALLOW_ORIGINS naming the first origin."""
    env = {"APP_ENV": "test", "CATALOG_CACHE_SECONDS": "0", "CORS_ALLOW_ORIGINS": origins[0]}
    logs = tmp_path_factory.mktemp("browser-logs")
    with running_stack(pg_server, logs, limits=GENEROUS_LIMITS, env=env) as s:
        yield s


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def run_page(page: Page, origin: str, stack: Stack, email: str) -> dict[str, Any]:
    """Open the test page on `origin` against the stack; what it saw once it is done."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{origin}/index.html?api={stack.api}&token={stack.token(email)}")
    page.wait_for_function("window.result && window.result.done", timeout=60_000)
    result: dict[str, Any] = page.evaluate("window.result")
    result["console_errors"] = errors
    return result


def test_a_listed_origin_browses_deploys_and_chats(
    page: Page, stack: Stack, origins: tuple[str, str]
) -> None:
    result = run_page(page, origins[0], stack, "cross-origin@example.com")
    assert "error" not in result, (result, stack.processes[1].output()[-3000:])
    # Browsed: the catalog is on the page.
    assert "sql-sidekick" in result["agents"]
    agents = page.get_by_role("list", name="Agents")
    assert agents.get_by_role("listitem").count() == len(result["agents"])
    assert result["listRequestId"]  # X-Request-ID is readable
    # Chatted: the reply streamed in pieces and matches the stored reply.
    assert result["final"]["status"] == "completed"
    assert result["deltas"] > 1
    assert result["streamed"] == result["final"]["content"]
    assert result["streamed"].startswith("Echo: hello from another origin")
    assert page.get_by_role("status").inner_text() == "done"
    assert page.locator("#reply").inner_text() == result["final"]["content"]
    # The exposed headers can be read across origins.
    headers = result["chatHeaders"]
    assert headers["requestId"]
    assert headers["rateLimit"] and headers["rateLimit"].startswith('"')
    assert headers["rateLimitPolicy"]
    with stack.client("cross-origin@example.com") as http:
        [deployment] = http.get("/api/deployments").json()["data"]
        assert deployment["agent"]["slug"] == "sql-sidekick"


def test_an_unlisted_origin_is_blocked_by_the_browser(
    page: Page, stack: Stack, origins: tuple[str, str]
) -> None:
    result = run_page(page, origins[1], stack, "elsewhere@example.com")
    assert result["error"]["name"] == "TypeError", result
    assert "agents" not in result
    assert page.get_by_role("status").inner_text() == "failed: TypeError"
    assert any("CORS" in line for line in result["console_errors"]), result["console_errors"]
    # Nothing got past the first call: the deploy's preflight is never even sent.
    with stack.client("elsewhere@example.com") as http:
        assert http.get("/api/deployments").json()["data"] == []
