"""Notebook displays of symbert's results, in symbert's notation and term order.

Each result's plain ``repr`` lives with its class and writes formulas as the terminal does (``12·H²·L +
13·H·L``, highest degree first). The displays here write them in LaTeX through the seed
:class:`~symbert.render.latex.Notation` (factors as ``A·seq_len·B·H``, ``\\mathit{position}_{\\mathrm{size}}``),
so a notebook shows what a paper would. ``symbert/__init__.py`` registers them by name
(:mod:`symbert.display`); this module is imported on the first display.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING

import sympy

from symbert.analysis.explain import negative_notes
from symbert.formula import amount, human, quantity
from symbert.render.latex import NOTATIONS
from symbert.symbols import ALL, DEGREES
from symbert.training.states import CATEGORIES

if TYPE_CHECKING:
    from symbert.analysis.breakdown import Breakdown, Components
    from symbert.analysis.compare import Comparison
    from symbert.analysis.explain import Explanation
    from symbert.analysis.report import Report
    from symbert.configs import Config
    from symbert.ir import Graph
    from symbert.training.fit import Fit
    from symbert.training.planner import Plan
    from symbert.training.timeline import Timeline

#: symbert's symbols: a formula holding one of them displays in symbert's notation.
SYMBOLS = frozenset((*ALL, *DEGREES))


def math(expr: sympy.Expr) -> str:
    """``$…$`` LaTeX in the seed notation."""
    return f"${NOTATIONS['seed'].latex(expr)}$"


def _display_math(expr: sympy.Expr) -> str:
    return f"$\\displaystyle {NOTATIONS['seed'].latex(expr)}$"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(str(c).replace("|", r"\|") for c in row) + " |\n" for row in lines)


def formula_latex(expr: sympy.Basic) -> str | None:
    """A sympy expression holding symbert's symbols in the seed notation, as a Breakdown's total shows
    (IPython's LaTeX display of every sympy expression, :func:`symbert.display.formulas_in_ipython`); any
    other as sympy shows it."""
    if isinstance(expr, sympy.Expr) and expr.free_symbols & SYMBOLS:
        return _display_math(expr)
    return expr._repr_latex_()


def breakdown_latex(b: Breakdown) -> str:
    """The total in the seed notation, factors in symbert's order."""
    return _display_math(b.total)


def components_markdown(components: Components) -> str:
    """One row per component: its formula (count × per-layer expression where it has one)."""
    rows = [(c.name, math(c.formula)) for c in components]
    return f"**{components.quantity}** ({components.unit}) by component\n\n" + _markdown_table(
        ("component", "formula"), rows
    )


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
        f"<p>{html.escape(repr(g)[1:-1])}</p>"
        f"<details><summary>nodes</summary><table><tr>{head}</tr>{rows}</table></details>"
    )


def config_markdown(c: Config) -> str:
    """The sizes under their symbols, then the head and the options."""
    sizes = {s: v for s, v in c.symbols().items() if s not in c.spec.derived}
    head = "the bare model" if c.head is None else f"head {c.task.head}"
    options = ", ".join(f"{k}={v}" for k, v in c.structure().items())
    table = _markdown_table([math(s) for s in sizes], [[f"{v:,}" for v in sizes.values()]])
    return f"**{c.name}**: {c.model}, {head}\n\n{table}\noptions: {options}\n"


def fit_markdown(f: Fit) -> str:
    """The answer, the setup, the peak's bytes by category and its formula in the seed notation."""
    rows = [(CATEGORIES[k], quantity(v, "bytes")) for k, v in f.peak.bytes.items() if v]
    rows.append((f"**peak** ({f.peak.where})", f"**{amount(f.peak.total, 'bytes')}**"))
    parts = [f"**{f.config.name}**: {f.answer()}", f.training.describe(), _markdown_table(("", "bytes"), rows).rstrip()]
    parts.append(f"peak formula: {math(f.formula)}")
    if f.knobs:
        knobs = [(k.change, quantity(k.peak.total, "bytes")) for k in f.knobs]
        parts.append("single changes, lowest peak first:\n\n" + _markdown_table(("change", "peak"), knobs).rstrip())
    return "\n\n".join(parts) + "\n"


def report_markdown(r: Report) -> str:
    b0 = next(iter(r.breakdowns.values()))
    conventions = ", ".join(f"{math(k)[:-1]} = {math(v)[1:]}" for k, v in b0.substitutions.items())
    title = f"**{r.config.name}**, $B = {r.batch}$, seq_len = {r.seq_len}; {r.options.describe()}"
    rows = [(key, math(b.substituted(b.total)), amount(r.value(key), b.unit)) for key, b in r.breakdowns.items()]
    note = f"\n\nwith {conventions}\n" if conventions else "\n"
    return f"{title}\n\n" + _markdown_table(("quantity", "formula", "value"), rows) + note


def comparison_markdown(c: Comparison) -> str:
    from symbert.render.comparison import comparison_tables
    from symbert.render.tables import to_markdown

    return "\n".join(to_markdown(t) for t in comparison_tables(c)[:2])


def explanation_markdown(terms: Explanation) -> str:
    rows = [
        (math(t.expr), math(p.coefficient * t.monomial), c.node, c.what, c.component)
        for t in terms
        for p in t.parts
        for c in (p.contribution,)
    ]
    total = math(sympy.Add(*(t.expr for t in terms)))
    notes = "".join(f"\n{note}\n" for note in negative_notes(terms))
    return (
        f"**{terms.quantity}** = {total}\n\n"
        + _markdown_table(("term", "part", "node", "what", "component"), rows)
        + notes
    )


def plan_markdown(p: Plan) -> str:
    """The layouts that fit, best first, under the degrees' symbols; then each family that does not, and why."""
    from symbert.symbols import d, t
    from symbert.symbols import p as stages

    parts = [f"**{p.config.name}**: {p.summary()}", p.training.describe()]
    if p.fits:
        header = (math(t), math(stages), math(d), "ZeRO", "recompute", "micro-batch", "peak", "communication")
        rows = [
            (f"{o.layout.tensor}{' (sp)' if o.layout.sequence else ''}", o.layout.pipeline, o.layout.data,
             o.layout.zero, o.recompute, f"{o.batch:,}", quantity(o.peak.total, "bytes"), o.communication)
            for o in p.fits
        ]
        parts.append(_markdown_table(header, rows).rstrip())
    if p.rejected:
        from symbert.training.planner import family

        parts.append("do not fit:\n\n" + "".join(f"- {family(r.layout)}: {r.reason}\n" for r in p.rejected).rstrip())
    return "\n\n".join(parts) + "\n"


def timeline_markdown(tl: Timeline) -> str:
    """The model states' formulas and bytes, each phase's peak, where it is and its end, and the peak's formula."""
    states = [(CATEGORIES[k], math(v), quantity(int(v.subs(tl.sizes)), "bytes")) for k, v in tl.states.items()]
    extra = ("allocated", "reserved") if tl.simulated else ()
    rows = []
    for ph in tl.phases:
        sim = tl.simulated.get(f"{ph.step} {ph.name}")
        cells = (quantity(sim.allocated, "bytes"), quantity(sim.reserved, "bytes")) if sim else ("",) * len(extra)
        where = ph.peak.where.split(": ", 1)[1]
        rows.append((ph.step, ph.name, quantity(ph.peak.total, "bytes"), *cells, where, quantity(ph.end, "bytes")))
    parts = [
        f"**{tl.config.name}**: {tl.summary()}",
        tl.training.describe(),
        _markdown_table(("model state", "formula", "bytes"), states).rstrip(),
        _markdown_table(("step", "phase", "peak", *extra, "where", "end"), rows).rstrip(),
        f"peak formula: {math(tl.formula)}",
    ]
    return "\n\n".join(parts) + "\n"
