"""Notebook displays, registered from the top of the package.

A result's plain ``repr`` lives with its class. Its rich displays (HTML, Markdown, LaTeX) are written by
:mod:`symbert.render.notebook`, which a class below ``render/`` may not import: the floors import only
downward. So such a class inherits :class:`Displayed`, whose ``_repr_*_`` methods look the class up in a
table that ``symbert/__init__.py`` fills with the display functions' names, as IPython's
``for_type_by_name`` defers a printer (and sympy's ``init_printing`` registers its own): a function's
module is imported on the first display, so ``import symbert`` stays fast. A format nothing is registered
for gives None, which a notebook takes as "not available".

:func:`formulas_in_ipython` does the same for sympy's expressions in a running IPython, so that a formula
holding symbert's symbols (a Breakdown's ``total``, :func:`~symbert.formula.parse_formula`'s result) shows
in the notation the Breakdowns show.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: The formats a class can register, as IPython names the methods (``_repr_markdown_``).
FORMATS = ("html", "markdown", "latex")
#: At most this many rows in a plain repr; the rest are counted.
ROWS = 12

#: (class as ``module.Name``, format) → its display function as ``module:function``.
_DISPLAYS: dict[tuple[str, str], str] = {}


def register(cls: str, **formats: str) -> None:
    """Display instances of ``cls`` (``module.Name``) in each format by the function named
    (``module:function``, called with the instance, returning the text)."""
    for fmt, function in formats.items():
        if fmt not in FORMATS or ":" not in function:
            raise ValueError(f"a display is one of {', '.join(FORMATS)} given as module:function, not {fmt}={function}")
        _DISPLAYS[cls, fmt] = function


def _function(name: str) -> Callable[[object], str | None]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def display(obj: object, fmt: str) -> str | None:
    """``obj`` in format ``fmt`` by the function registered for its class (or the nearest base that has
    one), or None."""
    for cls in type(obj).__mro__:
        function = _DISPLAYS.get((f"{cls.__module__}.{cls.__qualname__}", fmt))
        if function is not None:
            return _function(function)(obj)
    return None


class Displayed:
    """A result that displays itself in a notebook through the functions registered for its class."""

    __slots__ = ()

    def _repr_html_(self) -> str | None:
        return display(self, "html")

    def _repr_markdown_(self) -> str | None:
        return display(self, "markdown")

    def _repr_latex_(self) -> str | None:
        return display(self, "latex")


def formulas_in_ipython(function: str) -> None:
    """In a running IPython (a notebook's kernel), show sympy expressions as LaTeX by ``function``
    (``module:function``, called with the expression). It is registered by sympy's class name, so
    nothing is imported until a formula is shown; outside IPython this does nothing."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return
    formatter = shell.display_formatter.formatters["text/latex"]
    formatter.for_type_by_name("sympy.core.basic", "Basic", lambda expr: _function(function)(expr))
