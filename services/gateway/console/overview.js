// Overview: every service and replica, live (server-sent events), with the
// mesh's topology.
"use strict";

import { h, fmt, say, subscribe, SERVICE_LABEL } from "./core.js";

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

export function overview(main, signal) {
  main.replaceChildren(h("h1", {}, "Overview"), h("p", { class: "loading" }, "Connecting…"));
  subscribe("/v1/mesh/events", (event, data) => {
    if (event === "error") {
      main.replaceChildren(h("h1", {}, "Overview"), h("p", { class: "error", role: "alert" }, data));
      return;
    }
    if (event === "mesh") renderOverview(main, JSON.parse(data));
  }, signal);
}

