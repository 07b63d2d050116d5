"""A marketplace's worth of activity for the analytics benchmark (`agentmarket bench analytics
--fixture`): by default 1 000 000 messages (500 000 questions and their replies) in 100 000
conversations with 10 000 deployments of 50 agents by 20 000 users over the last 90 days, with a
spread of reply latencies (log-normal around 1.5 s), times to first token, token counts, failures
by error code, retries, feedback, survey answers and rate-limit refusals.

Everything is generated inside PostgreSQL (`generate_series`, `random()`), a few statements, no
row travels from Python. It is for a THROWAWAY database only: it runs as a superuser with
`session_replication_role = replica` (the foreign keys and row triggers are skipped for speed; the
rows are consistent by construction), then sets what the triggers would have kept: the counters
(`deploy_count`, the conversations' counts) and the analytics rollups
(`private.analytics_rebuild()`). It ends with VACUUM ANALYZE so the planner and the visibility
map see the new rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

__all__ = ["Fixture", "generate"]


@dataclass(frozen=True)
class Fixture:
    """What to generate (messages = 2 x exchanges: a question and its reply each)."""

    messages: int = 1_000_000
    conversations: int = 100_000
    deployments: int = 10_000
    users: int = 20_000
    agents: int = 50  # the seeded catalog topped up with bench agents to this many
    days: int = 90
    seed: float = 0.42


_STEPS: list[tuple[str, str]] = [
    (
        "users",
        """
        insert into auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data,
                                raw_user_meta_data, created_at, updated_at)
        select gen_random_uuid(), 'authenticated', 'authenticated',
               'bench-' || g || '@fixture.test', now(), '{"provider": "email"}', '{}',
               now() - make_interval(days => %(days)s + 10), now()
          from generate_series(1, %(users)s) g
        """,
    ),
    (
        "agents",
        """
        insert into public.marketplace_agents (slug, name, category, kind, pricing_model,
                                               is_published, created_at)
        select 'bench-agent-' || g, 'Bench agent ' || g,
               (array['writing', 'coding', 'support', 'data', 'marketing'])[1 + g %% 5],
               (array['chat', 'content', 'support'])[1 + g %% 3], 'free', true,
               now() - make_interval(days => %(days)s + 10)
          from generate_series(1, greatest(%(agents)s - (select count(*) from
               public.marketplace_agents where is_published), 0)) g
        """,
    ),
    (
        "numbering",
        """
        create temp table fx_users on commit drop as
          select id, row_number() over (order by id) as n
            from auth.users where email like 'bench-%%@fixture.test';
        create temp table fx_agents on commit drop as
          select id, row_number() over (order by slug) as n
            from public.marketplace_agents where is_published;
        """,
    ),
    (
        "deployments",
        # Popular agents get more deployments (the square of a uniform number skews to 1).
        """
        insert into public.agent_deployments (id, user_id, agent_id, name, status, created_at,
                                              updated_at, deleted_at)
        select gen_random_uuid(), u.id, a.id, 'bench ' || r.g,
               case when r.s < 0.85 then 'active' when r.s < 0.95 then 'paused'
                    else 'configuring' end,
               r.ts, r.ts, case when r.d < 0.05 then r.ts + interval '1 day' end
          from (select g, 1 + floor(random() * %(users)s)::int as un,
                       1 + floor(power(random(), 2) * %(agents)s)::int as an,
                       now() - random() * make_interval(days => %(days)s) as ts,
                       random() as s, random() as d
                  from generate_series(1, %(deployments)s) g) r
          join fx_users u on u.n = r.un
          join fx_agents a on a.n = least(r.an, (select count(*) from fx_agents));
        create temp table fx_deps on commit drop as
          select id, user_id, created_at, row_number() over (order by id) as n
            from public.agent_deployments;
        """,
    ),
    (
        "conversations",
        """
        insert into public.agent_conversations (id, deployment_id, user_id, title, created_at,
                                                updated_at)
        select gen_random_uuid(), d.id, d.user_id, 'bench conversation ' || r.g, t.ts, t.ts
          from (select g, 1 + floor(random() * (select count(*) from fx_deps))::int as dn,
                       random() as f
                  from generate_series(1, %(conversations)s) g) r
          join fx_deps d on d.n = r.dn
          cross join lateral (
            select d.created_at + r.f * (now() - d.created_at) * 0.95 as ts) t;
        create temp table fx_convs on commit drop as
          select id, user_id, created_at, row_number() over (order by id) as n
            from public.agent_conversations;
        """,
    ),
    (
        "exchanges",
        # A conversation's exchanges fall in the 30 minutes after it starts (a chat session).
        # Latency: log-normal (Box-Muller) around e^7.3 ≈ 1.5 s; TTFT 10-30 %% of it.
        """
        create temp table fx_ex on commit drop as
        select gen_random_uuid() as q_id, gen_random_uuid() as a_id, c.id as conv, c.user_id,
               c.created_at + r.f * least(interval '30 minutes', now() - c.created_at) as ts,
               case when r.s < 0.94 then 'completed' when r.s < 0.99 then 'failed'
                    else 'cancelled' end as status,
               (array['model_unavailable', 'upstream_timeout', 'upstream_rate_limited',
                      'invalid_api_key', 'context_length_exceeded'])[1 + floor(r.e * 5)::int]
                 as error_code,
               round(exp(7.3 + 0.5 * sqrt(-2 * ln(1 - r.u1)) * cos(2 * pi() * r.u2)))::int
                 as latency,
               0.1 + 0.2 * r.t as ttft_share,
               50 + floor(r.p * 1950)::int as prompt_tokens,
               20 + floor(r.k * 780)::int as completion_tokens,
               case when r.a < 0.03 then 2 when r.a < 0.035 then 3 else 1 end as attempts,
               r.fb
          from (select g, 1 + floor(random() * (select count(*) from fx_convs))::int as cn,
                       random() as f, random() as s, random() as e, random() as u1,
                       random() as u2, random() as t, random() as p, random() as k,
                       random() as a, random() as fb
                  from generate_series(1, %(exchanges)s) g) r
          join fx_convs c on c.n = r.cn
        """,
    ),
    (
        "messages",
        """
        insert into public.agent_messages (id, conversation_id, user_id, role, content, status,
                                           created_at, completed_at)
        select q_id, conv, user_id, 'user', 'How do I make the report run faster?',
               'completed', ts, ts
          from fx_ex;
        insert into public.agent_messages (id, conversation_id, user_id, role, content, status,
                                           reply_to, error_code, model, prompt_tokens,
                                           completion_tokens, ttft_ms, latency_ms, created_at,
                                           completed_at)
        select a_id, conv, user_id, 'assistant',
               case when status = 'completed'
                    then 'Add an index on the column you filter by, then read the plan again.'
                    else '' end,
               status, q_id, case when status = 'failed' then error_code end, 'gpt-4o-mini',
               case when status = 'completed' then prompt_tokens end,
               case when status = 'completed' then completion_tokens end,
               case when status = 'completed' then round(latency * ttft_share)::int end,
               case when status <> 'failed' then latency end,
               ts + interval '5 milliseconds', ts + make_interval(secs => latency / 1000.0)
          from fx_ex;
        insert into private.chat_jobs (message_id, status, attempts, created_at, started_at,
                                       finished_at, run_after)
        select a_id, status, attempts, ts, ts, ts + make_interval(secs => latency / 1000.0), ts
          from fx_ex;
        """,
    ),
    (
        "feedback",
        """
        insert into public.message_feedback (message_id, user_id, rating, created_at,
                                             updated_at)
        select a_id, user_id, case when fb < 0.04 then 'like' else 'dislike' end,
               ts + interval '1 minute', ts + interval '1 minute'
          from fx_ex where status = 'completed' and fb < 0.05
        """,
    ),
    (
        "survey",
        """
        insert into public.survey_responses (user_id, deployment_id, satisfaction, ease_of_use,
                                             likelihood_to_recommend, created_at)
        select d.user_id, d.id, 1 + floor(random() * 5)::int, 1 + floor(random() * 5)::int,
               floor(random() * 11)::int, d.created_at + random() * (now() - d.created_at)
          from fx_deps d where d.n %% 2 = 0
        """,
    ),
    (
        "rate limits",
        """
        insert into private.telemetry_events (name, user_id, deployment_id, properties,
                                              created_at)
        select 'agent.chat.rate_limited', d.user_id, d.id, '{"limit": "chat"}',
               d.created_at + random() * (now() - d.created_at)
          from generate_series(1, %(conversations)s / 5) g
          join fx_deps d on d.n = 1 + (g * 7919) %% (select count(*) from fx_deps)
        """,
    ),
    (
        "counters",
        """
        update public.agent_conversations c
           set message_count = x.n, last_message_at = x.last
          from (select conv, count(*) as n, max(ts) as last from fx_ex group by conv) x
         where c.id = x.conv;
        update public.marketplace_agents a
           set deploy_count = coalesce((select count(*) from public.agent_deployments d
                                         where d.agent_id = a.id and d.deleted_at is null), 0);
        """,
    ),
    (
        # The triggers were off: count the rollups from the tables.
        "rollups",
        "select private.analytics_rebuild()",
    ),
]


def generate(
    url: str,
    fixture: Fixture,
    *,
    progress: Callable[[str, float], None] | None = None,
    triggers: bool = False,
) -> dict[str, int]:
    """Generate the fixture into the (throwaway) database at `url`; the resulting row counts.
    `triggers`: keep the foreign keys and triggers on (slower; the rollups are then kept by
    the triggers themselves, as for any other writer: what the rollup test checks)."""
    params = {
        "users": fixture.users,
        "agents": fixture.agents,
        "deployments": fixture.deployments,
        "conversations": fixture.conversations,
        "exchanges": fixture.messages // 2,
        "days": fixture.days,
    }
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            if not triggers:
                conn.execute("set local session_replication_role = replica")
            conn.execute("set local work_mem = '256MB'")
            conn.execute("select setseed(%s)", (fixture.seed,))
            for name, statements in _STEPS:
                if triggers and name == "rollups":
                    continue
                started = time.perf_counter()
                for statement in statements.split(";\n"):
                    if statement.strip():
                        conn.execute(statement, params)
                if progress is not None:
                    progress(name, time.perf_counter() - started)
        started = time.perf_counter()
        for table in (
            "public.agent_messages",
            "public.agent_conversations",
            "public.agent_deployments",
            "private.chat_jobs",
            "public.message_feedback",
            "public.survey_responses",
            "private.telemetry_events",
            "private.analytics_hourly_cells",
            "private.analytics_hourly_changes",
            "private.analytics_user_hours",
            "private.analytics_replies",
            "private.analytics_feedback",
            "private.analytics_conversation_agents",
            "private.analytics_user_keys",
            "private.analytics_presence_hours",
            "private.analytics_presence_days",
            "private.analytics_reply_hour_cells",
            "private.analytics_reply_day_cells",
            "private.analytics_reply_changes",
            "auth.users",
        ):
            conn.execute(f"vacuum (analyze) {table}")
        if progress is not None:
            progress("vacuum analyze", time.perf_counter() - started)
        counts = conn.execute(
            "select (select count(*) from public.agent_messages),"
            " (select count(*) from public.agent_conversations),"
            " (select count(*) from public.agent_deployments),"
            " (select count(*) from public.message_feedback),"
            " (select count(*) from public.survey_responses)"
        ).fetchone()
    assert counts is not None
    names = ("messages", "conversations", "deployments", "feedback", "survey_responses")
    return dict(zip(names, (int(c) for c in counts), strict=True))
