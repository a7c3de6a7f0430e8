"""The ``symbert`` command: thin wrappers that parse, call the API and print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any

import click

from symbert.analysis.policy import ATTENTION, DTYPES, POLICIES, RECOMPUTE, MemoryOptions
from symbert.configs import Config, ConfigError, preset_names, resolve

if TYPE_CHECKING:
    from symbert.render.latex import Notation
    from symbert.render.tables import Table

EXIT_USAGE = 2
POLICY_NAMES = tuple(POLICIES)


def _fail(message: str) -> None:
    click.echo(f"symbert: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def structure(no_pooler: bool, no_token_types: bool) -> dict[str, bool]:
    """The structural options the --no-pooler and --no-token-types flags switch off."""
    return {key: False for key, off in (("pooler", no_pooler), ("token_types", no_token_types)) if off}


def config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--preset / --config / --set / structural flags, resolved into a ``config`` argument."""

    @click.option("--preset", "preset_name", metavar="NAME", help="A preset such as bert-base (default).")
    @click.option("--config", "config_file", metavar="FILE", help="A Hugging Face config.json.")
    @click.option("--set", "overrides", metavar="KEY=VALUE", multiple=True, help="Override a config value.")
    @click.option("--no-pooler", is_flag=True, help="Leave out the pooler.")
    @click.option("--no-token-types", is_flag=True, help="Leave out token-type embeddings.")
    @wraps(fn)
    def wrapper(
        preset_name: str | None,
        config_file: str | None,
        overrides: tuple[str, ...],
        no_pooler: bool,
        no_token_types: bool,
        **kwargs: Any,
    ) -> Any:
        config = resolve(preset_name, config_file, overrides, **structure(no_pooler, no_token_types))
        return fn(config=config, **kwargs)

    return wrapper


def memory_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--batch / --seq-len and report's memory flags, resolved into ``batch``, ``length`` and ``options``."""

    @click.option("--batch", "-b", type=int, default=1, show_default=True, help="Batch size B.")
    @click.option("--seq-len", "-s", "length", type=int, default=128, show_default=True, help="Sequence length.")
    @click.option("--policy", type=click.Choice(POLICY_NAMES), default="torch-cpu", show_default=True)
    @click.option("--dtype", type=click.Choice(DTYPES), help="Activation dtype (default: the policy's).")
    @click.option("--attention", type=click.Choice(ATTENTION), default="eager", show_default=True)
    @click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True)
    @wraps(fn)
    def wrapper(policy: str, dtype: str | None, attention: str, recompute: str, **kwargs: Any) -> Any:
        return fn(options=MemoryOptions(policy, dtype, attention, recompute), **kwargs)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="symbert")
def cli() -> None:
    """BERT as a symbolic computation graph: exact formulas for parameters, memory and FLOPs."""


@cli.command()
@config_options
@click.option("--by-component", is_flag=True, help="Break the count down by component.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def params(config: Config, by_component: bool, as_json: bool) -> None:
    """Parameter count: the formula, in general and substituted form, and its value."""
    from symbert.render import reports

    breakdown = reports.params_breakdown(config)
    if as_json:
        click.echo(json.dumps(reports.params_json(config, breakdown), indent=2))
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
        click.echo(json.dumps(reports.report_json(r), indent=2))
    else:
        reports.print_report(r)


@cli.command()
@config_options
@click.option("--batch", "-b", type=int, default=2, show_default=True, help="Batch size B.")
@click.option("--seq-len", "-s", type=int, default=16, show_default=True, help="Sequence length.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True)
def validate(config: Config, batch: int, seq_len: int, dtype: str) -> None:
    """Compare predictions with a real Hugging Face model (needs the validate extra); exit 1 on mismatch."""
    from symbert.render import reports
    from symbert.validate.compare import validate as run_validation

    checks = run_validation(config, batch, seq_len, dtype)
    reports.print_checks(config, batch, seq_len, dtype, checks)
    if not all(c.ok for c in checks):
        sys.exit(1)


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

    from symbert.render.diagram import FORMATS, DotNotFound
    from symbert.render.diagram import diagram as draw

    fmt = fmt or (Path(output).suffix.lstrip(".") if output else "dot")
    if fmt not in FORMATS:
        raise ConfigError(f"cannot tell the format from {output!r}; give --format ({', '.join(FORMATS)})")
    if output is None and fmt in ("png", "pdf") and sys.stdout.isatty():
        raise ConfigError(f"{fmt} output is binary; give -o FILE or redirect standard output")
    drawn = draw(config, level, theme=theme, params=show_params, heat=heat, batch=batch, seq_len=length, memory=options)
    try:
        data = drawn.render(fmt)
    except DotNotFound as exc:
        raise ConfigError(str(exc)) from None
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        Path(output).write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None


QUANTITIES = ("params", "activation_bytes", "flops_forward", "flops_backward", "non_matmul_forward")
TABLE_FORMATS = ("text", "latex", "markdown", "csv")


def _configs(specs: tuple[str, ...], overrides: tuple[str, ...], options: dict[str, bool]) -> list[Config]:
    """Configs named by a config.json path (when it exists), a preset, or a preset pattern such as 'bert-L*'."""
    from fnmatch import fnmatchcase
    from pathlib import Path

    configs = []
    for spec in specs:
        if Path(spec).exists():
            configs.append(resolve(None, spec, overrides, **options))
            continue
        names = [n for n in preset_names() if fnmatchcase(n, spec)] if any(c in spec for c in "*?[") else [spec]
        if not names:
            raise ConfigError(f"no preset matches {spec!r}; see `symbert presets`")
        configs.extend(resolve(name, None, overrides, **options) for name in names)
    return configs


def config_specs(
    nargs: int, metavar: str = "CONFIG...", template: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """CONFIG arguments with --set and structural flags applied to each, resolved into ``configs``.

    ``template`` makes CONFIGs optional and passes ``template``: without CONFIGs bert-base with the same
    flags (the formulas' structure), else None.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @click.argument("configs", metavar=metavar, nargs=nargs, required=not template)
        @click.option("--set", "overrides", metavar="KEY=VALUE", multiple=True, help="Override a value in each config.")
        @click.option("--no-pooler", is_flag=True, help="Leave out the pooler.")
        @click.option("--no-token-types", is_flag=True, help="Leave out token-type embeddings.")
        @wraps(fn)
        def wrapper(
            configs: tuple[str, ...], overrides: tuple[str, ...], no_pooler: bool, no_token_types: bool, **kwargs: Any
        ) -> Any:
            options = structure(no_pooler, no_token_types)
            if template:
                kwargs["template"] = None if configs else resolve(None, None, overrides, **options)
            return fn(configs=_configs(configs, overrides, options), **kwargs)

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
    from symbert.render.reports import console

    if fmt == "text":
        for t in tables:
            console().print(render.to_rich(t))
    else:
        click.echo(render.render(tables, fmt, notation), nl=False)


GENERAL = click.option("--general", is_flag=True, help="Keep the family's conventions out (BERT: E = H, I = 4H).")
FORMAT = click.option("--format", "fmt", type=click.Choice(TABLE_FORMATS), default="text", show_default=True)


@cli.command()
@config_specs(-1, "[CONFIG]...", template=True)
@memory_options
@notation_options
@GENERAL
@click.option("--quantity", "-q", "quantities", type=click.Choice(QUANTITIES), multiple=True, help="Default: all.")
@click.option("--document", is_flag=True, help="Wrap the equations in a complete LaTeX document.")
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
) -> None:
    """LaTeX align blocks for each quantity: total, per layer, per component; valued at each CONFIG given.

    CONFIG is a preset, a preset pattern such as 'bert-L*', or a config.json path.
    """
    from symbert.analysis.report import report as build_report
    from symbert.render import latex as render

    render.check_one_structure(configs)
    reports = [build_report(c, batch, length, options) for c in configs or [template]]
    chosen = {key: reports[0].breakdowns[key] for key in dict.fromkeys(quantities or QUANTITIES)}
    at = [(r.config.name, r.values) for r in reports] if configs else []
    out = render.equations(chosen, notation, general=general, at=at, note=options.describe())
    click.echo(render.document(out) if document else out, nl=False)


@cli.command()
@config_specs(-1)
@memory_options
@notation_options
@GENERAL
@click.option("--quantity", "-q", type=click.Choice(QUANTITIES), default="params", show_default=True)
@FORMAT
def table(
    configs: list[Config],
    batch: int,
    length: int,
    options: MemoryOptions,
    notation: Notation,
    general: bool,
    quantity: str,
    fmt: str,
) -> None:
    """One quantity by component: a formula column and a value column per CONFIG.

    CONFIG is a preset, a preset pattern such as 'bert-L*-H*' (the 24 miniatures), or a config.json path.
    """
    from symbert.analysis.report import report as build_report
    from symbert.render.tables import component_table

    reports = [build_report(c, batch, length, options) for c in configs]
    _emit([component_table(reports, quantity, general)], fmt, notation)


@cli.command()
@click.argument("quantity", type=click.Choice(QUANTITIES))
@config_options
@memory_options
@notation_options
@GENERAL
@FORMAT
def explain(
    quantity: str,
    config: Config,
    batch: int,
    length: int,
    options: MemoryOptions,
    notation: Notation,
    general: bool,
    fmt: str,
) -> None:
    """Each term of QUANTITY's formula, traced to the graph nodes that produce it; the parts sum to the formula."""
    from symbert.analysis.explain import explain as explain_terms
    from symbert.analysis.report import report as build_report
    from symbert.render.tables import explain_table

    r = build_report(config, batch, length, options)
    terms = explain_terms(r.breakdowns[quantity], general)
    _emit([explain_table(terms, r, quantity)], fmt, notation)


@cli.command()
@config_specs(2, "X Y")
@memory_options
@notation_options
@FORMAT
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def compare(
    configs: list[Config], batch: int, length: int, options: MemoryOptions, notation: Notation, fmt: str, as_json: bool
) -> None:
    """Two configs X and Y (presets or config.json paths) side by side.

    Each quantity's difference and ratio, exact and as functions of B and seq_len; dominant terms as
    seq_len → ∞ and H → ∞; the crossover seq_len where attention scores equal all the rest.
    """
    from symbert.analysis.compare import compare as build_comparison
    from symbert.render.tables import comparison_json, comparison_tables

    if len(configs) != 2:
        raise ConfigError(f"compare needs exactly two configs, got {len(configs)}")
    comparison = build_comparison(*configs, batch, length, options)
    if as_json:
        click.echo(json.dumps(comparison_json(comparison), indent=2))
    else:
        _emit(comparison_tables(comparison), fmt, notation)


@cli.command()
def presets() -> None:
    """List preset names."""
    for name in preset_names():
        click.echo(name)


def main() -> None:
    """Entry point: usage and config errors become one line on stderr and exit status 2."""
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
