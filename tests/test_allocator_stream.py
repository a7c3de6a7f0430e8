"""symbert's own allocation stream for the real trace's job against the trace: bert-base, B=8, seq_len 128, fp32,
eager attention, AdamW (foreach), the torch-cuda policy on an H100, no padding.

Where the two streams differ, a test names the first place; those are what the replay does not model yet."""

from __future__ import annotations

from collections import Counter

import pytest

from symbert.analysis.policy import MemoryOptions
from symbert.api import per_gpu
from symbert.configs import resolve
from symbert.symbols import B, seq_len
from symbert.training.states import Training
from symbert.training.stream import events
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


def test_the_first_difference_is_hugging_faces_mask_preprocessing(stream):
    """The streams agree through the embeddings (the dropout's mask before its output, as CUDA's kernel
    allocates them) up to Hugging Face's mask preprocessing, which the replay does not model: the [B, seq_len]
    bool copy of the attention mask and the 1-byte result of ``torch.all`` that lets sdpa drop it."""
    mine = [size for phase in ours(stream).values() for size in phase]
    gpu = [request for phase in real().values() for request in phase]
    first = next(i for i, (a, (b, _)) in enumerate(zip(mine, gpu, strict=False)) if a != b)
    tokens = BATCH * LENGTH * HIDDEN
    assert first == 10
    assert [size for size, _ in gpu[8:10]] == mine[8:10] == [tokens, 4 * tokens]  # the dropout: mask, output
    assert gpu[first:first + 2] == [(BATCH * LENGTH, "masking_utils.py:825:_preprocess_mask_arguments"),
                                    (1, "masking_utils.py:331:_ignore_bidirectional_mask_sdpa")]
    assert mine[first] == 4 * tokens  # the query's output


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
    max_memory_reserved. The forward is exact; later phases are off by exactly these bytes (simulated less
    measured), from the temporaries the stream lacks (the first difference above, the matmul operand copies,
    the reduction kernels' staging buffers in backward) and the blocks they leave behind."""
    from symbert.training.allocator import Allocator

    allocator = Allocator().run(stream)
    errors = [p.allocated - peak for p, (_, _, peak) in zip(allocator.phases, TRACE["phases"], strict=True)]
    assert errors == [0, -6_279_680, -11_010_048, -12_582_912, -18_338_304, 16_252_928]
    assert allocator.reserved.peak - TRACE["reserved"] == -16_777_216
