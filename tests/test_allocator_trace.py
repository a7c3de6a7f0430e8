"""The allocator simulation against a real allocation trace: two AdamW steps of bert-base on an H100.

The fixture (tests/fixtures/gpu/, copied from a real run; its ``about`` says how it was measured) holds every
allocation and free of the caching allocator with the requested size and the address it got, the per-phase
``max_memory_allocated`` and the final ``max_memory_reserved``. The model and inputs were loaded before the trace
started; their requests are rebuilt here from Hugging Face's BertModel in the order ``Module.to`` visits it
(children first, then a module's parameters, then its buffers), then the three [B, seq_len] int64 inputs.

Addresses: the allocator breaks ties between free blocks of equal size by address, so the simulation needs the
addresses cudaMalloc gave. A segment made during the trace gets the address of the request that made it (a new
segment's first block starts at its base). The segments made before the trace show their addresses only when a
traced request lands in them: :func:`replay` learns them from the trace, one by one, and runs again until it
learns nothing more. Nothing else is taken from the trace's addresses.
"""

from __future__ import annotations

import pytest

from symbert.training.allocator import SMALL_SIZE, Allocator, round_size
from tests.gputrace import TRACE, base_requests, phased


def run(base: tuple[int, ...], known: dict[int, int]) -> tuple[Allocator, dict[int, int]]:
    """One replay with the pre-trace segments' addresses known so far; returns the next one it learned, if any.

    A pre-trace segment whose address is unknown sits above every real address. A traced request that lands
    outside every segment whose address is known went to one of the unknown segments: to the block the
    simulation picks if that is in one, else to the best-fitting free block among them. That segment's address
    is learned, and the replay stops there. Every other request must land where it did on the GPU."""
    allocator = Allocator()
    for i, size in enumerate(base):
        allocator.malloc(("base", i), size, at=known.get(len(allocator.segments)))
    index = {addr: k for k, addr in enumerate(allocator.segments)}
    for phase, (action, addr, size, *_) in phased():
        if phase:
            allocator.begin(phase)
        if action == "c":
            allocator.free(addr)
        elif action == "a":
            placed = any(seg <= addr < seg + n for seg, n in allocator.segments.items()
                         if seg not in index or index[seg] in known)
            rounded = round_size(size)
            unknown = [b for b in allocator.pools[rounded <= SMALL_SIZE].at_least(0, rounded)
                       if seg_unknown(b, index, known)]
            block = allocator.malloc(addr, size, at=addr)
            if not placed and unknown:
                chosen = block if seg_unknown(block, index, known) else min(unknown, key=lambda b: (b.size, b.addr))
                return allocator, {index[chosen.segment]: addr - (chosen.addr - chosen.segment)}
            assert block.addr == addr, f"a request of {size} bytes went to {block.addr:#x}, on the GPU to {addr:#x}"
    allocator.end()
    return allocator, {}


def seg_unknown(block, index: dict[int, int], known: dict[int, int]) -> bool:
    return block.segment in index and index[block.segment] not in known


@pytest.fixture(scope="module")
def replayed() -> Allocator:
    base = base_requests()
    known: dict[int, int] = {}
    for _ in range(len(base)):
        allocator, learned = run(base, known)
        if not learned:
            return allocator
        known.update(learned)
    raise AssertionError("the pre-trace segments' addresses did not settle")


def test_base_after_loading_is_exact():
    allocator = Allocator()
    for i, size in enumerate(base_requests()):
        allocator.malloc(i, size)
    assert allocator.allocated.current == TRACE["base"] == 439_094_272


def test_each_phase_peak_is_exact(replayed):
    predicted = [(p.name, p.allocated) for p in replayed.phases]
    assert predicted == [(f"{step} {name}", peak) for step, name, peak in TRACE["phases"]]


def test_reserved_peak_is_exact(replayed):
    assert replayed.reserved.peak == TRACE["reserved"] == 2_575_302_656

