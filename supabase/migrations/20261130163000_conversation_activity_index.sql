-- The worker samples `marketplace_conversations_active` every few seconds (named query
-- marketplace_activity: conversations with a message in the last minutes): a range scan on this
-- index instead of a scan of every conversation.
create index agent_conversations_last_message_idx
  on public.agent_conversations (last_message_at);
