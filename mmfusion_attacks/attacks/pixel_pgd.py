"""Shared Linf PGD loop for segmentation attacks that differ only in how they weight per-pixel losses."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

import torch
from torch import nn
from torchattacks.attack import Attack

__all__ = ["PixelLossPGD"]


class PixelLossPGD(Attack, metaclass=ABCMeta):
    """Linf PGD with the torchattacks interface; subclasses define :meth:`loss` (to be maximised)."""

    row_aligned = True
    supports_segmentation = True

    def __init__(self, name: str, model: nn.Module, eps: float, alpha: float, steps: int, random_start: bool) -> None:
        super().__init__(name, model)
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start
        self.supported_mode = ["default", "targeted"]

    @abstractmethod
    def loss(self, logits: torch.Tensor, goal: torch.Tensor, step: int) -> torch.Tensor:
        """Scalar objective at ``step`` (1-based); ``goal`` is the labels, or the targets when targeted."""

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        goal = self.get_target_label(images, labels) if self.targeted else labels
        adv = images.clone()
        if self.random_start:
            adv = (adv + torch.empty_like(adv).uniform_(-self.eps, self.eps)).clamp(0, 1)
        for step in range(1, self.steps + 1):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.loss(self.get_logits(adv), goal, step), adv)
            adv = adv.detach() + self.alpha * grad.sign()
            adv = (images + (adv - images).clamp(-self.eps, self.eps)).clamp(0, 1).detach()
        return adv
