"""The walk of training steps over a :class:`~symbert.training.plan.Plan`, emitting the allocation events.

* forward walks the ops in order; every output that is not a view is an allocation, and a tensor
  that nothing keeps for backward (:func:`symbert.analysis.activations.saved`) is freed once its last
  reader has run. Model inputs are held by the caller throughout, model outputs (a task model: its loss
  alone) until backward ends;
* backward walks the ops in reverse, starting from a gradient of each model output; each op allocates
  its inputs' and parameters' gradients (:mod:`symbert.training.gradients`), then drops its outputs'
  gradients and what it kept. A recomputed region first re-runs its forward; an attention call under
  sdpa (or flash) is one fused op, the kernel's;
* ZeRO's all-gathers and reduce-scatters are :mod:`symbert.training.gathers`'; the model states and the
  optimizer step :mod:`symbert.training.optimizer`'s.

Under a device runtime each allocation is rounded, and the runtime's workspaces are allocated at the first
matmul of forward and of backward (recomputation runs on the backward thread) and stay. Placeholder ops
(inputs, buffers, outputs) compute nothing. The events (:mod:`symbert.training.events`) go to
:attr:`Driver.stream`, in order.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from symbert.analysis.sizes import size_of
from symbert.ir import Node, Param
from symbert.ops import OPS
from symbert.training.emitter import Buffer, Emitter
from symbert.training.events import Event, Steady, standing
from symbert.training.gathers import Gathers
from symbert.training.gradients import Gradients
from symbert.training.keys import Key
from symbert.training.optimizer import load, update
from symbert.training.plan import Plan
from symbert.training.states import LOSS_BYTES
from symbert.training.units import ROOT, Unit

Rekey = Callable[[Key], Key]


def _same(key: Key) -> Key:
    return key


class Driver(Emitter):
    """Walks ``steps`` training steps over a plan: :meth:`run` returns the ordered events."""

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.live: dict[Key, Buffer] = {}
        self.held: set[Key] = set()
        self.savers: dict[Key, int] = {}
        self.reads_left: dict[Key, int] = {}
        self.workspaces: set[str] = set()
        self.grads = Gradients(self)
        self.zero = Gathers(self, self.grads)

    def enter(self, unit: Unit, phase: str) -> None:
        """Run ``unit`` next: the cause of what follows, and where the runs not replayed stand."""
        block = unit.op.block
        self.cause, self.scope = unit.op.label, unit.op.node.scope
        if block is not None:
            self.hidden[block] = standing(unit.run, phase, block in self.plan.held_past)

    def workspace(self, unit: Unit) -> None:
        """The runtime's workspaces for this thread, at its first matmul (a fused region uses no cuBLAS)."""
        thread = "forward" if self.phase == "forward" else "backward"
        if not unit.op.matmul or thread in self.workspaces:
            return
        self.workspaces.add(thread)
        for w in self.plan.runtime.workspaces:
            if w.phase == thread:
                self.alloc(size_of(sympy.sympify(w.nbytes)), "runtime", None, "workspace", pad={})

    def keeps(self, unit: Unit, plain: bool, rekey: Rekey) -> list[tuple]:
        """What the unit keeps for backward (``plain``: as if nothing were recomputed), with its keys."""
        items = unit.op.kept_plain if plain else unit.op.kept
        return [(item, rekey(self.plan.keys.kept_key(item, unit.run))) for item in items]

    def maybe_free(self, key: Key) -> None:
        if key in self.live and key not in self.held and not self.savers.get(key) and not self.reads_left.get(key):
            self.release(self.live.pop(key))

    # ---- the steps

    def run(self, steps: int) -> list[Event]:
        plan = self.plan
        load(self)
        self.cause = "inputs"
        for node in plan.graph.nodes:
            if OPS[node.op].graph_input:
                for t in node.outputs:
                    key = plan.keys.storage_key(t, None)
                    self.live[key] = self.alloc(*plan.tensor_size(t), None)
                    self.held.add(key)
        self.record("inputs and weights")
        outputs = [u for u in plan.units if OPS[u.op.node.op].graph_output]
        for step in range(1, steps + 1):
            self.step, self.phase = step, "forward"
            self.hidden = dict.fromkeys(plan.graph.blocks, "none")
            for unit in plan.units:
                for _, key in self.keeps(unit, False, _same):
                    self.savers[key] = self.savers.get(key, 0) + 1
            held = dict.fromkeys(plan.keys.storage_key(t, u.run) for u in outputs for t in u.op.node.inputs)  # in order
            self.held |= held.keys()
            self.zero.gather(ROOT)
            self.forward(plan.units, False, _same)
            self.zero.drop_last_flat()
            if not plan.sharding.engine.root_stays:
                self.zero.reshard(ROOT)
            self.cause, self.scope = "loss", ""
            loss = size_of(sympy.Integer(LOSS_BYTES))
            losses = [self.alloc(loss, "activations", None) for _ in range(plan.graph.head == "model")]
            self.record("end of forward")
            self.stream.append(Steady("saved"))
            self.phase = "backward"
            self.zero.gather(ROOT)
            if step == 1 and plan.states["scaler"]:  # GradScaler's scale and growth tracker: its first scale()
                self.alloc(size_of(plan.states["scaler"]), "optimizer", None, "counted", {})
            self.cause, self.scope = "loss", ""
            losses += [self.alloc(loss, "activations", None) for _ in range(plan.losses - len(losses))]
            for unit in reversed(outputs):
                self.grads.loss_gradient(unit)
            self.backward()
            self.zero.post_backward(ROOT)
            self.zero.end_backward()
            self.held -= held.keys()
            for key in held:
                self.maybe_free(key)
            for buf in losses:
                self.release(buf)
            self.record("end of backward")
            self.stream.append(Steady("grads"))
            update(self, self.grads, self.zero, first=step == 1)
        return self.stream

    def forward(self, units: list[Unit], plain: bool, rekey: Rekey) -> None:
        """Run ``units`` forward, keying storages through ``rekey`` (recomputation makes new ones)."""
        plan, forward = self.plan, self.phase == "forward"
        units = [u for u in units if not u.op.placeholder]
        cache: dict[Key, Buffer] = {}
        self.reads_left = {}
        for unit in units:
            for t in unit.op.reads:
                key = rekey(plan.keys.storage_key(t, unit.run))
                self.reads_left[key] = self.reads_left.get(key, 0) + 1
        returns, past = plan.keys.returns(units, rekey, forward)
        for keys in returns.values():
            for key in keys:
                self.reads_left[key] = self.reads_left.get(key, 0) + 1
        for unit in units:
            op = unit.op
            self.enter(unit, "forward" if forward else "backward")
            layer = plan.unit_of(unit)
            if forward and layer != ROOT and plan.first_of[layer] is unit:
                self.zero.gather(layer)
            created = []
            for name, size, category, view, moves in op.outputs:
                key = rekey(plan.keys.storage_key(name, unit.run))
                buf = self.alloc(size, category, unit.owner)
                if moves:
                    buf.take(self.live[rekey(plan.keys.storage_key(op.node.inputs[0], unit.run))], view)
                self.live[key] = buf
                created.append(key)
            self.workspace(unit)  # cuBLAS makes its workspace at its first call, after the op's output
            for item, key in self.keeps(unit, plain, rekey):
                if item.tensor is None and key not in self.live:
                    self.live[key] = self.alloc(*plan.extra_size(item), unit.owner)
            for n, p in op.cached:  # autocast's cached 16-bit copies of the parameters
                key = ("autocast cache", *plan.keys.param_key(n, p.name, unit.run))
                if key not in cache:
                    cache[key] = self.alloc(plan.cache_size(p), "activations", (n.block, unit.run) if n.block else None)
            copies = [self.alloc(size, category, None) for size, category in op.transients]  # sdpa, promotions
            self.record(op.label if forward else f"recompute {op.label}", unit.owner)
            for buf in copies:
                self.release(buf)
            for t in op.reads:
                key = rekey(plan.keys.storage_key(t, unit.run))
                self.reads_left[key] -= 1
                self.maybe_free(key)
            for key in created:
                self.maybe_free(key)
            for block in past.get(id(unit), ()):  # the runs not replayed held them too, until now
                self.stream.append(Steady("holding", block))
                self.hidden[block] = "cached"
            for key in returns.get(id(unit), ()):
                self.reads_left[key] -= 1
                self.maybe_free(key)
            if forward and layer != ROOT and plan.last_of[layer] is unit and not plan.sharding.keeps_gathered:
                self.zero.reshard(layer)
        if forward:
            self.stream.append(Steady("cached"))
        for buf in cache.values():  # autocast's region ends: its cache is cleared
            self.release(buf)

    def backward(self) -> None:
        plan, done = self.plan, set()
        for unit in reversed(plan.units):
            if unit.op.placeholder:
                continue
            layer = plan.unit_of(unit)
            if layer != ROOT and plan.last_of[layer] is unit:
                self.zero.pre_backward(layer)
            region = unit.op.recompute
            if region is None:
                self.backward_unit(unit, False, _same)
            elif (region, unit.run) not in done:
                done.add((region, unit.run))
                self.grads.flush_casts()
                self.recompute(plan.regions[(region, unit.run)])
            if layer != ROOT and plan.first_of[layer] is unit:
                self.zero.post_backward(layer)
        self.grads.flush_casts()

    def recompute(self, region: list[Unit]) -> None:
        """Re-run a region's forward as if nothing were recomputed, run its backward, then drop its inputs."""
        run, graph = region[0].run, self.plan.graph
        names = {n.name for u in region for n in u.op.nodes}

        def rekey(key: Key) -> Key:
            name = str(key[0]).split("|")[0]
            producer = graph.tensors[name].producer if name in graph.tensors else name
            return ("recomputed", *key) if producer in names and key[1] == run else key

        for unit in region:
            for _, key in self.keeps(unit, True, rekey):
                self.savers[key] = self.savers.get(key, 0) + 1
        self.forward(region, True, rekey)
        for unit in reversed(region):
            self.backward_unit(unit, True, rekey)
        for unit in region:
            self.drop_kept(unit, False, _same)

    def drop_kept(self, unit: Unit, plain: bool, rekey: Rekey) -> None:
        for _, key in self.keeps(unit, plain, rekey):
            self.savers[key] -= 1
            self.maybe_free(key)

    def backward_unit(self, unit: Unit, plain: bool, rekey: Rekey) -> None:
        """Gradients for the unit's differentiable inputs and parameters, then drop what it no longer needs."""
        op, plan, grads = unit.op, self.plan, self.grads
        if grads.pending and not op.cast:
            grads.flush_casts()
        incoming = [plan.keys.tensor_key(t, unit.run) for t in op.writes]
        cast: list[tuple[Node, Param]] = []
        if any(key in grads.of for key in incoming):
            self.enter(unit, "backward")
            grads.relayout(unit, incoming)
            drops: list[Buffer] = []
            for t in op.grads:
                buf = (grads.passed(unit) if t in op.passes else None) or self.alloc(*plan.tensor_size(t), unit.owner)
                drops += grads.accumulate(plan.keys.tensor_key(t, unit.run), buf, t)
            self.workspace(unit)  # after the input's gradient, the output of the first product cuBLAS runs
            cast = op.casts
            low = {p.name: self.alloc(plan.cache_size(p), "gradients", None) for _, p in cast}
            for n in op.nodes:
                for p in n.params:
                    if p.name not in low:
                        drops += grads.param_gradient(n, p, unit)
            scratch = [self.alloc(size, "activations", None, "scratch", {}) for size in op.scratch]
            for buf in reversed(scratch):
                self.release(buf)
            peak = [self.alloc(size, category, None) for size, category in op.backward_transients]
            self.record(op.label, unit.owner)
            for buf in [*peak, *drops]:
                self.release(buf)
            for key in incoming:
                if key in grads.of:
                    self.release(grads.of.pop(key))
        self.drop_kept(unit, plain, rekey)
        if cast:
            # Under autocast the op's parameter gradients are 16-bit; the casts' backward turn them into
            # float32 after the cast of the op's input has run its own (the weight's, then the bias's).
            grads.pending = [(unit, n, p, low[p.name]) for n, p in cast]
            if not op.after_cast:
                grads.flush_casts()
        elif op.cast:
            grads.flush_casts()
