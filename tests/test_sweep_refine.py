"""The learning-rate search refines around an interior optimum (halving the log spacing), and a
sweep without the option behaves and stores exactly as before."""

import pytest

from batchlaw.sweep import LRSearch, SweepConfig


def _steps(lr):  # fewest steps at lr = 1.5, a steep wall beyond 2 (divergence), like the NQM near its edge
    if lr >= 2.0:
        return {"status": "diverged", "steps_to_target": None}
    return {"status": "reached", "steps_to_target": 10.0 * (1.5 / lr + lr / 1.5)}


def _run(search):
    while True:
        for lr in search.pending():
            search.record(lr, _steps(lr))
        if not search.extend():
            return search


def test_refinement_closes_in_on_the_optimum():
    coarse = _run(LRSearch(center=1.0, factor=2.0, points=3, max_extensions=3))
    fine = _run(LRSearch(center=1.0, factor=2.0, points=3, max_extensions=3, refine=3))
    assert coarse.best()[0] == 1.0 and len(coarse.grid) == 3
    assert fine.best()[0] == pytest.approx(1.5, rel=0.05)  # 2^(1/8) resolution: 1.542
    assert fine.best()[1]["steps_to_target"] < coarse.best()[1]["steps_to_target"]
    assert len(fine.grid) == 3 + 2 * 3 and len(set(fine.grid)) == len(fine.grid)
    assert sorted(fine.grid)[0] == 0.5 and 2.0 in fine.grid  # midpoints only, inside the first grid


def test_refinement_waits_for_an_interior_best():
    s = LRSearch(center=0.1, factor=2.0, points=3, max_extensions=5, refine=1)
    _run(s)
    lrs = sorted(s.grid)
    assert s.extensions >= 1 and s.refinements == 1  # widened up to the optimum first, then refined
    assert s.best()[0] not in (lrs[0], lrs[-1])


def test_config_without_refinement_keeps_its_stored_form():
    base = dict(workload="nqm", batch_sizes=(4, 8), target_loss=0.1, max_steps=10, lr_base=0.1)
    assert "lr_refine" not in SweepConfig(**base).to_dict()
    assert SweepConfig(**base, lr_refine=2).to_dict()["lr_refine"] == 2
    with pytest.raises(ValueError, match="'lr_refine' parameter must be an integer >= 0"):
        SweepConfig(**base, lr_refine=-1)
