"""The reference is complete: every public name has a docstring, every CLI option has help, and the
documented ``--json`` keys are the keys the commands print."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest

import batchlaw
from batchlaw.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
from schemas import SCHEMAS  # noqa: E402

sys.path.pop(0)


def _public_modules():
    for info in pkgutil.walk_packages(batchlaw.__path__, "batchlaw."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def test_every_public_name_has_a_docstring():
    missing = []
    for mod in [batchlaw, *_public_modules()]:
        if not inspect.getdoc(mod):
            missing.append(f"module {mod.__name__}")
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            doc = (obj.__doc__ or "").strip()
            # A dataclass without a docstring gets its signature as __doc__: that is not documentation.
            if not doc or (inspect.isclass(obj) and doc.startswith(f"{obj.__name__}(")):
                missing.append(f"{mod.__name__}.{name}")
    assert not missing, "public names without a docstring: " + ", ".join(sorted(set(missing)))


def _commands(parser, path):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + [name])


def test_every_cli_command_and_option_has_help():
    missing = []
    for path, parser in _commands(build_parser(), ["batchlaw"]):
        if len(path) > 1 and not parser.description:
            missing.append(f"{' '.join(path)} (description)")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "CLI options without help text: " + ", ".join(missing)


def _write_inputs(tmp_path: Path) -> None:
    from batchlaw.fit import steps_law

    rows = [f"{b},{float(steps_law(b, 2000.0, 300.0)) * np.exp(0.02 * np.sin(b)):.2f}" for b in (16, 32, 64, 128, 256, 512)]
    (tmp_path / "steps.csv").write_text("batch,steps\n" + "\n".join(rows) + "\n")
    d = np.geomspace(1e9, 1e11, 6)
    cbs = 0.5 * d**0.45 * np.exp(0.03 * np.cos(np.arange(6)))
    (tmp_path / "cbs_law.csv").write_text("tokens,cbs\n" + "\n".join(f"{a:.4g},{c:.4g}" for a, c in zip(d, cbs)) + "\n")


def test_documented_json_keys_are_the_printed_keys(tmp_path, capsys):
    """Each schema with check arguments is produced by a fast real run, in the order listed (report reads the sweep's store)."""
    _write_inputs(tmp_path)
    names = [s.name for s in SCHEMAS]
    for required in ("batchlaw.measure/1", "batchlaw.sweep/1", "batchlaw.report/1", "batchlaw.demo/2", "batchlaw.plan/1"):
        assert required in names
    checked = 0
    for schema in SCHEMAS:
        if not schema.check_args:
            continue
        args = [a.format(tmp=tmp_path, examples=ROOT / "examples") for a in schema.check_args]
        assert main(args) == 0, schema.name
        out = json.loads(capsys.readouterr().out)
        assert set(out) == schema.keys, f"{schema.name}: printed {sorted(out)}, documented {sorted(schema.keys)}"
        if schema.versioned:
            assert out["schema"] == schema.name
        checked += 1
    assert checked >= 9


@pytest.mark.parametrize("schema", [s for s in SCHEMAS if s.name.startswith("batchlaw.")], ids=lambda s: s.name)
def test_versioned_schema_names_appear_in_the_code(schema):
    code = "\n".join(p.read_text() for p in (ROOT / "src" / "batchlaw").rglob("*.py"))
    assert f'"{schema.name}"' in code, f"{schema.name} is documented but no command prints it"


def test_troubleshooting_messages_still_occur_in_the_code():
    """Each '### `message`' heading of the Troubleshooting page is a fixed part of a message the code raises
    ('...' separates fixed parts); a reworded or removed message fails here until the page follows."""
    import re

    page = (ROOT / "docs" / "troubleshooting.md").read_text()
    headings = re.findall(r"^### `(.+)`\s*$", page, re.M)
    assert len(headings) >= 30
    code = "\n".join(p.read_text() for p in (ROOT / "src" / "batchlaw").rglob("*.py"))
    stale = [h for h in headings if any(part not in code for part in h.split("...") if part.strip())]
    assert not stale, f"messages on the Troubleshooting page that the code no longer raises: {stale}"


def _literal_schema_dicts() -> dict[str, set[str]]:
    """Top-level keys of every dict literal in src/ with a constant "schema" entry, by schema name."""
    import ast

    found: dict[str, set[str]] = {}
    for path in (ROOT / "src" / "batchlaw").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Dict):
                continue
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant)]
            if "schema" not in keys or any(k is None for k in node.keys):  # skip {**other} spreads
                continue
            value = node.values[keys.index("schema")]
            if isinstance(value, ast.Constant):
                found[value.value] = set(keys)
    return found


def test_schemas_not_run_are_checked_against_the_dict_the_code_builds():
    """A schema too slow to run in the tests (the demo) is checked statically: the keys of the dict literal
    that carries its schema name must be the documented keys."""
    literals = _literal_schema_dicts()
    for schema in SCHEMAS:
        if schema.check_args or not schema.versioned:
            continue
        assert schema.name in literals, f"{schema.name}: no dict literal with this schema name in src/"
        assert literals[schema.name] == schema.keys, \
            f"{schema.name}: code builds {sorted(literals[schema.name])}, documented {sorted(schema.keys)}"
