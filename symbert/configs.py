"""Model configurations: presets, Hugging Face config.json files, ``key=value`` overrides, validation.

Every problem raises :class:`ConfigError` with one line naming the field or file at fault.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import sympy

from symbert import defaults
from symbert.display import Displayed
from symbert.models import MODELS, ModelSpec
from symbert.models.heads import BARE, PROBLEM_TYPES, Head, Task, encoder_options
from symbert.symbols import C, num_labels, position_size


class ConfigError(ValueError):
    """An invalid configuration, with a one-line message naming the problem."""


#: The largest size symbert accepts: every config size (vocab_size, hidden_size, num_hidden_layers, ...),
#: num_labels, choices, batch and seq_len. Formulas are exact at any size up to it (Python integers
#: wherever numpy's int64 could overflow); above it an input is refused with one line.
MAX_SIZE = 10**12
#: The most a config file may hold, and how deeply its JSON may nest.
MAX_CONFIG_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 64
#: Integers with more digits than this are not read (Python refuses to print ones past 4300).
_MAX_DIGITS = 40


class Huge:
    """An integer from a config file too long to be a size; only its digit count is kept."""

    def __init__(self, digits: str) -> None:
        self.digits = len(digits.lstrip("+-"))

    def __repr__(self) -> str:
        return f"a {self.digits}-digit number"


def show(value: object, limit: int = 60) -> str:
    """``repr(value)`` for an error message: large integers by their digit count, long text cut short."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**_MAX_DIGITS:
        return f"a {len(str(abs(value))) if value.bit_length() < 10_000 else 'many'}-digit number"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_size(name: str, value: object) -> int:
    """``value`` as a size: a positive integer no larger than :data:`MAX_SIZE`, or a ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {type(value).__name__} {show(value)}")
    if value <= 0:
        raise ConfigError(f"{name} must be a positive integer, got {show(value)}")
    if value > MAX_SIZE:
        raise ConfigError(f"{name}={show(value)} is larger than symbert accepts (sizes up to 10**12)")
    return value


def read_int(name: str, raw: str) -> int:
    """A decimal integer typed by the user, refusing digit strings too long to be a size."""
    if len(raw.lstrip("+-").lstrip("0")) > _MAX_DIGITS:
        raise ConfigError(f"{name} is larger than symbert accepts (sizes up to 10**12), got {show(raw)}")
    return int(raw)


@dataclass(frozen=True)
class Source:
    """The config file a config was read from: its path, what it holds, and the Hugging Face keys changed
    since (``--set``, ``--num-labels``, ``--problem-type``), which ``validate`` applies to the file's own
    Hugging Face config."""

    path: str
    data: Mapping[str, object]
    changes: Mapping[str, object] = field(default_factory=dict)

    def changed(self, **changes: object) -> Source:
        return replace(self, changes={**self.changes, **changes})


@dataclass(frozen=True)
class Config(Displayed):
    """One concrete model: its family, Hugging Face config values, structural options and task head."""

    model: str
    values: Mapping[str, int]
    name: str = "custom"
    options: Mapping[str, object] = field(default_factory=dict)
    task: Task = field(default_factory=Task)
    source: Source | None = field(default=None, compare=False, repr=False)

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
        """The structural options passed to the model's build function: the sizes decide some, a head
        the pooler."""
        decided = {o.name: o.decided_by(self.values) for o in self.spec.options if o.decided_by}
        return encoder_options(self.head, {**self.spec.defaults, **self.options, **decided})

    @property
    def max_length(self) -> int | None:
        positions = self.symbols().get(position_size)
        return None if positions is None else positions - self.spec.position_offset

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={v}" for s, v in self.symbols().items() if s not in self.spec.derived)
        head = "" if self.head is None else f"; head {self.task.head}"
        problem = f" ({self.task.problem_type})" if self.head is not None and self.task.problem_type else ""
        return f"<Config {self.name}: {self.model}, {sizes}{head}{problem}>"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "model_type": self.model, **self.values, **self.structure(), **self.task_dict()}

    def hugging_face(self) -> dict[str, object]:
        """The Hugging Face config keys of this config: the values the family is modelled with, the sizes,
        the options read from a config, and the labels and problem type its head uses. (A config read
        from a file is validated against the file itself, :attr:`source`.)"""
        options = {o.name: self.structure()[o.name] for o in self.spec.options if o.from_config}
        task = {k: v for k, v in self.task_dict().items() if k == "num_labels"}
        if self.task.problem_type is not None:  # unset, Hugging Face's own rule picks the loss (DeBERTa's older code)
            task["problem_type"] = self.task.problem_type
        return {**dict(self.spec.constraints), **self.values, **options, **task}

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


def _split(spec: ModelSpec, data: Mapping[str, object], where: str, file: bool = False) -> Config:
    """Fields and config-read options from a mapping. A preset's gaps take the default preset's sizes and
    the options' defaults; a config file's take what Hugging Face uses (:meth:`ModelSpec.default`), and
    every value the family is modelled with is checked, whether the file gives it or leaves it out."""
    base = spec.presets[spec.default_preset]
    if spec.read is not None:
        try:
            data = spec.read(data)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def given(key: str, fallback: object) -> object:
        return data[key] if key in data else spec.default(key) if file else fallback

    for key, required in spec.all_constraints.items() if file else ():
        value = given(key, required)
        if value != required or isinstance(value, bool) != isinstance(required, bool):
            raise ConfigError(
                f"{where}: symbert models {spec.name} with {key}={show(required)} only, got {show(value)}"
            )
    values = {key: _integer(key, given(key, base.get(key))) for key in spec.fields}
    options = {}
    for option in spec.options:
        if option.from_config:
            try:
                options[option.name] = option.parse(given(option.name, base.get(option.name, option.default)))
            except ValueError as exc:
                raise ConfigError(f"{where}: {exc}" if file else str(exc)) from None
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


#: The longest name printed: longer ones keep their start and end around an ellipsis.
MAX_NAME = 60
#: What standard input is called, as a ``--config -`` file's name and in its errors.
STDIN = "<stdin>"


def safe_name(text: str, limit: int | None = MAX_NAME) -> str:
    """``text`` fit to print as a name: control characters (terminal escapes, newlines) written as Python
    escapes (``\\x1b``, ``\\n``), and at most ``limit`` characters, its middle cut to an ellipsis (None: a
    path the user gave, which tells configs apart and is kept whole)."""
    shown = "".join(repr(c)[1:-1] if not c.isprintable() else c for c in text)
    if limit is None or len(shown) <= limit:
        return shown
    head = (limit - 1) // 2
    return f"{shown[:head]}…{shown[len(shown) - (limit - 1 - head):]}"


def label(path: Path, data: Mapping[str, object]) -> str:
    """A config file's name in outputs (:func:`safe_name`): its ``_name_or_path`` (a local path's last folder),
    else the folder it sits in when the file is a checkpoint's ``config.json``, else the file's stem."""
    given = data.get("_name_or_path")
    if isinstance(given, str) and given.strip():
        given = given.strip().rstrip("/\\")
        local = given.startswith(("/", ".", "~")) or "\\" in given or ":" in given
        return safe_name(re.split(r"[/\\]", given)[-1] if local else given)
    if str(path) == STDIN:
        return "stdin"
    if path.stem == "config" and path.parent.name:
        return safe_name(path.parent.name)
    return safe_name(path.stem)


def config_path(path: str | Path) -> Path:
    """``path``, or the ``config.json`` inside it when it is a folder (a Hugging Face checkpoint)."""
    path = Path(path)
    return path / "config.json" if path.is_dir() and str(path) != STDIN else path


def from_file(path: str | Path) -> Config:
    """A Hugging Face config.json (or a checkpoint folder holding one), dispatched on ``model_type`` (or,
    without one, on a class of ``architectures`` symbert knows; ``AutoConfig`` refuses a file with
    neither). Every key Hugging Face reads is modelled or refused (:meth:`ModelSpec.kind`); the others
    change nothing. It is labelled by :func:`label`; ``-`` is standard input. An error names the file."""
    path = Path(STDIN) if str(path) == "-" else config_path(path)
    data = load_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    try:
        return validated(replace(_read(Source(str(path), data)), name=label(path, data)))
    except ConfigError as exc:
        raise (exc if str(exc).startswith(str(path)) else ConfigError(f"{path}: {exc}")) from None


def _read(source: Source) -> Config:
    """The config a file's keys describe, with the keys changed since (:attr:`Source.changes`): the file
    as if it held them."""
    data = {**source.data, **source.changes}
    spec = MODELS[_family(data, source.path)]
    config = _split(spec, data, source.path, file=True)
    _check_token_ids(spec, data, config, source.path)
    return replace(config, task=_task(spec, data, source.path), source=source)


def _family(data: Mapping[str, object], where: str) -> str:
    """The family a config file names: its ``model_type``, or without one the family whose class its
    ``architectures`` names first."""
    if "model_type" in data:
        model = data["model_type"]
        if not isinstance(model, str) or model not in MODELS:
            raise ConfigError(f"{where}: unsupported model_type {show(model)} (supported: {', '.join(MODELS)})")
        return model
    architectures = data.get("architectures")
    first = architectures[0] if isinstance(architectures, list) and architectures else None
    for spec in MODELS.values():
        if first in (spec.architecture, *(h.architecture for h in spec.heads.values())):
            return spec.name
    named = f"its architectures name no class symbert knows ({show(first)})" if first else "no architectures"
    raise ConfigError(f"{where} has no model_type and {named}; Hugging Face's AutoConfig refuses it too")


def _check_token_ids(spec: ModelSpec, data: Mapping[str, object], config: Config, where: str) -> None:
    """A padding id must be a row of the word embeddings (PyTorch's ``padding_idx``), or Hugging Face
    cannot build the model."""
    pad = data.get("pad_token_id", spec.default("pad_token_id"))
    vocab = config.values["vocab_size"]
    if pad is not None and (not isinstance(pad, int) or isinstance(pad, bool) or not -vocab <= pad < vocab):
        raise ConfigError(f"{where}: pad_token_id={show(pad)} is not a row of the word embeddings (vocab_size={vocab})")


def load_json(path: Path) -> object:
    """A JSON file read safely: a regular file or a pipe, at most :data:`MAX_CONFIG_BYTES`, nested at most
    :data:`MAX_JSON_DEPTH` deep, integers of more than 40 digits kept as :class:`Huge`."""
    if str(path) == STDIN:
        return _parse_json(sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1), path)
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
                raise ConfigError(f"cannot read {path}: {kind}")
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _parse_json(raw, path)


def _parse_json(raw: bytes, path: Path) -> object:
    """A config file's bytes as JSON, within the limits of :func:`load_json`."""
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than a config file may be ({MAX_CONFIG_BYTES // 2**20} MiB)")
    try:
        data = json.loads(raw.decode("utf-8-sig"), parse_int=_json_int)
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply (at most {MAX_JSON_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise ConfigError(f"{path} is nested too deeply (at most {MAX_JSON_DEPTH} levels)")
    return data


def _json_int(digits: str) -> int | Huge:
    return Huge(digits) if len(digits.lstrip("-")) > _MAX_DIGITS else int(digits)


def _depth(data: object) -> int:
    """How deeply lists and objects nest in ``data`` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            todo.extend((child, depth + 1) for child in children)
    return deepest


def _task(spec: ModelSpec, data: Mapping[str, object], where: str) -> Task:
    """The head named by ``architectures`` and the labels set by ``num_labels`` (or ``id2label``) and
    ``problem_type``, with Hugging Face's defaults (two labels)."""
    architectures = data.get("architectures") or [spec.architecture]
    if not isinstance(architectures, list) or not all(isinstance(a, str) for a in architectures):
        raise ConfigError(f"{where}: architectures must be a list of class names, got {show(architectures)}")
    known = {spec.architecture: BARE, **{h.architecture: h.name for h in spec.heads.values()}}
    if architectures[0] not in known:
        raise ConfigError(f"{where}: unknown architecture {show(architectures[0])} (known: {', '.join(known)})")
    id2label = data.get("id2label")
    if id2label is not None and not isinstance(id2label, dict):
        raise ConfigError(f"{where}: id2label must map ids to labels, got {show(id2label)}")
    labels = data.get("num_labels", 2) if id2label is None else len(id2label)  # id2label wins, as in Hugging Face
    problem = data.get("problem_type")
    if problem is not None and problem not in PROBLEM_TYPES:
        raise ConfigError(f"{where}: problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {show(problem)}")
    return Task(known[architectures[0]], _integer("num_labels", labels), problem)


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _parse_raw(raw: str) -> object:
    """A ``--set`` value as JSON would read it: true/false, an integer, a number or a plain name."""
    if raw in ("true", "false"):
        return raw == "true"
    if _INT.fullmatch(raw):
        return read_int("the value", raw)
    if _FLOAT.fullmatch(raw):
        return float(raw)
    if _NAME.fullmatch(raw):
        return raw
    raise ConfigError(f"cannot read value {show(raw)}")


def with_overrides(config: Config, assignments: Iterable[str]) -> Config:
    """Apply ``key=value`` overrides; values are parsed with regular expressions, never evaluated."""
    values, options, changes = dict(config.values), dict(config.options), {}
    settable = [*config.spec.fields, *(o.name for o in config.spec.options if o.from_config)]
    for item in assignments:
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {show(item)}")
        option = config.spec.option(key)
        if key in config.spec.fields:
            if not _INT.fullmatch(raw):
                raise ConfigError(f"{key} must be a positive integer, got {show(raw)}")
            values[key] = changes[key] = read_int(key, raw)
        elif option is not None and option.from_config:
            try:
                options[key] = changes[key] = option.parse(_parse_raw(raw))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        else:
            near = difflib.get_close_matches(key, settable, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; known: {', '.join(settable)}"
            raise ConfigError(f"unknown config key {show(key)} for {config.model}{hint}")
    if config.source is None:
        return validated(replace(config, values=values, options=options))
    # a file's config is read again with the keys changed, so that what they imply is checked too
    read = _read(config.source.changed(**changes))
    return validated(replace(read, name=config.name, task=config.task, options={**config.options, **read.options}))


def _integer(key: str, value: object) -> int:
    if isinstance(value, Huge):
        raise ConfigError(f"{key} is larger than symbert accepts (sizes up to 10**12), got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, got {type(value).__name__} {show(value)}")
    return value


def validated(config: Config) -> Config:
    """Check every value is a positive integer up to :data:`MAX_SIZE` and every divisibility constraint holds."""
    for key in config.spec.fields:
        check_size(key, _integer(key, config.values.get(key)))
    for whole, part in config.spec.divides:
        if config.values[whole] % config.values[part]:
            raise ConfigError(f"{whole}={config.values[whole]} is not divisible by {part}={config.values[part]}")
    if config.spec.check is not None:
        try:
            config.spec.check({**config.structure(), **config.values})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if config.max_length is not None and config.max_length < 1:
        key = next(k for k, s in config.spec.fields.items() if s == position_size)
        raise ConfigError(
            f"{key}={config.values[key]}: {config.model} needs more than {config.spec.position_offset} positions"
        )
    for key, value in (("num_labels", config.task.num_labels), ("choices", config.task.choices)):
        check_size(key, _integer(key, value))
    if config.task.problem_type == "single_label_classification" and config.task.num_labels == 1:
        raise ConfigError("problem_type single_label_classification needs num_labels > 1 (Hugging Face refuses it)")
    head = config.head
    if head is not None and head.labels is not None and config.task.num_labels != head.labels:
        raise ConfigError(
            f"num_labels={config.task.num_labels} (id2label): Hugging Face's {head.architecture} runs with "
            f"num_labels={head.labels} only"
        )
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
        config = preset(defaults.PRESET if preset_name is None else preset_name)
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
        raise ConfigError(f"problem_type must be one of {', '.join(PROBLEM_TYPES)}, got {show(task.problem_type)}")
    head = config.spec.heads.get(task.head)
    if head is not None and head.pooler and config.options.get("pooler") is False:
        raise ConfigError(f"the {task.head} head reads the pooler; drop --no-pooler")
    changes = {k: v for k, v in settings.items() if k in ("num_labels", "problem_type")}
    source = config.source and config.source.changed(**changes)
    return validated(replace(config, task=task, source=source))
