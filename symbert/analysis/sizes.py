"""Bytes as sparse polynomials: monomial → coefficient, cheap to add to while replaying a step."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import sympy

from symbert.ir import Graph, Tensor
from symbert.symbols import below

Size = dict[sympy.Expr, sympy.Expr]


#: One object per monomial, so that the sizes keyed by them find them by identity, without sympy's comparison.
_MONOMIALS: dict[sympy.Expr, sympy.Expr] = {}


def _interned(m: sympy.Expr) -> sympy.Expr:
    return _MONOMIALS.setdefault(m, m)


def size_of(expr: sympy.Expr) -> Size:
    """The expanded terms of ``expr``."""
    return {_interned(m): int(c) if c.is_Integer else c
            for m, c in sympy.expand(expr).as_coefficients_dict().items() if c != 0}


def add_to(into: Size, other: Size, times: sympy.Expr | int = 1) -> None:
    """Add ``times`` × ``other`` to ``into`` in place, dropping terms that cancel."""
    for m, c in other.items():
        value = into.get(m, 0) + c * times
        if value == 0:
            into.pop(m, None)
        else:
            into[m] = value


def scaled(size: Size, factor: sympy.Expr) -> Size:
    """``size`` times a formula."""
    out: Size = {}
    for m2, c2 in size_of(factor).items():
        for m, c in size.items():
            add_to(out, {_interned(m * m2): c * c2})
    return out


def expr_of(size: Size) -> sympy.Expr:
    """The sum of the terms, as sympy."""
    return sympy.Add(*(c * m for m, c in size.items()))


def generators(exprs: Iterable[sympy.Expr], free: Iterable[sympy.Symbol]) -> tuple[sympy.Expr, ...]:
    """The steps in ``exprs`` that depend on the ``free`` symbols, in a fixed order: sizes rounded up to
    a multiple (the memory-efficient SDPA kernel's ⌈seq_len/32⌉ rows) and brackets [x < k] (what
    PyTorch keeps differently at batch 1 or a short sequence). A polynomial in the free symbols and these is exact;
    :func:`generator_values` gives their values at points."""
    free = set(free)
    found = {c for e in exprs for c in sympy.sympify(e).atoms(sympy.ceiling, below) if c.free_symbols & free}
    for c in found:
        (symbol,) = c.free_symbols
        ceiling = isinstance(c, sympy.ceiling) and sympy.sympify(c.args[0] / symbol).is_Rational
        if not ceiling and not (isinstance(c, below) and c.args[0] == symbol and c.args[1].is_Integer):
            raise ValueError(f"cannot evaluate {c}: only ⌈r·x⌉ and [x < k] of one size x are supported")
    return tuple(sorted(found, key=sympy.default_sort_key))


def generator_values(gens: Sequence[sympy.Expr], free: Sequence[sympy.Symbol], xs: Sequence[object]) -> list[object]:
    """``xs`` (values of the ``free`` symbols: integers or integer arrays), followed by each of ``gens``
    (see :func:`generators`) at them, exactly: ⌈p·x/q⌉ = −(−p·x // q), and [x < k]."""
    out = list(xs)
    for c in gens:
        (symbol,) = c.free_symbols
        x = xs[list(free).index(symbol)]
        if isinstance(c, below):
            k = int(c.args[1])
            out.append((x < k).astype(x.dtype) if isinstance(x, np.ndarray) else int(x < k))
            continue
        r = sympy.Rational(c.args[0] / symbol)
        out.append(-(-(int(r.p) * x) // int(r.q)))
    return out


def at_least(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with every ⌈a⌉ replaced by a and every [x < k] by 0: a lower bound where coefficients
    are positive, exact wherever no size is rounded and no bracket holds."""
    return sympy.sympify(expr).replace(sympy.ceiling, lambda a: a).replace(below, lambda x, k: sympy.S.Zero)


def folded(graph: Graph, tensor: Tensor) -> tuple[sympy.Expr, Tensor] | None:
    """For the output of a node that is a view at some sizes and a copy at others (its ``view_when``,
    :mod:`symbert.ops`): the bracket of a view, and the storage it then views;
    None for any other tensor. Where it is a view nothing is allocated and whoever keeps it keeps that
    storage, which then lives as long as it does."""
    node = graph.node(tensor.producer)
    view = node.attr("view_when")
    return None if view is None else (view, graph.storage(node.inputs[0]))
