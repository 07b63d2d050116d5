"""From a loaded job to the model request (docs/architecture.md#worker).

* `bounded`: the conversation window sent to the model (the most recent turns within a character
  budget, starting with the user speaking).
* `knowledge_question`: what the knowledge base is searched for (support agents: the last turn).
* `admit`: whether the reply may reach the model at all, and with which API key (`ReplyRefused`
  ends it at once otherwise).
* `max_tokens`: the platform's bound, or less when the deployment asks for less.
* `build_request`: all of the above plus the agent kind's handler → a `CompletionRequest`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from agentmarket.domain.agents import ChatContext, Turn, handler_for
from agentmarket.domain.secrets import SecretBox, SecretDecryptError, secret_aad
from agentmarket.llm.client import CompletionRequest
from workers.store import JobContext, LoadedJob, StoredSecret

__all__ = [
    "ModelDefaults",
    "ReplyRefused",
    "admit",
    "bounded",
    "build_request",
    "chat_context",
    "knowledge_question",
    "max_tokens",
]

log = structlog.get_logger("agentmarket.worker")

API_KEY_FIELD = "openai_api_key"


class ReplyRefused(Exception):
    """The reply must not reach the model: it ends at once with `status` and `code`."""

    def __init__(self, status: str, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ModelDefaults:
    """The platform's settings (OPENAI_MODEL, OPENAI_MAX_TOKENS)."""

    model: str
    max_tokens: int


def bounded(history: list[Turn], max_chars: int) -> list[Turn]:
    """The most recent turns that fit in `max_chars` (always at least the last one)."""
    kept: list[Turn] = []
    total = 0
    for turn in reversed(history):
        total += len(turn.content)
        if kept and total > max_chars:
            break
        kept.append(turn)
    kept.reverse()
    while kept and kept[0].role != "user":
        kept.pop(0)  # a window starts with the user speaking
    return kept


def knowledge_question(context: JobContext, history: Sequence[Turn]) -> str | None:
    """Support agents are given the knowledge-base entries most relevant to the message being
    answered (the last turn); other kinds get none."""
    if context.kind == "support" and history and history[-1].content:
        return history[-1].content
    return None


def admit(context: JobContext, secrets: Sequence[StoredSecret], box: SecretBox) -> str | None:
    """Whether the reply may reach the model, and with which key: the user's own, or None for
    the platform key. Refused for a deleted deployment (a send that raced the delete; the
    delete cancels the others), and the platform key never stands in for the user's: not for
    an agent that requires it, nor when the stored one is unreadable."""
    if context.deleted_at is not None:
        raise ReplyRefused(
            "cancelled",
            "deployment_deleted",
            "The deployment was deleted before this reply was finished.",
        )
    for secret in secrets:
        if secret.field != API_KEY_FIELD:
            continue
        try:
            return box.open(
                secret.key_id,
                bytes(secret.ciphertext),
                aad=secret_aad(context.deployment_id, secret.field),
            )
        except SecretDecryptError:
            log.error("job.secret_unreadable", field=secret.field)
            raise ReplyRefused(
                "failed",
                "secret_unreadable",
                "Your stored API key could not be read; enter it again in the deployment's "
                "settings.",
            ) from None
    if context.requires_user_key:
        raise ReplyRefused(
            "failed",
            "missing_api_key",
            "This agent answers with your own OpenAI API key; add it in the deployment's settings.",
        )
    return None


def sealed_api_key(secrets: Sequence[StoredSecret]) -> bytes | None:
    """The deployment's own key as stored (sealed), None when it has none: what a refusal of
    that key names, so that it moves the deployment to `error` only while it is still the key
    (private.finish_chat_job)."""
    for secret in secrets:
        if secret.field == API_KEY_FIELD:
            return bytes(secret.ciphertext)
    return None


def max_tokens(config: Mapping[str, Any], bound: int) -> int:
    """The setting's bound, or less when the deployment's config asks for less."""
    wanted = config.get("max_tokens")
    if isinstance(wanted, int) and not isinstance(wanted, bool) and wanted > 0:
        return min(wanted, bound)
    return bound


def chat_context(loaded: LoadedJob, *, history_chars: int) -> ChatContext:
    """What the agent kind's handler builds the messages from."""
    context = loaded.context
    return ChatContext(
        agent_name=context.agent_name,
        system_prompt=context.system_prompt or f"You are {context.agent_name}.",
        config=context.config,
        history=bounded(loaded.history, history_chars),
        knowledge=loaded.knowledge,
    )


def build_request(
    loaded: LoadedJob, box: SecretBox, *, defaults: ModelDefaults, history_chars: int
) -> CompletionRequest:
    """The model request for the reply; ReplyRefused when it may not be sent (`admit`)."""
    context = loaded.context
    chat = chat_context(loaded, history_chars=history_chars)
    api_key = admit(context, loaded.secrets, box)
    temperature = context.config.get("temperature")
    return CompletionRequest(
        model=context.model or defaults.model,
        messages=handler_for(context.kind).build(chat),
        temperature=float(temperature) if isinstance(temperature, int | float) else None,
        max_tokens=max_tokens(context.config, defaults.max_tokens),
        api_key=api_key,
    )
