"""What a model family declares: how to trace it, how its config maps to symbols, how to group it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sympy

from symbert.ir import Node

if TYPE_CHECKING:
    from symbert.models.heads import Head


#: What a component does, the same across families, so that comparisons line up by role: ``norms`` are the
#: layernorms, ``attention`` holds what only attention reads (DeBERTa's relative positions, ModernBERT's
#: rotary tables and masks), ``embeddings`` an E→H projection too.
ROLES = ("embeddings", "attention", "MLP", "norms", "pooler", "head", "loss", "other")


@dataclass(frozen=True)
class Component:
    """A named group of nodes: those named ``scope`` or under it, optionally only some op kinds or one region;
    ``role`` is one of :data:`ROLES`."""

    name: str
    scope: str
    ops: tuple[str, ...] | None = None
    region: str | None = None
    role: str = field(kw_only=True)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"component {self.name!r}: role must be one of {', '.join(ROLES)}, got {self.role!r}")

    def matches(self, node: Node) -> bool:
        return (
            (node.name == self.scope or node.name.startswith(self.scope + "/"))
            and (self.ops is None or node.op in self.ops)
            and (self.region is None or self.region in node.regions)
        )


@dataclass(frozen=True)
class Option:
    """A structural choice passed to the build function: a flag, a probability, an integer or one of
    some names.

    Options read from a Hugging Face config are named by their config key (``hidden_act``). One the
    config's sizes decide has ``decided_by``, a function of its Hugging Face values (ELECTRA projects
    its embeddings only when ``embedding_size`` differs from ``hidden_size``); no flag sets it.
    """

    name: str
    default: bool | float | str | None
    choices: tuple[str, ...] = ()
    from_config: bool = False
    optional: bool = False
    decided_by: Callable[[Mapping[str, int]], bool] | None = None

    def parse(self, value: object) -> bool | float | str | None:
        """Check a value from a config file or ``--set``; raise ValueError naming what is wrong.

        An ``optional`` option (a probability that defaults to another) also takes None (``null``).
        """
        if value is None and self.optional:
            return None
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{self.name} must be true or false, got {value!r}")
        elif isinstance(self.default, float) or self.optional:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ValueError(f"{self.name} must be a probability in [0, 1), got {value!r}")
            value = float(value)
        elif isinstance(self.default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
        elif value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


#: The attention kernels and precisions symbert models; a family states which of them Hugging Face runs.
ATTENTION_KERNELS = ("eager", "sdpa", "flash")
PRECISIONS = ("fp32", "mixed", "amp")
#: Keys of every Hugging Face config that change nothing symbert counts: bookkeeping, initialisation, token
#: ids, numerical epsilons. (``dtype`` is how a checkpoint's weights were saved; the precision a command
#: models is its ``--dtype``.)
INERT = (
    "transformers_version",
    "_name_or_path",
    "model_type",
    "return_dict",
    "dtype",
    "torch_dtype",
    "use_cache",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)
#: Keys every config reads as its task: the head (``architectures``), the labels and the loss.
TASK_KEYS = ("architectures", "id2label", "label2id", "num_labels", "problem_type")
#: Values every family is modelled with; another is refused. A decoder (causal masks, cross-attention),
#: chunked feed-forwards, outputs that keep every layer's hidden states or attention alive, and the
#: gradient checkpointing an older config switches on when the model is built change what a step keeps.
CONSTRAINTS = (
    ("gradient_checkpointing", False),
    ("is_decoder", False),
    ("add_cross_attention", False),
    ("is_encoder_decoder", False),
    ("chunk_size_feed_forward", 0),
    ("output_hidden_states", False),
    ("output_attentions", False),
)


@dataclass(frozen=True)
class ModelSpec:
    """A model family: its tracing function, structural options, config fields and presets.

    ``fields`` maps Hugging Face config keys to the symbols they set and ``divides`` lists pairs of keys
    (a, b) where b must divide a. ``derived`` gives symbols the structure ties to others (BERT's E = H),
    used both to evaluate and to check shapes; ``substitutions`` are the family's conventions shown in
    its substituted formulas (BERT's E = H, I = 4H). ``position_offset`` is how many positions the
    model reserves (RoBERTa: 2), so the longest sequence is ``position_size`` less it. ``read`` rewrites
    a config file's keys that say the same thing another way (ModernBERT's ``layer_types`` list as its
    ``global_attn_every_n_layers``), raising ValueError for what symbert cannot model; ``check`` raises
    ValueError for config values symbert does not model (ModernBERT without a local layer), given the
    sizes and the options together.

    ``tensor_plan`` maps scopes (op paths, run indices left out) to tensor-parallel styles
    (:data:`symbert.tensor_parallel.STYLES`), as ``parallelize_module`` takes a plan; a family without one
    runs on one GPU per pipeline stage only. ``constraints`` are
    Hugging Face config values the family is modelled with (ALBERT's one layer group, DeBERTa's relative
    attention): a config file with another value is refused, and validation builds the model with them.

    ``attention`` are the attention kernels Hugging Face runs the family with, its default first (the
    model class's ``_supports_sdpa``; flash is SDPA's flash kernel), and ``precisions`` the training
    precisions: :meth:`check_runs` is the one rule every command applies.

    Every key of the family's Hugging Face config is of one kind (:meth:`kind`): a size (``fields``), an
    option read from the config, the task (:data:`TASK_KEYS`), a value the family is modelled with
    (``constraints`` and :data:`CONSTRAINTS`), one of ``read_keys`` (which ``read`` rewrites into others
    or checks), or ``inert`` (with :data:`INERT`: it changes nothing symbert counts). ``config_defaults``
    are the values Hugging Face uses where a config file leaves a key out (the config class's default, or
    the model's own fallback where the class has none) when they differ from the default preset's and the
    options' defaults.

    ``build`` returns the model's outputs by name (``last_hidden_state``, ``pooler_output``).
    ``architecture`` is the Hugging Face class of the bare model, ``heads`` the task heads by name
    (:mod:`symbert.models.heads`), and ``prefix`` the attribute a task model keeps the bare model under
    (``bert``), which prefixes its parameter names.
    """

    name: str
    build: Callable[..., None]
    options: tuple[Option, ...]
    param_components: tuple[Component, ...]
    activation_components: tuple[Component, ...]
    fields: Mapping[str, sympy.Symbol] = field(default_factory=dict)
    divides: tuple[tuple[str, str], ...] = ()
    derived: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    substitutions: Mapping[sympy.Symbol, sympy.Expr] = field(default_factory=dict)
    presets: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    default_preset: str = ""
    position_offset: int = 0
    constraints: tuple[tuple[str, object], ...] = ()
    read: Callable[[Mapping[str, object]], Mapping[str, object]] | None = None
    check: Callable[[Mapping[str, object]], None] | None = None
    architecture: str = ""
    heads: Mapping[str, Head] = field(default_factory=dict)
    prefix: str = ""
    tensor_plan: Mapping[str, str] = field(default_factory=dict)
    attention: tuple[str, ...] = ("sdpa", "eager", "flash")
    precisions: tuple[str, ...] = PRECISIONS
    inert: tuple[str, ...] = ()
    read_keys: tuple[str, ...] = ()
    config_defaults: Mapping[str, object] = field(default_factory=dict)

    @property
    def default_attention(self) -> str:
        """The attention kernel Hugging Face builds the family with when none is asked for."""
        return self.attention[0]

    def check_runs(
        self, attention: str | None = None, precision: str | None = None, tensor_parallel: bool = False
    ) -> None:
        """Raise ValueError, one line, unless Hugging Face runs the family with this attention kernel,
        precision and layout (those given)."""
        if attention is not None and attention not in self.attention:
            runs = " or ".join(self.attention)
            raise ValueError(f"Hugging Face runs {self.name} with {runs} attention only, not {attention}")
        if precision is not None and precision not in self.precisions:
            raise ValueError(f"{self.name} trains in {' or '.join(self.precisions)} precision only, not {precision}")
        if tensor_parallel and not self.tensor_plan:
            plan = "declares no tensor-parallel plan (ModelSpec.tensor_plan)"
            raise ValueError(f"{self.name} {plan}: --tensor-parallel 1 only")

    @property
    def defaults(self) -> dict[str, object]:
        return {o.name: o.default for o in self.options}

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    @property
    def all_constraints(self) -> dict[str, object]:
        """Every value the family is modelled with, by key: its own and :data:`CONSTRAINTS`."""
        return {**dict(CONSTRAINTS), **dict(self.constraints)}

    def kind(self, key: str) -> str | None:
        """What symbert does with a config key: "size", "option", "task", "constraint", "read" (``read``
        rewrites or checks it) or "inert"; None for a key the family's Hugging Face model does not read."""
        kinds = (
            ("size", self.fields),
            ("option", [o.name for o in self.options if o.from_config]),
            ("task", TASK_KEYS),
            ("constraint", self.all_constraints),
            ("read", self.read_keys),
            ("inert", (*INERT, *self.inert)),
        )
        return next((kind for kind, keys in kinds if key in keys), None)

    def default(self, key: str) -> object:
        """What Hugging Face uses for ``key`` when a config file leaves it out."""
        if key in self.config_defaults:
            return self.config_defaults[key]
        if key in self.fields:
            return self.presets[self.default_preset][key]
        option = self.option(key)
        return option.default if option is not None else self.all_constraints.get(key)
