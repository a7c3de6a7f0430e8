"""Where each term of a formula comes from: the graph nodes whose contributions contain its monomial.

A breakdown's total is the sum of its contributions, so once both are expanded each monomial's
coefficient in the total is the sum of its coefficients in the contributions: every term splits
exactly into per-node parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from symbert.analysis.breakdown import Breakdown, Contribution
from symbert.display import ROWS, Displayed
from symbert.formula import ORDER, human


@dataclass(frozen=True)
class Part:
    """One contribution's share of a term: ``coefficient`` times the term's monomial."""

    contribution: Contribution
    coefficient: sympy.Expr


@dataclass(frozen=True)
class Term:
    """A term of the expanded total, ``coefficient`` × ``monomial``, split into its parts."""

    monomial: sympy.Expr
    coefficient: sympy.Expr
    parts: tuple[Part, ...]

    @property
    def expr(self) -> sympy.Expr:
        return self.coefficient * self.monomial


class Explanation(Displayed, tuple[Term, ...]):
    """The terms :func:`explain` finds (a tuple), with a short repr and a notebook display."""

    quantity: str

    def __new__(cls, terms: tuple[Term, ...] = (), quantity: str = "") -> Explanation:
        self = super().__new__(cls, terms)
        self.quantity = quantity
        return self

    def __repr__(self) -> str:
        lines = [f"<Explanation of {self.quantity}: {human(sympy.Add(*(t.expr for t in self)))}"]
        for t in self[:ROWS]:
            origins = ", ".join(f"{human(p.coefficient)} from {p.contribution.node}" for p in t.parts)
            lines.append(f"  {human(t.expr)}: {origins}")
        lines += [f"  … {len(self) - ROWS} more terms"] if len(self) > ROWS else []
        return "\n".join(lines) + ">"


def explain(breakdown: Breakdown, general: bool = False) -> Explanation:
    """The total's terms, highest degree first, each with the contributions it comes from.

    Formulas are taken with the family's conventions substituted (BERT: E = H, I = 4H) unless
    ``general``, as :mod:`symbert.render.latex` shows them.
    """
    form = sympy.expand if general else breakdown.substituted
    coefficients = [(c, form(c.total).as_coefficients_dict()) for c in breakdown.contributions]
    terms = []
    for term in form(breakdown.total).as_ordered_terms(order=ORDER):
        coefficient, monomial = term.as_coeff_Mul()
        parts = tuple(Part(c, found[monomial]) for c, found in coefficients if monomial in found)
        terms.append(Term(monomial, coefficient, parts))
    return Explanation(tuple(terms), breakdown.quantity)
