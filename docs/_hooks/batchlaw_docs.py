"""MkDocs hooks for the batchlaw site (configured in ``mkdocs.yml``; run at every build).

- ``on_config``: builds the navigation from the Markdown files present in ``docs/``, so a new
  page dropped into ``docs/`` is built and listed without editing ``mkdocs.yml``
  (see ``docs/contributing.md``).
- ``on_page_markdown``: replaces three markers with text generated from the code:
  ``<!-- generated: cli-reference -->`` (every command and option, walked from
  :func:`batchlaw.cli.build_parser`), ``<!-- generated: json-schemas -->`` (from
  ``schemas.py`` next to this file) and ``<!-- generated: api-reference -->`` (one mkdocstrings
  block per public package under ``src/batchlaw``, plus the names of its modules' ``__all__``
  that the package does not re-export).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent
ROOT = DOCS.parent
SRC = ROOT / "src"


def _ensure_path() -> None:
    """Put this checkout's ``src`` first on ``sys.path`` (mkdocstrings may reset it during a build)."""
    for p in (str(HERE), str(SRC)):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)


_ensure_path()

# Navigation: section of a page by its file name; the order of known pages, then the rest A-Z.
SECTIONS = ["Home", "Concepts", "How-to guides", "Reference", "More"]
ORDER = [
    "index.md",
    "concepts-noise-scale.md", "concepts-critical-batch-size.md", "noise_vs_cbs.md", "concepts-learning-rate.md",
    "concepts-controller.md", "concepts-scaling-laws.md", "concepts-learning-curves.md", "concepts-systems.md", "fits.md",
    "howto-measure-noise.md", "howto-own-model.md", "howto-distributed.md", "howto-integrations.md",
    "howto-sweep.md", "howto-fit-csv.md", "howto-plan.md", "howto-serve.md", "howto-schedule.md",
    "howto-controller.md",
    "reference-cli.md", "reference-json.md", "reference-api.md",
    "troubleshooting.md", "contributing.md",
]
_FRONT_SECTION = re.compile(r"\A---\s*\n(?:.*\n)*?section:\s*(?P<s>[^\n]+)\n(?:.*\n)*?---\s*\n")


def section_of(rel: str, text: str = "") -> str:
    """The nav section of a page: ``section:`` in its front matter, else by its file name."""
    m = _FRONT_SECTION.match(text)
    if m and m.group("s").strip() in SECTIONS:
        return m.group("s").strip()
    name = rel.split("/")[-1]
    if rel == "index.md":
        return "Home"
    if name.startswith("concepts") or rel.startswith("concepts/") or name in ("noise_vs_cbs.md", "fits.md"):
        return "Concepts"
    if name.startswith("howto") or rel.startswith("howto/"):
        return "How-to guides"
    if name.startswith("reference") or rel.startswith("reference/"):
        return "Reference"
    return "More"


def build_nav(docs_dir: Path) -> list:
    """A MkDocs ``nav`` listing every Markdown page under ``docs_dir`` (``_hooks`` excluded)."""
    pages = sorted(
        p.relative_to(docs_dir).as_posix() for p in docs_dir.rglob("*.md")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(docs_dir).parts)
    )
    rank = {name: i for i, name in enumerate(ORDER)}
    pages.sort(key=lambda rel: (rank.get(rel, len(ORDER)), rel))
    by_section: dict[str, list] = {s: [] for s in SECTIONS}
    for rel in pages:
        by_section[section_of(rel, (docs_dir / rel).read_text(encoding="utf-8"))].append(rel)
    nav: list = []
    for s in SECTIONS:
        if s == "Home":
            nav.extend({"Home": rel} for rel in by_section[s])
        elif by_section[s]:
            nav.append({s: by_section[s]})
    return nav


def on_config(config, **kwargs):
    config["nav"] = build_nav(Path(config["docs_dir"]))
    return config


# ---------------------------------------------------------------------------------------------
# CLI reference, generated from the argparse parsers.

def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _commands(parser: argparse.ArgumentParser, path: list[str]):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, path + [name])


def _subcommand_rows(parser: argparse.ArgumentParser, path: list[str]) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                full = " ".join(path + [choice.dest])
                anchor = full.replace(" ", "-")
                rows.append(f"| [`{full}`](#{anchor}) | {_md(choice.help or '')} |")
    return rows


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    fmt = parser._get_formatter()
    rows = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.dest}`"
        if a.option_strings and a.nargs != 0:
            name += f" `{a.metavar or a.dest.upper()}`"
        kind = "required" if (a.required or not a.option_strings) else "optional"
        if a.choices:
            kind += "; one of " + ", ".join(f"`{c}`" for c in a.choices)
        if isinstance(a, argparse._AppendAction):
            kind += "; repeatable"
        help_text = fmt._expand_help(a) if a.help else ""
        rows.append(f"| {name} | {kind} | {_md(help_text)} |")
    return rows


def cli_reference() -> str:
    """Markdown for every command of ``batchlaw`` with its options, from the live parsers."""
    _ensure_path()
    from batchlaw.cli import build_parser

    import os

    out = []
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps the usage to the terminal: make the page reproducible
    try:
        for path, parser in _commands(build_parser(), ["batchlaw"]):
            level = "#" * min(len(path) + 1, 4)
            anchor = "-".join(path)
            out.append(f"{level} `{' '.join(path)}` {{#{anchor}}}\n")
            if parser.description:
                out.append(_md(parser.description).replace("%%", "%") + "\n")
            out.append("```text\n" + parser.format_usage().strip() + "\n```\n")
            rows = _option_rows(parser)
            if rows:
                out.append("| option | kind | what it does |\n|---|---|---|\n" + "\n".join(rows) + "\n")
            subs = _subcommand_rows(parser, path)
            if subs:
                out.append("| command | what it does |\n|---|---|\n" + "\n".join(subs) + "\n")
    finally:
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# API reference: every name in a module's __all__, from the docstrings (mkdocstrings).

def _all_names(path: Path) -> list[str]:
    """The ``__all__`` of a module, read statically (no import, so no torch at build time)."""
    import ast

    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            try:
                return [str(v) for v in ast.literal_eval(node.value)]
            except ValueError:
                return []
    return []


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def api_sections() -> list[tuple[str, list[str] | None]]:
    """``(module, members)`` to render: each public package with its ``__all__`` (members None),
    then each of its modules whose ``__all__`` holds names the package does not re-export."""
    pkg = SRC / "batchlaw"
    skip = {"cli", "__main__"}
    out: list[tuple[str, list[str] | None]] = [("batchlaw", None)]
    for sub in sorted(pkg.iterdir()):
        if sub.name.startswith("_") or sub.stem in skip:
            continue
        if sub.is_dir() and (sub / "__init__.py").is_file():
            exported = set(_all_names(sub / "__init__.py"))
            out.append((_module_name(sub / "__init__.py"), None))
            for mod in sorted(sub.rglob("*.py")):
                if mod.name.startswith("_"):
                    continue
                extra = [n for n in _all_names(mod) if n not in exported]
                if extra:
                    out.append((_module_name(mod), extra))
        elif sub.suffix == ".py" and _all_names(sub):
            out.append((_module_name(sub), None))
    return out


def api_reference() -> str:
    """Markdown with one mkdocstrings block per section of :func:`api_sections`."""
    out = []
    for mod, members in api_sections():
        opts = "    options:\n      show_root_heading: true\n      show_root_full_path: true\n      heading_level: 2\n"
        if members is not None:
            opts += f"      members: {members!r}\n"
        out.append(f"::: {mod}\n{opts}")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files, **kwargs):
    if "<!-- generated: cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- generated: cli-reference -->", cli_reference())
    if "<!-- generated: json-schemas -->" in markdown:
        _ensure_path()
        from schemas import schemas_markdown

        markdown = markdown.replace("<!-- generated: json-schemas -->", schemas_markdown())
    if "<!-- generated: api-reference -->" in markdown:
        markdown = markdown.replace("<!-- generated: api-reference -->", api_reference())
    return markdown
