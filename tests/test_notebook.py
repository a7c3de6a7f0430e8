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
    for shown in ("<Config bert-base: bert", "<Components of params", "<Fit bert-base", "<Plan bert-base: 4 GPUs",
                  "<Timeline bert-base"):
        assert shown in plain, shown
    markdown = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
    assert "| $t$ | $p$ | $d$ | ZeRO |" in markdown and "| model state | formula | bytes |" in markdown


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


def test_plan_repr_and_markdown() -> None:
    """A plan written by hand: two layouts of 4 GPUs fit, one family does not."""
    from symbert.parallel import Layout
    from symbert.training.planner import Option, Plan, Rejected
    from symbert.training.states import Training
    from symbert.training.step import Point

    def peak(gib: int) -> Point:
        split = {"weights": 2**30, "activations": (gib - 1) * 2**30}
        return Point(2, "backward", "encoder/layer/output/dense", 11, split)

    fits = (Option(Layout(data=4), "none", 16, peak(30), 1),
            Option(Layout(tensor=2, sequence=True, data=2, zero=3), "selective", 24, peak(40), 58))
    rejected = (Rejected(Layout(pipeline=4, microbatches=4), "--pipeline-parallel 4 does not divide the layers (L=6)"),)
    plan = Plan(BASE, Training(), 4, 80 * 2**30, 512, None, fits, rejected)
    assert repr(plan) == (
        "<Plan bert-base: 4 GPUs of 80.00 GiB at seq_len 512: 2 layouts fit; best t=1, p=1, d=4, ZeRO 0, "
        "recompute none, micro-batch 16, peak 30.00 GiB; 1 do not>"
    )
    md = plan._repr_markdown_()
    assert md.startswith("**bert-base**: 4 GPUs of 80.00 GiB at seq_len 512: 2 layouts fit; best t=1")
    assert (
        "| $t$ | $p$ | $d$ | ZeRO | recompute | micro-batch | peak | communication |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| 1 | 1 | 4 | 0 | none | 16 | 30.00 GiB | 1 |\n"
        "| 2 (sp) | 1 | 2 | 3 | selective | 24 | 40.00 GiB | 58 |\n"
    ) in md
    assert md.endswith(
        "do not fit:\n\n- t=1, p=4, d=1, ZeRO 0: --pipeline-parallel 4 does not divide the layers (L=6)\n"
    )
    nothing = Plan(BASE, Training(), 4, 2**30, 128, 8, (), rejected)
    assert repr(nothing).startswith("<Plan bert-base: 4 GPUs of 1.00 GiB at seq_len 128, micro-batch 8: no layout fits")


def test_timeline_repr_and_markdown() -> None:
    """A timeline written by hand: bert-base's states (4·Ψ bytes of fp32 weights, Ψ = 109,482,240), two phases."""
    from symbert.symbols import H, L
    from symbert.training.allocator import PhasePeak
    from symbert.training.states import Training
    from symbert.training.step import Phase, Point
    from symbert.training.timeline import Timeline

    sizes = BASE.symbols()
    forward = Point(1, "forward", "encoder/layer/output/LayerNorm", 11, {"weights": 3 * 2**29, "activations": 2**30})
    backward = Point(1, "backward", "embeddings/word_embeddings", None, {"weights": 3 * 2**29, "activations": 2**31})
    phases = [Phase(1, "forward", forward, 2**31), Phase(1, "backward", backward, 3 * 2**29)]
    states = {"weights": 12 * H**2 * L, "gradients": 12 * H**2 * L, "optimizer": 24 * H**2 * L}
    simulated = {"1 forward": PhasePeak("1 forward", 0, 2**31 + 2**29, 3 * 2**30)}
    tl = Timeline(BASE, Training(), 8, 512, sizes, states, phases, 7 * H + 3, simulated, 2**32)
    assert repr(tl) == (
        "<Timeline bert-base, adamw, fp32 precision, B=8, seq_len=512: peak 3.50 GiB at step 1 backward: "
        "embeddings/word_embeddings; fits in 4.00 GiB>"
    )
    md = tl._repr_markdown_()
    assert md.startswith("**bert-base**: B=8, seq_len=512: peak 3.50 GiB at step 1 backward: embeddings/")
    # 12·768²·12 = 84,934,656 bytes = 81.00 MiB
    assert "| weights | $12 H^{2} L$ | 81.00 MiB |\n| gradients | $12 H^{2} L$ | 81.00 MiB |\n" in md
    assert "| optimizer states | $24 H^{2} L$ | 162.00 MiB |\n" in md
    assert (
        "| step | phase | peak | allocated | reserved | where | end |\n| --- | --- | --- | --- | --- | --- | --- |\n"
        "| 1 | forward | 2.50 GiB | 2.50 GiB | 3.00 GiB | encoder/layer/output/LayerNorm [11] | 2.00 GiB |\n"
        "| 1 | backward | 3.50 GiB |  |  | embeddings/word_embeddings | 1.50 GiB |\n"
    ) in md
    assert md.endswith("peak formula: $7 H + 3$\n")
