"""Fitting a GPU budget: the closed-form answer against a search over the replayed peak, and the CLI."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.configs import ConfigError
from symbert.symbols import B, seq_len
from symbert.training.fit import fit, parse_bytes
from symbert.training.states import Training
from symbert.training.step import step_memory

GIB = 2**30


@pytest.mark.parametrize(
    ("text", "value"),
    [("16GiB", 16 * GIB), ("16GB", 16 * 10**9), ("16000MiB", 16000 * 2**20), ("1.5GiB", 3 * 2**29),
     ("17179869184", 17179869184), ("512 kib", 512 * 1024), ("2TB", 2 * 10**12)],
)  # fmt: skip
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["16XB", "-1GiB", "1.3B", "", "1e9", "GiB", "0", "16GiB extra", "__import__('os')"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_bytes(text)


def _search(config: symbert.Config, training: Training, budget: int, fixed: dict, x) -> int:
    """The largest value that fits, by bisection over the full replay's peak (which grows with x)."""
    memory = step_memory(symbert.trace(config), training, config.symbols(), full=True)
    fits = lambda n: memory.peak({**config.symbols(), **fixed, x: n}).total <= budget  # noqa: E731
    low, high = 0, 1
    while fits(high):
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


CASES = [
    (symbert.preset("bert-base"), Training("adamw"), 16 * GIB, "batch", 512),
    (symbert.preset("bert-base"), Training("adamw", "mixed", MemoryOptions("torch-cuda", attention="flash")), 8 * GIB,
     "batch", 512),
    (symbert.preset("bert-base"), Training("adamw"), 8 * GIB, "seq_len", 12),
    (symbert.preset("bert-tiny"), Training("momentum", memory=MemoryOptions("megatron", recompute="full")), 200 * 2**20,
     "seq_len", 40),
]  # fmt: skip


@pytest.mark.parametrize(("config", "training", "budget", "unknown", "fixed"), CASES)
def test_closed_form_answer_is_the_largest_that_fits(config, training, budget, unknown, fixed) -> None:
    x, other = (B, seq_len) if unknown == "batch" else (seq_len, B)
    result = fit(config, training, budget, **({"length": fixed} if unknown == "batch" else {"batch": fixed}))
    searched = _search(config, training, budget, {other: fixed}, x)
    assert result.value == min(searched, config.max_length or searched) if unknown == "seq_len" else searched
    assert result.peak.total <= budget
    if not result.capped:
        assert result.above.total > budget


def test_seq_len_stops_at_the_positions() -> None:
    result = fit(symbert.preset("bert-tiny"), Training(), 16 * GIB, batch=1)
    assert (result.value, result.capped, result.above) == (512, "positions", None)


def test_nothing_fits_names_the_model_states_and_the_knob() -> None:
    """BERT-base with AdamW needs 16 bytes per parameter (1.75 GB) before any activation."""
    result = fit(symbert.preset("bert-base"), Training("adamw"), GIB, length=128)
    assert result.value is None and not result.fits
    assert result.over_budget().startswith("model states")
    assert result.knobs[0].change.startswith("SGD without momentum")
    assert [k.peak.total for k in result.knobs] == sorted(k.peak.total for k in result.knobs)


def test_given_shape_reports_its_memory() -> None:
    base = symbert.preset("bert-base")
    result = fit(base, Training("adamw"), None, batch=4, length=256)
    values = {**base.symbols(), B: 4, seq_len: 256}
    assert result.peak == step_memory(symbert.trace(base), Training("adamw"), values, full=True).peak(values)
    assert result.formula.subs({B: 4, seq_len: 256}) == result.peak.total


def test_cli_fit_json_brackets_the_budget() -> None:
    args = ("fit", "--preset", "bert-base", "--gpu-memory", "16GiB", "--seq-len", "512", "--optimizer", "adamw")
    result = run_cli(*args, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["solved_for"] == "batch" and doc["seq_len"] == 512 and doc["batch"] >= 1
    # the caching allocator decides: the answer's two steps run under the cap, one more fails
    assert doc["memory"] <= 16 * GIB
    at, above = doc["allocator"]["at"], doc["allocator"]["above"]
    assert at["runs"] and at["reserved"] <= 16 * GIB
    assert (at["batch"], above["batch"]) == (doc["batch"], doc["batch"] + 1)
    assert not above["runs"] and "over the cap" in above["failed"]


@pytest.mark.parametrize("args", [("--gpu-memory", "sixteen", "--seq-len", "512"), ("--gpu-memory", "16GiB")])
def test_cli_fit_errors_are_one_line(args: tuple[str, ...]) -> None:
    result = run_cli("fit", *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("symbert: error:")


@pytest.mark.parametrize(("batch", "length"), [(None, 513), (0, None), (None, None)])
def test_fit_rejects(batch: int | None, length: int | None) -> None:
    with pytest.raises(ConfigError):
        fit(symbert.preset("bert-base"), Training(), 16 * GIB, batch, length)


def test_plot_formats(tmp_path) -> None:
    from symbert.render.plots import plot_memory

    for name, magic in (("m.png", b"\x89PNG"), ("m.svg", b"<?xml"), ("m.pdf", b"%PDF")):
        out = plot_memory(symbert.preset("bert-tiny"), Training(), "batch", 64, range(1, 9), tmp_path / name, GIB)
        assert out.read_bytes().startswith(magic)
    result = run_cli("plot", "--preset", "bert-tiny", "-o", str(tmp_path / "m.gif"))
    assert result.returncode == 2 and "plots are .png, .svg, .pdf" in result.stderr
