#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle.

Reads every `use crate::...`, `use super::...` and `crate::a::b` path in scaler/src and builds
two graphs:
  - stages: the crate's top-level modules (`model`, `source`, `signals`, ...);
  - inside each folder: its files, apart from the folder's own mod.rs (its face, which children
    may use and which declares them).
Prints the stages in import order (each imports only stages above it) and exits 1 on a cycle,
naming the files and paths that close it.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scaler", "src")
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)::\{([^;]*)\}", re.S)


def module_of(rel):
    """scaler/src relative file path -> module path list, e.g. signals/mod.rs -> ['signals']."""
    parts = rel[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def files():
    for dirpath, _, names in os.walk(ROOT):
        for n in names:
            if n.endswith(".rs"):
                full = os.path.join(dirpath, n)
                yield os.path.relpath(full, ROOT), full


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def main():
    modules = {}
    for rel, full in files():
        modules[tuple(module_of(rel))] = rel
    known = set(modules)

    def resolve(path):
        """The longest known module prefix of `path`."""
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in known:
                return tuple(path[:n])
        return None

    edges = defaultdict(set)  # file -> {(file, path text)}
    for rel, full in files():
        if os.path.basename(rel) == "main.rs" and os.path.dirname(rel) == "":
            continue  # the binary is not part of the library's layering
        here = module_of(rel)
        is_face = os.path.basename(rel) == "mod.rs"
        text = strip_comments(open(full, encoding="utf-8").read())
        # Test modules may reach anywhere they need; they are not part of the data path.
        cut = text.find("#[cfg(test)]")
        if cut >= 0:
            text = text[:cut]
        paths = []
        for m in PATH.finditer(text):
            paths.append((m.group(1), m.group(2)[2:].split("::")))
        for m in USE_GROUP.finditer(text):
            for item in re.split(r",\s*(?![^{]*\})", m.group(2)):
                head = re.split(r"::|\{", item.strip())[0].strip()
                if head and head != "self":
                    paths.append((m.group(1), [head]))
        for root, segs in paths:
            if root == "crate":
                target = resolve(segs)
            else:
                base = here if is_face else here[:-1]
                ups = 1
                while segs and segs[0] == "super":
                    ups += 1
                    segs = segs[1:]
                base = (here if is_face else here[:-1])[: len(base) - (ups - 1)] if ups > 1 else base
                target = resolve(list(base) + segs)
            if target is None or modules.get(target) == rel:
                continue
            edges[rel].add((modules[target], "::".join([root] + segs)))

    failed = False

    def find_cycle(graph):
        state, stack = {}, []

        def visit(n):
            state[n] = 1
            stack.append(n)
            for m in sorted(graph.get(n, ())):
                if state.get(m) == 1:
                    return stack[stack.index(m):] + [m]
                if m not in state:
                    found = visit(m)
                    if found:
                        return found
            stack.pop()
            state[n] = 2
            return None

        for n in sorted(graph):
            if n not in state:
                found = visit(n)
                if found:
                    return found
        return None

    def stage(rel):
        return module_of(rel)[0] if module_of(rel) else "lib"

    # 1. Stages.
    stages = defaultdict(set)
    why = {}
    for src, targets in edges.items():
        for dst, text in targets:
            a, b = stage(src), stage(dst)
            if a != b and a != "lib" and b != "lib":
                stages[a].add(b)
                why.setdefault((a, b), f"{src} uses {text}")
    cycle = find_cycle(stages)
    if cycle:
        failed = True
        print("import cycle between stages: " + " -> ".join(cycle), file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            print(f"  {a} -> {b}: {why[(a, b)]}", file=sys.stderr)

    # 2. Files inside each folder, the folder's mod.rs aside.
    folders = defaultdict(lambda: defaultdict(set))
    fwhy = {}
    for src, targets in edges.items():
        for dst, text in targets:
            if os.path.dirname(src) == os.path.dirname(dst) and os.path.dirname(src):
                if os.path.basename(src) == "mod.rs" or os.path.basename(dst) == "mod.rs":
                    continue
                folders[os.path.dirname(src)][src].add(dst)
                fwhy.setdefault((src, dst), text)
    for folder, graph in sorted(folders.items()):
        cycle = find_cycle(graph)
        if cycle:
            failed = True
            print(f"import cycle inside {folder}/: " + " -> ".join(cycle), file=sys.stderr)
            for a, b in zip(cycle, cycle[1:]):
                print(f"  {a} uses {fwhy[(a, b)]}", file=sys.stderr)

    if failed:
        return 1
    # Stages from the ground up: each imports only stages listed before it.
    order, placed = [], set()
    names = sorted({stage(r) for r in modules.values()} - {"lib"})
    while len(placed) < len(names):
        ready = [n for n in names if n not in placed and stages[n] <= placed]
        order.extend(ready)
        placed.update(ready)
    print("stages, each importing only those before it: " + " < ".join(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())
