"""The documentation site builds in strict mode: a broken link, a missing reference or any warning fails.
The built pages carry no raw reST markup, and the API reference documents each public object once."""

import ast
import html
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install 'batchlaw[docs]')")
pytest.importorskip("mkdocstrings")


def build_site(site: Path, config: Path = ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site),
                           "--config-file", str(config)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    proc = build_site(site)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


def test_mkdocs_build_strict(site):
    # Every page in docs/ is built, and the generated references are filled in.
    pages = [p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md") if "_hooks" not in p.parts]
    for rel in pages:
        out = site / rel.with_suffix("") / "index.html" if rel.name != "index.md" else site / rel.parent / "index.html"
        assert out.is_file(), f"{rel} was not built"
    cli = (site / "reference-cli" / "index.html").read_text()
    assert "batchlaw fit cbs" in cli and "--steps-col" in cli and "generated:" not in cli
    api = (site / "reference-api" / "index.html").read_text()
    assert "GradientNoiseMonitor" in api and "fit_steps_law" in api
    assert "batchlaw.plan/1" in (site / "reference-json" / "index.html").read_text()


ROLE_IN_HTML = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref|type):(?:<code>|`|&lt;)")
DIRECTIVE_IN_HTML = re.compile(r"\.\. [a-z-]+::")
LITERAL_MARKER_IN_HTML = re.compile(r"[\w)\]]::(?=\s*(?:<|$))", re.M)


def _prose(page_html: str) -> str:
    """The page without its code blocks and with its inline code emptied (a role rendered raw
    shows as ``:func:<code>x</code>``; a page may quote a role inside code)."""
    text = re.sub(r"<pre\b.*?</pre>", " ", page_html, flags=re.S)
    return re.sub(r"<code>.*?</code>", "<code></code>", text, flags=re.S)


def raw_markup(page_html: str) -> list[str]:
    """Raw reST roles (``:func:`x```), directives (``.. warning::``) and literal-block markers
    (``text::``) left in a rendered page, outside its code blocks."""
    prose = _prose(page_html)
    found = [m.group() for m in ROLE_IN_HTML.finditer(prose)]
    found += [m.group() for m in DIRECTIVE_IN_HTML.finditer(html.unescape(re.sub(r"<[^>]+>", "", prose)))]
    found += [m.group() for m in LITERAL_MARKER_IN_HTML.finditer(prose.replace("<code></code>", " "))]
    return found


def test_raw_markup_is_caught_by_the_check():
    assert raw_markup("<p>see :func:<code>fit</code> and :class:`X`</p>") == [":func:<code>", ":class:`"]
    assert raw_markup("<p>write <code>:func:`x`</code> in a docstring</p>") == []
    assert raw_markup("<p>.. warning:: careful</p>") == [".. warning::"]
    assert raw_markup("<p>downgrade it to a warning::</p>") == ["g::"]
    assert raw_markup("<pre><code>x[::2]  # :func:`f`</code></pre><p><code>a::b</code></p>") == []


def test_no_raw_rest_roles_or_directives_in_the_site(site):
    bad = {}
    for page in sorted(site.rglob("*.html")):
        found = raw_markup(page.read_text(encoding="utf-8"))
        if found:
            bad[page.relative_to(site).as_posix()] = sorted(set(found))[:10]
    assert not bad, f"raw reST markup in the rendered site (docs/_hooks/griffe_batchlaw.py converts it): {bad}"


def _defined_in(module, name: str) -> str:
    """The module that defines ``module.name``, following ``from .x import name`` statically (a
    constant has no identity to compare: two equal strings may be two definitions)."""
    path = inspect.getsourcefile(module)
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    package = module.__name__ if path.endswith("__init__.py") else module.__name__.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rpartition(".")[0]
            src = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            return _defined_in(importlib.import_module(src), name)
    return module.__name__


def _key(module, name: str):
    """What makes two public names the same object: identity for classes and functions, the
    defining module for anything else."""
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return ("object", getattr(obj, "__module__", ""), getattr(obj, "__qualname__", name), id(obj))
    return ("value", _defined_in(module, name), name)


def _public_names() -> dict:
    """``{key: [module.name, ...]}`` for every name in a public module's ``__all__`` (dunders aside)."""
    import pkgutil

    import batchlaw

    names: dict = {}
    mods = [batchlaw] + [importlib.import_module(i.name) for i in pkgutil.walk_packages(batchlaw.__path__, "batchlaw.")
                         if not any(part.startswith("_") for part in i.name.split("."))]
    for mod in mods:
        for name in getattr(mod, "__all__", []):
            if name.startswith("__") or inspect.ismodule(getattr(mod, name)):
                continue
            names.setdefault(_key(mod, name), []).append(f"{mod.__name__}.{name}")
    return names


def rendered_entries(api_html: str) -> list[str]:
    """The ids of the objects the API page renders directly under a module heading."""
    ids = re.findall(r'<h[1-6] id="(batchlaw[\w.]*)"[^>]*class="doc doc-heading"', api_html)
    modules = set(re.findall(r'<h[1-6] id="(batchlaw[\w.]*)"[^>]*class="doc doc-heading">\s*'
                             r'<span class="doc doc-object-name doc-module-name"', api_html))
    return [i for i in ids if i.rpartition(".")[0] in modules and i not in modules]


def test_every_public_name_is_documented_once_lazy_re_exports_included(site):
    api = (site / "reference-api" / "index.html").read_text(encoding="utf-8")
    entries = rendered_entries(api)
    assert "batchlaw.noise.GradientNoiseMonitor" in entries and "batchlaw.errors.InsufficientDataError" in entries
    public = _public_names()
    counts = {key: 0 for key in public}
    strays = []
    for entry in entries:
        mod, _, name = entry.rpartition(".")
        key = _key(importlib.import_module(mod), name)
        if key in counts:
            counts[key] += 1
        else:
            strays.append(entry)
    missing = sorted(public[k][0] for k, n in counts.items() if n == 0)
    twice = sorted(f"{public[k][0]} ({n}x)" for k, n in counts.items() if n > 1)
    assert not missing, f"public names with no entry in the API reference: {missing}"
    assert not twice, f"public objects documented more than once: {twice}"
    assert not strays, f"entries for names in no __all__: {strays}"
    # A lazily re-exported name (its package's __getattr__ imports it) is documented under the package.
    assert "batchlaw.integrations.log_to" in entries


def test_tables_keep_code_names_whole(site):
    """The theme breaks inline code anywhere; the site's stylesheet stops that inside tables
    (the layout itself is checked in a browser by tests/docs_check.py)."""
    css = (site / "stylesheets" / "extra.css").read_text()
    rule = re.search(r"table:not\(\[class\]\) td code[^{]*\{([^}]*)\}", css)
    assert rule and "word-break: normal" in rule.group(1) and "overflow-wrap: normal" in rule.group(1)
    assert 'href="../stylesheets/extra.css"' in (site / "howto-schedule" / "index.html").read_text()


def test_nav_lists_every_page_and_a_new_one_without_editing_mkdocs_yml(tmp_path):
    sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
    try:
        from batchlaw_docs import build_nav
    finally:
        sys.path.pop(0)
    for name in ("index.md", "concepts-x.md", "howto-new-thing.md", "reference-y.md", "faq.md"):
        (tmp_path / name).write_text(f"# {name}\n")
    (tmp_path / "odd.md").write_text("---\nsection: How-to guides\n---\n# odd\n")
    (tmp_path / "_hooks").mkdir()
    (tmp_path / "_hooks" / "notes.md").write_text("# not a page\n")
    nav = build_nav(tmp_path)
    assert nav[0] == {"Home": "index.md"}
    sections = {k: v for item in nav[1:] for k, v in item.items()}
    assert sections == {"Concepts": ["concepts-x.md"], "How-to guides": ["howto-new-thing.md", "odd.md"],
                        "Reference": ["reference-y.md"], "More": ["faq.md"]}
    # The real docs: every page appears exactly once.
    real = build_nav(ROOT / "docs")
    listed = [p for item in real for v in item.values() for p in ([v] if isinstance(v, str) else v)]
    present = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
                     if "_hooks" not in p.parts)
    assert sorted(listed) == present


def test_the_site_renders_with_the_theme_in_chromium(site, tmp_path):
    """Screenshots of the home page and a how-to page show the theme (header bar, navigation, text),
    and no table breaks a code name mid-word; the check itself fails on an unstyled page and on the
    theme's own table styling."""
    import shutil

    import docs_check

    browser = docs_check.find_browser()
    if browser is None:
        if os.environ.get("BATCHLAW_REQUIRE_CHROMIUM") == "1":
            pytest.fail(docs_check.MISSING)
        pytest.skip(docs_check.MISSING)
    assert docs_check.check_site(site, tmp_path / "shots", browser) == []
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    home = copy / "index.html"
    home.write_text(re.sub(r'<link rel="stylesheet"[^>]*>', "", home.read_text(encoding="utf-8")))
    problems = docs_check.look_problems("unstyled", docs_check.look(
        docs_check.screenshot(browser, home, tmp_path / "unstyled.png")))
    assert any("no theme header bar" in p for p in problems), problems
    (copy / "stylesheets" / "extra.css").write_text("")
    assert "ConstantBatch" in docs_check.broken_code_in_tables(browser, copy / "howto-schedule" / "index.html")


def test_the_griffe_extension_turns_rest_markup_into_markdown_and_finds_hidden_names(tmp_path):
    """On a tiny package: roles resolved in scope, a directive, a literal-block marker, a ``#:``
    comment, a tuple-unpacked constant and a name only ``__getattr__`` provides."""
    import griffe

    sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
    try:
        from griffe_batchlaw import BatchlawDocs, convert
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "batchlaw"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""Root."""\n')
    (pkg / "sub" / "__init__.py").write_text(
        '"""Lazy: :func:`~batchlaw.sub.impl.helper` and :class:`Thing`."""\n'
        '__all__ = ["helper", "LO", "HI"]\n'
        "#: The bounds.\nLO, HI = 1, 2\n"
        "def __getattr__(name):\n    if name == 'helper':\n        from .impl import helper\n        return helper\n"
        "    raise AttributeError(name)\n")
    (pkg / "sub" / "impl.py").write_text(
        '"""Impl."""\n__all__ = ["helper", "Thing"]\n'
        'def helper():\n    """Call :meth:`Thing.run` or :func:`warnings.warn`, :attr:`the size <Thing.size>`.\n\n'
        '    .. warning::\n       Careful\n       here.\n\n    Like this::\n\n        helper()\n    """\n'
        "class Thing:\n    \"\"\"A thing.\"\"\"\n    def run(self):\n        \"\"\"Run.\"\"\"\n")
    loaded = griffe.load("batchlaw", search_paths=[str(tmp_path)], extensions=griffe.load_extensions(BatchlawDocs))
    sub = loaded["sub"]
    assert sub.members["helper"].target_path == "batchlaw.sub.impl.helper"  # the lazy re-export
    assert sub.members["LO"].docstring.value == "The bounds." and sub.members["HI"].value == "2"
    doc = loaded["sub.impl.helper"].docstring.value
    assert '<autoref identifier="batchlaw.sub.impl.Thing.run" optional><code>Thing.run</code></autoref>' in doc
    assert '<autoref identifier="warnings.warn" optional><code>warnings.warn</code></autoref>' in doc
    assert "<code>the size</code>" in doc and 'identifier="batchlaw.sub.impl.Thing.size"' in doc
    assert '!!! warning "Warning"\n    Careful\n    here.' in doc
    assert "Like this:\n\n    helper()" in doc and "::" not in doc.replace("<autoref", "")
    # `Thing` is not in the package's scope: shown as code, not linked (no unresolved reference)
    assert sub.docstring.value == ('Lazy: <autoref identifier="batchlaw.sub.impl.helper" optional><code>helper</code>'
                                   '</autoref> and <code>Thing</code>.')
    assert convert(".. note:: Inline.\n   More.\n\nAfter.") == '!!! note "Note"\n    Inline.\n    More.\n\nAfter.'
    assert convert("Text ::\n\n    code") == "Text\n\n    code"
    assert convert("::\n\n    code") == "\n\n    code"
