"""Closed forms as JavaScript that evaluates them exactly: BigInt arithmetic throughout.

sympy's JavaScript printer, with integers written as BigInt literals (``12n``) and the few functions
symbert's formulas hold written as calls to helpers the page defines (:data:`HELPERS`): ⌈a/b⌉ and
⌊a/b⌋ as integer divisions, the bracket [x < k] as a comparison, ``pad512`` as the allocator's
rounding, ``Min`` and ``Max``. A quotient is printed as one exact division of a numerator with integer
coefficients by its denominator (:func:`sympy.together`), which ``div`` checks is exact, so no value
is ever truncated or rounded through a float.
"""

from __future__ import annotations

import sympy
from sympy.printing.jscode import JavascriptCodePrinter

from symbert.symbols import ROUND

#: The helpers the printed code calls; the page and the tests define them once, from this text.
HELPERS = f"""\
function div(a, b) {{ if (a % b !== 0n) throw new Error("inexact division"); return a / b; }}
function fdiv(a, b) {{ const q = a / b; return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q; }}
function cdiv(a, b) {{ return -fdiv(-a, b); }}
function pad512(x) {{ return ((-x % {ROUND}n) + {ROUND}n) % {ROUND}n; }}
function min(...xs) {{ return xs.reduce((a, b) => (b < a ? b : a)); }}
function max(...xs) {{ return xs.reduce((a, b) => (b > a ? b : a)); }}
"""


class BigIntPrinter(JavascriptCodePrinter):
    """JavaScript over BigInt for symbert's integer-valued formulas."""

    def _print_Integer(self, expr: sympy.Integer) -> str:
        return f"{int(expr)}n"

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return f"div({int(expr.p)}n, {int(expr.q)}n)"

    def _print_Pow(self, expr: sympy.Pow) -> str:
        base, exp = expr.as_base_exp()
        if not (exp.is_Integer and exp > 0):
            raise ValueError(f"cannot compile the power {expr} to BigInt JavaScript")
        return f"{self.parenthesize(base, 1000)}**{int(exp)}n"

    def _quotient(self, name: str, expr: sympy.Expr) -> str:
        num, den = sympy.fraction(sympy.together(expr))
        return f"{name}({self._print(sympy.expand(num))}, {self._print(den)})"

    def _print_ceiling(self, expr: sympy.ceiling) -> str:
        return self._quotient("cdiv", expr.args[0])

    def _print_floor(self, expr: sympy.floor) -> str:
        return self._quotient("fdiv", expr.args[0])

    def _print_below(self, expr: sympy.Expr) -> str:
        x, k = expr.args
        return f"({self._print(x)} < {self._print(k)} ? 1n : 0n)"

    def _print_pad512(self, expr: sympy.Expr) -> str:
        return f"pad512({compile_expr(expr.args[0])})"

    def _print_Min(self, expr: sympy.Min) -> str:
        return f"min({', '.join(compile_expr(a) for a in expr.args)})"

    def _print_Max(self, expr: sympy.Max) -> str:
        return f"max({', '.join(compile_expr(a) for a in expr.args)})"


_PRINTER = BigIntPrinter()


def compile_expr(expr: sympy.Expr) -> str:
    """A JavaScript expression of BigInt value ``expr``'s; its symbols are variables of their names."""
    expr = sympy.sympify(expr)
    num, den = sympy.fraction(sympy.together(expr))
    if den == 1:
        return _PRINTER.doprint(sympy.expand(num))
    return f"div({_PRINTER.doprint(sympy.expand(num))}, {_PRINTER.doprint(den)})"


def function(expr: sympy.Expr, args: tuple[sympy.Symbol, ...]) -> str:
    """``(a, b) => …``: ``expr`` as an arrow function of ``args`` (BigInt values)."""
    return f"({', '.join(a.name for a in args)}) => {compile_expr(expr)}"
