"""The allocation events of a training step, in the order the driver (:mod:`symbert.training.driver`) emits them.

:class:`Alloc` and :class:`Free` carry the bytes as a polynomial in the model's symbols (a :data:`Size`, to
evaluate at values), a stable id, the op and scope that caused them, the step and the phase. :class:`Mark`
marks where memory is read (after an op allocated, before it frees anything); :class:`Steady` where the
middle run of each block is noted for the runs not replayed. Consumers: the ledger
(:mod:`symbert.training.ledger`), the allocation requests of the caching allocator's simulation
(:mod:`symbert.training.stream`) and the reserved estimate (:func:`symbert.training.step.reserved`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import sympy

from symbert.analysis.sizes import Size


class State(NamedTuple):
    """A model state allocated at once: ``tensors`` tensors of ``per_element`` bytes per element of each
    parameter, or of each of this GPU's shards of ``what`` (weights, with the registered buffers, or
    optimizer)."""

    what: str
    per_element: int
    tensors: int = 1


@dataclass(frozen=True, slots=True)
class Change:
    """``size`` bytes (and the runtime's rounding of them, ``pad``) in ``category``, allocated or freed.

    ``kind`` says what it is to the consumers other than the ledger: ``tensor``, one request of its size;
    ``workspace``, a cuBLAS or cuBLASLt workspace of the runtime, one request; ``state``, a model state
    (:class:`State`), one request per parameter tensor or shard; ``counters``, Adam's step counts on the
    device, one scalar per parameter tensor, not yet among the requests; ``counted``, bytes the replay
    counts without a request of their own yet (DDP's gradient buckets, GradScaler's scalars, the for-loop
    optimizer's temporaries, the CPU's promoted scalars); ``scratch``, what a CUDA kernel allocates for the call in
    an op's backward (softmax's temporary, a reduction's staging buffer and semaphores), one request, which
    the ledger leaves out. ``requests`` lists the allocations ``size`` is
    made of, as (bytes, how many), where ``kind`` does not say; ``owner`` is the block run the memory
    belongs to, None outside the blocks."""

    id: int
    size: Size
    pad: Size
    category: str
    owner: tuple[str, int | None] | None
    cause: str
    scope: str
    step: int
    phase: str
    kind: str = "tensor"
    requests: tuple[tuple[Size, sympy.Expr], ...] | None = None
    state: State | None = None


@dataclass(frozen=True, slots=True)
class Alloc(Change):
    """An allocation."""


@dataclass(frozen=True, slots=True)
class Free(Change):
    """Allocation ``id`` freed, with the bytes it holds now (a view may have taken over part of a storage)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """Memory is read here: after ``label`` allocated, before it frees. ``hidden`` says per block where the
    runs not replayed stand (see :class:`symbert.training.ledger.Snapshot`)."""

    label: str
    run: tuple[str, int] | None
    step: int
    phase: str
    hidden: Mapping[str, str]


def standing(run: int | None, phase: str, holding: bool) -> str:
    """Where the runs of a block that were not replayed stand while run ``run`` runs in ``phase`` (see
    :class:`symbert.training.ledger.Snapshot`); ``holding``: the block's tensors are held past its end."""
    if run == 1:
        return phase
    if run == 0:
        return "none" if phase == "forward" else "grads"
    if phase == "forward":
        return "holding" if holding else "cached"
    return "saved"


@dataclass(frozen=True, slots=True)
class Steady:
    """The middle run's memory is noted as ``what`` the runs not replayed hold, for ``block`` or every block."""

    what: str
    block: str | None = None


Event = Alloc | Free | Mark | Steady
