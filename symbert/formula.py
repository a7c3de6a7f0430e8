"""Formulas as text: a machine form (sympy syntax) and a human form, highest degree first."""

from __future__ import annotations

import re
from collections.abc import Mapping

import sympy
from sympy.parsing.sympy_parser import auto_number, parse_expr

from symbert.symbols import BY_NAME, DEGREES, below, bracket, pad512

ORDER = "grlex"
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def text(expr: sympy.Expr) -> str:
    """Sympy syntax, terms ordered by total degree: stable, and parseable back by sympy."""
    return sympy.sstr(expr, order=ORDER)


#: What a formula may contain besides symbols: integers, + - * / ** ( ) and commas, and these names.
FUNCTIONS: dict[str, object] = {
    "sqrt": sympy.sqrt,
    "oo": sympy.oo,
    "Rational": sympy.Rational,
    "ceiling": sympy.ceiling,
    "floor": sympy.floor,
    "Min": sympy.Min,
    "below": below,
}
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\*\*|[-+*/(),]))")


def parse_formula(formula: str, symbols: Mapping[str, sympy.Symbol] | None = None) -> sympy.Expr:
    """A formula as symbert's JSON, CSV and :func:`text` write it, read back into the same sympy expression.

    Names are symbert's symbols (``I`` is the intermediate size and ``E`` the embedding size, not the
    imaginary unit and Euler's number, as a plain ``sympy.sympify`` would read them), the names in
    ``symbols`` (a user-defined model's), the parallel degrees ``t, p, d, m, v``, ``sqrt``, ``oo``,
    ``Rational``, ``ceiling`` (a size rounded up to a multiple, or a shard of one), ``floor`` (half a
    window), ``below`` (the bracket [x < k], what PyTorch keeps differently at batch 1 or a short
    sequence), ``Min`` (the
    micro-batches a pipeline stage holds) and ``pad512`` (the CUDA allocator's rounding in torch-cuda
    training formulas). The text is checked token by token before sympy sees it: only integers, those names,
    ``+ - * / ** ( ) ,`` and spaces; anything else (an attribute, a string, an unknown name) raises
    ValueError, and nothing is evaluated as Python.
    """
    if not isinstance(formula, str):
        raise ValueError(f"a formula is a string, got {type(formula).__name__}")


    degrees = {s.name: s for s in DEGREES}
    names: dict[str, object] = {**FUNCTIONS, "pad512": pad512, **BY_NAME, **degrees, **(symbols or {})}
    pos, depth = 0, 0
    stripped = formula.rstrip()
    if not stripped.strip():
        raise ValueError("an empty formula")
    while pos < len(stripped):
        match = _TOKEN.match(stripped, pos)
        if match is None:
            raise ValueError(f"unexpected {stripped[pos:].strip()[:20]!r} in formula {formula[:60]!r}")
        _, name, op = match.groups()
        if name is not None and name not in names:
            raise ValueError(f"unknown name {name!r} in formula {formula[:60]!r}")
        depth += (op == "(") - (op == ")")
        if depth < 0 or depth > 100:
            raise ValueError(f"unbalanced parentheses in formula {formula[:60]!r}")
        pos = match.end()
    try:
        expr = parse_expr(
            stripped,
            local_dict=names,
            global_dict={"__builtins__": {}, "Integer": sympy.Integer},
            transformations=(auto_number,),
        )
    except (SyntaxError, TypeError, ValueError, ArithmeticError) as exc:
        raise ValueError(f"cannot read formula {formula[:60]!r}: {exc}") from None
    if not isinstance(expr, sympy.Expr):
        raise ValueError(f"formula {formula[:60]!r} is not an expression")
    return expr


def human(expr: sympy.Expr) -> str:
    """``12·H²·L + 13·H·L`` style, for terminals; a bracket ``below(B, 2)`` as ``[B = 1]``."""
    expr = sympy.sympify(expr)
    expr = expr.xreplace({b: sympy.Symbol(f"[{bracket(b, human)}]") for b in expr.atoms(below)})
    s = re.sub(r"\*\*(\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), text(expr))
    return s.replace("*", "·")


def amount(value: int, unit: str) -> str:
    """The exact number, and beside it in human units where they differ: ``335,141,888 (335.14 M)``."""
    shown = quantity(value, unit)
    return f"{value:,}" if shown == f"{value:,}" else f"{value:,} ({shown})"


def quantity(value: int, unit: str) -> str:
    """A number in human units: 1.23 GiB for bytes, 12.3 GFLOP for FLOPs, 109.5 M otherwise."""
    if unit == "bytes":
        steps, base, names = 4, 1024, ("B", "KiB", "MiB", "GiB", "TiB")
    else:
        steps, base, names = 4, 1000, ("", "K", "M", "G", "T")
    i = 0
    while abs(value) >= base ** (i + 1) and i < steps:
        i += 1
    suffix = names[i] + ("FLOP" if unit == "FLOPs" else "")
    if i == 0:
        return f"{value:,}"
    # Rounded from the exact integer, never through a float: every digit shown is right.
    hundredths = (abs(value) * 100 * 2 + base**i) // (2 * base**i)
    sign = "-" if value < 0 else ""
    return f"{sign}{hundredths // 100}.{hundredths % 100:02d} {suffix}".rstrip()
