"""LaTeX: the Korthikanti form, degree order, notations and renames, and documents pdflatex compiles."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import sympy
from conftest import run_cli
from inprocess import invoke

import symbert
from symbert.analysis.compare import compare
from symbert.analysis.explain import explain
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import ConfigError
from symbert.render import latex, tables
from symbert.render.comparison import comparison_tables
from symbert.symbols import A, B, H, L, seq_len

S = seq_len
MEGATRON = MemoryOptions("megatron")


def lines(block: str) -> list[str]:
    return [line.rstrip(" \\") for line in block.splitlines()]


def test_factored_gives_korthikanti_form() -> None:
    """Korthikanti et al. 2022, eq. (2): sbh(34 + 5as/h) bytes per layer."""
    factor, cofactor = latex.factored(34 * S * B * H + 5 * A * S**2 * B)
    assert factor == S * B * H
    assert sympy.expand(cofactor - (34 + 5 * A * S / H)) == 0


def test_megatron_activation_latex_is_korthikanti() -> None:
    r = report(symbert.preset("bert-base"), 32, 512, MEGATRON)
    block = latex.align(r.breakdowns["activation_bytes"], latex.notation("megatron"))
    assert r"M_{\mathrm{layer}} &= s b h \left(34 + \frac{5 a s}{h}\right)" in lines(block)
    # the whole model: L layers, embeddings (two int64 id tensors, LN input, 1-byte mask), pooler.
    assert r"M &= 5 a s^{2} b L + 34 s b h L + 5 s b h + 16 s b + 2 b h" in lines(block)


def test_terms_ordered_by_degree_in_seed_notation() -> None:
    """The published count 12H²L + H² + 13HL + H(V + T + P) + 3H, highest degree first."""
    block = latex.align(symbert.params(symbert.trace()), line_width=None)
    expected = (
        r"N &= 12 H^{2} L + H^{2} + 13 H L + H \mathit{vocab}_{\mathrm{size}} + H \mathit{type}_{\mathrm{size}} "
        r"+ H \mathit{position}_{\mathrm{size}} + 3 H"
    )
    assert expected in lines(block)
    assert r"N_{\text{self-attention}} &= L \left(3 H^{2} + 3 H\right)" in lines(block)


def test_values_at_named_configs() -> None:
    b = symbert.params(symbert.trace())
    at = [(name, symbert.preset(name).symbols()) for name in ("bert-base", "bert-large")]
    block = latex.align(b, at=at)
    assert r"109{,}482{,}240 \approx \text{109.48 M} \quad (\text{bert-base}) \notag" in block
    assert r"335{,}141{,}888" in block


@pytest.mark.parametrize(
    ("renames", "expr", "expected"),
    [
        (["seq_len=n"], S**2 * B, "n^{2} b"),
        (["seq_len=n_{ctx}"], S * B * H, r"n_{\mathrm{ctx}} b h"),
        (["seq_len=n_ctx", "H=d"], S * H, r"n_{\mathrm{ctx}} d"),
        (["L=N_2"], L * H, "h N_{2}"),
    ],
)
def test_renames(renames: list[str], expr: sympy.Expr, expected: str) -> None:
    assert latex.notation("megatron", renames).latex(expr) == expected


@pytest.mark.parametrize(
    ("name", "renames", "message"),
    [
        ("paper", [], "unknown notation 'paper' (choose from seed, megatron)"),
        ("seed", ["seq_len"], "--rename expects NAME=NEW"),
        ("seed", ["foo=x"], "--rename: unknown symbol 'foo'"),
        ("seed", [r"seq_len=\input{x}"], "is not a valid symbol name"),
        ("seed", ["seq_len=__import__('os')"], "is not a valid symbol name"),
        ("seed", ["seq_len=n_{a}{b}"], "is not a valid symbol name"),
        ("seed", ["H=A"], "--rename: A and H would both print as A"),
    ],
)
def test_bad_notation_or_rename(name: str, renames: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        latex.notation(name, renames)


def test_cli_bad_arguments_get_one_line_and_exit_2() -> None:
    for args, message in (
        (("--notation", "paper"), "unknown notation 'paper'"),
        (("--rename", "seq_len=n}"), "--rename: 'n}' is not a valid symbol name"),
    ):
        result = run_cli("latex", *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_cli_output_is_deterministic() -> None:
    megatron = ("--policy", "megatron", "--attention", "eager")
    args = ("latex", "bert-base", "--notation", "megatron", *megatron, "--rename", "L=N")
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0 and first.stdout == second.stdout
    assert r"\left(34 + \frac{5 a s}{h}\right)" in first.stdout


def snippets() -> list[str]:
    """Every kind of LaTeX symbert writes: equations in both notations, general and substituted, with
    values and renames; component, explain and comparison tables."""
    configs = [symbert.preset(n) for n in ("bert-base", "bert-large")]
    out = []
    for options in (MemoryOptions(), MEGATRON, MemoryOptions("torch-cuda", attention="flash")):
        reports = [report(c, 4, 512, options) for c in configs]
        at = [(f"{r.config.name} 100% & more_", r.values) for r in reports]
        for general, notation in ((False, latex.notation("megatron")), (True, latex.notation("seed", ["H=d_{m}"]))):
            out.append(latex.equations(reports[0].breakdowns, notation, general=general, at=at, note="x"))
            out.extend(
                tables.to_latex(tables.component_table(reports, key, general), notation)
                for key in reports[0].breakdowns
            )
        terms = explain(reports[0].breakdowns["activation_bytes"])
        out.append(tables.to_latex(tables.explain_table(terms, reports[0], "activation_bytes")))
    albert = report(symbert.preset("albert-base-v2"), 2, 128, MEGATRON)
    out.append(latex.equations(albert.breakdowns, latex.notation("megatron")))
    comparison = compare([configs[0], symbert.preset("albert-base-v2")], 2, 128, MEGATRON)
    out.append(tables.render(comparison_tables(comparison), "latex"))
    mixed = [report(symbert.preset(n), 2, 128) for n in ("bert-base", "modernbert-base")]
    out.append(latex.grouped_equations(mixed, ["params"], latex.notation("megatron")))
    out.append(tables.to_latex(tables.component_table(mixed, "params")))
    out.append(tables.to_latex(tables.explain_table(explain(mixed[1].breakdowns["params"]), mixed[1], "params")))
    return out


def test_every_snippet_compiles(tmp_path) -> None:
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (CI installs texlive-latex-base and texlive-latex-recommended)")
    (tmp_path / "formulas.tex").write_text(latex.document(*snippets()))
    result = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", "formulas.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert (tmp_path / "formulas.pdf").stat().st_size > 0


def overfull_boxes(tmp_path, name: str, tex: str) -> list[str]:
    """pdflatex's "Overfull \\hbox" warnings for the document ``tex`` (skips where pdflatex is missing)."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (CI installs texlive-latex-base and texlive-latex-recommended)")
    (tmp_path / f"{name}.tex").write_text(tex)
    result = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", f"{name}.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    log = (tmp_path / f"{name}.log").read_text(errors="replace")
    return re.findall(r"Overfull \\hbox \([0-9.]+pt too wide\)[^\n]*", log)


def bodies(*documents: str) -> str:
    """One document holding the bodies of ``documents`` (all of one preamble), for a single pdflatex run."""
    preamble, _, _ = documents[0].partition("\\begin{document}\n")
    parts = []
    for doc in documents:
        head, _, body = doc.partition("\\begin{document}\n")
        assert head == preamble and body.endswith("\\end{document}\n")
        parts.append(body.removesuffix("\\end{document}\n"))
    return latex.document(*parts)


MODERNBERT_AMP = ("modernbert-base", "modernbert-large", "--attention", "sdpa", "--policy", "torch-cuda", "--precision")


def test_every_preset_document_fits_the_page(tmp_path) -> None:
    """`latex PRESET --document` for every preset, one config and several (in both notations), has no line
    wider than the page; unbroken (--width 0) the same formulas overflow it, so the check can see them."""
    runs = [
        *(("latex", name, "--document") for name in symbert.preset_names()),
        ("latex", "bert-base", "bert-large", "--document"),
        ("latex", "bert-base", "bert-large", "--document", "--notation", "megatron", "--general"),
        ("latex", *MODERNBERT_AMP, "amp", "--document"),
        ("latex", "deberta-v3-base", "deberta-v3-large", "--document", "--policy", "megatron"),
        ("latex", "bert-base", "modernbert-base", "deberta-v3-base", "--document"),
    ]
    outcomes = [invoke(*args) for args in runs]
    assert all(o.code == 0 for o in outcomes), [o.stderr for o in outcomes if o.code]
    assert overfull_boxes(tmp_path, "fits", bodies(*(o.stdout for o in outcomes))) == []
    unbroken = invoke(*runs[-2], "--width", "0")
    assert len(overfull_boxes(tmp_path, "unbroken", unbroken.stdout)) >= 3


def test_long_sums_break_before_a_sign_within_the_width() -> None:
    """bert-base's activation total breaks into lines of whole terms; joined again they give the one-line sum."""
    b = report(symbert.preset("bert-base"), 1, 128, MemoryOptions()).breakdowns["activation_bytes"]
    whole = lines(latex.align(b, line_width=None))[1].removeprefix("M &= ")
    rows = lines(latex.align(b, line_width=40))
    first = rows.index(next(r for r in rows if r.startswith("M &= ")))
    block = [rows[first].removeprefix("M &= ")]
    while rows[first + len(block)].startswith(r"&\quad {} "):
        block.append(rows[first + len(block)].removeprefix(r"&\quad {} "))
    assert len(block) > 1 and all(b.endswith(r" \notag") for b in block[:-1])
    assert " ".join(b.removesuffix(r" \notag") for b in block) == whole
    assert all(part.startswith(("+ ", "- ")) for part in block[1:])


def test_the_24_miniatures_transposed_in_groups_fit_the_page(tmp_path) -> None:
    """`table 'bert-L*-H*' --transpose --columns 3`: 26 columns untransposed, here tables that fit the page."""
    out = invoke("table", "bert-L*-H*", "--format", "latex", "--transpose", "--columns", "3")
    assert out.code == 0 and out.stdout.count(r"\begin{table}") == 3, out.stderr
    # each group repeats a row per config; bert-L12-H768 is bert-base, 109,482,240 parameters in all
    assert out.stdout.count("\nbert-L12-H768 & ") == 3 and out.stdout.count(" & 109,482,240 \\\\") == 1
    assert overfull_boxes(tmp_path, "miniatures", latex.document(out.stdout)) == []


def test_latex_output_file(tmp_path) -> None:
    """`latex -o FILE` writes what standard output would get, and nothing to standard output."""
    path = tmp_path / "bert.tex"
    written = invoke("latex", "bert-base", "--document", "-o", str(path))
    assert written.code == 0 and written.stdout == ""
    assert path.read_text() == invoke("latex", "bert-base", "--document").stdout
    missing = invoke("latex", "bert-base", "-o", str(tmp_path / "no" / "bert.tex"))
    assert missing.refused and "does not exist" in missing.stderr


def test_a_comparison_of_three_families_fits_the_page(tmp_path) -> None:
    """`compare --format latex` over three families: every table fits the line (one wider than it is scaled
    down to it), and a crossover with two roots gives both as formulas, not as sympy text."""
    out = invoke("compare", "bert-base", "modernbert-base", "deberta-v3-base", "--format", "latex")
    assert out.code == 0, out.stderr
    crossovers = out.stdout[out.stdout.index(r"\caption{crossover"):]
    crossovers = crossovers[: crossovers.index(r"\end{table}")]
    assert "sqrt(" not in crossovers and "**" not in crossovers
    row = r"activation\_bytes & per layer & bert-base"
    bert = next(line for line in crossovers.splitlines() if line.startswith(row))
    # the general roots and their values at bert-base: two cells of two roots, each root from the left of its line
    assert bert.count(r", \\ & ") == 2 and bert.endswith(r"\end{aligned}$ & 0.0577312, 6512.94 \\")
    assert overfull_boxes(tmp_path, "compare", latex.document(out.stdout)) == []
    unscaled = out.stdout.replace(r"\ifdim\wd0>\linewidth", r"\ifdim\wd0>\maxdimen")  # never scaled down
    assert len(overfull_boxes(tmp_path, "unscaled", latex.document(unscaled))) >= 3
