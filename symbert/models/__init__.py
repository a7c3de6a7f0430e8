"""Model families symbert can trace, by Hugging Face ``model_type``."""

from __future__ import annotations

from symbert.models import bert
from symbert.models.spec import Component, ModelSpec

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (bert.SPEC,)}

__all__ = ["MODELS", "Component", "ModelSpec"]
