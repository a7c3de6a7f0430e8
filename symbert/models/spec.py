"""What a model family declares: how to trace it, how its config maps to symbols, how to group it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sympy

from symbert.ir import Node


@dataclass(frozen=True)
class Component:
    """A named group of nodes: those under ``scope``, optionally only some op kinds or one region."""

    name: str
    scope: str
    ops: tuple[str, ...] | None = None
    region: str | None = None

    def matches(self, node: Node) -> bool:
        return (
            (node.scope == self.scope or node.scope.startswith(self.scope + "/"))
            and (self.ops is None or node.op in self.ops)
            and (self.region is None or self.region in node.regions)
        )


@dataclass(frozen=True)
class ModelSpec:
    """A model family: its tracing function, structural options, config fields and presets.

    ``fields`` maps Hugging Face config keys to the symbols they set and ``divides`` lists pairs of keys
    (a, b) where b must divide a. ``derived`` gives symbols the structure ties to others (BERT's E = H),
    used both to evaluate and to check shapes; ``substitutions`` are the family's conventions shown in
    its substituted formulas (BERT's E = H, I = 4H).
    """

    name: str
    build: Callable[..., None]
    options: Mapping[str, bool]
    param_components: tuple[Component, ...]
    activation_components: tuple[Component, ...]
    fields: Mapping[str, sympy.Symbol] = field(default_factory=dict)
    divides: tuple[tuple[str, str], ...] = ()
    derived: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    substitutions: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
