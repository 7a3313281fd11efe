"""Per-modality preprocessing defences inside the fusion model (ART preprocessors with BPDA, torch modules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchattacks
from art.attacks import evasion as ae
from art.defences.preprocessor import GaussianAugmentation, SpatialSmoothing
from art.preprocessing.standardisation_mean_std import StandardisationMeanStdPyTorch
from conftest import CLASSES, TinyFusionClassifier, make_batch
from mmfusion_attacks.adapters.art import to_art
from mmfusion_attacks.adapters.torchattacks import to_torchattacks

from mmfusion_attacks import FusionModel, run_attack


def defended(defence, seed=0):
    torch.manual_seed(seed)
    net = TinyFusionClassifier().eval()
    return net, FusionModel(net, ["rgb", "ir"], num_classes=CLASSES, defences={"ir": defence}).eval()


def test_the_defence_acts_on_its_modality_only():
    smooth = SpatialSmoothing(window_size=3, channels_first=True)
    net, fusion = defended(smooth)
    batch = make_batch()
    ir_smoothed = torch.from_numpy(smooth(batch["ir"].numpy())[0])
    with torch.no_grad():
        assert torch.allclose(fusion(batch), net(batch["rgb"], ir_smoothed), atol=1e-6)


@pytest.mark.parametrize("toolkit", ["torchattacks", "art"])
def test_attacking_the_other_modality_leaves_the_defended_one_frozen(toolkit, cls_labels):
    _, fusion = defended(SpatialSmoothing(window_size=3, channels_first=True))
    batch = make_batch()
    if toolkit == "torchattacks":
        attack = torchattacks.PGD(to_torchattacks(fusion, "rgb"), eps=8 / 255, alpha=2 / 255, steps=3)
    else:
        attack = ae.ProjectedGradientDescent(to_art(fusion, "rgb"), eps=8 / 255, eps_step=2 / 255, max_iter=3, verbose=False)
    result = run_attack(attack, batch, cls_labels)
    assert torch.equal(result.inputs["ir"], batch["ir"]) and float(result.norms["rgb"]["linf"].max()) > 0


def test_bpda_gradient_through_a_numpy_defence(cls_labels):
    _, fusion = defended(SpatialSmoothing(window_size=3, channels_first=True))
    surface = to_torchattacks(fusion, "ir")
    with surface.bound(make_batch()) as x:
        x = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(surface(x), cls_labels).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0  # identity backward, not zero
    result = run_attack(torchattacks.PGD(surface, eps=8 / 255, alpha=2 / 255, steps=3), make_batch(), cls_labels)
    assert 0 < float(result.norms["ir"]["linf"].max()) <= 8 / 255 + 1e-6


def test_torch_defence_gives_true_gradients():
    net, fusion = defended(StandardisationMeanStdPyTorch(mean=0.5, std=0.25, device_type="cpu"))
    x = make_batch()["ir"].requires_grad_(True)
    fusion({"rgb": make_batch()["rgb"], "ir": x}).sum().backward()
    x2 = make_batch()["ir"].requires_grad_(True)
    net(make_batch()["rgb"], (x2 - 0.5) / 0.25).sum().backward()
    assert torch.allclose(x.grad, x2.grad)


def test_apply_predict_and_randomised_defences():
    off = SpatialSmoothing(window_size=3, channels_first=True, apply_predict=False)
    net, fusion = defended(off)
    batch = make_batch()
    with torch.no_grad():
        assert torch.equal(fusion.eval()(batch), net(batch["rgb"], batch["ir"]))
    noisy = GaussianAugmentation(sigma=0.1, augmentation=False, apply_predict=True)
    _, fusion = defended(noisy)
    with torch.no_grad():
        a, b = fusion.eval()(batch), fusion(batch)
    assert not torch.equal(a, b)  # a new draw at every forward: attack it with EOT
    np.random.seed(0)
    result = run_attack(torchattacks.EOTPGD(to_torchattacks(fusion, "ir"), eps=8 / 255, alpha=2 / 255, steps=2, eot_iter=3), batch)
    assert torch.equal(result.inputs["rgb"], batch["rgb"])


def test_defences_only_on_tensor_modalities():
    with pytest.raises(ValueError, match="tensor modalities"):
        FusionModel(TinyFusionClassifier(), ["rgb", "text"], defences={"text": lambda x: x})
