"""The import graph of ``PancreasRSTN/``: its layers, the arrows between them, and the check that none runs up.

Every import counts, also one inside a function: a lazy import still ties the modules together. The layers are
declared below, lowest first; a module may import its own layer and any lower one, never a higher one, and no
two modules may import each other, directly or round a circle. ``Testing/test_import_graph.py`` runs the check
and compares the diagram in ``docs/ARCHITECTURE.md`` with ``diagram()``, so neither can go stale.

    python scripts/import_graph.py            # print the diagram and any problem (exit 1 if there is one)
    python scripts/import_graph.py --write    # put the diagram into docs/ARCHITECTURE.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "PancreasRSTN"
DOC = ROOT / "docs" / "ARCHITECTURE.md"
BEGIN, END = "<!-- import-graph: begin (scripts/import_graph.py --write) -->", "<!-- import-graph: end -->"

#: (layer, what it holds), lowest first. A module belongs to the longest layer name its own name starts with.
LAYERS: tuple[tuple[str, str], ...] = (
    ("PancreasRSTNLib", "ground floor: errors, views, organs, devices, distributed, overlap, progress, phantom"),
    ("PancreasRSTNLib.models", "the networks and the HU window a package carries"),
    ("PancreasRSTNLib.io", "files in and out, model packages"),
    ("PancreasRSTNLib.engine", "inference on a canonical volume, and on an image (segmentation)"),
    ("PancreasRSTNLib.training", "from data to a model package"),
    ("PancreasRSTNLib.evaluation", "measuring"),
    ("PancreasRSTNLib.app", "the command line, demo, cohorts"),
    ("PancreasRSTNSlicerLib", "MRML <-> core, no Qt"),
    ("PancreasRSTNPanel", "the panel's Qt sections"),
    ("PancreasRSTN", "the Slicer module"),
)
#: Modules that sit above the package they live in: ``python -m PancreasRSTNLib`` starts the command line.
PLACED = {"PancreasRSTNLib.__main__": "PancreasRSTNLib.app"}


def module_names() -> dict[str, Path]:
    """Every first-party module under ``PancreasRSTN/``, by its import name."""
    names = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE).with_suffix("").parts
        if parts[0] not in {name for name, _ in LAYERS}:
            continue  # build outputs and the like
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def module_graph() -> dict[str, set[str]]:
    """module -> the first-party modules it imports (``from package import module`` names the module)."""
    names = module_names()
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                is_package = path.name == "__init__.py"
                targets.update(t for t in _imported(node, module, is_package) if t in names and t != module)
        graph[module] = targets
    return graph


def dangling_imports() -> list[str]:
    """First-party imports that name no module (a lazy import left behind by a move fails only when it runs)."""
    names = module_names()
    tops = {name for name, _ in LAYERS}
    found = []
    for module, path in names.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                base, *_ = _imported(node, module, path.name == "__init__.py")
                bases = [a.name for a in node.names] if isinstance(node, ast.Import) else [base]
                found += [f"{module} -> {b}" for b in bases if b.split(".")[0] in tops and b not in names]
    return sorted(found)


def layer_of(module: str) -> str:
    """The declared layer a module belongs to."""
    if module in PLACED:
        return PLACED[module]
    matches = [name for name, _ in LAYERS if module == name or module.startswith(name + ".")]
    return max(matches, key=len)


def layer_arrows(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """(from layer, to layer) -> the module imports that make the arrow."""
    arrows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = layer_of(module), layer_of(target)
            if a != b:
                arrows[(a, b)].append(f"{module} -> {target}")
    return arrows


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    """Imports from a lower layer into a higher one."""
    rank = {name: i for i, (name, _) in enumerate(LAYERS)}
    return [line for (a, b), lines in sorted(layer_arrows(graph).items()) if rank[a] < rank[b] for line in lines]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles among modules (strongly connected components of two or more), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def diagram(graph: dict[str, set[str]] | None = None) -> str:
    """The layers, highest first, each with the lower layers it imports (``Lib`` = ``PancreasRSTNLib``)."""
    graph = module_graph() if graph is None else graph
    arrows = layer_arrows(graph)

    def short(name: str) -> str:
        return name.replace("PancreasRSTNLib", "Lib")

    width = max(len(short(name)) for name, _ in LAYERS)
    lines = []
    for name, what in reversed(LAYERS):
        targets = [short(b) for b, _ in reversed(LAYERS) if (name, b) in arrows]
        lines.append(f"{short(name):<{width}}  {what}")
        lines.append(f"{'':<{width}}    imports {', '.join(targets) if targets else 'nothing of ours'}")
    return "\n".join(lines) + "\n"


def documented() -> str:
    """The diagram as ``docs/ARCHITECTURE.md`` holds it."""
    text = DOC.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n").removeprefix("```text\n")[:-3]


def write_doc(text: str) -> None:
    """Replace the diagram block of ``docs/ARCHITECTURE.md``."""
    doc = DOC.read_text(encoding="utf-8")
    head, tail = doc[:doc.index(BEGIN) + len(BEGIN)], doc[doc.index(END):]
    DOC.write_text(f"{head}\n```text\n{text}```\n{tail}", encoding="utf-8")


def main() -> int:
    """Print the diagram and the problems; ``--write`` updates the docs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="put the diagram into docs/ARCHITECTURE.md")
    args = parser.parse_args()
    graph = module_graph()
    text = diagram(graph)
    if args.write:
        write_doc(text)
    print(text, end="")
    problems = [f"upward: {line}" for line in upward_arrows(graph)]
    problems += [f"cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    problems += [f"no such module: {line}" for line in dangling_imports()]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
