"""Request and response models shared by the services and the HTTP layer."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from agentmarket.core.config import AppEnv
from agentmarket.core.jsontext import json_problems, text_problem

__all__ = [
    "AgentDetail",
    "AgentList",
    "AgentMetrics",
    "AgentQuery",
    "AgentRef",
    "AgentSort",
    "AgentSummary",
    "AnalyticsFilters",
    "AnalyticsQuery",
    "AnalyticsRange",
    "CategoryCount",
    "ChatExchange",
    "ChatMode",
    "ChatQuota",
    "ChatRequest",
    "ClientConfig",
    "Conversation",
    "ConversationDetail",
    "ConversationExport",
    "ConversationList",
    "DayMetrics",
    "DeployRequest",
    "Deployment",
    "DeploymentCounts",
    "DeploymentList",
    "DeploymentPatch",
    "DeploymentStatus",
    "DevSession",
    "DevSessionRequest",
    "DevSessionUser",
    "ExportedConversation",
    "Feedback",
    "FeedbackRequest",
    "FeedbackStats",
    "InFlight",
    "JSONObject",
    "Kind",
    "MarketplaceMetrics",
    "MarketplaceStats",
    "Message",
    "MessageError",
    "MessagePage",
    "MessageRole",
    "MessageStatus",
    "Metrics",
    "Model",
    "MonthUsage",
    "Name",
    "NewConversation",
    "NowCounts",
    "Percentiles",
    "PlatformTokens",
    "PopularAgent",
    "PricingModel",
    "RequestBody",
    "StatsDay",
    "StatsTotals",
    "SurveyAnswer",
    "SurveyRequest",
    "SurveyStats",
    "SurveyStatus",
    "Text",
    "Usage",
    "UsageReport",
]


def _storable(value: str) -> str:
    # PostgreSQL text holds neither NUL nor lone surrogates; refuse them as bad input instead of
    # failing in the database (or in the driver, which cannot encode a surrogate).
    if (problem := text_problem(value)) is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(_storable)]
# A JSON object from a request body; RequestBody has already checked everything in it.
JSONObject = dict[str, Any]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(_storable),
]


class Kind(StrEnum):
    CHAT = "chat"
    CONTENT = "content"
    SUPPORT = "support"


class PricingModel(StrEnum):
    FREE = "free"
    SUBSCRIPTION = "subscription"
    PAY_PER_USE = "pay_per_use"
    ONE_TIME = "one_time"


class AgentSort(StrEnum):
    POPULAR = "popular"
    NEWEST = "newest"
    NAME = "name"
    RELEVANCE = "relevance"


class DeploymentStatus(StrEnum):
    CONFIGURING = "configuring"
    ACTIVE = "active"
    PAUSED = "paused"
    ERROR = "error"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestBody(Model):
    """A JSON request body. Before any field is looked at, the whole document is checked for what
    Python's json accepts but PostgreSQL (and JSON) does not: NaN/Infinity, lone surrogates, NUL,
    runaway nesting (`agentmarket.jsontext`). Each problem is a field error at its own path, so
    the API answers 422 with a JSON Pointer, wherever in the body (keys included) it is."""

    @model_validator(mode="before")
    @classmethod
    def _storable_json(cls, data: Any) -> Any:
        problems = json_problems(data)
        if problems:
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError("unstorable_json", message),
                        loc=path,
                        input=None,  # never echo what was sent (it may be a secret)
                    )
                    for path, message in problems
                ],
            )
        return data


# --- catalog -------------------------------------------------------------------------------------


def _empty_is_none(value: Any) -> Any:
    # HTML forms send empty parameters; they mean "no filter".
    return None if isinstance(value, str) and not value.strip() else value


class AgentQuery(BaseModel):
    """Catalog query parameters. Unknown parameters (cache busters, UTM tags) are ignored."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("q", "category", "pricing", "tag", "sort", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _empty_is_none(value)

    q: Annotated[Text, StringConstraints(max_length=200)] | None = None
    category: Annotated[Text, StringConstraints(max_length=64)] | None = None
    pricing: PricingModel | None = None
    tag: Annotated[Text, StringConstraints(max_length=64)] | None = None
    sort: AgentSort | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    offset: Annotated[int, Field(ge=0, le=100_000)] = 0


class AgentSummary(Model):
    id: uuid.UUID
    slug: str
    name: str
    tagline: str
    description: str
    category: str
    tags: list[str]
    kind: Kind
    pricing_model: PricingModel
    price_cents: int
    currency: str
    icon: str | None
    featured: bool
    deploy_count: int
    created_at: datetime
    updated_at: datetime


class AgentDetail(AgentSummary):
    model: str
    rate_limit_per_minute: int
    config_schema: dict[str, Any]
    default_config: dict[str, Any]
    example_prompts: list[str]
    secret_fields: list[str] = Field(
        description="Configuration fields that are secrets: write-only, stored encrypted."
    )


class AgentList(Model):
    data: list[AgentSummary]
    total: int
    limit: int
    offset: int


class CategoryCount(Model):
    category: str
    count: int


# --- deployments ---------------------------------------------------------------------------------


class DeployRequest(RequestBody):
    agent_id: Annotated[
        Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)
    ] = Field(description="The agent's id (uuid) or slug.")
    name: Name | None = Field(default=None, description="Defaults to the agent's name.")
    config: JSONObject = Field(
        default_factory=dict,
        description="Configuration matching the agent's config_schema; secrets included.",
    )


class DeploymentPatch(RequestBody):
    name: Name | None = None
    config: JSONObject | None = Field(
        default=None,
        description="Replaces the configuration. Secret fields left out keep their stored value.",
    )
    status: Literal["active", "paused"] | None = None


class AgentRef(Model):
    id: uuid.UUID
    slug: str
    name: str
    kind: Kind
    icon: str | None


class Deployment(Model):
    id: uuid.UUID
    agent_id: uuid.UUID
    agent: AgentRef | None = Field(description="Null when the agent left the catalog.")
    name: str
    config: dict[str, Any] = Field(description="Non-secret configuration.")
    secrets: dict[str, str] = Field(
        description="Stored secret fields, masked (e.g. sk-…abcd). Never returned in full."
    )
    status: DeploymentStatus = Field(
        description="configuring (required configuration missing), active, paused, or error (the "
        "model provider refused the deployment's own API key or account: sends get 409 "
        "deployment_error until it is reconfigured or resumed)."
    )
    status_reason: str | None = Field(
        description="Why the deployment is not active: the missing configuration, or for error "
        "the provider's refusal (e.g. 'invalid_api_key: …'); null when active or paused."
    )
    created_at: datetime
    updated_at: datetime
    last_active_at: datetime | None


class DeploymentList(Model):
    data: list[Deployment]


# --- chat ----------------------------------------------------------------------------------------


class ChatMode(StrEnum):
    BLOCKING = "blocking"
    STREAMING = "streaming"
    ASYNC = "async"


class MessageRole(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class MessageStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (MessageStatus.COMPLETED, MessageStatus.FAILED, MessageStatus.CANCELLED)


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some text")
    return value


class ChatRequest(RequestBody):
    message: Annotated[
        Text, StringConstraints(min_length=1, max_length=32_000), AfterValidator(_not_blank)
    ]
    conversation_id: uuid.UUID | None = None
    client_message_id: (
        Annotated[Text, StringConstraints(min_length=1, max_length=128, pattern=r"^[!-~]+$")] | None
    ) = Field(default=None, description="Your id for this send; a repeat returns the original.")
    mode: ChatMode | None = Field(
        default=None,
        description="blocking (default), streaming (also via Accept: text/event-stream), async.",
    )


class MessageError(Model):
    code: str
    message: str


class Usage(Model):
    prompt_tokens: int
    completion_tokens: int


class Message(Model):
    id: uuid.UUID
    conversation_id: uuid.UUID
    role: MessageRole
    content: str
    status: MessageStatus
    error: MessageError | None = None
    usage: Usage | None = None
    ttft_ms: int | None = None
    latency_ms: int | None = None
    model: str | None = None
    truncated: bool = Field(
        default=False,
        description="The reply was cut at the model's token limit or the stored length limit.",
    )
    created_at: datetime
    completed_at: datetime | None = None


class ChatExchange(Model):
    conversation_id: uuid.UUID
    user_message: Message
    assistant_message: Message


class Conversation(Model):
    id: uuid.UUID
    deployment_id: uuid.UUID
    title: str | None
    message_count: int
    last_message_at: datetime | None
    created_at: datetime


class ConversationList(Model):
    data: list[Conversation]
    has_more: bool
    next_cursor: str | None


class MessagePage(Model):
    data: list[Message] = Field(description="Oldest first.")
    has_more: bool = Field(description="Older messages exist: pass next_cursor as `before`.")
    next_cursor: str | None


class Feedback(Model):
    message_id: uuid.UUID
    rating: Literal["like", "dislike"] | None
    comment: str | None


class ConversationDetail(Conversation):
    messages: MessagePage
    feedback: list[Feedback] = Field(
        description="Your ratings of the replies in `messages` (one per rated reply)."
    )


class ExportedConversation(Conversation):
    deployment_name: str | None = Field(description="null once the deployment is deleted.")
    agent_name: str | None


class ConversationExport(Model):
    conversation: ExportedConversation
    messages: list[Message] = Field(description="Every message of the conversation, oldest first.")


class NewConversation(RequestBody):
    title: Annotated[Text, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


class FeedbackRequest(RequestBody):
    rating: Literal["like", "dislike"] | None = Field(
        description="null withdraws your feedback on this reply."
    )
    comment: Annotated[Text, StringConstraints(max_length=2000)] | None = None


# --- survey --------------------------------------------------------------------------------------


class SurveyRequest(RequestBody):
    deployment_id: uuid.UUID | None = Field(
        default=None,
        description="One of your deployments the answer is about; null: the marketplace.",
    )
    satisfaction: Annotated[int, Field(ge=1, le=5, strict=True)]
    ease_of_use: Annotated[int, Field(ge=1, le=5, strict=True)]
    likelihood_to_recommend: Annotated[int, Field(ge=0, le=10, strict=True)]
    comment: Annotated[Text, StringConstraints(max_length=2000)] | None = None


class SurveyAnswer(Model):
    id: uuid.UUID
    deployment_id: uuid.UUID | None
    satisfaction: int
    ease_of_use: int
    likelihood_to_recommend: int
    comment: str | None
    created_at: datetime
    updated_at: datetime = Field(description="When the answer last changed.")


class SurveyStatus(Model):
    answered: bool
    answered_at: datetime | None = Field(description="When you last answered; null: never.")
    should_ask: bool = Field(
        description="Not answered yet and at least one reply to you has completed."
    )


# --- usage ---------------------------------------------------------------------------------------


class ChatQuota(Model):
    limit: int = Field(
        description="Chat messages per minute (a burst of this many, then one every 60/limit s)."
    )
    remaining: int = Field(description="Messages you could send right now.")
    reset_seconds: int = Field(description="Seconds until the quota is whole again (0: it is).")


class InFlight(Model):
    limit: int = Field(description="Replies you may have queued or running at once.")
    current: int = Field(description="Your replies queued or running now.")


class DeploymentCounts(Model):
    active: int = Field(
        description="Deployments that count toward the active cap: not paused, not deleted "
        "(`configuring` ones included)."
    )
    active_limit: int = Field(description="The cap on active deployments.")
    total: int = Field(description="Deployments that are not deleted, paused ones included.")
    total_limit: int = Field(description="The cap on deployments in total.")


class PlatformTokens(Model):
    used_today: int = Field(
        description="Tokens answered with the platform's model key today (UTC); "
        "your own keys do not count."
    )
    budget_per_day: int = Field(
        description="Your daily budget of platform-key tokens; 0 = unlimited."
    )


class MonthUsage(Model):
    messages: int = Field(description="Chat messages you sent this UTC calendar month.")
    prompt_tokens: int = Field(description="Prompt tokens of your replies this month.")
    completion_tokens: int = Field(description="Completion tokens of your replies this month.")


class UsageReport(Model):
    """Your limits and where you stand, read at one moment."""

    chat: ChatQuota
    in_flight: InFlight
    deployments: DeploymentCounts
    platform_tokens: PlatformTokens
    month: MonthUsage


class ClientConfig(Model):
    """What the web client needs to know at start (public: the anon key is meant for browsers)."""

    supabase_url: str | None = Field(description="SUPABASE_URL: sign in with Supabase Auth there.")
    supabase_anon_key: str | None = Field(description="SUPABASE_ANON_KEY, for supabase-js.")
    dev_sign_in: bool = Field(description="`POST /api/dev/session` exists (APP_ENV=dev only).")
    app_env: AppEnv


Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    ),
]


class DevSessionRequest(RequestBody):
    """A local user to sign in as (created when missing), as `agentmarket token` does."""

    email: Email
    admin: bool = Field(default=False, description="Give the user app_metadata.role = admin.")


class DevSessionUser(Model):
    id: uuid.UUID
    email: str
    role: Literal["admin"] | None


class DevSession(Model):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme, not a secret)
    expires_in: int = Field(description="Seconds until the access token expires.")
    user: DevSessionUser


# --- admin analytics -----------------------------------------------------------------------------


class AnalyticsQuery(BaseModel):
    """Admin analytics parameters (docs/api.md#admin-analytics). `from`/`to` default to the last
    30 days ending today in `tz`; the service checks the time zone and the range."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    @field_validator("from_", "to", "agent", "category", "kind", "format", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _empty_is_none(value)

    from_: date | None = Field(
        default=None, alias="from", description="First day (ISO date), inclusive."
    )
    to: date | None = Field(default=None, description="Last day (ISO date), inclusive.")
    tz: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        default="UTC", description="IANA time zone the days are counted in."
    )
    agent: Annotated[Text, StringConstraints(max_length=64)] | None = Field(
        default=None, description="Only this agent (slug)."
    )
    category: Annotated[Text, StringConstraints(max_length=64)] | None = None
    kind: Kind | None = None
    format: Literal["json", "csv"] | None = Field(
        default=None, description="`csv` for a CSV download (or send `Accept: text/csv`)."
    )


class AnalyticsRange(Model):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    tz: str


class AnalyticsFilters(Model):
    agent: str | None
    category: str | None
    kind: str | None


class NowCounts(Model):
    active_deployments: int = Field(description="Active, not deleted deployments now.")
    active_agents: int = Field(description="Agents with at least one active deployment now.")


class StatsTotals(Model):
    deployments: int = Field(description="Deployments created (deleted ones included).")
    conversations: int
    user_messages: int
    unique_users: int = Field(description="Distinct users who sent a message.")


class StatsDay(Model):
    day: date
    deployments: int
    conversations: int
    user_messages: int
    unique_users: int


class PopularAgent(Model):
    rank: int
    agent_id: uuid.UUID
    slug: str
    name: str
    deployments: int
    conversations: int
    messages: int = Field(description="User messages sent to the agent's deployments.")
    unique_users: int


class FeedbackStats(Model):
    likes: int
    dislikes: int
    like_ratio: float | None = Field(description="likes / (likes + dislikes); null without votes.")


class SurveyStats(Model):
    responses: int
    avg_satisfaction: float | None
    avg_ease_of_use: float | None
    nps: float | None = Field(description="% promoters (9-10) - % detractors (0-6), -100..100.")


class MarketplaceStats(Model):
    range: AnalyticsRange
    filters: AnalyticsFilters
    now: NowCounts
    totals: StatsTotals
    days: list[StatsDay]
    popular_agents: list[PopularAgent]
    feedback: FeedbackStats
    survey: SurveyStats


class Percentiles(Model):
    p50: float | None
    p95: float | None
    p99: float | None


class Metrics(Model):
    replies: int = Field(description="Assistant replies created in the range.")
    completed: int
    failed: int
    error_rate: float | None = Field(description="failed / (completed + failed).")
    errors_by_code: dict[str, int]
    retries: int = Field(description="Replies whose job took more than one attempt.")
    prompt_tokens: int
    completion_tokens: int
    rate_limited: int = Field(description="Chat sends refused by a limit (429).")
    latency_ms: Percentiles
    ttft_ms: Percentiles


class AgentMetrics(Metrics):
    agent_id: uuid.UUID
    slug: str
    name: str


class DayMetrics(Metrics):
    day: date


class PercentileMethod(Model):
    method: Literal["exact", "histogram"] = Field(
        description="`exact`: percentile_cont over every reply. `histogram`: estimated from the"
        " rollups' duration histograms (a large unfiltered range)."
    )
    max_relative_error: float = Field(
        description="How far a percentile may be from the exact one, as a fraction of it"
        " (0 when exact; 1/32 for histograms, and exact below 64 ms)."
    )


class MarketplaceMetrics(Model):
    range: AnalyticsRange
    filters: AnalyticsFilters
    percentiles: PercentileMethod
    overall: Metrics
    agents: list[AgentMetrics]
    days: list[DayMetrics]
