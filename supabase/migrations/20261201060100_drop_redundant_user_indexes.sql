-- Two indexes on `user_id` alone that wider indexes already serve: the policies and every query
-- that filters by `user_id` use the wider one's leading column, and each of these cost a write of
-- its own on every insert and on every update that is not HOT (a reply's status changes on its
-- claim and its finish: two messages inserted and two such updates per chat message).
--
--   * agent_messages_user_idx (user_id): agent_messages_user_created_idx (user_id, created_at),
--     from 20261130130100_usage.sql.
--   * survey_responses_user_idx (user_id): survey_responses_one_per_user_deployment
--     (user_id, deployment_id), from 20261130181000_survey_one_answer.sql.
drop index public.agent_messages_user_idx;
drop index public.survey_responses_user_idx;
