// Access and audit: who may call this gateway (keys by name, tier and
// scopes, never their secrets; JWT tiers as they are seen) with when each
// was last seen, and the audit log of every change made through the
// gateway, whichever face it came in by.
"use strict";

import { h, api, say, failed, when } from "./core.js";

function callers(access) {
  if (!access.authentication) {
    return h("p", { class: "notice warn" }, "Authentication is off on this gateway (loopback development): every caller is anonymous and may do everything.");
  }
  const rows = access.callers.map((c) => h("tr", {},
    h("th", { scope: "row" }, c.name, c.kind === "jwt" && c.last_subject ? h("span", { class: "muted" }, ` (last: ${c.last_subject})`) : ""),
    h("td", {}, c.kind === "jwt" ? "JWT" : "API key"),
    h("td", {}, c.tier),
    h("td", {}, c.scopes.map((s) => h("span", { class: "tag" }, s))),
    h("td", {}, c.last_seen_ms ? when(c.last_seen_ms) : h("span", { class: "muted" }, "never (since this gateway started)")),
    h("td", { class: "num" }, c.calls)));
  return h("table", {},
    h("caption", {}, `Callers${access.jwt ? " (JWTs accepted: one row per tier seen)" : ""}`),
    h("thead", {}, h("tr", {}, ...["Name", "Kind", "Tier", "Scopes", "Last seen", "Calls"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No callers configured."))));
}

function auditTable(log) {
  const rows = log.entries.map((e) => h("tr", { class: e.outcome === "ok" ? "" : "refused" },
    h("td", {}, when(e.at_ms)),
    h("th", { scope: "row" }, e.who),
    h("td", {}, e.action),
    h("td", {}, e.target),
    h("td", {}, e.detail || h("span", { class: "muted" }, "—")),
    h("td", { class: "text" }, e.outcome === "ok" ? h("span", { class: "pill ok" }, "ok") : h("span", { class: "pill bad", title: e.outcome }, "refused"), e.outcome === "ok" ? "" : ` ${e.outcome}`)));
  return h("table", {},
    h("caption", {}, `Changes made through this gateway (newest first; the last ${log.kept} are kept in memory, every one is in the log)`),
    h("thead", {}, h("tr", {}, ...["When", "Who", "Action", "Target", "Detail", "Outcome"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No changes yet."))));
}

export async function access(main, signal, route) {
  main.replaceChildren(h("h1", {}, "Access and audit"), h("p", { class: "loading" }, "Loading…"));
  const before = Number(route.query.get("before")) || 0;
  try {
    const [a, log] = await Promise.all([api("/v1/access"), api(`/v1/audit?limit=100${before ? `&before=${before}` : ""}`)]);
    if (signal.aborted) return;
    main.replaceChildren(
      h("h1", {}, "Access and audit"),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, callers(a))),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, auditTable(log)),
        h("nav", { class: "pager", "aria-label": "Audit pages" },
          before ? h("a", { class: "button", href: "#/access" }, "Newest") : null,
          log.next_before ? h("a", { class: "button", href: `#/access?before=${log.next_before}` }, "Older") : null)));
    say(`${a.callers.length} callers · ${log.entries.length} changes shown`);
  } catch (e) {
    if (!signal.aborted) failed(main, "Access and audit", e);
  }
}
