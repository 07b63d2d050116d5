"""A conversation's export: the whole conversation with every message, as JSON or as a Markdown
transcript (`agentmarket.domain.transcript`), for its owner (RLS decides, as everywhere).

The conversation is looked up in the request's transaction, so an unknown one (or another
user's) is a 404 before anything is sent. The messages then follow in parts, oldest first, each
part one statement as the caller in a transaction of its own (`CallerSession.run`) while the
response streams: at most EXPORT_PART_MESSAGES messages and MAX_PAGE_BYTES of text per part
(never fewer than one message), continued by the (created_at, id) keyset. No connection is held
while the client reads, and however long the conversation, the process holds one part at a time.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from psycopg.rows import dict_row

from agentmarket.core.errors import ConversationNotFound
from agentmarket.db.caller import CallerSession
from agentmarket.db.queries import query
from agentmarket.domain.models import ExportedConversation, Message
from agentmarket.domain.transcript import transcript_header, transcript_message
from agentmarket.services.replies import to_message

__all__ = ["EXPORT_PART_MESSAGES", "Export", "ExportFormat", "open_export"]

EXPORT_PART_MESSAGES = 200

ExportFormat = Literal["json", "md"]


@dataclass(frozen=True)
class Export:
    """An export, ready to stream: its conversation, and its body in chunks (`chunks`)."""

    conversation: ExportedConversation
    db: CallerSession
    max_part_bytes: int
    part_messages: int = EXPORT_PART_MESSAGES

    def filename(self, fmt: ExportFormat) -> str:
        return f"conversation-{self.conversation.id}.{fmt}"

    async def messages(self) -> AsyncIterator[list[Message]]:
        """The conversation's messages, oldest first, one part at a time."""
        after_ts: datetime | None = None
        after_id: uuid.UUID | None = None
        while True:
            rows = await self.db.run(
                query("chat_export_messages"),
                {
                    "conversation_id": self.conversation.id,
                    "after_ts": after_ts,
                    "after_id": after_id,
                    "limit": self.part_messages,
                    "max_bytes": self.max_part_bytes,
                },
            )
            if not rows:
                return
            yield [to_message(row) for row in rows]
            after_ts, after_id = rows[-1]["created_at"], rows[-1]["id"]

    async def chunks(self, fmt: ExportFormat) -> AsyncIterator[bytes]:
        """The body: `{"conversation": …, "messages": […]}` or the Markdown transcript."""
        if fmt == "md":
            yield transcript_header(self.conversation, exported_at=datetime.now(UTC)).encode()
            number = 0
            async for part in self.messages():
                pieces = []
                for message in part:
                    number += 1
                    pieces.append(transcript_message(message, number))
                yield "".join(pieces).encode()
            return
        yield b'{"conversation":' + self.conversation.model_dump_json().encode() + b',"messages":['
        first = True
        async for part in self.messages():
            body = b",".join(message.model_dump_json().encode() for message in part)
            yield body if first else b"," + body
            first = False
        yield b"]}"


async def open_export(
    *,
    db: CallerSession,
    deployment_id: uuid.UUID,
    conversation_id: uuid.UUID,
    max_part_bytes: int,
) -> Export:
    """The export of one of the caller's conversations (`ConversationNotFound` otherwise)."""
    conn = await db.conn()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            query("chat_export_conversation"),
            {"conversation_id": conversation_id, "deployment_id": deployment_id},
        )
        row = await cur.fetchone()
    if row is None:
        raise ConversationNotFound()
    return Export(
        conversation=ExportedConversation.model_validate(row),
        db=db,
        max_part_bytes=max_part_bytes,
    )
