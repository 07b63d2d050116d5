import { useEffect, useState } from "preact/hooks";
import { Bars, DayChart } from "../components/Charts";
import { ErrorBox, Loading } from "../components/Status";
import { api, ApiError, errorMessage, request } from "../lib/api";
import { session } from "../lib/auth";
import { saveResponse } from "../lib/download";
import { useStore } from "../lib/store";
import type { AgentList } from "../lib/types";
import { useAsync } from "../lib/useAsync";

interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
}
interface M {
  replies: number;
  completed: number;
  failed: number;
  error_rate: number | null;
  retries: number;
  prompt_tokens: number;
  completion_tokens: number;
  rate_limited: number;
  latency_ms: Percentiles;
  ttft_ms: Percentiles;
}
interface DayCounts {
  day: string;
  deployments: number;
  conversations: number;
  user_messages: number;
  unique_users: number;
}
export interface Stats {
  range: { from: string; to: string; tz: string };
  now: { active_deployments: number; active_agents: number };
  totals: { deployments: number; conversations: number; user_messages: number; unique_users: number };
  days: DayCounts[];
  popular_agents: { rank: number; slug: string; name: string; deployments: number; conversations: number; messages: number; unique_users: number }[];
  feedback: { likes: number; dislikes: number; like_ratio: number | null };
  survey: { responses: number; avg_satisfaction: number | null; avg_ease_of_use: number | null; nps: number | null };
}
export interface Metrics {
  percentiles: { method: "exact" | "histogram"; max_relative_error: number };
  overall: M;
  agents: ({ slug: string; name: string } & M)[];
  days: ({ day: string } & M)[];
}

function isoDay(d: Date): string {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

export function fmtNumber(v: number | null | undefined, digits = 0): string {
  if (v === null || v === undefined) return "—";
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
export function fmtPercent(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${(v * 100).toFixed(1)}%`;
}
export function fmtMs(v: number | null | undefined): string {
  return v === null || v === undefined ? "—" : `${Math.round(v).toLocaleString("en-US")} ms`;
}

function Stat({ label, value }: { label: string; value: string }) {
  return (
    <div class="stat">
      <dt>{label}</dt>
      <dd>{value}</dd>
    </div>
  );
}

async function download(kind: "stats" | "metrics", query: Record<string, string>) {
  const response = await request(`/api/admin/marketplace/${kind}`, {
    query: { ...query, format: "csv" },
    headers: { Accept: "text/csv" },
  });
  await saveResponse(response, `marketplace-${kind}.csv`);
}

export function AdminPage() {
  const user = useStore(session);
  const today = new Date();
  const [from, setFrom] = useState(isoDay(new Date(today.getTime() - 29 * 86_400_000)));
  const [to, setTo] = useState(isoDay(today));
  const [agent, setAgent] = useState("");
  const [applied, setApplied] = useState({ from, to, agent });
  const [downloadError, setDownloadError] = useState("");
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const query: Record<string, string> = { from: applied.from, to: applied.to, tz };
  if (applied.agent) query.agent = applied.agent;
  const key = JSON.stringify(query);

  useEffect(() => {
    document.title = "Dashboard · Agent Marketplace";
  }, []);

  const allowed = Boolean(user?.user.admin);
  const agents = useAsync((signal) => api<AgentList>("/api/marketplace/agents", { query: { sort: "name", limit: 100 }, signal }), []);
  const data = useAsync(
    async (signal) => {
      if (!allowed) throw new ApiError("Admins only.", 403, "admin_only");
      const [stats, metrics] = await Promise.all([
        api<Stats>("/api/admin/marketplace/stats", { query, signal }),
        api<Metrics>("/api/admin/marketplace/metrics", { query, signal }),
      ]);
      return { stats, metrics };
    },
    [key, allowed],
  );

  if (!user || !allowed || (data.error instanceof ApiError && data.error.status === 403)) {
    return (
      <section class="page">
        <h1>Admins only</h1>
        <p>The dashboard is for marketplace administrators. {user ? "Your account is not an admin." : <a href="/sign-in?next=/admin">Sign in as an admin</a>}</p>
        <p>
          <a href="/">Back to the marketplace</a>
        </p>
      </section>
    );
  }

  const stats = data.data?.stats;
  const metrics = data.data?.metrics;
  return (
    <section class="page admin">
      <h1>Marketplace dashboard</h1>
      <form
        class="filters"
        aria-label="Dashboard filters"
        onSubmit={(e) => {
          e.preventDefault();
          setApplied({ from, to, agent });
          if (JSON.stringify({ from, to, agent }) === JSON.stringify(applied)) data.reload();
        }}
      >
        <div class="field">
          <label for="from">From</label>
          <input id="from" type="date" value={from} max={to} onInput={(e) => setFrom(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="to">To</label>
          <input id="to" type="date" value={to} min={from} onInput={(e) => setTo(e.currentTarget.value)} />
        </div>
        <div class="field">
          <label for="agent-filter">Agent</label>
          <select id="agent-filter" value={agent} onChange={(e) => setAgent(e.currentTarget.value)}>
            <option value="">All agents</option>
            {(agents.data?.data ?? []).map((a) => (
              <option key={a.slug} value={a.slug}>
                {a.name}
              </option>
            ))}
          </select>
        </div>
        <div class="field actions-field">
          <button type="submit">Refresh</button>
        </div>
      </form>
      <div class="actions wrap">
        {(["stats", "metrics"] as const).map((kind) => (
          <button
            key={kind}
            type="button"
            class="secondary"
            onClick={() => {
              setDownloadError("");
              download(kind, query).catch((err: unknown) => setDownloadError(errorMessage(err)));
            }}
          >
            Download {kind} CSV
          </button>
        ))}
      </div>
      {downloadError && (
        <p class="field-error" role="alert">
          {downloadError}
        </p>
      )}
      <p class="muted small" aria-live="polite">
        {data.loading ? "Loading…" : stats ? `From ${stats.range.from} to ${stats.range.to} (${stats.range.tz})` : ""}
      </p>
      {data.loading && !data.data && <Loading label="Loading the dashboard…" />}
      {data.error !== undefined && <ErrorBox error={data.error} onRetry={data.reload} title="Could not load the dashboard." />}
      {stats && metrics && (
        <>
          <h2>Totals</h2>
          <dl class="stats" aria-label="Totals">
            <Stat label="Deployments" value={fmtNumber(stats.totals.deployments)} />
            <Stat label="Conversations" value={fmtNumber(stats.totals.conversations)} />
            <Stat label="User messages" value={fmtNumber(stats.totals.user_messages)} />
            <Stat label="Unique users" value={fmtNumber(stats.totals.unique_users)} />
            <Stat label="Active deployments now" value={fmtNumber(stats.now.active_deployments)} />
            <Stat label="Active agents now" value={fmtNumber(stats.now.active_agents)} />
          </dl>
          <DayChart
            title="Deployments and conversations per day"
            days={stats.days.map((d) => d.day)}
            series={[
              { label: "Deployments", values: stats.days.map((d) => d.deployments), className: "series-a" },
              { label: "Conversations", values: stats.days.map((d) => d.conversations), className: "series-b" },
            ]}
          />
          <h2>Replies</h2>
          <dl class="stats" aria-label="Replies">
            <Stat label="Replies" value={fmtNumber(metrics.overall.replies)} />
            <Stat label="Error rate" value={fmtPercent(metrics.overall.error_rate)} />
            <Stat label="Latency p50" value={fmtMs(metrics.overall.latency_ms.p50)} />
            <Stat label="Latency p95" value={fmtMs(metrics.overall.latency_ms.p95)} />
            <Stat label="Prompt tokens" value={fmtNumber(metrics.overall.prompt_tokens)} />
            <Stat label="Completion tokens" value={fmtNumber(metrics.overall.completion_tokens)} />
          </dl>
          {metrics.percentiles.method === "histogram" && (
            <p class="hint">
              Latency percentiles are estimated from histograms, within {fmtNumber(metrics.percentiles.max_relative_error * 100, 1)} % of
              the exact values.
            </p>
          )}
          <DayChart
            title="Replies and failures per day"
            days={metrics.days.map((d) => d.day)}
            series={[
              { label: "Completed", values: metrics.days.map((d) => d.completed), className: "series-a" },
              { label: "Failed", values: metrics.days.map((d) => d.failed), className: "series-c" },
            ]}
          />
          <h2>Popular agents</h2>
          {stats.popular_agents.length === 0 ? (
            <p class="muted">No activity in this range.</p>
          ) : (
            <>
              <Bars title="Conversations by agent" rows={stats.popular_agents.map((a) => ({ label: a.name, value: a.conversations }))} />
              <div class="table-wrap" tabIndex={0} role="region" aria-label="Popular agents table">
                <table>
                  <caption class="sr-only">Popular agents</caption>
                  <thead>
                    <tr>
                      <th scope="col">Rank</th>
                      <th scope="col">Agent</th>
                      <th scope="col">Deployments</th>
                      <th scope="col">Conversations</th>
                      <th scope="col">Messages</th>
                      <th scope="col">Users</th>
                    </tr>
                  </thead>
                  <tbody>
                    {stats.popular_agents.map((a) => (
                      <tr key={a.slug}>
                        <td>{a.rank}</td>
                        <th scope="row">{a.name}</th>
                        <td>{a.deployments}</td>
                        <td>{a.conversations}</td>
                        <td>{a.messages}</td>
                        <td>{a.unique_users}</td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            </>
          )}
          {metrics.agents.length > 0 && (
            <Bars title="Latency p95 by agent" rows={metrics.agents.map((a) => ({ label: a.name, value: a.latency_ms.p95 ?? 0 }))} format={fmtMs} />
          )}
          <h2>Satisfaction</h2>
          <dl class="stats" aria-label="Satisfaction">
            <Stat label="Survey responses" value={fmtNumber(stats.survey.responses)} />
            <Stat label="Average satisfaction" value={fmtNumber(stats.survey.avg_satisfaction, 2)} />
            <Stat label="Average ease of use" value={fmtNumber(stats.survey.avg_ease_of_use, 2)} />
            <Stat label="NPS" value={fmtNumber(stats.survey.nps, 1)} />
            <Stat label="Likes" value={fmtNumber(stats.feedback.likes)} />
            <Stat label="Like ratio" value={fmtPercent(stats.feedback.like_ratio)} />
          </dl>
        </>
      )}
    </section>
  );
}
