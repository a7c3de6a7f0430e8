"""Backend policies: which of the tensors an op's autograd formula keeps are stored, and in what dtype.

Ops say what autograd keeps (:mod:`symbert.ops`); a policy resolves the dtype classes (``act``,
``mask``, ``stats``) to bytes and may ignore whole roles. Modifiers change the activation dtype, fuse
run attention as one SDPA kernel (sdpa, flash) or recompute regions instead of keeping what they save.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from symbert import defaults
from symbert.configs import ConfigError
from symbert.ir import ACT, MASK_DTYPE, STATS_DTYPE, Role
from symbert.models.spec import ModelSpec
from symbert.parallel import Layout

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "bool": 1}
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("eager", "sdpa", "flash")
#: The policy every command defaults to: PyTorch eager on CUDA, where Hugging Face users train.
DEFAULT_POLICY = defaults.POLICY
RECOMPUTE = ("none", "selective", "full")

#: The policies torch.autocast runs under, with the device whose autocast op lists apply.
AUTOCAST_DEVICES = {"torch-cpu": "cpu", "torch-cuda": "cuda"}
AMP_DTYPES = ("bfloat16", "float16")

#: The region model code marks around softmax(Q·Kᵀ)·V; selective recompute acts on it.
ATTENTION_CORE = "attention_core"

#: The region around Hugging Face's attention call: the core, then the heads transposed back and made
#: contiguous. ``--attention sdpa`` (and ``flash``) run it as one kernel (:mod:`symbert.analysis.sdpa`).
ATTENTION_CALL = "attention"


@dataclass(frozen=True)
class Policy:
    """How one backend stores what autograd keeps.

    ``mask`` and ``stats`` give the dtype of dropout masks and normalisation statistics; ``None`` means
    the activation dtype. ``device`` (``cpu`` or ``cuda``) decides which attention kernel sdpa runs.
    """

    name: str
    summary: str
    default_dtype: str
    mask: str | None
    stats: str | None
    ignored: frozenset[Role] = field(default_factory=frozenset)
    device: str = "cpu"
    regathers: bool = False
    """Under sequence parallelism a column-parallel linear keeps its input sharded along seq_len and
    all-gathers it again in backward (Megatron-LM), instead of keeping the gathered input (DTensor)."""


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy(
            "torch-cpu",
            "PyTorch eager on CPU: dropout keeps a noise tensor in the activation dtype; layernorm keeps "
            "its input, mean and rstd",
            "float32",
            mask=None,
            stats=None,
        ),
        Policy(
            "torch-cuda",
            "PyTorch eager on CUDA: fused dropout keeps a 1-byte bool mask; layernorm keeps float32 mean and rstd",
            "float32",
            mask="bool",
            stats="float32",
            device="cuda",
        ),
        Policy(
            "megatron",
            "Korthikanti et al. 2022: 2-byte activations, 1-byte dropout masks, layernorm statistics ignored",
            "bfloat16",
            mask="bool",
            stats=None,
            ignored=frozenset({Role.STATISTICS}),
            device="cuda",
            regathers=True,
        ),
    )
}


@dataclass(frozen=True)
class MemoryOptions:
    """A policy with its modifiers: activation dtype, attention kind and recomputation, and the
    :class:`~symbert.parallel.Layout` the job is spread over (one GPU by default).

    ``attention`` None stands for the family's default in Hugging Face, which :meth:`for_model` fills in;
    the passes take resolved options only."""

    policy: str = "torch-cpu"
    dtype: str | None = None
    attention: str | None = "eager"
    recompute: str = "none"
    amp: bool = False
    layout: Layout = field(default_factory=Layout)

    def __post_init__(self) -> None:
        for value, allowed, what in (
            (self.policy, tuple(POLICIES), "policy"),
            (self.dtype or "float32", DTYPES, "dtype"),
            (self.attention or "eager", ATTENTION, "attention"),
            (self.recompute, RECOMPUTE, "recompute"),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r} (choose from {', '.join(allowed)})")
        if self.amp:
            if self.policy not in AUTOCAST_DEVICES:
                raise ValueError(f"amp is torch.autocast: choose policy {' or '.join(AUTOCAST_DEVICES)}")
            if self.dtype not in AMP_DTYPES:
                raise ValueError(f"amp needs --dtype {' or '.join(AMP_DTYPES)} (the autocast dtype)")

    def for_model(self, spec: ModelSpec) -> MemoryOptions:
        """These options for a family: its Hugging Face default attention where none is named; a
        ConfigError, one line, where Hugging Face does not run the family so (:meth:`ModelSpec.check_runs`)."""
        options = self if self.attention is not None else replace(self, attention=spec.default_attention)
        try:
            spec.check_runs(options.attention, tensor_parallel=options.layout.tensor > 1)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return options

    @property
    def backend(self) -> Policy:
        return POLICIES[self.policy]

    @property
    def autocast_device(self) -> str | None:
        """The device whose autocast op lists apply, or None without amp."""
        return AUTOCAST_DEVICES[self.policy] if self.amp else None

    @property
    def activation_dtype(self) -> str:
        return self.dtype or self.backend.default_dtype

    def dtype_of(self, dtype: str) -> str:
        """The concrete dtype a tensor of dtype (class) ``dtype`` is stored in."""
        act = self.activation_dtype
        resolved = {ACT: act, MASK_DTYPE: self.backend.mask or act, STATS_DTYPE: self.backend.stats or act}
        return resolved.get(dtype, dtype)

    def bytes_of(self, dtype: str) -> int:
        return BYTES[self.dtype_of(dtype)]

    def describe(self) -> str:
        dtype = f"autocast {self.activation_dtype} over float32 weights" if self.amp else self.activation_dtype
        spread = "" if self.layout.single else f"; {self.layout.describe()}"
        attention = self.attention or "the model's default"
        return f"{self.policy}, {dtype}, {attention} attention, recompute {self.recompute}{spread}"
