"""Preprocessing defences on one modality, inside the fusion model.

``FusionModel(..., defences={"ir": SpatialSmoothing(window_size=3)})`` smooths the thermal camera
whichever modality an attack targets — something an ART estimator's ``preprocessing_defences`` cannot
do, since they only see the attacked array. Gradient semantics, as attacks on defences need:

- a differentiable ``nn.Module`` / callable, or an ART ``PreprocessorPyTorch``: true gradients;
- an ART numpy ``Preprocessor`` (SpatialSmoothing, FeatureSqueezing, JpegCompression, ...): BPDA —
  the forward runs the defence, the backward is its ``estimate_gradient`` (the identity for most);
- a randomised defence draws anew at every forward: attack it with expectation over
  transformation (torchattacks ``EOTPGD``, recipe ``"eotpgd"``).

ART's ``apply_fit`` / ``apply_predict`` are honoured (the model's train / eval mode decides).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["ModalityDefence"]


class _NumpyDefence(torch.autograd.Function):
    """Forward through an ART numpy preprocessor; backward through its ``estimate_gradient`` (BPDA)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, defence: Any) -> torch.Tensor:  # type: ignore[override]
        x_np = x.detach().cpu().numpy().astype(np.float32)
        out, _ = defence(x_np)
        ctx.defence, ctx.x_np = defence, x_np
        out = np.asarray(out, dtype=np.float32)
        if out.shape != x_np.shape:
            raise ValueError(f"{type(defence).__name__} changed the shape {x_np.shape} -> {out.shape}")
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        g = ctx.defence.estimate_gradient(ctx.x_np, grad.detach().cpu().numpy().astype(np.float32))
        return torch.as_tensor(np.asarray(g, dtype=np.float32)).to(device=grad.device, dtype=grad.dtype), None


class ModalityDefence(nn.Module):
    """One modality's preprocessing defence (see the module docstring for gradient semantics)."""

    def __init__(self, defence: Any, name: str = "") -> None:
        super().__init__()
        if not callable(defence):
            raise TypeError(f"modality '{name}': a defence must be callable (an ART Preprocessor or a torch module)")
        self.defence = defence
        self.name = name
        self.kind = self._kind(defence)

    @staticmethod
    def _kind(defence: Any) -> str:
        try:
            from art.defences.preprocessor.preprocessor import Preprocessor, PreprocessorPyTorch
        except ImportError:  # ART not installed: only torch callables
            return "torch"
        if isinstance(defence, PreprocessorPyTorch):
            return "art-torch"
        if isinstance(defence, Preprocessor):
            return "art-numpy"
        return "torch"

    def _active(self) -> bool:
        flag = "apply_fit" if self.training else "apply_predict"
        return bool(getattr(self.defence, flag, True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind != "torch" and not self._active():
            return x
        if self.kind == "art-torch":
            out, _ = self.defence.forward(x)
            return out
        if self.kind == "art-numpy":
            return _NumpyDefence.apply(x, self.defence)
        return self.defence(x)

    def extra_repr(self) -> str:
        return f"{self.name}: {type(self.defence).__name__} ({self.kind})"
