"""Chat rate limits.

The chat endpoint calls `ChatLimits.check_chat` before it stores anything. Per-user
(RATE_LIMIT_CHAT_PER_MINUTE) and per-deployment (the agent's rate_limit_per_minute) limits, enforced
atomically in Postgres with GCRA, arrive with the rate-limiting issue; until then this admits every
request, and the call site, the 429 error (`RateLimited`) and the setting are already in place.
"""

from __future__ import annotations

import uuid

from agentmarket.core.auth import User

__all__ = ["ChatLimits"]


class ChatLimits:
    async def check_chat(self, *, user: User, deployment_id: uuid.UUID) -> None:
        """Raise `RateLimited` (429 with Retry-After) when the caller is over a limit."""
        return None
