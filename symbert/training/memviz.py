"""The simulated allocator as a memory snapshot: the dictionary ``torch.cuda.memory._snapshot()`` returns after
``torch.cuda.memory._record_memory_history()``, so that pytorch.org/memory_viz (and ``torch.cuda._memory_viz``)
shows a predicted step as it shows a real one.

``segments`` are the segments at the end, each with its blocks in address order (``active_allocated`` or
``inactive``); ``device_traces`` holds one list, device 0's, of what the allocator did: ``alloc``,
``free_requested`` and ``free_completed`` (one stream, so each free completes at once) with the requested
bytes, as ``CUDACachingAllocator.cpp``'s ``record_trace`` has them, and ``segment_alloc``, ``segment_free``
(``segment_map``, ``segment_unmap`` under ``expandable_segments``) with the segment's bytes. Each
allocation's frames name the op and scope of the replay that made the request, then its step and phase.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable, Mapping

from symbert.training.allocator import Allocator, Block
from symbert.training.stream import Cause

#: A fixed pickle protocol, so that the file's bytes depend only on the prediction.
PROTOCOL = 4
POOL = (0, 0)


def frames(cause: Cause | None) -> list[dict[str, object]]:
    """A request's stack, innermost first: the op in its scope (the line: its block's run, as timeline's
    ``[3]``), then the step and phase."""
    if cause is None:
        return []
    where = f"step {cause.step} {cause.phase}" if cause.step else "loading the model"
    return [{"filename": cause.scope or "model", "line": cause.run or 0, "name": cause.op},
            {"filename": "symbert", "line": cause.step, "name": where}]


def _streams(allocator: Allocator) -> dict[Hashable, int]:
    """Each stream of the simulation as a number: 0 the default stream, the others numbered from 1 in order."""
    named = {b.stream for b in allocator.blocks()} | {e[3] for e in allocator.trace}
    return {0: 0, **{s: i for i, s in enumerate(sorted((s for s in named if s != 0), key=str), 1)}}


def _block(block: Block, stack: list[dict[str, object]]) -> dict[str, object]:
    live = block.allocated
    return {"address": block.addr, "size": block.size, "requested_size": block.requested if live else 0,
            "state": "active_allocated" if live else "inactive", "frames": stack if live else []}


def snapshot(allocator: Allocator, causes: Mapping[Hashable, Cause]) -> dict[str, object]:
    """The snapshot of ``allocator`` (run with ``record=True``), each request's frames from ``causes``."""
    stream = _streams(allocator)
    keys = {id(block): key for key, block in allocator.live.items()}
    stacks: dict[Cause | None, list[dict[str, object]]] = {}  # one list per cause, which the pickle stores once

    def stack(key: Hashable) -> list[dict[str, object]]:
        cause = causes.get(key)
        if cause not in stacks:
            stacks[cause] = frames(cause)
        return stacks[cause]

    by_segment: dict[int, list[Block]] = {}
    for block in allocator.blocks():
        if block.mapped:
            by_segment.setdefault(block.segment, []).append(block)
    segments = []
    for addr, blocks in sorted(by_segment.items()):
        total = sum(b.size for b in blocks)
        allocated = sum(b.size for b in blocks if b.allocated)
        segments.append({
            "device": 0, "address": addr, "total_size": total, "stream": stream[blocks[0].stream],
            "segment_type": "small" if blocks[0].small else "large", "segment_pool_id": POOL,
            "allocated_size": allocated, "active_size": allocated, "requested_size": sum(b.requested for b in blocks),
            "is_expandable": blocks[0].expandable, "blocks": [_block(b, stack(keys.get(id(b)))) for b in blocks],
        })
    trace = [{"action": action, "addr": addr, "size": size, "stream": stream[on], "frames": stack(key)}
             for action, addr, size, on, key in allocator.trace]
    return {"segments": segments, "device_traces": [trace]}


def dump(snap: dict[str, object]) -> bytes:
    """The snapshot's pickle: the same prediction gives the same bytes."""
    return pickle.dumps(snap, protocol=PROTOCOL)
