"""The ``symbert`` command: thin wrappers that parse, call the API and print."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from symbert.analysis.policy import ATTENTION, DEFAULT_POLICY, DTYPES, POLICIES, RECOMPUTE, MemoryOptions
from symbert.configs import Config, ConfigError, check_size, preset_names, resolve
from symbert.models.heads import HEAD_NAMES, PROBLEM_TYPES
from symbert.quantities import QUANTITIES, TRAINING_QUANTITIES, canonical
from symbert.training.states import DEFAULT_OPTIMIZER, OPTIMIZERS

if TYPE_CHECKING:
    from symbert.render.latex import Notation
    from symbert.render.tables import Table

EXIT_USAGE = 2
POLICY_NAMES = tuple(POLICIES)
ATTENTION_HELP = "Default: the model's in Hugging Face, sdpa (eager for DeBERTa, which has no sdpa)."
POLICY_HELP = "Every command's default: torch-cuda, PyTorch on the GPU, where Hugging Face models train."


class AtLeast(click.ParamType):
    """An integer of at least ``least``; anything else is one line naming the option: ``--batch must be a
    positive integer, got 0``."""

    name = "integer"

    def __init__(self, least: int = 1) -> None:
        self.least = least

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        option = param.opts[0] if param is not None and param.opts else "value"
        wanted = "a positive integer" if self.least == 1 else f"an integer of at least {self.least}"
        text = str(value).strip()
        shown = text if len(text) <= 24 else f"{text[:10]}…{text[-10:]} ({len(text)} characters)"
        if isinstance(value, bool) or not re.fullmatch(r"[+-]?[0-9]+", text):
            raise click.UsageError(f"{option} must be {wanted}, got {shown!r}")
        try:
            number = int(text)
        except ValueError:  # more digits than Python converts
            raise click.UsageError(f"{option} must be {wanted} of at most 4300 digits, got {shown}") from None
        if number < self.least:
            raise click.UsageError(f"{option} must be {wanted}, got {shown}")
        return number

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "INTEGER"


#: Batch sizes and sequence lengths: positive integers everywhere.
POSITIVE = AtLeast(1)


class Quantity(click.ParamType):
    """A quantity by name or alias (:data:`symbert.quantities.ALIASES`); a bad one is a one-line error."""

    name = "quantity"

    def __init__(self, choices: tuple[str, ...] = QUANTITIES) -> None:
        self.choices = choices

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return canonical(str(value), self.choices)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "QUANTITY"


class Command(click.Command):
    """A command that keeps its raw arguments, so repeated --preset and --config keep their order."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["symbert.args"] = list(args)
        return super().parse_args(ctx, args)


def _print_json(doc: dict[str, Any]) -> None:
    """A command's JSON document, with the torch and transformers versions whose behaviour it models."""
    from symbert.versions import modelled_json

    click.echo(json.dumps({**doc, "models": modelled_json()}, indent=2))


def _fail(message: str) -> None:
    message = " ".join(message.split())
    if len(message) > 500:
        message = message[:499] + "…"
    click.echo(f"symbert: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def structure(no_pooler: bool, no_token_types: bool, no_padding: bool = False) -> dict[str, bool]:
    """The structural options the --no-pooler, --no-token-types and --no-padding flags switch off."""
    flags = (("pooler", no_pooler), ("token_types", no_token_types), ("padding", no_padding))
    return {key: False for key, off in flags if off}


NO_PADDING_HELP = "A batch without padding (packed sequences): Hugging Face passes no attention mask."


def task_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--head / --num-labels / --problem-type / --choices, resolved into a ``task`` mapping (None: unset)."""

    @click.option("--head", type=click.Choice(HEAD_NAMES), help="A task head and its loss (default: model).")
    @click.option("--num-labels", type=click.IntRange(min=1), help="Classifier outputs (default: 2).")
    @click.option("--problem-type", type=click.Choice(PROBLEM_TYPES), help="Sequence classification's loss.")
    @click.option("--choices", type=click.IntRange(min=1), help="Choices per example, multiple-choice (default 4).")
    @wraps(fn)
    def wrapper(
        head: str | None, num_labels: int | None, problem_type: str | None, choices: int | None, **kwargs: Any
    ) -> Any:
        task = {"head": head, "num_labels": num_labels, "problem_type": problem_type, "choices": choices}
        return fn(task=task, **kwargs)

    return wrapper


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--preset / --config / --set / structural flags / task flags, resolved into a ``config`` argument."""

    @click.option("--preset", "preset_name", metavar="NAME", help="A preset such as bert-base (default).")
    @click.option("--config", "config_file", metavar="FILE", help="A Hugging Face config.json.")
    @click.option("--set", "overrides", metavar="KEY=VALUE", multiple=True, help="Override a config value.")
    @click.option("--no-pooler", is_flag=True, help="Leave out the pooler.")
    @click.option("--no-token-types", is_flag=True, help="Leave out token-type embeddings.")
    @click.option("--no-padding", is_flag=True, help=NO_PADDING_HELP)
    @task_options
    @wraps(fn)
    def wrapper(
        preset_name: str | None,
        config_file: str | None,
        overrides: tuple[str, ...],
        no_pooler: bool,
        no_token_types: bool,
        no_padding: bool,
        task: dict[str, Any],
        **kwargs: Any,
    ) -> Any:
        options = structure(no_pooler, no_token_types, no_padding)
        config = resolve(preset_name, config_file, overrides, task, **options)
        return fn(config=config, **kwargs)

    return wrapper


PRECISION_NAMES = ("fp32", "mixed", "amp")


def parallel_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The parallel layout flags, resolved into ``layout`` (:class:`symbert.parallel.Layout`)."""
    from symbert.parallel import STAGES, ZERO_STAGES, Layout

    @click.option(
        "--tensor-parallel", "tensor", type=POSITIVE, default=1, show_default=True, help="Tensor-parallel degree t."
    )
    @click.option(
        "--sequence-parallel", "sequence", is_flag=True, help="Shard dropout, layernorm and residuals along seq_len."
    )
    @click.option(
        "--pipeline-parallel", "pipeline", type=POSITIVE, default=1, show_default=True, help="Pipeline stages p."
    )
    @click.option("--microbatches", type=POSITIVE, default=1, show_default=True, help="Micro-batches per step m.")
    @click.option(
        "--virtual-stages",
        "virtual",
        type=POSITIVE,
        default=1,
        show_default=True,
        help="Interleaved stages per rank v.",
    )
    @click.option(
        "--stage",
        type=click.Choice(STAGES),
        default="first",
        show_default=True,
        help="Pipeline stage whose GPU to show: first (the most loaded) or last (the pooler and head).",
    )
    @click.option(
        "--data-parallel", "data", type=POSITIVE, default=1, show_default=True, help="Data-parallel degree d."
    )
    @click.option(
        "--zero",
        type=click.Choice([str(z) for z in ZERO_STAGES]),
        default="0",
        show_default=True,
        help="ZeRO stage over the data-parallel group (0: DDP; 3: FSDP full sharding).",
    )
    @wraps(fn)
    def wrapper(
        tensor: int,
        sequence: bool,
        pipeline: int,
        microbatches: int,
        virtual: int,
        stage: str,
        data: int,
        zero: str,
        **kwargs: Any,
    ) -> Any:
        try:
            layout = Layout(tensor, sequence, pipeline, microbatches, virtual, data, int(zero), stage)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return fn(layout=layout, **kwargs)

    return wrapper


POLICY_OPTION = click.option(
    "--policy", type=click.Choice(POLICY_NAMES), default=DEFAULT_POLICY, show_default=True, help=POLICY_HELP
)


def memory_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--batch / --seq-len and report's memory flags, resolved into ``batch``, ``length`` and ``options``."""

    @click.option("--batch", "-b", type=POSITIVE, default=1, show_default=True, help="Batch size B.")
    @click.option("--seq-len", "-s", "length", type=POSITIVE, default=128, show_default=True, help="Sequence length.")
    @POLICY_OPTION
    @click.option("--dtype", type=click.Choice(DTYPES), help="Activation dtype (default: the policy's).")
    @click.option("--attention", type=click.Choice(ATTENTION), help=ATTENTION_HELP)
    @click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True)
    @click.option(
        "--precision",
        type=click.Choice(PRECISION_NAMES),
        default="fp32",
        show_default=True,
        help="amp: torch.autocast to --dtype (default bfloat16) over float32 weights; mixed: 16-bit weights.",
    )
    @parallel_options
    @wraps(fn)
    def wrapper(
        policy: str,
        dtype: str | None,
        attention: str | None,
        recompute: str,
        precision: str,
        layout: Any,
        **kwargs: Any,
    ) -> Any:
        memory = MemoryOptions(policy, dtype, attention, recompute, layout=layout)
        options = make_training(DEFAULT_OPTIMIZER, precision, memory, None).memory
        for config in [kwargs.get("config"), *(kwargs.get("configs") or ())]:
            if config is not None:  # a setup the family does not run: refused before anything is printed
                options.for_model(config.spec)
        return fn(options=options, **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.version_option(package_name="symbert")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """BERT as a symbolic computation graph: exact formulas for parameters, memory and FLOPs.

    Commands that read one config take --preset NAME or --config FILE; those that read several
    (latex, table, compare, sweep) also take CONFIG arguments. See `symbert COMMAND --help`.
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


cli.command_class = Command


@cli.command()
@config_options
@click.option("--by-component", is_flag=True, help="Break the count down by component.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def params(config: Config, by_component: bool, as_json: bool) -> None:
    """Parameter count: the formula, in general and substituted form, and its value."""
    from symbert.render import reports

    breakdown = reports.params_breakdown(config)
    if as_json:
        _print_json(reports.params_json(config, breakdown))
    else:
        reports.print_params(config, breakdown, by_component)


@cli.command()
@config_options
def graph(config: Config) -> None:
    """The traced graph as a table: node, op, scope, shapes, parameters."""
    from symbert.render import reports

    reports.print_graph(config)


@cli.command()
@config_options
@memory_options
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract documented in the README.")
def report(config: Config, batch: int, length: int, options: MemoryOptions, as_json: bool) -> None:
    """Parameters, activation memory and FLOPs of one config at one shape, by component."""
    from symbert.analysis.report import report as build_report
    from symbert.render import reports

    r = build_report(config, batch, length, options)
    if as_json:
        _print_json(reports.report_json(r))
    else:
        reports.print_report(r)


@cli.command()
@config_options
@click.option("--batch", "-b", type=POSITIVE, default=2, show_default=True, help="Batch size B.")
@click.option("--seq-len", "-s", type=POSITIVE, default=16, show_default=True, help="Sequence length.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
@click.option(
    "--device",
    type=click.Choice(("cpu", "cuda")),
    default="cpu",
    show_default=True,
    help="cuda: the torch-cuda policy on the GPU, and in float32 the training-step peak.",
)
@click.option(
    "--attention",
    type=click.Choice(("eager", "sdpa")),
    help="Predicted as --attention, measured with attn_implementation of the same name. " + ATTENTION_HELP,
)
@click.option(
    "--precision",
    type=click.Choice(("fp32", "amp")),
    default="fp32",
    show_default=True,
    help="amp: a float32 model under torch.autocast(device, --dtype), on a batch with one padded token.",
)
@parallel_options
def validate(
    config: Config,
    batch: int,
    seq_len: int,
    dtype: str,
    device: str,
    attention: str | None,
    precision: str,
    layout: Any,
) -> None:
    """Compare predictions with a real Hugging Face model (needs the validate extra); exit 1 on mismatch.

    Prints the torch and transformers versions it measured with, and a warning where they are outside
    the range symbert was tested with. With --data-parallel D (--zero 0: DDP; 3: FSDP2) or
    --tensor-parallel T, starts the ranks itself (one process each, gloo on CPU, eager attention) and
    compares each rank with the per-GPU prediction."""
    if config.max_length is not None and seq_len > config.max_length:  # before torch is imported
        raise ConfigError(f"seq_len={seq_len} exceeds the model's {config.max_length} positions")
    if not layout.single:
        return validate_ranks(config, batch, seq_len, (dtype, device, attention or "eager", precision), layout)
    attention = attention or config.spec.default_attention
    MemoryOptions(attention=attention).for_model(config.spec)
    if device == "cuda":
        _require_cuda()
    from symbert.render import reports
    from symbert.validate.compare import validate as run_validation

    amp = precision == "amp"
    if amp and dtype == "float32":
        raise ConfigError("--precision amp needs --dtype bfloat16 or float16 (the autocast dtype)")
    checks = run_validation(config, batch, seq_len, dtype, device, attention, amp, step_peak=True)
    shown = f"autocast {dtype}" if amp else dtype
    reports.print_checks(config, batch, seq_len, shown, checks, device, attention)
    _print_versions()
    if not all(c.ok for c in checks):
        sys.exit(1)


def validate_ranks(config: Config, batch: int, seq_len: int, setup: tuple[str, ...], layout: Any) -> None:
    """validate's distributed runs: each rank against the per-GPU prediction; exit 1 on a mismatch."""
    if setup != ("float32", "cpu", "eager", "fp32"):
        raise ConfigError(
            "distributed validation runs float32 eager attention on CPU: drop --dtype, --device, "
            "--attention and --precision"
        )
    from symbert.render import reports
    from symbert.validate import distributed

    ranks = distributed.validate_ranks(config, batch, seq_len, layout)
    how = distributed.describe(layout)
    for rank, checks in enumerate(ranks):
        where = f"; rank {rank} of {how}"
        reports.print_checks(config, batch, seq_len, "float32", checks, "cpu", "eager", where)
    if any(c.tolerance for checks in ranks for c in checks):  # FSDP2's peak is shown, not checked
        click.echo(f"peak within {distributed.PEAK_TOLERANCE:.0%}: gloo's own buffers are outside PyTorch's allocator")
    click.echo(distributed.NOTES[distributed.kind(layout)])
    _print_versions()
    if not all(c.ok for checks in ranks for c in checks):
        sys.exit(1)


def _print_versions() -> None:
    """The torch and transformers versions validate measured with, and a warning (on standard error)
    for each outside the tested range."""
    from symbert.versions import measured_with, outside_range

    click.echo(measured_with())
    for line in outside_range():
        click.echo(f"symbert: warning: {line}", err=True)


def _require_cuda() -> None:
    """One line and exit 2 unless PyTorch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        raise ConfigError("validate needs the validate extra: pip install 'symbert[validate]'") from None
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA device: torch.cuda.is_available() is False; use --device cpu")


@cli.command()
@config_options
@click.option("--level", type=click.Choice(("overview", "layer", "ops")), default="layer", show_default=True)
@click.option("--format", "fmt", type=click.Choice(("dot", "svg", "png", "pdf")), help="Default: from -o, else dot.")
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (default: standard output).")
@click.option("--theme", type=click.Choice(("seed", "mono")), default="seed", show_default=True)
@click.option("--params/--no-params", "show_params", default=False, help="Show parameter formulas and values.")
@click.option("--heat", type=click.Choice(("activations", "params", "flops")), help="Colour boxes by their share.")
@memory_options
def diagram(
    config: Config,
    level: str,
    fmt: str | None,
    output: str | None,
    theme: str,
    show_params: bool,
    heat: str | None,
    batch: int,
    length: int,
    options: MemoryOptions,
) -> None:
    """Architecture diagram drawn from the traced graph; Graphviz's dot renders svg, png and pdf."""
    from pathlib import Path

    from symbert.outputs import check_output, write_output
    from symbert.render.diagram import FORMATS, DotFailed, DotNotFound
    from symbert.render.diagram import diagram as draw

    suffix = Path(output).suffix.lstrip(".").lower() if output else ""
    if fmt and suffix in FORMATS and suffix != fmt:
        raise ConfigError(f"--format {fmt} but {output!r} names {suffix}: make them agree")
    fmt = fmt or (suffix if output else "dot")
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the format from {output!r}; give --format ({', '.join(FORMATS)})")
    if output is None and fmt in ("png", "pdf") and sys.stdout.isatty():
        raise ConfigError(f"{fmt} output is binary; give -o FILE or redirect standard output")
    if output is not None:
        check_output(output)
    drawn = draw(config, level, theme=theme, params=show_params, heat=heat, batch=batch, seq_len=length, memory=options)
    try:
        data = drawn.render(fmt)
    except (DotNotFound, DotFailed) as exc:
        raise ConfigError(str(exc)) from None
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    write_output(output, data)


TABLE_FORMATS = ("text", "latex", "markdown", "csv")


def _is_path(spec: str) -> bool:
    """A CONFIG argument that can only be a file: a .json name, or one with a path separator."""
    import os

    return spec.lower().endswith(".json") or "/" in spec or os.sep in spec or (os.altsep or "/") in spec


def _spec_configs(
    spec: str, overrides: tuple[str, ...], task: dict[str, Any], options: dict[str, bool]
) -> list[Config]:
    """One CONFIG argument: a path (see :func:`_is_path`) is a file; else a preset or preset pattern; else,
    when no preset matches, an existing file of that name. A file or folder named like a preset never
    hides the preset: write ./bert-large to mean the file."""
    from fnmatch import fnmatchcase
    from pathlib import Path

    if not spec.strip():
        raise ConfigError("an empty CONFIG: give a preset name or a config.json path")
    if _is_path(spec):
        return [resolve(None, spec, overrides, task, **options)]
    pattern = any(c in spec for c in "*?[")
    names = [n for n in preset_names() if fnmatchcase(n, spec)] if pattern else [n for n in preset_names() if n == spec]
    if not names and Path(spec).is_file():
        return [resolve(None, spec, overrides, task, **options)]
    if not names and pattern:
        raise ConfigError(f"no preset matches {spec!r}; see `symbert presets`")
    return [resolve(name, None, overrides, task, **options) for name in names or [spec]]


def _ordered_sources(presets: tuple[str, ...], files: tuple[str, ...]) -> list[tuple[str, str]]:
    """--preset and --config values in the order they were given on the command line."""
    args = click.get_current_context().meta.get("symbert.args", [])
    flags = [flag for arg in args for flag in ("--preset", "--config") if arg == flag or arg.startswith(flag + "=")]
    if flags.count("--preset") != len(presets) or flags.count("--config") != len(files):
        flags = ["--preset"] * len(presets) + ["--config"] * len(files)
    queues = {"--preset": list(presets), "--config": list(files)}
    return [(flag, queues[flag].pop(0)) for flag in flags]


def _configs(
    specs: tuple[str, ...],
    presets: tuple[str, ...],
    files: tuple[str, ...],
    overrides: tuple[str, ...],
    task: dict[str, Any],
    options: dict[str, bool],
) -> list[Config]:
    """CONFIG arguments, then --preset and --config values in their order; configs read from files that
    would share a label are labelled by the path given."""
    from dataclasses import replace

    found: list[tuple[Config, str | None]] = []
    for spec in specs:
        found.extend((c, spec if c.name != spec else None) for c in _spec_configs(spec, overrides, task, options))
    for flag, value in _ordered_sources(presets, files):
        if flag == "--preset":
            found.append((resolve(value, None, overrides, task, **options), None))
        else:
            found.append((resolve(None, value, overrides, task, **options), value))
    names = [c.name for c, _ in found]
    return [replace(c, name=path) if path and names.count(c.name) > 1 else c for c, path in found]


def config_specs(
    nargs: int, metavar: str = "CONFIG...", template: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """CONFIG arguments and repeatable --preset / --config, with --set and structural flags applied to each,
    resolved into ``configs``.

    ``template`` makes CONFIGs optional and passes ``template``: without CONFIGs bert-base with the same
    flags (the formulas' structure), else None.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.argument("configs", metavar=metavar, nargs=nargs, required=False)
        @click.option("--preset", "presets", metavar="NAME", multiple=True, help="A preset (repeatable).")
        @click.option("--config", "files", metavar="FILE", multiple=True, help="A config.json file (repeatable).")
        @click.option("--set", "overrides", metavar="KEY=VALUE", multiple=True, help="Override a value in each config.")
        @click.option("--no-pooler", is_flag=True, help="Leave out the pooler.")
        @click.option("--no-token-types", is_flag=True, help="Leave out token-type embeddings.")
        @click.option("--no-padding", is_flag=True, help=NO_PADDING_HELP)
        @task_options
        @wraps(fn)
        def wrapper(
            configs: tuple[str, ...],
            presets: tuple[str, ...],
            files: tuple[str, ...],
            overrides: tuple[str, ...],
            no_pooler: bool,
            no_token_types: bool,
            no_padding: bool,
            task: dict[str, Any],
            **kwargs: Any,
        ) -> Any:
            options = structure(no_pooler, no_token_types, no_padding)
            resolved = _configs(configs or (), presets, files, overrides, task, options)
            if template:
                kwargs["template"] = None if resolved else resolve(None, None, overrides, task, **options)
            elif not resolved:
                raise ConfigError("give at least one CONFIG, --preset NAME or --config FILE")
            return fn(configs=resolved, **kwargs)

        return wrapper

    return decorate


def notation_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--notation and --rename, resolved into a ``notation`` argument (bad names: one line, exit 2)."""

    @click.option("--notation", "notation_name", metavar="NAME", default="seed", help="seed (default) or megatron.")
    @click.option("--rename", "renames", metavar="NAME=NEW", multiple=True, help="e.g. seq_len=n or seq_len=n_{ctx}.")
    @wraps(fn)
    def wrapper(notation_name: str, renames: tuple[str, ...], **kwargs: Any) -> Any:
        from symbert.render.latex import notation

        return fn(notation=notation(notation_name, renames), **kwargs)

    return wrapper


def _emit(tables: list[Table], fmt: str, notation: Notation) -> None:
    """Tables to the terminal, or as LaTeX, Markdown or CSV text."""
    from symbert.render import tables as render
    from symbert.render.reports import show

    if fmt == "text":
        for t in tables:
            show(render.to_rich(t))
    else:
        click.echo(render.render(tables, fmt, notation), nl=False)


GENERAL = click.option("--general", is_flag=True, help="Keep the family's conventions out (BERT: E = H, I = 4H).")
FORMAT = click.option("--format", "fmt", type=click.Choice(TABLE_FORMATS), default="text", show_default=True)


@cli.command()
@config_specs(-1, "[CONFIG]...", template=True)
@memory_options
@notation_options
@GENERAL
@click.option("--quantity", "-q", "quantities", type=Quantity(), multiple=True, help="Default: all.")
@click.option("--document", is_flag=True, help="Wrap the equations in a complete LaTeX document.")
@click.option(
    "--width",
    "line_width",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="Break sums before a + or − to fit this many letters a line (60 fits an article page); 0: never.",
)
@click.option("-o", "--output", metavar="FILE", help="Write to FILE (default: standard output).")
def latex(
    configs: list[Config],
    template: Config | None,
    batch: int,
    length: int,
    options: MemoryOptions,
    notation: Notation,
    general: bool,
    quantities: tuple[str, ...],
    document: bool,
    line_width: int,
    output: str | None,
) -> None:
    """LaTeX align blocks for each quantity: total, per layer, per component; valued at each CONFIG given.

    CONFIG is a preset, a preset pattern such as 'bert-L*', or a config.json path; configs of other
    families (or structures, or heads) each get their own formulas, one after another.
    """
    from symbert.analysis.report import report as build_report
    from symbert.outputs import check_output, write_output
    from symbert.render import latex as render

    if output is not None:
        check_output(output)
    reports = [build_report(c, batch, length, options) for c in configs or [template]]
    keys = quantities or QUANTITIES
    out = render.grouped_equations(
        reports, keys, notation, general=general, valued=bool(configs), line_width=line_width or None
    )
    text = render.document(out) if document else out
    if output is None:
        click.echo(text, nl=False)
    else:
        write_output(output, text.encode())


@cli.command()
@config_specs(-1)
@memory_options
@notation_options
@GENERAL
@click.option("--quantity", "-q", type=Quantity(), default="params", show_default=True)
@FORMAT
@click.option("--transpose", is_flag=True, help="A row per CONFIG (and one of formulas), a column per component.")
@click.option("--columns", type=POSITIVE, help="Split into tables of at most this many value columns each.")
def table(
    configs: list[Config],
    batch: int,
    length: int,
    options: MemoryOptions,
    notation: Notation,
    general: bool,
    quantity: str,
    fmt: str,
    transpose: bool,
    columns: int | None,
) -> None:
    """One quantity by component: a formula column and a value column per CONFIG.

    CONFIG is a preset, a preset pattern such as 'bert-L*-H*' (the 24 miniatures), or a config.json path.
    Configs of other families (or structures, or heads) line up by role: embeddings, attention, MLP, norms…
    """
    from symbert.analysis.report import report as build_report
    from symbert.render.tables import column_groups, component_table, transposed

    reports = [build_report(c, batch, length, options) for c in configs]
    found = component_table(reports, quantity, general)
    found = transposed(found) if transpose else found
    _emit(column_groups(found, columns) if columns else [found], fmt, notation)


@cli.command()
@click.argument("quantity", type=Quantity(), required=False)
@config_options
@memory_options
@notation_options
@GENERAL
@FORMAT
def explain(
    quantity: str | None,
    config: Config,
    batch: int,
    length: int,
    options: MemoryOptions,
    notation: Notation,
    general: bool,
    fmt: str,
) -> None:
    """Each term of QUANTITY's formula, traced to the graph nodes that produce it; the parts sum to the formula.

    QUANTITY: params, activation_bytes, flops_forward, flops_backward or non_matmul_forward, or a word
    such as parameters, activations, memory, flops, backward.
    """
    from symbert.analysis.explain import explain as explain_terms
    from symbert.analysis.report import report as build_report
    from symbert.render.tables import explain_table

    if quantity is None:
        raise ConfigError(f"explain needs a QUANTITY: {', '.join(QUANTITIES)} (or parameters, activations, flops…)")

    r = build_report(config, batch, length, options)
    terms = explain_terms(r.breakdowns[quantity], general)
    _emit([explain_table(terms, r, quantity)], fmt, notation)


@cli.command()
@config_specs(-1, "CONFIG CONFIG [CONFIG]...")
@memory_options
@notation_options
@FORMAT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare(
    configs: list[Config], batch: int, length: int, options: MemoryOptions, notation: Notation, fmt: str, as_json: bool
) -> None:
    """Two or more configs of any families (presets, patterns, config.json paths, --preset, --config) side by side.

    Each quantity's value and ratio to the first config, exact and as functions of B and seq_len;
    components by role (embeddings, attention, MLP, norms, pooler, head, loss); dominant terms as
    seq_len → ∞ and H → ∞ (E and I grow with H at each config's own ratio); the crossover seq_len where
    attention scores equal all the rest.
    """
    from symbert.analysis.compare import compare as build_comparison
    from symbert.render.comparison import comparison_json, comparison_tables

    comparison = build_comparison(configs, batch, length, options)
    if as_json:
        _print_json(comparison_json(comparison))
    else:
        _emit(comparison_tables(comparison), fmt, notation)


OPTIMIZER_HELP = (
    "Default: what Hugging Face's Trainer runs, torch's fused AdamW. adam and adamw: the implementation "
    "torch.optim picks on the device (foreach on CUDA, single-tensor on CPU); -fused, -foreach, -single name one."
)
#: The ZeRO conventions (symbert.training.zero.ENGINES), named here so --help needs no import.
ENGINE_NAMES = ("paper", "deepspeed", "torch")


def training_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The memory flags of report plus --optimizer and --precision, resolved into ``training``.

    The GPU planner defaults to the torch-cuda policy.
    """

    @POLICY_OPTION
    @click.option("--dtype", type=click.Choice(DTYPES), help="Activation dtype (default: the policy's; mixed: bf16).")
    @click.option("--attention", type=click.Choice(ATTENTION), help=ATTENTION_HELP)
    @click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True)
    @click.option(
        "--optimizer", type=click.Choice(OPTIMIZERS), default=DEFAULT_OPTIMIZER, show_default=True, help=OPTIMIZER_HELP
    )
    @click.option(
        "--precision",
        type=click.Choice(PRECISION_NAMES),
        default="fp32",
        show_default=True,
        help="mixed: 16-bit weights and gradients with fp32 master weights (Adam: 2 + 2 + 12 bytes per parameter); "
        "amp: torch.autocast to --dtype (default bfloat16) over fp32 weights, gradients and optimizer states.",
    )
    @GPU_OPTION
    @parallel_options
    @click.option(
        "--zero-engine",
        type=click.Choice(ENGINE_NAMES),
        help="Whose ZeRO over d > 1 GPUs: the paper's accounting, DeepSpeed's, or torch's DDP and FSDP2 "
        "(default: paper under megatron, torch otherwise).",
    )
    @wraps(fn)
    def wrapper(
        policy: str,
        dtype: str | None,
        attention: str | None,
        recompute: str,
        optimizer: str,
        precision: str,
        gpu: str | None,
        layout: Any,
        zero_engine: str | None,
        **kwargs: Any,
    ) -> Any:
        memory = MemoryOptions(policy, dtype, attention, recompute, layout=layout)
        training = make_training(optimizer, precision, memory, gpu, zero_engine)
        if "config" in kwargs:  # a command over several configs sets each one's up itself
            training = training.for_model(kwargs["config"].spec)
        return fn(training=training, **kwargs)

    return wrapper


GPU_OPTION = click.option(
    "--gpu",
    metavar="NAME",
    help="A GPU (h100, a100-80gb, t4, ...): its memory as the budget and, under torch-cuda, its cuBLAS workspace.",
)


def make_training(
    optimizer: str, precision: str, memory: MemoryOptions, gpu: str | None, engine: str | None = None
) -> Any:
    """A Training; under torch-cuda with ``--gpu`` and CUBLAS_WORKSPACE_CONFIG from the environment.

    An unknown GPU or an unreadable CUBLAS_WORKSPACE_CONFIG is one line (exit 2).
    """
    import os

    from symbert.gpus import gpu as find_gpu
    from symbert.training.states import Training

    try:
        key = find_gpu(gpu).key if gpu is not None else None
        workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG") if memory.policy == "torch-cuda" else None
        return Training(optimizer, precision, memory, key, workspace, engine)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _budget(text: str | None, training: Any) -> int | None:
    """--gpu-memory, else the memory of --gpu, else None."""
    from symbert.gpus import gpu
    from symbert.training.fit import parse_bytes

    if text is not None:
        return parse_bytes(text)
    return gpu(training.gpu).memory if training.gpu else None


@cli.command()
@config_options
@click.option("--gpu-memory", metavar="SIZE", help="GPU memory: 16GiB, 16GB, 16000MiB or bytes (default: --gpu's).")
@click.option("--batch", "-b", type=POSITIVE, help="Batch size B; leave out to solve for it.")
@click.option("--seq-len", "-s", "length", type=POSITIVE, help="Sequence length; leave out to solve for it.")
@click.option(
    "--gpus",
    type=POSITIVE,
    help="Plan N GPUs: search t, p, d = N/(t·p), ZeRO stage, recompute and micro-batch (--batch: a fixed one).",
)
@click.option("--cuda-context", metavar="SIZE", help="The CUDA context taken from --gpu's memory (default: 781MiB).")
@click.option(
    "--alloc-conf", metavar="SETTINGS", help="PYTORCH_ALLOC_CONF for the allocator (default: the environment's)."
)
@click.option("--closed-form", is_flag=True, help="Answer from the peak's closed form alone (no allocator simulation).")
@training_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fit(
    config: Config,
    gpu_memory: str | None,
    batch: int | None,
    length: int | None,
    gpus: int | None,
    cuda_context: str | None,
    alloc_conf: str | None,
    closed_form: bool,
    training: Any,
    as_json: bool,
) -> None:
    """The largest batch or seq_len whose two training steps run on the GPU, or the memory a shape needs.

    Give --gpu-memory (or --gpu) and one of --batch and --seq-len to solve for the other. Under torch-cuda on
    one GPU the caching allocator is simulated over two training steps: the answer is the largest value that
    runs without an allocation failing under the cap (--gpu-memory, what set_per_process_memory_fraction allows;
    or --gpu's memory less the CUDA context), starting from the closed form's. Otherwise (or with --closed-form),
    and for a given shape, the peak's closed form answers, checked at the answer and one above it.
    """
    from symbert.training.fit import fit as solve
    from symbert.training.fit import fit_json
    from symbert.training.oom import applies

    budget = _budget(gpu_memory, training)
    if gpus is not None:
        _plan(config, training, budget, gpus, batch, length, as_json)
        return
    cap = _cap(gpu_memory, cuda_context, training)
    if cap is not None and (batch is None) != (length is None) and not closed_form and applies(config, training):
        _fit_simulated(config, training, cap, batch, length, _alloc_config(alloc_conf), as_json)
        return
    result = solve(config, training, budget, batch, length)
    if as_json:
        _print_json(fit_json(result))
        return
    _print_fit(config, training, budget, result)


def _cap(gpu_memory: str | None, cuda_context: str | None, training: Any) -> Any:
    """The allocator's cap from --gpu-memory, or --gpu's memory less --cuda-context (or the default context)."""
    from symbert.training.fit import parse_bytes
    from symbert.training.oom import cap_of

    context = parse_bytes(cuda_context) if cuda_context is not None else None
    return cap_of(parse_bytes(gpu_memory) if gpu_memory is not None else None, training.gpu, context)


def _alloc_config(text: str | None) -> Any:
    """--alloc-conf, else PYTORCH_ALLOC_CONF (or PYTORCH_CUDA_ALLOC_CONF) from the environment."""
    import os

    from symbert.training.allocator import AllocatorError, from_environment, parse_config

    try:
        return parse_config(text) if text is not None else from_environment(os.environ)
    except AllocatorError as exc:
        raise ConfigError(str(exc)) from None


def _fit_simulated(
    config: Config, training: Any, cap: Any, batch: int | None, length: int | None, alloc: Any, as_json: bool
) -> None:
    """``fit`` answered by the caching allocator's simulation (:func:`symbert.training.oom.largest`)."""
    from symbert.formula import quantity
    from symbert.render.reports import console, describe
    from symbert.training.oom import largest, largest_json

    result = largest(config, training, cap.bytes, batch, length, alloc)
    if as_json:
        click.echo(json.dumps(largest_json(config, training, cap, result), indent=2))
        return
    out = console()
    out.print(describe(config))
    context = f" = {quantity(cap.card, 'bytes')} less the CUDA context {quantity(cap.context, 'bytes')}"
    source = f" ({cap.source})" if cap.context else " (--gpu-memory)"
    out.print(f"{training.describe()}; cap {quantity(cap.bytes, 'bytes')}{context if cap.context else ''}{source}")
    other = f"seq_len={length}" if batch is None else f"batch={batch}"
    for line in _simulated_lines(result, other):
        out.print(line)


def _simulated_lines(result: Any, other: str) -> list[str]:
    """The simulated answer: the value, its peaks, the failure one above, and the closed form's answer."""
    from symbert.formula import quantity

    def value(run: Any) -> int:
        return run.batch if result.unknown == "batch" else run.length

    lines = []
    if result.value is None:
        lines.append(f"nothing runs at {other}: at {result.unknown} {value(result.above)}, {result.above.failed}")
    else:
        run = result.run
        top = max(run.phases, key=lambda p: p.allocated)
        lines.append(f"largest {result.unknown} that runs at {other}: {result.value} "
                     "(the caching allocator simulated over two training steps)")
        lines.append(f"  allocated peak {quantity(run.allocated, 'bytes')} = {run.allocated:,} bytes ({top.name}), "
                     f"reserved peak {quantity(run.reserved, 'bytes')} = {run.reserved:,} bytes")
    if result.value is not None and result.above is not None:
        lines.append(f"  {result.unknown} {value(result.above)} runs out of memory: {result.above.failed}")
    elif result.value is not None:
        limit = "all the model's positions" if result.capped == "positions" else "the largest size symbert accepts"
        lines.append(f"  {result.unknown} {result.value} is {limit}")
    lines.append(f"  the closed form (allocated peak within the cap) gave {result.closed}; "
                 f"{result.simulations} simulation{'s' if result.simulations != 1 else ''} decided")
    return lines


def _timeline_json(
    config: Config, training: Any, batch: int, length: int, states: Any, sizes: Any, steps: Any, simulated: Any
) -> dict[str, Any]:
    """``timeline --json``'s setup, model states and phases (the peak is added by the caller)."""
    from symbert.formula import text
    from symbert.render.reports import layout_json

    return {
        "config": config.as_dict(),
        "batch": batch,
        "seq_len": length,
        "policy": training.memory.policy,
        "dtype": training.memory.activation_dtype,
        "attention": training.memory.attention,
        "recompute": training.memory.recompute,
        "optimizer": training.optimizer,
        "precision": training.precision,
        "gpu": training.gpu,
        "runtime": training.runtime.describe() if training.runtime else None,
        "layout": layout_json(training.memory.layout),
        "model_states": {k: {"formula": text(v), "bytes": int(v.subs(sizes))} for k, v in states.items()},
        "phases": [
            {"step": p.step, "phase": p.name, "peak": p.peak.total, "where": p.peak.where, "end": p.end,
             **_simulated_json(simulated.get(f"{p.step} {p.name}"))}
            for p in steps
        ],
    }


def _timeline_table(steps: Any, simulated: dict[str, Any]) -> Any:
    """Each phase's peak, where it is, and what it ends at; the simulated allocated and reserved peaks beside."""
    from rich.table import Table

    from symbert.formula import quantity

    table = Table(title="memory over two training steps", title_justify="left")
    extra = ("allocated", "reserved") if simulated else ()
    for col in ("step", "phase", "peak", *extra, "where", "end"):
        table.add_column(col, justify="left" if col in ("step", "phase", "where") else "right")
    for p in steps:
        where = p.peak.where.split(": ", 1)[1]
        sim = simulated.get(f"{p.step} {p.name}")
        cells = (quantity(sim.allocated, "bytes"), quantity(sim.reserved, "bytes")) if sim else ("",) * len(extra)
        table.add_row(str(p.step), p.name, quantity(p.peak.total, "bytes"), *cells, where, quantity(p.end, "bytes"))
    return table


def _simulated_phases(config: Config, training: Any, batch: int, length: int) -> dict[str, Any]:
    """Each phase's peaks from the caching allocator's simulation, by name ("1 forward"), where it applies."""
    from symbert.training.oom import Simulation, applies

    if not applies(config, training):
        return {}
    return {p.name: p for p in Simulation(config, training, length).run(batch).phases}


def _simulated_json(peak: Any) -> dict[str, int]:
    return {} if peak is None else {"allocated": peak.allocated, "reserved": peak.reserved}


def _print_fit(config: Config, training: Any, budget: int | None, result: Any) -> None:
    """The closed form's answer (:func:`symbert.training.fit.fit`), as text."""
    from symbert.formula import human, quantity
    from symbert.render.reports import console, describe
    from symbert.training.fit import step_of

    out = console()
    out.print(describe(config))
    out.print(training.describe() + (f"; GPU memory {quantity(budget, 'bytes')}" if budget else ""))
    peak = result.peak
    parts = ", ".join(f"{name} {quantity(peak.bytes[c], 'bytes')}" for c, name in _categories().items())
    batch, length = result.batch, result.seq_len
    if result.unknown and result.value is None:
        shape = f"batch {result.batch or 1}, seq_len {result.seq_len or 1}"
        out.print(f"nothing fits: at {shape} the peak is {quantity(peak.total, 'bytes')} ({peak.where})")
        out.print(f"  over budget: {result.over_budget()}; {parts}")
    elif result.unknown:
        other = f"seq_len={result.seq_len}" if result.unknown == "batch" else f"batch={result.batch}"
        limit = {"positions": " (all the model's positions)", "size limit": " (the largest size symbert accepts)"}
        limit = limit.get(result.capped, "")
        out.print(f"largest {result.unknown} that fits at {other}: {result.value}{limit}")
        out.print(f"  peak {quantity(peak.total, 'bytes')} = {peak.total:,} bytes at {peak.where}")
        out.print(f"  {parts}")
        if result.above is not None:
            above = result.value + step_of(result.training, result.unknown)
            out.print(f"  {result.unknown} {above} would need {result.above.total:,} bytes")
        out.print(f"  peak formula: {human(result.formula)}")
        _print_headroom(out, result)
    else:
        verdict = "" if budget is None else ("; fits" if result.fits else "; does NOT fit")
        out.print(f"batch {batch}, seq_len {length}: peak {quantity(peak.total, 'bytes')}{verdict} at {peak.where}")
        out.print(f"  {parts}")
        out.print(f"  peak formula: {human(result.formula)}")
        _print_headroom(out, result)
        if not result.fits:
            out.print(f"  over budget: {result.over_budget()}")
    if result.knobs:
        out.print("single changes, lowest peak first:")
        for k in result.knobs:
            verdict = "" if budget is None else ("  fits" if k.peak.total <= budget else "")
            out.print(f"  {k.change:<45} {quantity(k.peak.total, 'bytes'):>12}{verdict}")


def _plan(
    config: Config, training: Any, budget: int | None, gpus: int, batch: int | None, length: int | None, as_json: bool
) -> None:
    """``fit --gpus``: the layouts that fit, best first, and one line per family that does not."""
    from symbert.formula import quantity
    from symbert.render.reports import console, describe
    from symbert.training.planner import family, plan, plan_json

    layout = training.memory.layout
    if layout.gpus > 1 or layout.microbatches > 1 or layout.virtual > 1:
        raise ConfigError("--gpus searches the layouts: leave out the parallel degrees and --microbatches")
    if budget is None:
        raise ConfigError("give --gpu or --gpu-memory: the memory of one GPU")
    if length is None:
        if config.max_length is None:
            raise ConfigError("give --seq-len: the model has no position limit to plan at")
        length = config.max_length
    result = plan(config, training, gpus, budget, length, batch)
    if as_json:
        _print_json(plan_json(result))
        return
    out = console()
    out.print(describe(config))
    out.print(f"{training.describe()}; {gpus} GPUs of {quantity(budget, 'bytes')} each; seq_len {length}")
    engine = training.sharding.engine
    out.print(f"ZeRO as {engine.name}: {engine.summary}; per GPU, on the most loaded GPU (first pipeline stage)")
    shape = f"micro-batch {batch}" if batch else "the largest micro-batch"
    if not result.fits:
        out.print(f"no layout of {gpus} GPUs fits at {shape}")
    else:
        order = "best first (least recompute, fewest communication points, largest micro-batch)"
        out.print(f"{len(result.fits)} layouts fit at {shape}, {order}:")
        columns = ("t", "p", "d", "ZeRO", "recompute", "micro-batch", "peak", "comm")
        out.print("  {:>3} {:>3} {:>3} {:>4}  {:<9} {:>11} {:>11} {:>5}".format(*columns))
        for o in result.fits:
            lay = o.layout
            t = f"{lay.tensor}{'s' if lay.sequence else ''}"
            out.print(
                f"  {t:>3} {lay.pipeline:>3} {lay.data:>3} {lay.zero:>4}  {o.recompute:<9} {o.batch:>11}"
                f" {quantity(o.peak.total, 'bytes'):>11} {o.communication:>5}"
            )
    if result.rejected:
        out.print("do not fit:")
        for r in result.rejected:
            out.print(f"  {family(r.layout)}: {r.reason}")


def _print_headroom(out: Any, result: Any) -> None:
    """Allocated and estimated reserved memory against the budget, and what lies outside it."""
    from symbert.formula import quantity
    from symbert.training.fit import CUDA_CONTEXT_NOTE

    if result.reserved is None:
        return
    line = (
        f"  allocated {quantity(result.peak.total, 'bytes')}, reserved (estimate) {quantity(result.reserved, 'bytes')}"
    )
    if result.budget is not None:
        line += (
            f"; headroom {quantity(result.budget - result.peak.total, 'bytes')} allocated,"
            f" {quantity(result.budget - result.reserved, 'bytes')} reserved (estimate)"
        )
    out.print(line)
    if result.budget is not None and result.reserved > result.budget:
        out.print("  the reserved estimate is over the budget: the allocator may run out of memory at this size")
    out.print(f"  {CUDA_CONTEXT_NOTE}")


def _categories() -> dict[str, str]:
    from symbert.training.states import CATEGORIES

    return CATEGORIES


@cli.command()
@config_options
@click.option("--batch", "-b", type=POSITIVE, default=1, show_default=True, help="Batch size B.")
@click.option("--seq-len", "-s", "length", type=POSITIVE, default=128, show_default=True, help="Sequence length.")
@training_options
@click.option("--gpu-memory", metavar="SIZE", help="A budget to mark and check (default: --gpu's): 16GiB, 16000MiB.")
@click.option("--plot", "plot_file", metavar="FILE", help="Also draw the timeline: .png, .svg or .pdf.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def timeline(
    config: Config,
    batch: int,
    length: int,
    training: Any,
    gpu_memory: str | None,
    plot_file: str | None,
    as_json: bool,
) -> None:
    """Memory over two training steps, phase by phase: model states, each phase's peak, the step's peak.

    Step 1 creates the optimizer states at its update; step 2 starts with them.
    """
    import sympy

    from symbert.api import per_gpu
    from symbert.formula import human, quantity, text
    from symbert.render.reports import console, describe, show
    from symbert.symbols import B, pad512
    from symbert.symbols import seq_len as S
    from symbert.training.step import phases, step_memory

    budget = _budget(gpu_memory, training)
    check_size("batch", batch)
    check_size("seq_len", length)
    if config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")
    if plot_file:
        from symbert.render.plots import check_timeline_plot

        check_timeline_plot(config, plot_file, training.memory.layout)
    graph, sizes = per_gpu(config, training.memory.layout, length)
    values = {**sizes, B: batch, S: length}
    # Three runs of each layer stand for all L (the others added in closed form), so a large L costs
    # nothing; the phases and the peak are those of the full replay (tests/test_robust.py).
    memory = step_memory(graph, training, sizes)
    steps = phases(memory.timeline(values))
    peak = max((p.peak for p in steps), key=lambda p: p.total)
    simulated = _simulated_phases(config, training, batch, length)
    formula = memory.formula(values)
    states = {k: memory.states[k] for k in ("weights", "gradients", "optimizer")}
    if plot_file:
        from symbert.render.plots import plot_timeline

        plot_timeline(config, training, batch, length, plot_file, budget)
    if as_json:
        doc = _timeline_json(config, training, batch, length, states, sizes, steps, simulated)
        components = dict(peak.bytes)
        doc["peak"] = {"bytes": peak.total, "where": peak.where, "components": components, "formula": text(formula)}
        doc |= {"gpu_memory": budget, "fits": None if budget is None else peak.total <= budget}
        _print_json(doc)
        return
    out = console()
    out.print(describe(config))
    out.print(f"batch B={batch}, seq_len={length}; {training.describe()}")
    for k, v in states.items():
        out.print(f"{k:<10} {human(v)}  = {quantity(int(v.subs(sizes)), 'bytes')}")
    show(_timeline_table(steps, simulated), out)
    if simulated:
        out.print("allocated, reserved: the caching allocator simulated over the two steps (max_memory_allocated and "
                  "max_memory_reserved per phase)")
    verdict = "" if budget is None else ("; fits" if peak.total <= budget else f"; over {quantity(budget, 'bytes')}")
    out.print(f"peak {quantity(peak.total, 'bytes')} = {peak.total:,} bytes at {peak.where}{verdict}")
    conventions = ", ".join(f"{k} = {human(v)}" for k, v in config.spec.substitutions.items())
    expr = sympy.expand(formula.subs(config.spec.substitutions))
    rounding = sympy.Add(*(t for t in sympy.Add.make_args(expr) if t.has(pad512)))
    out.print(f"  = {human(expr - rounding)}" + (f"  (with {conventions})" if conventions else ""))
    if rounding != 0:
        here = quantity(int(rounding.subs(values)), "bytes")
        out.print(f"  + the allocator's rounding to 512 bytes ({here} here): {human(rounding)}")


@cli.command()
@config_options
@click.option("--x", "axis", type=click.Choice(("seq_len", "batch")), default="seq_len", show_default=True)
@click.option("--batch", "-b", type=POSITIVE, default=1, show_default=True, help="Batch size when x is seq_len.")
@click.option(
    "--seq-len", "-s", "length", type=POSITIVE, default=128, show_default=True, help="seq_len when x is batch."
)
@click.option("--max", "upto", type=AtLeast(2), help="Largest x (default: every position for seq_len, 64 for batch).")
@training_options
@click.option("--budget", metavar="SIZE", help="Draw the GPU budget: 16GiB, 16GB, 16000MiB or bytes.")
@click.option("-o", "--output", metavar="FILE", required=True, help="The plot: .png, .svg or .pdf.")
def plot(
    config: Config,
    axis: str,
    batch: int,
    length: int,
    upto: int | None,
    training: Any,
    budget: str | None,
    output: str,
) -> None:
    """Peak memory of a training step against seq_len or batch, stacked by category, with the budget."""
    from symbert.render.plots import MAX_PLOT_POINTS, check_plot, plot_memory

    check_plot(output)
    fixed = batch if axis == "seq_len" else length
    if upto is None:
        upto = config.max_length or 512 if axis == "seq_len" else 64
    if fixed < 1 or upto < 2:
        raise ConfigError("the fixed batch or seq_len must be positive and --max at least 2")
    check_size("batch" if axis == "seq_len" else "seq_len", fixed)
    if upto > MAX_PLOT_POINTS:
        raise ConfigError(f"--max {upto} is more points than a plot draws (at most {MAX_PLOT_POINTS:,})")
    if axis == "seq_len" and config.max_length is not None and upto > config.max_length:
        raise ConfigError(f"--max {upto} exceeds the model's {config.max_length} positions")
    if axis == "batch" and config.max_length is not None and length > config.max_length:
        raise ConfigError(f"seq_len={length} exceeds the model's {config.max_length} positions")
    limit = _budget(budget, training)
    click.echo(plot_memory(config, training, axis, fixed, range(1, upto + 1), output, limit))


@cli.command()
@config_specs(-1)
@click.option("--batch", "-b", "batches", default="1:32", show_default=True, help="Values: 8, 1,2,4, 1:64, 1:64:4.")
@click.option("--seq-len", "-s", "lengths", default="128,256,512", show_default=True, help="Values, as for --batch.")
@click.option(
    "--quantity",
    "-q",
    "quantities",
    type=Quantity((*QUANTITIES, *TRAINING_QUANTITIES)),
    multiple=True,
    help="A column to compute (default: all).",
)
@click.option("--policy", "policies", type=click.Choice(POLICY_NAMES), multiple=True, help=POLICY_HELP)
@click.option("--dtype", "dtypes", type=click.Choice(DTYPES), multiple=True, help="Default: the policy's.")
@click.option("--attention", "attentions", type=click.Choice(ATTENTION), multiple=True, help=ATTENTION_HELP)
@click.option("--recompute", "recomputes", type=click.Choice(RECOMPUTE), multiple=True, help="Default: none.")
@click.option("--optimizer", "optimizers", type=click.Choice(OPTIMIZERS), multiple=True, help=OPTIMIZER_HELP)
@click.option("--precision", "precisions", type=click.Choice(PRECISION_NAMES), multiple=True, help="Default: fp32.")
@GPU_OPTION
@parallel_options
@click.option("-o", "--output", metavar="FILE", default="-", show_default=True, help="The CSV file (-: stdout).")
def sweep(
    configs: list[Config],
    batches: str,
    lengths: str,
    quantities: tuple[str, ...],
    policies: tuple[str, ...],
    dtypes: tuple[str, ...],
    attentions: tuple[str, ...],
    recomputes: tuple[str, ...],
    optimizers: tuple[str, ...],
    precisions: tuple[str, ...],
    gpu: str | None,
    layout: Any,
    output: str,
) -> None:
    """Quantities over a grid of CONFIGs × setups × batch × seq_len, as CSV.

    CONFIGs are presets, preset patterns such as 'bert-L*', or config.json paths. Repeating a setup
    flag adds its values to the grid. Quantities: params, activation_bytes, flops_forward,
    flops_backward, non_matmul_forward, weights, gradients, optimizer_states (model states) and peak
    (of a training step). A progress bar shows on long grids when standard error is a terminal.
    """
    import itertools

    from rich.console import Console
    from rich.progress import Progress

    from symbert.outputs import writing
    from symbert.training import sweep as sweeps

    trainings = [
        make_training(o, p, MemoryOptions(policy, d, a, r, layout=layout), gpu)
        for policy, d, a, r, o, p in itertools.product(
            policies or (DEFAULT_POLICY,),
            dtypes or (None,),
            attentions or (None,),
            recomputes or ("none",),
            optimizers or (DEFAULT_OPTIMIZER,),
            precisions or ("fp32",),
        )
    ]
    grid = (configs, trainings, sweeps.parse_values(batches, "batch"), sweeps.parse_values(lengths, "seq_len"))
    columns = quantities or sweeps.QUANTITIES
    sweeps.check_quantities(columns)
    sweeps.check_grid(*grid)
    total = sweeps.grid_size(*grid)
    errors = Console(stderr=True)
    show = errors.is_terminal and total >= sweeps.PROGRESS_FROM
    # A file is written through a temporary one, renamed into place only when the sweep is complete.
    with (
        click.open_file("-", "wb") if output == "-" else writing(output) as out,
        Progress(console=errors, transient=True, disable=not show) as progress,
    ):
        task = progress.add_task("sweep", total=total)
        sweeps.sweep(*grid, columns, out, lambda n: progress.advance(task, n))


@cli.command()
@config_specs(-1, "[CONFIG]...", template=True)
@click.option("--batch", "-b", type=POSITIVE, default=8, show_default=True, help="The page's starting batch size.")
@click.option("--seq-len", "-s", "length", type=POSITIVE, default=128, show_default=True, help="Its starting seq_len.")
@training_options
@click.option("--grid-batch", default="1,8", show_default=True, help="Batch sizes of the precomputed reserved memory.")
@click.option("--grid-seq-len", default="128,512", show_default=True, help="Its sequence lengths, as for --grid-batch.")
@click.option("-o", "--output", metavar="FILE", required=True, help="The HTML page.")
def explore(
    configs: list[Config],
    template: Config | None,
    batch: int,
    length: int,
    training: Any,
    grid_batch: str,
    grid_seq_len: str,
    output: str,
) -> None:
    """One offline HTML page: the diagrams, a calculator over the exact formulas, and the formulas.

    Several configs give a comparison. The calculator starts at this command's setup; reserved memory,
    which needs the allocator's simulation, is precomputed at the grid for that setup only.
    """
    from symbert.outputs import check_output, write_output
    from symbert.render.diagram import DotFailed, DotNotFound
    from symbert.render.explore import page
    from symbert.training.sweep import parse_values

    check_output(output)
    grid = (parse_values(grid_batch, "--grid-batch"), parse_values(grid_seq_len, "--grid-seq-len"))
    try:
        html = page(configs or [template], training, batch, length, grid)
    except (DotNotFound, DotFailed) as exc:
        raise ConfigError(str(exc)) from None
    write_output(output, html.encode())


@cli.command()
@click.argument("patterns", metavar="[PATTERN]...", nargs=-1)
def presets(patterns: tuple[str, ...]) -> None:
    """List preset names (those matching a PATTERN such as 'bert-L*', when given)."""
    from fnmatch import fnmatchcase

    names = [n for n in preset_names() if not patterns or any(fnmatchcase(n, p) for p in patterns)]
    if not names:
        raise ConfigError(f"no preset matches {' '.join(patterns)!r}; see `symbert presets`")
    for name in names:
        click.echo(name)


def main() -> None:
    """Entry point: usage and config errors become one line on stderr and exit status 2; the notation in
    ASCII where the output cannot encode it."""
    from symbert.render.ascii import fallback

    for stream in (sys.stdout, sys.stderr):
        fallback(stream)
    try:
        status = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted")
    except click.UsageError as exc:
        _fail(exc.format_message())
    except click.ClickException as exc:
        _fail(exc.format_message())
    except ConfigError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)
