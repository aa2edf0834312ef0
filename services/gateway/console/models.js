// Models: every model in the registry (searched and paged by the
// registry; filters kept in the URL), one model's versions, aliases with
// their history, evidence as charts, promote and roll back through the
// registry's compare-and-set and validation gate, and one version's
// manifest compared with another's.
"use strict";

import { h, api, post, say, notice, failed, when, size, link, fmt } from "./core.js";

const PAGE_SIZE = 50;

// ------------------------------------------------------------------ list

function listForm(query) {
  const input = (name, label, hint) => [
    h("label", { for: `f-${name}` }, label),
    h("input", { id: `f-${name}`, name, value: query.get(name) || "", placeholder: hint, autocomplete: "off" }),
  ];
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter models" },
    h("div", {}, ...input("prefix", "Name starts with", "e.g. iris")),
    h("div", {}, ...input("task", "Task", "e.g. classification")),
    h("div", {}, ...input("tag", "Tag", "key=value")),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(form);
    location.hash = link("models", [], { prefix: f.get("prefix"), task: f.get("task"), tag: f.get("tag") });
  });
  return form;
}

function aliasPills(aliases) {
  const entries = Object.entries(aliases || {}).sort();
  if (!entries.length) return h("span", { class: "muted" }, "none");
  return entries.map(([a, v]) => h("span", { class: "pill ok" }, `${a} → v${v}`));
}

export async function models(main, signal, route) {
  const { query, parts } = route;
  if (parts.length >= 2) return version(main, signal, parts[0], Number(parts[1]), query);
  if (parts.length === 1) return model(main, signal, parts[0], query);
  main.replaceChildren(h("h1", {}, "Models"), h("p", { class: "loading" }, "Loading…"));
  const q = new URLSearchParams({ page_size: PAGE_SIZE });
  for (const k of ["prefix", "task", "tag"]) if (query.get(k)) q.set(k, query.get(k));
  if (query.get("page")) q.set("page_token", query.get("page"));
  let r;
  try {
    r = await api(`/v1/registry/models?${q}`);
  } catch (e) {
    if (!signal.aborted) failed(main, "Models", e);
    return;
  }
  if (signal.aborted) return;
  const rows = r.models.map((m) => h("tr", {},
    h("th", { scope: "row" }, h("a", { href: link("models", [m.name]) }, m.name)),
    h("td", {}, m.description || h("span", { class: "muted" }, "—")),
    h("td", { class: "num" }, m.latest_version ? `v${m.latest_version}` : "—"),
    h("td", {}, aliasPills(m.aliases)),
    h("td", {}, Object.entries(m.tags || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
    h("td", {}, when(m.updated_at_ms))));
  const next = r.next_page_token
    ? h("a", { class: "button", href: link("models", [], { prefix: query.get("prefix"), task: query.get("task"), tag: query.get("tag"), page: r.next_page_token }) }, "Next page")
    : null;
  main.replaceChildren(
    h("h1", {}, "Models"),
    listForm(query),
    h("section", { class: "panel" }, h("div", { class: "table-scroll" }, h("table", {},
      h("caption", {}, `Models${query.get("page") ? " (later page)" : ""}`),
      h("thead", {}, h("tr", {}, ...["Model", "Description", "Latest", "Aliases", "Tags", "Updated"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No model matches.")))))),
    h("nav", { class: "pager", "aria-label": "Pages" }, query.get("page") ? h("a", { class: "button", href: link("models", [], { prefix: query.get("prefix"), task: query.get("task"), tag: query.get("tag") }) }, "First page") : null, next));
  say(`${r.models.length} models shown · registry revision ${r.revision}`);
}

// ----------------------------------------------------------------- model

function latestEvidence(evidence, v) {
  return evidence.filter((e) => e.version === v).sort((a, b) => b.id - a.id)[0];
}

function evidenceBadge(e) {
  if (!e) return h("span", { class: "muted" }, "none");
  return h("span", { class: `pill ${e.passed ? "ok" : "bad"}` }, `${e.kind} ${e.passed ? "passed" : "failed"}`);
}

// Throughput per version from benchmark evidence, with its interval.
function benchmarkChart(evidence) {
  const pts = [];
  for (const e of evidence) {
    if (e.kind !== "benchmark") continue;
    const c = e.checks.find((c) => c.name === "benchmark.throughput");
    if (!c || c.figures.mean === null || c.figures.mean === undefined) continue;
    pts.push({ v: e.version, mean: c.figures.mean, low: c.figures.low ?? c.figures.mean, high: c.figures.high ?? c.figures.mean, p99: c.figures.p99_us });
  }
  if (!pts.length) return h("p", { class: "muted" }, "No benchmark recorded yet (mlmesh bench model --record MODEL@VERSION).");
  const W = 520, H = 180, L = 52, R = 12, T = 10, B = 26;
  const vs = [...new Set(pts.map((p) => p.v))].sort((a, b) => a - b);
  const ymax = Math.max(...pts.map((p) => p.high)) * 1.1 || 1;
  const x = (v) => L + (vs.length === 1 ? (W - L - R) / 2 : (vs.indexOf(v) / (vs.length - 1)) * (W - L - R));
  const y = (t) => T + (1 - t / ymax) * (H - T - B);
  const marks = pts.map((p) => h("g", { class: "mark" },
    h("title", {}, `v${p.v}: ${fmt.rate(p.mean)} calls/s [${fmt.rate(p.low)}, ${fmt.rate(p.high)}]`),
    h("line", { class: "err", x1: x(p.v), x2: x(p.v), y1: y(p.low), y2: y(p.high) }),
    h("circle", { cx: x(p.v), cy: y(p.mean), r: 4 })));
  const summary = pts.map((p) => `v${p.v} ${fmt.rate(p.mean)} calls/s`).join(", ");
  return h("figure", {},
    h("figcaption", {}, "Benchmark throughput per version (calls/s, 95 % interval)"),
    h("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Benchmark throughput: ${summary}` },
      h("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      h("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
      h("text", { class: "tick", x: L - 4, y: T + 10, "text-anchor": "end" }, fmt.rate(ymax)),
      h("text", { class: "tick", x: L - 4, y: H - B, "text-anchor": "end" }, "0"),
      ...vs.map((v) => h("text", { class: "tick", x: x(v), y: H - 8, "text-anchor": "middle" }, `v${v}`)),
      ...marks));
}

// Validation outcomes per version: one cell per record, newest last.
function validationStrip(evidence) {
  const runs = evidence.filter((e) => e.kind !== "benchmark").sort((a, b) => a.id - b.id);
  if (!runs.length) return h("p", { class: "muted" }, "No validation recorded yet (mlmesh model validate).");
  return h("ol", { class: "strip", "aria-label": "Validation runs, oldest first" }, runs.map((e) => {
    const failedChecks = e.checks.filter((c) => !c.passed).map((c) => c.name);
    return h("li", { class: e.passed ? "ok" : "bad" },
      h("a", { href: link("models", [e.model || "", String(e.version)]) }, `v${e.version}`),
      ` ${e.kind} ${e.passed ? "passed" : `failed: ${failedChecks.join(", ")}`}`,
      e.against_version ? ` · against v${e.against_version}` : "",
      ` · ${when(e.recorded_at_ms)}`);
  }));
}

function historyTable(moves) {
  const rows = moves.map((m) => h("tr", {},
    h("td", {}, when(m.moved_at_ms)),
    h("th", { scope: "row" }, m.alias),
    h("td", {}, `${m.from_version ? `v${m.from_version}` : "(none)"} → ${m.to_version ? `v${m.to_version}` : "(removed)"}`),
    h("td", {}, m.reason || h("span", { class: "muted" }, "—")),
    h("td", {}, m.overridden ? h("span", { class: "pill warn" }, "override") : m.evidence_id ? `evidence ${m.evidence_id}` : "—")));
  return h("table", {},
    h("caption", {}, "Alias history (newest first)"),
    h("thead", {}, h("tr", {}, ...["When", "Alias", "Move", "Reason (who)", "Gate"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No alias has moved yet."))));
}

// The promote form and one rollback button per alias; every action sends
// the version the page saw (compare-and-set), so a move made meanwhile by
// someone else comes back as a conflict instead of being overwritten.
function actions(name, m, versions, policies, history, outcome, reload) {
  const aliases = Object.entries(m.aliases || {}).sort();
  const policyOf = (a) => policies.find((p) => p.alias === a);
  const run = async (what, call) => {
    outcome.replaceChildren(notice("info", `${what}…`));
    try {
      const r = await call();
      const moves = r.moves || [r];
      outcome.replaceChildren(notice("ok", `${what}: done. ${moves.map((mv) => `${mv.alias}: v${mv.from_version} → v${mv.to_version}${mv.evidence_id ? ` (evidence ${mv.evidence_id})` : ""}${mv.overridden ? " (override)" : ""}`).join("; ")}`));
      await reload(outcome.firstChild);
    } catch (e) {
      const why = e.status === 403
        ? `Refused: your key may not do this. ${e.message}`
        : e.status === 401 ? `Not signed in: ${e.message}`
          : `Refused by the registry: ${e.message}`;
      outcome.replaceChildren(notice("error", `${what} failed. ${why}`));
    }
  };
  const rows = aliases.map(([a, v]) => {
    const p = policyOf(a);
    const previous = history.find((mv) => mv.alias === a && mv.to_version === v && mv.from_version);
    const back = h("button", {
      type: "button",
      disabled: !previous,
      title: previous ? `Point ${a} back at v${previous.from_version}` : "No earlier version to go back to",
      onclick: () => {
        const reason = document.getElementById("move-reason").value;
        run(`Roll back ${a}`, () => post(`/v1/registry/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(a)}/rollback`, { expected_version: v, reason }));
      },
    }, previous ? `Roll back to v${previous.from_version}` : "Roll back");
    return h("tr", {},
      h("th", { scope: "row" }, a),
      h("td", { class: "num" }, `v${v}`),
      h("td", {}, p ? `needs passing evidence of suite ${p.suite_digest.slice(0, 12)}…${p.margin !== null && p.margin !== undefined ? `, non-inferior by ${p.margin}` : ""}${p.max_age_secs ? `, at most ${p.max_age_secs} s old` : ""}` : h("span", { class: "muted" }, "no policy")),
      h("td", {}, back));
  });
  const aliasInput = h("input", { id: "move-alias", list: "alias-names", required: true, value: aliases.length ? aliases[0][0] : "production", autocomplete: "off" });
  const versionSelect = h("select", { id: "move-version" }, versions.map((v) => h("option", { value: v.version }, `v${v.version}${v.aliases.length ? ` (${v.aliases.join(", ")})` : ""}`)));
  const reason = h("input", { id: "move-reason", autocomplete: "off", placeholder: "why (kept in the history)" });
  const override = h("input", { id: "move-override", type: "checkbox" });
  const form = h("form", { class: "promote", "aria-labelledby": "promote-title" },
    h("h3", { id: "promote-title" }, "Promote"),
    h("datalist", { id: "alias-names" }, aliases.map(([a]) => h("option", { value: a }))),
    h("div", {}, h("label", { for: "move-version" }, "Version"), versionSelect),
    h("div", {}, h("label", { for: "move-alias" }, "To alias"), aliasInput),
    h("div", { class: "wide" }, h("label", { for: "move-reason" }, "Reason"), reason),
    h("div", { class: "check" }, override, h("label", { for: "move-override" }, "Override the alias's policy (admin; needs a reason)")),
    h("button", { type: "submit" }, "Promote"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const alias = aliasInput.value.trim();
    const target = Number(versionSelect.value);
    const expected = (m.aliases || {})[alias] || 0;
    run(`Promote v${target} to ${alias}`, () => post(`/v1/registry/models/${encodeURIComponent(name)}/aliases/${encodeURIComponent(alias)}`, {
      version: target, expected_version: expected, reason: reason.value, override: override.checked,
    }));
  });
  return h("section", { class: "panel", "aria-labelledby": "aliases-title" },
    h("h2", { id: "aliases-title" }, "Aliases"),
    h("div", { class: "table-scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Alias", "Version", "Gate", "Action"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No aliases yet: promote a version below."))))),
    form);
}

async function model(main, signal, name, query) {
  main.replaceChildren(h("h1", {}, name), h("p", { class: "loading" }, "Loading…"));
  const outcome = h("div", { id: "outcome", "aria-live": "polite" });
  const load = async (keep) => {
    const q = new URLSearchParams({ page_size: PAGE_SIZE });
    if (query.get("page")) q.set("page_token", query.get("page"));
    const t0 = performance.now();
    const r = await api(`/v1/registry/models/${encodeURIComponent(name)}?${q}`);
    if (signal.aborted) return;
    const m = r.model;
    const versions = r.versions;
    const rows = versions.map((v) => {
      const e = latestEvidence(r.evidence, v.version);
      return h("tr", {},
        h("th", { scope: "row" }, h("a", { href: link("models", [name, String(v.version)]) }, `v${v.version}`)),
        h("td", {}, h("span", { class: `pill ${v.status === "ready" ? "ok" : "warn"}` }, v.status)),
        h("td", {}, v.aliases.map((a) => h("span", { class: "pill ok" }, a))),
        h("td", {}, when(v.created_at_ms)),
        h("td", { class: "num" }, size(v.total_size)),
        h("td", { class: "num" }, v.files.length),
        h("td", {}, v.lineage && v.lineage.parent_version ? `from v${v.lineage.parent_version}` : v.lineage && v.lineage.framework ? v.lineage.framework : "—"),
        h("td", {}, evidenceBadge(e)));
    });
    const next = r.next_page_token ? h("a", { class: "button", href: link("models", [name], { page: r.next_page_token }) }, "Older versions") : null;
    const first = query.get("page") ? h("a", { class: "button", href: link("models", [name]) }, "Newest versions") : null;
    outcome.replaceChildren(...(keep ? [keep] : []));
    main.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: link("models") }, "Models"), " / ", name),
      h("h1", {}, name),
      h("p", {}, m.description || "", " ", Object.entries(m.tags || {}).map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`))),
      outcome,
      actions(name, m, versions, r.policies, r.history, outcome, load),
      h("section", { class: "panel", "aria-labelledby": "evidence-title" },
        h("h2", { id: "evidence-title" }, "Evidence"),
        h("div", { class: "charts" }, benchmarkChart(r.evidence)),
        h("h3", {}, "Validation runs"),
        validationStrip(r.evidence.map((e) => ({ ...e, model: name })))),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, h("table", {},
        h("caption", {}, `Versions (latest v${m.latest_version})`),
        h("thead", {}, h("tr", {}, ...["Version", "Status", "Aliases", "Created", "Size", "Files", "Lineage", "Evidence"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No versions yet."))))),
      h("nav", { class: "pager", "aria-label": "Version pages" }, first, next)),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, historyTable(r.history))));
    say(`Loaded in ${(performance.now() - t0).toFixed(0)} ms · ${versions.length} versions on this page`);
  };
  try {
    await load();
  } catch (e) {
    if (!signal.aborted) failed(main, name, e);
  }
}

// --------------------------------------------------------------- version

function checkRow(c) {
  const ni = c.non_inferiority;
  const num = (x) => (x === null || x === undefined ? "—" : x.toFixed(4));
  return h("tr", {},
    h("th", { scope: "row" }, c.name),
    h("td", {}, h("span", { class: `pill ${c.passed ? "ok" : "bad"}` }, c.passed ? "pass" : "fail")),
    h("td", {}, c.detail,
      ni ? ` (difference ${num(ni.difference)}, interval [${num(ni.lower)}, ${num(ni.upper)}], margin ${ni.margin})` : ""));
}

function evidenceList(evidence) {
  if (!evidence.length) return h("p", { class: "muted" }, "No evidence recorded for this version.");
  return evidence.sort((a, b) => b.id - a.id).map((e) => h("details", { class: "evidence", open: evidence.length === 1 },
    h("summary", {}, evidenceBadge(e), ` #${e.id} · ${when(e.recorded_at_ms)}${e.against_version ? ` · against v${e.against_version}` : ""} · suite ${e.suite_source || e.suite_digest.slice(0, 12)}`),
    h("table", {},
      h("thead", {}, h("tr", {}, ...["Check", "Result", "Detail"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, e.checks.map(checkRow)))));
}

function manifest(v) {
  return h("table", {},
    h("caption", {}, `Files (manifest ${v.manifest_digest.slice(0, 16)}…, ${size(v.total_size)})`),
    h("thead", {}, h("tr", {}, ...["Path", "Size", "SHA-256"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, v.files.map((f) => h("tr", {}, h("th", { scope: "row" }, f.path), h("td", { class: "num" }, size(f.size)), h("td", { class: "digest" }, f.sha256)))));
}

function figure(evidence, prefix) {
  for (const e of [...evidence].sort((a, b) => b.id - a.id)) {
    for (const c of e.checks) if (c.name.startsWith(prefix)) return c;
  }
  return null;
}

// Two versions side by side: what differs is marked.
function comparison(a, b) {
  const fa = new Map(a.version.files.map((f) => [f.path, f]));
  const fb = new Map(b.version.files.map((f) => [f.path, f]));
  const paths = [...new Set([...fa.keys(), ...fb.keys()])].sort();
  const fileRows = paths.map((p) => {
    const x = fa.get(p), y = fb.get(p);
    const same = x && y && x.sha256 === y.sha256;
    return h("tr", { class: same ? "" : "differs" },
      h("th", { scope: "row" }, p),
      h("td", {}, x ? `${size(x.size)} ${x.sha256.slice(0, 10)}` : "—"),
      h("td", {}, y ? `${size(y.size)} ${y.sha256.slice(0, 10)}` : "—"),
      h("td", {}, same ? "same" : "differs"));
  });
  const row = (label, f) => {
    const x = f(a), y = f(b);
    return h("tr", { class: x === y ? "" : "differs" }, h("th", { scope: "row" }, label), h("td", {}, x), h("td", {}, y), h("td", {}, x === y ? "same" : "differs"));
  };
  const latest = (s, prefix, key, unit) => {
    const c = figure(s.evidence, prefix);
    return c && c.figures[key] !== undefined && c.figures[key] !== null ? `${Number(c.figures[key]).toFixed(2)}${unit}` : "—";
  };
  const checks = (s) => {
    const e = [...s.evidence].filter((e) => e.kind !== "benchmark").sort((x, y) => y.id - x.id)[0];
    return e ? `${e.passed ? "passed" : "failed"} (${e.checks.filter((c) => c.passed).length}/${e.checks.length} checks)` : "none";
  };
  return h("table", { class: "compare" },
    h("caption", {}, `v${a.version.version} compared with v${b.version.version}`),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, ""), h("th", { scope: "col" }, `v${a.version.version}`), h("th", { scope: "col" }, `v${b.version.version}`), h("th", { scope: "col" }, ""))),
    h("tbody", {},
      row("Manifest", (s) => s.version.manifest_digest.slice(0, 16)),
      row("Size", (s) => size(s.version.total_size)),
      row("Task / framework", (s) => `${s.version.lineage?.task || "—"} / ${s.version.lineage?.framework || "—"}`),
      row("Parent", (s) => (s.version.lineage?.parent_version ? `v${s.version.lineage.parent_version}` : "—")),
      row("Signature", (s) => {
        const sig = s.version.metadata?.signature ?? s.version.metadata?.inputs;
        return sig === undefined ? "— (in the model's files)" : JSON.stringify(sig);
      }),
      row("Latest validation", checks),
      row("Benchmark calls/s", (s) => latest(s, "benchmark.throughput", "mean", "")),
      row("Benchmark p99", (s) => latest(s, "benchmark.throughput", "p99_us", " µs")),
      row("Validation p99", (s) => latest(s, "budget.latency", "p99_ms", " ms")),
      ...fileRows));
}

async function version(main, signal, name, v, query) {
  main.replaceChildren(h("h1", {}, `${name} v${v}`), h("p", { class: "loading" }, "Loading…"));
  const other = Number(query.get("compare")) || 0;
  try {
    const get = (n) => api(`/v1/registry/models/${encodeURIComponent(name)}/versions/${n}`);
    const [r, o] = await Promise.all([get(v), other ? get(other) : null]);
    if (signal.aborted) return;
    const ver = r.version;
    const pick = h("input", { id: "compare-with", type: "number", min: 1, value: other || Math.max(1, v - 1), inputmode: "numeric" });
    const form = h("form", { class: "filters", "aria-label": "Compare versions" },
      h("div", {}, h("label", { for: "compare-with" }, "Compare with version"), pick),
      h("button", { type: "submit" }, "Compare"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      location.hash = link("models", [name, String(v)], { compare: pick.value });
    });
    const lineage = ver.lineage
      ? h("dl", { class: "facts" }, Object.entries(ver.lineage).filter(([, x]) => x).flatMap(([k, x]) => [h("dt", {}, k.replace(/_/g, " ")), h("dd", {}, String(x))]))
      : h("p", { class: "muted" }, "No lineage recorded.");
    main.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: link("models") }, "Models"), " / ", h("a", { href: link("models", [name]) }, name), ` / v${v}`),
      h("h1", {}, `${name} v${v}`),
      h("p", {}, h("span", { class: `pill ${ver.status === "ready" ? "ok" : "warn"}` }, ver.status), " ", ver.aliases.map((a) => h("span", { class: "pill ok" }, a)), ` created ${when(ver.created_at_ms)}`),
      form,
      o ? h("section", { class: "panel" }, h("div", { class: "table-scroll" }, comparison(r, o))) : null,
      h("section", { class: "panel", "aria-labelledby": "ev-title" }, h("h2", { id: "ev-title" }, "Evidence"), evidenceList(r.evidence)),
      h("section", { class: "panel" }, h("h2", {}, "Lineage"), lineage),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, manifest(ver))),
      h("section", { class: "panel" }, h("h2", {}, "Metadata"), h("pre", {}, JSON.stringify(ver.metadata, null, 2))));
    say(`${name} v${v}${o ? ` compared with v${other}` : ""}`);
  } catch (e) {
    if (!signal.aborted) failed(main, `${name} v${v}`, e);
  }
}
