"""Record real CUDA allocation traces for a grid of training jobs, in one run on one GPU, and compare each with
symbert (``symbert validate --device cuda --record`` for every job of :data:`JOBS`).

    python scripts/record_gpu_fixtures.py --out tests/fixtures/gpu/recorded      # on a GPU, under 10 minutes
    python scripts/record_gpu_fixtures.py --dry-run                               # anywhere: lists and checks

Each job runs in a fresh process (the caching allocator and the cuBLAS workspaces start empty, as symbert's
replay starts them; a job with ``alloc_conf`` sets ``PYTORCH_ALLOC_CONF`` there), writes ``NAME.json`` into the
folder and prints one JSON line; the run stops starting jobs when the time left (``--budget``) is under the
slowest job so far, and ends with a table: measured and simulated peaks and the first request where symbert's
stream differs from the recorded one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from symbert.validate.record import Job


@dataclass(frozen=True)
class Spec:
    """One job of the grid: a preset (and head), the shape, and how it trains."""

    preset: str
    batch: int = 8
    seq_len: int = 128
    head: str | None = None
    amp: str | None = None
    attention: str = "eager"
    optimizer: str = "adamw-foreach"
    recompute: str = "none"
    alloc_conf: str | None = None

    @property
    def name(self) -> str:
        parts = (self.preset, self.head, f"b{self.batch}", f"s{self.seq_len}", self.amp or "fp32", self.attention,
                 self.optimizer, "recompute" if self.recompute == "full" else None,
                 self.alloc_conf and self.alloc_conf.replace(":", "-"))
        return "-".join(p for p in parts if p)

    def job(self) -> Job:
        """symbert's job: the config with no padding where the family models it (the attention mask is then all
        ones, and Hugging Face drops it)."""
        from symbert.configs import preset, resolve
        from symbert.validate.record import Job

        task = {"head": self.head} if self.head else None
        options = {"padding": False} if preset(self.preset).spec.option("padding") is not None else {}
        config = resolve(self.preset, None, (), task, **options)
        return Job(config, self.batch, self.seq_len, self.optimizer, self.attention, self.amp, self.recompute,
                   self.name)


JOBS = (
    Spec("bert-tiny"),
    Spec("bert-base", optimizer="adamw"),
    Spec("bert-base", amp="bfloat16"),
    Spec("bert-base", amp="bfloat16", attention="sdpa"),
    Spec("bert-base", amp="float16", attention="sdpa"),
    Spec("bert-base", head="mlm", amp="bfloat16", attention="sdpa"),
    Spec("bert-base", head="sequence-classification", optimizer="sgd"),
    Spec("bert-base", optimizer="adamw-fused"),
    Spec("bert-base", recompute="full"),
    Spec("bert-small", attention="sdpa", optimizer="sgd"),
    Spec("roberta-base", attention="sdpa"),
    Spec("modernbert-base", amp="bfloat16", attention="sdpa"),
    Spec("deberta-v3-small", batch=4),
    Spec("bert-base", alloc_conf="expandable_segments:True"),
)
"""The grid: families (BERT, RoBERTa, ModernBERT, DeBERTa-v3) from tiny to base; fp32, bf16 autocast and fp16
autocast with a GradScaler; eager and sdpa; the bare model and two heads; full recompute; SGD, AdamW foreach and
fused; and expandable segments."""


def check(spec: Spec) -> None:
    """A ValueError (symbert's ConfigError) where symbert cannot predict ``spec``'s job as given."""
    from symbert.validate.hf import ATTENTION
    from symbert.validate.record import training_of

    job = spec.job()
    if job.attention not in ATTENTION:
        raise ValueError(f"validate builds eager or sdpa attention, not {job.attention!r}")
    if job.config.max_length is not None and job.seq_len > job.config.max_length:
        raise ValueError(f"seq_len {job.seq_len} exceeds {job.config.max_length}")
    training_of(job, "h100")
    if spec.alloc_conf:
        from symbert.training.allocator import parse_config

        parse_config(spec.alloc_conf)


def run_one(spec: Spec, out: Path) -> dict:
    """Record ``spec`` on this process's GPU and compare it: the summary line's fields."""
    from symbert.validate.record import record_and_compare

    start = time.perf_counter()
    path, comparison = record_and_compare(spec.job(), out)
    peak = max(comparison.rows, key=lambda r: r[1])
    return {
        "job": spec.name, "file": path.name, "peak": peak[1], "simulated": max(r[2] for r in comparison.rows),
        "reserved": max(r[3] or 0 for r in comparison.rows), "simulated_reserved": max(r[4] for r in comparison.rows),
        "difference": str(comparison.difference) if comparison.difference else "none",
        "failed": comparison.failed, "seconds": round(time.perf_counter() - start, 1),
    }


def table(rows: list[dict]) -> str:
    columns = ("peak", "simulated", "error", "reserved", "simulated")
    head = f"{'job':<58} " + " ".join(f"{c:>{8 if c == 'error' else 14}}" for c in columns) + "  first difference"
    lines = [head]
    for r in rows:
        if "peak" not in r:
            lines.append(f"{r['job']:<58} {r['error']}")
            continue
        error = (r["simulated"] - r["peak"]) / r["peak"]
        lines.append(f"{r['job']:<58} {r['peak']:>14,} {r['simulated']:>14,} {error:>+8.3%} {r['reserved']:>14,} "
                     f"{r['simulated_reserved']:>14,}  {r['difference']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests/fixtures/gpu/recorded")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds the whole run may take")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs and check each is valid for symbert")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # one job, in this process
    args = parser.parse_args(argv)
    by_name = {spec.name: spec for spec in JOBS}
    if args.dry_run:
        for spec in JOBS:
            check(spec)
            print(f"{spec.name}: ok")
        print(f"{len(JOBS)} jobs")
        return 0
    if args.job:
        print(json.dumps(run_one(by_name[args.job], args.out)), flush=True)
        return 0
    start, slowest, rows = time.monotonic(), 0.0, []
    for spec in JOBS:
        left = args.budget - (time.monotonic() - start)
        if left < 1.5 * slowest or left <= 0:
            rows.append({"job": spec.name, "error": f"skipped: {max(left, 0):.0f} s left of the budget"})
            continue
        env = {**os.environ, **({"PYTORCH_ALLOC_CONF": spec.alloc_conf} if spec.alloc_conf else {})}
        began = time.monotonic()
        try:
            done = subprocess.run([sys.executable, __file__, "--job", spec.name, "--out", str(args.out)], env=env,
                                  capture_output=True, text=True, timeout=left)
            lines = done.stdout.strip().splitlines()
            rows.append(json.loads(lines[-1]) if done.returncode == 0 and lines else
                        {"job": spec.name, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]})
        except subprocess.TimeoutExpired:
            rows.append({"job": spec.name, "error": "stopped at the time budget"})
        slowest = max(slowest, time.monotonic() - began)
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(f"{time.monotonic() - start:.0f} s")
    return 0 if all("peak" in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
