"""Training-step memory: model states against ZeRO's table, the replay against hand-worked cases."""

from __future__ import annotations

import json

import pytest
import sympy
from conftest import random_configs, run_cli

import symbert
from symbert.analysis.activations import activations
from symbert.analysis.params import params
from symbert.analysis.policy import MemoryOptions
from symbert.symbols import B, seq_len
from symbert.training.states import CATEGORIES, Training, model_states
from symbert.training.step import phases, step_memory

S = seq_len
CUDA = MemoryOptions("torch-cuda")

#: Bytes per parameter (weights, gradients, optimizer states): ZeRO (Rajbhandari et al. 2020) for mixed
#: Adam; fp32 Adam keeps two fp32 moments; momentum one buffer; mixed precision adds fp32 master weights.
TABLE = {
    ("sgd", "fp32"): (4, 4, 0),
    ("momentum", "fp32"): (4, 4, 4),
    ("adam", "fp32"): (4, 4, 8),
    ("adamw", "fp32"): (4, 4, 8),
    ("sgd", "mixed"): (2, 2, 4),
    ("momentum", "mixed"): (2, 2, 8),
    ("adam", "mixed"): (2, 2, 12),
    ("adamw", "mixed"): (2, 2, 12),
}


@pytest.mark.parametrize(("optimizer", "precision"), sorted(TABLE))
def test_model_states_per_parameter(optimizer: str, precision: str) -> None:
    graph = symbert.trace()
    p = params(graph).total
    states = model_states(graph, Training(optimizer, precision, CUDA))
    assert [
        sympy.expand(states[k] - b * p)
        for k, b in zip(("weights", "gradients", "optimizer"), TABLE[optimizer, precision], strict=True)
    ] == [0, 0, 0]


def test_zero_mixed_adam_is_16_bytes_per_parameter() -> None:
    states = model_states(symbert.trace(), Training("adam", "mixed", CUDA))
    total = states["weights"] + states["gradients"] + states["optimizer"]
    assert symbert.params(symbert.trace()).evaluate(total, symbert.preset("bert-base").symbols()) == 16 * 109482240


def test_cpu_adam_keeps_a_step_counter_per_parameter_tensor() -> None:
    """torch.optim.Adam on CPU keeps a float32 step tensor per parameter: BERT-base has 5 + 16·L + 2 tensors."""
    base = symbert.preset("bert-base")
    cpu = model_states(symbert.trace(), Training("adamw", "fp32", MemoryOptions("torch-cpu")))["optimizer"]
    extra = sympy.sympify(cpu).subs(base.symbols()) - 8 * 109482240
    assert extra == 4 * (5 + 16 * 12 + 2)


def _at(config: symbert.Config, batch: int, length: int) -> dict:
    return {**config.symbols(), B: batch, S: length}


def test_update_peak_by_hand_for_the_cpu_for_loop() -> None:
    """Tiny batch: the peak is AdamW's update of the word embeddings (first parameter): weights, gradients,
    two moments (16 bytes per parameter), the step counters, and the update's square root and
    denominator of that parameter (2 × 4 bytes per element); plus the three int64 inputs, and the Python
    number the update wraps as a float64 scalar and casts to float32 (8 + 4 bytes)."""
    base = symbert.preset("bert-base")
    training = Training("adamw", "fp32", MemoryOptions("torch-cpu"))
    peak = step_memory(symbert.trace(base), training, base.symbols()).peak(_at(base, 1, 1))
    by_hand = 16 * 109482240 + 4 * 199 + 8 * 30522 * 768 + 3 * 8 + 8 + 4
    assert (peak.total, peak.phase, peak.step) == (by_hand, "optimizer", 1)


def test_foreach_update_takes_a_square_root_of_every_parameter() -> None:
    """20 bytes per parameter, the three int64 inputs (8 bytes, each rounded up to 512 by the caching
    allocator) and the CUDA runtime's workspaces: two cuBLAS workspaces of the default
    ``:4096:2:16:8`` (4096 KiB × 2 + 16 KiB × 8 each) and the 1 MiB cuBLASLt workspace. Every bert-base
    parameter tensor has a dimension of 768 or 3072, so 4 bytes each rounds to nothing. On the GPU too: the
    embeddings' two registered [1, 512] int64 buffers, which the real H100 trace's loading shows
    (tests/test_allocator_stream.py)."""
    base = symbert.preset("bert-base")
    peak = step_memory(symbert.trace(base), Training("adamw", "fp32", CUDA), base.symbols()).peak(_at(base, 1, 1))
    workspaces = 2 * (4096 * 1024 * 2 + 16 * 1024 * 8) + 1024 * 1024
    buffers = 2 * 8 * 512
    assert peak.total == 20 * 109482240 + buffers + 3 * 512 + workspaces
    assert peak.bytes["runtime"] == 3 * (512 - 8) + workspaces


def test_optimizer_states_appear_at_the_first_update() -> None:
    tiny = symbert.preset("bert-tiny")
    values = _at(tiny, 2, 8)
    points = step_memory(symbert.trace(tiny), Training("adamw", "fp32", CUDA), values, full=True).timeline(values)
    states = 8 * 4385920
    before = [p.bytes["optimizer"] for p in points if p.step == 1 and p.phase in ("forward", "backward")]
    after = [p.bytes["optimizer"] for p in points if p.step == 2 and p.phase in ("forward", "backward")]
    assert set(before) == {0} and set(after) == {states}
    assert [(p.step, p.name) for p in phases(points)] == [
        (s, n) for s in (1, 2) for n in ("forward", "backward", "optimizer")
    ]


OPTIONS = [
    MemoryOptions(),
    MemoryOptions("torch-cuda", "bfloat16"),
    MemoryOptions("megatron"),
    MemoryOptions(attention="flash"),
    MemoryOptions(recompute="selective"),
    MemoryOptions(recompute="full"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=MemoryOptions.describe)
def test_end_of_forward_holds_what_autograd_saves(options: MemoryOptions) -> None:
    """After forward, activation memory is exactly what the saved-tensor pass (itself exact against
    PyTorch) keeps, plus the caller's attention mask (int64, read but not saved) and the bare model's
    loss, the caller's 4-byte sum of its outputs, made when the forward returns; on CPU each layer's
    eager attention also keeps the Python number its scores are scaled by, an 8-byte tensor autograd
    saves without calling saved_tensors_hooks (so not counted as saved bytes)."""
    graph = symbert.trace()
    memory = step_memory(graph, Training("sgd", memory=options))
    event = next(e for e in memory.events if e.label == "end of forward")
    held = sympy.Add(
        *(c * m for c, s in event.memory.items() if c in ("attention", "activations") for m, c in s.items())
    )
    kept = activations(graph, options).total
    identities = {symbert.symbols.L: 3, symbert.symbols.E: symbert.symbols.H}
    numbers = 8 * 3 if (options.policy, options.attention, options.recompute) == ("torch-cpu", "eager", "none") else 0
    assert sympy.expand((held - kept).subs(identities)) == 8 * B * S + numbers + 4


CONFIGS = [
    symbert.preset("bert-base"),
    symbert.with_overrides(symbert.preset("bert-tiny"), ["num_hidden_layers=5"]),
    symbert.preset("albert-base-v2"),
    symbert.preset("distilbert-base-uncased"),
    *random_configs("roberta", 2, seed=3),
]
SETUPS = [
    Training("adamw", "fp32", MemoryOptions()),
    Training("momentum", "mixed", MemoryOptions("torch-cuda", attention="flash")),
    Training("adam", "fp32", MemoryOptions("megatron", recompute="full")),
    Training("sgd", "fp32", MemoryOptions(recompute="selective")),
]


CASES = [(CONFIGS[0], t) for t in SETUPS] + [(c, SETUPS[i % len(SETUPS)]) for i, c in enumerate(CONFIGS[1:])]


@pytest.mark.parametrize(("config", "training"), CASES, ids=lambda v: getattr(v, "name", None) or v.describe())
def test_three_replayed_runs_stand_for_every_run(config: symbert.Config, training: Training) -> None:
    """The peak symbolic in L (three runs replayed) equals the replay of every run, wherever it falls."""
    graph = symbert.trace(config)
    symbolic = step_memory(graph, training)
    exact = step_memory(graph, training, config.symbols(), full=True)
    layers = config.symbols()[symbert.symbols.L]
    for batch, length in ((1, 1), (3, 7), (8, min(128, config.max_length or 128))):
        values = _at(config, batch, length)
        assert step_memory(graph, training, values).peak(values) == exact.peak(values)
        if layers >= 3:
            assert symbolic.peak(values) == exact.peak(values)


def test_peak_categories_add_up_and_name_the_seq_len_squared_part() -> None:
    base = symbert.preset("bert-base")
    values = _at(base, 8, 512)
    peak = step_memory(symbert.trace(base), Training(memory=CUDA)).peak(values)
    flash = step_memory(symbert.trace(base), Training(memory=MemoryOptions("torch-cuda", attention="flash")))
    assert set(peak.bytes) == set(CATEGORIES) and peak.bytes["attention"] > 0
    assert flash.peak(values).bytes["attention"] == 0


def test_timeline_cli(tmp_path) -> None:
    out = tmp_path / "timeline.png"
    args = ("timeline", "--preset", "bert-tiny", "-b", "2", "-s", "8", "--gpu-memory", "1GiB", "--json")
    result = run_cli(*args, "--plot", str(out))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["model_states"]["weights"]["bytes"] == 4 * 4385920
    assert doc["fits"] is True and doc["peak"]["bytes"] == max(p["peak"] for p in doc["phases"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("policy", "per_score"), [("torch-cuda", 4 + 1 + 4), ("torch-cpu", 4 + 4 + 4)])
def test_peak_formula_keeps_every_layers_attention(policy: str, per_score: int) -> None:
    """At the backward of the last layer's FFN, every layer still holds its softmax output, dropout mask
    and dropout output (float32, the mask a bool on CUDA): per_score · A·B·L·seq_len² bytes."""
    base = symbert.preset("bert-base")
    values = _at(base, 12, 512)
    memory = step_memory(symbert.trace(base), Training(memory=MemoryOptions(policy)))
    formula = memory.formula(values)
    assert formula.coeff(S, 2) == per_score * symbert.symbols.A * B * symbert.symbols.L
    assert formula.subs(values) == memory.peak(values).total


@pytest.mark.parametrize("options", OPTIONS, ids=MemoryOptions.describe)
@pytest.mark.parametrize("head", ["model", "mlm"])
def test_unrolled_graph_replays_the_same_step(options: MemoryOptions, head: str) -> None:
    """Tracing each layer apart (unroll=True) changes nothing in the step: every phase peaks and ends at
    the same memory."""
    config = symbert.with_task(symbert.with_overrides(symbert.preset("bert-tiny"), ["num_hidden_layers=3"]), head=head)
    values = _at(config, 2, 16)
    training = Training("adamw", "fp32", options)

    def summary(unroll: bool) -> list[tuple[int, str, int, int]]:
        memory = step_memory(symbert.trace(config, unroll=unroll), training, values, full=True)
        return [(p.step, p.name, p.peak.total, p.end) for p in phases(memory.timeline(values))]

    assert summary(False) == summary(True)
