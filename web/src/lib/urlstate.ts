// The marketplace's view (search, filters, sort, page) lives in the URL query so a view can be
// shared and the back button works.

export const SORTS = ["popular", "newest", "name"] as const;
export type Sort = (typeof SORTS)[number];
export const PRICING = ["free", "subscription", "pay_per_use", "one_time"] as const;
export const PAGE_SIZE = 12;

export interface MarketQuery {
  q: string;
  category: string;
  pricing: string;
  tag: string;
  sort: Sort | "";
  page: number;
}

export const EMPTY_QUERY: MarketQuery = { q: "", category: "", pricing: "", tag: "", sort: "", page: 1 };

export function parseMarketQuery(search: string): MarketQuery {
  const params = new URLSearchParams(search);
  const text = (name: string, max: number) => (params.get(name) ?? "").trim().slice(0, max);
  const sort = params.get("sort") ?? "";
  const pricing = params.get("pricing") ?? "";
  const page = Number.parseInt(params.get("page") ?? "1", 10);
  return {
    q: text("q", 200),
    category: text("category", 64),
    pricing: (PRICING as readonly string[]).includes(pricing) ? pricing : "",
    tag: text("tag", 64),
    sort: (SORTS as readonly string[]).includes(sort) ? (sort as Sort) : "",
    page: Number.isFinite(page) && page >= 1 && page <= 5000 ? page : 1,
  };
}

/** The query string for a view ("" for the default view), keys in a fixed order. */
export function serializeMarketQuery(query: MarketQuery): string {
  const params = new URLSearchParams();
  if (query.q.trim()) params.set("q", query.q.trim());
  if (query.category) params.set("category", query.category);
  if (query.pricing) params.set("pricing", query.pricing);
  if (query.tag) params.set("tag", query.tag);
  if (query.sort) params.set("sort", query.sort);
  if (query.page > 1) params.set("page", String(query.page));
  const qs = params.toString();
  return qs ? `?${qs}` : "";
}

/** Changing anything but the page goes back to page 1. */
export function updateQuery(query: MarketQuery, change: Partial<MarketQuery>): MarketQuery {
  const next = { ...query, ...change };
  if (!("page" in change)) next.page = 1;
  return next;
}

export function apiQuery(query: MarketQuery): Record<string, string | number> {
  const out: Record<string, string | number> = {
    limit: PAGE_SIZE,
    offset: (query.page - 1) * PAGE_SIZE,
  };
  if (query.q) out.q = query.q;
  if (query.category) out.category = query.category;
  if (query.pricing) out.pricing = query.pricing;
  if (query.tag) out.tag = query.tag;
  if (query.sort) out.sort = query.sort;
  return out;
}
