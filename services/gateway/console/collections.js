// Collections: every collection, its chunks paged by cursor with a filter
// on document metadata, search by text (by meaning, by words, or both
// fused; each hit says which retriever found it at what rank), "find
// similar" from any chunk, and the context a RAG query would hand to a
// language model.
"use strict";

import { h, api, post, say, notice, failed, link } from "./core.js";

function parseFilter(text) {
  const t = text.trim();
  if (!t) return null;
  // `key=value` is the common case; anything else is the JSON filter.
  const kv = t.match(/^([A-Za-z0-9_.-]+)\s*=\s*(.+)$/);
  if (kv) return { must: [{ key: kv[1], match: { value: kv[2] } }] };
  return JSON.parse(t);
}

const RETRIEVER = { dense: "meaning", sparse: "words" };

// "meaning #2 · words #1": the retrievers that found a hit and its rank in each.
function foundBy(x) {
  return (x.found_by || []).map((f) => `${RETRIEVER[f.retriever] || f.retriever} #${f.rank}`).join(" · ");
}

function hitRows(hits, onSimilar, scored) {
  return hits.map((x) => h("tr", {},
    scored ? h("td", { class: "num" }, x.score.toFixed(4)) : null,
    scored ? h("td", {}, foundBy(x)) : null,
    h("th", { scope: "row" }, x.document_id, h("span", { class: "muted" }, ` #${x.chunk_index}`)),
    h("td", { class: "text" }, x.text),
    h("td", {}, h("code", {}, JSON.stringify(x.metadata || {}))),
    h("td", {}, h("button", { type: "button", onclick: () => onSimilar(x) }, "Find similar"))));
}

function hitTable(caption, hits, onSimilar, scored) {
  const cols = [...(scored ? ["Score", "Found by"] : []), "Document", "Text", "Metadata", ""];
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, ...cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, hits.length ? hitRows(hits, onSimilar, scored) : h("tr", {}, h("td", { colspan: cols.length, class: "muted" }, "Nothing found."))));
}

// A collection made without a text index gains one in place, from the
// chunks' stored text (nothing is embedded again).
function textIndexButton(name, reload) {
  const b = h("button", { type: "button", "aria-label": `Add a text index to ${name}` }, "none — add one");
  b.addEventListener("click", async () => {
    b.disabled = true;
    b.textContent = "Indexing…";
    try {
      const r = await post(`/v1/collections/${encodeURIComponent(name)}/text-index`, {});
      await reload();
      say(`${name}: ${r.chunks_indexed} chunks indexed by their words`);
    } catch (e) {
      b.replaceWith(notice("error", `Adding a text index failed: ${e.message}`));
    }
  });
  return b;
}

export async function collections(main, signal, route) {
  const name = route.parts[0];
  if (name) return collection(main, signal, name, route.query);
  main.replaceChildren(h("h1", {}, "Collections"), h("p", { class: "loading" }, "Loading…"));
  try {
    const r = await api("/v1/collections");
    if (signal.aborted) return;
    const rows = r.collections.map((c) => h("tr", {},
      h("th", { scope: "row" }, h("a", { href: link("collections", [c.name]) }, c.name)),
      h("td", {}, c.model),
      h("td", { class: "num" }, c.dimension),
      h("td", {}, c.distance),
      h("td", { class: "num" }, c.chunks_count ?? "—"),
      h("td", {}, c.chunking ? `${c.chunking.size} ${c.chunking.unit}, overlap ${c.chunking.overlap}` : "—"),
      h("td", {}, c.text_index === "bm25" ? "BM25" : textIndexButton(c.name, () => collections(main, signal, route)))));
    main.replaceChildren(h("h1", {}, "Collections"),
      h("section", { class: "panel" }, h("div", { class: "table-scroll" }, h("table", {},
        h("caption", {}, "Collections"),
        h("thead", {}, h("tr", {}, ...["Name", "Model", "Dimension", "Distance", "Chunks", "Chunking", "Text index"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No collections yet.")))))));
    say(`${r.collections.length} collections`);
  } catch (e) {
    if (!signal.aborted) failed(main, "Collections", e);
  }
}

function collection(main, signal, name, query) {
  const base = `/v1/collections/${encodeURIComponent(name)}`;
  const results = h("div", { id: "results", "aria-live": "polite" });
  const q = h("input", { id: "search-text", type: "search", required: true, value: query.get("q") || "", placeholder: "What are you looking for?", autocomplete: "off" });
  const k = h("input", { id: "search-k", type: "number", min: 1, max: 100, value: 5 });
  const filter = h("input", { id: "search-filter", value: query.get("filter") || "", placeholder: "lang=en, or a JSON filter", autocomplete: "off" });
  const mode = h("select", { id: "search-mode" },
    h("option", { value: "" }, "Meaning and words (hybrid)"),
    h("option", { value: "dense" }, "Meaning (dense)"),
    h("option", { value: "sparse" }, "Words (BM25)"));
  mode.value = query.get("mode") || "";
  const similar = (x) => { q.value = x.text; runSearch(); };
  const runSearch = async () => {
    results.replaceChildren(notice("info", "Searching…"));
    try {
      const body = { query: q.value, limit: Number(k.value) || 5 };
      const f = parseFilter(filter.value);
      if (f) body.filter = f;
      if (mode.value) body.mode = mode.value;
      const [s, rag] = await Promise.all([
        post(`${base}/search`, body),
        post("/v1/rag/query", { collection: name, query: q.value, top_k: body.limit, ...(f ? { filter: f } : {}), ...(mode.value ? { mode: mode.value } : {}), max_context_chars: 2000 }).catch((e) => ({ error: e.message })),
      ]);
      results.replaceChildren(
        h("p", { class: "muted" }, `embedded in ${(s.timings.embed_us / 1000).toFixed(1)} ms, searched in ${(s.timings.search_us / 1000).toFixed(1)} ms`),
        h("div", { class: "table-scroll" }, hitTable(`Best matches for “${q.value}”`, s.hits, similar, true)),
        h("details", { class: "rag" }, h("summary", {}, "RAG context preview (what a language model would be given)"),
          rag.error ? notice("error", rag.error) : h("pre", {}, rag.context ?? JSON.stringify(rag, null, 2))));
    } catch (e) {
      results.replaceChildren(notice("error", `Search failed: ${e.message}`));
    }
  };
  const form = h("form", { class: "filters", role: "search", "aria-label": `Search ${name} by text` },
    h("div", { class: "wide" }, h("label", { for: "search-text" }, "Search by text"), q),
    h("div", {}, h("label", { for: "search-k" }, "Results"), k),
    h("div", {}, h("label", { for: "search-mode" }, "Match by"), mode),
    h("div", {}, h("label", { for: "search-filter" }, "Metadata filter"), filter),
    h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", (e) => { e.preventDefault(); runSearch(); });

  // Points browser: pages by cursor; earlier cursors kept for "Previous".
  const browser = h("div", { id: "browser" });
  const cursors = [null];
  const page = async (i) => {
    browser.replaceChildren(notice("info", "Loading chunks…"));
    try {
      const body = { limit: 20 };
      if (cursors[i]) body.offset = cursors[i];
      const f = parseFilter(filter.value);
      if (f) body.filter = f;
      const r = await post(`${base}/browse`, body);
      if (signal.aborted) return;
      cursors[i + 1] = r.next;
      browser.replaceChildren(
        h("div", { class: "table-scroll" }, hitTable(`Chunks, page ${i + 1}`, r.chunks, similar, false)),
        h("nav", { class: "pager", "aria-label": "Chunk pages" },
          i > 0 ? h("button", { type: "button", onclick: () => page(i - 1) }, "Previous") : null,
          r.next ? h("button", { type: "button", onclick: () => page(i + 1) }, "Next") : null));
    } catch (e) {
      browser.replaceChildren(notice("error", `Browsing failed: ${e.message}`));
    }
  };
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: link("collections") }, "Collections"), ` / ${name}`),
    h("h1", {}, name),
    form,
    results,
    h("section", { class: "panel", "aria-labelledby": "browse-title" }, h("h2", { id: "browse-title" }, "Chunks"), browser));
  page(0);
  if (q.value) runSearch();
  say(name);
}
