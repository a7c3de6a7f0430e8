"""The ASCII fallback for the notation, where the output cannot encode it."""

from __future__ import annotations

import pytest
from conftest import run_cli

from symbert.render.ascii import spell


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12·H²·L + H¹²", "12*H^2*L + H^12"),
        ("≈ 109.48 M → ∞", "~ 109.48 M -> inf"),
        ("⌈seq_len/32⌉ − 1", "ceil(seq_len/32) - 1"),
        ("bert-large − bert-base", "bert-large - bert-base"),
        ("café ☃", "cafe ?"),
    ],
)
def test_spelled_in_ascii(text: str, expected: str) -> None:
    assert spell(text) == expected


def test_params_on_an_ascii_terminal() -> None:
    """`PYTHONIOENCODING=ascii symbert params` prints the count in ASCII rather than ending in a traceback."""
    result = run_cli("params", "--by-component", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.isascii()
    assert "12*H^2*L + H^2 + 13*H*L" in result.stdout and "= 109,482,240" in result.stdout
    utf8 = run_cli("params", "--by-component", env={"PYTHONIOENCODING": "utf-8"})
    assert "12·H²·L + H² + 13·H·L" in utf8.stdout
