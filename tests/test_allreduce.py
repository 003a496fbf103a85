"""A quick, real all-reduce timing (2 gloo ranks, tiny messages) and the refusals before any process starts.
The model fit against these timings is tested in tests/test_profile.py (slow)."""

import math

import pytest
import torch

from batchlaw.profile import measure_allreduce


def test_one_row_per_size_and_world_with_a_positive_time():
    rows = measure_allreduce([4096, 8192], [2], repeats=2, warmup=1)
    assert [(r["n_bytes"], r["world"], r["backend"], r["stat"]) for r in rows] == [
        (4096, 2, "gloo", "min"), (8192, 2, "gloo", "min")]
    assert all(math.isfinite(r["seconds"]) and 0 < r["seconds"] < 5 for r in rows)


@pytest.mark.parametrize("kwargs, msg", [
    ({"world_sizes": [1]}, "'world_sizes'"),
    ({"backend": "mpi"}, "'backend'"),
    ({"stat": "mean"}, "'stat'"),
    ({"sizes_bytes": [0, 4096]}, "'sizes_bytes'"),
    ({"backend": "nccl", "world_sizes": [torch.cuda.device_count() + 1]}, "NCCL needs one GPU per rank"),
])
def test_bad_arguments_are_refused_by_name(kwargs, msg):
    args = {"sizes_bytes": [4096, 8192], "world_sizes": [2], **kwargs}
    with pytest.raises(ValueError, match=msg):
        measure_allreduce(args.pop("sizes_bytes"), args.pop("world_sizes"), **args)
