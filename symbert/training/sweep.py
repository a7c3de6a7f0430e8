"""Sweeps: quantities over grids of configs × setups × batch × seq_len, evaluated with numpy.

Every quantity at a config is a polynomial in B and seq_len with integer coefficients, or, for the
training-step peak, the largest of a few (:meth:`~symbert.training.step.StepMemory.polynomials`).
Each is compiled once per config and setup into a matrix of coefficients over the monomials
B^i·seq_len^j, then evaluated for a whole block of the grid at once, every polynomial exactly, and the
largest kept. A block is evaluated in int64 when a bound on its values proves that nothing can
overflow, else in Python integers (:mod:`symbert.training.exact`): never a wrapped-around number. Rows
are written as CSV by a vectorized integer formatter (Python's for values past int64); the setup's
text fields are quoted by the csv module.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import sympy

from symbert.analysis.activations import activations
from symbert.analysis.flops import flops
from symbert.analysis.params import params
from symbert.analysis.sizes import generator_values, generators
from symbert.api import per_gpu
from symbert.configs import MAX_SIZE, Config, ConfigError, read_int, show
from symbert.parallel import whole_sequence
from symbert.quantities import QUANTITIES as REPORT_QUANTITIES
from symbert.quantities import TRAINING_QUANTITIES
from symbert.symbols import ROUND, B, seq_len
from symbert.training import exact
from symbert.training.states import Training, model_states
from symbert.training.step import StepMemory, step_memory

#: Quantities a sweep can evaluate, in column order: a report's, then the training step's.
QUANTITIES = REPORT_QUANTITIES + TRAINING_QUANTITIES
SETUP_COLUMNS = (
    "config",
    "head",
    "policy",
    "dtype",
    "attention",
    "recompute",
    "optimizer",
    "precision",
    "gpu",
    "layout",
)
FREE = (B, seq_len)
CHUNK = 1 << 16
#: Grids of at least this many points show a progress bar (on a terminal).
PROGRESS_FROM = 200_000
#: The most points a sweep computes (configs × setups × batch × seq_len), and the most values one axis takes.
MAX_POINTS = 10**7
MAX_VALUES = 10**6
POWERS_OF_TEN = np.array([10**k for k in range(19)], dtype=np.int64)
#: Text of 0 … 999 as three digits and a filler byte, and of the separators, as little-endian uint32.
DIGIT_GROUPS = np.frombuffer("".join(f"{i:03d}_" for i in range(1000)).encode(), dtype="<u4")
SEPARATOR, NEWLINE = (np.frombuffer(c.encode() * 4, dtype="<u4")[0] for c in ",\n")


@dataclass(frozen=True)
class Compiled:
    """The largest of some polynomials in B and seq_len: ``coefficients[i, t]`` of term ``exponents[t]``,
    a monomial in B, seq_len and ``gens``, the sizes rounded up to a multiple (``⌈seq_len/32⌉``)."""

    exponents: tuple[tuple[int, ...], ...]
    coefficients: np.ndarray
    #: The allocator's rounding terms under a device runtime: ``pad512(pad_args[j] · terms)``, held
    #: ``pad_coefficients[i, j]`` times by polynomial i.
    pad_args: np.ndarray | None = None
    pad_coefficients: np.ndarray | None = None
    gens: tuple[sympy.Expr, ...] = ()

    @classmethod
    def of(cls, expr: sympy.Expr) -> Compiled:
        """One polynomial; every symbol but B and seq_len must already have its value."""
        expr = sympy.expand(expr)
        gens = generators([expr], FREE)
        poly = sympy.Poly(expr, *FREE, *gens).as_dict() or {(0,) * (len(FREE) + len(gens)): sympy.Integer(0)}
        if any(not c.is_Integer for c in poly.values()):
            raise ValueError(f"not a polynomial in B and seq_len with integer coefficients: {expr}")
        exponents = tuple(sorted(poly))
        return cls(exponents, exact.int_array([int(poly[k]) for k in exponents]).reshape(1, -1), gens=gens)

    @property
    def constant(self) -> int | None:
        """The value, when it depends on neither B nor seq_len."""
        return int(self.coefficients[:, 0].max()) if len(self.exponents) == 1 and not any(self.exponents[0]) else None

    def __call__(self, batch: np.ndarray, length: np.ndarray, tops: tuple[int, int] | None = None) -> np.ndarray:
        """The largest polynomial at each point, with its rounding terms, exactly: int64, or Python ints
        where int64 could overflow.

        ``tops`` may give the largest batch and length, when the caller knows them."""
        points = generator_values(self.gens, FREE, (batch, length))
        if tops is not None:
            tops = tuple(generator_values(self.gens, FREE, tops))
        rounding = None if self.pad_args is None else (self.pad_args, self.pad_coefficients, ROUND)
        return exact.polymax_rounded(self.exponents, self.coefficients, rounding, *points, tops=tops)


def compile_quantities(config: Config, training: Training, memory: StepMemory | None = None) -> dict[str, Compiled]:
    """Every quantity of :data:`QUANTITIES` at ``config``, compiled; ``memory`` may reuse a replay."""
    graph, values = per_gpu(config, training.memory.layout)
    f = flops(graph, training.memory, values)
    exprs = {
        "params": params(graph).total,
        "activation_bytes": activations(graph, training.memory, values).total,
        "flops_forward": f["forward"].total,
        "flops_backward": f["backward"].total,
        "non_matmul_forward": f["non_matmul_forward"].total,
    }
    states = model_states(graph, training)
    exprs |= {"weights": states["weights"], "gradients": states["gradients"], "optimizer_states": states["optimizer"]}
    layout = training.memory.layout
    out = {k: Compiled.of(whole_sequence(v, layout).subs(values)) for k, v in exprs.items()}
    polys = (memory or step_memory(graph, training, values)).polynomials(values, FREE)
    out["peak"] = Compiled(polys.exponents, polys.totals, polys.pad_args, polys.pad_totals, polys.gens)
    return out


_RANGE = re.compile(r"(\d+)(?::(\d+)(?::(\d+))?)?")


def parse_values(text: str, name: str) -> list[int]:
    """``8``, ``1,2,4``, ``1:64`` (inclusive) or ``16:512:16`` (with a step), read with regular expressions.

    Values are sizes up to :data:`symbert.configs.MAX_SIZE`, at most :data:`MAX_VALUES` of them.
    """
    out: set[int] = set()
    for part in text.split(","):
        match = _RANGE.fullmatch(part.strip())
        if not match:
            raise ConfigError(f"cannot read {name} {show(part.strip())} (examples: 8, 1,2,4, 1:64, 16:512:16)")
        start, stop, step = (read_int(name, g) if g else None for g in match.groups())
        if start < 1 or (step is not None and step < 1) or (stop is not None and stop < start):
            raise ConfigError(f"{name} {show(part.strip())} must count up from 1 or more")
        stop = stop if stop is not None else start
        if stop > MAX_SIZE:
            raise ConfigError(f"{name}={show(stop)} is larger than symbert accepts (sizes up to 10**12)")
        values = range(start, stop + 1, step or 1)
        if len(out) + len(values) > MAX_VALUES:
            raise ConfigError(f"{name} {show(text)} has more than {MAX_VALUES:,} values")
        out.update(values)
    return sorted(out)


def format_rows(prefix: bytes, columns: Sequence[np.ndarray | int]) -> bytes:
    """CSV rows: ``prefix``, then the non-negative integer columns, each row ending in a newline.

    A column given as one integer is the same on every row and is formatted once. Every other cell is
    cut into groups of three digits, as many as its column needs, each group is looked up as four bytes
    of text (three digits and a filler), and the fillers and leading zeros are dropped by one boolean
    selection over the block.
    """
    n = next((len(c) for c in columns if not isinstance(c, int)), None)
    if n is None:
        raise ValueError("format_rows needs at least one column of values")
    if any(isinstance(c, np.ndarray) and c.dtype == object for c in columns):
        return _format_rows_exact(prefix, columns, n)
    parts: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    text = prefix
    for i, column in enumerate(columns):
        end = NEWLINE if i == len(columns) - 1 else SEPARATOR
        if isinstance(column, int):
            if column < 0:
                raise ValueError("format_rows writes non-negative integers only")
            text += f"{column}".encode() + end.tobytes()[:1]
            continue
        head = np.frombuffer(text, dtype=np.uint8)
        parts.append(np.broadcast_to(head, (n, len(head))))
        masks.append(np.ones((n, len(head)), dtype=bool))
        text = b""
        values = np.asarray(column, dtype=np.int64)
        if (values < 0).any():
            raise ValueError("format_rows writes non-negative integers only")
        digits = np.maximum(1, np.searchsorted(POWERS_OF_TEN, values, side="right"))
        groups = -(-int(digits.max(initial=1)) // 3)
        cells = np.empty((n, groups + 1), dtype="<u4")
        rest = values
        for g in range(groups - 1, -1, -1):
            rest, limb = np.divmod(rest, 1000)
            cells[:, g] = np.take(DIGIT_GROUPS, limb)
        cells[:, groups] = end
        position = np.arange(4 * groups) % 4
        exponent = np.repeat(np.arange(3 * groups - 1, 0, -3), 4) - position
        keep = np.zeros((n, 4 * groups + 4), dtype=bool)
        keep[:, : 4 * groups] = (position < 3) & (exponent < digits[:, None])
        keep[:, 4 * groups] = True
        parts.append(cells.view(np.uint8))
        masks.append(keep)
    parts.append(np.broadcast_to(np.frombuffer(text, dtype=np.uint8), (n, len(text))))
    masks.append(np.ones((n, len(text)), dtype=bool))
    return np.concatenate(parts, axis=1)[np.concatenate(masks, axis=1)].tobytes()


def _format_rows_exact(prefix: bytes, columns: Sequence[np.ndarray | int], n: int) -> bytes:
    """:func:`format_rows` in Python integers, for blocks holding values past int64."""
    cells = [[f"{c}"] * n if isinstance(c, int) else [f"{int(v)}" for v in c] for c in columns]
    if any(v.startswith("-") for column in cells for v in column):
        raise ValueError("format_rows writes non-negative integers only")
    return b"".join(prefix + (",".join(row) + "\n").encode() for row in zip(*cells, strict=True))


def csv_line(fields: Sequence[object]) -> bytes:
    """One CSV row, quoted where a field needs it (a config named ``a,b``), ending in a newline."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(fields)
    return buffer.getvalue().encode()


def sweep(
    configs: Sequence[Config],
    trainings: Sequence[Training],
    batches: Sequence[int],
    lengths: Sequence[int],
    quantities: Sequence[str] = QUANTITIES,
    out: BinaryIO | None = None,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Write the header and one CSV row per grid point to ``out``; returns the number of points.

    Lengths beyond a config's positions are left out for that config.
    """
    check_quantities(quantities)
    check_grid(configs, trainings, batches, lengths)
    if out is not None:
        out.write(csv_line((*SETUP_COLUMNS, "batch", "seq_len", *quantities)))
    memories: dict[tuple, StepMemory] = {}
    total = 0
    for config in configs:
        usable = [s for s in lengths if config.max_length is None or s <= config.max_length]
        for training in (t.for_model(config.spec) for t in trainings):
            memory = _memory(config, training, memories) if "peak" in quantities else None
            compiled = compile_quantities(config, training, memory)
            m = training.memory
            setup = (config.name, config.task.head, m.policy, m.activation_dtype, m.attention, m.recompute)
            gpu = training.gpu or ("cuda" if training.runtime else "")
            prefix = csv_line((*setup, training.optimizer, training.precision, gpu, m.layout.tag, ""))[:-1]
            for batch, length in grid_blocks(batches, usable):
                tops = (int(batch.max()), int(length.max()))
                values = [compiled[q].constant for q in quantities]
                values = [
                    compiled[q](batch, length, tops) if v is None else v
                    for q, v in zip(quantities, values, strict=True)
                ]
                columns = [batch, length, *values]
                if out is not None:
                    out.write(format_rows(prefix, columns))
                total += len(batch)
                if advance:
                    advance(len(batch))
    return total


def grid(
    configs: Sequence[Config], trainings: Sequence[Training], batches: str, lengths: str
) -> tuple[list[Config], list[Training], list[int], list[int]]:
    """The grid of configs × setups × batch × seq_len, the values read as the command reads them
    (:func:`parse_values`), checked (:func:`check_grid`)."""
    found = (list(configs), list(trainings), parse_values(batches, "batch"), parse_values(lengths, "seq_len"))
    check_grid(*found)
    return found


def grid_size(
    configs: Sequence[Config], trainings: Sequence[Training], batches: Sequence[int], lengths: Sequence[int]
) -> int:
    """How many points :func:`sweep` writes."""
    usable = sum(len([s for s in lengths if c.max_length is None or s <= c.max_length]) for c in configs)
    return usable * len(trainings) * len(batches)


def check_quantities(quantities: Sequence[str]) -> None:
    unknown = [q for q in quantities if q not in QUANTITIES]
    if unknown:
        raise ConfigError(f"unknown quantity {show(unknown[0])} (choose from {', '.join(QUANTITIES)})")


def check_grid(
    configs: Sequence[Config], trainings: Sequence[Training], batches: Sequence[int], lengths: Sequence[int]
) -> None:
    """Refuse a grid with a value that is not a size, a setup Hugging Face does not run a config's
    family with, or more than :data:`MAX_POINTS` points."""
    for config in configs:
        for training in trainings:
            training.for_model(config.spec)
    for name, values in (("batch", batches), ("seq_len", lengths)):
        for value in (min(values), max(values)) if len(values) else ():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 1 <= value <= MAX_SIZE:
                raise ConfigError(f"{name} values must be integers from 1 to 10**12, got {show(value)}")
    total = grid_size(configs, trainings, batches, lengths)
    if total > MAX_POINTS:
        raise ConfigError(f"the sweep has {total:,} points; at most {MAX_POINTS:,}")


def _memory(config: Config, training: Training, cache: dict[tuple, StepMemory]) -> StepMemory:
    """One replay per model, structure, head, setup and replayed run count, shared by the configs that match."""
    graph, sizes = per_gpu(config, training.memory.layout)
    runs = tuple((n, min(int(sympy.sympify(b.count).subs(sizes)), 3)) for n, b in graph.blocks.items())
    task = (config.task.head, config.task.problem)
    key = (config.model, tuple(sorted(config.structure().items())), task, training, runs)
    if key not in cache:
        cache[key] = step_memory(graph, training, sizes)
    return cache[key]


def grid_blocks(batches: Sequence[int], lengths: Sequence[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The grid batch × length, batch-major, in blocks of about :data:`CHUNK` points."""
    b = np.asarray(batches, dtype=np.int64)
    s = np.asarray(lengths, dtype=np.int64)
    if not len(b) or not len(s):
        return
    rows = max(1, CHUNK // len(s))
    for i in range(0, len(b), rows):
        part = b[i : i + rows]
        yield np.repeat(part, len(s)), np.tile(s, len(part))
