"""Per-pixel least-likely targets (Arnab et al., CVPR 2018: FGSM II / iterative FGSM II).

torchattacks' least-likely mode picks one class per image and fails on ``(N, H, W)`` labels; here the
target of each pixel is the class the clean model finds least likely there. FGSM II and iterative
FGSM II are then torchattacks' own FGSM and BIM in ``set_mode_targeted_by_label`` with these targets.
"""

from __future__ import annotations

import torch

__all__ = ["least_likely_targets"]


@torch.no_grad()
def least_likely_targets(logits: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` logits -> ``(N, ...)`` index of the least likely class."""
    return logits.argmin(1)
