"""The command line run in-process, through ``symbert.cli.main`` (its error handling included)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from click.testing import CliRunner

from symbert.cli import main


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def refused(self) -> bool:
        """Exit 2 with one line on standard error, starting ``symbert: error:``, and nothing on standard output."""
        return (
            self.code == 2
            and self.stdout == ""
            and self.stderr.startswith("symbert: error: ")
            and self.stderr.count("\n") == 1
            and "Traceback" not in self.stderr
        )


def invoke(*args: str, stdin: str | None = None) -> Outcome:
    """Run ``symbert ARGS`` as :func:`symbert.cli.main` would, reading ``stdin``; an exception that escapes main
    propagates."""
    runner = CliRunner()
    argv = sys.argv
    with runner.isolation(input=stdin) as (out, err, _):
        sys.argv = ["symbert", *args]
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.argv = argv
        return Outcome(code, out.getvalue().decode(errors="replace"), err.getvalue().decode(errors="replace"))
