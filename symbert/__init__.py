"""symbert: BERT as a symbolic computation graph, and exact closed forms derived from it."""

from symbert import symbols
from symbert.analysis.activations import activations
from symbert.analysis.breakdown import Breakdown
from symbert.analysis.compare import Comparison, compare
from symbert.analysis.explain import explain
from symbert.analysis.flops import flops
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import Report, report
from symbert.api import trace
from symbert.configs import Config, ConfigError, from_file, preset, preset_names, resolve, with_overrides
from symbert.ir import Graph
from symbert.models import ModelSpec, register
from symbert.render.diagram import Diagram, diagram
from symbert.render.latex import Notation, equations, notation
from symbert.render.tables import Table, component_table

__all__ = [
    "Breakdown",
    "Comparison",
    "Config",
    "ConfigError",
    "Diagram",
    "Graph",
    "MemoryOptions",
    "ModelSpec",
    "Notation",
    "Report",
    "Table",
    "activations",
    "compare",
    "component_table",
    "diagram",
    "equations",
    "explain",
    "flops",
    "from_file",
    "notation",
    "params",
    "preset",
    "preset_names",
    "register",
    "report",
    "resolve",
    "symbols",
    "trace",
    "with_overrides",
]
