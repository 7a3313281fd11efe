"""Tiny random fusion models and batches shared by the tests (no downloads, CPU, seconds)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from mmfusion_attacks import FusionModel

torch.set_num_threads(min(2, os.cpu_count() or 1))

SIZE = 8
N = 3
CLASSES = 4


class TinyFusionClassifier(nn.Module):
    """Two conv streams (rgb 3ch, ir 1ch), late fusion by concatenation; BN and dropout make modes matter."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.rgb = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.ir = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(48, classes)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.cat([self.rgb(rgb), self.ir(ir)], 1)))


class TinyPackedSegmenter(nn.Module):
    """MFNet-style: one 4-channel tensor (RGB then thermal) in, (N, C, H, W) logits out."""

    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.body(x)}


def make_batch(n: int = N, size: int = SIZE, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.rand(n, 3, size, size, generator=g), "ir": torch.rand(n, 1, size, size, generator=g)}


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return make_batch()


@pytest.fixture
def classifier() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(TinyFusionClassifier(), ["rgb", "ir"], task="classification", num_classes=CLASSES)


@pytest.fixture
def segmenter() -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(TinyPackedSegmenter(), ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=CLASSES)


@pytest.fixture
def cls_labels() -> torch.Tensor:
    return torch.tensor([0, 1, 2])


@pytest.fixture
def seg_labels() -> torch.Tensor:
    return torch.randint(0, CLASSES, (N, SIZE, SIZE), generator=torch.Generator().manual_seed(1))


def rule_labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-pixel class that needs both sensors: 2 * (thermal hot) + (red channel bright)."""
    return (2 * (batch["ir"][:, 0] > 0.5) + (batch["rgb"][:, 0] > 0.5)).long()


@pytest.fixture(scope="session")
def trained_segmenter() -> FusionModel:
    """A tiny packed segmenter trained for a second on the rule above, so attacks have a real effect."""
    torch.manual_seed(0)
    net = TinyPackedSegmenter()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for step in range(150):
        b = make_batch(n=16, seed=100 + step)
        loss = nn.functional.cross_entropy(net(torch.cat([b["rgb"], b["ir"]], 1))["out"], rule_labels(b))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return FusionModel(net.eval(), ["rgb", "ir"], task="segmentation", input_style="packed", num_classes=CLASSES)
