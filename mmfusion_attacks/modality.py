"""Named modalities: what a sensor's data looks like, its valid range, and its default threat model.

A :class:`Modality` is the single source of truth for checking a batch (shape, range, finiteness)
and for the default budget of an attack on it. Presets (``rgb``, ``ir``, ``depth``, ``image``,
``text``, ``audio``...) live in a registry; users register their own with :func:`register_modality`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import (
    NonFiniteInputError,
    ShapeMismatchError,
    TextInputError,
    UnknownModalityError,
    ValueRangeError,
)

__all__ = [
    "ThreatModel",
    "Modality",
    "register_modality",
    "get_modality",
    "list_modalities",
    "resolve_modality",
    "normalize_norm",
]

ModalityKind = Literal["image", "text", "tensor"]
_KINDS = ("image", "text", "tensor")


def normalize_norm(norm: Any) -> str:
    """Map the many spellings of an Lp norm (``np.inf``, ``"linf"``, ``2``, ``"L2"``) to ``"inf"`` / ``"2"``."""
    text = str(norm).lower().replace("l", "").replace("_", "")
    if text in ("inf", "infinity") or (isinstance(norm, float) and math.isinf(norm)):
        return "inf"
    if text in ("2", "2.0"):
        return "2"
    if text in ("1", "1.0"):
        return "1"
    if text in ("0", "0.0"):
        return "0"
    raise ValueError(f"unknown norm {norm!r}; use 'inf', '2', '1' or '0'")


@dataclass(frozen=True)
class ThreatModel:
    """Default attack budget on one modality: an Lp ball of radius ``eps`` in the modality's own units."""

    norm: str = "inf"
    eps: float = 8 / 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", normalize_norm(self.norm))
        if not (isinstance(self.eps, (int, float)) and self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"threat model eps must be a finite number >= 0, got {self.eps!r}")


@dataclass(frozen=True)
class Modality:
    """One input stream of a fusion model.

    ``kind`` is ``"image"`` (``(N, C, H, W)`` float tensor with ``channels`` channels), ``"tensor"``
    (``(N, *shape)`` float tensor; ``None`` entries in ``shape`` match any size) or ``"text"`` (a list
    of ``N`` non-empty strings). ``valid_range`` is inclusive; ``None`` means unbounded.
    """

    name: str
    kind: ModalityKind = "image"
    channels: int | None = None
    shape: tuple[int | None, ...] | None = None
    valid_range: tuple[float, float] | None = (0.0, 1.0)
    threat: ThreatModel | None = field(default_factory=ThreatModel)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a modality needs a non-empty string name")
        if self.kind not in _KINDS:
            raise ValueError(f"modality '{self.name}': kind must be one of {_KINDS}, got {self.kind!r}")
        if self.valid_range is not None:
            lo, hi = (float(v) for v in self.valid_range)
            if not lo < hi:
                raise ValueError(f"modality '{self.name}': valid_range must be (low, high) with low < high")
            object.__setattr__(self, "valid_range", (lo, hi))
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.kind == "text":
            object.__setattr__(self, "threat", None)

    @property
    def is_tensor(self) -> bool:
        return self.kind != "text"

    def replace(self, **changes: Any) -> Modality:
        """A copy with some fields changed; ``eps=`` / ``norm=`` change the threat model."""
        threat_changes = {k: changes.pop(k) for k in ("eps", "norm") if k in changes}
        if threat_changes:
            base = changes.get("threat", self.threat) or ThreatModel()
            changes["threat"] = dataclasses.replace(base, **threat_changes)
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation
    def batch_size(self, value: Any) -> int:
        """Number of samples in ``value`` (after checking its type)."""
        if self.kind == "text":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ShapeMismatchError(
                    f"modality '{self.name}': text must be a list of strings, got {type(value).__name__}"
                )
            return len(value)
        if not isinstance(value, torch.Tensor):
            raise ShapeMismatchError(
                f"modality '{self.name}': expected a torch.Tensor, got {type(value).__name__}"
            )
        if value.ndim == 0:
            raise ShapeMismatchError(f"modality '{self.name}': expected a batch, got a 0-d tensor")
        return int(value.shape[0])

    def validate(self, value: Any, *, check_range: bool = True, range_tol: float = 0.0) -> int:
        """Check one modality's batch; return its batch size or raise an :class:`InputError`."""
        n = self.batch_size(value)
        if self.kind == "text":
            for i, text in enumerate(value):
                if not isinstance(text, str):
                    raise TextInputError(
                        f"modality '{self.name}': item {i} is {type(text).__name__}, expected str"
                    )
                if not text.strip():
                    raise TextInputError(f"modality '{self.name}': item {i} is empty text")
            return n
        if not value.is_floating_point():
            raise ShapeMismatchError(
                f"modality '{self.name}': expected a floating-point tensor, got dtype {value.dtype}"
            )
        if self.kind == "image":
            if value.ndim != 4:
                raise ShapeMismatchError(
                    f"modality '{self.name}': expected shape (N, C, H, W), got {tuple(value.shape)}"
                )
            if self.channels is not None and value.shape[1] != self.channels:
                raise ShapeMismatchError(
                    f"modality '{self.name}': expected {self.channels} channel(s), got {value.shape[1]} "
                    f"(shape {tuple(value.shape)})"
                )
        if 0 in value.shape[1:]:
            raise ShapeMismatchError(
                f"modality '{self.name}': every sample is empty (shape {tuple(value.shape)}): a model cannot "
                "read it and an attack has nothing to perturb"
            )
        if self.shape is not None:
            sample = tuple(value.shape[1:])
            ok = len(sample) == len(self.shape) and all(
                want is None or want == got for want, got in zip(self.shape, sample)
            )
            if not ok:
                raise ShapeMismatchError(
                    f"modality '{self.name}': expected per-sample shape {self.shape}, got {sample}"
                )
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise NonFiniteInputError(f"modality '{self.name}': {bad} value(s) are NaN or infinite")
        if check_range and self.valid_range is not None and value.numel():
            lo, hi = self.valid_range
            vmin, vmax = float(value.min()), float(value.max())
            if vmin < lo - range_tol or vmax > hi + range_tol:
                raise ValueRangeError(
                    f"modality '{self.name}': values span [{vmin:.6g}, {vmax:.6g}], outside the valid "
                    f"range [{lo:g}, {hi:g}] (rescale the data, or declare the modality's valid_range)"
                )
        return n


_REGISTRY: dict[str, Modality] = {}


def register_modality(modality: Modality, *, overwrite: bool = False) -> Modality:
    """Add a preset so it can be named by string (in code, YAML and the CLI)."""
    if modality.name in _REGISTRY and not overwrite:
        raise ValueError(f"modality '{modality.name}' is already registered (pass overwrite=True)")
    _REGISTRY[modality.name] = modality
    return modality


def get_modality(name: str) -> Modality:
    """The registered preset called ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModalityError(
            f"unknown modality '{name}'; registered presets: {sorted(_REGISTRY)} "
            "(define a Modality(...) or call register_modality)"
        ) from None


def list_modalities() -> list[str]:
    return sorted(_REGISTRY)


def resolve_modality(spec: Modality | str) -> Modality:
    return spec if isinstance(spec, Modality) else get_modality(spec)


for _preset in (
    Modality("rgb", "image", 3, description="colour camera, values in [0, 1]"),
    Modality("ir", "image", 1, description="thermal (long-wave infrared) camera, values in [0, 1]"),
    Modality("thermal", "image", 1, description="alias of 'ir'"),
    Modality("depth", "image", 1, description="depth map normalised to [0, 1]"),
    Modality("image", "image", 3, description="generic RGB image in [0, 1]"),
    Modality("gray", "image", 1, description="single-channel image in [0, 1]"),
    Modality("xray", "image", 1, description="radiograph in [0, 1]"),
    Modality("frontal", "image", 1, description="frontal (PA / AP) chest radiograph in [0, 1]"),
    Modality("lateral", "image", 1, description="lateral chest radiograph in [0, 1]"),
    Modality("text", "text", description="a caption or report: a list of strings"),
    Modality(
        "audio",
        "tensor",
        shape=(None,),
        valid_range=(-1.0, 1.0),
        threat=ThreatModel("inf", 0.002),
        description="mono waveform (N, T) in [-1, 1]",
    ),
    Modality(
        "features",
        "tensor",
        valid_range=None,
        threat=ThreatModel("2", 1.0),
        description="unbounded feature vectors",
    ),
):
    register_modality(_preset)
