"""The noise monitor under real data parallelism: gloo process groups on CPU (DDP and FSDP2)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import _dist_worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_spawned(fn_name: str, world: int, cfg: dict, tmp_path) -> list[dict]:
    """Run ``_dist_worker.<fn_name>`` on ``world`` gloo ranks; return each rank's result."""
    mp.spawn(_dist_worker.entry, args=(world, _free_port(), fn_name, cfg, str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors[0]
    return [r["ok"] for r in results]


_ACCURACY_2 = {
    "b": 8, "steps": 200, "seed": 0,
    "ddp_cases": [
        ("k1_sync", 1, "sync", {}), ("k4_no_sync", 4, "no_sync", {}), ("k4_sync", 4, "sync", {}),
        ("k4_bucket_view", 4, "no_sync", {"gradient_as_bucket_view": True}),
        ("k1_bucket_view", 1, "sync", {"gradient_as_bucket_view": True}),
        ("k2_static_graph", 2, "sync", {"static_graph": True}),
        ("unused_k2", 2, "sync", {"find_unused_parameters": True}),
        ("hook_k2", 2, "no_sync", {}),
    ],
    "fsdp_cases": [("fsdp_k1", 1, "sync", False), ("fsdp_k4_no_sync", 4, "no_sync", False),
                   ("fsdp_k4_sync", 4, "sync", False), ("fsdp_bf16_k2", 2, "sync", True)],
}
_ACCURACY_4 = {
    "b": 8, "steps": 150, "seed": 1,
    "ddp_cases": [("k1_sync", 1, "sync", {}), ("k4_no_sync", 4, "no_sync", {}), ("k4_sync", 4, "sync", {})],
    "fsdp_cases": [("fsdp_k4_no_sync", 4, "no_sync", False)],
}


@pytest.fixture(scope="module")
def world2(tmp_path_factory):
    cfg = {"accuracy_cases": _ACCURACY_2, "bit_for_bit": {},
           "world_one_subgroup": {"b": 8, "steps": 300, "seed": 2},
           "coverage": {"b": 8, "steps": 60, "k": 2, "seeds": 20}, "allreduce_count": {"steps": 12, "every": 3},
           "auto_cadence": {"steps": 120, "sleep_s": 0.002, "target": 0.2},
           "unequal_sizes": {"modes": ["micro_batch", "step", "global_step", "global_step+total"], "steps": 400,
                             "seed": 3}}
    return run_spawned("suite", 2, cfg, tmp_path_factory.mktemp("w2"))


@pytest.fixture(scope="module")
def world4(tmp_path_factory):
    cfg = {"accuracy_cases": _ACCURACY_4, "refusals": {}}
    return run_spawned("suite", 4, cfg, tmp_path_factory.mktemp("w4"))


def _check_accuracy(results, world, cfg):
    truth = results[0]["accuracy_cases"]["truth"]
    names = [c[0] for c in cfg["ddp_cases"]] + [c[0] for c in cfg["fsdp_cases"]]
    for name in names:
        ests = [r["accuracy_cases"][name] for r in results]
        first = ests[0]
        assert all(e["b_simple"] == first["b_simple"] for e in ests), f"{name}: ranks disagree"
        assert first["world_size"] == world
        assert first["b_simple"] == pytest.approx(truth, rel=0.10), f"{name}: {first['b_simple']} vs {truth}"
        assert first["n_steps"] == cfg["steps"]


def test_ddp_and_fsdp2_on_two_ranks_match_the_analytic_noise_scale(world2):
    """B_simple = 33 examples exactly (linreg at fixed weights); before this monitor knew about data
    parallelism it reported about W times the truth under DDP."""
    _check_accuracy(world2, 2, _ACCURACY_2)
    case = world2[0]["accuracy_cases"]["k4_no_sync"]
    assert case["global_batch"] == 2 * 4 * 8 and case["accumulation"] == 4


def test_four_ranks(world4):
    _check_accuracy(world4, 4, _ACCURACY_4)


@pytest.mark.parametrize("mode", ["micro_batch", "step", "global_step", "global_step+total"])
def test_unequal_micro_batches_differing_across_ranks(world2, mode):
    """Rank 0 accumulates 3 micro-batches of about 24 examples, rank 1 4 of about 40 (CV 0.3):
    the first step's norms and batch sizes equal the brute-force sums over all 7 micro-batch
    gradients, every rank gets the same estimate, and it matches the analytic B_simple. Before,
    the monitor refused ranks with different micro-batch sizes."""
    for r in world2:
        case = r["unequal_sizes"][mode]
        first, rec = case["first"], case["record"]
        assert rec["global_batch"] == first["global_batch"]
        for key in ("b_small", "b_big"):
            assert rec[key] == pytest.approx(first[key], rel=1e-9), key
        for key in ("small_sq", "big_sq"):
            assert rec[key] == pytest.approx(first[key], rel=1e-5), key
        assert case["accumulation"] == 3.5
        assert case["b_simple"] == world2[0]["unequal_sizes"][mode]["b_simple"]
    assert world2[0]["unequal_sizes"][mode]["b_simple"] == pytest.approx(world2[0]["unequal_sizes"]["truth"], rel=0.10)


def test_world_size_one_process_group(world2):
    for r in world2:
        res = r["world_one_subgroup"]
        assert res["world_size"] == 1
        assert res["b_simple"] == pytest.approx(res["truth"], rel=0.10)


def test_user_comm_hook_is_still_applied_and_compression_is_harmless(world2):
    case = world2[0]["accuracy_cases"]["hook_k2"]
    assert case["hook_calls"] >= _ACCURACY_2["steps"]  # one bucket per synchronised backward


def test_training_is_bit_for_bit_unchanged_under_ddp(world2):
    for r in world2:
        res = r["bit_for_bit"]
        assert res["False"] and res["True"]  # gradient_as_bucket_view off and on
        assert res["records_False"] == res["records_True"] == 6


def test_one_small_all_reduce_per_measured_step(world2):
    for r in world2:
        assert r["allreduce_count"] == {"calls": 4, "measured": 4}  # 12 steps, every 3rd measured


def test_auto_cadence_is_the_same_on_every_rank(world2):
    """every="auto" with one rank's hooks slow: both ranks switch to the same cadence at the same step (agreed
    through the monitor's all-reduce, still one per measured step) and measure the same steps."""
    a, b = (r["auto_cadence"] for r in world2)
    assert a["cadences"] == b["cadences"] and a["steps"] == b["steps"]
    assert a["report"]["decided_at_step"] == b["report"]["decided_at_step"] == 5  # after 6 measured steps
    assert a["report"]["every"] > 1 and a["cadences"][:5] == [1] * 5
    # measured: steps 0-5, then every k-th
    k = a["report"]["every"]
    assert a["steps"] == list(range(6)) + list(range(5 + k, 120, k))
    assert a["calls"] == b["calls"] == len(a["steps"])
    assert a["report"]["measured_step_cost_s"] == b["report"]["measured_step_cost_s"]  # the mean over ranks


def test_interval_coverage_over_seeds_under_ddp(world2):
    cov = world2[0]["coverage"]
    assert cov["hits"] >= 17, cov  # nominal 95% of 20 seeds; 17 is about 2 binomial SE below 19
    assert max(abs(e) for e in cov["errors"]) < 0.35


@pytest.mark.parametrize("name, pattern", [
    ("unwrapped", r"UnsupportedSetupError: torch.distributed is initialised with 4 ranks"),
    ("ddp_none", r"UnsupportedSetupError: process_group=None"),
    ("powersgd", r"UnsupportedSetupError: The DDP communication hook 'powerSGD_hook'"),
    ("no_sync_last", r"RuntimeError: The last micro-batch ran inside DistributedDataParallel.no_sync"),
    ("tensor_parallel", r"UnsupportedSetupError: Parameter '0.weight' is a DTensor"),
    ("hsdp", r"UnsupportedSetupError: FSDP2 on a 2-D device mesh"),
    ("legacy_fsdp", r"UnsupportedSetupError: The model uses the legacy FullyShardedDataParallel"),
])
def test_unsupported_setups_are_refused_by_name(world4, name, pattern):
    import re

    for r in world4:
        msg = r["refusals"][name]
        assert msg is not None and re.match(pattern, msg), msg


def test_measure_nproc_prints_the_estimate_beside_one_process(capsys):
    """`batchlaw measure --nproc 2` (deliverable: one command to see it work)."""
    import json

    from batchlaw.cli import main

    assert main(["measure", "--workload", "linreg", "--nproc", "2", "--steps", "40",
                 "--no-progress", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["world_size"] == 2 and out["config"]["batch_size"] == 2 * 4 * 16
    single = out["single_process"]
    assert single["config"]["world_size"] == 1 and single["config"]["accumulation"] == 8
    assert single["config"]["batch_size"] == out["config"]["batch_size"]
    assert out["estimate"] is not None or out["provisional_b_simple"] is not None


def test_measure_nproc_divergence_is_a_named_error_on_every_rank(capsys):
    """The ranks agree on the divergence (one all-reduce of the loss) and the parent raises it:
    exit status 1, not an internal error or a hang."""
    from batchlaw.cli import main

    assert main(["measure", "--workload", "linreg", "--nproc", "2", "--lr", "100", "--steps", "40",
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "batchlaw: error: The training loss of workload 'linreg' became" in err
