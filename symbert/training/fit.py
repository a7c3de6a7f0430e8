"""Fit a GPU budget: the largest batch or sequence length whose training-step peak fits, and what helps.

At a fixed config the peak is the largest of a few polynomials in B and seq_len
(:meth:`symbert.training.step.StepMemory.polynomials`), each increasing in both. With one of the
two fixed, each polynomial is solved exactly (sympy) for where it meets the budget, the roots are
floored, and the smallest is the largest value that fits. It is then checked numerically with the
same polynomials, and against the replayed timeline: within the budget at the answer, over it at the
answer + 1.

Under a device runtime (torch-cuda) the peak is the caching allocator's allocated bytes, workspaces and
512-byte rounding included; the rounding terms are not polynomials, so the roots bound the answer from
above and the answer is stepped down to the largest value whose exact peak fits (the peak grows with
the unknown). :attr:`Fit.reserved` then estimates the reserved memory at the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from decimal import Decimal

import sympy

from symbert.analysis.sizes import at_least
from symbert.api import per_gpu
from symbert.configs import MAX_SIZE, Config, ConfigError, check_size, show
from symbert.display import Displayed
from symbert.formula import quantity, text
from symbert.symbols import B, below, seq_len
from symbert.training.states import CATEGORIES, Training, setup_json
from symbert.training.step import Point, Polynomials, StepMemory, reserved, step_memory

#: What fit says about the memory the budget leaves out.
CUDA_CONTEXT_NOTE = (
    "the CUDA context (a few hundred MiB, outside the caching allocator) is not counted: leave room for it"
)

UNITS = {"": 1, "B": 1, **{f"{p}B": 10 ** (3 * i) for i, p in enumerate("KMGTPEZY", 1)}}
UNITS |= {f"{p}IB": 2 ** (10 * i) for i, p in enumerate("KMGTPEZY", 1)}
_SIZE = re.compile(r"\s*(\d{1,40}(?:\.\d{1,40})?)\s*([A-Za-z]*)\s*")
#: The largest memory size symbert reads: 2**80 bytes (1 YiB).
MAX_BYTES = 2**80


def parse_bytes(text: str) -> int:
    """``16GiB``, ``16GB``, ``16000MiB``, ``1.5GiB`` or plain bytes up to 1 YiB, read with a regular expression.

    Units: B, KB … YB (powers of 1000) and KiB … YiB (powers of 1024), in any case."""
    match = _SIZE.fullmatch(text)
    if not match or match.group(2).upper() not in UNITS:
        raise ConfigError(f"cannot read memory size {show(text)} (examples: 16GiB, 16GB, 16000MiB, 17179869184)")
    value = Decimal(match.group(1)) * UNITS[match.group(2).upper()]
    if value != value.to_integral_value() or value <= 0:
        raise ConfigError(f"memory size {show(text)} is not a positive whole number of bytes")
    if value > MAX_BYTES:
        raise ConfigError(f"memory size {show(text)} is larger than symbert reads (at most 2**80 bytes, 1 YiB)")
    return int(value)


_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def decimal_note(text: str) -> str | None:
    """What a size in a decimal unit means, where one could read it as binary: ``24GB = 24·10⁹ bytes = 22.35 GiB;
    write 24GiB for 24·2³⁰``. None for bytes, binary units and text that is not a size."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).upper() if match else ""
    if unit not in UNITS or unit in ("", "B") or unit.endswith("IB"):
        return None
    power = 3 * "KMGTPEZY".index(unit[0]) + 3
    number, binary = match.group(1), f"{unit[0]}iB"
    exact = quantity(parse_bytes(text), "bytes")
    exact += "" if exact.endswith("B") else " bytes"
    return (
        f"{number}{unit} = {number}·10{str(power).translate(_SUPERSCRIPT)} bytes = {exact}; write {number}{binary} "
        f"for {number}·2{str(power // 3 * 10).translate(_SUPERSCRIPT)}"
    )


@dataclass(frozen=True)
class Knob:
    """One change to the setup, and the peak it gives."""

    change: str
    peak: Point


#: What stopped a solved value other than memory, in words.
CAPPED = {"positions": "all the model's positions", "size limit": "the largest size symbert accepts"}


@dataclass(frozen=True)
class Fit(Displayed):
    """A fitted or given shape and its peak.

    ``unknown`` is ``batch`` or ``seq_len`` when it was solved for (None when both were given);
    ``capped`` says what stopped the solved value instead of memory: ``positions`` (the model's, for
    seq_len) or ``size limit`` (the largest size symbert accepts, 10**12), else None. When nothing fits, the solved
    value is None and ``peak`` is the peak at 1. ``above`` is the peak at the solved value + 1.
    ``formula`` is the polynomial that gives the peak there, in the unknown (or in B and seq_len).
    ``knobs`` lists single changes, lowest peak first, when the shape does not fit.
    """

    config: Config
    training: Training
    budget: int | None
    batch: int | None
    seq_len: int | None
    unknown: str | None
    capped: str | None
    peak: Point
    above: Point | None
    formula: sympy.Expr
    knobs: tuple[Knob, ...] = ()
    reserved: int | None = None

    @property
    def fits(self) -> bool:
        solved = self.unknown is None or self.value is not None
        return solved and (self.budget is None or self.peak.total <= self.budget)

    @property
    def headroom(self) -> int | None:
        """The budget left over the allocated peak."""
        return None if self.budget is None else self.budget - self.peak.total

    @property
    def value(self) -> int | None:
        return {"batch": self.batch, "seq_len": self.seq_len}.get(self.unknown or "")

    def answer(self) -> str:
        """The answer in one line: what fits (or that nothing does) and the peak there."""
        budget = "" if self.budget is None else f" in {quantity(self.budget, 'bytes')}"
        peak = f"peak {quantity(self.peak.total, 'bytes')} at {self.peak.where}"
        if self.unknown is None:
            verdict = "" if self.budget is None else (" fits" if self.fits else " does not fit")
            return f"batch {self.batch}, seq_len {self.seq_len}{verdict}{budget}: {peak}"
        if self.value is None:
            return f"nothing fits{budget}: at batch {self.batch or 1}, seq_len {self.seq_len or 1}, {peak}"
        other = f"seq_len {self.seq_len}" if self.unknown == "batch" else f"batch {self.batch}"
        capped = f" ({CAPPED[self.capped]})" if self.capped else ""
        return f"largest {self.unknown} at {other}{budget}: {self.value}{capped}; {peak}"

    def __repr__(self) -> str:
        training = f"{self.training.optimizer}, {self.training.precision} precision"
        return f"<Fit {self.config.name}, {training}: {self.answer()}>"

    def over_budget(self) -> str:
        """What is over the budget at the peak: the model states alone, else the largest component."""
        states = sum(self.peak.bytes[c] for c in ("weights", "gradients", "optimizer"))
        if self.budget is not None and states > self.budget:
            return "model states (weights, gradients and optimizer states)"
        return CATEGORIES[max(self.peak.bytes, key=lambda c: self.peak.bytes[c])]


def _largest(poly: sympy.Expr, x: sympy.Symbol, budget: int) -> int | None:
    """The largest integer n ≥ 0 with poly(n) ≤ budget (poly increases for n > 0); −1 if none, None if all."""
    p = sympy.Poly(poly - budget, x)
    if p.degree() <= 0:
        return None if p.eval(0) <= 0 else -1
    if p.degree() == 1:  # a·n + b: its one root is a fraction, found without isolating roots
        a, b = p.all_coeffs()
        return int(sympy.floor(-b / a)) if -b / a >= 0 else -1
    roots = [r for r in p.real_roots() if r >= 0]
    return int(sympy.floor(max(roots))) if roots else -1


def largest(polys: Polynomials, x: sympy.Symbol, budget: int, step: int = 1) -> int | None:
    """The largest multiple of ``step`` (0 if none) that ``x`` may take with its exact peak within
    ``budget``; None if the peak does not grow with it.

    Brackets [x < k] (what PyTorch keeps at batch 1, a window mask a short sequence goes without) cut
    the values of x into ranges where each is constant; in each range each polynomial is solved
    exactly, and the last range with a value that fits gives the answer. It is then stepped down
    where the allocator's rounding and sizes rounded up to a multiple (⌈seq_len/32⌉), which the
    polynomials leave out, push it over: the peak grows with ``x``."""
    cuts = sorted({int(g.args[1]) for g in polys.gens if isinstance(g, below) and g.args[0] == x and g.args[1] > 1})
    found, grows = -1, False
    for low, high in zip([1, *cuts], [*cuts, None], strict=True):
        fixed = {g: g.subs(x, low) for g in polys.gens if isinstance(g, below) and g.args[0] == x}
        bounds = [_largest(at_least(polys.polynomial(i).subs(fixed)), x, budget) for i in range(len(polys.candidates))]
        answers = [a for a in bounds if a is not None]
        grows = grows or bool(answers)
        n = min(answers, default=None if high is None else high - 1)
        if n is None:
            return None
        if n >= low:
            found = n if high is None else min(n, high - 1)
    if not grows:
        return None
    n = max(found, 0) // step * step
    while n >= 1 and max(polys.exact(n)) > budget:
        n -= step
    return n


def fit(
    config: Config,
    training: Training,
    budget: int | None,
    batch: int | None = None,
    length: int | None = None,
    estimate_reserved: bool = True,
    memory: StepMemory | None = None,
) -> Fit:
    """Solve for the one of ``batch`` and ``length`` left None, or evaluate both when both are given.
    ``estimate_reserved``: also estimate the reserved memory (:func:`~symbert.training.step.reserved`;
    slow at many layers), where the allocator simulation (:mod:`symbert.training.oom`) does not replace it.
    ``memory``: the step's replay, where the caller has it already (one replay serves every budget)."""
    for name, value in (("batch", batch), ("seq_len", length)):
        if value is not None:
            check_size(name, value)
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or not 0 < budget <= MAX_BYTES):
        raise ConfigError(f"the GPU memory must be a whole number of bytes from 1 to 2**80, got {show(budget)}")
    if length is not None and config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")
    training = training.for_model(config.spec)
    graph, sizes = per_gpu(config, training.memory.layout, length)
    memory = memory or step_memory(graph, training, sizes)
    if batch is not None and length is not None:
        values = {**sizes, B: batch, seq_len: length}
        peak = memory.peak(values)
        top = memory.polynomials(sizes, (B, seq_len)).top(batch, length)
        result = Fit(config, training, budget, batch, length, None, False, peak, None, top)
        if estimate_reserved:
            result = replace(result, reserved=reserved(graph, training, values))
        return result if result.fits else replace(result, knobs=knobs(config, training, batch, length))
    if budget is None:
        raise ConfigError("give --gpu-memory to solve for batch or seq_len, or give both --batch and --seq-len")
    if batch is None and length is None:
        raise ConfigError("give --batch or --seq-len (or both); fit solves for the one left out")
    x, fixed, unknown = (B, length, "batch") if batch is None else (seq_len, batch, "seq_len")
    values = {**sizes, (seq_len if x is B else B): fixed}
    polys = memory.polynomials(values, (x,))
    step = step_of(training, unknown)
    n = largest(polys, x, budget, step)
    if n is None:
        raise ConfigError(f"the peak does not grow with {unknown}")
    positions = config.max_length // step * step if unknown == "seq_len" and config.max_length else None
    capped = "positions" if positions is not None and n > positions else None
    capped = capped or ("size limit" if n > MAX_SIZE else None)
    n = {None: n, "positions": positions, "size limit": MAX_SIZE // step * step}[capped]
    at = max(n, step)
    peak = memory.peak({**values, x: at})
    above = memory.peak({**values, x: n + step}) if n >= 1 and not capped else None
    closed = max(polys.exact(at))
    if closed != peak.total or (above is not None and max(polys.exact(n + step)) != above.total):
        raise AssertionError("the closed form and the replay disagree")
    if n >= 1 and (closed > budget or (above is not None and above.total <= budget)):
        raise AssertionError(f"{unknown}={n} is not the largest that fits")
    top = polys.top(at)
    solved = n if n >= 1 else None
    b, s = (solved, fixed) if unknown == "batch" else (fixed, solved)
    result = Fit(config, training, budget, b, s, unknown, capped, peak, above, top)
    if solved and estimate_reserved:
        result = replace(result, reserved=reserved(graph, training, {**values, x: n}))
    return result if solved else replace(result, knobs=knobs(config, training, b or 1, s or 1))


def step_of(training: Training, unknown: str | None) -> int:
    """What a solved value steps by: t for seq_len under sequence parallelism (t divides it), else 1."""
    layout = training.memory.layout
    return layout.tensor if unknown == "seq_len" and layout.sequence else 1


def knobs(config: Config, training: Training, batch: int, length: int) -> tuple[Knob, ...]:
    """The peak at (batch, length) after each single change to the setup, lowest first."""
    m = training.memory
    changes: list[tuple[str, Training, int, int]] = []
    if training.precision == "fp32":
        mixed = replace(training, precision="mixed", memory=replace(m, dtype=None))
        changes.append(("mixed precision", mixed, batch, length))
    if training.optimizer != "sgd":
        changes.append(
            ("SGD without momentum (no optimizer states)", replace(training, optimizer="sgd"), batch, length)
        )
    for recompute in ("selective", "full"):
        if m.recompute != recompute:
            setup = replace(training, memory=replace(m, recompute=recompute))
            changes.append((f"recompute {recompute}", setup, batch, length))
    for kernel in ("sdpa", "flash")[("eager", "sdpa", "flash").index(m.attention) :]:
        if kernel in config.spec.attention:
            setup = replace(training, memory=replace(m, attention=kernel))
            changes.append((f"{kernel} attention", setup, batch, length))
    if batch > 1:
        changes.append((f"batch {batch // 2}", training, batch // 2, length))
    if length > 1:
        changes.append((f"seq_len {length // 2}", training, batch, length // 2))
    graph, sizes = per_gpu(config, m.layout)
    out = []
    for change, setup, b, s in changes:
        peak = step_memory(graph, setup, sizes).peak({**sizes, B: b, seq_len: s})
        out.append(Knob(change, peak))
    return tuple(sorted(out, key=lambda k: k.peak.total))


def fit_json(result: Fit) -> dict[str, object]:
    """The ``symbert fit --json`` document."""
    peak = result.peak
    runtime = result.training.runtime
    return {
        "config": result.config.as_dict(),
        "gpu_memory": result.budget,
        **setup_json(result.training),
        "solved_for": result.unknown,
        "batch": result.batch,
        "seq_len": result.seq_len,
        "gpu": result.training.gpu,
        "runtime": runtime.describe() if runtime else None,
        "fits": result.fits,
        "capped_by_positions": result.capped == "positions",
        "capped_by_size_limit": result.capped == "size limit",
        "memory": peak.total,
        "allocated": peak.total,
        "reserved_estimate": result.reserved,
        "headroom": result.headroom,
        "headroom_reserved_estimate": None
        if None in (result.budget, result.reserved)
        else result.budget - result.reserved,
        "cuda_context": CUDA_CONTEXT_NOTE if runtime else None,
        "memory_above": result.above.total if result.above else None,
        "peak": {"step": peak.step, "phase": peak.phase, "where": peak.where, "components": dict(peak.bytes)},
        "formula": text(result.formula),
        "over_budget": None if result.fits else result.over_budget(),
        "knobs": [{"change": k.change, "memory": k.peak.total, "fits": _fits(k, result)} for k in result.knobs],
    }


def _fits(knob: Knob, result: Fit) -> bool | None:
    return None if result.budget is None else knob.peak.total <= result.budget
