"""The order in which the model's parameters and registered buffers are allocated and stepped."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

import sympy

from symbert.analysis.policy import BYTES
from symbert.ir import Registered, numel
from symbert.training.keys import Key
from symbert.training.plan import Plan


def parameter_order(plan: Plan, every: bool = False) -> list[tuple[str, sympy.Expr, tuple[str, int | None] | None]]:
    """Every parameter tensor the optimizer steps once, in the order the model declares them:
    (name, elements on this GPU, run); a flat ZeRO partition is one tensor. ``every``: the parameters
    that get no gradient too (:attr:`symbert.ir.Param.trained`), which the optimizer skips."""
    sharding = plan.sharding
    sharded = sharding.sharded("optimizer")
    if sharded and sharding.engine.split == "flat":
        return [("the optimizer's partition", sharding.elements(plan.graph, "optimizer"), None)]
    seen: dict[Key, tuple[str, sympy.Expr, tuple[str, int | None] | None]] = {}
    for unit in plan.units:
        for n in unit.op.nodes:
            for p in (p for p in n.params if p.trained or every):
                key = plan.keys.param_key(n, p.name, unit.run)
                elements = sharding.shard([p]) if sharded else p.numel
                seen.setdefault(key, (p.name, elements, None if key[1] is None else unit.owner))
    order = plan.graph.parameter_order(list(dict.fromkeys(name for name, _, _ in seen.values())))
    runs = itertools.groupby(seen.values(), key=lambda item: item[2])  # each run of a block in turn
    return [item for _, same in runs for item in sorted(same, key=lambda item: order.index(item[0]))]


def buffers(plan: Plan) -> list[tuple[str, sympy.Expr]]:
    """The modules' registered buffers (:attr:`symbert.ir.Graph.registered`), name and bytes, under a device
    runtime, where they sit on the device beside the parameters (the CPU measurements count only what
    the steps allocate); none otherwise."""
    if plan.runtime is None:
        return []
    return [(f"{module}.{name}" if module else name, numel(shape) * BYTES[dtype])
            for module, registered in plan.graph.registered.items() for name, shape, dtype in registered.buffers]


def load_order(plan: Plan) -> list[tuple[sympy.Expr, bool]]:
    """Every parameter (elements; one that gets no gradient too) and the registered buffers (bytes, marked
    True) in the order ``Module.to`` visits them: a module's children first, each in turn (in the order the
    module registers them where it says so, else as the forward first uses them), then its own parameters,
    then its buffers. A repeated block's runs are children of the block's module (under a task model's
    prefix, ``deberta.encoder.layer``, where the name has one)."""
    tree = _Module()
    for name, elements, owner in parameter_order(plan, every=True):
        path = name.split(".")
        if owner is not None:
            block = owner[0].split("/")
            at = (i for i in range(len(path)) if path[i : i + len(block)] == block)
            depth = next(at, 0) + len(block)
            path = [*path[:depth], str(owner[1]), *path[depth:]]
        tree.at(path[:-1]).params.append(elements)
    for prefix, nbytes in buffers(plan):
        tree.at(prefix.split(".")[:-1]).buffers.append(nbytes)
    return list(tree.visit(plan.graph.registered))


class _Module:
    """A module of the parameter tree: its children by name (first use first), parameters and buffers."""

    def __init__(self, path: tuple[str, ...] = ()) -> None:
        self.path = path
        self.children: dict[str, _Module] = {}
        self.params: list[sympy.Expr] = []
        self.buffers: list[sympy.Expr] = []

    def at(self, path: list[str]) -> _Module:
        module = self
        for part in path:
            module = module.children.setdefault(part, _Module((*module.path, part)))
        return module

    def visit(self, registered: Mapping[str, Registered]) -> Iterator[tuple[sympy.Expr, bool]]:
        declared = registered.get(".".join(self.path), Registered()).children
        order = [c for c in declared if c in self.children] + [c for c in self.children if c not in declared]
        for child in order:
            yield from self.children[child].visit(registered)
        yield from ((elements, False) for elements in self.params)
        yield from ((nbytes, True) for nbytes in self.buffers)
