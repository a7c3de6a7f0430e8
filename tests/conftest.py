"""Shared fixtures: the validate extra (torch + transformers) is optional, and its tests skip without it."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sympy

from symbert import Config, trace
from symbert import symbols as s
from symbert.analysis.policy import ATTENTION_CALL
from symbert.models import MODELS

#: The checkout's root.
ROOT = Path(__file__).resolve().parent.parent

#: A small BERT with odd sizes (three heads of width 32, an intermediate size that is not 4H).
H96_L3 = {
    "vocab_size": 97,
    "hidden_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 3,
    "intermediate_size": 200,
    "max_position_embeddings": 40,
    "type_vocab_size": 2,
}


def hf():
    """transformers, or a skip stating why the comparison cannot run."""
    pytest.importorskip("torch", reason="the validate extra (torch) is not installed: pip install -e .[validate]")
    return pytest.importorskip(
        "transformers", reason="the validate extra (transformers) is not installed: pip install -e .[validate]"
    )


def random_configs(model: str, n: int, seed: int = 0) -> list[Config]:
    """Small random configs of a model family, odd sizes included (heads of width 5, one head, one layer)."""
    rng = random.Random(seed)
    spec = MODELS[model]
    configs = []
    for i in range(n):
        heads = rng.randint(1, 4)
        by_symbol = {
            s.vocab_size: rng.randint(5, 120),
            s.E: rng.randint(2, 40),
            s.H: heads * rng.choice((2, 5, 8, 12, 16)),
            s.L: rng.randint(2 if spec.check else 1, 3),
            s.A: heads,
            s.I: rng.randint(3, 70),
            s.position_size: rng.randint(8, 40),
            s.type_size: rng.randint(1, 3),
        }
        if s.global_every in spec.fields.values():  # ModernBERT: a window, a global period, heads of even width
            heads = max(heads, 2)
            by_symbol |= {s.window: rng.randint(2, 6), s.global_every: rng.randint(2, 4), s.A: heads}
            by_symbol[s.H] = heads * 2 * rng.randint(1, 6)
        # A family's own sizes (DeBERTa's position buckets) take a small value.
        values = {key: by_symbol.get(symbol) or rng.randint(2, 12) for key, symbol in spec.fields.items()}
        options = {"pooler": rng.random() < 0.7} if spec.option("pooler") else {}
        configs.append(Config(model, values, f"{model}-random-{i}", options))
    return configs


def has_sdpa(config: Config) -> bool:
    """Whether the family's attention can run as one SDPA call (DeBERTa's is eager only)."""
    return any(ATTENTION_CALL in n.regions for n in trace(config).nodes)


def random_bert_configs(n: int, seed: int = 0) -> list[Config]:
    return random_configs("bert", n, seed)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess, as a user would; COLUMNS is unset unless ``env`` sets it."""
    environ = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | (env or {})
    if cwd is not None:  # the subprocess still imports this checkout's symbert
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), environ.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-m", "symbert", *args], capture_output=True, text=True, timeout=120, env=environ, cwd=cwd
    )


def traced_param_shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """Every traced parameter's name and shape at ``config``; a group of layers repeated as one block
    (ModernBERT's ``layers.global``, ``layers.local``, DeBERTa's ``layer.rest``) stands where Hugging Face
    has a layer index, and is dropped like it, as is the index of a layer traced apart (DeBERTa's
    ``layer.0``; :func:`hf_param_shapes`)."""
    values = config.symbols()
    return {
        re.sub(r"\.(global|local|rest|\d+)(?=\.)", "", p.name): tuple(
            int(sympy.sympify(d).subs(values)) for d in p.shape
        )
        for node in trace(config).nodes
        for p in node.params
    }


def hf_param_shapes(model) -> dict[str, tuple[int, ...]]:
    """A torch model's parameter names, layer indices dropped, and shapes."""
    return {re.sub(r"\.\d+(?=\.)", "", name): tuple(p.shape) for name, p in model.named_parameters()}


@pytest.fixture(scope="session")
def explore_page(tmp_path_factory):
    """bert-tiny's explore page with a narrowed calculator (32 setups), written once per session; its
    path, the setups' axes and the command's training setup."""
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: make system-deps")
    from symbert.analysis.policy import MemoryOptions
    from symbert.configs import preset
    from symbert.render.explore import Axes, page
    from symbert.training.states import Training

    axes = Axes(("fp32", "amp"), ("eager", "sdpa"), ("none", "full"), ("adamw", "sgd"), ("h100", "t4"))
    base = Training("adamw", "fp32", MemoryOptions("torch-cuda"), "h100")
    path = tmp_path_factory.mktemp("explore") / "bert-tiny.html"
    path.write_text(page([preset("bert-tiny")], base, 8, 128, ([2], [8, 16]), axes), encoding="utf-8")
    return path, axes, base
