"""Bytes as sparse polynomials: monomial → coefficient, cheap to add to while replaying a step."""

from __future__ import annotations

import sympy

Size = dict[sympy.Expr, sympy.Expr]


def size_of(expr: sympy.Expr) -> Size:
    """The expanded terms of ``expr``."""
    return {m: int(c) if c.is_Integer else c for m, c in sympy.expand(expr).as_coefficients_dict().items() if c != 0}


def polynomial(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ceiling of n/q (a size rounded up to a multiple, as the memory-efficient SDPA
    kernel rounds its logsumexp rows to 32) replaced by its bound n/q + (q − 1)/q, so that it is a
    polynomial; exact where the rounded size is already a multiple of q."""

    def bound(x: sympy.Expr) -> sympy.Expr:
        q = sympy.fraction(sympy.Rational(x.as_coeff_Mul()[0]))[1]
        return x + sympy.Rational(q - 1, q)

    return sympy.sympify(expr).replace(sympy.ceiling, bound)


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
            add_to(out, {m * m2: c * c2})
    return out


def expr_of(size: Size) -> sympy.Expr:
    """The sum of the terms, as sympy."""
    return sympy.Add(*(c * m for m, c in size.items()))
