"""The driver's allocation events for a model small enough to walk by hand: ids [B, S] int64 → embedding (V×E)
→ linear (E→E, with bias) → output, one SGD step in float32 on the CPU (no runtime rounding, no workspaces, no
optimizer states). B = 2, S = 3, V = 5, E = 4, so every size below is worked out from the shapes."""

from __future__ import annotations

import pytest

from symbert import ops
from symbert.analysis.policy import MemoryOptions
from symbert.ir import Graph, Role
from symbert.tracer import Tracer, graph_input, graph_output, tracing
from symbert.training.driver import Driver
from symbert.training.events import Alloc, Free, Mark, Steady
from symbert.training.ledger import Ledger
from symbert.training.plan import Plan
from symbert.training.states import Training
from symbert.training.stream import Requests

B, S, V, E = 2, 3, 5, 4
F32, I64 = 4, 8
IDS = B * S * I64  # 48
HIDDEN = B * S * E * F32  # 96: the embedding's output, the linear's, and each of their gradients
EMBEDDING, WEIGHT, BIAS = V * E * F32, E * E * F32, E * F32  # 80, 64, 16
LOSS = 4  # a 0-dim float32: the seed of backward, and the bare model's loss the caller differentiates


@pytest.fixture(scope="module")
def events() -> list:
    graph = Graph(model="bert")
    with tracing(Tracer(graph)):
        ids = graph_input("ids", (B, S), "int64", Role.INDEX)
        graph_output("out", ops.linear("lin", ops.embedding("emb", ids, V, E), E))
    plan = Plan(graph, Training("sgd", "fp32", MemoryOptions("torch-cpu")), {})
    return Driver(plan).run(1), plan


def test_the_stream_by_hand(events) -> None:
    """Load the weights (one model state), take the ids; forward allocates each output, and the caller its
    loss; backward seeds the output's gradient beside the two losses, the linear makes its input's gradient
    and its two parameters' and frees its output's gradient and its saved input, the embedding makes its
    table's gradient (the ids need none); backward's end frees the output and the losses, and zero_grad the
    parameter gradients."""
    stream, _ = events
    changes = [(type(e).__name__, e.size.get(1, 0), e.phase) for e in stream if isinstance(e, Alloc | Free)]
    loaded = EMBEDDING + WEIGHT + BIAS
    assert changes == [
        ("Alloc", loaded, "start"),
        ("Alloc", IDS, "start"),
        ("Alloc", HIDDEN, "forward"),  # embedding
        ("Alloc", HIDDEN, "forward"),  # linear
        ("Alloc", LOSS, "forward"),  # the caller's loss, made when the forward returns
        ("Alloc", LOSS, "backward"),  # the seed
        ("Alloc", HIDDEN, "backward"),  # the output's gradient
        ("Alloc", HIDDEN, "backward"),  # the linear's input's gradient
        ("Alloc", WEIGHT, "backward"),
        ("Alloc", BIAS, "backward"),
        ("Free", HIDDEN, "backward"),  # the output's gradient, used
        ("Free", HIDDEN, "backward"),  # the embedding's output, which the linear kept
        ("Alloc", EMBEDDING, "backward"),
        ("Free", HIDDEN, "backward"),  # the embedding's output's gradient, used
        ("Free", HIDDEN, "backward"),  # the output, held by the caller until backward ends
        ("Free", LOSS, "backward"),
        ("Free", LOSS, "backward"),
        ("Free", WEIGHT, "optimizer"),
        ("Free", BIAS, "optimizer"),
        ("Free", EMBEDDING, "optimizer"),
    ]
    allocs = {e.id for e in stream if isinstance(e, Alloc)}
    assert len(allocs) == 11 and {e.id for e in stream if isinstance(e, Free)} <= allocs
    marks = [e.label for e in stream if isinstance(e, Mark)]
    assert marks == [
        "inputs and weights", "emb", "lin", "end of forward", "gradient of out", "lin", "emb", "end of backward",
        "optimizer states created", "zero_grad",
    ]
    assert [e.what for e in stream if isinstance(e, Steady)] == ["cached", "saved", "grads"]


def test_the_peak_falls_at_the_linears_backward(events) -> None:
    """Weights, ids, both outputs, the losses and the output's gradient are alive when the linear's backward
    adds its three gradients: 680 bytes, the highest point of the step."""
    stream, plan = events
    snapshots = Ledger(plan.graph.blocks, stream).snapshots
    totals = [sum(sum(size.values()) for size in snap.memory.values()) for snap in snapshots]
    loaded = EMBEDDING + WEIGHT + BIAS
    forward = loaded + IDS + 2 * HIDDEN
    at_linear = forward + 2 * LOSS + HIDDEN + HIDDEN + WEIGHT + BIAS
    after_linear = at_linear - 2 * HIDDEN
    end = after_linear + EMBEDDING - HIDDEN - HIDDEN - 2 * LOSS
    assert at_linear == 680
    assert totals == [
        loaded + IDS, forward - HIDDEN, forward, forward + LOSS, forward + 2 * LOSS + HIDDEN, at_linear,
        after_linear + EMBEDDING, end, end, end - WEIGHT - BIAS - EMBEDDING,
    ]
    peak = snapshots[totals.index(max(totals))]
    assert (peak.step, peak.phase, peak.label) == (1, "backward", "lin")
    assert peak.memory["gradients"] == {1: WEIGHT + BIAS}


def test_the_requests_load_each_parameter_then_the_ids(events) -> None:
    """The allocator's view of the same events: the loaded weights are one request per parameter, in the order
    Module.to visits them (the modules in the order the forward first uses them: emb, then lin's weight and
    bias), then the ids; the step's requests follow its phase markers."""
    stream, plan = events
    requests = Requests(plan, {})
    requests.take(stream)
    allocs = [e[2] for e in requests.stream if e[0] == "alloc"]
    assert allocs[:4] == [EMBEDDING, WEIGHT, BIAS, IDS]
    assert [e[1] for e in requests.stream if e[0] == "phase"] == ["1 forward", "1 backward", "1 optimizer"]
    assert len(allocs) == 4 + 9 and sum(e[0] == "free" for e in requests.stream) == 9
