"""One exception tree for everything a caller can get wrong or the system can refuse.

Each `AppError` subclass has a stable `code` and an HTTP `status`; its docstring is the default
human message. The HTTP layer maps them to RFC 9457 problem+json in a single handler; nothing
else in the shared library knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "AdminOnly",
    "AgentNotFound",
    "AnonymousToken",
    "AppError",
    "BadRequest",
    "Conflict",
    "ConversationNotFound",
    "DatabaseUnavailable",
    "DeploymentErrored",
    "DeploymentLimitReached",
    "DeploymentNotConfigured",
    "DeploymentNotFound",
    "DeploymentPaused",
    "DeploymentTotalLimit",
    "FieldError",
    "Forbidden",
    "InvalidConfig",
    "InvalidRange",
    "InvalidTimezone",
    "InvalidToken",
    "LimitExceeded",
    "MalformedJSON",
    "MessageNotFound",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceUnavailable",
    "TokenBudgetExhausted",
    "TooManyInFlight",
    "TooManyStreams",
    "Unauthorized",
    "UnknownUser",
    "UnsupportedMediaType",
    "ValidationFailed",
    "WebClientNotBuilt",
]


@dataclass(frozen=True)
class FieldError:
    """One validation problem: `path` is a JSON Pointer into the request body ("" = the body)."""

    path: str
    message: str


class AppError(Exception):
    """Something went wrong."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or (self.__doc__ or self.title).strip()
        self.errors = errors or []
        self.headers = {**self.default_headers, **(headers or {})}
        super().__init__(self.detail)


class BadRequest(AppError):
    """The request could not be read."""

    code = "bad_request"
    status = 400
    title = "Bad request"


class MalformedJSON(BadRequest):
    """The request body is not valid JSON."""

    code = "malformed_json"


class Unauthorized(AppError):
    """Sign in to do this: send `Authorization: Bearer <access token>`."""

    code = "unauthorized"
    status = 401
    title = "Unauthorized"
    default_headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class InvalidToken(Unauthorized):
    """The access token is invalid or expired; sign in again."""

    code = "invalid_token"
    default_headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class UnknownUser(InvalidToken):
    """The account this access token names no longer exists; sign in again."""


class AnonymousToken(Unauthorized):
    """The project's anon key does not identify a user; sign in to do this."""


class Forbidden(AppError):
    """You are not allowed to do this."""

    code = "forbidden"
    status = 403
    title = "Forbidden"


class AdminOnly(Forbidden):
    """Only marketplace admins may do this."""

    code = "admin_only"


class NotFound(AppError):
    """Not found."""

    code = "not_found"
    status = 404
    title = "Not found"


class AgentNotFound(NotFound):
    """No published agent has this id or slug."""

    code = "agent_not_found"


class DeploymentNotFound(NotFound):
    """No deployment of yours has this id."""

    code = "deployment_not_found"


class WebClientNotBuilt(NotFound):
    """The web client is not built on this server (`npm run build` in web/, or WEB_DIST_DIR);
    the API under /api/ works without it."""

    code = "web_client_not_built"


class MethodNotAllowed(AppError):
    """This route does not support that method."""

    code = "method_not_allowed"
    status = 405
    title = "Method not allowed"


class ConversationNotFound(NotFound):
    """No conversation of yours with this deployment has this id."""

    code = "conversation_not_found"


class MessageNotFound(NotFound):
    """No message of yours has this id."""

    code = "message_not_found"


class Conflict(AppError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409
    title = "Conflict"


class DeploymentNotConfigured(Conflict):
    """The deployment is missing required configuration."""

    code = "deployment_not_configured"


class DeploymentPaused(Conflict):
    """The deployment is paused; resume it first."""

    code = "deployment_paused"


class DeploymentErrored(Conflict):
    """The model provider refused the deployment's API key or account; reconfigure it (a new key,
    or resume it) to use it again."""

    code = "deployment_error"


class DeploymentLimitReached(Conflict):
    """You have reached the maximum number of active deployments; delete or pause one first."""

    code = "deployment_limit_reached"


class PayloadTooLarge(AppError):
    """The request body is too large."""

    code = "payload_too_large"
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(AppError):
    """Send the body as application/json."""

    code = "unsupported_media_type"
    status = 415
    title = "Unsupported media type"


class ValidationFailed(AppError):
    """The request has invalid fields; see `errors`."""

    code = "validation_failed"
    status = 422
    title = "Validation failed"


class InvalidConfig(ValidationFailed):
    """The configuration does not match the agent's schema; see `errors`."""

    code = "invalid_config"


class InvalidTimezone(ValidationFailed):
    """The time zone is not a known IANA name (e.g. `Europe/Berlin`); see `errors`."""

    code = "invalid_timezone"


class InvalidRange(ValidationFailed):
    """The date range must run forwards (`from` ≤ `to`) and span at most 366 days; see
    `errors`."""

    code = "invalid_range"


class LimitExceeded(AppError):
    """A limit refused the request; retry after the time in the Retry-After header.

    `limit` names the limit (the `limit` label of ratelimit_rejections_total)."""

    code = "limit_exceeded"
    status = 429
    title = "Too many requests"
    limit: str = "unknown"

    def __init__(
        self, detail: str | None = None, *, limit: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(detail, **kwargs)
        if limit is not None:
            self.limit = limit


class RateLimited(LimitExceeded):
    """Too many requests; retry after the time in the Retry-After header."""

    code = "rate_limited"


class TooManyInFlight(LimitExceeded):
    """You have too many replies being written; wait for one to finish, then send again."""

    code = "too_many_in_flight"
    limit = "in_flight"


class TokenBudgetExhausted(LimitExceeded):
    """Today's token budget on the platform's model key is spent; it renews at midnight UTC (or
    add your own API key to the deployment)."""

    code = "token_budget_exhausted"
    limit = "platform_tokens"


class TooManyStreams(LimitExceeded):
    """You have too many streams open; close one, then try again."""

    code = "too_many_streams"
    limit = "streams"


class DeploymentTotalLimit(Conflict):
    """You have reached the maximum number of deployments (paused ones included); delete one
    first."""

    code = "deployment_limit"


class ServiceUnavailable(AppError):
    """The service is temporarily unavailable; retry shortly."""

    code = "service_unavailable"
    status = 503
    title = "Service unavailable"
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "2"}


class DatabaseUnavailable(ServiceUnavailable):
    """The database is unavailable; retry shortly."""

    code = "database_unavailable"
