"""Reads one crate's `cargo modules dependencies` graph (Graphviz) and checks its layers.

Every item is placed in the file that defines it (the longest prefix of its path that is a file
of the crate's source folder), every "uses" edge becomes an edge between two files, and then:
  - no strongly connected set of files spans two folders (files of one folder may lean on each
    other; folders may not);
  - in the kiln crate, no file imports from a layer above its own (LAYERS, lowest first).
"""
import collections
import os
import re
import sys

# The kiln crate's top-level modules, lowest layer first (docs/architecture.md draws them).
LAYERS = [
    # What everything reads: the crate root (BoxFuture, the wire's re-exports), results as
    # stored, entry points, metrics.
    {"", "result", "entry_point", "metrics"},
    # The submission and what it names.
    {"languages", "submission", "events", "judge0", "callback", "compile_cache", "sessions"},
    # The two seams: where submissions wait, where they run.
    {"queue", "pods"},
    # Settings of the seams, and what lays caches into pods.
    {"config", "warm"},
    {"actors"},
    {"api"},
    {"commands"},
]


def main():
    dot_path, src, crate = sys.argv[1:4]
    show_edges = "--edges" in sys.argv[4:]
    dot = open(dot_path).read()

    def file_of(path):
        parts = path.split("::")[1:]
        while parts:
            p = os.path.join(src, *parts)
            if os.path.isfile(p + ".rs") or os.path.isfile(os.path.join(p, "mod.rs")):
                break
            parts = parts[:-1]
        return "::".join([crate] + parts)

    def folder_of(f):
        parts = f.split("::")[1:]
        p = os.path.join(src, *parts)
        return f if parts and os.path.isdir(p) else "::".join([crate] + parts[:-1])

    edges = collections.defaultdict(set)
    for a, b in re.findall(r'^\s+"([^"]+)" -> "([^"]+)" \[label="uses"', dot, re.M):
        fa, fb = file_of(a), file_of(b)
        if fa != fb:
            edges[fa].add(fb)
    if show_edges:
        for a in sorted(edges):
            print(f"{a} -> {' '.join(sorted(edges[a]))}")

    breaches = []
    for scc in strongly_connected(edges):
        folders = {folder_of(f) for f in scc}
        if len(folders) > 1:
            breaches.append(
                f"a circle between folders {', '.join(sorted(folders))}: files {', '.join(sorted(scc))}"
            )
    if crate == "kiln":
        layer = {}
        for i, names in enumerate(LAYERS):
            for n in names:
                layer[n] = i
        top = lambda f: (f.split("::") + [""])[1]
        for a in sorted(edges):
            for b in sorted(edges[a]):
                la, lb = layer.get(top(a)), layer.get(top(b))
                if la is None or lb is None:
                    missing = top(a) if la is None else top(b)
                    breaches.append(f"module {missing!r} is in no layer of scripts/module-graph.py")
                elif lb > la:
                    breaches.append(f"{a} (layer {la}) imports from {b} (layer {lb}), above it")
    for b in sorted(set(breaches)):
        print(f"scripts/module-graph: {crate}: {b}", file=sys.stderr)
    files = set(edges) | {b for bs in edges.values() for b in bs}
    print(f"scripts/module-graph: {crate}: {len(files)} files, "
          f"{sum(len(b) for b in edges.values())} edges between them, "
          f"{len(set(breaches))} breaches")
    sys.exit(1 if breaches else 0)


def strongly_connected(edges):
    """Tarjan's algorithm, iteratively; yields the sets of more than one file."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    nodes = set(edges) | {b for bs in edges.values() for b in bs}
    counter = [0]
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = set()
                while True:
                    n = stack.pop()
                    on_stack.discard(n)
                    scc.add(n)
                    if n == node:
                        break
                if len(scc) > 1:
                    out.append(scc)
    return out


if __name__ == "__main__":
    main()
