"""Sweeps: grids, CSV text against Python's own formatting, values against the passes and the replay."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from conftest import run_cli

import symbert
from symbert.analysis.policy import MemoryOptions
from symbert.analysis.report import report
from symbert.configs import ConfigError
from symbert.symbols import B, seq_len
from symbert.training.fit import fit
from symbert.training.states import Training
from symbert.training.step import step_memory
from symbert.training.sweep import QUANTITIES, format_rows, parse_values, sweep


@pytest.mark.parametrize(
    ("text", "values"),
    [("8", [8]), ("1,2,4", [1, 2, 4]), ("1:4", [1, 2, 3, 4]), ("16:64:16", [16, 32, 48, 64]), ("4,1:2", [1, 2, 4])],
)
def test_parse_values(text: str, values: list[int]) -> None:
    assert parse_values(text, "batch") == values


@pytest.mark.parametrize("text", ["0", "4:2", "1:8:0", "a", "1-4", "", "1e3"])
def test_parse_values_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_values(text, "batch")


def test_rows_match_python_formatting() -> None:
    rng = np.random.default_rng(1)
    edges = np.array([0, 1, 9, 10, 99, 100, 999, 1000, 10**9 - 1, 10**9, 10**18 - 1, 10**18, 2**63 - 1])
    columns = [rng.integers(0, 10**k, size=len(edges) * 50) for k in (1, 4, 13)] + [np.tile(edges, 50)]
    expected = "".join("a,b," + ",".join(str(int(c[i])) for c in columns) + ",0,1000\n" for i in range(len(edges) * 50))
    assert format_rows(b"a,b,", [*columns, 0, 1000]) == expected.encode()


def _rows(configs, trainings, batches, lengths, quantities=QUANTITIES) -> list[dict[str, str]]:
    out = io.BytesIO()
    sweep(configs, trainings, batches, lengths, quantities, out)
    return list(csv.DictReader(io.StringIO(out.getvalue().decode())))


def test_values_agree_with_report_and_replay() -> None:
    configs = [symbert.preset("bert-tiny"), symbert.preset("bert-base")]
    trainings = [Training("adamw", memory=MemoryOptions("torch-cuda")), Training("sgd", "mixed")]
    rows = _rows(configs, trainings, [1, 3], [1, 64, 512])
    assert len(rows) == 2 * 2 * 2 * 3
    for row in rows:
        config = symbert.preset(row["config"])
        training = next(t for t in trainings if (t.optimizer, t.precision) == (row["optimizer"], row["precision"]))
        batch, length = int(row["batch"]), int(row["seq_len"])
        r = report(config, batch, length, training.memory)
        for q in ("params", "activation_bytes", "flops_forward", "flops_backward", "non_matmul_forward"):
            assert int(row[q]) == r.value(q), q
        values = {**config.symbols(), B: batch, seq_len: length}
        peak = step_memory(symbert.trace(config), training, config.symbols(), full=True).peak(values)
        assert int(row["peak"]) == peak.total
    assert {int(r["params"]) for r in rows if r["config"] == "bert-base"} == {109482240}


def test_lengths_past_the_positions_are_left_out() -> None:
    rows = _rows([symbert.preset("bert-tiny")], [Training()], [1], [256, 512, 1024], ("params",))
    assert [r["seq_len"] for r in rows] == ["256", "512"]


def test_cli_sweep_csv(tmp_path) -> None:
    out = tmp_path / "grid.csv"
    args = ("sweep", "bert-tiny", "bert-L4-H1*", "-b", "1:3", "-s", "8,16", "-q", "peak", "--optimizer", "sgd")
    result = run_cli(*args, "--optimizer", "adamw", "-o", str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows[0].keys() == {
        *["config", "head", "policy", "dtype", "attention", "recompute", "optimizer", "precision", "gpu", "layout"],
        "batch",
        "seq_len",
        "peak",
    }
    assert len(rows) == 2 * 2 * 3 * 2 and result.stderr == ""
    assert run_cli("sweep", "bert-tiny", "-q", "nothing").returncode == 2


def test_rounded_logsumexp_rows_stay_exact() -> None:
    """fp32 sdpa on CUDA runs the memory-efficient kernel, whose float32 logsumexp has ⌈seq_len/32⌉·32
    rows per head: at seq_len 97 it is 128 rows, 4·2·12·128 = 12,288 bytes a layer of bert-base at B=2,
    where seq_len rows alone would be 9,312. The compiled sweep, the replay and fit keep that exact."""
    config = symbert.preset("bert-base")
    training = Training("adamw", memory=MemoryOptions("torch-cuda", attention="sdpa"))
    lengths = [1, 31, 32, 33, 97, 100, 128]
    rows = _rows([config], [training], [2, 5], lengths)
    for row in rows:
        batch, length = int(row["batch"]), int(row["seq_len"])
        r = report(config, batch, length, training.memory)
        assert int(row["activation_bytes"]) == r.value("activation_bytes")
        values = {**config.symbols(), B: batch, seq_len: length}
        peak = step_memory(symbert.trace(config), training, values, full=True).peak(values)
        assert int(row["peak"]) == peak.total
    at = {(int(r["batch"]), int(r["seq_len"])): int(r["activation_bytes"]) for r in rows}
    lse = [c for c in report(config, 2, 97, training.memory).breakdowns["activation_bytes"].contributions]
    values = {**config.symbols(), B: 2, seq_len: 97}
    assert any("logsumexp" in c.what and c.expr.subs(values) == 12_288 for c in lse)
    assert at[(2, 97)] < at[(2, 100)]

    solved = fit(config, training, 3 * 2**30, batch=16)  # seq_len 183: 192 logsumexp rows
    assert solved.seq_len == 183 and not solved.capped
    for length, peak in ((183, solved.peak), (184, solved.above)):
        values = {**config.symbols(), B: 16, seq_len: length}
        assert peak.total == step_memory(symbert.trace(config), training, values, full=True).peak(values).total
    assert solved.peak.total <= 3 * 2**30 < solved.above.total
