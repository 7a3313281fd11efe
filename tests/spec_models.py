"""Models for the harness's spec tests, importable by spec files (``source: callable``) in subprocesses.

``MMF_TEST_CALLS``: a file that gets one byte per forward call (model calls survive a SIGKILL);
``MMF_TEST_SLEEP``: seconds each forward sleeps (so a test can kill a run mid-grid)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from mmfusion_attacks import FusionModel


class TinySceneNet(nn.Module):
    """RGB + thermal -> 3 classes; ``quantise`` rounds the inputs first (zero gradient: masking by construction)."""

    def __init__(self, quantise: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.quantise = quantise
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        calls = os.environ.get("MMF_TEST_CALLS")
        if calls and not self.training:
            with open(calls, "ab") as f:
                f.write(b".")
        if os.environ.get("MMF_TEST_SLEEP"):
            time.sleep(float(os.environ["MMF_TEST_SLEEP"]))
        x = torch.cat([rgb, ir], 1)
        if self.quantise:
            x = torch.round(x * 2) / 2
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_scene_classifier(quantise: bool = False) -> FusionModel:
    """Trained for 150 steps (deterministic, < 1 s) on the SYNTHETIC scenes, so its predictions depend on its inputs."""
    from mmfusion_attacks.data import create_dataset

    net = TinySceneNet(False)
    x, y = create_dataset("synthetic-rgbt-scenes", split="train", size=60, height=16, width=16).tensors()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    calls, os.environ["MMF_TEST_CALLS"] = os.environ.get("MMF_TEST_CALLS"), ""
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x["rgb"], x["ir"]), y).backward()
        opt.step()
    if calls is None:
        del os.environ["MMF_TEST_CALLS"]
    else:
        os.environ["MMF_TEST_CALLS"] = calls
    net.quantise = quantise
    return FusionModel(net.eval(), ["rgb", "ir"], task="classification", num_classes=3)


#: read by gained_scene_classifier's model at every call: a test edits it between runs (the model's code
#: changed, its weights did not)
IR_GAIN = 1.0


class _IRGain(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        return self.net(rgb, ir * IR_GAIN)


def gained_scene_classifier() -> FusionModel:
    """tiny_scene_classifier with its thermal input scaled by this module's ``IR_GAIN`` at every call."""
    return FusionModel(_IRGain(tiny_scene_classifier().model).eval(), ["rgb", "ir"], task="classification", num_classes=3)


class _Unseeded(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, rgb: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(rgb.shape, generator=torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little")))
        return self.net((rgb + 0.01 * noise).clamp(0, 1), ir)


def unseeded_scene_classifier() -> FusionModel:
    """tiny_scene_classifier behind input noise no seed repeats (drawn from the OS)."""
    return FusionModel(_Unseeded(tiny_scene_classifier().model).eval(), ["rgb", "ir"], task="classification", num_classes=3)


def gained_tiny_segmenter() -> FusionModel:
    """The registry's tiny RGB-T segmenter (seeded) with its thermal input scaled by ``IR_GAIN`` at every call."""
    from mmfusion_attacks.models import create_model

    torch.manual_seed(0)
    return FusionModel(_IRGain(create_model("tiny-rgbt-segmenter", num_classes=9).model).eval(), ["rgb", "ir"], task="segmentation",
                       num_classes=9)
