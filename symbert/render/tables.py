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

from symbert.analysis.breakdown import Breakdown, ComponentTotal
from symbert.analysis.explain import Term, negative_notes
from symbert.analysis.report import Report
from symbert.display import ROWS
from symbert.formula import human, text
from symbert.models import ROLES
from symbert.render.latex import NOTATIONS, Notation, broken, by_structure, component_formula, escape

#: A table cell: text, an integer, a formula, or several formulas (the roots of a crossover).
Cell = str | int | sympy.Expr | tuple[sympy.Expr, ...]


def formulas_of(value: Cell) -> tuple[sympy.Expr, ...] | None:
    """The formulas a cell holds, None for text and integers."""
    if isinstance(value, sympy.Basic):
        return (value,)
    return value if isinstance(value, tuple) else None


@dataclass(frozen=True)
class Table:
    """A title, a header and rows of cells; integer columns are right-aligned. ``notes`` are plain lines
    printed under the table (CSV leaves them out, as it does the title); ``keep`` leading columns name a row,
    and :func:`column_groups` repeats them in each group."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()
    keep: int = 1

    def numeric(self, column: int) -> bool:
        return bool(self.rows) and all(isinstance(row[column], int) for row in self.rows)

    def __repr__(self) -> str:
        lines = [f"<Table {self.title}", "  " + " | ".join(self.header)]
        lines += ["  " + " | ".join(_plain(v) for v in row) for row in self.rows[:ROWS]]
        lines += [f"  … {len(self.rows) - ROWS} more rows"] if len(self.rows) > ROWS else []
        return "\n".join(lines) + ">"

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


def column_groups(table: Table, size: int) -> list[Table]:
    """``table`` as tables of at most ``size`` columns after its first ``table.keep``, which each repeats."""
    keep = table.keep
    starts = range(keep, len(table.header), size)
    if len(starts) < 2:
        return [table]
    return [
        Table(
            f"{table.title} ({n} of {len(starts)})",
            table.header[:keep] + table.header[start : start + size],
            tuple(row[:keep] + row[start : start + size] for row in table.rows),
            table.notes,
            keep,
        )
        for n, start in enumerate(starts, 1)
    ]


#: The width of a formula cell in a LaTeX table, in letters as :func:`symbert.render.latex.width` estimates them.
CELL_WIDTH = 24


def to_latex(table: Table, notation: Notation = NOTATIONS["seed"], cell_width: float | None = CELL_WIDTH) -> str:
    """A booktabs ``table`` float, captioned with the title; a formula wider than ``cell_width`` letters
    breaks before a + or − into lines of an ``aligned`` block (None: never). A table still wider than the
    line is scaled down to it (graphicx's ``\\resizebox``), so that none runs off the page."""

    def formula_lines(formula: sympy.Expr) -> list[str]:
        tex = notation.latex(formula)
        return [tex] if cell_width is None else broken(tex, cell_width, cell_width - 2)

    def cell(value: Cell) -> str:
        if (formulas := formulas_of(value)) is not None:
            parts = [formula_lines(f) for f in formulas]
            if len(parts) == 1 and len(parts[0]) == 1:
                return f"${parts[0][0]}$"
            # each formula from the left, its further lines indented, a comma after each but the last
            rows = [" \\\\ & \\quad {} ".join(p) for p in parts]
            return r"$\begin{aligned}[t] & " + r", \\ & ".join(rows) + r"\end{aligned}$"
        if isinstance(value, int):
            return f"{value:,}" if value >= 0 else f"$-${-value:,}"
        return escape(value)

    spec = "".join("r" if table.numeric(i) else "l" for i in range(len(table.header)))
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{escape(table.title)}}}",
        rf"\sbox0{{\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(cell(v) for v in row) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}}%",
        r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}\else\usebox0\fi",
        *(rf"\par\smallskip{{\footnotesize {escape(note)}\par}}" for note in table.notes),
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def to_markdown(table: Table, notation: Notation = NOTATIONS["seed"]) -> str:
    """A GitHub-flavoured Markdown table under a bold title; formulas as ``$…$`` math."""

    def cell(value: Cell) -> str:
        if (formulas := formulas_of(value)) is not None:
            return ", ".join(f"${notation.latex(f)}$" for f in formulas)
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
        writer.writerow([v if (fs := formulas_of(v)) is None else ", ".join(map(text, fs)) for v in row])
    return out.getvalue()


def to_rich(table: Table) -> RichTable:
    """A terminal table, formulas in the ``12·H²·L`` form."""
    caption = "\n".join(table.notes) or None
    out = RichTable(title=table.title, title_justify="left", caption=caption, caption_justify="left")
    for i, name in enumerate(table.header):
        out.add_column(name, justify="right" if table.numeric(i) else "left")
    for row in table.rows:
        out.add_row(*(_plain(v) for v in row))
    return out


def _plain(value: Cell) -> str:
    """A cell in the terminal: formulas in the ``12·H²·L`` form, integers with thousands separators."""
    if (formulas := formulas_of(value)) is not None:
        return ", ".join(map(human, formulas))
    return f"{value:,}" if isinstance(value, int) else value


def render(tables: Sequence[Table], fmt: str, notation: Notation = NOTATIONS["seed"]) -> str:
    """``tables`` as one LaTeX, Markdown or CSV text, separated by blank lines."""
    writers = {"latex": lambda t: to_latex(t, notation), "markdown": lambda t: to_markdown(t, notation), "csv": to_csv}
    if fmt not in writers:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(writers)})")
    return "\n".join(writers[fmt](t) for t in tables)


def component_table(reports: Sequence[Report], quantity: str, general: bool = False) -> Table:
    """Components of ``quantity`` as rows: the formula, then its value at each report's config and shape.

    Reports whose formulas differ (:func:`~symbert.render.latex.by_structure`: other families, structures or
    heads) line up by role instead: a formula column for each group, followed by its configs' values.
    """
    groups = by_structure(reports)
    if len(groups) > 1:
        return _role_table(groups, quantity, general)
    breakdown = reports[0].breakdowns[quantity]
    form = sympy.expand if general else breakdown.substituted
    rows = [
        (c.name, component_formula(breakdown, c, general), *(breakdown.evaluate(c.total, r.values) for r in reports))
        for c in breakdown.components()
    ]
    rows.append(("total", form(breakdown.total), *(r.value(quantity) for r in reports)))
    title = f"{quantity} ({breakdown.unit}) by component; {shapes_of(reports)}"
    return Table(title, ("component", "formula", *(r.config.name for r in reports)), tuple(rows), keep=2)


def _role_table(groups: Sequence[Sequence[Report]], quantity: str, general: bool) -> Table:
    """Rows by role (then the total); per group its formula for the role, then the role's value at its configs."""
    breakdowns = [g[0].breakdowns[quantity] for g in groups]
    found = [b.components() for b in breakdowns]
    roles = [role for role in ROLES if any(c.role == role for parts in found for c in parts)]

    def cells(group: Sequence[Report], b: Breakdown, parts: list[ComponentTotal], role: str | None) -> list[Cell]:
        total = b.total if role is None else sympy.Add(*(c.total for c in parts if c.role == role))
        return [(sympy.expand if general else b.substituted)(total), *(b.evaluate(total, r.values) for r in group)]

    rows = tuple(
        (
            role or "total",
            *(v for g, b, parts in zip(groups, breakdowns, found, strict=True) for v in cells(g, b, parts, role)),
        )
        for role in (*roles, None)
    )
    header = [
        h for g in groups for h in (f"formula ({', '.join(r.config.name for r in g)})", *(r.config.name for r in g))
    ]
    title = f"{quantity} ({breakdowns[0].unit}) by role; {shapes_of([r for g in groups for r in g])}"
    return Table(title, ("role", *header), rows)


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
    title = f"{quantity} ({breakdown.unit}) term by term; {report.config.name}, {shape_of(report)}"
    return Table(title, ("term", "part", "node", "what", "component", "value"), tuple(rows), negative_notes(terms))


def shape_of(r: Report) -> str:
    """The batch, seq_len and setup a report was made at."""
    return f"B={r.batch}, seq_len={r.seq_len}; {r.setup}"


def shapes_of(reports: Sequence[Report]) -> str:
    """The batch, seq_len and setup, said once when every report shares the setup, else per config."""
    first = reports[0]
    if all(r.setup == first.setup for r in reports):
        return shape_of(first)
    setups = "; ".join(f"{r.setup} for {r.config.name}" for r in reports)
    return f"B={first.batch}, seq_len={first.seq_len}; {setups}"
