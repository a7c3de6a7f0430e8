"""The explore page in a real browser: headless Chromium (``make system-deps`` installs it) loads the page
offline, the test moves the controls, reads what the page shows and checks it against the CLI's JSON
(``report``, ``timeline``, ``fit``), clicks a diagram box, and takes a screenshot."""

from __future__ import annotations

import json

import pytest
from inprocess import invoke

from symbert.validate.browser import Chromium, find

CHROMIUM = find()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed: make system-deps (apt-get install chromium)"
)

#: Where the controls are moved to, and the same setup as command-line flags.
MOVED = {"B": "3", "seq_len": "64", "precision": "amp", "attention": "sdpa", "gpu": "t4", "optimizer": "sgd"}
FLAGS = ("-b", "3", "-s", "64", "--precision", "amp", "--attention", "sdpa", "--optimizer", "sgd")
#: The command's own setup at a point of the page's grid (tests/conftest.py), where the allocator's answers show.
ON_GRID = {"B": "2", "seq_len": "16", "precision": "fp32", "attention": "eager", "optimizer": "adamw"}


def cli(*args: str) -> dict:
    outcome = invoke(*args, "--preset", "bert-tiny", "--json")
    assert outcome.code == 0, outcome.stderr
    return json.loads(outcome.stdout)


def shown(browser: Chromium, key: str) -> int:
    return int(browser.evaluate(f"document.getElementById({key!r}).dataset.value"))


def center(browser: Chromium, element: str) -> list[float]:
    """The middle of an element, given as a JavaScript expression, scrolled into the window."""
    return browser.evaluate(
        f"(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();"
        " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
    )


def move(browser: Chromium, controls: dict[str, str]) -> None:
    for control, value in controls.items():
        event = "input" if control in ("B", "seq_len") else "change"
        browser.evaluate(
            f"(() => {{ const e = document.getElementById({control!r}); e.value = {value!r};"
            f" e.dispatchEvent(new Event({event!r})); }})()"
        )


def test_controls_values_click_and_screenshot(explore_page, tmp_path):
    path = explore_page[0]
    with Chromium(CHROMIUM) as browser:
        browser.open(path)
        move(browser, MOVED)
        report = cli("report", "--policy", "torch-cuda", *FLAGS[:8])
        assert shown(browser, "q-params-0") == report["params"]
        assert shown(browser, "q-act-0") == report["activation_bytes"]
        assert shown(browser, "q-ff-0") == report["flops"]["forward"]
        assert shown(browser, "q-fb-0") == report["flops"]["backward"]
        timeline = cli("timeline", *FLAGS, "--gpu", "t4")
        assert shown(browser, "q-peak-0") == timeline["peak"]["bytes"]
        assert [shown(browser, f"phase-{k}") for k in range(len(timeline["phases"]))] == [
            p["peak"] for p in timeline["phases"]
        ]
        assert [shown(browser, f"bar-{k}") for k in range(6)] == list(timeline["peak"]["components"].values())
        for state in ("weights", "gradients", "optimizer"):
            assert shown(browser, f"q-{state}-0") == timeline["model_states"][state]["bytes"]
        solved = cli("fit", *FLAGS[2:], "--gpu", "t4", "--closed-form")
        assert shown(browser, "q-largest-0") == solved["batch"]
        assert browser.evaluate("document.getElementById('q-fit-0').textContent") == "not precomputed"

        # Click the repeated layer's box on the overview: its share of the activations is every
        # per-layer component of the report.
        boxes = "[...document.querySelectorAll('#diagram g.node')]"
        layer = f"{boxes}.find((n) => n.querySelector('title').textContent === 'encoder/layer')"
        browser.click(*center(browser, layer))
        assert browser.evaluate("document.getElementById('box-title').textContent") == "encoder/layer"
        per_layer = [c["value"] for c in report["components"] if c["quantity"] == "activation_bytes" and c["count"]]
        assert shown(browser, "box-bytes") == sum(per_layer)
        assert browser.evaluate("document.querySelectorAll('#box-body math').length") >= 2

        # A formula's "copy LaTeX" button copies LaTeX in the notation of `symbert latex`.
        button = "document.querySelector('#formulas button')"
        assert r"\mathit{vocab}_{\mathrm{size}}" in browser.evaluate(f"{button}.dataset.latex")
        browser.click(*center(browser, button))
        assert browser.evaluate(f"{button}.textContent") == "copied"

        png = browser.screenshot(tmp_path / "explore.png")

        # At the command's setup on the grid, the allocator's answers: fit's simulated largest batch and the
        # reserved peak of timeline's simulation.
        move(browser, ON_GRID)
        flags = ("-s", "16", "--precision", "fp32", "--attention", "eager", "--optimizer", "adamw", "--gpu", "t4")
        assert shown(browser, "q-fit-0") == cli("fit", *flags)["batch"]
        timeline = cli("timeline", "-b", "2", *flags)
        assert shown(browser, "q-reserved-0") == max(p["reserved"] for p in timeline["phases"])
        assert "seq_len = 8, 16" in browser.evaluate("document.getElementById('grid').textContent")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
