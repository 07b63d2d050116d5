"""Transactions as the caller: the one-transaction-per-request pattern of the HTTP functions.

The request pool (`agentmarket.db.pool`) logs in as the functions' own login (API_DATABASE_URL,
  `agentmarket_api`), which can become only `anon` or `authenticated` and holds no privilege of
  its own; each request's SQL runs in a transaction that assumes the caller's role and JWT claims
  exactly as PostgREST does, so the same RLS policies protect both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from agentmarket.core.errors import DatabaseUnavailable, UnknownUser
from agentmarket.db.sqlstate import app_errors

__all__ = ["ANON_CLAIMS", "CallerSession", "as_caller", "set_caller"]

ANON_CLAIMS: dict[str, Any] = {"role": "anon"}


def set_caller(claims: dict[str, Any] | None) -> sql.Composed:
    """The statement that makes the rest of the transaction run as the caller, like PostgREST:
    role and `request.jwt.claims`, set locally (None: an anonymous caller). Values are quoted as
    literals, so it can share a round trip with BEGIN. Only anon and authenticated: the API login
    can become nothing else anyway."""
    role = "anon" if claims is None else str(claims.get("role", "authenticated"))
    if role not in ("anon", "authenticated"):
        raise ValueError(f"unexpected role {role!r}")
    return sql.SQL(
        "select set_config('role', {}, true), set_config('request.jwt.claims', {}, true)"
    ).format(
        sql.Literal(role), sql.Literal(json.dumps(claims if claims is not None else ANON_CLAIMS))
    )


@asynccontextmanager
async def as_caller(
    pool: AsyncConnectionPool, claims: dict[str, Any] | None
) -> AsyncIterator[psycopg.AsyncConnection]:
    """One transaction as the caller: role and `request.jwt.claims` set locally, like PostgREST.

    `claims` None means an anonymous caller (role anon). The settings end with the transaction, so
    a pooled connection never carries one caller's identity into the next request.
    """
    # BEGIN and the two settings travel in one round trip (simple protocol); the pool rolls back
    # anything left open if we never get to COMMIT.
    begin = sql.SQL("begin; {}").format(set_caller(claims))
    try:
        # Our own SQLSTATEs (a private function refusing the caller) become their AppErrors.
        with app_errors():
            async with pool.connection() as conn:
                await conn.execute(begin)
                try:
                    yield conn
                except BaseException:
                    if not conn.closed:
                        await conn.execute("rollback")
                    raise
                try:
                    await conn.execute("commit")
                except psycopg.Error as exc:
                    # Whatever the cause, the write is not durable: never answer it as a success.
                    raise DatabaseUnavailable(
                        "The change could not be committed; try again."
                    ) from exc
    except psycopg.errors.ForeignKeyViolation as exc:
        if _is_missing_user(exc):
            raise UnknownUser() from exc
        raise
    except (psycopg.OperationalError, TimeoutError) as exc:
        raise DatabaseUnavailable() from exc


def _is_missing_user(exc: psycopg.errors.ForeignKeyViolation) -> bool:
    """A write by a token whose user is gone from auth.users (found where the write fails, so
    requests pay no lookup for it)."""
    constraint = exc.diag.constraint_name or ""
    return constraint.endswith("_user_id_fkey") and 'table "users"' in (
        exc.diag.message_detail or ""
    )


class CallerSession:
    """The caller's request transaction, opened on first use, and short ones after it.

    Read paths that can be answered from a cache never touch the database; the first `conn()`
    opens the one transaction (as the caller) that the request then reuses. `close()` commits, or
    rolls back when the request failed. A service that must wait (on a model, on a stream) ends
    the request transaction first with `commit()`, so no pooled connection or open transaction is
    held while it waits, and reads afterwards in separate short transactions (`transaction()`).
    """

    def __init__(self, pool: AsyncConnectionPool, claims: dict[str, Any] | None) -> None:
        self.pool = pool
        self.claims = claims
        self._stack = AsyncExitStack()
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def user_id(self) -> str | None:
        return None if self.claims is None else str(self.claims.get("sub"))

    async def conn(self) -> psycopg.AsyncConnection:
        """The request transaction (as the caller), opened on first use."""
        if self._conn is None:
            self._conn = await self._stack.enter_async_context(as_caller(self.pool, self.claims))
        return self._conn

    async def commit(self) -> None:
        """End the request transaction now (COMMIT, connection back to the pool); a failed COMMIT
        raises `DatabaseUnavailable`. A later `conn()` would open a new one."""
        stack, self._stack, self._conn = self._stack, AsyncExitStack(), None
        await stack.aclose()

    def transaction(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection]:
        """A separate short transaction as the caller (e.g. a read while following a stream,
        after the request transaction ended)."""
        return as_caller(self.pool, self.claims)

    async def close(self, exc: BaseException | None = None) -> None:
        """Commit the request transaction if one is open; roll it back instead when the request
        failed with `exc`. A failed COMMIT raises `DatabaseUnavailable`."""
        if exc is None:
            await self._stack.aclose()
        else:
            await self._stack.__aexit__(type(exc), exc, exc.__traceback__)

    async def __aenter__(self) -> CallerSession:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """`close()`: the request's outcome decides commit or rollback. An error raised while
        ending the transaction (a failed COMMIT, a write by a vanished user) replaces the
        request's own."""
        await self.close(exc)
