"""Which data-parallel setup a model is trained in, and what that means for the noise scale.

The :class:`~batchlaw.noise.GradientNoiseMonitor` needs to know two things that data
parallelism changes: how many examples the big-batch gradient ``.grad`` averages over, and
which ranks hold the other small-batch gradients. This module reads both from the model, and
refuses, by name, the setups where the answer would be wrong.

With ``W`` ranks and ``K`` micro-batches of ``b`` examples per rank and optimizer step:

* a hook on each parameter sees every rank-local micro-batch gradient (``b`` examples);
* after the data-parallel reduction ``.grad`` is the mean over all ranks and micro-batches
  (``W K b`` examples): for ``DistributedDataParallel`` it is the same tensor on every rank,
  for FSDP2 (``fully_shard``) each rank holds one shard of it and its squared norm is the sum
  of the shards' squared norms over the ranks.

The McCandlish et al. (2018, App. A.1) estimators then use the pair ``(b, W K b)``: the mean of
the ``W K`` micro-batch squared norms (one all-reduce of a few scalars per measured step) and
the squared norm of the reduced gradient. For i.i.d. micro-batches this pair gives the
minimum-variance unbiased estimate: the ``|G|^2`` estimator it yields is the U-statistic
``sum_{i != j} g_i . g_j / (n (n - 1))`` over all ``n = W K`` micro-batch gradients, which uses
every pair of micro-batches. The rank-local accumulated gradient (``K b`` examples) would add
nothing: an estimator built on it (``(K b, W K b)``, as a DDP communication hook sees) uses
only the pairs from different ranks, and one built on ``(b, K b)`` (a rank measuring alone)
only the pairs from the same rank; both are unbiased and noisier.

Micro-batches of unequal size (``monitor.step(sizes=...)``) may differ between ranks, in size
and in number: the all-reduce then also sums each rank's ``sum 1/n_i``, ``sum a_i`` and ``sum
a_i^2 / n_i`` (``a_i`` the weight of micro-batch ``i`` in the rank's loss), which give the batch
sizes of the pair over every rank (the monitor's module docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["DataParallelSetup", "UnsupportedSetupError", "detect_data_parallel"]

#: DDP communication hooks that deliver the mean of the ranks' gradients (up to rounding).
_MEAN_PRESERVING_HOOKS = {"allreduce_hook", "fp16_compress_hook", "bf16_compress_hook",
                          "fp16_compress_wrapper", "bf16_compress_wrapper", "noop_hook_never_used"}
#: Hooks that approximate the mean: .grad is not the average of the ranks' gradients.
_APPROXIMATING_HOOKS = {"powerSGD_hook", "batched_powerSGD_hook"}


class UnsupportedSetupError(ValueError):
    """The model is trained in a setup where the noise scale cannot be measured correctly.

    Raised instead of returning a wrong number; the message names the setup and what is supported.
    """


@dataclass(frozen=True)
class DataParallelSetup:
    """How gradients are shared between ranks.

    Attributes:
        kind: ``"none"`` (one process, or each rank measuring alone), ``"ddp"``, ``"fsdp2"`` or
            ``"group"`` (``.grad`` holds the mean over ``group`` at ``monitor.step()``, synchronised
            by the caller).
        group: the process group the gradients are averaged over (``None`` for ``"none"``).
        world_size: number of ranks ``W`` in that group (1 for ``"none"``).
        rank: this process's rank in the group (0 for ``"none"``).
        ddp: the ``DistributedDataParallel`` wrapper (``kind == "ddp"``).
        fsdp_modules: the ``fully_shard`` modules (``kind == "fsdp2"``).
    """

    kind: str
    group: Any = None
    world_size: int = 1
    rank: int = 0
    ddp: Any = None
    fsdp_modules: tuple = ()

    @property
    def distributed(self) -> bool:
        return self.kind != "none"


_SUPPORTED = ("Supported: one process; DistributedDataParallel (any bucket settings, no_sync or not, static "
              "graph, unused parameters, mean-preserving comm hooks such as bf16/fp16 compression); FSDP2 "
              "(torch.distributed.fsdp.fully_shard) on a 1-D device mesh.")


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _refuse_foreign(model: torch.nn.Module) -> None:
    """Refuse wrappers whose gradients the monitor cannot read correctly."""
    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "deepspeed" or cls.__name__ == "DeepSpeedEngine":
            raise UnsupportedSetupError(
                f"The model is a DeepSpeed engine ({type(model).__name__}): ZeRO partitions and reduces gradients "
                f"inside DeepSpeed, where batchlaw cannot see them. {_SUPPORTED}")
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel as LegacyFSDP
    except ImportError:  # pragma: no cover - torch without distributed
        LegacyFSDP = None
    for name, m in model.named_modules():
        if LegacyFSDP is not None and isinstance(m, LegacyFSDP):
            where = f" (module {name!r})" if name else ""
            raise UnsupportedSetupError(
                f"The model uses the legacy FullyShardedDataParallel wrapper{where}: its flat-parameter "
                "gradients are not visible per parameter. Shard with torch.distributed.fsdp.fully_shard (FSDP2) "
                f"instead. {_SUPPORTED}")


def _fsdp2_modules(model: torch.nn.Module) -> tuple:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - old torch
        return ()
    return tuple(m for m in model.modules() if isinstance(m, FSDPModule))


def _is_dtensor(p: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return isinstance(p, DTensor)


def _check_comm_hooks(ddp) -> None:
    for hook, _state in getattr(ddp, "_comm_hooks", []):
        name = getattr(hook, "__name__", type(hook).__name__)
        if name in _APPROXIMATING_HOOKS:
            raise UnsupportedSetupError(
                f"The DDP communication hook {name!r} replaces the all-reduced gradient by a low-rank "
                "approximation (with error feedback), so .grad is not the mean of the ranks' gradients and "
                "B_simple would be biased. Measure with a mean-preserving hook (the default all-reduce, or "
                f"bf16/fp16 compression), e.g. on a short run without PowerSGD. {_SUPPORTED}")


def detect_data_parallel(model: torch.nn.Module, process_group: Any = "auto") -> DataParallelSetup:
    """Read the data-parallel setup of ``model``, refusing what cannot be measured correctly.

    Args:
        model: the module the monitor watches: a plain module, a ``DistributedDataParallel``
            wrapper, or a module sharded with ``fully_shard``.
        process_group: ``"auto"`` (from the wrapper), ``None`` (measure this process alone: its
            gradients are not shared with other ranks), or a process group over which the caller
            averages ``.grad`` before ``monitor.step()`` (a hand-written data-parallel loop).

    Raises:
        UnsupportedSetupError: DeepSpeed engines, the legacy ``FullyShardedDataParallel``,
            tensor-parallel (``DTensor``) parameters not sharded by ``fully_shard``, FSDP2 on a
            mesh with more than one dimension (HSDP, FSDP + TP), PowerSGD comm hooks, and a
            process group initialised around a model that is not wrapped (each rank would
            measure alone, or wrongly if gradients are synchronised by hand) unless
            ``process_group`` says which it is.
    """
    _refuse_foreign(model)
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel) and process_group is None:
        raise UnsupportedSetupError(
            "process_group=None asks to measure this rank alone, but the model is wrapped in "
            "DistributedDataParallel, which averages .grad over its ranks. Leave process_group='auto'.")
    if isinstance(model, DistributedDataParallel):
        inner = model.module
        _refuse_foreign(inner)
        if _fsdp2_modules(inner):
            raise UnsupportedSetupError(f"DistributedDataParallel around fully_shard modules is not supported. {_SUPPORTED}")
        if any(_is_dtensor(p) for p in inner.parameters()):
            raise UnsupportedSetupError(
                "The DDP-wrapped model has DTensor (tensor-parallel) parameters: the gradient norms would need "
                f"reducing over the tensor-parallel group as well. {_SUPPORTED}")
        _check_comm_hooks(model)
        group = model.process_group
        return DataParallelSetup("ddp", group, torch.distributed.get_world_size(group),
                                 torch.distributed.get_rank(group), ddp=model)

    fsdp = _fsdp2_modules(model)
    if fsdp:
        if process_group is None:
            raise UnsupportedSetupError(
                "process_group=None asks to measure this rank alone, but the model is sharded with "
                "fully_shard. Leave process_group='auto'.")
        meshes = set()
        for m in fsdp:
            state = m._get_fsdp_state()
            group = state._fsdp_param_group
            if group is None:
                continue
            if group.gradient_divide_factor is not None:
                raise UnsupportedSetupError(
                    "An FSDP2 module has a custom gradient divide factor (set_gradient_divide_factor), so .grad is "
                    "not the mean over the ranks. Remove it to measure the noise scale.")
            mesh = group.mesh_info.mesh
            if mesh.ndim != 1:
                raise UnsupportedSetupError(
                    f"FSDP2 on a {mesh.ndim}-D device mesh (HSDP, or FSDP combined with tensor parallelism) is not "
                    f"supported: the squared norms would need reducing over the shard dimension only. {_SUPPORTED}")
            meshes.add(mesh)
        if len(meshes) > 1:
            raise UnsupportedSetupError(f"The fully_shard modules use different device meshes. {_SUPPORTED}")
        for name, p in model.named_parameters():
            if p.requires_grad and not _is_dtensor(p):
                raise UnsupportedSetupError(
                    f"Parameter {name!r} is not sharded by fully_shard: its gradient is not synchronised between "
                    "ranks. Apply fully_shard to the root module as well.")
        if not meshes:
            raise UnsupportedSetupError("The fully_shard modules hold no parameters.")
        mesh = meshes.pop()
        group = mesh.get_group()
        return DataParallelSetup("fsdp2", group, torch.distributed.get_world_size(group),
                                 torch.distributed.get_rank(group), fsdp_modules=fsdp)

    for name, p in model.named_parameters():
        if p.requires_grad and _is_dtensor(p):
            raise UnsupportedSetupError(
                f"Parameter {name!r} is a DTensor but the model is not sharded with fully_shard: tensor- or "
                f"sequence-parallel gradients are not supported. {_SUPPORTED}")
    if process_group is None:
        return DataParallelSetup("none")
    if process_group == "auto":
        if _dist_ready() and torch.distributed.get_world_size() > 1:
            raise UnsupportedSetupError(
                f"torch.distributed is initialised with {torch.distributed.get_world_size()} ranks but the model is "
                "neither wrapped in DistributedDataParallel nor sharded with fully_shard. Each rank would measure its "
                "own gradients alone, and wrongly if you average them between ranks yourself. Pass the wrapped model "
                "(e.g. the DDP module, not model.module), or process_group=<group> if .grad holds the mean over that "
                "group at monitor.step(), or process_group=None to measure each rank on its own.")
        return DataParallelSetup("none")
    if not _dist_ready():
        raise UnsupportedSetupError(
            "A process group was given but torch.distributed is not initialised: call "
            "torch.distributed.init_process_group first, or pass process_group=None.")
    return DataParallelSetup("group", process_group, torch.distributed.get_world_size(process_group),
                             torch.distributed.get_rank(process_group))


def fsdp2_unsharded_params(setup: DataParallelSetup) -> list[torch.nn.Parameter]:
    """The unsharded parameters FSDP2 computes gradients for (they exist after the first forward)."""
    out = []
    for m in setup.fsdp_modules:
        group = m._get_fsdp_state()._fsdp_param_group
        if group is None:
            continue
        for fp in group.fsdp_params:
            p = getattr(fp, "_unsharded_param", None)
            if p is not None and p.requires_grad:
                out.append(p)
    return out


def gradient_sync_on(setup: DataParallelSetup) -> bool:
    """Whether the last backward reduced the gradients across ranks (not inside ``no_sync()`` /
    ``set_requires_gradient_sync(False)``)."""
    if setup.kind == "fsdp2":
        groups = [m._get_fsdp_state()._fsdp_param_group for m in setup.fsdp_modules]
        return all(g.reduce_grads for g in groups if g is not None)
    return True
