#!/usr/bin/env python3
"""Fails when a source file calls into a layer above its own, or when
source files call each other in a circle.

The layers come from one table (tests/layers.txt: LAYER DIRECTORY...,
bottom up). Calls are read from the built objects, not from the sources:
`nm` of every object compiled from a listed directory tells which global
symbols each file defines and which it uses, so a call through a macro or
a header counts as much as a plain one.

    check-layers.py [--srcdir DIR] [--builddir DIR] [--table FILE]
    check-layers.py --self-test        (only the checker's own test)
    check-layers.py --no-self-test     (only the check)

Without either, as in `make check`, the self-test runs first.

Exit status: 0 clean, 1 violations (each printed as
`caller.c -> callee.c  symbol`), 2 usage or build problem.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

UNDEFINED = set("Uwv")


def read_table(path):
    """[(layer, [dirs])] in file order, bottom layer first."""
    layers = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].split()
            if not line:
                continue
            if len(line) < 2:
                raise SystemExit(f"{path}:{n}: want LAYER DIRECTORY...")
            layers.append((line[0], [d.rstrip("/") for d in line[1:]]))
    return layers


def source_of(obj, srcdir, rel_dir):
    """The source file an automake object was compiled from: objects of
    targets with their own flags are named TARGET-STEM.o (the canonical
    target name has no '-'), the others STEM.o."""
    stem = os.path.basename(obj)[:-2]
    if "-" in stem:
        tail = stem.split("-", 1)[1]
        if os.path.exists(os.path.join(srcdir, rel_dir, tail + ".c")):
            return os.path.join(rel_dir, tail + ".c"), stem.split("-", 1)[0]
    return os.path.join(rel_dir, stem + ".c"), ""


def symbols(nm, obj):
    out = subprocess.run([nm, "-P", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, used = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind in UNDEFINED:
            used.add(name)
        elif kind.isupper():  # global definition (T, D, B, R, W, V, C...)
            defined.add(name)
    return defined, used


def collect(layers, srcdir, builddir, nm):
    """files: {source: {"layer": i, "unit": set, "def": set, "use": set}}"""
    files = {}
    problems = []
    for rank, (layer, dirs) in enumerate(layers):
        for d in dirs:
            found = False
            for sub in (d, os.path.join(d, ".libs")):
                full = os.path.join(builddir, sub)
                if not os.path.isdir(full):
                    continue
                for name in sorted(os.listdir(full)):
                    if not name.endswith(".o"):
                        continue
                    src, unit = source_of(name, srcdir, d)
                    # An object left behind by a source since removed.
                    if not os.path.exists(os.path.join(srcdir, src)):
                        continue
                    found = True
                    f = files.setdefault(src, {"layer": rank, "unit": set(),
                                               "def": set(), "use": set()})
                    f["unit"].add(unit)
                    dfn, use = symbols(nm, os.path.join(full, name))
                    f["def"] |= dfn
                    f["use"] |= use
            if not found:
                problems.append(f"no objects under {os.path.join(builddir, d)}"
                                " (build first)")
    return files, problems


def edges_of(files):
    """{(caller, callee): sorted symbols}. A symbol defined in the caller's
    own link unit (same automake target) resolves there; otherwise to every
    listed file that defines it."""
    definers = {}
    for src, f in files.items():
        for s in f["def"]:
            definers.setdefault(s, []).append(src)
    edges = {}
    for src, f in files.items():
        for s in f["use"] - f["def"]:
            cands = definers.get(s, [])
            same = [c for c in cands if files[c]["unit"] & f["unit"]]
            for c in same or cands:
                if c != src:
                    edges.setdefault((src, c), []).append(s)
    return {k: sorted(v) for k, v in edges.items()}


def circles(nodes, edges):
    """Strongly connected components with more than one file (Tarjan)."""
    succ = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        # Iterative, so a long chain cannot hit Python's recursion limit.
        work = [(v, iter(sorted(succ[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(succ[w]))))
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return out


def sources_order(srcdir, layers):
    """The library's file list in src/lib/local.mk must read bottom up."""
    mk = os.path.join(srcdir, "src/lib/local.mk")
    if not os.path.exists(mk):
        return []
    text = open(mk, encoding="utf-8").read()
    m = re.search(r"libhsmwrap_la_SOURCES\s*=((?:.*\\\n)*.*)", text)
    if not m:
        return []
    rank_of = {}
    for rank, (_, dirs) in enumerate(layers):
        for d in dirs:
            rank_of[d] = rank
    problems, top, top_file = [], -1, None
    for f in m.group(1).replace("\\\n", " ").split():
        if not f.endswith(".c"):
            continue
        r = rank_of.get(os.path.dirname(f))
        if r is None:
            problems.append(f"src/lib/local.mk: {f} is in no layer of the table")
            continue
        if r < top:
            problems.append(f"src/lib/local.mk: {f} ({layers[r][0]}) is listed "
                            f"after {top_file} ({layers[top][0]})")
        else:
            top, top_file = r, f
    return problems


def check(table, srcdir, builddir, nm="nm", out=sys.stdout):
    layers = read_table(table)
    files, problems = collect(layers, srcdir, builddir, nm)
    if problems:
        for p in problems:
            print(f"check-layers: {p}", file=out)
        return 2
    edges = edges_of(files)
    bad = sources_order(srcdir, layers)
    for (a, b), syms in sorted(edges.items()):
        la, lb = files[a]["layer"], files[b]["layer"]
        if lb > la:
            bad.append(f"upward call {a} ({layers[la][0]}) -> {b} "
                       f"({layers[lb][0]})  {' '.join(syms)}")
    for comp in circles(files.keys(), edges.keys()):
        bad.append("circle: " + " ".join(comp))
        members = set(comp)
        for (a, b), syms in sorted(edges.items()):
            if a in members and b in members:
                bad.append(f"  {a} -> {b}  {' '.join(syms)}")
    for line in bad:
        print(line, file=out)
    n_edges = len(edges)
    print(f"check-layers: {len(files)} files, {n_edges} file-to-file calls, "
          f"{len(layers)} layers: " + ("FAILED" if bad else "ok"), file=out)
    return 1 if bad else 0


SELF_TEST_FILES = {
    # a (low) <- b (high); c and d in the high layer call each other.
    "low/a.c": "int a1(void) { return 1; }\n",
    "high/b.c": "int a1(void); int b1(void) { return a1(); }\n",
    "high/c.c": "int d1(void); int c1(void) { return d1(); }\n",
    "high/d.c": "int c1(void); int d1(void) { return 0; }\n"
                "int d2(void) { return c1(); }\n",
}


def self_test():
    """The checker must see a circle, an upward call and accept a clean
    tree, on a tiny tree compiled here."""
    cc = os.environ.get("CC", "cc").split()[0]
    if not shutil.which(cc):
        print(f"check-layers --self-test: no compiler {cc}")
        return 77
    import io
    tmp = tempfile.mkdtemp(prefix="check-layers-")
    try:
        def build(files):
            for rel, text in files.items():
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as f:
                    f.write(text)
                subprocess.run([cc, "-c", "-o", path[:-2] + ".o", path],
                               check=True)

        def run(table_text):
            table = os.path.join(tmp, "layers.txt")
            with open(table, "w") as f:
                f.write(table_text)
            buf = io.StringIO()
            rc = check(table, tmp, tmp, out=buf)
            return rc, buf.getvalue()

        failures = []

        def expect(what, got_rc, want_rc, text, needles):
            if got_rc != want_rc or not all(n in text for n in needles):
                failures.append(f"{what}: rc {got_rc} (want {want_rc}), "
                                f"output:\n{text}")

        build(SELF_TEST_FILES)
        rc, text = run("low low\nhigh high\n")
        expect("circle", rc, 1, text,
               ["circle: high/c.c high/d.c", "high/c.c -> high/d.c  d1",
                "high/d.c -> high/c.c  c1"])
        rc, text = run("high high\nlow low\n")
        expect("upward", rc, 1, text,
               ["upward call high/b.c (high) -> low/a.c (low)  a1"])

        clean = dict(SELF_TEST_FILES)
        clean["high/d.c"] = "int d1(void) { return 0; }\n"
        os.remove(os.path.join(tmp, "high/d.o"))
        build(clean)
        rc, text = run("low low\nhigh high\n")
        expect("clean", rc, 0, text, ["ok"])
        rc, text = run("low low\nhigh high\nmissing nowhere\n")
        expect("missing objects", rc, 2, text, ["no objects"])

        for f in failures:
            print("check-layers --self-test FAILED: " + f)
        if not failures:
            print("check-layers --self-test: ok (circle, upward call, clean "
                  "tree, missing build)")
        return 1 if failures else 0
    finally:
        shutil.rmtree(tmp)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--srcdir", default=os.path.dirname(here))
    p.add_argument("--builddir", default=".")
    p.add_argument("--table")
    p.add_argument("--nm", default=os.environ.get("NM", "nm"))
    p.add_argument("--self-test", action="store_true")
    p.add_argument("--no-self-test", action="store_true")
    a = p.parse_args()
    if a.self_test or not a.no_self_test:
        rc = self_test()
        if a.self_test or rc not in (0, 77):
            return rc
    table = a.table or os.path.join(a.srcdir, "tests/layers.txt")
    return check(table, a.srcdir, a.builddir, a.nm)


if __name__ == "__main__":
    sys.exit(main())
