"""From a loaded job to the model request: the history window, admission and token bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from agentmarket.core.config import EncryptionKey
from agentmarket.domain.agents import KnowledgeEntry, Turn
from agentmarket.domain.secrets import SecretBox
from tests.unit.workers.fakes import BOX, USER_KEY, make_context, make_loaded, sealed_key
from workers.context import (
    ModelDefaults,
    ReplyRefused,
    admit,
    bounded,
    build_request,
    chat_context,
    knowledge_question,
    max_tokens,
)
from workers.store import StoredSecret

DEFAULTS = ModelDefaults(model="gpt-platform", max_tokens=1000)


# --- the history window --------------------------------------------------------------------------


def test_the_window_keeps_the_most_recent_turns_that_fit() -> None:
    history = [
        Turn("user", "a" * 10),
        Turn("assistant", "b" * 10),
        Turn("user", "c" * 10),
        Turn("assistant", "d" * 10),
        Turn("user", "e" * 10),
    ]

    assert bounded(history, 30) == history[2:]
    assert bounded(history, 1000) == history


def test_the_window_starts_with_the_user_speaking() -> None:
    history = [Turn("user", "a" * 10), Turn("assistant", "b" * 10), Turn("user", "c" * 10)]

    # 20 characters fit the last two turns; a window cannot open with the assistant.
    assert bounded(history, 20) == [Turn("user", "c" * 10)]


def test_the_last_turn_is_kept_whatever_its_length() -> None:
    history = [Turn("user", "short"), Turn("user", "x" * 100)]

    assert bounded(history, 10) == [Turn("user", "x" * 100)]
    assert bounded([], 10) == []


def test_the_chat_context_uses_the_bounded_window_and_a_default_prompt() -> None:
    loaded = make_loaded(
        make_context(system_prompt=None, agent_name="Ada"),
        history=[Turn("user", "x" * 50), Turn("assistant", "y" * 5), Turn("user", "z" * 5)],
        knowledge=[KnowledgeEntry("Refunds", "30 days")],
    )

    context = chat_context(loaded, history_chars=20)

    assert context.system_prompt == "You are Ada."
    assert context.history == [Turn("user", "z" * 5)]
    assert context.knowledge == [KnowledgeEntry("Refunds", "30 days")]


def test_support_agents_look_up_the_message_being_answered() -> None:
    history = [Turn("user", "old"), Turn("assistant", "hi"), Turn("user", "refund policy?")]

    assert knowledge_question(make_context(kind="support"), history) == "refund policy?"
    assert knowledge_question(make_context(kind="support"), []) is None
    assert knowledge_question(make_context(kind="chat"), history) is None


# --- admission -------------------------------------------------------------------------------


def test_a_deleted_deployment_cancels_the_reply() -> None:
    context = make_context(deleted_at=datetime(2026, 11, 30, tzinfo=UTC))

    with pytest.raises(ReplyRefused) as refused:
        admit(context, [sealed_key(context)], BOX)

    assert (refused.value.status, refused.value.code) == ("cancelled", "deployment_deleted")


def test_the_users_own_key_is_opened() -> None:
    context = make_context(requires_user_key=True)
    other = StoredSecret("webhook_token", "k1", b"\x00" * 40)  # not the API key: ignored

    assert admit(context, [other, sealed_key(context)], BOX) == USER_KEY


def test_an_unreadable_key_fails_the_reply_instead_of_using_the_platform_key() -> None:
    context = make_context()
    other_box = SecretBox([EncryptionKey("k1", bytes(range(1, 33)))])

    with capture_logs() as logs, pytest.raises(ReplyRefused) as refused:
        admit(context, [sealed_key(context)], other_box)

    assert (refused.value.status, refused.value.code) == ("failed", "secret_unreadable")
    assert [entry["event"] for entry in logs] == ["job.secret_unreadable"]
    assert USER_KEY not in repr(logs)


def test_a_key_sealed_for_another_deployment_is_unreadable() -> None:
    context = make_context()
    elsewhere = sealed_key(make_context())

    with pytest.raises(ReplyRefused) as refused:
        admit(context, [elsewhere], BOX)

    assert refused.value.code == "secret_unreadable"


def test_a_required_key_that_is_missing_fails_the_reply() -> None:
    with pytest.raises(ReplyRefused) as refused:
        admit(make_context(requires_user_key=True), [], BOX)

    assert (refused.value.status, refused.value.code) == ("failed", "missing_api_key")


def test_otherwise_the_platform_key_answers() -> None:
    assert admit(make_context(requires_user_key=False), [], BOX) is None


# --- the token bound -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, 1000),
        ({"max_tokens": 200}, 200),
        ({"max_tokens": 5000}, 1000),
        ({"max_tokens": 0}, 1000),
        ({"max_tokens": -3}, 1000),
        ({"max_tokens": True}, 1000),
        ({"max_tokens": 200.0}, 1000),
        ({"max_tokens": "200"}, 1000),
    ],
)
def test_max_tokens_is_the_bound_or_less(config: dict[str, object], expected: int) -> None:
    assert max_tokens(config, 1000) == expected


# --- the request ---------------------------------------------------------------------------------


def test_the_request_carries_the_agents_model_settings_and_the_users_key() -> None:
    context = make_context(config={"temperature": 1, "max_tokens": 50}, model="gpt-agent")
    loaded = make_loaded(context, secrets=[sealed_key(context)])

    request = build_request(loaded, BOX, defaults=DEFAULTS, history_chars=1000)

    assert request.model == "gpt-agent"
    assert request.temperature == 1.0
    assert request.max_tokens == 50
    assert request.api_key == USER_KEY
    assert request.messages[0]["role"] == "system"
    assert request.messages[-1] == {"role": "user", "content": "hello?"}


def test_the_request_falls_back_to_the_platform_defaults() -> None:
    loaded = make_loaded(make_context(config={"temperature": "hot"}, model=""))

    request = build_request(loaded, BOX, defaults=DEFAULTS, history_chars=1000)

    assert (request.model, request.temperature, request.max_tokens) == ("gpt-platform", None, 1000)
    assert request.api_key is None


def test_a_refused_reply_builds_no_request() -> None:
    loaded = make_loaded(make_context(requires_user_key=True))

    with pytest.raises(ReplyRefused):
        build_request(loaded, BOX, defaults=DEFAULTS, history_chars=1000)
