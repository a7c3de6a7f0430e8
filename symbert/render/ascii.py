"""An ASCII fallback for symbert's notation where the output cannot encode it (``PYTHONIOENCODING=ascii``).

:func:`fallback` sets a stream's encoding errors to :func:`spell`, which writes each character the encoding
refuses in ASCII: ``12·H²·L`` → ``12*H^2*L``, ``≈`` → ``~``, ``→`` → ``->``; anything else by its
compatibility decomposition, or ``?``.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import TextIO

#: The notation's characters in ASCII.
SPELLINGS: dict[str, str] = {
    "·": "*",
    "×": "x",
    "−": "-",
    "–": "-",
    "—": "--",
    "≈": "~",
    "≤": "<=",
    "≥": ">=",
    "→": "->",
    "←": "<-",
    "…": "...",
    "∞": "inf",
    "⌈": "ceil(",
    "⌉": ")",
    "⌊": "floor(",
    "⌋": ")",
    "θ": "theta",
}
SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-", strict=True))
HANDLER = "symbert-ascii"


def spell(text: str) -> str:
    """``text`` in ASCII: a run of superscripts as ``^`` and its digits, the notation's characters as
    :data:`SPELLINGS` gives them, others by their compatibility decomposition, or ``?``."""
    out, power = [], ""
    for ch in text + "\0":
        if ch in SUPERSCRIPTS:
            power += SUPERSCRIPTS[ch]
            continue
        if power:
            out.append("^" + power)
            power = ""
        if ch == "\0":
            break
        plain = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode()
        out.append(ch if ch.isascii() else SPELLINGS.get(ch) or plain or "?")
    return "".join(out)


def _handler(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return spell(error.object[error.start : error.end]), error.end


codecs.register_error(HANDLER, _handler)


def fallback(stream: TextIO) -> None:
    """Write what ``stream``'s encoding cannot hold in ASCII, where it cannot hold the notation."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "·²≈→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=HANDLER)
