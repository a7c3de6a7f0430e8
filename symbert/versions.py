"""The torch and transformers behaviour symbert models, and the versions its tests ran against.

This is the one place the tested range is written: outputs and JSON name it (:func:`modelled`,
:func:`modelled_json`), ``symbert validate`` warns when the installed versions fall outside it
(:func:`outside_range`), and the ``validate`` extra of pyproject.toml pins the same range (a test checks
that they agree).
"""

from __future__ import annotations

from importlib import metadata

#: Each library's tested releases, the lowest and the highest, as (major, minor): any patch release of them.
TESTED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "torch": ((2, 13), (2, 13)),
    "transformers": ((5, 24), (5, 25)),
}


def _text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def tested(name: str) -> str:
    """The tested versions of ``name``, as words: ``2.13`` or ``5.24 to 5.25``."""
    low, high = TESTED[name]
    return _text(low) if low == high else f"{_text(low)} to {_text(high)}"


def modelled() -> str:
    """One line for a header: whose behaviour the figures model."""
    return "models " + " and ".join(f"{name} {tested(name)}" for name in TESTED)


def modelled_json() -> dict[str, str]:
    """The tested versions, by library, for a JSON document."""
    return {name: tested(name) for name in TESTED}


def release(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: ``2.13.0+cpu`` is (2, 13, 0), ``5.26.0.dev0`` (5, 26, 0)."""
    numbers = []
    for part in version.split("+")[0].split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def installed(name: str) -> str | None:
    """The installed version of ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def outside_range() -> list[str]:
    """A line for each of torch and transformers whose installed version is outside the tested range."""
    lines = []
    for name, (low, high) in TESTED.items():
        version = installed(name)
        if version is None:
            continue
        found = (*release(version), 0, 0)[: len(low)]
        if not low <= found <= high:
            lines.append(f"{name} {version} is outside the tested range ({tested(name)}): figures may differ")
    return lines


def measured_with() -> str:
    """The installed torch and transformers versions, as one line."""
    return "measured with " + ", ".join(f"{name} {installed(name) or 'not installed'}" for name in TESTED)
