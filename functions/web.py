"""The built web client (`web/dist`, WEB_DIST_DIR) served by the functions app.

`WebClient` is the router's default: it sees only the requests no route matched (so every API
answer, 405s included, is exactly what it was without it). For a GET or HEAD outside the API's
own paths it serves the file the path names (Starlette's `StaticFiles`: no path leaves the
directory, ETags, 304s, ranges, HEAD), and a navigation that names no file (a client-side route:
`Accept: text/html`) gets `index.html`. Everything else stays the app's ordinary 404.

Caching: files under `assets/` have hashed names (Vite) and are cached for a year, `immutable`;
everything else, `index.html` first, is `no-cache` (revalidated by ETag), so a new build is seen
at once. `index.html` carries a strict Content-Security-Policy. Text is gzipped on the way out
for clients that accept it (Starlette's `GZipMiddleware`, only around the client's files).
docs/operations.md#the-web-client.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import urlsplit

import anyio.to_thread
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from agentmarket.core.config import Settings
from agentmarket.core.errors import WebClientNotBuilt
from functions.routers import client, dev

__all__ = [
    "RESERVED_PREFIXES",
    "WebClient",
    "content_security_policy",
    "install",
    "web_client",
]

# Paths that are the API's (or its documentation's): never a file of the client, never index.html.
RESERVED_PREFIXES = ("/api", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/redoc")
ASSETS = "assets"  # Vite's hashed output
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


def content_security_policy(supabase_url: str | None) -> str:
    """The client's CSP: its own origin only, plus Supabase Auth's origin for connections."""
    connect = ["'self'"]
    if supabase_url:
        parts = urlsplit(supabase_url)
        if parts.scheme and parts.netloc:
            connect.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        (
            "default-src 'self'",
            f"connect-src {' '.join(connect)}",
            "img-src 'self' data:",
            "style-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def _reserved(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in RESERVED_PREFIXES)


def _accepts_html(headers: Headers) -> bool:
    """The request is a page navigation: its Accept names text/html (with q > 0); `*/*` alone,
    as fetch and curl send it, is not."""
    for part in headers.get("accept", "").split(","):
        media, *params = part.split(";")
        if media.strip().lower() != "text/html":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class WebClient:
    """ASGI app serving the built client from `dist` (see the module's docstring)."""

    def __init__(self, dist: Path, *, supabase_url: str | None) -> None:
        self.dist = dist
        self.files = StaticFiles(directory=dist, check_dir=False)
        self.csp = content_security_policy(supabase_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # as the router's own default: close it
            await WebSocketClose()(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD") or _reserved(path):
            raise HTTPException(status_code=404)
        headers = Headers(scope=scope)
        navigation = path == "/" or _accepts_html(headers)
        if not await anyio.to_thread.run_sync(self._built):
            if navigation:
                raise WebClientNotBuilt()
            raise HTTPException(status_code=404)
        relative = self.files.get_path(scope)
        response: Response | None = None
        if relative not in (".", "index.html"):
            try:
                response = await self.files.get_response(relative, scope)
            except HTTPException as exc:
                # A missing asset is a 404, never the page: a stale hashed name must not be
                # answered with HTML the browser would try to run as a script.
                if exc.status_code != 404 or not navigation or relative.startswith(ASSETS + "/"):
                    raise
            else:
                top = relative.split(os.sep, 1)[0]
                response.headers["cache-control"] = IMMUTABLE if top == ASSETS else REVALIDATE
        if response is None:
            response = await self._index(scope)
        response.headers["x-content-type-options"] = "nosniff"
        await response(scope, receive, send)

    def _built(self) -> bool:
        try:
            return stat.S_ISREG(os.stat(self.dist / "index.html").st_mode)
        except OSError:
            return False

    async def _index(self, scope: Scope) -> Response:
        response = await self.files.get_response("index.html", scope)
        response.headers["cache-control"] = REVALIDATE
        response.headers["content-security-policy"] = self.csp
        response.headers["referrer-policy"] = "same-origin"
        return response


def web_client(settings: Settings) -> ASGIApp:
    """The app's fallback for what no route matched: the client, its text gzipped."""
    return GZipMiddleware(
        WebClient(settings.web_dist, supabase_url=settings.supabase_url), minimum_size=1024
    )


def install(app: FastAPI, settings: Settings) -> None:
    """`GET /api/client-config`, the dev sign-in (APP_ENV=dev only: otherwise the route does
    not exist) and the client itself as the router's default."""
    app.include_router(client.router)
    if dev.dev_sign_in(settings):
        app.include_router(dev.router)
    app.router.default = web_client(settings)
