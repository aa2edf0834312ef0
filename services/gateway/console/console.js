// The mlmesh console: a page per hash route (#/overview, #/models, …),
// each drawn from the gateway's public APIs. No framework and no build
// step: ES modules served from the gateway binary, DOM built with `h()`,
// live data by server-sent events read through fetch (EventSource cannot
// send the Authorization header).
"use strict";

import { setupAuth } from "./core.js";
import { overview } from "./overview.js";
import { metrics } from "./metrics.js";
import { models } from "./models.js";
import { collections } from "./collections.js";
import { playground } from "./playground.js";
import { access } from "./access.js";
import { serving } from "./serving.js";

// ----------------------------------------------------------------- router

const PAGES = { overview, models, serving, playground, collections, metrics, access };
const TITLES = { overview: "Overview", models: "Models", serving: "Serving", playground: "Playground", collections: "Collections", metrics: "Metrics", access: "Access and audit" };
let current = null;

// `#/page/part/part?query` → the page, its decoded parts and its query.
function parse() {
  const [path, q] = location.hash.replace(/^#\/?/, "").split("?");
  const [name, ...parts] = (path || "").split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  return { name: PAGES[name] ? name : "overview", parts, query: new URLSearchParams(q || "") };
}

function route() {
  const r = parse();
  if (current) current.abort();
  current = new AbortController();
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.page === r.name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const main = document.getElementById("main");
  document.title = `${[TITLES[r.name], ...r.parts].join(" · ")} · mlmesh console`;
  PAGES[r.name](main, current.signal, r);
}

window.addEventListener("hashchange", () => {
  route();
  document.getElementById("main").focus();
});
setupAuth(route);
route();
