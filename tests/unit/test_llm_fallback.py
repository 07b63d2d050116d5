"""The fallback model (docs/operations.md#the-fallback-model): LLMClient against two mocked
OpenAI-compatible providers (respx), the primary and the fallback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from pydantic import SecretStr

from agentmarket.core.config import Settings
from agentmarket.llm.client import (
    Completed,
    FallbackModel,
    FallingBack,
    LLMClient,
    LLMError,
    Retrying,
    StreamEvent,
    TextDelta,
)
from tests.unit.test_llm import (
    BASE_URL,
    PLATFORM_KEY,
    USER_KEY,
    assert_no_key,
    error,
    ok,
    request,
)
from workers.chat_worker import fallback_model

FALLBACK_URL = "https://fallback.test/v1"
FALLBACK_KEY = "sk-fallback-" + "F" * 40


@pytest.fixture
def primary() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def fallback() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=FALLBACK_URL, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def llm() -> AsyncIterator[LLMClient]:
    async def no_sleep(_: float) -> None:
        return None

    client = LLMClient(
        base_url=BASE_URL,
        platform_api_key=PLATFORM_KEY,
        sleep=no_sleep,
        fallback=FallbackModel("gpt-fallback", FALLBACK_URL, FALLBACK_KEY),
    )
    yield client
    await client.aclose()


async def run(llm: LLMClient, **overrides: object) -> tuple[list[StreamEvent], LLMError | None]:
    events: list[StreamEvent] = []
    try:
        async with contextlib.aclosing(llm.stream(request(**overrides))) as stream:
            async for event in stream:
                events.append(event)
    except LLMError as exc:
        return events, exc
    return events, None


def fallbacks(outcome: str) -> float:
    value = REGISTRY.get_sample_value("agent_model_fallbacks_total", {"outcome": outcome})
    return value or 0.0


def fallback_answer(request: httpx.Request) -> httpx.Response:
    assert request.headers["authorization"] == f"Bearer {FALLBACK_KEY}"
    return ok("From ", "the fallback")


async def test_primary_failing_transiently_falls_back_and_the_text_starts_over(
    llm: LLMClient, primary: respx.MockRouter, fallback: respx.MockRouter
) -> None:
    before = fallbacks("ok")
    primary.post("/chat/completions").mock(return_value=error(503, "overloaded"))
    route = fallback.post("/chat/completions").mock(side_effect=fallback_answer)
    events, exc = await run(llm)
    assert exc is None
    assert primary.calls.call_count == 4  # the primary's retries come first
    assert route.call_count == 1
    assert import_json(route.calls.last.request)["model"] == "gpt-fallback"
    kinds = [type(e) for e in events]
    # Three Retrying, then FallingBack (the caller discards partial text), then the new text.
    assert kinds[:4] == [Retrying, Retrying, Retrying, FallingBack]
    falling = events[3]
    assert isinstance(falling, FallingBack)
    assert (falling.model, falling.error_code) == ("gpt-fallback", "upstream_unavailable")
    assert "".join(e.text for e in events[4:] if isinstance(e, TextDelta)) == "From the fallback"
    assert isinstance(events[-1], Completed)
    assert fallbacks("ok") == before + 1


async def test_user_key_never_falls_back(
    llm: LLMClient, primary: respx.MockRouter, fallback: respx.MockRouter
) -> None:
    primary.post("/chat/completions").mock(return_value=error(503, "overloaded"))
    route = fallback.post("/chat/completions").mock(side_effect=fallback_answer)
    events, exc = await run(llm, api_key=USER_KEY)
    assert exc is not None and exc.error_code == "upstream_unavailable"
    assert route.call_count == 0
    assert not any(isinstance(e, FallingBack) for e in events)


async def test_permanent_failures_do_not_fall_back(
    llm: LLMClient, primary: respx.MockRouter, fallback: respx.MockRouter
) -> None:
    primary.post("/chat/completions").mock(return_value=error(400, "bad"))
    route = fallback.post("/chat/completions").mock(side_effect=fallback_answer)
    _, exc = await run(llm)
    assert exc is not None and exc.error_code == "upstream_bad_request"
    assert route.call_count == 0


async def test_fallback_failing_too_reports_the_primarys_failure(
    llm: LLMClient, primary: respx.MockRouter, fallback: respx.MockRouter
) -> None:
    before = fallbacks("failed")
    primary.post("/chat/completions").mock(return_value=error(503, "overloaded"))
    fallback.post("/chat/completions").mock(return_value=error(401, f"bad key {FALLBACK_KEY}"))
    _, exc = await run(llm)
    assert exc is not None
    assert exc.error_code == "upstream_unavailable"  # not the fallback's configuration problem
    assert exc.attempts == 5
    assert not exc.account_refused
    assert_no_key(exc, exc.detail, exc.message)
    assert FALLBACK_KEY not in f"{exc!r} {exc.detail}"
    assert fallbacks("failed") == before + 1


async def test_without_fallback_the_failure_stands(primary: respx.MockRouter) -> None:
    async def no_sleep(_: float) -> None:
        return None

    llm = LLMClient(base_url=BASE_URL, platform_api_key=PLATFORM_KEY, sleep=no_sleep)
    primary.post("/chat/completions").mock(return_value=error(503, "overloaded"))
    _, exc = await run(llm)
    await llm.aclose()
    assert exc is not None and exc.error_code == "upstream_unavailable"


@pytest.mark.parametrize(
    ("response", "refused"),
    [
        (error(401, "bad key", code="invalid_api_key"), True),
        (error(403, "nope", code="account_deactivated"), True),
        (error(429, "pay up", code="insufficient_quota"), True),
        (error(404, "no model"), False),
        (error(400, "bad"), False),
    ],
)
async def test_account_refusals_are_marked(
    llm: LLMClient, primary: respx.MockRouter, response: httpx.Response, refused: bool
) -> None:
    primary.post("/chat/completions").mock(return_value=response)
    _, exc = await run(llm, api_key=USER_KEY)
    assert exc is not None and exc.account_refused is refused


def settings(**values: str) -> Settings:
    return Settings(_env_file=None, openai_api_key=SecretStr("sk-plat"), **values)  # type: ignore[call-arg, arg-type]


def test_fallback_settings() -> None:
    assert fallback_model(settings()) is None
    same_provider = fallback_model(settings(openai_fallback_model="gpt-b"))
    assert same_provider is not None and same_provider.api_key == "sk-plat"
    # Another provider without its own key: off, the platform key is not sent there.
    other_without_key = settings(
        openai_fallback_model="gpt-b", openai_fallback_base_url=FALLBACK_URL
    )
    assert fallback_model(other_without_key) is None
    other = fallback_model(
        settings(
            openai_fallback_model="gpt-b",
            openai_fallback_base_url=FALLBACK_URL,
            openai_fallback_api_key="sk-other",
        )
    )
    assert other is not None
    assert (other.base_url, other.api_key, other.model) == (FALLBACK_URL, "sk-other", "gpt-b")
    assert "sk-other" not in repr(other)


def import_json(req: httpx.Request) -> dict[str, object]:
    import json

    data: dict[str, object] = json.loads(req.content)
    return data
