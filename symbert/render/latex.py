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
from typing import TYPE_CHECKING

import sympy

from symbert.analysis.breakdown import Breakdown, ComponentTotal
from symbert.configs import Config, ConfigError
from symbert.formula import ORDER, quantity, text
from symbert.symbols import (
    ALL,
    DEGREES,
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

if TYPE_CHECKING:
    from symbert.analysis.report import Report

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

#: The default width of an equation line, in letters as :func:`width` estimates them: what fits an article's text
#: width (345 pt at 10 pt type) beside an equation number.
WIDTH = 60

#: Printed widths in letters: commands that print nothing, and symbols other than one letter wide.
_SILENT = {r"\mathit", r"\mathrm", r"\mathbf", r"\left", r"\right", r"\notag", "&"}
_WIDTHS = {
    r"\quad": 2.0,
    r"\qquad": 4.0,
    r"\ ": 0.4,
    r"\,": 0.3,
    r"\;": 0.5,
    ",": 0.4,
    "(": 0.6,
    ")": 0.6,
    "[": 0.6,
    "]": 0.6,
}
_RELATIONS = {"+", "-", "=", "<", ">", r"\approx", r"\cdot", r"\times", r"\to", r"\le", r"\ge"}
_TOKEN = re.compile(r"\\[A-Za-z]+|\\.|.", re.S)
_OPEN = {"{", "(", "[", r"\left"}
_CLOSE = {"}", ")", "]", r"\right"}
_PRODUCT = re.compile(r"(.*?) ?\\left\((.*)\\right\)", re.S)

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


def width(tex: str) -> float:
    """The printed width of math ``tex``, estimated in letters: a small letter, digit or symbol counts one, a
    capital 1.25, a binary operator or relation two with its spacing, a sub- or superscript 0.7 of its size, a
    fraction its wider part, and spaces only inside ``\\text``."""
    tokens = _TOKEN.findall(tex)

    def measure(i: int, scale: float, in_text: bool, group: bool) -> tuple[float, int]:
        total = 0.0
        while i < len(tokens):
            token, i = tokens[i], i + 1
            if token == "}" and group:
                break
            if token in ("^", "_"):
                part, i = argument(i, scale * 0.7, in_text)
            elif token == r"\frac":
                top, i = argument(i, scale, in_text)
                bottom, i = argument(i, scale, in_text)
                part = max(top, bottom)
            elif token == r"\text":
                part, i = argument(i, scale, True)
            elif token == "{":
                part, i = measure(i, scale, in_text, True)
            elif token == " ":
                part = 0.4 * scale if in_text else 0.0
            elif token in _SILENT:
                part = 0.0
            elif token in _RELATIONS and not in_text:
                part = 2.0 * scale
            else:
                part = _WIDTHS.get(token, 1.25 if token.isupper() else 1.0) * scale
            total += part
        return total, i

    def argument(i: int, scale: float, in_text: bool) -> tuple[float, int]:
        if i < len(tokens) and tokens[i] == "{":
            return measure(i + 1, scale, in_text, True)
        return (scale, i + 1) if i < len(tokens) else (0.0, i)

    return measure(0, 1.0, False, False)[0]


def terms(tex: str) -> list[str]:
    """The terms of a printed sum, split at its outermost `` + ``, `` - `` and ``\\quad``; each after the first
    keeps its sign (or quad), so joining them with spaces gives ``tex`` back."""
    depth, cuts = 0, [0]
    for match in _TOKEN.finditer(tex):
        token, start, end = match[0], match.start(), match.end()
        depth += (token in _OPEN) - (token in _CLOSE)
        spaced = tex[start - 1 : start] == " " and tex[end : end + 1] == " "
        if depth == 0 and start > 0 and spaced and token in ("+", "-", r"\quad"):
            cuts.append(start)
    return [tex[a:b].strip() for a, b in zip(cuts, [*cuts[1:], len(tex)], strict=True)]


def broken(tex: str, first: float, rest: float) -> list[str]:
    """``tex`` in lines of whole terms, the first at most ``first`` letters wide and the others ``rest``; a product
    ``X (sum)`` too wide for its line breaks inside its parentheses, any other term too wide stands alone."""
    lines: list[str] = []
    for term in terms(tex):
        if lines and width(f"{lines[-1]} {term}") <= (first if len(lines) == 1 else rest):
            lines[-1] = f"{lines[-1]} {term}"
        else:
            lines.extend(_opened(term, first if not lines else rest, rest))
    return lines


def _opened(term: str, first: float, rest: float) -> list[str]:
    """``term`` if it fits ``first``; else a product ``X \\left(…\\right)`` as lines that each close their
    parenthesis with ``\\right.`` and open the next with ``\\left.``."""
    match = _PRODUCT.fullmatch(term)
    if width(term) <= first or match is None or not _balanced(match[2]):
        return [term]
    prefix, inner = match[1], match[2]
    lines = broken(inner, first - width(prefix) - 1, rest - 1)
    opens = [rf"{prefix} \left(", *[r"\left. {}"] * (len(lines) - 1)]
    closes = [r" \right."] * (len(lines) - 1) + [r"\right)"]
    return [f"{a}{line}{b}" for a, line, b in zip(opens, lines, closes, strict=True)]


def _balanced(tex: str) -> bool:
    """Whether every bracket ``tex`` opens closes within it, in order."""
    depth = 0
    for token in _TOKEN.findall(tex):
        depth += (token in _OPEN) - (token in _CLOSE)
        if depth < 0:
            return False
    return depth == 0


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


def structure_key(c: Config) -> tuple[object, ...]:
    """What decides a config's formulas: its model family, structural options, task head and loss (the number
    of labels and choices stay symbols, so they may differ)."""
    return (c.model, tuple(sorted(c.structure().items())), c.task.head, c.task.problem)


def by_structure(reports: Sequence[Report]) -> list[list[Report]]:
    """``reports`` grouped by :func:`structure_key`, groups in order of first appearance: each shares formulas."""
    groups: dict[tuple[object, ...], list[Report]] = {}
    for r in reports:
        groups.setdefault(structure_key(r.config), []).append(r)
    return list(groups.values())


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
    line_width: float | None = WIDTH,
) -> str:
    """One ``align`` block: the total, its value at each named config, the per-layer sum factored by
    :func:`factored`, and every component. ``general`` keeps E and I instead of the family's conventions.
    A sum wider than ``line_width`` letters (see :func:`width`; None: never) breaks before a + or −, its
    later lines indented by a quad and the equation numbered on its last.
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
    return f"\\begin{{align}}\n{_rows(lines, line_width)}\n\\end{{align}}\n"


def _rows(lines: Sequence[tuple[str, str]], line_width: float | None) -> str:
    """The rows of an ``align`` block, each right-hand side broken to fit ``line_width`` after the widest left side."""
    room = None if line_width is None else line_width - max(width(lhs) for lhs, _ in lines) - 2
    rows = []
    for lhs, rhs in lines:
        parts = [rhs] if room is None else broken(rhs, room, room - 2)
        parts = [parts[0], *(part.removeprefix(r"\quad ") for part in parts[1:])]
        starts = [f"{lhs} &= ", *[r"&\quad {} "] * (len(parts) - 1)]
        ends = [r" \notag"] * (len(parts) - 1) + [""]
        rows.extend(start + part + end for start, part, end in zip(starts, parts, ends, strict=True))
    return " \\\\\n".join(rows)


def equations(
    breakdowns: Mapping[str, Breakdown],
    notation: Notation = NOTATIONS["seed"],
    *,
    general: bool = False,
    at: Sequence[tuple[str, Mapping[sympy.Symbol, int]]] = (),
    note: str = "",
    line_width: float | None = WIDTH,
) -> str:
    """An :func:`align` block per breakdown, each after a comment naming it (and ``note``)."""
    blocks = []
    for key, b in breakdowns.items():
        given = ", ".join(f"{k} = {text(v)}" for k, v in b.substitutions.items())
        conventions = "" if general or not given else "; " + given
        comment = f"% {key} ({b.unit}){conventions}{'; ' + note if note else ''}".replace("\n", " ")
        blocks.append(f"{comment}\n{align(b, notation, general=general, at=at, line_width=line_width)}")
    return "\n".join(blocks)


def grouped_equations(
    reports: Sequence[Report],
    quantities: Iterable[str],
    notation: Notation = NOTATIONS["seed"],
    *,
    general: bool = False,
    valued: bool = True,
    line_width: float | None = WIDTH,
) -> str:
    """:func:`equations` for each group of reports that share formulas (:func:`by_structure`), valued at each
    of its configs when ``valued``; several groups each follow a paragraph naming its configs and family."""
    groups = by_structure(reports)
    out = []
    for group in groups:
        first = group[0]
        chosen = {key: first.breakdowns[key] for key in dict.fromkeys(quantities)}
        at = [(r.config.name, r.values) for r in group] if valued else []
        names = ", ".join(r.config.name for r in group)
        heading = rf"\paragraph{{{escape(names)} ({escape(first.config.model)})}}" + "\n" if len(groups) > 1 else ""
        out.append(
            heading + equations(chosen, notation, general=general, at=at, note=first.setup, line_width=line_width)
        )
    return "\n".join(out)


def document(*snippets: str) -> str:
    """A complete pdflatex document around ``snippets`` (amsmath for align, booktabs and graphicx for
    tables)."""
    preamble = "\\documentclass{article}\n\\usepackage{amsmath}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
    return preamble + "\\begin{document}\n" + "\n".join(snippets) + "\\end{document}\n"
