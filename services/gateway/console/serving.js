// Serving: what each inference replica has loaded, its memory against the
// budget, evictions, queue depth, and the batch-size and queue-time
// distributions; loading and unloading a model (admin) on every replica.
"use strict";

import { h, api, post, say, notice, failed, size, fmt } from "./core.js";

// Bars of a distribution ({le, count} buckets), one per non-empty bucket.
function bars(title, dist, unit) {
  if (!dist || !dist.count) return h("span", { class: "muted" }, "no runs yet");
  const W = 220, H = 56, max = Math.max(...dist.buckets.map((b) => b.count));
  const w = W / Math.max(1, dist.buckets.length);
  const label = dist.buckets.map((b) => `≤ ${b.le}${unit}: ${b.count}`).join(", ");
  return h("svg", { class: "dist", viewBox: `0 0 ${W} ${H + 14}`, role: "img", "aria-label": `${title}: ${label}` },
    ...dist.buckets.map((b, i) => h("g", {},
      h("title", {}, `≤ ${b.le}${unit}: ${b.count}`),
      h("rect", { class: "bar", x: i * w + 1, width: Math.max(1, w - 2), y: H - (b.count / max) * H, height: (b.count / max) * H }),
      h("text", { class: "tick", x: i * w + w / 2, y: H + 12, "text-anchor": "middle" }, String(b.le)))));
}

function memory(r) {
  const budget = r.budget_bytes;
  const used = r.loaded_bytes;
  return h("p", {},
    `Loaded models ${size(used)}`,
    budget ? [" of a ", size(budget), " budget ", h("meter", { min: 0, max: budget, value: Math.min(used, budget), high: budget * 0.9, "aria-label": `memory used ${Math.round((100 * used) / budget)} % of the budget` })] : " (no budget set: inference.memory_budget_mb)",
    ` · process ${size(r.resident_bytes)} resident · ${r.evictions} evictions`);
}

function replica(r, act) {
  if (r.error) {
    return h("section", { class: "panel" }, h("h2", {}, r.address), notice("error", r.error));
  }
  const rows = r.models.map((m) => h("tr", {},
    h("th", { scope: "row" }, m.name),
    h("td", {}, m.version || "—", m.registry_version ? h("span", { class: "muted" }, ` (registry v${m.registry_version})`) : ""),
    h("td", {}, h("span", { class: `pill ${m.state === "READY" ? "ok" : m.state === "UNAVAILABLE" ? "bad" : "warn"}` }, m.state.toLowerCase()), m.reason ? h("span", { class: "muted" }, ` ${m.reason}`) : ""),
    h("td", { class: "num" }, m.loaded_bytes ? size(m.loaded_bytes) : "—"),
    h("td", { class: "num" }, m.queue_depth),
    h("td", { class: "num" }, m.requests),
    h("td", {}, bars(`${m.name} batch sizes`, m.batch_size, "")),
    h("td", {}, m.queue_ms && m.queue_ms.count ? `p50 ${fmt.ms(m.queue_ms.p50)} · p99 ${fmt.ms(m.queue_ms.p99)} ms` : "—"),
    h("td", {}, m.state === "READY"
      ? h("button", { type: "button", class: "secondary", onclick: () => act(m.name, false) }, `Unload ${m.name}`)
      : h("button", { type: "button", class: "secondary", onclick: () => act(m.name, true) }, `Load ${m.name}`))));
  return h("section", { class: "panel", "aria-labelledby": `r-${r.address}` },
    h("h2", { id: `r-${r.address}` }, `Replica ${r.address}`),
    memory(r),
    h("div", { class: "table-scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Model", "Version", "State", "Memory", "Queue", "Calls", "Batch sizes", "Queue time", "Admin"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No models."))))));
}

export async function serving(main, signal) {
  const outcome = h("div", { id: "outcome", "aria-live": "polite" });
  const act = async (model, load) => {
    outcome.replaceChildren(notice("info", `${load ? "Loading" : "Unloading"} ${model} on every replica…`));
    try {
      await post(`/v2/repository/models/${encodeURIComponent(model)}/${load ? "load" : "unload"}`, {});
      outcome.replaceChildren(notice("ok", `${model} ${load ? "loaded" : "unloaded"} on every replica.`));
    } catch (e) {
      outcome.replaceChildren(notice("error", `${load ? "Load" : "Unload"} of ${model} failed: ${e.status === 403 ? "your key needs the admin scope. " : ""}${e.message}`));
    }
    draw();
  };
  const name = h("input", { id: "load-model", autocomplete: "off", placeholder: "a model in the repository" });
  const form = h("form", { class: "filters", "aria-label": "Load a model" },
    h("div", {}, h("label", { for: "load-model" }, "Load a model (admin)"), name),
    h("button", { type: "submit" }, "Load"));
  form.addEventListener("submit", (e) => { e.preventDefault(); if (name.value.trim()) act(name.value.trim(), true); });
  // Only the replicas are redrawn: the form keeps what is being typed.
  const replicas = h("div", { id: "replicas" }, h("p", { class: "loading" }, "Loading…"));
  const draw = async () => {
    try {
      const r = await api("/v1/serving");
      if (signal.aborted) return;
      replicas.replaceChildren(...r.replicas.map((x) => replica(x, act)));
      say(`${r.replicas.length} inference replicas · updated ${new Date().toLocaleTimeString()}`);
    } catch (e) {
      if (!signal.aborted) failed(main, "Serving", e);
    }
  };
  main.replaceChildren(h("h1", {}, "Serving"), outcome, form, replicas);
  await draw();
  const timer = setInterval(draw, 5000);
  signal.addEventListener("abort", () => clearInterval(timer));
}
