"""SegPGD (Gu, Zhao, Torr, Bai; ECCV 2022): PGD whose loss shifts from correctly to wrongly classified pixels.

At step t of T the per-pixel cross-entropy is weighted ``1 - lambda_t`` on pixels still classified
correctly and ``lambda_t`` on pixels already fooled, with ``lambda_t = (t - 1) / (2T)``, so early steps
attack every pixel and later steps stop over-spending on pixels that are already wrong.
"""

from __future__ import annotations

import torch
from torch import nn

from ..metrics import predicted_classes
from .pixel_pgd import PixelLossPGD

__all__ = ["SegPGD"]


class SegPGD(PixelLossPGD):
    """Linf SegPGD with the torchattacks interface: ``SegPGD(model, eps, alpha, steps, random_start)``."""

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, random_start: bool = True) -> None:
        super().__init__("SegPGD", model, eps, alpha, steps, random_start)

    def loss(self, logits: torch.Tensor, goal: torch.Tensor, step: int) -> torch.Tensor:
        pixel_loss = nn.functional.cross_entropy(logits, goal, reduction="none")
        lam = (step - 1) / (2 * self.steps)
        on_goal = predicted_classes(logits) == goal
        # untargeted: push correct pixels hardest; targeted: pull pixels not yet on target hardest
        first, second = (on_goal, ~on_goal) if not self.targeted else (~on_goal, on_goal)
        loss = ((1 - lam) * pixel_loss * first + lam * pixel_loss * second).mean()
        return -loss if self.targeted else loss
