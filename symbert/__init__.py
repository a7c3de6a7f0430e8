"""symbert: BERT as a symbolic computation graph, and exact closed forms derived from it.

The names below are imported on first use, so that ``import symbert`` (and every command) starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "symbols": "symbert.symbols",
    "activations": "symbert.analysis.activations",
    "Breakdown": "symbert.analysis.breakdown",
    "Comparison": "symbert.analysis.compare",
    "compare": "symbert.analysis.compare",
    "explain": "symbert.analysis.explain",
    "flops": "symbert.analysis.flops",
    "params": "symbert.analysis.params",
    "MemoryOptions": "symbert.analysis.policy",
    "Report": "symbert.analysis.report",
    "report": "symbert.analysis.report",
    "trace": "symbert.api",
    "Config": "symbert.configs",
    "ConfigError": "symbert.configs",
    "from_file": "symbert.configs",
    "preset": "symbert.configs",
    "preset_names": "symbert.configs",
    "resolve": "symbert.configs",
    "with_overrides": "symbert.configs",
    "with_task": "symbert.configs",
    "Graph": "symbert.ir",
    "ModelSpec": "symbert.models",
    "register": "symbert.models",
    "Task": "symbert.models.heads",
    "Diagram": "symbert.render.diagram",
    "diagram": "symbert.render.diagram",
    "Notation": "symbert.render.latex",
    "equations": "symbert.render.latex",
    "notation": "symbert.render.latex",
    "Table": "symbert.render.tables",
    "parse_formula": "symbert.formula",
    "component_table": "symbert.render.tables",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'symbert' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if name == "symbols" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


# ---- Notebook displays ---------------------------------------------------------------------------------------------
# Registered here, at the top of the package, by name (as sympy's init_printing registers its printers): the classes
# below render/ display themselves through render/notebook.py without importing it, and nothing is imported until
# something is displayed (symbert.display).

from symbert import display as _display  # noqa: E402

_NOTEBOOK = "symbert.render.notebook"
for _cls, _formats in {
    "symbert.ir.Graph": {"html": "graph_html"},
    "symbert.analysis.breakdown.Breakdown": {"latex": "breakdown_latex"},
    "symbert.analysis.breakdown.Components": {"markdown": "components_markdown"},
    "symbert.analysis.report.Report": {"markdown": "report_markdown"},
    "symbert.analysis.compare.Comparison": {"markdown": "comparison_markdown"},
    "symbert.analysis.explain.Explanation": {"markdown": "explanation_markdown"},
    "symbert.configs.Config": {"markdown": "config_markdown"},
    "symbert.training.fit.Fit": {"markdown": "fit_markdown"},
}.items():
    _display.register(_cls, **{fmt: f"{_NOTEBOOK}:{function}" for fmt, function in _formats.items()})
_display.formulas_in_ipython(f"{_NOTEBOOK}:formula_latex")
del _cls, _formats
