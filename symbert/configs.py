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
from symbert.models.heads import BARE, PROBLEM_TYPES, Head, Task, encoder_options
from symbert.symbols import C, num_labels, position_size


class ConfigError(ValueError):
    """An invalid configuration, with a one-line message naming the problem."""


@dataclass(frozen=True)
class Config:
    """One concrete model: its family, Hugging Face config values, structural options and task head."""

    model: str
    values: Mapping[str, int]
    name: str = "custom"
    options: Mapping[str, object] = field(default_factory=dict)
    task: Task = field(default_factory=Task)

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def head(self) -> Head | None:
        """The task head, or None for the bare encoder."""
        return self.spec.heads.get(self.task.head)

    def symbols(self) -> dict[sympy.Symbol, int]:
        """The value of every model symbol this config sets, derived ones and the head's sizes included."""
        values = {sym: self.values[key] for key, sym in self.spec.fields.items()}
        values.update({sym: int(expr.subs(values)) for sym, expr in self.spec.derived.items()})
        sizes = {num_labels: self.task.num_labels, C: self.task.choices}
        values.update({sym: sizes[sym] for sym in (self.head.symbols if self.head else ())})
        return values

    def structure(self) -> dict[str, object]:
        """The structural options passed to the model's build function; a head decides the pooler."""
        return encoder_options(self.head, {**self.spec.defaults, **self.options})

    @property
    def max_length(self) -> int | None:
        positions = self.symbols().get(position_size)
        return None if positions is None else positions - self.spec.position_offset

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "model_type": self.model, **self.values, **self.structure(), **self.task_dict()}

    def task_dict(self) -> dict[str, object]:
        """The head and the settings it uses."""
        if self.head is None:
            return {"head": BARE}
        out: dict[str, object] = {"head": self.task.head}
        if num_labels in self.head.symbols:
            out |= {"num_labels": self.task.num_labels}
        if self.task.head == "sequence-classification":
            out |= {"problem_type": self.task.problem}
        if C in self.head.symbols:
            out |= {"choices": self.task.choices}
        return out


def preset_names() -> list[str]:
    """Every preset and alias, in declaration order."""
    return [name for spec in MODELS.values() for name in (*spec.presets, *spec.aliases)]


def _split(spec: ModelSpec, data: Mapping[str, object], where: str) -> Config:
    """Fields and config-read options from a mapping, the family's default preset filling gaps."""
    base = spec.presets[spec.default_preset]
    for key, required in spec.constraints:
        if key in data and data[key] != required:
            raise ConfigError(f"{where}: symbert models {spec.name} with {key}={required}, got {data[key]!r}")
    values = {key: _integer(key, data[key] if key in data else base[key]) for key in spec.fields}
    options = {}
    for option in spec.options:
        if option.from_config:
            try:
                options[option.name] = option.parse(data.get(option.name, base.get(option.name, option.default)))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return Config(spec.name, values, where, options)


def preset(name: str) -> Config:
    """The named preset (or alias); unknown names suggest the nearest ones."""
    for spec in MODELS.values():
        target = spec.aliases.get(name, name)
        if target in spec.presets:
            return validated(replace(_split(spec, spec.presets[target], name), name=name))
    near = difflib.get_close_matches(name, preset_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(near)}?" if near else "; see `symbert presets`"
    raise ConfigError(f"unknown preset {name!r}{hint}")


def label(path: Path, data: Mapping[str, object]) -> str:
    """A config file's name in outputs: its ``_name_or_path`` (a local path's last folder), else the folder
    it sits in when the file is a checkpoint's ``config.json``, else the file's stem."""
    given = data.get("_name_or_path")
    if isinstance(given, str) and given.strip():
        given = given.strip().rstrip("/\\")
        local = given.startswith(("/", ".", "~")) or "\\" in given or ":" in given
        return re.split(r"[/\\]", given)[-1] if local else given
    if path.stem == "config" and path.parent.name:
        return path.parent.name
    return path.stem


def config_path(path: str | Path) -> Path:
    """``path``, or the ``config.json`` inside it when it is a folder (a Hugging Face checkpoint)."""
    path = Path(path)
    return path / "config.json" if path.is_dir() else path


def from_file(path: str | Path) -> Config:
    """A Hugging Face config.json (or a checkpoint folder holding one), dispatched on ``model_type``; keys
    symbert does not use are ignored. It is labelled by :func:`label`."""
    path = config_path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    model = data.get("model_type", "bert")
    if not isinstance(model, str) or model not in MODELS:
        raise ConfigError(f"{path}: unsupported model_type {model!r} (supported: {', '.join(MODELS)})")
    config = _split(MODELS[model], data, str(path))
    return validated(replace(config, name=label(path, data), task=_task(config.spec, data, str(path))))


def _task(spec: ModelSpec, data: Mapping[str, object], where: str) -> Task:
    """The head named by ``architectures`` and the labels set by ``num_labels`` (or ``id2label``) and
    ``problem_type``, with Hugging Face's defaults (two labels)."""
    architectures = data.get("architectures") or [spec.architecture]
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ConfigError(f"{where}: architectures must be a list of class names, got {architectures!r}")
    known = {spec.architecture: BARE, **{h.architecture: h.name for h in spec.heads.values()}}
    if architectures[0] not in known:
        raise ConfigError(f"{where}: unknown architecture {architectures[0]!r} (known: {', '.join(known)})")
    labels = data.get("num_labels", len(data["id2label"]) if isinstance(data.get("id2label"), dict) else 2)
    problem = data.get("problem_type")
    if problem is not None and problem not in PROBLEM_TYPES:
        raise ConfigError(f"{where}: problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {problem!r}")
    return Task(known[architectures[0]], _integer("num_labels", labels), problem)


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_raw(raw: str) -> object:
    """A ``--set`` value as JSON would read it: true/false, an integer, a number or a plain name."""
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.fullmatch(raw):
        return int(raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if _NAME.fullmatch(raw):
        return raw
    raise ConfigError(f"cannot read value {raw!r}")


def with_overrides(config: Config, assignments: Iterable[str]) -> Config:
    """Apply ``key=value`` overrides; values are parsed with regular expressions, never evaluated."""
    values, options = dict(config.values), dict(config.options)
    settable = [*config.spec.fields, *(o.name for o in config.spec.options if o.from_config)]
    for item in assignments:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        option = config.spec.option(key)
        if key in config.spec.fields:
            if not _INT.fullmatch(raw):
                raise ConfigError(f"{key} must be a positive integer, got {raw!r}")
            values[key] = int(raw)
        elif option is not None and option.from_config:
            try:
                options[key] = option.parse(_parse_raw(raw))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        else:
            near = difflib.get_close_matches(key, settable, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; known: {', '.join(settable)}"
            raise ConfigError(f"unknown config key {key!r} for {config.model}{hint}")
    return validated(replace(config, values=values, options=options))


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
    if config.max_length is not None and config.max_length < 1:
        raise ConfigError(f"{config.model} needs more than {config.spec.position_offset} positions")
    for key, value in (("num_labels", config.task.num_labels), ("choices", config.task.choices)):
        if _integer(key, value) <= 0:
            raise ConfigError(f"{key} must be a positive integer, got {value}")
    return config


def resolve(
    preset_name: str | None,
    config_file: str | None,
    overrides: Iterable[str] = (),
    task: Mapping[str, object] | None = None,
    **options: object,
) -> Config:
    """The config a command asks for: a preset or a file (bert-base if neither), then overrides, then the
    task settings given (``head``, ``num_labels``, ``problem_type``, ``choices``; None leaves one as is)."""
    if preset_name is not None and config_file is not None:
        raise ConfigError("give either --preset or --config, not both")
    if config_file is not None and not config_file.strip():
        raise ConfigError("--config needs a file name, got ''")
    if config_file is not None:
        config = from_file(config_file)
    else:
        config = preset("bert-base" if preset_name is None else preset_name)
    config = with_overrides(config, overrides)
    unknown = [name for name in options if config.spec.option(name) is None]
    if unknown:
        raise ConfigError(f"{config.model} has no option {unknown[0]!r}")
    config = replace(config, options={**config.options, **options})
    return with_task(config, **{k: v for k, v in (task or {}).items() if v is not None})


#: The task settings each head uses; setting another is refused, since Hugging Face would not use it.
_USES = {
    "num_labels": ("sequence-classification", "token-classification"),
    "problem_type": ("sequence-classification",),
    "choices": ("multiple-choice",),
}


def with_task(config: Config, **settings: object) -> Config:
    """``config`` with task settings changed (``head``, ``num_labels``, ``problem_type``, ``choices``)."""
    task = replace(config.task, **settings)
    if task.head != BARE and task.head not in config.spec.heads:
        heads = ", ".join([BARE, *config.spec.heads])
        raise ConfigError(f"{config.model} has no head {task.head!r} (heads: {heads})")
    for key in settings:
        if key in _USES and task.head not in _USES[key]:
            heads = " and ".join(_USES[key])
            raise ConfigError(
                f"--{key.replace('_', '-')} applies to the {heads} head{'s' * (len(_USES[key]) > 1)} only"
            )
    if task.problem_type is not None and task.problem_type not in PROBLEM_TYPES:
        raise ConfigError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {task.problem_type!r}")
    head = config.spec.heads.get(task.head)
    if head is not None and head.pooler and config.options.get("pooler") is False:
        raise ConfigError(f"the {task.head} head reads the pooler; drop --no-pooler")
    return validated(replace(config, task=task))
