#!/usr/bin/env python3
"""Refuses module cycles inside each crate of the workspace.

A module that uses another (`crate::a::…`, `super::b::…`, `use crate::{a, …}`)
depends on it; the dependencies between the modules of one crate must form
no cycle, at every depth of the module tree (`a` ↔ `b`, `a::x` ↔ `a::y`,
…). Comments are ignored; a use of a module's own descendant or ancestor is
not a dependency. Prints each cycle with the edges that make it and exits 1,
or prints how many modules were checked and exits 0.

    scripts/module-cycles.py [REPO] [--depth N]
"""

import os
import re
import sys
from collections import defaultdict

ROOTS = ("services", "shared", "cli", "benches", "tests")


def crates(repo):
    """(name, src folder) of every crate under the workspace's roots."""
    for base in ROOTS:
        b = os.path.join(repo, base)
        if os.path.isdir(os.path.join(b, "src")):
            yield base, os.path.join(b, "src")
        if not os.path.isdir(b):
            continue
        for c in sorted(os.listdir(b)):
            src = os.path.join(b, c, "src")
            if os.path.isdir(src):
                yield f"{base}/{c}", src


def module_of(rel):
    """`a/b/mod.rs` → ['a', 'b']; `a/c.rs` → ['a', 'c']; `lib.rs` → []."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def sources(src):
    for folder, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                full = os.path.join(folder, f)
                yield full, os.path.relpath(full, src)


def uses(text, here):
    """Module paths `text` (of module `here`) refers to."""
    text = re.sub(r"//[^\n]*", "", text)
    # Unit tests may reach anywhere; they are not part of the layering.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    for m in re.finditer(r"(?<![\w:])crate::((?:\w+::)*\w+)", text):
        yield m.group(1).split("::")
    for m in re.finditer(r"(?<![\w:])((?:super::)+)((?:\w+::)*\w+)", text):
        ups = m.group(1).count("super::")
        yield here[: max(len(here) - ups, 0)] + m.group(2).split("::")
    for m in re.finditer(r"use (crate|(?:super::)+)(?:::)?\{([^;]*)\};", text, re.S):
        base = [] if m.group(1) == "crate" else here[: max(len(here) - m.group(1).count("super::"), 0)]
        for head in re.findall(r"(?:^|[,{]\s*)(\w+)(?:::(\w+))?", m.group(2)):
            yield base + [x for x in head if x]


def cycles(edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    repo = args[0] if args else os.path.join(os.path.dirname(__file__), "..")
    depth = 4
    if "--depth" in sys.argv:
        depth = int(sys.argv[sys.argv.index("--depth") + 1])
    found, checked = 0, 0
    for name, src in crates(repo):
        files = list(sources(src))
        modules = set()
        for _, rel in files:
            m = module_of(rel)
            for d in range(1, len(m) + 1):
                modules.add(tuple(m[:d]))
        checked += len(modules)

        def known(path):
            t = tuple(path)
            while t and t not in modules:
                t = t[:-1]
            return t

        seen = set()
        deepest = max((len(m) for m in modules), default=0)
        for d in range(1, min(depth, deepest) + 1):
            edges = defaultdict(set)
            for full, rel in files:
                here = module_of(rel)
                me = tuple(here[:d])
                if not me:
                    continue
                with open(full, encoding="utf-8") as f:
                    text = f.read()
                for path in uses(text, here):
                    to = known(path)[:d]
                    if not to or to == me or me[: len(to)] == to or to[: len(me)] == me:
                        continue
                    edges[me].add(to)
            for comp in cycles(edges):
                if frozenset(comp) in seen:
                    continue
                seen.add(frozenset(comp))
                found += 1
                names = ["::".join(c) for c in comp]
                print(f"{name}: module cycle {' <-> '.join(names)}")
                members = set(comp)
                for a in comp:
                    for b in sorted(edges[a]):
                        if b in members:
                            print(f"    {'::'.join(a)} uses {'::'.join(b)}")
    if found:
        print(f"{found} module cycle(s): break each by moving what both sides need into a module of its own")
        sys.exit(1)
    print(f"no module cycles ({checked} modules)")


if __name__ == "__main__":
    main()
