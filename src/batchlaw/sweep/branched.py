"""Branched measurement of the critical batch size over a run (Merrill et al. 2025).

"Critical Batch Size Revisited" (arXiv:2505.23971, section 3): from a checkpoint of a run at
batch ``B`` taken after ``t`` examples, branch short runs at ``k B`` (``k = 1, 2, 4, 8 ...``),
each with the learning rate rescaled for ``k`` (square root for Adam, linear for SGD) and each
trained on the *same budget of examples* (so ``budget / (k B)`` steps). A batch is within the
critical batch size while its loss after the budget is within a tolerance of the ``k = 1``
branch's:

    CBS(t) = the largest ``k B`` such that every ``k' <= k`` has
             ``loss(k') <= loss(1) * (1 + tolerance)``      (relative, the default)
          or ``loss(k') <= loss(1) + tolerance``           (absolute, in the loss's unit).

The tolerance sets the answer: a larger tolerance accepts more degradation and gives a larger
CBS (monotonically); it must exceed the branch-to-branch noise of the loss (the spread over
``seeds``) or the answer is noise. The grid of ``k`` limits the resolution: the true CBS lies
in ``[CBS, next k B)``; when every ``k`` passes, the CBS is only a lower bound (``censored =
"lower"``), when only ``k = 1`` passes, an upper bound (``censored = "upper"``).

Branches are trials: each is stored in SQLite (:class:`BranchStore`) the moment it finishes,
keyed by a hash of its specification, so a rerun after a crash (even SIGKILL) runs only the
branches that had not finished. They run in this process, a local process pool or on Ray
(the executors of :mod:`batchlaw.sweep.runner`).

Two ways in: :func:`measure_branched_cbs` takes your own ``load_checkpoint`` and
``train_steps`` callables (and :func:`run_trunk` your ``save_checkpoint``); the built-in
workloads go through :func:`measure_workload_cbs`, which also records the gradient noise scale
``B_simple(t)`` on the trunk so the two can be compared.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .._validation import check_choice, check_positive_float, check_positive_int
from .runner import LocalExecutor, RayExecutor
from .store import StoreError

__all__ = ["BranchSpec", "BranchStore", "BranchedCBS", "cbs_from_losses", "measure_branched_cbs", "run_trunk",
           "make_branch_executor", "ANALYSIS_KEYS", "BRANCH_LR_EXPONENT", "SCHEMA"]

SCHEMA = "batchlaw.branch/1"

#: Settings that only change how stored branches are analysed, not which branches run: a
#: measurement rerun with other values re-analyses its stored branches.
ANALYSIS_KEYS = ("tolerance", "tolerance_kind")

#: How the learning rate moves with ``k``: ``lr * k ** exponent`` (square root for Adam,
#: Malladi et al. 2022; linear for SGD, Goyal et al. 2017; the same rules as
#: :data:`batchlaw.schedule.LR_RULES`).
BRANCH_LR_EXPONENT = {"sqrt": 0.5, "linear": 1.0, "none": 0.0}


@dataclass(frozen=True)
class BranchSpec:
    """One branch: from ``checkpoint`` (taken after ``t_examples``) train ``steps`` steps at
    ``batch_size = k * base_batch`` with learning rate ``lr``; ``task`` carries what a built-in
    workload needs (empty for user callables)."""

    measurement: str
    checkpoint: str
    t_examples: int
    k: int
    batch_size: int
    lr: float
    steps: int
    seed: int
    task: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {**asdict(self), "key": self.key}


_SQL = """
CREATE TABLE IF NOT EXISTS branch_measurements (
    name TEXT PRIMARY KEY, config TEXT NOT NULL, trunk TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS branches (
    key TEXT PRIMARY KEY, measurement TEXT NOT NULL, t_examples INTEGER NOT NULL, k INTEGER NOT NULL,
    seed INTEGER NOT NULL, batch_size INTEGER NOT NULL, lr REAL NOT NULL, steps INTEGER NOT NULL,
    loss REAL, result TEXT NOT NULL, finished_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS branches_measurement ON branches (measurement);
"""


class BranchStore:
    """SQLite file of branched measurements and their branches (one commit per branch).

    Args:
        path: the database file (created if missing; may be the same file as a sweep store).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.exists():
            raise ValueError(f"The directory of the store {str(self.path)!r} does not exist.")
        if self.path.is_dir():
            raise ValueError(f"The store {str(self.path)!r} is a directory. Pass a file path.")
        self._conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            with self._conn:
                self._conn.executescript(_SQL)
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise StoreError(f"The store {str(self.path)!r} cannot be used as a branch store ({err}): it is not "
                             "SQLite, or it is damaged or locked. Pass the file 'batchlaw branch' wrote, or a new "
                             "path to start a new store.") from None

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> BranchStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save_measurement(self, name: str, config: dict) -> None:
        """Record a measurement's configuration.

        A measurement of the same name whose configuration differs only in how the branches are
        analysed (:data:`ANALYSIS_KEYS`: the tolerance) is the same measurement: its stored
        branches are reused and the new configuration is recorded. Any other difference is an
        error that names the settings that differ.
        """
        blob = json.dumps(config, sort_keys=True)
        row = self._conn.execute("SELECT config FROM branch_measurements WHERE name = ?", (name,)).fetchone()
        if row is None:
            with self._conn:
                self._conn.execute("INSERT INTO branch_measurements VALUES (?, ?, NULL, ?)", (name, blob, time.time()))
            return
        if row[0] == blob:
            return
        old = json.loads(row[0])
        changed = sorted(k for k in set(old) | set(config) if k not in ANALYSIS_KEYS and old.get(k) != config.get(k))
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} stored, {config.get(k)!r} now" for k in changed)
            raise ValueError(f"The store {str(self.path)!r} already holds a branched measurement named {name!r} "
                             f"with another configuration ({diff}). Use another --name or another store file "
                             f"(only {', '.join(ANALYSIS_KEYS)} may change: they re-analyse the stored branches).")
        with self._conn:
            self._conn.execute("UPDATE branch_measurements SET config = ? WHERE name = ?", (blob, name))

    def measurements(self) -> dict[str, dict]:
        rows = self._conn.execute("SELECT name, config FROM branch_measurements ORDER BY created_at")
        return {n: json.loads(c) for n, c in rows}

    def set_trunk(self, name: str, trunk: dict) -> None:
        with self._conn:
            self._conn.execute("UPDATE branch_measurements SET trunk = ? WHERE name = ?", (json.dumps(trunk), name))

    def trunk(self, name: str) -> dict | None:
        row = self._conn.execute("SELECT trunk FROM branch_measurements WHERE name = ?", (name,)).fetchone()
        return None if row is None or row[0] is None else json.loads(row[0])

    def get(self, key: str) -> dict | None:
        row = self._conn.execute("SELECT result FROM branches WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def add(self, result: dict) -> None:
        """Store one finished branch (committed at once); one already stored is left as it is."""
        s = result["spec"]
        with self._conn:
            self._conn.execute(
                "INSERT OR IGNORE INTO branches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (s["key"], s["measurement"], s["t_examples"], s["k"], s["seed"], s["batch_size"], s["lr"], s["steps"],
                 result["loss"], json.dumps(result), time.time()))

    def branches(self, measurement: str) -> list[dict]:
        rows = self._conn.execute("SELECT result FROM branches WHERE measurement = ? ORDER BY finished_at, rowid",
                                  (measurement,))
        return [json.loads(r[0]) for r in rows]

    def count(self, measurement: str | None = None) -> int:
        if measurement is None:
            return self._conn.execute("SELECT COUNT(*) FROM branches").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM branches WHERE measurement = ?", (measurement,)).fetchone()[0]


# ------------------------------------------------------------------ the decision rule
def cbs_from_losses(losses: dict[int, list[float]], base_batch: int, *, tolerance: float = 0.01,
                    tolerance_kind: str = "relative") -> dict:
    """CBS at one checkpoint from the branch losses (see the module docstring for the rule).

    Args:
        losses: ``{k: [loss after the budget, one per seed]}``; must contain ``k = 1``.
        base_batch: ``B`` (examples).
        tolerance: how much worse than ``k = 1`` a branch may end and still count.
        tolerance_kind: ``"relative"`` (a fraction of the ``k = 1`` loss) or ``"absolute"``.

    Returns:
        ``cbs`` (examples), ``cbs_upper`` (the next batch tried, which failed; ``None`` when
        every batch passed), ``censored`` (``"lower"``, ``"upper"`` or ``None``), ``threshold``,
        ``non_monotone`` (a larger batch passed after a smaller one failed: noise), and per ``k``
        (``branches``) the mean and spread of the losses, ``within``, and ``status``: ``"ok"``,
        or ``"diverged"`` when a seed's loss is not finite (the mean is then ``inf`` here and
        ``null`` in :meth:`BranchedCBS.to_dict`).

    Examples:
        >>> r = cbs_from_losses({1: [2.0], 2: [2.01], 4: [2.05], 8: [2.3]}, 16, tolerance=0.01)
        >>> r["cbs"], r["cbs_upper"], r["censored"]
        (32, 64, None)
    """
    check_positive_int("base_batch", base_batch)
    _check_rule(tolerance, tolerance_kind)
    if 1 not in losses:
        raise ValueError("The branch losses must include the k = 1 branch (the reference).")
    ks = sorted(losses)
    table = {}
    for k in ks:
        vals = [float(v) for v in losses[k]]
        finite = [v for v in vals if math.isfinite(v)]
        mean = sum(finite) / len(finite) if len(finite) == len(vals) and vals else math.inf
        sd = (sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5 if len(finite) > 1 and math.isfinite(mean) else None
        table[k] = {"k": k, "batch": k * base_batch, "loss": mean, "loss_sd": sd, "n": len(vals),
                    "n_diverged": len(vals) - len(finite), "status": "ok" if math.isfinite(mean) else "diverged"}
    ref = table[1]["loss"]
    if not math.isfinite(ref):
        raise ValueError("The k = 1 branch diverged (non-finite loss): lower the learning rate.")
    if tolerance_kind == "relative":
        if ref <= 0:
            raise ValueError(f"A relative tolerance needs a positive k = 1 loss (got {ref!r}); use tolerance_kind='absolute'.")
        threshold = ref * (1 + tolerance)
    else:
        threshold = ref + tolerance
    passed = [table[k]["loss"] <= threshold for k in ks]
    last = 0
    while last + 1 < len(ks) and passed[last + 1]:
        last += 1
    for row, ok in zip(table.values(), passed):
        row["within"] = ok
    cbs = ks[last] * base_batch
    censored = "lower" if last == len(ks) - 1 else ("upper" if last == 0 else None)
    return {"cbs": cbs, "cbs_upper": None if last == len(ks) - 1 else ks[last + 1] * base_batch, "censored": censored,
            "threshold": threshold, "reference_loss": ref, "non_monotone": any(passed[last + 1:]),
            "branches": list(table.values())}


@dataclass
class BranchedCBS:
    """The result: one point per checkpoint, in examples (tokens too when known).

    Attributes:
        points: per checkpoint ``t_examples``, ``t_tokens``, ``cbs`` (examples), ``cbs_upper``,
            ``censored``, ``threshold``, ``branches`` (per ``k``: loss mean and spread) and,
            from the built-in workloads, ``b_simple`` (examples) with its interval.
        config: the measurement's configuration.
        trace: the trunk's running ``B_simple`` as ``[[examples seen, b_simple_ema], ...]``
            (examples), when it was measured.
    """

    points: list[dict]
    config: dict
    trace: list | None = None

    def to_dict(self) -> dict:
        """The ``batchlaw.branch/1`` document: valid JSON, with ``null`` for a loss that is not
        finite (its branch's ``status`` says ``"diverged"``)."""
        return _finite_or_none({"schema": "batchlaw.branch/1", "unit": "examples", "config": self.config,
                                "points": self.points, "trace": self.trace})


def _finite_or_none(value):
    """``value`` with every non-finite float (a diverged loss, an unbounded interval) as ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


# ------------------------------------------------------------------ running branches
class _UserBranch:
    """Picklable wrapper: load the checkpoint, train the branch, return its result."""

    def __init__(self, load_checkpoint: Callable, train_steps: Callable) -> None:
        self.load_checkpoint, self.train_steps = load_checkpoint, train_steps

    def __call__(self, spec: dict) -> dict:
        t0 = time.perf_counter()
        state = self.load_checkpoint(spec["checkpoint"])
        loss = float(self.train_steps(state, batch_size=spec["batch_size"], lr=spec["lr"], steps=spec["steps"],
                                      seed=spec["seed"]))
        return {"spec": spec, "loss": loss, "wall_time_s": time.perf_counter() - t0}


def _apply(fn, item):
    return fn(item)


class _BranchRayExecutor(RayExecutor):
    """:class:`~batchlaw.sweep.runner.RayExecutor` for branches (any picklable callable)."""

    def __init__(self, address: str | None = None, jobs: int = 2) -> None:
        super().__init__(address, jobs)
        self._apply = self.ray.remote(num_cpus=1)(_apply)

    def map_unordered(self, fn: Callable, items: list):
        pending = [self._apply.remote(fn, item) for item in items]
        try:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                yield self.ray.get(done[0])
        finally:
            for ref in pending:
                self.ray.cancel(ref)


def make_branch_executor(kind: str = "local", jobs: int = 1, address: str | None = None):
    """``"local"`` (a process pool of ``jobs`` whose workers end with this process; 1 runs in
    this process) or ``"ray"``."""
    kind = check_choice("executor", kind, ("local", "ray"))
    return LocalExecutor(jobs) if kind == "local" else _BranchRayExecutor(address, jobs)


def _run_specs(specs: list[BranchSpec], fn: Callable, store: BranchStore | None, executor, progress: bool) -> dict:
    """Run the branches not yet in ``store``; store each as it finishes. Returns ``{key: result}``."""
    results, todo = {}, []
    for s in specs:
        found = store.get(s.key) if store is not None else None
        if found is not None:
            results[s.key] = found
        else:
            todo.append(s.to_dict())
    if not todo:
        return results
    from tqdm.auto import tqdm

    executor = executor or LocalExecutor(1)
    bar = tqdm(total=len(todo), desc="branches", disable=not progress)
    try:
        for result in executor.map_unordered(fn, todo):
            if store is not None:
                store.add(result)
            results[result["spec"]["key"]] = result
            bar.update(1)
    finally:
        bar.close()
    return results


def _branch_specs(name, checkpoints, *, base_batch, lr, multipliers, budget, seeds, lr_rule, task=None):
    exponent = BRANCH_LR_EXPONENT[check_choice("lr_rule", lr_rule, tuple(BRANCH_LR_EXPONENT))]
    specs = []
    for t, ref in checkpoints:
        lr_t = check_positive_float("lr", float(lr(t) if callable(lr) else lr))
        for k in multipliers:
            for seed in seeds:
                specs.append(BranchSpec(name, str(ref), int(t), int(k), int(k * base_batch),
                                        float(f"{lr_t * k**exponent:.12g}"), budget // (k * base_batch), int(seed),
                                        dict(task or {})))
    return specs


def _check_grid(base_batch, multipliers, budget, seeds):
    base_batch = check_positive_int("base_batch", base_batch)
    ks = sorted({check_positive_int("multipliers", k) for k in multipliers})
    if 1 not in ks or len(ks) < 2:
        raise ValueError(f"The 'multipliers' parameter must include 1 and at least one larger k. Got {list(multipliers)!r}.")
    budget = check_positive_int("budget", budget)
    for k in ks:
        if budget % (k * base_batch):
            raise ValueError(
                f"The 'budget' parameter ({budget} examples) must be a multiple of every branch batch k*B; it is not of "
                f"{k}*{base_batch}. Use a multiple of {ks[-1] * base_batch}.")
    if not seeds:
        raise ValueError("The 'seeds' parameter must list at least one seed.")
    return base_batch, ks, budget, [int(s) for s in seeds]


def _check_rule(tolerance, tolerance_kind) -> None:
    """The decision rule's settings, checked before any branch runs."""
    check_positive_float("tolerance", tolerance, allow_zero=True)
    check_choice("tolerance_kind", tolerance_kind, ("relative", "absolute"))


def _summarize(specs, results, *, base_batch, tolerance, tolerance_kind, tokens_per_example, config, extra=None):
    points = []
    for t in sorted({s.t_examples for s in specs}):
        losses: dict[int, list[float]] = {}
        for s in specs:
            if s.t_examples == t:
                losses.setdefault(s.k, []).append(results[s.key]["loss"])
        p = {"t_examples": t, "t_tokens": None if not tokens_per_example else t * tokens_per_example,
             **cbs_from_losses(losses, base_batch, tolerance=tolerance, tolerance_kind=tolerance_kind)}
        if extra and t in extra:
            p.update(extra[t])
        points.append(p)
    return BranchedCBS(points, config)


def measure_branched_cbs(checkpoints, load_checkpoint: Callable, train_steps: Callable, *, base_batch: int, lr,
                         budget: int, multipliers=(1, 2, 4, 8), tolerance: float = 0.01, tolerance_kind: str = "relative",
                         lr_rule: str = "sqrt", seeds=(0,), store: str | Path | BranchStore | None = None,
                         name: str = "branch", executor=None, tokens_per_example: int | None = None,
                         progress: bool = False) -> BranchedCBS:
    """Branched CBS with your own training code.

    Args:
        checkpoints: ``[(t, ref), ...]``: examples seen at the checkpoint (over all ranks) and a
            reference ``load_checkpoint`` understands (a path). :func:`run_trunk` makes them.
        load_checkpoint: ``ref -> state`` (a fresh copy: branches must not share state).
        train_steps: ``(state, *, batch_size, lr, steps, seed) -> loss``: train ``steps``
            optimizer steps of ``batch_size`` examples at learning rate ``lr`` (data order from
            ``seed``) and return the loss to compare (a held-out loss is best).
        base_batch: ``B``, the trunk's batch (examples).
        lr: the trunk's learning rate at ``B``: a number, or a callable ``t -> lr`` (your LR
            schedule at the checkpoint).
        budget: examples each branch trains on (a multiple of ``max(k) * B``).
        multipliers: the ``k`` tried (must include 1).
        tolerance: the loss tolerance of the decision rule (see the module docstring and
            :func:`cbs_from_losses`).
        tolerance_kind: whether ``tolerance`` is relative or absolute (see :func:`cbs_from_losses`).
        lr_rule: ``"sqrt"`` (Adam), ``"linear"`` (SGD) or ``"none"``.
        seeds: data-order seeds; losses are averaged over them.
        store: a :class:`BranchStore` or its path: finished branches are stored at once and
            reused by a rerun. ``None`` keeps nothing.
        name: the measurement's name in the store.
        executor: ``None`` (this process), or an executor from :func:`make_branch_executor`
            (your callables must then be picklable: module-level functions).
        tokens_per_example: tokens per example, to report ``t`` in tokens too.
        progress: show a progress bar.

    Returns:
        A :class:`BranchedCBS`.

    References:
        Merrill, Arora, Groeneveld, Hajishirzi 2025, "Critical Batch Size Revisited: A Simple
        Empirical Approach to Large-Batch Language Model Training", arXiv:2505.23971.
    """
    base_batch, ks, budget, seeds = _check_grid(base_batch, multipliers, budget, seeds)
    _check_rule(tolerance, tolerance_kind)
    checkpoints = [(check_positive_int("checkpoint t", int(t), minimum=0), ref) for t, ref in checkpoints]
    if not checkpoints:
        raise ValueError("The 'checkpoints' parameter must list at least one (t, ref) pair.")
    specs = _branch_specs(name, checkpoints, base_batch=base_batch, lr=lr, multipliers=ks, budget=budget, seeds=seeds,
                          lr_rule=lr_rule)
    config = {"base_batch": base_batch, "multipliers": ks, "budget": budget, "tolerance": tolerance,
              "tolerance_kind": tolerance_kind, "lr_rule": lr_rule, "seeds": seeds,
              "checkpoints": [[t, str(r)] for t, r in checkpoints], "tokens_per_example": tokens_per_example}
    own = isinstance(store, (str, Path))
    st = BranchStore(store) if own else store
    try:
        if st is not None:
            st.save_measurement(name, config)
        results = _run_specs(specs, _UserBranch(load_checkpoint, train_steps), st, executor, progress)
    finally:
        if own:
            st.close()
    return _summarize(specs, results, base_batch=base_batch, tolerance=tolerance, tolerance_kind=tolerance_kind,
                      tokens_per_example=tokens_per_example, config=config)


def run_trunk(state, train_steps: Callable, save_checkpoint: Callable, *, batch_size: int, lr, points, seed: int = 0) -> list[tuple[int, object]]:
    """Train the trunk at ``batch_size`` and save a checkpoint at each of ``points`` (examples).

    Args:
        state: your training state (model, optimizer...), trained in place by ``train_steps``.
        train_steps: the same callable as :func:`measure_branched_cbs` takes.
        save_checkpoint: ``(state, t) -> ref``: save a copy at ``t`` examples; return its reference.
        batch_size: the trunk's batch (examples).
        lr: a number or a callable ``t -> lr``.
        points: examples seen at which to checkpoint (multiples of ``batch_size``).
        seed: data-order seed (the segment that starts at ``t`` gets ``seed + t``).

    Returns:
        ``[(t, ref), ...]`` for :func:`measure_branched_cbs`.
    """
    b = check_positive_int("batch_size", batch_size)
    out, seen = [], 0
    for t in sorted(int(p) for p in points):
        if t % b:
            raise ValueError(f"The checkpoint point {t} is not a multiple of the trunk batch {b}.")
        steps = (t - seen) // b
        if steps:
            train_steps(state, batch_size=b, lr=float(lr(seen) if callable(lr) else lr), steps=steps, seed=seed + seen)
        seen = t
        out.append((t, save_checkpoint(state, t)))
    return out
