"""RGB-T fusion models built from segmentation-models-pytorch parts (no pretrained download).

- ``smp-early-unet``: early fusion, one smp Unet taking the packed 4-channel tensor (RGB + thermal).
- ``smp-twostream-unet``: one smp encoder per sensor, features added level by level (as RTFNet fuses),
  one Unet decoder. Encoders are any smp encoder name (default ``resnet18``).
"""

from __future__ import annotations

from collections.abc import Sequence

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from ..fusion import FusionModel
from . import register_model
from .weights import load_weights

__all__ = ["TwoStreamUnet", "smp_early_unet", "smp_twostream_unet"]


class TwoStreamUnet(nn.Module):
    """Separate RGB and thermal encoders, element-wise sum of their features, a shared Unet decoder."""

    def __init__(self, encoder_name: str = "resnet18", num_classes: int = 9, decoder_channels: Sequence[int] = (128, 64, 32, 16, 16)) -> None:
        super().__init__()
        self.encoder_rgb = get_encoder(encoder_name, in_channels=3, depth=5, weights=None)
        self.encoder_ir = get_encoder(encoder_name, in_channels=1, depth=5, weights=None)
        self.decoder = UnetDecoder(encoder_channels=self.encoder_rgb.out_channels, decoder_channels=decoder_channels, n_blocks=5)
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        f_rgb, f_ir = self.encoder_rgb(rgb), self.encoder_ir(ir)
        fused = [f_rgb[0]] + [a + b for a, b in zip(f_rgb[1:], f_ir[1:])]  # level 0 (the input) is unused
        return self.head(self.decoder(fused))


_SAVED = "save one with torch.save(fusion.model.state_dict(), path)"


@register_model("smp-early-unet")
def smp_early_unet(num_classes: int = 9, encoder: str = "resnet18", weights: str | None = None) -> FusionModel:
    net = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=4, classes=num_classes)
    if weights is not None:
        load_weights(net, weights, _SAVED)
    return FusionModel(net, ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=num_classes).eval()


@register_model("smp-twostream-unet")
def smp_twostream_unet(num_classes: int = 9, encoder: str = "resnet18", weights: str | None = None) -> FusionModel:
    net = TwoStreamUnet(encoder, num_classes)
    if weights is not None:
        load_weights(net, weights, _SAVED)
    return FusionModel(net, ["rgb", "ir"], task="segmentation", num_classes=num_classes).eval()
