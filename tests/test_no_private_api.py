"""smctune and the trainables use only the public APIs of Ray, Optuna and MLflow.

Private names (``ray._private``, ``study._storage``, ``worker._global_node``, Ray's internal
``RAY_raylet_*`` flags) change without notice between releases, and a sweep that relies on them
breaks on an upgrade in ways no test of ours sees until a user runs it (issue 17). The check is
static, so it also covers code paths the other tests never execute: every ``.py`` file is parsed
with ``ast`` and nothing is imported.

What counts as reaching into a library: a module path with a private segment, a private name
imported from one of the libraries, a private attribute (or ``getattr`` of one, or a private keyword
argument such as ``_system_config``) on a name bound to a library module or to a value derived from
one (``study = optuna.create_study(...)``, ``for t in study.trials``, a parameter annotated with a
library type), and in string literals a private dotted path (for ``importlib``) or an internal Ray
environment key. Some private attributes are flagged on any object, because the value they come from
is not always visible statically (a callback's argument): ``ALWAYS_PRIVATE``. Private attributes of
``self`` are the class's own business and are not flagged.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED_DIRS = ("smctune", "trainables")
LIBRARIES = frozenset({"ray", "optuna", "mlflow"})
ALWAYS_PRIVATE = frozenset({"_storage", "_trial_id", "_global_node"})
OWN = frozenset({"self", "cls"})
REFLECTION = frozenset({"getattr", "setattr", "hasattr", "delattr"})
PRIVATE_PATH = re.compile(r"(?:ray|optuna|mlflow)(?:\.\w+)*\._(?!_)\w*(?:\.\w+)*")
INTERNAL_RAY_ENV = re.compile(r"RAY_(?:raylet|prestart)")
SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def private_uses(source: str, filename: str = "<snippet>") -> list[str]:
    """``"line: what"`` for every use of a private name of the libraries in ``source``."""
    checker = _Checker()
    checker.scope(ast.parse(source, filename), frozenset())
    return [f"{line}: {what}" for line, what in sorted(set(checker.findings))]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(dotted: str) -> bool:
    return dotted.split(".")[0] in LIBRARIES


def _names(target: ast.AST):
    """The names an assignment target binds (``a``, ``a, (b, *c)``); attributes and items bind none."""
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _names(element)
    elif isinstance(target, ast.Starred):
        yield from _names(target.value)


def _own_nodes(scope: ast.AST):
    """The nodes evaluated in ``scope`` itself: nested functions and classes are left to their own
    scope, except for what Python evaluates where they are defined (decorators, defaults, bases)."""
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        pending = list(scope.body) if isinstance(scope.body, list) else [scope.body]
    else:
        pending = list(scope.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            pending.extend(node.args.defaults)
            pending.extend(d for d in node.args.kw_defaults if d is not None)
            pending.extend(getattr(node, "decorator_list", ()))
        elif isinstance(node, ast.ClassDef):
            pending.extend(node.bases)
            pending.extend(node.keywords)
            pending.extend(node.decorator_list)
        else:
            pending.extend(ast.iter_child_nodes(node))


class _Checker:
    def __init__(self):
        self.findings: list[tuple[int, str]] = []

    def scope(self, scope: ast.AST, inherited: frozenset) -> None:
        nodes = list(_own_nodes(scope))
        tainted = set(inherited)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = scope.args
            for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
                if arg.annotation is not None and self.derived(arg.annotation, tainted):
                    tainted.add(arg.arg)
        while True:   # a value derived from a derived value: iterate to the fixed point
            grown = {name for node in nodes for name in self.bindings(node, tainted)} - tainted
            if not grown:
                break
            tainted |= grown
        for node in nodes:
            self.check(node, tainted)
            if isinstance(node, SCOPES):
                self.scope(node, frozenset(tainted))

    def derived(self, node: ast.AST, tainted: set) -> bool:
        """Whether ``node`` evaluates to a library module or something one returned."""
        if isinstance(node, ast.Name):
            return node.id in tainted
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred, ast.Await)):
            return self.derived(node.value, tainted)
        if isinstance(node, ast.Call):
            return self.derived(node.func, tainted)
        if isinstance(node, ast.BoolOp):
            return any(self.derived(v, tainted) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.derived(node.body, tainted) or self.derived(node.orelse, tainted)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):   # a quoted annotation
            try:
                return self.derived(ast.parse(node.value, mode="eval").body, tainted)
            except SyntaxError:
                return False
        return False

    def bindings(self, node: ast.AST, tainted: set):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    yield alias.asname or alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _library(node.module):
                yield from (alias.asname or alias.name for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Assign):
            if self.derived(node.value, tainted):
                for target in node.targets:
                    yield from _names(target)
        elif isinstance(node, ast.AnnAssign):
            if self.derived(node.annotation, tainted) or (node.value is not None
                                                          and self.derived(node.value, tainted)):
                yield from _names(node.target)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            if self.derived(node.iter, tainted):
                yield from _names(node.target)
        elif isinstance(node, ast.withitem):
            if node.optional_vars is not None and self.derived(node.context_expr, tainted):
                yield from _names(node.optional_vars)
        elif isinstance(node, ast.NamedExpr):
            if self.derived(node.value, tainted):
                yield from _names(node.target)

    def check(self, node: ast.AST, tainted: set) -> None:
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name) and any(map(_private, alias.name.split("."))):
                    self.findings.append((line, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _library(node.module):
                if any(map(_private, node.module.split("."))):
                    self.findings.append((line, f"from {node.module} import ..."))
                for alias in node.names:
                    if _private(alias.name):
                        self.findings.append((line, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Attribute):
            if _private(node.attr) and self.reaches_in(node.value, node.attr, tainted):
                self.findings.append((line, f"attribute {ast.unparse(node)}"))
        elif isinstance(node, ast.Call):
            self.check_call(node, tainted)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if PRIVATE_PATH.fullmatch(node.value) or INTERNAL_RAY_ENV.match(node.value):
                self.findings.append((line, f"string {node.value!r}"))

    def reaches_in(self, base: ast.AST, attr: str, tainted: set) -> bool:
        if isinstance(base, ast.Name) and base.id in OWN:
            return False
        return attr in ALWAYS_PRIVATE or self.derived(base, tainted)

    def check_call(self, node: ast.Call, tainted: set) -> None:
        line = node.lineno
        if isinstance(node.func, ast.Name) and node.func.id in REFLECTION and len(node.args) >= 2:
            name = node.args[1]
            if (isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value)
                    and self.reaches_in(node.args[0], name.value, tainted)):
                self.findings.append((line, f"{node.func.id}(..., {name.value!r})"))
        library_call = self.derived(node.func, tainted)
        for keyword in node.keywords:
            if keyword.arg is None:
                continue
            if (library_call and _private(keyword.arg)) or INTERNAL_RAY_ENV.match(keyword.arg):
                self.findings.append((line, f"keyword {keyword.arg}= in {ast.unparse(node.func)}(...)"))


def _checked_files() -> list[Path]:
    return sorted(p for d in CHECKED_DIRS for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", _checked_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_library_names(path):
    found = private_uses(path.read_text(encoding="utf-8"), str(path))
    assert not found, f"{path.relative_to(ROOT)} uses private names of ray/optuna/mlflow:\n  " + \
        "\n  ".join(found)


def test_the_checker_flags_what_issue_17_removed():
    snippet = (
        "import optuna\n"
        "from ray._private import worker\n"
        "def tell(study, frozen):\n"
        "    study._storage.x\n"
        "    node = worker._global_node\n"
        "    return frozen._trial_id\n"
        "def start():\n"
        "    import ray\n"
        "    ray.init(_system_config={'x': 1})\n"
        "    env = {'RAY_prestart_worker_first_driver': '0'}\n"
        "    s = optuna.create_study()\n"
        "    for t in s.get_trials():\n"
        "        t._cached\n"
        "    return getattr(s, '_study_id'), __import__('importlib').import_module('mlflow._x')\n"
    )
    found = "\n".join(private_uses(snippet))
    for expected in ("2: from ray._private import ...", "4: attribute study._storage",
                     "5: attribute worker._global_node", "6: attribute frozen._trial_id",
                     "9: keyword _system_config= in ray.init(...)",
                     "10: string 'RAY_prestart_worker_first_driver'", "13: attribute t._cached",
                     "14: getattr(..., '_study_id')", "14: string 'mlflow._x'"):
        assert expected in found, found


def test_the_checker_leaves_own_and_public_names_alone():
    snippet = (
        "from ray import tune\n"
        "import ray\n"
        "class Searcher:\n"
        "    def __init__(self):\n"
        "        self._storage = None\n"
        "        self._cache = {}\n"
        "    def _open(self):\n"
        "        return self._storage\n"
        "def run(spec):\n"
        "    tune.report({'x': 1})\n"
        "    ray.init(num_cpus=1)\n"
        "    print(ray.__version__, spec._private_to_smctune, 'ray.tune is public')\n"
    )
    assert private_uses(snippet) == []
