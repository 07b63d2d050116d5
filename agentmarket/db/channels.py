"""The NOTIFY channels and payload keys shared with the SQL that sends them
(docs/architecture.md#stream-protocol). `tests/integration/test_channels.py` reads the functions
in the migrated database and fails if they notify on any other channel or with other keys."""

from __future__ import annotations

from typing import Final

__all__ = ["CHAT_CANCEL", "CHAT_JOBS", "CHAT_STREAM", "STREAM_KEYS", "StreamKey"]

# A job was queued or handed back (payload: the job id): wakes the workers.
CHAT_JOBS: Final = "agentmarket_chat_jobs"
# A reply was cancelled (payload: the message id): the worker writing it stops between chunks.
CHAT_CANCEL: Final = "agentmarket_chat_cancel"
# A reply's text moved (payload: a JSON object with the keys below): the API's stream hubs.
CHAT_STREAM: Final = "agentmarket_chat_stream"


class StreamKey:
    """The keys of a CHAT_STREAM payload."""

    MESSAGE: Final = "m"  # the reply's message id
    EVENT: Final = "e"  # delta | reset | done
    GENERATION: Final = "g"  # the attempt the text belongs to
    OFFSET: Final = "o"  # where `TEXT` starts in the reply (delta)
    TEXT: Final = "d"  # the appended text (delta)
    STATUS: Final = "s"  # the final status (done)


STREAM_KEYS: Final = frozenset(
    {
        StreamKey.MESSAGE,
        StreamKey.EVENT,
        StreamKey.GENERATION,
        StreamKey.OFFSET,
        StreamKey.TEXT,
        StreamKey.STATUS,
    }
)
