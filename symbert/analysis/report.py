"""Every quantity for one config at one shape: the data behind ``symbert report`` and its JSON."""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from symbert.analysis.activations import activations, attention_kernels
from symbert.analysis.breakdown import Breakdown
from symbert.analysis.flops import flops
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.api import per_gpu
from symbert.configs import Config, ConfigError, check_size
from symbert.display import Displayed
from symbert.formula import amount, human
from symbert.symbols import B, seq_len
from symbert.versions import modelled


@dataclass(frozen=True)
class Report(Displayed):
    """Breakdowns of every quantity, and the values that evaluate them."""

    config: Config
    batch: int
    seq_len: int
    options: MemoryOptions
    breakdowns: dict[str, Breakdown]
    kernels: tuple[str, ...] = ()
    """The SDPA kernels attention runs (empty under eager attention)."""

    @property
    def setup(self) -> str:
        """The memory options, with the SDPA kernel that runs."""
        kernels = f" ({', '.join(self.kernels)} kernel)" if self.kernels else ""
        setup = self.options.describe().replace(" attention,", f" attention{kernels},", 1)
        return f"{setup}; {modelled()}"

    @property
    def values(self) -> dict[sympy.Symbol, int]:
        return {**self.config.symbols(), B: self.batch, seq_len: self.seq_len, **self.options.layout.values()}

    def value(self, quantity: str) -> int:
        b = self.breakdowns[quantity]
        return b.evaluate(b.total, self.values)

    def __repr__(self) -> str:
        lines = [f"<Report {self.config.name}, B={self.batch}, seq_len={self.seq_len}; {self.options.describe()}"]
        for key, b in self.breakdowns.items():
            lines.append(f"  {key} = {human(b.substituted(b.total))} = {amount(self.value(key), b.unit)}")
        conventions = next(iter(self.breakdowns.values())).substitutions
        if conventions:
            lines.append("  with " + ", ".join(f"{k} = {human(v)}" for k, v in conventions.items()))
        return "\n".join(lines) + ">"


def report(config: Config, batch: int, length: int, options: MemoryOptions | None = None) -> Report:
    """Parameters, activation bytes and FLOPs of ``config`` at batch ``batch`` and sequence ``length``;
    under a layout spread over several GPUs, per GPU on the most loaded one, ``batch`` being the
    micro-batch."""
    options = (options or MemoryOptions()).for_model(config.spec)
    check_size("batch", batch)
    check_size("seq_len", length)
    if config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")
    graph, values = per_gpu(config, options.layout, length)
    f = flops(graph, options, values)
    breakdowns = {
        "params": params(graph),
        "activation_bytes": activations(graph, options, values),
        "flops_forward": f["forward"],
        "flops_backward": f["backward"],
        "non_matmul_forward": f["non_matmul_forward"],
    }
    return Report(config, batch, length, options, breakdowns, attention_kernels(graph, options, values))
