"""MkDocs hooks for the batchlaw site (configured in ``mkdocs.yml``; run at every build).

- ``on_config``: builds the navigation from the Markdown files present in ``docs/``, so a new
  page dropped into ``docs/`` is built and listed without editing ``mkdocs.yml``
  (see ``docs/contributing.md``).
- ``on_page_markdown``: replaces three markers with text generated from the code:
  ``<!-- generated: cli-reference -->`` (every command and option, walked from
  :func:`batchlaw.cli.build_parser`), ``<!-- generated: json-schemas -->`` (from
  ``schemas.py`` next to this file) and ``<!-- generated: api-reference -->`` (one mkdocstrings
  block per public package under ``src/batchlaw``, plus the names of its modules' ``__all__``
  that the package does not re-export: each public object once).

The docstrings' reST roles and directives are rewritten at load time by the griffe extension
``griffe_batchlaw.py`` next to this file.
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
# API reference: every name in a module's __all__, from the docstrings (mkdocstrings), once each.

def _load_api():
    """The ``batchlaw`` package as griffe reads it (statically: no torch at build time), with the
    lazily re-exported names added by ``griffe_batchlaw``."""
    _ensure_path()
    import griffe
    from griffe_batchlaw import BatchlawDocs

    return griffe.load("batchlaw", search_paths=[str(SRC)], extensions=griffe.load_extensions(BatchlawDocs),
                       resolve_aliases=False)


def _canonical(module, name: str) -> str:
    """Where ``module.name`` is defined (an alias followed to its end), or its own path when unknown."""
    import griffe

    member = module.members.get(name)
    if member is None:
        return f"{module.path}.{name}"
    if member.is_alias:
        try:
            return member.final_target.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return member.target_path
    return member.path


def _api_modules(pkg) -> list:
    """The modules to document, in page order: each public package, then its public modules that
    have an ``__all__``; each public top-level module with an ``__all__``."""
    out = []

    def public(m) -> bool:
        return not m.name.startswith("_") and not m.is_alias and m.is_module

    for sub in sorted((m for m in pkg.members.values() if public(m)), key=lambda m: m.name):
        if sub.is_init_module:
            out.append(sub)
            stack = sorted((m for m in sub.members.values() if public(m)), key=lambda m: m.name)
            while stack:
                mod = stack.pop(0)
                if mod.exports:
                    out.append(mod)
                stack[:0] = sorted((m for m in mod.members.values() if public(m)), key=lambda m: m.name)
        elif sub.exports:
            out.append(sub)
    return out


def api_sections() -> list[tuple[str, list[str], list[tuple[str, str]]]]:
    """``(module, members, also)`` for each block of the API page: each public object is rendered
    exactly once. A package renders the names of its ``__all__``; a module, those of its
    ``__all__`` not rendered already (first the ones it defines, then its re-exports of objects
    documented nowhere else). ``batchlaw`` itself re-exports only: ``also`` lists
    ``(name, where it is rendered)`` for the links under its docstring."""
    pkg = _load_api()
    modules = _api_modules(pkg)
    placed: dict[str, str] = {}  # canonical path -> rendered path
    claims: dict[str, list[str]] = {m.path: [] for m in modules}

    def names(m):
        return [n for n in (m.exports or ()) if isinstance(n, str) and not n.startswith("_")]

    for second_pass in (False, True):
        for m in modules:
            for name in names(m):
                canon = _canonical(m, name)
                owns = m.is_init_module or m.parent is pkg or canon.rpartition(".")[0] == m.path
                if canon not in placed and (owns or second_pass):
                    placed[canon] = f"{m.path}.{name}"
                    claims[m.path].append(name)
    sections: list[tuple[str, list[str], list[tuple[str, str]]]] = []
    also = [(n, placed.get(_canonical(pkg, n), "")) for n in (pkg.exports or ()) if isinstance(n, str)]
    sections.append(("batchlaw", [], also))
    for m in modules:
        if m.is_init_module or claims[m.path]:
            order = {n: i for i, n in enumerate(names(m))}
            sections.append((m.path, sorted(claims[m.path], key=order.get), []))
    return sections


def api_reference() -> str:
    """Markdown with one mkdocstrings block per section of :func:`api_sections`."""
    out = []
    for mod, members, also in api_sections():
        opts = "    options:\n      show_root_heading: true\n      show_root_full_path: true\n      heading_level: 2\n"
        opts += f"      members: {members!r}\n" if members else "      members: false\n"
        out.append(f"::: {mod}\n{opts}")
        links = [f"[`{name}`][{where}]" for name, where in also if where]
        if links:
            line = f"`{mod}` re-exports " + ", ".join(links) + ", documented where they are defined"
            if "__version__" in dict(also):
                line += "; `__version__` is the version string"
            out.append(line + ".\n")
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
