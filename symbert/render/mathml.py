"""Formulas as MathML, which browsers render natively: sympy's presentation printer, with symbert's
names kept whole (``seq_len``, not seq with a subscript), products written with ``·``, a bracket
``below(B, 2)`` as ``[B = 1]`` and the allocator's rounding as ``pad512(…)``. Terms are ordered as the
other renderers order them."""

from __future__ import annotations

import sympy
from sympy.printing.mathml import MathMLPresentationPrinter

from symbert.formula import ORDER


class Printer(MathMLPresentationPrinter):
    """MathML presentation markup for symbert's formulas."""

    def _element(self, tag: str, text: str) -> object:
        node = self.dom.createElement(tag)
        node.appendChild(self.dom.createTextNode(text))
        return node

    def _print_Symbol(self, sym: sympy.Symbol, style: str = "plain") -> object:
        return self._element("mi", sym.name)

    def _row(self, *children: object) -> object:
        row = self.dom.createElement("mrow")
        for child in children:
            row.appendChild(child)
        return row

    def _print_below(self, expr: sympy.Expr) -> object:
        x, k = expr.args
        relation = (self._print(x), self._element("mo", "="), self._element("mn", "1"))
        if k != 2:
            relation = (self._print(x), self._element("mo", "<"), self._print(k))
        return self._row(self._element("mo", "["), *relation, self._element("mo", "]"))

    def _print_pad512(self, expr: sympy.Expr) -> object:
        open_, close = self._element("mo", "("), self._element("mo", ")")
        return self._row(self._element("mi", "pad512"), open_, self._print(expr.args[0]), close)


def mathml(expr: sympy.Expr) -> str:
    """``expr`` as one ``<math>`` element."""
    printer = Printer({"order": ORDER})
    markup = printer.doprint(sympy.sympify(expr)).replace("&InvisibleTimes;", "·")
    return f'<math display="block">{markup}</math>'
