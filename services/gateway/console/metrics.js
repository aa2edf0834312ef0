// Metrics: charts from the gateway's short in-process history, with the
// PromQL for the long term.
"use strict";

import { h, fmt, say, api, chart, SERVICE_LABEL } from "./core.js";

function renderMetrics(main, hist) {
  const byService = {};
  for (const s of hist.series) (byService[s.service] = byService[s.service] || []).push(s);
  const panels = hist.services.map((service) => {
    const series = byService[service] || [];
    const pick = (key, scale = 1) => series.map((s) => ({
      label: s.address,
      points: s.points.map((p) => [p.at_ms, p.up && p[key] !== null && p[key] !== undefined ? p[key] * scale : null]),
    }));
    const q = hist.promql[service];
    return h("section", { class: "panel chart", "aria-labelledby": `m-${service}` },
      h("h2", { id: `m-${service}` }, SERVICE_LABEL[service] || service),
      h("div", { class: "charts" },
        chart("Calls per second", "calls/s", pick("rate"), fmt.rate),
        chart("p99 latency", "ms", pick("p99_ms"), fmt.ms),
        chart("Errors", "% of calls", pick("error_rate", 100), (v) => v.toFixed(1)),
        chart("Memory", "MiB", pick("resident_bytes", 1 / (1 << 20)), (v) => v.toFixed(0))),
      h("details", { class: "promql" },
        h("summary", {}, "The same in Prometheus / Grafana (PromQL)"),
        h("pre", {}, Object.entries(q).map(([k, v]) => `# ${k}\n${v}`).join("\n\n"))));
  });
  const span = (hist.interval_ms / 1000) * Math.max(0, ...hist.series.map((s) => s.points.length));
  main.replaceChildren(
    h("h1", {}, "Metrics"),
    h("p", { class: "muted" },
      `The last ${span < 60 ? `${Math.round(span)} s` : `${Math.round(span / 60)} min`}, sampled every ${hist.interval_ms / 1000} s by the gateway (kept in memory). For longer, paste the PromQL into Grafana.`),
    ...panels);
}

export function metrics(main, signal) {
  main.replaceChildren(h("h1", {}, "Metrics"), h("p", { class: "loading" }, "Loading…"));
  const load = async () => {
    try {
      const hist = await api("/v1/mesh/history");
      if (!signal.aborted) renderMetrics(main, hist);
      say(`Updated ${fmt.time(Date.now())}`);
    } catch (e) {
      if (!signal.aborted) main.replaceChildren(h("h1", {}, "Metrics"), h("p", { class: "error", role: "alert" }, e.message));
    }
  };
  load();
  const timer = setInterval(load, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));
}
