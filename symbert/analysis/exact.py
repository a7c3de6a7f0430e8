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
    """``terms[..., t] = prod_i xs[i] ** exponents[t][i]``, in ``dtype`` (int64 or object)."""
    arrays = [np.asarray(x).astype(dtype) for x in xs]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    out = np.empty((*shape, len(exponents)), dtype=dtype)
    for t, k in enumerate(exponents):
        term = np.ones(shape, dtype=dtype)
        for x, e in zip(arrays, k, strict=True):
            if e:
                term = term * x**e
        out[..., t] = term
    return out


def polyval(exponents: Sequence[tuple[int, ...]], coefficients: np.ndarray, *xs: np.ndarray | int) -> np.ndarray:
    """Polynomials at points, exactly: ``out[..., k] = sum_t coefficients[k, t] · prod_i xs[i] ** exponents[t][i]``.

    The points are non-negative integers. The result is int64 when a bound on every term's magnitude
    proves it fits, else an object array of Python ints.
    """
    arrays = [np.asarray(x) for x in xs]
    tops = [largest(a) for a in arrays]
    column_tops = [largest(coefficients[..., t]) for t in range(len(exponents))]
    bound = 0
    for k, c in zip(exponents, column_tops, strict=True):
        term = max(c, 1)
        for top, e in zip(tops, k, strict=True):
            term *= top**e
        bound += term
    fast = bound <= INT64_MAX and coefficients.dtype != object and all(a.dtype != object for a in arrays)
    dtype = np.int64 if fast else object
    terms = powers(arrays, exponents, dtype)
    coefficients = coefficients.astype(np.int64) if fast else exact(coefficients)
    return terms @ np.swapaxes(coefficients, -1, -2)
