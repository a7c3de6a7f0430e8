"""Exact integer arithmetic on numpy arrays: int64 where a bound proves nothing can overflow, Python ints
(object arrays) otherwise.

numpy's int64 wraps around silently past 2**63 and float64 rounds past 2**53, so every fast path that
evaluates a formula bounds its result first, from the largest magnitudes of its operands, and falls back
to Python integers when the bound does not fit. The bounds are cheap (a few maxima), the fallback is
exact, and results are plain int64 arrays whenever they can be.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Results up to this fit in int64.
INT64_MAX = 2**63 - 1


def largest(a: np.ndarray) -> int:
    """The largest magnitude in ``a`` as a Python int (0 when empty)."""
    return int(np.abs(a).max(initial=0)) if a.size else 0


def int_array(values: Iterable[int] | np.ndarray) -> np.ndarray:
    """Integers as an int64 array when they all fit, else as an object array of Python ints."""
    items = values if isinstance(values, np.ndarray) else list(values)
    data = np.array(items, dtype=object)
    if data.size == 0 or largest(data) <= INT64_MAX:
        return data.astype(np.int64)
    return data


def exact(a: np.ndarray) -> np.ndarray:
    """``a`` as an object array of Python ints (a no-op on one)."""
    return a if a.dtype == object else a.astype(object)


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` exactly: in int64 when no sum of products can pass 2**63 − 1, else in Python ints."""
    bound = largest(a) * largest(b) * max(a.shape[-1], 1)
    if a.dtype != object and b.dtype != object and bound <= INT64_MAX:
        return a @ b
    return exact(a) @ exact(b)


def powers(xs: Sequence[np.ndarray], exponents: Sequence[tuple[int, ...]], dtype: object) -> np.ndarray:
    """``terms[..., t] = prod_i xs[i] ** exponents[t][i]``, in ``dtype`` (float64, int64 or object)."""
    arrays = [np.asarray(x, dtype=dtype) for x in xs]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    out = np.empty((*shape, len(exponents)), dtype=dtype)
    cache: dict[tuple[int, int], np.ndarray] = {}

    def power(i: int, e: int) -> np.ndarray:
        if (i, e) not in cache:
            cache[(i, e)] = arrays[i] if e == 1 else arrays[i] ** e
        return cache[(i, e)]

    for t, k in enumerate(exponents):
        factors = [power(i, e) for i, e in enumerate(k) if e]
        if not factors:
            out[..., t] = 1
            continue
        term = factors[0]
        for f in factors[1:]:
            term = term * f
        out[..., t] = term
    return out


def _bound(exponents: Sequence[tuple[int, ...]], coefficients: np.ndarray, tops: Sequence[int]) -> int:
    """A bound on every polynomial's magnitude: over terms, the largest coefficient times the largest power."""
    bound = 0
    for t, k in enumerate(exponents):
        term = max(largest(coefficients[..., t]), 1)
        for top, e in zip(tops, k, strict=True):
            term *= top**e
        bound += term
    return bound


def _prepare(
    exponents: Sequence[tuple[int, ...]], coefficients: np.ndarray, xs: Sequence[np.ndarray | int], tops
) -> tuple[np.ndarray, int, object]:
    arrays = [np.asarray(x) for x in xs]
    if tops is None:
        tops = [max(-int(a.min()), int(a.max())) if a.size else 0 for a in arrays]
    bound = _bound(exponents, coefficients, tops)
    native = coefficients.dtype != object and all(a.dtype != object for a in arrays)
    dtype = np.int64 if native and bound <= INT64_MAX else object
    return powers(arrays, exponents, dtype), bound, dtype


def polyval(
    exponents: Sequence[tuple[int, ...]],
    coefficients: np.ndarray,
    *xs: np.ndarray | int,
    tops: Sequence[int] | None = None,
) -> np.ndarray:
    """Polynomials at points, exactly: ``out[..., k] = sum_t coefficients[k, t] · prod_i xs[i] ** exponents[t][i]``.

    The points are non-negative integers (``tops``, if given, their largest magnitudes). A bound on the
    result's magnitude (the sum over terms of the largest coefficient times the largest power) picks the
    arithmetic: int64 when it is at most 2**63 − 1, Python ints above. The result is int64, or an
    object array of Python ints.
    """
    terms, _, dtype = _prepare(exponents, coefficients, xs, tops)
    return terms @ np.swapaxes(coefficients, -1, -2).astype(dtype, copy=False)


def polymax(
    exponents: Sequence[tuple[int, ...]],
    coefficients: np.ndarray,
    *xs: np.ndarray | int,
    tops: Sequence[int] | None = None,
) -> np.ndarray:
    """The largest of the polynomials ``coefficients[k]`` at each point, exactly (see :func:`polyval`).

    One polynomial is a matrix-vector product in int64; several are compared in float64 while the bound
    is below 2**53, where every product and partial sum of integers is exact.
    """
    terms, bound, dtype = _prepare(exponents, coefficients, xs, tops)
    if len(coefficients) == 1:
        return terms @ coefficients[0].astype(dtype, copy=False)
    if dtype is not object and bound < 2**53:
        return (terms.astype(np.float64) @ coefficients.T.astype(np.float64)).max(axis=-1).astype(np.int64)
    return (terms @ coefficients.T.astype(dtype, copy=False)).max(axis=-1)


def polymax_rounded(
    exponents: Sequence[tuple[int, ...]],
    coefficients: np.ndarray,
    rounding: tuple[np.ndarray, np.ndarray, int] | None,
    *xs: np.ndarray | int,
    tops: Sequence[int] | None = None,
) -> np.ndarray:
    """The largest of the polynomials with their rounding terms (see :func:`polyval_rounded`) at each
    point, exactly; without rounding terms, :func:`polymax`."""
    if rounding is None or not len(rounding[0]):
        return polymax(exponents, coefficients, *xs, tops=tops)
    return polyval_rounded(exponents, coefficients, rounding, *xs, tops=tops).max(axis=-1)


def polyval_rounded(
    exponents: Sequence[tuple[int, ...]],
    coefficients: np.ndarray,
    rounding: tuple[np.ndarray, np.ndarray, int] | None,
    *xs: np.ndarray | int,
    tops: Sequence[int] | None = None,
) -> np.ndarray:
    """:func:`polyval` plus rounding terms: with ``rounding = (args, uses, m)``, term j is the amount that
    rounds ``args[j]``'s polynomial up to a multiple of ``m`` (0 … m − 1), and polynomial k holds it
    ``uses[k, j]`` times (the CUDA allocator's 512-byte rounding). Exact, in int64 where it fits."""
    values = polyval(exponents, coefficients, *xs, tops=tops)
    if rounding is None or not len(rounding[0]):
        return values
    args, uses, m = rounding
    pads = np.mod(-polyval(exponents, args, *xs, tops=tops), m).astype(np.int64)
    extra = (m - 1) * max((sum(abs(int(u)) for u in row) for row in uses.tolist()), default=0)
    if values.dtype != object and uses.dtype != object and largest(values) + extra <= INT64_MAX:
        return values + pads @ uses.T
    return exact(values) + exact(pads) @ exact(uses).T
