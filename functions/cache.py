"""HTTP caching of catalog answers: the JSON rendered once per answer, a strong ETag, and 304s.

The catalog service caches its answers as models (`agentmarket.services.catalog.CatalogCache`)
and hands back the same model object while it is cached; `RenderMemo` keeps the JSON rendered
for each such object, so a cache hit renders nothing. An entry is used only for the very object
it was rendered from (`entry.model is model`), never for another one that reused its `id`.

`CachedAnswers` answers a repeated anonymous GET of a catalog URL from the catalog cache without
routing it again: the route, having answered a URL once, leaves in the request how to answer it
from the cache alone (`offer_cached`), and later GETs of the very same path and query string skip
FastAPI's routing, dependencies and parameter parsing (docs/architecture.md#http-functions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response, status
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CACHE_CONTROL",
    "RENDERED",
    "CachedAnswer",
    "CachedAnswers",
    "RenderMemo",
    "Rendered",
    "json_response",
    "offer_cached",
]

CACHE_CONTROL = "public, max-age=0, must-revalidate"


@dataclass(frozen=True)
class Rendered:
    """A model's JSON body and its strong ETag (and the response headers for both answers, in
    the order `json_response` sends them)."""

    body: bytes
    etag: str
    etag_bytes: bytes = field(init=False, repr=False, compare=False)
    ok_headers: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)
    not_modified_headers: tuple[tuple[bytes, bytes], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        etag = self.etag.encode("latin-1")
        common = ((b"etag", etag), (b"cache-control", CACHE_CONTROL.encode()))
        object.__setattr__(self, "etag_bytes", etag)
        object.__setattr__(self, "not_modified_headers", common)
        object.__setattr__(
            self,
            "ok_headers",
            (
                *common,
                (b"content-length", str(len(self.body)).encode()),
                (b"content-type", b"application/json"),
            ),
        )

    @classmethod
    def of(cls, model: BaseModel) -> Rendered:
        body = model.model_dump_json().encode()
        return cls(body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')


class RenderMemo:
    """`Rendered` per model object (by identity), for at most `maxsize` objects (oldest out).

    Small: it only has to cover the answers hot in the catalog cache right now (an entry dropped
    too early costs one more rendering); it holds each model it renders until then."""

    def __init__(self, maxsize: int = 256) -> None:
        self.maxsize = maxsize
        self._entries: dict[int, tuple[BaseModel, Rendered]] = {}

    def render(self, model: BaseModel) -> Rendered:
        entry = self._entries.get(id(model))
        if entry is not None and entry[0] is model:
            return entry[1]
        rendered = Rendered.of(model)
        if entry is None and len(self._entries) >= self.maxsize:
            del self._entries[next(iter(self._entries))]
        # Holding the model keeps its id from being reused while the entry lives.
        self._entries[id(model)] = (model, rendered)
        return rendered

    def __len__(self) -> int:
        return len(self._entries)


# The process's memo: catalog answers are the same for every app instance that produced them.
RENDERED = RenderMemo()


def json_response(request: Request, model: BaseModel, memo: RenderMemo = RENDERED) -> Response:
    """The model's JSON (rendered once per model object) with a strong ETag; 304 when the client
    already has it."""
    rendered = memo.render(model)
    headers = {"ETag": rendered.etag, "Cache-Control": CACHE_CONTROL}
    if rendered.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(rendered.body, media_type="application/json", headers=headers)


# How to answer a request again from the cache alone: its model (its event recorded), or None
# when the cache no longer holds it.
CachedAnswer = Callable[[], BaseModel | None]

_OFFER = "agentmarket.cached_answer"


def offer_cached(request: Request, answer: CachedAnswer) -> None:
    """Tell `CachedAnswers` how this request's URL can be answered again for an anonymous
    caller. Only for an answer that depends on the URL alone, never on who asks."""
    request.scope[_OFFER] = answer


class CachedAnswers:
    """Pure ASGI middleware: a GET without credentials of a path and query string a route has
    answered before (and offered, `offer_cached`) is answered here from the cache, with the same
    status, headers and body the route would send; anything else, or a cache miss, goes on to
    the app. Remembers at most `maxsize` URLs (oldest out): a forgotten one is routed again."""

    def __init__(self, app: ASGIApp, *, maxsize: int = 1024, memo: RenderMemo = RENDERED) -> None:
        self.app = app
        self.maxsize = maxsize
        self.memo = memo
        # (path, query string) -> (the route that answered it, for the log line; its answer)
        self._known: dict[tuple[str, bytes], tuple[Any, CachedAnswer]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def remembers(self, path: str, query_string: bytes) -> bool:
        return (path, query_string) in self._known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if_none_match: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":  # the route decides what a credential means
                await self.app(scope, receive, send)
                return
            if name == b"if-none-match" and if_none_match is None:
                if_none_match = value
        url = (scope["path"], scope["query_string"])
        known = self._known.get(url)
        if known is not None:
            model = known[1]()
            if model is not None:
                scope["route"] = known[0]
                await self._send(send, self.memo.render(model), if_none_match)
                return
        status_code = 0

        async def sending(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        answer: CachedAnswer | None = scope.get(_OFFER)
        if answer is not None and status_code in (200, 304):
            self._remember(url, scope.get("route"), answer)

    def _remember(self, url: tuple[str, bytes], route: Any, answer: CachedAnswer) -> None:
        if url not in self._known and len(self._known) >= self.maxsize:
            del self._known[next(iter(self._known))]
        self._known[url] = (route, answer)

    @staticmethod
    async def _send(send: Send, rendered: Rendered, if_none_match: bytes | None) -> None:
        if if_none_match is not None and rendered.etag_bytes in if_none_match:
            await send(
                {
                    "type": "http.response.start",
                    "status": status.HTTP_304_NOT_MODIFIED,
                    "headers": list(rendered.not_modified_headers),
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": list(rendered.ok_headers)}
        )
        await send({"type": "http.response.body", "body": rendered.body})
