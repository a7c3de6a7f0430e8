"""Every ``console`` block of README.md and docs/*.md prints what the page shows (``make docs`` rewrites them:
scripts/console_docs.py); blocks too slow for the tests are marked, and skipped saying why."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = runpy.run_path(str(ROOT / "scripts" / "console_docs.py"))
BLOCKS = [b for page in DOCS["pages"]() for b in DOCS["blocks"](page)]


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.name)
def test_console_block_is_fresh(block) -> None:
    if block.skip() is not None:
        pytest.skip(block.skip())
    assert block.commands, f"{block.name}: a console block runs at least one `$ symbert` command"
    assert DOCS["fresh"](block) == block.text, f"{block.name} is stale: run `make docs`"


def test_blocks_are_found_and_markers_read(tmp_path) -> None:
    """A page written here: a stale block, a skipped one and one that needs a config file."""
    page = tmp_path / "page.md"
    page.write_text(
        "Text.\n\n```console\n$ symbert presets bert-tin*\nstale\n```\n\n"
        "<!-- console: skip: needs a GPU -->\n```console\n$ symbert validate --device cuda\n```\n\n"
        '<!-- console: file c.json bert-tiny {"num_hidden_layers": 1} -->\n'
        "```console\n$ symbert params --config c.json\n```\n"
    )
    stale, skipped, filed = DOCS["blocks"](page)
    assert stale.commands == ["symbert presets bert-tin*"] and stale.marker is None and stale.skip() is None
    assert skipped.skip() == "needs a GPU" and skipped.skip(tests=False) == "needs a GPU"
    fresh = DOCS["fresh"](stale)
    assert fresh.startswith("$ symbert presets bert-tin*\n") and "bert-tiny" in fresh and "stale" not in fresh
    # bert-tiny with one layer of 4·(128² + 128) + 2·(128·512) + 512 + 128 + 4·128 = 198,272 fewer parameters
    assert "= 4,187,648" in DOCS["fresh"](filed)
    assert DOCS["update"](page)
    text = page.read_text()
    assert "stale" not in text and "$ symbert validate --device cuda\n```" in text and "4,187,648" in text
    assert not DOCS["update"](page)
