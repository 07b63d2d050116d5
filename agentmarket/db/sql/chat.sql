-- Chat (agentmarket.services.chat, agentmarket.services.replies), run as the caller under RLS;
-- the writes (send, cancel, conversations) go through private SECURITY DEFINER functions that
-- check ownership in SQL.

-- name: chat_send_message
-- Store the user message and the queued reply (with the given reply id, or the database's choice
-- when null), enqueue the job and record agent.chat.message.sent with the mode, under the
-- limits. One row per message, the user's first, with the exchange's columns: conversation,
-- newly created (false: a repeated client_message_id, the original messages as they stand now),
-- and the quota for the RateLimit headers.
select conversation_id, created, quota_policy, quota_limit, quota_remaining, quota_reset,
       id, role, content, status, error_code, error_message, model, prompt_tokens,
       completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
  from private.send_chat_message(
         %(deployment_id)s, %(conversation_id)s, %(message)s, %(client_message_id)s,
         %(trace_id)s, %(reply_id)s, %(mode)s);

-- name: chat_stream_state
-- What a client (re)attaching to a reply's stream starts from (owner only).
select status, content, generation from private.message_stream_state(%(message_id)s);

-- name: chat_cancel_message
-- Stop a reply: a queued one at once, a running one between chunks.
select private.cancel_chat_message(%(message_id)s);

-- name: chat_message_by_id
-- One message by id.
select id, conversation_id, role, content, status, error_code, error_message, model,
       prompt_tokens, completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
  from public.agent_messages
 where id = %(message_id)s;

-- name: chat_messages_page
-- A page of a conversation's messages, newest first, before the (created_at, id) cursor if given:
-- at most %(limit)s, and after the first only while their content adds up to at most
-- %(max_bytes)s bytes (docs/api.md#limits). `fetched` counts the candidates (up to limit + 1):
-- more than the rows returned means there is more. With each reply, the caller's rating of it
-- (null when none).
select r.id, r.conversation_id, r.role, r.content, r.status, r.error_code, r.error_message,
       r.model, r.prompt_tokens, r.completion_tokens, r.ttft_ms, r.latency_ms, r.truncated,
       r.created_at, r.completed_at, r.fetched,
       f.rating as feedback_rating, f.comment as feedback_comment
  from (select p.*,
               row_number() over w as n,
               sum(octet_length(p.content)) over w as page_bytes,
               count(*) over () as fetched
          from (select id, conversation_id, role, content, status, error_code, error_message,
                       model, prompt_tokens, completion_tokens, ttft_ms, latency_ms, truncated,
                       created_at, completed_at
                  from public.agent_messages
                 where conversation_id = %(conversation_id)s
                   and (%(before_ts)s::timestamptz is null
                        or (created_at, id) < (%(before_ts)s, %(before_id)s))
                 order by created_at desc, id desc
                 limit %(limit)s + 1) p
        window w as (order by p.created_at desc, p.id desc rows unbounded preceding)) r
  left join public.message_feedback f
    on f.message_id = r.id and f.user_id = (select auth.uid())
 where r.n <= %(limit)s and (r.n = 1 or r.page_bytes <= %(max_bytes)s)
 order by r.created_at desc, r.id desc;

-- name: chat_conversations_page
-- A deployment's conversations, most recent first, after the (sort_at, id) cursor if given.
select id, deployment_id, title, message_count, last_message_at, created_at,
       coalesce(last_message_at, created_at) as sort_at
  from public.agent_conversations
 where deployment_id = %(deployment_id)s
   and (%(after_ts)s::timestamptz is null
        or (coalesce(last_message_at, created_at), id) < (%(after_ts)s, %(after_id)s))
 order by coalesce(last_message_at, created_at) desc, id desc
 limit %(limit)s;

-- name: chat_conversation
-- One conversation of a deployment.
select id, deployment_id, title, message_count, last_message_at, created_at
  from public.agent_conversations
 where id = %(conversation_id)s and deployment_id = %(deployment_id)s;

-- name: chat_deployment_visible
-- A row when the caller can see the deployment.
select 1 from public.agent_deployments where id = %(deployment_id)s;

-- name: chat_create_conversation
-- A new empty conversation; its id.
select private.create_conversation(%(deployment_id)s, %(title)s);

-- name: chat_delete_conversation
-- Delete a conversation and its messages; true when there was one to delete.
select private.delete_conversation(%(deployment_id)s, %(conversation_id)s);

-- name: chat_upsert_feedback
-- The caller's rating of a reply, replacing an earlier one.
insert into public.message_feedback (message_id, user_id, rating, comment)
values (%(message_id)s, auth.uid(), %(rating)s, %(comment)s)
on conflict (message_id, user_id) do update
   set rating = excluded.rating, comment = excluded.comment
returning message_id, rating, comment;

-- name: chat_delete_feedback
-- Withdraw the caller's rating of a reply.
delete from public.message_feedback where message_id = %(message_id)s;

-- name: chat_assistant_message
-- A row when the caller can see this reply.
select 1 from public.agent_messages where id = %(message_id)s and role = 'assistant';

-- name: chat_export_conversation
-- One conversation of a deployment for its export, with the deployment's and its agent's names
-- (null once the deployment is deleted).
select c.id, c.deployment_id, c.title, c.message_count, c.last_message_at, c.created_at,
       d.name as deployment_name, a.name as agent_name
  from public.agent_conversations c
  left join public.agent_deployments d on d.id = c.deployment_id
  left join public.marketplace_agents a on a.id = d.agent_id
 where c.id = %(conversation_id)s and c.deployment_id = %(deployment_id)s;

-- name: chat_export_messages
-- The next part of a conversation's export: its messages oldest first, after the (created_at,
-- id) cursor if given, at most %(limit)s and, after the first, only while their content adds up
-- to at most %(max_bytes)s bytes.
select id, conversation_id, role, content, status, error_code, error_message, model,
       prompt_tokens, completion_tokens, ttft_ms, latency_ms, truncated, created_at, completed_at
  from (select p.*,
               row_number() over w as n,
               sum(octet_length(p.content)) over w as part_bytes
          from (select id, conversation_id, role, content, status, error_code, error_message,
                       model, prompt_tokens, completion_tokens, ttft_ms, latency_ms, truncated,
                       created_at, completed_at
                  from public.agent_messages
                 where conversation_id = %(conversation_id)s
                   and (%(after_ts)s::timestamptz is null
                        or (created_at, id) > (%(after_ts)s, %(after_id)s))
                 order by created_at, id
                 limit %(limit)s) p
        window w as (order by p.created_at, p.id rows unbounded preceding)) r
 where r.n = 1 or r.part_bytes <= %(max_bytes)s
 order by r.created_at, r.id;
