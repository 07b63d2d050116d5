"""Agent kinds: how each one turns its prompt, the deployment's configuration and the conversation
into model messages. One interface (`Handler.build`), one handler per `kind`."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    content: str


@dataclass(frozen=True)
class KnowledgeEntry:
    title: str
    content: str


@dataclass(frozen=True)
class ChatContext:
    """Everything a handler may use (secrets are never part of it)."""

    agent_name: str
    system_prompt: str
    config: Mapping[str, Any]
    history: list[Turn]  # oldest first, ending with the message being answered
    knowledge: list[KnowledgeEntry] = field(default_factory=list)


def _display(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ", ".join(str(v) for v in value)
    return json.dumps(value, ensure_ascii=False)


def render_prompt(template: str, values: Mapping[str, Any]) -> str:
    """Fill `{name}` placeholders from `values`; unknown ones are left as written.

    Deliberately not str.format: configuration is user input and must not reach attribute or
    index lookups; values are inserted verbatim, once.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        return _display(values[name]) if name in values else match.group(0)

    return PLACEHOLDER.sub(replace, template)


def _messages(system: str, history: list[Turn]) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}] + [
        {"role": t.role, "content": t.content} for t in history
    ]


class Handler(Protocol):
    kind: str

    def build(self, context: ChatContext) -> list[dict[str, str]]: ...


class ChatHandler:
    """A persona bot: its system prompt (with the persona's settings) and the conversation."""

    kind = "chat"

    def build(self, context: ChatContext) -> list[dict[str, str]]:
        return _messages(render_prompt(context.system_prompt, context.config), context.history)


class ContentHandler:
    """A generator: the structured inputs from the configuration become a brief the model writes
    to; earlier turns stay so the user can ask for revisions."""

    kind = "content"

    def build(self, context: ChatContext) -> list[dict[str, str]]:
        system = render_prompt(context.system_prompt, context.config)
        brief = "\n".join(
            f"- {name.replace('_', ' ')}: {_display(value)}"
            for name, value in sorted(context.config.items())
            if f"{{{name}}}" not in context.system_prompt and value not in (None, "", [])
        )
        if brief:
            system += "\n\nBrief from the user's settings:\n" + brief
        return _messages(system, context.history)


class SupportHandler:
    """Answers from the deployment's knowledge base: the entries most relevant to the question
    (found with Postgres full-text search by the worker) are given to the model, numbered, to be
    cited as [n]."""

    kind = "support"

    def build(self, context: ChatContext) -> list[dict[str, str]]:
        if context.knowledge:
            articles = "\n\n".join(
                f"[{i}] {entry.title}\n{entry.content}"
                for i, entry in enumerate(context.knowledge, start=1)
            )
        else:
            articles = "(no article matches this question)"
        values = {**context.config, "knowledge_base": articles}
        system = render_prompt(context.system_prompt, values)
        if "{knowledge_base}" not in context.system_prompt:
            system += "\n\nKnowledge base:\n" + articles
        system += (
            "\n\nCite the articles you use as [n]. If none of them answers the question, say so."
        )
        return _messages(system, context.history)


HANDLERS: dict[str, Handler] = {
    h.kind: h for h in (ChatHandler(), ContentHandler(), SupportHandler())
}


def handler_for(kind: str) -> Handler:
    try:
        return HANDLERS[kind]
    except KeyError:
        raise ValueError(f"no handler for agent kind {kind!r}") from None


__all__ = ["HANDLERS", "ChatContext", "KnowledgeEntry", "Turn", "handler_for", "render_prompt"]
