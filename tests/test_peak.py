"""The training-step peak against PyTorch: torch.profiler's memory events over two real steps on CPU."""

from __future__ import annotations

import pytest
from conftest import H96_L3, hf

import symbert

CASES = [
    (symbert.preset("bert-tiny"), 2, 16, "adamw"),
    (symbert.preset("bert-tiny"), 4, 128, "sgd"),
    (symbert.Config("bert", H96_L3, "h96-a3-l3"), 3, 20, "momentum"),
]


@pytest.mark.parametrize(("config", "batch", "length", "optimizer"), CASES, ids=lambda v: getattr(v, "name", v))
def test_peak_within_two_percent_of_pytorch(config: symbert.Config, batch: int, length: int, optimizer: str) -> None:
    hf()
    from symbert.validate.peak import check_peak

    check = check_peak(config, batch, length, optimizer)
    assert abs(check.error) <= 0.02, f"predicted {check.predicted:,}, measured {check.measured.peak:,}"
    where = check.measured.where
    assert check.predicted_where.startswith(f"step {where.step} {where.name}")
