"""The model states around the walk: loaded before the first step, the optimizer step, and ``zero_grad``.

The optimizer step creates the optimizer states at the first update (PyTorch allocates them lazily) and
allocates temporaries that depend on how the backend runs it (:data:`symbert.training.states.IMPLEMENTATIONS`);
``zero_grad(set_to_none=True)`` then frees the gradients. Under a device runtime each model state is rounded per
tensor (or per shard).
"""

from __future__ import annotations

import sympy

from symbert.analysis.sizes import Size, add_to, expr_of, scaled, size_of
from symbert.training.emitter import Buffer, Emitter
from symbert.training.events import State
from symbert.training.gathers import Gathers
from symbert.training.gradients import Gradients
from symbert.training.order import buffers, parameter_order
from symbert.training.plan import Plan
from symbert.training.states import (
    CPU_SCALAR_BYTES,
    FOUND_INF_BYTES,
    STATE_BYTES,
    STEP_BYTES,
    UPDATE_BYTES,
)


def state_pads(plan: Plan, per_element: int, what: str, tensors: int = 1) -> Size:
    """The rounding of ``tensors`` allocations of ``per_element`` bytes per element for each parameter, or
    for each of this GPU's shards of the model state ``what``."""
    key = (per_element, what, tensors)
    if key not in plan.state_pads:
        out: Size = {}
        if plan.runtime is not None and per_element and tensors:
            for elements, count in plan.sharding.local(plan.graph, what):
                add_to(out, scaled(plan.pad_of(size_of(per_element * elements)), count), tensors)
        plan.state_pads[key] = out
    return plan.state_pads[key]


def load(emitter: Emitter) -> None:
    """The model states before the first step: the weights (with the registered buffers under a device
    runtime), the optimizer states that exist before the first update (master weights; GradScaler's scale and
    growth tracker come at the first backward) and DDP's gradient buckets."""
    plan, states = emitter.plan, emitter.plan.states
    per_element = plan.training.bytes
    registered = buffers(plan)
    pads: Size = {}
    for _, nbytes in registered:
        add_to(pads, plan.pad_of(size_of(nbytes)))
    add_to(pads, state_pads(plan, per_element.weights, "weights"))
    weights = size_of(states["weights"] + sum(b for _, b in registered))
    emitter.alloc(weights, "weights", None, "state", pads, state=State("weights", per_element.weights))
    master = size_of(states["optimizer"] - states["lazy"] - states["scaler"])
    if master:
        pads = state_pads(plan, per_element.master, "optimizer")
        emitter.alloc(master, "optimizer", None, "state", pads, state=State("optimizer", per_element.master))
    if states["buckets"] != 0:
        emitter.alloc(size_of(states["buckets"]), "gradients", None, "counted", {})


def fp32_gradients(emitter: Emitter) -> Buffer | None:
    """DeepSpeed's float32 copy of the gradient partition, held through a mixed-precision update."""
    plan = emitter.plan
    sharding = plan.sharding
    if not (sharding.engine.fp32_gradients and sharding.sharded("optimizer") and plan.training.bytes.master):
        return None
    return emitter.alloc(size_of(UPDATE_BYTES * sharding.elements(plan.graph, "optimizer")), "gradients", None)


def create_states(emitter: Emitter) -> None:
    """The states the first update creates, and Adam's step counts where they live on the device."""
    plan, states = emitter.plan, emitter.plan.states
    tensors = STATE_BYTES[plan.training.algorithm] // UPDATE_BYTES
    lazy = size_of(states["lazy"] - states["counters"])
    if lazy:
        pads = state_pads(plan, UPDATE_BYTES, "optimizer", tensors)
        emitter.alloc(lazy, "optimizer", None, "state", pads, state=State("optimizer", UPDATE_BYTES, tensors))
    counters = states["counters"]
    if counters != 0:
        scalar, count = size_of(sympy.Integer(STEP_BYTES)), sympy.expand(counters / STEP_BYTES)
        pads = size_of(count * expr_of(plan.pad_of(scalar))) if plan.runtime is not None else {}
        emitter.alloc(size_of(counters), "optimizer", None, "counters", pads, requests=((scalar, count),))


def update(emitter: Emitter, grads: Gradients, zero: Gathers, first: bool) -> None:
    """The optimizer step, then zero_grad, which frees ``grads``' parameter gradients and ``zero``'s shards of
    them."""
    optimizer_step(emitter, first)
    zero_grad(emitter, [*grads.params.values(), *zero.grad_shards])
    grads.params.clear()
    zero.grad_shards.clear()
    grads.unit_grads.clear()


def optimizer_step(emitter: Emitter, first: bool) -> None:
    """What the optimizer step allocates and frees: the states at the first one, Adam's temporaries. It reads
    the plan alone, none of the walk's state."""
    plan, training = emitter.plan, emitter.plan.training
    emitter.phase, emitter.cause, emitter.scope = "optimizer", "optimizer step", ""
    held = training.step_scalars
    found_inf = None
    if held:
        pads = size_of(held * expr_of(plan.pad_of(size_of(sympy.Integer(FOUND_INF_BYTES)))))
        found_inf = emitter.alloc(size_of(sympy.Integer(FOUND_INF_BYTES * held)), "optimizer", None, "counted", pads)
    if first:
        create_states(emitter)
    partition = fp32_gradients(emitter)
    emitter.record("optimizer states created" if first else "optimizer step")
    kind = training.implementation.temporaries if training.adam else None
    scalars = CPU_SCALAR_BYTES if kind and training.memory.backend.device == "cpu" else 0
    if kind == "for-loop":
        previous = sympy.S.Zero
        for name, elements, run in parameter_order(plan):
            temporary(emitter, f"update {name}", run, size_of(UPDATE_BYTES * (2 * elements + previous) + scalars))
            previous = elements
    elif kind == "foreach":
        local = plan.sharding.elements(plan.graph, "optimizer")
        size, pads = size_of(UPDATE_BYTES * local + scalars), state_pads(plan, UPDATE_BYTES, "optimizer")
        temporary(emitter, "update, all parameters at once", None, size, pads, State("optimizer", UPDATE_BYTES))
    elif scalars:
        temporary(emitter, "step counts incremented", None, size_of(sympy.Integer(scalars)))
    if found_inf is not None:
        emitter.release(found_inf)
    if partition is not None:
        emitter.release(partition)


def zero_grad(emitter: Emitter, gradients: list[Buffer]) -> None:
    """``zero_grad(set_to_none=True)``: ``gradients`` freed, and no run not replayed holds any."""
    emitter.cause = "zero_grad"
    for buf in gradients:
        emitter.release(buf)
    emitter.hidden = dict.fromkeys(emitter.plan.graph.blocks, "none")
    emitter.record("zero_grad")


def temporary(emitter: Emitter, label: str, run: tuple[str, int | None] | None, size: Size, pads: Size | None = None,
              state: State | None = None) -> None:
    """A temporary of the update, alive at its highest point: a model state's worth of tensors (foreach), else
    bytes the replay counts without a request of their own."""
    buf = emitter.alloc(size, "optimizer", None, "state" if state else "counted", pads, state=state)
    emitter.record(label, run)
    emitter.release(buf)
