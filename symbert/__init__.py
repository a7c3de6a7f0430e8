"""symbert: BERT as a symbolic computation graph, and exact closed forms derived from it."""

from symbert import symbols
from symbert.analysis.breakdown import Breakdown
from symbert.analysis.params import params
from symbert.api import trace
from symbert.configs import Config, ConfigError, from_file, preset, preset_names, resolve, with_overrides
from symbert.ir import Graph

__all__ = [
    "Breakdown",
    "Config",
    "ConfigError",
    "Graph",
    "from_file",
    "params",
    "preset",
    "preset_names",
    "resolve",
    "symbols",
    "trace",
    "with_overrides",
]
