"""Parameter pass: the sum of every distinct parameter's element count, times its copies."""

from __future__ import annotations

from symbert.analysis.breakdown import Breakdown, Contribution, component_of, component_order, model_of
from symbert.ir import Graph


def params(graph: Graph) -> Breakdown:
    """Trainable parameters; a parameter reached from several nodes (tied weights) counts once."""
    spec = model_of(graph)
    seen: set[str] = set()
    parts = []
    for node in graph.nodes:
        for p in node.params:
            if p.name in seen:
                continue
            seen.add(p.name)
            component = component_of(node, spec.param_components)
            parts.append(Contribution(node.name, component, p.name, p.numel, graph.param_multiplicity(node)))
    return Breakdown("params", "parameters", tuple(parts), component_order(spec.param_components), spec.substitutions)
