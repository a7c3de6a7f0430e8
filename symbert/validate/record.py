"""Record the CUDA caching allocator's real trace of a training job as a fixture, and compare symbert's requests
with it, request by request.

:func:`record` runs two training steps of a Hugging Face model on the GPU under
``torch.cuda.memory._record_memory_history`` (started before the model is moved to the GPU) and reads
``max_memory_allocated`` / ``max_memory_reserved`` per phase, the peaks reset before each. :func:`fixture_events`
turns the ``_snapshot()``'s device trace into the fixtures' events (the format of
``tests/fixtures/gpu/h100-trace-bert-base-b8-s128-fp32.json``) and marks where each phase starts: each phase runs
in its own function of this module (:data:`PHASE_OF`), so an event's Python stack names its phase, and an event
with no Python frame (autograd's backward thread) continues the phase under way. :func:`compare` sets symbert's
stream (:func:`symbert.training.stream.events`) and its simulation (:class:`symbert.training.oom.Simulation`)
beside them, and :func:`first_difference` names the first request where the two differ.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

from symbert.configs import Config, ConfigError
from symbert.validate import measure
from symbert.validate.hf import hugging_face
from symbert.validate.peak import OPTIMIZERS, _stepping

#: The snapshot's actions kept, as the fixtures spell them (segment events are dropped).
ACTIONS = {"alloc": "a", "free_requested": "f", "free_completed": "c"}
#: An event's frame where it has no Python frame.
NO_FRAME = "?:0:?"
#: The packages whose frames are not the caller's.
LIBRARIES = frozenset({"torch", "transformers"})
#: The functions of this module that run each phase, and the phase each runs.
PHASE_OF = {"_load": "load", "_forward": "forward", "_backward": "backward", "_optimizer": "optimizer"}
#: The device trace's ring buffer: more than any job of ``symbert validate`` makes in two steps.
MAX_ENTRIES = 1_000_000

ABOUT = (
    "A real allocation trace of the CUDA caching allocator (torch.cuda.memory._record_memory_history(max_entries="
    "{max_entries}, stacks='python') started before the model was moved to the GPU, then _snapshot() after two "
    "training steps), recorded by `symbert validate --device cuda --record`: {job}; on {device}, torch {torch}, "
    "transformers {transformers}. Each event: [action, address, size, first frame outside torch and "
    "transformers, first Python frame]; action a = alloc, f = free_requested, c = free_completed; size is the "
    "requested size in bytes, before the allocator rounds it; '?:0:?' where there is no Python frame (autograd's "
    "backward thread). Only alloc/free events are kept. 'marks' are [index of the first event, phase]: 'load' "
    "(the model's parameters and buffers by Module.to, then the inputs), then '1 forward', '1 backward', "
    "'1 optimizer' (step and zero_grad(set_to_none=True)), … 'base' is memory_allocated() after loading; "
    "'phases' are max_memory_allocated() per phase and 'reserved_phases' max_memory_reserved(), with the peak "
    "stats reset before each phase; 'peak' and 'reserved' are their highest."
)


def frame_text(frame: Mapping[str, Any]) -> str:
    """A snapshot frame as the fixtures write it: ``file:line:function`` (the file's name only)."""
    return f"{PurePath(frame['filename']).name}:{frame['line']}:{frame['name']}"


def _library(frame: Mapping[str, Any]) -> bool:
    return not LIBRARIES.isdisjoint(PurePath(frame["filename"]).parts)


def _phase(frames: Sequence[Mapping[str, Any]]) -> str | None:
    return next((PHASE_OF[f["name"]] for f in frames
                 if f["name"] in PHASE_OF and PurePath(f["filename"]).name == "record.py"), None)


def fixture_events(snapshot: Mapping[str, Any], device: int = 0) -> tuple[list[list], list[list]]:
    """The fixture's ``events`` and ``marks`` of a ``torch.cuda.memory._snapshot()`` (its ``device_traces``
    entry for ``device``; each entry's ``frames`` innermost first). A phase starts at the first event whose
    stack runs in its function of :data:`PHASE_OF`; each ``forward`` starts a step."""
    events, marks = [], []
    current, step = None, 0
    for entry in snapshot["device_traces"][device]:
        if entry["action"] not in ACTIONS:
            continue
        frames = entry.get("frames") or []
        phase = _phase(frames)
        if phase is not None and phase != current:
            step += phase == "forward"
            current = phase
            marks.append([len(events), phase if phase == "load" else f"{step} {phase}"])
        caller = next((frame_text(f) for f in frames if not _library(f)), NO_FRAME)
        first = frame_text(frames[0]) if frames else NO_FRAME
        events.append([ACTIONS[entry["action"]], entry["addr"], entry["size"], caller, first])
    return events, marks


def real_requests(fixture: Mapping[str, Any]) -> dict[str, list[tuple[int, str]]]:
    """Each phase's requests of a recorded fixture, in order: size and first Python frame."""
    out: dict[str, list[tuple[int, str]]] = {}
    starts = dict(fixture["marks"])
    phase = None
    for i, event in enumerate(fixture["events"]):
        phase = starts.get(i, phase)
        if event[0] == "a" and phase is not None:
            out.setdefault(phase, []).append((event[2], event[4]))
    return out


def stream_requests(stream: Sequence[tuple]) -> dict[str, list[int]]:
    """Each phase's requests of symbert's stream (at whole sizes), in order; those before the first phase are
    ``load``."""
    out: dict[str, list[int]] = {"load": []}
    phase = "load"
    for event in stream:
        if event[0] == "phase":
            phase = event[1]
            out.setdefault(phase, [])
        elif event[0] == "alloc":
            out[phase].append(int(event[2]))
    return out


@dataclass(frozen=True)
class Difference:
    """The first place where symbert's requests differ from the recorded ones: the phase, the index of the first
    recorded request that differs (the count of the phase's requests where symbert's run out), each side's
    requests there, and the recorded request's source line."""

    phase: str
    index: int
    ours: tuple[int, ...]
    real: tuple[int, ...]
    line: str

    def __str__(self) -> str:
        return (f"first difference: {self.phase}, request {self.index} ({self.line or 'none recorded'}): "
                f"symbert {list(self.ours)}, recorded {list(self.real)}")


def first_difference(ours: Mapping[str, Sequence[int]], real: Mapping[str, Sequence[tuple[int, str]]]
                     ) -> Difference | None:
    """The first difference between symbert's requests and the recorded ones, phase by phase in the recorded
    order (difflib's opcodes on the sizes, as tests/test_allocator_stream.py compares them); None where they are
    the same requests in the same order."""
    for phase in [*real, *(p for p in ours if p not in real)]:
        requests, mine = list(real.get(phase, ())), list(ours.get(phase, ()))
        sizes = [size for size, _ in requests]
        matcher = difflib.SequenceMatcher(None, mine, sizes, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "equal":
                line = requests[min(j1, len(requests) - 1)][1] if requests else ""
                return Difference(phase, j1, tuple(mine[i1:i2]), tuple(sizes[j1:j2]), line)
    return None


@dataclass(frozen=True)
class Job:
    """One training job to record: the config, the shape and how it trains."""

    config: Config
    batch: int
    seq_len: int
    optimizer: str = "adamw"
    attention: str = "eager"
    amp: str | None = None
    recompute: str = "none"
    label: str | None = None
    """The fixture's name; by default one made of the job's settings."""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        precision = self.amp or "fp32"
        full = "-recompute" if self.recompute == "full" else ""
        return f"{self.config.name}-b{self.batch}-s{self.seq_len}-{precision}-{self.attention}-{self.optimizer}{full}"


class _Run:
    """The state of a recorded job's phases."""

    def __init__(self, job: Job, model: Any, inputs: Mapping[str, Any]) -> None:
        self.job, self.model, self.inputs = job, model, inputs
        self.state: dict[str, Any] = {}
        self.optimizer: Any = None
        self.backward: Any = None
        self.update: Any = None


def _load(run: _Run) -> None:
    run.model = run.model.to("cuda")
    run.inputs = {k: v.to("cuda") for k, v in run.inputs.items()}
    import torch

    cls, kwargs = OPTIMIZERS[run.job.optimizer]
    run.optimizer = getattr(torch.optim, cls)(run.model.parameters(), **kwargs)
    run.backward, run.update = _stepping(run.optimizer, run.job.amp, "cuda")


def _forward(run: _Run) -> None:
    with measure.autocast(run.job.amp, "cuda"):
        output = run.model(**run.inputs)
        run.state["output"] = None if output.get("loss") is not None else output
        run.state["loss"] = measure.loss_of(output)


def _backward(run: _Run) -> None:
    run.backward(run.state.pop("loss"))
    run.state.pop("output", None)


def _optimizer(run: _Run) -> None:
    run.update()
    run.optimizer.zero_grad(set_to_none=True)


def record(job: Job, max_entries: int = MAX_ENTRIES) -> dict[str, Any]:
    """Two training steps of ``job`` on the current CUDA device, recorded: the fixture (see :data:`ABOUT`)."""
    import torch
    import transformers

    model, inputs = hugging_face(job.config, job.batch, job.seq_len, "float32", job.attention, "cpu")
    if job.recompute == "full":  # Hugging Face's per-layer checkpointing, with its defaults
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    run = _Run(job, model, inputs)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.memory._record_memory_history(max_entries=max_entries, stacks="python")
    try:
        _load(run)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        phases = []
        for step in (1, 2):
            for name, fn in (("forward", _forward), ("backward", _backward), ("optimizer", _optimizer)):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                fn(run)
                torch.cuda.synchronize()
                phases.append((step, name, torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()))
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    if len(snapshot["device_traces"][torch.cuda.current_device()]) >= max_entries:
        raise RuntimeError(f"the trace filled its {max_entries} entries: raise max_entries")
    events, marks = fixture_events(snapshot, torch.cuda.current_device())
    env = {"torch": torch.__version__, "transformers": transformers.__version__,
           "device": torch.cuda.get_device_name()}
    return {
        "about": ABOUT.format(max_entries=max_entries, job=job.name, **env),
        "env": env,
        "case": {"name": job.name, "cfg": job.config.name, "head": job.config.head.name if job.config.head else "model",
                 "B": job.batch, "s": job.seq_len, "amp": job.amp, "attn": job.attention,
                 "optimizer": job.optimizer, "recompute": job.recompute},
        "config": json.loads(json.dumps(run.model.config.to_diff_dict(), default=str)),
        "base": base,
        "phases": [[s, n, allocated] for s, n, allocated, _ in phases],
        "reserved_phases": [[s, n, reserved] for s, n, _, reserved in phases],
        "peak": max(p[2] for p in phases),
        "reserved": max(p[3] for p in phases),
        "marks": marks,
        "events": events,
    }


@dataclass(frozen=True)
class Comparison:
    """A recorded fixture against symbert: each phase's measured and simulated allocated and reserved peaks, its
    request counts, and the first difference between the requests."""

    job: str
    rows: tuple[tuple[str, int, int, int | None, int, int, int], ...]
    """(phase, measured allocated, simulated, measured reserved (None: not recorded), simulated, recorded
    requests, symbert's)."""
    difference: Difference | None
    failed: str | None = None

    def lines(self) -> list[str]:
        head = f"{'phase':<12} {'allocated':>14} {'simulated':>14} {'reserved':>14} {'simulated':>14} requests"
        out = [self.job, head]
        for phase, allocated, sim_a, reserved, sim_r, real, ours in self.rows:
            shown = "-" if reserved is None else f"{reserved:,}"
            out.append(f"{phase:<12} {allocated:>14,} {sim_a:>14,} {shown:>14} {sim_r:>14,} {real} / {ours}")
        if self.failed:
            out.append(f"the simulation ran out of memory: {self.failed}")
        out.append(str(self.difference) if self.difference else "symbert's requests are the recorded ones")
        return out


def training_of(job: Job, gpu: str | None, workspace: str | None = None) -> Any:
    """symbert's :class:`~symbert.training.states.Training` for ``job`` under the torch-cuda policy on ``gpu``."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.training.states import Training

    memory = MemoryOptions("torch-cuda", job.amp, job.attention, job.recompute).for_model(job.config.spec)
    return Training(job.optimizer, "amp" if job.amp else "fp32", memory, gpu, workspace)


def compare(job: Job, fixture: Mapping[str, Any], gpu: str | None, environ: Mapping[str, str] | None = None,
            workspace: str | None = None) -> Comparison:
    """``fixture`` (as :func:`record` writes it) against symbert's stream and simulation of ``job`` on ``gpu``,
    with the allocator settings of ``environ`` (``PYTORCH_ALLOC_CONF``)."""
    from symbert.symbols import B, seq_len
    from symbert.training.allocator import from_environment
    from symbert.training.oom import Simulation
    from symbert.training.stream import at

    sim = Simulation(job.config, training_of(job, gpu, workspace), job.seq_len, from_environment(environ or {}))
    run = sim.run(job.batch)
    ours = stream_requests(at(sim.stream, {B: job.batch, seq_len: job.seq_len}))
    real = real_requests(fixture)
    simulated = {p.name: p for p in run.phases}
    reserved_of = {f"{s} {n}": r for s, n, r in fixture.get("reserved_phases", ())}
    rows = []
    for step, name, allocated in fixture["phases"]:
        phase = f"{step} {name}"
        reserved = reserved_of.get(phase)
        sim_phase = simulated.get(phase)
        rows.append((phase, allocated, sim_phase.allocated if sim_phase else 0, reserved,
                     sim_phase.reserved if sim_phase else 0, len(real.get(phase, ())), len(ours.get(phase, ()))))
    return Comparison(job.name, tuple(rows), first_difference(ours, real), run.failed)


def record_and_compare(job: Job, directory: Path) -> tuple[Path, Comparison]:
    """Record ``job`` on the GPU into ``directory`` (``{name}.json``) and compare it with symbert."""
    import os

    from symbert.validate.peak import cuda_gpu

    try:  # a model Hugging Face cannot build or run, or one the GPU cannot hold
        fixture = record(job)
    except (RuntimeError, IndexError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"recording {job.name} failed: {first}") from None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{job.name}.json"
    path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    gpu, workspace = cuda_gpu()
    return path, compare(job, fixture, gpu, os.environ, workspace)
