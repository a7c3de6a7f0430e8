"""Per-GPU memory against the parallel degrees: the training-step peak on the most loaded GPU for
tensor parallelism t (x axis) and data parallelism d (one line each), one panel per ZeRO stage.

``python -m symbert.render.layout_plot DIR`` draws the figure of ``docs/parallel.md`` into DIR.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from symbert.api import per_gpu, spread_of
from symbert.configs import Config
from symbert.parallel import Layout
from symbert.render.plots import GIB, _budget, _pyplot, _save, _setup, check_plot
from symbert.symbols import B, seq_len
from symbert.training.states import Training
from symbert.training.step import StepMemory, step_memory

MARKERS = "osD^v"


def layout_peaks(
    config: Config, training: Training, stage: int, ts: Sequence[int], ds: Sequence[int], batch: int, length: int
) -> dict[int, list[int]]:
    """The peak per GPU, by d, at each t (ZeRO ``stage`` where d > 1), with one replay per kind of layout."""
    replays: dict[tuple, StepMemory] = {}
    out: dict[int, list[int]] = {}
    for d in ds:
        row = []
        for t in ts:
            layout = Layout(tensor=t, data=d, zero=stage if d > 1 else 0)
            setup = replace(training, memory=replace(training.memory, layout=layout))
            graph, sizes = per_gpu(config, layout)
            key = (spread_of(layout), d > 1, layout.zero)
            if key not in replays:
                replays[key] = step_memory(graph, setup, sizes)
            row.append(replays[key].peak({**sizes, B: batch, seq_len: length}).total)
        out[d] = row
    return out


def plot_layouts(
    configs: Sequence[Config],
    training: Training,
    stages: Sequence[int],
    ts: Sequence[int],
    ds: Sequence[int],
    batch: int,
    length: int,
    path: str | Path,
    budget: int | None = None,
) -> Path:
    """A grid of panels, one row per config and one column per ZeRO stage: peak per GPU against t, by d."""
    path = check_plot(path)
    plt = _pyplot()
    fig, axes = plt.subplots(len(configs), len(stages), figsize=(3.4 * len(stages), 3 * len(configs)), squeeze=False)
    for row, config in zip(axes, configs, strict=True):
        for ax, stage in zip(row, stages, strict=True):
            peaks = layout_peaks(config, training, stage, ts, ds, batch, length)
            for (d, row_peaks), marker in zip(peaks.items(), MARKERS[: len(peaks)], strict=True):
                ax.plot(ts, [x / GIB for x in row_peaks], marker=marker, label=f"d={d}")
            _budget(ax, budget, GIB)
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(ts), [str(t) for t in ts])
            ax.set(xlabel="tensor parallel t", ylabel="peak per GPU (GiB)", ylim=(0, None))
            ax.set_title(f"{config.name}, ZeRO {stage}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.suptitle(f"micro-batch {batch}, seq_len {length}; {_setup(training)}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def docs(directory: str | Path) -> list[Path]:
    """The figure of docs/parallel.md: bert-large and bert-1.3b, mixed-precision Adam (megatron policy, the
    ZeRO paper's accounting), micro-batch 4 at seq_len 512, against a 40 GB A100."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.configs import preset
    from symbert.gpus import gpu

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    training = Training("adamw", "mixed", MemoryOptions("megatron"))
    configs = [preset("bert-large"), preset("bert-1.3b")]
    path = directory / "parallel-memory.png"
    budget = gpu("a100-40gb").memory
    return [plot_layouts(configs, training, (0, 2, 3), (1, 2, 4, 8), (1, 2, 4, 8), 4, 512, path, budget)]


if __name__ == "__main__":
    for written in docs(sys.argv[1] if len(sys.argv) > 1 else "docs/img"):
        print(written)
