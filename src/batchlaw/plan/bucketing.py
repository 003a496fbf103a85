"""Length bucketing: padding waste for given bucket boundaries, and the boundaries that waste least.

A request of length ``l`` goes to the smallest bucket boundary ``u >= l`` and is padded to ``u``
(static shapes, as compiled or CUDA-graphed serving needs). Padding waste is the share of padded
tokens: ``sum(u - l) / sum(u)``. The best ``k`` boundaries for a length distribution minimise the
padded total ``sum_j u_j * n_j``; this is a 1-D optimal partition, solved exactly by dynamic
programming over the candidate boundaries (the distinct lengths; the longest is always one).
"""

from __future__ import annotations

import numpy as np

from .._validation import check_positive_int

__all__ = ["padding_waste", "recommend_buckets"]

_MAX_CANDIDATES = 1024


def _lengths(lengths) -> np.ndarray:
    arr = np.asarray(lengths, dtype=float)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("The 'lengths' parameter must be a non-empty list of positive lengths (tokens).")
    return arr


def padding_waste(lengths, boundaries) -> dict:
    """Share of padded tokens when each request is padded up to its bucket's boundary.

    Args:
        lengths: request lengths in tokens.
        boundaries: ascending bucket upper bounds; the last must cover the longest request.

    Returns:
        ``{"waste": float, "padded_tokens": float, "real_tokens": float, "counts": [...]}``.

    Raises:
        ValueError: boundaries not ascending, not positive, or a request longer than the last.

    Examples:
        >>> padding_waste([1, 2, 3, 4], [2, 4])["waste"]
        0.16666666666666666
    """
    arr = _lengths(lengths)
    bnd = np.asarray(boundaries, dtype=float)
    if bnd.ndim != 1 or bnd.size == 0 or np.any(bnd <= 0) or np.any(np.diff(bnd) <= 0):
        raise ValueError(f"The 'boundaries' parameter must be strictly increasing positive lengths. Got {list(boundaries)!r}.")
    if arr.max() > bnd[-1]:
        raise ValueError(f"The longest request ({arr.max():g} tokens) is longer than the last boundary ({bnd[-1]:g}): "
                         "add a boundary that covers it.")
    idx = np.searchsorted(bnd, arr, side="left")
    padded = bnd[idx]
    counts = np.bincount(idx, minlength=bnd.size)
    return {"waste": float((padded - arr).sum() / padded.sum()), "padded_tokens": float(padded.sum()),
            "real_tokens": float(arr.sum()), "boundaries": bnd.tolist(), "counts": counts.tolist()}


def recommend_buckets(lengths, k: int) -> dict:
    """The ``k`` bucket boundaries that minimise padding, and their waste.

    Exact over the candidate boundaries (the distinct lengths; above 1024 distinct lengths, 1024
    quantiles, rounded up to observed lengths, plus the longest). Dynamic programming:
    ``cost[j][i] = min_h cost[j-1][h] + u_i * (N(u_i) - N(u_h))`` with ``N`` the cumulative count.

    Args:
        lengths: request lengths in tokens.
        k: number of buckets (fewer are returned when there are fewer distinct lengths).

    Returns:
        :func:`padding_waste`'s dict for the chosen boundaries.

    Examples:
        >>> recommend_buckets([1, 1, 1, 8, 8, 9], 2)["boundaries"]
        [1.0, 9.0]
    """
    arr = _lengths(lengths)
    k = check_positive_int("k", k)
    uniq = np.unique(arr)
    if uniq.size > _MAX_CANDIDATES:
        q = np.quantile(arr, np.linspace(0, 1, _MAX_CANDIDATES))
        uniq = np.unique(uniq[np.minimum(np.searchsorted(uniq, q, side="left"), uniq.size - 1)])
    cum = np.searchsorted(np.sort(arr), uniq, side="right").astype(float)  # N(u_i): requests <= u_i
    m = uniq.size
    k = min(k, m)
    inf = np.inf
    cost = uniq * cum  # one bucket ending at u_i covers everything <= u_i
    back = np.full((k, m), -1, dtype=int)
    layers = [cost]
    for j in range(1, k):
        prev = layers[-1]
        # cand[h, i] = prev[h] + u_i (N_i - N_h), for h < i
        cand = prev[:, None] + uniq[None, :] * (cum[None, :] - cum[:, None])
        cand[np.tril_indices(m)] = inf
        best_h = np.argmin(cand, axis=0)
        layers.append(cand[best_h, np.arange(m)])
        back[j] = best_h
    j = int(np.argmin([layer[-1] for layer in layers]))  # fewer buckets can tie with more
    bounds, i = [], m - 1
    while j >= 0 and i >= 0:
        bounds.append(uniq[i])
        i = back[j, i] if j > 0 else -1
        j -= 1
    return padding_waste(arr, sorted(bounds))
