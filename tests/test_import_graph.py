"""The package's import graph, read from the source (ast): no cycles, and imports point one way.

Lazy imports inside functions count: a cycle hidden in a function still ties two modules together
for a reader. Imports under ``if TYPE_CHECKING:`` do not (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "smctune"

# A package may import the packages listed for it (and itself); the design card's direction:
# cli -> sweep/report -> train/tracking/rundir -> config/catalog/pruning.
LAYERS = {
    "errors": set(), "units": set(), "gc_pause": set(),
    "pruning": set(),
    "catalog": {"pruning"},
    "config": {"catalog"},
    "rundir": {"config", "catalog", "pruning"},
    "train": {"config", "catalog", "pruning", "rundir"},
    "tracking": {"config", "catalog", "rundir"},
    "report": {"config", "catalog", "rundir", "tracking"},
    "sweep": {"config", "catalog", "pruning", "rundir", "train", "tracking", "report"},
    "cli": {"config", "catalog", "rundir", "sweep", "report", "tracking", "train"},
}
SHARED = {"errors", "units", "gc_pause"}   # small leaf modules every layer may use


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports_of(path: Path, modules: set) -> set:
    """The smctune modules ``path`` imports (``from pkg import mod`` resolved to the module)."""
    name = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_lines(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != "smctune":
                found.add(target)
    return found


def import_graph() -> dict:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) for f in files}


def cycles(graph: dict) -> list:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(root):
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]; counter[0] += 1
                    stack.append(child); on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop(); on_stack.discard(member); component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_point_one_way():
    wrong = []
    for module, targets in import_graph().items():
        layer = _layer(module)
        if layer not in LAYERS:
            continue
        for target in targets:
            other = _layer(target)
            if other == layer or other in SHARED or other not in LAYERS:
                continue
            if other not in LAYERS[layer]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_every_module_is_in_a_known_package():
    loose = sorted(m for m in import_graph() if _layer(m) not in LAYERS and m != "smctune")
    assert not loose, f"modules outside the layered packages: {loose}"
