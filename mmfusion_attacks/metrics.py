"""Segmentation metrics accumulated as a confusion matrix (never as per-image means).

mAcc is the mean per-class recall TP / (TP + FN); mIoU the mean of TP / (TP + FP + FN). A class that
appears in neither the labels nor the predictions of everything accumulated has no defined IoU or
recall and is left out of both means (its per-class value is NaN); a class present in the labels but
never predicted counts as 0. ``include`` restricts the means to a set of classes (e.g. to exclude
"unlabeled").
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["SegmentationMetrics", "perturbation_norms"]


class SegmentationMetrics:
    """Streamed confusion matrix for ``(N, H, W)`` predictions and labels."""

    def __init__(self, num_classes: int, *, ignore_index: int | None = None, device: str | torch.device = "cpu") -> None:
        self.num_classes = num_classes
        self._cm = MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False).to(device)

    def update(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        self._cm.update(pred.flatten(), labels.flatten().to(pred.device))

    @property
    def confusion(self) -> torch.Tensor:
        """``confusion[i, j]``: pixels of true class i predicted as j."""
        return self._cm.compute().double()

    def per_class_iou(self) -> torch.Tensor:
        cm = self.confusion
        tp = cm.diag()
        denom = cm.sum(0) + cm.sum(1) - tp
        return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))

    def per_class_recall(self) -> torch.Tensor:
        cm = self.confusion
        support = cm.sum(1)
        # a class never in the labels has no recall; if it is also never predicted it is absent
        return torch.where(support > 0, cm.diag() / support.clamp_min(1), torch.full_like(support, float("nan")))

    @staticmethod
    def _mean(values: torch.Tensor, include: Iterable[int] | None) -> float:
        if include is not None:
            values = values[list(include)]
        values = values[~values.isnan()]
        return float(values.mean()) if values.numel() else float("nan")

    def miou(self, include: Iterable[int] | None = None) -> float:
        return self._mean(self.per_class_iou(), include)

    def macc(self, include: Iterable[int] | None = None) -> float:
        return self._mean(self.per_class_recall(), include)

    def pixel_accuracy(self) -> float:
        cm = self.confusion
        return float(cm.diag().sum() / cm.sum().clamp_min(1))


def perturbation_norms(clean: torch.Tensor, adv: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample Linf and L2 norms of ``adv - clean``."""
    delta = (adv - clean).flatten(1)
    return {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1)}
