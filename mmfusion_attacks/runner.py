"""Run a stock toolkit attack on a subset of modalities and get the full adversarial batch back.

The runner is toolkit-agnostic: each adapter registers an :class:`AttackDriver` that knows how to
find the attack's surface, call it, read its budget, and whether it keeps rows aligned ("batch")
or must run one sample at a time ("sample"). See ``docs/attacks.md`` for the mode of every attack.
"""

from __future__ import annotations

import importlib
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .errors import (
    InputError,
    InvariantViolationError,
    NonFiniteOutputError,
    RowAlignmentError,
    UnsupportedAttackError,
)
from .metrics import perturbation_norms, predicted_classes
from .result import (
    AdversarialBatch,
    CleanLogits,
    as_class_ids,
    batch_fingerprint,
    build_result,
    clean_forward,
    clean_pass,
    scored_clean_pass,
    success_of,
    working_copy,
)
from .surface import AttackSurface, frozen_model_state

__all__ = [
    "AdversarialBatch",
    "AttackDriver",
    "CleanLogits",
    "clean_forward",
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
    """An attack's Lp budget over the packed tensor (toolkit units): ``eps`` is a float or per-element tensor."""

    norm: str
    eps: float | torch.Tensor


class AttackDriver(ABC):
    """How the runner talks to one toolkit's attack objects."""

    toolkit: str = ""
    #: class names of attacks that only query their whole input batch, in order
    row_aligned: frozenset[str] = frozenset()
    #: class names of bounded attacks that re-batch or take subsets but only ever query within their
    #: eps ball: they run batched, each row paired with its example by content ("content" mode)
    within_budget: frozenset[str] = frozenset()
    #: class names of universal attacks (one perturbation for the whole set)
    universal: frozenset[str] = frozenset()

    @abstractmethod
    def accepts(self, attack: Any) -> bool: ...

    @abstractmethod
    def surface(self, attack: Any) -> AttackSurface:
        """The surface the attack was built on (raises if it was built on something else)."""

    def batching(self, attack: Any) -> str:
        """How rows reach the toolkit: ``"batch"`` (the attack only queries its whole input, in order),
        ``"content"`` (batched, rows paired by content within the budget), ``"universal"`` (one
        perturbation for the whole set) or ``"sample"`` (one example at a time: always correct).

        An attack object may declare ``row_aligned = True / False`` itself (e.g. a user's attack)."""
        declared = getattr(attack, "row_aligned", None)
        name = type(attack).__name__
        if declared is None:
            declared = name in self.row_aligned
        if declared:
            return "batch"
        if name in self.universal:
            return "universal"
        if name in self.within_budget:
            return "content"
        return "sample"

    def chunk_size(self, attack: Any) -> int | None:
        """Largest batch the attack queries at once in batched modes (None: no limit)."""
        return None

    def preflight(self, attack: Any, surface: AttackSurface, budget: Budget | None) -> None:
        """Refuse, before any work, a configuration the toolkit cannot run correctly."""
        return None

    @abstractmethod
    def generate(self, attack: Any, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor: ...

    def generate_universal(self, attack: Any, surface: AttackSurface, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise UnsupportedAttackError(f"{self.toolkit} has no universal attacks")

    def budget(self, attack: Any, surface: AttackSurface) -> Budget | None:
        """The attack's eps ball in toolkit units, if it has one (None for minimum-norm / unbounded attacks)."""
        return None

    def targeted(self, attack: Any) -> bool:
        return False

    def auto_targets(self, attack: Any, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Targets the attack picks by itself (random, least likely...), computed on the bound batch so
        they can be reported; the runner then passes them explicitly."""
        return None

    def honours_bounds(self, attack: Any, surface: AttackSurface) -> bool:
        """Whether the toolkit keeps to the surface's bounds itself (else the runner projects, silently)."""
        return True

    def extras(self, attack: Any) -> dict[str, Any]:
        """Toolkit-specific facts about the last run worth keeping in the result."""
        return {}


_DRIVERS: list[AttackDriver] = []
_ADAPTERS = ("mmfusion_attacks.adapters.torchattacks", "mmfusion_attacks.adapters.art")


def register_driver(driver: AttackDriver) -> AttackDriver:
    """Teach the runner a new toolkit (adapters call this when imported)."""
    if not any(type(d) is type(driver) for d in _DRIVERS):
        _DRIVERS.append(driver)
    return driver


#: adapters imported only for attacks whose class comes from that toolkit (textattack imports in ~13 s)
_LAZY_ADAPTERS = {"textattack": "mmfusion_attacks.adapters.textattack"}


def find_driver(attack: Any) -> AttackDriver:
    modules = list(_ADAPTERS)
    roots = {c.__module__.split(".")[0] for c in type(attack).__mro__}
    modules += [m for root, m in _LAZY_ADAPTERS.items() if root in roots]
    for module in modules:
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


# results: one place builds them (see result.py); the private names stay for older imports
_fingerprint = batch_fingerprint
_working_copy = working_copy
_as_class_ids = as_class_ids
_success = success_of


#: per model: the per-example logit shape seen for each set of per-example input shapes (lets a later run
#: check its labels before the clean forward, which the attack's own first query can then supply)
_LOGIT_SHAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _shapes_key(inputs: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v.shape[1:]) if isinstance(v, torch.Tensor) else None) for k, v in inputs.items()))


def _check_budget(budget: Budget | None, name: str) -> None:
    if budget is None:
        return
    eps = torch.as_tensor(budget.eps, dtype=torch.float64)
    if not bool(torch.isfinite(eps).all()) or bool((eps < 0).any()):
        raise UnsupportedAttackError(f"{name}: eps must be finite and >= 0, got {budget.eps!r}")


def _check_and_project(x_adv, x, surface: AttackSurface, budget: Budget | None, name: str, strict_bounds: bool) -> torch.Tensor:
    """Verify the toolkit kept to the valid range and the eps ball (up to float tolerance), then
    project onto them exactly so the invariants hold bit-for-bit (toolkit units)."""
    if not bool(torch.isfinite(x_adv).all()):
        raise InvariantViolationError(f"{name} returned NaN or infinite values for {list(surface.attacked)}")
    # float rounding of the toolkit's own arithmetic grows with the values' magnitude (ranges like [0, 255])
    tol = _TOLERANCE + 4 * torch.finfo(x.dtype).eps * max(1.0, float(x.abs().max()) if x.numel() else 1.0)
    bounds = surface.bounds()
    if bounds is not None:
        lo, hi = (torch.as_tensor(b, dtype=x.dtype, device=x.device) for b in bounds)
        excess = torch.maximum(lo - x_adv, x_adv - hi).max()
        if strict_bounds and float(excess) > tol:
            raise InvariantViolationError(
                f"{name} left the valid range of {list(surface.attacked)} by {float(excess):.3g}"
            )
        x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    if budget is not None:
        eps = torch.as_tensor(budget.eps, dtype=x.dtype, device=x.device)
        delta = x_adv - x
        if budget.norm == "inf":
            excess = (delta.abs() - eps).max()
            if float(excess) > tol:
                raise InvariantViolationError(
                    f"{name} exceeded its Linf budget on {list(surface.attacked)} by {float(excess):.3g}"
                )
            x_adv = x + torch.maximum(torch.minimum(delta, eps), -eps)
        elif budget.norm in ("2", "1"):
            radius = float(eps.max())
            norms = delta.flatten(1).norm(p=int(budget.norm), dim=1)
            slack = tol * (1 if budget.norm == "2" else delta[0].numel())  # L1 adds every element's rounding
            if float(norms.max()) > radius * (1 + 1e-5) + slack:
                raise InvariantViolationError(
                    f"{name} exceeded its L{budget.norm} budget {radius:g} on {list(surface.attacked)}: {float(norms.max()):.6g}"
                )
        else:
            raise UnsupportedAttackError(f"{name}: an L{budget.norm} budget cannot be checked; supported: Linf, L2, L1")
        if bounds is not None:
            x_adv = torch.maximum(torch.minimum(x_adv, hi), lo)
    x_adv = torch.where(x_adv == x, x, x_adv)  # keeps -0.0 / +0.0 of untouched elements
    return x_adv


def _native_result(
    adv: torch.Tensor, clean_work: torch.Tensor, clean_caller: torch.Tensor, modality: Any, budget: tuple[str, Any] | None
) -> torch.Tensor:
    """The adversarial modality in the caller's dtype and device: untouched elements bit-identical to
    the caller's, the valid range and the Linf / L2 budget kept exactly (every rounding goes toward
    the clean value, so no element moves further than the attack moved it); an L1 budget likewise."""
    adv = torch.where(adv == clean_work, clean_work, adv).to(torch.float64)
    clean64 = clean_caller.detach().to(device=adv.device, dtype=torch.float64)
    delta = adv - clean_work.to(torch.float64)
    unchanged = delta == 0
    if modality.valid_range is not None:
        lo, hi = modality.valid_range
        adv = (clean64 + delta).clamp(lo, hi)
    else:
        adv = clean64 + delta
    if budget is not None:
        norm, eps = budget
        eps_t = torch.as_tensor(eps, dtype=torch.float64, device=adv.device)
        d = adv - clean64
        if norm == "inf":
            if eps_t.ndim == 1:  # per element, flattened per sample
                eps_t = eps_t.view(clean64.shape[1:])
            adv = clean64 + torch.maximum(torch.minimum(d, eps_t), -eps_t)
        elif norm in ("2", "1"):  # the budget kept through the rounding to the caller's dtype (shrinks only)
            norms = d.flatten(1).norm(p=int(norm), dim=1).clamp_min(1e-300)
            factor = torch.clamp(float(eps_t.max()) / norms, max=1.0).view(-1, *([1] * (d.ndim - 1)))
            adv = clean64 + d * factor
    adv = torch.where(unchanged, clean64, adv)
    out = adv.to(clean_caller.dtype)
    moved = (out.to(torch.float64) - clean64).abs()
    over = moved > (adv - clean64).abs()
    if bool(over.any()):
        toward = clean64.to(clean_caller.dtype)
        out = torch.where(over, torch.nextafter(out, toward), out)
    out = torch.where(unchanged, clean_caller.detach().to(out.device), out)
    return out.to(clean_caller.device).contiguous()


def run_attack(
    attack: Any,
    inputs: Mapping[str, Any],
    labels: Any = None,
    *,
    targets: Any = None,
    batching: Batching = "auto",
    success_fraction: float = 0.5,
    check: bool = True,
    clean_logits: CleanLogits | None = None,
) -> AdversarialBatch:
    """Run a toolkit attack built on an :class:`AttackSurface` on one named batch.

    Args:
        attack: a torchattacks ``Attack`` built on ``fusion.surface(...)`` / ``to_torchattacks(...)``,
            an ART evasion attack built on an adapter estimator, or a TextAttack ``Attack`` built on
            ``FusionModelWrapper(fusion)`` (texts come back attacked, every other modality unchanged).
        inputs: ``{modality: tensor}`` for every modality of the model (never modified), any floating
            dtype (the model computes in its own; results come back in yours).
        labels: ground-truth class ids (torch or numpy, ids or one-hot); ``None``: the clean
            predictions ("pseudo-labels").
        targets: target class ids for a targeted attack (same forms as ``labels``).
        batching: ``"auto"`` uses the mode known for this attack; ``"sample"`` forces one example at
            a time (always correct); ``"batch"`` forces whole-batch calls (pairing still checked).
        success_fraction: segmentation only: fraction of pixels that must be fooled for success, in (0, 1].
        check: verify the toolkit's output stayed in range and budget (raises on violation).
        clean_logits: :func:`clean_forward` of the same ``inputs`` (a grid runs many attacks on one
            batch): saves one forward pass; rejected when computed on another batch.
    """
    if not (isinstance(success_fraction, (int, float)) and 0.0 < success_fraction <= 1.0):
        raise ValueError(f"success_fraction must be in (0, 1], got {success_fraction!r}")
    if batching not in ("auto", "batch", "sample"):
        raise ValueError(f"batching must be 'auto', 'batch' or 'sample', got {batching!r}")
    driver = find_driver(attack)
    if getattr(driver, "runs_examples", False):  # text attacks: one example at a time, the driver runs it
        return driver.run(attack, inputs, labels, targets=targets, clean_logits=clean_logits, success_fraction=success_fraction)
    surface = driver.surface(attack)
    fusion = surface.fusion
    n = fusion.validate_inputs(inputs)
    if n == 0:
        raise InputError(f"the batch is empty (0 rows in {list(inputs)}): nothing to attack")
    device = fusion.device
    name = f"{driver.toolkit}.{type(attack).__name__}"
    surface.packing = surface._packing_for(inputs)  # what the toolkit will see, for the checks below
    budget = driver.budget(attack, surface)
    _check_budget(budget, name)
    driver.preflight(attack, surface, budget)
    mode = driver.batching(attack) if batching == "auto" else batching
    flags: list[str] = []

    with frozen_model_state(surface):  # the surface too: toolkits read its .training flag
        # With labels given for an untargeted attack, the clean forward can come from the attack's first
        # query when that is the clean batch (PGD without random start, FGSM, BIM...): the labels are then
        # checked against the logit shape an earlier run on inputs of these shapes saw, and the logits are
        # taken from that query (else computed after the attack).
        targeted = driver.targeted(attack)
        key = _shapes_key(inputs)
        shape = None
        if clean_logits is None and labels is not None and targets is None and mode != "universal" and not targeted:
            shape = _LOGIT_SHAPES.get(fusion, {}).get(key)
        captures: list[torch.Tensor | None] | None = None
        if shape is None:
            clean = clean_pass(fusion, inputs, labels, clean_logits=clean_logits, validate=False)
            work, logits, used = clean.work, clean.logits, clean.labels
            _LOGIT_SHAPES.setdefault(fusion, {})[key] = tuple(logits.shape[1:])
        else:
            work = working_copy(inputs, device, fusion.compute_dtype)
            used = _as_class_ids(labels, fusion, torch.empty((n, *shape), device=device), "labels")
            captures = []
        if targets is not None:
            targets = _as_class_ids(targets, fusion, logits, "targets")
        if targeted and targets is None:
            with surface.bound(work, pairing="position") as x_all:
                targets = driver.auto_targets(attack, x_all, used)
            if targets is None:
                raise UnsupportedAttackError(f"{name} is targeted: pass targets=")
        goal = targets if targeted else used

        strict = driver.honours_bounds(attack, surface)
        if budget is not None:
            radius = surface.budget_radius(budget.norm, budget.eps)
        else:
            radius = None
        if mode in ("content", "universal") and radius is None:
            mode = "sample"  # unbounded: rows cannot be paired by content
        pieces = []
        try:
            if mode == "universal":
                x = surface.bind(work, validate=False, radius_parts=radius, bound_by="run_attack")
                out = driver.generate_universal(attack, surface, x.clone(), goal)
                pieces.append(_finish_chunk(out, x, surface, driver, attack, budget, name, check, strict, device))
            else:
                step = 1 if mode == "sample" else max(1, min(n, driver.chunk_size(attack) or n))
                for start in range(0, n, step):
                    chunk = {k: v[start : start + step] for k, v in work.items()}
                    y = goal[start : start + step]
                    if mode == "sample":
                        out, x = _generate(driver, attack, surface, chunk, y, "broadcast", None, captures)
                    else:
                        try:
                            out, x = _generate(driver, attack, surface, chunk, y, "content" if mode == "content" else "position", radius, captures)
                        except RowAlignmentError:
                            if mode == "batch" and batching == "batch":
                                raise
                            # rows content cannot pair (examples closer than twice the budget), or a query
                            # whose content contradicts its row order (a scaled copy next to a dark
                            # example): redo this chunk one example at a time
                            flags.append(f"fallback: rows {start}..{start + len(y) - 1} ran one example at a time")
                            if captures is not None:
                                captures.append(None)  # this chunk's clean logits: computed after the attack
                            parts = [_generate(driver, attack, surface, {k: v[i : i + 1] for k, v in chunk.items()}, y[i : i + 1], "broadcast", None) for i in range(len(y))]
                            out, x = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                    pieces.append(_finish_chunk(out, x, surface, driver, attack, budget, name, check, strict, device))
        finally:
            surface.unbind()
        if captures is not None:  # every chunk's first query was its clean batch, else one clean forward now
            complete = captures and all(c is not None for c in captures) and sum(len(c) for c in captures) == n
            clean = scored_clean_pass(fusion, work, torch.cat(captures) if complete else None, used)  # type: ignore[arg-type]
        x_adv = torch.cat(pieces)
        attacked = surface.unpack(x_adv)
        with torch.no_grad():
            adv_logits = fusion({**work, **attacked})
        if not bool(torch.isfinite(adv_logits).all()):
            raise NonFiniteOutputError(f"the model returned NaN or infinite logits on the adversarial batch of {name}")
        adv_pred = predicted_classes(adv_logits)

    native_budget: dict[str, tuple[str, Any] | None] = {}
    if budget is not None:
        for key, eps in surface.native_eps(budget.eps).items():
            native_budget[key] = (budget.norm, eps)
    adversarial: dict[str, Any] = {}
    norms: dict[str, dict[str, torch.Tensor]] = {}
    for key in surface.attacked:
        value = inputs[key]
        adversarial[key] = _native_result(attacked[key].detach(), work[key], value, fusion.modalities[key], native_budget.get(key))
        norms[key] = perturbation_norms(value.detach(), adversarial[key])
    if surface.unused_input:
        surface.unused_input = False
        flags.append(f"unused-input: the output does not depend on {list(surface.attacked)} (zero gradient)")
    return build_result(
        fusion,
        clean,
        inputs,
        adversarial,
        adv_pred,
        attacked=surface.attacked,
        toolkit=driver.toolkit,
        attack_name=name,
        batching=mode,
        norms=norms,
        budget=native_budget if budget is not None else {k: None for k in surface.attacked},
        targets=targets if targeted else None,
        flags=flags,
        extras=driver.extras(attack),
        success_fraction=success_fraction,
    )


def _generate(driver, attack, surface, chunk, y, pairing, radius, captures=None):
    x = surface.bind(chunk, validate=False, pairing=pairing, radius_parts=radius, bound_by="run_attack")
    if captures is not None:
        surface.capture_first_query(x)
    try:
        out = driver.generate(attack, x.clone(), y)
    finally:
        first = surface.captured_logits()  # disarms, also when the toolkit raised
    if captures is not None:
        captures.append(first)
    return out, x


def _finish_chunk(out, x, surface, driver, attack, budget, name, check, strict, device):
    surface.eval()  # toolkits may restore a mode they read; keep evaluating in eval mode
    out = torch.as_tensor(out).detach().to(device=device, dtype=x.dtype)
    if out.shape != x.shape:
        raise InvariantViolationError(f"{name} returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
    if check:
        out = _check_and_project(out, x, surface, budget, name, strict)
    return out
