"""CosPGD (Agnihotri, Jung, Keuper; ICML 2024): PGD with per-pixel losses weighted by prediction/label agreement.

Each pixel's cross-entropy is scaled by the cosine similarity between the softmax prediction and
the one-hot label (untargeted; targeted uses 1 - similarity to the target), so the attack spends
its gradient on pixels that are still confidently right instead of saturating already-wrong ones.
"""

from __future__ import annotations

import torch
from torch import nn

from .pixel_pgd import PixelLossPGD

__all__ = ["CosPGD"]


class CosPGD(PixelLossPGD):
    """Linf CosPGD with the torchattacks interface: ``CosPGD(model, eps, alpha, steps, random_start)``."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, random_start: bool = True) -> None:
        super().__init__("CosPGD", model, eps, alpha, steps, random_start)

    def loss(self, logits: torch.Tensor, goal: torch.Tensor, step: int) -> torch.Tensor:
        one_hot = nn.functional.one_hot(goal, logits.shape[1]).movedim(-1, 1).float()
        cos = nn.functional.cosine_similarity(logits.softmax(1), one_hot, dim=1).detach()
        pixel_loss = nn.functional.cross_entropy(logits, goal, reduction="none")
        return -((1 - cos) * pixel_loss).mean() if self.targeted else (cos * pixel_loss).mean()
