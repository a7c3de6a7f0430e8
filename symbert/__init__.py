"""symbert: BERT as a symbolic computation graph, and exact closed forms derived from it."""

from symbert import symbols
from symbert.analysis.activations import activations
from symbert.analysis.breakdown import Breakdown
from symbert.analysis.flops import flops
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import Report, report
from symbert.api import trace
from symbert.configs import Config, ConfigError, from_file, preset, preset_names, resolve, with_overrides
from symbert.ir import Graph
from symbert.models import ModelSpec, register

__all__ = [
    "Breakdown",
    "Config",
    "ConfigError",
    "Graph",
    "MemoryOptions",
    "ModelSpec",
    "Report",
    "activations",
    "flops",
    "from_file",
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
