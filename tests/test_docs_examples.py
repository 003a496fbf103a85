"""Every code block of the user docs runs (README.md and docs/*.md), so the docs cannot drift from the code.

The convention (documented in docs/contributing.md):

- ```python blocks of one page run in order in one shared namespace;
- ```sh / ```bash blocks run with ``bash -e``, with ``batchlaw`` (and this Python's scripts, e.g.
  ``torchrun``) on PATH;
- both run in a temporary directory holding a copy of the repository's ``examples/``;
- ```text blocks (and any other language) are never run;
- a block preceded, on the line just before its fence, by ``<!-- skip-test: reason -->`` is skipped.

In the tests, ``batchlaw`` is a small wrapper script that runs this checkout's CLI
(``PYTHONPATH=<repo>/src <this python> -m batchlaw``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)[^\n]*$")
SKIP = re.compile(r"^\s*<!--\s*skip-test:\s*(?P<reason>.*?)\s*-->\s*$")
RUN_AS = {"python": "python", "py": "python", "sh": "sh", "bash": "sh", "shell": "sh", "console": None}


@dataclass
class Block:
    """One fenced code block of a page."""

    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    skip: str | None  # the skip-test reason, if any


def parse_blocks(text: str) -> list[Block]:
    """The fenced blocks of a Markdown text, with their language, first line and skip marker."""
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
        i += 1  # the closing fence
        skip = SKIP.match(lines[start - 1]) if start > 0 else None
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, skip.group("reason") if skip else None))
    return blocks


def doc_pages() -> list[Path]:
    """README.md and every Markdown page of docs/ (the build hooks' folder excluded)."""
    pages = [ROOT / "README.md"]
    pages += sorted(p for p in (ROOT / "docs").rglob("*.md") if not any(s.startswith("_") for s in p.parts[-2:-1]))
    return pages


def _page_id(p: Path) -> str:
    return p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else p.name


@pytest.fixture
def docs_cwd(tmp_path, monkeypatch):
    """A temporary directory with a copy of examples/ and a ``batchlaw`` wrapper on PATH."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "batchlaw"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "src"}${{PYTHONPATH:+:$PYTHONPATH}}" '
                       f'exec "{sys.executable}" -m batchlaw "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.chdir(work)
    env = {"OMP_NUM_THREADS": "1", **os.environ, "MPLBACKEND": "Agg",  # one thread per process: pytest runs -n 2
           # the wrapper first, then this Python's own scripts (torchrun), then the caller's PATH
           "PATH": os.pathsep.join([str(bindir), os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return work, env


def run_page(page: Path, cwd: Path, env: dict) -> int:
    """Run the page's python and sh blocks in order; returns how many ran."""
    namespace: dict = {"__name__": "__main__"}
    ran = 0
    for block in parse_blocks(page.read_text(encoding="utf-8")):
        kind = RUN_AS.get(block.lang)
        if kind is None or block.skip is not None:
            continue
        where = f"{_page_id(page)}, block at line {block.line}"
        if kind == "python":
            try:
                exec(compile(block.code, f"<{where}>", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"{where} failed: {type(err).__name__}: {err}\n--- block ---\n{block.code}") from err
        else:
            proc = subprocess.run(["bash", "-e", "-c", block.code], cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=300)
            assert proc.returncode == 0, (f"{where} exited {proc.returncode}\n--- block ---\n{block.code}"
                                          f"--- stdout ---\n{proc.stdout[-3000:]}--- stderr ---\n{proc.stderr[-3000:]}")
        ran += 1
    return ran


@pytest.mark.parametrize("page", doc_pages(), ids=_page_id)
def test_doc_page_code_blocks_run(page, docs_cwd):
    cwd, env = docs_cwd
    run_page(page, cwd, env)


def test_skip_markers_give_a_reason_and_sit_on_the_line_before_a_fence():
    for page in doc_pages():
        lines = page.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip().startswith("<!--") and "skip-test" in line:
                m = SKIP.match(line)
                assert m and m.group("reason"), f"{_page_id(page)}:{i + 1}: write <!-- skip-test: reason -->"
                assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), \
                    f"{_page_id(page)}:{i + 1}: a skip-test marker must be on the line just before a fence"


def test_the_runner_runs_what_it_should_and_fails_when_a_block_fails(tmp_path, docs_cwd):
    cwd, env = docs_cwd
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 2\n```\n\n```python\nassert x == 2\nopen('from_py.txt', 'w').write('hi')\n```\n\n"
        "```sh\ntest -f examples/learning_curve.csv\ntest -f from_py.txt\nbatchlaw --version\n```\n\n"
        "```text\nthis is output, never run\n```\n\n<!-- skip-test: needs a cluster -->\n```sh\nexit 3\n```\n"
    )
    assert run_page(page, cwd, env) == 3
    page.write_text("```bash\ntrue\nfalse\necho never\n```\n")
    with pytest.raises(AssertionError, match="exited 1"):
        run_page(page, cwd, env)
    page.write_text("```python\ny = 1\n```\n```python\nassert y == 2, 'y'\n```\n")
    with pytest.raises(AssertionError, match="line 4 failed: AssertionError"):
        run_page(page, cwd, env)
