"""FLOPs pass: matmul FLOPs forward and backward as torch.utils.flop_counter counts them, and the rest.

A product [b, m, k] @ [b, k, n] costs 2·b·m·k·n forward; backward computes one such product per operand
that needs a gradient (for a linear layer: the input's, and always the weight's). Other ops cost their
registered operations per output element (per input element for losses, which reduce to a scalar;
:mod:`symbert.ops`), reported apart.

Under ``--attention sdpa`` a fused kernel (flash, memory-efficient) counts as the counter's SDPA
formulas do: forward the two products Q·Kᵀ and P·V, backward five (it recomputes Q·Kᵀ, then dV, dP,
dQ and dK), one more than the eager core's four. The math kernel is matmuls, counted as eager.
"""

from __future__ import annotations

import sympy

from symbert.analysis import sdpa
from symbert.analysis.activations import Values, attention_calls
from symbert.analysis.breakdown import Breakdown, Contribution, component_of, component_order, model_of
from symbert.analysis.policy import MemoryOptions
from symbert.ir import Graph
from symbert.ops import OPS


def _fused_attention(graph: Graph, options: MemoryOptions, values: Values) -> dict[str, sympy.Expr]:
    """The Q·Kᵀ product of each attention call a fused SDPA kernel runs (its backward recomputes it),
    with the bracket of the sizes where one does."""
    shares = {call.scores: sdpa.fused_share(call, options, values) for call in attention_calls(graph, options)}
    return {scores: share for scores, share in shares.items() if share != 0}


def flops(graph: Graph, options: MemoryOptions | None = None, values: Values = None) -> dict[str, Breakdown]:
    """``forward`` and ``backward`` matmul FLOPs, and ``non_matmul_forward`` by the per-element convention.

    ``options`` (attention) and ``values`` (a config's sizes) decide the SDPA kernel; without options,
    eager attention."""
    spec = model_of(graph)
    options = options and options.for_model(spec)
    terms: dict[str, list[Contribution]] = {"forward": [], "backward": [], "non_matmul_forward": []}
    fused = _fused_attention(graph, options, values) if options else {}
    for node in graph.nodes:
        op = OPS[node.op]
        component = component_of(node, spec.activation_components)
        count = graph.multiplicity(node)
        if op.matmul:
            b, m, k, n, grads = op.matmul(node, graph)
            product = 2 * b * m * k * n
            terms["forward"].append(Contribution(node.name, component, "matmul", product, count))
            if any(grads):
                what = f"{sum(grads)} gradient product(s)"
                terms["backward"].append(Contribution(node.name, component, what, sum(grads) * product, count))
            if node.name in fused:
                what = "fused attention backward recomputes Q·Kᵀ"
                recompute = product * fused[node.name]
                terms["backward"].append(Contribution(node.name, component, what, recompute, count))
        elif op.flops_per_element:
            output = graph.tensor(node.outputs[0])
            runs = (1 - node.attr("view_when", 0)) * graph.presence(output)  # brackets: where it runs
            elements = node.attr("elements", output.numel) * runs
            what = f"{op.flops_per_element} per element"
            terms["non_matmul_forward"].append(
                Contribution(node.name, component, what, op.flops_per_element * elements, count)
            )
    order = component_order(spec.activation_components)
    return {
        key: Breakdown(f"flops_{key}", "FLOPs", tuple(parts), order, spec.substitutions) for key, parts in terms.items()
    }
