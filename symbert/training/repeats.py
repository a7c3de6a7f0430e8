"""A block's middle runs, repeated: the requests of a replay of many runs from a replay of a few.

The middle runs of a block make the same requests from run to run, up to their keys and the run they name.
:func:`extend` takes the requests of a replay of ``K`` runs and writes those of ``L``: each phase's segment of
the middle run ``m`` (its requests from its first one to the next run's) copied ``L - K + 1`` times, keys
renumbered as the replay numbers them (in order, the ones left unused as well), frees and causes pointing at the
runs they would. :func:`symbert.training.stream.described` checks it against a replay of ``K + 1`` runs before it
trusts it, and replays every run where the two differ.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from typing import Any

Request = tuple

Segment = tuple[int, str, int]  # step, phase, run


class Mismatch(Exception):
    """The requests do not repeat as :func:`extend` needs."""


def extend(
    stream: list[Request], causes: Mapping[int, Any], m: int, extra: int
) -> tuple[list[Request], dict[int, Any]]:
    """``stream`` (one block's runs) with each phase's run ``m`` made ``extra + 1`` runs, the runs after it moved
    on by ``extra``; their causes. Raises :class:`Mismatch` where a request has no one place in the longer one."""
    segments: list[Segment | None] = []
    where: dict[int, Segment] = {}
    first: dict[Segment, int] = {}
    order: list[Segment] = []
    current: Segment | None = None
    for e in stream:
        if e[0] == "phase":
            current = None
        elif e[0] == "alloc":
            run = causes[e[1]].run
            if run is not None:
                cause = causes[e[1]]
                current = (cause.step, cause.phase, run)
            if current is not None:
                where[e[1]] = current
                if current not in first:
                    first[current] = e[1]
                    order.append(current)
        segments.append(current)
    span: dict[tuple[int, str], int] = {}
    rising: dict[tuple[int, str], bool] = {}
    for i, seg in enumerate(order):
        if seg[2] == m:
            if i + 1 >= len(order) or order[i + 1][:2] != seg[:2] or i == 0 or order[i - 1][:2] != seg[:2]:
                raise Mismatch(f"run {m} is not a middle run of {seg[:2]}")
            span[seg[:2]] = first[order[i + 1]] - first[seg]
            rising[seg[:2]] = order[i - 1][2] == m - 1
    starts = sorted(first[(*at, m)] for at in span)
    shifts = list(itertools.accumulate(extra * span[where[start][:2]] for start in starts))

    def moved(key: int) -> int:
        """``key`` moved on by the copies of the middle runs that start before it."""
        n = bisect.bisect_left(starts, key)
        return key + shifts[n - 1] if n else key

    def run_of(run: int) -> int:
        return run if run < m else run + extra

    def key_at(at: tuple[int, str], run: int, offset: int) -> int:
        """The key, in the longer stream, of the request ``offset`` keys after run ``run``'s first in ``at``."""
        if m <= run <= m + extra:
            copy = run - m if rising[at] else m + extra - run
            return moved(first[(*at, m)]) + copy * span[at] + offset
        old = run if run < m else run - extra
        key = first.get((*at, old), -1) + offset
        if where.get(key) != (*at, old):
            raise Mismatch(f"no request {offset} keys into run {old} of {at}")
        return moved(key)

    def rekey(key: int, run: int | None, old_run: int | None) -> int:
        """``key`` as a request made or freed in new run ``run`` (the stream's ``old_run``) sees it."""
        seg = where.get(key)
        if seg is None:
            return moved(key)
        if seg[2] != m and old_run != m:  # between runs kept: the same runs
            return key_at(seg[:2], run_of(seg[2]), key - first[seg])
        if run is None or old_run is None:
            raise Mismatch(f"a request outside the runs frees one of run {m}")
        return key_at(seg[:2], run + seg[2] - old_run, key - first[seg])  # to or from a copy: as far

    out: list[Request] = []
    new_causes: dict[int, Any] = {}

    def emit(e: Request, run: int | None, old_run: int | None) -> None:
        if e[0] == "phase":
            out.append(e)
            return
        key = rekey(e[1], run, old_run)
        out.append((e[0], key, *e[2:]))
        if e[0] == "alloc":
            cause = causes[e[1]]
            new_causes[key] = cause if cause.run is None else cause._replace(run=cause.run - (old_run or 0) + run)

    def freed_run(k: int) -> int | None:
        """The run whose request entry ``k`` frees, where it frees one made in a run."""
        e = stream[k] if 0 <= k < len(stream) else ("phase",)
        return where[e[1]][2] if e[0] == "free" and e[1] in where else None

    i = 0
    while i < len(stream):
        seg = segments[i]
        if seg is None and freed_run(i) == m:  # frees of every run's requests: run m's, repeated
            j = i
            while freed_run(j) == m:
                j += 1
            if {freed_run(i - 1), freed_run(j)} not in ({m - 1, m + 1}, {m - 1, None}, {None, m + 1}):
                raise Mismatch(f"frees of run {m}'s requests between others")
            rise = freed_run(i - 1) == m - 1 or freed_run(j) == m + 1
            for run in range(m, m + extra + 1) if rise else range(m + extra, m - 1, -1):
                for e in stream[i:j]:
                    at = where[e[1]]
                    out.append(("free", key_at(at[:2], run, e[1] - first[at])))
            i = j
            continue
        if seg is None or seg[2] != m:
            emit(stream[i], None if seg is None else run_of(seg[2]), None if seg is None else seg[2])
            i += 1
            continue
        j = i
        while j < len(stream) and segments[j] == seg:
            j += 1
        runs = range(m, m + extra + 1) if rising[seg[:2]] else range(m + extra, m - 1, -1)
        for run in runs:
            for e in stream[i:j]:
                emit(e, run, m)
        i = j
    return out, new_causes
