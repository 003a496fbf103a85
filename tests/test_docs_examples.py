"""Every code block of the user docs runs (README.md and docs/*.md), and every output block shows
what its block prints, so the docs cannot drift from the code.

The conventions are in ``tests/docs_runner.py`` (and docs/contributing.md); ``make docs-outputs``
rewrites the output blocks from what the blocks print.
"""

from __future__ import annotations

import pytest

from docs_runner import (
    OutputSpec,
    compare,
    doc_pages,
    marker_problems,
    page_id,
    parse_blocks,
    regenerate,
    run_page,
    runs_needed,
    check_runs,
)

FIX = "run `make docs-outputs` to rewrite the output blocks from what the blocks print, and review the diff"


@pytest.mark.parametrize("page", doc_pages(), ids=page_id)
def test_doc_page_code_blocks_run_and_print_their_output_blocks(page, tmp_path):
    runs = run_page(page, tmp_path, runs_needed(page))
    failure = runs[0].failure() or (runs[1].failure() if len(runs) > 1 else None)
    assert failure is None, failure
    problems = check_runs(runs)
    assert not problems, "\n\n".join(problems) + f"\n\n{FIX}"


def test_markers_give_a_reason_and_sit_on_the_line_before_a_fence():
    import re

    from docs_runner import FENCE, NOT_OUTPUT, OUTPUT, SKIP

    for page in doc_pages():
        text = page.read_text(encoding="utf-8")
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.strip().startswith("<!--"):
                continue
            where = f"{page_id(page)}:{i + 1}"
            if "skip-test" in line:
                m = SKIP.match(line)
                assert m and m.group("reason"), f"{where}: write <!-- skip-test: reason -->"
            elif re.match(r"\s*<!--\s*(output|not-output)\b", line):
                assert OUTPUT.match(line) or (NOT_OUTPUT.match(line) and NOT_OUTPUT.match(line).group("reason")), \
                    f"{where}: write <!-- output -->, <!-- output: OPTIONS --> or <!-- not-output: reason -->"
            else:
                continue
            assert i + 1 < len(lines) and FENCE.match(lines[i + 1]), \
                f"{where}: a marker must be on the line just before a fence"
        problems = marker_problems(text, page_id(page))
        assert not problems, "\n".join(problems)


def test_the_runner_runs_what_it_should_and_fails_when_a_block_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nx = 2\n```\n\n```python\nassert x == 2\nopen('from_py.txt', 'w').write('hi')\nprint(x)\n```\n\n"
        "<!-- output -->\n```text\n2\n```\n\n"
        "```sh\ntest -f examples/learning_curve.csv\ntest -f from_py.txt\nbatchlaw --version\n```\n\n"
        "```text\nthis is output, never run\n```\n\n<!-- skip-test: needs a cluster -->\n```sh\nexit 3\n```\n"
    )
    (run,) = run_page(page, tmp_path / "a")
    assert run.failure() is None
    assert [r.output for r in run.results.values()] == ["", "2\n", "batchlaw 0.1.0\n"]
    assert check_runs([run]) == []
    page.write_text("```bash\ntrue\nfalse\necho never\n```\n")
    (run,) = run_page(page, tmp_path / "b")
    assert "exited 1" in run.failure()
    page.write_text("```python\ny = 1\n```\n```python\nassert y == 2, 'y'\n```\n")
    (run,) = run_page(page, tmp_path / "c")
    assert "line 4 failed: AssertionError" in run.failure()


def test_an_output_block_that_differs_fails_and_is_rewritten_by_the_regenerator(tmp_path):
    from docs_runner import rewrite_page

    page = tmp_path / "page.md"
    page.write_text("```python\nprint('B_crit = 286 examples')\nprint('a'); print('b'); print('end 3.5')\n```\n\n"
                    "<!-- output -->\n```text\nB_crit = 285 examples\n...\nend 3.5\n```\n")
    (run,) = run_page(page, tmp_path / "a")
    (problem,) = check_runs([run])
    assert "differs" in problem and "-B_crit = 285 examples" in problem and "+B_crit = 286 examples" in problem
    assert rewrite_page(page, run) == 1
    assert "```text\nB_crit = 286 examples\n...\nend 3.5\n```" in page.read_text()
    (run,) = run_page(page, tmp_path / "b")
    assert check_runs([run]) == []


def test_a_page_that_says_its_numbers_vary_is_run_twice_and_must_vary(tmp_path):
    page = tmp_path / "page.md"
    fixed = "```python\nprint('loss', 0.5)\n```\n\n<!-- output: varies -->\n```text\nloss 0.7\n```\n"
    page.write_text(fixed)
    assert runs_needed(page) == 2
    (problem,) = check_runs(run_page(page, tmp_path / "a", 2))
    assert "printed the same numbers" in problem
    page.write_text(fixed.replace("0.5", "__import__('random').random()"))
    assert check_runs(run_page(page, tmp_path / "b", 2)) == []
    page.write_text(fixed.replace("print('loss', 0.5)", "print('loss', 0.5, 'extra')"))
    assert "differs" in check_runs(run_page(page, tmp_path / "c", 2))[0]


def test_compare_numbers_within_tolerance_text_exact_and_ellipsis():
    exact = OutputSpec()
    assert compare("B = 1,210 (95% CI 1,070 to 1,380) examples", "B = 1,210 (95% CI 1,070 to 1,380) examples",
                   exact) is None
    assert compare("B = 1,210 examples", "B = 1,211 examples", exact) is None  # 8e-4 < 1e-3
    assert compare("B = 286 examples", "B = 287 examples", exact) is not None
    assert compare("x = 0.0012", "x = 0.0012000001", exact) is None
    assert compare("x = 1.7 * N^-0.713", "x = 1.47 * N^-0.722", exact) is not None
    assert compare("x = 2 tokens", "x = 2 examples", exact) is not None
    assert compare("x = 2", "x = 2 3", exact) is not None
    assert compare("a   b  1", "a b 1", exact) is None  # tables realign
    assert compare("a\n...\nz 1", "a\nb\nc\nz 1", exact) is None
    assert compare("a\n...\nz 1", "a\nz 1", exact) is None
    assert compare("a\nz 1", "a\nb\nz 1", exact) is not None
    assert compare("t = 76.1 ms", "t = 80.3 ms", OutputSpec(mode="shape")) is None
    assert compare("t = 76.1 ms", "t = 80.3 s", OutputSpec(mode="shape")) is not None
    assert compare("x = 1.00", "x = 1.04", OutputSpec(rtol=0.05)) is None
    assert compare("nan", "0.5", OutputSpec(mode="shape")) is not None  # words are text, never numbers
    assert compare("sweep-3af9 x1", "sweep-3af8 x1", OutputSpec(mode="shape")) is not None  # digits in words


def test_regenerate_keeps_elisions_and_adds_new_lines():
    spec = OutputSpec()
    doc = "hdr\nrow 1\n...\nlaw 0.5\nlaw2 0.6"
    printed = "Approach 2:\nhdr\nrow 1\nrow 2\nrow 3\nlaw 0.51\nlaw2 0.61\nApproach 3: 7"
    assert regenerate(doc, printed, spec) == "Approach 2:\nhdr\nrow 1\n...\nlaw 0.51\nlaw2 0.61\nApproach 3: 7"
    assert regenerate(doc, "hdr\nrow 2\nrow 3\nlaw 1\nlaw2 2", spec) == "hdr\nrow 2\n...\nlaw 1\nlaw2 2"
    assert regenerate("old 1\nold 2", "new 3", spec) == "new 3"
    assert regenerate("...\nlast 1", "a\nb\nlast 2", spec) == "...\nlast 2"


def test_markers_are_checked(tmp_path):
    bad = "```python\nprint(1)\n```\n\n```text\n1\n```\n"
    assert "mark it <!-- output -->" in marker_problems(bad, "p")[0]
    assert marker_problems(bad.replace("```text", "<!-- not-output: a format -->\n```text"), "p") == []
    skipped = "<!-- skip-test: GPU -->\n```sh\nnvidia-smi\n```\n\n<!-- output -->\n```text\nGPU 0\n```\n"
    assert "unchecked" in marker_problems(skipped, "p")[0]
    assert marker_problems(skipped.replace("<!-- output -->", "<!-- output: unchecked: needs a GPU -->"), "p") == []
    assert parse_blocks("<!-- output: shape, rtol=0.1 -->\n```text\nx\n```\n")[0].output == OutputSpec("shape", 0.1)
    with pytest.raises(ValueError, match="unknown output option 'fast'"):
        parse_blocks("<!-- output: fast -->\n```text\nx\n```\n")


def test_regenerate_pairs_changed_lines_by_similarity():
    spec = OutputSpec()
    # The header grew a column, the rows a field, the laws a clause, and lines were added around them.
    doc = ("budget N_opt loss runs\n1e+18 8.04e+07 3.49 7\n...\n"
           "params_opt = 0.0482 * C^0.512 (exponent 95% CI 0.496 to 0.528)\ntokens_opt = 3.46 * C^0.488")
    printed = ("Approach 2 (a parabola):\nbudget N_opt loss runs N_opt 95% CI\n1e+18 8.16e+07 3.49 7 7.9e+07 to 8.3e+07\n"
               "3e+18 1.4e+08 3.19 7 1.3e+08 to 1.5e+08\n"
               "params_opt = 0.0511 * C^0.511 (exponent 95% CI 0.473 to 0.528; 5 budgets)\ntokens_opt = 3.26 * C^0.489\n"
               "Approach 3 on the same runs: E = 1.81")
    assert regenerate(doc, printed, spec).split("\n") == [
        "Approach 2 (a parabola):", "budget N_opt loss runs N_opt 95% CI", "1e+18 8.16e+07 3.49 7 7.9e+07 to 8.3e+07",
        "...", "params_opt = 0.0511 * C^0.511 (exponent 95% CI 0.473 to 0.528; 5 budgets)",
        "tokens_opt = 3.26 * C^0.489", "Approach 3 on the same runs: E = 1.81"]
    doc = "...\nlr_opt = 1.7 * N^-0.713 (95% CI: N exp -0.717 to -0.708)\nB_opt = 0.592 * D^0.570 (tokens)"
    printed = "table\nrow 1\nlr_opt = 1.47 * N^-0.722 (95% CI: N exp -0.748 to -0.701; 9 groups)\nB_opt = 0.417 * D^0.585 (tokens; 9 groups)"
    assert regenerate(doc, printed, spec).split("\n") == ["...", printed.split("\n")[2], printed.split("\n")[3]]


def test_a_block_that_matches_is_not_rewritten(tmp_path):
    from docs_runner import rewrite_page

    page = tmp_path / "page.md"
    text = "```python\nimport time\nprint(f'step {time.perf_counter() % 1:.3f} ms')\n```\n\n<!-- output: shape -->\n```text\nstep 0.5 ms\n```\n"
    page.write_text(text)
    (run,) = run_page(page, tmp_path / "a")
    assert rewrite_page(page, run) == 0 and page.read_text() == text


def test_numbers_inside_a_free_regex_are_free_and_the_others_still_compared():
    spec = parse_blocks("<!-- output: rtol=0.01, free=\\S+ \\[[^\\]]*\\](?= +\\S+$) -->\n```text\nx\n```\n")[0].output
    assert spec.rtol == 0.01 and spec.free == "\\S+ \\[[^\\]]*\\](?= +\\S+$)"
    doc = "name  steps 56.3 [20, 92.5]  wall 0.0547 [0, 0.138]  1.00"
    assert compare(doc, "name  steps 56.3 [20, 92.5]  wall 0.0144 [0.00979, 0.019]  1.00", spec) is None
    assert compare(doc, "name  steps 57.9 [20, 92.5]  wall 0.0144 [0.00979, 0.019]  1.00", spec) is not None
    assert compare(doc, "name  steps 56.3 [20, 92.5]  wall 0.0144 [0.00979, 0.019]  1.50", spec) is not None
    assert compare(doc, "name  steps 56.3 [20, 92.5]  wall 0.0144 [0.00979, 0.019]  1.00",
                   OutputSpec(rtol=0.01)) is not None  # without the regex, the timing must agree
