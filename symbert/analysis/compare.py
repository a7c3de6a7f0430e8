"""Two or more configs side by side, of any families: each quantity's values and its ratios to the first
config, exact and symbolic, with components lined up by role (embeddings, attention, MLP, norms…).

Symbolic here means with each config's model values put in and batch B and seq_len left free, so a
ratio is a function of seq_len. The terms that dominate as seq_len → ∞ and as H → ∞, and the crossover
points (the seq_len at which one component, the attention scores, equals all the others, per layer and
for the whole model, in general and for each config), follow one rule for every config
(:data:`SCALING_RULE`): the widths E and I grow with H at the config's own ratio, every other size is held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import sympy

from symbert.analysis.breakdown import Breakdown
from symbert.analysis.explain import explain
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import Report, report
from symbert.configs import Config, ConfigError
from symbert.display import Displayed
from symbert.formula import human
from symbert.models import ROLES
from symbert.symbols import B, E, H, I, polynomial, seq_len

#: The component crossovers weigh against the rest.
CROSSOVER_COMPONENT = "attention scores"
#: The limits dominant terms are taken in.
LIMITS: tuple[sympy.Symbol, ...] = (seq_len, H)
#: The widths that grow with H, each at its config's own ratio (BERT's I = 4·H, ModernBERT-base's I = 3·H/2).
WIDTHS: tuple[sympy.Symbol, ...] = (E, I)
SCALING_RULE = "E and I grow with H at each config's own ratio; every other size is held fixed"
#: seq_len as a positive real, so that solve keeps crossovers that fall between integers.
_REAL_SEQ_LEN = sympy.Symbol("seq_len", positive=True)


@dataclass(frozen=True)
class Dominant:
    """The terms of highest degree in ``symbol`` (others held fixed), their components and roles."""

    symbol: sympy.Symbol
    terms: sympy.Expr
    components: tuple[str, ...]
    roles: tuple[str, ...]


@dataclass(frozen=True)
class Crossover:
    """Positive seq_len solutions of component = rest, ``per layer`` or for the whole ``model``."""

    scope: str
    general: tuple[sympy.Expr, ...]
    value: tuple[sympy.Expr, ...]


@dataclass(frozen=True)
class Side:
    """One config's view of a quantity: ``components`` by name, ``roles`` summed by role (with the
    components each role holds in ``role_components``), and ``scaling``, the widths as multiples of H."""

    name: str
    formula: sympy.Expr
    at: sympy.Expr
    value: int
    scaling: dict[sympy.Symbol, sympy.Expr]
    dominant: tuple[Dominant, ...]
    crossovers: tuple[Crossover, ...]
    components: dict[str, int]
    roles: dict[str, int]
    role_components: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class QuantityComparison:
    """A quantity for every config; differences and ratios are each side's against the first."""

    key: str
    unit: str
    sides: tuple[Side, ...]

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles some config has a component in, in :data:`symbert.models.ROLES` order."""
        return tuple(r for r in ROLES if any(r in s.roles for s in self.sides))

    def difference(self, i: int) -> sympy.Expr:
        return sympy.expand(self.sides[i].at - self.sides[0].at)

    def ratio(self, i: int) -> sympy.Expr:
        return sympy.cancel(self.sides[i].at / self.sides[0].at)

    def ratio_limit(self, i: int) -> sympy.Expr:
        """The ratio as seq_len → ∞."""
        return sympy.limit(self.ratio(i), seq_len, sympy.oo)

    def value_ratio(self, i: int) -> sympy.Rational:
        return sympy.Rational(self.sides[i].value, self.sides[0].value)


@dataclass(frozen=True)
class Comparison(Displayed):
    reports: tuple[Report, ...]
    quantities: tuple[QuantityComparison, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.config.name for r in self.reports)

    def __repr__(self) -> str:
        first = self.reports[0]
        shape = f"B={first.batch}, seq_len={first.seq_len}; {first.options.describe()}"
        lines = [f"<Comparison of {', '.join(self.names[1:])} against {self.names[0]}, {shape}"]
        for q in self.quantities:
            values = " → ".join(f"{s.value:,}" for s in q.sides)
            ratios = ", ".join(f"{float(q.value_ratio(i)):.6g}" for i in range(1, len(q.sides)))
            limits = ", ".join(human(q.ratio_limit(i)) for i in range(1, len(q.sides)))
            lines.append(f"  {q.key}: {values} (× {ratios}); ratio as seq_len → ∞ {limits}")
        return "\n".join(lines) + ">"


def scaling(values: Mapping[sympy.Symbol, int]) -> dict[sympy.Symbol, sympy.Expr]:
    """The widths of :data:`WIDTHS` a config sets, as its own multiples of H."""
    return {w: sympy.Rational(values[w], values[H]) * H for w in WIDTHS if w in values and H in values}


def dominant(breakdown: Breakdown, symbol: sympy.Symbol, scaled: Mapping[sympy.Symbol, sympy.Expr]) -> Dominant | None:
    """The terms of the formula (with ``scaled`` put in) of highest degree in ``symbol``, with the components
    and roles behind them; None when the formula does not depend on ``symbol``."""
    terms = explain(breakdown, substitutions=scaled)
    if not any(symbol in t.monomial.free_symbols for t in terms):
        return None
    degree = {t.monomial: sympy.degree(polynomial(t.monomial), symbol) for t in terms}  # ⌈x⌉ grows as x
    top = max(degree.values())
    leading = [t for t in terms if degree[t.monomial] == top]
    components = tuple(dict.fromkeys(p.contribution.component for t in leading for p in t.parts))
    roles = tuple(r for r in ROLES if r in {breakdown.order[c] for c in components})
    return Dominant(symbol, sympy.Add(*(t.expr for t in leading)), components, roles)


def crossover(
    breakdown: Breakdown,
    values: dict[sympy.Symbol, int],
    per_layer: bool,
    scaled: Mapping[sympy.Symbol, sympy.Expr],
    component: str = CROSSOVER_COMPONENT,
) -> Crossover | None:
    """Where ``component`` equals all the other components, solved for seq_len > 0.

    ``general`` solves the formula with ``scaled`` put in, keeping the roots positive at ``values``; ``value``
    solves with ``values`` (a config's, and B) put in. None when the quantity has no such component. A size
    rounded up to a multiple (the memory-efficient SDPA kernel's logsumexp) counts as its polynomial bound.
    """
    pick = (lambda c: c.per_layer) if per_layer else (lambda c: c.total)
    parts = [(c.name, pick(c)) for c in breakdown.components() if pick(c) is not None]
    if component not in dict(parts):
        return None
    difference = polynomial(sympy.Add(*(e if name == component else -e for name, e in parts)))
    difference = difference.subs(seq_len, _REAL_SEQ_LEN)
    general = _roots(sympy.expand(difference.subs(scaled)))
    value = _roots(sympy.expand(difference.subs(values)))
    return Crossover(
        "per layer" if per_layer else "model",
        tuple(r for r in general if r.subs(values).is_positive),
        tuple(r for r in value if r.is_positive),
    )


@lru_cache(maxsize=256)
def _roots(expr: sympy.Expr) -> tuple[sympy.Expr, ...]:
    """Roots in seq_len, in sympy's canonical order; configs of one family share the general ones."""
    return tuple(sorted(sympy.solve(expr, _REAL_SEQ_LEN, check=False, simplify=False), key=sympy.default_sort_key))


def side(r: Report, key: str) -> Side:
    """Quantity ``key`` of one report: formulas, value, dominant terms, crossovers, components and roles."""
    b = r.breakdowns[key]
    config_values = {**r.config.symbols(), **r.options.layout.values()}
    values = {**config_values, B: r.batch}
    scaled = scaling(config_values)
    crossovers = (crossover(b, values, per_layer, scaled) for per_layer in (True, False))
    dominants = (dominant(b, s, scaled) for s in LIMITS)
    found = b.components()
    components = {c.name: b.evaluate(c.total, r.values) for c in found}
    held = {role: tuple(c.name for c in found if c.role == role) for role in ROLES}
    return Side(
        name=r.config.name,
        formula=b.substituted(b.total),
        at=sympy.expand(b.total.subs(config_values)),
        value=r.value(key),
        scaling=scaled,
        dominant=tuple(d for d in dominants if d is not None),
        crossovers=tuple(c for c in crossovers if c is not None),
        components=components,
        roles={role: sum(components[n] for n in names) for role, names in held.items() if names},
        role_components={role: names for role, names in held.items() if names},
    )


def compare(configs: Sequence[Config], batch: int, length: int, options: MemoryOptions | None = None) -> Comparison:
    """Every quantity of two or more ``configs`` at batch ``batch`` and sequence ``length``."""
    if len(configs) < 2:
        raise ConfigError(f"compare needs two or more configs, got {len(configs)}")
    reports = tuple(report(c, batch, length, options) for c in configs)
    quantities = tuple(
        QuantityComparison(key, b.unit, tuple(side(r, key) for r in reports))
        for key, b in reports[0].breakdowns.items()
    )
    return Comparison(reports, quantities)
