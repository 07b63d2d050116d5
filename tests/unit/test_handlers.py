from __future__ import annotations

import pytest

from workers.handlers import ChatContext, KnowledgeEntry, Turn, handler_for, render_prompt


def context(**overrides: object) -> ChatContext:
    base: dict[str, object] = {
        "agent_name": "Rev",
        "system_prompt": "You are {persona_name}. Reply in {language}.",
        "config": {"persona_name": "Ada", "language": "en", "tone": "warm"},
        "history": [Turn("user", "hi"), Turn("assistant", "hello"), Turn("user", "help me")],
    }
    base.update(overrides)
    return ChatContext(**base)  # type: ignore[arg-type]


def test_placeholders_are_filled_verbatim_and_unknown_ones_kept() -> None:
    assert render_prompt(
        "{a} and {b} and {0} and {a.__class__}", {"a": "{b}", "b": ["x", "y"]}
    ) == ("{b} and x, y and {0} and {a.__class__}")


def test_chat_handler_renders_the_persona_and_keeps_the_conversation() -> None:
    messages = handler_for("chat").build(context())
    assert messages[0] == {"role": "system", "content": "You are Ada. Reply in en."}
    assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user"]
    assert messages[-1]["content"] == "help me"


def test_content_handler_adds_a_brief_of_the_settings_the_prompt_does_not_use() -> None:
    messages = handler_for("content").build(context())
    system = messages[0]["content"]
    assert "- tone: warm" in system
    assert "- persona name" not in system  # already in the prompt


def test_support_handler_numbers_the_articles_for_citation() -> None:
    knowledge = [
        KnowledgeEntry("Refunds", "Within 30 days."),
        KnowledgeEntry("Shipping", "5 days."),
    ]
    messages = handler_for("support").build(
        context(
            system_prompt="Help for {company}.\n{knowledge_base}",
            config={"company": "Acme"},
            knowledge=knowledge,
        )
    )
    system = messages[0]["content"]
    assert system.startswith("Help for Acme.")
    assert "[1] Refunds\nWithin 30 days." in system
    assert "[2] Shipping" in system
    assert "Cite the articles you use as [n]" in system


def test_support_handler_says_when_nothing_matches() -> None:
    system = handler_for("support").build(context(system_prompt="Help."))[0]["content"]
    assert "(no article matches this question)" in system


def test_unknown_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="no handler"):
        handler_for("automation")
