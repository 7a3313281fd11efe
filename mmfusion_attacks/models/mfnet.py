"""MFNet (Ha et al., IROS 2017), the RGB-thermal segmenter of the MF dataset, as in the authors' code.

The layers and attribute names follow ``model/MFNet.py`` of the public haqishen/MFNet-pytorch
repository, so its checkpoint ``weights/MFNet/final.pth`` (9 classes) loads unchanged with
``strict=True``. The weights are not shipped here: a user downloads them from that repository and
passes the path as ``create_model("mfnet", weights=path)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion import FusionModel
from . import register_model
from .weights import load_weights

__all__ = ["MFNet", "mfnet"]

_OFFICIAL = "weights/MFNet/final.pth in the public haqishen/MFNet-pytorch repository"


class ConvBnLeakyRelu2d(nn.Module):
    """Conv, batch norm, LeakyReLU 0.2: the one building block of MFNet (also its last layer)."""

    def __init__(self, in_channels: int, out_channels: int, padding: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding, dilation=dilation)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.bn(self.conv(x)), negative_slope=0.2)


class MiniInception(nn.Module):
    """Three stages, each concatenating a plain and a dilation-2 3x3 branch of ``out_channels // 2``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1_left = ConvBnLeakyRelu2d(in_channels, half)
        self.conv1_right = ConvBnLeakyRelu2d(in_channels, half, padding=2, dilation=2)
        self.conv2_left = ConvBnLeakyRelu2d(out_channels, half)
        self.conv2_right = ConvBnLeakyRelu2d(out_channels, half, padding=2, dilation=2)
        self.conv3_left = ConvBnLeakyRelu2d(out_channels, half)
        self.conv3_right = ConvBnLeakyRelu2d(out_channels, half, padding=2, dilation=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1_left(x), self.conv1_right(x)), dim=1)
        x = torch.cat((self.conv2_left(x), self.conv2_right(x)), dim=1)
        return torch.cat((self.conv3_left(x), self.conv3_right(x)), dim=1)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=2, stride=2)


def _up(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class MFNet(nn.Module):
    """Two encoders (RGB wide, thermal narrow), fused by concatenation, one shared decoder.

    Input: one ``(N, 4, H, W)`` tensor, RGB then thermal, values in [0, 1] (no mean/std), H and W
    divisible by 16. Output: ``(N, n_class, H, W)`` logits. As in the official code, the last layer is
    a conv + BN + LeakyReLU block too, so the logits have passed through a LeakyReLU.
    """

    def __init__(self, n_class: int = 9) -> None:
        super().__init__()
        rgb_ch = [16, 48, 48, 96, 96]
        inf_ch = [16, 16, 16, 36, 36]

        self.conv1_rgb = ConvBnLeakyRelu2d(3, rgb_ch[0])
        self.conv2_1_rgb = ConvBnLeakyRelu2d(rgb_ch[0], rgb_ch[1])
        self.conv2_2_rgb = ConvBnLeakyRelu2d(rgb_ch[1], rgb_ch[1])
        self.conv3_1_rgb = ConvBnLeakyRelu2d(rgb_ch[1], rgb_ch[2])
        self.conv3_2_rgb = ConvBnLeakyRelu2d(rgb_ch[2], rgb_ch[2])
        self.conv4_rgb = MiniInception(rgb_ch[2], rgb_ch[3])
        self.conv5_rgb = MiniInception(rgb_ch[3], rgb_ch[4])

        self.conv1_inf = ConvBnLeakyRelu2d(1, inf_ch[0])
        self.conv2_1_inf = ConvBnLeakyRelu2d(inf_ch[0], inf_ch[1])
        self.conv2_2_inf = ConvBnLeakyRelu2d(inf_ch[1], inf_ch[1])
        self.conv3_1_inf = ConvBnLeakyRelu2d(inf_ch[1], inf_ch[2])
        self.conv3_2_inf = ConvBnLeakyRelu2d(inf_ch[2], inf_ch[2])
        self.conv4_inf = MiniInception(inf_ch[2], inf_ch[3])
        self.conv5_inf = MiniInception(inf_ch[3], inf_ch[4])

        self.decode4 = ConvBnLeakyRelu2d(rgb_ch[3] + inf_ch[3], rgb_ch[2] + inf_ch[2])
        self.decode3 = ConvBnLeakyRelu2d(rgb_ch[2] + inf_ch[2], rgb_ch[1] + inf_ch[1])
        self.decode2 = ConvBnLeakyRelu2d(rgb_ch[1] + inf_ch[1], rgb_ch[0] + inf_ch[0])
        self.decode1 = ConvBnLeakyRelu2d(rgb_ch[0] + inf_ch[0], n_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_rgb, x_inf = x[:, :3], x[:, 3:]

        x_rgb = _pool(self.conv1_rgb(x_rgb))
        x_rgb_p2 = self.conv2_2_rgb(self.conv2_1_rgb(x_rgb))
        x_rgb_p3 = self.conv3_2_rgb(self.conv3_1_rgb(_pool(x_rgb_p2)))
        x_rgb_p4 = self.conv4_rgb(_pool(x_rgb_p3))
        x_rgb = self.conv5_rgb(_pool(x_rgb_p4))

        x_inf = _pool(self.conv1_inf(x_inf))
        x_inf_p2 = self.conv2_2_inf(self.conv2_1_inf(x_inf))
        x_inf_p3 = self.conv3_2_inf(self.conv3_1_inf(_pool(x_inf_p2)))
        x_inf_p4 = self.conv4_inf(_pool(x_inf_p3))
        x_inf = self.conv5_inf(_pool(x_inf_p4))

        x = torch.cat((x_rgb, x_inf), dim=1)  # fusion
        x = self.decode4(_up(x) + torch.cat((x_rgb_p4, x_inf_p4), dim=1))
        x = self.decode3(_up(x) + torch.cat((x_rgb_p3, x_inf_p3), dim=1))
        x = self.decode2(_up(x) + torch.cat((x_rgb_p2, x_inf_p2), dim=1))
        return self.decode1(_up(x))


@register_model("mfnet")
def mfnet(num_classes: int = 9, weights: str | None = None) -> FusionModel:
    """MFNet behind the packed RGB + thermal interface, in eval mode; ``weights``: the official final.pth."""
    net = MFNet(num_classes)
    if weights is not None:
        load_weights(net, weights, f"the official checkpoint is {_OFFICIAL}")
    model = FusionModel(
        net, ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=num_classes
    )
    return model.eval()
