"""Measured memory of real training steps on CPU: a Hugging Face model, its optimizer, torch.profiler.

Like :mod:`symbert.validate.measure`, this runs real PyTorch and imports it inside the functions.

A step is ``loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)``. A task model's
loss is its own (it is given labels) and only the loss is kept, the logits dropped before backward as
Hugging Face's Trainer does; a bare model's loss is the sum of its differentiable outputs, which stay
alive until backward ends. The profiler's memory
events give every allocation and free of the CPU allocator; the model and its inputs are built under
the profiler (the allocator reports no free of memory allocated before profiling started, and sharding
a model frees its full parameters), so memory at any moment is the running sum of those events. Model
buffers (position ids) are left out, as symbert's prediction leaves them out.

On CUDA (:func:`measure_steps_cuda`) the caching allocator's own counters measure each phase:
``reset_peak_memory_stats`` before it, then ``max_memory_allocated`` and ``max_memory_reserved``. They
count the model's buffers too, which the prediction leaves out (bytes, not megabytes). This path is
written from PyTorch's documentation; it has not been run here on a GPU, and its tests skip without one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from symbert.configs import Config
from symbert.validate import measure
from symbert.validate.hf import hugging_face

#: The keyword that makes torch.optim run each of Adam's implementations.
IMPLEMENTATION_KWARGS: dict[str, dict[str, bool]] = {
    "": {},
    "-fused": {"fused": True},
    "-foreach": {"foreach": True},
    "-single": {"foreach": False},
}

OPTIMIZERS: dict[str, tuple[str, dict[str, float | bool]]] = {
    "sgd": ("SGD", {"lr": 1e-3}),
    "momentum": ("SGD", {"lr": 1e-3, "momentum": 0.9}),
    **{
        f"{name}{suffix}": (cls, {"lr": 1e-4, **kwargs})
        for name, cls in (("adam", "Adam"), ("adamw", "AdamW"))
        for suffix, kwargs in IMPLEMENTATION_KWARGS.items()
    },
}
"""Each optimizer's ``torch.optim`` class and arguments; everything else is PyTorch's default."""


@dataclass(frozen=True)
class Phase:
    """Memory over one phase of one step, in bytes."""

    step: int
    name: str
    start: int
    peak: int
    end: int
    reserved: int | None = None
    tensors: int | None = None
    """On CPU, the peak without the scratch kernels allocate and free within one call (:data:`SCRATCH_OPS`)."""


@dataclass(frozen=True)
class MeasuredSteps:
    """Memory over training steps: the phases in order, and the highest point."""

    baseline: int
    phases: tuple[Phase, ...]

    @property
    def peak(self) -> int:
        return max(p.peak for p in self.phases)

    @property
    def where(self) -> Phase:
        """The phase of the tensors' peak (:attr:`tensors`)."""
        return max(self.phases, key=lambda p: p.peak if p.tensors is None else p.tensors)

    @property
    def tensors(self) -> int:
        """The highest memory of tensors: on CPU without the kernels' scratch, on CUDA the peak."""
        return max(p.peak if p.tensors is None else p.tensors for p in self.phases)

    @property
    def scratch(self) -> int:
        """How far the kernels' scratch takes the peak above the tensors' peak."""
        return self.peak - self.tensors

    @property
    def reserved(self) -> int | None:
        """The highest reserved memory (CUDA only)."""
        values = [p.reserved for p in self.phases if p.reserved is not None]
        return max(values) if values else None


def _stepping(opt: Any, amp: str | None, device: str) -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A training step's backward (of a loss) and optimizer update; float16 autocast goes through a
    GradScaler, as Hugging Face's Trainer does. A scale of 1 never overflows here, so every step updates
    (GradScaler skips the steps that do)."""
    import torch

    scaler = torch.amp.GradScaler(device, init_scale=1.0) if amp == "float16" else None

    def backward(loss: Any) -> None:
        (scaler.scale(loss) if scaler else loss).backward()

    def update() -> None:
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    return backward, update


def measure_steps_cuda(
    model: Any, inputs: Mapping[str, Any], optimizer: str = "adamw", steps: int = 2, amp: str | None = None
) -> MeasuredSteps:
    """Measure ``steps`` training steps of a model on the current CUDA device, phase by phase.

    ``model`` and ``inputs`` must already be on the device. The allocator's peak counters are reset
    before each phase and read after it (with the device synchronised), so each phase's peak is its own.
    With ``amp`` the forward runs under CUDA autocast, and float16 steps through a GradScaler.
    """
    import gc

    import torch

    name, kwargs = OPTIMIZERS[optimizer]
    model.zero_grad(set_to_none=True)
    gc.collect()
    torch.cuda.empty_cache()
    opt = getattr(torch.optim, name)(model.parameters(), **kwargs)
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    state: dict[str, Any] = {}

    backward_of, update = _stepping(opt, amp, "cuda")

    def forward() -> None:
        with measure.autocast(amp, "cuda"):
            output = model(**inputs)
            state["output"] = None if output.get("loss") is not None else output
            state["loss"] = measure.loss_of(output)

    def backward() -> None:
        backward_of(state.pop("loss"))
        state.pop("output", None)

    phases = []
    for step in range(1, steps + 1):
        for label, fn in (
            ("forward", forward),
            ("backward", backward),
            ("optimizer", update),
            ("zero_grad", lambda: opt.zero_grad(set_to_none=True)),
        ):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            fn()
            torch.cuda.synchronize()
            peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
            phases.append(Phase(step, label, start, peak, torch.cuda.memory_allocated(), reserved))
    return MeasuredSteps(baseline, tuple(phases))


def measure_steps(
    prepare: Callable[[], tuple[Any, Mapping[str, Any]]],
    optimizer: str = "adamw",
    steps: int = 2,
    amp: str | None = None,
) -> tuple[MeasuredSteps, Any, Mapping[str, Any]]:
    """Profile ``steps`` training steps of the model and inputs ``prepare`` builds (under the profiler,
    so that everything it allocates and frees counts: a data-parallel wrapper's buckets, a sharded
    model's full parameters freed); with ``amp`` (a 16-bit dtype name) the forward and loss run under CPU
    autocast, as Hugging Face's Trainer runs them, and float16 scales the loss and steps through a
    GradScaler. Returns the phases, the model and the inputs."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    def phase(label: str, fn: Callable[[], Any]) -> Any:
        with record_function(f"symbert::{label}"):
            return fn()

    def forward() -> tuple[Any, torch.Tensor]:
        with measure.autocast(amp):
            output = model(**inputs)
            return (None if output.get("loss") is not None else output), measure.loss_of(output)

    def step_backward(output: Any, loss: torch.Tensor) -> None:
        """Backward of the loss; the outputs and the loss are dropped when it returns, within the phase
        (as :func:`measure_steps_cuda` drops them)."""
        backward(loss)

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model, inputs = prepare()
        name, kwargs = OPTIMIZERS[optimizer]
        opt = getattr(torch.optim, name)(model.parameters(), **kwargs)
        backward, update = _stepping(opt, amp, "cpu")
        for step in range(1, steps + 1):
            held = {"outputs": phase(f"{step}:forward", forward)}
            phase(f"{step}:backward", lambda held=held: step_backward(*held.pop("outputs")))
            phase(f"{step}:optimizer", update)
            phase(f"{step}:zero_grad", lambda: opt.zero_grad(set_to_none=True))
    buffers = {measure.storage_of(b).data_ptr(): measure.storage_of(b).nbytes() for b in model.buffers()}
    phases = _phases(allocations(prof), -sum(buffers.values()))
    return MeasuredSteps(phases[0].start, tuple(phases)), model, inputs


SCRATCH_OPS = frozenset(
    {
        "aten::mm",
        "aten::bmm",
        "aten::addmm",
        "aten::baddbmm",
        "aten::addbmm",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
        "aten::native_layer_norm_backward",
        "aten::convolution",
        "aten::convolution_backward",
    }
)
"""The kernels that may take scratch from the CPU allocator and free it before they return: oneDNN's
matrix products and convolutions (how much depends on the CPU's instruction set, the dtype and the
thread count; a bfloat16 convolution's backward takes some), and
the per-thread buffers of the CPU flash attention and of LayerNorm's backward (the thread count)."""


@dataclass(frozen=True)
class Allocation:
    """One allocation (``nbytes`` > 0) or free (< 0) of the CPU allocator, as torch.profiler saw it."""

    time: int
    nbytes: int
    scratch: bool
    """Allocated and freed within one call of a kernel of :data:`SCRATCH_OPS`: its scratch."""


def allocations(prof: Any) -> tuple[list[Allocation], list[tuple[int, int, str]]]:
    """Every allocation and free a profile recorded, in time order, each marked as a kernel's scratch or
    not (allocated and freed within one call of a :data:`SCRATCH_OPS` kernel, directly or by the ops it
    calls); and the spans of the ``symbert::`` phases, in order. Read from the profiler's event tree,
    which gives each allocation its address and the ops it ran in."""
    events, spans, opened = [], [], {}
    stack = [(node, None) for node in prof.profiler.kineto_results.experimental_event_tree()]
    while stack:
        node, kernel = stack.pop()
        if node.typed[0].name == "Allocation":
            fields = node.typed[1]
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size, kernel))
            continue
        if node.name.startswith("symbert::"):
            spans.append((node.start_time_ns, node.end_time_ns, node.name.removeprefix("symbert::")))
        if node.name in SCRATCH_OPS:  # the outermost such call: its key
            kernel = kernel or (node.name, node.start_time_ns, node.end_time_ns)
        stack.extend((child, kernel) for child in node.children)
    events.sort(key=lambda e: e[0])
    scratch: set[int] = set()
    for i, (_, ptr, nbytes, kernel) in enumerate(events):
        if nbytes > 0:
            opened[ptr] = (i, kernel)
        elif ptr in opened:
            j, allocated_in = opened.pop(ptr)
            if kernel is not None and kernel == allocated_in:
                scratch.update((i, j))
    return [Allocation(t, n, i in scratch) for i, (t, _, n, _) in enumerate(events)], sorted(spans)


def _phases(profiled: tuple[list[Allocation], list[tuple[int, int, str]]], baseline: int) -> list[Phase]:
    """Each phase's memory from the allocations, with and without the kernels' scratch."""
    events, spans = profiled
    phases = []
    current = tensors = baseline
    i = 0
    for begin, end, label in spans:
        while i < len(events) and events[i].time < begin:
            current, tensors = current + events[i].nbytes, tensors + (0 if events[i].scratch else events[i].nbytes)
            i += 1
        start, high, high_tensors = current, current, tensors
        while i < len(events) and events[i].time <= end:
            current, tensors = current + events[i].nbytes, tensors + (0 if events[i].scratch else events[i].nbytes)
            high, high_tensors = max(high, current), max(high_tensors, tensors)
            i += 1
        step, name = label.split(":")
        phases.append(Phase(int(step), name, start, high, current, tensors=high_tensors))
    return phases


@dataclass(frozen=True)
class PeakCheck:
    """symbert's predicted peak over two training steps next to PyTorch's, on CPU in float32."""

    config: str
    batch: int
    seq_len: int
    optimizer: str
    predicted: int
    predicted_where: str
    measured: MeasuredSteps
    device: str = "cpu"
    predicted_reserved: int | None = None

    @property
    def error(self) -> float:
        """Relative error of the prediction, against the tensors' peak (:attr:`MeasuredSteps.tensors`)."""
        return (self.predicted - self.measured.tensors) / self.measured.tensors


def cuda_gpu() -> tuple[str | None, str | None]:
    """The current CUDA device as a key of :data:`symbert.gpus.GPUS` (by name, else an sm90 stand-in,
    else None), and ``CUBLAS_WORKSPACE_CONFIG`` from the environment."""
    import os

    import torch

    from symbert.gpus import GPUS

    name = torch.cuda.get_device_name()
    key = next((g.key for g in GPUS.values() if g.name == name), None)
    if key is None and torch.cuda.get_device_capability() == (9, 0):
        key = "h100"
    return key, os.environ.get("CUBLAS_WORKSPACE_CONFIG")


def check_peak(
    config: Config,
    batch: int,
    seq_len: int,
    optimizer: str = "adamw",
    device: str = "cpu",
    attention: str = "eager",
    amp: str | None = None,
) -> PeakCheck:
    """Predict (policy torch-cpu, or torch-cuda with its runtime) and measure the peak of two training
    steps of ``config`` on ``device``, with ``attention`` (``eager`` or ``sdpa``) predicted and measured
    alike; float32, or with ``amp`` under autocast to that dtype; one token padded when the config models
    padding (:func:`symbert.validate.hf.padded`)."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.api import trace
    from symbert.symbols import B
    from symbert.symbols import seq_len as S
    from symbert.training.states import Training
    from symbert.training.step import reserved, step_memory

    values = {**config.symbols(), B: batch, S: seq_len}
    graph = trace(config)
    precision = "amp" if amp else "fp32"
    if device == "cuda":
        gpu, workspace = cuda_gpu()
        memory = MemoryOptions("torch-cuda", amp, attention)
        training = Training(optimizer, precision, memory, gpu, workspace)
    else:
        training = Training(optimizer, precision, MemoryOptions("torch-cpu", amp, attention))
    peak = step_memory(graph, training, values).peak(values)
    if device == "cuda":
        model, inputs = hugging_face(config, batch, seq_len, "float32", attention, device)
        measured = measure_steps_cuda(model, inputs, optimizer, amp=amp)
        estimate = reserved(graph, training, values)
    else:
        built = measure_steps(lambda: hugging_face(config, batch, seq_len, "float32", attention), optimizer, amp=amp)
        measured, estimate = built[0], None
    return PeakCheck(config.name, batch, seq_len, optimizer, peak.total, peak.where, measured, device, estimate)


def main() -> None:
    """``python -m symbert.validate.peak PRESET BATCH SEQ_LEN [OPTIMIZER [DEVICE]]``: predicted and measured."""
    import sys

    from symbert.configs import preset

    name, batch, length, *rest = sys.argv[1:]
    c = check_peak(preset(name), int(batch), int(length), *rest)
    print(
        f"{c.config} B={c.batch} seq_len={c.seq_len} {c.optimizer}: predicted {c.predicted:,} ({c.predicted_where}); "
        f"measured {c.measured.tensors:,} (step {c.measured.where.step} {c.measured.where.name}"
        f"; kernels' scratch {c.measured.scratch:,} more); "
        f"error {100 * c.error:+.3f}%"
    )


if __name__ == "__main__":
    main()
