"""Component tables as CSV, Markdown and LaTeX, checked against the published parameter formula."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import sympy
from conftest import run_cli

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.render import tables
from symbert.render.reference import reference
from symbert.symbols import B, H, L, position_size, seq_len, type_size, vocab_size

MINIATURES = [f"bert-L{layers}-H{hidden}" for layers in (2, 4, 6, 8, 10, 12) for hidden in (128, 256, 512, 768)]


def bert_params(layers: int, hidden: int) -> int:
    """12H²L + H² + 13HL + H(V + T + P) + 3H with Google's vocabulary (30522), 2 types, 512 positions."""
    return 12 * hidden**2 * layers + hidden**2 + 13 * hidden * layers + hidden * (30522 + 2 + 512) + 3 * hidden


def test_csv_of_the_24_miniatures() -> None:
    result = run_cli("table", "bert-L*-H*", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["component", "formula", *MINIATURES]
    total = rows[-1]
    assert total[0] == "total"
    by_hand = 12 * H**2 * L + H**2 + 13 * H * L + H * (vocab_size + type_size + position_size) + 3 * H
    assert sympy.expand(sympy.sympify(total[1], locals=symbert.symbols.BY_NAME) - by_hand) == 0
    for name, value in zip(MINIATURES, total[2:], strict=True):
        layers, hidden = (int(part[1:]) for part in name.split("-")[1:])
        assert int(value) == bert_params(layers, hidden)
    assert int(total[2]) == 4_385_920  # BERT-Tiny, published as 4.4M
    assert sum(int(row[-1]) for row in rows[1:-1]) == int(total[-1]) == 109_482_240


def table_for(*names: str, quantity: str = "params", options: MemoryOptions | None = None) -> tables.Table:
    return tables.component_table([report(symbert.preset(n), 2, 64, options) for n in names], quantity)


def test_markdown_table() -> None:
    out = tables.to_markdown(table_for("bert-base", "bert-large"))
    lines = out.splitlines()
    assert lines[2] == "| component | formula | bert-base | bert-large |"
    assert lines[3] == "| --- | --- | ---: | ---: |"
    assert r"| self-attention | $L \left(3 H^{2} + 3 H\right)$ | 21,261,312 | 75,571,200 |" in lines
    assert lines[-1].startswith("| total |") and lines[-1].endswith("| 109,482,240 | 335,141,888 |")


def test_latex_booktabs_table() -> None:
    out = tables.to_latex(table_for("bert-tiny"))
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llr}", r"\caption{params"):
        assert command in out
    assert r"self-attention & $L \left(3 H^{2} + 3 H\right)$ & 99,072 \\" in out  # 2·(3·128² + 3·128)


def test_text_cells_are_escaped() -> None:
    config = symbert.Config("bert", symbert.preset("bert-tiny").values, "my_model 50% & co|x")
    t = tables.component_table([report(config, 1, 8)], "params")
    assert r"my\_model 50\% \& co|x" in tables.to_latex(t)
    assert r"my_model 50% & co\|x" in tables.to_markdown(t)


def test_activation_values_by_hand() -> None:
    """megatron per layer sbh(34 + 5as/h) at bert-tiny (L=2, H=128, A=2), B=2, seq_len=64."""
    t = table_for("bert-tiny", quantity="activation_bytes", options=MemoryOptions("megatron"))
    layers = sum(row[2] for row in t.rows if row[0] not in ("embeddings", "pooler", "total"))
    s, b, h, a = 64, 2, 128, 2
    assert layers == 2 * s * b * h * (34 + 5 * a * s // h)
    formulas = {row[0]: row[1] for row in t.rows}
    assert (
        sympy.expand(formulas["attention scores"] - L * (5 * symbert.symbols.A * B * seq_len**2 + 6 * B * H * seq_len))
        == 0
    )


def test_configs_of_other_families_line_up_by_role() -> None:
    """albert-base-v2 by hand (E = 128, H = 768, I = 3072, one shared layer, 30,000 words): its total is the
    published 11,683,584; bert-tiny's column is the published 4,385,920."""
    t = table_for("bert-tiny", "albert-base-v2")
    assert t.header == ("role", "formula (bert-tiny)", "bert-tiny", "formula (albert-base-v2)", "albert-base-v2")
    albert = {row[0]: row[4] for row in t.rows}
    e, h, i = 128, 768, 3072
    assert albert == {
        "embeddings": e * (30000 + 512 + 2) + 2 * e + (e * h + h),  # tables, layernorm, the E→H projection
        "attention": 4 * (h * h + h),
        "MLP": (h * i + i) + (i * h + h),
        "norms": 2 * 2 * h,
        "pooler": h * h + h,
        "total": 11_683_584,
    }
    assert {row[0]: row[2] for row in t.rows}["total"] == 4_385_920
    assert tables.transposed(t).keep == 1 and t.keep == 1 and table_for("bert-tiny").keep == 2


def test_csv_round_trips_through_the_csv_module() -> None:
    t = tables.Table("t", ("a", "b"), (('x, "y"', 1), ("z", sympy.Integer(2) * H)))
    assert list(csv.reader(io.StringIO(tables.to_csv(t)))) == [["a", "b"], ['x, "y"', "1"], ["z", "2*H"]]


def test_formula_reference_page_is_fresh() -> None:
    """docs/formulas.md is what `make docs` writes from the current code."""
    page = Path(__file__).parent.parent / "docs" / "formulas.md"
    assert page.read_text() == reference(), "run `make docs` to regenerate docs/formulas.md"


def test_transposed_and_column_groups_by_hand() -> None:
    table = tables.Table("t", ("component", "formula", "a", "b", "c"), (("x", H, 1, 2, 3), ("y", L, 4, 5, 6)), keep=2)
    flipped = tables.transposed(table)
    assert flipped.header == ("component", "x", "y")
    assert flipped.rows == (("formula", H, L), ("a", 1, 4), ("b", 2, 5), ("c", 3, 6))
    groups = tables.column_groups(table, 2)
    assert [g.header for g in groups] == [("component", "formula", "a", "b"), ("component", "formula", "c")]
    assert [g.rows for g in groups] == [(("x", H, 1, 2), ("y", L, 4, 5)), (("x", H, 3), ("y", L, 6))]
    assert [g.title for g in groups] == ["t (1 of 2)", "t (2 of 2)"]
    assert tables.column_groups(table, 3) == [table]


def test_wide_formula_cells_break_in_latex() -> None:
    total = 12 * H**2 * L + H**2 + 13 * H * L + H * vocab_size + H * type_size + H * position_size + 3 * H
    out = tables.to_latex(tables.Table("t", ("formula",), ((total,),)))
    assert r"$\begin{aligned}[t] & 12 H^{2} L + H^{2} + 13 H L \\ & \quad {} + H \mathit{vocab}" in out
    assert r"\begin{aligned}" not in tables.to_latex(tables.Table("t", ("formula",), ((total,),)), cell_width=None)
