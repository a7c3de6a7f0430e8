"""Will it run out of memory? The replay's event stream through the caching allocator, under a cap.

:func:`simulate` runs two training steps of one shape through :class:`symbert.training.allocator.Allocator`:
the per-phase peaks of requested, allocated and reserved bytes, or the request that failed under the cap.
:func:`largest` answers ``fit`` with it: the closed form (:func:`symbert.training.fit.fit`, which bounds
``max_memory_allocated``) gives the starting point, the simulation decides, by bisection between a value that
runs and one that fails. The cap is what the caching allocator may reserve: ``set_per_process_memory_fraction``'s
share of the card, or the card's memory less the CUDA context (:class:`Cap`).

The order of the replay's requests does not depend on the sizes, so one replay of the graph serves every value
of the unknown (:func:`symbert.training.stream.at`); each value then costs one simulation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sympy

from symbert.api import per_gpu
from symbert.configs import MAX_SIZE, ConfigError
from symbert.configs import Config as Model
from symbert.gpus import CUDA_CONTEXT, CUDA_CONTEXT_SOURCE, gpu
from symbert.symbols import B, seq_len
from symbert.training.allocator import AddressSpace, Allocator, Config, OutOfMemory, PhasePeak
from symbert.training.fit import Fit, fit_json, step_of
from symbert.training.fit import fit as closed_form
from symbert.training.states import Training
from symbert.training.step import StepMemory
from symbert.training.stream import Cause, Request, at, described

#: The simulation's virtual address space: 2**100 bytes, more than any cap symbert reads (2**80), so that only
#: the cap makes an allocation fail.
MAX_BITS = 100


@dataclass(frozen=True)
class Cap:
    """What the caching allocator may reserve: ``card`` less ``context``, the CUDA context (0 where
    ``--gpu-memory`` gives the cap itself, as ``set_per_process_memory_fraction`` does). ``source`` says where
    the context's figure comes from."""

    card: int
    context: int = 0
    source: str = ""

    @property
    def bytes(self) -> int:
        return self.card - self.context


def cap_of(gpu_memory: int | None, card: str | None, context: int | None = None) -> Cap | None:
    """The cap: ``gpu_memory`` as it is; else the memory of GPU ``card`` less ``context`` (None: the default,
    :data:`symbert.gpus.CUDA_CONTEXT`); None without either. A context that leaves nothing is a ConfigError."""
    if gpu_memory is not None:
        if context is not None:
            raise ConfigError("--cuda-context applies to --gpu's memory; --gpu-memory is the cap itself")
        return Cap(gpu_memory, 0, "--gpu-memory")
    if card is None:
        return None
    memory = gpu(card).memory
    cap = Cap(memory, CUDA_CONTEXT, CUDA_CONTEXT_SOURCE) if context is None else Cap(memory, context, "--cuda-context")
    if cap.bytes <= 0:
        raise ConfigError(f"the CUDA context ({cap.context} bytes) leaves nothing of {card}'s {memory} bytes")
    return cap


@dataclass(frozen=True)
class Run:
    """Two training steps at one shape: each phase's peaks, the reserved peak, and the failure if one failed."""

    batch: int
    length: int
    phases: tuple[PhasePeak, ...]
    allocated: int
    reserved: int
    failed: str | None = None

    @property
    def runs(self) -> bool:
        return self.failed is None


@dataclass
class Simulation:
    """One replay of a model's training steps, simulated through the allocator at any size of the unknown."""

    config: Model
    training: Training
    length: int | None = None
    alloc: Config = field(default_factory=Config)
    steps: int = 2

    def __post_init__(self) -> None:
        graph, sizes = per_gpu(self.config, self.training.memory.layout, self.length)
        fixed = {seq_len: self.length} if self.length is not None else {}
        self.sizes = sizes
        requests = described(graph, self.training, {**sizes, **fixed}, self.steps)
        self.stream: list[Request] = requests.stream
        self.causes: dict[int, Cause] = requests.causes

    def run(self, batch: int, length: int | None = None, cap: int | None = None) -> Run:
        """The steps at ``batch`` (and ``length``, when the replay left it open) under ``cap`` bytes reserved."""
        return self.replay(batch, length, cap)[1]

    def capped(self, run: Run, cap: int) -> Run:
        """``run``, made without a cap, under ``cap``: the same run where its reserved peak stays within the cap
        (the allocator never meets it; with a garbage-collection threshold it would act sooner), else a new one."""
        if run.reserved <= cap and not self.alloc.garbage_collection_threshold:
            return run
        return self.run(run.batch, run.length, cap)

    def replay(self, batch: int, length: int | None = None, cap: int | None = None,
               itemize: bool = False, record: bool = False) -> tuple[Allocator, Run]:
        """The allocator after the steps (``itemize``: with what it adds at the peak; ``record``: with its trace)
        and the run."""
        length = self.length if length is None else length
        # a recorded trace keeps to the 47-bit addresses of a real GPU (as the viewers expect), enough without a cap
        space = AddressSpace() if record and cap is None else AddressSpace(1 << 2 * MAX_BITS, 1 << MAX_BITS)
        allocator = Allocator(self.alloc, cap, space, itemize=itemize, record=record)
        failed = None
        try:
            allocator.run(at(self.stream, {B: batch, seq_len: length}))
        except OutOfMemory as exc:
            failed = f"{allocator.phase or 'loading the model'}: {exc}"
            allocator.end()
        run = Run(batch, length, tuple(allocator.phases), allocator.allocated.peak, allocator.reserved.peak, failed)
        return allocator, run


@dataclass(frozen=True)
class Largest:
    """The largest value of ``unknown`` whose steps run under the cap (None: not even the smallest), the run
    there and at the next value (None where the search stopped at a limit: ``capped``, the model's
    ``positions`` or the ``size limit``), the closed form's answer and how many simulations decided.
    ``untried``: how many values between the answer and the closed form's were not simulated (more than
    :data:`SCAN`); one of them may run too, so the answer is then one that runs with the next failing."""

    unknown: str
    value: int | None
    run: Run | None
    above: Run | None
    closed: int | None
    simulations: int
    capped: str | None = None
    untried: int = 0


#: The most values between the search's answer and the closed form's that ``largest`` simulates one by one.
SCAN = 64


def largest(config: Model, training: Training, cap: int, batch: int | None = None, length: int | None = None,
            alloc: Config | None = None, sim: Simulation | None = None, memory: StepMemory | None = None) -> Largest:
    """The largest batch (``batch`` None) or seq_len (``length`` None) whose two steps run under ``cap``. ``sim``
    and ``memory`` (the step's replays for the simulation and the closed form), where the caller has them, serve
    several caps and shapes; ``sim`` brings its allocator settings."""
    if (batch is None) == (length is None):
        raise ConfigError("give one of --batch and --seq-len: fit solves for the other")
    unknown = "batch" if batch is None else "seq_len"
    step = step_of(training, unknown)
    closed = closed_form(config, training, cap, batch, length, estimate_reserved=False, memory=memory).value
    sim = sim or Simulation(config, training, length, alloc or Config())
    positions = unknown == "seq_len" and config.max_length is not None
    limit = (config.max_length if positions else MAX_SIZE) // step * step
    runs: dict[int, Run] = {}

    def run(n: int) -> Run:
        if n not in runs:
            runs[n] = sim.run(n, length, cap) if unknown == "batch" else sim.run(batch, n, cap)
        return runs[n]

    lo, hi = _bracket(run, min(closed or step, limit), step, limit)
    while hi is not None and hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        lo, hi = (mid, hi) if run(mid).runs else (lo, mid)
    # Near the cap, whether the steps run is not monotone in the value: one between the answer and the closed
    # form's may run too (none above the closed form's can: its allocated peak alone is over the cap). Those
    # are tried from the top, where there are at most SCAN of them.
    top = min(closed or 0, limit) // step * step
    untried = 0
    if hi is not None and top > hi:
        untried = (top - hi) // step - sum(1 for n in runs if hi < n <= top and n % step == 0)
    if 0 < untried <= SCAN:
        lo = next((n for n in range(top, hi, -step) if run(n).runs), lo)
        hi, untried = lo + step, 0
        run(hi)  # the failure one above, to name
    capped = None if hi is not None or not lo else ("positions" if positions else "size limit")
    return Largest(unknown, lo or None, runs.get(lo), runs.get(hi) if hi is not None else None, closed, len(runs),
                   capped, untried)


def _bracket(run: Callable[[int], Run], start: int, step: int, limit: int) -> tuple[int, int | None]:
    """A value that runs (0: none does) and a larger one that fails (None: the limit runs), found from ``start``
    by doubling steps up or down."""
    if run(start).runs:
        lo, gap = start, step
        while (up := min(lo + gap, limit)) > lo:
            if not run(up).runs:
                return lo, up
            lo, gap = up, gap * 2
        return lo, None
    hi, gap = start, step
    while (down := max(hi - gap, 0)) > 0:
        if run(down).runs:
            return down, hi
        hi, gap = down, gap * 2
    return 0, hi


def run_json(run: Run | None) -> dict[str, object] | None:
    """A simulated run in ``fit --json``: the shape, whether it ran (else the failure), the peaks, each phase's."""
    if run is None:
        return None
    phases = [{"phase": p.name, "requested": p.requested, "allocated": p.allocated, "reserved": p.reserved}
              for p in run.phases]
    return {"batch": run.batch, "seq_len": run.length, "runs": run.runs, "failed": run.failed,
            "allocated": run.allocated, "reserved": run.reserved, "phases": phases}


def cap_json(cap: Cap) -> dict[str, object]:
    """The cap in ``fit --json``: the bytes, the CUDA context left out of the card's memory and the card."""
    source = cap.source if cap.context else None
    return {"gpu_memory": cap.bytes, "cuda_context": cap.context, "cuda_context_source": source, "card": cap.card}


def largest_json(config: Model, training: Training, cap: Cap, result: Largest) -> dict[str, object]:
    """The ``symbert fit --json`` document of a simulated answer: the closed form's document at the answer
    (``memory``: its allocated peak, ``formula``, ``peak``), with the cap and the simulation's runs."""
    shape = result.run or result.above
    closed = closed_form(config, training, None, shape.batch, shape.length, estimate_reserved=False)
    doc = fit_json(closed)
    solved = {"batch": result.value, "seq_len": shape.length} if result.unknown == "batch" else {
        "batch": shape.batch, "seq_len": result.value}
    above = closed_form(config, training, None, result.above.batch, result.above.length, estimate_reserved=False) \
        if result.above is not None and result.value is not None else None
    doc.update(solved)
    doc.update({
        "solved_for": result.unknown,
        "fits": result.value is not None,
        "memory_above": above.peak.total if above else None,
        "reserved_estimate": None,
        "headroom": cap.bytes - result.run.reserved if result.run else None,
        "headroom_reserved_estimate": None,
        "capped_by_positions": result.capped == "positions",
        "capped_by_size_limit": result.capped == "size limit",
        **cap_json(cap),
        "allocator": {"closed_form": result.closed, "simulations": result.simulations, "untried": result.untried,
                      "at": run_json(result.run), "above": run_json(result.above)},
    })
    return doc


def checked_json(closed: Fit, cap: Cap, run: Run) -> dict[str, object]:
    """The ``symbert fit --json`` document of one shape decided by the simulation: the closed form's document
    (``memory``, ``formula``, ``peak``) with the cap, the simulation's verdict and its run."""
    doc = fit_json(closed)
    doc.update({
        "fits": run.runs,
        "reserved_estimate": None,
        "headroom": cap.bytes - run.reserved if run.runs else None,
        "headroom_reserved_estimate": None,
        **cap_json(cap),
        "allocator": {"closed_form_fits": closed.fits, "simulations": 1, "at": run_json(run), "above": None},
    })
    return doc


#: The most layer runs (over every repeated block) the simulation replays: its time grows with them, and above
#: this the closed form answers alone.
MAX_RUNS = 1024


def applies(config: Model, training: Training) -> bool:
    """Whether the simulation answers for this setup: the torch-cuda policy (a caching allocator) on one GPU,
    with at most :data:`MAX_RUNS` layer runs to replay."""
    if training.runtime is None or training.memory.layout.gpus != 1:
        return False
    graph, sizes = per_gpu(config, training.memory.layout)
    return sum(int(sympy.sympify(b.count).subs(sizes)) for b in graph.blocks.values()) <= MAX_RUNS
