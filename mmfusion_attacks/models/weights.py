"""Loading checkpoints into registered models: strict, ``weights_only``, tolerant of common wrappers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_weights"]


def load_weights(net: nn.Module, path: str | Path, where: str) -> nn.Module:
    """Load ``path`` into ``net`` strictly: a plain state_dict, or one wrapped in ``{"state_dict": ...}`` /
    ``{"model": ...}``, with any ``module.`` (DataParallel) prefix removed. ``where`` tells the user
    where such weights come from when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{type(net).__name__} weights not found at {str(path)!r}; {where}")
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise TypeError(f"{path}: expected a state_dict mapping, got {type(obj).__name__}")
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}
    net.load_state_dict(state, strict=True)
    return net
