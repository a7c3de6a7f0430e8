"""The ledger: what the allocation events add up to, by category, at every point the driver marks.

It answers what the passes and the commands ask of a replay: memory after each op (:class:`Snapshot`, from
which :mod:`symbert.training.step` takes the peak, where it falls and each phase), live bytes by category
(:data:`symbert.training.states.CATEGORIES`, the runtime's rounding of each allocation in ``runtime``), and,
where a block was replayed for only some of its runs, what its middle run (run 1) holds at the end of forward
and of backward (:attr:`Ledger.steady`), which stands for the runs not replayed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from symbert.analysis.sizes import Size, add_to
from symbert.training.events import Alloc, Change, Event, Free, Mark, Steady
from symbert.training.states import CATEGORIES


@dataclass(frozen=True)
class Snapshot:
    """Memory right after an op allocated its outputs or gradients, before it freed anything.

    ``memory`` is bytes per category. ``hidden`` says, per block, what the runs that were not replayed
    hold at this point: nothing (``none``), what they keep for backward (``saved``), that and autocast's
    cached weight copies while the forward runs (``cached``), that and what a module's locals hold past
    the block's end until it returns (``holding``), their parameter gradients (``grads``), or, for an
    event in the middle run, either of two (``forward``: none or holding, else cached; ``backward``:
    grads or saved), since they may all come before it or all after it.
    """

    step: int
    phase: str
    label: str
    run: tuple[str, int] | None
    memory: Mapping[str, Size]
    hidden: Mapping[str, str]


class Ledger:
    """Sums a stream of allocation events (:mod:`symbert.training.events`) over the blocks ``blocks``."""

    def __init__(self, blocks: Iterable[str], events: Iterable[Event] = ()) -> None:
        blocks = list(blocks)
        self.totals: dict[str, Size] = {c: {} for c in CATEGORIES}
        self.middle: dict[str, dict[str, Size]] = {b: {c: {} for c in CATEGORIES} for b in blocks}
        self.steady: dict[str, dict[str, dict[str, Size]]] = {b: {} for b in blocks}
        self.snapshots: list[Snapshot] = []
        #: The categories changed since the last snapshot; the others share its sizes, which stay as they are.
        self._changed: set[str] = set()
        self.take(events)

    def take(self, events: Iterable[Event]) -> None:
        for event in events:
            if isinstance(event, Alloc):
                self.count(event, 1)
            elif isinstance(event, Free):
                self.count(event, -1)
            elif isinstance(event, Mark):
                last = self.snapshots[-1].memory if self.snapshots else {}
                memory = {c: dict(s) if c in self._changed or c not in last else last[c]
                          for c, s in self.totals.items()}
                self._changed.clear()
                self.snapshots.append(Snapshot(event.step, event.phase, event.label, event.run, memory, event.hidden))
            elif isinstance(event, Steady):
                for block in [event.block] if event.block else self.steady:
                    state = self.steady[block]
                    state.setdefault(event.what, {c: dict(s) for c, s in self.middle[block].items()})

    def count(self, change: Change, sign: int) -> None:
        """Add an allocation (``sign`` 1) or a free (−1): its bytes in its category, its rounding in the
        runtime's, and both in its block's middle run where it is one's. A kernel's scratch is the allocator's
        alone (kind ``scratch``)."""
        if change.kind == "scratch":
            return
        self._changed.update((change.category, "runtime"))
        add_to(self.totals[change.category], change.size, sign)
        add_to(self.totals["runtime"], change.pad, sign)
        if change.owner is not None and change.owner[1] == 1:
            add_to(self.middle[change.owner[0]][change.category], change.size, sign)
            add_to(self.middle[change.owner[0]]["runtime"], change.pad, sign)
