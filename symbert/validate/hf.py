"""Hugging Face models and their inputs, built as symbert's configs describe them, for the measurements in
:mod:`symbert.validate.compare`, :mod:`symbert.validate.peak` and :mod:`symbert.validate.distributed`.

``torch`` and ``transformers`` (the ``validate`` extra) are imported inside the functions, so that this
module imports without them. Models are built with random weights from a fixed seed, in train mode (dropout
active), with eager attention unless told otherwise (``attn_implementation``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sympy

from symbert import symbols
from symbert.api import trace
from symbert.configs import Config, ConfigError
from symbert.ops import OPS

if TYPE_CHECKING:
    import torch

SEED = 0
"""Seed for the random weights and the random token ids."""

MODEL_CLASSES: dict[str, str] = {
    "bert": "BertModel",
    "albert": "AlbertModel",
    "roberta": "RobertaModel",
    "distilbert": "DistilBertModel",
    "electra": "ElectraModel",
    "modernbert": "ModernBertModel",
    "gpt2": "GPT2Model",
    "deberta-v2": "DebertaV2Model",
}
"""Supported ``model_type`` values and the bare ``transformers`` model class built for each."""

DTYPES = ("float32", "bfloat16", "float16")
"""Supported parameter / activation dtypes."""


#: The inputs every encoder takes; the graph's other inputs are a head's labels.
ENCODER_INPUTS = ("input_ids", "token_type_ids", "attention_mask")


def _hf_config(model_type: str, config: Mapping[str, Any] | Any, **changes: Any) -> Any:
    """The ``transformers`` config object for ``model_type``: a copy of ``config`` when it is one already
    (a user's own, every key kept), else built from a config dict, where a default padding id past a
    small vocabulary (ModernBERT's 50283) becomes 0: the embedding table must hold it, and which row it
    is changes no count. ``changes`` are set on it."""
    import copy

    import transformers

    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unsupported model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    if not isinstance(config, Mapping):
        hf_config = copy.deepcopy(config)
        for key, value in changes.items():
            setattr(hf_config, key, value)
        return hf_config
    config = {**config, **changes}
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    if (getattr(hf_config, "pad_token_id", None) or 0) >= hf_config.vocab_size and "pad_token_id" not in config:
        hf_config.pad_token_id = 0
    return hf_config


ATTENTION = ("eager", "sdpa")
"""Hugging Face attention implementations a model can be built with."""


def build_model(
    model_type: str,
    config: Mapping[str, Any] | Any,
    dtype: str,
    pooler: bool = True,
    architecture: str | None = None,
    attention: str = "eager",
) -> torch.nn.Module:
    """Build a Hugging Face model with random weights, in train mode, with ``attention`` (``attn_implementation``).

    ``architecture`` names a ``transformers`` class (``BertForMaskedLM``); by default the bare model of
    ``model_type``. ``config`` holds Hugging Face config keys (e.g. ``BertConfig``'s; unspecified keys
    take the library defaults), or is a ``transformers`` config object, used as it is. The KV cache is
    switched off (``use_cache=False``), as in training. ``pooler`` chooses whether bare models that have
    a pooling layer (``add_pooling_layer``: BERT, ALBERT, RoBERTa) get one; task models decide it
    themselves. Weights are drawn from :data:`SEED`
    without disturbing the global random state.
    """
    import torch
    import transformers

    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {DTYPES}")
    if attention not in ATTENTION:
        raise ValueError(f"unsupported attention {attention!r}; expected one of {ATTENTION}")
    hf_config = _hf_config(model_type, config, use_cache=False)
    model_class = getattr(transformers, architecture or MODEL_CLASSES[model_type])
    extra = {}
    if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters:
        extra["add_pooling_layer"] = pooler
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        model = model_class._from_config(hf_config, attn_implementation=attention, dtype=getattr(torch, dtype), **extra)
    return model.train()


def make_inputs(
    model_type: str,
    config: Mapping[str, Any] | Any,
    batch: int,
    seq_len: int,
    choices: int | None = None,
    labels: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
) -> dict[str, torch.Tensor]:
    """Random token ids of shape ``(batch, seq_len)`` with an all-ones ``attention_mask`` (int64).

    Models with a token-type embedding table (a ``type_vocab_size`` in their config: BERT, ALBERT,
    RoBERTa) also get all-zeros ``token_type_ids`` (int64), so that they all take the same explicit
    path. GPT-2's forward accepts ``token_type_ids`` too, but looks them up in the word embeddings,
    which is not part of the standard model, so it gets none; DistilBERT has no token types.
    ``choices`` makes every input ``(batch, choices, seq_len)`` (a multiple-choice model). ``labels``
    adds all-zeros label tensors by argument name, shape and dtype: zero is a valid class, token, answer
    position and choice for every head.
    """
    import torch

    hf_config = _hf_config(model_type, config)
    generator = torch.Generator().manual_seed(SEED)
    shape = (batch, seq_len) if choices is None else (batch, choices, seq_len)
    inputs = {
        "input_ids": torch.randint(0, hf_config.vocab_size, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.int64),
    }
    if getattr(hf_config, "type_vocab_size", 0):
        inputs["token_type_ids"] = torch.zeros(shape, dtype=torch.int64)
    for name, (label_shape, dtype) in (labels or {}).items():
        inputs[name] = torch.zeros(label_shape, dtype=getattr(torch, dtype))
    return inputs


def pad(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same batch with its last row's last token padded (``attention_mask`` 0 there), so that Hugging
    Face builds the additive attention mask (it drops it when nothing is padded)."""
    mask = inputs["attention_mask"].clone()
    mask.view(-1, mask.shape[-1])[-1, -1] = 0
    return {**inputs, "attention_mask": mask}


def hugging_face(
    config: Config, batch: int, length: int, dtype: str, attention: str = "eager", device: str = "cpu"
) -> tuple[Any, dict[str, Any]]:
    """The Hugging Face model ``config`` describes (its head's class, or the bare model), built with
    ``attention`` (``attn_implementation``), and its inputs, labels included: each label the traced
    graph takes, by name, shape and dtype; one token padded when the graph has padding (:func:`padded`).
    Both are on ``device``."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("validate needs the validate extra: pip install 'symbert[validate]'") from None
    structure = config.structure()
    if not structure.get("token_types", True):
        raise ConfigError(
            f"Hugging Face's {config.model} model always has token-type embeddings; drop --no-token-types"
        )
    hf_config = user_config(config)
    head, graph = config.head, trace(config)
    values = {**config.symbols(), symbols.B: batch, symbols.seq_len: length}
    labels = {}
    for node in graph.nodes:
        name = node.name.rsplit("/", 1)[-1]
        if OPS[node.op].graph_input and name not in ENCODER_INPUTS:
            t = graph.tensor(node.outputs[0])
            labels[name] = (tuple(int(sympy.sympify(d).subs(values)) for d in t.shape), t.dtype)
    model = build_model(
        config.model,
        hf_config,
        dtype,
        pooler=structure.get("pooler", True),
        architecture=head and head.architecture,
        attention=attention,
    )
    choices = config.task.choices if head is not None and len(head.batch) > 1 else None
    inputs = make_inputs(config.model, hf_config, batch, length, choices, labels)
    if padded(config):
        inputs = pad(inputs)
    return model.to(device), {k: v.to(device) for k, v in inputs.items()}


def user_config(config: Config) -> Any:
    """The Hugging Face config the real model is built from. For a config file, the user's own: read by
    ``AutoConfig`` from the file with every key kept (by the family's config class when the file names
    no ``model_type`` but a class symbert knows), then the changes made since (``--set``, labels) set on
    it; never symbert's reading of it, so a key symbert mishandles shows as a mismatch. For a preset, its
    keys (:meth:`~symbert.configs.Config.hugging_face`)."""
    if config.source is None:
        return config.hugging_face()
    import transformers

    source = config.source
    reader = transformers.AutoConfig if "model_type" in source.data else transformers.CONFIG_MAPPING[config.model]
    try:
        hf_config = reader.from_pretrained(source.path)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"Hugging Face cannot read {source.path}: {first}") from None
    for key, value in source.changes.items():
        setattr(hf_config, key, value)
    return hf_config


def padded(config: Config) -> bool:
    """Whether the batch symbert models for ``config`` has padding (option ``padding``, on where a family
    has none). Measurements then pad one token (:func:`pad`), so that Hugging
    Face builds and passes the padding mask too; otherwise every token is real and it passes none (a
    sliding-window mask is built either way)."""
    return bool(config.structure().get("padding", True))
