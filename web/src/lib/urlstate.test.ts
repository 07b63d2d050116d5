import { describe, expect, it } from "vitest";
import { apiQuery, EMPTY_QUERY, PAGE_SIZE, parseMarketQuery, serializeMarketQuery, updateQuery } from "./urlstate";

describe("marketplace URL state", () => {
  it("round-trips a full view", () => {
    const q = { q: "sql help", category: "engineering", pricing: "free", tag: "sql", sort: "newest" as const, page: 3 };
    const search = serializeMarketQuery(q);
    expect(search).toBe("?q=sql+help&category=engineering&pricing=free&tag=sql&sort=newest&page=3");
    expect(parseMarketQuery(search)).toEqual(q);
  });

  it("writes nothing for the default view", () => {
    expect(serializeMarketQuery(EMPTY_QUERY)).toBe("");
    expect(parseMarketQuery("")).toEqual(EMPTY_QUERY);
  });

  it("drops unknown or bad values instead of failing", () => {
    expect(parseMarketQuery("?sort=cheapest&pricing=gratis&page=-2&utm_source=x")).toEqual(EMPTY_QUERY);
    expect(parseMarketQuery("?page=abc").page).toBe(1);
    expect(parseMarketQuery(`?q=${"a".repeat(300)}`).q).toHaveLength(200);
  });

  it("goes back to page 1 when a filter changes, not when the page does", () => {
    const q = { ...EMPTY_QUERY, page: 4 };
    expect(updateQuery(q, { category: "sales" }).page).toBe(1);
    expect(updateQuery(q, { page: 5 }).page).toBe(5);
  });

  it("maps the page to limit and offset for the API", () => {
    expect(apiQuery({ ...EMPTY_QUERY, page: 2, tag: "sql" })).toEqual({ limit: PAGE_SIZE, offset: PAGE_SIZE, tag: "sql" });
  });
});
