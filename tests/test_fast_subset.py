"""The `fast` subset (`make test-fast`, given in tests/conftest.py) stays honest: each test it
leaves out still exists, and what remains still reaches every module of src/batchlaw."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import re
from pathlib import Path

from conftest import ALL, NOT_FAST

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "batchlaw"


def _test_functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            out[node.name] = node
    return out


def _slow(node) -> bool:
    return any("slow" in ast.unparse(d) for d in node.decorator_list)


def _modules_named(node: ast.AST, module_names: set[str]) -> set[str]:
    """The batchlaw modules an AST imports from, each import resolved to where its name is defined."""
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Import):
            found |= {a.name for a in n.names if a.name in module_names}
        elif isinstance(n, ast.ImportFrom) and n.level == 0 and n.module in module_names:
            found.add(n.module)
            for a in n.names:
                if f"{n.module}.{a.name}" in module_names:
                    found.add(f"{n.module}.{a.name}")
                    continue
                obj = getattr(importlib.import_module(n.module), a.name, None)
                home = getattr(obj, "__module__", None) or ""
                if home in module_names:
                    found.add(home)
    return found & module_names


def _all_modules() -> set[str]:
    """Every module of src/batchlaw, private helpers included (``_csv``, ``cli._common``)."""
    import batchlaw

    names = {"batchlaw"}
    names |= {i.name for i in pkgutil.walk_packages(batchlaw.__path__, "batchlaw.") if not i.name.endswith("__main__")}
    return names


def public_modules() -> set[str]:
    """The modules a user imports: no part of the name starts with ``_``. (Private helpers are
    reached through them; an import check cannot see that, so they are not required here.)"""
    return {m for m in _all_modules() if not any(part.startswith("_") for part in m.split("."))}


def reached_modules() -> set[str]:
    """The modules of src/batchlaw that the fast subset reaches: imported (directly, or through a
    re-export of a name they define) by a fast test, or its module-level code; run by a fast CLI
    test (``main(["fit", ...])`` reaches ``batchlaw.cli.fit`` and the modules it imports); or
    holding doctests."""
    modules = _all_modules()
    reached = set()
    commands = {m.rpartition(".")[2] for m in modules if m.startswith("batchlaw.cli.")}
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tests = _test_functions(tree)
        left_out = NOT_FAST.get(path.name, set())
        fast = [node for name, node in tests.items() if left_out is not ALL and name not in left_out and not _slow(node)]
        if not fast or re.search(r"pytestmark\s*=.*slow", path.read_text(encoding="utf-8")):
            continue
        module_level = ast.Module(body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
                                  type_ignores=[])
        for node in [module_level, *fast]:
            reached |= _modules_named(node, modules)
            for s in ast.walk(node):
                if isinstance(s, ast.Constant) and isinstance(s.value, str) and s.value in commands:
                    reached.add(f"batchlaw.cli.{s.value}")
    for name in modules:
        if ">>> " in inspect.getsource(importlib.import_module(name)):
            reached.add(name)
    # A command run by a fast CLI test reaches what its module imports (`profile --plot` plots), and
    # what the command modules it imports do (`fit` imports `fit.curve`, which imports `batchlaw.fit.curves`).
    reached &= modules
    todo = [m for m in reached if m.startswith("batchlaw.cli.")]
    while todo:
        cmd = importlib.import_module(todo.pop())
        package = cmd.__name__ if hasattr(cmd, "__path__") else cmd.__package__
        for n in ast.walk(ast.parse(inspect.getsource(cmd))):
            if isinstance(n, ast.ImportFrom) and n.level:
                base = importlib.util.resolve_name("." * n.level + (n.module or ""), package)
                new = ({base} | {f"{base}.{a.name}" for a in n.names}) & modules - reached
                reached |= new
                todo += [m for m in new if m.startswith("batchlaw.cli.")]
    # A package is reached when one of its modules is.
    reached |= {m for m in modules if any(r.startswith(m + ".") for r in reached)}
    return reached


def test_every_test_left_out_of_the_fast_subset_exists():
    stale = []
    for file, names in NOT_FAST.items():
        path = TESTS / file
        assert path.is_file(), f"tests/conftest.py NOT_FAST names {file}, which does not exist"
        present = _test_functions(ast.parse(path.read_text(encoding="utf-8")))
        stale += [f"{file}::{n}" for n in sorted(names) if n not in present and names is not ALL]
    assert not stale, f"tests/conftest.py NOT_FAST lists tests that no longer exist: {stale}"


def test_the_fast_subset_reaches_every_module():
    missing = sorted(public_modules() - reached_modules())
    assert not missing, (f"no fast test reaches {missing}: add a quick test of it, or take one of its tests "
                         "out of NOT_FAST in tests/conftest.py")
