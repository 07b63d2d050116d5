"""One reconnecting LISTEN connection (docs/architecture.md#notifications).

Both the API's stream hub and the worker hold exactly one of these: a session connection (never a
transaction pooler, which drops notifications) that LISTENs on a few channels and hands every
notification to a callback. After a lost connection it reconnects by itself, first after
`reconnect_delay` seconds, then backing off (doubling) up to `max_reconnect_delay` while the
database stays away; a connect attempt gives up after `connect_timeout` seconds, and TCP keepalives
notice a peer that vanished without closing the connection. `on_connect(reconnected)` runs once
LISTEN is in place, so a consumer can catch up on what it may have missed while away
(docs/operations.md#database-outages).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import psycopg
import structlog
from psycopg import sql

__all__ = ["Listener"]

log = structlog.get_logger("agentmarket.listen")


class Listener:
    def __init__(
        self,
        url: str,
        channels: Sequence[str],
        *,
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[bool], None] | None = None,
        application_name: str,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 2.0,
        connect_timeout: int = 5,
    ) -> None:
        self.url = url
        self.channels = tuple(channels)
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.application_name = application_name
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max(max_reconnect_delay, reconnect_delay)
        self.connect_timeout = max(2, connect_timeout)
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, *, wait: float = 10.0) -> None:
        """Start listening in the background; wait up to `wait` seconds for the first LISTEN."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name=f"listen:{self.application_name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after errors."""
        ever_connected = False
        delay = self.reconnect_delay
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    prepare_threshold=None,
                    application_name=self.application_name,
                    connect_timeout=self.connect_timeout,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=5,
                    keepalives_count=3,
                ) as conn:
                    for channel in self.channels:
                        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.connected.set()
                    delay = self.reconnect_delay
                    if ever_connected:
                        log.info("listen.reconnected", listener=self.application_name)
                    if self.on_connect is not None:
                        self.on_connect(ever_connected)
                    ever_connected = True
                    async for notify in conn.notifies():
                        self.on_notify(notify.channel, notify.payload)
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                log.warning(
                    "listen.disconnected" if self.connected.is_set() else "listen.connect_failed",
                    listener=self.application_name,
                    error=type(exc).__name__,
                    retry_in=delay,
                )
            else:
                log.warning("listen.ended", listener=self.application_name)
            self.connected.clear()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_reconnect_delay)
