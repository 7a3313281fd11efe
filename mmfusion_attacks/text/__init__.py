"""Text-side support: offline nltk / TextAttack resources and seeded text perturbations.

``import mmfusion_attacks.text`` is light: the resources API is imported eagerly (no TextAttack);
the augmenters (which import TextAttack, ~10 s) and the recipe registry load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .resources import (
    GET_RESOURCES_HINT,
    TextResource,
    TextResources,
    default_data_dir,
    import_textattack,
    prepare_text_resources,
    require_stopwords,
    require_wordnet,
    textattack_cache_dir,
)

_LAZY = {
    "SynonymSubstitution": "augment",
    "WordDeletion": "augment",
    "SeededAugmenter": "augment",
    "AugmentedText": "augment",
    "build_text_attack": "recipes",
    "list_text_attacks": "recipes",
    "register_text_attack": "recipes",
    "register_resource": "recipes",
    "check_text_attack_resources": "recipes",
    "ResourceNeed": "recipes",
    "TextAttackEntry": "recipes",
}

__all__ = [
    "GET_RESOURCES_HINT",
    "TextResource",
    "TextResources",
    "default_data_dir",
    "import_textattack",
    "prepare_text_resources",
    "require_stopwords",
    "require_wordnet",
    "textattack_cache_dir",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
