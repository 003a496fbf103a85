"""The documentation site builds in strict mode: a broken link, a missing reference or any warning fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install 'batchlaw[docs]')")
pytest.importorskip("mkdocstrings")


def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"),
                           "--config-file", str(ROOT / "mkdocs.yml")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
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
