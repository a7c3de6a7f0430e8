"""``fit``'s answer, chosen as the command chooses: a plan over N GPUs, the caching allocator's simulation over
two training steps, or the peak's closed form."""

from __future__ import annotations

import os
from dataclasses import dataclass

from symbert.configs import Config, ConfigError
from symbert.gpus import gpu as find_gpu
from symbert.training.allocator import AllocatorError, from_environment, parse_config
from symbert.training.allocator import Config as AllocatorConfig
from symbert.training.fit import Fit, fit, parse_bytes
from symbert.training.oom import (
    MAX_RUNS,
    Cap,
    Largest,
    Run,
    Simulation,
    applies,
    cap_of,
    checked_json,
    largest,
    largest_json,
)
from symbert.training.planner import Plan, plan
from symbert.training.states import Training


@dataclass(frozen=True)
class Simulated:
    """``fit`` answered by the caching allocator's simulation (:func:`symbert.training.oom.largest`) under ``cap``."""

    config: Config
    training: Training
    cap: Cap
    result: Largest

    def json(self) -> dict[str, object]:
        return largest_json(self.config, self.training, self.cap, self.result)


@dataclass(frozen=True)
class Checked:
    """``fit`` for one shape, decided by the caching allocator's simulation of its two training steps under
    ``cap``; ``closed`` is the closed form's peak there, against the same cap."""

    config: Config
    training: Training
    cap: Cap
    closed: Fit
    run: Run

    def json(self) -> dict[str, object]:
        return checked_json(self.closed, self.cap, self.run)


Answer = Fit | Simulated | Checked | Plan


#: A size in bytes: a whole number, or text such as 16GiB, 16GB or 16000MiB.
Size = int | str


def to_bytes(size: Size | None) -> int | None:
    """A size in bytes (None stays None); anything else is a ConfigError."""
    return None if size is None else parse_bytes(size if isinstance(size, str) else str(size))


def budget_of(gpu_memory: Size | None, training: Training) -> int | None:
    """The GPU memory given, else the memory of the training's GPU, else None."""
    if gpu_memory is not None:
        return to_bytes(gpu_memory)
    return find_gpu(training.gpu).memory if training.gpu else None


def cap_for(gpu_memory: Size | None, training: Training, cuda_context: Size | None = None) -> Cap | None:
    """What the caching allocator may reserve: ``gpu_memory``, else the training's GPU's memory less
    ``cuda_context`` (default: the measured context); None without either."""
    return cap_of(to_bytes(gpu_memory), training.gpu, to_bytes(cuda_context))


def allocator_config(alloc_conf: str | None) -> AllocatorConfig:
    """PYTORCH_ALLOC_CONF's settings from ``alloc_conf``, else from the environment (or PYTORCH_CUDA_ALLOC_CONF)."""
    try:
        return parse_config(alloc_conf) if alloc_conf is not None else from_environment(os.environ)
    except AllocatorError as exc:
        raise ConfigError(str(exc)) from None


def solve(
    config: Config,
    training: Training,
    gpu_memory: Size | None = None,
    batch: int | None = None,
    length: int | None = None,
    gpus: int | None = None,
    cuda_context: Size | None = None,
    alloc_conf: str | None = None,
    closed_form: bool = False,
) -> Answer:
    """With ``gpus``, the layouts of that many GPUs that fit (:func:`plan_gpus`). Else, under torch-cuda on one GPU
    with a cap, the simulated answer (unless ``closed_form``): the largest of ``batch`` and ``length`` left None,
    or whether the shape given runs; otherwise the closed form's (:func:`symbert.training.fit.fit`).

    The cap is ``gpu_memory``, else the GPU's memory less ``cuda_context`` (default: the measured context);
    ``alloc_conf`` configures the allocator as PYTORCH_ALLOC_CONF does (default: the environment's)."""
    budget = budget_of(gpu_memory, training)
    cap = None if gpus is not None else cap_for(gpu_memory, training, cuda_context)
    why = unsimulated(config, training, cap, batch, length, gpus, closed_form)
    allocator = [flag for flag, value in (("--cuda-context", cuda_context), ("--alloc-conf", alloc_conf)) if value]
    if why and allocator:
        verb = "set" if len(allocator) > 1 else "sets"
        raise ConfigError(f"{' and '.join(allocator)} {verb} up the allocator's simulation, which does not run: {why}")
    if gpus is not None:
        return plan_gpus(config, training, budget, gpus, batch, length)
    if cap is not None and why is None:
        alloc = allocator_config(alloc_conf)
        if batch is not None and length is not None:
            closed = fit(config, training, cap.bytes, batch, length, estimate_reserved=False)
            run = Simulation(config, training, length, alloc).run(batch, length, cap.bytes)
            return Checked(config, training, cap, closed, run)
        return Simulated(config, training, cap, largest(config, training, cap.bytes, batch, length, alloc))
    return fit(config, training, budget, batch, length)


def unsimulated(
    config: Config, training: Training, cap: Cap | None, batch: int | None, length: int | None, gpus: int | None,
    closed_form: bool,
) -> str | None:
    """Why ``fit`` answers without the caching allocator's simulation, in words; None where it simulates."""
    if gpus is not None:
        return "--gpus plans with the closed form"
    if closed_form:
        return "--closed-form leaves it out"
    if cap is None:
        return "it needs --gpu or --gpu-memory"
    if batch is None and length is None:
        return "it needs --batch or --seq-len"
    if not applies(config, training):
        return f"it runs under --policy torch-cuda on one GPU, up to {MAX_RUNS} layer runs"
    return None


def plan_gpus(
    config: Config, training: Training, budget: int | None, gpus: int, batch: int | None, length: int | None
) -> Plan:
    """``fit --gpus``: the layouts of ``gpus`` GPUs of ``budget`` bytes each that fit, at ``length`` (default:
    every position) and micro-batch ``batch`` (default: the largest)."""
    layout = training.memory.layout
    if layout.gpus > 1 or layout.microbatches > 1 or layout.virtual > 1:
        raise ConfigError("--gpus searches the layouts: leave out the parallel degrees and --microbatches")
    if budget is None:
        raise ConfigError("give --gpu or --gpu-memory: the memory of one GPU")
    if length is None:
        if config.max_length is None:
            raise ConfigError("give --seq-len: the model has no position limit to plan at")
        length = config.max_length
    return plan(config, training, gpus, budget, length, batch)
