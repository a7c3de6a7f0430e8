"""Where each term of a formula comes from: the graph nodes whose contributions contain its monomial.

A breakdown's total is the sum of its contributions, so once both are expanded each monomial's
coefficient in the total is the sum of its coefficients in the contributions: every term splits
exactly into per-node parts. A part is negative where a node runs a count with a subtracted term
(ModernBERT's global layers run L_global − 1 times, layer 0 apart): :func:`negative_notes` says so in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


def explain(
    breakdown: Breakdown, general: bool = False, substitutions: Mapping[sympy.Symbol, sympy.Expr] | None = None
) -> Explanation:
    """The total's terms, highest degree first, each with the contributions it comes from.

    Formulas are taken with the family's conventions substituted (BERT: E = H, I = 4H) unless
    ``general``, as :mod:`symbert.render.latex` shows them, or with ``substitutions`` when given.
    """
    if substitutions is not None:
        form = lambda e: sympy.expand(e.subs(substitutions))  # noqa: E731 - one form for every contribution
    else:
        form = sympy.expand if general else breakdown.substituted
    coefficients = [(c, form(c.total).as_coefficients_dict()) for c in breakdown.contributions]
    terms = []
    for term in form(breakdown.total).as_ordered_terms(order=ORDER):
        coefficient, monomial = term.as_coeff_Mul()
        parts = tuple(Part(c, found[monomial]) for c, found in coefficients if monomial in found)
        terms.append(Term(monomial, coefficient, parts))
    return Explanation(tuple(terms), breakdown.quantity)


def negative_notes(terms: Sequence[Term]) -> tuple[str, ...]:
    """Where the negative parts come from, one plain line per cause: a count with a subtracted term (its
    other terms cancel against other nodes' counts, so the negative part corrects an overcount), or a
    size that is itself a difference."""
    counts: dict[sympy.Expr, list[str]] = {}
    notes = []
    for c in dict.fromkeys(p.contribution for t in terms for p in t.parts if p.coefficient.is_negative):
        if sympy.expand(c.count).could_extract_minus_sign() or not sympy.expand(c.count).is_Add:
            notes.append(f"{c.node} has a negative part: its {c.what} is {human(c.expr)}, a difference of sizes.")
        else:
            counts.setdefault(c.count, []).append(c.node)
    for count, nodes in counts.items():
        addends = sympy.Add.make_args(sympy.expand(count))
        kept = human(sympy.Add(*(a for a in addends if not a.could_extract_minus_sign())))
        taken = human(-sympy.Add(*(a for a in addends if a.could_extract_minus_sign())))
        shown = ", ".join(nodes[:2]) + (f" and {len(nodes) - 2} more" if len(nodes) > 2 else "")
        notes.append(
            f"Negative parts at {shown}: these nodes run {human(count)} times; expanded, the count's − {taken} "
            f"gives the negative part, while its {kept} cancels against other nodes' counts: the negative part "
            "corrects an overcount, and the total is exact."
        )
    return tuple(notes)
