-- Admin analytics (agentmarket.services.analytics), as the signed-in caller: each report is one
-- private SECURITY DEFINER function that refuses non-admins itself (AMADM) and answers JSON
-- (docs/api.md#admin-analytics).

-- name: analytics_marketplace_stats
-- Deployments, conversations, user messages and chatting users per day in %(tz)s, what is
-- active now, popular agents, feedback and survey results for [%(from)s, %(to)s].
select private.marketplace_stats(
  %(from)s::date, %(to)s::date, %(tz)s::text, %(agent)s::text, %(category)s::text, %(kind)s::text
) as report;

-- name: analytics_marketplace_metrics
-- Replies, errors, retries, tokens, rate-limit rejections and latency / TTFT percentiles, overall,
-- per agent and per day in %(tz)s, for [%(from)s, %(to)s].
select private.marketplace_metrics(
  %(from)s::date, %(to)s::date, %(tz)s::text, %(agent)s::text, %(category)s::text, %(kind)s::text
) as report;
