"""symbert's own allocation stream for the real trace's job against the trace: bert-base, B=8, seq_len 128, fp32,
eager attention, AdamW (foreach), the torch-cuda policy on an H100, no padding.

Where the two streams differ, a test names the first place; those are what the replay does not model yet."""

from __future__ import annotations

from collections import Counter

import pytest

from symbert.analysis.policy import MemoryOptions
from symbert.api import per_gpu
from symbert.configs import resolve
from symbert.parallel import Layout
from symbert.symbols import B, seq_len
from symbert.training import stream as stream_module
from symbert.training.states import Training
from symbert.training.stream import events, replay
from tests.gputrace import TRACE, base_requests, phased

BATCH, LENGTH, HIDDEN = TRACE["case"]["B"], TRACE["case"]["s"], TRACE["config"]["hidden_size"]


@pytest.fixture(scope="module")
def stream() -> list[tuple]:
    config = resolve("bert-base", None, (), None, padding=False)
    training = Training("adamw", "fp32", MemoryOptions("torch-cuda"), "h100")
    graph, sizes = per_gpu(config, training.memory.layout)
    return events(graph, training, {**sizes, B: BATCH, seq_len: LENGTH})


def by_phase(pairs) -> dict[str, list]:
    out: dict[str, list] = {}
    current = None
    for phase, request in pairs:
        current = phase or current
        if request is not None:
            out.setdefault(current, []).append(request)
    return out


def ours(stream) -> dict[str, list[int]]:
    marks = [(e[1], None) if e[0] == "phase" else (None, e[2]) for e in stream if e[0] in ("phase", "alloc")]
    start = next(i for i, (phase, _) in enumerate(marks) if phase)
    return by_phase(marks[start:])


def real() -> dict[str, list[tuple[int, str]]]:
    return by_phase((phase, (e[2], e[4]) if e[0] == "a" else None) for phase, e in phased())


def test_the_phases_are_the_traces(stream):
    assert list(ours(stream)) == list(real()) == [f"{s} {p}" for s, p, _ in TRACE["phases"]]


def test_the_optimizer_makes_the_same_requests(stream):
    """AdamW's states at the first step, its foreach temporaries and zero_grad: the same requests as on the GPU
    (the order differs: symbert visits the parameters in the order the forward uses them)."""
    mine, gpu = ours(stream), real()
    for phase in ("1 optimizer", "2 optimizer"):
        assert Counter(mine[phase]) == Counter(size for size, _ in gpu[phase])


def test_the_streams_differ_only_at_the_callers_loss(stream):
    """Phase by phase, symbert's requests are the GPU's, in the same order, except where the caller's loss
    comes in. The trace's script ends each forward with ``last_hidden_state.sum() + pooler_output.sum()``: a
    4-byte sum whose reduction stages 384 bytes and a 4-byte semaphore, the second sum, and theirs. Its
    backward hands each output an expanded scalar (no memory) and the last hidden state's gradient is made
    later, when the pooler's is added to it. symbert's bare model makes the caller's loss, one 4-byte tensor,
    when the forward returns (the first of those requests), and gives backward a gradient of each output's
    full size at its start."""
    import difflib

    mine, gpu = ours(stream), real()
    tokens = BATCH * LENGTH * HIDDEN
    for phase, requests in gpu.items():
        sizes = [size for size, _ in requests]
        diff = difflib.SequenceMatcher(None, mine[phase], sizes, autojunk=False).get_opcodes()
        changes = [(tag, mine[phase][i1:i2], sizes[j1:j2]) for tag, i1, i2, j1, j2 in diff if tag != "equal"]
        if phase.endswith("forward"):
            assert changes == [("insert", [], [384, 4, 4, 4])]
            assert {line for _, line in requests[-5:]} == {"gpu_measure2.py:67:forward"}
        elif phase.endswith("backward"):
            assert changes == [("delete", [BATCH * HIDDEN * 4, 4 * tokens], []), ("insert", [], [4 * tokens])]
        else:
            assert changes == []


def test_the_mask_preprocessing_and_the_products_copies_are_the_gpus(stream):
    """The requests a graph op of symbert's model makes where Hugging Face runs one: the [B, seq_len] bool copy
    of the attention mask and ``padding_mask.all()``'s 1-byte result, before the first layer; and
    ``torch.matmul``'s copies of Q and Kᵀ (and of V) to fold their batch, before the scores (the context)."""
    mine = ours(stream)["1 forward"]
    gpu = real()["1 forward"]
    assert mine == [size for size, _ in gpu[:len(mine)]]
    lines = [line.split(":", 2)[2] + ":" + line.split(":")[1] for _, line in gpu]
    first = lines.index("_preprocess_mask_arguments:825")
    assert [size for size, _ in gpu[first:first + 2]] == [BATCH * LENGTH, 1]
    assert lines[first + 1] == "_ignore_bidirectional_mask_sdpa:331"
    copies = [i for i, line in enumerate(lines) if line.startswith("eager_attention_forward")]
    tokens = BATCH * LENGTH * HIDDEN
    assert [gpu[i][0] for i in copies[:7]] == [4 * tokens] * 2 + [4 * tokens * LENGTH // 64] * 2 + [4 * tokens] * 3


def test_before_the_first_step_the_requests_are_the_gpus(stream):
    """Before the first step symbert allocates what Hugging Face's model has on the GPU, in the order
    ``Module.to`` visits it (the embeddings' children as registered, then their two int64 buffers), then
    the inputs: the same requests in the same order."""
    start = next(i for i, e in enumerate(stream) if e[0] == "phase")
    assert [e[2] for e in stream[:start] if e[0] == "alloc"] == list(base_requests())


@pytest.mark.parametrize(
    "training",
    [
        Training("adamw", "fp32", MemoryOptions("torch-cuda"), "h100"),
        Training("sgd", "amp", MemoryOptions("torch-cuda", dtype="bfloat16", attention="sdpa"), "a100-40gb"),
        Training("adamw", "mixed", MemoryOptions("torch-cuda", recompute="full"), "h100"),
    ],
)
def test_the_stream_carries_every_byte_the_replay_counts(training):
    """Under torch-cuda, each phase's peak of requested bytes equals the replay's peak of tensors (its sum of
    categories, less the runtime's rounding) plus the workspaces."""
    from symbert import preset
    from symbert.training.allocator import Allocator
    from symbert.training.ledger import Ledger
    from symbert.training.stream import Requests, replay

    graph, sizes = per_gpu(preset("bert-tiny"), training.memory.layout)
    values = {**sizes, B: 3, seq_len: 17}
    plan, events = replay(graph, training, values)
    requests = Requests(plan, values)
    requests.take(events)
    peaks: dict[str, int] = {}
    for event in Ledger(plan.graph.blocks, events).snapshots:
        if event.step:
            total = sum(requests.bytes_of(v) for c, v in event.memory.items() if c != "runtime")
            name = f"{event.step} {event.phase}"
            peaks[name] = max(peaks.get(name, 0), total)
    allocator = Allocator().run(requests.stream)
    workspaces = [e[2] for e in requests.stream if e[-1] == "workspace"]
    assert len(workspaces) == 3  # forward: cuBLAS and cuBLASLt; backward: cuBLAS
    held = {"1 forward": sum(workspaces[:2])}
    assert [(p.name, p.requested - peaks[p.name]) for p in allocator.phases] == [
        (name, held.get(name, sum(workspaces))) for name in peaks
    ]


def test_the_stream_simulated_against_the_traces_peaks(stream):
    """symbert's own stream through the simulation against the trace's per-phase max_memory_allocated and final
    max_memory_reserved. Step 1's forward and the reserved peak are exact; the other phases are off by exactly
    these bytes (simulated less measured), from the caller's loss (above): the backward's by the outputs' two
    gradients held from its start (3 MiB + 24 KiB), later phases by where the blocks it moves land."""
    from symbert.training.allocator import Allocator

    allocator = Allocator().run(stream)
    errors = [p.allocated - peak for p, (_, _, peak) in zip(allocator.phases, TRACE["phases"], strict=True)]
    assert errors == [0, 3_170_304, -524_288, 4_456_448, 7_626_752, 9_175_040]
    assert allocator.reserved.peak == TRACE["reserved"]


def test_the_bias_gradients_reduction_scratch_is_the_traces():
    """Each bias gradient in the trace's backward (the gradient summed over B·seq_len rows) is followed by what
    CUDA's reduction kernel stages the sum in: a buffer, then the semaphores, freed (the semaphores first) as the
    call returns. Their sizes follow from Reduce.cuh's launch configuration on an H100 (132 SMs of 2048 threads);
    the pooler's bias (8 rows) needs none."""
    from symbert.gpus import gpu as card
    from symbert.training.runtime import column_sum_scratch

    current = None
    events = []
    for phase, (action, _, size, *_) in phased():
        current = phase or current
        if action in "ac" and current.endswith("backward"):
            events.append((action, size))
    found = {(events[i - 1][1] // 4, events[i][1], events[i + 1][1]) for i in range(1, len(events) - 3)
             if [a for a, _ in events[i:i + 4]] == ["a", "a", "c", "c"]
             and events[i + 2][1] == events[i + 1][1] < 512 < events[i][1] == events[i + 3][1]}
    h100 = card("h100")
    widths = (HIDDEN, TRACE["config"]["intermediate_size"])
    assert found == {(width, *column_sum_scratch(BATCH * LENGTH, width, h100)) for width in widths}
    assert found == {(768, 6_291_456, 24), (3072, 25_165_824, 96)}
    assert column_sum_scratch(BATCH, HIDDEN, h100) == (0, 0)


@pytest.mark.parametrize("model, layers, training, repeated", [
    ("bert-base", 24, Training("adamw", "fp32", MemoryOptions("torch-cuda"), "h100"), True),
    ("bert-base", 10, Training("adamw", "mixed", MemoryOptions("torch-cuda", recompute="full"), "h100"), True),
    ("bert-base", 10, Training("adamw", "fp32", MemoryOptions("torch-cuda", layout=Layout(data=2, zero=3)), "h100"),
     False),
    ("bert-base", 10, Training("adamw", "amp", MemoryOptions("torch-cuda"), "h100"), False),
    ("deberta-v3-base", None, Training("adamw", "fp32", MemoryOptions("torch-cuda"), "h100"), True),
])
def test_repeating_the_middle_run_gives_every_runs_replay(model, layers, training, repeated, monkeypatch):
    """A block's middle run repeated (:mod:`symbert.training.repeats`) makes the requests and causes of the
    replay of every run; where it does not yet (ZeRO 3's gathers, autocast's caches), every run is replayed."""
    options = {} if model.startswith("deberta") else {"padding": False}
    config = resolve(model, None, (f"num_hidden_layers={layers}",) if layers else (), None, **options)
    graph, sizes = per_gpu(config, training.memory.layout)
    values = {**sizes, B: 2, seq_len: 16}
    full = stream_module.described(graph, training, values, full=True)
    replays = []
    monkeypatch.setattr(stream_module, "replay", lambda *a, **k: replays.append(a[-1]) or replay(*a, **k))
    fast = stream_module.described(graph, training, values)
    assert (fast.stream, fast.causes) == (full.stream, full.causes)
    few = [stream_module.FEW, stream_module.FEW + 1]
    assert [r["encoder/layer"] for r in replays] == (few if repeated else [*few, full.plan.runs["encoder/layer"]])
