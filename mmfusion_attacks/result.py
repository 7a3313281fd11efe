"""One way to start and to finish an attack run, shared by every toolkit driver and the joint attacks.

:func:`clean_pass` validates a named batch, makes the private working copy, computes (or checks reused)
clean logits and the labels the attack is scored against; :func:`build_result` assembles the
:class:`AdversarialBatch` (unattacked modalities copied from the caller's, success recomputed, an attack
that changed nothing although it should have flagged and warned). A driver or a joint step never needs
to know how another one reports.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InputError, LabelError, NonFiniteOutputError, NoPerturbationWarning
from .metrics import predicted_classes
from .surface import frozen_model_state

__all__ = [
    "AdversarialBatch",
    "CleanLogits",
    "CleanPass",
    "as_class_ids",
    "batch_fingerprint",
    "build_result",
    "clean_forward",
    "clean_pass",
    "scored_clean_pass",
    "success_of",
    "working_copy",
]


@dataclass
class AdversarialBatch:
    """The result of one attack on one batch.

    ``inputs`` is the complete adversarial batch by modality name, in the caller's dtypes and devices
    (frozen modalities are exact copies of the clean ones); ``norms[name]`` holds per-sample ``"linf"``
    and ``"l2"`` perturbation norms in the modality's own units; ``budget[name]`` is the attack's
    budget on that modality in its own units (``(norm, eps)``, None when unbounded); ``success`` is
    per sample (segmentation: the fraction ``score`` of pixels that are wrong, or on target, reaches
    ``success_fraction``). ``flags`` lists anything the caller must know (an attack that changed
    nothing, a modality that does not reach the output, a fallback to one example at a time).
    """

    inputs: dict[str, Any]
    attacked: tuple[str, ...]
    labels: torch.Tensor
    labels_source: str
    targets: torch.Tensor | None
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    score: torch.Tensor
    success: torch.Tensor
    norms: dict[str, dict[str, torch.Tensor]]
    batching: str
    toolkit: str
    attack_name: str
    budget: dict[str, tuple[str, Any] | None] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attack": self.attack_name,
            "toolkit": self.toolkit,
            "attacked": list(self.attacked),
            "batching": self.batching,
            "labels": self.labels_source,
            "success_rate": self.success_rate,
            "flags": list(self.flags),
        }
        for name, norms in self.norms.items():
            for kind, values in norms.items():
                out[f"{name}_{kind}_max"] = float(values.max()) if values.numel() else 0.0
        return out


@dataclass(frozen=True)
class CleanLogits:
    """A model's logits on one batch, with a fingerprint of that batch (so they cannot be reused on another)."""

    logits: torch.Tensor
    fingerprint: tuple


def batch_fingerprint(inputs: Mapping[str, Any]) -> tuple:
    """A cheap content fingerprint of a named batch (clean logits are checked against it before reuse)."""
    out = []
    for name in sorted(inputs):
        value = inputs[name]
        if isinstance(value, torch.Tensor):
            flat = value.detach().reshape(-1).double()
            weights = (torch.arange(flat.numel(), device=flat.device) % 251 + 1).double()
            out.append((name, tuple(value.shape), float(flat.sum()), float((flat * flat).sum()), float((flat * weights).sum())))
        else:
            out.append((name, tuple(value)))
    return tuple(out)


def clean_forward(fusion: Any, inputs: Mapping[str, Any]) -> CleanLogits:
    """The clean logits of ``inputs`` (eval mode, no gradients), to pass to :func:`run_attack` as
    ``clean_logits=`` when several attacks run on one batch."""
    device, dtype = fusion.device, fusion.compute_dtype
    work = working_copy(inputs, device, dtype)
    with frozen_model_state(fusion), torch.no_grad():
        logits = fusion(work)
    return CleanLogits(logits.detach(), batch_fingerprint(work))


def working_copy(inputs: Mapping[str, Any], device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """Private copies on the model's device, floats in its compute dtype (never views of the caller's data)."""
    out: dict[str, Any] = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.detach().to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
        else:
            out[k] = list(v)
    return out


def as_class_ids(value: Any, fusion: Any, logits: torch.Tensor, what: str) -> torch.Tensor:
    """Class ids from torch or numpy, integer ids or one-hot / scores (ART's convention), as int64."""
    if value is None:
        return None  # type: ignore[return-value]
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as err:
            raise LabelError(f"{what} must be a tensor or array of class ids, got {type(value).__name__}") from err
    value = value.detach()
    want_ids = 1 if fusion.task == "classification" else logits.ndim - 1
    if value.ndim == want_ids + 1 and value.shape[1] == logits.shape[1] and value.shape[0] == logits.shape[0]:
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise LabelError(f"{what} (one-hot / scores) contain NaN or infinity")
        value = value.argmax(1)  # one-hot or scores, (N, C[, H, W])
    elif value.is_floating_point():
        raise LabelError(f"{what} must be integer class ids (or one-hot / scores of shape (N, C, ...)), got dtype {value.dtype}")
    fusion.validate_labels(value, logits, what=what)
    return value.to(device=logits.device, dtype=torch.long)


def success_of(task: str, adv_pred, labels, targets, ignore_index, fraction):
    """Per-example score and success: wrong (untargeted) or on target; segmentation: the fraction of valid
    pixels, successful from ``fraction`` on."""
    goal = targets if targets is not None else labels
    hit = adv_pred == goal if targets is not None else adv_pred != goal
    if task == "classification":
        score = hit.float()
    else:
        valid = torch.ones_like(goal, dtype=torch.bool) if ignore_index is None else goal != ignore_index
        counted = valid.flatten(1).sum(1).clamp_min(1)
        score = (hit & valid).flatten(1).sum(1) / counted
    return score, score >= (1.0 if task == "classification" else fraction)




@dataclass
class CleanPass:
    """The clean side of one attack run: the private working copy (model device, compute dtype), the
    clean logits and predictions, and the labels the attack is scored against."""

    work: dict[str, Any]
    logits: torch.Tensor
    clean_pred: torch.Tensor
    labels: torch.Tensor
    labels_source: str

    @property
    def n(self) -> int:
        return int(self.logits.shape[0])


def clean_pass(
    fusion: Any, inputs: Mapping[str, Any], labels: Any = None, *, clean_logits: CleanLogits | None = None, validate: bool = True
) -> CleanPass:
    """Validate ``inputs`` (an :class:`InputError` naming the modality; ``validate=False`` when the caller
    just did), copy them, and score them: the clean logits (reused from :func:`clean_forward` when given
    and computed on this batch), the clean predictions, and ``labels`` as class ids (``None``: the clean
    predictions)."""
    n = fusion.validate_inputs(inputs) if validate else len(next(iter(inputs.values())))
    if n == 0:
        raise InputError(f"the batch is empty (0 rows in {list(inputs)}): nothing to attack")
    work = working_copy(inputs, fusion.device, fusion.compute_dtype)
    if clean_logits is None:
        logits = None
    elif not isinstance(clean_logits, CleanLogits):
        raise TypeError(
            "clean_logits must come from clean_forward(fusion, inputs) (it carries a fingerprint of the "
            f"batch it was computed on), got {type(clean_logits).__name__}"
        )
    elif clean_logits.fingerprint != batch_fingerprint(work):
        raise ValueError("clean_logits were computed on another batch than `inputs`")
    else:
        logits = clean_logits.logits
    return scored_clean_pass(fusion, work, logits, labels)


def scored_clean_pass(fusion: Any, work: dict[str, Any], logits: torch.Tensor | None, labels: Any = None) -> CleanPass:
    """The :class:`CleanPass` of a working copy: its clean logits (computed here when ``None``, in eval mode
    without gradients) checked finite, ``labels`` checked against them and turned into class ids
    (``None``: the clean predictions)."""
    if logits is None:
        with frozen_model_state(fusion), torch.no_grad():
            logits = fusion(work)
    logits = logits.detach().to(fusion.device)
    if not bool(torch.isfinite(logits).all()):
        bad = (~torch.isfinite(logits)).flatten(1).any(1).nonzero().flatten().tolist()
        raise NonFiniteOutputError(f"the model returned NaN or infinite logits on the clean batch (rows {bad[:10]})")
    clean_pred = predicted_classes(logits)
    if labels is None:
        used, source = clean_pred.clone(), "clean-prediction"
    else:
        used, source = as_class_ids(labels, fusion, logits, "labels"), "given"
    return CleanPass(work, logits, clean_pred, used, source)


def build_result(
    fusion: Any,
    clean: CleanPass,
    inputs: Mapping[str, Any],
    adversarial: Mapping[str, Any],
    adv_pred: torch.Tensor,
    *,
    attacked: tuple[str, ...],
    toolkit: str,
    attack_name: str,
    batching: str,
    norms: dict[str, dict[str, torch.Tensor]],
    budget: dict[str, Any],
    targets: torch.Tensor | None = None,
    flags: list[str] | None = None,
    extras: dict[str, Any] | None = None,
    success_fraction: float = 0.5,
    warn: bool = True,
) -> AdversarialBatch:
    """The :class:`AdversarialBatch` of one run: ``adversarial`` holds the final attacked modalities (in the
    caller's dtypes and devices), every other modality is copied from the caller's ``inputs``; success is
    scored from ``adv_pred``; an attack that changed nothing although some rows were not already fooled
    gets a ``no-perturbation`` flag and a :class:`NoPerturbationWarning`."""
    flags = list(flags or [])
    ignore = getattr(fusion, "ignore_index", None)
    score, success = success_of(fusion.task, adv_pred, clean.labels, targets, ignore, success_fraction)
    result_inputs: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in adversarial:
            result_inputs[key] = adversarial[key]
        else:
            result_inputs[key] = value.detach().clone() if isinstance(value, torch.Tensor) else list(value)
    moved = False
    for key in attacked:
        new, old = adversarial[key], inputs[key]
        moved |= bool((new != old).any()) if isinstance(new, torch.Tensor) else any(a != b for a, b in zip(new, old))
    _, clean_success = success_of(fusion.task, clean.clean_pred, clean.labels, targets, ignore, success_fraction)
    if not moved and not bool(clean_success.all()):
        flags.append(f"no-perturbation: {attack_name} returned every row unchanged although the model was not fooled")
        if warn:
            warnings.warn(
                f"{attack_name} changed nothing on {list(attacked)} although {int((~clean_success).sum())} of {clean.n} "
                "row(s) were not already fooled (a targeted attack given no targets, a zero budget, or a modality "
                "that does not reach the output?)",
                NoPerturbationWarning,
                stacklevel=3,
            )
    return AdversarialBatch(
        inputs=result_inputs,
        attacked=tuple(attacked),
        labels=clean.labels,
        labels_source=clean.labels_source,
        targets=targets,
        clean_pred=clean.clean_pred,
        adv_pred=adv_pred,
        score=score,
        success=success,
        norms=norms,
        batching=batching,
        toolkit=toolkit,
        attack_name=attack_name,
        budget=budget,
        flags=flags,
        extras=dict(extras or {}),
    )
