"""The functions app serves the built web client (WEB_DIST_DIR): files with their cache headers,
index.html (with its CSP) for client-side routes, never in place of an API path, nothing outside
the directory, and `web_client_not_built` when there is no build — the API unchanged either way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import Message

from agentmarket.core.config import Settings
from functions.web import IMMUTABLE, content_security_policy
from tests.procs import free_port

pytestmark = pytest.mark.db

INDEX = (
    '<!doctype html><html lang="en"><head><title>Agent Marketplace</title>'
    '<script type="module" src="/assets/index-3f9a1c.js"></script></head>'
    '<body><div id="app"></div></body></html>'
)
SCRIPT = "export const hello = () => 'hello';\n" * 100  # over the gzip threshold
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def build(dist: Path) -> None:
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-3f9a1c.js").write_text(SCRIPT)
    (dist / "assets" / "logo-77aa00.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (dist / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    directory = tmp_path / "web" / "dist"
    build(directory)
    # A file next to the build that no request may reach, and a link from inside to it.
    (tmp_path / "web" / "secret.txt").write_text("not for you")
    (directory / "assets" / "leak.txt").symlink_to(tmp_path / "web" / "secret.txt")
    return directory


@pytest.fixture
def settings(settings: Settings, dist: Path) -> Settings:
    return settings.model_copy(
        update={"web_dist_dir": dist, "supabase_url": "https://abc.supabase.co/"}
    )


def assert_index(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.text == INDEX
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"] == (
        "default-src 'self'; connect-src 'self' https://abc.supabase.co; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    )


def assert_problem(response: httpx.Response, code: str) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code


async def test_the_root_is_index_html_with_its_csp(client: httpx.AsyncClient) -> None:
    assert_index(await client.get("/"))
    assert_index(await client.get("/index.html"))
    # Without Accept too: `/` is the client, whatever asks.
    assert_index(await client.get("/", headers={"Accept": "*/*"}))


async def test_client_side_routes_get_index_html_when_a_page_is_asked_for(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/agents/sql-sidekick", "/chat/5d1c?conversation=9", "/my-agents", "/admin"):
        assert_index(await client.get(path, headers=HTML))
        head = await client.head(path, headers=HTML)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["content-length"] == str(len(INDEX))
    # Not a page navigation (fetch, curl, an image): the ordinary 404.
    for accept in ("*/*", "application/json", "text/html;q=0"):
        assert_problem(await client.get("/agents/x", headers={"Accept": accept}), "not_found")
    assert_problem(await client.get("/agents/x"), "not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/api",
        "/api/nothing-here",
        "/api/marketplace/agents/x/y/z",
        "/healthz/x",
        "/readyz/x",
        "/metrics/x",
        "/openapi.json/x",
        "/docs/x",
        "/redoc/x",
        "/assets/index-000000.js",  # a stale hash: a 404, never HTML run as a script
    ],
)
async def test_api_paths_are_never_the_client(client: httpx.AsyncClient, path: str) -> None:
    assert_problem(await client.get(path, headers=HTML), "not_found")


async def test_the_api_answers_as_before(client: httpx.AsyncClient) -> None:
    agents = await client.get("/api/marketplace/agents", headers=HTML)
    assert agents.status_code == 200
    assert agents.headers["content-type"] == "application/json"
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Agent Marketplace"
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    # A route's other methods are still 405, an unknown POST still 404.
    wrong = await client.get("/api/marketplace/deploy", headers=HTML)
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"
    assert_problem(await client.post("/agents/x", json={}, headers=HTML), "not_found")
    assert_problem(await client.delete("/", headers=HTML), "not_found")


async def test_hashed_assets_are_immutable_other_files_revalidate(
    client: httpx.AsyncClient,
) -> None:
    script = await client.get("/assets/index-3f9a1c.js", headers={"Accept-Encoding": "identity"})
    assert script.status_code == 200
    assert script.text == SCRIPT
    assert script.headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert script.headers["cache-control"] == IMMUTABLE == "public, max-age=31536000, immutable"
    assert script.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in script.headers
    icon = await client.get("/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["cache-control"] == "no-cache"
    # Revalidation: the ETag answers 304, with the cache headers.
    again = await client.get(
        "/assets/index-3f9a1c.js", headers={"If-None-Match": script.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.headers["cache-control"] == IMMUTABLE
    index = await client.get("/")
    unchanged = await client.get("/", headers={"If-None-Match": index.headers["etag"]})
    assert unchanged.status_code == 304
    # HEAD: the headers, no body.
    head = await client.head("/assets/index-3f9a1c.js", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(SCRIPT))
    assert head.headers["cache-control"] == IMMUTABLE


async def test_text_is_gzipped_for_clients_that_accept_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/assets/index-3f9a1c.js", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    assert response.text == SCRIPT  # httpx decodes it
    assert int(response.headers.get("content-length", "0") or 0) < len(SCRIPT)
    # The API's own answers are not touched by it.
    agents = await client.get("/api/marketplace/agents", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in agents.headers


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/../secret.txt",
        b"/assets/../../secret.txt",
        b"/%2e%2e/secret.txt",
        b"/assets/%2e%2e/%2e%2e/secret.txt",
        b"/..%2fsecret.txt",
        b"/assets/leak.txt",  # a symbolic link out of the directory
        b"//etc/passwd",
        b"/%2fetc%2fpasswd",
    ],
)
async def test_nothing_outside_the_directory_is_served(
    client: httpx.AsyncClient, raw_path: bytes
) -> None:
    url = httpx.URL("http://testserver").copy_with(raw_path=raw_path)
    for headers in ({"Accept": "*/*"}, HTML):
        response = await client.get(url, headers=headers)
        assert b"not for you" not in response.content
        assert b"root:" not in response.content
        assert response.status_code in (200, 404)
        if response.status_code == 200:  # a navigation: the page, nothing else
            assert response.text == INDEX


class TestNotBuilt:
    @pytest.fixture
    def settings(self, settings: Settings, tmp_path: Path) -> Settings:
        return settings.model_copy(update={"web_dist_dir": tmp_path / "nothing-here"})

    async def test_pages_say_so_and_the_api_works(self, client: httpx.AsyncClient) -> None:
        root = await client.get("/")
        assert_problem(root, "web_client_not_built")
        assert "npm run build" in root.json()["detail"]
        assert_problem(await client.get("/agents/x", headers=HTML), "web_client_not_built")
        assert_problem(await client.get("/assets/index-3f9a1c.js"), "not_found")
        assert_problem(await client.get("/api/nope", headers=HTML), "not_found")
        assert (await client.get("/api/marketplace/agents")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


def test_content_security_policy_without_supabase() -> None:
    assert "connect-src 'self';" in content_security_policy(None)
    assert "connect-src 'self' http://127.0.0.1:54321;" in content_security_policy(
        "http://127.0.0.1:54321/auth/v1"
    )


@pytest.fixture
def served(db_url: str, dist: Path, tmp_path: Path) -> Iterator[str]:
    """`agentmarket serve --workers 2` with WEB_DIST_DIR: each process builds its app from the
    environment."""
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "DATABASE_URL": db_url,
        "WEB_DIST_DIR": str(dist),
        "SUPABASE_URL": "https://abc.supabase.co",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmarket", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_serve_with_workers_serves_the_client(served: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as http:
        for _ in range(6):  # several connections, so both processes answer
            with httpx.Client(base_url=served, timeout=10) as fresh:
                assert_index(fresh.get("/my-agents", headers=HTML))
        script = http.get("/assets/index-3f9a1c.js")
        assert script.status_code == 200
        assert script.headers["cache-control"] == IMMUTABLE
        assert script.text == SCRIPT
        # The server does not normalise dot segments away for us: the app refuses them itself.
        raw = http.get(httpx.URL(served).copy_with(raw_path=b"/assets/../../secret.txt"))
        assert b"not for you" not in raw.content
        assert http.get("/api/marketplace/agents").status_code == 200


async def test_a_websocket_to_an_unknown_path_is_closed(app: FastAPI) -> None:
    """As the router's own default does: no route, the socket is closed (not an HTTP 404)."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "path": "/anything",
        "raw_path": b"/anything",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "scheme": "ws",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1234),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert [m["type"] for m in sent] == ["websocket.close"]
