-- Feedback and survey answers: clients insert (and, for feedback, change) only the fields they own.
--
-- Until now `authenticated` held INSERT on every column, so a client could pick the row's id or
-- backdate created_at / updated_at (which analytics count by). Now:
--   * public.message_feedback: INSERT (message_id, user_id, rating, comment), UPDATE (rating, comment);
--   * public.survey_responses: INSERT (user_id, deployment_id, satisfaction, ease_of_use,
--     likelihood_to_recommend, comment).
-- id, created_at and updated_at always take their defaults (and the trigger). user_id stays
-- insertable so clients may send it explicitly, as Supabase clients commonly do: it defaults to
-- auth.uid() and the insert policies' WITH CHECK (user_id = (select auth.uid())) refuse any other
-- value, so it cannot be chosen freely.

revoke insert on table public.message_feedback from authenticated;
grant insert (message_id, user_id, rating, comment) on table public.message_feedback to authenticated;

revoke insert on table public.survey_responses from authenticated;
grant insert (user_id, deployment_id, satisfaction, ease_of_use, likelihood_to_recommend, comment)
  on table public.survey_responses to authenticated;
