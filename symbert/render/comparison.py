"""A :class:`~symbert.analysis.compare.Comparison` as tables (terminal, Markdown, LaTeX, CSV) and as JSON.

Every config is a column; ratios are each config's against the first; components line up by role.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import sympy

from symbert.analysis.compare import SCALING_RULE, Comparison, Side
from symbert.formula import human, text
from symbert.render.tables import Cell, Table, shapes_of


def _decimal(value: sympy.Expr) -> str:
    return f"{float(value):.6g}"


def _against(c: Comparison, label: str = "") -> tuple[str, ...]:
    first = c.names[0]
    return tuple(f"{name} / {first}{label}" for name in c.names[1:])


def _grouped(sides: Sequence[Side], key: Callable[[Side], Hashable]) -> list[tuple[str, Hashable]]:
    """A per-config value once for each distinct one, labelled by the configs that share it."""
    groups: dict[Hashable, list[str]] = {}
    for s in sides:
        groups.setdefault(key(s), []).append(s.name)
    return [(", ".join(names), value) for value, names in groups.items()]


def _scaling_note(c: Comparison) -> str:
    """The rule the dominant terms and general crossovers follow, with each config's widths."""
    widths = [
        f"{', '.join(f'{k} = {human(v)}' for k, v in scaled) or 'no widths'} ({names})"
        for names, scaled in _grouped(c.quantities[0].sides, lambda s: tuple(s.scaling.items()))
    ]
    return f"Dominant terms and general crossovers: {SCALING_RULE}: {'; '.join(widths)}."


def comparison_tables(c: Comparison) -> list[Table]:
    """Values, symbolic forms, dominant terms, crossovers and the components by role of every config."""
    names, shape = c.names, shapes_of(c.reports)
    values = Table(
        f"{', '.join(names)}; {shape}",
        ("quantity", *names, *_against(c)),
        tuple(
            (q.key, *(s.value for s in q.sides), *(_decimal(q.value_ratio(i)) for i in range(1, len(q.sides))))
            for q in c.quantities
        ),
    )
    symbolic = Table(
        "as functions of B and seq_len",
        ("quantity", *names, *_against(c, " as seq_len → ∞")),
        tuple(
            (q.key, *(s.at for s in q.sides), *(q.ratio_limit(i) for i in range(1, len(q.sides)))) for q in c.quantities
        ),
    )
    dominant = Table(
        "dominant terms of the formula (other symbols fixed)",
        ("quantity", "config", "as … → ∞", "terms", "roles", "components"),
        tuple(
            (q.key, who, d.symbol.name, d.terms, ", ".join(d.roles), ", ".join(d.components))
            for q in c.quantities
            for who, found in _grouped(q.sides, lambda s: s.dominant)
            for d in found
        ),
        (_scaling_note(c),),
    )
    crossovers = Table(
        "crossover: seq_len where attention scores equal all other components",
        ("quantity", "scope", "config", "general", "seq_len", "≈"),
        tuple(
            (q.key, cr.scope, s.name, _roots(cr.general), _roots(cr.value), _decimals(cr.value))
            for q in c.quantities
            for s in q.sides
            for cr in s.crossovers
        ),
    )
    roles = Table(
        f"components by role; {shape}",
        ("quantity", "role", *names, *_against(c)),
        tuple(
            (
                q.key,
                role,
                *(s.roles.get(role, 0) for s in q.sides),
                *(_role_ratio(q.sides, i, role) for i in range(1, len(q.sides))),
            )
            for q in c.quantities
            for role in q.roles
        ),
    )
    held = Table(
        "what each role holds",
        ("quantity", "role", *names),
        tuple(
            (q.key, role, *(", ".join(s.role_components.get(role, ())) or "—" for s in q.sides))
            for q in c.quantities
            for role in q.roles
        ),
    )
    return [values, symbolic, dominant, crossovers, roles, held]


def _roots(roots: Sequence[sympy.Expr]) -> Cell:
    return tuple(roots) or "none"


def _decimals(roots: Sequence[sympy.Expr]) -> str:
    return ", ".join(_decimal(r) for r in roots) or "none"


def _role_ratio(sides: Sequence[Side], i: int, role: str) -> str:
    first, other = sides[0].roles.get(role, 0), sides[i].roles.get(role, 0)
    return _decimal(sympy.Rational(other, first)) if first else "—"


def _side_json(side: Side) -> dict[str, object]:
    return {
        "name": side.name,
        "value": side.value,
        "formula": text(side.formula),
        "formula_at_config": text(side.at),
        "scaling": {k.name: text(v) for k, v in side.scaling.items()},
        "dominant": {
            d.symbol.name: {"terms": text(d.terms), "roles": list(d.roles), "components": list(d.components)}
            for d in side.dominant
        },
        "crossover": {
            cr.scope: {
                "general": [text(r) for r in cr.general],
                "seq_len": [text(r) for r in cr.value],
                "decimal": [float(r) for r in cr.value],
            }
            for cr in side.crossovers
        },
        "components": side.components,
        "roles": side.roles,
        "role_components": {role: list(names) for role, names in side.role_components.items()},
    }


def comparison_json(c: Comparison) -> dict[str, object]:
    """``symbert compare --json``: every config, the shape, and per quantity each config's side and, for each
    config after the first, its difference from and ratio to the first."""
    o, first = c.reports[0].options, c.reports[0]
    attention = [r.options.attention for r in c.reports]
    return {
        "configs": [r.config.as_dict() for r in c.reports],
        "batch": first.batch,
        "seq_len": first.seq_len,
        "policy": o.policy,
        "dtype": o.activation_dtype,
        "attention": attention[0] if len(set(attention)) == 1 else attention,
        "recompute": o.recompute,
        "scaling_rule": SCALING_RULE,
        "quantities": {
            q.key: {
                "unit": q.unit,
                "configs": [_side_json(s) for s in q.sides],
                "against_first": [
                    {
                        "name": q.sides[i].name,
                        "difference": q.sides[i].value - q.sides[0].value,
                        "ratio": text(q.value_ratio(i)),
                        "ratio_decimal": float(q.value_ratio(i)),
                        "difference_formula": text(q.difference(i)),
                        "ratio_formula": text(q.ratio(i)),
                        "ratio_limit_seq_len": text(q.ratio_limit(i)),
                    }
                    for i in range(1, len(q.sides))
                ],
            }
            for q in c.quantities
        },
    }
