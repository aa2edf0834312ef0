// The mlmesh console: a page per hash route (#/overview, #/metrics), each
// drawn from the gateway's public read APIs. No framework and no build
// step: DOM built with `h()` (text always as text nodes — addresses and
// error messages come from the network), live data by server-sent events
// read through fetch (EventSource cannot send the Authorization header).
"use strict";

// Where the gateway's routes are, seen from this page: the path before
// /ui/, so the console works behind any path prefix.
const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");
const TOKEN_KEY = "mlmesh.console.token";

// ---------------------------------------------------------------- helpers

function h(tag, attrs, ...children) {
  const svg = ["svg", "g", "rect", "line", "polyline", "path", "text", "circle", "title"].includes(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = {
  rate: (v) => (v === null || v === undefined ? "—" : v < 10 ? v.toFixed(2) : v.toFixed(1)),
  ms: (v) => (v === null || v === undefined ? "—" : v < 1 ? v.toFixed(3) : v < 100 ? v.toFixed(2) : v.toFixed(0)),
  pct: (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(v > 0 && v < 0.01 ? 2 : 1) + " %"),
  bytes: (v) => (!v ? "—" : v >= 1 << 30 ? (v / (1 << 30)).toFixed(2) + " GiB" : (v / (1 << 20)).toFixed(0) + " MiB"),
  uptime: (s) => {
    if (s === null || s === undefined) return "—";
    const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return d ? `${d} d ${hr} h` : hr ? `${hr} h ${m} min` : m ? `${m} min` : `${s} s`;
  },
  time: (ms) => new Date(ms).toLocaleTimeString(),
};

function say(text) {
  document.getElementById("status").textContent = text;
}

// ------------------------------------------------------------------- auth

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function failure(r) {
  let message = `${r.status} ${r.statusText}`;
  try {
    const body = await r.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON */ }
  if (r.status === 401) showSignIn(message);
  return new ApiError(r.status, message);
}

async function api(path, options = {}) {
  const r = await fetch(BASE + path, {
    ...options,
    headers: { ...headers(), ...(options.headers || {}) },
  });
  if (!r.ok) throw await failure(r);
  return r.json();
}

function showSignIn(why) {
  const box = document.getElementById("signin");
  document.getElementById("signin-why").textContent =
    token() ? `Signed-in key refused: ${why}` : "This gateway needs an API key or a JWT.";
  box.hidden = false;
  document.getElementById("token").focus();
}

function setupAuth() {
  const form = document.getElementById("signin-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    document.getElementById("signin").hidden = true;
    showWho();
    route();
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showWho();
    route();
  });
  document.addEventListener("keydown", (e) => {
    const box = document.getElementById("signin");
    if (e.key === "Escape" && !box.hidden) box.hidden = true;
  });
  showWho();
}

function showWho() {
  document.getElementById("who").textContent = token() ? "Signed in" : "";
  document.getElementById("signout").hidden = !token();
}

// ------------------------------------------------------- server-sent events

// Reads `path` as an event stream, calling `on(event, data)` per event,
// reconnecting with backoff until `signal` aborts.
async function subscribe(path, on, signal) {
  let wait = 500;
  while (!signal.aborted) {
    try {
      const r = await fetch(BASE + path, { headers: headers(), signal });
      if (!r.ok) throw await failure(r);
      wait = 500;
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) on(event, data.join("\n"));
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
        on("error", e.message);
        return;
      }
      say(`Live updates interrupted (${e.message}); retrying…`);
    }
    await new Promise((ok) => setTimeout(ok, wait));
    wait = Math.min(wait * 2, 10000);
  }
}

// ------------------------------------------------------------------ pages

const SERVICE_LABEL = {
  gateway: "Gateway",
  embedding: "Embedding",
  "vector-search": "Vector search",
  inference: "Inference",
  registry: "Registry",
};

function health(service) {
  const n = service.replicas.length;
  if (n === 0) return ["warn", "no replicas"];
  const up = service.replicas.filter((r) => r.up && r.serving).length;
  if (up === n) return ["ok", `${up}/${n} up`];
  if (up === 0) return ["bad", `0/${n} up`];
  return ["warn", `${up}/${n} up`];
}

function topology(mesh) {
  const services = mesh.services.filter((s) => s.name !== "gateway");
  const gw = mesh.services.find((s) => s.name === "gateway");
  const rowH = 64, width = 640, height = Math.max(1, services.length) * rowH + 16;
  const node = (x, y, s) => {
    const [cls, text] = health(s);
    return h("g", { class: `node ${cls}` },
      h("title", {}, `${SERVICE_LABEL[s.name] || s.name}: ${text}`),
      h("rect", { x, y, width: 190, height: 48, rx: 8 }),
      h("text", { x: x + 12, y: y + 20 }, SERVICE_LABEL[s.name] || s.name),
      h("text", { x: x + 12, y: y + 38, class: "sub" }, `${text} · ${fmt.rate(s.rate)} calls/s`));
  };
  const gy = height / 2 - 24;
  const edges = services.map((s, i) => {
    const y = 8 + i * rowH + 24;
    return h("path", { class: "edge", d: `M 230 ${gy + 24} C 330 ${gy + 24}, 330 ${y}, 420 ${y}` });
  });
  return h("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "topo-title" },
    h("title", { id: "topo-title" }, "Mesh topology: the gateway calls " +
      services.map((s) => `${SERVICE_LABEL[s.name] || s.name} (${health(s)[1]})`).join(", ")),
    ...edges,
    gw ? node(40, gy, gw) : null,
    ...services.map((s, i) => node(420, 8 + i * rowH, s)));
}

function replicaTable(service) {
  const rows = service.replicas.map((r) => {
    const state = !r.up
      ? h("span", { class: "pill bad" }, "down")
      : r.serving
        ? h("span", { class: "pill ok" }, "serving")
        : h("span", { class: "pill warn" }, "draining");
    return h("tr", {},
      h("th", { scope: "row" }, r.address),
      h("td", {}, state),
      h("td", {}, r.up ? r.version : h("span", { class: "muted" }, r.error || "")),
      h("td", { class: "num" }, r.up ? fmt.uptime(r.uptime_secs) : "—"),
      h("td", { class: "num" }, fmt.rate(r.rate)),
      h("td", { class: "num" }, fmt.pct(r.error_rate)),
      h("td", { class: "num" }, fmt.ms(r.p50_ms)),
      h("td", { class: "num" }, fmt.ms(r.p99_ms)),
      h("td", { class: "num" }, fmt.bytes(r.resident_bytes)));
  });
  const [cls, text] = health(service);
  return h("section", { class: "panel", "aria-labelledby": `svc-${service.name}` },
    h("div", { class: "table-scroll" },
      h("table", {},
        h("caption", { id: `svc-${service.name}` },
          `${SERVICE_LABEL[service.name] || service.name} `, h("span", { class: `pill ${cls}` }, text)),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Replica"),
          h("th", { scope: "col" }, "State"),
          h("th", { scope: "col" }, "Release"),
          h("th", { scope: "col", class: "num" }, "Uptime"),
          h("th", { scope: "col", class: "num" }, "Calls/s"),
          h("th", { scope: "col", class: "num" }, "Errors"),
          h("th", { scope: "col", class: "num" }, "p50 ms"),
          h("th", { scope: "col", class: "num" }, "p99 ms"),
          h("th", { scope: "col", class: "num" }, "Memory"))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No replicas known."))))));
}

function overviewCards(mesh) {
  const all = mesh.services.flatMap((s) => s.replicas);
  const up = all.filter((r) => r.up && r.serving).length;
  const gw = (mesh.services.find((s) => s.name === "gateway") || { replicas: [] }).replicas[0] || {};
  const card = (label, value) => h("div", { class: "card" },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  return h("div", { class: "cards" },
    card("Replicas serving", `${up} / ${all.length}`),
    card("Gateway calls/s", fmt.rate(gw.rate)),
    card("Gateway errors", fmt.pct(gw.error_rate)),
    card("Gateway p99", gw.p99_ms === null || gw.p99_ms === undefined ? "—" : `${fmt.ms(gw.p99_ms)} ms`));
}

function renderOverview(main, mesh) {
  main.replaceChildren(
    h("h1", {}, "Overview"),
    overviewCards(mesh),
    h("section", { class: "panel topology", "aria-label": "Topology" }, topology(mesh)),
    ...mesh.services.map(replicaTable));
  say(`Live · sampled ${fmt.time(mesh.sampled_at_ms)} · every ${mesh.interval_ms / 1000} s`);
}

function overview(main, signal) {
  main.replaceChildren(h("h1", {}, "Overview"), h("p", { class: "loading" }, "Connecting…"));
  subscribe("/v1/mesh/events", (event, data) => {
    if (event === "error") {
      main.replaceChildren(h("h1", {}, "Overview"), h("p", { class: "error", role: "alert" }, data));
      return;
    }
    if (event === "mesh") renderOverview(main, JSON.parse(data));
  }, signal);
}

// One line chart of `series` ([{label, points: [[t, v]]}]) as SVG.
function chart(title, unit, series, format) {
  const W = 480, H = 160, L = 48, R = 8, T = 8, B = 22;
  const pts = series.flatMap((s) => s.points).filter(([, v]) => v !== null && v !== undefined);
  let body;
  if (!pts.length) {
    body = h("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "tick" }, "no data yet");
  } else {
    const t0 = Math.min(...pts.map((p) => p[0])), t1 = Math.max(...pts.map((p) => p[0]));
    const vmax = Math.max(...pts.map((p) => p[1])) || 1;
    const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - v / vmax) * (H - T - B);
    const lines = series.map((s, i) => {
      // A gap (down, or no value) breaks the line.
      const runs = [[]];
      for (const [t, v] of s.points) {
        if (v === null || v === undefined) { if (runs[runs.length - 1].length) runs.push([]); continue; }
        runs[runs.length - 1].push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      return runs.filter((r) => r.length).map((r) =>
        h("polyline", { class: `line s${i % 4}`, points: r.join(" ") }));
    });
    body = [
      h("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      h("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
      h("text", { class: "tick", x: L - 4, y: T + 10, "text-anchor": "end" }, format(vmax)),
      h("text", { class: "tick", x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
      h("text", { class: "tick", x: L, y: H - 6 }, fmt.time(t0)),
      h("text", { class: "tick", x: W - R, y: H - 6, "text-anchor": "end" }, fmt.time(t1)),
      ...lines.flat(),
    ];
  }
  const last = series.map((s) => {
    const v = [...s.points].reverse().find(([, v]) => v !== null && v !== undefined);
    return `${s.label}: ${v ? format(v[1]) : "no data"}`;
  }).join("; ");
  return h("figure", {},
    h("figcaption", {}, `${title} (${unit})`),
    h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}, latest — ${last}` }, body),
    h("div", { class: "legend" }, series.map((s, i) =>
      h("span", {}, h("i", { class: `s${i % 4}` }), s.label))));
}

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

function metrics(main, signal) {
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

// ----------------------------------------------------------------- router

const PAGES = { overview, metrics };
let current = null;

function route() {
  const name = (location.hash.match(/^#\/([a-z-]+)/) || [])[1] || "overview";
  const page = PAGES[name] || overview;
  if (current) current.abort();
  current = new AbortController();
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · mlmesh console`;
  page(main, current.signal);
}

window.addEventListener("hashchange", () => {
  route();
  document.getElementById("main").focus();
});
setupAuth();
route();
