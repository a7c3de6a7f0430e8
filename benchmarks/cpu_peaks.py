"""`make bench`, part two: training-step peaks under CPU bf16 autocast, too large for the test suite.

Each job runs two real AdamW steps of a Hugging Face model under torch.profiler (6 to 8 GB of memory
each) and prints symbert's predicted peak beside the measured peak of tensors and the peak with the
kernels' scratch (:mod:`symbert.validate.peak`). Needs the validate extra.
"""

from __future__ import annotations

import sys
import time

import symbert
from symbert.validate.peak import check_peak

JOBS = [
    ("bert-base", 8, 512, "eager"),
    ("bert-base", 8, 512, "sdpa"),
    ("bert-large", 2, 512, "eager"),
]
"""The jobs: preset, batch, seq_len and attention (a padded batch, as symbert models by default)."""


def main() -> None:
    names = sys.argv[1:]
    for name, batch, length, attention in JOBS:
        if names and name not in names:
            continue
        start = time.perf_counter()
        c = check_peak(symbert.preset(name), batch, length, "adamw", attention=attention, amp="bfloat16")
        m = c.measured
        print(
            f"{name} B={batch} seq_len={length} {attention}, bf16 autocast, adamw: predicted {c.predicted:,}, "
            f"measured tensors {m.tensors:,} ({c.predicted - m.tensors:+,} bytes, step {m.where.step} "
            f"{m.where.name}), with scratch {m.peak:,} ({time.perf_counter() - start:.0f} s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
