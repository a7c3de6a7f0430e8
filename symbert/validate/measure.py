"""Ground-truth measurements on real Hugging Face models: parameters, saved activations and FLOPs.

Everything here runs real PyTorch; ``torch`` and ``transformers`` (the ``validate`` extra) are imported
inside the functions so that this module imports without them.

Conventions shared by all functions:

* models and their inputs are built by :mod:`symbert.validate.hf`;
* "saved for backward" means the tensors that autograd nodes reachable from the model's outputs hold
  for the backward pass, counted by storage: a saved view keeps its whole base storage alive, and a
  storage saved several times is counted once. Parameter and buffer storages are not activations and
  are left out of the totals; the model inputs (token ids kept by embedding lookups) are counted;
* a DTensor (tensor parallelism, FSDP2) is counted by its local tensor's storage: what this process
  holds. A parameter is whatever parameter a running module holds at the moment it is saved, so FSDP2's
  gathered full weights count as parameters, not activations;
* FLOPs are what ``torch.utils.flop_counter.FlopCounterMode`` counts (matrix products and its SDPA
  kernel formulas), for one forward and for the backward of the loss: the model's own loss when it is
  given labels (a task model), else the sum of every floating output. The counter has no formula for
  the CPU flash kernel (``_scaled_dot_product_flash_attention_for_cpu`` and its backward); it is
  given the counter's own SDPA formulas, as for the CUDA kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SavedTensorRecord:
    """One tensor saved for backward by one autograd node."""

    node: str
    """Class name of the autograd node that saved it, e.g. ``AddmmBackward0``."""
    slot: str
    """Attribute of the node that holds it, e.g. ``_saved_mat1`` or ``_saved_result``."""
    module: str
    """Qualified name of the innermost module running when it was saved (``""`` for the root)."""
    shape: tuple[int, ...]
    dtype: str
    storage: int
    """Index of its storage; records that share a storage share the index."""
    storage_nbytes: int
    """Size of the whole storage the tensor lives in."""
    is_view: bool
    """Whether the tensor is a view of another tensor (``tensor._base`` is set)."""
    source: str
    """What owns the storage: ``"activation"``, ``"input"``, ``"parameter"`` or ``"buffer"``."""


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of ``tensor`` this process holds: a DTensor's local tensor (read without recording an
    autograd op), else the tensor itself."""
    return getattr(tensor, "_local_tensor", tensor)


def storage_of(tensor: torch.Tensor) -> Any:
    """The storage this process holds for ``tensor`` (:func:`local`)."""
    return local(tensor).untyped_storage()


def count_parameters(model: torch.nn.Module) -> int:
    """Parameter elements this process holds: each parameter storage once (tied parameters share one), a
    DTensor's local shard (FSDP2's as stored, padded to equal rows on every rank)."""
    storages = {storage_of(p).data_ptr(): storage_of(p).nbytes() // p.element_size() for p in model.parameters()}
    return sum(storages.values())


def _grad_outputs(output: Any) -> list[torch.Tensor]:
    """What the backward starts from: the loss when the model computed one, else every output that autograd
    can differentiate (e.g. last_hidden_state, pooler_output)."""
    import torch

    if getattr(output, "loss", None) is not None:
        return [output.loss]
    values = output.values() if isinstance(output, Mapping) else output
    return [v for v in values if isinstance(v, torch.Tensor) and v.requires_grad]


def loss_of(output: Any) -> torch.Tensor:
    """The scalar a training step differentiates: the model's loss, or the sum of its differentiable outputs."""
    return sum(t.sum() for t in _grad_outputs(output)) if getattr(output, "loss", None) is None else output.loss


def _graph_nodes(roots: list[torch.Tensor]) -> Iterator[Any]:
    """Every autograd node reachable from the ``grad_fn`` of ``roots``, each once."""
    seen: set[Any] = set()
    stack = [t.grad_fn for t in roots]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(fn for fn, _ in node.next_functions)


def autocast(amp: str | None, device: str = "cpu") -> Any:
    """``torch.autocast(device, dtype=amp)`` for a 16-bit dtype name, or a context that does nothing."""
    import contextlib

    import torch

    return torch.autocast(device, dtype=getattr(torch, amp)) if amp else contextlib.nullcontext()


def device_of(inputs: Mapping[str, torch.Tensor]) -> str:
    """The device type (``cpu``, ``cuda``) the inputs live on."""
    return next(iter(inputs.values())).device.type


def saved_tensor_records(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], amp: str | None = None
) -> list[SavedTensorRecord]:
    """Run one forward and describe every tensor saved for backward, in the order they were saved.

    ``amp`` names a 16-bit dtype to run the forward under CPU autocast (float32 weights).

    Only tensors held by autograd nodes reachable from the model's outputs are reported (anything
    saved by a part of the graph that was already freed does not occupy memory at backward time).
    Parameter and buffer storages are reported too, with their ``source``, but not counted by
    :func:`saved_bytes`.
    """
    import torch

    packed: list[tuple[str, torch.Tensor, bool]] = []
    module_stack: list[tuple[str, torch.nn.Module]] = [("", model)]

    def enter(name: str, module: torch.nn.Module) -> Callable[..., None]:
        return lambda *_: module_stack.append((name, module))

    def leave(*_: object) -> None:
        module_stack.pop()

    hooks = []
    for name, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(enter(name, module)))
        hooks.append(module.register_forward_hook(leave))

    def pack(tensor: torch.Tensor) -> int:
        running = {storage_of(p).data_ptr() for _, m in module_stack for p in m.parameters(recurse=False)}
        packed.append((module_stack[-1][0], tensor, storage_of(tensor).data_ptr() in running))
        return len(packed) - 1

    holders: dict[int, tuple[str, str]] = {}
    current = ("", "")

    def unpack(handle: int) -> torch.Tensor:
        holders.setdefault(handle, current)
        return packed[handle][1]

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack), autocast(amp, device_of(inputs)):
            output = model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()

    # Reading a node's saved attribute runs ``unpack``, which tells which node holds which tensor.
    for node in _graph_nodes(_grad_outputs(output)):
        for slot in dir(node):
            if slot.startswith("_saved_") or slot == "saved_tensors":
                current = (type(node).__name__, slot)
                getattr(node, slot)

    owners = {t.untyped_storage().data_ptr(): "input" for t in inputs.values()}
    owners |= {t.untyped_storage().data_ptr(): "buffer" for t in model.buffers()}
    owners |= {storage_of(p).data_ptr(): "parameter" for p in model.parameters()}
    storage_index: dict[int, int] = {}
    records = []
    for handle in sorted(holders):
        module, tensor, parameter = packed[handle]
        node, slot = holders[handle]
        storage = storage_of(tensor)
        records.append(
            SavedTensorRecord(
                node=node,
                slot=slot,
                module=module,
                shape=tuple(local(tensor).shape),
                dtype=str(tensor.dtype).removeprefix("torch."),
                storage=storage_index.setdefault(storage.data_ptr(), len(storage_index)),
                storage_nbytes=storage.nbytes(),
                is_view=local(tensor)._base is not None,
                source="parameter" if parameter else owners.get(storage.data_ptr(), "activation"),
            )
        )
    return records


def saved_bytes(records: list[SavedTensorRecord]) -> int:
    """Bytes held for backward by ``records``: each non-parameter, non-buffer storage counted once."""
    storages = {r.storage: r.storage_nbytes for r in records if r.source in ("activation", "input")}
    return sum(storages.values())


def measure_saved_bytes(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor], amp: str | None = None) -> int:
    """Bytes of activation memory one forward of ``model`` saves for backward (see module docstring),
    under CPU autocast to ``amp`` when given."""
    return saved_bytes(saved_tensor_records(model, inputs, amp))


def flop_breakdown(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[dict[str, int], dict[str, int]]:
    """FLOPs per aten op (e.g. ``"aten.addmm"``) of one forward and of the backward that follows it.

    The backward is that of the sum of every differentiable output, so that every output's
    gradient flows. Forward and backward are counted by two separate ``FlopCounterMode`` contexts.
    """
    import torch
    from torch.utils import flop_counter

    def forward_formula(query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    def backward_formula(grad: Any, query: Any, key: Any, value: Any, *_: Any, **__: Any) -> int:
        return flop_counter.sdpa_backward_flop_count(grad, query, key, value)

    aten = torch.ops.aten
    cpu_flash = {
        aten._scaled_dot_product_flash_attention_for_cpu: forward_formula,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward_formula,
    }

    def by_op(counter: flop_counter.FlopCounterMode) -> dict[str, int]:
        return {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}

    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_flash) as forward:
        output = model(**inputs)
    loss = loss_of(output)
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_flash) as backward:
        loss.backward()
    return by_op(forward), by_op(backward)


def measure_flops(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Total forward and backward FLOPs (matrix products, as ``FlopCounterMode`` counts them)."""
    forward, backward = flop_breakdown(model, inputs)
    return sum(forward.values()), sum(backward.values())
