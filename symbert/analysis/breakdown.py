"""The result every pass returns: per-node contributions grouped into components, as sympy.

Each result has a short ``repr`` in the terminal's notation (``12·H²·L``); its notebook display is
registered from the top of the package (:mod:`symbert.display`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sympy

from symbert.display import ROWS, Displayed
from symbert.formula import human
from symbert.ir import Graph, Node
from symbert.models import MODELS, Component, ModelSpec


@dataclass(frozen=True)
class Contribution:
    """One term's origin: ``expr`` per run of ``node``, which runs (or is copied) ``count`` times."""

    node: str
    component: str
    what: str
    expr: sympy.Expr
    count: sympy.Expr = sympy.S.One

    @property
    def total(self) -> sympy.Expr:
        return self.expr * self.count


@dataclass(frozen=True)
class ComponentTotal:
    """A component's total, and its per-layer expression when it lies in a repeated block."""

    name: str
    total: sympy.Expr
    per_layer: sympy.Expr | None
    count: sympy.Expr | None
    role: str

    @property
    def formula(self) -> sympy.Expr:
        """The total as count × per-layer expression where it has one (``L·(12·H² + 13·H)``)."""
        return self.total if self.per_layer is None else sympy.Mul(self.count, self.per_layer)

    def __repr__(self) -> str:
        return f"<ComponentTotal {self.name} = {human(self.formula)}>"


class Components(Displayed, tuple[ComponentTotal, ...]):
    """A breakdown's components in model order (a tuple), with a short repr and a notebook display."""

    quantity: str
    unit: str

    def __new__(cls, components: tuple[ComponentTotal, ...] = (), quantity: str = "", unit: str = "") -> Components:
        self = super().__new__(cls, components)
        self.quantity, self.unit = quantity, unit
        return self

    def __repr__(self) -> str:
        lines = [f"<Components of {self.quantity} ({self.unit})"]
        lines += [f"  {c.name} = {human(c.formula)}" for c in self[:ROWS]]
        lines += [f"  … {len(self) - ROWS} more components"] if len(self) > ROWS else []
        return "\n".join(lines) + ">"


@dataclass(frozen=True)
class Breakdown(Displayed):
    """A quantity (parameters, bytes, FLOPs) as sympy, with the node behind every term; ``order`` names the
    components in model order, each with its role (:data:`symbert.models.ROLES`)."""

    quantity: str
    unit: str
    contributions: tuple[Contribution, ...]
    order: Mapping[str, str]
    substitutions: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)

    @property
    def total(self) -> sympy.Expr:
        return sympy.expand(sympy.Add(*(c.total for c in self.contributions)))

    def components(self) -> Components:
        """Components in model order, skipping those with nothing in them."""
        out = []
        for name in self.order:
            parts = [c for c in self.contributions if c.component == name]
            if not parts:
                continue
            counts = {c.count for c in parts}
            count = counts.pop() if len(counts) == 1 and parts[0].count != 1 else None
            per_layer = sympy.expand(sympy.Add(*(c.expr for c in parts))) if count is not None else None
            total = sympy.expand(sympy.Add(*(c.total for c in parts)))
            out.append(ComponentTotal(name, total, per_layer, count, self.order[name]))
        return Components(tuple(out), self.quantity, self.unit)

    def substituted(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with the model family's conventions applied (BERT: E = H, I = 4H)."""
        return sympy.expand(expr.subs(self.substitutions))

    def evaluate(self, expr: sympy.Expr, values: Mapping[sympy.Symbol, int]) -> int:
        """``expr`` at concrete values; every symbol in it must be given."""
        value = sympy.sympify(expr).subs(values)
        if not value.is_Integer:
            missing = ", ".join(sorted(s.name for s in value.free_symbols)) or str(value)
            raise ValueError(f"{self.quantity} needs values for: {missing}")
        return int(value)

    def __repr__(self) -> str:
        parts = len(self.components())
        return f"<Breakdown {self.quantity} ({self.unit}) = {human(self.total)}; {parts} components>"


#: The components of a task model beyond its encoder's: the loss, and the rest of the head.
TASK_COMPONENTS = (Component("loss", "head/loss", role="loss"), Component("head", "head", role="head"))


def component_of(node: Node, components: Iterable[Component]) -> str:
    """The first component whose rule matches ``node`` (the family's, then the head's), else ``other``."""
    return next((c.name for c in (*components, *TASK_COMPONENTS) if c.matches(node)), "other")


def component_order(components: Iterable[Component]) -> dict[str, str]:
    """Component names in model order, each with its role; a name declared twice must keep its role."""
    order: dict[str, str] = {}
    for c in (*components, *TASK_COMPONENTS[::-1]):
        if order.setdefault(c.name, c.role) != c.role:
            raise ValueError(f"component {c.name!r} is declared with roles {order[c.name]} and {c.role}")
    return {**order, "other": "other"}


def model_of(graph: Graph) -> ModelSpec:
    """The model family a graph was traced from."""
    return MODELS[graph.model]
