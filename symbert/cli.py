"""The ``symbert`` command: thin wrappers that parse, call the API and print."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from symbert import defaults
from symbert.analysis.policy import ATTENTION, DTYPES, POLICIES, RECOMPUTE, MemoryOptions
from symbert.configs import Config, ConfigError, check_size, preset_names, resolve
from symbert.models.heads import HEAD_NAMES, PROBLEM_TYPES
from symbert.public import configs_of, setup, setups
from symbert.quantities import QUANTITIES, TRAINING_QUANTITIES, canonical
from symbert.training.states import OPTIMIZERS

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


class Size(click.ParamType):
    """A memory size as text (16GiB, 16GB, bytes), read later; one in a decimal unit gets a note on standard
    error saying what it means (:func:`symbert.training.fit.decimal_note`)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from symbert.training.fit import decimal_note

        note = decimal_note(str(value))
        if note:
            click.echo(f"symbert: note: {note}", err=True)
        return str(value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SIZE"


SIZE = Size()


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


def one_config(presets: tuple[str, ...], files: tuple[str, ...]) -> tuple[str | None, str | None]:
    """The --preset and --config of a one-config command; either given more than once, a ConfigError (both given
    once: :func:`symbert.configs.resolve` refuses them)."""
    from symbert.configs import safe_name

    given = [("--preset", name) for name in presets] + [("--config", file) for file in files]
    if len(presets) > 1 or len(files) > 1:
        shown = ", ".join(f"{flag} {safe_name(value, 30)}" for flag, value in given)
        raise ConfigError(f"this command reads one config, got {shown}; compare, table, latex and sweep take several")
    return (presets or (None,))[0], (files or (None,))[0]


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--preset / --config / --set / structural flags / task flags, resolved into a ``config`` argument."""

    @click.option("--preset", "preset_names", metavar="NAME", multiple=True, help="A preset (default: bert-base).")
    @click.option("--config", "config_files", metavar="FILE", multiple=True, help="A config.json (-: standard input).")
    @click.option("--set", "overrides", metavar="KEY=VALUE", multiple=True, help="Override a config value.")
    @click.option("--no-pooler", is_flag=True, help="Leave out the pooler.")
    @click.option("--no-token-types", is_flag=True, help="Leave out token-type embeddings.")
    @click.option("--no-padding", is_flag=True, help=NO_PADDING_HELP)
    @task_options
    @wraps(fn)
    def wrapper(
        preset_names: tuple[str, ...],
        config_files: tuple[str, ...],
        overrides: tuple[str, ...],
        no_pooler: bool,
        no_token_types: bool,
        no_padding: bool,
        task: dict[str, Any],
        **kwargs: Any,
    ) -> Any:
        options = structure(no_pooler, no_token_types, no_padding)
        preset_name, config_file = one_config(preset_names, config_files)
        config = resolve(preset_name, config_file, overrides, task, **options)
        return fn(config=config, **kwargs)

    return wrapper


PRECISION_NAMES = ("fp32", "mixed", "amp")


def parallel_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The parallel layout flags, resolved into ``layout`` (:class:`symbert.parallel.Layout`)."""
    from symbert.parallel import STAGES, ZERO_STAGES, Layout

    one = Layout()  # the defaults: one GPU

    @click.option(
        "--tensor-parallel", "tensor", type=POSITIVE, default=one.tensor, show_default=True,
        help="Tensor-parallel degree t.",
    )
    @click.option(
        "--sequence-parallel", "sequence", is_flag=True, help="Shard dropout, layernorm and residuals along seq_len."
    )
    @click.option(
        "--pipeline-parallel", "pipeline", type=POSITIVE, default=one.pipeline, show_default=True,
        help="Pipeline stages p.",
    )
    @click.option(
        "--microbatches", type=POSITIVE, default=one.microbatches, show_default=True, help="Micro-batches per step m."
    )
    @click.option(
        "--virtual-stages",
        "virtual",
        type=POSITIVE,
        default=one.virtual,
        show_default=True,
        help="Interleaved stages per rank v.",
    )
    @click.option(
        "--stage",
        type=click.Choice(STAGES),
        default=one.stage,
        show_default=True,
        help="Pipeline stage whose GPU to show: first (the most loaded) or last (the pooler and head).",
    )
    @click.option(
        "--data-parallel", "data", type=POSITIVE, default=one.data, show_default=True, help="Data-parallel degree d."
    )
    @click.option(
        "--zero",
        type=click.Choice([str(z) for z in ZERO_STAGES]),
        default=str(one.zero),
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
    "--policy", type=click.Choice(POLICY_NAMES), default=defaults.POLICY, show_default=True, help=POLICY_HELP
)
RECOMPUTE_OPTION = click.option(
    "--recompute", type=click.Choice(RECOMPUTE), default=defaults.RECOMPUTE, show_default=True
)
BATCH_OPTION = click.option(
    "--batch", "-b", type=POSITIVE, default=defaults.BATCH, show_default=True, help="Batch size B."
)
SEQ_LEN_OPTION = click.option(
    "--seq-len", "-s", "length", type=POSITIVE, default=defaults.SEQ_LEN, show_default=True, help="Sequence length."
)


def memory_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--batch / --seq-len and report's memory flags, resolved into ``batch``, ``length`` and ``options``."""

    @BATCH_OPTION
    @SEQ_LEN_OPTION
    @POLICY_OPTION
    @click.option("--dtype", type=click.Choice(DTYPES), help="Activation dtype (default: the policy's).")
    @click.option("--attention", type=click.Choice(ATTENTION), help=ATTENTION_HELP)
    @RECOMPUTE_OPTION
    @click.option(
        "--precision",
        type=click.Choice(PRECISION_NAMES),
        default=defaults.PRECISION,
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
        options = setup(policy, dtype, attention, recompute, precision=precision, layout=layout).memory
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
@click.option("--batch", "-b", type=POSITIVE, default=defaults.VALIDATE_BATCH, show_default=True, help="Batch size B.")
@click.option(
    "--seq-len", "-s", type=POSITIVE, default=defaults.VALIDATE_SEQ_LEN, show_default=True, help="Sequence length."
)
@click.option("--dtype", type=click.Choice(DTYPES), default=defaults.VALIDATE_DTYPE, show_default=True)
@click.option(
    "--device",
    type=click.Choice(("cpu", "cuda")),
    default=defaults.VALIDATE_DEVICE,
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
    default=defaults.PRECISION,
    show_default=True,
    help="amp: a float32 model under torch.autocast(device, --dtype), on a batch with one padded token.",
)
@click.option(
    "--record",
    type=click.Path(file_okay=False),
    help="With --device cuda: record the job's real allocation trace into this folder as a fixture and compare "
    "it request by request with symbert's.",
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
    record: str | None,
    layout: Any,
) -> None:
    """Compare predictions with a real Hugging Face model (needs the validate extra); exit 1 on mismatch.

    Prints the torch and transformers versions it measured with, and a warning where they are outside
    the range symbert was tested with. With --data-parallel D (--zero 0: DDP; 3: FSDP2) or
    --tensor-parallel T, starts the ranks itself (one process each, gloo on CPU, eager attention) and
    compares each rank with the per-GPU prediction."""
    from symbert.public import validate as run_validation
    from symbert.render import reports

    if record is not None:
        from symbert.public import validate_record

        path, comparison = validate_record(config, batch, seq_len, dtype, device, attention, precision, record, layout)
        return click.echo("\n".join([f"recorded {path}", *comparison.lines()]))
    checks = run_validation(
        config, batch=batch, seq_len=seq_len, dtype=dtype, device=device, attention=attention, precision=precision,
        layout=layout,
    )
    if not layout.single:
        return _print_ranks(config, batch, seq_len, checks, layout)
    shown = f"autocast {dtype}" if precision == "amp" else dtype
    reports.print_checks(config, batch, seq_len, shown, checks, device, attention or config.spec.default_attention)
    _print_versions()
    if not all(c.ok for c in checks):
        sys.exit(1)


def _print_ranks(config: Config, batch: int, seq_len: int, ranks: Any, layout: Any) -> None:
    """validate's distributed runs: each rank against the per-GPU prediction; exit 1 on a mismatch."""
    from symbert.render import reports
    from symbert.validate import distributed

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

    from symbert.configs import safe_name

    found: list[tuple[Config, str | None]] = []
    for spec in specs:
        found.extend((c, spec if c.name != spec else None) for c in configs_of(spec, overrides, task, **options))
    for flag, value in _ordered_sources(presets, files):
        if flag == "--preset":
            found.append((resolve(value, None, overrides, task, **options), None))
        else:
            found.append((resolve(None, value, overrides, task, **options), value))
    names = [c.name for c, _ in found]
    return [replace(c, name=safe_name(path, None)) if path and names.count(c.name) > 1 else c for c, path in found]


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
    @RECOMPUTE_OPTION
    @click.option(
        "--optimizer", type=click.Choice(OPTIMIZERS), default=defaults.OPTIMIZER, show_default=True, help=OPTIMIZER_HELP
    )
    @click.option(
        "--precision",
        type=click.Choice(PRECISION_NAMES),
        default=defaults.PRECISION,
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
        searched = kwargs.get("gpus") is not None  # fit --gpus: the layouts are searched
        training = setup(policy, dtype, attention, recompute, optimizer, precision, gpu, zero_engine, layout, searched)
        if "config" in kwargs:  # a command over several configs sets each one's up itself
            training = training.for_model(kwargs["config"].spec)
        return fn(training=training, **kwargs)

    return wrapper


GPU_OPTION = click.option(
    "--gpu",
    metavar="NAME",
    help="A GPU (h100, a100-80gb, t4, ...): its memory as the budget and, under torch-cuda, its cuBLAS workspace.",
)


def _budget(text: str | None, training: Any) -> int | None:
    """--gpu-memory, else the memory of --gpu, else None."""
    from symbert.training.solve import budget_of

    return budget_of(text, training)


@cli.command()
@config_options
@click.option("--gpu-memory", type=SIZE, help="GPU memory: 16GiB, 16GB, 16000MiB or bytes (default: --gpu's).")
@click.option("--batch", "-b", type=POSITIVE, help="Batch size B; leave out to solve for it.")
@click.option("--seq-len", "-s", "length", type=POSITIVE, help="Sequence length; leave out to solve for it.")
@click.option(
    "--gpus",
    type=POSITIVE,
    help="Plan N GPUs: search t, p, d = N/(t·p), ZeRO stage, recompute and micro-batch (--batch: a fixed one).",
)
@click.option("--cuda-context", type=SIZE, help="The CUDA context taken from --gpu's memory (default: 781MiB).")
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
    or --gpu's memory less the CUDA context), starting from the closed form's; given both, whether that shape
    runs. Otherwise (or with --closed-form), the peak's closed form answers, checked at the answer and one above.
    """
    from symbert.render.training import answer_json, print_answer
    from symbert.training.solve import Simulated, solve

    answer = solve(config, training, gpu_memory, batch, length, gpus, cuda_context, alloc_conf, closed_form)
    if not as_json:
        print_answer(answer)
    elif isinstance(answer, Simulated):  # the simulation's document carries no versions
        click.echo(json.dumps(answer_json(answer), indent=2))
    else:
        _print_json(answer_json(answer))


@cli.command()
@config_options
@BATCH_OPTION
@SEQ_LEN_OPTION
@training_options
@click.option("--gpu-memory", type=SIZE, help="A budget to mark and check (default: --gpu's): 16GiB, 16000MiB.")
@click.option("--plot", "plot_file", metavar="FILE", help="Also draw the timeline: .png, .svg or .pdf.")
@click.option("--memory-viz", "viz_file", metavar="FILE",
              help="Also write the simulated allocator's snapshot pickle, for pytorch.org/memory_viz.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def timeline(
    config: Config,
    batch: int,
    length: int,
    training: Any,
    gpu_memory: str | None,
    plot_file: str | None,
    viz_file: str | None,
    as_json: bool,
) -> None:
    """Memory over two training steps, phase by phase: model states, each phase's peak, the step's peak.

    Step 1 creates the optimizer states at its update; step 2 starts with them.
    """
    from symbert.render import training as render
    from symbert.render.plots import check_timeline_plot, plot_timeline
    from symbert.training.solve import cap_for
    from symbert.training.timeline import check_shape
    from symbert.training.timeline import timeline as build_timeline

    budget = _budget(gpu_memory, training)
    check_shape(config, batch, length)
    if plot_file:
        check_timeline_plot(config, plot_file, training.memory.layout)
    if viz_file:
        render.check_memory_viz(config, training, viz_file)
    steps = build_timeline(config, training, batch, length, budget, cap_for(gpu_memory, training))
    if viz_file:
        render.write_memory_viz(steps, viz_file)
    if plot_file:
        plot_timeline(config, training, batch, length, plot_file, budget)
    if as_json:
        _print_json(render.timeline_json(steps))
    else:
        render.print_timeline(steps)


@cli.command()
@config_options
@click.option("--x", "axis", type=click.Choice(("seq_len", "batch")), default="seq_len", show_default=True)
@click.option(
    "--batch", "-b", type=POSITIVE, default=defaults.BATCH, show_default=True, help="Batch size when x is seq_len."
)
@click.option(
    "--seq-len", "-s", "length", type=POSITIVE, default=defaults.SEQ_LEN, show_default=True,
    help="seq_len when x is batch.",
)
@click.option("--max", "upto", type=AtLeast(2), help="Largest x (default: every position for seq_len, 64 for batch).")
@training_options
@click.option("--budget", type=SIZE, help="Draw the GPU budget: 16GiB, 16GB, 16000MiB or bytes.")
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
@click.option(
    "--batch", "-b", "batches", default=defaults.SWEEP_BATCHES, show_default=True,
    help="Values: 8, 1,2,4, 1:64, 1:64:4.",
)
@click.option(
    "--seq-len", "-s", "lengths", default=defaults.SWEEP_SEQ_LENS, show_default=True, help="Values, as for --batch."
)
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
    from symbert.outputs import writing
    from symbert.training import sweep as sweeps

    trainings = setups(policies, dtypes, attentions, recomputes, optimizers, precisions, gpu, layout)
    grid = sweeps.grid(configs, trainings, batches, lengths)
    total = sweeps.grid_size(*grid)
    # A file is written through a temporary one, renamed into place only when the sweep is complete.
    with click.open_file("-", "wb") if output == "-" else writing(output) as out, _progress(total) as progress:
        task = progress.add_task("sweep", total=total)
        sweeps.sweep(*grid, quantities or sweeps.QUANTITIES, out, lambda n: progress.advance(task, n))


def _progress(total: int) -> Any:
    """A progress bar on standard error, shown on long sweeps when standard error is a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    from symbert.training.sweep import PROGRESS_FROM

    errors = Console(stderr=True)
    return Progress(console=errors, transient=True, disable=not (errors.is_terminal and total >= PROGRESS_FROM))


@cli.command()
@config_specs(-1, "[CONFIG]...", template=True)
@click.option(
    "--batch", "-b", type=POSITIVE, default=defaults.EXPLORE_BATCH, show_default=True,
    help="The page's starting batch size.",
)
@click.option(
    "--seq-len", "-s", "length", type=POSITIVE, default=defaults.SEQ_LEN, show_default=True,
    help="Its starting seq_len.",
)
@training_options
@click.option(
    "--grid-batch", default=defaults.EXPLORE_GRID_BATCH, show_default=True,
    help="Batch sizes of the precomputed reserved memory.",
)
@click.option(
    "--grid-seq-len", default=defaults.EXPLORE_GRID_SEQ_LEN, show_default=True,
    help="Its sequence lengths, as for --grid-batch.",
)
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
