-- The caller's limits and where they stand (GET /api/me/usage, docs/api.md#usage), in one call:
--
--   chat             the user's chat quota ('chat:<user>', chat_per_minute), peeked: nothing taken
--   in_flight        replies queued or running vs max_in_flight_per_user (what send_chat_message
--                    counts)
--   deployments      active = what the cap on active deployments counts
--                    (private.count_active_deployments: not deleted and not paused, so
--                    `configuring` ones count too) vs max_active_deployments; total = not deleted,
--                    paused included, vs max_deployments_per_user
--   platform_tokens  today's (UTC) row of private.platform_token_usage vs platform_tokens_per_day
--                    (0 = unlimited)
--   month            this UTC calendar month: user messages sent, and the prompt / completion
--                    tokens of the user's replies created this month (messages of deleted
--                    conversations are gone and no longer count)
--
-- SECURITY DEFINER because the settings, the GCRA state and the token counts are private tables;
-- it reads only the caller's own rows (auth.uid()).

-- The month's messages and tokens: one range scan per user instead of all their messages.
create index agent_messages_user_created_idx on public.agent_messages (user_id, created_at);

create function private.my_usage()
returns jsonb
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  uid uuid := private.require_uid();
  cfg private.app_settings;
  quota record;
  month_start timestamptz := date_trunc('month', now() at time zone 'utc') at time zone 'utc';
  in_flight integer;
  active integer;
  total integer;
  used_today bigint;
  month record;
begin
  select * into cfg from private.app_settings;
  select * into quota from private.rate_limit_peek('chat:' || uid::text, cfg.chat_per_minute);

  select count(*) into in_flight
    from public.agent_messages m
   where m.user_id = uid and m.role = 'assistant' and m.status in ('queued', 'running');

  active := private.count_active_deployments(uid);
  select count(*) into total
    from public.agent_deployments d
   where d.user_id = uid and d.deleted_at is null;

  select u.tokens into used_today
    from private.platform_token_usage u
   where u.user_id = uid and u.day = (now() at time zone 'utc')::date;

  select count(*) filter (where m.role = 'user') as messages,
         coalesce(sum(m.prompt_tokens) filter (where m.role = 'assistant'), 0) as prompt_tokens,
         coalesce(sum(m.completion_tokens) filter (where m.role = 'assistant'), 0) as completion_tokens
    into month
    from public.agent_messages m
   where m.user_id = uid and m.created_at >= month_start;

  return jsonb_build_object(
    'chat', jsonb_build_object('limit', cfg.chat_per_minute, 'remaining', quota.remaining,
                               'reset_seconds', quota.reset_seconds),
    'in_flight', jsonb_build_object('limit', cfg.max_in_flight_per_user, 'current', in_flight),
    'deployments', jsonb_build_object('active', active, 'active_limit', cfg.max_active_deployments,
                                      'total', total, 'total_limit', cfg.max_deployments_per_user),
    'platform_tokens', jsonb_build_object('used_today', coalesce(used_today, 0),
                                          'budget_per_day', cfg.platform_tokens_per_day),
    'month', jsonb_build_object('messages', month.messages, 'prompt_tokens', month.prompt_tokens,
                                'completion_tokens', month.completion_tokens));
end
$$;

revoke all on function private.my_usage() from public, anon;
grant execute on function private.my_usage() to authenticated, service_role;
