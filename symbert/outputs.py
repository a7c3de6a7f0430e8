"""Output files, written the same way by every command (diagram, plot, timeline --plot, sweep -o).

:func:`check_output` refuses, before any work is done, a path whose folder is missing or is not a
folder, or that names a folder; folders are never created. :func:`writing` writes a regular file
through a temporary file in the same folder, renamed over the target only once everything is written,
so that a failure never leaves a partial file. A path that already exists and is not a regular file (a
device such as /dev/null, a named pipe) is written directly. Every failure is a ConfigError with one
line naming the path.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from symbert.configs import ConfigError, show


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_output(path: str | Path) -> Path:
    """``path`` as a file symbert may write: its folder exists, and it is not itself a folder."""
    if not str(path):
        raise ConfigError("the output path is empty")
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"cannot write {show(str(path))}: it is a folder")
        parent = path.parent
        if not parent.exists():
            raise ConfigError(f"cannot write {show(str(path))}: folder {show(str(parent))} does not exist")
        if not parent.is_dir():
            raise ConfigError(f"cannot write {show(str(path))}: {show(str(parent))} is not a folder")
    except OSError as exc:
        raise ConfigError(f"cannot write {show(str(path))}: {_why(exc)}") from None
    return path


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through; it replaces ``path`` only if the block ends without error."""
    path = check_output(path)
    try:
        target = Path(os.path.realpath(path))
        mode = target.stat().st_mode if target.exists() else None
        if mode is not None and not stat.S_ISREG(mode):
            with open(target, "wb") as direct:
                yield direct
            return
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else stat.S_IMODE(mode))
    except OSError as exc:
        raise ConfigError(f"cannot write {show(str(path))}: {_why(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(temporary, target)
    except OSError as exc:
        raise ConfigError(f"cannot write {show(str(path))}: {_why(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def write_output(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole (see :func:`writing`)."""
    with writing(path) as out:
        out.write(data)
    return Path(path)
