"""Model families symbert can trace, by Hugging Face ``model_type``; :func:`register` adds your own."""

from __future__ import annotations

from symbert.models import albert, bert, deberta, distilbert, electra, modernbert
from symbert.models.spec import ROLES, Component, ModelSpec, Option

MODELS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Make a model family available to every command and API function, under ``spec.name``."""
    MODELS[spec.name] = spec
    return spec


for _spec in (bert.SPEC, bert.ROBERTA, albert.SPEC, distilbert.SPEC, deberta.SPEC, electra.SPEC, modernbert.SPEC):
    register(_spec)

__all__ = ["MODELS", "ROLES", "Component", "ModelSpec", "Option", "register"]
