"""ZeRO's traffic around each layer during the walk: all-gathers of sharded weights, reduce-scatters of gradients.

Over d data-parallel GPUs with ZeRO (:mod:`symbert.training.zero`), the model states are the GPU's shards;
under stage 3 each layer's parameters are all-gathered before its forward and its backward and freed after,
and under stages 2 and 3 a layer's gradients are reduce-scattered to shards when its backward ends.
"""

from __future__ import annotations

from symbert.analysis.sizes import size_of
from symbert.training.emitter import Buffer, Emitter
from symbert.training.gradients import Gradients
from symbert.training.keys import Key
from symbert.training.units import ROOT


class Gathers:
    """The gathered parameters and the gradient shards of a walk, allocated and freed through ``emitter``;
    ``grads`` the walk's gradients, which a reduce-scatter takes."""

    def __init__(self, emitter: Emitter, grads: Gradients) -> None:
        self.emitter, self.plan, self.grads = emitter, emitter.plan, grads
        self.sharding = self.plan.sharding
        self.gathered: dict[Key, Buffer] = {}
        self.flat: dict[Key, Buffer] = {}
        self.last_flat: Buffer | None = None
        self.grad_shards: list[Buffer] = []
        self.rs_input: Buffer | None = None

    def gather(self, unit: Key, prefetch: bool = False) -> None:
        """All-gather a sharding unit's full parameters (stage 3), unless they are gathered already.

        Where the engine copies out (FSDP2), the all-gather fills a flat buffer that is copied out into
        one buffer per parameter. In backward the flat buffer goes after the copy-out; in forward FSDP2
        keeps it until the next unit's copy-out (``all_gather_state``), or until the forward ends. A
        prefetched unit keeps its flat buffer until its backward starts."""
        params = self.plan.unit_params.get(unit[0])
        if not self.sharding.gathers or unit in self.gathered or not params:
            return
        emitter = self.emitter
        size = size_of(self.plan.training.bytes.weights * self.sharding.gathered(params))
        owner = None if unit == ROOT else unit
        copy_out = self.sharding.engine.copy_out
        emitter.cause, emitter.scope = f"all-gather {self.unit_name(unit)}", ""
        if prefetch:
            if copy_out and unit not in self.flat:
                self.flat[unit] = emitter.alloc(size, "weights", owner)
                emitter.record(f"all-gather {self.unit_name(unit)} (prefetch)", owner)
            return
        flat = self.flat.pop(unit, None) or (emitter.alloc(size, "weights", owner) if copy_out else None)
        self.gathered[unit] = emitter.alloc(size, "weights", owner)
        emitter.record(f"all-gather {self.unit_name(unit)}", owner)
        if emitter.phase == "forward":
            self.drop_last_flat()
            self.last_flat = flat
        elif flat is not None:
            emitter.release(flat)

    def drop_last_flat(self) -> None:
        """Free the flat buffer of the forward's last all-gather."""
        if self.last_flat is not None:
            self.emitter.release(self.last_flat)
            self.last_flat = None

    def reshard(self, unit: Key) -> None:
        """Free a unit's gathered parameters."""
        if unit in self.gathered:
            self.emitter.release(self.gathered.pop(unit))

    @staticmethod
    def unit_name(unit: Key) -> str:
        return "the root's parameters" if unit == ROOT else f"{unit[0]} parameters"

    def pre_backward(self, unit: Key) -> None:
        """Gather the unit for its backward, and prefetch the layers the engine gathers ahead."""
        self.gather(unit)
        block, run = unit
        for ahead in range(1, self.sharding.engine.prefetch + 1):
            if run - ahead >= 0:
                self.gather((block, run - ahead), prefetch=True)

    def post_backward(self, unit: Key) -> None:
        """Free the unit's gathered parameters; under stage 2 and 3 reduce-scatter its gradients to shards.

        Dim-0 shards (FSDP2): the padded gradients are copied into a reduce-scatter input, kept until the
        next unit's reduce-scatter (one buffer in flight), and this GPU's shard is the output. A flat
        partition (the paper, DeepSpeed) is allocated at the first reduction and holds every shard.
        """
        self.reshard(unit)
        params = self.plan.unit_params.get(unit[0])
        if not self.sharding.sharded("gradients") or not params:
            return
        emitter = self.emitter
        self.grads.flush_casts()
        params_ = self.grads.params
        grads = [params_.pop(k) for k in self.grads.unit_grads.pop(unit, []) if k in params_]
        nbytes, owner = self.plan.training.bytes.gradients, None if unit == ROOT else unit
        emitter.cause, emitter.scope = f"reduce-scatter gradients of {self.unit_name(unit)}", ""
        if self.sharding.engine.split == "dim0":
            if self.rs_input is not None:
                emitter.release(self.rs_input)
            self.rs_input = emitter.alloc(size_of(nbytes * self.sharding.gathered(params)), "gradients", None)
            self.grad_shards.append(emitter.alloc(size_of(nbytes * self.sharding.shard(params)), "gradients", owner))
        elif not self.grad_shards:
            partition = self.sharding.elements(self.plan.graph, "gradients")
            self.grad_shards.append(emitter.alloc(size_of(nbytes * partition), "gradients", None))
        emitter.record(f"reduce-scatter gradients of {self.unit_name(unit)}", owner)
        for buf in grads:
            emitter.release(buf)

    def end_backward(self) -> None:
        """The last reduce-scatter's input goes when backward ends."""
        if self.rs_input is not None:
            self.emitter.release(self.rs_input)
            self.rs_input = None
