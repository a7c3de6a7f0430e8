"""The gradients alive during backward, as PyTorch's autograd holds them.

Each op allocates one gradient per differentiable input, except where PyTorch hands the incoming gradient
through (:attr:`symbert.ops.OpDef.grad_passes_through`: views of the same size, copies, additions of
same-shape tensors). Gradients reaching a tensor from several readers are summed in place when one of them
is not shared, else into a fresh tensor. Parameter gradients persist until ``zero_grad``.
"""

from __future__ import annotations

import sympy

from symbert.analysis.sizes import Size, expr_of, size_of
from symbert.ir import Node, Param
from symbert.symbols import settled
from symbert.training.emitter import Buffer, Emitter
from symbert.training.keys import Key
from symbert.training.units import Unit


class Gradients:
    """The gradients of tensors (:attr:`of`: summed as PyTorch sums them, dropped once used), of parameters
    (:attr:`params`: kept until ``zero_grad``, and by ZeRO unit in :attr:`unit_grads`) and autocast's 16-bit
    parameter gradients waiting for the backward of their casts (:attr:`pending`), allocated and freed
    through ``emitter``."""

    def __init__(self, emitter: Emitter) -> None:
        self.emitter, self.plan = emitter, emitter.plan
        self.of: dict[Key, Buffer] = {}
        self.params: dict[Key, Buffer] = {}
        self.unit_grads: dict[Key, list[Key]] = {}
        self.pending: list[tuple[Unit, Node, Param, Buffer]] = []
        self._copies: dict[tuple[sympy.Expr, str], Size] = {}  # a relayout copy's size, by bracket and tensor

    def loss_gradient(self, unit: Unit) -> None:
        """The loss hands each model output a gradient of its size; a task model's loss gets the seed
        itself (:attr:`~symbert.training.plan.Plan.losses`), or under GradScaler the unscaled gradient the
        scaling's backward makes."""
        t = unit.op.node.inputs[0]
        seeded = self.plan.graph.head != "model" and not self.plan.training.grad_scaler
        size, category = self.plan.tensor_size(t)
        key = self.plan.keys.tensor_key(t, unit.run)
        self.of[key] = self.emitter.alloc(size_of(sympy.S.Zero) if seeded else size, category, None)
        self.emitter.record(f"gradient of {unit.op.node.name}")

    def relayout(self, unit: Unit, incoming: list[Key]) -> None:
        """Where the op's output gradient comes back in another layout (``grad_copy_when``, :mod:`symbert.ops`)
        and no fused kernel made it (:attr:`~symbert.training.units.Op.relayout`): the copy into the op's own
        layout replaces the gradient, which goes."""
        copy = unit.op.relayout
        if copy is None:
            return
        for key, t in zip(incoming, unit.op.writes, strict=True):
            if key in self.of:
                size, category = self.plan.tensor_size(t)
                if (copy, t) not in self._copies:
                    self._copies[(copy, t)] = size_of(settled(copy * expr_of(size)))
                buf = self.emitter.alloc(self._copies[(copy, t)], category, unit.owner)
                self.emitter.release(self.of[key])
                self.of[key] = buf

    def passed(self, unit: Unit) -> Buffer | None:
        """The output gradient an op hands on unchanged to an input, with a new reference, if there is one."""
        buf = self.of.get(self.plan.keys.tensor_key(unit.op.node.outputs[0], unit.run))
        if buf is not None:
            buf.refs += 1
        return buf

    def accumulate(self, key: Key, buf: Buffer, name: str) -> list[Buffer]:
        """Sum ``buf`` into tensor ``key``'s gradient; returns the references to drop after the event.

        In place into whichever of the two is not shared, else into a new tensor.
        """
        old = self.of.get(key)
        if old is None:
            self.of[key] = buf
            return []
        if old.refs == 1:
            return [buf]
        if buf.refs == 1:
            self.of[key] = buf
            return [old]
        self.of[key] = self.emitter.alloc(*self.plan.tensor_size(name), old.owner)
        return [old, buf]

    def param_gradient(self, node: Node, p: Param, unit: Unit) -> list[Buffer]:
        """Allocate a parameter's gradient (as the engine holds it:
        :meth:`symbert.training.zero.ZeroPlan.gradient_numel`); returns it to drop when it is summed into an
        existing one."""
        key = self.plan.keys.param_key(node, p.name, unit.run)
        buf = self.emitter.alloc(self.plan.gradient_size(node, p), "gradients", unit.owner)
        if key in self.params:
            return [buf]
        self.params[key] = buf
        self.unit_grads.setdefault(self.plan.unit_of(unit), []).append(key)
        return []

    def flush_casts(self) -> None:
        """Run the backward of the casts of an op's parameters: each 16-bit gradient becomes float32."""
        pending, self.pending = self.pending, []
        for unit, node, p, low in pending:
            drops = self.param_gradient(node, p, unit)
            self.emitter.record(f"{unit.op.label}: {p.name} gradient to float32", unit.owner)
            for buf in [*drops, low]:
                self.emitter.release(buf)
