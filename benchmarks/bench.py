"""`make bench`: speed figures, printed. Targets are stated next to each figure, never asserted in tests."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import symbert
from symbert.api import _trace


def wall(cmd: list[str], runs: int = 5) -> float:
    """Median wall time of a command, in seconds."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        _trace.cache_clear()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    base = symbert.preset("bert-base")
    for layers in (12, 1000):
        config = symbert.with_overrides(base, [f"num_hidden_layers={layers}"])

        def symbolic(config=config):
            p = symbert.params(symbert.trace(config))
            return p.evaluate(p.total, config.symbols())

        print(f"trace + params, symbolic repeat, L={layers:>4}: {timed(symbolic) * 1000:7.1f} ms")
    for layers in (12, 100):
        config = symbert.with_overrides(base, [f"num_hidden_layers={layers}"])
        seconds = timed(lambda c=config: symbert.trace(c, unroll=True), 1)
        print(f"trace, unrolled,                L={layers:>4}: {seconds * 1000:7.1f} ms")

    report = wall(
        [sys.executable, "-m", "symbert", "report", "--preset", "bert-base", "--batch", "32", "--seq-len", "512"]
    )
    imports = wall([sys.executable, "-c", "import sympy, networkx"])
    print(f"symbert report --preset bert-base --batch 32 --seq-len 512: {report:.3f} s (median of 5)")
    print(f"python -c 'import sympy, networkx':                         {imports:.3f} s (median of 5)")
    print(f"ratio: {report / imports:.2f}x (target: within 2x)")


if __name__ == "__main__":
    main()
