"""Terminal and JSON output for the CLI commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict

import sympy
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from symbert.analysis.breakdown import Breakdown
from symbert.analysis.params import params
from symbert.analysis.report import Report
from symbert.api import trace
from symbert.configs import Config
from symbert.formula import human, quantity, text
from symbert.ir import Graph
from symbert.parallel import Layout


def console() -> Console:
    """A console as wide as the terminal (or ``COLUMNS``, when set), where long lines wrap between words and
    tables split by :func:`show`; to a file or pipe without ``COLUMNS``, lines are never wrapped."""
    c = Console(highlight=False, markup=False)
    if c.is_terminal:
        return c
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) >= 40:
        return Console(highlight=False, markup=False, width=int(columns), color_system=None)
    return Console(highlight=False, soft_wrap=True, markup=False, width=1000, color_system=None)


#: What a column adds to a rich table's width besides its text: padding on both sides and a rule.
_EDGE = 3


def _widths(table: Table) -> list[tuple[int, int]]:
    """Each column's (narrowest, natural) width: its longest word, its longest cell."""
    out = []
    for column in table.columns:
        texts = [str(column.header), *(str(c) for c in column.cells)]
        words = [w for t in texts for line in t.splitlines() for w in line.split()] or [""]
        out.append((max(map(cell_len, words)), max(cell_len(line) for t in texts for line in t.splitlines() or [""])))
    return out


def split(table: Table, width: int, keep: int = 1) -> list[Table]:
    """``table`` as column groups that each fit ``width``, every group led by the first ``keep`` columns.

    A table that fits is returned whole. Numbers (right-aligned columns) and words are never cut: text
    columns wrap between words, and a long one gets a group of its own.
    """
    widths = _widths(table)
    if sum(natural + _EDGE for _, natural in widths) + 1 <= width or len(widths) <= keep + 1:
        return [table]
    key = list(range(keep))
    room = width - 1 - sum(min(natural, max(least, width // 3)) + _EDGE for least, natural in widths[:keep])
    groups: list[list[int]] = [[]]
    used = 0
    for i in range(keep, len(widths)):
        least, natural = widths[i]
        need = min(natural, max(least, room - _EDGE)) + _EDGE
        if groups[-1] and used + need > room:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += need
    parts = []
    for n, group in enumerate(groups):
        part = Table(
            title=table.title if n == 0 else f"{str(table.title).split(';')[0]} (continued)" if table.title else None,
            title_justify=table.title_justify,
        )
        for i in key + group:
            column = table.columns[i]
            numeric = column.justify == "right"
            part.add_column(column.header, justify=column.justify, no_wrap=numeric, overflow="fold")
        cells = [list(table.columns[i].cells) for i in key + group]
        for row in zip(*cells, strict=True):
            part.add_row(*row)
        parts.append(part)
    return parts


def show(table: Table, out: Console | None = None, keep: int = 1) -> None:
    """Print ``table``, split by :func:`split` to the console's width."""
    out = out or console()
    for part in split(table, out.width, keep):
        out.print(part)


def describe(config: Config) -> str:
    """One line: the config's name, family and values, what it leaves out, and its task head."""
    values = " ".join(f"{k}={v}" for k, v in config.values.items())
    off = [k for k, v in config.structure().items() if v is not None and not v]
    line = f"{config.name} ({config.model}): {values}" + (f"; without {', '.join(off)}" if off else "")
    if config.head is None:
        return line
    settings = " ".join(f"{k}={v}" for k, v in config.task_dict().items() if k != "head")
    return f"{line}; head {config.task.head} ({config.head.architecture}{', ' + settings if settings else ''})"


def substitution_label(breakdown: Breakdown) -> str:
    return ", ".join(f"{k} = {human(v)}" for k, v in breakdown.substitutions.items())


def params_breakdown(config: Config) -> Breakdown:
    return params(trace(config))


def components_json(breakdown: Breakdown, values: dict, key: str = "value") -> list[dict[str, object]]:
    """Each component's formula (total and per layer) and value."""
    return [
        {
            "name": c.name,
            "formula": text(c.total),
            "per_layer": text(c.per_layer) if c.per_layer is not None else None,
            "count": text(c.count) if c.count is not None else None,
            key: breakdown.evaluate(c.total, values),
        }
        for c in breakdown.components()
    ]


def params_json(config: Config, breakdown: Breakdown) -> dict[str, object]:
    values = config.symbols()
    return {
        "config": config.as_dict(),
        "params": breakdown.evaluate(breakdown.total, values),
        "formula": text(breakdown.total),
        "formula_substituted": text(breakdown.substituted(breakdown.total)),
        "substitutions": {str(k): text(v) for k, v in breakdown.substitutions.items()},
        "components": components_json(breakdown, values, "params"),
    }


def report_json(r: Report) -> dict[str, object]:
    """The documented ``symbert report --json`` contract."""
    values = r.values
    return {
        "config": r.config.as_dict(),
        "batch": r.batch,
        "seq_len": r.seq_len,
        "policy": r.options.policy,
        "dtype": r.options.activation_dtype,
        "autocast": r.options.amp,
        "attention": r.options.attention,
        "attention_kernel": ", ".join(r.kernels) or None,
        "recompute": r.options.recompute,
        "layout": layout_json(r.options.layout),
        "params": r.value("params"),
        "activation_bytes": r.value("activation_bytes"),
        "flops": {
            "forward": r.value("flops_forward"),
            "backward": r.value("flops_backward"),
            "non_matmul_forward": r.value("non_matmul_forward"),
        },
        "formulas": {key: text(b.total) for key, b in r.breakdowns.items()},
        "components": [
            {"quantity": key, **entry} for key, b in r.breakdowns.items() for entry in components_json(b, values)
        ],
    }


def layout_json(layout: Layout) -> dict[str, object]:
    """The parallel layout; every figure beside it is per GPU, on the most loaded one (first stage)."""
    return {**asdict(layout), "gpus": layout.gpus}


def breakdown_table(breakdown: Breakdown, values: dict, title: str, show: Callable[[int], str]) -> Table:
    """Each component's per-layer and total formula and its value (shown by ``show``), then the total."""
    table = Table(title=title, title_justify="left")
    for col in ("component", "per layer", "total", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for c in breakdown.components():
        per_layer = f"{human(c.per_layer)}  (× {human(c.count)})" if c.per_layer is not None else ""
        table.add_row(c.name, per_layer, human(c.total), show(breakdown.evaluate(c.total, values)))
    table.add_row("total", "", human(breakdown.total), show(breakdown.evaluate(breakdown.total, values)))
    return table


def print_report(r: Report) -> None:
    out = console()
    out.print(describe(r.config))
    out.print(f"batch B={r.batch}, seq_len={r.seq_len}; {r.setup}")
    values = r.values
    for key, title in (
        ("activation_bytes", "activation memory kept for backward"),
        ("flops_forward", "forward matmul FLOPs"),
        ("params", "parameters"),
    ):
        b = r.breakdowns[key]
        show(breakdown_table(b, values, title, lambda n, unit=b.unit: quantity(n, unit)), out)
    flops_total = r.value("flops_forward") + r.value("flops_backward")
    out.print(
        f"totals: {r.value('params'):,} parameters; "
        f"{quantity(r.value('activation_bytes'), 'bytes')} of activations kept for backward; "
        f"matmul FLOPs {quantity(r.value('flops_forward'), 'FLOPs')} forward + "
        f"{quantity(r.value('flops_backward'), 'FLOPs')} backward = {quantity(flops_total, 'FLOPs')}; "
        f"other ops {quantity(r.value('non_matmul_forward'), 'FLOPs')} forward"
    )


def print_params(config: Config, breakdown: Breakdown, by_component: bool) -> None:
    out = console()
    values = config.symbols()
    out.print(describe(config))
    out.print(f"\nparameters = {human(breakdown.total)}")
    if breakdown.substitutions:  # a family's conventions, where it has some (BERT's E = H, I = 4H)
        out.print(f"  with {substitution_label(breakdown)}: {human(breakdown.substituted(breakdown.total))}")
    out.print(f"  = {breakdown.evaluate(breakdown.total, values):,}")
    if not by_component:
        return
    show(breakdown_table(breakdown, values, "parameters by component", lambda n: f"{n:,}"), out)


def _shapes(graph: Graph, names: tuple[str, ...]) -> str:
    shown = []
    for name in names:
        t = graph.tensor(name)
        shape = "[" + ", ".join(human(sympy.sympify(d)) for d in t.shape) + "]"
        shown.append(shape if t.role == "activation" else f"{shape} {t.role}")
    return "  ".join(shown)


def print_graph(config: Config) -> None:
    graph = trace(config)
    table = Table(title=f"{describe(config)}: {sum(1 for _ in graph.nodes)} nodes", title_justify="left")
    for col in ("node", "op", "block", "inputs", "outputs", "parameters"):
        table.add_column(col)
    for node in graph.nodes:
        block = f"× {human(graph.blocks[node.block].count)}" if node.block else ""
        owned = "  ".join(f"{p.name.rsplit('.', 1)[-1]}[{', '.join(human(d) for d in p.shape)}]" for p in node.params)
        table.add_row(node.name, node.op, block, _shapes(graph, node.inputs), _shapes(graph, node.outputs), owned)
    show(table)
    kinds = ", ".join(graph.op_kinds())
    console().print(f"op kinds: {kinds}")


def print_checks(
    config: Config,
    batch: int,
    seq_len: int,
    dtype: str,
    checks: list,
    device: str = "cpu",
    attention: str = "eager",
    where: str = "",
) -> None:
    """Predicted against measured, one row per quantity; ``where`` names the rank of a distributed run."""
    setup = f"B={batch}, seq_len={seq_len}, {dtype}, torch-{device}, {attention} attention{where}"
    table = Table(title=f"{describe(config)}; {setup}", title_justify="left")
    for col in ("quantity", "predicted", "measured", "difference", ""):
        table.add_column(col, justify="right")
    for c in checks:
        table.add_row(
            c.quantity,
            f"{c.predicted:,}",
            f"{c.measured:,}",
            f"{c.predicted - c.measured:+,}",
            ("shown" if c.tolerance is None else "ok") if c.ok else "MISMATCH",
        )
    show(table)
