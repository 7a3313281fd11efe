"""Grids of attacks over a stream of batches, accumulated as confusion matrices (segmentation: one
entry per pixel; classification: one per example, so ``accuracy`` is the fraction correct).

Batches are the outer loop and grid cells the inner one, so only one batch (and its adversarials)
is alive at a time: memory does not grow with the number of images. Labels are the ground truth
when a batch has them, else the clean predictions ("pseudo-labels"); the result says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from ..attacks import least_likely_targets
from ..fusion import FusionModel
from ..metrics import SegmentationMetrics
from ..recipes import make_attack, recipe_targets
from ..runner import AdversarialBatch, clean_forward, run_attack

__all__ = ["Cell", "GridSpec", "GridResult", "run_grid", "run_transfer"]

Batch = tuple[Mapping[str, torch.Tensor], "torch.Tensor | None"]


@dataclass(frozen=True)
class Cell:
    attack: str
    eps_255: float
    attacked: tuple[str, ...]

    @property
    def label(self) -> str:
        return "+".join(m.upper() for m in self.attacked)


@dataclass
class GridSpec:
    """Which attacks, budgets (on the 0-255 scale) and attacked subsets to run, through which toolkit."""

    attacks: Sequence[str] = ("fgsm", "pgd")
    eps_255: Sequence[float] = (10, 20, 40)
    subsets: Sequence[tuple[str, ...]] = (("rgb",), ("ir",), ("rgb", "ir"))
    toolkit: str = "torchattacks"
    steps: int = 10
    attack_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def cells(self) -> list[Cell]:
        return [Cell(a, float(e), tuple(s)) for a in self.attacks for e in self.eps_255 for s in self.subsets]


@dataclass
class GridResult:
    clean: SegmentationMetrics
    cells: dict[Cell, SegmentationMetrics]
    on_target: dict[Cell, list[float]]  # [pixels on target, pixels] for targeted cells
    labels_source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self, include: Sequence[int] | None = None) -> list[dict[str, Any]]:
        clean = self.clean.miou(include)
        rows = []
        for cell, m in self.cells.items():
            row = {
                "attack": cell.attack.upper(),
                "eps_255": cell.eps_255,
                "attacked": cell.label,
                "mAcc": m.macc(include),
                "mIoU": m.miou(include),
                "IoU_R": m.miou(include) / clean if clean > 0 else float("nan"),
                "accuracy": m.pixel_accuracy(),
                "per_class_IoU": [None if v != v else round(v, 6) for v in m.per_class_iou().tolist()],
            }
            if cell in self.on_target:
                hit, total = self.on_target[cell]
                row["target_rate"] = hit / max(total, 1)
            rows.append(row)
        return rows

    def clean_summary(self, include: Sequence[int] | None = None) -> dict[str, Any]:
        return {
            "mAcc": self.clean.macc(include),
            "mIoU": self.clean.miou(include),
            "pixel_accuracy": self.clean.pixel_accuracy(),
            "accuracy": self.clean.pixel_accuracy(),
            "per_class_IoU": [None if v != v else round(v, 6) for v in self.clean.per_class_iou().tolist()],
        }


def _num_classes(fusion: FusionModel, logits: torch.Tensor) -> int:
    return fusion.num_classes or int(logits.shape[1])


def run_grid(
    fusion: FusionModel,
    batches: Iterable[Batch],
    spec: GridSpec,
    *,
    progress: bool = True,
    on_batch: Callable[[int, Mapping[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[Cell, AdversarialBatch]], None] | None = None,
    total: int | None = None,
) -> GridResult:
    """Run every cell of ``spec`` on every batch; ``on_batch`` sees each batch's results (for figures)."""
    cells = spec.cells()
    device = fusion.device
    attacks = {
        c: make_attack(c.attack, fusion, c.attacked, toolkit=spec.toolkit, eps=c.eps_255 / 255, steps=spec.steps, **spec.attack_kwargs.get(c.attack, {}))
        for c in cells
    }
    clean: SegmentationMetrics | None = None
    metrics: dict[Cell, SegmentationMetrics] = {}
    on_target: dict[Cell, list[float]] = {}
    sources = set()
    bar = tqdm(batches, total=total, desc="batches", disable=None if progress else True, leave=False)
    for index, (inputs, labels) in enumerate(bar):
        inputs = {k: v.to(device) for k, v in inputs.items()}
        clean_logits = clean_forward(fusion, inputs)
        logits = clean_logits.logits
        clean_pred = logits.argmax(1)
        if labels is None:
            labels, source = clean_pred, "pseudo-labels (clean predictions)"
        else:
            labels, source = labels.to(device), "ground truth"
        sources.add(source)
        n_classes = _num_classes(fusion, logits)
        if clean is None:
            clean = SegmentationMetrics(n_classes, ignore_index=fusion.ignore_index, device=device)
            metrics = {c: SegmentationMetrics(n_classes, ignore_index=fusion.ignore_index, device=device) for c in cells}
        clean.update(clean_pred, labels)
        results: dict[Cell, AdversarialBatch] = {}
        for cell in cells:
            targets = least_likely_targets(logits) if recipe_targets(cell.attack) == "least-likely" else None
            result = run_attack(attacks[cell], inputs, labels, targets=targets, clean_logits=clean_logits)
            metrics[cell].update(result.adv_pred, labels)
            if targets is not None:
                hit = on_target.setdefault(cell, [0.0, 0.0])
                hit[0] += float((result.adv_pred == targets).sum())
                hit[1] += float(targets.numel())
            results[cell] = result
        if on_batch is not None:
            on_batch(index, inputs, labels, clean_pred, results)
        del results, inputs, logits, clean_logits
    if clean is None:
        raise ValueError("run_grid got no batches")
    return GridResult(clean, metrics, on_target, " + ".join(sorted(sources)), {"toolkit": spec.toolkit, "steps": spec.steps})


def run_transfer(
    sources: Mapping[str, FusionModel],
    targets: Mapping[str, FusionModel],
    batches: Iterable[Batch],
    *,
    attack: str | Mapping[str, str] = "fgsm",
    eps_255: float = 8,
    attacked: tuple[str, ...] = ("rgb", "ir"),
    toolkit: str = "torchattacks",
    steps: int = 10,
    attack_kwargs: Mapping[str, dict[str, Any]] | None = None,
    eval_repeats: int = 1,
    progress: bool = True,
    total: int | None = None,
    metric: str = "iou_ratio",
) -> dict[tuple[str, str], float]:
    """Each target model on adversarials crafted on each source model (white box on the diagonal,
    transfer elsewhere): ``metric="iou_ratio"`` (mIoU on adversarials / clean mIoU) or ``"accuracy"``
    (fraction of pixels / examples right on adversarials). ``attack`` may name one recipe per source;
    ``eval_repeats`` scores stochastic targets (randomised defences) over several draws."""
    if metric not in ("iou_ratio", "accuracy"):
        raise ValueError(f"metric must be 'iou_ratio' or 'accuracy', got {metric!r}")
    per_source = {s: attack if isinstance(attack, str) else attack[s] for s in sources}
    kwargs = attack_kwargs or {}
    built = {
        s: make_attack(per_source[s], m, attacked, toolkit=toolkit, eps=eps_255 / 255, steps=steps, **kwargs.get(per_source[s], {}))
        for s, m in sources.items()
    }
    clean: dict[str, SegmentationMetrics] = {}
    adv: dict[tuple[str, str], SegmentationMetrics] = {}
    for inputs, labels in tqdm(batches, total=total, desc="transfer", disable=None if progress else True, leave=False):
        preds = {}
        for t, model in targets.items():
            inputs_t = {k: v.to(model.device) for k, v in inputs.items()}
            preds[t] = model.predict(inputs_t)
            truth = preds[t] if labels is None else labels.to(model.device)
            n_classes = model.num_classes or int(model(inputs_t).shape[1])
            clean.setdefault(t, SegmentationMetrics(n_classes, ignore_index=model.ignore_index, device=model.device))
            clean[t].update(preds[t], truth)
            for _ in range(eval_repeats - 1):
                clean[t].update(model.predict(inputs_t), truth)
        for s, src in sources.items():
            inputs_s = {k: v.to(src.device) for k, v in inputs.items()}
            truth_s = src.predict(inputs_s) if labels is None else labels.to(src.device)
            crafted = run_attack(built[s], inputs_s, truth_s).inputs
            for t, model in targets.items():
                truth = preds[t] if labels is None else labels.to(model.device)
                key = (s, t)
                adv.setdefault(key, SegmentationMetrics(clean[t].num_classes, ignore_index=model.ignore_index, device=model.device))
                crafted_t = {k: v.to(model.device) for k, v in crafted.items()}
                for _ in range(eval_repeats):
                    adv[key].update(model.predict(crafted_t), truth)
    if metric == "accuracy":
        return {key: m.pixel_accuracy() for key, m in adv.items()}
    return {key: m.miou() / clean[key[1]].miou() for key, m in adv.items()}
