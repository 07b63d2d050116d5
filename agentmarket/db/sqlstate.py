"""The one registry of our SQLSTATEs: the codes the private functions raise (`errcode = 'AM…'`
in supabase/migrations) and the `AppError` each becomes. `as_caller` applies it to every
transaction run as a caller; `tests/integration/test_sqlstate.py` fails if a migration raises an AM
code missing here."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import psycopg

from agentmarket.core.errors import (
    AdminOnly,
    AgentNotFound,
    AppError,
    ConversationNotFound,
    DeploymentErrored,
    DeploymentLimitReached,
    DeploymentNotConfigured,
    DeploymentNotFound,
    DeploymentPaused,
    DeploymentTotalLimit,
    FieldError,
    InvalidRange,
    InvalidTimezone,
    LimitExceeded,
    MessageNotFound,
    RateLimited,
    TokenBudgetExhausted,
    TooManyInFlight,
)

__all__ = ["APP_ERRORS", "INTERNAL", "app_error", "app_errors", "quota_headers"]


def quota_headers(
    policy: str, limit: int, window: int, remaining: int, reset: int
) -> dict[str, str]:
    """The IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers, structured fields):
    `RateLimit-Policy: "chat";q=20;w=60` and `RateLimit: "chat";r=5;t=3`."""
    policy_field = f'"{policy}";q={limit}' + (f";w={window}" if window > 0 else "")
    return {
        "RateLimit-Policy": policy_field,
        "RateLimit": f'"{policy}";r={max(remaining, 0)};t={max(reset, 0)}',
    }


def _limit(
    error: type[LimitExceeded] | type[DeploymentTotalLimit],
) -> Callable[[psycopg.Error], AppError]:
    """A refusal whose DETAIL is the JSON of private.raise_limit: the policy, its quota and window
    and when to retry, as Retry-After and RateLimit headers."""

    def make(exc: psycopg.Error) -> AppError:
        try:
            info = json.loads(exc.diag.message_detail or "{}")
            policy, retry = str(info["policy"]), max(int(info["retry_after"]), 1)
            quota, window = int(info["limit"]), int(info["window"])
        except (ValueError, KeyError, TypeError):
            return error()
        headers = quota_headers(policy, quota, window, 0, retry)
        if issubclass(error, LimitExceeded):
            return error(headers={"Retry-After": str(retry), **headers}, limit=policy)
        # A cap on what the user holds (409): waiting does not help, only deleting one does, so
        # no Retry-After and no RateLimit state; the policy still says what the cap is.
        return error(headers={"RateLimit-Policy": headers["RateLimit-Policy"]})

    return make


def _not_configured(exc: psycopg.Error) -> AppError:
    # The database decides readiness (from the signed missing list) and says why in DETAIL.
    return DeploymentNotConfigured(f"Cannot activate: {exc.diag.message_detail}.")


def _errored(exc: psycopg.Error) -> AppError:
    # The database names the reason the worker stored (status_reason) in DETAIL.
    reason = exc.diag.message_detail or "the model provider refused the deployment's API key"
    return DeploymentErrored(
        f"The deployment is in error: {reason}. Update its configuration (a new API key) or "
        "resume it to use it again."
    )


APP_ERRORS: Final[Mapping[str, Callable[[psycopg.Error], AppError]]] = {
    "AMNF1": lambda _: AgentNotFound(),
    "AMNF2": lambda _: DeploymentNotFound(),
    "AMNF3": lambda _: ConversationNotFound(),
    "AMNF4": lambda _: MessageNotFound(),
    "AMPAU": lambda _: DeploymentPaused(),
    "AMLIM": lambda _: DeploymentLimitReached(),
    "AMCFG": _not_configured,
    "AMERR": _errored,
    "AMRLM": _limit(RateLimited),
    "AMINF": _limit(TooManyInFlight),
    "AMBUD": _limit(TokenBudgetExhausted),
    "AMDPT": _limit(DeploymentTotalLimit),
    # Admin analytics (private.marketplace_stats / marketplace_metrics): the API checks the
    # range and the time zone first; these are the database's own checks of the same rules.
    "AMADM": lambda _: AdminOnly(),
    "AMTZN": lambda _: InvalidTimezone(
        errors=[FieldError("/query/tz", "is not a time zone the database knows")]
    ),
    "AMRNG": lambda _: InvalidRange(
        errors=[FieldError("/query/to", "must be on or after from, at most 366 days later")]
    ),
}

# Raised only when our own code is wrong (a config without a valid signature): never a caller's
# mistake, so it stays a database error and the 500 handler logs it.
INTERNAL: Final = frozenset({"AMSIG"})


def app_error(exc: psycopg.Error) -> AppError | None:
    """The AppError for one of our SQLSTATEs; None for anything else."""
    make = APP_ERRORS.get(exc.sqlstate or "")
    return make(exc) if make is not None else None


@contextmanager
def app_errors() -> Iterator[None]:
    """Raise our SQLSTATEs as their AppErrors (anything else unchanged). `as_caller` wraps every
    caller transaction in it; a service wraps a statement in it to act on the AppError at once."""
    try:
        yield
    except psycopg.Error as exc:
        error = app_error(exc)
        if error is None:
            raise
        raise error from exc
