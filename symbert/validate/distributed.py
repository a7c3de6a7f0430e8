"""Real multi-process training on CPU: one process per rank, torch.distributed over gloo.

A :class:`~symbert.parallel.Layout` says how the model is spread, the way people apply each method:

* data parallelism with ZeRO 0: ``DistributedDataParallel`` with its defaults (25 MiB buckets, gradients
  copied into them, not bucket views); the weights are equal on every rank, so its first broadcast is
  skipped (``init_sync=False``);
* data parallelism with ZeRO 3: FSDP2, ``fully_shard`` on every encoder layer, then on the root;
* tensor parallelism: ``parallelize_module`` on a one-dimensional ``DeviceMesh`` with Megatron's plan
  (the family's ``tensor_plan``, the one the prediction traces under: :func:`module_plan`), each rank
  cutting its own shards; the word embeddings split by vocabulary (``RowwiseParallel`` of an embedding,
  its output all-reduced). Each self-attention module is told its local
  head count, A/t heads of H/t columns (``num_attention_heads``, ``all_head_size``), as torch's
  tensor-parallel tutorial does for Llama; Hugging Face's BERT reshapes with ``-1`` heads, so its forward
  follows the local width anyway.

Every rank takes the same micro-batch (``--batch``). Each measures what it holds (see
:mod:`symbert.validate.measure`: a DTensor counts its local storage): parameter elements, the bytes one
training forward saves for backward, and two training steps phase by phase
(:func:`symbert.validate.peak.measure_steps`, with the model built and spread under the profiler).
"""

from __future__ import annotations

import os
import pickle
import re
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from symbert.configs import Config, ConfigError
from symbert.parallel import Layout
from symbert.validate import measure
from symbert.validate.hf import hugging_face
from symbert.validate.peak import MeasuredSteps, measure_steps

#: An encoder layer, which FSDP2 shards as one unit: ``encoder.layer.3``, ``transformer.layer.0``.
LAYER = re.compile(r"(^|\.)layer\.\d+$")


@dataclass(frozen=True)
class RankMeasurement:
    """What one rank holds."""

    rank: int
    params: int
    """Parameter elements held (local shards, as stored)."""
    saved: int
    """Bytes one training forward saves for backward."""
    steps: MeasuredSteps


def kind(layout: Layout) -> str:
    """Which real run ``layout`` is: ``ddp``, ``fsdp`` or ``tensor``; a ConfigError for the others."""
    if layout.pipeline > 1 or layout.sequence:
        raise ConfigError("validate runs data or tensor parallelism; pipeline and sequence parallelism are not run")
    if layout.tensor > 1 and layout.data > 1:
        raise ConfigError("validate runs one kind at a time: --data-parallel or --tensor-parallel, not both")
    if layout.tensor > 1:
        return "tensor"
    if layout.zero not in (0, 3):
        raise ConfigError(f"validate runs ZeRO 0 (DDP) or 3 (FSDP2 fully_shard), not ZeRO {layout.zero}")
    return "ddp" if layout.zero == 0 else "fsdp"


def describe(layout: Layout) -> str:
    """The real run ``layout`` stands for, in words."""
    return {
        "ddp": f"{layout.data} ranks, DistributedDataParallel",
        "fsdp": f"{layout.data} ranks, FSDP2 fully_shard per encoder layer and on the root",
        "tensor": f"{layout.tensor} ranks, tensor parallel (ColwiseParallel / RowwiseParallel)",
    }[kind(layout)]


def check_runnable(config: Config, layout: Layout) -> None:
    """A ConfigError unless torch.distributed with gloo can run ``layout`` on ``config``'s model."""
    from symbert.api import trace
    from symbert.training.states import check_unused

    how = kind(layout)
    try:
        import torch.distributed as dist
    except ImportError:
        raise ConfigError("validate needs the validate extra: pip install 'symbert[validate]'") from None
    if not (dist.is_available() and dist.is_gloo_available()):
        raise ConfigError("this PyTorch has no torch.distributed with the gloo backend")
    if how == "tensor":
        if config.head is not None:
            raise ConfigError("tensor-parallel validation runs the bare encoder: drop --head")
        if config.model not in ("bert", "roberta"):
            raise ConfigError(f"tensor-parallel validation splits Hugging Face BERT's layers, not {config.model}'s")
        heads = config.values["num_attention_heads"]
        if heads % layout.tensor:
            raise ConfigError(f"--tensor-parallel {layout.tensor} does not divide the {heads} attention heads")
        for key in ("intermediate_size", "vocab_size"):
            if config.values[key] % layout.tensor:
                raise ConfigError(f"--tensor-parallel {layout.tensor} does not divide {key}={config.values[key]}")
    check_unused(trace(config), layout)  # DDP fails on a parameter that gets no gradient


def module_plan(model: Any, plan: Mapping[str, str]) -> dict[str, str]:
    """A family's tensor-parallel plan (scope → style) as ``parallelize_module`` takes it: the model's
    module names, layer indices and all, whose scope (the name without its indices, as symbert's scopes
    follow Hugging Face's names) the plan splits."""
    return {
        name: plan[scope]
        for name, _ in model.named_modules()
        if (scope := "/".join(part for part in name.split(".") if not part.isdigit())) in plan
        and plan[scope] != "sequence"
    }


def spread(model: Any, layout: Layout, plan: Mapping[str, str]) -> Any:
    """``model`` spread over the process group as ``layout`` says (module docstring), tensor parallelism
    under the family's ``plan``: the model to train."""
    import torch.distributed as dist

    how = kind(layout)
    if how == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, init_sync=False)
    if how == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for name, module in model.named_modules():
            if LAYER.search(name):
                fully_shard(module)
        return fully_shard(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    t = dist.get_world_size()
    styles = {
        "colwise": ColwiseParallel,
        "rowwise": RowwiseParallel,
        "vocab": lambda: RowwiseParallel(input_layouts=Replicate()),
    }
    styled = {name: styles[style]() for name, style in module_plan(model, plan).items()}
    for name, module in model.named_modules():
        if name.endswith("attention.self"):
            module.num_attention_heads //= t
            module.all_head_size //= t
    return parallelize_module(model, init_device_mesh("cpu", (t,)), styled, src_data_rank=None)


def _rank(
    rank: int,
    world: int,
    port: int,
    config: Config,
    batch: int,
    seq_len: int,
    layout: Layout,
    optimizer: str,
    folder: str,
) -> None:
    """One rank: join the group, measure, write its :class:`RankMeasurement` to ``folder``."""
    import torch
    import torch.distributed as dist

    from symbert.models import MODELS

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:

        def prepare() -> tuple[Any, dict[str, Any]]:
            model, inputs = hugging_face(config, batch, seq_len, "float32")
            return spread(model, layout, MODELS[config.model].tensor_plan), inputs

        steps, model, inputs = measure_steps(prepare, optimizer)
        params = measure.count_parameters(model)  # before a forward unshards FSDP2's root
        result = RankMeasurement(rank, params, measure.measure_saved_bytes(model, inputs), steps)
        Path(folder, f"{rank}.pickle").write_bytes(pickle.dumps(result))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_ranks(
    config: Config, batch: int, seq_len: int, layout: Layout, optimizer: str = "adamw"
) -> list[RankMeasurement]:
    """Fork ``layout.gpus`` processes from this one (gloo over 127.0.0.1 and a free port), run
    ``config``'s Hugging Face model spread as ``layout`` says, and return what each rank measured."""
    import torch.multiprocessing as mp

    check_runnable(config, layout)
    world = layout.gpus
    with tempfile.TemporaryDirectory() as folder:
        try:
            mp.start_processes(
                _rank,
                args=(world, _free_port(), config, batch, seq_len, layout, optimizer, folder),
                nprocs=world,
                start_method="fork",
            )
        except mp.ProcessRaisedException as exc:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            raise ConfigError(f"a rank failed: {lines[-1].strip()}") from None
        except mp.ProcessExitedException as exc:
            raise ConfigError(f"a rank died: {exc}") from None
        return [pickle.loads(Path(folder, f"{r}.pickle").read_bytes()) for r in range(world)]


#: The training-step peak's allowed relative error per rank, for DDP and tensor parallelism. Gloo moves
#: data in its own buffers, outside PyTorch's allocator: neither measured nor predicted. What PyTorch
#: allocates for communication is measured (DDP's buckets, all-reduce outputs); the tolerance is that of
#: the single-process CPU peak, for the allocator's small transients.
PEAK_TOLERANCE = 0.02

#: What each kind of run does that the comparison must be read with.
NOTES = {
    "ddp": "DDP's buckets (one float32 copy of every gradient) are in the prediction and the measurement",
    "fsdp": (
        "FSDP2's peak is shown, not checked: gloo's worker threads sometimes drop the last reference to an "
        "all-gather output, and the profiler sees no free made on a thread it does not follow, so the "
        "measured peak can keep a layer's gathered parameters after they are gone (never less than the truth)"
    ),
    "tensor": (
        "torch's RowwiseParallel embedding returns a Replicate gradient: every rank holds the whole "
        "word-embedding gradient until zero_grad (the torch engine's convention; Megatron's holds its shard)"
    ),
}


def compare_ranks(
    config: Config, batch: int, seq_len: int, layout: Layout, ranks: list[RankMeasurement], optimizer: str = "adamw"
) -> list[list[Any]]:
    """Per rank, the per-GPU prediction of ``layout`` (policy torch-cpu, float32, eager attention, the
    torch ZeRO engine: DDP's buckets, FSDP2's padded dim-0 shards) against that rank's measurement:
    parameter elements held and saved bytes exactly, the training-step peak within
    :data:`PEAK_TOLERANCE` (FSDP2's shown, not checked: :data:`NOTES`)."""
    import sympy

    from symbert.analysis.policy import MemoryOptions
    from symbert.analysis.report import report
    from symbert.api import per_gpu
    from symbert.symbols import B
    from symbert.symbols import seq_len as S
    from symbert.training.states import Training
    from symbert.training.step import step_memory
    from symbert.validate.compare import Check

    memory = MemoryOptions("torch-cpu", layout=layout)
    training = Training(optimizer, "fp32", memory, engine="torch")
    graph, sizes = per_gpu(config, layout, seq_len)
    values = {**sizes, B: batch, S: seq_len}
    params = int(sympy.sympify(training.sharding.elements(graph, "weights")).subs(values))
    saved = report(config, batch, seq_len, memory).value("activation_bytes")
    peak = step_memory(graph, training, values).peak(values).total
    tolerance = None if kind(layout) == "fsdp" else PEAK_TOLERANCE
    return [
        [
            Check("params", params, rank.params),
            Check("activation_bytes", saved, rank.saved),
            Check(f"peak (step {rank.steps.where.step} {rank.steps.where.name})", peak, rank.steps.peak, tolerance),
        ]
        for rank in ranks
    ]


def validate_ranks(
    config: Config, batch: int, seq_len: int, layout: Layout, optimizer: str = "adamw"
) -> list[list[Any]]:
    """Run ``layout`` for real (:func:`measure_ranks`) and compare every rank (:func:`compare_ranks`)."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.analysis.report import report
    from symbert.validate.compare import check_size

    check_runnable(config, layout)
    check_size(report(config, batch, seq_len, MemoryOptions("torch-cpu")))  # each rank builds the whole model
    ranks = measure_ranks(config, batch, seq_len, layout, optimizer)
    return compare_ranks(config, batch, seq_len, layout, ranks, optimizer)
