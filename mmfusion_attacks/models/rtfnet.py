"""RTFNet (Sun, Zuo, Liu, RA-L 2019): two ResNet encoders (RGB, thermal) fused by addition, and a
transposed-conv decoder; one 4-channel tensor in (RGB then thermal), per-pixel logits out.

The module tree follows ``model/RTFNet.py`` of github.com/yuxiangsun/RTFNet attribute by attribute, so
the published checkpoints (plain ``model.state_dict()`` files) load with ``strict=True``. Deliberate
differences from the public code:

* no download: the ResNets are built with ``weights=None`` (the public code uses ImageNet weights);
* the public code sets ``encoder_thermal_conv1`` to the pretrained RGB conv1 averaged over its input
  channels; without pretrained weights there is nothing to average, so it keeps PyTorch's default
  random init (a loaded checkpoint overwrites it anyway);
* the depth is a constructor argument (the public code hard-codes ``self.num_resnet_layers = 152`` and
  asks users to edit it), and an unsupported depth raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from ..fusion import FusionModel
from . import register_model
from .weights import load_weights

__all__ = ["RTFNet", "TransBottleneck", "load_rtfnet_weights"]

# depth -> (torchvision constructor, channels out of layer4)
_RESNETS: dict[int, tuple[Callable[..., models.ResNet], int]] = {
    18: (models.resnet18, 512),
    34: (models.resnet34, 512),
    50: (models.resnet50, 2048),
    101: (models.resnet101, 2048),
    152: (models.resnet152, 2048),
}

WEIGHTS_HELP = (
    "published RTFNet weights (RTFNet-50 and RTFNet-152, trained on the MFNet RGB-T dataset, 9 classes) "
    "are linked from the README of https://github.com/yuxiangsun/RTFNet ('Pretrained weights'); "
    "download one and pass its path as weights="
)


class TransBottleneck(nn.Module):
    """The public decoder block: 1x1 conv, 3x3 conv, then a 2x2 transposed conv when it upsamples
    (a 3x3 conv otherwise), with a residual branch through ``upsample`` when given."""

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3: nn.Module
        if upsample is not None and stride != 1:
            self.conv3 = nn.ConvTranspose2d(
                planes, planes, kernel_size=2, stride=stride, padding=0, bias=False
            )
        else:
            self.conv3 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample
        self.stride = stride
        for m in self.modules():  # as in the public code (this includes the upsample branch)
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight.data)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.upsample is not None:
            residual = self.upsample(x)
        out += residual
        return self.relu(out)


class RTFNet(nn.Module):
    """RTFNet with a ResNet-``num_resnet_layers`` encoder per sensor; input ``(N, 4, H, W)`` with H and W
    divisible by 32, output ``(N, n_class, H, W)`` logits."""

    def __init__(self, n_class: int = 9, num_resnet_layers: int = 152) -> None:
        super().__init__()
        if num_resnet_layers not in _RESNETS:
            raise ValueError(
                f"num_resnet_layers must be one of {sorted(_RESNETS)}, got {num_resnet_layers!r}"
            )
        self.num_resnet_layers = num_resnet_layers
        build, self.inplanes = _RESNETS[num_resnet_layers]
        # Local variables, as in the public code: only the parts assigned below reach the state_dict.
        resnet_raw_model1 = build(weights=None)  # thermal
        resnet_raw_model2 = build(weights=None)  # RGB

        # Thermal encoder. Public code: conv1.weight = mean over input channels of the *pretrained* RGB
        # conv1; with weights=None that would be an average of random weights, so keep the default init.
        self.encoder_thermal_conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.encoder_thermal_bn1 = resnet_raw_model1.bn1
        self.encoder_thermal_relu = resnet_raw_model1.relu
        self.encoder_thermal_maxpool = resnet_raw_model1.maxpool
        self.encoder_thermal_layer1 = resnet_raw_model1.layer1
        self.encoder_thermal_layer2 = resnet_raw_model1.layer2
        self.encoder_thermal_layer3 = resnet_raw_model1.layer3
        self.encoder_thermal_layer4 = resnet_raw_model1.layer4

        # RGB encoder.
        self.encoder_rgb_conv1 = resnet_raw_model2.conv1
        self.encoder_rgb_bn1 = resnet_raw_model2.bn1
        self.encoder_rgb_relu = resnet_raw_model2.relu
        self.encoder_rgb_maxpool = resnet_raw_model2.maxpool
        self.encoder_rgb_layer1 = resnet_raw_model2.layer1
        self.encoder_rgb_layer2 = resnet_raw_model2.layer2
        self.encoder_rgb_layer3 = resnet_raw_model2.layer3
        self.encoder_rgb_layer4 = resnet_raw_model2.layer4

        # Decoder: each stage halves the channels and doubles the resolution; the last maps to n_class.
        self.deconv1 = self._make_transpose_layer(TransBottleneck, self.inplanes // 2, 2, stride=2)
        self.deconv2 = self._make_transpose_layer(TransBottleneck, self.inplanes // 2, 2, stride=2)
        self.deconv3 = self._make_transpose_layer(TransBottleneck, self.inplanes // 2, 2, stride=2)
        self.deconv4 = self._make_transpose_layer(TransBottleneck, self.inplanes // 2, 2, stride=2)
        self.deconv5 = self._make_transpose_layer(TransBottleneck, n_class, 2, stride=2)

    def _make_transpose_layer(
        self, block: type[TransBottleneck], planes: int, blocks: int, stride: int = 1
    ) -> nn.Sequential:
        upsample: nn.Sequential | None = None
        if stride != 1:
            upsample = nn.Sequential(
                nn.ConvTranspose2d(
                    self.inplanes, planes, kernel_size=2, stride=stride, padding=0, bias=False
                ),
                nn.BatchNorm2d(planes),
            )
        elif self.inplanes != planes:
            upsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, kernel_size=1, stride=stride, padding=0, bias=False),
                nn.BatchNorm2d(planes),
            )
        if upsample is not None:  # the public code assumes it is set (every call uses stride=2)
            for m in upsample.modules():
                if isinstance(m, nn.ConvTranspose2d):
                    nn.init.xavier_uniform_(m.weight.data)
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.data.fill_(1)
                    m.bias.data.zero_()
        layers = [block(self.inplanes, self.inplanes) for _ in range(1, blocks)]
        layers.append(block(self.inplanes, planes, stride, upsample))
        self.inplanes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x[:, :3]
        thermal = x[:, 3:]

        rgb = self.encoder_rgb_relu(self.encoder_rgb_bn1(self.encoder_rgb_conv1(rgb)))
        thermal = self.encoder_thermal_relu(self.encoder_thermal_bn1(self.encoder_thermal_conv1(thermal)))
        rgb = rgb + thermal  # thermal features flow into the RGB stream only; the thermal stream stays pure

        rgb = self.encoder_rgb_maxpool(rgb)
        thermal = self.encoder_thermal_maxpool(thermal)

        rgb = self.encoder_rgb_layer1(rgb)
        thermal = self.encoder_thermal_layer1(thermal)
        rgb = rgb + thermal

        rgb = self.encoder_rgb_layer2(rgb)
        thermal = self.encoder_thermal_layer2(thermal)
        rgb = rgb + thermal

        rgb = self.encoder_rgb_layer3(rgb)
        thermal = self.encoder_thermal_layer3(thermal)
        rgb = rgb + thermal

        rgb = self.encoder_rgb_layer4(rgb)
        thermal = self.encoder_thermal_layer4(thermal)
        fuse = rgb + thermal

        fuse = self.deconv1(fuse)
        fuse = self.deconv2(fuse)
        fuse = self.deconv3(fuse)
        fuse = self.deconv4(fuse)
        return self.deconv5(fuse)


def load_rtfnet_weights(net: RTFNet, path: str | Path) -> RTFNet:
    """Load a published RTFNet checkpoint strictly (see :func:`~mmfusion_attacks.models.weights.load_weights`)."""
    load_weights(net, path, WEIGHTS_HELP)
    return net


def _factory(depth: int) -> Callable[..., FusionModel]:
    def create(num_classes: int = 9, weights: str | Path | None = None) -> FusionModel:
        net = RTFNet(num_classes, depth)
        if weights is not None:
            load_rtfnet_weights(net, weights)
        fusion = FusionModel(
            net, ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=num_classes
        )
        return fusion.eval()

    create.__name__ = create.__qualname__ = f"rtfnet{depth}"
    create.__doc__ = (
        f"RTFNet-{depth} as an eval-mode FusionModel (packed RGB + thermal); weights: a checkpoint."
    )
    return create


for _depth in _RESNETS:
    register_model(f"rtfnet-{_depth}")(_factory(_depth))
