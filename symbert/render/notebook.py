"""Short reprs and notebook displays of symbert's results, in symbert's notation and term order.

Plain ``repr`` writes formulas as the terminal does (``12·H²·L + 13·H·L``, highest degree first); the
Markdown and HTML displays write them in LaTeX through the seed :class:`~symbert.render.latex.Notation`
(factors as ``A·seq_len·B·H``, ``\\mathit{position}_{\\mathrm{size}}``), so a notebook shows what a
paper would. Each result's class calls these from its ``__repr__`` and ``_repr_*_`` methods.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy

from symbert.formula import human, quantity

if TYPE_CHECKING:
    from symbert.analysis.breakdown import Breakdown
    from symbert.analysis.compare import Comparison
    from symbert.analysis.explain import Term
    from symbert.analysis.report import Report
    from symbert.ir import Graph
    from symbert.render.tables import Table

#: At most this many rows in a plain repr; the rest are counted.
ROWS = 12


def math(expr: sympy.Expr) -> str:
    """``$…$`` LaTeX in the seed notation."""
    from symbert.render.latex import NOTATIONS

    return f"${NOTATIONS['seed'].latex(expr)}$"


def _value(value: int, unit: str) -> str:
    shown = quantity(value, unit)
    return f"{value:,}" if shown == f"{value:,}" else f"{value:,} ({shown})"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(str(c).replace("|", r"\|") for c in row) + " |\n" for row in lines)


# Breakdown


def breakdown_repr(b: Breakdown) -> str:
    parts = len(b.components())
    return f"<Breakdown {b.quantity} ({b.unit}) = {human(b.total)}; {parts} components>"


def breakdown_latex(b: Breakdown) -> str:
    from symbert.render.latex import NOTATIONS

    return f"$\\displaystyle {NOTATIONS['seed'].latex(b.total)}$"


# Graph


def graph_repr(g: Graph) -> str:
    nodes = sum(1 for _ in g.nodes)
    blocks = ", ".join(f"{b.name} × {human(b.count)}" for b in g.blocks.values()) or "none"
    return f"<Graph {g.model}, head {g.head}: {nodes} nodes, {len(g.tensors)} tensors; repeated: {blocks}>"


def _shape(g: Graph, name: str) -> str:
    return "[" + ", ".join(human(sympy.sympify(d)) for d in g.tensor(name).shape) + "]"


def graph_html(g: Graph) -> str:
    """A summary line and the node table, folded."""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(c)}</td>"
            for c in (
                node.name,
                node.op,
                f"× {human(g.blocks[node.block].count)}" if node.block else "",
                " ".join(_shape(g, t) for t in node.outputs),
            )
        )
        + "</tr>"
        for node in g.nodes
    )
    head = "".join(f"<th>{h}</th>" for h in ("node", "op", "block", "outputs"))
    return (
        f"<p>{html.escape(graph_repr(g)[1:-1])}</p>"
        f"<details><summary>nodes</summary><table><tr>{head}</tr>{rows}</table></details>"
    )


# Report


def report_repr(r: Report) -> str:
    lines = [f"<Report {r.config.name}, B={r.batch}, seq_len={r.seq_len}; {r.options.describe()}"]
    for key, b in r.breakdowns.items():
        lines.append(f"  {key} = {human(b.substituted(b.total))} = {_value(r.value(key), b.unit)}")
    conventions = next(iter(r.breakdowns.values())).substitutions
    if conventions:
        lines.append("  with " + ", ".join(f"{k} = {human(v)}" for k, v in conventions.items()) + ">")
    else:
        lines[-1] += ">"
    return "\n".join(lines)


def report_markdown(r: Report) -> str:
    b0 = next(iter(r.breakdowns.values()))
    conventions = ", ".join(f"{math(k)[:-1]} = {math(v)[1:]}" for k, v in b0.substitutions.items())
    title = f"**{r.config.name}**, $B = {r.batch}$, seq_len = {r.seq_len}; {r.options.describe()}"
    rows = [(key, math(b.substituted(b.total)), _value(r.value(key), b.unit)) for key, b in r.breakdowns.items()]
    note = f"\n\nwith {conventions}\n" if conventions else "\n"
    return f"{title}\n\n" + _markdown_table(("quantity", "formula", "value"), rows) + note


# Comparison


def comparison_repr(c: Comparison) -> str:
    first = c.reports[0]
    shape = f"B={first.batch}, seq_len={first.seq_len}; {first.options.describe()}"
    lines = [f"<Comparison of {', '.join(c.names[1:])} against {c.names[0]}, {shape}"]
    for q in c.quantities:
        values = " → ".join(f"{s.value:,}" for s in q.sides)
        ratios = ", ".join(f"{float(q.value_ratio(i)):.6g}" for i in range(1, len(q.sides)))
        limits = ", ".join(human(q.ratio_limit(i)) for i in range(1, len(q.sides)))
        lines.append(f"  {q.key}: {values} (× {ratios}); ratio as seq_len → ∞ {limits}")
    lines[-1] += ">"
    return "\n".join(lines)


def comparison_markdown(c: Comparison) -> str:
    from symbert.render.comparison import comparison_tables
    from symbert.render.tables import to_markdown

    return "\n".join(to_markdown(t) for t in comparison_tables(c)[:2])


# Table


def table_repr(t: Table) -> str:
    def cell(v: object) -> str:
        return human(v) if isinstance(v, sympy.Basic) else f"{v:,}" if isinstance(v, int) else str(v)

    lines = [f"<Table {t.title}", "  " + " | ".join(t.header)]
    lines += ["  " + " | ".join(cell(v) for v in row) for row in t.rows[:ROWS]]
    if len(t.rows) > ROWS:
        lines.append(f"  … {len(t.rows) - ROWS} more rows")
    return "\n".join(lines) + ">"


def table_markdown(t: Table) -> str:
    from symbert.render.tables import to_markdown

    return to_markdown(t)


# explain


def explanation_repr(terms: Sequence[Term], quantity_name: str) -> str:
    lines = [f"<Explanation of {quantity_name}: {human(sympy.Add(*(t.expr for t in terms)))}"]
    for t in terms[:ROWS]:
        origins = ", ".join(f"{human(p.coefficient)} from {p.contribution.node}" for p in t.parts)
        lines.append(f"  {human(t.expr)}: {origins}")
    if len(terms) > ROWS:
        lines.append(f"  … {len(terms) - ROWS} more terms")
    return "\n".join(lines) + ">"


def explanation_markdown(terms: Sequence[Term], quantity_name: str) -> str:
    rows = [
        (math(t.expr), math(p.coefficient * t.monomial), c.node, c.what, c.component)
        for t in terms
        for p in t.parts
        for c in (p.contribution,)
    ]
    from symbert.analysis.explain import negative_notes

    total = math(sympy.Add(*(t.expr for t in terms)))
    notes = "".join(f"\n{note}\n" for note in negative_notes(terms))
    return (
        f"**{quantity_name}** = {total}\n\n"
        + _markdown_table(("term", "part", "node", "what", "component"), rows)
        + notes
    )
