"""The batch controller under DDP (gloo, 2 ranks on CPU): every rank takes the same decisions."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import _controller_dist_worker  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn_name: str, world: int, cfg: dict, tmp_path) -> list[dict]:
    mp.spawn(_controller_dist_worker.entry, args=(world, _free_port(), fn_name, cfg, str(tmp_path)), nprocs=world,
             join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors[0]
    return [r["ok"] for r in results]


def test_every_rank_takes_the_same_decisions_and_branches_on_averaged_gradients(tmp_path):
    """Branch tests and noise-scale checks on 2 ranks with different data: the same decisions, the same batches,
    the same branch losses, and trunks that stay identical (DDP) through growths."""
    cfg = {"base": 8, "lr": 0.01, "max_batch": 64, "micro": 4, "margin": 0.5, "planned": 20_000, "budget": 0.2,
           "steps": 60}
    r0, r1 = _run("controller_ddp", 2, cfg, tmp_path)
    assert r0["decisions"] == r1["decisions"]
    assert r0["batches"] == r1["batches"]
    assert r0["branch_pairs"] == r1["branch_pairs"] and r0["branch_pairs"]  # at least one branch test ran
    assert any(d["decision"] == "grow" for d in r0["decisions"]) and max(r0["batches"]) > 8
    assert all(b % (2 * 4) == 0 for b in r0["batches"])  # whole micro-batches on both ranks
    assert r0["branch_examples"] == r1["branch_examples"] > 0
    for a, b in zip(r0["weights"], r1["weights"]):
        assert torch.equal(a, b)
    for a, b in zip(r0["branch_weights"], r1["branch_weights"]):  # branches average their gradients over ranks
        assert torch.equal(a, b)
