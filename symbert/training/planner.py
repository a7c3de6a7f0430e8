"""Plan a training job over N GPUs: the layouts whose training step fits each GPU, best first.

The search covers tensor parallelism t dividing the heads A, pipeline stages p dividing the layers L,
data parallelism d = N/(t·p), every ZeRO stage the engine has (:mod:`symbert.training.zero`) and
recomputation none, selective or full. A pipeline runs m = p micro-batches, the fewest that keep
every stage busy under 1F1B. For each layout family (t, p, d, ZeRO) the planner keeps the least
recomputation that fits, with its largest micro-batch (or checks the given one), solved from the
peak's closed form (:func:`symbert.training.fit.largest`). Layouts that fit are ranked by least
recomputation, then fewest communication points per step, then the largest micro-batch; every family
that does not fit gets one line saying why.

The replay depends on a layout only through which kinds of parallelism it uses (the degrees are the
symbols t, p, d in its formulas), so one replay serves every layout of a kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import sympy

from symbert.analysis.policy import RECOMPUTE
from symbert.api import per_gpu, spread_of, trace
from symbert.configs import MAX_SIZE, Config, ConfigError
from symbert.display import Displayed
from symbert.formula import quantity
from symbert.ir import Graph
from symbert.ops import OPS
from symbert.parallel import Layout
from symbert.symbols import A, B, L, seq_len
from symbert.training.fit import largest
from symbert.training.states import Training, check_unused, model_states
from symbert.training.step import Point, StepMemory, step_memory
from symbert.training.zero import ZeroPlan


@dataclass(frozen=True)
class Option:
    """One layout that fits: its recomputation, micro-batch, peak and communication points per step."""

    layout: Layout
    recompute: str
    batch: int
    peak: Point
    communication: int

    @property
    def rank(self) -> tuple:
        return (RECOMPUTE.index(self.recompute), self.communication, -self.batch, _order(self.layout))


@dataclass(frozen=True)
class Rejected:
    """A layout family that does not fit, and why, in one line."""

    layout: Layout
    reason: str


@dataclass(frozen=True)
class Plan(Displayed):
    """The layouts of ``gpus`` GPUs of ``budget`` bytes each that fit at ``seq_len`` (and micro-batch ``batch``,
    when given), best first, and the layout families that do not, each with why."""

    config: Config
    training: Training
    gpus: int
    budget: int
    seq_len: int
    batch: int | None
    fits: tuple[Option, ...]
    rejected: tuple[Rejected, ...]

    def summary(self) -> str:
        """One line: how many layouts fit, and the best."""
        shape = f"seq_len {self.seq_len}" + (f", micro-batch {self.batch}" if self.batch else "")
        head = f"{self.gpus} GPUs of {quantity(self.budget, 'bytes')} at {shape}"
        if not self.fits:
            return f"{head}: no layout fits"
        best = self.fits[0]
        return (
            f"{head}: {len(self.fits)} layout{'s' * (len(self.fits) > 1)} fit; best {family(best.layout)}, "
            f"recompute {best.recompute}, micro-batch {best.batch}, peak {quantity(best.peak.total, 'bytes')}"
        )

    def __repr__(self) -> str:
        rejected = f"; {len(self.rejected)} do not" if self.rejected else ""
        return f"<Plan {self.config.name}: {self.summary()}{rejected}>"


def _order(layout: Layout) -> tuple[int, int, int, int]:
    return layout.tensor, layout.pipeline, layout.data, layout.zero


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def layouts(config: Config, gpus: int, stages: tuple[int, ...], sequence: bool) -> list[Layout]:
    """Every (t, p, d, ZeRO) with t | A, p | L and t·p·d = N; ZeRO stages only where d > 1."""
    sizes = config.symbols()
    out = []
    for t in divisors(int(sizes[A])):
        for p in divisors(int(sizes[L])):
            if gpus % (t * p):
                continue
            d = gpus // (t * p)
            for zero in stages if d > 1 else (0,):
                out.append(Layout(t, sequence and t > 1, p, p, 1, d, zero))
    return out


def communication(graph_collectives: int, layout: Layout, layers: int, zero: ZeroPlan) -> int:
    """Communication points per step on one GPU: each tensor-parallel collective of the per-GPU graph
    forward and backward; under a pipeline one send and one receive per micro-batch; over d > 1 GPUs
    the gradient all-reduce, or with ZeRO the gradients' reduce-scatter (one per layer and one for the
    root where gradients are sharded) and the weights' all-gather (once after the update, or per layer
    and for the root where weights are sharded: forward and backward, or once when they stay gathered
    in between)."""
    points = 2 * graph_collectives
    if layout.pipeline > 1:
        points += 2 * layout.microbatches
    units = layers // layout.pipeline + 1
    if not zero.spread:
        return points
    if not zero.sharded("optimizer"):
        return points + 1
    points += units if zero.sharded("gradients") else 1
    if not zero.gathers:
        return points + 1
    return points + (units if zero.keeps_gathered else 2 * units)


def collectives(graph: Graph, values: Mapping[sympy.Symbol, int]) -> int:
    """Collectives in a per-GPU graph, each counted as often as its op runs at ``values``."""
    return sum(int(sympy.sympify(graph.multiplicity(n)).subs(values)) for n in graph.nodes if OPS[n.op].communication)


class Planner:
    """The search, with one replay per kind of layout and recomputation."""

    def __init__(self, config: Config, training: Training, budget: int, length: int, batch: int | None) -> None:
        self.config, self.training, self.budget, self.length, self.batch = config, training, budget, length, batch
        self._replays: dict[tuple, StepMemory] = {}

    def setup(self, layout: Layout, recompute: str) -> Training:
        memory = replace(self.training.memory, layout=layout, recompute=recompute)
        return replace(self.training, memory=memory)

    def replay(self, layout: Layout, training: Training) -> StepMemory:
        layers = int(self.config.symbols()[L]) // layout.pipeline
        spread = layout.data > 1
        key = (spread_of(layout), spread, layout.zero if spread else 0, training.memory.recompute, min(layers, 3))
        if key not in self._replays:
            graph = trace(self.config, layout=layout)
            self._replays[key] = step_memory(graph, training, {**self.config.symbols(), **layout.values()})
        return self._replays[key]

    def values(self, layout: Layout) -> dict[sympy.Symbol, int]:
        return {**self.config.symbols(), seq_len: self.length, **layout.values()}

    def best(self, layout: Layout) -> Option | str:
        """The least recomputation that fits, with its largest micro-batch; else why nothing fits."""
        layers = int(self.config.symbols()[L])
        try:
            graph, _ = per_gpu(self.config, layout, self.length)
            check_unused(graph, layout)
        except ConfigError as exc:  # the degrees do not split the model, it cannot be split so, or DDP fails on it
            return str(exc)
        values = self.values(layout)
        zero = self.setup(layout, "none").sharding
        points = communication(collectives(graph, values), layout, layers, zero)
        for recompute in RECOMPUTE:
            training = self.setup(layout, recompute)
            memory = self.replay(layout, training)
            if self.batch is None:
                n = min(largest(memory.polynomials(values, (B,)), B, self.budget) or 0, MAX_SIZE)
            else:
                n = self.batch if memory.peak({**values, B: self.batch}).total <= self.budget else 0
            if n >= 1:
                return Option(layout, recompute, n, memory.peak({**values, B: n}), points)
        return self.why(layout)

    def why(self, layout: Layout) -> str:
        """Why a family fits with no recomputation: its model states, or its peak with full recompute."""
        training = self.setup(layout, RECOMPUTE[-1])
        memory = self.replay(layout, training)
        values = self.values(layout)
        graph = trace(self.config, layout=layout)
        states = model_states(graph, training)
        held = sum(int(sympy.sympify(states[k]).subs(values)) for k in ("weights", "gradients", "optimizer"))
        over = f"> {quantity(self.budget, 'bytes')}"
        if held > self.budget:
            return f"model states alone need {quantity(held, 'bytes')} {over}"
        batch = self.batch or 1
        peak = memory.peak({**values, B: batch})
        return (
            f"at micro-batch {batch} with full recompute the peak is {quantity(peak.total, 'bytes')} {over}"
            f" (model states {quantity(held, 'bytes')}, at {peak.where})"
        )


def plan(config: Config, training: Training, gpus: int, budget: int, length: int, batch: int | None = None) -> Plan:
    """Search the layouts of ``gpus`` GPUs for those whose step fits ``budget`` bytes at seq_len ``length``."""
    if gpus < 1:
        raise ConfigError(f"--gpus must be a positive integer, got {gpus}")
    if config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")
    stages = tuple(training.sharding.engine.stages)
    planner = Planner(config, training, budget, length, batch)
    fits, rejected = [], []
    for layout in layouts(config, gpus, stages, training.memory.layout.sequence):
        found = planner.best(layout)
        if isinstance(found, Option):
            fits.append(found)
        else:
            rejected.append(Rejected(layout, found))
    fits.sort(key=lambda o: o.rank)
    return Plan(config, training, gpus, budget, length, batch, tuple(fits), tuple(rejected))


def family(layout: Layout) -> str:
    sequence = " (sequence parallel)" if layout.sequence else ""
    return f"t={layout.tensor}{sequence}, p={layout.pipeline}, d={layout.data}, ZeRO {layout.zero}"


def plan_json(result: Plan) -> dict[str, object]:
    """The ``symbert fit --gpus --json`` document."""

    def layout_json(layout: Layout) -> Mapping[str, object]:
        return {
            "tensor": layout.tensor,
            "sequence": layout.sequence,
            "pipeline": layout.pipeline,
            "microbatches": layout.microbatches,
            "data": layout.data,
            "zero": layout.zero,
        }

    m = result.training.memory
    return {
        "config": result.config.as_dict(),
        "gpus": result.gpus,
        "gpu_memory": result.budget,
        "seq_len": result.seq_len,
        "batch": result.batch,
        "policy": m.policy,
        "precision": result.training.precision,
        "optimizer": result.training.optimizer,
        "engine": result.training.sharding.engine.name,
        "fits": [
            {
                "layout": layout_json(o.layout),
                "recompute": o.recompute,
                "micro_batch": o.batch,
                "peak": o.peak.total,
                "where": o.peak.where,
                "components": dict(o.peak.bytes),
                "communication_points": o.communication,
            }
            for o in result.fits
        ],
        "rejected": [{"layout": layout_json(r.layout), "reason": r.reason} for r in result.rejected],
    }
