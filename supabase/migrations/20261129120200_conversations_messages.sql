-- Conversations with a deployment, and their messages as rows (not a JSONB array: rows survive
-- concurrent writers, paginate, and carry a status each). Owners read; the functions and the worker write.

create table public.agent_conversations (
  id uuid primary key default gen_random_uuid(),
  deployment_id uuid not null,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  title text
    constraint agent_conversations_title_length check (length(title) <= 200),
  message_count integer not null default 0
    constraint agent_conversations_message_count_nonnegative check (message_count >= 0),
  last_message_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint agent_conversations_deployment_owner_fkey foreign key (deployment_id, user_id)
    references public.agent_deployments (id, user_id) on delete cascade,
  constraint agent_conversations_id_user_key unique (id, user_id)
);

create index agent_conversations_deployment_recent_idx
  on public.agent_conversations (deployment_id, (coalesce(last_message_at, created_at)) desc, id desc);
create index agent_conversations_deployment_user_idx
  on public.agent_conversations (deployment_id, user_id);
create index agent_conversations_user_idx on public.agent_conversations (user_id);

create trigger agent_conversations_set_updated_at
  before update on public.agent_conversations
  for each row execute function private.set_updated_at();

alter table public.agent_conversations enable row level security;

revoke all on table public.agent_conversations from public, anon, authenticated;
grant select on table public.agent_conversations to authenticated;
grant all on table public.agent_conversations to service_role;

create policy "owners read their conversations"
  on public.agent_conversations
  for select
  to authenticated
  using (user_id = (select auth.uid()));

create table public.agent_messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null,
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  role text not null
    constraint agent_messages_role check (role in ('user', 'assistant')),
  content text not null default ''
    constraint agent_messages_content_length check (length(content) <= 200000),
  status text not null
    constraint agent_messages_status
      check (status in ('queued', 'running', 'completed', 'failed', 'cancelled')),
  -- The user message an assistant message answers (null for user messages).
  reply_to uuid references public.agent_messages (id) on delete cascade,
  error_code text
    constraint agent_messages_error_code_format check (error_code ~ '^[a-z][a-z0-9_]{0,63}$'),
  error_message text
    constraint agent_messages_error_message_length check (length(error_message) <= 2000),
  model text
    constraint agent_messages_model_length check (length(model) <= 100),
  prompt_tokens integer
    constraint agent_messages_prompt_tokens_nonnegative check (prompt_tokens >= 0),
  completion_tokens integer
    constraint agent_messages_completion_tokens_nonnegative check (completion_tokens >= 0),
  ttft_ms integer
    constraint agent_messages_ttft_nonnegative check (ttft_ms >= 0),
  latency_ms integer
    constraint agent_messages_latency_nonnegative check (latency_ms >= 0),
  client_message_id text
    constraint agent_messages_client_message_id_length check (length(client_message_id) between 1 and 128),
  created_at timestamptz not null default now(),
  completed_at timestamptz,
  constraint agent_messages_conversation_owner_fkey foreign key (conversation_id, user_id)
    references public.agent_conversations (id, user_id) on delete cascade,
  constraint agent_messages_client_message_id_key unique (conversation_id, client_message_id),
  constraint agent_messages_user_messages_are_final
    check (role = 'assistant' or (status = 'completed' and reply_to is null)),
  constraint agent_messages_assistant_replies_to_user
    check (role = 'user' or reply_to is not null),
  constraint agent_messages_finished_have_completed_at
    check ((status in ('queued', 'running')) = (completed_at is null) or role = 'user'),
  constraint agent_messages_failed_have_error_code
    check (status <> 'failed' or error_code is not null)
);

create index agent_messages_conversation_order_idx
  on public.agent_messages (conversation_id, created_at, id);
create index agent_messages_user_idx on public.agent_messages (user_id);
create index agent_messages_reply_to_idx on public.agent_messages (reply_to);
create index agent_messages_unfinished_idx
  on public.agent_messages (created_at) where status in ('queued', 'running');

alter table public.agent_messages enable row level security;

revoke all on table public.agent_messages from public, anon, authenticated;
grant select on table public.agent_messages to authenticated;
grant all on table public.agent_messages to service_role;

create policy "owners read their messages"
  on public.agent_messages
  for select
  to authenticated
  using (user_id = (select auth.uid()));

-- Realtime clients may subscribe to their own messages (RLS applies to Realtime too).
do $$
begin
  if exists (select 1 from pg_publication where pubname = 'supabase_realtime')
     and not exists (
       select 1 from pg_publication_tables
        where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'agent_messages'
     ) then
    alter publication supabase_realtime add table public.agent_messages;
  end if;
end
$$;
