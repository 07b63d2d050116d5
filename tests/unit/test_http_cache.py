"""functions.cache: a cached catalog model is rendered once (the same `Rendered` for the same
model object), a new model gets its own body and ETag, the memo stays bounded, and the
ETag/304 answers are those clients revalidate with."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel
from starlette.requests import Request

from agentmarket.domain.models import CategoryCount
from agentmarket.services.catalog import CategoryList
from functions.cache import Rendered, RenderMemo, json_response


class Thing(BaseModel):
    name: str


def request(if_none_match: str | None = None) -> Request:
    headers = [] if if_none_match is None else [(b"if-none-match", if_none_match.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_the_same_model_object_is_rendered_once() -> None:
    memo = RenderMemo()
    model = Thing(name="a")
    first = memo.render(model)
    assert memo.render(model) is first
    assert len(memo) == 1


def test_a_new_model_gets_a_new_rendering_even_when_equal() -> None:
    memo = RenderMemo()
    first = memo.render(Thing(name="a"))
    again = memo.render(Thing(name="a"))
    assert again is not first
    assert (again.body, again.etag) == (first.body, first.etag)
    other = memo.render(Thing(name="b"))
    assert other.body == b'{"name":"b"}'
    assert other.etag != first.etag


def test_an_entry_serves_only_the_object_it_was_rendered_from() -> None:
    memo = RenderMemo()
    model = Thing(name="a")
    stale = Rendered.of(Thing(name="stale"))
    # An entry under this id for another object (as if the id had been reused) is not used.
    memo._entries[id(model)] = (Thing(name="stale"), stale)
    rendered = memo.render(model)
    assert rendered is not stale
    assert rendered.body == b'{"name":"a"}'
    assert memo.render(model) is rendered


def test_the_memo_is_bounded_oldest_out() -> None:
    memo = RenderMemo(maxsize=2)
    models = [Thing(name=str(n)) for n in range(3)]
    renderings = [memo.render(model) for model in models]
    assert len(memo) == 2
    assert memo.render(models[2]) is renderings[2]
    assert memo.render(models[1]) is renderings[1]
    assert memo.render(models[0]) is not renderings[0]  # dropped, rendered again
    assert len(memo) == 2


def test_the_etag_is_a_strong_hash_of_the_body() -> None:
    model = CategoryList([CategoryCount(category="data", count=2)])
    rendered = Rendered.of(model)
    assert rendered.body == model.model_dump_json().encode()
    assert rendered.etag == '"' + hashlib.blake2b(rendered.body, digest_size=12).hexdigest() + '"'


def test_json_response_renders_once_and_answers_304_to_a_matching_etag() -> None:
    memo = RenderMemo()
    model = Thing(name="a")
    fresh = json_response(request(), model, memo)
    assert fresh.status_code == 200
    assert fresh.body == b'{"name":"a"}'
    assert fresh.media_type == "application/json"
    etag = fresh.headers["etag"]
    assert fresh.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert len(memo) == 1

    same = json_response(request(f'W/"x", {etag}'), model, memo)
    assert same.status_code == 304
    assert same.body == b""
    assert same.headers["etag"] == etag
    assert same.headers["cache-control"] == "public, max-age=0, must-revalidate"
    assert len(memo) == 1

    changed = json_response(request(etag), Thing(name="b"), memo)
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
