"""Tables: one plain :class:`Table` of text, integers and formulas, written as LaTeX (booktabs),
Markdown, CSV or a terminal table; and the tables symbert builds (components, explain, compare).

Formulas print in a :class:`~symbert.render.latex.Notation` in LaTeX and Markdown (as ``$…$`` math),
in sympy syntax in CSV (parseable back) and in the ``12·H²·L`` form in the terminal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import sympy
from rich.table import Table as RichTable

from symbert.analysis.compare import Comparison, QuantityComparison, Side
from symbert.analysis.explain import Term, negative_notes
from symbert.analysis.report import Report
from symbert.formula import human, text
from symbert.render.latex import NOTATIONS, Notation, broken, check_one_structure, component_formula, escape

Cell = str | int | sympy.Expr


@dataclass(frozen=True)
class Table:
    """A title, a header and rows of cells; integer columns are right-aligned. ``notes`` are plain lines
    printed under the table (CSV leaves them out, as it does the title)."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def numeric(self, column: int) -> bool:
        return bool(self.rows) and all(isinstance(row[column], int) for row in self.rows)

    def __repr__(self) -> str:
        from symbert.render.notebook import table_repr

        return table_repr(self)

    def _repr_markdown_(self) -> str:
        return to_markdown(self)


def transposed(table: Table) -> Table:
    """``table`` with rows as columns: the first column's cells become the header, the header the first column."""
    header = (
        table.header[0],
        *(text(row[0]) if isinstance(row[0], sympy.Basic) else str(row[0]) for row in table.rows),
    )
    rows = tuple((name, *(row[i] for row in table.rows)) for i, name in enumerate(table.header) if i > 0)
    return Table(table.title, header, rows, table.notes)


def column_groups(table: Table, size: int, keep: int = 1) -> list[Table]:
    """``table`` as tables of at most ``size`` columns after its first ``keep``, which each repeats."""
    starts = range(keep, len(table.header), size)
    if len(starts) < 2:
        return [table]
    return [
        Table(
            f"{table.title} ({n} of {len(starts)})",
            table.header[:keep] + table.header[start : start + size],
            tuple(row[:keep] + row[start : start + size] for row in table.rows),
            table.notes,
        )
        for n, start in enumerate(starts, 1)
    ]


#: The width of a formula cell in a LaTeX table, in letters as :func:`symbert.render.latex.width` estimates them.
CELL_WIDTH = 24


def to_latex(table: Table, notation: Notation = NOTATIONS["seed"], cell_width: float | None = CELL_WIDTH) -> str:
    """A booktabs ``table`` float, captioned with the title; a formula wider than ``cell_width`` letters
    breaks before a + or − into lines of an ``aligned`` block (None: never)."""

    def cell(value: Cell) -> str:
        if isinstance(value, sympy.Basic):
            tex = notation.latex(value)
            parts = [tex] if cell_width is None else broken(tex, cell_width, cell_width - 2)
            if len(parts) == 1:
                return f"${tex}$"
            return r"$\begin{aligned}[t] & " + r" \\ & \quad {} ".join(parts) + r"\end{aligned}$"
        if isinstance(value, int):
            return f"{value:,}" if value >= 0 else f"$-${-value:,}"
        return escape(value)

    spec = "".join("r" if table.numeric(i) else "l" for i in range(len(table.header)))
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{escape(table.title)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(cell(v) for v in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        *(rf"\par\smallskip{{\footnotesize {escape(note)}\par}}" for note in table.notes),
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_markdown(table: Table, notation: Notation = NOTATIONS["seed"]) -> str:
    """A GitHub-flavoured Markdown table under a bold title; formulas as ``$…$`` math."""

    def cell(value: Cell) -> str:
        if isinstance(value, sympy.Basic):
            return f"${notation.latex(value)}$"
        if isinstance(value, int):
            return f"{value:,}"
        return value.replace("|", r"\|")

    rule = ["---:" if table.numeric(i) else "---" for i in range(len(table.header))]
    rows = [[cell(h) for h in table.header], rule, *([cell(v) for v in row] for row in table.rows)]
    notes = "".join(f"\n{note}\n" for note in table.notes)
    return f"**{table.title}**\n\n" + "".join("| " + " | ".join(row) + " |\n" for row in rows) + notes


def to_csv(table: Table) -> str:
    """CSV with a header row; formulas in sympy syntax, integers unformatted. The title is left out."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.header)
    for row in table.rows:
        writer.writerow([text(v) if isinstance(v, sympy.Basic) else v for v in row])
    return out.getvalue()


def to_rich(table: Table) -> RichTable:
    """A terminal table, formulas in the ``12·H²·L`` form."""
    caption = "\n".join(table.notes) or None
    out = RichTable(title=table.title, title_justify="left", caption=caption, caption_justify="left")
    for i, name in enumerate(table.header):
        out.add_column(name, justify="right" if table.numeric(i) else "left")
    for row in table.rows:
        out.add_row(*(human(v) if isinstance(v, sympy.Basic) else f"{v:,}" if isinstance(v, int) else v for v in row))
    return out


def render(tables: Sequence[Table], fmt: str, notation: Notation = NOTATIONS["seed"]) -> str:
    """``tables`` as one LaTeX, Markdown or CSV text, separated by blank lines."""
    writers = {"latex": lambda t: to_latex(t, notation), "markdown": lambda t: to_markdown(t, notation), "csv": to_csv}
    if fmt not in writers:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(writers)})")
    return "\n".join(writers[fmt](t) for t in tables)


def component_table(reports: Sequence[Report], quantity: str, general: bool = False) -> Table:
    """Components of ``quantity`` as rows: the formula, then its value at each report's config and shape.

    The reports must share one model structure (their formulas are then the same).
    """
    check_one_structure([r.config for r in reports])
    breakdown = reports[0].breakdowns[quantity]
    form = sympy.expand if general else breakdown.substituted
    rows = [
        (c.name, component_formula(breakdown, c, general), *(breakdown.evaluate(c.total, r.values) for r in reports))
        for c in breakdown.components()
    ]
    rows.append(("total", form(breakdown.total), *(r.value(quantity) for r in reports)))
    title = f"{quantity} ({breakdown.unit}) by component; {_shape(reports[0])}"
    return Table(title, ("component", "formula", *(r.config.name for r in reports)), tuple(rows))


def explain_table(terms: Sequence[Term], report: Report, quantity: str) -> Table:
    """One row per part of each term: the term, the part, the node, what it is, its component and value."""
    breakdown = report.breakdowns[quantity]
    rows = [
        (
            t.expr,
            p.coefficient * t.monomial,
            p.contribution.node,
            p.contribution.what,
            p.contribution.component,
            breakdown.evaluate(p.coefficient * t.monomial, report.values),
        )
        for t in terms
        for p in t.parts
    ]
    total = sympy.Add(*(t.expr for t in terms))
    rows.append(("total", total, "", "", "", breakdown.evaluate(total, report.values)))
    title = f"{quantity} ({breakdown.unit}) term by term; {report.config.name}, {_shape(report)}"
    return Table(title, ("term", "part", "node", "what", "component", "value"), tuple(rows), negative_notes(terms))


def _shape(r: Report) -> str:
    return f"B={r.batch}, seq_len={r.seq_len}; {r.setup}"


def _decimal(value: sympy.Expr) -> str:
    return f"{float(value):.6g}"


def _once(q: QuantityComparison, field: str) -> list[tuple[str, object]]:
    """A per-side field, once when both configs agree, else labelled by config."""
    x, y = getattr(q.x, field), getattr(q.y, field)
    return [("both", x)] if x == y else [("x", x), ("y", y)]


def comparison_tables(c: Comparison) -> list[Table]:
    """Values, symbolic forms, dominant terms, crossovers and components of two configs, side by side."""
    nx, ny = c.x.config.name, c.y.config.name
    shape = _shape(c.x) if c.x.setup == c.y.setup else f"{_shape(c.x)} for {nx}; {c.y.setup} for {ny}"
    values = Table(
        f"{ny} against {nx}; {shape}",
        ("quantity", nx, ny, f"{ny} − {nx}", f"{ny} / {nx}", "≈"),
        tuple(
            (q.key, q.x.value, q.y.value, q.y.value - q.x.value, q.value_ratio, _decimal(q.value_ratio))
            for q in c.quantities
        ),
    )
    symbolic = Table(
        "as functions of B and seq_len",
        ("quantity", nx, ny, f"{ny} − {nx}", f"{ny} / {nx}", "ratio as seq_len → ∞"),
        tuple((q.key, q.x.at, q.y.at, q.difference, q.ratio, q.ratio_limit) for q in c.quantities),
    )
    names = {"both": f"{nx}, {ny}", "x": nx, "y": ny}
    dominant = Table(
        "dominant terms of the formula (other symbols fixed)",
        ("quantity", "config", "as … → ∞", "terms", "components"),
        tuple(
            (q.key, names[who], d.symbol.name, d.terms, ", ".join(d.components))
            for q in c.quantities
            for who, found in _once(q, "dominant")
            for d in found
        ),
    )
    crossovers = Table(
        "crossover: seq_len where attention scores equal all other components",
        ("quantity", "scope", "config", "general", "seq_len", "≈"),
        tuple(
            (q.key, cr.scope, name, _roots(cr.general), _roots(cr.value), _decimals(cr.value))
            for q in c.quantities
            for name, side in ((nx, q.x), (ny, q.y))
            for cr in side.crossovers
        ),
    )
    components = Table(
        f"components; {shape}",
        ("quantity", "component", nx, ny, f"{ny} / {nx}"),
        tuple(
            (q.key, name, q.x.components.get(name, 0), q.y.components.get(name, 0), _ratio(q, name))
            for q in c.quantities
            for name in q.components
        ),
    )
    return [values, symbolic, dominant, crossovers, components]


def _roots(roots: Sequence[sympy.Expr]) -> Cell:
    return roots[0] if len(roots) == 1 else ", ".join(text(r) for r in roots) or "none"


def _decimals(roots: Sequence[sympy.Expr]) -> str:
    return ", ".join(_decimal(r) for r in roots) or "none"


def _ratio(q: QuantityComparison, name: str) -> str:
    x, y = q.x.components.get(name, 0), q.y.components.get(name, 0)
    return _decimal(sympy.Rational(y, x)) if x else "—"


def _side_json(side: Side) -> dict[str, object]:
    return {
        "value": side.value,
        "formula": text(side.formula),
        "formula_at_config": text(side.at),
        "dominant": {d.symbol.name: {"terms": text(d.terms), "components": list(d.components)} for d in side.dominant},
        "crossover": {
            cr.scope: {
                "general": [text(r) for r in cr.general],
                "seq_len": [text(r) for r in cr.value],
                "decimal": [float(r) for r in cr.value],
            }
            for cr in side.crossovers
        },
        "components": side.components,
    }


def comparison_json(c: Comparison) -> dict[str, object]:
    """``symbert compare --json``: both configs, the shape, and per quantity both sides and y − x, y / x."""
    o = c.x.options
    return {
        "x": c.x.config.as_dict(),
        "y": c.y.config.as_dict(),
        "batch": c.x.batch,
        "seq_len": c.x.seq_len,
        "policy": o.policy,
        "dtype": o.activation_dtype,
        "attention": o.attention if o.attention == c.y.options.attention else [o.attention, c.y.options.attention],
        "recompute": o.recompute,
        "quantities": {
            q.key: {
                "unit": q.unit,
                "x": _side_json(q.x),
                "y": _side_json(q.y),
                "difference": q.y.value - q.x.value,
                "ratio": text(q.value_ratio),
                "ratio_decimal": float(q.value_ratio),
                "difference_formula": text(q.difference),
                "ratio_formula": text(q.ratio),
                "ratio_limit_seq_len": text(q.ratio_limit),
            }
            for q in c.quantities
        },
    }
