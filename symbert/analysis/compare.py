"""Two configs side by side: each quantity's values, difference and ratio, exact and symbolic.

Symbolic here means with each config's model values put in and batch B and seq_len left free, so a
ratio is a function of seq_len. From the family formula (E = H, I = 4H for BERT) come the terms that
dominate as seq_len → ∞ and as H → ∞, and crossover points: the seq_len at which one component (the
attention scores) equals all the others, per layer and for the whole model, in general (a function of
H, A, L) and for each config.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy

from symbert.analysis.breakdown import Breakdown
from symbert.analysis.explain import explain
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import Report, report
from symbert.configs import Config
from symbert.display import Displayed
from symbert.formula import human
from symbert.symbols import B, H, polynomial, seq_len

#: The component crossovers weigh against the rest.
CROSSOVER_COMPONENT = "attention scores"
#: The limits dominant terms are taken in.
LIMITS: tuple[sympy.Symbol, ...] = (seq_len, H)
#: seq_len as a positive real, so that solve keeps crossovers that fall between integers.
_REAL_SEQ_LEN = sympy.Symbol("seq_len", positive=True)


@dataclass(frozen=True)
class Dominant:
    """The terms of highest degree in ``symbol`` (others held fixed), and their components."""

    symbol: sympy.Symbol
    terms: sympy.Expr
    components: tuple[str, ...]


@dataclass(frozen=True)
class Crossover:
    """Positive seq_len solutions of component = rest, ``per layer`` or for the whole ``model``."""

    scope: str
    general: tuple[sympy.Expr, ...]
    value: tuple[sympy.Expr, ...]


@dataclass(frozen=True)
class Side:
    """One config's view of a quantity."""

    formula: sympy.Expr
    at: sympy.Expr
    value: int
    dominant: tuple[Dominant, ...]
    crossovers: tuple[Crossover, ...]
    components: dict[str, int]


@dataclass(frozen=True)
class QuantityComparison:
    """A quantity for configs x and y; differences and ratios are y − x and y / x."""

    key: str
    unit: str
    x: Side
    y: Side

    @property
    def components(self) -> tuple[str, ...]:
        """Both configs' components, each in its model order: one only y has follows the one before it in y
        (y's pooler after the encoder's layers, not after x's head)."""
        return tuple(merged(list(self.x.components), list(self.y.components)))

    @property
    def difference(self) -> sympy.Expr:
        return sympy.expand(self.y.at - self.x.at)

    @property
    def ratio(self) -> sympy.Expr:
        return sympy.cancel(self.y.at / self.x.at)

    @property
    def ratio_limit(self) -> sympy.Expr:
        """The ratio as seq_len → ∞."""
        return sympy.limit(self.ratio, seq_len, sympy.oo)

    @property
    def value_ratio(self) -> sympy.Rational:
        return sympy.Rational(self.y.value, self.x.value)


@dataclass(frozen=True)
class Comparison(Displayed):
    x: Report
    y: Report
    quantities: tuple[QuantityComparison, ...]

    def __repr__(self) -> str:
        x, y = self.x, self.y
        lines = [f"<Comparison {y.config.name} against {x.config.name}, B={x.batch}, seq_len={x.seq_len}"]
        lines[0] += f"; {x.options.describe()}"
        for q in self.quantities:
            ratio, limit = f"{float(q.value_ratio):.6g}", human(q.ratio_limit)
            lines.append(f"  {q.key}: {q.x.value:,} → {q.y.value:,} (× {ratio}); ratio as seq_len → ∞ {limit}")
        return "\n".join(lines) + ">"


def merged(first: list[str], second: list[str]) -> list[str]:
    """``first``, with each name only ``second`` has placed after the name before it in ``second``."""
    out = list(first)
    for i, name in enumerate(second):
        if name not in out:
            out.insert(out.index(second[i - 1]) + 1 if i else 0, name)
    return out


def dominant(breakdown: Breakdown, symbol: sympy.Symbol) -> Dominant | None:
    """The terms of the family formula of highest degree in ``symbol``, with the components behind them;
    None when the formula does not depend on ``symbol``."""
    terms = explain(breakdown)
    if not any(symbol in t.monomial.free_symbols for t in terms):
        return None
    degree = {t.monomial: sympy.degree(polynomial(t.monomial), symbol) for t in terms}  # ⌈x⌉ grows as x
    top = max(degree.values())
    leading = [t for t in terms if degree[t.monomial] == top]
    components = dict.fromkeys(p.contribution.component for t in leading for p in t.parts)
    return Dominant(symbol, sympy.Add(*(t.expr for t in leading)), tuple(components))


def crossover(
    breakdown: Breakdown, values: dict[sympy.Symbol, int], per_layer: bool, component: str = CROSSOVER_COMPONENT
) -> Crossover | None:
    """Where ``component`` equals all the other components, solved for seq_len > 0.

    ``general`` solves the family formula, keeping the roots positive at ``values``; ``value`` solves
    with ``values`` (a config's, and B) put in. None when the quantity has no such component. A size
    rounded up to a multiple (the memory-efficient SDPA kernel's logsumexp) counts as its polynomial bound.
    """
    pick = (lambda c: c.per_layer) if per_layer else (lambda c: c.total)
    parts = [(c.name, pick(c)) for c in breakdown.components() if pick(c) is not None]
    if component not in dict(parts):
        return None
    difference = polynomial(sympy.Add(*(e if name == component else -e for name, e in parts)))
    difference = difference.subs(seq_len, _REAL_SEQ_LEN)
    general = _roots(breakdown.substituted(difference))
    value = _roots(sympy.expand(difference.subs(values)))
    return Crossover(
        "per layer" if per_layer else "model",
        tuple(r for r in general if r.subs(values).is_positive),
        tuple(r for r in value if r.is_positive),
    )


@lru_cache(maxsize=256)
def _roots(expr: sympy.Expr) -> tuple[sympy.Expr, ...]:
    """Roots in seq_len, in sympy's canonical order; the two configs of a comparison share the general ones."""
    return tuple(sorted(sympy.solve(expr, _REAL_SEQ_LEN, check=False, simplify=False), key=sympy.default_sort_key))


def side(r: Report, key: str) -> Side:
    """Quantity ``key`` of one report: formulas, value, dominant terms, crossovers, components."""
    b = r.breakdowns[key]
    config_values = {**r.config.symbols(), **r.options.layout.values()}
    values = {**config_values, B: r.batch}
    crossovers = (crossover(b, values, per_layer) for per_layer in (True, False))
    dominants = (dominant(b, s) for s in LIMITS)
    return Side(
        formula=b.substituted(b.total),
        at=sympy.expand(b.total.subs(config_values)),
        value=r.value(key),
        dominant=tuple(d for d in dominants if d is not None),
        crossovers=tuple(c for c in crossovers if c is not None),
        components={c.name: b.evaluate(c.total, r.values) for c in b.components()},
    )


def compare(x: Config, y: Config, batch: int, length: int, options: MemoryOptions | None = None) -> Comparison:
    """Every quantity of ``x`` and ``y`` at batch ``batch`` and sequence ``length``."""
    rx, ry = report(x, batch, length, options), report(y, batch, length, options)
    quantities = tuple(
        QuantityComparison(key, b.unit, side(rx, key), side(ry, key)) for key, b in rx.breakdowns.items()
    )
    return Comparison(rx, ry, quantities)
