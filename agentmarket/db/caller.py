"""Transactions as the caller: the one-transaction-per-request pattern of the HTTP functions.

The request pool (`agentmarket.db.pool`) logs in as the functions' own login (API_DATABASE_URL,
  `agentmarket_api`), which can become only `anon` or `authenticated` and holds no privilege of
  its own; each request's SQL runs in a transaction that assumes the caller's role and JWT claims
  exactly as PostgREST does, so the same RLS policies protect both.

Two shapes (docs/architecture.md#the-path-of-a-chat-message): `as_caller`, an explicit transaction
(BEGIN with the settings, the statements, COMMIT), and `run_as_caller`, one statement in an
implicit transaction of its own (the settings and the statement in one simple-protocol query, no
BEGIN or COMMIT to send).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    AsyncExitStack,
    asynccontextmanager,
    nullcontext,
)
from functools import cache
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.abc import Params, Query
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agentmarket.core import sentry
from agentmarket.core.errors import DatabaseUnavailable, UnknownUser
from agentmarket.db.queries import load
from agentmarket.db.sqlstate import app_errors

__all__ = [
    "ANON_CLAIMS",
    "CallerSession",
    "TracedCursor",
    "as_caller",
    "run_as_caller",
    "set_caller",
    "statement_name",
]

ANON_CLAIMS: dict[str, Any] = {"role": "anon"}


def _caller(claims: dict[str, Any] | None) -> tuple[str, str]:
    """(role, claims JSON) for the caller (None: an anonymous caller). Only anon and
    authenticated: the API login can become nothing else anyway."""
    role = "anon" if claims is None else str(claims.get("role", "authenticated"))
    if role not in ("anon", "authenticated"):
        raise ValueError(f"unexpected role {role!r}")
    return role, json.dumps(claims if claims is not None else ANON_CLAIMS)


def set_caller(claims: dict[str, Any] | None) -> sql.Composed:
    """The statement that makes the rest of the transaction run as the caller, like PostgREST:
    role and `request.jwt.claims`, set locally (None: an anonymous caller). Values are quoted as
    literals, so it can share a round trip with BEGIN."""
    role, claims_json = _caller(claims)
    return sql.SQL(
        "select set_config('role', {}, true), set_config('request.jwt.claims', {}, true)"
    ).format(sql.Literal(role), sql.Literal(claims_json))


@cache
def _query_names() -> dict[str, str]:
    return {named.text: name for name, named in load().items()}


def statement_name(statement: str) -> str:
    """A statement's name for its trace span: the named query's name, else its first word
    (`commit`, `rollback`)."""
    name = _query_names().get(statement)
    if name is None:
        words = statement.split(None, 1)
        name = words[0].lower() if words else "sql"
    return name


class TracedCursor(psycopg.AsyncCursor[Any]):
    """A cursor whose statements are trace spans named by `statement_name` (op `db`): the
    caller transaction's connections use it while Sentry is on (agentmarket.core.sentry)."""

    async def execute(
        self,
        query: Any,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        with _span(query):
            return await super().execute(query, params, prepare=prepare, binary=binary)

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        with _span(query):
            await super().executemany(query, params_seq, returning=returning)


def _span(query: Query) -> AbstractContextManager[object]:
    """A span for a statement given as text (the composed BEGIN has its own, in `as_caller`)."""
    return sentry.db_span(statement_name(query)) if isinstance(query, str) else nullcontext()


# The settings ahead of `run_as_caller`'s statement, bound like its own parameters.
_RUN_PREFIX = (
    "select set_config('role', %(_caller_role)s, true),"
    " set_config('request.jwt.claims', %(_caller_claims)s, true);\n"
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
                if sentry.enabled():
                    conn.cursor_factory = TracedCursor
                with sentry.db_span("begin"):
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


async def run_as_caller(
    pool: AsyncConnectionPool,
    claims: dict[str, Any] | None,
    statement: str,
    params: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """One statement as the caller in a transaction of its own; its rows (as dicts), committed
    when this returns.

    The role and claims settings and the statement travel as one simple-protocol query (values
    bound client-side, `ClientCursor`), which Postgres runs as one implicit transaction: two
    statements, one round trip, no BEGIN or COMMIT. The settings are local to that transaction,
    so the connection goes back to the pool as the API login, with no claims. `statement` is one
    statement with named parameters (`%(name)s`; names starting `_caller` are taken).

    Errors map like `as_caller`'s: our SQLSTATEs become their AppErrors, a write by a vanished
    user `UnknownUser`, a lost connection or pool timeout `DatabaseUnavailable`. The commit is
    part of the query: if it fails the query fails, so nothing is ever answered as committed that
    was not, and a failed commit is `DatabaseUnavailable` as in `as_caller`. A commit fails with
    its connection or as a transaction rollback (SQLSTATE class 40, serialization failure or
    deadlock: try again), both `DatabaseUnavailable` here wherever they happen; no constraint
    in the schema is deferred to the commit (a test checks).
    """
    role, claims_json = _caller(claims)
    bound = {**params, "_caller_role": role, "_caller_claims": claims_json}
    try:
        with app_errors():
            async with (
                pool.connection() as conn,
                psycopg.AsyncClientCursor(conn, row_factory=dict_row) as cur,
            ):
                with sentry.db_span(statement_name(statement)):
                    await cur.execute(_RUN_PREFIX + statement, bound)
                cur.nextset()  # past the settings' row, to the statement's result
                return await cur.fetchall() if cur.description is not None else []
    except psycopg.errors.ForeignKeyViolation as exc:
        if _is_missing_user(exc):
            raise UnknownUser() from exc
        raise
    except psycopg.errors.TransactionRollback as exc:
        raise DatabaseUnavailable("The change could not be committed; try again.") from exc
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
    held while it waits, and reads afterwards in separate short transactions (`transaction()`,
    or `run()` for one statement).
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

    async def run(self, statement: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One statement as the caller in a transaction of its own, committed when this returns
        (`run_as_caller`: two statements, one round trip). Separate from the request
        transaction: for a request's only statement, or one after `commit()`."""
        return await run_as_caller(self.pool, self.claims, statement, params)

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
