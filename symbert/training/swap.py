"""Another optimizer swapped into a replay, without walking the steps again.

The optimizer enters a replay through what loading the model states allocates
(:func:`~symbert.training.optimizer.load`) and through the optimizer steps
(:func:`~symbert.training.optimizer.optimizer_step`, which reads the plan alone); the walk of forward and
backward emits the same events whatever the optimizer, and zero_grad frees the same gradients. The ledger is
a sum, so under another optimizer each snapshot of the walk holds what the base replay's does plus a
difference per category, the same from one optimizer step to the next: what the other optimizer's loading
and steps so far left, less the base's. Its optimizer steps are replayed on their own, from the base's
memory at the end of backward. :meth:`OptimizerSwap.of` gives the candidates a replay of its own gives.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from symbert.analysis.sizes import Size, add_to
from symbert.training.emitter import Emitter
from symbert.training.ledger import Ledger
from symbert.training.optimizer import load, optimizer_step
from symbert.training.plan import Plan
from symbert.training.states import CATEGORIES, Training
from symbert.training.step import Candidate, StepMemory

Memory = Mapping[str, Size]


def _sum(*parts: tuple[Memory, int]) -> dict[str, Size]:
    """Per category, the sum of ``memory × sign`` over ``parts``."""
    out: dict[str, Size] = {c: {} for c in CATEGORIES}
    for memory, sign in parts:
        for c, size in memory.items():
            add_to(out[c], size, sign)
    return out


def _emitted(plan: Plan, emit: Callable[[Emitter], None], step: int = 0, hidden: Mapping[str, str] | None = None
             ) -> Ledger:
    """The ledger of what ``emit`` alone allocates and frees under ``plan``, at ``step`` with the runs not
    replayed standing as ``hidden``."""
    emitter = Emitter(plan)
    emitter.step = step
    emitter.hidden = dict(hidden or emitter.hidden)
    emit(emitter)
    return Ledger(plan.graph.blocks, emitter.stream)


@dataclass(frozen=True)
class Swapped:
    """The replay of ``base``'s steps under another optimizer: ``shifts[s]``, per category, what every
    snapshot of step s's walk holds beyond the base's (step 0: loading), and ``updates[s]``, the candidates
    of step s's optimizer phase."""

    base: StepMemory
    shifts: Mapping[int, Memory]
    updates: Mapping[int, list[Candidate]]

    def candidates(self) -> list[Candidate]:
        """Every candidate, in the order a replay of its own lists them."""
        out: list[Candidate] = []
        for c in self.base.candidates:
            step = c.event.step
            if c.event.phase != "optimizer":
                out.append(Candidate(c.event, _sum((c.memory, 1), (self.shifts[step], 1)), c.index))
            elif not out or out[-1].event.phase != "optimizer":
                out += self.updates[step]
        return out


class OptimizerSwap:
    """The replays of ``base``'s steps under other optimizers (:meth:`of`), what the base's loading and
    optimizer steps emit computed once."""

    def __init__(self, base: StepMemory) -> None:
        self.base = base
        self.marks = {(e.step, e.label): e for e in base.events}
        self.steps = sorted({e.step for e in base.events} - {0})
        self.loaded = _emitted(base.plan, load).totals
        self.stepped = {s: self._stepped(base.plan, s).totals for s in self.steps}

    def _stepped(self, plan: Plan, step: int) -> Ledger:
        """What optimizer step ``step`` alone emits under ``plan``."""
        emit = functools.partial(optimizer_step, first=step == 1)
        return _emitted(plan, emit, step, self.marks[step, "end of backward"].hidden)

    def of(self, training: Training) -> Swapped:
        """The replay under ``training``, which differs from the base's in the optimizer alone."""
        base, plan = self.base, self.base.plan.with_optimizer(training)
        shift = _sum((_emitted(plan, load).totals, 1), (self.loaded, -1))
        shifts, updates = {0: shift}, {}
        for step in self.steps:
            shifts[step] = shift
            end, zeroed = self.marks[step, "end of backward"], self.marks[step, "zero_grad"]
            own = self._stepped(plan, step)
            snapshots = [replace(s, memory=_sum((end.memory, 1), (shift, 1), (s.memory, 1))) for s in own.snapshots]
            net = _sum((own.totals, 1), (self.stepped[step], -1))
            snapshots.append(replace(zeroed, memory=_sum((zeroed.memory, 1), (shift, 1), (net, 1))))
            updates[step] = [c for s in snapshots for c in base.candidates_at(s)]
            shift = _sum((shift, 1), (net, 1))
        return Swapped(base, shifts, updates)
