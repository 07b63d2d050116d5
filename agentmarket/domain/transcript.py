"""A conversation as a Markdown transcript (GET …/conversations/{id}/export?format=md).

Whatever the messages hold (Markdown, HTML, code fences of their own), the document's structure
is ours: every message's content goes verbatim into a fenced code block whose fence is longer
than any run of backticks in it (CommonMark closes a fence only with one at least as long), so
the text can neither end its block early nor turn into headings, links or HTML. Verbatim beats
escaping here: code in a reply (often with its own fences) stays copyable, and nothing is
rewritten. The few other values from users (the title, the deployment's name, error messages)
sit in headings and list items with every ASCII punctuation character backslash-escaped and line
breaks folded to spaces, which leaves them plain text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from agentmarket.domain.models import ExportedConversation, Message, MessageStatus

__all__ = ["escape_inline", "fence", "transcript_header", "transcript_message"]

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_BACKTICKS = re.compile(r"`+")


def escape_inline(text: str) -> str:
    """`text` as plain inline Markdown: one line, every ASCII punctuation backslash-escaped (so no
    emphasis, link, HTML tag, entity or heading can start in it)."""
    return _PUNCTUATION.sub(r"\\\1", _LINE_BREAKS.sub(" ", text)).strip()


def fence(text: str) -> str:
    """`text` verbatim in a fenced code block that only its own closing fence can end."""
    longest = max((len(run) for run in _BACKTICKS.findall(text)), default=0)
    marker = "`" * max(3, longest + 1)
    body = text if text.endswith(("\n", "\r")) or not text else text + "\n"
    return f"{marker}\n{body}{marker}\n"


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def transcript_header(conversation: ExportedConversation, *, exported_at: datetime) -> str:
    """The document's title and the conversation's facts."""
    title = escape_inline(conversation.title or "") or "Conversation"
    lines = [f"# {title}", ""]
    if conversation.deployment_name is not None:
        lines.append(f"- Deployment: {escape_inline(conversation.deployment_name)}")
    if conversation.agent_name is not None:
        lines.append(f"- Agent: {escape_inline(conversation.agent_name)}")
    lines += [
        f"- Conversation: {conversation.id}",
        f"- Started: {_when(conversation.created_at)}",
        f"- Messages: {conversation.message_count}",
        f"- Exported: {_when(exported_at)}",
        "",
    ]
    return "\n".join(lines) + "\n"


def transcript_message(message: Message, number: int) -> str:
    """One message: a heading (who, when, and how a reply ended when it did not complete), its
    content fenced, and a failed reply's error."""
    who = "User" if message.role == "user" else "Assistant"
    facts = [_when(message.created_at)]
    if message.model:
        facts.append(escape_inline(message.model))
    if message.status is not MessageStatus.COMPLETED:
        facts.append(message.status.value)
    if message.truncated:
        facts.append("truncated")
    parts = [f"## {number}. {who} · {' · '.join(facts)}", "", fence(message.content)]
    if message.error is not None:
        parts.append(
            f"> Error {escape_inline(message.error.code)}: {escape_inline(message.error.message)}\n"
        )
    return "\n".join(parts) + "\n"
