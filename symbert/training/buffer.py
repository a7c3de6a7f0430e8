"""One allocation while it lives, as the driver (:mod:`symbert.training.driver`) tracks it."""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from symbert.analysis.sizes import Size, add_to, expr_of, size_of
from symbert.symbols import pad512, settled
from symbert.training.events import State
from symbert.training.plan import Run


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
