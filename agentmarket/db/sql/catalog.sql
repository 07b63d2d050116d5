-- The published catalog (agentmarket.services.catalog), run as the caller: RLS decides what is
-- visible.

-- name: catalog_search_agents
-- One page of the published catalog, with the window's total count on every row.
select id, slug, name, tagline, description, category, tags, kind, pricing_model, price_cents,
       currency, icon, featured, deploy_count, created_at, updated_at, total_count
  from public.search_agents(
         q => %(q)s, category => %(category)s, pricing => %(pricing)s, tag => %(tag)s,
         sort => %(sort)s, max_results => %(limit)s, skip => %(offset)s);

-- name: catalog_count_agents
-- How many published agents match (for a page past the end, which has no window count).
select coalesce(max(total_count), 0)
  from public.search_agents(
         q => %(q)s, category => %(category)s, pricing => %(pricing)s, tag => %(tag)s,
         max_results => 1, skip => 0);

-- name: catalog_agent_detail
-- One agent by id or by slug (the other parameter null), published or visible to an admin.
select id, slug, name, tagline, description, category, tags, kind, pricing_model, price_cents,
       currency, icon, featured, deploy_count, created_at, updated_at, model,
       rate_limit_per_minute, config_schema, default_config, example_prompts, is_published
  from public.marketplace_agents
 where id = %(id)s or slug = %(slug)s;

-- name: catalog_categories
-- Categories of published agents with how many agents each has.
select category, count(*) as count
  from public.marketplace_agents
 where is_published
 group by category
 order by category;
