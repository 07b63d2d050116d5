"""The pools find a database that comes back after a long outage at once, not after psycopg_pool's
doubling reconnect delays (`RECONNECT_TIMEOUT`, docs/operations.md#database-outages).

The database is reached through a TCP relay that the test takes down (every connection through it
cut, new ones refused, as when the server stops) and brings back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import SecretStr

from agentmarket.core.config import Settings
from agentmarket.db.pool import RECONNECT_TIMEOUT, create_pool, create_worker_pool
from tests.procs import free_port

pytestmark = pytest.mark.db

# Long enough that psycopg_pool's own backoff (attempts 1, 2, 4, 8 s apart: at 0, 1, 3, 7 and then
# 15 s) would have its next attempt more than a request's wait away when the database is back.
OUTAGE_SECONDS = 8.0
REQUEST_WAIT = 3.0


class Relay:
    """A TCP relay to the test database that can go down (refusing and cutting) and come back."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def relay(db_url: str) -> AsyncIterator[tuple[Relay, str]]:
    parts = urlsplit(db_url)
    assert parts.hostname is not None and parts.port is not None
    relay = Relay(parts.hostname, parts.port)
    await relay.up()
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{relay.port}"
    yield relay, urlunsplit(parts._replace(netloc=netloc))
    with contextlib.suppress(AssertionError):
        await relay.down()


async def _answers(pool: AsyncConnectionPool, wait: float) -> bool:
    try:
        async with pool.connection(timeout=wait) as conn:
            await conn.execute("select 1")
    except (PoolTimeout, psycopg.OperationalError):
        return False
    return True


@pytest.mark.parametrize("which", ["api", "worker"])
@pytest.mark.timeout(60)
async def test_after_a_long_outage_the_first_request_gets_a_connection(
    relay: tuple[Relay, str], which: str
) -> None:
    server, url = relay
    settings = Settings(api_database_url=SecretStr(url), worker_database_url=SecretStr(url))
    pool = (
        create_pool(settings, min_size=1, max_size=1)
        if which == "api"
        else create_worker_pool(settings, min_size=1, max_size=1)
    )
    assert pool.reconnect_timeout == RECONNECT_TIMEOUT
    await pool.open(wait=True, timeout=10)
    try:
        assert await _answers(pool, REQUEST_WAIT)
        await server.down()
        # Callers keep coming through the outage (each is refused); the pool keeps trying.
        loop = asyncio.get_running_loop()
        back_at = loop.time() + OUTAGE_SECONDS
        refused = 0
        while loop.time() < back_at:
            refused += not await _answers(pool, 0.5)
            await asyncio.sleep(0.25)
        assert refused > 0
        await server.up()
        # The database is back: the next caller is answered within its wait, not 503.
        assert await _answers(pool, REQUEST_WAIT)
    finally:
        await pool.close()
