"""``timeline --memory-viz``: the simulated allocator as a ``torch.cuda.memory._snapshot()`` pickle, read back with
torch's own ``torch.cuda._memory_viz`` (which works on a pickle without a GPU)."""

from __future__ import annotations

import io
import pickle
from collections import Counter

import pytest
from click.testing import CliRunner

from symbert import public
from symbert.cli import cli
from symbert.symbols import B, seq_len
from symbert.training.stream import at, events
from tests.conftest import run_cli
from tests.gputrace import TRACE

BATCH, LENGTH = 1, 8
#: bert-tiny's sizes, from its Hugging Face config (prajjwal1/bert-tiny): hidden 128, vocabulary 30522.
H, VOCAB = 128, 30522
MiB = 2**20


@pytest.fixture(scope="module")
def steps():
    return public.timeline("bert-tiny", batch=BATCH, seq_len=LENGTH)


@pytest.fixture(scope="module")
def written(tmp_path_factory, steps) -> tuple[bytes, dict]:
    path = tmp_path_factory.mktemp("viz") / "step.pickle"
    result = CliRunner().invoke(cli, ["timeline", "--preset", "bert-tiny", "-b", str(BATCH), "-s", str(LENGTH),
                                      "--memory-viz", str(path)])
    assert result.exit_code == 0, result.output
    data = path.read_bytes()
    return data, pickle.loads(data)


def trace_of(snap: dict) -> list[dict]:
    (trace,) = snap["device_traces"]
    return trace


def test_torchs_memory_viz_reads_it(written):
    from torch.cuda import _memory_viz as viz

    _, snap = written
    summary = viz.segsum(snap)  # raises on a segment whose blocks do not add up to its size
    assert f"segments: {len(snap['segments'])}" in summary
    for draw in (viz.trace_plot, viz.segment_plot):
        assert "<html" in draw(snap).lower()
    flame = viz.memory(snap, format_flamegraph=lambda lines: lines)
    assert "active_allocated;symbert:1:step 1 optimizer;model:0:optimizer step" in flame
    assert viz.segments(snap, format_flamegraph=lambda lines: lines).startswith("stream_0;seg_")


def test_the_segments_are_timelines_reserved_memory(written, steps):
    """Nothing releases a segment in these steps, so the segments at the end are the reserved peak that
    timeline reports (max_memory_reserved of its last phase); the trace's segment allocations agree."""
    _, snap = written
    reserved = sum(s["total_size"] for s in snap["segments"])
    assert reserved == max(p.reserved for p in steps.simulated.values())
    made = [e["size"] for e in trace_of(snap) if e["action"] == "segment_alloc"]
    assert not [e for e in trace_of(snap) if e["action"] == "segment_free"]
    assert sorted(made) == sorted(s["total_size"] for s in snap["segments"])
    for segment in snap["segments"]:
        assert sum(b["size"] for b in segment["blocks"]) == segment["total_size"]
        assert segment["allocated_size"] == sum(b["size"] for b in segment["blocks"] if b["state"] != "inactive")
        assert segment["segment_type"] == ("small" if segment["total_size"] == 2 * MiB else "large")


def test_the_allocations_are_the_streams_requests(written, steps):
    """The trace's allocations are the request stream's, in count, bytes and order; each free is requested and
    completed at once (one stream), with the bytes that were requested, as in the real trace."""
    _, snap = written
    from symbert.api import per_gpu

    graph, sizes = per_gpu(steps.config, steps.training.memory.layout, LENGTH)
    stream = at(events(graph, steps.training, {**sizes, seq_len: LENGTH}), {B: BATCH, seq_len: LENGTH})
    requests = [e[2] for e in stream if e[0] == "alloc"]
    trace = trace_of(snap)
    allocs = [e["size"] for e in trace if e["action"] == "alloc"]
    assert allocs == requests
    assert sum(allocs) == sum(requests)
    live: dict[int, int] = {}
    for i, e in enumerate(trace):
        if e["action"] == "alloc":
            live[e["addr"]] = e["size"]
        elif e["action"] == "free_requested":
            assert trace[i + 1] | {"action": "free_requested"} == e
            assert live.pop(e["addr"]) == e["size"]
    active = [b for s in snap["segments"] for b in s["blocks"] if b["state"] == "active_allocated"]
    assert sorted(b["requested_size"] for b in active) == sorted(live.values())


def test_entries_worked_by_hand(written):
    """bert-tiny, B=1, seq_len 8, float32: the word embeddings (30522 × 128 × 4 bytes, over 10 MiB: a segment of
    their size rounded up to 2 MiB) come first; the embeddings' output is B·s·H·4 = 4096 bytes, the dropout mask
    B·s·H = 1024 bytes; the first matmul makes the default cuBLAS workspace (8 MiB + 128 KiB, under 10 MiB: a
    20 MiB segment) and the cuBLASLt one (1 MiB: the small pool, a 2 MiB segment)."""
    _, snap = written
    trace = trace_of(snap)
    first = [(e["action"], e["size"]) for e in trace[:2]]
    assert first == [("segment_alloc", 16 * MiB), ("alloc", VOCAB * H * 4)]
    assert trace[1]["addr"] == trace[0]["addr"]
    forward = [e for e in trace if e["action"] == "alloc" and e["frames"][1]["name"] == "step 1 forward"]
    ops = [(e["frames"][0]["name"], e["size"]) for e in forward]
    assert ops[0] == ("embeddings/word_embeddings", BATCH * LENGTH * H * 4)
    assert ("embeddings/dropout", BATCH * LENGTH * H) in ops
    i = next(i for i, e in enumerate(trace) if e["size"] == 8 * MiB + 128 * 1024)
    assert [(e["action"], e["size"]) for e in trace[i - 1:i + 3]] == [
        ("segment_alloc", 20 * MiB), ("alloc", 8 * MiB + 128 * 1024), ("segment_alloc", 2 * MiB), ("alloc", MiB)]
    assert trace[i]["frames"][0]["name"] == "encoder/layer/attention/self/query"
    # bert-tiny's two layers: the query projection's output (B·s·H·4 bytes) in each run, named by its run
    queries = [e["frames"][0]["line"] for e in forward
               if e["frames"][0]["name"].endswith("self/query") and e["size"] == BATCH * LENGTH * H * 4]
    assert queries == [0, 1]


def test_the_bytes_are_deterministic(written, tmp_path):
    data, _ = written
    again = tmp_path / "again.pickle"
    result = CliRunner().invoke(cli, ["timeline", "--preset", "bert-tiny", "-b", str(BATCH), "-s", str(LENGTH),
                                      "--memory-viz", str(again)])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == data
    assert pickle.load(io.BytesIO(data)) == pickle.loads(data)


def test_the_trace_has_the_real_traces_structure(written):
    """The real H100 trace (tests/fixtures/gpu/, from ``_snapshot()``'s ``device_traces``, kept as
    [action, address, size, …] with a/f/c for alloc/free_requested/free_completed) and the predicted one keep
    the same rules: a free is requested and completed at once, with the bytes the allocation requested."""
    _, snap = written
    names = {"alloc": "a", "free_requested": "f", "free_completed": "c"}
    ours = [[names[e["action"]], e["addr"], e["size"]] for e in trace_of(snap) if e["action"] in names]
    for trace in (ours, [e[:3] for e in TRACE["events"]]):
        live: dict[int, int] = {}
        for i, (action, addr, size) in enumerate(trace):
            if action == "a":
                live[addr] = size
            elif action == "f":
                assert trace[i + 1] == ["c", addr, size] and live.pop(addr) == size
        assert Counter(a for a, _, _ in trace)["f"] == Counter(a for a, _, _ in trace)["c"]


def test_without_the_simulation_it_says_so(tmp_path):
    result = run_cli("timeline", "--preset", "bert-tiny", "--policy", "torch-cpu", "--memory-viz",
                     str(tmp_path / "x.pickle"))
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "--memory-viz: the caching allocator is simulated only" in result.stderr
    assert not (tmp_path / "x.pickle").exists()


def test_timeline_itemises_what_the_allocator_adds(steps):
    """At the allocated peak (step 2's backward) of bert-tiny, B=1, seq_len 8: the live workspaces are the
    forward's cuBLAS (8 MiB + 128 KiB, no GPU named) and cuBLASLt (1 MiB) ones and the backward thread's cuBLAS
    one; the items add up to the peak allocated memory and to reserved memory then."""
    from symbert.render.training import overhead_line, timeline_json

    doc = timeline_json(steps)["allocator_overhead"]
    assert doc["workspaces"] == 2 * (8 * MiB + 128 * 1024) + MiB
    assert doc["allocated"] == doc["requested"] + doc["rounding"] + doc["unsplit"]
    assert doc["allocated"] == max(p.allocated for p in steps.simulated.values())
    assert doc["reserved"] == doc["allocated"] + doc["segment_tails"] + doc["holes"]
    assert doc["reserved"] <= max(p.reserved for p in steps.simulated.values())
    assert doc["rounding"] > 0 and doc["segment_tails"] > 0
    assert "+ unsplit blocks 0 = allocated" in overhead_line(steps.overhead)


def test_a_small_case_worked_by_hand():
    """1000 bytes take a 1024-byte block of a new 2 MiB small segment; 3 MiB split the front off a new 20 MiB
    large segment (17 MiB left, more than 1 MiB); freeing them and ``empty_cache()`` gives both segments back."""
    from torch.cuda import _memory_viz as viz

    from symbert.training.allocator import Allocator, Config
    from symbert.training.memviz import snapshot

    a = Allocator(record=True)
    a.run([("alloc", "x", 1000), ("alloc", "y", 3 * MiB)])
    snap = snapshot(a, {})
    assert [(s["segment_type"], s["total_size"], [(b["size"], b["requested_size"], b["state"]) for b in s["blocks"]])
            for s in sorted(snap["segments"], key=lambda s: s["total_size"])] == [
        ("small", 2 * MiB, [(1024, 1000, "active_allocated"), (2 * MiB - 1024, 0, "inactive")]),
        ("large", 20 * MiB, [(3 * MiB, 3 * MiB, "active_allocated"), (17 * MiB, 0, "inactive")])]
    assert "total_reserved: 22.0MiB" in viz.segsum(snap)
    a.run([("free", "x"), ("free", "y")])
    a.empty_cache()
    actions = [(e["action"], e["size"]) for e in trace_of(snapshot(a, {}))]
    assert actions == [("segment_alloc", 2 * MiB), ("alloc", 1000), ("segment_alloc", 20 * MiB), ("alloc", 3 * MiB),
                       ("free_requested", 1000), ("free_completed", 1000),
                       ("free_requested", 3 * MiB), ("free_completed", 3 * MiB),
                       ("segment_free", 20 * MiB), ("segment_free", 2 * MiB)]
    assert snapshot(a, {})["segments"] == []
    # expandable segments map pages (2 MiB in the small pool) into one segment instead
    e = Allocator(Config(expandable_segments=True), record=True)
    e.run([("alloc", "x", 1000)])
    snap = snapshot(e, {})
    assert [(x["action"], x["size"]) for x in trace_of(snap)] == [("segment_map", 2 * MiB), ("alloc", 1000)]
    assert [(s["total_size"], s["is_expandable"]) for s in snap["segments"]] == [(2 * MiB, True)]
