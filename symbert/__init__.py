"""symbert: BERT as a symbolic computation graph, and exact closed forms derived from it.

The names below are the Python API: one function per command (``symbert.fit("bert-base", seq_len=512,
gpu="h100")``), with the command's option names and defaults, and the classes and helpers beside them. The
modules beneath can move; these names stay. They are imported on first use, so that ``import symbert`` (and
every command) starts fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "symbols": "symbert.symbols",
    "activations": "symbert.analysis.activations",
    "Breakdown": "symbert.analysis.breakdown",
    "Comparison": "symbert.analysis.compare",
    "compare": "symbert.public",
    "explain": "symbert.public",
    "fit": "symbert.public",
    "params": "symbert.public",
    "plan": "symbert.public",
    "report": "symbert.public",
    "sweep": "symbert.public",
    "timeline": "symbert.public",
    "validate": "symbert.public",
    "flops": "symbert.analysis.flops",
    "MemoryOptions": "symbert.analysis.policy",
    "Report": "symbert.analysis.report",
    "report_json": "symbert.render.reports",
    "Layout": "symbert.parallel",
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


class _Package(types.ModuleType):
    """The package, whose API names stay the API's: importing the subpackage ``symbert.validate`` (which
    Python binds on its parent) leaves ``symbert.validate`` the function; the subpackage is imported by name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name, value.__name__) != value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
    "symbert.training.planner.Plan": {"markdown": "plan_markdown"},
    "symbert.training.timeline.Timeline": {"markdown": "timeline_markdown"},
}.items():
    _display.register(_cls, **{fmt: f"{_NOTEBOOK}:{function}" for fmt, function in _formats.items()})
_display.formulas_in_ipython(f"{_NOTEBOOK}:formula_latex")
del _cls, _formats
