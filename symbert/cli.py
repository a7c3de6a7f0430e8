"""The ``symbert`` command: thin wrappers that parse, call the API and print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from symbert.analysis.policy import ATTENTION, DTYPES, POLICIES, RECOMPUTE
from symbert.configs import Config, ConfigError, preset_names, resolve

EXIT_USAGE = 2
POLICY_NAMES = tuple(POLICIES)


def _fail(message: str) -> None:
    click.echo(f"symbert: error: {message}", err=True)
    sys.exit(EXIT_USAGE)


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
        options = {}
        if no_pooler:
            options["pooler"] = False
        if no_token_types:
            options["token_types"] = False
        config = resolve(preset_name, config_file, overrides, **options)
        return fn(config=config, **kwargs)

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
@click.option("--batch", "-b", type=int, default=1, show_default=True, help="Batch size B.")
@click.option("--seq-len", "-s", type=int, default=128, show_default=True, help="Sequence length.")
@click.option("--policy", type=click.Choice(POLICY_NAMES), default="torch-cpu", show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), help="Activation dtype (default: the policy's).")
@click.option("--attention", type=click.Choice(ATTENTION), default="eager", show_default=True)
@click.option("--recompute", type=click.Choice(RECOMPUTE), default="none", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON contract documented in the README.")
def report(
    config: Config,
    batch: int,
    seq_len: int,
    policy: str,
    dtype: str | None,
    attention: str,
    recompute: str,
    as_json: bool,
) -> None:
    """Parameters, activation memory and FLOPs of one config at one shape, by component."""
    from symbert.analysis.policy import MemoryOptions
    from symbert.analysis.report import report as build_report
    from symbert.render import reports

    r = build_report(config, batch, seq_len, MemoryOptions(policy, dtype, attention, recompute))
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
