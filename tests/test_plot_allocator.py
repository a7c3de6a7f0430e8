"""``plot`` draws the caching allocator's simulated allocated and reserved peaks beside the stacked peak."""

from __future__ import annotations

import re

import pytest

from symbert import public
from symbert.render.plots import MAX_SIMULATED, plot_memory, simulated_curve
from symbert.training.states import Training

LENGTH = 8


@pytest.fixture(scope="module")
def tiny():
    return public.config_of("bert-tiny")


def test_the_markers_are_timelines_peaks(tiny, tmp_path):
    """Each simulated point is the largest allocated and reserved peak of ``timeline`` at that batch."""
    training = public.setup().for_model(tiny.spec)
    points = simulated_curve(tiny, training, "batch", LENGTH, range(1, 4))
    assert [x for x, _, _ in points] == [1, 2, 3]
    for batch, allocated, reserved in points:
        steps = public.timeline("bert-tiny", batch=batch, seq_len=LENGTH)
        assert allocated == max(p.allocated for p in steps.simulated.values())
        assert reserved == max(p.reserved for p in steps.simulated.values())
    path = plot_memory(tiny, training, "batch", LENGTH, range(1, 4), tmp_path / "m.svg")
    svg = path.read_text()
    for gid in ("simulated-reserved", "simulated-allocated"):
        group = re.search(rf'<g id="{gid}">(.*?)</g>', svg, re.S)
        assert group is not None and group.group(1).count("<use ") == 3
    assert "reserved (caching allocator)" in svg
    again = plot_memory(tiny, training, "batch", LENGTH, range(1, 4), tmp_path / "again.svg")
    assert again.read_bytes() == path.read_bytes()


def test_at_most_a_dozen_points_ends_included(tiny):
    training = public.setup().for_model(tiny.spec)
    points = simulated_curve(tiny, training, "seq_len", 1, range(1, 65))
    xs = [x for x, _, _ in points]
    assert len(xs) == MAX_SIMULATED and xs[0] == 1 and xs[-1] == 64 and xs == sorted(set(xs))


def test_no_markers_without_the_simulation(tiny, tmp_path):
    training = Training()
    assert training.runtime is None
    assert simulated_curve(tiny, training, "batch", LENGTH, range(1, 4)) == []
    svg = plot_memory(tiny, training, "batch", LENGTH, range(1, 4), tmp_path / "m.svg").read_text()
    assert "simulated-reserved" not in svg
