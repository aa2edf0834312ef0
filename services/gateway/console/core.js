// The console's shared parts: DOM building, number formats, the signed-in
// token, calls to the gateway's APIs, server-sent events and SVG charts.
// Text always goes into the page as text nodes: names, addresses and error
// messages come from the network.
"use strict";

// Where the gateway's routes are, seen from this page: the path before
// /ui/, so the console works behind any path prefix.
export const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");
const TOKEN_KEY = "mlmesh.console.token";
// ---------------------------------------------------------------- helpers

export function h(tag, attrs, ...children) {
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

export const fmt = {
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

export function say(text) {
  document.getElementById("status").textContent = text;
}

// ------------------------------------------------------------------- auth

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

export class ApiError extends Error {
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

export async function api(path, options = {}) {
  const r = await fetch(BASE + path, {
    ...options,
    headers: { ...headers(), ...(options.headers || {}) },
  });
  if (!r.ok) throw await failure(r);
  return r.json();
}

// POSTs `body` as JSON (the gateway refuses state changes in any other
// type, so a cross-site form cannot make one).
export function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// A message box for a page's outcome: `role=alert` so a screen reader
// hears a failure at once.
export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// The page's failure in words, replacing its content.
export function failed(main, title, e) {
  main.replaceChildren(h("h1", {}, title), notice("error", e.message));
}

export const when = (ms) => (ms ? new Date(ms).toLocaleString() : "—");
export const size = (b) => (b === null || b === undefined ? "—" : b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : b >= 1024 ? `${(b / 1024).toFixed(1)} KiB` : `${b} B`);

// Hash links: `#/page/a/b?k=v`, each segment encoded.
export function link(page, parts = [], query = {}) {
  const q = new URLSearchParams(Object.entries(query).filter(([, v]) => v !== "" && v !== null && v !== undefined));
  const path = [page, ...parts].map(encodeURIComponent).join("/");
  return `#/${path}${q.toString() ? `?${q}` : ""}`;
}

function showSignIn(why) {
  const box = document.getElementById("signin");
  document.getElementById("signin-why").textContent =
    token() ? `Signed-in key refused: ${why}` : "This gateway needs an API key or a JWT.";
  box.hidden = false;
  document.getElementById("token").focus();
}

export function setupAuth(onChange) {
  const form = document.getElementById("signin-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    document.getElementById("signin").hidden = true;
    showWho();
    onChange();
  });
  document.getElementById("signout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showWho();
    onChange();
  });
  document.addEventListener("keydown", (e) => {
    const box = document.getElementById("signin");
    if (e.key === "Escape" && !box.hidden) box.hidden = true;
  });
  showWho();
}

export function showWho() {
  document.getElementById("who").textContent = token() ? "Signed in" : "";
  document.getElementById("signout").hidden = !token();
}

// ------------------------------------------------------- server-sent events

// Reads `path` as an event stream, calling `on(event, data)` per event,
// reconnecting with backoff until `signal` aborts.
export async function subscribe(path, on, signal) {
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

export const SERVICE_LABEL = {
  gateway: "Gateway",
  embedding: "Embedding",
  "vector-search": "Vector search",
  inference: "Inference",
  registry: "Registry",
};


// One line chart of `series` ([{label, points: [[t, v]]}]) as SVG.
export function chart(title, unit, series, format) {
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

