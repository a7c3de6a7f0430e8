"""LaTeX for formulas: notations, terms in degree order, and ``align`` blocks ready for a paper.

A :class:`Notation` names every model symbol and fixes the order factors take in a product (``s b h``
rather than sympy's alphabetical ``b h s``). Names are written in a small grammar, never evaluated: a
letter or word, optionally with a subscript (``n``, ``n_ctx``, ``n_{ctx}``). Printing swaps each symbol
for a placeholder whose name sorts in notation order and hands sympy the LaTeX names through
``symbol_names``, so sympy still does all the typesetting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sympy

from symbert.analysis.breakdown import Breakdown, ComponentTotal
from symbert.configs import Config, ConfigError
from symbert.parallel import DEGREES
from symbert.render.formula import ORDER, quantity, text
from symbert.symbols import (
    ALL,
    A,
    B,
    C,
    E,
    H,
    I,
    L,
    L_global,
    global_every,
    num_labels,
    position_buckets,
    position_size,
    seq_len,
    type_size,
    vocab_size,
    window,
)

#: Terms of a factored form's cofactor run upward from its constant: 34 + 5·A·seq_len/H.
ASCENDING = "igrlex"

#: The order factors appear in a product, in every notation: seq_len·B·H, A·seq_len, B·C (a multiple-choice
#: model's rows), H·num_labels (a classifier's weight).
FACTOR_ORDER: tuple[sympy.Symbol, ...] = (
    A,
    seq_len,
    B,
    C,
    H,
    L,
    E,
    I,
    vocab_size,
    num_labels,
    type_size,
    position_size,
)
#: Then every other symbol of :data:`symbert.symbols.ALL` (a family's own sizes), in its order.
FACTOR_ORDER += tuple(s for s in ALL if s not in FACTOR_ORDER)

_NAME = re.compile(r"([A-Za-z][A-Za-z0-9]*)(?:_(?:\{([A-Za-z0-9]+)\}|([A-Za-z0-9]+)))?")

_TEXT_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "−": "$-$",
    "≈": r"$\approx$",
    "→": r"$\to$",
    "∞": r"$\infty$",
    "…": r"\dots{}",
    "—": "---",
    "·": r"$\cdot$",
    "×": r"$\times$",
}

#: The subscript of per-layer equations.
LAYER = r"\mathrm{layer}"

#: The letter (and superscript tag) each quantity is written with, by Breakdown.quantity.
SYMBOLS: dict[str, tuple[str, str | None]] = {
    "params": ("N", None),
    "activation_bytes": ("M", None),
    "flops_forward": ("F", "fwd"),
    "flops_backward": ("F", "bwd"),
    "flops_non_matmul_forward": ("F", "other"),
}


def escape(text: str) -> str:
    """``text`` safe in LaTeX text mode (and inside ``\\text{}``)."""
    return "".join(_TEXT_ESCAPES.get(ch, ch) for ch in text)


def latex_name(name: str) -> str:
    """LaTeX for a symbol name: ``s`` → s, ``seq_len`` → \\mathit{seq}_{\\mathrm{len}}, ``n_{ctx}``.

    One letter stays italic, a word is set ``\\mathit``, a word subscript upright; anything else is
    refused with a :class:`ConfigError`.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        hint = "use letters and digits, optionally with a subscript such as n_{ctx}"
        raise ConfigError(f"{name!r} is not a valid symbol name: {hint}")
    main, sub = match[1], match[2] or match[3]
    out = main if len(main) == 1 else rf"\mathit{{{main}}}"
    if sub:
        out += "_{" + (sub if len(sub) == 1 or sub.isdigit() else rf"\mathrm{{{sub}}}") + "}"
    return out


@dataclass(frozen=True)
class Notation:
    """A name for every model symbol, in :data:`FACTOR_ORDER`."""

    name: str
    names: tuple[tuple[sympy.Symbol, str], ...]

    def renamed(self, renames: Iterable[str]) -> Notation:
        """This notation with ``NAME=NEW`` renames applied; NAME is a seed symbol name such as seq_len."""
        names = dict(self.names)
        known = {s.name: s for s in names}
        for item in renames:
            old, sep, new = (part.strip() for part in item.partition("="))
            if not sep or not old or not new:
                raise ConfigError(f"--rename expects NAME=NEW, got {item!r}")
            if old not in known:
                raise ConfigError(f"--rename: unknown symbol {old!r} (known: {', '.join(known)})")
            try:
                latex_name(new)
            except ConfigError as exc:
                raise ConfigError(f"--rename: {exc}") from None
            names[known[old]] = new
        renamed = Notation(self.name, tuple(names.items()))
        printed: dict[str, str] = {}
        for symbol, latex in renamed.symbol_names().items():
            if latex in printed:
                raise ConfigError(f"--rename: {printed[latex]} and {symbol} would both print as {latex}")
            printed[latex] = symbol
        return renamed

    def symbol_names(self) -> dict[str, str]:
        """Seed symbol name → LaTeX."""
        return {s.name: latex_name(n) for s, n in self.names}

    def latex(self, expr: sympy.Expr, order: str = ORDER) -> str:
        """``expr`` in this notation, terms in ``order`` (highest degree first by default).

        Symbols the notation does not name (a user-defined model's own) print as sympy prints them.
        """
        placeholders = {s: sympy.Symbol(f"x{i:02d}", **s.assumptions0) for i, (s, _) in enumerate(self.names)}
        names = {placeholders[s]: latex_name(n) for s, n in self.names}
        return sympy.latex(sympy.sympify(expr).xreplace(placeholders), order=order, symbol_names=names)


NOTATIONS: dict[str, Notation] = {
    "seed": Notation("seed", tuple((s, s.name) for s in FACTOR_ORDER)),
    "megatron": Notation(
        "megatron",
        (
            (A, "a"),
            (seq_len, "s"),
            (B, "b"),
            (C, "c"),
            (H, "h"),
            (L, "L"),
            (E, "h_emb"),
            (I, "h_ff"),
            (vocab_size, "V"),
            (num_labels, "K"),
            (type_size, "T"),
            (position_size, "s_max"),
            (position_buckets, "k"),
            (window, "w"),
            (global_every, "n_g"),
            (L_global, "L_g"),
        ),
    ),
}


def notation(name: str = "seed", renames: Iterable[str] = ()) -> Notation:
    """A notation preset (``seed`` or ``megatron``) with ``NAME=NEW`` renames applied."""
    if name not in NOTATIONS:
        raise ConfigError(f"unknown notation {name!r} (choose from {', '.join(NOTATIONS)})")
    return NOTATIONS[name].renamed(renames)


def check_one_structure(configs: Sequence[Config]) -> None:
    """Refuse configs whose formulas differ: another model family, other structural options, another task head
    or loss (the number of labels and choices stay symbols, so they may differ)."""
    shapes = {(c.model, tuple(sorted(c.structure().items())), c.task.head, c.task.problem) for c in configs}
    if len(shapes) > 1:
        raise ConfigError(
            "these configs have different formulas: give configs of one model family, structure and task head"
        )


def factored(expr: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """``expr`` as (factor, cofactor): the content of all terms times the common monomial of the
    lowest-degree terms, and what is left, so the cofactor starts from a constant. A non-polynomial
    ``expr`` is left whole: (1, expr).

    With megatron's per-layer bytes, 34·seq_len·B·H + 5·A·seq_len²·B → (seq_len·B·H, 34 + 5·A·seq_len/H).
    """
    expr = sympy.expand(expr)
    gens = sorted(expr.free_symbols, key=str)
    if not gens or not expr.is_polynomial(*gens):
        return sympy.S.One, expr
    poly = sympy.Poly(expr, *gens)
    lowest = min(sum(m) for m in poly.monoms())
    common = [min(exps) for exps in zip(*(m for m in poly.monoms() if sum(m) == lowest), strict=True)]
    factor = poly.content() * sympy.Mul(*(g**e for g, e in zip(gens, common, strict=True)))
    return factor, sympy.expand(expr / factor)


def factored_latex(expr: sympy.Expr, notation: Notation) -> str:
    """``expr`` written as :func:`factored` splits it, cofactor from its constant up; expanded if nothing factors."""
    factor, cofactor = factored(expr)
    if factor == 1 or len(sympy.Add.make_args(cofactor)) < 2:
        return notation.latex(expr)
    return rf"{notation.latex(factor)} \left({notation.latex(cofactor, ASCENDING)}\right)"


def layer_total(breakdown: Breakdown) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(per-run sum, count) of the contributions in the repeated block, if there is exactly one count."""
    repeated = [c for c in breakdown.contributions if c.count != 1]
    counts = {c.count for c in repeated}
    if len(counts) != 1:
        return None
    return sympy.expand(sympy.Add(*(c.expr for c in repeated))), counts.pop()


def component_formula(breakdown: Breakdown, component: ComponentTotal, general: bool = False) -> sympy.Expr:
    """A component as written in equations and tables: count × per-layer expression, or its total."""
    form = sympy.expand if general else breakdown.substituted
    if component.per_layer is not None:
        return sympy.Mul(component.count, form(component.per_layer))
    return form(component.total)


def number(value: int, unit: str) -> str:
    """An exact integer with {,} between thousands, and its size in human units where they differ."""
    exact = f"{value:,}".replace(",", "{,}")
    human = quantity(value, unit)
    return exact if human == f"{value:,}" else rf"{exact} \approx \text{{{escape(human)}}}"


def label(breakdown: Breakdown, subscript: str | None = None) -> str:
    """The quantity's letter, e.g. ``F^{\\mathrm{fwd}}``, with an optional subscript."""
    letter, tag = SYMBOLS[breakdown.quantity]
    out = letter + (rf"^{{\mathrm{{{tag}}}}}" if tag else "")
    return out + (f"_{{{subscript}}}" if subscript else "")


def align(
    breakdown: Breakdown,
    notation: Notation = NOTATIONS["seed"],
    *,
    general: bool = False,
    at: Sequence[tuple[str, Mapping[sympy.Symbol, int]]] = (),
) -> str:
    """One ``align`` block: the total, its value at each named config, the per-layer sum factored by
    :func:`factored`, and every component. ``general`` keeps E and I instead of the family's conventions.
    """
    form = sympy.expand if general else breakdown.substituted
    lines = [(label(breakdown), notation.latex(form(breakdown.total)))]
    shown = [s for s in (B, seq_len, C, num_labels, *DEGREES) if s in breakdown.total.free_symbols]
    for name, values in at:
        settings = "".join(rf",\ {notation.latex(s)} = {values[s]}" for s in shown)
        value = number(breakdown.evaluate(breakdown.total, values), breakdown.unit)
        lines.append(("", rf"{value} \quad (\text{{{escape(name)}}}{settings}) \notag"))
    layer = layer_total(breakdown)
    if layer is not None:
        lines.append((label(breakdown, LAYER), factored_latex(form(layer[0]), notation)))
    for c in breakdown.components():
        lines.append(
            (label(breakdown, rf"\text{{{escape(c.name)}}}"), notation.latex(component_formula(breakdown, c, general)))
        )
    body = " \\\\\n".join(f"{lhs} &= {rhs}" for lhs, rhs in lines)
    return f"\\begin{{align}}\n{body}\n\\end{{align}}\n"


def equations(
    breakdowns: Mapping[str, Breakdown],
    notation: Notation = NOTATIONS["seed"],
    *,
    general: bool = False,
    at: Sequence[tuple[str, Mapping[sympy.Symbol, int]]] = (),
    note: str = "",
) -> str:
    """An :func:`align` block per breakdown, each after a comment naming it (and ``note``)."""
    blocks = []
    for key, b in breakdowns.items():
        given = ", ".join(f"{k} = {text(v)}" for k, v in b.substitutions.items())
        conventions = "" if general or not given else "; " + given
        comment = f"% {key} ({b.unit}){conventions}{'; ' + note if note else ''}".replace("\n", " ")
        blocks.append(f"{comment}\n{align(b, notation, general=general, at=at)}")
    return "\n".join(blocks)


def document(*snippets: str) -> str:
    """A complete pdflatex document around ``snippets`` (amsmath for align, booktabs for tables)."""
    preamble = "\\documentclass{article}\n\\usepackage{amsmath}\n\\usepackage{booktabs}\n"
    return preamble + "\\begin{document}\n" + "\n".join(snippets) + "\\end{document}\n"
