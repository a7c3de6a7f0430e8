"""What the walk of a training step emits events with: an :class:`Emitter`, and the :class:`Buffer` of each
allocation while it lives (:mod:`symbert.training.driver` walks; :mod:`symbert.training.gradients`,
:mod:`symbert.training.gathers` and :mod:`symbert.training.optimizer` allocate through it)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy

from symbert.analysis.sizes import Size, add_to, expr_of, size_of
from symbert.symbols import pad512, settled
from symbert.training.events import Alloc, Event, Free, Mark, State
from symbert.training.plan import Plan
from symbert.training.units import Run


@dataclass(eq=False)
class Buffer:
    """An allocation: its id in the stream, the bytes it holds now and their rounding, and its references."""

    id: int
    size: Size
    category: str
    owner: Run | None
    pad: Size
    kind: str = "tensor"
    requests: tuple | None = None
    state: State | None = None
    refs: int = 1

    def take(self, viewed: Buffer, view: sympy.Expr) -> None:
        """This output is a view of ``viewed`` where the bracket ``view`` holds: that share of the storage moves
        to it, to be freed with it. pad512(X) splits into pad512((1 − [c])·X) + pad512([c]·X), each a rounding
        term the closed forms compile."""
        moved = size_of(settled(view * expr_of(viewed.size)))
        viewed.size, self.size = {**viewed.size}, {**self.size}
        add_to(viewed.size, moved, -1)
        add_to(self.size, moved)
        parts: tuple[Size, Size] = ({}, {})
        for term, count in viewed.pad.items():
            for part, share in zip(parts, (1 - view, view), strict=True):
                split = pad512(settled(share * term.args[0])) if isinstance(term, pad512) else settled(share * term)
                if split != 0:
                    add_to(part, {split: count})
        viewed.pad, self.pad = parts[0], {**self.pad}
        add_to(self.pad, parts[1])


class Emitter:
    """Allocates, frees and marks, appending the events to :attr:`stream`, each with the current cause (an op's
    label and scope, or what the step is doing), step and phase."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.stream: list[Event] = []
        self._ids = itertools.count()
        self.step, self.phase, self.cause, self.scope = 0, "start", "model states", ""
        #: Per block, where the runs not replayed stand (see :class:`symbert.training.ledger.Snapshot`).
        self.hidden = dict.fromkeys(plan.graph.blocks, "none")

    def alloc(
        self,
        size: Size,
        category: str,
        owner: Run | None,
        kind: str = "tensor",
        pad: Size | None = None,
        requests: tuple | None = None,
        state: State | None = None,
    ) -> Buffer:
        """Allocate ``size`` bytes (the runtime's rounding added unless ``pad`` says otherwise)."""
        pad = self.plan.pad_of(size) if pad is None else pad
        buf = Buffer(next(self._ids), size, category, owner, pad, kind, requests, state)
        self.emit(Alloc, buf)
        return buf

    def release(self, buf: Buffer) -> None:
        """Drop one reference; the memory goes with the last one."""
        buf.refs -= 1
        if buf.refs == 0:
            self.emit(Free, buf)

    def emit(self, change: type[Alloc | Free], buf: Buffer) -> None:
        self.stream.append(change(buf.id, buf.size, buf.pad, buf.category, buf.owner, self.cause, self.scope,
                                  self.step, self.phase, buf.kind, buf.requests, buf.state))

    def record(self, label: str, run: tuple[str, int] | None = None) -> None:
        """Memory is read here (see :class:`symbert.training.events.Mark`)."""
        self.stream.append(Mark(label, run, self.step, self.phase, dict(self.hidden)))
