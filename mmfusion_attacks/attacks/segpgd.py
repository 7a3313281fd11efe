"""SegPGD (Gu, Zhao, Torr, Bai; ECCV 2022): PGD whose loss shifts from correctly to wrongly classified pixels.

At step t of T the per-pixel cross-entropy is weighted ``1 - lambda_t`` on pixels still classified
correctly and ``lambda_t`` on pixels already fooled, with ``lambda_t = (t - 1) / (2T)``, so early steps
attack every pixel and later steps stop over-spending on pixels that are already wrong.
"""

from __future__ import annotations

import torch
from torch import nn
from torchattacks.attack import Attack

__all__ = ["SegPGD"]


class SegPGD(Attack):
    """Linf SegPGD with the torchattacks interface: ``SegPGD(model, eps, alpha, steps, random_start)``."""

    row_aligned = True
    supports_segmentation = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, random_start: bool = True) -> None:
        super().__init__("SegPGD", model)
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start
        self.supported_mode = ["default", "targeted"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        goal = self.get_target_label(images, labels) if self.targeted else labels
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for t in range(1, self.steps + 1):
            adv.requires_grad_(True)
            logits = self.get_logits(adv)
            pixel_loss = nn.functional.cross_entropy(logits, goal, reduction="none")
            lam = (t - 1) / (2 * self.steps)
            on_goal = logits.argmax(1) == goal
            # untargeted: push correct pixels hardest; targeted: pull pixels not yet on target hardest
            first, second = (on_goal, ~on_goal) if not self.targeted else (~on_goal, on_goal)
            loss = ((1 - lam) * pixel_loss * first + lam * pixel_loss * second).mean()
            if self.targeted:
                loss = -loss
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv
