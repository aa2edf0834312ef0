// Playground: try any model the mesh serves. Inference models get a form
// generated from their Open Inference Protocol metadata (one field per
// input, its datatype and shape named); embedding models compare a text
// with others; pipelines run with each step drawn on a timeline. Every run
// shows its latency and the trace id to look up in the tracing backend.
"use strict";

import { h, api, BASE, headers, say, notice, failed, fmt } from "./core.js";

// A call that also reports its latency and trace id.
async function timed(path, body) {
  const t0 = performance.now();
  const r = await fetch(BASE + path, {
    method: "POST",
    headers: { ...headers(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const ms = performance.now() - t0;
  const trace = r.headers.get("x-trace-id");
  let json = null;
  try { json = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) {
    const message = json && json.error ? (json.error.message || json.error) : `${r.status} ${r.statusText}`;
    throw Object.assign(new Error(message), { ms, trace });
  }
  return { json, ms, trace };
}

function meta(ms, trace) {
  return h("p", { class: "muted run-meta" }, `${fmt.ms(ms)} ms round trip`, trace ? [" · trace ", h("code", { class: "trace" }, trace)] : " · tracing off");
}

function numbersOf(text) {
  const t = text.trim();
  if (!t) return [];
  if (t.startsWith("[")) return JSON.parse(t).flat(Infinity);
  return t.split(/[\s,]+/).filter(Boolean).map((x) => (x === "true" || x === "false" ? x === "true" : Number(x)));
}

// ------------------------------------------------------------- inference

async function inferencePanel(model, out) {
  const m = await api(`/v2/models/${encodeURIComponent(model)}`);
  const fields = m.inputs.map((inp, i) => {
    const id = `in-${i}`;
    const shape = inp.shape.map((d) => (d < 0 ? 1 : d));
    const count = shape.reduce((a, b) => a * b, 1);
    const hint = inp.datatype === "BYTES" ? "text" : `${count} number${count === 1 ? "" : "s"}, comma- or space-separated`;
    return {
      inp, shape,
      el: h("div", { class: "wide" },
        h("label", { for: id }, `${inp.name} (${inp.datatype}, shape [${inp.shape.join(", ")}])`),
        h("textarea", { id, rows: 2, placeholder: hint, "data-input": inp.name })),
    };
  });
  const form = h("form", { class: "playform", "aria-label": `Run ${model}` },
    ...fields.map((f) => f.el),
    h("button", { type: "submit" }, "Run"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    out.replaceChildren(notice("info", "Running…"));
    try {
      const inputs = fields.map((f) => {
        const text = form.querySelector(`[data-input="${CSS.escape(f.inp.name)}"]`).value;
        const data = f.inp.datatype === "BYTES" ? [text] : numbersOf(text);
        const shape = [...f.shape];
        if (shape.length && data.length && data.length !== shape.reduce((a, b) => a * b, 1)) {
          shape[0] = Math.max(1, Math.round(data.length / Math.max(1, shape.slice(1).reduce((a, b) => a * b, 1))));
        }
        return { name: f.inp.name, datatype: f.inp.datatype, shape, data };
      });
      const { json, ms, trace } = await timed(`/v2/models/${encodeURIComponent(model)}/infer`, { inputs });
      out.replaceChildren(meta(ms, trace),
        h("table", {},
          h("caption", {}, `Outputs of ${json.model_name} v${json.model_version}`),
          h("thead", {}, h("tr", {}, ...["Output", "Datatype", "Shape", "Data"].map((c) => h("th", { scope: "col" }, c)))),
          h("tbody", {}, json.outputs.map((o) => h("tr", {},
            h("th", { scope: "row" }, o.name), h("td", {}, o.datatype), h("td", {}, `[${o.shape.join(", ")}]`),
            h("td", {}, h("code", {}, JSON.stringify(o.data).slice(0, 2000))))))));
    } catch (err) {
      out.replaceChildren(notice("error", `Failed: ${err.message}`), err.ms ? meta(err.ms, err.trace) : "");
    }
  });
  return [h("p", { class: "muted" }, `${m.platform || "model"} · versions ${(m.versions || []).join(", ") || "—"}`), form];
}

// ------------------------------------------------------------ embeddings

function embeddingPanel(model, out) {
  const source = h("input", { id: "sim-source", value: "How do I reset my password?", autocomplete: "off" });
  const texts = h("textarea", { id: "sim-texts", rows: 4 }, "I forgot my login credentials\nThe weather is lovely today\nChange your account password in settings");
  const form = h("form", { class: "playform", "aria-label": `Compare texts with ${model}` },
    h("div", { class: "wide" }, h("label", { for: "sim-source" }, "Text"), source),
    h("div", { class: "wide" }, h("label", { for: "sim-texts" }, "Compared with (one per line)"), texts),
    h("button", { type: "submit" }, "Compare"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    out.replaceChildren(notice("info", "Embedding…"));
    const others = texts.value.split("\n").map((t) => t.trim()).filter(Boolean);
    try {
      const { json, ms, trace } = await timed("/v1/similarity", { source: source.value, texts: others, model });
      const rows = others.map((t, i) => [t, json.scores[i]]).sort((a, b) => b[1] - a[1]);
      out.replaceChildren(meta(ms, trace), h("table", {},
        h("caption", {}, `Cosine similarity to “${source.value}” (${json.model})`),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Text"), h("th", { scope: "col" }, "Similarity"))),
        h("tbody", {}, rows.map(([t, s]) => h("tr", {},
          h("th", { scope: "row" }, t),
          h("td", {}, h("meter", { min: -1, max: 1, value: s, "aria-label": `similarity ${s.toFixed(3)}` }), ` ${s.toFixed(3)}`))))));
    } catch (err) {
      out.replaceChildren(notice("error", `Failed: ${err.message}`));
    }
  });
  return [form];
}

// ------------------------------------------------------------- pipelines

function timeline(steps) {
  if (!steps.length) return h("p", { class: "muted" }, "No steps ran.");
  const end = Math.max(...steps.map((s) => s.started_us + s.duration_us)) || 1;
  const W = 560, rowH = 22, L = 150;
  return h("svg", { viewBox: `0 0 ${W} ${steps.length * rowH + 20}`, role: "img", "aria-label": `Timeline: ${steps.map((s) => `${s.step} ${(s.duration_us / 1000).toFixed(1)} ms`).join(", ")}` },
    ...steps.map((s, i) => h("g", {},
      h("text", { x: 0, y: i * rowH + 15, class: "tick" }, s.step),
      h("rect", { class: "bar", x: L + (s.started_us / end) * (W - L - 10), y: i * rowH + 4, width: Math.max(2, (s.duration_us / end) * (W - L - 10)), height: 14 },
        h("title", {}, `${s.step}: ${(s.duration_us / 1000).toFixed(2)} ms from ${(s.started_us / 1000).toFixed(2)} ms`)))),
    h("text", { x: W - 10, y: steps.length * rowH + 16, class: "tick", "text-anchor": "end" }, `${(end / 1000).toFixed(1)} ms`));
}

function pipelinePanel(p, out) {
  const fields = p.inputs.map((name, i) => h("div", { class: "wide" },
    h("label", { for: `p-${i}` }, name),
    h("textarea", { id: `p-${i}`, rows: 2, "data-input": name, placeholder: "a text, or a JSON tensor {\"datatype\", \"shape\", \"data\"}" })));
  const form = h("form", { class: "playform", "aria-label": `Run pipeline ${p.name}` }, ...fields, h("button", { type: "submit" }, "Run"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    out.replaceChildren(notice("info", "Running…"));
    const inputs = {};
    for (const el of form.querySelectorAll("[data-input]")) {
      const v = el.value.trim();
      try { inputs[el.dataset.input] = v.startsWith("{") ? JSON.parse(v) : [v]; } catch (_) { inputs[el.dataset.input] = [v]; }
    }
    try {
      const { json, ms, trace } = await timed(`/v1/pipelines/${encodeURIComponent(p.name)}`, { inputs });
      out.replaceChildren(meta(ms, trace), timeline(json.steps),
        h("pre", {}, JSON.stringify(json.outputs, null, 2).slice(0, 4000)));
    } catch (err) {
      out.replaceChildren(notice("error", `Failed: ${err.message}`));
    }
  });
  return [h("p", { class: "muted" }, p.description || "", ` Steps: ${p.steps.join(" → ")}`), form];
}

// ------------------------------------------------------------------ page

export async function playground(main, signal, route) {
  main.replaceChildren(h("h1", {}, "Playground"), h("p", { class: "loading" }, "Loading…"));
  try {
    const [models, pipes] = await Promise.all([
      api("/v1/models"),
      api("/v1/pipelines").catch(() => ({ pipelines: [] })),
    ]);
    if (signal.aborted) return;
    const options = [
      ...models.data.map((m) => ({ key: `model:${m.id}`, label: `${m.id} (${m.mlmesh.service})`, kind: m.mlmesh.service, name: m.id })),
      ...pipes.pipelines.map((p) => ({ key: `pipeline:${p.name}`, label: `${p.name} (pipeline)`, kind: "pipeline", name: p.name, p })),
    ];
    const chosen = route.query.get("try") || (options[0] && options[0].key);
    const select = h("select", { id: "try" }, options.map((o) => h("option", { value: o.key, selected: o.key === chosen }, o.label)));
    select.addEventListener("change", () => { location.hash = `#/playground?try=${encodeURIComponent(select.value)}`; });
    const out = h("div", { id: "play-out", "aria-live": "polite" });
    const o = options.find((x) => x.key === chosen);
    let panel = [h("p", { class: "muted" }, "Nothing to try: the mesh serves no model.")];
    if (o && o.kind === "embedding") panel = embeddingPanel(o.name, out);
    else if (o && o.kind === "inference") panel = await inferencePanel(o.name, out);
    else if (o && o.kind === "pipeline") panel = pipelinePanel(o.p, out);
    if (signal.aborted) return;
    main.replaceChildren(h("h1", {}, "Playground"),
      h("div", { class: "filters" }, h("div", {}, h("label", { for: "try" }, "Model or pipeline"), select)),
      h("section", { class: "panel" }, ...panel),
      out);
    say(o ? `Trying ${o.label}` : "");
  } catch (e) {
    if (!signal.aborted) failed(main, "Playground", e);
  }
}


