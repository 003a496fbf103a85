"""Run the code blocks of the user docs and check (or rewrite) the output blocks under them.

Used by ``tests/test_docs_examples.py`` and by ``make docs-outputs``, which rewrites every output
block from what its command prints::

    python tests/docs_runner.py                 # rewrite the output blocks of README.md and docs/*.md
    python tests/docs_runner.py docs/howto-plan.md --check   # compare only, exit 1 on a difference

The conventions (documented in docs/contributing.md):

- ```python blocks of one page run in order in one shared namespace, in one fresh Python process
  per page; ```sh / ```bash blocks run with ``bash -e`` in the same order, with ``batchlaw`` (and
  this Python's scripts, e.g. ``torchrun``) on PATH;
- both run in a temporary directory holding a copy of the repository's ``examples/``, with one
  thread per process (``OMP_NUM_THREADS=1``) and ``PYTHONUNBUFFERED=1``;
- a block preceded, on the line just before its fence, by ``<!-- skip-test: reason -->`` is skipped;
- a ```text block preceded by ``<!-- output -->`` shows what the runnable block above it prints
  (stdout and stderr together, as a terminal shows them) and is compared with it:

  * the text must match exactly, except runs of spaces (tables realign) and numbers, which must
    agree within a relative 1e-3 (``rtol=...`` in the marker changes that);
  * a line ``...`` stands for any number of lines (none included), in the block and when rewritten;
  * ``<!-- output: shape -->`` (timings): only the text is compared, every number is free;
  * ``<!-- output: free=REGEX -->``: the numbers inside the text that REGEX matches on a line (a
    timing column) are free, the others compared; it comes last, after any other option;
  * ``<!-- output: varies -->``: the page says the numbers change from run to run; the test runs the
    page twice and fails unless some number differs (the text is compared as for ``shape``);
  * ``<!-- output: unchecked: reason -->``: the block above is skipped (a GPU, a cluster), so its
    output cannot be compared;
  * ``<!-- not-output: reason -->``: a text block right under a runnable block that is not its output.

  Options combine with commas: ``<!-- output: varies, rtol=0.05 -->``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^\n]*$")
SKIP = re.compile(r"^\s*<!--\s*skip-test:\s*(?P<reason>.*?)\s*-->\s*$")
OUTPUT = re.compile(r"^\s*<!--\s*output(?::\s*(?P<opts>.*?))?\s*-->\s*$")
NOT_OUTPUT = re.compile(r"^\s*<!--\s*not-output:\s*(?P<reason>.*?)\s*-->\s*$")
RUN_AS = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh", "console": None}
ELLIPSIS = "..."
DEFAULT_RTOL = 1e-3
BLOCK_TIMEOUT_S = 300


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass
class OutputSpec:
    """The options of an ``<!-- output: ... -->`` marker."""

    mode: str = "exact"  # "exact" (numbers within rtol), "shape" (numbers free), "varies", "unchecked"
    rtol: float = DEFAULT_RTOL
    reason: str = ""
    free: str = ""  # a regex: the numbers inside its matches on a line are free (timings)


@dataclass
class Block:
    """One fenced code block of a page."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    skip: str | None  # the skip-test reason, if any
    end: int = 0  # 1-based line of the closing fence
    output: OutputSpec | None = None  # set when the block is marked as an output block
    not_output: str | None = None  # the reason of a not-output marker, if any
    source: Block | None = field(default=None, repr=False)  # for an output block: the runnable block above

    @property
    def runnable(self) -> bool:
        return RUN_AS.get(self.lang) is not None and self.skip is None


def parse_output_spec(opts: str | None, where: str = "") -> OutputSpec:
    """The options of an output marker: ``shape``, ``varies``, ``unchecked: reason``, ``rtol=X``."""
    spec = OutputSpec()
    if not opts:
        return spec
    if opts.startswith("unchecked"):
        spec.mode, spec.reason = "unchecked", opts.partition(":")[2].strip()
        if not spec.reason:
            raise ValueError(f"{where}: write <!-- output: unchecked: reason -->")
        return spec
    opts, _, free = opts.partition("free=")
    if free:
        spec.free = free.strip()
        re.compile(spec.free)  # a bad regex fails here, naming nothing else
    for opt in (o.strip() for o in opts.split(",")):
        if opt in ("shape", "varies"):
            spec.mode = opt
        elif opt.startswith("rtol="):
            spec.rtol = float(opt[5:])
        elif opt:
            raise ValueError(f"{where}: unknown output option {opt!r} (allowed: shape, varies, rtol=X, "
                             "free=REGEX (last), unchecked: reason)")
    return spec


def parse_blocks(text: str, where: str = "<page>") -> list[Block]:
    """The fenced blocks of a Markdown text, with their markers; each output block knows its source."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group("fence"), m.group("lang").lower(), i
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][len(m.group("indent")):] if lines[i].startswith(m.group("indent")) else lines[i])
            i += 1
        prev = lines[start - 1] if start > 0 else ""
        skip, out, not_out = SKIP.match(prev), OUTPUT.match(prev), NOT_OUTPUT.match(prev)
        block = Block(lang, "\n".join(body) + "\n", start + 1, skip.group("reason") if skip else None, end=i + 1,
                      not_output=not_out.group("reason") if not_out else None)
        if out:
            block.output = parse_output_spec(out.group("opts"), f"{where}:{start}")
        blocks.append(block)
        i += 1  # the closing fence
    last_runnable = None
    for block in blocks:
        if block.output is not None:
            block.source = last_runnable
        elif RUN_AS.get(block.lang) is not None:
            last_runnable = block
    return blocks


def doc_pages() -> list[Path]:
    """README.md and every Markdown page of docs/ (the build hooks' folder excluded)."""
    pages = [ROOT / "README.md"]
    pages += sorted(p for p in (ROOT / "docs").rglob("*.md") if not any(s.startswith("_") for s in p.parts[-2:-1]))
    return pages


def page_id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


def marker_problems(text: str, where: str) -> list[str]:
    """Output blocks without a runnable block to come from, and unmarked text right under a runnable block."""
    problems = []
    lines = text.splitlines()
    blocks = parse_blocks(text, where)
    for prev, block in zip([None, *blocks], blocks):
        if block.output is not None:
            if block.source is None:
                problems.append(f"{where}:{block.line}: an output block with no runnable block above it")
            elif block.source.skip is not None and block.output.mode != "unchecked":
                problems.append(f"{where}:{block.line}: the block above is skipped; mark its output "
                                "<!-- output: unchecked: reason -->")
            elif block.source.skip is None and block.output.mode == "unchecked":
                problems.append(f"{where}:{block.line}: the block above runs: compare its output (<!-- output -->)")
            continue
        if block.not_output is not None or RUN_AS.get(block.lang) is not None or prev is None:
            continue
        between = [ln for ln in lines[prev.end:block.line - 1] if ln.strip()]
        if RUN_AS.get(prev.lang) is not None and not between:
            problems.append(f"{where}:{block.line}: a ```{block.lang} block right under a runnable block: mark it "
                            "<!-- output --> (it is compared with what the block prints) or "
                            "<!-- not-output: reason -->")
    return problems


# ---------------------------------------------------------------------------------------------
# Running


def make_workdir(base: Path) -> tuple[Path, dict]:
    """A directory under ``base`` with a copy of examples/, and the environment the blocks run in."""
    work = base / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "batchlaw"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "src"}${{PYTHONPATH:+:$PYTHONPATH}}" '
                       f'exec "{sys.executable}" -m batchlaw "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONUNBUFFERED": "1", "PYTHONHASHSEED": "0", "COLUMNS": "100",
           # the wrapper first, then this Python's own scripts (torchrun), then the caller's PATH
           "PATH": os.pathsep.join([str(bindir), os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTEST_XDIST_WORKER", None)
    return work, env


@dataclass
class Result:
    """What one runnable block did."""

    line: int
    output: str  # stdout and stderr together
    error: str | None  # None when it succeeded


def run_blocks(blocks: list[Block], cwd: Path, env: dict, where: str, stop_after: int | None = None) -> list[Result]:
    """Run the runnable blocks in order in one fresh Python process (sh blocks from it, in order).

    Stops at the first failure (its Result has ``error`` set), or after the block at line ``stop_after``.
    """
    todo = [{"lang": RUN_AS[b.lang], "code": b.code, "line": b.line} for b in blocks if b.runnable
            and (stop_after is None or b.line <= stop_after)]
    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "blocks.json", Path(tmp) / "results.json"
        spec.write_text(json.dumps({"where": where, "blocks": todo}))
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--driver", str(spec), str(out)],
                              cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=BLOCK_TIMEOUT_S * max(len(todo), 1))
        if not out.is_file():
            raise RuntimeError(f"{where}: the block runner died (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return [Result(**r) for r in json.loads(out.read_text())]


def _drive(spec_path: str, out_path: str) -> None:
    """In the fresh process: run each block, record its output, stop at the first failure."""
    import contextlib
    import io
    import traceback

    spec = json.loads(Path(spec_path).read_text())
    namespace: dict = {"__name__": "__main__"}
    results = []
    for b in spec["blocks"]:
        where = f"{spec['where']}, block at line {b['line']}"
        buf, error = io.StringIO(), None
        if b["lang"] == "python":
            with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                try:
                    exec(compile(b["code"], f"<{where}>", "exec"), namespace)
                except BaseException as err:  # noqa: BLE001 - reported, then the page stops
                    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
                    error = f"{where} failed: {type(err).__name__}: {err}\n{tb}"
        else:
            sys.stdout.flush()
            try:
                proc = subprocess.run(["bash", "-e", "-c", b["code"]], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, timeout=BLOCK_TIMEOUT_S)
                buf.write(proc.stdout)
                if proc.returncode != 0:
                    error = f"{where} exited {proc.returncode}"
            except subprocess.TimeoutExpired:
                error = f"{where} ran past {BLOCK_TIMEOUT_S} s"
        results.append({"line": b["line"], "output": buf.getvalue(), "error": error})
        Path(out_path).write_text(json.dumps(results))
        if error:
            break
    Path(out_path).write_text(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# Comparing

# A number: optional sign (not after a word character or a dot), digits with optional thousands
# commas, optional decimals and exponent. Digits inside words (x1, b_simple_lo, sha) are text.
NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]*[A-Za-z_])")


def _split(line: str) -> tuple[str, list[float]]:
    """The line's text with each number replaced by ``#`` (spaces collapsed), and its numbers."""
    nums = [float(m.group().replace(",", "")) for m in NUMBER.finditer(line)]
    return " ".join(NUMBER.sub("#", line).split()), nums


@dataclass
class _Line:
    raw: str
    text: str  # numbers replaced by '#', spaces collapsed
    nums: list[float]
    free: list[bool]  # numbers in a free column: any value matches


def _prepare(lines: list[str], free: str = "") -> list[_Line]:
    """Split each line; the numbers inside the matches of the ``free`` regex are marked free."""
    out = []
    for raw in lines:
        text, nums = _split(raw)
        spans = [m.span() for m in re.finditer(free, raw)] if free else []
        flags = [any(a <= m.start() and m.end() <= b for a, b in spans) for m in NUMBER.finditer(raw)]
        out.append(_Line(raw, text, nums, flags))
    return out


def _lines(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _close(a: float, b: float, rtol: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= rtol * max(abs(a), abs(b)))


def _line_matches(doc: _Line, actual: _Line, spec: OutputSpec) -> bool:
    if doc.text != actual.text or len(doc.nums) != len(actual.nums):
        return False
    return spec.mode != "exact" or all(
        free or _close(x, y, spec.rtol) for x, y, free in zip(doc.nums, actual.nums, doc.free))


def match(doc_lines: list[str], actual: list[str], spec: OutputSpec) -> list[int] | None:
    """For each documented line, the index of the actual line it matched (-1 for ``...``), or None.

    ``...`` lines match any run of actual lines (none included); the first such assignment found
    (shortest runs first) is returned.
    """
    memo: dict = {}
    dl, al = _prepare(doc_lines, spec.free), _prepare(actual, spec.free)

    def go(i: int, j: int):
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(doc_lines):
            res = [] if j == len(actual) else None
        elif doc_lines[i].strip() == ELLIPSIS:
            res = None
            for k in range(j, len(actual) + 1):
                rest = go(i + 1, k)
                if rest is not None:
                    res = [-1, *rest]
                    break
        elif j < len(actual) and _line_matches(dl[i], al[j], spec):
            rest = go(i + 1, j + 1)
            res = None if rest is None else [j, *rest]
        else:
            res = None
        memo[(i, j)] = res
        return res

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * (len(doc_lines) + len(actual)) + 100))
    return go(0, 0)


def compare(documented: str, printed: str, spec: OutputSpec) -> str | None:
    """None when the printed output matches the documented block; else a readable difference."""
    doc, act = _lines(documented), _lines(printed)
    if match(doc, act, spec) is not None:
        return None
    diff = "\n".join(difflib.unified_diff(doc, act, "documented", "printed", lineterm="", n=2))
    rule = {"exact": f"numbers within relative {spec.rtol:g}", "shape": "any numbers",
            "varies": "any numbers"}[spec.mode]
    return f"the output differs (text exact up to spaces, {rule}; '...' lines match any lines):\n{diff}"


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _align(doc: list[str], act: list[str], threshold: float = 0.6) -> dict[int, int]:
    """``{doc index: actual index}``: the in-order pairing of the documented literal lines with the
    printed lines that maximises their total similarity (text with numbers masked; pairs below
    ``threshold`` are never made)."""
    dk = [_split(d)[0] for d in doc]
    ak = [_split(a)[0] for a in act]
    n, m = len(doc), len(act)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    take = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            if doc[i].strip() != ELLIPSIS:
                sim = _similarity(dk[i], ak[j])
                take[i][j] = sim + best[i + 1][j + 1] if sim >= threshold else 0.0
            best[i][j] = max(take[i][j], best[i + 1][j], best[i][j + 1])
    pairs, i, j = {}, 0, 0
    while i < n and j < m:  # the earliest pairing among the best ones
        if take[i][j] > 0 and take[i][j] == best[i][j]:
            pairs[i] = j
            i, j = i + 1, j + 1
        elif best[i][j] == best[i][j + 1]:
            j += 1
        else:
            i += 1
    return pairs


def regenerate(documented: str, printed: str, spec: OutputSpec) -> str:
    """The block's new text: the printed lines, keeping the documented ``...`` elisions.

    When the documented block matches the output's shape (numbers aside), each documented line is
    replaced by the line it matched and each ``...`` is kept. Otherwise the documented lines are
    paired with the printed ones by similarity, in order: an elision still covers the printed lines
    between the lines paired around it, documented lines with no pair go, and printed lines that
    no elision covers are shown (new output appears in the block).
    """
    doc, act = _lines(documented), _lines(printed)
    if ELLIPSIS not in (d.strip() for d in doc):
        return "\n".join(act)
    m = match(doc, act, OutputSpec(mode="shape"))
    if m is not None:
        return "\n".join(ELLIPSIS if k < 0 else act[k] for k in m)
    paired = _align(doc, act)
    out, pos = [], 0
    for i, d in enumerate(doc):
        if d.strip() == ELLIPSIS:
            nxt = next((paired[x] for x in range(i + 1, len(doc)) if x in paired), len(act))
            if nxt > pos:
                out.append(ELLIPSIS)
                pos = nxt
        elif i in paired:
            out.extend(act[pos:paired[i] + 1])
            pos = paired[i] + 1
    out.extend(act[pos:])
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Pages


@dataclass
class PageRun:
    """A page's blocks and what its runnable blocks did."""

    page: Path
    blocks: list[Block]
    results: dict[int, Result]  # by the line of the runnable block

    def failure(self) -> str | None:
        for r in self.results.values():
            if r.error:
                return f"{r.error}\n--- output ---\n{r.output[-3000:]}"
        return None

    def outputs(self):
        """``(output block, printed text or None)`` for each checked output block."""
        for b in self.blocks:
            if b.output is not None and b.output.mode != "unchecked":
                r = self.results.get(b.source.line) if b.source else None
                yield b, (r.output if r else None)


def run_page(page: Path, base: Path, runs: int = 1) -> list[PageRun]:
    """Run a page ``runs`` times, each in a fresh directory under ``base``."""
    text = page.read_text(encoding="utf-8")
    blocks = parse_blocks(text, page_id(page))
    out = []
    for n in range(runs):
        cwd, env = make_workdir(base / f"run{n}")
        results = run_blocks(blocks, cwd, env, page_id(page))
        out.append(PageRun(page, blocks, {r.line: r for r in results}))
    return out


def check_runs(runs: list[PageRun]) -> list[str]:
    """Every difference between the page's output blocks and what was printed, and every false 'varies'."""
    problems = []
    first = runs[0]
    where = page_id(first.page)
    for block, printed in first.outputs():
        at = f"{where}, output block at line {block.line}"
        if printed is None:
            problems.append(f"{at}: its block (line {block.source.line}) did not run")
            continue
        for run in runs:
            diff = compare(block.code, run.results[block.source.line].output, block.output)
            if diff:
                problems.append(f"{at}: {diff}")
                break
        if block.output.mode == "varies":
            if len(runs) < 2:
                problems.append(f"{at}: marked 'varies' but the page ran once")
            else:
                nums = [_split("\n".join(_lines(r.results[block.source.line].output)))[1] for r in runs]
                if all(n == nums[0] for n in nums[1:]):
                    problems.append(f"{at}: marked 'varies' (the page says its numbers change between runs), "
                                    f"but {len(runs)} runs printed the same numbers: make the page say they repeat")
    return problems


def runs_needed(page: Path) -> int:
    """Two runs for a page with a ``varies`` output block, else one."""
    blocks = parse_blocks(page.read_text(encoding="utf-8"), page_id(page))
    return 2 if any(b.output is not None and b.output.mode == "varies" for b in blocks) else 1


def rewrite_page(page: Path, run: PageRun) -> int:
    """Rewrite the page's output blocks from the run; returns how many changed."""
    lines = page.read_text(encoding="utf-8").split("\n")
    changed = 0
    for block, printed in sorted(run.outputs(), key=lambda bp: -bp[0].line):
        if printed is None:
            continue
        if compare(block.code, printed, block.output) is None:
            continue  # it matches: keep it as written (timings in a 'shape' block do not churn)
        new = regenerate(block.code, printed, block.output)
        if new.strip("\n") != block.code.strip("\n"):
            indent = FENCE.match(lines[block.line - 1]).group("indent")
            lines[block.line:block.end - 1] = [indent + ln if ln else ln for ln in new.split("\n")]
            changed += 1
    if changed:
        page.write_text("\n".join(lines), encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rewrite (or --check) the output blocks of the docs from what "
                                                 "their commands print.")
    parser.add_argument("pages", nargs="*", type=Path, help="pages to run (default: README.md and docs/*.md)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on any difference")
    args = parser.parse_args(argv)
    pages = [p.resolve() for p in args.pages] or doc_pages()
    status = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        problems = marker_problems(text, page_id(page))
        blocks = parse_blocks(text, page_id(page))
        if not any(b.output is not None and b.output.mode != "unchecked" for b in blocks):
            if problems:
                print("\n".join(problems))
                status = 1
            continue
        with tempfile.TemporaryDirectory() as tmp:
            runs = run_page(page, Path(tmp), runs_needed(page))
        failure = runs[0].failure()
        if failure:
            print(f"{page_id(page)}: a block failed, its page is left as it was:\n{failure}")
            status = 1
            continue
        problems += check_runs(runs)
        if args.check:
            if problems:
                print("\n\n".join(problems))
                status = 1
            else:
                print(f"{page_id(page)}: outputs match")
        else:
            n = rewrite_page(page, runs[0])
            left = [p for p in problems if "differs" not in p]
            print(f"{page_id(page)}: {n} output block(s) rewritten" + ("".join("\n  " + p for p in left)))
            status |= bool(left)
    return status


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--driver":
        _drive(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
