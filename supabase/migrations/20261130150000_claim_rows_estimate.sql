-- The worker's claim (agentmarket/db/sql/worker.sql, claim_chat_jobs) joins each claimed job to
-- its reply, conversation, deployment, agent, history window and secrets in the same statement.
-- A set-returning PL/pgSQL function is estimated at 1000 rows, so the statement's generic plan
-- (the driver prepares it after a few runs) merged the claimed rows with every message in
-- primary-key order: CPU that grew with the table (50 ms a claim at 10 000 messages). A claim
-- returns at most the worker's free slots: estimate a handful, and the plan looks each claimed
-- job's rows up by index.
alter function private.claim_chat_jobs_counted(text, integer, integer) rows 8;
