"""Training setups and the model states they keep.

A :class:`Training` names the optimizer, the precision and the activation policy. Model states are the
parameter count (:func:`symbert.params`) times bytes per parameter, from a small table per optimizer
and precision (ZeRO's convention: mixed-precision Adam keeps 2 + 2 + 12 bytes). How the backend runs
the optimizer step (:data:`IMPLEMENTATIONS`) decides Adam's per-tensor step counters and temporaries.
Over d data-parallel GPUs, ZeRO shards them as the engine does (:mod:`symbert.training.zero`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import sympy

from symbert import defaults
from symbert.analysis.policy import MemoryOptions
from symbert.configs import ConfigError
from symbert.ir import Graph
from symbert.models.spec import ModelSpec
from symbert.parallel import Layout
from symbert.training.runtime import Runtime, cuda_runtime
from symbert.training.zero import ZeroPlan, engine, pieces
from symbert.versions import modelled

#: Memory categories in stacking order, with their labels.
CATEGORIES = {
    "weights": "weights",
    "gradients": "gradients",
    "optimizer": "optimizer states",
    "attention": "seq_len² activations",
    "activations": "other activations",
    "runtime": "CUDA runtime",
}
#: Adam's implementations in torch.optim, named as ``--optimizer adamw-fused``; plain ``adam`` and
#: ``adamw`` are what torch.optim picks by itself on the device (:data:`DEVICE_IMPLEMENTATION`).
ADAM_IMPLEMENTATIONS = ("fused", "foreach", "single")
OPTIMIZERS = (
    "sgd",
    "momentum",
    *(f"{adam}{suffix}" for adam in ("adam", "adamw") for suffix in ("", *(f"-{i}" for i in ADAM_IMPLEMENTATIONS))),
)
#: What Hugging Face's Trainer runs by default (``optim="adamw_torch_fused"`` on torch >= 2.8).
DEFAULT_OPTIMIZER = defaults.OPTIMIZER
PRECISIONS = ("fp32", "mixed", "amp")


@dataclass(frozen=True)
class Precision:
    """Bytes per parameter of the weights and gradients, and of an fp32 master copy (mixed precision)."""

    weights: int
    gradients: int
    master: int


#: amp is torch.autocast: the weights, their gradients and the optimizer stay float32; the 16-bit
#: weight copies autocast makes are activation-like (:mod:`symbert.analysis.autocast`).
PRECISION = {"fp32": Precision(4, 4, 0), "mixed": Precision(2, 2, 4), "amp": Precision(4, 4, 0)}

#: torch.amp.GradScaler (fp16 autocast) keeps on the device a float32 scale and an int32 growth
#: tracker (``_lazy_init_scale_growth_tracker``), and during the step a float32 found-inf flag per
#: device (``unscale_``), held in the optimizer's state until ``update``. A fused optimizer unscales
#: inside its kernel: ``GradScaler.step`` then hands it two more float32 scalars, the flags' sum
#: (``found_inf``) and the scale (``grad_scale``), alive through the step.
GRAD_SCALER_BYTES = 4 + 4
FOUND_INF_BYTES = 4

#: A 0-dim float32 loss: a bare model's (the sum of its outputs, which the caller differentiates), the
#: gradient backward seeds it with, or GradScaler's scaled copy.
LOSS_BYTES = 4

#: fp32 optimizer state per parameter, created at the first update: SGD's momentum, Adam's two moments.
STATE_BYTES = {"sgd": 0, "momentum": 4, "adam": 8}

#: Adam's update math runs in fp32, whatever the weights' precision.
UPDATE_BYTES = 4


@dataclass(frozen=True)
class Implementation:
    """How the optimizer step runs, which decides Adam's temporaries and where its step counters live.

    ``for-loop`` (torch's single-tensor Adam) updates one parameter at a time: the square root and the
    denominator of the current parameter, and the previous parameter's denominator (still referenced),
    are alive at once. ``foreach`` takes the square root of every parameter at once. ``fused`` (torch's
    ``_fused_adamw_``, Megatron's fused Adam) updates in place and allocates nothing.
    ``step_on_device`` says whether Adam's per-tensor step count (a float32 scalar) is allocated on the
    device: torch keeps it on the CPU unless fused (or capturable); Megatron keeps one per group.
    """

    name: str
    temporaries: str
    step_on_device: bool


IMPLEMENTATIONS = {
    "single": Implementation("single-tensor", "for-loop", False),
    "foreach": Implementation("foreach", "foreach", False),
    "fused": Implementation("fused", "fused", True),
    "megatron": Implementation("Megatron's fused", "fused", False),
}

#: What plain ``adam`` and ``adamw`` run under each policy: torch.optim picks foreach on CUDA and the
#: single-tensor loop on CPU (``_default_to_fused_or_foreach``); Megatron runs its fused Adam.
DEVICE_IMPLEMENTATION = {"torch-cpu": "single", "torch-cuda": "foreach", "megatron": "megatron"}

#: Bytes of one step count.
STEP_BYTES = 4

#: On CPU, an op of a float32 tensor with a Python number wraps the number as a float64 scalar tensor
#: and casts it to float32 (TensorIterator's type promotion): 8 + 4 bytes, alive while Adam's step
#: increments its counts (fused) and at each of its temporaries' highest points (foreach, single-tensor).
CPU_SCALAR_BYTES = 8 + 4


@dataclass(frozen=True)
class Training:
    """What a training step runs: optimizer, precision, and the activation policy and modifiers.

    Mixed precision stores activations in bfloat16 unless ``memory`` names a dtype; amp runs the
    forward under torch.autocast to ``memory``'s dtype (bfloat16 unless named). ``gpu`` names a GPU of
    :data:`symbert.gpus.GPUS` and ``cublas_workspace_config`` a ``CUBLAS_WORKSPACE_CONFIG``; both
    matter under the torch-cuda policy only (:attr:`runtime`). ``engine`` names the ZeRO convention
    (:data:`symbert.training.zero.ENGINES`; by default the policy's) used over d > 1 GPUs.
    """

    optimizer: str = "adamw"
    precision: str = "fp32"
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    gpu: str | None = None
    cublas_workspace_config: str | None = None
    engine: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r} (choose from {', '.join(OPTIMIZERS)})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        if self.precision == "amp" and self.memory.dtype == "float32":
            raise ValueError("amp precision needs a 16-bit --dtype, the autocast dtype (bfloat16 or float16)")
        if self.precision in ("mixed", "amp") and self.memory.dtype is None:
            object.__setattr__(self, "memory", replace(self.memory, dtype="bfloat16"))
        if self.memory.amp != (self.precision == "amp"):
            object.__setattr__(self, "memory", replace(self.memory, amp=self.precision == "amp"))
        cuda_runtime(self.gpu, self.cublas_workspace_config)  # unknown GPU or bad config: ValueError
        layout, convention = self.memory.layout, engine(self.engine, self.memory.policy)
        if layout.data > 1 and layout.zero not in convention.stages:
            stages = ", ".join(f"{k} ({v})" for k, v in convention.stages.items())
            raise ValueError(f"the {convention.name} engines have no ZeRO stage {layout.zero}: choose {stages}")

    def for_model(self, spec: ModelSpec) -> Training:
        """This setup for a family: its default attention filled in, and a ConfigError, one line, for an
        attention kernel, precision or layout Hugging Face does not run it with."""
        try:
            spec.check_runs(precision=self.precision)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return replace(self, memory=self.memory.for_model(spec))

    @property
    def sharding(self) -> ZeroPlan:
        """How the model states are spread over the data-parallel GPUs."""
        layout = self.memory.layout
        return ZeroPlan(engine(self.engine, self.memory.policy), layout.zero, layout.data > 1)

    @property
    def grad_scaler(self) -> bool:
        """fp16 autocast trains with a GradScaler (bf16 needs none)."""
        return self.precision == "amp" and self.memory.dtype == "float16"

    @property
    def step_scalars(self) -> int:
        """How many float32 scalars GradScaler holds on the device through the optimizer step."""
        if not self.grad_scaler:
            return 0
        return 3 if self.adam and self.implementation.temporaries == "fused" else 1

    @property
    def bytes(self) -> Precision:
        return PRECISION[self.precision]

    @property
    def algorithm(self) -> str:
        """The optimizer without its implementation: sgd, momentum or adam (AdamW keeps what Adam keeps)."""
        return "adam" if self.adam else self.optimizer

    @property
    def implementation(self) -> Implementation:
        """How Adam's step runs: the one the optimizer names, else the one torch.optim picks on the device."""
        _, _, suffix = self.optimizer.partition("-")
        return IMPLEMENTATIONS[suffix or DEVICE_IMPLEMENTATION[self.memory.policy]]

    @property
    def step_counter(self) -> int:
        """Bytes of the step count Adam keeps per parameter tensor on the device: on CPU the counts are
        on the device whatever the implementation."""
        on_device = self.implementation.step_on_device or self.memory.backend.device == "cpu"
        return STEP_BYTES if self.adam and on_device else 0

    @property
    def runtime(self) -> Runtime | None:
        """The device runtime the replay consults: CUDA's under the torch-cuda policy, else none."""
        if self.memory.policy != "torch-cuda":
            return None
        return cuda_runtime(self.gpu, self.cublas_workspace_config)

    @property
    def adam(self) -> bool:
        return self.optimizer.startswith("adam")

    def describe(self) -> str:
        runtime = self.runtime
        device = f"; {runtime.describe()}" if runtime else "; no device runtime modelled"
        scaler = " with GradScaler" if self.grad_scaler else ""
        zero = f"; {self.sharding.describe()}" if self.sharding.spread else ""
        optimizer = f"{self.optimizer} ({self.implementation.name})" if self.adam else self.optimizer
        return f"{optimizer}, {self.precision} precision{scaler}; {self.memory.describe()}{zero}{device}; {modelled()}"


def check_unused(graph: Graph, layout: Layout) -> None:
    """A ConfigError, one line naming the config key, where a parameter gets no gradient
    (:attr:`symbert.ir.Param.trained`) and ``layout`` trains over a data-parallel group (d > 1): DDP fails
    on such a parameter unless ``find_unused_parameters`` is set, and neither that nor how ZeRO treats the
    parameter is modelled."""
    if layout.data == 1:
        return
    for node in graph.nodes:
        for p in node.params:
            if not p.trained:
                raise ConfigError(
                    f"{node.attr('because')} leaves {p.name} without a gradient, on which DDP fails unless "
                    "find_unused_parameters is set, and ZeRO's handling of it is not modelled: --data-parallel 1 only"
                )


def model_states(graph: Graph, training: Training) -> dict[str, sympy.Expr]:
    """Weights, gradients and optimizer states in bytes per GPU, as formulas in the parameter symbols
    (and in d when they are sharded over d data-parallel GPUs).

    ``optimizer`` holds the master weights (mixed precision), GradScaler's scale and growth tracker
    (fp16 amp; ``scaler``, also given apart: made at the first ``scale()``) and the states created at the
    first update (``lazy``, also given apart), with Adam's per-tensor step counts where the implementation
    keeps them on the device (``counters``, also apart).
    ``gradients`` includes DDP's flat bucket copy of them (``buckets``, also given apart). A parameter that
    gets no gradient has weights only (:func:`check_unused` refuses it over a data-parallel group).
    """
    check_unused(graph, training.memory.layout)
    sharding = training.sharding
    weights, gradients, optimizer = (sharding.elements(graph, k) for k in ("weights", "gradients", "optimizer"))
    tensors = sympy.Add(*(x.count for x in pieces(graph) if x.param.trained))
    counters = training.step_counter * tensors
    scaler = GRAD_SCALER_BYTES if training.grad_scaler else 0
    lazy = sympy.expand(STATE_BYTES[training.algorithm] * optimizer + counters)
    buckets = sympy.expand(training.bytes.gradients * gradients) if sharding.buckets else sympy.S.Zero
    return {
        "weights": sympy.expand(training.bytes.weights * weights),
        "gradients": sympy.expand(training.bytes.gradients * gradients + buckets),
        "optimizer": sympy.expand(training.bytes.master * optimizer + lazy + scaler),
        "lazy": lazy,
        "scaler": sympy.Integer(scaler),
        "counters": sympy.expand(counters),
        "buckets": buckets,
    }


def setup_json(training: Training) -> dict[str, object]:
    """A training setup as the commands' JSON documents give it: the memory policy, activation dtype,
    attention kernel and recomputation, then the optimizer and the precision."""
    m = training.memory
    return {
        "policy": m.policy,
        "dtype": m.activation_dtype,
        "attention": m.attention,
        "recompute": m.recompute,
        "optimizer": training.optimizer,
        "precision": training.precision,
    }
