"""Model configurations: presets, Hugging Face config.json files, ``key=value`` overrides, validation.

Every problem raises :class:`ConfigError` with one line naming the field or file at fault.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import sympy

from symbert.models import MODELS, ModelSpec


class ConfigError(ValueError):
    """An invalid configuration, with a one-line message naming the problem."""


@dataclass(frozen=True)
class Config:
    """One concrete model: its family, Hugging Face config values and structural options."""

    model: str
    values: Mapping[str, int]
    name: str = "custom"
    options: Mapping[str, bool] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    def symbols(self) -> dict[sympy.Symbol, int]:
        """The value of every model symbol this config sets, derived ones included."""
        values = {sym: self.values[key] for key, sym in self.spec.fields.items()}
        values.update({sym: int(expr.subs(values)) for sym, expr in self.spec.derived.items()})
        return values

    def structure(self) -> dict[str, bool]:
        """The structural options passed to the model's build function."""
        return {**self.spec.options, **self.options}

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "model_type": self.model, **self.values, **self.structure()}


def preset_names() -> list[str]:
    """Every preset and alias, in declaration order."""
    return [name for spec in MODELS.values() for name in (*spec.presets, *spec.aliases)]


def preset(name: str) -> Config:
    """The named preset (or alias); unknown names suggest the nearest ones."""
    for spec in MODELS.values():
        target = spec.aliases.get(name, name)
        if target in spec.presets:
            return validated(Config(spec.name, dict(spec.presets[target]), name))
    near = difflib.get_close_matches(name, preset_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else "; see `symbert presets`"
    raise ConfigError(f"unknown preset {name!r}{hint}")


def from_file(path: str | Path) -> Config:
    """A Hugging Face config.json, dispatched on ``model_type``; keys symbert does not use are ignored."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    model = data.get("model_type", "bert")
    if model not in MODELS:
        raise ConfigError(f"{path}: unsupported model_type {model!r} (supported: {', '.join(MODELS)})")
    spec = MODELS[model]
    base = _defaults(spec)
    values = {key: _integer(key, data[key]) if key in data else base[key] for key in spec.fields}
    return validated(Config(model, values, path.stem))


def _defaults(spec: ModelSpec) -> Mapping[str, int]:
    """Values Hugging Face would use for keys a config.json leaves out: the family's base preset."""
    return spec.presets.get(f"{spec.name}-base") or next(iter(spec.presets.values()))


_INT = re.compile(r"[+-]?\d+")


def with_overrides(config: Config, assignments: Iterable[str]) -> Config:
    """Apply ``key=value`` overrides; values are parsed as integers, never evaluated."""
    values = dict(config.values)
    for item in assignments:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        if key not in config.spec.fields:
            near = difflib.get_close_matches(key, config.spec.fields, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; known: {', '.join(config.spec.fields)}"
            raise ConfigError(f"unknown config key {key!r} for {config.model}{hint}")
        if not _INT.fullmatch(raw):
            raise ConfigError(f"{key} must be a positive integer, got {raw!r}")
        values[key] = int(raw)
    return validated(replace(config, values=values))


def _integer(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {value!r}")
    return value


def validated(config: Config) -> Config:
    """Check every value is a positive integer and every divisibility constraint holds."""
    for key in config.spec.fields:
        value = _integer(key, config.values.get(key))
        if value <= 0:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    for whole, part in config.spec.divides:
        if config.values[whole] % config.values[part]:
            raise ConfigError(f"{whole}={config.values[whole]} is not divisible by {part}={config.values[part]}")
    return config


def resolve(preset_name: str | None, config_file: str | None, overrides: Iterable[str] = (), **options: bool) -> Config:
    """The config a command asks for: a preset or a file (bert-base if neither), then overrides."""
    if preset_name and config_file:
        raise ConfigError("give either --preset or --config, not both")
    config = from_file(config_file) if config_file else preset(preset_name or "bert-base")
    config = with_overrides(config, overrides)
    unknown = set(options) - set(config.spec.options)
    if unknown:
        raise ConfigError(f"{config.model} has no option {sorted(unknown)[0]!r}")
    return replace(config, options={**config.options, **options})
