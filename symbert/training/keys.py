"""Which instance of a tensor a reference from a block's run means: the keys the driver tracks storages by."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from symbert.analysis.activations import Saved
from symbert.ir import Graph, Node
from symbert.training.units import Unit

Key = tuple


class Keys:
    """Keys of tensor instances in a replay of ``runs`` runs of each block."""

    def __init__(self, graph: Graph, runs: Mapping[str, int]) -> None:
        self.graph, self.runs = graph, runs
        self._storages: dict[tuple[str, int | None], Key] = {}
        self._kept: dict[tuple[int, int | None], tuple[Saved, Key]] = {}  # by the id of a plan's item, and run

    def tensor_key(self, name: str, run: int | None) -> Key:
        """The tensor instance a reference from run ``run`` means: a block's input is the previous run's
        output, or in the first run the tensor the block starts from."""
        for block in self.graph.blocks.values():
            if name == block.input:
                return self.tensor_key(block.source, None) if run == 0 else (block.output, run - 1)
        t = self.graph.tensor(name)
        if t.block is None:
            return (name, None)
        return (name, self.runs[t.block] - 1 if run is None else run)

    def storage_key(self, name: str, run: int | None) -> Key:
        """The storage a tensor instance lives in: its own, or that of the tensor it views."""
        if (name, run) not in self._storages:
            instance, at = self.tensor_key(name, run)
            base = self.graph.tensor(instance).base
            self._storages[(name, run)] = (instance, at) if base is None else self.storage_key(base, at)
        return self._storages[(name, run)]

    def kept_key(self, item: Saved, run: int | None) -> Key:
        known = self._kept.get((id(item), run))
        if known is None or known[0] is not item:
            known = self._kept[(id(item), run)] = (item, self._kept_key(item, run))
        return known[1]

    def _kept_key(self, item: Saved, run: int | None) -> Key:
        if item.param is not None:
            return (f"{item.param}|{item.what}", self.param_key(item.node, item.param, run)[1])
        if item.tensor is None:
            return (f"{item.node.name}|{item.what}", run)
        return self.storage_key(item.tensor.name, run)

    def param_key(self, node: Node, name: str, run: int | None) -> Key:
        own = node.block is not None and not self.graph.blocks[node.block].shares_params
        return (name, run if own else None)

    def returns(
        self, units: list[Unit], rekey: Callable[[Key], Key], forward: bool
    ) -> tuple[dict[int, list[Key]], dict[int, set[str]]]:
        """What modules' Python locals hold past its last use (:attr:`symbert.ir.Graph.held`), by the
        unit (its ``id``) after which the module returns, for those among ``units``: a recomputed
        layer re-runs its forward and holds its own locals again; a block returns after its last run, in the
        forward pass. Also by unit, the blocks whose runs' tensors it holds past the block's end."""
        out: dict[int, list[Key]] = {}
        past: dict[int, set[str]] = {}
        for unit in units:
            for t, block_until, beyond in unit.op.returns:
                if block_until and not (forward and unit.run == self.runs[unit.op.block] - 1):
                    continue
                block = self.graph.tensor(t).block
                runs = range(self.runs[block]) if beyond else [unit.run]
                out.setdefault(id(unit), []).extend(rekey(self.storage_key(t, run)) for run in runs)
                if beyond:
                    past.setdefault(id(unit), set()).add(block)
        return out, past

