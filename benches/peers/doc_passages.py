#!/usr/bin/env python3
"""Turns documentation HTML into passages, one JSON object per line:
{"source", "page", "section", "heading", "text", "kind"}. Two layouts are
understood: Sphinx (Debian's python3.11-doc; the body is the element with
role="main", sections are <section id>) and DocBook (Debian's
postgresql-doc-15; the body is <body> minus the navigation, sections are
<div class="sect1|sect2|refsect1|..." id>).

A passage is the text of one block in a page's main body: a paragraph, a
list item, a definition's signature or body, a table cell's row, or a code
block. The section is the id of the nearest enclosing <section> (so a
passage can be pointed at by a URL fragment) and the heading its title.
Short blocks (fewer than --min-chars characters) are dropped: they are
mostly labels. Only the standard library is used.

A passage longer than --split-chars is split into sentences, so a long
paragraph becomes several retrievable units (code blocks are kept whole).

    doc_passages.py OUT.jsonl NAME=HTML_ROOT...
"""

import argparse
import html.parser
import json
import os
import re
import sys

BLOCKS = {"p", "li", "dt", "dd", "pre", "tr", "h1", "h2", "h3", "h4"}
HEADINGS = {"h1", "h2", "h3", "h4"}
SKIP = {"script", "style", "nav"}
DOCBOOK_SECTIONS = {"chapter", "sect1", "sect2", "sect3", "sect4", "refentry", "refsect1", "refsect2", "refsect3", "appendix", "part", "preface"}
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


class Page(html.parser.HTMLParser):
    def __init__(self, docbook):
        super().__init__(convert_charrefs=True)
        self.docbook = docbook
        self.in_body = 0  # depth inside <div role="main">, 0 outside
        self.skip = 0
        self.sections = []  # (id, heading) for each open <section>, with its depth
        self.stack = []  # open block tags, innermost last, with their buffers
        self.passages = []
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("br", "img", "hr", "meta", "link", "input", "wbr"):
            return
        self.depth += 1
        cls = a.get("class") or ""
        if not self.in_body:
            if (tag == "div" and a.get("role") == "main") or (tag == "body" and self.docbook):
                self.in_body = self.depth
            return
        if tag in SKIP or "headerlink" in cls or cls in ("navheader", "navfooter"):
            self.skip += 1
            self.stack.append(("#skip", self.depth, None))
            return
        if tag == "section" or (tag == "div" and cls in DOCBOOK_SECTIONS and a.get("id")):
            self.sections.append([a.get("id", ""), "", self.depth])
        if tag in BLOCKS:
            self.stack.append((tag, self.depth, []))

    def handle_endtag(self, tag):
        if tag in ("br", "img", "hr", "meta", "link", "input", "wbr"):
            return
        if self.in_body:
            while self.stack and self.stack[-1][1] >= self.depth:
                name, _, buf = self.stack.pop()
                if name == "#skip":
                    self.skip -= 1
                    continue
                text = re.sub(r"\s+", " ", "".join(buf)).strip()
                if name in HEADINGS:
                    if self.sections and not self.sections[-1][1]:
                        self.sections[-1][1] = text
                    continue
                # A block inside another block (a <p> in an <li>) is its
                # own passage; its text is not repeated in the outer one.
                if text:
                    sec = self.sections[-1] if self.sections else ["", "", 0]
                    self.passages.append({"section": sec[0], "heading": sec[1], "text": text, "kind": name})
            while self.sections and self.sections[-1][2] >= self.depth:
                self.sections.pop()
            if self.depth == self.in_body:
                self.in_body = 0
        self.depth -= 1

    def handle_data(self, data):
        if self.in_body and not self.skip and self.stack and self.stack[-1][2] is not None:
            self.stack[-1][2].append(data)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("roots", nargs="+", metavar="NAME=HTML_ROOT")
    p.add_argument("--min-chars", type=int, default=40)
    p.add_argument("--max-chars", type=int, default=2000)
    p.add_argument("--split-chars", type=int, default=300)
    args = p.parse_args()
    seen = set()
    n = 0
    with open(args.out + ".part", "w", encoding="utf-8") as out:
      for spec in args.roots:
        source, root = spec.split("=", 1)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(".html"):
                    continue
                path = os.path.join(dirpath, name)
                page = os.path.relpath(path, root)
                if page.startswith(("_", "genindex", "py-modindex", "search")):
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    html_text = f.read()
                parser = Page(docbook='role="main"' not in html_text)
                parser.feed(html_text)
                for psg in parser.passages:
                  whole = psg["text"][: args.max_chars]
                  parts = [whole] if psg["kind"] == "pre" or len(whole) <= args.split_chars else SENTENCE.split(whole)
                  for text in parts:
                    # Identical passages (boilerplate repeated across
                    # pages) would make two right answers for one query.
                    if len(text) < args.min_chars or text in seen:
                        continue
                    seen.add(text)
                    out.write(json.dumps({"source": source, "page": page, **psg, "text": text}, ensure_ascii=False) + "\n")
                    n += 1
    os.replace(args.out + ".part", args.out)
    print(f"{n} passages -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
