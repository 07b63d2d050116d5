"""HTTP caching of catalog answers: the JSON rendered once per answer, a strong ETag, and 304s.

The catalog service caches its answers as models (`agentmarket.services.catalog.CatalogCache`)
and hands back the same model object while it is cached; `RenderMemo` keeps the JSON rendered
for each such object, so a cache hit renders nothing. An entry is used only for the very object
it was rendered from (`entry.model is model`), never for another one that reused its `id`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fastapi import Request, Response, status
from pydantic import BaseModel

__all__ = ["RENDERED", "RenderMemo", "Rendered", "json_response"]


@dataclass(frozen=True)
class Rendered:
    """A model's JSON body and its strong ETag."""

    body: bytes
    etag: str

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
    headers = {"ETag": rendered.etag, "Cache-Control": "public, max-age=0, must-revalidate"}
    if rendered.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(rendered.body, media_type="application/json", headers=headers)
