import type { ComponentChildren } from "preact";
import { errorMessage } from "../lib/api";

export function ErrorBox({ error, onRetry, title }: { error: unknown; onRetry?: () => void; title?: string }) {
  return (
    <div class="error-box" role="alert">
      <p>
        <strong>{title ?? "That did not work."}</strong> {errorMessage(error)}
      </p>
      {onRetry && (
        <button type="button" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Loading({ label }: { label: string }) {
  return (
    <p class="loading" role="status">
      <span class="spinner" aria-hidden="true" /> {label}
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <div class="empty">{children}</div>;
}

export function formatTime(iso: string | null): string {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function price(agent: { pricing_model: string; price_cents: number; currency: string }): string {
  if (agent.pricing_model === "free") return "Free";
  const amount = new Intl.NumberFormat(undefined, { style: "currency", currency: agent.currency }).format(
    agent.price_cents / 100,
  );
  switch (agent.pricing_model) {
    case "subscription":
      return `${amount} / month`;
    case "pay_per_use":
      return `${amount} per use`;
    default:
      return `${amount} once`;
  }
}

export function humanize(slug: string): string {
  return slug.replace(/[-_]/g, " ").replace(/^./, (c) => c.toUpperCase());
}
