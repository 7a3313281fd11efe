"""Run a stock toolkit attack on a subset of modalities and get the full adversarial batch back.

The runner is toolkit-agnostic: each adapter registers an :class:`AttackDriver` that knows how to
find the attack's surface, call it, read its budget, and whether it keeps rows aligned ("batch")
or must run one sample at a time ("sample"). See ``docs/attacks.md`` for the mode of every attack.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import InvariantViolationError, UnsupportedAttackError
from .metrics import perturbation_norms
from .surface import AttackSurface, frozen_model_state

__all__ = [
    "AdversarialBatch",
    "AttackDriver",
    "Budget",
    "register_driver",
    "find_driver",
    "run_attack",
    "frozen_model_state",
]

Batching = Literal["auto", "batch", "sample"]
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Budget:
    """An attack's Lp budget over the packed tensor: ``eps`` is a float or per-element tensor."""

    norm: str
    eps: float | torch.Tensor


class AttackDriver(ABC):
    """How the runner talks to one toolkit's attack objects."""

    toolkit: str = ""
    #: class names of attacks that only query their whole input batch, in order
    row_aligned: frozenset[str] = frozenset()

    @abstractmethod
    def accepts(self, attack: Any) -> bool: ...

    @abstractmethod
    def surface(self, attack: Any) -> AttackSurface:
        """The surface the attack was built on (raises if it was built on something else)."""

    def batching(self, attack: Any) -> Literal["batch", "sample"]:
        """'batch' if the attack only ever queries its whole input in order, else 'sample'.

        An attack object may declare ``row_aligned = True / False`` itself (e.g. a user's attack)."""
        declared = getattr(attack, "row_aligned", None)
        if declared is None:
            declared = type(attack).__name__ in self.row_aligned
        return "batch" if declared else "sample"

    def chunk_size(self, attack: Any) -> int | None:
        """Largest batch the attack queries at once in 'batch' mode (None: no limit)."""
        return None

    @abstractmethod
    def generate(self, attack: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor: ...

    def budget(self, attack: Any, surface: AttackSurface) -> Budget | None:
        """The attack's eps ball, if it has one (None for minimum-norm / unbounded attacks)."""
        return None

    def targeted(self, attack: Any) -> bool:
        return False


_DRIVERS: list[AttackDriver] = []
_ADAPTERS = ("mmfusion_attacks.adapters.torchattacks", "mmfusion_attacks.adapters.art")


def register_driver(driver: AttackDriver) -> AttackDriver:
    """Teach the runner a new toolkit (adapters call this when imported)."""
    if not any(type(d) is type(driver) for d in _DRIVERS):
        _DRIVERS.append(driver)
    return driver


def find_driver(attack: Any) -> AttackDriver:
    for module in _ADAPTERS:
        try:
            importlib.import_module(module)
        except ImportError:  # that toolkit is not installed
            continue
    for driver in _DRIVERS:
        if driver.accepts(attack):
            return driver
    raise UnsupportedAttackError(
        f"no adapter recognises {type(attack).__module__}.{type(attack).__name__}; supported toolkits: "
        f"{[d.toolkit for d in _DRIVERS]} (build the attack on fusion.surface(...) or an adapter estimator)"
    )


@dataclass
class AdversarialBatch:
    """The result of one attack on one batch.

    ``inputs`` is the complete adversarial batch by modality name (frozen modalities are exact
    copies of the clean ones); ``norms[name]`` holds per-sample ``"linf"`` and ``"l2"`` perturbation
    norms; ``success`` is per sample (segmentation: the fraction ``score`` of pixels that are
    wrong, or on target, reaches ``success_fraction``).
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
        }
        for name, norms in self.norms.items():
            for kind, values in norms.items():
                out[f"{name}_{kind}_max"] = float(values.max()) if values.numel() else 0.0
        return out


def _success(task: str, adv_pred, labels, targets, ignore_index, fraction):
    goal = targets if targets is not None else labels
    hit = adv_pred == goal if targets is not None else adv_pred != goal
    if task == "classification":
        score = hit.float()
    else:
        valid = torch.ones_like(goal, dtype=torch.bool) if ignore_index is None else goal != ignore_index
        counted = valid.flatten(1).sum(1).clamp_min(1)
        score = (hit & valid).flatten(1).sum(1) / counted
    return score, score >= (1.0 if task == "classification" else fraction)


def _check_and_project(x_adv, x, surface: AttackSurface, budget: Budget | None, name: str) -> torch.Tensor:
    """Verify the toolkit kept to the valid range and the eps ball (up to float tolerance), then
    project onto them exactly so the invariants hold bit-for-bit."""
    if not bool(torch.isfinite(x_adv).all()):
        raise InvariantViolationError(f"{name} returned NaN or infinite values for {list(surface.attacked)}")
    bounds = surface.bounds()
    if bounds is not None:
        lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
        excess = torch.maximum(lo - x_adv, x_adv - hi).max()
        if float(excess) > _TOLERANCE:
            raise InvariantViolationError(
                f"{name} left the valid range of {list(surface.attacked)} by {float(excess):.3g}"
            )
        x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    if budget is not None:
        eps = torch.as_tensor(budget.eps, dtype=x.dtype, device=x.device)
        delta = x_adv - x
        if budget.norm == "inf":
            excess = (delta.abs() - eps).max()
            if float(excess) > _TOLERANCE:
                raise InvariantViolationError(
                    f"{name} exceeded its Linf budget on {list(surface.attacked)} by {float(excess):.3g}"
                )
            x_adv = x + torch.maximum(torch.minimum(delta, eps), -eps)
        elif budget.norm == "2":
            radius = float(eps.max())
            norms = delta.flatten(1).norm(dim=1)
            if float(norms.max()) > radius * (1 + 1e-5) + _TOLERANCE:
                raise InvariantViolationError(
                    f"{name} exceeded its L2 budget {radius:g} on {list(surface.attacked)}: {float(norms.max()):.6g}"
                )
        if bounds is not None:
            x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    return x_adv


def run_attack(
    attack: Any,
    inputs: Mapping[str, Any],
    labels: torch.Tensor | None = None,
    *,
    targets: torch.Tensor | None = None,
    batching: Batching = "auto",
    success_fraction: float = 0.5,
    check: bool = True,
    clean_logits: torch.Tensor | None = None,
) -> AdversarialBatch:
    """Run a toolkit attack built on an :class:`AttackSurface` on one named batch.

    Args:
        attack: a torchattacks ``Attack`` built on ``fusion.surface(...)`` or an ART evasion attack
            built on an adapter estimator.
        inputs: ``{modality: tensor}`` for every modality of the model (never modified).
        labels: ground-truth class ids; when ``None`` the clean predictions are used ("pseudo-labels").
        targets: target class ids for a targeted attack.
        batching: ``"auto"`` uses the mode known for this attack; ``"sample"`` forces one sample at
            a time (always correct); ``"batch"`` forces whole-batch calls (alignment still checked).
        success_fraction: segmentation only: fraction of pixels that must be fooled for success.
        check: verify the toolkit's output stayed in range and budget (raises on violation).
        clean_logits: the model's logits on ``inputs`` when the caller already computed them (a grid
            runs many attacks on one batch); saves one forward pass.
    """
    driver = find_driver(attack)
    surface = driver.surface(attack)
    fusion = surface.fusion
    n = fusion.validate_inputs(inputs)
    device = fusion.device
    work = {k: (v.detach().to(device) if isinstance(v, torch.Tensor) else list(v)) for k, v in inputs.items()}
    targeted = driver.targeted(attack)
    if targeted and targets is None:
        raise UnsupportedAttackError(f"{type(attack).__name__} is targeted: pass targets=")
    if batching not in ("auto", "batch", "sample"):
        raise ValueError(f"batching must be 'auto', 'batch' or 'sample', got {batching!r}")
    mode = driver.batching(attack) if batching == "auto" else batching
    name = f"{driver.toolkit}.{type(attack).__name__}"

    with frozen_model_state(surface):  # the surface too: toolkits read its .training flag
        if clean_logits is None:
            with torch.no_grad():
                clean_logits = fusion(work)
        elif clean_logits.shape[0] != n:
            raise ValueError(f"clean_logits has {clean_logits.shape[0]} rows, the inputs have {n}")
        clean_logits = clean_logits.detach().to(device)
        clean_pred = clean_logits.argmax(1)
        if labels is None:
            used, source = clean_pred.clone(), "clean-prediction"
        else:
            fusion.validate_labels(labels, clean_logits)
            used, source = labels.to(device), "given"
        if targets is not None:
            fusion.validate_labels(targets, clean_logits, what="targets")
            targets = targets.to(device)
        goal = targets if targeted else used

        step = 1 if mode == "sample" else max(1, min(n, driver.chunk_size(attack) or n))
        pieces = []
        try:
            for start in range(0, n, step):
                idx = slice(start, start + step)
                chunk = {k: v[idx] for k, v in work.items()}
                x = surface.bind(chunk, validate=False)
                out = driver.generate(attack, x.clone(), goal[idx])
                surface.eval()  # toolkits may restore a mode they read; keep evaluating in eval mode
                out = torch.as_tensor(out).detach().to(device=device, dtype=x.dtype)
                if out.shape != x.shape:
                    raise InvariantViolationError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
                if check:
                    out = _check_and_project(out, x, surface, driver.budget(attack, surface), name)
                pieces.append(out)
        finally:
            surface.unbind()
        x_adv = torch.cat(pieces)
        attacked = surface.unpack(x_adv)
        with torch.no_grad():
            adv_pred = fusion({**work, **attacked}).argmax(1)

    score, success = _success(fusion.task, adv_pred, used, targets if targeted else None, fusion.ignore_index, success_fraction)
    result_inputs: dict[str, Any] = {}
    norms: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in inputs.items():
        if key in attacked:
            adv = attacked[key].detach().to(value.device).contiguous()
            norms[key] = perturbation_norms(value.detach(), adv)
            result_inputs[key] = adv
        else:
            result_inputs[key] = value.detach().clone() if isinstance(value, torch.Tensor) else list(value)
    return AdversarialBatch(
        inputs=result_inputs,
        attacked=surface.attacked,
        labels=used,
        labels_source=source,
        targets=targets if targeted else None,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        score=score,
        success=success,
        norms=norms,
        batching=mode,
        toolkit=driver.toolkit,
        attack_name=name,
    )
