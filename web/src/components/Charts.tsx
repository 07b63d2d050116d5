// Small hand-made SVG charts (no chart library): a bar chart over days and horizontal bars.
// Each chart is an image with a text summary, and its numbers are in a table next to it.

export interface Series {
  label: string;
  values: number[];
  className: string;
}

const W = 640;
const H = 200;
const PAD = { top: 12, right: 8, bottom: 28, left: 40 };

function niceMax(max: number): number {
  if (max <= 4) return 4;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  const step = [1, 2, 2.5, 5, 10].map((s) => s * magnitude).find((s) => s * 4 >= max) ?? max;
  return step * 4;
}

export function DayChart({ title, days, series }: { title: string; days: string[]; series: Series[] }) {
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values)));
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const slot = innerW / Math.max(1, days.length);
  const barW = Math.max(1, (slot * 0.8) / series.length);
  const y = (v: number) => PAD.top + innerH - (v / max) * innerH;
  const ticks = [0, max / 4, max / 2, (3 * max) / 4, max];
  const labelEvery = Math.max(1, Math.ceil(days.length / 8));
  const totals = series.map((s) => `${s.label}: ${s.values.reduce((a, b) => a + b, 0)} in total`).join("; ");
  const id = title.toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return (
    <figure class="chart">
      <figcaption id={`${id}-title`}>{title}</figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-labelledby={`${id}-title ${id}-desc`}>
        <desc id={`${id}-desc`}>
          {`${days.length} days from ${days[0] ?? ""} to ${days[days.length - 1] ?? ""}. ${totals}.`}
        </desc>
        {ticks.map((t) => (
          <g key={t}>
            <line class="grid" x1={PAD.left} x2={W - PAD.right} y1={y(t)} y2={y(t)} />
            <text class="axis" x={PAD.left - 4} y={y(t) + 4} text-anchor="end">
              {Number.isInteger(t) ? t : t.toFixed(1)}
            </text>
          </g>
        ))}
        {days.map((day, i) => (
          <g key={day}>
            {series.map((s, j) => {
              const v = s.values[i] ?? 0;
              return <rect key={s.label} class={s.className} x={PAD.left + i * slot + slot * 0.1 + j * barW} y={y(v)} width={barW} height={Math.max(0, PAD.top + innerH - y(v))} />;
            })}
            {i % labelEvery === 0 && (
              <text class="axis" x={PAD.left + i * slot + slot / 2} y={H - 8} text-anchor="middle">
                {day.slice(5)}
              </text>
            )}
          </g>
        ))}
      </svg>
      <ul class="legend">
        {series.map((s) => (
          <li key={s.label}>
            <span class={`swatch ${s.className}`} aria-hidden="true" /> {s.label}
          </li>
        ))}
      </ul>
    </figure>
  );
}

export function Bars({ title, rows, format }: { title: string; rows: { label: string; value: number }[]; format?: (v: number) => string }) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  const fmt = format ?? String;
  return (
    <figure class="chart bars">
      <figcaption>{title}</figcaption>
      <ol class="bar-list">
        {rows.map((r) => (
          <li key={r.label}>
            <span class="bar-label">{r.label}</span>
            <svg class="bar-track" viewBox="0 0 100 10" preserveAspectRatio="none" aria-hidden="true">
              <rect class="bar-fill" x="0" y="0" height="10" width={(r.value / max) * 100} />
            </svg>
            <span class="bar-value">{fmt(r.value)}</span>
          </li>
        ))}
      </ol>
    </figure>
  );
}
