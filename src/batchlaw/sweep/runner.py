"""Sweeps: for each batch size, search the learning rate for the fewest steps to the target.

For each batch size ``B`` (and seed) the search starts from a log grid of ``lr_points``
learning rates spaced by ``lr_factor`` around ``lr_base * (B / B_ref)^lr_scaling`` (linear
scaling for SGD, square root for Adam; ``B_ref`` is the smallest batch). After each round, if
the best learning rate sits at an edge of its grid, the grid widens by one point on that side;
if every trial diverged it widens downwards, if none reached the target without diverging it
widens upwards; at most ``max_extensions`` times. Then, ``lr_refine`` times, the search adds
the geometric midpoints between the best learning rate and its neighbours (halving the grid
spacing in log space around the optimum): a coarse grid otherwise overstates the fewest steps,
most where the optimum sits next to divergence (large batches), which biases ``B_crit``
(docs/nqm.md). Rounds run all pending trials of all batch sizes in parallel, on a local process
pool or on a Ray cluster, and every finished trial is stored at once
(:class:`~batchlaw.sweep.store.TrialStore`): a rerun skips finished trials.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Iterator

from tqdm.auto import tqdm

from .._validation import check_choice, check_positive_int
from .config import SweepConfig
from .store import TrialStore
from .trial import TrialSpec, run_trial

__all__ = ["LRSearch", "run_sweep", "LocalExecutor", "RayExecutor", "make_executor"]


class LRSearch:
    """The learning-rate search at one batch size (see the module docstring)."""

    def __init__(self, center: float, factor: float, points: int, max_extensions: int, refine: int = 0) -> None:
        self.factor = factor
        self.max_extensions = max_extensions
        self.extensions = 0
        self.refine = refine
        self.refinements = 0
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
                return self._refine()
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

    def _refine(self) -> bool:
        """Add the log-midpoints between the (interior) best learning rate and its neighbours."""
        if self.refinements >= self.refine:
            return False
        lrs = sorted(self.grid)
        i = lrs.index(self.best()[0])
        new = [_round_lr((lrs[i] * lrs[j]) ** 0.5) for j in (i - 1, i + 1)]
        new = [lr for lr in new if lr not in self.grid]
        self.refinements += 1
        if not new:
            return False
        self.grid.extend(new)
        return True


def _round_lr(lr: float) -> float:
    return float(f"{lr:.6g}")


# ------------------------------------------------------------------ executors
class LocalExecutor:
    """Runs trials in a local process pool (``jobs`` processes; 1 runs them in this process).

    A worker of a plain process pool whose parent is killed from outside (SIGKILL, the OOM
    killer) would go on training, then wait for work forever. Each worker here watches its
    parent's pid (:func:`_die_with_parent`) and exits within a second of the parent's death.
    """

    def __init__(self, jobs: int = 2) -> None:
        self.jobs = check_positive_int("jobs", jobs)
        self._pool = None

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        if self.jobs == 1:
            for item in items:
                yield fn(item)
            return
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_die_with_parent, initargs=(os.getpid(),))
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


def _die_with_parent(parent: int, poll_s: float = 0.5) -> None:
    """Worker initializer: exit once ``parent``, the process that started this one, is gone.

    A daemon thread polls ``os.getppid()`` (an orphan is re-parented). Not Linux's
    ``prctl(PR_SET_PDEATHSIG)``: that signal follows the parent *thread* that spawned the
    worker, which may end while the parent process lives on; polling works on every platform.
    """
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="batchlaw-parent-watch", daemon=True).start()


class RayExecutor:
    """Runs trials as Ray tasks: on a cluster (``address``) or a local Ray instance.

    Args:
        address: a Ray cluster address (``"auto"`` or ``"ray://host:port"``); ``None`` starts
            a local instance with ``jobs`` CPUs.
        jobs: CPUs of the local instance.
        runtime_env: Ray ``runtime_env`` of the trial tasks, e.g. ``{"py_modules": [...]}`` or
            ``{"working_dir": "."}`` to ship the module of your own workload to the cluster.
    """

    def __init__(self, address: str | None = None, jobs: int = 2, runtime_env: dict | None = None) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - depends on the environment
            raise ValueError("--executor ray needs Ray: pip install 'batchlaw[ray]'.") from None
        self.ray = ray
        self._started = False
        if runtime_env is not None and not isinstance(runtime_env, dict):
            raise ValueError(f"The 'runtime_env' parameter must be a dict. Got {runtime_env!r} instead.")
        task_env = runtime_env
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": check_positive_int("jobs", jobs)}
            if runtime_env:  # job level: local py_modules / working_dir are uploaded only here
                kwargs["runtime_env"], task_env = runtime_env, None
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            self._started = True
        self._remote = ray.remote(num_cpus=1)(run_trial)
        if task_env:  # Ray already running: per task (URIs, env_vars, pip; not local directories)
            self._remote = self._remote.options(runtime_env=task_env)

    def map_unordered(self, fn: Callable, items: list) -> Iterator:
        from ..workloads import WorkloadImportError

        if fn is not run_trial:
            raise ValueError("RayExecutor runs batchlaw trials only.")
        pending = [self._remote.remote(item) for item in items]
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                try:
                    yield self.ray.get(done[0])
                except self.ray.exceptions.RayTaskError as err:
                    cause = getattr(err, "cause", None)
                    if isinstance(cause, WorkloadImportError):
                        raise ValueError(f"module {cause.module!r} not importable on the cluster: ship it with "
                                         "runtime_env (--ray-runtime-env '{\"working_dir\": \".\"}' or "
                                         "RayExecutor(runtime_env=...)).") from None
                    if isinstance(cause, ValueError):
                        raise ValueError(str(cause)) from None
                    raise
        finally:
            for ref in pending:
                self.ray.cancel(ref)

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


def make_executor(kind: str, jobs: int = 2, address: str | None = None, runtime_env: dict | None = None):
    """The executor named ``kind``: ``"local"`` (a process pool of ``jobs``) or ``"ray"`` (Ray tasks).

    Args:
        kind: ``"local"`` or ``"ray"``.
        jobs: parallel trials (local processes, or CPUs of a local Ray instance).
        address: Ray cluster address (``"ray"`` only; default: start a local Ray instance).
        runtime_env: Ray ``runtime_env`` of the trials (``"ray"`` only), e.g. ``{"working_dir": "."}``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    kind = check_choice("executor", kind, ("local", "ray"))
    return LocalExecutor(jobs) if kind == "local" else RayExecutor(address, jobs, runtime_env)


# ------------------------------------------------------------------ progress
class _Progress:
    """Trials done out of the trials planned (the total grows when a search widens).

    On a terminal, a tqdm bar that stays at 100% when done; elsewhere (a log file, CI) one
    plain line per 10% and at the end, never a carriage return.
    """

    def __init__(self, total: int, desc: str, enabled: bool, stream=None) -> None:
        self.total, self.n, self.desc = total, 0, desc
        self.stream = stream or sys.stderr
        self.enabled = enabled
        tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = tqdm(total=total, desc=desc, unit="trial", file=self.stream, leave=True) if tty else None
        self._logged, self._last_n = -1, None
        self._t0 = time.perf_counter()

    def grow(self, total: int) -> None:
        if total > self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def update(self, k: int = 1) -> None:
        self.n += k
        if self._bar is not None:
            self._bar.update(k)
        elif self.enabled:
            decile = int(10 * self.n / max(self.total, 1))
            if decile > self._logged:
                self._logged = decile
                self._line()

    def _line(self) -> None:
        pct = 100 * self.n / max(self.total, 1)
        self._last_n = self.n
        print(f"{self.desc}: {self.n}/{self.total} trials ({pct:.0f}%, {time.perf_counter() - self._t0:.0f} s)",
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self._last_n != self.n:
            self._line()


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
                            config.lr_points, config.max_extensions, config.lr_refine)
        for b in config.batch_sizes for seed in config.seeds
    }
    bar = _Progress(sum(len(s.grid) for s in searches.values()), f"sweep {config.name}", progress)
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
            bar.grow(sum(len(s.grid) for s in searches.values()))
            to_run = []
            by_key = {}
            for sk, lr, spec in todo:
                by_key[spec.key] = (sk, lr)
                stored = store.get(spec.key, sweep=config.name)
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
