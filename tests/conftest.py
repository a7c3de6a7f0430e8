"""Shared fixtures: the validate extra (torch + transformers) is optional, and its tests skip without it."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from symbert import Config


def hf():
    """transformers, or a skip stating why the comparison cannot run."""
    pytest.importorskip("torch", reason="the validate extra (torch) is not installed: pip install -e .[validate]")
    return pytest.importorskip(
        "transformers", reason="the validate extra (transformers) is not installed: pip install -e .[validate]"
    )


def random_bert_configs(n: int, seed: int = 0) -> list[Config]:
    """Small random BERT configs, odd sizes included (heads of width 5, one head, one layer)."""
    rng = random.Random(seed)
    configs = []
    for i in range(n):
        heads = rng.randint(1, 4)
        values = {
            "vocab_size": rng.randint(5, 120),
            "hidden_size": heads * rng.choice((2, 5, 8, 12, 16)),
            "num_hidden_layers": rng.randint(1, 3),
            "num_attention_heads": heads,
            "intermediate_size": rng.randint(3, 70),
            "max_position_embeddings": rng.randint(8, 40),
            "type_vocab_size": rng.randint(1, 3),
        }
        configs.append(Config("bert", values, f"random-{i}", {"pooler": rng.random() < 0.7}))
    return configs


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "symbert", *args], capture_output=True, text=True, timeout=120)
