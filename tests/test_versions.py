"""The torch and transformers versions symbert models: one place, pinned alike, warned about, printed."""

from __future__ import annotations

import tomllib

import pytest
from conftest import ROOT, hf, run_cli

from symbert import versions


def test_the_validate_extra_pins_the_tested_range() -> None:
    """pyproject's validate extra allows exactly the releases :data:`symbert.versions.TESTED` names."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["validate"]
    (torch_low, torch_high), (low, high) = versions.TESTED["torch"], versions.TESTED["transformers"]
    assert torch_low == torch_high
    assert extra == [
        f"torch=={torch_low[0]}.{torch_low[1]}.0",
        f"transformers>={low[0]}.{low[1]},<{high[0]}.{high[1] + 1}",
    ]


@pytest.mark.parametrize(
    ("installed", "warned"),
    [("5.24.0", False), ("5.25.3", False), ("5.23.1", True), ("5.26.0.dev0", True), ("4.57.1", True)],
)
def test_a_transformers_outside_the_range_is_warned_about(
    installed: str, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(versions, "installed", lambda name: installed if name == "transformers" else "2.13.0+cpu")
    lines = versions.outside_range()
    assert lines == (
        [f"transformers {installed} is outside the tested range (5.24 to 5.25): figures may differ"] if warned else []
    )


def test_validate_prints_the_versions_it_measured_with() -> None:
    hf()
    import torch
    import transformers

    result = run_cli("validate", "--preset", "bert-tiny", "-b", "1", "-s", "4")
    assert result.returncode == 0, result.stderr
    line = f"measured with torch {torch.__version__}, transformers {transformers.__version__}"
    assert line in result.stdout.splitlines()
