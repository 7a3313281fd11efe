"""CosPGD (Agnihotri, Jung, Keuper; ICML 2024): PGD with per-pixel losses weighted by prediction/label agreement.

Each pixel's cross-entropy is scaled by the cosine similarity between the softmax prediction and
the one-hot label (untargeted; targeted uses 1 - similarity to the target), so the attack spends
its gradient on pixels that are still confidently right instead of saturating already-wrong ones.
"""

from __future__ import annotations

import torch
from torch import nn
from torchattacks.attack import Attack

__all__ = ["CosPGD"]


class CosPGD(Attack):
    """Linf CosPGD with the torchattacks interface: ``CosPGD(model, eps, alpha, steps, random_start)``."""

    row_aligned = True
    supports_segmentation = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, random_start: bool = True) -> None:
        super().__init__("CosPGD", model)
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start
        self.supported_mode = ["default", "targeted"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        goal = self.get_target_label(images, labels) if self.targeted else labels
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            logits = self.get_logits(adv)
            one_hot = nn.functional.one_hot(goal, logits.shape[1]).movedim(-1, 1).float()
            cos = nn.functional.cosine_similarity(logits.softmax(1), one_hot, dim=1).detach()
            pixel_loss = nn.functional.cross_entropy(logits, goal, reduction="none")
            loss = -((1 - cos) * pixel_loss).mean() if self.targeted else (cos * pixel_loss).mean()
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv
