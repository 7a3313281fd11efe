"""The full invariant matrix again, on a model the other tests never use: thermal declared in [0, 2]
or in [-1, 1], a dict output and batch-norm layers. Budgets are checked in each modality's own
units, as the result reports them (toolkits see every modality in [0, 1], so eps is a fraction of
each range)."""

from __future__ import annotations

import pytest
import torch
from test_invariant_matrix import ART_CLS, ART_SEG, SUBSETS, TORCHATTACKS_CLS, TORCHATTACKS_SEG, run_cell
from torch import nn

from mmfusion_attacks import FusionModel, Modality

RANGES = {"ir02": (0.0, 2.0), "ir-11": (-1.0, 1.0)}
CLASSES = 4


class DictOutputFusion(nn.Module):
    """Two streams with batch norm; returns {"logits": ..., "features": ...}."""

    def __init__(self, segmentation: bool) -> None:
        super().__init__()
        self.segmentation = segmentation
        self.rgb = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.ir = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.Tanh())
        self.seg_head = nn.Conv2d(12, CLASSES, 1)
        self.cls_head = nn.Linear(12, CLASSES)

    def forward(self, rgb, thermal):
        feats = torch.cat([self.rgb(rgb), self.ir(thermal)], 1)
        logits = self.seg_head(feats) if self.segmentation else self.cls_head(feats.mean((2, 3)))
        return {"features": feats, "logits": logits}


def build(task: str, valid_range):
    torch.manual_seed(1)
    net = DictOutputFusion(task == "segmentation")
    # a few training-mode passes so batch-norm statistics are not the defaults
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(4, 3, 8, 8), torch.rand(4, 1, 8, 8) * 2 - 1)
    ir = Modality("ir", "image", 1, valid_range=valid_range)
    return FusionModel(net, ["rgb", ir], task=task, num_classes=CLASSES, arg_names={"ir": "thermal"})


def data(valid_range, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    lo, hi = valid_range
    return {"rgb": torch.rand(n, 3, 8, 8, generator=g), "ir": lo + (hi - lo) * torch.rand(n, 1, 8, 8, generator=g)}


def cell(fusion, spec, batch, labels, attacked, toolkit):
    """Toolkits see every attacked modality in [0, 1] here (torchattacks always; ART because the
    ranges differ, or the range is not [0, 1]): each modality's budget is eps times its range's width."""
    width = {n: fusion.modalities[n].valid_range[1] - fusion.modalities[n].valid_range[0] for n in attacked}
    unit = toolkit == "torchattacks" or len(attacked) > 1
    native = (lambda name, eps: eps * width[name]) if unit else None
    return run_cell(fusion, spec[0], batch, labels, attacked, spec, toolkit=toolkit, classes=CLASSES, native_eps=native)


@pytest.mark.parametrize("rng", list(RANGES), ids=list(RANGES))
@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(TORCHATTACKS_CLS) + ["ART:" + k for k in ART_CLS])
def test_classification(name, attacked, rng):
    fusion = build("classification", RANGES[rng])
    batch = data(RANGES[rng])
    labels = torch.tensor([0, 1, 2])
    if name.startswith("ART:"):
        spec, toolkit = ART_CLS[name[4:]], "art"
    else:
        spec, toolkit = TORCHATTACKS_CLS[name], "torchattacks"
    cell(fusion, spec, batch, labels, attacked, toolkit)


@pytest.mark.parametrize("rng", list(RANGES), ids=list(RANGES))
@pytest.mark.parametrize("attacked", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", list(TORCHATTACKS_SEG) + ["ART:" + k for k in ART_SEG])
def test_segmentation(name, attacked, rng):
    fusion = build("segmentation", RANGES[rng])
    batch = data(RANGES[rng])
    labels = torch.randint(0, CLASSES, (3, 8, 8), generator=torch.Generator().manual_seed(1))
    if name.startswith("ART:"):
        spec, toolkit = ART_SEG[name[4:]], "art"
    else:
        spec, toolkit = TORCHATTACKS_SEG[name], "torchattacks"
    cell(fusion, spec, batch, labels, attacked, toolkit)
