"""Sweeps: for each batch size, search the learning rate for the fewest steps to the target.

For each batch size ``B`` (and seed) the search starts from a log grid of ``lr_points``
learning rates spaced by ``lr_factor`` around ``lr_base * (B / B_ref)^lr_scaling`` (linear
scaling for SGD, square root for Adam; ``B_ref`` is the smallest batch). After each round, if
the best learning rate sits at an edge of its grid, the grid widens by one point on that side;
if every trial diverged it widens downwards, if none reached the target without diverging it
widens upwards; at most ``max_extensions`` times. Rounds run all pending trials of all batch
sizes in parallel, on a local process pool or on a Ray cluster, and every finished trial is
stored at once (:class:`~batchlaw.sweep.store.TrialStore`): a rerun skips finished trials.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from tqdm.auto import tqdm

from .._validation import check_choice, check_positive_float, check_positive_int
from .store import TrialStore
from .trial import TrialSpec, run_trial

__all__ = ["SweepConfig", "LRSearch", "run_sweep", "LocalExecutor", "RayExecutor", "make_executor"]


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep measures. Batch sizes are in examples (sequences for language models)."""

    workload: str
    batch_sizes: tuple[int, ...]
    target_loss: float
    max_steps: int
    lr_base: float
    name: str = "sweep"
    workload_kwargs: dict = field(default_factory=dict)
    target_on: str = "heldout"
    eval_every: int = 10
    seeds: tuple[int, ...] = (0,)
    lr_scaling: float = 1.0
    lr_factor: float = 2.0
    lr_points: int = 3
    max_extensions: int = 3
    micro_batches: int = 2

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise ValueError("The 'batch_sizes' parameter must list at least one batch size.")
        for b in self.batch_sizes:
            check_positive_int("batch_sizes", b)
        check_positive_float("target_loss", self.target_loss)
        check_positive_int("max_steps", self.max_steps)
        check_positive_float("lr_base", self.lr_base)
        check_positive_int("eval_every", self.eval_every)
        check_choice("target_on", self.target_on, ("heldout", "train"))
        if not self.lr_factor > 1:
            raise ValueError(f"The 'lr_factor' parameter must be > 1. Got {self.lr_factor!r} instead.")
        check_positive_int("lr_points", self.lr_points)
        check_positive_int("max_extensions", self.max_extensions, minimum=0)
        check_positive_int("micro_batches", self.micro_batches)
        if not self.seeds:
            raise ValueError("The 'seeds' parameter must list at least one seed.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["batch_sizes"], d["seeds"] = list(self.batch_sizes), list(self.seeds)
        return d

    def spec(self, batch_size: int, lr: float, seed: int) -> TrialSpec:
        return TrialSpec(workload=self.workload, batch_size=batch_size, lr=lr, seed=seed,
                         target_loss=self.target_loss, max_steps=self.max_steps, eval_every=self.eval_every,
                         target_on=self.target_on, micro_batches=self.micro_batches,
                         workload_kwargs=dict(self.workload_kwargs))


class LRSearch:
    """The learning-rate search at one batch size (see the module docstring)."""

    def __init__(self, center: float, factor: float, points: int, max_extensions: int) -> None:
        self.factor = factor
        self.max_extensions = max_extensions
        self.extensions = 0
        half = (points - 1) / 2
        self.grid = [_round_lr(center * factor ** (i - half)) for i in range(points)]
        self.results: dict[float, dict] = {}

    def pending(self) -> list[float]:
        return [lr for lr in self.grid if lr not in self.results]

    def record(self, lr: float, result: dict) -> None:
        self.results[lr] = result

    def best(self) -> tuple[float, dict] | None:
        reached = [(r["steps_to_target"], lr) for lr, r in self.results.items() if r["status"] == "reached"]
        if not reached:
            return None
        _, lr = min(reached)
        return lr, self.results[lr]

    def at_edge(self) -> str | None:
        """``"low"`` / ``"high"`` when the best learning rate is the smallest / largest tried."""
        best = self.best()
        if best is None:
            return None
        lrs = sorted(self.grid)
        return "low" if best[0] == lrs[0] else "high" if best[0] == lrs[-1] else None

    def extend(self) -> bool:
        """Add a learning rate where the evidence points; ``False`` when the search is over."""
        if self.pending() or self.extensions >= self.max_extensions:
            return False
        lrs = sorted(self.grid)
        statuses = [self.results[lr]["status"] for lr in lrs]
        if self.best() is not None:
            edge = self.at_edge()
            if edge is None:
                return False
            # one more learning rate beyond the edge where the best sits
            new = lrs[0] / self.factor if edge == "low" else lrs[-1] * self.factor
        elif all(s == "diverged" for s in statuses):
            new = lrs[0] / self.factor
        elif all(s == "budget" for s in statuses):
            new = lrs[-1] * self.factor
        else:  # too small is too slow, too large diverges: nothing reaches the target
            return False
        self.grid.append(_round_lr(new))
        self.extensions += 1
        return True


def _round_lr(lr: float) -> float:
    return float(f"{lr:.6g}")


# ------------------------------------------------------------------ executors
class LocalExecutor:
    """Runs trials in a local process pool (``jobs`` processes; 1 runs them in this process)."""

    def __init__(self, jobs: int = 2) -> None:
        self.jobs = check_positive_int("jobs", jobs)
        self._pool = None

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        if self.jobs == 1:
            for item in items:
                yield fn(item)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def close(self) -> None:
        """Stop the pool; workers still running a trial (after Ctrl-C) are terminated, since
        their trial would be rerun anyway (only finished trials are stored)."""
        if self._pool is not None:
            processes = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in processes:
                if proc.is_alive():
                    proc.terminate()
            self._pool = None


class RayExecutor:
    """Runs trials as Ray tasks: on a cluster (``address``) or a local Ray instance.

    Args:
        address: a Ray cluster address (``"auto"`` or ``"ray://host:port"``); ``None`` starts
            a local instance with ``jobs`` CPUs.
        jobs: CPUs of the local instance.
    """

    def __init__(self, address: str | None = None, jobs: int = 2) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - depends on the environment
            raise ValueError("--executor ray needs Ray: pip install 'batchlaw[ray]'.") from None
        self.ray = ray
        self._started = False
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": check_positive_int("jobs", jobs)}
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            self._started = True
        self._remote = ray.remote(num_cpus=1)(run_trial)

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        if fn is not run_trial:
            raise ValueError("RayExecutor runs batchlaw trials only.")
        pending = [self._remote.remote(item) for item in items]
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                yield self.ray.get(done[0])
        finally:
            for ref in pending:
                self.ray.cancel(ref)

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def make_executor(kind: str, jobs: int = 2, address: str | None = None):
    """The executor named ``kind``: ``"local"`` (a process pool of ``jobs``) or ``"ray"`` (Ray tasks).

    Args:
        kind: ``"local"`` or ``"ray"``.
        jobs: parallel trials (local processes, or CPUs of a local Ray instance).
        address: Ray cluster address (``"ray"`` only; default: start a local Ray instance).

    Raises:
        ValueError: an unknown ``kind``.
    """
    kind = check_choice("executor", kind, ("local", "ray"))
    return LocalExecutor(jobs) if kind == "local" else RayExecutor(address, jobs)


# ------------------------------------------------------------------ the sweep
def run_sweep(
    config: SweepConfig,
    store: TrialStore,
    executor=None,
    *,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run (or resume) a sweep; returns the results of all its trials.

    Finished trials found in ``store`` are reused, never rerun. Each new result is stored
    before the next is handled.
    """
    store.save_sweep(config.name, config.to_dict())
    executor = executor or LocalExecutor(1)
    b_ref = min(config.batch_sizes)
    searches = {
        (b, seed): LRSearch(config.lr_base * (b / b_ref) ** config.lr_scaling, config.lr_factor,
                            config.lr_points, config.max_extensions)
        for b in config.batch_sizes for seed in config.seeds
    }
    bar = tqdm(total=0, desc=f"sweep {config.name}", unit="trial", disable=not progress, leave=False)
    all_results: list[dict] = []
    try:
        while True:
            todo: list[tuple[tuple[int, int], float, TrialSpec]] = []
            for (b, seed), search in searches.items():
                for lr in search.pending():
                    todo.append(((b, seed), lr, config.spec(b, lr, seed)))
            if not todo:
                if not any(search.extend() for search in list(searches.values())):
                    break
                continue
            bar.total += len(todo)
            bar.refresh()
            to_run = []
            by_key = {}
            for sk, lr, spec in todo:
                by_key[spec.key] = (sk, lr)
                stored = store.get(spec.key)
                if stored is not None:
                    searches[sk].record(lr, stored)
                    all_results.append(stored)
                    bar.update(1)
                else:
                    to_run.append(spec.to_dict())
            for result in executor.map_unordered(run_trial, to_run):
                store.add(config.name, result)
                sk, lr = by_key[result["key"]]
                searches[sk].record(lr, result)
                all_results.append(result)
                bar.update(1)
                if on_result is not None:
                    on_result(result)
    finally:
        bar.close()
    return all_results
