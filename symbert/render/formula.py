"""Formulas as text: a machine form (sympy syntax) and a human form, highest degree first."""

from __future__ import annotations

import re

import sympy

ORDER = "grlex"
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def text(expr: sympy.Expr) -> str:
    """Sympy syntax, terms ordered by total degree: stable, and parseable back by sympy."""
    return sympy.sstr(expr, order=ORDER)


def human(expr: sympy.Expr) -> str:
    """``12·H²·L + 13·H·L`` style, for terminals."""
    s = re.sub(r"\*\*(\d+)", lambda m: m.group(1).translate(_SUPERSCRIPT), text(expr))
    return s.replace("*", "·")


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
