"""Notebook displays: short reprs, Markdown/HTML/LaTeX in symbert's notation, and docs/walkthrough.ipynb runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

import symbert
from symbert.formula import human
from symbert.render.tables import to_markdown

BASE = symbert.preset("bert-base")


@pytest.fixture(scope="module")
def report():
    return symbert.report(BASE, 32, 512, symbert.MemoryOptions("megatron"))


def test_graph_repr_is_short() -> None:
    graph = symbert.trace(BASE)
    assert repr(graph) == "<Graph bert, head model: 50 nodes, 60 tensors; repeated: encoder/layer × L>"
    page = graph._repr_html_()
    assert len(page) < 10_000 and "encoder/layer/attention/self/scores" in page and "[B, A, seq_len, seq_len]" in page


def test_breakdown_repr_and_latex_in_symbert_notation() -> None:
    p = symbert.params(symbert.trace(BASE))
    assert repr(p).startswith("<Breakdown params (parameters) = 4·H²·L + 2·H·I·L") and len(repr(p)) < 300
    latex = p._repr_latex_()
    assert r"\mathit{position}_{\mathrm{size}}" in latex and "position_{size}" not in latex.replace(r"\mathit", "")
    # vocab_size before type_size before position_size: symbert's factor order, not sympy's alphabetical one
    assert latex.index("vocab") < latex.index("type") < latex.index("position")


def test_report_repr_and_markdown(report) -> None:
    text = repr(report)
    assert len(text) < 1500
    assert text.startswith("<Report bert-base, B=32, seq_len=512; megatron, bfloat16")
    for key, b in report.breakdowns.items():
        assert f"{key} = {human(b.substituted(b.total))} = {report.value(key):,}" in text
    md = report._repr_markdown_()
    assert (
        "| activation_bytes | $5 A \\mathit{seq}_{\\mathrm{len}}^{2} B L + 34 \\mathit{seq}_{\\mathrm{len}} B H L" in md
    )
    assert "with $E = H$, $I = 4 H$" in md


def test_comparison_repr_and_markdown() -> None:
    c = symbert.compare([symbert.preset("bert-tiny"), symbert.preset("bert-mini")], 1, 128, symbert.MemoryOptions())
    text = repr(c)
    assert len(text) < 1000
    assert "params: 4,385,920 → 11,170,560 (× 2.54691)" in text
    md = c._repr_markdown_()
    assert "**bert-tiny, bert-mini; B=1" in md and "$48 \\mathit{seq}_{\\mathrm{len}}^{2} B" in md


def test_table_and_explanation(report) -> None:
    table = symbert.component_table([report], "activation_bytes")
    assert repr(table).startswith("<Table activation_bytes (bytes) by component") and len(repr(table)) < 2000
    assert "attention scores | L·(5·A·B·seq_len² + 6·B·H·seq_len) | 6,945,767,424" in repr(table)
    assert table._repr_markdown_() == to_markdown(table)
    terms = symbert.explain(report.breakdowns["activation_bytes"])
    assert isinstance(terms, tuple) and terms == tuple(terms)
    text = repr(terms)
    assert text.startswith("<Explanation of activation_bytes: 5·A·B·L·seq_len² + 34·B·H·L·seq_len") and len(text) < 3000
    assert "5·A·B·L·seq_len²: 2 from encoder/layer/attention/self/softmax" in text
    md = terms._repr_markdown_()
    assert "| $5 A \\mathit{seq}_{\\mathrm{len}}^{2} B L$ |" in md


def test_diagram_repr_is_short() -> None:
    d = symbert.diagram(BASE, "overview")
    assert repr(d).startswith("<Diagram: bert-base · overview level") and len(repr(d)) < 200


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot draws the notebook's diagram")
def test_walkthrough_notebook_runs(monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="the dev extra (nbclient) is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra (nbclient) is not installed")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    nb = nbformat.read(ROOT / "docs" / "walkthrough.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit it without outputs"
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = {kind for o in outputs for kind in o.get("data", {})}
    assert {"text/html", "text/latex", "text/markdown", "image/svg+xml"} <= shown
    plain = "\n".join(o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {}))
    assert "<Graph bert, head model: 50 nodes" in plain and "335141888" in plain
    assert "<Comparison of bert-mini, modernbert-base against bert-tiny" in plain
    assert "<Explanation of activation_bytes" in plain


def test_config_repr_and_markdown() -> None:
    assert repr(BASE) == (
        "<Config bert-base: bert, vocab_size=30522, H=768, L=12, A=12, I=3072, position_size=512, type_size=2>"
    )
    classifier = symbert.with_task(BASE, head="sequence-classification", num_labels=3)
    assert repr(classifier).endswith("type_size=2, num_labels=3; head sequence-classification>")
    md = BASE._repr_markdown_()
    assert md.startswith("**bert-base**: bert, the bare model\n\n")
    header = r"| $\mathit{vocab}_{\mathrm{size}}$ | $H$ | $L$ | $A$ | $I$ | $\mathit{position}_{\mathrm{size}}$ |"
    assert header in md and "| 30,522 | 768 | 12 | 12 | 3,072 | 512 | 2 |" in md
    assert "options: pooler=True, token_types=True, padding=True, hidden_act=gelu," in md
    assert BASE._repr_latex_() is None and BASE._repr_html_() is None  # Markdown only


def test_components_repr_and_markdown() -> None:
    """BERT's parameters by component, as the architecture gives them."""
    components = symbert.params(symbert.trace(BASE)).components()
    assert repr(components) == "\n".join(
        [
            "<Components of params (parameters)",
            "  embeddings = E·position_size + E·type_size + E·vocab_size + 2·E",
            "  self-attention = L·(3·H² + 3·H)",
            "  layernorms = 4·H·L",
            "  attention output = L·(H² + H)",
            "  intermediate = L·(H·I + I)",
            "  output = L·(H·I + H)",
            "  pooler = H² + H>",
        ]
    )
    assert repr(components[1]) == "<ComponentTotal self-attention = L·(3·H² + 3·H)>"
    md = components._repr_markdown_()
    assert md.startswith("**params** (parameters) by component\n\n| component | formula |\n")
    sizes = (r"\mathit{vocab}_{\mathrm{size}}", r"\mathit{type}_{\mathrm{size}}", r"\mathit{position}_{\mathrm{size}}")
    assert f"| embeddings | ${' + '.join(f'E {size}' for size in sizes)} + 2 E$ |" in md
    assert r"| self-attention | $L \left(3 H^{2} + 3 H\right)$ |" in md


def test_fit_repr_and_markdown() -> None:
    from symbert.symbols import B, seq_len
    from symbert.training.fit import Fit
    from symbert.training.states import Training
    from symbert.training.step import Point

    peak = Point(2, "backward", "encoder/layer/output/dense", 11, {"weights": 400 * 2**20, "activations": 2**30})
    solved = Fit(BASE, Training(), 2 * 2**30, 19, 512, "batch", None, peak, None, 3 * seq_len * B + 7)
    assert repr(solved) == (
        "<Fit bert-base, adamw, fp32 precision: largest batch at seq_len 512 in 2.00 GiB: 19; "
        "peak 1.39 GiB at step 2 backward: encoder/layer/output/dense [11]>"
    )
    given = Fit(BASE, Training(), 2**30, 8, 512, None, None, peak, None, 3 * seq_len * B + 7)
    assert repr(given).endswith(
        ": batch 8, seq_len 512 does not fit in 1.00 GiB: peak 1.39 GiB at step 2 backward: "
        "encoder/layer/output/dense [11]>"
    )
    md = solved._repr_markdown_()
    assert md.startswith("**bert-base**: largest batch at seq_len 512 in 2.00 GiB: 19; peak 1.39 GiB")
    assert "| weights | 400.00 MiB |\n| other activations | 1.00 GiB |\n" in md
    assert "| **1,493,172,224 (1.39 GiB)** |" in md
    assert r"peak formula: $3 \mathit{seq}_{\mathrm{len}} B + 7$" in md


def test_formulas_display_in_symbert_notation_in_ipython() -> None:
    """In a running IPython, ``import symbert`` makes a formula holding symbert's symbols (a total, a parsed
    formula) display as Breakdowns do, and leaves every other sympy expression to sympy."""
    pytest.importorskip("IPython")
    code = (
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "import sympy, symbert\n"
        "latex = lambda x: shell.display_formatter.format(x)[0].get('text/latex')\n"
        "print(latex(symbert.parse_formula('vocab_size*H + 2*H')))\n"
        "p = symbert.params(symbert.trace('bert'))\n"
        "print(latex(p.total) == p._repr_latex_())\n"
        "print(latex(sympy.Symbol('x') ** 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines() == [
        r"$\displaystyle H \mathit{vocab}_{\mathrm{size}} + 2 H$",
        "True",
        r"$\displaystyle x^{2}$",
    ]
