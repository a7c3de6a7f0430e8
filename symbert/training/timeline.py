"""Memory over two training steps, phase by phase: the data behind ``symbert timeline``."""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from symbert.api import per_gpu
from symbert.configs import Config, ConfigError, check_size
from symbert.display import Displayed
from symbert.formula import quantity
from symbert.symbols import B, seq_len
from symbert.training.allocator import Overhead, PhasePeak
from symbert.training.memviz import snapshot
from symbert.training.oom import Cap, Run, Simulation, applies
from symbert.training.states import Training
from symbert.training.step import Phase, Point, phases, step_memory

#: The model states a timeline shows first.
STATES = ("weights", "gradients", "optimizer")


@dataclass(frozen=True)
class Timeline(Displayed):
    """Two training steps of ``config`` at one shape: the model states' formulas, each phase's peak and end,
    the step's peak and its formula, and, where the caching allocator is simulated, each phase's allocated and
    reserved peaks by name (``"1 forward"``), what the allocator adds at its allocated peak (``overhead``) and its
    snapshot (``torch.cuda.memory._snapshot()``'s format). ``budget``: the GPU memory to check the peak against;
    where the allocator is simulated, the steps run again under ``cap`` (as ``fit`` runs them), and that run
    (``capped``) says whether they fit."""

    config: Config
    training: Training
    batch: int
    seq_len: int
    sizes: dict[sympy.Symbol, int]
    states: dict[str, sympy.Expr]
    phases: list[Phase]
    formula: sympy.Expr
    simulated: dict[str, PhasePeak]
    budget: int | None = None
    overhead: Overhead | None = None
    snapshot: dict[str, object] | None = field(default=None, repr=False, compare=False)
    cap: Cap | None = None
    capped: Run | None = None

    @property
    def values(self) -> dict[sympy.Symbol, int]:
        return {**self.sizes, B: self.batch, seq_len: self.seq_len}

    @property
    def peak(self) -> Point:
        return max((p.peak for p in self.phases), key=lambda p: p.total)

    @property
    def fits(self) -> bool | None:
        """Whether the steps run under the cap (the simulation's run), else whether the peak is within the budget."""
        if self.capped is not None:
            return self.capped.runs
        return None if self.budget is None else self.peak.total <= self.budget

    def summary(self) -> str:
        """One line: the shape, the peak and where, and whether it fits the budget."""
        peak = self.peak
        if self.cap is not None and self.capped is not None:
            ran = "runs" if self.capped.runs else "runs out of memory"
            verdict = f"; {ran} under {quantity(self.cap.bytes, 'bytes')}"
        else:
            budget = "" if self.budget is None else quantity(self.budget, "bytes")
            verdict = budget and f"; {'fits in' if self.fits else 'over'} {budget}"
        return f"B={self.batch}, seq_len={self.seq_len}: peak {quantity(peak.total, 'bytes')} at {peak.where}{verdict}"

    def __repr__(self) -> str:
        training = f"{self.training.optimizer}, {self.training.precision} precision"
        return f"<Timeline {self.config.name}, {training}, {self.summary()}>"


def check_shape(config: Config, batch: int, length: int) -> None:
    """A batch and seq_len symbert accepts and the model has positions for; else a ConfigError."""
    check_size("batch", batch)
    check_size("seq_len", length)
    if config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")


def timeline(config: Config, training: Training, batch: int, length: int, budget: int | None = None,
             cap: Cap | None = None) -> Timeline:
    """The two steps of ``training`` at ``batch`` and ``length``, on the most loaded GPU of its layout; where the
    allocator is simulated, run again under ``cap``."""
    check_shape(config, batch, length)
    graph, sizes = per_gpu(config, training.memory.layout, length)
    values = {**sizes, B: batch, seq_len: length}
    # Three runs of each layer stand for all L (the others added in closed form), so a large L costs
    # nothing; the phases and the peak are those of the full replay (tests/test_robust.py).
    memory = step_memory(graph, training, sizes)
    steps = phases(memory.timeline(values))
    states = {k: memory.states[k] for k in STATES}
    formula = memory.formula(values)
    if not applies(config, training):
        return Timeline(config, training, batch, length, sizes, states, steps, formula, {}, budget)
    sim = Simulation(config, training, length)
    allocator, run = sim.replay(batch, itemize=True, record=True)
    simulated = {p.name: p for p in run.phases}
    capped = sim.capped(run, cap.bytes) if cap is not None else None
    return Timeline(config, training, batch, length, sizes, states, steps, formula, simulated, budget,
                    allocator.at_peak, snapshot(allocator, sim.causes), cap, capped)
