import { useEffect, useState } from "preact/hooks";
import { Empty, ErrorBox, humanize, price } from "../components/Status";
import { api } from "../lib/api";
import { navigate, useLocation } from "../lib/router";
import type { AgentList, AgentSummary, Category } from "../lib/types";
import { useAsync } from "../lib/useAsync";
import {
  apiQuery,
  PAGE_SIZE,
  parseMarketQuery,
  PRICING,
  serializeMarketQuery,
  updateQuery,
  type MarketQuery,
} from "../lib/urlstate";

const PRICING_LABELS: Record<string, string> = {
  free: "Free",
  subscription: "Subscription",
  pay_per_use: "Pay per use",
  one_time: "One-time purchase",
};

function AgentCard({ agent }: { agent: AgentSummary }) {
  return (
    <li class="card agent-card">
      <div class="agent-icon" aria-hidden="true">
        {agent.icon ?? "🤖"}
      </div>
      <div>
        <h2 class="card-title">
          <a href={`/agents/${agent.slug}`}>{agent.name}</a>
        </h2>
        <p class="tagline">{agent.tagline}</p>
        <p class="meta">
          <span class="badge">{humanize(agent.category)}</span>
          <span class="badge badge-price">{price(agent)}</span>
          {agent.featured && <span class="badge badge-featured">Featured</span>}
          <span class="muted">
            {agent.deploy_count} deployment{agent.deploy_count === 1 ? "" : "s"}
          </span>
        </p>
      </div>
    </li>
  );
}

function Skeletons() {
  return (
    <ul class="card-grid" aria-hidden="true">
      {Array.from({ length: 6 }, (_, i) => (
        <li key={i} class="card skeleton">
          <div class="skeleton-line wide" />
          <div class="skeleton-line" />
          <div class="skeleton-line short" />
        </li>
      ))}
    </ul>
  );
}

export function MarketplacePage() {
  const { search } = useLocation();
  const query = parseMarketQuery(search);
  const [text, setText] = useState(query.q);
  useEffect(() => setText(query.q), [query.q]);
  useEffect(() => {
    document.title = "Marketplace · Agent Marketplace";
  }, []);

  const categories = useAsync((signal) => api<Category[]>("/api/marketplace/categories", { signal }), []);
  const key = serializeMarketQuery(query);
  const list = useAsync((signal) => api<AgentList>("/api/marketplace/agents", { query: apiQuery(query), signal }), [key]);

  const go = (change: Partial<MarketQuery>, replace = false) =>
    navigate(`/${serializeMarketQuery(updateQuery(query, change))}`, { replace });

  const total = list.data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));

  return (
    <section class="page">
      <h1>Find an AI agent</h1>
      <p class="lead">Browse ready-made agents, set one up for yourself, and start chatting in under a minute.</p>
      <form
        class="filters"
        role="search"
        aria-label="Search agents"
        onSubmit={(e) => {
          e.preventDefault();
          go({ q: text });
        }}
      >
        <div class="field search-field">
          <label for="q">Search</label>
          <div class="inline">
            <input
              id="q"
              type="search"
              value={text}
              maxLength={200}
              placeholder="e.g. sql, support, meeting notes"
              onInput={(e) => setText(e.currentTarget.value)}
            />
            <button type="submit">Search</button>
          </div>
        </div>
        <div class="field">
          <label for="category">Category</label>
          <select id="category" value={query.category} onChange={(e) => go({ category: e.currentTarget.value })}>
            <option value="">All categories</option>
            {(categories.data ?? []).map((c) => (
              <option key={c.category} value={c.category}>
                {humanize(c.category)} ({c.count})
              </option>
            ))}
            {query.category && !categories.data?.some((c) => c.category === query.category) && (
              <option value={query.category}>{humanize(query.category)}</option>
            )}
          </select>
        </div>
        <div class="field">
          <label for="pricing">Pricing</label>
          <select id="pricing" value={query.pricing} onChange={(e) => go({ pricing: e.currentTarget.value })}>
            <option value="">Any price</option>
            {PRICING.map((p) => (
              <option key={p} value={p}>
                {PRICING_LABELS[p]}
              </option>
            ))}
          </select>
        </div>
        <div class="field">
          <label for="tag">Tag</label>
          <input
            id="tag"
            value={query.tag}
            maxLength={64}
            placeholder="e.g. sql"
            onChange={(e) => go({ tag: e.currentTarget.value.trim() })}
          />
        </div>
        <div class="field">
          <label for="sort">Sort by</label>
          <select id="sort" value={query.sort} onChange={(e) => go({ sort: e.currentTarget.value as MarketQuery["sort"] })}>
            <option value="">{query.q ? "Best match" : "Most popular"}</option>
            <option value="popular">Most popular</option>
            <option value="newest">Newest</option>
            <option value="name">Name (A–Z)</option>
          </select>
        </div>
      </form>

      <div aria-live="polite" class="result-count">
        {list.loading ? "Loading agents…" : list.data ? `${total} agent${total === 1 ? "" : "s"} found` : ""}
      </div>

      {list.error !== undefined && <ErrorBox error={list.error} onRetry={list.reload} title="Could not load agents." />}
      {list.loading && !list.data && <Skeletons />}
      {list.data && list.data.data.length === 0 && !list.loading && (
        <Empty>
          <h2>No agents match</h2>
          <p>Try fewer words or clear the filters.</p>
          <a class="button" href="/">
            Clear filters
          </a>
        </Empty>
      )}
      {list.data && list.data.data.length > 0 && (
        <ul class={`card-grid${list.loading ? " is-loading" : ""}`} aria-busy={list.loading}>
          {list.data.data.map((agent) => (
            <AgentCard key={agent.id} agent={agent} />
          ))}
        </ul>
      )}
      {list.data && pages > 1 && (
        <nav class="pager" aria-label="Pages">
          <button type="button" disabled={query.page <= 1} onClick={() => go({ page: query.page - 1 })}>
            Previous page
          </button>
          <span>
            Page {query.page} of {pages}
          </span>
          <button type="button" disabled={query.page >= pages} onClick={() => go({ page: query.page + 1 })}>
            Next page
          </button>
        </nav>
      )}
    </section>
  );
}
