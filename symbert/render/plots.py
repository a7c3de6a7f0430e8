"""Memory plots (matplotlib, Agg): the training-step peak against seq_len or batch, stacked by
category, and the timeline of training steps. PNG, SVG or PDF, chosen by the file's suffix.

``python -m symbert.render.plots DIR`` draws the figures of ``docs/rl-memory.md`` into DIR.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sympy

from symbert.api import per_gpu
from symbert.configs import Config, ConfigError, check_size
from symbert.formula import quantity
from symbert.outputs import check_output, write_output
from symbert.parallel import Layout
from symbert.symbols import B, seq_len
from symbert.training.oom import Simulation, applies
from symbert.training.states import CATEGORIES, Training
from symbert.training.step import step_memory

FORMATS = (".png", ".svg", ".pdf")
COLORS = {
    "weights": "#4c72b0",
    "gradients": "#55a868",
    "optimizer": "#c44e52",
    "attention": "#dd8452",
    "activations": "#8172b3",
    "runtime": "#937860",
}
#: The most x values a memory plot draws, and the most runs of repeated blocks a timeline plot draws
#: (it replays every run, event by event).
MAX_PLOT_POINTS = 100_000
MAX_TIMELINE_RUNS = 256
PHASE_SHADES = {"forward": "#f2f2f2", "backward": "#e4e4e4", "optimizer": "#fbe3e3"}
GIB = 2**30


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "symbert", "font.size": 9})
    return plt


def _setup(training: Training) -> str:
    """The setup in two lines: optimizer, precision and policy; then the device runtime and the versions modelled."""
    head, runtime, versions = training.describe().rsplit("; ", 2)
    return f"{head}\n{runtime}; {versions}"


def check_plot(path: str | Path) -> Path:
    """A plot's path: a known suffix, in a folder that exists (folders are never created)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"cannot write {path.name}: plots are {', '.join(FORMATS)}")
    return check_output(path)


def check_timeline_plot(config: Config, path: str | Path, layout: Layout | None = None) -> Path:
    """A timeline plot's path (see :func:`check_plot`), for a config with few enough runs to draw each."""
    path = check_plot(path)
    graph, sizes = per_gpu(config, layout)
    runs = sum(int(sympy.sympify(b.count).subs(sizes)) for b in graph.blocks.values())
    if runs > MAX_TIMELINE_RUNS:
        raise ConfigError(
            f"a timeline plot draws every event of every layer: {runs:,} layers are too many "
            f"(at most {MAX_TIMELINE_RUNS}); leave out --plot for the numbers"
        )
    return path


def _save(fig, path: Path) -> None:
    suffix = path.suffix.lower()
    metadata = {"Date": None} if suffix == ".svg" else {}
    if suffix == ".pdf":
        metadata = {"CreationDate": None, "ModDate": None}
    data = io.BytesIO()
    fig.savefig(data, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata or None)
    write_output(path, data.getvalue())


def _unit(largest: float) -> tuple[str, int]:
    """GiB for plots that reach one, else MiB."""
    return ("GiB", GIB) if largest >= GIB else ("MiB", 2**20)


def _budget(ax, budget: int | None, scale: int) -> None:
    if budget is not None:
        ax.axhline(budget / scale, color="black", linestyle="--", linewidth=1.2, zorder=4)
        ax.annotate(
            f"GPU budget {quantity(budget, 'bytes')}",
            (0.99, budget / scale),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            zorder=4,
        )


#: The most x values at which ``plot`` simulates the caching allocator (spread evenly, both ends included).
MAX_SIMULATED = 12


def simulated_curve(
    config: Config, training: Training, axis: str, fixed: int, xs: Sequence[int]
) -> list[tuple[int, int, int]]:
    """(x, allocated peak, reserved peak) of two training steps through the caching allocator's simulation, at up
    to :data:`MAX_SIMULATED` of ``xs``; none where the simulation does not apply (see :func:`applies`)."""
    if not applies(config, training):
        return []
    n = min(len(xs), MAX_SIMULATED)
    picks = sorted({xs[round(i * (len(xs) - 1) / max(n - 1, 1))] for i in range(n)})
    sim = Simulation(config, training, fixed if axis == "batch" else None)
    runs = [sim.run(x) if axis == "batch" else sim.run(fixed, x) for x in picks]
    return [(x, run.allocated, run.reserved) for x, run in zip(picks, runs, strict=True)]


def _simulated(ax, points: list[tuple[int, int, int]], scale: int) -> None:
    """The simulated allocated and reserved peaks as markers over the stacked peak."""
    if not points:
        return
    xs, allocated, reserved = (np.asarray(column, dtype=np.float64) for column in zip(*points, strict=True))
    ax.plot(xs, reserved / scale, "s", color="black", markerfacecolor="none", markersize=4, zorder=5, clip_on=False,
            gid="simulated-reserved", label="reserved (caching allocator)")
    ax.plot(xs, allocated / scale, "o", color="black", markersize=3, zorder=5, clip_on=False, gid="simulated-allocated",
            label="allocated (caching allocator)")


def memory_curve(config: Config, training: Training, axis: str, fixed: int, xs: Sequence[int]) -> np.ndarray:
    """The peak's bytes per category at each x (rows), with the other of batch and seq_len fixed."""
    x, other = (seq_len, B) if axis == "seq_len" else (B, seq_len)
    graph, sizes = per_gpu(config, training.memory.layout)
    memory = step_memory(graph, training, sizes)
    polys = memory.polynomials({**sizes, other: fixed}, (x,))
    _, parts = polys.breakdown(np.asarray(xs, dtype=np.int64))
    return parts


def plot_memory(
    config: Config,
    training: Training,
    axis: str,
    fixed: int,
    xs: Sequence[int],
    path: str | Path,
    budget: int | None = None,
) -> Path:
    """Peak memory of a training step against ``axis`` (``seq_len`` or ``batch``), stacked by category."""
    path = check_plot(path)
    check_size("batch" if axis == "seq_len" else "seq_len", fixed)
    if not len(xs) or len(xs) > MAX_PLOT_POINTS:
        raise ConfigError(f"a plot draws 1 to {MAX_PLOT_POINTS:,} points, got {len(xs):,}")
    for x in (min(xs), max(xs)):
        check_size(axis, x)
    plt = _pyplot()
    exact_parts = memory_curve(config, training, axis, fixed, xs)
    totals = exact_parts.sum(axis=1)
    simulated = simulated_curve(config, training, axis, fixed, xs)
    unit, scale = _unit(max(int(totals.max()), budget or 0, *(reserved for _, _, reserved in simulated)))
    parts = exact_parts.astype(np.float64) / scale
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.stackplot(xs, parts.T, labels=list(CATEGORIES.values()), colors=list(COLORS.values()), alpha=0.9)
    _simulated(ax, simulated, scale)
    _budget(ax, budget, scale)
    if budget is not None:
        over = np.nonzero(totals > budget)[0]
        if len(over) and over[0] > 0:
            largest = xs[over[0] - 1]
            right = largest > xs[0] + 0.7 * (xs[-1] - xs[0])
            ax.axvline(largest, color="black", linestyle=":", linewidth=1)
            ax.annotate(
                f"largest that fits: {largest}",
                (largest, 1),
                xycoords=("data", "axes fraction"),
                xytext=(-4 if right else 4, -12),
                textcoords="offset points",
                ha="right" if right else "left",
                fontsize=8,
            )
    other = f"batch {fixed}" if axis == "seq_len" else f"seq_len {fixed}"
    ax.set(xlabel=axis, ylabel=f"peak memory ({unit})", xlim=(xs[0], xs[-1]), ylim=(0, None))
    ax.set_title(f"{config.name}, {other}: peak of a training step\n{_setup(training)}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_timeline(
    config: Config, training: Training, batch: int, length: int, path: str | Path, budget: int | None = None
) -> Path:
    """Memory over two training steps, op by op, stacked by category, phases shaded, the peak marked.

    Each phase gets at least a twelfth of the width, so that the few events of an optimizer step show.
    """
    path = check_timeline_plot(config, path, training.memory.layout)
    check_size("batch", batch)
    check_size("seq_len", length)
    plt = _pyplot()
    graph, sizes = per_gpu(config, training.memory.layout, length)
    values = {**sizes, B: batch, seq_len: length}
    points = [p for p in step_memory(graph, training, values, full=True).timeline(values) if p.step]
    data = np.array([[p.bytes[c] for c in CATEGORIES] for p in points], dtype=np.float64)
    unit, scale = _unit(max(data.sum(axis=1).max(), budget or 0))
    data = data / scale
    phases: list[tuple[int, int]] = []
    for i, p in enumerate(points):
        if not phases or (p.step, p.phase) != (points[phases[-1][0]].step, points[phases[-1][0]].phase):
            phases.append((i, i))
        phases[-1] = (phases[-1][0], i + 1)
    x = np.zeros(len(points))
    offset = 0.0
    fig, ax = plt.subplots(figsize=(9, 4))
    for first, end in phases:
        width = max(end - first, len(points) / 12)
        x[first:end] = offset + (np.arange(end - first) + 0.5) * width / (end - first)
        p = points[first]
        if p.phase in PHASE_SHADES:
            ax.axvspan(offset, offset + width, color=PHASE_SHADES[p.phase], zorder=0)
            label = f"{p.phase}\nstep {p.step}"
            ax.text(offset + width / 2, 1.0, label, transform=ax.get_xaxis_transform(), ha="center", va="bottom")
        offset += width
    edges = np.concatenate([[0.0], x, [offset]])
    ends = np.concatenate([data[:1], data, data[-1:]])
    ax.stackplot(edges, ends.T, labels=list(CATEGORIES.values()), colors=list(COLORS.values()), step="mid", zorder=2)
    top = max(range(len(points)), key=lambda i: points[i].total)
    ax.annotate(
        f"peak {quantity(points[top].total, 'bytes')}\n{points[top].where}",
        (x[top], points[top].total / scale),
        xytext=(0.02, 0.97),
        textcoords="axes fraction",
        va="top",
        fontsize=8,
        arrowprops={"arrowstyle": "->", "color": "black"},
        zorder=3,
    )
    _budget(ax, budget, scale)
    ax.set(xlabel="allocation events in order", ylabel=f"memory ({unit})", xlim=(0, offset), ylim=(0, None))
    ax.set_xticks([])
    ax.set_title(f"{config.name}, batch {batch}, seq_len {length}: {_setup(training)}", fontsize=9, pad=30)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return path


def docs(directory: str | Path) -> list[Path]:
    """The figures of docs/rl-memory.md: BERT-base with AdamW on an 8 GiB GPU (torch-cuda policy)."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.configs import preset

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    base = preset("bert-base")
    budget = 8 * GIB
    eager = Training("adamw", "fp32", MemoryOptions("torch-cuda"))
    tuned = Training("adamw", "mixed", MemoryOptions("torch-cuda", attention="flash"))
    return [
        plot_timeline(base, eager, 12, 512, directory / "rl-timeline.png", budget),
        plot_memory(base, eager, "batch", 512, range(1, 33), directory / "rl-batch.png", budget),
        plot_memory(base, eager, "seq_len", 12, range(1, 513), directory / "rl-seq-len.png", budget),
        plot_memory(base, tuned, "batch", 512, range(1, 65), directory / "rl-batch-tuned.png", budget),
    ]


if __name__ == "__main__":
    for written in docs(sys.argv[1] if len(sys.argv) > 1 else "docs/img"):
        print(written)
