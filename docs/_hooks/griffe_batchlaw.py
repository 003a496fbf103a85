"""A griffe extension for the API reference (configured in ``mkdocs.yml``; run at every build).

The docstrings are Google style but cross-reference in Sphinx (reST) roles, which the Google
parser leaves as text: a page would show ``:func:`fit_steps_law``` raw. At load time, before
mkdocstrings renders anything, this extension rewrites each docstring of ``batchlaw``:

- ``:func:`x```, ``:class:`~a.b.C```, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:exc:``,
  ``:obj:``, ``:const:`` (also ``:py:func:`` ...) become code spans that link to the object's
  entry when the reference renders it (an autorefs reference, optional: a name it does not
  render, such as ``warnings.warn`` or a private helper, stays plain code). ``x`` is resolved in
  the scope of the documented object, as Sphinx does; ``~`` shows the last part only; ``title <x>``
  shows the title;
- ``.. note::``, ``.. warning::`` and the other reST admonitions become Markdown admonitions;
- a paragraph ending in ``::`` (a reST literal block follows) ends in ``:`` and a lone ``::`` line
  goes (the indented block under it is a code block in Markdown too).

It also reads Sphinx's ``#:`` doc-comments above a constant as its docstring, and makes visible
the names griffe misses: a module whose ``__all__`` lists a name that only its ``__getattr__``
provides (``from .loggers import log_to`` inside it) gets an alias to where the name comes from, so
``batchlaw.integrations.log_to`` is documented like any re-export; a constant of ``__all__``
assigned by tuple unpacking (``A, B = 1, 2``) becomes an attribute.

The docstrings in ``src/`` are not changed.
"""

from __future__ import annotations

import ast
import html
import re
from typing import Any

import griffe

ROLES = ("func", "class", "meth", "mod", "attr", "data", "exc", "obj", "const", "type")
ROLE = re.compile(r":(?:py:)?(?P<role>" + "|".join(ROLES) + r"):`(?P<body>[^`]+)`")
DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<kind>note|warning|tip|important|caution|danger|attention|hint|"
                       r"error|seealso|see also|deprecated|versionadded|versionchanged)::[ \t]*(?P<rest>.*)$",
                       re.IGNORECASE)
ADMONITION_KIND = {"seealso": "info", "see also": "info", "deprecated": "warning", "versionadded": "note",
                   "versionchanged": "note", "attention": "warning", "caution": "warning", "error": "danger"}
LITERAL_MARKER = re.compile(r"(?P<text>\S)(?P<space>\s*)::[ \t]*$")


def _resolve(target: str, obj: griffe.Object) -> str:
    """The full path of ``target`` as written in ``obj``'s docstring (Sphinx's lookup: the
    object's scope, then its parents', then the name as given)."""
    target = target.lstrip(".")
    head, _, tail = target.partition(".")
    scope: Any = obj
    while scope is not None:
        try:
            if head in scope.members or head in getattr(scope, "imports", {}):
                resolved = scope.resolve(head)
                return f"{resolved}.{tail}" if tail else resolved
        except (griffe.NameResolutionError, griffe.AliasResolutionError, KeyError):
            pass
        scope = scope.parent
    return target


def convert_roles(text: str, obj: griffe.Object | None) -> str:
    """Sphinx roles to code spans linked by autorefs (optional references: no warning when unrendered)."""

    def repl(m: re.Match) -> str:
        body = m.group("body").strip()
        title = None
        explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>", body)
        if explicit:
            title, body = explicit.group("title"), explicit.group("target")
        short = body.startswith("~")
        target = body.lstrip("~").removesuffix("()")
        if title is None:
            title = target.lstrip(".").rsplit(".", 1)[-1] if short else target.lstrip(".")
        path = _resolve(target, obj) if obj is not None else target.lstrip(".")
        if "." not in path:  # a top-level name ("batchlaw" is also a heading of the Home and CLI pages)
            return f"<code>{html.escape(title)}</code>"
        return (f'<autoref identifier="{html.escape(path, quote=True)}" optional>'
                f"<code>{html.escape(title)}</code></autoref>")

    return ROLE.sub(repl, text)


def convert_directives(text: str) -> str:
    """reST admonition directives to Markdown admonitions; ``::`` literal-block markers to ``:``."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = DIRECTIVE.match(lines[i])
        if not m:
            out.append(_literal_marker(lines[i]))
            i += 1
            continue
        indent, kind, first = m.group("indent"), m.group("kind").lower(), m.group("rest").strip()
        body = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        cut = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
        title = "See also" if kind in ("seealso", "see also") else kind.capitalize()
        out.append(f'{indent}!!! {ADMONITION_KIND.get(kind, kind)} "{title}"')
        out.extend(f"{indent}    {b}" for b in ([first] if first else []))
        out.extend(f"{indent}    {b[cut:]}" if b.strip() else "" for b in body)
        out.append("")
    return "\n".join(out)


def _literal_marker(line: str) -> str:
    """Sphinx's rule for a paragraph ending in ``::``: ``text::`` shows ``text:``, ``text ::`` shows
    ``text``, a lone ``::`` shows nothing."""
    if line.strip() == "::":
        return ""
    m = LITERAL_MARKER.search(line)
    if not m or line.lstrip().startswith((">>>", "... ")):
        return line
    return line[: m.end("text")] + ("" if m.group("space") else ":")


def convert(text: str, obj: griffe.Object | None = None) -> str:
    """A docstring with its reST markup turned into what mkdocstrings renders."""
    return convert_roles(convert_directives(text), obj)


def lazy_exports(module: griffe.Module) -> dict[str, str]:
    """``{name: target path}`` for each name of the module's ``__all__`` that only its
    ``__getattr__`` provides, read from the imports inside that function."""
    func = module.members.get("__getattr__")
    names = [n for n in (module.exports or ()) if isinstance(n, str) and n not in module.members]
    if func is None or func.is_alias or not names or not func.source:
        return {}
    package = module.path if module.is_init_module else module.path.rpartition(".")[0]
    direct: dict[str, str] = {}
    modules: list[str] = []
    for node in ast.walk(ast.parse(_dedent(func.source))):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package
        for _ in range(max(node.level - 1, 0)):
            base = base.rpartition(".")[0]
        base = f"{base}.{node.module}" if node.module and node.level else (node.module or base)
        for alias in node.names:
            found = _find(module, f"{base}.{alias.name}")
            if found is not None and not found.is_alias and found.is_module:
                modules.append(f"{base}.{alias.name}")
            else:
                direct[alias.asname or alias.name] = f"{base}.{alias.name}"
    out = {}
    for name in names:
        if name in direct:
            out[name] = direct[name]
            continue
        for mod in modules:
            target = _find(module, mod)
            if target is not None and name in target.members:
                out[name] = f"{mod}.{name}"
                break
    return out


def _find(module: griffe.Object, path: str) -> griffe.Object | None:
    """The object at ``path`` in the tree of ``module``'s root package, or None."""
    root = module
    while root.parent is not None:
        root = root.parent
    parts = path.split(".")
    if parts[0] != root.name:
        return None
    obj = root
    for part in parts[1:]:
        obj = obj.members.get(part)
        if obj is None:
            return None
    return obj


def _dedent(source: str) -> str:
    import textwrap

    return textwrap.dedent(source)


def _walk(obj: griffe.Object):
    yield obj
    for member in list(obj.members.values()):
        if not member.is_alias:
            yield from _walk(member)


DOC_COMMENT = re.compile(r"^\s*#:\s?(?P<text>.*)$")
TRAILING_DOC_COMMENT = re.compile(r"#:\s?(?P<text>.*)$")


def doc_comment(lines: list[str], lineno: int) -> str | None:
    """The Sphinx doc-comment of the assignment at 1-based ``lineno``: the ``#:`` lines just above
    it, or a ``#:`` comment at the end of its line."""
    above = []
    i = lineno - 2
    while i >= 0 and DOC_COMMENT.match(lines[i]):
        above.insert(0, DOC_COMMENT.match(lines[i]).group("text"))
        i -= 1
    if above:
        return "\n".join(above)
    m = TRAILING_DOC_COMMENT.search(lines[lineno - 1]) if 0 < lineno <= len(lines) else None
    return m.group("text") if m else None


def unpacked_exports(module: griffe.Module) -> list[griffe.Attribute]:
    """Attributes for the names of the module's ``__all__`` assigned by tuple unpacking at the top
    level (``A, B = 1, 2``), which griffe does not record."""
    names = {n for n in (module.exports or ()) if isinstance(n, str) and n not in module.members}
    if not names or not module.filepath or isinstance(module.filepath, list):
        return []
    out = []
    for node in ast.parse("\n".join(module.lines)).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple)):
            continue
        values = node.value.elts if isinstance(node.value, ast.Tuple) else [None] * len(node.targets[0].elts)
        for target, value in zip(node.targets[0].elts, values):
            if isinstance(target, ast.Name) and target.id in names:
                out.append(griffe.Attribute(target.id, value=ast.unparse(value) if value is not None else None,
                                            lineno=node.lineno, endlineno=node.end_lineno, parent=module))
    return out


class BatchlawDocs(griffe.Extension):
    """Rewrites reST markup in the docstrings, reads ``#:`` doc-comments of constants, and adds the
    names griffe misses: lazily re-exported ones and tuple-unpacked constants."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.name != "batchlaw":
            return
        for obj in list(_walk(pkg)):
            if obj.is_module:
                for name, target in lazy_exports(obj).items():
                    obj.set_member(name, griffe.Alias(name, target, parent=obj))
                for attr in unpacked_exports(obj):
                    obj.set_member(attr.name, attr)
        for obj in list(_walk(pkg)):
            if obj.is_attribute and obj.docstring is None and obj.lineno:
                text = doc_comment(obj.module.lines, obj.lineno)
                if text:
                    obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
