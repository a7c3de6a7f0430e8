"""The Python API behind the top-level ``symbert`` names: one function per command, with the command's option
names and defaults (:mod:`symbert.defaults`, which the command line reads too), each returning a result object.

A ``config`` is a preset name (``"bert-base"``), a :class:`~symbert.configs.Config`, or the path of a Hugging Face
config.json. Bad input is a :class:`~symbert.configs.ConfigError` with one line naming the problem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from symbert import defaults
from symbert.analysis.policy import MemoryOptions
from symbert.configs import Config, ConfigError, preset_names, resolve
from symbert.gpus import gpu as find_gpu
from symbert.parallel import Layout
from symbert.training.states import Training

if TYPE_CHECKING:
    from symbert.analysis.breakdown import Breakdown
    from symbert.analysis.compare import Comparison
    from symbert.analysis.explain import Explanation
    from symbert.analysis.report import Report
    from symbert.ir import Graph
    from symbert.training.planner import Plan
    from symbert.training.solve import Answer, Size
    from symbert.training.timeline import Timeline
    from symbert.validate.compare import Check

#: What names a config: a preset name, a Config, or a config.json path.
ConfigLike = str | os.PathLike | Config


def is_path(spec: str) -> bool:
    """A config name that can only be a file: ``-`` (standard input), a .json name, or one with a path separator."""
    return spec == "-" or spec.lower().endswith(".json") or "/" in spec or os.sep in spec or (os.altsep or "/") in spec


def configs_of(spec: ConfigLike, overrides: Sequence[str] = (), task: dict[str, Any] | None = None,
               **options: bool) -> list[Config]:
    """The configs ``spec`` names: a Config; a path (see :func:`is_path`), which is a file; else a preset or a preset
    pattern such as ``bert-L*``; else, when no preset matches, an existing file of that name. A file or folder named
    like a preset never hides the preset: write ./bert-large to mean the file. ``overrides`` (KEY=VALUE), ``task``
    settings and structural ``options`` apply to each."""
    if isinstance(spec, Config):
        return [spec]
    spec = os.fspath(spec)
    if not spec.strip():
        raise ConfigError("an empty CONFIG: give a preset name or a config.json path")
    if is_path(spec):
        return [resolve(None, spec, overrides, task, **options)]
    pattern = any(c in spec for c in "*?[")
    names = [n for n in preset_names() if fnmatchcase(n, spec)] if pattern else [n for n in preset_names() if n == spec]
    if not names and Path(spec).is_file():
        return [resolve(None, spec, overrides, task, **options)]
    if not names and pattern:
        raise ConfigError(f"no preset matches {spec!r}; see `symbert presets`")
    return [resolve(name, None, overrides, task, **options) for name in names or [spec]]


def config_of(spec: ConfigLike) -> Config:
    """The one config ``spec`` names (a pattern that matches several is refused)."""
    found = configs_of(spec)
    if len(found) != 1:
        raise ConfigError(f"{spec!r} names {len(found)} presets; give one")
    return found[0]


def setup(
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    optimizer: str = defaults.OPTIMIZER,
    precision: str = defaults.PRECISION,
    gpu: str | None = None,
    zero_engine: str | None = None,
    layout: Layout | None = None,
    searched: bool = False,
) -> Training:
    """A training setup from the commands' options; under torch-cuda with CUBLAS_WORKSPACE_CONFIG from the
    environment. An unknown name or GPU is a ConfigError, and so is a ZeRO engine on one GPU, where it changes
    nothing, unless ``searched`` (the layouts are searched: ``fit --gpus``)."""
    one = layout is None or (layout.data == 1 and layout.tensor == 1)
    if zero_engine is not None and one and not searched:
        raise ConfigError(
            "--zero-engine changes nothing on one GPU: give --data-parallel (or --tensor-parallel) > 1, or --gpus"
        )
    try:
        memory = MemoryOptions(policy, dtype, attention, recompute, layout=layout or Layout())
        key = find_gpu(gpu).key if gpu is not None else None
        workspace = os.environ.get("CUBLAS_WORKSPACE_CONFIG") if policy == "torch-cuda" else None
        return Training(optimizer, precision, memory, key, workspace, zero_engine)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _memory(config: Config, options: MemoryOptions | None, **setting: Any) -> MemoryOptions:
    """``options`` as given, else the memory options of the setup the keywords name, for ``config``'s family."""
    return (options or setup(**setting).memory).for_model(config.spec)


def params(model: Graph | ConfigLike = defaults.PRESET) -> Breakdown:
    """Trainable parameters of a traced graph or of a config: their formula by component
    (``breakdown.evaluate(breakdown.total, config.symbols())`` is the count)."""
    from symbert.analysis.params import params as count
    from symbert.api import trace
    from symbert.ir import Graph

    return count(model if isinstance(model, Graph) else trace(config_of(model)))


def report(
    config: ConfigLike = defaults.PRESET,
    batch: int = defaults.BATCH,
    seq_len: int = defaults.SEQ_LEN,
    options: MemoryOptions | None = None,
    *,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    precision: str = defaults.PRECISION,
    layout: Layout | None = None,
) -> Report:
    """``symbert report``: parameters, activation memory and FLOPs at one shape, by component. ``options``, when
    given, is the whole memory setup instead of the keywords."""
    from symbert.analysis.report import report as build

    config = config_of(config)
    setting = dict(policy=policy, dtype=dtype, attention=attention, recompute=recompute, precision=precision)
    return build(config, batch, seq_len, _memory(config, options, **setting, layout=layout))


def explain(
    quantity: str | Breakdown,
    config: ConfigLike = defaults.PRESET,
    general: bool = False,
    *,
    batch: int = defaults.BATCH,
    seq_len: int = defaults.SEQ_LEN,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    precision: str = defaults.PRECISION,
    layout: Layout | None = None,
) -> Explanation:
    """``symbert explain``: each term of a quantity's formula (params, activations, flops, …; or a Breakdown
    itself), traced to the graph nodes that produce it. ``general`` keeps the family's conventions out."""
    from symbert.analysis.breakdown import Breakdown
    from symbert.analysis.explain import explain as terms
    from symbert.quantities import canonical

    if isinstance(quantity, Breakdown):
        return terms(quantity, general)
    try:
        key = canonical(quantity)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    setting = dict(policy=policy, dtype=dtype, attention=attention, recompute=recompute, precision=precision)
    r = report(config, batch, seq_len, **setting, layout=layout)
    return terms(r.breakdowns[key], general)


def compare(
    configs: Sequence[ConfigLike],
    batch: int = defaults.BATCH,
    seq_len: int = defaults.SEQ_LEN,
    options: MemoryOptions | None = None,
    *,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    precision: str = defaults.PRECISION,
    layout: Layout | None = None,
) -> Comparison:
    """``symbert compare``: two or more configs, of any families, side by side against the first: each quantity's
    values and ratios, the totals by role, the dominant terms and the crossover seq_len. ``options``, when given,
    is the whole memory setup instead of the keywords."""
    from symbert.analysis.compare import compare as build

    chosen = [config_of(c) for c in configs]
    setting = dict(policy=policy, dtype=dtype, attention=attention, recompute=recompute, precision=precision)
    options = options or setup(**setting, layout=layout).memory
    for config in chosen:  # a setup the family does not run: refused before anything is built
        options.for_model(config.spec)
    return build(chosen, batch, seq_len, options)


def fit(
    config: ConfigLike = defaults.PRESET,
    *,
    seq_len: int | None = None,
    batch: int | None = None,
    gpu_memory: Size | None = None,
    gpu: str | None = None,
    gpus: int | None = None,
    cuda_context: Size | None = None,
    alloc_conf: str | None = None,
    closed_form: bool = False,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    optimizer: str = defaults.OPTIMIZER,
    precision: str = defaults.PRECISION,
    zero_engine: str | None = None,
    layout: Layout | None = None,
) -> Answer:
    """``symbert fit``: the largest batch or seq_len (the one left None) whose two training steps run in
    ``gpu_memory`` bytes (``16GiB`` or a number; default: ``gpu``'s memory), or the peak of a given shape.

    Returns the closed form's :class:`~symbert.training.fit.Fit`; under torch-cuda on one GPU (unless
    ``closed_form``) the caching allocator's :class:`~symbert.training.solve.Simulated` search, or for a shape
    given whole its :class:`~symbert.training.solve.Checked` verdict; with ``gpus``, a
    :class:`~symbert.training.planner.Plan` as :func:`plan` returns."""
    from symbert.training.solve import solve

    config = config_of(config)
    searched = gpus is not None  # the layouts are searched
    training = setup(policy, dtype, attention, recompute, optimizer, precision, gpu, zero_engine, layout, searched)
    training = training.for_model(config.spec)
    return solve(config, training, gpu_memory, batch, seq_len, gpus, cuda_context, alloc_conf, closed_form)


def plan(
    config: ConfigLike,
    gpus: int,
    *,
    gpu: str | None = None,
    gpu_memory: Size | None = None,
    seq_len: int | None = None,
    batch: int | None = None,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    optimizer: str = defaults.OPTIMIZER,
    precision: str = defaults.PRECISION,
    zero_engine: str | None = None,
) -> Plan:
    """``symbert fit --gpus N``: the layouts of ``gpus`` GPUs (tensor, pipeline and data parallel, ZeRO stage,
    recompute, micro-batch) whose step fits one GPU's memory, best first, at ``seq_len`` (default: every position)
    and micro-batch ``batch`` (default: the largest)."""
    setting = dict(policy=policy, dtype=dtype, attention=attention, optimizer=optimizer, precision=precision)
    return fit(config, gpus=gpus, gpu=gpu, gpu_memory=gpu_memory, seq_len=seq_len, batch=batch, **setting,
               zero_engine=zero_engine)


def timeline(
    config: ConfigLike = defaults.PRESET,
    *,
    batch: int = defaults.BATCH,
    seq_len: int = defaults.SEQ_LEN,
    gpu_memory: Size | None = None,
    gpu: str | None = None,
    policy: str = defaults.POLICY,
    dtype: str | None = None,
    attention: str | None = None,
    recompute: str = defaults.RECOMPUTE,
    optimizer: str = defaults.OPTIMIZER,
    precision: str = defaults.PRECISION,
    zero_engine: str | None = None,
    layout: Layout | None = None,
) -> Timeline:
    """``symbert timeline``: memory over two training steps, phase by phase, and the step's peak, checked against
    ``gpu_memory`` (default: ``gpu``'s, if named; where the allocator is simulated, as ``fit`` checks it, under
    ``gpu_memory`` or ``gpu``'s memory less the CUDA context)."""
    from symbert.training.solve import budget_of, cap_for
    from symbert.training.timeline import timeline as build

    config = config_of(config)
    training = setup(policy, dtype, attention, recompute, optimizer, precision, gpu, zero_engine, layout)
    training = training.for_model(config.spec)
    return build(config, training, batch, seq_len, budget_of(gpu_memory, training), cap_for(gpu_memory, training))


def setups(
    policies: Sequence[str] = (),
    dtypes: Sequence[str | None] = (),
    attentions: Sequence[str | None] = (),
    recomputes: Sequence[str] = (),
    optimizers: Sequence[str] = (),
    precisions: Sequence[str] = (),
    gpu: str | None = None,
    layout: Layout | None = None,
) -> list[Training]:
    """sweep's setups: every combination of the values given, each option's default where none is."""
    import itertools

    grid = itertools.product(
        policies or (defaults.POLICY,),
        dtypes or (None,),
        attentions or (None,),
        recomputes or (defaults.RECOMPUTE,),
        optimizers or (defaults.OPTIMIZER,),
        precisions or (defaults.PRECISION,),
    )
    return [setup(policy, d, a, r, o, p, gpu, None, layout) for policy, d, a, r, o, p in grid]


def _values(values: str | int | Sequence[int], name: str) -> list[int]:
    from symbert.training.sweep import parse_values

    if isinstance(values, str):
        return parse_values(values, name)
    return [values] if isinstance(values, int) else list(values)


def _many(values: str | Sequence[str]) -> tuple[str, ...]:
    return (values,) if isinstance(values, str) else tuple(values)


def sweep(
    configs: ConfigLike | Sequence[ConfigLike],
    *,
    batch: str | int | Sequence[int] = defaults.SWEEP_BATCHES,
    seq_len: str | int | Sequence[int] = defaults.SWEEP_SEQ_LENS,
    quantity: str | Sequence[str] = (),
    policy: str | Sequence[str] = (),
    dtype: str | Sequence[str] = (),
    attention: str | Sequence[str] = (),
    recompute: str | Sequence[str] = (),
    optimizer: str | Sequence[str] = (),
    precision: str | Sequence[str] = (),
    gpu: str | None = None,
    layout: Layout | None = None,
) -> str:
    """``symbert sweep``: the quantities over a grid of configs (names, patterns such as ``bert-L*``, paths or
    Configs) × setups × batch × seq_len, as CSV text. Each setup option takes one value or several; values
    (``"1:32"``, ``"1,2,4"``, a number or a list) as the command reads them."""
    import io

    from symbert.quantities import QUANTITIES, TRAINING_QUANTITIES, canonical
    from symbert.training import sweep as sweeps

    specs = [configs] if isinstance(configs, str | os.PathLike | Config) else list(configs)
    found = [c for spec in specs for c in configs_of(spec)]
    try:
        columns = tuple(canonical(q, (*QUANTITIES, *TRAINING_QUANTITIES)) for q in _many(quantity))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    options = (_many(o) for o in (policy, dtype, attention, recompute, optimizer, precision))
    trainings = setups(*options, gpu=gpu, layout=layout)
    out = io.BytesIO()
    sweeps.sweep(found, trainings, _values(batch, "batch"), _values(seq_len, "seq_len"), columns or sweeps.QUANTITIES,
                 out)
    return out.getvalue().decode()


def validate(
    config: ConfigLike = defaults.PRESET,
    *,
    batch: int = defaults.VALIDATE_BATCH,
    seq_len: int = defaults.VALIDATE_SEQ_LEN,
    dtype: str = defaults.VALIDATE_DTYPE,
    device: str = defaults.VALIDATE_DEVICE,
    attention: str | None = None,
    precision: str = defaults.PRECISION,
    layout: Layout | None = None,
) -> list[Check] | list[list[Check]]:
    """``symbert validate``: the predictions against a real Hugging Face model (needs the validate extra); each
    :class:`~symbert.validate.compare.Check` has ``ok``. Over several GPUs (``layout``), one list per rank."""
    config, layout = config_of(config), layout or Layout()
    if config.max_length is not None and seq_len > config.max_length:  # before torch is imported
        raise ConfigError(f"seq_len={seq_len} exceeds the model's {config.max_length} positions")
    if not layout.single:
        return _validate_ranks(config, batch, seq_len, (dtype, device, attention or "eager", precision), layout)
    attention = attention or config.spec.default_attention
    MemoryOptions(attention=attention).for_model(config.spec)
    if device == "cuda":
        _require_cuda()
    from symbert.validate.compare import validate as run

    amp = precision == "amp"
    if amp and dtype == "float32":
        raise ConfigError("--precision amp needs --dtype bfloat16 or float16 (the autocast dtype)")
    return run(config, batch, seq_len, dtype, device, attention, amp, step_peak=True)


def validate_record(config: ConfigLike, batch: int, seq_len: int, dtype: str, device: str, attention: str | None,
                    precision: str, directory: str, layout: Layout | None = None) -> tuple[Path, Any]:
    """``symbert validate --device cuda --record DIR``: the job's real allocation trace recorded on the GPU into
    ``directory`` as a fixture, and its :class:`~symbert.validate.record.Comparison` with symbert's requests."""
    config = config_of(config)
    if device != "cuda":
        raise ConfigError("--record records a CUDA allocation trace: add --device cuda")
    if layout is not None and not layout.single:
        raise ConfigError("--record records one GPU's trace: drop --data-parallel and --tensor-parallel")
    if (precision == "amp") == (dtype == "float32"):
        raise ConfigError("--record runs a float32 model: --dtype float32, or --precision amp with a 16-bit --dtype")
    attention = attention or config.spec.default_attention
    MemoryOptions(attention=attention).for_model(config.spec)
    _require_cuda()
    from symbert.validate.record import Job, record_and_compare

    job = Job(config, batch, seq_len, attention=attention, amp=dtype if precision == "amp" else None)
    return record_and_compare(job, Path(directory))


def _validate_ranks(config: Config, batch: int, seq_len: int, setting: tuple[str, ...], layout: Layout
                    ) -> list[list[Check]]:
    if setting != ("float32", "cpu", "eager", "fp32"):
        raise ConfigError(
            "distributed validation runs float32 eager attention on CPU: drop --dtype, --device, "
            "--attention and --precision"
        )
    from symbert.validate import distributed

    return distributed.validate_ranks(config, batch, seq_len, layout)


def _require_cuda() -> None:
    """A ConfigError unless PyTorch is installed and sees a CUDA device."""
    try:
        import torch
    except ImportError:
        raise ConfigError("validate needs the validate extra: pip install 'symbert[validate]'") from None
    if not torch.cuda.is_available():
        raise ConfigError("no CUDA device: torch.cuda.is_available() is False; use --device cpu")
