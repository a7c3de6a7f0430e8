"""The ``console`` blocks of README.md and docs/*.md, run: every ``$ symbert ...`` line in-process, its output
written under it (``make docs``). tests/test_docs_console.py runs each block and fails when the page shows
other output than the command prints now.

A block is a fenced ``console`` block: a line starting with ``$ `` is a command, the lines after it until the
next command are its output. Commands run in a fresh folder, printing as they do into a pipe (no ``COLUMNS``:
lines are not wrapped, tables not split); the folder's path in the output reads ``.``. A comment on the line
before the fence changes a block:

- ``<!-- console: skip: REASON -->`` leaves it as written, and the test skips it saying REASON (a command that
  needs a GPU or a file symbert cannot write);
- ``<!-- console: slow: REASON -->``: ``make docs`` runs it, the test skips it saying REASON (too long for the
  tests);
- ``<!-- console: file NAME PRESET {JSON} -->`` writes the config file NAME first: the preset's values, as
  Hugging Face keys, updated with the JSON object.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

import symbert
from symbert.cli import main

ROOT = Path(__file__).resolve().parent.parent
_FENCE = re.compile(r"^```console\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"<!-- console: (skip|slow|file)[: ] ?(.*?) -->\n$")


@dataclass(frozen=True)
class Block:
    """One console block: where it is, its text between the fences, and its marker (kind, argument)."""

    page: Path
    start: int
    end: int
    text: str
    marker: tuple[str, str] | None

    @property
    def name(self) -> str:
        line = self.page.read_text()[: self.start].count("\n") + 1
        return f"{self.page.relative_to(ROOT)}:{line}"

    @property
    def commands(self) -> list[str]:
        return [line[2:] for line in self.text.splitlines() if line.startswith("$ ")]

    def skip(self, tests: bool = True) -> str | None:
        """Why the block is not run (by the tests, else by ``make docs``), or None."""
        kinds = ("skip", "slow") if tests else ("skip",)
        return self.marker[1] if self.marker and self.marker[0] in kinds else None


def pages(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for m in _FENCE.finditer(text):
        before = text[: m.start()].rsplit("\n", 2)
        marker = _MARKER.search(before[-2] + "\n") if len(before) > 1 else None
        kind = (marker.group(1), marker.group(2)) if marker else None
        found.append(Block(page, m.start(1), m.end(1), m.group(1), kind))
    return found


def run(command: str) -> str:
    """``symbert ARGS``'s standard output, run in-process as :func:`symbert.cli.main` runs it; a command that
    fails raises RuntimeError with its standard error."""
    args = shlex.split(command)
    if args[0] != "symbert":
        raise ValueError(f"not a symbert command: {command}")
    runner = CliRunner()
    argv = sys.argv
    with runner.isolation() as (out, err, _):
        sys.argv = args
        try:
            main()
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"{command}: {err.getvalue().decode()}") from None
        finally:
            sys.argv = argv
        return out.getvalue().decode()


@contextmanager
def folder(block: Block) -> Iterator[Path]:
    """A fresh working folder, ``COLUMNS`` unset, with the file the block's marker asks for."""
    cwd, columns = Path.cwd(), os.environ.pop("COLUMNS", None)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            if block.marker and block.marker[0] == "file":
                name, preset, extra = block.marker[1].split(" ", 2)
                config = symbert.preset(preset)
                Path(name).write_text(json.dumps({"model_type": config.model, **config.values, **json.loads(extra)}))
            yield Path(tmp)
        finally:
            os.chdir(cwd)
            if columns is not None:
                os.environ["COLUMNS"] = columns


def fresh(block: Block) -> str:
    """The block's text as the commands print it now."""
    lines = []
    with folder(block) as where:
        for command in block.commands:
            output = run(command).replace(str(where.resolve()), ".").replace(str(where), ".")
            lines += [f"$ {command}", *output.splitlines()]
    return "\n".join(lines) + "\n"


def update(page: Path) -> bool:
    """Rewrite the page's blocks (those not skipped) with fresh output; whether anything changed."""
    text = page.read_text()
    new = text
    for block in reversed(blocks(page)):
        if block.skip(tests=False) is None:
            new = new[: block.start] + fresh(block) + new[block.end :]
    if new != text:
        page.write_text(new)
    return new != text


if __name__ == "__main__":
    for p in pages():
        if update(p):
            print(f"updated {p.relative_to(ROOT)}")
